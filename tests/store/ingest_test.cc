// A connector's repository view and the server's checks on what it uploads, joined in-process: the view's
// backend hands each object straight to the receiving repository (the HTTP transport is tested end to end).
// Several tests play a malicious connector: one that holds the id key (every connector does) and sends whatever
// bytes it likes.
#include <gtest/gtest.h>

#include <cstring>
#include <algorithm>
#include <fstream>
#include <random>
#include <tuple>

#include "common/error.h"
#include "common/fs.h"
#include "disk/disk.h"
#include "fixtures/fixtures.h"
#include "replicate/replicate.h"
#include "store/crypto.h"
#include "store/format.h"
#include "store/maintenance.h"
#include "store/repository.h"

namespace fx = ferry::testing;
using namespace ferry::store;

namespace {

// What the connector's UploadBackend does, without HTTP: packs and snapshots go to the server repository's receive_*,
// optionally through a `tamper` hook that can alter the bytes on the way.
class Transport : public Backend {
 public:
  explicit Transport(Repository& server) : server_(server) {}
  std::function<void(std::string& name, std::string& bytes)> tamper;
  std::vector<std::string> packs_sent;
  std::vector<std::pair<std::string, std::string>> packs_bytes;  // as sent (before the server seals them in place)

  std::string location() const override { return "in-process transport"; }
  void put(ObjectType type, const std::string& name, std::string_view data) override {
    std::string n = name, d(data);
    if (tamper) tamper(n, d);
    if (type == ObjectType::kSnapshot) server_.receive_snapshot(n, d);
    else FAIL() << "unexpected object type " << to_string(type);
  }
  class Writer : public ObjectWriter {
   public:
    explicit Writer(Transport& t) : t_(t) {}
    void append(std::string_view d) override { buf_.append(d); }
    uint64_t size() const override { return buf_.size(); }
    void commit(const std::string& name) override {
      std::string n = name;
      if (t_.tamper) t_.tamper(n, buf_);
      t_.packs_bytes.emplace_back(n, buf_);
      t_.server_.receive_pack(n, buf_.data(), buf_.size());
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

  // A connector-side view of `server` whose uploads go through a Transport (returned through `t`); `id_key` overrides
  // the server's (a connector of another store); `parents` are the snapshots it may build on.
  std::unique_ptr<Repository> view(Transport** t, const std::string& id_key = "", std::vector<Snapshot> parents = {}) {
    auto transport = std::make_unique<Transport>(*server);
    *t = transport.get();
    Repository* s = server.get();
    return Repository::open_view(std::move(transport), server->config(), id_key.empty() ? server->id_key() : id_key,
                                 [s, this](const std::vector<ChunkId>& ids) {
                                   lookups += ids.size();
                                   return s->lacks(ids);
                                 },
                                 std::move(parents));
  }
  size_t lookups = 0;

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

// A wire pack: blobs as a view writes them (zero nonce, payload, zero tag) and the header laid out the same way.
std::string wire_pack(const std::vector<std::tuple<ChunkId, std::string, uint32_t, uint8_t>>& blobs) {
  std::string out;
  std::vector<PackEntry> entries;
  for (auto& [id, payload, raw_len, compression] : blobs) {
    PackEntry e{id, static_cast<uint32_t>(out.size()), static_cast<uint32_t>(payload.size() + kBoxOverhead), raw_len, compression};
    out.append(kNonceSize, '\0');
    out.append(payload);
    out.append(kTagSize, '\0');
    entries.push_back(e);
  }
  std::string header = encode_pack_header(entries);
  uint32_t hlen = static_cast<uint32_t>(header.size() + kBoxOverhead), key = 0;
  out.append(kNonceSize, '\0');
  out.append(header);
  out.append(kTagSize, '\0');
  out.append(reinterpret_cast<const char*>(&hlen), 4);
  out.append(reinterpret_cast<const char*>(&key), 4);
  out.append(kWirePackMagic);
  return out;
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
  EXPECT_TRUE(reopened->unindexed_packs().empty());  // the server indexed every pack it received before the snapshot
}

TEST_F(IngestTest, NothingTheConnectorSendsIsStoredUnsealed) {
  Transport* t;
  auto v = view(&t);
  upload(*v, seeds(1, 8));
  ASSERT_FALSE(t->packs_bytes.empty());
  // The wire carries the chunk payloads in clear (under TLS); the stored packs are sealed by the server.
  std::string plain = chunk(1);
  for (auto& e : std::filesystem::recursive_directory_iterator(dir() / "packs")) {
    if (!e.is_regular_file()) continue;
    std::string bytes = ferry::read_file(e.path());
    EXPECT_EQ(bytes.substr(bytes.size() - 8), "FRYPACK2");
    EXPECT_EQ(bytes.find(std::string(kNonceSize, '\0')), std::string::npos) << "an unsealed blob in " << e.path();
  }
}

TEST_F(IngestTest, SecondRunUploadsOnlyNewChunks) {
  Transport* t1;
  auto v1 = view(&t1);
  Snapshot first = upload(*v1, seeds(1, 40));
  Transport* t2;
  auto v2 = view(&t2, "", {first});  // the parent: its chunks need not be asked about
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

TEST_F(IngestTest, ReplicationThroughAViewAsksTheServerInsteadOfUploadingWhatItHas) {
  fx::TempDir tmp;
  // A disk whose chunks another server's run already stored (cross-server deduplication, asked online).
  std::string disk_data;
  for (uint32_t i = 1; i <= 24; i++) disk_data += chunk(i);
  std::filesystem::path disk = tmp.path() / "disk.raw";
  {
    std::ofstream f(disk, std::ios::binary);
    f << disk_data;
  }
  Transport* t1;
  auto v1 = view(&t1);
  upload(*v1, seeds(1, 24));
  Transport* t2;
  auto v2 = view(&t2);
  auto source = ferry::disk::open_source(disk.string());
  ferry::replicate::Options o;
  o.name = "s-2/scsi0:0";
  auto result = ferry::replicate::replicate(*source, *v2, o);
  EXPECT_TRUE(t2->packs_sent.empty()) << "sent chunks the server has";
  EXPECT_EQ(lookups, 24u);  // each chunk asked about once
  EXPECT_EQ(result.snapshot.stats.chunks_new, 0u);
  EXPECT_EQ(server->load_snapshot(result.snapshot.id).digest, result.snapshot.digest);
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
  // A view asks the server (lookup) before it sends: chunks of the abandoned attempt are not sent again.
  auto codec = v->new_codec();
  std::vector<ChunkId> ids;
  for (uint32_t seed = 1; seed <= 40; seed++) {
    std::string data = chunk(seed);
    ids.push_back(codec->chunk_id(data.data(), data.size()));
  }
  auto lacking = server->lacks(ids);
  EXPECT_LE(std::count(lacking.begin(), lacking.end(), true), 20) << "only the abandoned writer's last, unsent pack is missing";
  EXPECT_TRUE(check(*open(), true, nullptr).ok());
}

// --- A malicious connector ---

TEST_F(IngestTest, BlobWhoseContentIsNotItsChunkIsRefusedAndNotStored) {
  // Poisoning: a chunk id of someone else's data, with other bytes behind it.
  auto codec = server->new_codec();
  std::string victim = chunk(1), poison = chunk(2);
  ChunkId id = codec->chunk_id(victim.data(), victim.size());
  std::string pack = wire_pack({{id, poison, static_cast<uint32_t>(poison.size()), 0}});
  std::string name = new_object_name();
  try {
    server->receive_pack(name, pack.data(), pack.size());
    FAIL() << "a blob under another chunk's id was accepted";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kCorrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find("does not hash to its id"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(id.hex()), std::string::npos) << e.what();
  }
  EXPECT_EQ(packs_on_disk(), 0u);
  EXPECT_FALSE(server->find(id));
}

TEST_F(IngestTest, CompressedBlobWithBytesAfterItsFrameIsRefused) {
  // zstd(Y) followed by a skippable frame: decompresses to Y (so its id checks) but carries other bytes that a reader
  // told "uncompressed" would return.
  auto codec = server->new_codec();
  std::string y = chunk(3);
  ChunkId id = codec->chunk_id(y.data(), y.size());
  std::string payload = zstd_compress(y, 1);
  std::string skippable = "\x50\x2a\x4d\x18";  // a skippable frame's magic, then its length and content
  uint32_t len = 64;
  skippable.append(reinterpret_cast<const char*>(&len), 4);
  skippable.append(len, 'X');
  payload += skippable;
  std::string pack = wire_pack({{id, payload, static_cast<uint32_t>(y.size()), 1}});
  EXPECT_EQ(error_kind([&] { server->receive_pack(new_object_name(), pack.data(), pack.size()); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, ListingThatDoesNotCoverThePackExactlyIsRefused) {
  auto codec = server->new_codec();
  std::string a = chunk(4);
  ChunkId id = codec->chunk_id(a.data(), a.size());
  std::string pack = wire_pack({{id, a, static_cast<uint32_t>(a.size()), 0}});
  // Hidden bytes between the blobs and the header.
  std::string hidden = pack;
  hidden.insert(a.size() + kBoxOverhead, "hidden bytes nobody checks");
  EXPECT_EQ(error_kind([&] { server->receive_pack(new_object_name(), hidden.data(), hidden.size()); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  // A chunk longer than the store's chunks.
  std::string big = chunk(5, 128 * 1024);
  ChunkId big_id = codec->chunk_id(big.data(), big.size());
  std::string too_big = wire_pack({{big_id, big, static_cast<uint32_t>(big.size()), 0}});
  EXPECT_EQ(error_kind([&] { server->receive_pack(new_object_name(), too_big.data(), too_big.size()); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, AnotherServersImageStaysBitExactWhateverAConnectorSends) {
  // The honest run of server A.
  Transport* t;
  auto honest = view(&t);
  Snapshot a = upload(*honest, seeds(1, 16));
  // A malicious connector tries every way to make A's chunks read back as other bytes: the same ids with other
  // content, raw or "compressed", in new packs; every attempt is refused.
  auto codec = server->new_codec();
  for (auto& [index, id] : a.chunks) {
    std::string other = chunk(static_cast<uint32_t>(500 + index));
    std::string raw = wire_pack({{id, other, static_cast<uint32_t>(other.size()), 0}});
    EXPECT_THROW(server->receive_pack(new_object_name(), raw.data(), raw.size()), ferry::Error);
    std::string compressed = zstd_compress(other, 1);
    std::string zpack = wire_pack({{id, compressed, static_cast<uint32_t>(other.size()), 1}});
    EXPECT_THROW(server->receive_pack(new_object_name(), zpack.data(), zpack.size()), ferry::Error);
  }
  // And a snapshot under A's id with another table is refused, not stored over it.
  Snapshot forged = a;
  forged.chunks.pop_back();
  forged.digest = forged.compute_digest();
  std::string plain = compress_object(encode_snapshot(forged));
  EXPECT_EQ(error_kind([&] { server->receive_snapshot(a.id, plain); }), ferry::to_string(ferry::ErrorKind::kConflict));
  // What A reads back, after a restart too, is A.
  auto reopened = open();
  Snapshot stored = reopened->load_snapshot(a.id);
  EXPECT_EQ(stored.digest, a.digest);
  auto rc = reopened->new_codec();
  std::string out(64 * 1024, '\0');
  for (auto& [index, id] : stored.chunks) {
    reopened->read_chunk(*rc, id, out.data(), static_cast<uint32_t>(out.size()));
    EXPECT_EQ(out, chunk(static_cast<uint32_t>(index + 1)));
  }
  EXPECT_TRUE(check(*reopened, true, nullptr).ok());
}

TEST_F(IngestTest, RetriedSnapshotUploadWithTheSameContentIsAccepted) {
  Transport* t;
  auto v = view(&t);
  Snapshot s = upload(*v, seeds(1, 4));
  std::string plain = compress_object(encode_snapshot(s));
  EXPECT_NO_THROW(server->receive_snapshot(s.id, plain));
}

TEST_F(IngestTest, HalfUploadedPackIsRejected) {
  Transport* t;
  auto v = view(&t);
  t->tamper = [](std::string&, std::string& bytes) { bytes.resize(bytes.size() / 2); };
  EXPECT_EQ(error_kind([&] { upload(*v, seeds(1, 40)); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
  EXPECT_EQ(packs_on_disk(), 0u);
}

TEST_F(IngestTest, ChunksNamedWithAnotherStoresIdKeyAreRefused) {
  Transport* t;
  auto v = view(&t, std::string(32, '\x5a'));
  EXPECT_EQ(error_kind([&] { upload(*v, seeds(1, 40)); }), ferry::to_string(ferry::ErrorKind::kCorrupt));
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
  upload(*v, seeds(1, 40));
  ASSERT_FALSE(t->packs_bytes.empty());
  size_t before = packs_on_disk();
  auto [name, bytes] = t->packs_bytes[0];
  server->receive_pack(name, bytes.data(), bytes.size());  // a retried upload after a lost answer
  EXPECT_EQ(packs_on_disk(), before);
  EXPECT_TRUE(check(*open(), true, nullptr).ok());
}

}  // namespace
