// AWS Signature Version 4: the canonical request, the signing-key chain and the Authorization header, for ferry's
// clients (sign) and its API server (verify). Every hash and MAC is OpenSSL's SHA-256.
#include "auth/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

#include "auth/internal.h"
#include "common/error.h"
#include "common/hex.h"

namespace ferry::auth {

namespace {

using std::chrono::sys_seconds;

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view kTerminator = "aws4_request";

[[noreturn]] void incomplete(const std::string& message) {
  throw AuthError("IncompleteSignatureException", 400, message);
}
[[noreturn]] void invalid(const std::string& message) { throw AuthError("InvalidSignatureException", 400, message); }

char lower_char(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower_char(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower_char(x) == lower_char(y); });
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// SigV4's "Trimall": no leading or trailing white space, and every inner run of it (including the line breaks of
// an obsolete folded header) becomes one space.
std::string trim_all(std::string_view value) {
  std::string out;
  bool in_space = false;
  for (char c : trim(value)) {
    if (is_space(c)) {
      in_space = true;
      continue;
    }
    if (in_space) out += ' ';
    in_space = false;
    out += c;
  }
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t end = s.find(sep, start);
    parts.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == '~';
}

// RFC 3986 percent-encoding of every byte but the unreserved ones, with upper-case hex as SigV4 requires.
std::string uri_encode(std::string_view s, bool keep_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Undoes %XX escapes. A '%' without two hex digits after it stays a literal '%', and '+' stays '+': the SDKs
// write a space in a query as %20.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The path as signed. Every service but S3 signs the path with its dot segments resolved and its empty segments
// dropped, then URI-encoded once more: the wire path is already encoded, so "/a%20b" is signed as "/a%2520b"
// (the AWS SDKs' "double encoding"). S3 signs the wire path exactly as sent.
std::string canonical_uri(std::string_view path, std::string_view service) {
  if (path.empty()) return "/";
  if (service == "s3") return std::string(path);
  std::vector<std::string_view> segments;
  for (std::string_view segment : split(path, '/')) {
    if (segment.empty() || segment == ".") continue;
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else {
      segments.push_back(segment);
    }
  }
  std::string normalized = "/";
  for (size_t i = 0; i < segments.size(); i++) {
    if (i > 0) normalized += '/';
    normalized += segments[i];
  }
  if (!segments.empty() && path.back() == '/') normalized += '/';
  return uri_encode(normalized, true);
}

// Parameters decoded from the wire, re-encoded the one canonical way, sorted by name then value.
std::string canonical_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  for (std::string_view param : split(query, '&')) {
    if (param.empty()) continue;
    size_t eq = param.find('=');
    std::string_view name = param.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
    params.emplace_back(uri_encode(percent_decode(name), false), uri_encode(percent_decode(value), false));
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty()) out += '&';
    out += name + '=' + value;
  }
  return out;
}

// Lower-case header name -> its trimmed values in request order, comma-joined.
std::map<std::string, std::string> header_values(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::map<std::string, std::string> values;
  for (const auto& [name, value] : headers) {
    auto [it, inserted] = values.try_emplace(lower(name), trim_all(value));
    if (!inserted) it->second += ',' + trim_all(value);
  }
  return values;
}

struct Scope {
  std::string date;  // YYYYMMDD
  std::string region;
  std::string service;
  std::string str() const { return date + '/' + region + '/' + service + '/' + std::string(kTerminator); }
};

constexpr size_t kKeySize = 32;  // the HMAC-SHA-256 output, and so every derived key

// HMAC-SHA-256 of `data` under `key`, into `out`.
void hmac_into(const void* key, size_t key_size, std::string_view data, unsigned char (&out)[kKeySize]) {
  if (key_size > static_cast<size_t>(std::numeric_limits<int>::max()))
    fail(ErrorKind::kInvalidArgument, "SigV4: a key of " + std::to_string(key_size) + " bytes is too long for HMAC");
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key, static_cast<int>(key_size), reinterpret_cast<const unsigned char*>(data.data()),
            data.size(), out, &len) ||
      len != kKeySize)
    fail(ErrorKind::kCrypto, "HMAC-SHA-256 failed in OpenSSL");
}

// The signing key of a scope, derived from the secret as AWS defines it: kSecret = "AWS4" + secret, then kDate,
// kRegion, kService and kSigning, each the HMAC of the next scope part under the one before. Every intermediate is
// wiped as soon as the next is made, and the signing key when this object goes away.
class SigningKey {
 public:
  SigningKey(std::string_view secret, const Scope& scope) {
    std::string k_secret;
    WipeOnExit wipe_k_secret(k_secret);
    k_secret.reserve(4 + secret.size());  // one buffer: no reallocation leaves a copy of the secret behind
    k_secret.append("AWS4").append(secret);
    try {
      hmac_into(k_secret.data(), k_secret.size(), scope.date, key_);
      for (std::string_view part : {std::string_view(scope.region), std::string_view(scope.service), kTerminator}) {
        unsigned char next[kKeySize];
        hmac_into(key_, kKeySize, part, next);
        std::memcpy(key_, next, kKeySize);
        OPENSSL_cleanse(next, kKeySize);
      }
    } catch (...) {
      OPENSSL_cleanse(key_, kKeySize);  // no destructor runs when the constructor throws
      throw;
    }
  }
  ~SigningKey() { OPENSSL_cleanse(key_, kKeySize); }
  SigningKey(const SigningKey&) = delete;
  SigningKey& operator=(const SigningKey&) = delete;

  // Lower-case hex HMAC of `data` under the signing key.
  std::string sign_hex(std::string_view data) const {
    unsigned char mac[kKeySize];
    hmac_into(key_, kKeySize, data, mac);
    return to_hex(mac, kKeySize);
  }

 private:
  unsigned char key_[kKeySize];
};

// Hex HMAC of the string to sign under the key derived from the secret, the scope's date, region and service.
std::string signature(std::string_view secret, const Scope& scope, std::string_view amz_date,
                      std::string_view canonical) {
  std::string to_sign =
      std::string(kAlgorithm) + '\n' + std::string(amz_date) + '\n' + scope.str() + '\n' + sha256_hex(canonical);
  return SigningKey(secret, scope).sign_hex(to_sign);
}

// 20150830T123600Z
std::string format_amz_date(sys_seconds t) {
  auto day = std::chrono::floor<std::chrono::days>(t);
  std::chrono::year_month_day ymd{day};
  std::chrono::hh_mm_ss hms{t - day};
  char buf[80];
  std::snprintf(buf, sizeof buf, "%04d%02u%02uT%02d%02d%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<sys_seconds> make_time(int year, unsigned month, unsigned day, int hour, int minute, int second) {
  std::chrono::year_month_day ymd{std::chrono::year(year), std::chrono::month(month), std::chrono::day(day)};
  if (!ymd.ok() || hour > 23 || minute > 59 || second > 59) return std::nullopt;
  return std::chrono::sys_days(ymd) + std::chrono::hours(hour) + std::chrono::minutes(minute) +
         std::chrono::seconds(second);
}

int digits_at(std::string_view s, size_t pos, size_t n) {
  int v = 0;
  for (size_t i = pos; i < pos + n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// ISO 8601 basic format, UTC: 20150830T123600Z.
std::optional<sys_seconds> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return std::nullopt;
  int year = digits_at(s, 0, 4), month = digits_at(s, 4, 2), day = digits_at(s, 6, 2);
  int hour = digits_at(s, 9, 2), minute = digits_at(s, 11, 2), second = digits_at(s, 13, 2);
  if (std::min({year, month, day, hour, minute, second}) < 0) return std::nullopt;
  return make_time(year, static_cast<unsigned>(month), static_cast<unsigned>(day), hour, minute, second);
}

// RFC 1123 (the HTTP Date header): Sun, 30 Aug 2015 12:36:00 GMT.
std::optional<sys_seconds> parse_http_date(std::string_view s) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[19] != ':' ||
      s[22] != ':' || s.substr(25) != " GMT")
    return std::nullopt;
  auto month = std::find(std::begin(kMonths), std::end(kMonths), s.substr(8, 3));
  if (month == std::end(kMonths)) return std::nullopt;
  int day = digits_at(s, 5, 2), year = digits_at(s, 12, 4);
  int hour = digits_at(s, 17, 2), minute = digits_at(s, 20, 2), second = digits_at(s, 23, 2);
  if (std::min({day, year, hour, minute, second}) < 0) return std::nullopt;
  return make_time(year, static_cast<unsigned>(month - std::begin(kMonths) + 1), static_cast<unsigned>(day), hour,
                   minute, second);
}

// "15 min." as AWS words the allowed skew.
std::string skew_text(std::chrono::seconds skew) {
  if (skew.count() % 60 == 0) return std::to_string(skew.count() / 60) + " min.";
  return std::to_string(skew.count()) + " sec.";
}

// Refuses a request whose SignedHeaders leave out a header it carries that the signature must cover, as AWS does:
// Host always, the header the request time comes from (`time_header`: "x-amz-date", or "date" without it),
// Content-Type, and every X-Amz-* header. Anything unsigned can be changed by whoever holds a captured request: an
// unsigned X-Amz-Target turns a signed GetConnectors into CreateRegistrationToken, an unsigned X-Amz-Date replays it
// at another time, an unsigned X-Amz-Content-Sha256 claims another body.
void require_signed(const Request& request, const std::vector<std::string>& signed_names, std::string_view time_header) {
  auto is_signed = [&](const std::string& name) {
    return std::find(signed_names.begin(), signed_names.end(), name) != signed_names.end();
  };
  if (!is_signed("host")) invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  for (const auto& [name, value] : request.headers) {
    std::string n = lower(name);
    if ((n == time_header || n == "content-type" || n.starts_with("x-amz-")) && !is_signed(n))
      invalid("'" + name + "' must be a 'SignedHeader' in the AWS Authorization.");
  }
}

}  // namespace

namespace internal {

Authorization parse_authorization(const std::string& header) {
  std::string_view rest = trim(header);
  Authorization auth;
  size_t space = rest.find_first_of(" \t");
  auth.algorithm = std::string(rest.substr(0, space));
  rest = space == std::string_view::npos ? std::string_view() : rest.substr(space);
  while (!rest.empty()) {
    size_t start = rest.find_first_not_of(" \t,");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    size_t end = rest.find_first_of(" \t,");
    std::string_view token = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    size_t eq = token.find('=');
    if (eq == std::string_view::npos)
      incomplete("'" + std::string(token) +
                 "' not a valid key=value pair (missing equal-sign) in Authorization header: '" + header + "'.");
    std::string_view key = token.substr(0, eq);
    std::string value(token.substr(eq + 1));
    if (key == "Credential" && !auth.credential) auth.credential = value;
    if (key == "SignedHeaders" && !auth.signed_headers) auth.signed_headers = value;
    if (key == "Signature" && !auth.signature) auth.signature = value;
  }
  return auth;
}

std::string canonical_request(const Request& request, const std::vector<std::string>& signed_names,
                              std::string_view payload_hash, std::string_view service) {
  auto values = header_values(request.headers);
  std::string out =
      request.method + '\n' + canonical_uri(request.path, service) + '\n' + canonical_query(request.query) + '\n';
  std::string list;
  for (const auto& name : signed_names) {
    auto it = values.find(name);
    out += name + ':' + (it == values.end() ? std::string() : it->second) + '\n';
    if (!list.empty()) list += ';';
    list += name;
  }
  out += '\n' + list + '\n';
  out += payload_hash;
  return out;
}

}  // namespace internal

using internal::Authorization;
using internal::canonical_request;
using internal::parse_authorization;

std::optional<std::string> Request::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (iequals(n, name)) return v;
  return std::nullopt;
}

void Request::set_header(const std::string& name, const std::string& value) {
  bool replaced = false;
  for (auto it = headers.begin(); it != headers.end();) {
    if (!iequals(it->first, name)) {
      ++it;
    } else if (!replaced) {
      *it = {name, value};
      replaced = true;
      ++it;
    } else {
      it = headers.erase(it);
    }
  }
  if (!replaced) headers.emplace_back(name, value);
}

Credentials::~Credentials() { wipe(secret_access_key); }

void wipe(std::string& s) {
  s.resize(s.capacity());  // the whole buffer, not only the current contents (within capacity: no reallocation)
  OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr) != 1)
    fail(ErrorKind::kCrypto, "SHA-256 failed in OpenSSL");
  return to_hex(digest, len);
}

void sign(Request& request, const Credentials& credentials, const std::string& region, const std::string& service,
          std::chrono::system_clock::time_point now) {
  if (!request.header("host"))
    fail(ErrorKind::kInvalidArgument, "cannot sign a " + request.method + " request without a Host header");
  for (const auto& [what, value] : {std::pair{"region", &region}, std::pair{"service", &service}})
    if (value->empty() || value->find('/') != std::string::npos)
      fail(ErrorKind::kInvalidArgument,
           std::string("cannot sign for ") + what + " '" + *value + "': it must be non-empty and contain no '/'");

  std::erase_if(request.headers, [](const auto& h) { return iequals(h.first, "authorization"); });
  std::string amz_date = format_amz_date(std::chrono::floor<std::chrono::seconds>(now));
  // A caller that marks the body UNSIGNED-PAYLOAD (content that authenticates itself) keeps that mark.
  auto given = request.header("x-amz-content-sha256");
  std::string payload_hash = given && *given == kUnsignedPayload ? std::string(kUnsignedPayload) : sha256_hex(request.body);
  request.set_header("X-Amz-Date", amz_date);
  request.set_header("X-Amz-Content-Sha256", payload_hash);

  std::vector<std::string> names;
  for (const auto& [name, values] : header_values(request.headers)) names.push_back(name);  // sorted by the map
  Scope scope{amz_date.substr(0, 8), region, service};
  std::string sig = signature(credentials.secret_access_key, scope, amz_date,
                              canonical_request(request, names, payload_hash, service));
  std::string list;
  for (const auto& name : names) list += (list.empty() ? "" : ";") + name;
  request.set_header("Authorization", std::string(kAlgorithm) + " Credential=" + credentials.access_key_id + '/' +
                                          scope.str() + ", SignedHeaders=" + list + ", Signature=" + sig);
}

Verified verify(const Request& request, const SecretLookup& secret_for, std::chrono::system_clock::time_point now,
                const VerifyOptions& options) {
  const std::chrono::seconds max_skew = options.max_skew;
  const bool allow_unsigned_payload = options.allow_unsigned_payload;
  std::optional<std::string> header = request.header("authorization");
  if (!header || trim(*header).empty())
    throw AuthError("MissingAuthenticationTokenException", 403, "Missing Authentication Token");
  Authorization auth = parse_authorization(*header);

  std::optional<std::string> amz_date_header = request.header("x-amz-date");
  std::optional<std::string> date_header = amz_date_header ? std::nullopt : request.header("date");
  std::string missing;
  if (!auth.credential) missing += "Authorization header requires 'Credential' parameter. ";
  if (!auth.signature) missing += "Authorization header requires 'Signature' parameter. ";
  if (!auth.signed_headers) missing += "Authorization header requires 'SignedHeaders' parameter. ";
  if (!amz_date_header && !date_header)
    missing += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ";
  if (!missing.empty()) incomplete(missing + "Authorization=" + *header);
  if (auth.algorithm != kAlgorithm)
    incomplete("Unsupported AWS 'algorithm': '" + auth.algorithm + "'; ferry accepts only '" + std::string(kAlgorithm) +
               "'.");

  // The request time: X-Amz-Date, or else the HTTP Date header in either format.
  std::optional<sys_seconds> time;
  if (amz_date_header) {
    time = parse_amz_date(trim(*amz_date_header));
    if (!time)
      incomplete("Date must be in ISO-8601 'basic format'. Got '" + *amz_date_header +
                 "'. See http://en.wikipedia.org/wiki/ISO_8601");
  } else {
    time = parse_http_date(trim(*date_header));
    if (!time) time = parse_amz_date(trim(*date_header));
    if (!time)
      incomplete("Date header '" + *date_header +
                 "' is neither an RFC 1123 date (Sun, 30 Aug 2015 12:36:00 GMT) nor ISO-8601 basic format "
                 "(20150830T123600Z).");
  }
  std::string amz_date = format_amz_date(*time);

  std::vector<std::string_view> credential = split(*auth.credential, '/');
  if (credential.size() != 5 || credential[0].empty())
    incomplete("Credential '" + *auth.credential +
               "' in Authorization header is not <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request.");
  std::string access_key_id(credential[0]);
  Scope scope{std::string(credential[1]), std::string(credential[2]), std::string(credential[3])};
  // Every fault of the scope at once, in AWS's order and words.
  std::string scope_faults;
  if (scope.region.empty()) scope_faults += "Credential should be scoped to a valid region, not ''. ";
  if (!options.service.empty() && scope.service != options.service)
    scope_faults += "Credential should be scoped to correct service: '" + options.service + "'. ";
  else if (scope.service.empty())
    scope_faults += "Credential should be scoped to a service, not ''. ";
  if (credential[4] != kTerminator)
    scope_faults += "Credential should be scoped with a valid terminator: 'aws4_request', not '" +
                    std::string(credential[4]) + "'. ";
  if (scope.date != amz_date.substr(0, 8))
    scope_faults += "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" +
                    scope.date + "' != '" + amz_date.substr(0, 8) + "', from '" + amz_date + "'. ";
  if (!scope_faults.empty()) invalid(scope_faults.substr(0, scope_faults.size() - 1));

  std::vector<std::string> signed_names;
  for (std::string_view name : split(*auth.signed_headers, ';')) {
    if (name.empty())
      incomplete("SignedHeaders '" + *auth.signed_headers + "' in Authorization header has an empty header name.");
    signed_names.push_back(lower(name));
  }
  require_signed(request, signed_names, amz_date_header ? "x-amz-date" : "date");

  sys_seconds now_s = std::chrono::floor<std::chrono::seconds>(now);
  if (*time < now_s - max_skew)
    invalid("Signature expired: " + amz_date + " is now earlier than " + format_amz_date(now_s - max_skew) + " (" +
            format_amz_date(now_s) + " - " + skew_text(max_skew) + ")");
  if (*time > now_s + max_skew)
    invalid("Signature not yet current: " + amz_date + " is still later than " + format_amz_date(now_s + max_skew) +
            " (" + format_amz_date(now_s) + " + " + skew_text(max_skew) + ")");

  std::optional<std::string> secret = secret_for(access_key_id);
  if (!secret)
    throw AuthError("UnrecognizedClientException", 400, "The security token included in the request is invalid.");
  WipeOnExit wipe_secret(*secret);

  // A client that sends x-amz-content-sha256 signs that value as the payload hash; it must then be the body's,
  // unless the caller accepts UNSIGNED-PAYLOAD for this request.
  std::optional<std::string> content_sha = request.header("x-amz-content-sha256");
  bool unsigned_ok = allow_unsigned_payload && content_sha && trim(*content_sha) == kUnsignedPayload;
  if (options.headers_only && !unsigned_ok) {
    bool hex64 = content_sha && trim(*content_sha).size() == 64 &&
                 trim(*content_sha).find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
    if (!hex64)
      invalid("this request must carry the SHA-256 of its body in x-amz-content-sha256 (the server authenticates it "
              "before reading the body)");
  }
  std::string body_hash = unsigned_ok ? std::string(kUnsignedPayload)
                          : options.headers_only ? lower(trim(*content_sha))
                                                 : sha256_hex(request.body);
  std::string payload_hash = content_sha ? std::string(trim(*content_sha)) : body_hash;

  std::string expected =
      signature(*secret, scope, amz_date, canonical_request(request, signed_names, payload_hash, scope.service));
  std::string given = lower(*auth.signature);
  if (given.size() != expected.size() || CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0)
    invalid(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method. Consult the service documentation for details.");
  if (!unsigned_ok && lower(payload_hash) != body_hash) {
    if (payload_hash == "UNSIGNED-PAYLOAD" || payload_hash.starts_with("STREAMING-"))
      invalid("x-amz-content-sha256 '" + payload_hash +
              "' is not accepted: this server authenticates request bodies, so the payload must be signed.");
    invalid("The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  return Verified{access_key_id, scope.region, scope.service, unsigned_ok ? std::string(kUnsignedPayload) : lower(payload_hash)};
}

bool body_matches(const Verified& verified, std::string_view body) {
  if (verified.payload_sha256 == kUnsignedPayload) return true;
  std::string computed = sha256_hex(body);
  return computed.size() == verified.payload_sha256.size() &&
         CRYPTO_memcmp(computed.data(), verified.payload_sha256.data(), computed.size()) == 0;
}

}  // namespace ferry::auth
