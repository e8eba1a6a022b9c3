"""The master's HTTP API with real volume servers behind it: assign -> upload -> lookup
-> read -> delete, batch assigns, /submit, /<fid> redirects, parameter errors, running
out of volume slots, and `kelp server` (master and volume server in one process).

Behaviour follows the SeaweedFS reference, section 1 (master API) and 2 (volume
server), and cluster/master/master.c.
"""

import subprocess

import pytest
import requests

from cluster import KelpServer, fid_cookie, fid_key, fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import assert_json, assert_json_error, etag_of, rand_bytes

TWO_DCS = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1"), ("dc2", "r2")]


def test_assign_upload_lookup_read_delete(make_cluster):
    c = make_cluster(TWO_DCS)
    m = c.master
    body, r = m.dir_assign()
    assert body["count"] == 1
    fid, url = body["fid"], body["url"]
    assert body["publicUrl"] == url  # no -publicUrl given: the same address
    vid = fid_vid(fid)
    assert fid_key(fid) > 0
    # url is a server of this cluster that holds the volume
    holder = c.by_addr(url)
    assert vid in holder.volumes()

    data = rand_bytes(10000, 1)
    r = c.put(url, fid, data)
    up = r.json()
    assert up["size"] == len(data)
    assert up["eTag"] == etag_of(data)

    # lookup by volume id, by full fid (volumeId=<fid>), and by fileId
    for params in ({"volumeId": str(vid)}, {"volumeId": fid}, {"fileId": fid}):
        lk = assert_json(m.get("/dir/lookup", params=params), 200)
        assert "error" not in lk, lk
        urls = [loc["url"] for loc in lk["locations"]]
        assert urls == [url], (params, lk)
        loc = lk["locations"][0]
        assert loc["publicUrl"] == url
        assert loc["dataCenter"] == holder.dc
    lk = m.lookup(vid)
    assert lk["volumeOrFileId"] == str(vid)

    r = c.assert_readable(url, fid, data)
    assert r.headers["ETag"] == '"%s"' % etag_of(data)

    r = c.http("DELETE", url, "/" + fid)
    assert r.status_code == 202, r.content
    assert r.json()["size"] > 0
    c.assert_gone(url, fid)
    # the volume is still there, only the blob is gone
    assert m.lookup_urls(vid) == {url}


def test_assign_count_reserves_consecutive_keys(make_cluster):
    c = make_cluster(TWO_DCS)
    m = c.master
    body, _ = m.dir_assign(count=3)
    assert body["count"] == 3
    fid, url = body["fid"], body["url"]
    blobs = {fid: rand_bytes(3000, 10), fid + "_1": rand_bytes(4000, 11),
             fid + "_2": rand_bytes(5000, 12)}
    for f, data in blobs.items():
        c.put(url, f, data)
    for f, data in blobs.items():
        c.assert_readable(url, f, data)
    # fid_N is key+N: the same blob under its plain fid (same cookie)
    cookie = fid_cookie(fid)
    key = fid_key(fid)
    for n in (1, 2):
        plain = "%d,%x%08x" % (fid_vid(fid), key + n, cookie)
        c.assert_readable(url, plain, blobs["%s_%d" % (fid, n)])
    # the next assign does not hand out the reserved keys again
    nxt, _ = m.dir_assign()
    assert fid_key(nxt["fid"]) >= key + 3, (fid, nxt)
    # deleting one of them leaves the others
    r = c.http("DELETE", url, "/" + fid + "_1")
    assert r.status_code == 202, r.content
    c.assert_gone(url, fid + "_1")
    c.assert_readable(url, fid, blobs[fid])
    c.assert_readable(url, fid + "_2", blobs[fid + "_2"])


def test_assign_takes_a_form_body(make_cluster):
    """Parameters may come in a url-encoded POST body too (Go's FormValue)."""
    c = make_cluster(TWO_DCS[:3])
    m = c.master
    r = m.post("/dir/assign", data={"replication": "001", "count": "2",
                                    "collection": "formc"})
    body = assert_json(r, 200)
    assert body["count"] == 2
    vid = fid_vid(body["fid"])
    holders = c.holders(vid)
    assert len(holders) == 2
    for h in holders:
        info = h.volumes()[vid]
        assert (info["ReplicaPlacement"], info["Collection"]) == ("001", "formc"), info
    r = m.post("/dir/lookup", data={"volumeId": str(vid)})
    assert {loc["url"] for loc in assert_json(r, 200)["locations"]} == {
        h.addr for h in holders}


def test_white_list(make_cluster):
    # only 127.0.0.2 may change things: requests from 127.0.0.1 are refused with 401
    # (-publicStatus: the status pages stay readable, see test_security.py for them)
    c = make_cluster([("dc1", "r1")], master_args=["-whiteList=127.0.0.2", "-publicStatus"])
    m = c.master
    m.dir_assign(expect=401)
    m.grow(expect=401, count=1)
    assert_json_error(m.get("/vol/vacuum"), 401)
    assert_json_error(m.get("/col/delete", params={"collection": "x"}), 401)
    assert_json_error(m.post("/submit", files={"file": ("a", b"x")}), 401)
    assert c.all_volume_ids() == set()
    # reads are not guarded; the volume server still registered through heartbeats
    assert set(m.data_nodes()) == {c.volumes[0].addr}
    m.lookup(1, expect=404)


def test_white_list_allows_listed(make_cluster):
    c = make_cluster([("dc1", "r1")], master_args=["-whiteList=127.0.0.2,127.0.0.1"])
    body, _ = c.master.dir_assign()
    c.put(body["url"], body["fid"], b"ok")


def test_assign_in_a_data_center_and_rack(make_cluster):
    c = make_cluster(TWO_DCS)
    m = c.master
    for dc, rack in (("dc2", None), ("dc1", "r2"), ("dc2", "r1"), ("dc1", None)):
        params = {"dataCenter": dc}
        if rack:
            params["rack"] = rack
        for _ in range(3):
            body, _ = m.dir_assign(**params)
            srv = c.by_addr(body["url"])
            assert srv.dc == dc, (params, body, srv.dc)
            if rack:
                assert srv.rack == rack, (params, body, srv.rack)
            c.put(body["url"], body["fid"], b"placed")


def test_status_endpoints(make_cluster):
    c = make_cluster(TWO_DCS, max=3)
    m = c.master
    m.grow(count=2, replication="010")
    st = m.dir_status()
    assert st["Version"] and st["TopologyId"]
    topo = st["Topology"]
    assert topo["Max"] == 15 and topo["Free"] == 11, topo
    dcs = {dc["Id"]: dc for dc in topo["DataCenters"]}
    assert set(dcs) == {"dc1", "dc2"}
    assert {r["Id"] for r in dcs["dc1"]["Racks"]} == {"r1", "r2"}
    assert dcs["dc1"]["Max"] == 9 and dcs["dc2"]["Max"] == 6
    nodes = m.data_nodes()
    assert set(nodes) == {v.addr for v in c.volumes}
    for v in c.volumes:
        n = nodes[v.addr]
        assert (n["dc"], n["rack"]) == (v.dc, v.rack)
        assert n["Max"] == 3
        assert n["Volumes"] == len(v.volumes())
        assert n["PublicUrl"] == v.addr
    lays = [lay for lay in topo["Layouts"] if lay["replication"] == "010"]
    assert len(lays) == 1 and len(lays[0]["writables"]) == 2, topo["Layouts"]

    vs = assert_json(m.get("/vol/status"), 200)["Volumes"]
    assert vs["Max"] == 15 and vs["Free"] == 11
    held = {}
    for dc, racks in vs["DataCenters"].items():
        for rack, dnodes in racks.items():
            for url, vols in dnodes.items():
                assert (c.by_addr(url).dc, c.by_addr(url).rack) == (dc, rack)
                for v in vols:
                    assert v["ReplicaPlacement"] == "010"
                    held.setdefault(v["Id"], set()).add(url)
    assert len(held) == 2 and all(len(u) == 2 for u in held.values()), held

    cs = assert_json(m.get("/cluster/status"), 200)
    assert cs.get("IsLeader") is True, cs
    assert cs.get("Leader") == m.addr, cs
    assert cs.get("MaxVolumeId") == max(held), cs
    assert m.get("/healthz").status_code == 200


def test_submit_to_master(make_cluster):
    c = make_cluster(TWO_DCS[:3])
    m = c.master
    data = rand_bytes(20000, 3)
    r = m.post("/submit", files={"file": ("hello.bin", data, "application/octet-stream")})
    body = assert_json(r, 201)
    assert "error" not in body, body
    fid = body["fid"]
    assert body["fileName"] == "hello.bin"
    assert body["size"] == len(data)
    assert body["eTag"] == etag_of(data)
    addr, path = body["fileUrl"].split("/", 1)
    assert path == fid
    assert m.lookup_urls(fid_vid(fid)) == {addr}
    r = c.assert_readable(addr, fid, data)
    assert 'filename="hello.bin"' in r.headers.get("Content-Disposition", "")

    # only POST
    assert_json_error(m.get("/submit"), 405)


def test_master_redirects_fid_to_a_volume_server(make_cluster):
    c = make_cluster(TWO_DCS[:3])
    m = c.master
    body, _ = m.dir_assign(replication="001")
    fid = body["fid"]
    data = rand_bytes(5000, 4)
    c.put(body["url"], fid, data)
    holders = m.lookup_urls(fid_vid(fid))
    assert len(holders) == 2
    r = m.get("/" + fid)
    assert r.status_code == 308, (r.status_code, r.content)
    loc = r.headers["Location"]
    assert loc in {"http://%s/%s" % (h, fid) for h in holders}, loc
    r = m.get("/" + fid, allow_redirects=True)
    assert r.status_code == 200 and r.content == data
    # the other URL forms and the query string are kept (reference 1.12)
    vid, kc = fid.split(",")
    for path in ("/%s/%s" % (vid, kc), "/%s/%s/name.txt" % (vid, kc)):
        r = m.get(path)
        assert r.status_code == 308, (path, r.status_code, r.content)
        assert r.headers["Location"] in {"http://%s%s" % (h, path) for h in holders}, (
            path, r.headers["Location"])
    r = m.get("/" + fid, params={"dl": "true"})
    assert r.status_code == 308
    assert r.headers["Location"].endswith("/%s?dl=true" % fid), \
        "the query string is lost: Location %r" % r.headers["Location"]

    # unknown volume: 404 JSON error
    assert_json_error(m.get("/9999,0123456789"), 404)


def test_bad_parameters(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc2", "r1")])
    m = c.master

    # assign: bad replication / ttl are 406, an unknown data center is 400
    for rep in ("9x", "1234", "300", "x"):
        m.dir_assign(expect=406, replication=rep)
    for ttl in ("5q", "m", "1mm", "-1m"):
        m.dir_assign(expect=406, ttl=ttl)
    m.dir_assign(expect=400, dataCenter="nowhere")

    # grow: count missing or not a number; bad options as for assign
    for params in ({}, {"count": ""}, {"count": "abc"}, {"count": "1x"}):
        r = m.get("/vol/grow", params=params)
        assert r.status_code in (400, 406), (params, r.status_code, r.content)
        assert_json_error(r, r.status_code)
    m.grow(expect=406, count=1, replication="9x")
    m.grow(expect=406, count=1, ttl="5q")
    m.grow(expect=400, count=1, dataCenter="nowhere")

    # lookup: no volume id is 400; an unknown volume 404 with the id echoed
    assert_json_error(m.get("/dir/lookup"), 400)
    assert_json_error(m.get("/dir/lookup", params={"volumeId": ""}), 400)
    body = m.lookup(4242, expect=404)
    assert body.get("volumeOrFileId") == "4242"
    assert "4242" in body["error"]
    body = assert_json_error(m.get("/dir/lookup", params={"fileId": "4242,0123456789"}), 404)

    # vacuum: a threshold that is not a number
    assert_json_error(m.get("/vol/vacuum", params={"garbageThreshold": "abc"}), 406)

    # col/delete: no collection, unknown collection
    assert_json_error(m.get("/col/delete"), 400)
    assert_json_error(m.get("/col/delete", params={"collection": "nosuch"}), 400)

    # nothing of this changed the topology: no volume was created
    assert c.all_volume_ids() == set()
    assert m.volume_ids() == set()


def test_no_free_slots_is_406(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")], max=1)
    m = c.master
    st = m.dir_status()["Topology"]
    assert (st["Max"], st["Free"]) == (2, 2)

    # 3 volumes do not fit in 2 slots; 2 copies of 2 volumes neither
    m.grow(expect=406, count=3)
    m.grow(expect=406, count=2, replication="001")
    assert c.all_volume_ids() == set()

    assert m.grow(count=2) == {"count": 2}
    ids = c.all_volume_ids()
    assert len(ids) == 2
    assert all(len(v.volumes()) == 1 for v in c.volumes)  # one on each server
    st = m.dir_status()["Topology"]
    assert (st["Max"], st["Free"]) == (2, 0)

    m.grow(expect=406, count=1)
    # a layout with no volume yet cannot grow: 406
    m.dir_assign(expect=406, collection="other")
    m.dir_assign(expect=406, replication="001")
    m.dir_assign(expect=406, ttl="3d")
    # the default layout has the two volumes
    body, _ = m.dir_assign()
    assert fid_vid(body["fid"]) in ids
    c.put(body["url"], body["fid"], b"still works")
    assert c.all_volume_ids() == ids


def test_kelp_server_end_to_end(kelp_bin, tmp_path, request):
    registry = request.node.__dict__.setdefault("_kelp_servers", [])
    srv = KelpServer(kelp_bin, tmp_path, tmp_path / "data")
    registry.append(srv)
    try:
        srv.start()
        assert srv.port != srv.volume_port
        vaddr = "127.0.0.1:%d" % srv.volume_port

        def registered():
            st = assert_json(srv.get("/dir/status"), 200)
            return [dn["Url"] for dc in st["Topology"]["DataCenters"]
                    for rk in dc["Racks"] for dn in rk["DataNodes"]] == [vaddr]
        wait_for("kelp server's volume server in /dir/status", registered, 10)

        r = srv.get("/dir/assign")
        body = assert_json(r, 200)
        fid = body["fid"]
        assert body["url"] == vaddr
        data = rand_bytes(30000, 5)
        r = requests.put("http://%s/%s" % (vaddr, fid), data=data, timeout=10)
        assert r.status_code == 201, r.content
        r = requests.get("http://%s/%s" % (vaddr, fid), timeout=10)
        assert r.status_code == 200 and r.content == data
        lk = assert_json(srv.get("/dir/lookup", params={"volumeId": fid}), 200)
        assert [loc["url"] for loc in lk["locations"]] == [vaddr]
        # through the master's redirect too
        r = srv.get("/" + fid, allow_redirects=True)
        assert r.status_code == 200 and r.content == data
        r = requests.delete("http://%s/%s" % (vaddr, fid), timeout=10)
        assert r.status_code == 202, r.content
        r = requests.get("http://%s/%s" % (vaddr, fid), timeout=10)
        assert r.status_code == 404, (r.status_code, r.content)
        assert srv.stop() == 0
    finally:
        crashed = srv.cleanup()
    assert crashed is None, crashed
    assert srv.sanitizer_report() is None, srv.sanitizer_report()


@pytest.mark.parametrize("batch", [1, 16])
def test_kelp_benchmark(make_cluster, tmp_path, batch):
    """kelp benchmark writes and reads back every blob, with an assign per file or with
    -assignBatch (fid, fid_1, ... of one assign); none fails, every read is checked."""
    c = make_cluster([("dc1", "r1")])
    p = subprocess.run([c.kelp_bin, "benchmark", "-master=" + c.master.addr, "-n", "200",
                        "-c", "4", "-size", "100", "-assignBatch", str(batch),
                        "-list=" + str(tmp_path / "list")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("Completed requests:     200") == 2, p.stdout
    assert p.stdout.count("Failed requests:        0") == 2, p.stdout
    fids = (tmp_path / "list").read_text().split()
    assert len(set(fids)) == 200  # fid_N is key + N: listed as a fid of its own
    # the reads through the client library (threads) instead of the read loop
    p = subprocess.run([c.kelp_bin, "benchmark", "-master=" + c.master.addr, "-n", "200",
                        "-c", "4", "-write=false", "-readLoop=false",
                        "-list=" + str(tmp_path / "list")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Completed requests:     200" in p.stdout and "Failed requests:        0" in p.stdout
    # a missing blob is a failed read with its reason, not a crash
    (tmp_path / "bad").write_text(fids[0][:fids[0].index(",")] + ",99999999deadbeef\n")
    p = subprocess.run([c.kelp_bin, "benchmark", "-master=" + c.master.addr, "-n", "3",
                        "-write=false", "-list=" + str(tmp_path / "bad")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Failed requests:        3" in p.stdout, p.stdout
    assert "HTTP 404" in p.stdout, p.stdout
    p = subprocess.run([c.kelp_bin, "benchmark", "-master=" + c.master.addr,
                        "-assignBatch", "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "-assignBatch" in p.stderr
