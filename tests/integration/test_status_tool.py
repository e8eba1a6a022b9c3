"""`kelp status` (issue 15): servers alive or dead with volumes, used and free space;
collections with files, sizes and garbage; under-replicated volumes; and -json."""

import json
import subprocess

from cluster import PULSE, make_cluster, wait_for  # noqa: F401  (pytest fixture)


def status(c, *args):
    r = subprocess.run([c.kelp_bin, "status", "-master=" + c.master.addr] + list(args),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_status_shows_space_files_and_under_replicated_volumes(make_cluster):
    c = make_cluster([("dc1", "r1"), ("dc1", "r1")])
    m = c.master
    n = 6
    fids = []
    for i in range(n):
        body, _ = m.dir_assign(replication="001", collection="pics")
        c.put(body["url"], body["fid"], b"p" * 2000)
        fids.append(body)
    c.http("DELETE", fids[0]["url"], "/" + fids[0]["fid"])

    def counted():
        j = json.loads(status(c, "-json"))
        coll = j["collections"].get("pics")
        return j if coll and coll["files"] == n and coll["deletedBytes"] > 0 else None
    j = wait_for("the heartbeats to report %d files and a deletion" % n, counted,
                 5 * PULSE + 5)
    assert j["leader"] == m.addr
    assert j["underReplicated"] == []
    assert {s["url"] for s in j["servers"]} == {v.addr for v in c.volumes}
    assert all(s["alive"] and s["diskTotal"] > 0 and 0 < s["diskFree"] <= s["diskTotal"]
               for s in j["servers"])
    assert j["collections"]["pics"]["bytes"] >= n * 2000
    text = status(c)
    assert "Every volume has all its copies." in text
    assert "pics" in text and "GARBAGE" in text and "DISK FREE" in text

    victim = c.volumes[1]
    held = sorted(victim.volumes())
    victim.kill()

    def under():
        j = json.loads(status(c, "-json"))
        return j if sorted(v["id"] for v in j["underReplicated"]) == held else None
    j = wait_for("the killed server's volumes under-replicated", under, 5 * PULSE + 5)
    dead = [s for s in j["servers"] if not s["alive"]]
    assert [s["url"] for s in dead] == [victim.addr] and "diskFree" not in dead[0]
    assert all(v["live"] == 1 and v["wanted"] == 2 for v in j["underReplicated"])
    text = status(c)
    assert "Under-replicated volumes: %d" % len(held) in text
    assert "DEAD" in text and victim.addr + " (dead)" in text
