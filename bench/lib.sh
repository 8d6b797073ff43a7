# Shared by bench/run.sh and bench/service.sh (sourced; each script defines log and die first).

du_b() { du -sb "$1" | cut -f1; }

# warm FILE...: reads every data extent once (found with SEEK_DATA/SEEK_HOLE: reading a hole is
# not free, 64 GiB of them take minutes) so that each tool starts from the same warm page cache.
warm() {
  python3 - "$@" <<'PYEOF'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    end, pos = os.fstat(fd).st_size, 0
    while pos < end:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        while d < h:
            n = len(os.pread(fd, min(8 << 20, h - d), d))
            if n == 0:
                break
            d += n
        pos = h
    os.close(fd)
PYEOF
}

# prefault_mib MIB: writes and deletes a file that large in $WORK. On this project's VMs the first large
# page-cache allocation after other work is several times slower (the host backs guest pages lazily); doing
# this before a timed command puts every tool on the same footing (docs/benchmarks.md).
prefault_mib() {
  dd if=/dev/zero of="$WORK/prefault" bs=1M count="$1" status=none
  rm -f "$WORK/prefault"
  sync
}

# generate_disks: $DATA/disk.raw and $DATA/disk-mut.raw (its copy with $MUT_PCT % of the data changed), made by
# bench/gen_disk.py from $SIZE and $SEED, and reused while a stamp of those parameters and the generator matches.
# Sets DISK and MUT. Both benchmarks use the same cache, so they must make the disks the same way: here.
generate_disks() {
  local gen="python3 $BENCH/gen_disk.py" gen_sum stamp
  gen_sum=$(sha256sum "$BENCH/gen_disk.py" | cut -c1-16)
  DISK=$DATA/disk.raw
  MUT=$DATA/disk-mut.raw
  stamp="size=$SIZE seed=$SEED mut=$MUT_PCT gen=$gen_sum"
  if [ "$(cat "$DATA/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$DISK" ] || [ ! -f "$MUT" ]; then
    rm -f "$DATA/stamp" "$DISK" "$MUT"
    log "generating ${SIZE} GiB sparse disk (seed $SEED)"
    $gen "$DISK" --size-gib "$SIZE" --seed "$SEED" >"$DATA/gen.json"
    log "copying (cp --sparse=always) and mutating ${MUT_PCT}% of its data"
    cp --sparse=always "$DISK" "$MUT"
    $gen "$MUT" --mutate "$MUT_PCT" --seed "$SEED" >"$DATA/mutate.json"
    echo "$stamp" >"$DATA/stamp"
  else
    log "reusing generated disks in $DATA"
  fi
  log "disk: $(cat "$DATA/gen.json")"
}

# machine_facts: key=value lines describing this machine (and the file system under $WORK), for the report.
machine_facts() {
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "mem_kib=$(awk '/^MemTotal/{print $2}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "fs=$(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || echo '?')"
}
