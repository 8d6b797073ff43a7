// Shared between the inventory plugin files; not part of the module's interface.
// Each plugin file defines one factory; plugins.cc holds the table and the helpers below.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <pugixml.hpp>
#include <string>
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
  std::string path;           // absolute (OVA members: "/x/pkg.ova#member")
  std::string qemu_format;    // -f for qemu-img; empty: probe
  std::string qemu_filename;  // what qemu-img opens if not `path` (json: for OVA members)
};

// Probes every disk with qemu-img (block devices holding raw data: their size) and appends it to the
// VM; each disk that is missing, unreadable or has a backing file adds its problem to vm.error.
void add_disks(VmInfo& vm, const std::vector<DiskSpec>& disks, const fs::path& root);

// qemu-img info --output=json of one image, format forced if `qemu_format` is non-empty.
struct QemuInfo {
  std::string format;  // qemu's driver name ("vpc" for VHD)
  uint64_t size = 0;
  std::string backing;  // backing file name, if any
  std::string error;    // non-empty: qemu-img could not read it; qemu's reason
};
QemuInfo qemu_info(const std::string& filename, const std::string& qemu_format);

// The qemu driver for a disk file from its extension (".vhd" is always "vpc": qemu-img would probe a
// fixed VHD as raw), or "" to let qemu-img probe.
std::string qemu_format_for(const fs::path& file);

// Appends a problem to vm.error ("; " between several).
void add_error(VmInfo& vm, const std::string& problem);

// Runs `read` for the VM defined at `path`; an unexpected exception becomes that VM's error (named
// after the file), so one odd file never hides the others.
VmInfo read_guarded(const fs::path& root, const fs::path& path, const std::function<VmInfo()>& read);

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

}  // namespace ferry::inventory
