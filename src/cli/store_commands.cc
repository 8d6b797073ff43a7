// store, replicate, snapshots, image and keys verbs.
#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/output.h"
#include "common/error.h"
#include "common/hex.h"
#include "common/progress.h"
#include "image/export.h"
#include "replicate/replicate.h"
#include "store/maintenance.h"

namespace ferry::cli {

using nlohmann::json;
using store::Backend;

namespace {

store::Keyring keyring_of(const Common& c) { return store::Keyring(c.keyring.empty() ? store::Keyring::default_dir() : std::filesystem::path(c.keyring)); }

void need_store(const Common& c) {
  if (c.store.empty()) fail(ErrorKind::kInvalidArgument, "no store given: use --store DIR or set FERRY_STORE");
}

struct OpenStore {
  std::unique_ptr<Backend::Lock> lock, exclusive;
  std::unique_ptr<store::Repository> repo;
};

OpenStore open_store(const Common& c, Backend::LockKind kind, const std::string& purpose) {
  need_store(c);
  OpenStore s;
  auto backend = store::open_local_backend(c.store, false);
  if (kind == Backend::LockKind::kExclusive) {
    s.lock = backend->lock(Backend::LockKind::kWrite, purpose);
    s.exclusive = backend->lock(Backend::LockKind::kExclusive, purpose);
  } else {
    s.lock = backend->lock(kind, purpose);
  }
  s.repo = store::Repository::open(std::move(backend), keyring_of(c));
  return s;
}

bool show_progress(const Common& c) { return !c.json && ::isatty(2); }

std::string short_id(const std::string& id) { return id.substr(0, 12); }

json snapshot_json(const store::Snapshot& s, bool with_chunks) {
  json j = {{"id", s.id},
            {"name", s.name},
            {"source", s.source},
            {"source_format", s.source_format},
            {"size", s.size},
            {"chunk_size", s.chunk_size},
            {"created", s.created},
            {"parent", s.parent},
            {"digest", s.digest.hex()},
            {"data_chunks", s.chunks.size()},
            {"stats",
             {{"bytes_read", s.stats.bytes_read},
              {"bytes_new", s.stats.bytes_new},
              {"bytes_stored", s.stats.bytes_stored},
              {"chunks_new", s.stats.chunks_new},
              {"chunks_changed", s.stats.chunks_changed},
              {"seconds", s.stats.seconds}}}};
  if (with_chunks) {
    json zeros = json::array();
    for (auto& [off, len] : s.zero_ranges()) zeros.push_back({{"offset", off}, {"length", len}});
    j["zero_ranges"] = zeros;
  }
  return j;
}

// Creates the store; with `if_missing`, a store that another process created meanwhile is accepted.
void do_init(const Common& c, const InitArgs& a, bool if_missing = false) {
  store::Keyring keyring = keyring_of(c);
  if (a.encrypt && a.key_id.empty()) fail(ErrorKind::kInvalidArgument, "--encrypt needs --key-id: the master key that wraps the store's data key");
  if (!a.encrypt && !a.key_id.empty()) fail(ErrorKind::kInvalidArgument, "--key-id is only meaningful with --encrypt");
  if (a.encrypt) store::Keyring::validate_key_id(a.key_id);
  auto backend = store::open_local_backend(c.store, true);
  auto lock = backend->lock(Backend::LockKind::kWrite, "init");  // two first runs must not both create keys
  if (if_missing && backend->exists(store::ObjectType::kConfig, "config")) return;
  if (a.encrypt && !keyring.has(a.key_id)) {
    keyring.create(a.key_id);
    std::cerr << "ferry: created master key '" << a.key_id << "' in " << keyring.dir().string()
              << " (back it up: without it the store cannot be read)\n";
  }
  store::InitOptions o;
  o.encrypt = a.encrypt;
  o.key_id = a.key_id;
  o.chunk_size = a.chunk_size;
  o.zstd_level = a.compression_level;
  store::Repository::init(*backend, o, keyring);
}

}  // namespace

int store_init(const Common& c, const InitArgs& a) {
  need_store(c);
  do_init(c, a);
  if (c.json) print_json({{"store", c.store}, {"encrypted", a.encrypt}, {"key_id", a.key_id}, {"chunk_size", a.chunk_size}});
  else
    std::cout << "created store " << c.store << (a.encrypt ? " (encrypted with master key '" + a.key_id + "')" : " (not encrypted)") << "\n";
  return 0;
}

int replicate(const Common& c, const ReplicateArgs& a) {
  need_store(c);
  // Open the disk first: a bad disk must leave the store untouched (not even created).
  disk::OpenOptions oo;
  oo.format = a.format;
  auto source = disk::open_source(a.disk, oo);
  if (!std::filesystem::exists(std::filesystem::path(c.store) / "config")) {
    do_init(c, a.init, true);
    if (!c.json) std::cerr << "ferry: created store " << c.store << "\n";
  }
  OpenStore s = open_store(c, Backend::LockKind::kWrite, "replicate");
  const auto& cfg = s.repo->config();
  if (a.init.encrypt && (!cfg.encrypted || cfg.key_id != a.init.key_id))
    fail(ErrorKind::kInvalidArgument, "store '" + c.store + "' is " + (cfg.encrypted ? "encrypted with master key '" + cfg.key_id + "'" : "not encrypted") +
                                          ", not with master key '" + a.init.key_id + "'");
  Progress progress("replicate", source->size(), show_progress(c));
  replicate::Options ro;
  ro.name = a.name;
  ro.threads = a.threads;
  ro.progress = &progress;
  auto r = replicate::replicate(*source, *s.repo, ro);
  progress.finish();
  const auto& snap = r.snapshot;
  uint64_t stored = snap.stats.bytes_stored + r.snapshot_bytes;
  if (c.json) {
    json j = snapshot_json(snap, false);
    j["snapshot"] = snap.id;
    j["bytes_read"] = snap.stats.bytes_read;
    j["bytes_new"] = snap.stats.bytes_new;
    j["bytes_stored"] = stored;
    j["seconds"] = snap.stats.seconds;
    print_json(j);
  } else {
    double rate = snap.stats.seconds > 0 ? snap.stats.bytes_read / snap.stats.seconds : 0;
    std::cout << "snapshot " << snap.id << "\n"
              << "  disk     " << snap.source << " (" << snap.source_format << ", " << human_bytes(snap.size) << ")\n"
              << "  name     " << snap.name << "\n"
              << "  run      " << (snap.parent.empty() ? "full" : "incremental from " + short_id(snap.parent)) << ", "
              << snap.stats.chunks_changed << " of " << snap.chunks.size() << " data chunks changed\n"
              << "  read     " << human_bytes(snap.stats.bytes_read) << " in " << format_seconds(snap.stats.seconds) << " ("
              << human_bytes(static_cast<uint64_t>(rate)) << "/s)\n"
              << "  stored   " << human_bytes(snap.stats.bytes_new) << " of new data as " << human_bytes(stored) << "\n"
              << "  digest   " << snap.digest.hex() << "\n";
  }
  return 0;
}

int store_check(const Common& c, bool read_data, bool repair) {
  OpenStore s = open_store(c, repair ? Backend::LockKind::kExclusive : Backend::LockKind::kRead, repair ? "repair" : "check");
  Progress progress("check", 0, show_progress(c) && read_data);
  auto r = store::check(*s.repo, read_data, read_data ? &progress : nullptr);
  progress.finish();
  uint64_t dropped = repair ? store::repair(*s.repo, r) : 0;
  if (repair && !c.json && dropped)
    std::cout << "repair: dropped " << dropped << " damaged chunks from the index; replicate the affected disks again to store them anew\n";
  if (c.json) {
    print_json({{"ok", r.ok()},
                {"errors", r.errors},
                {"notes", r.notes},
                {"damaged_chunks", r.damaged_chunks},
                {"packs", r.packs},
                {"chunks", r.chunks},
                {"snapshots", r.snapshots},
                {"bytes_read", r.bytes_read},
                {"repaired_chunks", dropped}});
  } else {
    for (auto& n : r.notes) std::cout << "note: " << n << "\n";
    for (auto& e : r.errors) std::cout << "error: " << e << "\n";
    for (auto& [chunk, snaps] : r.damaged_chunks) {
      std::cout << "damaged chunk " << chunk << " is used by ";
      if (snaps.empty()) std::cout << "no snapshot";
      for (size_t i = 0; i < snaps.size(); i++) std::cout << (i ? ", " : "") << "snapshot " << snaps[i];
      std::cout << "\n";
    }
    std::cout << (r.ok() ? "store is consistent" : "store has errors") << ": " << r.snapshots << " snapshots, " << r.packs << " packs, "
              << r.chunks << " chunks" << (read_data ? ", " + human_bytes(r.bytes_read) + " of pack data verified" : "") << "\n";
  }
  return r.ok() ? 0 : 1;
}

int store_prune(const Common& c) {
  OpenStore s = open_store(c, Backend::LockKind::kExclusive, "prune");
  auto r = store::prune(*s.repo);
  if (c.json) {
    print_json({{"snapshots", r.snapshots},
                {"packs_deleted", r.packs_deleted},
                {"packs_rewritten", r.packs_rewritten},
                {"packs_written", r.packs_written},
                {"chunks_removed", r.chunks_removed},
                {"bytes_before", r.bytes_before},
                {"bytes_after", r.bytes_after}});
  } else {
    std::cout << "removed " << r.chunks_removed << " unused chunks: " << r.packs_deleted << " packs deleted, " << r.packs_rewritten
              << " rewritten; packs now take " << human_bytes(r.bytes_after) << " (were " << human_bytes(r.bytes_before) << ")\n";
  }
  return 0;
}

int store_rotate_keys(const Common& c, bool new_data_key, const std::string& master_key) {
  if (!new_data_key && master_key.empty()) fail(ErrorKind::kInvalidArgument, "nothing to do: --no-new-data-key needs --master-key");
  OpenStore s = open_store(c, Backend::LockKind::kWrite, "key rotation");
  s.repo->rotate_keys(keyring_of(c), new_data_key, master_key);
  const auto& cfg = s.repo->config();
  if (c.json) {
    print_json({{"data_keys", s.repo->current_key() + 1}, {"encrypted", cfg.encrypted}, {"key_id", cfg.key_id}});
  } else {
    std::cout << "store " << c.store << ": " << s.repo->current_key() + 1 << " data key(s); new data is sealed under the newest"
              << (cfg.encrypted ? "; every key is wrapped by master key '" + cfg.key_id + "'" : std::string()) << "\n";
  }
  return 0;
}

int store_stats(const Common& c) {
  OpenStore s = open_store(c, Backend::LockKind::kRead, "stats");
  auto st = store::stats(*s.repo);
  const auto& cfg = s.repo->config();
  if (c.json) {
    print_json({{"snapshots", st.snapshots},
                {"packs", st.packs},
                {"chunks", st.chunks},
                {"stored_bytes", st.stored_bytes},
                {"unique_bytes", st.unique_bytes},
                {"logical_bytes", st.logical_bytes},
                {"data_bytes", st.data_bytes},
                {"chunk_size", cfg.chunk_size},
                {"encrypted", cfg.encrypted},
                {"key_id", cfg.key_id}});
  } else {
    double ratio = st.stored_bytes ? static_cast<double>(st.data_bytes) / st.stored_bytes : 0;
    char r[32];
    std::snprintf(r, sizeof r, "%.2fx", ratio);
    std::cout << "store        " << c.store << " (" << (cfg.encrypted ? "encrypted, key '" + cfg.key_id + "'" : "not encrypted") << ", "
              << human_bytes(cfg.chunk_size) << " chunks)\n"
              << "snapshots    " << st.snapshots << " covering " << human_bytes(st.logical_bytes) << " of disks, "
              << human_bytes(st.data_bytes) << " of data\n"
              << "unique data  " << human_bytes(st.unique_bytes) << " in " << st.chunks << " chunks, " << st.packs << " packs\n"
              << "stored       " << human_bytes(st.stored_bytes) << " (data / stored = " << r << ")\n";
  }
  return 0;
}

int snapshots_list(const Common& c, const std::string& name) {
  OpenStore s = open_store(c, Backend::LockKind::kRead, "list");
  auto snaps = s.repo->list_snapshots();
  if (!name.empty()) std::erase_if(snaps, [&](const store::Snapshot& sn) { return sn.name != name; });
  if (c.json) {
    json arr = json::array();
    for (auto& sn : snaps) arr.push_back(snapshot_json(sn, false));
    print_json(arr);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& sn : snaps)
    rows.push_back({short_id(sn.id), format_time(sn.created), human_bytes(sn.size), sn.parent.empty() ? "full" : "incremental",
                    human_bytes(sn.stats.bytes_new), sn.name});
  print_table({"ID", "CREATED", "SIZE", "RUN", "NEW DATA", "NAME"}, rows);
  return 0;
}

int snapshots_show(const Common& c, const std::string& id) {
  OpenStore s = open_store(c, Backend::LockKind::kRead, "show");
  auto sn = s.repo->load_snapshot(s.repo->resolve_snapshot(id));
  if (c.json) {
    print_json(snapshot_json(sn, true));
    return 0;
  }
  auto zeros = sn.zero_ranges();
  uint64_t zero_bytes = 0;
  for (auto& z : zeros) zero_bytes += z.second;
  std::cout << "snapshot     " << sn.id << "\n"
            << "name         " << sn.name << "\n"
            << "source       " << sn.source << " (" << sn.source_format << ")\n"
            << "created      " << format_time(sn.created) << "\n"
            << "size         " << human_bytes(sn.size) << " (" << sn.size << " bytes)\n"
            << "parent       " << (sn.parent.empty() ? "none (full run)" : sn.parent) << "\n"
            << "chunks       " << sn.chunks.size() << " data chunks of " << human_bytes(sn.chunk_size) << ", " << zeros.size()
            << " zero ranges (" << human_bytes(zero_bytes) << ")\n"
            << "run          read " << human_bytes(sn.stats.bytes_read) << ", " << sn.stats.chunks_changed << " chunks changed, "
            << human_bytes(sn.stats.bytes_new) << " new, " << format_seconds(sn.stats.seconds) << "\n"
            << "digest       " << sn.digest.hex() << "\n";
  return 0;
}

int snapshots_delete(const Common& c, const std::string& id) {
  OpenStore s = open_store(c, Backend::LockKind::kWrite, "delete");
  std::string full = s.repo->resolve_snapshot(id);
  s.repo->delete_snapshot(full);
  if (c.json) print_json({{"deleted", full}});
  else std::cout << "deleted snapshot " << full << " (run 'ferry store prune' to reclaim its space)\n";
  return 0;
}

int image_export(const Common& c, const ExportArgs& a) {
  if (a.output.empty()) fail(ErrorKind::kInvalidArgument, "no --output path given");
  auto format = disk::parse_target_format(a.format);
  OpenStore s = open_store(c, Backend::LockKind::kRead, "export");
  auto sn = s.repo->load_snapshot(s.repo->resolve_snapshot(a.snapshot));
  auto sink = disk::create_sink(a.output, format, sn.size);
  Progress progress("export", 0, show_progress(c));
  image::ExportOptions eo;
  eo.threads = a.threads;
  eo.progress = &progress;
  auto r = image::export_snapshot(*s.repo, sn, *sink, eo);
  progress.finish();
  if (c.json) {
    print_json({{"snapshot", sn.id}, {"output", a.output}, {"format", disk::to_string(format)}, {"size", sn.size},
                {"bytes_written", r.bytes_written}, {"seconds", r.seconds}});
  } else {
    std::cout << "exported snapshot " << short_id(sn.id) << " to " << a.output << " (" << disk::to_string(format) << ", "
              << human_bytes(sn.size) << ", " << human_bytes(r.bytes_written) << " of data) in " << format_seconds(r.seconds) << "\n";
  }
  return 0;
}

int keys_create(const Common& c, const std::string& key_id) {
  auto keyring = keyring_of(c);
  keyring.create(key_id);
  if (c.json) print_json({{"key_id", key_id}, {"keyring", keyring.dir().string()}});
  else std::cout << "created master key '" << key_id << "' in " << keyring.dir().string() << " (back it up)\n";
  return 0;
}

int keys_list(const Common& c) {
  auto keyring = keyring_of(c);
  auto ids = keyring.list();
  if (c.json) print_json(ids);
  else
    for (auto& id : ids) std::cout << id << "\n";
  return 0;
}

}  // namespace ferry::cli
