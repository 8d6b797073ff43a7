// Running the real `ferry` binary from end-to-end tests.
#pragma once

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ferry::e2e {

struct CliResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out, err;
  nlohmann::json json() const;  // parses `out`; fails the test if it is not JSON
};

// Exit code, stderr and stdout (each cut to its last 4000 bytes), for assertion messages.
std::string describe(const CliResult& r);

// Runs FERRY_BINARY with `args` and extra environment `env` (e.g. FERRY_KEYRING, FERRY_FAULT).
CliResult ferry(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {});

// Starts FERRY_BINARY without waiting; stdout/stderr go to the given descriptors (-1: /dev/null).
// FERRY_FAULT is passed only if `env` sets it. Throws if it cannot start.
int spawn_ferry(const std::vector<std::string>& args, const std::map<std::string, std::string>& env, int out_fd = -1,
                int err_fd = -1);

// Every file under `dir` with its size and content hash, for "the store is unchanged" assertions.
std::map<std::string, std::string> tree_fingerprint(const std::filesystem::path& dir);

}  // namespace ferry::e2e
