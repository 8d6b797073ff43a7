// End-to-end fault tests: the real ferry binary killed during replication and prune, packs damaged or
// truncated on disk, and wrong or missing master keys. Each test asserts what a user would see afterwards.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "e2e/cli.h"
#include "fixtures/fixtures.h"

extern char** environ;

namespace ferry {
namespace {

namespace fs = std::filesystem;
using e2e::CliResult;
using e2e::describe;
using nlohmann::json;
using testing::kMiB;
using testing::TempDir;
using Env = std::map<std::string, std::string>;

constexpr int kKilled = 128 + SIGKILL;
constexpr uint64_t kPackSize = 16 * kMiB;  // the store's default pack size
// Index and snapshot objects of a ~100 MiB disk take well under this; packs take far more.
constexpr uint64_t kMetadataSlack = kMiB;

// ---------------------------------------------------------------------------------------------
// Helpers

Env env_for(const TempDir& dir) { return {{"FERRY_KEYRING", (dir.path() / "keyring").string()}}; }

Env with_fault(Env env, const std::string& fault) {
  env["FERRY_FAULT"] = fault;
  return env;
}

// A raw disk from make_raw_disk plus `random_mib` 1 MiB ranges of incompressible data at random offsets,
// so a replication fills several 16 MiB packs.
fs::path make_data_disk(const fs::path& dir, const std::string& name, uint64_t size_mib, uint32_t seed, int random_mib) {
  fs::path p = dir / (name + ".raw");
  testing::make_raw_disk(p, size_mib * kMiB, seed);
  if (random_mib > 0) testing::mutate_disk(p, seed + 1000, random_mib, kMiB);
  return p;
}

fs::path sparse_copy(const fs::path& from, const fs::path& to) {
  testing::run_checked({"cp", "--sparse=always", from.string(), to.string()});
  return to;
}

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<fs::path> pack_files(const fs::path& store) { return files_under(store / "packs"); }

uint64_t pack_bytes(const fs::path& store) {
  uint64_t total = 0;
  for (auto& p : pack_files(store)) total += fs::file_size(p);
  return total;
}

// The store's content, without the (empty) lock files that any reader may create.
std::map<std::string, std::string> store_fingerprint(const fs::path& store) {
  auto fp = e2e::tree_fingerprint(store);
  std::erase_if(fp, [](const auto& kv) { return kv.first.rfind("locks/", 0) == 0; });
  return fp;
}

CliResult replicate(const fs::path& disk, const fs::path& store, const std::string& name, const Env& env) {
  return e2e::ferry({"replicate", disk.string(), "--store", store.string(), "--name", name, "--encrypt", "--key-id", "k", "--json"}, env);
}

std::vector<std::string> snapshot_ids(const fs::path& store, const Env& env) {
  auto r = e2e::ferry({"snapshots", "list", "--store", store.string(), "--json"}, env);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  std::vector<std::string> ids;
  if (r.exit_code != 0) return ids;
  for (auto& s : r.json()) ids.push_back(s.at("id").get<std::string>());
  return ids;
}

// `store check --read-data` passes; returns its report.
json expect_check_clean(const fs::path& store, const Env& env) {
  auto r = e2e::ferry({"store", "check", "--store", store.string(), "--read-data", "--json"}, env);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  json j = r.json();
  EXPECT_EQ(j.value("ok", false), true) << j.dump(2);
  EXPECT_TRUE(j.value("errors", json::array()).empty()) << j.dump(2);
  EXPECT_TRUE(j.value("damaged_chunks", json::object()).empty()) << j.dump(2);
  return j;
}

// Exports `snapshot` as raw and compares it with `source`.
void expect_export_identical(const fs::path& store, const Env& env, const std::string& snapshot, const fs::path& source,
                             const fs::path& scratch) {
  fs::path out = scratch / ("export-" + snapshot + ".raw");
  fs::remove(out);
  auto r = e2e::ferry({"image", "export", snapshot, "--store", store.string(), "-f", "raw", "-o", out.string()}, env);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::string message;
  EXPECT_TRUE(testing::images_identical(source, "raw", out, "raw", &message)) << "snapshot " << snapshot << ": " << message;
  fs::remove(out);
}

pid_t spawn_ferry(const std::vector<std::string>& args, const Env& env) { return e2e::spawn_ferry(args, env); }

// Sends SIGKILL to `pid` after `delay` and returns its exit code (128 + signal if killed).
int kill_after(pid_t pid, std::chrono::microseconds delay) {
  std::this_thread::sleep_for(delay);
  ::kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Sends SIGKILL to `pid` as soon as `ready()` holds (polled every 100 us), unless it exits first.
// Returns its exit code (128 + signal if killed).
int kill_when(pid_t pid, const std::function<bool()>& ready) {
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) throw std::runtime_error("waitpid failed");
    if (ready()) {
      ::kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Names of the committed objects in a store directory (temporaries have a '.' in their name).
std::set<std::string> object_names(const fs::path& dir) {
  std::set<std::string> names;
  for (auto& p : files_under(dir))
    if (p.filename().string().find('.') == std::string::npos) names.insert(p.filename().string());
  return names;
}

std::mt19937_64& rng() {
  static std::mt19937_64 r{std::random_device{}()};
  return r;
}

// ---------------------------------------------------------------------------------------------
// 1. Replication killed at a fault point or from outside.

// The source disk of the kill tests and a clean full run of it into a fresh store, made once.
struct Reference {
  TempDir dir;
  fs::path disk;
  uint64_t bytes_stored = 0;  // the run's JSON "bytes_stored"
  uint64_t pack_bytes = 0;    // size of the store's packs afterwards
  size_t packs = 0;
  uint64_t chunks_new = 0;
  std::chrono::microseconds duration{0};  // wall time of the whole `ferry replicate`
};

const Reference* reference() {
  static std::unique_ptr<Reference> ref;
  static bool tried = false;
  if (tried) return ref.get();
  tried = true;
  auto r = std::make_unique<Reference>();
  r->disk = make_data_disk(r->dir.path(), "source", 128, 1, 64);
  fs::path store = r->dir.path() / "reference-store";
  auto started = std::chrono::steady_clock::now();
  auto run = replicate(r->disk, store, "disk", env_for(r->dir));
  r->duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  if (run.exit_code != 0) {
    ADD_FAILURE() << "reference run failed: " << describe(run);
    return nullptr;
  }
  json j = run.json();
  r->bytes_stored = j.at("bytes_stored");
  r->chunks_new = j.at("stats").at("chunks_new");
  r->pack_bytes = pack_bytes(store);
  r->packs = pack_files(store).size();
  if (r->packs < 4) {
    ADD_FAILURE() << "the reference run wrote only " << r->packs << " packs; the kill tests need at least 4";
    return nullptr;
  }
  ref = std::move(r);
  return ref.get();
}

// After a replication into the fresh `store` was killed: the store checks clean, lists no snapshot,
// and a rerun completes, exports identical to the source, stores only what the killed run had not
// committed, and leaves the store as big as a clean run would.
void expect_recovery_after_killed_run(const Reference& ref, const fs::path& store, const Env& env, const fs::path& scratch,
                                      uint64_t* rerun_stored = nullptr) {
  const uint64_t killed_pack_bytes = pack_bytes(store);
  const size_t killed_packs = pack_files(store).size();
  const bool indexed = !object_names(store / "index").empty();

  json report = expect_check_clean(store, env);
  // Packs committed by the killed run are reported as notes (to be indexed by the next run), not errors.
  EXPECT_EQ(report.value("notes", json::array()).size(), indexed ? 0 : killed_packs) << report.dump(2);
  EXPECT_TRUE(snapshot_ids(store, env).empty()) << "the killed run must not leave a snapshot";

  auto rerun = replicate(ref.disk, store, "disk", env);
  ASSERT_EQ(rerun.exit_code, 0) << describe(rerun);
  json j = rerun.json();
  EXPECT_EQ(j.value("parent", "?"), "") << "the killed run must not become the parent";
  const uint64_t stored = j.at("bytes_stored");
  if (rerun_stored) *rerun_stored = stored;
  EXPECT_LE(stored, ref.bytes_stored - std::min(ref.bytes_stored, killed_pack_bytes) + kMetadataSlack)
      << "the rerun must reuse the " << killed_pack_bytes << " bytes of packs the killed run committed (a clean full run stores "
      << ref.bytes_stored << ")";
  // Nothing leaks: the packs take what a clean run's take, and no temporary is left.
  const uint64_t packs_now = pack_bytes(store);
  EXPECT_LE(packs_now, ref.pack_bytes + kMetadataSlack);
  EXPECT_GE(packs_now + kMetadataSlack, ref.pack_bytes);
  for (auto& f : files_under(store))
    EXPECT_EQ(f.filename().string().find(".tmp."), std::string::npos) << "temporary left in the store: " << f;

  json after = expect_check_clean(store, env);
  EXPECT_TRUE(after.value("notes", json::array()).empty()) << "the rerun must index the killed run's packs: " << after.dump(2);
  expect_export_identical(store, env, j.at("snapshot"), ref.disk, scratch);
}

class KilledReplication : public ::testing::TestWithParam<std::string> {};

TEST_P(KilledReplication, LeavesCleanStoreAndRerunReusesCommittedPacks) {
  const Reference* ref = reference();
  ASSERT_NE(ref, nullptr);
  std::string fault = GetParam();
  if (fault == "blob:middle") fault = "blob:" + std::to_string(ref->chunks_new / 2);
  TempDir dir;
  Env env = env_for(dir);
  fs::path store = dir.path() / "store";

  auto killed = replicate(ref->disk, store, "disk", with_fault(env, fault));
  ASSERT_EQ(killed.exit_code, kKilled) << "FERRY_FAULT=" << fault << ": " << describe(killed);

  // What the killed run left shows that it died where the fault point says.
  const size_t packs = pack_files(store).size();
  const bool indexed = !object_names(store / "index").empty();
  if (fault == "blob:1") {
    EXPECT_EQ(packs, 0u);
  }
  if (fault.rfind("blob:", 0) == 0) {
    EXPECT_LT(packs, ref->packs);
  }
  if (fault == "pack:1" || fault == "pack:2") {
    // The kill comes right after the N-th pack is committed; the other of the two pack closers may have committed
    // one more in that instant (seen once in CI), never two.
    const size_t n = fault == "pack:1" ? 1u : 2u;
    EXPECT_GE(packs, n);
    EXPECT_LE(packs, n + 1);
  }
  if (fault == "index:1") {
    EXPECT_EQ(packs, ref->packs);
  }
  EXPECT_EQ(indexed, fault == "snapshot:1");

  const uint64_t killed_pack_bytes = pack_bytes(store);
  uint64_t rerun_stored = 0;
  expect_recovery_after_killed_run(*ref, store, env, dir.path(), &rerun_stored);
  if (fault == "pack:2") {
    EXPECT_GE(killed_pack_bytes, 2 * kPackSize);
    EXPECT_LE(rerun_stored + 2 * kPackSize, ref->bytes_stored + kMetadataSlack)
        << "after a kill at pack:2 the rerun must store two packs less than a clean full run (" << ref->bytes_stored << ")";
  }
  if (fault == "index:1" || fault == "snapshot:1") {
    EXPECT_LT(rerun_stored, kMetadataSlack) << "every pack was committed before the kill; the rerun adds only metadata";
  }
}

// Fault points: the first blob, a blob in the middle of the run, after the first and the second
// pack, before the index, before the snapshot.
INSTANTIATE_TEST_SUITE_P(FaultPoints, KilledReplication,
                         ::testing::Values("blob:1", "blob:middle", "pack:1", "pack:2", "index:1", "snapshot:1"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), ':', '_');
                           return n;
                         });

TEST(KilledReplicationFromOutside, LeavesCleanStoreAndRerunReusesCommittedPacks) {
  const Reference* ref = reference();
  ASSERT_NE(ref, nullptr);
  TempDir dir;
  Env env = env_for(dir);
  // A kill at a random moment of the run; the store is created first so the kill lands in replication.
  int code = 0;
  fs::path store;
  std::chrono::microseconds delay{0};
  for (int attempt = 0; attempt < 6 && code != kKilled; attempt++) {
    store = dir.path() / ("store-" + std::to_string(attempt));
    auto init = e2e::ferry({"store", "init", "--store", store.string(), "--encrypt", "--key-id", "k"}, env);
    ASSERT_EQ(init.exit_code, 0) << describe(init);
    // Between 15% and 85% of a clean run's wall time, shorter on each retry (a loaded machine may be faster now).
    double frac = std::uniform_real_distribution<double>(0.15, 0.85)(rng()) / (1 << attempt);
    delay = std::chrono::microseconds(static_cast<int64_t>(ref->duration.count() * frac));
    pid_t pid = spawn_ferry({"replicate", ref->disk.string(), "--store", store.string(), "--name", "disk", "--encrypt", "--key-id", "k"}, env);
    code = kill_after(pid, delay);
    if (code != kKilled) {
      ASSERT_EQ(code, 0) << "replication failed by itself";
    }
  }
  ASSERT_EQ(code, kKilled) << "every run finished before the kill (clean run takes " << ref->duration.count() << " us)";
  const std::string where = "killed after " + std::to_string(delay.count()) + " us of a " + std::to_string(ref->duration.count()) +
                            " us run, " + std::to_string(pack_files(store).size()) + " packs committed";
  RecordProperty("kill", where);
  SCOPED_TRACE(where);
  expect_recovery_after_killed_run(*ref, store, env, dir.path());
}

// Kills aimed at the moments no fault point covers: while the index or the snapshot is being
// written (its temporary exists, not yet renamed).
class KilledWhileWriting : public ::testing::TestWithParam<std::string> {};

TEST_P(KilledWhileWriting, LeavesCleanStoreAndNoTemporaries) {
  const Reference* ref = reference();
  ASSERT_NE(ref, nullptr);
  const std::string dir_name = GetParam();  // "index" or "snapshots"
  TempDir dir;
  Env env = env_for(dir);
  fs::path store;
  int code = 0;
  for (int attempt = 0; attempt < 5 && code != kKilled; attempt++) {
    store = dir.path() / ("store-" + std::to_string(attempt));
    auto init = e2e::ferry({"store", "init", "--store", store.string(), "--encrypt", "--key-id", "k"}, env);
    ASSERT_EQ(init.exit_code, 0) << describe(init);
    pid_t pid = spawn_ferry({"replicate", ref->disk.string(), "--store", store.string(), "--name", "disk", "--encrypt", "--key-id", "k"}, env);
    code = kill_when(pid, [&] {
      for (auto& f : files_under(store / dir_name))
        if (f.filename().string().find(".tmp.") != std::string::npos) return true;
      return false;
    });
    if (code != kKilled) {
      ASSERT_EQ(code, 0) << "replication failed by itself";
    }
  }
  if (code != kKilled) GTEST_SKIP() << "the " << dir_name << " temporary never lived long enough to be seen";
  expect_recovery_after_killed_run(*ref, store, env, dir.path());
}

INSTANTIATE_TEST_SUITE_P(Moments, KilledWhileWriting, ::testing::Values("index", "snapshots"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// 2. An incremental run killed after a full run.

TEST(KilledIncrementalRun, KeepsEarlierSnapshotIntactAndRerunCompletes) {
  TempDir dir;
  Env env = env_for(dir);
  fs::path store = dir.path() / "store";
  fs::path disk = make_data_disk(dir.path(), "vm", 96, 2, 32);
  fs::path first_state = sparse_copy(disk, dir.path() / "first-state.raw");

  auto full = replicate(disk, store, "vm", env);
  ASSERT_EQ(full.exit_code, 0) << describe(full);
  const std::string first = full.json().at("snapshot");

  testing::mutate_disk(disk, 3, 24, kMiB);  // ~24 MiB of new data: more than a pack

  for (const char* fault : {"pack:1", "snapshot:1"}) {
    SCOPED_TRACE(std::string("FERRY_FAULT=") + fault);
    auto killed = replicate(disk, store, "vm", with_fault(env, fault));
    ASSERT_EQ(killed.exit_code, kKilled) << describe(killed);
    expect_check_clean(store, env);
    EXPECT_EQ(snapshot_ids(store, env), std::vector<std::string>{first});
    expect_export_identical(store, env, first, first_state, dir.path());
  }

  auto rerun = replicate(disk, store, "vm", env);
  ASSERT_EQ(rerun.exit_code, 0) << describe(rerun);
  json j = rerun.json();
  EXPECT_EQ(j.value("parent", ""), first);
  EXPECT_LT(j.at("bytes_stored").get<uint64_t>(), kMetadataSlack) << "the killed runs had already stored every new chunk";
  const std::string second = j.at("snapshot");
  expect_check_clean(store, env);
  expect_export_identical(store, env, second, disk, dir.path());
  expect_export_identical(store, env, first, first_state, dir.path());
}

// ---------------------------------------------------------------------------------------------
// 3. A flipped byte inside a pack.

TEST(DamagedPack, CheckNamesChunkAndSnapshotAndExportFailsWithoutOutput) {
  TempDir dir;
  Env env = env_for(dir);
  fs::path store = dir.path() / "store";
  fs::path disk_a = make_data_disk(dir.path(), "a", 96, 4, 32);
  fs::path disk_b = make_data_disk(dir.path(), "b", 64, 5, 16);

  auto ra = replicate(disk_a, store, "a", env);
  ASSERT_EQ(ra.exit_code, 0) << describe(ra);
  const std::string snap_a = ra.json().at("snapshot");
  const auto packs_a = pack_files(store);
  ASSERT_FALSE(packs_a.empty());
  auto rb = replicate(disk_b, store, "b", env);
  ASSERT_EQ(rb.exit_code, 0) << describe(rb);
  const std::string snap_b = rb.json().at("snapshot");

  // Flip one byte inside the first blob's ciphertext (a blob is a 12-byte nonce, ciphertext, 16-byte tag).
  const fs::path victim = packs_a.front();
  const std::string victim_name = victim.filename().string();
  testing::flip_byte(victim, 100, 0x5a);

  // Without --read-data only headers and the index are verified, and they are intact.
  auto quick = e2e::ferry({"store", "check", "--store", store.string(), "--json"}, env);
  EXPECT_EQ(quick.exit_code, 0) << describe(quick);
  EXPECT_EQ(quick.json().value("ok", false), true) << quick.out;

  auto full = e2e::ferry({"store", "check", "--store", store.string(), "--read-data", "--json"}, env);
  EXPECT_EQ(full.exit_code, 1) << describe(full);
  json report = full.json();
  EXPECT_EQ(report.value("ok", true), false);
  json damaged = report.value("damaged_chunks", json::object());
  ASSERT_EQ(damaged.size(), 1u) << "one flipped byte damages exactly one chunk: " << report.dump(2);
  const std::string chunk = damaged.begin().key();
  EXPECT_EQ(damaged.begin().value(), json::array({snap_a})) << "the damaged chunk belongs to snapshot a only";
  bool named = false;
  for (auto& e : report.value("errors", json::array()))
    if (e.get<std::string>().find(victim_name) != std::string::npos && e.get<std::string>().find(chunk) != std::string::npos) named = true;
  EXPECT_TRUE(named) << "an error must name the pack and the chunk: " << report.dump(2);

  // Exporting the affected snapshot fails and leaves nothing behind, in the raw and the qemu-img paths.
  for (const char* format : {"raw", "qcow2"}) {
    SCOPED_TRACE(format);
    fs::path out_dir = dir.path() / (std::string("out-") + format);
    fs::create_directories(out_dir);
    auto ex = e2e::ferry({"image", "export", snap_a, "--store", store.string(), "-f", format, "-o", (out_dir / "a.img").string()}, env);
    EXPECT_NE(ex.exit_code, 0) << describe(ex);
    EXPECT_NE(ex.err.find("authentication failed"), std::string::npos) << ex.err;
    EXPECT_NE(ex.err.find(victim_name), std::string::npos) << "the message must name the pack: " << ex.err;
    EXPECT_TRUE(files_under(out_dir).empty()) << "a failed export must leave no output and no temporary";
  }

  // The other disk's snapshot does not use the damaged chunk and still exports bit-exact.
  expect_export_identical(store, env, snap_b, disk_b, dir.path());
}

// ---------------------------------------------------------------------------------------------
// 4. Wrong or missing master key.

TEST(MasterKey, WrongOrMissingKeyFailsEveryCommandAndChangesNothing) {
  TempDir dir;
  Env env = env_for(dir);
  fs::path store = dir.path() / "store";
  fs::path disk = make_data_disk(dir.path(), "vm", 64, 6, 8);
  auto first = replicate(disk, store, "vm", env);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const std::string snap = first.json().at("snapshot");

  const fs::path key_file = dir.path() / "keyring" / "k.key";
  ASSERT_TRUE(fs::exists(key_file));
  const std::string good_key = testing::read_file(key_file);
  const auto before = store_fingerprint(store);
  fs::path out_dir = dir.path() / "out";
  fs::create_directories(out_dir);

  const std::string s = store.string();
  const std::vector<std::vector<std::string>> commands = {
      {"replicate", disk.string(), "--store", s, "--name", "vm", "--encrypt", "--key-id", "k"},
      {"replicate", disk.string(), "--store", s, "--name", "vm"},
      {"image", "export", snap, "--store", s, "-f", "raw", "-o", (out_dir / "vm.raw").string()},
      {"snapshots", "list", "--store", s},
      {"snapshots", "delete", snap, "--store", s},
      {"store", "check", "--store", s, "--read-data"},
      {"store", "stats", "--store", s},
      {"store", "prune", "--store", s},
  };
  auto expect_all_fail = [&](const std::string& message, const std::string& not_message) {
    for (auto& args : commands) {
      auto r = e2e::ferry(args, env);
      EXPECT_EQ(r.exit_code, 1) << args[0] << " " << args[1] << ": " << describe(r);
      EXPECT_NE(r.err.find(message), std::string::npos) << args[0] << " " << args[1] << ": " << r.err;
      EXPECT_EQ(r.err.find(not_message), std::string::npos) << args[0] << " " << args[1] << ": " << r.err;
    }
    EXPECT_EQ(store_fingerprint(store), before) << "a command that cannot open the store must not change it";
    EXPECT_TRUE(files_under(out_dir).empty()) << "no export output may appear";
  };

  {
    SCOPED_TRACE("wrong key");
    std::string other;
    for (int i = 0; i < 32; i++) {
      char h[3];
      std::snprintf(h, sizeof h, "%02x", static_cast<unsigned>(rng()() & 0xff));
      other += h;
    }
    ASSERT_NE(other + "\n", good_key);
    std::ofstream(key_file, std::ios::trunc) << other << "\n";
    expect_all_fail("master key 'k'", "not in keyring");
  }
  {
    SCOPED_TRACE("missing key");
    fs::remove(key_file);
    expect_all_fail("master key 'k' is not in keyring", "does not open");
    EXPECT_FALSE(fs::exists(key_file)) << "ferry must not make a new master key for an existing store";
  }

  // With the right key back, the store is whole.
  std::ofstream(key_file, std::ios::trunc) << good_key;
  ::chmod(key_file.c_str(), 0600);
  expect_check_clean(store, env);
  expect_export_identical(store, env, snap, disk, dir.path());
}

// ---------------------------------------------------------------------------------------------
// 5. A truncated (half-uploaded) pack.

TEST(TruncatedPack, CheckReportsItAndNextRunStillExportsIdentical) {
  TempDir dir;
  Env env = env_for(dir);
  fs::path store = dir.path() / "store";
  fs::path disk = make_data_disk(dir.path(), "vm", 96, 7, 32);
  auto first = replicate(disk, store, "vm", env);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const std::string snap1 = first.json().at("snapshot");

  const auto packs = pack_files(store);
  ASSERT_GE(packs.size(), 2u);
  const fs::path victim = packs.front();
  const std::string victim_name = victim.filename().string();
  fs::resize_file(victim, fs::file_size(victim) / 2);

  for (bool read_data : {false, true}) {
    SCOPED_TRACE(read_data ? "--read-data" : "headers only");
    std::vector<std::string> args = {"store", "check", "--store", store.string(), "--json"};
    if (read_data) args.push_back("--read-data");
    auto r = e2e::ferry(args, env);
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    json report = r.json();
    bool named = false;
    for (auto& e : report.value("errors", json::array()))
      if (e.get<std::string>().find(victim_name) != std::string::npos) named = true;
    EXPECT_TRUE(named) << "an error must name the truncated pack: " << report.dump(2);
    bool snapshot_named = false;
    const json damaged = report.value("damaged_chunks", json::object());
    for (auto& [chunk, snaps] : damaged.items())
      for (auto& s : snaps) snapshot_named |= s == snap1;
    EXPECT_TRUE(snapshot_named) << "the snapshot using the lost chunks must be named";
  }

  // The next run of the same disk must not trust the chunks of the truncated pack.
  auto rerun = replicate(disk, store, "vm", env);
  ASSERT_EQ(rerun.exit_code, 0) << describe(rerun);
  const std::string snap2 = rerun.json().at("snapshot");
  expect_export_identical(store, env, snap2, disk, dir.path());

  auto r = e2e::ferry({"store", "check", "--store", store.string(), "--read-data", "--json"}, env);
  const json damaged = r.json().value("damaged_chunks", json::object());
  std::vector<std::string> used_by_new;
  for (auto& [chunk, snaps] : damaged.items())
    for (auto& s : snaps)
      if (s == snap2) used_by_new.push_back(chunk);
  EXPECT_TRUE(used_by_new.empty()) << "the new snapshot uses " << used_by_new.size() << " chunks of the truncated pack, e.g. "
                                   << (used_by_new.empty() ? "" : used_by_new.front());
}

// ---------------------------------------------------------------------------------------------
// 6. Prune.

// A store holding a (full), a' (incremental, a with 16 MiB changed) and b; a and b are then deleted,
// so prune must delete b's packs and rewrite a's packs keeping the chunks a' still uses.
struct PruneStore {
  fs::path store, disk_a2;
  std::string snap_a2;
  uint64_t packs_needed_by_a2 = 0;  // pack bytes of a fresh store holding only a'
};

void make_prune_store(const TempDir& dir, const Env& env, PruneStore* out) {
  out->store = dir.path() / "store";
  fs::path disk_a = make_data_disk(dir.path(), "a", 128, 8, 48);
  out->disk_a2 = sparse_copy(disk_a, dir.path() / "a2.raw");
  testing::mutate_disk(out->disk_a2, 9, 16, kMiB);
  fs::path disk_b = make_data_disk(dir.path(), "b", 64, 10, 24);

  auto ra = replicate(disk_a, out->store, "a", env);
  ASSERT_EQ(ra.exit_code, 0) << describe(ra);
  auto ra2 = replicate(out->disk_a2, out->store, "a", env);
  ASSERT_EQ(ra2.exit_code, 0) << describe(ra2);
  auto rb = replicate(disk_b, out->store, "b", env);
  ASSERT_EQ(rb.exit_code, 0) << describe(rb);
  out->snap_a2 = ra2.json().at("snapshot");
  for (auto& r : {ra, rb}) {
    auto d = e2e::ferry({"snapshots", "delete", r.json().at("snapshot"), "--store", out->store.string()}, env);
    ASSERT_EQ(d.exit_code, 0) << describe(d);
  }
  ASSERT_EQ(snapshot_ids(out->store, env), std::vector<std::string>{out->snap_a2});

  fs::path fresh = dir.path() / "fresh-store";
  auto rf = replicate(out->disk_a2, fresh, "a", env);
  ASSERT_EQ(rf.exit_code, 0) << describe(rf);
  out->packs_needed_by_a2 = pack_bytes(fresh);
  fs::remove_all(fresh);
}

uint64_t stored_bytes(const fs::path& store, const Env& env) {
  auto r = e2e::ferry({"store", "stats", "--store", store.string(), "--json"}, env);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  return r.exit_code == 0 ? r.json().at("stored_bytes").get<uint64_t>() : 0;
}

TEST(Prune, ReclaimsDeletedSnapshotsAndKeepsTheRestBitExact) {
  TempDir dir;
  Env env = env_for(dir);
  PruneStore p;
  ASSERT_NO_FATAL_FAILURE(make_prune_store(dir, env, &p));
  const uint64_t before = stored_bytes(p.store, env);
  const uint64_t packs_before = pack_bytes(p.store);

  auto r = e2e::ferry({"store", "prune", "--store", p.store.string(), "--json"}, env);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  json j = r.json();
  EXPECT_GE(j.value("packs_deleted", 0), 1) << "b's packs hold nothing a' uses: " << j.dump(2);
  EXPECT_GE(j.value("packs_rewritten", 0), 1) << "a's packs mix chunks a' uses with chunks it does not: " << j.dump(2);

  expect_check_clean(p.store, env);
  EXPECT_EQ(snapshot_ids(p.store, env), std::vector<std::string>{p.snap_a2});
  expect_export_identical(p.store, env, p.snap_a2, p.disk_a2, dir.path());
  const uint64_t after = stored_bytes(p.store, env);
  EXPECT_LT(after, before);
  // Everything no snapshot uses is gone: the packs take what a fresh store of a' alone takes.
  const uint64_t packs_after = pack_bytes(p.store);
  EXPECT_LT(packs_after, packs_before);
  EXPECT_LE(packs_after, p.packs_needed_by_a2 + kMetadataSlack) << "before prune: " << packs_before;
  EXPECT_GE(packs_after + kMetadataSlack, p.packs_needed_by_a2);
}

TEST(Prune, KilledAtAnyMomentLeavesStoreConsistent) {
  TempDir dir;
  Env env = env_for(dir);
  PruneStore p;
  ASSERT_NO_FATAL_FAILURE(make_prune_store(dir, env, &p));
  const uint64_t packs_before = pack_bytes(p.store);
  const fs::path pristine = dir.path() / "pristine";
  testing::run_checked({"cp", "-a", p.store.string(), pristine.string()});
  auto restore = [&] {
    fs::remove_all(p.store);
    testing::run_checked({"cp", "-a", pristine.string(), p.store.string()});
  };

  // How long a whole prune of this store takes here and now, to spread the kills over all of it.
  restore();
  auto started = std::chrono::steady_clock::now();
  auto timing = e2e::ferry({"store", "prune", "--store", p.store.string()}, env);
  ASSERT_EQ(timing.exit_code, 0) << describe(timing);
  const auto duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);

  // Each attempt kills a prune of the same store at a random moment in its own fifth of the run
  // (stretched a little, as a loaded machine may be slower now); each kill must leave a store that
  // checks clean and still exports a' bit-exact.
  int kills = 0;
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts; attempt++) {
    restore();
    double frac = (attempt + std::uniform_real_distribution<double>(0, 1)(rng())) / kAttempts * 1.1;
    auto delay = std::chrono::microseconds(static_cast<int64_t>(duration.count() * frac));
    const std::string where = "prune killed after " + std::to_string(delay.count()) + " us of a " + std::to_string(duration.count()) + " us run";
    SCOPED_TRACE(where);
    pid_t pid = spawn_ferry({"store", "prune", "--store", p.store.string()}, env);
    int code = kill_after(pid, delay);
    if (code != kKilled) {
      ASSERT_EQ(code, 0) << "prune failed by itself";
    } else {
      kills++;
      RecordProperty("kill" + std::to_string(attempt), where + ": " + std::to_string(pack_files(p.store).size()) + " packs, " +
                                                          std::to_string(files_under(p.store / "index").size()) + " indexes");
    }
    expect_check_clean(p.store, env);
    EXPECT_EQ(snapshot_ids(p.store, env), std::vector<std::string>{p.snap_a2});
    expect_export_identical(p.store, env, p.snap_a2, p.disk_a2, dir.path());
  }
  EXPECT_GE(kills, 1) << "prune always finished before the kill";

  // Two kills aimed at the short end of a prune: right after its new index is committed (the old
  // indexes and packs still there), and right after it has removed its first obsolete pack.
  const auto old_indexes = object_names(pristine / "index");
  const auto old_packs = object_names(pristine / "packs");
  const std::vector<std::pair<std::string, std::function<bool()>>> moments = {
      {"new index committed",
       [&] {
         for (auto& n : object_names(p.store / "index"))
           if (!old_indexes.count(n)) return true;
         return false;
       }},
      {"first old pack removed",
       [&] {
         auto now = object_names(p.store / "packs");
         for (auto& n : old_packs)
           if (!now.count(n)) return true;
         return false;
       }},
  };
  for (auto& [moment, ready] : moments) {
    SCOPED_TRACE("prune killed when " + moment);
    restore();
    pid_t pid = spawn_ferry({"store", "prune", "--store", p.store.string()}, env);
    int code = kill_when(pid, ready);
    if (code != kKilled) {
      ASSERT_EQ(code, 0) << "prune failed by itself";
    }
    RecordProperty(moment, code == kKilled ? std::to_string(pack_files(p.store).size()) + " packs, " +
                                                 std::to_string(files_under(p.store / "index").size()) + " indexes"
                                           : "prune finished first");
    expect_check_clean(p.store, env);
    EXPECT_EQ(snapshot_ids(p.store, env), std::vector<std::string>{p.snap_a2});
    expect_export_identical(p.store, env, p.snap_a2, p.disk_a2, dir.path());
  }

  // A prune after the last kill completes and reclaims everything.
  auto r = e2e::ferry({"store", "prune", "--store", p.store.string(), "--json"}, env);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  expect_check_clean(p.store, env);
  expect_export_identical(p.store, env, p.snap_a2, p.disk_a2, dir.path());
  EXPECT_TRUE(files_under(p.store / "tmp").empty());
  const uint64_t packs_after = pack_bytes(p.store);
  EXPECT_LT(packs_after, packs_before);
  EXPECT_LE(packs_after, p.packs_needed_by_a2 + kMetadataSlack);
}

}  // namespace
}  // namespace ferry
