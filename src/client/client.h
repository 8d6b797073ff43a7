// client — talking to a ferry server: HTTP(S) requests signed with SigV4, the SMS JSON 1.1 protocol, and the
// profile configuration (endpoint, credentials, region) shared by the CLI verbs, like the AWS CLI's.
//
// Promises: a request that fails to connect, or gets a 5xx/429 answer, is retried with exponential backoff up to
// `retry_for`; 4xx answers are never retried. Errors name the endpoint and what the server said.
// Nothing is sent in clear text off the machine: a Client refuses a plain http:// endpoint whose host is not
// loopback unless its profile says insecure_http. Every Profile wipes its copy of the secret access key from memory
// when it goes away (auth::Credentials); configuration files are read and written without leaving copies behind.
// A Client may be used from several threads at once (connections are pooled per thread of use).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "auth/sigv4.h"
#include "common/error.h"

namespace ferry::client {

// An error answered by the server: the SMS exception type ("ReplicationJobNotFoundException") and its message.
class ApiError : public Error {
 public:
  ApiError(std::string type, int status, const std::string& message)
      : Error(ErrorKind::kInvalidArgument, type + ": " + message), type_(std::move(type)), status_(status) {}
  const std::string& type() const { return type_; }
  int status() const { return status_; }

 private:
  std::string type_;
  int status_;
};

struct Profile {
  std::string endpoint;  // http://127.0.0.1:8443 or https://host:port
  auth::Credentials credentials;
  std::string region = "us-east-1";
  std::string ca_file;  // PEM bundle to verify an https endpoint (empty: the system's)
  // Allows a plain http:// endpoint on a host that is not loopback (--insecure-http): requests stay signed, but
  // their bodies (registration tokens, a connector's new secret, disk data) cross the network in clear.
  bool insecure_http = false;
};

// Whether `host` names the loopback interface: an address in 127.0.0.0/8 (also IPv4-mapped, ::ffff:127.x.y.z), ::1
// (in any IPv6 spelling, with or without brackets), or the name "localhost" (in any case). Any other name, even one
// that resolves to loopback, is not.
bool is_loopback_host(std::string_view host);

// Throws kInvalidArgument, naming the endpoint's host and --insecure-http, if `endpoint` is plain HTTP (http://, or
// no scheme) to a host that is not loopback and `insecure` is false. https:// endpoints, and plain ones on loopback,
// pass.
void require_secure_endpoint(const std::string& endpoint, bool insecure);

// Resolves a profile like the AWS CLI: explicit values win, then FERRY_ENDPOINT / AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY / AWS_REGION / FERRY_CA_FILE, then the named profile (FERRY_PROFILE, default "default") in
// the config file (FERRY_CONFIG, default ~/.config/ferry/config), an INI file:
//   [profile NAME]   (or [default])
//   endpoint = http://127.0.0.1:8443
//   aws_access_key_id = AKIA...
//   aws_secret_access_key = ...
//   region = us-east-1
// Throws kInvalidArgument naming what is missing and where it was looked for.
Profile resolve_profile(const std::string& profile_name, const Profile& overrides);
std::string default_config_path();
// Adds or replaces [profile NAME] in the config file (0600, written atomically).
void save_profile(const std::string& path, const std::string& profile_name, const Profile& profile);

struct Response {
  int status = 0;
  std::string body;
  std::string header(const std::string& name) const;
  std::multimap<std::string, std::string> headers;
};

class Client {
 public:
  // Throws kInvalidArgument for a plain-HTTP endpoint off loopback without profile.insecure_http
  // (require_secure_endpoint).
  Client(Profile profile, std::string service = "sms");
  ~Client();
  const Profile& profile() const { return profile_; }
  void set_retry_for(std::chrono::seconds d) { retry_for_ = d; }
  // How long to wait for an answer (default 120 s; an export of a large image takes longer).
  void set_read_timeout(std::chrono::seconds d) { read_timeout_ = d; }

  // A signed request. Retries as described above; throws kIo if the server stays unreachable.
  Response send(const std::string& method, const std::string& path, const std::string& body,
                const std::string& content_type = "application/json",
                const std::vector<std::pair<std::string, std::string>>& headers = {});
  // A JSON 1.1 call: POST / with X-Amz-Target `target` ("AWSServerMigrationService_V2016_10_24.GetServers").
  // Throws ApiError for an error answer.
  nlohmann::json call(const std::string& target, const nlohmann::json& input);
  // SMS operation by name ("GetServers").
  nlohmann::json sms(const std::string& operation, const nlohmann::json& input = nlohmann::json::object());
  // ferry's own operations ("CreateRegistrationToken"), same protocol, target prefix kFerryTargetPrefix.
  nlohmann::json ferry(const std::string& operation, const nlohmann::json& input = nlohmann::json::object());

 private:
  struct Pool;
  Profile profile_;
  std::string service_;
  std::chrono::seconds retry_for_{30};
  std::chrono::seconds read_timeout_{120};
  std::unique_ptr<Pool> pool_;
};

inline constexpr const char* kSmsTargetPrefix = "AWSServerMigrationService_V2016_10_24.";
inline constexpr const char* kFerryTargetPrefix = "FerryService_V1.";

// Throws ApiError if `response` is an error answer in the JSON 1.1 protocol.
void throw_if_error(const Response& response);

}  // namespace ferry::client
