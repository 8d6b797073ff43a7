// vmware: every *.vmx under a datastore directory is a VM; its VMDKs are the disks its
// scsi/sata/ide/nvme devices name.
#include <map>
#include <regex>
#include <tuple>

#include "common/error.h"
#include "common/fs.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// VMware escapes characters in values as |XX (hex): |22 is '"', |7C is '|'.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    int hi = s[i] == '|' && i + 2 < s.size() ? hex_digit(s[i + 1]) : -1;
    int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
    if (lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

Vmx parse_vmx(const std::string& text, const std::string& where) {
  Vmx vmx;
  size_t start = 0;
  for (int number = 1; start < text.size(); number++) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = trim(text.substr(start, end - start));
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    auto bad = [&](const std::string& what) { vmx.error = where + " line " + std::to_string(number) + ": " + what; };
    size_t eq = line.find('=');
    std::string key = eq == std::string::npos ? "" : trim(line.substr(0, eq));
    if (key.empty() || key.find_first_of(" \t\"") != std::string::npos) {
      bad("expected 'key = \"value\"'");
      return vmx;
    }
    std::string rest = trim(line.substr(eq + 1));
    std::string value = rest;
    if (!rest.empty() && rest[0] == '"') {
      size_t close = rest.find('"', 1);
      if (close == std::string::npos) {
        bad("unterminated quote in the value of '" + key + "'");
        return vmx;
      }
      std::string after = trim(rest.substr(close + 1));
      if (!after.empty() && after[0] != '#') {
        bad("unexpected text after the closing quote of '" + key + "': '" + after + "'");
        return vmx;
      }
      value = unescape(rest.substr(1, close - 1));
    }
    vmx.values[lower(key)] = value;
  }
  return vmx;
}

namespace {

// "scsi0:1" sorts by bus kind (in this order), then controller, then unit.
struct DiskSlot {
  int bus;
  int controller;
  int unit;
  std::string name;
  bool operator<(const DiskSlot& o) const { return std::tie(bus, controller, unit) < std::tie(o.bus, o.controller, o.unit); }
};

}  // namespace

std::vector<DiskSpec> vmx_disks(const Vmx& vmx, const fs::path& dir) {
  static const std::regex kDiskFile("(scsi|sata|ide|nvme)([0-9]{1,4}):([0-9]{1,4})\\.filename");
  static const std::vector<std::string> kBuses = {"scsi", "sata", "ide", "nvme"};
  std::map<DiskSlot, std::string> found;
  for (const auto& [key, value] : vmx.values) {
    std::smatch m;
    if (!std::regex_match(key, m, kDiskFile)) continue;
    std::string controller = m[1].str() + m[2].str(), slot = controller + ":" + m[3].str();
    if (lower(vmx.get(controller + ".present")) == "false" || lower(vmx.get(slot + ".present")) == "false") continue;
    if (lower(vmx.get(slot + ".devicetype")).rfind("cdrom", 0) == 0) continue;
    if (lower(fs::path(value).extension().string()) != ".vmdk") continue;
    int bus = static_cast<int>(std::find(kBuses.begin(), kBuses.end(), m[1].str()) - kBuses.begin());
    found[{bus, std::stoi(m[2].str()), std::stoi(m[3].str()), slot}] = value;
  }
  std::vector<DiskSpec> disks;
  for (const auto& [slot, file] : found) {
    fs::path path = fs::path(file).is_absolute() ? fs::path(file) : dir / file;
    disks.push_back({slot.name, path.lexically_normal().string(), "vmdk"});
  }
  return disks;
}

namespace {

VmInfo read_vm(const Confinement& conf, const fs::path& file) {
  VmInfo vm;
  std::string where = shown(conf.root(), file);
  vm.path = file.string();
  vm.vm_id = where;
  vm.name = file.stem().string();
  Vmx vmx;
  try {
    vmx = parse_vmx(read_config(file), where);
  } catch (const Error& e) {
    vm.error = e.what();
    return vm;
  }
  if (!vmx.error.empty()) {
    vm.error = vmx.error;
    return vm;
  }
  vm.name = vmx.get("displayname", vm.name);
  vm.guest_os = vmx.get("guestos");
  if (std::string uuid = normalize_uuid(vmx.get("uuid.bios")); !uuid.empty()) vm.vm_id = uuid;
  auto cpus = parse_count(vmx.get("numvcpus", "1"));
  if (cpus && *cpus > 0 && *cpus < 100000)
    vm.cpus = static_cast<int>(*cpus);
  else
    add_error(vm, where + ": numvcpus '" + vmx.get("numvcpus") + "' is not a number of vCPUs");
  auto memory = parse_count(vmx.get("memsize", "0"));
  if (memory)
    vm.memory_mib = *memory;
  else
    add_error(vm, where + ": memsize '" + vmx.get("memsize") + "' is not a number of MiB");
  auto disks = vmx_disks(vmx, file.parent_path());
  if (disks.empty()) add_error(vm, where + ": no disks (no scsi, sata, ide or nvme device with a .vmdk file)");
  add_disks(vm, disks, conf);
  return vm;
}

class Vmware : public Plugin {
 public:
  explicit Vmware(ManagerConfig config) : config_(std::move(config)) {}
  std::string manager_type() const override { return "VSPHERE"; }
  std::vector<std::string> capabilities() const override { return {"VSPHERE", "SNAPSHOT_BATCHING"}; }
  std::vector<VmInfo> discover() const override {
    Confinement conf(config_);
    std::vector<VmInfo> vms;
    for (const auto& vmx : list_files(conf.root(), {".vmx"}, /*recursive=*/true))
      vms.push_back(read_guarded(conf, vmx, [&] { return read_vm(conf, vmx); }));
    return finish(std::move(vms), conf.root());
  }

 private:
  ManagerConfig config_;
};

}  // namespace

std::unique_ptr<Plugin> make_vmware(const ManagerConfig& config) { return std::make_unique<Vmware>(config); }

}  // namespace ferry::inventory
