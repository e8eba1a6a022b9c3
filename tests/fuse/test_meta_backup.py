"""Metadata backups in the cluster: `kelp meta backup`, `kelp meta restore`, the mount's
-backupInterval.

- backup, delete the metadata, restore into a new metadata, mount it: `diff -r` against
  the source tree (every file kind), on both engines;
- a damaged newest backup (a part overwritten in the cluster): restore warns and falls
  back to the previous one, whose blobs the gc hold kept although the live filesystem
  overwrote and deleted those files after it;
- backup and restore while a writer keeps writing to the original mount: the restored
  tree holds every file closed before the backup began, each with its exact bytes, and
  nothing that is not a prefix of what was written;
- the mount's periodic backups keep -backupKeep of them; -list and -at.
"""

import json
import os
import shutil
import subprocess
import threading
import time

import pytest
import requests

from kelp_fuse_conftest import MiB, read_file, run, wait_until, write_file
from test_meta_dump import build_tree, walk

pytestmark = pytest.mark.watchdog(400)


def backup(kelp, meta, *extra):
    r = run([kelp.kelp_bin, "meta", "backup", "-meta=" + meta,
             "-master=" + kelp.server.master_addr] + list(extra), timeout=120)
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def restore(kelp, meta, *extra, check=True):
    cmd = [kelp.kelp_bin, "meta", "restore", "-meta=" + meta,
           "-master=" + kelp.server.master_addr] + list(extra)
    r = run(cmd, timeout=120, check=check)
    return r


def listing(kelp):
    r = run([kelp.kelp_bin, "meta", "restore", "-list", "-master=" + kelp.server.master_addr])
    return [json.loads(x) for x in r.stdout.decode().splitlines() if x.strip()]


def new_meta(kelp, name):
    return kelp.pg.new_database() if kelp.engine == "pg" else str(kelp.tmp / name)


def test_backup_delete_restore_diff(kelp, tmp_path):
    """The issue's procedure: backup, the metadata is lost, restore on a fresh metadata,
    mount, diff -r against the source; the restored files keep their attributes."""
    kelp.start_server()
    src_local = str(tmp_path / "src")
    build_tree(src_local)
    m = kelp.mount(args=["-chunkSizeLimitMB=1"])
    run(["cp", "-a", src_local, m.path("t")])
    before = walk(m.path("t"))
    b = backup(kelp, m.meta)
    assert b["inodes"] >= 18 and b["parts"] >= 1 and len(b["sha256"]) == 64
    assert m.unmount() == 0
    if kelp.engine == "lmdb":
        shutil.rmtree(m.meta)               # the mount host's disk is gone
    else:
        kelp.pg.sql("DROP DATABASE %s" % m.meta.rsplit("/", 1)[1])
    fresh = new_meta(kelp, "restored")
    r = restore(kelp, fresh)
    out = json.loads(r.stdout.decode().strip())
    assert out["fell_back"] == 0 and out["time_ns"] == b["time_ns"]
    m2 = kelp.mount(meta=fresh)
    # diff cannot compare FIFOs and devices: the walk below does
    run(["diff", "-r", "--no-dereference", "--exclude=fifo", "--exclude=*dev", src_local,
         m2.path("t")], timeout=120)
    after = walk(m2.path("t"))
    assert after == before
    # A restore into a metadata that is not empty is refused.
    assert m2.unmount() == 0
    r = restore(kelp, fresh, check=False)
    assert r.returncode == 1 and b"not empty" in r.stderr, r.stderr


def _overwrite_part(kelp, fid):
    """Replaces the bytes of a blob in the cluster (same fid, same cookie)."""
    loc = kelp.server.master_get("/dir/lookup?volumeId=" + fid.split(",")[0]).json()
    url = loc["locations"][0]["url"]
    r = requests.put("http://%s/%s" % (url, fid), data=b"\x1f\x8b garbage, not the dump",
                     timeout=10)
    assert r.status_code in (200, 201), r.text


def test_damaged_newest_backup_falls_back(kelp):
    """Two backups; the live filesystem then overwrites and deletes what the first one
    holds (gc runs); the newest backup's part is damaged in the cluster: restore warns,
    restores the first backup, and its files read back exactly (the gc hold kept their
    blobs)."""
    kelp.start_server()
    m = kelp.mount()
    old = {"a": os.urandom(300000), "b": os.urandom(5000)}
    for k, v in old.items():
        write_file(m.path(k), v)
    b1 = backup(kelp, m.meta)
    time.sleep(1.1)   # distinct backup times (-at below)
    write_file(m.path("c"), b"only in the second backup")
    b2 = backup(kelp, m.meta)
    # After both backups: a's blobs superseded, b deleted: queued for gc.
    write_file(m.path("a"), b"new contents")
    os.unlink(m.path("b"))
    lst = listing(kelp)
    assert [x["time_ns"] for x in lst] == [b2["time_ns"], b1["time_ns"]]
    # the mount's gc had time to run (it deletes within a second of the queueing)
    time.sleep(3)
    _overwrite_part(kelp, lst[0]["parts"][0])
    fresh = new_meta(kelp, "restored")
    r = restore(kelp, fresh)
    err = r.stderr.decode()
    assert "WARNING: the backup of" in err and "is damaged" in err and \
        "falling back to the previous backup" in err, err
    assert json.loads(r.stdout.decode().strip())["fell_back"] == 1
    m2 = kelp.mount(meta=fresh, args=["-o", "ro"])
    assert sorted(os.listdir(m2.mnt)) == ["a", "b"]
    for k, v in old.items():
        assert read_file(m2.path(k)) == v, k
    assert m2.unmount() == 0
    # -at chooses an older backup directly; a time before every backup is an error.
    fresh2 = new_meta(kelp, "restored2")
    r = restore(kelp, fresh2, "-at=%d" % (b1["time_ns"] // 10**9 + 1))
    assert json.loads(r.stdout.decode().strip())["time_ns"] == b1["time_ns"]
    r = restore(kelp, new_meta(kelp, "r3"), "-at=1000", check=False)
    assert r.returncode == 1 and b"no backup taken at or before" in r.stderr
    # Every backup damaged: a clear error, nothing restored.
    _overwrite_part(kelp, lst[1]["parts"][0])
    r = restore(kelp, new_meta(kelp, "r4"), check=False)
    assert r.returncode == 1 and b"no older backup is left" in r.stderr, r.stderr


def test_restore_while_writing(kelp):
    """A writer keeps creating files on the original mount during the backup and the
    restore: the restored tree has every file closed before the backup started, each
    file it has holds a prefix of what was written (complete ones exactly)."""
    kelp.start_server()
    m = kelp.mount(args=["-chunkSizeLimitMB=1"])
    os.makedirs(m.path("w"))
    stop = threading.Event()
    closed = []      # (monotonic time at close, name)
    errors = []

    def content(i):
        return (b"%08d" % i) * (1000 + (i % 7) * 40000)

    def writer():
        i = 0
        try:
            while not stop.is_set() and i < 100000:
                write_file(m.path("w", "f%06d" % i), content(i))
                closed.append((time.monotonic(), "f%06d" % i))
                i += 1
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_until("the writer to get going", lambda: len(closed) > 20, 30)
        started = time.monotonic()
        backup(kelp, m.meta)
        fresh = new_meta(kelp, "restored")
        restore(kelp, fresh)
        wait_until("more writes after the restore", lambda: closed[-1][0] > time.monotonic() - 0.5
                   and len(closed) > 40, 30)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    before = [n for (ts, n) in closed if ts < started]
    m2 = kelp.mount(meta=fresh, args=["-o", "ro"])
    names = set(os.listdir(m2.path("w")))
    missing = [n for n in before if n not in names]
    assert not missing, missing[:10]
    for n in sorted(names):
        got = read_file(m2.path("w", n))
        want = content(int(n[1:]))
        assert want.startswith(got), n
        if n in before:
            assert got == want, n
    assert len(names) >= len(before)
    assert m2.unmount() == 0


def test_mount_backs_up_periodically(kelp):
    """-backupInterval=1s -backupKeep=2: the mount stores backups on its own, keeps two,
    and deletes the parts of the older ones."""
    kelp.start_server()
    m = kelp.mount(args=["-backupInterval=1s", "-backupKeep=2"])
    write_file(m.path("x"), b"periodic")
    first = wait_until("a first backup", lambda: listing(kelp), 30)
    first_parts = first[-1]["parts"]
    wait_until("backups to rotate", lambda: (lambda l: len(l) == 2 and
               first_parts[0] not in [p for x in l for p in x["parts"]])(listing(kelp)), 30)
    assert "metadata backup:" in m.log_text()
    # the rotated-out part is deleted in the cluster
    r = requests.get("http://%s/%s" % (kelp.server.master_get(
        "/dir/lookup?volumeId=" + first_parts[0].split(",")[0]).json()["locations"][0]["url"],
        first_parts[0]), timeout=10)
    assert r.status_code == 404
    assert m.unmount() == 0
