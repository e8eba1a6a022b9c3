#!/usr/bin/env python3
"""scripts/bench meta: the mount's metadata engines, LMDB against PostgreSQL 15 (a
throwaway server on this host with its default durability: fsync on,
synchronous_commit on). Needs root (mounts, drop_caches).

  1. the metadata layer alone (tests/bench_meta: create+write, lookup, getattr, rename,
     unlink per second);
  2. through FUSE, per engine: create + write of FILES files of 4 KiB, stat of them
     after dropping the caches, sequential write and read of SIZE_MB MiB;
     (PostgreSQL twice: as configured, and a database with synchronous_commit = off,
     which shows what the WAL flush of every commit costs);
  3. PostgreSQL: two mounts creating FILES/2 files each in parallel in different
     directories, against one mount creating FILES.
FILES (10000) and SIZE_MB (1024) shrink it for a quick look. Each mount serves its
metrics (-metricsPort): the metadata round trips of each phase (PostgreSQL) are printed
per FUSE operation of the phase (create: per file; stat: per file; read: per FUSE read).
"""

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fuse"))
import pgserver  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import mounted, wait_for  # noqa: E402

KELP = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "daemons", "kelp")
BENCH_META = os.path.join(os.path.dirname(os.path.dirname(KELP)), "tests", "bench_meta")
FILES = int(os.environ.get("FILES", "10000"))
SIZE_MB = int(os.environ.get("SIZE_MB", "1024"))


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def scrape(port_file):
    """The mount's metadata round trips and its FUSE operation counts."""
    port = int(open(port_file).read().strip())
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("kelp_mount_meta_round_trips_total "):
            out["rt"] = float(line.split()[1])
        elif line.startswith('kelp_mount_operation_duration_seconds_count{op="'):
            op = line.split('"')[1]
            out[op] = float(line.split()[1])
    return out


def create_files(d, n, src):
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(src)


def main():
    work = tempfile.mkdtemp(prefix="kelp-bench-meta-", dir="/var/tmp")
    procs, mounts = [], []
    pg = pgserver.PgServer(durable=True)
    try:
        pg.start()
        print("machine: %d cores, load %s" % (os.cpu_count(), open("/proc/loadavg").read().split()[0]))
        print("== metadata layer alone (bench_meta, 5000 files)")
        for name, spec in (("lmdb", os.path.join(work, "bm")), ("postgres", pg.new_database())):
            out = subprocess.run([BENCH_META, spec, "5000"], capture_output=True, text=True,
                                 check=True).stdout
            print("%-9s %s" % (name, " | ".join(out.strip().splitlines())))

        ready = os.path.join(work, "master")
        srv = subprocess.Popen([KELP, "server", "-dir=" + os.path.join(work, "data"),
                                "-master.port=0", "-volume.port=0", "-readyFile=" + ready],
                               stderr=open(os.path.join(work, "server.log"), "w"))
        procs.append(srv)
        wait_for("the server", lambda: os.path.exists(ready) and open(ready).read().strip())
        master = "127.0.0.1:" + open(ready).read().strip()
        time.sleep(2)   # the volume server's first heartbeat

        def mount(name, meta):
            mnt = os.path.join(work, name)
            os.makedirs(mnt, exist_ok=True)
            port_file = os.path.join(work, name + ".metrics")
            p = subprocess.Popen([KELP, "mount", "-dir=" + mnt, "-master=" + master,
                                  "-meta=" + meta,
                                  "-cacheDir=" + os.path.join(work, name + "-cache"),
                                  "-metricsPort=0", "-metricsPortFile=" + port_file],
                                 stderr=open(os.path.join(work, name + ".log"), "w"))
            procs.append(p)
            mounts.append(mnt)
            wait_for("mount " + name, lambda: mounted(mnt))
            wait_for("metrics of " + name,
                     lambda: os.path.exists(port_file) and open(port_file).read().strip())
            ports[mnt] = port_file
            return mnt

        src = os.urandom(4096)
        results = {}
        trips = {}
        ports = {}

        def count(mnt):
            return scrape(ports[mnt])

        def settle(mnt):
            """After drop_caches the kernel forgets the inodes it dropped (FORGET, a
            metadata read each on this mount): wait until that is over, so that it is
            not counted in the next phase (at most 30 s)."""
            deadline, last, since = time.monotonic() + 30, None, time.monotonic()
            while time.monotonic() < deadline:
                c = count(mnt)
                now = (c.get("forget", 0) + c.get("forget_multi", 0), c.get("rt", 0))
                if now != last:
                    last, since = now, time.monotonic()
                elif time.monotonic() - since >= 0.5:
                    return
                time.sleep(0.1)

        def per_op(engine, test, before, after, ops):
            if ops > 0:
                trips[engine, test] = (after.get("rt", 0) - before.get("rt", 0)) / ops
        pg_meta = pg.new_database()
        async_meta = pg.new_database()
        pg.sql("ALTER DATABASE %s SET synchronous_commit = off" % async_meta.rsplit("/", 1)[1])
        for engine, meta in (("lmdb", os.path.join(work, "meta")), ("async", async_meta),
                             ("postgres", pg_meta)):
            mnt = mount(engine, meta)
            c0 = count(mnt)
            t0 = time.monotonic()
            create_files(os.path.join(mnt, "small"), FILES, src)
            results[engine, "create"] = FILES / (time.monotonic() - t0)
            c1 = count(mnt)
            per_op(engine, "create", c0, c1, FILES)
            drop_caches()
            settle(mnt)
            c0 = count(mnt)
            t0 = time.monotonic()
            for i in range(FILES):
                os.stat(os.path.join(mnt, "small", "f%05d" % i))
            results[engine, "stat"] = FILES / (time.monotonic() - t0)
            c1 = count(mnt)
            per_op(engine, "stat", c0, c1, FILES)
            c0 = c1
            t0 = time.monotonic()
            subprocess.run(["dd", "if=/dev/zero", "of=" + os.path.join(mnt, "big"), "bs=1M",
                            "count=%d" % SIZE_MB, "conv=fsync", "status=none"], check=True)
            results[engine, "write"] = SIZE_MB / (time.monotonic() - t0)
            c1 = count(mnt)
            per_op(engine, "write", c0, c1, c1.get("write", 0) - c0.get("write", 0))
            drop_caches()
            settle(mnt)
            c0 = count(mnt)
            t0 = time.monotonic()
            subprocess.run(["dd", "if=" + os.path.join(mnt, "big"), "of=/dev/null", "bs=1M",
                            "status=none"], check=True)
            results[engine, "read"] = SIZE_MB / (time.monotonic() - t0)
            c1 = count(mnt)
            per_op(engine, "read", c0, c1, c1.get("read", 0) - c0.get("read", 0))
            os.unlink(os.path.join(mnt, "big"))

        # PostgreSQL: a second mount of the same database; both create at once
        m1 = mounts[-1]
        m2 = mount("postgres2", pg_meta)
        # one process per mount (threads of one process would share its interpreter lock)
        threads = [multiprocessing.Process(target=create_files,
                                           args=(os.path.join(m, "par%d" % i), FILES // 2, src))
                   for i, m in enumerate((m1, m2))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
            if t.exitcode != 0:
                raise RuntimeError("a creating process failed")
        results["postgres2", "create"] = (FILES // 2) * 2 / (time.monotonic() - t0)

        print("== through FUSE (%d files of 4 KiB, %d MiB sequential)" % (FILES, SIZE_MB))
        print("%-24s %8s %10s %7s %14s %7s" % ("test", "lmdb", "postgres", "ratio",
                                              "pg async commit", "ratio"))
        for t, unit in (("create", "files/s"), ("stat", "files/s"), ("write", "MiB/s"),
                        ("read", "MiB/s")):
            a, b, c = results["lmdb", t], results["postgres", t], results["async", t]
            print("%-24s %8.0f %10.0f %7.2f %14.0f %7.2f" % ("%s (%s)" % (t, unit), a, b, b / a,
                                                          c, c / a))
        print("metadata round trips per operation (create, stat: per file; write, read: "
              "per FUSE call):")
        for engine in ("postgres", "async"):
            print("  %-9s %s" % (engine, "  ".join(
                "%s %.3f" % (t, trips[engine, t]) for t in ("create", "stat", "write", "read")
                if (engine, t) in trips)))
        a, b = results["postgres", "create"], results["postgres2", "create"]
        print("postgres: 2 mounts creating in parallel: %.0f files/s (%.2fx one mount)" % (b, b / a))
        print("load at the end: %s" % open("/proc/loadavg").read().split()[0])
    finally:
        for m in mounts:
            subprocess.run(["fusermount3", "-u", "-z", m], stderr=subprocess.DEVNULL)
        for p in procs:
            p.kill()
            p.wait()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
