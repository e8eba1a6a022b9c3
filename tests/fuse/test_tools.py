"""Standard tools on the mount: cp -a, rsync -aH, tar, git, sqlite3."""

import difflib
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess

import pytest

from kelp_fuse_conftest import (MiB, compare_tree_meta, need, read_file, run, tree_meta,
                                write_file)

SRC_TREE = "/usr/include"


def test_cp_a_tree_then_diff_and_metadata(mnt):
    """cp -a of /usr/include into the mount: same bytes (diff -r), same modes, owners,
    mtimes (ns, directories and symlinks included), link counts and symlink targets; a
    clean unmount exits 0."""
    need("cp", "diff")
    dst = mnt.path("inc")
    run(["cp", "-a", SRC_TREE, dst], timeout=180)
    # --no-dereference: some symlinks point outside the tree
    run(["diff", "-r", "--no-dereference", SRC_TREE, dst], timeout=120)
    n = compare_tree_meta(SRC_TREE, dst)
    assert n > 1000
    assert mnt.unmount() == 0, "clean unmount exit status"


def test_cp_a_survives_remount(kelp):
    """A smaller tree copied, the mount unmounted and mounted again: diff -r and the
    metadata still match."""
    kelp.start_server()
    m = kelp.mount()
    src = os.path.join(SRC_TREE, "linux")
    run(["cp", "-a", src, m.path("linux")], timeout=120)
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    run(["diff", "-r", "--no-dereference", src, m2.path("linux")], timeout=120)
    compare_tree_meta(src, m2.path("linux"))


def test_cp_over_existing_files(mnt, tmp_path):
    """cp of a tree over an older copy of itself whose files were longer (cp opens the
    existing files with O_TRUNC)."""
    src = str(tmp_path / "src")
    os.makedirs(os.path.join(src, "d"))
    for i in range(20):
        write_file(os.path.join(src, "d", "f%d" % i), os.urandom(1000 + 50000 * i))
    dst = mnt.path("dst")
    run(["cp", "-a", src, dst])
    run(["diff", "-r", src, dst])
    for i in range(20):
        write_file(os.path.join(src, "d", "f%d" % i), os.urandom(500 + 1000 * i))
    run(["cp", "-a", src + "/.", dst])
    run(["diff", "-r", src, dst])
    compare_tree_meta(src, dst, dir_mtime=False)


def _make_tree_with_hardlinks(root):
    os.makedirs(root)
    shutil.copytree(os.path.join(SRC_TREE, "linux", "netfilter"), os.path.join(root, "nf"),
                    symlinks=True)
    os.makedirs(os.path.join(root, "links", "sub"))
    pairs = []
    for i in range(20):
        a = os.path.join(root, "links", "f%d" % i)
        write_file(a, os.urandom(1000 + 4099 * i))
        b = os.path.join(root, "links", "sub", "hl%d" % i)
        os.link(a, b)
        pairs.append(("links/f%d" % i, "links/sub/hl%d" % i))
        if i % 4 == 0:
            c = os.path.join(root, "links", "third%d" % i)
            os.link(a, c)
            pairs.append(("links/f%d" % i, "links/third%d" % i))
    os.symlink("f1", os.path.join(root, "links", "sym1"))
    os.chmod(os.path.join(root, "links", "f2"), 0o640)
    os.chown(os.path.join(root, "links", "f3"), 1234, 4321)
    os.utime(os.path.join(root, "links", "f4"), ns=(1_000_000_123, 1_500_000_000_987_654_321))
    return pairs


def test_rsync_aH_keeps_hard_links(mnt, tmp_path):
    need("rsync", "diff")
    src = str(tmp_path / "src")
    pairs = _make_tree_with_hardlinks(src)
    dst = mnt.path("dst")
    run(["rsync", "-aH", src + "/", dst + "/"], timeout=120)
    run(["diff", "-r", "--no-dereference", src, dst])
    # rsync 3.x leaves the mtimes of directories and symlinks made within the same
    # second as their source unset (the same on ext4): regular files only.
    compare_tree_meta(src, dst, dir_mtime=False, link_mtime=False)
    for a, b in pairs:
        sa, sb = os.lstat(os.path.join(dst, a)), os.lstat(os.path.join(dst, b))
        assert sa.st_ino == sb.st_ino, "%s and %s are not one inode in the copy" % (a, b)
        assert sa.st_nlink == os.lstat(os.path.join(src, a)).st_nlink, a
    # A second rsync after changes in the source: rsync writes temporary files and
    # renames them over the old ones.
    for i in range(0, 20, 3):
        write_file(os.path.join(src, "links", "f%d" % i), os.urandom(7000 + i))
    os.unlink(os.path.join(src, "links", "sub", "hl5"))
    run(["rsync", "-aH", "--delete", src + "/", dst + "/"], timeout=120)
    run(["diff", "-r", "--no-dereference", src, dst])
    # rsync 3.x leaves the mtimes of directories and symlinks made within the same
    # second as their source unset (the same on ext4): regular files only.
    compare_tree_meta(src, dst, dir_mtime=False, link_mtime=False)
    # an rsync with nothing to do changes nothing
    r = run(["rsync", "-aHi", "--delete", src + "/", dst + "/"], timeout=120)
    assert r.stdout.strip() == b"", r.stdout


def _make_tree_with_ns_times(root):
    """A tree of our own for the tar test: nested directories (one empty, one sticky),
    files from empty to a few chunks, hard links, relative and dangling symlinks,
    several modes and owners, and an mtime with a nanosecond part on every entry
    (directories and symlinks too; directories last, bottom up, since creating entries
    in them changes their mtime). Returns the number of entries."""
    rng = random.Random(16)
    base = 1_700_000_000 * 10**9
    entries = []   # (path, is_link) in creation order
    os.makedirs(root)
    entries.append((root, False))
    for d in range(4):
        dd = os.path.join(root, "d%d" % d)
        os.mkdir(dd)
        entries.append((dd, False))
        for s in range(3):
            sd = os.path.join(dd, "s%d" % s)
            os.mkdir(sd)
            entries.append((sd, False))
            for f in range(8):
                p = os.path.join(sd, "f%d.h" % f)
                write_file(p, rng.randbytes(rng.choice((0, 1, 517, 4096, 70001))))
                entries.append((p, False))
    big = os.path.join(root, "d0", "big")
    write_file(big, rng.randbytes(5 * MiB + 12345))   # more than one chunk (4 MiB)
    entries.append((big, False))
    for i in range(6):
        a = os.path.join(root, "d1", "s0", "f%d.h" % i)
        b = os.path.join(root, "d2", "hl%d" % i)
        os.link(a, b)
        entries.append((b, False))
    links = {"d3/rel": "../d0/s1/f2.h", "d3/s0/up": "..", "d3/dangling": "no/such/file",
             "d0/abs": "/nonexistent/abs/path"}
    for name, target in links.items():
        p = os.path.join(root, name)
        os.symlink(target, p)
        entries.append((p, True))
    empty = os.path.join(root, "empty")
    os.mkdir(empty)
    entries.append((empty, False))
    os.chmod(os.path.join(root, "d0", "s0", "f1.h"), 0o600)
    os.chmod(os.path.join(root, "d0", "s0", "f2.h"), 0o755)
    os.chmod(os.path.join(root, "d0", "s0", "f3.h"), 0o711)
    os.chmod(os.path.join(root, "d1", "s2"), 0o700)
    os.chmod(os.path.join(root, "d2"), 0o1777)
    os.chown(os.path.join(root, "d0", "s1", "f4.h"), 1234, 4321)
    os.chown(os.path.join(root, "d1", "s1"), 2345, 5432)
    os.chown(os.path.join(root, "d3", "rel"), 3456, 6543, follow_symlinks=False)
    # mtimes: files and symlinks first, then directories deepest first
    for i, (p, is_link) in enumerate(entries):
        if not os.path.isdir(p) or is_link:
            ns = base + i * 1_000_003_007 + rng.randrange(1, 10**9)
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
    dirs = [p for p, is_link in entries if os.path.isdir(p) and not is_link]
    for i, p in enumerate(sorted(dirs, key=lambda p: -p.count(os.sep))):
        ns = base - i * 999_999_937 - rng.randrange(1, 10**9)
        os.utime(p, ns=(ns, ns))
    return len(entries)


def _tar_listing(tarball):
    return run(["tar", "-tvf", tarball, "--full-time", "--numeric-owner"]).stdout.splitlines()


def test_tar_from_and_into_mount(mnt, tmp_path):
    """A tree of our own with nanosecond mtimes: cp -a into the mount keeps every mtime to
    the nanosecond; tar --format=posix (pax headers, which carry nanoseconds) of the
    mount lists exactly what an archive of the original lists; extracted into the
    mount, from a file and through a pipe, it equals the original in bytes and in every
    piece of metadata, nanoseconds included. Any metadata the mount loses or rounds
    (mtime, mode, owner, link count, symlink target) fails the comparison."""
    need("tar", "diff", "cp")
    src = str(tmp_path / "a")
    n = _make_tree_with_ns_times(src)
    meta = tree_meta(src)
    assert len(meta) == n and all(m[4] % 10**9 for m in meta.values()), \
        "the test tree needs a sub-second mtime on every entry"
    run(["cp", "-a", src, mnt.path("a")], timeout=120)
    run(["diff", "-r", "--no-dereference", src, mnt.path("a")], timeout=120)
    compare_tree_meta(src, mnt.path("a"))
    tar = ["tar", "--format=posix", "--sort=name", "--numeric-owner"]
    tarball = str(tmp_path / "from-mount.tar")
    run(tar + ["-C", mnt.path(), "-cf", tarball, "a"], timeout=120)
    # the archive made from the mount lists exactly what one made from the original does
    tarball2 = str(tmp_path / "orig.tar")
    run(tar + ["-C", str(tmp_path), "-cf", tarball2, "a"], timeout=120)
    l1, l2 = _tar_listing(tarball), _tar_listing(tarball2)
    assert len(l1) == n
    assert l1 == l2, "\n".join(difflib.unified_diff(
        [x.decode() for x in l2], [x.decode() for x in l1], "original", "mount", lineterm=""))
    # extracted into the mount: the original again, to the nanosecond
    os.mkdir(mnt.path("x"))
    run(["tar", "--numeric-owner", "-C", mnt.path("x"), "-xpf", tarball], timeout=120)
    run(["diff", "-r", "--no-dereference", src, mnt.path("x", "a")], timeout=120)
    compare_tree_meta(src, mnt.path("x", "a"))
    # a pipe straight from the mount into the mount
    os.mkdir(mnt.path("y"))
    p = subprocess.run("tar --format=posix --numeric-owner -C %s -cf - a | "
                       "tar --numeric-owner -C %s -xpf -" % (mnt.path(), mnt.path("y")),
                       shell=True, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    compare_tree_meta(src, mnt.path("y", "a"))


def _git(args, cwd, **kw):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
               GIT_CONFIG_NOSYSTEM="1", HOME=str(cwd), GIT_TERMINAL_PROMPT="0")
    return run(["git", "-c", "safe.directory=*", "-c", "init.defaultBranch=main"] + args,
               cwd=cwd, env=env, timeout=120, **kw)


def test_git_init_commit_clone_fsck(mnt, tmp_path):
    need("git", "diff")
    repo = mnt.path("repo")
    os.mkdir(repo)
    _git(["init", "-q"], repo)
    shutil.copytree(os.path.join(SRC_TREE, "linux", "netfilter"), os.path.join(repo, "nf"))
    write_file(os.path.join(repo, "README"), b"hello\n")
    _git(["add", "-A"], repo)
    _git(["commit", "-q", "-m", "first"], repo)
    for i in range(5):
        write_file(os.path.join(repo, "README"), b"hello %d\n" % i, "ab")
        write_file(os.path.join(repo, "f%d" % i), os.urandom(50000))
        _git(["add", "-A"], repo)
        _git(["commit", "-q", "-m", "change %d" % i], repo)
    _git(["fsck", "--full", "--strict"], repo)
    # pack files are written, renamed and mmapped
    _git(["gc", "-q"], repo)
    _git(["fsck", "--full", "--strict"], repo)
    clone = str(tmp_path / "clone")
    _git(["clone", "-q", repo, clone], str(tmp_path))
    _git(["fsck", "--full", "--strict"], clone)
    assert _git(["rev-parse", "HEAD"], clone).stdout == _git(["rev-parse", "HEAD"], repo).stdout
    assert _git(["status", "--porcelain"], repo).stdout == b""
    run(["diff", "-r", "-x", ".git", repo, clone])
    assert _git(["log", "--oneline"], clone).stdout.count(b"\n") == 6
    # and a clone into the mount from the mount
    clone2 = mnt.path("clone2")
    _git(["clone", "-q", repo, clone2], mnt.path())
    _git(["fsck", "--full", "--strict"], clone2)
    run(["diff", "-r", "-x", ".git", repo, clone2])


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_10000_inserts(kelp, journal):
    need("sqlite3")
    kelp.start_server()
    m = kelp.mount()
    db = m.path("t.db")
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode=%s" % journal).fetchone()[0] == journal
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
    con.execute("CREATE INDEX tk ON t(k)")
    n = 0
    for txn in range(5):
        with con:
            for i in range(2000):
                v = hashlib.sha256(b"%d" % n).digest() * (1 + n % 7)
                con.execute("INSERT INTO t (id, k, v) VALUES (?, ?, ?)", (n, "k%07d" % n, v))
                n += 1
    # some updates and deletes inside a transaction that is rolled back
    try:
        with con:
            con.execute("DELETE FROM t WHERE id % 3 = 0")
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 10000
    con.close()
    # with the CLI too, then again after a remount
    r = run(["sqlite3", db, "PRAGMA integrity_check; SELECT count(*) FROM t;"])
    assert r.stdout.split() == [b"ok", b"10000"], r.stdout
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    con = sqlite3.connect(m2.path("t.db"))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 10000
    for (i, k, v) in con.execute("SELECT id, k, v FROM t WHERE id % 997 = 0"):
        assert k == "k%07d" % i
        assert v == hashlib.sha256(b"%d" % i).digest() * (1 + i % 7)
    con.close()
    assert read_file(m2.path("t.db"))[:16] == b"SQLite format 3\0"
