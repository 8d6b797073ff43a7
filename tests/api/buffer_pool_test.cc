// The pack buffer pool (src/api/buffer_pool.h): its cap on leased and pooled bytes, idle buffers unmapped with their
// memory back to the system (measured as this process's resident memory), leases never larger than asked for.
// Time is the test's own clock, moved by hand.
#include "api/buffer_pool.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace ferry::api {
namespace {

using namespace std::chrono_literals;
constexpr size_t MiB = size_t{1} << 20;

// Resident memory of this process (VmRSS).
size_t rss() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// A pool on a clock the test moves.
struct Clocked {
  explicit Clocked(size_t max_bytes) {
    BufferPool::Options o;
    o.max_bytes = max_bytes;
    o.max_idle = 5s;
    o.now = [this] { return now; };
    o.reaper = false;
    pool = std::make_unique<BufferPool>(o);
  }
  BufferPool::Clock::time_point now{};
  std::unique_ptr<BufferPool> pool;
};

void touch(BufferPool::Lease& lease) { std::memset(lease.data(), 0x5a, lease.capacity()); }

TEST(BufferPool, AnIdleBufferIsUnmappedAndItsMemoryGoesBack) {
  Clocked c(1024 * MiB);
  size_t before = rss();
  {
    auto lease = c.pool->try_take(100 * MiB);
    ASSERT_TRUE(lease);
    touch(*lease);
  }
  EXPECT_EQ(c.pool->pooled_bytes(), 100 * MiB);
  EXPECT_GT(rss(), before + 90 * MiB) << "a returned buffer stays for the next upload";
  c.now += 4s;
  c.pool->trim();
  EXPECT_EQ(c.pool->pooled_bytes(), 100 * MiB) << "not idle long enough";
  c.now += 2s;
  c.pool->trim();
  EXPECT_EQ(c.pool->pooled_bytes(), 0u);
  EXPECT_LT(rss(), before + 10 * MiB) << "an unmapped buffer's memory is back with the system";
}

TEST(BufferPool, AReturnedBufferIsReused) {
  Clocked c(1024 * MiB);
  char* first;
  {
    auto lease = c.pool->try_take(16 * MiB);
    ASSERT_TRUE(lease);
    first = lease->data();
  }
  auto again = c.pool->try_take(16 * MiB - 4096);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->data(), first);
  EXPECT_EQ(c.pool->pooled_bytes(), 0u);
}

TEST(BufferPool, LeasedAndPooledBytesNeverExceedTheCap) {
  Clocked c(64 * MiB);
  auto a = c.pool->try_take(40 * MiB);
  ASSERT_TRUE(a);
  touch(*a);
  EXPECT_FALSE(c.pool->try_take(30 * MiB)) << "40 + 30 MiB leased is over the 64 MiB cap";
  EXPECT_FALSE(c.pool->try_take(65 * MiB));
  a.reset();
  EXPECT_EQ(c.pool->pooled_bytes(), 40 * MiB);
  // 20 MiB reuses the 40 MiB buffer, cut to 20; then 30 MiB more fits beside it (20 + 30 <= 64).
  auto b = c.pool->try_take(20 * MiB);
  auto d = c.pool->try_take(30 * MiB);
  ASSERT_TRUE(b && d);
  touch(*d);
  EXPECT_EQ(c.pool->leased_bytes(), 50 * MiB);
  b.reset();
  d.reset();
  EXPECT_EQ(c.pool->pooled_bytes(), 50 * MiB);
  // 60 MiB fits no pooled buffer: both are unmapped to make room for a new one.
  size_t before = rss();
  auto e = c.pool->try_take(60 * MiB);
  ASSERT_TRUE(e);
  EXPECT_EQ(c.pool->pooled_bytes(), 0u);
  EXPECT_LE(c.pool->leased_bytes() + c.pool->pooled_bytes(), 64 * MiB);
  touch(*e);
  EXPECT_LT(rss(), before + 20 * MiB) << "the freed 50 MiB made room for the new 60";
}

TEST(BufferPool, ALeaseIsNoLargerThanItsSizeRoundedToAMebibyte) {
  Clocked c(1024 * MiB);
  size_t before = rss();
  {
    auto big = c.pool->try_take(300 * MiB);
    ASSERT_TRUE(big);
    touch(*big);
  }
  EXPECT_GT(rss(), before + 290 * MiB);
  auto small = c.pool->try_take(16 * MiB + 1);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->capacity(), 17 * MiB);
  EXPECT_EQ(c.pool->leased_bytes(), 17 * MiB);
  EXPECT_EQ(c.pool->pooled_bytes(), 0u) << "the 300 MiB buffer was cut to the lease, not kept whole";
  EXPECT_LT(rss(), before + 30 * MiB) << "the rest of it went back to the system";
}

TEST(BufferPool, TheReaperFreesIdleBuffersByItself) {
  BufferPool::Options o;
  o.max_idle = 0ms;
  BufferPool pool(o);
  { ASSERT_TRUE(pool.try_take(8 * MiB)); }
  // The reaper wakes every second; a generous wait, not a measurement.
  for (int i = 0; i < 300 && pool.pooled_bytes() > 0; ++i) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pool.pooled_bytes(), 0u);
}

}  // namespace
}  // namespace ferry::api
