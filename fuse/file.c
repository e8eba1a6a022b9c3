#include "fuse/file.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/fuse_metrics.h"
#include "fuse/journal.h"
#include "cluster/client/client.h"
#include "cluster/common/fid.h"

/* A run of written bytes not yet uploaded. */
struct extent {
	uint64_t off;
	size_t len, cap;
	uint8_t *data;
};

/*
 * Chunk-sized write buffers are kept for reuse (up to CHUNK_BUF_POOL of them): a
 * fresh 4 MiB buffer costs a thousand page faults and the kernel zeroing it, for
 * every chunk a sequential writer fills.
 */
#define CHUNK_BUF_POOL 8 /* = the size of kelp_fs.bufs */

static uint8_t *chunk_buf_get(struct kelp_fs *fs)
{
	uint8_t *p = NULL;

	pthread_mutex_lock(&fs->bufs_lock);
	if (fs->n_bufs > 0)
		p = fs->bufs[--fs->n_bufs];
	pthread_mutex_unlock(&fs->bufs_lock);
	return p ? p : malloc(fs->opt.chunk_size);
}

/* Frees an extent's buffer, or keeps it when it is a whole chunk's. */
static void extent_free(struct kelp_fs *fs, struct extent *e)
{
	if (e->data && e->cap == fs->opt.chunk_size) {
		pthread_mutex_lock(&fs->bufs_lock);
		if (fs->n_bufs < CHUNK_BUF_POOL) {
			fs->bufs[fs->n_bufs++] = e->data;
			e->data = NULL;
		}
		pthread_mutex_unlock(&fs->bufs_lock);
	}
	free(e->data);
	e->data = NULL;
}

/* Makes room for need bytes in e (at most a chunk), keeping its len bytes. */
static int extent_grow(struct kelp_fs *fs, struct extent *e, size_t need)
{
	size_t chunk = fs->opt.chunk_size, cap = e->cap ? e->cap : 65536;
	uint8_t *p;

	while (cap < need)
		cap *= 2;
	/* Big writes (a sequential writer) take a whole chunk's buffer at once. */
	if (cap > chunk || (e->cap == 0 && need >= 65536))
		cap = chunk;
	if (cap == chunk) {
		p = chunk_buf_get(fs);
		if (p && e->len)
			memcpy(p, e->data, e->len);
		if (p)
			free(e->data);
	} else {
		p = realloc(e->data, cap);
	}
	if (!p)
		return -ENOMEM;
	e->data = p;
	e->cap = cap;
	return 0;
}

/*
 * An extent on its way into the metadata: uploaded by the pool (a full chunk) or by
 * the thread that flushes it, then committed in submission order (seq), so an older
 * chunk is never recorded over a newer one. Its bytes stay readable in memory until
 * the transaction that records its chunk has committed (see "Visibility" below). A
 * job whose upload failed (rc < 0, after the client's retries up to -timeout) stays,
 * with the jobs after it, until a flush uploads it again: nothing a write() returned
 * for is dropped while the file is open.
 *
 * -writeback: a job may also have a journal entry (jid): its bytes are then on the
 * local disk as well, the job holds a reference on its file, and an upload or commit
 * that fails makes it wait (unclaimed) for an uploader to try again instead of holding
 * the file's writes up; it is never reported as a write-back error. Its entry is
 * removed in the critical section that commits it.
 */
struct job {
	struct open_file *f;
	struct extent ext;
	struct meta_chunk chunk;
	uint64_t seq;
	int rc;
	bool durable;  /* uploaded with fsync on the volume servers */
	bool lazy;     /* a chunk handed over while writing: committed lazily (kv_txn.lazy) */
	bool uploaded; /* chunk names the blob (a retry after a failed commit keeps it) */
	bool done;
	uint64_t jid;		  /* journal entry, 0 = none */
	bool claimed;		  /* a thread uploads it (always, for jobs without an entry) */
	bool discard;		  /* journaled, of a file removed for good: dropped, not uploaded */
	struct job *next_in_file; /* f->jobs, oldest first */
	struct job *next_queued;  /* fs->queue, or the flusher's own list */
};

#define LAZY_VIDS 16

/*
 * The committed attributes and intervals of an open file, kept between reads (shared
 * engines, where each read of them is a round trip; see "Chunk maps" in the read part).
 * Under the file's lock.
 */
struct read_map {
	bool valid;
	uint64_t stamp;	       /* meta_change_stamp when read */
	uint64_t read_ns;      /* monotonic time it was read */
	struct meta_attr attr; /* committed attributes */
	uint64_t lo, hi;       /* every interval overlapping [lo, hi) is in chunks */
	struct meta_chunk *chunks;
	int n;
};

struct open_file {
	uint64_t ino;
	int refs;		/* protected by fs->files_lock */
	bool unlinked;		/* protected by fs->files_lock */
	struct open_file *next; /* protected by fs->files_lock */
	pthread_mutex_t lock;	/* everything below */
	pthread_cond_t cond;	/* a job of this file finished */
	struct extent *ext;	/* sorted by offset, non-overlapping */
	int n_ext, cap_ext;
	struct job *jobs, *jobs_tail; /* uploads in flight, oldest first */
	int n_jobs;
	uint64_t next_seq; /* seq of the last job created */
	uint64_t done_seq; /* every job up to this seq is committed */
	int error;	   /* a failed upload poisons writes until the next flush */
	/* fsync makes the volumes of the file's blobs flush what they took without fsync:
	 * all of them the first time (blobs from before this open), then those written
	 * lazily since (close of another descriptor, a write that did not fit). */
	bool synced_all;
	uint32_t lazy_vids[LAZY_VIDS];
	int n_lazy;
	int64_t write_ns; /* time of the last write (stat shows it until it is committed) */
	uint64_t changes; /* writes, truncates, fallocates, copies into it (file_changes) */
	/* The hold that keeps the inode alive for this mount (meta_hold; set once, by the
	 * first open, under lock). Its session is the mount's session at that open. */
	struct meta_hold hold;
	bool held;
	bool stale_logged;
	int writers; /* this mount's handles open for writing (op_open's page cache rule) */
	/* -writeback */
	int n_wb;	      /* jobs with a journal entry (not counted in the per-file bound) */
	unsigned wb_fails;    /* journaled uploads or commits that failed (waiters look) */
	int wb_fail_rc;	      /* the last one's error */
	int wb_since_compact; /* journaled jobs taken since the last compaction */
	struct open_file *wb_next; /* fs->wb_head list; under fs->wb_lock */
	bool wb_queued;		   /* under fs->wb_lock */
	struct read_map map;	   /* the read path's cache (file_read, file_read_direct) */
	/* Compaction at a flush (compaction_due): chunk-map changes made through this file
	 * since the last check, and a bound on its pieces while this mount made all of
	 * them since creating it (-1: unknown). */
	int unchecked;
	int pieces_max;
	struct {
		bool known;	    /* it has no security.capability (file_no_capability) */
		bool plain;	    /* and (if known) no setuid or setgid bit (file_kill_privs) */
		uint64_t stamp, ns; /* meta_change_stamp and monotonic time when asked */
	} nocap;
	/* The last chunk committed was a lazy one (job.lazy): the next flush makes it
	 * durable (meta_sync) unless an eager commit, which covers it, came after. */
	bool lazy_data;
};

#define MAX_JOBS_PER_FILE 4 /* chunks in flight per file: 16 MiB by default */

static void free_jobs(struct kelp_fs *fs, struct open_file *f);

/* ---------------------------------------------------------------- clients */

#define FID_POOL      64
#define FID_POOL_LIFE (5ull * 1000000000ull) /* write tokens live 10 s */

/* A thread's cluster client and its pool of assigned file ids (fid, fid_1, ...). */
struct thread_client {
	struct kelp_client *client;
	struct kelp_assign_result pool;
	unsigned next;
	uint64_t pool_at;
};

static void free_client(void *p)
{
	struct thread_client *tc = p;

	kelp_client_free(tc->client);
	free(tc);
}

static struct thread_client *thread_client_of(struct kelp_fs *fs)
{
	struct thread_client *tc = pthread_getspecific(fs->client_key);

	if (!tc) {
		struct kelp_client_options o = {0};

		tc = calloc(1, sizeof(*tc));
		if (!tc)
			return NULL;
		o.masters = fs->opt.masters;
		o.timeout_ms = fs->opt.timeout_ms;
		/* A lost replica fails writes to its volumes until the masters notice (a few
		 * heartbeats): keep trying other volumes until -timeout, not a fixed count. */
		o.upload_retries = 1000;
		o.connect_timeout_ms = fs->opt.timeout_ms < 5000 ? fs->opt.timeout_ms : 5000;
		if (kelp_client_new(&o, &tc->client) < 0) {
			free(tc);
			return NULL;
		}
		pthread_setspecific(fs->client_key, tc);
	}
	return tc;
}

void fs_release_thread_client(struct kelp_fs *fs)
{
	struct thread_client *tc = pthread_getspecific(fs->client_key);

	if (tc) {
		pthread_setspecific(fs->client_key, NULL);
		free_client(tc);
	}
}

/* This thread's cluster client (created on first use). */
static struct kelp_client *client_of(struct kelp_fs *fs)
{
	struct thread_client *tc = thread_client_of(fs);

	return tc ? tc->client : NULL;
}

/* ---------------------------------------------------------------- read guard */

/*
 * A blob leaves a file's chunk map in a transaction (overwrite, truncate, compaction,
 * unlink) and goes to the gc queue; a reader may have resolved it just before and
 * still be fetching it. Readers enter the guard before they resolve and leave it after
 * their last fetch; gc_wait_readers (the gc thread only) deletes nothing it has taken
 * until every reader that entered before has left (an epoch scheme: readers count
 * themselves under the epoch's parity; a new epoch waits for the old parity to drain).
 * Readers that enter later resolve after the blob left the map and never see it.
 */
static unsigned guard_enter(struct kelp_fs *fs)
{
	unsigned g;

	pthread_mutex_lock(&fs->guard_lock);
	g = (unsigned)(fs->guard_epoch & 1);
	fs->guard_active[g]++;
	pthread_mutex_unlock(&fs->guard_lock);
	return g;
}

/* One more holder of parity g, which the caller already holds (readahead). */
static void guard_hold(struct kelp_fs *fs, unsigned g)
{
	pthread_mutex_lock(&fs->guard_lock);
	fs->guard_active[g]++;
	pthread_mutex_unlock(&fs->guard_lock);
}

static void guard_exit(struct kelp_fs *fs, unsigned g)
{
	pthread_mutex_lock(&fs->guard_lock);
	if (--fs->guard_active[g] == 0)
		pthread_cond_broadcast(&fs->guard_cond);
	pthread_mutex_unlock(&fs->guard_lock);
}

/*
 * Waits until every reader that entered the guard before this call has left. Syncs
 * the metadata every second meanwhile (the gc thread's other duty). False when the
 * mount is stopping first.
 */
static bool gc_wait_readers(struct kelp_fs *fs, uint64_t *last_sync)
{
	unsigned old;
	bool ok = true;

	pthread_mutex_lock(&fs->guard_lock);
	old = (unsigned)(fs->guard_epoch & 1);
	fs->guard_epoch++;
	while (fs->guard_active[old] > 0) {
		struct timespec ts;

		if (__atomic_load_n(&fs->stopping, __ATOMIC_ACQUIRE)) {
			ok = false;
			break;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&fs->guard_cond, &fs->guard_lock, &ts);
		if (monotonic_ns() - *last_sync >= 1000000000ull) {
			pthread_mutex_unlock(&fs->guard_lock);
			meta_sync(fs->meta);
			*last_sync = monotonic_ns();
			pthread_mutex_lock(&fs->guard_lock);
		}
	}
	pthread_mutex_unlock(&fs->guard_lock);
	return ok;
}

/* ---------------------------------------------------------------- open files */

/* The chain of the table of open files that ino belongs to (a hash of ino): closed
 * files with journaled data stay in the table, thousands of them with -writeback. */
static struct open_file **file_chain(struct kelp_fs *fs, uint64_t ino)
{
	return &fs->files[(ino * 0x9E3779B97F4A7C15ull) >> (64 - FILE_BUCKET_BITS)];
}

struct open_file *file_find(struct kelp_fs *fs, uint64_t ino)
{
	struct open_file *f;

	pthread_mutex_lock(&fs->files_lock);
	for (f = *file_chain(fs, ino); f && f->ino != ino; f = f->next)
		;
	if (f)
		f->refs++;
	pthread_mutex_unlock(&fs->files_lock);
	return f;
}

/*
 * An open file of an earlier session of this mount (cleaned up by another mount while
 * this one was partitioned): its hold is gone, the file may have been changed or freed
 * since, so its handles fail with EIO and a new open gets a fresh open file.
 */
static bool file_stale(struct kelp_fs *fs, struct open_file *f)
{
	return f->held && f->hold.session && f->hold.session != meta_session_id(fs->meta);
}

/* Forgets f's cached chunk map (read_map). f->lock held. */
static void map_drop(struct open_file *f)
{
	free(f->map.chunks);
	memset(&f->map, 0, sizeof(f->map));
	f->nocap.known = false;
	f->nocap.plain = false;
}

/* Logs once per open file why its calls fail; returns -EIO. f->lock held. */
static int stale_error(struct kelp_fs *fs, struct open_file *f)
{
	if (!f->stale_logged) {
		f->stale_logged = true;
		log_error("mount: inode %" PRIu64 " was opened under session %" PRIu64
			  ", which other mounts cleaned up (this mount was cut off longer than "
			  "-sessionTimeout): its handles fail with EIO, nothing more is written "
			  "through them; open the file again",
			  f->ino, f->hold.session);
	}
	return -EIO;
}

struct open_file *file_get(struct kelp_fs *fs, uint64_t ino)
{
	struct open_file *f, *fresh = calloc(1, sizeof(*fresh));

	pthread_mutex_lock(&fs->files_lock);
	for (f = *file_chain(fs, ino); f && (f->ino != ino || file_stale(fs, f)); f = f->next)
		;
	if (f) {
		f->refs++;
	} else if (fresh) {
		f = fresh;
		fresh = NULL;
		f->ino = ino;
		f->refs = 1;
		f->pieces_max = -1;
		pthread_mutex_init(&f->lock, NULL);
		pthread_cond_init(&f->cond, NULL);
		f->next = *file_chain(fs, ino);
		*file_chain(fs, ino) = f;
	}
	pthread_mutex_unlock(&fs->files_lock);
	free(fresh);
	return f;
}

int file_open(struct kelp_fs *fs, uint64_t ino, struct open_file **out)
{
	struct open_file *f = file_get(fs, ino);
	int rc = 0;

	if (!f)
		return -ENOMEM;
	pthread_mutex_lock(&f->lock);
	map_drop(f); /* close-to-open: what another mount stored since is read again */
	if (!f->held) {
		rc = meta_hold(fs->meta, ino, &f->hold);
		f->held = rc == 0;
	}
	pthread_mutex_unlock(&f->lock);
	if (rc < 0) {
		file_put(fs, f);
		return rc == -ESTALE ? -EIO : rc;
	}
	*out = f;
	return 0;
}

/* Does this mount have ino open (an open file, not counting transient references)? */
static bool file_busy(struct kelp_fs *fs, uint64_t ino)
{
	struct open_file *f;

	pthread_mutex_lock(&fs->files_lock);
	for (f = *file_chain(fs, ino); f && f->ino != ino; f = f->next)
		;
	pthread_mutex_unlock(&fs->files_lock);
	return f != NULL;
}

/* A hold to drop (shared engines): batched by the gc thread, at once when the batch is
 * full. A hold left a little longer only delays freeing an unlinked file. */
static void queue_unhold(struct kelp_fs *fs, const struct meta_hold *h)
{
	bool queued = false;

	pthread_mutex_lock(&fs->gc_lock);
	if (fs->n_unholds < (int)(sizeof(fs->unholds) / sizeof(fs->unholds[0])) && !fs->stopping) {
		fs->unholds[fs->n_unholds++] = *h;
		queued = true;
		/* the gc thread looks every second; sooner when the batch fills up */
		if (fs->n_unholds >= 32)
			pthread_cond_signal(&fs->gc_cond);
	}
	pthread_mutex_unlock(&fs->gc_lock);
	if (!queued) {
		bool may_free;

		pthread_mutex_lock(&fs->lookups_lock);
		may_free = inomap_get(&fs->lookups, h->ino) == 0;
		pthread_mutex_unlock(&fs->lookups_lock);
		meta_unhold(fs->meta, h, may_free);
		fs_kick_gc(fs);
	}
}

int file_open_held(struct kelp_fs *fs, const struct meta_hold *h, uint32_t mode,
		   struct open_file **out)
{
	struct open_file *f = file_get(fs, h->ino);
	bool spare = false;

	if (!f) {
		queue_unhold(fs, h);
		return -ENOMEM;
	}
	pthread_mutex_lock(&f->lock);
	map_drop(f);
	if (!f->held) {
		f->hold = *h;
		f->held = true;
		f->pieces_max = 0; /* created by this open: no pieces yet */
		/* nor a capability: the kernel's question before the first write is answered
		 * here (file_no_capability) */
		f->nocap.known = meta_change_stamp(fs->meta, f->ino, &f->nocap.stamp);
		f->nocap.plain = !(mode & (S_ISUID | S_ISGID));
		f->nocap.ns = monotonic_ns();
	} else {
		spare = true; /* opened meanwhile by another thread: its hold is enough */
	}
	pthread_mutex_unlock(&f->lock);
	if (spare && meta_shared(fs->meta))
		queue_unhold(fs, h);
	*out = f;
	return 0;
}

void file_count_writer(struct open_file *f, int delta)
{
	pthread_mutex_lock(&f->lock);
	f->writers += delta;
	pthread_mutex_unlock(&f->lock);
}

int file_writer_count(struct open_file *f)
{
	int n;

	pthread_mutex_lock(&f->lock);
	n = f->writers;
	pthread_mutex_unlock(&f->lock);
	return n;
}

void file_set_unlinked(struct open_file *f)
{
	f->unlinked = true;
}

void file_put(struct kelp_fs *fs, struct open_file *f)
{
	bool last, unlinked;

	pthread_mutex_lock(&fs->files_lock);
	last = --f->refs == 0;
	unlinked = f->unlinked;
	if (last) {
		for (struct open_file **p = file_chain(fs, f->ino); *p; p = &(*p)->next) {
			if (*p == f) {
				*p = f->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&fs->files_lock);
	if (!last)
		return;
	/* What the last flush could not store (its error was reported) goes now. */
	for (int i = 0; i < f->n_ext; i++)
		extent_free(fs, &f->ext[i]);
	free(f->ext);
	free_jobs(fs, f);
	map_drop(f);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	if (f->held && meta_shared(fs->meta)) {
		/* Freed now if its last name went (here or on another mount) and no other
		 * session has it open; its blobs go to gc. */
		if (f->hold.session == meta_session_id(fs->meta))
			queue_unhold(fs, &f->hold);
	} else if (unlinked) {
		/* Still known to the kernel (a lookup it has not forgotten): its forget frees it. */
		bool referenced;

		pthread_mutex_lock(&fs->lookups_lock);
		referenced = inomap_get(&fs->lookups, f->ino) > 0;
		pthread_mutex_unlock(&fs->lookups_lock);
		if (!referenced) {
			meta_release_inode(fs->meta, f->ino);
			fs_kick_gc(fs);
		}
	}
	free(f);
}

/* ---------------------------------------------------------------- upload */

static int upload_extent_once(struct kelp_fs *fs, const struct extent *e, bool durable,
			      struct meta_chunk *c);

static void cache_written(struct kelp_fs *fs, const struct extent *e, const char *fid);

/* Uploads one extent as a blob; fills c. Called without f->lock (network I/O). */
static int upload_extent(struct kelp_fs *fs, const struct extent *e, bool durable,
			 struct meta_chunk *c)
{
	struct fuse_metrics *fm = fs->metrics;
	int rc;

	if (!fm) {
		rc = upload_extent_once(fs, e, durable, c);
	} else {
		metric_gauge_add(fm->uploads_in_flight, 1);
		rc = upload_extent_once(fs, e, durable, c);
		metric_gauge_add(fm->uploads_in_flight, -1);
		metric_inc(rc < 0 ? fm->upload_errors : fm->uploads);
	}
	if (rc == 0)
		cache_written(fs, e, c->fid);
	return rc;
}

static int upload_extent_once(struct kelp_fs *fs, const struct extent *e, bool durable,
			      struct meta_chunk *c)
{
	struct thread_client *tc = thread_client_of(fs);
	struct kelp_assign_request areq = {0};
	struct kelp_upload_options uopt = {0};
	struct kelp_upload_result up;
	struct kelp_put_result res;
	char fid[META_FID_MAX];
	uint64_t now = monotonic_ns();
	int rc = -1;

	if (!tc)
		return -ENOMEM;
	areq.collection = fs->opt.collection;
	areq.replication = fs->opt.replication;
	areq.ttl = fs->opt.ttl;
	uopt.ttl = fs->opt.ttl;
	uopt.fsync = durable;
	uopt.no_md5 = true; /* chunks are checked by CRC32C; MD5 would cost the servers CPU */
	/* A file id from the pool: one assign serves FID_POOL chunks. */
	if (tc->next >= tc->pool.count || now - tc->pool_at > FID_POOL_LIFE) {
		areq.count = FID_POOL;
		tc->next = tc->pool.count = 0;
		if (kelp_client_assign(tc->client, &areq, &tc->pool) == 0) {
			tc->pool_at = now;
			if (tc->pool.count == 0)
				tc->pool.count = 1;
		}
		areq.count = 0;
	}
	if (tc->next < tc->pool.count) {
		if (tc->next == 0)
			snprintf(fid, sizeof(fid), "%s", tc->pool.fid);
		else
			snprintf(fid, sizeof(fid), "%s_%u", tc->pool.fid, tc->next);
		tc->next++;
		rc = kelp_client_upload_buffer(tc->client, tc->pool.url, fid, tc->pool.auth, &uopt,
					       e->data, e->len, &up);
		if (rc < 0)
			tc->next = tc->pool.count; /* that volume may be gone: assign afresh */
	}
	if (rc < 0) {
		/* Assign + upload with retries on other volumes and masters. */
		rc = kelp_client_put_buffer(tc->client, &areq, &uopt, e->data, e->len, &res);
		if (rc < 0) {
			log_error("mount: uploading %zu bytes failed: %s", e->len,
				  kelp_client_error(tc->client));
			return rc == -ENOSPC ? -ENOSPC : -EIO; /* the cluster is full, or away */
		}
		snprintf(fid, sizeof(fid), "%s", res.assign.fid);
	}
	memset(c, 0, sizeof(*c));
	c->offset = e->off;
	c->length = e->len;
	c->blob_offset = 0;
	snprintf(c->fid, sizeof(c->fid), "%s", fid);
	return 0;
}

static void note_lazy(struct open_file *f, const char *fid);
static void note_pieces(struct open_file *f, int added);
static void wb_queue_file(struct kelp_fs *fs, struct open_file *f);
static int commit_pending(struct kelp_fs *fs, struct open_file *f);

/*
 * Commits the finished jobs at the head of f's queue, in order, so an older chunk is
 * never recorded over a newer one. A job leaves f->jobs in the same critical section
 * as the transaction that records its chunk (and, journaled, as the removal of its
 * entry): a reader (who looks under f->lock) finds its bytes in exactly one of the
 * places. Returns the references on f that committed journaled jobs held, for the
 * caller to drop once f->lock is released. f->lock held.
 */
static int commit_done_jobs(struct kelp_fs *fs, struct open_file *f)
{
	int drop = 0;

	while (f->jobs && f->jobs->done) {
		struct job *j = f->jobs;

		if (j->rc == 0 && !j->discard) {
			/* A journaled job's times were recorded when it was journaled (a later
			 * utimes, tar's, must not be overridden by its upload). */
			j->rc = meta_write_chunks_held(fs->meta, &f->hold, &j->chunk, 1, 0,
						       j->jid == 0, j->lazy, NULL);
			if (j->rc == 0) {
				note_pieces(f, 2); /* inside an interval: cut in three */
				f->lazy_data = j->lazy;
			}
			if (j->rc == -ESTALE)
				j->rc = stale_error(fs, f);
		}
		if (j->rc < 0 && j->jid) {
			/* Safe in the journal: an uploader tries it again later; waiters for
			 * it (fsync, truncate) see wb_fails move. */
			f->wb_fail_rc = j->rc;
			f->wb_fails++;
			j->rc = 0;
			j->done = false;
			j->claimed = false;
			wb_queue_file(fs, f);
			break;
		}
		if (j->rc < 0) {
			/* Kept (and the newer jobs behind it) for the next flush to retry. */
			if (!f->error)
				f->error = j->rc;
			break;
		}
		if (!j->durable && !j->discard)
			note_lazy(f, j->chunk.fid);
		if (j->jid) {
			journal_remove(fs->journal, j->jid, j->ext.len);
			f->n_wb--;
			__atomic_fetch_sub(&fs->wb_jobs, 1, __ATOMIC_RELAXED);
			drop++;
		}
		f->jobs = j->next_in_file;
		if (!f->jobs)
			f->jobs_tail = NULL;
		f->n_jobs--;
		f->done_seq = j->seq;
		extent_free(fs, &j->ext);
		free(j);
	}
	pthread_cond_broadcast(&f->cond);
	return drop;
}

/* The error of a failed upload that holds f's queue up (0 if none). f->lock held. */
static int failed_rc(const struct open_file *f)
{
	return f->jobs && f->jobs->done && f->jobs->rc < 0 ? f->jobs->rc : 0;
}

/* Waits until every job of f is committed; a failed one ends the wait with its error
 * (a journaled one too, though it stays to be tried again). f->lock held. */
static int wait_jobs(struct open_file *f)
{
	unsigned fails = f->wb_fails;

	while (f->n_jobs > 0 && !failed_rc(f) && f->wb_fails == fails)
		pthread_cond_wait(&f->cond, &f->lock);
	if (f->wb_fails != fails)
		return f->wb_fail_rc < 0 ? f->wb_fail_rc : -EIO;
	return failed_rc(f);
}

static void free_jobs(struct kelp_fs *fs, struct open_file *f)
{
	while (f->jobs) {
		struct job *j = f->jobs;

		f->jobs = j->next_in_file;
		extent_free(fs, &j->ext);
		free(j);
	}
	f->jobs_tail = NULL;
	f->n_jobs = 0;
}

/*
 * Moves extent i of f into a new job at the tail of f's queue (it stays readable
 * there). NULL on ENOMEM (the extent stays dirty). f->lock held.
 */
static struct job *extent_to_job(struct open_file *f, int i, bool durable)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->f = f;
	j->ext = f->ext[i];
	j->durable = durable;
	j->claimed = true; /* by the pool or the flusher that made it */
	j->seq = ++f->next_seq;
	memmove(&f->ext[i], &f->ext[i + 1], (size_t)(f->n_ext - i - 1) * sizeof(*f->ext));
	f->n_ext--;
	if (f->jobs_tail)
		f->jobs_tail->next_in_file = j;
	else
		f->jobs = j;
	f->jobs_tail = j;
	f->n_jobs++;
	return j;
}

/* Uploads a job's extent, then commits what is done in order. f->lock NOT held; j may
 * be freed when this returns. */
static void run_job(struct kelp_fs *fs, struct job *j)
{
	struct open_file *f = j->f;
	int drop;

	if (!j->uploaded && !j->discard) {
		j->rc = upload_extent(fs, &j->ext, j->durable, &j->chunk);
		j->uploaded = j->rc == 0;
	}
	pthread_mutex_lock(&f->lock);
	j->done = true;
	drop = commit_done_jobs(fs, f);
	pthread_mutex_unlock(&f->lock);
	/* The caller holds a reference of its own: these are never the last. */
	while (drop-- > 0)
		file_put(fs, f);
	fs_kick_gc(fs); /* overwritten blobs may be waiting */
}

static void *upload_worker(void *arg)
{
	struct kelp_fs *fs = arg;

	for (;;) {
		struct job *j;
		struct open_file *f;

		pthread_mutex_lock(&fs->queue_lock);
		while (!fs->queue && !fs->stopping)
			pthread_cond_wait(&fs->queue_cond, &fs->queue_lock);
		j = fs->queue;
		if (!j) {
			pthread_mutex_unlock(&fs->queue_lock);
			return NULL;
		}
		fs->queue = j->next_queued;
		if (!fs->queue)
			fs->queue_tail = NULL;
		pthread_mutex_unlock(&fs->queue_lock);
		f = j->f;
		run_job(fs, j);
		file_put(fs, f); /* the job's reference */
	}
}

/*
 * Hands extent i of f to the upload pool (the writer goes on at once), or uploads it
 * here when there is no pool (f->lock is dropped meanwhile). f->lock held.
 */
static int spill_extent(struct kelp_fs *fs, struct open_file *f, int i, bool durable)
{
	struct job *j = extent_to_job(f, i, durable);

	if (!j)
		return -ENOMEM;
	/* Nobody waits for this one's commit: on a shared engine it need not wait for the
	 * database's disk (the close's or fsync's commit, or its meta_sync, does). */
	j->lazy = meta_shared(fs->meta);
	if (fs->n_workers == 0) {
		pthread_mutex_unlock(&f->lock);
		run_job(fs, j);
		pthread_mutex_lock(&f->lock);
		return 0;
	}
	pthread_mutex_lock(&fs->files_lock);
	f->refs++;
	pthread_mutex_unlock(&fs->files_lock);
	pthread_mutex_lock(&fs->queue_lock);
	if (fs->queue_tail)
		fs->queue_tail->next_queued = j;
	else
		fs->queue = j;
	fs->queue_tail = j;
	pthread_cond_signal(&fs->queue_cond);
	pthread_mutex_unlock(&fs->queue_lock);
	return 0;
}

/*
 * The full extent at offset off goes to the upload pool, at most MAX_JOBS_PER_FILE in
 * flight per file. Pool uploads are synced on the volume servers: fsync() of the file
 * only waits for them. f->lock held.
 */
static int submit_extent(struct kelp_fs *fs, struct open_file *f, uint64_t off)
{
	int i;

	while (f->n_jobs - f->n_wb >= MAX_JOBS_PER_FILE && !failed_rc(f))
		pthread_cond_wait(&f->cond, &f->lock);
	if (failed_rc(f))
		return failed_rc(f); /* stays dirty; the write reports the error */
	/* The wait let other threads flush or change the extents: find it again. */
	for (i = 0; i < f->n_ext && f->ext[i].off != off; i++)
		;
	if (i == f->n_ext || f->ext[i].len < fs->opt.chunk_size)
		return 0; /* already uploaded by a flush, or no longer full */
	return spill_extent(fs, f, i, true);
}

/* Remembers the volume of a blob uploaded without fsync. f->lock held. */
static void note_lazy(struct open_file *f, const char *fid)
{
	uint32_t vid = fid_text_vid(fid);

	for (int i = 0; i < f->n_lazy; i++)
		if (f->lazy_vids[i] == vid)
			return;
	if (f->n_lazy < LAZY_VIDS)
		f->lazy_vids[f->n_lazy++] = vid;
	else
		f->synced_all = false; /* too many to list: sync them all at fsync */
}

static bool has_vid(const uint32_t *vids, int n, uint32_t vid)
{
	for (int i = 0; i < n; i++)
		if (vids[i] == vid)
			return true;
	return false;
}

/*
 * fsync's part on the volume servers: every replica of every volume holding data of
 * f written without fsync flushes it to disk (the blobs fsync itself uploads were
 * written with fsync). Called without f->lock, after the data is committed.
 */
static int sync_volumes(struct kelp_fs *fs, struct open_file *f)
{
	struct kelp_client *cl = client_of(fs);
	uint32_t lazy[LAZY_VIDS], *vids = lazy;
	int n, rc = 0;
	bool all;

	if (!cl)
		return -ENOMEM;
	/* Taken now; blobs committed lazily from here on are noted for the next fsync. */
	pthread_mutex_lock(&f->lock);
	all = !f->synced_all;
	n = f->n_lazy;
	memcpy(lazy, f->lazy_vids, (size_t)n * sizeof(*lazy));
	f->synced_all = true;
	f->n_lazy = 0;
	pthread_mutex_unlock(&f->lock);
	if (all) {
		struct meta_chunk *list;
		int nc = meta_read_chunks(fs->meta, f->ino, 0, UINT64_MAX, &list);

		if (nc < 0) {
			rc = nc;
			goto out;
		}
		vids = malloc(((size_t)nc + LAZY_VIDS) * sizeof(*vids));
		if (!vids) {
			if (nc > 0)
				free(list);
			vids = lazy;
			rc = -ENOMEM;
			goto out;
		}
		memcpy(vids, lazy, (size_t)n * sizeof(*vids));
		for (int i = 0; i < nc; i++) {
			uint32_t vid = fid_text_vid(list[i].fid);

			if (vid && !has_vid(vids, n, vid))
				vids[n++] = vid;
		}
		if (nc > 0)
			free(list);
	}
	for (int i = 0; i < n && rc == 0; i++) {
		rc = kelp_client_sync_volume(cl, vids[i]);
		if (rc < 0)
			log_error("mount: fsync of inode %" PRIu64 ": %s", f->ino,
				  kelp_client_error(cl));
	}
out:
	if (vids != lazy)
		free(vids);
	if (rc < 0) {
		pthread_mutex_lock(&f->lock);
		f->synced_all = false; /* the next fsync syncs every volume again */
		pthread_mutex_unlock(&f->lock);
		return rc == -ENOMEM ? rc : -EIO;
	}
	return 0;
}

/*
 * Every dirty extent of f (and every job whose upload failed before) becomes a job
 * that this thread uploads itself, without f->lock (readers and writers go on
 * meanwhile); then waits until every job up to the last of them is committed (older
 * pool uploads included) or one failed. Returns the first upload or commit error since
 * the last report. f->lock held (dropped while uploading).
 */
static int store_dirty(struct kelp_fs *fs, struct open_file *f, bool durable)
{
	struct job *mine = NULL, **tail = &mine;
	unsigned fails = f->wb_fails;
	uint64_t upto;
	int rc = 0;

	/* Uploads that failed before are tried again first, in their order; journaled
	 * jobs no uploader has taken yet are uploaded here too (fsync, truncate). */
	for (struct job *j = f->jobs; j; j = j->next_in_file) {
		if (j->done && j->rc < 0) {
			j->done = false;
			j->rc = 0;
			*tail = j;
			tail = &j->next_queued;
		} else if (j->jid && !j->claimed && !j->done) {
			j->claimed = true;
			j->durable = durable;
			*tail = j;
			tail = &j->next_queued;
		}
	}
	while (f->n_ext > 0) {
		struct job *j = extent_to_job(f, 0, durable);

		if (!j) {
			rc = -ENOMEM;
			break;
		}
		*tail = j;
		tail = &j->next_queued;
	}
	upto = f->next_seq;
	if (mine) {
		pthread_mutex_unlock(&f->lock);
		while (mine) {
			struct job *j = mine;

			mine = j->next_queued;
			run_job(fs, j);
		}
		pthread_mutex_lock(&f->lock);
	}
	while (f->done_seq < upto && !failed_rc(f) && f->wb_fails == fails)
		pthread_cond_wait(&f->cond, &f->lock);
	if (rc == 0 && f->wb_fails != fails)
		rc = f->wb_fail_rc < 0 ? f->wb_fail_rc : -EIO; /* still journaled */
	if (rc == 0 && f->error) {
		rc = f->error;
		f->error = 0; /* reported once */
	}
	return rc;
}

#define COMPACT_MIN_PIECES 8 /* a chunk-sized window in more pieces than this is rewritten */

/* A change of f's chunk map that may have added pieces (-1: any number). f->lock held. */
static void note_pieces(struct open_file *f, int added)
{
	f->unchecked++;
	if (added < 0 || f->pieces_max < 0 || f->pieces_max > COMPACT_MIN_PIECES)
		f->pieces_max = -1;
	else
		f->pieces_max += added;
}

/*
 * Whether a flush looks for pieces to compact (a round trip to read the chunk map):
 * only after changes made through this file since the last look (a file only read is
 * not looked at), and not while the file, created here, has too few pieces to have a
 * window of more than COMPACT_MIN_PIECES. Another mount's changes are its own flush's
 * to look at. f->lock held; the look is then due no more.
 */
static bool compaction_due(struct open_file *f)
{
	bool due = f->unchecked > 0 && (f->pieces_max < 0 || f->pieces_max > COMPACT_MIN_PIECES);

	if (due)
		f->unchecked = 0;
	return due;
}

/*
 * Random overwrites cut a file's data into many small intervals (and blobs). A
 * chunk-aligned window made of more than COMPACT_MIN_PIECES intervals, with no hole,
 * is read back and rewritten as one blob; the pieces go to gc. The bytes do not
 * change, so this runs without f->lock: the new blob is recorded only if the pieces
 * are still exactly there (meta_replace_chunks), and the pieces it reads cannot be
 * deleted under it (read guard).
 */
static int compact_chunks(struct kelp_fs *fs, struct open_file *f)
{
	struct meta_chunk *list;
	uint64_t window = fs->opt.chunk_size;
	unsigned g = guard_enter(fs);
	int n = meta_read_chunks(fs->meta, f->ino, 0, UINT64_MAX, &list), rc = 0;

	if (n <= COMPACT_MIN_PIECES) {
		if (n > 0)
			free(list);
		guard_exit(fs, g);
		return n < 0 ? n : 0;
	}
	for (int i = 0; i < n && rc == 0;) {
		uint64_t start = list[i].offset / window * window, end = start + window;
		uint64_t covered = 0, last_end = start;
		int j = i, pieces = 0;
		bool dense = list[i].offset == start;

		for (; j < n && list[j].offset < end; j++) {
			uint64_t e = list[j].offset + list[j].length;

			if (e > end) {
				dense = false; /* straddles the window: leave it */
				j++;
				break;
			}
			dense = dense && list[j].offset == last_end;
			last_end = e;
			covered += list[j].length;
			pieces++;
		}
		if (dense && pieces > COMPACT_MIN_PIECES && covered > 0) {
			struct extent x = {.off = start, .len = covered};
			struct meta_chunk c;

			x.data = malloc(covered);
			if (!x.data) {
				rc = -ENOMEM;
				break;
			}
			for (int k = i; k < i + pieces && rc == 0; k++)
				rc = fs_read_blob_range(fs, &list[k], 0, list[k].length,
							x.data + (list[k].offset - start));
			if (rc == 0)
				rc = upload_extent(fs, &x, true, &c);
			/* Recorded only if those pieces are still there (a write or truncate
			 * may have run meanwhile); otherwise the new blob just goes to gc. */
			if (rc == 0)
				rc = meta_replace_chunks(fs->meta, f->ino, &list[i], pieces, &c);
			free(x.data);
		}
		i = j > i ? j : i + 1;
	}
	free(list);
	guard_exit(fs, g);
	return rc;
}

/* ---------------------------------------------------------------- write-back journal */

/*
 * -writeback. A close journals the file's pending bytes (dirty extents, and jobs still
 * on their way to the cluster) and returns: each gets an entry on the local disk
 * (fuse/journal.h) and becomes, or stays, a job of the open file, which stays in the
 * table of open files (a reference per journaled job) so that reads and stat of the
 * mount keep seeing the bytes. WB_WORKERS uploaders take files from fs->wb_head,
 * upload their journaled jobs and commit them in order (commit_done_jobs), removing
 * each entry in the critical section of its commit. An fsync, truncate, hole or copy
 * of the file uploads its journaled jobs itself (store_dirty). The times of the writes
 * are recorded at the close; the size and chunk map at the commit.
 *
 * Crash replay: the entries left in the journal are read back at start, in order, and
 * become journaled jobs again before FUSE serves a call. An entry still there was not
 * committed, or its commit was the last change to its file's data (the removal
 * follows the commit under f->lock, before any later change of that file), so
 * committing it again is harmless.
 */

#define WB_BATCH_FILES 64	    /* files an uploader takes at once */
#define WB_BATCH_BYTES (1u << 20)   /* small jobs sharing one blob */
#define WB_SMALL       (128u << 10) /* a job up to this size goes into a shared blob */
#define WB_LINGER_NS   5000000L	    /* an uploader waits this long for a batch to fill */

/* Queues f for the journal's uploaders (with a reference), unless it is queued. */
static void wb_queue_file(struct kelp_fs *fs, struct open_file *f)
{
	pthread_mutex_lock(&fs->wb_lock);
	if (!f->wb_queued && !fs->wb_stop) {
		f->wb_queued = true;
		f->wb_next = NULL;
		pthread_mutex_lock(&fs->files_lock);
		f->refs++;
		pthread_mutex_unlock(&fs->files_lock);
		if (fs->wb_tail)
			fs->wb_tail->wb_next = f;
		else
			fs->wb_head = f;
		fs->wb_tail = f;
		/* Woken at the first file and when a batch is full, not at every close
		 * (a thread wake-up per close cost more than the close). */
		if (++fs->wb_len == 1 || fs->wb_len == WB_BATCH_FILES)
			pthread_cond_signal(&fs->wb_cond);
	}
	pthread_mutex_unlock(&fs->wb_lock);
}

/* Job j (of f) has the journal entry jid: it takes the reference that goes with it.
 * f->lock held. */
static void adopt_entry(struct kelp_fs *fs, struct open_file *f, struct job *j, uint64_t jid)
{
	j->jid = jid;
	f->n_wb++;
	__atomic_fetch_add(&fs->wb_jobs, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&fs->files_lock);
	f->refs++;
	pthread_mutex_unlock(&fs->files_lock);
}

/* A small extent's buffer (64 KiB at least, or a whole chunk's) cut to its bytes:
 * journaled data stays in memory until it is uploaded. */
static void extent_shrink(struct kelp_fs *fs, struct extent *e)
{
	uint8_t *p;

	if (e->cap <= e->len || e->len == 0 || !(p = malloc(e->len)))
		return;
	memcpy(p, e->data, e->len);
	extent_free(fs, e);
	e->data = p;
	e->cap = e->len;
}

/*
 * The -writeback close: every pending byte of f gets a journal entry. 1 when the
 * journal refused one (full, or the disk: the caller uploads instead), else 0 or an
 * error of the metadata. f->lock held.
 */
static int journal_pending(struct kelp_fs *fs, struct open_file *f)
{
	bool any = false;
	uint64_t jid;
	int rc = 0, jrc = 0; /* jrc: the journal refused an entry */

	/* Uploads on their way (full chunks, spills, ones that failed) first: in order. */
	for (struct job *j = f->jobs; j && jrc == 0; j = j->next_in_file) {
		if (j->jid)
			continue;
		jrc = journal_append(fs->journal, f->ino, j->ext.off, j->ext.data, j->ext.len,
				     f->write_ns, &jid);
		if (jrc < 0)
			break;
		adopt_entry(fs, f, j, jid);
		any = true;
		if (j->done && j->rc < 0) {
			/* a failed upload: the journal's uploaders take it over */
			j->done = false;
			j->rc = 0;
			j->claimed = false;
		}
	}
	while (jrc == 0 && f->n_ext > 0) {
		struct extent *e = &f->ext[0];
		struct job *j;

		extent_shrink(fs, e);
		jrc =
		    journal_append(fs->journal, f->ino, e->off, e->data, e->len, f->write_ns, &jid);
		if (jrc < 0)
			break;
		j = extent_to_job(f, 0, false);
		if (!j) {
			journal_remove(fs->journal, jid, e->len);
			rc = -ENOMEM;
			break;
		}
		j->claimed = false;
		adopt_entry(fs, f, j, jid);
		any = true;
	}
	if (any) {
		/* The writes' times now (POSIX marks them at the write); the commit after
		 * the upload leaves them alone. */
		struct meta_attr in = {.mtime_ns = f->write_ns, .ctime_ns = f->write_ns};
		int mrc =
		    meta_setattr(fs->meta, f->ino, &in, META_SET_MTIME | META_SET_CTIME, NULL);

		wb_queue_file(fs, f);
		if (rc == 0 && mrc < 0 && mrc != -ENOENT)
			rc = mrc;
	}
	if (rc < 0)
		return rc;
	if (jrc < 0) {
		uint64_t n = __atomic_add_fetch(&fs->wb_fallbacks, 1, __ATOMIC_RELAXED);

		if (n == 1 || n % 1000 == 0)
			log_warn("mount: the write-back journal in %s %s (%s): closes upload their "
				 "data themselves until it has room (%" PRIu64 " so far)",
				 journal_dir(fs->journal),
				 jrc == -EFBIG ? "is full" : "cannot be written",
				 jrc == -EFBIG ? "-writebackMB" : strerror(-jrc), n);
		return 1;
	}
	/* Every byte a write() returned for is journaled: an upload error of before is
	 * the uploaders' business now. */
	f->error = 0;
	return 0;
}

/* A journaled job an uploader took, and where its bytes go in the shared blob. */
struct wb_item {
	struct open_file *f;
	struct job *j;
	size_t at;
	bool single; /* too big to share: uploaded alone */
};

/* Marks item i uploaded (or failed with rc) and commits what its file can. */
static void wb_finish(struct kelp_fs *fs, struct wb_item *it, int rc, const struct meta_chunk *c)
{
	struct job *j = it->j;
	struct open_file *f = it->f;
	int drop;

	if (!j->discard && !j->uploaded) {
		j->rc = rc;
		if (rc == 0) {
			memset(&j->chunk, 0, sizeof(j->chunk));
			j->chunk.offset = j->ext.off;
			j->chunk.length = j->ext.len;
			j->chunk.blob_offset = it->at;
			snprintf(j->chunk.fid, sizeof(j->chunk.fid), "%s", c->fid);
			j->uploaded = true;
		}
	}
	pthread_mutex_lock(&f->lock);
	j->done = true;
	drop = commit_done_jobs(fs, f);
	pthread_mutex_unlock(&f->lock);
	while (drop-- > 0)
		file_put(fs, f);
}

/*
 * One round of an uploader over the files it took (each with the queue's reference):
 * their small journaled jobs are uploaded together as ONE blob, each job's chunk a
 * slice of it (the chunk map takes any slice of a blob; the blob is deleted once no
 * file uses any of it), bigger ones alone; then each is committed in its file's order.
 * A tar of small files costs one upload per megabyte instead of one per file. False
 * when an upload or a commit failed (the jobs wait in the journal for the next try).
 */
static bool wb_round(struct kelp_fs *fs, struct open_file **files, int nf)
{
	struct wb_item *items;
	int n = 0, cap = 0, rc = 0;
	size_t bytes = 0;
	bool ok = true;

	for (int i = 0; i < nf; i++) {
		pthread_mutex_lock(&files[i]->lock);
		for (struct job *j = files[i]->jobs; j; j = j->next_in_file)
			if (j->jid && !j->claimed && !j->done)
				cap++;
		pthread_mutex_unlock(&files[i]->lock);
	}
	/* (jobs journaled after this count wait for the next round) */
	items = malloc((size_t)(cap ? cap : 1) * sizeof(*items));
	if (!items)
		return false;
	for (int i = 0; i < nf; i++) {
		struct open_file *f = files[i];
		bool gone, more = false;

		pthread_mutex_lock(&fs->files_lock);
		gone = f->unlinked;
		pthread_mutex_unlock(&fs->files_lock);
		pthread_mutex_lock(&f->lock);
		for (struct job *j = f->jobs; j; j = j->next_in_file) {
			bool single;

			if (!j->jid || j->claimed || j->done)
				continue;
			single = j->ext.len > WB_SMALL;
			if (n == cap ||
			    (!single && bytes + j->ext.len > WB_BATCH_BYTES && bytes > 0)) {
				more = true; /* for the next round */
				continue;
			}
			j->claimed = true;
			/* Removed for good (no name, the kernel forgot it): freed once its jobs
			 * are gone, so its bytes need not travel. */
			j->discard = gone && !j->uploaded;
			items[n] = (struct wb_item){.f = f, .j = j, .at = bytes, .single = single};
			if (!single && !j->discard && !j->uploaded)
				bytes += j->ext.len;
			n++;
			f->wb_since_compact++;
		}
		pthread_mutex_unlock(&f->lock);
		if (more)
			wb_queue_file(fs, f);
	}
	if (bytes > 0) {
		struct extent x = {.off = 0, .len = bytes, .cap = bytes};
		struct meta_chunk c;

		x.data = malloc(bytes);
		rc = x.data ? 0 : -ENOMEM;
		for (int i = 0; rc == 0 && i < n; i++) {
			struct job *j = items[i].j;

			if (!items[i].single && !j->discard && !j->uploaded)
				memcpy(x.data + items[i].at, j->ext.data, j->ext.len);
		}
		if (rc == 0)
			rc = upload_extent(fs, &x, false, &c);
		free(x.data);
		for (int i = 0; i < n; i++)
			if (!items[i].single)
				wb_finish(fs, &items[i], rc, &c);
	} else {
		for (int i = 0; i < n; i++)
			if (!items[i].single)
				wb_finish(fs, &items[i], 0, NULL);
	}
	ok = rc == 0;
	for (int i = 0; i < n; i++) {
		struct open_file *f = items[i].f;
		unsigned fails;

		if (!items[i].single)
			continue;
		pthread_mutex_lock(&f->lock);
		fails = f->wb_fails;
		pthread_mutex_unlock(&f->lock);
		run_job(fs, items[i].j);
		pthread_mutex_lock(&f->lock);
		ok = ok && f->wb_fails == fails;
		pthread_mutex_unlock(&f->lock);
	}
	free(items);
	fs_kick_gc(fs); /* overwritten blobs may be waiting */
	/* A file appended to by many closes is cut into many pieces: compacted as a close
	 * without -writeback would (every 8 journaled jobs here). */
	for (int i = 0; i < nf; i++) {
		struct open_file *f = files[i];
		bool compact;

		pthread_mutex_lock(&f->lock);
		compact = f->wb_since_compact >= 8;
		if (compact)
			f->wb_since_compact = 0;
		pthread_mutex_unlock(&f->lock);
		if (compact && compact_chunks(fs, f) < 0)
			log_warn("mount: compacting the chunk list of inode %" PRIu64
				 " failed; will retry",
				 f->ino);
	}
	return ok;
}

static void *wb_loop(void *arg)
{
	struct kelp_fs *fs = arg;

	pthread_mutex_lock(&fs->wb_lock);
	for (;;) {
		struct open_file *files[WB_BATCH_FILES];
		int nf = 0;
		bool ok;

		/* After a failure every uploader pauses (1 s, doubling up to 4 s while the
		 * cluster keeps refusing): no storm of retries, one log line per try. */
		while (!fs->wb_stop && monotonic_ns() < fs->wb_pause_until) {
			struct timespec ts;
			uint64_t left = fs->wb_pause_until - monotonic_ns();

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)(left / 1000000000ull);
			ts.tv_nsec += (long)(left % 1000000000ull);
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&fs->wb_cond, &fs->wb_lock, &ts);
		}
		while (!fs->wb_head && !fs->wb_stop)
			pthread_cond_wait(&fs->wb_cond, &fs->wb_lock);
		if (fs->wb_stop)
			break;
		if (fs->wb_len < WB_BATCH_FILES && !fs->wb_draining) {
			/* A few milliseconds for more closes to come: they share the upload. */
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += WB_LINGER_NS;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&fs->wb_cond, &fs->wb_lock, &ts);
			if (fs->wb_stop)
				break;
			if (!fs->wb_head)
				continue; /* another uploader took them */
		}
		while (fs->wb_head && nf < WB_BATCH_FILES) {
			struct open_file *f = fs->wb_head;

			fs->wb_head = f->wb_next;
			if (!fs->wb_head)
				fs->wb_tail = NULL;
			f->wb_queued = false;
			fs->wb_len--;
			files[nf++] = f;
		}
		if (fs->wb_head)
			pthread_cond_signal(&fs->wb_cond); /* more for another uploader */
		pthread_mutex_unlock(&fs->wb_lock);
		ok = wb_round(fs, files, nf);
		for (int i = 0; i < nf; i++)
			file_put(fs, files[i]); /* the queue's references */
		pthread_mutex_lock(&fs->wb_lock);
		if (!ok) {
			/* The cluster refused (it is away, or full): the failed files are queued
			 * again, after a pause. */
			fs->wb_backoff_ns =
			    fs->wb_backoff_ns ? fs->wb_backoff_ns * 2 : 1000000000ull;
			if (fs->wb_backoff_ns > 4000000000ull)
				fs->wb_backoff_ns = 4000000000ull;
			fs->wb_pause_until = monotonic_ns() + fs->wb_backoff_ns;
		} else {
			fs->wb_backoff_ns = 0;
		}
	}
	pthread_mutex_unlock(&fs->wb_lock);
	fs_release_thread_client(fs);
	return NULL;
}

/* A journal entry read back at start: a journaled job of its file again. */
static int replay_entry(void *ctx, const struct journal_entry *e, const uint8_t *data)
{
	struct kelp_fs *fs = ctx;
	struct open_file *f;
	struct meta_attr a;
	struct job *j;
	int rc = meta_getattr(fs->meta, e->ino, &a);

	if (rc == -ENOENT || (rc == 0 && !S_ISREG(a.mode))) {
		log_warn("mount: write-back journal entry %016" PRIx64 " (inode %" PRIu64
			 ", %" PRIu64 " bytes at %" PRIu64 "): the file was removed; dropped",
			 e->jid, e->ino, e->len, e->off);
		journal_remove(fs->journal, e->jid, e->len);
		return 0;
	}
	if (rc < 0)
		return rc;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->ext.data = malloc(e->len))) {
		free(j);
		return -ENOMEM;
	}
	memcpy(j->ext.data, data, e->len);
	j->ext.off = e->off;
	j->ext.len = j->ext.cap = e->len;
	j->jid = e->jid;
	rc = file_open(fs, e->ino, &f);
	if (rc < 0) {
		free(j->ext.data);
		free(j);
		return rc;
	}
	pthread_mutex_lock(&f->lock);
	j->f = f;
	j->seq = ++f->next_seq;
	if (f->jobs_tail)
		f->jobs_tail->next_in_file = j;
	else
		f->jobs = j;
	f->jobs_tail = j;
	f->n_jobs++;
	f->n_wb++;
	if (e->write_ns > f->write_ns)
		f->write_ns = e->write_ns;
	pthread_mutex_unlock(&f->lock);
	__atomic_fetch_add(&fs->wb_jobs, 1, __ATOMIC_RELAXED);
	/* the job's reference is the open's */
	wb_queue_file(fs, f);
	return 0;
}

/* Opens the journal, replays what a crash left in it, starts the uploaders. */
static int start_writeback(struct kelp_fs *fs)
{
	char err[512];
	int damaged = 0, n;

	pthread_mutex_init(&fs->wb_lock, NULL);
	pthread_cond_init(&fs->wb_cond, NULL);
	fs->journal = journal_open(fs->opt.journal_dir, fs->opt.journal_bytes, err, sizeof(err));
	if (!fs->journal) {
		log_error("mount: -writeback: %s", err);
		return -EIO;
	}
	n = journal_replay(fs->journal, replay_entry, fs, &damaged);
	if (n < 0) {
		log_error("mount: -writeback: replaying the journal in %s failed: %s",
			  fs->opt.journal_dir, strerror(-n));
		return n;
	}
	if (n > 0 || damaged > 0)
		log_info("mount: write-back journal %s: %d entr%s (%" PRIu64
			 " bytes) replayed, uploading in the background; %d damaged",
			 fs->opt.journal_dir, n, n == 1 ? "y" : "ies", journal_bytes(fs->journal),
			 damaged);
	for (int i = 0; i < WB_WORKERS; i++)
		if (pthread_create(&fs->wb_threads[fs->n_wb_threads], NULL, wb_loop, fs) == 0)
			fs->n_wb_threads++;
	return fs->n_wb_threads > 0 ? 0 : -EAGAIN;
}

uint64_t fs_journal_drain(struct kelp_fs *fs, int timeout_ms)
{
	uint64_t until = monotonic_ns() + (uint64_t)timeout_ms * 1000000ull, left;

	if (!fs->journal)
		return 0;
	pthread_mutex_lock(&fs->wb_lock);
	fs->wb_draining = true; /* no lingering for batches to fill */
	pthread_cond_broadcast(&fs->wb_cond);
	pthread_mutex_unlock(&fs->wb_lock);
	while ((left = __atomic_load_n(&fs->wb_jobs, __ATOMIC_RELAXED)) > 0 &&
	       monotonic_ns() < until) {
		struct timespec ts = {0, 20000000};

		nanosleep(&ts, NULL);
	}
	return left;
}

/* Stops the uploaders (an upload under way finishes); what is left stays journaled. */
static void stop_writeback(struct kelp_fs *fs)
{
	if (!fs->journal)
		return;
	pthread_mutex_lock(&fs->wb_lock);
	fs->wb_stop = true;
	pthread_cond_broadcast(&fs->wb_cond);
	pthread_mutex_unlock(&fs->wb_lock);
	for (int i = 0; i < fs->n_wb_threads; i++)
		pthread_join(fs->wb_threads[i], NULL);
	fs->n_wb_threads = 0;
}

uint64_t file_changes(struct open_file *f, bool *pending)
{
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->changes;
	*pending = f->n_ext > 0 || f->jobs;
	pthread_mutex_unlock(&f->lock);
	return n;
}

int file_flush(struct kelp_fs *fs, struct open_file *f, bool durable)
{
	bool compact, lazy;
	int rc;

	if (fs->opt.writeback && !durable) {
		/* -writeback close: no network I/O, unless the journal refuses */
		pthread_mutex_lock(&f->lock);
		rc = file_stale(fs, f) ? stale_error(fs, f) : journal_pending(fs, f);
		if (rc == 1)
			rc = store_dirty(fs, f, false);
		pthread_mutex_unlock(&f->lock);
		return rc;
	}
	pthread_mutex_lock(&f->lock);
	rc = file_stale(fs, f) ? stale_error(fs, f) : store_dirty(fs, f, durable);
	compact = rc == 0 && compaction_due(f);
	pthread_mutex_unlock(&f->lock);
	if (compact && compact_chunks(fs, f) < 0) {
		log_warn("mount: compacting the chunk list of inode %" PRIu64 " failed; will retry",
			 f->ino);
		pthread_mutex_lock(&f->lock);
		f->unchecked++;
		pthread_mutex_unlock(&f->lock);
	}
	fs_kick_gc(fs);
	if (rc == 0 && durable)
		rc = sync_volumes(fs, f);
	pthread_mutex_lock(&f->lock);
	lazy = f->lazy_data;
	f->lazy_data = false;
	pthread_mutex_unlock(&f->lock);
	/* fsync: everything; close: the chunks committed lazily while writing, when no
	 * eager commit came after them (LMDB: never; its commits are synced every second) */
	if (rc == 0 && (durable || lazy))
		rc = meta_sync(fs->meta);
	if (rc < 0 && lazy) {
		pthread_mutex_lock(&f->lock);
		f->lazy_data = true;
		pthread_mutex_unlock(&f->lock);
	}
	return rc;
}

static int ensure_ext_cap(struct open_file *f)
{
	if (f->n_ext == f->cap_ext) {
		int cap = f->cap_ext ? f->cap_ext * 2 : 8;
		struct extent *p = realloc(f->ext, (size_t)cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		f->ext = p;
		f->cap_ext = cap;
	}
	return 0;
}

int file_write(struct kelp_fs *fs, struct open_file *f, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *src = buf;
	size_t chunk = fs->opt.chunk_size;
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	f->write_ns = meta_now_ns();
	f->changes++;
	/* A failed upload waits for the next flush: writes fail until then. */
	rc = file_stale(fs, f) ? stale_error(fs, f) : failed_rc(f);
	while (len > 0 && rc == 0) {
		struct extent *e = NULL;
		size_t n;
		int i;

		/* An extent containing off, or ending exactly at off with room left. */
		for (i = 0; i < f->n_ext; i++) {
			struct extent *x = &f->ext[i];

			if (off >= x->off && off <= x->off + x->len && off - x->off < chunk) {
				e = x;
				break;
			}
		}
		if (e) {
			size_t at = off - e->off;

			n = len < chunk - at ? len : chunk - at;
			/* It must not run into the next extent: that one goes to be stored. */
			if (i + 1 < f->n_ext && off + n > f->ext[i + 1].off) {
				if (!(rc = failed_rc(f)) &&
				    f->n_jobs - f->n_wb >= MAX_JOBS_PER_FILE)
					pthread_cond_wait(&f->cond, &f->lock); /* then look again */
				else if (rc == 0)
					rc = spill_extent(fs, f, i + 1, false);
				continue;
			}
			if (at + n > e->cap && (rc = extent_grow(fs, e, at + n)) < 0)
				break;
			memcpy(e->data + at, src, n);
			if (at + n > e->len)
				e->len = at + n;
			off += n;
			src += n;
			len -= n;
			if (e->len == chunk)
				rc = submit_extent(fs, f, e->off);
			continue;
		}
		/* A new extent: first any extent it would overlap goes to be stored. */
		n = len < chunk ? len : chunk;
		for (i = 0; i < f->n_ext; i++)
			if (f->ext[i].off < off + n && off < f->ext[i].off + f->ext[i].len)
				break;
		if (i < f->n_ext) {
			if (!(rc = failed_rc(f)) && f->n_jobs - f->n_wb >= MAX_JOBS_PER_FILE)
				pthread_cond_wait(&f->cond, &f->lock); /* then look again */
			else if (rc == 0)
				rc = spill_extent(fs, f, i, false);
			continue;
		}
		rc = ensure_ext_cap(f);
		if (rc < 0)
			break;
		for (i = 0; i < f->n_ext && f->ext[i].off < off; i++)
			;
		memmove(&f->ext[i + 1], &f->ext[i], (size_t)(f->n_ext - i) * sizeof(*f->ext));
		f->n_ext++;
		memset(&f->ext[i], 0, sizeof(f->ext[i]));
		f->ext[i].off = off;
		/* loop again: the extent now takes the bytes */
	}
	if (rc < 0 && !f->error)
		f->error = rc;
	pthread_mutex_unlock(&f->lock);
	return rc;
}

/* The end of f's bytes not yet in the metadata (buffered or uploading). f->lock held. */
static uint64_t pending_end(const struct open_file *f, uint64_t size)
{
	for (int i = 0; i < f->n_ext; i++)
		if (f->ext[i].off + f->ext[i].len > size)
			size = f->ext[i].off + f->ext[i].len;
	for (const struct job *j = f->jobs; j; j = j->next_in_file)
		if (j->ext.off + j->ext.len > size)
			size = j->ext.off + j->ext.len;
	return size;
}

int file_attr(struct kelp_fs *fs, struct open_file *f, struct meta_attr *a)
{
	int rc;

	/* The committed attributes and the pending extents from one moment: a commit
	 * moves bytes from one to the other under f->lock. */
	pthread_mutex_lock(&f->lock);
	rc = meta_getattr(fs->meta, f->ino, a);
	if (rc == 0) {
		a->size = pending_end(f, a->size);
		/* Buffered and uploading bytes count as stored (st_blocks): an overwrite of
		 * stored data may count twice until it is committed. */
		if (a->stored != META_STORED_UNKNOWN) {
			for (int i = 0; i < f->n_ext; i++)
				a->stored += f->ext[i].len;
			for (const struct job *j = f->jobs; j; j = j->next_in_file)
				a->stored += j->ext.len;
		}
		/* Writes not recorded yet: POSIX marks mtime and ctime at the write (the
		 * times of journaled ones were recorded when they were journaled). */
		bool unrecorded = f->n_ext > 0 || f->n_jobs > f->n_wb;

		if (unrecorded && f->write_ns > a->mtime_ns)
			a->mtime_ns = f->write_ns;
		if (unrecorded && f->write_ns > a->ctime_ns)
			a->ctime_ns = f->write_ns;
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

int file_setattr(struct kelp_fs *fs, struct open_file *f, const struct meta_attr *in,
		 unsigned valid, struct meta_attr *out)
{
	int rc;

	pthread_mutex_lock(&f->lock);
	if (file_stale(fs, f)) {
		rc = stale_error(fs, f);
		pthread_mutex_unlock(&f->lock);
		return rc;
	}
	if (valid & META_SET_SIZE) {
		f->changes++;
		/* Buffered bytes at or beyond the new size are dropped. */
		for (int i = 0; i < f->n_ext;) {
			struct extent *e = &f->ext[i];

			if (e->off >= in->size) {
				extent_free(fs, e);
				memmove(e, e + 1, (size_t)(f->n_ext - i - 1) * sizeof(*e));
				f->n_ext--;
				continue;
			}
			if (e->off + e->len > in->size)
				e->len = in->size - e->off;
			i++;
		}
	}
	/*
	 * What was written before is recorded first (its commit sets mtime, which must not
	 * override the times set here: cp -a, tar), and every upload in flight is
	 * committed, so the truncation cuts them too. f->lock is then held until the
	 * change is recorded: no commit slips in between. With -writeback, a change that
	 * keeps the size (utimes, chmod) only journals them: a journaled commit leaves the
	 * times alone and changes no attribute set here.
	 */
	if (fs->opt.writeback && !(valid & META_SET_SIZE)) {
		rc = journal_pending(fs, f);
		if (rc == 1)
			rc = commit_pending(fs, f);
	} else {
		rc = store_dirty(fs, f, false);
		if (rc == 0)
			rc = wait_jobs(f);
	}
	if (rc == 0)
		rc = meta_setattr(fs->meta, f->ino, in, valid, out);
	if (rc == 0 && out)
		out->size = pending_end(f, out->size);
	pthread_mutex_unlock(&f->lock);
	if (rc == 0 && (valid & META_SET_SIZE))
		fs_kick_gc(fs);
	return rc;
}

/*
 * Dirty extents inside [start, end) are dropped, those reaching into it from the left
 * cut at start (others are left to be uploaded: the metadata change cuts them after).
 * f->lock held.
 */
static void cut_dirty(struct kelp_fs *fs, struct open_file *f, uint64_t start, uint64_t end)
{
	for (int i = 0; i < f->n_ext;) {
		struct extent *e = &f->ext[i];

		if (e->off >= start && e->off + e->len <= end) {
			extent_free(fs, e);
			memmove(e, e + 1, (size_t)(f->n_ext - i - 1) * sizeof(*e));
			f->n_ext--;
			continue;
		}
		if (e->off < start && e->off + e->len > start && e->off + e->len <= end)
			e->len = start - e->off;
		i++;
	}
}

int file_fallocate(struct kelp_fs *fs, struct open_file *f, uint64_t off, uint64_t len, bool punch,
		   bool extend, struct meta_attr *out)
{
	uint64_t keep = 0; /* the size the pending writes made: a hole keeps it */
	int rc = 0;

	if (len == 0 || off > INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	pthread_mutex_lock(&f->lock);
	f->changes++;
	if (punch) {
		keep = pending_end(f, 0);
		/* As a truncate: the buffered bytes of the range go, the rest and every
		 * upload in flight is committed first, then the hole is recorded while
		 * f->lock is held (no commit lands in between). */
		cut_dirty(fs, f, off, off + len);
		rc = store_dirty(fs, f, false);
		if (rc == 0)
			rc = wait_jobs(f);
	}
	if (rc == 0)
		rc = meta_fallocate(fs->meta, f->ino, off, len, punch, extend, keep, out);
	if (rc == 0 && punch)
		note_pieces(f, -1);
	if (rc == 0 && out)
		out->size = pending_end(f, out->size);
	pthread_mutex_unlock(&f->lock);
	if (rc == 0 && punch)
		fs_kick_gc(fs);
	return rc;
}

/* The buffered and uploading writes of f are committed. f->lock held. */
static int commit_pending(struct kelp_fs *fs, struct open_file *f)
{
	int rc = store_dirty(fs, f, false);

	return rc == 0 ? wait_jobs(f) : rc;
}

int file_copy_range(struct kelp_fs *fs, struct open_file *in, uint64_t off_in,
		    struct open_file *out, uint64_t off_out, uint64_t len, uint64_t *copied,
		    struct meta_attr *attr)
{
	int rc = 0;

	*copied = 0;
	/* The source's writes are recorded first (its lock is not held with the
	 * destination's: two copies in opposite directions must not deadlock). */
	if (in != out) {
		pthread_mutex_lock(&in->lock);
		rc = commit_pending(fs, in);
		pthread_mutex_unlock(&in->lock);
		if (rc < 0)
			return rc;
	}
	pthread_mutex_lock(&out->lock);
	out->changes++;
	rc = commit_pending(fs, out);
	if (rc == 0)
		rc = meta_copy_range(fs->meta, in->ino, off_in, out->ino, off_out, len, copied,
				     attr);
	if (rc == 0)
		note_pieces(out, -1);
	if (rc == 0 && attr)
		attr->size = pending_end(out, attr->size);
	pthread_mutex_unlock(&out->lock);
	if (rc == 0)
		fs_kick_gc(fs);
	return rc;
}

struct span {
	uint64_t s, e;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	return x->s < y->s ? -1 : x->s > y->s;
}

int file_lseek(struct kelp_fs *fs, struct open_file *f, uint64_t off, bool data, uint64_t *pos)
{
	struct meta_attr a;
	struct meta_chunk *chunks = NULL;
	struct span *sp = NULL;
	uint64_t size;
	int n = 0, ns = 0, cap, rc;

	pthread_mutex_lock(&f->lock);
	rc = meta_getattr(fs->meta, f->ino, &a);
	size = rc == 0 ? pending_end(f, a.size) : 0;
	if (rc == 0 && off >= size)
		rc = -ENXIO;
	if (rc == 0) {
		n = meta_read_chunks(fs->meta, f->ino, off, UINT64_MAX, &chunks);
		if (n < 0)
			rc = n;
	}
	if (rc == 0) {
		cap = n + f->n_ext + f->n_jobs;
		sp = malloc((size_t)(cap ? cap : 1) * sizeof(*sp));
		if (!sp)
			rc = -ENOMEM;
	}
	/* Committed intervals, uploading and buffered bytes: all data. */
	for (int i = 0; rc == 0 && i < n; i++)
		sp[ns++] = (struct span){chunks[i].offset, chunks[i].offset + chunks[i].length};
	for (const struct job *j = f->jobs; rc == 0 && j; j = j->next_in_file)
		sp[ns++] = (struct span){j->ext.off, j->ext.off + j->ext.len};
	for (int i = 0; rc == 0 && i < f->n_ext; i++)
		sp[ns++] = (struct span){f->ext[i].off, f->ext[i].off + f->ext[i].len};
	pthread_mutex_unlock(&f->lock);
	if (n > 0)
		free(chunks);
	if (rc < 0) {
		free(sp);
		return rc;
	}
	qsort(sp, (size_t)ns, sizeof(*sp), span_cmp);
	if (data) {
		rc = -ENXIO; /* no data at or after off */
		for (int i = 0; i < ns; i++) {
			if (sp[i].e > off && sp[i].s < size) {
				*pos = sp[i].s > off ? sp[i].s : off;
				rc = 0;
				break;
			}
		}
	} else {
		uint64_t at = off; /* the end of the data run off is in */

		for (int i = 0; i < ns && sp[i].s <= at; i++)
			if (sp[i].e > at)
				at = sp[i].e;
		*pos = at < size ? at : size; /* the end of the file is a hole */
	}
	free(sp);
	return rc;
}

/* ---------------------------------------------------------------- read */

#define DISK_QUEUE_MAX 16

/* A chunk to copy into the disk cache; holds a reference on the memory cache entry. */
struct disk_job {
	char fid[META_FID_MAX];
	const struct chunk_cache_entry *e;
	struct disk_job *next;
};

/*
 * Hands a fetched chunk to the disk-cache writer, so reads do not wait for the copy;
 * when the writer is behind, the chunk is simply not cached on disk.
 */
static void queue_disk_write(struct kelp_fs *fs, const char *fid, const struct chunk_cache_entry *e)
{
	struct disk_job *j;

	pthread_mutex_lock(&fs->disk_lock);
	if (!fs->disk_started || fs->n_disk_queue >= DISK_QUEUE_MAX ||
	    !(j = calloc(1, sizeof(*j)))) {
		pthread_mutex_unlock(&fs->disk_lock);
		return;
	}
	snprintf(j->fid, sizeof(j->fid), "%s", fid);
	chunk_cache_ref(fs->cache, e); /* held even when the memory cache is off */
	j->e = e;
	j->next = fs->disk_queue;
	fs->disk_queue = j;
	fs->n_disk_queue++;
	pthread_cond_signal(&fs->disk_cond);
	pthread_mutex_unlock(&fs->disk_lock);
}

#define WRITE_CACHE_MAX (1024 * 1024)

/*
 * A small blob just uploaded goes into the memory cache as if it had been read:
 * reading back what was just written here (grep, a compiler, a checkout, tar's verify)
 * needs no fetch from the cluster. Blobs are immutable, so the copy stays right. Bigger
 * ones (a stream of 4 MiB chunks) are not kept: a stream is seldom read back at once and
 * would push everything else out. Nor does the disk cache take them (only what is read):
 * writing a cache file per small file cost `tar -xf` a quarter more time on two cores
 * (docs/benchmarks.md).
 */
static void cache_written(struct kelp_fs *fs, const struct extent *e, const char *fid)
{
	uint8_t *copy;

	if (e->len == 0 || e->len > WRITE_CACHE_MAX || e->len > fs->opt.cache_bytes / 4 ||
	    !(copy = malloc(e->len)))
		return;
	memcpy(copy, e->data, e->len);
	chunk_cache_put(fs->cache, chunk_cache_insert(fs->cache, fid, copy, e->len));
}

static void *disk_writer(void *arg)
{
	struct kelp_fs *fs = arg;

	pthread_mutex_lock(&fs->disk_lock);
	for (;;) {
		struct disk_job *j;

		while (!fs->disk_queue && !fs->stopping)
			pthread_cond_wait(&fs->disk_cond, &fs->disk_lock);
		j = fs->disk_queue;
		if (!j)
			break;
		fs->disk_queue = j->next;
		fs->n_disk_queue--;
		pthread_mutex_unlock(&fs->disk_lock);
		disk_cache_put(fs->disk, j->fid, j->e->data, j->e->len);
		chunk_cache_put(fs->cache, j->e);
		free(j);
		pthread_mutex_lock(&fs->disk_lock);
	}
	pthread_mutex_unlock(&fs->disk_lock);
	return NULL;
}

static int fetching_index(struct kelp_fs *fs, const char *fid)
{
	for (int i = 0; i < fs->n_fetching; i++)
		if (!strcmp(fs->fetching[i], fid))
			return i;
	return -1;
}

/*
 * The blob of a chunk, from the cache or the cluster. Readers of a blob already being
 * fetched wait for that fetch instead of starting their own (sequential reads hit one
 * 4 MiB chunk from several FUSE threads at once).
 */
static const struct chunk_cache_entry *fetch_blob(struct kelp_fs *fs, const char *fid, bool to_disk)
{
	const struct chunk_cache_entry *e;
	struct kelp_client *cl;
	uint8_t *data;
	size_t n;
	bool mine = false, disk_hit;

	pthread_mutex_lock(&fs->fetch_lock);
	for (;;) {
		e = chunk_cache_get(fs->cache, fid);
		if (e || fetching_index(fs, fid) < 0)
			break;
		pthread_cond_wait(&fs->fetch_cond, &fs->fetch_lock);
	}
	if (!e && fs->n_fetching < 32) {
		snprintf(fs->fetching[fs->n_fetching++], META_FID_MAX, "%s", fid);
		mine = true;
	}
	pthread_mutex_unlock(&fs->fetch_lock);
	if (fs->metrics)
		metric_inc(e ? fs->metrics->mem_hits : fs->metrics->mem_misses);
	if (e)
		return e;
	cl = client_of(fs);
	disk_hit = fs->disk && disk_cache_get(fs->disk, fid, &data, &n) == 0;
	if (fs->disk && fs->metrics)
		metric_inc(disk_hit ? fs->metrics->disk_hits : fs->metrics->disk_misses);
	if (disk_hit) {
		e = chunk_cache_insert(fs->cache, fid, data, n);
	} else if (cl && kelp_client_read(cl, fid, &data, &n, NULL) == 0) {
		e = chunk_cache_insert(fs->cache, fid, data, n);
		if (e && fs->disk && to_disk)
			queue_disk_write(fs, fid, e);
	} else {
		log_error("mount: reading chunk %s failed: %s", fid,
			  cl ? kelp_client_error(cl) : "no client");
	}
	if (mine) {
		pthread_mutex_lock(&fs->fetch_lock);
		int i = fetching_index(fs, fid);

		if (i >= 0)
			memcpy(fs->fetching[i], fs->fetching[--fs->n_fetching], META_FID_MAX);
		pthread_cond_broadcast(&fs->fetch_cond);
		pthread_mutex_unlock(&fs->fetch_lock);
	}
	return e;
}

int fs_read_blob_range(struct kelp_fs *fs, const struct meta_chunk *c, uint64_t from, uint64_t len,
		       uint8_t *out)
{
	const struct chunk_cache_entry *e = fetch_blob(fs, c->fid, true);
	uint64_t at = c->blob_offset + from;

	if (!e)
		return -EIO;
	if (at + len > e->len) {
		/* The blob is shorter than the interval says: a damaged chunk list. */
		log_error("mount: chunk %s has %zu bytes, the file wants %" PRIu64, c->fid, e->len,
			  at + len);
		chunk_cache_put(fs->cache, e);
		return -EIO;
	}
	memcpy(out, e->data + at, len);
	chunk_cache_put(fs->cache, e);
	return 0;
}

#define READAHEAD_CHUNKS 2
#define RA_QUEUE	 8 /* = the size of kelp_fs.ra_fids */

/* Fetches queued chunks into the caches (fetch_blob: readers of them wait for it). */
static void *readahead_loop(void *arg)
{
	struct kelp_fs *fs = arg;

	pthread_mutex_lock(&fs->ra_lock);
	for (;;) {
		char fid[META_FID_MAX];
		unsigned g;

		while (fs->n_ra == 0 && !fs->stopping)
			pthread_cond_wait(&fs->ra_cond, &fs->ra_lock);
		if (fs->n_ra == 0)
			break;
		fs->n_ra--;
		memcpy(fid, fs->ra_fids[fs->n_ra], sizeof(fid));
		g = fs->ra_guard[fs->n_ra];
		pthread_mutex_unlock(&fs->ra_lock);
		/* Streamed data is read once: not worth a disk-cache write competing with
		 * the reads (chunks a reader asks for itself are cached on disk). */
		chunk_cache_put(fs->cache, fetch_blob(fs, fid, false));
		guard_exit(fs, g);
		pthread_mutex_lock(&fs->ra_lock);
	}
	pthread_mutex_unlock(&fs->ra_lock);
	return NULL;
}

/*
 * A reader in the second half of a chunk will want the next ones: queue the chunks
 * after `end` (at most READAHEAD_CHUNKS) unless cached or already queued. The caller
 * is inside read guard g; each queued chunk holds g too until it is fetched, since
 * its blob was resolved under it. known (n_known >= 0): those chunks, resolved by the
 * caller from its chunk map; otherwise they are read from meta.
 */
static void readahead(struct kelp_fs *fs, uint64_t ino, uint64_t end, uint64_t file_size,
		      unsigned g, const struct meta_chunk *known, int n_known)
{
	struct meta_chunk *next = NULL;
	int n;

	if (fs->n_ra_threads == 0 || end >= file_size)
		return;
	if (n_known >= 0)
		n = n_known;
	else
		n = meta_read_chunks(fs->meta, ino, end, fs->opt.chunk_size * READAHEAD_CHUNKS,
				     &next);
	for (int i = 0; i < n; i++) {
		const struct meta_chunk *c = n_known >= 0 ? &known[i] : &next[i];
		const struct chunk_cache_entry *e = chunk_cache_get(fs->cache, c->fid);
		bool queued = false;

		if (e) {
			chunk_cache_put(fs->cache, e);
			continue;
		}
		pthread_mutex_lock(&fs->ra_lock);
		for (int k = 0; k < fs->n_ra && !queued; k++)
			queued = !strcmp(fs->ra_fids[k], c->fid);
		if (!queued && fs->n_ra < RA_QUEUE) {
			guard_hold(fs, g);
			fs->ra_guard[fs->n_ra] = g;
			snprintf(fs->ra_fids[fs->n_ra++], META_FID_MAX, "%s", c->fid);
			pthread_cond_signal(&fs->ra_cond);
		}
		pthread_mutex_unlock(&fs->ra_lock);
	}
	if (n > 0 && n_known < 0)
		free(next);
}

/*
 * Chunk maps. With a shared engine each read of a file's size and intervals is a round
 * trip to the database (there were three per read call: the size, the intervals, the
 * readahead's intervals), so an open file keeps them (struct read_map, read in one
 * round trip by meta_read_map, MAP_CHUNKS intervals from the read on) and reads are
 * served from it while all of these hold:
 *  - it was read after the file's last open on this mount (close-to-open: an open()
 *    after another mount's close() reads what that close stored; file_open drops it);
 *  - no transaction of this mount changed the file since (meta_change_stamp: its
 *    writes, truncates, copies, compaction, from any thread; and any lock taken, so a
 *    reader under a lock sees what the previous holder wrote under it);
 *  - it is younger than map_ttl_ns: -attrCacheSec, at most 1 s and half -gcGraceSec, so
 *    another mount's changes to a file held open here show within the attribute cache
 *    time (as stat's do), and a blob another mount's write replaced is still in the
 *    cluster when fetched (that mount's gc waits -gcGraceSec);
 *  - the read lies in the window it holds ([lo, hi)) and below the size it holds (a
 *    read reaching the cached end reads again: growth is seen at once).
 * The map is looked at inside the read guard: a blob that leaves the file by a
 * transaction of this mount changes the stamp before that transaction commits, hence
 * before the gc thread can take the blob, so a reader either sees the change or
 * entered the guard early enough to be waited for. A map read while such a transaction
 * commits serves that one read only. With LMDB (reads cost microseconds and no other
 * mount changes the file) there is no map: each read asks meta, as before.
 */
#define MAP_CHUNKS     64
#define MAP_TTL_MAX_NS 1000000000ull

static uint64_t map_ttl_ns(struct kelp_fs *fs)
{
	uint64_t ttl = MAP_TTL_MAX_NS, grace;

	if (!meta_shared(fs->meta) || !(fs->opt.attr_timeout > 0))
		return 0;
	if (fs->opt.attr_timeout < 1)
		ttl = (uint64_t)(fs->opt.attr_timeout * 1e9);
	grace = (uint64_t)meta_gc_grace_ms(fs->meta) * 1000000ull / 2;
	return grace < ttl ? grace : ttl;
}

/*
 * The kernel asks for security.capability before every write to a file (to remove it,
 * as a write must): an open file remembers that it has none while its change stamp
 * holds (this mount's setxattr and removexattr change it) and, with a shared engine,
 * no longer than its chunk map is kept (map_ttl_ns: another mount's setxattr shows
 * within the attribute cache time, as its other changes do). Dropped at every open.
 */
bool file_no_capability(struct kelp_fs *fs, uint64_t ino)
{
	struct open_file *f = file_find(fs, ino);
	uint64_t stamp;
	bool yes = false;

	if (!f)
		return false;
	pthread_mutex_lock(&f->lock);
	if (f->nocap.known && meta_change_stamp(fs->meta, ino, &stamp) && stamp == f->nocap.stamp)
		yes = !meta_shared(fs->meta) || monotonic_ns() - f->nocap.ns < map_ttl_ns(fs);
	pthread_mutex_unlock(&f->lock);
	file_put(fs, f);
	return yes;
}

/* Records what was found (stamp and asked_ns as file_note_no_capability's); plain only
 * when the mode was read too, so that its time is never extended without a look. */
static void note_privs(struct open_file *f, uint64_t stamp, uint64_t asked_ns, bool plain)
{
	pthread_mutex_lock(&f->lock);
	f->nocap.known = true;
	f->nocap.plain = plain;
	f->nocap.stamp = stamp;
	f->nocap.ns = asked_ns;
	pthread_mutex_unlock(&f->lock);
}

void file_note_no_capability(struct kelp_fs *fs, uint64_t ino, uint64_t stamp, uint64_t asked_ns)
{
	struct open_file *f = file_find(fs, ino);

	if (!f)
		return;
	note_privs(f, stamp, asked_ns, false);
	file_put(fs, f);
}

/*
 * With FUSE_HANDLE_KILLPRIV_V2 the kernel asks for security.capability once per inode
 * (until its attributes are refreshed) instead of before every write, and leaves the
 * setuid and setgid bits to us: a write removes the capability, and clears setuid and
 * setgid (Linux's rule, META_SET_KILL_SGID) when its caller lacks CAP_FSETID (the
 * kernel's FUSE_WRITE_KILL_SUIDGID). Known plain (no capability, neither bit) as
 * file_no_capability knows "no capability": nothing asked then.
 */
int file_kill_privs(struct kelp_fs *fs, struct open_file *f, const struct kill_caller *who)
{
	struct meta_attr a;
	uint64_t stamp, asked;
	bool stable, plain;
	int rc;

	pthread_mutex_lock(&f->lock);
	plain = f->nocap.known && f->nocap.plain && meta_change_stamp(fs->meta, f->ino, &stamp) &&
		stamp == f->nocap.stamp &&
		(!meta_shared(fs->meta) || monotonic_ns() - f->nocap.ns < map_ttl_ns(fs));
	pthread_mutex_unlock(&f->lock);
	if (plain)
		return 0;
	stable = meta_change_stamp(fs->meta, f->ino, &stamp);
	asked = monotonic_ns();
	rc = meta_getattr(fs->meta, f->ino, &a);
	if (rc < 0)
		return rc;
	if (!(a.flags & META_F_NO_XATTRS)) {
		rc = meta_getxattr(fs->meta, f->ino, "security.capability", NULL, 0);
		if (rc >= 0) {
			rc = meta_removexattr(fs->meta, f->ino, "security.capability");
			stable = false;
		}
		if (rc < 0 && rc != -ENODATA)
			return rc;
	}
	if (who && (a.mode & (S_ISUID | S_ISGID))) {
		struct meta_attr in = {0};
		bool sgid_too =
		    (a.mode & (S_ISGID | S_IXGRP)) == S_ISGID && !who->in_group(who->arg, a.gid);

		rc = meta_setattr(fs->meta, f->ino, &in,
				  META_SET_KILL_SUIDGID | (sgid_too ? META_SET_KILL_SGID : 0), &a);
		if (rc < 0)
			return rc;
		stable = false;
	}
	if (stable)
		note_privs(f, stamp, asked, !(a.mode & (S_ISUID | S_ISGID)));
	return 0;
}

/* What a read takes from the metadata: the committed attributes and where the
 * intervals come from (map NULL: meta, for each call). */
struct committed {
	struct meta_attr a;
	const struct read_map *map;
	struct read_map once; /* read while the file was being changed: this read only */
};

static void committed_free(struct committed *c)
{
	free(c->once.chunks);
}

/* The committed attributes for a read of [off, off+len). f->lock held, inside the read
 * guard. */
static int committed_attr(struct kelp_fs *fs, struct open_file *f, uint64_t off, size_t len,
			  struct committed *c)
{
	uint64_t ttl = map_ttl_ns(fs), end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
	uint64_t stamp, now;
	struct read_map *m = &f->map, fresh;
	bool ok;
	int n;

	memset(c, 0, sizeof(*c));
	if (!ttl)
		return meta_getattr(fs->meta, f->ino, &c->a);
	ok = meta_change_stamp(fs->meta, f->ino, &stamp);
	now = monotonic_ns();
	if (!m->valid || !ok || stamp != m->stamp || now - m->read_ns >= ttl || off < m->lo ||
	    end > m->hi || end > m->attr.size) {
		memset(&fresh, 0, sizeof(fresh));
		n = meta_read_map(fs->meta, f->ino, off, MAP_CHUNKS, &fresh.attr, &fresh.chunks,
				  &fresh.hi);
		if (n < 0)
			return n;
		fresh.n = n;
		fresh.lo = off;
		fresh.read_ns = now;
		fresh.stamp = stamp;
		fresh.valid = ok;
		if (ok) {
			map_drop(f);
			*m = fresh;
		} else {
			c->once = fresh;
			m = &c->once;
		}
	}
	c->map = m;
	c->a = m->attr;
	return 0;
}

/* The intervals of a map overlapping [s, e), copied (caller frees). */
static int map_slice(const struct read_map *m, uint64_t s, uint64_t e, struct meta_chunk **out)
{
	int first = -1, n = 0;

	*out = NULL;
	for (int i = 0; i < m->n; i++) {
		if (m->chunks[i].offset < e && m->chunks[i].offset + m->chunks[i].length > s) {
			if (first < 0)
				first = i;
			n++;
		}
	}
	if (n == 0)
		return 0;
	*out = malloc((size_t)n * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	memcpy(*out, &m->chunks[first], (size_t)n * sizeof(**out));
	return n;
}

/* The committed intervals overlapping [off, off+len) (caller frees), after
 * committed_attr for a range holding this one. From meta when the map's window does
 * not hold them all (a read wider than MAP_CHUNKS intervals). f->lock held. */
static int committed_chunks(struct kelp_fs *fs, struct open_file *f, const struct committed *c,
			    uint64_t off, size_t len, struct meta_chunk **out)
{
	if (!c->map || off < c->map->lo || off + len > c->map->hi)
		return meta_read_chunks(fs->meta, f->ino, off, len, out);
	return map_slice(c->map, off, off + len, out);
}

/* The chunks readahead wants after `from`, from the map when it holds them (caller
 * frees); -1: not known here (readahead reads them from meta). */
static int map_ahead(struct kelp_fs *fs, const struct committed *c, uint64_t from,
		     struct meta_chunk **out)
{
	uint64_t to = from + fs->opt.chunk_size * READAHEAD_CHUNKS;

	*out = NULL;
	if (!c->map)
		return -1;
	if (to > c->a.size)
		to = c->a.size;
	if (from >= to)
		return 0;
	if (from < c->map->lo || to > c->map->hi)
		return -1;
	return map_slice(c->map, from, to, out);
}

/* Bytes of a read not yet in the metadata, copied out under f->lock. */
struct overlay {
	uint8_t *data; /* the read's length; only the pieces' ranges are meaningful */
	struct {
		uint64_t s, e;
	} * pieces;
	int n, cap;
};

/* Copies the part of x inside [off, off+len) into o (a later piece overrides an
 * earlier one where they overlap, as the newer write does). */
static int overlay_add(struct overlay *o, const struct extent *x, uint64_t off, size_t len)
{
	uint64_t s = x->off > off ? x->off : off;
	uint64_t e = x->off + x->len < off + len ? x->off + x->len : off + len;

	if (s >= e)
		return 0;
	if (!o->data && !(o->data = malloc(len)))
		return -ENOMEM;
	if (o->n == o->cap) {
		int cap = o->cap ? o->cap * 2 : 8;
		void *p = realloc(o->pieces, (size_t)cap * sizeof(*o->pieces));

		if (!p)
			return -ENOMEM;
		o->pieces = p;
		o->cap = cap;
	}
	o->pieces[o->n].s = s;
	o->pieces[o->n].e = e;
	o->n++;
	memcpy(o->data + (s - off), x->data + (s - x->off), e - s);
	return 0;
}

int file_read_direct(struct kelp_fs *fs, struct open_file *f, uint64_t off, size_t len,
		     const struct chunk_cache_entry **entry, const uint8_t **data, size_t *got)
{
	struct meta_chunk *chunks = NULL, *ahead = NULL;
	const struct chunk_cache_entry *e;
	struct committed c;
	uint64_t at;
	unsigned g;
	int n = 0, n_ahead = -1, rc;

	g = guard_enter(fs);
	pthread_mutex_lock(&f->lock);
	rc = committed_attr(fs, f, off, len, &c);
	/* Bytes not yet committed (or a read at or past the end): file_read's business. */
	if (rc < 0 || f->jobs || f->n_ext > 0 || off >= c.a.size || len == 0) {
		pthread_mutex_unlock(&f->lock);
		committed_free(&c);
		guard_exit(fs, g);
		return rc < 0 ? rc : 0;
	}
	if (len > c.a.size - off)
		len = (size_t)(c.a.size - off);
	n = committed_chunks(fs, f, &c, off, len, &chunks);
	if (n == 1 && off + len > chunks[0].offset + chunks[0].length / 2)
		n_ahead = map_ahead(fs, &c, chunks[0].offset + chunks[0].length, &ahead);
	pthread_mutex_unlock(&f->lock);
	rc = 0;
	if (n == 1 && chunks[0].offset <= off && chunks[0].offset + chunks[0].length >= off + len) {
		e = fetch_blob(fs, chunks[0].fid, true);
		at = chunks[0].blob_offset + (off - chunks[0].offset);
		if (!e) {
			rc = -EIO;
		} else if (at + len > e->len) {
			log_error("mount: chunk %s has %zu bytes, the file wants %" PRIu64,
				  chunks[0].fid, e->len, at + len);
			chunk_cache_put(fs->cache, e);
			rc = -EIO;
		} else {
			*entry = e;
			*data = e->data + at;
			*got = len;
			rc = 1;
			if (off + len > chunks[0].offset + chunks[0].length / 2)
				readahead(fs, f->ino, chunks[0].offset + chunks[0].length, c.a.size,
					  g, ahead, n_ahead);
		}
	}
	if (n > 0)
		free(chunks);
	free(ahead);
	committed_free(&c);
	guard_exit(fs, g);
	return rc;
}

/*
 * Visibility. A byte a write() returned for is, at every moment, in exactly one of:
 *   1. a dirty extent of f (f->ext), where later writes may still change it;
 *   2. a job (f->jobs): an immutable extent being uploaded, or uploaded and waiting
 *      for an older job to commit first; with -writeback also a journaled job (its
 *      bytes in memory and in a journal entry on the local disk), waiting for an
 *      uploader, after the close and across a crash (replayed into a job at start);
 *   3. the metadata: a committed interval pointing at a blob (and the size).
 * It moves 1 -> 2 and 2 -> 3 only under f->lock, and 2 -> 3 in the same critical
 * section as the transaction that records it (and the removal of its journal entry).
 * A journaled job keeps its open file in the table of open files (a reference), so a
 * reader after the close, in any process, finds it there. A reader therefore takes the committed
 * size and intervals and copies the pending bytes under f->lock, in one snapshot, then
 * drops the lock to fetch blobs: the fetch cannot miss a byte, and a blob it resolved
 * cannot be deleted under it (the read guard holds gc back until every reader that
 * might have resolved a superseded blob has finished).
 */
int file_read(struct kelp_fs *fs, struct open_file *f, uint64_t off, size_t len, uint8_t *buf,
	      size_t *got)
{
	struct overlay o = {0};
	struct committed c;
	struct meta_chunk *chunks = NULL, *ahead = NULL;
	uint64_t size;
	unsigned g;
	int n = 0, n_ahead = -1, rc;

	*got = 0;
	memset(&c, 0, sizeof(c));
	g = guard_enter(fs);
	pthread_mutex_lock(&f->lock);
	rc = file_stale(fs, f) ? stale_error(fs, f) : committed_attr(fs, f, off, len, &c);
	if (rc < 0) {
		pthread_mutex_unlock(&f->lock);
		goto out;
	}
	size = pending_end(f, c.a.size);
	if (off >= size) {
		pthread_mutex_unlock(&f->lock);
		goto out;
	}
	if (len > size - off)
		len = (size_t)(size - off);
	n = committed_chunks(fs, f, &c, off, len, &chunks);
	if (n < 0)
		rc = n;
	if (n > 0 && off + len > chunks[n - 1].offset + chunks[n - 1].length / 2)
		n_ahead = map_ahead(fs, &c, chunks[n - 1].offset + chunks[n - 1].length, &ahead);
	/* Uploading chunks, oldest first, then the dirty extents on top. */
	for (const struct job *j = f->jobs; rc == 0 && j; j = j->next_in_file)
		rc = overlay_add(&o, &j->ext, off, len);
	for (int i = 0; rc == 0 && i < f->n_ext; i++)
		rc = overlay_add(&o, &f->ext[i], off, len);
	pthread_mutex_unlock(&f->lock);
	if (rc < 0)
		goto out;

	memset(buf, 0, len); /* holes */
	for (int i = 0; i < n && rc == 0; i++) {
		uint64_t s = chunks[i].offset > off ? chunks[i].offset : off;
		uint64_t e = chunks[i].offset + chunks[i].length;

		if (e > off + len)
			e = off + len;
		if (s < e)
			rc = fs_read_blob_range(fs, &chunks[i], s - chunks[i].offset, e - s,
						buf + (s - off));
	}
	for (int i = 0; rc == 0 && i < o.n; i++)
		memcpy(buf + (o.pieces[i].s - off), o.data + (o.pieces[i].s - off),
		       o.pieces[i].e - o.pieces[i].s);
	if (rc == 0 && n > 0) {
		const struct meta_chunk *last = &chunks[n - 1];

		if (off + len > last->offset + last->length / 2)
			readahead(fs, f->ino, last->offset + last->length, size, g, ahead, n_ahead);
	}
	if (rc == 0)
		*got = len;
out:
	if (n > 0)
		free(chunks);
	free(ahead);
	committed_free(&c);
	free(o.data);
	free(o.pieces);
	guard_exit(fs, g);
	return rc;
}

void fs_flush_all(struct kelp_fs *fs)
{
	struct open_file **list = NULL;
	int n = 0, cap = 0;

	pthread_mutex_lock(&fs->files_lock);
	for (size_t b = 0; b < FILE_BUCKETS; b++) {
		for (struct open_file *f = fs->files[b]; f; f = f->next) {
			if (n == cap) {
				struct open_file **p;
				int c = cap ? cap * 2 : 64;

				p = realloc(list, (size_t)c * sizeof(*p));
				if (!p)
					continue; /* out of memory: those files stay as they are */
				list = p;
				cap = c;
			}
			f->refs++;
			list[n++] = f;
		}
	}
	pthread_mutex_unlock(&fs->files_lock);
	for (int i = 0; i < n; i++) {
		/* -writeback: journaled (fs_journal_drain then uploads what it can) */
		if (file_flush(fs, list[i], !fs->opt.writeback) < 0)
			log_error("mount: could not store the unflushed data of inode %" PRIu64,
				  list[i]->ino);
		file_put(fs, list[i]);
	}
	free(list);
}

/* ---------------------------------------------------------------- gc and capacity */

/*
 * Deletes queued blobs in the cluster, and syncs LMDB once a second (commits are not
 * synced one by one, meta.h). Woken by fs_kick_gc only when something was queued.
 */
static void *gc_loop(void *arg)
{
	struct kelp_fs *fs = arg;
	uint64_t last_sync = 0;

	pthread_mutex_lock(&fs->gc_lock);
	while (!fs->stopping) {
		char fids[64][META_FID_MAX];
		uint64_t seqs[64], now = monotonic_ns();
		struct timespec ts;
		int n;

		if (fs->n_unholds > 0) {
			struct meta_hold h[64];
			bool may_free[64];
			int nh = fs->n_unholds;

			memcpy(h, fs->unholds, (size_t)nh * sizeof(h[0]));
			fs->n_unholds = 0;
			pthread_mutex_unlock(&fs->gc_lock);
			/* An unlinked file the kernel still knows (a lookup it has not forgotten,
			 * an O_PATH descriptor) is freed at its forget, not here. */
			pthread_mutex_lock(&fs->lookups_lock);
			for (int i = 0; i < nh; i++)
				may_free[i] = inomap_get(&fs->lookups, h[i].ino) == 0;
			pthread_mutex_unlock(&fs->lookups_lock);
			if (meta_unhold_many(fs->meta, h, may_free, nh) < 0)
				log_warn(
				    "mount: dropping the holds of %d closed file(s) failed (they "
				    "go with this mount's session)",
				    nh);
			/* A forget that came while that transaction ran found the hold still
			 * there and freed nothing: look again now that it is gone. */
			for (int i = 0; i < nh; i++) {
				bool forgotten;

				if (may_free[i])
					continue;
				pthread_mutex_lock(&fs->lookups_lock);
				forgotten = inomap_get(&fs->lookups, h[i].ino) == 0;
				pthread_mutex_unlock(&fs->lookups_lock);
				if (forgotten && !file_busy(fs, h[i].ino))
					meta_release_inode(fs->meta, h[i].ino);
			}
		} else {
			pthread_mutex_unlock(&fs->gc_lock);
		}
		if (now - last_sync >= 1000000000ull) {
			meta_sync(fs->meta);
			last_sync = now;
		}
		/* Seen before taking: what is queued after this wakes us again. */
		__atomic_store_n(&fs->gc_seen, meta_gc_generation(fs->meta), __ATOMIC_RELEASE);
		n = meta_gc_take(fs->meta, 64, fids, seqs);
		/* No reader that might still fetch them: see the read guard. */
		if (n > 0 && !gc_wait_readers(fs, &last_sync))
			n = 0; /* stopping: they stay queued for the next start */
		/* What removed their last reference (this mount's or another's, committed
		 * lazily, or LMDB's unsynced commit) is made durable before they go: a crash
		 * must not bring back a file whose blobs are deleted. */
		if (n > 0 && meta_sync_all(fs->meta) < 0) {
			log_warn(
			    "mount: cannot flush the metadata before deleting chunks; will retry");
			n = 0;
		} else if (n > 0) {
			last_sync = monotonic_ns();
		}
		int done = 0; /* seqs[0..done) are deleted: one transaction records them */

		for (int i = 0; i < n; i++) {
			struct kelp_client *cl = client_of(fs);
			int rc = cl ? kelp_client_delete(cl, fids[i], NULL, NULL) : -ENOMEM;

			chunk_cache_forget(fs->cache, fids[i]);
			if (fs->disk)
				disk_cache_forget(fs->disk, fids[i]);
			if (rc == 0 || rc == -ENOENT || rc == -EINVAL) {
				done++;
			} else {
				log_warn("mount: cannot delete chunk %s yet (%s); will retry",
					 fids[i], cl ? kelp_client_error(cl) : "no client");
				n = 0; /* the cluster is away: wait */
				break;
			}
		}
		meta_gc_done_n(fs->meta, seqs, done);
		pthread_mutex_lock(&fs->gc_lock);
		if (n == 64)
			continue; /* more waiting */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (!fs->stopping)
			pthread_cond_timedwait(&fs->gc_cond, &fs->gc_lock, &ts);
	}
	pthread_mutex_unlock(&fs->gc_lock);
	return NULL;
}

void fs_kick_gc(struct kelp_fs *fs)
{
	if (meta_gc_generation(fs->meta) == __atomic_load_n(&fs->gc_seen, __ATOMIC_ACQUIRE))
		return; /* nothing new queued: no wake-up for every write */
	pthread_mutex_lock(&fs->gc_lock);
	pthread_cond_signal(&fs->gc_cond);
	pthread_mutex_unlock(&fs->gc_lock);
}

void fs_capacity(struct kelp_fs *fs, uint64_t *total, uint64_t *free_bytes, uint64_t *used)
{
	uint64_t now = monotonic_ns();

	pthread_mutex_lock(&fs->statfs_lock);
	if (fs->statfs_at_ns == 0 || now - fs->statfs_at_ns > 10000000000ull) {
		struct kelp_client *cl = client_of(fs);
		char *body = NULL;
		size_t len;
		long status = 0;

		fs->statfs_at_ns = now;
		if (cl &&
		    kelp_client_master_get(cl, "/dir/status", false, &status, &body, &len, NULL) ==
			0 &&
		    status == 200) {
			json_t *j = json_loads(body, 0, NULL);
			json_t *t = json_object_get(j, "Topology");
			uint64_t disk =
			    (uint64_t)json_integer_value(json_object_get(t, "DiskTotal"));

			fs->used_bytes =
			    (uint64_t)json_integer_value(json_object_get(t, "VolumeBytes"));
			if (disk > 0) {
				/* The servers' real disks (their heartbeats report them). */
				fs->total_bytes = disk;
				fs->free_bytes =
				    (uint64_t)json_integer_value(json_object_get(t, "DiskFree"));
			} else {
				/* Servers that do not report their disks (SeaweedFS's): volume
				 * slots times the default volume size limit (30000 MB). */
				uint64_t slot = 30000ull << 20;

				fs->total_bytes =
				    (uint64_t)json_integer_value(json_object_get(t, "Max")) * slot;
				fs->free_bytes =
				    (uint64_t)json_integer_value(json_object_get(t, "Free")) * slot;
			}
			json_decref(j);
		}
		free(body);
	}
	*total = fs->total_bytes;
	*free_bytes = fs->free_bytes;
	*used = fs->used_bytes;
	pthread_mutex_unlock(&fs->statfs_lock);
}

/* Any master answering /cluster/status (leader or not, any status) is the cluster. */
static int probe_masters(void *ctx)
{
	struct kelp_fs *fs = ctx;
	char *body = NULL;
	size_t len;
	long status;
	int rc;

	rc = kelp_client_master_get(fs->probe_client, "/cluster/status", false, &status, &body,
				    &len, NULL);
	free(body);
	if (rc < 0)
		log_debug("mount: no master answers: %s", kelp_client_error(fs->probe_client));
	return rc;
}

int fs_cluster_check(struct kelp_fs *fs)
{
	/* -metaOffline: calls are never refused; the prober still logs and reports
	 * (metrics) whether the cluster answers. */
	if (fs->opt.meta_offline)
		return 0;
	return health_check(&fs->health);
}

/* Probes twice a second, each probe bounded by half the timeout (at most 2 s), so the
 * mount notices a lost cluster within -timeout and a returned one within a second. */
static int start_health(struct kelp_fs *fs)
{
	struct kelp_client_options o = {0};
	int bound = fs->opt.timeout_ms / 2 < 2000 ? fs->opt.timeout_ms / 2 : 2000;
	int rc;

	o.masters = fs->opt.masters;
	o.timeout_ms = bound > 0 ? bound : 1;
	o.connect_timeout_ms = o.timeout_ms;
	rc = kelp_client_new(&o, &fs->probe_client);
	if (rc < 0)
		return rc;
	return health_start(&fs->health, (uint64_t)fs->opt.timeout_ms * 1000000u, 500000000u,
			    probe_masters, fs);
}

int kelp_fs_init(struct kelp_fs *fs, struct meta *meta, const struct kelp_fs_options *opt)
{
	int rc;

	memset(fs, 0, sizeof(*fs));
	fs->opt = *opt;
	fs->meta = meta;
	fs->cache = chunk_cache_new(opt->cache_bytes);
	fs->files = calloc(FILE_BUCKETS, sizeof(*fs->files));
	if (!fs->cache || !fs->files)
		return -ENOMEM;
	pthread_mutex_init(&fs->guard_lock, NULL);
	pthread_cond_init(&fs->guard_cond, NULL);
	pthread_mutex_init(&fs->disk_lock, NULL);
	pthread_cond_init(&fs->disk_cond, NULL);
	pthread_mutex_init(&fs->ra_lock, NULL);
	pthread_cond_init(&fs->ra_cond, NULL);
	for (int i = 0; i < 2; i++)
		if (pthread_create(&fs->ra_threads[fs->n_ra_threads], NULL, readahead_loop, fs) ==
		    0)
			fs->n_ra_threads++;
	if (opt->cache_dir && *opt->cache_dir && opt->disk_cache_bytes > 0) {
		fs->disk = disk_cache_open(opt->cache_dir, opt->disk_cache_bytes);
		if (!fs->disk)
			log_warn("mount: cannot use %s as a chunk cache; reading without it",
				 opt->cache_dir);
		else if (pthread_create(&fs->disk_thread, NULL, disk_writer, fs) == 0)
			fs->disk_started = true;
	}
	pthread_mutex_init(&fs->files_lock, NULL);
	pthread_mutex_init(&fs->gc_lock, NULL);
	pthread_cond_init(&fs->gc_cond, NULL);
	pthread_mutex_init(&fs->statfs_lock, NULL);
	pthread_mutex_init(&fs->bufs_lock, NULL);
	pthread_mutex_init(&fs->fetch_lock, NULL);
	pthread_mutex_init(&fs->lookups_lock, NULL);
	inomap_init(&fs->lookups);
	pthread_cond_init(&fs->fetch_cond, NULL);
	if (pthread_key_create(&fs->client_key, free_client) != 0)
		return -EAGAIN;
	if (pthread_create(&fs->gc_thread, NULL, gc_loop, fs) == 0)
		fs->gc_started = true;
	pthread_mutex_init(&fs->queue_lock, NULL);
	pthread_cond_init(&fs->queue_cond, NULL);
	for (int i = 0; i < UPLOAD_WORKERS; i++)
		if (pthread_create(&fs->workers[fs->n_workers], NULL, upload_worker, fs) == 0)
			fs->n_workers++;
	rc = start_health(fs);
	if (rc < 0)
		return rc;
	if (opt->writeback)
		return start_writeback(fs);
	if (opt->journal_dir && journal_has_entries(opt->journal_dir)) {
		/* Closes of an earlier -writeback mount, not all uploaded: replayed and
		 * uploaded all the same (closes of this mount do not journal). Ignoring them
		 * would lose them, and a later -writeback mount would replay them over newer
		 * data. */
		log_warn("mount: %s holds write-back journal entries of an earlier -writeback "
			 "mount: replaying them",
			 opt->journal_dir);
		return start_writeback(fs);
	}
	return 0;
}

void kelp_fs_destroy(struct kelp_fs *fs)
{
	if (fs->journal) {
		/* What the uploaders finish within -timeout leaves the journal; the rest is
		 * replayed at the next mount. */
		uint64_t left = fs_journal_drain(fs, fs->opt.timeout_ms);

		if (left > 0)
			log_warn("mount: %" PRIu64 " write-back journal entr%s not uploaded yet "
				 "(%" PRIu64 " bytes in %s): uploaded at the next mount",
				 left, left == 1 ? "y" : "ies", journal_bytes(fs->journal),
				 journal_dir(fs->journal));
		stop_writeback(fs);
	}
	health_stop(&fs->health);
	kelp_client_free(fs->probe_client);
	fs->probe_client = NULL;
	pthread_mutex_lock(&fs->gc_lock);
	__atomic_store_n(&fs->stopping, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&fs->gc_cond);
	pthread_mutex_unlock(&fs->gc_lock);
	pthread_mutex_lock(&fs->guard_lock);
	pthread_cond_broadcast(&fs->guard_cond); /* a gc waiting for readers gives up */
	pthread_mutex_unlock(&fs->guard_lock);
	if (fs->gc_started)
		pthread_join(fs->gc_thread, NULL);
	pthread_mutex_lock(&fs->queue_lock);
	pthread_cond_broadcast(&fs->queue_cond);
	pthread_mutex_unlock(&fs->queue_lock);
	pthread_mutex_lock(&fs->ra_lock);
	while (fs->n_ra > 0)
		guard_exit(fs, fs->ra_guard[--fs->n_ra]);
	pthread_cond_broadcast(&fs->ra_cond);
	pthread_mutex_unlock(&fs->ra_lock);
	for (int i = 0; i < fs->n_ra_threads; i++)
		pthread_join(fs->ra_threads[i], NULL);
	pthread_mutex_lock(&fs->disk_lock);
	pthread_cond_broadcast(&fs->disk_cond);
	pthread_mutex_unlock(&fs->disk_lock);
	if (fs->disk_started)
		pthread_join(fs->disk_thread, NULL);
	while (fs->disk_queue) {
		struct disk_job *j = fs->disk_queue;

		fs->disk_queue = j->next;
		chunk_cache_put(fs->cache, j->e);
		free(j);
	}
	for (int i = 0; i < fs->n_workers; i++)
		pthread_join(fs->workers[i], NULL);
	/* Files programs still had open when the session ended (a signal): their data
	 * was flushed by fs_flush_all; nothing can reach them any more. */
	for (size_t b = 0; fs->files && b < FILE_BUCKETS; b++) {
		while (fs->files[b]) {
			struct open_file *f = fs->files[b];

			fs->files[b] = f->next;
			for (int i = 0; i < f->n_ext; i++)
				free(f->ext[i].data);
			free(f->ext);
			free_jobs(fs, f);
			pthread_mutex_destroy(&f->lock);
			pthread_cond_destroy(&f->cond);
			free(f);
		}
	}
	free(fs->files);
	fs->files = NULL;
	while (fs->n_bufs > 0)
		free(fs->bufs[--fs->n_bufs]);
	chunk_cache_free(fs->cache);
	disk_cache_close(fs->disk);
	journal_close(fs->journal);
	fs->journal = NULL;
	inomap_release(&fs->lookups);
	pthread_key_delete(fs->client_key);
}
