#!/usr/bin/env python3
"""Deterministic benchmark disk generator (stdlib only).

Create mode (default) writes a sparse raw disk image:
  * size  --size-gib (default $BENCH_SIZE_GIB or 4) GiB, apparent size;
  * data  --data-frac of it (default 0.375, i.e. 1.5 GiB of a 4 GiB disk), or
    --data-mib MiB, split evenly in three kinds:
      - random bytes (incompressible, unique),
      - log-like text (syslog-style lines with varying fields, ~3-6x by zstd),
      - duplicated 1 MiB blocks (--dup-blocks distinct blocks repeated many
        times, always at 1 MiB-aligned disk offsets);
  * placed in --extents extents (1 MiB-aligned) spread over the whole disk,
    with holes between them.

Mutate mode (--mutate PCT) changes PCT% of the data bytes of an existing image
in place: clusters of 4 consecutive 64 KiB runs (256 KiB) at 4 KiB-aligned
random offsets inside existing data extents (found with SEEK_DATA/SEEK_HOLE),
non-overlapping, new content of the same three-kind mix.  Prints the number of
bytes that actually changed (JSON on stdout).

Everything is derived from --seed, so the same arguments give the same bytes.
"""
import argparse
import json
import os
import random
import sys
import time

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 16 * MiB  # generation/write granularity (randbytes limit is < 256 MiB)

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
HOSTS = ["web-%02d" % i for i in range(12)] + ["db-%02d" % i for i in range(4)] + \
        ["cache-01", "lb-01", "lb-02", "batch-07"]
USERS = ["root", "deploy", "alice", "bob", "backup", "www-data", "postgres", "ci"]
PATHS = ["/api/v1/orders", "/api/v1/users", "/static/app.js", "/healthz",
         "/api/v2/search", "/login", "/logout", "/api/v1/cart", "/img/logo.png"]
UAS = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/7.88.1", "Go-http-client/1.1",
       "kube-probe/1.27", "python-requests/2.31.0"]
UNITS = ["nginx.service", "postgresql.service", "cron.service",
         "apt-daily.service", "logrotate.service", "ssh.service"]
LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class LogGen:
    """Syslog-style text; state (clock, pids) carries across calls."""

    def __init__(self, rng):
        self.r = rng
        self.t = 1_700_000_000 + rng.randrange(10_000_000)
        self.usec = 0

    def _ts(self):
        r = self.r
        self.usec += r.getrandbits(17)  # ~0-131 ms between lines
        if self.usec >= 1_000_000:
            self.t += self.usec // 1_000_000
            self.usec %= 1_000_000
        t = time.gmtime(self.t)
        return "%s %2d %02d:%02d:%02d" % (MONTHS[t.tm_mon - 1], t.tm_mday,
                                          t.tm_hour, t.tm_min, t.tm_sec)

    def _ip(self):
        g = self.r.getrandbits
        return "10.%d.%d.%d" % (g(4), g(8), g(8))

    def line(self):
        r = self.r
        g = r.getrandbits
        ts = self._ts()
        host = HOSTS[g(4) + (g(2) if g(1) else 0)]
        k = g(3)
        if k == 0:
            return "%s %s sshd[%d]: Accepted publickey for %s from %s port %d ssh2: RSA SHA256:%s\n" % (
                ts, host, 1000 + g(15), USERS[g(3)], self._ip(), 1024 + g(16),
                "".join(B64[g(6)] for _ in range(12)))
        if k == 1:
            return "%s %s kernel: [%d.%06d] eth%d: rx %d packets, %d errors, link %s\n" % (
                ts, host, self.t % 9_000_000, self.usec, g(1), g(20), g(2),
                "up" if g(3) else "down")
        if k == 2:
            return "%s %s CRON[%d]: (%s) CMD (run-parts /etc/cron.%s)\n" % (
                ts, host, 1000 + g(15), USERS[g(3)],
                ("hourly", "daily", "weekly", "monthly")[g(2)])
        if k == 3:
            return "%s %s systemd[1]: %s %s (pid %d).\n" % (
                ts, host, ("Started", "Stopped", "Reloaded", "Starting")[g(2)],
                UNITS[g(2) + g(1)], 1000 + g(15))
        if k == 4 or k == 5:
            return '%s %s nginx: %s - - "%s %s?id=%d HTTP/1.1" %d %d "-" "%s" rt=%d.%03d\n' % (
                ts, host, self._ip(), ("GET", "GET", "POST", "PUT")[g(2)],
                PATHS[g(3)], g(20), (200, 200, 200, 304, 404, 500, 301, 200)[g(3)],
                g(16), UAS[g(2)], g(1), g(10))
        if k == 6:
            return "%s %s postfix/smtpd[%d]: %s from unknown[%s]\n" % (
                ts, host, 1000 + g(15), ("connect", "disconnect", "lost connection")[g(1) + g(1)],
                self._ip())
        return "%s %s app[%d]: level=%s request_id=%08x user_id=%d latency_ms=%d msg=\"%s\"\n" % (
            ts, host, 1000 + g(15), LEVELS[g(2) + g(1)], g(32), g(20), g(12),
            ("order placed", "cache miss", "session renewed", "payment ok",
             "retrying upstream", "validation failed", "user login", "export done")[g(3)])

    def text(self, n):
        """Exactly n bytes of log text."""
        parts = []
        total = 0
        line = self.line
        while total < n:
            s = line()
            parts.append(s)
            total += len(s)
        return "".join(parts).encode()[:n]


def layout(size, data, n_ext, rng):
    """Returns [(offset, length, kind)] with kind in 0=random, 1=log, 2=dup.

    Each kind gets data/3 bytes (MiB multiples) in n_ext/3 extents of random
    sizes; extents are interleaved by kind in random order and each sits at a
    random 1 MiB-aligned offset inside its own slot of size/n_ext bytes, so the
    disk has holes between every two extents."""
    per_kind = (data // 3) // MiB  # MiB per kind
    n_per = max(1, n_ext // 3)
    n_ext = n_per * 3
    slot = (size // n_ext) // MiB * MiB
    exts = []
    for kind in range(3):
        w = [rng.uniform(0.5, 1.5) for _ in range(n_per)]
        sizes = [max(1, int(per_kind * x / sum(w))) for x in w]
        sizes[-1] += per_kind - sum(sizes)
        if sizes[-1] < 1:
            raise SystemExit("gen_disk: too many extents for the data size")
        exts += [(s * MiB, kind) for s in sizes]
    rng.shuffle(exts)
    out = []
    for i, (length, kind) in enumerate(exts):
        if length >= slot:
            raise SystemExit("gen_disk: data fraction too large for the layout "
                             "(extent %d MiB >= slot %d MiB)" % (length // MiB, slot // MiB))
        start = i * slot + rng.randrange((slot - length) // MiB) * MiB
        out.append((start, length, kind))
    return out


def create(args):
    size = int(args.size_gib * GiB) // MiB * MiB
    data = args.data_mib * MiB if args.data_mib else int(size * args.data_frac)
    rng = random.Random(args.seed)
    dup_blocks = [rng.randbytes(MiB) for _ in range(args.dup_blocks)]
    exts = layout(size, data, args.extents, rng)
    log = LogGen(random.Random(args.seed * 7919 + 1))
    rnd = random.Random(args.seed * 7919 + 2)
    dup_pick = random.Random(args.seed * 7919 + 3)
    t0 = time.time()
    written = [0, 0, 0]
    with open(args.path, "wb") as f:
        f.truncate(size)
        for off, length, kind in exts:
            f.seek(off)
            left = length
            while left:
                n = min(CHUNK, left)
                if kind == 0:
                    buf = rnd.randbytes(n)
                elif kind == 1:
                    buf = log.text(n)
                else:
                    buf = b"".join(dup_blocks[dup_pick.randrange(len(dup_blocks))]
                                   for _ in range(n // MiB))
                f.write(buf)
                left -= n
            written[kind] += length
    res = {"path": args.path, "size": size, "data_bytes": sum(written),
           "random_bytes": written[0], "log_bytes": written[1], "dup_bytes": written[2],
           "dup_distinct_blocks": args.dup_blocks, "extents": len(exts),
           "seed": args.seed, "seconds": round(time.time() - t0, 2)}
    print(json.dumps(res))


def data_extents(fd):
    """[(start, end)] data extents of a sparse file via SEEK_DATA/SEEK_HOLE."""
    end = os.fstat(fd).st_size
    out = []
    pos = 0
    while pos < end:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no more data
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h))
        pos = h
    return out


def mutate(args):
    RUN = 64 * KiB
    CLUSTER = 4 * RUN
    rng = random.Random(args.seed * 104729 + 17)
    log = LogGen(random.Random(args.seed * 104729 + 18))
    dup_rng = random.Random(args.seed)  # same dup blocks as the create step
    dup_blocks = [dup_rng.randbytes(MiB) for _ in range(args.dup_blocks)]
    t0 = time.time()
    fd = os.open(args.path, os.O_RDWR)
    try:
        exts = [(s, e) for s, e in data_extents(fd) if e - s >= CLUSTER]
        data = sum(e - s for s, e in data_extents(fd))
        if not exts:
            raise SystemExit("gen_disk: no data extents to mutate")
        target = int(data * args.mutate / 100)
        n_clusters = max(1, -(-target // CLUSTER))
        # Cumulative extent weights (usable start positions) to pick offsets.
        weights = []
        acc = 0
        for s, e in exts:
            acc += (e - s - CLUSTER) // (4 * KiB) + 1
            weights.append(acc)
        taken = []  # (start, end) of chosen clusters
        import bisect
        tries = 0
        while len(taken) < n_clusters:
            tries += 1
            if tries > n_clusters * 100:
                raise SystemExit("gen_disk: cannot place %d clusters" % n_clusters)
            x = rng.randrange(acc)
            i = bisect.bisect_right(weights, x)
            base = weights[i - 1] if i else 0
            off = exts[i][0] + (x - base) * 4 * KiB
            j = bisect.bisect_left(taken, (off, 0))
            if (j > 0 and taken[j - 1][1] > off) or (j < len(taken) and taken[j][0] < off + CLUSTER):
                continue  # overlaps an earlier cluster
            taken.insert(j, (off, off + CLUSTER))
        changed = 0
        written = 0
        for off, _ in sorted(taken):
            for r in range(4):
                pos = off + r * RUN
                kind = rng.randrange(3)
                if kind == 0:
                    new = rng.randbytes(RUN)
                elif kind == 1:
                    new = log.text(RUN)
                else:
                    b = dup_blocks[rng.randrange(len(dup_blocks))]
                    k = rng.randrange(MiB // RUN) * RUN
                    new = b[k:k + RUN]
                old = os.pread(fd, RUN, pos)
                x = (int.from_bytes(old, "little") ^ int.from_bytes(new, "little")).to_bytes(RUN, "little")
                changed += RUN - x.count(0)
                os.pwrite(fd, new, pos)
                written += RUN
        os.fsync(fd)
    finally:
        os.close(fd)
    res = {"path": args.path, "percent": args.mutate, "data_bytes": data,
           "clusters": n_clusters, "bytes_written": written, "bytes_changed": changed,
           "seconds": round(time.time() - t0, 2)}
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--size-gib", type=float, default=float(os.environ.get("BENCH_SIZE_GIB", "4")))
    p.add_argument("--data-frac", type=float, default=0.375)
    p.add_argument("--data-mib", type=int, default=0, help="data size in MiB (overrides --data-frac)")
    p.add_argument("--extents", type=int, default=48)
    p.add_argument("--dup-blocks", type=int, default=4, help="distinct 1 MiB blocks in the dup third")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--mutate", type=float, metavar="PCT", help="mutate PCT%% of the data bytes in place")
    args = p.parse_args()
    if args.mutate is not None:
        mutate(args)
    else:
        create(args)


if __name__ == "__main__":
    sys.exit(main())
