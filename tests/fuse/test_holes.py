"""Holes and copies (issue 12, section 4): fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE,
ZERO_RANGE; collapse/insert refused), SEEK_DATA/SEEK_HOLE from the chunk map and the
pending writes, st_blocks counting the bytes really stored (du of sparse files), and
copy_file_range as a metadata-only copy whose shared blobs survive the source's
deletion and gc."""

import ctypes
import errno
import os
import subprocess

import pytest

import metacheck
from kelp_fuse_conftest import (GiB, MiB, expect_errno, need, read_file, run, wait_until,
                                write_file)

CHUNK = ["-chunkSizeLimitMB=1"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20


def fallocate(fd, mode, off, length):
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), "fallocate(mode=%#x, %d, %d)" % (mode, off, length))


def _totals(srv):
    dc, db, fc = srv.delete_totals()
    return {"deletes": dc, "files": fc, "live": fc - dc}


def _seeks(fd, size, step):
    """[(off, SEEK_DATA result or errno, SEEK_HOLE result or errno)] every step bytes."""
    out = []
    for off in list(range(0, size + step, step)) + [size - 1, size]:
        r = []
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            try:
                r.append(os.lseek(fd, off, whence))
            except OSError as e:
                r.append("E%d" % e.errno)
        out.append((off, r[0], r[1]))
    return out


def test_fallocate_modes_against_a_local_file(mnt, tmp_path):
    """Every mode on the mount and on a local file: same bytes, same size."""
    ref = str(tmp_path / "ref")
    path = mnt.path("f")
    data = os.urandom(3 * MiB + 12345)
    for p in (ref, path):
        write_file(p, data)
    steps = [
        (0, 5 * MiB, 1000),                                      # extend
        (FALLOC_FL_KEEP_SIZE, 6 * MiB, MiB),                     # reserve past the end
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 2 * MiB),
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * MiB, 10),
        (FALLOC_FL_ZERO_RANGE, 100, 50),
        (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 5 * MiB - 7, 1000),
        (FALLOC_FL_ZERO_RANGE, 5 * MiB + 900, 300),               # grows the file
        (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8 * MiB, MiB),  # past the end
    ]
    for mode, off, n in steps:
        for p in (ref, path):
            fd = os.open(p, os.O_RDWR)
            try:
                # unflushed bytes around the range, cut or kept as on the local file
                os.pwrite(fd, b"W" * 3000, max(0, off - 1000))
                fallocate(fd, mode, off, n)
                assert os.fstat(fd).st_size == os.stat(ref).st_size or p == ref
            finally:
                os.close(fd)
        assert os.stat(path).st_size == os.stat(ref).st_size, (mode, off, n)
        assert read_file(path) == read_file(ref), (mode, off, n)
    _check_meta(mnt)
    fd = os.open(path, os.O_RDWR)
    try:
        for mode in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE,
                     FALLOC_FL_PUNCH_HOLE):   # a punch without KEEP_SIZE is refused too
            expect_errno(errno.EOPNOTSUPP, fallocate, fd, mode, 0, MiB)
    finally:
        os.close(fd)


def test_punch_hole_frees_blobs(kelp):
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    base = _totals(srv)
    write_file(m.path("f"), os.urandom(4 * MiB))   # 4 blobs of 1 MiB
    assert _totals(srv)["live"] - base["live"] == 4
    fd = os.open(m.path("f"), os.O_RDWR)
    try:
        # two whole blobs and a part of a third: two go to gc, the third is still used
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MiB, 2 * MiB + 100)
    finally:
        os.close(fd)
    wait_until("the two punched blobs to be deleted",
               lambda: _totals(srv)["live"] - base["live"] == 2, 20, interval=0.2)
    st = os.stat(m.path("f"))
    assert st.st_size == 4 * MiB
    assert st.st_blocks * 512 == 2 * MiB - 100 + 511 - (2 * MiB - 100 + 511) % 512
    d = read_file(m.path("f"))
    assert d[MiB:3 * MiB + 100] == bytes(2 * MiB + 100)


def test_du_and_seek_of_sparse_files(mnt, tmp_path):
    need("du")
    p = mnt.path("sparse")
    with open(p, "wb") as f:
        f.truncate(5 * GiB)
        f.seek(3 * GiB)
        f.write(b"abc")
        f.flush()   # to the mount (a write, not a close)
        # not flushed yet: st_blocks and SEEK_DATA already see the bytes
        st = os.fstat(f.fileno())
        assert 0 < st.st_blocks <= 8, st.st_blocks
        assert os.lseek(f.fileno(), 0, os.SEEK_DATA) == 3 * GiB
    st = os.stat(p)
    assert st.st_size == 5 * GiB
    assert st.st_blocks == 1, st.st_blocks     # 3 bytes: one 512-byte unit
    du = run(["du", "-k", p]).stdout.split()[0]
    assert int(du) <= 4, du
    du = run(["du", "-k", "--apparent-size", p]).stdout.split()[0]
    assert int(du) == 5 * GiB // 1024
    fd = os.open(p, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 3 * GiB
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
        assert os.lseek(fd, 3 * GiB + 1, os.SEEK_DATA) == 3 * GiB + 1
        assert os.lseek(fd, 3 * GiB, os.SEEK_HOLE) == 3 * GiB + 3
        expect_errno(errno.ENXIO, os.lseek, fd, 3 * GiB + 3, os.SEEK_DATA)
        expect_errno(errno.ENXIO, os.lseek, fd, 5 * GiB, os.SEEK_HOLE)
        assert os.lseek(fd, 5 * GiB - 1, os.SEEK_HOLE) == 5 * GiB - 1
    finally:
        os.close(fd)
    # the same layout on the local disk answers the same (a few holes and data runs)
    ref = str(tmp_path / "ref")
    layout = [(0, 5000), (MiB, 3 * MiB), (3 * MiB + 500, 10), (6 * MiB, 1)]
    for q in (ref, mnt.path("runs")):
        with open(q, "wb") as f:
            f.truncate(8 * MiB)
            for off, n in layout:
                f.seek(off)
                f.write(os.urandom(n) if q != ref else b"x" * n)
    # local filesystems round data runs to their blocks: compare at block starts
    fa, fb = os.open(ref, os.O_RDONLY), os.open(mnt.path("runs"), os.O_RDONLY)
    try:
        for off in (0, 4096, 8192, MiB - 4096, MiB, 2 * MiB, 3 * MiB, 4 * MiB, 5 * MiB,
                    6 * MiB, 6 * MiB + 4096, 8 * MiB - 4096):
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                want = got = None
                try:
                    want = os.lseek(fa, off, whence) // 4096
                except OSError as e:
                    want = e.errno
                try:
                    got = os.lseek(fb, off, whence)
                    got = (got + 4095) // 4096 if whence == os.SEEK_HOLE else got // 4096
                except OSError as e:
                    got = e.errno
                assert got == want, (off, whence, got, want)
    finally:
        os.close(fa)
        os.close(fb)
    # cp keeps the holes (it asks SEEK_DATA/SEEK_HOLE when st_blocks says sparse)
    run(["cp", "--sparse=always", p, mnt.path("sparse2")])
    assert os.stat(mnt.path("sparse2")).st_blocks <= 8


def _copy_range(src, dst, off_in, off_out, n):
    fi, fo = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        done = 0
        while done < n:
            k = os.copy_file_range(fi, fo, n - done, off_in + done, off_out + done)
            if k == 0:
                break
            done += k
        return done
    finally:
        os.close(fi)
        os.close(fo)


def test_copy_file_range_shares_blobs_and_survives_gc(kelp, tmp_path):
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    base = _totals(srv)
    src = m.path("src")
    data = bytearray(os.urandom(5 * MiB + 777))
    write_file(src, bytes(data))
    with open(src, "r+b") as f:      # overwrites: the map is made of slices of blobs
        for off, n in ((1000, 5000), (MiB - 10, 20), (3 * MiB, 300000)):
            b = os.urandom(n)
            f.seek(off)
            f.write(b)
            data[off:off + n] = b
        f.truncate(7 * MiB)          # a hole at the end
    data += bytes(7 * MiB - len(data))
    fd = os.open(src, os.O_RDWR)
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * MiB + 3, 4000)
    os.close(fd)
    data[2 * MiB + 3:2 * MiB + 4003] = bytes(4000)
    blobs = _totals(srv)["live"]
    # the whole file, then pieces at odd offsets over an existing file
    assert _copy_range(src, m.path("copy"), 0, 0, 8 * MiB) == 7 * MiB
    assert read_file(m.path("copy")) == bytes(data)
    assert os.stat(m.path("copy")).st_blocks == os.stat(src).st_blocks
    dst2 = bytearray(os.urandom(3 * MiB))
    write_file(m.path("piece"), bytes(dst2))
    blobs = _totals(srv)["live"]
    for off_in, off_out, n in ((12345, 100, MiB), (4 * MiB + 1, 2 * MiB + 5, 2 * MiB)):
        assert _copy_range(src, m.path("piece"), off_in, off_out, n) == n
        end = off_out + n
        if end > len(dst2):
            dst2 += bytes(end - len(dst2))
        dst2[off_out:end] = data[off_in:off_in + n]
    assert read_file(m.path("piece")) == bytes(dst2)
    # no data was uploaded for the copies
    assert _totals(srv)["live"] <= blobs
    # cp (--reflink=auto is its default) uses copy_file_range too for a file without
    # holes: no upload (coreutils 9.1 copies a sparse file with read/write, keeping
    # its holes)
    dense = os.urandom(3 * MiB + 5)
    write_file(m.path("dense"), dense)
    blobs = _totals(srv)["live"]
    run(["cp", "--reflink=auto", m.path("dense"), m.path("dense2")])
    assert read_file(m.path("dense2")) == dense
    assert _totals(srv)["live"] == blobs
    run(["cp", src, m.path("cp")])
    assert read_file(m.path("cp")) == bytes(data)
    # FICLONE never reaches a FUSE filesystem (the kernel refuses it)
    r = subprocess.run(["cp", "--reflink=always", src, m.path("clone")], capture_output=True)
    assert r.returncode != 0
    # the source goes, then a file of its own (one blob): once gc deleted that one, it
    # has been through everything queued before it, and no shared blob went
    write_file(m.path("victim"), os.urandom(MiB))
    live = _totals(srv)["live"]
    os.unlink(src)
    os.unlink(m.path("victim"))
    wait_until("the victim's blob to be deleted",
               lambda: _totals(srv)["live"] <= live - 1, 20, interval=0.2)
    assert _totals(srv)["live"] == live - 1
    m2 = kelp.remount(m)   # a fresh cache: the data comes from the cluster
    assert read_file(m2.path("copy")) == bytes(data)
    assert read_file(m2.path("piece")) == bytes(dst2)
    assert read_file(m2.path("cp")) == bytes(data)
    _check_meta(m2)
    assert read_file(m2.path("dense2")) == dense
    for n in ("copy", "cp", "piece", "dense", "dense2"):
        os.unlink(m2.path(n))
    wait_until("every blob to be deleted once nothing uses it",
               lambda: _totals(srv)["live"] == base["live"], 30, interval=0.2)
    assert "reading chunk" not in m2.log_text()


def _check_meta(m):
    """With PostgreSQL: the whole database is consistent (reference counts of shared
    blobs, `stored` of every inode; tests/fuse/metacheck.py)."""
    if m.shared:
        problems, _ = metacheck.check(m.meta)
        assert not problems, problems


def test_copy_file_range_errors(mnt):
    write_file(mnt.path("a"), b"0123456789" * 1000)
    fd = os.open(mnt.path("a"), os.O_RDWR)
    try:
        # overlapping ranges of one file
        expect_errno(errno.EINVAL, os.copy_file_range, fd, fd, 5000, 0, 100)
        # non-overlapping within one file works
        assert os.copy_file_range(fd, fd, 100, 0, 5000) == 100
        assert os.pread(fd, 100, 5000) == (b"0123456789" * 10)
        # past the end of the source: nothing
        assert os.copy_file_range(fd, fd, 100, 20000, 0) == 0
    finally:
        os.close(fd)


def test_statfs_reports_the_cluster_disks(kelp):
    """df of the mount: Size and Avail are the volume server's disk (its heartbeat
    reports it; the master sums it in /dir/status), Used what the cluster stores."""
    srv = kelp.start_server()
    topo = lambda: srv.master_get("/dir/status").json()["Topology"]   # noqa: E731
    wait_until("the disks in the master's status", lambda: topo().get("DiskTotal"), 10)
    disk = os.statvfs(srv.datadir)
    t = topo()
    assert t["DiskTotal"] == disk.f_blocks * disk.f_frsize
    # other programs write to this disk meanwhile: free within 5 % of the disk
    assert abs(t["DiskFree"] - disk.f_bavail * disk.f_frsize) < t["DiskTotal"] * 0.05
    node = t["DataCenters"][0]["Racks"][0]["DataNodes"][0]
    assert node["DiskTotal"] == t["DiskTotal"]
    # data in the cluster before the mount asks (statfs answers are cached 10 s)
    m = kelp.mount(CHUNK)
    write_file(m.path("f"), os.urandom(6 * MiB))
    wait_until("the volumes' bytes in the master's status",
               lambda: topo()["VolumeBytes"] >= 6 * MiB, 10)
    m = kelp.remount(m)
    st = os.statvfs(m.mnt)
    disk = os.statvfs(srv.datadir)
    assert st.f_blocks * st.f_frsize == t["DiskTotal"] // 4096 * 4096
    assert abs(st.f_bavail * st.f_frsize - disk.f_bavail * disk.f_frsize) < \
        t["DiskTotal"] * 0.05
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert 6 * MiB - 4096 <= used <= topo()["VolumeBytes"] + 4096, used
    assert st.f_bfree >= st.f_bavail
    # inodes: the root and f
    assert st.f_files - st.f_ffree == 2
    out = run(["df", "-B1", m.mnt]).stdout.decode().splitlines()[-1].split()
    assert int(out[1]) == st.f_blocks * st.f_frsize


def test_fallocate_reserves_nothing(kelp):
    """fallocate mode 0 (and KEEP_SIZE) set the size only: the range stays a hole (st_blocks
    0, SEEK_DATA finds no data, zeros read back), no blob is written in the cluster, so
    nothing is reserved there (docs/operations.md, "fallocate")."""
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    before = _totals(srv)["files"]
    fd = os.open(m.path("pre"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fallocate(fd, 0, 0, 64 * MiB)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 64 * MiB, 64 * MiB)
        st = os.fstat(fd)
        assert st.st_size == 64 * MiB and st.st_blocks == 0, (st.st_size, st.st_blocks)
        expect_errno(errno.ENXIO, os.lseek, fd, 0, os.SEEK_DATA)
        assert os.pread(fd, 4096, 32 * MiB) == bytes(4096)
    finally:
        os.close(fd)
    assert os.stat(m.path("pre")).st_blocks == 0
    assert _totals(srv)["files"] == before
