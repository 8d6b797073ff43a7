// store::Backend — where a repository's objects live. Objects are immutable once written:
// a name always denotes the same bytes, so backends need no cache invalidation and readers no locks.
// Implementations: local/ (a directory); an S3 backend can follow behind the same interface.
// All methods are safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::store {

enum class ObjectType { kConfig, kKey, kPack, kIndex, kSnapshot };
const char* to_string(ObjectType type);

// A large object being written piece by piece (a pack). Nothing is visible under any name until
// commit(); destroying an uncommitted writer discards what was written.
class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  virtual void append(std::string_view data) = 0;
  virtual uint64_t size() const = 0;
  // Makes the object durable and visible as `name`.
  virtual void commit(const std::string& name) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // A human-readable location, used in messages ("/srv/ferry/store").
  virtual std::string location() const = 0;
  // Writes a small object atomically and durably.
  virtual void put(ObjectType type, const std::string& name, std::string_view data) = 0;
  virtual std::unique_ptr<ObjectWriter> create(ObjectType type) = 0;
  // Throws kNotFound if absent.
  virtual std::string get(ObjectType type, const std::string& name) = 0;
  // Reads [offset, offset+length) into `out`; throws kCorrupt if the object is shorter.
  virtual void read_range(ObjectType type, const std::string& name, uint64_t offset, size_t length, char* out) = 0;
  std::string get_range(ObjectType type, const std::string& name, uint64_t offset, size_t length) {
    std::string s(length, '\0');
    read_range(type, name, offset, length, s.data());
    return s;
  }
  virtual uint64_t size(ObjectType type, const std::string& name) = 0;
  virtual bool exists(ObjectType type, const std::string& name) = 0;
  virtual std::vector<std::string> list(ObjectType type) = 0;
  virtual void remove(ObjectType type, const std::string& name) = 0;

  // Repository-wide locks. Writers that add objects hold kWrite; prune also holds kExclusive,
  // which readers hold shared so that nothing they read disappears under them.
  enum class LockKind { kRead, kWrite, kExclusive };
  class Lock {
   public:
    virtual ~Lock() = default;
  };
  virtual std::unique_ptr<Lock> lock(LockKind kind, const std::string& purpose) = 0;
  // Like lock(), but returns nullptr at once if another process holds a conflicting lock.
  virtual std::unique_ptr<Lock> try_lock(LockKind kind, const std::string& purpose) { return lock(kind, purpose); }
};

// A repository in a local directory. Creates the directory layout if `create` is set. With `direct_io`, packs are
// written with O_DIRECT where the file system takes it (the server's stores); without, through the page cache (the
// CLI's: an export right after a replication then reads them from memory).
std::unique_ptr<Backend> open_local_backend(const std::filesystem::path& dir, bool create, bool direct_io = false);

}  // namespace ferry::store
