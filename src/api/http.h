// Inside api/: the HTTP/1.1 transport under ferry's API — listening (plain or TLS), keep-alive connections, request
// parsing and response writing on Boost.Beast, routing by method and path pattern. It knows nothing of SMS or SigV4.
//
// One thread per connection, blocking I/O: a handler may block (a held heartbeat waits for work), and a streamed
// route reads its body with large reads straight into its own memory (a connector's 16 MiB pack goes from the socket
// into the page-aligned buffer the store writes with O_DIRECT, with no copy in between).
// Timeouts: a connection waiting for its next request is closed after `idle_timeout`; a request whose headers take
// longer than `read_timeout`, or whose body or answer makes no progress for `read_timeout`, is cut off; a handler
// has no time limit. stop() closes idle connections at once and lets requests in progress finish; serve() returns
// when every connection is gone. A request read from a connection that was being shut down is dropped unanswered
// and unrun. Closing with part of a body unread, the server first drains it briefly, so the client sees the answer.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::api::http {

struct Request {
  std::string method;       // "GET", "PUT", ...
  std::string target;       // as sent: path and query
  std::string path;         // target up to '?'
  std::string remote_addr;  // the peer's IP address
  std::vector<std::pair<std::string, std::string>> headers;  // in the order received, names as sent
  std::string body;                                           // empty on a streamed route (see StreamHandler)
  std::vector<std::string> matches;                           // the route pattern's groups; [0] is the whole path
  bool has_content_length = false;                            // false for a chunked or length-less body
  uint64_t content_length = 0;

  // Case-insensitive, as HTTP header names are; the first value when repeated, "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  void set_header(std::string name, std::string value);  // replaces a header of that name
  void set_content(std::string content, std::string content_type);
};

using Handler = std::function<void(const Request&, Response&)>;
// A streamed route receives the body through `read`: read(dst, n) fills dst with the next n bytes of the body (n no
// more than what is left of Content-Length) and returns false if the peer closed, timed out or sent less. A body the
// handler leaves unread closes the connection after the answer. Streamed routes only see requests with a
// Content-Length (a chunked body is refused with 411 before the handler runs).
using BodyReader = std::function<bool(char* dst, size_t n)>;
using StreamHandler = std::function<void(const Request&, Response&, const BodyReader& read)>;

struct ServerOptions {
  std::string tls_cert, tls_key;  // PEM files; both empty = plain HTTP
  std::chrono::seconds read_timeout{120};
  std::chrono::seconds idle_timeout{5};
  size_t max_body = size_t{1} << 30;  // larger bodies get 413 (and a route's own limit)
  size_t max_connections = 1024;      // further connections wait in the listen backlog
  std::function<void(Response&)> finish;  // called on every answer just before it is written (common headers)
};

class Server {
 public:
  // Throws ferry::Error (kInvalidArgument) when the TLS certificate or key cannot be used.
  explicit Server(ServerOptions options);
  ~Server();  // stops and waits for serve() to return
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Routes are tried in the order added; `pattern` (ECMAScript regex) must match the whole path. Add them before
  // serve(). A path no route matches gets 404. A body over `max_body` (0: ServerOptions::max_body) gets 413.
  void route(const std::string& method, const std::string& pattern, Handler handler, size_t max_body = 0);
  void stream_route(const std::string& method, const std::string& pattern, StreamHandler handler, size_t max_body = 0);

  // Binds host:port (host a name or an address, IPv6 with or without brackets; port 0 picks a free one) and returns
  // the port. Throws ferry::Error (kIo) when the address cannot be bound.
  int bind(const std::string& host, int port);
  // Accepts and serves connections until stop(); returns once all connections are closed.
  void serve();
  // Safe from any thread, any number of times, before or during serve().
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::api::http
