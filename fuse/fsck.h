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
 * Memory: about 24 bytes per inode and 80 per distinct blob (10^6 files: ~100 MB).
 *
 * Checks: a name pointing to a missing inode; an inode no name reaches (and not an
 * orphan, an unlinked file still open); link counts (files: their names; directories:
 * 2 + subdirectories); a directory with several names, or whose `parents` row differs
 * from its name; a chunk of a missing inode, or of a non-file; blob reference counts
 * against the chunks; a gc entry for a blob still referenced; a blob missing in the
 * cluster or shorter than its chunks need.
 *
 * Not done: leaked blobs (in the cluster, referenced by nothing): the volume servers
 * have no listing of their needles yet, so nothing can find them.
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
	uint64_t problems;
};

/*
 * Checks kv (and the blobs through c, unless c is NULL). 0 when the check ran (see
 * r->problems), -errno when it could not (engine or memory errors).
 */
int fsck_run(struct kv *kv, struct kelp_client *c, fsck_report_fn report, void *ctx,
	     dump_progress_fn progress, void *progress_ctx, struct fsck_result *r);

#endif
