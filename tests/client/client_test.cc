// client::resolve_profile: where endpoint, key and region come from, as in the AWS CLI (flags, then the environment,
// then the profile in the config file), with a real config file written by save_profile; and the refusal of plain
// HTTP to anything but loopback.
#include "client/client.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "common/error.h"
#include "fixtures/fixtures.h"

using namespace ferry;

namespace {

class ProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : kVars) unsetenv(v);
    setenv("FERRY_CONFIG", config().c_str(), 1);
    client::Profile saved;
    saved.endpoint = "http://file-host:8443";
    saved.credentials = {"AKIAFILE", "file-secret"};
    saved.region = "ap-south-1";
    client::save_profile(config(), "demo", saved);
    saved.endpoint = "http://default-host:8443";
    client::save_profile(config(), "default", saved);
  }
  void TearDown() override {
    for (const char* v : kVars) unsetenv(v);
  }
  std::string config() const { return (tmp_.path() / "config").string(); }
  static client::Profile none() {
    client::Profile p;
    p.region.clear();  // as the CLI passes it when --region is not given
    return p;
  }

  static constexpr const char* kVars[] = {"FERRY_CONFIG", "FERRY_PROFILE", "FERRY_ENDPOINT", "AWS_ACCESS_KEY_ID",
                                          "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "FERRY_CA_FILE"};
  ferry::testing::TempDir tmp_;
};

TEST_F(ProfileTest, TheNamedProfileThenTheEnvironmentThenFlags) {
  auto p = client::resolve_profile("demo", none());
  EXPECT_EQ(p.endpoint, "http://file-host:8443");
  EXPECT_EQ(p.credentials.access_key_id, "AKIAFILE");
  EXPECT_EQ(p.region, "ap-south-1");

  setenv("FERRY_ENDPOINT", "env-host:9000", 1);  // no scheme: http is assumed
  setenv("AWS_REGION", "eu-west-1", 1);
  p = client::resolve_profile("demo", none());
  EXPECT_EQ(p.endpoint, "http://env-host:9000");
  EXPECT_EQ(p.region, "eu-west-1");
  EXPECT_EQ(p.credentials.secret_access_key, "file-secret");

  auto flags = none();
  flags.endpoint = "https://flag-host:1/";
  flags.region = "us-east-1";  // given explicitly: it wins over AWS_REGION even though it is the default's value
  p = client::resolve_profile("demo", flags);
  EXPECT_EQ(p.endpoint, "https://flag-host:1");
  EXPECT_EQ(p.region, "us-east-1");
}

TEST_F(ProfileTest, DefaultProfileAndDefaultRegion) {
  EXPECT_EQ(client::resolve_profile("", none()).endpoint, "http://default-host:8443");
  setenv("FERRY_PROFILE", "demo", 1);
  EXPECT_EQ(client::resolve_profile("", none()).endpoint, "http://file-host:8443");
  client::Profile bare;
  bare.endpoint = "http://x:1";
  bare.credentials = {"AKIABARE", "s"};
  bare.region.clear();
  client::save_profile(config(), "bare", bare);
  EXPECT_EQ(client::resolve_profile("bare", none()).region, "us-east-1");
}

TEST_F(ProfileTest, AMissingProfileOrKeyIsNamed) {
  try {
    client::resolve_profile("nope", none());
    ADD_FAILURE() << "no error for a missing profile";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos) << e.what();
  }
  client::Profile keyless;
  keyless.endpoint = "http://x:1";
  client::save_profile(config(), "keyless", keyless);
  try {
    client::resolve_profile("keyless", none());
    ADD_FAILURE() << "no error for a profile without a key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no access key"), std::string::npos) << e.what();
  }
}

TEST_F(ProfileTest, InsecureHttpComesFromTheCaller) {
  auto flags = none();
  EXPECT_FALSE(client::resolve_profile("demo", flags).insecure_http);
  flags.insecure_http = true;
  EXPECT_TRUE(client::resolve_profile("demo", flags).insecure_http);
}

TEST(Loopback, OnlyTheLoopbackInterfaceIsLoopback) {
  for (const char* host : {"127.0.0.1", "127.255.255.254", "127.0.1.1", "::1", "[::1]", "0:0:0:0:0:0:0:1",
                           "::ffff:127.0.0.1", "[::ffff:127.9.9.9]", "localhost", "LocalHost"})
    EXPECT_TRUE(client::is_loopback_host(host)) << host;
  for (const char* host : {"", "0.0.0.0", "::", "[::]", "128.0.0.1", "126.255.255.255", "192.0.2.1", "10.0.0.1",
                           "fd00::2", "::ffff:10.0.0.1", "::2", "localhost.example.com", "127.0.0.1.example.com",
                           "my-localhost", "127.1", "[127.0.0.1]", "ferry.example.com"})
    EXPECT_FALSE(client::is_loopback_host(host)) << host;
}

// Plain HTTP would carry registration tokens, a connector's new secret and disk data in clear text: a Client
// refuses it to any host but loopback, unless the profile says insecure_http (--insecure-http).
TEST(Loopback, AClientRefusesPlainHttpOffLoopback) {
  auto profile = [](const std::string& endpoint, bool insecure = false) {
    client::Profile p;
    p.endpoint = endpoint;
    p.credentials = {"AKIDEXAMPLE", "secret"};
    p.insecure_http = insecure;
    return p;
  };
  for (const auto& [endpoint, host] : std::vector<std::pair<std::string, std::string>>{
           {"http://192.0.2.1:8443", "192.0.2.1"},
           {"HTTP://ferry.example.com", "ferry.example.com"},
           {"ferry.example.com:8443", "ferry.example.com"},  // no scheme: httplib speaks plain HTTP
           {"http://[fd00::2]:8443/", "[fd00::2]"},
           {"http://127.0.0.1@192.0.2.1:8443", "192.0.2.1"},  // the host is after the user info
           {"http://0.0.0.0:8443", "0.0.0.0"}}) {
    SCOPED_TRACE(endpoint);
    try {
      client::Client c(profile(endpoint));
      ADD_FAILURE() << "plain HTTP to " << endpoint << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      std::string what = e.what();
      EXPECT_NE(what.find("refusing plain HTTP to " + endpoint), std::string::npos) << what;
      EXPECT_NE(what.find("'" + host + "' is not a loopback address"), std::string::npos) << what;
      EXPECT_NE(what.find("--insecure-http"), std::string::npos) << what;
    }
    EXPECT_NO_THROW(client::Client(profile(endpoint, true)));
  }
  for (const char* endpoint : {"http://127.0.0.1:8443", "http://127.3.4.5:1", "http://[::1]:8443", "http://localhost:8443",
                               "127.0.0.1:8443", "https://ferry.example.com:8443", "HTTPS://192.0.2.1"})
    EXPECT_NO_THROW(client::Client(profile(endpoint))) << endpoint;
}

}  // namespace
