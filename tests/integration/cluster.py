"""Helpers and fixtures for the cluster integration tests (test_cluster_*.py).

A cluster is one `kelp master` and several `kelp volume` servers on 127.0.0.1, each
with -port=0 and a ready file, each in its own process group. Process control (start,
ready file, SIGTERM/SIGKILL of the group, stderr log, crash and sanitizer checks) is
the VolumeServer class of conftest.py; the classes here only change the command line
and add the master's HTTP API.

Use the `make_cluster` fixture (import it into the test module):

    from cluster import make_cluster  # noqa: F401  (pytest fixture)

    def test_x(make_cluster):
        c = make_cluster([("dc1", "r1"), ("dc1", "r2"), ("dc2", "r1")])
        body, r = c.master.dir_assign()

Every wait is a bounded poll (wait_for); nothing sleeps blindly.
"""

import os
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, ServerError, VolumeServer, assert_json, assert_json_error

PULSE = 1                 # -pulseSeconds of every master and volume server here
NODE_TIMEOUT = 10.0       # seconds for volume servers to show up in /dir/status
POLL = 0.05               # seconds between two looks of a bounded poll


def poll_until(what, fn, timeout, interval=POLL, tolerated=(), give_up=None):
    """Calls fn() until it returns a true value, which is returned. The exceptions in
    `tolerated` count as "not yet". After `timeout` seconds, calls give_up(message)
    (pytest.fail by default) with `what` and the last value or exception."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except tolerated as e:
            last = e
        if time.monotonic() > deadline:
            (give_up or pytest.fail)("timed out after %.1f s waiting for %s; last: %r" % (
                timeout, what, last))
        time.sleep(interval)


def wait_for(what, fn, timeout, interval=POLL):
    """poll_until that fails the test; HTTP errors, failed asserts and unreadable
    replies count as "not yet"."""
    return poll_until(what, fn, timeout, interval,
                      (requests.RequestException, AssertionError, ValueError))


def fid_vid(fid):
    return int(fid.split(",", 1)[0])


def fid_key(fid):
    """The needle key of a fid "<vid>,<key hex><8 cookie hex>[_N]"."""
    kc = fid.split(",", 1)[1].split("_", 1)[0]
    return int(kc[:-8], 16)


def fid_cookie(fid):
    kc = fid.split(",", 1)[1].split("_", 1)[0]
    return int(kc[-8:], 16)


class Master(VolumeServer):
    """One `kelp master` process; process control inherited from VolumeServer. After
    its first start it keeps its port, so a restart is the same master to the volume
    servers."""

    def __init__(self, kelp_bin, workdir, mdir, args=(), name="master"):
        super().__init__(kelp_bin, workdir, [mdir], max=0, args=args, name=name)
        self.mdir = str(mdir)

    def command(self):
        return [self.kelp_bin, "master", "-port=%d" % (self.port or 0),
                "-readyFile=" + self.ready_path,
                "-mdir=" + self.mdir, "-ip=" + self.ip, "-pulseSeconds=%d" % PULSE,
                "-vacuumIntervalSeconds=0"] + self.args

    @property
    def addr(self):
        return "%s:%d" % (self.ip, self.port)

    # --- master API

    def dir_assign(self, expect=200, **params):
        """GET /dir/assign; returns (json body, response). Asserts the status."""
        r = self.get("/dir/assign", params=params)
        if expect == 200:
            body = assert_json(r, 200)
            for k in ("fid", "url", "publicUrl", "count"):
                assert k in body, "assign reply without %r: %r" % (k, body)
            assert "error" not in body, body
        else:
            body = assert_json_error(r, expect)
        return body, r

    def lookup(self, vid, expect=200, **params):
        """/dir/lookup?volumeId=vid; returns the JSON body (status asserted)."""
        r = self.get("/dir/lookup", params=dict(volumeId=str(vid), **params))
        if expect == 200:
            return assert_json(r, 200)
        return assert_json_error(r, expect)

    def lookup_urls(self, vid):
        """Set of location urls of vid, or None when the master answers 404."""
        r = self.get("/dir/lookup", params={"volumeId": str(vid)})
        if r.status_code == 404:
            return None
        body = assert_json(r, 200)
        return {loc["url"] for loc in body["locations"]}

    def dir_status(self):
        return assert_json(self.get("/dir/status"), 200)

    def data_nodes(self):
        """{url: {"dc":..., "rack":..., node json...}} from /dir/status."""
        out = {}
        topo = self.dir_status()["Topology"]
        for dc in topo.get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for dn in rack.get("DataNodes") or []:
                    out[dn["Url"]] = dict(dn, dc=dc["Id"], rack=rack["Id"])
        return out

    def volume_ids(self):
        """Every volume id /dir/status lists on a data node."""
        ids = set()
        for dn in self.data_nodes().values():
            ids |= parse_id_ranges(dn.get("VolumeIds", ""))
        return ids

    def layouts(self):
        return self.dir_status()["Topology"].get("Layouts") or []

    def grow(self, expect=200, **params):
        r = self.get("/vol/grow", params=params)
        if expect == 200:
            return assert_json(r, 200)
        return assert_json_error(r, expect)


def parse_id_ranges(s):
    """"1-3 7" -> {1, 2, 3, 7}."""
    ids = set()
    for part in (s or "").split():
        if "-" in part:
            a, b = part.split("-", 1)
            ids.update(range(int(a), int(b) + 1))
        else:
            ids.add(int(part))
    return ids


class ClusterVolume(VolumeServer):
    """One `kelp volume` server of a cluster. After its first start it keeps its port,
    so a restart rejoins under the same url."""

    def __init__(self, kelp_bin, workdir, dirs, master, dc, rack, max=8, args=(), name="vs"):
        super().__init__(kelp_bin, workdir, dirs, max=max, args=args, name=name)
        self.master = master
        self.dc = dc
        self.rack = rack

    def command(self):
        cmd = super().command()
        if self.port:
            cmd = [("-port=%d" % self.port) if a == "-port=0" else a for a in cmd]
        extra = ["-master=" + self.master.addr, "-pulseSeconds=%d" % PULSE]
        if self.dc:
            extra.append("-dataCenter=" + self.dc)
        if self.rack:
            extra.append("-rack=" + self.rack)
        return cmd + extra

    @property
    def addr(self):
        return "%s:%d" % (self.ip, self.port)

    def volumes(self):
        """{vid: volume json} from this server's /status."""
        return {v["Id"]: v for v in self.status().get("Volumes") or []}


class Cluster:
    def __init__(self, kelp_bin, tmp_path, registry):
        self.kelp_bin = kelp_bin
        self.tmp_path = tmp_path
        self.registry = registry   # every process, for cleanup and failure reports
        self.master = None
        self.volumes = []

    def start_master(self, args=()):
        m = Master(self.kelp_bin, self.tmp_path, self.tmp_path / "mdir", args=args)
        self.registry.append(m)
        m.start()
        self.master = m
        return m

    def add_volume(self, dc, rack, max=8, args=(), start=True, name=None, wait=True):
        name = name or "vs%d-%s-%s" % (len(self.volumes), dc, rack)
        vs = ClusterVolume(self.kelp_bin, self.tmp_path, [self.tmp_path / (name + "-data")],
                           self.master, dc, rack, max=max, args=args, name=name)
        self.registry.append(vs)
        self.volumes.append(vs)
        if start:
            vs.start()
            if wait:
                self.wait_nodes()
        return vs

    def running(self):
        return [v for v in self.volumes if v.alive()]

    def wait_nodes(self, servers=None, timeout=NODE_TIMEOUT):
        """Polls /dir/status until it lists exactly the given servers (default: every
        running one) with their data center and rack."""
        servers = self.running() if servers is None else servers
        want = {s.addr: (s.dc or "DefaultDataCenter", s.rack or "DefaultRack")
                for s in servers}

        def check():
            nodes = self.master.data_nodes()
            have = {u: (n["dc"], n["rack"]) for u, n in nodes.items()}
            return have == want
        wait_for("/dir/status to list %s" % sorted(want.items()), check, timeout)

    def settle(self, timeout=2 * PULSE + 1):
        """Waits until the master's /dir/status lists, for every running server,
        exactly the volumes that server's own /status lists (e.g. after a master
        restart, until every volume server has sent its full volume list)."""
        def same():
            truth = {v.addr: set(v.volumes()) for v in self.running()}
            view = {u: parse_id_ranges(n.get("VolumeIds", ""))
                    for u, n in self.master.data_nodes().items()}
            return truth == view or None
        wait_for("the master's view of the volumes to match the servers'", same, timeout)

    def by_addr(self, addr):
        for v in self.volumes:
            if v.addr == addr:
                return v
        raise AssertionError("no volume server of this cluster has url %r (have %r)" % (
            addr, [v.addr for v in self.volumes]))

    def holders(self, vid):
        """The running servers whose /status lists volume vid."""
        return [v for v in self.running() if vid in v.volumes()]

    def all_volume_ids(self):
        ids = set()
        for v in self.running():
            ids |= set(v.volumes())
        return ids

    def url(self, addr, path):
        return "http://%s/%s" % (addr, path.lstrip("/"))

    def http(self, method, addr, path, **kw):
        """One request to ip:port `addr` on a fresh connection (no redirects)."""
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.url(addr, path), **kw)

    def put(self, addr, fid, data, expect=201, **kw):
        """PUT /<fid> on addr; asserts the status (201 by default)."""
        r = self.http("PUT", addr, "/" + fid, data=data, **kw)
        assert r.status_code == expect, "PUT %s/%s: expected %d, got %d: %r" % (
            addr, fid, expect, r.status_code, r.content[:300])
        return r

    def read(self, addr, fid, **kw):
        return self.http("GET", addr, "/" + fid, **kw)

    def assert_readable(self, addr, fid, data):
        r = self.read(addr, fid)
        assert r.status_code == 200, "GET %s/%s: %d %r" % (addr, fid, r.status_code,
                                                           r.content[:300])
        assert r.content == data, "GET %s/%s: %d bytes, not the %d written" % (
            addr, fid, len(r.content), len(data))
        return r

    def assert_gone(self, addr, fid):
        r = self.read(addr, fid)
        assert r.status_code == 404, "GET %s/%s of a deleted blob: %d %r" % (
            addr, fid, r.status_code, r.content[:300])
        return r


@pytest.fixture
def make_cluster(request, kelp_bin, tmp_path):
    """Factory: make_cluster(nodes, master_args=(), volume_args=(), max=8) starts a
    master and one volume server per (dc, rack) of `nodes` and waits until the master
    lists them all. Every process is SIGKILLed at teardown; a process that died on its
    own, or a sanitizer report in a log, fails the test then."""
    registry = request.node.__dict__.setdefault("_kelp_servers", [])
    clusters = []

    def factory(nodes, master_args=(), volume_args=(), max=8):
        c = Cluster(kelp_bin, tmp_path, registry)
        clusters.append(c)
        c.start_master(master_args)
        for dc, rack in nodes:
            c.add_volume(dc, rack, max=max, args=volume_args, wait=False)
        c.wait_nodes()
        return c

    yield factory

    problems = [p for p in (s.cleanup() for s in registry) if p]
    for s in registry:
        report = s.sanitizer_report()
        if report:
            problems.append("sanitizer report in %s's stderr:\n%s" % (s.name, report))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class KelpServer(VolumeServer):
    """`kelp server`: a master and a volume server in one process. `port` is the
    master's; `volume_port` the volume server's."""

    def __init__(self, kelp_bin, workdir, datadir, args=(), name="server"):
        super().__init__(kelp_bin, workdir, [datadir], max=0, args=args, name=name)
        self.volume_ready_path = os.path.join(self.workdir, "%s.volume.ready" % name)
        self.volume_port = None

    def command(self):
        return [self.kelp_bin, "server", "-dir=" + self.dirs[0], "-ip=" + self.ip,
                "-master.port=0", "-volume.port=0", "-readyFile=" + self.ready_path,
                "-volume.readyFile=" + self.volume_ready_path,
                "-pulseSeconds=%d" % PULSE] + self.args

    def start(self, timeout=10.0, cmd=None):
        super().start(timeout=timeout, cmd=cmd)
        try:
            with open(self.volume_ready_path) as f:
                text = f.read()
        except FileNotFoundError:
            raise ServerError("kelp server wrote the master's ready file but not "
                              "-volume.readyFile") from None
        assert text.endswith("\n"), "volume ready file %r" % text
        self.volume_port = int(text)
        return self
