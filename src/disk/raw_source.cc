// Raw files and block devices: pread, with SEEK_DATA/SEEK_HOLE so holes are never read.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"
#include "common/fs.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

class RawSource : public Source {
 public:
  RawSource(const std::filesystem::path& path, DiskInfo info) : info_(std::move(info)), file_(path, O_RDONLY) {
    struct stat st;
    if (::fstat(file_.fd(), &st) != 0) fail_errno("disk '" + info_.path + "'");
    if (S_ISBLK(st.st_mode)) {
      uint64_t size = 0;
      if (::ioctl(file_.fd(), BLKGETSIZE64, &size) != 0) fail_errno("disk '" + info_.path + "': size of block device");
      info_.virtual_size = size;
      block_device_ = true;
    } else {
      info_.virtual_size = static_cast<uint64_t>(st.st_size);
    }
    ::posix_fadvise(file_.fd(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }

  const DiskInfo& info() const override { return info_; }

  std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
    std::vector<Extent> out;
    uint64_t end = std::min(offset + length, info_.virtual_size);
    if (block_device_) {
      if (offset < end) out.push_back({offset, end - offset, false});
      return out;
    }
    uint64_t pos = offset;
    while (pos < end) {
      off_t data = ::lseek(file_.fd(), static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) {  // no more data: the rest is a hole
          out.push_back({pos, end - pos, true});
          break;
        }
        if (errno == EINVAL) {  // file system without SEEK_DATA: all data
          out.push_back({pos, end - pos, false});
          break;
        }
        fail_errno("disk '" + info_.path + "': SEEK_DATA");
      }
      uint64_t d = std::min<uint64_t>(static_cast<uint64_t>(data), end);
      if (d > pos) out.push_back({pos, d - pos, true});
      if (d >= end) break;
      off_t hole = ::lseek(file_.fd(), static_cast<off_t>(d), SEEK_HOLE);
      if (hole < 0) fail_errno("disk '" + info_.path + "': SEEK_HOLE");
      uint64_t h = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
      out.push_back({d, h - d, false});
      pos = h;
    }
    return out;
  }

  void read(void* buf, size_t len, uint64_t offset) override {
    try {
      file_.pread_all(buf, len, offset);
    } catch (const Error& e) {
      fail(e.kind(), "disk '" + info_.path + "': " + e.what());
    }
  }

 private:
  DiskInfo info_;
  File file_;
  bool block_device_ = false;
};

}  // namespace

std::unique_ptr<Source> open_raw_source(const std::filesystem::path& path, DiskInfo info) {
  return std::make_unique<RawSource>(path, std::move(info));
}

}  // namespace ferry::disk
