// File-system primitives: an owning file descriptor with whole-buffer reads and writes,
// crash-safe file replacement (write to a temporary, fsync, rename, fsync the directory),
// and advisory locks. Every failure throws ferry::Error naming the path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace ferry {

namespace fs = std::filesystem;

class File {
 public:
  File() = default;
  // flags as for open(2); throws kNotFound / kIo naming `path`.
  File(const fs::path& path, int flags, int mode = 0644);
  // Takes ownership of an open descriptor (`path` names it in messages).
  static File adopt(int fd, fs::path path);
  ~File();
  File(File&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  int fd() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  const fs::path& path() const { return path_; }
  uint64_t size() const;

  // Reads exactly `len` bytes at `offset`; throws kCorrupt on a short read (file too small).
  void pread_all(void* buf, size_t len, uint64_t offset) const;
  void pwrite_all(const void* buf, size_t len, uint64_t offset);
  void write_all(const void* buf, size_t len);
  void sync();
  void close();

 private:
  int fd_ = -1;
  fs::path path_;
};

// Reads a whole file. Throws kNotFound if it does not exist.
std::string read_file(const fs::path& path);

// Replaces `path` atomically with `data`: a reader sees the old or the new content, never a mix,
// and after return the new content survives a crash. The temporary is created in `path`'s directory.
void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode = 0644);

// Makes a directory entry change (create, rename, unlink) durable.
void fsync_dir(const fs::path& dir);

// Moves `tmp` to `final` durably (fsync of the file is the caller's job).
void rename_durable(const fs::path& tmp, const fs::path& final);
// The same, but never replaces: if `final` exists (even if it appeared a moment ago), throws kConflict and leaves it.
void rename_noreplace_durable(const fs::path& tmp, const fs::path& final);

// A unique temporary name next to `final`: "<final>.tmp.<pid>.<random>".
fs::path temp_name_for(const fs::path& final);

// An advisory lock (flock) on a file, shared or exclusive, held until destruction.
class FileLock {
 public:
  enum class Mode { kShared, kExclusive };
  // Blocks until the lock is granted (`purpose` is shown if the lock is busy), or with wait=false returns at once;
  // then held() tells whether it was granted.
  FileLock(const fs::path& path, Mode mode, const std::string& purpose, bool wait = true);
  bool held() const { return fd_ >= 0; }
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

bool process_alive(int pid);

}  // namespace ferry
