// The server's stores: opening and checking them against the catalog, free space, maintenance locks.
#include "service/stores.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "common/hex.h"
#include "common/log.h"
#include "service/service.h"

namespace ferry::service {

namespace fs = std::filesystem;

namespace {

catalog::Time now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Space {
  uint64_t free = 0, size = 0;
};

Space space_of(const fs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return {};
  return {uint64_t{st.f_bavail} * st.f_frsize, uint64_t{st.f_blocks} * st.f_frsize};
}

}  // namespace

struct Stores::Impl {
  fs::path root;
  catalog::Catalog& catalog;
  const store::Keyring& keyring;
  uint64_t min_free;

  struct Store {
    std::unique_ptr<store::Repository> repo;
    std::unique_ptr<store::Backend::Lock> write_lock;
    std::string error;  // set: unusable, and why
    std::chrono::steady_clock::time_point failed_at;  // when opening last failed (tried again a minute later)
    ErrorKind error_kind = ErrorKind::kIo;
    std::string full;   // set: full, and why
    std::mutex maintenance;
  };
  mutable std::mutex mu;
  std::map<std::string, std::unique_ptr<Store>> stores;
  std::set<std::string> prune_requests;

  uint64_t reserve_for(const Space& s) const {
    if (min_free) return min_free;
    return std::clamp<uint64_t>(s.size / 50, uint64_t{16} << 20, uint64_t{1} << 30);
  }

  // Opens `name` into `st` (under mu: opening is rare and must not race with itself).
  void open_locked(const std::string& name, Store& st, const std::optional<Spec>& create) {
    fs::path dir = root / name;
    bool fresh = !fs::exists(dir / "config");
    if (fresh && !create) fail(ErrorKind::kNotFound, "no store '" + name + "' on this server");
    // O_DIRECT packs: the server's stores are archives, written all day by connectors and read back at cut-over,
    // mostly long after; through the page cache they would cost the CPU copying them in (docs/architecture.md) and
    // push the catalog and everything else out of memory.
    auto backend = store::open_local_backend(dir, true, /*direct_io=*/true);
    st.write_lock = backend->try_lock(store::Backend::LockKind::kWrite, "ferry server");
    if (!st.write_lock)
      fail(ErrorKind::kConflict, "store '" + dir.string() + "' is being written by another ferry process (a local 'ferry replicate' or prune?)");
    auto record = catalog.get_store(name);
    if (fresh) {
      if (record)
        fail(ErrorKind::kCorrupt, "store '" + name + "' is missing from " + dir.string() + " although the catalog records it (repository " +
                                      record->repository_id + "); restore it from a backup or delete its images");
      store::InitOptions options;
      options.encrypt = create->encrypt;
      options.key_id = create->encrypt ? create->key_id : "";
      store::Repository::init(*backend, options, keyring);
      spdlog::info("created store '{}' ({})", name, options.encrypt ? "encrypted with master key " + options.key_id : "unencrypted");
    }
    auto repo = store::Repository::open(std::move(backend), keyring);
    const auto& c = repo->config();
    catalog::StoreRecord now{name, c.id, c.encrypted, c.key_id, repo->key_file_digest(), now_seconds()};
    if (!record) {
      if (!fresh) spdlog::warn("store '{}' was not recorded in the catalog yet; recording repository {} as it is now", name, c.id);
      catalog.put_store(now);
    } else if (record->repository_id != now.repository_id || record->encrypted != now.encrypted || record->key_id != now.key_id ||
               record->key_file_sha256 != now.key_file_sha256) {
      std::string what = record->repository_id != now.repository_id ? "repository id " + now.repository_id + " instead of " + record->repository_id
                         : record->encrypted != now.encrypted      ? std::string("another encryption setting")
                         : record->key_id != now.key_id            ? "master key '" + now.key_id + "' instead of '" + record->key_id + "'"
                                                                   : std::string("a key file the server did not write");
      fail(ErrorKind::kCorrupt, "store '" + name + "' (" + dir.string() + ") has " + what +
                                    " since the server last used it: its config or key file was replaced; refusing to use it (restore "
                                    "them from a backup; rotate keys through the server, with 'ferry stores rotate-keys')");
    }
    st.repo = std::move(repo);
    for (auto& [pack, why] : st.repo->unreadable_packs()) spdlog::error("store '{}': {}", name, why);
    for (auto& [index, why] : st.repo->unreadable_indexes()) spdlog::error("store '{}': index '{}' cannot be read: {}", name, index, why);
  }

  Store& slot(const std::string& name) {
    auto& s = stores[name];
    if (!s) s = std::make_unique<Store>();
    return *s;
  }
};

Stores::Stores(fs::path root, catalog::Catalog& catalog, const store::Keyring& keyring, uint64_t min_free)
    : impl_(new Impl{std::move(root), catalog, keyring, min_free, {}, {}, {}}) {}

Stores::~Stores() = default;

void Stores::validate_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 130 && name[0] != '.';
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) ok = false;
  if (!ok) throw OperationError("InvalidParameterException", "'" + name + "' is not a store name");
}

store::Repository& Stores::open(const std::string& name, const std::optional<Spec>& create) {
  validate_name(name);
  std::lock_guard lock(impl_->mu);
  Impl::Store& st = impl_->slot(name);
  if (st.repo) return *st.repo;
  auto refuse = [&]() -> store::Repository& {
    if (st.error_kind == ErrorKind::kNotFound) throw OperationError("InvalidParameterException", st.error, ErrorKind::kNotFound);
    throw OperationError("InternalError", "store '" + name + "' cannot be used: " + st.error, st.error_kind);
  };
  // A store that failed to open is tried again a minute later, not on every request (nor logged every time).
  if (!st.error.empty() && std::chrono::steady_clock::now() - st.failed_at < std::chrono::minutes(1)) return refuse();
  try {
    impl_->open_locked(name, st, create);
    st.error.clear();
  } catch (const OperationError&) {
    throw;
  } catch (const Error& e) {
    st.error = e.what();
    st.error_kind = e.kind();
    st.failed_at = std::chrono::steady_clock::now();
    st.write_lock.reset();
    if (e.kind() != ErrorKind::kNotFound) spdlog::error("store '{}' cannot be used: {}", name, e.what());
    return refuse();
  }
  return *st.repo;
}

std::vector<std::string> Stores::on_disk() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& entry : fs::directory_iterator(impl_->root, ec))
    if (fs::exists(entry.path() / "config")) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void Stores::reserve(const std::string& name, uint64_t bytes) {
  Space s = space_of(impl_->root / name);
  uint64_t reserve = impl_->reserve_for(s);
  std::lock_guard lock(impl_->mu);
  Impl::Store& st = impl_->slot(name);
  if (!st.full.empty())
    throw OperationError("InsufficientStorageException", st.full, ErrorKind::kNoSpace);
  if (s.size && s.free < bytes + reserve) {
    st.full = "store '" + name + "' is full: " + human_bytes(s.free) + " free of " + human_bytes(s.size) + ", " + human_bytes(bytes + reserve) +
              " needed (" + human_bytes(bytes) + " to write and a reserve of " + human_bytes(reserve) +
              "); runs into it wait until space is freed (delete images, then 'ferry stores prune " + name + "')";
    spdlog::error("{}", st.full);
    throw OperationError("InsufficientStorageException", st.full, ErrorKind::kNoSpace);
  }
}

void Stores::note_no_space(const std::string& name, uint64_t bytes, const std::string& cause) {
  Space s = space_of(impl_->root / name);
  std::lock_guard lock(impl_->mu);
  Impl::Store& st = impl_->slot(name);
  st.full = "store '" + name + "' is full: writing " + human_bytes(bytes) + " failed (" + cause + "); " + human_bytes(s.free) +
            " free; runs into it wait until space is freed (delete images, then 'ferry stores prune " + name + "')";
  spdlog::error("{}", st.full);
}

std::optional<std::string> Stores::full(const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->stores.find(name);
  if (it == impl_->stores.end() || it->second->full.empty()) return std::nullopt;
  return it->second->full;
}

std::vector<std::string> Stores::refresh() {
  std::vector<std::string> full;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [name, st] : impl_->stores)
      if (!st->full.empty()) full.push_back(name);
  }
  std::vector<std::string> back;
  for (auto& name : full) {
    Space s = space_of(impl_->root / name);
    // Free again when a pack or two fit beside the reserve.
    uint64_t pack = 0;
    {
      std::lock_guard lock(impl_->mu);
      auto& st = impl_->stores[name];
      if (st->repo) pack = st->repo->config().pack_size;
    }
    if (s.free < impl_->reserve_for(s) + 2 * pack) continue;
    std::lock_guard lock(impl_->mu);
    impl_->stores[name]->full.clear();
    back.push_back(name);
    spdlog::info("store '{}' has space again ({} free)", name, human_bytes(s.free));
  }
  return back;
}

void Stores::request_prune(const std::string& name) {
  std::lock_guard lock(impl_->mu);
  impl_->prune_requests.insert(name);
}

std::vector<std::string> Stores::take_prune_requests() {
  std::lock_guard lock(impl_->mu);
  std::vector<std::string> out(impl_->prune_requests.begin(), impl_->prune_requests.end());
  impl_->prune_requests.clear();
  return out;
}

std::unique_lock<std::mutex> Stores::maintenance(const std::string& name) {
  std::mutex* m;
  {
    std::lock_guard lock(impl_->mu);
    m = &impl_->slot(name).maintenance;
  }
  return std::unique_lock<std::mutex>(*m);
}

void Stores::rotate_keys(const std::string& name, bool new_data_key, const std::string& new_master_key_id) {
  store::Repository& repo = open(name);
  repo.rotate_keys(impl_->keyring, new_data_key, new_master_key_id);
  const auto& c = repo.config();
  auto record = impl_->catalog.get_store(name);
  impl_->catalog.put_store({name, c.id, c.encrypted, c.key_id, repo.key_file_digest(), record ? record->created : now_seconds()});
  spdlog::info("store '{}': keys rotated ({} data key(s){})", name, repo.current_key() + 1,
               new_master_key_id.empty() ? "" : ", now wrapped by master key " + new_master_key_id);
}

std::vector<Stores::Info> Stores::list() {
  std::vector<std::string> names = on_disk();
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [name, st] : impl_->stores)
      if (std::find(names.begin(), names.end(), name) == names.end() && (st->repo || !st->error.empty())) names.push_back(name);
  }
  std::vector<Info> out;
  for (auto& name : names) {
    Info i;
    i.name = name;
    try {
      auto& repo = open(name);
      const auto& c = repo.config();
      i.repository_id = c.id;
      i.encrypted = c.encrypted;
      i.key_id = c.key_id;
      i.data_keys = repo.current_key() + 1;
      i.chunks = repo.chunk_count();
      for (auto& [index, why] : repo.unreadable_indexes()) i.damage.push_back("store '" + name + "': index '" + index + "' cannot be read: " + why);
      for (auto& [pack, why] : repo.unreadable_packs()) i.damage.push_back("store '" + name + "': " + why);
    } catch (const Error& e) {
      i.error = e.what();
    }
    Space s = space_of(impl_->root / name);
    i.fs_free = s.free;
    i.fs_size = s.size;
    i.reserve = impl_->reserve_for(s);
    i.full = full(name).value_or("");
    out.push_back(std::move(i));
  }
  return out;
}

}  // namespace ferry::service
