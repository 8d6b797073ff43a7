// The API on top of the HTTP transport (api/http.h): SigV4 authentication, the JSON 1.1 dispatch, error bodies,
// and the connector endpoints (wire protocol v1, docs/formats.md).
#include "api/server.h"

#include <algorithm>
#include <any>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

#include "api/buffer_pool.h"
#include "api/http.h"
#include "api/internal.h"
#include "auth/sigv4.h"
#include "common/hex.h"
#include "common/log.h"

namespace ferry::api {

using service::OperationError;

namespace {

constexpr const char* kJson11 = "application/x-amz-json-1.1";
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min(), kInt64Max = std::numeric_limits<int64_t>::max();

std::string error_type_for(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::kInvalidArgument: return "InvalidParameterException";
    case ErrorKind::kNotFound: return "InvalidParameterException";
    case ErrorKind::kConflict: return "OperationNotPermittedException";
    case ErrorKind::kUnauthorized: return "UnauthorizedOperationException";
    case ErrorKind::kUnsupported: return "OperationNotPermittedException";
    default: return "InternalError";
  }
}

// An SMS error answer. The message may echo what a caller sent (an Authorization header, an X-Amz-Target, a parser's
// "last read" bytes): invalid UTF-8 in it is replaced, where a plain dump() would throw and the answer become a 500.
void send_error(http::Response& res, const std::string& type, int status, const std::string& message) {
  res.status = status;
  res.set_header("x-amzn-ErrorType", type);
  res.set_content(json{{"__type", type}, {"message", message}}.dump(-1, ' ', false, json::error_handler_t::replace), kJson11);
}

// Headers every AWS answer carries. The SDKs read both: a client whose clock is off corrects it from Date and
// signs its retry with the server's time (clock skew); the request id goes into the SDK's $metadata.
void aws_response_headers(http::Response& res) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[40];
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);  // RFC 7231 IMF-fixdate, C locale
  res.set_header("Date", date);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng(), b = rng();
  char id[40];
  std::snprintf(id, sizeof id, "%08x-%04x-4%03x-%04x-%012llx", static_cast<unsigned>(a >> 32), static_cast<unsigned>(a >> 16) & 0xffff,
                static_cast<unsigned>(a) & 0xfff, static_cast<unsigned>(b >> 48 & 0x3fff) | 0x8000,
                static_cast<unsigned long long>(b & 0xffffffffffffULL));
  res.set_header("x-amzn-RequestId", id);
}

auth::Request auth_request(const http::Request& req) {
  auth::Request a;
  a.method = req.method;
  auto q = req.target.find('?');
  a.path = req.target.substr(0, q);
  if (q != std::string::npos) a.query = req.target.substr(q + 1);
  for (auto& [k, v] : req.headers) a.headers.emplace_back(k, v);
  a.body = req.body;
  return a;
}

// Body limits per route: what a legitimate request can need. Before a request is authenticated the server holds at
// most its headers; its body, if the headers cannot prove who sent it, is read as it arrives under the transport's
// budget for unauthenticated bodies (docs/architecture.md lists what each route may hold before authentication).
constexpr uint64_t kMaxPack = uint64_t{1} << 30;       // packs, index files, snapshots (a large disk's chunk table)
constexpr size_t kApiBody = size_t{16} << 20;           // SMS and ferry JSON operations
constexpr size_t kSmallBody = size_t{1} << 20;          // connector calls with small JSON bodies
constexpr size_t kInventoryBody = size_t{256} << 20;    // an inventory report (~1 KB per VM)
constexpr size_t kRegisterBody = size_t{64} << 10;      // registration, the one unsigned call; also the default
constexpr size_t kLookupBody = service::Service::kMaxLookupIds * 32;  // a chunk lookup

// Refused authentications are logged, but a flood of them must not flood the log: at most 10 lines a second; the
// ones left out are counted in the next line written.
class RefusalLog {
 public:
  void warn(const std::string& line) {
    std::unique_lock lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - window_ >= std::chrono::seconds(1)) {
      window_ = now;
      written_ = 0;
    }
    if (written_ == kPerSecond) {
      ++left_out_;
      return;
    }
    ++written_;
    uint64_t left_out = std::exchange(left_out_, 0);
    lock.unlock();
    if (left_out) spdlog::warn("{} (and {} other refusals not logged)", line, left_out);
    else spdlog::warn("{}", line);
  }

 private:
  static constexpr int kPerSecond = 10;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_;
  int written_ = 0;
  uint64_t left_out_ = 0;
};

// What a signed route's admission learned from the request's headers (http::Request::context), for its handler.
struct Admitted {
  catalog::AccessKey key;
  std::optional<auth::Verified> verified;  // the signature, checked from the headers: the body must match its hash
};

}  // namespace

struct HttpServer::Impl {
  Impl(service::Service& s, ListenOptions o) : svc(s), options(std::move(o)), pack_buffers(pool_options(options)) {}
  service::Service& svc;
  ListenOptions options;
  std::unique_ptr<http::Server> http;
  // Page-aligned buffers for pack bodies, reused across uploads: about as many as uploads run at once, instead of
  // one per HTTP thread, and never more than options.pack_buffer_bytes (api/buffer_pool.h).
  BufferPool pack_buffers;
  RefusalLog refusals;

  static BufferPool::Options pool_options(const ListenOptions& o) {
    BufferPool::Options p;
    p.max_bytes = o.pack_buffer_bytes;
    return p;
  }

  // A signature made for one API is not accepted by the other: the credential scope names the service of the role's
  // routes ("sms" for the SMS and ferry operations, "ferry-connector" for the connector protocol).
  static auth::VerifyOptions verify_options(const std::string& role) {
    auth::VerifyOptions options;
    options.service = role == "admin" ? "sms" : "ferry-connector";
    return options;
  }

  // auth::verify's secret lookup, keeping the key it found.
  auth::SecretLookup secrets(std::optional<catalog::AccessKey>& key) {
    return [this, &key](const std::string& id) -> std::optional<std::string> {
      key = svc.access_key(id);
      if (!key) return std::nullopt;
      return key->secret;
    };
  }

  void refuse(const http::Request& req, http::Response& res, const std::string& code, int status, const std::string& message) {
    refusals.warn(req.method + " " + req.path + " from " + req.remote_addr + ": " + code + ": " + message);
    send_error(res, code, status, message);
  }

  // HTTP 400, as AWS's JSON services answer AccessDeniedException (403 is for a missing or unknown token).
  bool has_role(const http::Request& req, http::Response& res, const catalog::AccessKey& key, const std::string& role) {
    if (key.role == role) return true;
    refuse(req, res, "AccessDeniedException", 400, "access key " + key.id + " is a " + key.role + " key; this needs a " + role + " key");
    return false;
  }

  // A signed route's admission (http::Admit): runs on the headers alone, before any byte of the body is read.
  // A request that carries its body's SHA-256 in x-amz-content-sha256 (ferry's clients always do; so may an object
  // upload's UNSIGNED-PAYLOAD) is verified whole: signature, key and role; its body is then only compared with that
  // hash. One without it (the AWS SDKs' JSON calls) can be checked only up to its signature, which covers the body:
  // Authorization well formed, date within the allowed skew, key known and of the route's role; its body is read
  // under the transport's budget for unauthenticated bodies, then verified with it. An object upload (`object`) must
  // carry the hash or UNSIGNED-PAYLOAD, since its handler takes a buffer the size of its Content-Length.
  http::Admission admit(http::Request& req, http::Response& res, const std::string& role, bool object) {
    std::optional<catalog::AccessKey> key;
    auth::VerifyOptions options = verify_options(role);
    options.headers_only = true;
    options.allow_unsigned_payload = object;
    try {
      auto verified = auth::verify(auth_request(req), secrets(key), std::chrono::system_clock::now(), options);
      if (!has_role(req, res, *key, role)) return http::Admission::kRefused;
      req.context = Admitted{*key, verified};
      return http::Admission::kAuthenticated;
    } catch (const auth::AuthError& e) {
      // verify() looks the key up after every other check of the headers, so a request without
      // x-amz-content-sha256 whose key was found failed only for want of that hash, which its body will give.
      if (object || !key || req.has_header("x-amz-content-sha256")) {
        refuse(req, res, e.code(), e.http_status(), e.what());
        return http::Admission::kRefused;
      }
    }
    if (!has_role(req, res, *key, role)) return http::Admission::kRefused;
    req.context = Admitted{*key, std::nullopt};
    return http::Admission::kUnauthenticated;
  }

  http::Admit signed_by(const std::string& role, bool object = false) {
    return [this, role, object](http::Request& req, http::Response& res) { return admit(req, res, role, object); };
  }

  // After the body: the key that signed the request, or nullopt with the refusal written. A request whose signature
  // admission verified needs only its body to match the hash it declared; any other (admitted without that hash, or
  // on a route without admission) is verified whole.
  std::optional<catalog::AccessKey> authenticate(const http::Request& req, http::Response& res, const std::string& role, std::string_view body) {
    if (auto* admitted = std::any_cast<Admitted>(&req.context); admitted && admitted->verified) {
      if (auth::body_matches(*admitted->verified, body)) return admitted->key;
      refuse(req, res, "InvalidSignatureException", 400, "The provided 'x-amz-content-sha256' header does not match what was computed.");
      return std::nullopt;
    }
    try {
      std::optional<catalog::AccessKey> key;
      auth::Request a = auth_request(req);
      a.body = body;
      auth::verify(a, secrets(key), std::chrono::system_clock::now(), verify_options(role));
      if (!has_role(req, res, *key, role)) return std::nullopt;
      return key;
    } catch (const auth::AuthError& e) {
      refuse(req, res, e.code(), e.http_status(), e.what());
      return std::nullopt;
    }
  }

  // Runs a handler, mapping exceptions to error answers.
  void guarded(http::Response& res, const std::string& what, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const OperationError& e) {
      int status = e.type() == "InternalError" ? 500 : 400;
      send_error(res, e.type(), status, e.what());
    } catch (const json::exception& e) {
      send_error(res, "SerializationException", 400, std::string("malformed JSON: ") + e.what());
    } catch (const Error& e) {
      std::string type = error_type_for(e);
      if (type == "InternalError") spdlog::error("{}: {}", what, e.what());
      send_error(res, type, type == "InternalError" ? 500 : 400, e.what());
    } catch (const std::exception& e) {
      spdlog::error("{}: {}", what, e.what());
      send_error(res, "InternalError", 500, e.what());
    }
  }

  void json_api(const http::Request& req, http::Response& res) {
    std::string target = req.header("X-Amz-Target");
    if (!authenticate(req, res, "admin", req.body)) return;
    auto& ops = operations();
    auto it = ops.find(target);
    if (it == ops.end()) {
      send_error(res, "UnknownOperationException", 400, "unknown operation '" + target + "'");
      return;
    }
    std::string op = target.substr(target.find('.') + 1);
    guarded(res, op, [&] {
      json in = parse_request(req.body);
      json out = it->second(svc, in);
      res.set_content(out.dump(), kJson11);
    });
  }

  // The connector endpoints: authenticate, then run fn with the connector id.
  void connector_route(const std::string& method, const std::string& pattern,
                       std::function<void(const std::string&, const http::Request&, http::Response&)> fn, size_t max_body = kSmallBody) {
    auto handler = [this, fn](const http::Request& req, http::Response& res) {
      auto key = authenticate(req, res, "connector", req.body);
      if (!key) return;
      guarded(res, req.method + " " + req.path, [&] { fn(key->connector_id, req, res); });
    };
    http->route(method, pattern, handler, max_body, signed_by("connector"));
  }

  // A connector's object upload route (pack, index file, snapshot). These are sealed objects that authenticate
  // themselves (a pack's trailer under its name, every blob under its chunk id, index files and snapshots whole), so
  // they may be sent UNSIGNED-PAYLOAD: hashing them for SigV4 would only cost CPU. Either way the request is
  // authenticated from its headers (signed_by(..., object)) before any memory is given to its body; a signed body
  // is compared with its hash once read. The body goes into a pooled page-aligned buffer (`pooled`, for packs; 503
  // when the pool is spent) or a string.
  void object_route(const std::string& pattern, const std::string& what,
                    std::function<void(const std::string&, const http::Request&, char*, size_t)> fn, bool pooled = false) {
    auto handler = [this, what, fn, pooled](const http::Request& req, http::Response& res, const http::BodyReader& read) {
      uint64_t length = req.content_length;  // at most kMaxPack: larger bodies got 413
      std::optional<BufferPool::Lease> lease;
      std::string box;
      char* dst;
      if (pooled) {
        lease = pack_buffers.try_take(length);
        if (!lease) {
          send_error(res, "ServiceUnavailableException", 503,
                     "the server is receiving as many packs as its memory for them allows (" + std::to_string(options.pack_buffer_bytes >> 20) +
                         " MiB); retry");
          res.set_header("Retry-After", "1");
          return;
        }
        dst = lease->data();
      } else {
        box.resize(length);
        dst = box.data();
      }
      if (!read(dst, length))
        return send_error(res, "InvalidParameterException", 400, what + " body is not Content-Length (" + std::to_string(length) + ") bytes long");
      std::string_view body(dst, length);
      auto key = authenticate(req, res, "connector", body);
      if (!key) return;
      guarded(res, "PUT " + what, [&] {
        fn(key->connector_id, req, dst, length);
        res.set_content("{}", "application/json");
      });
    };
    http->stream_route("PUT", pattern, handler, kMaxPack, signed_by("connector", true));
  }

  static json body_json(const http::Request& req) { return parse_request(req.body); }

  void routes() {
    // "ok", or "degraded" and one line per problem an operator must act on (a full store, an unusable store). Always
    // 200: the process is up and serving; the body says what needs attention.
    http->route("GET", "/health", [this](const http::Request&, http::Response& res) {
      std::string body = "ok\n";
      try {
        auto problems = svc.problems();
        if (!problems.empty()) {
          body = "degraded\n";
          for (auto& p : problems) body += p + "\n";
        }
      } catch (const std::exception& e) {
        body = std::string("degraded\n") + e.what() + "\n";
      }
      res.set_content(body, "text/plain");
    });
    http->route("POST", "/", [this](const http::Request& req, http::Response& res) { json_api(req, res); }, kApiBody, signed_by("admin"));

    http->route("POST", "/connector/v1/register", [this](const http::Request& req, http::Response& res) {
      guarded(res, "register", [&] {
        json in = body_json(req);
        std::string token = in.value("token", "");
        if (token.empty()) throw OperationError("MissingRequiredParameterException", "token is required");
        auto info = connector_info_from(in);
        info.ip_address = req.remote_addr;
        auto r = svc.register_connector(token, info);
        res.set_content(json{{"connectorId", r.connector_id}, {"accessKeyId", r.access_key_id}, {"secretAccessKey", r.secret_access_key}}.dump(),
                        "application/json");
      });
    }, kRegisterBody);
    connector_route("POST", "/connector/v1/heartbeat", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      json in = body_json(req);
      service::ConnectorHas has;
      has.running = in.value("running", std::vector<std::string>{});
      has.inventory_reported = opt_int(in, "inventoryReported", 0, kInt64Max).value_or(0);
      has.wait = std::chrono::milliseconds(std::clamp<int64_t>(opt_int(in, "waitMs", kInt64Min, kInt64Max).value_or(0), 0, 60000));
      auto w = svc.heartbeat(cid, connector_info_from(in), req.remote_addr, has);
      res.set_content(json{{"inventoryRequested", w.inventory_requested}, {"runs", w.runs}, {"disassociated", w.disassociated}}.dump(),
                      "application/json");
    });
    connector_route("POST", "/connector/v1/inventory", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      json in = body_json(req);
      std::vector<catalog::Server> servers;
      for (auto& s : in.at("servers")) servers.push_back(server_from_report(s));
      auto generation = opt_int(in, "generation", 0, kInt64Max);
      if (!generation) throw OperationError("MissingRequiredParameterException", "generation is required");
      svc.report_inventory(cid, *generation, std::move(servers));
      res.set_content("{}", "application/json");
    }, kInventoryBody);
    connector_route("POST", R"(/connector/v1/runs/([\w-]+)/begin)", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      auto t = svc.begin_run(cid, req.matches[1]);
      json completed = json::array(), parents = json::array();
      for (auto& d : t.completed) completed.push_back({{"name", d.name}, {"snapshotId", d.snapshot_id}, {"size", d.size}});
      for (auto& [disk, snap] : t.parents) parents.push_back({{"name", disk}, {"snapshotId", snap}});
      json server = server_json(t.server);
      const auto& c = t.store_config;
      json out = {{"runId", t.run_id},
                  {"jobId", t.job_id},
                  {"server", server},
                  {"store", t.store},
                  {"storeConfig", {{"id", c.id}, {"chunkSize", c.chunk_size}, {"packSize", c.pack_size}, {"zstdLevel", c.zstd_level}}},
                  {"idKey", to_hex(t.id_key)},
                  {"completed", completed},
                  {"parents", parents}};
      res.set_content(out.dump(), "application/json");
    });
    connector_route("GET", R"(/connector/v1/runs/([\w-]+)/parents/([0-9a-f]+))", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      res.set_content(svc.parent_snapshot(cid, req.matches[1], req.matches[2]), "application/octet-stream");
    });
    // Which of the chunk ids in the body (32 bytes each) the run's store lacks: one bit per id, lowest bit first.
    connector_route("POST", R"(/connector/v1/runs/([\w-]+)/lookup)", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      if (req.body.size() % 32) throw OperationError("InvalidParameterException", "a lookup body is chunk ids of 32 bytes each");
      std::vector<store::ChunkId> ids(req.body.size() / 32);
      for (size_t i = 0; i < ids.size(); i++) std::memcpy(ids[i].bytes.data(), req.body.data() + 32 * i, 32);
      auto lacking = svc.lookup_chunks(cid, req.matches[1], ids);
      std::string bits((lacking.size() + 7) / 8, '\0');
      for (size_t i = 0; i < lacking.size(); i++)
        if (lacking[i]) bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
      res.set_content(std::move(bits), "application/octet-stream");
    }, kLookupBody);
    // Packs: the body goes from the socket straight into a page-aligned buffer sized from Content-Length and taken
    // from a pool (large reads, no copy; aligned memory lets the store write it with O_DIRECT, without another copy).
    object_route(R"(/connector/v1/runs/([\w-]+)/packs/([0-9a-f]+))", "pack", [this](const std::string& cid, const http::Request& req, char* data, size_t size) {
      svc.receive_pack(cid, req.matches[1], req.matches[2], data, size);
    }, true);
    object_route(R"(/connector/v1/runs/([\w-]+)/snapshots/([0-9a-f]+))", "snapshot", [this](const std::string& cid, const http::Request& req, char* data, size_t size) {
      std::string disk = req.header("X-Ferry-Disk");
      if (disk.empty()) throw OperationError("MissingRequiredParameterException", "header X-Ferry-Disk is required");
      svc.receive_snapshot(cid, req.matches[1], disk, req.matches[2], std::string_view(data, size));
    });
    connector_route("POST", R"(/connector/v1/runs/([\w-]+)/progress)", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      json in = body_json(req);
      service::RunProgress p;
      p.stage = in.value("stage", "");
      p.percent = static_cast<int>(opt_int(in, "percent", std::numeric_limits<int>::min(), std::numeric_limits<int>::max()).value_or(0));
      p.bytes_total = static_cast<uint64_t>(opt_int(in, "bytesTotal", 0, kInt64Max).value_or(0));
      p.bytes_done = static_cast<uint64_t>(opt_int(in, "bytesDone", 0, kInt64Max).value_or(0));
      bool go_on = svc.run_progress(cid, req.matches[1], p);
      res.set_content(json{{"continue", go_on}}.dump(), "application/json");
    });
    connector_route("POST", R"(/connector/v1/runs/([\w-]+)/complete)", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      res.set_content(json{{"imageId", svc.complete_run(cid, req.matches[1])}}.dump(), "application/json");
    });
    connector_route("POST", R"(/connector/v1/runs/([\w-]+)/fail)", [this](const std::string& cid, const http::Request& req, http::Response& res) {
      svc.fail_run(cid, req.matches[1], body_json(req).value("message", ""));
      res.set_content("{}", "application/json");
    });
  }
};

HttpServer::HttpServer(service::Service& svc, ListenOptions options) : impl_(std::make_unique<Impl>(svc, std::move(options))) {
  http::ServerOptions o;
  o.tls_cert = impl_->options.tls_cert;
  o.tls_key = impl_->options.tls_key;
  o.max_body = kRegisterBody;  // routes that take more say so
  o.max_connections_per_address = impl_->options.max_connections_per_address;
  o.finish = aws_response_headers;
  o.refusal = [](http::Response& res, int status, const std::string& message) {
    send_error(res, status == 503 ? "ServiceUnavailableException" : status == 404 ? "UnknownOperationException" : "InvalidParameterException",
               status, message);
  };
  impl_->http = std::make_unique<http::Server>(std::move(o));
  impl_->routes();
}

// The transport goes first: its destructor stops it and waits for serve(), and its connections use the pack buffers.
HttpServer::~HttpServer() { impl_->http.reset(); }

std::string HttpServer::bind() {
  const std::string& a = impl_->options.address;
  auto colon = a.rfind(':');
  int port = -1;
  if (colon != std::string::npos && colon + 1 < a.size() && a.find_first_not_of("0123456789", colon + 1) == std::string::npos && a.size() - colon <= 6)
    port = std::stoi(a.substr(colon + 1));
  if (port < 0 || port > 65535) fail(ErrorKind::kInvalidArgument, "listen address '" + a + "' must be host:port");
  std::string host = a.substr(0, colon);
  int bound = impl_->http->bind(host, port);
  return std::string(impl_->options.tls_cert.empty() ? "http" : "https") + "://" + host + ":" + std::to_string(bound);
}

void HttpServer::serve() { impl_->http->serve(); }

void HttpServer::stop() { impl_->http->stop(); }

}  // namespace ferry::api
