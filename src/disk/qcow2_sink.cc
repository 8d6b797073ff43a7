// A qcow2 (version 3) image written directly, for exports: the set of data clusters is known before the
// first write (Sink::plan), so the whole layout is fixed up front and data goes straight to its final
// place with pwrite, as fast as a raw export. Going through qemu-nbd instead cost 3x the time of
// `qemu-img convert` (two extra copies through a socket, per-request allocation in qemu-nbd).
//
// Layout (64 KiB clusters, 16-bit refcounts), every cluster used exactly once:
//   header | L1 table | refcount table | refcount blocks | L2 tables (one per 512 MiB with data) | data clusters in guest order
// Images written here pass `qemu-img check` with no errors and no leaks (tests/disk).
#include <algorithm>

#include "common/buffer.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

constexpr uint32_t kClusterBits = 16;
constexpr uint64_t kCluster = uint64_t{1} << kClusterBits;
constexpr uint64_t kL2Entries = kCluster / 8;              // guest clusters mapped by one L2 table
constexpr uint64_t kRefcountsPerBlock = kCluster / 2;      // 16-bit refcounts
constexpr uint64_t kCopied = uint64_t{1} << 63;           // QCOW_OFLAG_COPIED: refcount is exactly 1

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

void put_be32(char* p, uint32_t v) {
  for (int i = 3; i >= 0; i--, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
void put_be64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}

class Qcow2Sink : public FileSink {
 public:
  Qcow2Sink(const std::filesystem::path& path, uint64_t size) : FileSink(path), size_(size) {}

  void plan(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) override {
    for (auto& [off, len] : ranges) {
      if (len == 0) continue;
      uint64_t first = off / kCluster, last = (off + len - 1) / kCluster;
      if (off + len > size_) fail(ErrorKind::kInvalidArgument, "qcow2 export: data range past the end of the disk");
      if (!clusters_.empty() && clusters_.back() >= first) first = clusters_.back() + 1;
      for (uint64_t c = first; c <= last; c++) clusters_.push_back(c);
    }
    l1_size_ = div_up(size_, kCluster * kL2Entries);
    for (uint64_t c : clusters_)
      if (l2_regions_.empty() || l2_regions_.back() != c / kL2Entries) l2_regions_.push_back(c / kL2Entries);
    l1_clusters_ = std::max<uint64_t>(1, div_up(l1_size_ * 8, kCluster));
    // The refcount structures cover every cluster including themselves: iterate to the fixed point.
    uint64_t fixed = 1 + l1_clusters_ + l2_regions_.size() + clusters_.size();
    rc_blocks_ = 1;
    rc_table_clusters_ = 1;
    for (;;) {
      uint64_t total = fixed + rc_blocks_ + rc_table_clusters_;
      uint64_t blocks = div_up(total, kRefcountsPerBlock);
      uint64_t table = div_up(blocks * 8, kCluster);
      if (blocks == rc_blocks_ && table == rc_table_clusters_) break;
      rc_blocks_ = std::max(blocks, rc_blocks_);
      rc_table_clusters_ = std::max(table, rc_table_clusters_);
    }
    l1_offset_ = kCluster;
    rc_table_offset_ = l1_offset_ + l1_clusters_ * kCluster;
    rc_blocks_offset_ = rc_table_offset_ + rc_table_clusters_ * kCluster;
    l2_offset_ = rc_blocks_offset_ + rc_blocks_ * kCluster;
    data_offset_ = l2_offset_ + l2_regions_.size() * kCluster;
    total_clusters_ = data_offset_ / kCluster + clusters_.size();
    resize(total_clusters_ * kCluster);
    planned_ = true;
  }

  void write(const void* buf, size_t len, uint64_t offset) override {
    if (!planned_) fail(ErrorKind::kInvalidArgument, "qcow2 export: write before plan()");
    const char* p = static_cast<const char*>(buf);
    while (len > 0) {
      // Guest clusters that are consecutive in the plan are consecutive in the file: write the longest such run at once.
      uint64_t c = offset / kCluster;
      auto it = std::lower_bound(clusters_.begin(), clusters_.end(), c);
      if (it == clusters_.end() || *it != c) fail(ErrorKind::kInvalidArgument, "qcow2 export: write outside the planned data");
      size_t rank = static_cast<size_t>(it - clusters_.begin());
      uint64_t run_end = (c + 1) * kCluster;
      for (size_t r = rank + 1; r < clusters_.size() && clusters_[r] == clusters_[r - 1] + 1 && run_end < offset + len; r++)
        run_end += kCluster;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, run_end - offset));
      write_file(p, n, data_offset_ + rank * kCluster + offset % kCluster);
      p += n;
      len -= n;
      offset += n;
    }
  }

 private:
  void finish_file() override {
    if (!planned_) plan({});
    // Header.
    AlignedBuffer header = make_aligned_buffer(kCluster);
    std::fill(header.get(), header.get() + kCluster, 0);
    char* h = header.get();
    put_be32(h + 0, 0x514649fb);  // "QFI\xfb"
    put_be32(h + 4, 3);           // version
    put_be32(h + 20, kClusterBits);
    put_be64(h + 24, size_);
    put_be32(h + 36, static_cast<uint32_t>(l1_size_));
    put_be64(h + 40, l1_offset_);
    put_be64(h + 48, rc_table_offset_);
    put_be32(h + 56, static_cast<uint32_t>(rc_table_clusters_));
    put_be32(h + 96, 4);    // refcount_order: 16-bit refcounts
    put_be32(h + 100, 104);  // header_length; the header extension area that follows is the end marker (zeros)
    write_file(h, kCluster, 0);

    // L1 table, L2 tables.
    std::string l1(l1_clusters_ * kCluster, '\0');
    std::string l2(l2_regions_.size() * kCluster, '\0');
    for (size_t r = 0; r < l2_regions_.size(); r++) put_be64(&l1[l2_regions_[r] * 8], (l2_offset_ + r * kCluster) | kCopied);
    size_t region = 0;
    for (size_t rank = 0; rank < clusters_.size(); rank++) {
      uint64_t c = clusters_[rank];
      while (l2_regions_[region] != c / kL2Entries) region++;
      put_be64(&l2[region * kCluster + (c % kL2Entries) * 8], (data_offset_ + rank * kCluster) | kCopied);
    }
    write_file(l1.data(), l1.size(), l1_offset_);
    if (!l2.empty()) write_file(l2.data(), l2.size(), l2_offset_);

    // Refcount table and blocks: every cluster of the file has refcount 1.
    std::string table(rc_table_clusters_ * kCluster, '\0');
    std::string blocks(rc_blocks_ * kCluster, '\0');
    for (uint64_t b = 0; b < rc_blocks_; b++) put_be64(&table[b * 8], rc_blocks_offset_ + b * kCluster);
    for (uint64_t c = 0; c < total_clusters_; c++) {
      blocks[c * 2] = 0;
      blocks[c * 2 + 1] = 1;
    }
    write_file(table.data(), table.size(), rc_table_offset_);
    write_file(blocks.data(), blocks.size(), rc_blocks_offset_);
  }

  uint64_t size_;
  bool planned_ = false;
  std::vector<uint64_t> clusters_;    // guest cluster numbers with data, ascending; rank = position in the file's data area
  std::vector<uint64_t> l2_regions_;  // L1 indexes that have an L2 table, ascending
  uint64_t l1_size_ = 0, l1_clusters_ = 0, rc_blocks_ = 0, rc_table_clusters_ = 0, total_clusters_ = 0;
  uint64_t l1_offset_ = 0, rc_table_offset_ = 0, rc_blocks_offset_ = 0, l2_offset_ = 0, data_offset_ = 0;
};

}  // namespace

std::unique_ptr<Sink> make_qcow2_sink(const std::filesystem::path& path, uint64_t size) {
  return std::make_unique<Qcow2Sink>(path, size);
}

}  // namespace ferry::disk
