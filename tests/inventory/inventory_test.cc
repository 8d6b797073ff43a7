// Inventory plugins against realistic sample trees: VMware datastores, Hyper-V exports, Azure VHD
// directories, libvirt domain XML, OVA/OVF packages and local devices, with small disks made by qemu-img.
#include "inventory/inventory.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/error.h"
#include "fixtures/fixtures.h"
#include "inventory/internal.h"  // the VMDK descriptor reader, tested against qemu's reading

namespace fs = std::filesystem;
namespace fx = ferry::testing;
using ferry::inventory::DiskInfo;
using ferry::inventory::ManagerConfig;
using ferry::inventory::VmInfo;

namespace {

constexpr uint64_t kMiB = fx::kMiB;

void write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << file;
}

// A disk of `kind` (see fx::all_source_kinds) holding `mib` MiB, at `dest`.
fs::path make_disk(const fs::path& dest, const std::string& kind, uint64_t mib = 2) {
  fs::create_directories(dest.parent_path());
  fx::TempDir scratch;
  auto raw = scratch.path() / "src.raw";
  fx::make_raw_disk(raw, mib * kMiB, static_cast<uint32_t>(mib));
  fs::rename(fx::make_disk(raw, kind, scratch.path()), dest);
  return dest;
}

std::vector<VmInfo> discover(const std::string& type, const fs::path& root, const std::vector<fs::path>& allow = {}) {
  ManagerConfig config{type, "test-" + type, root.string(), {}};
  for (const auto& a : allow) config.allow.push_back(a.string());
  return ferry::inventory::make_plugin(config)->discover();
}

const VmInfo& vm_named(const std::vector<VmInfo>& vms, const std::string& name) {
  auto it = std::find_if(vms.begin(), vms.end(), [&](const VmInfo& vm) { return vm.name == name; });
  if (it == vms.end()) throw std::runtime_error("no VM named '" + name + "'");
  return *it;
}

std::vector<std::string> ids(const std::vector<VmInfo>& vms) {
  std::vector<std::string> out;
  for (const auto& vm : vms) out.push_back(vm.vm_id);
  return out;
}

void expect_disk(const DiskInfo& disk, const std::string& name, const fs::path& path, const std::string& format, uint64_t size) {
  EXPECT_EQ(disk.name, name);
  EXPECT_EQ(disk.path, path.string());
  EXPECT_EQ(disk.format, format) << disk.name;
  EXPECT_EQ(disk.size, size) << disk.name;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---------------------------------------------------------------------------------------------------
// The plugin table

TEST(Plugins, KnowsEveryManagerTypeWithItsSmsNameAndCapabilities) {
  EXPECT_EQ(ferry::inventory::plugin_types(), (std::vector<std::string>{"vmware", "hyperv", "azure", "libvirt", "ova", "local"}));
  auto type_of = [](const std::string& t) { return ferry::inventory::make_plugin({t, "m", "/", {}})->manager_type(); };
  EXPECT_EQ(type_of("vmware"), "VSPHERE");
  EXPECT_EQ(type_of("hyperv"), "HYPERV-MANAGER");
  EXPECT_EQ(type_of("azure"), "AZURE");
  EXPECT_EQ(type_of("libvirt"), "LIBVIRT");
  EXPECT_EQ(type_of("ova"), "OVA");
  EXPECT_EQ(type_of("local"), "LOCAL");
  EXPECT_EQ(ferry::inventory::make_plugin({"vmware", "m", "/", {}})->capabilities(),
            (std::vector<std::string>{"VSPHERE", "SNAPSHOT_BATCHING"}));
  EXPECT_EQ(ferry::inventory::make_plugin({"hyperv", "m", "/", {}})->capabilities(), (std::vector<std::string>{"HYPERV-MANAGER"}));
}

TEST(Plugins, UnknownTypeThrowsListingTheKnownTypes) {
  try {
    ferry::inventory::make_plugin({"xen", "m", "/", {}});
    FAIL() << "no exception";
  } catch (const ferry::Error& e) {
    EXPECT_EQ(e.kind(), ferry::ErrorKind::kInvalidArgument);
    EXPECT_TRUE(contains(e.what(), "'xen'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "vmware, hyperv, azure, libvirt, ova, local")) << e.what();
  }
}

TEST(Plugins, MissingDirectoryThrowsNotFoundNamingIt) {
  fx::TempDir dir;
  auto missing = dir.path() / "no-such-datastore";
  for (const std::string type : {"vmware", "hyperv", "azure", "libvirt", "ova"}) {
    try {
      discover(type, missing);
      FAIL() << type << ": no exception";
    } catch (const ferry::Error& e) {
      EXPECT_EQ(e.kind(), ferry::ErrorKind::kNotFound) << type;
      EXPECT_TRUE(contains(e.what(), missing.string())) << e.what();
    }
  }
}

TEST(Plugins, EmptyDirectoryHasNoVms) {
  fx::TempDir dir;
  for (const std::string type : {"vmware", "hyperv", "azure", "libvirt", "ova"}) EXPECT_TRUE(discover(type, dir.path()).empty()) << type;
}

// ---------------------------------------------------------------------------------------------------
// vmware

const char* kWebVmx = R"(.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
# Written by the test, in the shape vSphere writes them.

displayName = "web |22prod|22 01"
guestOS = "ubuntu-64"
numvcpus = "4"
memSize = "4096"
uuid.bios = "56 4d 12 34 56 78 90 ab-cd ef 12 34 56 78 90 AB"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web01.vmdk"
SATA0:1.Present = "TRUE"
sata0:1.fileName = "web01_1.vmdk"
scsi0:1.present = "FALSE"
scsi0:1.fileName = "detached.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "/vmfs/volumes/iso/ubuntu.iso"
sata0:0.present = "TRUE"
sata0:0.deviceType = "cdrom-raw"
sata0:0.fileName = "looks-like-a-disk.vmdk"
ethernet0.present = "TRUE"  # trailing comment
)";

TEST(Vmware, ReadsNameGuestCpusMemoryAndDisks) {
  fx::TempDir dir;
  auto vm_dir = dir.path() / "web01";
  write(vm_dir / "web01.vmx", kWebVmx);
  make_disk(vm_dir / "web01.vmdk", "vmdk-monolithicSparse", 2);
  make_disk(vm_dir / "web01_1.vmdk", "vmdk-streamOptimized", 3);

  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  const VmInfo& vm = vms[0];
  EXPECT_EQ(vm.error, "");
  EXPECT_EQ(vm.name, "web \"prod\" 01");
  EXPECT_EQ(vm.vm_id, "564d1234-5678-90ab-cdef-1234567890ab");
  EXPECT_EQ(vm.path, (vm_dir / "web01.vmx").string());
  EXPECT_EQ(vm.guest_os, "ubuntu-64");
  EXPECT_EQ(vm.cpus, 4);
  EXPECT_EQ(vm.memory_mib, 4096u);
  ASSERT_EQ(vm.disks.size(), 2u);  // detached disk, CD-ROMs and the ISO left out
  expect_disk(vm.disks[0], "scsi0:0", vm_dir / "web01.vmdk", "vmdk", 2 * kMiB);
  expect_disk(vm.disks[1], "sata0:1", vm_dir / "web01_1.vmdk", "vmdk", 3 * kMiB);
}

TEST(Vmware, ListsEveryVmSortedByIdWithIdsStableAcrossDiscoveries) {
  fx::TempDir dir;
  write(dir.path() / "web01/web01.vmx", kWebVmx);
  make_disk(dir.path() / "web01/web01.vmdk", "vmdk-monolithicSparse");
  make_disk(dir.path() / "web01/web01_1.vmdk", "vmdk-monolithicSparse");
  // No uuid.bios: the id is the path relative to the datastore.
  write(dir.path() / "db01/db01.vmx", "displayName = \"db01\"\nscsi0:0.fileName = \"db01.vmdk\"\n");
  make_disk(dir.path() / "db01/db01.vmdk", "vmdk-monolithicSparse");
  // Nested folders, and a disk in another folder of the datastore.
  write(dir.path() / "cluster/app/app.vmx",
        "displayName = \"app\"\nuuid.bios = \"00 11 22 33 44 55 66 77-88 99 aa bb cc dd ee ff\"\n"
        "nvme0:0.fileName = \"../shared/app-disk.vmdk\"\n");
  make_disk(dir.path() / "cluster/shared/app-disk.vmdk", "vmdk-monolithicSparse");

  auto first = discover("vmware", dir.path());
  auto second = discover("vmware", dir.path());
  EXPECT_EQ(ids(first),
            (std::vector<std::string>{"00112233-4455-6677-8899-aabbccddeeff", "564d1234-5678-90ab-cdef-1234567890ab", "db01/db01.vmx"}));
  EXPECT_EQ(ids(second), ids(first));
  for (const auto& vm : first) EXPECT_EQ(vm.error, "") << vm.name;
  EXPECT_EQ(vm_named(first, "app").disks.at(0).path, (dir.path() / "cluster/shared/app-disk.vmdk").string());
  EXPECT_EQ(vm_named(first, "db01").cpus, 1);  // numvcpus defaults to 1
}

TEST(Vmware, ClonesSharingABiosUuidGetTheirPathsAsIds) {
  fx::TempDir dir;
  for (const std::string name : {"a", "b"}) {
    write(dir.path() / name / (name + ".vmx"),
          "uuid.bios = \"56 4d 12 34 56 78 90 ab-cd ef 12 34 56 78 90 ab\"\nscsi0:0.fileName = \"d.vmdk\"\n");
    make_disk(dir.path() / name / "d.vmdk", "vmdk-monolithicSparse");
  }
  EXPECT_EQ(ids(discover("vmware", dir.path())), (std::vector<std::string>{"a/a.vmx", "b/b.vmx"}));
}

TEST(Vmware, LineWithoutEqualsSignSetsErrorOnThatVmOnly) {
  fx::TempDir dir;
  write(dir.path() / "web01/web01.vmx", kWebVmx);
  make_disk(dir.path() / "web01/web01.vmdk", "vmdk-monolithicSparse");
  make_disk(dir.path() / "web01/web01_1.vmdk", "vmdk-monolithicSparse");
  write(dir.path() / "bad/bad.vmx", "displayName = \"bad\"\n\nscsi0:0.fileName \"bad.vmdk\"\n");

  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "bad").error, "bad/bad.vmx line 3: expected 'key = \"value\"'");
  EXPECT_EQ(vm_named(vms, "bad").vm_id, "bad/bad.vmx");
  EXPECT_EQ(vm_named(vms, "web \"prod\" 01").error, "");
}

TEST(Vmware, UnterminatedQuoteIsReportedWithItsLine) {
  fx::TempDir dir;
  write(dir.path() / "q/q.vmx", "displayName = \"q\"\nguestOS = \"ubuntu-64\nscsi0:0.fileName = \"q.vmdk\"\n");
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "q/q.vmx line 2: unterminated quote in the value of 'guestOS'");
}

TEST(Vmware, VmxWithoutDisksIsReported) {
  fx::TempDir dir;
  write(dir.path() / "empty/empty.vmx", "displayName = \"empty\"\nide1:0.deviceType = \"cdrom-image\"\nide1:0.fileName = \"x.iso\"\n");
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_TRUE(contains(vms[0].error, "empty/empty.vmx: no disks")) << vms[0].error;
}

TEST(Vmware, MalformedNumbersAreReported) {
  fx::TempDir dir;
  write(dir.path() / "n/n.vmx", "numvcpus = \"two\"\nscsi0:0.fileName = \"n.vmdk\"\n");
  make_disk(dir.path() / "n/n.vmdk", "vmdk-monolithicSparse");
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "n/n.vmx: numvcpus 'two' is not a number of vCPUs");
}

TEST(Vmware, MissingDiskFileIsReportedAndTheOtherDisksStillListed) {
  fx::TempDir dir;
  write(dir.path() / "web01/web01.vmx", "displayName = \"web01\"\nscsi0:0.fileName = \"web01.vmdk\"\nscsi0:1.fileName = \"gone.vmdk\"\n");
  make_disk(dir.path() / "web01/web01.vmdk", "vmdk-monolithicSparse", 2);
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "disk 'scsi0:1' (web01/gone.vmdk): no such file");
  ASSERT_EQ(vms[0].disks.size(), 2u);
  EXPECT_EQ(vms[0].disks[0].size, 2 * kMiB);
  EXPECT_EQ(vms[0].disks[1].size, 0u);
}

TEST(Vmware, DiskQemuImgCannotReadIsReported) {
  fx::TempDir dir;
  write(dir.path() / "web01/web01.vmx", "scsi0:0.fileName = \"web01.vmdk\"\n");
  write(dir.path() / "web01/web01.vmdk", "this is not a VMDK\n");
  write(dir.path() / "ok/ok.vmx", "scsi0:0.fileName = \"ok.vmdk\"\n");
  make_disk(dir.path() / "ok/ok.vmdk", "vmdk-monolithicSparse");
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_TRUE(contains(vm_named(vms, "web01").error, "disk 'scsi0:0' (web01/web01.vmdk): ")) << vm_named(vms, "web01").error;
  EXPECT_EQ(vm_named(vms, "ok").error, "");
}

TEST(Vmware, DiskWithSnapshotDeltaIsReported) {
  fx::TempDir dir;
  auto base = make_disk(dir.path() / "s/s.vmdk", "vmdk-monolithicSparse");
  fx::run_checked({"qemu-img", "create", "-q", "-f", "vmdk", "-b", base.string(), "-F", "vmdk", (dir.path() / "s/s-000001.vmdk").string()});
  write(dir.path() / "s/s.vmx", "scsi0:0.fileName = \"s-000001.vmdk\"\n");
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_TRUE(contains(vms[0].error, "disk 'scsi0:0' (s/s-000001.vmdk): has a backing file")) << vms[0].error;
}

// ---------------------------------------------------------------------------------------------------
// hyperv

// Windows Server 2012 R2 writes the configuration in UTF-16 with a byte-order mark.
std::string utf16le(const std::string& ascii) {
  std::string out = "\xFF\xFE";
  for (char c : ascii) out += std::string{c, '\0'};
  return out;
}

std::string hyperv_xml(const std::string& name, const std::vector<std::string>& disks) {
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\n<configuration>\n";
  x += "  <_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\n    <controller0>\n";
  for (size_t i = 0; i < disks.size(); i++)
    x += "      <drive" + std::to_string(i) + ">\n        <pathname type=\"string\">C:\\Hyper-V\\" + name + "\\Virtual Hard Disks\\" +
         disks[i] + "</pathname>\n        <type type=\"string\">VHD</type>\n      </drive" + std::to_string(i) + ">\n";
  x += "      <drive9>\n        <pathname type=\"string\">C:\\iso\\setup.iso</pathname>\n        <type type=\"string\">ISO</type>\n      "
       "</drive9>\n";
  x += "    </controller0>\n  </_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\n";
  x += "  <properties>\n    <name type=\"string\">" + name + "</name>\n  </properties>\n";
  x += "  <settings>\n    <processors>\n      <count type=\"integer\">2</count>\n    </processors>\n";
  x += "    <memory>\n      <bank>\n        <dynamic_memory_enabled type=\"bool\">False</dynamic_memory_enabled>\n";
  x += "        <size type=\"integer\">3072</size>\n      </bank>\n    </memory>\n  </settings>\n</configuration>\n";
  return x;
}

TEST(HyperV, ReadsXmlConfigurationOfOlderHyperV) {
  fx::TempDir dir;
  auto vm_dir = dir.path() / "WEB01 export";
  write(vm_dir / "Virtual Machines/9A8B7C6D-1234-4321-ABCD-0123456789AB.xml",
        utf16le(hyperv_xml("web01", {"web01.vhdx", "web01-data.vhd"})));
  make_disk(vm_dir / "Virtual Hard Disks/web01.vhdx", "vhdx", 3);
  make_disk(vm_dir / "Virtual Hard Disks/web01-data.vhd", "vhd-fixed", 2);

  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  const VmInfo& vm = vms[0];
  EXPECT_EQ(vm.error, "");
  EXPECT_EQ(vm.name, "web01");
  EXPECT_EQ(vm.vm_id, "9a8b7c6d-1234-4321-abcd-0123456789ab");
  EXPECT_EQ(vm.path, (vm_dir / "Virtual Machines/9A8B7C6D-1234-4321-ABCD-0123456789AB.xml").string());
  EXPECT_EQ(vm.cpus, 2);
  EXPECT_EQ(vm.memory_mib, 3072u);
  ASSERT_EQ(vm.disks.size(), 2u);  // in the configuration's order, not the file names'
  expect_disk(vm.disks[0], "web01.vhdx", vm_dir / "Virtual Hard Disks/web01.vhdx", "vhdx", 3 * kMiB);
  expect_disk(vm.disks[1], "web01-data.vhd", vm_dir / "Virtual Hard Disks/web01-data.vhd", "vhd", 2 * kMiB);
}

TEST(HyperV, WithoutXmlUsesDirectoryNameAndVmcxGuid) {
  fx::TempDir dir;
  auto vm_dir = dir.path() / "app02";
  write(vm_dir / "Virtual Machines/0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0.vmcx", std::string("\x00\x01" "binary" "\xff", 9));
  write(vm_dir / "Virtual Machines/0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0.vmrs", std::string("\x00state", 6));
  make_disk(vm_dir / "Virtual Hard Disks/app02.vhdx", "vhdx");
  make_disk(vm_dir / "Virtual Hard Disks/app02-logs.vhdx", "vhdx");
  // Not even a configuration: the directory name is all there is.
  make_disk(dir.path() / "app03/Virtual Hard Disks/app03.vhdx", "vhdx");

  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  const VmInfo& app02 = vm_named(vms, "app02");
  EXPECT_EQ(app02.error, "");
  EXPECT_EQ(app02.vm_id, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  ASSERT_EQ(app02.disks.size(), 2u);
  EXPECT_EQ(app02.disks[0].name, "app02-logs.vhdx");
  EXPECT_EQ(app02.disks[1].name, "app02.vhdx");
  const VmInfo& app03 = vm_named(vms, "app03");
  EXPECT_EQ(app03.error, "");
  EXPECT_EQ(app03.vm_id, "app03");
  ASSERT_EQ(app03.disks.size(), 1u);
  EXPECT_EQ(app03.disks[0].size, 2 * kMiB);
  EXPECT_EQ(ids(discover("hyperv", dir.path())), ids(vms));
}

TEST(HyperV, MalformedXmlIsReportedAndTheDisksStillListed) {
  fx::TempDir dir;
  write(dir.path() / "bad/Virtual Machines/11111111-2222-3333-4444-555555555555.xml", "<configuration><properties><name>bad</properties>");
  make_disk(dir.path() / "bad/Virtual Hard Disks/bad.vhdx", "vhdx");
  make_disk(dir.path() / "good/Virtual Hard Disks/good.vhdx", "vhdx");
  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  const VmInfo& bad = vm_named(vms, "bad");
  EXPECT_TRUE(contains(bad.error, "bad/Virtual Machines/11111111-2222-3333-4444-555555555555.xml: not valid XML: ")) << bad.error;
  EXPECT_TRUE(contains(bad.error, "offset")) << bad.error;
  EXPECT_EQ(bad.disks.size(), 1u);
  EXPECT_EQ(vm_named(vms, "good").error, "");
}

TEST(HyperV, ConfigurationNamingADiskMissingFromTheExportIsReported) {
  fx::TempDir dir;
  write(dir.path() / "v/Virtual Machines/11111111-2222-3333-4444-555555555555.xml", hyperv_xml("v", {"v.vhdx", "lost.vhdx"}));
  make_disk(dir.path() / "v/Virtual Hard Disks/v.vhdx", "vhdx");
  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_TRUE(contains(vms[0].error, "names disk 'lost.vhdx', which is not in 'v/Virtual Hard Disks'")) << vms[0].error;
}

TEST(HyperV, CheckpointsAndDirectoriesWithoutDisksAreReported) {
  fx::TempDir dir;
  make_disk(dir.path() / "cp/Virtual Hard Disks/cp.vhdx", "vhdx");
  write(dir.path() / "cp/Virtual Hard Disks/cp_0A1B2C3D.avhdx", "delta");
  fs::create_directories(dir.path() / "nodisk/Virtual Hard Disks");
  fs::create_directories(dir.path() / "stray/notes");
  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_TRUE(contains(vm_named(vms, "cp").error, "checkpoints")) << vm_named(vms, "cp").error;
  EXPECT_EQ(vm_named(vms, "nodisk").error, "nodisk/Virtual Hard Disks: no VHD or VHDX disk");
  EXPECT_EQ(vm_named(vms, "stray").error, "stray: no 'Virtual Hard Disks' directory; not a Hyper-V export");
}

// ---------------------------------------------------------------------------------------------------
// azure

TEST(Azure, EachVhdAndEachDirectoryOfVhdsIsOneVmWithTheOsDiskFirst) {
  fx::TempDir dir;
  make_disk(dir.path() / "web01.vhd", "vhd-fixed", 2);
  make_disk(dir.path() / "db01/db01-data.vhd", "vhd-fixed", 3);
  make_disk(dir.path() / "db01/db01-os.vhd", "vhd-fixed", 2);
  make_disk(dir.path() / "db01/a-logs.vhd", "vhd-fixed", 2);
  make_disk(dir.path() / "api/api_OsDisk_1_3f2a.vhd", "vhd-fixed", 2);
  make_disk(dir.path() / "api/api_DataDisk_0.vhd", "vhd-fixed", 2);
  fs::create_directories(dir.path() / "scratch");  // holds no VHD: not a VM
  write(dir.path() / "README.txt", "downloaded from Azure\n");

  auto vms = discover("azure", dir.path());
  EXPECT_EQ(ids(vms), (std::vector<std::string>{"api", "db01", "web01.vhd"}));
  for (const auto& vm : vms) EXPECT_EQ(vm.error, "") << vm.name;
  const VmInfo& web = vm_named(vms, "web01");
  EXPECT_EQ(web.path, (dir.path() / "web01.vhd").string());
  ASSERT_EQ(web.disks.size(), 1u);
  expect_disk(web.disks[0], "web01.vhd", dir.path() / "web01.vhd", "vhd", 2 * kMiB);
  const VmInfo& db = vm_named(vms, "db01");
  ASSERT_EQ(db.disks.size(), 3u);
  EXPECT_EQ(db.disks[0].name, "db01-os.vhd");
  EXPECT_EQ(db.disks[1].name, "a-logs.vhd");
  expect_disk(db.disks[2], "db01-data.vhd", dir.path() / "db01/db01-data.vhd", "vhd", 3 * kMiB);
  EXPECT_EQ(vm_named(vms, "api").disks.at(0).name, "api_OsDisk_1_3f2a.vhd");
}

TEST(Azure, DynamicVhdAndNonVhdAreReported) {
  fx::TempDir dir;
  make_disk(dir.path() / "old.vhd", "vhd-dynamic");
  write(dir.path() / "junk.vhd", "not a disk at all");
  make_disk(dir.path() / "ok.vhd", "vhd-fixed");
  auto vms = discover("azure", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_EQ(vm_named(vms, "old").error, "disk 'old.vhd' (old.vhd) is a dynamic VHD; Azure uses fixed VHDs");
  EXPECT_TRUE(contains(vm_named(vms, "junk").error, "disk 'junk.vhd' (junk.vhd): ")) << vm_named(vms, "junk").error;
  EXPECT_EQ(vm_named(vms, "ok").error, "");
}

// ---------------------------------------------------------------------------------------------------
// libvirt

std::string domain_xml(const std::string& name, const std::string& memory, const std::string& disks, const std::string& extra = "") {
  return "<domain type='kvm'>\n  <name>" + name + "</name>\n" + extra + "  " + memory +
         "\n  <vcpu placement='static'>2</vcpu>\n"
         "  <os>\n    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n"
         "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n" +
         disks + "  </devices>\n</domain>\n";
}

std::string file_disk(const fs::path& file, const std::string& format, const std::string& target) {
  return "    <disk type='file' device='disk'>\n      <driver name='qemu' type='" + format + "'/>\n      <source file='" + file.string() +
         "'/>\n      <target dev='" + target + "' bus='virtio'/>\n    </disk>\n";
}

TEST(Libvirt, ReadsNameUuidCpusMemoryOsAndDisks) {
  fx::TempDir dir;
  auto images = dir.path() / "images";
  make_disk(images / "db01.qcow2", "qcow2", 3);
  make_disk(images / "db01-data.raw", "raw", 2);
  std::string disks = file_disk(images / "db01.qcow2", "qcow2", "vda") +
                      "    <disk type='block' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source dev='" +
                      (images / "db01-data.raw").string() + "'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n" +
                      "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n"
                      "      <target dev='sda' bus='sata'/>\n      <readonly/>\n    </disk>\n";
  std::string extra =
      "  <uuid>4DEA22B3-1D52-D8F3-2516-782E98AB3FA0</uuid>\n  <metadata>\n"
      "    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n"
      "      <libosinfo:os id='http://debian.org/debian/12'/>\n    </libosinfo:libosinfo>\n  </metadata>\n";
  write(dir.path() / "libvirt/db01.xml", domain_xml("db01", "<memory unit='GiB'>8</memory>", disks, extra));

  auto vms = discover("libvirt", dir.path() / "libvirt", {images});
  ASSERT_EQ(vms.size(), 1u);
  const VmInfo& vm = vms[0];
  EXPECT_EQ(vm.error, "");
  EXPECT_EQ(vm.name, "db01");
  EXPECT_EQ(vm.vm_id, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
  EXPECT_EQ(vm.path, (dir.path() / "libvirt/db01.xml").string());
  EXPECT_EQ(vm.guest_os, "http://debian.org/debian/12");
  EXPECT_EQ(vm.cpus, 2);
  EXPECT_EQ(vm.memory_mib, 8192u);
  ASSERT_EQ(vm.disks.size(), 2u);
  expect_disk(vm.disks[0], "vda", images / "db01.qcow2", "qcow2", 3 * kMiB);
  expect_disk(vm.disks[1], "vdb", images / "db01-data.raw", "raw", 2 * kMiB);
}

TEST(Libvirt, ConvertsMemoryUnitsAndNamesTheOsByTypeAndArch) {
  fx::TempDir dir;
  auto disk = make_disk(dir.path() / "images/shared.qcow2", "qcow2");
  auto xml = [&](const std::string& name, const std::string& memory) {
    write(dir.path() / "qemu" / (name + ".xml"), domain_xml(name, memory, file_disk(disk, "qcow2", "vda")));
  };
  xml("kib", "<memory>2097152</memory>");
  xml("mib", "<memory unit='MiB'>1536</memory>");
  xml("gib", "<memory unit='G'>2</memory>");
  xml("kb", "<memory unit='KB'>2097152</memory>");
  auto vms = discover("libvirt", dir.path() / "qemu", {dir.path() / "images"});
  ASSERT_EQ(vms.size(), 4u);
  EXPECT_EQ(vm_named(vms, "kib").memory_mib, 2048u);
  EXPECT_EQ(vm_named(vms, "mib").memory_mib, 1536u);
  EXPECT_EQ(vm_named(vms, "gib").memory_mib, 2048u);
  EXPECT_EQ(vm_named(vms, "kb").memory_mib, 2000u);
  EXPECT_EQ(vm_named(vms, "kib").guest_os, "hvm/x86_64");
  EXPECT_EQ(vm_named(vms, "kib").vm_id, "kib.xml");  // no <uuid>: the file's path
}

TEST(Libvirt, XmlThatDoesNotParseIsReportedWithPugixmlsReasonAndOffset) {
  fx::TempDir dir;
  auto disk = make_disk(dir.path() / "images/ok.qcow2", "qcow2");
  write(dir.path() / "qemu/ok.xml", domain_xml("ok", "<memory>1048576</memory>", file_disk(disk, "qcow2", "vda")));
  write(dir.path() / "qemu/broken.xml", "<domain type='kvm'>\n  <name>broken</name>\n  <vcpu>2</cpu>\n</domain>\n");
  auto vms = discover("libvirt", dir.path() / "qemu", {dir.path() / "images"});
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "broken").error, "broken.xml: not valid XML: Start-end tags mismatch at line 3 (offset 53)");
  EXPECT_EQ(vm_named(vms, "ok").error, "");
}

TEST(Libvirt, DomainWithoutNameIsReported) {
  fx::TempDir dir;
  auto disk = make_disk(dir.path() / "images/x.qcow2", "qcow2");
  write(dir.path() / "qemu/nameless.xml", domain_xml("", "<memory>1048576</memory>", file_disk(disk, "qcow2", "vda")));
  auto vms = discover("libvirt", dir.path() / "qemu", {dir.path() / "images"});
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "nameless.xml: the domain has no <name>");
  EXPECT_EQ(vms[0].name, "nameless");
}

TEST(Libvirt, NetworkDisksMissingFilesAndBackingChainsAreReported) {
  fx::TempDir dir;
  auto base = make_disk(dir.path() / "images/base.qcow2", "qcow2");
  auto top = dir.path() / "images/top.qcow2";
  fx::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-b", base.string(), "-F", "qcow2", top.string()});
  write(dir.path() / "qemu/rbd.xml", domain_xml("rbd", "<memory>1048576</memory>",
                                                "    <disk type='network' device='disk'>\n      <source protocol='rbd' name='pool/img'/>\n"
                                                "      <target dev='vda'/>\n    </disk>\n"));
  write(dir.path() / "qemu/gone.xml",
        domain_xml("gone", "<memory>1048576</memory>", file_disk(dir.path() / "images/gone.qcow2", "qcow2", "vda")));
  write(dir.path() / "qemu/chain.xml", domain_xml("chain", "<memory>1048576</memory>", file_disk(top, "qcow2", "vda")));
  auto vms = discover("libvirt", dir.path() / "qemu", {dir.path() / "images"});
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_EQ(vm_named(vms, "rbd").error, "rbd.xml: disk 'vda' is a network disk (rbd); only file and block disks can be replicated");
  EXPECT_EQ(vm_named(vms, "gone").error, "disk 'vda' (" + (dir.path() / "images/gone.qcow2").string() + "): no such file");
  EXPECT_TRUE(contains(vm_named(vms, "chain").error, "has a backing file ('" + base.string() + "')")) << vm_named(vms, "chain").error;
  EXPECT_EQ(vm_named(vms, "chain").disks.at(0).size, 2 * kMiB);
}

// ---------------------------------------------------------------------------------------------------
// ova

struct OvfDisk {
  std::string id, href;
};

std::string ovf_xml(const std::string& name, const std::string& memory_units, const std::string& memory,
                    const std::vector<OvfDisk>& disks) {
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  x += "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"";
  x += " xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\"";
  x += " xmlns:vmw=\"http://www.vmware.com/schema/ovf\">\n  <References>\n";
  for (size_t i = 0; i < disks.size(); i++)
    x += "    <File ovf:href=\"" + disks[i].href + "\" ovf:id=\"file" + std::to_string(i + 1) + "\"/>\n";
  x += "  </References>\n  <DiskSection>\n    <Info>Virtual disk information</Info>\n";
  for (size_t i = 0; i < disks.size(); i++)
    x += "    <Disk ovf:capacity=\"2\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"" + disks[i].id + "\" ovf:fileRef=\"file" +
         std::to_string(i + 1) + "\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n";
  x += "  </DiskSection>\n  <VirtualSystem ovf:id=\"vm\">\n    <Info>A virtual machine</Info>\n    <Name>" + name + "</Name>\n";
  x += "    <OperatingSystemSection ovf:id=\"94\" vmw:osType=\"ubuntu64Guest\">\n      <Info>OS</Info>\n";
  x += "      <Description>Ubuntu Linux (64-bit)</Description>\n    </OperatingSystemSection>\n";
  x += "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n";
  x += "      <Item>\n        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n        <rasd:InstanceID>1</rasd:InstanceID>\n";
  x += "        <rasd:ResourceType>3</rasd:ResourceType>\n        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>\n      </Item>\n";
  x += "      <Item>\n        <rasd:AllocationUnits>" + memory_units +
       "</rasd:AllocationUnits>\n        <rasd:InstanceID>2</rasd:InstanceID>\n";
  x += "        <rasd:ResourceType>4</rasd:ResourceType>\n        <rasd:VirtualQuantity>" + memory +
       "</rasd:VirtualQuantity>\n      </Item>\n";
  x += "    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n";
  return x;
}

// Packs `members` of `staging` (OVF first, as an OVA must be) into `ova`.
void pack_ova(const fs::path& ova, const fs::path& staging, const std::vector<std::string>& members) {
  fs::create_directories(ova.parent_path());
  std::vector<std::string> argv = {"tar", "--format=ustar", "-cf", ova.string(), "-C", staging.string()};
  argv.insert(argv.end(), members.begin(), members.end());
  fx::run_checked(argv);
}

TEST(Ova, ReadsAPackageWithSeveralDisksInPlace) {
  fx::TempDir dir, staging;
  write(staging.path() / "app.ovf", ovf_xml("app01", "byte * 2^30", "2", {{"vmdisk1", "app-disk1.vmdk"}, {"vmdisk2", "app-disk2.vmdk"}}));
  make_disk(staging.path() / "app-disk1.vmdk", "vmdk-streamOptimized", 2);
  make_disk(staging.path() / "app-disk2.vmdk", "vmdk-streamOptimized", 3);
  auto ova = dir.path() / "exports/app.ova";
  pack_ova(ova, staging.path(), {"app.ovf", "app-disk1.vmdk", "app-disk2.vmdk"});

  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  const VmInfo& vm = vms[0];
  EXPECT_EQ(vm.error, "");
  EXPECT_EQ(vm.name, "app01");
  EXPECT_EQ(vm.vm_id, "exports/app.ova");
  EXPECT_EQ(vm.path, ova.string());
  EXPECT_EQ(vm.guest_os, "ubuntu64Guest");
  EXPECT_EQ(vm.cpus, 4);
  EXPECT_EQ(vm.memory_mib, 2048u);
  ASSERT_EQ(vm.disks.size(), 2u);
  expect_disk(vm.disks[0], "vmdisk1", ova.string() + "#app-disk1.vmdk", "vmdk", 2 * kMiB);
  expect_disk(vm.disks[1], "vmdisk2", ova.string() + "#app-disk2.vmdk", "vmdk", 3 * kMiB);
}

TEST(Ova, ReadsTheFixturesVmwareStylePackage) {
  fx::TempDir dir, scratch;
  auto raw = scratch.path() / "web.raw";
  fx::make_raw_disk(raw, 4 * kMiB, 3);
  auto ova = fx::make_disk(raw, "ova", dir.path());
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "");
  EXPECT_EQ(vms[0].name, "web-ova");
  EXPECT_EQ(vms[0].guest_os, "Other Linux (64-bit)");
  EXPECT_EQ(vms[0].cpus, 2);
  EXPECT_EQ(vms[0].memory_mib, 1024u);
  ASSERT_EQ(vms[0].disks.size(), 1u);
  expect_disk(vms[0].disks[0], "vmdisk1", ova.string() + "#web-ova-disk1.vmdk", "vmdk", 4 * kMiB);
}

TEST(Ova, ReadsAnUnpackedOvfWithItsDisksBeside) {
  fx::TempDir dir;
  write(dir.path() / "db/db.ovf", ovf_xml("db01", "MegaBytes", "1536", {{"disk-0", "db-disk1.vmdk"}}));
  make_disk(dir.path() / "db/db-disk1.vmdk", "vmdk-monolithicSparse", 2);
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "");
  EXPECT_EQ(vms[0].name, "db01");
  EXPECT_EQ(vms[0].vm_id, "db/db.ovf");
  EXPECT_EQ(vms[0].memory_mib, 1536u);
  ASSERT_EQ(vms[0].disks.size(), 1u);
  expect_disk(vms[0].disks[0], "disk-0", dir.path() / "db/db-disk1.vmdk", "vmdk", 2 * kMiB);
}

TEST(Ova, ReadsMemoryInEveryAllocationUnitsForm) {
  fx::TempDir dir;
  make_disk(dir.path() / "d.vmdk", "vmdk-monolithicSparse");
  const std::vector<std::pair<std::string, std::string>> forms = {
      {"byte * 2^20", "512"},     {"byte*2^30", "1"}, {"byte * 1024 * 1024", "768"},
      {"byte * 10^6", "1048576"}, {"GigaBytes", "3"}, {"", "256"}};
  for (size_t i = 0; i < forms.size(); i++)
    write(dir.path() / ("m" + std::to_string(i) + ".ovf"),
          ovf_xml("m" + std::to_string(i), forms[i].first, forms[i].second, {{"d", "d.vmdk"}}));
  write(dir.path() / "odd.ovf", ovf_xml("odd", "furlongs", "3", {{"d", "d.vmdk"}}));
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), forms.size() + 1);
  const std::vector<uint64_t> expected = {512, 1024, 768, 1000000, 3072, 256};
  for (size_t i = 0; i < forms.size(); i++) {
    EXPECT_EQ(vm_named(vms, "m" + std::to_string(i)).memory_mib, expected[i]) << forms[i].first;
    EXPECT_EQ(vm_named(vms, "m" + std::to_string(i)).error, "");
  }
  EXPECT_EQ(vm_named(vms, "odd").error, "odd.ovf: memory item has unknown AllocationUnits 'furlongs'");
}

TEST(Ova, OvfThatIsNotXmlIsReported) {
  fx::TempDir dir, staging;
  write(dir.path() / "broken.ovf", "<Envelope><References></Envelope>");
  write(staging.path() / "pkg.ovf", "this is not XML");
  make_disk(staging.path() / "pkg-disk1.vmdk", "vmdk-streamOptimized");
  pack_ova(dir.path() / "pkg.ova", staging.path(), {"pkg.ovf", "pkg-disk1.vmdk"});
  write(dir.path() / "ok.ovf", ovf_xml("ok", "byte * 2^20", "512", {{"d", "ok.vmdk"}}));
  make_disk(dir.path() / "ok.vmdk", "vmdk-monolithicSparse");
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_TRUE(contains(vm_named(vms, "broken").error, "broken.ovf: not valid XML: ")) << vm_named(vms, "broken").error;
  EXPECT_TRUE(contains(vm_named(vms, "pkg").error, "pkg.ova#pkg.ovf: not valid XML: ")) << vm_named(vms, "pkg").error;
  EXPECT_EQ(vm_named(vms, "ok").error, "");
}

TEST(Ova, DiskNotInThePackageIsReported) {
  fx::TempDir dir, staging;
  write(staging.path() / "two.ovf", ovf_xml("two", "byte * 2^20", "512", {{"vmdisk1", "two-disk1.vmdk"}, {"vmdisk2", "two-disk2.vmdk"}}));
  make_disk(staging.path() / "two-disk1.vmdk", "vmdk-streamOptimized");
  pack_ova(dir.path() / "two.ova", staging.path(), {"two.ovf", "two-disk1.vmdk"});
  write(dir.path() / "not-a-tar.ova", "definitely not a tar archive, but long enough to look at..." + std::string(1024, 'x'));
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  const VmInfo& two = vm_named(vms, "two");
  EXPECT_EQ(two.error, "two.ova: disk 'vmdisk2' refers to 'two-disk2.vmdk', which is not in the package");
  ASSERT_EQ(two.disks.size(), 1u);
  EXPECT_EQ(two.disks[0].size, 2 * kMiB);
  EXPECT_TRUE(contains(vm_named(vms, "not-a-tar").error, "not a tar archive")) << vm_named(vms, "not-a-tar").error;
}

// ---------------------------------------------------------------------------------------------------
// local

TEST(Local, OffersTheConfiguredDisksAsOneVmNamedAfterTheHost) {
  fx::TempDir dir;
  auto system = make_disk(dir.path() / "system.qcow2", "qcow2", 3);
  auto data = make_disk(dir.path() / "data.img", "raw", 2);
  auto vms = ferry::inventory::make_plugin({"local", "this-host", "", {system.string(), data.string()}})->discover();
  ASSERT_EQ(vms.size(), 1u);
  const VmInfo& vm = vms[0];
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(vm.name, host);
  EXPECT_FALSE(vm.vm_id.empty());
  EXPECT_EQ(vm.error, "");
  EXPECT_GE(vm.cpus, 1);
  EXPECT_GT(vm.memory_mib, 0u);
  ASSERT_EQ(vm.disks.size(), 2u);
  expect_disk(vm.disks[0], "system.qcow2", system, "qcow2", 3 * kMiB);
  expect_disk(vm.disks[1], "data.img", data, "raw", 2 * kMiB);
  EXPECT_EQ(ids(ferry::inventory::make_plugin({"local", "this-host", "", {system.string()}})->discover()), ids(vms));
}

// A loop device over a file, detached at destruction; empty path() when loop devices are not available.
class LoopDevice {
 public:
  explicit LoopDevice(const fs::path& file) {
    std::string out;
    try {
      if (fx::run({"losetup", "--find", "--show", "--read-only", file.string()}, &out) == 0) path_ = out.substr(0, out.find('\n'));
    } catch (const std::runtime_error&) {  // no losetup
    }
  }
  ~LoopDevice() {
    std::string out;
    if (!path_.empty()) fx::run({"losetup", "--detach", path_}, &out);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Local, BlockDeviceSizeComesFromTheDevice) {
  fx::TempDir dir;
  auto backing = make_disk(dir.path() / "backing.raw", "raw", 3);
  LoopDevice loop(backing);
  if (loop.path().empty()) GTEST_SKIP() << "no loop device (needs root and /dev/loop*)";
  auto vms = ferry::inventory::make_plugin({"local", "h", "", {loop.path()}})->discover();
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "");
  expect_disk(vms[0].disks.at(0), fs::path(loop.path()).filename().string(), loop.path(), "raw", 3 * kMiB);
}

TEST(Local, MissingDeviceIsReportedAndNoDevicesThrows) {
  fx::TempDir dir;
  auto vms = ferry::inventory::make_plugin({"local", "h", "", {(dir.path() / "sdz").string()}})->discover();
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "disk 'sdz' (" + (dir.path() / "sdz").string() + "): no such file");
  EXPECT_THROW(ferry::inventory::make_plugin({"local", "h", "", {}})->discover(), ferry::Error);
}

// ---------------------------------------------------------------------------------------------------
// Confinement: a manager's VMs read only below its root, its "allow" entries (local: its devices). Each test
// puts a VM that reaches out next to one that does not: the first is refused with a reason, the second imports.

// What an attacker wants from the host: 64 KiB of text.
fs::path host_secret(const fs::path& file) {
  std::string text;
  while (text.size() < 64 * 1024) text += "host secret: root's key material\n";
  write(file, text.substr(0, 64 * 1024));
  return file;
}

// A monolithicFlat-style VMDK descriptor whose extents are `extents` (128 sectors each). (Not a blank line right
// before an extent line: qemu's sscanf would read that extent twice.)
std::string flat_descriptor(const std::vector<std::string>& extents) {
  std::string d = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\n";
  for (const auto& e : extents) d += "RW 128 FLAT \"" + e + "\" 0\n";
  return d + "\n# The Disk Data Base\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n";
}

// A datastore VM at root/NAME/NAME.vmx whose one disk is root/NAME/NAME.vmdk, written as `descriptor`.
void vmware_vm(const fs::path& root, const std::string& name, const std::string& descriptor) {
  write(root / name / (name + ".vmx"), "displayName = \"" + name + "\"\nscsi0:0.fileName = \"" + name + ".vmdk\"\n");
  write(root / name / (name + ".vmdk"), descriptor);
}

// The good neighbour every test keeps in the same root: a monolithicSparse disk of 2 MiB.
void good_vmware_vm(const fs::path& root) {
  write(root / "good/good.vmx", "displayName = \"good\"\nscsi0:0.fileName = \"good.vmdk\"\n");
  make_disk(root / "good/good.vmdk", "vmdk-monolithicSparse", 2);
}

void expect_good(const std::vector<VmInfo>& vms) {
  const VmInfo& good = vm_named(vms, "good");
  EXPECT_EQ(good.error, "");
  ASSERT_EQ(good.disks.size(), 1u);
  EXPECT_EQ(good.disks[0].size, 2 * kMiB);
}

std::string outside(const fs::path& root, const std::string& type) {
  return ", outside the root " + root.string() + " of " + type + " manager 'test-" + type +
         "' (add it to the manager's \"allow\" list if that is intended)";
}

TEST(Confinement, VmdkExtentClimbingOutOfTheDatastoreIsRefused) {
  fx::TempDir dir;
  auto root = dir.path() / "vmfs";
  std::string climb = fs::path("/etc/passwd").lexically_relative(root / "web01").string();  // "../../../../etc/passwd"
  vmware_vm(root, "web01", flat_descriptor({climb}));
  good_vmware_vm(root);
  auto vms = discover("vmware", root);
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "web01").error,
            "disk 'scsi0:0' (web01/web01.vmdk): extent '" + climb + "' resolves to /etc/passwd" + outside(root, "vmware"));
  expect_good(vms);
}

TEST(Confinement, AbsoluteVmdkExtentOutsideIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  vmware_vm(dir.path(), "web01", flat_descriptor({secret.string()}));
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "web01").error, "disk 'scsi0:0' (web01/web01.vmdk): extent '" + secret.string() + "' resolves to " +
                                              fs::canonical(secret).string() + outside(dir.path(), "vmware"));
  expect_good(vms);
}

// qemu reads extent lines with sscanf, whose conversions skip new lines: one extent may span several lines, and a
// descriptor ends at its first NUL byte. The check reads it the same way (and what qemu-img reports, besides).
TEST(Confinement, VmdkExtentSpreadOverLinesIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  vmware_vm(dir.path(), "web01",
            "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 128\n  FLAT\n\"" + secret.string() + "\" 0\n");
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_TRUE(contains(vm_named(vms, "web01").error, "extent '" + secret.string() + "' resolves to")) << vm_named(vms, "web01").error;
  expect_good(vms);
}

TEST(Confinement, VmdkExtentThroughALinkOutsideIsRefusedUnlessAllowed) {
  fx::TempDir dir, volume;
  auto flat = host_secret(volume.path() / "web01-flat.vmdk");
  vmware_vm(dir.path(), "web01", flat_descriptor({"web01-flat.vmdk"}));
  fs::create_symlink(flat, dir.path() / "web01/web01-flat.vmdk");
  good_vmware_vm(dir.path());

  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "web01").error, "disk 'scsi0:0' (web01/web01.vmdk): extent 'web01-flat.vmdk' resolves to " +
                                              fs::canonical(flat).string() + outside(dir.path(), "vmware"));
  expect_good(vms);

  // The operator vouches for the other volume: the same link is followed.
  vms = discover("vmware", dir.path(), {volume.path()});
  EXPECT_EQ(vm_named(vms, "web01").error, "");
  EXPECT_EQ(vm_named(vms, "web01").disks.at(0).size, 128u * 512);
  expect_good(vms);
}

// A sparse VMDK whose header says capacity 0 makes qemu take its extents from the embedded descriptor.
TEST(Confinement, ExtentInTheDescriptorEmbeddedInASparseVmdkIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  auto vmdk = make_disk(dir.path() / "web01/web01.vmdk", "vmdk-monolithicSparse", 2);
  write(dir.path() / "web01/web01.vmx", "displayName = \"web01\"\nscsi0:0.fileName = \"web01.vmdk\"\n");
  {
    std::fstream f(vmdk, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.write(std::string(8, '\0').data(), 8);  // capacity 0
    std::string descriptor = flat_descriptor({secret.string()});
    f.seekp(512);  // where qemu-img put the embedded descriptor (descriptor offset 1 sector)
    f.write(descriptor.c_str(), static_cast<std::streamsize>(descriptor.size() + 1));
    ASSERT_TRUE(f.good());
  }
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_TRUE(contains(vm_named(vms, "web01").error, "disk 'scsi0:0' (web01/web01.vmdk): extent '" + secret.string() + "' resolves to"))
      << vm_named(vms, "web01").error;
  expect_good(vms);
}

TEST(Confinement, VmxDiskOutsideTheDatastoreIsRefused) {
  fx::TempDir dir, elsewhere;
  auto foreign = make_disk(elsewhere.path() / "other.vmdk", "vmdk-monolithicSparse", 2);
  std::string climb = foreign.lexically_relative(dir.path() / "rel").string();
  write(dir.path() / "abs/abs.vmx", "displayName = \"abs\"\nscsi0:0.fileName = \"" + foreign.string() + "\"\n");
  write(dir.path() / "rel/rel.vmx", "displayName = \"rel\"\nscsi0:0.fileName = \"" + climb + "\"\n");
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  std::string refused = "disk 'scsi0:0' (" + foreign.string() + "): resolves to " + fs::canonical(foreign).string() + outside(dir.path(), "vmware");
  EXPECT_EQ(vm_named(vms, "abs").error, refused);
  EXPECT_EQ(vm_named(vms, "rel").error, refused);
  expect_good(vms);
}

TEST(Confinement, VmxThatIsALinkOutsideIsNotRead) {
  fx::TempDir dir, elsewhere;
  write(elsewhere.path() / "stolen.vmx", "displayName = \"from elsewhere\"\nscsi0:0.fileName = \"x.vmdk\"\n");
  fs::create_directories(dir.path() / "link");
  fs::create_symlink(elsewhere.path() / "stolen.vmx", dir.path() / "link/link.vmx");
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  const VmInfo& link = vm_named(vms, "link");  // named after the file: its content was not read
  EXPECT_EQ(link.error, "link/link.vmx: resolves to " + fs::canonical(elsewhere.path() / "stolen.vmx").string() + outside(dir.path(), "vmware"));
  expect_good(vms);
}

TEST(Confinement, DatastoreRootThatIsALinkWorks) {
  fx::TempDir dir;
  auto real = dir.path() / "volumes/datastore1";
  good_vmware_vm(real);
  write(real / "web01/web01.vmx", "displayName = \"web01\"\nscsi0:0.fileName = \"web01.vmdk\"\n");
  make_disk(real / "web01/web01-flat.vmdk", "raw", 1);
  write(real / "web01/web01.vmdk", flat_descriptor({"web01-flat.vmdk"}));
  fs::create_symlink(real, dir.path() / "datastore");
  auto vms = discover("vmware", dir.path() / "datastore");
  ASSERT_EQ(vms.size(), 2u);
  expect_good(vms);
  EXPECT_EQ(vm_named(vms, "web01").error, "");
  EXPECT_EQ(vm_named(vms, "web01").disks.at(0).path, (dir.path() / "datastore/web01/web01.vmdk").string());
}

TEST(Confinement, LinkLoopAndFifoAreRefusedWithoutHanging) {
  fx::TempDir dir;
  fs::create_directories(dir.path() / "loop");
  fs::create_symlink("b", dir.path() / "loop/a");
  fs::create_symlink("a", dir.path() / "loop/b");
  vmware_vm(dir.path(), "loop", flat_descriptor({"a"}));
  write(dir.path() / "fifo/fifo.vmx", "displayName = \"fifo\"\nscsi0:0.fileName = \"fifo.vmdk\"\n");
  ASSERT_EQ(::mkfifo((dir.path() / "fifo/fifo.vmdk").c_str(), 0600), 0);
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_TRUE(contains(vm_named(vms, "loop").error, "extent 'a' cannot be resolved: more than 40 symbolic links")) << vm_named(vms, "loop").error;
  EXPECT_EQ(vm_named(vms, "fifo").error, "disk 'scsi0:0' (fifo/fifo.vmdk): is a FIFO, not a disk");
  expect_good(vms);
}

TEST(Confinement, ExtentThatIsACharacterDeviceIsRefusedEvenWhenAllowed) {
  fx::TempDir dir;
  vmware_vm(dir.path(), "zero", flat_descriptor({"/dev/zero"}));
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path(), {"/dev"});
  EXPECT_EQ(vm_named(vms, "zero").error, "disk 'scsi0:0' (zero/zero.vmdk): extent '/dev/zero' is a character device, not a disk");
  expect_good(vms);
}

TEST(Confinement, HugeConfigurationFileIsRefusedUnread) {
  fx::TempDir dir;
  write(dir.path() / "big/big.vmx", "displayName = \"big\"\n");
  fs::resize_file(dir.path() / "big/big.vmx", 17 * kMiB);
  good_vmware_vm(dir.path());
  auto vms = discover("vmware", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_TRUE(contains(vm_named(vms, "big").error, "is 17825792 bytes; a configuration file is at most 16 MiB")) << vm_named(vms, "big").error;
  expect_good(vms);
}

// libvirt: qcow2 images name other files qemu opens: the backing file, an external data file.

// Two domains in root/qemu: "evil" with the disk `evil`, "good" with a 2 MiB qcow2; images are in root/images.
std::vector<VmInfo> libvirt_pair(const fs::path& root, const fs::path& evil, const std::string& evil_format, const std::string& evil_type = "file") {
  auto good = make_disk(root / "images/good.qcow2", "qcow2", 2);
  write(root / "qemu/good.xml", domain_xml("good", "<memory>1048576</memory>", file_disk(good, "qcow2", "vda")));
  std::string source = evil_type == "file" ? "file" : "dev";
  write(root / "qemu/evil.xml", domain_xml("evil", "<memory>1048576</memory>",
                                           "    <disk type='" + evil_type + "' device='disk'>\n      <driver name='qemu' type='" + evil_format +
                                               "'/>\n      <source " + source + "='" + evil.string() + "'/>\n      <target dev='vda'/>\n    </disk>\n"));
  return discover("libvirt", root / "qemu", {root / "images"});
}

TEST(Confinement, LibvirtSourceFileAndDevOutsideAreRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  for (const std::string type : {"file", "block"}) {
    auto vms = libvirt_pair(dir.path(), secret, "raw", type);
    ASSERT_EQ(vms.size(), 2u);
    EXPECT_EQ(vm_named(vms, "evil").error, "disk 'vda' (" + secret.string() + "): resolves to " + fs::canonical(secret).string() +
                                               ", outside the root " + (dir.path() / "qemu").string() +
                                               " of libvirt manager 'test-libvirt' (add it to the manager's \"allow\" list if that is intended)")
        << type;
    EXPECT_EQ(vm_named(vms, "good").error, "");
  }
}

TEST(Confinement, Qcow2BackingFileOutsideIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  auto top = dir.path() / "images/top.qcow2";
  fs::create_directories(top.parent_path());
  fx::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-b", secret.string(), "-F", "raw", top.string()});
  auto vms = libvirt_pair(dir.path(), top, "qcow2");
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "evil").error, "disk 'vda' (" + top.string() + "): backing file '" + secret.string() + "' resolves to " +
                                             fs::canonical(secret).string() + ", outside the root " + (dir.path() / "qemu").string() +
                                             " of libvirt manager 'test-libvirt' (add it to the manager's \"allow\" list if that is intended)");
  EXPECT_EQ(vm_named(vms, "good").error, "");
}

// qemu reads "nbd://...", "json:{...}" through its drivers: only a json: filename of plain files within reach passes.
TEST(Confinement, Qcow2BackingFileThroughAQemuProtocolIsRefused) {
  fx::TempDir dir;
  auto top = dir.path() / "images/top.qcow2";
  fs::create_directories(top.parent_path());
  auto refusal_of = [&](const std::string& backing) {
    fs::remove(top);
    fx::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", top.string(), "1M"});
    auto vms = libvirt_pair(dir.path(), top, "qcow2");
    EXPECT_EQ(vm_named(vms, "good").error, "");
    return vm_named(vms, "evil").error;
  };
  std::string disk = "disk 'vda' (" + top.string() + "): backing file '";
  EXPECT_EQ(refusal_of("nbd://192.0.2.1:10809/x"), disk + "nbd://192.0.2.1:10809/x' names qemu's 'nbd' protocol; only plain files are read");
  std::string flattened = R"(json:{"file.driver": "nbd", "file.host": "192.0.2.1"})";
  EXPECT_EQ(refusal_of(flattened), disk + flattened + "' is read through qemu's \"nbd\" driver; only plain files are read");
  std::string passwd = R"(json:{"driver": "raw", "file": {"driver": "file", "filename": "/etc/passwd"}})";
  EXPECT_EQ(refusal_of(passwd), disk + passwd + "' resolves to /etc/passwd, outside the root " + (dir.path() / "qemu").string() +
                                    " of libvirt manager 'test-libvirt' (add it to the manager's \"allow\" list if that is intended)");
}

// qemu-img info does not open a qcow2's data file, but qemu-nbd reads the disk's data from it.
TEST(Confinement, Qcow2DataFileOutsideIsRefusedAndInsideAccepted) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  auto evil = dir.path() / "images/evil.qcow2", inside = dir.path() / "images/inside.qcow2";
  fs::create_directories(evil.parent_path());
  fx::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + secret.string() + ",data_file_raw=on", evil.string(), "64K"});
  auto vms = libvirt_pair(dir.path(), evil, "qcow2");
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "evil").error, "disk 'vda' (" + evil.string() + "): data file '" + secret.string() + "' resolves to " +
                                             fs::canonical(secret).string() + ", outside the root " + (dir.path() / "qemu").string() +
                                             " of libvirt manager 'test-libvirt' (add it to the manager's \"allow\" list if that is intended)");
  EXPECT_EQ(vm_named(vms, "good").error, "");

  fx::run_checked({"qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + (dir.path() / "images/inside.raw").string(), inside.string(), "1M"});
  vms = libvirt_pair(dir.path(), inside, "qcow2");
  EXPECT_EQ(vm_named(vms, "evil").error, "");
  EXPECT_EQ(vm_named(vms, "evil").disks.at(0).size, kMiB);
}

TEST(Confinement, UnpackedOvfHrefClimbingOutIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.vmdk");
  std::string climb = secret.lexically_relative(dir.path() / "evil").string();
  write(dir.path() / "evil/evil.ovf", ovf_xml("evil", "MegaBytes", "512", {{"disk-0", climb}}));
  write(dir.path() / "good/good.ovf", ovf_xml("good", "MegaBytes", "512", {{"disk-0", "good.vmdk"}}));
  make_disk(dir.path() / "good/good.vmdk", "vmdk-monolithicSparse", 2);
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "evil").error, "disk 'disk-0' (" + secret.string() + "): resolves to " + fs::canonical(secret).string() + outside(dir.path(), "ova"));
  expect_good(vms);
}

// The VMDK inside an OVA is read in place, but it may be a descriptor naming an extent anywhere.
TEST(Confinement, OvaMemberThatIsADescriptorNamingAnOutsideExtentIsRefused) {
  fx::TempDir dir, elsewhere, staging;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  std::string descriptor = flat_descriptor({secret.string()});
  descriptor.resize(1024, '\n');  // qemu's raw driver takes a member whose size is a multiple of 512
  write(staging.path() / "evil-disk1.vmdk", descriptor);
  write(staging.path() / "evil.ovf", ovf_xml("evil", "MegaBytes", "512", {{"vmdisk1", "evil-disk1.vmdk"}}));
  pack_ova(dir.path() / "evil.ova", staging.path(), {"evil.ovf", "evil-disk1.vmdk"});
  write(dir.path() / "good/good.ovf", ovf_xml("good", "MegaBytes", "512", {{"disk-0", "good.vmdk"}}));
  make_disk(dir.path() / "good/good.vmdk", "vmdk-monolithicSparse", 2);
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "evil").error, "disk 'vmdisk1' (evil.ova#evil-disk1.vmdk): extent '" + secret.string() + "' resolves to " +
                                             fs::canonical(secret).string() + outside(dir.path(), "ova"));
  expect_good(vms);
}

TEST(Confinement, OvaThatIsALinkOutsideIsNotRead) {
  fx::TempDir dir, elsewhere, scratch;
  auto raw = scratch.path() / "web.raw";
  fx::make_raw_disk(raw, 2 * kMiB, 3);
  auto ova = fx::make_disk(raw, "ova", elsewhere.path());
  fs::create_symlink(ova, dir.path() / "web.ova");
  auto vms = discover("ova", dir.path());
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].error, "web.ova: resolves to " + fs::canonical(ova).string() + outside(dir.path(), "ova"));
  EXPECT_TRUE(vms[0].disks.empty());
}

// Hyper-V exports name their disks in XML by Windows paths; only the file names count, and they are looked for in
// the export's "Virtual Hard Disks", which is what must not lead out.
TEST(Confinement, HyperVDiskLeadingOutOfTheExportsIsRefused) {
  fx::TempDir dir, elsewhere;
  auto foreign = make_disk(elsewhere.path() / "dc01.vhdx", "vhdx", 2);
  auto evil = dir.path() / "evil";
  write(evil / "Virtual Machines/11111111-2222-3333-4444-555555555555.xml", hyperv_xml("evil", {"..\\..\\..\\other\\dc01.vhdx"}));
  fs::create_directories(evil / "Virtual Hard Disks");
  fs::create_symlink(foreign, evil / "Virtual Hard Disks/dc01.vhdx");
  // A whole "Virtual Hard Disks" directory leading elsewhere is not even listed.
  fs::create_directories(dir.path() / "linked");
  fs::create_symlink(elsewhere.path(), dir.path() / "linked/Virtual Hard Disks");
  make_disk(dir.path() / "good/Virtual Hard Disks/good.vhdx", "vhdx", 2);
  auto vms = discover("hyperv", dir.path());
  ASSERT_EQ(vms.size(), 3u);
  EXPECT_EQ(vm_named(vms, "evil").error, "disk 'dc01.vhdx' (evil/Virtual Hard Disks/dc01.vhdx): resolves to " + fs::canonical(foreign).string() +
                                             outside(dir.path(), "hyperv"));
  EXPECT_EQ(vm_named(vms, "linked").error,
            "linked/Virtual Hard Disks: resolves to " + fs::canonical(elsewhere.path()).string() + outside(dir.path(), "hyperv"));
  EXPECT_TRUE(vm_named(vms, "linked").disks.empty());
  expect_good(vms);
}

TEST(Confinement, AzureVhdLinkedFromOutsideIsRefused) {
  fx::TempDir dir, elsewhere;
  auto foreign = make_disk(elsewhere.path() / "dc01.vhd", "vhd-fixed", 2);
  fs::create_symlink(foreign, dir.path() / "dc01.vhd");
  make_disk(dir.path() / "good.vhd", "vhd-fixed", 2);
  auto vms = discover("azure", dir.path());
  ASSERT_EQ(vms.size(), 2u);
  EXPECT_EQ(vm_named(vms, "dc01").error, "dc01.vhd: resolves to " + fs::canonical(foreign).string() + outside(dir.path(), "azure"));
  expect_good(vms);
}

TEST(Confinement, LocalDeviceLinkedToWhatIsNotListedIsRefusedUnlessAllowed) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  auto listed = make_disk(dir.path() / "data.raw", "raw", 2);
  // A directory others may write: whoever can write there can point the link anywhere.
  auto shared = dir.path() / "shared";
  fs::create_directories(shared);
  fs::permissions(shared, fs::perms::all);
  fs::create_symlink(secret, shared / "system.img");
  ManagerConfig local{"local", "h", "", {listed.string(), (shared / "system.img").string()}};

  auto vms = ferry::inventory::make_plugin(local)->discover();
  ASSERT_EQ(vms.size(), 1u);
  std::string real = fs::canonical(secret).string();
  EXPECT_EQ(vms[0].error, "disk 'system.img' (" + (shared / "system.img").string() + "): resolves to " + real +
                              " through the symbolic link " + (shared / "system.img").string() +
                              ", which someone other than root could have placed (the link or its directory is not root's, or others "
                              "may write there); list " + real + " itself (add it to the manager's \"allow\" list if that is intended)");
  ASSERT_EQ(vms[0].disks.size(), 2u);
  EXPECT_EQ(vms[0].disks[0].size, 2 * kMiB);  // the listed file still imports

  local.allow = {secret.string()};
  vms = ferry::inventory::make_plugin(local)->discover();
  EXPECT_EQ(vms[0].error, "");
  EXPECT_EQ(vms[0].disks.at(1).size, 64u * 1024);

  // A link only its owner could have placed (like /dev/vg0/root-snap) is followed to what it names.
  fs::create_symlink(listed, dir.path() / "by-id");
  vms = ferry::inventory::make_plugin({"local", "h", "", {(dir.path() / "by-id").string()}})->discover();
  EXPECT_EQ(vms[0].error, "");
  EXPECT_EQ(vms[0].disks.at(0).size, 2 * kMiB);
}

// check_disk(): at time of use, the path a run names (from the server's copy of the inventory) is checked again,
// against what the image names now.

ferry::Error refusal(const std::vector<ManagerConfig>& managers, const std::string& path, const std::string& format) {
  try {
    ferry::inventory::check_disk(managers, path, format);
  } catch (const ferry::Error& e) {
    return e;
  }
  return ferry::Error(ferry::ErrorKind::kConflict, "accepted");
}

TEST(CheckDisk, AcceptsWhatDiscoveryListsAndRefusesAnythingElse) {
  fx::TempDir dir, elsewhere, staging;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  good_vmware_vm(dir.path() / "vmfs");
  write(staging.path() / "app.ovf", ovf_xml("app", "MegaBytes", "512", {{"vmdisk1", "app-disk1.vmdk"}}));
  make_disk(staging.path() / "app-disk1.vmdk", "vmdk-streamOptimized", 2);
  pack_ova(dir.path() / "ova/app.ova", staging.path(), {"app.ovf", "app-disk1.vmdk"});
  auto device = make_disk(dir.path() / "host/data.raw", "raw", 1);
  std::vector<ManagerConfig> managers = {{"vmware", "esx", (dir.path() / "vmfs").string(), {}},
                                         {"ova", "apps", (dir.path() / "ova").string(), {}},
                                         {"local", "h", "", {device.string()}}};
  for (const auto& m : managers)
    for (const auto& vm : ferry::inventory::make_plugin(m)->discover())
      for (const auto& d : vm.disks) EXPECT_NO_THROW(ferry::inventory::check_disk(managers, d.path, d.format)) << d.path;

  ferry::Error e = refusal(managers, "/etc/passwd", "raw");
  EXPECT_EQ(e.kind(), ferry::ErrorKind::kUnauthorized);
  EXPECT_EQ(std::string(e.what()), "disk '/etc/passwd': resolves to /etc/passwd, and no VM manager of this connector reaches it (the root " +
                                       (dir.path() / "vmfs").string() + " of vmware manager 'esx'; the root " + (dir.path() / "ova").string() +
                                       " of ova manager 'apps'; the devices of local manager 'h')");
  EXPECT_EQ(refusal(managers, (dir.path() / "vmfs/../../" / elsewhere.path().filename() / "secret.raw").string(), "raw").kind(),
            ferry::ErrorKind::kUnauthorized);
  // A path below a manager's root that leads out: that manager says why.
  fs::create_symlink(secret, dir.path() / "vmfs/good/stolen.raw");
  EXPECT_EQ(std::string(refusal(managers, (dir.path() / "vmfs/good/stolen.raw").string(), "raw").what()),
            "disk '" + (dir.path() / "vmfs/good/stolen.raw").string() + "': resolves to " + fs::canonical(secret).string() + ", outside the root " +
                (dir.path() / "vmfs").string() + " of vmware manager 'esx' (add it to the manager's \"allow\" list if that is intended)");
  EXPECT_EQ(refusal(managers, "vmfs/good/good.vmdk", "vmdk").kind(), ferry::ErrorKind::kInvalidArgument);  // not absolute
  EXPECT_EQ(refusal(managers, (dir.path() / "vmfs/good/good.vmdk").string(), "floppy").kind(), ferry::ErrorKind::kInvalidArgument);
}

TEST(CheckDisk, ReadsTheImageAgainSoAnExtentChangedSinceDiscoveryIsRefused) {
  fx::TempDir dir, elsewhere;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  auto root = dir.path() / "vmfs";
  make_disk(root / "web01/web01-flat.vmdk", "raw", 1);
  vmware_vm(root, "web01", flat_descriptor({"web01-flat.vmdk"}));
  std::vector<ManagerConfig> managers = {{"vmware", "esx", root.string(), {}}};
  auto vms = ferry::inventory::make_plugin(managers[0])->discover();
  ASSERT_EQ(vms.at(0).error, "");
  std::string path = vms[0].disks.at(0).path;
  EXPECT_NO_THROW(ferry::inventory::check_disk(managers, path, "vmdk"));

  write(root / "web01/web01.vmdk", flat_descriptor({secret.string()}));
  ferry::Error e = refusal(managers, path, "vmdk");
  EXPECT_EQ(e.kind(), ferry::ErrorKind::kUnauthorized);
  EXPECT_TRUE(contains(e.what(), "disk '" + path + "': extent '" + secret.string() + "' resolves to " + fs::canonical(secret).string() +
                                     ", outside the root " + root.string() + " of vmware manager 'esx'")) << e.what();

  // The operator allows that volume: accepted.
  managers[0].allow = {elsewhere.path().string()};
  EXPECT_NO_THROW(ferry::inventory::check_disk(managers, path, "vmdk"));
}

TEST(CheckDisk, RefusesOvaMembersAndLocalLinksThatLeadOut) {
  fx::TempDir dir, elsewhere, staging;
  auto secret = host_secret(elsewhere.path() / "secret.raw");
  std::string descriptor = flat_descriptor({secret.string()});
  descriptor.resize(1024, '\n');
  write(staging.path() / "evil-disk1.vmdk", descriptor);
  write(staging.path() / "evil.ovf", ovf_xml("evil", "MegaBytes", "512", {{"vmdisk1", "evil-disk1.vmdk"}}));
  pack_ova(dir.path() / "ova/evil.ova", staging.path(), {"evil.ovf", "evil-disk1.vmdk"});
  auto device = make_disk(dir.path() / "host/data.raw", "raw", 1);
  auto shared = dir.path() / "shared";
  fs::create_directories(shared);
  fs::permissions(shared, fs::perms::all);
  fs::create_symlink(secret, shared / "sdb");
  std::vector<ManagerConfig> managers = {{"ova", "apps", (dir.path() / "ova").string(), {}},
                                         {"local", "h", "", {device.string(), (shared / "sdb").string()}}};

  ferry::Error e = refusal(managers, (dir.path() / "ova/evil.ova").string() + "#evil-disk1.vmdk", "vmdk");
  EXPECT_EQ(e.kind(), ferry::ErrorKind::kUnauthorized);
  EXPECT_TRUE(contains(e.what(), "extent '" + secret.string() + "' resolves to")) << e.what();
  EXPECT_EQ(refusal(managers, (dir.path() / "ova/evil.ova").string() + "#nothing.vmdk", "vmdk").kind(), ferry::ErrorKind::kInvalidArgument);

  e = refusal(managers, (shared / "sdb").string(), "raw");
  EXPECT_EQ(e.kind(), ferry::ErrorKind::kUnauthorized);
  EXPECT_TRUE(contains(e.what(), "through the symbolic link " + (shared / "sdb").string())) << e.what();
  // Another name for a listed device is that device.
  fs::create_symlink(device, shared / "alias");
  EXPECT_NO_THROW(ferry::inventory::check_disk(managers, (shared / "alias").string(), "raw"));
}

// The VMDK descriptor reader the check relies on as much as on qemu-img: it must see every file qemu would open.

TEST(VmdkDescriptor, ReadsExtentLinesAsQemusSscanfDoes) {
  std::string long_name(600, 'x');
  auto d = ferry::inventory::parse_vmdk_descriptor(
      "# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\nRW 4 FLAT \"a.vmdk\" 0\nRDONLY 8 SPARSE \"b.vmdk\"\n"
      "RW 12\n  VMFS\n\"c.vmdk\"\n# \"not\" \"an extent\"\nRW 1 SPARSE \"" + long_name + "\"\nNOACCESS 16 ZERO\n"
      "parentFileNameHint=\"../base/base.vmdk\"\n");
  // Whatever the access and type (qemu opens RW lines of five types), over several lines, 511 characters at most.
  EXPECT_EQ(d.extents, (std::vector<std::string>{"a.vmdk", "b.vmdk", "c.vmdk", long_name.substr(0, 511)}));
  EXPECT_EQ(d.parent, "../base/base.vmdk");
  // It ends at its first NUL, as a C string does.
  EXPECT_EQ(ferry::inventory::parse_vmdk_descriptor(std::string("RW 1 FLAT \"a\" 0\n\0RW 1 FLAT \"b\" 0\n", 32)).extents,
            (std::vector<std::string>{"a"}));
}

TEST(VmdkDescriptor, ReadsInTimeLinearInItsSize) {
  // Each line start skips the white space after it, new lines included: read naively, 4 MiB of blank lines take
  // hours. qemu-img reads at most 1 MiB; the reader is given that much.
  std::string blank;
  while (blank.size() < 4 * kMiB) blank += " \n\t\n";
  auto d = ferry::inventory::parse_vmdk_descriptor(blank + "RW 1 FLAT \"/etc/shadow\" 0\n" + blank + "RW\n" + blank + "2\n" + blank);
  EXPECT_EQ(d.extents, (std::vector<std::string>{"/etc/shadow"}));
}

TEST(VmdkDescriptor, IsFoundWhereQemuLooksForIt) {
  using ferry::inventory::vmdk_descriptor_at;
  auto kdmv = [](uint64_t capacity, uint64_t offset, uint64_t size) {
    std::string h = "KDMV" + std::string(508, '\0');
    for (int i = 0; i < 8; i++) {
      h[12 + i] = static_cast<char>(capacity >> (8 * i));
      h[28 + i] = static_cast<char>(offset >> (8 * i));
      h[36 + i] = static_cast<char>(size >> (8 * i));
    }
    return h;
  };
  constexpr uint64_t kMax = ferry::inventory::kVmdkDescriptorMax;
  auto at = vmdk_descriptor_at(kdmv(0, 1, 20), false);  // capacity 0: qemu reads the extents there, up to 1 MiB
  ASSERT_TRUE(at);
  EXPECT_EQ(at->offset, 512u);
  EXPECT_EQ(at->length, kMax);
  at = vmdk_descriptor_at(kdmv(2048, 1, 20), false);  // a monolithicSparse's own: its size
  ASSERT_TRUE(at);
  EXPECT_EQ(at->length, 20u * 512);
  EXPECT_FALSE(vmdk_descriptor_at(kdmv(0, 0, 20), true));           // no embedded descriptor
  EXPECT_FALSE(vmdk_descriptor_at(kdmv(0, uint64_t{1} << 60, 20), true));  // past any file
  EXPECT_FALSE(vmdk_descriptor_at("COWD" + std::string(508, '\0'), true));
  EXPECT_FALSE(vmdk_descriptor_at("KDM", true));
  // A descriptor file: anything when the format is vmdk, only text when qemu probes.
  std::string binary = "\x55\xaa" + std::string(510, '\0');
  EXPECT_FALSE(vmdk_descriptor_at(binary, false));
  ASSERT_TRUE(vmdk_descriptor_at(binary, true));
  EXPECT_EQ(vmdk_descriptor_at(binary, true)->offset, 0u);
  ASSERT_TRUE(vmdk_descriptor_at("# Disk DescriptorFile\nversion=1\n", false));
}

}  // namespace
