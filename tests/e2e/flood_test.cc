// End-to-end: what clients without a valid key can make a real `ferry server` hold. A flood of more than a thousand
// slow connections (trickled headers, trickled bodies, from several client addresses) must not keep /health or a
// signed GetServers from answering, nor grow the server's memory without bound; uploads and calls that are not
// authenticated must be refused on their headers, before the server reads or makes room for their bodies.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <map>
#include <thread>

#include "auth/sigv4.h"
#include "client/client.h"
#include "common/hex.h"
#include "e2e/service.h"
#include "fixtures/fixtures.h"

namespace ferry {
namespace {

using e2e::ServerProcess;
using testing::TempDir;
using namespace std::chrono_literals;
constexpr uint64_t MiB = uint64_t{1} << 20;

// Resident memory of a process (VmRSS in /proc/PID/status), in bytes.
uint64_t rss_of(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  throw std::runtime_error("no VmRSS for process " + std::to_string(pid));
}

int port_of(const ServerProcess& server) { return std::stoi(server.url().substr(server.url().rfind(':') + 1)); }

struct AmzDate {
  std::string stamp, day;  // 20260101T120000Z, 20260101
};
AmzDate amz_date(std::time_t t = std::time(nullptr)) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[20], day[10];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::strftime(day, sizeof day, "%Y%m%d", &tm);
  return {stamp, day};
}

// Headers of a request signed the way ferry's client signs (x-amz-content-sha256 carries the hash of `claimed_body`).
std::string signed_head(const std::string& method, const std::string& path, const auth::Credentials& creds, uint64_t content_length,
                        const std::string& claimed_body = "", std::vector<std::pair<std::string, std::string>> extra = {}) {
  auth::Request r;
  r.method = method;
  r.path = path;
  r.headers = {{"Host", "127.0.0.1"}};
  for (auto& h : extra) r.headers.push_back(h);
  r.body = claimed_body;
  // The credential scope names the API of the route: the SMS API at POST /, the connector protocol elsewhere.
  auth::sign(r, creds, "us-east-1", path == "/" ? "sms" : "ferry-connector", std::chrono::system_clock::now());
  std::string head = method + " " + path + " HTTP/1.1\r\n";
  for (auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
  return head + "Content-Length: " + std::to_string(content_length) + "\r\n\r\n";
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// A JSON 1.1 call signed as botocore (the AWS CLI, boto3) signs one: no x-amz-content-sha256 header, so the body's
// hash is only inside the signature and the server cannot check it before reading the body. Returns the head.
std::string sdk_call_head(const std::string& target, const std::string& body, const std::string& key_id, const std::string& secret,
                          std::time_t when = std::time(nullptr)) {
  AmzDate d = amz_date(when);
  std::map<std::string, std::string> headers = {
      {"content-type", "application/x-amz-json-1.1"}, {"host", "127.0.0.1"}, {"x-amz-date", d.stamp}, {"x-amz-target", target}};
  std::string canonical = "POST\n/\n\n", names;
  for (auto& [k, v] : headers) {
    canonical += k + ":" + v + "\n";
    names += (names.empty() ? "" : ";") + k;
  }
  canonical += "\n" + names + "\n" + auth::sha256_hex(body);
  std::string scope = d.day + "/us-east-1/sms/aws4_request";
  std::string to_sign = "AWS4-HMAC-SHA256\n" + d.stamp + "\n" + scope + "\n" + auth::sha256_hex(canonical);
  std::string key = hmac(hmac(hmac(hmac("AWS4" + secret, d.day), "us-east-1"), "sms"), "aws4_request");
  std::string head = "POST / HTTP/1.1\r\n";
  for (auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  head += "Authorization: AWS4-HMAC-SHA256 Credential=" + key_id + "/" + scope + ", SignedHeaders=" + names +
          ", Signature=" + to_hex(hmac(key, to_sign)) + "\r\n";
  return head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
}

// A blocking loopback connection to the server, closed when destroyed.
class Socket {
 public:
  explicit Socket(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("cannot connect to the server");
    timeval tv{5, 0};  // a send the server no longer reads gives up after this
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  ~Socket() { ::close(fd_); }
  // Sends what it can of `bytes`; false if the server stopped taking them.
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // What the server answers within `limit` (until it has sent a whole answer or closed); "" if nothing came.
  std::string answer(std::chrono::seconds limit) {
    std::string got;
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      pollfd pfd{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&pfd, 1, static_cast<int>(left)) != 1) return got;
      char buf[8192];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return got;
      got.append(buf, static_cast<size_t>(n));
      auto end = got.find("\r\n\r\n");
      auto len = got.find("Content-Length: ");
      if (end != std::string::npos && len != std::string::npos && len < end &&
          got.size() >= end + 4 + std::stoul(got.substr(len + 16)))
        return got;
    }
  }

 private:
  int fd_;
};

// Slow clients, none with a key. Each connection sends the start of a request, then one byte about every second,
// never finishing; those the server closes are opened again at once, as an attacker would. Runs on its own thread
// until destroyed, which closes every connection.
class Flood {
 public:
  struct Group {
    std::string source;  // 127.x.y.z to connect from
    int count;
    std::function<std::string()> opening;  // what each connection sends first
  };

  Flood(int port, std::vector<Group> groups) : port_(port), groups_(std::move(groups)) {
    for (auto& g : groups_)
      for (int i = 0; i < g.count; ++i) slots_.push_back({&g, -1, false});
    thread_ = std::thread([this] { run(); });
  }
  ~Flood() {
    stop_ = true;
    thread_.join();
    for (auto& s : slots_)
      if (s.fd >= 0) ::close(s.fd);
  }
  size_t connected() const { return connected_; }               // now
  size_t closed_by_server() const { return closed_by_server_; }  // so far

 private:
  struct Slot {
    const Group* group;
    int fd;
    bool up;  // connected and its opening sent
  };

  void open(Slot& s) {
    s.up = false;
    s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s.fd < 0) return;
    sockaddr_in from{}, to{};
    from.sin_family = to.sin_family = AF_INET;
    inet_pton(AF_INET, s.group->source.c_str(), &from.sin_addr);
    to.sin_port = htons(static_cast<uint16_t>(port_));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(s.fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
        (::connect(s.fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0 && errno != EINPROGRESS)) {
      ::close(s.fd);
      s.fd = -1;
    }
  }

  void close_slot(Slot& s) {
    ::close(s.fd);
    s.fd = -1;
    s.up = false;
  }

  void run() {
    std::vector<pollfd> pfds;
    for (uint64_t tick = 0; !stop_; ++tick) {
      for (auto& s : slots_)
        if (s.fd < 0) open(s);
      pfds.clear();
      for (auto& s : slots_) pfds.push_back({s.fd, static_cast<short>(s.up ? POLLIN : POLLOUT), 0});
      ::poll(pfds.data(), pfds.size(), 0);
      size_t up = 0;
      for (size_t i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.fd < 0) continue;
        short ev = pfds[i].revents;
        if (!s.up) {
          if (ev & (POLLERR | POLLHUP)) {
            close_slot(s);
          } else if (ev & POLLOUT) {
            std::string first = s.group->opening();
            if (::send(s.fd, first.data(), first.size(), MSG_NOSIGNAL) > 0) s.up = true;
            else close_slot(s);
          }
        } else if (ev & (POLLIN | POLLERR | POLLHUP)) {
          char buf[4096];
          ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);  // an answer (a refusal): read it, the close follows
          if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
            close_slot(s);
            ++closed_by_server_;
          }
        } else if (tick % 10 == i % 10) {
          (void)!::send(s.fd, "a", 1, MSG_NOSIGNAL);  // a byte a second from each
        }
        if (s.up) ++up;
      }
      connected_ = up;
      std::this_thread::sleep_for(100ms);
    }
  }

  int port_;
  std::vector<Group> groups_;
  std::vector<Slot> slots_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> connected_{0}, closed_by_server_{0};
  std::thread thread_;
};

// The openings of the flood's connections.
std::string trickled_headers() { return "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "; }
std::string trickled_registration() {
  return "POST /connector/v1/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n"
         "{\"token\": \"";
}
std::string trickled_pack() {
  return signed_head("PUT", "/connector/v1/runs/r-1/packs/" + std::string(64, 'a'), {"AKCONOBODY0000000000", std::string(40, 's')},
                     uint64_t{1} << 30, "the claimed body");
}
std::string trickled_call() {
  static const std::string head = sdk_call_head("AWSServerMigrationService_V2016_10_24.GetServers", std::string(16 * MiB, '{'),
                                                "AKIANOBODY0000000000", std::string(40, 's'));
  return head;
}

// Raises this process's open-files limit to its hard limit (the server raises its own); false if that is too few.
bool enough_open_files(rlim_t needed) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_max >= needed;
}

client::Profile profile_of(const ServerProcess& server, bool with_key) {
  client::Profile p;
  p.endpoint = server.url();
  if (with_key) {
    p.credentials.access_key_id = server.admin().env().at("AWS_ACCESS_KEY_ID");
    p.credentials.secret_access_key = server.admin().env().at("AWS_SECRET_ACCESS_KEY");
  }
  return p;
}

// Wall time of `call`, which must succeed on a new connection at the first try.
template <class F>
std::chrono::milliseconds timed(F call) {
  auto start = std::chrono::steady_clock::now();
  call();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

TEST(FloodE2E, SlowConnectionsWithoutAKeyLockOutNeitherHealthNorSignedCalls) {
  if (!enough_open_files(4096)) GTEST_SKIP() << "the flood needs 4096 open files (ulimit -Hn)";
  TempDir dir;
  ServerProcess server(dir.path() / "server");
  server.start();
  pid_t pid = server.pid();
  // Each probe is a new client, so a new connection, which must get in; no retries, and a failure within seconds.
  auto health = [&] {
    client::Client c(profile_of(server, false));
    c.set_retry_for(0s);
    c.set_read_timeout(5s);
    auto r = c.send("GET", "/health", "");
    if (r.status != 200) throw std::runtime_error("/health answered " + std::to_string(r.status) + ": " + r.body);
  };
  auto get_servers = [&] {
    client::Client c(profile_of(server, true));
    c.set_retry_for(0s);
    c.set_read_timeout(5s);
    c.sms("GetServers");
  };
  health();
  get_servers();
  uint64_t before = rss_of(pid);

  uint64_t peak = before;
  {
    // 1,300 connections: 500 from 127.0.0.1, twice what one address may hold (most trickle headers; some trickle
    // a registration body, which needs no key; some announce a 1 GiB pack or a 16 MiB call without a valid key), and
    // 100 from each of 127.0.0.2-9, which take the server past 7/8 of its 1,024 connections.
    std::vector<Flood::Group> groups = {{"127.0.0.1", 430, trickled_headers},
                                        {"127.0.0.1", 30, trickled_registration},
                                        {"127.0.0.1", 20, trickled_pack},
                                        {"127.0.0.1", 20, trickled_call}};
    for (int i = 2; i <= 9; ++i) groups.push_back({"127.0.0." + std::to_string(i), 100, trickled_headers});
    Flood flood(port_of(server), groups);
    ASSERT_TRUE(e2e::wait_for([&] { return flood.connected() >= 1030; }, 60s)) << "only " << flood.connected() << " connected";
    // Twelve seconds of probes: past the header timeout (10 s), so the flood's connections are cut and come back.
    std::chrono::milliseconds slowest{};
    for (int round = 0; round < 8; ++round) {
      std::chrono::milliseconds took{};
      ASSERT_NO_THROW(took = timed(health)) << "round " << round;
      EXPECT_LT(took, 1000ms) << "/health, round " << round << ", with " << flood.connected() << " slow connections";
      slowest = std::max(slowest, took);
      ASSERT_NO_THROW(took = timed(get_servers)) << "round " << round;
      EXPECT_LT(took, 1000ms) << "GetServers, round " << round << ", with " << flood.connected() << " slow connections";
      slowest = std::max(slowest, took);
      peak = std::max(peak, rss_of(pid));
      std::this_thread::sleep_for(1500ms);
    }
    EXPECT_GE(flood.connected(), 900u) << "the flood weakened: the probes proved little";
    EXPECT_GT(flood.closed_by_server(), 1000u) << "slow connections were not closed (header timeout, shedding)";
    std::cerr << "flood: " << flood.connected() << " connected at the end, " << flood.closed_by_server() << " closed by the server; slowest probe "
              << slowest.count() << " ms; RSS "
              << (before >> 20) << " MiB before, " << (peak >> 20) << " MiB at most\n";
  }
  // Bound: per connection a thread's touched stack and its request head (16 KiB at most), some 64 KiB in all, for
  // at most 1,024 connections; the unauthenticated bodies the flood can get in (the 32 MiB budget); 32 MiB of slack.
  // (Measured: 16 MiB before, about 45 at most.)
  EXPECT_LT(peak, before + 64 * MiB + 32 * MiB + 32 * MiB) << "RSS grew from " << (before >> 20) << " to " << (peak >> 20) << " MiB";
  // Once the flood is gone, most of that comes back: what stays is glibc's cache of thread stacks and its arenas'
  // free memory (measured: 23 MiB, from 16).
  uint64_t after = 0;
  e2e::wait_for([&] { return (after = rss_of(pid)) < before + 16 * MiB; }, 30s);
  EXPECT_LT(after, before + 16 * MiB) << "RSS stayed at " << (after >> 20) << " MiB after the flood (" << (before >> 20) << " MiB before, "
                                      << (peak >> 20) << " at most)";
  EXPECT_NO_THROW(health());
  EXPECT_TRUE(server.running());
}

TEST(FloodE2E, UploadsAndCallsWithoutAValidKeyAreRefusedOnTheirHeaders) {
  TempDir dir;
  ServerProcess server(dir.path() / "server");
  server.start();
  pid_t pid = server.pid();
  int port = port_of(server);
  std::string admin_id = server.admin().env().at("AWS_ACCESS_KEY_ID"), admin_secret = server.admin().env().at("AWS_SECRET_ACCESS_KEY");
  uint64_t before = rss_of(pid);

  struct Case {
    std::string what, head, error;
  };
  std::string pack = "/connector/v1/runs/r-1/packs/" + std::string(64, 'b');
  std::string get_servers = "AWSServerMigrationService_V2016_10_24.GetServers";
  std::vector<Case> cases = {
      {"a signed 512 MiB pack from an unknown key", signed_head("PUT", pack, {"AKCONOBODY0000000000", std::string(40, 's')}, 512 * MiB, "x"),
       "UnrecognizedClientException"},
      {"a signed 512 MiB pack with a wrong secret", signed_head("PUT", pack, {admin_id, std::string(40, 's')}, 512 * MiB, "x"),
       "InvalidSignatureException"},
      {"a signed 512 MiB pack from the admin's key", signed_head("PUT", pack, {admin_id, admin_secret}, 512 * MiB, "x"), "AccessDeniedException"},
      {"a 16 MiB SDK call from an unknown key", sdk_call_head(get_servers, std::string(16 * MiB, ' '), "AKIANOBODY0000000000", admin_secret),
       "UnrecognizedClientException"},
      {"a 16 MiB SDK call signed an hour ago", sdk_call_head(get_servers, std::string(16 * MiB, ' '), admin_id, admin_secret, std::time(nullptr) - 3600),
       "Signature expired"},
  };
  for (auto& c : cases) {
    Socket s(port);
    ASSERT_TRUE(s.send(c.head));
    std::string answer = s.answer(10s);
    EXPECT_TRUE(e2e::contains(answer, "HTTP/1.1 4")) << c.what << ": no refusal before the body was sent: '" << answer << "'";
    EXPECT_TRUE(e2e::contains(answer, c.error)) << c.what << ": " << answer;
    // The body comes anyway: the server drains a little of it before closing, into no memory of its own.
    std::string piece(4 * MiB, 'p');
    for (int i = 0; i < 64 && s.send(piece); ++i) {
    }
  }
  uint64_t after = rss_of(pid);
  EXPECT_LT(after, before + 32 * MiB) << "RSS grew from " << (before >> 20) << " to " << (after >> 20) << " MiB";

  // A body is still checked against the signature: after the headers when they carry its hash, with it otherwise.
  std::string body = "{}";
  {
    Socket s(port);
    std::string head = sdk_call_head(get_servers, body, admin_id, admin_secret);
    ASSERT_TRUE(s.send(head + body));
    std::string answer = s.answer(30s);
    EXPECT_TRUE(e2e::contains(answer, "HTTP/1.1 200") && e2e::contains(answer, "serverList")) << answer;
  }
  {
    Socket s(port);
    std::string head = sdk_call_head(get_servers, body, admin_id, admin_secret);
    ASSERT_TRUE(s.send(head + "[]"));
    std::string answer = s.answer(30s);
    EXPECT_TRUE(e2e::contains(answer, "InvalidSignatureException")) << "a body other than the signed one: " << answer;
  }
  {
    Socket s(port);
    std::string head = signed_head("POST", "/", {admin_id, admin_secret}, body.size(), body,
                                   {{"X-Amz-Target", get_servers}, {"Content-Type", "application/x-amz-json-1.1"}});
    ASSERT_TRUE(s.send(head + "[]"));
    std::string answer = s.answer(30s);
    EXPECT_TRUE(e2e::contains(answer, "The provided 'x-amz-content-sha256' header does not match what was computed.")) << answer;
  }
  EXPECT_TRUE(server.running());
}

}  // namespace
}  // namespace ferry
