// OVA packages: a tar holding an OVF descriptor and the disks it names. Disks are read in place
// (qemu's raw driver with offset and size), never extracted.
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include "common/error.h"
#include "common/fs.h"
#include "disk/internal.h"

namespace ferry::disk {

namespace {

bool all_zero(const char* p, size_t n) {
  return std::all_of(p, p + n, [](char c) { return c == 0; });
}

// Tar numeric fields: octal text, or GNU base-256 when the high bit of the first byte is set.
uint64_t tar_number(const char* field, size_t len, bool* ok) {
  *ok = true;
  if (static_cast<unsigned char>(field[0]) & 0x80) {
    uint64_t v = static_cast<unsigned char>(field[0]) & 0x7f;
    for (size_t i = 1; i < len; i++) v = v << 8 | static_cast<unsigned char>(field[i]);
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < len && field[i] == ' ') i++;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; i++) v = v * 8 + (field[i] - '0');
  if (i < len && field[i] != 0 && field[i] != ' ') *ok = false;
  return v;
}

std::string lower_ext(const std::string& name) {
  auto dot = name.rfind('.');
  std::string ext = dot == std::string::npos ? "" : name.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  return ext;
}

// OVF attributes carry a namespace prefix that varies ("ovf:href", "href"); match the local name.
const char* attr(const pugi::xml_node& n, const char* local) {
  for (auto a : n.attributes()) {
    const char* name = a.name();
    const char* colon = std::strrchr(name, ':');
    if (std::strcmp(colon ? colon + 1 : name, local) == 0) return a.value();
  }
  return "";
}

bool local_name_is(const pugi::xml_node& n, const char* local) {
  const char* name = n.name();
  const char* colon = std::strrchr(name, ':');
  return std::strcmp(colon ? colon + 1 : name, local) == 0;
}

}  // namespace

namespace {
// Bounds on what an OVA makes the reader allocate: a path name, and an OVF descriptor (text of a few KiB in practice;
// the inventory's own reading of descriptors stops at 16 MiB too).
constexpr uint64_t kMaxLongName = 64 * 1024;
constexpr uint64_t kMaxOvfDescriptor = 16 * 1024 * 1024;
}  // namespace

std::vector<TarMember> read_tar(const std::filesystem::path& tar) {
  File f(tar, O_RDONLY);
  uint64_t size = f.size();
  std::vector<TarMember> members;
  uint64_t pos = 0;
  std::string long_name;
  char h[512];
  while (pos + 512 <= size) {
    f.pread_all(h, 512, pos);
    if (all_zero(h, 512)) break;
    // Header checksum: sum of all bytes with the checksum field taken as spaces.
    bool ok;
    uint64_t stored = tar_number(h + 148, 8, &ok);
    uint64_t sum = 0;
    for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
    if (!ok || stored != sum)
      fail(ErrorKind::kCorrupt, "OVA '" + tar.string() + "': not a tar archive (bad header checksum at offset " + std::to_string(pos) + ")");
    uint64_t len = tar_number(h + 124, 12, &ok);
    if (!ok) fail(ErrorKind::kCorrupt, "OVA '" + tar.string() + "': bad member size at offset " + std::to_string(pos));
    char type = h[156];
    std::string name(h, strnlen(h, 100));
    if (std::memcmp(h + 257, "ustar", 5) == 0 && h[345]) name = std::string(h + 345, strnlen(h + 345, 155)) + "/" + name;
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    uint64_t data = pos + 512;
    if (data + len > size)
      fail(ErrorKind::kCorrupt, "OVA '" + tar.string() + "': member '" + name + "' is truncated (" + std::to_string(len) + " bytes announced, " +
                                    std::to_string(size - data) + " present)");
    if (type == 'L') {  // GNU long name for the next member
      // A name, not a file: a longer one is a hostile or broken archive, refused before any memory is taken for it.
      if (len > kMaxLongName)
        fail(ErrorKind::kCorrupt, "OVA '" + tar.string() + "': a GNU long name of " + std::to_string(len) + " bytes at offset " +
                                      std::to_string(pos) + " (at most " + std::to_string(kMaxLongName) + ")");
      long_name.resize(len);
      f.pread_all(long_name.data(), len, data);
      long_name.resize(strnlen(long_name.c_str(), len));
    } else if (type == '0' || type == 0) {
      if (name.rfind("./", 0) == 0) name = name.substr(2);
      members.push_back({name, data, len});
    }
    pos = data + (len + 511) / 512 * 512;
  }
  if (members.empty()) fail(ErrorKind::kCorrupt, "OVA '" + tar.string() + "': not a tar archive, or an empty one");
  return members;
}

std::vector<OvaDisk> read_ova(const std::filesystem::path& ova) {
  std::string where = "OVA '" + ova.string() + "'";
  auto members = read_tar(ova);
  auto ovf = std::find_if(members.begin(), members.end(), [](const TarMember& m) { return lower_ext(m.name) == ".ovf"; });
  if (ovf == members.end()) fail(ErrorKind::kCorrupt, where + ": no .ovf descriptor in the archive");
  if (ovf->size > kMaxOvfDescriptor)
    fail(ErrorKind::kCorrupt, where + ": descriptor '" + ovf->name + "' is " + std::to_string(ovf->size) + " bytes (at most " +
                                  std::to_string(kMaxOvfDescriptor) + " are read)");
  std::string xml(ovf->size, '\0');
  File(ova, O_RDONLY).pread_all(xml.data(), xml.size(), ovf->offset);
  pugi::xml_document doc;
  auto parsed = doc.load_buffer(xml.data(), xml.size());
  if (!parsed) fail(ErrorKind::kCorrupt, where + ": descriptor '" + ovf->name + "' is not valid XML: " + parsed.description());
  pugi::xml_node envelope = doc.document_element();
  if (!local_name_is(envelope, "Envelope")) fail(ErrorKind::kCorrupt, where + ": descriptor '" + ovf->name + "' is not an OVF envelope");

  struct FileRef {
    std::string href, compression;
  };
  std::map<std::string, FileRef> files;  // ovf:id -> file
  for (auto refs : envelope.children())
    if (local_name_is(refs, "References"))
      for (auto file : refs.children())
        if (local_name_is(file, "File")) files[attr(file, "id")] = {attr(file, "href"), attr(file, "compression")};

  std::vector<std::string> hrefs;
  for (auto section : envelope.children())
    if (local_name_is(section, "DiskSection"))
      for (auto d : section.children())
        if (local_name_is(d, "Disk")) {
          std::string ref = attr(d, "fileRef");
          auto it = files.find(ref);
          if (it == files.end()) fail(ErrorKind::kCorrupt, where + ": disk '" + attr(d, "diskId") + "' refers to unknown file id '" + ref + "'");
          if (!it->second.compression.empty())
            fail(ErrorKind::kUnsupported, where + ": disk file '" + it->second.href + "' is " + it->second.compression + "-compressed; unpack it first");
          hrefs.push_back(it->second.href);
        }
  if (hrefs.empty()) fail(ErrorKind::kCorrupt, where + ": descriptor '" + ovf->name + "' lists no disk");

  std::vector<OvaDisk> disks;
  for (auto& href : hrefs) {
    auto m = std::find_if(members.begin(), members.end(), [&](const TarMember& t) { return t.name == href; });
    if (m == members.end()) fail(ErrorKind::kNotFound, where + ": disk '" + href + "' named by the descriptor is not in the archive");
    std::string fmt = format_from_extension(m->name);
    if (fmt.empty() || fmt == "ova") fmt = "vmdk";
    disks.push_back({*m, fmt});
  }
  return disks;
}

std::vector<std::string> ova_disks(const std::filesystem::path& ova) {
  std::vector<std::string> names;
  for (auto& d : read_ova(ova)) names.push_back(d.member.name);
  return names;
}

std::string json_filename_for_member(const std::filesystem::path& file, const std::string& format, uint64_t offset, uint64_t size) {
  nlohmann::json j = {{"driver", format},
                      {"file", {{"driver", "raw"}, {"offset", offset}, {"size", size}, {"file", {{"driver", "file"}, {"filename", file.string()}}}}}};
  return "json:" + j.dump();
}

}  // namespace ferry::disk
