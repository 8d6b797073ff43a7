// inventory — discovering the machines a connector can replicate, one plugin per kind of VM manager:
//   vmware   a datastore directory: *.vmx files (name, guest OS, vCPUs, memory, disks) and their VMDKs
//   hyperv   a Hyper-V export directory: VHDX/VHD disks, plus the VM's XML configuration where present
//   azure    a directory of fixed VHDs (one VM per VHD, or per sub-directory)
//   libvirt  a directory of libvirt domain XML files with qcow2/raw disks
//   ova      a directory of OVA packages and unpacked OVF descriptors
//   local    disks or block devices of the machine the connector runs on (agent mode for physical servers)
//
// Promises: discover() never throws for a problem with one VM: that VM comes back with `error` set to a
// reason naming the file and the fault (e.g. "web01.vmx line 7: expected 'key = \"value\"'"), and the
// others are listed normally. It throws only when the manager itself is unusable (directory missing).
// Ids are stable: the same VM yields the same vm_id on every discovery.
// Plugins are stateless; discover() may run on any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ferry::inventory {

struct DiskInfo {
  std::string name;    // stable within the VM: "scsi0:0", "ide0:1", "vda", "disk1", file name for azure
  std::string path;    // absolute; what disk::open_source opens ("/x/pkg.ova#disk1.vmdk" for OVA members)
  std::string format;  // "vmdk", "vhdx", "vhd", "qcow2", "raw", "vdi"
  uint64_t size = 0;   // virtual size in bytes (0 if it could not be read; then `error` of the VM says why)
};

struct VmInfo {
  std::string vm_id;     // stable id within the manager (BIOS UUID, libvirt uuid, or path relative to the root)
  std::string name;
  std::string path;      // the file that defines it (.vmx, domain .xml, .ova, .vhd, device)
  std::string guest_os;  // as the manager names it ("ubuntu-64", "windows2019srv_64Guest", "linux")
  int cpus = 0;
  uint64_t memory_mib = 0;
  std::vector<DiskInfo> disks;
  std::string error;     // non-empty: found but not replicable; the reason
};

struct ManagerConfig {
  std::string type;  // vmware | hyperv | azure | libvirt | ova | local
  std::string name;  // user's label, e.g. "dc1-esx"
  std::string path;  // root directory (for local: unused)
  std::vector<std::string> devices;  // local only: disk files or block devices to offer
};

class Plugin {
 public:
  virtual ~Plugin() = default;
  // The SMS vmManagerType: VSPHERE, HYPERV-MANAGER, or ferry's own AZURE, LIBVIRT, OVA, LOCAL.
  virtual std::string manager_type() const = 0;
  // Capability names for GetConnectors (e.g. "VSPHERE", "HYPERV-MANAGER", "SNAPSHOT_BATCHING").
  virtual std::vector<std::string> capabilities() const = 0;
  virtual std::vector<VmInfo> discover() const = 0;
};

// Throws ferry::Error(kInvalidArgument) naming the unknown type and listing the known ones.
std::unique_ptr<Plugin> make_plugin(const ManagerConfig& config);

std::vector<std::string> plugin_types();

}  // namespace ferry::inventory
