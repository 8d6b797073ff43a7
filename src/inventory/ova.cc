// ova: OVA packages (a tar of an OVF descriptor and its disks) and unpacked *.ovf descriptors with
// their disks beside them, anywhere under the root. OVA disks are probed in place, never extracted.
#include <fcntl.h>

#include <algorithm>
#include <cstdint>

#include "common/error.h"
#include "common/fs.h"
// The tar reader and qemu's json: filename for a member live in the disk module; the inventory must
// read OVAs exactly as replication will.
#include "disk/internal.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

// Bytes per unit of OVF AllocationUnits: "byte * 2^20", "byte * 10^6", "byte * 1024", or the older
// "MegaBytes" / "GigaBytes" / "KiloBytes" / "bytes". Without units, tools mean MiB.
std::optional<uint64_t> allocation_bytes(const std::string& units) {
  std::string u;
  for (char c : lower(units))
    if (c != ' ' && c != '\t') u += c;
  if (u.empty() || u == "megabytes" || u == "mb") return uint64_t{1} << 20;
  if (u == "gigabytes" || u == "gb") return uint64_t{1} << 30;
  if (u == "kilobytes" || u == "kb") return uint64_t{1} << 10;
  std::vector<std::string> terms;  // "byte", then factors "1024" or "2^20"
  for (size_t start = 0, star; start <= u.size(); start = star + 1) {
    star = std::min(u.find('*', start), u.size());
    terms.push_back(u.substr(start, star - start));
  }
  if (terms[0] != "byte" && terms[0] != "bytes") return std::nullopt;
  uint64_t bytes = 1;
  for (size_t i = 1; i < terms.size(); i++) {
    size_t caret = terms[i].find('^');
    auto base = parse_count(terms[i].substr(0, caret));
    auto exponent = caret == std::string::npos ? std::optional<uint64_t>(1) : parse_count(terms[i].substr(caret + 1));
    if (!base || !exponent || *base == 0) return std::nullopt;
    if (*base == 1) continue;
    for (uint64_t k = 0; k < *exponent; k++) {
      if (*base != 0 && bytes > (uint64_t{1} << 62) / *base) return std::nullopt;
      bytes *= *base;
    }
  }
  return bytes;
}

std::string item_value(const pugi::xml_node& item, const char* local) { return trim(child_named(item, local).child_value()); }

// Name, guest OS, vCPUs and memory of the one VirtualSystem.
void read_virtual_system(VmInfo& vm, const pugi::xml_node& system, const std::string& where) {
  if (std::string name = trim(child_named(system, "Name").child_value()); !name.empty())
    vm.name = name;
  else if (std::string id = attr_named(system, "id"); !id.empty())
    vm.name = id;
  pugi::xml_node os = child_named(system, "OperatingSystemSection");
  vm.guest_os = attr_named(os, "osType");
  if (vm.guest_os.empty()) vm.guest_os = trim(child_named(os, "Description").child_value());
  for (auto item : child_named(system, "VirtualHardwareSection").children()) {
    if (!is_named(item, "Item")) continue;
    std::string type = item_value(item, "ResourceType"), quantity = item_value(item, "VirtualQuantity");
    if (type != "3" && type != "4") continue;
    auto count = parse_count(quantity);
    if (!count) {
      add_error(vm, where + ": " + (type == "3" ? "CPU" : "memory") + " item has VirtualQuantity '" + quantity + "', not a number");
    } else if (type == "3") {
      vm.cpus = static_cast<int>(std::min<uint64_t>(*count, 100000));
    } else {
      std::string units = item_value(item, "AllocationUnits");
      auto bytes = allocation_bytes(units);
      if (!bytes)
        add_error(vm, where + ": memory item has unknown AllocationUnits '" + units + "'");
      else if (*count > UINT64_MAX / *bytes)
        add_error(vm, where + ": memory item of " + quantity + " '" + units + "' is too large");
      else
        vm.memory_mib = *count * *bytes / (uint64_t{1} << 20);
    }
  }
}

}  // namespace

std::vector<OvfDisk> parse_ovf(VmInfo& vm, const std::string& xml, const std::string& where) {
  std::vector<OvfDisk> disks;
  pugi::xml_document doc;
  if (std::string problem = load_xml(doc, xml, where); !problem.empty()) {
    add_error(vm, problem);
    return disks;
  }
  pugi::xml_node envelope = doc.document_element();
  if (!is_named(envelope, "Envelope")) {
    add_error(vm, where + ": not an OVF descriptor (root element <" + std::string(envelope.name()) + ">, not <Envelope>)");
    return disks;
  }
  auto systems = envelope.select_nodes(".//*[local-name()='VirtualSystem']");
  if (systems.empty())
    add_error(vm, where + ": no VirtualSystem");
  else if (systems.size() > 1)
    add_error(vm, where + ": holds " + std::to_string(systems.size()) + " virtual systems; only single-VM packages are supported");
  else
    read_virtual_system(vm, systems.first().node(), where);

  pugi::xml_node references = child_named(envelope, "References");
  for (auto disk : child_named(envelope, "DiskSection").children()) {
    if (!is_named(disk, "Disk")) continue;
    std::string id = attr_named(disk, "diskId"), ref = attr_named(disk, "fileRef");
    if (ref.empty()) continue;  // a blank disk the importer creates: nothing to replicate
    pugi::xml_node file;
    for (auto f : references.children())
      if (is_named(f, "File") && attr_named(f, "id") == ref) file = f;
    if (!file) {
      add_error(vm, where + ": disk '" + id + "' refers to file id '" + ref + "', which <References> does not list");
    } else if (std::string compression = attr_named(file, "compression"); !compression.empty()) {
      add_error(vm, where + ": disk file '" + attr_named(file, "href") + "' is " + compression + "-compressed; unpack it first");
    } else if (!attr_named(file, "chunkSize").empty()) {
      add_error(vm, where + ": disk file '" + attr_named(file, "href") + "' is split into chunks; join them first");
    } else {
      disks.push_back({id, attr_named(file, "href")});
    }
  }
  if (disks.empty() && vm.error.empty()) add_error(vm, where + ": the descriptor lists no disk");
  return disks;
}

DiskSpec ova_member_disk(const std::string& name, const fs::path& package, const std::string& member, uint64_t offset, uint64_t size) {
  std::string format = disk::format_from_extension(member);
  if (format.empty() || format == "ova") format = "vmdk";
  return {name, package.string() + "#" + member, format, DiskSpec::Member{package, offset, size, disk::json_filename_for_member(package, format, offset, size)}};
}

namespace {

VmInfo read_ova(const Confinement& conf, const fs::path& ova) {
  VmInfo vm;
  std::string where = shown(conf.root(), ova);
  vm.vm_id = where;
  vm.name = ova.stem().string();
  vm.path = ova.string();
  std::vector<disk::TarMember> members;
  std::string xml, descriptor;
  try {
    members = disk::read_tar(ova);
    auto ovf = std::find_if(members.begin(), members.end(),
                            [](const disk::TarMember& m) { return lower(fs::path(m.name).extension().string()) == ".ovf"; });
    if (ovf == members.end()) {
      vm.error = where + ": no .ovf descriptor in the package";
      return vm;
    }
    descriptor = where + "#" + ovf->name;
    if (ovf->size > kMaxConfigBytes) {
      vm.error = descriptor + ": " + std::to_string(ovf->size) + " bytes; an OVF descriptor is at most 16 MiB";
      return vm;
    }
    xml.resize(static_cast<size_t>(ovf->size));
    File(ova, O_RDONLY).pread_all(xml.data(), xml.size(), ovf->offset);
  } catch (const Error& e) {
    vm.error = e.what();
    return vm;
  }
  std::vector<DiskSpec> specs;
  for (const auto& d : parse_ovf(vm, xml, descriptor)) {
    auto m = std::find_if(members.begin(), members.end(), [&](const disk::TarMember& t) { return t.name == d.href; });
    if (m == members.end()) {
      add_error(vm, where + ": disk '" + d.id + "' refers to '" + d.href + "', which is not in the package");
      continue;
    }
    specs.push_back(ova_member_disk(d.id, ova, m->name, m->offset, m->size));
  }
  add_disks(vm, specs, conf);
  return vm;
}

VmInfo read_unpacked(const Confinement& conf, const fs::path& ovf) {
  VmInfo vm;
  std::string where = shown(conf.root(), ovf);
  vm.vm_id = where;
  vm.name = ovf.stem().string();
  vm.path = ovf.string();
  std::string xml;
  try {
    xml = read_config(ovf);
  } catch (const Error& e) {
    vm.error = e.what();
    return vm;
  }
  std::vector<DiskSpec> specs;
  for (const auto& d : parse_ovf(vm, xml, where)) {
    fs::path path = (ovf.parent_path() / d.href).lexically_normal();
    specs.push_back({d.id, path.string(), qemu_format_for(path)});
  }
  add_disks(vm, specs, conf);
  return vm;
}

class Ova : public Plugin {
 public:
  explicit Ova(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "OVA"; }
  std::vector<std::string> capabilities() const override { return {"OVA"}; }
  std::vector<VmInfo> discover() const override {
    Confinement conf(config_);
    std::vector<VmInfo> vms;
    for (const auto& file : list_files(conf.root(), {".ova", ".ovf"}, /*recursive=*/true))
      vms.push_back(read_guarded(
          conf, file, [&] { return lower(file.extension().string()) == ".ova" ? read_ova(conf, file) : read_unpacked(conf, file); }));
    return finish(std::move(vms), conf.root());
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_ova(const ManagerConfig& config) { return std::make_unique<Ova>(config); }

}  // namespace ferry::inventory
