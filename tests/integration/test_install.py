"""`meson install` (issue 15): the kelp binary, the mount(8) helper and systemd units
for the master, the volume server and a mount, installed under a DESTDIR of the test's
own; the units start the installed binary with flags it accepts."""

import os
import shlex
import shutil
import subprocess

import pytest


def test_meson_install(kelp_bin, tmp_path):
    build = os.path.dirname(os.path.dirname(kelp_bin))
    if not os.path.exists(os.path.join(build, "build.ninja")) or not shutil.which("meson"):
        pytest.skip("KELP_BIN is not in a meson build directory")
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", build, "--destdir", str(dest),
                        "--no-rebuild", "--quiet"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    files = {os.path.relpath(os.path.join(d, f), dest)
             for d, _, fs in os.walk(dest) for f in fs}
    by_name = {os.path.basename(f): f for f in files}
    for name in ("kelp", "mount.fuse.kelp", "kelp-master.service", "kelp-volume.service",
                 "kelp-mount.service", "kelp.default"):
        assert name in by_name, (name, sorted(files))
    assert not any("test_" in f or "fuzz" in f for f in files), sorted(files)
    kelp = dest / by_name["kelp"]
    assert os.access(kelp, os.X_OK) and os.access(dest / by_name["mount.fuse.kelp"], os.X_OK)
    assert subprocess.run([str(kelp), "version"], capture_output=True).returncode == 0
    # Each unit runs "<bindir>/kelp <command> <flags> $ARGS": the installed path, and
    # flags (with /etc/default/kelp's example values) that the command accepts.
    env = {}
    for line in (dest / by_name["kelp.default"]).read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = shlex.split(v)[0] if v.startswith('"') else v
    for unit in ("kelp-master", "kelp-volume", "kelp-mount"):
        text = (dest / by_name[unit + ".service"]).read_text()
        start = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")][0]
        argv = shlex.split(start[len("ExecStart="):])
        assert "/" + os.path.relpath(kelp, dest) == argv[0], (argv[0], kelp)
        args = []
        for a in argv[2:]:
            args += shlex.split(env[a[1:]]) if a.startswith("$") else [a]
        # -h after the flags: the command parses them all, then prints its help, exit 0
        r = subprocess.run([str(kelp), argv[1]] + args + ["-h"], capture_output=True,
                           timeout=30)
        assert r.returncode == 0, (unit, args, r.stderr.decode()[-500:])
