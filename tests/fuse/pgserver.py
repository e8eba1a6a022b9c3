"""A throwaway PostgreSQL 15 server for the tests (Debian's binaries in
/usr/lib/postgresql/15/bin): initdb into a fresh directory under /tmp owned by
`nobody` (PostgreSQL refuses to run as root), run as nobody through setpriv, listening
on 127.0.0.1 and a free port (no unix socket outside its directory), trust
authentication for the user `kelp`. Stopped (fast shutdown, then SIGKILL) and removed
whatever happens: use it as a context manager.

fsync is off: tests never cut the power, and it keeps the suite's time down (the
benchmarks in docs/benchmarks.md use the defaults).

Also a command-line tool for development:
    python3 tests/fuse/pgserver.py [--durable]   # prints the URL, serves until Ctrl-C
                                                 # or SIGTERM
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_url(spec):
    return str(spec).startswith(("postgres://", "postgresql://"))


def available():
    return os.path.exists(os.path.join(PG_BIN, "initdb")) and shutil.which("psql") is not None


class PgServer:
    def __init__(self, port=0, durable=False):
        self.port = port
        # durable: PostgreSQL's defaults (fsync on) instead of fsync=off
        self.settings = [] if durable else ["-c", "fsync=off"]
        self.dir = None
        self.proc = None
        self.n_db = 0

    @property
    def admin_url(self):
        return "postgresql://kelp@127.0.0.1:%d/postgres" % self.port

    def url(self, db):
        return "postgres://kelp@127.0.0.1:%d/%s" % (self.port, db)

    def start(self, timeout=60):
        self.dir = tempfile.mkdtemp(prefix="kelp-pg-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        data = os.path.join(self.dir, "data")
        os.mkdir(data, 0o700)
        os.chown(self.dir, 65534, 65534)
        os.chown(data, 65534, 65534)
        r = subprocess.run(NOBODY + [os.path.join(PG_BIN, "initdb"), "-D", data, "-U", "kelp",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"],
                           capture_output=True, timeout=timeout, cwd="/",
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("initdb failed: %s" % r.stderr.decode()[-2000:])
        if not self.port:
            self.port = _free_port()
        self.log = os.path.join(self.dir, "postgres.log")
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            NOBODY + [os.path.join(PG_BIN, "postgres"), "-D", data, "-h", "127.0.0.1",
                      "-p", str(self.port), "-k", self.dir] + self.settings +
            ["-c", "max_connections=400", "-c", "shared_buffers=64MB"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd="/",
            start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run(["psql", self.admin_url, "-XAtqc", "SELECT 1"],
                               capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n%s" % self.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError("postgres not ready after %d s:\n%s" % (timeout,
                                                                           self.log_tail()))
            time.sleep(0.1)

    def log_tail(self, n=40):
        try:
            with open(self.log, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def sql(self, query, db="postgres", check=True):
        r = subprocess.run(["psql", "postgresql://kelp@127.0.0.1:%d/%s" % (self.port, db),
                            "-XAtqc", query], capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError("psql %r: %s" % (query, r.stderr.decode()))
        return r.stdout.decode()

    def new_database(self, prefix="kelp"):
        """A fresh empty database; returns its kelp URL."""
        self.n_db += 1
        name = "%s_%d_%d" % (prefix, os.getpid(), self.n_db)
        self.sql("CREATE DATABASE %s" % name)
        return self.url(name)

    def stop_server(self, sig=signal.SIGINT, timeout=30):
        """Stops postgres (fast shutdown by default) but keeps its data (restartable)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.proc = None

    def restart(self, timeout=60):
        self.stop_server()
        data = os.path.join(self.dir, "data")
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            NOBODY + [os.path.join(PG_BIN, "postgres"), "-D", data, "-h", "127.0.0.1",
                      "-p", str(self.port), "-k", self.dir] + self.settings +
            ["-c", "max_connections=400", "-c", "shared_buffers=64MB"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd="/",
            start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while subprocess.run(["psql", self.admin_url, "-XAtqc", "SELECT 1"],
                             capture_output=True, timeout=10,
                             stdin=subprocess.DEVNULL).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("postgres not back after %d s" % timeout)
            time.sleep(0.1)

    def stop(self):
        try:
            self.stop_server()
        finally:
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM too (a background job ignores SIGINT): the server is stopped and removed
    signal.signal(signal.SIGTERM, _interrupt)
    with PgServer(durable="--durable" in sys.argv) as pg:
        print(pg.admin_url, flush=True)
        try:
            while pg.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    sys.exit(0)
