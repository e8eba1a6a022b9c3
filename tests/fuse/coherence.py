#!/usr/bin/python3
"""coherence: processes that write, sync and read the same file of a kelp mount at once,
each read checked against what the writers had already completed.

Run as `coherence.py ROLE STATE FILE [args]`. Processes share a small STATE file on a
local filesystem, mapped with mmap: 8-byte counters written with single aligned stores
(ctypes), each written by one process only. Every role prints one JSON line with its
counts and the first problems it saw, and exits 0; the test decides.

Roles and what they check (SEED picks the data, RSEED a reader's choices):

  appender  STATE FILE SEED BLOCKS SYNC_EVERY
            pwrite()s 4 KiB blocks at the end of FILE, fdatasync() after every SYNC_EVERY;
            publishes the number of blocks written (slot 0) and synced (slot 1).
  tailer    STATE FILE SEED RSEED SECONDS
            preads the newest written block, the newest synced one and a random older
            one: each must come back whole with its exact bytes; fstat never smaller
            than the blocks written before the read started.
  renamer   STATE FILE SEED SECONDS
            renames FILE to FILE.b and back (a file being written and flushed).
  namereader STATE FILE SEED RSEED SECONDS
            opens FILE or FILE.b, preads a block the appender wrote, closes.
  lines     STATE FILE SEED LINES SYNC_EVERY
            appends lines through O_APPEND, fsync() every SYNC_EVERY lines; publishes
            the bytes written (slot 0).
  statter   STATE FILE SEED RSEED SECONDS
            stat() by path never smaller than the bytes written before it started; a
            read of the file's first N bytes (N written before) gives exactly them.
  owner     STATE FILE SEED INDEX WRITERS BLOCKS SECONDS
            rewrites the blocks i with i % WRITERS == INDEX with a growing version;
            slot started[i] before the pwrite, completed[i] after; fsync, fdatasync,
            close + reopen now and then (flushes of the shared buffers).
  checker   STATE FILE SEED RSEED BLOCKS SECONDS [pread|mmap|seq|reopen]
            reads blocks (random preads, a shared map, sequential preads, or an open +
            pread + close each): the version found is never older than the one
            completed before the read started, and a block no writer touched during the
            read has exactly that version's bytes.
  mutator   STATE FILE SEED OPS MAXSIZE
            random pwrite / ftruncate / fsync / fdatasync / close+reopen on FILE, keeping
            the expected content in STATE (seqlock: slot 0 odd while an operation runs).
  reader    STATE FILE SEED SECONDS MAXSIZE
            reads random ranges and fstat()s (until FILE.done appears); when no
            operation ran during the read, the bytes and the size must equal the
            expected ones exactly.
"""

import ctypes
import json
import mmap
import os
import random
import struct
import sys
import time

BLOCK = 4096


class State:
    """Counters (and for mutator/reader a data area) in a shared mmap'd file."""

    def __init__(self, path, slots, data=0, create=False):
        size = 8 * slots + data
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        self.fd = os.open(path, os.O_RDWR)
        self.mm = mmap.mmap(self.fd, size)
        self.slots = [ctypes.c_int64.from_buffer(self.mm, 8 * i) for i in range(slots)]
        self.data_off = 8 * slots

    def get(self, i):
        return self.slots[i].value

    def set(self, i, v):
        self.slots[i].value = v


def block_bytes(seed, idx, version=0):
    """The content of block idx at a version: a header (idx, version) and random bytes."""
    head = struct.pack("<QQ", idx, version)
    return head + random.Random((seed << 40) ^ (idx << 20) ^ version).randbytes(BLOCK - 16)


class Report:
    def __init__(self, role):
        self.out = {"role": role, "checks": 0, "errors": 0, "problems": []}

    def ok(self):
        self.out["checks"] += 1

    def bad(self, msg):
        self.out["errors"] += 1
        if len(self.out["problems"]) < 10:
            self.out["problems"].append(msg)

    def add(self, key, n=1):
        self.out[key] = self.out.get(key, 0) + n

    def done(self):
        print(json.dumps(self.out), flush=True)


def pread_full(fd, n, off):
    """One pread: a short answer is what the test wants to see, not retried."""
    return os.pread(fd, n, off)


def wait_for(path, secs=10.0):
    end = time.monotonic() + secs
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit("no %s after %.0f s" % (path, secs))
        time.sleep(0.005)


# ------------------------------------------------------------------ append + tail


def appender(state, path, seed, blocks, sync_every):
    st = State(state, 2)
    rep = Report("appender")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(blocks):
        n = os.pwrite(fd, block_bytes(seed, i), i * BLOCK)
        assert n == BLOCK
        st.set(0, i + 1)
        if (i + 1) % sync_every == 0:
            os.fdatasync(fd)
            st.set(1, i + 1)
            rep.add("syncs")
    os.fsync(fd)
    st.set(1, blocks)
    os.close(fd)
    rep.done()


def tailer(state, path, seed, rseed, secs):
    st = State(state, 2)
    rep = Report("tailer")
    rnd = random.Random(rseed)
    wait_for(path)
    fd = os.open(path, os.O_RDONLY)
    end = time.monotonic() + secs
    last = -1
    while time.monotonic() < end:
        written, synced = st.get(0), st.get(1)
        if written == 0:
            time.sleep(0.001)
            continue
        size = os.fstat(fd).st_size
        if size < written * BLOCK:
            rep.bad("fstat size %d < %d bytes written before" % (size, written * BLOCK))
        else:
            rep.ok()
        picks = {written - 1, rnd.randrange(written)}
        if synced:
            picks.add(synced - 1)
        for b in picks:
            got = pread_full(fd, BLOCK, b * BLOCK)
            if got != block_bytes(seed, b):
                kind = ("%d bytes" % len(got) if len(got) != BLOCK else
                        "zeros" if got == bytes(BLOCK) else "wrong bytes")
                rep.bad("block %d (written %d, synced %d): %s" % (b, written, synced, kind))
            else:
                rep.ok()
        if written == last and st.get(1) == written and os.path.exists(path + ".done"):
            break
        last = written
    os.close(fd)
    rep.done()


def renamer(state, path, seed, secs):
    """Renames FILE to FILE.b and back while it is written and synced."""
    rep = Report("renamer")
    wait_for(path)
    end = time.monotonic() + secs
    names = (path, path + ".b")
    i = 0
    while time.monotonic() < end and not os.path.exists(path + ".done"):
        os.rename(names[i % 2], names[(i + 1) % 2])
        i += 1
        rep.add("renames")
    if i % 2:
        os.rename(names[1], names[0])
    rep.done()


def namereader(state, path, seed, rseed, secs):
    """Opens FILE or FILE.b (whichever exists), reads a block already written, closes."""
    st = State(state, 2)
    rep = Report("namereader")
    rnd = random.Random(rseed)
    end = time.monotonic() + secs
    while time.monotonic() < end and not os.path.exists(path + ".done"):
        written = st.get(0)
        if not written:
            time.sleep(0.001)
            continue
        fd = None
        for name in (path, path + ".b", path):
            try:
                fd = os.open(name, os.O_RDONLY)
                break
            except FileNotFoundError:
                continue
        if fd is None:
            rep.add("missed")  # renamed twice between the opens
            continue
        b = rnd.choice((written - 1, rnd.randrange(written)))
        got = pread_full(fd, BLOCK, b * BLOCK)
        os.close(fd)
        if got != block_bytes(seed, b):
            rep.bad("block %d (written %d): %d bytes, %s" % (
                b, written, len(got), "zeros" if got == bytes(len(got)) else "wrong"))
        else:
            rep.ok()
    rep.done()


# ------------------------------------------------------------------ O_APPEND lines + stat


def line_text(seed, i):
    r = random.Random(seed * 1000003 + i)
    return ("%08d %s\n" % (i, "x" * r.randrange(0, 120))).encode()


def lines(state, path, seed, count, sync_every):
    st = State(state, 1)
    rep = Report("lines")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    total = 0
    for i in range(count):
        data = line_text(seed, i)
        assert os.write(fd, data) == len(data)
        total += len(data)
        st.set(0, total)
        if (i + 1) % sync_every == 0:
            os.fsync(fd)
            rep.add("syncs")
    os.close(fd)
    rep.done()


def statter(state, path, seed, rseed, secs):
    st = State(state, 1)
    rep = Report("statter")
    wait_for(path)
    expect = b""
    i = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        done = st.get(0)
        size = os.stat(path).st_size
        if size < done:
            rep.bad("stat size %d < %d bytes written before" % (size, done))
        else:
            rep.ok()
        if rep.out["checks"] % 16 == 0 and done:
            while len(expect) < done:
                expect += line_text(seed, i)
                i += 1
            with open(path, "rb") as f:
                got = f.read(done)
            if got != expect[:done]:
                rep.bad("the first %d bytes differ (got %d bytes)" % (done, len(got)))
            else:
                rep.ok()
        if os.path.exists(path + ".done") and st.get(0) == done:
            break
    rep.done()


# ------------------------------------------------------------------ owners + checkers


def owner(state, path, seed, index, writers, blocks, secs):
    st = State(state, 2 * blocks)
    rep = Report("owner")
    rnd = random.Random(seed * 7919 + index)
    mine = [b for b in range(blocks) if b % writers == index]
    fd = os.open(path, os.O_RDWR)
    end = time.monotonic() + secs
    version = {b: st.get(blocks + b) for b in mine}
    while time.monotonic() < end:
        b = rnd.choice(mine)
        v = version[b] + 1
        st.set(b, v)  # started
        assert os.pwrite(fd, block_bytes(seed, b, v), b * BLOCK) == BLOCK
        st.set(blocks + b, v)  # completed
        version[b] = v
        rep.add("writes")
        r = rnd.random()
        if r < 0.02:
            os.fsync(fd)
            rep.add("fsyncs")
        elif r < 0.04:
            os.fdatasync(fd)
            rep.add("fsyncs")
        elif r < 0.06:
            os.close(fd)  # a FUSE flush of the file's shared buffers
            fd = os.open(path, os.O_RDWR)
            rep.add("reopens")
    os.close(fd)
    rep.done()


def checker(state, path, seed, rseed, blocks, secs, mode="pread"):
    st = State(state, 2 * blocks)
    rep = Report("checker-" + mode)
    rnd = random.Random(rseed)
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, blocks * BLOCK, prot=mmap.PROT_READ) if mode == "mmap" else None
    end = time.monotonic() + secs
    n = 0
    while time.monotonic() < end:
        # seq: a sequential reader (readahead runs ahead of it while blocks change)
        b = n % blocks if mode == "seq" else rnd.randrange(blocks)
        n += 1
        s0, c0 = st.get(b), st.get(blocks + b)
        if mm:
            got = mm[b * BLOCK:(b + 1) * BLOCK]
        elif mode == "reopen":
            # a release of the file's last reader handle racing the others' writes
            rfd = os.open(path, os.O_RDONLY)
            got = pread_full(rfd, BLOCK, b * BLOCK)
            os.close(rfd)
        else:
            got = pread_full(fd, BLOCK, b * BLOCK)
        s1 = st.get(b)
        if len(got) != BLOCK:
            rep.bad("block %d: %d bytes" % (b, len(got)))
            continue
        idx, v = struct.unpack_from("<QQ", got)
        if idx != b or v < c0:
            rep.bad("block %d: header (%d, v%d), but v%d was completed before the read" % (
                b, idx, v, c0))
        elif s0 == c0 == s1 and got != block_bytes(seed, b, c0):
            rep.bad("block %d: not the bytes of v%d (no write ran during the read)" % (b, c0))
        else:
            rep.ok()
    if mm:
        mm.close()
    os.close(fd)
    rep.done()


# ------------------------------------------------------------------ mutator + readers


def mutator(state, path, seed, ops, maxsize):
    # slots: 0 seqlock, 1 expected size; then maxsize bytes of expected content
    st = State(state, 2, maxsize)
    rep = Report("mutator")
    rnd = random.Random(seed)
    model = memoryview(st.mm)[st.data_off:]
    size = st.get(1)
    fd = os.open(path, os.O_RDWR)
    seq = st.get(0)
    for _ in range(ops):
        seq += 1
        st.set(0, seq)  # odd: an operation runs
        r = rnd.random()
        if r < 0.6:
            n = rnd.choice((1, 100, 4096, 65536, rnd.randrange(1, 300000),
                            rnd.randrange(1 << 20, 2 << 20)))  # fills a chunk
            off = rnd.randrange(0, maxsize - n)
            data = rnd.randbytes(n)
            assert os.pwrite(fd, data, off) == n
            if off > size:
                model[size:off] = bytes(off - size)
            model[off:off + n] = data
            size = max(size, off + n)
            rep.add("writes")
        elif r < 0.75:
            new = rnd.randrange(0, maxsize)
            os.ftruncate(fd, new)
            if new > size:
                model[size:new] = bytes(new - size)
            size = new
            rep.add("truncates")
        elif r < 0.85:
            (os.fsync if rnd.random() < 0.5 else os.fdatasync)(fd)
            rep.add("syncs")
        else:
            os.close(fd)
            fd = os.open(path, os.O_RDWR)
            rep.add("reopens")
        st.set(1, size)
        seq += 1
        st.set(0, seq)  # even: quiet
        if rnd.random() < 0.5:
            time.sleep(rnd.random() * 0.004)  # quiet windows for the readers
    os.close(fd)
    rep.done()


def reader(state, path, seed, secs, maxsize):
    st = State(state, 2, maxsize)
    rep = Report("reader")
    rnd = random.Random(seed * 101)
    model = memoryview(st.mm)[st.data_off:]
    fd = os.open(path, os.O_RDONLY)
    end = time.monotonic() + secs
    while time.monotonic() < end and not os.path.exists(path + ".done"):
        s0 = st.get(0)
        if s0 & 1:
            rep.add("busy")
            time.sleep(0.0002)
            continue
        n = rnd.choice((1, 4096, 65536, 1 << 20))
        off = rnd.randrange(0, maxsize)
        got = pread_full(fd, n, off)
        fsize = os.fstat(fd).st_size
        size = st.get(1)
        want = bytes(model[off:min(off + n, size)]) if off < size else b""
        if st.get(0) != s0:
            rep.add("raced")
            continue
        if fsize != size:
            rep.bad("fstat size %d, expected %d (seq %d)" % (fsize, size, s0))
        elif got != want:
            first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
            rep.bad("pread(%d, %d): %d bytes, expected %d, first difference at +%d (seq %d)"
                    % (n, off, len(got), len(want), first, s0))
        else:
            rep.ok()
    os.close(fd)
    rep.done()


def main(argv):
    role, rest = argv[1], argv[2:]
    state, path = rest[0], rest[1]
    nums = [int(x) if x.isdigit() else x for x in rest[2:]]
    globals()[role](state, path, *nums)


if __name__ == "__main__":
    main(sys.argv)
