// Single-file formats whose data sits uncompressed in the image (qcow2, monolithicSparse VMDK, VHD,
// VHDX, VDI): qemu itself maps each guest range to its place in the file (`qemu-img map --output=json`,
// one window at a time), and data is read from there with pread, at raw-file speed. Ranges qemu gives
// no file offset for (compressed clusters) are read through the qemu-nbd source as before.
// Measured: replicating a 300 MiB-data monolithicSparse VMDK took 1.0-2.0 s through qemu-nbd alone.
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

struct MapEntry {
  uint64_t start = 0, length = 0;
  bool zero = false;
  bool has_offset = false;
  uint64_t offset = 0;  // in the image file
};

class MappedSource : public Source {
 public:
  MappedSource(const std::filesystem::path& path, std::string format, std::unique_ptr<Source> fallback)
      : path_(path), format_(std::move(format)), file_(path, O_RDONLY), fallback_(std::move(fallback)) {}

  const DiskInfo& info() const override { return fallback_->info(); }

  std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
    uint64_t end = std::min(offset + length, size());
    std::vector<MapEntry> window = map(offset, end - offset);
    std::vector<Extent> out;
    for (auto& e : window) {
      if (!out.empty() && out.back().zero == e.zero && out.back().offset + out.back().length == e.start)
        out.back().length += e.length;
      else
        out.push_back({e.start, e.length, e.zero});
    }
    std::lock_guard lock(mu_);
    windows_.push_back(std::move(window));
    // Readers trail the planner by a few batches: keep the previous window too.
    while (windows_.size() > 2) windows_.pop_front();
    return out;
  }

  void read(void* buf, size_t len, uint64_t offset) override {
    char* p = static_cast<char*>(buf);
    while (len > 0) {
      MapEntry e;
      bool found = lookup(offset, &e);
      size_t n = found ? static_cast<size_t>(std::min<uint64_t>(len, e.start + e.length - offset)) : len;
      if (found && e.zero) {
        std::memset(p, 0, n);
      } else if (found && e.has_offset) {
        try {
          file_.pread_all(p, n, e.offset + (offset - e.start));
        } catch (const Error& err) {
          fail(err.kind(), "disk '" + info().path + "': " + err.what());
        }
      } else {
        fallback_->read(p, n, offset);
      }
      p += n;
      len -= n;
      offset += n;
    }
  }

 private:
  std::vector<MapEntry> map(uint64_t offset, uint64_t length) {
    ProcessResult r = run_process({"qemu-img", "map", "--output=json", "-f", format_, "--start-offset=" + std::to_string(offset),
                                   "--max-length=" + std::to_string(length), path_.string()});
    if (r.exit_code != 0) fail(ErrorKind::kCorrupt, "disk '" + info().path + "': " + tool_message(r.err));
    std::vector<MapEntry> out;
    try {
      for (auto& j : nlohmann::json::parse(r.out)) {
        MapEntry e;
        e.start = j.at("start");
        e.length = j.at("length");
        bool data = j.value("data", false), present = j.value("present", true);
        e.zero = j.value("zero", false) || !present || !data;
        e.has_offset = !e.zero && j.contains("offset");
        if (e.has_offset) e.offset = j["offset"];
        out.push_back(e);
      }
    } catch (const nlohmann::json::exception& ex) {
      fail(ErrorKind::kExternal, "disk '" + info().path + "': cannot parse qemu-img map output: " + ex.what());
    }
    return out;
  }

  bool lookup(uint64_t offset, MapEntry* out) {
    std::lock_guard lock(mu_);
    for (auto& w : windows_) {
      auto it = std::upper_bound(w.begin(), w.end(), offset, [](uint64_t o, const MapEntry& e) { return o < e.start; });
      if (it == w.begin()) continue;
      --it;
      if (offset < it->start + it->length) {
        *out = *it;
        return true;
      }
    }
    return false;
  }

  std::filesystem::path path_;
  std::string format_;
  File file_;
  std::unique_ptr<Source> fallback_;
  std::mutex mu_;
  std::deque<std::vector<MapEntry>> windows_;
};

}  // namespace

std::unique_ptr<Source> open_mapped_source(const std::filesystem::path& path, const std::string& format, std::unique_ptr<Source> fallback) {
  return std::make_unique<MappedSource>(path, format, std::move(fallback));
}

}  // namespace ferry::disk
