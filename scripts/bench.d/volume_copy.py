#!/usr/bin/env python3
"""A volume copy between two volume servers on this machine against `cp` of the same
.dat between two directories of the same disk (issue 13: at least 0.7x of cp).

Usage: volume_copy.py KELP_BIN [SIZE_MIB] [ROUNDS]. Fills one volume with SIZE_MIB (1024) of
1 MiB blobs, then alternates ROUNDS (3) times: cp of its .dat followed by fsync, and a
kelp copy (POST /admin/volume/copy, which streams .dat and .idx, fsyncs, checks both
CRC32Cs against the source and opens the volume), deleting the copy between rounds.
Both read the source from the page cache. Prints one line per run and the ratio of the
medians."""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests


def start(kelp, tmp, name):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    ready = os.path.join(tmp, name + ".ready")
    p = subprocess.Popen([kelp, "volume", "-port=0", "-readyFile=" + ready, "-dir=" + d,
                          "-max=4", "-ip=127.0.0.1"], stderr=open(ready + ".log", "w"),
                         start_new_session=True)
    for _ in range(500):
        if os.path.exists(ready) and open(ready).read().endswith("\n"):
            return p, "127.0.0.1:%d" % int(open(ready).read()), d
        time.sleep(0.02)
    raise SystemExit("volume server %s did not start" % name)


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    kelp = sys.argv[1]
    size_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    tmp = tempfile.mkdtemp(prefix="kelp-copy-bench-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    procs = []
    try:
        pa, a, da = start(kelp, tmp, "a")
        procs.append(pa)
        pb, b, db = start(kelp, tmp, "b")
        procs.append(pb)
        s = requests.Session()
        assert s.get("http://%s/admin/assign_volume?volume=1" % a).status_code == 200
        blob = os.urandom(1 << 20)
        for i in range(size_mib):
            r = s.put("http://%s/1,%x%08x" % (a, i + 1, 0x1234), data=blob)
            assert r.status_code == 201, r.text
        src = os.path.join(da, "1.dat")
        size = os.path.getsize(src)
        cpdir = os.path.join(tmp, "cp")
        os.makedirs(cpdir)
        with open(src, "rb") as f:  # warm the page cache for both
            while f.read(1 << 24):
                pass
        cp_t, kelp_t = [], []
        for rnd in range(rounds):
            dst = os.path.join(cpdir, "1.dat")
            t0 = time.monotonic()
            subprocess.run(["cp", src, dst], check=True)
            fd = os.open(dst, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            cp_t.append(time.monotonic() - t0)
            os.unlink(dst)

            ca, cb = cpu_seconds(pa.pid), cpu_seconds(pb.pid)
            t0 = time.monotonic()
            r = s.post("http://%s/admin/volume/copy?volume=1&source=%s" % (b, a))
            assert r.status_code == 202, r.text
            while True:
                j = [c for c in s.get("http://%s/admin/volume/copy/status" % b).json()["Copies"]
                     if c["volume"] == 1][0]
                if j["state"] == "done":
                    break
                assert j["state"] in ("running", "caught_up"), j
                time.sleep(0.01)
            kelp_t.append(time.monotonic() - t0)
            cpu = (cpu_seconds(pa.pid) - ca, cpu_seconds(pb.pid) - cb)
            assert s.post("http://%s/admin/delete_volume?volume=1" % b).status_code == 200
            print("round %d: cp+fsync %.2f s (%.0f MiB/s), kelp copy %.2f s (%.0f MiB/s; CPU "
                  "source %.2f s, target %.2f s)" % (
                      rnd + 1, cp_t[-1], size / 1048576 / cp_t[-1], kelp_t[-1],
                      size / 1048576 / kelp_t[-1], cpu[0], cpu[1]), flush=True)
        cm, km = statistics.median(cp_t), statistics.median(kelp_t)
        print("volume of %.0f MiB: median cp+fsync %.2f s, kelp copy %.2f s: kelp at %.2fx of cp"
              % (size / 1048576, cm, km, cm / km))
        os.system("grep 'copy of volume 1' %s/b.ready.log | tail -%d" % (tmp, rounds))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


main()
