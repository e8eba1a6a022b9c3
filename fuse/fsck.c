/* fsck: the metadata checked against itself and the cluster, and repaired (see fsck.h). */
#include "fuse/fsck.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/base/util.h"
#include "cluster/client/client.h"
#include "cluster/common/fid.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

#define LOST_FOUND "lost+found"

struct ino_rec {
	uint64_t ino;
	uint32_t mode, nlink, names, subdirs;
	uint64_t first_parent; /* of its first name (0: none) */
	uint64_t name_off;     /* the first name, in the arena */
	uint64_t parent_row;   /* directories: the parents table (0: none) */
	uint64_t stored;       /* its record's `stored` (less the chunks a repair drops) */
	uint64_t sum;	       /* the lengths of its chunks */
	bool orphan;
	bool target;  /* a symlinks row */
	uint8_t walk; /* check_cycles: 0 not seen, 1 on the current path, 2 done */
};

enum blob_state { BLOB_OK, BLOB_MISSING, BLOB_SHORT, BLOB_UNREADABLE };

struct blob {
	char *fid;	  /* canonical */
	char *raw;	  /* as the chunks write it, when that differs (NULL: fid) */
	uint64_t max_end; /* the largest blob_offset + length a chunk needs */
	uint32_t refs;
	uint64_t ino; /* one file using it (for the path) */
	bool has_ref_row;
	bool queued;   /* in the gc queue */
	bool dropped;  /* its chunks are dropped (-dropMissing) */
	uint8_t state; /* enum blob_state, from the reads in the cluster */
	char *err;     /* BLOB_UNREADABLE: why */
};

/* What a repair does about a problem. */
enum fix {
	FIX_NONE,
	FIX_DEL_DENTRY, /* remove name (parent, name) */
	FIX_DEL_CHUNK,	/* remove chunk (a = ino, b = offset), c bytes of data */
	FIX_DEL_ROW,	/* remove row a + name of table b (xattrs, symlinks) */
	FIX_FIDREF,	/* blob `name`: count a (0: remove the row; then b: queue it for gc) */
	FIX_DEL_GC,	/* remove gc entry a */
	FIX_PARENT,	/* parents[a] = b */
	FIX_STORED,	/* inode a: stored = b */
	FIX_NLINK,	/* inode a: st_nlink = b */
	FIX_LOST_FOUND, /* inode a into /lost+found as #a, st_nlink = b; c: a directory */
	FIX_KINDS
};

struct problem {
	char kind[64], detail[256];
	uint64_t ino; /* path of this inode, or of parent + name */
	uint64_t parent;
	char name[META_NAME_MAX + 1]; /* FIX_FIDREF: the blob as its rows spell it */
	uint8_t fix;
	bool quiet;  /* part of another problem's repair: not reported */
	bool nopath; /* parent + name are for the repair only: no path shown */
	bool repaired;
	uint64_t a, b, c;
	const char *why; /* not repaired: why */
};

struct fsck {
	const struct fsck_options *o;
	bool pass2; /* the repair's pass: drop the chunks of missing blobs */
	bool nomem;
	struct ino_rec *inos;
	size_t n_inos, cap_inos;
	char *arena;
	size_t arena_len, arena_cap;
	struct blob *blobs;
	size_t blob_cap, n_blobs;
	struct problem *probs;
	size_t n_probs, cap_probs;
	struct fsck_result *r;
	dump_progress_fn progress;
	void *progress_ctx;
	uint64_t done, total;
};

static void tick(struct fsck *f)
{
	if (f->progress && ++f->done % 8192 == 0)
		f->progress(f->progress_ctx, f->done, f->total);
}

static struct ino_rec *find_ino(struct fsck *f, uint64_t ino)
{
	size_t lo = 0, hi = f->n_inos;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (f->inos[mid].ino == ino)
			return &f->inos[mid];
		if (f->inos[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* A problem, its path from ino or from parent + name (NULL when out of memory). */
static struct problem *add(struct fsck *f, const char *kind, uint64_t ino, uint64_t parent,
			   const void *name, size_t nlen, const char *fmt, ...)
{
	struct problem *p;
	va_list ap;

	if (f->n_probs == f->cap_probs) {
		size_t cap = f->cap_probs ? f->cap_probs * 2 : 64;
		struct problem *np = realloc(f->probs, cap * sizeof(*np));

		if (!np) {
			f->nomem = true;
			return NULL;
		}
		f->probs = np;
		f->cap_probs = cap;
	}
	p = &f->probs[f->n_probs++];
	memset(p, 0, sizeof(*p));
	snprintf(p->kind, sizeof(p->kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
	va_end(ap);
	p->ino = ino;
	p->parent = parent;
	if (name && nlen <= META_NAME_MAX) {
		memcpy(p->name, name, nlen);
		p->name[nlen] = '\0';
	}
	return p;
}

/* A fix with no problem of its own to report. */
static struct problem *add_quiet(struct fsck *f, uint8_t fix)
{
	struct problem *p = add(f, "", 0, 0, NULL, 0, "%s", "");

	if (p) {
		p->quiet = true;
		p->fix = fix;
	}
	return p;
}

/* The path of ino from the names of the snapshot ("" when it has none; "?" for a
 * missing piece). */
static void path_of(struct fsck *f, uint64_t ino, char *out, size_t cap)
{
	char tmp[4096];
	size_t pos = sizeof(tmp) - 1;
	int depth = 0;

	tmp[pos] = '\0';
	if (ino == META_ROOT_INO) {
		snprintf(out, cap, "/");
		return;
	}
	while (ino != META_ROOT_INO && depth++ < 1000) {
		struct ino_rec *r = find_ino(f, ino);
		const char *name = r && r->first_parent ? f->arena + r->name_off : "?";
		size_t n = strlen(name);

		if (n + 1 > pos)
			break;
		pos -= n;
		memcpy(tmp + pos, name, n);
		tmp[--pos] = '/';
		if (!r || !r->first_parent)
			break;
		ino = r->first_parent;
	}
	snprintf(out, cap, "%s", tmp + pos);
}

static struct blob *blob_slot_raw(struct fsck *f, const char *fid, size_t len, bool add);

/*
 * The blob of a fid, by its canonical text: "3,01a1b2c3d4_1" (a batch assign's key + 1)
 * and "3,02a1b2c3d4" are one needle, and the volume servers list the second form.
 */
static struct blob *blob_slot(struct fsck *f, const char *fid, size_t len, bool add)
{
	struct fid id;
	char canon[FID_MAX_LEN];

	if (len < FID_MAX_LEN && fid_parse(fid, len, &id) == 0) {
		fid_format(&id, canon);
		return blob_slot_raw(f, canon, strlen(canon), add);
	}
	return blob_slot_raw(f, fid, len, add);
}

static struct blob *blob_slot_raw(struct fsck *f, const char *fid, size_t len, bool add)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	if (add && (f->n_blobs + 1) * 4 > f->blob_cap * 3) {
		size_t cap = f->blob_cap ? f->blob_cap * 2 : 1024;
		struct blob *nb = calloc(cap, sizeof(*nb));

		if (!nb)
			return NULL;
		for (size_t k = 0; k < f->blob_cap; k++) {
			struct blob *o = &f->blobs[k];
			uint64_t g = 1469598103934665603ull;
			size_t j;

			if (!o->fid)
				continue;
			for (const char *p = o->fid; *p; p++)
				g = (g ^ (uint8_t)*p) * 1099511628211ull;
			for (j = g & (cap - 1); nb[j].fid; j = (j + 1) & (cap - 1))
				;
			nb[j] = *o;
		}
		free(f->blobs);
		f->blobs = nb;
		f->blob_cap = cap;
	}
	if (!f->blob_cap)
		return NULL;
	for (size_t k = 0; k < len; k++)
		h = (h ^ (uint8_t)fid[k]) * 1099511628211ull;
	for (i = h & (f->blob_cap - 1); f->blobs[i].fid; i = (i + 1) & (f->blob_cap - 1))
		if (strlen(f->blobs[i].fid) == len && !memcmp(f->blobs[i].fid, fid, len))
			return &f->blobs[i];
	if (!add)
		return NULL;
	f->blobs[i].fid = strndup(fid, len);
	if (!f->blobs[i].fid)
		return NULL;
	f->n_blobs++;
	return &f->blobs[i];
}

/* ---------------------------------------------------------------- scans */

/* A row that cannot be decoded (reported, never repaired). */
static int malformed(struct fsck *f, const char *kind, size_t klen, size_t vlen)
{
	return add(f, kind, 0, 0, NULL, 0, "key %zu, value %zu bytes", klen, vlen) ? 0 : -ENOMEM;
}

static int on_inode(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct meta_attr a;

	tick(f);
	if (klen != 8 || meta_decode_attr(v, vlen, &a) < 0)
		return malformed(f, "malformed inode row", klen, vlen);
	if (f->n_inos == f->cap_inos) {
		size_t cap = f->cap_inos ? f->cap_inos * 2 : 4096;
		struct ino_rec *p = realloc(f->inos, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		f->inos = p;
		f->cap_inos = cap;
	}
	f->inos[f->n_inos++] =
	    (struct ino_rec){.ino = rd64(k), .mode = a.mode, .nlink = a.nlink, .stored = a.stored};
	f->r->inodes++;
	return 0;
}

/* A row of an inode's xattrs or symlink target: removed with a missing inode. */
static int on_ino_row(struct fsck *f, int table, const char *kind, const uint8_t *k, size_t klen)
{
	struct ino_rec *r = klen >= 8 ? find_ino(f, rd64(k)) : NULL;
	struct problem *p;

	tick(f);
	if (r) {
		r->target |= table == KV_SYMLINKS;
		return 0;
	}
	if (klen < 8 || klen > 8 + META_NAME_MAX)
		return malformed(f, kind, klen, 0);
	p = add(f, kind, 0, 0, NULL, 0, "inode %" PRIu64 "%s%.*s", rd64(k), klen > 8 ? ", " : "",
		(int)(klen - 8), k + 8);
	if (!p)
		return -ENOMEM;
	p->fix = FIX_DEL_ROW;
	p->a = rd64(k);
	p->b = (uint64_t)table;
	memcpy(p->name, k + 8, klen - 8);
	p->name[klen - 8] = '\0';
	p->c = klen - 8;
	return 0;
}

static int on_xattr(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	return on_ino_row(ctx, KV_XATTRS, "xattr of a missing inode", k, klen);
}

static int on_symlink(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	return on_ino_row(ctx, KV_SYMLINKS, "symlink target of a missing inode", k, klen);
}

static int on_orphan(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct ino_rec *r = klen == 8 ? find_ino(f, rd64(k)) : NULL;

	tick(f);
	if (r)
		r->orphan = true;
	return 0;
}

static int on_parent(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct ino_rec *r = klen == 8 ? find_ino(f, rd64(k)) : NULL;

	tick(f);
	if (r && vlen == 8)
		r->parent_row = rd64(v);
	return 0;
}

/* A name the repair removes (it is not counted: link counts are those after it). */
static int drop_name(struct fsck *f, const char *kind, uint64_t parent, const uint8_t *name,
		     size_t nlen, uint64_t shown)
{
	struct problem *p = add(f, kind, 0, parent, name, nlen, "inode %" PRIu64, shown);

	if (!p)
		return -ENOMEM;
	p->fix = FIX_DEL_DENTRY;
	return 0;
}

static int on_dentry(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	uint64_t parent, child;
	struct ino_rec *p, *c;

	tick(f);
	if (klen < 9 || klen > 8 + META_NAME_MAX || vlen != 8)
		return malformed(f, "malformed name row", klen, vlen);
	f->r->dentries++;
	parent = rd64(k);
	child = rd64(v);
	p = find_ino(f, parent);
	c = find_ino(f, child);
	if (!p || !S_ISDIR(p->mode))
		return drop_name(f, "name in a missing or non-directory inode", parent, k + 8,
				 klen - 8, parent);
	if (!c)
		return drop_name(f, "name of a missing inode", parent, k + 8, klen - 8, child);
	if (S_ISDIR(c->mode) && c->names)
		return drop_name(f, "directory with several names", parent, k + 8, klen - 8, child);
	if (!c->names) {
		size_t n = klen - 8;

		if (f->arena_len + n + 1 > f->arena_cap) {
			size_t cap = f->arena_cap ? f->arena_cap * 2 : 1 << 20;
			char *a;

			while (cap < f->arena_len + n + 1)
				cap *= 2;
			a = realloc(f->arena, cap);
			if (!a)
				return -ENOMEM;
			f->arena = a;
			f->arena_cap = cap;
		}
		memcpy(f->arena + f->arena_len, k + 8, n);
		f->arena[f->arena_len + n] = '\0';
		c->name_off = f->arena_len;
		c->first_parent = parent;
		f->arena_len += n + 1;
	}
	c->names++;
	if (S_ISDIR(c->mode)) {
		p->subdirs++;
		if (c->parent_row != parent) {
			struct problem *pr =
			    add(f, "directory parent row differs from its name", child, 0, NULL, 0,
				"parents says %" PRIu64 ", the name is in %" PRIu64, c->parent_row,
				parent);

			if (!pr)
				return -ENOMEM;
			pr->fix = FIX_PARENT;
			pr->a = child;
			pr->b = parent;
		}
	}
	return 0;
}

static int on_chunk(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct ino_rec *r;
	struct problem *p;
	struct blob *b;
	uint64_t ino, off, len;

	tick(f);
	if (klen != 16 || vlen < 17 || vlen >= 16 + META_FID_MAX)
		return malformed(f, "malformed chunk row", klen, vlen);
	f->r->chunks++;
	ino = rd64(k);
	off = rd64(k + 8);
	len = rd64(v);
	r = find_ino(f, ino);
	if (!r || !S_ISREG(r->mode)) {
		/* not counted: the repair removes it (and so its blob's reference) */
		p = add(f, "chunk of a missing or non-file inode", ino, 0, NULL, 0,
			"inode %" PRIu64 ", blob %.*s", ino, (int)(vlen - 16), v + 16);
		if (!p)
			return -ENOMEM;
		p->fix = FIX_DEL_CHUNK;
		p->a = ino;
		p->b = off;
		p->c = 0;
		return 0;
	}
	b = blob_slot(f, (const char *)v + 16, vlen - 16, true);
	if (!b)
		return -ENOMEM;
	if (!b->raw && (strlen(b->fid) != vlen - 16 || memcmp(b->fid, v + 16, vlen - 16))) {
		b->raw = strndup((const char *)v + 16, vlen - 16);
		if (!b->raw)
			return -ENOMEM;
	}
	if (f->pass2 && f->o && f->o->drop_missing && b->state == BLOB_MISSING) {
		b->dropped = true;
		if (r->stored != META_STORED_UNKNOWN)
			r->stored = r->stored > len ? r->stored - len : 0;
		p = add(f, "missing blob", ino, 0, NULL, 0,
			"blob %s is not in the cluster: bytes %" PRIu64 "-%" PRIu64
			" of the file become a hole",
			b->fid, off, off + len);
		if (!p)
			return -ENOMEM;
		p->fix = FIX_DEL_CHUNK;
		p->a = ino;
		p->b = off;
		p->c = len;
		return 0;
	}
	b->refs++;
	r->sum += len;
	if (rd64(v + 8) + len > b->max_end)
		b->max_end = rd64(v + 8) + len;
	if (!b->ino)
		b->ino = ino;
	return 0;
}

static int on_fidref(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct blob *b = blob_slot(f, (const char *)k, klen, false);
	uint32_t count = 0;
	struct problem *p;

	tick(f);
	if (vlen == 4)
		memcpy(&count, v, 4);
	if (klen >= META_FID_MAX)
		return malformed(f, "malformed reference count row", klen, vlen);
	if (b)
		b->has_ref_row = true;
	if (b && b->dropped && !b->refs) {
		p = add_quiet(f, FIX_FIDREF); /* the blob is gone with its chunks */
	} else if (!b || !b->refs) {
		p = add(f, "reference count of an unused blob", 0, 0, NULL, 0,
			"blob %.*s counts %u references, no chunk uses it", (int)klen, k, count);
		if (p)
			p->b = 1; /* to gc: nothing uses it */
	} else if (count != b->refs || vlen != 4) {
		p = add(f, "wrong blob reference count", b->ino, 0, NULL, 0,
			"blob %s counts %u references, %u chunks use it", b->fid, count, b->refs);
		if (p)
			p->a = b->refs;
	} else {
		return 0;
	}
	if (!p)
		return -ENOMEM;
	p->fix = FIX_FIDREF;
	p->parent = 0;
	memcpy(p->name, k, klen);
	p->name[klen] = '\0';
	return 0;
}

static int on_gc(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	char fid[META_FID_MAX];
	int64_t queued;
	struct blob *b;

	tick(f);
	if (klen != 8 || meta_gc_decode(v, vlen, fid, &queued) < 0)
		return malformed(f, "malformed gc row", klen, vlen);
	b = blob_slot(f, fid, strlen(fid), false);
	if (b && b->refs) {
		struct problem *p =
		    add(f, "gc queue holds a blob still used", b->ino, 0, NULL, 0,
			"blob %s is queued for deletion (entry %" PRIu64 ")", fid, rd64(k));

		if (!p)
			return -ENOMEM;
		p->fix = FIX_DEL_GC;
		p->a = rd64(k);
		return 0; /* not queued once repaired */
	}
	b = b ? b : blob_slot(f, fid, strlen(fid), true);
	if (!b)
		return -ENOMEM;
	b->queued = true;
	return 0;
}

static int scan_all(struct kv_txn *t, struct fsck *f)
{
	static const struct {
		int table;
		kv_scan_fn fn;
	} order[] = {{KV_INODES, on_inode},   {KV_XATTRS, on_xattr},   {KV_SYMLINKS, on_symlink},
		     {KV_ORPHANS, on_orphan}, {KV_PARENTS, on_parent}, {KV_DENTRIES, on_dentry},
		     {KV_CHUNKS, on_chunk},   {KV_FIDREFS, on_fidref}, {KV_GC, on_gc}};
	int rc;

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		uint64_t n = 0;

		rc = kv_count(t, order[i].table, &n);
		if (rc < 0)
			return rc;
		f->total += n;
	}
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		rc = kv_scan(t, order[i].table, "", 0, NULL, 0, false, 0, order[i].fn, f);
		if (rc < 0)
			return rc;
		if (f->nomem)
			return -ENOMEM;
	}
	return 0;
}

/* ---------------------------------------------------------------- checks */

/*
 * Directories whose names lead in a circle instead of to the root (a cycle no name
 * outside reaches). Each directory's only counted name is its first; following those
 * up from every directory either reaches the root, a directory with no name (reported
 * as unreachable), or comes back onto its own path: a cycle. It is broken at the
 * directory where the walk came back: that name is removed (not counted), so the
 * directory has no name left and goes to /lost+found with everything under it.
 */
static int check_cycles(struct fsck *f)
{
	size_t *path = NULL, n = 0, cap = 0;

	for (size_t i = 0; i < f->n_inos; i++) {
		struct ino_rec *r = &f->inos[i];

		if (!S_ISDIR(r->mode) || r->walk)
			continue;
		n = 0;
		while (r && !r->walk && r->ino != META_ROOT_INO && r->first_parent) {
			if (n == cap) {
				size_t c2 = cap ? cap * 2 : 64;
				size_t *np = realloc(path, c2 * sizeof(*np));

				if (!np) {
					free(path);
					return -ENOMEM;
				}
				path = np;
				cap = c2;
			}
			r->walk = 1;
			path[n++] = (size_t)(r - f->inos);
			r = find_ino(f, r->first_parent);
		}
		if (r && r->walk == 1) { /* back on this path: a cycle, broken at r */
			struct ino_rec *up = find_ino(f, r->first_parent);
			struct problem *p =
			    add(f, "directory cycle", 0, 0, NULL, 0,
				"directory %" PRIu64 " is named \"%s\" in directory %" PRIu64
				", which is inside it: no name from the root reaches them",
				r->ino, f->arena + r->name_off, r->first_parent);

			if (!p) {
				free(path);
				return -ENOMEM;
			}
			p->fix = FIX_DEL_DENTRY;
			p->nopath = true;
			p->parent = r->first_parent;
			snprintf(p->name, sizeof(p->name), "%s", f->arena + r->name_off);
			p->ino = 0;
			if (up && up->subdirs)
				up->subdirs--;
			r->names--;
			r->first_parent = 0;
		}
		for (size_t k = 0; k < n; k++)
			f->inos[path[k]].walk = 2;
	}
	free(path);
	return 0;
}

static void check_inodes(struct fsck *f)
{
	for (size_t i = 0; i < f->n_inos; i++) {
		struct ino_rec *r = &f->inos[i];
		bool dir = S_ISDIR(r->mode);
		uint32_t want = dir ? 2 + r->subdirs : r->names;
		struct problem *p;

		if (r->ino == META_ROOT_INO && !dir) {
			if (!add(f, "root is not a directory", r->ino, 0, NULL, 0, "mode %o",
				 r->mode))
				return;
			continue;
		}
		if (r->ino != META_ROOT_INO && !r->names) {
			if (r->orphan)
				continue; /* unlinked while open: freed at its last close */
			p = add(f, "unreachable inode", 0, 0, NULL, 0,
				"inode %" PRIu64 " (mode %o) has no name", r->ino, r->mode);
			if (!p)
				return;
			p->fix = FIX_LOST_FOUND;
			p->a = r->ino;
			p->b = dir ? 2 + r->subdirs : 1;
			p->c = dir;
			continue;
		}
		if (S_ISREG(r->mode) && r->stored != META_STORED_UNKNOWN && r->stored != r->sum) {
			p = add(f, "wrong stored byte count", r->ino, 0, NULL, 0,
				"stored %" PRIu64 ", its chunks hold %" PRIu64, r->stored, r->sum);
			if (!p)
				return;
			p->fix = FIX_STORED;
			p->a = r->ino;
			p->b = r->sum;
		}
		if (S_ISLNK(r->mode) && !r->target &&
		    !add(f, "symlink without a target", r->ino, 0, NULL, 0, "inode %" PRIu64,
			 r->ino))
			return;
		if (r->nlink != want) {
			p = add(f, "wrong link count", r->ino, 0, NULL, 0,
				"st_nlink %u, %u expected", r->nlink, want);
			if (!p)
				return;
			p->fix = FIX_NLINK;
			p->a = r->ino;
			p->b = want;
		}
	}
}

/* Reads the last needed byte of every blob a chunk uses (outside any transaction). */
static void probe_blobs(struct fsck *f, struct kelp_client *c)
{
	for (size_t i = 0; c && i < f->blob_cap; i++) {
		struct blob *b = &f->blobs[i];
		uint8_t byte;
		size_t got = 0;
		int rc;

		if (!b->fid || !b->refs)
			continue; /* only queued for gc */
		rc = kelp_client_read_range(c, b->fid, b->max_end ? b->max_end - 1 : 0, 1, &byte,
					    &got, NULL);
		f->r->blobs_checked++;
		tick(f);
		if (rc == -ENOENT) {
			b->state = BLOB_MISSING;
		} else if (rc < 0) {
			b->state = BLOB_UNREADABLE;
			free(b->err);
			b->err = strdup(kelp_client_error(c));
		} else if (b->max_end && got == 0) {
			b->state = BLOB_SHORT;
		}
	}
}

static void report_blobs(struct fsck *f)
{
	for (size_t i = 0; i < f->blob_cap; i++) {
		struct blob *b = &f->blobs[i];
		struct problem *p = NULL;

		if (!b->fid || !b->refs)
			continue;
		f->r->blobs++;
		if (!b->has_ref_row) {
			p = add(f, "missing blob reference count", b->ino, 0, NULL, 0,
				"blob %s is used by %u chunk(s) and has no count", b->fid, b->refs);
			if (!p)
				return;
			p->fix = FIX_FIDREF;
			p->a = b->refs;
			snprintf(p->name, sizeof(p->name), "%s", b->raw ? b->raw : b->fid);
		}
		if (b->state == BLOB_MISSING) {
			p = add(f, "missing blob", b->ino, 0, NULL, 0,
				"blob %s is not in the cluster", b->fid);
			if (p && !f->o->drop_missing)
				p->why = "-dropMissing turns what the file had in it into a hole";
		} else if (b->state == BLOB_SHORT) {
			p = add(f, "short blob", b->ino, 0, NULL, 0,
				"blob %s is shorter than the %" PRIu64 " bytes its chunks use",
				b->fid, b->max_end);
		} else if (b->state == BLOB_UNREADABLE) {
			p = add(f, "unreadable blob", b->ino, 0, NULL, 0,
				"blob %s cannot be read: %s", b->fid, b->err ? b->err : "?");
		}
		if (b->state != BLOB_OK && !p)
			return;
	}
}

/* ---------------------------------------------------------------- repair */

struct live {
	int64_t now, timeout;
	char host[256];
	int n;
	char *out;
	size_t cap;
};

static int on_session(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct live *l = ctx;
	struct meta_session_info s;

	if (meta_session_decode(k, klen, v, vlen, &s) < 0)
		return 0;
	if (l->now - s.beat_ns >= l->timeout)
		return 0; /* its heartbeat stopped: gone */
	if (!strcmp(s.host, l->host) && s.pid && kill((pid_t)s.pid, 0) < 0 && errno == ESRCH)
		return 0; /* on this host, and its process is gone */
	if (!l->n++)
		snprintf(l->out, l->cap,
			 "session %" PRIu64 " (%s, pid %u, %s), heartbeat %.0f s ago", s.id, s.host,
			 s.pid, s.mountpoint,
			 s.beat_ns > l->now ? 0.0 : (double)(l->now - s.beat_ns) / 1e9);
	return 0;
}

/* The number of live sessions (the first described in out), or -errno. */
static int live_sessions(struct kv_txn *t, const struct fsck_options *o, char *out, size_t cap)
{
	struct live l = {.now = meta_now_ns(),
			 .timeout = o->session_timeout_ns > 0 ? o->session_timeout_ns
							      : (int64_t)60 * 1000000000,
			 .out = out,
			 .cap = cap};
	int rc;

	if (gethostname(l.host, sizeof(l.host) - 1) < 0)
		l.host[0] = '\0';
	rc = kv_scan(t, KV_SESSIONS, "", 0, NULL, 0, false, 0, on_session, &l);
	return rc < 0 ? rc : l.n;
}

static int put_u64(struct kv_txn *t, int table, const void *k, size_t klen, uint64_t value)
{
	uint8_t v[8];

	be64(v, value);
	return kv_put(t, table, k, klen, v, 8);
}

static size_t name_key(uint8_t *k, uint64_t parent, const char *name)
{
	size_t n = strlen(name);

	be64(k, parent);
	memcpy(k + 8, name, n);
	return 8 + n;
}

/* /lost+found: its inode, created (root's, 0700) when missing. -ENOTDIR when the name
 * is taken by something else. */
static int lost_found(struct kv_txn *t, uint64_t *out)
{
	uint8_t k[8 + sizeof(LOST_FOUND)];
	size_t klen = name_key(k, META_ROOT_INO, LOST_FOUND);
	const uint8_t *v;
	size_t vlen;
	struct meta_attr a;
	int64_t now = meta_now_ns();
	int rc = kv_get(t, KV_DENTRIES, k, klen, &v, &vlen);

	if (rc == 0) {
		if (vlen != 8)
			return -ENOTDIR;
		*out = rd64(v);
		rc = meta_get_attr_in(t, *out, &a);
		return rc == 0 && !S_ISDIR(a.mode) ? -ENOTDIR : rc;
	}
	if (rc != -ENOENT)
		return rc;
	rc = kv_next_id(t, KV_ID_INO, 2, out);
	if (rc < 0)
		return rc;
	memset(&a, 0, sizeof(a));
	a.ino = *out;
	a.mode = S_IFDIR | 0700;
	a.nlink = 2;
	a.atime_ns = a.mtime_ns = a.ctime_ns = a.crtime_ns = now;
	rc = meta_put_attr_in(t, &a);
	if (rc == 0)
		rc = put_u64(t, KV_DENTRIES, k, klen, *out);
	if (rc == 0) {
		uint8_t pk[8];

		be64(pk, *out);
		rc = put_u64(t, KV_PARENTS, pk, 8, META_ROOT_INO);
	}
	if (rc == 0)
		rc = meta_get_attr_in(t, META_ROOT_INO, &a);
	if (rc == 0) {
		a.nlink++;
		a.mtime_ns = a.ctime_ns = now;
		rc = meta_put_attr_in(t, &a);
	}
	return rc;
}

/* Queues a blob nothing uses any more for deletion (as meta.c's fidref_add does). */
static int queue_gc(struct kv_txn *t, const char *fid)
{
	size_t flen = strlen(fid);
	uint8_t k[8], v[META_FID_MAX + 9];
	uint64_t seq;
	int rc;

	if (flen >= META_FID_MAX)
		return -EINVAL;
	rc = kv_next_id(t, KV_ID_GC, 1, &seq);
	if (rc < 0)
		return rc;
	be64(k, seq);
	memcpy(v, fid, flen);
	v[flen] = '\0';
	be64(v + flen + 1, (uint64_t)meta_now_ns());
	return kv_put(t, KV_GC, k, 8, v, flen + 9);
}

static int apply_one(struct fsck *f, struct kv_txn *t, struct problem *p, uint64_t *lf, int *lf_rc,
		     int64_t now)
{
	uint8_t k[8 + META_NAME_MAX + 1];
	struct meta_attr a;
	int rc = 0;

	switch (p->fix) {
	case FIX_DEL_DENTRY:
		return kv_del(t, KV_DENTRIES, k, name_key(k, p->parent, p->name));
	case FIX_DEL_CHUNK:
		be64(k, p->a);
		be64(k + 8, p->b);
		rc = kv_del(t, KV_CHUNKS, k, 16);
		if (rc == 0 && p->c && meta_get_attr_in(t, p->a, &a) == 0 &&
		    a.stored != META_STORED_UNKNOWN) {
			a.stored = a.stored > p->c ? a.stored - p->c : 0;
			rc = meta_put_attr_in(t, &a);
		}
		return rc;
	case FIX_FIDREF:
		if (p->a) {
			uint32_t count = (uint32_t)p->a;

			return kv_put(t, KV_FIDREFS, p->name, strlen(p->name), &count, 4);
		}
		rc = kv_del(t, KV_FIDREFS, p->name, strlen(p->name));
		if (rc == 0 && p->b) {
			struct blob *b = blob_slot(f, p->name, strlen(p->name), false);

			if (!b || !b->queued)
				rc = queue_gc(t, p->name);
		}
		return rc;
	case FIX_DEL_GC:
		be64(k, p->a);
		return kv_del(t, KV_GC, k, 8);
	case FIX_DEL_ROW:
		be64(k, p->a);
		memcpy(k + 8, p->name, p->c);
		return kv_del(t, (int)p->b, k, 8 + p->c);
	case FIX_STORED:
		rc = meta_get_attr_in(t, p->a, &a);
		if (rc == 0) {
			a.stored = p->b;
			rc = meta_put_attr_in(t, &a);
		}
		return rc;
	case FIX_PARENT:
		be64(k, p->a);
		return put_u64(t, KV_PARENTS, k, 8, p->b);
	case FIX_NLINK:
		rc = meta_get_attr_in(t, p->a, &a);
		if (rc == 0) {
			a.nlink = (uint32_t)p->b;
			a.ctime_ns = now;
			rc = meta_put_attr_in(t, &a);
		}
		return rc;
	case FIX_LOST_FOUND: {
		char name[32];

		if (*lf_rc == 1)
			*lf_rc = lost_found(t, lf);
		if (*lf_rc == -ENOTDIR) {
			p->why = "/" LOST_FOUND " is not a directory";
			return 1;
		}
		if (*lf_rc < 0)
			return *lf_rc;
		/* "#<inode>", or "#<inode>.N" when someone took that name */
		for (int n = 0; n < 100; n++) {
			const uint8_t *v;
			size_t vlen;

			if (n)
				snprintf(name, sizeof(name), "#%" PRIu64 ".%d", p->a, n);
			else
				snprintf(name, sizeof(name), "#%" PRIu64, p->a);
			rc = kv_get(t, KV_DENTRIES, k, name_key(k, *lf, name), &v, &vlen);
			if (rc != 0)
				break;
		}
		if (rc == 0) {
			p->why = "every name for it in /" LOST_FOUND " is taken";
			return 1;
		}
		if (rc != -ENOENT)
			return rc;
		rc = put_u64(t, KV_DENTRIES, k, name_key(k, *lf, name), p->a);
		if (rc == 0)
			rc = meta_get_attr_in(t, p->a, &a);
		if (rc == 0) {
			a.nlink = (uint32_t)p->b;
			a.ctime_ns = now;
			rc = meta_put_attr_in(t, &a);
		}
		if (rc == 0 && p->c) {
			be64(k, p->a);
			rc = put_u64(t, KV_PARENTS, k, 8, *lf);
		}
		if (rc == 0)
			rc = meta_get_attr_in(t, *lf, &a);
		if (rc == 0) {
			a.nlink += p->c ? 1 : 0;
			a.mtime_ns = a.ctime_ns = now;
			rc = meta_put_attr_in(t, &a);
		}
		if (rc == 0)
			snprintf(p->detail + strlen(p->detail),
				 sizeof(p->detail) - strlen(p->detail), ": now /" LOST_FOUND "/%s",
				 name);
		return rc;
	}
	}
	return 1;
}

/* Applies every fix, kind by kind (names and chunks first, link counts and /lost+found
 * last, as the counts were computed for the tree without the names removed). */
static int apply(struct fsck *f, struct kv_txn *t)
{
	int64_t now = meta_now_ns();
	uint64_t lf = 0;
	int lf_rc = 1;

	for (int kind = FIX_DEL_DENTRY; kind < FIX_KINDS; kind++) {
		for (size_t i = 0; i < f->n_probs; i++) {
			struct problem *p = &f->probs[i];
			int rc;

			if (p->fix != kind)
				continue;
			rc = apply_one(f, t, p, &lf, &lf_rc, now);
			if (rc < 0)
				return rc;
			p->repaired = rc == 0;
		}
	}
	return 0;
}

static bool fixable(struct fsck *f)
{
	for (size_t i = 0; i < f->n_probs; i++)
		if (f->probs[i].fix != FIX_NONE)
			return true;
	for (size_t i = 0; f->o->drop_missing && i < f->blob_cap; i++)
		if (f->blobs[i].fid && f->blobs[i].refs && f->blobs[i].state == BLOB_MISSING)
			return true;
	return false;
}

static void fsck_free(struct fsck *f)
{
	for (size_t i = 0; i < f->blob_cap; i++) {
		free(f->blobs[i].fid);
		free(f->blobs[i].raw);
		free(f->blobs[i].err);
	}
	free(f->blobs);
	free(f->inos);
	free(f->arena);
	free(f->probs);
}

/*
 * The repair: in one read-write transaction, everything read and checked again (the
 * blobs' states carried over from the check), then fixed. On success *f becomes the
 * repair's view (its problems marked repaired); when a mount is live, nothing changes
 * and r->mounted says which.
 */
static int repair(struct kv *kv, struct fsck *f)
{
	const struct fsck_options *o = f->o;
	uint64_t start = monotonic_ns();
	int timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;

	for (int attempt = 1;; attempt++) {
		struct fsck_result gr = {0};
		struct fsck g = {.o = o,
				 .pass2 = true,
				 .r = &gr,
				 .progress = f->progress,
				 .progress_ctx = f->progress_ctx};
		struct kv_txn *t;
		int rc;

		for (size_t i = 0; i < f->blob_cap; i++) {
			struct blob *b = &f->blobs[i], *nb;

			if (!b->fid || b->state == BLOB_OK)
				continue;
			nb = blob_slot(&g, b->fid, strlen(b->fid), true);
			if (!nb || (b->err && !(nb->err = strdup(b->err)))) {
				fsck_free(&g);
				return -ENOMEM;
			}
			nb->state = b->state;
		}
		rc = kv->ops->begin(kv, true, &t);
		if (rc < 0) {
			fsck_free(&g);
			goto again;
		}
		rc = live_sessions(t, o, f->r->mounted_by, sizeof(f->r->mounted_by));
		if (rc > 0) {
			kv->ops->abort(t);
			fsck_free(&g);
			f->r->mounted = true;
			return 0;
		}
		if (rc == 0)
			rc = scan_all(t, &g);
		if (rc == 0) {
			if (check_cycles(&g) < 0)
				g.nomem = true;
			check_inodes(&g);
			report_blobs(&g);
			rc = g.nomem ? -ENOMEM : apply(&g, t);
		}
		if (rc == 0 && t->failed)
			rc = t->failed;
		if (rc == 0)
			rc = kv->ops->commit(t);
		else
			kv->ops->abort(t);
		if (rc == 0) {
			struct fsck_result *r = f->r;

			r->committed = true;
			rc = kv->ops->sync(kv, true);
			r->inodes = gr.inodes;
			r->dentries = gr.dentries;
			r->chunks = gr.chunks;
			r->blobs = gr.blobs;
			fsck_free(f);
			*f = g;
			f->r = r;
			return rc;
		}
		fsck_free(&g);
	again:
		if ((rc != -EAGAIN && rc != -ENOTCONN) ||
		    (monotonic_ns() - start) / 1000000 >= (uint64_t)timeout_ms)
			return rc;
		usleep(attempt < 10 ? 50000u * (unsigned)attempt : 500000u);
	}
}

/* ---------------------------------------------------------------- leaks */

/* The volumes of a collection with one server each, from the master's /vol/status. */
static int collection_servers(struct kelp_client *c, const char *collection, uint32_t **vids,
			      char (**urls)[KELP_URL_MAX], size_t *n)
{
	char *body = NULL;
	size_t len = 0;
	long status = 0;
	json_t *j, *racks, *nodes, *vols, *v;
	const char *k1, *k2, *url;
	int rc = kelp_client_master_get(c, "/vol/status", true, &status, &body, &len, NULL);

	*vids = NULL;
	*urls = NULL;
	*n = 0;
	if (rc < 0 || status != 200) {
		free(body);
		return rc < 0 ? rc : -EIO;
	}
	j = json_loadb(body, len, 0, NULL);
	free(body);
	json_object_foreach(json_object_get(json_object_get(j, "Volumes"), "DataCenters"), k1,
			    racks)
	{
		json_object_foreach(racks, k2, nodes)
		{
			json_object_foreach(nodes, url, vols)
			{
				size_t i;

				json_array_foreach(vols, i, v)
				{
					const char *col =
					    json_string_value(json_object_get(v, "Collection"));
					json_int_t id =
					    json_integer_value(json_object_get(v, "Id"));
					bool dup = false;
					void *p1, *p2;

					if (!col || strcmp(col, collection) || id <= 0)
						continue;
					for (size_t x = 0; x < *n; x++)
						dup |= (*vids)[x] == (uint32_t)id;
					if (dup)
						continue;
					p1 = realloc(*vids, (*n + 1) * sizeof(**vids));
					if (p1)
						*vids = p1;
					p2 = realloc(*urls, (*n + 1) * sizeof(**urls));
					if (p2)
						*urls = p2;
					if (!p1 || !p2) {
						json_decref(j);
						return -ENOMEM;
					}
					(*vids)[*n] = (uint32_t)id;
					snprintf((*urls)[*n], KELP_URL_MAX, "%s", url);
					(*n)++;
				}
			}
		}
	}
	json_decref(j);
	return 0;
}

static void find_leaks(struct fsck *f, struct kelp_client *c, const struct fsck_options *o)
{
	uint32_t *vids;
	char(*urls)[KELP_URL_MAX];
	size_t n;
	int64_t now = meta_now_ns();
	int rc = collection_servers(c, o->collection, &vids, &urls, &n);
	struct problem *p;

	if (rc < 0) {
		add(f, "leak search failed", 0, 0, NULL, 0,
		    "cannot list the volumes of collection \"%s\": %s", o->collection,
		    kelp_client_error(c));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		char path[64], *body = NULL;
		size_t len = 0, k;
		long status = 0;
		json_t *j, *e;

		snprintf(path, sizeof(path), "/admin/needles?volume=%u", vids[i]);
		rc = kelp_client_admin_get(c, urls[i], path, o->jwt_key, &status, &body, &len);
		j = rc == 0 && status == 200 ? json_loadb(body, len, 0, NULL) : NULL;
		free(body);
		if (!j) {
			add(f, "leak search failed", 0, 0, NULL, 0,
			    "cannot list the needles of volume %u on %s: %s", vids[i], urls[i],
			    rc < 0 ? kelp_client_error(c) : "the server refused");
			continue;
		}
		json_array_foreach(json_object_get(j, "Needles"), k, e)
		{
			struct fid id = {.vid = vids[i]};
			char fid[FID_MAX_LEN];
			int64_t at = (int64_t)json_integer_value(json_array_get(e, 3));
			struct blob *b;

			id.key = (uint64_t)json_integer_value(json_array_get(e, 0));
			id.cookie = (uint32_t)json_integer_value(json_array_get(e, 1));
			fid_format(&id, fid);
			f->r->needles++;
			b = blob_slot(f, fid, strlen(fid), false);
			if (b || at == 0 || now - at < o->grace_ns)
				continue;
			f->r->leaks++;
			p = add(f, "leaked blob", 0, 0, NULL, 0,
				"blob %s (%" JSON_INTEGER_FORMAT " bytes, written %.0f s ago) is "
				"referenced by nothing",
				fid, json_integer_value(json_array_get(e, 2)),
				(double)(now - at) / 1e9);
			if (!p || !o->repair)
				continue;
			rc = kelp_client_delete(c, fid, NULL, NULL);
			if (rc == 0 || rc == -ENOENT) {
				f->r->leaks_deleted++;
				p->repaired = true;
				snprintf(p->detail + strlen(p->detail),
					 sizeof(p->detail) - strlen(p->detail), ": deleted");
			} else {
				snprintf(p->detail + strlen(p->detail),
					 sizeof(p->detail) - strlen(p->detail),
					 ": cannot delete it: %s", kelp_client_error(c));
				p->why = "the delete failed";
			}
		}
		json_decref(j);
	}
	free(vids);
	free(urls);
}

/* ---------------------------------------------------------------- run */

static void report_all(struct fsck *f, fsck_report_fn rep, void *ctx, int repair_rc)
{
	char mounted[600], failed[128];

	snprintf(mounted, sizeof(mounted), "the metadata is mounted: %s", f->r->mounted_by);
	snprintf(failed, sizeof(failed), "the repair failed: %s", strerror(-repair_rc));
	for (size_t i = 0; i < f->n_probs; i++) {
		struct problem *p = &f->probs[i];
		char path[4096] = "";
		struct fsck_problem fp = {.kind = p->kind, .detail = p->detail, .path = path};

		if (p->quiet)
			continue;
		if (p->nopath) {
			/* none */
		} else if (p->ino) {
			path_of(f, p->ino, path, sizeof(path));
		} else if (p->parent) {
			path_of(f, p->parent, path, sizeof(path));
			snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s%s",
				 strcmp(path, "/") ? "/" : "", p->name);
		}
		f->r->problems++;
		if (!f->o || !f->o->repair) {
			fp.repair = FSCK_CHECKED;
		} else if (p->repaired) {
			fp.repair = FSCK_REPAIRED;
			f->r->repaired++;
		} else {
			fp.repair = FSCK_NOT_REPAIRED;
			if (p->why)
				fp.why = p->why;
			else if (repair_rc < 0)
				fp.why = failed;
			else if (f->r->mounted &&
				 (p->fix != FIX_NONE || !strcmp(p->kind, "missing blob")))
				fp.why = mounted;
			else
				fp.why = "fsck does not repair this";
		}
		rep(ctx, &fp);
	}
}

int fsck_run(struct kv *kv, struct kelp_client *c, const struct fsck_options *o, fsck_report_fn rep,
	     void *ctx, dump_progress_fn progress, void *progress_ctx, struct fsck_result *r)
{
	static const struct fsck_options none = {0};
	struct fsck f = {
	    .o = o ? o : &none, .r = r, .progress = progress, .progress_ctx = progress_ctx};
	struct kv_txn *t;
	int rc, repair_rc = 0;

	o = f.o;
	memset(r, 0, sizeof(*r));
	rc = kv->ops->begin(kv, false, &t);
	if (rc < 0)
		return rc;
	rc = scan_all(t, &f);
	kv->ops->abort(t);
	if (rc == 0) {
		if (check_cycles(&f) < 0)
			f.nomem = true;
		check_inodes(&f);
		f.total += f.n_blobs;
		probe_blobs(&f, c);
		report_blobs(&f);
		if (f.nomem)
			rc = -ENOMEM;
	}
	if (rc == 0 && o->repair && fixable(&f))
		repair_rc = repair(kv, &f);
	if (rc == 0 && c && o->collection)
		find_leaks(&f, c, o);
	if (rc == 0 && f.nomem)
		rc = -ENOMEM;
	if (rc == 0) {
		report_all(&f, rep, ctx, repair_rc);
		if (progress)
			progress(progress_ctx, f.done, f.total);
	}
	fsck_free(&f);
	r->repair_error = repair_rc;
	return rc;
}
