"""POSIX namespace and file semantics of the mount: rename, links, unlink of open
files, big directories, long names, symlinks, special files, attributes, permissions,
xattrs, sparse and large files, O_APPEND, O_TRUNC, fsync, statfs, locks.

Where Linux semantics are subtle (setuid clearing), the same steps are run on the
local filesystem of tmp_path as the reference."""

import ctypes
import errno
import fcntl
import os
import stat
import subprocess
import sys
import time

import pytest

from kelp_fuse_conftest import (GiB, MiB, as_nobody, expect_errno, need, read_file,
                                run, wait_until, write_file)

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags):
    rc = _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                         ctypes.c_uint(flags))
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


def used_inodes(path):
    """Inodes in use as statfs tells (f_files - f_ffree)."""
    st = os.statvfs(path)
    return st.f_files - st.f_ffree


# ------------------------------------------------------------------------------ rename


def test_rename_file_over_file(mnt):
    a, b = mnt.path("a"), mnt.path("b")
    write_file(a, b"AAAA")
    write_file(b, b"BBBBBBBB")
    ino_a = os.stat(a).st_ino
    before = used_inodes(mnt.mnt)
    os.rename(a, b)
    assert not os.path.exists(a)
    assert read_file(b) == b"AAAA"
    assert os.stat(b).st_ino == ino_a
    assert sorted(os.listdir(mnt.mnt)) == ["b"]
    # freed once no name and no kernel reference (lookup, open) is left: poll, the
    # kernel's FORGET is asynchronous
    wait_until("the replaced inode to be freed", lambda: used_inodes(mnt.mnt) == before - 1,
               10)


def test_rename_over_open_file_keeps_it_readable(mnt):
    a, b = mnt.path("a"), mnt.path("b")
    write_file(a, b"new")
    write_file(b, b"old contents")
    fd = os.open(b, os.O_RDWR)
    try:
        os.rename(a, b)
        assert os.pread(fd, 100, 0) == b"old contents"
        os.pwrite(fd, b"OLD", 0)
        assert os.pread(fd, 100, 0) == b"OLD contents"
        assert os.fstat(fd).st_nlink == 0
        assert read_file(b) == b"new"
    finally:
        os.close(fd)
    assert read_file(b) == b"new"


def test_rename_dir_over_empty_dir(mnt):
    os.makedirs(mnt.path("p1", "src", "inner"))
    write_file(mnt.path("p1", "src", "f"), b"x")
    os.makedirs(mnt.path("p2", "dst"))
    assert os.stat(mnt.path("p1")).st_nlink == 3
    assert os.stat(mnt.path("p2")).st_nlink == 3
    os.rename(mnt.path("p1", "src"), mnt.path("p2", "dst"))
    assert sorted(os.listdir(mnt.path("p2", "dst"))) == ["f", "inner"]
    assert read_file(mnt.path("p2", "dst", "f")) == b"x"
    assert os.listdir(mnt.path("p1")) == []
    assert os.stat(mnt.path("p1")).st_nlink == 2
    assert os.stat(mnt.path("p2")).st_nlink == 3
    # same parent
    os.mkdir(mnt.path("p2", "e"))
    assert os.stat(mnt.path("p2")).st_nlink == 4
    os.rename(mnt.path("p2", "dst"), mnt.path("p2", "e"))
    assert os.listdir(mnt.path("p2")) == ["e"]
    assert os.stat(mnt.path("p2")).st_nlink == 3
    os.rmdir(mnt.path("p1"))


def test_rename_dir_over_nonempty_dir_is_enotempty(mnt):
    os.makedirs(mnt.path("src"))
    os.makedirs(mnt.path("dst", "x"))
    expect_errno(errno.ENOTEMPTY, os.rename, mnt.path("src"), mnt.path("dst"))
    assert os.path.isdir(mnt.path("src")) and os.path.isdir(mnt.path("dst", "x"))


def test_rename_file_over_dir_and_dir_over_file(mnt):
    write_file(mnt.path("f"), b"f")
    os.mkdir(mnt.path("d"))
    expect_errno(errno.EISDIR, os.rename, mnt.path("f"), mnt.path("d"))
    expect_errno(errno.ENOTDIR, os.rename, mnt.path("d"), mnt.path("f"))
    assert read_file(mnt.path("f")) == b"f" and os.path.isdir(mnt.path("d"))


def test_rename_into_own_subdir_is_einval(mnt):
    os.makedirs(mnt.path("a", "b", "c"))
    expect_errno(errno.EINVAL, os.rename, mnt.path("a"), mnt.path("a", "b", "c", "a"))
    assert os.path.isdir(mnt.path("a", "b", "c"))


def test_rename_noreplace(mnt):
    write_file(mnt.path("a"), b"a")
    write_file(mnt.path("b"), b"b")
    expect_errno(errno.EEXIST, renameat2, mnt.path("a"), mnt.path("b"), RENAME_NOREPLACE)
    assert read_file(mnt.path("a")) == b"a" and read_file(mnt.path("b")) == b"b"
    renameat2(mnt.path("a"), mnt.path("c"), RENAME_NOREPLACE)
    assert read_file(mnt.path("c")) == b"a" and not os.path.exists(mnt.path("a"))


def test_rename_exchange(mnt):
    write_file(mnt.path("a"), b"aaa")
    write_file(mnt.path("b"), b"bb")
    ia, ib = os.stat(mnt.path("a")).st_ino, os.stat(mnt.path("b")).st_ino
    renameat2(mnt.path("a"), mnt.path("b"), RENAME_EXCHANGE)
    assert read_file(mnt.path("a")) == b"bb" and read_file(mnt.path("b")) == b"aaa"
    assert os.stat(mnt.path("a")).st_ino == ib and os.stat(mnt.path("b")).st_ino == ia
    expect_errno(errno.ENOENT, renameat2, mnt.path("a"), mnt.path("nope"), RENAME_EXCHANGE)
    # a directory and a file in different parents: the parents' link counts follow
    os.makedirs(mnt.path("p1", "dir", "sub"))
    os.makedirs(mnt.path("p2"))
    write_file(mnt.path("p2", "file"), b"F")
    renameat2(mnt.path("p1", "dir"), mnt.path("p2", "file"), RENAME_EXCHANGE)
    assert os.path.isdir(mnt.path("p2", "file", "sub"))
    assert read_file(mnt.path("p1", "dir")) == b"F"
    assert os.stat(mnt.path("p1")).st_nlink == 2
    assert os.stat(mnt.path("p2")).st_nlink == 3
    # and the moved directory's ".." is its new parent
    assert os.stat(mnt.path("p2", "file", "..")).st_ino == os.stat(mnt.path("p2")).st_ino
    # both flags at once is invalid
    expect_errno(errno.EINVAL, renameat2, mnt.path("a"), mnt.path("b"),
                 RENAME_EXCHANGE | RENAME_NOREPLACE)


def test_rename_open_file_then_write(mnt):
    fd = os.open(mnt.path("a"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"one ")
        os.rename(mnt.path("a"), mnt.path("b"))
        os.write(fd, b"two")
    finally:
        os.close(fd)
    assert read_file(mnt.path("b")) == b"one two"
    assert not os.path.exists(mnt.path("a"))


# ------------------------------------------------------------------------------ links


def test_hard_links_counts(mnt):
    a = mnt.path("a")
    write_file(a, b"shared")
    os.mkdir(mnt.path("d"))
    assert os.stat(a).st_nlink == 1
    os.link(a, mnt.path("b"))
    assert os.stat(a).st_nlink == 2
    os.link(mnt.path("b"), mnt.path("d", "c"))
    for p in ("a", "b", "d/c"):
        st = os.stat(mnt.path(p))
        assert st.st_nlink == 3, p
        assert st.st_ino == os.stat(a).st_ino
    # data written through one name is seen through the others
    with open(mnt.path("d", "c"), "r+b") as f:
        f.seek(0, 2)
        f.write(b" data")
    assert read_file(mnt.path("b")) == b"shared data"
    expect_errno(errno.EEXIST, os.link, a, mnt.path("b"))
    # renaming a name onto another link of the same inode does nothing
    os.rename(a, mnt.path("b"))
    assert os.path.exists(a) and os.stat(a).st_nlink == 3
    expect_errno(errno.EPERM, os.link, mnt.path("d"), mnt.path("dlink"))
    before = used_inodes(mnt.mnt)
    os.unlink(a)
    assert os.stat(mnt.path("b")).st_nlink == 2
    os.unlink(mnt.path("d", "c"))
    assert os.stat(mnt.path("b")).st_nlink == 1
    assert read_file(mnt.path("b")) == b"shared data"
    assert used_inodes(mnt.mnt) == before
    os.unlink(mnt.path("b"))
    # the inode is freed when the kernel forgets it (FUSE forget, sent asynchronously
    # right after the last unlink): poll briefly
    deadline = time.monotonic() + 5
    while used_inodes(mnt.mnt) != before - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert used_inodes(mnt.mnt) == before - 1


def test_hard_link_counts_after_remount(kelp):
    kelp.start_server()
    m = kelp.mount()
    write_file(m.path("x"), b"x")
    os.link(m.path("x"), m.path("y"))
    os.link(m.path("x"), m.path("z"))
    os.unlink(m.path("z"))
    m2 = kelp.remount(m)
    assert os.stat(m2.path("x")).st_nlink == 2
    assert os.stat(m2.path("x")).st_ino == os.stat(m2.path("y")).st_ino
    assert read_file(m2.path("y")) == b"x"


def test_unlink_open_file_still_usable(mnt):
    p = mnt.path("f")
    data = os.urandom(3 * MiB + 7)
    write_file(p, data)
    before = used_inodes(mnt.mnt)
    fd = os.open(p, os.O_RDWR)
    try:
        os.unlink(p)
        assert not os.path.exists(p)
        assert os.listdir(mnt.mnt) == []
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(data) + 10, 0) == data
        os.pwrite(fd, b"written after unlink", 1000)
        os.fsync(fd)
        got = os.pread(fd, len(data) + 10, 0)
        assert got == data[:1000] + b"written after unlink" + data[1020:]
        os.pwrite(fd, b"tail", len(data))
        assert os.fstat(fd).st_size == len(data) + 4
        # a new file with the same name is a different file
        write_file(p, b"other")
        assert os.pread(fd, 4, len(data)) == b"tail"
        assert used_inodes(mnt.mnt) == before + 1
    finally:
        os.close(fd)
    assert read_file(p) == b"other"
    # the unlinked inode goes away once closed (release is asynchronous: poll)
    wait_until("the unlinked inode to be freed", lambda: used_inodes(mnt.mnt) == before, 10)


# ------------------------------------------------------------------------------ dirs


@pytest.mark.watchdog(400)  # 150 s were not enough on a loaded 2-core machine
def test_directory_with_100000_entries(mnt, engine):
    d = mnt.path("big")
    os.mkdir(d)
    # PostgreSQL: 10,000 (each create and each unlink is a commit, several round trips:
    # 100,000 would take minutes of the suite; the listing goes through 79 batches of
    # meta's readdir all the same)
    n = 100000 if engine == "lmdb" else 10000
    t0 = time.monotonic()
    names = set()
    for i in range(n):
        name = "entry-%05d-%s" % (i, "x" * (i % 50))
        names.add(name)
        if i % 2:
            os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            os.mknod(os.path.join(d, name), 0o644 | stat.S_IFREG)
    created = time.monotonic() - t0
    r = subprocess.run("ls %s | wc -l" % d, shell=True, capture_output=True, timeout=60)
    assert r.stdout.strip() == b"%d" % n, (r.stdout, r.stderr)
    assert set(os.listdir(d)) == names
    # readdir's inode numbers and types are those stat gives
    with os.scandir(d) as it:
        for i, e in enumerate(it):
            if i % 97 == 0:
                st = e.stat(follow_symlinks=False)
                assert e.inode() == st.st_ino and e.is_file(follow_symlinks=False), e.name
    r = run(["ls", "-la", d], timeout=60)
    assert r.stdout.count(b"\n") == n + 3   # total, ., ..
    # a directory listing interleaved with deletions (what rm -rf does)
    r = run(["rm", "-rf", d], timeout=120)
    assert not os.path.exists(d)
    assert os.listdir(mnt.mnt) == []
    print("created %d entries in %.1f s" % (n, created))


def test_open_directory_after_rmdir(mnt):
    """A directory removed while open (or the cwd of a process) still answers fstat
    (st_nlink 0) and lists as empty; nothing can be created in it. (The local
    filesystem behaves so; POSIX: the directory is freed once no one references it.)"""
    d = mnt.path("d")
    os.mkdir(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(d)
        time.sleep(1.2)   # past the kernel's attribute cache (1 s)
        st = os.fstat(fd)
        assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 0
        assert os.listdir(fd) == []
        expect_errno(errno.ENOENT, os.open, "x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    os.mkdir(d)
    r = subprocess.run(["/bin/sh", "-c", "cd %s && rmdir %s && sleep 1.2 && stat -c %%h ." %
                        (d, d)], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"0\n", r


def test_o_path_fd_after_unlink(mnt):
    """fstat through an O_PATH descriptor (no FUSE open) of a file unlinked since."""
    p = mnt.path("f")
    write_file(p, b"data")
    fd = os.open(p, os.O_PATH)
    try:
        os.unlink(p)
        time.sleep(1.2)
        st = os.fstat(fd)
        assert st.st_nlink == 0 and st.st_size == 4
    finally:
        os.close(fd)


def test_reads_without_chunk_cache(kelp):
    """-cacheCapacityMB=0 -memoryCacheMB=0 (no disk and no memory chunk cache): every
    read fetches from the cluster."""
    kelp.start_server()
    m = kelp.mount(["-cacheCapacityMB=0", "-memoryCacheMB=0", "-chunkSizeLimitMB=1"])
    data = os.urandom(3 * MiB + 17)
    write_file(m.path("f"), data)
    m2 = kelp.remount(m)
    assert read_file(m2.path("f")) == data
    fd = os.open(m2.path("f"), os.O_RDONLY | os.O_DIRECT)
    try:
        for off in (0, MiB - 5, 2 * MiB + 100, 3 * MiB):
            assert os.pread(fd, 70000, off) == data[off:off + 70000]
    finally:
        os.close(fd)


NS_WORKER = r"""
import errno, os, random, sys, time
root, seed, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rnd = random.Random(seed)
names = ["n%d" % i for i in range(12)]
dirs = [root] + [os.path.join(root, "d%d" % i) for i in range(4)]
end = time.monotonic() + secs
ops = 0
while time.monotonic() < end and ops < 20000:
    ops += 1
    d = rnd.choice(dirs)
    a = os.path.join(d, rnd.choice(names))
    b = os.path.join(rnd.choice(dirs), rnd.choice(names))
    op = rnd.randrange(9)
    try:
        if op == 0:
            with open(a, "ab") as f:
                f.write(b"x" * rnd.randrange(1, 5000))
        elif op == 1:
            os.mkdir(a)
        elif op == 2:
            os.rename(a, b)
        elif op == 3:
            os.unlink(a)
        elif op == 4:
            os.rmdir(a)
        elif op == 5:
            os.link(a, b)
        elif op == 6:
            os.symlink("t", a)
        elif op == 7:
            fd = os.open(a, os.O_RDWR)
            os.unlink(a)
            os.write(fd, b"gone")
            os.close(fd)
        else:
            os.listdir(d)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR,
                           errno.ENOTDIR, errno.EINVAL, errno.EPERM):
            print("unexpected %s on op %d %s %s" % (e, op, a, b))
            sys.exit(1)
print(ops)
"""


def test_concurrent_namespace_ops_stay_consistent(mnt):
    """Four processes create, rename, link, unlink, rmdir in a few shared directories
    for a few seconds; then every entry resolves, directory link counts are 2 + the
    subdirectories, file link counts match the names found, and statfs counts exactly
    the reachable inodes (no leak, nothing freed that is still named)."""
    for i in range(4):
        os.mkdir(mnt.path("d%d" % i))
    procs = [subprocess.Popen([sys.executable, "-c", NS_WORKER, mnt.mnt, str(s), "6"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for s in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)
    inodes = {}
    subdirs = {}
    for dirpath, dirnames, filenames in os.walk(mnt.mnt):
        st = os.lstat(dirpath)
        inodes[st.st_ino] = ("dir", st.st_nlink, 1)
        subdirs[dirpath] = len(dirnames)
        for name in filenames + [x for x in dirnames if os.path.islink(
                os.path.join(dirpath, x))]:
            st = os.lstat(os.path.join(dirpath, name))
            kind, nlink, seen = inodes.get(st.st_ino, ("file", st.st_nlink, 0))
            inodes[st.st_ino] = (kind, st.st_nlink, seen + 1)
    for dirpath, n in subdirs.items():
        real = len([x for x in os.listdir(dirpath) if os.path.isdir(os.path.join(dirpath, x))
                    and not os.path.islink(os.path.join(dirpath, x))])
        assert os.lstat(dirpath).st_nlink == 2 + real, dirpath
    for ino, (kind, nlink, seen) in inodes.items():
        if kind == "file":
            assert nlink == seen, "inode %d: st_nlink %d, %d names found" % (ino, nlink, seen)
    wait_until("statfs to count exactly the %d reachable inodes" % len(inodes),
               lambda: used_inodes(mnt.mnt) == len(inodes), 10)


def test_readdir_seek_and_rewind(mnt):
    d = mnt.path("d")
    os.mkdir(d)
    for i in range(300):
        write_file(os.path.join(d, "f%03d" % i), b"")
    first = sorted(os.listdir(d))
    assert first == ["f%03d" % i for i in range(300)]
    # scandir twice on one fd-less handle, and telldir/seekdir through ls
    with os.scandir(d) as it:
        a = [e.name for e in it]
    with os.scandir(d) as it:
        b = [e.name for e in it]
    assert sorted(a) == sorted(b) == first


def test_directory_times_follow_changes(mnt):
    d = mnt.path("d")
    os.mkdir(d)
    old = 1_000_000_000_000_000_000

    def changed(action):
        os.utime(d, ns=(old, old))
        action()
        st = os.stat(d)
        return st.st_mtime_ns != old and st.st_ctime_ns > 0

    assert changed(lambda: write_file(os.path.join(d, "f"), b""))
    assert changed(lambda: os.mkdir(os.path.join(d, "sub")))
    assert changed(lambda: os.rename(os.path.join(d, "f"), os.path.join(d, "g")))
    assert changed(lambda: os.link(os.path.join(d, "g"), os.path.join(d, "h")))
    assert changed(lambda: os.symlink("g", os.path.join(d, "s")))
    assert changed(lambda: os.unlink(os.path.join(d, "h")))
    assert changed(lambda: os.rmdir(os.path.join(d, "sub")))
    assert changed(lambda: os.rename(os.path.join(d, "g"), mnt.path("moved-out")))


def test_mkdir_rmdir_errors_and_nlink(mnt):
    os.mkdir(mnt.path("d"))
    assert os.stat(mnt.mnt).st_nlink == 3
    expect_errno(errno.EEXIST, os.mkdir, mnt.path("d"))
    write_file(mnt.path("d", "f"), b"")
    expect_errno(errno.ENOTEMPTY, os.rmdir, mnt.path("d"))
    expect_errno(errno.ENOTDIR, os.rmdir, mnt.path("d", "f"))
    expect_errno(errno.EISDIR, os.unlink, mnt.path("d"))
    expect_errno(errno.ENOTDIR, os.mkdir, mnt.path("d", "f", "x"))
    expect_errno(errno.ENOENT, os.mkdir, mnt.path("nope", "x"))
    os.unlink(mnt.path("d", "f"))
    os.rmdir(mnt.path("d"))
    assert os.stat(mnt.mnt).st_nlink == 2


def test_rmdir_of_cwd_then_create_fails(mnt):
    d = mnt.path("d")
    os.mkdir(d)
    r = subprocess.run(["/bin/sh", "-c", "cd %s && rmdir %s && touch x" % (d, d)],
                       capture_output=True, timeout=30)
    assert r.returncode != 0, "creating a file in a removed directory succeeded"
    assert os.listdir(mnt.mnt) == []


# ------------------------------------------------------------------------------ names


def test_name_255_ok_256_enametoolong(mnt):
    n255 = "n" * 255
    n256 = "n" * 256
    write_file(mnt.path(n255), b"long")
    assert read_file(mnt.path(n255)) == b"long"
    assert os.listdir(mnt.mnt) == [n255]
    os.mkdir(mnt.path("d" * 255))
    os.symlink("target", mnt.path("s" * 255))
    os.link(mnt.path(n255), mnt.path("h" * 255))
    os.rename(mnt.path("h" * 255), mnt.path("r" * 255))
    # multi-byte UTF-8: 85 three-byte characters are 255 bytes
    write_file(mnt.path("\u20ac" * 85), b"euro")
    assert read_file(mnt.path("\u20ac" * 85)) == b"euro"
    expect_errno(errno.ENAMETOOLONG, write_file, mnt.path(n256), b"x")
    expect_errno(errno.ENAMETOOLONG, os.mkdir, mnt.path(n256))
    expect_errno(errno.ENAMETOOLONG, os.symlink, "t", mnt.path(n256))
    expect_errno(errno.ENAMETOOLONG, os.link, mnt.path(n255), mnt.path(n256))
    expect_errno(errno.ENAMETOOLONG, os.rename, mnt.path(n255), mnt.path(n256))
    expect_errno(errno.ENAMETOOLONG, os.mknod, mnt.path(n256), 0o644 | stat.S_IFREG)
    expect_errno(errno.ENAMETOOLONG, os.stat, mnt.path(n256))
    expect_errno(errno.ENAMETOOLONG, write_file, mnt.path("\u20ac" * 86), b"x")
    assert sorted(os.listdir(mnt.mnt)) == sorted(
        [n255, "d" * 255, "s" * 255, "r" * 255, "\u20ac" * 85])


# ------------------------------------------------------------------------------ symlinks, special


def test_symlinks(mnt):
    write_file(mnt.path("target"), b"T")
    os.symlink("target", mnt.path("rel"))
    os.symlink(mnt.path("target"), mnt.path("abs"))
    os.symlink("does/not/exist", mnt.path("dangling"))
    long_target = "/".join(["x" * 200] * 20)[:4000]
    os.symlink(long_target, mnt.path("long"))
    assert os.readlink(mnt.path("rel")) == "target"
    assert os.readlink(mnt.path("abs")) == mnt.path("target")
    assert os.readlink(mnt.path("long")) == long_target
    st = os.lstat(mnt.path("rel"))
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len("target")
    assert os.lstat(mnt.path("long")).st_size == len(long_target)
    assert stat.S_ISREG(os.stat(mnt.path("rel")).st_mode)
    assert read_file(mnt.path("rel")) == b"T" and read_file(mnt.path("abs")) == b"T"
    assert not os.path.exists(mnt.path("dangling")) and os.path.lexists(mnt.path("dangling"))
    expect_errno(errno.EINVAL, os.readlink, mnt.path("target"))
    os.lchown(mnt.path("rel"), 4321, 1234)
    st = os.lstat(mnt.path("rel"))
    assert (st.st_uid, st.st_gid) == (4321, 1234)
    assert os.stat(mnt.path("target")).st_uid == 0
    os.utime(mnt.path("rel"), ns=(5_000_000_001, 6_000_000_002), follow_symlinks=False)
    assert os.lstat(mnt.path("rel")).st_mtime_ns == 6_000_000_002
    os.unlink(mnt.path("rel"))
    assert read_file(mnt.path("target")) == b"T"


def test_fifo_and_device_nodes(mnt):
    f = mnt.path("fifo")
    os.mkfifo(f, 0o640)
    st = os.stat(f)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    # the FIFO works (the kernel runs it; opens are not sent to the daemon)
    r = os.open(f, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(f, os.O_WRONLY)
    os.write(w, b"through the fifo")
    assert os.read(r, 100) == b"through the fifo"
    os.close(w)
    os.close(r)
    os.mknod(mnt.path("chr"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    st = os.stat(mnt.path("chr"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    os.mknod(mnt.path("sock"), 0o600 | stat.S_IFSOCK)
    assert stat.S_ISSOCK(os.stat(mnt.path("sock")).st_mode)
    assert sorted(os.listdir(mnt.mnt)) == ["chr", "fifo", "sock"]


# ------------------------------------------------------------------------------ attributes


def test_chmod_chown_utimens_ns(mnt):
    old = os.umask(0o027)
    try:
        write_file(mnt.path("masked"), b"")
        os.mkdir(mnt.path("maskdir"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(mnt.path("masked")).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(mnt.path("maskdir")).st_mode) == 0o750
    p = mnt.path("f")
    write_file(p, b"data")
    for mode in (0o600, 0o4755, 0o2711, 0o1777, 0o0, 0o7777):
        os.chmod(p, mode)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode, oct(mode)
        assert stat.S_ISREG(os.stat(p).st_mode)
    os.chmod(p, 0o644)
    ct0 = os.stat(p).st_ctime_ns
    time.sleep(0.01)
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_ctime_ns > ct0
    os.chown(p, -1, 42)
    assert (os.stat(p).st_uid, os.stat(p).st_gid) == (1234, 42)
    os.utime(p, ns=(1_234_567_890_123_456_789, 1_111_111_111_987_654_321))
    st = os.stat(p)
    assert st.st_atime_ns == 1_234_567_890_123_456_789
    assert st.st_mtime_ns == 1_111_111_111_987_654_321
    # beyond 2038 and 2106
    os.utime(p, ns=(4_102_444_800_000_000_001, 5_000_000_000_999_999_999))
    assert os.stat(p).st_mtime_ns == 5_000_000_000_999_999_999
    # "now"
    before = time.time_ns()
    os.utime(p)
    st = os.stat(p)
    assert before - 1_000_000_000 <= st.st_mtime_ns <= time.time_ns() + 1_000_000_000
    # on a directory
    os.mkdir(mnt.path("d"))
    os.utime(mnt.path("d"), ns=(7, 8_000_000_009))
    assert os.stat(mnt.path("d")).st_mtime_ns == 8_000_000_009
    os.chmod(mnt.path("d"), 0o2750)
    assert stat.S_IMODE(os.stat(mnt.path("d")).st_mode) == 0o2750
    # a write changes mtime and ctime
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    with open(p, "ab") as f:
        f.write(b"more")
    assert os.stat(p).st_mtime_ns > 1_000_000_000
    # and the attributes survive a remount
    os.utime(p, ns=(3_000_000_003, 4_000_000_004))
    assert mnt.unmount() == 0


def test_attributes_after_remount(kelp):
    kelp.start_server()
    m = kelp.mount()
    p = m.path("f")
    write_file(p, b"data")
    os.chown(p, 99, 98)      # before chmod: a chown clears setgid of a g+x file
    os.chmod(p, 0o2751)
    os.utime(p, ns=(3_000_000_003, 4_000_000_004))
    m2 = kelp.remount(m)
    st = os.stat(m2.path("f"))
    assert stat.S_IMODE(st.st_mode) == 0o2751
    assert (st.st_uid, st.st_gid) == (99, 98)
    assert (st.st_atime_ns, st.st_mtime_ns) == (3_000_000_003, 4_000_000_004)


def test_utimens_before_1970(mnt, tmp_path):
    """Times before the epoch (old archives) round-trip like on the local filesystem."""
    p = mnt.path("old")
    write_file(p, b"")
    ref = str(tmp_path / "old")
    write_file(ref, b"")
    for ns in (-1, -1_500_000_000, -86400 * 365 * 10 * 10**9 + 123):
        os.utime(ref, ns=(ns, ns))
        os.utime(p, ns=(ns, ns))
        want = os.stat(ref).st_mtime_ns
        assert os.stat(p).st_mtime_ns == want, "mtime %d read back as %d (local fs: %d)" % (
            ns, os.stat(p).st_mtime_ns, want)


def test_setgid_directory_inherits_group(mnt):
    d = mnt.path("g")
    os.mkdir(d)
    os.chown(d, 0, 777)
    os.chmod(d, 0o2775)
    write_file(os.path.join(d, "f"), b"")
    os.mkdir(os.path.join(d, "sub"))
    assert os.stat(os.path.join(d, "f")).st_gid == 777
    st = os.stat(os.path.join(d, "sub"))
    assert st.st_gid == 777 and st.st_mode & stat.S_ISGID


# ------------------------------------------------------------------------------ permissions


@pytest.fixture
def omnt(kelp):
    """A mount with -o allow_other (for commands run as nobody)."""
    kelp.start_server()
    return kelp.mount(["-o", "allow_other"])


def test_permissions_as_nobody(omnt):
    need("setpriv")
    m = omnt
    os.chmod(m.mnt, 0o755)
    r = as_nobody("touch %s/x" % m.mnt)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    assert not os.path.exists(m.path("x"))
    # a 0777 directory
    os.mkdir(m.path("open"))
    os.chmod(m.path("open"), 0o777)
    r = as_nobody("echo hi > %s/open/mine && mkdir %s/open/mydir" % (m.mnt, m.mnt))
    assert r.returncode == 0, r
    st = os.stat(m.path("open", "mine"))
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert read_file(m.path("open", "mine")) == b"hi\n"
    # reading and writing root's files
    write_file(m.path("open", "secret"), b"s")
    os.chmod(m.path("open", "secret"), 0o600)
    write_file(m.path("open", "public"), b"p")
    os.chmod(m.path("open", "public"), 0o644)
    r = as_nobody("cat %s/open/secret" % m.mnt)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    r = as_nobody("cat %s/open/public" % m.mnt)
    assert r.returncode == 0 and r.stdout == b"p", r
    r = as_nobody("echo x >> %s/open/public" % m.mnt)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    assert read_file(m.path("open", "public")) == b"p"
    r = as_nobody("chmod 777 %s/open/public" % m.mnt)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    r = as_nobody("chown 65534 %s/open/public" % m.mnt)
    assert r.returncode != 0, r
    # nobody can delete root's file in a 0777 (non-sticky) directory
    r = as_nobody("rm -f %s/open/public" % m.mnt)
    assert r.returncode == 0 and not os.path.exists(m.path("open", "public")), r
    # execute permission on a directory
    os.mkdir(m.path("noexec"))
    write_file(m.path("noexec", "f"), b"")
    os.chmod(m.path("noexec"), 0o744)
    r = as_nobody("cat %s/noexec/f" % m.mnt)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r


def test_sticky_directory(omnt):
    need("setpriv")
    m = omnt
    t = m.path("tmp")
    os.mkdir(t)
    os.chmod(t, 0o1777)
    write_file(os.path.join(t, "roots"), b"r")
    os.chmod(os.path.join(t, "roots"), 0o666)
    r = as_nobody("rm -f %s/roots" % t)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r
    assert os.path.exists(os.path.join(t, "roots"))
    r = as_nobody("mv %s/roots %s/stolen" % (t, t))
    assert r.returncode != 0, r
    # but the file itself is writable (0666), and nobody's own file can be removed
    r = as_nobody("echo w >> %s/roots && echo mine > %s/mine && rm %s/mine" % (t, t, t))
    assert r.returncode == 0, r
    assert read_file(os.path.join(t, "roots")) == b"rw\n"
    assert sorted(os.listdir(t)) == ["roots"]


_COPY_INTO = ("import os; s = os.open('%s', os.O_RDONLY); d = os.open('%s', os.O_WRONLY); "
              "assert os.copy_file_range(s, d, 4) == 4")


def _suid_steps(base):
    """Runs the setuid-clearing steps under `base`; returns the modes seen. (With
    FUSE_HANDLE_KILLPRIV_V2 the mount clears the bits itself: fuse/killpriv.c.)"""
    modes = {}
    names = ("w", "t", "c", "o", "a", "y", "g", "rootw", "keep")
    for name in names:
        p = os.path.join(base, name)
        write_file(p, b"data")
        # g: setgid without group execute (mandatory locking's mark: a write keeps it)
        os.chmod(p, 0o2767 if name == "g" else 0o6777)
    r = as_nobody("echo x >> {b}/w && truncate -s 1 {b}/t && : > {b}/o && "
                  "fallocate -l 8192 {b}/a && echo x >> {b}/g && "
                  "python3 -c \"{copy}\"".format(
                      b=base, copy=_COPY_INTO % (os.path.join(base, "keep"),
                                                 os.path.join(base, "y"))))
    assert r.returncode == 0, r
    with open(os.path.join(base, "rootw"), "ab") as f:   # root keeps them (CAP_FSETID)
        f.write(b"x")
    os.chown(os.path.join(base, "c"), 1, 1)
    for name in names:
        modes[name] = oct(stat.S_IMODE(os.stat(os.path.join(base, name)).st_mode))
    return modes


def test_write_truncate_chown_clear_setuid(kelp, omnt):
    """A write or truncate by another user and a chown clear the setuid and setgid bits
    (the Linux rule, checked against the local filesystem)."""
    need("setpriv", "truncate")
    m = omnt
    d = m.path("s")
    os.mkdir(d)
    os.chmod(d, 0o777)
    ref = os.path.join(kelp.mntroot, "ref")   # local, reachable by nobody
    os.mkdir(ref)
    os.chmod(ref, 0o777)
    want = _suid_steps(ref)
    got = _suid_steps(d)
    print("modes: local %r, mount %r" % (want, got))
    assert want["keep"] == "0o6777"
    assert got == want, "modes on the mount %r, on the local filesystem %r" % (got, want)


# ------------------------------------------------------------------------------ xattrs


def test_xattrs(mnt):
    p = mnt.path("f")
    write_file(p, b"")
    assert os.listxattr(p) == []
    expect_errno(errno.ENODATA, os.getxattr, p, "user.nope")
    os.setxattr(p, "user.a", b"1")
    os.setxattr(p, "user.bin", b"\0\1\2\0\xff")
    os.setxattr(p, "user.empty", b"")
    assert os.getxattr(p, "user.a") == b"1"
    assert os.getxattr(p, "user.bin") == b"\0\1\2\0\xff"
    assert os.getxattr(p, "user.empty") == b""
    assert sorted(os.listxattr(p)) == ["user.a", "user.bin", "user.empty"]
    # XATTR_CREATE / XATTR_REPLACE
    expect_errno(errno.EEXIST, os.setxattr, p, "user.a", b"2", os.XATTR_CREATE)
    assert os.getxattr(p, "user.a") == b"1"
    os.setxattr(p, "user.a", b"22", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.a") == b"22"
    expect_errno(errno.ENODATA, os.setxattr, p, "user.new", b"x", os.XATTR_REPLACE)
    os.setxattr(p, "user.new", b"x", os.XATTR_CREATE)
    assert os.getxattr(p, "user.new") == b"x"
    os.removexattr(p, "user.new")
    expect_errno(errno.ENODATA, os.removexattr, p, "user.new")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.new")
    # sizes: 64 KiB is the largest value
    big = os.urandom(65536)
    os.setxattr(p, "user.big", big)
    assert os.getxattr(p, "user.big") == big
    expect_errno(errno.E2BIG, os.setxattr, p, "user.toobig", b"x" * 65537)
    long_name = "user." + "n" * 250
    os.setxattr(p, long_name, b"v")
    assert os.getxattr(p, long_name) == b"v"
    expect_errno(errno.ERANGE, os.setxattr, p, "user." + "n" * 251, b"v")
    # many names
    for i in range(200):
        os.setxattr(p, "user.k%03d" % i, b"%d" % i)
    names = os.listxattr(p)
    assert len(names) == 205 and len(set(names)) == 205
    # on a directory; a user.* xattr on a symlink is refused by the kernel
    os.mkdir(mnt.path("d"))
    os.setxattr(mnt.path("d"), "user.dir", b"d")
    assert os.getxattr(mnt.path("d"), "user.dir") == b"d"
    assert os.listxattr(mnt.path("d")) == ["user.dir"]
    # the CLI tools
    need("setfattr", "getfattr")
    run(["setfattr", "-n", "user.cli", "-v", "hello", p])
    r = run(["getfattr", "-n", "user.cli", "--only-values", p])
    assert r.stdout == b"hello"
    run(["setfattr", "-x", "user.cli", p])
    r = run(["getfattr", "-n", "user.cli", p], check=False)
    assert r.returncode != 0
    # a hard link shares them; a new file with the same name does not
    os.link(p, mnt.path("g"))
    assert os.getxattr(mnt.path("g"), "user.a") == b"22"
    os.unlink(p)
    os.unlink(mnt.path("g"))
    write_file(p, b"")
    assert os.listxattr(p) == []


def test_xattrs_after_remount(kelp):
    kelp.start_server()
    m = kelp.mount()
    write_file(m.path("f"), b"")
    os.setxattr(m.path("f"), "user.x", b"y" * 1000)
    os.setxattr(m.path("f"), "trusted.t", b"t")
    m2 = kelp.remount(m)
    assert os.getxattr(m2.path("f"), "user.x") == b"y" * 1000
    assert sorted(os.listxattr(m2.path("f"))) == ["trusted.t", "user.x"]


# ------------------------------------------------------------------------------ sparse, large


def test_sparse_file_1gib(mnt):
    p = mnt.path("sparse")
    with open(p, "wb") as f:
        f.seek(GiB)
        f.write(b"end")
    assert os.stat(p).st_size == GiB + 3
    fd = os.open(p, os.O_RDONLY)
    try:
        zero = bytes(MiB)
        for off in (0, 100 * MiB + 12345, GiB // 2, GiB - MiB):
            assert os.pread(fd, MiB, off) == zero, off
        assert os.pread(fd, 4099, GiB - 4096) == bytes(4096) + b"end"
        assert os.pread(fd, 10, GiB + 3) == b""
        # the whole file streams as zeros (the daemon makes the holes)
        total = 0
        nonzero = 0
        t0 = time.monotonic()
        while True:
            b = os.read(fd, 4 * MiB)
            if not b:
                break
            total += len(b)
            if b.count(0) != len(b):
                nonzero += len(b) - b.count(0)
            assert time.monotonic() - t0 < 60, "reading 1 GiB of holes takes over 60 s"
        assert total == GiB + 3 and nonzero == 3
    finally:
        os.close(fd)


def test_file_over_4gib(kelp):
    kelp.start_server()
    m = kelp.mount()
    p = m.path("big")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"hello", 5 * GiB)
        os.pwrite(fd, b"0123456789", 4 * GiB - 3)   # straddles 4 GiB
        os.pwrite(fd, b"start", 0)
        assert os.fstat(fd).st_size == 5 * GiB + 5
        assert os.pread(fd, 5, 5 * GiB) == b"hello"
        assert os.pread(fd, 14, 4 * GiB - 5) == b"\0\0" + b"0123456789" + b"\0\0"
    finally:
        os.close(fd)
    m2 = kelp.remount(m)
    p = m2.path("big")
    assert os.stat(p).st_size == 5 * GiB + 5
    fd = os.open(p, os.O_RDWR)
    try:
        assert os.pread(fd, 5, 5 * GiB) == b"hello"
        assert os.pread(fd, 10, 4 * GiB - 3) == b"0123456789"
        assert os.pread(fd, 5, 0) == b"start"
        assert os.pread(fd, 4096, 3 * GiB) == bytes(4096)
        os.ftruncate(fd, 4 * GiB + 2)
        assert os.fstat(fd).st_size == 4 * GiB + 2
        assert os.pread(fd, 100, 4 * GiB - 3) == b"01234"
        os.ftruncate(fd, 6 * GiB)
        assert os.pread(fd, 8, 4 * GiB) == b"34\0\0\0\0\0\0"
        assert os.pread(fd, 5, 5 * GiB) == bytes(5)
    finally:
        os.close(fd)


def test_mmap_writes_without_msync_stored_at_munmap(kelp):
    """Pages dirtied through a shared map and never msync'ed reach the mount when the
    map goes away; they are there after a remount."""
    import mmap
    kelp.start_server()
    m = kelp.mount(["-chunkSizeLimitMB=1"])
    p = m.path("m")
    size = 2 * MiB + 1234
    base = bytearray(os.urandom(size))
    write_file(p, bytes(base))
    fd = os.open(p, os.O_RDWR)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)   # the map keeps the file open
    for off in (0, 4095, MiB - 2, MiB + 77777, size - 10):
        piece = os.urandom(10)
        mm[off:off + 10] = piece
        base[off:off + 10] = piece
    mm.close()
    assert read_file(p) == bytes(base)
    m2 = kelp.remount(m)
    assert read_file(m2.path("m")) == bytes(base)


# ------------------------------------------------------------------------------ write modes


def test_o_append(mnt):
    p = mnt.path("log")
    write_file(p, b"start\n")
    a = os.open(p, os.O_WRONLY | os.O_APPEND)
    b = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(50):
            os.write(a if i % 2 else b, b"line %d\n" % i)
        # an explicit seek does not matter with O_APPEND
        os.lseek(a, 0, os.SEEK_SET)
        os.write(a, b"last\n")
    finally:
        os.close(a)
        os.close(b)
    want = b"start\n" + b"".join(b"line %d\n" % i for i in range(50)) + b"last\n"
    assert read_file(p) == want
    r = subprocess.run("echo shell >> %s" % p, shell=True, timeout=10)
    assert r.returncode == 0
    assert read_file(p) == want + b"shell\n"


def test_o_trunc_truncates_existing_file(kelp):
    """open(O_TRUNC) of an existing file empties it (shell '>', Python 'wb')."""
    kelp.start_server()
    m = kelp.mount()
    p = m.path("f")
    write_file(p, b"0123456789" * 1000)
    write_file(p, b"new")                        # O_WRONLY|O_CREAT|O_TRUNC
    assert read_file(p) == b"new"
    assert os.stat(p).st_size == 3
    r = subprocess.run("echo hi > %s" % m.path("g"), shell=True, timeout=10)
    assert r.returncode == 0
    write_file(m.path("g"), b"a much longer first line\n")
    r = subprocess.run("echo hi > %s" % m.path("g"), shell=True, timeout=10)
    assert read_file(m.path("g")) == b"hi\n"
    fd = os.open(m.path("g"), os.O_RDWR | os.O_TRUNC)
    os.close(fd)
    assert os.stat(m.path("g")).st_size == 0
    # what the daemon stores, after a remount
    m2 = kelp.remount(m)
    assert read_file(m2.path("f")) == b"new"
    assert read_file(m2.path("g")) == b""


def test_ftruncate_and_truncate_by_path(mnt):
    p = mnt.path("f")
    data = os.urandom(3 * MiB)
    write_file(p, data)
    os.truncate(p, MiB + 5)
    assert read_file(p) == data[:MiB + 5]
    os.truncate(p, 2 * MiB)
    assert read_file(p) == data[:MiB + 5] + bytes(MiB - 5)
    fd = os.open(p, os.O_RDWR)
    try:
        os.write(fd, b"abc")
        os.ftruncate(fd, 2)   # buffered write cut by the truncate
        assert os.fstat(fd).st_size == 2
        assert os.pread(fd, 10, 0) == b"ab"
        os.pwrite(fd, b"z", 5)
        assert os.pread(fd, 10, 0) == b"ab\0\0\0z"
    finally:
        os.close(fd)
    assert read_file(p) == b"ab\0\0\0z"


def test_fsync_fdatasync(mnt):
    p = mnt.path("f")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, os.urandom(5 * MiB))
        os.fsync(fd)
        os.write(fd, b"more")
        os.fdatasync(fd)
        assert os.fstat(fd).st_size == 5 * MiB + 4
    finally:
        os.close(fd)
    rfd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(rfd)
    finally:
        os.close(rfd)
    dfd = os.open(mnt.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    run(["sync", p])
    run(["sync", "-f", mnt.mnt])


def test_size_seen_by_other_process_before_flush(mnt):
    p = mnt.path("f")
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"x" * 100000)
        r = run([sys.executable, "-c", "import os,sys; print(os.stat(sys.argv[1]).st_size)", p])
        assert r.stdout.strip() == b"100000"
        r = run(["cat", p])
        assert r.stdout == b"x" * 100000
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ statfs, locks


def test_statfs_df(mnt):
    st = os.statvfs(mnt.mnt)
    assert st.f_blocks > 0 and st.f_bsize > 0
    assert st.f_bavail <= st.f_blocks
    assert st.f_namemax == 255
    r = run(["df", "-k", mnt.mnt])
    line = r.stdout.decode().splitlines()[-1].split()
    assert int(line[1]) > 0, r.stdout
    r = run(["df", "-i", mnt.mnt])
    assert r.returncode == 0


LOCK_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
if sys.argv[2] == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
sys.stdout.write("locked\n")
sys.stdout.flush()
sys.stdin.read()   # until the parent closes the pipe
"""


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_locks_between_processes(mnt, kind):
    p = mnt.path("lockfile")
    write_file(p, b"x" * 100)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, p, kind],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = holder.stdout.readline()
        assert line == b"locked\n"
        fd = os.open(p, os.O_RDWR)
        try:
            if kind == "flock":
                expect_errno((errno.EWOULDBLOCK, errno.EAGAIN), fcntl.flock, fd,
                             fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:
                expect_errno((errno.EAGAIN, errno.EACCES), fcntl.lockf, fd,
                             fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
                # a range the holder does not lock is free
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
                fcntl.lockf(fd, fcntl.LOCK_UN, 10, 50)
            holder.stdin.close()
            holder.wait(10)
            # the lock went with the holder
            if kind == "flock":
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        finally:
            os.close(fd)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    # the flock(1) tool too
    r = subprocess.run("flock -n %s -c true" % p, shell=True, timeout=10)
    assert r.returncode == 0
