// The replication pipeline: reader -> workers (zero test, chunk id, dedup, seal) -> pack writer.
#include "replicate/replicate.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/buffer.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/queue.h"

namespace ferry::replicate {

namespace {

constexpr uint32_t kBatchBytes = 1u << 20;

bool is_zero(const char* p, size_t len) { return len == 0 || (p[0] == 0 && std::memcmp(p, p + 1, len - 1) == 0); }

constexpr unsigned kReaders = 2;

struct ReadJob {
  uint64_t first = 0;  // chunk index
  uint32_t count = 0;
};

struct Batch {
  uint64_t first = 0;  // chunk index
  uint32_t count = 0;
  AlignedBuffer buf;
  std::vector<store::ChunkId> ids;  // per chunk; all-zero chunks have none (`data` false)
  std::vector<bool> data;
};

// Chunk ids a lookup asks the server about at most at once (32 bytes each).
constexpr size_t kLookupIds = 4096;

}  // namespace

Result replicate(disk::Source& source, store::Repository& repo, const Options& options) {
  auto started = std::chrono::steady_clock::now();
  const uint64_t size = source.size();
  const uint32_t cs = repo.config().chunk_size;
  const uint32_t per_batch = std::max<uint32_t>(1, (repo.lookup() ? 4 * kBatchBytes : kBatchBytes) / cs);
  unsigned nthreads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());

  store::Snapshot snap;
  snap.name = options.name.empty() ? std::filesystem::absolute(source.info().path).string() : options.name;
  snap.source = source.info().path;
  snap.source_format = source.info().describe();
  snap.size = size;
  snap.chunk_size = cs;
  snap.created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();

  auto writer = repo.begin_write();
  // A connector's view asks the server which chunks it lacks before compressing them (Repository::lookup): then ids
  // are computed by hashers, a resolver thread asks about everything hashed meanwhile in one request, and sealers
  // compress what the server lacks. Locally, one worker does all three for its batch.
  const store::Repository::Lookup* lookup = repo.lookup();
  // Buffers circulate between the reader and the workers; their number bounds memory. With a lookup, more are in
  // flight so that the resolver's questions cover many batches.
  const size_t nbuffers = 2 * nthreads + 2 + (lookup ? 8 : 0);
  BoundedQueue<AlignedBuffer> free_buffers(nbuffers);
  for (size_t i = 0; i < nbuffers; i++) free_buffers.push(make_aligned_buffer(per_batch * size_t{cs}));
  BoundedQueue<Batch> work(nbuffers), resolve(nbuffers), seal(nbuffers);
  BoundedQueue<ReadJob> reads(nbuffers);

  std::mutex mu;
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  std::vector<std::vector<std::pair<uint64_t, store::ChunkId>>> found(nthreads);
  std::atomic<uint64_t> chunks_new{0}, bytes_read{0};

  auto record_error = [&] {
    std::lock_guard lock(mu);
    if (!error) error = std::current_exception();
    failed = true;
    reads.close();
    work.close();
    resolve.close();
    seal.close();
    free_buffers.close();
  };

  auto chunk_len = [&](uint64_t index) { return static_cast<uint32_t>(std::min<uint64_t>(cs, size - index * cs)); };
  auto hash = [&](Batch& batch, store::Codec& codec) {
    batch.ids.resize(batch.count);
    batch.data.assign(batch.count, false);
    for (uint32_t i = 0; i < batch.count && !failed; i++) {
      const char* data = batch.buf.get() + size_t{i} * cs;
      uint32_t len = chunk_len(batch.first + i);
      if (is_zero(data, len)) continue;
      batch.ids[i] = codec.chunk_id(data, len);
      batch.data[i] = true;
    }
  };
  auto store_batch = [&](Batch& batch, store::Codec& codec, unsigned t) {
    for (uint32_t i = 0; i < batch.count && !failed; i++) {
      if (!batch.data[i]) continue;
      uint64_t index = batch.first + i;
      found[t].emplace_back(index, batch.ids[i]);
      if (writer->add(codec, batch.ids[i], batch.buf.get() + size_t{i} * cs, chunk_len(index))) chunks_new++;
    }
    free_buffers.push(std::move(batch.buf));
  };

  std::vector<std::thread> workers;
  for (unsigned t = 0; t < nthreads; t++) {
    workers.emplace_back([&, t] {
      try {
        auto codec = repo.new_codec();
        while (auto batch = work.pop()) {
          hash(*batch, *codec);
          if (!lookup) store_batch(*batch, *codec, t);
          else if (!resolve.push(std::move(*batch))) break;
        }
      } catch (...) {
        record_error();
      }
    });
  }
  std::thread resolver;
  std::vector<std::thread> sealers;
  if (lookup) {
    resolver = std::thread([&] {
      try {
        while (auto first = resolve.pop()) {
          std::vector<Batch> batches;
          batches.push_back(std::move(*first));
          std::vector<store::ChunkId> ask;
          auto collect = [&](const Batch& b) {
            for (uint32_t i = 0; i < b.count; i++)
              if (b.data[i] && !repo.find(b.ids[i])) ask.push_back(b.ids[i]);
          };
          collect(batches.back());
          while (ask.size() + per_batch <= kLookupIds) {
            auto more = resolve.try_pop();
            if (!more) break;
            batches.push_back(std::move(*more));
            collect(batches.back());
          }
          std::sort(ask.begin(), ask.end());
          ask.erase(std::unique(ask.begin(), ask.end()), ask.end());
          if (!ask.empty()) {
            std::vector<bool> lacking = (*lookup)(ask);
            if (lacking.size() != ask.size()) fail(ErrorKind::kCorrupt, "the server answered a chunk lookup with the wrong number of answers");
            std::vector<store::ChunkId> present;
            for (size_t i = 0; i < ask.size(); i++)
              if (!lacking[i]) present.push_back(ask[i]);
            repo.note_present(present);
          }
          for (auto& b : batches)
            if (!seal.push(std::move(b))) return;
        }
      } catch (...) {
        record_error();
      }
    });
    for (unsigned t = 0; t < nthreads; t++) {
      sealers.emplace_back([&, t] {
        try {
          auto codec = repo.new_codec();
          while (auto batch = seal.pop()) store_batch(*batch, *codec, t);
        } catch (...) {
          record_error();
        }
      });
    }
  }

  // Readers: several reads in flight hide the round trip to qemu-nbd (Source::read is thread-safe).
  std::vector<std::thread> readers;
  for (unsigned t = 0; t < kReaders; t++) {
    readers.emplace_back([&] {
      try {
        while (auto job = reads.pop()) {
          auto buf = free_buffers.pop();
          if (!buf) break;
          uint64_t off = job->first * cs, len = std::min<uint64_t>((job->first + job->count) * cs, size) - off;
          source.read(buf->get(), len, off);
          bytes_read += len;
          // Progress counts the chunks read here and the chunks without data in the walk below: each byte once.
          if (!work.push(Batch{job->first, job->count, std::move(*buf), {}, {}})) break;
          if (options.progress) options.progress->add(len);
        }
      } catch (...) {
        record_error();
      }
    });
  }

  try {
    // Walk the disk a window at a time so extent lists stay small on huge, fragmented disks.
    const uint64_t window = uint64_t{cs} * per_batch * 1024;
    std::vector<bool> data_chunk;
    for (uint64_t wstart = 0; wstart < size && !failed; wstart += window) {
      uint64_t wlen = std::min(window, size - wstart);
      uint64_t first = wstart / cs, last = (wstart + wlen + cs - 1) / cs;  // [first, last)
      data_chunk.assign(last - first, false);
      for (auto& e : source.extents(wstart, wlen)) {
        if (e.zero) continue;
        for (uint64_t c = e.offset / cs; c < (e.offset + e.length + cs - 1) / cs; c++) data_chunk[c - first] = true;
      }
      uint64_t c = first, zero_bytes = 0;
      while (c < last && !failed) {
        if (options.cancel && options.cancel->load(std::memory_order_relaxed))
          fail(ErrorKind::kConflict, "replication of '" + snap.source + "' was cancelled");
        if (!data_chunk[c - first]) {
          zero_bytes += std::min<uint64_t>(cs, size - c * cs);
          c++;
          continue;
        }
        uint64_t end = c;
        while (end < last && end - c < per_batch && data_chunk[end - first]) end++;
        if (!reads.push(ReadJob{c, static_cast<uint32_t>(end - c)})) break;
        c = end;
      }
      if (options.progress) options.progress->add(zero_bytes);
    }
  } catch (...) {
    record_error();
  }
  reads.close();
  for (auto& r : readers) r.join();
  work.close();
  for (auto& w : workers) w.join();
  resolve.close();
  if (resolver.joinable()) resolver.join();
  seal.close();
  for (auto& w : sealers) w.join();
  if (error) std::rethrow_exception(error);  // `writer` is destroyed uncommitted: its packs are removed

  for (auto& part : found) {
    snap.chunks.insert(snap.chunks.end(), part.begin(), part.end());
    std::vector<std::pair<uint64_t, store::ChunkId>>().swap(part);
  }
  std::sort(snap.chunks.begin(), snap.chunks.end(), [](auto& a, auto& b) { return a.first < b.first; });
  writer->commit();

  // Compare with the previous snapshot of the same disk.
  std::optional<store::Snapshot> parent = repo.latest_snapshot(snap.name);
  if (parent) {
    snap.parent = parent->id;
    size_t j = 0;
    uint64_t changed = 0;
    for (auto& [index, id] : snap.chunks) {
      while (j < parent->chunks.size() && parent->chunks[j].first < index) j++;
      if (j >= parent->chunks.size() || parent->chunks[j].first != index || !(parent->chunks[j].second == id)) changed++;
    }
    snap.stats.chunks_changed = changed;
  } else {
    snap.stats.chunks_changed = snap.chunks.size();
  }
  snap.digest = snap.compute_digest();
  snap.stats.bytes_read = bytes_read;
  snap.stats.bytes_new = writer->bytes_new();
  snap.stats.bytes_stored = writer->bytes_written();
  snap.stats.chunks_new = chunks_new;
  snap.stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  Result result;
  result.snapshot_bytes = repo.save_snapshot(snap);
  result.snapshot = std::move(snap);
  return result;
}

}  // namespace ferry::replicate
