#include "fuse/meta.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

struct meta {
	MDB_env *env;
	MDB_dbi inodes, symlinks, dentries, chunks, fidrefs, xattrs, gc, counters, orphans, parents;
	uint64_t gc_generation; /* bumped (atomically) by every blob sent to gc */
	uint32_t generation;	/* of every inode of this metadata (meta_generation) */
};

int64_t meta_now_ns(void)
{
	return (int64_t)now_ns();
}

/* ---------------------------------------------------------------- encoding */

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

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

/* ---------------------------------------------------------------- open */

int meta_open(const char *dir, struct meta **out)
{
	struct meta *m = calloc(1, sizeof(*m));
	MDB_txn *txn;
	int rc;

	if (!m)
		return -ENOMEM;
	rc = mkdir_p(dir, 0700);
	if (rc < 0) {
		free(m);
		return rc;
	}
	rc = mdb_env_create(&m->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(m->env, 16);
	if (rc == 0)
		rc = mdb_env_set_mapsize(m->env, (size_t)64 << 30);
	if (rc == 0)
		rc = mdb_env_set_maxreaders(m->env, 512);
	if (rc == 0)
		rc = mdb_env_open(m->env, dir, MDB_NOTLS | MDB_NOSYNC, 0600);
	if (rc == 0)
		rc = mdb_txn_begin(m->env, NULL, 0, &txn);
	if (rc != 0) {
		log_error("meta: cannot open LMDB in %s: %s", dir, mdb_strerror(rc));
		if (m->env)
			mdb_env_close(m->env);
		free(m);
		return -EIO;
	}
	{
		const struct {
			const char *name;
			MDB_dbi *dbi;
		} tables[] = {
		    {"inodes", &m->inodes},
		    {"symlinks", &m->symlinks},
		    {"dentries", &m->dentries},
		    {"chunks", &m->chunks},
		    {"fidrefs", &m->fidrefs},
		    {"xattrs", &m->xattrs},
		    {"gc", &m->gc},
		    {"counters", &m->counters},
		    {"orphans", &m->orphans},
		    {"parents", &m->parents},
		};

		for (size_t i = 0; rc == 0 && i < sizeof(tables) / sizeof(tables[0]); i++)
			rc = mdb_dbi_open(txn, tables[i].name, MDB_CREATE, tables[i].dbi);
	}
	if (rc == 0) {
		/* The root directory, on first use. */
		uint8_t k[8];
		MDB_val key = {8, k}, val;

		be64(k, META_ROOT_INO);
		if (mdb_get(txn, m->inodes, &key, &val) == MDB_NOTFOUND) {
			struct meta_attr root = {0};
			int64_t now = meta_now_ns();

			root.ino = META_ROOT_INO;
			root.mode = S_IFDIR | 0755;
			root.nlink = 2;
			root.atime_ns = root.mtime_ns = root.ctime_ns = root.crtime_ns = now;
			val.mv_size = sizeof(root);
			val.mv_data = &root;
			rc = mdb_put(txn, m->inodes, &key, &val, 0);
		}
	}
	if (rc == 0) {
		/* The inode generation, drawn once when the metadata is created. */
		MDB_val key = {10, "generation"}, val;
		uint32_t g = 0;

		rc = mdb_get(txn, m->counters, &key, &val);
		if (rc == 0 && val.mv_size == 4) {
			memcpy(&g, val.mv_data, 4);
		} else if (rc == MDB_NOTFOUND) {
			while (g == 0)
				if (getrandom(&g, sizeof(g), 0) != sizeof(g))
					g = (uint32_t)now_ns() | 1;
			val.mv_size = 4;
			val.mv_data = &g;
			rc = mdb_put(txn, m->counters, &key, &val, 0);
		}
		m->generation = g;
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0) {
		log_error("meta: cannot set up LMDB in %s: %s", dir, mdb_strerror(rc));
		mdb_env_close(m->env);
		free(m);
		return -EIO;
	}
	*out = m;
	return 0;
}

int meta_sync(struct meta *m)
{
	return lmdb_err(mdb_env_sync(m->env, 1));
}

void meta_close(struct meta *m)
{
	if (!m)
		return;
	mdb_env_sync(m->env, 1);
	mdb_env_close(m->env);
	free(m);
}

/* ---------------------------------------------------------------- helpers (in a txn) */

static int get_attr(struct meta *m, MDB_txn *txn, uint64_t ino, struct meta_attr *out)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	int rc;

	be64(k, ino);
	rc = mdb_get(txn, m->inodes, &key, &val);
	if (rc != 0)
		return lmdb_err(rc);
	if (val.mv_size != sizeof(*out))
		return -EIO;
	memcpy(out, val.mv_data, sizeof(*out));
	return 0;
}

static int put_attr(struct meta *m, MDB_txn *txn, const struct meta_attr *a)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val = {sizeof(*a), (void *)a};

	be64(k, a->ino);
	return lmdb_err(mdb_put(txn, m->inodes, &key, &val, 0));
}

static size_t dentry_key(uint8_t *buf, uint64_t parent, const char *name)
{
	size_t n = strlen(name);

	be64(buf, parent);
	memcpy(buf + 8, name, n);
	return 8 + n;
}

static int get_dentry(struct meta *m, MDB_txn *txn, uint64_t parent, const char *name,
		      uint64_t *ino)
{
	uint8_t k[8 + META_NAME_MAX];
	MDB_val key = {dentry_key(k, parent, name), k}, val;
	int rc = mdb_get(txn, m->dentries, &key, &val);

	if (rc != 0)
		return lmdb_err(rc);
	if (val.mv_size != 8)
		return -EIO;
	*ino = rd64(val.mv_data);
	return 0;
}

static int put_dentry(struct meta *m, MDB_txn *txn, uint64_t parent, const char *name, uint64_t ino)
{
	uint8_t k[8 + META_NAME_MAX], v[8];
	MDB_val key = {dentry_key(k, parent, name), k}, val = {8, v};

	be64(v, ino);
	return lmdb_err(mdb_put(txn, m->dentries, &key, &val, 0));
}

static int del_dentry(struct meta *m, MDB_txn *txn, uint64_t parent, const char *name)
{
	uint8_t k[8 + META_NAME_MAX];
	MDB_val key = {dentry_key(k, parent, name), k};

	return lmdb_err(mdb_del(txn, m->dentries, &key, NULL));
}

static int next_counter(struct meta *m, MDB_txn *txn, const char *name, uint64_t first,
			uint64_t *out)
{
	MDB_val key = {strlen(name), (void *)name}, val;
	uint8_t v[8];
	uint64_t n = first;
	int rc = mdb_get(txn, m->counters, &key, &val);

	if (rc == 0 && val.mv_size == 8)
		n = rd64(val.mv_data);
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	*out = n;
	be64(v, n + 1);
	val.mv_size = 8;
	val.mv_data = v;
	return lmdb_err(mdb_put(txn, m->counters, &key, &val, 0));
}

/* Directories remember their parent (for the rename-into-itself check). */
static int set_parent(struct meta *m, MDB_txn *txn, uint64_t dir, uint64_t parent)
{
	uint8_t k[8], v[8];
	MDB_val key = {8, k}, val = {8, v};

	be64(k, dir);
	be64(v, parent);
	return lmdb_err(mdb_put(txn, m->parents, &key, &val, 0));
}

static bool dir_empty(struct meta *m, MDB_txn *txn, uint64_t ino)
{
	MDB_cursor *c;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	bool empty = true;

	be64(k, ino);
	if (mdb_cursor_open(txn, m->dentries, &c) != 0)
		return false;
	if (mdb_cursor_get(c, &key, &val, MDB_SET_RANGE) == 0 && key.mv_size >= 8 &&
	    rd64(key.mv_data) == ino)
		empty = false;
	mdb_cursor_close(c);
	return empty;
}

/* Adds delta to a blob's reference count; at 0 the blob goes to gc. */
static int fidref_add(struct meta *m, MDB_txn *txn, const char *fid, int delta)
{
	MDB_val key = {strlen(fid), (void *)fid}, val;
	uint32_t count = 0;
	int rc = mdb_get(txn, m->fidrefs, &key, &val);

	if (rc == 0 && val.mv_size == 4)
		memcpy(&count, val.mv_data, 4);
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_err(rc);
	if (delta < 0 && count < (uint32_t)-delta)
		count = 0;
	else
		count = (uint32_t)((int64_t)count + delta);
	if (count == 0) {
		uint64_t seq;
		uint8_t k[8];
		MDB_val gk = {8, k}, gv = {strlen(fid), (void *)fid};

		if (rc == 0)
			mdb_del(txn, m->fidrefs, &key, NULL);
		rc = next_counter(m, txn, "gc_seq", 1, &seq);
		if (rc < 0)
			return rc;
		be64(k, seq);
		/* Counted before the commit: a gc pass that runs in between misses the
		 * blob, and the next one (at most a second later) takes it. */
		__atomic_add_fetch(&m->gc_generation, 1, __ATOMIC_RELEASE);
		return lmdb_err(mdb_put(txn, m->gc, &gk, &gv, 0));
	}
	val.mv_size = 4;
	val.mv_data = &count;
	return lmdb_err(mdb_put(txn, m->fidrefs, &key, &val, 0));
}

static void chunk_key(uint8_t *k, uint64_t ino, uint64_t offset)
{
	be64(k, ino);
	be64(k + 8, offset);
}

static int put_chunk(struct meta *m, MDB_txn *txn, uint64_t ino, const struct meta_chunk *c)
{
	uint8_t k[16], v[16 + META_FID_MAX];
	size_t flen = strnlen(c->fid, META_FID_MAX - 1);
	MDB_val key = {16, k}, val = {16 + flen, v};

	chunk_key(k, ino, c->offset);
	be64(v, c->length);
	be64(v + 8, c->blob_offset);
	memcpy(v + 16, c->fid, flen);
	return lmdb_err(mdb_put(txn, m->chunks, &key, &val, 0));
}

static int decode_chunk(const MDB_val *key, const MDB_val *val, struct meta_chunk *c)
{
	size_t flen;

	if (key->mv_size != 16 || val->mv_size < 17 || val->mv_size > 16 + META_FID_MAX - 1)
		return -EIO;
	c->offset = rd64((const uint8_t *)key->mv_data + 8);
	c->length = rd64(val->mv_data);
	c->blob_offset = rd64((const uint8_t *)val->mv_data + 8);
	flen = val->mv_size - 16;
	memcpy(c->fid, (const uint8_t *)val->mv_data + 16, flen);
	c->fid[flen] = '\0';
	return 0;
}

/* Collects the chunks of ino overlapping [start, end) (caller frees). */
static int collect_chunks(struct meta *m, MDB_txn *txn, uint64_t ino, uint64_t start, uint64_t end,
			  struct meta_chunk **out)
{
	MDB_cursor *cur;
	uint8_t k[16];
	MDB_val key = {16, k}, val;
	struct meta_chunk *list = NULL;
	int n = 0, cap = 0, rc;

	*out = NULL;
	if (mdb_cursor_open(txn, m->chunks, &cur) != 0)
		return -EIO;
	chunk_key(k, ino, start);
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	/* The interval just before start may reach into the range. */
	if (rc == 0 || rc == MDB_NOTFOUND) {
		MDB_val pk, pv;
		int prc = rc == 0 ? mdb_cursor_get(cur, &pk, &pv, MDB_PREV)
				  : mdb_cursor_get(cur, &pk, &pv, MDB_LAST);

		if (prc == 0 && pk.mv_size == 16 && rd64(pk.mv_data) == ino) {
			key = pk;
			val = pv;
			rc = 0;
		} else {
			chunk_key(k, ino, start);
			key.mv_size = 16;
			key.mv_data = k;
			rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
		}
	}
	for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		struct meta_chunk c;

		if (key.mv_size != 16 || rd64(key.mv_data) != ino)
			break;
		if (decode_chunk(&key, &val, &c) < 0) {
			rc = -EIO;
			goto fail;
		}
		if (c.offset >= end)
			break;
		if (c.offset + c.length <= start)
			continue;
		if (n == cap) {
			struct meta_chunk *p;

			cap = cap ? cap * 2 : 16;
			p = realloc(list, (size_t)cap * sizeof(*p));
			if (!p) {
				rc = -ENOMEM;
				goto fail;
			}
			list = p;
		}
		list[n++] = c;
	}
	mdb_cursor_close(cur);
	*out = list;
	return n;
fail:
	mdb_cursor_close(cur);
	free(list);
	return rc;
}

/* Removes [start, end) from ino's data: drops or trims the intervals there. */
static int punch(struct meta *m, MDB_txn *txn, uint64_t ino, uint64_t start, uint64_t end)
{
	struct meta_chunk *list;
	int n = collect_chunks(m, txn, ino, start, end, &list), rc = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n && rc == 0; i++) {
		struct meta_chunk c = list[i];
		uint64_t a = c.offset, b = c.offset + c.length;
		uint8_t k[16];
		MDB_val key = {16, k};

		chunk_key(k, ino, a);
		rc = lmdb_err(mdb_del(txn, m->chunks, &key, NULL));
		if (rc == 0 && a < start) {
			struct meta_chunk left = c;

			left.length = start - a;
			rc = put_chunk(m, txn, ino, &left);
			if (rc == 0)
				rc = fidref_add(m, txn, c.fid, 1);
		}
		if (rc == 0 && b > end) {
			struct meta_chunk right = c;

			right.offset = end;
			right.length = b - end;
			right.blob_offset = c.blob_offset + (end - a);
			rc = put_chunk(m, txn, ino, &right);
			if (rc == 0)
				rc = fidref_add(m, txn, c.fid, 1);
		}
		if (rc == 0)
			rc = fidref_add(m, txn, c.fid, -1);
	}
	free(list);
	return rc;
}

static int free_inode(struct meta *m, MDB_txn *txn, uint64_t ino)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	MDB_cursor *cur;
	int rc;

	rc = punch(m, txn, ino, 0, UINT64_MAX);
	if (rc < 0)
		return rc;
	/* xattrs */
	if (mdb_cursor_open(txn, m->xattrs, &cur) == 0) {
		be64(k, ino);
		key.mv_size = 8;
		key.mv_data = k;
		for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
		     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
			if (key.mv_size < 8 || rd64(key.mv_data) != ino)
				break;
			mdb_cursor_del(cur, 0);
		}
		mdb_cursor_close(cur);
	}
	be64(k, ino);
	key.mv_size = 8;
	key.mv_data = k;
	mdb_del(txn, m->symlinks, &key, NULL);
	mdb_del(txn, m->orphans, &key, NULL);
	mdb_del(txn, m->parents, &key, NULL);
	rc = mdb_del(txn, m->inodes, &key, NULL);
	return rc == MDB_NOTFOUND ? 0 : lmdb_err(rc);
}

/* Drops one link of ino; at 0 the inode is recorded as an orphan (freed on release). */
static int drop_link(struct meta *m, MDB_txn *txn, uint64_t ino, int64_t now, uint64_t *gone)
{
	struct meta_attr a;
	int rc = get_attr(m, txn, ino, &a);

	if (rc < 0)
		return rc;
	if (S_ISDIR(a.mode))
		a.nlink = 0;
	else if (a.nlink > 0)
		a.nlink--;
	a.ctime_ns = now;
	rc = put_attr(m, txn, &a);
	if (rc == 0 && a.nlink == 0) {
		uint8_t k[8];
		MDB_val key = {8, k}, val = {1, "1"};

		be64(k, ino);
		rc = lmdb_err(mdb_put(txn, m->orphans, &key, &val, 0));
		*gone = ino;
	}
	return rc;
}

static int txn_begin(struct meta *m, bool write, MDB_txn **txn)
{
	return lmdb_err(mdb_txn_begin(m->env, NULL, write ? 0 : MDB_RDONLY, txn));
}

static int txn_end(MDB_txn *txn, int rc)
{
	if (rc < 0) {
		mdb_txn_abort(txn);
		return rc;
	}
	return lmdb_err(mdb_txn_commit(txn));
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

/* ---------------------------------------------------------------- public */

int meta_getattr(struct meta *m, uint64_t ino, struct meta_attr *out)
{
	MDB_txn *txn;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, out);
	mdb_txn_abort(txn);
	return rc;
}

/* The directory holding directory ino (the root's is the root). */
static int get_parent(struct meta *m, MDB_txn *txn, uint64_t ino, uint64_t *parent)
{
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	int rc;

	if (ino == META_ROOT_INO) {
		*parent = ino;
		return 0;
	}
	be64(k, ino);
	rc = mdb_get(txn, m->parents, &key, &val);
	if (rc != 0)
		return lmdb_err(rc);
	if (val.mv_size != 8)
		return -EIO;
	*parent = rd64(val.mv_data);
	return 0;
}

int meta_lookup(struct meta *m, uint64_t parent, const char *name, struct meta_attr *out)
{
	MDB_txn *txn;
	uint64_t ino;
	int rc;

	if (strlen(name) > META_NAME_MAX)
		return -ENAMETOOLONG;
	rc = txn_begin(m, false, &txn);
	if (rc < 0)
		return rc;
	if (!strcmp(name, ".")) {
		ino = parent; /* any inode, as long as it still has a name */
		rc = 0;
	} else if (!strcmp(name, "..")) {
		rc = get_attr(m, txn, parent, out);
		if (rc == 0 && !S_ISDIR(out->mode))
			rc = -ENOTDIR;
		if (rc == 0)
			rc = get_parent(m, txn, parent, &ino);
	} else {
		rc = get_dentry(m, txn, parent, name, &ino);
	}
	if (rc == 0)
		rc = get_attr(m, txn, ino, out);
	if (rc == 0 && out->nlink == 0)
		rc = -ENOENT; /* removed, only still open */
	mdb_txn_abort(txn);
	return rc;
}

uint32_t meta_generation(struct meta *m)
{
	return m->generation;
}

int meta_create(struct meta *m, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, uint32_t rdev, const char *target, struct meta_attr *out)
{
	struct meta_attr p, a;
	MDB_txn *txn;
	uint64_t ino;
	int64_t now = meta_now_ns();
	int rc = check_name(name);

	if (rc < 0)
		return rc;
	rc = txn_begin(m, true, &txn);
	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, parent, &p);
	if (rc == 0 && !S_ISDIR(p.mode))
		rc = -ENOTDIR;
	if (rc == 0 && p.nlink == 0)
		rc = -ENOENT; /* a removed directory */
	if (rc == 0 && get_dentry(m, txn, parent, name, &ino) == 0)
		rc = -EEXIST;
	if (rc == 0)
		rc = next_counter(m, txn, "next_ino", 2, &ino);
	if (rc == 0) {
		memset(&a, 0, sizeof(a));
		a.ino = ino;
		a.mode = target ? (S_IFLNK | 0777) : mode;
		a.nlink = S_ISDIR(a.mode) ? 2 : 1;
		a.uid = uid;
		a.gid = gid;
		a.rdev = rdev;
		a.atime_ns = a.mtime_ns = a.ctime_ns = a.crtime_ns = now;
		if (target)
			a.size = strlen(target);
		rc = put_attr(m, txn, &a);
	}
	if (rc == 0 && target) {
		uint8_t k[8];
		MDB_val key = {8, k}, val = {strlen(target), (void *)target};

		be64(k, ino);
		rc = lmdb_err(mdb_put(txn, m->symlinks, &key, &val, 0));
	}
	if (rc == 0)
		rc = put_dentry(m, txn, parent, name, ino);
	if (rc == 0 && S_ISDIR(a.mode))
		rc = set_parent(m, txn, ino, parent);
	if (rc == 0) {
		if (S_ISDIR(a.mode))
			p.nlink++;
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(m, txn, &p);
	}
	rc = txn_end(txn, rc);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_readlink(struct meta *m, uint64_t ino, char *buf, size_t cap)
{
	MDB_txn *txn;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	be64(k, ino);
	rc = lmdb_err(mdb_get(txn, m->symlinks, &key, &val));
	if (rc == 0) {
		size_t n = val.mv_size < cap - 1 ? val.mv_size : cap - 1;

		memcpy(buf, val.mv_data, n);
		buf[n] = '\0';
	} else if (rc == -ENOENT) {
		rc = -EINVAL;
	}
	mdb_txn_abort(txn);
	return rc;
}

int meta_link(struct meta *m, uint64_t ino, uint64_t newparent, const char *newname,
	      struct meta_attr *out)
{
	struct meta_attr a, p;
	MDB_txn *txn;
	uint64_t existing;
	int64_t now = meta_now_ns();
	int rc = check_name(newname);

	if (rc < 0)
		return rc;
	rc = txn_begin(m, true, &txn);
	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	if (rc == 0 && S_ISDIR(a.mode))
		rc = -EPERM;
	if (rc == 0)
		rc = get_attr(m, txn, newparent, &p);
	if (rc == 0 && !S_ISDIR(p.mode))
		rc = -ENOTDIR;
	if (rc == 0 && get_dentry(m, txn, newparent, newname, &existing) == 0)
		rc = -EEXIST;
	if (rc == 0 && a.nlink == 0)
		rc = -ENOENT;
	if (rc == 0)
		rc = put_dentry(m, txn, newparent, newname, ino);
	if (rc == 0) {
		a.nlink++;
		a.ctime_ns = now;
		rc = put_attr(m, txn, &a);
	}
	if (rc == 0) {
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(m, txn, &p);
	}
	rc = txn_end(txn, rc);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

/* unlink (dir false) and rmdir (dir true): one transaction removing parent/name. */
static int remove_name(struct meta *m, uint64_t parent, const char *name, bool dir,
		       uint64_t *gone_ino)
{
	struct meta_attr a, p;
	MDB_txn *txn;
	uint64_t ino;
	int64_t now = meta_now_ns();
	int rc = txn_begin(m, true, &txn);

	*gone_ino = 0;
	if (rc < 0)
		return rc;
	rc = get_dentry(m, txn, parent, name, &ino);
	if (rc == 0)
		rc = get_attr(m, txn, ino, &a);
	if (rc == 0 && !dir && S_ISDIR(a.mode))
		rc = -EISDIR;
	if (rc == 0 && dir && !S_ISDIR(a.mode))
		rc = -ENOTDIR;
	if (rc == 0 && dir && !dir_empty(m, txn, ino))
		rc = -ENOTEMPTY;
	if (rc == 0)
		rc = del_dentry(m, txn, parent, name);
	if (rc == 0)
		rc = drop_link(m, txn, ino, now, gone_ino); /* freed once unused (orphans) */
	if (rc == 0)
		rc = get_attr(m, txn, parent, &p);
	if (rc == 0) {
		if (dir && p.nlink > 2)
			p.nlink--; /* the removed directory's ".." */
		p.mtime_ns = p.ctime_ns = now;
		rc = put_attr(m, txn, &p);
	}
	return txn_end(txn, rc);
}

int meta_unlink(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino)
{
	return remove_name(m, parent, name, false, gone_ino);
}

int meta_rmdir(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino)
{
	return remove_name(m, parent, name, true, gone_ino);
}

/* True if directory `ancestor` is `ino` or one of its ancestors (a rename into itself). */
static bool is_ancestor(struct meta *m, MDB_txn *txn, uint64_t ancestor, uint64_t ino)
{
	for (int depth = 0; depth < 65536; depth++) {
		uint8_t k[8];
		MDB_val key = {8, k}, val;

		if (ino == ancestor)
			return true;
		if (ino == META_ROOT_INO)
			return false;
		be64(k, ino);
		if (mdb_get(txn, m->parents, &key, &val) != 0 || val.mv_size != 8)
			return false;
		ino = rd64(val.mv_data);
	}
	return true; /* a loop: refuse */
}

int meta_rename(struct meta *m, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, uint64_t *gone_ino)
{
	struct meta_attr src, dst, p, np;
	MDB_txn *txn;
	uint64_t ino, target = 0;
	int64_t now = meta_now_ns();
	bool target_exists;
	int rc = check_name(newname);

	*gone_ino = 0;
	if (rc < 0)
		return rc;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	rc = txn_begin(m, true, &txn);
	if (rc < 0)
		return rc;
	rc = get_dentry(m, txn, parent, name, &ino);
	if (rc == 0)
		rc = get_attr(m, txn, ino, &src);
	if (rc == 0)
		rc = get_attr(m, txn, newparent, &np);
	if (rc == 0 && !S_ISDIR(np.mode))
		rc = -ENOTDIR;
	if (rc < 0)
		return txn_end(txn, rc);
	target_exists = get_dentry(m, txn, newparent, newname, &target) == 0;
	if (target_exists && target == ino)
		return txn_end(txn, 0); /* the same file: nothing to do */
	if ((flags & RENAME_NOREPLACE) && target_exists)
		return txn_end(txn, -EEXIST);
	if ((flags & RENAME_EXCHANGE) && !target_exists)
		return txn_end(txn, -ENOENT);
	if (S_ISDIR(src.mode) && parent != newparent && is_ancestor(m, txn, ino, newparent))
		return txn_end(txn, -EINVAL);
	if (target_exists) {
		rc = get_attr(m, txn, target, &dst);
		if (rc < 0)
			return txn_end(txn, rc);
	}
	if (flags & RENAME_EXCHANGE) {
		if (S_ISDIR(dst.mode) && parent != newparent && is_ancestor(m, txn, target, parent))
			return txn_end(txn, -EINVAL);
		rc = put_dentry(m, txn, parent, name, target);
		if (rc == 0)
			rc = put_dentry(m, txn, newparent, newname, ino);
		if (rc == 0 && S_ISDIR(src.mode))
			rc = set_parent(m, txn, ino, newparent);
		if (rc == 0 && S_ISDIR(dst.mode))
			rc = set_parent(m, txn, target, parent);
		if (rc == 0 && parent != newparent && S_ISDIR(src.mode) != S_ISDIR(dst.mode)) {
			/* A directory moved each way: fix the parents' link counts. */
			rc = get_attr(m, txn, parent, &p);
			if (rc == 0 && S_ISDIR(src.mode)) {
				p.nlink--;
				np.nlink++;
			} else if (rc == 0) {
				p.nlink++;
				np.nlink--;
			}
			if (rc == 0)
				rc = put_attr(m, txn, &p);
		}
		src.ctime_ns = dst.ctime_ns = now;
		if (rc == 0)
			rc = put_attr(m, txn, &src);
		if (rc == 0)
			rc = put_attr(m, txn, &dst);
		goto parents;
	}
	if (target_exists) {
		if (S_ISDIR(src.mode) && !S_ISDIR(dst.mode))
			rc = -ENOTDIR;
		else if (!S_ISDIR(src.mode) && S_ISDIR(dst.mode))
			rc = -EISDIR;
		else if (S_ISDIR(dst.mode) && !dir_empty(m, txn, target))
			rc = -ENOTEMPTY;
		if (rc == 0)
			rc = drop_link(m, txn, target, now, gone_ino);
		if (rc == 0 && S_ISDIR(dst.mode))
			np.nlink--;
	}
	if (rc == 0)
		rc = del_dentry(m, txn, parent, name);
	if (rc == 0)
		rc = put_dentry(m, txn, newparent, newname, ino);
	if (rc == 0 && S_ISDIR(src.mode))
		rc = set_parent(m, txn, ino, newparent);
	if (rc == 0 && S_ISDIR(src.mode) && parent != newparent) {
		rc = get_attr(m, txn, parent, &p);
		if (rc == 0) {
			p.nlink--;
			rc = put_attr(m, txn, &p);
		}
		np.nlink++;
	}
	if (rc == 0) {
		src.ctime_ns = now;
		rc = put_attr(m, txn, &src);
	}
parents:
	if (rc == 0) {
		np.mtime_ns = np.ctime_ns = now;
		rc = put_attr(m, txn, &np);
	}
	if (rc == 0 && parent != newparent) {
		rc = get_attr(m, txn, parent, &p);
		if (rc == 0) {
			p.mtime_ns = p.ctime_ns = now;
			rc = put_attr(m, txn, &p);
		}
	}
	return txn_end(txn, rc);
}

int meta_release_inode(struct meta *m, uint64_t ino)
{
	struct meta_attr a;
	MDB_txn *txn;
	int rc = txn_begin(m, true, &txn);

	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	if (rc == -ENOENT)
		return txn_end(txn, 0);
	if (rc == 0 && a.nlink == 0)
		rc = free_inode(m, txn, ino);
	return txn_end(txn, rc);
}

int meta_setattr(struct meta *m, uint64_t ino, const struct meta_attr *in, unsigned valid,
		 struct meta_attr *out)
{
	struct meta_attr a;
	MDB_txn *txn;
	int64_t now = meta_now_ns();
	int rc = txn_begin(m, true, &txn);

	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	if (rc == 0 && (valid & META_SET_SIZE)) {
		if (S_ISDIR(a.mode))
			rc = -EISDIR;
		else if (in->size < a.size)
			rc = punch(m, txn, ino, in->size, UINT64_MAX);
		/* Any truncate marks the data modified, even to the same size (as Linux's
		 * local filesystems do; FUSE leaves mtime to us for truncate and ftruncate). */
		if (rc == 0) {
			a.mtime_ns = now;
			a.size = in->size;
		}
	}
	if (rc == 0) {
		if (valid & META_SET_MODE)
			a.mode = (a.mode & S_IFMT) | (in->mode & 07777);
		if (valid & META_SET_UID)
			a.uid = in->uid;
		if (valid & META_SET_GID)
			a.gid = in->gid;
		if (valid & META_SET_ATIME)
			a.atime_ns = in->atime_ns;
		if (valid & META_SET_MTIME)
			a.mtime_ns = in->mtime_ns;
		a.ctime_ns = (valid & META_SET_CTIME) ? in->ctime_ns : now;
		rc = put_attr(m, txn, &a);
	}
	rc = txn_end(txn, rc);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_write_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *chunks, int n,
		      uint64_t min_size, bool touch, struct meta_attr *out)
{
	struct meta_attr a;
	MDB_txn *txn;
	int64_t now = meta_now_ns();
	int rc = txn_begin(m, true, &txn);

	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	for (int i = 0; i < n && rc == 0; i++) {
		if (chunks[i].length == 0)
			continue;
		/* Referenced before the punch, so rewriting a blob's own range never
		 * sends it to gc. */
		rc = fidref_add(m, txn, chunks[i].fid, 1);
		if (rc == 0)
			rc = punch(m, txn, ino, chunks[i].offset,
				   chunks[i].offset + chunks[i].length);
		if (rc == 0)
			rc = put_chunk(m, txn, ino, &chunks[i]);
		if (rc == 0 && chunks[i].offset + chunks[i].length > a.size)
			a.size = chunks[i].offset + chunks[i].length;
	}
	if (rc == 0 && a.nlink == 0) {
		/* Written after the last unlink: fine, freed at release. */
	}
	if (rc == 0) {
		if (min_size > a.size)
			a.size = min_size;
		if (touch)
			a.mtime_ns = a.ctime_ns = now;
		rc = put_attr(m, txn, &a);
	}
	rc = txn_end(txn, rc);
	if (rc == 0 && out)
		*out = a;
	return rc;
}

int meta_replace_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *old, int n,
			const struct meta_chunk *fresh)
{
	struct meta_chunk *now = NULL;
	MDB_txn *txn;
	bool same;
	int got, rc = txn_begin(m, true, &txn);

	if (rc < 0)
		return rc;
	got = collect_chunks(m, txn, ino, fresh->offset, fresh->offset + fresh->length, &now);
	same = got == n;
	for (int i = 0; same && i < n; i++)
		same = now[i].offset == old[i].offset && now[i].length == old[i].length &&
		       now[i].blob_offset == old[i].blob_offset && !strcmp(now[i].fid, old[i].fid);
	free(now);
	if (got < 0)
		rc = got;
	else if (same)
		rc = punch(m, txn, ino, fresh->offset, fresh->offset + fresh->length);
	if (rc == 0 && same)
		rc = put_chunk(m, txn, ino, fresh);
	/* A reference when used, none otherwise: then the blob goes straight to gc. */
	if (rc == 0)
		rc = fidref_add(m, txn, fresh->fid, same ? 1 : 0);
	return txn_end(txn, rc);
}

int meta_read_chunks(struct meta *m, uint64_t ino, uint64_t offset, uint64_t len,
		     struct meta_chunk **out)
{
	MDB_txn *txn;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	rc = collect_chunks(m, txn, ino, offset,
			    len > UINT64_MAX - offset ? UINT64_MAX : offset + len, out);
	mdb_txn_abort(txn);
	return rc;
}

int meta_chunk_count(struct meta *m, uint64_t ino)
{
	struct meta_chunk *list;
	int n = meta_read_chunks(m, ino, 0, UINT64_MAX, &list);

	if (n >= 0)
		free(list);
	return n;
}

int meta_readdir(struct meta *m, uint64_t ino, const char *after,
		 int (*fn)(void *ctx, const char *name, const struct meta_attr *attr), void *ctx)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	uint8_t k[8 + META_NAME_MAX];
	MDB_val key, val;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	if (mdb_cursor_open(txn, m->dentries, &cur) != 0) {
		mdb_txn_abort(txn);
		return -EIO;
	}
	key.mv_size = dentry_key(k, ino, after ? after : "");
	key.mv_data = k;
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	if (rc == 0 && after && *after && key.mv_size == 8 + strlen(after) &&
	    rd64(key.mv_data) == ino && !memcmp((uint8_t *)key.mv_data + 8, after, strlen(after)))
		rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
	for (; rc == 0; rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		char name[META_NAME_MAX + 1];
		struct meta_attr a;
		size_t n;

		if (key.mv_size < 8 || rd64(key.mv_data) != ino)
			break;
		n = key.mv_size - 8;
		if (n > META_NAME_MAX || val.mv_size != 8)
			continue;
		memcpy(name, (uint8_t *)key.mv_data + 8, n);
		name[n] = '\0';
		if (get_attr(m, txn, rd64(val.mv_data), &a) < 0)
			continue;
		if (fn(ctx, name, &a))
			break;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return 0;
}

static size_t xattr_key(uint8_t *k, uint64_t ino, const char *name)
{
	size_t n = strlen(name);

	be64(k, ino);
	memcpy(k + 8, name, n);
	return 8 + n;
}

int meta_setxattr(struct meta *m, uint64_t ino, const char *name, const void *value, size_t len,
		  int flags)
{
	uint8_t k[8 + 256];
	MDB_val key, val = {len, (void *)value}, old;
	MDB_txn *txn;
	struct meta_attr a;
	int rc;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ERANGE;
	if (len > 65536)
		return -E2BIG;
	key.mv_size = xattr_key(k, ino, name);
	key.mv_data = k;
	rc = txn_begin(m, true, &txn);
	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	if (rc == 0) {
		bool exists = mdb_get(txn, m->xattrs, &key, &old) == 0;

		if ((flags & 1 /* XATTR_CREATE */) && exists)
			rc = -EEXIST;
		else if ((flags & 2 /* XATTR_REPLACE */) && !exists)
			rc = -ENODATA;
	}
	if (rc == 0)
		rc = lmdb_err(mdb_put(txn, m->xattrs, &key, &val, 0));
	if (rc == 0) {
		a.ctime_ns = meta_now_ns();
		rc = put_attr(m, txn, &a);
	}
	return txn_end(txn, rc);
}

int meta_getxattr(struct meta *m, uint64_t ino, const char *name, void *buf, size_t cap)
{
	uint8_t k[8 + 256];
	MDB_val key, val;
	MDB_txn *txn;
	int rc;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ENODATA;
	key.mv_size = xattr_key(k, ino, name);
	key.mv_data = k;
	rc = txn_begin(m, false, &txn);
	if (rc < 0)
		return rc;
	rc = mdb_get(txn, m->xattrs, &key, &val);
	if (rc == MDB_NOTFOUND) {
		rc = -ENODATA;
	} else if (rc != 0) {
		rc = lmdb_err(rc);
	} else if (cap == 0) {
		rc = (int)val.mv_size;
	} else if (cap < val.mv_size) {
		rc = -ERANGE;
	} else {
		memcpy(buf, val.mv_data, val.mv_size);
		rc = (int)val.mv_size;
	}
	mdb_txn_abort(txn);
	return rc;
}

int meta_listxattr(struct meta *m, uint64_t ino, char *buf, size_t cap)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	uint8_t k[8];
	MDB_val key = {8, k}, val;
	size_t total = 0;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	if (mdb_cursor_open(txn, m->xattrs, &cur) != 0) {
		mdb_txn_abort(txn);
		return -EIO;
	}
	be64(k, ino);
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		size_t n;

		if (key.mv_size <= 8 || rd64(key.mv_data) != ino)
			break;
		n = key.mv_size - 8;
		if (cap > 0) {
			if (total + n + 1 > cap) {
				total = (size_t)-1;
				break;
			}
			memcpy(buf + total, (uint8_t *)key.mv_data + 8, n);
			buf[total + n] = '\0';
		}
		total += n + 1;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return total == (size_t)-1 ? -ERANGE : (int)total;
}

int meta_removexattr(struct meta *m, uint64_t ino, const char *name)
{
	uint8_t k[8 + 256];
	MDB_val key;
	MDB_txn *txn;
	struct meta_attr a;
	int rc;

	if (strlen(name) == 0 || strlen(name) > 255)
		return -ENODATA;
	key.mv_size = xattr_key(k, ino, name);
	key.mv_data = k;
	rc = txn_begin(m, true, &txn);
	if (rc < 0)
		return rc;
	rc = get_attr(m, txn, ino, &a);
	if (rc == 0) {
		rc = mdb_del(txn, m->xattrs, &key, NULL);
		rc = rc == MDB_NOTFOUND ? -ENODATA : lmdb_err(rc);
	}
	if (rc == 0) {
		a.ctime_ns = meta_now_ns(); /* a change of the inode, as setxattr */
		rc = put_attr(m, txn, &a);
	}
	return txn_end(txn, rc);
}

int meta_gc_take(struct meta *m, int n, char fids[][META_FID_MAX], uint64_t *seqs)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	int got = 0, rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	if (mdb_cursor_open(txn, m->gc, &cur) != 0) {
		mdb_txn_abort(txn);
		return -EIO;
	}
	for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0 && got < n;
	     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
		if (key.mv_size != 8 || val.mv_size >= META_FID_MAX)
			continue;
		seqs[got] = rd64(key.mv_data);
		memcpy(fids[got], val.mv_data, val.mv_size);
		fids[got][val.mv_size] = '\0';
		got++;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return got;
}

int meta_gc_done(struct meta *m, uint64_t seq)
{
	uint8_t k[8];
	MDB_val key = {8, k};
	MDB_txn *txn;
	int rc = txn_begin(m, true, &txn);

	if (rc < 0)
		return rc;
	be64(k, seq);
	rc = mdb_del(txn, m->gc, &key, NULL);
	return txn_end(txn, rc == MDB_NOTFOUND ? 0 : lmdb_err(rc));
}

static int count_entries(struct meta *m, MDB_dbi dbi, uint64_t *count)
{
	MDB_txn *txn;
	MDB_stat st;
	int rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	rc = lmdb_err(mdb_stat(txn, dbi, &st));
	if (rc == 0)
		*count = st.ms_entries;
	mdb_txn_abort(txn);
	return rc;
}

uint64_t meta_gc_generation(struct meta *m)
{
	return __atomic_load_n(&m->gc_generation, __ATOMIC_ACQUIRE);
}

int meta_gc_pending(struct meta *m)
{
	uint64_t n = 0;
	int rc = count_entries(m, m->gc, &n);

	return rc < 0 ? rc : (int)n;
}

int meta_inode_count(struct meta *m, uint64_t *count)
{
	return count_entries(m, m->inodes, count);
}

int meta_release_orphans(struct meta *m)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val key, val;
	uint64_t inos[256];
	int n = 0, rc = txn_begin(m, false, &txn);

	if (rc < 0)
		return rc;
	if (mdb_cursor_open(txn, m->orphans, &cur) == 0) {
		for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0 && n < 256;
		     rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT))
			if (key.mv_size == 8)
				inos[n++] = rd64(key.mv_data);
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	for (int i = 0; i < n; i++) {
		rc = meta_release_inode(m, inos[i]);
		if (rc < 0)
			return rc;
	}
	if (n)
		log_info("meta: released %d file(s) unlinked while open before a restart", n);
	return n == 256 ? meta_release_orphans(m) : 0;
}
