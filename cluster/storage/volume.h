/*
 * volume: one SeaweedFS-format volume, <dir>/[<collection>_]<vid>.dat + .idx.
 *
 * .dat: an 8-byte super block (version, replica placement, ttl, compaction revision,
 * extra size) then 8-byte-aligned needles (needle.h). .idx: 16-byte entries
 * (key u64 | offset/8 u32 | size u32, big-endian), one per append or deletion.
 * The needle map (needle_map.h) is rebuilt from .idx at open.
 *
 * Crash safety. A write appends the needle to .dat, then its entry to .idx; with
 * fsync both are fdatasync'ed (one group fsync shared by concurrent writers) before
 * the write returns. At open, an .idx with a partial last entry is cut to whole
 * entries; entries pointing past the end of .dat, or a last entry that does not match
 * the needle header it points to, make the index be rebuilt from .dat; needles
 * appended after the last indexed one are checked (structure and CRC) and indexed, and
 * a torn tail is cut off. So whatever reached the page cache is served again, and
 * nothing half-written is served.
 *
 * Vacuum: volume_compact copies live needles to .cpd/.cpx while writes continue;
 * volume_commit_compact replays the writes made meanwhile, writes a .cpc marker, renames
 * .cpd->.dat and .cpx->.idx and removes the marker. At open, a .cpc means "roll forward"
 * (finish the renames), its absence means "roll back" (delete .cpd/.cpx).
 *
 * Threads: any number of threads may read, write and delete concurrently. `lock`
 * (rwlock) protects the needle map and the file descriptors (readers hold it shared
 * across their pread; vacuum commit takes it exclusively to swap files); `append_lock`
 * serialises appends; `sync_lock` runs the group fsync. I/O errors on write turn the
 * volume read-only instead of failing the process.
 */
#ifndef KELP_VOLUME_H
#define KELP_VOLUME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster/storage/needle.h"

#define VOLUME_SUPER_BLOCK_SIZE 8
#define VOLUME_MAX_SIZE		(32ull << 30) /* 4-byte offsets in units of 8 bytes */
#define VOLUME_IDX_ENTRY_SIZE	16
#define VOLUME_TOMBSTONE_SIZE	0xFFFFFFFFu

struct volume;

struct volume_options {
	uint8_t replica_placement; /* 100x + 10y + z */
	struct ttl ttl;
	bool create;		/* create the files when missing */
	bool fsync_every_write; /* -fsync: every write waits for the group fsync */
	uint64_t max_size;	/* 0 = VOLUME_MAX_SIZE; lower in tests */
	/* Test hook: called at each vacuum step; non-zero return simulates a crash there. */
	int (*fault)(int step);
};

/* Vacuum steps passed to the fault hook, in order. */
enum volume_vacuum_step {
	VACUUM_STEP_COMPACT_COPIED = 1, /* .cpd/.cpx written and synced */
	VACUUM_STEP_COMMIT_REPLAYED,	/* writes since compact replayed into .cpd/.cpx */
	VACUUM_STEP_COMMIT_MARKED,	/* .cpc written */
	VACUUM_STEP_COMMIT_DAT_RENAMED, /* .cpd renamed to .dat */
	VACUUM_STEP_COMMIT_IDX_RENAMED, /* .cpx renamed to .idx, .cpc still present */
};

struct volume_info {
	uint32_t id;
	char collection[128];
	uint64_t size; /* .dat bytes */
	uint64_t file_count;
	uint64_t delete_count;
	uint64_t deleted_bytes;
	uint64_t live_count;
	bool read_only; /* also when low_space */
	bool low_space; /* the disk is full: writes refused until it has room */
	uint8_t replica_placement;
	struct ttl ttl;
	uint8_t version;
	uint16_t compact_revision;
	uint64_t max_file_key;
	int64_t modified_at_second;
	bool compacting;
};

/* A blob read from a volume. Release with volume_blob_release. */
struct volume_blob {
	struct needle n;      /* n.data is NULL for large blobs: read them from fd */
	uint8_t *buf;	      /* the whole record for small blobs (owned) */
	int fd;		      /* large blobs: a dup of the .dat fd (owned), else -1 */
	uint64_t data_offset; /* large blobs: where the data starts in fd */
};

/* Where the data of a write comes from: memory, or a file (a spooled upload). */
struct volume_data {
	const uint8_t *mem; /* NULL: read len bytes from fd at fd_offset */
	int fd;
	uint64_t fd_offset;
	uint32_t len;
	uint32_t crc; /* CRC32C of the data, computed by the caller */
};

/* Builds "<dir>/[<collection>_]<vid><ext>" into buf; -ENAMETOOLONG if it does not fit. */
int volume_file_name(const char *dir, const char *collection, uint32_t vid, const char *ext,
		     char *buf, size_t cap);

/*
 * Opens (and with opt->create, creates) a volume; repairs it as described above.
 * Returns 0 and *out (caller closes), -ENOENT when missing and !create, -EINVAL for a
 * bad super block, or -errno.
 */
int volume_open(const char *dir, const char *collection, uint32_t vid,
		const struct volume_options *opt, struct volume **out);
void volume_close(struct volume *v);

/* Closes the volume and deletes its files. */
int volume_destroy(struct volume *v);

uint32_t volume_id(const struct volume *v);
const char *volume_collection(const struct volume *v);
void volume_get_info(struct volume *v, struct volume_info *out);
void volume_set_read_only(struct volume *v, bool read_only);
bool volume_is_read_only(struct volume *v);
/*
 * A volume whose disk is short of space refuses writes with -ENOSPC and reports
 * read-only (not a permanent state: the store lifts it when space comes back).
 * A write that fails with ENOSPC sets it by itself and records the bytes it needed
 * (volume_space_needed); volume_set_low_space(v, false) clears both. Returns true when
 * the state changed.
 */
bool volume_set_low_space(struct volume *v, bool low);
/* Flushes every write made so far to disk (.dat and .idx; one group fsync); at once
 * when nothing is pending. 0 or -errno (the volume then turns read-only). */
int volume_sync(struct volume *v);
uint64_t volume_space_needed(struct volume *v);

/*
 * Appends needle n (cookie, id, flags, name, mime, last_modified, ttl, pairs set by the
 * caller) with the given data. fsync: wait for the group fsync. On success n->size,
 * n->checksum and n->append_at_ns are filled; *unchanged (if non-NULL) is set when an
 * identical needle already existed and nothing was appended.
 * Errors: -EROFS read-only, -EFBIG the volume would exceed its size limit, -EPERM the key
 * exists with a different cookie, -EIO/-ENOSPC write failure (volume turns read-only).
 */
int volume_write(struct volume *v, struct needle *n, const struct volume_data *data, bool fsync,
		 bool *unchanged);

/*
 * Deletes key (cookie must match): appends a tombstone needle and an .idx entry with
 * size -1. *size_out gets the deleted needle's Size. -ENOENT when absent, -EPERM cookie
 * mismatch, -EROFS, -EIO.
 */
int volume_delete(struct volume *v, uint64_t key, uint32_t cookie, uint32_t *size_out);

/*
 * Reads key, checking the cookie (-EPERM on mismatch) and the CRC (-EBADMSG), and TTL
 * expiry (-ENOENT).
 */
int volume_read(struct volume *v, uint64_t key, uint32_t cookie, struct volume_blob *out);
void volume_blob_release(struct volume_blob *b);

/* Deleted bytes / content bytes. */
double volume_garbage_ratio(struct volume *v);

/* Vacuum, as described at the top. Each returns 0 or -errno. */
int volume_compact(struct volume *v);
int volume_commit_compact(struct volume *v);
int volume_cleanup_compact(struct volume *v);

/* Bytes of memory held by the needle map. */
size_t volume_map_memory(struct volume *v);

/* True once the volume's TTL has passed since its last write (whole-volume expiry). */
bool volume_expired(struct volume *v);

#endif
