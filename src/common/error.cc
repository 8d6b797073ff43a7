// Error helpers.
#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace ferry {

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void fail_errno(const std::string& what) {
  int e = errno;
  throw Error(e == ENOSPC || e == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo, what + ": " + std::strerror(e));
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kCorrupt: return "corrupt";
    case ErrorKind::kCrypto: return "authentication failed";
    case ErrorKind::kIo: return "i/o error";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kExternal: return "external tool failed";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kUnauthorized: return "unauthorized";
    case ErrorKind::kNoSpace: return "no space left";
  }
  return "error";
}

}  // namespace ferry
