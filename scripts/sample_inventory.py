#!/usr/bin/env python3
"""Writes a sample inventory for a ferry connector: five VMs under five kinds of VM manager, with disks
made by qemu-img and filled by qemu-io, and the connector.json that serves them.

    scripts/sample_inventory.py OUT_DIR [--scale N]

OUT_DIR gets (created or replaced):
    connector.json                                   the five managers, paths relative to the file
    vmware/web01/web01.vmx, web01.vmdk                VMware: monolithicSparse VMDK, 8 GiB virtual
    libvirt/db01.xml, libvirt/images/db01-*.qcow2     libvirt: one domain, two qcow2 disks (vda, vdb)
    hyperv/app01/Virtual Machines/<GUID>.xml,         Hyper-V export: VHDX plus the older XML configuration
    hyperv/app01/Virtual Hard Disks/app01.vhdx
    azure/api01.vhd                                   Azure: a fixed VHD
    ova/appliance.ova                                 OVA: OVF descriptor + streamOptimized VMDK in a tar

Every boot disk starts with the same 32 MiB "operating system" (seeded random data), so machines replicated
into the same store share those chunks; log text and repeated patterns show compression; each disk also gets
data of its own. About 380 MiB of data in all at --scale 1; the same bytes on every run (fixed seeds).
"""
import argparse
import json
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB


def run(*argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"sample_inventory: {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


class Blobs:
    """Files of data for qemu-io's `write -s`, made once per run of this script."""

    def __init__(self, scratch: Path, scale: int):
        self.scratch = scratch
        self.scale = scale
        self.count = 0

    def _write(self, data: bytes) -> Path:
        self.count += 1
        path = self.scratch / f"blob{self.count}.bin"
        path.write_bytes(data)
        return path

    def random(self, mib: int, seed: int) -> Path:
        return self._write(random.Random(seed).randbytes(mib * self.scale * MiB))

    def logs(self, mib: int, host: str, seed: int) -> Path:
        """Web server access log lines: text that compresses well but never repeats a whole chunk."""
        size = mib * self.scale * MiB
        lines, total, i = [], 0, seed * 1_000_003
        while total < size:
            batch = "".join(
                f"2026-11-25T{n // 3_600_000 % 24:02d}:{n // 60_000 % 60:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}Z {host} "
                f"nginx[{900 + n % 97}]: GET /api/items/{n * 2_654_435_761 % 1_000_003} 200 {n * 40_503 % 499}ms ua=\"curl/8.{n % 9}\"\n"
                for n in range(i, i + 10_000))
            lines.append(batch)
            total += len(batch)
            i += 10_000
        return self._write("".join(lines).encode()[:size])


def fill(disk: Path, fmt: str, writes):
    """Writes (offset_mib, source, length) into `disk` with qemu-io: a blob file (its whole size; length None), or
    a byte pattern (an int) over `length` ("4M")."""
    commands = []
    for offset_mib, source, length in writes:
        if isinstance(source, int):
            commands += ["-c", f"write -q -P {source:#04x} {offset_mib}M {length}"]
        else:
            commands += ["-c", f"write -q -s {source} {offset_mib}M {source.stat().st_size}"]
    # Cache mode unsafe: no flush after every write (qemu-io flushes to the file when it closes the image)
    run("qemu-io", "-t", "unsafe", "-f", fmt, *commands, str(disk))


def boot_disk_writes(blobs: Blobs, os_blob: Path, host: str, seed: int, logs_mib: int, own_mib: int):
    """The shared OS image at 1 MiB, the machine's own logs and data further on, and a few pattern blocks."""
    return [
        (1, os_blob, None),
        (512, blobs.logs(logs_mib, host, seed), None),
        (1024, blobs.random(own_mib, seed + 1), None),
        (1536, 0x5A, f"{4 * blobs.scale}M"),
        (1600, 0xC3, f"{4 * blobs.scale}M"),
    ]


def vmware(root: Path, blobs: Blobs, os_blob: Path):
    vm = root / "vmware" / "web01"
    vm.mkdir(parents=True)
    disk = vm / "web01.vmdk"
    run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", str(disk), "8G")
    fill(disk, "vmdk", boot_disk_writes(blobs, os_blob, "web01", 10, 16, 32))
    (vm / "web01.vmx").write_text(
        '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
        'displayName = "web01"\nguestOS = "ubuntu-64"\nnumvcpus = "2"\nmemSize = "4096"\n'
        'uuid.bios = "56 4d 9a 1e 0c 77 41 52-8e 2b 61 0d 3c 5f 7a 01"\n'
        'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "web01.vmdk"\n'
        'ethernet0.present = "TRUE"\nethernet0.virtualDev = "vmxnet3"\n')


def libvirt(root: Path, blobs: Blobs, os_blob: Path):
    domains = root / "libvirt"
    images = domains / "images"
    images.mkdir(parents=True)
    os_disk, data_disk = images / "db01-os.qcow2", images / "db01-data.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(os_disk), "8G")
    run("qemu-img", "create", "-q", "-f", "qcow2", str(data_disk), "16G")
    fill(os_disk, "qcow2", boot_disk_writes(blobs, os_blob, "db01", 20, 8, 16))
    # A database: table files of random data, and preallocated extents of one repeated 1 MiB block.
    block = blobs.random(1, 23)
    writes = [(64, blobs.random(48, 22), None)] + [(2048 + i * blobs.scale, block, None) for i in range(16)]
    fill(data_disk, "qcow2", writes)
    disk_xml = ""
    for path, target in ((os_disk, "vda"), (data_disk, "vdb")):
        disk_xml += (f"    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n"
                     f"      <source file='{path.resolve()}'/>\n      <target dev='{target}' bus='virtio'/>\n    </disk>\n")
    (domains / "db01.xml").write_text(
        "<domain type='kvm'>\n  <name>db01</name>\n  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>\n"
        "  <metadata>\n    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n"
        "      <libosinfo:os id='http://debian.org/debian/12'/>\n    </libosinfo:libosinfo>\n  </metadata>\n"
        "  <memory unit='GiB'>8</memory>\n  <vcpu placement='static'>4</vcpu>\n"
        "  <os>\n    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n"
        "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n" + disk_xml + "  </devices>\n</domain>\n")


def hyperv(root: Path, blobs: Blobs, os_blob: Path):
    vm = root / "hyperv" / "app01"
    (vm / "Virtual Hard Disks").mkdir(parents=True)
    (vm / "Virtual Machines").mkdir(parents=True)
    disk = vm / "Virtual Hard Disks" / "app01.vhdx"
    run("qemu-img", "create", "-q", "-f", "vhdx", str(disk), "2G")
    fill(disk, "vhdx", boot_disk_writes(blobs, os_blob, "app01", 30, 8, 8))
    # The XML configuration of Hyper-V on Windows Server 2012 R2 (newer ones write binary .vmcx).
    (vm / "Virtual Machines" / "7C1A3E5F-2B4D-4F60-9E8A-1D2C3B4A5F60.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<configuration>\n'
        "  <_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\n    <controller0>\n      <drive0>\n"
        '        <pathname type="string">C:\\Hyper-V\\app01\\Virtual Hard Disks\\app01.vhdx</pathname>\n'
        '        <type type="string">VHD</type>\n      </drive0>\n    </controller0>\n'
        "  </_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\n"
        '  <properties>\n    <name type="string">app01</name>\n  </properties>\n'
        '  <settings>\n    <processors>\n      <count type="integer">2</count>\n    </processors>\n'
        '    <memory>\n      <bank>\n        <size type="integer">2048</size>\n      </bank>\n    </memory>\n'
        "  </settings>\n</configuration>\n")


def azure(root: Path, blobs: Blobs, os_blob: Path):
    (root / "azure").mkdir(parents=True)
    disk = root / "azure" / "api01.vhd"
    run("qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", str(disk), "2G")
    fill(disk, "vpc", boot_disk_writes(blobs, os_blob, "api01", 40, 4, 8))


def ova(root: Path, blobs: Blobs, os_blob: Path, scratch: Path):
    # qemu cannot write into a streamOptimized VMDK in place: fill a raw disk, then convert it.
    raw = scratch / "appliance.raw"
    run("qemu-img", "create", "-q", "-f", "raw", str(raw), "2G")
    fill(raw, "raw", boot_disk_writes(blobs, os_blob, "appliance", 50, 4, 8))
    staging = scratch / "ova"
    staging.mkdir()
    vmdk = staging / "appliance-disk1.vmdk"
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(vmdk))
    raw.unlink()
    ovf = staging / "appliance.ovf"
    ovf.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1"'
        ' xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"'
        ' xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"'
        ' xmlns:vmw="http://www.vmware.com/schema/ovf">\n'
        f'  <References>\n    <File ovf:href="{vmdk.name}" ovf:id="file1" ovf:size="{vmdk.stat().st_size}"/>\n  </References>\n'
        "  <DiskSection>\n    <Info>Virtual disk information</Info>\n"
        f'    <Disk ovf:capacity="{2 * GiB}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1"'
        ' ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>\n  </DiskSection>\n'
        '  <VirtualSystem ovf:id="appliance">\n    <Info>A virtual machine</Info>\n    <Name>appliance</Name>\n'
        '    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest">\n      <Info>OS</Info>\n'
        "      <Description>Debian GNU/Linux 11 (64-bit)</Description>\n    </OperatingSystemSection>\n"
        "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n"
        "      <Item>\n        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n"
        "        <rasd:InstanceID>1</rasd:InstanceID>\n        <rasd:ResourceType>3</rasd:ResourceType>\n"
        "        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>\n      </Item>\n"
        "      <Item>\n        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n"
        "        <rasd:InstanceID>2</rasd:InstanceID>\n        <rasd:ResourceType>4</rasd:ResourceType>\n"
        "        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>\n      </Item>\n"
        "      <Item>\n        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>\n"
        "        <rasd:InstanceID>3</rasd:InstanceID>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>\n"
        "    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n")
    (root / "ova").mkdir(parents=True)
    # The OVF first, as an OVA must have it; ustar like VMware's exports.
    with tarfile.open(root / "ova" / "appliance.ova", "w", format=tarfile.USTAR_FORMAT) as tar:
        for member in (ovf, vmdk):
            info = tar.gettarinfo(str(member), arcname=member.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(member, "rb") as f:
                tar.addfile(info, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to create (replaced if it exists)")
    ap.add_argument("--scale", type=int, default=1, help="multiply the data written (default 1: about 380 MiB)")
    args = ap.parse_args()
    if args.scale < 1 or args.scale > 8:
        sys.exit("sample_inventory: --scale must be 1 to 8 (the regions of each disk are laid out for that)")
    root: Path = args.out.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    # Scratch files in the system's temporary directory: qemu-io's `write -s FILE` cannot take a path with spaces.
    with tempfile.TemporaryDirectory(prefix="ferry-sample-") as tmp:
        scratch = Path(tmp)
        blobs = Blobs(scratch, args.scale)
        os_blob = blobs.random(32, 1)
        vmware(root, blobs, os_blob)
        libvirt(root, blobs, os_blob)
        hyperv(root, blobs, os_blob)
        azure(root, blobs, os_blob)
        ova(root, blobs, os_blob, scratch)
    config = {
        "name": "demo-dc",
        "managers": [
            {"type": "vmware", "name": "esx-lab", "path": "vmware"},
            {"type": "libvirt", "name": "kvm01", "path": "libvirt"},
            {"type": "hyperv", "name": "hv01", "path": "hyperv"},
            {"type": "azure", "name": "azure-westeu", "path": "azure"},
            {"type": "ova", "name": "appliances", "path": "ova"},
        ],
    }
    managers = ",\n".join("    " + json.dumps(m) for m in config["managers"])
    (root / "connector.json").write_text(f'{{\n  "name": {json.dumps(config["name"])},\n  "managers": [\n{managers}\n  ]\n}}\n')
    used = int(run("du", "-s", "--block-size=1", "--", str(root)).split()[0])
    print(f"sample inventory in {root}: 5 VMs (vmware, libvirt, hyperv, azure, ova), {used / MiB:.0f} MiB allocated")


if __name__ == "__main__":
    main()
