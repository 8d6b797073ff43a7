// FERRY_FAULT parsing and the kill.
#include "common/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace ferry {

namespace {
std::once_flag once;
std::string fault_name;
long fault_count = 0;
std::atomic<long> hits{0};
}  // namespace

void fault_point(const char* point) {
  std::call_once(once, [] {
    const char* env = std::getenv("FERRY_FAULT");
    if (!env) return;
    std::string spec = env;
    auto colon = spec.find(':');
    fault_name = spec.substr(0, colon);
    fault_count = colon == std::string::npos ? 1 : std::atol(spec.c_str() + colon + 1);
  });
  if (fault_name.empty() || fault_name != point) return;
  if (hits.fetch_add(1) + 1 == fault_count) ::kill(::getpid(), SIGKILL);
}

}  // namespace ferry
