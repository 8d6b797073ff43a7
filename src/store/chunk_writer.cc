// ChunkWriter: deduplicates against the index, seals chunks on the caller's thread and packs them
// on a background thread; two closer threads make finished packs durable (fsync, rename; in a connector,
// the upload), so writing the next pack never waits for the disk or the server. A pack becomes visible
// only when whole and synced (ObjectWriter::commit), and an index file listing this run's packs is
// written at commit().
#include <atomic>
#include <exception>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "common/fault.h"
#include "common/queue.h"
#include "store/crypto.h"
#include "store/format.h"
#include "store/repository.h"

namespace ferry::store {

namespace {
struct Blob {
  ChunkId id;
  std::string box;
  uint32_t raw_len;
  uint8_t compression;
};
}  // namespace

struct FinishedPack {
  std::unique_ptr<ObjectWriter> file;
  std::string name;
  std::vector<PackEntry> entries;
};

struct ChunkWriter::Impl {
  explicit Impl(Repository& r) : repo(r), key(r.is_view() ? 0 : r.current_key()), queue(32), finished(2) {}
  Repository& repo;
  const uint32_t key;  // the data key this run's packs are sealed under (a view's are sealed by the server)
  BoundedQueue<Blob> queue;
  BoundedQueue<FinishedPack> finished;
  std::thread thread;
  std::vector<std::thread> closers;
  std::mutex mu;
  std::unordered_set<ChunkId, ChunkIdHash> pending;
  std::exception_ptr error;
  std::vector<PackListing> written;
  std::atomic<uint64_t> bytes_written{0}, bytes_new{0};
  bool committed = false, closed = false;

  std::unique_ptr<ObjectWriter> current;
  std::vector<PackEntry> entries;

  // Blob buffers go back to the workers once packed: a fresh 64 KiB string per chunk would have the allocator hand
  // memory back and fault it in again, chunk after chunk.
  std::mutex spare_mu;
  std::vector<std::string> spare;
  std::string take_box() {
    std::lock_guard lock(spare_mu);
    if (spare.empty()) return {};
    std::string b = std::move(spare.back());
    spare.pop_back();
    return b;
  }
  void give_box(std::string b) {
    b.clear();
    std::lock_guard lock(spare_mu);
    if (spare.size() < 64) spare.push_back(std::move(b));
  }

  void run() {
    try {
      while (auto blob = queue.pop()) {
        if (!current) current = repo.backend().create(ObjectType::kPack);
        PackEntry e{blob->id, static_cast<uint32_t>(current->size()), static_cast<uint32_t>(blob->box.size()), blob->raw_len,
                    blob->compression};
        current->append(blob->box);
        give_box(std::move(blob->box));
        entries.push_back(e);
        fault_point("blob");
        if (current->size() >= repo.config().pack_size) finish_pack();
      }
      if (current) finish_pack();
    } catch (...) {
      set_error();
      current.reset();  // discards the partial pack
    }
    finished.close();
  }

  void set_error() {
    std::lock_guard lock(mu);
    if (!error) error = std::current_exception();
    queue.close();
    finished.close();
  }

  void finish_pack() {
    std::string name = new_object_name();
    current->append(encode_pack_trailer(repo, name, key, entries));
    if (!finished.push(FinishedPack{std::move(current), name, std::move(entries)})) rethrow_if_failed();
    entries.clear();
  }

  // A closer thread: fsync and rename each finished pack, then index it.
  void close_packs() {
    while (auto pack = finished.pop()) {
      {
        std::lock_guard lock(mu);
        if (error) continue;  // a failed run publishes nothing more; the pack's temporary is discarded
      }
      try {
        uint64_t size = pack->file->size();
        pack->file->commit(pack->name);
        bytes_written += size;
        publish(pack->name, std::move(pack->entries));
      } catch (...) {
        set_error();
      }
    }
  }

  void publish(const std::string& name, std::vector<PackEntry> entries) {
    {
      std::unique_lock lock(repo.mu_);
      uint32_t p = repo.add_pack_locked(name, key);
      for (auto& e : entries) repo.index_.emplace(e.id, Location{p, e.offset, e.stored_len, e.raw_len, e.compression});
    }
    {
      std::lock_guard lock(mu);
      for (auto& e : entries) pending.erase(e.id);
      written.push_back({name, key, std::move(entries)});
    }
    fault_point("pack");
  }

  void rethrow_if_failed() {
    std::lock_guard lock(mu);
    if (error) std::rethrow_exception(error);
  }

  void stop() {
    if (closed) return;
    closed = true;
    queue.close();
    if (thread.joinable()) thread.join();
    for (auto& t : closers)
      if (t.joinable()) t.join();
  }
};

ChunkWriter::ChunkWriter(Repository& repo) : impl_(std::make_unique<Impl>(repo)) {
  impl_->thread = std::thread([this] { impl_->run(); });
  // Two closers: while one pack's commit waits (fsync, or a connector's upload for the server's answer), the next
  // pack's starts.
  for (int i = 0; i < 2; i++) impl_->closers.emplace_back([this] { impl_->close_packs(); });
}

ChunkWriter::~ChunkWriter() {
  impl_->stop();
  if (impl_->committed) return;
  // Abandoned run: its packs are listed by no index and no snapshot; remove them so a failed run leaves the store as it was.
  for (auto& listing : impl_->written) {
    try {
      impl_->repo.backend().remove(ObjectType::kPack, listing.pack);
    } catch (...) {
    }
  }
  try {
    impl_->repo.reload_index();
  } catch (...) {
    // A destructor must not throw (that would end the process): the index is rebuilt on the next open.
  }
}

bool ChunkWriter::add(Codec& codec, const ChunkId& id, const char* data, size_t len) {
  impl_->rethrow_if_failed();
  if (impl_->repo.find(id)) return false;
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->pending.insert(id).second) return false;
  }
  Compression compression;
  std::string box = impl_->take_box();
  seal_chunk(*codec.impl_, id, data, len, &compression, box);
  impl_->bytes_new += len;
  if (!impl_->queue.push(Blob{id, std::move(box), static_cast<uint32_t>(len), static_cast<uint8_t>(compression)})) {
    impl_->rethrow_if_failed();
    fail(ErrorKind::kIo, "chunk writer is closed");
  }
  return true;
}

void ChunkWriter::commit() {
  impl_->stop();
  impl_->rethrow_if_failed();
  Repository& repo = impl_->repo;
  // A view's packs are indexed by the server, from what it verified; a local run indexes its own and any packs an
  // interrupted run left unindexed.
  if (!repo.is_view()) {
    std::vector<PackListing> listings = impl_->written;
    {
      std::shared_lock lock(repo.mu_);
      listings.insert(listings.end(), repo.unindexed_.begin(), repo.unindexed_.end());
    }
    if (!listings.empty()) {
      impl_->bytes_written += write_index_files(repo, repo.backend(), listings);
      std::unique_lock lock(repo.mu_);
      repo.unindexed_.clear();
    }
  }
  impl_->committed = true;
}

uint64_t ChunkWriter::bytes_written() const { return impl_->bytes_written; }
uint64_t ChunkWriter::bytes_new() const { return impl_->bytes_new; }

std::unique_ptr<ChunkWriter> Repository::begin_write() { return std::unique_ptr<ChunkWriter>(new ChunkWriter(*this)); }

}  // namespace ferry::store
