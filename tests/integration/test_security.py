"""A keyed cluster under attack (issue 11): one master and two volume servers, all with
-jwtKey, and an attacker on an allowed address who does not know the key.

Every route of every daemon that changes something is tried without credentials, with
a client's fid token, with expired tokens, with a token for another fid, with an
`alg: none` token, with a server token made for another request or under another key,
and with forged heartbeats. Each must be refused with the right status; afterwards every
blob written before reads back unchanged from every replica, and the master's topology
lists exactly the real servers with their real volumes.

Server tokens are made here from the documented rules (docs/operations.md, "Securing a
cluster"; cluster/net/jwt.h), independently of kelp's code: HS256 under
HMAC-SHA256(key, "kelp server token v1"), claims aud/exp/iat/req(/bh).
"""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import pytest

from cluster import make_cluster  # noqa: F401  (pytest fixture)
from cluster import PULSE, fid_vid, wait_for
from conftest import assert_json, assert_json_error, rand_bytes, raw_request, raw_status

KEY = "security-test-key"

# ------------------------------------------------------------------ tokens


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims, mac_key, header=None):
    h = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"},
                          separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(mac_key, ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (h, p, b64url(mac))


def client_token(fid, exp_in=10, key=KEY):
    """A fid write token like the master's /dir/assign hands out."""
    return jwt({"fid": fid, "exp": int(time.time()) + exp_in}, key.encode())


def request_digest(method, path, params):
    """SHA-256 of the method, the path and the sorted decoded query pairs ("jwt" left
    out), each pair as "<len name>:<len value>:" name value."""
    h = hashlib.sha256()
    h.update(method.encode() + b"\n" + path.encode() + b"\n")
    def raw(x):
        return x if isinstance(x, bytes) else x.encode()
    pairs = sorted((raw(n), raw(v)) for n, v in params if n != "jwt")
    for n, v in pairs:
        h.update(b"%d:%d:" % (len(n), len(v)) + n + v)
    return h.digest()


def server_token(method, path, params=(), key=KEY, exp_in=60, iat_delta=0, body=None,
                 aud="kelp-server"):
    mac_key = hmac.new(key.encode(), b"kelp server token v1", hashlib.sha256).digest()
    now = int(time.time())
    claims = {"aud": aud, "exp": now + exp_in, "iat": now + iat_delta,
              "req": b64url(request_digest(method, path, list(params)))}
    if body is not None:
        claims["bh"] = b64url(hashlib.sha256(body).digest())
    return jwt(claims, mac_key)


def alg_none(claims):
    h = b64url(b'{"alg":"none","typ":"JWT"}')
    p = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return "%s.%s." % (h, p)


def bearer(token):
    return {"Authorization": "Bearer " + token}


# ------------------------------------------------------------------ protobuf heartbeats


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num, v):
    return varint(num << 3) + varint(v)


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def heartbeat(ip, port, volumes=(), max_file_key=0, public_url=""):
    """A master_pb.Heartbeat with full volume list [(id, collection)]."""
    msg = f_bytes(1, ip) + f_varint(2, port)
    if public_url:
        msg += f_bytes(3, public_url)
    msg += f_bytes(4, f_bytes(1, "") + f_varint(2, 8))   # max_volume_counts[""] = 8
    if max_file_key:
        msg += f_varint(5, max_file_key)
    msg += f_bytes(6, "dc1") + f_bytes(7, "r1")
    for vid, coll in volumes:
        vol = f_varint(1, vid) + f_varint(2, 8)
        if coll:
            vol += f_bytes(3, coll)
        vol += f_varint(9, 3)
        msg += f_bytes(9, vol)
    return msg


# ------------------------------------------------------------------ helpers


def params_of(url_path):
    """("/admin/x", [("volume", "3")]) from "/admin/x?volume=3"."""
    parts = urlsplit(url_path)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def snapshot(c):
    """What must not change: every server's volumes (id -> collection, read-only)."""
    return {v.addr: {vid: (info["Collection"], info["ReadOnly"])
                     for vid, info in v.volumes().items()} for v in c.running()}


def write_blobs(c, n, **assign):
    blobs = {}
    for i in range(n):
        body, r = c.master.dir_assign(**assign)
        token = r.headers["Authorization"][len("Bearer "):]
        data = rand_bytes(1000 + 137 * i, 1100 + i)
        c.put(body["url"], body["fid"], data, headers=bearer(token))
        blobs[body["fid"]] = data
    return blobs


def assert_all_readable(c, blobs):
    for fid, data in blobs.items():
        holders = c.holders(fid_vid(fid))
        assert len(holders) == 2, "volume %d has %d copies" % (fid_vid(fid), len(holders))
        for h in holders:
            c.assert_readable(h.addr, fid, data)


@pytest.fixture
def keyed(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")], master_args=["-jwtKey=" + KEY],
                     volume_args=["-jwtKey=" + KEY], max=24)
    blobs = write_blobs(c, 6, replication="001")
    blobs.update(write_blobs(c, 3, replication="001", collection="sec"))
    c.settle()
    return c, blobs


ADMIN_ROUTES = [
    "/admin/assign_volume?volume=900&replication=001",
    "/admin/assign_volume?volume=%(vid)d&collection=other",
    "/admin/delete_volume?volume=%(vid)d",
    "/admin/mark_readonly?volume=%(vid)d",
    "/admin/mark_writable?volume=%(vid)d",
    "/admin/vacuum/check?volume=%(vid)d",
    "/admin/vacuum/compact?volume=%(vid)d",
    "/admin/vacuum/commit?volume=%(vid)d",
    "/admin/vacuum/cleanup?volume=%(vid)d",
    "/admin/sync?volume=%(vid)d",
    "/admin/delete_collection?collection=sec",
]


def bad_credentials(method, path, params, fid):
    """name -> headers of every credential an attacker without the key may have."""
    other = "%d,%x%08x" % (fid_vid(fid), 0xbeef, 0x12345678)
    now = int(time.time())
    return {
        "none": {},
        "client token": bearer(client_token(fid)),
        "expired client token": bearer(client_token(fid, exp_in=-30)),
        "token for another fid": bearer(client_token(other)),
        "alg none": bearer(alg_none({"aud": "kelp-server", "exp": now + 60, "iat": now,
                                     "req": b64url(request_digest(method, path, params)),
                                     "fid": fid})),
        "expired server token": bearer(server_token(method, path, params, exp_in=-5,
                                                    iat_delta=-65)),
        "server token from the future": bearer(server_token(method, path, params,
                                                            exp_in=600, iat_delta=540)),
        "server token for another request": bearer(
            server_token(method, "/admin/vacuum/check", [("volume", "%d" % (fid_vid(fid) + 1000))])),
        "server token under another key": bearer(server_token(method, path, params,
                                                              key="not-the-key")),
        "server token for another audience": bearer(server_token(method, path, params,
                                                                 aud="kelp-client")),
        "client token signed with the server key": bearer(jwt(
            {"fid": fid, "exp": now + 10},
            hmac.new(KEY.encode(), b"kelp server token v1", hashlib.sha256).digest())),
    }


# ------------------------------------------------------------------ tests


def test_volume_server_admin_routes_need_a_server_token(keyed):
    c, blobs = keyed
    before = snapshot(c)
    fid = next(iter(blobs))
    vid = fid_vid(fid)
    for vs in c.running():
        for route in ADMIN_ROUTES:
            path, params = params_of(route % {"vid": vid})
            for method in ("GET", "POST"):
                for why, headers in bad_credentials(method, path, params, fid).items():
                    r = vs.request(method, route % {"vid": vid}, headers=headers)
                    assert r.status_code == 401, "%s %s with %s: %d %r" % (
                        method, route, why, r.status_code, r.content[:200])
                    assert_json_error(r, 401)
    assert snapshot(c) == before
    assert_all_readable(c, blobs)


def test_admin_with_a_server_token_and_bad_input(keyed):
    c, blobs = keyed
    vs = c.running()[0]
    # a real server token works (what the master sends) ...
    path, params = params_of("/admin/vacuum/check?volume=%d" % fid_vid(next(iter(blobs))))
    r = vs.get(path, params=params, headers=bearer(server_token("GET", path, params)))
    assert_json(r, 200)
    # ... but only for its method
    r = vs.post(path, params=params, headers=bearer(server_token("GET", path, params)))
    assert_json_error(r, 401)
    # collection names outside [A-Za-z0-9_.-] (or starting with '.') and volume ids out
    # of bounds are refused with 400, even with the key
    for query in ("volume=901&collection=%FF%FE", "volume=901&collection=a/b",
                  "volume=901&collection=..", "volume=901&collection=a%20b",
                  "volume=901&collection=" + "x" * 65, "volume=4294967295",
                  "volume=0"):
        path = "/admin/assign_volume"
        # the values as the server decodes them (bytes: %FF is not UTF-8)
        params = [(n, unquote_to_bytes(v)) for n, v in
                  (kv.split("=", 1) for kv in query.split("&"))]
        r = vs.request("POST", path + "?" + query,
                       headers=bearer(server_token("POST", path, params)))
        assert_json_error(r, 400)
    r = vs.request("POST", "/admin/delete_collection?collection=a/b",
                   headers=bearer(server_token("POST", "/admin/delete_collection",
                                               [("collection", "a/b")])))
    assert_json_error(r, 400)
    assert 901 not in c.all_volume_ids()
    assert_all_readable(c, blobs)


def test_writes_and_deletes_need_a_valid_client_token(keyed):
    c, blobs = keyed
    fid, data = next(iter(blobs.items()))
    for vs in c.holders(fid_vid(fid)):
        path = "/" + fid
        for method in ("PUT", "POST", "DELETE"):
            creds = bad_credentials(method, path, [], fid)
            del creds["client token"]   # valid: the one that works
            for why, headers in creds.items():
                kw = {} if method == "DELETE" else {"data": b"attacker's bytes"}
                r = vs.request(method, path, headers=headers, **kw)
                assert r.status_code == 401, "%s %s on %s with %s: %d %r" % (
                    method, fid, vs.addr, why, r.status_code, r.content[:200])
            # ?type=replicate is not believed: a valid client token, an expired one, a
            # server token for the plain request (no type=replicate) are all refused
            for why, headers in {
                    "client token": bearer(client_token(fid)),
                    "expired client token": bearer(client_token(fid, exp_in=-600)),
                    "server token without type": bearer(server_token(method, path)),
                    "none": {}}.items():
                kw = {} if method == "DELETE" else {"data": b"attacker's bytes"}
                r = vs.request(method, path, params={"type": "replicate"},
                               headers=headers, **kw)
                assert r.status_code == 401, "replicate %s on %s with %s: %d %r" % (
                    method, vs.addr, why, r.status_code, r.content[:200])
            # ?jwt= is the same token, with the same rules
            r = vs.request(method, path, params={"jwt": client_token(fid, exp_in=-1)})
            assert r.status_code == 401
    assert_all_readable(c, blobs)


def test_master_admin_routes_and_heartbeats(keyed):
    c, blobs = keyed
    m = c.master
    before = snapshot(c)
    max_vid = assert_json(m.get("/cluster/status"), 200)["MaxVolumeId"]
    fid = next(iter(blobs))
    routes = ["/vol/grow?count=1&replication=001", "/vol/vacuum?garbageThreshold=0",
              "/col/delete?collection=sec"]
    for route in routes:
        path, params = params_of(route)
        for method in ("GET", "POST"):
            for why, headers in bad_credentials(method, path, params, fid).items():
                r = m.request(method, route, headers=headers)
                assert r.status_code == 401, "%s %s with %s: %d %r" % (
                    method, route, why, r.status_code, r.content[:200])
    # form parameters are not covered by the token: they are ignored with a key
    path = "/col/delete"
    r = m.post(path, data={"collection": "sec"},
               headers=bearer(server_token("POST", path)))
    assert_json_error(r, 400)

    # forged heartbeats: no token, a client token, alg none, a server token of
    # another body or another key: 401, nothing registered
    evil = heartbeat("127.0.0.1", 1, volumes=[(fid_vid(fid), "")])
    good_shape = server_token("POST", "/heartbeat", body=b"something else")
    for why, headers in {
            "none": {},
            "client token": bearer(client_token(fid)),
            "alg none": bearer(alg_none({"aud": "kelp-server", "exp": int(time.time()) + 60,
                                         "iat": int(time.time()),
                                         "req": b64url(request_digest("POST", "/heartbeat",
                                                                      []))})),
            "token of another body": bearer(good_shape),
            "token under another key": bearer(server_token("POST", "/heartbeat", body=evil,
                                                           key="nope")),
            "token without a body digest": bearer(server_token("POST", "/heartbeat")),
            "expired token": bearer(server_token("POST", "/heartbeat", body=evil,
                                                 exp_in=-1, iat_delta=-61)),
    }.items():
        r = m.post("/heartbeat", data=evil,
                   headers=dict(headers, **{"Content-Type": "application/x-protobuf"}))
        assert r.status_code == 401, "heartbeat with %s: %d %r" % (why, r.status_code,
                                                                   r.content[:200])

    # a heartbeat that proves the key still cannot lie about what it is
    lies = {
        "a path in the address": heartbeat("127.0.0.1/evil?x=", 8080),
        "a query in the address": heartbeat("evil?x", 8080),
        "port 0": heartbeat("127.0.0.1", 0),
        "port over 65535": heartbeat("127.0.0.1", 70000),
        "a host that does not resolve": heartbeat("no-such-host.invalid", 8080),
        "a huge volume id": heartbeat("127.0.0.1", 1, volumes=[(0xFFFFFFFF, "")]),
        "volume id 0": heartbeat("127.0.0.1", 1, volumes=[(0, "")]),
        "a huge file key": heartbeat("127.0.0.1", 1, max_file_key=(1 << 64) - 1),
        "a bad collection": heartbeat("127.0.0.1", 1, volumes=[(777, "a/b")]),
        "a bad public url": heartbeat("127.0.0.1", 1, public_url="evil/x?y"),
    }
    for why, body in lies.items():
        r = m.post("/heartbeat", data=body,
                   headers=dict(bearer(server_token("POST", "/heartbeat", body=body)),
                                **{"Content-Type": "application/x-protobuf"}))
        assert r.status_code == 400, "heartbeat with %s: %d %r" % (why, r.status_code,
                                                                   r.content[:200])
    assert "refused a heartbeat" in m.log_text()

    # after all that, the topology lists exactly the real servers and volumes, and the
    # counters did not move
    time.sleep(0)  # nothing to wait for: every refusal was synchronous
    assert set(m.data_nodes()) == {v.addr for v in c.running()}
    c.settle()
    assert snapshot(c) == before
    assert assert_json(m.get("/cluster/status"), 200)["MaxVolumeId"] == max_vid
    assert_all_readable(c, blobs)
    # and the cluster still grows: the assign below needs a new volume in a new layout
    body, r = m.dir_assign(replication="001", collection="after")
    c.put(body["url"], body["fid"], b"still works",
          headers={"Authorization": r.headers["Authorization"]})


def test_operator_server_token_works(keyed):
    """An operator with the key signs /vol/grow itself; the master accepts it, and its
    own calls to the volume servers carry their tokens."""
    c, blobs = keyed
    m = c.master
    path, params = "/vol/grow", [("count", "1"), ("replication", "001"),
                                  ("collection", "ops")]
    r = m.get(path, params=params, headers=bearer(server_token("GET", path, params)))
    assert assert_json(r, 200)["count"] == 2
    # the same token for another query is refused
    r = m.get(path, params=[("count", "2"), ("replication", "001"), ("collection", "ops")],
              headers=bearer(server_token("GET", path, params)))
    assert_json_error(r, 401)
    wait_for("the grown volume", lambda: any(
        info["Collection"] == "ops" for v in c.running() for info in v.volumes().values()),
        5 * PULSE)
    path, params = "/col/delete", [("collection", "ops")]
    r = m.get(path, params=params, headers=bearer(server_token("GET", path, params)))
    assert r.status_code == 204, r.content
    # `kelp token` makes the same tokens (key from the environment)
    url = "/vol/grow?collection=tool&count=1&replication=001"
    token = subprocess.check_output([c.kelp_bin, "token", url],
                                    env=dict(os.environ, KELP_JWT_KEY=KEY)).decode().strip()
    assert assert_json(m.get(url, headers=bearer(token)), 200)["count"] == 2
    token = subprocess.check_output([c.kelp_bin, "token", "-method=POST", url],
                                    env=dict(os.environ, KELP_JWT_KEY=KEY)).decode().strip()
    assert_json_error(m.get(url, headers=bearer(token)), 401)
    assert_all_readable(c, blobs)


def test_refused_bodies_are_not_read(keyed):
    """A refused request gets its 401 from the headers alone: the server answers while
    the 250 MiB body it announced has not been sent."""
    c, blobs = keyed
    fid = next(iter(blobs))
    vs = c.holders(fid_vid(fid))[0]
    huge = 250 << 20
    for port, path in ((c.master.port, "/heartbeat"), (c.master.port, "/col/delete"),
                       (vs.port, "/admin/assign_volume?volume=77"),
                       (vs.port, "/" + fid), (vs.port, "/%s?type=replicate" % fid)):
        req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
               "Content-Type: application/octet-stream\r\n\r\n" % (path, huge)).encode()
        resp = raw_request(port, req + b"x" * 1000, timeout=3.0)
        assert raw_status(resp) == 401, (path, resp[:300])
    assert_all_readable(c, blobs)


def test_white_list_before_the_body(make_cluster):
    """From an address not on the white list, /submit with a 250 MiB body announced is
    refused at once and the master does not grow."""
    c = make_cluster([("dc1", "r1")], master_args=["-whiteList=127.0.0.2", "-publicStatus"],
                     volume_args=["-whiteList=127.0.0.2"])
    m = c.master
    rss_before = m.rss_kb()
    for port, path in ((m.port, "/submit"), (m.port, "/dir/assign"),
                       (c.volumes[0].port, "/3,01637037d6")):
        req = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
               "Content-Type: multipart/form-data; boundary=x\r\n\r\n" % (
                   path, 250 << 20)).encode()
        resp = raw_request(port, req + b"y" * 65536, timeout=3.0)
        assert raw_status(resp) == 401, (path, resp[:300])
    assert m.rss_kb() < rss_before + 16 * 1024


# ------------------------------------------------------------------ compressed reads


def hwm_kb(server):
    """The process's peak resident memory so far (VmHWM), in KiB."""
    with open("/proc/%d/status" % server.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/%d/status" % server.pid)


def test_gzip_bomb_reads_in_bounded_memory(make_server):
    """16 concurrent reads, without Accept-Encoding: gzip, of a 64 MiB blob of zeros
    stored gzip-compressed (65 KiB on disk): inflated as it is sent, so the volume
    server's peak resident memory (VmHWM) grows by less than RSS_BOUND_MIB; measured:
    4 MiB (inflating each whole in memory, as before, took 818 MiB)."""
    import gzip
    import threading

    RSS_BOUND_MIB = 48
    plain_len = 64 << 20
    gz = gzip.compress(b"\0" * plain_len, compresslevel=9)
    vs = make_server(args=["-fileSizeLimitMB=64"])
    vs.assign(5)
    fid = "5,01637037d6"
    r = vs.put("/" + fid, data=gz, headers={"Content-Encoding": "gzip"})
    assert assert_json(r, 201)["size"] == plain_len
    # a range of the inflated bytes, and HEAD's length
    r = vs.get("/" + fid, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == b"\0" * 1000, (r.status_code, len(r.content))
    assert r.headers["Content-Range"] == "bytes 1000-1999/%d" % plain_len
    assert int(vs.head("/" + fid).headers["Content-Length"]) == plain_len

    base = hwm_kb(vs)
    results = []

    def read():
        import requests
        got = 0
        try:
            with requests.get(vs.url("/" + fid), stream=True, timeout=120,
                              headers={"Accept-Encoding": "identity"}) as resp:
                assert "Content-Encoding" not in resp.headers, resp.headers
                ok = resp.status_code == 200
                for chunk in resp.iter_content(1 << 20):
                    if chunk.strip(b"\0"):
                        ok = False
                    got += len(chunk)
        except Exception as e:   # reported below
            results.append(repr(e))
            return
        results.append((ok, got))

    readers = [threading.Thread(target=read) for _ in range(16)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(timeout=180)
    assert results == [(True, plain_len)] * 16, results
    grew_mib = (hwm_kb(vs) - base) / 1024
    assert grew_mib < RSS_BOUND_MIB, "RSS grew by %.1f MiB (from %d KiB)" % (grew_mib, base)


# ------------------------------------------------------------------ status pages


def test_status_pages_follow_the_white_list(request, kelp_bin, tmp_path):
    """With a white list and no -publicStatus, the status and topology pages answer
    only its addresses (and servers proving the key); lookups, health checks and reads
    stay open. With -publicStatus they answer anyone."""
    from cluster import Master
    from conftest import VolumeServer

    registry = request.node.__dict__.setdefault("_kelp_servers", [])
    m = Master(kelp_bin, tmp_path, tmp_path / "mdir",
               args=["-whiteList=127.0.0.2", "-jwtKey=" + KEY])
    registry.append(m)
    m.start()
    vs = VolumeServer(kelp_bin, tmp_path, [str(tmp_path / "vs")],
                      args=["-whiteList=127.0.0.2", "-jwtKey=" + KEY,
                            "-master=127.0.0.1:%d" % m.port, "-pulseSeconds=1"])
    registry.append(vs)
    vs.start()
    try:
        for path in ("/dir/status", "/vol/status", "/cluster/status", "/"):
            assert_json_error(m.get(path), 401)
            # a server proving the key sees them (volume servers read /cluster/status)
            assert_json(m.get(path, headers=bearer(server_token("GET", path))), 200)
        assert_json_error(vs.get("/status"), 401)
        for path in ("/healthz", "/cluster/healthz"):
            assert m.get(path).status_code == 200, path
        assert vs.get("/healthz").status_code == 200
        # the volume server registered (heartbeats are not white-listed; the key guards
        # them)
        wait_for("the volume server in the topology", lambda: "127.0.0.1:%d" % vs.port in
                 json.dumps(assert_json(m.get("/dir/status", headers=bearer(
                     server_token("GET", "/dir/status"))), 200)), 10)
        assert_json_error(m.get("/dir/lookup", params={"volumeId": "1"}), 404)
    finally:
        vs.stop()
        m.stop()
    m.args.append("-publicStatus")
    m.start()
    try:
        assert_json(m.get("/dir/status"), 200)
    finally:
        m.stop()


# ------------------------------------------------------------------ read tokens


def test_read_tokens(make_cluster, tmp_path):
    """-jwtReadKey: reads need the fid's read token, which /dir/lookup?fileId=...&
    read=yes hands out; proxies pass it on; kelp's client fetches it by itself."""
    rkey = "read-key"
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")],
                     master_args=["-jwtKey=" + KEY, "-jwtReadKey=" + rkey],
                     volume_args=["-jwtKey=" + KEY, "-jwtReadKey=" + rkey])
    m = c.master
    body, r = m.dir_assign()
    fid, url = body["fid"], body["url"]
    data = rand_bytes(3000, 77)
    c.put(url, fid, data, headers={"Authorization": r.headers["Authorization"]})
    other = "%d,%x%08x" % (fid_vid(fid), 0xbeef, 0x12345678)
    for why, headers in {
            "none": {},
            "the write token": {"Authorization": r.headers["Authorization"]},
            "a read token of another fid": bearer(client_token(other, key=rkey)),
            "an expired read token": bearer(client_token(fid, exp_in=-1, key=rkey)),
            "a read token under the write key": bearer(client_token(fid, key=KEY)),
            "a server token": bearer(server_token("GET", "/" + fid)),
    }.items():
        g = c.read(url, fid, headers=headers)
        assert g.status_code == 401, (why, g.status_code, g.content[:200])
        assert g.content != data
    lk = m.get("/dir/lookup", params={"fileId": fid, "read": "yes"})
    assert_json(lk, 200)
    token = lk.headers["Authorization"]
    assert token.startswith("Bearer ")
    g = c.read(url, fid, headers={"Authorization": token})
    assert g.status_code == 200 and g.content == data
    g = c.read(url, fid, params={"jwt": token[len("Bearer "):]})
    assert g.status_code == 200 and g.content == data
    # through the server that does not hold it (proxy) the token goes along
    proxy = next(v for v in c.running() if v.addr != url)
    g = c.read(proxy.addr, fid, headers={"Authorization": token})
    assert g.status_code == 200 and g.content == data, (g.status_code, g.content[:200])
    assert c.read(proxy.addr, fid).status_code == 401
    # kelp download gets read tokens itself
    out = tmp_path / "dl"
    out.mkdir()
    subprocess.run([c.kelp_bin, "download", "-master=" + m.addr, "-dir=" + str(out), fid],
                   check=True, capture_output=True, timeout=60)
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].read_bytes() == data, files
