#!/usr/bin/python3
"""randio: a random-I/O checker for a file in the kelp mount.

Every operation is done on the file under test AND on a mirror file on a local
filesystem; every read of the file under test is compared byte for byte (length
included) with the same read of the mirror, and the sizes are compared often. At the end
the whole files are compared.

Two runs:

  run_fd(path, mirror, seed, ops)    pwrite/pread/ftruncate on plain fds: writes of random
                                     sizes (1 byte .. 2.5 MiB) at random offsets, also
                                     past the end (holes) and around chunk boundaries;
                                     truncates down and up; reads through the cached fd
                                     and an O_DIRECT fd (which goes to the mount daemon,
                                     past the kernel's page cache); fsync and close +
                                     reopen now and then (uploads of the write buffers).
  run_fd(..., holes=True)            also fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE,
                                     ZERO_RANGE, with and without KEEP_SIZE),
                                     copy_file_range within the file and from a second
                                     file (the mirror does the same with plain writes),
                                     and SEEK_DATA/SEEK_HOLE: what the mount calls a hole
                                     must be zeros in the mirror.
  run_mmap(path, mirror, seed, ops)  MAP_SHARED map of the file: random writes and reads
                                     through the map, msync, and after each msync an
                                     O_DIRECT read (the daemon must have the data); after
                                     munmap and close, plain reads of the whole file.

Both are seeded (random.Random(seed)) and deterministic for a seed; a failure raises
Mismatch naming the seed, the operation number and the last operations, so a run can be
repeated with that seed:

  /usr/bin/python3 randio.py FILE MIRROR --seed N [--ops N] [--mmap]
"""

import argparse
import collections
import ctypes
import errno
import mmap
import os
import random
import sys
import time

MiB = 1 << 20


class Mismatch(AssertionError):
    pass


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
FALLOC_MODES = (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)


def fallocate(fd, mode, off, n):
    if _libc.fallocate(fd, mode, off, n) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def mirror_fallocate(mfd, mode, off, n, size):
    """What fallocate(mode) does to the bytes and size, with plain writes (the mirror's
    filesystem need not have fallocate). Returns the new size."""
    end = off + n
    new = size if mode & FALLOC_FL_KEEP_SIZE else max(size, end)
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
        zend = min(end, new)
        if zend > off:
            pwrite_full(mfd, bytes(zend - off), off)
    if new > size:
        os.ftruncate(mfd, new)
    return new


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n


def pread_full(fd, n, off):
    """pread until n bytes or end of file."""
    parts = []
    while n > 0:
        b = os.pread(fd, n, off)
        if not b:
            break
        parts.append(b)
        n -= len(b)
        off += len(b)
    return b"".join(parts)


def pwrite_full(fd, data, off):
    view = memoryview(data)
    while len(view):
        n = os.pwrite(fd, view, off)
        assert n > 0
        view = view[n:]
        off += n


class Checker:
    def __init__(self, seed, what):
        self.seed = seed
        self.what = what
        self.log = collections.deque(maxlen=25)
        self.op = 0

    def note(self, s):
        self.log.append("#%d %s" % (self.op, s))

    def fail(self, msg):
        raise Mismatch("randio %s seed=%d: at operation #%d: %s\nlast operations:\n  %s\n"
                       "(repeat with: randio.py FILE MIRROR --seed %d%s)" % (
                           self.what, self.seed, self.op, msg, "\n  ".join(self.log),
                           self.seed, {"mmap": " --mmap", "holes": " --holes"}.get(
                               self.what, "")))

    def same(self, got, want, what):
        if got != want:
            i = first_diff(got, want)
            self.fail("%s: %d bytes, expected %d; first difference at +%d: got %r, want %r" % (
                what, len(got), len(want), i, got[i:i + 16], want[i:i + 16]))


def _write_len(rnd, chunk):
    r = rnd.random()
    if r < 0.2:
        return rnd.randint(1, 16)
    if r < 0.5:
        return rnd.randint(1, 4096)
    if r < 0.8:
        return rnd.randint(4096, 256 * 1024)
    if r < 0.95:
        return rnd.randint(256 * 1024, chunk)
    return rnd.randint(chunk, chunk * 5 // 2)


def _offset(rnd, size, chunk, max_size):
    r = rnd.random()
    if r < 0.45 or size == 0:
        off = rnd.randint(0, size)
    elif r < 0.65:
        # around a chunk boundary
        k = rnd.randint(0, max(1, max_size // chunk))
        off = max(0, k * chunk + rnd.randint(-5000, 5000))
    elif r < 0.8:
        off = size + rnd.randint(0, 2 * chunk)   # past the end: a hole before it
    elif r < 0.9:
        off = size                               # append
    else:
        off = rnd.randint(0, max(0, size - 1)) & ~4095   # page aligned
    return min(off, max_size)


def _hole_op(rnd, ck, fd, mfd, src, msrc, size, chunk, max_size, counts):
    """One fallocate, copy_file_range or SEEK_DATA/SEEK_HOLE check. Returns the size."""
    r = rnd.random()
    if r < 0.45:
        mode = rnd.choice(FALLOC_MODES)
        off = _offset(rnd, size, chunk, max_size)
        n = min(rnd.choice((1, 100, 4096, rnd.randint(1, 2 * chunk))), max_size - off) or 1
        ck.note("fallocate mode=%#x off=%d len=%d (size %d)" % (mode, off, n, size))
        try:
            fallocate(fd, mode, off, n)
        except OSError as e:
            ck.fail("fallocate mode=%#x off=%d len=%d: %s" % (mode, off, n, e))
        counts["fallocate_%#x" % mode] += 1
        return mirror_fallocate(mfd, mode, off, n, size)
    if r < 0.75:
        # copy_file_range: from the second file, or within this one (not overlapping)
        n = rnd.choice((1, 4096, rnd.randint(1, 65536), rnd.randint(1, 2 * chunk)))
        off_out = min(_offset(rnd, size, chunk, max_size), max_size - n) if n < max_size else 0
        off_out = max(0, off_out)
        if rnd.random() < 0.5:
            sfd, smfd, off_in, what = src, msrc, rnd.randint(0, os.fstat(msrc).st_size), "src"
        else:
            sfd, smfd, what = fd, mfd, "self"
            off_in = rnd.randint(0, size)
            if off_in < off_out + n and off_out < off_in + n:
                return size   # overlapping: not allowed within one file
        ck.note("copy_file_range %s off_in=%d off_out=%d len=%d (size %d)" % (
            what, off_in, off_out, n, size))
        data = pread_full(smfd, n, off_in)
        done = 0
        try:
            while done < len(data):
                k = os.copy_file_range(sfd, fd, len(data) - done, off_in + done,
                                       off_out + done)
                if k == 0:
                    break
                done += k
        except OSError as e:
            ck.fail("copy_file_range %s off_in=%d off_out=%d len=%d: %s" % (
                what, off_in, off_out, n, e))
        if done != len(data):
            ck.fail("copy_file_range copied %d bytes, expected %d" % (done, len(data)))
        if data:
            pwrite_full(mfd, data, off_out)
        counts["copy_range"] += 1
        return max(size, off_out + len(data)) if data else size
    # SEEK_DATA / SEEK_HOLE: what the mount calls a hole reads as zeros in the mirror
    off = rnd.randint(0, size + 10)
    ck.note("lseek SEEK_DATA/SEEK_HOLE off=%d (size %d)" % (off, size))
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try:
            pos = os.lseek(fd, off, whence)
        except OSError as e:
            if e.errno != errno.ENXIO or off < size and whence == os.SEEK_HOLE:
                ck.fail("lseek off=%d whence=%d: %s" % (off, whence, e))
            if off < size and pread_full(mfd, size - off, off).count(0) != size - off:
                ck.fail("SEEK_DATA off=%d: ENXIO, but the mirror has data after it" % off)
            continue
        if off >= size:
            ck.fail("lseek off=%d whence=%d at or past the end gave %d, not ENXIO" % (
                off, whence, pos))
        if pos < off or pos > size:
            ck.fail("lseek off=%d whence=%d gave %d (size %d)" % (off, whence, pos, size))
        if whence == os.SEEK_DATA:
            hole = (off, pos)
        else:
            try:
                nxt = os.lseek(fd, pos, os.SEEK_DATA) if pos < size else size
            except OSError:
                nxt = size
            hole = (pos, nxt)
        zeros = pread_full(mfd, hole[1] - hole[0], hole[0])
        if zeros.count(0) != len(zeros):
            ck.fail("lseek says [%d, %d) is a hole, the mirror has data at +%d" % (
                hole[0], hole[1], hole[0] + next(i for i, b in enumerate(zeros) if b)))
    counts["seek"] += 1
    return size


def run_fd(path, mirror, seed, ops=20000, chunk=MiB, max_size=7 * MiB, time_limit=240.0,
           direct=True, holes=False):
    """The fd run (see the module doc). Returns a dict of counts."""
    rnd = random.Random(seed)
    ck = Checker(seed, "holes" if holes else "fd")
    flags = os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    mfd = os.open(mirror, flags | os.O_TRUNC, 0o644)
    os.ftruncate(fd, 0)
    dfd = -1
    if direct:
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError as e:
            ck.fail("open O_DIRECT: %s" % e)
    counts = collections.Counter()
    size = 0
    src = msrc = -1
    if holes:
        # a second file to copy ranges from, with a hole in the middle
        sdata = rnd.randbytes(chunk + 5000) + bytes(chunk // 2) + rnd.randbytes(3000)
        src = os.open(path + ".src", flags | os.O_TRUNC, 0o644)
        msrc = os.open(mirror + ".src", flags | os.O_TRUNC, 0o644)
        pwrite_full(src, sdata, 0)
        pwrite_full(msrc, sdata, 0)
    deadline = time.monotonic() + time_limit
    try:
        for ck.op in range(ops):
            if time.monotonic() > deadline:
                ck.fail("time limit of %.0f s passed after %d operations" % (time_limit, ck.op))
            r = rnd.random()
            if holes and rnd.random() < 0.2:
                size = _hole_op(rnd, ck, fd, mfd, src, msrc, size, chunk, max_size, counts)
                r = 2.0   # nothing else this round
            if r > 1.0:
                pass
            elif r < 0.45:
                n = _write_len(rnd, chunk)
                off = _offset(rnd, size, chunk, max_size)
                data = rnd.randbytes(n)
                ck.note("pwrite off=%d len=%d (size %d)" % (off, n, size))
                try:
                    pwrite_full(fd, data, off)
                except OSError as e:
                    ck.fail("pwrite off=%d len=%d: %s" % (off, n, e))
                pwrite_full(mfd, data, off)
                size = max(size, off + n)
                counts["write"] += 1
            elif r < 0.83:
                off = rnd.randint(0, size + 100)
                n = rnd.choice((1, 17, 4096, rnd.randint(1, 65536), rnd.randint(1, 3 * chunk // 2)))
                use_direct = dfd >= 0 and rnd.random() < 0.4
                ck.note("pread%s off=%d len=%d (size %d)" % (
                    " O_DIRECT" if use_direct else "", off, n, size))
                try:
                    got = pread_full(dfd if use_direct else fd, n, off)
                except OSError as e:
                    ck.fail("pread off=%d len=%d: %s" % (off, n, e))
                ck.same(got, pread_full(mfd, n, off), "pread off=%d len=%d%s" % (
                    off, n, " O_DIRECT" if use_direct else ""))
                counts["read_direct" if use_direct else "read"] += 1
            elif r < 0.91:
                if rnd.random() < 0.6:
                    new = rnd.randint(0, size)               # down
                else:
                    new = min(max_size, size + rnd.randint(1, 2 * chunk))   # up (extend)
                ck.note("ftruncate %d (size %d)" % (new, size))
                try:
                    os.ftruncate(fd, new)
                except OSError as e:
                    ck.fail("ftruncate %d: %s" % (new, e))
                os.ftruncate(mfd, new)
                size = new
                counts["truncate"] += 1
            elif r < 0.97:
                ck.note("fstat (size %d)" % size)
                st = os.fstat(fd)
                if st.st_size != size:
                    ck.fail("fstat size %d, expected %d" % (st.st_size, size))
                counts["stat"] += 1
            elif r < 0.985:
                ck.note("fsync")
                try:
                    os.fsync(fd)
                except OSError as e:
                    ck.fail("fsync: %s" % e)
                counts["fsync"] += 1
            else:
                ck.note("close + reopen")
                try:
                    os.close(fd)
                except OSError as e:
                    fd = -1
                    ck.fail("close: %s" % e)
                fd = os.open(path, os.O_RDWR)
                st = os.fstat(fd)
                if st.st_size != size:
                    ck.fail("size after reopen %d, expected %d" % (st.st_size, size))
                counts["reopen"] += 1
            if size > max_size and rnd.random() < 0.5:
                new = rnd.randint(max_size // 2, max_size)
                ck.note("ftruncate %d (size cap)" % new)
                os.ftruncate(fd, new)
                os.ftruncate(mfd, new)
                size = new
                counts["truncate"] += 1
        ck.op = ops
        ck.note("final compare")
        if os.fstat(fd).st_size != size:
            ck.fail("final fstat size %d, expected %d" % (os.fstat(fd).st_size, size))
        ck.same(pread_full(fd, size + 10, 0), pread_full(mfd, size + 10, 0), "final read")
        if dfd >= 0:
            ck.same(pread_full(dfd, size + 10, 0), pread_full(mfd, size + 10, 0),
                    "final O_DIRECT read")
        os.close(fd)
        fd = -1
        fd = os.open(path, os.O_RDONLY)
        ck.same(pread_full(fd, size + 10, 0), pread_full(mfd, size + 10, 0),
                "read after close")
    finally:
        for x in (fd, dfd, mfd, src, msrc):
            if x >= 0:
                try:
                    os.close(x)
                except OSError:
                    pass
    counts["size"] = size
    return dict(counts)


def run_mmap(path, mirror, seed, ops=5000, size=None, time_limit=120.0):
    """The mmap run (see the module doc). Returns a dict of counts."""
    rnd = random.Random(seed)
    ck = Checker(seed, "mmap")
    size = size or (3 * MiB + rnd.randint(1, 200000))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    mfd = os.open(mirror, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    dfd = -1
    mm = None
    counts = collections.Counter()
    deadline = time.monotonic() + time_limit
    try:
        init = rnd.randbytes(size)
        # part written, part a hole
        pwrite_full(fd, init[:size // 2], 0)
        pwrite_full(mfd, init[:size // 2], 0)
        os.ftruncate(fd, size)
        os.ftruncate(mfd, size)
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        dirty = False
        for ck.op in range(ops):
            if time.monotonic() > deadline:
                ck.fail("time limit of %.0f s passed after %d operations" % (time_limit, ck.op))
            r = rnd.random()
            if r < 0.5:
                n = rnd.choice((1, rnd.randint(1, 4096), rnd.randint(1, 200000)))
                off = rnd.randint(0, size - 1)
                n = min(n, size - off)
                data = rnd.randbytes(n)
                ck.note("map write off=%d len=%d" % (off, n))
                mm[off:off + n] = data
                pwrite_full(mfd, data, off)
                dirty = True
                counts["write"] += 1
            elif r < 0.9:
                off = rnd.randint(0, size - 1)
                n = min(rnd.randint(1, 300000), size - off)
                ck.note("map read off=%d len=%d" % (off, n))
                ck.same(mm[off:off + n], pread_full(mfd, n, off), "map read off=%d len=%d" % (
                    off, n))
                counts["read"] += 1
            else:
                ck.note("msync + O_DIRECT read of the whole file")
                try:
                    mm.flush()
                except OSError as e:
                    ck.fail("msync: %s" % e)
                dirty = False
                ck.same(pread_full(dfd, size, 0), pread_full(mfd, size, 0),
                        "O_DIRECT read after msync")
                counts["msync"] += 1
        ck.op = ops
        ck.note("final msync, munmap, close")
        mm.flush()
        ck.same(mm[:], pread_full(mfd, size, 0), "final map read")
        mm.close()
        mm = None
        os.close(fd)
        fd = -1
        fd = os.open(path, os.O_RDONLY)
        if os.fstat(fd).st_size != size:
            ck.fail("size after close %d, expected %d" % (os.fstat(fd).st_size, size))
        ck.same(pread_full(fd, size + 10, 0), pread_full(mfd, size + 10, 0),
                "read after munmap + close")
        ck.same(pread_full(dfd, size + 10, 0), pread_full(mfd, size + 10, 0),
                "O_DIRECT read after munmap + close")
        del dirty
    finally:
        if mm is not None:
            mm.close()
        for x in (fd, dfd, mfd):
            if x >= 0:
                try:
                    os.close(x)
                except OSError:
                    pass
    counts["size"] = size
    return dict(counts)


def compare_files(path, mirror):
    """Whole-file comparison (after a remount, say); raises Mismatch."""
    with open(path, "rb") as f:
        a = f.read()
    with open(mirror, "rb") as f:
        b = f.read()
    if a != b:
        i = first_diff(a, b)
        raise Mismatch("%s (%d bytes) differs from %s (%d bytes) first at +%d: %r vs %r" % (
            path, len(a), mirror, len(b), i, a[i:i + 16], b[i:i + 16]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("mirror")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ops", type=int, default=None)
    ap.add_argument("--mmap", action="store_true")
    ap.add_argument("--holes", action="store_true", help="fallocate, copy_file_range, seeks")
    ap.add_argument("--chunk-mb", type=int, default=1)
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    print("randio seed=%d" % seed, flush=True)
    if a.mmap:
        counts = run_mmap(a.file, a.mirror, seed, ops=a.ops or 5000)
    else:
        counts = run_fd(a.file, a.mirror, seed, ops=a.ops or 20000, chunk=a.chunk_mb * MiB,
                        holes=a.holes)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
