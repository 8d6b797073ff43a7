#!/usr/bin/env bash
# The data path alone, no server: make a sample VM disk (VMDK), replicate it into an encrypted local store,
# change the disk, replicate again (incremental), export both images and prove each is bit-identical to the
# disk as it was at its replication. Output in demo-out/local (FERRY_DEMO_DIR to change). scripts/demo.sh
# shows the whole service (server, connector, jobs, runs) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh ferry
FERRY=$PWD/build/ferry
OUT=${FERRY_DEMO_DIR:-$PWD/demo-out/local}
rm -rf "$OUT" && mkdir -p "$OUT"
export FERRY_KEYRING=$OUT/keyring FERRY_STORE=$OUT/store
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A sample VM disk: 2 GiB VMDK with 300 MiB of data (random, log text, repeated blocks)"
raw=$OUT/web01.raw
truncate -s 2G "$raw"
head -c 100M /dev/urandom | dd of="$raw" bs=1M seek=64 conv=notrunc status=none
{ awk 'BEGIN { srand(42); for (i = 0; i < 1500000; i++)
  printf "2026-11-25T10:%02d:%02d.%03dZ web01 nginx[%d]: GET /api/items/%d 200 %dms ua=\"curl/8.%d\"\n", i/3600%60, i/60%60, i%1000, 900+i%97, int(rand()*1e6), int(rand()*500), i%9 }' || true; } \
  | head -c 100M | dd of="$raw" bs=1M seek=512 conv=notrunc status=none
block=$(mktemp); head -c 1M /dev/urandom > "$block"
for i in $(seq 0 99); do dd if="$block" of="$raw" bs=1M seek=$((1024 + i)) conv=notrunc status=none; done; rm -f "$block"
disk=$OUT/web01.vmdk
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$raw" "$disk" && rm -f "$raw"
qemu-img info "$disk" | sed -n '1,4p'
cp --sparse=always "$disk" "$OUT/web01-at-run1.vmdk"

step "2. First replication (full), encrypted with master key 'demo'"
$FERRY replicate "$disk" --name web01-disk1 --encrypt --key-id demo

step "3. The VM keeps running: 8 MiB of its disk change"
head -c 4M /dev/urandom > "$OUT/change1.bin"
head -c 4M /dev/urandom > "$OUT/change2.bin"
qemu-io -f vmdk -c "write -s $OUT/change1.bin 70M 4M" -c "write -s $OUT/change2.bin 530M 4M" "$disk" >/dev/null
rm -f "$OUT"/change?.bin

step "4. Second replication (incremental: reads the disk, stores only what changed)"
$FERRY replicate "$disk" --name web01-disk1

step "5. Images in the store"
$FERRY snapshots list
$FERRY store stats

step "6. Export both images and compare each with the disk as it was"
first=$($FERRY snapshots list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
second=$($FERRY snapshots list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
$FERRY image export "$first" --format qcow2 --output "$OUT/web01-run1.qcow2"
$FERRY image export "$second" --format vhdx --output "$OUT/web01-run2.vhdx"
qemu-img compare -f vmdk -F qcow2 "$OUT/web01-at-run1.vmdk" "$OUT/web01-run1.qcow2"
qemu-img compare -f vmdk -F vhdx "$disk" "$OUT/web01-run2.vhdx"

step "7. Verify every stored byte"
$FERRY store check --read-data
printf '\nDemo complete: everything is under %s\n' "$OUT"
