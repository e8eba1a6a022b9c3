"""The mount's on-disk chunk cache (-cacheDir, default <meta>/cache): it survives
restarts, serves reads while the cluster is away, and a damaged cache file is a miss
(the data then comes from the cluster), never wrong data."""

import os
import sys
import time

import requests

from kelp_fuse_conftest import MiB, free_port, read_file, wait_until, write_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import promtext  # noqa: E402

ARGS = ["-chunkSizeLimitMB=1"]


def _cache_files(meta):
    out = []
    for dirpath, _, names in os.walk(os.path.join(str(meta), "cache")):
        for n in names:
            if ".tmp" not in n:
                out.append(os.path.join(dirpath, n))
    return out


def _fill_cache(kelp, m, data, nfiles, args=None):
    """Reads the file through a fresh mount so that its chunks land in the disk cache;
    returns that mount, unmounted. (Each mount is a new process: its memory cache starts
    empty, so the next mount's reads come from the disk cache or the cluster.)"""
    m2 = kelp.remount(m, args=args)
    # Chunks fetched by readahead for a sequential reader are not written to the disk
    # cache (a stream is read once; see docs/operations.md): read the chunks back to
    # front, so each one is a reader's own fetch and lands in the disk cache.
    with open(m2.path("f"), "rb") as f:
        got = bytearray(len(data))
        for start in reversed(range(0, len(data), MiB)):
            f.seek(start)
            got[start:start + MiB] = f.read(min(MiB, len(data) - start))
    assert bytes(got) == data
    # the disk cache is written in the background
    wait_until("%d chunk files in the disk cache" % nfiles,
               lambda: len(_cache_files(m2.local)) >= nfiles, 10)
    assert m2.unmount() == 0
    return m2


def test_disk_cache_serves_reads_with_cluster_down(kelp):
    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    m = kelp.mount(ARGS)
    data = os.urandom(3 * MiB + 5)
    write_file(m.path("f"), data)
    assert m.unmount() == 0
    m2 = _fill_cache(kelp, m, data, 4)
    # -metaOffline: calls are not refused while the cluster is away (fuse/health.h)
    m3 = kelp.mount(ARGS + ["-timeout=3", "-metaOffline"], mnt=m2.mnt, meta=m2.meta)
    srv.kill9()
    t0 = time.monotonic()
    assert read_file(m3.path("f")) == data
    assert time.monotonic() - t0 < 5
    time.sleep(3.5)  # well past -timeout: still served from the disk cache
    assert read_file(m3.path("f")) == data


def test_damaged_disk_cache_files_are_misses(kelp):
    kelp.start_server()
    m = kelp.mount(ARGS)
    data = os.urandom(3 * MiB + 5)
    write_file(m.path("f"), data)
    assert m.unmount() == 0
    m2 = _fill_cache(kelp, m, data, 4)
    files = sorted(_cache_files(m2.local))
    assert len(files) >= 4
    # damage each file differently: a flipped byte in the data, a flipped byte near the
    # end, a truncation, an empty file
    for i, p in enumerate(files):
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            if i % 4 == 0:
                f.seek(size // 2)
                b = f.read(1)
                f.seek(size // 2)
                f.write(bytes([b[0] ^ 0xFF]))
            elif i % 4 == 1:
                f.seek(size - 3)
                b = f.read(1)
                f.seek(size - 3)
                f.write(bytes([b[0] ^ 0x01]))
            elif i % 4 == 2:
                f.truncate(size // 2)
            else:
                f.truncate(0)
    m3 = kelp.mount(ARGS, mnt=m2.mnt, meta=m2.meta)
    got = read_file(m3.path("f"))
    assert len(got) == len(data)
    if got != data:
        bad = [k // MiB for k in range(0, len(data), MiB) if got[k:k + MiB] != data[k:k + MiB]]
        raise AssertionError("reads return the damaged cache contents (chunks at MiB %r "
                             "differ) instead of treating the files as misses" % bad)


def test_disk_cache_filled_without_memory_cache(kelp):
    """-memoryCacheMB=0 disables the memory cache only: chunks read still go to the
    disk cache."""
    kelp.start_server()
    m = kelp.mount(ARGS + ["-memoryCacheMB=0"])
    data = os.urandom(2 * MiB)
    write_file(m.path("f"), data)
    assert m.unmount() == 0
    _fill_cache(kelp, m, data, 2, args=ARGS + ["-memoryCacheMB=0"])


def _cache_counts(port):
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    s = promtext.parse(text)
    return (promtext.total(s, "kelp_mount_cache_hits_total", cache="memory"),
            promtext.total(s, "kelp_mount_cache_misses_total", cache="memory"))


def _read_uncached(path):
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)   # the kernel's copy
        return f.read()


def test_small_blobs_written_here_are_read_from_memory(kelp):
    """A small blob this mount uploaded is in its memory cache: reading the file back
    fetches nothing; the 4 MiB chunks of a big file are not kept (a stream)."""
    kelp.start_server()
    port_file = str(kelp.tmp / "metrics.port")
    m = kelp.mount(["-metricsPort=0", "-metricsPortFile=" + port_file])
    with open(port_file) as f:
        port = int(f.read())
    small = {"s%d" % i: os.urandom(1000 + 977 * i) for i in range(20)}
    for name, data in small.items():
        write_file(m.path(name), data)
    big = os.urandom(8 * MiB)
    write_file(m.path("big"), big)
    hits0, misses0 = _cache_counts(port)
    for name, data in small.items():
        assert _read_uncached(m.path(name)) == data
    hits1, misses1 = _cache_counts(port)
    assert misses1 == misses0, "small files written here were fetched again"
    assert hits1 - hits0 >= len(small)
    assert _read_uncached(m.path("big")) == big
    _, misses2 = _cache_counts(port)
    assert misses2 - misses1 >= 2   # its two chunks came from the cluster
