"""Volume life cycle driven by the master: growth when volumes fill, vacuum, TTL
layouts, collection deletion (SeaweedFS reference sections 1.7-1.10, 4.6, 5.2-5.4, 9).
"""

import hashlib
import time


from cluster import PULSE, fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import MiB, assert_json, assert_json_error, rand_bytes

FOUR = [("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2")]


def _full_and_writable(c, m):
    """(volume ids at or over the 1 MiB limit per the servers' /status, the writable
    ids of the default layout per the master)."""
    sizes = {}
    for v in c.running():
        for vid, info in v.volumes().items():
            sizes[vid] = max(sizes.get(vid, 0), info["Size"])
    full = {vid for vid, s in sizes.items() if s >= MiB}
    layout = [lay for lay in m.layouts() if lay["replication"] == "000"
              and lay["collection"] == "" and lay["ttl"] == ""]
    assert len(layout) == 1, m.layouts()
    return full, set(layout[0]["writables"])


def test_growth_when_volumes_fill(make_cluster):
    c = make_cluster(FOUR, master_args=["-volumeSizeLimitMB=1"], max=10)
    m = c.master
    blob = 200 * 1024
    blobs = {}              # fid -> (url, sha256)
    initial = None
    new_vids = set()
    deadline = time.monotonic() + 60
    for i in range(120):
        body, _ = m.dir_assign()   # never fails while there are free slots
        fid, url = body["fid"], body["url"]
        if initial is None:
            initial = c.all_volume_ids()
            assert len(initial) == 7, "first growth of a 000 layout: %r" % initial
        data = rand_bytes(blob, 1000 + i)
        c.put(url, fid, data)
        blobs[fid] = (url, hashlib.sha256(data).hexdigest())
        if fid_vid(fid) not in initial:
            new_vids.add(fid_vid(fid))
            if len(new_vids) >= 2:
                break
        if i % 5 == 4:
            # Uploads are faster than heartbeats: let the master hear about volumes
            # that are full before going on (it must within a pulse or two).
            wait_for("full volumes to leave the writable list",
                     lambda: not set.intersection(*_full_and_writable(c, m)),
                     2 * PULSE + 1)
        assert time.monotonic() < deadline, "uploads took over 60 s"
    assert new_vids, "after %d uploads of %d KiB into 1 MiB volumes, assign still only " \
        "hands out the first volumes %r; now %r" % (
            len(blobs), blob >> 10, sorted(initial), sorted(m.volume_ids()))
    grown = c.all_volume_ids()
    assert initial < grown and new_vids <= grown
    full, _ = _full_and_writable(c, m)
    assert len(full) >= 5, "growth before the volumes were full: full %r of %r" % (
        sorted(full), sorted(initial))
    # every blob is still there
    for fid, (url, sha) in blobs.items():
        r = c.read(url, fid)
        assert r.status_code == 200, (fid, r.status_code)
        assert hashlib.sha256(r.content).hexdigest() == sha, fid
    wait_for("full volumes to leave the writable list",
             lambda: not set.intersection(*_full_and_writable(c, m)), 2 * PULSE + 1)
    wait_for("/dir/status to list every volume", lambda: m.volume_ids() == grown, 2 * PULSE)


def test_grown_volumes_stay_registered(make_cluster):
    """Right after an assign that grew volumes returns, the master lists every volume
    it created (in /dir/status and /dir/lookup), and an upload to the assigned fid
    succeeds: a heartbeat that a volume server built before one of the creations must
    not make the master forget it. (A race: a growth hits it now and then, so the
    test runs 60 growths.)"""
    c = make_cluster(FOUR, max=120)
    m = c.master
    problems = []
    for i in range(60):
        before = c.all_volume_ids()
        body, _ = m.dir_assign(collection="c%d" % i)
        listed = m.volume_ids()
        grown = c.all_volume_ids() - before
        assert len(grown) == 7, grown
        if not grown <= listed:
            problems.append("round %d: grew %r; /dir/status listed only %r" % (
                i, sorted(grown), sorted(listed & grown)))
        vid = fid_vid(body["fid"])
        got = m.lookup_urls(vid)
        if got != {body["url"]}:
            problems.append("round %d: lookup of the assigned volume %d: %r, not %r" % (
                i, vid, got, body["url"]))
    assert not problems, "\n".join(problems)


def test_replicated_write_right_after_growth(make_cluster):
    """The same race seen by a client: assign with replication 001 (which grows
    volumes), upload at once; the volume server asks the master for the replicas and
    must find both. Fails with 500 "volume N has 1 of its 2 replicas known to the
    masters" when the master has just forgotten a replica."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc2", "r1"), ("dc2", "r1")], max=130)
    m = c.master
    problems = []
    for i in range(40):
        body, _ = m.dir_assign(collection="r%d" % i, replication="001")
        r = c.http("PUT", body["url"], "/" + body["fid"], data=b"first write")
        if r.status_code != 201:
            problems.append("round %d: first upload to %s: %d %r" % (
                i, body["fid"], r.status_code, r.content[:200]))
    assert not problems, "\n".join(problems)


def _dead_and_live(c, m, rp="001", n=20, size=64 * 1024):
    """Assigns n keys on one volume, uploads n blobs and deletes all but 4."""
    body, _ = m.dir_assign(replication=rp, count=n)
    fid, url = body["fid"], body["url"]
    vid = fid_vid(fid)
    fids = [fid] + ["%s_%d" % (fid, i) for i in range(1, n)]
    datas = {}
    for i, f in enumerate(fids):
        datas[f] = rand_bytes(size, 500 + i)
        c.put(url, f, datas[f])
    holders = c.holders(vid)
    assert len(holders) == 2
    live = fids[::5]          # 4 stay
    dead = [f for f in fids if f not in live]
    before = {h.addr: h.volumes()[vid] for h in holders}
    for h in holders:
        assert before[h.addr]["Size"] > n * size, before
    for f in dead:
        r = c.http("DELETE", url, "/" + f)
        assert r.status_code == 202, (f, r.content)
    for h in holders:
        v = h.volumes()[vid]
        assert v["DeleteCount"] == len(dead), (h.addr, v)
    return vid, url, holders, before, live, dead, datas


def _check_vacuumed(c, vid, holders, before, live, dead, datas):
    for h in holders:
        v = h.volumes()[vid]
        b = before[h.addr]
        assert v["Size"] < b["Size"] // 2, "volume %d on %s not compacted: %d -> %d" % (
            vid, h.addr, b["Size"], v["Size"])
        assert v["CompactRevision"] == b["CompactRevision"] + 1, (b, v)
        assert v["DeleteCount"] == 0 and v["DeletedByteCount"] == 0, v
        for f in live:
            c.assert_readable(h.addr, f, datas[f])
        for f in dead:
            c.assert_gone(h.addr, f)


def test_vacuum_compacts_every_replica(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc2", "r1")])
    m = c.master
    vid, url, holders, before, live, dead, datas = _dead_and_live(c, m)

    # let a heartbeat tell the master about the deletions
    def master_knows():
        vs = assert_json(m.get("/vol/status"), 200)["Volumes"]["DataCenters"]
        counts = [v["DeleteCount"] for dc in vs.values() for rack in dc.values()
                  for node in rack.values() for v in node if v["Id"] == vid]
        return len(counts) == 2 and all(n == len(dead) for n in counts)
    wait_for("the master to see the deletions", master_knows, 2 * PULSE + 1)

    r = m.get("/vol/vacuum", params={"garbageThreshold": "0.1"}, timeout=60)
    body = assert_json(r, 200)
    assert "Topology" in body, body
    _check_vacuumed(c, vid, holders, before, live, dead, datas)
    # the volume is writable again afterwards
    body, _ = m.dir_assign(replication="001", count=1)
    c.put(body["url"], body["fid"], b"after vacuum")


def test_vacuum_right_after_deletes(make_cluster):
    """/vol/vacuum asks the volume servers for their garbage ratio (reference 4.6:
    VacuumVolumeCheck on every replica), so deletions made just before the call count
    even if no heartbeat has reported them yet."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc2", "r1")])
    m = c.master
    vid, url, holders, before, live, dead, datas = _dead_and_live(c, m)
    r = m.get("/vol/vacuum", params={"garbageThreshold": "0.1"}, timeout=60)
    assert_json(r, 200)
    _check_vacuumed(c, vid, holders, before, live, dead, datas)


def _master_volume(m, vid):
    """[(url, volume json)] of vid in the master's /vol/status."""
    vs = assert_json(m.get("/vol/status"), 200)["Volumes"]["DataCenters"]
    return [(url, v) for dc in vs.values() for rack in dc.values()
            for url, node in rack.items() for v in node if v["Id"] == vid]


def test_vacuum_skips_a_volume_missing_a_replica(make_cluster):
    """A volume with fewer live copies than its placement is not vacuumed (SeaweedFS
    topology_vacuum.go: "skip vacuuming: not enough copies"): compacting the survivor
    alone would leave the replicas at different compaction revisions."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1"), ("dc2", "r1")])
    m = c.master
    vid, url, holders, before, live, dead, datas = _dead_and_live(c, m)
    wait_for("the master to see the deletions", lambda: all(
        v["DeleteCount"] == len(dead) for _, v in _master_volume(m, vid))
        and len(_master_volume(m, vid)) == 2, 2 * PULSE + 1)
    victim = [h for h in holders if h.addr != url][0]
    survivor = c.by_addr(url)
    victim.kill()
    wait_for("the master to drop the killed replica",
             lambda: m.lookup_urls(vid) == {survivor.addr}, 3 * PULSE + 1)
    assert_json(m.get("/vol/vacuum", params={"garbageThreshold": "0.1"}, timeout=60), 200)
    v = survivor.volumes()[vid]
    b = before[survivor.addr]
    assert v["CompactRevision"] == b["CompactRevision"] and v["Size"] >= b["Size"], (
        "volume %d was vacuumed on its only live replica: %r -> %r" % (vid, b, v))


def test_vacuum_skips_read_only_volumes(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")])
    m = c.master
    vid, url, holders, before, live, dead, datas = _dead_and_live(c, m)
    for h in holders:
        r = h.admin("mark_readonly", volume=str(vid))
        assert r.status_code == 200, r.content
    wait_for("the master to see the volume read-only with its deletions", lambda: all(
        v["ReadOnly"] and v["DeleteCount"] == len(dead) for _, v in _master_volume(m, vid))
        and len(_master_volume(m, vid)) == 2, 2 * PULSE + 1)
    assert_json(m.get("/vol/vacuum", params={"garbageThreshold": "0.1"}, timeout=60), 200)
    for h in holders:
        v = h.volumes()[vid]
        b = before[h.addr]
        assert v["CompactRevision"] == b["CompactRevision"] and v["Size"] >= b["Size"], (
            "read-only volume %d was vacuumed on %s: %r -> %r" % (vid, h.addr, b, v))
        for f in live:
            c.assert_readable(h.addr, f, datas[f])


def test_vacuum_threshold(make_cluster):
    """Below the threshold nothing is vacuumed; without a garbageThreshold parameter
    the master's -garbageThreshold applies."""
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")], master_args=["-garbageThreshold=0.05"])
    m = c.master
    body, _ = m.dir_assign(replication="001", count=10)
    fid, url = body["fid"], body["url"]
    vid = fid_vid(fid)
    for i in range(10):
        c.put(url, "%s_%d" % (fid, i) if i else fid, rand_bytes(10000, i))
    r = c.http("DELETE", url, "/" + fid)
    assert r.status_code == 202
    holders = c.holders(vid)
    before = {h.addr: h.volumes()[vid] for h in holders}
    wait_for("a heartbeat with the deletion", lambda: [
        v["DeleteCount"] for _, v in _master_volume(m, vid)] == [1, 1], 2 * PULSE + 1)
    # garbage is about 1/10: 0.5 leaves it alone
    assert_json(m.get("/vol/vacuum", params={"garbageThreshold": "0.5"}), 200)
    for h in holders:
        v = h.volumes()[vid]
        assert v["Size"] == before[h.addr]["Size"], (before[h.addr], v)
        assert v["CompactRevision"] == before[h.addr]["CompactRevision"]
    # the master's -garbageThreshold=0.05 compacts it
    assert_json(m.get("/vol/vacuum"), 200)
    for h in holders:
        v = h.volumes()[vid]
        assert v["Size"] < before[h.addr]["Size"], (before[h.addr], v)
        assert v["CompactRevision"] == before[h.addr]["CompactRevision"] + 1, v
        c.assert_gone(h.addr, fid)
        c.assert_readable(h.addr, fid + "_1", rand_bytes(10000, 1))


def test_ttl_volumes_have_their_own_layout(make_cluster):
    c = make_cluster(FOUR)
    m = c.master
    plain, _ = m.dir_assign()
    plain_vids = c.all_volume_ids()

    body, _ = m.dir_assign(ttl="1m")
    fid, url = body["fid"], body["url"]
    vid = fid_vid(fid)
    assert vid not in plain_vids, "ttl=1m handed out a volume without ttl"
    ttl_vids = c.all_volume_ids() - plain_vids
    assert vid in ttl_vids
    assert len(ttl_vids) == 7, "a new 000 layout grows 7 volumes: %r" % sorted(ttl_vids)
    for v in c.running():
        for i, info in v.volumes().items():
            want = "1m" if i in ttl_vids else ""
            assert info["Ttl"] == want, (v.addr, info)
    # the layouts: one per ttl
    lays = {(lay["collection"], lay["replication"], lay["ttl"]): lay for lay in m.layouts()}
    assert ("", "000", "1m") in lays and ("", "000", "") in lays, lays
    assert set(lays[("", "000", "1m")]["writables"]) == ttl_vids
    assert vid in lays[("", "000", "1m")]["writables"]
    assert not set(lays[("", "000", "")]["writables"]) & ttl_vids

    # the blob, written with the ttl, reads back now
    data = rand_bytes(5000, 7)
    c.put(url, fid, data, params={"ttl": "1m"})
    c.assert_readable(url, fid, data)
    # assigns with the same ttl stay in the ttl layout
    for _ in range(5):
        b, _ = m.dir_assign(ttl="1m")
        assert fid_vid(b["fid"]) in ttl_vids
        b, _ = m.dir_assign()
        assert fid_vid(b["fid"]) in plain_vids

    # ttl strings are normalised: 120m is 2h, a layout of its own
    before = c.all_volume_ids()
    body, _ = m.dir_assign(ttl="120m")
    vid2 = fid_vid(body["fid"])
    assert vid2 not in before
    info = c.by_addr(body["url"]).volumes()[vid2]
    assert info["Ttl"] == "2h", info
    b, _ = m.dir_assign(ttl="2h")
    assert fid_vid(b["fid"]) in c.all_volume_ids() - before


def test_collection_delete(make_cluster):
    c = make_cluster(FOUR)
    m = c.master
    a, _ = m.dir_assign(collection="keep")
    b, _ = m.dir_assign(collection="gone", replication="010")
    keep_vids = {i for v in c.running() for i, info in v.volumes().items()
                 if info["Collection"] == "keep"}
    gone_vids = {i for v in c.running() for i, info in v.volumes().items()
                 if info["Collection"] == "gone"}
    assert fid_vid(a["fid"]) in keep_vids and fid_vid(b["fid"]) in gone_vids
    assert keep_vids and gone_vids and not keep_vids & gone_vids
    da, db = rand_bytes(3000, 1), rand_bytes(3000, 2)
    c.put(a["url"], a["fid"], da)
    c.put(b["url"], b["fid"], db)
    gone_holders = m.lookup_urls(fid_vid(b["fid"]))

    r = m.get("/col/delete", params={"collection": "gone"})
    assert r.status_code == 204, (r.status_code, r.content)
    assert r.content == b""
    for v in c.running():
        left = {i for i, info in v.volumes().items() if info["Collection"] == "gone"}
        assert not left, "%s still has volumes %r of the deleted collection" % (v.addr, left)
    for vid in gone_vids:
        body = m.lookup(vid, expect=404)
        assert "error" in body
    for addr in gone_holders:
        r = c.read(addr, b["fid"])
        assert r.status_code == 404, (addr, r.status_code)
    # it stays gone after the next heartbeats
    t_end = time.monotonic() + 1.5 * PULSE
    while time.monotonic() < t_end:
        assert not gone_vids & m.volume_ids()
        time.sleep(0.1)
    assert not [lay for lay in m.layouts() if lay["collection"] == "gone"], m.layouts()

    # the other collection is untouched
    c.assert_readable(a["url"], a["fid"], da)
    for vid in keep_vids:
        assert m.lookup_urls(vid)
    # deleting it again: it does not exist any more
    assert_json_error(m.get("/col/delete", params={"collection": "gone"}), 400)
    # a new assign for the collection grows fresh volumes
    b2, _ = m.dir_assign(collection="gone", replication="010")
    assert fid_vid(b2["fid"]) not in gone_vids
    c.put(b2["url"], b2["fid"], db)
