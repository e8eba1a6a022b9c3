/*
 * fsck: checks a filesystem's metadata, and the blobs it references in the cluster
 * (`kelp fsck`, daemons/fsck_main.c).
 *
 * One read transaction of the engine (a snapshot; mounts go on): every inode, name,
 * directory parent, chunk, blob reference count and gc entry is read once, in key
 * order. Then each blob the chunks reference is asked for in the cluster (one ranged
 * read of its last used byte: it exists and is at least as long as the file needs).
 * Each problem is reported through a callback with the paths it affects (paths are
 * rebuilt from the names of the snapshot), at the end, when it is known whether it was
 * repaired.
 *
 * Memory: about 60 bytes per inode plus its first name, and 80 per distinct blob
 * (1.07 million files: 236 MB RSS in all, docs/benchmarks.md), plus about 700 bytes per
 * problem found; a repair holds a second copy of the arrays while it runs.
 *
 * Checks: a name pointing to a missing inode; an inode no name reaches (and not an
 * orphan, an unlinked file still open); link counts (files: their names; directories:
 * 2 + subdirectories); a directory with several names, or whose `parents` row differs
 * from its name; directory cycles; a chunk of a missing inode, or of a non-file; xattrs and symlink
 * targets of missing inodes, symlinks without a target; a file's stored byte count
 * against its chunks; blob reference counts against the chunks; a gc entry for a blob
 * still referenced; a blob missing in the cluster or shorter than its chunks need.
 *
 * Leaks (with o->collection): every needle of the collection's volumes (the volume
 * servers' GET /admin/needles) that no chunk references and the gc queue does not
 * hold, written longer than o->grace_ns ago (younger ones may be uploads whose commit
 * is still to come), is a leaked blob: a crash between an upload and its commit. With
 * o->repair it is deleted. Only for a collection this filesystem alone writes to: a
 * blob of another filesystem or tool in it would look leaked.
 *
 * Repair (o->repair): after the check (and the blob reads, outside any transaction),
 * one read-write transaction reads every table again, checks them again, and fixes
 * what it found, all or nothing:
 *   - a name of a missing inode, or in a missing or non-directory inode: removed;
 *   - a directory's names after its first (in key order): removed;
 *   - a directory whose parents row differs from its name: the row is rewritten;
 *   - a chunk of a missing or non-file inode, an xattr or symlink target of a missing
 *     inode: removed;
 *   - a file's `stored` byte count (st_blocks): set to its chunks' lengths;
 *   - blob reference counts: set to the chunks using the blob (a count of a blob no
 *     chunk uses is removed and the blob queued for gc);
 *   - a gc entry of a blob still used: removed from the queue;
 *   - directories inside each other with no name from the root (a cycle): the name
 *     of one of them is removed, so it has none (next item);
 *   - an inode no name reaches (not an orphan): linked into /lost+found (created,
 *     root's, 0700, when missing) as "#<inode>" (or "#<inode>.N" when taken), as
 *     e2fsck does;
 *   - link counts: set to the real count (after the fixes above);
 *   - with o->drop_missing, every chunk whose blob the cluster does not have: removed
 *     (that range of the file reads as a hole; size unchanged), reported by path.
 * Not repaired: malformed rows, a root that is not a directory, a symlink without a
 * target, short or unreadable blobs. The transaction first reads the sessions table: when a mount
 * is live (a heartbeat younger than o->session_timeout_ns, and on this host its
 * process still running), nothing of the metadata is changed (each problem is
 * reported "not repaired": a mount trusts its caches and open files, so repairs wait
 * until every mount is stopped). The same transaction makes it correct against a mount
 * starting meanwhile (LMDB: one writer; PostgreSQL: SERIALIZABLE).
 */
#ifndef KELP_FSCK_H
#define KELP_FSCK_H

#include <stdbool.h>
#include <stdint.h>

#include "fuse/dump.h"

struct kv;
struct kelp_client;

/* What became of a problem. */
enum fsck_repair {
	FSCK_CHECKED,	   /* no repair was asked for */
	FSCK_REPAIRED,	   /* fixed */
	FSCK_NOT_REPAIRED, /* asked for, not done: see why */
};

/* A problem: kind (a short phrase), detail, a path ("" when none is known). */
struct fsck_problem {
	const char *kind, *detail, *path;
	enum fsck_repair repair;
	const char *why; /* FSCK_NOT_REPAIRED: why not */
};

typedef void (*fsck_report_fn)(void *ctx, const struct fsck_problem *p);

struct fsck_result {
	uint64_t inodes, dentries, chunks, blobs, blobs_checked;
	uint64_t problems; /* found (repaired or not) */
	uint64_t repaired; /* of those, fixed */
	uint64_t needles, leaks, leaks_deleted;
	int repair_error;     /* -errno: the repair failed (before its commit: nothing changed) */
	bool committed;	      /* the repair's transaction committed */
	bool mounted;	      /* repairs refused: a mount is live */
	char mounted_by[512]; /* which one (host, pid, mount point) */
};

struct fsck_options {
	const char *collection;	    /* search it for leaked blobs (NULL: no search) */
	int64_t grace_ns;	    /* needles younger than this are never leaks */
	bool repair;		    /* repair the metadata (see above) and delete leaked blobs */
	bool drop_missing;	    /* with repair: drop the chunks of blobs not in the cluster */
	int64_t session_timeout_ns; /* a session whose heartbeat is older is not live */
	int timeout_ms;		    /* the repair transaction retries conflicts this long */
	const char *jwt_key;	    /* the cluster's -jwtKey, to list needles (NULL: none) */
};

/*
 * Checks kv (and the blobs through c, unless c is NULL), and repairs with o->repair.
 * 0 when the check ran (see r->problems, r->repaired), -errno when it could not
 * (engine or memory errors; a repair that failed changed nothing).
 */
int fsck_run(struct kv *kv, struct kelp_client *c, const struct fsck_options *o,
	     fsck_report_fn report, void *ctx, dump_progress_fn progress, void *progress_ctx,
	     struct fsck_result *r);

#endif
