// Errors in ferry: one exception type that carries a kind and a message a user can act on.
// Modules throw ferry::Error across their boundaries; the CLI (and later the API) maps kinds to exit codes and SMS error types.
#pragma once

#include <stdexcept>
#include <string>

namespace ferry {

enum class ErrorKind {
  kInvalidArgument,  // the caller asked for something malformed or impossible
  kNotFound,         // a named object (snapshot, key, file) does not exist
  kCorrupt,          // stored or source data fails a structural or checksum test
  kCrypto,           // authentication failed: wrong key or tampered data
  kIo,               // the operating system refused a read or write
  kUnsupported,      // a valid input this version cannot handle
  kExternal,         // a helper program (qemu-img, qemu-nbd) failed
  kConflict,         // the request conflicts with current state (a job for that server exists, a run is in progress)
  kUnauthorized,     // the caller is not allowed to do this (bad credentials, wrong role)
  kNoSpace,          // the file system is full (ENOSPC, EDQUOT): retrying will not help until space is freed
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void fail(ErrorKind kind, const std::string& message);
// Throws kIo (kNoSpace for ENOSPC and EDQUOT) with "<what>: <strerror(errno)>".
[[noreturn]] void fail_errno(const std::string& what);

const char* to_string(ErrorKind kind);

}  // namespace ferry
