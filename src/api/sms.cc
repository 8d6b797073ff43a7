// The SMS operations and ferry's own, as JSON in and JSON out: field names, enum values and error types as in the
// AWS Server Migration Service API reference (API version 2016-10-24).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <vector>

#include "api/internal.h"
#include "common/error.h"

namespace ferry::api {

using service::OperationError;
using service::Service;

// --- Reading request bodies and fields (internal.h) ---

namespace {

// The offset of the first byte of `s` that is not part of well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or npos.
size_t invalid_utf8_at(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t more;                          // continuation bytes
    unsigned char lo = 0x80, hi = 0xBF;   // the range of the first of them
    if (c >= 0xC2 && c <= 0xDF) more = 1;
    else if (c == 0xE0) more = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) more = 2;
    else if (c == 0xED) more = 2, hi = 0x9F;
    else if (c == 0xF0) more = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) more = 3;
    else if (c == 0xF4) more = 3, hi = 0x8F;
    else return i;
    for (size_t k = 1; k <= more; k++) {
      if (i + k >= s.size()) return i;
      auto cc = static_cast<unsigned char>(s[i + k]);
      if (cc < (k == 1 ? lo : 0x80) || cc > (k == 1 ? hi : 0xBF)) return i;
    }
    i += more + 1;
  }
  return std::string_view::npos;
}

// Where byte `offset` of a JSON text falls, for a message: "the value of 'servers[0].vmName'", "a key in
// 'servers[0]'", or "the JSON text" outside any string. The text before `offset` is read as JSON tokens; it may be
// malformed (it is being refused anyway), and the answer is then the best reading of it.
std::string json_location(std::string_view text, size_t offset) {
  struct Frame {
    explicit Frame(bool is_object) : object(is_object) {}
    bool object;
    std::string key;  // object: the current member's key (raw, as written)
    size_t index = 0;  // list: the current element
    bool expect_key = true;
  };
  std::vector<Frame> stack;
  bool in_string = false, escaped = false, is_key = false;
  size_t string_start = 0;
  for (size_t i = 0; i < offset && i < text.size(); i++) {
    char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') {
        in_string = false;
        if (is_key) {
          // Key names are shown up to 64 bytes, cut before a UTF-8 continuation byte.
          size_t n = std::min<size_t>(i - string_start, 64);
          while (n > 0 && n < i - string_start && (static_cast<unsigned char>(text[string_start + n]) & 0xC0) == 0x80) n--;
          stack.back().key = std::string(text.substr(string_start, n));
          stack.back().expect_key = false;
        }
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        is_key = !stack.empty() && stack.back().object && stack.back().expect_key;
        string_start = i + 1;
        break;
      case '{': stack.emplace_back(true); break;
      case '[': stack.emplace_back(false); break;
      case '}':
      case ']':
        if (!stack.empty()) stack.pop_back();
        break;
      case ',':
        if (stack.empty()) break;
        if (stack.back().object) {
          stack.back().expect_key = true;
          stack.back().key.clear();
        } else {
          stack.back().index++;
        }
        break;
      default: break;
    }
  }
  // The path of the value being read: member keys and list indexes from the outside in.
  auto path = [&](size_t depth) {
    std::string p;
    for (size_t i = 0; i < depth; i++) {
      if (stack[i].object) p += (p.empty() ? "" : ".") + stack[i].key;
      else p += "[" + std::to_string(stack[i].index) + "]";
    }
    return p;
  };
  if (!in_string) return "the JSON text";
  if (is_key) return stack.size() > 1 ? "a key in '" + path(stack.size() - 1) + "'" : "a key of the body";
  return stack.empty() ? "the body" : "the value of '" + path(stack.size()) + "'";
}

}  // namespace

json parse_request(std::string_view body) {
  if (body.empty()) return json::object();
  if (size_t at = invalid_utf8_at(body); at != std::string_view::npos) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(body[at]));
    throw OperationError("SerializationException", "the request body is not valid UTF-8: byte " + std::string(byte) +
                                                       " at offset " + std::to_string(at) + ", in " +
                                                       json_location(body, at));
  }
  try {
    return json::parse(body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number beyond a double (1e400)
    throw OperationError("SerializationException", std::string("the request body is not valid JSON: ") + e.what());
  }
}

const json* field(const json& in, const char* key) {
  if (!in.is_object()) return nullptr;
  auto it = in.find(key);
  return it == in.end() || it->is_null() ? nullptr : &*it;
}

std::string kind_of(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "a list";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::null: return "null";
    default: return "the number " + shown(v);
  }
}

std::string shown(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() <= 100 ? text : text.substr(0, 100) + "...";
}

std::optional<std::string> opt_string(const json& in, const char* key) {
  const json* v = field(in, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw OperationError("InvalidParameterException", std::string(key) + " must be a string, not " + kind_of(*v));
  return v->get<std::string>();
}

std::optional<int64_t> opt_int(const json& in, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(in, key);
  if (!v) return std::nullopt;
  bool fits = false;
  int64_t n = 0;
  if (v->is_number_unsigned()) {  // 0 and up: uint64_t, which int64_t may not hold
    auto u = v->get<uint64_t>();
    fits = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    n = fits ? static_cast<int64_t>(u) : 0;
  } else if (v->is_number_integer()) {
    n = v->get<int64_t>();
    fits = true;
  } else {
    throw OperationError("InvalidParameterException", std::string(key) + " must be an integer, not " + kind_of(*v));
  }
  if (!fits || n < lo || n > hi)
    throw OperationError("InvalidParameterException", std::string(key) + " must be an integer from " + std::to_string(lo) +
                                                          " to " + std::to_string(hi) + ", not " + shown(*v));
  return n;
}

namespace {

catalog::Time now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// --- Input validation: the SDK sends well-typed JSON; anything else is named precisely. ---

[[noreturn]] void invalid(const std::string& message) { throw OperationError("InvalidParameterException", message); }

void expect_object(const json& in) {
  if (!in.is_object()) invalid("the request body must be a JSON object, not " + kind_of(in));
}

std::optional<bool> opt_bool(const json& in, const char* key) {
  const json* v = field(in, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) invalid(std::string(key) + " must be true or false, not " + kind_of(*v));
  return v->get<bool>();
}

std::string req_string(const json& in, const char* key) {
  auto v = opt_string(in, key);
  if (!v || v->empty()) throw OperationError("MissingRequiredParameterException", std::string(key) + " is required");
  return *v;
}

// An integer field narrowed to T (int for the SMS API's Integer members) once its 64-bit value is known to fit.
template <class T>
std::optional<T> opt_int_as(const json& in, const char* key) {
  auto v = opt_int(in, key, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
  return v ? std::optional<T>(static_cast<T>(*v)) : std::nullopt;
}

// Timestamps arrive as epoch seconds (possibly fractional): a finite number from 0 to the year 3000, checked as the
// double it is before it becomes whole seconds.
std::optional<catalog::Time> opt_time(const json& in, const char* key) {
  const json* v = field(in, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) invalid(std::string(key) + " must be a timestamp in epoch seconds, not " + kind_of(*v));
  constexpr double kYear3000 = 32503680000.0;
  double t = v->get<double>();
  if (!(t >= 0 && t <= kYear3000))  // also false for NaN
    invalid(std::string(key) + " must be a timestamp from 0 to 32503680000 (epoch seconds, before the year 3000), not " +
            shown(*v));
  return static_cast<catalog::Time>(t);
}

catalog::PageRequest page_of(const json& in) {
  catalog::PageRequest p;
  p.token = opt_string(in, "nextToken").value_or("");
  p.max_results = static_cast<int>(opt_int(in, "maxResults", 1, 1000).value_or(50));
  return p;
}

// A listing call whose kInvalidArgument (a bad nextToken) is the SMS InvalidParameterException.
template <class T>
catalog::Page<T> paged(const std::function<catalog::Page<T>()>& fn) {
  try {
    return fn();
  } catch (const OperationError&) {
    throw;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kInvalidArgument) invalid(e.what());
    throw;
  }
}

json page_out(json out, const std::string& next) {
  if (!next.empty()) out["nextToken"] = next;
  return out;
}

json vm_server_json(const catalog::Server& s) {
  return {{"vmServerAddress", {{"vmManagerId", s.vm_manager_id}, {"vmId", s.vm_id}}},
          {"vmName", s.vm_name},
          {"vmManagerName", s.vm_manager_name},
          {"vmManagerType", s.vm_manager_type},
          {"vmPath", s.vm_path}};
}

json run_json(const catalog::ReplicationRun& r) {
  json j = {{"replicationRunId", r.id},
            {"state", r.state},
            {"type", r.type},
            {"stageDetails", {{"stage", r.stage}, {"stageProgress", r.stage_progress}}},
            {"scheduledStartTime", r.scheduled_start},
            {"encrypted", r.encrypted},
            // ferry's additions, ignored by SMS clients: bytes for progress bars.
            {"bytesTotal", r.bytes_total},
            {"bytesDone", r.bytes_done},
            {"bytesUploaded", r.bytes_uploaded}};
  if (!r.status_message.empty()) j["statusMessage"] = r.status_message;
  if (!r.ami_id.empty()) j["amiId"] = r.ami_id;
  if (r.completed_time) j["completedTime"] = r.completed_time;
  if (!r.description.empty()) j["description"] = r.description;
  if (!r.kms_key_id.empty()) j["kmsKeyId"] = r.kms_key_id;
  return j;
}

json job_json(Service& svc, const catalog::ReplicationJob& job, bool with_runs) {
  json j = {{"replicationJobId", job.id},
            {"serverId", job.server_id},
            {"serverType", "VIRTUAL_MACHINE"},
            {"seedReplicationTime", job.seed_time},
            {"frequency", job.frequency_hours},
            {"runOnce", job.run_once},
            {"licenseType", job.license_type},
            {"state", job.state},
            {"numberOfRecentAmisToKeep", job.number_of_recent_amis_to_keep},
            {"encrypted", job.encrypted}};
  if (job.next_run_time) j["nextReplicationRunStartTime"] = job.next_run_time;
  if (!job.role_name.empty()) j["roleName"] = job.role_name;
  if (!job.latest_ami_id.empty()) j["latestAmiId"] = job.latest_ami_id;
  if (!job.status_message.empty()) j["statusMessage"] = job.status_message;
  if (!job.description.empty()) j["description"] = job.description;
  if (!job.kms_key_id.empty()) j["kmsKeyId"] = job.kms_key_id;
  if (auto server = svc.catalog().get_server(job.server_id)) j["vmServer"] = vm_server_json(*server);
  if (with_runs) {
    catalog::PageRequest p;
    p.max_results = 25;
    json runs = json::array();
    for (auto& r : svc.catalog().list_runs(job.id, p).items) runs.push_back(run_json(r));
    j["replicationRunList"] = runs;
  }
  return j;
}

Service::JobRequest job_request(const json& in) {
  Service::JobRequest r;
  r.seed_time = opt_time(in, "seedReplicationTime");
  r.frequency = opt_int_as<int>(in, "frequency");  // the service checks the range (1-24)
  r.run_once = opt_bool(in, "runOnce");
  r.license_type = opt_string(in, "licenseType");
  r.role_name = opt_string(in, "roleName");
  r.description = opt_string(in, "description");
  r.keep = opt_int_as<int>(in, "numberOfRecentAmisToKeep");  // the service checks the range (0-1000)
  r.encrypted = opt_bool(in, "encrypted");
  r.kms_key_id = opt_string(in, "kmsKeyId");
  return r;
}

json image_json(const catalog::Image& i) {
  json disks = json::array();
  for (auto& d : i.disks) disks.push_back({{"name", d.name}, {"snapshotId", d.snapshot_id}, {"size", d.size}});
  return {{"imageId", i.id},  {"replicationJobId", i.job_id}, {"replicationRunId", i.run_id}, {"serverId", i.server_id},
          {"store", i.store}, {"createdOn", i.created},     {"disks", disks}};
}

// --- SMS operations ---

json get_connectors(Service& svc, const json& in) {
  expect_object(in);
  auto page = paged<catalog::Connector>([&] { return svc.catalog().list_connectors(page_of(in)); });
  json list = json::array();
  auto now = now_seconds();
  for (auto& c : page.items) list.push_back(connector_json(c, svc.connector_healthy(c, now)));
  return page_out({{"connectorList", list}}, page.next_token);
}

json disassociate_connector(Service& svc, const json& in) {
  expect_object(in);
  svc.disassociate_connector(req_string(in, "connectorId"));
  return json::object();
}

json import_server_catalog(Service& svc, const json& in) {
  expect_object(in);
  svc.import_server_catalog();
  return json::object();
}

json get_servers(Service& svc, const json& in) {
  expect_object(in);
  std::vector<std::pair<std::string, std::string>> filter;
  if (in.contains("vmServerAddressList") && !in["vmServerAddressList"].is_null()) {
    if (!in["vmServerAddressList"].is_array()) invalid("vmServerAddressList must be a list");
    for (auto& a : in["vmServerAddressList"]) {
      if (!a.is_object()) invalid("vmServerAddressList entries must be objects");
      filter.emplace_back(opt_string(a, "vmManagerId").value_or(""), opt_string(a, "vmId").value_or(""));
    }
  }
  auto page = paged<catalog::Server>([&] { return svc.catalog().list_servers(page_of(in), filter); });
  json list = json::array();
  for (auto& s : page.items) list.push_back(server_json(s));
  json out = {{"serverList", list}, {"serverCatalogStatus", catalog::to_string(svc.catalog().catalog_status())}};
  if (auto t = svc.catalog().catalog_modified()) out["lastModifiedOn"] = t;
  return page_out(out, page.next_token);
}

json delete_server_catalog(Service& svc, const json& in) {
  expect_object(in);
  svc.delete_server_catalog();
  return json::object();
}

json create_replication_job(Service& svc, const json& in) {
  expect_object(in);
  auto r = job_request(in);
  r.server_id = req_string(in, "serverId");
  if (!r.seed_time) throw OperationError("MissingRequiredParameterException", "seedReplicationTime is required");
  return {{"replicationJobId", svc.create_job(r)}};
}

json get_replication_jobs(Service& svc, const json& in) {
  expect_object(in);
  json list = json::array();
  if (auto id = opt_string(in, "replicationJobId"); id && !id->empty()) {
    list.push_back(job_json(svc, svc.get_job(*id), true));
    return {{"replicationJobList", list}};
  }
  auto page = paged<catalog::ReplicationJob>([&] { return svc.catalog().list_jobs(page_of(in)); });
  for (auto& j : page.items) list.push_back(job_json(svc, j, true));
  return page_out({{"replicationJobList", list}}, page.next_token);
}

json update_replication_job(Service& svc, const json& in) {
  expect_object(in);
  std::string id = req_string(in, "replicationJobId");
  auto r = job_request(in);
  if (auto t = opt_time(in, "nextReplicationRunStartTime")) r.seed_time = *t;
  svc.update_job(id, r);
  return json::object();
}

json delete_replication_job(Service& svc, const json& in) {
  expect_object(in);
  svc.delete_job(req_string(in, "replicationJobId"));
  return json::object();
}

json start_on_demand_replication_run(Service& svc, const json& in) {
  expect_object(in);
  std::string id = req_string(in, "replicationJobId");
  return {{"replicationRunId", svc.start_on_demand_run(id, opt_string(in, "description").value_or(""))}};
}

json get_replication_runs(Service& svc, const json& in) {
  expect_object(in);
  std::string id = req_string(in, "replicationJobId");
  auto job = svc.get_job(id);
  auto page = paged<catalog::ReplicationRun>([&] { return svc.catalog().list_runs(id, page_of(in)); });
  json list = json::array();
  for (auto& r : page.items) list.push_back(run_json(r));
  return page_out({{"replicationJob", job_json(svc, job, false)}, {"replicationRunList", list}}, page.next_token);
}

// --- ferry's own operations ---

json create_registration_token(Service& svc, const json& in) {
  expect_object(in);
  int64_t hours = opt_int(in, "validHours", 1, 24 * 30).value_or(24);
  std::string token = svc.create_registration_token(std::chrono::hours(hours), opt_string(in, "trustDomain").value_or(""));
  return {{"registrationToken", token}, {"expiresOn", now_seconds() + hours * 3600}};
}

json list_images(Service& svc, const json& in) {
  expect_object(in);
  std::string job = opt_string(in, "replicationJobId").value_or("");
  if (!job.empty()) (void)svc.get_job(job);
  json list = json::array();
  for (auto& i : svc.images(job)) list.push_back(image_json(i));
  return {{"imageList", list}};
}

json export_image(Service& svc, const json& in) {
  expect_object(in);
  // A name inside the server's export directory (--export-dir): relative, or absolute below it.
  std::string out = req_string(in, "outputPath");
  std::string written = svc.export_image(req_string(in, "imageId"), opt_string(in, "diskName").value_or(""), opt_string(in, "format").value_or("raw"), out);
  return {{"outputPath", written}};
}

json delete_image(Service& svc, const json& in) {
  expect_object(in);
  svc.delete_image(req_string(in, "imageId"));
  return json::object();
}

json store_json(const Service::StoreInfo& s) {
  json j = {{"name", s.name},          {"repositoryId", s.repository_id}, {"encrypted", s.encrypted}, {"keyId", s.key_id},
            {"dataKeys", s.data_keys}, {"chunks", s.chunks},              {"images", s.images},       {"freeBytes", s.fs_free},
            {"sizeBytes", s.fs_size},  {"reserveBytes", s.reserve},       {"activeRuns", s.active_runs}};
  if (!s.full.empty()) j["full"] = s.full;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

json list_stores(Service& svc, const json& in) {
  expect_object(in);
  json list = json::array();
  for (auto& s : svc.stores()) list.push_back(store_json(s));
  return {{"storeList", list}};
}

json prune_store(Service& svc, const json& in) {
  expect_object(in);
  auto r = svc.prune_store(req_string(in, "store"));
  return {{"snapshots", r.snapshots},         {"packsDeleted", r.packs_deleted}, {"packsRewritten", r.packs_rewritten},
          {"chunksRemoved", r.chunks_removed}, {"bytesBefore", r.bytes_before},   {"bytesAfter", r.bytes_after}};
}

json check_store(Service& svc, const json& in) {
  expect_object(in);
  auto r = svc.check_store(req_string(in, "store"), opt_bool(in, "readData").value_or(false));
  json damaged = json::object();
  for (auto& [chunk, snaps] : r.damaged_chunks) damaged[chunk] = snaps;
  return {{"ok", r.ok()},         {"errors", r.errors},       {"notes", r.notes},         {"damagedChunks", damaged},
          {"packs", r.packs},     {"chunks", r.chunks},       {"snapshots", r.snapshots}, {"bytesRead", r.bytes_read}};
}

json rotate_store_keys(Service& svc, const json& in) {
  expect_object(in);
  std::string store = req_string(in, "store");
  svc.rotate_store_keys(store, opt_bool(in, "newDataKey").value_or(true), opt_string(in, "masterKeyId").value_or(""));
  for (auto& s : svc.stores())
    if (s.name == store) return store_json(s);
  return json::object();
}

}  // namespace

json connector_json(const catalog::Connector& c, bool healthy) {
  json j = {{"connectorId", c.id},
            {"version", c.version},
            {"status", healthy ? "HEALTHY" : "UNHEALTHY"},
            {"capabilityList", c.capabilities},
            {"vmManagerName", c.vm_manager_name},
            {"vmManagerType", c.vm_manager_type},
            {"vmManagerId", c.vm_manager_id},
            {"ipAddress", c.ip_address},
            {"associatedOn", c.associated_on}};
  if (!c.mac_address.empty()) j["macAddress"] = c.mac_address;
  return j;
}

catalog::Connector connector_info_from(const json& j) {
  catalog::Connector c;
  c.name = opt_string(j, "name").value_or("");
  c.version = opt_string(j, "version").value_or("");
  if (const json* caps = field(j, "capabilities")) {
    if (!caps->is_array()) invalid("capabilities must be a list of strings, not " + kind_of(*caps));
    for (size_t i = 0; i < caps->size(); i++) {
      if (!(*caps)[i].is_string()) invalid("capabilities[" + std::to_string(i) + "] must be a string, not " + kind_of((*caps)[i]));
      c.capabilities.push_back((*caps)[i].get<std::string>());
    }
  }
  c.vm_manager_type = opt_string(j, "vmManagerType").value_or("");
  c.vm_manager_name = opt_string(j, "vmManagerName").value_or("");
  c.vm_manager_id = opt_string(j, "vmManagerId").value_or("");
  c.mac_address = opt_string(j, "macAddress").value_or("");
  return c;
}

json server_json(const catalog::Server& s) {
  json j = {{"serverId", s.id}, {"serverType", s.server_type}, {"vmServer", vm_server_json(s)}, {"replicationJobTerminated", s.replication_job_terminated}};
  if (!s.replication_job_id.empty()) j["replicationJobId"] = s.replication_job_id;
  // ferry's additions: what the connector found, and why a server cannot be replicated.
  json disks = json::array();
  for (auto& d : s.disks) disks.push_back({{"name", d.name}, {"path", d.path}, {"format", d.format}, {"size", d.size}});
  j["connectorId"] = s.connector_id;
  j["guestOs"] = s.guest_os;
  j["cpus"] = s.cpus;
  j["memoryMiB"] = s.memory_mib;
  j["disks"] = disks;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

catalog::Server server_from_report(const json& j) {
  if (!j.is_object()) invalid("each server in an inventory report must be an object, not " + kind_of(j));
  catalog::Server s;
  s.vm_id = req_string(j, "vmId");
  s.vm_name = opt_string(j, "vmName").value_or(s.vm_id);
  s.vm_path = opt_string(j, "vmPath").value_or("");
  s.vm_manager_id = opt_string(j, "vmManagerId").value_or("");
  s.vm_manager_type = opt_string(j, "vmManagerType").value_or("");
  s.vm_manager_name = opt_string(j, "vmManagerName").value_or("");
  s.guest_os = opt_string(j, "guestOs").value_or("");
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  s.cpus = static_cast<int>(opt_int(j, "cpus", 0, std::numeric_limits<int>::max()).value_or(0));
  s.memory_mib = static_cast<uint64_t>(opt_int(j, "memoryMiB", 0, kMax).value_or(0));
  s.error = opt_string(j, "error").value_or("");
  if (const json* disks = field(j, "disks")) {
    if (!disks->is_array()) invalid("disks of VM '" + s.vm_id + "' must be a list, not " + kind_of(*disks));
    for (auto& d : *disks) {
      if (!d.is_object()) invalid("disks of VM '" + s.vm_id + "' must be objects, not " + kind_of(d));
      s.disks.push_back({req_string(d, "name"), req_string(d, "path"), opt_string(d, "format").value_or(""),
                         static_cast<uint64_t>(opt_int(d, "size", 0, kMax).value_or(0))});
    }
  }
  return s;
}

const std::map<std::string, Operation>& operations() {
  static const std::map<std::string, Operation> ops = [] {
    std::map<std::string, Operation> m;
    auto sms = [&](const std::string& name, Operation op) { m["AWSServerMigrationService_V2016_10_24." + name] = std::move(op); };
    auto own = [&](const std::string& name, Operation op) { m["FerryService_V1." + name] = std::move(op); };
    sms("GetConnectors", get_connectors);
    sms("DisassociateConnector", disassociate_connector);
    sms("ImportServerCatalog", import_server_catalog);
    sms("GetServers", get_servers);
    sms("DeleteServerCatalog", delete_server_catalog);
    sms("CreateReplicationJob", create_replication_job);
    sms("GetReplicationJobs", get_replication_jobs);
    sms("UpdateReplicationJob", update_replication_job);
    sms("DeleteReplicationJob", delete_replication_job);
    sms("StartOnDemandReplicationRun", start_on_demand_replication_run);
    sms("GetReplicationRuns", get_replication_runs);
    own("CreateRegistrationToken", create_registration_token);
    own("ListImages", list_images);
    own("ExportImage", export_image);
    own("DeleteImage", delete_image);
    own("ListStores", list_stores);
    own("PruneStore", prune_store);
    own("CheckStore", check_store);
    own("RotateStoreKeys", rotate_store_keys);
    return m;
  }();
  return ops;
}

}  // namespace ferry::api
