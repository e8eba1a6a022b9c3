#include "fuse/meta.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/dircache.h"
#include "fuse/inomap.h"
#include "fuse/kv.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* Change stamps (meta_change_stamp): slots of inodes hashed, and one for everything. */
#define STAMP_SLOTS  1024
#define STAMP_BUSY   0xffffull /* the low bits: transactions committing */
#define DIR_MEMO     256       /* directories whose attributes are remembered (meta_getattr_dir) */
#define DIR_MEMO_TXN 4	       /* of them, written by one transaction */
#define ATTR_MEMO    4096      /* inodes whose xattr flags are remembered (meta_xattr_absent) */
#define STAMP_BEGIN  ((1ull << 16) + 1) /* one more committing, and a new value */
#define STAMP_END    ((1ull << 16) - 1) /* one fewer, and a new value */

struct meta {
	struct kv *kv;
	uint64_t stamps[STAMP_SLOTS];
	uint64_t stamp_all;
	uint64_t gc_generation; /* bumped (atomically) by every blob sent to gc */
	int timeout_ms;		/* how long a transaction waits for a lost server */
	uint64_t retries;	/* transactions run again (atomic; for the log and tests) */
	char owner[256];	/* what older versions recorded as an orphan's value */
	uint32_t generation;	/* of every inode of this metadata (meta_generation) */
	int64_t trash_ns;	/* how long removed files stay in /.trash (0: no trash) */
	int gc_grace_ms;	/* gc leaves blobs queued less than this long ago */
	/* sessions (meta_session_*) */
	uint64_t sid;	      /* this mount's session id (atomic) */
	uint64_t hold_serial; /* last serial of a hold (atomic) */
	pthread_mutex_t watch_lock;
	struct session_watch *watch; /* other sessions' heartbeats as last seen */
	int n_watch;
	/* Inodes in the trash that this mount's kernel looked up there (meta_hold). */
	pthread_mutex_t trash_lock;
	struct inomap trash_seen;
	/* Lookups read ahead (meta_lookup_cached; NULL: off). */
	struct dircache *dircache;
	int lookup_batch;
	/* Directory attributes just written (meta_getattr_dir), by inode number. */
	int64_t dir_attr_ttl_ns;
	bool sync_every; /* meta_options.sync_every */
	pthread_mutex_t dir_memo_lock;
	struct dir_memo {
		uint64_t ino, stamp;
		uint64_t at_ns; /* monotonic time of the commit */
		struct meta_attr a;
	} dir_memo[DIR_MEMO];
	/* Write transactions of this process that began / ended committing (atomic). */
	uint64_t commits_begun, commits_ended;
	/* Inodes' flags as last given to the kernel (meta_xattr_absent). */
	pthread_mutex_t attr_memo_lock;
	struct attr_memo {
		uint64_t ino, stamp, at_ns;
		uint32_t flags;
	} attr_memo[ATTR_MEMO];
};

/* The directory attributes the running transaction of this thread wrote (only kept
 * when a shared engine's memo is on; see meta_getattr_dir). */
static __thread struct {
	int n;
	struct meta_attr a[DIR_MEMO_TXN];
} txn_dirs;

struct session_watch {
	uint64_t id, beats;
	uint64_t since_ns; /* monotonic time the counter was first seen at this value */
};

int64_t meta_now_ns(void)
{
	return (int64_t)now_ns();
}

/* ---------------------------------------------------------------- transactions */

static uint64_t *stamp_slot(struct meta *m, uint64_t ino)
{
	return &m->stamps[(ino * 0x9e3779b97f4a7c15ull) >> 54]; /* 1024 slots: the top 10 bits */
}

/* Around the commit of a transaction that wrote the touched inodes (t->touched). */
static void stamps_add(struct meta *m, const uint64_t *touched, int n, uint64_t delta)
{
	if (n > KV_TOUCHED_MAX) {
		__atomic_add_fetch(&m->stamp_all, delta, __ATOMIC_SEQ_CST);
		return;
	}
	for (int i = 0; i < n; i++)
		__atomic_add_fetch(stamp_slot(m, touched[i]), delta, __ATOMIC_SEQ_CST);
}

/* Notes that the transaction writes ino's data or attributes (meta_change_stamp). */
static void touch(struct kv_txn *t, uint64_t ino)
{
	for (int i = 0; i < t->n_touched && i < KV_TOUCHED_MAX; i++)
		if (t->touched[i] == ino)
			return;
	if (t->n_touched < KV_TOUCHED_MAX)
		t->touched[t->n_touched] = ino;
	if (t->n_touched <= KV_TOUCHED_MAX)
		t->n_touched++;
}

/* Notes that the running transaction writes directory attributes a (meta_getattr_dir). */
static void memo_dir_put(struct kv_txn *t, const struct meta_attr *a)
{
	if (!t->memo || a->nlink == 0)
		return;
	for (int i = 0; i < txn_dirs.n; i++)
		if (txn_dirs.a[i].ino == a->ino) {
			txn_dirs.a[i] = *a;
			return;
		}
	if (txn_dirs.n < DIR_MEMO_TXN)
		txn_dirs.a[txn_dirs.n++] = *a;
}

static struct dir_memo *memo_slot(struct meta *m, uint64_t ino)
{
	return &m->dir_memo[(ino * 0x9e3779b97f4a7c15ull) >> 56]; /* 256 slots */
}

/*
 * Ends the commit of a transaction that wrote the directory attributes in txn_dirs: the
 * touched inodes' stamps move on (STAMP_END) and each directory's attributes are kept
 * with the value its stamp has right then, when no other commit of them is running. Any
 * later change of the same stamp slot makes them stale. t->touched is all listed.
 */
static void memo_dirs(struct meta *m, const uint64_t *touched, int n)
{
	uint64_t all = __atomic_load_n(&m->stamp_all, __ATOMIC_SEQ_CST), now = monotonic_ns();
	uint64_t after[KV_TOUCHED_MAX];

	for (int i = 0; i < n; i++)
		after[i] =
		    __atomic_add_fetch(stamp_slot(m, touched[i]), STAMP_END, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&m->dir_memo_lock);
	for (int d = 0; d < txn_dirs.n; d++) {
		const struct meta_attr *a = &txn_dirs.a[d];
		struct dir_memo *slot = memo_slot(m, a->ino);

		slot->ino = 0;
		for (int i = 0; i < n; i++) {
			if (touched[i] != a->ino)
				continue;
			if (!(all & STAMP_BUSY) && !(after[i] & STAMP_BUSY)) {
				slot->ino = a->ino;
				slot->stamp = all + after[i];
				slot->at_ns = now;
				slot->a = *a;
			}
			break;
		}
	}
	pthread_mutex_unlock(&m->dir_memo_lock);
	txn_dirs.n = 0;
}

static bool txn_retry(struct meta *m, int *rc, int attempt, uint64_t start_ns);

/* kv_ops.sync, again while the server is away (txn_retry: up to the timeout, then EIO). */
static int sync_retrying(struct meta *m, bool all)
{
	uint64_t start = monotonic_ns();
	int rc, attempt = 0;

	do
		rc = m->kv->ops->sync(m->kv, all);
	while (txn_retry(m, &rc, ++attempt, start));
	return rc;
}

static int txn_commit(struct meta *m, struct kv_txn *t)
{
	int rc = t->kv->ops->commit(t);

	return rc == 0 && m->sync_every ? sync_retrying(m, false) : rc;
}

static int txn_finish(struct meta *m, struct kv_txn *t, int rc)
{
	uint64_t touched[KV_TOUCHED_MAX];
	int n = t->n_touched;

	if (rc < 0 || !t->write || t->failed) {
		int failed = t->failed;

		t->kv->ops->abort(t);
		return failed ? failed : rc;
	}
	if (n == 0)
		return txn_commit(m, t);
	/* What this process cached of the touched inodes is stale from before the commit
	 * (a cache filled meanwhile sees them busy) to after it (whatever the outcome: a
	 * lost connection may have committed). */
	memcpy(touched, t->touched, sizeof(touched));
	__atomic_add_fetch(&m->commits_begun, 1, __ATOMIC_SEQ_CST);
	stamps_add(m, touched, n, STAMP_BEGIN);
	rc = txn_commit(m, t);
	if (rc == 0 && txn_dirs.n > 0 && n <= KV_TOUCHED_MAX)
		memo_dirs(m, touched, n);
	else
		stamps_add(m, touched, n, STAMP_END);
	__atomic_add_fetch(&m->commits_ended, 1, __ATOMIC_SEQ_CST);
	return rc;
}

/*
 * After a run of a transaction ended with rc: true to run it again. Serialization
 * failures (-EAGAIN) are retried at once with a growing random pause; a lost server
 * (-ENOTCONN) every 100 ms to 1 s. Both up to the timeout, then *rc becomes -EIO.
 */
static bool txn_retry(struct meta *m, int *rc, int attempt, uint64_t start_ns)
{
	uint64_t waited_ms = (monotonic_ns() - start_ns) / 1000000;
	unsigned pause_us;

	if (*rc != -EAGAIN && *rc != -ENOTCONN)
		return false;
	if (waited_ms >= (uint64_t)m->timeout_ms) {
		log_error("meta: %s for %llu ms: giving up (EIO)",
			  *rc == -EAGAIN ? "transaction conflicts" : "metadata server unreachable",
			  (unsigned long long)waited_ms);
		*rc = -EIO;
		return false;
	}
	__atomic_add_fetch(&m->retries, 1, __ATOMIC_RELAXED);
	if (*rc == -EAGAIN) {
		unsigned cap = attempt < 10 ? 1u << attempt : 1024; /* x 100 us */

		pause_us = (unsigned)(rand() % (int)cap) * 100;
	} else {
		if (attempt == 1)
			log_error("meta: metadata server unreachable; retrying for up to %d s",
				  m->timeout_ms / 1000);
		pause_us = attempt < 10 ? 100000u * (unsigned)attempt : 1000000u;
	}
	if (pause_us)
		usleep(pause_us);
	return true;
}

/*
 * Runs expr (an int expression using the transaction `t`) in a read-only or read-write
 * transaction, again from the start while txn_retry says so. Its value is expr's, or
 * the commit's error.
 */
#define IN_TXN(m, rw, expr) IN_TXN_(m, rw, false, false, expr)
/* A read-only transaction of exactly one get or get_follow (kv_txn.single). */
#define IN_TXN_ONE(m, expr) IN_TXN_(m, false, true, false, expr)
/*
 * A read-write transaction that changes the namespace only (names, attributes, xattrs,
 * holds): committed lazily (kv_txn.lazy) unless meta_options.sync_every. Durable, as
 * every commit on LMDB, at the next meta_sync or within the engine's delay. What a
 * process relies on beyond the mount stays eager: the data's commit at close and
 * fsync, locks, sessions; and the gc makes everything durable before it deletes a blob
 * (meta_sync_all).
 */
#define IN_TXN_LAZY(m, expr) IN_TXN_(m, true, false, !(m)->sync_every, expr)
#define IN_TXN_(m, rw, one, lz, expr)                                                              \
	({                                                                                         \
		int rc_, try_ = 0;                                                                 \
		uint64_t start_ = monotonic_ns();                                                  \
		do {                                                                               \
			struct kv_txn *t;                                                          \
			rc_ = (m)->kv->ops->begin((m)->kv, (rw), &t);                              \
			if (rc_ == 0) {                                                            \
				t->n_touched = 0;                                                  \
				t->single = (one);                                                 \
				t->lazy = (lz);                                                    \
				t->memo = (rw) && (m)->dir_attr_ttl_ns > 0;                        \
				txn_dirs.n = 0;                                                    \
				rc_ = (expr);                                                      \
				rc_ = txn_finish((m), t, rc_);                                     \
			}                                                                          \
		} while (txn_retry((m), &rc_, ++try_, start_));                                    \
		rc_;                                                                               \
	})

/* ---------------------------------------------------------------- encoding */

/* ---------------------------------------------------------------- open */

/* The inode generation, drawn at random once when the metadata is created. */
static int init_generation(struct kv_txn *t, uint32_t *out)
{
	static const char key[] = "generation";
	const uint8_t *v;
	size_t vlen;
	uint32_t g = 0;
	int rc = kv_get(t, KV_COUNTERS, key, sizeof(key) - 1, &v, &vlen);

	if (rc == 0) {
		if (vlen != 4)
			return -EIO;
		memcpy(&g, v, 4);
		*out = g;
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	while (g == 0)
		if (getrandom(&g, sizeof(g), 0) != sizeof(g))
			g = (uint32_t)now_ns() | 1;
	*out = g;
	return kv_put(t, KV_COUNTERS, key, sizeof(key) - 1, &g, 4);
}

static int init_root(struct kv_txn *t, uint32_t *generation)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;
	struct meta_attr root = {0};
	int64_t now = meta_now_ns();
	int rc;

	/* A `kelp meta load` that did not finish (dump.c): refuse the half-loaded tree. */
	rc = kv_get(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY), &v, &vlen);
	if (rc == 0) {
		log_error("meta: a `kelp meta load` into this metadata did not finish: run it "
			  "again (it starts over), or use another -meta");
		return -EUCLEAN;
	}
	if (rc != -ENOENT)
		return rc;
	be64(k, META_ROOT_INO);
	rc = kv_get(t, KV_INODES, k, 8, &v, &vlen);
	if (rc == -ENOENT) {
		root.ino = META_ROOT_INO;
		root.mode = S_IFDIR | 0755;
		root.nlink = 2;
		root.atime_ns = root.mtime_ns = root.ctime_ns = root.crtime_ns = now;
		rc = kv_put(t, KV_INODES, k, 8, &root, sizeof(root));
	}
	return rc < 0 ? rc : init_generation(t, generation);
}

int meta_open_opts(const char *spec, const struct meta_options *o, struct meta **out)
{
	struct meta *m = calloc(1, sizeof(*m));
	int rc;

	if (!m)
		return -ENOMEM;
	m->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 30000;
	pthread_mutex_init(&m->watch_lock, NULL);
	pthread_mutex_init(&m->trash_lock, NULL);
	inomap_init(&m->trash_seen);
	m->gc_grace_ms = o && o->gc_grace_ms > 0 ? o->gc_grace_ms : 0;
	snprintf(m->owner, sizeof(m->owner), "%s", o && o->owner && *o->owner ? o->owner : "1");
	m->trash_ns = o && o->trash_ns > 0 ? o->trash_ns : 0;
	if (o && o->lookup_cache > 0 && o->lookup_ttl_ns > 0) {
		struct dircache_options dco = {
		    .max_dirs = o->lookup_cache_dirs > 0 ? o->lookup_cache_dirs : 1024,
		    .max_entries = o->lookup_cache,
		    .ttl_ns = o->lookup_ttl_ns,
		};

		m->lookup_batch = o->lookup_batch > 0 ? o->lookup_batch : 256;
		rc = dircache_new(&dco, &m->dircache);
		if (rc < 0) {
			free(m);
			return rc;
		}
	}
	pthread_mutex_init(&m->dir_memo_lock, NULL);
	pthread_mutex_init(&m->attr_memo_lock, NULL);
	if (kv_is_pg_url(spec)) {
		struct kv_pg_options po = {
		    .cluster_id = o ? o->cluster_id : NULL,
		    .timeout_ms = m->timeout_ms,
		    .connections = o ? o->connections : 0,
		};

		rc = kv_pg_open(spec, &po, &m->kv);
	} else {
		rc = kv_lmdb_open(spec, &m->kv);
	}
	if (rc < 0) {
		dircache_free(m->dircache);
		free(m);
		return rc;
	}
	m->dir_attr_ttl_ns = o && o->dir_attr_ttl_ns > 0 && m->kv->shared ? o->dir_attr_ttl_ns : 0;
	m->sync_every = o && o->sync_every;
	/* LMDB: the cluster a `kelp meta load` or restore recorded (PostgreSQL checks its
	 * own at open). */
	if (rc == 0 && !m->kv->shared && o && o->cluster_id && *o->cluster_id) {
		char stored[128] = "";

		rc = IN_TXN(m, false, kv_get_prop(t, "cluster_id", stored, sizeof(stored)));
		if (rc == 0 && *stored && strcmp(stored, o->cluster_id)) {
			log_error("meta: the metadata in %s belongs to the cluster %s, and the "
				  "masters are the cluster %s: refusing to mount it",
				  spec, stored, o->cluster_id);
			rc = -EXDEV;
		}
		if (rc < 0) {
			m->kv->ops->close(m->kv);
			dircache_free(m->dircache);
			free(m);
			return rc;
		}
	}
	/* The root directory and the inode generation, on first use. */
	rc = IN_TXN(m, true, init_root(t, &m->generation));
	if (rc < 0) {
		if (rc != -EUCLEAN)
			log_error("meta: cannot create the root directory: %s", strerror(-rc));
		m->kv->ops->close(m->kv);
		dircache_free(m->dircache);
		free(m);
		return rc;
	}
	*out = m;
	return 0;
}

int meta_open(const char *spec, struct meta **out)
{
	return meta_open_opts(spec, NULL, out);
}

bool meta_shared(struct meta *m)
{
	return m->kv->shared;
}

const char *meta_engine(struct meta *m)
{
	return m->kv->ops->name;
}

bool meta_change_stamp(struct meta *m, uint64_t ino, uint64_t *stamp)
{
	uint64_t all = __atomic_load_n(&m->stamp_all, __ATOMIC_SEQ_CST);
	uint64_t one = __atomic_load_n(stamp_slot(m, ino), __ATOMIC_SEQ_CST);

	*stamp = all + one;
	return !(all & STAMP_BUSY) && !(one & STAMP_BUSY);
}

uint64_t meta_round_trips(struct meta *m, uint64_t *txns)
{
	if (txns)
		*txns = __atomic_load_n(&m->kv->txns, __ATOMIC_RELAXED);
	return __atomic_load_n(&m->kv->round_trips, __ATOMIC_RELAXED);
}

int meta_gc_grace_ms(struct meta *m)
{
	return m->gc_grace_ms;
}

uint64_t meta_retries(struct meta *m)
{
	return __atomic_load_n(&m->retries, __ATOMIC_RELAXED);
}

int meta_sync(struct meta *m)
{
	return sync_retrying(m, false);
}

int meta_sync_all(struct meta *m)
{
	return sync_retrying(m, true);
}

void meta_close(struct meta *m)
{
	if (!m)
		return;
	m->kv->ops->close(m->kv);
	pthread_mutex_destroy(&m->watch_lock);
	pthread_mutex_destroy(&m->trash_lock);
	inomap_release(&m->trash_seen);
	dircache_free(m->dircache);
	free(m->watch);
	free(m);
}

/* ---------------------------------------------------------------- helpers (in a txn) */

/* The size of an inode record before struct meta_attr had `stored`. */
#define ATTR_V1_SIZE offsetof(struct meta_attr, stored)

/* An inode record: the current layout, or the one before `stored` (unknown then). */
int meta_decode_attr(const uint8_t *v, size_t vlen, struct meta_attr *out)
{
	if (vlen == sizeof(*out)) {
		memcpy(out, v, sizeof(*out));
		return 0;
	}
	if (vlen != ATTR_V1_SIZE)
		return -EIO;
	memcpy(out, v, ATTR_V1_SIZE);
	out->stored = META_STORED_UNKNOWN;
	return 0;
}

int meta_get_attr_in(struct kv_txn *t, uint64_t ino, struct meta_attr *out)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;
	int rc;

	be64(k, ino);
	rc = kv_get(t, KV_INODES, k, 8, &v, &vlen);
	if (rc != 0)
		return rc;
	return meta_decode_attr(v, vlen, out);
}

static int get_attr(struct kv_txn *t, uint64_t ino, struct meta_attr *out)
{
	return meta_get_attr_in(t, ino, out);
}

int meta_put_attr_in(struct kv_txn *t, const struct meta_attr *a)
{
	uint8_t k[8];

	touch(t, a->ino);
	if (S_ISDIR(a->mode))
		memo_dir_put(t, a);
	be64(k, a->ino);
	return kv_put(t, KV_INODES, k, 8, a, sizeof(*a));
}

static int put_attr(struct kv_txn *t, const struct meta_attr *a)
{
	return meta_put_attr_in(t, a);
}

static size_t dentry_key(uint8_t *buf, uint64_t parent, const char *name)
{
	size_t n = strlen(name);

	be64(buf, parent);
	memcpy(buf + 8, name, n);
	return 8 + n;
}

static int get_dentry(struct kv_txn *t, uint64_t parent, const char *name, uint64_t *ino)
{
	uint8_t k[8 + META_NAME_MAX];
	const uint8_t *v;
	size_t vlen;
	int rc = kv_get(t, KV_DENTRIES, k, dentry_key(k, parent, name), &v, &vlen);

	if (rc != 0)
		return rc;
	if (vlen != 8)
		return -EIO;
	*ino = rd64(v);
	return 0;
}

/* A change of a directory's names is a change of the directory (meta_change_stamp: the
 * lookups read ahead of it are dropped); its attributes change too (mtime). */
static int put_dentry(struct kv_txn *t, uint64_t parent, const char *name, uint64_t ino)
{
	uint8_t k[8 + META_NAME_MAX], v[8];

	touch(t, parent);
	be64(v, ino);
	return kv_put(t, KV_DENTRIES, k, dentry_key(k, parent, name), v, 8);
}

static int del_dentry(struct kv_txn *t, uint64_t parent, const char *name)
{
	uint8_t k[8 + META_NAME_MAX];

	touch(t, parent);
	return kv_del(t, KV_DENTRIES, k, dentry_key(k, parent, name));
}

/* Directories remember their parent (for the rename-into-itself check). */
static int set_parent(struct kv_txn *t, uint64_t dir, uint64_t parent)
{
	uint8_t k[8], v[8];

	be64(k, dir);
	be64(v, parent);
	return kv_put(t, KV_PARENTS, k, 8, v, 8);
}

static int stop_at_first(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	*(bool *)ctx = true;
	return 1;
}

/* The range of keys that start with ino (8 bytes big-endian). */
static void ino_range(uint8_t *from, uint8_t *to, uint64_t ino)
{
	be64(from, ino);
	be64(to, ino + 1);
}

static bool dir_empty(struct kv_txn *t, uint64_t ino)
{
	uint8_t from[8], to[8];
	bool found = false;

	ino_range(from, to, ino);
	if (kv_scan(t, KV_DENTRIES, from, 8, to, 8, false, 1, stop_at_first, &found) < 0)
		return false;
	return !found;
}

/* Adds delta to a blob's reference count; at 0 the blob goes to gc. */
static int fidref_add(struct meta *m, struct kv_txn *t, const char *fid, int delta)
{
	size_t flen = strlen(fid);
	const uint8_t *v;
	size_t vlen;
	uint32_t count = 0;
	int rc = kv_get(t, KV_FIDREFS, fid, flen, &v, &vlen);

	if (rc == 0 && vlen == 4)
		memcpy(&count, v, 4);
	else if (rc != 0 && rc != -ENOENT)
		return rc;
	if (delta < 0 && count < (uint32_t)-delta)
		count = 0;
	else
		count = (uint32_t)((int64_t)count + delta);
	if (count == 0) {
		uint64_t seq;
		uint8_t k[8];

		if (rc == 0) {
			rc = kv_del(t, KV_FIDREFS, fid, flen);
			if (rc < 0)
				return rc;
		}
		rc = kv_next_id(t, KV_ID_GC, 1, &seq);
		if (rc < 0)
			return rc;
		uint8_t v[META_FID_MAX + 9];

		be64(k, seq);
		/* Counted before the commit: a gc pass that runs in between misses the
		 * blob, and the next one (at most a second later) takes it. */
		__atomic_add_fetch(&m->gc_generation, 1, __ATOMIC_RELEASE);
		if (flen >= META_FID_MAX)
			return -EINVAL;
		/* The fid, a NUL, when it was queued (the backup hold: meta_gc_take). */
		memcpy(v, fid, flen);
		v[flen] = '\0';
		be64(v + flen + 1, (uint64_t)meta_now_ns());
		return kv_put(t, KV_GC, k, 8, v, flen + 9);
	}
	return kv_put(t, KV_FIDREFS, fid, flen, &count, 4);
}

static void chunk_key(uint8_t *k, uint64_t ino, uint64_t offset)
{
	be64(k, ino);
	be64(k + 8, offset);
}

static int put_chunk(struct kv_txn *t, uint64_t ino, const struct meta_chunk *c)
{
	uint8_t k[16], v[16 + META_FID_MAX];
	size_t flen = strnlen(c->fid, META_FID_MAX - 1);

	touch(t, ino);
	chunk_key(k, ino, c->offset);
	be64(v, c->length);
	be64(v + 8, c->blob_offset);
	memcpy(v + 16, c->fid, flen);
	return kv_put(t, KV_CHUNKS, k, 16, v, 16 + flen);
}

static int decode_chunk(const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
			struct meta_chunk *c)
{
	size_t flen;

	if (klen != 16 || vlen < 17 || vlen > 16 + META_FID_MAX - 1)
		return -EIO;
	c->offset = rd64(k + 8);
	c->length = rd64(v);
	c->blob_offset = rd64(v + 8);
	flen = vlen - 16;
	memcpy(c->fid, v + 16, flen);
	c->fid[flen] = '\0';
	return 0;
}

struct chunk_list {
	struct meta_chunk *list;
	int n, cap;
	uint64_t start, end;
};

static int collect_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct chunk_list *l = ctx;
	struct meta_chunk c;

	if (decode_chunk(k, klen, v, vlen, &c) < 0)
		return -EIO;
	if (c.offset >= l->end)
		return 1;
	if (c.offset + c.length <= l->start)
		return 0;
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 16;
		struct meta_chunk *p = realloc(l->list, (size_t)cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		l->list = p;
		l->cap = cap;
	}
	l->list[l->n++] = c;
	return 0;
}

/* The bounds of collect_chunks' two scans of ino's intervals around start. */
struct chunk_scan {
	uint8_t lo[16], at[17], hi[8];
};

static void chunk_scan_init(struct chunk_scan *k, uint64_t ino, uint64_t start)
{
	chunk_key(k->lo, ino, 0);
	chunk_key(k->at, ino, start);
	k->at[16] = 0; /* the smallest key above (ino, start) */
	be64(k->hi, ino + 1);
}

/* The reads of collect_chunks (the second one cut at limit intervals), to prefetch:
 * fills r[0] and r[1]. */
static void chunk_scan_reads(const struct chunk_scan *k, int limit, struct kv_read *r)
{
	r[0] = (struct kv_read){.table = KV_CHUNKS,
				.key = k->lo,
				.klen = 16,
				.scan = true,
				.reverse = true,
				.to = k->at,
				.tlen = 17,
				.limit = 1};
	r[1] = (struct kv_read){.table = KV_CHUNKS,
				.key = k->at,
				.klen = 17,
				.scan = true,
				.to = k->hi,
				.tlen = 8,
				.limit = limit};
}

/* A get of ino's attributes, to prefetch (key: 8 bytes kept by the caller). */
static struct kv_read attr_read(uint8_t *key, uint64_t ino)
{
	be64(key, ino);
	return (struct kv_read){.table = KV_INODES, .key = key, .klen = 8};
}

#define PREFETCH_CHUNKS 16 /* intervals a prefetched scan brings (more: fetched then) */

/*
 * Collects the chunks of ino overlapping [start, end) (caller frees), at most max
 * after the one at or before start (0: no limit; *more, if not NULL, tells whether the
 * limit cut them).
 */
static int collect_chunks_max(struct kv_txn *t, uint64_t ino, uint64_t start, uint64_t end, int max,
			      struct meta_chunk **out, bool *more)
{
	struct chunk_list l = {NULL, 0, 0, start, end};
	struct chunk_scan k;
	int rc, before;

	*out = NULL;
	if (more)
		*more = false;
	chunk_scan_init(&k, ino, start);
	/* First the interval starting at or before start: it may reach into the range,
	 * and when it covers all of it (a read inside one chunk) nothing else can (the
	 * intervals do not overlap), which saves the second scan. */
	rc = kv_scan(t, KV_CHUNKS, k.lo, 16, k.at, 17, true, 1, collect_one, &l);
	before = l.n;
	if (rc == 0 && !(l.n == 1 && l.list[0].offset + l.list[0].length >= end)) {
		rc = kv_scan(t, KV_CHUNKS, k.at, 17, k.hi, 8, false, max, collect_one, &l);
		if (more && max > 0 && l.n - before == max)
			*more = true;
	}
	if (rc < 0) {
		free(l.list);
		return rc;
	}
	*out = l.list;
	return l.n;
}

static int collect_chunks(struct kv_txn *t, uint64_t ino, uint64_t start, uint64_t end,
			  struct meta_chunk **out)
{
	return collect_chunks_max(t, ino, start, end, 0, out, NULL);
}

/*
 * Removes [start, end) from ino's data: drops or trims the intervals there. *removed
 * (may be NULL) gets the bytes of data that were there.
 */
static int punch(struct meta *m, struct kv_txn *t, uint64_t ino, uint64_t start, uint64_t end,
		 uint64_t *removed)
{
	struct meta_chunk *list;
	int n = collect_chunks(t, ino, start, end, &list), rc = 0;

	if (removed)
		*removed = 0;
	if (n < 0)
		return n;
	for (int i = 0; i < n && rc == 0; i++) {
		struct meta_chunk c = list[i];
		uint64_t a = c.offset, b = c.offset + c.length;
		uint8_t k[16];

		if (removed)
			*removed += (b < end ? b : end) - (a > start ? a : start);

		touch(t, ino);
		chunk_key(k, ino, a);
		rc = kv_del(t, KV_CHUNKS, k, 16);
		if (rc == 0 && a < start) {
			struct meta_chunk left = c;

			left.length = start - a;
			rc = put_chunk(t, ino, &left);
			if (rc == 0)
				rc = fidref_add(m, t, c.fid, 1);
		}
		if (rc == 0 && b > end) {
			struct meta_chunk right = c;

			right.offset = end;
			right.length = b - end;
			right.blob_offset = c.blob_offset + (end - a);
			rc = put_chunk(t, ino, &right);
			if (rc == 0)
				rc = fidref_add(m, t, c.fid, 1);
		}
		if (rc == 0)
			rc = fidref_add(m, t, c.fid, -1);
	}
	free(list);
	return rc;
}

/* a->stored of a record from before the field: the sum of its intervals now (in a
 * write transaction, before its data changes; written back with the attributes). */
static int ensure_stored(struct kv_txn *t, struct meta_attr *a)
{
	struct meta_chunk *list;
	int n;

	if (a->stored != META_STORED_UNKNOWN)
		return 0;
	n = collect_chunks(t, a->ino, 0, UINT64_MAX, &list);
	if (n < 0)
		return n;
	a->stored = 0;
	for (int i = 0; i < n; i++)
		a->stored += list[i].length;
	free(list);
	return 0;
}

/* a->stored after removed bytes went and added came. */
static void stored_change(struct meta_attr *a, uint64_t removed, uint64_t added)
{
	a->stored = (a->stored > removed ? a->stored - removed : 0) + added;
}

struct key_list {
	uint8_t (*keys)[8 + 256];
	size_t *lens;
	int n, cap;
};

static int collect_key(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct key_list *l = ctx;

	if (klen > 8 + 256)
		return 0;
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 8;
		void *a = realloc(l->keys, (size_t)cap * sizeof(*l->keys));

		if (!a)
			return -ENOMEM;
		l->keys = a;
		a = realloc(l->lens, (size_t)cap * sizeof(*l->lens));
		if (!a)
			return -ENOMEM;
		l->lens = a;
		l->cap = cap;
	}
	memcpy(l->keys[l->n], k, klen);
	l->lens[l->n++] = klen;
	return 0;
}

static int free_inode(struct meta *m, struct kv_txn *t, uint64_t ino)
{
	uint8_t k[8], to[8];
	struct key_list xattrs = {0};
	int rc;

	rc = punch(m, t, ino, 0, UINT64_MAX, NULL);
	if (rc < 0)
		return rc;
	/* xattrs: listed, then deleted */
	ino_range(k, to, ino);
	rc = kv_scan(t, KV_XATTRS, k, 8, to, 8, false, 0, collect_key, &xattrs);
	for (int i = 0; rc == 0 && i < xattrs.n; i++)
		rc = kv_del(t, KV_XATTRS, xattrs.keys[i], xattrs.lens[i]);
	free(xattrs.keys);
	free(xattrs.lens);
	if (rc < 0)
		return rc;
	be64(k, ino);
	kv_del(t, KV_SYMLINKS, k, 8);
	kv_del(t, KV_ORPHANS, k, 8);
	kv_del(t, KV_PARENTS, k, 8);
	if (m->kv->shared) {
		uint8_t mk[9];

		be64(mk, ino);
		mk[8] = META_LOCK_MARK;
		kv_del(t, KV_LOCKS, mk, 9); /* its change marker (fuse/locks.c) */
	}
	touch(t, ino);
	return kv_del(t, KV_INODES, k, 8);
}

/* Drops one link of ino; at 0 the inode is recorded as an orphan of this mount (freed
 * on release). */
static int drop_link(struct meta *m, struct kv_txn *t, uint64_t ino, int64_t now, uint64_t *gone)
{
	struct meta_attr a;
	int rc = get_attr(t, ino, &a);

	if (rc < 0)
		return rc;
	if (S_ISDIR(a.mode))
		a.nlink = 0;
	else if (a.nlink > 0)
		a.nlink--;
	a.ctime_ns = now;
	rc = put_attr(t, &a);
	if (rc == 0 && a.nlink == 0) {
		uint8_t k[8], v[8];

		be64(k, ino);
		be64(v, __atomic_load_n(&m->sid, __ATOMIC_ACQUIRE));
		rc = kv_put(t, KV_ORPHANS, k, 8, v, 8);
		*gone = ino;
	}
	return rc;
}

static int check_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0)
		return -EINVAL;
	if (n > META_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static size_t xattr_key(uint8_t *k, uint64_t ino, const char *name);

/* ---------------------------------------------------------------- POSIX ACLs */

/*
 * The value of system.posix_acl_access / _default as Linux passes it: a little-endian
 * u32 version (2), then 8-byte entries: u16 tag, u16 permissions (rwx = 4 2 1), u32 id
 * (for the named user and group entries). The kernel checks an ACL before it sends it
 * and evaluates them itself (default_permissions); the rules here keep them in step
 * with the mode bits: the owner, group (the mask when there is one) and other entries
 * ARE the mode's three permission triads.
 */
#define ACL_VERSION   2
#define ACL_USER_OBJ  0x01
#define ACL_USER      0x02
#define ACL_GROUP_OBJ 0x04
#define ACL_GROUP     0x08
#define ACL_MASK      0x10
#define ACL_OTHER     0x20
#define ACL_MAX_SIZE  (4 + 8 * 1024)

static uint16_t acl_tag(const uint8_t *e)
{
	return (uint16_t)(e[0] | e[1] << 8);
}

static uint16_t acl_perm(const uint8_t *e)
{
	return (uint16_t)(e[2] | e[3] << 8);
}

static void acl_set_perm(uint8_t *e, unsigned perm)
{
	e[2] = (uint8_t)(perm & 7);
	e[3] = 0;
}

/* The entries of an ACL value, or -EINVAL for a malformed one. */
static int acl_count(const uint8_t *v, size_t len)
{
	if (len < 4 || (len - 4) % 8 != 0 || len > ACL_MAX_SIZE)
		return -EINVAL;
	if ((v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24) != ACL_VERSION)
		return -EINVAL;
	return (int)((len - 4) / 8);
}

/*
 * The mode bits an access ACL stands for (*bits: rwxrwxrwx) and whether the mode says
 * it all (*equiv: no named entries, no mask: the xattr is then not kept). -EINVAL when
 * the owner, group or other entry is missing.
 */
static int acl_mode(const uint8_t *v, size_t len, uint32_t *bits, bool *equiv)
{
	int n = acl_count(v, len), seen = 0;
	unsigned u = 0, g = 0, o = 0, mask = 0;
	bool has_mask = false;

	if (n < 0)
		return n;
	*equiv = true;
	for (int i = 0; i < n; i++) {
		const uint8_t *e = v + 4 + 8 * i;
		unsigned perm = acl_perm(e) & 7;

		switch (acl_tag(e)) {
		case ACL_USER_OBJ:
			u = perm;
			seen |= 1;
			break;
		case ACL_GROUP_OBJ:
			g = perm;
			seen |= 2;
			break;
		case ACL_OTHER:
			o = perm;
			seen |= 4;
			break;
		case ACL_MASK:
			mask = perm;
			has_mask = true;
			*equiv = false;
			break;
		case ACL_USER:
		case ACL_GROUP:
			*equiv = false;
			break;
		default:
			return -EINVAL;
		}
	}
	if (seen != 7)
		return -EINVAL;
	*bits = u << 6 | (has_mask ? mask : g) << 3 | o;
	return 0;
}

/* chmod of an inode with an access ACL: the owner, mask (or group) and other entries
 * take the new permission bits. */
static void acl_chmod(uint8_t *v, size_t len, uint32_t mode)
{
	int n = acl_count(v, len);
	uint8_t *group = NULL, *mask = NULL;

	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;

		switch (acl_tag(e)) {
		case ACL_USER_OBJ:
			acl_set_perm(e, mode >> 6);
			break;
		case ACL_GROUP_OBJ:
			group = e;
			break;
		case ACL_MASK:
			mask = e;
			break;
		case ACL_OTHER:
			acl_set_perm(e, mode);
			break;
		}
	}
	if (mask || group)
		acl_set_perm(mask ? mask : group, mode >> 3);
}

/*
 * A new inode in a directory with a default ACL: its access ACL is the default ACL
 * with each of the three triads limited by the mode the creator asked for, and its
 * mode bits are what that ACL grants (the umask is not used). *mode is updated; true
 * when the ACL says more than the mode (it must be stored).
 */
static bool acl_inherit(uint8_t *v, size_t len, uint32_t *mode)
{
	int n = acl_count(v, len);
	uint8_t *group = NULL, *mask = NULL;
	uint32_t want = *mode & 0777, got = 0;
	bool extended = false;

	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;

		switch (acl_tag(e)) {
		case ACL_USER_OBJ:
			acl_set_perm(e, acl_perm(e) & (want >> 6));
			got |= (uint32_t)(acl_perm(e) & 7) << 6;
			break;
		case ACL_OTHER:
			acl_set_perm(e, acl_perm(e) & want);
			got |= acl_perm(e) & 7;
			break;
		case ACL_GROUP_OBJ:
			group = e;
			break;
		case ACL_MASK:
			mask = e;
			extended = true;
			break;
		default:
			extended = true;
		}
	}
	if (mask || group) {
		uint8_t *e = mask ? mask : group;

		acl_set_perm(e, acl_perm(e) & (want >> 3));
		got |= (uint32_t)(acl_perm(e) & 7) << 3;
	}
	*mode = (*mode & ~0777u) | got;
	return extended;
}

static int put_xattr_flagged(struct kv_txn *t, struct meta_attr *a, const char *name, const void *v,
			     size_t len, uint32_t flag)
{
	uint8_t k[8 + 256];

	a->flags |= flag;
	return kv_put(t, KV_XATTRS, k, xattr_key(k, a->ino, name), v, len);
}

/* The ACLs a new inode a takes from its directory p (which has a default ACL);
 * a->mode becomes what they grant. Before a is written. */
static int inherit_acls(struct kv_txn *t, const struct meta_attr *p, struct meta_attr *a)
{
	uint8_t k[8 + 256], *acl;
	const uint8_t *v;
	size_t vlen;
	int rc = kv_get(t, KV_XATTRS, k, xattr_key(k, p->ino, META_ACL_DEFAULT), &v, &vlen);

	if (rc == -ENOENT || (rc == 0 && acl_count(v, vlen) <= 0))
		return 1; /* none after all: the umask applies */
	if (rc < 0)
		return rc;
	acl = malloc(vlen);
	if (!acl)
		return -ENOMEM;
	memcpy(acl, v, vlen); /* before any put: a put may move what a get returned */
	if (S_ISDIR(a->mode))
		rc = put_xattr_flagged(t, a, META_ACL_DEFAULT, acl, vlen, META_F_ACL_DEFAULT);
	if (acl_inherit(acl, vlen, &a->mode) && rc == 0)
		rc = put_xattr_flagged(t, a, META_ACL_ACCESS, acl, vlen, META_F_ACL_ACCESS);
	free(acl);
	return rc;
}

/* chmod: the access ACL (if any) follows the new mode. */
static int chmod_acl(struct kv_txn *t, struct meta_attr *a)
{
	uint8_t k[8 + 256], *acl;
	const uint8_t *v;
	size_t vlen, klen = xattr_key(k, a->ino, META_ACL_ACCESS);
	int rc;

	if (!(a->flags & META_F_ACL_ACCESS))
		return 0;
	rc = kv_get(t, KV_XATTRS, k, klen, &v, &vlen);
	if (rc == -ENOENT) {
		a->flags &= ~META_F_ACL_ACCESS;
		return 0;
	}
	if (rc < 0 || acl_count(v, vlen) < 0)
		return rc < 0 ? rc : 0;
	acl = malloc(vlen);
	if (!acl)
		return -ENOMEM;
	memcpy(acl, v, vlen);
	acl_chmod(acl, vlen, a->mode);
	rc = kv_put(t, KV_XATTRS, k, klen, acl, vlen);
	free(acl);
	return rc;
}

/* ---------------------------------------------------------------- public */

/*
 * ino was found gone (or trashed) where this kernel reached it through a name it caches:
 * the caller answers ESTALE and the kernel looks the name up again. What this process
 * read ahead of the inode must not answer that lookup: its stamp moves (by a whole
 * commit's worth, never marked committing).
 */
static void stamp_gone(struct meta *m, uint64_t ino)
{
	if (m->kv->shared)
		__atomic_add_fetch(stamp_slot(m, ino), STAMP_BEGIN + STAMP_END, __ATOMIC_SEQ_CST);
}

int meta_getattr(struct meta *m, uint64_t ino, struct meta_attr *out)
{
	int rc = IN_TXN_ONE(m, get_attr(t, ino, out));

	if (rc == -ENOENT)
		stamp_gone(m, ino);
	return rc;
}

uint64_t meta_reads_begin(struct meta *m)
{
	uint64_t ended = __atomic_load_n(&m->commits_ended, __ATOMIC_SEQ_CST);
	uint64_t begun = __atomic_load_n(&m->commits_begun, __ATOMIC_SEQ_CST);

	return begun == ended ? begun : UINT64_MAX; /* one committing: nothing is noted */
}

static struct attr_memo *attr_slot(struct meta *m, uint64_t ino)
{
	return &m->attr_memo[(ino * 0x9e3779b97f4a7c15ull) >> 52]; /* 4,096 slots */
}

void meta_note_attrs(struct meta *m, uint64_t begun, const struct meta_attr *a, int64_t age_ns)
{
	struct attr_memo *slot;
	uint64_t stamp;

	if (m->dir_attr_ttl_ns <= 0 || begun == UINT64_MAX)
		return;
	slot = attr_slot(m, a->ino);
	pthread_mutex_lock(&m->attr_memo_lock);
	/* No commit of this process began since the read did: what it read is current
	 * for this process, and the stamp now is the one it was read under. */
	if (__atomic_load_n(&m->commits_begun, __ATOMIC_SEQ_CST) == begun &&
	    meta_change_stamp(m, a->ino, &stamp)) {
		slot->ino = a->ino;
		slot->stamp = stamp;
		slot->at_ns = monotonic_ns() - (uint64_t)(age_ns > 0 ? age_ns : 0);
		slot->flags = a->flags;
	}
	pthread_mutex_unlock(&m->attr_memo_lock);
}

bool meta_xattr_absent(struct meta *m, uint64_t ino, const char *name)
{
	struct attr_memo *slot;
	uint32_t flags = 0;
	uint64_t stamp;
	bool known = false;

	if (m->dir_attr_ttl_ns <= 0)
		return false;
	slot = attr_slot(m, ino);
	pthread_mutex_lock(&m->attr_memo_lock);
	if (slot->ino == ino && monotonic_ns() - slot->at_ns < (uint64_t)m->dir_attr_ttl_ns &&
	    meta_change_stamp(m, ino, &stamp) && stamp == slot->stamp) {
		flags = slot->flags;
		known = true;
	}
	pthread_mutex_unlock(&m->attr_memo_lock);
	if (!known || !(flags & META_F_NO_XATTRS))
		return false;
	if (!strcmp(name, META_ACL_ACCESS))
		return !(flags & META_F_ACL_ACCESS);
	if (!strcmp(name, META_ACL_DEFAULT))
		return !(flags & META_F_ACL_DEFAULT);
	return true;
}

int meta_getattr_dir(struct meta *m, uint64_t ino, struct meta_attr *out)
{
	if (m->dir_attr_ttl_ns > 0) {
		struct dir_memo *slot = memo_slot(m, ino);
		uint64_t stamp;
		bool hit = false;

		pthread_mutex_lock(&m->dir_memo_lock);
		if (slot->ino == ino && meta_change_stamp(m, ino, &stamp) && stamp == slot->stamp &&
		    monotonic_ns() - slot->at_ns < (uint64_t)m->dir_attr_ttl_ns) {
			*out = slot->a;
			hit = true;
		}
		pthread_mutex_unlock(&m->dir_memo_lock);
		if (hit)
			return 0;
	}
	return meta_getattr(m, ino, out);
}

/* The entry and its inode in one engine call (one round trip on PostgreSQL). */
/* The directory holding directory ino (the root's is the root). */
static int get_parent(struct kv_txn *t, uint64_t ino, uint64_t *parent)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;
	int rc;

	if (ino == META_ROOT_INO) {
		*parent = ino;
		return 0;
	}
	be64(k, ino);
	rc = kv_get(t, KV_PARENTS, k, 8, &v, &vlen);
	if (rc != 0)
		return rc;
	if (vlen != 8)
		return -EIO;
	*parent = rd64(v);
	return 0;
}

static int lookup_tx(struct kv_txn *t, uint64_t parent, const char *name, struct meta_attr *out)
{
	uint8_t k[8 + META_NAME_MAX];
	const uint8_t *v, *a;
	size_t vlen, alen;
	int rc;

	if (!strcmp(name, ".") || !strcmp(name, "..")) {
		uint64_t ino = parent; /* ".": any inode, as long as it still has a name */

		rc = get_attr(t, parent, out);
		if (rc == 0 && !strcmp(name, "..")) {
			if (!S_ISDIR(out->mode))
				return -ENOTDIR;
			rc = get_parent(t, parent, &ino);
			if (rc == 0)
				rc = get_attr(t, ino, out);
		}
		if (rc == 0 && out->nlink == 0)
			rc = -ENOENT; /* removed, only still open */
		return rc;
	}
	rc = kv_get_follow(t, KV_DENTRIES, k, dentry_key(k, parent, name), KV_INODES, &v, &vlen, &a,
			   &alen);
	if (rc < 0)
		return rc;
	if (vlen != 8)
		return -EIO;
	if (!a)
		return -ENOENT;
	rc = meta_decode_attr(a, alen, out);
	if (rc < 0)
		return rc;
	if (out->nlink == 0)
		return -ENOENT; /* removed, only still open */
	return 0;
}

int meta_lookup(struct meta *m, uint64_t parent, const char *name, struct meta_attr *out)
{
	int rc;

	if (strlen(name) > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, ".") && strcmp(name, "..")) /* one join: one statement */
		rc = IN_TXN_ONE(m, lookup_tx(t, parent, name, out));
	else
		rc = IN_TXN(m, false, lookup_tx(t, parent, name, out));
	if (rc == 0)
		meta_seen(m, out);
	return rc;
}

void meta_seen(struct meta *m, const struct meta_attr *a)
{
	if ((a->flags & META_F_TRASHED) && m->kv->shared) {
		/* found under its name in the trash: this kernel may open it (meta_hold) */
		pthread_mutex_lock(&m->trash_lock);
		inomap_set(&m->trash_seen, a->ino, 1);
		pthread_mutex_unlock(&m->trash_lock);
	}
}

/* ---------------------------------------------------------------- lookups read ahead */

/* dircache's test: ino's change stamp is still `stamp` (nothing of this process changed
 * it since it was taken, nothing is committing). */
static bool stamp_current(void *ctx, uint64_t ino, uint64_t stamp)
{
	uint64_t now;

	return meta_change_stamp((struct meta *)ctx, ino, &now) && now == stamp;
}

/* A directory's entries with their inodes, read in one statement. */
struct window_load {
	uint64_t dir;
	int limit, n;
	struct window_row {
		struct meta_attr attr;
		int rc; /* what meta_lookup would answer: 0 (attr), -ENOENT, -EIO */
		uint32_t name_off;
	} * rows;
	char *names; /* each NUL-terminated */
	size_t used, cap;
};

static int window_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
		      const uint8_t *v2, size_t v2len)
{
	struct window_load *w = ctx;
	struct window_row *r;
	size_t nl = klen - 8;

	if (klen <= 8 || nl > META_NAME_MAX || vlen != 8 || w->n >= w->limit)
		return -EIO;
	if (w->used + nl + 1 > w->cap) {
		size_t cap = w->cap * 2 + nl + 1;
		char *p = realloc(w->names, cap);

		if (!p)
			return -ENOMEM;
		w->names = p;
		w->cap = cap;
	}
	r = &w->rows[w->n++];
	r->name_off = (uint32_t)w->used;
	memcpy(w->names + w->used, k + 8, nl);
	w->names[w->used + nl] = 0;
	w->used += nl + 1;
	/* as lookup_tx: no inode, or one left with no link, is no entry */
	memset(&r->attr, 0, sizeof(r->attr));
	r->attr.ino = rd64(v);
	r->rc = v2 ? meta_decode_attr(v2, v2len, &r->attr) : -ENOENT;
	if (r->rc == 0 && (r->attr.nlink == 0 || r->attr.ino != rd64(v)))
		r->rc = r->attr.nlink == 0 ? -ENOENT : -EIO;
	return 0;
}

static int window_tx(struct kv_txn *t, struct window_load *w, const char *from)
{
	uint8_t lo[8 + META_NAME_MAX], hi[8];

	w->n = 0; /* a run again starts over */
	w->used = 0;
	be64(hi, w->dir + 1);
	return kv_scan_follow(t, KV_DENTRIES, lo, dentry_key(lo, w->dir, from), hi,
			      w->dir == UINT64_MAX ? 0 : 8, w->limit, KV_INODES, window_one, w);
}

/*
 * DIRCACHE_LOAD: reads a batch of dir's entries from the name (or from the first) with
 * their inodes, in one statement; hands what may be cached to the dircache; answers
 * name from it when the batch covers it, else asks for name alone. The stamps are taken
 * before the read: an entry whose inode (or a window whose directory) this process
 * changes from then on no longer matches them.
 */
static int lookup_load(struct meta *m, uint64_t dir, const char *name, bool from_start,
		       struct meta_attr *out, int64_t *age_ns)
{
	struct window_load w = {.dir = dir, .limit = m->lookup_batch};
	struct dircache_row *dr = NULL;
	const char *from = from_start ? "" : name;
	uint64_t all, *snap = malloc(STAMP_SLOTS * sizeof(*snap));
	int64_t t0;
	bool cacheable, covered;
	int rc, found = -1;

	w.rows = malloc((size_t)w.limit * sizeof(*w.rows));
	w.cap = (size_t)w.limit * 16;
	w.names = malloc(w.cap);
	dr = malloc((size_t)w.limit * sizeof(*dr));
	if (!snap || !w.rows || !w.names || !dr) {
		rc = -ENOMEM;
		goto out_abandon;
	}
	t0 = (int64_t)monotonic_ns();
	all = __atomic_load_n(&m->stamp_all, __ATOMIC_SEQ_CST);
	for (int i = 0; i < STAMP_SLOTS; i++)
		snap[i] = __atomic_load_n(&m->stamps[i], __ATOMIC_SEQ_CST);
	rc = IN_TXN_ONE(m, window_tx(t, &w, from));
	if (rc < 0)
		goto out_abandon;
	cacheable = !(all & STAMP_BUSY);
	{
		uint64_t ds = snap[stamp_slot(m, dir) - m->stamps];

		cacheable = cacheable && !(ds & STAMP_BUSY);
		for (int i = 0; i < w.n; i++) {
			uint64_t s = snap[stamp_slot(m, w.rows[i].attr.ino) - m->stamps];

			dr[i].name = w.names + w.rows[i].name_off;
			dr[i].attr = w.rows[i].rc == 0 ? &w.rows[i].attr : NULL;
			dr[i].stamp = all + s;
			dr[i].known = w.rows[i].rc == 0 && !(s & STAMP_BUSY);
			if (!strcmp(dr[i].name, name))
				found = i;
		}
		covered = dircache_name_cmp(name, from) >= 0 &&
			  (w.n < w.limit || dircache_name_cmp(name, dr[w.n - 1].name) <= 0);
		if (!cacheable ||
		    dircache_fill(m->dircache, dir, from, w.n < w.limit ? NULL : dr[w.n - 1].name,
				  dr, w.n, w.n == w.limit, t0, all + ds) < 0)
			dircache_abandon(m->dircache, dir);
	}
	if (!covered) {
		/* a big directory read from its first name: the name is further on */
		rc = meta_lookup(m, dir, name, out);
		*age_ns = 0;
	} else if (found < 0) {
		rc = -ENOENT;
	} else {
		rc = w.rows[found].rc;
		if (rc == 0) {
			*out = w.rows[found].attr;
			*age_ns = (int64_t)monotonic_ns() - t0;
		}
	}
	goto out;
out_abandon:
	dircache_abandon(m->dircache, dir);
out:
	free(snap);
	free(w.rows);
	free(w.names);
	free(dr);
	return rc;
}

int meta_lookup_cached(struct meta *m, uint64_t parent, const char *name, struct meta_attr *out,
		       int64_t *age_ns)
{
	struct dircache_answer a;
	int64_t now;
	int rc;

	*age_ns = 0;
	if (!m->dircache || !strcmp(name, ".") || !strcmp(name, "..") || !*name ||
	    strlen(name) > META_NAME_MAX)
		return meta_lookup(m, parent, name, out);
	now = (int64_t)monotonic_ns();
	switch (dircache_find(m->dircache, parent, name, now, stamp_current, m, &a)) {
	case DIRCACHE_HIT:
		*out = a.attr;
		*age_ns = now > a.loaded_ns ? now - a.loaded_ns : 0; /* another thread's load */
		meta_seen(m, out);
		return 0;
	case DIRCACHE_ABSENT:
		/* Not in the batch: asked all the same. A name another mount made since shows
		 * at once (close-to-open holds for new files too: an open() after A's close()
		 * finds the file), as without the read ahead; no name is ever missing for the
		 * cache time. */
		return meta_lookup(m, parent, name, out);
	case DIRCACHE_LOAD:
		rc = lookup_load(m, parent, name, a.from_start, out, age_ns);
		if (rc == 0)
			meta_seen(m, out);
		return rc;
	default:
		return meta_lookup(m, parent, name, out);
	}
}

bool meta_lookup_stats(struct meta *m, struct meta_lookup_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!m->dircache)
		return false;
	dircache_stats(m->dircache, out);
	return true;
}

uint32_t meta_generation(struct meta *m)
{
	return m->generation;
}

/*
 * *made: the inode an earlier run of this transaction allocated (0 at the first). A run
 * whose COMMIT lost its connection may have committed: when the name now holds that very
 * inode (numbers are never reused), it did, and this run reports it instead of EEXIST.
 */
/*
 * A directory a new name may go into: -ENOTDIR for anything else, -ENOENT for one that
 * was removed (nlink 0, kept while a mount's kernel holds it: another mount may still
 * name it; an entry made there would outlive it, unreachable).
 */
static int live_dir(const struct meta_attr *dir)
{
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	return dir->nlink == 0 ? -ENOENT : 0;
}

static int create_tx(struct kv_txn *t, uint64_t parent, const char *name, uint32_t mode,
		     uint32_t umask, uint32_t uid, uint32_t gid, uint32_t rdev, const char *target,
		     struct meta_attr *out, uint64_t *made)
{
	struct meta_attr p, a;
	uint64_t ino;
	int64_t now = meta_now_ns();
	int rc;

	{
		/* The parent and the name at once. */
		uint8_t pk[8], dk[8 + META_NAME_MAX];
		struct kv_read r[2] = {attr_read(pk, parent)};

		r[1] = (struct kv_read){
		    .table = KV_DENTRIES, .key = dk, .klen = dentry_key(dk, parent, name)};
		rc = kv_prefetch(t, r, 2);
		if (rc < 0)
			return rc;
	}
	if (*made && get_dentry(t, parent, name, &ino) == 0 && ino == *made)
		return get_attr(t, ino, out ? out : &a);
	rc = get_attr(t, parent, &p);

	if (rc == 0)
		rc = live_dir(&p);
	if (rc == 0 && get_dentry(t, parent, name, &ino) == 0)
		rc = -EEXIST;
	if (rc == 0)
		rc = kv_next_id(t, KV_ID_INO, 2, &ino);
	if (rc == 0) {
		*made = ino;
		memset(&a, 0, sizeof(a));
		a.ino = ino;
		a.flags = META_F_NO_XATTRS;
		a.mode = target ? (S_IFLNK | 0777) : mode;
		a.nlink = S_ISDIR(a.mode) ? 2 : 1;
		a.uid = uid;
		a.gid = gid;
		/* The setgid bit of the directory passes its group (and to directories). */
		if (p.mode & S_ISGID) {
			a.gid = p.gid;
			if (S_ISDIR(a.mode))
				a.mode |= S_ISGID;
		}
		a.rdev = rdev;
		a.atime_ns = a.mtime_ns = a.ctime_ns = a.crtime_ns = now;
		if (target)
			a.size = strlen(target);
		/* A default ACL of the directory is inherited (and the umask ignored). */
		rc = !target && (p.flags & META_F_ACL_DEFAULT) ? inherit_acls(t, &p, &a) : 1;
		if (rc == 1) {
			if (!target)
				a.mode &= ~(umask & 0777);
			rc = 0;
		}
		if (rc == 0)
			rc = put_attr(t, &a);
	}
	if (rc == 0 && target) {
		uint8_t k[8];

		be64(k, ino);
		rc = kv_put(t, KV_SYMLINKS, k, 8, target, strlen(target));
	}
	if (rc == 0)
		rc = put_dentry(t, parent, name, ino);
	if (rc == 0 && S_ISDIR(a.mode))
		rc = set_parent(t, ino, parent);
	if (rc == 0) {
		if (S_ISDIR(a.mode))
			p.nlink++;
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(t, &p);
	}
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static void hold_key(uint8_t *k, const struct meta_hold *h);

static int create_held_tx(struct kv_txn *t, uint64_t parent, const char *name, uint32_t mode,
			  uint32_t umask, uint32_t uid, uint32_t gid, struct meta_attr *out,
			  uint64_t *made, struct meta_hold *h)
{
	struct meta_attr a;
	uint8_t k[24];
	int rc = create_tx(t, parent, name, mode, umask, uid, gid, 0, NULL, &a, made);

	if (rc < 0)
		return rc;
	if (out)
		*out = a;
	h->ino = a.ino;
	if (!t->kv->shared || !h->session)
		return 0;
	hold_key(k, h);
	return kv_put(t, KV_HOLDS, k, 24, "", 0);
}

int meta_create_held(struct meta *m, uint64_t parent, const char *name, uint32_t mode,
		     uint32_t umask, uint32_t uid, uint32_t gid, struct meta_attr *out,
		     struct meta_hold *h)
{
	uint64_t made = 0;
	int rc = check_name(name);

	if (rc < 0)
		return rc;
	h->session = meta_session_id(m);
	h->serial = __atomic_add_fetch(&m->hold_serial, 1, __ATOMIC_RELAXED);
	return IN_TXN_LAZY(m,
			   create_held_tx(t, parent, name, mode, umask, uid, gid, out, &made, h));
}

int meta_create(struct meta *m, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, uint32_t rdev, const char *target, struct meta_attr *out)
{
	uint64_t made = 0;
	int rc = check_name(name);

	if (rc < 0)
		return rc;
	return IN_TXN_LAZY(m,
			   create_tx(t, parent, name, mode, 0, uid, gid, rdev, target, out, &made));
}

int meta_create_umask(struct meta *m, uint64_t parent, const char *name, uint32_t mode,
		      uint32_t umask, uint32_t uid, uint32_t gid, uint32_t rdev, const char *target,
		      struct meta_attr *out)
{
	uint64_t made = 0;
	int rc = check_name(name);

	if (rc < 0)
		return rc;
	return IN_TXN_LAZY(
	    m, create_tx(t, parent, name, mode, umask, uid, gid, rdev, target, out, &made));
}

static int readlink_tx(struct kv_txn *t, uint64_t ino, char *buf, size_t cap)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;
	int rc;

	be64(k, ino);
	rc = kv_get(t, KV_SYMLINKS, k, 8, &v, &vlen);
	if (rc == 0) {
		size_t n = vlen < cap - 1 ? vlen : cap - 1;

		memcpy(buf, v, n);
		buf[n] = '\0';
	} else if (rc == -ENOENT) {
		rc = -EINVAL;
	}
	return rc;
}

int meta_readlink(struct meta *m, uint64_t ino, char *buf, size_t cap)
{
	return IN_TXN(m, false, readlink_tx(t, ino, buf, cap));
}

static int link_tx(struct kv_txn *t, uint64_t ino, uint64_t newparent, const char *newname,
		   struct meta_attr *out)
{
	struct meta_attr a, p;
	uint64_t existing;
	int64_t now = meta_now_ns();
	int rc = get_attr(t, ino, &a);

	if (rc == 0 && S_ISDIR(a.mode))
		rc = -EPERM;
	if (rc == 0)
		rc = get_attr(t, newparent, &p);
	if (rc == 0)
		rc = live_dir(&p);
	if (rc == 0 && get_dentry(t, newparent, newname, &existing) == 0)
		rc = -EEXIST;
	if (rc == 0 && a.nlink == 0)
		rc = -ENOENT;
	if (rc == 0)
		rc = put_dentry(t, newparent, newname, ino);
	if (rc == 0) {
		a.nlink++;
		a.ctime_ns = now;
		rc = put_attr(t, &a);
	}
	if (rc == 0) {
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(t, &p);
	}
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_link(struct meta *m, uint64_t ino, uint64_t newparent, const char *newname,
	      struct meta_attr *out)
{
	int rc = check_name(newname);

	if (rc < 0)
		return rc;
	return IN_TXN_LAZY(m, link_tx(t, ino, newparent, newname, out));
}

/* ---------------------------------------------------------------- trash */

/*
 * With a trash period, a file (or symlink) that loses its last name to unlink or to a
 * rename over it is not removed: its entry moves, in the same transaction, to
 * /.trash/<YYYY-MM-DD-HH>/<ino>-<name> (the UTC hour of the removal), its ctime
 * becomes the time of removal and the xattr META_TRASH_XATTR records the path it had.
 * A rename out of the trash (a restore) drops that xattr. meta_trash_purge removes
 * for good what has been there longer than the period. Files with other names left,
 * directories, and anything removed inside /.trash itself are removed as without trash.
 */

static size_t xattr_key(uint8_t *k, uint64_t ino, const char *name);

struct name_find {
	uint64_t ino;
	int scanned;
	char *buf;
	size_t cap;
	bool found;
};

/* How many entries of one directory the path of a removed file may scan per level. */
#define TRASH_PATH_SCAN 4096

static int name_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct name_find *f = ctx;

	if (++f->scanned > TRASH_PATH_SCAN)
		return 1;
	if (klen < 8 || vlen != 8 || rd64(v) != f->ino || klen - 8 >= f->cap)
		return 0;
	memcpy(f->buf, k + 8, klen - 8);
	f->buf[klen - 8] = '\0';
	f->found = true;
	return 1;
}

/*
 * The path of parent/name from the root, into buf. Directories record their parent
 * but not their name: each level's name is found by scanning the parent's entries, at
 * most TRASH_PATH_SCAN of them; a level not found in time is written "#<inode>".
 */
static int path_of(struct kv_txn *t, uint64_t parent, const char *name, char *buf, size_t cap)
{
	char tail[4096], part[META_NAME_MAX + 1];
	uint64_t dir = parent;
	int depth = 0;

	snprintf(tail, sizeof(tail), "/%s", name);
	while (dir != META_ROOT_INO && depth++ < 256) {
		struct name_find f = {.ino = dir, .buf = part, .cap = sizeof(part)};
		uint8_t from[8], to[8];
		uint64_t up;
		char joined[4096];
		int rc = get_parent(t, dir, &up);

		if (rc < 0)
			return rc;
		be64(from, up);
		be64(to, up + 1);
		rc = kv_scan(t, KV_DENTRIES, from, 8, to, 8, false, TRASH_PATH_SCAN + 1, name_one,
			     &f);
		if (rc < 0)
			return rc;
		if (!f.found)
			snprintf(part, sizeof(part), "#%llu", (unsigned long long)dir);
		if ((size_t)snprintf(joined, sizeof(joined), "/%s%s", part, tail) >= sizeof(joined))
			break; /* deeper than a path can be: keep what fits */
		memcpy(tail, joined, sizeof(tail));
		dir = up;
	}
	snprintf(buf, cap, "%s", tail);
	return 0;
}

/* The directory parent/name, created (mode 0700, owned by root) when missing. */
static int trash_dir(struct kv_txn *t, uint64_t parent, const char *name, uint64_t *ino)
{
	struct meta_attr a;
	uint64_t made = 0;
	int rc = get_dentry(t, parent, name, ino);

	if (rc == -ENOENT) {
		rc = create_tx(t, parent, name, S_IFDIR | 0700, 0, 0, 0, 0, NULL, &a, &made);
		*ino = a.ino;
		return rc;
	}
	if (rc == 0)
		rc = get_attr(t, *ino, &a);
	if (rc == 0 && !S_ISDIR(a.mode))
		rc = -ENOTDIR;
	return rc;
}

/* True if directory dir is /.trash or one of its hour directories. */
static bool in_trash(struct kv_txn *t, uint64_t dir)
{
	uint64_t trash, up;

	if (get_dentry(t, META_ROOT_INO, META_TRASH_NAME, &trash) < 0)
		return false;
	return dir == trash || (get_parent(t, dir, &up) == 0 && up == trash);
}

/* Whether removing parent/name (inode a) moves it to the trash instead. */
static bool goes_to_trash(struct meta *m, struct kv_txn *t, uint64_t parent,
			  const struct meta_attr *a)
{
	return m->trash_ns > 0 && (S_ISREG(a->mode) || S_ISLNK(a->mode)) && a->nlink == 1 &&
	       !in_trash(t, parent);
}

/* Moves the entry parent/name of inode a to the trash (see above). */
static int trash_entry(struct kv_txn *t, uint64_t parent, const char *name, struct meta_attr *a,
		       int64_t now)
{
	char path[4096], hour[32], entry[META_NAME_MAX + 1];
	uint8_t k[8 + 256];
	struct meta_attr h;
	uint64_t trash, hdir;
	time_t secs = (time_t)(now / 1000000000);
	struct tm tm;
	int rc;

	rc = path_of(t, parent, name, path, sizeof(path));
	if (rc < 0)
		return rc;
	gmtime_r(&secs, &tm);
	strftime(hour, sizeof(hour), "%Y-%m-%d-%H", &tm);
	snprintf(entry, sizeof(entry), "%llu-%s", (unsigned long long)a->ino, name);
	rc = trash_dir(t, META_ROOT_INO, META_TRASH_NAME, &trash);
	if (rc == 0)
		rc = trash_dir(t, trash, hour, &hdir);
	if (rc == 0)
		rc = del_dentry(t, parent, name);
	if (rc == 0)
		rc = put_dentry(t, hdir, entry, a->ino);
	if (rc == 0)
		rc = kv_put(t, KV_XATTRS, k, xattr_key(k, a->ino, META_TRASH_XATTR), path,
			    strlen(path));
	if (rc == 0) {
		a->ctime_ns = now;
		a->flags |= META_F_TRASHED;
		a->flags &= ~META_F_NO_XATTRS; /* it has the trash's xattr */
		rc = put_attr(t, a);
	}
	if (rc == 0)
		rc = get_attr(t, hdir, &h);
	if (rc == 0) {
		h.mtime_ns = h.ctime_ns = now;
		rc = put_attr(t, &h);
	}
	return rc;
}

/* unlink (dir false) and rmdir (dir true): one transaction removing parent/name. */
static int remove_tx(struct meta *m, struct kv_txn *t, uint64_t parent, const char *name, bool dir,
		     uint64_t *gone_ino)
{
	struct meta_attr a, p;
	uint64_t ino;
	int64_t now = meta_now_ns();
	int rc;

	*gone_ino = 0;
	rc = get_dentry(t, parent, name, &ino);
	if (rc == 0)
		rc = get_attr(t, ino, &a);
	if (rc == 0 && !dir && S_ISDIR(a.mode))
		rc = -EISDIR;
	if (rc == 0 && dir && !S_ISDIR(a.mode))
		rc = -ENOTDIR;
	if (rc == 0 && dir && !dir_empty(t, ino))
		rc = -ENOTEMPTY;
	if (rc == 0 && !dir && goes_to_trash(m, t, parent, &a)) {
		rc = trash_entry(t, parent, name, &a, now);
	} else {
		if (rc == 0)
			rc = del_dentry(t, parent, name);
		if (rc == 0)
			rc = drop_link(m, t, ino, now, gone_ino); /* freed once unused (orphans) */
	}
	if (rc == 0)
		rc = get_attr(t, parent, &p);
	if (rc == 0) {
		if (dir && p.nlink > 2)
			p.nlink--; /* the removed directory's ".." */
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(t, &p);
	}
	return rc;
}

int meta_unlink(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino)
{
	*gone_ino = 0;
	return IN_TXN_LAZY(m, remove_tx(m, t, parent, name, false, gone_ino));
}

int meta_rmdir(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino)
{
	*gone_ino = 0;
	return IN_TXN_LAZY(m, remove_tx(m, t, parent, name, true, gone_ino));
}

/* True if directory `ancestor` is `ino` or one of its ancestors (a rename into itself). */
static bool is_ancestor(struct kv_txn *t, uint64_t ancestor, uint64_t ino)
{
	for (int depth = 0; depth < 65536; depth++) {
		uint8_t k[8];
		const uint8_t *v;
		size_t vlen;

		if (ino == ancestor)
			return true;
		if (ino == META_ROOT_INO)
			return false;
		be64(k, ino);
		if (kv_get(t, KV_PARENTS, k, 8, &v, &vlen) != 0 || vlen != 8)
			return false;
		ino = rd64(v);
	}
	return true; /* a loop: refuse */
}

static int rename_tx(struct meta *m, struct kv_txn *t, uint64_t parent, const char *name,
		     uint64_t newparent, const char *newname, unsigned flags, uint64_t *gone_ino)
{
	struct meta_attr src, dst, p, np;
	uint64_t ino, target = 0;
	int64_t now = meta_now_ns();
	bool target_exists;
	int rc;

	*gone_ino = 0;
	rc = get_dentry(t, parent, name, &ino);
	if (rc == 0)
		rc = get_attr(t, ino, &src);
	if (rc == 0)
		rc = get_attr(t, newparent, &np);
	if (rc == 0)
		rc = live_dir(&np);
	if (rc < 0)
		return rc;
	target_exists = get_dentry(t, newparent, newname, &target) == 0;
	if (target_exists && target == ino)
		return 0; /* the same file: nothing to do */
	if ((flags & RENAME_NOREPLACE) && target_exists)
		return -EEXIST;
	if ((flags & RENAME_EXCHANGE) && !target_exists)
		return -ENOENT;
	if (S_ISDIR(src.mode) && parent != newparent && is_ancestor(t, ino, newparent))
		return -EINVAL;
	if (target_exists) {
		rc = get_attr(t, target, &dst);
		if (rc < 0)
			return rc;
	}
	if (flags & RENAME_EXCHANGE) {
		if (S_ISDIR(dst.mode) && parent != newparent && is_ancestor(t, target, parent))
			return -EINVAL;
		rc = put_dentry(t, parent, name, target);
		if (rc == 0)
			rc = put_dentry(t, newparent, newname, ino);
		if (rc == 0 && S_ISDIR(src.mode))
			rc = set_parent(t, ino, newparent);
		if (rc == 0 && S_ISDIR(dst.mode))
			rc = set_parent(t, target, parent);
		if (rc == 0 && parent != newparent && S_ISDIR(src.mode) != S_ISDIR(dst.mode)) {
			/* A directory moved each way: fix the parents' link counts. */
			rc = get_attr(t, parent, &p);
			if (rc == 0 && S_ISDIR(src.mode)) {
				p.nlink--;
				np.nlink++;
			} else if (rc == 0) {
				p.nlink++;
				np.nlink--;
			}
			if (rc == 0)
				rc = put_attr(t, &p);
		}
		src.ctime_ns = dst.ctime_ns = now;
		if (rc == 0)
			rc = put_attr(t, &src);
		if (rc == 0)
			rc = put_attr(t, &dst);
		goto parents;
	}
	if (target_exists && !S_ISDIR(src.mode) && !S_ISDIR(dst.mode) &&
	    goes_to_trash(m, t, newparent, &dst)) {
		/* The file renamed over goes to the trash; newparent may have changed (the
		 * trash created in the root). */
		rc = trash_entry(t, newparent, newname, &dst, now);
		if (rc == 0)
			rc = get_attr(t, newparent, &np);
		if (rc < 0)
			return rc;
		target_exists = false;
	}
	if (in_trash(t, parent) && !in_trash(t, newparent)) {
		/* A restore: the file no longer needs the path it had. */
		uint8_t k[8 + 256];

		kv_del(t, KV_XATTRS, k, xattr_key(k, ino, META_TRASH_XATTR));
		src.flags &= ~META_F_TRASHED; /* written below */
	}
	if (target_exists) {
		if (S_ISDIR(src.mode) && !S_ISDIR(dst.mode))
			rc = -ENOTDIR;
		else if (!S_ISDIR(src.mode) && S_ISDIR(dst.mode))
			rc = -EISDIR;
		else if (S_ISDIR(dst.mode) && !dir_empty(t, target))
			rc = -ENOTEMPTY;
		if (rc == 0)
			rc = drop_link(m, t, target, now, gone_ino);
		if (rc == 0 && S_ISDIR(dst.mode))
			np.nlink--;
	}
	if (rc == 0)
		rc = del_dentry(t, parent, name);
	if (rc == 0)
		rc = put_dentry(t, newparent, newname, ino);
	if (rc == 0 && S_ISDIR(src.mode))
		rc = set_parent(t, ino, newparent);
	if (rc == 0 && S_ISDIR(src.mode) && parent != newparent) {
		rc = get_attr(t, parent, &p);
		if (rc == 0) {
			p.nlink--;
			rc = put_attr(t, &p);
		}
		np.nlink++;
	}
	if (rc == 0) {
		src.ctime_ns = now;
		rc = put_attr(t, &src);
	}
parents:
	if (rc == 0) {
		np.mtime_ns = np.ctime_ns = now;
		rc = put_attr(t, &np);
	}
	if (rc == 0 && parent != newparent) {
		rc = get_attr(t, parent, &p);
		if (rc == 0) {
			p.mtime_ns = p.ctime_ns = now;
			rc = put_attr(t, &p);
		}
	}
	return rc;
}

int meta_rename(struct meta *m, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, uint64_t *gone_ino)
{
	int rc = check_name(newname);

	*gone_ino = 0;
	if (rc < 0)
		return rc;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	return IN_TXN_LAZY(m, rename_tx(m, t, parent, name, newparent, newname, flags, gone_ino));
}

/* Does any session hold ino open? (An error counts as held: nothing is freed.) */
static bool is_held(struct kv_txn *t, uint64_t ino)
{
	uint8_t from[8], to[8];
	bool found = false;

	ino_range(from, to, ino);
	if (kv_scan(t, KV_HOLDS, from, 8, to, 8, false, 1, stop_at_first, &found) < 0)
		return true;
	return found;
}

static int release_tx(struct meta *m, struct kv_txn *t, uint64_t ino)
{
	struct meta_attr a;
	int rc = get_attr(t, ino, &a);

	if (rc == -ENOENT)
		return 0;
	/* With a shared engine another mount may still have it open (its hold). */
	if (rc == 0 && a.nlink == 0 && !(m->kv->shared && is_held(t, ino)))
		rc = free_inode(m, t, ino);
	return rc;
}

int meta_release_inode(struct meta *m, uint64_t ino)
{
	return IN_TXN_LAZY(m, release_tx(m, t, ino));
}

static int setattr_tx(struct meta *m, struct kv_txn *t, uint64_t ino, const struct meta_attr *in,
		      unsigned valid, struct meta_attr *out)
{
	struct meta_attr a;
	int64_t now = meta_now_ns();
	struct chunk_scan k;
	struct kv_read r[3];
	uint8_t ak[8];
	int rc;

	/* The attributes, and for a size change the intervals it may cut, at once. */
	r[0] = attr_read(ak, ino);
	if (valid & META_SET_SIZE) {
		chunk_scan_init(&k, ino, in->size);
		chunk_scan_reads(&k, PREFETCH_CHUNKS, r + 1);
	}
	rc = kv_prefetch(t, r, (valid & META_SET_SIZE) ? 3 : 1);
	if (rc == 0)
		rc = get_attr(t, ino, &a);

	if (rc == 0 && (valid & META_SET_SIZE)) {
		uint64_t removed = 0;

		if (S_ISDIR(a.mode))
			rc = -EISDIR;
		else if (in->size < a.size && (rc = ensure_stored(t, &a)) == 0)
			rc = punch(m, t, ino, in->size, UINT64_MAX, &removed);
		if (rc == 0 && removed)
			stored_change(&a, removed, 0);
		/* Any truncate marks the data modified, even to the same size (as Linux's
		 * local filesystems do; FUSE leaves mtime to us for truncate and ftruncate). */
		if (rc == 0) {
			a.mtime_ns = now;
			a.size = in->size;
		}
	}
	if (rc == 0) {
		if (valid & META_SET_MODE) {
			a.mode = (a.mode & S_IFMT) | (in->mode & 07777);
			rc = chmod_acl(t, &a);
		}
		if ((valid & META_SET_KILL_SUIDGID) && !S_ISDIR(a.mode))
			a.mode &= ~(unsigned)(S_ISUID | ((a.mode & S_IXGRP) ? S_ISGID : 0));
		if ((valid & META_SET_KILL_SGID) && !S_ISDIR(a.mode))
			a.mode &= ~(unsigned)S_ISGID;
		if (valid & META_SET_UID)
			a.uid = in->uid;
		if (valid & META_SET_GID)
			a.gid = in->gid;
		if (valid & META_SET_ATIME)
			a.atime_ns = in->atime_ns;
		if (valid & META_SET_MTIME)
			a.mtime_ns = in->mtime_ns;
		a.ctime_ns = (valid & META_SET_CTIME) ? in->ctime_ns : now;
		if (rc == 0)
			rc = put_attr(t, &a);
	}
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_setattr(struct meta *m, uint64_t ino, const struct meta_attr *in, unsigned valid,
		 struct meta_attr *out)
{
	return IN_TXN_LAZY(m, setattr_tx(m, t, ino, in, valid, out));
}

#define PREFETCH_WRITES 4 /* chunks of a commit whose reads are prefetched */

/*
 * The reads of write_chunks_tx at once (one round trip): the attributes, each chunk's
 * blob reference and the intervals it replaces; and `also` (a hold) if not NULL.
 */
static int write_prefetch(struct kv_txn *t, uint64_t ino, const struct meta_chunk *chunks, int n,
			  const struct kv_read *also)
{
	struct chunk_scan k[PREFETCH_WRITES];
	struct kv_read r[2 + 3 * PREFETCH_WRITES];
	uint8_t ak[8];
	int nr = 0;

	if (also)
		r[nr++] = *also;
	r[nr++] = attr_read(ak, ino);
	for (int i = 0; i < n && i < PREFETCH_WRITES; i++) {
		r[nr++] = (struct kv_read){
		    .table = KV_FIDREFS, .key = chunks[i].fid, .klen = strlen(chunks[i].fid)};
		chunk_scan_init(&k[i], ino, chunks[i].offset);
		chunk_scan_reads(&k[i], PREFETCH_CHUNKS, r + nr);
		nr += 2;
	}
	return kv_prefetch(t, r, nr);
}

static int write_chunks_tx(struct meta *m, struct kv_txn *t, uint64_t ino,
			   const struct meta_chunk *chunks, int n, uint64_t min_size, bool touch,
			   struct meta_attr *out)
{
	struct meta_attr a;
	int64_t now = meta_now_ns();
	int rc = get_attr(t, ino, &a);

	if (rc == 0)
		rc = ensure_stored(t, &a);
	for (int i = 0; i < n && rc == 0; i++) {
		uint64_t removed = 0;

		if (chunks[i].length == 0)
			continue;
		/* Referenced before the punch, so rewriting a blob's own range never
		 * sends it to gc. */
		rc = fidref_add(m, t, chunks[i].fid, 1);
		if (rc == 0)
			rc = punch(m, t, ino, chunks[i].offset, chunks[i].offset + chunks[i].length,
				   &removed);
		if (rc == 0)
			rc = put_chunk(t, ino, &chunks[i]);
		if (rc == 0)
			stored_change(&a, removed, chunks[i].length);
		if (rc == 0 && chunks[i].offset + chunks[i].length > a.size)
			a.size = chunks[i].offset + chunks[i].length;
	}
	/* Written after the last unlink (nlink 0) is fine: freed at release. */
	if (rc == 0) {
		if (min_size > a.size)
			a.size = min_size;
		if (touch)
			a.mtime_ns = a.ctime_ns = now;
		rc = put_attr(t, &a);
	}
	if (rc == 0 && out)
		*out = a;
	return rc;
}

static int prefetched_write_tx(struct meta *m, struct kv_txn *t, uint64_t ino,
			       const struct meta_chunk *chunks, int n, uint64_t min_size,
			       bool touch, struct meta_attr *out)
{
	int rc = write_prefetch(t, ino, chunks, n, NULL);

	return rc < 0 ? rc : write_chunks_tx(m, t, ino, chunks, n, min_size, touch, out);
}

int meta_write_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *chunks, int n,
		      uint64_t min_size, bool touch, struct meta_attr *out)
{
	return IN_TXN(m, true, prefetched_write_tx(m, t, ino, chunks, n, min_size, touch, out));
}

static int replace_chunks_tx(struct meta *m, struct kv_txn *t, uint64_t ino,
			     const struct meta_chunk *old, int n, const struct meta_chunk *fresh)
{
	struct meta_chunk *now = NULL;
	bool same;
	int got, rc = 0;

	got = collect_chunks(t, ino, fresh->offset, fresh->offset + fresh->length, &now);
	same = got == n;
	for (int i = 0; same && i < n; i++)
		same = now[i].offset == old[i].offset && now[i].length == old[i].length &&
		       now[i].blob_offset == old[i].blob_offset && !strcmp(now[i].fid, old[i].fid);
	free(now);
	if (got < 0)
		rc = got;
	else if (same) /* the same bytes: the stored size does not change */
		rc = punch(m, t, ino, fresh->offset, fresh->offset + fresh->length, NULL);
	if (rc == 0 && same)
		rc = put_chunk(t, ino, fresh);
	/* A reference when used, none otherwise: then the blob goes straight to gc. */
	if (rc == 0)
		rc = fidref_add(m, t, fresh->fid, same ? 1 : 0);
	return rc;
}

int meta_replace_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *old, int n,
			const struct meta_chunk *fresh)
{
	return IN_TXN(m, true, replace_chunks_tx(m, t, ino, old, n, fresh));
}

static int fallocate_tx(struct meta *m, struct kv_txn *t, uint64_t ino, uint64_t offset,
			uint64_t end, bool do_punch, bool extend, uint64_t min_size,
			struct meta_attr *out)
{
	struct meta_attr a;
	uint64_t removed = 0;
	bool changed = false;
	int rc = get_attr(t, ino, &a);

	if (rc == 0 && S_ISDIR(a.mode))
		rc = -EISDIR;
	else if (rc == 0 && !S_ISREG(a.mode))
		rc = -ENODEV; /* what Linux says for a FIFO or a device */
	if (rc == 0 && do_punch && offset < a.size) {
		rc = ensure_stored(t, &a);
		if (rc == 0)
			rc = punch(m, t, ino, offset, end, &removed);
		if (rc == 0)
			stored_change(&a, removed, 0);
		changed = true;
	}
	if (rc == 0 && extend && end > min_size)
		min_size = end;
	if (rc == 0 && min_size > a.size) {
		a.size = min_size;
		changed = true;
	}
	if (rc == 0 && changed) {
		a.mtime_ns = a.ctime_ns = meta_now_ns();
		rc = put_attr(t, &a);
	}
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_fallocate(struct meta *m, uint64_t ino, uint64_t offset, uint64_t len, bool punch,
		   bool extend, uint64_t min_size, struct meta_attr *out)
{
	if (len == 0 || offset > INT64_MAX || len > (uint64_t)INT64_MAX - offset)
		return -EINVAL;
	return IN_TXN(m, true,
		      fallocate_tx(m, t, ino, offset, offset + len, punch, extend, min_size, out));
}

static int copy_range_tx(struct meta *m, struct kv_txn *t, uint64_t src, uint64_t off_in,
			 uint64_t dst, uint64_t off_out, uint64_t len, uint64_t *copied,
			 struct meta_attr *out)
{
	struct meta_attr s, d;
	struct meta_chunk *list = NULL;
	uint64_t removed = 0, added = 0;
	int n = 0, rc = get_attr(t, src, &s);

	*copied = 0;
	if (rc == 0)
		rc = src == dst ? 0 : get_attr(t, dst, &d);
	if (rc < 0)
		return rc;
	if (src == dst)
		d = s;
	if (S_ISDIR(s.mode) || S_ISDIR(d.mode))
		return -EISDIR;
	if (!S_ISREG(s.mode) || !S_ISREG(d.mode))
		return -EINVAL;
	if (off_in >= s.size)
		len = 0;
	else if (len > s.size - off_in)
		len = s.size - off_in;
	if (len == 0) {
		if (out)
			*out = d;
		return 0;
	}
	if (src == dst && off_in < off_out + len && off_out < off_in + len)
		return -EINVAL;
	n = collect_chunks(t, src, off_in, off_in + len, &list);
	if (n < 0)
		return n;
	rc = ensure_stored(t, &d);
	/* The slices are referenced before dst's range is punched (a copy within one file
	 * may cut the very interval it copies from). */
	for (int i = 0; i < n && rc == 0; i++)
		rc = fidref_add(m, t, list[i].fid, 1);
	if (rc == 0)
		rc = punch(m, t, dst, off_out, off_out + len, &removed);
	for (int i = 0; i < n && rc == 0; i++) {
		struct meta_chunk c = list[i];
		uint64_t a = c.offset > off_in ? c.offset : off_in;
		uint64_t b =
		    c.offset + c.length < off_in + len ? c.offset + c.length : off_in + len;

		c.blob_offset += a - c.offset;
		c.offset = off_out + (a - off_in);
		c.length = b - a;
		added += c.length;
		rc = put_chunk(t, dst, &c);
	}
	free(list);
	if (rc < 0)
		return rc;
	stored_change(&d, removed, added);
	if (off_out + len > d.size)
		d.size = off_out + len;
	d.mtime_ns = d.ctime_ns = meta_now_ns();
	rc = put_attr(t, &d);
	if (rc == 0) {
		*copied = len;
		if (out)
			*out = d;
	}
	return rc;
}

int meta_copy_range(struct meta *m, uint64_t src, uint64_t off_in, uint64_t dst, uint64_t off_out,
		    uint64_t len, uint64_t *copied, struct meta_attr *out)
{
	*copied = 0;
	if (off_in > INT64_MAX || off_out > INT64_MAX)
		return -EINVAL;
	if (len > (uint64_t)INT64_MAX - off_out)
		len = (uint64_t)INT64_MAX - off_out;
	if (len > (uint64_t)INT64_MAX - off_in)
		len = (uint64_t)INT64_MAX - off_in;
	return IN_TXN(m, true, copy_range_tx(m, t, src, off_in, dst, off_out, len, copied, out));
}

/* collect_chunks with both scans sent at once (one round trip). */
static int read_chunks_tx(struct kv_txn *t, uint64_t ino, uint64_t start, uint64_t end,
			  struct meta_chunk **out)
{
	struct chunk_scan k;
	struct kv_read r[2];
	int rc;

	chunk_scan_init(&k, ino, start);
	chunk_scan_reads(&k, PREFETCH_CHUNKS, r);
	rc = kv_prefetch(t, r, 2);
	return rc < 0 ? rc : collect_chunks(t, ino, start, end, out);
}

int meta_read_chunks(struct meta *m, uint64_t ino, uint64_t offset, uint64_t len,
		     struct meta_chunk **out)
{
	uint64_t end = len > UINT64_MAX - offset ? UINT64_MAX : offset + len;

	return IN_TXN(m, false, read_chunks_tx(t, ino, offset, end, out));
}

static int read_map_tx(struct kv_txn *t, uint64_t ino, uint64_t offset, int max,
		       struct meta_attr *attr, struct meta_chunk **out, uint64_t *end)
{
	struct chunk_scan k;
	struct kv_read r[3];
	uint8_t ak[8];
	bool more;
	int n, rc;

	chunk_scan_init(&k, ino, offset);
	r[0] = attr_read(ak, ino);
	chunk_scan_reads(&k, max, r + 1);
	rc = kv_prefetch(t, r, 3);
	if (rc == 0)
		rc = get_attr(t, ino, attr);
	if (rc < 0)
		return rc;
	/* The whole rest of the file (end UINT64_MAX), cut at max intervals. */
	n = collect_chunks_max(t, ino, offset, UINT64_MAX, max, out, &more);
	if (n > 0 && more)
		*end = (*out)[n - 1].offset + (*out)[n - 1].length;
	else
		*end = UINT64_MAX;
	return n;
}

int meta_read_map(struct meta *m, uint64_t ino, uint64_t offset, int max, struct meta_attr *attr,
		  struct meta_chunk **out, uint64_t *end)
{
	*out = NULL;
	if (max <= 0)
		return -EINVAL;
	return IN_TXN(m, false, read_map_tx(t, ino, offset, max, attr, out, end));
}

int meta_chunk_count(struct meta *m, uint64_t ino)
{
	struct meta_chunk *list;
	int n = meta_read_chunks(m, ino, 0, UINT64_MAX, &list);

	if (n >= 0)
		free(list);
	return n;
}

/* readdir reads a directory in batches, each one read transaction; fn is called
 * outside of them (it may be slow, and a transaction that runs again must not call it
 * twice for one entry). */
#define READDIR_BATCH 128

struct dir_batch {
	uint64_t ino;
	const char *after;
	int n;
	char last[META_NAME_MAX + 1]; /* the last name scanned (to go on from) */
	struct dir_entry {
		char name[META_NAME_MAX + 1];
		uint64_t ino;
		struct meta_attr attr;
	} e[READDIR_BATCH];
};

static int batch_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct dir_batch *b = ctx;
	size_t n = klen - 8;

	if (klen < 8 || n > META_NAME_MAX || vlen != 8)
		return 0;
	if (b->after && *b->after && n == strlen(b->after) && !memcmp(k + 8, b->after, n))
		return 0; /* the entry to start after */
	if (b->n == READDIR_BATCH)
		return 1;
	memcpy(b->e[b->n].name, k + 8, n);
	b->e[b->n].name[n] = '\0';
	b->e[b->n].ino = rd64(v);
	b->n++;
	return 0;
}

struct attr_fill {
	struct dir_batch *b;
	int kept;
};

/* The attributes of the batch's entries, compacting away those gone meanwhile. */
static int attr_one(void *ctx, int i, const uint8_t *v, size_t vlen)
{
	struct attr_fill *af = ctx;
	struct dir_batch *b = af->b;

	if (!v)
		return 0;
	if (af->kept != i) {
		memcpy(b->e[af->kept].name, b->e[i].name, sizeof(b->e[i].name));
		b->e[af->kept].ino = b->e[i].ino;
	}
	if (meta_decode_attr(v, vlen, &b->e[af->kept].attr) < 0)
		return -EIO;
	af->kept++;
	return 0;
}

static int readdir_tx(struct kv_txn *t, struct dir_batch *b)
{
	uint8_t from[8 + META_NAME_MAX], to[8], keys[READDIR_BATCH][8];
	const void *kp[READDIR_BATCH];
	size_t lens[READDIR_BATCH];
	struct attr_fill af = {b, 0};
	int rc;

	b->n = 0;
	be64(to, b->ino + 1);
	rc = kv_scan(t, KV_DENTRIES, from, dentry_key(from, b->ino, b->after), to, 8, false,
		     READDIR_BATCH + 1, batch_one, b);
	for (int i = 0; i < b->n; i++) {
		be64(keys[i], b->e[i].ino);
		kp[i] = keys[i];
		lens[i] = 8;
	}
	if (rc == 0 && b->n == READDIR_BATCH) {
		memcpy(b->last, b->e[b->n - 1].name, sizeof(b->last));
		rc = 1; /* more may follow */
	}
	if (rc >= 0 && b->n) {
		int r = kv_get_many(t, KV_INODES, b->n, kp, lens, attr_one, &af);

		if (r < 0)
			return r;
	}
	b->n = af.kept;
	return rc;
}

int meta_readdir(struct meta *m, uint64_t ino, const char *after,
		 int (*fn)(void *ctx, const char *name, const struct meta_attr *attr), void *ctx)
{
	struct dir_batch *b = malloc(sizeof(*b));
	char last[META_NAME_MAX + 1];
	int rc;

	if (!b)
		return -ENOMEM;
	snprintf(last, sizeof(last), "%s", after ? after : "");
	b->ino = ino;
	for (;;) {
		bool more, stop = false;

		b->after = last;
		rc = IN_TXN(m, false, readdir_tx(t, b));
		if (rc < 0)
			break;
		more = rc == 1;
		rc = 0;
		for (int i = 0; i < b->n && !stop; i++)
			stop = fn(ctx, b->e[i].name, &b->e[i].attr) != 0;
		if (stop || !more)
			break;
		memcpy(last, b->last, sizeof(last));
	}
	free(b);
	return rc;
}

static size_t xattr_key(uint8_t *k, uint64_t ino, const char *name)
{
	size_t n = strlen(name);

	be64(k, ino);
	memcpy(k + 8, name, n);
	return 8 + n;
}

/* Which POSIX ACL an xattr name is: 0 none, else its META_F_ACL_* flag. */
static uint32_t acl_kind(const char *name)
{
	if (!strcmp(name, META_ACL_ACCESS))
		return META_F_ACL_ACCESS;
	if (!strcmp(name, META_ACL_DEFAULT))
		return META_F_ACL_DEFAULT;
	return 0;
}

static int setxattr_tx(struct kv_txn *t, uint64_t ino, const uint8_t *k, size_t klen, uint32_t acl,
		       const void *value, size_t len, int flags)
{
	struct meta_attr a;
	const uint8_t *old;
	size_t oldlen;
	bool keep = true;
	int rc = get_attr(t, ino, &a);

	if (rc == 0) {
		bool exists = kv_get(t, KV_XATTRS, k, klen, &old, &oldlen) == 0;

		if ((flags & 1 /* XATTR_CREATE */) && exists)
			rc = -EEXIST;
		else if ((flags & 2 /* XATTR_REPLACE */) && !exists)
			rc = -ENODATA;
	}
	if (rc == 0 && acl == META_F_ACL_ACCESS) {
		/* The mode bits follow the ACL; an ACL the mode says all of is not kept. */
		uint32_t bits;

		rc = S_ISLNK(a.mode) ? -EOPNOTSUPP : acl_mode(value, len, &bits, &keep);
		keep = !keep;
		if (rc == 0)
			a.mode = (a.mode & ~0777u) | bits;
	} else if (rc == 0 && acl == META_F_ACL_DEFAULT) {
		rc = !S_ISDIR(a.mode) ? -EACCES : acl_count(value, len) < 0 ? -EINVAL : 0;
	}
	if (rc == 0 && keep) {
		a.flags |= acl;
		if (!acl)
			a.flags &= ~META_F_NO_XATTRS;
		rc = kv_put(t, KV_XATTRS, k, klen, value, len);
	} else if (rc == 0) {
		a.flags &= ~acl;
		rc = kv_del(t, KV_XATTRS, k, klen);
	}
	if (rc == 0) {
		a.ctime_ns = meta_now_ns();
		rc = put_attr(t, &a);
	}
	return rc;
}

int meta_setxattr(struct meta *m, uint64_t ino, const char *name, const void *value, size_t len,
		  int flags)
{
	uint8_t k[8 + 256];
	size_t klen;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ERANGE;
	if (len > 65536)
		return -E2BIG;
	klen = xattr_key(k, ino, name);
	return IN_TXN_LAZY(m, setxattr_tx(t, ino, k, klen, acl_kind(name), value, len, flags));
}

static int getxattr_tx(struct kv_txn *t, const uint8_t *k, size_t klen, void *buf, size_t cap)
{
	const uint8_t *v;
	size_t vlen;
	int rc = kv_get(t, KV_XATTRS, k, klen, &v, &vlen);

	if (rc == -ENOENT)
		return -ENODATA;
	if (rc < 0)
		return rc;
	if (cap == 0)
		return (int)vlen;
	if (cap < vlen)
		return -ERANGE;
	memcpy(buf, v, vlen);
	return (int)vlen;
}

int meta_getxattr(struct meta *m, uint64_t ino, const char *name, void *buf, size_t cap)
{
	uint8_t k[8 + 256];
	size_t klen;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ENODATA;
	klen = xattr_key(k, ino, name);
	return IN_TXN(m, false, getxattr_tx(t, k, klen, buf, cap));
}

struct xattr_list {
	char *buf;
	size_t cap, total;
};

static int list_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct xattr_list *l = ctx;
	size_t n;

	if (klen <= 8)
		return 0;
	n = klen - 8;
	if (l->cap > 0) {
		if (l->total + n + 1 > l->cap)
			return -ERANGE;
		memcpy(l->buf + l->total, k + 8, n);
		l->buf[l->total + n] = '\0';
	}
	l->total += n + 1;
	return 0;
}

static int listxattr_tx(struct kv_txn *t, uint64_t ino, char *buf, size_t cap)
{
	struct xattr_list l = {buf, cap, 0};
	uint8_t from[8], to[8];
	int rc;

	ino_range(from, to, ino);
	rc = kv_scan(t, KV_XATTRS, from, 8, to, 8, false, 0, list_one, &l);
	if (rc == -ERANGE) {
		t->failed = 0; /* not the engine's failure */
		return -ERANGE;
	}
	return rc < 0 ? rc : (int)l.total;
}

int meta_listxattr(struct meta *m, uint64_t ino, char *buf, size_t cap)
{
	return IN_TXN(m, false, listxattr_tx(t, ino, buf, cap));
}

static int removexattr_tx(struct kv_txn *t, uint64_t ino, const uint8_t *k, size_t klen,
			  uint32_t acl)
{
	struct meta_attr a;
	const uint8_t *v;
	size_t vlen;
	int rc = get_attr(t, ino, &a);

	if (rc == 0) {
		rc = kv_get(t, KV_XATTRS, k, klen, &v, &vlen);
		if (rc == -ENOENT)
			rc = -ENODATA;
	}
	if (rc == 0)
		rc = kv_del(t, KV_XATTRS, k, klen);
	if (rc == 0) {
		a.flags &= ~acl;	    /* the mode bits stay as they are */
		a.ctime_ns = meta_now_ns(); /* a change of the inode, as setxattr */
		rc = put_attr(t, &a);
	}
	return rc;
}

int meta_removexattr(struct meta *m, uint64_t ino, const char *name)
{
	uint8_t k[8 + 256];
	size_t klen;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ENODATA;
	klen = xattr_key(k, ino, name);
	return IN_TXN_LAZY(m, removexattr_tx(t, ino, k, klen, acl_kind(name)));
}

int meta_gc_decode(const uint8_t *v, size_t vlen, char *fid, int64_t *queued_ns)
{
	const uint8_t *nul = memchr(v, '\0', vlen);
	size_t flen = nul ? (size_t)(nul - v) : vlen;

	if (flen == 0 || flen >= META_FID_MAX || (nul && vlen != flen + 9))
		return -EIO;
	memcpy(fid, v, flen);
	fid[flen] = '\0';
	/* Entries written before the queue time was recorded count as old. */
	*queued_ns = nul ? (int64_t)rd64(nul + 1) : 0;
	return 0;
}

struct gc_list {
	int n, max, scanned;
	char (*fids)[META_FID_MAX];
	uint64_t *seqs;
	int64_t before_ns; /* only entries queued before this (0: any) */
	int64_t hold_from; /* entries queued at or after this are kept (0: none) */
};

static int gc_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct gc_list *l = ctx;
	int64_t queued;

	if (l->n == l->max || ++l->scanned > 8 * l->max)
		return 1;
	if (klen != 8 || meta_gc_decode(v, vlen, l->fids[l->n], &queued) < 0)
		return 0;
	if (l->hold_from && queued >= l->hold_from)
		return 0; /* a kept backup may still reference it */
	if (l->before_ns && queued > l->before_ns)
		return 0; /* younger than the grace period (shared engines) */
	l->seqs[l->n] = rd64(k);
	l->n++;
	return 0;
}

/*
 * The backup hold (counters "backup_hold": oldest kept backup, hold until, both ns,
 * big-endian): while it lasts, blobs queued after the oldest kept backup stay, since
 * a restore of that backup may reference them. Entries are in sequence order, about
 * the order they were queued (exactly with LMDB; with PostgreSQL each mount takes
 * blocks of numbers), so a pass looks at most 8 x n entries.
 */
static int gc_take_tx(struct kv_txn *t, struct gc_list *l)
{
	static const char hold_key[] = META_BACKUP_HOLD_KEY;
	uint8_t from[8];
	const uint8_t *v;
	size_t vlen;
	int rc;

	l->n = 0;
	l->scanned = 0;
	l->hold_from = 0;
	rc = kv_get(t, KV_COUNTERS, hold_key, sizeof(hold_key) - 1, &v, &vlen);
	if (rc == 0 && vlen == 16 && (int64_t)rd64(v + 8) > meta_now_ns())
		l->hold_from = (int64_t)rd64(v);
	else if (rc < 0 && rc != -ENOENT)
		return rc;
	be64(from, 0);
	rc = kv_scan(t, KV_GC, from, 8, NULL, 0, false, 0, gc_one, l);
	return rc < 0 ? rc : l->n;
}

static int set_hold_tx(struct kv_txn *t, int64_t oldest_ns, int64_t until_ns)
{
	static const char hold_key[] = META_BACKUP_HOLD_KEY;
	uint8_t v[16];

	if (!oldest_ns)
		return kv_del(t, KV_COUNTERS, hold_key, sizeof(hold_key) - 1);
	be64(v, (uint64_t)oldest_ns);
	be64(v + 8, (uint64_t)until_ns);
	return kv_put(t, KV_COUNTERS, hold_key, sizeof(hold_key) - 1, v, 16);
}

int meta_set_backup_hold(struct meta *m, int64_t oldest_ns, int64_t until_ns)
{
	return IN_TXN(m, true, set_hold_tx(t, oldest_ns, until_ns));
}

int meta_cluster_id(struct meta *m, char *out, size_t cap)
{
	return IN_TXN(m, false, kv_get_prop(t, "cluster_id", out, cap));
}

struct kv *meta_kv(struct meta *m)
{
	return m->kv;
}

int meta_gc_take(struct meta *m, int n, char fids[][META_FID_MAX], uint64_t *seqs)
{
	struct gc_list l = {.max = n, .fids = fids, .seqs = seqs};

	if (m->gc_grace_ms)
		l.before_ns = meta_now_ns() - (int64_t)m->gc_grace_ms * 1000000;

	return IN_TXN(m, false, gc_take_tx(t, &l));
}

static int gc_done_tx(struct kv_txn *t, uint64_t seq)
{
	uint8_t k[8];

	be64(k, seq);
	return kv_del(t, KV_GC, k, 8);
}

int meta_gc_done(struct meta *m, uint64_t seq)
{
	return IN_TXN(m, true, gc_done_tx(t, seq));
}

static int gc_done_n_tx(struct kv_txn *t, const uint64_t *seqs, int n)
{
	int rc = 0;

	for (int i = 0; i < n && rc == 0; i++)
		rc = gc_done_tx(t, seqs[i]);
	return rc;
}

int meta_gc_done_n(struct meta *m, const uint64_t *seqs, int n)
{
	return n > 0 ? IN_TXN(m, true, gc_done_n_tx(t, seqs, n)) : 0;
}

uint64_t meta_gc_generation(struct meta *m)
{
	return __atomic_load_n(&m->gc_generation, __ATOMIC_ACQUIRE);
}

int meta_gc_pending(struct meta *m)
{
	uint64_t n = 0;
	int rc = IN_TXN(m, false, kv_count(t, KV_GC, &n));

	return rc < 0 ? rc : (int)n;
}

int meta_inode_count(struct meta *m, uint64_t *count)
{
	return IN_TXN(m, false, kv_count(t, KV_INODES, count));
}

struct ino_list {
	uint64_t inos[256];
	int n;
	uint64_t next; /* where the next scan starts */
	bool more;
	struct meta *m; /* shared: keep those of a live session */
	const char *owner;
	struct kv_txn *t;
};

/* Is session id registered? (An error counts as yes: nothing is freed.) */
static bool session_exists(struct kv_txn *t, uint64_t id)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;

	be64(k, id);
	return kv_get(t, KV_SESSIONS, k, 8, &v, &vlen) != -ENOENT;
}

static int orphan_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct ino_list *l = ctx;
	bool mine;

	if (klen != 8)
		return 0;
	l->next = rd64(k) + 1;
	if (l->n == 256) {
		l->more = true;
		return 1;
	}
	if (!l->m->kv->shared)
		mine = true; /* one mount: every orphan is of an earlier run */
	else if (vlen == 8)
		mine = !session_exists(l->t, rd64(v)); /* its session is gone */
	else
		mine = vlen == strlen(l->owner) && !memcmp(v, l->owner, vlen); /* older format */
	if (mine)
		l->inos[l->n++] = rd64(k);
	return 0;
}

static int orphans_tx(struct kv_txn *t, struct ino_list *l)
{
	uint8_t from[8];

	l->n = 0;
	l->more = false;
	l->t = t;
	be64(from, l->next);
	return kv_scan(t, KV_ORPHANS, from, 8, NULL, 0, false, 0, orphan_one, l);
}

int meta_release_orphans(struct meta *m)
{
	struct ino_list l = {.next = 0, .m = m, .owner = m->owner};
	int rc, total = 0;

	do {
		rc = IN_TXN(m, false, orphans_tx(t, &l));
		if (rc < 0)
			return rc;
		for (int i = 0; i < l.n; i++) {
			rc = meta_release_inode(m, l.inos[i]); /* kept while held */
			if (rc < 0)
				return rc;
		}
		total += l.n;
	} while (l.more);
	if (total)
		log_info("meta: released %d file(s) unlinked while open by a mount that is gone",
			 total);
	return 0;
}

/* ---------------------------------------------------------------- sessions */

/* Record: start, beat (ns), beats (u64 each), pid (u32), then host, mount point and
 * version, each NUL-terminated. */
static size_t session_encode(const struct meta_session_info *s, uint8_t *buf, size_t cap)
{
	size_t n = 28, hl = strlen(s->host) + 1, ml = strlen(s->mountpoint) + 1,
	       vl = strlen(s->version) + 1;

	if (n + hl + ml + vl > cap)
		return 0;
	be64(buf, (uint64_t)s->start_ns);
	be64(buf + 8, (uint64_t)s->beat_ns);
	be64(buf + 16, s->beats);
	buf[24] = (uint8_t)(s->pid >> 24);
	buf[25] = (uint8_t)(s->pid >> 16);
	buf[26] = (uint8_t)(s->pid >> 8);
	buf[27] = (uint8_t)s->pid;
	memcpy(buf + n, s->host, hl);
	memcpy(buf + n + hl, s->mountpoint, ml);
	memcpy(buf + n + hl + ml, s->version, vl);
	return n + hl + ml + vl;
}

static int session_decode(const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
			  struct meta_session_info *s)
{
	const char *p, *end = (const char *)v + vlen;
	char *fields[3];
	size_t caps[3];

	if (klen != 8 || vlen < 31)
		return -EIO;
	memset(s, 0, sizeof(*s));
	fields[0] = s->host, caps[0] = sizeof(s->host);
	fields[1] = s->mountpoint, caps[1] = sizeof(s->mountpoint);
	fields[2] = s->version, caps[2] = sizeof(s->version);
	s->id = rd64(k);
	s->start_ns = (int64_t)rd64(v);
	s->beat_ns = (int64_t)rd64(v + 8);
	s->beats = rd64(v + 16);
	s->pid = (uint32_t)v[24] << 24 | (uint32_t)v[25] << 16 | (uint32_t)v[26] << 8 | v[27];
	p = (const char *)v + 28;
	for (int i = 0; i < 3; i++) {
		const char *z = memchr(p, '\0', (size_t)(end - p));

		if (!z)
			return -EIO;
		snprintf(fields[i], caps[i], "%s", p);
		p = z + 1;
	}
	return 0;
}

/* A sessions row decoded, for tools that read the table themselves (fuse/fsck.c). */
int meta_session_decode(const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
			struct meta_session_info *out)
{
	return session_decode(k, klen, v, vlen, out);
}

struct session_list {
	struct meta_session_info *list;
	int n, cap;
};

static int session_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct session_list *l = ctx;

	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 8;
		void *a = realloc(l->list, (size_t)cap * sizeof(*l->list));

		if (!a)
			return -ENOMEM;
		l->list = a;
		l->cap = cap;
	}
	if (session_decode(k, klen, v, vlen, &l->list[l->n]) == 0)
		l->n++;
	return 0;
}

static int sessions_tx(struct kv_txn *t, struct session_list *l)
{
	uint8_t from[8];

	l->n = 0;
	be64(from, 0);
	return kv_scan(t, KV_SESSIONS, from, 8, NULL, 0, false, 0, session_one, l);
}

/* Every session (caller frees l->list). */
static int sessions_read(struct meta *m, struct session_list *l)
{
	memset(l, 0, sizeof(*l));
	return IN_TXN(m, false, sessions_tx(t, l));
}

static int session_put(struct kv_txn *t, const struct meta_session_info *s)
{
	uint8_t k[8], v[28 + 256 + 1024 + 64];
	size_t n = session_encode(s, v, sizeof(v));

	if (!n)
		return -ENAMETOOLONG;
	be64(k, s->id);
	return kv_put(t, KV_SESSIONS, k, 8, v, n);
}

static int register_tx(struct kv_txn *t, struct meta_session_info *s)
{
	int rc = kv_next_id(t, KV_ID_INO, 2, &s->id); /* never reused, like inode numbers */

	return rc < 0 ? rc : session_put(t, s);
}

int meta_session_register(struct meta *m, struct meta_session_info *info)
{
	struct session_list l;
	int rc;

	info->start_ns = info->beat_ns = meta_now_ns();
	info->beats = 0;
	rc = IN_TXN(m, true, register_tx(t, info));
	if (rc < 0)
		return rc;
	__atomic_store_n(&m->sid, info->id, __ATOMIC_RELEASE);
	/* Sessions that are surely dead go now: with LMDB every other one (one mount at a
	 * time), and an earlier run on this host and mount point whose process is gone. */
	if (sessions_read(m, &l) == 0) {
		for (int i = 0; i < l.n; i++) {
			const struct meta_session_info *s = &l.list[i];
			bool dead = !m->kv->shared;

			if (s->id == info->id)
				continue;
			if (!dead && !strcmp(s->host, info->host) &&
			    !strcmp(s->mountpoint, info->mountpoint) && s->pid != info->pid &&
			    kill((pid_t)s->pid, 0) < 0 && errno == ESRCH)
				dead = true;
			if (dead) {
				log_info(
				    "meta: cleaning up session %llu (%s:%s pid %u), which ended "
				    "without unmounting",
				    (unsigned long long)s->id, s->host, s->mountpoint, s->pid);
				meta_session_clean(m, s->id);
			}
		}
		free(l.list);
	}
	return 0;
}

static int beat_tx(struct kv_txn *t, uint64_t id)
{
	uint8_t k[8];
	const uint8_t *v;
	size_t vlen;
	struct meta_session_info s;
	int rc;

	be64(k, id);
	rc = kv_get(t, KV_SESSIONS, k, 8, &v, &vlen);
	if (rc == -ENOENT)
		return -ESTALE;
	if (rc < 0)
		return rc;
	rc = session_decode(k, 8, v, vlen, &s);
	if (rc < 0)
		return rc;
	s.beats++;
	s.beat_ns = meta_now_ns();
	return session_put(t, &s);
}

int meta_session_beat(struct meta *m)
{
	uint64_t id = __atomic_load_n(&m->sid, __ATOMIC_ACQUIRE);

	return id ? IN_TXN(m, true, beat_tx(t, id)) : -ESTALE;
}

uint64_t meta_session_id(struct meta *m)
{
	return __atomic_load_n(&m->sid, __ATOMIC_ACQUIRE);
}

int meta_session_list(struct meta *m, int (*fn)(void *ctx, const struct meta_session_info *s),
		      void *ctx)
{
	struct session_list l;
	int rc = sessions_read(m, &l);

	for (int i = 0; rc == 0 && i < l.n; i++)
		rc = fn(ctx, &l.list[i]);
	free(l.list);
	return rc < 0 ? rc : 0;
}

/* Keys of a table whose bytes [off, off+8) are the session id. */
struct sid_keys {
	struct key_list keys;
	uint64_t id;
	size_t off;
};

static int sid_key_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct sid_keys *s = ctx;

	if (klen < s->off + 8 || rd64(k + s->off) != s->id)
		return 0;
	return collect_key(&s->keys, k, klen, v, vlen);
}

/* Orphans recorded by session id (the value). */
static int orphan_of_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct sid_keys *s = ctx;

	if (klen != 8 || vlen != 8 || rd64(v) != s->id)
		return 0;
	return collect_key(&s->keys, k, klen, v, vlen);
}

static void sid_keys_free(struct sid_keys *s)
{
	free(s->keys.keys);
	free(s->keys.lens);
	memset(&s->keys, 0, sizeof(s->keys));
}

/* Frees ino if it has no links and no holds left. */
static int free_if_unused(struct meta *m, struct kv_txn *t, uint64_t ino)
{
	struct meta_attr a;
	int rc = get_attr(t, ino, &a);

	if (rc == -ENOENT)
		return 0;
	if (rc == 0 && a.nlink == 0 && !is_held(t, ino))
		rc = free_inode(m, t, ino);
	return rc;
}

static int clean_tx(struct meta *m, struct kv_txn *t, uint64_t id, int *freed)
{
	uint8_t k[8];
	struct sid_keys holds = {.id = id, .off = 8}, locks = {.id = id, .off = 9},
			orphans = {.id = id};
	int rc;

	*freed = 0;
	be64(k, 0);
	rc = kv_scan(t, KV_HOLDS, k, 8, NULL, 0, false, 0, sid_key_one, &holds);
	if (rc == 0)
		rc = kv_scan(t, KV_LOCKS, k, 8, NULL, 0, false, 0, sid_key_one, &locks);
	if (rc == 0)
		rc = kv_scan(t, KV_ORPHANS, k, 8, NULL, 0, false, 0, orphan_of_one, &orphans);
	for (int i = 0; rc == 0 && i < holds.keys.n; i++)
		rc = kv_del(t, KV_HOLDS, holds.keys.keys[i], holds.keys.lens[i]);
	for (int i = 0; rc == 0 && i < locks.keys.n; i++) {
		const uint8_t *lk = locks.keys.keys[i];

		rc = kv_del(t, KV_LOCKS, lk, locks.keys.lens[i]);
		/* A file it had locked: what it stored under the lock is announced to the
		 * other mounts as a change (fuse/locks.c, "change marker"); wait rows (the
		 * all-ones prefix) name no file. */
		if (rc == 0 && rd64(lk) != UINT64_MAX) {
			uint8_t mk[9], mv[16];

			memcpy(mk, lk, 8);
			mk[8] = META_LOCK_MARK;
			be64(mv, id);
			be64(mv + 8, UINT64_MAX);
			rc = kv_put(t, KV_LOCKS, mk, 9, mv, 16);
		}
	}
	/* Then the files only this session kept alive: those it held and those whose last
	 * name it removed (its kernel was still using them). */
	for (int i = 0; rc == 0 && i < holds.keys.n; i++) {
		uint64_t ino = rd64(holds.keys.keys[i]);
		uint8_t ik[8];
		const uint8_t *v;
		size_t vlen;

		be64(ik, ino);
		if (kv_get(t, KV_INODES, ik, 8, &v, &vlen) == 0 &&
		    vlen == sizeof(struct meta_attr) &&
		    ((const struct meta_attr *)(const void *)v)->nlink == 0)
			(*freed)++;
		rc = free_if_unused(m, t, ino);
	}
	for (int i = 0; rc == 0 && i < orphans.keys.n; i++) {
		(*freed)++;
		rc = free_if_unused(m, t, rd64(orphans.keys.keys[i]));
	}
	if (rc == 0) {
		be64(k, id);
		rc = kv_del(t, KV_SESSIONS, k, 8);
	}
	sid_keys_free(&holds);
	sid_keys_free(&locks);
	sid_keys_free(&orphans);
	return rc;
}

int meta_session_clean(struct meta *m, uint64_t id)
{
	int freed = 0, rc = IN_TXN(m, true, clean_tx(m, t, id, &freed));

	if (rc == 0 && freed)
		log_info("meta: session %llu: %d file(s) it kept open after their last name went "
			 "are freed",
			 (unsigned long long)id, freed);
	return rc;
}

int meta_session_end(struct meta *m)
{
	uint64_t id = __atomic_exchange_n(&m->sid, 0, __ATOMIC_ACQ_REL);

	return id ? meta_session_clean(m, id) : 0;
}

int meta_session_sweep(struct meta *m, int timeout_ms)
{
	struct session_list l;
	uint64_t now = monotonic_ns(), me = meta_session_id(m);
	struct session_watch *next;
	int rc = sessions_read(m, &l), cleaned = 0, n_next = 0;
	uint64_t *dead;
	int n_dead = 0;

	if (rc < 0)
		return rc;
	next = calloc((size_t)l.n + 1, sizeof(*next));
	dead = calloc((size_t)l.n + 1, sizeof(*dead));
	if (!next || !dead) {
		free(next);
		free(dead);
		free(l.list);
		return -ENOMEM;
	}
	/* The new watch list: one entry per session still registered; a counter that has
	 * not moved since it was first seen at that value for timeout_ms means dead. */
	pthread_mutex_lock(&m->watch_lock);
	for (int i = 0; i < l.n; i++) {
		const struct meta_session_info *s = &l.list[i];
		struct session_watch w = {s->id, s->beats, now};

		if (s->id == me)
			continue;
		for (int j = 0; j < m->n_watch; j++)
			if (m->watch[j].id == s->id && m->watch[j].beats == s->beats)
				w.since_ns = m->watch[j].since_ns;
		if (now - w.since_ns >= (uint64_t)timeout_ms * 1000000u)
			dead[n_dead++] = s->id;
		else
			next[n_next++] = w;
	}
	free(m->watch);
	m->watch = next;
	m->n_watch = n_next;
	pthread_mutex_unlock(&m->watch_lock);
	for (int i = 0; i < n_dead; i++) {
		const struct meta_session_info *s = NULL;

		for (int j = 0; j < l.n; j++)
			if (l.list[j].id == dead[i])
				s = &l.list[j];
		log_warn("meta: session %llu (%s:%s pid %u) has not renewed its heartbeat for %d "
			 "ms: cleaning it up (its open files and locks are released)",
			 (unsigned long long)dead[i], s ? s->host : "?", s ? s->mountpoint : "?",
			 s ? s->pid : 0, timeout_ms);
		rc = meta_session_clean(m, dead[i]);
		if (rc < 0)
			break;
		cleaned++;
	}
	free(dead);
	free(l.list);
	return rc < 0 ? rc : cleaned;
}

/* ---------------------------------------------------------------- holds */

static void hold_key(uint8_t *k, const struct meta_hold *h)
{
	be64(k, h->ino);
	be64(k + 8, h->session);
	be64(k + 16, h->serial);
}

static int hold_tx(struct kv_txn *t, const struct meta_hold *h, bool trash_ok)
{
	uint8_t k[24], ak[8], sk[8];
	struct meta_attr a;
	struct kv_read r[2] = {attr_read(ak, h->ino)};
	int rc;

	/* The inode and the session at once. */
	be64(sk, h->session);
	r[1] = (struct kv_read){.table = KV_SESSIONS, .key = sk, .klen = 8};
	rc = kv_prefetch(t, r, 2);
	if (rc == 0)
		rc = get_attr(t, h->ino, &a);

	if (rc < 0)
		return rc;
	/* No name left: this kernel reached it through a name it still caches although
	 * another mount removed it (a new open cannot; files already open here never get
	 * here). Treated as gone, so that the name is looked up again. The same for a file
	 * another mount moved to the trash, unless this kernel found it in the trash: the
	 * name it came through is gone (SQLite on two mounts would otherwise open the
	 * other's deleted journal through its cached name, and write or replay it). */
	if (a.nlink == 0 || ((a.flags & META_F_TRASHED) && !trash_ok))
		return -ENOENT;
	if (!session_exists(t, h->session))
		return -ESTALE; /* cleaned up meanwhile: the caller registers again */
	hold_key(k, h);
	return kv_put(t, KV_HOLDS, k, 24, "", 0);
}

int meta_hold(struct meta *m, uint64_t ino, struct meta_hold *out)
{
	out->ino = ino;
	out->session = meta_session_id(m);
	out->serial = __atomic_add_fetch(&m->hold_serial, 1, __ATOMIC_RELAXED);
	bool trash_ok;
	int rc;

	if (!m->kv->shared || !out->session)
		return 0;
	pthread_mutex_lock(&m->trash_lock);
	trash_ok = inomap_get(&m->trash_seen, ino) > 0;
	pthread_mutex_unlock(&m->trash_lock);
	rc = IN_TXN_LAZY(m, hold_tx(t, out, trash_ok));
	if (rc == -ENOENT)
		stamp_gone(m, ino); /* the kernel looks its name up again (ESTALE) */
	return rc;
}

static int unhold_tx(struct meta *m, struct kv_txn *t, const struct meta_hold *h, bool may_free)
{
	uint8_t k[24];
	int rc;

	hold_key(k, h);
	rc = kv_del(t, KV_HOLDS, k, 24);
	if (rc == 0 && !may_free) {
		/* This kernel still knows the inode: wait for its forget only if this mount
		 * removed the last name (the kernel then forgets it soon); a name removed by
		 * another mount may stay in this kernel's cache for long. */
		uint8_t ok[8];
		const uint8_t *v;
		size_t vlen;

		be64(ok, h->ino);
		rc = kv_get(t, KV_ORPHANS, ok, 8, &v, &vlen);
		may_free = rc == -ENOENT || (rc == 0 && (vlen != 8 || rd64(v) != h->session));
		if (rc == -ENOENT)
			rc = 0;
	}
	if (rc == 0 && may_free)
		rc = free_if_unused(m, t, h->ino);
	return rc;
}

int meta_unhold(struct meta *m, const struct meta_hold *h, bool may_free)
{
	if (!m->kv->shared || !h->session)
		return may_free ? meta_release_inode(m, h->ino) : 0;
	return IN_TXN_LAZY(m, unhold_tx(m, t, h, may_free));
}

#define PREFETCH_UNHOLDS 64

static int unhold_many_tx(struct meta *m, struct kv_txn *t, const struct meta_hold *h,
			  const bool *may_free, int n)
{
	uint8_t(*keys)[8] = n > 0 && n <= PREFETCH_UNHOLDS ? calloc((size_t)n, 8) : NULL;
	struct kv_read r[2 * PREFETCH_UNHOLDS];
	int rc = 0, nr = 0;

	/* What each unhold reads (the orphan record, the attributes) at once. */
	for (int i = 0; keys && i < n; i++) {
		r[nr++] = attr_read(keys[i], h[i].ino);
		if (!may_free[i])
			r[nr++] = (struct kv_read){.table = KV_ORPHANS, .key = keys[i], .klen = 8};
	}
	if (keys) {
		rc = kv_prefetch(t, r, nr);
		free(keys);
		if (rc < 0)
			return rc;
	}

	for (int i = 0; rc == 0 && i < n; i++)
		rc = unhold_tx(m, t, &h[i], may_free[i]);
	return rc;
}

int meta_unhold_many(struct meta *m, const struct meta_hold *h, const bool *may_free, int n)
{
	if (!m->kv->shared || n <= 0)
		return 0;
	return IN_TXN_LAZY(m, unhold_many_tx(m, t, h, may_free, n));
}

static int held_write_tx(struct meta *m, struct kv_txn *t, const struct meta_hold *h,
			 const struct meta_chunk *chunks, int n, uint64_t min_size, bool touch,
			 struct meta_attr *out)
{
	uint8_t k[24];
	const uint8_t *v;
	size_t vlen;
	int rc;

	hold_key(k, h);
	{
		struct kv_read hr = {.table = KV_HOLDS, .key = k, .klen = 24};

		rc = write_prefetch(t, h->ino, chunks, n, &hr);
		if (rc < 0)
			return rc;
	}
	rc = kv_get(t, KV_HOLDS, k, 24, &v, &vlen);
	if (rc == -ENOENT)
		return -ESTALE;
	if (rc < 0)
		return rc;
	return write_chunks_tx(m, t, h->ino, chunks, n, min_size, touch, out);
}

int meta_write_chunks_held(struct meta *m, const struct meta_hold *h,
			   const struct meta_chunk *chunks, int n, uint64_t min_size, bool touch,
			   bool lazy, struct meta_attr *out)
{
	if (!m->kv->shared || !h->session)
		return meta_write_chunks(m, h->ino, chunks, n, min_size, touch, out);
	return IN_TXN_(m, true, false, lazy && !m->sync_every,
		       held_write_tx(m, t, h, chunks, n, min_size, touch, out));
}

/* ---------------------------------------------------------------- other rules */

/* What such a rule changes is not known here: a write drops every cached map (locks.c:
 * taking a lock must make the next read see what the previous holder wrote). */
static int run_any(struct kv_txn *t, int (*fn)(struct kv_txn *t, void *ctx), void *ctx)
{
	if (t->write)
		t->n_touched = KV_TOUCHED_MAX + 1;
	return fn(t, ctx);
}

int meta_run(struct meta *m, bool write, int (*fn)(struct kv_txn *t, void *ctx), void *ctx)
{
	return IN_TXN(m, write, run_any(t, fn, ctx));
}

/* ---------------------------------------------------------------- trash purge */

int64_t meta_trash_ns(struct meta *m)
{
	return m->trash_ns;
}

struct purge {
	struct meta *m;
	int64_t now;
	uint64_t dir;
	bool whole; /* the whole hour has expired */
	int purged;
	int failed;
	void (*removed)(void *ctx, uint64_t parent, const char *name, uint64_t ino, uint64_t gone);
	void *ctx;
};

/*
 * remove_tx of a trash entry. Its orphan is recorded under no session (0), not this
 * mount's: this mount's kernel may never have looked the trash entry up (it may still
 * cache the file under the name it had before it went to the trash), so no forget of it
 * may come soon; with session 0 the last close of a hold on it frees it (unhold_tx), as
 * when another mount removed the name.
 */
static int purge_tx(struct meta *m, struct kv_txn *t, uint64_t dir, const char *name, bool isdir,
		    uint64_t *gone)
{
	int rc = remove_tx(m, t, dir, name, isdir, gone);

	if (rc == 0 && *gone && m->kv->shared) {
		uint8_t k[8], v[8];

		be64(k, *gone);
		be64(v, 0);
		rc = kv_put(t, KV_ORPHANS, k, 8, v, 8);
	}
	return rc;
}

static int purge_one(void *ctx, const char *name, const struct meta_attr *a)
{
	struct purge *p = ctx;
	uint64_t gone = 0;
	int rc;

	if (!p->whole && a->ctime_ns + p->m->trash_ns > p->now)
		return 0;
	rc = IN_TXN_LAZY(p->m, purge_tx(p->m, t, p->dir, name, S_ISDIR(a->mode), &gone));
	if (rc == 0) {
		p->purged++;
		if (p->removed)
			p->removed(p->ctx, p->dir, name, a->ino, gone);
	} else if (rc != -ENOENT && rc != -ENOTEMPTY) {
		p->failed = rc; /* e.g. the database away: the next round goes on */
		return 1;
	}
	return 0;
}

struct hour_list {
	int n, cap;
	struct hour {
		char name[32];
		uint64_t ino;
		int64_t start_ns;
	} * h;
};

static int hour_one(void *ctx, const char *name, const struct meta_attr *a)
{
	struct hour_list *l = ctx;
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(name, "%Y-%m-%d-%H", &tm);
	if (!S_ISDIR(a->mode) || !end || *end || strlen(name) >= sizeof(l->h->name))
		return 0; /* not an hour of the trash: left alone */
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 32;
		void *h = realloc(l->h, (size_t)cap * sizeof(*l->h));

		if (!h)
			return -ENOMEM;
		l->h = h;
		l->cap = cap;
	}
	snprintf(l->h[l->n].name, sizeof(l->h[l->n].name), "%s", name);
	l->h[l->n].ino = a->ino;
	l->h[l->n].start_ns = (int64_t)timegm(&tm) * 1000000000;
	l->n++;
	return 0;
}

int meta_trash_purge(struct meta *m, int64_t now_ns,
		     void (*removed)(void *ctx, uint64_t parent, const char *name, uint64_t ino,
				     uint64_t gone),
		     void *ctx)
{
	struct hour_list l = {0};
	struct meta_attr a;
	uint64_t trash;
	int rc, purged = 0;

	if (m->trash_ns <= 0)
		return 0;
	rc = IN_TXN(m, false, get_dentry(t, META_ROOT_INO, META_TRASH_NAME, &trash));
	if (rc == -ENOENT)
		return 0;
	if (rc == 0)
		rc = meta_getattr(m, trash, &a);
	if (rc < 0 || !S_ISDIR(a.mode))
		return rc < 0 ? rc : 0;
	rc = meta_readdir(m, trash, "", hour_one, &l);
	for (int i = 0; rc == 0 && i < l.n; i++) {
		struct purge p = {m, now_ns, l.h[i].ino, false, 0, 0, removed, ctx};
		uint64_t g = 0;

		/* Entries came in during the hour: none expires before start + period. */
		if (l.h[i].start_ns + m->trash_ns > now_ns)
			continue;
		p.whole = l.h[i].start_ns + 3600LL * 1000000000 + m->trash_ns <= now_ns;
		rc = meta_readdir(m, l.h[i].ino, "", purge_one, &p);
		if (rc == 0)
			rc = p.failed;
		purged += p.purged;
		if (rc == 0 && p.whole) {
			int r = IN_TXN_LAZY(m, remove_tx(m, t, trash, l.h[i].name, true, &g));

			if (r == 0 && removed)
				removed(ctx, trash, l.h[i].name, l.h[i].ino, g);
			else if (r < 0 && r != -ENOENT && r != -ENOTEMPTY)
				rc = r;
		}
	}
	free(l.h);
	return rc < 0 ? rc : purged;
}
