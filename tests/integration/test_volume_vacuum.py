"""Vacuum (compaction) through the admin routes: check, compact, commit, cleanup."""

import os

from conftest import assert_json, assert_json_error, etag_of, make_fid, rand_bytes


def _fill(srv, vid, n, size=10000, seed=0):
    blobs = {}
    for k in range(1, n + 1):
        fid = make_fid(vid, k, 0x1000 + k)
        data = rand_bytes(size, seed * 100000 + k)
        srv.upload(fid, data)
        blobs[fid] = data
    return blobs


def _check_all(srv, live, deleted=()):
    for fid, data in live.items():
        r = srv.get("/" + fid)
        assert r.status_code == 200, (fid, r.status_code)
        assert r.content == data, fid
        assert r.headers["ETag"] == '"%s"' % etag_of(data), fid
    for fid in deleted:
        assert srv.get("/" + fid).status_code == 404, fid


def _ratio(srv, vid):
    body = assert_json(srv.admin("vacuum/check", volume=str(vid)), 200)
    ratio = body["garbageRatio"]
    assert isinstance(ratio, (int, float)), body
    return ratio


def _files(srv):
    return sorted(os.listdir(srv.dirs[0]))


def test_vacuum_cycle(make_server):
    srv = make_server()
    srv.assign(1)
    blobs = _fill(srv, 1, 40)
    assert _ratio(srv, 1) == 0
    fids = list(blobs)
    deleted = set(fids[::2])
    for fid in deleted:
        assert srv.delete("/" + fid).status_code == 202
    live = {f: d for f, d in blobs.items() if f not in deleted}
    ratio = _ratio(srv, 1)
    assert 0.35 < ratio < 0.65, "half the bytes are garbage, ratio %r" % ratio
    dat = os.path.join(srv.dirs[0], "1.dat")
    size_before = os.path.getsize(dat)

    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    _check_all(srv, live, deleted)  # served while compacted files wait for commit
    assert srv.admin("vacuum/commit", volume="1").status_code == 200

    _check_all(srv, live, deleted)
    size_after = os.path.getsize(dat)
    assert size_after < size_before * 0.6, (size_before, size_after)
    v = srv.volume_status(1)
    assert v["CompactRevision"] == 1
    assert v["DeleteCount"] == 0 and v["DeletedByteCount"] == 0
    assert v["FileCount"] == len(live)
    assert v["Size"] == size_after
    with open(dat, "rb") as f:
        sb = f.read(8)
    assert sb[0] == 3 and int.from_bytes(sb[4:6], "big") == 1, "super block %r" % sb
    assert _ratio(srv, 1) == 0
    leftovers = [f for f in _files(srv) if f.startswith("1.") and f not in ("1.dat", "1.idx",
                                                                          "1.vif")]
    assert not leftovers, leftovers

    # writable after the commit, and everything survives a restart
    extra = {make_fid(1, 500 + i, 7): rand_bytes(300, 900 + i) for i in range(3)}
    for fid, data in extra.items():
        srv.upload(fid, data)
    live.update(extra)
    srv.stop()
    srv.start()
    _check_all(srv, live, deleted)
    assert srv.volume_status(1)["CompactRevision"] == 1


def test_writes_between_compact_and_commit(make_server):
    srv = make_server()
    srv.assign(1)
    blobs = _fill(srv, 1, 30)
    fids = list(blobs)
    deleted = set(fids[:10])
    for fid in deleted:
        assert srv.delete("/" + fid).status_code == 202
    live = {f: d for f, d in blobs.items() if f not in deleted}

    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    # after the snapshot: new blobs, an overwrite, a deletion, a re-upload of a
    # deleted key
    new = {make_fid(1, 1000 + i, 0xABC): rand_bytes(2000 + i, 7000 + i) for i in range(8)}
    for fid, data in new.items():
        srv.upload(fid, data)
    live.update(new)
    over = fids[15]
    live[over] = b"overwritten during compaction"
    srv.upload(over, live[over])
    gone = fids[20]
    assert srv.delete("/" + gone).status_code == 202
    del live[gone]
    deleted.add(gone)
    back = fids[0]
    live[back] = b"re-uploaded during compaction"
    srv.upload(back, live[back])
    deleted.discard(back)
    _check_all(srv, live, deleted)

    assert srv.admin("vacuum/commit", volume="1").status_code == 200
    _check_all(srv, live, deleted)
    srv.stop()
    srv.start()
    _check_all(srv, live, deleted)


def test_vacuum_cleanup(make_server):
    srv = make_server()
    srv.assign(1)
    blobs = _fill(srv, 1, 10)
    fids = list(blobs)
    for fid in fids[:5]:
        assert srv.delete("/" + fid).status_code == 202
    live = {f: blobs[f] for f in fids[5:]}
    files_before = _files(srv)
    dat = os.path.join(srv.dirs[0], "1.dat")
    size_before = os.path.getsize(dat)
    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    assert srv.admin("vacuum/cleanup", volume="1").status_code == 200
    assert _files(srv) == files_before, "cleanup leaves compaction files behind"
    assert os.path.getsize(dat) == size_before
    assert srv.volume_status(1)["CompactRevision"] == 0
    _check_all(srv, live, fids[:5])
    assert _ratio(srv, 1) > 0
    # a later full cycle still works
    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    assert srv.admin("vacuum/commit", volume="1").status_code == 200
    _check_all(srv, live, fids[:5])
    assert os.path.getsize(dat) < size_before


def test_kill9_between_compact_and_commit(make_server):
    srv = make_server()
    srv.assign(1)
    blobs = _fill(srv, 1, 20)
    fids = list(blobs)
    for fid in fids[:10]:
        assert srv.delete("/" + fid).status_code == 202
    live = {f: blobs[f] for f in fids[10:]}
    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    extra = {make_fid(1, 900, 1): b"written after compact"}
    srv.upload(*next(iter(extra.items())))
    live.update(extra)
    srv.kill()
    srv.start()
    _check_all(srv, live, fids[:10])
    left = [f for f in _files(srv) if f.endswith((".cpd", ".cpx"))]
    assert not left, "orphan compaction files after restart: %r" % left
    # and vacuum still works afterwards
    assert srv.admin("vacuum/compact", volume="1").status_code == 200
    assert srv.admin("vacuum/commit", volume="1").status_code == 200
    _check_all(srv, live, fids[:10])


def test_vacuum_collection_volume(make_server):
    srv = make_server()
    srv.assign(3, collection="pics")
    blobs = _fill(srv, 3, 6)
    fids = list(blobs)
    for fid in fids[:3]:
        assert srv.delete("/" + fid).status_code == 202
    dat = os.path.join(srv.dirs[0], "pics_3.dat")
    size_before = os.path.getsize(dat)
    assert srv.admin("vacuum/compact", volume="3").status_code == 200
    assert srv.admin("vacuum/commit", volume="3").status_code == 200
    assert os.path.getsize(dat) < size_before
    _check_all(srv, {f: blobs[f] for f in fids[3:]}, fids[:3])



def test_commit_without_compact(make_server):
    srv = make_server()
    srv.assign(1)
    blobs = _fill(srv, 1, 3)
    assert_json_error(srv.admin("vacuum/commit", volume="1"), 409)
    assert srv.admin("vacuum/cleanup", volume="1").status_code == 200
    _check_all(srv, blobs)
    assert srv.volume_status(1)["CompactRevision"] == 0
