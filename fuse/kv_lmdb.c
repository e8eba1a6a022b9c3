/*
 * kv_lmdb: the kv engine (fuse/kv.h) on LMDB, the only file that includes lmdb.h. One
 * environment, one named database per table. Commits do not fsync (MDB_NOSYNC); sync
 * does. LMDB serialises writers, so a transaction never fails with -EAGAIN here.
 * MDB_NOTLS lets read transactions move between threads.
 */
#include "fuse/kv.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

struct kv_lmdb {
	struct kv base;
	MDB_env *env;
	MDB_dbi dbi[KV_NTABLES];
};

struct lmdb_txn {
	struct kv_txn base;
	MDB_txn *txn;
};

static const char *const table_names[KV_NTABLES] = {
    [KV_INODES] = "inodes",   [KV_SYMLINKS] = "symlinks", [KV_DENTRIES] = "dentries",
    [KV_CHUNKS] = "chunks",   [KV_FIDREFS] = "fidrefs",	  [KV_XATTRS] = "xattrs",
    [KV_GC] = "gc",	      [KV_COUNTERS] = "counters", [KV_ORPHANS] = "orphans",
    [KV_PARENTS] = "parents", [KV_SESSIONS] = "sessions", [KV_HOLDS] = "holds",
    [KV_LOCKS] = "locks",
};

static int lmdb_err(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_MAP_FULL:
		return -ENOSPC;
	case ENOMEM:
		return -ENOMEM;
	default:
		log_error("meta: lmdb: %s", mdb_strerror(rc));
		return -EIO;
	}
}

static struct kv_lmdb *env_of(struct kv_txn *t)
{
	return (struct kv_lmdb *)t->kv;
}

static MDB_txn *txn_of(struct kv_txn *t)
{
	return ((struct lmdb_txn *)t)->txn;
}

static int l_begin(struct kv *kv, bool write, struct kv_txn **out)
{
	struct lmdb_txn *t = malloc(sizeof(*t));
	int rc;

	if (!t)
		return -ENOMEM;
	rc = mdb_txn_begin(((struct kv_lmdb *)kv)->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
	if (rc != 0) {
		free(t);
		return lmdb_err(rc);
	}
	t->base.kv = kv;
	t->base.write = write;
	t->base.failed = 0;
	t->base.n_touched = 0;
	t->base.single = false;
	t->base.memo = false;
	*out = &t->base;
	return 0;
}

static int l_get(struct kv_txn *t, int table, const void *k, size_t klen, const uint8_t **v,
		 size_t *vlen)
{
	MDB_val key = {klen, (void *)k}, val;
	int rc = mdb_get(txn_of(t), env_of(t)->dbi[table], &key, &val);

	if (rc != 0)
		return rc == MDB_NOTFOUND ? -ENOENT : lmdb_err(rc);
	*v = val.mv_data;
	*vlen = val.mv_size;
	return 0;
}

static int l_get_many(struct kv_txn *t, int table, int n, const void *const *keys,
		      const size_t *lens,
		      int (*fn)(void *ctx, int i, const uint8_t *v, size_t vlen), void *ctx)
{
	for (int i = 0; i < n; i++) {
		const uint8_t *v = NULL;
		size_t vlen = 0;
		int rc = l_get(t, table, keys[i], lens[i], &v, &vlen);

		if (rc < 0 && rc != -ENOENT)
			return rc;
		rc = fn(ctx, i, rc == 0 ? v : NULL, vlen);
		if (rc)
			return rc < 0 ? rc : 0;
	}
	return 0;
}

static int l_get_follow(struct kv_txn *t, int table, const void *k, size_t klen, int table2,
			const uint8_t **v, size_t *vlen, const uint8_t **v2, size_t *v2len)
{
	int rc = l_get(t, table, k, klen, v, vlen);

	if (rc < 0)
		return rc;
	rc = l_get(t, table2, *v, *vlen, v2, v2len);
	if (rc == -ENOENT) {
		*v2 = NULL;
		*v2len = 0;
		rc = 0;
	}
	return rc;
}

static int l_put(struct kv_txn *t, int table, const void *k, size_t klen, const void *v,
		 size_t vlen)
{
	MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};

	return lmdb_err(mdb_put(txn_of(t), env_of(t)->dbi[table], &key, &val, 0));
}

static int l_del(struct kv_txn *t, int table, const void *k, size_t klen)
{
	MDB_val key = {klen, (void *)k};
	int rc = mdb_del(txn_of(t), env_of(t)->dbi[table], &key, NULL);

	return rc == MDB_NOTFOUND ? 0 : lmdb_err(rc);
}

/* memcmp order, shorter first on a tie (LMDB's default key order). */
static int keycmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int l_scan(struct kv_txn *t, int table, const void *from, size_t flen, const void *to,
		  size_t tlen, bool reverse, int limit, kv_scan_fn fn, void *ctx)
{
	MDB_cursor *cur;
	MDB_val key, val;
	int rc, n = 0, ret = 0;

	if (mdb_cursor_open(txn_of(t), env_of(t)->dbi[table], &cur) != 0)
		return -EIO;
	if (!reverse && flen == 0) {
		rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); /* LMDB has no empty keys */
	} else if (!reverse) {
		key.mv_size = flen;
		key.mv_data = (void *)from;
		rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	} else if (to) {
		key.mv_size = tlen;
		key.mv_data = (void *)to;
		rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
		if (rc == 0)
			rc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
		else if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
	} else {
		rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
	}
	while (rc == 0) {
		if (!reverse && to && keycmp(key.mv_data, key.mv_size, to, tlen) >= 0)
			break;
		if (reverse && keycmp(key.mv_data, key.mv_size, from, flen) < 0)
			break;
		ret = fn(ctx, key.mv_data, key.mv_size, val.mv_data, val.mv_size);
		if (ret)
			break;
		if (limit > 0 && ++n >= limit)
			break;
		rc = mdb_cursor_get(cur, &key, &val, reverse ? MDB_PREV : MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (ret)
		return ret < 0 ? ret : 0;
	return rc == 0 || rc == MDB_NOTFOUND ? 0 : lmdb_err(rc);
}

static int l_count(struct kv_txn *t, int table, uint64_t *n)
{
	MDB_stat st;
	int rc = lmdb_err(mdb_stat(txn_of(t), env_of(t)->dbi[table], &st));

	if (rc == 0)
		*n = st.ms_entries;
	return rc;
}

static const char *id_name(enum kv_id id)
{
	return id == KV_ID_INO ? "next_ino" : "gc_seq";
}

/* In the counters table, in the caller's write transaction (one writer at a time). */
static int l_next_id(struct kv_txn *t, enum kv_id id, uint64_t first, uint64_t *out)
{
	const char *name = id_name(id);
	MDB_val key = {strlen(name), (void *)name}, val;
	uint8_t v[8];
	uint64_t n = first;
	MDB_dbi dbi = env_of(t)->dbi[KV_COUNTERS];
	int rc = mdb_get(txn_of(t), dbi, &key, &val);

	if (rc == 0 && val.mv_size == 8)
		n = rd64(val.mv_data);
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	*out = n;
	be64(v, n + 1);
	val.mv_size = 8;
	val.mv_data = v;
	return lmdb_err(mdb_put(txn_of(t), dbi, &key, &val, 0));
}

static int l_peek_id(struct kv_txn *t, enum kv_id id, uint64_t *out)
{
	const uint8_t *v;
	size_t vlen;
	int rc = l_get(t, KV_COUNTERS, id_name(id), strlen(id_name(id)), &v, &vlen);

	*out = 0;
	if (rc == 0 && vlen == 8)
		*out = rd64(v);
	return rc == -ENOENT ? 0 : rc;
}

static int l_raise_id(struct kv_txn *t, enum kv_id id, uint64_t next)
{
	uint64_t cur;
	uint8_t v[8];
	int rc = l_peek_id(t, id, &cur);

	if (rc < 0 || cur >= next)
		return rc;
	be64(v, next);
	return l_put(t, KV_COUNTERS, id_name(id), strlen(id_name(id)), v, 8);
}

/* Properties live in the counters table as "prop:<name>". */
static int l_get_prop(struct kv_txn *t, const char *name, char *out, size_t cap)
{
	char key[64];
	const uint8_t *v;
	size_t vlen;
	int n = snprintf(key, sizeof(key), "prop:%s", name), rc;

	out[0] = '\0';
	rc = l_get(t, KV_COUNTERS, key, (size_t)n, &v, &vlen);
	if (rc == 0)
		snprintf(out, cap, "%.*s", (int)vlen, (const char *)v);
	else if (rc == -ENOENT && !strcmp(name, "format"))
		snprintf(out, cap, "1");
	return rc == -ENOENT ? 0 : rc;
}

static int l_set_prop(struct kv_txn *t, const char *name, const char *value)
{
	char key[64];
	int n = snprintf(key, sizeof(key), "prop:%s", name);

	return l_put(t, KV_COUNTERS, key, (size_t)n, value, strlen(value));
}

static int l_commit(struct kv_txn *t)
{
	int rc = t->failed;

	if (rc)
		mdb_txn_abort(txn_of(t));
	else
		rc = lmdb_err(mdb_txn_commit(txn_of(t)));
	free(t);
	return rc;
}

static void l_abort(struct kv_txn *t)
{
	mdb_txn_abort(txn_of(t));
	free(t);
}

static int l_sync(struct kv *kv, bool all)
{
	(void)all; /* one process per environment */
	return lmdb_err(mdb_env_sync(((struct kv_lmdb *)kv)->env, 1));
}

static void l_close(struct kv *kv)
{
	struct kv_lmdb *l = (struct kv_lmdb *)kv;

	mdb_env_sync(l->env, 1);
	mdb_env_close(l->env);
	free(l);
}

static const struct kv_ops lmdb_ops = {
    .name = "lmdb",
    .begin = l_begin,
    .get = l_get,
    .get_many = l_get_many,
    .get_follow = l_get_follow,
    .put = l_put,
    .del = l_del,
    .scan = l_scan,
    .count = l_count,
    .next_id = l_next_id,
    .peek_id = l_peek_id,
    .raise_id = l_raise_id,
    .get_prop = l_get_prop,
    .set_prop = l_set_prop,
    .commit = l_commit,
    .abort = l_abort,
    .sync = l_sync,
    .close = l_close,
};

int kv_lmdb_open(const char *dir, struct kv **out)
{
	struct kv_lmdb *l = calloc(1, sizeof(*l));
	MDB_txn *txn;
	int rc;

	if (!l)
		return -ENOMEM;
	rc = mkdir_p(dir, 0700);
	if (rc < 0) {
		free(l);
		return rc;
	}
	rc = mdb_env_create(&l->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(l->env, 16);
	if (rc == 0)
		rc = mdb_env_set_mapsize(l->env, (size_t)64 << 30);
	if (rc == 0)
		rc = mdb_env_set_maxreaders(l->env, 512);
	if (rc == 0)
		rc = mdb_env_open(l->env, dir, MDB_NOTLS | MDB_NOSYNC, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(l->env, NULL, 0, &txn);
	if (rc != 0) {
		log_error("meta: cannot open LMDB in %s: %s", dir, mdb_strerror(rc));
		if (l->env)
			mdb_env_close(l->env);
		free(l);
		return -EIO;
	}
	for (int i = 0; rc == 0 && i < KV_NTABLES; i++)
		rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE, &l->dbi[i]);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0) {
		log_error("meta: cannot set up LMDB in %s: %s", dir, mdb_strerror(rc));
		mdb_env_close(l->env);
		free(l);
		return -EIO;
	}
	l->base.ops = &lmdb_ops;
	l->base.shared = false;
	*out = &l->base;
	return 0;
}
