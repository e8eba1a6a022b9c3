"""Crash and durability: kill -9 of the mount daemon, lazy unmount of the dead mount
point, remount on the same -meta.

- fsync'ed data is intact;
- closed data (no fsync) is intact: close is the durability point of the mount;
- a namespace change is durable once its call returned;
- a file unlinked while open is gone after the remount (released as an orphan), its
  inode no longer counted, with no error in the new mount's log.
"""

import os
import re

import pytest

from kelp_fuse_conftest import MiB, read_file, wait_until, write_file


def used_inodes(path):
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


def log_errors(mount):
    """Error lines (glog 'E' prefix) of a mount's log."""
    return [line for line in mount.log_text().splitlines() if re.match(r"^E\d{4} ", line)]


def test_fsync_then_kill9(kelp):
    kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1"])
    synced = os.urandom(3 * MiB + 123)
    fd = os.open(m.path("synced"), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, synced)
    os.fsync(fd)
    # more data after the fsync, not synced and not closed: may be lost, must not
    # damage what was synced
    os.pwrite(fd, b"unsynced tail", len(synced))
    m.crash()
    try:
        os.close(fd)
    except OSError:
        pass   # the daemon is gone: ENOTCONN
    m2 = kelp.remount(m)
    got = read_file(m2.path("synced"))
    assert got[:len(synced)] == synced, "fsync'ed data damaged by a crash"
    assert len(got) in (len(synced), len(synced) + len(b"unsynced tail")), len(got)
    if len(got) > len(synced):
        assert got[len(synced):] == b"unsynced tail"
    assert not log_errors(m2), log_errors(m2)


def test_close_is_durable_and_namespace_changes_survive_kill9(kelp):
    close_durable_body(kelp, [])


@pytest.mark.parametrize("engine", ["lmdb"])   # -writeback needs LMDB
def test_close_is_durable_and_namespace_changes_survive_kill9_writeback(kelp, engine):
    """The same with -writeback: closes journal (tests/fuse/test_writeback.py kills the
    mount while nothing could be uploaded)."""
    close_durable_body(kelp, ["-writeback"])


def close_durable_body(kelp, args):
    kelp.start_server()
    m = kelp.mount(args)
    files = {}
    for i, n in enumerate((0, 1, 4095, 100000, 4 * MiB, 4 * MiB + 1, 9 * MiB + 77)):
        files["f%d" % i] = os.urandom(n)
        write_file(m.path("f%d" % i), files["f%d" % i])      # closed, never fsync'ed
    os.makedirs(m.path("a", "b"))
    write_file(m.path("a", "b", "moved"), b"m")
    os.rename(m.path("a", "b"), m.path("c"))
    os.symlink("f1", m.path("link"))
    os.link(m.path("f2"), m.path("hard"))
    os.unlink(m.path("f0"))
    del files["f0"]
    os.chmod(m.path("f3"), 0o600)
    os.utime(m.path("f3"), ns=(10**18, 10**18 + 5))
    os.setxattr(m.path("f3"), "user.k", b"v")
    # overwritten in place and truncated, closed
    with open(m.path("f4"), "r+b") as f:
        f.seek(1000)
        f.write(b"OVERWRITE")
    files["f4"] = files["f4"][:1000] + b"OVERWRITE" + files["f4"][1009:]
    os.truncate(m.path("f5"), 3 * MiB)
    files["f5"] = files["f5"][:3 * MiB]
    m.crash()
    m2 = kelp.remount(m)
    for name, data in files.items():
        assert read_file(m2.path(name)) == data, name
    assert sorted(os.listdir(m2.mnt)) == sorted(list(files) + ["a", "c", "link", "hard"])
    assert os.listdir(m2.path("a")) == []
    assert read_file(m2.path("c", "moved")) == b"m"
    assert os.readlink(m2.path("link")) == "f1"
    assert os.stat(m2.path("hard")).st_nlink == 2
    st = os.stat(m2.path("f3"))
    assert st.st_mode & 0o777 == 0o600 and st.st_mtime_ns == 10**18 + 5
    assert os.getxattr(m2.path("f3"), "user.k") == b"v"
    assert not log_errors(m2), log_errors(m2)


def test_unlinked_open_file_gone_after_kill9(kelp):
    kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1"])
    write_file(m.path("keep"), b"keep")
    data = os.urandom(2 * MiB + 5)
    write_file(m.path("orphan"), data)
    base = used_inodes(m.mnt)
    fd = os.open(m.path("orphan"), os.O_RDWR)
    os.unlink(m.path("orphan"))
    os.pwrite(fd, b"still writable", 0)
    assert os.pread(fd, 14, 0) == b"still writable"
    assert used_inodes(m.mnt) == base, "the open, unlinked inode is still there"
    m.crash()
    try:
        os.close(fd)
    except OSError:
        pass
    m2 = kelp.remount(m)
    assert sorted(os.listdir(m2.mnt)) == ["keep"]
    assert used_inodes(m2.mnt) == base - 1, "the orphan inode was not released"
    assert read_file(m2.path("keep")) == b"keep"
    # the orphan's blobs are deleted in the cluster: only "keep" is left
    srv = kelp.server

    def live_blobs():
        dc, _, fc = srv.delete_totals()
        return fc - dc
    wait_until("the orphan's chunks to be deleted (live blobs == 1)",
               lambda: live_blobs() == 1, 20, interval=0.2)
    assert not log_errors(m2), log_errors(m2)
    assert m2.unmount() == 0


def test_sigterm_with_open_file_keeps_written_data(kelp):
    """A clean stop (SIGTERM) while an application still has a file open with written
    but not yet uploaded data: the mount exits promptly (it does not wait for the
    application to close), and the bytes write() accepted are stored before it exits
    (the application's later close may fail: the mount is gone)."""
    import signal
    import subprocess
    import time
    kelp.start_server()
    m = kelp.mount()
    fd = os.open(m.path("open-at-stop"), os.O_CREAT | os.O_WRONLY, 0o644)
    data = os.urandom(100000)
    problems = []
    try:
        os.write(fd, data)
        m.expect_running = False
        t0 = time.monotonic()
        m.signal_group(signal.SIGTERM)
        try:
            m.proc.wait(10)
        except subprocess.TimeoutExpired:
            problems.append("the mount did not exit within 10 s of SIGTERM while a file "
                            "was open (it exits only once the file is closed)")
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    m.proc.wait(10)
    if m.proc.returncode != 0:
        problems.append("exit status %s after SIGTERM" % m.proc.returncode)
    print("exited %.1f s after SIGTERM" % (time.monotonic() - t0))
    m2 = kelp.remount(m)
    got = read_file(m2.path("open-at-stop"))
    if got != data:
        problems.append("the %d bytes written before the SIGTERM are lost (size after "
                        "remount %d)" % (len(data), len(got)))
    assert not problems, "; ".join(problems)
