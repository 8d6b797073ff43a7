// client::resolve_profile: where endpoint, key and region come from, as in the AWS CLI (flags, then the environment,
// then the profile in the config file), with a real config file written by save_profile.
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

}  // namespace
