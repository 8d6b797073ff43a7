// Shared between the inventory plugin files; not part of the module's interface.
// Each plugin file defines one factory; plugins.cc holds the table and the helpers below.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <pugixml.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "inventory/inventory.h"

namespace ferry::inventory {

namespace fs = std::filesystem;

std::unique_ptr<Plugin> make_vmware(const ManagerConfig& config);
std::unique_ptr<Plugin> make_hyperv(const ManagerConfig& config);
std::unique_ptr<Plugin> make_azure(const ManagerConfig& config);
std::unique_ptr<Plugin> make_libvirt(const ManagerConfig& config);
std::unique_ptr<Plugin> make_ova(const ManagerConfig& config);
std::unique_ptr<Plugin> make_local(const ManagerConfig& config);

// The root directory of a directory-based manager, absolute. Throws kNotFound if it does not exist,
// kInvalidArgument if it is not a directory; both name the manager and the path.
fs::path require_root(const ManagerConfig& config);

// Where a path leads once every symbolic link and ".." in it is followed, component by component as open(2) does
// (relative paths start at the working directory, as they do for the qemu-img and qemu-nbd the connector starts).
// Only the last component may be missing: then `path` is where it would be created. A dangling link is judged by
// where it points. Never throws: a loop (more than 40 links), a missing directory or an unreadable one is `error`.
struct Resolved {
  fs::path path;       // absolute, no link, no "." or ".."
  std::string error;   // non-empty: not resolvable, and why
  // The first link followed that someone other than root (or this process's user) could have placed or changed:
  // the link is not theirs, or its directory is not theirs or is writable by group or others. Empty if none.
  fs::path foreign_link;
};
Resolved resolve(const fs::path& path);

// What a manager's VMs may read: files that resolve below its root (itself resolved, so a root that is a link
// works) or below an entry of its "allow" list; for `local`, only its devices (a listed link is followed only if
// root placed it: see Resolved::foreign_link) and the "allow" entries. Every file the connector or qemu opens for
// a VM is checked against it first. Immutable after construction; safe to share between threads.
class Confinement {
 public:
  // Throws as require_root does for a directory manager whose root is missing.
  explicit Confinement(const ManagerConfig& config);
  // The root as configured, absolute (ids and messages show paths relative to it); empty for local.
  const fs::path& root() const { return root_; }
  // "" if `path` may be opened; else why not, as the end of a sentence naming the path, e.g. "resolves to
  // /etc/passwd, outside the root /srv/vmfs of vmware manager 'dc1' (add it to the manager's \"allow\" list if
  // that is intended)".
  std::string check(const fs::path& path) const;
  // "the root /srv/vmfs of vmware manager 'dc1'", "the devices of local manager 'h'"
  std::string describe() const;
  // Whether the absolute `path`, as written (before resolution), names one of this manager's files: below its
  // root, or one of its devices. Such a path that check() refuses is this manager's to explain.
  bool claims(const fs::path& path) const;

 private:
  bool contains(const fs::path& resolved) const;

  std::string manager_;         // "vmware manager 'dc1'"
  fs::path root_;               // as configured, absolute
  std::vector<fs::path> trees_;     // resolved root and "allow" entries: everything below them
  std::vector<fs::path> listed_;    // local: the devices as configured, absolute
  std::vector<fs::path> devices_;   // local: the resolved devices, exactly
  std::vector<std::pair<fs::path, fs::path>> foreign_;  // local: listed device -> the foreign link it goes through
};

// Regular files under `dir` whose extension is one of `exts` (lower case, with the dot; matched
// case-insensitively), sorted by path. Unreadable sub-directories are skipped.
std::vector<fs::path> list_files(const fs::path& dir, const std::vector<std::string>& exts, bool recursive);

// Sub-directories of `dir` (not hidden), sorted.
std::vector<fs::path> list_dirs(const fs::path& dir);

// `path` as shown in messages: relative to `root` when inside it, else as is.
std::string shown(const fs::path& root, const fs::path& path);

// A disk to probe: what the VM lists, how qemu-img should open it.
struct DiskSpec {
  std::string name;
  std::string path;         // absolute (OVA members: "/x/pkg.ova#member")
  std::string qemu_format;  // -f for qemu-img; empty: probe
  // An OVA member is read in place: the package, the member's bytes in it, and the json: filename for qemu-img.
  struct Member {
    fs::path package;
    uint64_t offset = 0, size = 0;
    std::string qemu_filename;
  };
  std::optional<Member> member = std::nullopt;
  // The file the disk is read from: the image, or the package holding it.
  fs::path file() const { return member ? member->package : fs::path(path); }
};

// The DiskSpec of an OVA member at [offset, offset + size) of `package`, in the format its name's extension
// gives (VMDK if none), as disk::open_source() reads it.
DiskSpec ova_member_disk(const std::string& name, const fs::path& package, const std::string& member, uint64_t offset, uint64_t size);

// What is wrong with one disk, or "" (then `disk` has its format and size). `refused` when the confinement
// refuses it: a file it would read lies outside, or is no disk file, or is reached through a qemu protocol.
// Before qemu-img opens anything: the disk's file is checked, then every extent its VMDK descriptor (if it has
// one) names, read by vmdk_references(); after qemu-img info: every file qemu reports opening or referring to.
struct Problem {
  std::string text;
  bool refused = false;
};
Problem probe(const Confinement& conf, const DiskSpec& spec, DiskInfo& disk);

// Probes every disk and appends it to the VM; each disk's problem is added to vm.error.
void add_disks(VmInfo& vm, const std::vector<DiskSpec>& disks, const Confinement& conf);

// A file that qemu opens with an image, or that an image refers to, as named there.
struct Reference {
  std::string what;   // "extent", "parent", "data file", "backing file"
  std::string name;   // a path, or qemu's "json:{...}"
  bool beside_image;  // a relative name is relative to the image's directory (else to the working directory)
};

// The extents and parent a VMDK's descriptor names, read from the image as qemu-img reads it (a descriptor file,
// or the descriptor a sparse image embeds); none for an image without a descriptor. Throws ferry::Error if the
// file cannot be read.
std::vector<Reference> vmdk_references(const DiskSpec& spec);

// "" for a regular file or a block device, else "is a FIFO, not a disk" (a directory, a character device, ...).
std::string not_a_disk(const struct stat& st);

// "" if each reference may be opened under `conf`, else why not, naming the first that may not. A reference must
// be a plain file (no qemu protocol; a json: filename only with the file and raw drivers) that is a regular file
// or a block device, or does not exist.
std::string check_references(const Confinement& conf, const fs::path& image, const std::vector<Reference>& refs);

// qemu-img info --output=json of one image, format forced if `qemu_format` is non-empty.
// qemu-img info opens the image and its extents, not its data file nor its backing file (without --backing-chain,
// on purpose: qemu would open the backing file, any qemu protocol included, before it could be checked).
struct QemuInfo {
  std::string format;   // qemu's driver name ("vpc" for VHD)
  uint64_t size = 0;
  std::string backing;  // backing file name as the image records it, if any
  std::vector<Reference> references;  // VMDK extents, the qcow2 data file, the backing file as qemu resolves it
  std::string error;    // non-empty: qemu-img could not read it; qemu's reason
};
QemuInfo qemu_info(const std::string& filename, const std::string& qemu_format);

// The qemu driver for a disk file from its extension (".vhd" is always "vpc": qemu-img would probe a
// fixed VHD as raw), or "" to let qemu-img probe.
std::string qemu_format_for(const fs::path& file);

// Appends a problem to vm.error ("; " between several).
void add_error(VmInfo& vm, const std::string& problem);

// Runs `read` for the VM defined at `path` (a file or a directory) if `conf` lets it be read, else returns the VM
// with the refusal as its error; an unexpected exception becomes that VM's error (named after the file), so one
// odd file never hides the others.
VmInfo read_guarded(const Confinement& conf, const fs::path& path, const std::function<VmInfo()>& read);

// Reads a VM's configuration file (.vmx, domain or Hyper-V XML, .ovf): a regular file of at most kMaxConfigBytes
// (real ones hold a few KiB). Throws ferry::Error naming the file otherwise.
constexpr uint64_t kMaxConfigBytes = 16 << 20;
std::string read_config(const fs::path& file);

// Sorts by vm_id; VMs whose id is not unique (cloned UUIDs) fall back to their path relative to root.
std::vector<VmInfo> finish(std::vector<VmInfo> vms, const fs::path& root);

std::string lower(std::string s);
std::string trim(const std::string& s);
// A decimal number without sign or junk.
std::optional<uint64_t> parse_count(const std::string& s);
// A UUID in canonical form (8-4-4-4-12 lower-case hex) from any spacing and dashes ("56 4d ... -cd ef ..."),
// or "" if it does not hold 32 hex digits.
std::string normalize_uuid(const std::string& s);

// XML helpers tolerant of namespace prefixes ("ovf:id", "rasd:ResourceType"): they match local names.
bool is_named(const pugi::xml_node& node, const char* local);
pugi::xml_node child_named(const pugi::xml_node& node, const char* local);
std::string attr_named(const pugi::xml_node& node, const char* local);
// Loads an XML document; returns "" or "<where>: not valid XML: <pugixml's description> at offset N".
std::string load_xml(pugi::xml_document& doc, const std::string& text, const std::string& where);

// ---------------------------------------------------------------------------------------------------------------
// Parsers of what a VM manager writes: pure functions of the text (no files, no processes), each fuzzed in fuzz/.
// A problem with the VM goes to vm.error; none throws anything but ferry::Error.

// A .vmx file: `key = "value"` lines, keys case-insensitive (kept lower-case), values unescaped.
struct Vmx {
  std::map<std::string, std::string> values;
  std::string error;  // the first malformed line, "<where> line N: <what>"

  std::string get(const std::string& key, const std::string& fallback = "") const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
};
Vmx parse_vmx(const std::string& text, const std::string& where);
// The VMDKs of the .vmx's present scsi/sata/ide/nvme disks (not CD-ROMs), in bus, controller and unit order;
// relative file names are relative to `dir`.
std::vector<DiskSpec> vmx_disks(const Vmx& vmx, const fs::path& dir);

// What a VMDK descriptor names: the file of every line that parses as an extent line (access, sectors, type,
// "file"), whatever its access and type (qemu opens the RW ones of five types; the check takes them all), and the
// parentFileNameHint. Reads the text as qemu does (up to the first NUL; an extent line may run over several lines).
struct VmdkDescriptor {
  std::vector<std::string> extents;
  std::string parent;
};
VmdkDescriptor parse_vmdk_descriptor(std::string_view text);
// Where qemu reads a VMDK's descriptor, from the image's first 2 KiB (`head`): in a hosted sparse extent (KDMV), the
// embedded descriptor if it has one; else the file from its start: anything if the format is `forced` to VMDK,
// only text if qemu probes the format. None for a COWD extent, a KDMV without descriptor, or binary data probed.
constexpr uint64_t kVmdkDescriptorMax = (1 << 20) - 1;  // qemu reads at most this much of a descriptor
struct VmdkDescriptorAt {
  uint64_t offset = 0;  // bytes from the image's start
  uint64_t length = 0;  // at most this much (kVmdkDescriptorMax; less for a KDMV's own descriptor size)
};
std::optional<VmdkDescriptorAt> vmdk_descriptor_at(std::string_view head, bool forced);

// An OVF descriptor (`where` names it in messages): the VM's name, guest OS, vCPUs and memory go to vm; returns
// the disks it lists with a file, in DiskSection order.
struct OvfDisk {
  std::string id;    // ovf:diskId, the disk's name
  std::string href;  // the file, relative to the descriptor (the member name in an OVA)
};
std::vector<OvfDisk> parse_ovf(VmInfo& vm, const std::string& xml, const std::string& where);

// A libvirt domain XML: name, uuid, vCPUs, memory and OS go to vm; returns its file and block disks (relative
// sources are relative to `dir`).
std::vector<DiskSpec> parse_domain(VmInfo& vm, const std::string& xml, const fs::path& dir, const std::string& where);

// A Hyper-V XML configuration (Virtual Machines/<GUID>.xml): name, processors and memory go to vm; returns the
// file names of its VHD and VHDX disks (the last component of each path), in controller order.
std::vector<std::string> parse_hyperv_config(VmInfo& vm, const std::string& xml, const std::string& where);

}  // namespace ferry::inventory
