"""gc across mounts (-gcGraceSec, docs/architecture.md "gc across mounts"), by fault
injection with real processes and no test knob in the mount.

The promise: a reader on mount B that resolved a blob from the file's chunk map just
before mount A's overwrite committed may fetch it after A's gc took it from the queue;
gc deletes a queued blob only once it has been queued for -gcGraceSec, so that read
still gets its bytes (the old ones: it began before the overwrite). With -gcGraceSec=0
the same read finds the blob deleted ("reading chunk ... failed: ... not found" in B's
log, EIO for that READ; the kernel then reads again, resolving the new chunk map, so the
process sees EIO or the new bytes).

The stall between "resolved" and "fetched": B talks to the master through a proxy run
by the test, which holds back B's volume lookups (`/dir/lookup`) on request. B's read
resolves the chunk map, then asks where the blob's volume is (B never read anything
before: its location cache is empty) and waits there; the proxy seeing that request is
the sign that B holds the old chunk map. A then overwrites the file, the gc threads run,
and the proxy lets the lookup go.
"""

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from kelp_fuse_conftest import wait_until, write_file


@pytest.fixture(params=["pg"])
def engine(request):
    return request.param


class StallingProxy:
    """A TCP proxy to the master that holds back /dir/lookup requests while `stall` is
    set (until `release` is), recording in `seen` that one arrived."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stall, self.release, self.seen = (threading.Event(), threading.Event(),
                                               threading.Event())
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.release.set()
        for c in [self.sock] + self.conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, conn):
        try:
            up = socket.create_connection(self.target, timeout=30)
            up.settimeout(None)
        except OSError:
            conn.close()
            return
        self.conns.append(up)
        threading.Thread(target=self._pipe, args=(up, conn), daemon=True).start()
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                length = 0
                for h in lines[1:]:
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    rest += data
                body, buf = rest[:length], rest[length:]
                path = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 1 else b""
                if path.startswith(b"/dir/lookup") and self.stall.is_set():
                    self.seen.set()
                    self.release.wait(120)
                up.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            try:
                up.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class Proxied:
    """What a Mount needs of its server: the master's address (here the proxy's)."""

    def __init__(self, master_addr):
        self.master_addr = master_addr


def _live(srv):
    dc, _, fc = srv.delete_totals()
    return fc - dc


READER = r"""
import hashlib, sys
try:
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    print("ok", len(data), hashlib.sha256(data).hexdigest(), flush=True)
except OSError as e:
    print("error", e.errno, flush=True)
"""


@pytest.mark.watchdog(240)
@pytest.mark.parametrize("grace", [15, 0])
def test_reader_on_other_mount_keeps_blob_for_the_grace(kelp, grace):
    srv = kelp.start_server()
    meta = kelp.new_meta()
    args = ["-gcGraceSec=%d" % grace]
    a = kelp.mount(args, meta=meta)
    proxy = StallingProxy(srv.master_addr)
    try:
        b = kelp.mount(args, meta=meta, server=Proxied(proxy.addr))
        old, new = os.urandom(300000), os.urandom(300000)
        write_file(a.path("f"), old)
        live0 = _live(srv)
        proxy.stall.set()
        reader = subprocess.Popen([sys.executable, "-c", READER, b.path("f")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proxy.seen.wait(30), "B's read never asked where the blob is"
            # B holds the old chunk map; A overwrites (the old blob goes to the queue)
            write_file(a.path("f"), new)
            t_over = time.monotonic()
            if grace:
                # both gc threads pass (every second): the entry is too young for them
                time.sleep(3)
                assert _live(srv) == live0 + 1, "the old blob went before the grace"
            else:
                wait_until("A's gc to delete the old blob", lambda: _live(srv) == live0, 20,
                           interval=0.1)
            proxy.release.set()
            out, err = reader.communicate(timeout=60)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        answer = out.decode().split()
        if grace:
            assert answer == ["ok", str(len(old)), hashlib.sha256(old).hexdigest()], (
                answer, err.decode())
            assert "reading chunk" not in b.log_text()
            # and the blob goes once the grace has passed
            wait_until("the old blob to be deleted after the grace",
                       lambda: _live(srv) == live0, grace + 20, interval=0.2)
            assert time.monotonic() - t_over >= grace - 1
        else:
            # B's read met the deleted blob (404). The kernel's readahead READ failed
            # with EIO; the kernel then reads the page again by itself, and that READ
            # resolves the current chunk map: the process gets EIO or the new bytes,
            # never the old ones.
            assert "reading chunk" in b.log_text() and "not found" in b.log_text()
            assert answer[:2] == ["error", "5"] or answer == [
                "ok", str(len(new)), hashlib.sha256(new).hexdigest()], (answer, err.decode())
        # a read started now resolves the current chunk map, on either mount
        with open(b.path("f"), "rb") as f:
            assert f.read() == new
    finally:
        proxy.close()
