"""The cluster goes away under a live mount (-timeout=3): reads of data not cached and
write + fsync fail with EIO within the timeout (measured: well under 10 s), nothing
hangs, the metadata side keeps working; when the server comes back on the same -dir and
ports, the same operations work again (with the same open file descriptor).

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

from kelp_fuse_conftest import MiB, free_port, read_file, write_file

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
        srv.kill9()
        # reading data that is not cached
        r = agent.call(op="read", path=m.path("cold"))
        print("read while down: %r" % r)
        assert r["errno"] == errno.EIO, "read with the cluster down: %r" % r
        assert r["wall"] < BOUND_S, "read took %.1f s to fail (-timeout=%d)" % (
            r["wall"], TIMEOUT_S)
        # write + fsync
        assert agent.call(op="write", name="w", hex="ab", times=300000, off=0)["errno"] == 0
        r = agent.call(op="fsync", name="w")
        print("fsync while down: %r" % r)
        assert r["errno"] == errno.EIO, "fsync with the cluster down: %r" % r
        assert r["wall"] < BOUND_S, "fsync took %.1f s to fail (-timeout=%d)" % (
            r["wall"], TIMEOUT_S)
        # the metadata side keeps working
        assert "cold" in os.listdir(m.mnt)
        assert os.stat(m.path("cold")).st_size == len(cold)
        os.mkdir(m.path("dir-while-down"))
        # the cluster comes back on the same dir and ports
        srv.start()
        assert (srv.master_port, srv.volume_port) == mports
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
