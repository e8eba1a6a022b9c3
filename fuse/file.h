/*
 * file: the data side of the mount: open files, their write buffers, uploads of
 * chunks to the cluster, and reads that resolve a file's intervals into blobs.
 *
 * One struct open_file per inode with open handles (shared by all its handles).
 * Writes land in per-file dirty extents (each at most one chunk, -chunkSizeLimitMB);
 * a full extent goes to a pool of UPLOAD_WORKERS upload threads (at most 4 in flight
 * per file, committed in submission order so newer data always wins), the others are
 * uploaded on flush / fsync / release, or when a write does not fit them. An upload is a PUT of a file id from a per-thread pool of
 * ids assigned 64 at a time (falling back to assign + PUT with retries through
 * cluster/client), then ONE metadata transaction records the new intervals
 * (meta_write_chunks): after file_flush returns, the data and metadata are stored.
 * Reads take the committed intervals from meta, the blobs from the memory cache, the
 * on-disk cache (-cacheDir) or the cluster, and lay the dirty extents on top; holes
 * read as zeros.
 *
 * With -writeback (opt.writeback), a close journals the file's pending bytes on the
 * local disk (fuse/journal.h) and returns; the open file, with those bytes as jobs,
 * stays in the table (each journaled job holds a reference) until WB_WORKERS uploaders
 * have uploaded and committed them, so readers and stat of the mount see them. At
 * start the journal is replayed into such jobs before FUSE serves a call.
 *
 * Threads: `files_lock` guards the table of open files; each open file has a mutex
 * held across its uploads (so one file's writes are ordered) but never while another
 * file's I/O runs. Each thread uses its own cluster client (thread-local).
 */
#ifndef KELP_FILE_H
#define KELP_FILE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/chunk_cache.h"
#include "cache/disk_cache.h"
#include "fuse/health.h"
#include "fuse/inomap.h"
#include "fuse/meta.h"

struct kelp_fs_options {
	const char *masters;
	const char *collection;
	const char *replication;
	const char *ttl;
	size_t chunk_size;	   /* bytes */
	int timeout_ms;		   /* bound of every cluster call */
	size_t cache_bytes;	   /* memory chunk cache capacity */
	const char *cache_dir;	   /* on-disk chunk cache; NULL = none */
	uint64_t disk_cache_bytes; /* its capacity */
	bool meta_offline;	   /* serve metadata calls while the cluster is away */
	double attr_timeout;	   /* seconds the kernel caches attributes */
	double entry_timeout;	   /* seconds the kernel caches names */
	/* -writeback: a close stores its data in a local journal (fuse/journal.h) and
	 * returns; uploads and commits follow in the background. */
	bool writeback;
	const char *journal_dir; /* the journal (-cacheDir/journal); without writeback, entries
				  * an earlier -writeback mount left there are replayed */
	uint64_t journal_bytes;	 /* its bound (-writebackMB) */
};

#define UPLOAD_WORKERS	 4
#define FILE_BUCKET_BITS 12
#define FILE_BUCKETS	 (1u << FILE_BUCKET_BITS)
#define WB_WORKERS	 2 /* uploaders of the write-back journal */

struct open_file;
struct job;
struct kelp_client;
struct disk_job;
struct journal;

struct kelp_fs {
	struct kelp_fs_options opt;
	struct meta *meta;
	struct chunk_cache *cache;
	struct disk_cache *disk;    /* NULL when disabled */
	pthread_mutex_t files_lock; /* files */
	struct open_file **files;   /* FILE_BUCKETS chains, by a hash of the inode */
	pthread_key_t client_key;
	/* background deletion of superseded blobs */
	pthread_t gc_thread;
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;
	bool stopping;
	bool gc_started;
	uint64_t gc_seen; /* meta_gc_generation when the gc thread last looked (atomic) */
	/* holds of files closed (shared engines), dropped by the gc thread in batches */
	struct meta_hold unholds[64]; /* under gc_lock */
	int n_unholds;
	/* upload pool: full chunks are uploaded in parallel while writers go on */
	pthread_mutex_t queue_lock; /* queue */
	pthread_cond_t queue_cond;
	struct job *queue, *queue_tail;
	pthread_t workers[UPLOAD_WORKERS];
	int n_workers;
	/* readahead: chunks to fetch before a sequential reader gets to them; each holds
	 * the read guard its reader resolved it under */
	pthread_mutex_t ra_lock; /* ra_fids, ra_guard, n_ra */
	pthread_cond_t ra_cond;
	char ra_fids[8][META_FID_MAX];
	unsigned ra_guard[8];
	int n_ra;
	pthread_t ra_threads[2];
	int n_ra_threads;
	/* chunks waiting to be written to the disk cache (off the read path) */
	pthread_mutex_t disk_lock; /* disk_queue, n_disk_queue */
	pthread_cond_t disk_cond;
	struct disk_job *disk_queue;
	int n_disk_queue;
	pthread_t disk_thread;
	bool disk_started;
	/*
	 * The read guard: readers that resolved blobs from the metadata and may still fetch
	 * them, counted per epoch parity. Before deleting blobs it took from the gc queue,
	 * the gc thread starts a new epoch and waits until the old one has no reader left.
	 */
	pthread_mutex_t guard_lock; /* guard_epoch, guard_active */
	pthread_cond_t guard_cond;
	uint64_t guard_epoch;
	uint64_t guard_active[2];
	/* blobs being fetched: concurrent readers of one chunk wait for one fetch */
	pthread_mutex_t fetch_lock;
	pthread_cond_t fetch_cond;
	char fetching[32][META_FID_MAX];
	int n_fetching;
	/* the kernel's lookup count per inode (FUSE forget); a removed inode is freed
	 * when it drops to 0. */
	pthread_mutex_t lookups_lock;
	struct inomap lookups;
	/* is the cluster reachable (checked by every FUSE call unless meta_offline) */
	struct cluster_health health;
	struct kelp_client *probe_client;
	/* chunk-sized write buffers kept for reuse */
	pthread_mutex_t bufs_lock;
	uint8_t *bufs[8];
	int n_bufs;
	/* the FUSE session (struct fuse_session *), set by kelp_fuse_run, for notifications */
	void *session;
	/* FUSE_HANDLE_KILLPRIV_V2 is on (fuse/ops.c, io_writev): writes and truncates clear
	 * setuid, setgid and security.capability here, not in the kernel */
	bool killpriv_v2;
	uint64_t init_unique;	  /* the FUSE_INIT request's, until its reply */
	bool kernel_has_killpriv; /* that request offered FUSE_HANDLE_KILLPRIV_V2 */
	/* -metricsPort: counters the FUSE ops and the chunk paths bump (NULL = off) */
	struct fuse_metrics *metrics;
	/* -writeback: the journal (NULL without the flag), the files with journaled data
	 * waiting for an uploader, and the uploaders */
	struct journal *journal;
	pthread_mutex_t wb_lock; /* wb_head, wb_tail, wb_stop, each file's wb_next/wb_queued */
	pthread_cond_t wb_cond;
	struct open_file *wb_head, *wb_tail;
	bool wb_stop;
	bool wb_draining; /* stopping: uploaders take what is queued at once */
	int wb_len;	  /* files queued */
	uint64_t wb_pause_until, wb_backoff_ns; /* monotonic: uploaders wait after a failure */
	pthread_t wb_threads[WB_WORKERS];
	int n_wb_threads;
	uint64_t wb_jobs;      /* journaled jobs not yet committed (atomic) */
	uint64_t wb_fallbacks; /* closes that uploaded because the journal was full (atomic) */
	/* statfs cache */
	pthread_mutex_t statfs_lock;
	uint64_t statfs_at_ns, total_bytes, free_bytes, used_bytes;
};

int kelp_fs_init(struct kelp_fs *fs, struct meta *meta, const struct kelp_fs_options *opt);
void kelp_fs_destroy(struct kelp_fs *fs);

/* Takes a reference on ino's open file (created on first open). NULL on ENOMEM. */
struct open_file *file_get(struct kelp_fs *fs, uint64_t ino);
/* Opens ino: file_get, and with a shared engine the hold that keeps the inode alive
 * while this mount has it open (meta_hold). 0, -ENOENT (gone), -EIO, -ENOMEM. */
int file_open(struct kelp_fs *fs, uint64_t ino, struct open_file **out);
/* file_open of a file just created with meta_create_held (its hold is written). */
int file_open_held(struct kelp_fs *fs, const struct meta_hold *h, uint32_t mode,
		   struct open_file **out);
/* Looks up ino's open file without creating it (with a reference), or NULL. */
struct open_file *file_find(struct kelp_fs *fs, uint64_t ino);
/* Handles of this mount open for writing: counted in at open (delta 1) and out at
 * release (-1) of a handle opened with O_WRONLY or O_RDWR. */
void file_count_writer(struct open_file *f, int delta);
int file_writer_count(struct open_file *f);
/*
 * security.capability, which the kernel asks for before every write: true when ino is
 * open here and known to have none (file.c says how long that holds). After a
 * meta_getxattr that found none, file_note_no_capability records it, with the
 * meta_change_stamp taken (stable) before the question and the monotonic time it was
 * asked.
 */
bool file_no_capability(struct kelp_fs *fs, uint64_t ino);
void file_note_no_capability(struct kelp_fs *fs, uint64_t ino, uint64_t stamp, uint64_t asked_ns);
/* Who changes a file, for the setgid rule: whether it is in group gid. */
struct kill_caller {
	bool (*in_group)(void *arg, uint32_t gid);
	void *arg;
};
/* With FUSE_HANDLE_KILLPRIV_V2, before a write (or a copy or fallocate into f): removes
 * security.capability; for a caller without CAP_FSETID (who, else NULL) also clears
 * setuid, and setgid when the group may execute or who is not in the file's group. */
int file_kill_privs(struct kelp_fs *fs, struct open_file *f, const struct kill_caller *who);
/* Drops a reference; the last one frees the file (and its inode if unlinked). */
void file_put(struct kelp_fs *fs, struct open_file *f);
/* Marks the file unlinked: the inode is freed when the last reference goes. */
void file_set_unlinked(struct open_file *f);

int file_write(struct kelp_fs *fs, struct open_file *f, uint64_t off, const void *buf, size_t len);
/* Reads into buf; *got is short at the end of the file. */
int file_read(struct kelp_fs *fs, struct open_file *f, uint64_t off, size_t len, uint8_t *buf,
	      size_t *got);
/*
 * A read served from one cached chunk without a copy: when [off, off+len) lies in
 * one committed interval and the file has no bytes on their way (same snapshot rule
 * as file_read), returns 1 with *data (*got bytes, short at the end of the file)
 * inside *entry, which the caller hands back with chunk_cache_put once the reply is
 * sent. 0: not such a read (use file_read); < 0: an error.
 */
int file_read_direct(struct kelp_fs *fs, struct open_file *f, uint64_t off, size_t len,
		     const struct chunk_cache_entry **entry, const uint8_t **data, size_t *got);
/*
 * Uploads every dirty extent and records them (flush / close). durable (fsync): the
 * volume servers fsync the chunks and the metadata is synced to disk too; without it
 * the data survives a crash of the mount daemon (and of one replica), not a power loss
 * of every machine at once. With -writeback and !durable (close), the dirty extents and
 * the uploads in flight get journal entries instead and nothing waits for the network
 * (when the journal is full or the disk refuses, the close uploads as without the
 * flag); durable (fsync) uploads and commits the file's journaled data too.
 */
int file_flush(struct kelp_fs *fs, struct open_file *f, bool durable);
/* How many data changes (writes, truncates, fallocates, copies into it) went through
 * this mount's open file so far; *pending: some are not stored yet (buffered or
 * uploading). For the locks (fuse/locks.c): what to store and announce at an unlock. */
uint64_t file_changes(struct open_file *f, bool *pending);
/* The attributes of an open file, its size including writes not yet in the metadata
 * (getattr): committed and pending bytes taken at one moment; mtime and ctime are
 * those of the last write while it is not recorded (POSIX marks them at write). */
int file_attr(struct kelp_fs *fs, struct open_file *f, struct meta_attr *a);
/* meta_setattr for an open file: earlier writes are recorded first, and a size change
 * also cuts the buffered and uploading data, atomically for readers. */
int file_setattr(struct kelp_fs *fs, struct open_file *f, const struct meta_attr *in,
		 unsigned valid, struct meta_attr *out);

/*
 * fallocate of an open file: with punch (PUNCH_HOLE, ZERO_RANGE) the range becomes a
 * hole, cutting buffered writes and uploads in flight as a truncate does; with extend
 * (no KEEP_SIZE) the size grows to off+len. meta_fallocate otherwise.
 */
int file_fallocate(struct kelp_fs *fs, struct open_file *f, uint64_t off, uint64_t len, bool punch,
		   bool extend, struct meta_attr *out);
/* copy_file_range: both files' pending writes are committed, then meta_copy_range
 * (no data moves). *copied gets the bytes copied. */
int file_copy_range(struct kelp_fs *fs, struct open_file *in, uint64_t off_in,
		    struct open_file *out, uint64_t off_out, uint64_t len, uint64_t *copied,
		    struct meta_attr *attr);
/* SEEK_DATA (data) / SEEK_HOLE: from the chunk map and the pending writes. -ENXIO at
 * or past the end (and for SEEK_DATA when only a hole follows). */
int file_lseek(struct kelp_fs *fs, struct open_file *f, uint64_t off, bool data, uint64_t *pos);

/* Reads a blob range for a file without an open handle (no dirty data). */
int fs_read_blob_range(struct kelp_fs *fs, const struct meta_chunk *c, uint64_t from, uint64_t len,
		       uint8_t *out);

/* Capacity of the cluster for statfs (cached 10 s): the bytes of the volume servers'
 * disks, free on them, and in their volume files (replicas included). */
void fs_capacity(struct kelp_fs *fs, uint64_t *total, uint64_t *free_bytes, uint64_t *used);

/* Uploads the unflushed data of every open file (before a clean stop); with
 * -writeback, journals it. */
void fs_flush_all(struct kelp_fs *fs);
/* -writeback: waits up to timeout_ms for the journal's uploads to finish; returns the
 * entries still waiting (they are replayed at the next mount). */
uint64_t fs_journal_drain(struct kelp_fs *fs, int timeout_ms);
/* Frees the calling thread's cluster client now (threads that end before
 * kelp_fs_destroy and may not reach their TLS destructor). */
void fs_release_thread_client(struct kelp_fs *fs);

/* 0 when the cluster is reachable (or -metaOffline), -EIO when it has not been for
 * -timeout; may wait while it is in doubt (fuse/health.h). */
int fs_cluster_check(struct kelp_fs *fs);

/* Wakes the gc thread (more blobs to delete). */
void fs_kick_gc(struct kelp_fs *fs);

#endif
