// auth::sign and auth::verify against AWS's published SigV4 vectors, requests signed by the AWS SDK for
// JavaScript, and every way a request can fail verification.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "auth/sigv4.h"
#include "common/error.h"

using namespace ferry::auth;
using Headers = std::vector<std::pair<std::string, std::string>>;
using std::chrono::system_clock;

namespace {

const Credentials kSuite{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};

// 20150830T123600Z as a time point.
system_clock::time_point at(std::string_view amz) {
  auto num = [&](size_t pos, size_t n) { return std::stoi(std::string(amz.substr(pos, n))); };
  std::chrono::year_month_day ymd{std::chrono::year(num(0, 4)), std::chrono::month(num(4, 2)),
                                  std::chrono::day(num(6, 2))};
  return std::chrono::sys_days(ymd) + std::chrono::hours(num(9, 2)) + std::chrono::minutes(num(11, 2)) +
         std::chrono::seconds(num(13, 2));
}

SecretLookup only(const Credentials& c) {
  return [c](const std::string& id) -> std::optional<std::string> {
    if (id == c.access_key_id) return c.secret_access_key;
    return std::nullopt;
  };
}

// Runs `f` and returns the AuthError it throws; fails the test if it throws none.
AuthError auth_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const AuthError& e) {
    return e;
  }
  ADD_FAILURE() << "no AuthError thrown";
  return AuthError("none", 0, "");
}

void expect_mismatch(const Request& r, const SecretLookup& secrets, system_clock::time_point now) {
  AuthError e = auth_error([&] { verify(r, secrets, now); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()),
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.");
}

// A JSON-API request as ferry's own clients send it, signed at 20261125T003000Z.
struct SignedCall {
  std::string body = R"({"maxResults":5})";
  Request request;
  system_clock::time_point when = at("20261125T003000Z");
  SignedCall() {
    request.method = "POST";
    request.headers = {{"Host", "ferry.example.com:8443"},
                       {"Content-Type", "application/x-amz-json-1.1"},
                       {"X-Amz-Target", "AWSServerMigrationService_V2016_10_24.GetServers"}};
    request.body = body;
    sign(request, kSuite, "us-east-1", "sms", when);
  }
};

// One case of AWS's SigV4 test suite (the v4 cases with path normalization, as shipped in awslabs/aws-c-auth
// tests/aws-signing-test-suite/v4/<name>/header-signed-request.txt). Credentials kSuite, region us-east-1, service
// "service", time 20150830T123600Z. Paths are given raw, as the suite writes them (e.g. with a literal space).
struct SuiteCase {
  const char* name;
  const char* method;
  const char* path;
  const char* query;
  Headers headers;  // without X-Amz-Date and Authorization
  const char* body;
  const char* signed_headers;
  const char* signature;
};

const char* kStsToken =
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuw"
    "thAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHN"
    "VXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/"
    "oLxBA==";
const char* kHost = "example.amazonaws.com";

// clang-format off
const std::vector<SuiteCase>& suite() {
  static const std::vector<SuiteCase> cases = {
      {"get-header-key-duplicate", "GET", "/", "",
       {{"Host", kHost}, {"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}}, "",
       "host;my-header1;x-amz-date", "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
      {"get-header-value-multiline", "GET", "/", "", {{"Host", kHost}, {"My-Header1", "value1\n  value2\n     value3"}},
       "", "host;my-header1;x-amz-date", "cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd"},
      {"get-header-value-order", "GET", "/", "",
       {{"Host", kHost}, {"My-Header1", "value4"}, {"My-Header1", "value1"}, {"My-Header1", "value3"},
        {"My-Header1", "value2"}},
       "", "host;my-header1;x-amz-date", "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"},
      {"get-header-value-trim", "GET", "/", "",
       {{"Host", kHost}, {"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
       "", "host;my-header1;my-header2;x-amz-date", "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
      {"get-relative-normalized", "GET", "/example/..", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-relative-relative-normalized", "GET", "/example1/example2/../..", "", {{"Host", kHost}}, "",
       "host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-slash-dot-slash-normalized", "GET", "/./", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-slash-normalized", "GET", "//", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-slash-pointless-dot-normalized", "GET", "/./example", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"},
      {"get-slashes-normalized", "GET", "//example//", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"},
      {"get-space-normalized", "GET", "/example space/", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
      {"get-unreserved", "GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "",
       {{"Host", kHost}}, "", "host;x-amz-date", "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
      {"get-utf8", "GET", "/\xe1\x88\xb4", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
      {"get-vanilla-empty-query-key", "GET", "/", "Param1=value1", {{"Host", kHost}}, "", "host;x-amz-date",
       "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"},
      {"get-vanilla-query-order-encoded", "GET", "/", "Param-3=Value3&Param=Value2&%E1%88%B4=Value1", {{"Host", kHost}},
       "", "host;x-amz-date", "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"},
      {"get-vanilla-query-order-key-case", "GET", "/", "Param2=value2&Param1=value1", {{"Host", kHost}}, "",
       "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
      {"get-vanilla-query-unreserved", "GET", "/",
       "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
       "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
       {{"Host", kHost}}, "", "host;x-amz-date", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
      {"get-vanilla-query", "GET", "/", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-utf8-query", "GET", "/", "\xe1\x88\xb4=bar", {{"Host", kHost}}, "", "host;x-amz-date",
       "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
      {"get-vanilla-with-session-token", "GET", "/", "",
       {{"Host", kHost}, {"X-Amz-Security-Token", "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"}},
       "", "host;x-amz-date;x-amz-security-token", "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"},
      {"get-vanilla", "GET", "/", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"post-header-key-case", "POST", "/", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-header-key-sort", "POST", "/", "", {{"Host", kHost}, {"My-Header1", "value1"}}, "",
       "host;my-header1;x-amz-date", "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
      {"post-header-value-case", "POST", "/", "", {{"Host", kHost}, {"My-Header1", "VALUE1"}}, "",
       "host;my-header1;x-amz-date", "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
      {"post-sts-header-before", "POST", "/", "", {{"Host", kHost}, {"X-Amz-Security-Token", kStsToken}}, "",
       "host;x-amz-date;x-amz-security-token", "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
      {"post-vanilla-empty-query-value", "POST", "/", "Param1=value1", {{"Host", kHost}}, "", "host;x-amz-date",
       "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
      {"post-vanilla-query", "POST", "/", "Param1=value1", {{"Host", kHost}}, "", "host;x-amz-date",
       "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
      {"post-vanilla", "POST", "/", "", {{"Host", kHost}}, "", "host;x-amz-date",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-x-www-form-urlencoded-parameters", "POST", "/", "",
       {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
        {"Host", kHost},
        {"Content-Length", "13"},
        {"x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"}},
       "Param1=value1", "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
       "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422"},
      {"post-x-www-form-urlencoded", "POST", "/", "",
       {{"Content-Type", "application/x-www-form-urlencoded"},
        {"Host", kHost},
        {"Content-Length", "13"},
        {"x-amz-content-sha256", "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"}},
       "Param1=value1", "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
       "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"},
  };
  return cases;
}
// clang-format on

const SuiteCase& suite_case(std::string_view name) {
  for (const auto& c : suite())
    if (c.name == name) return c;
  throw std::invalid_argument("no suite case " + std::string(name));
}

Request suite_request(const SuiteCase& c, const std::string& signature) {
  Request r;
  r.method = c.method;
  r.path = c.path;
  r.query = c.query;
  r.headers = c.headers;
  r.headers.emplace_back("X-Amz-Date", "20150830T123600Z");
  r.headers.emplace_back("Authorization", std::string("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
                                                      "service/aws4_request, SignedHeaders=") +
                                              c.signed_headers + ", Signature=" + signature);
  r.body = c.body;
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Published vectors


VerifyOptions unsigned_payload_ok() {
  VerifyOptions o;
  o.allow_unsigned_payload = true;
  return o;
}
VerifyOptions skew(std::chrono::seconds max_skew) {
  VerifyOptions o;
  o.max_skew = max_skew;
  return o;
}
VerifyOptions headers_only(const std::string& service) {
  VerifyOptions o;
  o.headers_only = true;
  o.service = service;
  return o;
}

TEST(SigV4, VerifiesEveryNormalizedCaseOfTheAwsTestSuite) {
  for (const auto& c : suite()) {
    SCOPED_TRACE(c.name);
    Verified v;
    ASSERT_NO_THROW(v = verify(suite_request(c, c.signature), only(kSuite), at("20150830T123600Z")));
    EXPECT_EQ(v.access_key_id, "AKIDEXAMPLE");
    EXPECT_EQ(v.region, "us-east-1");
    EXPECT_EQ(v.service, "service");

    std::string wrong = c.signature;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    expect_mismatch(suite_request(c, wrong), only(kSuite), at("20150830T123600Z"));
  }
}

TEST(SigV4, SignReproducesTheSuitesSignedBodyCases) {
  for (const char* name : {"post-x-www-form-urlencoded", "post-x-www-form-urlencoded-parameters"}) {
    SCOPED_TRACE(name);
    const SuiteCase& c = suite_case(name);
    Request r;
    r.method = c.method;
    r.headers = {c.headers.begin(), c.headers.end() - 1};  // all but the x-amz-content-sha256 sign() adds itself
    r.body = c.body;
    sign(r, kSuite, "us-east-1", "service", at("20150830T123600Z"));
    EXPECT_EQ(*r.header("authorization"), std::string("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"
                                                      "service/aws4_request, SignedHeaders=") +
                                              c.signed_headers + ", Signature=" + c.signature);
    EXPECT_EQ(*r.header("x-amz-date"), "20150830T123600Z");
    EXPECT_EQ(*r.header("x-amz-content-sha256"), "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
  }
}

// The Amazon S3 API Reference's worked examples ("Signature Calculations for the Authorization Header: Transferring
// Payload in a Single Chunk"). S3 signs the path exactly as sent, without normalizing or re-encoding it.
TEST(SigV4, VerifiesTheS3DocumentationExamples) {
  const Credentials s3{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};
  const std::string empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const std::string scope = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ";
  struct Example {
    const char* name;
    const char* method;
    const char* path;
    const char* query;
    Headers headers;
    const char* body;
  };
  const std::vector<Example> examples = {
      {"GET Object",
       "GET",
       "/test.txt",
       "",
       {{"Host", "examplebucket.s3.amazonaws.com"},
        {"Range", "bytes=0-9"},
        {"x-amz-content-sha256", empty},
        {"x-amz-date", "20130524T000000Z"},
        {"Authorization", scope + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                                  "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"}},
       ""},
      {"PUT Object",
       "PUT",
       "/test%24file.text",
       "",
       {{"Host", "examplebucket.s3.amazonaws.com"},
        {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
        {"x-amz-date", "20130524T000000Z"},
        {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
        {"x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"},
        {"Authorization", scope + "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
                                  "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"}},
       "Welcome to Amazon S3."},
      {"GET Bucket Lifecycle",
       "GET",
       "/",
       "lifecycle",
       {{"Host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", empty},
        {"x-amz-date", "20130524T000000Z"},
        {"Authorization", scope + "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                                  "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"}},
       ""},
      {"GET Bucket (List Objects)",
       "GET",
       "/",
       "max-keys=2&prefix=J",
       {{"Host", "examplebucket.s3.amazonaws.com"},
        {"x-amz-content-sha256", empty},
        {"x-amz-date", "20130524T000000Z"},
        {"Authorization", scope + "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
                                  "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"}},
       ""},
  };
  for (const auto& e : examples) {
    SCOPED_TRACE(e.name);
    Request r{e.method, e.path, e.query, e.headers, e.body};
    Verified v;
    ASSERT_NO_THROW(v = verify(r, only(s3), at("20130524T000000Z")));
    EXPECT_EQ(v.service, "s3");
  }
}

// AWS's original (2011) test suite, get-vanilla-query-order-value: a Date header and no X-Amz-Date, service "host".
TEST(SigV4, AcceptsTheHttpDateHeaderWhenThereIsNoXAmzDate) {
  Request r{"GET",
            "/",
            "foo=Zoo&foo=aha",
            {{"Date", "Mon, 09 Sep 2011 23:36:00 GMT"},
             {"Host", "host.foo.com"},
             {"Authorization",
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20110909/us-east-1/host/aws4_request, "
              "SignedHeaders=date;host, "
              "Signature=be7148d34ebccdc6423b19085378aa0bee970bdc61d144bd1a8c48c33079ab09"}},
            ""};
  EXPECT_NO_THROW(verify(r, only(kSuite), at("20110909T233600Z")));
  r.query = "foo=aha&foo=Zoo";  // the same parameters in another order
  EXPECT_NO_THROW(verify(r, only(kSuite), at("20110909T233600Z")));
  r.query = "foo=aha";
  expect_mismatch(r, only(kSuite), at("20110909T233600Z"));
}

// ---------------------------------------------------------------------------------------------------------------
// Requests signed by an independent signer: the AWS SDK for JavaScript v3. Generated once, outside this repository,
// with npm packages @smithy/signature-v4 5.x + @aws-crypto/sha256-js 5.2.0 and @aws-sdk/client-sms 3.523.0 (its
// requests captured by a requestHandler that never touched the network); inputs and outputs pasted here.

// SignatureV4.sign() on {method POST, host ferry.example.com:8443, path "/api/v1/jobs%20x/./a//b",
// query {b: "2", a: ["z", "y"], "sp ace": "v~+/"}, three headers, body {"maxResults":5}} at 2026-11-25T00:30:00Z.
// The SDK resolves the dot segment, drops the empty one and encodes the already-encoded path again
// ("/api/v1/jobs%2520x/a/b"), and signs every header it has plus x-amz-date and x-amz-content-sha256.
TEST(SigV4, AgreesWithTheAwsJsSdkSigner) {
  const std::string body = R"({"maxResults":5})";
  const std::string sdk_authorization =
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/eu-west-3/sms/aws4_request, "
      "SignedHeaders=content-type;host;my-header;x-amz-content-sha256;x-amz-date;x-amz-target, "
      "Signature=8ae7e5401b7fd2d817cb95f3d5df28609e6157c8fa49c7b6f4ad41dca26a323b";
  Request r;
  r.method = "POST";
  r.path = "/api/v1/jobs%20x/./a//b";
  r.query = "b=2&a=z&a=y&sp%20ace=v~%2B%2F";  // the SDK's query object as its HTTP handler writes it
  r.headers = {{"host", "ferry.example.com:8443"},
               {"Content-Type", "application/x-amz-json-1.1"},
               {"X-Amz-Target", "AWSServerMigrationService_V2016_10_24.GetServers"},
               {"My-Header", "  a   b\tc  "}};
  r.body = body;

  Request ours = r;
  sign(ours, kSuite, "eu-west-3", "sms", at("20261125T003000Z"));
  EXPECT_EQ(*ours.header("authorization"), sdk_authorization);

  r.headers.insert(r.headers.end(),
                   {{"x-amz-date", "20261125T003000Z"},
                    {"x-amz-content-sha256", "66f5fdbbd39a57504f5b26bd31c5decb10d5bd7dcca977c4a59026f6076fbcbb"},
                    {"authorization", sdk_authorization}});
  Verified v = verify(r, only(kSuite), at("20261125T003000Z"));
  EXPECT_EQ(v.region, "eu-west-3");
  EXPECT_EQ(v.service, "sms");
}

// Two calls of the real SMS client, pointed at http://127.0.0.1:8080. It signs its invocation-id, retry and
// x-amz-user-agent headers too, but not user-agent; the path is "/" and there is no query.
TEST(SigV4, VerifiesRequestsOfTheAwsSdkSmsClient) {
  auto sdk_headers = [](const std::string& target, const std::string& length, const std::string& invocation,
                        const std::string& sha, const std::string& signature) {
    return Headers{
        {"content-type", "application/x-amz-json-1.1"},
        {"x-amz-target", "AWSServerMigrationService_V2016_10_24." + target},
        {"content-length", length},
        {"host", "127.0.0.1:8080"},
        {"x-amz-user-agent", "aws-sdk-js/3.523.0"},
        {"user-agent", "aws-sdk-js/3.523.0 ua/2.0 os/linux#6.18.44-fc-v657 lang/js md/nodejs#20.20.2 api/sms#3.523.0"},
        {"amz-sdk-invocation-id", invocation},
        {"amz-sdk-request", "attempt=1; max=3"},
        {"x-amz-date", "20261126T003818Z"},
        {"x-amz-content-sha256", sha},
        {"authorization",
         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-east-1/sms/aws4_request, "
         "SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;"
         "x-amz-content-sha256;x-amz-date;x-amz-target;x-amz-user-agent, Signature=" +
             signature}};
  };
  const std::string get_servers = R"({"maxResults":5})";
  const std::string create_job = R"({"seedReplicationTime":1795564800,"serverId":"s-12345678"})";
  Request calls[] = {
      {"POST", "/", "",
       sdk_headers("GetServers", "16", "8a99051a-a05f-498f-8cb7-d15d577c2adc",
                   "66f5fdbbd39a57504f5b26bd31c5decb10d5bd7dcca977c4a59026f6076fbcbb",
                   "a0ceb97b9c86dcb36d623947124ee6be183f4ba3f52c58dac8bf64b07bbfa4d4"),
       get_servers},
      {"POST", "/", "",
       sdk_headers("CreateReplicationJob", "58", "8e32d59b-2d7f-4466-b320-1b22172a1377",
                   "a19936699d6a31bd863d929c125c130e252822d3a19a45847048fe94e81b1066",
                   "e087a3713ed26cdf12e1d3a5681b22b891485bafe20ab2d6edf0f5e30f5d3ffa"),
       create_job},
  };
  for (auto& r : calls) {
    SCOPED_TRACE(*r.header("x-amz-target"));
    Verified v;
    ASSERT_NO_THROW(v = verify(r, only(kSuite), at("20261126T003818Z")));
    EXPECT_EQ(v.access_key_id, "AKIDEXAMPLE");
    EXPECT_EQ(v.region, "us-east-1");
    EXPECT_EQ(v.service, "sms");
    r.set_header("user-agent", "something else");  // unsigned: may change
    EXPECT_NO_THROW(verify(r, only(kSuite), at("20261126T003818Z")));
    r.set_header("amz-sdk-request", "attempt=2; max=3");  // signed
    expect_mismatch(r, only(kSuite), at("20261126T003818Z"));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// sign() then verify()

TEST(SigV4, SignedRequestVerifies) {
  SignedCall call;
  Verified v = verify(call.request, only(kSuite), call.when);
  EXPECT_EQ(v.access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(v.region, "us-east-1");
  EXPECT_EQ(v.service, "sms");
  EXPECT_EQ(*call.request.header("X-AMZ-DATE"), "20261125T003000Z");
  EXPECT_EQ(*call.request.header("x-amz-content-sha256"), sha256_hex(call.body));
  EXPECT_EQ(call.request.header("authorization")
                ->rfind("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/"
                        "sms/aws4_request, SignedHeaders=content-type;host;"
                        "x-amz-content-sha256;x-amz-date;x-amz-target, Signature=",
                        0),
            0u);
}

TEST(SigV4, SignedRequestWithPathAndQueryVerifies) {
  Request r{"GET", "/v1/servers/s-1%2F2/disks%20and%20more", "limit=10&name=web%2001&flag", {{"Host", "h:1"}}, ""};
  sign(r, kSuite, "eu-central-1", "sms", at("20261125T003000Z"));
  EXPECT_NO_THROW(verify(r, only(kSuite), at("20261125T003000Z")));
  Request other_path = r;
  other_path.path = "/v1/servers/s-1%2F2/disks%20and%20less";
  expect_mismatch(other_path, only(kSuite), at("20261125T003000Z"));
  Request other_query = r;
  other_query.query = "limit=11&name=web%2001&flag";
  expect_mismatch(other_query, only(kSuite), at("20261125T003000Z"));
}

TEST(SigV4, ResigningReplacesTheOldSignature) {
  SignedCall call;
  sign(call.request, kSuite, "us-east-1", "sms", call.when + std::chrono::minutes(1));
  int authorizations = 0;
  for (const auto& [name, value] : call.request.headers) authorizations += name == "Authorization";
  EXPECT_EQ(authorizations, 1);
  EXPECT_EQ(call.request.headers.size(), 6u);
  EXPECT_NO_THROW(verify(call.request, only(kSuite), call.when));
}

TEST(SigV4, SignRequiresAHostHeader) {
  Request r{"POST", "/", "", {{"Content-Type", "application/json"}}, "{}"};
  try {
    sign(r, kSuite, "us-east-1", "sms", at("20261125T003000Z"));
    FAIL() << "signed without Host";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kInvalidArgument);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Rejections

TEST(SigV4, MissingAuthorizationIsMissingAuthenticationToken) {
  SignedCall call;
  std::erase_if(call.request.headers, [](const auto& h) { return h.first == "Authorization"; });
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "MissingAuthenticationTokenException");
  EXPECT_EQ(e.http_status(), 403);
  EXPECT_EQ(std::string(e.what()), "Missing Authentication Token");
}

TEST(SigV4, TamperedBodyIsRejected) {
  SignedCall call;
  std::string tampered = R"({"maxResults":6})";
  call.request.body = tampered;
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()), "The provided 'x-amz-content-sha256' header does not match what was computed.");

  // Without x-amz-content-sha256 the body hash is part of the signature itself (AWS suite, post-vanilla).
  const SuiteCase& c = suite_case("post-vanilla");
  Request r = suite_request(c, c.signature);
  r.body = "x";
  expect_mismatch(r, only(kSuite), at("20150830T123600Z"));
}

// Signed by @smithy/signature-v4 (see AgreesWithTheAwsJsSdkSigner) with x-amz-content-sha256: UNSIGNED-PAYLOAD,
// which it then signs in place of the body's hash. Correctly signed, but ferry authenticates bodies.
TEST(SigV4, UnsignedPayloadIsRejected) {
  Request r{"POST",
            "/",
            "",
            {{"host", "h"},
             {"x-amz-content-sha256", "UNSIGNED-PAYLOAD"},
             {"x-amz-date", "20261125T003000Z"},
             {"authorization",
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request, "
              "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
              "Signature=f1845ff76bafda1a1e6f09710b28e90335282e5ba8b9484d5e004d52c3f2c675"}},
            "{}"};
  AuthError e = auth_error([&] { verify(r, only(kSuite), at("20261125T003000Z")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "x-amz-content-sha256 'UNSIGNED-PAYLOAD' is not accepted: this server "
            "authenticates request bodies, so the payload must be signed.");
}

TEST(SigV4, TamperedSignedHeaderIsRejected) {
  SignedCall call;
  call.request.set_header("X-Amz-Target", "AWSServerMigrationService_V2016_10_24.DeleteServerCatalog");
  expect_mismatch(call.request, only(kSuite), call.when);
}

TEST(SigV4, TamperedMethodIsRejected) {
  SignedCall call;
  call.request.method = "PUT";
  expect_mismatch(call.request, only(kSuite), call.when);
}

TEST(SigV4, AddedUnsignedHeaderIsIgnored) {
  SignedCall call;
  call.request.headers.emplace_back("User-Agent", "curl/8");
  EXPECT_NO_THROW(verify(call.request, only(kSuite), call.when));
}

TEST(SigV4, WrongSecretIsRejected) {
  SignedCall call;
  expect_mismatch(call.request, only({"AKIDEXAMPLE", "not the secret"}), call.when);
}

TEST(SigV4, UnknownAccessKeyIsUnrecognizedClient) {
  SignedCall call;
  AuthError e = auth_error([&] { verify(call.request, only({"AKIDOTHER", kSuite.secret_access_key}), call.when); });
  EXPECT_EQ(e.code(), "UnrecognizedClientException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()), "The security token included in the request is invalid.");
}

TEST(SigV4, RequestSixteenMinutesOldHasExpired) {
  SignedCall call;  // signed at 00:30:00
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), at("20261125T004600Z")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()),
            "Signature expired: 20261125T003000Z is now earlier than 20261125T003100Z (20261125T004600Z - 15 min.)");
  EXPECT_NO_THROW(verify(call.request, only(kSuite), at("20261125T004500Z")));  // exactly 15 minutes: accepted
}

TEST(SigV4, RequestSixteenMinutesAheadIsNotYetCurrent) {
  SignedCall call;
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), at("20261125T001400Z")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Signature not yet current: 20261125T003000Z is still later than 20261125T002900Z "
            "(20261125T001400Z + 15 min.)");
  EXPECT_NO_THROW(verify(call.request, only(kSuite), at("20261125T001500Z")));
}

TEST(SigV4, SkewLimitIsTheCallersChoice) {
  SignedCall call;
  AuthError e =
      auth_error([&] { verify(call.request, only(kSuite), at("20261125T003600Z"), skew(std::chrono::minutes(5))); });
  EXPECT_EQ(std::string(e.what()),
            "Signature expired: 20261125T003000Z is now earlier than 20261125T003100Z (20261125T003600Z - 5 min.)");
}

TEST(SigV4, AuthorizationWithoutItsPartsIsIncomplete) {
  SignedCall call;
  call.request.set_header("Authorization",
                          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request");
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "IncompleteSignatureException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()),
            "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' "
            "parameter. Authorization=AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request");

  // A bare token, as API Gateway users send by mistake: AWS answers with the same list.
  call.request.set_header("Authorization", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
  e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "IncompleteSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' "
            "parameter. Authorization header requires 'SignedHeaders' parameter. "
            "Authorization=eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
}

TEST(SigV4, MissingDateHeaderIsIncomplete) {
  SignedCall call;
  std::erase_if(call.request.headers, [](const auto& h) { return h.first == "X-Amz-Date"; });
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "IncompleteSignatureException");
  EXPECT_NE(std::string(e.what()).find("requires existence of either a 'X-Amz-Date' or a 'Date' header"),
            std::string::npos);
}

TEST(SigV4, MalformedAuthorizationIsIncomplete) {
  const std::string good =
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request, "
      "SignedHeaders=host;x-amz-date, Signature=00";
  struct Case {
    std::string authorization;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"Bearer eyJhbGciOiJIUzI1NiJ9",
       "'eyJhbGciOiJIUzI1NiJ9' not a valid key=value pair (missing equal-sign) in Authorization header: 'Bearer "
       "eyJhbGciOiJIUzI1NiJ9'."},
      {"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE /20261125/us-east-1/sms/aws4_request, SignedHeaders=host, "
       "Signature=00",
       "'/20261125/us-east-1/sms/aws4_request' not a valid key=value pair (missing equal-sign) in Authorization "
       "header: 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE /20261125/us-east-1/sms/aws4_request, SignedHeaders=host, "
       "Signature=00'."},
      {"AWS4-HMAC-SHA1 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request, SignedHeaders=host, Signature=00",
       "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA1'; ferry accepts only 'AWS4-HMAC-SHA256'."},
      {"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1, SignedHeaders=host, Signature=00",
       "Credential 'AKIDEXAMPLE/20261125/us-east-1' in Authorization header is not "
       "<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request."},
      {"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/sms/aws4_request, SignedHeaders=host;;x-amz-date, "
       "Signature=00",
       "SignedHeaders 'host;;x-amz-date' in Authorization header has an empty header name."},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.authorization);
    SignedCall call;
    call.request.set_header("Authorization", c.authorization);
    AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
    EXPECT_EQ(e.code(), "IncompleteSignatureException");
    EXPECT_EQ(e.http_status(), 400);
    EXPECT_EQ(std::string(e.what()), c.message);
  }

  SignedCall call;
  call.request.set_header("Authorization", good);
  call.request.set_header("X-Amz-Date", "2026-11-25T00:30:00Z");
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
  EXPECT_EQ(e.code(), "IncompleteSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Date must be in ISO-8601 'basic format'. Got '2026-11-25T00:30:00Z'. See "
            "http://en.wikipedia.org/wiki/ISO_8601");
}

TEST(SigV4, CredentialScopeMustMatchTheRequest) {
  SignedCall call;
  std::string authorization = *call.request.header("authorization");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string a = authorization;
    a.replace(a.find(from), from.size(), to);
    Request r = call.request;
    r.set_header("Authorization", a);
    return auth_error([&] { verify(r, only(kSuite), call.when); });
  };
  AuthError e = with("/20261125/", "/20261124/");
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            "from HTTP: '20261124' != '20261125', from '20261125T003000Z'.");
  e = with("/aws4_request", "/aws5_request");
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Credential should be scoped with a valid terminator: 'aws4_request', not "
            "'aws5_request'.");
  // Any region and service are accepted, but they are part of the signature.
  e = with("/us-east-1/", "/us-west-2/");
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_NE(std::string(e.what()).find("does not match the signature you provided"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------------------------
// Headers the signature must cover: Host, the header the time comes from, Content-Type and every X-Amz-* header
// sent. Each is refused, naming the header, with AWS's InvalidSignatureException, even when the signature over the
// headers it does list is right.

// A request signed over Host and Content-Type only, then given `name: value` outside the signature.
Request signed_then_added(const std::string& name, const std::string& value) {
  Request r{"POST", "/", "", {{"Host", "h"}, {"Content-Type", "application/x-amz-json-1.1"}}, R"({})"};
  sign(r, kSuite, "us-east-1", "sms", at("20261125T003000Z"));
  r.headers.emplace_back(name, value);
  return r;
}

void expect_must_be_signed(const Request& r, const std::string& header_as_sent) {
  AuthError e = auth_error([&] { verify(r, only(kSuite), at("20261125T003000Z")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()), "'" + header_as_sent + "' must be a 'SignedHeader' in the AWS Authorization.");
}

// The captured GetConnectors that became CreateRegistrationToken: its signature never covered X-Amz-Target.
TEST(SigV4, AnUnsignedTargetIsRefusedSoACapturedCallCannotBeRetargeted) {
  Request r = signed_then_added("X-Amz-Target", "AWSServerMigrationService_V2016_10_24.GetConnectors");
  expect_must_be_signed(r, "X-Amz-Target");
  r.set_header("X-Amz-Target", "FerryService_V1.CreateRegistrationToken");
  expect_must_be_signed(r, "X-Amz-Target");
}

TEST(SigV4, EveryXAmzHeaderSentMustBeSigned) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"x-amz-meta-owner", "someone"},
           {"X-AMZ-USER-AGENT", "aws-sdk-js/3.523.0"},
           // ferry has no session tokens; S3 refuses an unsigned one too (other services accept one added after
           // signing, the AWS suite's post-sts-header-after case).
           {"X-Amz-Security-Token", kStsToken}}) {
    SCOPED_TRACE(name);
    expect_must_be_signed(signed_then_added(name, value), name);
  }
  // x-amzn-* is not x-amz-*: the SDKs leave X-Amzn-Trace-Id unsigned.
  EXPECT_NO_THROW(verify(signed_then_added("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
                         only(kSuite), at("20261125T003000Z")));
}

TEST(SigV4, HostContentTypeDateAndPayloadHashMustBeSigned) {
  const std::string tail = " must be a 'SignedHeader' in the AWS Authorization.";
  for (const auto& [removed, message] : std::vector<std::pair<std::string, std::string>>{
           {"host;", "'Host' or ':authority'" + tail},
           {"content-type;", "'Content-Type'" + tail},
           {"x-amz-content-sha256;", "'X-Amz-Content-Sha256'" + tail},
           {"x-amz-date;", "'X-Amz-Date'" + tail}}) {
    SCOPED_TRACE(removed);
    SignedCall call;
    std::string a = *call.request.header("authorization");
    a.erase(a.find(removed), removed.size());
    call.request.set_header("Authorization", a);
    AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when); });
    EXPECT_EQ(e.code(), "InvalidSignatureException");
    EXPECT_EQ(e.http_status(), 400);
    EXPECT_EQ(std::string(e.what()), message);
  }
}

// The Date header must be signed when the time comes from it; beside a signed X-Amz-Date it may travel unsigned
// (the HTTP layer may add it), as in AWS's S3 PUT Object example above, which signs both.
TEST(SigV4, TheDateHeaderMustBeSignedWhenItGivesTheTime) {
  Request r{"GET",
            "/",
            "foo=Zoo&foo=aha",
            {{"Date", "Mon, 09 Sep 2011 23:36:00 GMT"},
             {"Host", "host.foo.com"},
             {"Authorization",
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20110909/us-east-1/host/aws4_request, "
              "SignedHeaders=host, "
              "Signature=be7148d34ebccdc6423b19085378aa0bee970bdc61d144bd1a8c48c33079ab09"}},
            ""};
  AuthError e = auth_error([&] { verify(r, only(kSuite), at("20110909T233600Z")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()), "'Date' must be a 'SignedHeader' in the AWS Authorization.");

  SignedCall call;  // signed with X-Amz-Date
  call.request.headers.emplace_back("Date", "Wed, 25 Nov 2026 00:30:00 GMT");
  EXPECT_NO_THROW(verify(call.request, only(kSuite), call.when));
}

// Headers outside that class may be sent unsigned, as the SDKs and the AWS CLI send them.
TEST(SigV4, OtherHeadersMayBeUnsigned) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"User-Agent", "aws-cli/1.45.11"},
           {"amz-sdk-invocation-id", "8f7ea211-7ade-42e8-b0df-6f750599da30"},
           {"Content-Length", "2"},
           {"Accept-Encoding", "identity"}}) {
    SCOPED_TRACE(name);
    EXPECT_NO_THROW(verify(signed_then_added(name, value), only(kSuite), at("20261125T003000Z")));
  }
}

// Requests signed by botocore's SigV4Auth (the AWS CLI's signer; botocore 1.43.11, service "sms", us-east-1,
// 2026-11-26T00:38:18Z) in the shape the CLI sends a JSON 1.1 call: it signs Content-Type, Host, X-Amz-Date and
// X-Amz-Target, sends no X-Amz-Content-Sha256, and adds User-Agent, amz-sdk-invocation-id, amz-sdk-request and
// Content-Length unsigned.
TEST(SigV4, VerifiesRequestsShapedAsTheAwsCliSendsThem) {
  auto cli_request = [](const std::string& target, const std::string& body, const std::string& signature) {
    Request r{"POST",
              "/",
              "",
              {{"X-Amz-Target", "AWSServerMigrationService_V2016_10_24." + target},
               {"Content-Type", "application/x-amz-json-1.1"},
               {"User-Agent", "aws-cli/1.45.11"},
               {"X-Amz-Date", "20261126T003818Z"},
               {"Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261126/us-east-1/sms/aws4_request, "
                "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" +
                    signature},
               {"amz-sdk-invocation-id", "8f7ea211-7ade-42e8-b0df-6f750599da30"},
               {"amz-sdk-request", "attempt=1"},
               {"Content-Length", std::to_string(body.size())},
               {"Host", "127.0.0.1:8443"}},
              ""};
    return std::pair{r, body};
  };
  auto options = [] {
    VerifyOptions o;
    o.service = "sms";
    return o;
  }();
  for (auto [r, body] : {cli_request("GetServers", R"({"maxResults": 5})",
                                     "11fbebd9a782dc47aebe69fe705b183e5a475d6a0b4a445df9dec46e1602d64f"),
                         cli_request("CreateReplicationJob", R"({"serverId": "s-12345678", "seedReplicationTime": 1795564800})",
                                     "e5835cf8e1df5c1732a37be802ee0f46484df082c8b95b9ec699e8845e2485f4")}) {
    SCOPED_TRACE(*r.header("x-amz-target"));
    r.body = body;
    Verified v;
    ASSERT_NO_THROW(v = verify(r, only(kSuite), at("20261126T003818Z"), options));
    EXPECT_EQ(v.service, "sms");
    r.set_header("X-Amz-Target", "FerryService_V1.CreateRegistrationToken");  // signed: a mismatch
    expect_mismatch(r, only(kSuite), at("20261126T003818Z"));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The credential scope's service

TEST(SigV4, TheScopeMustNameTheServiceTheVerifierExpects) {
  SignedCall call;  // scoped to sms
  VerifyOptions connector;
  connector.service = "ferry-connector";
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when, connector); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(e.http_status(), 400);
  EXPECT_EQ(std::string(e.what()), "Credential should be scoped to correct service: 'ferry-connector'.");

  VerifyOptions sms;
  sms.service = "sms";
  EXPECT_EQ(verify(call.request, only(kSuite), call.when, sms).service, "sms");
  EXPECT_EQ(verify(call.request, only(kSuite), call.when).service, "sms");  // no service asked: any

  // The case counts, as it does in AWS's scope check: "SMS" is another service.
  Request upper;
  upper.method = "POST";
  upper.headers = {{"Host", "h"}};
  sign(upper, kSuite, "us-east-1", "SMS", call.when);
  e = auth_error([&] { verify(upper, only(kSuite), call.when, sms); });
  EXPECT_EQ(std::string(e.what()), "Credential should be scoped to correct service: 'sms'.");
}

// AWS lists every fault of the scope in one message, region, service, terminator, then date.
TEST(SigV4, EveryFaultOfTheScopeIsNamedAtOnce) {
  SignedCall call;
  std::string a = *call.request.header("authorization");
  a.replace(a.find("20261125/us-east-1/sms/aws4_request"), 35, "20261124//other/aws5_request");
  call.request.set_header("Authorization", a);
  VerifyOptions sms;
  sms.service = "sms";
  AuthError e = auth_error([&] { verify(call.request, only(kSuite), call.when, sms); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_EQ(std::string(e.what()),
            "Credential should be scoped to a valid region, not ''. "
            "Credential should be scoped to correct service: 'sms'. "
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. "
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20261124' != "
            "'20261125', from '20261125T003000Z'.");
}

// ---------------------------------------------------------------------------------------------------------------
// Canonicalization

TEST(SigV4, HeaderNamesAreCaseInsensitiveAndValuesTrimmed) {
  Request r{"POST", "/", "", {{"Host", "h"}, {"X-Ferry-Note", "a   b  c"}}, "{}"};
  sign(r, kSuite, "us-east-1", "sms", at("20261125T003000Z"));
  EXPECT_NE(r.header("authorization")->find("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-ferry-note,"),
            std::string::npos);
  for (auto& [name, value] : r.headers) {
    if (name == "X-Ferry-Note") {
      name = "x-FERRY-note";
      value = " \t a b\t\tc ";
    }
  }
  EXPECT_NO_THROW(verify(r, only(kSuite), at("20261125T003000Z")));
  r.set_header("X-Ferry-Note", "a b c d");
  expect_mismatch(r, only(kSuite), at("20261125T003000Z"));
  r.set_header("X-Ferry-Note", "A B C");  // values keep their case
  expect_mismatch(r, only(kSuite), at("20261125T003000Z"));
}

TEST(SigV4, RepeatedHeadersAreJoinedInOrder) {
  Request r{"POST", "/", "", {{"Host", "h"}, {"X-Tag", "one"}, {"Content-Type", "text/plain"}, {"x-tag", "two"}}, ""};
  sign(r, kSuite, "us-east-1", "sms", at("20261125T003000Z"));
  EXPECT_NE(r.header("authorization")->find("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-tag,"),
            std::string::npos);
  EXPECT_NO_THROW(verify(r, only(kSuite), at("20261125T003000Z")));

  Request joined = r;  // one header line "one,two" is the same canonical header
  std::erase_if(joined.headers, [](const auto& h) { return h.first == "x-tag"; });
  joined.set_header("X-Tag", "one,two");
  EXPECT_NO_THROW(verify(joined, only(kSuite), at("20261125T003000Z")));

  Request swapped = r;  // but the order of the values is signed
  for (auto& [name, value] : swapped.headers)
    if (name == "X-Tag" || name == "x-tag") value = value == "one" ? "two" : "one";
  expect_mismatch(swapped, only(kSuite), at("20261125T003000Z"));
}

TEST(SigV4, EquivalentPathsAndQueriesVerify) {
  Request r{"GET", "/a/c/", "b=2&a=x%2Fy&empty=", {{"Host", "h"}}, ""};
  sign(r, kSuite, "us-east-1", "sms", at("20261125T003000Z"));
  for (const auto& [path, query] : std::vector<std::pair<std::string, std::string>>{
           {"/a/./b/../c/", "a=x/y&b=2&empty"}, {"//a//c/", "empty=&a=x%2fy&b=2"}, {"/a/c/", "&b=2&&a=x%2Fy&empty="}}) {
    SCOPED_TRACE(path + "?" + query);
    Request same = r;
    same.path = path;
    same.query = query;
    EXPECT_NO_THROW(verify(same, only(kSuite), at("20261125T003000Z")));
  }
  for (const auto& [path, query] : std::vector<std::pair<std::string, std::string>>{
           {"/a/c", "b=2&a=x%2Fy&empty="}, {"/a/c/", "b=2&a=x%2Fy"}, {"/a/c/", "b=2&a=x%2Fy&empty=&b=2"}}) {
    SCOPED_TRACE(path + "?" + query);
    Request other = r;
    other.path = path;
    other.query = query;
    expect_mismatch(other, only(kSuite), at("20261125T003000Z"));
  }
}

TEST(SigV4, RequestHeaderLookupIsCaseInsensitive) {
  Request r;
  r.headers = {{"Content-Type", "a"}, {"content-type", "b"}, {"Host", "h"}};
  EXPECT_EQ(*r.header("CONTENT-TYPE"), "a");
  EXPECT_FALSE(r.header("content-length"));
  r.set_header("CONTENT-type", "c");
  EXPECT_EQ(r.headers, (Headers{{"CONTENT-type", "c"}, {"Host", "h"}}));
  r.set_header("X-New", "n");
  EXPECT_EQ(r.headers.back(), (std::pair<std::string, std::string>{"X-New", "n"}));
}

TEST(SigV4, Sha256HexMatchesFips180Vectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

namespace {

// A body that authenticates itself (a sealed pack) may travel UNSIGNED-PAYLOAD where the verifier allows it;
// the headers, the path and the key are still signed, and a request that does hash its body is still held to it.
TEST(SigV4, UnsignedPayloadIsAcceptedOnlyWhereAllowed) {
  Credentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
  auto now = at("20261125T003000Z");
  std::string body(1 << 20, 'p');
  Request r;
  r.method = "PUT";
  r.path = "/connector/v1/runs/sms-run-1/packs/ab";
  r.headers = {{"Host", "127.0.0.1:8443"}, {"X-Amz-Content-Sha256", kUnsignedPayload}};
  r.body = body;
  sign(r, creds, "us-east-1", "ferry-connector", now);
  EXPECT_EQ(*r.header("x-amz-content-sha256"), kUnsignedPayload);
  auto secret = only(creds);
  EXPECT_EQ(verify(r, secret, now, unsigned_payload_ok()).access_key_id, "AKIDEXAMPLE");
  AuthError refused = auth_error([&] { verify(r, secret, now); });  // not allowed by default
  EXPECT_NE(std::string(refused.what()).find("'UNSIGNED-PAYLOAD' is not accepted"), std::string::npos) << refused.what();
  Request moved = r;
  moved.path = "/connector/v1/runs/sms-run-2/packs/ab";  // the path stays signed
  AuthError e = auth_error([&] { verify(moved, secret, now, unsigned_payload_ok()); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");

  // Allowing UNSIGNED-PAYLOAD does not relax a request that signs its body's hash: a changed body is refused.
  Request hashed;
  hashed.method = "PUT";
  hashed.path = r.path;
  hashed.headers = {{"Host", "127.0.0.1:8443"}};
  hashed.body = body;
  sign(hashed, creds, "us-east-1", "ferry-connector", now);
  EXPECT_EQ(verify(hashed, secret, now, unsigned_payload_ok()).access_key_id, "AKIDEXAMPLE");
  std::string tampered = body;
  tampered[12345] = 'q';
  hashed.body = tampered;
  EXPECT_THROW(verify(hashed, secret, now, unsigned_payload_ok()), AuthError);
}

}  // namespace

// headers_only: the signature is checked before the body is read, against the hash the client claims; the body
// read afterwards must match it.
TEST(SigV4, HeadersOnlyVerifiesTheClaimedHashThenTheBody) {
  Credentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
  auto now = std::chrono::system_clock::now();
  Request r;
  r.method = "PUT";
  r.path = "/connector/v1/runs/r/packs/p";
  r.headers = {{"Host", "127.0.0.1:8443"}};
  std::string body = "the body";
  r.body = body;
  sign(r, creds, "us-east-1", "ferry-connector", now);
  SecretLookup secret = [&](const std::string&) -> std::optional<std::string> { return creds.secret_access_key; };
  Request headers = r;
  headers.body = {};
  Verified v = verify(headers, secret, now, headers_only("ferry-connector"));
  EXPECT_TRUE(body_matches(v, body));
  EXPECT_FALSE(body_matches(v, "another body"));
  // The wrong service in the credential scope is refused.
  AuthError e = auth_error([&] { verify(headers, secret, now, headers_only("sms")); });
  EXPECT_EQ(e.code(), "InvalidSignatureException");
  EXPECT_NE(std::string(e.what()).find("'sms'"), std::string::npos);
  // Without a claimed hash there is nothing to check the headers against.
  Request bare = headers;
  std::erase_if(bare.headers, [](auto& h) { return h.first == "X-Amz-Content-Sha256"; });
  EXPECT_THROW(verify(bare, secret, now, headers_only("")), AuthError);
}
