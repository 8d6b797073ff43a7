// Output helpers for the CLI: aligned tables for people, JSON for scripts.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ferry::cli {

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
void print_json(const nlohmann::json& j);
std::string format_time(int64_t unix_seconds);
std::string format_seconds(double s);

}  // namespace ferry::cli
