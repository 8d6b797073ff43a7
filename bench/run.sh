#!/usr/bin/env bash
# ferry benchmark: ferry vs restic, borg and qemu-img on the same data, in the same run.
#
#   bench/run.sh                      # full benchmark (4 GiB disk, 3 runs each)
#   BENCH_SIZE_GIB=1 BENCH_RUNS=1 bench/run.sh   # quick check
#
# Environment:
#   FERRY           ferry binary (default: <repo>/build/ferry)
#   BENCH_SIZE_GIB  apparent disk size in GiB (default 4; 37.5% of it is data)
#   BENCH_RUNS      runs per measurement; the median is reported (default 3)
#   BENCH_MUTATE_PCT percent of the data bytes changed for the incrementals (default 1)
#   BENCH_BIG_GIB   size of the sparse disk for the ferry peak-RSS run (default 16*BENCH_SIZE_GIB,
#                   i.e. 64); 0 skips that run
#   BENCH_BIG_DATA_MIB data written into that disk (default 256)
#   BENCH_TOOLS     subset of "ferry restic borg qemu" to run (default: all)
#   BENCH_SEED      generator seed (default 42)
#   BENCH_WORK      scratch directory (default <repo>/bench/out/work; generated disks are cached there)
#   BENCH_KEEP      1 keeps the repositories of the last run in BENCH_WORK
#
# Output: a Markdown table on stdout (progress goes to stderr) and bench/out/results.json.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
FERRY=${FERRY:-$ROOT/build/ferry}
SIZE=${BENCH_SIZE_GIB:-4}
RUNS=${BENCH_RUNS:-3}
MUT_PCT=${BENCH_MUTATE_PCT:-1}
BIG=${BENCH_BIG_GIB:-$(awk -v s="$SIZE" 'BEGIN{print s*16}')}
BIG_DATA_MIB=${BENCH_BIG_DATA_MIB:-256}
TOOLS=" ${BENCH_TOOLS:-ferry restic borg qemu} "
SEED=${BENCH_SEED:-42}
WORK=${BENCH_WORK:-$OUT/work}
KEEP=${BENCH_KEEP:-0}
NAME=bench-vm

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '\n!!!!!!!! BENCH FAILED: %s\n\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
has() { [[ $TOOLS == *" $1 "* ]]; }

# ---------------------------------------------------------------- dependencies
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
pkgs=(time coreutils python3)
has restic && pkgs+=(restic)
has borg && pkgs+=(borgbackup)
pkgs+=(qemu-utils)   # qemu-img compare is needed for the ferry check as well
ensure_packages "${pkgs[@]}"

if has ferry; then
  [ -x "$FERRY" ] || die "ferry binary $FERRY not found (build it, set FERRY=..., or BENCH_TOOLS without ferry)"
  "$FERRY" replicate --help >/dev/null 2>&1 || die "'$FERRY replicate --help' does not work"
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"

T_START=$(date +%s.%N)
mkdir -p "$OUT" "$WORK"
WORK=$(cd "$WORK" && pwd)
DATA=$WORK/data
LOGS=$WORK/logs
RAW=$WORK/measurements.jsonl
rm -rf "$LOGS"; mkdir -p "$DATA" "$LOGS"
FERRY_ORIG=$FERRY
if has ferry; then
  # Run a private copy: a rebuild of build/ferry during the benchmark must not mix two binaries.
  cp "$FERRY" "$WORK/ferry.bin"
  FERRY=$WORK/ferry.bin
fi
: >"$RAW"

# Everything a tool keeps outside its repository goes under WORK too.
export RESTIC_PASSWORD=bench-password RESTIC_REPOSITORY=$WORK/restic-repo RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_PASSPHRASE=bench-password BORG_REPO=$WORK/borg-repo BORG_BASE_DIR=$WORK/borg-base
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

# json_get FILE KEY [KEY...]: first present key of the (last) JSON object in FILE; "" if none.
json_get() {
  python3 - "$@" <<'EOF'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
text = open(path).read()
obj = None
try:
    obj = json.loads(text)
except ValueError:
    for line in reversed(text.splitlines()):
        try:
            obj = json.loads(line); break
        except ValueError:
            pass
def find(o, k):
    if isinstance(o, dict):
        if k in o: return o[k]
        for v in o.values():
            r = find(v, k)
            if r is not None: return r
    return None
for k in keys:
    v = find(obj, k) if obj is not None else None
    if isinstance(v, dict) and "id" in v: v = v["id"]
    if v is not None and not isinstance(v, (dict, list)):
        print(v); break
EOF
}


# measure KIND TOOL RUN CMD...: runs CMD under /usr/bin/time (after sync, untimed), fails loudly,
# appends {kind,tool,run,seconds,rss_kib} to RAW. Output of CMD goes to $LOGS/TOOL-KIND-RUN.{out,err}.
LAST_OUT=
measure() {
  local kind=$1 tool=$2 run=$3; shift 3
  local base=$LOGS/$tool-$kind-$run t0 t1 usr sys rss
  sync
  t0=$(date +%s%N)
  if ! /usr/bin/time -f '%U %S %M' -o "$base.time" "$@" >"$base.out" 2>"$base.err"; then
    {
      echo "command: $*"
      echo "--- stdout (tail)"; tail -n 20 "$base.out"
      echo "--- stderr (tail)"; tail -n 20 "$base.err"
    } >&2
    die "$tool $kind (run $run) failed"
  fi
  t1=$(date +%s%N)
  read -r usr sys rss < <(tail -n 1 "$base.time")
  LAST_OUT=$base.out
  LAST_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')
  printf '{"kind":"%s","tool":"%s","run":%d,"seconds":%s,"cpu_seconds":%s,"rss_kib":%d' \
    "$kind" "$tool" "$run" "$LAST_SECONDS" "$(awk -v u="$usr" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')" "$rss" >>"$RAW"
  log "  $tool $kind run $run: ${LAST_SECONDS}s (cpu ${usr}u+${sys}s), peak RSS $((rss / 1024)) MiB"
}
# Before each export (ferry's and qemu-img's alike): write and delete a file as large as the export.
# On this project's VMs the first large page-cache allocation after other work is several times slower
# (the host backs guest pages lazily): ferry's export, measured right after its replications, paid
# 5-8 s of system time that qemu-img, measured after a deletion, never did. This puts both on the
# same footing; docs/benchmarks.md has the details.
prefault() { prefault_mib $(( $(du -sk "$DISK" | cut -f1) / 1024 + 64 )); }  # allocated, not apparent, size
# extra KEY VALUE...: adds numeric fields to the record opened by measure; end closes it.
extra() { while [ $# -gt 0 ]; do printf ',"%s":%s' "$1" "${2:-null}" >>"$RAW"; shift 2; done; }
end() { printf '}\n' >>"$RAW"; }

# ---------------------------------------------------------------- data (cached by parameters)
generate_disks
GEN="python3 $BENCH/gen_disk.py"  # also for the big disk below
gen_sum=$(sha256sum "$BENCH/gen_disk.py" | cut -c1-16)
log "mutation: $(cat "$DATA/mutate.json")"
MUT_CHANGED=$(json_get "$DATA/mutate.json" bytes_changed)

BIGDISK=$DATA/big.raw
big_stamp="big=$BIG data=$BIG_DATA_MIB seed=$SEED gen=$gen_sum"
if has ferry && [ "$BIG" != 0 ]; then
  if [ "$(cat "$DATA/big.stamp" 2>/dev/null)" != "$big_stamp" ] || [ ! -f "$BIGDISK" ]; then
    log "generating ${BIG} GiB sparse disk with ${BIG_DATA_MIB} MiB of data"
    rm -f "$BIGDISK"
    $GEN "$BIGDISK" --size-gib "$BIG" --data-mib "$BIG_DATA_MIB" --extents 6 --seed "$((SEED + 1))" >"$DATA/big.json"
    echo "$big_stamp" >"$DATA/big.stamp"
  fi
fi

# The tools back up a file at one fixed path; the incremental swaps the mutated copy in at that
# path (hard link), so restic and borg see the same file, changed.
SRC=$WORK/src
mkdir -p "$SRC"
TARGET=$SRC/disk.raw

RESTIC_COMPRESSION=()
if has restic && restic help backup 2>&1 | grep -q -- '--compression'; then
  RESTIC_COMPRESSION=(--compression auto)
fi

cleanup_repos() {
  rm -rf "$WORK/ferry-store" "$WORK/ferry-keyring" "$WORK/ferry-export.qcow2" "$WORK/ferry-export-incr.qcow2" \
    "$WORK/restic-repo" "$WORK/restic-cache" "$WORK/borg-repo" "$WORK/borg-base" "$WORK/qemu.qcow2" \
    "$WORK/ferry-big-store" "$WORK/ferry-big-keyring"
}
cleanup_repos

log "page cache: not dropped; every input's data extents are read once right before each timed command, and 'sync' runs (untimed) before it"

# ---------------------------------------------------------------- runs
for run in $(seq 1 "$RUNS"); do
  log "=== run $run/$RUNS"

  if has ferry; then
    S=$WORK/ferry-store K=$WORK/ferry-keyring
    rm -rf "$S" "$K"
    "$FERRY" store init --store "$S" --encrypt --key-id bench --keyring "$K" >"$LOGS/ferry-init-$run.out" 2>&1 \
      || { cat "$LOGS/ferry-init-$run.out" >&2; die "ferry store init failed"; }
    base_bytes=$(du_b "$S")

    warm "$DISK"
    measure full ferry "$run" "$FERRY" replicate "$DISK" --store "$S" --name "$NAME" --keyring "$K" --json
    full_out=$LAST_OUT
    snap=$(json_get "$full_out" snapshot snapshot_id id)
    [ -n "$snap" ] || die "no snapshot id in ferry replicate output ($full_out)"
    full_bytes=$(du_b "$S")
    extra stored_bytes "$((full_bytes - base_bytes))" \
      json_bytes_read "$(json_get "$full_out" bytes_read)" json_bytes_stored "$(json_get "$full_out" bytes_stored)" \
      json_seconds "$(json_get "$full_out" seconds)"
    end

    warm "$MUT"
    measure incr ferry "$run" "$FERRY" replicate "$MUT" --store "$S" --name "$NAME" --keyring "$K" --json
    incr_out=$LAST_OUT
    snap_incr=$(json_get "$incr_out" snapshot snapshot_id id)
    incr_bytes=$(du_b "$S")
    extra stored_bytes "$((incr_bytes - full_bytes))" \
      json_bytes_read "$(json_get "$incr_out" bytes_read)" json_bytes_stored "$(json_get "$incr_out" bytes_stored)" \
      json_seconds "$(json_get "$incr_out" seconds)" mutation_bytes_changed "$MUT_CHANGED"
    end

    E=$WORK/ferry-export.qcow2
    rm -f "$E"
    prefault
    measure export ferry "$run" "$FERRY" image export "$snap" --store "$S" --keyring "$K" --format qcow2 --output "$E" --json
    extra stored_bytes "$(du_b "$E")"
    end
    log "  qemu-img compare: ferry export of snapshot $snap vs source disk"
    if ! qemu-img compare -q -f raw -F qcow2 "$DISK" "$E" >"$LOGS/compare-$run.out" 2>&1; then
      cat "$LOGS/compare-$run.out" >&2
      qemu-img compare -f raw -F qcow2 "$DISK" "$E" >&2 || true
      die "ferry export (run $run) is NOT identical to the source disk"
    fi
    rm -f "$E"
    if [ "$run" = 1 ] && [ -n "$snap_incr" ]; then
      # Untimed extra check: the incremental snapshot must give back the mutated disk.
      E2=$WORK/ferry-export-incr.qcow2
      "$FERRY" image export "$snap_incr" --store "$S" --keyring "$K" --format qcow2 --output "$E2" --json \
        >"$LOGS/ferry-export-incr.out" 2>&1 || { cat "$LOGS/ferry-export-incr.out" >&2; die "ferry export of the incremental snapshot failed"; }
      qemu-img compare -q -f raw -F qcow2 "$MUT" "$E2" \
        || die "ferry export of the incremental snapshot is NOT identical to the mutated disk"
      log "  qemu-img compare: incremental snapshot $snap_incr export matches the mutated disk"
      rm -f "$E2"
    fi
    [ "$KEEP" = 1 ] && [ "$run" = "$RUNS" ] || rm -rf "$S" "$K"
  fi

  if has restic; then
    rm -rf "$RESTIC_REPOSITORY" "$RESTIC_CACHE_DIR"
    restic init >"$LOGS/restic-init-$run.out" 2>&1 || { cat "$LOGS/restic-init-$run.out" >&2; die "restic init failed"; }
    base_bytes=$(du_b "$RESTIC_REPOSITORY")
    ln -f "$DISK" "$TARGET"
    warm "$TARGET"
    measure full restic "$run" restic backup "${RESTIC_COMPRESSION[@]}" --host bench "$TARGET"
    full_bytes=$(du_b "$RESTIC_REPOSITORY")
    extra stored_bytes "$((full_bytes - base_bytes))"; end
    ln -f "$MUT" "$TARGET"
    warm "$TARGET"
    measure incr restic "$run" restic backup "${RESTIC_COMPRESSION[@]}" --host bench "$TARGET"
    incr_bytes=$(du_b "$RESTIC_REPOSITORY")
    extra stored_bytes "$((incr_bytes - full_bytes))"; end
    [ "$KEEP" = 1 ] && [ "$run" = "$RUNS" ] || rm -rf "$RESTIC_REPOSITORY" "$RESTIC_CACHE_DIR"
  fi

  if has borg; then
    rm -rf "$BORG_REPO" "$BORG_BASE_DIR"
    borg init --encryption=repokey-blake2 >"$LOGS/borg-init-$run.out" 2>&1 \
      || { cat "$LOGS/borg-init-$run.out" >&2; die "borg init failed"; }
    base_bytes=$(du_b "$BORG_REPO")
    ln -f "$DISK" "$TARGET"
    warm "$TARGET"
    measure full borg "$run" borg create --compression zstd,1 --stats "::full" "$TARGET"
    full_bytes=$(du_b "$BORG_REPO")
    extra stored_bytes "$((full_bytes - base_bytes))"; end
    ln -f "$MUT" "$TARGET"
    warm "$TARGET"
    measure incr borg "$run" borg create --compression zstd,1 --stats "::incr" "$TARGET"
    incr_bytes=$(du_b "$BORG_REPO")
    extra stored_bytes "$((incr_bytes - full_bytes))"; end
    [ "$KEEP" = 1 ] && [ "$run" = "$RUNS" ] || rm -rf "$BORG_REPO" "$BORG_BASE_DIR"
  fi
  rm -f "$TARGET"

  if has qemu; then
    Q=$WORK/qemu.qcow2
    rm -f "$Q"
    warm "$DISK"
    prefault
    measure export qemu-img "$run" qemu-img convert -f raw -O qcow2 "$DISK" "$Q"
    extra stored_bytes "$(du_b "$Q")"; end
    rm -f "$Q"
    # qemu-img convert's default target cache mode is "unsafe": it never fsyncs. ferry's export is
    # durable when it returns, so the like-for-like figure adds the fsync.
    warm "$DISK"
    prefault
    measure export qemu-img-sync "$run" sh -c 'qemu-img convert -f raw -O qcow2 "$1" "$2" && sync "$2"' _ "$DISK" "$Q"
    extra stored_bytes "$(du_b "$Q")"; end
    rm -f "$Q"
  fi
done

# ---------------------------------------------------------------- big sparse disk, ferry peak RSS
if has ferry && [ "$BIG" != 0 ]; then
  log "=== ferry on the ${BIG} GiB sparse disk (${BIG_DATA_MIB} MiB of data), 1 run"
  S=$WORK/ferry-big-store K=$WORK/ferry-big-keyring
  rm -rf "$S" "$K"
  "$FERRY" store init --store "$S" --encrypt --key-id bench --keyring "$K" >"$LOGS/ferry-big-init.out" 2>&1 \
    || { cat "$LOGS/ferry-big-init.out" >&2; die "ferry store init failed"; }
  base_bytes=$(du_b "$S")
  warm "$BIGDISK"
  measure big ferry 1 "$FERRY" replicate "$BIGDISK" --store "$S" --name big-vm --keyring "$K" --json
  extra stored_bytes "$(($(du_b "$S") - base_bytes))" \
    json_bytes_read "$(json_get "$LAST_OUT" bytes_read)" json_bytes_stored "$(json_get "$LAST_OUT" bytes_stored)"
  end
  rm -rf "$S" "$K"
fi

# ---------------------------------------------------------------- report
T_END=$(date +%s.%N)
{
  machine_facts
  if has ferry; then echo "ferry=$("$FERRY" --version 2>&1 | head -n1 || true) ($FERRY_ORIG, sha256 $(sha256sum "$FERRY" | cut -c1-12))"; fi
  echo "restic=$(restic version 2>&1 | head -n1)"
  echo "borg=$(borg --version 2>&1 | head -n1)"
  echo "qemu-img=$(qemu-img --version 2>&1 | head -n1)"
  echo "python3=$(python3 --version 2>&1)"
  echo "restic_flags=${RESTIC_COMPRESSION[*]:-}"
  echo "wall_seconds=$(awk -v a="$T_START" -v b="$T_END" 'BEGIN{printf "%.0f", b-a}')"
} >"$WORK/machine.txt"

python3 - "$RAW" "$WORK/machine.txt" "$DATA" "$OUT/results.json" "$RUNS" "$SIZE" "$BIG" "$BIG_DATA_MIB" <<'EOF'
import json, statistics, sys, os
raw, machine_f, data_dir, out_json, runs, size, big, big_mib = sys.argv[1:9]
recs = [json.loads(l) for l in open(raw) if l.strip()]
machine = dict(l.rstrip("\n").split("=", 1) for l in open(machine_f) if "=" in l)
def load(p):
    p = os.path.join(data_dir, p)
    return json.load(open(p)) if os.path.exists(p) else None
disk, mutation, bigdisk = load("gen.json"), load("mutate.json"), load("big.json")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

groups = {}
for r in recs:
    groups.setdefault((r["kind"], r["tool"]), []).append(r)
summary = {}
for (kind, tool), rs in groups.items():
    s = {"runs": len(rs),
         "seconds_median": med([r["seconds"] for r in rs]),
         "seconds_all": [r["seconds"] for r in rs],
         "cpu_seconds_median": med([r.get("cpu_seconds") for r in rs]),
         "rss_mib_median": med([r["rss_kib"] / 1024 for r in rs]),
         "rss_mib_max": max(r["rss_kib"] for r in rs) / 1024,
         "stored_bytes_median": med([r.get("stored_bytes") for r in rs])}
    for k in ("json_bytes_read", "json_bytes_stored", "json_seconds"):
        if any(r.get(k) is not None for r in rs):
            s[k + "_median"] = med([r.get(k) for r in rs])
    summary[f"{kind}/{tool}"] = s

def ratio(a, b):
    return a / b if a is not None and b else None

for key, s in summary.items():
    kind, tool = key.split("/")
    f = summary.get(f"{kind}/ferry")
    if f and tool != "ferry":
        s["seconds_vs_ferry"] = ratio(s["seconds_median"], f["seconds_median"])
        s["cpu_vs_ferry"] = ratio(s["cpu_seconds_median"], f["cpu_seconds_median"])
        s["bytes_vs_ferry"] = ratio(s["stored_bytes_median"], f["stored_bytes_median"])
        s["rss_vs_ferry"] = ratio(s["rss_mib_median"], f["rss_mib_median"])

GiB, MiB = 1 << 30, 1 << 20
def fs(x): return "-" if x is None else f"{x:.2f}"
def fr(x): return "-" if x is None else f"{x:.2f}×"
def fb(x):
    if x is None: return "-"
    return f"{x / MiB:,.1f} MiB" if x < GiB else f"{x / GiB:.3f} GiB"
def fm(x): return "-" if x is None else f"{x:,.0f}"

kinds = [("full", "Full backup / replication", {"ferry": "ferry replicate", "restic": "restic backup", "borg": "borg create zstd,1"}),
         ("incr", f"Incremental ({mutation['percent'] if mutation else '?'}% of data mutated)", {"ferry": "ferry replicate", "restic": "restic backup", "borg": "borg create zstd,1"}),
         ("export", "Raw → qcow2", {"ferry": "ferry image export", "qemu-img": "qemu-img convert (no fsync)", "qemu-img-sync": "qemu-img convert + sync"})]
L = []
L.append(f"## ferry benchmark — {size} GiB sparse disk, median of {runs} run(s)")
L.append("")
if disk:
    L.append(f"Disk: {fb(disk['size'])} apparent, {fb(disk['data_bytes'])} data in {disk['extents']} extents "
             f"(⅓ random, ⅓ syslog-like text, ⅓ {disk['dup_distinct_blocks']} distinct 1 MiB blocks repeated), seed {disk['seed']}.")
if mutation:
    L.append(f"Mutation: {mutation['clusters']} clusters of 4×64 KiB, {mutation['bytes_changed']:,} bytes changed "
             f"({mutation['bytes_written']:,} written).")
L.append("Page cache: not dropped (not possible everywhere); the data of every input was read once right before each timed "
         "command so all tools start from a warm cache, and `sync` ran (untimed) before each.")
L.append("Ratios are tool ÷ ferry for the same kind of operation: >1 means ferry is faster / smaller / leaner.")
L.append("Stored = growth of the repository (`du -sb`); for incrementals the bytes added by that run; for qcow2 the output file size.")
L.append("")
L.append("| Operation | Tool | Seconds (median) | Time vs ferry | CPU s (user+sys) | Stored | Stored vs ferry | Peak RSS MiB | RSS vs ferry |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for kind, title, names in kinds:
    for tool, label in names.items():
        s = summary.get(f"{kind}/{tool}")
        if not s: continue
        L.append(f"| {title} | {label} | {fs(s['seconds_median'])} | {fr(s.get('seconds_vs_ferry')) if tool != 'ferry' else '1.00×'} | {fs(s['cpu_seconds_median'])} | "
                 f"{fb(s['stored_bytes_median'])} | {fr(s.get('bytes_vs_ferry')) if tool != 'ferry' else '1.00×'} | "
                 f"{fm(s['rss_mib_median'])} | {fr(s.get('rss_vs_ferry')) if tool != 'ferry' else '1.00×'} |")
L.append("")
extra = {}
fi = summary.get("incr/ferry")
if fi and mutation:
    changed = mutation["bytes_changed"]
    extra["mutation_bytes_changed"] = changed
    extra["ferry_incr_store_growth_bytes"] = fi["stored_bytes_median"]
    extra["ferry_incr_growth_per_changed_byte"] = ratio(fi["stored_bytes_median"], changed)
    if fi.get("json_bytes_stored_median") is not None:
        extra["ferry_incr_json_bytes_stored"] = fi["json_bytes_stored_median"]
        extra["ferry_incr_json_bytes_stored_per_changed_byte"] = ratio(fi["json_bytes_stored_median"], changed)
    L.append("| Incremental efficiency | bytes |  ÷ bytes changed |")
    L.append("|---|---:|---:|")
    L.append(f"| bytes changed by the mutation | {changed:,} | 1.00 |")
    L.append(f"| ferry store growth (`du -sb`) | {fi['stored_bytes_median']:,.0f} | {fs(extra['ferry_incr_growth_per_changed_byte'])} |")
    if "ferry_incr_json_bytes_stored" in extra:
        L.append(f"| ferry `bytes_stored` (JSON) | {extra['ferry_incr_json_bytes_stored']:,.0f} | {fs(extra['ferry_incr_json_bytes_stored_per_changed_byte'])} |")
    for t in ("restic", "borg"):
        s = summary.get(f"incr/{t}")
        if s:
            L.append(f"| {t} repository growth | {s['stored_bytes_median']:,.0f} | {fs(ratio(s['stored_bytes_median'], changed))} |")
    L.append("")
fb_ = summary.get("big/ferry")
if fb_:
    L.append(f"Ferry on a {big} GiB sparse disk with {big_mib} MiB of data (1 run, full replication, encrypted): "
             f"{fs(fb_['seconds_median'])} s ({fs(fb_['cpu_seconds_median'])} CPU s), peak RSS {fm(fb_['rss_mib_median'])} MiB, store growth {fb(fb_['stored_bytes_median'])}.")
    L.append("")
mem = int(machine.get("mem_kib", 0))
L.append(f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), {mem / 1048576:.1f} GiB RAM, "
         f"{machine.get('os')}, kernel {machine.get('kernel')}, filesystem {machine.get('fs')}.")
L.append(f"Tools: {machine.get('ferry', 'ferry not run')}; {machine.get('restic')}; {machine.get('borg')}; "
         f"{machine.get('qemu-img')}. restic flags: `{machine.get('restic_flags') or '(none)'}`.")
L.append(f"Benchmark wall time: {machine.get('wall_seconds')} s.")
md = "\n".join(L)
print(md)
res = {"markdown": md, "machine": machine, "params": {"size_gib": float(size), "runs": int(runs),
       "big_gib": float(big), "big_data_mib": int(big_mib)},
       "disk": disk, "mutation": mutation, "big_disk": bigdisk,
       "summary": summary, "incremental_efficiency": extra, "measurements": recs}
json.dump(res, open(out_json, "w"), indent=2)
EOF
log "results: $OUT/results.json"
[ "$KEEP" = 1 ] || { cleanup_repos; rm -f "$WORK/ferry.bin"; }
