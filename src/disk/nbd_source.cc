// Every non-raw format: a private read-only qemu-nbd (socket-activated by libnbd, so it lives
// exactly as long as the handle) read through libnbd, with base:allocation block status.
#include <libnbd.h>

#include <algorithm>
#include <mutex>

#include "common/error.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

class NbdSource : public Source {
 public:
  NbdSource(const std::string& filename, const std::string& format, DiskInfo info) : info_(std::move(info)) {
    h_ = nbd_create();
    if (!h_) fail(ErrorKind::kExternal, std::string("libnbd: ") + nbd_get_error());
    nbd_add_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION);
    std::vector<std::string> args = {"qemu-nbd", "--read-only", "--shared=1"};
    if (!format.empty()) args.insert(args.end(), {"--format", format});
    args.push_back(filename);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (nbd_connect_systemd_socket_activation(h_, argv.data()) == -1) {
      std::string err = nbd_get_error() ? nbd_get_error() : "unknown error";
      nbd_close(h_);
      h_ = nullptr;
      fail(ErrorKind::kExternal, "disk '" + info_.path + "': cannot start qemu-nbd: " + err);
    }
    int64_t size = nbd_get_size(h_);
    if (size < 0) check(-1, "size");
    info_.virtual_size = static_cast<uint64_t>(size);
    has_status_ = nbd_can_meta_context(h_, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  }

  ~NbdSource() override {
    if (h_) {
      nbd_shutdown(h_, 0);
      nbd_close(h_);
    }
  }

  const DiskInfo& info() const override { return info_; }

  std::vector<Extent> extents(uint64_t offset, uint64_t length) override {
    std::vector<Extent> out;
    uint64_t end = std::min(offset + length, info_.virtual_size);
    if (!has_status_) {
      if (offset < end) out.push_back({offset, end - offset, false});
      return out;
    }
    uint64_t pos = offset;
    while (pos < end) {
      uint64_t want = std::min<uint64_t>(end - pos, uint64_t{1} << 31);
      struct Ctx {
        std::vector<Extent>* out;
        uint64_t pos, end;
      } ctx{&out, pos, end};
      nbd_extent_callback cb = {
          [](void* user, const char* meta, uint64_t, uint32_t* entries, size_t n, int*) -> int {
            auto* c = static_cast<Ctx*>(user);
            if (std::string_view(meta) != LIBNBD_CONTEXT_BASE_ALLOCATION) return 0;
            for (size_t i = 0; i + 1 < n && c->pos < c->end; i += 2) {
              uint64_t len = std::min<uint64_t>(entries[i], c->end - c->pos);
              bool zero = entries[i + 1] & LIBNBD_STATE_ZERO;
              if (!c->out->empty() && c->out->back().zero == zero && c->out->back().offset + c->out->back().length == c->pos)
                c->out->back().length += len;
              else
                c->out->push_back({c->pos, len, zero});
              c->pos += len;
            }
            return 0;
          },
          &ctx, nullptr};
      check(nbd_block_status(h_, want, pos, cb, 0), "block status");
      if (ctx.pos == pos) fail(ErrorKind::kExternal, "disk '" + info_.path + "': qemu-nbd returned no block status at offset " + std::to_string(pos));
      pos = ctx.pos;
    }
    return out;
  }

  // Issues the read as several requests at once so qemu-nbd works on them in parallel, then waits for
  // all. One caller at a time drives the handle (two threads polling one handle could miss replies).
  void read(void* buf, size_t len, uint64_t offset) override {
    std::lock_guard lock(mu_);
    constexpr size_t kPiece = 256 * 1024;
    auto* p = static_cast<char*>(buf);
    std::vector<int64_t> cookies;
    for (size_t done = 0; done < len; done += kPiece) {
      size_t n = std::min(kPiece, len - done);
      int64_t cookie = nbd_aio_pread(h_, p + done, n, offset + done, NBD_NULL_COMPLETION, 0);
      if (cookie == -1) check(-1, "read at offset " + std::to_string(offset + done));
      cookies.push_back(cookie);
    }
    // Every request is waited for, even after one fails: they all write into `buf`.
    std::string error;
    for (int64_t cookie : cookies) {
      int r;
      while ((r = nbd_aio_command_completed(h_, cookie)) == 0) {
        if (nbd_poll(h_, -1) == -1) {
          r = -1;
          break;
        }
      }
      if (r == -1 && error.empty()) error = nbd_get_error() ? nbd_get_error() : "unknown error";
      if (r == -1 && !nbd_aio_is_ready(h_) && !nbd_aio_is_processing(h_)) break;  // connection gone: nothing more will land
    }
    if (!error.empty())
      fail(ErrorKind::kCorrupt, "disk '" + info_.path + "': read at offset " + std::to_string(offset) + " failed: " + error);
  }

 private:
  void check(int rc, const std::string& what) {
    if (rc == -1) {
      const char* e = nbd_get_error();
      fail(ErrorKind::kCorrupt, "disk '" + info_.path + "': " + what + " failed: " + (e ? e : "unknown error"));
    }
  }

  DiskInfo info_;
  nbd_handle* h_ = nullptr;
  bool has_status_ = false;
  std::mutex mu_;
};

}  // namespace

std::unique_ptr<Source> open_nbd_source(const std::string& filename, const std::string& format, DiskInfo info) {
  return std::make_unique<NbdSource>(filename, format, std::move(info));
}

}  // namespace ferry::disk
