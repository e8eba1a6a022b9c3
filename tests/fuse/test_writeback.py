"""`kelp mount -writeback`: closes journal their data on the local disk and return; the
journal's uploaders commit it later; a kill -9 of the mount loses nothing a close()
returned for (the journal is replayed at the next mount).

The cluster here is a master and a separate volume server, so that the volume server
alone can be stopped: the mount still answers (the masters do), uploads fail, and the
data stays journaled. LMDB only: -writeback is refused with a shared metadata
(test_refused_with_a_shared_metadata).
"""

import errno
import os
import re
import subprocess
import types

import pytest

from kelp_fuse_conftest import (READY_TIMEOUT, Daemon, KelpError, MiB, read_file, wait_until,
                                write_file)


@pytest.fixture(params=["lmdb"])
def engine(request):
    """-writeback needs LMDB: these tests run once."""
    return request.param


WB = ["-writeback", "-timeout=5"]


def log_errors(mount):
    return [line for line in mount.log_text().splitlines() if re.match(r"^E\d{4} ", line)]


def _ready_port(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or "0")
    except (OSError, ValueError):
        return 0


class SplitCluster:
    """`kelp master` and `kelp volume` as two processes (the volume server can go)."""

    def __init__(self, kelp):
        self.kelp = kelp
        tmp = kelp.tmp
        ready = str(tmp / "master.ready")
        self.master = Daemon("master", str(tmp / "master.log"))
        self.master.spawn([kelp.kelp_bin, "master", "-ip=127.0.0.1", "-port=0",
                           "-mdir=" + str(tmp / "mdir"), "-readyFile=" + ready,
                           "-pulseSeconds=1"], str(tmp))
        os.makedirs(str(tmp / "mdir"), exist_ok=True)
        kelp.daemons.append(self.master)
        port = wait_until("the master", lambda: _ready_port(ready), READY_TIMEOUT)
        # what Mount needs of a server
        self.server = types.SimpleNamespace(master_addr="127.0.0.1:%d" % port)
        kelp.server = self.server
        self.volume = None
        self.starts = 0
        self.start_volume()

    def nodes(self):
        import requests
        r = requests.get("http://%s/dir/status" % self.server.master_addr, timeout=2)
        topo = r.json()["Topology"]
        return [dn for dc in topo.get("DataCenters") or [] for rk in dc.get("Racks") or []
                for dn in rk.get("DataNodes") or []]

    def start_volume(self):
        tmp = self.kelp.tmp
        self.starts += 1
        ready = str(tmp / ("volume%d.ready" % self.starts))
        self.volume = Daemon("volume", str(tmp / "volume.log"))
        os.makedirs(str(tmp / "vdata"), exist_ok=True)
        self.volume.spawn([self.kelp.kelp_bin, "volume", "-ip=127.0.0.1", "-port=0",
                           "-master=" + self.server.master_addr, "-dir=" + str(tmp / "vdata"),
                           "-max=20", "-readyFile=" + ready, "-pulseSeconds=1"], str(tmp))
        self.kelp.daemons.append(self.volume)
        wait_until("the volume server", lambda: _ready_port(ready), READY_TIMEOUT)
        wait_until("the volume server on the master",
                   lambda: any(n.get("Url") for n in self.nodes()), READY_TIMEOUT)

    def stop_volume(self):
        self.volume.kill9()
        # the master stops handing out its volumes after 3 missed heartbeats
        wait_until("the master to notice the volume server is gone",
                   lambda: not self.nodes(), 15)


def journal_entries(m):
    d = os.path.join(m.meta, "cache", "journal")
    try:
        return sorted(n for n in os.listdir(d) if n.endswith(".wbj"))
    except FileNotFoundError:
        return []


def wait_drained(m, timeout=30):
    wait_until("the write-back journal to drain", lambda: not journal_entries(m), timeout)


def test_refused_with_a_shared_metadata(kelp_bin, tmp_path):
    os.makedirs(str(tmp_path / "mnt"))
    r = subprocess.run([kelp_bin, "mount", "-dir=" + str(tmp_path / "mnt"),
                        "-meta=postgres://kelp@127.0.0.1:1/kelp", "-writeback"],
                       capture_output=True, timeout=30)
    assert r.returncode == 2, r
    assert b"-writeback needs an LMDB -meta" in r.stderr, r.stderr


def test_journaled_files_survive_kill9(kelp):
    c = SplitCluster(kelp)
    m = kelp.mount(WB)
    files = {}
    # committed before the volume server goes
    base = os.urandom(300000)
    write_file(m.path("base"), base)
    files["base"] = base
    # truncates of just-closed (journaled) files: they upload first
    for i in range(5):
        data = os.urandom(5000 + i)
        write_file(m.path("t%d" % i), data)
        os.truncate(m.path("t%d" % i), 1000 * i)
        files["t%d" % i] = data[:1000 * i]
    write_file(m.path("otrunc"), b"x" * 9000)
    write_file(m.path("otrunc"), b"short")          # open(O_TRUNC) of a journaled file
    files["otrunc"] = b"short"
    wait_drained(m)

    c.stop_volume()
    # many small files: each close journals, nothing reaches the cluster
    for i in range(150):
        data = os.urandom(1 + (i * 97) % 9000)
        write_file(m.path("s%03d" % i), data)
        files["s%03d" % i] = data
    # an overwrite in the middle of a committed file
    with open(m.path("base"), "r+b") as f:
        f.seek(1000)
        f.write(b"OVERWRITE")
    files["base"] = base[:1000] + b"OVERWRITE" + base[1009:]
    # appends by several closes, and an overwrite of journaled bytes
    for k in range(5):
        with open(m.path("log"), "ab") as f:
            f.write(b"line %d\n" % k)
    with open(m.path("log"), "r+b") as f:
        f.write(b"LINE")
    files["log"] = b"LINE 0\n" + b"".join(b"line %d\n" % k for k in range(1, 5))
    # a file bigger than a chunk (its full chunks were on their way at the close)
    big = os.urandom(4 * MiB + 4321)
    write_file(m.path("big"), big)
    files["big"] = big
    # renames and unlinks of journaled files
    os.rename(m.path("s000"), m.path("renamed"))
    files["renamed"] = files.pop("s000")
    os.mkdir(m.path("dir"))
    os.rename(m.path("s001"), m.path("dir", "moved"))
    files["dir/moved"] = files.pop("s001")
    for name in ("s002", "s003"):
        os.unlink(m.path(name))
        del files[name]
    write_file(m.path("gone"), b"replaced")        # renamed over a journaled file
    os.rename(m.path("gone"), m.path("s004"))
    files["s004"] = b"replaced"
    # readers of this mount see the journaled bytes (base's others are in the cluster)
    for name in ("s010", "log", "big"):
        assert read_file(m.path(name)) == files[name], name
    assert journal_entries(m), "nothing was journaled"
    m.crash()

    c.start_volume()
    m2 = kelp.remount(m)
    for name, data in files.items():
        assert read_file(m2.path(name)) == data, name
        assert os.stat(m2.path(name)).st_size == len(data), name
    for name in ("s002", "s003", "gone"):
        assert not os.path.exists(m2.path(name)), name
    wait_drained(m2)
    assert m2.unmount() == 0
    # in the cluster and the metadata now: a mount without the flag and a cold cache
    m3 = kelp.remount(m2, args=["-cacheCapacityMB=0"])
    for name, data in files.items():
        assert read_file(m3.path(name)) == data, name
    # small files share blobs (slices of one upload): reference counts and blobs agree
    r = subprocess.run([kelp.kelp_bin, "fsck", "-meta=" + m3.meta,
                        "-master=" + c.server.master_addr], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and not r.stdout.strip(), (r.stdout, r.stderr)
    assert not log_errors(m2), log_errors(m2)
    assert not log_errors(m3), log_errors(m3)


def metric(port, name):
    import requests
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_closes_succeed_while_the_volume_server_is_down(kelp):
    c = SplitCluster(kelp)
    port_file = str(kelp.tmp / "metrics.port")
    m = kelp.mount(WB + ["-metricsPort=0", "-metricsPortFile=" + port_file])
    port = _ready_port(port_file)
    c.stop_volume()
    files = {}
    for i in range(40):
        data = os.urandom(4096)
        fd = os.open(m.path("f%02d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, data)
        os.close(fd)        # no network: returns at once although no volume server answers
        files["f%02d" % i] = data
    # another process reads them
    for name, data in list(files.items())[:5]:
        out = subprocess.run(["cat", m.path(name)], capture_output=True, timeout=30)
        assert out.returncode == 0 and out.stdout == data, name
    assert len(journal_entries(m)) == 40
    assert metric(port, "kelp_mount_writeback_journal_entries") == 40
    assert metric(port, "kelp_mount_writeback_journal_bytes") == 40 * 4096
    # fsync means "in the cluster": it fails while the cluster cannot take the data
    fd = os.open(m.path("synced"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"synced")
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    # EIO, or ENOSPC: the master has no writable volume left without the volume server
    assert e.value.errno in (errno.EIO, errno.ENOSPC), e.value
    os.close(fd)
    files["synced"] = b"synced"
    c.start_volume()
    wait_drained(m, 60)
    for name, data in files.items():
        assert read_file(m.path(name)) == data, name
    assert metric(port, "kelp_mount_writeback_journal_entries") == 0
    assert metric(port, "kelp_mount_writeback_fallbacks_total") == 0
    # documented in docs/operations.md's table of metrics
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(root, "docs", "operations.md")) as f:
        documented = set(re.findall(r"^\| `(kelp_[a-z_]+)` \|", f.read(), re.M))
    assert {"kelp_mount_writeback_journal_bytes", "kelp_mount_writeback_journal_entries",
            "kelp_mount_writeback_fallbacks_total"} <= documented
    assert m.unmount() == 0
    m2 = kelp.remount(m, args=["-cacheCapacityMB=0"])
    for name, data in files.items():
        assert read_file(m2.path(name)) == data, name


def test_fsync_does_not_depend_on_the_journal(kelp):
    c = SplitCluster(kelp)
    m = kelp.mount(WB)
    data = os.urandom(10000)
    fd = os.open(m.path("synced"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    write_file(m.path("closed"), b"closed")
    c.stop_volume()
    m.crash()
    # fsync()'ed data is in the cluster: losing the journal does not lose it
    jdir = os.path.join(m.meta, "cache", "journal")
    for n in os.listdir(jdir):
        if n.endswith(".wbj"):
            os.unlink(os.path.join(jdir, n))
    c.start_volume()
    m2 = kelp.remount(m)
    assert read_file(m2.path("synced")) == data


def test_damaged_entries_are_set_aside(kelp):
    c = SplitCluster(kelp)
    m = kelp.mount(WB)
    c.stop_volume()
    files = {}
    for i in range(6):
        files["f%d" % i] = os.urandom(3000 + i)
        write_file(m.path("f%d" % i), files["f%d" % i])
    entries = journal_entries(m)
    assert len(entries) == 6
    m.crash()
    jdir = os.path.join(m.meta, "cache", "journal")
    # one with a flipped data byte, one cut short, one header damaged, and a stray file
    with open(os.path.join(jdir, entries[1]), "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with open(os.path.join(jdir, entries[3]), "r+b") as f:
        f.truncate(500)
    with open(os.path.join(jdir, entries[4]), "r+b") as f:
        f.seek(30)
        f.write(b"\x01")
    write_file(os.path.join(jdir, "notes.txt"), b"not an entry")
    c.start_volume()
    # a mount without -writeback replays what an earlier -writeback mount left
    m2 = kelp.remount(m, args=["-timeout=5"])
    for i in (0, 2, 5):
        assert read_file(m2.path("f%d" % i)) == files["f%d" % i], i
    for i in (1, 3, 4):
        assert read_file(m2.path("f%d" % i)) == b"", i   # created, data lost with its entry
    errors = "\n".join(log_errors(m2))
    for name, why in ((entries[1], "data checksum mismatch"), (entries[3], "length"),
                      (entries[4], "header checksum mismatch")):
        assert name in errors and why in errors, (name, errors)
    assert sorted(os.listdir(os.path.join(jdir, "damaged"))) == sorted(
        [entries[1], entries[3], entries[4]])
    wait_drained(m2)
    assert os.path.exists(os.path.join(jdir, "notes.txt"))
    assert "holds write-back journal entries of an earlier -writeback mount" in m2.log_text()


def test_a_full_journal_falls_back_to_uploading(kelp):
    kelp.start_server()
    m = kelp.mount(WB + ["-writebackMB=1"])
    files = {}
    for i in range(6):
        files["f%d" % i] = os.urandom(700 * 1024)
        write_file(m.path("f%d" % i), files["f%d" % i])
    for name, data in files.items():
        assert read_file(m.path(name)) == data, name
    wait_until("the journal-full warning",
               lambda: "write-back journal" in m.log_text() and "is full" in m.log_text(), 10)
    m.crash()
    m2 = kelp.remount(m)
    for name, data in files.items():
        assert read_file(m2.path(name)) == data, name


def test_a_full_disk_falls_back_to_uploading(kelp):
    kelp.start_server()
    cache = kelp.tmp / "smallcache"
    os.makedirs(str(cache))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
    try:
        m = kelp.mount(WB + ["-cacheDir=" + str(cache), "-cacheCapacityMB=0"])
        files = {}
        for i in range(5):
            files["f%d" % i] = os.urandom(400 * 1024)
            write_file(m.path("f%d" % i), files["f%d" % i])
        wait_until("the journal-refused warning",
                   lambda: "cannot be written" in m.log_text(), 10)
        m.crash()
        m2 = kelp.remount(m)
        for name, data in files.items():
            assert read_file(m2.path(name)) == data, name
        assert m2.unmount() == 0
    finally:
        subprocess.run(["umount", "-l", str(cache)], timeout=30)
