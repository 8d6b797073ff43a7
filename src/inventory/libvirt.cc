// libvirt: a directory of domain XML files (as in /etc/libvirt/qemu or from `virsh dumpxml`); the
// disks are the domain's file and block disks.
#include <cstdint>
#include <optional>

#include "common/error.h"
#include "common/fs.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

// libvirt's scaled integers: "b"/"bytes", "KB" (1000), "k"/"KiB" (1024), likewise M, G, T, P, E;
// letters are case-insensitive. No unit means KiB for <memory>.
std::optional<uint64_t> unit_bytes(const std::string& unit) {
  std::string u = lower(unit);
  if (u.empty()) return 1024;
  if (u == "b" || u == "bytes") return 1;
  static const std::string kPowers = "kmgtpe";
  size_t power = kPowers.find(u[0]);
  if (power == std::string::npos) return std::nullopt;
  std::string rest = u.substr(1);
  uint64_t base = rest.empty() || rest == "ib" ? 1024 : rest == "b" ? 1000 : 0;
  if (base == 0) return std::nullopt;
  uint64_t bytes = 1;
  for (size_t i = 0; i <= power; i++) bytes *= base;
  return bytes;
}

// Reads the disks of <devices>; CD-ROMs and floppies are not disks to replicate.
std::vector<DiskSpec> domain_disks(VmInfo& vm, const pugi::xml_node& devices, const fs::path& dir, const std::string& where) {
  std::vector<DiskSpec> disks;
  int index = 0;
  for (auto disk : devices.children("disk")) {
    std::string device = disk.attribute("device").as_string("disk");
    if (device == "cdrom" || device == "floppy") continue;
    index++;
    std::string name = disk.child("target").attribute("dev").as_string();
    if (name.empty()) name = "disk" + std::to_string(index);
    std::string type = disk.attribute("type").as_string("file");
    pugi::xml_node source = disk.child("source");
    std::string file = type == "file" ? source.attribute("file").as_string() : type == "block" ? source.attribute("dev").as_string() : "";
    if (type == "network") {
      add_error(vm, where + ": disk '" + name + "' is a network disk (" + source.attribute("protocol").as_string("unknown protocol") +
                        "); only file and block disks can be replicated");
    } else if (type != "file" && type != "block") {
      add_error(vm, where + ": disk '" + name + "' is of type '" + type + "'; only file and block disks can be replicated");
    } else if (file.empty()) {
      add_error(vm, where + ": disk '" + name + "' has no source " + (type == "file" ? "file" : "device"));
    } else {
      fs::path path = fs::path(file).is_absolute() ? fs::path(file) : dir / file;
      std::string format = disk.child("driver").attribute("type").as_string();
      if (format == "vhd") format = "vpc";
      if (format.empty()) format = qemu_format_for(path);
      disks.push_back({name, path.lexically_normal().string(), format});
    }
  }
  return disks;
}

}  // namespace

std::vector<DiskSpec> parse_domain(VmInfo& vm, const std::string& xml, const fs::path& dir, const std::string& where) {
  pugi::xml_document doc;
  if (std::string problem = load_xml(doc, xml, where); !problem.empty()) {
    add_error(vm, problem);
    return {};
  }
  pugi::xml_node domain = doc.child("domain");
  if (!domain) {
    add_error(vm, where + ": not a libvirt domain (root element <" + std::string(doc.document_element().name()) + ">)");
    return {};
  }
  if (std::string uuid = normalize_uuid(domain.child_value("uuid")); !uuid.empty()) vm.vm_id = uuid;
  std::string name = trim(domain.child_value("name"));
  if (name.empty())
    add_error(vm, where + ": the domain has no <name>");
  else
    vm.name = name;

  std::string vcpu = trim(domain.child_value("vcpu"));
  if (vcpu.empty()) vcpu = "1";
  if (auto cpus = parse_count(vcpu); cpus && *cpus > 0 && *cpus < 100000)
    vm.cpus = static_cast<int>(*cpus);
  else
    add_error(vm, where + ": <vcpu> '" + vcpu + "' is not a number of vCPUs");

  pugi::xml_node memory = domain.child("memory");
  std::string amount = trim(memory.child_value()), unit = memory.attribute("unit").as_string();
  auto value = parse_count(amount);
  auto scale = unit_bytes(unit);
  if (!value && !amount.empty())
    add_error(vm, where + ": <memory> '" + amount + "' is not a number");
  else if (!scale)
    add_error(vm, where + ": <memory> has unknown unit '" + unit + "'");
  else if (value && *value > UINT64_MAX / *scale)
    add_error(vm, where + ": <memory> " + amount + " " + unit + " is too large");
  else if (value)
    vm.memory_mib = *value * *scale / (uint64_t{1} << 20);

  pugi::xml_node os_type = domain.child("os").child("type");
  vm.guest_os = os_type.child_value();
  if (std::string arch = os_type.attribute("arch").as_string(); !arch.empty()) vm.guest_os += "/" + arch;
  // virt-install records the guest's libosinfo id, which names the OS itself.
  for (auto meta : domain.child("metadata").children())
    if (is_named(meta, "libosinfo"))
      if (std::string id = attr_named(child_named(meta, "os"), "id"); !id.empty()) vm.guest_os = id;

  auto disks = domain_disks(vm, domain.child("devices"), dir, where);
  if (disks.empty() && vm.error.empty()) add_error(vm, where + ": the domain has no disk");
  return disks;
}

namespace {

VmInfo read_vm(const Confinement& conf, const fs::path& file) {
  VmInfo vm;
  std::string where = shown(conf.root(), file);
  vm.vm_id = where;
  vm.name = file.stem().string();
  vm.path = file.string();
  std::string xml;
  try {
    xml = read_config(file);
  } catch (const Error& e) {
    vm.error = e.what();
    return vm;
  }
  add_disks(vm, parse_domain(vm, xml, file.parent_path(), where), conf);
  return vm;
}

class Libvirt : public Plugin {
 public:
  explicit Libvirt(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "LIBVIRT"; }
  std::vector<std::string> capabilities() const override { return {"LIBVIRT"}; }
  std::vector<VmInfo> discover() const override {
    Confinement conf(config_);
    std::vector<VmInfo> vms;
    for (const auto& xml : list_files(conf.root(), {".xml"}, false)) vms.push_back(read_guarded(conf, xml, [&] { return read_vm(conf, xml); }));
    return finish(std::move(vms), conf.root());
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_libvirt(const ManagerConfig& config) { return std::make_unique<Libvirt>(config); }

}  // namespace ferry::inventory
