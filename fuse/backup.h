/*
 * backup: metadata backups stored in the cluster itself, and restores from them
 * (`kelp meta backup/restore`, the mount's -backupInterval). docs/operations.md has the
 * procedure; this is the layout.
 *
 * A backup is a dump (fuse/dump.h) taken in one read transaction (the filesystem goes
 * on), gzip-compressed into an unlinked temporary file while its SHA-256 is computed,
 * then uploaded as one or more blobs ("parts", at most part_size bytes each) assigned
 * in the reserved collection BACKUP_COLLECTION. The filesystem is named by its
 * generation (meta_generation: random, drawn when the metadata was created, kept by
 * dump/load and restore), written as 8 hex digits.
 *
 * Finding backups with nothing but the masters: the master lists the volumes of the
 * collection (/vol/status); two well-known needles live in the lowest volumes of it
 * (in the two lowest that take them):
 *   key 1,               cookie BACKUP_COOKIE: the directory, {"filesystems":["1a2b3c4d",..]}
 *   key 2^32 + fs id,    cookie BACKUP_COOKIE: the manifest of one filesystem
 * Both are small JSON documents followed by a line "sha256:<hex of the JSON>". The
 * manifest lists the kept backups, newest first: time, parts, compressed size, SHA-256,
 * record and inode counts. Keys are unique in a cluster, so a key that the master
 * handed out for some other blob exists in one volume at most: the volume server
 * refuses to replace a needle of another cookie, and the next volume takes it. Keys
 * this small only move the master's key sequence up to 2^33 (heartbeats report the
 * largest key), nowhere near its limit.
 *
 * Restore reads every copy of the manifest and takes the newest; then the newest
 * backup (or the newest at or before a given time), checks every part's bytes
 * against the size and SHA-256 of the manifest, inflates and loads it into an empty
 * engine; a damaged backup (missing part, checksum, bad gzip or dump) is reported and
 * the next older one is tried.
 *
 * gc and backups (the hold): a backup references blobs that the live filesystem may
 * drop later (overwrites, deletes). After each backup the metadata gets a hold
 * (meta.h, META_BACKUP_HOLD_KEY): blobs queued for deletion after the oldest kept backup
 * (less a margin) stay in the gc queue while the hold lasts (hold_ns after the backup;
 * the mount uses two intervals). So a restore of any kept backup finds its data.
 *
 * Threads: each call uses the caller's client; no global state.
 */
#ifndef KELP_BACKUP_H
#define KELP_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/common/fid.h"
#include "fuse/dump.h"

struct kv;
struct kelp_client;

#define BACKUP_COLLECTION "kelp_meta_backup"
#define BACKUP_COOKIE	  0x6b6c706du /* "klpm" */
#define BACKUP_MAX_KEEP	  1000
#define BACKUP_MAX_PARTS  4096

struct backup_entry {
	int64_t time_ns;
	uint64_t size; /* compressed bytes, all parts */
	char sha256[65];
	uint64_t records, inodes;
	char engine[16];
	int n_parts;
	char (*parts)[FID_MAX_LEN]; /* malloc'ed */
	uint64_t *part_sizes;
};

struct backup_manifest {
	uint32_t fs;
	char cluster_id[128];
	int64_t updated_ns;
	int n;
	struct backup_entry *e; /* newest first */
};

struct backup_options {
	const char *collection;	 /* NULL: BACKUP_COLLECTION */
	const char *replication; /* NULL: the master's default */
	int keep;		 /* backups kept; 0 = 24 */
	uint64_t part_size;	 /* 0 = 64 MiB */
	int64_t hold_ns;	 /* how long the gc hold lasts after this backup; 0 = none */
	const char *tmp_dir;	 /* NULL: $TMPDIR or /tmp */
	dump_progress_fn progress;
	void *progress_ctx;
};

/*
 * Takes a backup of kv now. made (may be NULL) gets the new entry (free its parts with
 * backup_entry_release); *removed the number of old backups deleted. 0 or -errno with
 * a message in err.
 */
int backup_run(struct kv *kv, struct kelp_client *c, const struct backup_options *o,
	       struct backup_entry *made, int *removed, char *err, size_t cap);

/* Every filesystem's manifest found in the cluster (*out malloc'ed, *n of them). */
int backup_find(struct kelp_client *c, const char *collection, struct backup_manifest **out, int *n,
		char *err, size_t cap);
void backup_manifests_free(struct backup_manifest *m, int n);
void backup_entry_release(struct backup_entry *e);

/*
 * Loads backup `first` of m into kv (empty), or, when it is damaged, the next older
 * ones (a warning each). *used gets the index restored. cluster_id: the masters'.
 */
int backup_restore(struct kv *kv, struct kelp_client *c, const struct backup_manifest *m, int first,
		   const char *cluster_id, const char *tmp_dir, const struct dump_load_options *lo,
		   int *used, char *err, size_t cap);

#endif
