// Resolving an export name inside the export directory, component by component, links refused.
#include "service/export_target.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "service/service.h"

namespace ferry::service {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void refuse(const std::string& message) { throw OperationError("InvalidParameterException", message); }

// Room for the temporary name a sink adds to the final one (".tmp.<pid>.<16 hex>").
constexpr size_t kTempSuffix = 40;

}  // namespace

ExportTarget::ExportTarget(const fs::path& root_in, const std::string& name) {
  if (name.empty()) refuse("the output path is empty");
  if (name.find('\0') != std::string::npos) refuse("the output path contains a NUL byte");
  if (name.size() > PATH_MAX - kTempSuffix) refuse("the output path is longer than " + std::to_string(PATH_MAX - kTempSuffix) + " bytes");
  std::error_code ec;
  fs::path root = fs::canonical(root_in, ec);
  if (ec) fail(ErrorKind::kIo, "export directory '" + root_in.string() + "': " + ec.message());
  std::string shown_name = name;
  fs::path rel(name);
  if (rel.is_absolute()) {
    // An absolute path is accepted when it names a place inside the export directory (by its components, before any
    // link is looked at: the walk below refuses links).
    fs::path inside = rel.lexically_normal().lexically_relative(root);
    if (inside == ".") refuse("'" + name + "' names the export directory itself, not a file in it");
    if (inside.empty() || *inside.begin() == "..")
      refuse("'" + name + "' is outside the export directory " + root.string() + " (give a name relative to it)");
    rel = inside;
  }
  std::vector<std::string> parts;
  for (auto& part : rel) {
    std::string p = part.string();
    if (p.empty() || p == ".") continue;
    if (p == "..") refuse("'" + name + "' goes up with '..': exports stay inside the export directory " + root.string());
    if (p.size() > NAME_MAX - kTempSuffix)
      refuse("'" + name + "': the name '" + p.substr(0, 32) + "...' is longer than " + std::to_string(NAME_MAX - kTempSuffix) + " bytes");
    parts.push_back(p);
  }
  if (parts.empty()) refuse("'" + name + "' names the export directory itself, not a file in it");

  int dir = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) fail_errno("export directory '" + root.string() + "'");
  File held = File::adopt(dir, root);
  fs::path where = root;
  for (size_t i = 0; i + 1 < parts.size(); i++) {
    const std::string& p = parts[i];
    where /= p;
    int next = ::openat(held.fd(), p.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(held.fd(), p.c_str(), 0750) != 0 && errno != EEXIST) refuse("cannot create directory '" + where.string() + "': " + std::strerror(errno));
      next = ::openat(held.fd(), p.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      struct stat st {};
      if (::fstatat(held.fd(), p.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        refuse("'" + where.string() + "' is a symbolic link: exports do not follow links out of the export directory");
      refuse("'" + where.string() + "' is not a directory the server can use: " + std::strerror(errno));
    }
    held = File::adopt(next, where);
  }
  const std::string& file = parts.back();
  where /= file;
  struct stat st {};
  if (::fstatat(held.fd(), file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
    throw OperationError("InvalidParameterException", "'" + where.string() + "' already exists; not overwriting it", ErrorKind::kConflict);
  if (errno != ENOENT) refuse("'" + where.string() + "': " + std::strerror(errno));
  // The server must be able to create the file there: a clear 4xx now, not an error half-way through the export.
  int writable = ::open(("/proc/self/fd/" + std::to_string(held.fd())).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool ok = writable >= 0 && ::faccessat(writable, ".", W_OK, AT_EACCESS) == 0;
  if (writable >= 0) ::close(writable);
  if (!ok) refuse("the server cannot write in '" + where.parent_path().string() + "'");
  dir_ = std::move(held);
  // Through the held descriptor: the path stays valid for qemu-img and qemu-nbd (children of this process), and a
  // directory renamed or replaced meanwhile changes nothing.
  path_ = fs::path("/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(dir_.fd())) / file;
  shown_ = where;
}

}  // namespace ferry::service
