// azure: fixed VHDs as Azure stores them (page blobs downloaded to a directory). A *.vhd directly in
// the root is a VM with one disk; a sub-directory holding VHDs is a VM with several, the OS disk first.
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <string_view>

#include "common/error.h"
#include "common/fs.h"
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

// A dynamic (or differencing) VHD starts with a copy of its footer, cookie "conectix"; a fixed one has its footer
// only at the end. (What qemu-img's probe looks at, without running qemu on the file a second time.)
bool starts_with_footer(const fs::path& vhd) {
  try {
    File f(vhd, O_RDONLY | O_NONBLOCK);
    char cookie[8];
    if (f.size() < sizeof cookie) return false;
    f.pread_all(cookie, sizeof cookie, 0);
    return std::string_view(cookie, sizeof cookie) == "conectix";
  } catch (const Error&) {
    return false;
  }
}

// `path` is the VM's one VHD or its directory.
VmInfo read_vm(const Confinement& conf, const fs::path& path, const std::string& name, std::vector<fs::path> files) {
  const fs::path& root = conf.root();
  VmInfo vm;
  vm.name = name;
  vm.vm_id = shown(root, path);
  vm.path = path.string();
  std::stable_sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return is_os_disk(a) && !is_os_disk(b); });
  for (const auto& file : files) {
    // -f vpc reads the footer of a fixed VHD (probing would call it raw, footer included).
    add_disks(vm, {{file.filename().string(), file.string(), "vpc"}}, conf);
    if (vm.disks.back().format == "vhd" && starts_with_footer(file))
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
    Confinement conf(config_);
    const fs::path& root = conf.root();
    std::vector<VmInfo> vms;
    for (const auto& vhd : list_files(root, {".vhd"}, false))
      vms.push_back(read_guarded(conf, vhd, [&] { return read_vm(conf, vhd, vhd.stem().string(), {vhd}); }));
    for (const auto& dir : list_dirs(root)) {
      VmInfo vm = read_guarded(conf, dir, [&] { return read_vm(conf, dir, dir.filename().string(), list_files(dir, {".vhd"}, false)); });
      if (!vm.disks.empty() || !vm.error.empty()) vms.push_back(std::move(vm));  // a directory without VHDs is no VM
    }
    return finish(std::move(vms), root);
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_azure(const ManagerConfig& config) { return std::make_unique<Azure>(config); }

}  // namespace ferry::inventory
