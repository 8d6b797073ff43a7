// The plugin table and the helpers every plugin shares: directory walks, disk probing with
// qemu-img info --output=json, stable ordering of the results, and small parsers.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

struct Registration {
  const char* type;
  std::unique_ptr<Plugin> (*make)(const ManagerConfig&);
};

// One line per VM manager kind.
const Registration kPlugins[] = {
    {"vmware", make_vmware},   {"hyperv", make_hyperv}, {"azure", make_azure},
    {"libvirt", make_libvirt}, {"ova", make_ova},       {"local", make_local},
};

bool has_extension(const fs::path& file, const std::vector<std::string>& exts) {
  std::string ext = lower(file.extension().string());
  return std::find(exts.begin(), exts.end(), ext) != exts.end();
}

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

// The size of a block device holding raw data; "" or the reason it cannot be read.
std::string block_device_size(const std::string& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  std::string problem;
  if (::ioctl(fd, BLKGETSIZE64, size) != 0) problem = std::string("cannot read its size: ") + std::strerror(errno);
  ::close(fd);
  return problem;
}

}  // namespace

std::unique_ptr<Plugin> make_plugin(const ManagerConfig& config) {
  for (const auto& p : kPlugins)
    if (config.type == p.type) return p.make(config);
  std::string known;
  for (const auto& t : plugin_types()) known += (known.empty() ? "" : ", ") + t;
  fail(ErrorKind::kInvalidArgument, "unknown VM manager type '" + config.type + "' (known: " + known + ")");
}

std::vector<std::string> plugin_types() {
  std::vector<std::string> types;
  for (const auto& p : kPlugins) types.push_back(p.type);
  return types;
}

fs::path require_root(const ManagerConfig& config) {
  std::string what = config.type + " manager '" + config.name + "'";
  if (config.path.empty()) fail(ErrorKind::kInvalidArgument, what + ": no directory given");
  fs::path root = fs::absolute(config.path).lexically_normal();
  if (!root.has_filename()) root = root.parent_path();  // "/x/y/" -> "/x/y"
  std::error_code ec;
  auto status = fs::status(root, ec);
  if (!fs::exists(status)) fail(ErrorKind::kNotFound, what + ": directory '" + config.path + "' does not exist");
  if (!fs::is_directory(status)) fail(ErrorKind::kInvalidArgument, what + ": '" + config.path + "' is not a directory");
  return root;
}

std::vector<fs::path> list_files(const fs::path& dir, const std::vector<std::string>& exts, bool recursive) {
  std::vector<fs::path> files;
  std::error_code ec;
  auto consider = [&](const fs::directory_entry& e) {
    std::error_code ignored;
    if (!hidden(e.path()) && e.is_regular_file(ignored) && has_extension(e.path(), exts)) files.push_back(e.path());
  };
  if (recursive) {
    fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      if (hidden(it->path()) && it->is_directory(ec)) {
        it.disable_recursion_pending();
        continue;
      }
      consider(*it);
    }
  } else {
    fs::directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) consider(*it);
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<fs::path> list_dirs(const fs::path& dir) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code ignored;
    if (!hidden(it->path()) && it->is_directory(ignored)) dirs.push_back(it->path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::string shown(const fs::path& root, const fs::path& path) {
  fs::path rel = path.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..") return path.string();
  return rel.string();
}

QemuInfo qemu_info(const std::string& filename, const std::string& qemu_format) {
  // -U: images of running VMs (libvirt, local) are locked by their QEMU; reading metadata is safe.
  std::vector<std::string> argv = {"qemu-img", "info", "--output=json", "-U"};
  if (!qemu_format.empty()) argv.insert(argv.end(), {"-f", qemu_format});
  argv.push_back(filename);
  ProcessResult r = run_process(argv);
  QemuInfo info;
  if (r.exit_code != 0) {
    info.error = tool_message(r.err);
    // qemu quotes json: pseudo-filenames whole; they mean nothing to a user.
    for (size_t pos; (pos = info.error.find("'json:{")) != std::string::npos;) {
      size_t end = info.error.find("}'", pos);
      if (end == std::string::npos) break;
      info.error.replace(pos, end + 2 - pos, "the image");
    }
    if (info.error.empty()) info.error = "qemu-img cannot read it (exit code " + std::to_string(r.exit_code) + ")";
    return info;
  }
  try {
    auto j = nlohmann::json::parse(r.out);
    info.format = j.at("format").get<std::string>();
    info.size = j.at("virtual-size").get<uint64_t>();
    info.backing = j.value("backing-filename", "");
    if (!info.backing.empty()) info.references.push_back({"backing file", j.value("full-backing-filename", info.backing), true});
    if (auto data = j.find("format-specific"); data != j.end() && data->contains("data")) {
      const auto& d = (*data)["data"];
      for (const auto& e : d.value("extents", nlohmann::json::array())) info.references.push_back({"extent", e.at("filename").get<std::string>(), true});
      // qemu opens a qcow2's relative data file name from its working directory, not the image's.
      if (d.contains("data-file")) info.references.push_back({"data file", d.at("data-file").get<std::string>(), false});
    }
  } catch (const nlohmann::json::exception& e) {
    info.error = std::string("cannot parse qemu-img info output: ") + e.what();
  }
  return info;
}

std::string qemu_format_for(const fs::path& file) {
  static const std::map<std::string, std::string> kByExtension = {{".vmdk", "vmdk"},   {".vhd", "vpc"}, {".vhdx", "vhdx"},
                                                                  {".qcow2", "qcow2"}, {".vdi", "vdi"}, {".raw", "raw"}};
  auto it = kByExtension.find(lower(file.extension().string()));
  return it == kByExtension.end() ? "" : it->second;
}

Problem probe(const Confinement& conf, const DiskSpec& spec, DiskInfo& disk) {
  const fs::path file = spec.file();
  if (auto why = conf.check(file); !why.empty()) return {why, true};
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return {errno == ENOENT ? "no such file" : std::strerror(errno)};
  if (auto why = not_a_disk(st); !why.empty()) return {why, true};
  std::string format = spec.qemu_format;
  if (!spec.member && S_ISBLK(st.st_mode) && (format.empty() || format == "raw")) {
    disk.format = "raw";
    return {block_device_size(spec.path, &disk.size)};
  }
  // qemu-img info opens a VMDK's extents: those its descriptor names are checked before it runs.
  if (format.empty() || format == "vmdk") {
    try {
      if (auto why = check_references(conf, file, vmdk_references(spec)); !why.empty()) return {why, true};
    } catch (const Error& e) {
      return {e.what()};
    }
  }
  // An OVA member's json: filename names its format itself.
  QemuInfo info = spec.member ? qemu_info(spec.member->qemu_filename, "") : qemu_info(spec.path, format);
  if (!info.error.empty()) return {info.error};
  if (auto why = check_references(conf, file, info.references); !why.empty()) return {why, true};
  disk.format = info.format == "vpc" ? "vhd" : info.format;
  disk.size = info.size;
  if (!info.backing.empty())
    return {"has a backing file ('" + info.backing + "'): it is one layer of a chain (a snapshot); " +
            "consolidate the snapshots or flatten the chain with 'qemu-img convert' first"};
  return {};
}

void add_disks(VmInfo& vm, const std::vector<DiskSpec>& disks, const Confinement& conf) {
  for (const auto& spec : disks) {
    DiskInfo disk;
    disk.name = spec.name;
    disk.path = spec.path;
    Problem problem = probe(conf, spec, disk);
    if (!problem.text.empty()) add_error(vm, "disk '" + spec.name + "' (" + shown(conf.root(), spec.path) + "): " + problem.text);
    vm.disks.push_back(std::move(disk));
  }
}

void add_error(VmInfo& vm, const std::string& problem) { vm.error += (vm.error.empty() ? "" : "; ") + problem; }

VmInfo read_guarded(const Confinement& conf, const fs::path& path, const std::function<VmInfo()>& read) {
  std::string problem = conf.check(path);
  try {
    if (problem.empty()) return read();
  } catch (const std::exception& e) {
    problem = e.what();
  }
  VmInfo vm;
  vm.vm_id = shown(conf.root(), path);
  vm.name = path.stem().string();
  vm.path = path.string();
  vm.error = vm.vm_id + ": " + problem;
  return vm;
}

std::string read_config(const fs::path& file) {
  File f(file, O_RDONLY | O_NONBLOCK);  // never waits on a FIFO
  struct stat st;
  if (::fstat(f.fd(), &st) != 0) fail_errno("'" + file.string() + "'");
  if (!S_ISREG(st.st_mode)) fail(ErrorKind::kInvalidArgument, "'" + file.string() + "' is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes)
    fail(ErrorKind::kInvalidArgument, "'" + file.string() + "' is " + std::to_string(st.st_size) + " bytes; a configuration file is at most 16 MiB");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  f.pread_all(text.data(), text.size(), 0);
  return text;
}

std::vector<VmInfo> finish(std::vector<VmInfo> vms, const fs::path& root) {
  std::map<std::string, int> uses;
  for (const auto& vm : vms) uses[vm.vm_id]++;
  for (auto& vm : vms)
    if (uses[vm.vm_id] > 1) vm.vm_id = shown(root, vm.path);
  std::sort(vms.begin(), vms.end(),
            [](const VmInfo& a, const VmInfo& b) { return a.vm_id != b.vm_id ? a.vm_id < b.vm_id : a.path < b.path; });
  return vms;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e + 1 - b);
}

std::optional<uint64_t> parse_count(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

std::string normalize_uuid(const std::string& s) {
  std::string hex;
  for (char c : s) {
    if (std::isxdigit(static_cast<unsigned char>(c)))
      hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    else if (c != ' ' && c != '-' && c != '{' && c != '}')
      return "";
  }
  if (hex.size() != 32) return "";
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" + hex.substr(20);
}

bool is_named(const pugi::xml_node& node, const char* local) {
  const char* name = node.name();
  const char* colon = std::strrchr(name, ':');
  return std::strcmp(colon ? colon + 1 : name, local) == 0;
}

pugi::xml_node child_named(const pugi::xml_node& node, const char* local) {
  for (auto c : node.children())
    if (is_named(c, local)) return c;
  return {};
}

std::string attr_named(const pugi::xml_node& node, const char* local) {
  for (auto a : node.attributes()) {
    const char* name = a.name();
    const char* colon = std::strrchr(name, ':');
    if (std::strcmp(colon ? colon + 1 : name, local) == 0) return a.value();
  }
  return "";
}

std::string load_xml(pugi::xml_document& doc, const std::string& text, const std::string& where) {
  auto parsed = doc.load_buffer(text.data(), text.size());
  if (parsed) return "";
  std::string at = "offset " + std::to_string(parsed.offset);
  if (parsed.offset >= 0 && static_cast<size_t>(parsed.offset) <= text.size())
    at = "line " + std::to_string(1 + std::count(text.begin(), text.begin() + parsed.offset, '\n')) + " (" + at + ")";
  return where + ": not valid XML: " + parsed.description() + " at " + at;
}

}  // namespace ferry::inventory
