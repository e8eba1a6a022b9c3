"""Fixtures and helpers for the FUSE mount tests (tests/fuse).

Every test gets its own cluster (`kelp server`: a master and a volume server in one
process, on 127.0.0.1) and one or more mounts (`kelp mount`) of it. The binary is
$KELP_BIN (default <repo>/build/daemons/kelp). Each daemon runs in its own process
group with its stderr in a log file that is attached to the report of a failing test.

Cleanup, whatever happens: `fusermount3 -u -z MNT` (errors ignored), then SIGKILL of
every process group. A watchdog thread aborts the mounts (kill -9 + lazy unmount) if a
test runs past TEST_TIMEOUT seconds, so a request stuck in the mount daemon cannot hang
the suite: the stuck system call then fails with ENOTCONN and the test fails.

Mount points live under a fresh 0755 directory in /tmp (not under pytest's 0700
tmp_path) so that tests may run commands as `nobody` inside the mount.

Every wait is a bounded poll.

Engines: every test that uses the `kelp` fixture runs twice, with the metadata in LMDB
(`[lmdb]`) and in PostgreSQL (`[pg]`: one throwaway PostgreSQL 15 server for the
session, tests/fuse/pgserver.py, and a fresh database for each new mount's metadata).
KELP_ENGINES=lmdb (or pg) runs only one.
"""

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)   # `import randio`, `import pgserver`
import pgserver  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from dropdata import _drop_data_of_passed_tests, note_outcome  # noqa: E402,F401

REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# /work/main/build/daemons/kelp for the repository at /work/main (a clone elsewhere, as
# in CI, uses its own build)
DEFAULT_BIN = os.path.join(REPO_ROOT, "build", "daemons", "kelp")

READY_TIMEOUT = 15.0   # seconds until a server / mount must be ready
POLL = 0.02            # seconds between two looks at a ready file
TEST_TIMEOUT = 150     # watchdog per test (seconds): mounts are aborted after it
                       # (@pytest.mark.watchdog(seconds) gives a big test more)
MiB = 1 << 20
GiB = 1 << 30

ENGINES = [e for e in os.environ.get("KELP_ENGINES", "lmdb,pg").split(",") if e]
# The test modules import the helpers below as `kelp_fuse_conftest`: the plain name
# `conftest` is shared with tests/integration/conftest.py when pytest is given both
# directories (the last conftest loaded wins sys.modules["conftest"]).
sys.modules["kelp_fuse_conftest"] = sys.modules[__name__]


class KelpError(Exception):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, fn, timeout, interval=0.05):
    """Calls fn() until it returns a true value (returned); fails the test after
    `timeout` seconds, naming `what` and the last value or exception."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except (OSError, requests.RequestException, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1f s waiting for %s; last: %r" % (
                timeout, what, last), pytrace=False)
        time.sleep(interval)


def is_mounted(path):
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4] == path:
                    return True
    except OSError:
        pass
    return False


def lazy_unmount(path):
    subprocess.run(["fusermount3", "-u", "-z", str(path)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)


class Daemon:
    """One process (its own process group) with its output in a log file."""

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                       "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")

    def __init__(self, name, log_path):
        self.name = name
        self.log_path = str(log_path)
        self.proc = None
        self.expect_running = False
        self.starts = 0

    def spawn(self, cmd, cwd):
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(cmd))).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, cwd=str(cwd), start_new_session=True)
        self.expect_running = True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill9(self):
        """kill -9 of the whole group; waits for the exit."""
        self.expect_running = False
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout; SIGKILL after. Returns the exit status (None if
        it had to be killed)."""
        if self.proc is None:
            return None
        self.expect_running = False
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                return None
        self.signal_group(signal.SIGKILL)
        return self.proc.returncode

    def crashed(self):
        """Description of an exit we did not ask for, else None."""
        if self.expect_running and self.proc is not None and self.proc.poll() is not None:
            return "%s exited on its own with status %s" % (self.name, self.proc.returncode)
        return None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=150):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def sanitizer_report(self):
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in self.SANITIZER_MARKS):
                return "\n".join(lines[i:i + 40])
        return None


class Server(Daemon):
    """`kelp server` (master + volume server). Explicit ports are kept across restarts
    when given (master_port / volume_port); 0 picks free ones."""

    def __init__(self, kelp_bin, workdir, datadir, master_port=0, volume_port=0, name="server",
                 args=(), http_kw=None, scheme="http"):
        super().__init__(name, os.path.join(str(workdir), name + ".log"))
        self.kelp_bin = kelp_bin
        self.args = list(args)          # extra flags (e.g. -tls.*)
        self.http_kw = http_kw or {}    # extra requests arguments (cert, verify)
        self.scheme = scheme
        self.workdir = str(workdir)
        self.datadir = str(datadir)
        self.master_port = master_port
        self.volume_port = volume_port
        self.ready = os.path.join(self.workdir, name + ".ready")
        self.vready = os.path.join(self.workdir, name + ".vready")

    @property
    def master_addr(self):
        return "127.0.0.1:%d" % self.master_port

    def start(self, timeout=READY_TIMEOUT):
        for p in (self.ready, self.vready):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        os.makedirs(self.datadir, exist_ok=True)
        cmd = [self.kelp_bin, "server", "-dir=" + self.datadir, "-ip=127.0.0.1",
               "-master.port=%d" % self.master_port, "-volume.port=%d" % self.volume_port,
               "-readyFile=" + self.ready, "-volume.readyFile=" + self.vready,
               "-pulseSeconds=1"] + self.args
        self.spawn(cmd, self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.ready) and os.path.exists(self.vready):
                try:
                    with open(self.ready) as f:
                        mp = int(f.read().strip())
                    with open(self.vready) as f:
                        vp = int(f.read().strip())
                except ValueError:
                    mp = vp = None
                if mp and vp:
                    self.master_port, self.volume_port = mp, vp
                    break
            if self.proc.poll() is not None:
                self.expect_running = False
                raise KelpError("kelp server exited with %s before it was ready:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise KelpError("kelp server not ready after %.0f s:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(POLL)
        # Writes need a writable volume known to the master: wait for the heartbeat.
        wait_until("the volume server to join the master",
                   lambda: self.data_node_urls(), READY_TIMEOUT)
        return self

    def master_get(self, path, **kw):
        kw.setdefault("timeout", 5)
        for k, v in self.http_kw.items():
            kw.setdefault(k, v)
        return requests.get("%s://%s%s" % (self.scheme, self.master_addr, path), **kw)

    def data_node_urls(self):
        """Volume server urls listed in the master's /dir/status."""
        topo = self.master_get("/dir/status").json()["Topology"]
        urls = []
        for dc in topo.get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for dn in rack.get("DataNodes") or []:
                    urls.append(dn["Url"])
        return urls

    def volume_status(self):
        """The volume server's /status (url found through the master's /dir/status)."""
        urls = self.data_node_urls()
        assert urls, "the master lists no volume server"
        r = requests.get("%s://%s/status" % (self.scheme, urls[0]), timeout=5, **self.http_kw)
        assert r.status_code == 200, r.text[:300]
        return r.json()

    def delete_totals(self):
        """(sum of DeleteCount, sum of DeletedByteCount, sum of FileCount) over volumes."""
        vols = self.volume_status().get("Volumes") or []
        return (sum(v.get("DeleteCount", 0) for v in vols),
                sum(v.get("DeletedByteCount", 0) for v in vols),
                sum(v.get("FileCount", 0) for v in vols))


class Mount(Daemon):
    """`kelp mount` of a Server at mnt, metadata in meta."""

    def __init__(self, kelp_bin, workdir, server, mnt, meta, args=(), name="mount", local=None):
        super().__init__(name, os.path.join(str(workdir), name + ".log"))
        self.kelp_bin = kelp_bin
        self.workdir = str(workdir)
        self.server = server
        self.mnt = str(mnt)
        self.meta = str(meta)
        # the mount's own directory on this host: the LMDB directory, or (PostgreSQL)
        # where its on-disk chunk cache goes (<local>/cache, as with LMDB)
        self.local = str(local or meta)
        self.args = list(args)
        self.ready = os.path.join(self.workdir, name + ".ready")

    @property
    def shared(self):
        return pgserver.is_url(self.meta)

    def command(self):
        extra = []
        if self.shared and not any(a.startswith("-cacheDir") for a in self.args):
            extra = ["-cacheDir=" + os.path.join(self.local, "cache")]
        # Tests count blobs and entries right after a removal: no trash unless asked
        # (test_trash.py; the default of a real mount is one day).
        if not any(a.startswith("-trashDays") for a in self.args):
            extra.append("-trashDays=0")
        return [self.kelp_bin, "mount", "-dir=" + self.mnt, "-master=" + self.server.master_addr,
                "-meta=" + self.meta, "-readyFile=" + self.ready] + extra + self.args

    def start(self, timeout=READY_TIMEOUT):
        try:
            os.unlink(self.ready)
        except FileNotFoundError:
            pass
        os.makedirs(self.mnt, exist_ok=True)
        self.spawn(self.command(), self.workdir)
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.ready):
                with open(self.ready) as f:
                    if f.read().strip() == "1" and is_mounted(self.mnt):
                        break
            if self.proc.poll() is not None:
                self.expect_running = False
                raise KelpError("kelp mount exited with %s before it was mounted:\n%s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise KelpError("kelp mount not ready after %.0f s:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(POLL)
        return self

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def unmount(self, timeout=15.0):
        """Clean unmount (fusermount3 -u); waits for the daemon to exit and returns its
        exit status (None if it had to be killed)."""
        self.expect_running = False
        if self.alive():
            r = subprocess.run(["fusermount3", "-u", self.mnt], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=20)
            if r.returncode != 0:
                # busy (an fd still open somewhere): fall back to a lazy unmount
                lazy_unmount(self.mnt)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                lazy_unmount(self.mnt)
                return None
        else:
            lazy_unmount(self.mnt)
        return self.proc.returncode if self.proc else None

    def crash(self):
        """kill -9 of the mount daemon, then a lazy unmount of the dead mount point."""
        self.kill9()
        lazy_unmount(self.mnt)
        wait_until("the dead mount to go away", lambda: not is_mounted(self.mnt), 10)

    def abort(self):
        self.kill9()
        lazy_unmount(self.mnt)

    def pid(self):
        return self.proc.pid


class Kelp:
    """One test's cluster and mounts."""

    def __init__(self, kelp_bin, tmp_path, mntroot, engine="lmdb", pg=None):
        self.kelp_bin = kelp_bin
        self.tmp = tmp_path
        self.mntroot = mntroot
        self.engine = engine
        self.pg = pg   # the PgServer with engine "pg"
        self.daemons = []
        self.mounts = []
        self.server = None
        self.locals = {}   # (metadata spec, mount point) -> the mount's local directory

    def new_meta(self):
        """A fresh, empty metadata of this test's engine (a path or a URL)."""
        n = len(self.mounts)
        if self.engine == "pg":
            return self.pg.new_database()
        return str(self.tmp / ("meta%d" % n))

    def start_server(self, master_port=0, volume_port=0, datadir=None, **server_kw):
        srv = Server(self.kelp_bin, self.tmp, datadir or (self.tmp / "data"),
                     master_port=master_port, volume_port=volume_port,
                     name="server%d" % len([d for d in self.daemons if isinstance(d, Server)]),
                     **server_kw)
        self.daemons.append(srv)
        srv.start()
        self.server = srv
        return srv

    def mount(self, args=(), mnt=None, meta=None, server=None, start=True):
        """A new mount (new mount point and metadata unless given)."""
        n = len(self.mounts)
        mnt = mnt or os.path.join(self.mntroot, "mnt%d" % n)
        meta = str(meta or self.new_meta())
        # a mount point's own local directory (its cache), kept across remounts
        local = self.locals.setdefault((meta, mnt), str(self.tmp / ("local%d" % n))
                                       if pgserver.is_url(meta) else meta)
        m = Mount(self.kelp_bin, self.tmp, server or self.server, mnt, meta, args=args,
                  name="mount%d" % n, local=local)
        self.mounts.append(m)
        self.daemons.append(m)
        if start:
            m.start()
        return m

    def remount(self, old, args=None):
        """Unmounts `old` (if still up) and mounts again on the same point and metadata."""
        if old.alive():
            old.unmount()
        return self.mount(args=old.args if args is None else args, mnt=old.mnt, meta=old.meta,
                          server=old.server)

    def abort_all(self):
        for m in self.mounts:
            m.abort()
        for d in self.daemons:
            d.kill9()

    def cleanup(self):
        problems = [c for c in (d.crashed() for d in self.daemons) if c]
        for m in self.mounts:
            lazy_unmount(m.mnt)
        for d in self.daemons:
            d.expect_running = False
            d.signal_group(signal.SIGKILL)
            if d.proc is not None:
                try:
                    d.proc.wait(10)
                except subprocess.TimeoutExpired:
                    problems.append("%s did not die after SIGKILL" % d.name)
        for d in self.daemons:
            rep = d.sanitizer_report()
            if rep:
                problems.append("sanitizer report in %s's log:\n%s" % (d.name, rep))
        return problems


# --------------------------------------------------------------------------------------
# fixtures


def pytest_configure(config):
    config.addinivalue_line("markers", "watchdog(seconds): the kelp fixture's watchdog limit")


@pytest.fixture(scope="session")
def kelp_bin():
    path = os.environ.get("KELP_BIN") or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        pytest.fail("no kelp binary at %s (build it or set KELP_BIN)" % path)
    if os.geteuid() != 0:
        pytest.skip("the FUSE tests run as root (mounts with allow_other, chown, setpriv)")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        need("fusermount3")
    return path


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL 15 server for the whole session (started at first use)."""
    if not pgserver.available():
        need("/usr/lib/postgresql/15/bin/initdb", "psql")
    with pgserver.PgServer() as pg:
        yield pg


@pytest.fixture(params=ENGINES)
def engine(request):
    """The metadata engine of the test's mounts: "lmdb" or "pg"."""
    return request.param


@pytest.fixture
def kelp(request, kelp_bin, tmp_path, engine):
    """A Kelp (no server started yet)."""
    pg = request.getfixturevalue("pg_server") if engine == "pg" else None
    mntroot = tempfile.mkdtemp(prefix="kelp-fuse-", dir="/tmp")
    os.chmod(mntroot, 0o755)
    k = Kelp(kelp_bin, tmp_path, mntroot, engine=engine, pg=pg)
    request.node._kelp = k
    timed_out = []

    def watchdog():
        timed_out.append(True)
        k.abort_all()

    mark = request.node.get_closest_marker("watchdog")
    limit = mark.args[0] if mark else TEST_TIMEOUT
    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    try:
        yield k
    finally:
        timer.cancel()
        problems = k.cleanup()
        for m in k.mounts:
            try:
                os.rmdir(m.mnt)
            except OSError:
                pass
        shutil.rmtree(mntroot, ignore_errors=True)
        if timed_out:
            problems.insert(0, "test ran past %d s: the watchdog aborted the mounts" %
                            limit)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def mnt(kelp):
    """A server and one default mount; returns the Mount."""
    kelp.start_server()
    return kelp.mount()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    note_outcome(item, rep)
    if rep.failed:
        k = getattr(item, "_kelp", None)
        for d in (k.daemons if k else []):
            rep.sections.append(("%s log (%s)" % (d.name, d.log_path), d.log_tail(120)))


# --------------------------------------------------------------------------------------
# helpers for the tests


def need(*tools):
    """The test needs these programs: a missing one skips the test on a developer's
    machine and fails it in CI (CI=true), where a skip would hide a missing install."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = "missing program(s): %s (scripts/install-deps)" % ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def run(cmd, check=True, timeout=120, **kw):
    """subprocess.run with captured output; a failure shows the command and output."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError("command %r exited %d\nstdout: %s\nstderr: %s" % (
            cmd, r.returncode, r.stdout.decode("utf-8", "replace")[-3000:],
            r.stderr.decode("utf-8", "replace")[-3000:]))
    return r


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(shell_cmd, timeout=30):
    """Runs a shell command as nobody; returns the CompletedProcess (not checked)."""
    return subprocess.run(NOBODY + ["/bin/sh", "-c", shell_cmd], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd="/")


def write_file(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def expect_errno(err, fn, *args, **kw):
    """Calls fn and asserts it raises OSError with errno err (a number or a tuple)."""
    errs = err if isinstance(err, tuple) else (err,)
    try:
        fn(*args, **kw)
    except OSError as e:
        assert e.errno in errs, "%s%r: expected %s, got %s (%s)" % (
            getattr(fn, "__name__", fn), args, "/".join(errno.errorcode[x] for x in errs),
            errno.errorcode.get(e.errno, e.errno), e)
        return e
    raise AssertionError("%s%r succeeded, expected %s" % (
        getattr(fn, "__name__", fn), args, "/".join(errno.errorcode[x] for x in errs)))


def tree_meta(root, dir_mtime=True, link_mtime=True):
    """{relative path: (type+mode, uid, gid, size or None for dirs, mtime_ns, nlink for
    non-dirs, symlink target)} of a tree (lstat, not following symlinks)."""
    out = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames:
            if name == "" and dirpath != root:
                continue
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            is_dir = os.path.isdir(p) and not os.path.islink(p)
            out[rel] = (
                st.st_mode, st.st_uid, st.st_gid,
                None if is_dir else st.st_size,
                (None if (is_dir and not dir_mtime) or (os.path.islink(p) and not link_mtime)
                 else st.st_mtime_ns),
                None if is_dir else st.st_nlink,
                os.readlink(p) if os.path.islink(p) else None,
            )
    return out


def compare_tree_meta(a, b, dir_mtime=True, link_mtime=True, limit=20):
    """Asserts two trees have the same entries and metadata (see tree_meta)."""
    ma, mb = tree_meta(a, dir_mtime, link_mtime), tree_meta(b, dir_mtime, link_mtime)
    only_a = sorted(set(ma) - set(mb))
    only_b = sorted(set(mb) - set(ma))
    assert not only_a and not only_b, "entries only in %s: %r; only in %s: %r" % (
        a, only_a[:limit], b, only_b[:limit])
    diffs = []
    names = ("mode", "uid", "gid", "size", "mtime_ns", "nlink", "target")
    for rel in sorted(ma):
        if rel == ".":
            continue
        for i, n in enumerate(names):
            if ma[rel][i] != mb[rel][i]:
                diffs.append("%s: %s %r != %r" % (rel, n, ma[rel][i], mb[rel][i]))
    assert not diffs, "%d metadata differences, first ones:\n%s" % (
        len(diffs), "\n".join(diffs[:limit]))
    return len(ma)
