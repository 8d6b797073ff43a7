// Fuzzes the parsers of what a SigV4 caller sends (auth/internal.h): the Authorization header (the input's first line)
// and the canonical request built from the method, path, query and headers that follow it (sigv4_request.h) over the
// SignedHeaders the header names, for S3's path rule and every other service's. Only auth::AuthError (a refusal) may
// escape; anything else (another exception, a crash, a sanitizer report) is a bug.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "auth/internal.h"
#include "common/error.h"
#include "sigv4_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t eol = in.find('\n');
  std::string header(in.substr(0, eol));
  std::string body;
  ferry::auth::Request request =
      ferry::fuzz::read_request(eol == std::string_view::npos ? std::string_view() : in.substr(eol + 1), body);
  try {
    auto auth = ferry::auth::internal::parse_authorization(header);
    std::vector<std::string> names;
    std::string list = auth.signed_headers.value_or("host");
    for (size_t start = 0;;) {
      size_t end = list.find(';', start);
      names.emplace_back(list.substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    for (std::string_view service : {"s3", "sms"})
      (void)ferry::auth::internal::canonical_request(request, names, auth.signature.value_or(""), service);
  } catch (const ferry::auth::AuthError&) {
  }
  return 0;
}
