"""The mount over highly available masters: killing the master leader in the middle of a
big `cp -a` must not fail the copy (the client follows the new leader), and the copy
must be byte-identical (`diff -r`). Stopping every master makes calls (stat included)
fail with EIO within -timeout; restarting them makes them work again."""
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


def _start_master(kelp, tmp_path, i, port, peers):
    d = Daemon("master%d" % i, str(tmp_path / ("master%d.log" % i)))
    d.spawn([kelp.kelp_bin, "master", "-ip=127.0.0.1", "-port=%d" % port, "-peers=" + peers,
             "-mdir=" + str(tmp_path / ("m%d" % i)), "-electionTimeoutMs=1000"],
            str(tmp_path))
    kelp.daemons.append(d)
    return d


def _nodes(ports):
    """Volume servers the leader knows (0 without a leader)."""
    lp = _leader(ports)
    if not lp:
        return 0
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/dir/status" % lp, timeout=1) as r:
            t = json.load(r)["Topology"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(len(r["DataNodes"]) for dc in t["DataCenters"] for r in dc["Racks"])


def _ha_cluster(kelp, tmp_path, rng, volumes):
    """3 masters (Raft) and `volumes` volume servers; returns (ports, masters, peers)."""
    ports = []
    while len(ports) < 3:
        p = _free_pair(rng)
        if p not in ports and p + 1 not in ports:
            ports.append(p)
    peers = ",".join("127.0.0.1:%d" % p for p in ports)
    masters = {p: _start_master(kelp, tmp_path, i, p, peers) for i, p in enumerate(ports)}
    wait_until("a master leader", lambda: _leader(ports), 20)
    for i in range(volumes):
        d = Daemon("volume%d" % i, str(tmp_path / ("volume%d.log" % i)))
        d.spawn([kelp.kelp_bin, "volume", "-ip=127.0.0.1", "-port=0", "-master=" + peers,
                 "-dir=" + str(tmp_path / ("v%d" % i)), "-max=30", "-pulseSeconds=1"],
                str(tmp_path))
        kelp.daemons.append(d)
    wait_until("the volume servers on the leader", lambda: _nodes(ports) == volumes, 20)
    return ports, masters, peers


def _copy_killing(src, dst, marker, pick_victim):
    """`cp -a src dst`; once `marker` exists in dst, SIGKILLs the daemon pick_victim()
    returns. The copy must succeed and `diff -r` be clean."""
    cp = subprocess.Popen(["cp", "-a", src, dst])
    try:
        wait_until("copy under way",
                   lambda: os.path.exists(os.path.join(dst, marker)) or cp.poll() is not None,
                   60)
        victim = pick_victim()
        victim.expect_running = False
        victim.signal_group(signal.SIGKILL)
        t0 = time.monotonic()
        rc = cp.wait(timeout=300)
    finally:
        if cp.poll() is None:
            cp.kill()
    assert rc == 0, "cp -a failed after %s was killed" % victim.name
    print("copy finished %.1f s after %s was killed" % (time.monotonic() - t0, victim.name))
    r = subprocess.run(["diff", "-r", src, dst], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[:2000]


def test_leader_killed_during_big_copy(kelp, tmp_path):
    rng = random.Random(7)
    ports, masters, peers = _ha_cluster(kelp, tmp_path, rng, 2)

    class Masters:
        master_addr = peers

    m = kelp.mount(["-timeout=30"], server=Masters())
    src, dst = str(tmp_path / "src"), m.path("copy")
    _make_tree(src, TREE_MB, rng)
    killed = {}

    def leader_daemon():
        killed["port"] = leader = _leader(ports)
        assert leader, "no leader to kill"
        return masters[leader]

    _copy_killing(src, dst, "big002.bin", leader_daemon)
    assert _leader([p for p in ports if p != killed["port"]]), "no new leader"


def test_every_master_stopped_then_restarted(kelp, tmp_path):
    """Stop every master (volume servers keep running): a stat fails with EIO within
    -timeout (plus one 0.5 s probe); restart them on the same ports and dirs: stat,
    reads and writes work again, and nothing written before is lost."""
    timeout_s = 3
    rng = random.Random(11)
    ports, masters, peers = _ha_cluster(kelp, tmp_path, rng, 1)

    class Masters:
        master_addr = peers

    m = kelp.mount(["-timeout=%d" % timeout_s], server=Masters())
    data = rng.randbytes(3 << 20)
    with open(m.path("before"), "wb") as f:
        f.write(data)
    os.stat(m.path("before"))
    for d in masters.values():
        d.stop()
    t_stop = time.monotonic()
    # stat in a child process, so that a hang fails the test instead of blocking it
    while True:
        r = subprocess.run(["stat", m.path("before")], capture_output=True, text=True,
                           timeout=timeout_s + 10)
        if r.returncode != 0:
            break
        assert time.monotonic() - t_stop < timeout_s + 5, "stat still works"
        time.sleep(0.1)
    waited = time.monotonic() - t_stop
    print("stat failed %.2f s after the last master stopped: %s" % (waited, r.stderr.strip()))
    assert "Input/output error" in r.stderr, r.stderr
    assert waited < timeout_s + 1.0, "stat failed only after %.1f s" % waited
    r = subprocess.run(["ls", m.mnt], capture_output=True, text=True, timeout=timeout_s + 10)
    assert r.returncode != 0 and "Input/output error" in r.stderr, r

    for i, p in enumerate(ports):
        masters[p] = _start_master(kelp, tmp_path, i, p, peers)
    wait_until("stat to work again", lambda: os.stat(m.path("before")).st_size == len(data), 30)
    wait_until("the volume server back on the leader", lambda: _nodes(ports) == 1, 30)
    with open(m.path("before"), "rb") as f:
        assert f.read() == data
    more = rng.randbytes(1 << 20)
    with open(m.path("after"), "wb") as f:
        f.write(more)
        f.flush()
        os.fsync(f.fileno())
    m2 = kelp.remount(m)
    with open(m2.path("after"), "rb") as f:
        assert f.read() == more
    assert sorted(os.listdir(m2.mnt)) == ["after", "before"]


def test_volume_server_lost_during_copy(kelp, tmp_path):
    """-replication=001 over 3 volume servers: kill -9 one of them in the middle of a
    `cp -a`: the copy succeeds (uploads are retried on other volumes), `diff -r` is
    clean, and after a remount (cold caches) every file reads back from the surviving
    replicas."""
    rng = random.Random(13)
    ports, masters, peers = _ha_cluster(kelp, tmp_path, rng, 3)
    volumes = [d for d in kelp.daemons if d.name.startswith("volume")]

    class Masters:
        master_addr = peers

    m = kelp.mount(["-replication=001"], server=Masters())
    src, dst = str(tmp_path / "src"), m.path("copy")
    _make_tree(src, 120, rng)
    _copy_killing(src, dst, "big003.bin", lambda: volumes[rng.randrange(len(volumes))])
    m2 = kelp.remount(m, args=["-replication=001", "-cacheCapacityMB=0", "-memoryCacheMB=0"])
    r = subprocess.run(["diff", "-r", src, m2.path("copy")], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout[:2000]
