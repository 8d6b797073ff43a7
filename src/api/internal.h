// Inside api/: the JSON operation table shared by the HTTP plumbing (server.cc) and the handlers (sms.cc).
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "service/service.h"

namespace ferry::api {

using nlohmann::json;

// An operation: JSON input -> JSON output. Throws service::OperationError (or ferry::Error) on failure.
using Operation = std::function<json(service::Service&, const json& input)>;

// "AWSServerMigrationService_V2016_10_24.GetServers" -> handler, and the FerryService_V1.* operations.
const std::map<std::string, Operation>& operations();

// JSON shapes shared with the connector endpoints.
json connector_json(const catalog::Connector& c, bool healthy);
catalog::Connector connector_info_from(const json& j);
json server_json(const catalog::Server& s);
catalog::Server server_from_report(const json& j);

}  // namespace ferry::api
