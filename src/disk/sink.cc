// Sinks: raw images written directly (sparse), qcow2 by qcow2_sink.cc, every other format created by
// qemu-img and written through a private qemu-nbd. All write to a temporary next to the target and
// rename when done.
#include <fcntl.h>
#include <libnbd.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

class RawSink : public FileSink {
 public:
  RawSink(const std::filesystem::path& path, uint64_t size) : FileSink(path) { resize(size); }
  void write(const void* buf, size_t len, uint64_t offset) override { write_file(buf, len, offset); }
};

class NbdSink : public Sink {
 public:
  NbdSink(const std::filesystem::path& path, TargetFormat format, uint64_t size) : path_(path), tmp_(temp_name_for(path)) {
    std::string fmt = qemu_format(format);
    std::vector<std::string> create = {"qemu-img", "create", "-q", "-f", fmt};
    switch (format) {
      case TargetFormat::kVmdk: create.insert(create.end(), {"-o", "subformat=monolithicSparse"}); break;
      case TargetFormat::kVhd: create.insert(create.end(), {"-o", "subformat=dynamic,force_size=on"}); break;
      case TargetFormat::kVhdFixed: create.insert(create.end(), {"-o", "subformat=fixed,force_size=on"}); break;
      default: break;
    }
    create.push_back(tmp_.string());
    create.push_back(std::to_string(size));
    ProcessResult r = run_process(create);
    if (r.exit_code != 0) {
      ::unlink(tmp_.c_str());
      fail(ErrorKind::kExternal, "cannot create " + to_string(format) + " image '" + path.string() + "': " + tool_message(r.err));
    }
    h_ = nbd_create();
    // cache=unsafe: qemu-nbd writes through the page cache without fdatasync (qcow2 otherwise syncs on
    // metadata cache evictions, which made exports 3x slower). An NBD flush still makes qemu write its
    // metadata caches out; finish() then fsyncs the file itself, so the image is durable all the same.
    std::vector<std::string> args = {"qemu-nbd", "--format", fmt, "--shared=2", "--cache=unsafe", tmp_.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (!h_ || nbd_connect_systemd_socket_activation(h_, argv.data()) == -1) {
      std::string err = nbd_get_error() ? nbd_get_error() : "unknown error";
      cleanup();
      fail(ErrorKind::kExternal, "cannot open new image '" + path.string() + "' with qemu-nbd: " + err);
    }
  }
  ~NbdSink() override {
    if (!done_) cleanup();
  }
  void write(const void* buf, size_t len, uint64_t offset) override {
    if (nbd_pwrite(h_, buf, len, offset, 0) == -1)
      fail(ErrorKind::kIo, "write to '" + path_.string() + "' at offset " + std::to_string(offset) + ": " + nbd_get_error());
  }
  void finish() override {
    if (nbd_flush(h_, 0) == -1) fail(ErrorKind::kIo, "flush '" + path_.string() + "': " + std::string(nbd_get_error()));
    nbd_shutdown(h_, 0);
    nbd_close(h_);
    h_ = nullptr;
    File f(tmp_, O_RDONLY);
    f.sync();
    rename_noreplace_durable(tmp_, path_);
    done_ = true;
  }

 private:
  void cleanup() {
    if (h_) {
      nbd_close(h_);
      h_ = nullptr;
    }
    ::unlink(tmp_.c_str());
  }
  std::filesystem::path path_, tmp_;
  nbd_handle* h_ = nullptr;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Sink> create_sink(const std::filesystem::path& path, TargetFormat format, uint64_t size) {
  if (std::filesystem::exists(path)) fail(ErrorKind::kInvalidArgument, "'" + path.string() + "' already exists; not overwriting it");
  auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(dir)) fail(ErrorKind::kNotFound, "cannot write '" + path.string() + "': directory '" + dir.string() + "' does not exist");
  if (format != TargetFormat::kRaw && size % 512)
    fail(ErrorKind::kUnsupported, to_string(format) + " images need a size that is a multiple of 512 bytes (disk is " + std::to_string(size) + ")");
  if (format == TargetFormat::kRaw) return std::make_unique<RawSink>(path, size);
  if (format == TargetFormat::kQcow2) return make_qcow2_sink(path, size);
  return std::make_unique<NbdSink>(path, format, size);
}

}  // namespace ferry::disk
