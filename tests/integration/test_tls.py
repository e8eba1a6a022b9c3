"""TLS (issue 11): a cluster with -tls.cert/-tls.key/-tls.ca on every daemon speaks
HTTPS only and requires client certificates signed by the cluster's CA (mutual TLS).

Certificates are made here with the openssl command: a CA, one certificate for every
process (IP 127.0.0.1 in its subjectAltName, usable as server and client), one signed
by a foreign CA, and one that expired in 2020.
"""

import os
import subprocess

import pytest
import requests

import cluster as cluster_mod
import conftest
from cluster import fid_vid, make_cluster  # noqa: F401  (pytest fixture)
from conftest import assert_json, rand_bytes
from test_ha import make_ha  # noqa: F401  (pytest fixture)

EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
CA_CONF = """[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = policy_any
[ policy_any ]
commonName = supplied
"""


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def make_key_csr(d, name, cn):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "30",
            "-subj", "/CN=" + name, cwd=d)


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path / "pki")
    os.makedirs(d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(EXT)
    make_ca(d, "ca")
    make_ca(d, "foreign-ca")
    for name, ca in (("node", "ca"), ("foreign", "foreign-ca")):
        make_key_csr(d, name, name)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
                ca + ".key", "-CAcreateserial", "-out", name + ".pem", "-days", "30",
                "-extfile", "ext.cnf", cwd=d)
    # expired: `openssl ca` can set the dates
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write(CA_CONF.format(dir=d))
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    make_key_csr(d, "expired", "expired")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
            "-in", "expired.csr", "-out", "expired.pem", "-startdate", "20200101000000Z",
            "-enddate", "20200201000000Z", "-extfile", "ext.cnf", cwd=d)

    def path(name):
        return os.path.join(d, name)
    return path


@pytest.fixture
def https(monkeypatch, pki):
    """The test helpers speak HTTPS with the node certificate."""
    cert = (pki("node.pem"), pki("node.key"))
    ca = pki("ca.pem")

    def url(self, path=""):
        if not path.startswith("/"):
            path = "/" + path
        return "https://127.0.0.1:%d%s" % (self.port, path)
    monkeypatch.setattr(conftest.VolumeServer, "url", url)
    monkeypatch.setattr(cluster_mod.Cluster, "url",
                        lambda self, addr, path: "https://%s/%s" % (addr, path.lstrip("/")))
    orig = requests.Session.request

    def request(self, method, url, **kw):
        if url.startswith("https://"):
            kw.setdefault("cert", cert)
            kw.setdefault("verify", ca)
        return orig(self, method, url, **kw)
    monkeypatch.setattr(requests.Session, "request", request)
    return pki


def tls_args(pki):
    return ["-tls.cert=" + pki("node.pem"), "-tls.key=" + pki("node.key"),
            "-tls.ca=" + pki("ca.pem")]


def test_mutual_tls_cluster(make_cluster, https, tmp_path):
    pki = https
    t = tls_args(pki)
    c = make_cluster([("dc1", "r1"), ("dc1", "r2")], master_args=t, volume_args=t)
    m = c.master
    # heartbeats went through (make_cluster waited for both servers over HTTPS)
    assert set(m.data_nodes()) == {v.addr for v in c.volumes}

    # the tools: upload (assign, growth on both servers, replication 010), download
    src = tmp_path / "blob.bin"
    data = rand_bytes(300000, 5)
    src.write_bytes(data)
    out = subprocess.run([c.kelp_bin, "upload", "-master=" + m.addr, "-replication=010"] + t +
                         [str(src)], check=True, capture_output=True, timeout=60)
    fid = __import__("json").loads(out.stdout.decode().splitlines()[0])["fid"]
    holders = c.holders(fid_vid(fid))
    assert len(holders) == 2, "replicated to both servers over HTTPS"
    for h in holders:
        c.assert_readable(h.addr, fid, data)
    dl = tmp_path / "dl"
    dl.mkdir()
    subprocess.run([c.kelp_bin, "download", "-master=" + m.addr, "-dir=" + str(dl)] + t + [fid],
                   check=True, capture_output=True, timeout=60)
    assert [p.read_bytes() for p in dl.iterdir()] == [data]

    # a blob with one copy, read through the other server (proxied over HTTPS)
    body, r = m.dir_assign(replication="000")
    one = rand_bytes(20000, 6)
    c.put(body["url"], body["fid"], one)
    other = next(v for v in c.volumes if v.addr != body["url"])
    c.assert_readable(other.addr, body["fid"], one)

    # refused: no client certificate, a foreign one, an expired one (403 after the
    # handshake), plain HTTP (no answer), a client that does not trust the server
    addrs = [m.addr] + [v.addr for v in c.volumes]
    for addr in addrs:
        for why, cert in (("no certificate", None),
                          ("foreign CA", (pki("foreign.pem"), pki("foreign.key"))),
                          ("expired", (pki("expired.pem"), pki("expired.key")))):
            try:
                r = requests.get("https://%s/%s" % (addr, fid if addr != m.addr else
                                                    "dir/assign"),
                                 cert=cert, verify=pki("ca.pem"), timeout=10)
                assert r.status_code == 403, (addr, why, r.status_code, r.content[:200])
                assert r.content != data
            except requests.exceptions.SSLError:
                pass   # refused during the handshake: refused too
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get("http://%s/dir/status" % addr, timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get("https://%s/healthz" % addr, verify=pki("foreign-ca.pem"),
                         cert=(pki("node.pem"), pki("node.key")), timeout=5)
    # the tools without the flags cannot talk to the cluster
    r = subprocess.run([c.kelp_bin, "download", "-master=" + m.addr, "-dir=" + str(dl),
                        "-timeout=3", fid], capture_output=True, timeout=60)
    assert r.returncode != 0
    # a client certificate without the CA flag is a configuration error
    r = subprocess.run([c.kelp_bin, "status", "-master=" + m.addr,
                        "-tls.cert=" + pki("node.pem")], capture_output=True, timeout=30)
    assert r.returncode == 2 and b"tls" in r.stderr.lower()
    assert "no client certificate" in c.volumes[0].log_text() + m.log_text()
    assert_json(m.get("/dir/status"), 200)


def test_mutual_tls_failover(make_ha, https, tmp_path, monkeypatch):
    """Three masters and two volume servers with mutual TLS: the leader is killed, a
    new one is elected (Raft itself is not encrypted: docs/operations.md), and the tools
    go on writing and reading through HTTPS."""
    import json

    import ha_cluster

    pki = https
    cert = (pki("node.pem"), pki("node.key"))

    def http_get(addr, path, timeout=ha_cluster.STATUS_TIMEOUT, **kw):
        return requests.get("https://%s%s" % (addr, path), timeout=timeout,
                            allow_redirects=False, cert=cert, verify=pki("ca.pem"), **kw)
    monkeypatch.setattr(ha_cluster, "http_get", http_get)
    t = tls_args(pki)
    cl = make_ha(3, master_args=t)
    cl.start_masters()
    leader = cl.wait_leader(15)
    for i in range(2):
        cl.add_volume("dc1", "r%d" % (i + 1), cl.masters[0], max=8, args=t)
    cl.wait_nodes(leader)
    masters = ",".join(m.addr for m in cl.masters)

    def upload(data, name):
        src = tmp_path / name
        src.write_bytes(data)
        out = subprocess.run([cl.kelp_bin, "upload", "-master=" + masters,
                              "-replication=010", "-timeout=30"] + t + [str(src)],
                             check=True, capture_output=True, timeout=90)
        return json.loads(out.stdout.decode().splitlines()[0])["fid"]

    blobs = {upload(rand_bytes(5000, 1), "a"): rand_bytes(5000, 1)}
    leader.kill()
    new = cl.wait_leader(15, not_in=(leader,))
    assert new is not leader
    blobs[upload(rand_bytes(7000, 2), "b")] = rand_bytes(7000, 2)
    for fid, data in blobs.items():
        dl = tmp_path / ("dl-" + fid.replace(",", "_"))
        dl.mkdir()
        subprocess.run([cl.kelp_bin, "download", "-master=" + masters, "-dir=" + str(dl)] +
                       t + [fid], check=True, capture_output=True, timeout=60)
        assert [p.read_bytes() for p in dl.iterdir()] == [data]
