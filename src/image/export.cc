// Export: workers take runs of consecutive chunks, read and open them, and write each run at once.
#include "image/export.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <chrono>
#include <mutex>
#include <thread>

#include "common/buffer.h"
#include "common/error.h"
#include "common/progress.h"

namespace ferry::image {

namespace {

// The last chunks a worker decoded, direct-mapped by id: a disk's repeated blocks (the same file in many
// places, filler patterns) are then read, authenticated and decompressed once per worker, not every time.
class RecentChunks {
 public:
  explicit RecentChunks(uint32_t chunk_size) : chunk_size_(chunk_size), data_(make_aligned_buffer(size_t{chunk_size} * kSlots)) {}
  bool copy(const store::ChunkId& id, uint32_t len, char* out) const {
    const Slot& s = slots_[slot(id)];
    if (!s.used || !(s.id == id) || s.len != len) return false;
    std::memcpy(out, data_.get() + size_t{slot(id)} * chunk_size_, len);
    return true;
  }
  void remember(const store::ChunkId& id, uint32_t len, const char* data) {
    size_t i = slot(id);
    slots_[i] = {id, len, true};
    std::memcpy(data_.get() + i * chunk_size_, data, len);
  }

 private:
  static constexpr size_t kSlots = 64;
  static size_t slot(const store::ChunkId& id) { return id.bytes[0] % kSlots; }
  struct Slot {
    store::ChunkId id;
    uint32_t len = 0;
    bool used = false;
  };
  uint32_t chunk_size_;
  AlignedBuffer data_;
  Slot slots_[kSlots];
};

}  // namespace

ExportResult export_snapshot(store::Repository& repo, const store::Snapshot& snap, disk::Sink& sink, const ExportOptions& options) {
  auto started = std::chrono::steady_clock::now();
  if (!(snap.compute_digest() == snap.digest))
    fail(ErrorKind::kCorrupt, "snapshot '" + snap.id + "': its chunk table does not match its digest; refusing to export");
  const uint32_t cs = snap.chunk_size;
  constexpr uint32_t kRunChunks = 16;
  // Runs of consecutive chunk indexes, at most kRunChunks long.
  std::vector<std::pair<size_t, size_t>> runs;  // [begin, end) into snap.chunks
  for (size_t i = 0; i < snap.chunks.size();) {
    size_t j = i + 1;
    while (j < snap.chunks.size() && j - i < kRunChunks && snap.chunks[j].first == snap.chunks[j - 1].first + 1) j++;
    runs.emplace_back(i, j);
    i = j;
  }
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [index, id] : snap.chunks) {
    uint64_t off = index * cs, len = snap.chunk_length(index);
    if (!ranges.empty() && ranges.back().first + ranges.back().second == off) ranges.back().second += len;
    else ranges.emplace_back(off, len);
  }
  sink.plan(ranges);
  if (options.progress) {
    uint64_t data = 0;
    for (auto& [off, len] : ranges) data += len;
    options.progress->set_total(data);
  }
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> written{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::exception_ptr error;
  unsigned nthreads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < nthreads; t++) {
    threads.emplace_back([&] {
      try {
        auto codec = repo.new_codec();
        AlignedBuffer buf = make_aligned_buffer(size_t{cs} * kRunChunks);
        RecentChunks recent(cs);
        for (size_t r; !failed && (r = next.fetch_add(1)) < runs.size();) {
          auto [b, e] = runs[r];
          uint64_t len = 0;
          for (size_t k = b; k < e; k++) {
            uint32_t clen = snap.chunk_length(snap.chunks[k].first);
            const store::ChunkId& id = snap.chunks[k].second;
            if (!recent.copy(id, clen, buf.get() + len)) {
              repo.read_chunk(*codec, id, buf.get() + len, clen);
              recent.remember(id, clen, buf.get() + len);
            }
            len += clen;
          }
          sink.write(buf.get(), len, snap.chunks[b].first * cs);
          written += len;
          if (options.progress) options.progress->add(len);
        }
      } catch (...) {
        std::lock_guard lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
  sink.finish();
  ExportResult result;
  result.bytes_written = written;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

}  // namespace ferry::image
