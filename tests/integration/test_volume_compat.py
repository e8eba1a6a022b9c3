"""Volumes written by SeaweedFS itself (tests/data/seaweedfs): kelp loads them,
reports them in /status and serves them exactly as SeaweedFS would.

The expected values come from the *.expected.json files; the needle bytes are cut out
of the .dat files here (offset + 16-byte header + 4-byte DataSize) and cross-checked
against the expected ETag (CRC-32C) before they are used.
"""

import json
import os
import shutil
import struct

import pytest

from conftest import (assert_json, assert_json_error, crc32c, http_date, key_cookie,
                      make_fid, rand_bytes)


def _load(compat_dir, name):
    with open(os.path.join(compat_dir, name + ".expected.json")) as f:
        exp = json.load(f)
    with open(os.path.join(compat_dir, name + ".dat"), "rb") as f:
        dat = f.read()
    with open(os.path.join(compat_dir, name + ".idx"), "rb") as f:
        idx = f.read()
    entries = [struct.unpack(">QII", idx[i:i + 16]) for i in range(0, len(idx), 16)]
    put_offset = {}
    for key, off, size in entries:
        if off != 0 and size != 0xFFFFFFFF:
            put_offset[key] = off * 8
    needles = []
    for n in exp["needles"]:
        n = dict(n)
        off = put_offset[n["key"]]
        cookie, nid, size = struct.unpack(">IQI", dat[off:off + 16])
        assert nid == n["key"]
        n["cookie"] = cookie
        if not n.get("deleted"):
            assert off == n["offset"] and size == n["size_field"]
            data_size = struct.unpack(">I", dat[off + 16:off + 20])[0]
            assert data_size == n["data_size"]
            n["data"] = dat[off + 20:off + 20 + data_size]
            assert ("%08x" % crc32c(n["data"]) == n["etag"]), "test data extraction is wrong"
        needles.append(n)
    return exp, needles, entries


def _seaweed_counters(entries):
    """FileCount / DeleteCount / DeletedByteCount as SeaweedFS computes them when it
    loads an index (needle_map_memory.go doLoading + mapMetric)."""
    live = {}
    files = deleted = deleted_bytes = 0
    for key, off, size in entries:
        if off != 0 and size != 0xFFFFFFFF:
            files += 1
            old = live.get(key)
            if old:
                deleted += 1
                deleted_bytes += old
            live[key] = size
        else:
            old = live.pop(key, 0)
            if old:
                deleted += 1
                deleted_bytes += old
    return files, deleted, deleted_bytes


def _install(compat_dir, dest_dir, name, vid, replica_byte=None):
    os.makedirs(dest_dir, exist_ok=True)
    for ext in (".dat", ".idx"):
        dst = os.path.join(str(dest_dir), "%d%s" % (vid, ext))
        shutil.copyfile(os.path.join(compat_dir, name + ext), dst)  # a writable copy
        os.chmod(dst, 0o644)
    if replica_byte is not None:
        with open(os.path.join(str(dest_dir), "%d.dat" % vid), "r+b") as f:
            f.seek(1)
            f.write(bytes([replica_byte]))


@pytest.fixture
def healthy(compat_dir):
    return _load(compat_dir, "healthy_volume")


@pytest.fixture
def bitrot(compat_dir):
    return _load(compat_dir, "bitrot_volume")


def _fid(vid, n):
    return make_fid(vid, n["key"], n["cookie"])


def _check_live(srv, vid, n, problems):
    """Appends every difference from what SeaweedFS serves for needle n to problems."""
    fid = _fid(vid, n)
    r = srv.get("/" + fid)
    tag = "key %d (%s)" % (n["key"], fid)
    if r.status_code != 200:
        problems.append("%s: status %d %r" % (tag, r.status_code, r.content[:120]))
        return
    if r.content != n["data"]:
        problems.append("%s: %d bytes differ from the needle's %d" % (
            tag, len(r.content), len(n["data"])))
    want = {"ETag": '"%s"' % n["etag"], "Content-Length": str(n["data_size"]),
            "Last-Modified": http_date(n["last_modified"])}
    for h, v in want.items():
        if r.headers.get(h) != v:
            problems.append("%s: %s %r, expected %r" % (tag, h, r.headers.get(h), v))
    cd = r.headers.get("Content-Disposition", "")
    if 'filename="%s"' % n["name"] not in cd:
        problems.append("%s: Content-Disposition %r lacks the name %r" % (tag, cd, n["name"]))
    h = srv.head("/" + fid)
    if h.status_code != 200 or h.headers.get("Content-Length") != str(n["data_size"]) or \
            h.headers.get("ETag") != '"%s"' % n["etag"]:
        problems.append("%s: HEAD %d %r" % (tag, h.status_code, dict(h.headers)))
    rr = srv.get("/" + fid, headers={"Range": "bytes=100-1099"})
    if rr.status_code != 206 or rr.content != n["data"][100:1100]:
        problems.append("%s: range read %d" % (tag, rr.status_code))
    c = srv.get("/" + fid, headers={"If-None-Match": '"%s"' % n["etag"]})
    if c.status_code != 304:
        problems.append("%s: If-None-Match gave %d" % (tag, c.status_code))


def _check_damaged(srv, vid, n, problems):
    fid = _fid(vid, n)
    tag = "damaged key %d (%s)" % (n["key"], fid)
    for headers in ({}, {"Range": "bytes=0-99"}):
        r = srv.get("/" + fid, headers=headers)
        if r.status_code != 500:
            problems.append("%s %r: status %d (want 500)" % (tag, headers, r.status_code))
        if n["data"][:64] in r.content or (r.content and n["data"][:100].startswith(
                r.content[:100])):
            problems.append("%s %r: its bytes were served" % (tag, headers))
        if r.status_code == 500:
            try:
                assert_json_error(r, 500)
            except AssertionError as e:
                problems.append("%s: %s" % (tag, e))


def _check_deleted(srv, vid, n, problems):
    r = srv.get("/" + _fid(vid, n))
    if r.status_code != 404:
        problems.append("deleted key %d: status %d" % (n["key"], r.status_code))


def test_compat_status(make_server, compat_dir, healthy, bitrot, tmp_path):
    d = tmp_path / "data"
    _install(compat_dir, d, "healthy_volume", 5)
    _install(compat_dir, d, "bitrot_volume", 6)
    _install(compat_dir, d, "empty_volume", 8)
    srv = make_server(dirs=[d])
    vols = {v["Id"]: v for v in srv.status()["Volumes"]}
    assert sorted(vols) == [5, 6, 8], vols
    files, deleted, deleted_bytes = _seaweed_counters(healthy[2])
    assert (files, deleted) == (17, 10)
    for vid in (5, 6):
        v = vols[vid]
        assert v["ReplicaPlacement"] == "002", v
        assert v["Version"] == 3
        assert v["Collection"] == ""
        assert v["Ttl"] == ""
        assert v["CompactRevision"] == 0
        assert v["FileCount"] == files, v
        assert v["DeleteCount"] == deleted, v
        assert v["DeletedByteCount"] == deleted_bytes, v
    assert vols[5]["Size"] == os.path.getsize(os.path.join(compat_dir, "healthy_volume.dat"))
    assert vols[5]["ReadOnly"] is False
    assert vols[8]["FileCount"] == 0 and vols[8]["DeleteCount"] == 0
    assert vols[8]["ReplicaPlacement"] == "002"


def test_compat_healthy_served(make_server, compat_dir, healthy, tmp_path):
    d = tmp_path / "data"
    _install(compat_dir, d, "healthy_volume", 5)
    srv = make_server(dirs=[d])
    _, needles, _ = healthy
    problems = []
    live = [n for n in needles if not n.get("deleted")]
    assert len(live) == 7
    for n in live:
        _check_live(srv, 5, n, problems)
    for n in needles:
        if n.get("deleted"):
            _check_deleted(srv, 5, n, problems)
    assert not problems, "\n".join(problems)
    # the five URL forms on one needle, and a wrong cookie
    n = live[0]
    kc = key_cookie(_fid(5, n))
    for path in ("/5/%s/x.bin" % kc, "/5/%s.bin" % kc, "/5,%s.bin" % kc, "/5/%s" % kc,
                 "/5,%s" % kc):
        r = srv.get(path)
        assert r.status_code == 200 and r.content == n["data"], path
    r = srv.get("/" + make_fid(5, n["key"], n["cookie"] ^ 1))
    assert r.status_code == 404
    srv.assert_healthy()


def test_compat_bitrot(make_server, compat_dir, bitrot, tmp_path):
    d = tmp_path / "data"
    _install(compat_dir, d, "bitrot_volume", 6)
    srv = make_server(dirs=[d])
    _, needles, _ = bitrot
    damaged = [n for n in needles if not n.get("deleted") and not n["crc_ok"]]
    intact = [n for n in needles if not n.get("deleted") and n["crc_ok"]]
    assert sorted(n["key"] for n in damaged) == [3, 48] and len(intact) == 5
    for round_ in range(2):
        problems = []
        for n in intact:
            _check_live(srv, 6, n, problems)
        for n in damaged:
            _check_damaged(srv, 6, n, problems)
        for n in needles:
            if n.get("deleted"):
                _check_deleted(srv, 6, n, problems)
        assert not problems, ("after a restart:\n" if round_ else "") + "\n".join(problems)
        srv.assert_healthy()
        srv.stop()
        srv.start()


def test_compat_bitrot_stray_byte_then_writes(make_server, compat_dir, bitrot, tmp_path):
    """The stray byte at the end of the .dat must not make new needles unreadable
    (they must still start 8-byte aligned). Replication is patched to 000 so that
    the volume takes writes without a master."""
    d = tmp_path / "data"
    _install(compat_dir, d, "bitrot_volume", 7, replica_byte=0)
    srv = make_server(dirs=[d])
    _, needles, _ = bitrot
    new = {make_fid(7, 1000 + i, 0xC0FFEE): rand_bytes(100 + 977 * i, 60 + i)
           for i in range(4)}
    for fid, data in new.items():
        srv.upload(fid, data)
    for round_ in range(2):
        for fid, data in new.items():
            r = srv.get("/" + fid)
            assert r.status_code == 200 and r.content == data, (round_, fid, r.status_code)
        problems = []
        for n in needles:
            if n.get("deleted"):
                _check_deleted(srv, 7, n, problems)
            elif n["crc_ok"]:
                _check_live(srv, 7, n, problems)
            else:
                _check_damaged(srv, 7, n, problems)
        assert not problems, ("after a restart:\n" if round_ else "") + "\n".join(problems)
        srv.stop()
        srv.start()


def test_compat_delete_and_vacuum(make_server, compat_dir, healthy, tmp_path):
    d = tmp_path / "data"
    _install(compat_dir, d, "healthy_volume", 9, replica_byte=0)
    srv = make_server(dirs=[d])
    _, needles, _ = healthy
    live = [n for n in needles if not n.get("deleted")]
    # DELETE answers the needle's Size field as SeaweedFS stored it
    victim = [n for n in live if n["key"] == 39][0]
    r = srv.delete("/" + _fid(9, victim))
    assert assert_json(r, 202) == {"size": victim["size_field"]}
    live.remove(victim)
    ratio = assert_json(srv.admin("vacuum/check", volume="9"), 200)["garbageRatio"]
    assert ratio > 0.3, ratio
    dat = os.path.join(str(d), "9.dat")
    size_before = os.path.getsize(dat)
    assert srv.admin("vacuum/compact", volume="9").status_code == 200
    assert srv.admin("vacuum/commit", volume="9").status_code == 200
    assert os.path.getsize(dat) < size_before * 0.6
    v = srv.volume_status(9)
    assert v["CompactRevision"] == 1 and v["FileCount"] == len(live), v
    for round_ in range(2):
        problems = []
        for n in live:
            _check_live(srv, 9, n, problems)
        for n in needles:
            if n.get("deleted") or n is victim:
                _check_deleted(srv, 9, n, problems)
        assert not problems, ("after a restart:\n" if round_ else "") + "\n".join(problems)
        srv.stop()
        srv.start()
