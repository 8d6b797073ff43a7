// End-to-end tests of the ferry service: `ferry server` and `ferry connector` as processes on loopback, driven with
// the CLI's client verbs, replicating generated VMs of every inventory plugin and checking the images they make.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "e2e/service.h"
#include "fixtures/fixtures.h"

namespace ferry {
namespace {

namespace fs = std::filesystem;
using e2e::Client;
using e2e::CliResult;
using e2e::ConnectorProcess;
using e2e::contains;
using e2e::local_config;
using e2e::ServerOptions;
using e2e::ServerProcess;
using e2e::SourceDisk;
using nlohmann::json;
using testing::kMiB;
using testing::TempDir;
using namespace std::chrono_literals;

// A raw disk with make_raw_disk's mix of holes, zeros, text and random data.
fs::path raw_disk(const fs::path& dir, const std::string& name, uint64_t mib, uint32_t seed) {
  fs::create_directories(dir);
  fs::path p = dir / (name + ".raw");
  testing::make_raw_disk(p, mib * kMiB, seed);
  return p;
}

std::string exported_vs(const fs::path& exported, const std::string& fmt, const SourceDisk& source) {
  std::string message;
  bool same = testing::images_identical(exported, fmt, source.path, source.format, &message);
  return same ? "" : message;
}

// ---------------------------------------------------------------------------------------------------------------

TEST(ServiceE2E, CliDrivesAWholeFlow) {
  TempDir dir;
  fs::path scratch = dir.path() / "scratch", vms = dir.path() / "vms", out = dir.path() / "out";
  fs::create_directories(out);
  std::map<std::string, SourceDisk> sources = {
      {"web01", e2e::add_vmware_vm(vms / "vmware", "web01", raw_disk(scratch, "web01", 32, 1))},
      {"db01", e2e::add_libvirt_vm(vms / "libvirt", vms / "images", "db01", raw_disk(scratch, "db01", 16, 2))},
      {"app01", e2e::add_hyperv_vm(vms / "hyperv", "app01", raw_disk(scratch, "app01", 16, 3))},
      {"az01", e2e::add_azure_vm(vms / "azure", "az01", raw_disk(scratch, "az01", 16, 4))},
      {"appliance-ova", e2e::add_ova_vm(vms / "ova", raw_disk(scratch, "appliance", 16, 5))},
  };
  // Relative paths: the connector resolves them against the configuration file's directory.
  e2e::write_connector_config(dir.path() / "connector.json", "dc1",
                              json::array({{{"type", "vmware"}, {"name", "esx1"}, {"path", "vms/vmware"}},
                                           {{"type", "libvirt"}, {"name", "kvm1"}, {"path", "vms/libvirt"}, {"allow", {"vms/images"}}},
                                           {{"type", "hyperv"}, {"name", "hv1"}, {"path", "vms/hyperv"}},
                                           {{"type", "azure"}, {"name", "az"}, {"path", "vms/azure"}},
                                           {{"type", "ova"}, {"name", "appliances"}, {"path", "vms/ova"}}}));

  ServerProcess server(dir.path() / "server");
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, dir.path() / "connector.json", dir.path() / "connector");
  std::string cid = connector.register_and_wait();

  json connectors = admin.connectors();
  ASSERT_EQ(connectors.size(), 1u) << connectors.dump(2);
  EXPECT_EQ(connectors[0]["connectorId"], cid);
  EXPECT_EQ(connectors[0]["status"], "HEALTHY");
  EXPECT_EQ(connectors[0]["vmManagerName"], "esx1,kvm1,hv1,az,appliances");
  CliResult table = admin.run({"connectors", "list"});
  EXPECT_EQ(table.exit_code, 0) << e2e::describe(table);
  EXPECT_TRUE(contains(table.out, cid) && contains(table.out, "HEALTHY")) << table.out;

  admin.import_servers();
  json servers = admin.servers();
  ASSERT_EQ(servers.size(), sources.size()) << servers.dump(2);
  for (auto& s : servers) EXPECT_FALSE(s.contains("error")) << s.dump(2);
  json web = admin.server_named("web01");
  EXPECT_EQ(web["connectorId"], cid);
  EXPECT_EQ(web["guestOs"], "ubuntu-64");
  EXPECT_EQ(web["cpus"], 2);
  EXPECT_EQ(web["memoryMiB"], 2048);
  ASSERT_EQ(web["disks"].size(), 1u);
  EXPECT_EQ(web["disks"][0]["size"], 32 * kMiB);

  // One job and one run per VM; the connector does them one after the other.
  std::map<std::string, std::string> jobs, runs;
  std::vector<std::string> watch = {"runs", "watch", "--interval", "0.3"};
  for (auto& [name, source] : sources) {
    std::vector<std::string> options = {"--description", "e2e " + name};
    if (name == "app01") options.push_back("--encrypted");  // into the store of the server's master key
    jobs[name] = admin.create_job(admin.server_named(name).at("serverId"), options);
    runs[name] = admin.start_run(jobs[name]);
    watch.push_back(runs[name]);
  }
  CliResult watched = admin.run(watch);
  ASSERT_EQ(watched.exit_code, 0) << e2e::describe(watched);
  // An id that is no job or run is an error naming it, not an empty watch.
  CliResult unknown = admin.run({"runs", "watch", "sms-run-00000000000000000"});
  EXPECT_EQ(unknown.exit_code, 1) << e2e::describe(unknown);
  EXPECT_TRUE(contains(unknown.err, "sms-run-00000000000000000")) << e2e::describe(unknown);

  std::map<std::string, std::string> images;
  for (auto& [name, source] : sources) {
    json run = admin.run_of(jobs[name], runs[name]);
    ASSERT_EQ(run["state"], "COMPLETED") << run.dump(2);
    images[name] = run.at("amiId");
    fs::path exported = out / (name + ".raw");
    admin.export_image(images[name], "raw", exported);
    EXPECT_EQ(exported_vs(exported, "raw", source), "") << name;
  }
  json first_web = admin.run_of(jobs["web01"], runs["web01"]);
  EXPECT_GT(first_web.at("bytesTotal").get<uint64_t>(), 0u) << first_web.dump(2);
  EXPECT_EQ(first_web.at("bytesDone"), first_web.at("bytesTotal")) << first_web.dump(2);

  // Exports in another format compare the same.
  admin.export_image(images["db01"], "qcow2", out / "db01.qcow2");
  EXPECT_EQ(testing::image_info(out / "db01.qcow2")["format"], "qcow2");
  EXPECT_EQ(exported_vs(out / "db01.qcow2", "qcow2", sources["db01"]), "");

  // A change inside the VMDK; the second run sends little more than it.
  testing::run_checked({"qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 5M 192k", "-c", "write -P 0xa5 20000k 64k",
                        sources["web01"].path.string()});
  CliResult second = admin.run({"runs", "start", jobs["web01"], "--wait", "--json"});
  ASSERT_EQ(second.exit_code, 0) << e2e::describe(second);
  json second_run = second.json().at(0);
  EXPECT_EQ(second_run["state"], "COMPLETED");

  json web_runs = admin.runs(jobs["web01"]);
  ASSERT_EQ(web_runs.size(), 2u) << web_runs.dump(2);
  uint64_t first_bytes = 0, second_bytes = 0;
  for (auto& r : web_runs) {
    if (r["replicationRunId"] == runs["web01"]) first_bytes = r.at("bytesUploaded");
    if (r["replicationRunId"] == second_run["replicationRunId"]) second_bytes = r.at("bytesUploaded");
  }
  EXPECT_GT(first_bytes, 2 * kMiB);
  EXPECT_GT(second_bytes, 0u);
  EXPECT_LT(second_bytes * 8, first_bytes) << "first run uploaded " << first_bytes << ", second " << second_bytes;

  fs::path changed = out / "web01-changed.raw";
  admin.export_image(second_run.at("amiId"), "raw", changed);
  EXPECT_EQ(exported_vs(changed, "raw", sources["web01"]), "");
  EXPECT_FALSE(testing::images_identical(changed, "raw", out / "web01.raw", "raw"));
  admin.export_image(second_run.at("amiId"), "qcow2", out / "web01-changed.qcow2");
  EXPECT_EQ(exported_vs(out / "web01-changed.qcow2", "qcow2", sources["web01"]), "");
  EXPECT_EQ(admin.images(jobs["web01"]).size(), 2u);

  json app_images = admin.images(jobs["app01"]);
  ASSERT_EQ(app_images.size(), 1u);
  EXPECT_EQ(app_images[0]["store"], "ferry-master");
  EXPECT_EQ(admin.images(jobs["db01"]).at(0)["store"], "plain");
  for (const char* store : {"plain", "ferry-master"}) {
    CliResult check = e2e::store_check(server, store);
    EXPECT_EQ(check.exit_code, 0) << store << ": " << e2e::describe(check);
  }
}

TEST(ServiceE2E, MalformedInventoryReportsTheVmAndImportsTheOthers) {
  TempDir dir;
  fs::path scratch = dir.path() / "scratch", vms = dir.path() / "vms";
  e2e::add_vmware_vm(vms / "vmware", "web01", raw_disk(scratch, "web01", 4, 1));
  // Line 3 has no '='.
  fs::create_directories(vms / "vmware" / "bad");
  std::ofstream(vms / "vmware" / "bad" / "bad.vmx") << "displayName = \"bad\"\n\nscsi0:0.fileName \"bad.vmdk\"\n";
  e2e::add_libvirt_vm(vms / "libvirt", vms / "images", "db01", raw_disk(scratch, "db01", 4, 2));
  std::ofstream(vms / "libvirt" / "broken-domain.xml") << "<domain type='kvm'>\n  <name>broken-domain</name>\n  <vcpu>2</cpu>\n</domain>\n";
  e2e::add_ova_vm(vms / "ova", raw_disk(scratch, "appliance", 4, 3));
  std::ofstream(vms / "ova" / "broken-ovf.ovf") << "this is not XML at all\n";
  e2e::write_connector_config(dir.path() / "connector.json", "dc1",
                              json::array({{{"type", "vmware"}, {"name", "esx1"}, {"path", "vms/vmware"}},
                                           {{"type", "libvirt"}, {"name", "kvm1"}, {"path", "vms/libvirt"}, {"allow", {"vms/images"}}},
                                           {{"type", "ova"}, {"name", "appliances"}, {"path", "vms/ova"}}}));

  ServerProcess server(dir.path() / "server");
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, dir.path() / "connector.json", dir.path() / "connector");
  connector.register_and_wait();
  admin.import_servers();

  json servers = admin.servers();
  ASSERT_EQ(servers.size(), 6u) << servers.dump(2);
  for (const char* good : {"web01", "db01", "appliance-ova"}) EXPECT_FALSE(admin.server_named(good).contains("error")) << good;
  EXPECT_EQ(admin.server_named("bad").value("error", ""), "bad/bad.vmx line 3: expected 'key = \"value\"'");
  std::string domain_error = admin.server_named("broken-domain").value("error", "");
  EXPECT_TRUE(contains(domain_error, "broken-domain.xml: not valid XML: Start-end tags mismatch at line 3")) << domain_error;
  std::string ovf_error = admin.server_named("broken-ovf").value("error", "");
  EXPECT_TRUE(contains(ovf_error, "broken-ovf.ovf: not valid XML: ")) << ovf_error;
  CliResult table = admin.run({"servers", "list"});
  EXPECT_TRUE(contains(table.out, "NOT REPLICABLE: bad/bad.vmx line 3")) << table.out;

  for (const char* bad : {"bad", "broken-domain", "broken-ovf"}) {
    std::string id = admin.server_named(bad).at("serverId");
    CliResult r = admin.run({"jobs", "create", id, "--frequency", "12"});
    EXPECT_EQ(r.exit_code, 1) << e2e::describe(r);
    EXPECT_TRUE(contains(r.err, "ServerCannotBeReplicatedException")) << r.err;
    EXPECT_TRUE(contains(r.err, admin.server_named(bad).at("error").get<std::string>())) << r.err;
  }
  // A good one still replicates.
  std::string job = admin.create_job(admin.server_named("db01").at("serverId"));
  json run = admin.wait_run_ended(job, admin.start_run(job));
  EXPECT_EQ(run["state"], "COMPLETED") << run.dump(2);
}

// The format a VM manager declares for a disk is the one it is read in; the disk's content is never probed. A raw
// disk whose guest wrote a qcow2 image at its start (qemu's reason not to probe a guest's disk) must come back as
// those raw bytes, not as the virtual disk of that qcow2.
TEST(ServiceE2E, DiskIsReadInTheFormatItsManagerDeclaresNotProbed) {
  TempDir dir;
  fs::path scratch = dir.path() / "scratch", vms = dir.path() / "vms", images = vms / "images";
  fs::create_directories(images);
  fs::path inner = raw_disk(scratch, "inner", 4, 5);
  fs::path guest = images / "guest.img";
  testing::run_checked({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", inner.string(), guest.string()});
  fs::create_directories(vms / "libvirt");
  std::ofstream(vms / "libvirt" / "guest.xml")
      << "<domain type='kvm'>\n  <name>guest</name>\n  <memory unit='MiB'>512</memory>\n  <vcpu>1</vcpu>\n  <devices>\n"
         "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='"
      << fs::absolute(guest).string() << "'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n";
  e2e::write_connector_config(dir.path() / "connector.json", "dc1", json::array({{{"type", "libvirt"}, {"name", "kvm1"}, {"path", "vms/libvirt"}, {"allow", {"vms/images"}}}}));

  ServerProcess server(dir.path() / "server");
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, dir.path() / "connector.json", dir.path() / "connector");
  connector.register_and_wait();
  admin.import_servers();
  json vm = admin.server_named("guest");
  ASSERT_FALSE(vm.contains("error")) << vm.dump(2);
  std::string job = admin.create_job(vm.at("serverId"));
  json run = admin.wait_run_ended(job, admin.start_run(job));
  ASSERT_EQ(run["state"], "COMPLETED") << run.dump(2);
  fs::path exported = dir.path() / "exported.raw";
  admin.export_image(run.at("amiId"), "raw", exported);
  EXPECT_EQ(fs::file_size(exported), fs::file_size(guest));
  EXPECT_TRUE(testing::images_identical(exported, "raw", guest, "raw")) << "the declared raw disk was not read as raw";
}

// An object upload (pack, index file, snapshot) sent UNSIGNED-PAYLOAD is refused on its headers alone: a client
// without a connector key gets its answer before sending any of the 16 MiB it announced, so it cannot make the
// server hold a body.
TEST(ServiceE2E, UnsignedObjectUploadFromAnUnknownKeyIsRefusedBeforeItsBody) {
  TempDir dir;
  ServerProcess server(dir.path() / "server");
  server.start();
  int port = std::stoi(server.url().substr(server.url().rfind(':') + 1));
  for (std::string object : {"packs/" + std::string(64, 'a'), "snapshots/" + std::string(32, 'c')}) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char amz_date[20], day[10];
    std::strftime(amz_date, sizeof amz_date, "%Y%m%dT%H%M%SZ", &tm);
    std::strftime(day, sizeof day, "%Y%m%d", &tm);
    std::string request = "PUT /connector/v1/runs/r-1/" + object + " HTTP/1.1\r\nHost: 127.0.0.1\r\nx-amz-date: " + amz_date +
                          "\r\nX-Ferry-Disk: d\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nAuthorization: AWS4-HMAC-SHA256 "
                          "Credential=AKIANOBODY0000000000/" + std::string(day) +
                          "/us-east-1/ferry-connector/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + std::string(64, '0') +
                          "\r\nContent-Length: 16777216\r\n\r\n";
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    pollfd pfd{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&pfd, 1, 30000), 1) << object << ": no answer before the body was sent";
    char answer[4096];
    ssize_t n = ::recv(fd, answer, sizeof answer, 0);
    ::close(fd);
    ASSERT_GT(n, 0) << object;
    std::string text(answer, static_cast<size_t>(n));
    EXPECT_TRUE(contains(text, "HTTP/1.1 4")) << object << ": " << text;
    EXPECT_TRUE(contains(text, "UnrecognizedClientException")) << object << ": " << text;
  }
}

TEST(ServiceE2E, RetentionKeepsExactlyNImagesAndReclaimsSpace) {
  TempDir dir;
  fs::path disk = dir.path() / "disk.raw";
  // Each version of the disk has new content everywhere, so a deleted image leaves only garbage behind.
  auto write_version = [&](uint32_t seed) {
    testing::make_raw_disk(disk, 24 * kMiB, seed);
    testing::mutate_disk(disk, seed + 100, 8, kMiB);
  };
  write_version(1);
  ServerProcess server(dir.path() / "server");
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector");
  connector.register_and_wait();
  admin.import_servers();
  std::string job = admin.create_job(admin.servers().at(0).at("serverId"), {"--keep", "1"});

  std::string last_run, last_image;
  uint64_t one_version = 0;
  for (uint32_t version = 1; version <= 3; version++) {
    if (version > 1) write_version(version);
    last_run = admin.start_run(job);
    json run = admin.wait_run_ended(job, last_run);
    ASSERT_EQ(run["state"], "COMPLETED") << run.dump(2);
    last_image = run.at("amiId");
    json images = admin.images(job);
    ASSERT_EQ(images.size(), 1u) << "after run " << version << ": " << images.dump(2);
    EXPECT_EQ(images[0]["imageId"], last_image);
    if (version == 1) one_version = e2e::disk_usage(server.store_dir());
  }
  ASSERT_GT(one_version, 8 * kMiB);

  // Run 3's completion deleted image 2, whose packs were all garbage; while both existed the store held two
  // versions. The prune follows when the store is idle, reported in the log after the run's completion.
  bool pruned = e2e::wait_for(
      [&] {
        std::string log = testing::read_file(server.log_file());
        auto completed = log.find("run " + last_run + " completed");
        return completed != std::string::npos && log.find("pruned store 'plain'", completed) != std::string::npos;
      },
      30s);
  ASSERT_TRUE(pruned) << testing::read_file(server.log_file());
  uint64_t after = e2e::disk_usage(server.store_dir());
  EXPECT_LT(after, one_version * 3 / 2) << "one version took " << one_version << " bytes";

  CliResult check = e2e::store_check(server);
  EXPECT_EQ(check.exit_code, 0) << e2e::describe(check);
  admin.export_image(last_image, "raw", dir.path() / "kept.raw");
  EXPECT_TRUE(testing::images_identical(dir.path() / "kept.raw", "raw", disk, "raw"));
}

TEST(ServiceE2E, TlsServerServesTheSameApi) {
  TempDir dir;
  fs::path cert = dir.path() / "cert.pem", key = dir.path() / "key.pem";
  testing::run_checked({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", key.string(), "-out", cert.string()});
  ServerOptions options;
  options.tls_cert = cert;
  options.tls_key = key;
  options.ca_file = cert;
  ServerProcess server(dir.path() / "server", options);
  server.start();
  ASSERT_EQ(server.url().rfind("https://127.0.0.1:", 0), 0u) << server.url();
  fs::path disk = raw_disk(dir.path(), "disk", 4, 1);
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector");
  std::string cid = connector.register_and_wait();

  const Client& admin = server.admin();  // passes --ca-file
  json connectors = admin.connectors();
  ASSERT_EQ(connectors.size(), 1u);
  EXPECT_EQ(connectors[0]["status"], "HEALTHY");
  admin.import_servers();
  std::string job = admin.create_job(admin.servers().at(0).at("serverId"));
  json run = admin.wait_run_ended(job, admin.start_run(job));
  EXPECT_EQ(run["state"], "COMPLETED") << run.dump(2);

  Client untrusting(admin.env(), {});
  CliResult r = untrusting.run({"connectors", "list"});
  EXPECT_EQ(r.exit_code, 1) << e2e::describe(r);
  EXPECT_TRUE(contains(r.err, server.url())) << r.err;
  EXPECT_TRUE(contains(r.err, "SSLServerVerification")) << r.err;
  EXPECT_TRUE(contains(r.err, "--ca-file")) << r.err;
}

// Every line of a --log-json log file is a JSON object with time, level and msg; returns the levels seen.
std::set<std::string> expect_json_lines(const fs::path& log) {
  std::ifstream in(log);
  std::string line;
  std::set<std::string> levels;
  int lines = 0;
  while (std::getline(in, line)) {
    if (line.rfind("==== ferry ", 0) == 0) continue;  // the fixture's banner naming the command
    lines++;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      ADD_FAILURE() << log << ": not a JSON line: " << line;
      continue;
    }
    for (const char* field : {"time", "level", "msg"}) EXPECT_TRUE(j.contains(field) && j[field].is_string()) << field << " in " << line;
    levels.insert(j.value("level", ""));
  }
  EXPECT_GE(lines, 3) << log;
  return levels;
}

TEST(ServiceE2E, LogsAsJsonLines) {
  TempDir dir;
  fs::path disk = raw_disk(dir.path(), "disk", 4, 1);
  ServerOptions options;
  options.args = {"--log-json"};
  ServerProcess server(dir.path() / "server", options);
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector", {"--log-json"});
  connector.register_and_wait();
  admin.import_servers();
  std::string job = admin.create_job(admin.servers().at(0).at("serverId"));
  EXPECT_EQ(admin.wait_run_ended(job, admin.start_run(job))["state"], "COMPLETED");
  CliResult denied = admin.with_env({{"AWS_SECRET_ACCESS_KEY", "not-the-secret-not-the-secret-not-the-se"}}).run({"connectors", "list"});
  EXPECT_EQ(denied.exit_code, 1) << e2e::describe(denied);
  EXPECT_EQ(connector.stop(), 0);
  EXPECT_EQ(server.stop(), 0);

  std::set<std::string> levels = expect_json_lines(server.log_file());
  EXPECT_TRUE(levels.count("info"));
  EXPECT_TRUE(levels.count("warning") || levels.count("warn")) << "the refused request is a warning";
  EXPECT_TRUE(expect_json_lines(connector.log_file()).count("info"));
}

TEST(ServiceE2E, ScheduledJobRunsByItself) {
  TempDir dir;
  fs::path disk = raw_disk(dir.path(), "disk", 8, 1);
  ServerProcess server(dir.path() / "server");
  server.start();
  const Client& admin = server.admin();
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector");
  connector.register_and_wait();
  admin.import_servers();
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string job = admin.create_job(admin.servers().at(0).at("serverId"), {"--seed-time", "now", "--frequency", "12"});

  json runs;
  ASSERT_TRUE(e2e::wait_for([&] { return !(runs = admin.runs(job)).empty(); }, 30s)) << "no run was scheduled";
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0]["type"], "AUTOMATIC");
  json run = admin.wait_run_ended(job, runs[0].at("replicationRunId"));
  EXPECT_EQ(run["state"], "COMPLETED") << run.dump(2);
  json j = admin.job(job);
  EXPECT_EQ(j["state"], "ACTIVE");
  EXPECT_EQ(j["latestAmiId"], run["amiId"]);
  EXPECT_GE(j.value("nextReplicationRunStartTime", 0.0), static_cast<double>(now + 11 * 3600));
  // The scheduler ticks every second: a second run for the same slot would show within a few ticks.
  EXPECT_FALSE(e2e::wait_for([&] { return admin.runs(job).size() > 1; }, 3s)) << "one run per slot: " << admin.runs(job).dump(2);
}

TEST(ServiceE2E, ConnectorRestartNeedsNoTokenAndAUsedTokenRegistersNoOther) {
  TempDir dir;
  fs::path disk = raw_disk(dir.path(), "disk", 4, 1);
  fs::path config = local_config(dir.path(), {disk});
  ServerOptions options;
  options.args = {"--connector-timeout", "2"};
  ServerProcess server(dir.path() / "server", options);
  server.start();
  const Client& admin = server.admin();

  std::string token = admin.create_token();
  ConnectorProcess connector(server, config, dir.path() / "connector");
  connector.start(token);
  ASSERT_TRUE(e2e::wait_for([&] { return fs::exists(dir.path() / "connector" / "credentials.json"); }, 30s)) << connector.log();
  std::string cid = connector.id();
  connector.wait_status("HEALTHY");
  EXPECT_EQ(connector.stop(), 0);
  connector.wait_status("UNHEALTHY");

  connector.start();  // no token
  connector.wait_status("HEALTHY");
  EXPECT_EQ(connector.id(), cid);

  ConnectorProcess intruder(server, config, dir.path() / "intruder");
  intruder.start(token);
  int code = intruder.wait(30s);
  EXPECT_EQ(code, 1) << intruder.log();
  EXPECT_TRUE(contains(intruder.log(), "UnauthorizedOperationException")) << intruder.log();
  EXPECT_FALSE(fs::exists(dir.path() / "intruder" / "credentials.json"));
  json connectors = admin.connectors();
  ASSERT_EQ(connectors.size(), 1u) << connectors.dump(2);
  EXPECT_EQ(connectors[0]["connectorId"], cid);
}

TEST(ServiceE2E, AccessKeyOfAConnectorCannotCallTheSmsApi) {
  TempDir dir;
  fs::path disk = raw_disk(dir.path(), "disk", 4, 1);
  ServerProcess server(dir.path() / "server");
  server.start();
  ConnectorProcess connector(server, local_config(dir.path(), {disk}), dir.path() / "connector");
  connector.register_and_wait();
  json creds = connector.credentials();
  Client as_connector = server.admin().with_env(
      {{"AWS_ACCESS_KEY_ID", creds.at("accessKeyId")}, {"AWS_SECRET_ACCESS_KEY", creds.at("secretAccessKey")}});
  for (auto verb : std::vector<std::vector<std::string>>{{"connectors", "list"}, {"connectors", "token"}, {"servers", "list"}}) {
    CliResult r = as_connector.run(verb);
    EXPECT_EQ(r.exit_code, 1) << e2e::describe(r);
    EXPECT_TRUE(contains(r.err, "AccessDeniedException")) << r.err;
    EXPECT_TRUE(contains(r.err, creds.at("accessKeyId").get<std::string>())) << r.err;
  }
}

}  // namespace
}  // namespace ferry
