// Shared between the disk/ implementation files; not part of the module's interface.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "disk/disk.h"

namespace ferry::disk {

// A file inside a tar archive.
struct TarMember {
  std::string name;
  uint64_t offset = 0;  // of the member's data in the archive
  uint64_t size = 0;
};
std::vector<TarMember> read_tar(const std::filesystem::path& tar);

struct OvaDisk {
  TarMember member;
  std::string format;  // qemu driver for the member (vmdk, vpc, qcow2, raw, ...)
};
// The disks of an OVA in OVF order. Throws kCorrupt/kNotFound with the problem named.
std::vector<OvaDisk> read_ova(const std::filesystem::path& ova);

// qemu's "json:{...}" filename for a disk image stored at [offset, offset+size) of `file`.
std::string json_filename_for_member(const std::filesystem::path& file, const std::string& format, uint64_t offset, uint64_t size);

// `qemu-img info` (and `qemu-img check` where the format has it) on `filename`; fills info.
// `format` empty means the filename is a json: pseudo-filename or the format is to be probed.
void probe_with_qemu(const std::string& filename, const std::string& format, DiskInfo& info);

std::unique_ptr<Source> open_raw_source(const std::filesystem::path& path, DiskInfo info);
std::unique_ptr<Source> open_nbd_source(const std::string& filename, const std::string& format, DiskInfo info);

// Format from a file name extension: a qemu driver name, "ova", or "" (probe).
std::string format_from_extension(const std::filesystem::path& path);
std::string normalize_format(const std::string& name);

}  // namespace ferry::disk
