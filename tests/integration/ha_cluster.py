"""Helpers for the high-availability tests (test_ha.py) and the failover benchmark
(scripts/bench.d/failover.py): a group of `kelp master -peers=...` processes, volume
servers pointed at one of them, leader discovery, and a continuous writer.

Masters need fixed ports: -peers lists every master's ip:port and Raft listens on
port + 10000 (RAFT_OFFSET), so free_master_port() picks a P with P and P + 10000 both
free, below the kernel's ephemeral range so that no outgoing connection takes them.
Volume servers use -port=0 and keep their port across restarts (ClusterVolume).
By default everything runs on 127.0.0.1; given a netns.Lab, every master runs in a
namespace of its own (at the lab's node address) and the volume servers in the lab's
hub, so that a test can cut a master off the network (see netns.py).

Every process runs in its own process group (conftest.VolumeServer) and is recorded in
a registry that the fixture kills at teardown, whatever happened. Nothing sleeps
blindly: waits are bounded polls; the writer's retry backoff is bounded too.

This module imports only the standard library, requests and the test helpers
(conftest.py, cluster.py), never pytest fixtures, so a plain script can use it.
"""

import contextlib
import os
import random
import signal
import socket
import threading
import time

import requests

from cluster import ClusterVolume, Master, fid_key, fid_vid, parse_id_ranges, poll_until

RAFT_OFFSET = 10000
ELECTION_MS = 1000
PORT_LO, PORT_HI = 15000, 22000       # P; P + 10000 stays below 32768
STATUS_TIMEOUT = 1.0                  # seconds for one /cluster/status or /dir/status
POLL = 0.05

_used_ports = set()


class HAError(AssertionError):
    """A bounded wait ran out, or the cluster is not in the state a step needs."""


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_master_port(rng=random):
    """A port P with P and P + RAFT_OFFSET free (and not handed out before here)."""
    for _ in range(2000):
        p = rng.randrange(PORT_LO, PORT_HI)
        if p in _used_ports or p + RAFT_OFFSET in _used_ports:
            continue
        if _bindable(p) and _bindable(p + RAFT_OFFSET):
            _used_ports.update((p, p + RAFT_OFFSET))
            return p
    raise HAError("no free port pair P, P+%d in %d..%d" % (RAFT_OFFSET, PORT_LO, PORT_HI))


def _raise_ha_error(message):
    raise HAError(message)


def poll(what, fn, timeout, interval=POLL):
    """poll_until that raises HAError (usable outside a test's own thread)."""
    return poll_until(what, fn, timeout, interval,
                      (requests.RequestException, ValueError, KeyError), _raise_ha_error)


def http_get(addr, path, timeout=STATUS_TIMEOUT, **kw):
    """One GET on a fresh connection (thread-safe)."""
    return requests.get("http://%s%s" % (addr, path), timeout=timeout,
                        allow_redirects=False, **kw)


def nodes_of_status(body):
    """{url: (dc, rack, VolumeIds set)} of a /dir/status body."""
    out = {}
    for dc in body["Topology"].get("DataCenters") or []:
        for rack in dc.get("Racks") or []:
            for dn in rack.get("DataNodes") or []:
                out[dn["Url"]] = (dc["Id"], rack["Id"], parse_id_ranges(dn.get("VolumeIds", "")))
    return out


class HAMaster(Master):
    """One `kelp master` of a Raft group, on a fixed port."""

    def __init__(self, kelp_bin, workdir, mdir, port, peers, args=(), name="master",
                 election_ms=ELECTION_MS, ip="127.0.0.1", prefix=()):
        super().__init__(kelp_bin, workdir, mdir, args=args, name=name)
        self.ip = ip
        self.prefix = tuple(prefix)
        self.port = port
        self.peers = peers
        self.election_ms = election_ms
        self.frozen = False

    def command(self):
        return [self.kelp_bin, "master", "-ip=" + self.ip, "-port=%d" % self.port,
                "-mdir=" + self.mdir, "-peers=" + self.peers,
                "-electionTimeoutMs=%d" % self.election_ms,
                "-readyFile=" + self.ready_path, "-pulseSeconds=1",
                "-vacuumIntervalSeconds=0"] + list(self.args)

    def start(self, timeout=10.0, cmd=None):
        port = self.port
        super().start(timeout=timeout, cmd=cmd)
        if self.port != port:
            raise HAError("%s wrote port %s to its ready file, not %d" % (
                self.name, self.port, port))
        self.frozen = False
        return self

    def kill(self):
        self.frozen = False
        return super().kill()

    def freeze(self):
        """SIGSTOP: the process can neither talk nor answer (a partition of sorts)."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    @property
    def raft_port(self):
        return self.port + RAFT_OFFSET

    def up(self):
        return self.alive() and not self.frozen

    def cluster_status(self, timeout=STATUS_TIMEOUT):
        """/cluster/status, or None when it cannot be had."""
        try:
            r = http_get(self.addr, "/cluster/status", timeout=timeout)
            if r.status_code != 200:
                return None
            return r.json()
        except (requests.RequestException, ValueError):
            return None

    def status_body(self, timeout=STATUS_TIMEOUT):
        """/dir/status (proxied to the leader by followers) as JSON; raises on errors."""
        r = http_get(self.addr, "/dir/status", timeout=timeout)
        if r.status_code != 200:
            raise HAError("%s /dir/status: %d %r" % (self.name, r.status_code, r.content[:200]))
        return r.json()

    def lookup_locations(self, vid, timeout=STATUS_TIMEOUT):
        """Sorted urls of vid from this master's own /dir/lookup; None on 404."""
        r = http_get(self.addr, "/dir/lookup?volumeId=%d" % vid, timeout=timeout)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise HAError("%s /dir/lookup?volumeId=%d: %d %r" % (
                self.name, vid, r.status_code, r.content[:200]))
        return sorted(loc["url"] for loc in r.json()["locations"])


class HACluster:
    """n masters in one Raft group, and volume servers. With a netns.Lab (of at least
    n_masters nodes), master i runs in the lab's node i and the volume servers in its hub;
    the test's HTTP clients must then run in the hub too (lab.hub.entered())."""

    def __init__(self, kelp_bin, tmp_path, registry, n_masters, master_args=(),
                 election_ms=ELECTION_MS, lab=None):
        self.kelp_bin = kelp_bin
        self.tmp_path = tmp_path
        self.registry = registry
        self.lab = lab
        if lab is not None and len(lab.nodes) < n_masters:
            raise HAError("a lab of %d nodes for %d masters" % (len(lab.nodes), n_masters))
        # In a lab every master has an address of its own; ports are free there.
        ports = [free_master_port() for _ in range(n_masters)]
        ips = [lab.node_ip(i) if lab else "127.0.0.1" for i in range(n_masters)]
        self.peers = ",".join("%s:%d" % (ip, p) for ip, p in zip(ips, ports))
        self.masters = []
        for i, p in enumerate(ports):
            m = HAMaster(kelp_bin, tmp_path, os.path.join(str(tmp_path), "m%d-mdir" % i), p,
                         self.peers, args=master_args, name="m%d" % i, election_ms=election_ms,
                         ip=ips[i], prefix=lab.nodes[i].prefix() if lab else ())
            registry.append(m)
            self.masters.append(m)
        self.volumes = []
        self.quorum = n_masters // 2 + 1

    # --- masters

    def start_masters(self):
        for m in self.masters:
            m.start()

    def up_masters(self):
        return [m for m in self.masters if m.up()]

    def by_addr(self, addr):
        for m in self.masters:
            if m.addr == addr:
                return m
        return None

    def statuses(self, masters=None):
        """{master: /cluster/status or None} of the given (default: every up) master."""
        masters = self.up_masters() if masters is None else masters
        return {m: m.cluster_status() for m in masters}

    def leader(self, masters=None):
        """The established leader: a master that says IsLeader and that a quorum of the
        group (itself included) names as Leader. None when there is none."""
        st = self.statuses(masters)
        for m, s in st.items():
            if s and s.get("IsLeader"):
                named = sum(1 for o in st.values() if o and o.get("Leader") == m.addr)
                if named >= self.quorum:
                    return m
        return None

    def wait_leader(self, timeout=10.0, not_in=()):
        """Polls until an established leader (not one of not_in) exists; returns it."""
        def find():
            m = self.leader()
            return m if m is not None and m not in not_in else None
        return poll("an established master leader", find, timeout)

    def followers(self, leader):
        return [m for m in self.up_masters() if m is not leader]

    def wait_caught_up(self, m, leader, timeout=10.0):
        """m's /cluster/status names the leader and has the leader's MaxVolumeId."""
        def ok():
            a, b = m.cluster_status(), leader.cluster_status()
            return (a and b and a.get("Leader") == leader.addr and
                    a.get("MaxVolumeId") == b.get("MaxVolumeId"))
        poll("%s to catch up with the leader %s" % (m.name, leader.name), ok, timeout)

    # --- volume servers

    def add_volume(self, dc, rack, master, max=5, args=(), name=None):
        """A volume server started with -master=<master> only."""
        name = name or "vs%d-%s-%s" % (len(self.volumes), dc, rack)
        vs = ClusterVolume(self.kelp_bin, self.tmp_path,
                           [os.path.join(str(self.tmp_path), name + "-data")],
                           master, dc, rack, max=max, args=args, name=name)
        if self.lab is not None:
            vs.ip = self.lab.hub_ip
            vs.prefix = tuple(self.lab.hub.prefix())
        self.registry.append(vs)
        self.volumes.append(vs)
        vs.start()
        return vs

    def want_nodes(self):
        return {v.addr: (v.dc, v.rack) for v in self.volumes if v.alive()}

    def node_view(self, master):
        """{url: (dc, rack)} that master's /dir/status lists."""
        return {u: (dc, rack) for u, (dc, rack, _) in nodes_of_status(master.status_body()).items()}

    def wait_nodes(self, master, timeout=15.0):
        want = self.want_nodes()
        poll("%s's /dir/status to list %d volume servers" % (master.name, len(want)),
             lambda: self.node_view(master) == want, timeout)


class Writer(threading.Thread):
    """Assigns and uploads continuously, following the leader across the masters.

    Every assign goes to the master it believes is the leader (followers would proxy
    anyway); on a connection error, a timeout or a non-200 answer it asks the masters'
    /cluster/status in turn for the leader and retries after a bounded backoff (50 ms
    doubling up to max_backoff, 200 ms by default). Records every assigned fid, every
    acknowledged write (fid, data, time) and every failure (time, stage, text). The
    backoff bounds the resolution of the measured write gaps. With a netns.NetNS
    (`netns`), the thread runs inside that network namespace.
    """

    def __init__(self, masters, seed=1, count=1, replication=None, upload=True,
                 size=(64, 1024), assign_timeout=(0.5, 3.0), put_timeout=(0.5, 5.0),
                 max_backoff=0.2, netns=None):
        super().__init__(daemon=True, name="kelp-writer")
        self.netns = netns
        self.masters = list(masters)          # master addresses
        self.rng = random.Random(seed)
        self.count = count
        self.replication = replication
        self.upload = upload
        self.size = size
        self.assign_timeout = assign_timeout
        self.put_timeout = put_timeout
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.target = self.masters[0]
        self.assigned = []     # (fid, count, time, master asked)
        self.acked = []        # (fid, url, data, time)
        self.failures = []     # (time, stage, text)
        self.upload_failures = []
        self.started_at = None
        self.error = None      # an exception that ended the thread

    # --- the loop

    def run(self):
        try:
            with self.netns.entered() if self.netns else contextlib.nullcontext():
                self._run()
        except Exception as e:  # noqa: BLE001  (reported by the test)
            self.error = e

    def _run(self):
        self.started_at = time.monotonic()
        sess = requests.Session()
        backoff = 0.05
        i = 0
        try:
            while not self.stop_event.is_set():
                i += 1
                ok = self._one(sess, i)
                if ok:
                    backoff = 0.05
                else:
                    sess.close()
                    sess = requests.Session()
                    self._rediscover()
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        except Exception as e:  # noqa: BLE001  (reported by the test)
            self.error = e
        finally:
            sess.close()

    def _fail(self, stage, text):
        with self.lock:
            self.failures.append((time.monotonic(), stage, text))

    def _one(self, sess, i):
        params = {"count": str(self.count)}
        if self.replication:
            params["replication"] = self.replication
        target = self.target
        try:
            r = sess.get("http://%s/dir/assign" % target, params=params,
                         timeout=self.assign_timeout)
        except requests.RequestException as e:
            self._fail("assign", "%s: %r" % (target, e))
            return False
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict) or "fid" not in body:
            self._fail("assign", "%s: %d %r" % (target, r.status_code, r.content[:200]))
            return False
        fid, url = body["fid"], body["url"]
        t = time.monotonic()
        with self.lock:
            self.assigned.append((fid, int(body.get("count", 1)), t, target))
        if not self.upload:
            with self.lock:
                self.acked.append((fid, url, b"", t))
            return True
        data = self.rng.randbytes(self.rng.randrange(*self.size))
        try:
            r = sess.put("http://%s/%s" % (url, fid), data=data, timeout=self.put_timeout)
        except requests.RequestException as e:
            self._fail("upload", "PUT %s/%s: %r" % (url, fid, e))
            with self.lock:
                self.upload_failures.append((fid, url, repr(e)))
            return False
        if r.status_code != 201:
            self._fail("upload", "PUT %s/%s: %d %r" % (url, fid, r.status_code, r.content[:200]))
            with self.lock:
                self.upload_failures.append((fid, url, "%d %r" % (r.status_code, r.content[:200])))
            return False
        with self.lock:
            self.acked.append((fid, url, data, time.monotonic()))
        return True

    def _rediscover(self):
        """Points self.target at the leader if a master names one, else at the next
        master of the list."""
        n = len(self.masters)
        start = self.masters.index(self.target) if self.target in self.masters else 0
        for k in range(1, n + 1):
            addr = self.masters[(start + k) % n]
            try:
                s = http_get(addr, "/cluster/status", timeout=(0.3, 0.5)).json()
            except (requests.RequestException, ValueError):
                continue
            if s.get("IsLeader"):
                self.target = addr
                return
            if s.get("Leader"):
                self.target = s["Leader"]
                return
        self.target = self.masters[(start + 1) % n]

    # --- control and results

    def stop(self, timeout=15.0):
        self.stop_event.set()
        self.join(timeout)
        if self.is_alive():
            raise HAError("the writer thread did not stop within %.0f s" % timeout)
        if self.error is not None:
            raise HAError("the writer thread died: %r" % (self.error,))

    def n_acked(self):
        with self.lock:
            return len(self.acked)

    def wait_acked(self, n, timeout):
        """Waits until n more writes than now are acknowledged; returns the time."""
        base = self.n_acked()
        poll("%d more acknowledged writes" % n, lambda: self.n_acked() >= base + n, timeout)
        return time.monotonic()

    def ack_times(self):
        with self.lock:
            return [a[3] for a in self.acked]

    def longest_gap(self, t0=None, t1=None):
        """The longest time without an acknowledged write inside [t0, t1] (the window
        edges count as boundaries)."""
        t0 = self.started_at if t0 is None else t0
        t1 = time.monotonic() if t1 is None else t1
        times = [t for t in self.ack_times() if t0 <= t <= t1]
        edges = [t0] + times + [t1]
        return max(b - a for a, b in zip(edges, edges[1:]))

    def failures_between(self, t0, t1):
        with self.lock:
            return [f for f in self.failures if t0 <= f[0] <= t1]


def duplicate_keys(assigned):
    """Pairs of assigns whose key ranges [key, key + count) overlap (file keys are
    global: a key may never be handed out twice, whatever the volume)."""
    ranges = sorted((fid_key(fid), fid_key(fid) + cnt, fid, master)
                    for fid, cnt, _, master in assigned)
    dups = []
    for (a0, a1, fa, ma), (b0, b1, fb, mb) in zip(ranges, ranges[1:]):
        if b0 < a1:
            dups.append(((fa, a1 - a0, ma), (fb, b1 - b0, mb)))
    return dups


def verify_reads(acked, lookup_addrs, timeout=5.0):
    """Reads every acknowledged write back from every replica /dir/lookup names (the
    lookup goes to the first master of lookup_addrs that answers). Returns a list of
    problems (empty when all is well)."""
    problems = []
    locs = {}
    sess = requests.Session()
    try:
        for fid, url, data, _ in acked:
            vid = fid_vid(fid)
            if vid not in locs:
                got = None
                for addr in lookup_addrs:
                    try:
                        r = sess.get("http://%s/dir/lookup" % addr, params={"volumeId": str(vid)},
                                     timeout=timeout)
                    except requests.RequestException:
                        continue
                    if r.status_code == 200:
                        got = [loc["url"] for loc in r.json()["locations"]]
                        break
                    problems.append("lookup of volume %d on %s: %d %r" % (
                        vid, addr, r.status_code, r.content[:200]))
                locs[vid] = got
            if not locs[vid]:
                problems.append("%s: no master could look volume %d up" % (fid, vid))
                continue
            for u in locs[vid]:
                try:
                    r = sess.get("http://%s/%s" % (u, fid), timeout=timeout)
                except requests.RequestException as e:
                    problems.append("GET %s/%s: %r" % (u, fid, e))
                    continue
                if r.status_code != 200:
                    problems.append("GET %s/%s: %d %r" % (u, fid, r.status_code, r.content[:200]))
                elif r.content != data:
                    problems.append("GET %s/%s: %d bytes that differ from the %d written" % (
                        u, fid, len(r.content), len(data)))
            if len(problems) > 50:
                problems.append("... (stopped after 50 problems)")
                break
    finally:
        sess.close()
    return problems
