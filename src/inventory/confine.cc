// Confinement: the connector reads only what its VM managers reach. Path resolution as the kernel does it, the
// reach of one manager, the files an image makes qemu open (its VMDK descriptor's extents, read here before qemu
// opens them, and what qemu-img reports), and check_disk(), the same rules at time of use.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "disk/internal.h"
#include "inventory/internal.h"

namespace ferry::inventory {

namespace {

// Pushes the components of `p` onto `stack`, so that the first component is popped first.
void push_components(std::vector<std::string>& stack, const fs::path& p) {
  std::vector<std::string> parts;
  for (const auto& c : p.relative_path()) parts.push_back(c.string());
  stack.insert(stack.end(), parts.rbegin(), parts.rend());
}

// Whether a component other than "" or "." is left to walk.
bool more_to_walk(const std::vector<std::string>& stack) {
  return std::any_of(stack.begin(), stack.end(), [](const std::string& c) { return !c.empty() && c != "."; });
}

bool trusted_owner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

// A link owned by root (or this user) in a directory owned by them that nobody else may write.
bool placed_by_admin(const fs::path& dir, const struct stat& link) {
  struct stat d;
  if (::stat(dir.c_str(), &d) != 0) return false;
  return trusted_owner(link.st_uid) && trusted_owner(d.st_uid) && (d.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

bool below(const fs::path& resolved, const fs::path& tree) {
  fs::path rel = resolved.lexically_relative(tree);
  return !rel.empty() && *rel.begin() != "..";
}

// qemu's path_has_protocol(): with a ':' before any '/', qemu reads "nbd:...", "json:{...}" through that driver.
bool has_protocol(const std::string& name) {
  size_t stop = name.find_first_of(":/");
  return stop != std::string::npos && name[stop] == ':';
}

// Every file named in qemu's JSON pseudo-filename `text` ("json:{...}" without the prefix); throws kUnauthorized
// if it uses a driver other than file and raw (a network protocol, another image format). qemu also takes flattened
// keys ("file.driver"), and may keep either of two equal keys: every key and value is looked at as parsed.
std::vector<std::string> json_files(const std::string& text, const std::string& named) {
  std::vector<std::string> files;
  std::string key;  // the last key seen, its last dotted component
  auto parsed = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& j) {
    if (depth > 16) fail(ErrorKind::kUnauthorized, named + " is nested too deeply to check");
    if (event == nlohmann::json::parse_event_t::key) {
      std::string k = j.get<std::string>();
      key = k.substr(k.rfind('.') + 1);
    } else if (event == nlohmann::json::parse_event_t::value) {
      if (key == "driver" && (!j.is_string() || (j != "file" && j != "raw")))
        fail(ErrorKind::kUnauthorized, named + " is read through qemu's " + j.dump() + " driver; only plain files are read");
      if (key == "filename") {
        if (!j.is_string()) fail(ErrorKind::kUnauthorized, named + " has a filename that is not a string");
        files.push_back(j.get<std::string>());
      }
    }
    return true;
  });
  if (!parsed.is_object()) fail(ErrorKind::kUnauthorized, named + " is not a JSON object");
  return files;
}

}  // namespace

Resolved resolve(const fs::path& path) {
  Resolved r;
  std::vector<std::string> todo;
  push_components(todo, path);
  if (path.is_relative()) {
    std::error_code ec;
    fs::path cwd = fs::current_path(ec);
    if (ec) {
      r.error = "relative, and the working directory is unknown (" + ec.message() + ")";
      return r;
    }
    push_components(todo, cwd);
  }
  fs::path at = "/";
  int links = 0;
  while (!todo.empty()) {
    std::string c = std::move(todo.back());
    todo.pop_back();
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      at = at.parent_path();
      continue;
    }
    fs::path next = at / c;
    struct stat st;
    if (::lstat(next.c_str(), &st) != 0) {
      if (errno == ENOENT && !more_to_walk(todo)) {
        at = next;  // where it would be
        continue;
      }
      r.error = std::string(std::strerror(errno)) + " at " + next.string();
      return r;
    }
    if (S_ISLNK(st.st_mode)) {
      if (++links > 40) {
        r.error = "more than 40 symbolic links (a loop?) at " + next.string();
        return r;
      }
      std::error_code ec;
      fs::path target = fs::read_symlink(next, ec);
      if (ec) {
        r.error = "cannot read the symbolic link " + next.string() + ": " + ec.message();
        return r;
      }
      if (r.foreign_link.empty() && !placed_by_admin(at, st)) r.foreign_link = next;
      if (target.is_absolute()) at = "/";
      push_components(todo, target);
      continue;
    }
    if (!S_ISDIR(st.st_mode) && more_to_walk(todo)) {
      r.error = "not a directory: " + next.string();
      return r;
    }
    at = next;
  }
  r.path = at;
  return r;
}

Confinement::Confinement(const ManagerConfig& config) : manager_(config.type + " manager '" + config.name + "'") {
  if (config.type == "local") {
    for (const auto& d : config.devices) {
      fs::path listed = fs::absolute(d).lexically_normal();
      listed_.push_back(listed);
      Resolved r = resolve(listed);
      if (!r.error.empty()) continue;  // nothing to read there; discovery says why
      if (r.foreign_link.empty())
        devices_.push_back(r.path);
      else
        foreign_.emplace_back(listed, r.foreign_link);
    }
  } else {
    root_ = require_root(config);
    Resolved r = resolve(root_);
    if (!r.error.empty()) fail(ErrorKind::kInvalidArgument, manager_ + ": cannot resolve its directory '" + config.path + "': " + r.error);
    trees_.push_back(r.path);
  }
  for (const auto& a : config.allow)
    if (Resolved r = resolve(fs::absolute(a)); r.error.empty()) trees_.push_back(r.path);  // else it holds nothing
}

bool Confinement::contains(const fs::path& resolved) const {
  return std::find(devices_.begin(), devices_.end(), resolved) != devices_.end() ||
         std::any_of(trees_.begin(), trees_.end(), [&](const fs::path& t) { return below(resolved, t); });
}

std::string Confinement::describe() const {
  return root_.empty() ? "the devices of " + manager_ : "the root " + root_.string() + " of " + manager_;
}

bool Confinement::claims(const fs::path& path) const {
  fs::path p = path.lexically_normal();
  return path.is_absolute() && ((!root_.empty() && below(p, root_)) || std::find(listed_.begin(), listed_.end(), p) != listed_.end());
}

std::string Confinement::check(const fs::path& path) const {
  Resolved r = resolve(path);
  if (!r.error.empty()) return "cannot be resolved: " + r.error;
  if (contains(r.path)) return "";
  const std::string hint = " (add it to the manager's \"allow\" list if that is intended)";
  for (const auto& [device, link] : foreign_)
    if (device == path.lexically_normal())
      return "resolves to " + r.path.string() + " through the symbolic link " + link.string() +
             ", which someone other than root could have placed (the link or its directory is not root's, or others may "
             "write there); list " + r.path.string() + " itself" + hint;
  return "resolves to " + r.path.string() + ", " + (root_.empty() ? "which is not one of " : "outside ") + describe() + hint;
}

std::optional<VmdkDescriptorAt> vmdk_descriptor_at(std::string_view head, bool forced) {
  if (head.size() < 4 || head.substr(0, 4) == "COWD") return std::nullopt;
  if (head.substr(0, 4) == "KDMV") {
    // After the magic: version and flags (4 bytes each), then capacity, grain size, descriptor offset and
    // descriptor size (8 bytes each, little-endian, in sectors).
    if (head.size() < 44) return std::nullopt;
    auto u64 = [&](size_t at) {
      uint64_t v = 0;
      for (size_t i = 8; i-- > 0;) v = v << 8 | static_cast<unsigned char>(head[at + i]);
      return v;
    };
    uint64_t capacity = u64(12), offset = u64(28), size = u64(36);
    if (offset == 0 || offset > (UINT64_MAX >> 9)) return std::nullopt;
    // With capacity 0, qemu takes the image's extents from this descriptor, read as a descriptor file; otherwise it
    // does not use them, and they are checked all the same.
    uint64_t length = capacity == 0 || size > (kVmdkDescriptorMax >> 9) ? kVmdkDescriptorMax : size << 9;
    return VmdkDescriptorAt{offset << 9, length};
  }
  // Told "vmdk", qemu parses anything else as a descriptor file; probing, it takes only text for one.
  bool text = std::all_of(head.begin(), head.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x20 || c == '\t' || c == '\n' || c == '\r';
  });
  if (!forced && !text) return std::nullopt;
  return VmdkDescriptorAt{0, kVmdkDescriptorMax};
}

VmdkDescriptor parse_vmdk_descriptor(std::string_view text) {
  text = text.substr(0, text.find('\0'));  // qemu reads it as a C string
  VmdkDescriptor d;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  // qemu: sscanf(line, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, ...) from every line's start. Its
  // conversions skip white space, new lines included, so one match may run over several lines; this one too.
  // A line that starts inside the white space before the previous match's first conversion matches the same text
  // again (qemu counts that extent twice): it is not read again, so reading stays linear in the text's size.
  std::optional<size_t> first_word;  // where the previous match's first conversion began
  for (size_t line = 0; line < text.size();) {
    size_t i = line;
    bool again = first_word && line <= *first_word;
    if (!again) {
      while (i < text.size() && space(text[i])) i++;
      first_word = i;
    }
    auto skip = [&] {
      while (i < text.size() && space(text[i])) i++;
    };
    auto word = [&] {  // %10s
      skip();
      size_t start = i;
      while (i < text.size() && i - start < 10 && !space(text[i])) i++;
      return i > start;
    };
    auto number = [&] {  // %SCNd64
      skip();
      if (i < text.size() && (text[i] == '+' || text[i] == '-')) i++;
      size_t start = i;
      while (i < text.size() && text[i] >= '0' && text[i] <= '9') i++;
      return i > start;
    };
    if (!again && word() && number() && word()) {
      skip();
      if (i < text.size() && text[i] == '"') {
        size_t start = ++i;
        while (i < text.size() && i - start < 511 && text[i] != '\n' && text[i] != '\r' && text[i] != '"') i++;
        if (i > start) d.extents.emplace_back(text.substr(start, i - start));
      }
    }
    size_t nl = text.find('\n', line);
    line = nl == std::string_view::npos ? text.size() : nl + 1;
  }
  // qemu's vmdk_parent_open(): what follows `parentFileNameHint="`, up to the next quote.
  constexpr std::string_view kParent = "parentFileNameHint=\"";
  if (size_t at = text.find(kParent.substr(0, 18)); at != std::string_view::npos && at + kParent.size() <= text.size()) {
    size_t start = at + kParent.size(), end = text.find('"', start);
    if (end != std::string_view::npos) d.parent = std::string(text.substr(start, end - start));
  }
  return d;
}

std::vector<Reference> vmdk_references(const DiskSpec& spec) {
  File f(spec.file(), O_RDONLY | O_NONBLOCK);
  uint64_t offset = spec.member ? spec.member->offset : 0, size = spec.member ? spec.member->size : 0;
  if (!spec.member) {  // also right for a block device, whose st_size is 0
    off_t end = ::lseek(f.fd(), 0, SEEK_END);
    if (end < 0) fail_errno("'" + spec.file().string() + "': seek to its end");
    size = static_cast<uint64_t>(end);
  }
  char head[2048];  // what qemu probes a format from
  size_t head_len = static_cast<size_t>(std::min<uint64_t>(size, sizeof head));
  f.pread_all(head, head_len, offset);
  auto at = vmdk_descriptor_at(std::string_view(head, head_len), spec.qemu_format == "vmdk");
  if (!at || at->offset >= size) return {};
  std::string text(static_cast<size_t>(std::min(size - at->offset, at->length)), '\0');
  f.pread_all(text.data(), text.size(), offset + at->offset);
  VmdkDescriptor d = parse_vmdk_descriptor(text);
  std::vector<Reference> refs;
  for (auto& e : d.extents) refs.push_back({"extent", std::move(e), true});
  if (!d.parent.empty()) refs.push_back({"parent", std::move(d.parent), true});
  return refs;
}

std::string check_references(const Confinement& conf, const fs::path& image, const std::vector<Reference>& refs) {
  for (const auto& ref : refs) {
    std::string named = ref.what + " '" + ref.name + "'";
    std::vector<std::string> files;
    bool beside_image = ref.beside_image;
    if (ref.name.rfind("json:", 0) == 0) {
      try {
        files = json_files(ref.name.substr(5), named);
      } catch (const nlohmann::json::exception& e) {
        return named + " is not valid JSON: " + e.what();
      } catch (const Error& e) {
        return e.what();
      }
      beside_image = false;  // qemu's file driver opens a relative name from the working directory
    } else if (has_protocol(ref.name)) {
      return named + " names qemu's '" + ref.name.substr(0, ref.name.find(':')) + "' protocol; only plain files are read";
    } else {
      files.push_back(ref.name);
    }
    for (const auto& name : files) {
      fs::path p = name;
      if (p.is_relative() && beside_image) p = image.parent_path() / p;
      if (auto why = conf.check(p); !why.empty()) return named + " " + why;
      struct stat st;
      if (::stat(p.c_str(), &st) == 0)
        if (auto why = not_a_disk(st); !why.empty()) return named + " " + why;
    }
  }
  return "";
}

std::string not_a_disk(const struct stat& st) {
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return "";
  const char* kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISCHR(st.st_mode) ? "a character device" : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISSOCK(st.st_mode)                                      ? "a socket"
                                                                                 : "a special file";
  return std::string("is ") + kind + ", not a disk";
}

void check_disk(const std::vector<ManagerConfig>& managers, const std::string& path, const std::string& format) {
  const std::string where = "disk '" + path + "'";
  if (path.empty() || path[0] != '/') fail(ErrorKind::kInvalidArgument, where + ": not an absolute path");
  // The disk as disk::open_source() reads it: "x.ova#member" is a member of an OVA (whatever the format given),
  // anything else in the format given, else the one its extension names, else probed.
  size_t hash = path.rfind('#');
  bool in_ova = hash != std::string::npos && disk::format_from_extension(path.substr(0, hash)) == "ova";
  const fs::path file = in_ova ? path.substr(0, hash) : path;

  // Nothing is opened before a manager is found that reaches the file.
  std::vector<Confinement> reaching;
  std::string claimed;  // the refusal of a manager the path names
  std::string others;
  for (const auto& m : managers) {
    std::optional<Confinement> conf;
    try {
      conf.emplace(m);
    } catch (const Error&) {
      continue;  // a manager whose root is gone reaches nothing
    }
    if (std::string why = conf->check(file); !why.empty()) {
      if (claimed.empty() && conf->claims(file)) claimed = why;
      others += (others.empty() ? "" : "; ") + conf->describe();
    } else {
      reaching.push_back(std::move(*conf));
    }
  }
  if (reaching.empty()) {
    if (!claimed.empty()) fail(ErrorKind::kUnauthorized, where + ": " + claimed);
    Resolved r = resolve(file);
    std::string what = r.error.empty() ? "resolves to " + r.path.string() : "cannot be resolved (" + r.error + ")";
    fail(ErrorKind::kUnauthorized, where + ": " + what + ", and no VM manager of this connector reaches it (" +
                                       (others.empty() ? "none is configured" : others) + ")");
  }

  DiskSpec spec{"", path, ""};
  try {
    if (in_ova) {
      struct stat st;
      if (::stat(file.c_str(), &st) != 0) fail_errno("'" + file.string() + "'");
      if (auto why = not_a_disk(st); !why.empty()) fail(ErrorKind::kInvalidArgument, "'" + file.string() + "' " + why);
      auto members = disk::read_tar(file);
      std::string name = path.substr(hash + 1);
      auto m = std::find_if(members.begin(), members.end(), [&](const disk::TarMember& t) { return t.name == name; });
      if (m == members.end()) fail(ErrorKind::kInvalidArgument, "the OVA has no member '" + name + "'");
      spec = ova_member_disk("", file, m->name, m->offset, m->size);
    } else {
      spec.qemu_format = format.empty() ? disk::format_from_extension(path) : disk::normalize_format(format);
      if (spec.qemu_format == "ova") fail(ErrorKind::kInvalidArgument, "name the disk inside the OVA ('" + path + "#member')");
    }
  } catch (const Error& e) {
    fail(ErrorKind::kInvalidArgument, where + ": " + e.what());
  }
  // A manager whose rules let it all be read: the disk is one it would list.
  Problem first;
  for (const auto& conf : reaching) {
    DiskInfo disk;
    Problem problem = probe(conf, spec, disk);
    if (problem.text.empty()) return;
    if (first.text.empty()) first = problem;
  }
  fail(first.refused ? ErrorKind::kUnauthorized : ErrorKind::kInvalidArgument, where + ": " + first.text);
}

}  // namespace ferry::inventory
