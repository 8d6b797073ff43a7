// FERRY_FAULT and FERRY_FAULT_THROW parsing, the kill and the throw.
#include "common/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <chrono>

namespace ferry {

namespace {

struct Fault {
  std::string name;
  long count = 0;
  std::atomic<long> hits{0};
  void parse(const char* env) {
    if (!env) return;
    std::string spec = env;
    auto colon = spec.find(':');
    name = spec.substr(0, colon);
    count = colon == std::string::npos ? 1 : std::atol(spec.c_str() + colon + 1);
  }
  bool fires(const char* point) { return !name.empty() && name == point && hits.fetch_add(1) + 1 == count; }
};

std::once_flag once;
Fault kill_fault, throw_fault, delay_fault;

}  // namespace

void fault_point(const char* point) {
  std::call_once(once, [] {
    kill_fault.parse(std::getenv("FERRY_FAULT"));
    throw_fault.parse(std::getenv("FERRY_FAULT_THROW"));
    delay_fault.parse(std::getenv("FERRY_FAULT_DELAY"));
  });
  if (!delay_fault.name.empty() && delay_fault.name == point) std::this_thread::sleep_for(std::chrono::milliseconds(delay_fault.count));
  if (kill_fault.fires(point)) ::kill(::getpid(), SIGKILL);
  if (throw_fault.fires(point)) throw std::logic_error(std::string("injected fault at ") + point);
}

}  // namespace ferry
