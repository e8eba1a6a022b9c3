"""The trash with two mounts of one PostgreSQL database:

- a file removed on mount A is in /.trash on mount B (with its original path), is
  restored there with mv, and reads back on A;
- expiry while a mount has the file open (the purging mount or the other one): the
  purge removes the trash entry, but the blobs stay as long as the file is held (read
  through the descriptor after the purge and past the gc grace); the holder's close
  frees it and its blobs go.
"""

import os
import time

import pytest

from kelp_fuse_conftest import MiB, read_file, wait_until, write_file
from test_trash import _live, _trash_entries

pytestmark = pytest.mark.watchdog(240)


@pytest.fixture(params=["pg"])
def engine(request):
    return request.param


def two_mounts(kelp, trash_a, trash_b=None):
    srv = kelp.start_server()
    meta = kelp.new_meta()
    args = ["-chunkSizeLimitMB=1", "-gcGraceSec=1", "-sessionTimeout=10"]
    return (srv, kelp.mount(args + ["-trashDays=%s" % trash_a], meta=meta),
            kelp.mount(args + ["-trashDays=%s" % (trash_b or trash_a)], meta=meta))


def test_removed_on_one_mount_restored_on_the_other(kelp):
    srv, a, b = two_mounts(kelp, 1)
    os.makedirs(a.path("x", "y"))
    data = os.urandom(2 * MiB + 4321)
    write_file(a.path("x", "y", "f"), data)
    live = _live(srv)
    os.unlink(a.path("x", "y", "f"))
    entries = wait_until("the removed file in B's /.trash",
                         lambda: _trash_entries(b).get("/x/y/f"), 10, interval=0.2)
    assert os.stat(entries).st_size == len(data) and read_file(entries) == data
    assert list(_trash_entries(a)) == ["/x/y/f"]
    time.sleep(2.5)   # past the gc grace: the trash keeps the blobs
    assert _live(srv) == live
    os.rename(entries, b.path("x", "y", "f"))    # restored on B
    assert read_file(b.path("x", "y", "f")) == data
    got = wait_until("the restored file on A",
                     lambda: os.path.exists(a.path("x", "y", "f")) and read_file(
                         a.path("x", "y", "f")), 10, interval=0.2)
    assert got == data
    assert _trash_entries(a) == {} and _trash_entries(b) == {}
    with pytest.raises(OSError):
        os.getxattr(a.path("x", "y", "f"), "trusted.kelp.trash.path")


@pytest.mark.parametrize("holder", ["the purging mount", "the other mount"])
def test_expiry_while_held(kelp, holder):
    """A keeps removed files a day, B 0.0001 day (8.64 s): B purges. The file is open on
    B (the purging mount, which never looked the trash entry up: its kernel still knows
    the file under its old name) or on A when A removes it. Once the period is over B
    purges the entry, but no blob of the file is deleted while it is held; it reads back
    whole after the purge; the holder's close frees it and its blobs go."""
    srv, a, b = two_mounts(kelp, 1, 0.0001)
    live0 = _live(srv)
    data = os.urandom(3 * MiB)
    write_file(a.path("held"), data)
    assert _live(srv) == live0 + 3
    m = b if holder == "the purging mount" else a
    fd = wait_until("the holder to open the file", lambda: os.open(m.path("held"), os.O_RDONLY),
                    10, interval=0.2)
    try:
        t0 = time.monotonic()
        os.unlink(a.path("held"))
        assert list(_trash_entries(a)) == ["/held"]
        wait_until("the entry to be purged", lambda: not _trash_entries(a), 40, interval=0.2)
        assert time.monotonic() - t0 >= 8.0, "purged before the period ended"
        assert "removed for good" in b.log_text() and "removed for good" not in a.log_text()
        time.sleep(3)   # gc (grace 1 s) would have deleted the blobs by now
        assert _live(srv) == live0 + 3, "a blob of a held file was deleted"
        got = b""
        for _ in range(1000):
            block = os.pread(fd, MiB, len(got))
            if not block:
                break
            got += block
        assert got == data
    finally:
        os.close(fd)
    wait_until("its 3 blobs to be deleted after the holder's close",
               lambda: _live(srv) == live0, 30, interval=0.2)
