// azure: fixed VHDs as Azure stores them (page blobs downloaded to a directory). A *.vhd directly in
// the root is a VM with one disk; a sub-directory holding VHDs is a VM with several, the OS disk first.
#include <algorithm>
#include <cctype>

#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

// Azure names OS disks "<vm>_OsDisk_1_<id>.vhd"; people name them "db01-os.vhd" or "os.vhd".
// Match a whole word, so "postgres.vhd" is not taken for one.
bool is_os_disk(const fs::path& file) {
  std::string stem = lower(file.stem().string());
  size_t i = 0;
  while (i < stem.size()) {
    size_t j = i;
    while (j < stem.size() && std::isalnum(static_cast<unsigned char>(stem[j]))) j++;
    std::string word = stem.substr(i, j - i);
    if (word == "os" || word.rfind("osdisk", 0) == 0) return true;
    i = j + 1;
  }
  return false;
}

// `path` is the VM's one VHD or its directory.
VmInfo read_vm(const fs::path& root, const fs::path& path, const std::string& name, std::vector<fs::path> files) {
  VmInfo vm;
  vm.name = name;
  vm.vm_id = shown(root, path);
  vm.path = path.string();
  std::stable_sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return is_os_disk(a) && !is_os_disk(b); });
  for (const auto& file : files) {
    // -f vpc reads the footer of a fixed VHD (probing would call it raw, footer included).
    add_disks(vm, {{file.filename().string(), file.string(), "vpc", ""}}, root);
    // A fixed VHD has no header at the start, so qemu-img's probe calls it raw; a dynamic one is "vpc".
    if (vm.disks.back().format == "vhd" && qemu_info(file.string(), "").format == "vpc")
      add_error(vm, "disk '" + file.filename().string() + "' (" + shown(root, file) + ") is a dynamic VHD; Azure uses fixed VHDs");
  }
  return vm;
}

class Azure : public Plugin {
 public:
  explicit Azure(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "AZURE"; }
  std::vector<std::string> capabilities() const override { return {"AZURE"}; }
  std::vector<VmInfo> discover() const override {
    fs::path root = require_root(config_);
    std::vector<VmInfo> vms;
    for (const auto& vhd : list_files(root, {".vhd"}, false))
      vms.push_back(read_guarded(root, vhd, [&] { return read_vm(root, vhd, vhd.stem().string(), {vhd}); }));
    for (const auto& dir : list_dirs(root))
      if (auto vhds = list_files(dir, {".vhd"}, false); !vhds.empty())
        vms.push_back(read_guarded(root, dir, [&] { return read_vm(root, dir, dir.filename().string(), vhds); }));
    return finish(std::move(vms), root);
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_azure(const ManagerConfig& config) { return std::make_unique<Azure>(config); }

}  // namespace ferry::inventory
