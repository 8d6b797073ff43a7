// Inside api/: the HTTP/1.1 transport under ferry's API — listening (plain or TLS), keep-alive connections, request
// parsing and response writing on Boost.Beast, routing by method and path pattern. It knows nothing of SMS or SigV4.
//
// One thread per connection, blocking I/O: a handler may block (a held heartbeat waits for work), and a streamed
// route reads its body with large reads straight into its own memory (a connector's 16 MiB pack goes from the socket
// into the page-aligned buffer the store writes with O_DIRECT, with no copy in between).
//
// Before authentication, a request can make the server hold only its headers (at most `max_header` bytes) and a
// thread: a route's admission hook (Admit) sees the headers before any byte of the body is read, and may refuse; a
// body is read as it arrives, never into memory sized from Content-Length; the bodies of requests not authenticated
// by their headers share one budget (`unauthenticated_body_budget`), beyond which they are refused with 503.
// Timeouts: a connection waiting for its next request is closed after `idle_timeout`; a request's headers must all
// have arrived within `header_timeout` of the connection starting to wait for them; a body must keep up
// `min_body_rate` once `body_grace` has passed; a body or an answer that makes no progress for `read_timeout` is cut
// off; a handler has no time limit. Crowds: at most `max_connections` connections, at most
// `max_connections_per_address` from one client address; near either limit, connections that have not yet sent a
// request's headers are closed, oldest first, to make room for new ones (established clients keep being served).
// stop() closes idle connections at once and lets requests in progress finish; serve() returns when every connection
// is gone. A request read from a connection that was being shut down is dropped unanswered and unrun. Closing with
// part of a body unread, the server first drains it briefly, so the client sees the answer. No exception thrown by a
// handler, a hook or the parsing of what a client sends ends the server: it becomes a 500 answer or a closed
// connection.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
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
  std::any context;  // what the route's admission hook left for its handler (e.g. the identity it verified)

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
// Content-Length (a chunked body is refused with 411 before the handler runs). Their handler takes memory for the
// body as it likes, so a streamed route should have an admission hook that authenticates (its body is not charged
// to the unauthenticated budget).
using BodyReader = std::function<bool(char* dst, size_t n)>;
using StreamHandler = std::function<void(const Request&, Response&, const BodyReader& read)>;

// What a route's admission hook decided from a request's headers, before any byte of its body was read.
enum class Admission {
  kRefused,          // the hook wrote the answer in `res`; the body is not read and the handler does not run
  kAuthenticated,    // the headers prove who sent it: the body is held to the route's limit only
  kUnauthenticated,  // not yet known (the signature covers the body): the body is also charged to the budget
};
// Runs after the headers are parsed and the route is found, before any byte of the body is read, a 100 Continue is
// sent, or memory is taken for the body. It may leave something for the handler in req.context. An exception it
// throws is a 500 answer. Routes without a hook are kUnauthenticated.
using Admit = std::function<Admission(Request& req, Response& res)>;

struct ServerOptions {
  std::string tls_cert, tls_key;  // PEM files; both empty = plain HTTP
  std::chrono::seconds idle_timeout{5};     // for the first byte of the next request, and between its header bytes
  std::chrono::seconds header_timeout{10};  // for a request's headers in full (and a TLS handshake), from the wait's start
  std::chrono::seconds read_timeout{120};   // a body or an answer making no progress
  // A body must have averaged at least this many bytes per second, counted from its first read, once `body_grace`
  // has passed (0: no minimum). 4 KiB/s is 32 kbit/s per connection: far below any link a migration can use, far
  // above a trickle meant to hold a thread.
  size_t min_body_rate = 4096;
  std::chrono::seconds body_grace{10};
  size_t max_body = size_t{1} << 30;  // the default route limit; larger bodies get 413
  size_t max_header = 16 * 1024;      // request line and headers (Node's default); more gets 431
  size_t max_path = 2048;             // longer paths get 414 before any route pattern is tried
  // From 7/8 of this on, each new connection sheds the oldest one still waiting for its headers; at the limit, new
  // connections wait in the listen backlog.
  size_t max_connections = 1024;
  // Connections from one client address (an IPv4 address, an IPv6 /64). A new one beyond it takes the place of that
  // address's oldest connection still waiting for its headers, or is refused with 503 if all are busy.
  size_t max_connections_per_address = 256;
  // Body bytes held at once by requests not authenticated by their headers (Admission::kUnauthenticated, routes
  // without a hook). A request whose body would go beyond it is refused with 503 and Retry-After.
  size_t unauthenticated_body_budget = size_t{32} << 20;
  std::function<void(Response&)> finish;  // called on every answer just before it is written (common headers)
  // Words the transport's own refusals (400, 404, 411, 413, 414, 431, 503); default: the message as text/plain.
  std::function<void(Response&, int status, const std::string& message)> refusal;
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
  // `admit` (may be empty) runs before the body is read (see Admit).
  void route(const std::string& method, const std::string& pattern, Handler handler, size_t max_body = 0, Admit admit = nullptr);
  void stream_route(const std::string& method, const std::string& pattern, StreamHandler handler, size_t max_body = 0,
                    Admit admit = nullptr);

  // Binds host:port (host a name or an address, IPv6 with or without brackets; port 0 picks a free one) and returns
  // the port. Throws ferry::Error (kIo) when the address cannot be bound.
  int bind(const std::string& host, int port);
  // Accepts and serves connections until stop(); returns once all connections are closed.
  void serve();
  // Safe from any thread, any number of times, before or during serve().
  void stop();

  // Serves one in-memory connection whose client sent `input` and then closed its side, and returns the bytes the
  // server wrote: the same parsing, routing, hooks and limits as a socket's, without timeouts or connection limits
  // (for fuzzing and tests). The input arrives in reads of at most `piece` bytes (0: all at once). Never throws for
  // what the input holds. May run alongside serve().
  std::string serve_bytes(std::string_view input, size_t piece = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::api::http
