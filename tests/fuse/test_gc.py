"""GC: blobs that no file interval uses any more (overwritten data, truncated tails,
deleted files) are deleted in the cluster by the mount's background thread.

The volume server's /status (its url from the master's /dir/status) counts every
stored needle (FileCount) and every deletion (DeleteCount, DeletedByteCount); the live
blobs are FileCount - DeleteCount."""

import os

from kelp_fuse_conftest import MiB, free_port, read_file, wait_until, write_file

CHUNK = ["-chunkSizeLimitMB=1"]


def _totals(srv):
    dc, db, fc = srv.delete_totals()
    return {"deletes": dc, "deleted_bytes": db, "files": fc, "live": fc - dc}


def test_overwrites_and_deletes_free_chunks(kelp):
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    assert srv.volume_status()["Volumes"] is not None
    base = _totals(srv)
    data = os.urandom(3 * MiB)
    write_file(m.path("f"), data)   # 3 blobs of 1 MiB
    write_file(m.path("g"), os.urandom(2 * MiB))   # 2 blobs
    t = _totals(srv)
    assert t["files"] - base["files"] == 5, t
    # overwrite f in place 4 times: each time 3 new blobs, 3 superseded
    for i in range(4):
        data = os.urandom(3 * MiB)
        with open(m.path("f"), "r+b") as fh:
            fh.write(data)
    assert read_file(m.path("f")) == data
    wait_until("12 superseded chunks to be deleted",
               lambda: _totals(srv)["deletes"] - base["deletes"] >= 12, 20, interval=0.2)
    t = _totals(srv)
    assert t["deleted_bytes"] - base["deleted_bytes"] >= 12 * MiB, t
    assert t["live"] - base["live"] == 5, t
    # a truncate inside the last chunk keeps it (it is still used); one to 1 MiB drops two
    os.truncate(m.path("f"), MiB)
    wait_until("the chunks past 1 MiB to be deleted",
               lambda: _totals(srv)["live"] - base["live"] == 3, 20, interval=0.2)
    # deleting files frees everything
    os.unlink(m.path("f"))
    os.unlink(m.path("g"))
    wait_until("every chunk to be deleted",
               lambda: _totals(srv)["live"] == base["live"], 20, interval=0.2)
    t = _totals(srv)
    assert t["deletes"] - base["deletes"] == 12 + 2 + 1 + 2, t
    assert not os.listdir(m.mnt)


def test_partial_overwrite_keeps_shared_chunk(kelp):
    """A chunk partly overwritten is still used by the rest of the file: it must not be
    deleted; it goes when nothing uses it."""
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    base = _totals(srv)
    data = bytearray(os.urandom(MiB))
    write_file(m.path("f"), bytes(data))
    with open(m.path("f"), "r+b") as fh:
        fh.seek(1000)
        fh.write(b"x" * 5000)
    data[1000:6000] = b"x" * 5000
    assert _totals(srv)["live"] - base["live"] == 2
    # nothing to delete yet: both blobs are used (the first around the new bytes)
    m2 = kelp.remount(m)   # and a fresh cache: the data comes from the cluster
    assert read_file(m2.path("f")) == bytes(data)
    assert _totals(srv)["live"] - base["live"] == 2
    # overwrite the middle part fully: the small blob is no longer used
    with open(m2.path("f"), "r+b") as fh:
        fh.seek(0)
        fh.write(b"y" * 10000)
    data[0:10000] = b"y" * 10000
    wait_until("the fully overwritten small chunk to be deleted",
               lambda: _totals(srv)["deletes"] - base["deletes"] == 1, 20, interval=0.2)
    assert read_file(m2.path("f")) == bytes(data)
    os.unlink(m2.path("f"))
    wait_until("every chunk to be deleted",
               lambda: _totals(srv)["live"] == base["live"], 20, interval=0.2)


def test_gc_queue_survives_restart(kelp):
    """Blobs queued for deletion while the cluster is down are deleted after the mount
    restarts (the gc table is persistent), and nothing else is deleted."""
    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    m = kelp.mount(CHUNK + ["-timeout=2", "-metaOffline"])
    base = _totals(srv)
    write_file(m.path("a"), os.urandom(2 * MiB))
    write_file(m.path("b"), b"keep me")
    srv.kill9()
    os.unlink(m.path("a"))   # metadata only: works with the cluster down (-metaOffline)
    m.crash()
    srv.start()
    m2 = kelp.remount(m, args=CHUNK)
    wait_until("the queued chunks to be deleted after the restart",
               lambda: _totals(srv)["live"] - base["live"] == 1, 20, interval=0.2)
    assert read_file(m2.path("b")) == b"keep me"
