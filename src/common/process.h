// Running helper programs (qemu-img) with their output captured, never through a shell.
#pragma once

#include <string>
#include <vector>

namespace ferry {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (looked up in PATH) and waits for it. Throws kExternal if it cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv);

// The last non-empty line of a tool's stderr, with the "tool: " prefix removed: the part worth showing a user.
std::string tool_message(const std::string& stderr_text);

}  // namespace ferry
