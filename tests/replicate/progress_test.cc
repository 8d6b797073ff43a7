// replicate::replicate's progress: every byte of the disk is counted exactly once, whether it is read as part of
// a data chunk or skipped as a zero range, so a caller's bar ends at 100% and never past it.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "common/progress.h"
#include "disk/disk.h"
#include "fixtures/fixtures.h"
#include "replicate/replicate.h"
#include "store/repository.h"

namespace fx = ferry::testing;

namespace {

// A sparse raw disk of `size` bytes with 4 KiB of data at each of `offsets`.
void write_sparse_disk(const std::filesystem::path& file, uint64_t size, const std::vector<uint64_t>& offsets) {
  int fd = ::open(file.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  std::string block(4096, 'x');
  for (uint64_t off : offsets) ASSERT_EQ(::pwrite(fd, block.data(), block.size(), static_cast<off_t>(off)), 4096);
  ::close(fd);
}

uint64_t progress_of_replicating(const std::filesystem::path& disk, const std::filesystem::path& store_dir) {
  ferry::store::Keyring keyring(store_dir.parent_path() / "keyring");
  ferry::store::Repository::init(*ferry::store::open_local_backend(store_dir, true), ferry::store::InitOptions{}, keyring);
  auto repo = ferry::store::Repository::open(ferry::store::open_local_backend(store_dir, false), keyring);
  auto source = ferry::disk::open_source(disk.string());
  ferry::Progress progress("", source->size(), false);
  ferry::replicate::Options options;
  options.name = "disk";
  options.progress = &progress;
  ferry::replicate::replicate(*source, *repo, options);
  return progress.done();
}

TEST(ReplicateProgress, ZeroRangesInsideDataChunksAreNotCountedTwice) {
  fx::TempDir dir;
  // Data at 4 KiB (chunk 0 holds 60 KiB of zeros around it) and in the last, partial chunk: the final 4 KiB
  // block ends at the disk's end, 1000 bytes into that chunk.
  const uint64_t size = 1024 * 1024 + 1000;
  ASSERT_NO_FATAL_FAILURE(write_sparse_disk(dir.path() / "disk.raw", size, {4096, size - 4096}));
  EXPECT_EQ(progress_of_replicating(dir.path() / "disk.raw", dir.path() / "store"), size);
}

TEST(ReplicateProgress, EmptyDiskCountsItsWholeSize) {
  fx::TempDir dir;
  const uint64_t size = 3 * 1024 * 1024 + 512;
  ASSERT_NO_FATAL_FAILURE(write_sparse_disk(dir.path() / "disk.raw", size, {}));
  EXPECT_EQ(progress_of_replicating(dir.path() / "disk.raw", dir.path() / "store"), size);
}

}  // namespace
