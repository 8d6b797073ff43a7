// open_source(): picks the reader for a disk and validates its container first.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "common/process.h"
#include "disk/internal.h"

namespace ferry::disk {

std::string DiskInfo::describe() const {
  std::string s = format == "vpc" ? "vhd" : format;
  if (!subformat.empty()) s += " (" + subformat + ")";
  if (!container.empty()) s += " in " + container;
  return s;
}

std::string normalize_format(const std::string& name) {
  std::string f = name;
  std::transform(f.begin(), f.end(), f.begin(), ::tolower);
  if (f == "vhd") return "vpc";
  if (f == "img") return "raw";
  // The last ones are qemu's other image drivers, which a VM manager (or qemu-img at discovery) may report.
  for (const char* known : {"raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "ova", "qcow", "qed", "parallels", "dmg", "cloop", "bochs"})
    if (f == known) return f;
  fail(ErrorKind::kInvalidArgument,
       "unknown disk format '" + name + "' (known: raw, qcow2, vmdk, vhd, vhdx, vdi, ova; also qcow, qed, parallels, dmg, cloop, bochs)");
}

std::string format_from_extension(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  if (ext == ".vmdk") return "vmdk";
  if (ext == ".vhd" || ext == ".vpc") return "vpc";
  if (ext == ".vhdx") return "vhdx";
  if (ext == ".qcow2") return "qcow2";
  if (ext == ".vdi") return "vdi";
  if (ext == ".raw" || ext == ".dd") return "raw";
  if (ext == ".ova") return "ova";
  return "";  // .img and the rest: probe
}

namespace {

// VHD footers carry the disk type (2 fixed, 3 dynamic, 4 differencing) at byte 60, big-endian.
std::string vhd_subformat(const std::string& path) {
  try {
    File f(path, O_RDONLY);
    uint64_t size = f.size();
    char footer[512];
    for (uint64_t at : {size >= 512 ? size - 512 : 0, uint64_t{0}}) {
      f.pread_all(footer, 512, at);
      if (std::string_view(footer, 8) == "conectix") {
        uint32_t type = (uint8_t(footer[60]) << 24) | (uint8_t(footer[61]) << 16) | (uint8_t(footer[62]) << 8) | uint8_t(footer[63]);
        return type == 2 ? "fixed" : type == 3 ? "dynamic" : type == 4 ? "differencing" : "";
      }
    }
  } catch (const Error&) {
  }
  return "";
}

}  // namespace

bool probe_with_qemu(const std::string& filename, const std::string& format, DiskInfo& info) {
  bool single_file = false;
  std::vector<std::string> argv = {"qemu-img", "info", "--output=json"};
  if (!format.empty()) argv.insert(argv.end(), {"-f", format});
  argv.push_back(filename);
  ProcessResult r = run_process(argv);
  if (r.exit_code != 0) {
    std::string msg = tool_message(r.err);
    // qemu quotes the whole json: filename; the user knows the file by its own name.
    auto pos = msg.find("'json:{");
    auto end = msg.rfind("}'");
    if (pos != std::string::npos && end != std::string::npos && end > pos)
      msg.replace(pos, end + 2 - pos, "'" + info.member + "'");
    fail(ErrorKind::kCorrupt, "disk '" + info.path + "': " + (msg.empty() ? "qemu-img cannot read it" : msg));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.out);
    info.format = j.at("format");
    info.virtual_size = j.at("virtual-size");
    if (j.contains("format-specific") && info.format == "vmdk") info.subformat = j["format-specific"]["data"].value("create-type", "");
    bool data_file = j.contains("format-specific") && j["format-specific"].contains("data") && j["format-specific"]["data"].contains("data-file");
    single_file = (info.format == "qcow2" && !data_file) || (info.format == "vmdk" && info.subformat == "monolithicSparse") ||
                  info.format == "vpc" || info.format == "vhdx" || info.format == "vdi";
    if (j.contains("backing-filename"))
      fail(ErrorKind::kUnsupported, "disk '" + info.path + "' has a backing file ('" + j["backing-filename"].get<std::string>() +
                                        "'); replicate the chain's top image after flattening it with 'qemu-img convert'");
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kExternal, "disk '" + info.path + "': cannot parse qemu-img info output: " + e.what());
  }
  if (info.format == "vpc" && info.container.empty()) info.subformat = vhd_subformat(info.path);
  // Metadata consistency check where qemu has one (catches tables pointing past the end of file).
  if (info.format == "qcow2" || info.format == "vmdk" || info.format == "vhdx" || info.format == "vdi") {
    std::vector<std::string> check = {"qemu-img", "check", "--output=json"};
    if (!format.empty()) check.insert(check.end(), {"-f", format});
    check.push_back(filename);
    ProcessResult c = run_process(check);
    // 0 clean, 3 leaked clusters only (harmless for reading), 63 check not supported.
    if (c.exit_code != 0 && c.exit_code != 3 && c.exit_code != 63) {
      // The first line names the first problem; later ones are usually consequences.
      std::string first = c.err.substr(0, c.err.find('\n'));
      if (first.rfind("qemu-img: ", 0) == 0) first = first.substr(10);
      std::string why = "damaged " + info.describe() + " metadata";
      try {
        auto cj = nlohmann::json::parse(c.out);
        why += " (" + std::to_string(cj.value("corruptions", 0)) + " corruptions found by qemu-img check)";
      } catch (...) {
      }
      if (!first.empty()) why += ": " + first;
      fail(ErrorKind::kCorrupt, "disk '" + info.path + "': " + why);
    }
  }
  return single_file;
}

std::unique_ptr<Source> open_source(const std::string& spec, const OpenOptions& options) {
  DiskInfo info;
  info.path = spec;
  std::string path = spec, member;
  auto hash = spec.rfind('#');
  if (hash != std::string::npos && spec.size() > 4) {
    std::string head = spec.substr(0, hash);
    if (format_from_extension(head) == "ova") {
      path = head;
      member = spec.substr(hash + 1);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(ErrorKind::kNotFound, "disk '" + path + "': no such file");
  std::string format = options.format.empty() ? "" : normalize_format(options.format);
  if (format.empty()) format = S_ISBLK(st.st_mode) ? "raw" : format_from_extension(path);

  // "x.ova#member" is always a disk inside an OVA; a format given with it is the member's, which the OVF declares.
  if (format == "ova" || !member.empty()) {
    auto disks = read_ova(path);
    const OvaDisk* chosen = &disks.front();
    if (member.empty() && disks.size() > 1) {
      // Taking the first disk silently would lose the others: make the caller name each one.
      std::string names;
      for (auto& d : disks) names += (names.empty() ? "" : ", ") + path + "#" + d.member.name;
      fail(ErrorKind::kInvalidArgument, "OVA '" + path + "' holds " + std::to_string(disks.size()) + " disks; replicate each one: " + names);
    }
    if (!member.empty()) {
      auto it = std::find_if(disks.begin(), disks.end(), [&](const OvaDisk& d) { return d.member.name == member; });
      if (it == disks.end()) {
        std::string names;
        for (auto& d : disks) names += (names.empty() ? "" : ", ") + d.member.name;
        fail(ErrorKind::kNotFound, "disk '" + spec + "': the OVA has no disk '" + member + "' (it holds " + names + ")");
      }
      chosen = &*it;
    }
    info.container = "ova";
    info.member = chosen->member.name;
    std::string filename = json_filename_for_member(std::filesystem::absolute(path), chosen->format, chosen->member.offset, chosen->member.size);
    probe_with_qemu(filename, "", info);
    return open_nbd_source(filename, "", info);
  }
  bool single_file = false;
  if (format.empty()) single_file = probe_with_qemu(path, "", info);
  else if (format != "raw") single_file = probe_with_qemu(path, format, info);
  else info.format = "raw";
  if (info.format == "raw") return open_raw_source(path, info);
  auto nbd = open_nbd_source(path, info.format, info);
  if (single_file && !std::getenv("FERRY_NBD_ONLY")) return open_mapped_source(path, info.format, std::move(nbd));
  return nbd;
}

TargetFormat parse_target_format(const std::string& name) {
  if (name == "raw") return TargetFormat::kRaw;
  if (name == "qcow2") return TargetFormat::kQcow2;
  if (name == "vmdk") return TargetFormat::kVmdk;
  if (name == "vhd" || name == "vpc") return TargetFormat::kVhd;
  if (name == "vhd-fixed") return TargetFormat::kVhdFixed;
  if (name == "vhdx") return TargetFormat::kVhdx;
  if (name == "vdi") return TargetFormat::kVdi;
  fail(ErrorKind::kInvalidArgument, "unknown export format '" + name + "' (use raw, qcow2, vmdk, vhd, vhd-fixed, vhdx or vdi)");
}

std::string to_string(TargetFormat f) {
  switch (f) {
    case TargetFormat::kRaw: return "raw";
    case TargetFormat::kQcow2: return "qcow2";
    case TargetFormat::kVmdk: return "vmdk";
    case TargetFormat::kVhd: return "vhd";
    case TargetFormat::kVhdFixed: return "vhd-fixed";
    case TargetFormat::kVhdx: return "vhdx";
    case TargetFormat::kVdi: return "vdi";
  }
  return "raw";
}

std::string qemu_format(TargetFormat f) {
  switch (f) {
    case TargetFormat::kVhd:
    case TargetFormat::kVhdFixed: return "vpc";
    default: return to_string(f);
  }
}

}  // namespace ferry::disk
