"""Volume copies between volume servers, automatic repair by the leader master, extra
copies of a returning server, and volume.check.disk (issue 13; docs/architecture.md
"Repair")."""

import os
import random
import re
import subprocess
import threading
import time

import requests

from cluster import PULSE, fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import assert_json, make_fid, rand_bytes

ONE_RACK3 = [("dc1", "r1")] * 3
COPY_TIMEOUT = 60


def wait_copy(c, target, vid, timeout=COPY_TIMEOUT, states=("done",)):
    """Polls target's /admin/volume/copy/status until the newest copy of vid is in one
    of `states`; returns its JSON. A failed copy fails the test at once unless
    "failed" is wanted."""
    def check():
        body = assert_json(c.http("GET", target.addr, "/admin/volume/copy/status"), 200)
        for j in body["Copies"]:
            if j["volume"] == vid:
                if j["state"] == "failed" and "failed" not in states:
                    raise RuntimeError("copy of %d failed: %s" % (vid, j["error"]))
                return j if j["state"] in states else None
        return None
    return wait_for("copy of volume %d on %s to be %s" % (vid, target.addr, states), check,
                    timeout)


def start_copy(c, target, source, vid, expect=202, **params):
    r = c.http("POST", target.addr, "/admin/volume/copy",
               params=dict(volume=str(vid), source=source.addr, **params))
    assert r.status_code == expect, (r.status_code, r.text)
    return r


class Writer(threading.Thread):
    """Writes blobs to volume vid on server addr with fresh keys until stopped; keeps
    every acknowledged fid -> data."""

    def __init__(self, c, addr, vid, size=3000, seed=1):
        super().__init__(daemon=True)
        self.c, self.addr, self.vid, self.size = c, addr, vid, size
        self.rnd = random.Random(seed)
        self.acked = {}
        self.errors = 0
        self.stop_flag = threading.Event()

    def run(self):
        n = 0
        s = requests.Session()
        while not self.stop_flag.is_set() and n < 20000:
            n += 1
            fid = make_fid(self.vid, 1000000 + n, self.rnd.getrandbits(32))
            data = rand_bytes(self.size, n)
            try:
                r = s.put("http://%s/%s" % (self.addr, fid), data=data, timeout=10)
            except requests.RequestException:
                self.errors += 1
                continue
            if r.status_code == 201:
                self.acked[fid] = data
            else:
                self.errors += 1

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive()


def fill(c, addr, vid, n, size=5000, first_key=1):
    blobs = {}
    for i in range(n):
        fid = make_fid(vid, first_key + i, 0x1000 + i)
        data = rand_bytes(size, first_key + i)
        c.put(addr, fid, data)
        blobs[fid] = data
    return blobs


def test_copy_while_writing_then_verified_and_served(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")], master_args=["-repairDelaySeconds=-1"])
    a, b = c.volumes
    a.assign(7)
    before = fill(c, a.addr, 7, 200, size=20000)
    w = Writer(c, a.addr, 7)
    w.start()
    try:
        start_copy(c, b, a, 7, finish="wait")
        wait_copy(c, b, 7, states=("caught_up",))
        # the last round: writes stop on the source, the copy catches up and finishes
        assert_json(c.http("POST", a.addr, "/admin/mark_readonly", params={"volume": "7"}), 200)
        assert c.http("POST", b.addr, "/admin/volume/copy/finish",
                      params={"volume": "7"}).status_code == 200
        job = wait_copy(c, b, 7)
    finally:
        w.stop()
    assert len(w.acked) > 0
    assert job["bytes"] > 200 * 20000
    for fid, data in list(before.items()) + list(w.acked.items()):
        c.assert_readable(b.addr, fid, data)
    # identical files, and the new copy is announced to the master
    va, vb = a.volumes()[7], b.volumes()[7]
    assert va["Size"] == vb["Size"] and va["FileCount"] == vb["FileCount"]
    c.settle()
    # one copy wanted (000): lookups give the freshest only, the writable source
    assert len(c.master.lookup_urls(7)) == 1
    da = open(os.path.join(a.dirs[0], "7.dat"), "rb").read()
    db = open(os.path.join(b.dirs[0], "7.dat"), "rb").read()
    assert da == db
    # a second copy of a volume already there is refused
    start_copy(c, b, a, 7, expect=409)


def test_copy_refuses_bad_input(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")], master_args=["-repairDelaySeconds=-1"])
    a, b = c.volumes
    r = c.http("POST", b.addr, "/admin/volume/copy", params={"volume": "x", "source": a.addr})
    assert r.status_code == 400
    r = c.http("POST", b.addr, "/admin/volume/copy", params={"volume": "3"})
    assert r.status_code == 400
    r = c.http("POST", b.addr, "/admin/volume/copy", params={"volume": "3", "source": b.addr})
    assert r.status_code == 400
    # a volume the source does not have: the job fails, nothing is left behind
    start_copy(c, b, a, 99)
    job = wait_copy(c, b, 99, states=("failed",))
    assert "404" in job["error"], job
    assert not [f for f in os.listdir(b.dirs[0]) if f.startswith("99")]
    r = c.http("GET", a.addr, "/admin/volume/file",
               params={"volume": "99", "ext": "dat", "size": "8"})
    assert r.status_code == 404


def test_copy_killed_target_leaves_no_volume_and_retry_works(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")], master_args=["-repairDelaySeconds=-1"])
    a, b = c.volumes
    a.assign(5)
    blobs = fill(c, a.addr, 5, 300, size=30000)
    # slow copy (1 MB/s): kill -9 the target in the middle
    start_copy(c, b, a, 5, mbps="1")
    wait_for("the copy to be under way", lambda: [
        j for j in assert_json(c.http("GET", b.addr, "/admin/volume/copy/status"),
                               200)["Copies"] if j["bytes"] > 0], 10)
    b.kill()
    left = os.listdir(b.dirs[0])
    assert "5.dat" not in left and any(f.endswith(".cdt") for f in left), left
    b.start()
    assert not [f for f in os.listdir(b.dirs[0]) if f.startswith("5")], os.listdir(b.dirs[0])
    assert 5 not in b.volumes()
    start_copy(c, b, a, 5)
    wait_copy(c, b, 5)
    for fid, data in blobs.items():
        c.assert_readable(b.addr, fid, data)


def test_copy_killed_source_fails_cleanly_and_retry_works(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")], master_args=["-repairDelaySeconds=-1"])
    a, b = c.volumes
    a.assign(6)
    blobs = fill(c, a.addr, 6, 300, size=30000)
    start_copy(c, b, a, 6, mbps="1")
    wait_for("the copy to be under way", lambda: [
        j for j in assert_json(c.http("GET", b.addr, "/admin/volume/copy/status"),
                               200)["Copies"] if j["bytes"] > 0], 10)
    a.kill()
    wait_copy(c, b, 6, states=("failed",))
    assert not [f for f in os.listdir(b.dirs[0]) if f.startswith("6")], os.listdir(b.dirs[0])
    assert 6 not in b.volumes()
    a.start()
    start_copy(c, b, a, 6)
    wait_copy(c, b, 6)
    for fid, data in blobs.items():
        c.assert_readable(b.addr, fid, data)


class ClusterWriter(threading.Thread):
    """assign + upload through the master with a replication, until stopped; keeps
    every acknowledged fid -> data (failures are counted, they are not acknowledged)."""

    def __init__(self, c, replication, size=2000, seed=3, pause=0.0):
        super().__init__(daemon=True)
        self.c, self.replication, self.size, self.pause = c, replication, size, pause
        self.acked = {}
        self.errors = 0
        self.stop_flag = threading.Event()
        self.n = 0

    def run(self):
        s = requests.Session()
        while not self.stop_flag.is_set() and self.n < 50000:
            self.n += 1
            data = rand_bytes(self.size, self.n + 7777)
            try:
                r = s.get(self.c.master.url("/dir/assign"),
                          params={"replication": self.replication}, timeout=10)
                if r.status_code != 200:
                    self.errors += 1
                    time.sleep(0.05)
                    continue
                a = r.json()
                r = s.put("http://%s/%s" % (a["url"], a["fid"]), data=data, timeout=10)
            except requests.RequestException:
                self.errors += 1
                continue
            if r.status_code == 201:
                self.acked[a["fid"]] = data
            else:
                self.errors += 1
            if self.pause:
                time.sleep(self.pause)

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive()


def replica_counts(c):
    """{vid: number of running servers holding it}."""
    counts = {}
    for v in c.running():
        for vid in v.volumes():
            counts[vid] = counts.get(vid, 0) + 1
    return counts


def _repair_after_loss(make_cluster, nodes, replication, victim_index):
    c = make_cluster(nodes, master_args=["-repairDelaySeconds=2", "-repairConcurrency=2"],
                     max=12)
    want = 1 + sum(int(ch) for ch in replication)
    w = ClusterWriter(c, replication)
    w.start()
    try:
        wait_for("some writes", lambda: len(w.acked) >= 100, 30)
        victim = c.volumes[victim_index]
        lost = set(victim.volumes())
        assert lost
        victim.kill()
        # writes keep being acknowledged (on volumes without the dead server)
        n0 = len(w.acked)
        wait_for("writes after the loss", lambda: len(w.acked) >= n0 + 100, 60)
        # every volume fully replicated again on the running servers
        wait_for("every volume back at %d copies" % want,
                 lambda: all(n == want for n in replica_counts(c).values())
                 and lost <= set(replica_counts(c)), 60, interval=0.2)
        def repaired():
            rep = assert_json(c.master.get("/cluster/repair"), 200)["Repair"]
            return lost <= {j["volume"] for j in rep["Copies"] if j["state"] == "done"}
        wait_for("the master's repair status to show every copy done", repaired, 10)
        st = subprocess.run([c.kelp_bin, "status", "-master=" + c.master.addr],
                            capture_output=True, text=True, timeout=30).stdout
        assert "Repair (after 2s under-replicated, 2 copies per server" in st, st
        assert re.search(r"^  %d +\S+ +\S+ +done +[\d.]+/[\d.]+ MiB" % min(lost), st, re.M), st
        n1 = len(w.acked)
        wait_for("writes after the repair", lambda: len(w.acked) >= n1 + 50, 60)
    finally:
        w.stop()
    c.settle(timeout=10)
    # every acknowledged blob reads back from every replica
    holders = {}
    for v in c.running():
        for vid in v.volumes():
            holders.setdefault(vid, []).append(v)
    for fid, data in w.acked.items():
        hs = holders[fid_vid(fid)]
        assert len(hs) == want
        for h in hs:
            c.assert_readable(h.addr, fid, data)
    return c, victim, lost, w


def test_repair_after_losing_a_server_001(make_cluster):
    c, victim, lost, w = _repair_after_loss(make_cluster, ONE_RACK3, "001", 0)
    # delete some blobs of the repaired volumes, then bring the stale server back
    deleted = [f for f in w.acked if fid_vid(f) in lost][:20]
    assert deleted
    for fid in deleted:
        url = c.master.lookup(fid_vid(fid))["locations"][0]["url"]
        r = c.http("DELETE", url, "/" + fid)
        assert r.status_code == 202, r.text
    victim.start()
    # lookups never send a reader to the stale copies, and deleted blobs stay deleted
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for fid in deleted[:5]:
            for loc in c.master.lookup(fid_vid(fid))["locations"]:
                c.assert_gone(loc["url"], fid)
        if not (set(victim.volumes()) & lost):
            break
        time.sleep(0.2)
    # the extra copies (the stale ones) are removed
    wait_for("the returning server's stale copies to be removed",
             lambda: not (set(victim.volumes()) & lost), 30)
    assert all(n == 2 for n in replica_counts(c).values()), replica_counts(c)
    for fid in deleted:
        for v in c.running():
            if fid_vid(fid) in v.volumes():
                c.assert_gone(v.addr, fid)


def test_repair_after_losing_a_server_010(make_cluster):
    _repair_after_loss(make_cluster, [("dc1", "r1"), ("dc1", "r2"), ("dc1", "r3")], "010", 1)


def _diverge(c, a, b, vid, first_key):
    """Blobs on a only, on b only, and a deletion on b only (writes with
    ?type=replicate are not forwarded). Returns (only_a, only_b, deleted)."""
    common = fill(c, a.addr, vid, 10, first_key=first_key)
    only_a, only_b = {}, {}
    for i in range(5):
        fid = make_fid(vid, first_key + 100 + i, 0x2000 + i)
        only_a[fid] = rand_bytes(4000, first_key + 100 + i)
        c.put(a.addr, fid + "?type=replicate", only_a[fid])
        fid = make_fid(vid, first_key + 200 + i, 0x3000 + i)
        only_b[fid] = rand_bytes(4000, first_key + 200 + i)
        c.put(b.addr, fid + "?type=replicate", only_b[fid])
    deleted = list(common)[:3]
    for fid in deleted:
        assert c.http("DELETE", b.addr, "/" + fid + "?type=replicate").status_code == 202
    for fid in deleted:
        c.assert_readable(a.addr, fid, common[fid])
    for fid in only_b:
        assert c.read(a.addr, fid).status_code == 404
    return only_a, only_b, deleted


def _assert_converged(c, a, b, only_a, only_b, deleted):
    for srv in (a, b):
        for fid, data in list(only_a.items()) + list(only_b.items()):
            c.assert_readable(srv.addr, fid, data)
        for fid in deleted:
            c.assert_gone(srv.addr, fid)


def test_check_disk_repairs_diverged_replicas(make_cluster):
    c = make_cluster([("dc1", "r1")] * 2,
                     master_args=["-repairDelaySeconds=-1", "-checkDiskIntervalSeconds=1"])
    a, b = c.volumes
    a.assign(9, replication="001")
    b.assign(9, replication="001")
    c.settle()
    only_a, only_b, deleted = _diverge(c, a, b, 9, 1)
    # a dry run counts, changes nothing
    r = c.http("POST", a.addr, "/admin/volume/check_disk",
               params={"volume": "9", "peer": b.addr, "apply": "false", "cutoffSeconds": "0"})
    body = assert_json(r, 200)
    assert (body["copiedToPeer"], body["copiedFromPeer"], body["deletedHere"],
            body["deletedOnPeer"]) == (5, 5, 3, 0), body
    assert c.read(a.addr, list(only_b)[0]).status_code == 404
    # the leader's periodic pass (records older than 10 s) converges the replicas
    wait_for("the periodic check.disk to converge volume 9", lambda: all(
        c.read(a.addr, f).status_code == 200 for f in only_b) and all(
        c.read(b.addr, f).status_code == 200 for f in only_a) and all(
        c.read(a.addr, f).status_code == 404 for f in deleted), 40, interval=0.5)
    _assert_converged(c, a, b, only_a, only_b, deleted)
    rep = assert_json(c.master.get("/cluster/repair"), 200)["Repair"]
    assert rep["CheckDiskFixes"] >= 13, rep
    # by hand, at once (cutoffSeconds=0), on a second divergence
    only_a, only_b, deleted = _diverge(c, a, b, 9, 1000)
    body = assert_json(c.http("POST", b.addr, "/admin/volume/check_disk",
                              params={"volume": "9", "peer": a.addr, "cutoffSeconds": "0"}), 200)
    assert (body["copiedToPeer"], body["copiedFromPeer"], body["deletedOnPeer"],
            body["failed"]) == (5, 5, 3, 0), body
    _assert_converged(c, a, b, only_a, only_b, deleted)
    # and again: nothing left to do
    body = assert_json(c.http("POST", a.addr, "/admin/volume/check_disk",
                              params={"volume": "9", "peer": b.addr, "cutoffSeconds": "0"}), 200)
    assert body["copiedToPeer"] + body["copiedFromPeer"] + body["deletedHere"] + \
        body["deletedOnPeer"] == 0, body


def test_repair_and_shell_in_a_keyed_cluster(make_cluster):
    """With -jwtKey every call of the repair carries a server token (the master's copy
    request, the target's file and checksum requests), and so do the shell's."""
    key = "repair-test-key"
    c = make_cluster(ONE_RACK3, master_args=["-jwtKey=" + key, "-repairDelaySeconds=1"],
                     volume_args=["-jwtKey=" + key], max=6)
    s = requests.Session()
    blobs = {}
    for i in range(30):
        ra = s.get(c.master.url("/dir/assign"), params={"replication": "001"})
        a = ra.json()
        data = rand_bytes(5000, i)
        r = s.put("http://%s/%s" % (a["url"], a["fid"]), data=data,
                  headers={"Authorization": ra.headers["Authorization"]})
        assert r.status_code == 201, r.text
        blobs[a["fid"]] = data
    c.settle()
    # without the key, admin routes of the copy are refused
    v0 = c.volumes[0]
    r = c.http("GET", v0.addr, "/admin/volume/info", params={"volume": "1"})
    assert r.status_code == 401
    victim = c.volumes[1]
    lost = set(victim.volumes())
    victim.kill()
    wait_for("every volume back at 2 copies",
             lambda: all(n == 2 for n in replica_counts(c).values())
             and lost <= set(replica_counts(c)), 60, interval=0.2)
    for fid, data in blobs.items():
        for v in c.running():
            if fid_vid(fid) in v.volumes():
                c.assert_readable(v.addr, fid, data)
    env = dict(os.environ, KELP_JWT_KEY=key)
    p = subprocess.run([c.kelp_bin, "shell", "-master=" + c.master.addr,
                        "-c=lock; volume.list -v=3; unlock"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0 and "lock acquired" in p.stdout, (p.stdout, p.stderr)
    env.pop("KELP_JWT_KEY")
    p = subprocess.run([c.kelp_bin, "shell", "-master=" + c.master.addr, "-c=lock"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 1 and "401" in p.stderr, (p.stdout, p.stderr)


def _running_copies(c):
    rep = assert_json(c.master.get("/cluster/repair"), 200)["Repair"]
    return [j for j in rep["Copies"] if j["state"] == "running"]


def test_repair_retries_when_the_target_dies_and_copies_in_parallel(make_cluster):
    """Four volumes of a dead server are copied side by side (MB/s limited, so each copy
    takes seconds); the target of one is killed -9 in the middle: the master gives the
    copy to another server, and the killed target comes back with no half volume."""
    c = make_cluster([("dc1", "r1")] * 4,
                     master_args=["-repairDelaySeconds=1", "-repairMBps=1",
                                  "-repairConcurrency=2"], max=8)
    a, b, x, y = c.volumes
    blobs = {}
    for vid in (31, 32, 33, 34):
        a.assign(vid, replication="001")
        b.assign(vid, replication="001")
    c.settle()
    for vid in (31, 32, 33, 34):
        blobs.update(fill(c, a.addr, vid, 40, size=100000, first_key=vid * 1000))
    b.kill()
    # two copies at once on a (the source), not one after the other
    most = wait_for("two copies running at once",
                    lambda: len(_running_copies(c)) >= 2 and _running_copies(c), 20)
    victim = c.by_addr(most[0]["target"])
    wait_for("the copy to victim under way", lambda: [
        j for j in _running_copies(c) if j["target"] == victim.addr and j["bytes"] > 0], 20)
    victim.kill()
    left = os.listdir(victim.dirs[0])
    assert any(f.endswith(".cdt") for f in left), left
    wait_for("every volume back at 2 copies on the live servers",
             lambda: all(n == 2 for n in replica_counts(c).values())
             and len(replica_counts(c)) == 4, 90, interval=0.5)
    rep = assert_json(c.master.get("/cluster/repair"), 200)["Repair"]
    failed = [j for j in rep["Copies"] if j["state"] == "failed"]
    assert any(j["target"] == victim.addr for j in failed), rep["Copies"]
    for fid, data in blobs.items():
        for v in c.running():
            if fid_vid(fid) in v.volumes():
                c.assert_readable(v.addr, fid, data)
    victim.start()
    assert not [f for f in os.listdir(victim.dirs[0])
                if f.endswith((".cdt", ".cix"))], os.listdir(victim.dirs[0])
