"""On PostgreSQL, namespace changes (create, mkdir, rename, unlink, chmod, xattrs) commit
without waiting for the WAL flush, as LMDB's commits are synced only every second; what
a process relies on waits: the data's commit at close, fsync() of a file or directory,
and every change with -syncMeta. Checked with the server's WAL positions (what it has
inserted, what is flushed to disk) on a durable server whose WAL writer is slowed to
its 10 s maximum, so that nothing but the mount's own waits flushes a commit at once.
(A crash of the server would not tell: WAL written but not flushed survives a crash of
the process, and only a power loss loses it.)"""

import os
import threading
import time

import pytest

import pgserver
from kelp_fuse_conftest import write_file, read_file


@pytest.fixture
def slow_wal_pg():
    """A durable PostgreSQL (fsync on) whose WAL writer flushes lazy commits late."""
    pg = pgserver.PgServer(durable=True)
    pg.settings += ["-c", "wal_writer_delay=10000", "-c", "wal_writer_flush_after=1GB"]
    with pg:
        yield pg


def _lsn(pg, which):
    """The server's WAL insert or flush position, as a number."""
    hi, lo = pg.sql("SELECT pg_current_wal_%s_lsn()" % which).strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _flushed_after(pg, action):
    """Runs action; True when everything inserted before it is flushed after it."""
    before = _lsn(pg, "insert")
    action()
    return _lsn(pg, "flush") >= before


def _fsync(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("engine", ["pg"], indirect=True)   # LMDB: synced every second
def test_namespace_changes_are_lazy_and_durability_points_wait(slow_wal_pg, kelp):
    kelp.pg = slow_wal_pg
    kelp.start_server()
    meta = kelp.new_meta()
    a = kelp.mount(meta=meta)
    # the commit of a mkdir returns before its WAL is flushed
    lazy = 0
    for i in range(5):
        before = _lsn(slow_wal_pg, "insert")
        os.mkdir(a.path("lazy%d" % i))
        lazy += _lsn(slow_wal_pg, "flush") <= before
    assert lazy >= 3, "mkdir waited for the WAL flush %d times of 5" % (5 - lazy)
    # durability points flush what came before them: a closed file's data, fsync of a
    # directory, fsync of a file (its own lazy chmod and the create before it)
    os.mkdir(a.path("d"))
    assert _flushed_after(slow_wal_pg, lambda: write_file(a.path("d", "closed"), b"bytes"))
    os.mkdir(a.path("d", "sub"))
    assert _flushed_after(slow_wal_pg, lambda: _fsync(a.path("d"), os.O_DIRECTORY))
    os.close(os.open(a.path("synced"), os.O_CREAT | os.O_WRONLY, 0o640))
    os.chmod(a.path("synced"), 0o600)
    assert _flushed_after(slow_wal_pg, lambda: _fsync(a.path("synced")))
    # and what was lazy is there for another mount at once
    b = kelp.mount(meta=meta)
    assert read_file(b.path("d", "closed")) == b"bytes"
    assert os.path.isdir(b.path("lazy4")) and os.path.isdir(b.path("d", "sub"))
    assert os.stat(b.path("synced")).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("engine", ["pg"], indirect=True)
def test_chunks_written_before_close_are_durable_at_close(slow_wal_pg, kelp):
    """The chunks handed over while a file is written commit lazily; its close makes
    them durable, whether it has a last piece of its own to commit (eager) or not."""
    kelp.pg = slow_wal_pg
    kelp.start_server()
    a = kelp.mount(["-chunkSizeLimitMB=1"])
    block = os.urandom(1 << 20)
    for name, size in (("exact", 5 << 20), ("tail", (5 << 20) + 1234)):
        fd = os.open(a.path(name), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            done = 0
            while done < size:
                done += os.write(fd, block[:min(len(block), size - done)])
            before = _lsn(slow_wal_pg, "insert")
        finally:
            os.close(fd)
        assert _lsn(slow_wal_pg, "flush") >= before, name
        assert os.path.getsize(a.path(name)) == size
    b = kelp.mount(meta=a.meta)
    assert read_file(b.path("exact")) == block * 5


@pytest.mark.parametrize("engine", ["pg"], indirect=True)
def test_fsync_waits_for_a_restarting_database(slow_wal_pg, kelp):
    """The flush of lazy commits at fsync waits for a database that is restarting, as
    every transaction does, instead of failing the call. (A directory: a file held open
    here would be flushed by the restart's child process closing its copy of the fd.)"""
    kelp.pg = slow_wal_pg
    kelp.start_server()
    a = kelp.mount(["-timeout=60"])
    os.mkdir(a.path("d"))
    fd = os.open(a.path("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir(a.path("d", "sub"))  # a lazy commit: the fsync has to flush
        slow_wal_pg.stop_server()
        back = threading.Timer(2.0, slow_wal_pg.restart)
        back.start()
        try:
            t0 = time.monotonic()
            os.fsync(fd)
            waited = time.monotonic() - t0
        finally:
            back.join()
    finally:
        os.close(fd)
    assert waited >= 1.0, "fsync returned %.2f s into a 2 s outage" % waited
    b = kelp.mount(meta=a.meta)
    assert os.path.isdir(b.path("d", "sub"))


@pytest.mark.parametrize("engine", ["pg"], indirect=True)
def test_fsync_waits_with_synchronous_commit_off_on_the_database(slow_wal_pg, kelp):
    """synchronous_commit = off on the database makes every commit lazy, the close's
    too (the operator's choice); fsync() still reaches the disk."""
    kelp.pg = slow_wal_pg
    kelp.start_server()
    meta = kelp.new_meta()
    slow_wal_pg.sql("ALTER DATABASE %s SET synchronous_commit = off" % meta.rsplit("/", 1)[1])
    a = kelp.mount(meta=meta)
    lazy = 0
    for i in range(5):
        before = _lsn(slow_wal_pg, "insert")
        write_file(a.path("closed%d" % i), b"x")
        lazy += _lsn(slow_wal_pg, "flush") <= before
    assert lazy >= 3, "a close waited for the WAL flush %d times of 5" % (5 - lazy)

    def write_and_fsync():
        fd = os.open(a.path("synced"), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"data")
            os.fsync(fd)
        finally:
            os.close(fd)
    assert _flushed_after(slow_wal_pg, write_and_fsync)


@pytest.mark.parametrize("engine", ["pg"], indirect=True)
def test_sync_meta_waits_for_every_change(slow_wal_pg, kelp):
    kelp.pg = slow_wal_pg
    kelp.start_server()
    a = kelp.mount(["-syncMeta"])
    os.mkdir(a.path("d"))
    write_file(a.path("f"), b"x")
    changes = [lambda: os.mkdir(a.path("d", "sub")),
               lambda: os.rename(a.path("f"), a.path("g")),
               lambda: os.chmod(a.path("g"), 0o600),
               lambda: os.setxattr(a.path("g"), "user.k", b"v"),
               lambda: os.close(os.open(a.path("new"), os.O_CREAT | os.O_WRONLY, 0o644)),
               lambda: os.unlink(a.path("new")),
               lambda: os.rmdir(a.path("d", "sub"))]
    for i, change in enumerate(changes):
        before = _lsn(slow_wal_pg, "insert")
        change()
        assert _lsn(slow_wal_pg, "flush") > before, "change %d was not flushed" % i
