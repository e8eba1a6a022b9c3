"""Increments the decimal counter in a file n times, each time under a lock: flock,
fcntl (F_SETLKW on the counter's bytes) or ofd (F_OFD_SETLKW). Used by
tests/fuse/test_locks.py from processes on different mounts of one database.

usage: lockcounter.py flock|fcntl|ofd PATH N
"""

import fcntl
import os
import struct
import sys
import time

WIDTH = 12
F_OFD_SETLKW = 38


def lock(fd, mode, kind):
    if mode == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX if kind == "x" else fcntl.LOCK_UN)
    elif mode == "fcntl":
        fcntl.lockf(fd, fcntl.LOCK_EX if kind == "x" else fcntl.LOCK_UN, WIDTH, 0)
    else:
        t = fcntl.F_WRLCK if kind == "x" else fcntl.F_UNLCK
        fcntl.fcntl(fd, F_OFD_SETLKW, struct.pack("hhqqi4x", t, 0, 0, WIDTH, 0))


def main():
    mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fd = os.open(path, os.O_RDWR)
    t0 = time.monotonic()
    for _ in range(n):
        lock(fd, mode, "x")
        raw = os.pread(fd, WIDTH, 0)
        value = int(raw.decode() or "0")
        os.pwrite(fd, b"%*d" % (WIDTH, value + 1), 0)
        lock(fd, mode, "u")
    os.close(fd)
    print("%d increments in %.1f s" % (n, time.monotonic() - t0))


if __name__ == "__main__":
    main()
