// HTTP client with SigV4 signing and retries, the JSON 1.1 call, and profile resolution.
#include "client/client.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "common/fs.h"

namespace ferry::client {

using nlohmann::json;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string_view trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string_view::npos ? std::string_view() : s.substr(b, e - b + 1);
}

// The sections of a config file: name -> key -> value ("[profile x]" and "[x]" both name x). Every value is wiped
// when the object goes away: the file holds the secret access keys of all its profiles.
struct Ini {
  std::map<std::string, std::map<std::string, std::string>> sections;
  Ini() = default;
  Ini(const Ini&) = delete;
  Ini& operator=(const Ini&) = delete;
  ~Ini() {
    for (auto& [name, kv] : sections)
      for (auto& [key, value] : kv) auth::wipe(value);
  }
};

// Reads the config file at `path` into `ini` (nothing if there is none). The file is read whole into one buffer that
// is wiped after parsing, and parsed in place, so no copy of a secret is left in freed memory.
void read_ini(const std::string& path, Ini& ini) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  std::string text = read_file(path);
  auth::WipeOnExit wipe_text(text);
  std::string_view rest = text;
  std::string section;
  for (int n = 1; !rest.empty(); n++) {
    size_t eol = rest.find('\n');
    std::string_view line = trim(rest.substr(0, eol));
    rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') fail(ErrorKind::kInvalidArgument, path + " line " + std::to_string(n) + ": unterminated section header");
      std::string_view name = trim(line.substr(1, line.size() - 2));
      if (name.starts_with("profile ")) name = trim(name.substr(8));
      section = std::string(name);
      ini.sections[section];
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string_view::npos) fail(ErrorKind::kInvalidArgument, path + " line " + std::to_string(n) + ": expected 'key = value'");
    std::string& value = ini.sections[section][std::string(trim(line.substr(0, eq)))];
    auth::wipe(value);  // a key given twice: the later value wins, the earlier is not left behind
    value.assign(trim(line.substr(eq + 1)));
  }
}

std::string host_of(const std::string& endpoint) {
  auto p = endpoint.find("://");
  std::string rest = p == std::string::npos ? endpoint : endpoint.substr(p + 3);
  auto slash = rest.find('/');
  return slash == std::string::npos ? rest : rest.substr(0, slash);
}

}  // namespace

bool is_loopback_host(std::string_view host) {
  bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';  // an IPv6 literal in a URL
  if (bracketed) host = host.substr(1, host.size() - 2);
  if (!bracketed && host.size() == 9 && strncasecmp(host.data(), "localhost", 9) == 0) return true;
  std::string h(host);  // inet_pton wants a C string
  in_addr v4{};
  if (!bracketed && ::inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, h.c_str(), &v6) != 1) return false;
  return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
}

void require_secure_endpoint(const std::string& endpoint, bool insecure) {
  auto scheme_end = endpoint.find("://");
  std::string scheme = scheme_end == std::string::npos ? "http" : endpoint.substr(0, scheme_end);
  if (strcasecmp(scheme.c_str(), "https") == 0 || insecure) return;
  // The authority: after the scheme, up to the path, query or fragment; the host is after any user info, without
  // the port ("[::1]:8443", "127.0.0.1:8443", or a bare IPv6 address without a port).
  std::string_view authority = endpoint;
  if (scheme_end != std::string::npos) authority.remove_prefix(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  std::string_view host = authority;
  if (authority.starts_with('[')) {
    host = authority.substr(0, authority.find(']') + 1);
  } else if (std::count(authority.begin(), authority.end(), ':') == 1) {
    host = authority.substr(0, authority.find(':'));
  }
  if (is_loopback_host(host)) return;
  fail(ErrorKind::kInvalidArgument,
       "refusing plain HTTP to " + endpoint + ": '" + std::string(host) +
           "' is not a loopback address, and requests to it would carry registration tokens, connector secrets and "
           "disk data in clear text; use an https:// endpoint, or give --insecure-http to accept that");
}

std::string default_config_path() {
  std::string c = env("FERRY_CONFIG");
  if (!c.empty()) return c;
  std::string home = env("HOME");
  return (home.empty() ? std::string(".") : home) + "/.config/ferry/config";
}

Profile resolve_profile(const std::string& profile_name, const Profile& overrides) {
  std::string name = !profile_name.empty() ? profile_name : (!env("FERRY_PROFILE").empty() ? env("FERRY_PROFILE") : "default");
  std::string path = default_config_path();
  Ini ini;
  read_ini(path, ini);
  static const std::map<std::string, std::string> kNoSection;
  auto it = ini.sections.find(name);
  if (it == ini.sections.end() && !profile_name.empty()) fail(ErrorKind::kInvalidArgument, "profile '" + name + "' is not in " + path);
  const auto& section = it == ini.sections.end() ? kNoSection : it->second;
  // Values are copied once, into the profile, from wherever they are found first: no temporary copy of the secret.
  auto pick = [&](std::string& out, const std::string& given, const char* var, const char* key) {
    const char* from_env = std::getenv(var);
    auto in_file = section.find(key);
    if (!given.empty()) out = given;
    else if (from_env && *from_env) out = from_env;
    else if (in_file != section.end()) out = in_file->second;
  };
  Profile p;
  pick(p.endpoint, overrides.endpoint, "FERRY_ENDPOINT", "endpoint");
  pick(p.credentials.access_key_id, overrides.credentials.access_key_id, "AWS_ACCESS_KEY_ID", "aws_access_key_id");
  pick(p.credentials.secret_access_key, overrides.credentials.secret_access_key, "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key");
  p.region.clear();
  pick(p.region, overrides.region, "AWS_REGION", "region");
  if (p.region.empty()) p.region = "us-east-1";
  pick(p.ca_file, overrides.ca_file, "FERRY_CA_FILE", "ca_file");
  p.insecure_http = overrides.insecure_http;
  std::string where = " (give it with a flag, the environment, or profile '" + name + "' in " + path + ")";
  if (p.endpoint.empty()) fail(ErrorKind::kInvalidArgument, "no server endpoint" + where);
  if (p.credentials.access_key_id.empty() || p.credentials.secret_access_key.empty())
    fail(ErrorKind::kInvalidArgument, "no access key" + where);
  while (!p.endpoint.empty() && p.endpoint.back() == '/') p.endpoint.pop_back();
  if (p.endpoint.find("://") == std::string::npos) p.endpoint = "http://" + p.endpoint;
  return p;
}

void save_profile(const std::string& path, const std::string& profile_name, const Profile& profile) {
  Ini ini;
  read_ini(path, ini);
  auto& s = ini.sections[profile_name];
  s["endpoint"] = profile.endpoint;
  s["aws_access_key_id"] = profile.credentials.access_key_id;
  auth::wipe(s["aws_secret_access_key"]);
  s["aws_secret_access_key"] = profile.credentials.secret_access_key;
  s["region"] = profile.region;
  if (!profile.ca_file.empty()) s["ca_file"] = profile.ca_file;
  // The file's text in one buffer, sized first so that appending never reallocates (which would leave a copy of
  // the secrets in freed memory), and wiped once written.
  auto header = [](const std::string& name) { return name == "default" ? std::string("[default]") : "[profile " + name + "]"; };
  size_t size = 0;
  for (auto& [name, kv] : ini.sections) {
    size += header(name).size() + 2;
    for (auto& [k, v] : kv) size += k.size() + v.size() + 4;
  }
  std::string text;
  auth::WipeOnExit wipe_text(text);
  text.reserve(size);
  for (auto& [name, kv] : ini.sections) {
    text.append(header(name)).append("\n");
    for (auto& [k, v] : kv) text.append(k).append(" = ").append(v).append("\n");
    text.append("\n");
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path());
  write_file_atomic(path, text, 0600);
}

std::string Response::header(const std::string& name) const {
  for (auto& [k, v] : headers)
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  return "";
}

struct Client::Pool {
  std::mutex mu;
  std::vector<std::unique_ptr<httplib::Client>> idle;
};

Client::Client(Profile profile, std::string service)
    : profile_(std::move(profile)), service_(std::move(service)), pool_(std::make_unique<Pool>()) {
  require_secure_endpoint(profile_.endpoint, profile_.insecure_http);
}
Client::~Client() = default;

Response Client::send(const std::string& method, const std::string& path, const std::string& body, const std::string& content_type,
                      const std::vector<std::pair<std::string, std::string>>& extra) {
  auto deadline = std::chrono::steady_clock::now() + retry_for_;
  auto backoff = std::chrono::milliseconds(200);
  std::string last_error;
  for (;;) {
    std::unique_ptr<httplib::Client> http;
    {
      std::lock_guard lock(pool_->mu);
      if (!pool_->idle.empty()) {
        http = std::move(pool_->idle.back());
        pool_->idle.pop_back();
      }
    }
    if (!http) {
      http = std::make_unique<httplib::Client>(profile_.endpoint);
      http->set_connection_timeout(5);
      http->set_read_timeout(read_timeout_.count());
      http->set_write_timeout(120);
      http->set_keep_alive(true);
      // httplib writes headers and body separately: with Nagle on, the second write waits for the peer's delayed
      // ACK (40 ms on Linux) on every request.
      http->set_tcp_nodelay(true);
      if (!profile_.ca_file.empty()) http->set_ca_cert_path(profile_.ca_file.c_str());
    }
    auth::Request req;
    req.method = method;
    auto q = path.find('?');
    req.path = path.substr(0, q);
    if (q != std::string::npos) req.query = path.substr(q + 1);
    // A GET carries no body, so no Content-Type is sent (and none may be signed).
    req.headers = {{"Host", host_of(profile_.endpoint)}};
    if (method != "GET") req.headers.emplace_back("Content-Type", content_type);
    for (auto& h : extra) req.headers.push_back(h);
    req.body = body;
    auth::sign(req, profile_.credentials, profile_.region, service_, std::chrono::system_clock::now());
    httplib::Headers headers;
    for (auto& [k, v] : req.headers)
      if (strcasecmp(k.c_str(), "Content-Type") != 0) headers.emplace(k, v);
    // A PUT body (a connector's 16 MiB pack) is streamed from `body`; given as a string, httplib would copy it first.
    auto from_body = [&body](size_t offset, size_t length, httplib::DataSink& sink) { return sink.write(body.data() + offset, length); };
    httplib::Result r = method == "PUT"    ? http->Put(path.c_str(), headers, body.size(), from_body, content_type.c_str())
                        : method == "GET"  ? http->Get(path.c_str(), headers)
                                           : http->Post(path.c_str(), headers, body, content_type.c_str());
    bool retry = false;
    if (!r) {
      last_error = "cannot reach ferry server at " + profile_.endpoint + ": " + httplib::to_string(r.error());
      // An untrusted certificate stays untrusted: say what to do instead of retrying.
      retry = r.error() != httplib::Error::SSLServerVerification;
      if (!retry) last_error += " (its certificate is not trusted: give the CA that signed it with --ca-file or FERRY_CA_FILE)";
    } else if (r->status >= 500 || r->status == 429) {
      last_error = "ferry server at " + profile_.endpoint + " answered " + std::to_string(r->status) + ": " + r->body.substr(0, 300);
      retry = true;
    } else {
      Response out;
      out.status = r->status;
      out.body = std::move(r->body);
      for (auto& [k, v] : r->headers) out.headers.emplace(k, v);
      std::lock_guard lock(pool_->mu);
      pool_->idle.push_back(std::move(http));
      return out;
    }
    if (retry && std::chrono::steady_clock::now() + backoff < deadline) {
      std::this_thread::sleep_for(backoff);
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
      continue;
    }
    if (r) {  // a server error after the retries: let the caller see its JSON error
      Response out;
      out.status = r->status;
      out.body = std::move(r->body);
      for (auto& [k, v] : r->headers) out.headers.emplace(k, v);
      return out;
    }
    fail(ErrorKind::kIo, last_error);
  }
}

void throw_if_error(const Response& r) {
  if (r.status >= 200 && r.status < 300) return;
  std::string type = r.header("x-amzn-ErrorType"), message;
  try {
    json j = json::parse(r.body);
    if (type.empty() && j.contains("__type")) type = j["__type"].get<std::string>();
    if (j.contains("message")) message = j["message"].get<std::string>();
    else if (j.contains("Message")) message = j["Message"].get<std::string>();
  } catch (const json::exception&) {
    message = r.body.substr(0, 300);
  }
  if (auto p = type.find('#'); p != std::string::npos) type = type.substr(p + 1);
  if (auto p = type.find(':'); p != std::string::npos) type = type.substr(0, p);
  if (type.empty()) type = "HTTP" + std::to_string(r.status);
  throw ApiError(type, r.status, message);
}

json Client::call(const std::string& target, const json& input) {
  Response r = send("POST", "/", input.dump(), "application/x-amz-json-1.1", {{"X-Amz-Target", target}});
  throw_if_error(r);
  if (r.body.empty()) return json::object();
  try {
    return json::parse(r.body);
  } catch (const json::exception& e) {
    fail(ErrorKind::kCorrupt, "ferry server at " + profile_.endpoint + " answered " + target + " with invalid JSON: " + e.what());
  }
}

json Client::sms(const std::string& operation, const json& input) { return call(kSmsTargetPrefix + operation, input); }
json Client::ferry(const std::string& operation, const json& input) { return call(kFerryTargetPrefix + operation, input); }

}  // namespace ferry::client
