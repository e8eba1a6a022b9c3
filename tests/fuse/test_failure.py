"""The cluster goes away under a live mount (-timeout=3): reads of data not cached,
fsync, and the metadata calls (stat, ls, mkdir) fail with EIO within the timeout
(measured: well under 10 s), nothing hangs; when the server comes back on the same -dir
and ports, the same operations work again (with the same open file descriptor). With
-metaOffline the metadata calls keep working from LMDB while the cluster is away.

File operations run in a child process (an "agent" driven over a pipe) so that a hang
in the mount cannot hang the test: the agent is killed after a bound."""

import errno
import json
import os
import select
import subprocess
import sys
import time

import pytest

from kelp_fuse_conftest import MiB, free_port, read_file, wait_until, write_file

TIMEOUT_S = 3
BOUND_S = 10.0   # what "does not hang" means here

AGENT = r"""
import json, os, sys, time
fds = {}
for line in sys.stdin:
    req = json.loads(line)
    op, t0, res = req["op"], time.monotonic(), {}
    try:
        if op == "open":
            fds[req["name"]] = os.open(req["path"], os.O_RDWR | os.O_CREAT, 0o644)
        elif op == "write":
            os.pwrite(fds[req["name"]], bytes.fromhex(req["hex"]) * req["times"], req["off"])
        elif op == "fsync":
            os.fsync(fds[req["name"]])
        elif op == "close":
            os.close(fds.pop(req["name"]))
        elif op == "stat":
            res["size"] = os.stat(req["path"]).st_size
        elif op == "listdir":
            res["names"] = sorted(os.listdir(req["path"]))
        elif op == "mkdir":
            os.mkdir(req["path"])
        elif op == "read":
            fd = os.open(req["path"], os.O_RDONLY)
            try:
                data = b""
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    data += b
            finally:
                os.close(fd)
            import hashlib
            res["sha"] = hashlib.sha256(data).hexdigest()
            res["len"] = len(data)
        res["errno"] = 0
    except OSError as e:
        res["errno"] = e.errno
    res["secs"] = time.monotonic() - t0
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
"""


class Agent:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", AGENT], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)

    def call(self, bound=BOUND_S + 20, **req):
        """Sends one request; returns the reply dict. Fails the test if no reply comes
        within `bound` seconds (the agent is killed)."""
        t0 = time.monotonic()
        self.p.stdin.write((json.dumps(req) + "\n").encode())
        self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], bound)
        if not r:
            self.kill()
            pytest.fail("%s did not return within %.0f s: the mount hangs" % (req, bound),
                        pytrace=False)
        line = self.p.stdout.readline()
        assert line, "the agent died"
        res = json.loads(line)
        res["wall"] = time.monotonic() - t0
        return res

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            pass   # stuck in the kernel: the kelp fixture aborts the mount

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def test_cluster_down_eio_then_recovers(kelp):
    import hashlib

    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    mports = (srv.master_port, srv.volume_port)
    m = kelp.mount()
    cold = os.urandom(2 * MiB + 3)
    write_file(m.path("cold"), cold)
    assert m.unmount() == 0
    # a fresh mount: nothing of "cold" in its chunk cache or in the kernel's page cache
    m = kelp.remount(m, args=["-timeout=%d" % TIMEOUT_S])
    agent = Agent()
    try:
        assert agent.call(op="open", name="w", path=m.path("new"))["errno"] == 0
        # buffered, not uploaded yet (less than a chunk)
        assert agent.call(op="write", name="w", hex="ab", times=300000, off=0)["errno"] == 0
        srv.kill9()
        # reading data that is not cached
        r = agent.call(op="read", path=m.path("cold"))
        print("read while down: %r" % r)
        assert r["errno"] == errno.EIO, "read with the cluster down: %r" % r
        assert r["wall"] < BOUND_S, "read took %.1f s to fail (-timeout=%d)" % (
            r["wall"], TIMEOUT_S)
        # fsync of the buffered data
        r = agent.call(op="fsync", name="w")
        print("fsync while down: %r" % r)
        assert r["errno"] == errno.EIO, "fsync with the cluster down: %r" % r
        assert r["wall"] < BOUND_S, "fsync took %.1f s to fail (-timeout=%d)" % (
            r["wall"], TIMEOUT_S)
        # the metadata calls fail too (no master has answered for -timeout)
        for req in ({"op": "stat", "path": m.path("cold")}, {"op": "listdir", "path": m.mnt},
                    {"op": "mkdir", "path": m.path("dir-while-down")}):
            r = agent.call(**req)
            assert r["errno"] == errno.EIO, "%r with the cluster down: %r" % (req, r)
            assert r["wall"] < BOUND_S, r
        # the cluster comes back on the same dir and ports
        srv.start()
        assert (srv.master_port, srv.volume_port) == mports
        wait_until("stat to work again",
                   lambda: agent.call(op="stat", path=m.path("cold"))["errno"] == 0, 30)
        assert agent.call(op="stat", path=m.path("cold"))["size"] == len(cold)
        assert not os.path.exists(m.path("dir-while-down"))
        r = agent.call(op="read", path=m.path("cold"), bound=60)
        assert r["errno"] == 0, "read after the cluster came back: %r" % r
        assert r["sha"] == hashlib.sha256(cold).hexdigest()
        # the data whose fsync failed is still buffered: fsync again
        r = agent.call(op="fsync", name="w", bound=60)
        assert r["errno"] == 0, "fsync after the cluster came back: %r" % r
        assert agent.call(op="close", name="w")["errno"] == 0
        assert read_file(m.path("new")) == b"\xab" * 300000
        # a new write + fsync
        assert agent.call(op="open", name="w2", path=m.path("new2"))["errno"] == 0
        assert agent.call(op="write", name="w2", hex="cd", times=5000, off=0)["errno"] == 0
        assert agent.call(op="fsync", name="w2")["errno"] == 0
        assert agent.call(op="close", name="w2")["errno"] == 0
    finally:
        agent.close()
    m2 = kelp.remount(m)
    assert read_file(m2.path("new")) == b"\xab" * 300000
    assert read_file(m2.path("new2")) == b"\xcd" * 5000
    assert read_file(m2.path("cold")) == cold


def test_cluster_down_close_reports_eio(kelp):
    """A close whose upload fails reports EIO (close is the durability point), within
    the bound."""
    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    m = kelp.mount(["-timeout=%d" % TIMEOUT_S])
    agent = Agent()
    try:
        assert agent.call(op="open", name="w", path=m.path("f"))["errno"] == 0
        assert agent.call(op="write", name="w", hex="01", times=1000, off=0)["errno"] == 0
        srv.kill9()
        r = agent.call(op="close", name="w")
        assert r["errno"] == errno.EIO, "close with the cluster down: %r" % r
        assert r["wall"] < BOUND_S, r
    finally:
        agent.close()


def test_meta_offline_keeps_the_namespace(kelp):
    """-metaOffline: with the cluster away, stat, ls, mkdir and rename keep working from
    LMDB; reading data that is not cached still fails with EIO within the bound."""
    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    m = kelp.mount()
    data = os.urandom(MiB + 5)
    write_file(m.path("cold"), data)
    assert m.unmount() == 0
    m = kelp.remount(m, args=["-timeout=%d" % TIMEOUT_S, "-metaOffline"])
    agent = Agent()
    try:
        srv.kill9()
        t0 = time.monotonic()
        # well past the timeout: the namespace is still served
        while time.monotonic() - t0 < TIMEOUT_S + 1.5:
            r = agent.call(op="stat", path=m.path("cold"))
            assert r["errno"] == 0 and r["size"] == len(data), r
            time.sleep(0.2)
        assert agent.call(op="listdir", path=m.mnt)["names"] == ["cold"]
        assert agent.call(op="mkdir", path=m.path("d"))["errno"] == 0
        os.rename(m.path("d"), m.path("d2"))
        r = agent.call(op="read", path=m.path("cold"))
        assert r["errno"] == errno.EIO and r["wall"] < BOUND_S, r
    finally:
        agent.close()
    assert sorted(os.listdir(m.mnt)) == ["cold", "d2"]


def test_full_cluster_gives_enospc_then_recovers(kelp, tmp_path):
    """The only volume server's disk fills up (a 64 MiB tmpfs): a copy fails with
    ENOSPC ("No space left on device", not EIO) within the bound, files written before
    stay readable, the namespace keeps working; once space is freed, writes work again
    without restarting anything."""
    datadir = tmp_path / "data"
    vdir = datadir / "volume"
    vdir.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(vdir)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
    agent = None
    try:
        filler = vdir / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * (16 * MiB))
        kelp.start_server(datadir=str(datadir))
        m = kelp.mount(["-timeout=10"])
        agent = Agent()
        written = {}
        err = None
        for i in range(40):   # 40 x 3 MiB cannot fit in 64 MiB: bounded
            name = "f%02d" % i
            assert agent.call(op="open", name=name, path=m.path(name))["errno"] == 0
            w = agent.call(op="write", name=name, hex="%02x" % i, times=3 * MiB, off=0)
            c = agent.call(op="close", name=name)
            if w["errno"] or c["errno"]:
                err = w if w["errno"] else c
                break
            written[name] = bytes([i]) * (3 * MiB)
        assert err is not None, "the disk never filled"
        print("full after %d files: %r" % (len(written), err))
        assert err["errno"] == errno.ENOSPC, err
        assert err["wall"] < BOUND_S + 10, err
        assert len(written) >= 5
        for name, data in written.items():
            assert read_file(m.path(name)) == data, name
        os.mkdir(m.path("still-works"))
        assert "still-works" in os.listdir(m.mnt)
        # room again: writes work without a restart
        os.unlink(filler)

        def write_ok():
            try:
                write_file(m.path("after"), b"\x5a" * MiB)
                return True
            except OSError:
                return False

        wait_until("writes to work again", write_ok, 30, interval=0.5)
        assert read_file(m.path("after")) == b"\x5a" * MiB
    finally:
        if agent:
            agent.close()
        # lazily: the server (killed by the fixture) may still hold files there
        subprocess.run(["umount", "-l", str(vdir)], capture_output=True)


def test_fsync_reaches_data_written_before_open(kelp):
    """fsync() makes durable everything the file holds, not only what this descriptor
    wrote: data closed earlier (uploaded without fsync) is flushed by the volume servers
    (POST /admin/sync). Seen from outside: with the server frozen, an fsync with
    nothing new to write still fails with EIO (it must reach the server); thawed, it
    succeeds."""
    import signal

    srv = kelp.start_server()
    m = kelp.mount(["-timeout=%d" % TIMEOUT_S])
    write_file(m.path("f"), b"closed earlier, not fsynced" * 100)
    agent = Agent()
    try:
        assert agent.call(op="open", name="f", path=m.path("f"))["errno"] == 0
        srv.signal_group(signal.SIGSTOP)
        try:
            r = agent.call(op="fsync", name="f")
        finally:
            srv.signal_group(signal.SIGCONT)
        assert r["errno"] == errno.EIO, "fsync did not reach the volume server: %r" % r
        assert r["wall"] < BOUND_S, r
        r = agent.call(op="fsync", name="f", bound=60)
        assert r["errno"] == 0, r
        # a second fsync has nothing left to flush there
        assert agent.call(op="fsync", name="f")["errno"] == 0
        assert agent.call(op="close", name="f")["errno"] == 0
    finally:
        agent.close()
    assert read_file(m.path("f")) == b"closed earlier, not fsynced" * 100
