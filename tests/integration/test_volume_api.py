"""The volume server's HTTP API: admin routes, /status, blob upload/download/delete,
size limits, large streaming uploads, restart persistence, malformed requests.

Behaviour follows docs/http-api.md and the SeaweedFS reference (sections 2.2-2.5).
"""

import gzip
import hashlib
import os
import random
import re
import threading
import time

import pytest
import requests

from conftest import (MiB, StreamBody, assert_json, assert_json_error, assert_read_error,
                      etag_of, http_date, key_cookie, make_fid, md5_b64, rand_bytes,
                      raw_request, raw_status)

COOKIE = 0x637037D6


def fid1(key, cookie=COOKIE, vid=1):
    return make_fid(vid, key, cookie)


# ======================================================================================
# startup, flags, /status, /healthz


def test_ready_file_and_healthz(make_server):
    srv = make_server()
    with open(srv.ready_path) as f:
        assert f.read() == "%d\n" % srv.port
    r = srv.get("/healthz")
    assert r.status_code == 200


def test_flag_spellings(make_server, tmp_path):
    """--flag=value and -flag value are accepted like -flag=value."""
    srv = make_server(start=False)
    d = srv.dirs[0]
    cmd = [srv.kelp_bin, "volume", "--port=0", "-readyFile", srv.ready_path,
           "--dir", d, "-max", "3", "--ip=127.0.0.1", "-fileSizeLimitMB", "5"]
    srv.start(cmd=cmd)
    srv.assert_healthy()
    srv.assign(1)
    srv.upload(fid1(1), b"hello")
    assert srv.get("/" + fid1(1)).content == b"hello"
    # -max 3 was honoured
    srv.assign(2)
    srv.assign(3)
    assert_json_error(srv.admin("assign_volume", volume="4"), 507)


def test_starts_without_reachable_master(make_server):
    """A master that answers nothing must not stop the volume server from serving."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()  # nothing listens there now
    srv = make_server(args=["-master=127.0.0.1:%d" % dead_port, "-dataCenter=dc1",
                            "-rack=r1"])
    r = srv.get("/healthz")
    # SeaweedFS answers 503 while it is not heartbeating; either is acceptable here.
    assert r.status_code in (200, 503)
    srv.assign(1)
    srv.upload(fid1(7), b"no master")
    r = srv.get("/" + fid1(7))
    assert r.status_code == 200 and r.content == b"no master"
    assert srv.status()["Volumes"][0]["Id"] == 1


def test_status_shape(make_server):
    srv = make_server(ndirs=2, max=[2, 3])
    srv.assign(1)
    st = srv.status()
    assert isinstance(st.get("Version"), str) and st["Version"]
    disks = st["DiskStatuses"]
    assert len(disks) == 2
    want_dirs = sorted(os.path.realpath(d) for d in srv.dirs)
    assert sorted(os.path.realpath(d["dir"]) for d in disks) == want_dirs
    for d in disks:
        for k in ("all", "used", "free", "percent_free", "percent_used"):
            assert isinstance(d[k], (int, float)), (k, d)
        assert d["all"] > 0 and 0 <= d["free"] <= d["all"]
        assert 0 <= d["percent_free"] <= 100 and 0 <= d["percent_used"] <= 100
        assert d["disk_type"] == "hdd"
    vols = st["Volumes"]
    assert len(vols) == 1
    v = vols[0]
    expect = {"Id": 1, "Collection": "", "FileCount": 0, "DeleteCount": 0,
              "DeletedByteCount": 0, "ReadOnly": False, "ReplicaPlacement": "000",
              "Ttl": "", "Version": 3, "CompactRevision": 0}
    for k, val in expect.items():
        assert v.get(k) == val, (k, v)
    assert isinstance(v["Size"], int) and v["Size"] >= 0
    assert isinstance(v["ModifiedAtSecond"], int)


def test_status_counters_follow_seaweedfs(server):
    """FileCount counts every stored write, DeleteCount every deletion or overwrite
    (SeaweedFS's needle-map metrics), Size is the .dat size."""
    a, b = rand_bytes(1000, 1), rand_bytes(2000, 2)
    server.upload(fid1(1), a)
    server.upload(fid1(2), b)
    v = server.volume_status(1)
    assert v["FileCount"] == 2 and v["DeleteCount"] == 0 and v["DeletedByteCount"] == 0
    dat = os.path.join(server.dirs[0], "1.dat")
    assert v["Size"] == os.path.getsize(dat)
    assert v["ModifiedAtSecond"] >= int(time.time()) - 60
    r = server.delete("/" + fid1(1))
    assert r.status_code == 202
    v = server.volume_status(1)
    assert v["FileCount"] == 2 and v["DeleteCount"] == 1
    assert v["DeletedByteCount"] >= 1000
    server.upload(fid1(2), rand_bytes(500, 3))  # overwrite
    v = server.volume_status(1)
    assert v["FileCount"] == 3 and v["DeleteCount"] == 2


# ======================================================================================
# admin routes


def test_assign_volume_basic(make_server):
    srv = make_server()
    r = srv.admin("assign_volume", volume="3")
    assert assert_json(r, 200) == {"volume": 3}
    assert os.path.exists(os.path.join(srv.dirs[0], "3.dat"))
    assert os.path.exists(os.path.join(srv.dirs[0], "3.idx"))
    with open(os.path.join(srv.dirs[0], "3.dat"), "rb") as f:
        sb = f.read(8)
    assert sb[0] == 3 and sb[1] == 0, "super block %r" % sb
    v = srv.volume_status(3)
    assert v is not None and v["ReplicaPlacement"] == "000" and v["Version"] == 3


def test_assign_volume_post_and_params(make_server):
    srv = make_server()
    r = srv.admin("assign_volume", method="POST", volume="4", collection="pics",
                  replication="001", ttl="3d")
    assert assert_json(r, 200) == {"volume": 4}
    assert os.path.exists(os.path.join(srv.dirs[0], "pics_4.dat"))
    assert os.path.exists(os.path.join(srv.dirs[0], "pics_4.idx"))
    v = srv.volume_status(4)
    assert v["Collection"] == "pics"
    assert v["ReplicaPlacement"] == "001"
    assert v["Ttl"] == "3d"
    with open(os.path.join(srv.dirs[0], "pics_4.dat"), "rb") as f:
        sb = f.read(8)
    assert sb[1] == 1 and sb[2] == 3 and sb[3] == 3, "super block %r" % sb


@pytest.mark.parametrize("params", [
    {},                                        # no volume
    {"volume": ""},
    {"volume": "abc"},
    {"volume": "-1"},
    {"volume": "1x"},
    {"volume": "99999999999999999999"},        # does not fit
    {"volume": "5", "replication": "3x9"},
    {"volume": "5", "replication": "1234"},
    {"volume": "5", "ttl": "5q"},
])
def test_assign_volume_bad_params(make_server, params):
    srv = make_server()
    assert_json_error(srv.admin("assign_volume", **params), 400)
    assert srv.status()["Volumes"] in ([], None)
    srv.assert_healthy()


@pytest.mark.parametrize("given,shown", [("", "000"), ("1", "001"), ("10", "010"),
                                         ("200", "200")])
def test_assign_volume_replication_padding(make_server, given, shown):
    """Replication strings shorter than 3 digits are left-padded with zeros."""
    srv = make_server()
    srv.assign(5, replication=given)
    assert srv.volume_status(5)["ReplicaPlacement"] == shown


def test_assign_volume_conflict(server):
    assert_json_error(server.admin("assign_volume", volume="1"), 409)
    assert len(server.status()["Volumes"]) == 1


def test_assign_volume_no_free_slot(make_server):
    srv = make_server(ndirs=2, max=[1, 1])
    srv.assign(1)
    srv.assign(2)
    assert_json_error(srv.admin("assign_volume", volume="3"), 507)
    # one volume per dir
    for d in srv.dirs:
        assert len([f for f in os.listdir(d) if f.endswith(".dat")]) == 1, os.listdir(d)
    # freeing a slot makes room again
    assert srv.admin("delete_volume", volume="1").status_code == 200
    srv.assign(3)


def test_single_max_applies_to_every_dir(make_server):
    srv = make_server(ndirs=2, max=1)
    srv.assign(1)
    srv.assign(2)
    assert_json_error(srv.admin("assign_volume", volume="3"), 507)
    for d in srv.dirs:
        assert len([f for f in os.listdir(d) if f.endswith(".dat")]) == 1, os.listdir(d)


def test_fsync_flag(make_server):
    srv = make_server(args=["-fsync"])
    srv.assign(1)
    data = rand_bytes(5000, 3)
    srv.upload(fid1(1), data)
    srv.kill()
    srv.start()
    assert srv.get("/" + fid1(1)).content == data


def test_delete_volume(server):
    server.upload(fid1(1), b"x" * 100)
    r = server.admin("delete_volume", volume="1")
    assert r.status_code == 200
    assert server.volume_status(1) is None
    assert not os.path.exists(os.path.join(server.dirs[0], "1.dat"))
    assert not os.path.exists(os.path.join(server.dirs[0], "1.idx"))
    assert_read_error(server.get("/" + fid1(1)), 404)
    assert_json_error(server.admin("delete_volume", volume="1"), 404)
    # the id can be reused, and the new volume is empty
    server.assign(1)
    assert server.get("/" + fid1(1)).status_code == 404


def test_mark_readonly_writable(server):
    data = rand_bytes(300, 5)
    server.upload(fid1(1), data)
    assert server.admin("mark_readonly", volume="1").status_code == 200
    assert server.volume_status(1)["ReadOnly"] is True
    assert_json_error(server.put("/" + fid1(2), data=b"nope"), 500)
    assert_json_error(server.delete("/" + fid1(1)), 500)
    r = server.get("/" + fid1(1))
    assert r.status_code == 200 and r.content == data
    assert server.admin("mark_writable", volume="1", method="POST").status_code == 200
    assert server.volume_status(1)["ReadOnly"] is False
    server.upload(fid1(2), b"yes")
    assert server.get("/" + fid1(2)).content == b"yes"


@pytest.mark.parametrize("action", [
    "delete_volume", "mark_readonly", "mark_writable", "vacuum/check", "vacuum/compact",
    "vacuum/commit", "vacuum/cleanup", "sync"])
def test_admin_unknown_volume(server, action):
    assert_json_error(server.admin(action, volume="77"), 404)
    assert server.volume_status(1) is not None
    server.assert_healthy()


@pytest.mark.parametrize("action", [
    "delete_volume", "mark_readonly", "mark_writable", "vacuum/check", "vacuum/compact",
    "vacuum/commit", "vacuum/cleanup", "sync"])
@pytest.mark.parametrize("vol", [None, "", "abc", "-3", "1.5"])
def test_admin_bad_volume_param(server, action, vol):
    params = {} if vol is None else {"volume": vol}
    r = server.admin(action, **params)
    assert r.status_code in (400, 404), r.status_code
    assert_json_error(r, r.status_code)
    assert server.volume_status(1) is not None
    server.assert_healthy()


def test_admin_sync_flushes_earlier_writes(server):
    """POST /admin/sync (kelp extension): what was written without fsync is flushed; the
    volume is reported back, and keeps serving. A sync of a volume that turned
    read-only is still answered."""
    data = rand_bytes(5000, 6)
    server.upload(fid1(1), data)
    r = server.admin("sync", volume="1", method="POST")
    body = assert_json(r, 200)
    assert body.get("Id") == 1, body
    assert server.admin("sync", volume="1", method="POST").status_code == 200  # nothing new
    assert server.get("/" + fid1(1)).content == data
    server.admin("mark_readonly", volume="1")
    assert server.admin("sync", volume="1", method="POST").status_code == 200


def test_delete_collection_needs_name(server):
    assert_json_error(server.admin("delete_collection"), 400)
    assert server.volume_status(1) is not None


def test_delete_collection(make_server):
    srv = make_server()
    srv.assign(1, collection="pics")
    srv.assign(2, collection="pics")
    srv.assign(3)
    srv.assign(4, collection="other")
    srv.upload(make_fid(1, 1, COOKIE), b"pic")
    srv.upload(make_fid(3, 1, COOKIE), b"plain")
    r = srv.admin("delete_collection", collection="pics")
    assert r.status_code == 200
    ids = sorted(v["Id"] for v in srv.status()["Volumes"])
    assert ids == [3, 4]
    left = sorted(os.listdir(srv.dirs[0]))
    assert not [f for f in left if f.startswith("pics_")], left
    assert srv.get("/" + make_fid(1, 1, COOKIE)).status_code == 404
    assert srv.get("/" + make_fid(3, 1, COOKIE)).content == b"plain"


# ======================================================================================
# upload


def test_put_raw_then_get(server):
    data = rand_bytes(12345, 10)
    fid = fid1(0x1234)
    r = server.upload(fid, data)
    body = assert_json(r, 201)
    assert body["size"] == len(data)
    assert body["eTag"] == etag_of(data)
    assert r.headers["ETag"] == '"%s"' % etag_of(data)
    assert r.headers["Content-MD5"] == md5_b64(data)
    assert body["contentMd5"] == md5_b64(data)
    g = server.get("/" + fid)
    assert g.status_code == 200
    assert g.content == data
    assert g.headers["ETag"] == '"%s"' % etag_of(data)
    assert int(g.headers["Content-Length"]) == len(data)
    assert g.headers["Accept-Ranges"] == "bytes"


def test_post_multipart(server):
    data = rand_bytes(5000, 11)
    fid = fid1(2)
    r = server.post("/" + fid, files={"file": ("photo.png", data, "image/png")})
    body = assert_json(r, 201)
    assert body["name"] == "photo.png"
    assert body["size"] == len(data)
    assert body["eTag"] == etag_of(data)
    assert r.headers["ETag"] == '"%s"' % etag_of(data)
    g = server.get("/" + fid)
    assert g.status_code == 200 and g.content == data
    assert g.headers["Content-Type"] == "image/png"
    cd = g.headers["Content-Disposition"]
    assert cd.startswith("inline") and 'filename="photo.png"' in cd


def test_post_multipart_first_part_without_filename(server):
    """The first part has no filename: the first later part with one is used."""
    data = rand_bytes(700, 12)
    fid = fid1(3)
    r = server.post("/" + fid, files=[("meta", (None, b"not me")),
                                      ("file", ("real.bin", data, "application/octet-stream"))])
    body = assert_json(r, 201)
    assert body["name"] == "real.bin" and body["size"] == len(data)
    assert server.get("/" + fid).content == data


def test_post_raw_body_with_content_type(server):
    """POST with a non-multipart Content-Type is a raw body; the mime is kept."""
    data = rand_bytes(400, 13)
    fid = fid1(4)
    r = server.post("/" + fid, data=data,
                    headers={"Content-Type": "application/x-kelp-test"})
    body = assert_json(r, 201)
    assert body["size"] == len(data)
    assert body.get("mime") == "application/x-kelp-test"
    g = server.get("/" + fid)
    assert g.content == data
    assert g.headers["Content-Type"] == "application/x-kelp-test"


def test_put_with_content_disposition_name(server):
    data = rand_bytes(100, 14)
    fid = fid1(5)
    r = server.put("/" + fid, data=data,
                   headers={"Content-Disposition": 'attachment; filename="report.bin"'})
    assert assert_json(r, 201)["name"] == "report.bin"
    g = server.get("/" + fid)
    assert 'filename="report.bin"' in g.headers["Content-Disposition"]
    g = server.get("/" + fid, params={"dl": "true"})
    assert g.headers["Content-Disposition"].startswith("attachment")


def test_upload_via_slash_form(server):
    data = rand_bytes(64, 15)
    key = 0xABCDEF
    server.upload("1/" + key_cookie(fid1(key)), data)
    assert server.get("/" + fid1(key)).content == data


def test_identical_reupload_is_204(server):
    data = rand_bytes(2048, 16)
    fid = fid1(6)
    server.upload(fid, data)
    size_before = server.volume_status(1)["Size"]
    r = server.put("/" + fid, data=data)
    assert r.status_code == 204, (r.status_code, r.content[:200])
    assert r.content == b""
    assert r.headers["ETag"] == '"%s"' % etag_of(data)
    assert server.volume_status(1)["Size"] == size_before, "unchanged write appended"
    assert server.get("/" + fid).content == data


def test_overwrite_same_cookie(server):
    fid = fid1(7)
    server.upload(fid, b"first version")
    server.upload(fid, b"second version")
    assert server.get("/" + fid).content == b"second version"


def test_same_key_other_cookie_is_500(server):
    server.upload(fid1(8, 0x11111111), b"owner")
    r = server.put("/" + fid1(8, 0x22222222), data=b"intruder")
    body = assert_json_error(r, 500)
    assert "cookie" in body["error"].lower()
    assert server.get("/" + fid1(8, 0x11111111)).content == b"owner"


def test_content_md5(server):
    data = rand_bytes(999, 17)
    server.upload(fid1(9), data, headers={"Content-MD5": md5_b64(data)})
    r = server.put("/" + fid1(10), data=data, headers={"Content-MD5": md5_b64(b"other")})
    assert_json_error(r, 400)
    assert server.get("/" + fid1(10)).status_code == 404
    # in a multipart part header too
    boundary = "kelpboundary42"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
             "Content-Type: application/octet-stream\r\nContent-MD5: %s\r\n\r\n")
            % (boundary, md5_b64(b"other"))).encode() + data + \
        ("\r\n--%s--\r\n" % boundary).encode()
    r = server.post("/" + fid1(11), data=body,
                    headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
    assert_json_error(r, 400)
    assert server.get("/" + fid1(11)).status_code == 404


def test_md5_false_skips_the_md5(server):
    """?md5=false (what kelp's mount sends): no MD5 is computed, the reply has none; a
    Content-MD5 sent along is still checked."""
    data = rand_bytes(70000, 18)
    r = server.upload(fid1(13), data, params={"md5": "false"})
    body = assert_json(r, 201)
    assert "contentMd5" not in body and "Content-MD5" not in r.headers
    assert body["eTag"] == etag_of(data)
    assert server.get("/" + fid1(13)).content == data
    r = server.put("/" + fid1(14), data=data, params={"md5": "false"},
                   headers={"Content-MD5": md5_b64(b"other")})
    assert_json_error(r, 400)
    r = server.upload(fid1(14), data, params={"md5": "false"},
                      headers={"Content-MD5": md5_b64(data)})
    assert r.headers["Content-MD5"] == md5_b64(data)


def test_seaweed_pair_headers(server):
    """Seaweed-* request headers are stored and come back as response headers; SeaweedFS
    stores and returns them under their full Seaweed-<Name> header name."""
    fid = fid1(12)
    server.upload(fid, b"with pairs",
                  headers={"Seaweed-Owner": "alice", "Seaweed-Color": "blue",
                           "X-Not-Stored": "1"})
    g = server.get("/" + fid)
    assert g.headers.get("Seaweed-Owner") == "alice"
    assert g.headers.get("Seaweed-Color") == "blue"
    assert "X-Not-Stored" not in g.headers
    h = server.head("/" + fid)
    assert h.headers.get("Seaweed-Owner") == "alice"


def test_ts_sets_last_modified(server):
    ts = 1700000000
    fid = fid1(13)
    server.upload(fid, b"dated", params={"ts": str(ts)})
    g = server.get("/" + fid)
    assert g.headers["Last-Modified"] == http_date(ts)


def test_default_last_modified_is_now(server):
    t0 = int(time.time())
    server.upload(fid1(14), b"now")
    t1 = int(time.time())
    g = server.get("/" + fid1(14))
    lm = time.mktime(time.strptime(g.headers["Last-Modified"],
                                   "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone
    assert t0 - 2 <= lm <= t1 + 2, (g.headers["Last-Modified"], t0, t1)


def test_fsync_upload(server):
    data = rand_bytes(3000, 18)
    server.upload(fid1(15), data, params={"fsync": "true"})
    assert server.get("/" + fid1(15)).content == data


def test_ttl_upload_and_ttl_volume(make_server):
    srv = make_server()
    srv.assign(2, ttl="1m")
    assert srv.volume_status(2)["Ttl"] == "1m"
    fid = make_fid(2, 1, COOKIE)
    srv.upload(fid, b"short lived", params={"ttl": "1m"})
    assert srv.get("/" + fid).content == b"short lived"
    # the unchanged-write shortcut is off for TTL volumes
    r = srv.put("/" + fid, data=b"short lived", params={"ttl": "1m"})
    assert r.status_code == 201, r.status_code


def test_empty_blob(server):
    fid = fid1(16)
    r = server.upload(fid, b"")
    assert assert_json(r, 201)["size"] == 0
    g = server.get("/" + fid)
    assert g.status_code == 200 and g.content == b""
    assert g.headers["Content-Length"] == "0"


def test_chunked_transfer_upload(server):
    chunks = [rand_bytes(100000, 100 + i) for i in range(10)]
    r = server.put("/" + fid1(17), data=iter(chunks))  # no length: chunked encoding
    assert r.status_code == 201, (r.status_code, r.content[:200])
    assert r.json()["size"] == sum(len(c) for c in chunks)
    assert server.get("/" + fid1(17)).content == b"".join(chunks)


def test_upload_unknown_volume(server):
    r = server.put("/" + make_fid(99, 1, COOKIE), data=b"nowhere")
    assert_json_error(r, 404)
    server.assert_healthy()


@pytest.mark.parametrize("path", [
    "/1,zz637037d6", "/1,0163", "/1,", "/abc,01637037d6", "/1,0123456789abcdef0123456789ab",
    "/1,01637037dg", "/1,ffffffffffffffff637037d6_1"])
def test_upload_bad_fid(server, path):
    assert_json_error(server.put(path, data=b"x"), 400)
    server.assert_healthy()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("vid", ["4294967296", "99999999999"])
def test_volume_id_overflow(server, method, vid):
    """A volume id that does not fit in 32 bits: SeaweedFS truncates it (and then finds
    no such volume, 404); refusing it as a bad fid (400) is as good. Never volume 0/1."""
    r = server.request(method, "/%s,01637037d6" % vid, data=b"x" if method == "PUT" else None)
    assert r.status_code in (400, 404), r.status_code
    if method == "GET":
        assert_read_error(r, r.status_code)
    else:
        assert_json_error(r, r.status_code)
    assert server.get("/" + fid1(1)).status_code == 404
    server.assert_healthy()


def test_gzip_upload_and_download(server):
    plain = (b"kelp stores gzipped bytes as they are. " * 400)
    gz = gzip.compress(plain)
    fid = fid1(18)
    r = server.put("/" + fid, data=gz, headers={"Content-Encoding": "gzip"})
    body = assert_json(r, 201)
    assert body["size"] == len(plain), "size is the uncompressed length"
    assert body["eTag"] == etag_of(gz), "the ETag is the CRC of the stored (gzipped) bytes"
    # with Accept-Encoding: gzip the stored bytes come back as they are
    g = server.get("/" + fid, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert g.status_code == 200
    assert g.headers.get("Content-Encoding") == "gzip"
    raw = g.raw.read(decode_content=False)
    g.close()
    assert raw == gz
    assert int(g.headers["Content-Length"]) == len(gz)
    # without it: decompressed
    g = server.get("/" + fid)
    assert g.status_code == 200
    assert "Content-Encoding" not in g.headers or g.headers["Content-Encoding"] != "gzip"
    assert g.content == plain
    if "Content-Length" in g.headers:
        assert int(g.headers["Content-Length"]) == len(plain)


def test_gzip_multipart_part(server):
    plain = b"multipart gzip " * 300
    gz = gzip.compress(plain)
    boundary = "kelpgz"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"g.bin\"\r\n"
             "Content-Type: application/octet-stream\r\nContent-Encoding: gzip\r\n\r\n")
            % boundary).encode() + gz + ("\r\n--%s--\r\n" % boundary).encode()
    r = server.post("/" + fid1(19), data=body,
                    headers={"Content-Type": "multipart/form-data; boundary=" + boundary})
    assert assert_json(r, 201)["size"] == len(plain)
    assert server.get("/" + fid1(19)).content == plain


def test_compressible_upload_reads_back(server):
    """Server-side compression (if any) is invisible to a client not asking for gzip,
    and a client asking for it gets bytes that decompress to the original."""
    plain = b"<html>" + b"compress me please " * 2000 + b"</html>"
    fid = fid1(20)
    r = server.post("/" + fid, files={"file": ("page.html", plain, "text/html")})
    assert assert_json(r, 201)["size"] == len(plain)
    g = server.get("/" + fid)
    assert g.content == plain
    assert g.headers["Content-Type"].startswith("text/html")
    g = server.get("/" + fid, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = g.raw.read(decode_content=False)
    g.close()
    if g.headers.get("Content-Encoding") == "gzip":
        assert gzip.decompress(raw) == plain
    else:
        assert raw == plain


def test_size_limit(make_server):
    srv = make_server(args=["-fileSizeLimitMB=1"])
    srv.assign(1)
    at_limit = rand_bytes(MiB, 21)
    srv.upload(fid1(1), at_limit)
    assert srv.get("/" + fid1(1)).content == at_limit
    # one byte over: rejected with a JSON error; sent over a raw socket because the
    # server may answer before reading the whole body
    over = rand_bytes(MiB + 1, 22)
    status, body = _send_expecting_early_reply(srv.port, "PUT", "/" + fid1(2), over)
    assert status in (400, 413), (status, body[:200])
    assert b'"error"' in body, body[:300]
    srv.assert_healthy()
    assert srv.get("/" + fid1(2)).status_code == 404
    # far over, multipart
    big = rand_bytes(3 * MiB, 23)
    try:
        r = srv.post("/" + fid1(3), files={"file": ("big.bin", big)})
        assert r.status_code in (400, 413), r.status_code
        assert_json_error(r, r.status_code)
    except requests.ConnectionError:
        pass  # the server may close the connection after its early reply
    srv.assert_healthy()
    assert srv.get("/" + fid1(3)).status_code == 404
    # and it still takes normal uploads
    srv.upload(fid1(4), b"small")
    assert srv.get("/" + fid1(4)).content == b"small"


def _send_expecting_early_reply(port, method, path, body, timeout=10):
    """Sends a request with a body, reading the reply concurrently; returns (status,
    body bytes)."""
    import select
    import socket
    head = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (method, path, len(body))).encode()
    data = head + body
    sent = 0
    resp = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setblocking(False)
        while time.monotonic() < deadline:
            want_w = [s] if sent < len(data) else []
            rl, wl, _ = select.select([s], want_w, [], 0.2)
            if rl:
                try:
                    chunk = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    chunk = None
                except OSError:
                    break
                if chunk == b"":
                    break
                if chunk:
                    resp += chunk
            if wl:
                try:
                    sent += s.send(data[sent:sent + 65536])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sent = len(data)  # peer stopped reading; keep reading its reply
    status = raw_status(resp)
    assert status is not None, "no HTTP reply (got %r)" % resp[:200]
    return status, resp.split(b"\r\n\r\n", 1)[-1]


# ======================================================================================
# download


@pytest.fixture
def blob(server):
    data = rand_bytes(1000, 30)
    fid = fid1(0x0102, 0x0A0B0C0D)
    server.upload(fid, data, params={"ts": "1700000000"})
    return server, fid, data


@pytest.mark.parametrize("form", ["{v}/{kc}/my_preferred_name.bin", "{v}/{kc}.bin",
                                  "{v},{kc}.bin", "{v}/{kc}", "{v},{kc}"])
def test_five_url_forms(blob, form):
    server, fid, data = blob
    path = "/" + form.format(v=1, kc=key_cookie(fid))
    g = server.get(path)
    assert g.status_code == 200, path
    assert g.content == data
    assert g.headers["ETag"] == '"%s"' % etag_of(data)
    h = server.head(path)
    assert h.status_code == 200 and h.content == b""
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers["ETag"] == '"%s"' % etag_of(data)
    assert h.headers["Last-Modified"] == http_date(1700000000)
    assert h.headers["Accept-Ranges"] == "bytes"
    if "my_preferred_name" in path:
        assert 'filename="my_preferred_name.bin"' in g.headers["Content-Disposition"]


def test_content_type_from_extension(blob):
    server, fid, _ = blob
    kc = key_cookie(fid)
    assert server.get("/1,%s.png" % kc).headers["Content-Type"] == "image/png"
    assert server.get("/1/%s/x.txt" % kc).headers["Content-Type"].startswith("text/plain")
    assert 'filename="x.txt"' in server.get("/1/%s/x.txt" % kc).headers["Content-Disposition"]


def test_delta_suffix(server):
    data = b"batch assigned"
    server.upload(fid1(0x05), data)
    g = server.get("/" + make_fid(1, 0x03, COOKIE, delta=2))
    assert g.status_code == 200 and g.content == data


def test_if_none_match(blob):
    server, fid, data = blob
    r = server.get("/" + fid, headers={"If-None-Match": '"%s"' % etag_of(data)})
    assert r.status_code == 304 and r.content == b""
    r = server.get("/" + fid, headers={"If-None-Match": '"00000000"'})
    assert r.status_code == 200 and r.content == data


def test_if_modified_since(blob):
    server, fid, data = blob
    r = server.get("/" + fid, headers={"If-Modified-Since": http_date(1700000000)})
    assert r.status_code == 304 and r.content == b""
    r = server.get("/" + fid, headers={"If-Modified-Since": http_date(1800000000)})
    assert r.status_code == 304
    r = server.get("/" + fid, headers={"If-Modified-Since": http_date(1600000000)})
    assert r.status_code == 200 and r.content == data
    r = server.get("/" + fid, headers={"If-Modified-Since": "not a date"})
    assert r.status_code == 200 and r.content == data


def test_range_single(blob):
    server, fid, data = blob
    r = server.get("/" + fid, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 0-99/1000"
    assert r.content == data[:100]
    assert int(r.headers["Content-Length"]) == 100
    r = server.get("/" + fid, headers={"Range": "bytes=990-"})
    assert r.status_code == 206 and r.content == data[990:]
    assert r.headers["Content-Range"] == "bytes 990-999/1000"
    r = server.get("/" + fid, headers={"Range": "bytes=900-5000"})
    assert r.status_code == 206 and r.content == data[900:]
    assert r.headers["Content-Range"] == "bytes 900-999/1000"


def test_range_suffix(blob):
    server, fid, data = blob
    r = server.get("/" + fid, headers={"Range": "bytes=-100"})
    assert r.status_code == 206
    assert r.content == data[-100:]
    assert r.headers["Content-Range"] == "bytes 900-999/1000"


def test_range_multiple(blob):
    server, fid, data = blob
    r = server.get("/" + fid, headers={"Range": "bytes=0-9,20-29,-5"})
    assert r.status_code == 206
    ct = r.headers["Content-Type"]
    assert ct.startswith("multipart/byteranges"), ct
    m = re.search(r"boundary=\"?([^\";]+)\"?", ct)
    assert m, ct
    parts = _parse_byteranges(r.content, m.group(1).encode())
    assert [p[0] for p in parts] == ["bytes 0-9/1000", "bytes 20-29/1000",
                                     "bytes 995-999/1000"]
    assert [p[1] for p in parts] == [data[0:10], data[20:30], data[995:1000]]


def test_range_multiple_of_a_large_blob(server):
    """A blob over 1 MiB is read from disk: only its ranges are read into memory."""
    data = rand_bytes(3 << 20, 31)
    fid = fid1(0x0103, 0x0A0B0C0E)
    server.upload(fid, data)
    r = server.get("/" + fid, headers={"Range": "bytes=5-14,2097152-2097161,-3"})
    assert r.status_code == 206, r.content[:200]
    m = re.search(r"boundary=\"?([^\";]+)\"?", r.headers["Content-Type"])
    parts = _parse_byteranges(r.content, m.group(1).encode())
    size = len(data)
    assert parts == [("bytes 5-14/%d" % size, data[5:15]),
                     ("bytes 2097152-2097161/%d" % size, data[2097152:2097162]),
                     ("bytes %d-%d/%d" % (size - 3, size - 1, size), data[-3:])]


def _parse_byteranges(body, boundary):
    """[(Content-Range, bytes)] of a multipart/byteranges body (RFC 2046 framing: each
    delimiter is CRLF--boundary, the first one may come without the CRLF)."""
    delim = b"\r\n--" + boundary
    if body.startswith(delim[2:]):
        body = b"\r\n" + body
    chunks = body.split(delim)
    assert len(chunks) >= 3, body[:200]
    out = []
    for c in chunks[1:]:  # chunks[0] is the preamble
        if c.startswith(b"--"):
            break
        head, _, payload = c.partition(b"\r\n\r\n")
        cr = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-range:"):
                cr = line.split(b":", 1)[1].strip().decode()
        out.append((cr, payload))
    else:
        raise AssertionError("no closing delimiter in %r" % body[-100:])
    return out


@pytest.mark.parametrize("rng", ["bytes=2000-3000", "bytes=1000-", "bytes=abc",
                                 "bytes=5-1"])
def test_range_unsatisfiable(blob, rng):
    server, fid, _ = blob
    r = server.get("/" + fid, headers={"Range": rng})
    assert r.status_code == 416, (rng, r.status_code)
    server.assert_healthy()


def test_get_wrong_cookie_is_404(blob):
    server, fid, _ = blob
    key = 0x0102
    r = server.get("/" + fid1(key, 0x0A0B0C0E))
    assert_read_error(r, 404)
    assert server.head("/" + fid1(key, 0x0A0B0C0E)).status_code == 404


def test_get_missing(server):
    assert_read_error(server.get("/" + fid1(0x777)), 404)
    assert server.head("/" + fid1(0x777)).status_code == 404


def test_get_unknown_volume(server):
    assert_read_error(server.get("/" + make_fid(42, 1, COOKIE)), 404)


@pytest.mark.parametrize("path", [
    "/1", "/1,", "/1,0163", "/1,zz637037d6", "/abc,01637037d6", "/,01637037d6",
    "/1,0123456789abcdef0123456789ab",
    "/1,ffffffffffffffff637037d6_1", "/1,01637037d6_x", "/1/", "/1//"])
def test_get_bad_fid_is_400(server, path):
    assert_read_error(server.get(path), 400)
    server.assert_healthy()


def test_cors_header(blob):
    server, fid, _ = blob
    r = server.get("/" + fid, headers={"Origin": "http://example.com"})
    assert r.headers.get("Access-Control-Allow-Origin") == "*"


def test_options(blob):
    server, fid, _ = blob
    r = server.request("OPTIONS", "/" + fid)
    assert r.status_code == 200
    assert "PUT" in r.headers.get("Access-Control-Allow-Methods", "")


def test_unsupported_method(blob):
    server, fid, _ = blob
    assert_json_error(server.request("PATCH", "/" + fid, data=b"x"), 400)
    server.assert_healthy()


# ======================================================================================
# delete


def test_delete(server):
    data = rand_bytes(500, 40)
    fid = fid1(0x41)
    server.post("/" + fid, files={"file": ("d.bin", data, "application/octet-stream")})
    r = server.delete("/" + fid)
    body = assert_json(r, 202)
    # the needle's Size field: DataSize(4) + data + flags(1) + name(1+5) + last-modified(5)
    assert body == {"size": 4 + len(data) + 1 + 1 + len("d.bin") + 5}, body
    assert_read_error(server.get("/" + fid), 404)
    assert server.head("/" + fid).status_code == 404
    r = server.delete("/" + fid)
    assert assert_json(r, 404) == {"size": 0}


def test_delete_missing(server):
    r = server.delete("/" + fid1(0x999))
    assert assert_json(r, 404) == {"size": 0}


def test_delete_cookie_mismatch(server):
    server.upload(fid1(0x42, 0x12345678), b"keep me")
    assert_json_error(server.delete("/" + fid1(0x42, 0x12345679)), 400)
    assert server.get("/" + fid1(0x42, 0x12345678)).content == b"keep me"


def test_delete_then_reupload(server):
    fid = fid1(0x43)
    server.upload(fid, b"one")
    assert server.delete("/" + fid).status_code == 202
    server.upload(fid, b"two")
    assert server.get("/" + fid).content == b"two"


def test_delete_unknown_volume(server):
    r = server.delete("/" + make_fid(55, 1, COOKIE))
    assert r.status_code == 404
    assert r.headers.get("Content-Type", "").startswith("application/json")


# ======================================================================================
# large streaming upload


class _RssSampler(threading.Thread):
    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv = srv
        self.peak = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                self.peak = max(self.peak, self.srv.rss_kb())
            except (OSError, ValueError):
                return
            self.stop_ev.wait(0.02)

    def stop(self):
        self.stop_ev.set()
        self.join(5)
        return self.peak


def test_large_upload_streams(server):
    size = 100 * MiB
    fid = fid1(0xB16)
    server.get("/status")
    base = server.rss_kb()
    sampler = _RssSampler(server)
    sampler.start()
    body = StreamBody(size, seed=7)
    t0 = time.monotonic()
    r = server.put("/" + fid, data=body, timeout=60)
    up_s = time.monotonic() - t0
    assert r.status_code == 201, (r.status_code, r.content[:200])
    assert r.json()["size"] == size
    want = body.sha.hexdigest()
    # read back, streaming
    g = server.get("/" + fid, stream=True, timeout=60)
    assert g.status_code == 200
    assert int(g.headers["Content-Length"]) == size
    sha = hashlib.sha256()
    n = 0
    for chunk in g.iter_content(MiB):
        sha.update(chunk)
        n += len(chunk)
    g.close()
    peak = sampler.stop()
    assert n == size
    assert sha.hexdigest() == want, "100 MiB blob read back differs"
    growth_mib = (peak - base) / 1024
    print("100 MiB upload %.2fs, RSS %d KiB -> peak %d KiB (+%.1f MiB)" % (
        up_s, base, peak, growth_mib))
    assert growth_mib < 64, "RSS grew by %.1f MiB for a 100 MiB body (upload %.1fs)" % (
        growth_mib, up_s)
    # a range deep inside
    start = 50 * MiB + 12345
    r = server.get("/" + fid, headers={"Range": "bytes=%d-%d" % (start, start + 4095)})
    assert r.status_code == 206
    assert r.content == StreamBody.slice(7, start, start + 4096)


# ======================================================================================
# restart persistence


def test_restart_persistence(make_server):
    srv = make_server(ndirs=2, max=[2, 2])
    srv.assign(1)
    srv.assign(2, collection="col")
    blobs = {}
    rnd = random.Random(50)
    for i in range(60):
        vid = 1 + i % 2
        fid = make_fid(vid, 1000 + i, rnd.getrandbits(32))
        data = rand_bytes(rnd.choice([0, 1, 7, 100, 4096, 70000]), 500 + i)
        srv.upload(fid, data, params={"ts": str(1600000000 + i)})
        blobs[fid] = data
    deleted = list(blobs)[:10]
    for fid in deleted:
        assert srv.delete("/" + fid).status_code == 202
    overwritten = list(blobs)[10:15]
    for fid in overwritten:
        blobs[fid] = b"new content of " + fid.encode()
        srv.upload(fid, blobs[fid], params={"ts": "1650000000"})
    assert srv.admin("mark_readonly", volume="2").status_code == 200
    before = {v["Id"]: v for v in srv.status()["Volumes"]}

    rc = srv.stop()
    assert rc in (0, -15), "exit status after SIGTERM: %s" % rc
    srv.start()

    after = {v["Id"]: v for v in srv.status()["Volumes"]}
    assert sorted(after) == [1, 2]
    for vid in (1, 2):
        for k in ("FileCount", "DeleteCount", "Collection", "ReplicaPlacement", "Size",
                  "Version"):
            assert after[vid][k] == before[vid][k], (vid, k, before[vid], after[vid])
    for fid, data in blobs.items():
        g = srv.get("/" + fid)
        if fid in deleted:
            assert g.status_code == 404, fid
        else:
            assert g.status_code == 200, fid
            assert g.content == data, fid
            assert g.headers["ETag"] == '"%s"' % etag_of(data)
    # still writable after the restart
    srv.upload(make_fid(1, 5000, 1), b"after restart")
    assert srv.get("/" + make_fid(1, 5000, 1)).content == b"after restart"


# ======================================================================================
# malformed requests never crash the server


MALFORMED = {
    "garbage": b"GARBAGE\r\n\r\n",
    "binary": bytes(range(256)) * 4,
    "no_version": b"GET /1,01637037d6\r\n\r\n",
    "bad_version": b"GET /1,01637037d6 HTTP/9.9\r\nHost: x\r\n\r\n",
    "huge_header": b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
    "many_headers": b"GET /status HTTP/1.1\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
    "huge_path": b"GET /" + b"1" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "cl_short": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc",
    "cl_negative": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nabc",
    "cl_garbage": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\nabc",
    "cl_huge": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: 99999999999999999999999\r\n\r\nabc",
    "bad_chunked": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk_overflow": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                      b"\r\n\r\nffffffffffffffffff\r\nabc\r\n",
    "multipart_no_boundary": b"POST /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Type: multipart/form-data\r\nContent-Length: 10\r\n"
                             b"Connection: close\r\n\r\n0123456789",
    "multipart_empty_boundary": b"POST /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: multipart/form-data; boundary=\r\n"
                                b"Content-Length: 10\r\nConnection: close\r\n\r\n--\r\n--\r\n--",
    "multipart_unterminated": b"POST /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Type: multipart/form-data; boundary=XX\r\n"
                              b"Content-Length: 60\r\nConnection: close\r\n\r\n"
                              b"--XX\r\nContent-Disposition: form-data; name=\"f\"; fi",
    "multipart_no_parts": b"POST /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: multipart/form-data; boundary=XX\r\n"
                          b"Content-Length: 8\r\nConnection: close\r\n\r\n--XX--\r\n",
    "multipart_huge_part_header": b"POST /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: multipart/form-data; boundary=XX\r\n"
                                  b"Content-Length: 100030\r\nConnection: close\r\n\r\n"
                                  b"--XX\r\nX: " + b"a" * 100019 + b"\r\n\r\n",
    "range_garbage": b"GET /1,01637037d6 HTTP/1.1\r\nHost: x\r\nRange: bytes=--,-,0-0-0,"
                     + b"1-2," * 2000 + b"\r\nConnection: close\r\n\r\n",
    "range_overflow": b"GET /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                      b"Range: bytes=99999999999999999999999-\r\nConnection: close\r\n\r\n",
    "admin_overflow": b"GET /admin/assign_volume?volume=1" + b"9" * 400 +
                      b"&replication=000000000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "query_garbage": b"GET /admin/vacuum/check?volume=%zz%00&&&=&volume HTTP/1.1\r\nHost: x"
                     b"\r\nConnection: close\r\n\r\n",
    "percent_path": b"GET /%00%ff%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n"
                    b"Connection: close\r\n\r\n",
    "dotdot_path": b"GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "nul_in_header": b"GET /status HTTP/1.1\r\nHost: x\0y\r\nConnection: close\r\n\r\n",
    "pairs_huge": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nSeaweed-A: " + b"v" * 70000 +
                  b"\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    "partial_request_line": b"GET /1,016370",
    "gzip_lie": b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: 10\r\nConnection: close\r\n\r\nnot gzip!!",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_keeps_server_up(server, name):
    server.upload(fid1(0x55), b"canary")
    raw_request(server.port, MALFORMED[name], timeout=2.0, shutdown_write=True)
    err = server.healthy()
    assert err is None, "after %s: %s" % (name, err)
    assert server.get("/" + fid1(0x55)).content == b"canary"
    # whatever the server made of it, a GET of the touched fid gives no crash either
    r = server.get("/" + fid1(1))
    assert r.status_code in (200, 404, 500)
    server.assert_healthy()


def test_unsupported_method_raw(server):
    resp = raw_request(server.port, b"PATCH /1,01637037d6 HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert raw_status(resp) == 400, resp[:200]
    server.assert_healthy()


def test_abandoned_connections(server):
    """Connections opened and dropped at every stage of a request."""
    stages = [b"", b"PUT /1,01637037d6 HTTP/1.1\r\n",
              b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
              b"PUT /1,01637037d6 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
              + b"x" * 50000,
              b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"]
    for _ in range(5):
        for s in stages:
            raw_request(server.port, s, read=False)
    server.assert_healthy()
    assert server.get("/" + fid1(1)).status_code == 404  # the aborted PUT left nothing


def test_many_concurrent_clients(server):
    """20 threads of mixed uploads and reads; every read returns what was written."""
    errors = []

    def worker(t):
        s = requests.Session()
        try:
            for i in range(15):
                fid = fid1(0x10000 + t * 100 + i)
                data = rand_bytes(1000 + t * 37 + i, t * 1000 + i)
                r = s.put(server.url("/" + fid), data=data, timeout=10)
                if r.status_code != 201:
                    errors.append((fid, "put", r.status_code))
                    continue
                g = s.get(server.url("/" + fid), timeout=10)
                if g.content != data:
                    errors.append((fid, "get", g.status_code))
        except requests.RequestException as e:
            errors.append(("exception", repr(e)))
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:10]
    assert server.volume_status(1)["FileCount"] == 300
