"""Volume servers coming and going, and reads sent to a server that does not hold the
volume (-readMode proxy|redirect|local; SeaweedFS reference 2.3 and 6.1).
"""

import time


from cluster import PULSE, fid_key, fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import assert_json, assert_json_error, etag_of, rand_bytes


def test_killed_server_leaves_and_rejoins(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1")])
    m = c.master
    body, _ = m.dir_assign()
    fid, url = body["fid"], body["url"]
    vid = fid_vid(fid)
    data = rand_bytes(20000, 1)
    c.put(url, fid, data)
    victim = c.by_addr(url)
    its_vids = set(victim.volumes())
    assert vid in its_vids
    others = [v for v in c.volumes if v is not victim]

    t_kill = time.monotonic()
    victim.kill()
    # gone from lookups within 3 pulses (+1 s slack)
    wait_for("volume %d to leave /dir/lookup" % vid,
             lambda: m.lookup_urls(vid) is None, 3 * PULSE + 1, interval=0.1)
    elapsed = time.monotonic() - t_kill
    assert elapsed <= 3 * PULSE + 1.2, elapsed
    body = m.lookup(vid, expect=404)
    assert "error" in body
    # and from /dir/status; its other volumes too
    assert victim.addr not in m.data_nodes()
    for v in its_vids:
        assert m.lookup_urls(v) is None, v
    c.wait_nodes(others, timeout=1)
    # assigns now only hand out volumes of live servers
    for _ in range(10):
        b, _ = m.dir_assign()
        assert b["url"] != victim.addr
        assert fid_vid(b["fid"]) not in its_vids

    # restarted on the same directory (and port), it comes back with its volumes
    t_start = time.monotonic()
    victim.start()
    wait_for("volume %d back in /dir/lookup" % vid,
             lambda: m.lookup_urls(vid) == {victim.addr}, 2 * PULSE + 1, interval=0.1)
    assert time.monotonic() - t_start <= 2 * PULSE + 1.2
    c.wait_nodes(timeout=1)
    for v in its_vids:
        assert m.lookup_urls(v) == {victim.addr}, v
    c.assert_readable(victim.addr, fid, data)
    # and takes writes again
    data2 = rand_bytes(1000, 2)
    c.put(victim.addr, fid + "_1", data2)
    c.assert_readable(victim.addr, fid + "_1", data2)


def test_graceful_stop_leaves_at_once(make_cluster):
    """A volume server stopped with SIGTERM tells the master it holds nothing any more
    (reference 6.1: "On graceful stop: send a heartbeat with no volumes and
    has_no_volumes=true"), so its volumes leave lookups at once, not after 3 pulses."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")])
    m = c.master
    body, _ = m.dir_assign()
    victim = c.by_addr(body["url"])
    vid = fid_vid(body["fid"])
    assert m.lookup_urls(vid) == {victim.addr}
    assert victim.stop() == 0
    t0 = time.monotonic()
    wait_for("a stopped server to leave /dir/lookup",
             lambda: m.lookup_urls(vid) is None, 3 * PULSE + 1, interval=0.05)
    waited = time.monotonic() - t0
    assert waited < 0.5, "volume %d of a stopped server was still listed %.1f s after " \
        "the server exited" % (vid, waited)


def test_master_restart(make_cluster):
    """A master restarted on the same -mdir and port: the volume servers heartbeat to
    it again, lookups come back, and neither file keys nor volume ids are reused."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc2", "r1")])
    m = c.master
    blobs = {}
    for i in range(5):
        body, _ = m.dir_assign(replication="001" if i % 2 else "000")
        data = rand_bytes(3000, 50 + i)
        c.put(body["url"], body["fid"], data)
        blobs[body["fid"]] = data
    vids = c.all_volume_ids()
    old_keys = {fid_key(f) for f in blobs}
    where = {v: m.lookup_urls(v) for v in vids}

    m.kill()
    m.start()
    c.wait_nodes()
    c.settle()
    for v, urls in where.items():
        assert m.lookup_urls(v) == urls, v
    for fid, data in blobs.items():
        for addr in where[fid_vid(fid)]:
            c.assert_readable(addr, fid, data)
    # new keys are past every key handed out before the restart
    for rp in ("000", "001"):
        body, _ = m.dir_assign(replication=rp)
        assert fid_key(body["fid"]) > max(old_keys), (body, sorted(old_keys))
        c.put(body["url"], body["fid"], b"after restart")
    # new volumes get new ids
    before = c.all_volume_ids()
    m.grow(count=1, replication="000")
    new = c.all_volume_ids() - before
    assert len(new) == 1 and min(new) > max(vids), (sorted(vids), sorted(new))
    cs = assert_json(m.get("/cluster/status"), 200)
    assert cs["MaxVolumeId"] == max(new), cs


def _read_mode_cluster(make_cluster):
    """One server holding volumes with a blob on them, then three servers that hold
    none of them: default (proxy), -readMode=redirect, -readMode=local."""
    c = make_cluster([("dc1", "r1")])
    m = c.master
    body, _ = m.dir_assign()
    fid, url = body["fid"], body["url"]
    holder = c.by_addr(url)
    data = rand_bytes(70000, 3)
    c.put(url, fid, data, headers={"Content-Type": "image/png"})
    proxy = c.add_volume("dc1", "r1", wait=False, name="proxy")
    redirect = c.add_volume("dc1", "r2", args=["-readMode=redirect"], wait=False,
                            name="redirect")
    local = c.add_volume("dc2", "r1", args=["-readMode=local"], wait=False, name="local")
    c.wait_nodes()
    vid = fid_vid(fid)
    for s in (proxy, redirect, local):
        assert vid not in s.volumes()
    return c, holder, fid, data, proxy, redirect, local


def test_read_mode_proxy(make_cluster):
    c, holder, fid, data, proxy, _, _ = _read_mode_cluster(make_cluster)
    r = c.assert_readable(proxy.addr, fid, data)
    assert r.headers["ETag"] == '"%s"' % etag_of(data)
    assert r.headers["Content-Type"] == "image/png"
    # a range is passed through
    r = c.read(proxy.addr, fid, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206, r.status_code
    assert r.content == data[100:200]
    # a missing blob on a known volume: the holder's 404
    r = c.read(proxy.addr, fid.rsplit(",", 1)[0] + ",ff" + fid.rsplit(",", 1)[1][-8:])
    assert r.status_code == 404, r.status_code
    # an unknown volume: 404
    r = c.read(proxy.addr, "4242,0123456789")
    assert r.status_code == 404, r.status_code


def test_read_mode_proxy_redirects_large_blobs(make_cluster):
    """A proxy holds at most a 4 MiB chunk (plus headers) of another server's reply in
    memory: a bigger blob is redirected to its holder (302) instead."""
    c, holder, fid, data, proxy, _, _ = _read_mode_cluster(make_cluster)
    body, r = c.master.dir_assign()
    big = rand_bytes((5 << 20) + 123, 4)
    c.put(body["url"], body["fid"], big)
    # both the first server and "proxy" run -readMode=proxy; read from the other one
    reader = proxy if body["url"] != proxy.addr else holder
    assert reader.addr != body["url"]
    r = c.read(reader.addr, body["fid"])
    assert r.status_code == 302, (r.status_code, r.content[:200])
    assert r.headers["Location"].startswith("http://%s/%s" % (body["url"], body["fid"]))
    r = c.read(reader.addr, body["fid"], allow_redirects=True)
    assert r.status_code == 200 and r.content == big
    # small ones are still proxied
    c.assert_readable(proxy.addr, fid, data)


def test_read_mode_redirect(make_cluster):
    c, holder, fid, data, _, redirect, _ = _read_mode_cluster(make_cluster)
    r = c.read(redirect.addr, fid)
    assert r.status_code == 301, (r.status_code, r.content[:200])
    loc = r.headers["Location"]
    assert loc.startswith("http://%s/%s" % (holder.addr, fid)), loc
    r = c.read(redirect.addr, fid, allow_redirects=True)
    assert r.status_code == 200 and r.content == data


def test_read_mode_local(make_cluster):
    c, holder, fid, data, _, _, local = _read_mode_cluster(make_cluster)
    r = c.read(local.addr, fid)
    assert r.status_code == 404, (r.status_code, r.content[:200])
    assert r.content != data
    # the holder itself still serves it
    c.assert_readable(holder.addr, fid, data)


def test_write_to_a_server_without_the_volume_is_forwarded(make_cluster):
    """A volume server that does not hold the volume forwards an original write to the
    holders (reference 2.2: "If this server does not hold the volume, it skips the
    local write and forwards to all locations the master lists")."""
    c, holder, fid, data, proxy, _, _ = _read_mode_cluster(make_cluster)
    data2 = rand_bytes(3000, 9)
    r = c.put(proxy.addr, fid + "_1", data2)
    assert r.json()["size"] == len(data2)
    c.assert_readable(holder.addr, fid + "_1", data2)
    assert fid_vid(fid) not in proxy.volumes()
    r = c.http("DELETE", proxy.addr, "/" + fid + "_1")
    assert r.status_code == 202, (r.status_code, r.content)
    c.assert_gone(holder.addr, fid + "_1")
    # unknown volume: an error, not a hang
    r = c.http("PUT", proxy.addr, "/4242,0123456789", data=b"x")
    assert r.status_code >= 400, r.status_code
    assert_json_error(r, r.status_code)
