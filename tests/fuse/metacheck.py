"""Consistency check of a kelp filesystem's metadata in PostgreSQL (tests only): reads the
kelp_kv table (fuse/kv_pg.c: key = table byte + key) and checks the filesystem rules of
fuse/meta.c across everything every mount did:

- every entry names an inode that exists; every inode but the root is reachable from
  the root, or has no links left and is recorded as an orphan (still in use somewhere);
- a file's st_nlink is the number of entries naming it; a directory's is 2 + its
  subdirectories, and a directory has exactly one entry naming it;
- every directory's recorded parent is the directory holding its entry (no cycles: the
  parents lead to the root);
- every chunk belongs to an inode, chunks of a file do not overlap, and each blob's
  reference count is the number of chunks using it.

Returns a list of problems (empty when consistent) and a summary dict.
"""

import struct
import subprocess

(INODES, SYMLINKS, DENTRIES, CHUNKS, FIDREFS, XATTRS, GC, COUNTERS, ORPHANS, PARENTS, SESSIONS,
 HOLDS, LOCKS) = range(13)
ROOT = 1
ATTR = struct.Struct("<QQIIIIIIqqqq")   # struct meta_attr (fuse/meta.h), little-endian,
STORED = struct.Struct("<Q")             # then `stored` (records written before it: none)


def read_kv(url):
    """{table: [(key bytes, value bytes)]} in key order."""
    r = subprocess.run(["psql", url, "-XAtq", "-c",
                        "COPY (SELECT encode(k, 'hex'), encode(v, 'hex') FROM kelp_kv "
                        "ORDER BY k) TO STDOUT"],
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("psql: %s" % r.stderr.decode())
    tables = {}
    for line in r.stdout.decode().splitlines():
        k, v = line.split("\t")
        k, v = bytes.fromhex(k), bytes.fromhex(v)
        tables.setdefault(k[0], []).append((k[1:], v))
    return tables


def be64(b):
    return int.from_bytes(b[:8], "big")


def check(url):
    t = read_kv(url)
    problems = []
    inodes = {}
    for k, v in t.get(INODES, []):
        if len(v) not in (ATTR.size, ATTR.size + STORED.size):
            problems.append("inode %d: a record of %d bytes" % (be64(k), len(v)))
            continue
        a = ATTR.unpack(v[:ATTR.size])
        inodes[be64(k)] = {"ino": a[0], "size": a[1], "mode": a[2], "nlink": a[3],
                           "stored": STORED.unpack(v[ATTR.size:])[0]
                           if len(v) > ATTR.size else None}
    entries = {}   # parent -> {name: ino}
    names_of = {}  # ino -> [(parent, name)]
    for k, v in t.get(DENTRIES, []):
        parent, name, ino = be64(k), k[8:].decode("utf-8", "replace"), be64(v)
        entries.setdefault(parent, {})[name] = ino
        names_of.setdefault(ino, []).append((parent, name))
        if ino not in inodes:
            problems.append("entry %d/%s names missing inode %d" % (parent, name, ino))
        if parent not in inodes:
            problems.append("entry %d/%s is in a missing directory" % (parent, name))
        elif not inodes[parent]["mode"] & 0o040000:
            problems.append("entry %d/%s is in a non-directory" % (parent, name))
    orphans = {be64(k) for k, _ in t.get(ORPHANS, [])}
    parents = {be64(k): be64(v) for k, v in t.get(PARENTS, [])}
    isdir = lambda ino: (inodes[ino]["mode"] & 0o170000) == 0o040000

    # reachability from the root
    seen, todo = {ROOT}, [ROOT]
    while todo:
        d = todo.pop()
        for ino in entries.get(d, {}).values():
            if ino in inodes and ino not in seen:
                seen.add(ino)
                if isdir(ino):
                    todo.append(ino)
    for ino, a in inodes.items():
        if ino in seen:
            continue
        if a["nlink"] != 0 or ino not in orphans:
            problems.append("inode %d (nlink %d, mode %o) is unreachable and not an orphan"
                            % (ino, a["nlink"], a["mode"]))

    # link counts and parents
    for ino, a in inodes.items():
        if ino not in seen:
            continue
        refs = names_of.get(ino, [])
        if isdir(ino):
            subdirs = sum(1 for c in entries.get(ino, {}).values() if c in inodes and isdir(c))
            if a["nlink"] != 2 + subdirs:
                problems.append("directory %d has nlink %d, expected %d" % (
                    ino, a["nlink"], 2 + subdirs))
            if ino != ROOT:
                if len(refs) != 1:
                    problems.append("directory %d has %d entries" % (ino, len(refs)))
                elif parents.get(ino) != refs[0][0]:
                    problems.append("directory %d: parent %s recorded, entry in %d" % (
                        ino, parents.get(ino), refs[0][0]))
                # the parents lead to the root
                p, depth = ino, 0
                while p != ROOT and depth < 10000:
                    p, depth = parents.get(p, ROOT), depth + 1
                if depth >= 10000:
                    problems.append("directory %d: a cycle of parents" % ino)
        elif a["nlink"] != len(refs):
            problems.append("inode %d has nlink %d and %d entries" % (ino, a["nlink"], len(refs)))

    # chunks and blob references
    refcount = {}
    last_end = {}
    data = {}      # ino -> bytes in its intervals (== its `stored`)
    for k, v in t.get(CHUNKS, []):
        ino, off = be64(k), be64(k[8:])
        length, fid = be64(v), v[16:].decode()
        if ino not in inodes:
            problems.append("chunk of missing inode %d" % ino)
        if off < last_end.get(ino, 0):
            problems.append("overlapping chunks in inode %d at %d" % (ino, off))
        last_end[ino] = off + length
        data[ino] = data.get(ino, 0) + length
        refcount[fid] = refcount.get(fid, 0) + 1
    for ino, a in inodes.items():
        if a["stored"] is not None and a["stored"] != data.get(ino, 0):
            problems.append("inode %d: stored %d, its intervals hold %d" % (
                ino, a["stored"], data.get(ino, 0)))
    stored = {k.decode(): struct.unpack("<I", v)[0] for k, v in t.get(FIDREFS, [])}
    if stored != refcount:
        bad = sorted(set(stored.items()) ^ set(refcount.items()))[:10]
        problems.append("blob reference counts differ from the chunks: %r" % bad)

    summary = {"inodes": len(inodes), "entries": sum(len(e) for e in entries.values()),
               "orphans": len(orphans), "chunks": len(t.get(CHUNKS, []))}
    return problems, summary
