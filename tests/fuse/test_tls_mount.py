"""The mount over a mutual-TLS cluster (issue 11): `kelp server` and `kelp mount` with
-tls.cert/-tls.key/-tls.ca; files written, read back after a remount (chunk uploads,
reads, the health prober and lookups all over HTTPS)."""

import os
import subprocess

import pytest

from kelp_fuse_conftest import need, run

EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"


def openssl(d, *args):
    subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True,
                   timeout=60)


@pytest.fixture
def certs(tmp_path):
    need("openssl")
    d = str(tmp_path / "pki")
    os.makedirs(d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(EXT)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=kelp-test-ca")
    openssl(d, "req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node")
    openssl(d, "x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.pem", "-days", "30", "-extfile", "ext.cnf")
    return {n: os.path.join(d, n) for n in ("ca.pem", "node.pem", "node.key")}


def test_mount_over_mutual_tls(kelp, certs):
    tls = ["-tls.cert=" + certs["node.pem"], "-tls.key=" + certs["node.key"],
           "-tls.ca=" + certs["ca.pem"]]
    kelp.start_server(args=tls, scheme="https",
                      http_kw={"cert": (certs["node.pem"], certs["node.key"]),
                               "verify": certs["ca.pem"]})
    m = kelp.mount(args=tls)
    data = os.urandom((9 << 20) + 12345)     # three chunks of the default 4 MiB
    with open(m.path("big.bin"), "wb") as f:
        f.write(data)
    os.makedirs(m.path("dir/sub"))
    with open(m.path("dir/sub/small.txt"), "w") as f:
        f.write("over https\n")
    assert m.unmount() == 0
    m2 = kelp.remount(m)
    with open(m2.path("big.bin"), "rb") as f:
        assert f.read() == data
    with open(m2.path("dir/sub/small.txt")) as f:
        assert f.read() == "over https\n"
    run(["cp", "-a", m2.path("dir"), m2.path("dir2")], timeout=60)
    # the data went to the volume server over HTTPS: it holds the blobs
    vols = kelp.server.volume_status().get("Volumes") or []
    assert sum(v.get("FileCount", 0) for v in vols) >= 4
