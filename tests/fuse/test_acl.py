"""POSIX ACLs (issue 12, section 4): stored as the system.posix_acl_* xattrs, evaluated
by the kernel (default_permissions + FUSE_CAP_POSIX_ACL), kept in step with the mode
bits both ways, inherited from a directory's default ACL (which replaces the umask),
copied by cp -a; enforced for a user that is not root (nobody, through setpriv).

Where Linux semantics are the reference, the same steps run on a local directory
(tmp_path) when its filesystem takes ACLs, and getfacl must print the same."""

import os
import stat
import subprocess

import pytest

from kelp_fuse_conftest import as_nobody, need, read_file, run, write_file


def getfacl(path):
    """getfacl's entries (no comment lines), a tuple of lines."""
    out = run(["getfacl", "-c", "-p", path]).stdout.decode()
    return tuple(line for line in out.splitlines() if line and not line.startswith("#"))


def setfacl(*args):
    run(["setfacl"] + list(args))


def _local_acls(tmp_path):
    p = tmp_path / "probe"
    p.write_bytes(b"")
    r = subprocess.run(["setfacl", "-m", "u:nobody:r", str(p)], capture_output=True)
    return r.returncode == 0


def _steps(root):
    """The same ACL changes under root; returns what getfacl and stat say after each."""
    seen = []

    def note(*names):
        for n in names:
            p = os.path.join(root, n)
            seen.append((n, getfacl(p), oct(stat.S_IMODE(os.lstat(p).st_mode))))

    d = os.path.join(root, "d")
    os.mkdir(d, 0o750)
    os.chmod(d, 0o750)
    f = os.path.join(d, "f")
    write_file(f, b"data")
    os.chmod(f, 0o640)
    setfacl("-m", "u:nobody:rw,g:nogroup:r", f)          # adds a mask: rw
    note("d/f")
    os.chmod(f, 0o604)                                  # the mask follows the group bits
    note("d/f")
    setfacl("-m", "m::rx", f)                           # the group bits follow the mask
    note("d/f")
    setfacl("-x", "u:nobody", f)
    note("d/f")
    setfacl("-b", f)                                    # back to the mode only
    note("d/f")
    setfacl("-m", "u::r,g::-,o::r", f)                  # only the three: just the mode
    note("d/f")
    # default ACLs: inherited by files and directories, the umask ignored
    setfacl("-d", "-m", "u:nobody:rwx,g::rx,o::-", d)
    note("d")
    old = os.umask(0o077)
    try:
        os.close(os.open(os.path.join(d, "new"), os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(os.path.join(d, "sub"), 0o777)
        os.close(os.open(os.path.join(d, "sub", "deeper"), os.O_CREAT | os.O_WRONLY, 0o640))
        os.mknod(os.path.join(d, "fifo"), stat.S_IFIFO | 0o666)
        os.symlink("new", os.path.join(d, "link"))
    finally:
        os.umask(old)
    note("d/new", "d/sub", "d/sub/deeper", "d/fifo")
    setfacl("-k", d)                                    # no default any more: umask again
    old = os.umask(0o027)
    try:
        os.close(os.open(os.path.join(d, "plain"), os.O_CREAT | os.O_WRONLY, 0o666))
    finally:
        os.umask(old)
    note("d", "d/plain")
    return seen


def test_acls_match_a_local_filesystem(mnt, tmp_path):
    need("setfacl", "getfacl")
    got = _steps(mnt.mnt)
    local = tmp_path / "local"
    local.mkdir()
    if not _local_acls(tmp_path):
        pytest.skip("the local filesystem of tmp_path takes no ACLs: nothing to compare")
    want = _steps(str(local))
    assert got == want


def test_acls_are_enforced_for_a_user(kelp):
    need("setfacl", "getfacl", "setpriv")
    kelp.start_server()
    m = kelp.mount(["-o", "allow_other"])   # for commands run as nobody
    d = m.path("d")
    os.mkdir(d)
    os.chmod(d, 0o700)
    write_file(os.path.join(d, "f"), b"secret")
    os.chmod(os.path.join(d, "f"), 0o600)
    assert as_nobody("cat %s/f" % d).returncode != 0
    # a named entry for nobody on both: reads work, writes do not
    setfacl("-m", "u:nobody:rx", d)
    setfacl("-m", "u:nobody:r", os.path.join(d, "f"))
    r = as_nobody("cat %s/f" % d)
    assert r.returncode == 0 and r.stdout == b"secret", r
    assert as_nobody("echo x >> %s/f" % d).returncode != 0
    assert as_nobody("touch %s/new" % d).returncode != 0
    # chmod 700 sets the mask to ---: the named entry no longer grants anything
    os.chmod(d, 0o700)
    assert "mask::---" in getfacl(d)
    assert as_nobody("ls %s" % d).returncode != 0
    os.chmod(d, 0o750)
    assert as_nobody("ls %s" % d).returncode == 0
    # an entry that takes away what "other" grants
    write_file(m.path("open"), b"public")
    os.chmod(m.path("open"), 0o666)
    assert as_nobody("cat %s" % m.path("open")).returncode == 0
    setfacl("-m", "u:nobody:-", m.path("open"))
    assert as_nobody("cat %s" % m.path("open")).returncode != 0
    assert as_nobody("echo x > %s" % m.path("open")).returncode != 0
    # inheritance: nobody may create in a directory whose default ACL says so, and the
    # files it creates carry the ACL (the owner's group gets nothing: the mask and
    # group entry come from the default ACL, not the umask)
    w = m.path("w")
    os.mkdir(w, 0o755)
    os.chmod(w, 0o755)
    setfacl("-m", "u:nobody:rwx", w)
    setfacl("-d", "-m", "u::rwx,g::-,o::-,u:nobody:rwx", w)
    r = as_nobody("umask 022; echo hi > %s/byn && mkdir %s/dn && echo ok" % (w, w))
    assert r.returncode == 0, r
    st = os.stat(os.path.join(w, "byn"))
    assert st.st_uid == 65534 and stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    acl = getfacl(os.path.join(w, "byn"))
    assert any(e.startswith("user:nobody:rwx") for e in acl) and "mask::rw-" in acl, acl
    assert "default:user:nobody:rwx" in getfacl(os.path.join(w, "dn"))
    # a file root creates there: nobody may write it through the inherited entry
    write_file(os.path.join(w, "rootfile"), b"r")
    assert as_nobody("echo more >> %s/rootfile" % w).returncode == 0
    assert read_file(os.path.join(w, "rootfile")) == b"rmore\n"
    # the same after a remount: the kernel asks the metadata again
    m2 = kelp.remount(m)
    assert as_nobody("cat %s/f" % m2.path("d")).returncode == 0
    assert as_nobody("cat %s" % m2.path("open")).returncode != 0


def test_cp_a_keeps_acls(mnt, tmp_path):
    need("setfacl", "getfacl")
    src = mnt.path("src")
    os.mkdir(src)
    write_file(os.path.join(src, "f"), b"x" * 1000)
    setfacl("-m", "u:nobody:rw,g:nogroup:r", os.path.join(src, "f"))
    setfacl("-d", "-m", "u:nobody:rx", src)
    run(["cp", "-a", src, mnt.path("dst")])
    for n in ("", "f"):
        assert getfacl(os.path.join(mnt.path("dst"), n)) == getfacl(os.path.join(src, n))
    assert os.stat(mnt.path("dst", "f")).st_mode == os.stat(os.path.join(src, "f")).st_mode
    # and from the mount to a local directory and back, when the local one takes ACLs
    if _local_acls(tmp_path):
        run(["cp", "-a", src, str(tmp_path / "out")])
        run(["cp", "-a", str(tmp_path / "out"), mnt.path("back")])
        assert getfacl(mnt.path("back", "f")) == getfacl(os.path.join(src, "f"))
        assert getfacl(str(tmp_path / "out" / "f")) == getfacl(os.path.join(src, "f"))
