"""Helpers shared by the Python benchmarks of scripts/bench.d (meta.py, locks.py)."""

import time


def wait_for(what, fn, timeout=30):
    """Waits until fn() is true (every 20 ms), exits after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for %s" % what)
        time.sleep(0.02)


def mounted(path):
    """True if path is a mount point (/proc/self/mountinfo)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
