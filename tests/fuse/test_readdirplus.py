"""READDIRPLUS: a directory listing carries each entry's attributes and a lookup
reference, so `ls -l` (or `find`, `grep -r`) of a directory the kernel does not cache
asks no LOOKUP per name; the references it hands out are counted like a LOOKUP's, so a
file listed (even several times) and then removed is still freed."""

import os
import stat
import subprocess
import sys
import time

import requests

from kelp_fuse_conftest import wait_until, write_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import promtext  # noqa: E402


def _ops(port, op):
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    return promtext.total(promtext.parse(text), "kelp_mount_operation_duration_seconds_count",
                          op=op)


def _settled_ops(port, op):
    """The count once two scrapes 0.1 s apart agree (an operation is counted just
    after its reply)."""
    last = _ops(port, op)
    for _ in range(50):
        time.sleep(0.1)
        now = _ops(port, op)
        if now == last:
            return now
        last = now
    return last


def _tree(root):
    """name -> (mode, size, nlink, uid, mtime_ns) of every entry of root, by lstat."""
    out = {}
    for name in os.listdir(root):
        st = os.lstat(os.path.join(root, name))
        out[name] = (st.st_mode, st.st_size, st.st_nlink, st.st_uid, st.st_mtime_ns)
    return out


def test_ls_l_asks_no_lookup_per_name(kelp, tmp_path):
    kelp.start_server()
    m = kelp.mount()
    d = m.path("d")
    os.mkdir(d)
    n = 300   # about a dozen READDIRPLUS replies of one page each
    for i in range(n):
        write_file(os.path.join(d, "f%03d" % i), b"x" * (i * 7))
        os.chmod(os.path.join(d, "f%03d" % i), 0o600 + (i % 8))
    os.mkdir(os.path.join(d, "sub"))
    os.symlink("f001", os.path.join(d, "link"))
    os.link(os.path.join(d, "f002"), os.path.join(d, "hard"))
    before = _tree(d)
    assert len(before) == n + 3

    # a fresh mount: the kernel caches nothing of d
    port_file = str(tmp_path / "metrics.port")
    m = kelp.remount(m, args=["-metricsPort=0", "-metricsPortFile=" + port_file])
    with open(port_file) as f:
        port = int(f.read())
    lookups0 = _settled_ops(port, "lookup")
    plus0 = _ops(port, "readdirplus")
    out = subprocess.run(["ls", "-l", "--time-style=full-iso", d], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == n + 3 + 1   # "total" first
    after = _tree(d)
    assert after == before
    lookups = _settled_ops(port, "lookup") - lookups0
    # "d" itself, and a few the kernel may ask anyway; not one per name
    assert lookups <= 5, lookups
    assert _ops(port, "readdirplus") - plus0 >= 2
    assert os.readlink(os.path.join(d, "link")) == "f001"
    assert stat.S_ISDIR(os.lstat(os.path.join(d, "sub")).st_mode)


def test_listed_then_removed_files_are_freed(kelp):
    """The references READDIRPLUS hands out (also for names the kernel already caches)
    come back in FORGETs: a removed file is released and its blobs deleted."""
    srv = kelp.start_server()
    m = kelp.mount(["-gcGraceSec=1"])
    d = m.path("d")
    os.mkdir(d)
    base = srv.delete_totals()
    for i in range(40):
        write_file(os.path.join(d, "f%02d" % i), os.urandom(1000 + i))
    m = kelp.remount(m)
    for _ in range(3):   # listed three times: three references per name
        assert len(os.listdir(d)) == 40
        for name in os.listdir(d):
            os.lstat(os.path.join(d, name))
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)

    def deleted():
        dc, _, _ = srv.delete_totals()
        return dc - base[0] >= 40

    wait_until("the 40 removed files' blobs to be deleted", deleted, 30)
    assert os.listdir(m.mnt) == []


def test_listing_of_a_directory_changed_meanwhile(kelp):
    """Entries created and removed between two reads of one directory stream: the
    listing goes on after the last name returned, every name listed exists or existed,
    and attributes come with the right inode."""
    kelp.start_server()
    m = kelp.mount()
    d = m.path("d")
    os.mkdir(d)
    for i in range(200):
        write_file(os.path.join(d, "a%03d" % i), b"%d" % i)
    seen = []
    with os.scandir(d) as it:
        for k, e in enumerate(it):
            seen.append(e.name)
            if k == 20:
                os.unlink(os.path.join(d, "a150"))
                write_file(os.path.join(d, "z-new"), b"new")
            if e.name not in ("a150",):
                st = e.stat(follow_symlinks=False)
                assert st.st_ino == os.lstat(os.path.join(d, e.name)).st_ino
    assert len(seen) == len(set(seen))
    assert "z-new" in seen
    assert set("a%03d" % i for i in range(200)) - set(seen) <= {"a150"}
