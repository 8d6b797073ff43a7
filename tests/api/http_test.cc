// The HTTP transport under the API (src/api/http.h) over real loopback sockets: keep-alive, streamed bodies read
// straight into the handler's memory, the refusals (malformed, too large, no length, unknown path), timeouts, a stop
// that lets a request in progress finish, 100-continue and TLS; and what keeps clients that are not authenticated
// from taking memory and threads: admission before the body, bodies read as they arrive under a budget, limits per
// client address, shedding of connections that have not sent their headers, header and body rate deadlines.
#include "api/http.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "common/error.h"
#include "fixtures/fixtures.h"

namespace ferry::api::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using testing::TempDir;

// A server on a free loopback port, serving on its own thread until the test ends.
class Running {
 public:
  explicit Running(ServerOptions options = {}, std::function<void(Server&)> add_routes = {}) : server_(with_finish(std::move(options))) {
    server_.route("GET", "/hello", [](const Request& req, Response& res) { res.set_content("hello " + req.header("x-name"), "text/plain"); });
    server_.route("POST", "/echo", [](const Request& req, Response& res) { res.set_content(req.body, "application/octet-stream"); });
    server_.route("GET", R"(/items/([a-z]+)/(\d+))", [](const Request& req, Response& res) {
      res.set_content(req.matches.at(1) + "#" + req.matches.at(2) + "?" + req.target.substr(req.path.size()), "text/plain");
    });
    // Reads the body in 1 MiB steps into one buffer and answers its length and a checksum.
    server_.stream_route("PUT", "/blob", [this](const Request& req, Response& res, const BodyReader& read) {
      std::string body(req.content_length, '\0');
      size_t at = 0;
      while (at < body.size()) {
        size_t n = std::min<size_t>(body.size() - at, 1 << 20);
        if (!read(body.data() + at, n)) {
          ++short_reads;
          res.status = 400;
          res.set_content("short body after " + std::to_string(at), "text/plain");
          return;
        }
        at += n;
      }
      res.set_content(std::to_string(body.size()) + " " + std::to_string(std::hash<std::string>{}(body)), "text/plain");
    });
    if (add_routes) add_routes(server_);
    port_ = server_.bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_.serve(); });
  }
  ~Running() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  std::atomic<int> short_reads{0};  // bodies the blob route found cut short
  Server& server() { return server_; }
  void join() { thread_.join(); }

 private:
  static ServerOptions with_finish(ServerOptions o) {
    if (!o.finish) o.finish = [](Response& res) { res.set_header("X-Finished", "yes"); };
    return o;
  }
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A plain client connection: raw bytes out, Beast-parsed answers in. A server that never answers fails the test
// instead of hanging it: after a minute the connection is shut down under the blocked read.
class Conn {
 public:
  // From `source` (any 127.x.y.z: all of 127/8 is loopback) to the server on 127.0.0.1.
  explicit Conn(int port, const std::string& source = "127.0.0.1") : socket_(io_) {
    socket_.open(tcp::v4());
    socket_.bind(tcp::endpoint(asio::ip::make_address(source), 0));
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
    guard_ = std::thread([this, fd = socket_.native_handle()] {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, 60s, [&] { return done_; })) return;
      fired_ = true;
      ::shutdown(fd, SHUT_RDWR);
    });
  }
  ~Conn() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    guard_.join();
    EXPECT_FALSE(fired_) << "the server neither answered nor closed within a minute";
  }
  void send(const std::string& bytes) { asio::write(socket_, asio::buffer(bytes)); }
  void shutdown_send() { socket_.shutdown(tcp::socket::shutdown_send); }
  bhttp::response<bhttp::string_body> answer() {
    bhttp::response<bhttp::string_body> res;
    bhttp::read(socket_, buf_, res);
    return res;
  }
  template <class Parser>
  void read_into(Parser& p) {
    bhttp::read(socket_, buf_, p);
  }
  // True when bytes (or a close) arrive within `limit`.
  bool readable_within(std::chrono::seconds limit) {
    pollfd pfd{socket_.native_handle(), POLLIN, 0};
    return ::poll(&pfd, 1, static_cast<int>(limit.count() * 1000)) > 0;
  }
  // True when the server closed the connection (EOF with no further bytes), waiting at most `limit`.
  bool closed_within(std::chrono::seconds limit) {
    timeval tv{static_cast<time_t>(limit.count()), 0};
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    ssize_t n = ::recv(socket_.native_handle(), &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buf_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false, fired_ = false;
  std::thread guard_;
};

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string put_blob(const std::string& body, const std::string& extra_headers = "") {
  return "PUT /blob HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

std::string blob_answer(const std::string& body) { return std::to_string(body.size()) + " " + std::to_string(std::hash<std::string>{}(body)); }

TEST(Http, KeepAliveServesRequestsOneAfterAnotherOnOneConnection) {
  Running r;
  Conn c(r.port());
  for (int i = 0; i < 5; ++i) {
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\nX-NAME: n" + std::to_string(i) + "\r\n\r\n");
    auto res = c.answer();
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "hello n" + std::to_string(i)) << "header lookup is case-insensitive";
    EXPECT_TRUE(res.keep_alive());
    EXPECT_EQ(res["Keep-Alive"], "timeout=5") << "the idle timeout, for clients that pool connections";
    EXPECT_EQ(res["X-Finished"], "yes");
  }
  // Pipelined: two requests in one write, answered in order.
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /items/disk/42?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().body(), "abc");
  EXPECT_EQ(c.answer().body(), "disk#42??x=1");
}

TEST(Http, StreamedBodyArrivesWholeWhetherItComesWithTheHeadersOrLater) {
  Running r;
  Conn c(r.port());
  // All in one write, and a second request right behind the body: the bytes read past the body stay for it.
  std::string small = random_bytes(1000, 1);
  c.send(put_blob(small) + "GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: after\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(res.body(), blob_answer(small));
  EXPECT_EQ(c.answer().body(), "hello after");
  // 9 MiB in uneven pieces, some with pauses, so reads straddle the pieces.
  std::string big = random_bytes((9 << 20) + 12345, 2);
  std::string wire = put_blob(big);
  size_t at = 0, piece = 1;
  while (at < wire.size()) {
    size_t n = std::min(wire.size() - at, piece);
    c.send(wire.substr(at, n));
    at += n;
    piece = piece * 7 + 3;
    if (at < 4096) std::this_thread::sleep_for(5ms);
  }
  res = c.answer();
  EXPECT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(res.body(), blob_answer(big));
  EXPECT_TRUE(res.keep_alive());
}

TEST(Http, ShortStreamedBodyIsReportedToTheHandlerAndClosesTheConnection) {
  Running r;
  Conn c(r.port());
  c.send("PUT /blob HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + std::string(3000, 'a'));
  c.shutdown_send();
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(res.body(), "short body after 0");
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(c.closed_within(10s));
}

TEST(Http, StreamedRouteRefusesABodyWithoutContentLength) {
  Running r;
  Conn c(r.port());
  c.send("PUT /blob HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 411u);
  EXPECT_NE(res.body().find("needs a Content-Length"), std::string::npos) << res.body();
  EXPECT_FALSE(res.keep_alive()) << "the unread body cannot be skipped, so the connection closes";
  EXPECT_TRUE(c.closed_within(10s));
}

TEST(Http, ChunkedBodyReachesAnOrdinaryRoute) {
  Running r;
  Conn c(r.port());
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "abcde");
}

TEST(Http, MalformedRequestGets400AndTheConnectionCloses) {
  Running r;
  Conn c(r.port());
  c.send("THIS IS NOT HTTP\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_NE(res.body().find("bad HTTP request"), std::string::npos) << res.body();
  EXPECT_EQ(res["X-Finished"], "yes");
  EXPECT_TRUE(c.closed_within(10s));
}

TEST(Http, BodyOverTheLimitGets413) {
  ServerOptions o;
  o.max_body = 1024;
  Running r(o);
  for (const char* route : {"POST /echo", "PUT /blob"}) {
    Conn c(r.port());
    c.send(std::string(route) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n");
    auto res = c.answer();
    EXPECT_EQ(res.result_int(), 413u) << route;
    EXPECT_NE(res.body().find("larger than 1024 bytes"), std::string::npos) << res.body();
  }
  {
    // The client sends the body anyway: the answer still arrives (the rest is drained, not reset), then the close.
    Conn c(r.port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + std::string(300000, 'q'));
    auto res = c.answer();
    EXPECT_EQ(res.result_int(), 413u);
    EXPECT_FALSE(res.keep_alive());
  }
  Conn c(r.port());
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'z'));
  EXPECT_EQ(c.answer().body(), std::string(1024, 'z')) << "a body at the limit passes";
}

TEST(Http, ARouteCanHaveASmallerBodyLimit) {
  Running r({}, [](Server& s) { s.route("POST", "/small", [](const Request& req, Response& res) { res.set_content(req.body, "text/plain"); }, 100); });
  Conn c(r.port());
  c.send("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'a'));
  EXPECT_EQ(c.answer().result_int(), 200u);
  c.send("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + std::string(101, 'a'));
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_NE(res.body().find("larger than 100 bytes"), std::string::npos) << res.body();
  Conn chunked(r.port());
  chunked.send("POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + std::string(101, 'a') + "\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.answer().result_int(), 413u) << "a chunked body is held to the limit as it arrives";
}

TEST(Http, SlowReaderOfALargeAnswerIsNotCutOff) {
  ServerOptions o;
  o.read_timeout = 1s;
  Running r(o, [](Server& s) { s.route("GET", "/big", [](const Request&, Response& res) { res.set_content(std::string(16 << 20, 'b'), "text/plain"); }); });
  asio::io_context io;
  tcp::socket sock(io);
  sock.open(tcp::v4());
  sock.set_option(asio::socket_base::receive_buffer_size(64 * 1024));
  sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(r.port())));
  asio::write(sock, asio::buffer(std::string("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")));
  // About five seconds to read it all (64 KiB per 20 ms), far over the 1 s timeout, but each of the server's sends
  // (256 KiB at most) makes progress within it. One send of the whole answer would wait seconds for the socket
  // buffer (a few MiB) to drain and be cut off.
  std::string got;
  std::vector<char> piece(256 * 1024);
  beast::error_code ec;
  while (!ec && got.size() < (16u << 20) + 1000) {
    size_t n = sock.read_some(asio::buffer(piece), ec);
    got.append(piece.data(), n);
    std::this_thread::sleep_for(20ms);
    if (got.find("\r\n\r\n") != std::string::npos && got.size() - got.find("\r\n\r\n") - 4 == (16u << 20)) break;
  }
  auto header_end = got.find("\r\n\r\n");
  ASSERT_NE(header_end, std::string::npos);
  EXPECT_EQ(got.size() - header_end - 4, 16u << 20) << "answer cut off: " << ec.message();
}

TEST(Http, Http10RequestIsAnsweredAndClosed) {
  Running r;
  Conn c(r.port());
  c.send("GET /hello HTTP/1.0\r\nX-Name: old\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.version(), 10u);
  EXPECT_EQ(res.body(), "hello old");
  EXPECT_FALSE(res.keep_alive());
  EXPECT_TRUE(c.closed_within(10s));
}

TEST(Http, HeadGetsHeadersWithoutABody) {
  Running r({}, [](Server& s) { s.route("HEAD", "/hello", [](const Request&, Response& res) { res.set_content("twelve bytes", "text/plain"); }); });
  Conn c(r.port());
  c.send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  bhttp::response_parser<bhttp::empty_body> p;
  p.skip(true);  // a HEAD answer: Content-Length describes a body that is not sent
  EXPECT_NO_THROW(c.read_into(p));
  EXPECT_EQ(p.get().result_int(), 200u);
  EXPECT_EQ(p.get()[bhttp::field::content_length], "12");
  EXPECT_TRUE(c.closed_within(10s)) << "and no body bytes follow";
}

TEST(Http, AtMostMaxConnectionsAreServedAtOnce) {
  ServerOptions o;
  o.max_connections = 2;
  Running r(o);
  auto a = std::make_unique<Conn>(r.port());
  Conn b(r.port());
  for (Conn* c : {a.get(), &b}) {
    c->send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(c->answer().result_int(), 200u);
  }
  Conn third(r.port());  // connects (the listen backlog), but is not served while a and b stay open
  third.send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: third\r\n\r\n");
  EXPECT_FALSE(third.readable_within(1s));
  a.reset();
  auto res = third.answer();
  EXPECT_EQ(res.body(), "hello third");
}

TEST(Http, DestroyingTheServerStopsIt) {
  auto server = std::make_unique<Server>(ServerOptions{});
  server->route("GET", "/hello", [](const Request&, Response& res) { res.set_content("hi", "text/plain"); });
  int port = server->bind("127.0.0.1", 0);
  std::thread serving([&] { server->serve(); });
  Conn c(port);
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().body(), "hi");
  server.reset();  // stops, closes the idle connection, waits for serve() to return
  serving.join();
  EXPECT_TRUE(c.closed_within(10s));
}

TEST(Http, UnknownPathOrMethodGets404) {
  Running r;
  Conn c(r.port());
  c.send("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_NE(res.body().find("GET /nothing"), std::string::npos) << res.body();
  EXPECT_TRUE(res.keep_alive()) << "no body, so the connection can go on";
  c.send("DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 404u);
  c.send("GET /items/disk/notanumber HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 404u) << "the pattern must match the whole path";
}

TEST(Http, HandlerExceptionIs500) {
  Running r({}, [](Server& s) { s.route("GET", "/boom", [](const Request&, Response&) { throw std::runtime_error("kaboom"); }); });
  Conn c(r.port());
  c.send("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 500u);
  EXPECT_NE(res.body().find("kaboom"), std::string::npos);
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 200u) << "the connection survives";
}

TEST(Http, IdleConnectionIsClosedAfterTheIdleTimeout) {
  ServerOptions o;
  o.idle_timeout = 1s;
  Running r(o);
  Conn silent(r.port());
  EXPECT_TRUE(silent.closed_within(10s)) << "a connection that never sends is closed";
  Conn after_one(r.port());
  after_one.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(after_one.answer().result_int(), 200u);
  EXPECT_TRUE(after_one.closed_within(10s)) << "nor is a kept-alive one held forever";
}

TEST(Http, StalledBodyIsCutOffAfterTheReadTimeout) {
  ServerOptions o;
  o.read_timeout = 1s;
  Running r(o);
  for (const char* route : {"POST /echo", "PUT /blob"}) {
    Conn c(r.port());
    c.send(std::string(route) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    // The connection ends without a success: the stream route answers 400 (short body), the other just closes.
    bool ended = false;
    try {
      auto res = c.answer();
      EXPECT_EQ(res.result_int(), 400u) << route;
      ended = c.closed_within(30s);
    } catch (const beast::system_error&) {
      ended = true;
    }
    EXPECT_TRUE(ended) << route;
  }
  // The client may see the close before the handler has counted; give the server's thread a moment.
  for (int i = 0; i < 200 && r.short_reads == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(r.short_reads, 1) << "the stream route's read returned false when the body stalled";
}

// True when the server closes `c` while a byte is sent to it every 300 ms (never idle for long), within `limit`.
bool closed_while_trickling(Conn& c, std::chrono::seconds limit) {
  for (auto start = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - start < limit;) {
    try {
      c.send("a");
    } catch (const beast::system_error&) {
      return true;
    }
    std::this_thread::sleep_for(300ms);
    if (c.readable_within(0s)) return true;  // the server never answers half a request: readable means closed
  }
  return false;
}

TEST(Http, HeadersThatTrickleInAreCutOffAtTheHeaderTimeout) {
  ServerOptions o;
  o.idle_timeout = 1s;
  o.header_timeout = 2s;  // and read_timeout stays 120 s: it has no say over headers
  Running r(o);
  Conn c(r.port());
  c.send("GET /hello HTTP/1.1\r\nX-Slow: ");
  // A header byte every 300 ms is never idle for a second, but the headers must be complete 2 s after the start.
  EXPECT_TRUE(closed_while_trickling(c, 20s)) << "20 s of trickling headers were not cut off";
}

TEST(Http, SlowButSteadyBodyIsNotCutOff) {
  ServerOptions o;
  o.read_timeout = 1s;
  Running r(o);
  Conn c(r.port());
  std::string body = random_bytes(60, 3);
  std::string wire = put_blob(body);
  // Three seconds in all, more than the read timeout, but never a second without a byte.
  for (size_t i = 0; i < wire.size(); i += 4) {
    c.send(wire.substr(i, 4));
    if (i + 4 >= wire.size() - body.size()) std::this_thread::sleep_for(200ms);
  }
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(res.body(), blob_answer(body));
}

TEST(Http, StopClosesIdleConnectionsAndLetsARequestInProgressFinish) {
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  auto running = std::make_unique<Running>(ServerOptions{}, [&](Server& s) {
    s.route("GET", "/slow", [&](const Request&, Response& res) {
      std::unique_lock lock(mu);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      res.set_content("finished", "text/plain");
    });
  });
  Conn idle(running->port());
  idle.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(idle.answer().result_int(), 200u);
  Conn busy(running->port());
  busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return entered; }));
  }
  running->server().stop();
  EXPECT_TRUE(idle.closed_within(30s)) << "an idle keep-alive connection is closed at once";
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  auto res = busy.answer();
  EXPECT_EQ(res.body(), "finished");
  EXPECT_FALSE(res.keep_alive()) << "a stopping server closes after the answer";
  running.reset();  // joins serve(), which returns once both connections are gone
}

TEST(Http, ExpectContinueIsAnsweredBeforeTheBody) {
  Running r;
  for (const char* route : {"POST /echo", "PUT /blob"}) {
    Conn c(r.port());
    c.send(std::string(route) + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    auto cont = c.answer();
    EXPECT_EQ(cont.result_int(), 100u) << route;
    c.send("wxyz");
    auto res = c.answer();
    EXPECT_EQ(res.result_int(), 200u) << route;
    EXPECT_EQ(res.body(), std::string(route) == "POST /echo" ? "wxyz" : blob_answer("wxyz"));
  }
}

TEST(Http, APeerThatHangsUpMidAnswerDoesNotHurtTheServer) {
  Running r({}, [](Server& s) { s.route("GET", "/big", [](const Request&, Response& res) { res.set_content(std::string(32 << 20, 'b'), "text/plain"); }); });
  for (int i = 0; i < 3; ++i) {
    asio::io_context io;
    tcp::socket sock(io);
    sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(r.port())));
    asio::write(sock, asio::buffer(std::string("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")));
    char first[1024];
    sock.read_some(asio::buffer(first));  // the answer has begun
    sock.set_option(asio::socket_base::linger(true, 0));
    sock.close();  // reset: the server's next write fails (EPIPE/ECONNRESET, never SIGPIPE)
  }
  Conn c(r.port());
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 200u);
}

TEST(Http, BindReportsAPortInUseAndAcceptsIpv6Brackets) {
  Running r;
  Server other(ServerOptions{});
  try {
    other.bind("127.0.0.1", r.port());
    ADD_FAILURE() << "bound a port in use";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(r.port())), std::string::npos) << e.what();
  }
  Server v6(ServerOptions{});
  try {
    EXPECT_GT(v6.bind("[::1]", 0), 0);
  } catch (const Error& e) {
    GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
  }
}

TEST(Http, TlsServesTheSameRoutesAndRefusesAnUnusableCertificate) {
  TempDir dir;
  std::string cert = (dir.path() / "cert.pem").string(), key = (dir.path() / "key.pem").string();
  testing::run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-days", "2", "-keyout", key,
                        "-out", cert});
  ServerOptions o;
  o.tls_cert = cert;
  o.tls_key = key;
  Running r(o);
  asio::io_context io;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file(cert);
  ctx.set_verify_mode(asio::ssl::verify_peer);
  asio::ssl::stream<tcp::socket> s(io, ctx);
  s.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(r.port())));
  s.handshake(asio::ssl::stream_base::client);
  beast::flat_buffer buf;
  std::string body = random_bytes(3 << 20, 4);
  for (int i = 0; i < 2; ++i) {
    asio::write(s, asio::buffer(put_blob(body)));
    bhttp::response<bhttp::string_body> res;
    bhttp::read(s, buf, res);
    EXPECT_EQ(res.result_int(), 200u) << res.body();
    EXPECT_EQ(res.body(), blob_answer(body));
  }

  ServerOptions bad;
  bad.tls_cert = (dir.path() / "missing.pem").string();
  bad.tls_key = key;
  try {
    Server s2(bad);
    ADD_FAILURE() << "accepted a missing certificate";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("missing.pem"), std::string::npos) << e.what();
  }
}

// Requests held in a handler until released: connections that are busy, not waiting for their headers.
class Gate {
 public:
  void pass() {
    std::unique_lock lock(mu_);
    ++inside_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  bool inside(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 30s, [&] { return inside_ >= n; });
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // GET /hold waits at the gate.
  std::function<void(Server&)> route() {
    return [this](Server& s) { s.route("GET", "/hold", [this](const Request&, Response& res) { pass(); res.set_content("held", "text/plain"); }); };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
  bool open_ = false;
};

// Opens the gate when the test ends, also when it fails early (the server's stop waits for held requests).
struct Opens {
  Gate& gate;
  ~Opens() { gate.release(); }
};

// A connection that has been served once, then sent part of its next request's headers: established, and waiting.
// The server's thread starts waiting once it has written the answer, a moment after the client has it: a pause
// keeps connections made one after another waiting in that order (shedding goes by it).
std::unique_ptr<Conn> waiting_conn(int port, const std::string& source = "127.0.0.1") {
  auto c = std::make_unique<Conn>(port, source);
  c->send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c->answer().result_int(), 200u);
  c->send("GET /hello HTTP/1.1\r\nHost: x\r\n");
  std::this_thread::sleep_for(100ms);
  return c;
}

ServerOptions patient() {  // timeouts far beyond any test's waits: only the mechanism under test closes connections
  ServerOptions o;
  o.idle_timeout = 120s;
  o.header_timeout = 120s;
  return o;
}

TEST(Http, AnAddressOverItsLimitIsTurnedAwayWhileItsConnectionsAreBusyAndOthersAreServed) {
  Gate gate;
  ServerOptions o = patient();
  o.max_connections_per_address = 2;
  Running r(o, gate.route());
  Opens opens{gate};
  Conn a(r.port()), b(r.port());
  a.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  b.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(gate.inside(2));
  Conn third(r.port());
  auto res = third.answer();
  EXPECT_EQ(res.result_int(), 503u) << "a third connection from 127.0.0.1 was taken: " << res.body();
  EXPECT_EQ(res["Retry-After"], "1");
  EXPECT_TRUE(third.closed_within(10s));
  Conn other(r.port(), "127.0.0.2");
  other.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(other.answer().result_int(), 200u) << "another address is served";
  gate.release();
  EXPECT_EQ(a.answer().body(), "held");
  EXPECT_EQ(b.answer().body(), "held");
}

TEST(Http, ANewConnectionTakesThePlaceOfItsAddressesOldestStillWaitingForHeaders) {
  ServerOptions o = patient();
  o.max_connections_per_address = 2;
  Running r(o);
  auto oldest = waiting_conn(r.port());
  auto newer = waiting_conn(r.port());
  auto elsewhere = waiting_conn(r.port(), "127.0.0.3");  // older than both, but another address's
  Conn fresh(r.port());
  fresh.send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: fresh\r\n\r\n");
  EXPECT_EQ(fresh.answer().body(), "hello fresh");
  EXPECT_TRUE(oldest->closed_within(10s)) << "the oldest waiting connection of 127.0.0.1 was not shed";
  newer->send("X-Name: newer\r\n\r\n");
  EXPECT_EQ(newer->answer().body(), "hello newer") << "only the oldest is shed";
  elsewhere->send("X-Name: elsewhere\r\n\r\n");
  EXPECT_EQ(elsewhere->answer().body(), "hello elsewhere");
}

TEST(Http, NearTheConnectionLimitTheConnectionsStillWaitingForHeadersAreShedOldestFirst) {
  Gate gate;
  ServerOptions o = patient();
  o.max_connections = 8;  // shedding starts with the 8th (8 - 8/8 = 7 are kept)
  Running r(o, gate.route());
  Opens opens{gate};
  Conn busy(r.port());
  busy.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(gate.inside(1));
  std::vector<std::unique_ptr<Conn>> waiting;
  for (int i = 0; i < 6; ++i) waiting.push_back(waiting_conn(r.port(), "127.0.0." + std::to_string(10 + i)));
  // 7 open: the next two each take the place of the oldest connection still waiting.
  Conn eighth(r.port(), "127.0.0.20");
  eighth.send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: 8\r\n\r\n");
  EXPECT_EQ(eighth.answer().body(), "hello 8");
  EXPECT_TRUE(waiting[0]->closed_within(10s)) << "the oldest waiting connection was not shed";
  Conn ninth(r.port(), "127.0.0.21");
  ninth.send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: 9\r\n\r\n");
  EXPECT_EQ(ninth.answer().body(), "hello 9");
  EXPECT_TRUE(waiting[1]->closed_within(10s)) << "the next oldest was not shed";
  waiting[2]->send("X-Name: 2\r\n\r\n");
  EXPECT_EQ(waiting[2]->answer().body(), "hello 2") << "younger waiting connections stay";
  gate.release();
  EXPECT_EQ(busy.answer().body(), "held") << "a busy connection is never shed";
}

TEST(Http, AfterARefusalTheUnreadBodyIsDrainedForTwoSecondsAtMostHoweverItTrickles) {
  Running r(patient());
  Conn c(r.port());
  c.send("POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 404u);
  EXPECT_TRUE(closed_while_trickling(c, 20s)) << "a body trickling after its refusal held the connection for 20 s";
}

TEST(Http, ABodyBelowTheMinimumRateIsCutOffOnceTheGraceIsOver) {
  ServerOptions o;
  o.min_body_rate = 1000;
  o.body_grace = 1s;  // and read_timeout stays 120 s: each byte comes long before it
  Running r(o);
  for (const char* route : {"POST /echo", "PUT /blob"}) {
    Conn c(r.port());
    c.send(std::string(route) + " HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    // About 3 bytes a second, forever if allowed: the body has earned no time beyond the grace.
    bool closed = closed_while_trickling(c, 20s);
    if (!closed) ADD_FAILURE() << route << ": a 3 B/s body was not cut off in 20 s";
  }
  // A body well above the minimum rate, slower than the grace, goes through.
  Conn c(r.port());
  std::string body = random_bytes(30000, 5);
  std::string wire = put_blob(body);
  size_t header = wire.size() - body.size();
  c.send(wire.substr(0, header));
  for (size_t at = header; at < wire.size(); at += 2000) {
    c.send(wire.substr(at, 2000));
    std::this_thread::sleep_for(100ms);  // 20 KB/s: 20 times the minimum, 1.5 s in all
  }
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_EQ(res.body(), blob_answer(body));
}

TEST(Http, AdmissionRefusesOnTheHeadersBeforeAnyOfTheBodyIsRead) {
  std::atomic<int> handled{0};
  auto admit = [](Request& req, Response& res) {
    if (req.header("X-Key") == "good") {
      req.context = std::string("key good");
      return Admission::kAuthenticated;
    }
    res.status = 401;
    res.set_content("who are you?", "text/plain");
    return Admission::kRefused;
  };
  Running r({}, [&](Server& s) {
    s.route("POST", "/guarded", [&](const Request& req, Response& res) {
      ++handled;
      res.set_content(std::any_cast<std::string>(req.context) + ": " + std::to_string(req.body.size()), "text/plain");
    }, size_t{1} << 30, admit);
    s.stream_route("PUT", "/guarded", [&](const Request&, Response& res, const BodyReader&) {
      ++handled;
      res.set_content("streamed", "text/plain");
    }, size_t{1} << 30, admit);
  });
  for (std::string route : {"POST /guarded", "PUT /guarded"}) {
    for (std::string expect : {"", "Expect: 100-continue\r\n"}) {
      Conn c(r.port());
      // 512 MiB announced, not a byte of it sent: the answer can only come from the headers.
      c.send(route + " HTTP/1.1\r\nHost: x\r\nContent-Length: 536870912\r\n" + expect + "\r\n");
      ASSERT_TRUE(c.readable_within(30s)) << route << ": no answer without the body";
      auto res = c.answer();
      EXPECT_EQ(res.result_int(), 401u) << route << " " << expect << ": a 100 Continue or the handler's answer instead of the refusal";
      EXPECT_EQ(res.body(), "who are you?");
      EXPECT_FALSE(res.keep_alive()) << "the unread body closes the connection";
    }
  }
  EXPECT_EQ(handled, 0);
  Conn c(r.port());
  c.send("POST /guarded HTTP/1.1\r\nHost: x\r\nX-Key: good\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(c.answer().body(), "key good: 5") << "what admission leaves in the context reaches the handler";
}

// The process's virtual size: what it has asked the kernel for, touched or not.
uint64_t vm_size() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  return 0;
}

TEST(Http, ABodyIsNotGivenMemoryByItsContentLength) {
  Running r({}, [](Server& s) { s.route("POST", "/huge", [](const Request& req, Response& res) { res.set_content(std::to_string(req.body.size()), "text/plain"); }, size_t{8} << 30); });
  uint64_t before = vm_size();
  Conn c(r.port());
  c.send("POST /huge HTTP/1.1\r\nHost: x\r\nContent-Length: 4294967296\r\n\r\n" + std::string(1000, 'x'));
  // Memory reserved for the announced 4 GiB would show at once; watch for a second while the body waits.
  uint64_t most = before;
  for (int i = 0; i < 20; ++i) {
    most = std::max(most, vm_size());
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_LT(most, before + (uint64_t{1} << 30)) << "the server took memory for a body it has not received";
}

TEST(Http, UnauthenticatedBodiesBeyondTheBudgetAreRefusedWith503AndAuthenticatedOnesAreNot) {
  ServerOptions o;
  o.unauthenticated_body_budget = 1 << 20;
  Running r(o, [](Server& s) {
    s.route("POST", "/signed", [](const Request& req, Response& res) { res.set_content(std::to_string(req.body.size()), "text/plain"); }, 0,
            [](Request&, Response&) { return Admission::kAuthenticated; });
  });
  // 900 KiB of a 1000 KiB body, held: most of the budget.
  Conn holder(r.port());
  holder.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1024000\r\n\r\n" + std::string(900 << 10, 'h'));
  // Another 300 KiB does not fit beside it, once the server has read the holder's bytes. (Read them first: a second
  // body charged while the holder's still arrive would make both over budget, which is right but not this test.)
  std::this_thread::sleep_for(1s);
  std::string second = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 307200\r\n\r\n" + std::string(300 << 10, 's');
  unsigned status = 0;
  std::string retry_after;
  for (int i = 0; i < 100 && status != 503; ++i) {
    Conn c(r.port());
    c.send(second);
    auto res = c.answer();
    status = res.result_int();
    retry_after = std::string(res["Retry-After"]);
    if (status != 503) std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(status, 503u) << "the budget for unauthenticated bodies was not enforced";
  EXPECT_EQ(retry_after, "1");
  Conn signed_(r.port());
  signed_.send("POST /signed HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + std::string(2 << 20, 'a'));
  EXPECT_EQ(signed_.answer().body(), "2097152") << "an authenticated body is not charged";
  holder.send(std::string(100 << 10, 'h'));
  EXPECT_EQ(holder.answer().body().size(), 1024000u);
  Conn after(r.port());
  after.send(second);
  EXPECT_EQ(after.answer().result_int(), 200u) << "the holder's share came back when it was answered";
}

TEST(Http, AnExceptionOfAnyTypeFromAHandlerOrAHookIsA500) {
  Running r({}, [](Server& s) {
    s.route("GET", "/int", [](const Request&, Response&) { throw 42; });
    s.route("GET", "/hook", [](const Request&, Response&) {}, 0, [](Request&, Response&) -> Admission { throw std::runtime_error("hook broke"); });
  });
  Conn c(r.port());
  for (const char* path : {"/int", "/hook"}) {
    c.send(std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(c.answer().result_int(), 500u) << path;
  }
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.answer().result_int(), 200u);
}

TEST(Http, APathTooLongToMatchSafelyGets414) {
  ServerOptions o;
  o.max_header = 256 * 1024;
  Running r(o);
  Conn c(r.port());
  // libstdc++'s regex recurses per character: matching this against /items/([a-z]+)/(\d+) overflows the stack.
  c.send("GET /items/" + std::string(100000, 'a') + "/1 HTTP/1.1\r\nHost: x\r\n\r\n");
  auto res = c.answer();
  EXPECT_EQ(res.result_int(), 414u);
  Conn after(r.port());
  after.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(after.answer().result_int(), 200u) << "the server survives";
}

TEST(Http, ServeBytesRunsTheTransportInMemory) {
  Running r;
  std::string out = r.server().serve_bytes("GET /hello HTTP/1.1\r\nHost: x\r\nX-Name: a\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\n"
                                           "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n",
                                           7);
  EXPECT_NE(out.find("hello a"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\n\r\nabc"), std::string::npos) << out;
  EXPECT_NE(out.find("404 Not Found"), std::string::npos) << out;
}

}  // namespace
}  // namespace ferry::api::http
