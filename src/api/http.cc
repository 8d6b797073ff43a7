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
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
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
int64_t ns(std::chrono::nanoseconds t) { return t.count(); }
constexpr int64_t kNever = INT64_MAX;

// A malformed message (Beast's parser said so), as opposed to an I/O error or the peer going away.
bool is_parse_error(const beast::error_code& ec) {
  static const auto& http_errors = bhttp::make_error_code(bhttp::error::bad_method).category();
  return ec.category() == http_errors && ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

std::string too_large(size_t limit) { return "request body larger than " + std::to_string(limit) + " bytes"; }

// The address a client's connections are counted under: an IPv4 address (also when it comes IPv4-mapped), or the
// /64 prefix of an IPv6 one (one host's share: a single machine usually holds a whole /64).
std::string address_key(const asio::ip::address& a) {
  if (!a.is_v6()) return a.to_string();
  auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  auto bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

// What the watchdog and the accept loop know of a connection: its socket, when it must have made progress by, and
// whether it is waiting for a request's headers (the TLS handshake included) and since when: those are the ones
// shed to make room, oldest first, and closed at once by stop(). `cut` (under Impl::mu) is set when the socket was
// shut down: a request read after that is dropped, since its answer could not be written (a client would retry a
// call that ran).
struct Watch {
  int fd = -1;
  std::string address;  // address_key() of the peer
  std::atomic<int64_t> deadline{kNever};
  std::atomic<bool> awaiting{true};
  std::atomic<int64_t> since{0};
  bool cut = false;
};

// A stream that pushes its connection's deadline forward on every read and write that moves data, so a timeout
// means "no progress for that long", however large the body (Beast's synchronous I/O has no timeouts of its own).
// The deadline never passes `cap` (a request's headers must all arrive by then), and while a body is read it also
// never passes the time by which the bytes read so far meet the minimum rate.
template <class Next>
class Watched {
 public:
  Watched(Next& next, Watch& watch) : next_(next), watch_(watch) {}
  void timeout(std::chrono::nanoseconds t, int64_t cap = kNever) {
    timeout_ns_ = ns(t);
    cap_ = cap;
    rate_ = 0;
    arm();
  }
  // Until the next timeout(): a body is being read, at `rate` bytes/s or more on average once `grace` has passed.
  void body_clock(size_t rate, std::chrono::seconds grace) {
    rate_ = rate;
    rate_base_ = now_ns() + ns(grace);
    body_bytes_ = 0;
    arm();
  }
  void arm() {
    int64_t deadline = std::min(now_ns() + timeout_ns_, cap_);
    if (rate_) {
      double earned = static_cast<double>(body_bytes_) / static_cast<double>(rate_) * 1e9;  // ns of credit
      if (earned < static_cast<double>(kNever - rate_base_)) deadline = std::min(deadline, rate_base_ + static_cast<int64_t>(earned));
    }
    watch_.deadline.store(deadline);
  }
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
    if (n) {
      body_bytes_ += n;
      arm();
    }
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
  int64_t cap_ = kNever;
  size_t rate_ = 0;  // 0: no body clock
  int64_t rate_base_ = 0;
  uint64_t body_bytes_ = 0;
};

// The bytes of unauthenticated bodies held at once, against ServerOptions::unauthenticated_body_budget.
class Budget {
 public:
  void set_limit(size_t limit) { limit_ = limit; }
  bool take(size_t n) {
    size_t used = used_.load();
    do {
      if (n > limit_ - used) return false;
    } while (!used_.compare_exchange_weak(used, used + n));
    return true;
  }
  void give(size_t n) { used_ -= n; }

 private:
  size_t limit_ = 0;
  std::atomic<size_t> used_{0};
};

// One request's share of the budget, given back when the request has been answered.
struct Charge {
  Budget* budget = nullptr;  // null: not charged (authenticated by its headers)
  size_t taken = 0;
  bool exceeded = false;
  bool take(size_t n) {
    if (!budget) return true;
    if (!budget->take(n)) return !(exceeded = true);
    taken += n;
    return true;
  }
  Charge() = default;
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;
  ~Charge() {
    if (budget) budget->give(taken);
  }
};

// A Beast body read into a string as its bytes arrive: nothing is reserved from Content-Length (Beast's string_body
// reserves it all up front, so announcing a size was enough to make the server take that much memory), and each
// piece is charged to the request's Charge first.
struct ArrivingBody {
  struct value_type {
    std::string data;
    Charge* charge = nullptr;
  };
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(bhttp::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>&, beast::error_code& ec) { ec = {}; }
    template <class Buffers>
    size_t put(const Buffers& buffers, beast::error_code& ec) {
      size_t n = asio::buffer_size(buffers);
      if (body_.charge && !body_.charge->take(n)) {
        ec = asio::error::no_buffer_space;
        return 0;
      }
      size_t at = body_.data.size();
      body_.data.resize(at + n);  // grows geometrically: amortised, and never more than twice what arrived
      ec = {};
      return asio::buffer_copy(asio::buffer(body_.data.data() + at, n), buffers);
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

// An in-memory connection for serve_bytes(): reads the input in pieces of at most `piece` bytes, then end of
// stream; keeps what is written.
class MemoryStream {
 public:
  MemoryStream(std::string_view in, size_t piece) : in_(in), piece_(piece ? piece : SIZE_MAX) {}
  template <class Buffers>
  size_t read_some(const Buffers& b, beast::error_code& ec) {
    if (in_.empty()) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    size_t n = asio::buffer_copy(b, asio::buffer(in_.data(), std::min(in_.size(), piece_)));
    in_.remove_prefix(n);
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers& b, beast::error_code& ec) {
    ec = {};
    size_t n = 0;
    for (auto piece : beast::buffers_range_ref(b)) {
      out.append(static_cast<const char*>(piece.data()), piece.size());
      n += piece.size();
    }
    return n;
  }
  std::string out;

 private:
  std::string_view in_;
  size_t piece_;
};

struct Route {
  std::string method;
  std::regex pattern;
  Handler handler;
  StreamHandler stream;
  size_t max_body;
  Admit admit;
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
  size_t max_route_body = 0;  // the largest route limit: a Content-Length over it is refused with the headers
  Budget budget;

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::shared_ptr<Watch>> watches;
  std::map<std::string, size_t> per_address;  // connections open per address_key()
  uint64_t next_id = 0;
  size_t active = 0;  // connection threads alive
  bool serving = false;   // serve() is running
  bool watching = false;  // the watchdog runs
  std::atomic<bool> stopping{false};
  uint64_t shed = 0, turned_away = 0;  // since the watchdog last reported them

  const Route* find(const std::string& method, const std::string& path, std::vector<std::string>& matches) const {
    std::smatch m;
    for (auto& r : routes) {
      if (r.method != method || !std::regex_match(path, m, r.pattern)) continue;
      matches.assign(m.begin(), m.end());
      return &r;
    }
    return nullptr;
  }

  // The transport's own refusals, worded by ServerOptions::refusal; 503 also says when to retry.
  void refusal(Response& res, int status, const std::string& message) {
    res = Response{};
    res.status = status;
    if (options.refusal) options.refusal(res, status, message);
    else res.set_content(message + "\n", "text/plain");
    if (status == 503) res.set_header("Retry-After", "1");
  }

  // Serves requests on one connection until it closes, times out, fails, or the server stops.
  template <class Stream>
  void session(Stream& stream, Watch& watch, const std::string& remote) {
    Watched<Stream> s(stream, watch);
    beast::flat_buffer buf;
    for (;;) {
      watch.since = now_ns();
      watch.awaiting = true;
      if (stopping) return;
      // However slowly they trickle in, a request's headers must have arrived within header_timeout (besides each
      // byte coming within idle_timeout of the last).
      s.timeout(options.idle_timeout, watch.since + ns(options.header_timeout));
      bhttp::request_parser<bhttp::empty_body> head;
      head.header_limit(static_cast<uint32_t>(std::min<size_t>(options.max_header, UINT32_MAX)));
      head.body_limit(max_route_body);
      beast::error_code ec;
      bhttp::read_header(s, buf, head, ec);
      {
        std::lock_guard lock(mu);
        if (watch.cut) return;  // shut down meanwhile (stop, timeout, shed): the answer could not be written
        watch.awaiting = false;
      }
      if (ec) {
        if (ec == bhttp::error::body_limit) refuse(s, 11, 413, too_large(max_route_body));
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
      bool body_done = head.is_done();
      Response res;
      Charge charge;  // declared before the body it pays for; given back once the answer is written
      try {
        // libstdc++'s regex matcher recurses per character: a path of tens of KiB overflows a thread's stack.
        const Route* route = req.path.size() > options.max_path ? nullptr : find(req.method, req.path, req.matches);
        Admission admission = Admission::kRefused;
        if (req.path.size() > options.max_path) {
          refusal(res, 414, "request path longer than " + std::to_string(options.max_path) + " bytes");
        } else if (!route) {
          refusal(res, 404, "no such resource: " + req.method + " " + req.path);
        } else if (req.has_content_length && req.content_length > route->max_body) {
          refusal(res, 413, too_large(route->max_body));
        } else if (route->stream && !req.has_content_length) {
          refusal(res, 411, req.method + " " + req.path + " needs a Content-Length header");
        } else {
          admission = route->admit ? route->admit(req, res) : Admission::kUnauthenticated;
        }
        if (admission == Admission::kUnauthenticated) charge.budget = &budget;
        if (admission == Admission::kRefused) {
          // answered above or by the hook; the body, if any, is not read
        } else if (route->stream) {
          uint64_t left = req.content_length;
          bool continued = !expects_continue || body_done, clocked = false;
          BodyReader reader = [&](char* dst, size_t n) {
            if (n > left) return false;
            if (!continued) {
              write_continue(s, version);  // the handler wants the body: let the client send it
              continued = true;
            }
            if (!clocked) {
              s.body_clock(options.min_body_rate, options.body_grace);
              clocked = true;
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
        } else {
          if (!body_done) {
            if (expects_continue) write_continue(s, version);
            bhttp::request_parser<ArrivingBody> full(std::move(head));
            full.body_limit(route->max_body);
            full.get().body().charge = &charge;
            s.body_clock(options.min_body_rate, options.body_grace);
            bhttp::read(s, buf, full, ec);
            if (ec) {
              if (charge.exceeded)
                refuse(s, version, 503, "too many request bodies are being received from clients not yet authenticated; retry");
              else if (ec == bhttp::error::body_limit) refuse(s, version, 413, too_large(route->max_body));
              else if (is_parse_error(ec)) refuse(s, version, 400, "bad HTTP request body: " + ec.message());
              return;
            }
            req.body = std::move(full.get().body().data);
            body_done = true;
          }
          s.disarm();  // a handler may block (a held heartbeat); the answer re-arms
          route->handler(req, res);
        }
      } catch (const std::exception& e) {
        spdlog::error("{} {}: {}", req.method, req.path, e.what());
        res = Response{};
        res.status = 500;
        res.set_content(std::string("internal error: ") + e.what() + "\n", "text/plain");
      } catch (...) {
        spdlog::error("{} {}: an exception of unknown type", req.method, req.path);
        res = Response{};
        res.status = 500;
        res.set_content("internal error\n", "text/plain");
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

  bhttp::response<bhttp::string_body> message(Response& res, unsigned version, bool keep) {
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
    return r;
  }

  template <class S>
  bool write(S& s, Response& res, unsigned version, bool keep, bool head_method) {
    auto r = message(res, version, keep);
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
  void refuse(S& s, unsigned version, int status, const std::string& text) {
    Response res;
    refusal(res, status, text);
    write(s, res, version, false, false);
    linger(s);
  }

  template <class S>
  void write_continue(S& s, unsigned version) {
    bhttp::response<bhttp::empty_body> c{bhttp::status::continue_, version};
    beast::error_code ec;
    bhttp::write(s, c, ec);
  }

  // Before closing with part of a request body unread: read and drop what the client still sends, for two seconds at
  // most (however it trickles), so the close is a FIN after our answer rather than a reset that could make the client
  // lose the answer.
  template <class S>
  void linger(S& s) {
    s.timeout(std::chrono::seconds(2), now_ns() + ns(std::chrono::seconds(2)));
    std::vector<char> scratch(64 * 1024);
    beast::error_code ec;
    size_t drained = 0;
    while (!ec && drained < (size_t{16} << 20)) drained += s.read_some(asio::buffer(scratch), ec);
  }

  // Takes a connection out of the watchdog's table and its address's count.
  void forget(uint64_t id) {
    std::lock_guard lock(mu);
    auto it = watches.find(id);
    if (it == watches.end()) return;
    auto from = per_address.find(it->second->address);
    if (from != per_address.end() && --from->second == 0) per_address.erase(from);
    watches.erase(it);
  }

  // Unregistered before the socket closes, so the watchdog never shuts down a descriptor number reused by another.
  struct Unregister {
    Impl& impl;
    uint64_t id;
    ~Unregister() { impl.forget(id); }
  };

  void connection(std::unique_ptr<tcp::socket> sock, Watch& watch, uint64_t id, const std::string& remote) {
    try {
      beast::error_code ec;
      sock->set_option(tcp::no_delay(true), ec);  // headers and body go out in separate writes
      if (tls) {
        std::unique_ptr<asio::ssl::stream<tcp::socket>> ssl;
        Unregister unregister{*this, id};  // declared after `ssl`: runs first
        ssl = std::make_unique<asio::ssl::stream<tcp::socket>>(std::move(*sock), *tls);
        watch.deadline = watch.since + ns(options.header_timeout);  // the handshake counts as part of the headers
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
      spdlog::warn("HTTP connection from {} failed: {}", remote, e.what());
    } catch (...) {
      spdlog::warn("HTTP connection from {} failed: an exception of unknown type", remote);
    }
  }

  // Shuts down the connection that has waited longest for a request's headers among those `which` accepts; false if
  // there is none. REQUIRES: mu held.
  template <class Pred>
  bool shed_oldest(Pred which) {
    Watch* oldest = nullptr;
    for (auto& [id, w] : watches)
      if (w->awaiting && !w->cut && which(*w) && (!oldest || w->since < oldest->since)) oldest = w.get();
    if (!oldest) return false;
    ::shutdown(oldest->fd, SHUT_RDWR);  // its thread's blocked read returns; the session ends
    oldest->cut = true;
    ++shed;
    return true;
  }

  // An answer written at once, without a thread, to a connection that is not taken: 503, then the close.
  void turn_away(tcp::socket& sock) {
    ++turned_away;
    if (tls) return;  // no time for a handshake: just the close
    Response res;
    refusal(res, 503, "too many connections from this address; retry");
    std::ostringstream out;
    out << message(res, 11, false);
    std::string bytes = out.str();
    (void)!::send(sock.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  void watchdog() {
    std::unique_lock lock(mu);
    auto reported = Clock::now();
    while (watching) {
      int64_t now = now_ns();
      for (auto& [id, w] : watches)
        if (w->deadline.load() < now) {
          ::shutdown(w->fd, SHUT_RDWR);  // the blocked read or write returns; the session ends
          w->cut = true;
          w->deadline = kNever;
        }
      if ((shed || turned_away) && Clock::now() - reported > std::chrono::seconds(30)) {
        spdlog::warn("{} connection(s) still waiting for their headers were closed to make room, {} refused "
                     "(over {} from one address), in the last {} s",
                     shed, turned_away, options.max_connections_per_address,
                     std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - reported).count());
        shed = turned_away = 0;
        reported = Clock::now();
      }
      cv.wait_for(lock, std::chrono::milliseconds(500));
    }
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  auto& o = impl_->options;
  impl_->budget.set_limit(o.unauthenticated_body_budget);
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

void Server::route(const std::string& method, const std::string& pattern, Handler handler, size_t max_body, Admit admit) {
  size_t limit = max_body ? max_body : impl_->options.max_body;
  impl_->routes.push_back({method, std::regex(pattern), std::move(handler), nullptr, limit, std::move(admit)});
  impl_->max_route_body = std::max(impl_->max_route_body, limit);
}

void Server::stream_route(const std::string& method, const std::string& pattern, StreamHandler handler, size_t max_body, Admit admit) {
  size_t limit = max_body ? max_body : impl_->options.max_body;
  impl_->routes.push_back({method, std::regex(pattern), nullptr, std::move(handler), limit, std::move(admit)});
  impl_->max_route_body = std::max(impl_->max_route_body, limit);
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
  const size_t max = impl.options.max_connections;
  const size_t shed_from = max - max / 8;  // "near the limit": each connection beyond this one makes room
  std::thread watchdog([&] { impl.watchdog(); });
  for (;;) {
    {
      std::unique_lock lock(impl.mu);
      impl.cv.wait(lock, [&] { return impl.stopping || impl.active < max; });
    }
    if (impl.stopping) break;
    try {
      auto sock = std::make_unique<tcp::socket>(impl.io);
      beast::error_code ec;
      impl.acceptor.accept(*sock, ec);
      if (impl.stopping) break;
      if (ec) {
        spdlog::warn("accepting a connection failed: {}", ec.message());
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // out of descriptors: let connections close
        continue;
      }
      auto peer = sock->remote_endpoint(ec);
      if (ec) continue;  // gone already
      std::string remote = peer.address().to_string();
      auto watch = std::make_shared<Watch>();
      watch->fd = sock->native_handle();
      watch->address = address_key(peer.address());
      watch->since = now_ns();
      uint64_t id;
      {
        std::lock_guard lock(impl.mu);
        size_t& from = impl.per_address[watch->address];
        if (from >= impl.options.max_connections_per_address &&
            !impl.shed_oldest([&](const Watch& w) { return w.address == watch->address; })) {
          if (from == 0) impl.per_address.erase(watch->address);  // a limit of 0
          impl.turn_away(*sock);
          continue;
        }
        if (impl.active + 1 > shed_from) impl.shed_oldest([](const Watch&) { return true; });
        ++from;
        id = impl.next_id++;
        impl.watches.emplace(id, watch);
        ++impl.active;
      }
      try {
        // The socket and the watch are owned by the thread and gone before its last touch of impl.
        std::thread([&impl, sock = std::move(sock), watch = std::move(watch), id, remote]() mutable {
          impl.connection(std::move(sock), *watch, id, remote);
          watch.reset();
          std::lock_guard lock(impl.mu);  // the last touch of impl: the destructor may run once this is released
          --impl.active;
          impl.cv.notify_all();
        }).detach();
      } catch (const std::exception& e) {  // no thread (a process or memory limit): drop this connection
        spdlog::warn("cannot start a thread for a connection: {}", e.what());
        impl.forget(id);
        std::lock_guard lock(impl.mu);
        --impl.active;
      }
    } catch (const std::exception& e) {  // out of memory for a socket or a watch: the others go on
      spdlog::warn("cannot take a connection: {}", e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
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
    if (w->awaiting) {
      ::shutdown(w->fd, SHUT_RDWR);
      w->cut = true;
    }
  if (impl.acceptor.is_open()) ::shutdown(impl.acceptor.native_handle(), SHUT_RDWR);  // a blocked accept() returns
  impl.cv.notify_all();
}

std::string Server::serve_bytes(std::string_view input, size_t piece) {
  MemoryStream stream(input, piece);
  Watch watch;  // in no table: neither the watchdog nor stop() touches it
  impl_->session(stream, watch, "192.0.2.1");
  return std::move(stream.out);
}

}  // namespace ferry::api::http
