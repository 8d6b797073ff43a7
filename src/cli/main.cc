// ferry: one binary, many verbs. Parsing only; the work is in cli/*_commands.cc and the libraries.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "client/client.h"
#include "common/error.h"

using namespace ferry;
using namespace ferry::cli;

namespace {

void add_common(CLI::App* cmd, Common& c, bool store = true) {
  if (store) cmd->add_option("--store", c.store, "Store directory")->envname("FERRY_STORE");
  cmd->add_option("--keyring", c.keyring, "Master key directory (default ~/.config/ferry/keyring)")->envname("FERRY_KEYRING");
  cmd->add_flag("--json", c.json, "Machine-readable output");
}

void add_init_options(CLI::App* cmd, InitArgs& a) {
  cmd->add_flag("--encrypt", a.encrypt, "Wrap the store's data key with a master key");
  cmd->add_option("--key-id", a.key_id, "Master key id (created in the keyring if missing)");
  cmd->add_option("--chunk-size", a.chunk_size, "Chunk size in bytes (power of two, 4 KiB - 8 MiB)")->capture_default_str();
  cmd->add_option("--compression-level", a.compression_level, "zstd level, -5 (fastest) to 19 (smallest)")->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ferry: replicate VM disks into versioned, deduplicated, encrypted images, and back"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ferry ") + FERRY_VERSION);
  Common common;
  int rc = 0;
  std::function<int()> action;

  auto* store = app.add_subcommand("store", "Manage an image store")->require_subcommand(1);
  InitArgs init;
  auto* s_init = store->add_subcommand("init", "Create a store");
  add_common(s_init, common);
  add_init_options(s_init, init);
  s_init->callback([&] { action = [&] { return store_init(common, init); }; });
  bool read_data = false, repair = false;
  auto* s_check = store->add_subcommand("check", "Verify the index, packs and snapshots");
  add_common(s_check, common);
  s_check->add_flag("--read-data", read_data, "Also decrypt and verify every chunk");
  s_check->add_flag("--repair", repair, "Drop damaged chunks from the index so the next replication stores them again");
  s_check->callback([&] { action = [&] { return store_check(common, read_data, repair); }; });
  auto* s_prune = store->add_subcommand("prune", "Reclaim space no snapshot uses");
  add_common(s_prune, common);
  s_prune->callback([&] { action = [&] { return store_prune(common); }; });
  auto* s_stats = store->add_subcommand("stats", "Sizes, deduplication and compression");
  add_common(s_stats, common);
  s_stats->callback([&] { action = [&] { return store_stats(common); }; });
  std::string master_key;
  bool no_new_data_key = false;
  auto* s_rotate = store->add_subcommand("rotate-keys", "Seal new data under a new data key (old data stays readable); optionally re-wrap every key");
  add_common(s_rotate, common);
  s_rotate->add_option("--master-key", master_key, "Re-wrap every key under this master key (from the keyring)");
  s_rotate->add_flag("--no-new-data-key", no_new_data_key, "Only re-wrap (with --master-key)");
  s_rotate->callback([&] { action = [&] { return store_rotate_keys(common, !no_new_data_key, master_key); }; });

  ReplicateArgs rep;
  auto* r = app.add_subcommand("replicate", "Replicate a disk into a store (incremental after the first run)");
  r->add_option("disk", rep.disk, "Disk image or block device (OVA: file.ova or file.ova#member.vmdk)")->required();
  add_common(r, common);
  r->add_option("--name", rep.name, "Identity of the disk across runs (default: its absolute path)");
  r->add_option("--format", rep.format, "Source format (default: from the extension, else probed)");
  r->add_option("--threads", rep.threads, "Worker threads (default: one per core)");
  add_init_options(r, rep.init);
  r->callback([&] { action = [&] { return replicate(common, rep); }; });

  auto* snaps = app.add_subcommand("snapshots", "List, show and delete snapshots")->require_subcommand(1);
  std::string snap_id, snap_name;
  auto* sl = snaps->add_subcommand("list", "List snapshots");
  add_common(sl, common);
  sl->add_option("--name", snap_name, "Only snapshots of this disk");
  sl->callback([&] { action = [&] { return snapshots_list(common, snap_name); }; });
  auto* ss = snaps->add_subcommand("show", "Show one snapshot");
  ss->add_option("id", snap_id, "Snapshot id or unique prefix")->required();
  add_common(ss, common);
  ss->callback([&] { action = [&] { return snapshots_show(common, snap_id); }; });
  auto* sd = snaps->add_subcommand("delete", "Delete a snapshot (then 'ferry store prune')");
  sd->add_option("id", snap_id, "Snapshot id or unique prefix")->required();
  add_common(sd, common);
  sd->callback([&] { action = [&] { return snapshots_delete(common, snap_id); }; });

  auto* image = app.add_subcommand("image", "Images made from snapshots")->require_subcommand(1);
  ExportArgs ex;
  auto* ie = image->add_subcommand("export", "Write a snapshot as a disk image");
  ie->add_option("snapshot", ex.snapshot, "Snapshot id or unique prefix")->required();
  add_common(ie, common);
  ie->add_option("--format,-f", ex.format, "raw, qcow2, vmdk, vhd, vhd-fixed, vhdx or vdi")->capture_default_str();
  ie->add_option("--output,-o", ex.output, "Path of the new image")->required();
  ie->add_option("--threads", ex.threads, "Worker threads (default: one per core)");
  ie->callback([&] { action = [&] { return image_export(common, ex); }; });

  auto* keys = app.add_subcommand("keys", "Master keys (the keyring)")->require_subcommand(1);
  std::string key_id;
  auto* kc = keys->add_subcommand("create", "Create a master key");
  kc->add_option("key-id", key_id, "Key id")->required();
  add_common(kc, common, false);
  kc->callback([&] { action = [&] { return keys_create(common, key_id); }; });
  auto* kl = keys->add_subcommand("list", "List master keys");
  add_common(kl, common, false);
  kl->callback([&] { action = [&] { return keys_list(common); }; });

  add_service_commands(app, action);
  add_client_commands(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    rc = action ? action() : 0;
  } catch (const ferry::Error& e) {
    std::cerr << "ferry: " << e.what() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "ferry: internal error: " << e.what() << std::endl;
    return 70;
  }
  return rc;
}
