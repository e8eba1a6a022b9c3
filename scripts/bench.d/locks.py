#!/usr/bin/env python3
"""scripts/bench locks: fcntl locks through the mount, LMDB (the kernel keeps the locks)
against PostgreSQL (fuse/locks.c: every lock change is a transaction in the database).
A throwaway PostgreSQL 15 on this host with its default durability (fsync on,
synchronous_commit on). Needs root (mounts).

Per engine, one mount (PostgreSQL: two mounts of one database for the last test):
  pairs     N fcntl lock/unlock pairs (F_SETLKW write lock of the whole file, F_UNLCK)
            by one process, no I/O between;
  read      the same with a 4 KiB pread under each lock (a reader: nothing to store);
  counter   lock, read the counter, write it + 1, unlock (a writer);
  sqlite    tests/fuse/test_coherence.py's workload: one writer process doing TXNS
            rollback-journal transactions (two inserts, an update every 7th) while two
            reader processes query the database in a loop; the writer's time;
  sqlite2   two writer processes of TXNS / 3 transactions each at once (PostgreSQL: one
            on each mount of one database; LMDB: both on the one mount).
N (500) and TXNS (150) change the sizes. The mounts run with -trashDays=0 (as the tests). usage: locks.py [KELP_BINARY]
"""

import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fuse"))
import pgserver  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import mounted, wait_for  # noqa: E402

KELP = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "daemons", "kelp")
N = int(os.environ.get("N", "500"))
TXNS = int(os.environ.get("TXNS", "150"))

SQL_WRITER = r"""
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=120, isolation_level=None)
c.execute("PRAGMA journal_mode=DELETE")
for i in range(n):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t (v, pad) VALUES (?, randomblob(700))", (i + 1,))
    c.execute("INSERT INTO t (v, pad) VALUES (?, randomblob(3000))", (-(i + 1),))
    if i % 7 == 0:
        c.execute("UPDATE t SET pad = randomblob(1500) WHERE id = ?", (i // 2 + 1,))
    c.execute("COMMIT")
c.close()
"""

SQL_READER = r"""
import os, sqlite3, sys, time
db = sys.argv[1]
n = 0
end = time.monotonic() + 300
while time.monotonic() < end and not os.path.exists(db + ".done"):
    c = sqlite3.connect(db, timeout=120, isolation_level=None)
    s = c.execute("SELECT coalesce(sum(v), 0) FROM t").fetchone()[0]
    c.close()
    assert s == 0, s
    n += 1
print(n)
"""


def load():
    return open("/proc/loadavg").read().split()[0]


class Counts:
    """PostgreSQL's transactions and WAL flushes (pg_stat_database, pg_stat_wal) over a
    step: what a lock costs the database, independent of the machine's load."""

    def __init__(self, pg, url):
        self.pg, self.db = pg, (url.rsplit("/", 1)[1] if url else None)
        self.start = self.now()

    def now(self):
        if not self.db:
            return (0, 0)
        time.sleep(0.6)   # the statistics collector's flush (PGSTAT_MIN_INTERVAL: 1 s)
        out = self.pg.sql("SELECT pg_stat_force_next_flush()", db=self.db, check=False)
        out = self.pg.sql("SELECT xact_commit + xact_rollback, (SELECT wal_sync FROM "
                          "pg_stat_wal) FROM pg_stat_database WHERE datname = '%s'"
                          % self.db, db=self.db)
        return tuple(int(x) for x in out.strip().split("|"))

    def per(self, n):
        end = self.now()
        return ((end[0] - self.start[0]) / n, (end[1] - self.start[1]) / n)


def lock_pairs(path, n, mode):
    fd = os.open(path, os.O_RDWR)
    try:
        t0 = time.monotonic()
        for i in range(n):
            fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)
            if mode == "read":
                os.pread(fd, 4096, 0)
            elif mode == "counter":
                v = int(os.pread(fd, 12, 0) or b"0")
                os.pwrite(fd, b"%12d" % (v + 1), 0)
            fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0)
        return n / (time.monotonic() - t0)
    finally:
        os.close(fd)


def new_db(path):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=DELETE")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
    c.close()


def sqlite_one(d):
    db = os.path.join(d, "one.sqlite")
    new_db(db)
    readers = [subprocess.Popen([sys.executable, "-c", SQL_READER, db], stdout=subprocess.PIPE)
               for _ in range(2)]
    try:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", SQL_WRITER, db, str(TXNS)], check=True,
                       timeout=900)
        took = time.monotonic() - t0
    finally:
        open(db + ".done", "wb").close()
        queries = [int(r.communicate(timeout=300)[0] or 0) for r in readers]
    return took, sum(queries)


def sqlite_two(d1, d2):
    new_db(os.path.join(d1, "two.sqlite"))
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", SQL_WRITER, os.path.join(d, "two.sqlite"),
                               str(TXNS // 3)]) for d in (d1, d2)]
    for p in procs:
        if p.wait(900) != 0:
            raise SystemExit("sqlite writer failed")
    c = sqlite3.connect(os.path.join(d1, "two.sqlite"))
    assert c.execute("SELECT count(*), sum(v) FROM t").fetchone() == (TXNS // 3 * 4, 0)
    c.close()
    return time.monotonic() - t0


def main():
    work = tempfile.mkdtemp(prefix="kelp-bench-locks-", dir="/var/tmp")
    procs, mounts = [], []
    pg = pgserver.PgServer(durable=True)
    try:
        pg.start()
        print("machine: %d cores, load %s at the start; %s" % (os.cpu_count(), load(), KELP))
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
            p = subprocess.Popen([KELP, "mount", "-dir=" + mnt, "-master=" + master,
                                  "-meta=" + meta, "-trashDays=0",
                                  "-cacheDir=" + os.path.join(work, name + "-cache")],
                                 stderr=open(os.path.join(work, name + ".log"), "w"))
            procs.append(p)
            mounts.append(mnt)
            wait_for("mount " + name, lambda: mounted(mnt))
            return mnt

        pg_meta = pg.new_database()
        rows = []
        for engine, meta in (("lmdb", os.path.join(work, "meta")), ("postgres", pg_meta)):
            a = mount(engine, meta)
            b = mount(engine + "2", pg_meta) if engine == "postgres" else a
            f = os.path.join(a, "lockfile")
            with open(f, "wb") as out:
                out.write(b"%12d" % 0 + b"x" * 8180)
            r = {"engine": engine}
            url = pg_meta if engine == "postgres" else None
            for mode in ("pairs", "read", "counter"):
                c = Counts(pg, url)
                r[mode] = lock_pairs(f, N, mode)
                r[mode + "_db"] = c.per(N)
            assert int(open(f, "rb").read(12)) == N
            c = Counts(pg, url)
            r["sqlite"], r["queries"] = sqlite_one(a)
            r["sqlite_db"] = c.per(TXNS)
            c = Counts(pg, url)
            r["sqlite2"] = sqlite_two(a, b)
            r["sqlite2_db"] = c.per(TXNS // 3 * 2)
            rows.append(r)
            print("  %s done (load %s)" % (engine, load()), flush=True)
        print("%d lock/unlock pairs; sqlite: %d transactions (+2 readers), 2 x %d at once"
              % (N, TXNS, TXNS // 3))
        print("%-9s %12s %12s %12s %14s %9s %12s" % ("engine", "pairs/s", "read/s",
                                                   "counter/s", "sqlite (s)", "queries",
                                                   "sqlite2 (s)"))
        for r in rows:
            print("%-9s %12.0f %12.0f %12.0f %14.1f %9d %12.1f" % (
                r["engine"], r["pairs"], r["read"], r["counter"], r["sqlite"], r["queries"],
                r["sqlite2"]))
        pr = [r for r in rows if r["engine"] == "postgres"][0]
        print("postgres, per pair / per sqlite transaction: database transactions, WAL "
              "flushes (the sqlite readers' transactions included)")
        for k in ("pairs", "read", "counter", "sqlite", "sqlite2"):
            print("  %-8s %6.1f %6.1f" % ((k,) + pr[k + "_db"]))
        print("load at the end: %s" % load())
    finally:
        for m in mounts:
            subprocess.run(["fusermount3", "-u", "-z", m], stderr=subprocess.DEVNULL)
        for p in procs:
            p.kill()
            p.wait()
        pg.stop()
        if os.environ.get("KEEP"):
            print("logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
