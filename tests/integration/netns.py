"""Private networks for tests that cut the network (test_ha.py's partition test).

The host is never changed: no firewall rule, no interface, no /run/netns entry. Each
network namespace is held by a child process started with `unshare --net` and vanishes
by itself once its last process has exited (the holder is killed by the fixture's
finalizer; a holder whose test process died exits on its own when its stdin closes).
Interfaces live only inside these namespaces, so they vanish with them.

A Lab is a small switched network:

    hub namespace: br0 (a bridge, 10.77.0.1/24) -- where the test's own HTTP clients
                   (the main thread, writers) and the volume servers live
    node i:        eth0 (10.77.0.<11 + i>/24) -- one master each, linked to br0 by a
                   veth pair whose hub end is n<i>

cut(i) brings n<i> down: node i can then reach nobody and nobody can reach it (every
packet is lost, as in a real partition: no reset, no ICMP); heal(i) brings it up again.
Inside node i, its own address stays reachable (a client thread that entered node i's
namespace still talks to its server).

Servers are started inside a namespace with `nsenter --target <holder> --net` (no fork:
the server keeps the pid that Popen returns). The test's threads enter a namespace with
setns(2) for as long as they need (NetNS.entered(), per thread: other threads are not
affected; threads started inside inherit it).

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), unshare and nsenter (util-linux) and ip
(iproute2), and a kernel with veth and bridge support.
"""

import contextlib
import ctypes
import os
import shutil
import subprocess
import time

CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"            # a /24 that exists only inside the lab's namespaces
HUB_IP = SUBNET + ".1"
CMD_TIMEOUT = 10              # seconds for one ip / nsenter command
START_TIMEOUT = 5.0           # seconds for a holder to be in its own namespace

_libc = ctypes.CDLL(None, use_errno=True)


class NetNSError(Exception):
    pass


def _own_ns():
    return os.readlink("/proc/thread-self/ns/net")


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetNSError("setns: %s" % os.strerror(err))


def unusable():
    """Why namespaces cannot be made here (a string), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [t for t in ("unshare", "nsenter", "ip") if shutil.which(t) is None]
    if missing:
        return "missing program(s): %s (scripts/install-deps)" % ", ".join(missing)
    return None


class NetNS:
    """A network namespace held by `unshare --net -- cat` (its loopback is brought up)."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen(["unshare", "--net", "--", "cat"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        own = _own_ns()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                ns = os.readlink("/proc/%d/ns/net" % self.proc.pid)
            except OSError:
                ns = None
            if ns is not None and ns != own:
                self.ns_id = ns
                break
            if self.proc.poll() is not None:
                raise NetNSError("unshare --net failed (exit status %s): %s" % (
                    self.proc.returncode, self.proc.stderr.read().decode(errors="replace")))
            if time.monotonic() > deadline:
                self.close()
                raise NetNSError("unshare --net: no new namespace after %.0f s" % START_TIMEOUT)
            time.sleep(0.01)
        self.ip("link", "set", "lo", "up")

    @property
    def pid(self):
        return self.proc.pid

    def prefix(self):
        """A command prefix that runs a program inside this namespace (and nothing else
        of it: same root, mounts, pid)."""
        return ["nsenter", "--target", str(self.pid), "--net", "--"]

    def run(self, *cmd):
        r = subprocess.run(self.prefix() + list(cmd), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=CMD_TIMEOUT)
        if r.returncode != 0:
            raise NetNSError("in namespace %s: %s exited %d: %s" % (
                self.name, " ".join(cmd), r.returncode,
                (r.stderr or r.stdout).decode(errors="replace").strip()))
        return r.stdout.decode(errors="replace")

    def ip(self, *args):
        return self.run("ip", *args)

    @contextlib.contextmanager
    def entered(self):
        """The calling thread is in this namespace inside the with block (its sockets
        are made here), and back in its own afterwards, whatever happens."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open("/proc/%d/ns/net" % self.pid, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                if _own_ns() != self.ns_id:
                    raise NetNSError("setns did not move the thread into %s" % self.name)
                yield self
            finally:
                _setns(own)
        finally:
            os.close(own)

    def close(self):
        """Kills the holder; the namespace goes once no process is left in it."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class Lab:
    """A hub namespace with a bridge and n node namespaces linked to it (see above)."""

    hub_ip = HUB_IP

    def __init__(self, n_nodes):
        self.hub = None
        self.nodes = []
        try:
            self.hub = NetNS("hub")
            self.hub.ip("link", "add", "br0", "type", "bridge")
            self.hub.ip("addr", "add", HUB_IP + "/24", "dev", "br0")
            self.hub.ip("link", "set", "br0", "up")
            for i in range(n_nodes):
                node = NetNS("node%d" % i)
                self.nodes.append(node)
                self.hub.ip("link", "add", self.link(i), "type", "veth", "peer", "name", "eth0",
                            "netns", str(node.pid))
                self.hub.ip("link", "set", self.link(i), "master", "br0", "up")
                node.ip("addr", "add", "%s/24" % self.node_ip(i), "dev", "eth0")
                node.ip("link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def link(i):
        return "n%d" % i

    @staticmethod
    def node_ip(i):
        return "%s.%d" % (SUBNET, 11 + i)

    def cut(self, i):
        """Node i loses its link: every packet to or from it is lost."""
        self.hub.ip("link", "set", self.link(i), "down")

    def heal(self, i):
        self.hub.ip("link", "set", self.link(i), "up")

    def close(self):
        for ns in self.nodes + ([self.hub] if self.hub else []):
            ns.close()
        self.nodes = []
        self.hub = None
