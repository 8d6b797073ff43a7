// A fuzz input read as an HTTP request, for the SigV4 harnesses: lines of method, path, query, then headers
// ("Name: value", split at the first ':') up to an empty line; the rest is the body. Missing lines are empty.
#pragma once

#include <string>
#include <string_view>

#include "auth/sigv4.h"

namespace ferry::fuzz {

// `storage` keeps the body the request's string_view points into.
inline auth::Request read_request(std::string_view in, std::string& storage) {
  auth::Request r;
  auto line = [&]() {
    size_t eol = in.find('\n');
    std::string_view l = in.substr(0, eol);
    in = eol == std::string_view::npos ? std::string_view() : in.substr(eol + 1);
    return l;
  };
  r.method = std::string(line());
  r.path = std::string(line());
  r.query = std::string(line());
  while (!in.empty()) {
    std::string_view h = line();
    if (h.empty()) break;
    size_t colon = h.find(':');
    r.headers.emplace_back(std::string(h.substr(0, colon)),
                           colon == std::string_view::npos ? std::string() : std::string(h.substr(colon + 1)));
  }
  storage = std::string(in);
  r.body = storage;
  return r;
}

}  // namespace ferry::fuzz
