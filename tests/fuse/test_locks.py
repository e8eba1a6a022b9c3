"""Locks across mounts (fuse/locks.c): flock(2) and fcntl byte-range locks between
processes on different mounts of one PostgreSQL database.

- processes on two mounts increment a counter in one file 1,000 times each under the
  lock (flock, fcntl F_SETLKW, F_OFD_SETLKW): the file ends at exactly 2,000; three
  mounts 400 times each: 1,200;
- F_SETLK fails with EAGAIN while another mount holds the range, F_GETLK names it,
  ranges that do not overlap and read locks do not conflict;
- kill -9 of a mount whose process holds a lock: the other mount gets it within
  -sessionTimeout plus a margin;
- a circle of F_SETLKW waits across mounts (two and three processes): exactly one gets
  EDEADLK, the others their locks;
- the kernel's cache under locks: kept while no other mount announced a change (no
  READ reaches the mount), dropped when one did (the new bytes are read);
- sqlite3 (rollback journal, which relies on fcntl locks) from two mounts in turn and
  at the same time; git clone into one mount, git status / log from the other.
"""

import errno
import fcntl
import os
import selectors
import shutil
import sqlite3
import struct
import subprocess
import sys
import time

import pytest
import requests

from kelp_fuse_conftest import need, read_file, run, wait_until, write_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import promtext  # noqa: E402

TIMEOUT_S = 3


@pytest.fixture(params=["pg"])
def engine(request):
    return request.param


def two_mounts(kelp, n=2, args=()):
    kelp.start_server()
    meta = kelp.new_meta()
    return meta, [kelp.mount(["-sessionTimeout=%d" % TIMEOUT_S] + list(args), meta=meta)
                  for _ in range(n)]


def run_counters(mounts, mode, n):
    write_file(mounts[0].path("counter"), b"%12d" % 0)
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "lockcounter.py"), mode,
                               m.path("counter"), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for m in mounts]
    deadline = time.monotonic() + 600
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("%d locked increments per mount did not finish in 600 s" % n)
        assert p.returncode == 0, err.decode()
        print(out.decode().strip())
    for m in mounts:
        assert int(read_file(m.path("counter"))) == n * len(mounts)


@pytest.mark.watchdog(900)
@pytest.mark.parametrize("mode", ["flock", "fcntl", "ofd"])
def test_counter_under_lock_across_mounts(kelp, mode):
    _, mounts = two_mounts(kelp)
    run_counters(mounts, mode, 1000)


@pytest.mark.watchdog(900)
def test_counter_under_lock_three_mounts(kelp):
    _, mounts = two_mounts(kelp, 3)
    run_counters(mounts, "fcntl", 400)


def flock_struct(kind, start, length):
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def test_setlk_getlk_across_mounts(kelp):
    _, (a, b) = two_mounts(kelp)
    write_file(a.path("f"), b"x" * 1000)
    holder = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0)     # bytes 0-99 write-locked
fcntl.lockf(fd, fcntl.LOCK_SH, 100, 500)   # bytes 500-599 read-locked
print("locked", flush=True)
sys.stdin.readline()
""", a.path("f")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        fd = os.open(b.path("f"), os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
            assert e.value.errno in (errno.EAGAIN, errno.EACCES)
            got = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK,
                                                       flock_struct(fcntl.F_WRLCK, 50, 10)))
            assert got[0] == fcntl.F_WRLCK and got[2] == 0 and got[3] == 100, got
            # no overlap: fine; a read lock on a read-locked range: fine; write: no
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 100)
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 50, 520)
            with pytest.raises(OSError):
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 590)
            got = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK,
                                                       flock_struct(fcntl.F_RDLCK, 0, 0)))
            assert got[0] == fcntl.F_WRLCK, got
            # flock is independent of fcntl locks
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            # the holder exits: its locks go (close), ours can be taken
            holder.stdin.write(b"\n")
            holder.stdin.flush()
            holder.wait(30)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        finally:
            os.close(fd)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # our close released everything: A can lock the whole file
    fd = os.open(a.path("f"), os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", ["flock", "fcntl"])
def test_killed_mount_releases_its_locks(kelp, mode):
    _, (a, b) = two_mounts(kelp)
    write_file(a.path("f"), b"data")
    holder = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)
print("locked", flush=True)
time.sleep(600)
""", b.path("f"), mode], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        fd = os.open(a.path("f"), os.O_RDWR)
        try:
            lock = ((lambda nb: fcntl.flock(fd, fcntl.LOCK_EX | nb)) if mode == "flock" else
                    (lambda nb: fcntl.lockf(fd, fcntl.LOCK_EX | nb, 0, 0)))
            with pytest.raises(OSError):
                lock(fcntl.LOCK_NB)
            b.crash()   # kill -9 of the mount daemon; the holder process lives on
            t0 = time.monotonic()
            lock(0)     # waits (F_SETLKW / blocking flock) until B's session is cleaned
            took = time.monotonic() - t0
            print("lock taken %.1f s after the kill" % took)
            assert took < TIMEOUT_S + 6, took
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()


DEADLOCKER = r"""
import fcntl, os, sys, time
path, mine, theirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, mine)
print("holding", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
try:
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, theirs)       # F_SETLKW
    print("got %.2f" % (time.monotonic() - t0), flush=True)
    sys.stdin.readline()
except OSError as e:
    print("errno %d %.2f" % (e.errno, time.monotonic() - t0), flush=True)
os.close(fd)    # its locks go: the others go on
"""


@pytest.mark.parametrize("n", [2, 3])
def test_deadlock_across_mounts(kelp, n):
    """n processes on two mounts, each holding 10 bytes and then waiting (F_SETLKW) for
    the next one's: a circle. Exactly one gets EDEADLK (as Linux does locally), within
    seconds; once it gives up its range, the others get theirs in turn."""
    _, mounts = two_mounts(kelp)
    write_file(mounts[0].path("f"), b"x" * 100)
    procs = [subprocess.Popen([sys.executable, "-c", DEADLOCKER,
                               mounts[i % 2].path("f"), str(10 * i), str(10 * ((i + 1) % n))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for i in range(n)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == b"holding"
        for p in procs:
            p.stdin.write(b"\n")
            p.stdin.flush()
        # every one answers: one EDEADLK, then the others get their ranges one by one
        # (each releases when told to, after the next one's answer)
        answers = [None] * n
        deadline = time.monotonic() + 30
        waiting = set(range(n))
        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            sel.register(p.stdout, selectors.EVENT_READ, i)
        while waiting:
            left = deadline - time.monotonic()
            assert left > 0, "no answer from %s within 30 s: %s" % (sorted(waiting), answers)
            for key, _ in sel.select(timeout=left):
                i = key.data
                line = procs[i].stdout.readline().decode().split()
                if i not in waiting or not line:
                    continue
                waiting.discard(i)
                sel.unregister(procs[i].stdout)
                answers[i] = line
                if line[0] == "got":
                    procs[i].stdin.write(b"\n")   # done: release
                    procs[i].stdin.flush()
        print(answers)
        dead = [a for a in answers if a[0] == "errno"]
        assert len(dead) == 1 and int(dead[0][1]) == errno.EDEADLK, answers
        assert float(dead[0][2]) < 10, answers
        assert sum(a[0] == "got" for a in answers) == n - 1, answers
        for p in procs:
            assert p.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _reads(port):
    """READ requests the mount has answered so far (its /metrics). A request is counted
    when its callback returns, just after its reply: the count is taken once two scrapes
    0.1 s apart agree."""
    def scrape():
        text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
        return promtext.total(promtext.parse(text),
                              "kelp_mount_operation_duration_seconds_count", op="read")

    last = scrape()
    for _ in range(50):
        time.sleep(0.1)
        now = scrape()
        if now == last:
            return now
        last = now
    return last


@pytest.mark.parametrize("mode", ["fcntl", "flock"])
def test_cache_kept_under_locks_until_another_mount_changes(kelp, mode):
    """A process on B re-reads a file under a lock, again and again: the kernel's pages
    stay (no READ reaches B) while no other mount changed the file; A writing under the
    lock announces the change, and B's next lock drops the pages (B reads A's bytes)."""
    kelp.start_server()
    meta = kelp.new_meta()
    port_file = str(kelp.tmp / "b.port")
    a = kelp.mount(["-sessionTimeout=%d" % TIMEOUT_S], meta=meta)
    b = kelp.mount(["-sessionTimeout=%d" % TIMEOUT_S, "-metricsPort=0",
                    "-metricsPortFile=" + port_file], meta=meta)
    with open(port_file) as f:
        port = int(f.read())
    write_file(a.path("f"), b"1" * 8192)

    def locked(fd, how):
        if mode == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX if how == "x" else fcntl.LOCK_UN)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX if how == "x" else fcntl.LOCK_UN, 0, 0)

    fd = os.open(b.path("f"), os.O_RDWR)
    try:
        locked(fd, "x")
        assert os.pread(fd, 8192, 0) == b"1" * 8192
        locked(fd, "u")
        r0 = _reads(port)
        for _ in range(5):
            locked(fd, "x")
            assert os.pread(fd, 8192, 0) == b"1" * 8192
            locked(fd, "u")
        assert _reads(port) == r0, "B's cached pages were dropped although nothing changed"
        # A writes under the lock; B's next lock sees the change
        fa = os.open(a.path("f"), os.O_RDWR)
        try:
            locked(fa, "x")
            os.pwrite(fa, b"2" * 4096, 4096)
            locked(fa, "u")
        finally:
            os.close(fa)
        locked(fd, "x")
        assert os.pread(fd, 8192, 0) == b"1" * 4096 + b"2" * 4096
        locked(fd, "u")
        assert _reads(port) > r0
        # B's own write under the lock: announced, and B's next lock keeps its pages
        # (its kernel is right about its own writes)
        locked(fd, "x")
        os.pwrite(fd, b"3" * 100, 0)
        locked(fd, "u")
        r1 = _reads(port)
        locked(fd, "x")
        assert os.pread(fd, 8192, 0) == b"3" * 100 + b"1" * 3996 + b"2" * 4096
        locked(fd, "u")
        assert _reads(port) == r1
    finally:
        os.close(fd)
    assert read_file(a.path("f")) == b"3" * 100 + b"1" * 3996 + b"2" * 4096


SQLITE_WORKER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
db.execute("PRAGMA journal_mode=DELETE")
for i in range(int(sys.argv[3])):
    db.execute("BEGIN IMMEDIATE")
    n = db.execute("SELECT count(*) FROM t").fetchone()[0]
    db.execute("INSERT INTO t (who, seen) VALUES (?, ?)", (sys.argv[2], n))
    db.execute("COMMIT")
db.close()
"""


@pytest.mark.watchdog(900)
@pytest.mark.parametrize("trash", ["-trashDays=0", "-trashDays=1"])
def test_sqlite_from_two_mounts(kelp, trash):
    """Rollback journal (fcntl locks): in turn, then at the same time; every row is
    there once, every writer saw every earlier commit, and the database is sound. With
    the trash (the default of a real mount) each deleted journal goes to /.trash, where
    the other mount must not reach it through the journal's name its kernel caches."""
    _, (a, b) = two_mounts(kelp, args=[trash])
    db = sqlite3.connect(a.path("db.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT, seen INTEGER)")
    db.close()
    # in turn: each mount adds rows after the other
    for turn in range(4):
        m = (a, b)[turn % 2]
        subprocess.run([sys.executable, "-c", SQLITE_WORKER, m.path("db.sqlite"),
                        "%s-%d" % (m.name, turn), "10"], check=True, timeout=300)
    # concurrently
    procs = [subprocess.Popen([sys.executable, "-c", SQLITE_WORKER, m.path("db.sqlite"),
                               m.name, "50"], stderr=subprocess.PIPE) for m in (a, b)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    for m in (a, b):
        db = sqlite3.connect(m.path("db.sqlite"))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT id, seen FROM t ORDER BY id").fetchall()
        db.close()
        assert len(rows) == 40 + 100
        # BEGIN IMMEDIATE then count: each writer saw exactly the rows before its own
        assert [seen for _, seen in rows] == list(range(len(rows)))
    assert not os.path.exists(a.path("db.sqlite-journal"))


def test_git_clone_then_use_from_other_mount(kelp, tmp_path):
    need("git")
    _, (a, b) = two_mounts(kelp)
    src = tmp_path / "src"
    src.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e", HOME=str(tmp_path))
    run(["git", "init", "-q", str(src)], env=env)
    for i in range(5):
        (src / ("f%d.txt" % i)).write_text("line %d\n" % i * (i + 1))
        (src / "sub").mkdir(exist_ok=True)
        (src / "sub" / ("g%d" % i)).write_bytes(os.urandom(1000 * i))
        run(["git", "-C", str(src), "add", "-A"], env=env)
        run(["git", "-C", str(src), "commit", "-qm", "commit %d" % i], env=env)
    run(["git", "clone", "-q", str(src), a.path("repo")], env=env)
    log_src = run(["git", "-C", str(src), "log", "--format=%H %s"], env=env).stdout
    for m in (a, b):
        st = run(["git", "-C", m.path("repo"), "status", "--porcelain"], env=env).stdout
        assert st.strip() == b"", st
        assert run(["git", "-C", m.path("repo"), "log", "--format=%H %s"],
                   env=env).stdout == log_src
        run(["git", "-C", m.path("repo"), "fsck", "--no-progress"], env=env)
    # a commit on B, seen on A
    with open(b.path("repo", "new.txt"), "w") as f:
        f.write("from B\n")
    run(["git", "-C", b.path("repo"), "add", "new.txt"], env=env)
    run(["git", "-C", b.path("repo"), "commit", "-qm", "on B"], env=env)
    time.sleep(1.5)   # the kernel's attribute cache on A (-attrCacheSec)
    assert run(["git", "-C", a.path("repo"), "log", "-1", "--format=%s"],
               env=env).stdout == b"on B\n"
    assert run(["git", "-C", a.path("repo"), "status", "--porcelain"], env=env).stdout == b""
