// The HTTP/1.1 transport: Beast parses and writes messages over blocking Asio sockets (plain or TLS), one thread
// per connection; a watchdog thread enforces the timeouts by shutting down sockets that made no progress in time.
#include "api/http.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
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

// What the watchdog knows of a connection: its socket, when it must have made progress by, and whether it is
// between requests (stop() closes those at once).
struct Watch {
  int fd = -1;
  std::atomic<int64_t> deadline{kNever};
  std::atomic<bool> idle{true};
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
  void arm() { watch_.deadline.store(now_ns() + timeout_ns_); }
  void disarm() { watch_.deadline.store(kNever); }

  using executor_type = typename Next::executor_type;
  executor_type get_executor() { return next_.get_executor(); }
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
  template <class Buffers>
  size_t write_some(const Buffers& b, beast::error_code& ec) {
    size_t n = next_.write_some(b, ec);
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
};

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
      s.timeout(options.idle_timeout);
      bhttp::request_parser<bhttp::empty_body> head;
      head.header_limit(64 * 1024);
      head.body_limit(options.max_body);
      beast::error_code ec;
      bhttp::read_header(s, buf, head, ec);
      watch.idle = false;
      s.timeout(options.read_timeout);
      Response res;
      bool keep = false;
      if (ec) {
        if (ec.category() != bhttp::make_error_code(bhttp::error::bad_method).category() || ec == bhttp::error::end_of_stream) return;
        if (ec == bhttp::error::body_limit) plain_answer(res, 413, "request body larger than " + std::to_string(options.max_body) + " bytes");
        else plain_answer(res, ec == bhttp::error::header_limit ? 431 : 400, "bad HTTP request: " + ec.message());
        write(s, res, 11, false);
        return;
      }
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
      keep = h.keep_alive();
      unsigned version = h.version();
      bool expects_continue = iequals(str(h[bhttp::field::expect]), "100-continue");
      const Route* route = find(req.method, req.path, req.matches);
      bool body_done = head.is_done();
      try {
        if (!route) {
          plain_answer(res, 404, "no such resource: " + req.method + " " + req.path);
        } else if (route->stream) {
          if (!req.has_content_length) {
            plain_answer(res, 411, req.method + " " + req.path + " needs a Content-Length header");
          } else {
            if (expects_continue && !body_done) write_continue(s, version);
            uint64_t left = req.content_length;
            BodyReader reader = [&](char* dst, size_t n) {
              if (n > left) return false;
              // Bytes that came in with the headers first, then straight from the socket into dst.
              size_t from_buf = std::min(n, buf.size());
              asio::buffer_copy(asio::buffer(dst, from_buf), buf.data());
              buf.consume(from_buf);
              beast::error_code rec;
              size_t got = from_buf + asio::read(s, asio::buffer(dst + from_buf, n - from_buf), rec);
              left -= got;
              return got == n;
            };
            route->stream(req, res, reader);
            body_done = left == 0;
          }
        } else {
          if (!body_done) {
            if (expects_continue) write_continue(s, version);
            bhttp::request_parser<bhttp::string_body> full(std::move(head));
            full.body_limit(options.max_body);
            bhttp::read(s, buf, full, ec);
            if (ec) {
              if (ec == bhttp::error::body_limit) {
                plain_answer(res, 413, "request body larger than " + std::to_string(options.max_body) + " bytes");
                write(s, res, version, false);
              } else if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() && ec != bhttp::error::partial_message) {
                plain_answer(res, 400, "bad HTTP request body: " + ec.message());
                write(s, res, version, false);
              }
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
      keep = keep && body_done && !stopping;
      if (!write(s, res, version, keep) || !keep) return;
    }
  }

  template <class S>
  bool write(S& s, Response& res, unsigned version, bool keep) {
    if (options.finish) options.finish(res);
    bhttp::response<bhttp::string_body> r;
    r.version(version);
    r.result(static_cast<unsigned>(res.status));
    for (auto& [k, v] : res.headers) r.insert(k, v);
    r.keep_alive(keep);
    r.body() = std::move(res.body);
    r.prepare_payload();
    beast::error_code ec;
    bhttp::write(s, r, ec);
    return !ec;
  }

  template <class S>
  void write_continue(S& s, unsigned version) {
    bhttp::response<bhttp::empty_body> c{bhttp::status::continue_, version};
    beast::error_code ec;
    bhttp::write(s, c, ec);
  }

  void connection(tcp::socket sock, std::shared_ptr<Watch> watch, uint64_t id) {
    // Unregistered before the socket closes, so the watchdog never shuts down a descriptor number reused by another.
    struct Unregister {
      Impl& impl;
      uint64_t id;
      ~Unregister() {
        std::lock_guard lock(impl.mu);
        impl.watches.erase(id);
      }
    };
    try {
      beast::error_code ec;
      std::string remote = sock.remote_endpoint(ec).address().to_string();
      sock.set_option(tcp::no_delay(true), ec);  // headers and body go out in separate writes
      if (tls) {
        asio::ssl::stream<tcp::socket> ssl(std::move(sock), *tls);
        Unregister unregister{*this, id};
        watch->deadline = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(options.read_timeout).count();
        ssl.handshake(asio::ssl::stream_base::server, ec);
        if (ec) {
          spdlog::debug("TLS handshake with {} failed: {}", remote, ec.message());
          return;
        }
        session(ssl, *watch, remote);
        watch->deadline = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::seconds(2)).count();
        ssl.shutdown(ec);
      } else {
        Unregister unregister{*this, id};
        session(sock, *watch, remote);
        sock.shutdown(tcp::socket::shutdown_send, ec);
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

void Server::route(const std::string& method, const std::string& pattern, Handler handler) {
  impl_->routes.push_back({method, std::regex(pattern), std::move(handler), nullptr});
}

void Server::stream_route(const std::string& method, const std::string& pattern, StreamHandler handler) {
  impl_->routes.push_back({method, std::regex(pattern), nullptr, std::move(handler)});
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
    tcp::socket sock(impl.io);
    beast::error_code ec;
    impl.acceptor.accept(sock, ec);
    if (impl.stopping) break;
    if (ec) {
      spdlog::warn("accepting a connection failed: {}", ec.message());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // out of descriptors: let connections close
      continue;
    }
    auto watch = std::make_shared<Watch>();
    watch->fd = sock.native_handle();
    uint64_t id;
    {
      std::lock_guard lock(impl.mu);
      id = impl.next_id++;
      impl.watches.emplace(id, watch);
      ++impl.active;
    }
    std::thread([&impl, sock = std::move(sock), watch, id]() mutable {
      impl.connection(std::move(sock), std::move(watch), id);
      std::lock_guard lock(impl.mu);  // the last touch of impl: the destructor may run once this is released
      --impl.active;
      impl.cv.notify_all();
    }).detach();
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
    if (w->idle) ::shutdown(w->fd, SHUT_RDWR);
  if (impl.acceptor.is_open()) ::shutdown(impl.acceptor.native_handle(), SHUT_RDWR);  // a blocked accept() returns
  impl.cv.notify_all();
}

}  // namespace ferry::api::http
