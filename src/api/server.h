// api — ferry's HTTP front: the AWS SMS JSON 1.1 API (POST /, X-Amz-Target AWSServerMigrationService_V2016_10_24.*),
// ferry's own operations in the same protocol (FerryService_V1.*), and the connector protocol under /connector/v1/
// (docs/formats.md). Every request except /health and connector registration is SigV4-signed; SMS and ferry
// operations need an admin key, connector endpoints the connector's own key.
// HTTP is confined to this module: it turns requests into service::Service calls and errors into SMS error bodies.
#pragma once

#include <memory>
#include <string>

#include "service/service.h"

namespace ferry::api {

struct ListenOptions {
  std::string address = "127.0.0.1:8443";  // host:port; port 0 picks a free one
  std::string tls_cert, tls_key;           // PEM files; both empty = plain HTTP
  // Connections from one client address (IPv4, or IPv6 /64). A connector takes one per replication worker (one per
  // core) plus its heartbeat, so 256 serves several large connector hosts behind one NAT address; connections still
  // waiting for their headers do not hold a place against new ones (docs/architecture.md).
  size_t max_connections_per_address = 256;
  // Memory for pack bodies being received, leased and pooled together (at least the largest pack a store takes).
  size_t pack_buffer_bytes = size_t{1} << 30;
};

class HttpServer {
 public:
  HttpServer(service::Service& service, ListenOptions options);
  ~HttpServer();
  // Binds; returns the URL it listens on (http(s)://host:port) — the real port when 0 was asked for.
  std::string bind();
  // Serves until stop() (from another thread or a signal handler thread).
  void serve();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::api
