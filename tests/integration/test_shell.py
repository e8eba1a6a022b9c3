"""`kelp shell` against a 3-server cluster: output shapes of the read commands, lock,
and the data-moving commands (volume.move, volume.balance, volumeServer.evacuate)
under a continuous writer and reader: no acknowledged write lost (issue 13)."""

import re
import subprocess
import threading
import time

import requests

from cluster import fid_vid, make_cluster, wait_for  # noqa: F401
from conftest import assert_json, make_fid, rand_bytes

THREE = [("dc1", "r1"), ("dc1", "r1"), ("dc1", "r2")]


def shell(c, commands, expect=0, stdin=None, timeout=120):
    args = [c.kelp_bin, "shell", "-master=" + c.master.addr]
    if commands is not None:
        args.append("-c=" + commands)
    p = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == expect, (p.returncode, p.stdout, p.stderr)
    return p.stdout, p.stderr


def grow(c, n, replication="000"):
    c.master.grow(count=str(n), replication=replication)
    c.settle()


def test_read_commands_output_shape(make_cluster):
    c = make_cluster(THREE, master_args=["-repairDelaySeconds=-1"])
    grow(c, 2, "001")
    body, _ = c.master.dir_assign(replication="001", collection="pics")
    c.put(body["url"], body["fid"], b"hello")
    c.settle()
    out, _ = shell(c, "volume.list")
    lines = out.splitlines()
    assert re.match(r"^Topology volumeSizeLimit:\d+ MB hdd\(volume:\d+/\d+ active:\d+ "
                    r"free:\d+ remote:0\)$", lines[0]), lines[0]
    assert any(re.match(r"^  DataCenter dc1 hdd\(volume:", x) for x in lines), out
    assert any(re.match(r"^    Rack r1 hdd\(volume:", x) for x in lines), out
    for v in c.volumes:
        assert "      DataNode %s hdd(volume:" % v.addr in out
    vol_lines = [x for x in lines if x.startswith("          volume ")]
    held = sum(len(v.volumes()) for v in c.volumes)
    assert len(vol_lines) == held, out
    assert all(re.match(r"^          volume Id:\d+, Size:\d+, ReplicaPlacement:\d{3}, "
                        r"Collection:[\w.-]*, Version:3, Ttl:\w*, FileCount:\d+, "
                        r"DeleteCount:\d+, DeletedByteCount:\d+, ReadOnly:(true|false), "
                        r"ModifiedAtSecond:\d+ $", x) for x in vol_lines), vol_lines
    assert re.match(r"^total size:\d+ file_count:\d+ $", lines[-1]), lines[-1]
    # -v=1: data centers only; -collectionPattern filters volume lines
    out1, _ = shell(c, "volume.list -v=1")
    assert "DataNode" not in out1 and "  DataCenter dc1" in out1
    outp, _ = shell(c, "volume.list -collectionPattern=pi*")
    assert all("Collection:pics" in x for x in outp.splitlines() if "volume Id" in x)
    assert any("Collection:pics" in x for x in outp.splitlines())

    out, _ = shell(c, "cluster.ps")
    assert out.startswith("* masters 1\n  * %s (leader)\n* volume servers 3\n" % c.master.addr), out
    assert "  * data center dc1\n    * rack r1\n" in out
    out, _ = shell(c, "cluster.check")
    assert "checking shell to master %s ... ok round trip" % c.master.addr in out
    assert out.count("checking shell to volume server") == 3
    assert "the cluster is healthy" in out

    out, _ = shell(c, "collection.list")
    assert re.search(r'^collection:"pics"\tvolumeCount:\d+\tsize:\d+\tfileCount:1\t'
                     r'deletedBytes:0\tdeletion:0$', out, re.M), out
    assert re.search(r"^Total 2 collections\.$", out, re.M), out
    # commands from a pipe, ';' separated, unknown command and missing lock fail
    out, err = shell(c, None, stdin="cluster.ps; nosuch\ncollection.delete -collection=pics\n",
                     expect=1)
    assert "unknown command: nosuch" in err
    assert 'need to run "lock" first to continue' in err
    assert "* volume servers 3" in out
    out, _ = shell(c, "lock; collection.delete -collection=pics; unlock")
    assert "lock acquired" in out
    assert "collection 'pics' will be deleted. Use -apply to apply the change." in out
    out, _ = shell(c, "lock; collection.delete -collection=pics -apply; unlock")
    assert "collection pics is deleted." in out
    out, _ = shell(c, "collection.list")
    assert "pics" not in out
    out, err = shell(c, "volume.move -volumeId=x", expect=1)
    assert "-volumeId must be a volume id" in err
    out, _ = shell(c, "help")
    for name in ("cluster.check", "volume.fix.replication", "volumeServer.evacuate", "lock"):
        assert name in out


def test_lock_is_exclusive(make_cluster):
    c = make_cluster(THREE[:1], master_args=["-repairDelaySeconds=-1"])
    p = subprocess.Popen([c.kelp_bin, "shell", "-master=" + c.master.addr],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        p.stdin.write("lock\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "lock acquired"
        r = c.master.post("/cluster/lock", params={"owner": "other"})
        assert r.status_code == 409 and "locked by shell" in r.text, r.text
        rep = assert_json(c.master.get("/cluster/repair"), 200)["Repair"]
        assert rep["LockedBy"].startswith("shell ")
        p.stdin.write("unlock\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "lock released"
    finally:
        p.stdin.close()
        p.wait(30)
    r = c.master.post("/cluster/lock", params={"owner": "other"})
    assert r.status_code == 200


class ReadWrite(threading.Thread):
    """assign + write (001) and read back everything acknowledged, continuously;
    records acknowledged writes and read failures (after one retry with a fresh
    lookup, the documented retry)."""

    def __init__(self, c, replication="001"):
        super().__init__(daemon=True)
        self.c, self.replication = c, replication
        self.acked = {}
        self.read_errors = []
        self.stop_flag = threading.Event()

    def read_once(self, s, fid):
        for attempt in range(2):
            locs = s.get(self.c.master.url("/dir/lookup"),
                         params={"volumeId": fid_vid(fid)}, timeout=10).json()
            for loc in locs.get("locations", []):
                r = s.get("http://%s/%s" % (loc["url"], fid), timeout=10)
                if r.status_code == 200:
                    return r.content
            time.sleep(0.5)
        return None

    def run(self):
        s = requests.Session()
        n = 0
        while not self.stop_flag.is_set() and n < 20000:
            n += 1
            data = rand_bytes(1500, n)
            try:
                a = s.get(self.c.master.url("/dir/assign"),
                          params={"replication": self.replication}, timeout=10).json()
                if "fid" in a:
                    r = s.put("http://%s/%s" % (a["url"], a["fid"]), data=data, timeout=10)
                    if r.status_code == 201:
                        self.acked[a["fid"]] = data
                if n % 3 == 0 and self.acked:
                    fid = list(self.acked)[n % len(self.acked)]
                    got = self.read_once(s, fid)
                    if got != self.acked[fid]:
                        self.read_errors.append(fid)
            except (requests.RequestException, ValueError):
                pass

    def stop(self):
        self.stop_flag.set()
        self.join(30)
        assert not self.is_alive()


def _check_all(c, rw):
    c.settle(timeout=10)
    for fid, data in rw.acked.items():
        hs = [v for v in c.running() if fid_vid(fid) in v.volumes()]
        assert len(hs) == 2, (fid, [h.addr for h in hs])
        for h in hs:
            c.assert_readable(h.addr, fid, data)
    assert not rw.read_errors, rw.read_errors[:5]


def test_move_balance_evacuate_under_load(make_cluster):
    c = make_cluster([("dc1", "r1")] * 3, master_args=["-repairDelaySeconds=-1"], max=12)
    a, b, d = c.volumes
    rw = ReadWrite(c)
    rw.start()
    try:
        wait_for("some writes", lambda: len(rw.acked) >= 100, 30)
        c.settle(timeout=10)
        # volume.move of one copy to the server that lacks it
        vid, src = next((vid, v) for v in (a, b, d) for vid in v.volumes())
        dst = next(v for v in (a, b, d) if vid not in v.volumes())
        out, err = shell(c, "lock; volume.move -volumeId=%d -source=%s -target=%s; unlock" % (
            vid, src.addr, dst.addr))
        assert "volume %d moved from %s to %s" % (vid, src.addr, dst.addr) in out, (out, err)
        assert vid in dst.volumes() and vid not in src.volumes()
        # evacuate the server with the most copies (the growth places them at random: the
        # move may have emptied one): plan first, then apply
        ev = max((a, b, d), key=lambda v: len(v.volumes()))
        out, _ = shell(c, "volumeServer.evacuate -node=%s" % ev.addr)
        assert "Running in simulation mode" in out
        planned = re.findall(r"^  moving volume (\d+) (\S+) => (\S+)$", out, re.M)
        assert planned and all(s == ev.addr for _, s, _ in planned), out
        assert ev.volumes()
        out, err = shell(c, "lock; volumeServer.evacuate -node=%s -apply; unlock" % ev.addr,
                         timeout=300)
        c.settle(timeout=10)
        assert not ev.volumes(), (out, err)
        n0 = len(rw.acked)
        wait_for("writes after the evacuation", lambda: len(rw.acked) >= n0 + 30, 60)
        # balance: ev is empty, the others full of copies; -force moves some back
        out, _ = shell(c, "lock; volume.balance; unlock")
        assert "Running in simulation mode" in out
        assert re.search(r"^  moving volume \d+ \S+ => %s$" % re.escape(ev.addr), out, re.M), out
        out, err = shell(c, "lock; volume.balance -force; unlock", timeout=300)
        c.settle(timeout=10)
        assert ev.volumes(), (out, err)
        counts = [len(v.volumes()) for v in (a, b, d)]
        assert max(counts) - min(counts) <= 2, counts
        out, _ = shell(c, "lock; volume.balance; unlock")
        n1 = len(rw.acked)
        wait_for("writes after the balance", lambda: len(rw.acked) >= n1 + 30, 60)
    finally:
        rw.stop()
    _check_all(c, rw)


def test_fix_replication_and_check_disk_from_the_shell(make_cluster):
    c = make_cluster([("dc1", "r1")] * 3, master_args=["-repairDelaySeconds=-1"])
    a, b, d = c.volumes
    a.assign(40, replication="001")
    b.assign(40, replication="001")
    c.settle()
    fids = {}
    for i in range(20):
        fid = make_fid(40, 1 + i, 0x500 + i)
        fids[fid] = rand_bytes(3000, i)
        c.put(a.addr, fid, fids[fid])
    # a needle on b only
    lone = make_fid(40, 999, 0x77)
    c.put(b.addr, lone + "?type=replicate", b"lone")
    # records younger than -cutoffSeconds (10) may still be on their way: 0 counts all
    out, _ = shell(c, "lock; volume.check.disk -volumeId=40 -cutoffSeconds=0; unlock")
    assert "Running in simulation mode" in out
    assert re.search(r"^volume 40 \S+ has 21 entries, \S+ missed 1 and partially deleted 0 "
                     r"entries$", out, re.M), out
    assert c.read(a.addr, lone).status_code == 404
    out, _ = shell(c, "lock; volume.check.disk -volumeId=40 -apply -cutoffSeconds=0; unlock")
    c.assert_readable(a.addr, lone, b"lone")
    # lose b: the master's automatic repair is off; volume.fix.replication does it
    b.kill()
    wait_for("the master to see b gone", lambda: c.master.lookup_urls(40) == {a.addr}, 10)
    out, _ = shell(c, "volume.fix.replication -n")
    assert "volume 40 replication 001, but under replicated +1" in out, out
    assert "replicating volume 40 001 from %s to dataNode %s ..." % (a.addr, d.addr) in out, out
    assert 40 not in d.volumes()
    out, err = shell(c, "lock; volume.fix.replication; unlock", timeout=120)
    assert "1 volume(s) fully replicated again" in out, (out, err)
    for fid, data in fids.items():
        c.assert_readable(d.addr, fid, data)


def test_interrupted_move_leaves_no_damage(make_cluster):
    import os
    import signal
    c = make_cluster([("dc1", "r1")] * 2, master_args=["-repairDelaySeconds=-1"])
    a, b = c.volumes
    a.assign(50)
    blobs = {}
    for i in range(60):
        fid = make_fid(50, 1 + i, 0x900 + i)
        blobs[fid] = rand_bytes(100000, i)
        c.put(a.addr, fid, blobs[fid])
    p = subprocess.Popen([c.kelp_bin, "shell", "-master=" + c.master.addr,
                          "-c=lock; volume.move -volumeId=50 -source=%s -target=%s "
                          "-ioBytePerSecond=1000000; unlock" % (a.addr, b.addr)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the move's copy under way", lambda: [
            j for j in assert_json(c.http("GET", b.addr, "/admin/volume/copy/status"),
                                   200)["Copies"] if j["bytes"] > 0], 20)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1 and "interrupted" in err, (out, err)
    wait_for("the copy to be cancelled", lambda: all(
        j["state"] == "cancelled" for j in assert_json(
            c.http("GET", b.addr, "/admin/volume/copy/status"), 200)["Copies"]), 20)
    assert 50 not in b.volumes()
    assert not [f for f in os.listdir(b.dirs[0]) if f.startswith("50")], os.listdir(b.dirs[0])
    assert a.volumes()[50]["ReadOnly"] is False
    for fid, data in blobs.items():
        c.assert_readable(a.addr, fid, data)
    # the rest of the line ran (unlock): the lock is free
    assert "lock released" in out, out
    r = c.master.post("/cluster/lock", params={"owner": "other"})
    assert r.status_code == 200, r.text
