"""The mount over highly available masters: killing the master leader in the middle of a
big `cp -a` must not fail the copy (the client follows the new leader), and the copy
must be byte-identical (`diff -r`)."""
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request

from kelp_fuse_conftest import Daemon, wait_until

TREE_MB = int(os.environ.get("KELP_HA_COPY_MB", "500"))


def _free_pair(rng):
    """A port P with P and P + 10000 (Raft) both free."""
    for _ in range(200):
        p = rng.randrange(15000, 22000)
        ok = True
        for q in (p, p + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no free port pair")


def _status(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/cluster/status" % port,
                                    timeout=1) as r:
            return json.load(r)
    except (OSError, ValueError):
        return None


def _leader(ports):
    for p in ports:
        st = _status(p)
        if st and st.get("IsLeader"):
            return p
    return None


def _make_tree(root, total_mb, rng):
    """Big random files plus many small ones (a copy of /usr/include when present)."""
    os.makedirs(root)
    big = max(1, total_mb // 12)
    for i in range(big):
        with open(os.path.join(root, "big%03d.bin" % i), "wb") as f:
            for _ in range(12):
                f.write(rng.randbytes(1 << 20))
    if os.path.isdir("/usr/include/linux"):
        subprocess.run(["cp", "-a", "/usr/include/linux", os.path.join(root, "linux")],
                       check=True, timeout=120)


def test_leader_killed_during_big_copy(kelp, tmp_path):
    rng = random.Random(7)
    ports = []
    while len(ports) < 3:
        p = _free_pair(rng)
        if p not in ports and p + 1 not in ports:
            ports.append(p)
    peers = ",".join("127.0.0.1:%d" % p for p in ports)
    masters = {}
    for i, p in enumerate(ports):
        d = Daemon("master%d" % i, str(tmp_path / ("master%d.log" % i)))
        d.spawn([kelp.kelp_bin, "master", "-ip=127.0.0.1", "-port=%d" % p, "-peers=" + peers,
                 "-mdir=" + str(tmp_path / ("m%d" % i)), "-electionTimeoutMs=1000"],
                str(tmp_path))
        kelp.daemons.append(d)
        masters[p] = d
    wait_until("a master leader", lambda: _leader(ports), 20)
    for i in range(2):
        d = Daemon("volume%d" % i, str(tmp_path / ("volume%d.log" % i)))
        d.spawn([kelp.kelp_bin, "volume", "-ip=127.0.0.1", "-port=0", "-master=" + peers,
                 "-dir=" + str(tmp_path / ("v%d" % i)), "-max=30", "-pulseSeconds=1"],
                str(tmp_path))
        kelp.daemons.append(d)

    def nodes():
        lp = _leader(ports)
        if not lp:
            return 0
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/dir/status" % lp, timeout=1) as r:
                t = json.load(r)["Topology"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(len(r["DataNodes"]) for dc in t["DataCenters"] for r in dc["Racks"])

    wait_until("both volume servers on the leader", lambda: nodes() == 2, 20)

    class Masters:
        master_addr = peers

    m = kelp.mount(["-timeout=30"], server=Masters())
    src = str(tmp_path / "src")
    _make_tree(src, TREE_MB, rng)
    dst = m.path("copy")
    cp = subprocess.Popen(["cp", "-a", src, dst])
    try:
        # kill the leader once the copy is well under way
        wait_until("copy under way",
                   lambda: os.path.exists(os.path.join(dst, "big002.bin")) or cp.poll() is not None,
                   60)
        leader = _leader(ports)
        assert leader, "no leader to kill"
        masters[leader].expect_running = False
        masters[leader].signal_group(signal.SIGKILL)
        t0 = time.monotonic()
        rc = cp.wait(timeout=300)
    finally:
        if cp.poll() is None:
            cp.kill()
    assert rc == 0, "cp -a failed after the leader was killed"
    print("copy finished %.1f s after the leader was killed" % (time.monotonic() - t0))
    assert _leader([p for p in ports if p != leader]), "no new leader"
    r = subprocess.run(["diff", "-r", src, dst], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[:2000]
