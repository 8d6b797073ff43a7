// Inside auth/: the pieces of SigV4 verification that parse what a caller sent, declared for the fuzz harnesses
// (fuzz/sigv4_authorization.cc). Not for other modules: they call sign() and verify().
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/sigv4.h"

namespace ferry::auth::internal {

// The Authorization header's parts; a parameter is nullopt when the header lacks it.
struct Authorization {
  std::string algorithm;
  std::optional<std::string> credential;
  std::optional<std::string> signed_headers;
  std::optional<std::string> signature;
};

// "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...": the algorithm, then key=value parameters
// separated by commas and/or white space, the way AWS itself tokenizes them. Throws AuthError
// (IncompleteSignatureException) for a parameter without '='.
Authorization parse_authorization(const std::string& header);

// The canonical request of `request` covering the headers `signed_names` (lower-case, in SignedHeaders order), with
// `payload_hash` as its last line; `service` "s3" keeps the path as sent, any other normalizes and re-encodes it.
std::string canonical_request(const Request& request, const std::vector<std::string>& signed_names,
                              std::string_view payload_hash, std::string_view service);

}  // namespace ferry::auth::internal
