"""A mount that cannot work says so at once (issue 15): no master answering within
-timeout refuses to mount (exit 1, the masters named) unless -metaOffline; a mount
point that does not exist gets one clear message."""

import os
import subprocess
import time

from kelp_fuse_conftest import free_port, is_mounted, wait_until


def _run_mount(kelp, mnt, masters, *args):
    t0 = time.monotonic()
    r = subprocess.run([kelp.kelp_bin, "mount", "-dir=" + mnt, "-master=" + masters,
                        "-meta=" + str(kelp.tmp / "meta-err")] + list(args),
                       capture_output=True, timeout=60)
    return r, time.monotonic() - t0


def test_no_master_refuses_to_mount(kelp):
    mnt = os.path.join(kelp.mntroot, "nomaster")
    os.makedirs(mnt)
    masters = "127.0.0.1:%d,127.0.0.1:%d" % (free_port(), free_port())
    r, took = _run_mount(kelp, mnt, masters, "-timeout=2")
    err = r.stderr.decode()
    assert r.returncode == 1, (r.returncode, err)
    assert "no master answers at " + masters in err and "-metaOffline" in err, err
    assert took < 15, took
    assert not is_mounted(mnt)


def test_no_master_with_meta_offline_mounts(kelp):
    srv = kelp.start_server(master_port=free_port(), volume_port=free_port())
    srv.kill9()
    m = kelp.mount(["-timeout=2", "-metaOffline"], server=srv)
    os.mkdir(m.path("d"))            # metadata only: served from the local metadata
    assert os.listdir(m.mnt) == ["d"]
    # every change of reachability is logged (fuse/health.c)
    wait_until("the mount to log that no master answers",
               lambda: "no master answers" in m.log_text(), 10)


def test_missing_mount_point_says_so_once(kelp):
    kelp.start_server()
    mnt = os.path.join(kelp.mntroot, "not", "there")
    r, _ = _run_mount(kelp, mnt, kelp.server.master_addr)
    err = r.stderr.decode()
    assert r.returncode == 1
    assert err.count("\n") == 1 and "does not exist" in err and mnt in err, err
