// store::Backend on a local directory: one file per object, written crash-safely
// (temporary, fsync, rename, fsync directory). Packs are spread over 256 sub-directories.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <unordered_map>

#include "common/buffer.h"
#include "common/error.h"
#include "common/fs.h"
#include "store/backend.h"

namespace ferry::store {

const char* to_string(ObjectType type) {
  switch (type) {
    case ObjectType::kConfig: return "config";
    case ObjectType::kKey: return "key";
    case ObjectType::kPack: return "pack";
    case ObjectType::kIndex: return "index";
    case ObjectType::kSnapshot: return "snapshot";
  }
  return "object";
}

namespace {

const char* dir_for(ObjectType type) {
  switch (type) {
    case ObjectType::kConfig: return "";
    case ObjectType::kKey: return "keys";
    case ObjectType::kPack: return "packs";
    case ObjectType::kIndex: return "index";
    case ObjectType::kSnapshot: return "snapshots";
  }
  return "";
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

// With direct I/O (the server's stores), packs are written with O_DIRECT where the file system takes it: blocks go
// from our page-aligned buffers to the device without a copy into the page cache. Buffered, that copy was the
// largest kernel cost of writing a store on the project's VMs (1.2-2.3 CPU-s per 700 MB, against 0.05 s direct;
// docs/architecture.md). O_DIRECT needs the memory address, the length and the file offset aligned to the device's
// logical block; kDirectAlign (4 KiB) covers every common device. What cannot go direct (a file system without
// O_DIRECT, such as tmpfs; the unaligned tail of a pack) is written buffered, and fsync makes both durable.
class LocalWriter : public ObjectWriter {
 public:
  LocalWriter(fs::path tmp, std::function<fs::path(const std::string&)> final_path, bool direct)
      : tmp_(std::move(tmp)), final_path_(std::move(final_path)), file_(tmp_, O_WRONLY | O_CREAT | O_EXCL, 0644) {
    if (direct) direct_ = set_direct(true);
  }
  ~LocalWriter() override {
    if (!committed_) {
      file_ = File();
      std::error_code ec;
      fs::remove(tmp_, ec);
    }
  }
  // Appends go through an aligned staging buffer: many small misaligned writes cost far more kernel time. A large
  // append that starts on a block boundary (a received pack) is written straight from the caller's memory.
  void append(std::string_view data) override {
    size_ += data.size();
    if (staged_ == 0 && data.size() >= kStage && (!direct_ || aligned(data.data()))) {
      size_t n = data.size() / kDirectAlign * kDirectAlign;
      write_out(data.data(), n);
      data.remove_prefix(n);
    }
    while (!data.empty()) {
      size_t n = std::min(data.size(), kStage - staged_);
      std::memcpy(stage_.get() + staged_, data.data(), n);
      staged_ += n;
      data.remove_prefix(n);
      if (staged_ == kStage) flush();
    }
  }
  uint64_t size() const override { return size_; }
  void commit(const std::string& name) override {
    flush();
    file_.sync();
    file_.close();
    rename_durable(tmp_, final_path_(name));
    committed_ = true;
  }

 private:
  static bool aligned(const char* p) { return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0; }

  bool set_direct(bool on) {
    int flags = ::fcntl(file_.fd(), F_GETFL);
    return flags >= 0 && ::fcntl(file_.fd(), F_SETFL, on ? flags | O_DIRECT : flags & ~O_DIRECT) == 0;
  }

  // Writes at the current offset, which is block-aligned while direct_ holds (only the last write of a file
  // may be a partial block, and it turns direct I/O off first).
  void write_out(const char* p, size_t n) {
    if (direct_ && (n % kDirectAlign != 0 || !aligned(p))) {
      size_t whole = aligned(p) ? n / kDirectAlign * kDirectAlign : 0;
      write_out(p, whole);
      p += whole;
      n -= whole;
      set_direct(false);
      direct_ = false;
    }
    if (n == 0) return;
    if (direct_) {
      ssize_t w = ::write(file_.fd(), p, n);
      if (w == static_cast<ssize_t>(n)) return;
      // A device with a logical block above 4 KiB, or a file system that took the flag but not the write:
      // go on buffered (a short direct write leaves the offset where the kernel stopped; continue from there).
      if (w < 0 && errno != EINVAL) fail_errno("write '" + tmp_.string() + "'");
      size_t done = w > 0 ? static_cast<size_t>(w) : 0;
      set_direct(false);
      direct_ = false;
      p += done;
      n -= done;
    }
    file_.write_all(p, n);
  }

  void flush() {
    write_out(stage_.get(), staged_);
    staged_ = 0;
  }
  static constexpr size_t kStage = 1 << 20;
  static constexpr size_t kDirectAlign = 4096;
  fs::path tmp_;
  std::function<fs::path(const std::string&)> final_path_;
  File file_;
  AlignedBuffer stage_ = make_aligned_buffer(kStage);
  size_t staged_ = 0;
  uint64_t size_ = 0;
  bool direct_ = false;
  bool committed_ = false;
};

class LocalLock : public Backend::Lock {
 public:
  LocalLock(const fs::path& p, FileLock::Mode m, const std::string& purpose, bool wait = true) : lock_(p, m, purpose, wait) {}
  bool held() const { return lock_.held(); }

 private:
  FileLock lock_;
};

class LocalBackend : public Backend {
 public:
  LocalBackend(fs::path root, bool direct_io) : root_(std::move(root)), direct_io_(direct_io) {}

  std::string location() const override { return root_.string(); }

  fs::path path_for(ObjectType type, const std::string& name) const {
    if (!valid_name(name)) fail(ErrorKind::kInvalidArgument, std::string("invalid ") + to_string(type) + " name '" + name + "'");
    if (type == ObjectType::kConfig) return root_ / "config";
    if (type == ObjectType::kPack) return root_ / "packs" / name.substr(0, 2) / name;
    return root_ / dir_for(type) / name;
  }

  void put(ObjectType type, const std::string& name, std::string_view data) override {
    write_file_atomic(path_for(type, name), data);
  }

  std::unique_ptr<ObjectWriter> create(ObjectType type) override {
    fs::path tmp = temp_name_for(root_ / "tmp" / to_string(type));
    return std::make_unique<LocalWriter>(tmp, [this, type](const std::string& name) {
      fs::path p = path_for(type, name);
      if (!fs::exists(p.parent_path())) {
        fs::create_directories(p.parent_path());
        fsync_dir(p.parent_path().parent_path());  // the new sub-directory's entry must survive a crash too
      }
      return p;
    }, direct_io_ && type == ObjectType::kPack);
  }

  std::string get(ObjectType type, const std::string& name) override {
    try {
      return read_file(path_for(type, name));
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound)
        fail(ErrorKind::kNotFound, std::string(to_string(type)) + " '" + name + "' not found in store '" + location() + "'");
      throw;
    }
  }

  void read_range(ObjectType type, const std::string& name, uint64_t offset, size_t length, char* out) override {
    std::shared_ptr<File> f = open_cached(type, name);
    f->pread_all(out, length, offset);
  }

  uint64_t size(ObjectType type, const std::string& name) override {
    std::error_code ec;
    auto s = fs::file_size(path_for(type, name), ec);
    if (ec) fail(ErrorKind::kNotFound, std::string(to_string(type)) + " '" + name + "' not found in store '" + location() + "'");
    return s;
  }

  bool exists(ObjectType type, const std::string& name) override {
    std::error_code ec;
    return fs::exists(path_for(type, name), ec);
  }

  std::vector<std::string> list(ObjectType type) override {
    std::vector<std::string> names;
    if (type == ObjectType::kConfig) {
      if (fs::exists(root_ / "config")) names.push_back("config");
      return names;
    }
    fs::path dir = root_ / dir_for(type);
    std::error_code ec;
    if (type == ObjectType::kPack) {
      for (auto& sub : fs::directory_iterator(dir, ec)) {
        if (!sub.is_directory()) continue;
        for (auto& e : fs::directory_iterator(sub.path(), ec)) {
          std::string n = e.path().filename().string();
          if (valid_name(n) && n.rfind(sub.path().filename().string(), 0) == 0) names.push_back(n);
        }
      }
    } else {
      for (auto& e : fs::directory_iterator(dir, ec))
        if (valid_name(e.path().filename().string())) names.push_back(e.path().filename().string());
    }
    return names;
  }

  void remove(ObjectType type, const std::string& name) override {
    fs::path p = path_for(type, name);
    {
      std::lock_guard lock(mu_);
      cache_.erase(cache_key(type, name));
    }
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) fail_errno("remove '" + p.string() + "'");
    fsync_dir(p.parent_path());
  }

  std::unique_ptr<Lock> lock(LockKind kind, const std::string& purpose) override {
    switch (kind) {
      case LockKind::kRead: return std::make_unique<LocalLock>(root_ / "locks" / "exclusive", FileLock::Mode::kShared, purpose);
      case LockKind::kWrite: return std::make_unique<LocalLock>(root_ / "locks" / "write", FileLock::Mode::kExclusive, purpose);
      case LockKind::kExclusive: return std::make_unique<LocalLock>(root_ / "locks" / "exclusive", FileLock::Mode::kExclusive, purpose);
    }
    return nullptr;
  }

  std::unique_ptr<Lock> try_lock(LockKind kind, const std::string& purpose) override {
    fs::path file = root_ / "locks" / (kind == LockKind::kWrite ? "write" : "exclusive");
    auto l = std::make_unique<LocalLock>(file, kind == LockKind::kRead ? FileLock::Mode::kShared : FileLock::Mode::kExclusive, purpose, false);
    if (!l->held()) return nullptr;
    return l;
  }

  // Removes temporaries ("<name>.tmp.<pid>.<random>") left by processes of this machine that no
  // longer run (a killed replication). A store shared between machines needs the server's own locking.
  void clean_temporaries() {
    std::error_code ec;
    for (const char* sub : {"tmp", "", "keys", "index", "snapshots"}) {
      for (auto& e : fs::directory_iterator(root_ / sub, ec)) {
        std::string n = e.path().filename().string();
        auto pos = n.find(".tmp.");
        if (pos == std::string::npos || !e.is_regular_file()) continue;
        int pid = std::atoi(n.c_str() + pos + 5);
        if (!process_alive(pid)) fs::remove(e.path(), ec);
      }
    }
  }

 private:
  static std::string cache_key(ObjectType type, const std::string& name) { return std::string(to_string(type)) + "/" + name; }

  // Readers pread the same packs over and over; keep a few descriptors open.
  std::shared_ptr<File> open_cached(ObjectType type, const std::string& name) {
    std::string key = cache_key(type, name);
    std::lock_guard lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.second);
      return it->second.first;
    }
    std::shared_ptr<File> f;
    try {
      f = std::make_shared<File>(path_for(type, name), O_RDONLY);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNotFound)
        fail(ErrorKind::kNotFound, std::string(to_string(type)) + " '" + name + "' not found in store '" + location() + "'");
      throw;
    }
    lru_.push_front(key);
    cache_[key] = {f, lru_.begin()};
    if (cache_.size() > 64) {
      cache_.erase(lru_.back());
      lru_.pop_back();
    }
    return f;
  }

  fs::path root_;
  bool direct_io_;
  std::mutex mu_;
  std::list<std::string> lru_;
  std::unordered_map<std::string, std::pair<std::shared_ptr<File>, std::list<std::string>::iterator>> cache_;
};

}  // namespace

std::unique_ptr<Backend> open_local_backend(const fs::path& dir, bool create, bool direct_io) {
  if (create) {
    for (const char* sub : {"keys", "packs", "index", "snapshots", "locks", "tmp"}) fs::create_directories(dir / sub);
    for (const char* lock : {"write", "exclusive"}) File(dir / "locks" / lock, O_WRONLY | O_CREAT, 0644);
  } else if (!fs::exists(dir / "config")) {
    fail(ErrorKind::kNotFound, "'" + dir.string() + "' is not a ferry store (no config file); create one with 'ferry store init'");
  }
  auto backend = std::make_unique<LocalBackend>(fs::absolute(dir), direct_io);
  backend->clean_temporaries();
  return backend;
}

}  // namespace ferry::store
