// HTTP client with SigV4 signing and retries, the JSON 1.1 call, and profile resolution.
#include "client/client.h"

#include <httplib.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/fs.h"

namespace ferry::client {

using nlohmann::json;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string trim(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// INI sections of the config file: name -> key -> value. "[profile x]" and "[x]" both name x.
std::map<std::string, std::map<std::string, std::string>> read_ini(const std::string& path) {
  std::map<std::string, std::map<std::string, std::string>> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string line, section;
  int n = 0;
  while (std::getline(in, line)) {
    n++;
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') fail(ErrorKind::kInvalidArgument, path + " line " + std::to_string(n) + ": unterminated section header");
      section = trim(line.substr(1, line.size() - 2));
      if (section.rfind("profile ", 0) == 0) section = trim(section.substr(8));
      out[section];
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos) fail(ErrorKind::kInvalidArgument, path + " line " + std::to_string(n) + ": expected 'key = value'");
    out[section][trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

std::string host_of(const std::string& endpoint) {
  auto p = endpoint.find("://");
  std::string rest = p == std::string::npos ? endpoint : endpoint.substr(p + 3);
  auto slash = rest.find('/');
  return slash == std::string::npos ? rest : rest.substr(0, slash);
}

}  // namespace

std::string default_config_path() {
  std::string c = env("FERRY_CONFIG");
  if (!c.empty()) return c;
  std::string home = env("HOME");
  return (home.empty() ? std::string(".") : home) + "/.config/ferry/config";
}

Profile resolve_profile(const std::string& profile_name, const Profile& overrides) {
  std::string name = !profile_name.empty() ? profile_name : (!env("FERRY_PROFILE").empty() ? env("FERRY_PROFILE") : "default");
  std::string path = default_config_path();
  auto ini = read_ini(path);
  std::map<std::string, std::string> section;
  if (ini.count(name)) section = ini[name];
  else if (!profile_name.empty()) fail(ErrorKind::kInvalidArgument, "profile '" + name + "' is not in " + path);
  auto pick = [&](const std::string& given, const char* var, const char* key) {
    if (!given.empty()) return given;
    if (!env(var).empty()) return env(var);
    return section.count(key) ? section[key] : std::string();
  };
  Profile p;
  p.endpoint = pick(overrides.endpoint, "FERRY_ENDPOINT", "endpoint");
  p.credentials.access_key_id = pick(overrides.credentials.access_key_id, "AWS_ACCESS_KEY_ID", "aws_access_key_id");
  p.credentials.secret_access_key = pick(overrides.credentials.secret_access_key, "AWS_SECRET_ACCESS_KEY", "aws_secret_access_key");
  p.region = pick(overrides.region, "AWS_REGION", "region");
  if (p.region.empty()) p.region = "us-east-1";
  p.ca_file = pick(overrides.ca_file, "FERRY_CA_FILE", "ca_file");
  std::string where = " (give it with a flag, the environment, or profile '" + name + "' in " + path + ")";
  if (p.endpoint.empty()) fail(ErrorKind::kInvalidArgument, "no server endpoint" + where);
  if (p.credentials.access_key_id.empty() || p.credentials.secret_access_key.empty())
    fail(ErrorKind::kInvalidArgument, "no access key" + where);
  while (!p.endpoint.empty() && p.endpoint.back() == '/') p.endpoint.pop_back();
  if (p.endpoint.find("://") == std::string::npos) p.endpoint = "http://" + p.endpoint;
  return p;
}

void save_profile(const std::string& path, const std::string& profile_name, const Profile& profile) {
  auto ini = read_ini(path);
  auto& s = ini[profile_name];
  s["endpoint"] = profile.endpoint;
  s["aws_access_key_id"] = profile.credentials.access_key_id;
  s["aws_secret_access_key"] = profile.credentials.secret_access_key;
  s["region"] = profile.region;
  if (!profile.ca_file.empty()) s["ca_file"] = profile.ca_file;
  std::ostringstream out;
  for (auto& [name, kv] : ini) {
    out << (name == "default" ? std::string("[default]") : "[profile " + name + "]") << "\n";
    for (auto& [k, v] : kv) out << k << " = " << v << "\n";
    out << "\n";
  }
  std::filesystem::create_directories(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path());
  write_file_atomic(path, out.str(), 0600);
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
    : profile_(std::move(profile)), service_(std::move(service)), pool_(std::make_unique<Pool>()) {}
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
