// auth — AWS Signature Version 4 (HMAC-SHA256), both sides: ferry's clients sign requests, the server verifies
// them against its access keys. Any region name is accepted; the service name is whatever the request signed.
// Reference: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
//
// Promises: verify() accepts exactly the requests the AWS SDKs and the AWS CLI sign correctly (Authorization header
// form, including signed headers with repeated values and spaces, an empty or absent query, unsigned
// x-amz-content-sha256 absent) and rejects, with the error code and message AWS services return:
//   no Authorization header             -> MissingAuthenticationTokenException (HTTP 403)
//   malformed Authorization             -> IncompleteSignatureException (400)
//   a header the signature must cover   -> InvalidSignatureException "'X-Amz-Target' must be a 'SignedHeader' in
//     left out of SignedHeaders            the AWS Authorization." (400): Host, the header the request time comes
//                                          from (X-Amz-Date, else Date), Content-Type and every X-Amz-* header sent
//   credential scope for another        -> InvalidSignatureException "Credential should be scoped to correct
//     service than VerifyOptions::service  service: 'sms'." (400)
//   unknown access key                  -> UnrecognizedClientException (400)
//   signature mismatch                  -> InvalidSignatureException (400)
//   X-Amz-Date more than max_skew off   -> InvalidSignatureException "Signature expired: ..." (400)
// Secrets and the keys derived from them are wiped from memory once used (wipe(); Credentials wipes its secret when
// destroyed).
// All functions are pure and thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::auth {

// An access key. The secret is wiped (wipe()) when the object is destroyed; every copy wipes its own.
struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  ~Credentials();
};

// Overwrites every byte of `s`'s buffer (its whole capacity, with OPENSSL_cleanse, which the compiler may not
// optimize away) and empties it: for secrets and keys derived from them, so they do not linger in freed memory.
void wipe(std::string& s);

// Wipes a string (wipe()) when the scope ends, however it ends.
class WipeOnExit {
 public:
  explicit WipeOnExit(std::string& s) : s_(s) {}
  ~WipeOnExit() { wipe(s_); }
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;

 private:
  std::string& s_;
};

// An HTTP request as seen on the wire. `path` is the raw request target path (percent-encoded as sent,
// without the query); `query` is the raw query string without '?'. Header names are case-insensitive.
struct Request {
  std::string method;
  std::string path = "/";
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string_view body;

  // First header with this name (case-insensitive), if any.
  std::optional<std::string> header(std::string_view name) const;
  void set_header(const std::string& name, const std::string& value);  // replaces
};

class AuthError : public std::runtime_error {
 public:
  AuthError(std::string code, int http_status, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)), http_status_(http_status) {}
  const std::string& code() const { return code_; }
  int http_status() const { return http_status_; }

 private:
  std::string code_;
  int http_status_;
};

// Adds X-Amz-Date, X-Amz-Content-Sha256 and Authorization to `request`, signing every header present
// (it must already carry Host). `now` is the signing time. A request already carrying
// X-Amz-Content-Sha256: UNSIGNED-PAYLOAD is signed without hashing its body.
void sign(Request& request, const Credentials& credentials, const std::string& region, const std::string& service,
          std::chrono::system_clock::time_point now);

struct Verified {
  std::string access_key_id;
  std::string region;
  std::string service;
  std::string payload_sha256;  // lower-case hex as signed, or "UNSIGNED-PAYLOAD"
};

// Returns the secret of an access key id, or nullopt if unknown.
using SecretLookup = std::function<std::optional<std::string>(const std::string& access_key_id)>;

// The x-amz-content-sha256 value of a body that is not hashed into the signature.
inline constexpr const char* kUnsignedPayload = "UNSIGNED-PAYLOAD";

struct VerifyOptions {
  std::chrono::seconds max_skew = std::chrono::minutes(15);
  // A request marked UNSIGNED-PAYLOAD is accepted without hashing its body: only for bodies that authenticate
  // themselves (ferry's sealed packs), as S3 allows.
  bool allow_unsigned_payload = false;
  // Verifies the headers alone, before the body is read: the request must carry the hex SHA-256 of its body in
  // x-amz-content-sha256 (or UNSIGNED-PAYLOAD where allowed), which the signature covers; request.body is ignored
  // and the caller must compare the body it then reads with Verified::payload_sha256 (body_matches()).
  bool headers_only = false;
  // The service the credential scope must name ("sms", "ferry-connector"); empty accepts any.
  std::string service;
};

// Throws AuthError as listed above.
Verified verify(const Request& request, const SecretLookup& secret_for, std::chrono::system_clock::time_point now,
                const VerifyOptions& options = {});

// After verify(..., headers_only): whether `body` is what the signature covered (always true for UNSIGNED-PAYLOAD).
bool body_matches(const Verified& verified, std::string_view body);

// Lower-case hex SHA-256 of data (also used for token hashes).
std::string sha256_hex(std::string_view data);

}  // namespace ferry::auth
