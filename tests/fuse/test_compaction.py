"""Compaction: a chunk-sized window of a file cut into many small pieces by overwrites
is rewritten as one blob at a flush (the pieces go to gc). A flush looks for pieces
only after changes through its file, and not while a file this mount created has too
few pieces to need it; both cases are counted here through the cluster's blobs."""

import os

import pytest

from kelp_fuse_conftest import MiB, read_file, wait_until, write_file

CHUNK = ["-chunkSizeLimitMB=1", "-gcGraceSec=1"]   # blobs deleted soon after use


def _live(srv):
    dc, _, fc = srv.delete_totals()
    return fc - dc


@pytest.mark.parametrize("created", [False, True])
def test_overwritten_pieces_are_compacted(kelp, created):
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    base = _live(srv)
    p = m.path("f")
    data = bytearray(os.urandom(MiB))
    if not created:
        write_file(p, bytes(data))   # one blob
        fd = os.open(p, os.O_RDWR)
    else:
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, bytes(data))
        os.fsync(fd)
    try:
        for i in range(20):   # each fsync commits a piece of 100 bytes
            piece = os.urandom(100)
            os.pwrite(fd, piece, i * 4096 + 7)
            data[i * 4096 + 7:i * 4096 + 107] = piece
            os.fsync(fd)
    finally:
        os.close(fd)
    assert read_file(p) == data
    # 41 intervals in the first window: rewritten as one blob, the 21 others deleted
    wait_until("the pieces to be compacted and collected", lambda: _live(srv) - base == 1,
               30, interval=0.2)
    assert read_file(p) == data
    os.unlink(p)
    wait_until("every blob to be deleted", lambda: _live(srv) == base, 30, interval=0.2)


def test_few_pieces_stay(kelp):
    """A created file written in a few commits keeps its pieces (no compaction)."""
    srv = kelp.start_server()
    m = kelp.mount(CHUNK)
    base = _live(srv)
    p = m.path("f")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for i in range(3):
            os.pwrite(fd, b"%d" % i * 1000, i * 1000)
            os.fsync(fd)
    finally:
        os.close(fd)
    assert read_file(p) == b"".join(b"%d" % i * 1000 for i in range(3))
    assert _live(srv) - base == 3
