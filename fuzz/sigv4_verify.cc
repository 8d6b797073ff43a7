// Fuzzes auth::verify() on whole requests: the input's first byte picks the verifier's options (unsigned payloads
// allowed, headers only, the service the scope must name), the rest is the request (sigv4_request.h), verified against
// one fixed access key at a fixed time (the seeds are requests signed with it then). Only auth::AuthError (a refusal)
// may escape; anything else is a bug. A request that verifies headers-only is also checked against its body.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "auth/sigv4.h"
#include "common/error.h"
#include "sigv4_request.h"

namespace {

const ferry::auth::Credentials kKey{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};

// 2026-11-25T00:30:00Z, when the seeds were signed.
std::chrono::system_clock::time_point now() {
  return std::chrono::sys_days(std::chrono::year(2026) / 11 / 25) + std::chrono::minutes(30);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ferry::auth::VerifyOptions options;
  options.allow_unsigned_payload = data[0] & 1;
  options.headers_only = data[0] & 2;
  static const char* kServices[] = {"", "sms", "ferry-connector", "s3"};
  options.service = kServices[(data[0] >> 2) & 3];
  std::string body;
  ferry::auth::Request request =
      ferry::fuzz::read_request(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), body);
  ferry::auth::SecretLookup secret_for = [](const std::string& id) -> std::optional<std::string> {
    if (id == kKey.access_key_id) return kKey.secret_access_key;
    return std::nullopt;
  };
  try {
    if (options.headers_only) {
      ferry::auth::Request headers = request;
      headers.body = {};
      auto verified = ferry::auth::verify(headers, secret_for, now(), options);
      (void)ferry::auth::body_matches(verified, body);
    } else {
      (void)ferry::auth::verify(request, secret_for, now(), options);
    }
  } catch (const ferry::auth::AuthError&) {
  }
  return 0;
}
