// A connector's repository view and the server's checks on what it uploads, joined in-process: the view's
// backend hands each object straight to the receiving repository (the HTTP transport is tested end to end).
#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "fixtures/fixtures.h"
#include "store/maintenance.h"
#include "store/repository.h"

namespace fx = ferry::testing;
using namespace ferry::store;

namespace {

// What the connector's UploadBackend does, without HTTP: every object goes to the server repository's receive_*,
// optionally through a `tamper` hook that can alter the bytes on the way.
class Transport : public Backend {
 public:
  explicit Transport(Repository& server) : server_(server) {}
  std::function<void(std::string& name, std::string& bytes)> tamper;
  std::vector<std::string> packs_sent;

  std::string location() const override { return "in-process transport"; }
  void put(ObjectType type, const std::string& name, std::string_view data) override {
    std::string n = name, d(data);
    if (tamper) tamper(n, d);
    if (type == ObjectType::kIndex) server_.receive_index(n, d);
    else if (type == ObjectType::kSnapshot) server_.receive_snapshot(n, d);
    else FAIL() << "unexpected object type";
  }
  class Writer : public ObjectWriter {
   public:
    explicit Writer(Transport& t) : t_(t) {}
    void append(std::string_view d) override { buf_.append(d); }
    uint64_t size() const override { return buf_.size(); }
    void commit(const std::string& name) override {
      std::string n = name;
      if (t_.tamper) t_.tamper(n, buf_);
      t_.server_.receive_pack(n, buf_);
      t_.packs_sent.push_back(n);
    }

   private:
    Transport& t_;
    std::string buf_;
  };
  std::unique_ptr<ObjectWriter> create(ObjectType) override { return std::make_unique<Writer>(*this); }
  std::string get(ObjectType, const std::string& name) override { ferry::fail(ferry::ErrorKind::kNotFound, name); }
  void read_range(ObjectType, const std::string&, uint64_t, size_t, char*) override { ferry::fail(ferry::ErrorKind::kUnsupported, "read"); }
  uint64_t size(ObjectType, const std::string&) override { ferry::fail(ferry::ErrorKind::kUnsupported, "size"); }
  bool exists(ObjectType, const std::string&) override { return false; }
  std::vector<std::string> list(ObjectType) override { return {}; }
  void remove(ObjectType, const std::string&) override {}
  std::unique_ptr<Lock> lock(LockKind, const std::string&) override { return std::make_unique<Lock>(); }

 private:
  Repository& server_;
};

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keyring().create("k1");
    InitOptions o;
    o.encrypt = true;
    o.key_id = "k1";
    o.pack_size = 1 << 20;
    Repository::init(*open_local_backend(dir(), true), o, keyring());
    server = open();
  }
  std::filesystem::path dir() const { return tmp_.path() / "store"; }
  Keyring keyring() const { return Keyring(tmp_.path() / "keyring"); }
  std::unique_ptr<Repository> open() { return Repository::open(open_local_backend(dir(), false), keyring()); }

  // A connector-side view of `server` whose uploads go through a Transport (returned through `t`).
  std::unique_ptr<Repository> view(Transport** t, const std::string& keys = "") {
    auto transport = std::make_unique<Transport>(*server);
    *t = transport.get();
    Repository* s = server.get();
    return Repository::open_view(std::move(transport), server->config(), keys.empty() ? server->data_keys() : keys,
                                 [s] { return s->chunk_ids(); });
  }

  static std::string chunk(uint32_t seed, size_t len = 64 * 1024) {
    std::mt19937 rng(seed);
    std::string s(len, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 7);  // compressible, distinct per seed
    return s;
  }

  // Replicates `seeds` through `repo` as one disk; returns the snapshot (saved unless save=false).
  Snapshot upload(Repository& repo, const std::vector<uint32_t>& seeds, bool save = true) {
    auto codec = repo.new_codec();
    auto writer = repo.begin_write();
    Snapshot s;
    s.name = "s-1/scsi0:0";
    s.chunk_size = repo.config().chunk_size;
    s.size = uint64_t{s.chunk_size} * seeds.size();
    for (size_t i = 0; i < seeds.size(); i++) {
      std::string data = chunk(seeds[i]);
      ChunkId id = codec->chunk_id(data.data(), data.size());
      writer->add(*codec, id, data.data(), data.size());
      s.chunks.emplace_back(i, id);
    }
    writer->commit();
    s.digest = s.compute_digest();
    if (save) repo.save_snapshot(s);
    return s;
  }

  size_t packs_on_disk() const {
    size_t n = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir() / "packs")) n += e.is_regular_file();
    return n;
  }

  fx::TempDir tmp_;
  std::unique_ptr<Repository> server;
};

// The kind of the ferry::Error `fn` throws ("none" if it throws nothing).
std::string error_kind(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ferry::Error& e) {
    return ferry::to_string(e.kind());
  }
  return "none";
}

std::vector<uint32_t> seeds(uint32_t from, uint32_t n) {
  std::vector<uint32_t> v;
  for (uint32_t i = 0; i < n; i++) v.push_back(from + i);
  return v;
}

TEST_F(IngestTest, UploadedSnapshotReadsBackOnTheServerAndChecksClean) {
  Transport* t;
  auto v = view(&t);
  Snapshot s = upload(*v, seeds(1, 40));
  EXPECT_GE(t->packs_sent.size(), 2u);  // 40 chunks of 64 KiB do not fit one 1 MiB pack

  auto reopened = open();  // what a restarted server sees
  Snapshot stored = reopened->load_snapshot(s.id);
  ASSERT_EQ(stored.chunks.size(), 40u);
  auto codec = reopened->new_codec();
  std::string out(64 * 1024, '\0');
  for (auto& [index, id] : stored.chunks) {
    reopened->read_chunk(*codec, id, out.data(), static_cast<uint32_t>(out.size()));
    EXPECT_EQ(out, chunk(static_cast<uint32_t>(index + 1)));
  }
  auto report = check(*reopened, true, nullptr);
  EXPECT_TRUE(report.ok()) << ::testing::PrintToString(report.errors);
  EXPECT_TRUE(reopened->unindexed_packs().empty());  // the uploaded index covers every pack
}

TEST_F(IngestTest, SecondRunUploadsOnlyNewChunks) {
  Transport* t1;
  auto v1 = view(&t1);
  upload(*v1, seeds(1, 40));
  Transport* t2;
  auto v2 = view(&t2);
  std::vector<uint32_t> changed = seeds(1, 40);
  changed[7] = 1000;
  upload(*v2, changed);
  ASSERT_EQ(t2->packs_sent.size(), 1u);
  // The one pack holds exactly the changed chunk.
  auto reopened = open();
  size_t in_pack = 0;
  reopened->for_each_entry([&](const ChunkId&, const Location& loc) { in_pack += reopened->pack_name(loc.pack) == t2->packs_sent[0]; });
  EXPECT_EQ(in_pack, 1u);
}

TEST_F(IngestTest, PacksOfAFailedAttemptAreReusedByTheRetry) {
  {
    Transport* t;
    auto v = view(&t);
    auto codec = v->new_codec();
    auto writer = v->begin_write();
    for (uint32_t seed = 1; seed <= 40; seed++) {
      std::string data = chunk(seed);
      writer->add(*codec, codec->chunk_id(data.data(), data.size()), data.data(), data.size());
    }
    // Destroyed without commit: the connector died or the run failed after some packs arrived.
  }
  size_t before = packs_on_disk();
  ASSERT_GE(before, 1u);
  Transport* t;
  auto v = view(&t);
  upload(*v, seeds(1, 40));
  // Only chunks that were still in the abandoned writer's last, unsent pack travel again.
  EXPECT_LE(t->packs_sent.size(), 1u);
  EXPECT_TRUE(check(*open(), true, nullptr).ok());
}

TEST_F(IngestTest, TamperedBlobIsRejectedAndNotStored) {
  Transport* t;
  auto v = view(&t);
  t->tamper = [](std::string&, std::string& bytes) {
    if (bytes.size() > 100000) bytes[1000] ^= 1;  // inside the first blob of a pack
  };
  try {
    upload(*v, seeds(1, 40));
    FAIL() << "a tampered pack was accepted";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kCrypto) << e.what();
    EXPECT_NE(std::string(e.what()).find("uploaded pack"), std::string::npos) << e.what();
  }
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, HalfUploadedPackIsRejected) {
  Transport* t;
  auto v = view(&t);
  t->tamper = [](std::string&, std::string& bytes) { bytes.resize(bytes.size() / 2); };
  EXPECT_EQ(error_kind([&] { upload(*v, seeds(1, 40)); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, PackUnderAnotherNameIsRejected) {
  Transport* t;
  auto v = view(&t);
  t->tamper = [](std::string& name, std::string&) { name[0] = name[0] == 'a' ? 'b' : 'a'; };
  EXPECT_EQ(error_kind([&] { upload(*v, seeds(1, 40)); }), ferry::to_string(ferry::ErrorKind::kCrypto));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, PackSealedWithOtherKeysIsRejected) {
  Transport* t;
  std::string other(64, '\x5a');
  auto v = view(&t, other);
  EXPECT_EQ(error_kind([&] { upload(*v, seeds(1, 40)); }), ferry::to_string(ferry::ErrorKind::kCrypto));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, SnapshotNamingAChunkTheServerLacksIsRejected) {
  Transport* t;
  auto v = view(&t);
  Snapshot s = upload(*v, seeds(1, 4), false);
  std::string data = chunk(999);
  s.chunks.emplace_back(4, v->new_codec()->chunk_id(data.data(), data.size()));
  s.size += s.chunk_size;
  s.digest = s.compute_digest();
  try {
    v->save_snapshot(s);
    FAIL() << "accepted a snapshot with a missing chunk";
  } catch (const ferry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not have"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(server->snapshot_ids().empty());
}

TEST_F(IngestTest, SnapshotWithAWrongDigestIsRejected) {
  Transport* t;
  auto v = view(&t);
  Snapshot s = upload(*v, seeds(1, 4), false);
  std::swap(s.chunks[0].second, s.chunks[1].second);  // digest computed before the swap
  EXPECT_EQ(error_kind([&] { v->save_snapshot(s); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  EXPECT_TRUE(server->snapshot_ids().empty());
}

TEST_F(IngestTest, ReceivingAPackTwiceIsHarmless) {
  Transport* t;
  auto v = view(&t);
  std::vector<std::pair<std::string, std::string>> sent;
  t->tamper = [&](std::string& name, std::string& bytes) {
    if (bytes.size() > 100000) sent.emplace_back(name, bytes);
  };
  upload(*v, seeds(1, 40));
  ASSERT_FALSE(sent.empty());
  size_t before = packs_on_disk();
  server->receive_pack(sent[0].first, sent[0].second);  // a retried upload after a lost answer
  EXPECT_EQ(packs_on_disk(), before);
  EXPECT_TRUE(check(*open(), true, nullptr).ok());
}

}  // namespace
