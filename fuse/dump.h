/*
 * dump: the whole metadata of a filesystem as a stream of JSON lines, and back.
 * `kelp meta dump/load` (daemons/meta_main.c), backups into the cluster (fuse/backup.c).
 *
 * Format (version 1; one JSON object a line, in this order; docs/operations.md):
 *   {"kelp_dump":1,"engine":"lmdb","format":"1","cluster_id":"..","generation":N,
 *    "next_ino":N,"next_gc":N,"time":NS,"counts":{"inodes":N,...}}          header
 *   {"inode":INO,"mode":M,"nlink":N,"uid":U,"gid":G,"rdev":R,"size":S,
 *    "atime":NS,"mtime":NS,"ctime":NS,"crtime":NS}                           every inode
 *   {"symlink":INO,"target":".."}                                            symlink targets
 *   {"dentry":PARENT,"name":"..","ino":INO}                                  names
 *   {"dir":INO,"parent":INO}                                                 directory parents
 *   {"chunk":INO,"offset":O,"length":L,"blob_offset":B,"fid":"3,01ab"}       data intervals
 *   {"fidref":"3,01ab","count":N}                                            blob references
 *   {"xattr":INO,"name":"user.x","value":".."}                               extended attributes
 *   {"gc":SEQ,"fid":"3,01ab","queued":NS}                                    the gc queue
 *   {"orphan":INO,"owner":".."}                                              unlinked, still open
 *   {"end":N}                                                   N = records between header and end
 * Byte strings (names, targets, values, owners) are JSON strings when they are valid
 * UTF-8 without NUL, else the same key with "64" appended holding base64 ("name64").
 * Times are nanoseconds since the epoch; numbers are decimal (modes too).
 *
 * The dump is one read transaction of the engine (a consistent snapshot, while mounts
 * go on writing) streamed row by row: memory does not grow with the tree. The load goes
 * into an empty engine only, in transactions of `batch` records; a marker in the
 * counters table (META_LOADING_KEY) makes meta_open refuse a half-loaded tree until a
 * load finishes; bad input (malformed line, unknown record, a count that does not
 * match the end line, a missing end) stops it and deletes what it loaded, leaving the
 * engine empty again.
 *
 * Threads: one caller at a time per call; nothing global.
 */
#ifndef KELP_DUMP_H
#define KELP_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kv;

#define DUMP_VERSION 1

/* Writes n bytes somewhere; 0 or -errno. */
typedef int (*dump_out_fn)(void *ctx, const void *buf, size_t n);
/* Reads up to cap bytes: the count, 0 at the end, or -errno. */
typedef ssize_t (*dump_in_fn)(void *ctx, void *buf, size_t cap);
/* Called every few thousand records: done so far, total expected (0 = unknown). */
typedef void (*dump_progress_fn)(void *ctx, uint64_t done, uint64_t total);

struct dump_stats {
	uint64_t records; /* between header and end */
	uint64_t inodes;
	uint64_t bytes;	 /* of JSON written or read */
	int64_t time_ns; /* the dump's time (from the header on load) */
	char cluster_id[128];
	uint32_t generation; /* the filesystem's (meta_generation) */
};

/*
 * Opens the engine of spec (an LMDB directory or a postgres:// URL) without touching
 * the filesystem in it (no root directory is created). 0 or -errno (logged).
 */
int dump_open_kv(const char *spec, int timeout_ms, struct kv **out);

/* Writes the dump of kv to out. 0 or -errno; st (may be NULL) gets the counts. */
int dump_write(struct kv *kv, dump_out_fn out, void *out_ctx, dump_progress_fn progress,
	       void *progress_ctx, struct dump_stats *st);

struct dump_load_options {
	/* The masters' cluster id ("" or NULL: unknown): must match the dump's, and is
	 * stored in the engine (the mount checks it). */
	const char *cluster_id;
	int batch; /* records per transaction; 0 = 5000 */
	dump_progress_fn progress;
	void *progress_ctx;
};

/*
 * Loads a dump into kv, which must be empty (nothing but a root directory with no
 * entries, as `kelp meta init` or an unused mount leaves it) or hold an unfinished
 * load (replaced). Errors: -ENOTEMPTY, -EINVAL (bad input: err says the line and
 * what), -EXDEV (another cluster), engine errors. err (cap bytes) gets a one-line
 * message on any failure.
 */
int dump_load(struct kv *kv, dump_in_fn in, void *in_ctx, const struct dump_load_options *o,
	      struct dump_stats *st, char *err, size_t cap);

/* Empties every table (not the store's properties). 0 or -errno. */
int dump_wipe(struct kv *kv);

#endif
