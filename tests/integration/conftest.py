"""Shared fixtures and helpers for the kelp integration tests.

The tests start real `kelp volume` processes on 127.0.0.1 with -port=0 and talk HTTP to
them. The binary comes from $KELP_BIN (default /work/main/build/daemons/kelp).

Every server runs in its own process group and is killed by a finalizer whatever
happens; its stderr goes to a file in the test's tmp_path and is attached to the report
of a failing test. A server that dies on its own during a test (crash) fails the test
at teardown even if the test body did not notice.
"""

import base64
import email.utils
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest
import requests

from dropdata import _drop_data_of_passed_tests, note_outcome  # noqa: F401

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# /work/main/build/daemons/kelp when the repo is /work/main
DEFAULT_BIN = os.path.join(REPO_ROOT, "build", "daemons", "kelp")


def _compat_dir():
    """The volumes written by SeaweedFS: tests/data/seaweedfs of this repository (they are
    Apache-2.0, see its NOTICE), or $KELP_COMPAT_DIR."""
    return os.environ.get("KELP_COMPAT_DIR") or os.path.join(REPO_ROOT, "tests", "data",
                                                             "seaweedfs")


COMPAT_DIR = _compat_dir()

READY_POLL = 0.02        # seconds between looks at the ready file
READY_TIMEOUT = 10.0     # seconds until a server must be serving
STOP_TIMEOUT = 10.0      # seconds a SIGTERM'ed server gets to exit
HTTP_TIMEOUT = 10.0      # default timeout of every HTTP request
TEST_TIMEOUT = 120       # hard limit per test (SIGALRM), a safety net only
MiB = 1 << 20


# --------------------------------------------------------------------------------------
# small pure helpers


def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of data; pure Python, fine for a few MB."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def etag_of(data):
    """The ETag SeaweedFS gives stored bytes: CRC-32C as 8 lowercase hex digits."""
    return "%08x" % crc32c(data)


def make_fid(vid, key, cookie, delta=None):
    """A file id built as the reference (section 3) says: key as 8 BE bytes with whole
    leading zero bytes dropped, then the cookie as 4 BE bytes, lowercase hex."""
    assert key > 0, "key 0 cannot be written as a file id"
    kb = struct.pack(">Q", key).lstrip(b"\0")
    s = "%d,%s%s" % (vid, kb.hex(), struct.pack(">I", cookie).hex())
    if delta is not None:
        s += "_%d" % delta
    return s


def key_cookie(fid):
    """The "<key><cookie>" part of a fid."""
    return fid.split(",", 1)[1]


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def assert_json_error(r, status):
    """An error reply: the given status, Content-Type application/json and a JSON object
    with a non-empty string "error"."""
    assert r.status_code == status, "expected %d, got %d: %r" % (
        status, r.status_code, r.content[:300])
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("application/json"), "error reply Content-Type %r, body %r" % (
        ct, r.content[:300])
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], \
        "error reply body %r" % (body,)
    return body


def assert_read_error(r, status):
    """An error reply to a GET. The contract (docs/http-api.md) makes every error reply a
    JSON object, GET included; SeaweedFS itself answers GET errors (400 bad fid, 404
    missing/deleted/wrong cookie) with an empty body. This is the one place to change
    if the contract is changed to SeaweedFS's behaviour."""
    return assert_json_error(r, status)


def assert_json(r, status):
    assert r.status_code == status, "expected %d, got %d: %r" % (
        status, r.status_code, r.content[:300])
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("application/json"), "Content-Type %r" % ct
    return r.json()


def raw_request(port, data, timeout=3.0, shutdown_write=False, read=True):
    """Sends raw bytes on a fresh connection and returns whatever comes back until EOF
    or `timeout` seconds (b"" when nothing). Never raises on connection errors."""
    out = b""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            try:
                s.sendall(data)
                if shutdown_write:
                    s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if not read:
                return b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, OSError):
                    break
                if not chunk:
                    break
                out += chunk
    except OSError:
        pass
    return out


def raw_status(resp):
    """Status code of a raw HTTP response (None when there is none)."""
    if not resp.startswith(b"HTTP/1."):
        return None
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


class StreamBody:
    """A file-like body of `size` deterministic pseudo-random bytes, generated on the
    fly (1 MiB blocks) and hashed as it is read."""

    BLOCK = MiB

    def __init__(self, size, seed, on_progress=None):
        self.size = size
        self.seed = seed
        self.pos = 0
        self.sha = hashlib.sha256()
        self.cur = b""
        self.cur_off = 0
        self.block = 0
        self.on_progress = on_progress

    @classmethod
    def block_bytes(cls, seed, i):
        return random.Random(seed * 100003 + i).randbytes(cls.BLOCK)

    @classmethod
    def slice(cls, seed, start, end):
        out = b""
        for i in range(start // cls.BLOCK, (end - 1) // cls.BLOCK + 1):
            out += cls.block_bytes(seed, i)
        base = (start // cls.BLOCK) * cls.BLOCK
        return out[start - base:end - base]

    def __len__(self):
        return self.size

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        parts = []
        while n > 0:
            if self.cur_off == len(self.cur):
                self.cur = self.block_bytes(self.seed, self.block)
                self.cur_off = 0
                self.block += 1
            take = min(n, len(self.cur) - self.cur_off)
            parts.append(self.cur[self.cur_off:self.cur_off + take])
            self.cur_off += take
            n -= take
        out = b"".join(parts)
        self.pos += len(out)
        self.sha.update(out)
        if self.on_progress:
            self.on_progress(self.pos)
        return out


# --------------------------------------------------------------------------------------
# the server helper


class ServerError(Exception):
    pass


class NoReply(requests.ConnectionError):
    """The server closed the connection without sending any HTTP reply."""


class VolumeServer:
    """One `kelp volume` process (restartable on the same data dirs).

    dirs: list of data directories; max: list (or int) of max volume counts;
    args: extra command-line arguments. ip: the address it binds and advertises;
    prefix: a command prefix that starts it elsewhere (netns.NetNS.prefix()).
    """

    ip = "127.0.0.1"
    prefix = ()

    def __init__(self, kelp_bin, workdir, dirs, max=8, args=(), name="vs"):
        self.kelp_bin = kelp_bin
        self.workdir = str(workdir)
        self.dirs = [str(d) for d in dirs]
        self.max = max
        self.args = list(args)
        self.name = name
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.workdir, "%s.stderr.log" % name)
        self.ready_path = os.path.join(self.workdir, "%s.ready" % name)
        self.running_expected = False
        self.session = None
        self.starts = 0

    # --- process control

    def command(self):
        if isinstance(self.max, (list, tuple)):
            max_s = ",".join(str(m) for m in self.max)
        else:
            max_s = str(self.max)
        return [self.kelp_bin, "volume", "-port=0", "-readyFile=" + self.ready_path,
                "-dir=" + ",".join(self.dirs), "-max=" + max_s, "-ip=" + self.ip] + self.args

    def start(self, timeout=READY_TIMEOUT, cmd=None):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        try:
            os.unlink(self.ready_path)
        except FileNotFoundError:
            pass
        self.starts += 1
        cmd = list(self.prefix) + (cmd or self.command())
        with open(self.log_path, "ab") as log:
            log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(cmd))).encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd=self.workdir,
                                         start_new_session=True)
        self.running_expected = True
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.ready_path):
                with open(self.ready_path) as f:
                    text = f.read()
                try:
                    self.port = int(text.strip())
                except ValueError:
                    raise ServerError("ready file holds %r, not a port" % text)
                if not text.endswith("\n"):
                    raise ServerError("ready file %r does not end with a newline" % text)
                break
            rc = self.proc.poll()
            if rc is not None:
                self.running_expected = False
                raise ServerError("kelp volume exited with %s before it was ready:\n%s" % (
                    rc, self.log_tail()))
            if time.monotonic() > deadline:
                raise ServerError("kelp volume not ready after %.0f s:\n%s" % (
                    timeout, self.log_tail()))
            time.sleep(READY_POLL)
        self.session = requests.Session()
        # Tests decide themselves when to ask for gzip.
        del self.session.headers["Accept-Encoding"]
        return self

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait; returns the exit status. Raises if it does not exit in time
        (the group is SIGKILLed first)."""
        if self.proc is None:
            return None
        self.running_expected = False
        self._close_session()
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
                raise ServerError("kelp volume ignored SIGTERM for %.0f s" % timeout)
        self._signal_group(signal.SIGKILL)  # stray children, if any
        return self.proc.returncode

    def kill(self):
        """kill -9 the whole process group."""
        if self.proc is None:
            return None
        self.running_expected = False
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._close_session()
        return self.proc.returncode

    def restart(self):
        self.stop()
        return self.start()

    def _close_session(self):
        if self.session is not None:
            self.session.close()
            self.session = None

    def cleanup(self):
        """Finalizer: kill the group whatever state it is in. Returns a description of
        an unexpected exit (crash), else None."""
        if self.proc is None:
            return None
        crashed = None
        if self.running_expected and self.proc.poll() is not None:
            crashed = "kelp volume (%s) exited on its own with status %s" % (
                self.name, self.proc.returncode)
        self.running_expected = False
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._close_session()
        return crashed

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                       "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")

    def sanitizer_report(self):
        """The first sanitizer error (memory error, undefined behaviour, data race) in
        the log, or None. Leak reports at exit are not included: they show as a
        non-zero exit status where a test checks it."""
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in self.SANITIZER_MARKS):
                return "\n".join(lines[i:i + 40])
        return None

    def log_tail(self, lines=200):
        return "\n".join(self.log_text().splitlines()[-lines:])

    # --- HTTP

    def url(self, path=""):
        if not path.startswith("/"):
            path = "/" + path
        return "http://%s:%d%s" % (self.ip, self.port, path)

    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("allow_redirects", False)
        try:
            return self.session.request(method, self.url(path), **kw)
        except requests.ConnectionError as e:
            if "RemoteDisconnected" in repr(e) or "ConnectionResetError" in repr(e):
                raise NoReply("server closed the connection without a reply to %s %s "
                              "(process alive: %s): %r" % (method, path, self.alive(), e)) from None
            raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # --- API shortcuts

    def admin(self, action, method="GET", **params):
        return self.request(method, "/admin/" + action, params=params)

    def assign(self, vid, **params):
        params.setdefault("collection", "")
        params.setdefault("replication", "000")
        params.setdefault("ttl", "")
        r = self.admin("assign_volume", volume=str(vid), **params)
        body = assert_json(r, 200)
        assert body.get("volume") == vid, body
        return body

    def upload(self, fid, data, params=None, headers=None, expect=201):
        """Raw PUT; asserts the status and returns the response."""
        r = self.put("/" + fid, data=data, params=params, headers=headers)
        assert r.status_code == expect, "PUT /%s: expected %d, got %d: %r" % (
            fid, expect, r.status_code, r.content[:300])
        return r

    def status(self):
        return assert_json(self.get("/status"), 200)

    def volume_status(self, vid):
        for v in self.status().get("Volumes") or []:
            if v.get("Id") == vid:
                return v
        return None

    def healthy(self):
        """/healthz answers 200 (on a new connection)."""
        try:
            r = requests.get(self.url("/healthz"), timeout=5)
        except requests.RequestException as e:
            return "healthz failed: %r (process alive: %s)" % (e, self.alive())
        if r.status_code != 200:
            return "healthz answered %d" % r.status_code
        return None

    def assert_healthy(self):
        err = self.healthy()
        assert err is None, err


# --------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def kelp_bin():
    path = os.environ.get("KELP_BIN")
    if path:
        if not os.access(path, os.X_OK):
            pytest.fail("KELP_BIN=%s is not an executable file" % path)
        return path
    if not os.access(DEFAULT_BIN, os.X_OK):
        pytest.skip("no kelp binary at %s (build it or set KELP_BIN)" % DEFAULT_BIN)
    return DEFAULT_BIN


@pytest.fixture(scope="session")
def compat_dir():
    # The files are part of the repository: missing ones are an error, not a reason to skip.
    if not os.path.isfile(os.path.join(COMPAT_DIR, "healthy_volume.dat")):
        pytest.fail("no SeaweedFS compat files at %s (tests/data/seaweedfs of the repository, "
                    "or $KELP_COMPAT_DIR)" % COMPAT_DIR, pytrace=False)
    return COMPAT_DIR


@pytest.fixture
def make_server(request, kelp_bin, tmp_path):
    """Factory: make_server(ndirs=1, max=8, args=(), start=True, dirs=None, name=None).
    Data dirs are fresh directories under tmp_path."""
    servers = []
    request.node._kelp_servers = servers

    def factory(ndirs=1, max=8, args=(), start=True, dirs=None, name=None):
        name = name or "vs%d" % len(servers)
        if dirs is None:
            dirs = [tmp_path / ("%s-data%d" % (name, i)) for i in range(ndirs)]
        srv = VolumeServer(kelp_bin, tmp_path, dirs, max=max, args=args, name=name)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield factory

    problems = [c for c in (s.cleanup() for s in servers) if c]
    for s in servers:
        report = s.sanitizer_report()
        if report:
            problems.append("sanitizer report in %s's stderr:\n%s" % (s.name, report))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(make_server):
    """A running server with one empty data dir (max 8 volumes) and volume 1 assigned."""
    srv = make_server()
    srv.assign(1)
    return srv


@pytest.fixture(autouse=True)
def _hard_timeout():
    """Safety net: no test may run longer than TEST_TIMEOUT seconds."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded %d s" % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    note_outcome(item, rep)
    if rep.failed:
        for srv in getattr(item, "_kelp_servers", []):
            rep.sections.append(("kelp %s stderr (%s)" % (srv.name, srv.log_path),
                                 srv.log_tail(300)))


# Make helpers importable as `from conftest import ...` is awkward with pytest's
# rootdir handling; tests import them from this module via `import conftest`.
__all__ = ["MiB", "StreamBody", "crc32c", "etag_of", "make_fid", "key_cookie", "http_date",
           "md5_b64", "rand_bytes", "assert_json_error", "assert_read_error", "assert_json",
           "raw_request", "raw_status", "VolumeServer", "ServerError", "NoReply", "COMPAT_DIR"]
