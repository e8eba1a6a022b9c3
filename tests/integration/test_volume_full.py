"""A full disk under `kelp volume` (a small tmpfs as its data directory): writes fail
with a clear 507, nothing acknowledged is lost or damaged, reads and deletes go on, the
volume reports read-only while the disk is full and turns writable again by itself
once space is freed; a restart finds every acknowledged blob intact.
"""

import os
import subprocess
import time

import pytest

from cluster import make_cluster, wait_for  # noqa: F401 (a fixture)
from conftest import MiB, assert_json_error, make_fid, rand_bytes

COOKIE = 0x1234ABCD
TMPFS_MB = 24


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % TMPFS_MB, "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs (needs root): %s" % r.stderr.decode().strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _wait(what, fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for %s" % what, pytrace=False)
        time.sleep(0.1)


def _read_only(srv, vid):
    v = srv.volume_status(vid)
    return v is not None and v.get("ReadOnly")


def test_full_disk_refuses_writes_keeps_data_and_recovers(make_server, small_disk):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (6 * MiB))
    vol_dir = small_disk / "vol"
    srv = make_server(dirs=[vol_dir])
    srv.assign(1)
    acked = {}
    refused = None
    for key in range(1, 60):   # 24 MiB cannot take 60 MiB: bounded
        data = rand_bytes(MiB, key)
        fid = make_fid(1, key, COOKIE)
        r = srv.put("/" + fid, data=data)
        if r.status_code == 201:
            acked[fid] = data
            continue
        refused = r
        break
    assert refused is not None, "the disk never filled"
    assert len(acked) >= 10, len(acked)
    body = assert_json_error(refused, 507)
    assert "no space" in str(body).lower(), body

    # the server goes on serving: every acknowledged blob reads back intact
    srv.assert_healthy()
    for fid, data in acked.items():
        r = srv.get("/" + fid)
        assert r.status_code == 200 and r.content == data, fid
    assert _read_only(srv, 1)
    # further writes, even small ones, are refused the same way (not written half)
    r = srv.put("/" + make_fid(1, 1000, COOKIE), data=b"small")
    assert r.status_code == 507, r.content
    assert srv.get("/" + make_fid(1, 1000, COOKIE)).status_code == 404
    # deleting is allowed: it is how room is made
    gone = next(iter(acked))
    assert srv.delete("/" + gone).status_code == 202
    del acked[gone]

    # free space: the volume is writable again within a few seconds, by itself
    os.unlink(filler)
    _wait("the volume to be writable again", lambda: not _read_only(srv, 1))
    more = rand_bytes(MiB, 777)
    srv.upload(make_fid(1, 2000, COOKIE), more)
    acked[make_fid(1, 2000, COOKIE)] = more

    # a restart finds everything acknowledged (and nothing of the refused writes)
    srv.restart()
    for fid, data in acked.items():
        r = srv.get("/" + fid)
        assert r.status_code == 200 and r.content == data, fid
    assert srv.get("/" + gone).status_code == 404
    assert srv.get("/" + make_fid(1, 1000, COOKIE)).status_code == 404


def test_min_free_space_keeps_a_reserve(make_server, small_disk):
    """-minFreeSpace=50: once the disk is more than half full its volumes turn read-only
    (writes answer 507 before the disk is actually full) and no volume is created
    there; freeing space makes them writable again."""
    srv = make_server(dirs=[small_disk / "vol"], args=["-minFreeSpace=50"])
    srv.assign(1)
    srv.upload(make_fid(1, 1, COOKIE), b"x" * 1000)
    with open(small_disk / "filler", "wb") as f:
        f.write(b"\0" * ((TMPFS_MB // 2 + 2) * MiB))
    _wait("the volume to report read-only", lambda: _read_only(srv, 1))
    r = srv.put("/" + make_fid(1, 2, COOKIE), data=b"y" * 1000)
    assert r.status_code == 507, r.content
    r = srv.admin("assign_volume", volume="2", collection="", replication="000", ttl="")
    assert_json_error(r, 507)
    os.unlink(small_disk / "filler")
    _wait("the volume to be writable", lambda: not _read_only(srv, 1))
    srv.upload(make_fid(1, 2, COOKIE), b"y" * 1000)
    assert srv.get("/" + make_fid(1, 1, COOKIE)).content == b"x" * 1000


def test_full_cluster_is_vacuumed_back_to_writable(make_cluster, small_disk):
    """A master and one volume server whose disk fills: assigns or uploads are refused
    (406 / 507), nothing acknowledged is lost; after most blobs are deleted,
    /vol/vacuum still compacts the full disk's volumes (they are read-only only for
    lack of space) and writes work again, without restarting anything."""
    c = make_cluster([])
    vs = c.add_volume("dc1", "r1", start=False, name="full")
    vs.dirs = [str(small_disk / "vol")]   # on the fixture's tmpfs
    vs.start()
    c.wait_nodes()
    m = c.master
    acked = {}
    refusal = None
    for i in range(60):   # 60 MiB cannot fit in 24 MiB: bounded
        r = m.get("/dir/assign")
        if r.status_code != 200:
            refusal = r
            break
        a = r.json()
        data = rand_bytes(MiB, 100 + i)
        r = c.http("PUT", a["url"], "/" + a["fid"], data=data)
        if r.status_code != 201:
            refusal = r
            break
        acked[a["fid"]] = (a["url"], data)
    assert refusal is not None and refusal.status_code in (406, 503, 507), refusal
    assert len(acked) >= 10
    for fid, (url, data) in acked.items():
        c.assert_readable(url, fid, data)
    # delete all but two, then vacuum
    keep = dict(list(acked.items())[:2])
    for fid, (url, _) in acked.items():
        if fid not in keep:
            assert c.http("DELETE", url, "/" + fid).status_code == 202
    r = m.get("/vol/vacuum", params={"garbageThreshold": "0.1"}, timeout=120)
    assert r.status_code == 200, r.content

    def writable():
        r = m.get("/dir/assign")
        if r.status_code != 200:
            return False
        a = r.json()
        return c.http("PUT", a["url"], "/" + a["fid"], data=b"z" * MiB).status_code == 201

    wait_for("writes to work again after the vacuum", writable, 30)
    for fid, (url, data) in keep.items():
        c.assert_readable(url, fid, data)


def test_master_disk_full_refuses_assigns_keeps_lookups(make_cluster, tmp_path):
    """The master's -mdir fills up: assigns that need a new key block fail with a
    clear 5xx (the client retries those), lookups and existing blobs keep working; once
    space is freed, assigns work again without a restart."""
    mdir = tmp_path / "mdir"
    mdir.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mdir)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
    try:
        c = make_cluster([("dc1", "r1")])
        m = c.master
        body, _ = m.dir_assign()
        c.put(body["url"], body["fid"], b"before the disk filled")
        fd = os.open(mdir / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(fd, b"\0" * 65536) > 0:
                pass
        except OSError:
            pass   # full
        finally:
            os.close(fd)
        refused = None
        for _ in range(20):   # each takes a new block of 10,000 keys: bounded
            r = m.get("/dir/assign", params={"count": "10000"})
            if r.status_code != 200:
                refused = r
                break
        assert refused is not None, "assigns never needed the disk"
        body_err = assert_json_error(refused, refused.status_code)
        assert refused.status_code >= 500 and "persist" in body_err["error"], body_err
        vid = int(body["fid"].split(",")[0])
        assert m.lookup(vid)["locations"]
        r = c.read(body["url"], body["fid"])
        assert r.status_code == 200 and r.content == b"before the disk filled"
        os.unlink(mdir / "filler")
        after, _ = m.dir_assign(count="10000")
        c.put(after["url"], after["fid"], b"after")
        # keys never go back: the new fid is past everything handed out before
        assert after["fid"] != body["fid"]
    finally:
        subprocess.run(["umount", "-l", str(mdir)], capture_output=True)


@pytest.mark.parametrize("cmd,flag", [("volume", "-minFreeSpace"),
                                      ("server", "-volume.minFreeSpace")])
@pytest.mark.parametrize("value", ["-1", "100", "abc"])
def test_bad_min_free_space_is_refused(kelp_bin, tmp_path, cmd, flag, value):
    r = subprocess.run([kelp_bin, cmd, "-dir=" + str(tmp_path / "d"), "%s=%s" % (flag, value)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "inFreeSpace" in r.stderr, r.stderr
