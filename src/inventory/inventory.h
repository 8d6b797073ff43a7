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
// Confinement: a manager reads only files that resolve (after "..", symbolic links and a qemu-img look at each
// image) below its root or an entry of its `allow` list, and for `local` only its devices. That holds for every
// file the connector or qemu would open for a VM: its configuration, its disks, their VMDK extents, qcow2 data
// files and backing files. A disk that would read anything else makes its VM's `error` name the disk, the path,
// where it leads and the root; check_disk() applies the same rules when a run opens a disk.
// Plugins are stateless; discover() and check_disk() may run on any thread.
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
  // Files or directories outside the root that its VMs may also read (a datastore's links to another volume,
  // libvirt's /var/lib/libvirt/images); absolute.
  std::vector<std::string> allow = {};
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

// Checks, right before a run opens it, that the disk at `path` (as disk::open_source takes it, "x.ova#member" for
// an OVA member) in `format` (empty: from the extension) is one that `managers` may read, with the rules of
// discovery: the disk's file, its VMDK extents, data file and backing file (read from the image now, not from the
// inventory) all resolve within one manager's reach. Throws ferry::Error kUnauthorized if it is not, naming the
// path, where it leads and the roots; kInvalidArgument if the path or format is malformed or the image cannot be
// inspected (qemu-img's reason).
void check_disk(const std::vector<ManagerConfig>& managers, const std::string& path, const std::string& format);

}  // namespace ferry::inventory
