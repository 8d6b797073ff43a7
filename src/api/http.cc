// The HTTP/1.1 transport: Beast parses and writes messages over blocking Asio sockets (plain or TLS), one thread
// per connection; a watchdog thread enforces the timeouts by shutting down sockets that made no progress in time.
#include "api/http.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/buffers_prefix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <strings.h>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace ferry::api::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

bool iequals(std::string_view a, std::string_view b) { return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0; }
std::string str(beast::string_view s) { return std::string(s.data(), s.size()); }
int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
constexpr int64_t kNever = INT64_MAX;

// A malformed message (Beast's parser said so), as opposed to an I/O error or the peer going away.
bool is_parse_error(const beast::error_code& ec) {
  static const auto& http_errors = bhttp::make_error_code(bhttp::error::bad_method).category();
  return ec.category() == http_errors && ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

std::string too_large(size_t limit) { return "request body larger than " + std::to_string(limit) + " bytes"; }

// What the watchdog knows of a connection: its socket, when it must have made progress by, and whether it is
// between requests (stop() closes those at once). `cut` (under Impl::mu) is set when the socket was shut down: a
// request read after that is dropped, since its answer could not be written (a client would retry a call that ran).
struct Watch {
  int fd = -1;
  std::atomic<int64_t> deadline{kNever};
  std::atomic<int64_t> cap{kNever};  // no re-arming past this (a request's headers must all arrive by then)
  std::atomic<bool> idle{true};
  bool cut = false;
};

// A stream that pushes its connection's deadline forward on every read and write that moves data, so a timeout
// means "no progress for that long", however large the body (Beast's synchronous I/O has no timeouts of its own).
template <class Next>
class Watched {
 public:
  Watched(Next& next, Watch& watch) : next_(next), watch_(watch) {}
  void timeout(std::chrono::seconds t) {
    timeout_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(t).count();
    arm();
  }
  void arm() { watch_.deadline.store(std::min(now_ns() + timeout_ns_, watch_.cap.load())); }
  void disarm() { watch_.deadline.store(kNever); }

  template <class Buffers>
  size_t read_some(const Buffers& b) {
    beast::error_code ec;
    size_t n = read_some(b, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class Buffers>
  size_t read_some(const Buffers& b, beast::error_code& ec) {
    size_t n = next_.read_some(b, ec);
    if (n) arm();
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers& b) {
    beast::error_code ec;
    size_t n = write_some(b, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  // At most 256 KiB per call: a blocking send does not return before all it was given is queued, so a large answer
  // to a slow reader would otherwise be one call that must finish within a single timeout.
  template <class Buffers>
  size_t write_some(const Buffers& b, beast::error_code& ec) {
    size_t n = next_.write_some(beast::buffers_prefix(size_t{256} << 10, b), ec);
    if (n) arm();
    return n;
  }

 private:
  Next& next_;
  Watch& watch_;
  int64_t timeout_ns_ = 0;
};

struct Route {
  std::string method;
  std::regex pattern;
  Handler handler;
  StreamHandler stream;
  size_t max_body;
};

int64_t ns(std::chrono::seconds t) { return std::chrono::duration_cast<std::chrono::nanoseconds>(t).count(); }

}  // namespace

std::string Request::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

bool Request::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](auto& h) { return iequals(h.first, name); });
}

void Response::set_header(std::string name, std::string value) {
  std::erase_if(headers, [&](auto& h) { return iequals(h.first, name); });
  headers.emplace_back(std::move(name), std::move(value));
}

void Response::set_content(std::string content, std::string content_type) {
  body = std::move(content);
  set_header("Content-Type", std::move(content_type));
}

struct Server::Impl {
  ServerOptions options;
  asio::io_context io;
  std::optional<asio::ssl::context> tls;
  tcp::acceptor acceptor{io};
  std::vector<Route> routes;

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::shared_ptr<Watch>> watches;
  uint64_t next_id = 0;
  size_t active = 0;  // connection threads alive
  bool serving = false;   // serve() is running
  bool watching = false;  // the watchdog runs
  std::atomic<bool> stopping{false};

  const Route* find(const std::string& method, const std::string& path, std::vector<std::string>& matches) const {
    std::smatch m;
    for (auto& r : routes) {
      if (r.method != method || !std::regex_match(path, m, r.pattern)) continue;
      matches.assign(m.begin(), m.end());
      return &r;
    }
    return nullptr;
  }

  void plain_answer(Response& res, int status, const std::string& message) {
    res = Response{};
    res.status = status;
    res.set_content(message + "\n", "text/plain");
  }

  // Serves requests on one connection until it closes, times out, fails, or the server stops.
  template <class Stream>
  void session(Stream& stream, Watch& watch, const std::string& remote) {
    Watched<Stream> s(stream, watch);
    beast::flat_buffer buf;
    for (;;) {
      watch.idle = true;
      if (stopping) return;
      // However slowly they trickle in, a request's headers must have arrived within this (besides each byte
      // coming within idle_timeout of the last).
      watch.cap = now_ns() + ns(options.idle_timeout + options.read_timeout);
      s.timeout(options.idle_timeout);
      bhttp::request_parser<bhttp::empty_body> head;
      head.header_limit(64 * 1024);
      head.body_limit(options.max_body);
      beast::error_code ec;
      bhttp::read_header(s, buf, head, ec);
      {
        std::lock_guard lock(mu);
        if (watch.cut) return;  // shut down meanwhile (stop, idle timeout): the answer could not be written
        watch.idle = false;
      }
      watch.cap = kNever;
      if (ec) {
        if (ec == bhttp::error::body_limit) refuse(s, 11, 413, too_large(options.max_body));
        else if (is_parse_error(ec)) refuse(s, 11, ec == bhttp::error::header_limit ? 431 : 400, "bad HTTP request: " + ec.message());
        return;
      }
      s.timeout(options.read_timeout);
      auto& h = head.get();
      Request req;
      req.method = str(h.method_string());
      req.target = str(h.target());
      req.path = req.target.substr(0, req.target.find('?'));
      req.remote_addr = remote;
      for (auto& f : h) req.headers.emplace_back(str(f.name_string()), str(f.value()));
      if (auto len = head.content_length()) {
        req.has_content_length = true;
        req.content_length = *len;
      }
      bool keep = h.keep_alive();
      unsigned version = h.version();
      bool head_method = h.method() == bhttp::verb::head;
      bool expects_continue = version >= 11 && iequals(str(h[bhttp::field::expect]), "100-continue");
      const Route* route = find(req.method, req.path, req.matches);
      bool body_done = head.is_done();
      Response res;
      try {
        if (!route) {
          plain_answer(res, 404, "no such resource: " + req.method + " " + req.path);
        } else if (req.has_content_length && req.content_length > route->max_body) {
          plain_answer(res, 413, too_large(route->max_body));
        } else if (route->stream) {
          if (!req.has_content_length) {
            plain_answer(res, 411, req.method + " " + req.path + " needs a Content-Length header");
          } else {
            uint64_t left = req.content_length;
            bool continued = !expects_continue || body_done;
            BodyReader reader = [&](char* dst, size_t n) {
              if (n > left) return false;
              if (!continued) {
                write_continue(s, version);  // the handler wants the body: let the client send it
                continued = true;
              }
              // Bytes that came in with the headers first, then straight from the socket into dst, each read
              // taking whatever has arrived.
              size_t got = std::min(n, buf.size());
              asio::buffer_copy(asio::buffer(dst, got), buf.data());
              buf.consume(got);
              beast::error_code rec;
              while (got < n && !rec) got += s.read_some(asio::buffer(dst + got, n - got), rec);
              left -= got;
              if (left == 0) s.disarm();  // the handler may take its time (verify, fsync); the answer re-arms
              return got == n;
            };
            route->stream(req, res, reader);
            body_done = left == 0;
          }
        } else {
          if (!body_done) {
            if (expects_continue) write_continue(s, version);
            bhttp::request_parser<bhttp::string_body> full(std::move(head));
            full.body_limit(route->max_body);
            bhttp::read(s, buf, full, ec);
            if (ec) {
              if (ec == bhttp::error::body_limit) refuse(s, version, 413, too_large(route->max_body));
              else if (is_parse_error(ec)) refuse(s, version, 400, "bad HTTP request body: " + ec.message());
              return;
            }
            req.body = std::move(full.get().body());
            body_done = true;
          }
          s.disarm();  // a handler may block (a held heartbeat); the answer re-arms
          route->handler(req, res);
        }
      } catch (const std::exception& e) {
        spdlog::error("{} {}: {}", req.method, req.path, e.what());
        plain_answer(res, 500, std::string("internal error: ") + e.what());
      }
      s.timeout(options.read_timeout);
      keep = keep && body_done && !stopping && !head_method;
      if (!write(s, res, version, keep, head_method)) return;
      if (!keep) {
        if (!body_done) linger(s);
        return;
      }
    }
  }

  template <class S>
  bool write(S& s, Response& res, unsigned version, bool keep, bool head_method) {
    if (options.finish) options.finish(res);
    bhttp::response<bhttp::string_body> r;
    r.version(version);
    r.result(static_cast<unsigned>(res.status));
    for (auto& [k, v] : res.headers) r.insert(k, v);
    r.keep_alive(keep);
    // Clients that pool connections (Node's agent) stop reusing one a little before this, instead of racing the close.
    if (keep) r.set("Keep-Alive", "timeout=" + std::to_string(options.idle_timeout.count()));
    r.body() = std::move(res.body);
    r.prepare_payload();
    beast::error_code ec;
    if (head_method) {
      bhttp::response_serializer<bhttp::string_body> sr(r);
      bhttp::write_header(s, sr, ec);  // HEAD: the headers a GET would get, no body
    } else {
      bhttp::write(s, r, ec);
    }
    return !ec;
  }

  // Answers with an error and closes: the rest of the request cannot be read as HTTP, or will not be read.
  template <class S>
  void refuse(S& s, unsigned version, int status, const std::string& message) {
    Response res;
    plain_answer(res, status, message);
    write(s, res, version, false, false);
    linger(s);
  }

  template <class S>
  void write_continue(S& s, unsigned version) {
    bhttp::response<bhttp::empty_body> c{bhttp::status::continue_, version};
    beast::error_code ec;
    bhttp::write(s, c, ec);
  }

  // Before closing with part of a request body unread: read and drop what the client still sends, for a short while,
  // so the close is a FIN after our answer rather than a reset that could make the client lose the answer.
  template <class S>
  void linger(S& s) {
    s.timeout(std::chrono::seconds(2));
    std::vector<char> scratch(64 * 1024);
    beast::error_code ec;
    size_t drained = 0;
    while (!ec && drained < (size_t{16} << 20)) drained += s.read_some(asio::buffer(scratch), ec);
  }

  // Unregistered before the socket closes, so the watchdog never shuts down a descriptor number reused by another.
  struct Unregister {
    Impl& impl;
    uint64_t id;
    ~Unregister() {
      std::lock_guard lock(impl.mu);
      impl.watches.erase(id);
    }
  };

  void connection(std::unique_ptr<tcp::socket> sock, Watch& watch, uint64_t id) {
    try {
      beast::error_code ec;
      std::string remote = sock->remote_endpoint(ec).address().to_string();
      sock->set_option(tcp::no_delay(true), ec);  // headers and body go out in separate writes
      if (tls) {
        std::unique_ptr<asio::ssl::stream<tcp::socket>> ssl;
        Unregister unregister{*this, id};  // declared after `ssl`: runs first
        ssl = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(*sock), *tls);
        watch.deadline = now_ns() + ns(std::min(options.read_timeout, std::chrono::seconds(30)));
        ssl->handshake(asio::ssl::stream_base::server, ec);
        if (ec) {
          spdlog::debug("TLS handshake with {} failed: {}", remote, ec.message());
          return;
        }
        session(*ssl, watch, remote);
        watch.deadline = now_ns() + ns(std::chrono::seconds(2));
        ssl->shutdown(ec);
      } else {
        Unregister unregister{*this, id};
        session(*sock, watch, remote);
        sock->shutdown(tcp::socket::shutdown_send, ec);
      }
    } catch (const std::exception& e) {
      spdlog::warn("HTTP connection failed: {}", e.what());
    }
  }

  void watchdog() {
    std::unique_lock lock(mu);
    while (watching) {
      int64_t now = now_ns();
      for (auto& [id, w] : watches)
        if (w->deadline.load() < now) {
          ::shutdown(w->fd, SHUT_RDWR);  // the blocked read or write returns; the session ends
          w->cut = true;
          w->deadline = kNever;
        }
      cv.wait_for(lock, std::chrono::milliseconds(500));
    }
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  auto& o = impl_->options;
  if (o.tls_cert.empty() != o.tls_key.empty()) fail(ErrorKind::kInvalidArgument, "TLS needs both a certificate (--tls-cert) and a key (--tls-key)");
  if (!o.tls_cert.empty()) {
    try {
      asio::ssl::context ctx(asio::ssl::context::tls_server);
      ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                      asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
      ctx.use_certificate_chain_file(o.tls_cert);
      ctx.use_private_key_file(o.tls_key, asio::ssl::context::pem);
      impl_->tls.emplace(std::move(ctx));
    } catch (const std::exception& e) {
      fail(ErrorKind::kInvalidArgument, "cannot use TLS certificate '" + o.tls_cert + "' with key '" + o.tls_key + "': " + e.what());
    }
  }
}

Server::~Server() {
  stop();
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return !impl_->serving && impl_->active == 0; });
}

void Server::route(const std::string& method, const std::string& pattern, Handler handler, size_t max_body) {
  impl_->routes.push_back({method, std::regex(pattern), std::move(handler), nullptr, max_body ? max_body : impl_->options.max_body});
}

void Server::stream_route(const std::string& method, const std::string& pattern, StreamHandler handler, size_t max_body) {
  impl_->routes.push_back({method, std::regex(pattern), nullptr, std::move(handler), max_body ? max_body : impl_->options.max_body});
}

int Server::bind(const std::string& host_in, int port) {
  std::string host = host_in;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  beast::error_code ec;
  tcp::resolver resolver(impl_->io);
  auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) fail(ErrorKind::kIo, "cannot listen on " + host_in + ":" + std::to_string(port) + ": " + ec.message());
  auto& a = impl_->acceptor;
  tcp::endpoint endpoint = endpoints.begin()->endpoint();
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    a.close();
    fail(ErrorKind::kIo, "cannot listen on " + host_in + ":" + std::to_string(port) + ": " + ec.message());
  }
  return a.local_endpoint().port();
}

void Server::serve() {
  auto& impl = *impl_;
  {
    std::lock_guard lock(impl.mu);
    if (impl.serving || impl.stopping || !impl.acceptor.is_open()) return;
    impl.serving = impl.watching = true;
  }
  std::thread watchdog([&] { impl.watchdog(); });
  for (;;) {
    {
      std::unique_lock lock(impl.mu);
      impl.cv.wait(lock, [&] { return impl.stopping || impl.active < impl.options.max_connections; });
    }
    if (impl.stopping) break;
    auto sock = std::make_unique<tcp::socket>(impl.io);
    beast::error_code ec;
    impl.acceptor.accept(*sock, ec);
    if (impl.stopping) break;
    if (ec) {
      spdlog::warn("accepting a connection failed: {}", ec.message());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // out of descriptors: let connections close
      continue;
    }
    auto watch = std::make_shared<Watch>();
    watch->fd = sock->native_handle();
    uint64_t id;
    {
      std::lock_guard lock(impl.mu);
      id = impl.next_id++;
      impl.watches.emplace(id, watch);
      ++impl.active;
    }
    try {
      // The socket and the watch are owned by the thread and gone before its last touch of impl.
      std::thread([&impl, sock = std::move(sock), watch = std::move(watch), id]() mutable {
        impl.connection(std::move(sock), *watch, id);
        watch.reset();
        std::lock_guard lock(impl.mu);  // the last touch of impl: the destructor may run once this is released
        --impl.active;
        impl.cv.notify_all();
      }).detach();
    } catch (const std::exception& e) {  // no thread (a process or memory limit): drop this connection
      spdlog::warn("cannot start a thread for a connection: {}", e.what());
      std::lock_guard lock(impl.mu);
      impl.watches.erase(id);
      --impl.active;
    }
  }
  {
    std::unique_lock lock(impl.mu);
    impl.cv.wait(lock, [&] { return impl.active == 0; });
    impl.watching = false;
    impl.cv.notify_all();
  }
  watchdog.join();
  beast::error_code ec;
  impl.acceptor.close(ec);
  std::lock_guard lock(impl.mu);  // the last touch of impl: the destructor may run once this is released
  impl.serving = false;
  impl.cv.notify_all();
}

void Server::stop() {
  auto& impl = *impl_;
  std::lock_guard lock(impl.mu);
  if (impl.stopping.exchange(true)) return;
  for (auto& [id, w] : impl.watches)
    if (w->idle) {
      ::shutdown(w->fd, SHUT_RDWR);
      w->cut = true;
    }
  if (impl.acceptor.is_open()) ::shutdown(impl.acceptor.native_handle(), SHUT_RDWR);  // a blocked accept() returns
  impl.cv.notify_all();
}

}  // namespace ferry::api::http
