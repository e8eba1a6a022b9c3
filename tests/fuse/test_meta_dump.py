"""`kelp meta dump` / `kelp meta load`: the whole metadata as JSON lines and back.

Round trips between the engines (LMDB -> PostgreSQL -> LMDB, and PostgreSQL -> LMDB ->
PostgreSQL) on a tree with every file kind, checked twice: the dumps are identical record
for record (names, modes, owners, times in ns, xattrs, chunk maps, the gc queue), and a
walk through real mounts of the loaded copies (stat, xattrs, symlink targets, hard-link
groups, inode numbers, bytes) matches the source mount's. Malformed input: a clear
error, exit 1, and the target left empty (or, when it was not empty, unchanged).
"""

import hashlib
import json
import os
import stat
import subprocess

import pytest

from kelp_fuse_conftest import MiB, need, run, write_file

pytestmark = pytest.mark.watchdog(400)


def build_tree(root):
    """Every kind of file the mount stores, and some history (an overwrite queues gc)."""
    os.makedirs(os.path.join(root, "d", "e", "f"))
    write_file(os.path.join(root, "empty"), b"")
    write_file(os.path.join(root, "small"), b"hello\n")
    write_file(os.path.join(root, "big"), os.urandom(3 * MiB + 12345))   # several chunks
    with open(os.path.join(root, "sparse"), "wb") as f:
        f.write(b"head")
        f.seek(5 * MiB)
        f.write(b"tail")
    with open(os.path.join(root, "sparse_end"), "wb") as f:
        f.truncate(7 * MiB)                                                 # all hole
    write_file(os.path.join(root, "over"), os.urandom(200000))
    with open(os.path.join(root, "over"), "r+b") as f:                      # overwrite
        f.seek(1000)
        f.write(os.urandom(5000))
    write_file(os.path.join(root, "d", "e", "f", "deep"), b"deep\n" * 100)
    os.link(os.path.join(root, "small"), os.path.join(root, "d", "hard1"))
    os.link(os.path.join(root, "small"), os.path.join(root, "d", "e", "hard2"))
    os.symlink("small", os.path.join(root, "sym"))
    os.symlink("/nonexistent/target/" + "x" * 200, os.path.join(root, "d", "dangling"))
    os.mkfifo(os.path.join(root, "fifo"), 0o640)
    os.mknod(os.path.join(root, "chardev"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(os.path.join(root, "blockdev"), 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    odd = os.path.join(root.encode(), b"odd \xff\xfe name\nwith newline \"q\" \\")
    write_file(odd, b"odd")
    write_file(os.path.join(root, "unicod\u00e9 \u6587\u4ef6"), b"u")
    os.setxattr(os.path.join(root, "small"), "user.text", b"a value")
    os.setxattr(os.path.join(root, "small"), "user.bin", bytes(range(256)))
    os.setxattr(os.path.join(root, "small"), "user.empty", b"")
    os.setxattr(os.path.join(root, "d"), "user.dir", b"on a directory")
    os.chmod(os.path.join(root, "big"), 0o4751)
    os.chown(os.path.join(root, "big"), 1234, 4321)
    os.lchown(os.path.join(root, "sym"), 55, 66)
    os.chmod(os.path.join(root, "d", "e"), 0o1777)
    os.utime(os.path.join(root, "small"), ns=(1_000_000_123, 1_500_000_000_987_654_321))
    os.utime(os.path.join(root, "d", "e"), ns=(2_000_000_007, 2_100_000_000_000_000_009))
    # POSIX ACLs: an access ACL on a file, a default ACL on a directory (inherited by
    # files created there after a load too: see test_round_trip_between_engines)
    os.makedirs(os.path.join(root, "acl"))
    write_file(os.path.join(root, "acl", "f"), b"acl")
    subprocess.run(["setfacl", "-m", "u:1234:rw-", os.path.join(root, "acl", "f")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:4321:r-x", os.path.join(root, "acl")], check=True)


def walk(root):
    """{relative path bytes: description} of everything under root."""
    out = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, rootb)
            d = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink,
                 "mtime": st.st_mtime_ns, "ino": st.st_ino}
            if not stat.S_ISDIR(st.st_mode):
                d["size"] = st.st_size
                d["blocks"] = st.st_blocks   # the bytes really stored (holes: none)
            if stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                d["sha"] = h.hexdigest()
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = st.st_rdev
            if not stat.S_ISLNK(st.st_mode):
                d["xattrs"] = {n: os.getxattr(p, n) for n in sorted(os.listxattr(p))}
            out[rel] = d
    return out


def dump(kelp_bin, spec):
    r = run([kelp_bin, "meta", "dump", "-meta=" + spec], timeout=120)
    lines = r.stdout.decode().splitlines()
    header = json.loads(lines[0])
    assert json.loads(lines[-1]) == {"end": len(lines) - 2}
    return header, lines[1:-1]


def load(kelp_bin, spec, data, master=None, check=True):
    cmd = [kelp_bin, "meta", "load", "-meta=" + spec, "-timeout=10"]
    if master:
        cmd.append("-master=" + master)
    return subprocess.run(cmd, input=data, capture_output=True, timeout=120,
                          check=False) if not check else run(cmd, input=data, stdin=None,
                                                             timeout=120)


def other_meta(kelp, engine, name):
    if engine == "pg":
        return kelp.pg.new_database() if kelp.pg else None
    return str(kelp.tmp / name)


def test_round_trip_between_engines(kelp, engine, pg_server):
    """The source engine -> the other one -> the source engine: identical dumps, and the
    mounts of both copies show the same tree (with the same inode numbers) as the source.
    The first dump is taken while the source is mounted."""
    need("setfacl", "getfacl")
    kelp.pg = kelp.pg or pg_server
    kelp.start_server()
    src = kelp.mount(args=["-chunkSizeLimitMB=1"])
    build_tree(src.path("t"))
    before = walk(src.path("t"))
    # a snapshot while mounted
    h1, recs1 = dump(kelp.kelp_bin, src.meta)
    assert h1["kelp_dump"] == 1 and h1["counts"]["inodes"] >= 18
    kinds = {next(iter(json.loads(r))) for r in recs1}
    assert {"inode", "symlink", "dentry", "dir", "chunk", "fidref", "xattr"} <= kinds, kinds
    other = "lmdb" if engine == "pg" else "pg"
    mid = other_meta(kelp, other, "meta_mid")
    text1 = ("\n".join([json.dumps(h1)] + recs1 + [json.dumps({"end": len(recs1)})]) + "\n")
    load(kelp.kelp_bin, mid, text1.encode(), master=kelp.server.master_addr)
    h2, recs2 = dump(kelp.kelp_bin, mid)
    back = other_meta(kelp, engine, "meta_back")
    # gzip input works too
    gz = subprocess.run(["gzip", "-c"], input=("\n".join(
        [json.dumps(h2)] + recs2 + [json.dumps({"end": len(recs2)})]) + "\n").encode(),
        capture_output=True, check=True).stdout
    load(kelp.kelp_bin, back, gz, master=kelp.server.master_addr)
    h3, recs3 = dump(kelp.kelp_bin, back)
    assert h2["engine"] != h1["engine"] and h3["engine"] == h1["engine"]
    for h in (h2, h3):
        assert h["generation"] == h1["generation"]
        assert h["next_ino"] >= h1["next_ino"] and h["next_gc"] >= h1["next_gc"]
        assert h["cluster_id"], "the load with -master records the cluster id"
    # The gc queue may shrink while the source is mounted: compare the rest exactly
    # (the dump of a stable source is compared below too).
    assert recs2 == recs1 and recs3 == recs1

    assert src.unmount() == 0
    for meta in (mid, back):
        m = kelp.mount(meta=meta)
        after = walk(m.path("t"))
        assert after.keys() == before.keys()
        for k in before:
            assert after[k] == before[k], (k, before[k], after[k])
        # the default ACL still applies to new files
        write_file(m.path("t", "acl", "new"), b"n")
        acl = subprocess.run(["getfacl", "-cp", m.path("t", "acl", "new")], check=True,
                             capture_output=True, text=True).stdout
        assert "user:4321:r-x" in acl, acl
        assert m.unmount() == 0


BAD_INPUTS = [
    (b"", "empty input"),
    (b"hello\n", "not JSON"),
    (b'{"kelp_dump":99}\n{"end":0}\n', "version 99"),
    (b'{"nothing":1}\n', "not a kelp dump"),
]


def _good_dump(kelp):
    """A small valid dump of a fresh LMDB metadata with a few entries."""
    meta = str(kelp.tmp / "good")
    run([kelp.kelp_bin, "meta", "init", "-meta=" + meta])
    h, recs = dump(kelp.kelp_bin, meta)
    recs = recs + [
        json.dumps({"inode": 5, "mode": 0o100644, "nlink": 1, "uid": 0, "gid": 0, "rdev": 0,
                    "size": 3, "atime": 1, "mtime": 2, "ctime": 3, "crtime": 4}),
        json.dumps({"dentry": 1, "name": "f", "ino": 5}),
        json.dumps({"chunk": 5, "offset": 0, "length": 3, "blob_offset": 0, "fid": "3,01aa"}),
        json.dumps({"fidref": "3,01aa", "count": 1}),
    ]
    return h, recs


def _text(h, recs, end=None):
    return ("\n".join([json.dumps(h)] + recs + [json.dumps(
        {"end": len(recs) if end is None else end})]) + "\n").encode()


def test_load_rejects_malformed_input(kelp, engine, pg_server):
    """Each broken dump: exit 1, a message saying the line and what is wrong, and the
    target left empty (a dump of it has no records; a later good load works)."""
    kelp.pg = kelp.pg or pg_server
    h, recs = _good_dump(kelp)
    broken = list(BAD_INPUTS) + [
        (_text(h, recs)[:-20], "not JSON"),                      # cut inside a line
        (b"".join(_text(h, recs).splitlines(True)[:-1]), "truncated"),   # no end line
        (_text(h, recs, end=99), "end line counts"),
        (_text(h, recs + ['{"inode":7,"mode":"x"}']), "\"mode\" must be"),
        (_text(h, recs + ['{"dentry":1,"name":"a/b","ino":5}']), "not a valid file name"),
        (_text(h, recs + ['{"dentry":1,"name64":"!!","ino":5}']), "not base64"),
        (_text(h, recs + ['{"chunk":5,"offset":0,"length":0,"blob_offset":0,"fid":"3,01"}']),
         "\"length\" must be > 0"),
        (_text(h, recs + ['{"chunk":5,"offset":0,"length":1,"blob_offset":0,"fid":"x"}']),
         "not a file id"),
        (_text(h, recs + ['{"weird":1}']), "not a record"),
        (_text(h, recs + ['[1,2]']), "not a JSON object"),
        (_text(h, recs) + b'{"inode":9}\n', "after the end line"),
        (_text(h, recs[:2] + ['{"inode":7'] + recs[2:]), "line 4: not JSON"),
    ]
    for i, (data, msg) in enumerate(broken):
        target = other_meta(kelp, engine, "bad%d" % i)
        r = load(kelp.kelp_bin, target, data, check=False)
        err = r.stderr.decode()
        assert r.returncode == 1, (msg, r.returncode, err)
        assert msg in err, (msg, err)
        th, trecs = dump(kelp.kelp_bin, target)
        assert trecs == [], (msg, trecs)
    # A good load works into a target left by a failed one.
    load(kelp.kelp_bin, target, _text(h, recs))
    th, trecs = dump(kelp.kelp_bin, target)
    assert [json.loads(x) for x in trecs] == [json.loads(x) for x in recs]
    # ... and a second load into it (not empty now) is refused, leaving it unchanged.
    r = load(kelp.kelp_bin, target, _text(h, recs), check=False)
    assert r.returncode == 1 and "not empty" in r.stderr.decode(), r.stderr
    assert dump(kelp.kelp_bin, target)[1] == trecs


def test_cluster_id_checked(kelp):
    """A dump of another cluster: load -master refuses it; loaded without -master, it
    keeps its cluster id and a mount against these masters is refused."""
    from kelp_fuse_conftest import KelpError
    kelp.start_server()
    h, recs = _good_dump(kelp)
    h["cluster_id"] = "another-cluster"
    target = other_meta(kelp, kelp.engine, "other")
    r = load(kelp.kelp_bin, target, _text(h, recs), master=kelp.server.master_addr,
             check=False)
    assert r.returncode == 1 and b"belongs to the cluster another-cluster" in r.stderr, r.stderr
    assert dump(kelp.kelp_bin, target)[1] == []
    load(kelp.kelp_bin, target, _text(h, recs))
    assert dump(kelp.kelp_bin, target)[0]["cluster_id"] == "another-cluster"
    m = kelp.mount(meta=target, start=False)
    with pytest.raises(KelpError):
        m.start()
    assert "belongs to the cluster another-cluster" in m.log_text()
