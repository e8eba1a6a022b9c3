"""Write tokens: a master and volume servers sharing -jwtKey (SeaweedFS reference 1.3
and 2.2: the master returns `Authorization: Bearer <jwt>` with an assign; HS256 with
claims {"exp", "fid"}; uploads and deletes without a valid token for the fid get 401).
"""

import base64
import hashlib
import hmac
import json
import time

from cluster import fid_vid, make_cluster  # noqa: F401
from conftest import assert_json, assert_json_error, rand_bytes

KEY = "cluster-test-secret"


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sign(fid, key=KEY, exp=None):
    """A token like the master's: {"exp":N,"fid":"..."} signed HS256 with key."""
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"fid": fid}
    if exp is not None:
        claims["exp"] = exp
    payload = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key.encode(), ("%s.%s" % (header, payload)).encode(), hashlib.sha256)
    return "%s.%s.%s" % (header, payload, b64url(mac.digest()))


def bearer(token):
    return {"Authorization": "Bearer " + token}


def tamper_signature(token):
    """Changes one character in the middle of the signature (never the last, whose
    low bits may be unused)."""
    h, p, s = token.split(".")
    i = len(s) // 2
    s = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
    return "%s.%s.%s" % (h, p, s)


def swap_fid(token, fid):
    """The same signature over a payload that names another fid."""
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["fid"] = fid
    p2 = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return "%s.%s.%s" % (h, p2, s)


def test_jwt_write_tokens(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2")],
                     master_args=["-jwtKey=" + KEY], volume_args=["-jwtKey=" + KEY])
    m = c.master
    body, r = m.dir_assign(replication="001", count=2)
    fid, url = body["fid"], body["url"]
    auth = r.headers.get("Authorization", "")
    assert auth.startswith("Bearer "), r.headers
    token = auth[len("Bearer "):]
    assert "Authorization" not in body and "auth" not in body, body
    h, p, s = token.split(".")
    assert json.loads(b64url_decode(h)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(b64url_decode(p))
    assert claims["fid"] == fid, claims
    now = time.time()
    assert now < claims["exp"] <= now + 3600, claims
    # signed with HS256 under the shared key
    mac = hmac.new(KEY.encode(), ("%s.%s" % (h, p)).encode(), hashlib.sha256).digest()
    assert b64url_decode(s) == mac

    holders = c.holders(fid_vid(fid))
    assert len(holders) == 2
    data = rand_bytes(20000, 1)
    other_fid = "%d,%x%08x" % (fid_vid(fid), 0xabcdef, 0x11223344)

    # refused: no token, a tampered one, one for another fid, one under another key,
    # an expired one, garbage
    refused = {
        "none": {},
        "tampered signature": bearer(tamper_signature(token)),
        "payload names another fid": bearer(swap_fid(token, other_fid)),
        "valid token of another fid": bearer(sign(other_fid, exp=int(now) + 60)),
        "another key": bearer(sign(fid, key="wrong", exp=int(now) + 60)),
        "expired": bearer(sign(fid, exp=int(now) - 60)),
        "garbage": bearer("not.a.jwt"),
        "not bearer": {"Authorization": "Basic " + token},
    }
    for why, headers in refused.items():
        r = c.http("PUT", url, "/" + fid, data=data, headers=headers)
        assert r.status_code == 401, "upload with %s: %d %r" % (why, r.status_code,
                                                               r.content[:200])
        assert_json_error(r, 401)
    for hsrv in holders:
        r = c.read(hsrv.addr, fid)
        assert r.status_code == 404, "a refused upload was stored on %s" % hsrv.addr

    # accepted with the assign's token; replicated (the replica checks it too)
    r = c.put(url, fid, data, headers=bearer(token))
    for hsrv in holders:
        c.assert_readable(hsrv.addr, fid, data)   # reads need no token
    # the batch key fid_1 is covered by the same token
    data1 = rand_bytes(1000, 2)
    c.put(url, fid + "_1", data1, headers=bearer(token))
    for hsrv in holders:
        c.assert_readable(hsrv.addr, fid + "_1", data1)
    # a replica write straight to a replica without a token is refused too
    r = c.http("PUT", holders[0].addr, "/" + fid + "_1",
               params={"type": "replicate"}, data=b"forged")
    assert_json_error(r, 401)

    # deletes: the same rules
    for why, headers in refused.items():
        r = c.http("DELETE", url, "/" + fid, headers=headers)
        assert r.status_code == 401, "delete with %s: %d %r" % (why, r.status_code,
                                                               r.content[:200])
        assert_json_error(r, 401)
    for hsrv in holders:
        c.assert_readable(hsrv.addr, fid, data)
    r = c.http("DELETE", url, "/" + fid, headers=bearer(token))
    assert r.status_code == 202, (r.status_code, r.content)
    for hsrv in holders:
        c.assert_gone(hsrv.addr, fid)

    # /submit: the master signs its own upload
    r = m.post("/submit", files={"file": ("a.txt", b"submitted", "text/plain")})
    sub = assert_json(r, 201)
    addr = sub["fileUrl"].split("/", 1)[0]
    c.assert_readable(addr, sub["fid"], b"submitted")


def test_no_jwt_key_no_token(make_cluster):
    c = make_cluster([("dc1", "r1")])
    body, r = c.master.dir_assign()
    assert "Authorization" not in r.headers
    c.put(body["url"], body["fid"], b"open")
