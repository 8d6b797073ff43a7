// check, prune and stats over a whole repository.
#include "store/maintenance.h"

#include <algorithm>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "common/progress.h"
#include "store/crypto.h"
#include "store/format.h"

namespace ferry::store {

namespace {

struct PackContents {
  std::vector<std::pair<ChunkId, Location>> entries;
};

std::map<uint32_t, PackContents> entries_by_pack(Repository& repo) {
  std::map<uint32_t, PackContents> packs;
  repo.for_each_entry([&](const ChunkId& id, const Location& loc) { packs[loc.pack].entries.emplace_back(id, loc); });
  return packs;
}

}  // namespace

CheckReport check(Repository& repo, bool read_data, Progress* progress) {
  CheckReport r;
  Backend& backend = repo.backend();
  for (auto& [name, why] : repo.unreadable_indexes()) r.errors.push_back("index '" + name + "' cannot be read: " + why);
  for (auto& [name, why] : repo.unreadable_packs()) r.errors.push_back(why);
  for (auto& name : repo.unindexed_packs())
    r.notes.push_back("pack '" + name + "' is not yet in an index (left by an interrupted run; the next replication indexes and reuses it)");

  std::unordered_set<ChunkId, ChunkIdHash> bad;
  auto packs = entries_by_pack(repo);
  r.packs = packs.size();
  std::vector<uint32_t> readable;
  for (auto& [p, contents] : packs) {
    std::string name = repo.pack_name(p);
    try {
      auto header = read_pack_header(repo, backend, name);
      if (header.key != repo.pack_key(p))
        r.errors.push_back("pack '" + name + "': the index says data key " + std::to_string(repo.pack_key(p)) + ", its trailer " +
                           std::to_string(header.key));
      std::unordered_map<ChunkId, PackEntry, ChunkIdHash> by_id;
      for (auto& e : header.entries) by_id.emplace(e.id, e);
      for (auto& [id, loc] : contents.entries) {
        auto it = by_id.find(id);
        if (it == by_id.end() || it->second.offset != loc.offset || it->second.stored_len != loc.stored_len ||
            it->second.raw_len != loc.raw_len || it->second.compression != loc.compression) {
          r.errors.push_back("pack '" + name + "': the index lists chunk " + id.hex() + " but the pack header disagrees");
          bad.insert(id);
        }
      }
      readable.push_back(p);
    } catch (const Error& e) {
      r.errors.push_back(e.what());
      for (auto& [id, loc] : contents.entries) bad.insert(id);
    }
    r.chunks += contents.entries.size();
  }

  if (read_data) {
    uint64_t total = 0;
    for (uint32_t p : readable) total += backend.size(ObjectType::kPack, repo.pack_name(p));
    if (progress) progress->set_total(total);
    std::mutex mu;
    std::atomic<size_t> next{0};
    auto worker = [&] {
      auto codec = repo.new_codec();
      std::string plain;
      for (size_t i; (i = next.fetch_add(1)) < readable.size();) {
        uint32_t p = readable[i];
        std::string name = repo.pack_name(p);
        std::string data;
        try {
          data = backend.get(ObjectType::kPack, name);
        } catch (const Error& e) {
          std::lock_guard lock(mu);
          r.errors.push_back(e.what());
          for (auto& [id, loc] : packs.at(p).entries) bad.insert(id);
          continue;
        }
        for (auto& [id, loc] : packs.at(p).entries) {
          std::string err;
          try {
            if (static_cast<uint64_t>(loc.offset) + loc.stored_len > data.size()) fail(ErrorKind::kCorrupt, "blob extends past the end of the pack");
            plain.resize(loc.raw_len);
            // Authenticates, decompresses and recomputes the chunk's HMAC.
            repo.open_blob(*codec, id, loc, std::string_view(data).substr(loc.offset, loc.stored_len), plain.data(), name);
          } catch (const Error& e) {
            err = e.what();
          }
          if (!err.empty()) {
            std::lock_guard lock(mu);
            r.errors.push_back("pack '" + name + "' offset " + std::to_string(loc.offset) + ": chunk " + id.hex() + " is damaged: " + err);
            bad.insert(id);
          }
        }
        std::lock_guard lock(mu);
        r.bytes_read += data.size();
        if (progress) progress->add(data.size());
      }
    };
    std::vector<std::thread> threads;
    unsigned n = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    for (unsigned i = 0; i < n; i++) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }

  for (auto& id : repo.snapshot_ids()) {
    r.snapshots++;
    Snapshot s;
    try {
      s = repo.load_snapshot(id);
    } catch (const Error& e) {
      r.errors.push_back(e.what());
      continue;
    }
    if (!(s.compute_digest() == s.digest)) r.errors.push_back("snapshot '" + id + "': chunk table does not match its digest");
    for (auto& [index, cid] : s.chunks) {
      bool missing = !repo.find(cid).has_value();
      if (missing) {
        r.errors.push_back("snapshot '" + id + "': chunk " + cid.hex() + " (disk offset " + std::to_string(index * s.chunk_size) +
                           ") is missing from the store");
        bad.insert(cid);
      }
      if (bad.count(cid)) {
        auto& list = r.damaged_chunks[cid.hex()];
        if (list.empty() || list.back() != id) list.push_back(id);
      }
    }
  }
  for (auto& id : bad)
    if (!r.damaged_chunks.count(id.hex())) r.damaged_chunks[id.hex()] = {};
  return r;
}

uint64_t repair(Repository& repo, const CheckReport& report) {
  std::unordered_set<std::string> damaged;
  for (auto& [chunk, snaps] : report.damaged_chunks) damaged.insert(chunk);
  uint64_t dropped = 0;
  std::vector<PackListing> listings;
  for (auto& [p, contents] : entries_by_pack(repo)) {
    PackListing l{repo.pack_name(p), repo.pack_key(p), {}};
    for (auto& [id, loc] : contents.entries) {
      if (damaged.count(id.hex())) dropped++;
      else l.entries.push_back({id, loc.offset, loc.stored_len, loc.raw_len, loc.compression});
    }
    if (!l.entries.empty()) listings.push_back(std::move(l));
  }
  if (dropped == 0) return 0;
  Backend& backend = repo.backend();
  auto old_indexes = backend.list(ObjectType::kIndex);
  write_index_files(repo, backend, listings);
  for (auto& name : old_indexes) backend.remove(ObjectType::kIndex, name);
  repo.reload_index();
  return dropped;
}

PruneReport prune(Repository& repo) {
  PruneReport report;
  Backend& backend = repo.backend();
  if (!repo.unreadable_indexes().empty())
    fail(ErrorKind::kCorrupt, "prune refused: index '" + repo.unreadable_indexes()[0].first + "' cannot be read; run 'ferry store check'");
  std::unordered_set<ChunkId, ChunkIdHash> live;
  for (auto& id : repo.snapshot_ids()) {
    Snapshot s = repo.load_snapshot(id);  // throws: prune never runs on a store it cannot fully read
    report.snapshots++;
    for (auto& [index, cid] : s.chunks) live.insert(cid);
  }
  for (auto& id : live)
    if (!repo.find(id)) fail(ErrorKind::kCorrupt, "prune refused: chunk " + id.hex() + " of a snapshot is missing; run 'ferry store check'");

  auto packs = entries_by_pack(repo);
  auto old_indexes = backend.list(ObjectType::kIndex);
  std::vector<PackListing> keep;
  std::vector<std::string> obsolete;
  // Blobs are copied verbatim, so each goes to a new pack sealed under the key it was sealed under.
  struct Output {
    std::unique_ptr<ObjectWriter> file;
    std::vector<PackEntry> entries;
  };
  std::map<uint32_t, Output> outputs;
  std::unordered_set<ChunkId, ChunkIdHash> placed;

  auto flush_key = [&](uint32_t key) {
    Output& out = outputs[key];
    if (!out.file) return;
    std::string name = new_object_name();
    out.file->append(encode_pack_trailer(repo, name, key, out.entries));
    out.file->commit(name);
    report.packs_written++;
    keep.push_back({name, key, std::move(out.entries)});
    out.entries.clear();
    out.file.reset();
  };
  auto flush = [&] {
    for (auto& [key, out] : outputs) flush_key(key);
  };

  for (auto& [p, contents] : packs) {
    std::string name = repo.pack_name(p);
    uint32_t key = repo.pack_key(p);
    report.bytes_before += backend.size(ObjectType::kPack, name);
    std::vector<std::pair<ChunkId, Location>> live_here, dead_here;
    for (auto& [id, loc] : contents.entries) {
      auto canonical = repo.find(id);
      bool is_canonical = canonical && canonical->pack == p && canonical->offset == loc.offset;
      if (live.count(id) && is_canonical && !placed.count(id)) {
        live_here.emplace_back(id, loc);
        placed.insert(id);
      } else {
        dead_here.emplace_back(id, loc);
      }
    }
    if (dead_here.empty()) {
      PackListing l{name, key, {}};
      for (auto& [id, loc] : live_here) l.entries.push_back({id, loc.offset, loc.stored_len, loc.raw_len, loc.compression});
      keep.push_back(std::move(l));
      continue;
    }
    for (auto& [id, loc] : dead_here)
      if (!live.count(id)) report.chunks_removed++;
    obsolete.push_back(name);
    if (live_here.empty()) {
      report.packs_deleted++;
      continue;
    }
    report.packs_rewritten++;
    for (auto& [id, loc] : live_here) {
      std::string box = backend.get_range(ObjectType::kPack, name, loc.offset, loc.stored_len);
      Output& out = outputs[key];
      if (!out.file) out.file = backend.create(ObjectType::kPack);
      out.entries.push_back({id, static_cast<uint32_t>(out.file->size()), loc.stored_len, loc.raw_len, loc.compression});
      out.file->append(box);
      if (out.file->size() >= repo.config().pack_size) flush_key(key);
    }
  }
  flush();
  // Order matters for crash safety: the new index is durable before any old index or pack goes.
  if (!obsolete.empty() || old_indexes.size() != index_file_count(keep) || !repo.unindexed_packs().empty()) {
    write_index_files(repo, backend, keep);
    for (auto& name : old_indexes) backend.remove(ObjectType::kIndex, name);
    for (auto& name : obsolete) backend.remove(ObjectType::kPack, name);
  }
  repo.reload_index();
  for (auto& l : keep) report.bytes_after += backend.size(ObjectType::kPack, l.pack);
  return report;
}

StoreStats stats(Repository& repo) {
  StoreStats s;
  Backend& backend = repo.backend();
  auto packs = entries_by_pack(repo);
  s.packs = packs.size();
  for (auto& [p, contents] : packs) s.stored_bytes += backend.size(ObjectType::kPack, repo.pack_name(p));
  for (auto& name : backend.list(ObjectType::kIndex)) s.stored_bytes += backend.size(ObjectType::kIndex, name);
  repo.for_each_entry([&](const ChunkId&, const Location& loc) {
    s.chunks++;
    s.unique_bytes += loc.raw_len;
  });
  for (auto& snap : repo.list_snapshots()) {
    s.snapshots++;
    s.stored_bytes += backend.size(ObjectType::kSnapshot, snap.id);
    s.logical_bytes += snap.size;
    for (auto& [index, id] : snap.chunks) s.data_bytes += snap.chunk_length(index);
  }
  return s;
}

}  // namespace ferry::store
