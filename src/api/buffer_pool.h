// Inside api/: page-aligned buffers for large request bodies (a connector's packs), reused across uploads so that an
// upload does not fault in fresh memory each time, and bounded so that they cannot pin the server's memory.
//
// Promises: the bytes leased and pooled together never exceed `max_bytes`; a buffer pooled for longer than `max_idle`
// is unmapped, its memory back to the operating system at once (buffers are mmap'ed, not taken from malloc, whose
// freed memory can stay resident); a lease is its size rounded up to whole MiB, never more (a larger pooled buffer
// is shrunk to it, giving back the rest). Thread-safe; a background thread frees idle buffers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace ferry::api {

class BufferPool {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    // 1 GiB: the largest pack a store allows (pack_size up to 1 GiB), or 64 uploads of the default 16 MiB at once.
    size_t max_bytes = size_t{1} << 30;
    std::chrono::milliseconds max_idle{5000};
    std::function<Clock::time_point()> now = Clock::now;  // tests give their own clock
    bool reaper = true;  // a thread calls trim() every second; tests call it themselves
  };

  // A leased buffer, returned to the pool when destroyed. Move-only.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    char* data() const { return data_; }
    size_t capacity() const { return capacity_; }

   private:
    friend class BufferPool;
    Lease(BufferPool* pool, char* data, size_t capacity) : pool_(pool), data_(data), capacity_(capacity) {}
    BufferPool* pool_;
    char* data_;
    size_t capacity_;
  };

  explicit BufferPool(Options options);
  BufferPool() : BufferPool(Options{}) {}
  // REQUIRES: no lease outstanding.
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of at least `size` bytes (page-aligned), or nullopt if leasing it would take the leased bytes over
  // max_bytes (pooled buffers are freed first to make room). Throws std::bad_alloc if the system has no memory.
  std::optional<Lease> try_take(size_t size);
  // Frees the buffers pooled for longer than max_idle.
  void trim();

  size_t leased_bytes() const;
  size_t pooled_bytes() const;

 private:
  struct Pooled {
    char* data;
    size_t capacity;
    Clock::time_point since;
  };
  void give(char* data, size_t capacity);
  static char* map(size_t capacity);
  static void unmap(char* data, size_t capacity);

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pooled> pooled_;  // oldest first
  size_t pooled_bytes_ = 0, leased_bytes_ = 0;
  bool stopping_ = false;
  std::thread reaper_;
};

}  // namespace ferry::api
