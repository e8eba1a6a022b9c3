"""POSIX details a conformance run found (issue 17): times of truncate and xattr
changes, the page cache after O_DIRECT writes (synchronous and asynchronous through
libaio), file handles (open_by_handle_at, the base of an NFS re-export), and the
mount(8) helper (generic mount flags, remount ro/rw).

Where Linux semantics are the reference, the same steps run on the local filesystem
of tmp_path (ext4 or overlay here) and the mount must behave the same."""

import ctypes
import errno
import hashlib
import mmap
import os
import shutil
import signal
import struct
import subprocess
import threading
import time

import pytest

from kelp_fuse_conftest import (MiB, expect_errno, is_mounted, need, read_file, run,
                                wait_until, write_file)

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
TICK = 0.02   # seconds between two steps whose times must differ (ns timestamps)


def _oserror(what):
    e = ctypes.get_errno()
    return OSError(e, os.strerror(e), what)


# ------------------------------------------------------------------------------ times


def _times(st):
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _truncate_steps(root, how, new_size):
    """A file of 1000 committed bytes; open; write 1000 more at its end (not stored
    yet); truncate to new_size with `how` while it is open. Returns what changed at the
    write and at the truncate, and the size seen, as booleans/ints to compare with the
    reference filesystem."""
    p = os.path.join(root, "t-%s-%d" % (how, new_size))
    write_file(p, b"a" * 1000)
    s0 = os.stat(p)
    time.sleep(TICK)
    fd = os.open(p, os.O_RDWR)
    try:
        os.pwrite(fd, b"b" * 1000, 1000)
        s1 = os.fstat(fd)
        time.sleep(TICK)
        if how == "ftruncate":
            os.ftruncate(fd, new_size)
        else:
            os.truncate(p, new_size)
        s2 = os.fstat(fd)
    finally:
        os.close(fd)
    s3 = os.stat(p)
    return {
        "size after write": s1.st_size,
        "write changed mtime": s1.st_mtime_ns > s0.st_mtime_ns,
        "write changed ctime": s1.st_ctime_ns > s0.st_ctime_ns,
        "size after truncate": s2.st_size,
        "truncate changed mtime": s2.st_mtime_ns > s1.st_mtime_ns,
        "truncate changed ctime": s2.st_ctime_ns > s1.st_ctime_ns,
        "close kept the times": (s3.st_mtime_ns, s3.st_ctime_ns) == (s2.st_mtime_ns,
                                                                      s2.st_ctime_ns),
        "data": hashlib.sha256(read_file(p)).hexdigest()[:16],
    }


@pytest.mark.parametrize("how", ["ftruncate", "truncate"])
def test_truncate_of_open_written_file_updates_mtime_and_ctime(mnt, tmp_path, how):
    # 1000: back to the size before the write (the unstored bytes are dropped), 500:
    # into the stored data, 1500: into the unstored bytes, 2000: the same size
    for new_size in (1000, 500, 1500, 2000):
        got = _truncate_steps(mnt.mnt, how, new_size)
        ref = _truncate_steps(str(tmp_path), how, new_size)
        if how == "truncate" and new_size == 2000:
            # truncate() by path to the same size: up to the filesystem (ext4 marks
            # the times, tmpfs does not); kelp marks them, as ext4
            for k in ("truncate changed mtime", "truncate changed ctime"):
                ref.pop(k)
                assert got.pop(k), k
        assert got == ref, "%s to %d: kelp %r, local filesystem %r" % (how, new_size, got,
                                                                        ref)


def _truncate_closed_steps(root):
    """truncate / ftruncate / O_TRUNC of a closed file, to a new and to the same size."""
    p = os.path.join(root, "closed")
    write_file(p, b"x" * 4096)
    out = []
    for step in ("truncate down", "truncate same", "ftruncate same", "ftruncate up",
                 "open O_TRUNC", "open O_TRUNC empty"):
        before = os.stat(p)
        time.sleep(TICK)
        if step == "truncate down":
            os.truncate(p, 100)
        elif step == "truncate same":
            os.truncate(p, 100)
        elif step.startswith("ftruncate"):
            fd = os.open(p, os.O_RDWR)
            os.ftruncate(fd, 100 if step.endswith("same") else 8192)
            os.close(fd)
        else:
            os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
        after = os.stat(p)
        out.append((step, after.st_size, after.st_mtime_ns > before.st_mtime_ns,
                    after.st_ctime_ns > before.st_ctime_ns))
    return out


def test_truncate_of_closed_file_times_match_local_filesystem(mnt, tmp_path):
    got = _truncate_closed_steps(mnt.mnt)
    ref = _truncate_closed_steps(str(tmp_path))
    # every truncate marks mtime and ctime on kelp, to the same size too (as ext4 does;
    # for truncate() by path to the same size, POSIX leaves it to the filesystem)
    assert all(changed_m and changed_c for _, _, changed_m, changed_c in got), got
    same = "truncate same"
    assert ([x for x in got if x[0] != same] == [x for x in ref if x[0] != same]), (got, ref)


def _xattr_steps(root):
    p = os.path.join(root, "x")
    write_file(p, b"data")
    out = []

    def step(name, fn):
        before = os.stat(p)
        time.sleep(TICK)
        try:
            fn()
            res = "ok"
        except OSError as e:
            res = errno.errorcode[e.errno]
        after = os.stat(p)
        out.append((name, res, after.st_mtime_ns > before.st_mtime_ns,
                    after.st_ctime_ns > before.st_ctime_ns))

    step("setxattr new", lambda: os.setxattr(p, "user.a", b"1"))
    step("setxattr replace", lambda: os.setxattr(p, "user.a", b"22"))
    step("setxattr create existing", lambda: os.setxattr(p, "user.a", b"3",
                                                         os.XATTR_CREATE))
    step("removexattr", lambda: os.removexattr(p, "user.a"))
    step("removexattr missing", lambda: os.removexattr(p, "user.a"))
    # through an open descriptor (fsetxattr / fremovexattr)
    fd = os.open(p, os.O_RDONLY)
    try:
        step("fsetxattr", lambda: os.setxattr(fd, "user.b", b"x"))
        step("fremovexattr", lambda: os.removexattr(fd, "user.b"))
    finally:
        os.close(fd)
    return out


def test_xattr_changes_update_ctime_only(mnt, tmp_path):
    got = _xattr_steps(mnt.mnt)
    assert got == _xattr_steps(str(tmp_path))
    for name, res, mtime_changed, ctime_changed in got:
        assert not mtime_changed, name
        assert ctime_changed == (res == "ok"), (name, res)


def test_xattr_ctime_survives_remount(kelp):
    kelp.start_server()
    m = kelp.mount()
    p = m.path("f")
    write_file(p, b"1")
    os.setxattr(p, "user.k", b"v")
    time.sleep(TICK)
    os.removexattr(p, "user.k")
    ctime = os.stat(p).st_ctime_ns
    m = kelp.remount(m)
    assert os.stat(m.path("f")).st_ctime_ns == ctime


# ------------------------------------------------------------------------------ direct I/O


class _IOCB(ctypes.Structure):
    # struct iocb of the kernel ABI (linux/aio_abi.h), as libaio lays it out
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32),
                ("rw_flags", ctypes.c_uint32), ("opcode", ctypes.c_uint16),
                ("reqprio", ctypes.c_int16), ("fildes", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64),
                ("offset", ctypes.c_int64), ("reserved2", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]


class _EVENT(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


IO_CMD_PREAD, IO_CMD_PWRITE = 0, 1


class Aio:
    """Asynchronous I/O through libaio (io_submit / io_getevents)."""

    def __init__(self, depth=128):
        try:
            self.lib = ctypes.CDLL("libaio.so.1", use_errno=True)
        except OSError:
            if os.environ.get("CI"):
                pytest.fail("libaio.so.1 missing (scripts/install-deps)", pytrace=False)
            pytest.skip("libaio.so.1 missing (scripts/install-deps)")
        assert ctypes.sizeof(_IOCB) == 64
        self.ctx = ctypes.c_void_p(0)
        rc = self.lib.io_setup(depth, ctypes.byref(self.ctx))
        if rc < 0:
            raise OSError(-rc, "io_setup: " + os.strerror(-rc))

    def submit(self, fd, ops):
        """ops: [(IO_CMD_PREAD or IO_CMD_PWRITE, page-aligned mmap buffer, offset)].
        Returns a handle for wait()."""
        iocbs = (_IOCB * len(ops))()
        ptrs = (ctypes.POINTER(_IOCB) * len(ops))()
        for i, (op, buf, off) in enumerate(ops):
            iocbs[i].opcode = op
            iocbs[i].fildes = fd
            iocbs[i].buf = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            iocbs[i].nbytes = len(buf)
            iocbs[i].offset = off
            iocbs[i].data = i
            ptrs[i] = ctypes.pointer(iocbs[i])
        rc = self.lib.io_submit(self.ctx, ctypes.c_long(len(ops)), ptrs)
        if rc != len(ops):
            raise OSError(-rc if rc < 0 else errno.EAGAIN, "io_submit returned %d" % rc)
        return (iocbs, ptrs, len(ops))

    def wait(self, handle, timeout=30.0):
        """Waits for every operation of handle; returns their results (bytes or -errno)."""
        _, _, n = handle
        events = (_EVENT * n)()
        res = [None] * n
        got = 0
        deadline = time.monotonic() + timeout
        while got < n:
            left = deadline - time.monotonic()
            assert left > 0, "asynchronous I/O not done after %.0f s" % timeout
            ts = _Timespec(int(left), int((left % 1) * 1e9))
            k = self.lib.io_getevents(self.ctx, ctypes.c_long(1), ctypes.c_long(n - got),
                                      events, ctypes.byref(ts))
            if k < 0 and -k == errno.EINTR:
                continue
            assert k >= 0, "io_getevents: %s" % os.strerror(-k)
            for e in events[:k]:
                res[e.data] = e.res
            got += k
        return res

    def ready_now(self, n):
        """How many of n submitted operations are complete right now (io_getevents with
        a zero timeout); their events are consumed."""
        events = (_EVENT * n)()
        ts = _Timespec(0, 0)
        k = self.lib.io_getevents(self.ctx, ctypes.c_long(0), ctypes.c_long(n), events,
                                  ctypes.byref(ts))
        assert k >= 0, "io_getevents: %s" % os.strerror(-k)
        return k

    def run(self, fd, ops):
        return self.wait(self.submit(fd, ops))

    def close(self):
        self.lib.io_destroy(self.ctx)


def aligned(n, fill):
    """A page-aligned buffer (mmap) of n bytes of fill (O_DIRECT needs aligned memory
    on most filesystems; the reference runs on ext4)."""
    buf = mmap.mmap(-1, n)
    buf.write(fill * (n // len(fill)))
    return buf


def _stale_pages(data, fill, page=4096):
    return [i for i in range(0, len(data), page) if data[i:i + page] != fill * page]


def _direct_steps(root, async_io):
    """A file cached by a buffered read and a shared read-only mmap; O_DIRECT writes
    (pwrite or libaio) over parts of it; then what buffered reads and the mmap see."""
    size = 1 * MiB
    p = os.path.join(root, "direct-%s" % ("aio" if async_io else "sync"))
    write_file(p, b"A" * size)
    rfd = os.open(p, os.O_RDONLY)
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    aio = Aio() if async_io else None
    seen = []
    try:
        assert os.pread(rfd, size, 0) == b"A" * size   # in the page cache now
        mm = mmap.mmap(rfd, size, prot=mmap.PROT_READ)
        assert mm[:size] == b"A" * size
        # pages 0-3, 10 and 64 KiB from 512 KiB: single pages and a larger run
        writes = [(0, 4 * 4096, b"B"), (10 * 4096, 4096, b"C"), (512 * 1024, 65536, b"D")]
        bufs = [(off, aligned(n, fill)) for off, n, fill in writes]
        if async_io:
            res = aio.run(dfd, [(IO_CMD_PWRITE, b, off) for off, b in bufs])
        else:
            res = [os.pwrite(dfd, b, off) for off, b in bufs]
        assert res == [n for _, n, _ in writes]
        want = bytearray(b"A" * size)
        for off, n, fill in writes:
            want[off:off + n] = fill * n
        seen.append(("buffered read", os.pread(rfd, size, 0) == want))
        seen.append(("mmap", mm[:size] == want))
        # an O_DIRECT read (asynchronous too) sees it as well
        rbuf = aligned(65536, b"\0")
        if async_io:
            res = aio.run(dfd, [(IO_CMD_PREAD, rbuf, 512 * 1024)])
            seen.append(("direct read", res == [65536] and rbuf[:] == b"D" * 65536))
        else:
            n = os.preadv(dfd, [rbuf], 512 * 1024)
            seen.append(("direct read", n == 65536 and rbuf[:] == b"D" * 65536))
        # buffered writes after direct ones: read back through the other descriptor
        os.close(rfd)
        rfd = os.open(p, os.O_RDWR)
        os.pwrite(rfd, b"E" * 100, 50)
        want[50:150] = b"E" * 100
        n = os.preadv(dfd, [rbuf], 0)
        seen.append(("direct read after buffered write",
                     n == 65536 and rbuf[:] == bytes(want[:65536])))
        mm.close()
        # a store through a shared mapping, not synced: a direct read (the kernel
        # writes the dirty page back first) and a direct write next to it
        with mmap.mmap(rfd, size) as mw:
            mw[200 * 1024:200 * 1024 + 4096] = b"F" * 4096
            want[200 * 1024:200 * 1024 + 4096] = b"F" * 4096
            if async_io:
                res = aio.run(dfd, [(IO_CMD_PREAD, rbuf, 192 * 1024)])
                n = res[0]
            else:
                n = os.preadv(dfd, [rbuf], 192 * 1024)
            seen.append(("direct read after mmap store",
                         n == 65536 and rbuf[:] == bytes(want[192 * 1024:256 * 1024])))
            wbuf = aligned(4096, b"G")
            if async_io:
                n = aio.run(dfd, [(IO_CMD_PWRITE, wbuf, 204 * 1024)])[0]
            else:
                n = os.pwrite(dfd, wbuf, 204 * 1024)
            want[204 * 1024:208 * 1024] = b"G" * 4096
            seen.append(("mapping after direct write",
                         n == 4096 and mw[192 * 1024:256 * 1024] ==
                         bytes(want[192 * 1024:256 * 1024])))
    finally:
        if aio:
            aio.close()
        os.close(dfd)
        os.close(rfd)
    seen.append(("after close", read_file(p) == want))
    return seen


@pytest.mark.parametrize("async_io", [False, True], ids=["pwrite", "libaio"])
def test_direct_writes_then_buffered_reads_and_mmap(mnt, tmp_path, async_io):
    got = _direct_steps(mnt.mnt, async_io)
    assert got == _direct_steps(str(tmp_path), async_io)
    assert all(ok for _, ok in got), got


def test_async_direct_io_is_done_at_submission(mnt):
    """The mount has the kernel do asynchronous direct I/O synchronously (so the kernel
    drops the cached pages after each direct write, see the next test): every operation
    is complete when io_submit returns."""
    n, bs = 32, 256 * 1024
    p = mnt.path("aio")
    write_file(p, b"A" * (n * bs))
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    aio = Aio(2 * n)
    try:
        for op, fill in ((IO_CMD_PWRITE, b"B"), (IO_CMD_PREAD, b"\0")):
            bufs = [aligned(bs, fill) for _ in range(n)]
            aio.submit(dfd, [(op, bufs[i], i * bs) for i in range(n)])
            assert aio.ready_now(n) == n
            if op == IO_CMD_PREAD:
                assert all(b[:] == b"B" * bs for b in bufs)
    finally:
        aio.close()
        os.close(dfd)


def test_async_direct_writes_racing_buffered_reads_leave_no_stale_page(mnt):
    """libaio writes with buffered reads of the same range running meanwhile (the
    kernel drops the pages before an asynchronous direct write, not after it): once
    the writes are done, buffered reads and mmap see them, never the old bytes."""
    n, bs, rounds = 32, 256 * 1024, 16
    size = n * bs
    p = mnt.path("race")
    write_file(p, b"A" * size)
    rfd = os.open(p, os.O_RDONLY)
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    aio = Aio(2 * n)
    stale = []
    try:
        for r in range(rounds):
            fill = bytes([ord("B") + r])
            stop = threading.Event()
            reads = [0]

            def reader():
                # bounded: until the writes are done, and never more than 4000 reads
                while not stop.is_set() and reads[0] < 4000:
                    os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.pread(rfd, size, 0)
                    reads[0] += 1

            bufs = [aligned(bs, fill) for _ in range(n)]
            readers = [threading.Thread(target=reader) for _ in range(2)]
            for t in readers:
                t.start()
            try:
                time.sleep(0.01)   # the readers are busy when the writes go out
                res = aio.run(dfd, [(IO_CMD_PWRITE, bufs[i], i * bs) for i in range(n)])
            finally:
                stop.set()
                for t in readers:
                    t.join(30)
            assert res == [bs] * n
            bad = _stale_pages(os.pread(rfd, size, 0), fill)
            with mmap.mmap(rfd, size, prot=mmap.PROT_READ) as mm:
                bad_mm = _stale_pages(mm[:size], fill)
            if bad or bad_mm:
                stale.append((r, len(bad), len(bad_mm), reads[0]))
    finally:
        aio.close()
        os.close(dfd)
        os.close(rfd)
    assert not stale, "rounds with stale pages (round, buffered, mmap, reads): %r" % stale


def test_direct_io_with_fio(mnt, tmp_path):
    """fio: random asynchronous direct writes (libaio, queue depth 16) verified by
    buffered reads of the same file."""
    need("fio")
    p = mnt.path("fio.dat")
    common = ["fio", "--name=kelp", "--filename=" + p, "--size=8m", "--bs=16k",
              "--randrepeat=1", "--verify=crc32c", "--verify_fatal=1",
              "--output-format=terse", "--verify_state_save=0"]
    # cwd: fio may leave state files where it runs
    run(common + ["--rw=randwrite", "--ioengine=libaio", "--direct=1", "--iodepth=16",
                  "--do_verify=0"], timeout=120, cwd=str(tmp_path))
    # the same pattern read back through the page cache
    run(common + ["--rw=randwrite", "--ioengine=psync", "--direct=0", "--verify_only",
                  "--verify_state_load=0"], timeout=120, cwd=str(tmp_path))


# ------------------------------------------------------------------------------ file handles


AT_HANDLE_CONNECTABLE = 0x002   # Linux 6.13: the handle names the parent too


def name_to_handle(path, flags=0):
    """struct file_handle of path (name_to_handle_at) as bytes."""
    buf = ctypes.create_string_buffer(8 + 128)
    struct.pack_into("I", buf, 0, 128)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), buf, ctypes.byref(mount_id),
                               flags) != 0:
        raise _oserror(path)
    n = struct.unpack_from("I", buf, 0)[0]
    return buf.raw[:8 + n]


def open_by_handle(mount_fd, handle, flags=os.O_RDONLY):
    buf = ctypes.create_string_buffer(handle, len(handle))
    fd = _libc.open_by_handle_at(mount_fd, buf, flags)
    if fd < 0:
        raise _oserror("open_by_handle_at")
    return fd


def test_file_handles_reopen_after_remount_and_go_stale_when_removed(kelp):
    kelp.start_server()
    m = kelp.mount()
    os.makedirs(m.path("d/e"))
    write_file(m.path("d/e/f"), b"by handle")
    write_file(m.path("g"), b"second")
    handles = {name: name_to_handle(m.path(name)) for name in ("d", "d/e", "d/e/f", "g")}
    try:
        connectable = name_to_handle(m.path("d/e/f"), AT_HANDLE_CONNECTABLE)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        connectable = None   # a kernel before 6.13
    # Within the same mount (inodes cached by the kernel)
    mfd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_by_handle(mfd, handles["d/e/f"])
        assert os.read(fd, 100) == b"by handle"
        os.close(fd)
    finally:
        os.close(mfd)
    # A new mount of the same metadata: the kernel knows none of the inodes and asks
    # the daemon (lookup of "."), as an NFS server does after a restart.
    m = kelp.remount(m)
    mfd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in handles:
            assert name_to_handle(m.path(name)) == handles[name], "handle of %s changed" % (
                name)
        m2 = kelp.remount(m)   # and once more, opening by handle first this time
        os.close(mfd)
        m = m2
        mfd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
        fd = open_by_handle(mfd, handles["d/e/f"])
        assert os.read(fd, 100) == b"by handle"
        os.close(fd)
        fd = open_by_handle(mfd, handles["g"], os.O_RDWR)
        os.write(fd, b"SE")
        os.close(fd)
        assert read_file(m.path("g")) == b"SEcond"
        # A directory is reconnected to the mount's root (lookups of ".." up the tree,
        # then its name in each parent): its descriptor has its full path.
        fd = open_by_handle(mfd, handles["d/e"], os.O_RDONLY | os.O_DIRECTORY)
        assert os.listdir(fd) == ["f"]
        assert os.readlink("/proc/self/fd/%d" % fd) == m.path("d/e")
        os.close(fd)
        if connectable:
            fd = open_by_handle(mfd, connectable)
            assert os.readlink("/proc/self/fd/%d" % fd) == m.path("d/e/f")
            os.close(fd)
        fd = open_by_handle(mfd, handles["d"], os.O_RDONLY | os.O_DIRECTORY)
        assert os.listdir(fd) == ["e"]
        os.close(fd)
        # a rename keeps the handle (it names the inode, not the path)
        os.rename(m.path("d/e/f"), m.path("moved"))
        fd = open_by_handle(mfd, handles["d/e/f"])
        assert os.read(fd, 100) == b"by handle"
        os.close(fd)
        # removed: ESTALE, for a file and a directory
        os.unlink(m.path("moved"))
        expect_errno(errno.ESTALE, open_by_handle, mfd, handles["d/e/f"])
        os.rmdir(m.path("d/e"))
        expect_errno(errno.ESTALE, open_by_handle, mfd, handles["d/e"],
                     os.O_RDONLY | os.O_DIRECTORY)
        # after another remount too (the daemon answers, not the kernel's cache)
        os.close(mfd)
        m = kelp.remount(m)
        mfd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
        expect_errno(errno.ESTALE, open_by_handle, mfd, handles["d/e/f"])
        expect_errno(errno.ESTALE, open_by_handle, mfd, handles["d/e"],
                     os.O_RDONLY | os.O_DIRECTORY)
        fd = open_by_handle(mfd, handles["d"], os.O_RDONLY | os.O_DIRECTORY)
        assert os.listdir(fd) == []
        os.close(fd)
    finally:
        os.close(mfd)


def test_file_handle_of_other_metadata_is_stale(kelp):
    """Inode numbers restart in new metadata: a handle from other metadata must not open
    whatever file has its number there (the generation differs)."""
    kelp.start_server()
    a = kelp.mount()
    write_file(a.path("f"), b"in a")
    h = name_to_handle(a.path("f"))
    b = kelp.mount()   # new metadata: its first file gets the same inode number
    write_file(b.path("f"), b"in b")
    assert os.stat(b.path("f")).st_ino == os.stat(a.path("f")).st_ino
    assert name_to_handle(b.path("f")) != h
    a.unmount()
    b.unmount()
    b = kelp.remount(b)
    mfd = os.open(b.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        expect_errno(errno.ESTALE, open_by_handle, mfd, h)
    finally:
        os.close(mfd)


def test_open_unlinked_file_by_handle_while_open_elsewhere(mnt):
    """While a descriptor keeps a removed file alive, Linux may still open it by handle
    from the inode cache; once closed, the handle is stale."""
    p = mnt.path("f")
    write_file(p, b"kept")
    h = name_to_handle(p)
    fd = os.open(p, os.O_RDONLY)
    os.unlink(p)
    mfd = os.open(mnt.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert os.pread(fd, 10, 0) == b"kept"
        os.close(fd)
        wait_until("the removed file's handle to go stale",
                   lambda: _is_stale(mfd, h), 10)
    finally:
        os.close(mfd)


def _is_stale(mfd, h):
    try:
        os.close(open_by_handle(mfd, h))
        return False
    except OSError as e:
        if e.errno == errno.ESTALE:
            return True
        raise


# ------------------------------------------------------------------------------ mount helper

HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "mount.fuse.kelp")

# Runs in a private mount namespace (the host is untouched): a directory holding only
# the helper is bound over /sbin (/usr/sbin on Debian 12), where mount(8) looks for it.
NS_SCRIPT = r"""
set -u
exec 2>&1
sbin=$1 mp=$2 master=$3 meta=$4 work=$5
mount --bind "$sbin" "$(readlink -f /sbin)" || exit 90
step() { echo "== $*"; }
flags() { awk -v mp="$mp" '$5 == mp { print $6 }' /proc/self/mountinfo; }
daemon() { grep -las -- "[-]dir=$mp" /proc/[0-9]*/cmdline | cut -d/ -f3; }
# 1. default flags: suid and dev as for any filesystem root mounts
step mount-default
mount -t fuse.kelp "$master" "$mp" -o "meta=$meta,allow_other,logFile=$work/helper-mount.log" || exit 91
echo "flags $(flags)"
echo "pid" $(daemon)
mknod "$mp/null" c 1 3 && chmod 666 "$mp/null"
echo hello > "$mp/null" && echo "dev-write ok"
cp /usr/bin/id "$mp/id" && chmod 4755 "$mp/id"
echo "euid $(setpriv --reuid=65534 --regid=65534 --clear-groups "$mp/id" -u)"
echo data > "$mp/file"
# 2. remount read-only: the same daemon, writes fail with EROFS
step remount-ro
mount -o remount,ro "$mp"; echo "rc $?"
echo "flags $(flags)"
echo "pid" $(daemon)
touch "$mp/new" 2>&1
echo more >> "$mp/file" 2>&1
echo "read $(cat "$mp/file")"
# 3. back to read-write
step remount-rw
mount -o remount,rw "$mp"; echo "rc $?"
echo "flags $(flags)"
echo "pid" $(daemon)
touch "$mp/new" && echo "touch ok"
# 4. a file open for writing: remount ro is refused (busy), nothing changes
step remount-ro-busy
exec 3>>"$mp/file"
mount -o remount,ro "$mp" 2>/dev/null; echo "rc $?"
exec 3>&-
echo "flags $(flags)"
umount "$mp"; echo "umount rc $?"
# 5. nosuid,nodev,noexec given, and flags FUSE cannot take at mount time
step mount-restricted
mount -t fuse.kelp "$master" "$mp" -o "meta=$meta,nosuid,nodev,noexec,nodiratime,strictatime" || exit 92
echo "flags $(flags)"
cat "$mp/null" 2>&1
echo "euid $(setpriv --reuid=65534 --regid=65534 --clear-groups "$mp/id" -u 2>&1)"
echo "read $(cat "$mp/file")"
umount "$mp"; echo "umount rc $?"
# 6. mounted read-only from the start, then remounted rw
step mount-ro
mount -t fuse.kelp "$master" "$mp" -o "meta=$meta,ro" || exit 93
echo "flags $(flags)"
touch "$mp/new2" 2>&1
mount -o remount,rw "$mp"; echo "rc $?"
touch "$mp/new2" && echo "touch ok"
umount "$mp"; echo "umount rc $?"
step done
"""


def _kill_helper_daemons(mp):
    """The daemons the helper started for mp (found by their -dir argument)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"-dir=" + os.fsencode(mp) in args:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _sections(out):
    """{step: [lines]} of the namespace script's output."""
    sec, cur = {}, None
    for line in out.splitlines():
        if line.startswith("== "):
            cur = line[3:]
            sec[cur] = []
        elif cur:
            sec[cur].append(line)
    return sec


def _value(lines, key):
    for line in lines:
        if line.startswith(key + " "):
            return line[len(key) + 1:]
    return None


def test_mount_helper_flags_and_remount(kelp, tmp_path):
    need("unshare", "setpriv", "mknod", "awk")
    srv = kelp.start_server()
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    shutil.copy(HELPER, sbin / "mount.fuse.kelp")
    os.chmod(sbin / "mount.fuse.kelp", 0o755)
    mp = os.path.join(kelp.mntroot, "helper")
    os.mkdir(mp)
    script = tmp_path / "ns.sh"
    script.write_text(NS_SCRIPT)
    env = dict(os.environ, KELP=kelp.kelp_bin)
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh",
                            str(script), str(sbin), mp, srv.master_addr,
                            str(tmp_path / "meta"), str(tmp_path)],
                           capture_output=True, timeout=120, env=env,
                           stdin=subprocess.DEVNULL)
    finally:
        _kill_helper_daemons(mp)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, "namespace script failed (%d):\n%s" % (r.returncode, out)
    sec = _sections(r.stdout.decode("utf-8", "replace"))
    assert "done" in sec, out

    s = sec["mount-default"]
    flags = _value(s, "flags").split(",")
    assert "rw" in flags and "nosuid" not in flags and "nodev" not in flags, out
    pid = _value(s, "pid")
    assert pid and pid.isdigit(), out
    assert "dev-write ok" in s, out
    assert _value(s, "euid") == "0", out    # the setuid bit works

    s = sec["remount-ro"]
    assert _value(s, "rc") == "0" and _value(s, "flags").split(",")[0] == "ro", out
    assert _value(s, "pid") == pid, "remount started another daemon:\n" + out
    assert sum("Read-only file system" in line for line in s) == 2, out
    assert _value(s, "read") == "data", out

    s = sec["remount-rw"]
    assert _value(s, "rc") == "0" and _value(s, "flags").split(",")[0] == "rw", out
    assert _value(s, "pid") == pid, out
    assert "touch ok" in s, out

    s = sec["remount-ro-busy"]
    assert _value(s, "rc") != "0" and _value(s, "flags").split(",")[0] == "rw", out
    assert _value(s, "umount rc") == "0", out

    s = sec["mount-restricted"]
    flags = _value(s, "flags").split(",")
    for f in ("nosuid", "nodev", "noexec", "nodiratime"):
        assert f in flags, (f, out)
    assert "relatime" not in flags, out   # strictatime applied
    assert any("Permission denied" in line for line in s if "null" in line), out
    assert "Permission denied" in _value(s, "euid"), out   # noexec
    assert _value(s, "read") == "data", out

    s = sec["mount-ro"]
    assert _value(s, "flags").split(",")[0] == "ro", out
    assert any("Read-only file system" in line for line in s), out
    assert _value(s, "rc") == "0" and "touch ok" in s, out
    assert _value(s, "umount rc") == "0", out
    # nothing of it is left on the host
    assert not is_mounted(mp)
