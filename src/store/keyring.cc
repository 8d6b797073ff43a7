// Master keys in a keyring directory: "<key id>.key" holds 64 hex digits, mode 0600.
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>

#include "common/error.h"
#include "common/fs.h"
#include "common/hex.h"
#include "store/crypto.h"
#include "store/repository.h"

namespace ferry::store {

std::filesystem::path Keyring::default_dir() {
  if (const char* env = std::getenv("FERRY_KEYRING"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : "/root") / ".config" / "ferry" / "keyring";
}

void Keyring::validate_key_id(const std::string& key_id) {
  bool ok = !key_id.empty() && key_id.size() <= 64;
  for (char c : key_id)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) ok = false;
  if (!ok || key_id[0] == '.')
    fail(ErrorKind::kInvalidArgument, "invalid key id '" + key_id + "': use 1-64 letters, digits, '-', '_' or '.'");
}

bool Keyring::has(const std::string& key_id) const {
  validate_key_id(key_id);
  return fs::exists(dir_ / (key_id + ".key"));
}

std::array<uint8_t, 32> Keyring::get(const std::string& key_id) const {
  validate_key_id(key_id);
  fs::path p = dir_ / (key_id + ".key");
  if (!fs::exists(p)) fail(ErrorKind::kNotFound, "master key '" + key_id + "' is not in keyring '" + dir_.string() + "'");
  std::string text = read_file(p);
  while (!text.empty() && isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::string raw;
  try {
    raw = from_hex(text);
  } catch (const Error&) {
    raw.clear();
  }
  if (raw.size() != 32) fail(ErrorKind::kCorrupt, "master key file '" + p.string() + "' does not hold 64 hex digits");
  std::array<uint8_t, 32> key;
  std::memcpy(key.data(), raw.data(), 32);
  return key;
}

void Keyring::create(const std::string& key_id) const {
  validate_key_id(key_id);
  fs::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
  fs::path p = dir_ / (key_id + ".key");
  if (fs::exists(p)) fail(ErrorKind::kInvalidArgument, "master key '" + key_id + "' already exists in '" + dir_.string() + "'");
  uint8_t key[32];
  random_bytes(key, sizeof key);
  std::string text = to_hex(key, sizeof key) + "\n";
  fs::path tmp = temp_name_for(p);
  File f(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
  f.write_all(text.data(), text.size());
  f.sync();
  f.close();
  rename_durable(tmp, p);
}

std::vector<std::string> Keyring::list() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir_, ec))
    if (e.path().extension() == ".key") ids.push_back(e.path().stem().string());
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace ferry::store
