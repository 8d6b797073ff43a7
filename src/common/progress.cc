// Terminal progress bar.
#include "common/progress.h"

#include <cstdio>

#include "common/hex.h"

namespace ferry {

Progress::Progress(std::string label, uint64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), start_(std::chrono::steady_clock::now()) {
  if (enabled_) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        draw(false);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
}

Progress::~Progress() { finish(); }

void Progress::finish() {
  if (!enabled_ || stop_.exchange(true)) return;
  thread_.join();
  draw(true);
  std::fputc('\n', stderr);
}

void Progress::draw(bool final) {
  uint64_t total = total_.load(), done = done_.load();
  if (final) done = total;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? done / secs : 0;
  double frac = total ? static_cast<double>(done) / total : 1.0;
  if (frac > 1) frac = 1;
  const int width = 30;
  int fill = static_cast<int>(frac * width);
  std::string bar(fill, '#');
  bar.append(width - fill, '.');
  char eta[32] = "--:--";
  if (final) {
    std::snprintf(eta, sizeof eta, "%d:%02d", static_cast<int>(secs) / 60, static_cast<int>(secs) % 60);
  } else if (rate > 0 && total > done) {
    int left = static_cast<int>((total - done) / rate);
    std::snprintf(eta, sizeof eta, "%d:%02d", left / 60, left % 60);
  }
  std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s  %s/s  %s %s\x1b[K", label_.c_str(), bar.c_str(),
               static_cast<int>(frac * 100), human_bytes(done).c_str(), human_bytes(total).c_str(),
               human_bytes(static_cast<uint64_t>(rate)).c_str(), final ? "in" : "ETA", eta);
  std::fflush(stderr);
}

}  // namespace ferry
