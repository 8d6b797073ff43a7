// Shared between the disk/ implementation files; not part of the module's interface.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
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
// Returns true if the image keeps all its data in the one file (no external data file or extents).
bool probe_with_qemu(const std::string& filename, const std::string& format, DiskInfo& info);

std::unique_ptr<Source> open_raw_source(const std::filesystem::path& path, DiskInfo info);
std::unique_ptr<Source> open_nbd_source(const std::string& filename, const std::string& format, DiskInfo info);
// Reads data straight from the image file where `qemu-img map` gives its place, else from `fallback`.
// Only for single-file images whose extents qemu maps into the image file itself.
std::unique_ptr<Source> open_mapped_source(const std::filesystem::path& path, const std::string& format, std::unique_ptr<Source> fallback);

// Writes into a temporary file next to the target, starts write-back as it goes (so the final fsync has
// little left to do), and renames into place when finish() has made the file durable.
class FileSink : public Sink {
 public:
  explicit FileSink(const std::filesystem::path& path)
      : path_(path), tmp_(temp_name_for(path)), file_(tmp_, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644) {}
  ~FileSink() override {
    if (!done_) {
      file_ = File();
      ::unlink(tmp_.c_str());
    }
  }
  void finish() override {
    finish_file();
    file_.sync();
    file_.close();
    rename_noreplace_durable(tmp_, path_);
    done_ = true;
  }

 protected:
  // Writes file bytes; called concurrently by the exporting threads.
  void write_file(const void* buf, size_t len, uint64_t file_offset) {
    file_.pwrite_all(buf, len, file_offset);
    constexpr uint64_t kWriteBackEvery = 64u << 20;
    uint64_t before = unsynced_.fetch_add(len);
    if (before < kWriteBackEvery && before + len >= kWriteBackEvery) {
      unsynced_ = 0;
      ::sync_file_range(file_.fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
    }
  }
  void resize(uint64_t file_size) {
    if (::ftruncate(file_.fd(), static_cast<off_t>(file_size)) != 0) fail_errno("'" + tmp_.string() + "': set size");
  }
  // Format metadata written once all data is in (qcow2 tables).
  virtual void finish_file() {}

 private:
  std::filesystem::path path_, tmp_;
  File file_;
  std::atomic<uint64_t> unsynced_{0};
  bool done_ = false;
};

// A qcow2 image written directly (see qcow2_sink.cc): requires plan() before writes.
std::unique_ptr<Sink> make_qcow2_sink(const std::filesystem::path& path, uint64_t size);

// Format from a file name extension: a qemu driver name, "ova", or "" (probe).
std::string format_from_extension(const std::filesystem::path& path);
std::string normalize_format(const std::string& name);

}  // namespace ferry::disk
