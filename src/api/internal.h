// Inside api/: the JSON operation table shared by the HTTP plumbing (server.cc) and the handlers (sms.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "service/service.h"

namespace ferry::api {

using nlohmann::json;

// An operation: JSON input -> JSON output. Throws service::OperationError (or ferry::Error) on failure.
using Operation = std::function<json(service::Service&, const json& input)>;

// "AWSServerMigrationService_V2016_10_24.GetServers" -> handler, and the FerryService_V1.* operations.
const std::map<std::string, Operation>& operations();

// Request bodies and their fields, read one way for the SMS operations and the connector endpoints (sms.cc). Each
// throws service::OperationError naming the field and the cause.

// The request body as JSON ({} when empty). Invalid UTF-8 anywhere (a string value, a key, between tokens) is a
// SerializationException naming the byte, its offset and where it falls ("the value of 'servers[0].vmName'", "a key
// in 'servers[0]'"), and never reaches the catalog; so is any other malformed JSON (a syntax error, a number
// beyond a double such as 1e400).
json parse_request(std::string_view body);

// in[key], or nullptr when `in` is not an object, lacks the key, or holds null there.
const json* field(const json& in, const char* key);
// What a value is, for messages: "a string", "a list", "the number 12.5", ...
std::string kind_of(const json& v);
// A value as a message shows it: its JSON text (invalid UTF-8 replaced), cut at 100 bytes.
std::string shown(const json& v);
// A string field; InvalidParameterException when it holds anything else.
std::optional<std::string> opt_string(const json& in, const char* key);
// An integer field in [lo, hi]. JSON integers arrive as nlohmann's signed or unsigned 64-bit values: the range is
// checked on that value, before anything narrows it. A number with a fraction or an exponent (12.5, 1e3), one beyond
// 64 bits (which the parser keeps as a double) or another type is an InvalidParameterException, never rounded.
std::optional<int64_t> opt_int(const json& in, const char* key, int64_t lo, int64_t hi);

// JSON shapes shared with the connector endpoints.
json connector_json(const catalog::Connector& c, bool healthy);
catalog::Connector connector_info_from(const json& j);
json server_json(const catalog::Server& s);
catalog::Server server_from_report(const json& j);

}  // namespace ferry::api
