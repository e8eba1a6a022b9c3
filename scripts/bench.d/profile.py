#!/usr/bin/python3
"""scripts/bench profile: where one small-file operation spends its time.

Starts a master, a volume server and a kelp mount (separate processes, so each one's CPU
time is its own) and libfuse's passthrough_ll over a directory on the same disk, then
runs each workload on both and prints, per operation: the wall time, the CPU time
(user+system, from /proc/<pid>/stat) of the mount, the master, the volume server, the
passthrough daemon and the client, and the FUSE requests the kernel sent (counted from
the mount's -o debug log in a separate, smaller run). CPU time per operation is far
less sensitive to the load of a shared machine than a rate.

The tools of issue 14 (tar -xf of /usr/include, then ls -lR and grep -r of the tree,
caches dropped before each) run the same way, per entry of the tree; their FUSE
requests are counted on both file systems (passthrough_ll's -d log too), so that the
CPU time of a daemon per request can be compared.

usage: profile.py KELP [--files N] [--debug-files N] [--only create,stat,tar,...]
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def self_cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_for(pred, secs, what):
    end = time.time() + secs
    while time.time() < end:
        if pred():
            return
        time.sleep(0.02)
    raise SystemExit("timed out waiting for " + what)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


DATA = os.urandom(4096)


def w_create(d, n):
    os.makedirs(os.path.join(d, "small"), exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, "small", "f%05d" % i), "wb") as f:
            f.write(DATA)


def w_stat(d, n):
    for i in range(n):
        os.stat(os.path.join(d, "small", "f%05d" % i))


def w_read(d, n):
    for i in range(n):
        with open(os.path.join(d, "small", "f%05d" % i), "rb") as f:
            f.read()


def w_unlink(d, n):
    for i in range(n):
        os.unlink(os.path.join(d, "small", "f%05d" % i))


def w_seqread(d, n):
    # n MiB written (not timed here: see setup), read after dropping caches
    with open(os.path.join(d, "big"), "rb") as f:
        while f.read(1 << 20):
            pass


TARBALL = None  # /usr/include as a tar file (made in main)


def w_tar(d, n):
    os.makedirs(os.path.join(d, "tree"), exist_ok=True)
    subprocess.run(["tar", "-xf", TARBALL, "-C", os.path.join(d, "tree")], check=True)


def w_ls(d, n):
    subprocess.run(["ls", "-lR", os.path.join(d, "tree")], check=True, stdout=subprocess.DEVNULL)


def w_grep(d, n):
    subprocess.run(["grep", "-r", "kelp-no-such-string", os.path.join(d, "tree")],
                   stdout=subprocess.DEVNULL)


WORK = collections.OrderedDict(
    [("create", w_create), ("stat", w_stat), ("read", w_read), ("unlink", w_unlink)]
)
TOOLS = collections.OrderedDict([("tar", w_tar), ("ls", w_ls), ("grep", w_grep)])
# Workloads that start with cold caches: dropped (sync, drop_caches) before the clock
# starts, so that writing back what the previous workload left dirty is not timed.
COLD = {"stat", "read", "seqread", "tar", "ls", "grep"}


def run_cold(name, fn, d, n):
    if name in COLD:
        drop_caches()
    fn(d, n)


def count_ops(log, start, read_sizes=None):
    """The FUSE requests in a debug log from offset start, by opcode (and the sizes of
    the READ replies appended to read_sizes when given)."""
    ops = collections.Counter()
    with open(log, errors="replace") as f:
        f.seek(start)
        for line in f:
            m = re.search(r"opcode: (\w+)", line)
            if m:
                ops[m.group(1)] += 1
            m = read_sizes is not None and re.search(r"read\[\d+\] (\d+) bytes", line)
            if m:
                read_sizes.append(int(m.group(1)))
    return ops


class Cluster:
    def __init__(self, kelp, work, debug=False, extra=()):
        self.kelp, self.work, self.procs = kelp, work, {}
        os.makedirs(work + "/vol", exist_ok=True)
        os.makedirs(work + "/mnt", exist_ok=True)
        log = open(work + "/master.log", "w")
        self.procs["master"] = subprocess.Popen(
            [kelp, "master", "-port=0", "-mdir=" + work, "-readyFile=" + work + "/mready"],
            stderr=log)
        wait_for(lambda: os.path.getsize(work + "/mready") if os.path.exists(work + "/mready") else 0, 20, "master")
        self.mport = open(work + "/mready").read().strip()
        self.procs["volume"] = subprocess.Popen(
            [kelp, "volume", "-port=0", "-dir=" + work + "/vol", "-max=16",
             "-master=127.0.0.1:" + self.mport, "-readyFile=" + work + "/vready"],
            stderr=open(work + "/volume.log", "w"))
        wait_for(lambda: os.path.exists(work + "/vready") and os.path.getsize(work + "/vready"), 20, "volume")
        args = [kelp, "mount", "-dir=" + work + "/mnt", "-master=127.0.0.1:" + self.mport,
                "-meta=" + work + "/meta", "-readyFile=" + work + "/mntready"] + list(extra)
        if debug:
            args.append("-o=debug")
        self.procs["mount"] = subprocess.Popen(args, stderr=open(work + "/mount.log", "w"))
        wait_for(lambda: os.path.exists(work + "/mntready"), 20, "mount")
        # the first assign grows volumes: not part of any measurement
        with open(work + "/mnt/warm", "wb") as f:
            f.write(b"x")
        os.unlink(work + "/mnt/warm")

    def stop(self):
        subprocess.run(["fusermount3", "-u", "-z", self.work + "/mnt"], stderr=subprocess.DEVNULL)
        for p in reversed(list(self.procs.values())):
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def passthrough(work, name="pt", debug=False):
    ex = "/usr/share/doc/libfuse3-dev/examples"
    if not os.path.exists(work + "/pt_ll"):
        for f in ("passthrough_ll.c", "passthrough_helpers.h"):
            shutil.copy(os.path.join(ex, f), work)
        flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["gcc", "-O2", work + "/passthrough_ll.c"] + flags + ["-o", work + "/pt_ll"],
                       check=True)
    os.makedirs(work + "/" + name + "-src")
    os.makedirs(work + "/" + name)
    args = [work + "/pt_ll", "-f", "-o", "source=" + work + "/" + name + "-src", work + "/" + name]
    p = subprocess.Popen(args + (["-d"] if debug else []),
                         stderr=open(work + "/" + name + ".log", "w") if debug else None)
    wait_for(lambda: os.path.ismount(work + "/" + name), 20, "passthrough_ll")
    return p


def measure(name, fn, d, n, pids):
    if name in COLD:
        drop_caches()
    before = {k: cpu(p) for k, p in pids.items()}
    c0 = self_cpu()
    t0 = time.time()
    fn(d, n)
    t1 = time.time()
    c1 = self_cpu()
    after = {k: cpu(p) for k, p in pids.items()}
    out = {"wall": t1 - t0, "client": c1 - c0}
    for k in pids:
        out[k] = after[k] - before[k]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kelp")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--debug-files", type=int, default=200)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--mount-flags", default="")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    work = tempfile.mkdtemp(prefix="kelp-profile-", dir="/var/tmp")
    extra = a.mount_flags.split() if a.mount_flags else []
    cl = pt = ptd = None
    global TARBALL
    TARBALL = work + "/include.tar"
    subprocess.run(["tar", "-cf", TARBALL, "-C", "/usr", "include"], check=True)
    entries = len(subprocess.run(["tar", "-tf", TARBALL], capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    try:
        pt = passthrough(work)
        cl = Cluster(a.kelp, work + "/k", extra=extra)
        pids_k = {"mount": cl.procs["mount"].pid, "master": cl.procs["master"].pid,
                  "volume": cl.procs["volume"].pid}
        pids_p = {"pt": pt.pid}
        print("machine: %d cores, load %s; /usr/include: %d entries" % (
            os.cpu_count(), open("/proc/loadavg").read().split()[:3], entries))
        print("%-8s %-5s %9s %9s | CPU us/op: %7s %7s %7s %7s %7s" % (
            "op", "fs", "ops/s", "us/op", "client", "fuse-d", "master", "volume", "total"))
        for name, fn in WORK.items():
            if only and name not in only:
                continue
            for fs, d, pids in (("pt", work + "/pt", pids_p), ("kelp", work + "/k/mnt", pids_k)):
                r = measure(name, fn, d, a.files, pids)
                daemon = r.get("pt", r.get("mount", 0))
                tot = r["client"] + daemon + r.get("master", 0) + r.get("volume", 0)
                print("%-8s %-5s %9.0f %9.1f | %18.1f %7.1f %7s %7s %7.1f" % (
                    name, fs, a.files / r["wall"], r["wall"] / a.files * 1e6,
                    r["client"] / a.files * 1e6, daemon / a.files * 1e6,
                    "%.1f" % (r["master"] / a.files * 1e6) if "master" in r else "-",
                    "%.1f" % (r["volume"] / a.files * 1e6) if "volume" in r else "-",
                    tot / a.files * 1e6), flush=True)
        for name, fn in TOOLS.items():
            if only and name not in only:
                continue
            for fs, d, pids in (("pt", work + "/pt", pids_p), ("kelp", work + "/k/mnt", pids_k)):
                r = measure(name, fn, d, entries, pids)
                daemon = r.get("pt", r.get("mount", 0))
                tot = r["client"] + daemon + r.get("master", 0) + r.get("volume", 0)
                print("%-8s %-5s %8.2f s %8.1f | %18.1f %7.1f %7s %7s %7.1f  (per entry)" % (
                    name, fs, r["wall"], r["wall"] / entries * 1e6,
                    r["client"] / entries * 1e6, daemon / entries * 1e6,
                    "%.1f" % (r["master"] / entries * 1e6) if "master" in r else "-",
                    "%.1f" % (r["volume"] / entries * 1e6) if "volume" in r else "-",
                    tot / entries * 1e6), flush=True)
        if not only or "seqread" in only:
            for fs, d, pids in (("pt", work + "/pt", pids_p), ("kelp", work + "/k/mnt", pids_k)):
                subprocess.run(["dd", "if=/dev/zero", "of=" + d + "/big", "bs=1M",
                                "count=%d" % a.big_mb, "conv=fsync", "status=none"], check=True)
                r = measure("seqread", w_seqread, d, a.big_mb, pids)
                daemon = r.get("pt", r.get("mount", 0))
                print("seqread  %-5s %6.0f MiB/s | CPU ms/MiB: client %.2f daemon %.2f master %s volume %s" % (
                    fs, a.big_mb / r["wall"], r["client"] / a.big_mb * 1e3, daemon / a.big_mb * 1e3,
                    "%.2f" % (r["master"] / a.big_mb * 1e3) if "master" in r else "-",
                    "%.2f" % (r["volume"] / a.big_mb * 1e3) if "volume" in r else "-"), flush=True)
                os.unlink(d + "/big")
        cl.stop()
        cl = None
        if a.debug_files:
            # FUSE requests per operation, from libfuse's debug log (slow: separate run)
            cl = Cluster(a.kelp, work + "/kd", debug=True, extra=extra)
            d = work + "/kd/mnt"
            for name, fn in WORK.items():
                if only and name not in only:
                    continue
                log = work + "/kd/mount.log"
                start = os.path.getsize(log)
                run_cold(name, fn, d, a.debug_files)
                time.sleep(0.3)
                ops = count_ops(log, start)
                print("FUSE requests per %s: %s" % (name, ", ".join(
                    "%s %.2f" % (k, v / a.debug_files) for k, v in ops.most_common())), flush=True)
            ptd = passthrough(work, "ptd", debug=True)
            for name, fn in TOOLS.items():
                if only and name not in only:
                    continue
                for fs, dd, log in (("pt", work + "/ptd", work + "/ptd.log"),
                                    ("kelp", d, work + "/kd/mount.log")):
                    start = os.path.getsize(log)
                    run_cold(name, fn, dd, entries)
                    time.sleep(0.3)
                    ops = count_ops(log, start)
                    print("FUSE requests per entry, %s on %s: %.2f (%s)" % (
                        name, fs, sum(ops.values()) / entries, ", ".join(
                            "%s %.2f" % (k, v / entries) for k, v in ops.most_common())),
                        flush=True)
            if not only or "seqread" in only:
                subprocess.run(["dd", "if=/dev/zero", "of=" + d + "/big", "bs=1M", "count=16",
                                "conv=fsync", "status=none"], check=True)
                log = work + "/kd/mount.log"
                start = os.path.getsize(log)
                run_cold("seqread", w_seqread, d, 16)
                time.sleep(0.3)
                sizes = []
                ops = count_ops(log, start, sizes)
                print("FUSE requests per 4 MiB read sequentially: %s; READ sizes %s" % (
                    ", ".join("%s %.2f" % (k, v / 4) for k, v in ops.most_common()),
                    sorted(collections.Counter(sizes).items())), flush=True)
    finally:
        if cl:
            cl.stop()
        for name, p in (("pt", pt), ("ptd", ptd)):
            if p:
                subprocess.run(["fusermount3", "-u", "-z", work + "/" + name],
                               stderr=subprocess.DEVNULL)
                p.terminate()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
