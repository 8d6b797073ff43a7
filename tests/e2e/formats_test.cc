// End to end through the ferry binary: every source format replicated, every snapshot exported to
// every target format, each export compared with the source by `qemu-img compare`.
#include <gtest/gtest.h>

#include <fstream>

#include "e2e/cli.h"
#include "fixtures/fixtures.h"

namespace fx = ferry::testing;
namespace e2e = ferry::e2e;
using ferry::e2e::tree_fingerprint;

namespace {

constexpr uint64_t kSize = 48 * fx::kMiB;
const std::vector<std::pair<std::string, std::string>> kTargets = {
    {"raw", "raw"}, {"qcow2", "qcow2"}, {"vmdk", "vmdk"}, {"vhd", "vpc"}, {"vhd-fixed", "vpc"}, {"vhdx", "vhdx"}, {"vdi", "vdi"}};

class Env {
 public:
  Env() : store_((dir_.path() / "store").string()), env_{{"FERRY_KEYRING", (dir_.path() / "keyring").string()}} {}
  const fx::TempDir& dir() const { return dir_; }
  const std::string& store() const { return store_; }
  const std::map<std::string, std::string>& env() const { return env_; }
  nlohmann::json replicate(const std::filesystem::path& disk, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"replicate", disk.string(), "--store", store_, "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = e2e::ferry(args, env_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.json();
  }
  // Exports and compares with `expected` (a raw disk); returns qemu-img's message on mismatch.
  void expect_export_identical(const std::string& snapshot, const std::filesystem::path& expected, const std::string& fmt,
                               const std::string& qemu_fmt) {
    auto out = dir_.path() / ("export-" + snapshot.substr(0, 8) + "." + fmt);
    auto r = e2e::ferry({"image", "export", snapshot, "--store", store_, "--format", fmt, "--output", out.string(), "--json"}, env_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string msg;
    EXPECT_TRUE(fx::images_identical(expected, "raw", out, qemu_fmt, &msg)) << fmt << ": " << msg;
    std::filesystem::remove(out);
  }

 private:
  fx::TempDir dir_;
  std::string store_;
  std::map<std::string, std::string> env_;
};

class FormatMatrix : public ::testing::TestWithParam<std::string> {};

TEST_P(FormatMatrix, ReplicatedDiskExportsBitIdenticalInEveryTargetFormat) {
  Env env;
  auto raw = env.dir().path() / "src.raw";
  fx::make_raw_disk(raw, kSize, 21);
  auto disk = fx::make_disk(raw, GetParam(), env.dir().path());
  auto j = env.replicate(disk, {"--encrypt", "--key-id", "matrix"});
  std::string id = j.value("snapshot", "");
  ASSERT_EQ(id.size(), 32u);
  EXPECT_TRUE(j.value("parent", "x").empty());
  for (auto& [fmt, qemu_fmt] : kTargets) env.expect_export_identical(id, raw, fmt, qemu_fmt);
}

INSTANTIATE_TEST_SUITE_P(AllSources, FormatMatrix, ::testing::ValuesIn(fx::all_source_kinds()), [](const auto& info) {
  std::string n = info.param;
  for (auto& c : n)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
});

TEST(Replicate, SecondRunStoresOnlyWhatChangedAndBothSnapshotsExportTheirState) {
  Env env;
  auto raw = env.dir().path() / "disk.raw";
  fx::make_raw_disk(raw, kSize, 5);
  auto first_copy = env.dir().path() / "first.raw";
  fx::run_checked({"cp", "--sparse=always", raw.string(), first_copy.string()});
  auto first = env.replicate(raw);
  ASSERT_GT(first.value("bytes_new", 0ull), 10 * fx::kMiB);

  const int runs = 8;
  const uint64_t run_len = 64 * 1024;
  fx::mutate_disk(raw, 99, runs, run_len);
  auto second = env.replicate(raw);
  EXPECT_EQ(second.value("parent", ""), first.value("snapshot", ""));
  // Each changed 64 KiB run touches at most two 64 KiB chunks.
  EXPECT_LE(second["stats"].value("chunks_changed", 0ull), 2u * runs);
  EXPECT_GE(second["stats"].value("chunks_changed", 0ull), 1u * runs);
  EXPECT_LE(second.value("bytes_new", 0ull), 2 * runs * run_len);
  // Bytes added to the store: new chunks (random data, incompressible) plus index and snapshot.
  EXPECT_LE(second.value("bytes_stored", 0ull), 2 * runs * run_len + 256 * 1024);
  env.expect_export_identical(first.value("snapshot", ""), first_copy, "raw", "raw");
  env.expect_export_identical(second.value("snapshot", ""), raw, "qcow2", "qcow2");
}

TEST(Replicate, IdenticalDataIsStoredOnceAcrossDisksAndFormats) {
  Env env;
  auto raw = env.dir().path() / "disk.raw";
  fx::make_raw_disk(raw, kSize, 8);
  auto a = env.replicate(fx::make_disk(raw, "qcow2", env.dir().path()));
  auto b = env.replicate(fx::make_disk(raw, "vmdk-streamOptimized", env.dir().path()));
  EXPECT_GT(a.value("bytes_new", 0ull), 0u);
  EXPECT_EQ(b.value("bytes_new", 1ull), 0u);
  EXPECT_EQ(a.value("digest", ""), b.value("digest", "x")) << "same content, same disk digest";
  auto stats = e2e::ferry({"store", "stats", "--store", env.store(), "--json"}, env.env()).json();
  EXPECT_EQ(stats.value("snapshots", 0), 2);
}

TEST(Replicate, BadDiskLeavesTheStoreUnchangedAndRecordsNoSnapshot) {
  Env env;
  auto raw = env.dir().path() / "disk.raw";
  fx::make_raw_disk(raw, 16 * fx::kMiB, 2);
  env.replicate(raw);
  auto before = tree_fingerprint(env.store());
  auto bad = fx::make_disk(raw, "vmdk-monolithicSparse", env.dir().path());
  std::filesystem::resize_file(bad, 1000);
  auto r = e2e::ferry({"replicate", bad.string(), "--store", env.store()}, env.env());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(bad.filename().string()), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_EQ(tree_fingerprint(env.store()), before);
  auto list = e2e::ferry({"snapshots", "list", "--store", env.store(), "--json"}, env.env()).json();
  EXPECT_EQ(list.size(), 1u);
  // Every kind of damaged container the issue names, through the CLI: one line naming the file, store untouched.
  std::vector<std::filesystem::path> bads;
  for (std::string kind : {"vhd-dynamic", "vhdx", "qcow2"}) {
    auto p = fx::make_disk(raw, kind, env.dir().path());
    std::filesystem::resize_file(p, 300);
    bads.push_back(p);
  }
  auto flat = fx::make_disk(raw, "vmdk-monolithicFlat", env.dir().path());
  std::filesystem::remove(flat.parent_path() / (flat.stem().string() + "-flat.vmdk"));
  bads.push_back(flat);
  for (auto& p : bads) {
    auto rr = e2e::ferry({"replicate", p.string(), "--store", env.store()}, env.env());
    EXPECT_NE(rr.exit_code, 0) << p;
    EXPECT_NE(rr.err.find(p.filename().string()), std::string::npos) << rr.err;
    EXPECT_EQ(std::count(rr.err.begin(), rr.err.end(), '\n'), 1) << "one line: " << rr.err;
    EXPECT_EQ(tree_fingerprint(env.store()), before) << p;
  }
  // A bad disk and no store yet: no store is created.
  auto fresh = env.dir().path() / "fresh";
  r = e2e::ferry({"replicate", bad.string(), "--store", fresh.string()}, env.env());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(fresh));
}

TEST(Snapshots, ShowListDeletePrune) {
  Env env;
  auto raw = env.dir().path() / "disk.raw";
  fx::make_raw_disk(raw, kSize, 13);
  auto a = env.replicate(raw, {"--name", "web01-disk1"});
  auto other = env.dir().path() / "other.raw";
  fx::make_raw_disk(other, kSize, 14);
  auto b = env.replicate(other, {"--name", "db01-disk1"});
  std::string ida = a.value("snapshot", ""), idb = b.value("snapshot", "");

  auto show = e2e::ferry({"snapshots", "show", ida.substr(0, 8), "--store", env.store(), "--json"}, env.env()).json();
  EXPECT_EQ(show.value("id", ""), ida);
  EXPECT_EQ(show.value("name", ""), "web01-disk1");
  EXPECT_EQ(show.value("size", 0ull), kSize);
  EXPECT_FALSE(show["zero_ranges"].empty());

  auto before = e2e::ferry({"store", "stats", "--store", env.store(), "--json"}, env.env()).json();
  ASSERT_EQ(e2e::ferry({"snapshots", "delete", idb, "--store", env.store()}, env.env()).exit_code, 0);
  auto prune = e2e::ferry({"store", "prune", "--store", env.store(), "--json"}, env.env());
  ASSERT_EQ(prune.exit_code, 0) << prune.err;
  auto after = e2e::ferry({"store", "stats", "--store", env.store(), "--json"}, env.env()).json();
  EXPECT_LT(after.value("stored_bytes", 0ull), before.value("stored_bytes", 0ull));
  EXPECT_EQ(after.value("snapshots", 0), 1);
  auto check = e2e::ferry({"store", "check", "--store", env.store(), "--read-data", "--json"}, env.env());
  EXPECT_EQ(check.exit_code, 0) << check.out;
  env.expect_export_identical(ida, raw, "raw", "raw");
  auto list = e2e::ferry({"snapshots", "list", "--store", env.store(), "--json"}, env.env()).json();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].value("id", ""), ida);
  EXPECT_EQ(e2e::ferry({"snapshots", "list", "--store", env.store(), "--name", "web01-disk1", "--json"}, env.env()).json().size(), 1u);
  EXPECT_EQ(e2e::ferry({"snapshots", "list", "--store", env.store(), "--name", "db01-disk1", "--json"}, env.env()).json().size(), 0u);
  auto gone = e2e::ferry({"snapshots", "show", idb, "--store", env.store()}, env.env());
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.err.find("no snapshot"), std::string::npos) << gone.err;
}

TEST(Boot, BootableDiskSurvivesReplicationAndExport) {
  Env env;
  auto disk = env.dir().path() / "boot.raw";
  fx::make_boot_disk(disk, "FERRY-BOOT-OK-42");
  auto j = env.replicate(disk);
  auto out = env.dir().path() / "boot.qcow2";
  auto r = e2e::ferry({"image", "export", j.value("snapshot", ""), "--store", env.store(), "-f", "qcow2", "-o", out.string()}, env.env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(fx::boot_and_read_serial(out, "qcow2", "FERRY-BOOT-OK-42", 60).find("FERRY-BOOT-OK-42"), std::string::npos);
}


// A physical server's disk: a block device, read directly (BLKGETSIZE64, pread), no qemu in between.
TEST(Replicate, BlockDeviceReplicatesAndExportsIdentical) {
  Env env;
  auto raw = env.dir().path() / "physical.raw";
  fx::make_raw_disk(raw, 32 * fx::kMiB, 17);
  std::string out;
  ASSERT_EQ(fx::run({"losetup", "--find", "--show", "--read-only", raw.string()}, &out), 0) << out;
  std::string dev = out.substr(0, out.find('\n'));
  struct Detach {
    std::string dev;
    ~Detach() { fx::run({"losetup", "--detach", dev}); }
  } detach{dev};
  auto j = env.replicate(dev);
  EXPECT_EQ(j.value("size", 0ull), 32 * fx::kMiB);
  EXPECT_EQ(j.value("source_format", ""), "raw");
  env.expect_export_identical(j.value("snapshot", ""), raw, "qcow2", "qcow2");
}


// Damage in a pack is found, the damaged chunk is dropped from the index (--repair), and the next run of
// the same disk stores it again: the old snapshot is whole again, because chunk ids name content.
TEST(Repair, DamagedChunkIsDroppedAndTheNextRunHealsEverySnapshot) {
  Env env;
  auto raw = env.dir().path() / "disk.raw";
  fx::make_raw_disk(raw, 32 * fx::kMiB, 41);
  auto first = env.replicate(raw, {"--name", "disk"});
  std::filesystem::path pack;
  for (auto& e : std::filesystem::recursive_directory_iterator(std::filesystem::path(env.store()) / "packs"))
    if (e.is_regular_file()) pack = e.path();
  ASSERT_FALSE(pack.empty());
  fx::flip_byte(pack, 100, 0x20);
  auto check = e2e::ferry({"store", "check", "--store", env.store(), "--read-data", "--repair", "--json"}, env.env());
  EXPECT_EQ(check.exit_code, 1);
  auto report = check.json();
  EXPECT_EQ(report.value("repaired_chunks", 0), 1);
  ASSERT_EQ(report["damaged_chunks"].size(), 1u);
  EXPECT_EQ(report["damaged_chunks"].begin().value()[0], first.value("snapshot", ""));
  // Until the disk is replicated again, the snapshot is known to be incomplete.
  auto missing = e2e::ferry({"store", "check", "--store", env.store()}, env.env());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("missing"), std::string::npos) << missing.out;

  auto second = env.replicate(raw, {"--name", "disk"});
  EXPECT_GT(second.value("bytes_new", 0ull), 0u) << "the dropped chunk is stored again";
  auto clean = e2e::ferry({"store", "check", "--store", env.store(), "--read-data"}, env.env());
  EXPECT_EQ(clean.exit_code, 0) << clean.out;
  env.expect_export_identical(first.value("snapshot", ""), raw, "raw", "raw");
}

}  // namespace
