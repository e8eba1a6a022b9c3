"""The trash (-trashDays): a file losing its last name to rm or to a rename over it moves
to /.trash/<YYYY-MM-DD-HH>/<ino>-<name> with its original path in the xattr
trusted.kelp.trash.path; `mv` out of the trash restores it; what stays longer than the
period is removed for good and its blobs deleted in the cluster. Runs on both engines."""

import errno
import os
import re
import subprocess
import time

import pytest

from kelp_fuse_conftest import MiB, as_nobody, read_file, wait_until, write_file

XATTR = "trusted.kelp.trash.path"
CHUNK = "-chunkSizeLimitMB=1"


def _live(srv):
    dc, _, fc = srv.delete_totals()
    return fc - dc


def _trash_entries(m):
    """{original path: path in the trash} of everything in the trash."""
    out = {}
    top = m.path(".trash")
    if not os.path.isdir(top):
        return out
    for hour in os.listdir(top):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d", hour), hour
        for name in os.listdir(os.path.join(top, hour)):
            p = os.path.join(top, hour, name)
            out[os.getxattr(p, XATTR, follow_symlinks=False).decode()] = p
    return out


def test_rm_goes_to_trash_and_mv_restores(kelp):
    srv = kelp.start_server()
    m = kelp.mount([CHUNK, "-trashDays=1"])
    os.makedirs(m.path("a", "b"))
    data = os.urandom(2 * MiB + 123)
    write_file(m.path("a", "b", "f"), data)
    os.symlink("f", m.path("a", "b", "ln"))
    live = _live(srv)
    os.unlink(m.path("a", "b", "f"))
    os.unlink(m.path("a", "b", "ln"))
    assert os.listdir(m.path("a", "b")) == []
    entries = _trash_entries(m)
    assert set(entries) == {"/a/b/f", "/a/b/ln"}, entries
    f = entries["/a/b/f"]
    st = os.stat(f)
    assert re.fullmatch(r"\d+-f", os.path.basename(f)) and st.st_size == len(data)
    assert int(os.path.basename(f).split("-")[0]) == st.st_ino
    assert os.readlink(entries["/a/b/ln"]) == "f"
    # the trash is root's alone, and its blobs are kept
    top = os.stat(m.path(".trash"))
    assert top.st_uid == 0 and (top.st_mode & 0o777) == 0o700
    time.sleep(1.5)  # the gc thread would have run by now
    assert _live(srv) == live
    assert read_file(f) == data
    # restore: mv out; the recorded path goes with it
    os.rename(f, m.path("a", "b", "f"))
    assert read_file(m.path("a", "b", "f")) == data
    with pytest.raises(OSError) as e:
        os.getxattr(m.path("a", "b", "f"), XATTR)
    assert e.value.errno == errno.ENODATA
    assert set(_trash_entries(m)) == {"/a/b/ln"}


def test_rename_over_and_links(kelp):
    kelp.start_server()
    m = kelp.mount(["-trashDays=1"])
    write_file(m.path("old"), b"old bytes")
    write_file(m.path("new"), b"new bytes")
    os.rename(m.path("new"), m.path("old"))  # "old"'s content goes to the trash
    assert read_file(m.path("old")) == b"new bytes"
    entries = _trash_entries(m)
    assert list(entries) == ["/old"] and read_file(entries["/old"]) == b"old bytes"
    # a file with another name left is not trashed: the name just goes
    write_file(m.path("h1"), b"linked")
    os.link(m.path("h1"), m.path("h2"))
    os.unlink(m.path("h1"))
    assert read_file(m.path("h2")) == b"linked" and set(_trash_entries(m)) == {"/old"}
    os.unlink(m.path("h2"))  # now the last name: trashed
    assert set(_trash_entries(m)) == {"/old", "/h2"}
    # rm -r of a tree: its files in the trash with their paths, the directories gone
    os.makedirs(m.path("t", "u"))
    for p in ("t/x", "t/u/y"):
        write_file(m.path(p), p.encode())
    subprocess.run(["rm", "-r", m.path("t")], check=True)
    entries = _trash_entries(m)
    assert {"/t/x", "/t/u/y"} <= set(entries) and not os.path.exists(m.path("t"))
    assert read_file(entries["/t/u/y"]) == b"t/u/y"
    # removing inside the trash removes for good
    os.unlink(entries["/t/x"])
    assert "/t/x" not in _trash_entries(m)
    # directories themselves are not trashed, and listing the root shows .trash
    assert ".trash" in os.listdir(m.mnt)


def test_expiry_frees_blobs(kelp):
    """-trashDays=0.0001 (8.64 s): entries older than that are removed for good by the
    purger, and their blobs deleted; a newer one stays."""
    srv = kelp.start_server()
    m = kelp.mount([CHUNK, "-trashDays=0.0001"])
    live0 = _live(srv)
    write_file(m.path("big"), os.urandom(3 * MiB))
    assert _live(srv) == live0 + 3
    os.unlink(m.path("big"))
    t0 = time.monotonic()
    assert list(_trash_entries(m)) == ["/big"]
    time.sleep(4)
    write_file(m.path("late"), b"late")
    os.unlink(m.path("late"))
    wait_until("the old entry to be purged", lambda: "/big" not in _trash_entries(m), 30,
               interval=0.2)
    assert time.monotonic() - t0 >= 8.0, "purged before the period ended"
    assert "/late" in _trash_entries(m)
    wait_until("its 3 blobs to be deleted", lambda: _live(srv) == live0 + 1, 30, interval=0.2)
    wait_until("the newer entry to be purged too", lambda: not _trash_entries(m), 30,
               interval=0.2)
    assert "purged" in m.log_text() or "removed for good" in m.log_text()


def test_user_files_and_no_trash(kelp):
    """A user's rm moves the file to the trash too (the user cannot look inside); with
    -trashDays=0 nothing is kept and no .trash appears."""
    kelp.start_server()
    m = kelp.mount(["-trashDays=1", "-o", "allow_other"])
    os.makedirs(m.path("home"))
    os.chmod(m.path("home"), 0o777)
    as_nobody("echo mine > %s && rm %s" % (m.path("home", "f"), m.path("home", "f")))
    assert list(_trash_entries(m)) == ["/home/f"]
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "ls", m.path(".trash")], capture_output=True)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    m.unmount()
    m2 = kelp.mount(["-trashDays=0"])
    write_file(m2.path("g"), b"x")
    os.unlink(m2.path("g"))
    assert ".trash" not in os.listdir(m2.mnt)


@pytest.mark.parametrize("engine", ["pg"], indirect=True)
def test_name_cached_on_other_mount_after_trash(kelp):
    """Mount B's kernel still caches a name that mount A moved to the trash (entry
    cache of 30 s here): opening it on B reaches the file in the trash by its inode.
    B must not open it (ESTALE, the kernel looks the name up again): O_RDONLY fails
    with ENOENT, O_CREAT makes a new empty file (what SQLite does with its journal:
    before the fix B wrote its journal into A's trashed one, then failed to delete it).
    The trashed file stays readable on B through its path in the trash."""
    kelp.start_server()
    meta = kelp.new_meta()
    a, b = [kelp.mount(["-trashDays=1", "-entryCacheSec=30"], meta=meta) for _ in range(2)]
    write_file(a.path("f"), b"old f")
    write_file(a.path("g"), b"old g")
    ino_f, ino_g = os.stat(b.path("f")).st_ino, os.stat(b.path("g")).st_ino  # B caches
    os.unlink(a.path("f"))
    os.unlink(a.path("g"))
    with pytest.raises(FileNotFoundError):
        open(b.path("f"), "rb")
    fd = os.open(b.path("g"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert os.fstat(fd).st_ino != ino_g and os.read(fd, 100) == b""
        os.write(fd, b"new g")
    finally:
        os.close(fd)
    assert read_file(a.path("g")) == b"new g"
    entries = _trash_entries(b)
    assert set(entries) == {"/f", "/g"}
    assert os.stat(entries["/f"]).st_ino == ino_f
    assert read_file(entries["/f"]) == b"old f" and read_file(entries["/g"]) == b"old g"
    # restored (on A): a normal file again, opened on B through its new name
    os.rename(entries["/f"].replace(b.mnt, a.mnt), a.path("f2"))
    assert read_file(b.path("f2")) == b"old f"
