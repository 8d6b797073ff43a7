// Secrets and the keys derived from them do not outlive their use in freed memory. This binary replaces the global
// operator new and delete (malloc and free underneath) so that, while a scan is on, every heap block is searched for
// the secret, "AWS4" + secret and the SigV4 keys derived from it just before it is freed; the tests sign, verify, and
// resolve, save and use client profiles, and expect no freed block to have held any of them.
#include <malloc.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <optional>
#include <string>

#include "auth/sigv4.h"
#include "client/client.h"
#include "common/error.h"
#include "fixtures/fixtures.h"

namespace {

// What a scan looks for. Fixed storage: the scan runs inside operator delete and must not allocate.
struct Needle {
  unsigned char bytes[64];
  size_t size = 0;
  const char* what = "";
};
Needle g_needles[8];
std::atomic<int> g_needle_count{0};
std::atomic<bool> g_scanning{false};
std::atomic<int> g_found{0};
const char* g_first_found = nullptr;

void scan_before_free(void* p) {
  if (!p || !g_scanning.load(std::memory_order_relaxed)) return;
  size_t size = malloc_usable_size(p);
  for (int i = 0; i < g_needle_count.load(); i++) {
    const Needle& n = g_needles[i];
    if (memmem(p, size, n.bytes, n.size)) {
      if (g_found.fetch_add(1) == 0) g_first_found = n.what;
    }
  }
}

}  // namespace

void* operator new(std::size_t size) {
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept {
  scan_before_free(p);
  std::free(p);
}
void operator delete[](void* p) noexcept { ::operator delete(p); }
void operator delete(void* p, std::size_t) noexcept { ::operator delete(p); }
void operator delete[](void* p, std::size_t) noexcept { ::operator delete(p); }

namespace {

using namespace ferry;

// Longer than any small-string buffer, so every copy of it lives on the heap.
constexpr const char kSecret[] = "wipe-test-SECRET-0123456789-abcdefghijklmnopqrstuvwxyz";
constexpr const char kDate[] = "20261125";

// Looks for all of `bytes` but the first: a string that was only cleared (its first byte zeroed) still counts.
void add_needle(const void* bytes, size_t size, const char* what) {
  Needle& n = g_needles[g_needle_count.load()];
  std::memcpy(n.bytes, static_cast<const unsigned char*>(bytes) + 1, size - 1);
  n.size = size - 1;
  n.what = what;
  g_needle_count++;
}

void hmac(const void* key, size_t key_size, const char* data, unsigned char (&out)[32]) {
  unsigned int len = 0;
  HMAC(EVP_sha256(), key, static_cast<int>(key_size), reinterpret_cast<const unsigned char*>(data), strlen(data), out,
       &len);
}

// Looks for the secret, "AWS4" + secret, and the keys AWS derives from it for kDate/us-east-1/`service`.
void look_for_the_secret_and_its_keys(const char* service) {
  g_needle_count = 0;
  add_needle(kSecret, sizeof kSecret - 1, "the secret");
  char k_secret[sizeof kSecret + 4] = "AWS4";
  std::strcat(k_secret, kSecret);
  add_needle(k_secret, std::strlen(k_secret), "AWS4 + the secret");
  unsigned char k[32], next[32];
  hmac(k_secret, std::strlen(k_secret), kDate, k);
  add_needle(k, 32, "kDate");
  const char* parts[] = {"us-east-1", service, "aws4_request"};
  const char* names[] = {"kRegion", "kService", "kSigning"};
  for (int i = 0; i < 3; i++) {
    hmac(k, 32, parts[i], next);
    std::memcpy(k, next, 32);
    add_needle(k, 32, names[i]);
  }
}

// Runs `f` with the scan on; returns how many freed blocks held a needle.
int freed_blocks_holding_secrets(const std::function<void()>& f) {
  g_found = 0;
  g_first_found = nullptr;
  g_scanning = true;
  f();
  g_scanning = false;
  return g_found.load();
}

auth::Credentials credentials() {
  auth::Credentials c;
  c.access_key_id = "AKIDEXAMPLE";
  c.secret_access_key.assign(kSecret);
  return c;
}

std::chrono::system_clock::time_point at_date() {
  return std::chrono::sys_days(std::chrono::year(2026) / 11 / 25) + std::chrono::minutes(30);
}

TEST(Wipe, WipeZeroesTheWholeBufferInPlace) {
  std::string s(100, 'x');
  s.resize(10);
  const char* data = s.data();
  size_t capacity = s.capacity();
  auth::wipe(s);
  EXPECT_TRUE(s.empty());
  ASSERT_EQ(s.data(), data);  // the same buffer, not a new one
  for (size_t i = 0; i < capacity; i++) ASSERT_EQ(data[i], '\0') << "byte " << i;
}

TEST(Wipe, CredentialsWipeTheirSecretWhenDestroyed) {
  look_for_the_secret_and_its_keys("sms");
  EXPECT_EQ(freed_blocks_holding_secrets([] { auth::Credentials c = credentials(); }), 0) << g_first_found;

  // A secret short enough to live inside the object (no heap block): destroyed in storage we own and read after.
  alignas(auth::Credentials) unsigned char storage[sizeof(auth::Credentials)];
  auto* c = new (storage) auth::Credentials{"AKID", "short-secret"};
  c->~Credentials();
  EXPECT_EQ(memmem(storage, sizeof storage, "hort-secret", 11), nullptr);  // not only cleared: wiped
}

TEST(Wipe, SigningLeavesNeitherTheSecretNorItsKeysBehind) {
  look_for_the_secret_and_its_keys("sms");
  auth::Credentials creds = credentials();
  int found = freed_blocks_holding_secrets([&] {
    auth::Request r;
    r.method = "POST";
    r.headers = {{"Host", "127.0.0.1:8443"}, {"X-Amz-Target", "AWSServerMigrationService_V2016_10_24.GetServers"}};
    auth::sign(r, creds, "us-east-1", "sms", at_date());
  });
  EXPECT_EQ(found, 0) << g_first_found;
}

TEST(Wipe, VerifyingWipesTheLookedUpSecretAndTheKeys) {
  look_for_the_secret_and_its_keys("ferry-connector");
  auth::Request r;
  r.method = "GET";
  r.path = "/connector/v1/stores/plain/chunks";
  r.headers = {{"Host", "127.0.0.1:8443"}};
  auth::sign(r, credentials(), "us-east-1", "ferry-connector", at_date());
  int found = freed_blocks_holding_secrets([&] {
    auth::SecretLookup lookup = [](const std::string&) { return std::optional<std::string>(kSecret); };
    EXPECT_EQ(auth::verify(r, lookup, at_date()).access_key_id, "AKIDEXAMPLE");
    r.set_header("Host", "127.0.0.1:8444");  // a mismatch: the keys are wiped on the way out of an error too
    EXPECT_THROW(auth::verify(r, lookup, at_date()), auth::AuthError);
  });
  EXPECT_EQ(found, 0) << g_first_found;
}

// A profile saved to the config file, resolved from it, and used by a Client that signs a request (to a port where
// nothing listens): neither the file's text, nor the parsed file, nor any profile copy leaves the secret in freed
// memory.
TEST(Wipe, ProfilesAndClientsLeaveNoCopyOfTheSecret) {
  ferry::testing::TempDir tmp;
  std::string config = (tmp.path() / "config").string();
  setenv("FERRY_CONFIG", config.c_str(), 1);
  for (const char* v : {"FERRY_PROFILE", "FERRY_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"})
    unsetenv(v);
  look_for_the_secret_and_its_keys("sms");
  int found = freed_blocks_holding_secrets([&] {
    {
      client::Profile p;
      p.endpoint = "http://127.0.0.1:1";
      p.credentials = credentials();
      client::save_profile(config, "other", p);
      client::save_profile(config, "wiped", p);  // rewrites the file: read, parsed, written again
    }
    client::Profile overrides;
    overrides.region.clear();
    client::Client c(client::resolve_profile("wiped", overrides));
    c.set_retry_for(std::chrono::seconds(0));
    EXPECT_THROW(c.sms("GetServers"), Error);  // signed, then refused by the closed port
  });
  unsetenv("FERRY_CONFIG");
  EXPECT_EQ(found, 0) << g_first_found;
}

// The scan finds what it looks for: an unwiped copy of the secret, freed, is seen.
TEST(Wipe, TheScanSeesAnUnwipedCopy) {
  look_for_the_secret_and_its_keys("sms");
  EXPECT_EQ(freed_blocks_holding_secrets([] { std::string copy(kSecret); }), 1);
}

}  // namespace
