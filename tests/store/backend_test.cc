// store::Backend on a local directory: pack writers with and without O_DIRECT keep every byte, whatever the
// sizes and alignment of the appends; direct packs really bypass the page cache; abandoned writers leave nothing.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <random>

#include "common/buffer.h"
#include "common/error.h"
#include "fixtures/fixtures.h"
#include "store/backend.h"

namespace fx = ferry::testing;
using namespace ferry::store;

namespace {

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::filesystem::path pack_path(const std::filesystem::path& store, const std::string& name) {
  return store / "packs" / name.substr(0, 2) / name;
}

std::string name_for(int i) {
  char n[65];
  std::snprintf(n, sizeof n, "%064x", i + 1);
  return n;
}

// Appends in the given pieces; `aligned` copies the content into page-aligned memory first (a received pack).
struct Pattern {
  std::string what;
  std::vector<size_t> pieces;
  bool aligned;
};

class PackWriterTest : public ::testing::TestWithParam<bool> {
 protected:
  fx::TempDir tmp_;
};

TEST_P(PackWriterTest, EveryAppendPatternKeepsEveryByte) {
  auto backend = open_local_backend(tmp_.path() / "store", true, GetParam());
  const size_t M = 1 << 20;
  std::vector<Pattern> patterns = {
      {"empty", {}, false},
      {"one byte", {1}, false},
      {"one block less a byte", {4095}, true},
      {"one block", {4096}, true},
      {"stage size exactly", {M}, true},
      {"aligned, 3 MiB + 7", {3 * M + 7}, true},
      {"unaligned memory, 3 MiB + 7", {3 * M + 7}, false},
      {"aligned 2 MiB then small pieces", {2 * M, 10, 4086, 1, M + 5}, true},
      {"small then large (offset no longer aligned)", {100, 2 * M + 3, 9000}, true},
      {"many blob-sized pieces", std::vector<size_t>(40, 70001), false},
      {"large, then large again after an unaligned tail", {M + 1, 2 * M}, true},
  };
  for (size_t i = 0; i < patterns.size(); i++) {
    const auto& p = patterns[i];
    SCOPED_TRACE(p.what);
    size_t total = 0;
    for (size_t n : p.pieces) total += n;
    std::string content = random_bytes(total, static_cast<uint32_t>(i));
    auto w = backend->create(ObjectType::kPack);
    size_t off = 0;
    for (size_t n : p.pieces) {
      if (p.aligned) {
        auto buf = ferry::make_aligned_buffer(n + 1);
        std::memcpy(buf.get(), content.data() + off, n);
        w->append(std::string_view(buf.get(), n));
      } else {
        w->append(std::string_view(content).substr(off, n));
      }
      off += n;
    }
    EXPECT_EQ(w->size(), total);
    std::string name = name_for(static_cast<int>(i));
    w->commit(name);
    std::string back = fx::read_file(pack_path(tmp_.path() / "store", name));
    ASSERT_EQ(back.size(), total);
    EXPECT_TRUE(back == content) << "content differs";
    EXPECT_EQ(backend->get(ObjectType::kPack, name), content);
  }
  // Nothing is left in the staging directory.
  EXPECT_TRUE(std::filesystem::is_empty(tmp_.path() / "store" / "tmp"));
}

TEST_P(PackWriterTest, AnAbandonedWriterLeavesNothing) {
  auto backend = open_local_backend(tmp_.path() / "store", true, GetParam());
  {
    auto w = backend->create(ObjectType::kPack);
    auto buf = ferry::make_aligned_buffer(3 << 20);
    std::memset(buf.get(), 7, 3 << 20);
    w->append(std::string_view(buf.get(), (3 << 20) - 5));
  }
  EXPECT_TRUE(std::filesystem::is_empty(tmp_.path() / "store" / "tmp"));
  EXPECT_TRUE(backend->list(ObjectType::kPack).empty());
}

INSTANTIATE_TEST_SUITE_P(DirectIo, PackWriterTest, ::testing::Bool(), [](const auto& info) { return info.param ? "direct" : "buffered"; });

// Resident pages of a file, by mincore over a mapping (mapping does not bring pages in).
size_t resident_pages(const std::filesystem::path& p, size_t size) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("open " + p.string());
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw std::runtime_error("mmap " + p.string());
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size + page - 1) / page);
  int rc = ::mincore(m, size, vec.data());
  ::munmap(m, size);
  if (rc != 0) throw std::runtime_error("mincore");
  size_t n = 0;
  for (auto v : vec) n += v & 1;
  return n;
}

bool supports_direct(const std::filesystem::path& dir) {
  int fd = ::open((dir / "probe").c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  if (fd < 0) return false;
  ::close(fd);
  std::filesystem::remove(dir / "probe");
  return true;
}

// The point of direct I/O: a store's packs do not pass through (and fill) the page cache. Buffered, every page
// of a just-written pack is resident; direct, at most the partial last block is.
TEST(PackWriterCache, DirectPacksBypassThePageCacheBufferedOnesDoNot) {
  fx::TempDir tmp;
  if (!supports_direct(tmp.path())) GTEST_SKIP() << "the file system under " << tmp.path() << " does not take O_DIRECT";
  const size_t size = (8 << 20) + 100;
  auto buf = ferry::make_aligned_buffer(size);
  std::string content = random_bytes(size, 99);
  std::memcpy(buf.get(), content.data(), size);
  for (bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct" : "buffered");
    auto store = tmp.path() / (direct ? "direct" : "buffered");
    auto backend = open_local_backend(store, true, direct);
    auto w = backend->create(ObjectType::kPack);
    w->append(std::string_view(buf.get(), size));
    std::string name = name_for(direct ? 1 : 2);
    w->commit(name);
    size_t pages = (size + 4095) / 4096;
    size_t resident = resident_pages(pack_path(store, name), size);
    if (direct) EXPECT_LE(resident, 1u) << "of " << pages << " pages";
    else EXPECT_GT(resident, pages / 2) << "of " << pages << " pages (the check itself sees cached pages)";
    EXPECT_TRUE(backend->get(ObjectType::kPack, name) == content);
  }
}

}  // namespace
