// Fuzzes the HTTP transport with what a client may send (src/api/http.h): request heads and whole requests,
// pipelined, with Content-Length or chunked bodies, through the same session code a socket's bytes go through
// (Server::serve_bytes: Beast's parser, the limits, routing by pattern, admission, the body budget, 100-continue,
// HEAD, the answer). The routes are shaped like ferry's own (src/api/server.cc: the JSON API, the connector's calls
// and object uploads, with their patterns and body limits); the admission hook admits by the Authorization header
// so that every path is reached. The first byte picks how the input is cut into reads. serve_bytes must return:
// an exception, a crash or a sanitizer report is a bug.
#include <algorithm>
#include <cstdint>
#include <string>

#include "api/http.h"

namespace {

using namespace ferry::api::http;

Server& server() {
  static Server* s = [] {
    ServerOptions o;
    o.max_body = 64 << 10;
    o.max_header = 128 << 10;  // heads larger than the server's, so that long paths meet the path limit, not this one
    o.unauthenticated_body_budget = 256 << 10;  // small enough for inputs to reach it
    auto* s = new Server(o);                   // lives as long as the process
    Admit admit = [](Request& req, Response& res) {
      std::string auth = req.header("Authorization");
      if (auth.empty()) {
        res.status = 403;
        res.set_content("{\"__type\":\"MissingAuthenticationTokenException\"}", "application/json");
        return Admission::kRefused;
      }
      req.context = auth;
      return auth.size() % 2 ? Admission::kAuthenticated : Admission::kUnauthenticated;
    };
    Handler answer = [](const Request& req, Response& res) {
      std::string out = req.method + " " + req.path + " " + std::to_string(req.body.size());
      for (auto& m : req.matches) out += " " + m.substr(0, 16);
      if (auto* who = std::any_cast<std::string>(&req.context)) out += " " + who->substr(0, 16);
      res.set_content(out, "text/plain");
      res.set_header("X-Echo", req.header("X-Echo").substr(0, 16));
    };
    StreamHandler take = [](const Request& req, Response& res, const BodyReader& read) {
      char piece[4096];
      uint64_t left = req.content_length, got = 0;
      while (left > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, sizeof piece - (got % 7)));  // uneven reads
        if (!read(piece, n)) break;
        left -= n;
        got += n;
      }
      res.set_content(std::to_string(got), "text/plain");
    };
    const std::string run = R"(/connector/v1/runs/([\w-]+))";
    s->route("GET", "/health", answer);
    s->route("HEAD", "/health", answer);
    s->route("POST", "/", answer, 16 << 20, admit);
    s->route("POST", "/connector/v1/register", answer, 64 << 10);
    s->route("POST", "/connector/v1/heartbeat", answer, 1 << 20, admit);
    s->route("POST", "/connector/v1/inventory", answer, 256 << 20, admit);
    for (const char* call : {"begin", "progress", "complete", "fail"}) s->route("POST", run + "/" + call, answer, 1 << 20, admit);
    s->route("GET", R"(/connector/v1/stores/([\w.-]+)/chunks)", answer, 0, admit);
    s->route("GET", R"(/connector/v1/stores/([\w.-]+)/snapshots/([0-9a-f]+))", answer, 0, admit);
    for (const char* object : {"packs", "indexes", "snapshots"})
      s->stream_route("PUT", run + "/" + object + "/([0-9a-f]+)", take, 1 << 30, admit);
    return s;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  server().serve_bytes(input, data[0] % 64);  // 0: all at once; else reads of 1 to 63 bytes
  return 0;
}
