"""With a shared engine, the attributes of a directory this mount just changed answer
the kernel's next GETATTR of it from memory (with default_permissions the kernel asks
after every change in a directory, to check the next one): one round trip less per
create. Its own changes show at once; another mount's within the attribute cache time."""

import os
import stat
import sys
import time

import pytest
import requests

from kelp_fuse_conftest import wait_until, write_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
import promtext  # noqa: E402


def _metric(port, name, **labels):
    text = requests.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    return promtext.total(promtext.parse(text), name, **labels)


def _dir_state(path):
    st = os.stat(path)
    return st.st_nlink, st.st_mtime_ns, st.st_mode


@pytest.mark.parametrize("engine", ["pg"], indirect=True)   # LMDB: no memory needed
@pytest.mark.parametrize("attr_cache", ["1", "0"])
def test_own_changes_at_once_and_fewer_round_trips(kelp, attr_cache):
    kelp.start_server()
    meta = kelp.new_meta()
    port_file = str(kelp.tmp / "a.port")
    a = kelp.mount(["-attrCacheSec=" + attr_cache, "-metricsPort=0",
                    "-metricsPortFile=" + port_file], meta=meta)
    b = kelp.mount(meta=meta)
    with open(port_file) as f:
        port = int(f.read())
    d = a.path("d")
    os.mkdir(d)
    # this mount's own changes of d show at once in its attributes
    before = _dir_state(d)
    os.mkdir(os.path.join(d, "sub"))
    after = _dir_state(d)
    assert after[0] == before[0] + 1 and after[1] >= before[1]
    os.chmod(d, 0o700)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    os.rmdir(os.path.join(d, "sub"))
    assert os.stat(d).st_nlink == before[0]
    # another mount's change shows within the cache time
    os.mkdir(b.path("d", "fromb"))
    t0 = time.monotonic()
    wait_until("B's mkdir in A's attributes of d",
               lambda: os.stat(d).st_nlink == before[0] + 1, 10)
    assert time.monotonic() - t0 < float(attr_cache) + 2
    # round trips per mknod: the LOOKUP of the new name, the create, and the kernel's
    # GETATTR of d after it (answered from memory with -attrCacheSec > 0)
    n = 60
    rt0 = _metric(port, "kelp_mount_meta_round_trips_total")
    get0 = _metric(port, "kelp_mount_operation_duration_seconds_count", op="getattr")
    for i in range(n):
        os.mknod(os.path.join(d, "f%d" % i), 0o644 | stat.S_IFREG)
    per = (_metric(port, "kelp_mount_meta_round_trips_total") - rt0) / n
    getattrs = (_metric(port, "kelp_mount_operation_duration_seconds_count", op="getattr")
                - get0) / n
    assert getattrs >= 0.9, getattrs   # the kernel did ask
    if attr_cache == "1":
        assert per < 3.6, per
    else:
        assert per >= 3.6, per
    assert len(os.listdir(b.path("d"))) == n + 1
