"""`kelp fsck -repair`: metadata damaged behind the mount's back, on both engines.

A tree is written through a real mount, the mount stopped, and its metadata damaged in
each way fsck repairs: a wrong link count, a name of a missing inode, a directory and a
file that no name reaches, a directory's parents row, a gc entry of a blob still used,
a wrong blob reference count, a wrong stored byte count (st_blocks), an xattr of a
missing inode, and a blob deleted in the cluster. PostgreSQL is damaged
with SQL on its kelp_kv table; LMDB through `kelp meta dump`, an edit, and `kelp meta
load` into a new directory. Then:

- `kelp fsck` reports each problem by path, exit 1;
- `-repair` while a mount is live changes nothing ("repaired": false, why: mounted),
  and goes ahead once that mount died (kill -9: its session is left, its process gone);
- `-repair` with every mount stopped fixes all but the missing blob (which needs
  -dropMissing), `-repair -dropMissing` turns that blob's range into a hole;
- a second fsck is clean (exit 0);
- the tree mounts again and is usable: `ls -lR`, every file read back (the unreachable
  ones in /lost+found as #<inode>), new files written and removed.
"""

import json
import os
import struct
import subprocess

import pytest
import requests

from kelp_fuse_conftest import MiB, read_file, run, write_file
from test_fsck import canonical, fsck
from test_meta_dump import dump

pytestmark = pytest.mark.watchdog(300)

GHOST = 987654321


# ------------------------------------------------------------------ damage helpers


class PgDamage:
    """Rows of kelp_kv (key: table byte + key; fuse/kv_pg.c) changed with SQL."""

    INODES, DENTRIES, FIDREFS, XATTRS, GC, PARENTS = 0, 2, 4, 5, 6, 9

    def __init__(self, url):
        self.url = url
        self.stmts = []

    @staticmethod
    def key(table, raw):
        return "'\\x%02x%s'::bytea" % (table, raw.hex())

    def set_nlink(self, ino, nlink):
        # struct meta_attr: ino, size (u64), mode, nlink (u32), little-endian
        self.stmts.append("UPDATE kelp_kv SET v = overlay(v placing '\\x%s'::bytea from 21 for 4)"
                          " WHERE k = %s" % (struct.pack("<I", nlink).hex(),
                                             self.key(self.INODES, ino.to_bytes(8, "big"))))

    def set_stored(self, ino, stored):
        # `stored` follows the 72 bytes of the older record
        self.stmts.append("UPDATE kelp_kv SET v = overlay(v placing '\\x%s'::bytea from 73 for 8)"
                          " WHERE k = %s" % (struct.pack("<Q", stored).hex(),
                                             self.key(self.INODES, ino.to_bytes(8, "big"))))

    def add_xattr(self, ino, name, value):
        self.stmts.append("INSERT INTO kelp_kv VALUES (%s, '\\x%s'::bytea)" % (
            self.key(self.XATTRS, ino.to_bytes(8, "big") + name.encode()), value.hex()))

    def add_name(self, parent, name, ino):
        self.stmts.append("INSERT INTO kelp_kv VALUES (%s, '\\x%s'::bytea)" % (
            self.key(self.DENTRIES, parent.to_bytes(8, "big") + name.encode()),
            ino.to_bytes(8, "big").hex()))

    def del_name(self, parent, name):
        self.stmts.append("DELETE FROM kelp_kv WHERE k = %s" % self.key(
            self.DENTRIES, parent.to_bytes(8, "big") + name.encode()))

    def set_parent(self, ino, parent):
        self.stmts.append("UPDATE kelp_kv SET v = '\\x%s'::bytea WHERE k = %s" % (
            parent.to_bytes(8, "big").hex(), self.key(self.PARENTS, ino.to_bytes(8, "big"))))

    def queue_gc(self, fid):
        seq = (1 << 40) + 7   # far above the sequence's numbers
        self.stmts.append("INSERT INTO kelp_kv VALUES (%s, '\\x%s'::bytea)" % (
            self.key(self.GC, seq.to_bytes(8, "big")),
            (fid.encode() + b"\0" + (0).to_bytes(8, "big")).hex()))

    def set_refcount(self, fid, count):
        self.stmts.append("UPDATE kelp_kv SET v = '\\x%s'::bytea WHERE k = %s" % (
            struct.pack("<I", count).hex(), self.key(self.FIDREFS, fid.encode())))

    def commit(self, kelp):
        sql = "BEGIN;\n" + ";\n".join(self.stmts) + ";\nCOMMIT;\n"
        r = subprocess.run(["psql", self.url, "-XAtq", "-v", "ON_ERROR_STOP=1"],
                           input=sql.encode(), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        return self.url


class LmdbDamage:
    """A dump edited record by record, loaded into a new LMDB directory."""

    def __init__(self, kelp_bin, meta, new_meta):
        self.kelp_bin, self.new_meta = kelp_bin, new_meta
        self.header, lines = dump(kelp_bin, meta)
        self.recs = [json.loads(x) for x in lines]

    def _find(self, **kv):
        for r in self.recs:
            if all(r.get(k) == v for k, v in kv.items()):
                return r
        raise AssertionError("no record %r" % kv)

    def set_nlink(self, ino, nlink):
        self._find(inode=ino)["nlink"] = nlink

    def set_stored(self, ino, stored):
        self._find(inode=ino)["stored"] = stored

    def add_xattr(self, ino, name, value):
        self.recs.append({"xattr": ino, "name": name, "value": value.decode()})

    def add_name(self, parent, name, ino):
        self.recs.append({"dentry": parent, "name": name, "ino": ino})

    def del_name(self, parent, name):
        self.recs.remove(self._find(dentry=parent, name=name))

    def set_parent(self, ino, parent):
        self._find(dir=ino)["parent"] = parent

    def queue_gc(self, fid):
        seq = self.header["next_gc"]
        self.header["next_gc"] += 1
        self.recs.append({"gc": seq, "fid": fid, "queued": 0})

    def set_refcount(self, fid, count):
        self._find(fidref=fid)["count"] = count

    def commit(self, kelp):
        self.header.pop("counts", None)
        # the loader wants each table's records together, in its order
        order = ["inode", "symlink", "dentry", "dir", "chunk", "fidref", "xattr", "gc",
                 "orphan"]
        self.recs.sort(key=lambda r: next(i for i, k in enumerate(order) if k in r))
        text = "\n".join(json.dumps(x) for x in [self.header] + self.recs +
                         [{"end": len(self.recs)}]) + "\n"
        run([self.kelp_bin, "meta", "load", "-meta=" + self.new_meta], input=text.encode(),
            stdin=None)
        return self.new_meta


def fids_of(kelp_bin, meta, ino):
    _, lines = dump(kelp_bin, meta)
    return [json.loads(x)["fid"] for x in lines
            if '"chunk"' in x and json.loads(x)["chunk"] == ino]


def delete_blob(srv, fid):
    url = srv.master_get("/dir/lookup?volumeId=" + fid.split(",")[0]).json()[
        "locations"][0]["url"]
    assert requests.delete("http://%s/%s" % (url, fid), timeout=10).status_code in (200, 202)


def kinds(problems):
    return sorted((p["problem"], p["path"]) for p in problems)


# ------------------------------------------------------------------ the tests


def test_repair_every_kind_of_damage(kelp, engine):
    srv = kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1", "-trashDays=0"])
    files = {
        "a/f1": os.urandom(5000),
        "a/h1": b"hard linked\n",
        "b/sub/deep": b"deep\n" * 1000,
        "c/lostdir/x": os.urandom(70000),
        "c/lostdir/y/z": b"zzz",
        "d/lostfile": os.urandom(123456),
        "e/big": os.urandom(3 * MiB + 77),
        "g/gcfile": os.urandom(9999),
    }
    for rel, data in files.items():
        os.makedirs(os.path.dirname(m.path(rel)), exist_ok=True)
        write_file(m.path(rel), data)
    os.link(m.path("a/h1"), m.path("b/h2"))
    files["b/h2"] = files["a/h1"]
    ino = {rel: os.stat(m.path(rel)).st_ino for rel in
           ["a", "c", "d", "a/f1", "b/sub", "c/lostdir", "d/lostfile", "e/big", "g/gcfile"]}
    meta = m.meta
    assert m.unmount() == 0
    f1_fid = fids_of(kelp.kelp_bin, meta, ino["a/f1"])[0]
    gc_fid = fids_of(kelp.kelp_bin, meta, ino["g/gcfile"])[0]
    big_fids = fids_of(kelp.kelp_bin, meta, ino["e/big"])
    assert len(big_fids) == 4, big_fids

    d = PgDamage(meta) if engine == "pg" else LmdbDamage(kelp.kelp_bin, meta,
                                                         str(kelp.tmp / "damaged"))
    d.set_nlink(ino["a/f1"], 3)                       # wrong link count
    d.add_name(ino["a"], "ghost", GHOST)              # a name of a missing inode
    d.del_name(ino["c"], "lostdir")                   # a directory no name reaches
    d.del_name(ino["d"], "lostfile")                  # a file no name reaches
    d.set_parent(ino["b/sub"], 1)                     # its parents row says /
    d.queue_gc(gc_fid)                                # a gc entry of a used blob
    d.set_refcount(f1_fid, 7)                         # a wrong reference count
    d.set_stored(ino["g/gcfile"], 1)                  # st_blocks would say 512 bytes
    d.add_xattr(GHOST, "user.lost", b"v")             # an xattr of a missing inode
    meta = d.commit(kelp)
    delete_blob(srv, big_fids[1])                     # bytes 1-2 MiB of e/big are gone
    master = "-master=" + srv.master_addr

    expected = [
        ("wrong link count", "/a/f1"),
        ("name of a missing inode", "/a/ghost"),
        ("unreachable inode", ""),
        ("unreachable inode", ""),
        ("wrong link count", "/c"),                   # lostdir was its subdirectory
        ("directory parent row differs from its name", "/b/sub"),
        ("gc queue holds a blob still used", "/g/gcfile"),
        ("wrong blob reference count", "/a/f1"),
        ("missing blob", "/e/big"),
        ("wrong stored byte count", "/g/gcfile"),
        ("xattr of a missing inode", ""),
    ]
    rc, problems, err = fsck(kelp.kelp_bin, meta, master)
    assert rc == 1, err
    assert kinds(problems) == sorted(expected), problems
    assert all("repaired" not in p for p in problems)
    unreachable = sorted(p["detail"] for p in problems if p["problem"] == "unreachable inode")
    assert unreachable == sorted(["inode %d (mode %o) has no name" % (ino[r], st) for r, st in
                                  [("c/lostdir", 0o40755), ("d/lostfile", 0o100644)]])
    missing = [p for p in problems if p["problem"] == "missing blob"][0]
    assert canonical(big_fids[1]) in missing["detail"]

    # stopped: all but the missing blob repaired
    rc, problems, err = fsck(kelp.kelp_bin, meta, master, "-repair")
    assert rc == 1, err
    assert kinds(problems) == sorted(expected), problems
    left = [p for p in problems if not p["repaired"]]
    assert [(p["problem"], p["path"]) for p in left] == [("missing blob", "/e/big")], problems
    assert "-dropMissing" in left[0]["why"]
    moved = sorted(p["detail"].split(": now ")[1] for p in problems
                   if p["problem"] == "unreachable inode")
    assert moved == sorted(["/lost+found/#%d" % ino["c/lostdir"],
                            "/lost+found/#%d" % ino["d/lostfile"]]), problems
    assert "10 repaired, 1 left" in err, err
    rc, problems, err = fsck(kelp.kelp_bin, meta, master)
    assert rc == 1 and kinds(problems) == [("missing blob", "/e/big")], problems

    # -dropMissing: the range becomes a hole, listed by path
    rc, problems, err = fsck(kelp.kelp_bin, meta, master, "-repair", "-dropMissing")
    assert rc == 1, err
    assert [(p["problem"], p["path"], p["repaired"]) for p in problems] == [
        ("missing blob", "/e/big", True)], problems
    assert "bytes 1048576-2097152 of the file become a hole" in problems[0]["detail"], problems
    rc, problems, err = fsck(kelp.kelp_bin, meta, master)
    assert rc == 0 and problems == [], (problems, err)

    # the tree, mounted again
    m3 = kelp.mount(["-chunkSizeLimitMB=1", "-trashDays=0"], mnt=m.mnt, meta=meta)
    r = run(["ls", "-lR", m3.mnt])
    assert b"ghost" not in r.stdout and b"lost+found" in r.stdout
    lf = "lost+found"
    relocated = {"%s/#%d/x" % (lf, ino["c/lostdir"]): files.pop("c/lostdir/x"),
                 "%s/#%d/y/z" % (lf, ino["c/lostdir"]): files.pop("c/lostdir/y/z"),
                 "%s/#%d" % (lf, ino["d/lostfile"]): files.pop("d/lostfile")}
    files.update(relocated)
    big = files["e/big"]
    files["e/big"] = big[:MiB] + bytes(MiB) + big[2 * MiB:]
    seen = {}
    for dirpath, _, names in os.walk(m3.mnt):
        for name in names:
            p = os.path.join(dirpath, name)
            seen[os.path.relpath(p, m3.mnt)] = read_file(p)
    assert seen.keys() == files.keys()
    for rel, data in files.items():
        assert seen[rel] == data, rel
    assert os.stat(m3.path("a/f1")).st_nlink == 1
    assert os.stat(m3.path("c")).st_nlink == 2
    assert os.stat(m3.path("b/h2")).st_nlink == 2
    assert os.stat(m3.path(lf, "#%d" % ino["c/lostdir"])).st_nlink == 3
    assert os.stat(m3.path(lf)).st_nlink == 3
    assert os.stat(m3.path("e/big")).st_size == len(big)
    assert os.stat(m3.path("e/big")).st_blocks == (len(big) - MiB + 511) // 512  # a hole
    assert os.stat(m3.path("g/gcfile")).st_blocks == (9999 + 511) // 512
    # usable: the moved directory renamed back, new files, removals
    os.rename(m3.path(lf, "#%d" % ino["c/lostdir"]), m3.path("c", "lostdir"))
    assert read_file(m3.path("c/lostdir/y/z")) == b"zzz"
    write_file(m3.path("c/lostdir/new"), b"new")
    os.unlink(m3.path("a/f1"))
    subprocess.run(["rm", "-r", m3.path("g")], check=True)
    assert m3.unmount() == 0
    rc, problems, err = fsck(kelp.kelp_bin, meta, master)
    assert rc == 0 and problems == [], (problems, err)


def test_repair_refused_while_mounted(kelp, engine):
    """While a mount is live, -repair changes nothing of the metadata (each problem
    "repaired": false, why: mounted, the mount named on stderr). A mount killed with -9
    leaves its session: on this host with its process gone it is not live, and -repair
    repairs."""
    kelp.start_server()
    m = kelp.mount(["-trashDays=0"])
    write_file(m.path("f"), b"data")
    f_ino = os.stat(m.path("f")).st_ino
    meta = m.meta
    assert m.unmount() == 0
    d = PgDamage(meta) if engine == "pg" else LmdbDamage(kelp.kelp_bin, meta,
                                                         str(kelp.tmp / "damaged"))
    d.set_nlink(f_ino, 5)
    meta = d.commit(kelp)
    m2 = kelp.mount(["-trashDays=0"], mnt=m.mnt, meta=meta)
    rc, problems, err = fsck(kelp.kelp_bin, meta, "-noBlobs", "-repair")
    assert rc == 1 and [(p["problem"], p["path"], p["repaired"]) for p in problems] == [
        ("wrong link count", "/f", False)], (problems, err)
    assert "mounted" in problems[0]["why"] and m2.mnt in problems[0]["why"], problems
    assert "not repaired: it is mounted" in err and m2.mnt in err, err
    assert os.stat(m2.path("f")).st_nlink == 5 and read_file(m2.path("f")) == b"data"
    m2.crash()
    rc, problems, err = fsck(kelp.kelp_bin, meta, "-noBlobs", "-repair")
    assert rc == 1 and [(p["problem"], p["path"], p["repaired"]) for p in problems] == [
        ("wrong link count", "/f", True)], (problems, err)
    rc, problems, err = fsck(kelp.kelp_bin, meta, "-noBlobs")
    assert rc == 0, (problems, err)
