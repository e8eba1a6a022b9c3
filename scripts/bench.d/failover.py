#!/usr/bin/python3
"""Failover benchmark (scripts/bench failover): how long writes stop when the master
leader dies, and what the Raft group costs in write throughput.

1. 3 masters (-peers) + 3 volume servers on 127.0.0.1, a continuous writer (assign +
   upload, following the leader across the masters: tests/integration/ha_cluster.py).
   The leader is killed with SIGKILL --kills times; each killed master is restarted
   once the new leader is established. For every kill the write outage is the longest
   gap between two acknowledged writes from just before the kill until writes flow
   again. Prints each outage and the median (target: median <= 3 s).
2. `kelp benchmark -n N` against 3 masters (every master listed) and against one
   master without -peers, each with 3 fresh volume servers, --rounds times each
   (alternating, a fresh cluster every time: this machine's noise is large); prints
   every run, the median writes/s of both and their ratio (target: >= 0.8).

Everything runs in a temporary directory (removed unless --keep or a failure) and every
process is killed on exit, whatever happens. Bounded: each wait has a timeout and the
whole run is aborted after --budget seconds (default 290).

Usage: failover.py [--kelp PATH] [--kills 10] [-n 20000] [-c 16] [--rounds 3] [--keep]
KELP_BIN is the default of --kelp, then build-release/daemons/kelp, then build/daemons/kelp.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from cluster import ClusterVolume, Master  # noqa: E402
from ha_cluster import HACluster, HAError, Writer, duplicate_keys  # noqa: E402

TARGET_MEDIAN_OUTAGE = 3.0
TARGET_RATIO = 0.8


class Budget(Exception):
    pass


def machine():
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            model = m.group(1).strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
            mem = "%.0f GiB" % (kb / 1048576)
    except (OSError, AttributeError):
        pass
    return "machine: %d cores (nproc), %s, %s, %s" % (os.cpu_count() or 0, mem,
                                                       " ".join(os.uname()[2:3]), model)


def default_kelp():
    for p in (os.environ.get("KELP_BIN"), os.path.join(ROOT, "build-release", "daemons", "kelp"),
              os.path.join(ROOT, "build", "daemons", "kelp")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def failover(kelp, work, registry, kills, deadline):
    os.makedirs(os.path.join(work, "failover"))
    cl = HACluster(kelp, os.path.join(work, "failover"), registry, 3)
    cl.start_masters()
    leader = cl.wait_leader(15)
    for i in range(3):
        cl.add_volume("dc1", "r%d" % (i + 1), cl.masters[0], max=8)
    cl.wait_nodes(leader)
    w = Writer([m.addr for m in cl.masters])
    w.start()
    outages = []
    elections = []
    try:
        w.wait_acked(50, 15)
        for k in range(kills):
            if time.monotonic() > deadline:
                raise Budget("time budget spent after %d kills" % k)
            old = cl.wait_leader(15)
            t_kill = time.monotonic()
            old.kill()
            new = cl.wait_leader(15, not_in=(old,))
            t_elected = time.monotonic()
            t_back = w.wait_acked(20, 15)
            outage = w.longest_gap(t_kill - 0.5, t_back)
            outages.append(outage)
            elections.append(t_elected - t_kill)
            print("kill %2d: leader %s killed, %s established after %.2f s, write outage %.2f s"
                  % (k + 1, old.name, new.name, t_elected - t_kill, outage), flush=True)
            old.start()
            cl.wait_caught_up(old, new, 15)
            w.wait_acked(20, 15)
    finally:
        w.stop()
    dups = duplicate_keys(w.assigned)
    print("writer: %d acknowledged writes, %d failed attempts, %d upload failures, %d keys "
          "handed out twice" % (len(w.acked), len(w.failures), len(w.upload_failures), len(dups)))
    return outages, elections, dups


def run_benchmark(kelp, masters, n, c, listfile, log):
    cmd = [kelp, "benchmark", "-master=" + ",".join(masters), "-n", str(n), "-c", str(c),
           "-size", "1024", "-list", listfile]
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    with open(log, "w") as f:
        f.write("$ %s\n%s\n%s" % (" ".join(cmd), r.stdout, r.stderr))
    sections = re.split(r"-{5,} (.+?) -{5,}", r.stdout)
    rates = {}
    for title, body in zip(sections[1::2], sections[2::2]):
        m = re.search(r"Requests per second:\s+([\d.]+)", body)
        f = re.search(r"Failed requests:\s+(\d+)", body)
        if m:
            rates[title.strip()] = (float(m.group(1)), int(f.group(1)) if f else -1)
    write = [v for k, v in rates.items() if k.lower().startswith("writ")]
    if not write:
        raise RuntimeError("kelp benchmark exited with %d after %.0f s, no write phase in its "
                           "output (see %s):\n%s" % (r.returncode, time.monotonic() - t, log,
                                                     (r.stdout + r.stderr)[-2000:]))
    if r.returncode != 0:
        errors = sorted(set(re.findall(r"First error: (.*)", r.stdout)))
        print("  kelp benchmark exited with %d (failed requests); first errors: %s" % (
            r.returncode, errors or "?"), flush=True)
    return write[0], rates


def bench_cluster(kelp, d, registry, n_masters, n, c):
    """Fresh masters (a Raft group of n_masters, or one master without -peers) and 3
    fresh volume servers; runs kelp benchmark with every master listed; stops them."""
    os.makedirs(d)
    procs = []
    if n_masters > 1:
        cl = HACluster(kelp, d, registry, n_masters)
        cl.start_masters()
        leader = cl.wait_leader(15)
        for i in range(3):
            cl.add_volume("dc1", "r%d" % (i + 1), cl.masters[0], max=8)
        cl.wait_nodes(leader)
        masters = [m.addr for m in cl.masters]
        procs = list(cl.masters) + list(cl.volumes)
    else:
        m = Master(kelp, d, os.path.join(d, "mdir"), name="single")
        registry.append(m)
        m.start()
        procs.append(m)
        for i in range(3):
            vs = ClusterVolume(kelp, d, [os.path.join(d, "vs%d-data" % i)], m, "dc1",
                               "r%d" % (i + 1), max=8, name="vs%d" % i)
            registry.append(vs)
            procs.append(vs)
            vs.start()
        deadline = time.monotonic() + 15
        while len(m.data_nodes()) < 3:
            if time.monotonic() > deadline:
                raise HAError("the single master does not list 3 volume servers")
            time.sleep(0.05)
        masters = [m.addr]
    try:
        return run_benchmark(kelp, masters, n, c, os.path.join(d, "list.txt"),
                             os.path.join(d, "benchmark.log"))
    finally:
        for p in procs:
            p.cleanup()


def throughput(kelp, work, registry, n, c, rounds, deadline):
    """rounds x (1 master, 3 masters), alternating, each on a fresh cluster. Returns
    {label: [(writes/s, failed, {phase: (rate, failed)}), ...]}."""
    results = {"1 master": [], "3 masters": []}
    for r in range(rounds):
        for label, n_masters in (("1 master", 1), ("3 masters", 3)):
            if time.monotonic() > deadline:
                raise Budget("time budget spent in the throughput runs")
            (w, f), rates = bench_cluster(kelp, os.path.join(work, "bench-%d-%d" % (r, n_masters)),
                                          registry, n_masters, n, c)
            reads = ", ".join("%s %.0f/s" % (k, v[0]) for k, v in rates.items()
                              if not k.lower().startswith("writ"))
            print("  round %d, %-9s: writes %.0f/s (%d failed)%s" % (
                r + 1, label, w, f, "; " + reads if reads else ""), flush=True)
            results[label].append((w, f, rates))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kelp", default=default_kelp())
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3,
                    help="benchmark runs per configuration (fresh cluster each)")
    ap.add_argument("--budget", type=float, default=290.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not args.kelp or not os.access(args.kelp, os.X_OK):
        print("failover.py: no kelp binary (give --kelp or KELP_BIN)", file=sys.stderr)
        return 2
    start = time.monotonic()
    deadline = start + args.budget

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, lambda s, f: (_ for _ in ()).throw(Budget("time budget spent")))
    signal.alarm(int(args.budget) + 10)

    print(machine())
    print("kelp: %s" % args.kelp, flush=True)
    work = tempfile.mkdtemp(prefix="kelp-failover-")
    registry = []
    ok = False
    rc = 0
    try:
        print("== failover: 3 masters, 3 volume servers, leader killed %d times" % args.kills,
              flush=True)
        outages, elections, dups = failover(args.kelp, work, registry, args.kills, deadline)
        for p in registry:
            p.cleanup()
        registry.clear()
        med = statistics.median(outages)
        print("write outage per kill (s): %s" % " ".join("%.2f" % o for o in outages))
        print("median write outage: %.2f s (target <= %.1f s): %s" % (
            med, TARGET_MEDIAN_OUTAGE, "ok" if med <= TARGET_MEDIAN_OUTAGE else "MISSED"))
        print("median election: %.2f s, max %.2f s" % (statistics.median(elections),
                                                         max(elections)))
        if dups:
            print("ERROR: file keys handed out twice: %r" % (dups[:5],))
            rc = 1

        print("== kelp benchmark -n %d -c %d -size 1024: 3 masters vs 1 master, %d rounds" % (
            args.n, args.c, args.rounds), flush=True)
        res = throughput(args.kelp, work, registry, args.n, args.c, args.rounds, deadline)
        med = {k: statistics.median(w for w, _, _ in v) for k, v in res.items()}
        for k in ("1 master", "3 masters"):
            print("%-9s: median writes %.0f/s over %d runs, %d failed requests in all" % (
                k, med[k], len(res[k]), sum(f for _, f, _ in res[k])))
        ratio = med["3 masters"] / med["1 master"]
        print("writes/s ratio 3 masters / 1 master (medians): %.2f (target >= %.1f): %s" % (
            ratio, TARGET_RATIO, "ok" if ratio >= TARGET_RATIO else "MISSED"))
        print("total time %.0f s" % (time.monotonic() - start))
        ok = True
    except (HAError, RuntimeError, Budget, KeyboardInterrupt, subprocess.TimeoutExpired) as e:
        print("failover.py: FAILED: %s (logs in %s)" % (e, work), file=sys.stderr)
        rc = 1
    finally:
        signal.alarm(0)
        for p in registry:
            p.cleanup()
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif ok:
            print("logs kept in %s" % work)
    return rc


if __name__ == "__main__":
    sys.exit(main())
