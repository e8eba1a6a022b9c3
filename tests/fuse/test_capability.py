"""security.capability, which the kernel asks for before every write (to remove it, as
a write must): the mount answers from the open file when it knows the file has none
(no metadata round trip per write), and still removes a capability set meanwhile, by
this mount at once, by another mount within the attribute cache time."""

import os
import struct
import sys
import time

import pytest
import requests

from kelp_fuse_conftest import wait_until, write_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import promtext  # noqa: E402

CAP = "security.capability"
# VFS_CAP_REVISION_2 with the effective flag; permitted CAP_NET_BIND_SERVICE (bit 10)
CAP_VALUE = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def _has_cap(path):
    try:
        return os.getxattr(path, CAP) == CAP_VALUE
    except OSError:
        return False


def _round_trips(port):
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    return promtext.total(promtext.parse(text), "kelp_mount_meta_round_trips_total")


def test_write_removes_a_capability_set_on_this_mount(mnt):
    p = mnt.path("tool")
    write_file(p, b"#!/bin/sh\n")
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, b"#")   # the mount now knows it has no capability
        os.setxattr(p, CAP, CAP_VALUE)
        assert _has_cap(p)
        os.write(fd, b"!")   # the same open file: the setxattr must be seen
        assert not _has_cap(p)
    finally:
        os.close(fd)
    os.setxattr(p, CAP, CAP_VALUE)
    with open(p, "r+b") as f:
        f.write(b"#")
    assert not _has_cap(p)
    # a file created by this open is known to have none from the start
    q = mnt.path("new")
    fd = os.open(q, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o755)
    try:
        os.write(fd, b"#")
        os.setxattr(q, CAP, CAP_VALUE)
        assert _has_cap(q)
        os.write(fd, b"!")
        assert not _has_cap(q)
    finally:
        os.close(fd)


@pytest.mark.parametrize("engine", ["pg"], indirect=True)   # one mount per LMDB metadata
def test_writes_ask_once_and_see_another_mounts_capability(kelp):
    kelp.start_server()
    meta = kelp.new_meta()
    port_file = str(kelp.tmp / "a.port")
    a = kelp.mount(["-metricsPort=0", "-metricsPortFile=" + port_file], meta=meta)
    b = kelp.mount(meta=meta)
    with open(port_file) as f:
        port = int(f.read())
    write_file(a.path("tool"), b"")
    fd = os.open(a.path("tool"), os.O_WRONLY)
    try:
        os.write(fd, b"x")
        rt0 = _round_trips(port)
        for _ in range(50):
            os.write(fd, b"x" * 4096)   # buffered in the mount: no metadata asked
        assert _round_trips(port) - rt0 < 10
        # B sets a capability: A's writes remove it within the attribute cache time
        os.setxattr(b.path("tool"), CAP, CAP_VALUE)
        assert _has_cap(b.path("tool"))
        t0 = time.monotonic()

        def removed():
            os.write(fd, b"y")
            return not _has_cap(b.path("tool"))

        wait_until("A's write to remove B's capability", removed, 10, interval=0.1)
        assert time.monotonic() - t0 < 1 + 2   # -attrCacheSec 1, and a margin
    finally:
        os.close(fd)


def test_the_kernel_asks_once_per_file_not_per_write(kelp):
    """With FUSE_HANDLE_KILLPRIV_V2 (negotiated over libfuse 3.14: fuse/killpriv.c) the
    kernel asks for security.capability once per file, not before each of its writes,
    and the mount removes a capability itself (test above) and clears setuid and setgid
    (test_namespace.py::test_write_truncate_chown_clear_setuid)."""
    kelp.start_server()
    port_file = str(kelp.tmp / "m.port")
    m = kelp.mount(["-metricsPort=0", "-metricsPortFile=" + port_file])
    with open(port_file) as f:
        port = int(f.read())
    assert "the kernel takes FUSE_HANDLE_KILLPRIV_V2" in m.log_text()

    def getxattrs():
        text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
        return promtext.total(promtext.parse(text),
                              "kelp_mount_operation_duration_seconds_count", op="getxattr")

    g0 = getxattrs()
    for name in ("a", "b", "c"):
        fd = os.open(m.path(name), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            for _ in range(40):
                os.write(fd, b"x" * 100)
        finally:
            os.close(fd)
    asked = getxattrs() - g0
    assert asked <= 6, asked      # once per file (3); was one per write: 120
