// hyperv: a directory of Export-VM results, one sub-directory per VM holding "Virtual Hard Disks"
// (the disks) and "Virtual Machines" (<GUID>.vmcx, binary, or <GUID>.xml on older Hyper-V, readable).
#include <algorithm>

#include "common/error.h"
#include "common/fs.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

// The file name at the end of a Windows or POSIX path.
std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of("\\/");
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::vector<std::string> parse_hyperv_config(VmInfo& vm, const std::string& xml, const std::string& where) {
  std::vector<std::string> disks;
  pugi::xml_document doc;
  if (std::string problem = load_xml(doc, xml, where); !problem.empty()) {
    add_error(vm, problem);
    return disks;
  }
  pugi::xml_node config = doc.child("configuration");
  if (!config) {
    add_error(vm, where + ": not a Hyper-V configuration (root element <" + doc.document_element().name() + ">)");
    return disks;
  }
  if (std::string name = trim(config.child("properties").child_value("name")); !name.empty()) vm.name = name;
  pugi::xml_node settings = config.child("settings");
  std::string count = trim(settings.child("processors").child_value("count"));
  if (auto cpus = parse_count(count); cpus && *cpus > 0 && *cpus < 100000)
    vm.cpus = static_cast<int>(*cpus);
  else if (!count.empty())
    add_error(vm, where + ": processor count '" + count + "' is not a number");
  std::string size = trim(settings.child("memory").child("bank").child_value("size"));
  if (auto mib = parse_count(size))
    vm.memory_mib = *mib;
  else if (!size.empty())
    add_error(vm, where + ": memory size '" + size + "' is not a number of MB");
  for (const auto& found : config.select_nodes("//pathname")) {
    std::string name = base_name(trim(found.node().child_value()));
    std::string ext = lower(fs::path(name).extension().string());
    if (ext == ".vhd" || ext == ".vhdx") disks.push_back(name);
  }
  return disks;
}

namespace {

VmInfo read_vm(const Confinement& conf, const fs::path& dir) {
  const fs::path& root = conf.root();
  VmInfo vm;
  vm.name = dir.filename().string();
  vm.vm_id = shown(root, dir);
  vm.path = dir.string();
  fs::path machines = dir / "Virtual Machines", hard_disks = dir / "Virtual Hard Disks";
  std::error_code ec;
  if (!fs::is_directory(hard_disks, ec)) {
    add_error(vm, shown(root, dir) + ": no 'Virtual Hard Disks' directory; not a Hyper-V export");
    return vm;
  }
  // Both are listed: neither may lead out of the root.
  for (const auto& sub : {hard_disks, machines})
    if (std::string why = conf.check(sub); !why.empty()) {
      add_error(vm, shown(root, sub) + ": " + why);
      return vm;
    }

  std::vector<std::string> listed;  // disk file names the configuration names, in its order
  auto configs = list_files(machines, {".xml"}, false);
  if (configs.empty()) configs = list_files(machines, {".vmcx"}, false);
  if (!configs.empty()) {
    const fs::path& config = configs.front();
    std::string guid = normalize_uuid(config.stem().string());
    vm.vm_id = guid.empty() ? shown(root, config) : guid;
    vm.path = config.string();
    if (lower(config.extension().string()) == ".xml") {
      std::string where = shown(root, config);
      if (std::string why = conf.check(config); !why.empty()) {
        add_error(vm, where + ": " + why);
      } else {
        try {
          listed = parse_hyperv_config(vm, read_config(config), where);
        } catch (const Error& e) {
          add_error(vm, e.what());
        }
      }
    }
  }

  auto checkpoints = list_files(hard_disks, {".avhd", ".avhdx"}, false);
  if (!checkpoints.empty())
    add_error(vm, shown(root, dir) + ": the VM has checkpoints ('" + checkpoints.front().filename().string() +
                      "'); delete them (merging into the VHDX) and export again");

  auto files = list_files(hard_disks, {".vhd", ".vhdx"}, false);
  std::vector<fs::path> ordered;
  for (const auto& name : listed) {
    auto it = std::find_if(files.begin(), files.end(), [&](const fs::path& f) { return lower(f.filename().string()) == lower(name); });
    if (it == files.end()) {
      add_error(vm, shown(root, vm.path) + " names disk '" + name + "', which is not in '" + shown(root, hard_disks) + "'");
      continue;
    }
    ordered.push_back(*it);
    files.erase(it);
  }
  ordered.insert(ordered.end(), files.begin(), files.end());
  if (ordered.empty()) add_error(vm, shown(root, hard_disks) + ": no VHD or VHDX disk");

  std::vector<DiskSpec> disks;
  for (const auto& f : ordered) disks.push_back({f.filename().string(), f.string(), qemu_format_for(f)});
  add_disks(vm, disks, conf);
  return vm;
}

class HyperV : public Plugin {
 public:
  explicit HyperV(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "HYPERV-MANAGER"; }
  std::vector<std::string> capabilities() const override { return {"HYPERV-MANAGER"}; }
  std::vector<VmInfo> discover() const override {
    Confinement conf(config_);
    std::vector<VmInfo> vms;
    for (const auto& dir : list_dirs(conf.root())) vms.push_back(read_guarded(conf, dir, [&] { return read_vm(conf, dir); }));
    return finish(std::move(vms), conf.root());
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_hyperv(const ManagerConfig& config) { return std::make_unique<HyperV>(config); }

}  // namespace ferry::inventory
