// File-system primitives.
#include "common/fs.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>

#include "common/error.h"

namespace ferry {

File::File(const fs::path& path, int flags, int mode) : path_(path) {
  fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd_ < 0) {
    if (errno == ENOENT && !(flags & O_CREAT)) fail(ErrorKind::kNotFound, "'" + path.string() + "': no such file");
    fail_errno("'" + path.string() + "'");
  }
}

File File::adopt(int fd, fs::path path) {
  File f;
  f.fd_ = fd;
  f.path_ = std::move(path);
  return f;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

uint64_t File::size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) fail_errno("stat '" + path_.string() + "'");
  return static_cast<uint64_t>(st.st_size);
}

void File::pread_all(void* buf, size_t len, uint64_t offset) const {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::pread(fd_, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("read '" + path_.string() + "' at offset " + std::to_string(offset));
    }
    if (n == 0)
      fail(ErrorKind::kCorrupt, "'" + path_.string() + "': unexpected end of file at offset " + std::to_string(offset) +
                                     " (file is " + std::to_string(size()) + " bytes)");
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void File::pwrite_all(const void* buf, size_t len, uint64_t offset) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::pwrite(fd_, p, len, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("write '" + path_.string() + "' at offset " + std::to_string(offset));
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void File::write_all(const void* buf, size_t len) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd_, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("write '" + path_.string() + "'");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void File::sync() {
  if (::fsync(fd_) != 0) fail_errno("fsync '" + path_.string() + "'");
}

void File::close() {
  if (fd_ >= 0) {
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail_errno("close '" + path_.string() + "'");
  }
}

std::string read_file(const fs::path& path) {
  File f(path, O_RDONLY);
  std::string data(f.size(), '\0');
  if (!data.empty()) f.pread_all(data.data(), data.size(), 0);
  return data;
}

void fsync_dir(const fs::path& dir) {
  File d(dir.empty() ? fs::path(".") : dir, O_RDONLY | O_DIRECTORY);
  d.sync();
}

fs::path temp_name_for(const fs::path& final) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[64];
  std::snprintf(buf, sizeof buf, ".tmp.%d.%016llx", static_cast<int>(::getpid()), static_cast<unsigned long long>(rng()));
  return fs::path(final.string() + buf);
}

void rename_durable(const fs::path& tmp, const fs::path& final) {
  if (::rename(tmp.c_str(), final.c_str()) != 0) fail_errno("rename '" + tmp.string() + "' to '" + final.string() + "'");
  fsync_dir(final.parent_path());
}

void rename_noreplace_durable(const fs::path& tmp, const fs::path& final) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST) fail(ErrorKind::kConflict, "'" + final.string() + "' already exists; not overwriting it");
    if (errno != EINVAL && errno != ENOSYS) fail_errno("rename '" + tmp.string() + "' to '" + final.string() + "'");
    // A file system without RENAME_NOREPLACE: link() refuses an existing name just the same.
    if (::link(tmp.c_str(), final.c_str()) != 0) {
      if (errno == EEXIST) fail(ErrorKind::kConflict, "'" + final.string() + "' already exists; not overwriting it");
      fail_errno("link '" + tmp.string() + "' to '" + final.string() + "'");
    }
    ::unlink(tmp.c_str());
  }
  fsync_dir(final.parent_path());
}

void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
  fs::path tmp = temp_name_for(path);
  try {
    File f(tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
    f.write_all(data.data(), data.size());
    f.sync();
    f.close();
    rename_durable(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

FileLock::FileLock(const fs::path& path, Mode mode, const std::string& purpose, bool wait) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_errno("lock file '" + path.string() + "'");
  int op = mode == Mode::kShared ? LOCK_SH : LOCK_EX;
  if (::flock(fd_, op | LOCK_NB) == 0) return;
  if (errno != EWOULDBLOCK) fail_errno("lock '" + path.string() + "'");
  if (!wait) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  std::fprintf(stderr, "ferry: waiting for another ferry process to release %s (%s)\n", path.c_str(), purpose.c_str());
  while (::flock(fd_, op) != 0) {
    if (errno != EINTR) fail_errno("lock '" + path.string() + "'");
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

bool process_alive(int pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace ferry
