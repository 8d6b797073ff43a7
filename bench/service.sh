#!/usr/bin/env bash
# ferry service benchmark: the same disk replicated by `ferry replicate` (local data path) and through
# connector → server over loopback (`ferry runs start --wait`), in the same run; then GetServers page latency
# with a 10,000-server catalog (bench/get_servers_bench.cc).
#
#   bench/service.sh                                # full benchmark (4 GiB disk, 3 runs each)
#   BENCH_SIZE_GIB=1 BENCH_RUNS=1 bench/service.sh  # quick check
#
# Environment:
#   BENCH_BUILD       build directory (default <repo>/build-bench: Release, -DFERRY_WERROR=ON); ferry and
#                     get_servers_bench are built there first
#   BENCH_NO_BUILD    1: use the binaries already in BENCH_BUILD
#   FERRY             a ferry binary to measure instead of BENCH_BUILD/ferry (get_servers_bench still comes from there)
#   BENCH_SIZE_GIB, BENCH_RUNS, BENCH_MUTATE_PCT, BENCH_SEED   as for bench/run.sh (4, 3, 1, 42)
#   BENCH_DATA        where the generated disks are cached (default bench/run.sh's: bench/out/work/data; the same
#                     files when the parameters match)
#   BENCH_WORK        scratch directory (default <repo>/bench/out/service)
#   BENCH_POLL_MS     connector heartbeat interval in ms (default 2000, ferry's default; the server holds each
#                     heartbeat until it has work for the connector, so a run starts as soon as it is created)
#   BENCH_GS_SERVERS  servers in the GetServers catalog (default 10000; 0 skips that part)
#   BENCH_GS_ROUNDS   walks through all pages per page size (default 5)
#
# Output: a Markdown report on stdout (progress on stderr) and bench/out/service-results.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
SIZE=${BENCH_SIZE_GIB:-4}
RUNS=${BENCH_RUNS:-3}
MUT_PCT=${BENCH_MUTATE_PCT:-1}
SEED=${BENCH_SEED:-42}
DATA=${BENCH_DATA:-$OUT/work/data}
WORK=${BENCH_WORK:-$OUT/service}
POLL_MS=${BENCH_POLL_MS:-2000}
GS_SERVERS=${BENCH_GS_SERVERS:-10000}
GS_ROUNDS=${BENCH_GS_ROUNDS:-5}
NAME=bench-vm

log() { printf '[service-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '\n!!!!!!!! SERVICE BENCH FAILED: %s\n\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"

# ---------------------------------------------------------------- build
mkdir -p "$OUT"
if [ "${BENCH_NO_BUILD:-0}" != 1 ] && [ -z "${FERRY:-}" ]; then
  log "building ferry and get_servers_bench in $BUILD (Release, -DFERRY_WERROR=ON)"
  # -Wno-error=restrict: at -O3 GCC 12 reports a false -Wrestrict inside std::string's operator+ (a known compiler
  # false positive; RelWithDebInfo's -O2 does not trigger it). It stays a warning.
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFERRY_WERROR=ON \
    -DCMAKE_CXX_FLAGS=-Wno-error=restrict >"$OUT/service-cmake.log" 2>&1 || { cat "$OUT/service-cmake.log" >&2; die "cmake failed"; }
  cmake --build "$BUILD" --target ferry get_servers_bench >"$OUT/service-build.log" 2>&1 \
    || { tail -n 40 "$OUT/service-build.log" >&2; die "build failed"; }
fi
FERRY_ORIG=${FERRY:-$BUILD/ferry}
[ -x "$FERRY_ORIG" ] || die "no ferry binary $FERRY_ORIG"
command -v qemu-img >/dev/null || die "qemu-img is needed (apt-get install qemu-utils)"

T_START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v l="${LOAD_START%% *}" 'BEGIN{exit !(l > 1.0)}' && log "WARNING: load average is $LOAD_START: other work on this machine skews the numbers"
mkdir -p "$OUT" "$WORK" "$DATA"
WORK=$(cd "$WORK" && pwd)
DATA=$(cd "$DATA" && pwd)
LOGS=$WORK/logs
RAW=$WORK/measurements.jsonl
rm -rf "$LOGS" "$WORK"/run-*; mkdir -p "$LOGS"
: >"$RAW"
# Run a private copy: a rebuild during the benchmark must not mix two binaries.
cp "$FERRY_ORIG" "$WORK/ferry.bin"
FERRY=$WORK/ferry.bin

# ---------------------------------------------------------------- data: exactly bench/run.sh's (cached by parameters)
generate_disks

# Both paths read the disk at one fixed path; the incremental swaps the mutated copy in (hard link), so the
# connector's `local` manager, configured once with that path, sees the same disk, changed.
SRC=$WORK/src
mkdir -p "$SRC"
TARGET=$SRC/disk.raw
use_disk() { ln -f "$1" "$TARGET"; }

# prefault MIB (bench/lib.sh's prefault_mib) before every timed full replication of both paths.
prefault() { prefault_mib "$1"; }
PREFAULT_MIB=$(( $(du -sk "$DISK" | cut -f1) / 1024 / 2 + 64 ))  # about what a full run stores (≈ half the data)

now_ns() { date +%s%N; }
# cpu_ticks PID: utime+stime of a process in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
TICKS=$(getconf CLK_TCK)
record() { printf '%s\n' "$1" >>"$RAW"; }

# ---------------------------------------------------------------- local data path (as bench/run.sh)
# local_pair RUN: fresh encrypted store, full replication of DISK, incremental of MUT.
local_pair() {
  local run=$1 S=$WORK/local-store K=$WORK/local-keyring kind src t0 t1 usr sys rss base before
  rm -rf "$S" "$K"
  "$FERRY" store init --store "$S" --encrypt --key-id bench --keyring "$K" >"$LOGS/local-init-$run.out" 2>&1 \
    || { cat "$LOGS/local-init-$run.out" >&2; die "ferry store init failed"; }
  for kind in full incr; do
    if [ $kind = full ]; then src=$DISK; else src=$MUT; fi
    use_disk "$src"
    before=$(du_b "$S")
    warm "$TARGET"
    if [ $kind = full ]; then prefault "$PREFAULT_MIB"; else sync; fi
    base=$LOGS/local-$kind-$run
    t0=$(now_ns)
    /usr/bin/time -f '%U %S %M' -o "$base.time" "$FERRY" replicate "$TARGET" --store "$S" --name "$NAME" --keyring "$K" --json \
      >"$base.out" 2>"$base.err" || { tail -n 20 "$base.err" >&2; die "local $kind (run $run) failed"; }
    t1=$(now_ns)
    read -r usr sys rss < <(tail -n 1 "$base.time")
    record "$(printf '{"path":"local","kind":"%s","run":%d,"seconds":%.3f,"cpu_seconds":%.2f,"rss_kib":%d,"stored_bytes":%d}' \
      "$kind" "$run" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print (b-a)/1e9}')" "$(awk -v u="$usr" -v s="$sys" 'BEGIN{print u+s}')" \
      "$rss" "$(( $(du_b "$S") - before ))")"
    log "  local   $kind run $run: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9}') s (cpu ${usr}u+${sys}s)"
  done
  rm -rf "$S" "$K"
}

# ---------------------------------------------------------------- service path
SERVER_PID= CONNECTOR_PID=
stop_pid() {  # SIGTERM, wait up to 20 s, then SIGKILL; only processes this script started
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_service() { stop_pid "$CONNECTOR_PID"; CONNECTOR_PID=; stop_pid "$SERVER_PID"; SERVER_PID=; }
trap 'stop_service' EXIT

# start_service DIR [server flags...]: fresh data dir, server on a free loopback port, a registered connector
# serving TARGET, the catalog imported and an encrypted job (first run a day away: runs start on demand).
start_service() {
  local dir=$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  "$FERRY" server init --data "$dir/data" --json >"$dir/init.json" 2>"$dir/init.err" || { cat "$dir/init.err" >&2; die "server init failed"; }
  "$FERRY" server --data "$dir/data" --listen 127.0.0.1:0 --address-file "$dir/address" --export-dir "$dir" --log-json "$@" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 300); do [ -s "$dir/address" ] && break; kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
  [ -s "$dir/address" ] || { tail "$dir/server.log" >&2; die "ferry server did not start"; }
  export FERRY_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY FERRY_CONFIG=$dir/client-config
  FERRY_ENDPOINT=$(cat "$dir/address")
  AWS_ACCESS_KEY_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accessKeyId"])' "$dir/init.json")
  AWS_SECRET_ACCESS_KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["secretAccessKey"])' "$dir/init.json")
  local token
  token=$("$FERRY" connectors token 2>/dev/null) || die "connectors token failed"
  printf '{"name": "bench", "managers": [{"type": "local", "name": "host", "devices": ["%s"]}]}\n' "$TARGET" >"$dir/connector.json"
  "$FERRY" connector --server "$FERRY_ENDPOINT" --token "$token" --config "$dir/connector.json" --state "$dir/connector-state" \
    --poll-interval-ms "$POLL_MS" --log-json >"$dir/connector.log" 2>&1 &
  CONNECTOR_PID=$!
  for i in $(seq 1 100); do [ -s "$dir/connector-state/credentials.json" ] && break; sleep 0.1; done
  [ -s "$dir/connector-state/credentials.json" ] || { tail "$dir/connector.log" >&2; die "the connector did not register"; }
  "$FERRY" servers import --wait >"$dir/import.out" 2>&1 || { cat "$dir/import.out" "$dir/connector.log" >&2; die "servers import failed"; }
  SERVER_ID=$("$FERRY" servers list --json | python3 -c 'import json,sys; l=json.load(sys.stdin)["serverList"]; assert len(l)==1, l; print(l[0]["serverId"])')
  JOB_ID=$("$FERRY" jobs create "$SERVER_ID" --encrypted --frequency 24 --seed-time "$(( $(date +%s) + 86400 ))" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["replicationJobId"])')
}

# service_run DIR RUN KIND LABEL: one timed `ferry runs start JOB --wait` of the disk now at TARGET.
service_run() {
  local dir=$1 run=$2 kind=$3 label=$4 t0 t1 s0 s1 c0 c1 store before run_id
  store=$dir/data/stores/ferry-master
  before=$( [ -d "$store" ] && du_b "$store" || echo 0)
  warm "$TARGET"
  if [ "$kind" = full ]; then prefault "$PREFAULT_MIB"; else sync; fi
  s0=$(cpu_ticks "$SERVER_PID"); c0=$(cpu_ticks "$CONNECTOR_PID")
  t0=$(now_ns)
  "$FERRY" runs start "$JOB_ID" --wait --json >"$LOGS/$label-$kind-$run.out" 2>"$LOGS/$label-$kind-$run.err" \
    || { cat "$LOGS/$label-$kind-$run.out" "$LOGS/$label-$kind-$run.err" >&2; tail -n 20 "$dir/connector.log" >&2; die "$label $kind run $run failed"; }
  t1=$(now_ns)
  s1=$(cpu_ticks "$SERVER_PID"); c1=$(cpu_ticks "$CONNECTOR_PID")
  run_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["replicationRunId"])' "$LOGS/$label-$kind-$run.out")
  # Timestamps from both logs (ms): StartOnDemand accepted, connector began, disk done, run completed.
  python3 - "$dir/server.log" "$dir/connector.log" "$run_id" "$LOGS/$label-$kind-$run.out" "$label" "$kind" "$run" \
    "$t0" "$t1" "$(( s1 - s0 ))" "$(( c1 - c0 ))" "$TICKS" "$(( $(du_b "$store") - before ))" \
    "$(hwm_kib "$SERVER_PID")" "$(hwm_kib "$CONNECTOR_PID")" >>"$RAW" <<'PYEOF'
import json, sys
from datetime import datetime
slog, clog, rid, out, label, kind, run, t0, t1, sticks, cticks, hz, stored, shwm, chwm = sys.argv[1:16]
def events(path):
    ev = []
    for line in open(path):
        try:
            j = json.loads(line)
        except ValueError:
            continue
        t = datetime.strptime(j["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
        ev.append((t, j["msg"]))
    return ev
def first(ev, *parts):
    for t, m in ev:
        if all(p in m for p in parts):
            return t
    raise SystemExit("no log line with %r" % (parts,))
s, c = events(slog), events(clog)
start = first(s, "on-demand run " + rid)
began = first(s, "run " + rid + " started on connector")
disk_done = first(c, "run " + rid + ": disk ")
done = first(s, "run " + rid + " completed")
r = json.load(open(out))[0]
hz = float(hz)
print(json.dumps({"path": label, "kind": kind, "run": int(run), "run_id": rid,
                  "seconds": round(done - start, 3),               # StartOnDemand accepted -> COMPLETED (server log)
                  "cli_seconds": round((int(t1) - int(t0)) / 1e9, 3),  # `ferry runs start --wait` (polls every 1 s)
                  "pickup_seconds": round(began - start, 3),        # until the connector's next heartbeat took it
                  "replicate_seconds": round(disk_done - began, 3),  # begin -> disk's snapshot uploaded (connector log)
                  "finish_seconds": round(done - disk_done, 3),     # last progress report, complete, image recorded
                  "server_cpu_seconds": round(int(sticks) / hz, 2), "connector_cpu_seconds": round(int(cticks) / hz, 2),
                  "bytes_uploaded": r.get("bytesUploaded"), "stored_bytes": int(stored), "image": r.get("amiId"),
                  # peak RSS of each process since it started (a fresh pair of processes per full run)
                  "server_peak_rss_kib": int(shwm), "connector_peak_rss_kib": int(chwm)}))
PYEOF
  log "  $label $kind run $run: $(tail -n 1 "$RAW" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.2f s (start->completed; cli %.2f s; pickup %.2f s; server cpu %.2f s, connector cpu %.2f s; uploaded %s bytes)" % (r["seconds"], r["cli_seconds"], r["pickup_seconds"], r["server_cpu_seconds"], r["connector_cpu_seconds"], r["bytes_uploaded"]))')"
}

# service_pair RUN LABEL [server flags]: fresh server and store; full of DISK, incremental of MUT.
service_pair() {
  local run=$1 label=$2; shift 2
  local dir=$WORK/run-$label-$run
  use_disk "$DISK"
  start_service "$dir" "$@"
  service_run "$dir" "$run" full "$label"
  use_disk "$MUT"
  service_run "$dir" "$run" incr "$label"
  if [ "$run" = 1 ] && [ "$label" = service ]; then
    # Untimed: both images, exported by the server, equal their source disks.
    local img
    for img in full:"$DISK" incr:"$MUT"; do
      local ami
      ami=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["amiId"])' "$LOGS/$label-${img%%:*}-$run.out")
      "$FERRY" images export "$ami" -f qcow2 -o "$dir/export.qcow2" >"$LOGS/export-$run.out" 2>&1 \
        || { cat "$LOGS/export-$run.out" >&2; die "images export $ami failed"; }
      qemu-img compare -q -f raw -F qcow2 "${img#*:}" "$dir/export.qcow2" || die "image $ami (${img%%:*}) differs from its source disk"
      rm -f "$dir/export.qcow2"
      log "  qemu-img compare: image $ami (${img%%:*}) matches its source disk"
    done
  fi
  stop_service
  cp "$dir/server.log" "$LOGS/$label-server-$run.log"; cp "$dir/connector.log" "$LOGS/$label-connector-$run.log"
  rm -rf "$dir"
}

log "page cache: not dropped; the disk's data is read once before each timed replication, 'sync' runs before it, and a"
log "file as large as a full run's store growth is written and deleted before each full run (both paths)"
log "connector heartbeat interval: ${POLL_MS} ms"
for run in $(seq 1 "$RUNS"); do
  log "=== run $run/$RUNS"
  local_pair "$run"
  service_pair "$run" service
done

# ---------------------------------------------------------------- GetServers with a large catalog
GS_JSON=$WORK/get_servers.json
rm -f "$GS_JSON"
if [ "$GS_SERVERS" != 0 ]; then
  [ -x "$BUILD/get_servers_bench" ] || die "no get_servers_bench in $BUILD (build target get_servers_bench)"
  log "=== GetServers: $GS_SERVERS servers, $GS_ROUNDS walks per page size"
  "$BUILD/get_servers_bench" --ferry "$FERRY" --servers "$GS_SERVERS" --rounds "$GS_ROUNDS" --work "$WORK/get-servers" \
    --json "$GS_JSON" >"$LOGS/get_servers.md" 2>"$LOGS/get_servers.err" || { cat "$LOGS/get_servers.err" >&2; die "get_servers_bench failed"; }
  cat "$LOGS/get_servers.md" >&2
fi

# ---------------------------------------------------------------- report
T_END=$(date +%s.%N)
{
  machine_facts
  echo "ferry=$("$FERRY" --version 2>&1 | head -n1 || true) ($FERRY_ORIG, sha256 $(sha256sum "$FERRY" | cut -c1-12))"
  echo "loadavg_start=$LOAD_START"
  echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wall_seconds=$(awk -v a="$T_START" -v b="$T_END" 'BEGIN{printf "%.0f", b-a}')"
} >"$WORK/machine.txt"

python3 - "$RAW" "$WORK/machine.txt" "$DATA" "$GS_JSON" "$OUT/service-results.json" "$RUNS" "$SIZE" "$POLL_MS" <<'EOF'
import json, os, statistics, sys
raw, machine_f, data_dir, gs_f, out_json, runs, size, poll = sys.argv[1:9]
recs = [json.loads(l) for l in open(raw) if l.strip()]
machine = dict(l.rstrip("\n").split("=", 1) for l in open(machine_f) if "=" in l)
disk = json.load(open(os.path.join(data_dir, "gen.json")))
mutation = json.load(open(os.path.join(data_dir, "mutate.json")))
gs = json.load(open(gs_f)) if os.path.exists(gs_f) else None
MiB, GiB = 1 << 20, 1 << 30
def med(rs, k):
    xs = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(xs) if xs else None
def group(path, kind): return [r for r in recs if r["path"] == path and r["kind"] == kind]
def fb(x): return "-" if x is None else (f"{x / MiB:,.1f} MiB" if x < GiB else f"{x / GiB:.3f} GiB")
def f2(x): return "-" if x is None else f"{x:.2f}"
def fm(kib): return "-" if kib is None else f"{kib / 1024:,.0f}"
summary = {}
L = [f"## ferry service benchmark — {size} GiB sparse disk, median of {runs} run(s)", ""]
L.append(f"Disk: {fb(disk['size'])} apparent, {fb(disk['data_bytes'])} data in {disk['extents']} extents, seed {disk['seed']} "
         f"(bench/gen_disk.py, as bench/run.sh); incremental after {mutation['bytes_changed']:,} bytes changed.")
L.append(f"Connector heartbeat every {poll} ms (`--poll-interval-ms {poll}`); encrypted job / encrypted local store.")
L.append("Service seconds: StartOnDemandReplicationRun accepted → run COMPLETED, from the server's log (ms); "
         "`runs start --wait` polls once a second, so its wall time is up to 1 s longer.")
L.append("Run k of each path runs back to back (local, then service), so \"per-pair ratios\" divides the two runs of the same "
         "minutes; their median is steadier than the ratio of medians when the machine's speed drifts.")
L.append("")
L.append("| Operation | Path | Seconds (median) | Service ÷ local | per-pair ratios (median) | all runs | CLI wall s | pickup s | connector replicate s | finish s | CPU s (server + connector) | Peak RSS MiB (server / connector) | Uploaded | Stored |")
L.append("|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for kind, title in (("full", "Full replication"), ("incr", f"Incremental ({mutation['percent']}% mutated)")):
    loc = group("local", kind)
    lm = med(loc, "seconds")
    summary[f"{kind}/local"] = {"seconds_median": lm, "seconds_all": [r["seconds"] for r in loc],
                                "cpu_seconds_median": med(loc, "cpu_seconds"), "stored_bytes_median": med(loc, "stored_bytes"),
                                "rss_kib_max": max((r["rss_kib"] for r in loc), default=None)}
    L.append(f"| {title} | local `ferry replicate` | {f2(lm)} | 1.00× | - | {' '.join(f2(r['seconds']) for r in loc)} | - | - | - | - | "
             f"{f2(med(loc, 'cpu_seconds'))} | {fm(summary[f'{kind}/local']['rss_kib_max'])} | - | {fb(med(loc, 'stored_bytes'))} |")
    for path, label in (("service", "connector → server (every chunk verified and sealed by the server)"),):
        rs = group(path, kind)
        if not rs: continue
        sm = med(rs, "seconds")
        ratio = sm / lm if sm and lm else None
        by_run = {r["run"]: r["seconds"] for r in loc}
        pairs = [r["seconds"] / by_run[r["run"]] for r in rs if by_run.get(r["run"])]
        pair_med = statistics.median(pairs) if pairs else None
        s = {k + "_median": med(rs, k) for k in ("seconds", "cli_seconds", "pickup_seconds", "replicate_seconds", "finish_seconds",
                                                  "server_cpu_seconds", "connector_cpu_seconds", "bytes_uploaded", "stored_bytes")}
        s.update({"seconds_all": [r["seconds"] for r in rs], "ratio_vs_local": ratio, "pair_ratios": pairs, "pair_ratio_median": pair_med,
                  "server_peak_rss_kib_max": max(r["server_peak_rss_kib"] for r in rs),
                  "connector_peak_rss_kib_max": max(r["connector_peak_rss_kib"] for r in rs)})
        summary[f"{kind}/{path}"] = s
        pair_txt = "-" if pair_med is None else f"{' '.join(f'{x:.2f}' for x in pairs)} (**{pair_med:.2f}×**)"
        L.append(f"| {title} | {label} | {f2(sm)} | {'-' if ratio is None else f'{ratio:.2f}×'} | {pair_txt} | {' '.join(f2(r['seconds']) for r in rs)} | "
                 f"{f2(s['cli_seconds_median'])} | {f2(s['pickup_seconds_median'])} | {f2(s['replicate_seconds_median'])} | "
                 f"{f2(s['finish_seconds_median'])} | {f2(s['server_cpu_seconds_median'])} + {f2(s['connector_cpu_seconds_median'])} | "
                 f"{fm(s['server_peak_rss_kib_max'])} / {fm(s['connector_peak_rss_kib_max'])} | "
                 f"{fb(s['bytes_uploaded_median'])} | {fb(s['stored_bytes_median'])} |")
L.append("")
if gs:
    L.append(f"GetServers with {gs['servers']:,} servers in the catalog (bench/get_servers_bench; {gs['rounds']} walks through every page "
             f"per page size, signed requests on one kept-alive connection; catalog filled in {gs['fillSeconds']:.1f} s):")
    L.append("")
    L.append("| maxResults | pages per walk | page JSON bytes | median ms | p90 ms | p99 ms | max ms | one whole walk, ms |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in gs["results"]:
        L.append(f"| {r['maxResults']} | {r['pagesPerWalk']} | {r['firstPageBytes']:,} | {r['medianMs']:.2f} | {r['p90Ms']:.2f} | "
                 f"{r['p99Ms']:.2f} | {r['maxMs']:.2f} | {r['walkMedianMs']:.0f} |")
    L.append("")
mem = int(machine.get("mem_kib", "0")) / (1 << 20)
L.append(f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), {mem:.1f} GiB RAM, {machine.get('os')}, kernel {machine.get('kernel')}, "
         f"filesystem {machine.get('fs')}. ferry: {machine.get('ferry')}. Load average at start {machine.get('loadavg_start')}, "
         f"at end {machine.get('loadavg_end')}. Benchmark wall time: {machine.get('wall_seconds')} s.")
print("\n".join(L))
json.dump({"summary": summary, "records": recs, "get_servers": gs, "machine": machine, "disk": disk, "mutation": mutation},
          open(out_json, "w"), indent=2)
EOF
log "results: $OUT/service-results.json"
