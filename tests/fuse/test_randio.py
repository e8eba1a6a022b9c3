"""The random-I/O checker (randio.py) on a mount with 1 MiB chunks, so that chunk
boundaries, partial overwrites of chunks and truncates inside chunks happen all the time.

Seeds: fixed by default (reproducible CI); RANDIO_SEED=N runs with seed N,
RANDIO_SEED=random with a random one. The seed is printed and is in every failure."""

import os
import random
import threading

import randio
from kelp_fuse_conftest import MiB

# small caches: chunks are evicted from memory (8 MiB) and from disk (16 MiB) during a run
CHUNK_ARGS = ["-chunkSizeLimitMB=1", "-memoryCacheMB=8", "-cacheCapacityMB=16"]


def _seed(default):
    env = os.environ.get("RANDIO_SEED")
    if env == "random":
        return random.randrange(1 << 32)
    if env:
        return int(env)
    return default


def test_randio_fd(kelp, tmp_path, engine):
    kelp.start_server()
    m = kelp.mount(CHUNK_ARGS)
    seed = _seed(20240601)
    print("randio fd seed=%d" % seed)
    path, mirror = m.path("rand.bin"), str(tmp_path / "rand.mirror")
    # PostgreSQL: half as many operations (each read is 3 round trips, each write a
    # commit: 20,000 take about 100 s, near the test's time limit on a busy machine)
    ops = 20000 if engine == "lmdb" else 10000
    counts = randio.run_fd(path, mirror, seed, ops=ops, chunk=MiB, time_limit=120)
    print(counts)
    assert counts["write"] > ops // 4 and counts["truncate"] > ops // 20
    assert counts["read"] + counts["read_direct"] > ops // 4
    # the data is in the cluster and the metadata, not only in the kernel's page cache
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    try:
        randio.compare_files(m2.path("rand.bin"), mirror)
    except randio.Mismatch as e:
        raise randio.Mismatch("seed=%d: after remount: %s" % (seed, e)) from None


def test_randio_holes(kelp, tmp_path, engine):
    """fallocate (every mode), punch hole, zero range, copy_file_range (within the file
    and from another, so blobs are shared and then cut by overwrites, truncates and
    holes) and SEEK_DATA/SEEK_HOLE, mixed with the writes, reads and truncates; several
    seeds, each on a new file; compared again after a remount."""
    kelp.start_server()
    m = kelp.mount(CHUNK_ARGS)
    base = _seed(4242)
    seeds = [base + i for i in range(6 if engine == "lmdb" else 3)]
    print("randio holes seeds=%s" % seeds)
    total = {}
    for seed in seeds:
        path, mirror = m.path("h%d.bin" % seed), str(tmp_path / ("h%d.mirror" % seed))
        counts = randio.run_fd(path, mirror, seed, ops=2500, chunk=MiB, time_limit=60,
                               holes=True)
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    print(total)
    assert total["copy_range"] > 100 and total["seek"] > 50
    assert all(total.get("fallocate_%#x" % mode, 0) > 10 for mode in randio.FALLOC_MODES)
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    for seed in seeds:
        try:
            randio.compare_files(m2.path("h%d.bin" % seed), str(tmp_path / ("h%d.mirror" % seed)))
            randio.compare_files(m2.path("h%d.bin.src" % seed),
                                 str(tmp_path / ("h%d.mirror.src" % seed)))
        except randio.Mismatch as e:
            raise randio.Mismatch("seed=%d: after remount: %s" % (seed, e)) from None


def test_randio_mmap(kelp, tmp_path):
    kelp.start_server()
    m = kelp.mount(CHUNK_ARGS)
    seed = _seed(777)
    print("randio mmap seed=%d" % seed)
    path, mirror = m.path("map.bin"), str(tmp_path / "map.mirror")
    counts = randio.run_mmap(path, mirror, seed, ops=5000, time_limit=90)
    print(counts)
    assert counts["msync"] > 100
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    try:
        randio.compare_files(m2.path("map.bin"), mirror)
    except randio.Mismatch as e:
        raise randio.Mismatch("seed=%d: after remount: %s" % (seed, e)) from None


def test_randio_concurrent_files(kelp, tmp_path):
    """Four randio runs at once on four files (threads: the mount serves them from
    several FUSE threads, each with its own cluster client), then all compared after a
    remount."""
    kelp.start_server()
    m = kelp.mount(CHUNK_ARGS)
    base = _seed(99)
    print("randio concurrent base seed=%d" % base)
    errors = []

    def one(i):
        try:
            randio.run_fd(m.path("f%d" % i), str(tmp_path / ("f%d" % i)), base + i, ops=1500,
                          chunk=MiB, max_size=3 * MiB, time_limit=60)
        except BaseException as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a randio thread is still running"
    assert not errors, errors[0]
    m2 = kelp.remount(m)
    for i in range(4):
        randio.compare_files(m2.path("f%d" % i), str(tmp_path / ("f%d" % i)))
