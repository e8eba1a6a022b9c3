"""The mount's /metrics (-metricsPort, issue 15): off by default; with -metricsPort=0 a
free port is written to -metricsPortFile; every scrape parses strictly (promtext.py),
counters never go down, and FUSE operations, bytes, cache hits and misses and uploads
move as the calls made."""

import os
import sys

import requests

from kelp_fuse_conftest import MiB, wait_until, write_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import promtext  # noqa: E402
from promtext import total, value  # noqa: E402


def _scrape(port):
    r = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith(promtext.CONTENT_TYPE)
    return r.text


def test_mount_metrics(kelp):
    kelp.start_server()
    port_file = str(kelp.tmp / "metrics.port")
    m = kelp.mount(["-chunkSizeLimitMB=1", "-metricsPort=0", "-metricsPortFile=" + port_file])
    with open(port_file) as f:
        port = int(f.read())
    t0 = _scrape(port)
    s0 = promtext.parse(t0)
    assert value(s0, "kelp_mount_cluster_reachable") == 1
    assert value(s0, "kelp_mount_uploads_in_flight") == 0

    n = 5
    data = os.urandom(3 * MiB + 100)
    for i in range(n):
        write_file(m.path("f%d" % i), data)
    for i in range(n):
        with open(m.path("f%d" % i), "rb") as f:
            # The kernel keeps the pages it wrote (keep_cache): dropped, the reads
            # come to the mount.
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read() == data
    os.unlink(m.path("f0"))

    # An operation is recorded when its callback returns, just after the reply that
    # lets the system call return: the last one (the unlink) may not be counted yet.
    last = {}

    def unlink_counted():
        last["text"] = _scrape(port)
        s = promtext.parse(last["text"])
        return (total(s, "kelp_mount_operation_duration_seconds_count", op="unlink") >
                total(s0, "kelp_mount_operation_duration_seconds_count", op="unlink"))

    wait_until("the unlink to be counted", unlink_counted, 10)
    t1 = last["text"]
    promtext.check_monotonic(t0, t1)
    s1 = promtext.parse(t1)

    def moved(name, **labels):
        return total(s1, name, **labels) - total(s0, name, **labels)

    assert moved("kelp_mount_written_bytes_total") == n * len(data)
    assert moved("kelp_mount_read_bytes_total") >= n * len(data)
    assert moved("kelp_mount_operation_duration_seconds_count", op="create") == n
    assert moved("kelp_mount_operation_duration_seconds_count", op="unlink") == 1
    assert moved("kelp_mount_operation_duration_seconds_count", op="write") >= n
    assert moved("kelp_mount_operation_duration_seconds_count", op="read") >= n
    # 4 chunks of 1 MiB per file
    assert moved("kelp_mount_chunk_uploads_total", result="success") == 4 * n
    assert moved("kelp_mount_chunk_uploads_total", result="failure") == 0
    chunk_reads = (moved("kelp_mount_cache_hits_total", cache="memory") +
                   moved("kelp_mount_cache_misses_total", cache="memory"))
    assert chunk_reads >= 4 * n
    assert value(s1, "kelp_mount_uploads_in_flight") == 0
    # f0's 4 blobs go to the gc queue, then away
    # every family is in docs/operations.md's table
    import re
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(root, "docs", "operations.md")) as f:
        documented = set(re.findall(r"^\| `(kelp_[a-z_]+)` \|", f.read(), re.M))
    assert set(promtext.types_of(t1)) <= documented, set(promtext.types_of(t1)) - documented
    wait_until("the gc queue to empty",
               lambda: value(promtext.parse(_scrape(port)), "kelp_mount_gc_queue_blobs") == 0,
               15)


def test_mount_metrics_off_by_default(kelp):
    kelp.start_server()
    m = kelp.mount()
    assert "mount: metrics on" not in m.log_text()
    # the pid listens on no TCP port
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % m.pid()):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (m.pid(), fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    with open("/proc/net/tcp") as f:
        listening = [ln.split()[9] for ln in f.read().splitlines()[1:] if ln.split()[3] == "0A"]
    assert not inodes & set(listening)
