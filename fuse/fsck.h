/*
 * fsck: checks a filesystem's metadata, and the blobs it references in the cluster
 * (`kelp fsck`, daemons/fsck_main.c).
 *
 * One read transaction of the engine (a snapshot; mounts go on): every inode, name,
 * directory parent, chunk, blob reference count and gc entry is read once, in key
 * order. Then each blob the chunks reference is asked for in the cluster (one ranged
 * read of its last used byte: it exists and is at least as long as the file needs).
 * Each problem is reported through a callback with the paths it affects (paths are
 * rebuilt from the names of the snapshot).
 *
 * Memory: about 60 bytes per inode plus its first name, and 80 per distinct blob
 * (1.07 million files: 236 MB RSS in all, docs/benchmarks.md).
 *
 * Checks: a name pointing to a missing inode; an inode no name reaches (and not an
 * orphan, an unlinked file still open); link counts (files: their names; directories:
 * 2 + subdirectories); a directory with several names, or whose `parents` row differs
 * from its name; a chunk of a missing inode, or of a non-file; blob reference counts
 * against the chunks; a gc entry for a blob still referenced; a blob missing in the
 * cluster or shorter than its chunks need.
 *
 * Leaks (with o->collection): every needle of the collection's volumes (the volume
 * servers' GET /admin/needles) that no chunk references and the gc queue does not
 * hold, written longer than o->grace_ns ago (younger ones may be uploads whose commit
 * is still to come), is a leaked blob: a crash between an upload and its commit. With
 * o->repair it is deleted. Only for a collection this filesystem alone writes to: a
 * blob of another filesystem or tool in it would look leaked.
 */
#ifndef KELP_FSCK_H
#define KELP_FSCK_H

#include <stdbool.h>
#include <stdint.h>

#include "fuse/dump.h"

struct kv;
struct kelp_client;

/* A problem: kind (a short phrase), detail, and a path ("" when none is known). */
typedef void (*fsck_report_fn)(void *ctx, const char *kind, const char *detail, const char *path);

struct fsck_result {
	uint64_t inodes, dentries, chunks, blobs, blobs_checked;
	uint64_t problems; /* found and not repaired */
	uint64_t needles, leaks, leaks_deleted;
};

struct fsck_options {
	const char *collection; /* search it for leaked blobs (NULL: no search) */
	int64_t grace_ns;	/* needles younger than this are never leaks */
	bool repair;		/* delete the leaked blobs */
	const char *jwt_key;	/* the cluster's -jwtKey, to list needles (NULL: none) */
};

/*
 * Checks kv (and the blobs through c, unless c is NULL). 0 when the check ran (see
 * r->problems), -errno when it could not (engine or memory errors).
 */
int fsck_run(struct kv *kv, struct kelp_client *c, const struct fsck_options *o,
	     fsck_report_fn report, void *ctx, dump_progress_fn progress, void *progress_ctx,
	     struct fsck_result *r);

#endif
