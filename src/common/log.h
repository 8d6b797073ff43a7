// Logging: spdlog everywhere, with one process-wide choice of format — human text, or JSON lines
// ({"time":..., "level":..., "msg":...}) for log shippers. Messages are built by the caller; this only frames them.
#pragma once

#include <spdlog/spdlog.h>

namespace ferry {

// Configures the default spdlog logger to write to stderr. level: "debug", "info", "warn", "error".
void init_logging(bool json_lines, const std::string& level = "info");

}  // namespace ferry
