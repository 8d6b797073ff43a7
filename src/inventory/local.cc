// local: the machine the connector runs on (agent mode, for physical servers): one VM named after
// the host whose disks are the configured image files or block devices.
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "common/error.h"
#include "common/fs.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

class Local : public Plugin {
 public:
  explicit Local(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "LOCAL"; }
  std::vector<std::string> capabilities() const override { return {"LOCAL"}; }

  std::vector<VmInfo> discover() const override {
    if (config_.devices.empty()) fail(ErrorKind::kInvalidArgument, "local manager '" + config_.name + "': no devices configured");
    VmInfo vm;
    vm.name = host_name();
    vm.vm_id = vm.name;
    // The machine id survives renames of the host; the host name is the fallback.
    try {
      if (std::string id = trim(read_file("/etc/machine-id")); !id.empty()) {
        vm.vm_id = id;
        vm.path = "/etc/machine-id";
      }
    } catch (const Error&) {
    }
    struct utsname uts;
    vm.guest_os = ::uname(&uts) == 0 ? lower(uts.sysname) : "linux";
    vm.cpus = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
    long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page_size > 0) vm.memory_mib = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) >> 20;

    // Disks are named by file name ("sda", "data.qcow2"), by the whole path where two share one.
    std::map<std::string, int> uses;
    for (const auto& d : config_.devices) uses[fs::path(d).filename().string()]++;
    std::vector<DiskSpec> disks;
    for (const auto& d : config_.devices) {
      fs::path path = fs::absolute(d).lexically_normal();
      std::string name = fs::path(d).filename().string();
      disks.push_back({uses[name] > 1 || name.empty() ? path.string() : name, path.string(), qemu_format_for(path)});
    }
    add_disks(vm, disks, Confinement(config_));  // no root: messages show whole paths
    return {vm};
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_local(const ManagerConfig& config) { return std::make_unique<Local>(config); }

}  // namespace ferry::inventory
