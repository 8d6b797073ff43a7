#!/usr/bin/env bash
# The quick start: the whole ferry service end to end on loopback, with the embedded defaults. Builds ferry,
# makes five sample VMs (VMware, libvirt, Hyper-V, Azure, OVA), starts a server and a connector, imports the
# catalog, replicates every VM, changes a disk and replicates it again (incremental), exports images and proves
# them bit-identical to the source disks. Everything lands in demo-out/ (replaced on every run); nothing outside
# it is touched (FERRY_CONFIG points into it). docs/quickstart.md has the same steps by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=demo-out  # relative to the repository, so the commands shown read as a user would type them
START=$SECONDS
STEP="0. setup"
SERVER_PID="" CONNECTOR_PID=""

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step() { STEP="$*"; bold "$*"; }
# A command the way a user would type it: arguments with spaces or quotes in single quotes.
quoted() {
  local out="" a
  for a in "$@"; do
    [[ "$a" =~ [[:space:]\"] ]] && a="'$a'"
    out+="${out:+ }$a"
  done
  printf '%s' "$out"
}
echo_cmd() { printf '\033[2m$ %s\033[0m\n' "$*"; }
show() { echo_cmd "$(quoted "$@")"; "$@"; }
FERRY=$ROOT/build/ferry
ferry() { "$FERRY" "$@"; }
# json EXPR: evaluates a Python expression over the JSON document on stdin (bound to `d`) and prints it.
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f} MiB')"; }
die() { echo "demo: $*" >&2; exit 1; }

stop() {  # stop PID NAME: SIGTERM, then up to 10 s for a clean exit
  local pid=$1 name=$2
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "demo: the $name (pid $pid) did not stop within 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  stop "$CONNECTOR_PID" connector
  stop "$SERVER_PID" server
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 130 ]; then
      printf '\n\033[1;31mdemo interrupted in step "%s".\033[0m\n' "$STEP" >&2
    else
      printf '\n\033[1;31mdemo failed in step "%s" (exit code %d).\033[0m\n' "$STEP" "$rc" >&2
    fi
    for log in "$OUT/server.log" "$OUT/connector.log"; do
      [ -s "$log" ] || continue
      printf '\nLast lines of %s:\n' "$log" >&2
      tail -n 8 "$log" >&2
    done
    if [ -e "$OUT/server.log" ]; then
      printf '\nLogs: %s/server.log and %s/connector.log; everything else is under %s/\n' "$ROOT/$OUT" "$ROOT/$OUT" "$ROOT/$OUT" >&2
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

rm -rf "$OUT"
step "0. Install what is missing and build (scripts/setup.sh)"
./scripts/setup.sh ferry
BUILT=$SECONDS
mkdir -p "$OUT/exports"
# The client profile lives in demo-out/config, not in ~/.config/ferry; every client verb below uses profile 'demo'.
export FERRY_CONFIG=$ROOT/$OUT/config FERRY_PROFILE=demo
echo "Below, 'ferry' is build/ferry ($(ferry --version)), run from $ROOT."
echo_cmd "export FERRY_CONFIG=\$PWD/$OUT/config FERRY_PROFILE=demo"

step "1. A sample inventory: five VMs under five kinds of VM manager"
show python3 scripts/sample_inventory.py "$OUT/inventory"
(cd "$OUT/inventory" && find . -type f ! -name connector.json | sort | sed 's/^\.\//  /')
echo "connector.json:"
sed 's/^/  /' "$OUT/inventory/connector.json"

step "2. Create the server's data directory and an admin profile; start the server"
# A free loopback port, chosen now so that the profile can name it. The server writes the URL it listens on
# to --address-file, which also says when it is ready.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
show ferry server init --data "$OUT/server" --listen "127.0.0.1:$PORT" --save-profile demo --endpoint "$URL"
echo_cmd "ferry server --data $OUT/server --listen 127.0.0.1:$PORT --export-dir $OUT/exports --address-file $OUT/server.url &> $OUT/server.log &"
# Started as the binary, not through the function, so that $! is the server itself (the EXIT trap stops it).
"$FERRY" server --data "$OUT/server" --listen "127.0.0.1:$PORT" --export-dir "$OUT/exports" --address-file "$OUT/server.url" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  [ -s "$OUT/server.url" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited at start (see $OUT/server.log)"
  sleep 0.1
done
[ -s "$OUT/server.url" ] || die "the server did not write $OUT/server.url within 10 s"
[ "$(cat "$OUT/server.url")" = "$URL" ] || die "the server listens on $(cat "$OUT/server.url"), not $URL"
echo "server listening on $URL (pid $SERVER_PID); GET /health says $(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + "/health").read().decode())' "$URL")"

step "3. Register a connector with a one-time token and start it"
echo_cmd "ferry connectors token"
TOKEN=$(ferry connectors token --json | json 'd["registrationToken"]')
echo "$TOKEN"
echo_cmd "ferry connector --server $URL --token $TOKEN --config $OUT/inventory/connector.json --state $OUT/connector --poll-interval-ms 500 &> $OUT/connector.log &"
"$FERRY" connector --server "$URL" --token "$TOKEN" --config "$OUT/inventory/connector.json" --state "$OUT/connector" \
  --poll-interval-ms 500 >"$OUT/connector.log" 2>&1 &
CONNECTOR_PID=$!
for _ in $(seq 100); do
  [ "$(ferry connectors list --json | json 'sum(c["status"] == "HEALTHY" for c in d)')" = 1 ] && break
  kill -0 "$CONNECTOR_PID" 2>/dev/null || die "the connector exited at start (see $OUT/connector.log)"
  sleep 0.1
done
show ferry connectors list

step "4. Import the server catalog from the connector"
show ferry servers import --wait
show ferry servers list
declare -A SERVER JOB
while read -r name id; do SERVER[$name]=$id; done < <(ferry servers list --json |
  json '"\n".join(s["vmServer"]["vmName"] + " " + s["serverId"] for s in d["serverList"])')
VMS=(web01 db01 app01 api01 appliance)
for vm in "${VMS[@]}"; do [ -n "${SERVER[$vm]:-}" ] || die "VM $vm is not in the catalog"; done

step "5. A replication job per server: every 12 hours from an hour from now, keeping 3 images; web01 encrypted"
SEED=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
for vm in "${VMS[@]}"; do
  extra=()
  [ "$vm" = web01 ] && extra=(--encrypted)
  echo_cmd "$(quoted ferry jobs create "${SERVER[$vm]}" --seed-time "$SEED" --frequency 12 --keep 3 "${extra[@]}" --description "demo: $vm")"
  JOB[$vm]=$(ferry jobs create "${SERVER[$vm]}" --seed-time "$SEED" --frequency 12 --keep 3 "${extra[@]}" --description "demo: $vm")
  echo "${JOB[$vm]}"
done

step "6. Replicate every server now (on-demand runs: the connector reads the disks, uploads the chunks the store lacks)"
for vm in "${VMS[@]}"; do
  echo "-- $vm"
  show ferry runs start "${JOB[$vm]}" --wait
done
show ferry jobs list
uploaded() {  # uploaded JOB INDEX: bytesUploaded of the job's run INDEX (0 = the newest)
  ferry runs list "$1" --json | json "d[$2]['bytesUploaded']"
}
echo
printf '%-10s %10s\n' VM UPLOADED
for vm in "${VMS[@]}"; do printf '%-10s %10s\n' "$vm" "$(mib "$(uploaded "${JOB[$vm]}" 0)")"; done
echo "Every boot disk holds the same 32 MiB of OS data: db01 brought it to the plain store, so app01, api01 and the"
echo "appliance uploaded only their own data; web01's job is encrypted and has a store of its own."

step "7. web01 keeps running: 8 MiB of its disk change; replicate it again (incremental)"
DISK=$OUT/inventory/vmware/web01/web01.vmdk
head -c 4M /dev/urandom >"$OUT/change1.bin"
head -c 4M /dev/urandom >"$OUT/change2.bin"
show qemu-io -f vmdk -c "write -q -s $OUT/change1.bin 100M 4M" -c "write -q -s $OUT/change2.bin 530M 4M" "$DISK"
rm -f "$OUT"/change?.bin
show ferry runs start "${JOB[web01]}" --wait
show ferry runs list "${JOB[web01]}"
FIRST=$(uploaded "${JOB[web01]}" 1)
SECOND=$(uploaded "${JOB[web01]}" 0)
echo "web01: run 1 uploaded $(mib "$FIRST"), run 2 uploaded $(mib "$SECOND") (8.0 MiB of the disk changed)"
if [ "$SECOND" -le 0 ] || [ $((SECOND * 4)) -ge "$FIRST" ]; then
  die "the incremental run uploaded $SECOND bytes; expected far less than the first run's $FIRST"
fi

step "8. Images; export the newest of web01 (and a disk of db01) and compare them with the source disks"
show ferry images list
IMAGE=$(ferry jobs show "${JOB[web01]}" --json | json 'd["latestAmiId"]')
show ferry images export "$IMAGE" -f qcow2 -o web01.qcow2   # inside the server's --export-dir
show qemu-img compare -f vmdk -F qcow2 "$DISK" "$OUT/exports/web01.qcow2" || die "$OUT/exports/web01.qcow2 differs from $DISK"
echo "identical"
IMAGE=$(ferry jobs show "${JOB[db01]}" --json | json 'd["latestAmiId"]')
show ferry images export "$IMAGE" --disk vdb -f vmdk -o db01-vdb.vmdk
SRC=$OUT/inventory/libvirt/images/db01-data.qcow2
show qemu-img compare -f qcow2 -F vmdk "$SRC" "$OUT/exports/db01-vdb.vmdk" || die "$OUT/exports/db01-vdb.vmdk differs from $SRC"
echo "identical"

step "9. The server's stores: deduplication, compression, and every stored byte read back and verified"
for store in plain ferry-master; do
  show ferry store stats --store "$OUT/server/stores/$store" --keyring "$OUT/server/keyring"
  show ferry store check --store "$OUT/server/stores/$store" --keyring "$OUT/server/keyring" --read-data
done

step "10. Stop the connector and the server (SIGTERM: both stop cleanly)"
echo_cmd "kill -TERM $CONNECTOR_PID $SERVER_PID"
stop "$CONNECTOR_PID" connector
stop "$SERVER_PID" server
CONNECTOR_PID="" SERVER_PID=""
grep -q ' stopped$' "$OUT/server.log" || die "the server did not log a clean stop (see $OUT/server.log)"
tail -n 2 "$OUT/server.log"

STEP="summary"
bold "Demo complete in $((SECONDS - START)) s ($((BUILT - START)) s of them in setup and build)"
cat <<EOF
What ran: a ferry server and a connector on $URL. The connector served five VMs (VMware web01,
libvirt db01 with two disks, Hyper-V app01, Azure api01, OVA appliance); each was replicated into the
server's image stores (web01 encrypted), web01 again after a change (only the changed chunks travelled),
and two images were exported and proved bit-identical to their source disks.

Where things are (under $ROOT/$OUT):
  inventory/     the sample VMs and connector.json
  server/        the server's data: ferry.db (catalog), keyring/ (master key), stores/ (the images)
  connector/     the connector's credentials
  config         the client profile 'demo' (INI: endpoint and admin key)
  exports/       the exported disks
  server.log, connector.log

The server and the connector have been stopped. To look around again, from $ROOT:
  export FERRY_CONFIG=\$PWD/$OUT/config FERRY_PROFILE=demo
  build/ferry server --data $OUT/server --listen 127.0.0.1:$PORT &
  build/ferry connector --config $OUT/inventory/connector.json --state $OUT/connector &
  build/ferry jobs list

The same steps by hand, for your own machines: docs/quickstart.md
EOF
