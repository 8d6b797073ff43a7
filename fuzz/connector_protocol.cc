// Fuzzes the server's reading of the connector protocol's JSON messages (docs/formats.md §15) — a registration or
// heartbeat description, an inventory report — and the connector's reading of the server's answers (a run's task,
// a chunk lookup answer): what a compromised peer could send either side. The first byte picks the message.
// Only ferry::Error and nlohmann's parse and type errors may escape (the HTTP layer answers them with a 400).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "api/internal.h"
#include "common/error.h"
#include "store/repository.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: ferry::api::connector_info_from(nlohmann::json::parse(body)); break;
      case 1: {
        auto in = nlohmann::json::parse(body);
        for (auto& s : in.at("servers")) ferry::api::server_from_report(s);
        break;
      }
      case 2: ferry::store::decode_snapshot_plaintext(body, "0123456789abcdef0123456789abcdef"); break;
      case 3: {
        // A parent snapshot a server hands a connector, then the connector's view built on it.
        auto s = ferry::store::decode_snapshot_plaintext(body, "0123456789abcdef0123456789abcdef");
        ferry::store::RepositoryConfig c;
        c.chunk_size = s.chunk_size;
        c.pack_size = 1 << 20;
        auto view = ferry::store::Repository::open_view(nullptr, c, std::string(32, 'k'),
                                                        [](const std::vector<ferry::store::ChunkId>& ids) { return std::vector<bool>(ids.size()); },
                                                        {s});
        (void)view->latest_snapshot(s.name);
        break;
      }
    }
  } catch (const ferry::Error&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}
