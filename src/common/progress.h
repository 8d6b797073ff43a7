// Progress of long work: a bar with bytes done, rate and ETA on a terminal, nothing otherwise.
// add() may be called from any thread; drawing happens on a background thread at most 10 times a second.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace ferry {

class Progress {
 public:
  // Draws only if `enabled` (callers pass isatty(stderr) && !json).
  Progress(std::string label, uint64_t total, bool enabled);
  ~Progress();
  void add(uint64_t bytes) { done_.fetch_add(bytes, std::memory_order_relaxed); }
  void set_total(uint64_t total) { total_.store(total); }
  uint64_t done() const { return done_.load(std::memory_order_relaxed); }
  void finish();

 private:
  void draw(bool final);
  std::string label_;
  std::atomic<uint64_t> total_, done_{0};
  bool enabled_;
  std::atomic<bool> stop_{false};
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
};

}  // namespace ferry
