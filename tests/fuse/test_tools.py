"""Standard tools on the mount: cp -a, rsync -aH, tar, git, sqlite3."""

import hashlib
import os
import shutil
import sqlite3
import subprocess

import pytest

from kelp_fuse_conftest import compare_tree_meta, need, read_file, run, write_file

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


def test_tar_from_and_into_mount(mnt, tmp_path):
    need("tar", "diff")
    src = os.path.join(SRC_TREE, "linux")
    run(["cp", "-a", src, mnt.path("a")], timeout=120)
    tarball = str(tmp_path / "a.tar")
    run(["tar", "-C", mnt.path(), "-cf", tarball, "a"], timeout=120)
    # the archive made from the mount equals one made from the original
    tarball2 = str(tmp_path / "orig.tar")
    run(["tar", "-C", os.path.dirname(src), "--transform", "s,^linux,a,", "-cf", tarball2,
         "linux"], timeout=120)
    l1 = run(["tar", "-tvf", tarball, "--full-time"]).stdout.splitlines()
    l2 = run(["tar", "-tvf", tarball2, "--full-time"]).stdout.splitlines()
    assert sorted(l1) == sorted(l2)
    os.mkdir(mnt.path("x"))
    run(["tar", "-C", mnt.path("x"), "-xpf", tarball], timeout=120)
    run(["diff", "-r", "--no-dereference", src, mnt.path("x", "a")], timeout=120)
    compare_tree_meta(mnt.path("a"), mnt.path("x", "a"))
    # a pipe straight from the mount into the mount
    os.mkdir(mnt.path("y"))
    p = subprocess.run("tar -C %s -cf - a | tar -C %s -xpf -" % (mnt.path(), mnt.path("y")),
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
