/*
 * store: every volume of one volume server, spread over its data directories.
 *
 * Each directory (-dir) holds at most max_volumes volumes (-max). At open, every
 * "[<collection>_]<vid>.dat" found is loaded. Volumes are reference counted: a request
 * takes a reference with store_get_volume and drops it with store_put_volume, so a
 * volume deleted while a request uses it is closed by the last user.
 *
 * Threads: all functions are safe to call from any thread; `lock` (a rwlock inside the
 * store) protects the volume table.
 */
#ifndef KELP_STORE_H
#define KELP_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/storage/volume.h"

struct store;
struct store_volume; /* an acquired volume: use store_volume_get(sv) */

struct store_options {
	bool fsync_every_write;
	uint64_t max_volume_size;  /* 0 = VOLUME_MAX_SIZE */
	unsigned min_free_percent; /* -minFreeSpace: the free space kept on each disk */
};

struct store_disk_status {
	const char *dir;
	int max_volumes;
	int volume_count;
	uint64_t all, used, free; /* bytes, from statvfs */
};

/* Opens the store over n directories; creates missing directories. */
int store_open(char **dirs, const int *max_volumes, int n, const struct store_options *opt,
	       struct store **out);
void store_close(struct store *s);

/*
 * Checks the free space of every directory: its volumes refuse writes (-ENOSPC, and
 * report read-only) while it has less than opt.min_free_percent of its size free, or
 * less than a write that failed with ENOSPC needs. True when a volume changed state.
 */
bool store_check_space(struct store *s);

/* Looks up volume vid and takes a reference (NULL when absent). */
struct volume *store_get_volume(struct store *s, uint32_t vid);
void store_put_volume(struct store *s, struct volume *v);

/*
 * Creates volume vid in the directory with the most free slots (skipping disks short of
 * space). -EEXIST when it exists, -ENOSPC when no directory has a free slot or room.
 */
int store_create_volume(struct store *s, uint32_t vid, const char *collection,
			uint8_t replica_placement, struct ttl ttl);

/* Deletes volume vid and its files (-ENOENT when absent). */
int store_delete_volume(struct store *s, uint32_t vid);

/* Deletes every volume of collection; returns how many. */
int store_delete_collection(struct store *s, const char *collection);

/* Calls fn for every volume with a reference held; fn must not call back into the store. */
void store_each_volume(struct store *s, void (*fn)(void *ctx, struct volume *v), void *ctx);

/* Fills up to cap disk statuses; returns the number of directories. */
int store_disk_statuses(struct store *s, struct store_disk_status *out, int cap);

/* Sum of max volumes over all directories (a disk short of space counts only the
 * volumes it holds: no free slot), and number of volumes held. */
void store_counts(struct store *s, int *max_volumes, int *volume_count);

#endif
