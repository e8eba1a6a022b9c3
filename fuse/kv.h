/*
 * kv: the storage engines under the mount's metadata (fuse/meta.c): an ordered,
 * transactional key-value store with a few named tables. meta.c holds the filesystem
 * rules and talks only to this interface; kv_lmdb.c (an LMDB environment on the mount
 * host) and kv_pg.c (a PostgreSQL database shared by many mounts) implement it. Another
 * transactional ordered store (etcd, TiKV, FoundationDB) would be one more file.
 *
 * Keys compare as bytes (memcmp, shorter first on a tie), so big-endian integers scan in
 * order. A transaction is read-only or read-write; everything it reads is one snapshot,
 * and a read-write one commits all or nothing. Two read-write transactions that
 * conflict: one of them fails with -EAGAIN (at any call or at commit), and the caller
 * runs it again from the start (meta.c's retry loop). An engine that lost its server
 * returns -ENOTCONN; the caller waits and retries up to its timeout.
 *
 * Once a call of a transaction fails (anything but -ENOENT), every later call and the
 * commit fail the same way (t->failed), so a caller that ignores one error (an existence
 * test) still cannot commit a half-seen state.
 *
 * Values returned by get stay valid until the transaction ends; keys and values handed
 * to a scan callback only during that call (a scan of a whole table must not keep it
 * in memory: a dump reads millions of rows in one transaction).
 */
#ifndef KELP_KV_H
#define KELP_KV_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kv_table {
	KV_INODES,
	KV_SYMLINKS,
	KV_DENTRIES,
	KV_CHUNKS,
	KV_FIDREFS,
	KV_XATTRS,
	KV_GC,
	KV_COUNTERS,
	KV_ORPHANS,
	KV_PARENTS,
	KV_SESSIONS,
	KV_HOLDS,
	KV_LOCKS,
	KV_NTABLES
};

/* Counters handed out by next_id: never the same number twice, across every mount. */
enum kv_id { KV_ID_INO, KV_ID_GC };

struct kv;

#define KV_TOUCHED_MAX 4

struct kv_txn {
	struct kv *kv;
	bool write;
	int failed; /* 0, or the error every later call returns */
	/* For the layer above (meta.c, which clears it at begin): the inodes whose data
	 * or attributes this transaction writes, so that what it caches of them is
	 * dropped (n_touched > KV_TOUCHED_MAX: too many to list, drop everything). */
	uint64_t touched[KV_TOUCHED_MAX];
	int n_touched;
	/* Set by the caller right after begin (false there): this read-only transaction
	 * makes exactly one get or get_follow, which is one snapshot by itself, so an
	 * engine may run it without opening a transaction (PostgreSQL: no BEGIN and
	 * ROLLBACK around it). A second call then fails with -EIO. */
	bool single;
	/* meta's: the directory attributes it writes are remembered (meta_getattr_dir) */
	bool memo;
	/* Set by the caller right after begin (false there): this read-write transaction's
	 * commit may return before it is durable. It is committed and seen by everyone at
	 * once all the same, and made durable by the next sync, or by the engine within its
	 * own delay (PostgreSQL: its WAL writer, a fraction of a second; LMDB commits this
	 * way always and is synced every second). */
	bool lazy;
};

/*
 * A read of a batch (kv_ops.prefetch): a get of key, or a scan of [key, to) (to NULL:
 * to the end of the table), ascending or reversed, of at most limit (> 0) keys.
 */
struct kv_read {
	int table;
	const void *key;
	size_t klen;
	bool scan, reverse;
	const void *to;
	size_t tlen;
	int limit;
};

/* Called for each key in a scan; non-zero stops it (a negative value is returned). */
typedef int (*kv_scan_fn)(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen);
/* The same for scan_follow: v2 is the value of v used as a key in the second table
 * (NULL when absent). */
typedef int (*kv_follow_fn)(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
			    const uint8_t *v2, size_t v2len);

struct kv_ops {
	const char *name;
	int (*begin)(struct kv *kv, bool write, struct kv_txn **out);
	/* -ENOENT when absent. */
	int (*get)(struct kv_txn *t, int table, const void *k, size_t klen, const uint8_t **v,
		   size_t *vlen);
	/*
	 * Gets n keys of one table (each keys[i] of lens[i] bytes) at once: fn gets each
	 * index with its value (v NULL when absent). An engine with round trips does all
	 * in one. Returns 0, what fn returned when negative, or -errno.
	 */
	int (*get_many)(struct kv_txn *t, int table, int n, const void *const *keys,
			const size_t *lens,
			int (*fn)(void *ctx, int i, const uint8_t *v, size_t vlen), void *ctx);
	/*
	 * Gets k in table, then the value found, used as a key, in table2 (a name, then
	 * its inode): one round trip where the engine can. -ENOENT when k is absent; *v2
	 * NULL when the second key is.
	 */
	int (*get_follow)(struct kv_txn *t, int table, const void *k, size_t klen, int table2,
			  const uint8_t **v, size_t *vlen, const uint8_t **v2, size_t *v2len);
	/*
	 * Optional (NULL: nothing to gain, e.g. an embedded engine). Runs the n reads at
	 * once (one round trip); the transaction's later get and scan calls with the same
	 * arguments (a scan: the same table, bounds and direction, any limit) are answered
	 * from their results, the rest of a scan cut by the batch's limit fetched then,
	 * unless a put or del of this transaction touched the key or range since. A hint:
	 * the results are the same with or without it.
	 */
	int (*prefetch)(struct kv_txn *t, const struct kv_read *r, int n);
	int (*put)(struct kv_txn *t, int table, const void *k, size_t klen, const void *v,
		   size_t vlen);
	/* Removes the key if present (0 either way: an engine may not wait to know). */
	int (*del)(struct kv_txn *t, int table, const void *k, size_t klen);
	/*
	 * The keys in [from, to) (to NULL: up to the end of the table), ascending, or
	 * descending with reverse. limit > 0: at most that many (a hint that lets an engine
	 * fetch fewer rows). Returns 0, what fn returned when negative, or -errno.
	 */
	int (*scan)(struct kv_txn *t, int table, const void *from, size_t flen, const void *to,
		    size_t tlen, bool reverse, int limit, kv_scan_fn fn, void *ctx);
	/*
	 * Optional (NULL: kv_scan_follow does a scan and a get per key). The first limit
	 * (> 0) keys in [from, to) of table, ascending, each with the value found under
	 * its value in table2 (a directory's names with their inodes): one round trip
	 * (one statement) where the engine can. Returns 0, what fn returned when
	 * negative, or -errno.
	 */
	int (*scan_follow)(struct kv_txn *t, int table, const void *from, size_t flen,
			   const void *to, size_t tlen, int limit, int table2, kv_follow_fn fn,
			   void *ctx);
	int (*count)(struct kv_txn *t, int table, uint64_t *n);
	/* A number never handed out before (starting at first); may skip numbers. */
	int (*next_id)(struct kv_txn *t, enum kv_id id, uint64_t first, uint64_t *out);
	/*
	 * A number above every one next_id has handed out (0 when it never has), for a
	 * dump; and making next_id never hand out one below `next` (a load). Neither is
	 * rolled back with the transaction (sequences), which only ever skips numbers.
	 */
	int (*peek_id)(struct kv_txn *t, enum kv_id id, uint64_t *out);
	int (*raise_id)(struct kv_txn *t, enum kv_id id, uint64_t next);
	/*
	 * A property of the whole store, in the transaction: "format" (the engine's format
	 * version) and "cluster_id" (the masters' TopologyId it belongs to). Values are
	 * short strings; get gives "" when unset (the format of LMDB is "1").
	 */
	int (*get_prop)(struct kv_txn *t, const char *name, char *out, size_t cap);
	int (*set_prop)(struct kv_txn *t, const char *name, const char *value);
	/* Ends the transaction (t is freed): 0, -EAGAIN (run it again), -ENOTCONN, -errno. */
	int (*commit)(struct kv_txn *t);
	void (*abort)(struct kv_txn *t);
	/*
	 * Makes committed transactions durable: this process's (all = false), or every
	 * process's (all = true: a shared engine's other mounts commit lazily too; before
	 * anything irrevocable is done on the strength of what they committed, such as
	 * deleting a blob whose last reference they removed).
	 */
	int (*sync)(struct kv *kv, bool all);
	void (*close)(struct kv *kv);
};

struct kv {
	const struct kv_ops *ops;
	bool shared; /* other mounts may change the data (caches must not trust it) */
	/* Counted by engines that talk to a server (atomic): transactions begun, and
	 * round trips (a request sent and its answer waited for). For tests and benches. */
	uint64_t txns, round_trips;
};

/* Opens an LMDB environment in dir (created if missing). */
int kv_lmdb_open(const char *dir, struct kv **out);

struct kv_pg_options {
	const char *cluster_id; /* the masters' TopologyId, "" or NULL = unknown */
	int timeout_ms;		/* how long to wait for an unreachable server at open */
	int connections;	/* pool size */
};

/* Connects to a postgres:// or postgresql:// URL, creating the schema on first use. */
int kv_pg_open(const char *url, const struct kv_pg_options *o, struct kv **out);

/* True when spec names a PostgreSQL database (postgres:// or postgresql://). */
bool kv_is_pg_url(const char *spec);

/* The URL with its password replaced by "***" (for messages). */
void kv_mask_url(const char *url, char *out, size_t cap);

/*
 * Inline wrappers. Any failure but -ENOENT marks the transaction failed: every later
 * call returns the same error and it cannot commit (see above).
 */
/* Big-endian u64 keys and values, so ranges scan in numeric order. */
static inline void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline int kv_failed(struct kv_txn *t, int rc)
{
	if (rc < 0 && rc != -ENOENT && !t->failed)
		t->failed = rc;
	return rc;
}

static inline int kv_get(struct kv_txn *t, int table, const void *k, size_t klen, const uint8_t **v,
			 size_t *vlen)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->get(t, table, k, klen, v, vlen));
}

static inline int kv_get_many(struct kv_txn *t, int table, int n, const void *const *keys,
			      const size_t *lens,
			      int (*fn)(void *ctx, int i, const uint8_t *v, size_t vlen), void *ctx)
{
	return t->failed ? t->failed
			 : kv_failed(t, t->kv->ops->get_many(t, table, n, keys, lens, fn, ctx));
}

static inline int kv_get_follow(struct kv_txn *t, int table, const void *k, size_t klen, int table2,
				const uint8_t **v, size_t *vlen, const uint8_t **v2, size_t *v2len)
{
	return t->failed ? t->failed
			 : kv_failed(t, t->kv->ops->get_follow(t, table, k, klen, table2, v, vlen,
							       v2, v2len));
}

static inline int kv_prefetch(struct kv_txn *t, const struct kv_read *r, int n)
{
	if (t->failed || !t->kv->ops->prefetch || n <= 0)
		return t->failed;
	return kv_failed(t, t->kv->ops->prefetch(t, r, n));
}

static inline int kv_put(struct kv_txn *t, int table, const void *k, size_t klen, const void *v,
			 size_t vlen)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->put(t, table, k, klen, v, vlen));
}

static inline int kv_del(struct kv_txn *t, int table, const void *k, size_t klen)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->del(t, table, k, klen));
}

static inline int kv_scan(struct kv_txn *t, int table, const void *from, size_t flen,
			  const void *to, size_t tlen, bool reverse, int limit, kv_scan_fn fn,
			  void *ctx)
{
	return t->failed ? t->failed
			 : kv_failed(t, t->kv->ops->scan(t, table, from, flen, to, tlen, reverse,
							 limit, fn, ctx));
}

struct kv_follow_ {
	struct kv_txn *t;
	int table2;
	kv_follow_fn fn;
	void *ctx;
};

static inline int kv_follow_one_(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v,
				 size_t vlen)
{
	struct kv_follow_ *f = (struct kv_follow_ *)ctx;
	const uint8_t *v2 = NULL;
	size_t v2len = 0;
	int rc = f->t->kv->ops->get(f->t, f->table2, v, vlen, &v2, &v2len);

	if (rc == -ENOENT)
		v2 = NULL, v2len = 0;
	else if (rc < 0)
		return rc;
	return f->fn(f->ctx, k, klen, v, vlen, v2, v2len);
}

/* kv_ops.scan_follow, or a scan with a get per key where the engine has none. */
static inline int kv_scan_follow(struct kv_txn *t, int table, const void *from, size_t flen,
				 const void *to, size_t tlen, int limit, int table2,
				 kv_follow_fn fn, void *ctx)
{
	struct kv_follow_ f = {t, table2, fn, ctx};

	if (t->failed)
		return t->failed;
	if (limit <= 0)
		return kv_failed(t, -EINVAL);
	if (t->kv->ops->scan_follow)
		return kv_failed(t, t->kv->ops->scan_follow(t, table, from, flen, to, tlen, limit,
							    table2, fn, ctx));
	return kv_failed(
	    t, t->kv->ops->scan(t, table, from, flen, to, tlen, false, limit, kv_follow_one_, &f));
}

static inline int kv_count(struct kv_txn *t, int table, uint64_t *n)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->count(t, table, n));
}

static inline int kv_next_id(struct kv_txn *t, enum kv_id id, uint64_t first, uint64_t *out)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->next_id(t, id, first, out));
}

static inline int kv_peek_id(struct kv_txn *t, enum kv_id id, uint64_t *out)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->peek_id(t, id, out));
}

static inline int kv_raise_id(struct kv_txn *t, enum kv_id id, uint64_t next)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->raise_id(t, id, next));
}

static inline int kv_get_prop(struct kv_txn *t, const char *name, char *out, size_t cap)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->get_prop(t, name, out, cap));
}

static inline int kv_set_prop(struct kv_txn *t, const char *name, const char *value)
{
	return t->failed ? t->failed : kv_failed(t, t->kv->ops->set_prop(t, name, value));
}

#endif
