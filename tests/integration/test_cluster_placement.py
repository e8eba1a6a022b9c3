"""Replica placement and replicated writes (SeaweedFS reference sections 2.6 and 5).

Every placement string "xyz" must put x+y+z+1 copies of a volume where it says: x
extra copies in other data centers, y in other racks of the main data center, z on
other servers of the main rack. Which servers hold a volume is read from each volume
server's own /status, mapped to the data center and rack it was started with, and
compared with the master's /dir/lookup.
"""

import collections
import time

import pytest

from cluster import PULSE, fid_key, fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import assert_json_error, etag_of, rand_bytes

# dc1: r1 has two servers, r2 one; dc2: two racks; dc3: one server.
THREE_DCS = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2"),
             ("dc3", "r1")]

PLACEMENTS = ["000", "001", "010", "100", "200", "110", "011"]


def check_placement(c, rp, vid):
    """Asserts that volume vid is held where placement rp says, with rp recorded on
    every copy, and that /dir/lookup lists exactly the holders."""
    x, y, z = (int(ch) for ch in rp)
    holders = c.holders(vid)
    where = sorted((h.dc, h.rack, h.addr) for h in holders)
    assert len(holders) == x + y + z + 1, "volume %d (%s) held by %r" % (vid, rp, where)
    by_dc = collections.Counter(h.dc for h in holders)
    assert sorted(by_dc.values()) == sorted([y + z + 1] + [1] * x), \
        "volume %d (%s): copies per data center wrong: %r" % (vid, rp, where)
    main_dc = by_dc.most_common(1)[0][0]
    by_rack = collections.Counter(h.rack for h in holders if h.dc == main_dc)
    assert sorted(by_rack.values()) == sorted([z + 1] + [1] * y), \
        "volume %d (%s): copies per rack of %s wrong: %r" % (vid, rp, main_dc, where)
    for h in holders:
        v = h.volumes()[vid]
        assert v["ReplicaPlacement"] == rp, (h.addr, v)
    lk = c.master.lookup(vid)
    locs = {loc["url"]: loc for loc in lk["locations"]}
    assert set(locs) == {h.addr for h in holders}, (lk, where)
    assert len(lk["locations"]) == len(holders), lk
    for h in holders:
        assert locs[h.addr]["dataCenter"] == h.dc, (locs[h.addr], h.dc)
    return holders


@pytest.mark.parametrize("rp", PLACEMENTS)
def test_placement(make_cluster, rp):
    c = make_cluster(THREE_DCS)
    m = c.master
    copies = sum(int(ch) for ch in rp) + 1
    # /vol/grow, a few times: the choice of servers is random
    for _ in range(3):
        before = c.all_volume_ids()
        assert m.grow(count=1, replication=rp) == {"count": copies}
        new = c.all_volume_ids() - before
        assert len(new) == 1, "grow count=1 made volumes %r" % sorted(new)
        check_placement(c, rp, new.pop())

    # growth through assign: every volume it made follows the placement too
    before = c.all_volume_ids()
    body, _ = m.dir_assign(replication=rp)
    vid = fid_vid(body["fid"])
    assert vid in c.all_volume_ids()
    new = c.all_volume_ids() - before
    for v in sorted(new):
        check_placement(c, rp, v)
    holders = check_placement(c, rp, vid)
    assert body["url"] in {h.addr for h in holders}
    # and the master's layout for rp lists them as writable
    layouts = [lay for lay in m.layouts() if lay["replication"] == rp
               and lay["collection"] == "" and lay["ttl"] == ""]
    assert len(layouts) == 1, m.layouts()
    assert vid in layouts[0]["writables"]


def test_impossible_placement_is_406(make_cluster):
    # two data centers: "200" needs three; one server per rack: "002" needs three in one
    c = make_cluster([("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1")])
    m = c.master
    m.grow(expect=406, count=1, replication="200")
    m.grow(expect=406, count=1, replication="001")
    m.dir_assign(expect=406, replication="200")
    m.dir_assign(expect=406, replication="020")
    assert c.all_volume_ids() == set()
    # what fits still works
    assert m.grow(count=1, replication="110") == {"count": 3}


# dc1/r1 keeps two servers even with one of them killed, for the writes after it.
REPL_NODES = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"),
              ("dc2", "r2")]


@pytest.mark.parametrize("rp", ["001", "010"])
def test_replicated_writes_and_a_dead_replica(make_cluster, rp):
    c = make_cluster(REPL_NODES)
    m = c.master
    body, _ = m.dir_assign(replication=rp, count=4)
    fid, primary = body["fid"], body["url"]
    vid = fid_vid(fid)
    holders = check_placement(c, rp, vid)
    assert primary in {h.addr for h in holders}
    other = [h for h in holders if h.addr != primary][0]

    # a write to the first location reaches every replica
    data = rand_bytes(50000, 20)
    r = c.put(primary, fid, data)
    assert r.json()["eTag"] == etag_of(data)
    for h in holders:
        r = c.assert_readable(h.addr, fid, data)
        assert r.headers["ETag"] == '"%s"' % etag_of(data)
    # and so does a write sent to the other replica
    data1 = rand_bytes(40000, 21)
    c.put(other.addr, fid + "_1", data1)
    for h in holders:
        c.assert_readable(h.addr, fid + "_1", data1)
    # a delete through one replica deletes on all
    data3 = rand_bytes(1000, 23)
    c.put(primary, fid + "_3", data3)
    r = c.http("DELETE", other.addr, "/" + fid + "_3")
    assert r.status_code == 202, r.content
    for h in holders:
        c.assert_gone(h.addr, fid + "_3")

    # kill -9 the replica that is not the first location
    victim = other
    survivor = c.by_addr(primary)
    t_kill = time.monotonic()
    victim.kill()
    data2 = rand_bytes(30000, 22)
    r = c.http("PUT", primary, "/" + fid + "_2", data=data2)
    err = assert_json_error(r, 500)["error"]
    assert victim.addr in err, "the error does not name the dead replica %s: %r" % (
        victim.addr, err)
    # reads still work from the survivor
    c.assert_readable(survivor.addr, fid, data)
    c.assert_readable(survivor.addr, fid + "_1", data1)
    # a delete fails the same way
    r = c.http("DELETE", primary, "/" + fid + "_1")
    err = assert_json_error(r, 500)["error"]
    assert victim.addr in err, "the error does not name the dead replica %s: %r" % (
        victim.addr, err)
    c.assert_readable(survivor.addr, fid, data)

    # once the master has dropped the dead server, the volume lists the survivor only
    wait_for("volume %d to lose %s in /dir/lookup" % (vid, victim.addr),
             lambda: m.lookup_urls(vid) == {survivor.addr}, 3 * PULSE + 1)
    assert time.monotonic() - t_kill <= 3 * PULSE + 1.5
    # a write to it still fails: it has fewer copies than its placement asks for
    key = fid_key(fid) + 1000
    r = c.http("PUT", primary, "/%d,%x%08x" % (vid, key, 0x1234abcd), data=b"x" * 100)
    assert_json_error(r, 500)
    # assign does not hand it out any more; writes go to complete volumes
    for i in range(5):
        body, _ = m.dir_assign(replication=rp)
        v2 = fid_vid(body["fid"])
        assert v2 != vid
        hs = check_placement(c, rp, v2)
        assert victim.addr not in {h.addr for h in hs}
        d = rand_bytes(2000, 100 + i)
        c.put(body["url"], body["fid"], d)
        for h in hs:
            c.assert_readable(h.addr, body["fid"], d)
