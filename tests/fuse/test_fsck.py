"""`kelp fsck`: the metadata checked against itself and the cluster.

- a healthy tree (every file kind, hard links, a file being written) while mounted: exit 0;
- a blob deleted behind the mount's back: exit 1, the problem names the file's path;
- metadata broken on purpose (loaded from a crafted dump): each kind of damage is found.
"""

import json
import os
import subprocess

import requests

from kelp_fuse_conftest import run, write_file
from test_meta_dump import build_tree, dump


def canonical(fid):
    """"3,01a1b2c3d4_1" (a batch assign's key + 1) -> "3,02a1b2c3d4", as fsck shows it."""
    vid, rest = fid.split(",")
    delta = 0
    if "_" in rest:
        rest, d = rest.split("_")
        delta = int(d)
    key = int(rest[:-8], 16) + delta
    hexkey = "%x" % key
    if len(hexkey) % 2:
        hexkey = "0" + hexkey
    return "%s,%s%s" % (vid, hexkey, rest[-8:])


def fsck(kelp_bin, meta, *extra):
    r = subprocess.run([kelp_bin, "fsck", "-meta=" + meta] + list(extra),
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    problems = [json.loads(x) for x in r.stdout.decode().splitlines() if x.strip()]
    return r.returncode, problems, r.stderr.decode()


def test_fsck_clean_then_missing_blob(kelp):
    kelp.start_server()
    m = kelp.mount(args=["-chunkSizeLimitMB=1"])
    build_tree(m.path("t"))
    with open(m.path("t", "open-unlinked"), "wb") as f:   # an orphan while it runs
        f.write(b"x" * 1000)
        f.flush()
        os.unlink(m.path("t", "open-unlinked"))
        rc, problems, err = fsck(kelp.kelp_bin, m.meta, "-master=" + kelp.server.master_addr)
        assert rc == 0 and problems == [], (problems, err)
        assert "0 problem(s)" in err
    # delete one blob of t/d/e/f/deep behind the mount's back
    ino = os.stat(m.path("t", "d", "e", "f", "deep")).st_ino
    _, recs = dump(kelp.kelp_bin, m.meta)
    fids = [json.loads(x)["fid"] for x in recs
            if '"chunk"' in x and json.loads(x)["chunk"] == ino]
    assert fids
    vid = fids[0].split(",")[0]
    url = kelp.server.master_get("/dir/lookup?volumeId=" + vid).json()["locations"][0]["url"]
    assert requests.delete("http://%s/%s" % (url, fids[0]), timeout=10).status_code in (200, 202)
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, "-master=" + kelp.server.master_addr)
    assert rc == 1, err
    assert [p["problem"] for p in problems] == ["missing blob"], problems
    assert problems[0]["path"] == "/t/d/e/f/deep"
    assert canonical(fids[0]) in problems[0]["detail"], (fids[0], problems)
    # -noBlobs: the metadata alone is fine
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, "-noBlobs")
    assert rc == 0 and problems == [], problems


def test_fsck_finds_broken_metadata(kelp_bin, tmp_path):
    """A crafted metadata: a name of a missing inode, a wrong link count, an unreachable
    inode, a wrong reference count, a gc entry for a used blob, a directory whose
    parents row is wrong, a chunk of a missing inode (its blob's count then counts for
    nothing), two directories inside each other (a cycle no name from the root
    reaches), a directory with two names, a name in a file, a chunk with no blob count,
    a symlink target and an xattr of missing inodes. `-repair -noBlobs` fixes them all; the blob only the dropped chunk used
    goes to the gc queue, the unreachable inode and the cycle to /lost+found (whose
    "#5" is taken: "#5.1")."""
    hdr = {"kelp_dump": 1, "generation": 77, "next_ino": 100, "next_gc": 10}

    def inode(ino, mode, nlink):
        return {"inode": ino, "mode": mode, "nlink": nlink, "uid": 0, "gid": 0, "rdev": 0,
                "size": 10, "atime": 0, "mtime": 0, "ctime": 0, "crtime": 0}
    recs = [
        inode(1, 0o40755, 5), inode(2, 0o40755, 2), inode(3, 0o100644, 2),
        inode(4, 0o100644, 1), inode(5, 0o100644, 1),
        inode(10, 0o40755, 3), inode(11, 0o40755, 3), inode(12, 0o100644, 1),
        inode(20, 0o40755, 2), inode(21, 0o100644, 1), inode(30, 0o40755, 2),
        {"symlink": 77, "target": "nowhere"},              # no inode 77
        {"dentry": 1, "name": "dir", "ino": 2},
        {"dentry": 2, "name": "file", "ino": 3},          # nlink 2, one name
        {"dentry": 2, "name": "ghost", "ino": 42},        # no such inode
        {"dentry": 1, "name": "other", "ino": 4},
        {"dentry": 1, "name": "lost+found", "ino": 20},
        {"dentry": 20, "name": "#5", "ino": 21},          # not inode 5
        {"dentry": 10, "name": "b", "ino": 11},           # 10 and 11 inside each other
        {"dentry": 11, "name": "a", "ino": 10},
        {"dentry": 11, "name": "inside", "ino": 12},
        {"dentry": 1, "name": "dd1", "ino": 30},
        {"dentry": 2, "name": "dd2", "ino": 30},          # a second name of a directory
        {"dentry": 4, "name": "x", "ino": 3},             # in a file
        {"dir": 2, "parent": 7},                          # should be 1
        {"dir": 10, "parent": 11}, {"dir": 11, "parent": 10}, {"dir": 20, "parent": 1},
        {"dir": 30, "parent": 1},
        {"chunk": 3, "offset": 0, "length": 10, "blob_offset": 0, "fid": "3,01aa"},
        {"chunk": 4, "offset": 0, "length": 10, "blob_offset": 0, "fid": "3,02bb"},
        {"fidref": "3,01aa", "count": 1},
        {"fidref": "3,02bb", "count": 5},                 # 1 chunk uses it
        {"gc": 3, "fid": "3,01aa", "queued": 0},          # still used
        {"chunk": 9, "offset": 0, "length": 10, "blob_offset": 0, "fid": "3,03cc"},
        {"chunk": 21, "offset": 0, "length": 10, "blob_offset": 0, "fid": "3,04dd"},
        {"fidref": "3,03cc", "count": 1},                  # 3,04dd: no count
        {"xattr": 78, "name": "user.a", "value": "v"},     # no inode 78
    ]                                                    # inode 5: no name
    text = "\n".join(json.dumps(x) for x in [hdr] + recs + [{"end": len(recs)}]) + "\n"
    meta = str(tmp_path / "broken")
    run([kelp_bin, "meta", "load", "-meta=" + meta], input=text.encode(), stdin=None)
    rc, problems, err = fsck(kelp_bin, meta, "-noBlobs")
    assert rc == 1, err
    kinds = sorted((p["problem"], p["path"]) for p in problems)
    assert kinds == sorted([
        ("name of a missing inode", "/dir/ghost"),
        ("wrong link count", "/dir/file"),
        ("unreachable inode", ""),
        ("wrong blob reference count", "/other"),
        ("gc queue holds a blob still used", "/dir/file"),
        ("directory parent row differs from its name", "/dir"),
        ("chunk of a missing or non-file inode", "/?"),
        ("reference count of an unused blob", ""),
        ("directory cycle", ""),
        ("unreachable inode", ""),
        ("wrong link count", "/?/b"),
        ("directory with several names", "/dir/dd2"),
        ("name in a missing or non-directory inode", "/other/x"),
        ("missing blob reference count", "/lost+found/#5"),
        ("symlink target of a missing inode", ""),
        ("xattr of a missing inode", ""),
    ]), problems
    rc, problems, err = fsck(kelp_bin, meta, "-noBlobs", "-repair")
    assert rc == 1 and len(problems) == 16 and all(p["repaired"] for p in problems), \
        (problems, err)
    moved = sorted(p["detail"].split(": now ")[1] for p in problems
                   if p["problem"] == "unreachable inode")
    assert moved == ["/lost+found/#10", "/lost+found/#5.1"], problems
    rc, problems, err = fsck(kelp_bin, meta, "-noBlobs")
    assert rc == 0 and problems == [], (problems, err)
    _, recs = dump(kelp_bin, meta)
    recs = [json.loads(x) for x in recs]
    names = {(r["dentry"], r["name"]): r["ino"] for r in recs if "dentry" in r}
    assert {k: v for k, v in names.items() if k[0] in (20, 10, 11)} == {
        (20, "#5"): 21, (20, "#5.1"): 5, (20, "#10"): 10, (10, "b"): 11, (11, "inside"): 12}
    assert {"dir": 10, "parent": 20} in recs
    assert (2, "dd2") not in names and (4, "x") not in names and names[(1, "dd1")] == 30
    assert {"fidref": "3,04dd", "count": 1} in recs
    assert not any(r.get("symlink") == 77 or r.get("xattr") == 78 for r in recs), recs
    assert [r["fid"] for r in recs if "gc" in r] == ["3,03cc"], recs
    assert not any(r.get("chunk") == 9 or r.get("dentry") == 2 and r["name"] == "ghost"
                   for r in recs), recs


def test_fsck_leaked_blob_repair(kelp, tmp_path):
    """A blob in the mount's collection that nothing references (an upload whose commit
    never came): -leaks lists it, not younger than -grace; -repair deletes it and
    nothing else (every file reads back)."""
    kelp.start_server()
    m = kelp.mount(args=["-collection=fsc", "-chunkSizeLimitMB=1"])
    files = {"f%d" % i: os.urandom(1000 + 700000 * (i % 3)) for i in range(8)}
    for name, data in files.items():
        write_file(m.path(name), data)
    write_file(m.path("f0"), b"overwritten")                # a superseded blob (gc)
    files["f0"] = b"overwritten"
    src = str(tmp_path / "orphan-upload")
    write_file(src, b"uploaded, never committed" * 100)
    r = run([kelp.kelp_bin, "upload", "-master=" + kelp.server.master_addr,
             "-collection=fsc", src])
    leaked = json.loads(r.stdout.decode().splitlines()[0])["fid"]
    master = "-master=" + kelp.server.master_addr
    # young: not a leak yet
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, master, "-leaks", "-collection=fsc")
    assert rc == 0 and problems == [], (problems, err)
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, master, "-leaks", "-collection=fsc",
                             "-grace=0s")
    assert rc == 1, err
    assert [(p["problem"], canonical(leaked) in p["detail"]) for p in problems] == [
        ("leaked blob", True)], problems
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, master, "-repair", "-collection=fsc",
                             "-grace=0s")
    # found and repaired: exit 1 (as for every problem -repair fixes), "repaired": true
    assert rc == 1 and len(problems) == 1 and problems[0]["detail"].endswith(": deleted"), \
        (problems, err)
    assert problems[0]["repaired"] is True and "1 repaired, 0 left" in err, (problems, err)
    url = kelp.server.master_get("/dir/lookup?volumeId=" + leaked.split(",")[0]).json()[
        "locations"][0]["url"]
    assert requests.get("http://%s/%s" % (url, leaked), timeout=10).status_code == 404
    for name, data in files.items():
        with open(m.path(name), "rb") as f:
            assert f.read() == data, name
    rc, problems, err = fsck(kelp.kelp_bin, m.meta, master, "-leaks", "-collection=fsc",
                             "-grace=0s")
    assert rc == 0 and problems == [], problems


def test_fsck_leaks_in_a_keyed_cluster(kelp, tmp_path):
    """With -jwtKey the volume servers' needle lists need a server token: fsck signs its
    requests with -jwtKey (or $KELP_JWT_KEY), finds the leak and deletes it; without the
    key it says the search failed (exit 1) rather than reporting a clean cluster."""
    key = "fsck-test-key-0123456789"
    kelp.start_server(args=["-jwtKey=" + key])
    meta = str(tmp_path / "meta")
    run([kelp.kelp_bin, "meta", "init", "-meta=" + meta])
    src = str(tmp_path / "orphan")
    write_file(src, b"nobody references me" * 50)
    r = run([kelp.kelp_bin, "upload", "-master=" + kelp.server.master_addr,
             "-collection=fsk", src])
    leaked = json.loads(r.stdout.decode().splitlines()[0])["fid"]
    master = "-master=" + kelp.server.master_addr
    rc, problems, err = fsck(kelp.kelp_bin, meta, master, "-leaks", "-collection=fsk",
                             "-grace=0s")
    assert rc == 1 and problems and {p["problem"] for p in problems} == {"leak search failed"}, \
        (problems, err)
    rc, problems, err = fsck(kelp.kelp_bin, meta, master, "-leaks", "-collection=fsk",
                             "-grace=0s", "-jwtKey=" + key)
    assert rc == 1 and [(p["problem"], canonical(leaked) in p["detail"])
                        for p in problems] == [("leaked blob", True)], (problems, err)
    env = dict(os.environ, KELP_JWT_KEY=key)
    r = subprocess.run([kelp.kelp_bin, "fsck", "-meta=" + meta, master, "-repair",
                        "-collection=fsk", "-grace=0s"], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, env=env)
    assert r.returncode == 1 and b": deleted" in r.stdout, (r.stdout, r.stderr)
    rc, problems, err = fsck(kelp.kelp_bin, meta, master, "-leaks", "-collection=fsk",
                             "-grace=0s", "-jwtKey=" + key)
    assert rc == 0 and problems == [], (problems, err)


def test_fsck_flag_errors(kelp_bin, tmp_path):
    """Flags that cannot go together, or no -meta: exit 2 with a message, nothing done."""
    meta = str(tmp_path / "meta")
    run([kelp_bin, "meta", "init", "-meta=" + meta])
    for flags in (["-dropMissing"], ["-repair", "-dropMissing", "-noBlobs"],
                  ["-leaks", "-noBlobs"], ["-repair", "-sessionTimeout=0"]):
        rc, problems, err = fsck(kelp_bin, meta, *flags)
        assert rc == 2 and problems == [] and "kelp fsck:" in err, (flags, err)
    r = subprocess.run([kelp_bin, "fsck"], capture_output=True, timeout=60)
    assert r.returncode == 2 and b"-meta is required" in r.stderr
    rc, problems, err = fsck(kelp_bin, meta, "-noBlobs", "-repair")
    assert rc == 0 and problems == [] and "0 repaired, 0 left" in err, err
