// The pack buffer pool: mmap'ed buffers in whole MiB, reused smallest-fit, shrunk to the lease, unmapped when idle
// or when a lease needs their room.
#include "api/buffer_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <iterator>
#include <new>

namespace ferry::api {

namespace {
constexpr size_t kRound = size_t{1} << 20;
}

BufferPool::Lease::Lease(Lease&& other) noexcept : pool_(other.pool_), data_(other.data_), capacity_(other.capacity_) { other.pool_ = nullptr; }

BufferPool::Lease& BufferPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (pool_) pool_->give(data_, capacity_);
    pool_ = other.pool_;
    data_ = other.data_;
    capacity_ = other.capacity_;
    other.pool_ = nullptr;
  }
  return *this;
}

BufferPool::Lease::~Lease() {
  if (pool_) pool_->give(data_, capacity_);
}

BufferPool::BufferPool(Options options) : options_(std::move(options)) {
  if (options_.reaper)
    reaper_ = std::thread([this] {
      std::unique_lock lock(mu_);
      while (!stopping_) {
        cv_.wait_for(lock, std::chrono::seconds(1));
        lock.unlock();
        trim();
        lock.lock();
      }
    });
}

BufferPool::~BufferPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  for (auto& p : pooled_) unmap(p.data, p.capacity);
}

char* BufferPool::map(size_t capacity) {
  void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return static_cast<char*>(p);
}

void BufferPool::unmap(char* data, size_t capacity) { ::munmap(data, capacity); }

std::optional<BufferPool::Lease> BufferPool::try_take(size_t size) {
  size_t capacity = std::max<size_t>((size + kRound - 1) / kRound, 1) * kRound;
  std::vector<Pooled> evicted;
  std::optional<Pooled> reused;
  {
    std::lock_guard lock(mu_);
    if (size > options_.max_bytes || capacity > options_.max_bytes - leased_bytes_) return std::nullopt;
    auto fit = pooled_.end();
    for (auto it = pooled_.begin(); it != pooled_.end(); ++it)
      if (it->capacity >= capacity && (fit == pooled_.end() || it->capacity < fit->capacity)) fit = it;
    if (fit != pooled_.end()) {
      reused = *fit;
      pooled_bytes_ -= fit->capacity;
      pooled_.erase(fit);
    } else {
      while (pooled_bytes_ + leased_bytes_ + capacity > options_.max_bytes) {  // oldest first
        evicted.push_back(pooled_.front());
        pooled_bytes_ -= pooled_.front().capacity;
        pooled_.erase(pooled_.begin());
      }
    }
    leased_bytes_ += capacity;
  }
  for (auto& e : evicted) unmap(e.data, e.capacity);
  if (reused) {
    if (reused->capacity > capacity) unmap(reused->data + capacity, reused->capacity - capacity);  // the tail goes back
    return Lease(this, reused->data, capacity);
  }
  try {
    return Lease(this, map(capacity), capacity);
  } catch (...) {
    std::lock_guard lock(mu_);
    leased_bytes_ -= capacity;
    throw;
  }
}

void BufferPool::give(char* data, size_t capacity) {
  std::lock_guard lock(mu_);
  leased_bytes_ -= capacity;
  if (stopping_) {
    unmap(data, capacity);
    return;
  }
  pooled_.push_back({data, capacity, options_.now()});
  pooled_bytes_ += capacity;
}

void BufferPool::trim() {
  std::vector<Pooled> expired;
  {
    std::lock_guard lock(mu_);
    auto now = options_.now();
    auto idle = [&](const Pooled& p) { return now - p.since > options_.max_idle; };
    std::copy_if(pooled_.begin(), pooled_.end(), std::back_inserter(expired), idle);
    std::erase_if(pooled_, idle);
    for (auto& e : expired) pooled_bytes_ -= e.capacity;
  }
  for (auto& e : expired) unmap(e.data, e.capacity);
}

size_t BufferPool::leased_bytes() const {
  std::lock_guard lock(mu_);
  return leased_bytes_;
}

size_t BufferPool::pooled_bytes() const {
  std::lock_guard lock(mu_);
  return pooled_bytes_;
}

}  // namespace ferry::api
