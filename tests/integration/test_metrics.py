"""GET /metrics on the master and the volume server (issue 15): every scrape parses
with a strict exposition-format parser (promtext.py), counters never go down between
two scrapes, and the numbers move as the requests made (N uploads: +N writes)."""

import math

import pytest
import requests

import promtext
from cluster import PULSE, make_cluster, wait_for  # noqa: F401  (pytest fixture)
from test_ha import make_ha  # noqa: F401  (pytest fixture)
from promtext import PromFormatError, total, value


def scrape(server):
    r = server.get("/metrics")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith(promtext.CONTENT_TYPE), r.headers
    return r.text


def test_parser_is_strict():
    """The parser used below refuses what Prometheus would (so the checks can fail)."""
    good = ("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 0.3\nh_count 2\n")
    assert value(promtext.parse(good), "a_total", k="v") == 1
    bad = [
        good + "a_total{k=\"v\"} 2\n",                                  # duplicate series
        good.replace("a_total{k", "b{k"),                               # untyped sample
        good.replace("counter\na_total", "counter\na_total ").replace("} 1", "}"),
        "# TYPE c counter\nc 1\n",                                      # counter not _total
        good.replace("h_count 2", "h_count 3"),                         # +Inf != count
        good.replace("h_bucket{le=\"+Inf\"} 2\n", ""),                  # no +Inf bucket
        good.replace("k=\"v\"", "k=v"),                                 # unquoted value
        good.replace("k=\"v\"", "k=\"a\\q\""),                          # bad escape
        good[:-1],                                                      # no final newline
        good + "# TYPE a_total counter\n",                              # TYPE twice
        good + "a_total{k=\"w\"} 1\n",                                  # family split
        good + "# random comment\n",
    ]
    for i, text in enumerate(bad):
        with pytest.raises(PromFormatError):
            promtext.parse(text)
            pytest.fail("bad text %d parsed: %r" % (i, text))
    with pytest.raises(PromFormatError):
        promtext.check_monotonic(good, good.replace("a_total{k=\"v\"} 1", "a_total{k=\"v\"} 0"))


def test_metrics_parse_and_move_with_uploads(make_cluster):
    c = make_cluster([("dc1", "r1")])
    m, vs = c.master, c.volumes[0]
    before_m, before_v = scrape(m), scrape(vs)
    pm, pv = promtext.parse(before_m), promtext.parse(before_v)
    assert value(pm, "kelp_master_is_leader") == 1
    assert value(pm, "kelp_master_volume_servers", state="live") == 1
    assert value(pm, "kelp_master_received_heartbeats_total") >= 1
    assert value(pv, "kelp_volume_server_max_volumes") == 8
    assert total(pv, "kelp_volume_server_disk_total_bytes") > 0

    n, size = 12, 1000
    fids = []
    for i in range(n):
        body, _ = m.dir_assign()
        c.put(body["url"], body["fid"], bytes([i]) * size)
        fids.append((body["url"], body["fid"]))
    for url, fid in fids:
        c.assert_readable(url, fid, bytes([fids.index((url, fid))]) * size)
    c.http("DELETE", fids[0][0], "/" + fids[0][1])

    after_m, after_v = scrape(m), scrape(vs)
    promtext.check_monotonic(before_m, after_m)
    promtext.check_monotonic(before_v, after_v)
    am, av = promtext.parse(after_m), promtext.parse(after_v)

    def moved(samples_a, samples_b, name, **labels):
        return total(samples_b, name, **labels) - total(samples_a, name, **labels)

    assert moved(pv, av, "kelp_volume_server_requests_total", type="write", code="201") == n
    assert moved(pv, av, "kelp_volume_server_requests_total", type="read", code="200") == n
    assert moved(pv, av, "kelp_volume_server_requests_total", type="delete", code="202") == 1
    assert moved(pv, av, "kelp_volume_server_request_duration_seconds_count",
                 type="write") == n
    assert moved(pv, av, "kelp_volume_server_received_bytes_total") >= n * size
    assert moved(pv, av, "kelp_volume_server_sent_bytes_total") >= n * size
    assert moved(pm, am, "kelp_master_requests_total", type="assign", code="200") == n
    assert moved(pm, am, "kelp_master_request_duration_seconds_count", type="assign") == n
    assert total(av, "kelp_volume_server_files") == n - 1
    assert total(av, "kelp_volume_server_volume_size_bytes") >= (n - 1) * size
    assert total(av, "kelp_volume_server_volumes") >= 1
    assert value(av, "kelp_volume_server_needle_map_bytes") > 0
    grown = value(am, "kelp_master_volume_growth_total", result="success")
    assert grown >= 1
    assert total(am, "kelp_master_volumes") == grown
    assert total(am, "kelp_master_volume_layout_writable") == grown
    assert total(am, "kelp_master_under_replicated_volumes") == 0
    assert not math.isnan(value(am, "kelp_master_raft_term"))
    # The histogram's sum is in seconds: 12 local writes take well under a minute.
    assert 0 < moved(pv, av, "kelp_volume_server_request_duration_seconds_sum",
                     type="write") < 60


def test_master_counts_dead_servers_and_under_replicated_volumes(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")])
    m = c.master
    m.grow(count=2, replication="001")
    wait_for("4 volume copies on the servers",
             lambda: sum(len(v.volumes()) for v in c.volumes) == 4, 10)
    c.volumes[1].kill()

    def counted():
        p = promtext.parse(scrape(m))
        dead = value(p, "kelp_master_volume_servers", state="dead")
        under = total(p, "kelp_master_under_replicated_volumes", replication="001")
        return (dead, under) == (1, 2) or None
    wait_for("the master to count 1 dead server and 2 under-replicated volumes", counted,
             5 * PULSE + 5)
    d = m.get("/ui/data").json()
    vols = {v["id"]: v for v in d["volumes"]}
    assert len(vols) == 2 and all(v["live"] == 1 and v["wanted"] == 2 for v in vols.values())
    assert [n["alive"] for n in sorted(d["nodes"], key=lambda n: n["url"] != c.volumes[0].addr)] \
        == [True, False]


def test_status_routes_follow_the_white_list(request, kelp_bin, tmp_path):
    """With a white list (and -jwtKey), /metrics and the pages answer only its
    addresses and servers proving the key; the master's page still gets the volume
    servers' request counts (its sampler signs its requests)."""
    from cluster import Master
    from conftest import VolumeServer
    from test_security import KEY, bearer, server_token

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
        for srv, paths in ((m, ("/metrics", "/", "/ui/data", "/ui/events")),
                           (vs, ("/metrics", "/ui", "/ui/stats", "/ui/events"))):
            for path in paths:
                r = srv.get(path, headers={"Accept": "text/html"})
                assert r.status_code == 401, (srv.name, path, r.status_code, r.text[:200])
                r = srv.get(path, headers=bearer(server_token("GET", path)))
                assert r.status_code == 200, (srv.name, path, r.status_code, r.text[:200])
        promtext.parse(m.get("/metrics", headers=bearer(server_token("GET", "/metrics"))).text)

        def sampled():
            d = m.get("/ui/data", headers=bearer(server_token("GET", "/ui/data"))).json()
            return len(d["rates"]) >= 1 or None
        wait_for("the page's sampler to get the volume server's counts", sampled, 15)
        assert "refused" not in vs.log_text()
    finally:
        vs.stop()
        m.stop()


def test_public_status_opens_metrics_and_pages(make_cluster):
    c = make_cluster([("dc1", "r1")], master_args=["-whiteList=10.9.9.9", "-publicStatus"],
                     volume_args=["-whiteList=10.9.9.9", "-publicStatus"])
    promtext.parse(scrape(c.master))
    promtext.parse(scrape(c.volumes[0]))
    r = c.volumes[0].get("/ui")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")


def test_root_is_a_page_for_browsers_and_json_when_asked(make_cluster):
    c = make_cluster([("dc1", "r1")])
    r = c.master.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "<title>kelp cluster</title>" in r.text
    r = c.master.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.json()["Topology"]["DataCenters"]
    r = c.master.get("/ui/data")
    d = r.json()
    assert d["isLeader"] and d["leader"] == c.master.addr
    assert [n["url"] for n in d["nodes"]] == [c.volumes[0].addr]
    # a volume growth is an event on the page
    c.master.grow(count=1)
    ev = c.master.get("/ui/events").json()["events"]
    assert any(e["kind"] == "growth" for e in ev), ev
    since = ev[-1]["seq"]
    assert c.master.get("/ui/events", params={"since": since}).json()["events"] == []
    r = requests.get(c.volumes[0].url("/ui/stats"), timeout=5)
    assert set(r.json()) == {"reads", "writes"}


def documented_metrics():
    """Metric names of docs/operations.md's table (first column)."""
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "operations.md")) as f:
        text = f.read()
    return set(re.findall(r"^\| `(kelp_[a-z_]+)` \|", text, re.M)), root


def test_every_metric_is_documented_and_the_dashboard_uses_real_ones(make_cluster):
    import os
    import re
    c = make_cluster([("dc1", "r1")])
    body, _ = c.master.dir_assign()   # a growth and requests: every family has series
    documented, root = documented_metrics()
    served = set()
    for srv in (c.master, c.volumes[0]):
        served |= set(promtext.types_of(scrape(srv)))
    missing = {n for n in served if n not in documented}
    assert not missing, "metrics served but not in docs/operations.md: %s" % sorted(missing)
    for doc in ("grafana-dashboard.json", "prometheus.yml"):
        with open(os.path.join(root, "docs", doc)) as f:
            used = set(re.findall(r"kelp_[a-z_]+", f.read()))
        used = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
        unknown = used - documented
        assert not unknown, "%s uses undocumented metrics %s" % (doc, sorted(unknown))


def test_ha_masters_metrics_and_page(make_ha):
    """Three masters: one is_leader, all on one Raft term; every master serves the page
    from its own view, names the leader, and sees a killed peer master as down."""
    from ha_cluster import http_get
    from test_ha import _small_cluster

    cl, leader = _small_cluster(make_ha, n_masters=3, n_volumes=1)
    samples = {m.addr: promtext.parse(http_get(m.addr, "/metrics").text) for m in cl.masters}
    assert sorted(value(s, "kelp_master_is_leader") for s in samples.values()) == [0, 0, 1]
    assert value(samples[leader.addr], "kelp_master_is_leader") == 1
    terms = {value(s, "kelp_master_raft_term") for s in samples.values()}
    assert len(terms) == 1 and terms.pop() >= 1
    follower = [m for m in cl.masters if m is not leader][0]
    d = http_get(follower.addr, "/ui/data").json()
    assert d["leader"] == leader.addr and not d["isLeader"] and d["self"] == follower.addr
    r = http_get(follower.addr, "/", headers={"Accept": "text/html"})
    assert r.status_code == 200 and "<title>kelp cluster</title>" in r.text

    def peers_ok(m, want):
        peers = {p["url"]: p for p in http_get(m.addr, "/ui/data").json()["peers"]}
        return {u: p["ok"] for u, p in peers.items() if p["checked"] or p["self"]} == want
    everyone = {m.addr: True for m in cl.masters}
    wait_for("the leader's page to see every master answer",
             lambda: peers_ok(leader, everyone) or None, 15)
    victim = [m for m in cl.masters if m is not leader and m is not follower][0]
    victim.kill()
    wait_for("the leader's page to see the killed master down",
             lambda: peers_ok(leader, dict(everyone, **{victim.addr: False})) or None, 15)
