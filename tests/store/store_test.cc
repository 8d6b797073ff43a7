// store::Repository on a real directory: keys, dedup, crash leftovers, snapshots, check and prune.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <set>

#include "common/error.h"
#include "fixtures/fixtures.h"
#include "store/maintenance.h"
#include "store/repository.h"

namespace fx = ferry::testing;
using namespace ferry::store;

namespace {

class StoreTest : public ::testing::Test {
 protected:
  std::filesystem::path dir() const { return tmp_.path() / "store"; }
  Keyring keyring() const { return Keyring(tmp_.path() / "keyring"); }

  std::unique_ptr<Repository> init_and_open(bool encrypt, uint32_t pack_size = 1 << 20) {
    InitOptions o;
    o.encrypt = encrypt;
    o.key_id = encrypt ? "k1" : "";
    o.pack_size = pack_size;
    if (encrypt && !keyring().has("k1")) keyring().create("k1");
    Repository::init(*open_local_backend(dir(), true), o, keyring());
    return open();
  }
  std::unique_ptr<Repository> open() { return Repository::open(open_local_backend(dir(), false), keyring()); }

  static std::string chunk(uint32_t seed, size_t len = 64 * 1024) {
    std::mt19937 rng(seed);
    std::string s(len, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  }

  // Stores chunks with the given seeds as one run and saves a snapshot listing them at indexes 0..n-1.
  Snapshot store_snapshot(Repository& repo, const std::vector<uint32_t>& seeds, const std::string& name) {
    auto codec = repo.new_codec();
    auto writer = repo.begin_write();
    Snapshot s;
    s.name = name;
    s.chunk_size = repo.config().chunk_size;
    s.size = uint64_t{s.chunk_size} * (seeds.size() + 2);  // two trailing zero chunks
    for (size_t i = 0; i < seeds.size(); i++) {
      std::string data = chunk(seeds[i]);
      ChunkId id = codec->chunk_id(data.data(), data.size());
      writer->add(*codec, id, data.data(), data.size());
      s.chunks.emplace_back(i, id);
    }
    writer->commit();
    s.digest = s.compute_digest();
    repo.save_snapshot(s);
    return s;
  }

  size_t count_files(const std::string& sub) const {
    size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir() / sub))
      if (e.is_regular_file()) n++;
    return n;
  }

  fx::TempDir tmp_;
};

TEST_F(StoreTest, EncryptedStoreOpensOnlyWithItsMasterKey) {
  auto repo = init_and_open(true);
  EXPECT_TRUE(repo->config().encrypted);
  store_snapshot(*repo, {1, 2}, "disk");
  repo.reset();
  // Replace the master key with another one: opening fails before anything is read.
  std::filesystem::remove(keyring().dir() / "k1.key");
  keyring().create("k1");
  try {
    open();
    FAIL() << "a wrong master key must not open the store";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kCrypto);
    EXPECT_NE(std::string(e.what()).find("master key 'k1'"), std::string::npos) << e.what();
  }
  std::filesystem::remove(keyring().dir() / "k1.key");
  try {
    open();
    FAIL() << "a missing master key must not open the store";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("not in keyring"), std::string::npos) << e.what();
  }
}

TEST_F(StoreTest, NothingOnDiskIsPlaintext) {
  auto repo = init_and_open(true);
  std::string text(64 * 1024, 'A');
  for (size_t i = 0; i < text.size(); i += 64) std::memcpy(&text[i], "FERRY-PLAINTEXT-MARKER", 22);
  auto codec = repo->new_codec();
  auto writer = repo->begin_write();
  writer->add(*codec, codec->chunk_id(text.data(), text.size()), text.data(), text.size());
  writer->commit();
  for (auto& e : std::filesystem::recursive_directory_iterator(dir())) {
    if (e.is_regular_file()) {
      EXPECT_EQ(fx::read_file(e.path()).find("FERRY-PLAINTEXT"), std::string::npos) << e.path();
    }
  }
}

TEST_F(StoreTest, DuplicateChunksAreStoredOnceAcrossRuns) {
  auto repo = init_and_open(false);
  auto a = store_snapshot(*repo, {1, 2, 3, 1, 1}, "a");
  size_t chunks = repo->chunk_count();
  EXPECT_EQ(chunks, 3u);
  auto b = store_snapshot(*repo, {3, 2, 1}, "b");
  EXPECT_EQ(repo->chunk_count(), 3u);
  // After reopening, every chunk reads back and authenticates.
  repo = open();
  auto codec = repo->new_codec();
  std::string out(64 * 1024, '\0');
  for (auto& [index, id] : repo->load_snapshot(b.id).chunks) {
    repo->read_chunk(*codec, id, out.data(), static_cast<uint32_t>(out.size()));
    EXPECT_TRUE(codec->chunk_id(out.data(), out.size()) == id);
  }
}

TEST_F(StoreTest, AbandonedWriterRemovesItsPacks) {
  auto repo = init_and_open(false);
  store_snapshot(*repo, {1}, "kept");
  size_t packs = count_files("packs");
  {
    auto codec = repo->new_codec();
    auto writer = repo->begin_write();
    for (uint32_t seed = 100; seed < 140; seed++) {
      std::string data = chunk(seed);
      writer->add(*codec, codec->chunk_id(data.data(), data.size()), data.data(), data.size());
    }
    // destroyed without commit
  }
  EXPECT_EQ(count_files("packs"), packs);
  EXPECT_EQ(repo->chunk_count(), 1u);
  EXPECT_TRUE(check(*repo, true, nullptr).ok());
}

TEST_F(StoreTest, PacksWithoutIndexAreAdoptedAndIndexedByTheNextRun) {
  auto repo = init_and_open(false);
  auto s = store_snapshot(*repo, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, "disk");
  repo.reset();
  // As if the run had been killed after writing its packs but before its index.
  for (auto& e : std::filesystem::directory_iterator(dir() / "index")) std::filesystem::remove(e.path());
  repo = open();
  EXPECT_FALSE(repo->unindexed_packs().empty());
  EXPECT_EQ(repo->chunk_count(), 17u);
  auto report = check(*repo, true, nullptr);
  EXPECT_TRUE(report.ok());
  EXPECT_FALSE(report.notes.empty());
  // The next run reuses the chunks (stores nothing new) and indexes the adopted packs.
  auto codec = repo->new_codec();
  auto writer = repo->begin_write();
  std::string data = chunk(5);
  EXPECT_FALSE(writer->add(*codec, codec->chunk_id(data.data(), data.size()), data.data(), data.size()));
  writer->commit();
  repo = open();
  EXPECT_TRUE(repo->unindexed_packs().empty());
  EXPECT_EQ(repo->chunk_count(), 17u);
}

TEST_F(StoreTest, SnapshotRoundTripsWithZeroRangesAndDigest) {
  auto repo = init_and_open(true);
  auto s = store_snapshot(*repo, {1, 2, 3}, "web01");
  auto loaded = repo->load_snapshot(s.id);
  EXPECT_EQ(loaded.name, "web01");
  EXPECT_EQ(loaded.size, s.size);
  EXPECT_EQ(loaded.chunks, s.chunks);
  EXPECT_TRUE(loaded.digest == s.compute_digest());
  auto zeros = loaded.zero_ranges();
  ASSERT_EQ(zeros.size(), 1u);
  EXPECT_EQ(zeros[0].first, 3u * 64 * 1024);
  EXPECT_EQ(zeros[0].second, 2u * 64 * 1024);
  EXPECT_EQ(repo->resolve_snapshot(s.id.substr(0, 6)), s.id);
}

TEST_F(StoreTest, RenamedSnapshotFailsAuthentication) {
  auto repo = init_and_open(true);
  auto s = store_snapshot(*repo, {1}, "disk");
  std::string forged(32, 'a');
  std::filesystem::copy_file(dir() / "snapshots" / s.id, dir() / "snapshots" / forged);
  EXPECT_THROW(repo->load_snapshot(forged), ferry::Error);
  auto report = check(*repo, false, nullptr);
  EXPECT_FALSE(report.ok());
}

TEST_F(StoreTest, FlippedByteIsFoundByReadDataAndNamesTheSnapshots) {
  auto repo = init_and_open(true);
  auto a = store_snapshot(*repo, {1, 2}, "a");
  auto b = store_snapshot(*repo, {2, 3}, "b");
  ASSERT_TRUE(check(*repo, true, nullptr).ok());
  // Damage chunk 2 (shared by both snapshots) in its pack.
  auto loc = repo->find(a.chunks[1].second);
  ASSERT_TRUE(loc);
  std::string pack = repo->pack_name(loc->pack);
  auto path = dir() / "packs" / pack.substr(0, 2) / pack;
  fx::flip_byte(path, loc->offset + 40);
  EXPECT_TRUE(check(*repo, false, nullptr).ok()) << "structure is intact; only --read-data sees the damage";
  auto report = check(*repo, true, nullptr);
  EXPECT_FALSE(report.ok());
  ASSERT_EQ(report.damaged_chunks.count(a.chunks[1].second.hex()), 1u);
  auto snaps = report.damaged_chunks[a.chunks[1].second.hex()];
  std::sort(snaps.begin(), snaps.end());
  std::vector<std::string> expect = {a.id, b.id};
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(snaps, expect);
  auto codec = repo->new_codec();
  std::string out(64 * 1024, '\0');
  try {
    repo->read_chunk(*codec, a.chunks[1].second, out.data(), static_cast<uint32_t>(out.size()));
    FAIL() << "a damaged chunk must not be returned";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kCrypto);
    EXPECT_NE(std::string(e.what()).find(pack), std::string::npos) << e.what();
  }
}

TEST_F(StoreTest, PruneReclaimsOnlyUnreferencedChunks) {
  auto repo = init_and_open(false, 256 * 1024);  // small packs: several per run
  auto keep = store_snapshot(*repo, {1, 2, 3, 4, 5, 6}, "keep");
  auto drop = store_snapshot(*repo, {5, 6, 7, 8, 9, 10, 11, 12}, "drop");
  auto before = stats(*repo);
  repo->delete_snapshot(drop.id);
  auto report = prune(*repo);
  EXPECT_EQ(report.chunks_removed, 6u);  // 7..12
  auto after = stats(*repo);
  EXPECT_LT(after.stored_bytes, before.stored_bytes);
  EXPECT_EQ(after.chunks, 6u);
  repo = open();
  EXPECT_TRUE(check(*repo, true, nullptr).ok());
  auto codec = repo->new_codec();
  std::string out(64 * 1024, '\0');
  for (size_t i = 0; i < keep.chunks.size(); i++) {
    repo->read_chunk(*codec, keep.chunks[i].second, out.data(), static_cast<uint32_t>(out.size()));
    EXPECT_EQ(out, chunk(i + 1));
  }
  // Prune again: nothing left to remove, and nothing changes.
  EXPECT_EQ(prune(*repo).chunks_removed, 0u);
}

TEST_F(StoreTest, PruneRefusesWhenASnapshotIsUnreadable) {
  auto repo = init_and_open(false);
  auto s = store_snapshot(*repo, {1, 2}, "a");
  std::ofstream(dir() / "snapshots" / s.id, std::ios::trunc) << "garbage";
  EXPECT_THROW(prune(*repo), ferry::Error);
  EXPECT_EQ(repo->chunk_count(), 2u);
}

}  // namespace

namespace {

// Rotation: new data goes under the new data key, old data stays readable under its own, and a re-wrap under
// another master key leaves the store opening only with that key.
TEST_F(StoreTest, RotatedKeysSealNewDataWhileOldDataStaysReadable) {
  auto repo = init_and_open(true);
  Snapshot before = store_snapshot(*repo, {1, 2, 3}, "disk");
  EXPECT_EQ(repo->current_key(), 0u);
  repo->rotate_keys(keyring(), true);
  EXPECT_EQ(repo->current_key(), 1u);
  Snapshot after = store_snapshot(*repo, {4, 5}, "disk2");
  keyring().create("k2");
  repo->rotate_keys(keyring(), false, "k2");
  EXPECT_EQ(repo->config().key_id, "k2");
  repo.reset();
  std::filesystem::remove(keyring().dir() / "k1.key");  // the old master key is no longer needed
  auto reopened = open();
  EXPECT_EQ(reopened->current_key(), 1u);
  std::set<uint32_t> keys;
  reopened->for_each_entry([&](const ChunkId&, const Location& loc) { keys.insert(reopened->pack_key(loc.pack)); });
  EXPECT_EQ(keys, (std::set<uint32_t>{0, 1}));
  auto codec = reopened->new_codec();
  std::string out(64 * 1024, '\0');
  uint32_t seed = 1;
  for (auto* s : {&before, &after})
    for (auto& [index, id] : reopened->load_snapshot(s->id).chunks) {
      reopened->read_chunk(*codec, id, out.data(), static_cast<uint32_t>(out.size()));
      EXPECT_EQ(out, chunk(seed++));
    }
  EXPECT_TRUE(check(*reopened, true, nullptr).ok());
  // Prune keeps every blob under the key it was sealed with.
  reopened->delete_snapshot(before.id);
  prune(*reopened);
  EXPECT_TRUE(check(*open(), true, nullptr).ok());
}

// Version 1 stores are refused with a message that says what to do, not misread.
TEST_F(StoreTest, AStoreOfFormatVersionOneIsRefusedWithAMessage) {
  init_and_open(false).reset();
  std::string config = fx::read_file(dir() / "config");
  auto at = config.find("\"version\": 2");
  ASSERT_NE(at, std::string::npos) << config;
  config.replace(at, 12, "\"version\": 1");
  std::ofstream(dir() / "config", std::ios::trunc) << config;
  try {
    open();
    FAIL() << "a version 1 store was opened";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("format version 1"), std::string::npos) << e.what();
  }
}

// A chunk whose index entry claims another compression or length than it was sealed with fails authentication:
// the entry's fields are bound into the blob's AAD.
TEST_F(StoreTest, AnIndexEntryThatLiesAboutCompressionOrLengthFailsAuthentication) {
  auto repo = init_and_open(false);
  std::string data(64 * 1024, 'z');  // compresses
  auto codec = repo->new_codec();
  ChunkId id = codec->chunk_id(data.data(), data.size());
  auto writer = repo->begin_write();
  writer->add(*codec, id, data.data(), data.size());
  writer->commit();
  auto loc = repo->find(id);
  ASSERT_TRUE(loc);
  ASSERT_EQ(loc->compression, 1);
  std::string box = repo->backend().get_range(ObjectType::kPack, repo->pack_name(loc->pack), loc->offset, loc->stored_len);
  Location lying = *loc;
  lying.compression = 0;
  lying.raw_len = loc->stored_len - 28;
  std::string out(lying.raw_len, '\0');
  try {
    repo->open_blob(*codec, id, lying, box, out.data(), repo->pack_name(loc->pack));
    FAIL() << "a blob opened under another compression";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kCrypto) << e.what();
  }
}

}  // namespace
