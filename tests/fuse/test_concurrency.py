"""Several processes on one file at once: a writer streaming a large file while other
processes open and close it (each close is a FUSE flush of the shared write buffers) or
fsync it. The mount must neither crash nor lose or mix up data.

Bounded: every process has a timeout; the kelp fixture's watchdog aborts the mount if
anything hangs."""

import hashlib
import os
import subprocess
import sys
import time

from kelp_fuse_conftest import MiB, read_file

WRITER = r"""
import hashlib, os, random, sys
path, total_mb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
h = hashlib.sha256()
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
for i in range(total_mb):
    blk = rnd.randbytes(1 << 20)
    h.update(blk)
    view = memoryview(blk)
    while len(view):
        view = view[os.write(fd, view):]
os.close(fd)
print(h.hexdigest())
"""

POKER = r"""
import os, sys, time
path, mode, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
end = time.monotonic() + secs
n = 0
while time.monotonic() < end and not os.path.exists(path + ".done"):
    try:
        fd = os.open(path, os.O_RDWR if mode == "fsync" else os.O_RDONLY)
    except FileNotFoundError:
        continue
    try:
        if mode == "fsync":
            os.fsync(fd)
        elif mode == "read":
            os.pread(fd, 65536, (n * 7919 * 4096) % (64 << 20))
    finally:
        os.close(fd)
    n += 1
print(n)
"""


def _run_writer_with_pokers(m, name, total_mb, modes, seed=1):
    path = m.path(name)
    pokers = [subprocess.Popen([sys.executable, "-c", POKER, path, mode, "90"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for mode in modes]
    try:
        time.sleep(0.2)
        w = subprocess.run([sys.executable, "-c", WRITER, path, str(total_mb), str(seed)],
                           capture_output=True, timeout=120)
    finally:
        try:
            with open(path + ".done", "wb"):
                pass
        except OSError:
            pass
        outs = []
        for p in pokers:
            try:
                outs.append(p.communicate(timeout=30))
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate())
    assert m.alive(), "the mount daemon died (exit status %s)" % m.proc.returncode
    assert w.returncode == 0, "writer failed: %s" % w.stderr.decode()[-2000:]
    for p, (out, err) in zip(pokers, outs):
        assert p.returncode == 0, "a %s process failed: %s" % (
            p.args[4], err.decode()[-2000:])
    want = w.stdout.strip().decode()
    got = hashlib.sha256(read_file(path)).hexdigest()
    assert os.stat(path).st_size == total_mb * MiB
    assert got == want, "the file's content differs from what was written"
    print("pokes:", [o[0].strip() for o in outs])
    return want


def test_streaming_writer_with_concurrent_closers(kelp):
    """A writer streams 200 MiB (1 MiB chunks: every write fills a chunk, uploaded in the
    background) while three processes open and close the same file in a loop."""
    kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1"])
    _run_writer_with_pokers(m, "big", 200, ["close", "close", "read"])


def test_streaming_writer_with_concurrent_fsync(kelp):
    """The same with two processes fsync'ing the file through their own descriptors."""
    kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1"])
    want = _run_writer_with_pokers(m, "big", 120, ["fsync", "fsync"], seed=2)
    m2 = kelp.remount(m)
    assert hashlib.sha256(read_file(m2.path("big"))).hexdigest() == want
