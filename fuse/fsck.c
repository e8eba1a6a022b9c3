/* fsck: the metadata checked against itself and the cluster (see fsck.h). */
#include "fuse/fsck.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster/client/client.h"
#include "cluster/common/fid.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

struct ino_rec {
	uint64_t ino;
	uint32_t mode, nlink, names, subdirs;
	uint64_t first_parent; /* of its first name (0: none) */
	uint64_t name_off;     /* the first name, in the arena */
	uint64_t parent_row;   /* directories: the parents table (0: none) */
	bool orphan;
};

struct blob {
	char *fid;
	uint64_t max_end; /* the largest blob_offset + length a chunk needs */
	uint32_t refs;
	uint64_t ino; /* one file using it (for the path) */
	bool has_ref_row;
	bool queued; /* in the gc queue */
};

struct late {
	char kind[64], detail[256];
	uint64_t ino; /* path of this inode, or of parent + name */
	uint64_t parent;
	char name[META_NAME_MAX + 1];
};

struct fsck {
	struct ino_rec *inos;
	size_t n_inos, cap_inos;
	char *arena;
	size_t arena_len, arena_cap;
	struct blob *blobs;
	size_t blob_cap, n_blobs;
	struct late *late;
	size_t n_late, cap_late;
	fsck_report_fn report;
	void *ctx;
	struct fsck_result *r;
	dump_progress_fn progress;
	void *progress_ctx;
	uint64_t done, total;
	bool sorted_ok;
	uint64_t last_ino;
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

static int later(struct fsck *f, const char *kind, uint64_t ino, uint64_t parent,
		 const uint8_t *name, size_t nlen, const char *fmt, ...)
{
	struct late *l;
	va_list ap;

	if (f->n_late == f->cap_late) {
		size_t cap = f->cap_late ? f->cap_late * 2 : 64;
		struct late *p = realloc(f->late, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		f->late = p;
		f->cap_late = cap;
	}
	l = &f->late[f->n_late++];
	memset(l, 0, sizeof(*l));
	snprintf(l->kind, sizeof(l->kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(l->detail, sizeof(l->detail), fmt, ap);
	va_end(ap);
	l->ino = ino;
	l->parent = parent;
	if (name && nlen <= META_NAME_MAX) {
		memcpy(l->name, name, nlen);
		l->name[nlen] = '\0';
	}
	f->r->problems++;
	return 0;
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

static int on_inode(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct meta_attr a;

	tick(f);
	if (klen != 8 || meta_decode_attr(v, vlen, &a) < 0)
		return later(f, "malformed inode row", 0, 0, NULL, 0, "key %zu, value %zu bytes",
			     klen, vlen);
	if (f->n_inos == f->cap_inos) {
		size_t cap = f->cap_inos ? f->cap_inos * 2 : 4096;
		struct ino_rec *p = realloc(f->inos, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		f->inos = p;
		f->cap_inos = cap;
	}
	f->inos[f->n_inos++] = (struct ino_rec){.ino = rd64(k), .mode = a.mode, .nlink = a.nlink};
	f->r->inodes++;
	return 0;
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

static int on_dentry(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	uint64_t parent, child;
	struct ino_rec *p, *c;

	tick(f);
	if (klen < 9 || vlen != 8)
		return later(f, "malformed name row", 0, 0, NULL, 0, "key %zu, value %zu bytes",
			     klen, vlen);
	f->r->dentries++;
	parent = rd64(k);
	child = rd64(v);
	p = find_ino(f, parent);
	c = find_ino(f, child);
	if (!p || !S_ISDIR(p->mode))
		return later(f, "name in a missing or non-directory inode", 0, parent, k + 8,
			     klen - 8, "inode %" PRIu64, parent);
	if (!c)
		return later(f, "name of a missing inode", 0, parent, k + 8, klen - 8,
			     "inode %" PRIu64, child);
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
		if (c->names > 1)
			later(f, "directory with several names", 0, parent, k + 8, klen - 8,
			      "inode %" PRIu64, child);
		if (c->parent_row != parent)
			later(f, "directory parent row differs from its name", child, 0, NULL, 0,
			      "parents says %" PRIu64 ", the name is in %" PRIu64, c->parent_row,
			      parent);
	}
	return 0;
}

static int on_chunk(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct ino_rec *r;
	struct blob *b;
	uint64_t ino;

	tick(f);
	if (klen != 16 || vlen < 17 || vlen >= 16 + META_FID_MAX)
		return later(f, "malformed chunk row", 0, 0, NULL, 0, "key %zu, value %zu bytes",
			     klen, vlen);
	f->r->chunks++;
	ino = rd64(k);
	r = find_ino(f, ino);
	if (!r || !S_ISREG(r->mode))
		later(f, "chunk of a missing or non-file inode", ino, 0, NULL, 0,
		      "inode %" PRIu64 ", blob %.*s", ino, (int)(vlen - 16), v + 16);
	b = blob_slot(f, (const char *)v + 16, vlen - 16, true);
	if (!b)
		return -ENOMEM;
	b->refs++;
	if (rd64(v + 8) + rd64(v) > b->max_end)
		b->max_end = rd64(v + 8) + rd64(v);
	if (!b->ino)
		b->ino = ino;
	return 0;
}

static int on_fidref(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	struct blob *b = blob_slot(f, (const char *)k, klen, false);
	uint32_t count = 0;

	tick(f);
	if (vlen == 4)
		memcpy(&count, v, 4);
	if (!b)
		return later(f, "reference count of an unused blob", 0, 0, NULL, 0,
			     "blob %.*s counts %u references, no chunk uses it", (int)klen, k,
			     count);
	b->has_ref_row = true;
	if (count != b->refs)
		later(f, "wrong blob reference count", b->ino, 0, NULL, 0,
		      "blob %s counts %u references, %u chunks use it", b->fid, count, b->refs);
	return 0;
}

static int on_gc(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct fsck *f = ctx;
	char fid[META_FID_MAX];
	int64_t queued;
	struct blob *b;

	tick(f);
	if (meta_gc_decode(v, vlen, fid, &queued) < 0)
		return later(f, "malformed gc row", 0, 0, NULL, 0, "value %zu bytes", vlen);
	b = blob_slot(f, fid, strlen(fid), false);
	if (b && b->refs)
		later(f, "gc queue holds a blob still used", b->ino, 0, NULL, 0,
		      "blob %s is queued for deletion (entry %" PRIu64 ")", fid, rd64(k));
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
	} order[] = {{KV_INODES, on_inode},   {KV_ORPHANS, on_orphan},
		     {KV_PARENTS, on_parent}, {KV_DENTRIES, on_dentry},
		     {KV_CHUNKS, on_chunk},   {KV_FIDREFS, on_fidref},
		     {KV_GC, on_gc}};
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
	}
	return 0;
}

/* ---------------------------------------------------------------- checks */

static void report(struct fsck *f, const char *kind, const char *detail, uint64_t ino,
		   uint64_t parent, const char *name)
{
	char path[4096] = "";

	if (ino) {
		path_of(f, ino, path, sizeof(path));
	} else if (parent) {
		path_of(f, parent, path, sizeof(path));
		snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s%s",
			 strcmp(path, "/") ? "/" : "", name);
	}
	f->report(f->ctx, kind, detail, path);
}

static void check_inodes(struct fsck *f)
{
	for (size_t i = 0; i < f->n_inos; i++) {
		struct ino_rec *r = &f->inos[i];
		char d[256];

		if (r->ino == META_ROOT_INO) {
			if (!S_ISDIR(r->mode))
				report(f, "root is not a directory", "", r->ino, 0, NULL),
				    f->r->problems++;
			continue;
		}
		if (!r->names && !r->orphan) {
			snprintf(d, sizeof(d), "inode %" PRIu64 " (mode %o) has no name", r->ino,
				 r->mode);
			report(f, "unreachable inode", d, 0, 0, NULL);
			f->r->problems++;
			continue;
		}
		if (S_ISDIR(r->mode) ? r->nlink != 2 + r->subdirs
				     : r->nlink != r->names && !(r->orphan && !r->names)) {
			snprintf(d, sizeof(d), "st_nlink %u, %u expected", r->nlink,
				 S_ISDIR(r->mode) ? 2 + r->subdirs : r->names);
			report(f, "wrong link count", d, r->ino, 0, NULL);
			f->r->problems++;
		}
	}
}

static void check_blobs(struct fsck *f, struct kelp_client *c)
{
	for (size_t i = 0; i < f->blob_cap; i++) {
		struct blob *b = &f->blobs[i];
		char d[512];
		uint8_t byte;
		size_t got = 0;
		int rc;

		if (!b->fid || !b->refs)
			continue; /* only queued for gc */
		f->r->blobs++;
		if (!b->has_ref_row) {
			snprintf(d, sizeof(d), "blob %s is used by %u chunk(s) and has no count",
				 b->fid, b->refs);
			report(f, "missing blob reference count", d, b->ino, 0, NULL);
			f->r->problems++;
		}
		if (!c)
			continue;
		rc = kelp_client_read_range(c, b->fid, b->max_end ? b->max_end - 1 : 0, 1, &byte,
					    &got, NULL);
		f->r->blobs_checked++;
		tick(f);
		if (rc == -ENOENT) {
			snprintf(d, sizeof(d), "blob %s is not in the cluster", b->fid);
			report(f, "missing blob", d, b->ino, 0, NULL);
			f->r->problems++;
		} else if (rc < 0) {
			snprintf(d, sizeof(d), "blob %s cannot be read: %s", b->fid,
				 kelp_client_error(c));
			report(f, "unreadable blob", d, b->ino, 0, NULL);
			f->r->problems++;
		} else if (b->max_end && got == 0) {
			snprintf(d, sizeof(d),
				 "blob %s is shorter than the %" PRIu64 " bytes its "
				 "chunks use",
				 b->fid, b->max_end);
			report(f, "short blob", d, b->ino, 0, NULL);
			f->r->problems++;
		}
	}
}

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
	char d[512];
	int rc = collection_servers(c, o->collection, &vids, &urls, &n);

	if (rc < 0) {
		snprintf(d, sizeof(d), "cannot list the volumes of collection \"%s\": %s",
			 o->collection, kelp_client_error(c));
		f->report(f->ctx, "leak search failed", d, "");
		f->r->problems++;
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
			snprintf(d, sizeof(d), "cannot list the needles of volume %u on %s: %s",
				 vids[i], urls[i],
				 rc < 0 ? kelp_client_error(c) : "the server refused");
			f->report(f->ctx, "leak search failed", d, "");
			f->r->problems++;
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
			snprintf(d, sizeof(d),
				 "blob %s (%" JSON_INTEGER_FORMAT " bytes, written %.0f s ago) is "
				 "referenced by nothing",
				 fid, json_integer_value(json_array_get(e, 2)),
				 (double)(now - at) / 1e9);
			if (o->repair) {
				rc = kelp_client_delete(c, fid, NULL, NULL);
				if (rc == 0 || rc == -ENOENT) {
					f->r->leaks_deleted++;
					snprintf(d + strlen(d), sizeof(d) - strlen(d), ": deleted");
					f->report(f->ctx, "leaked blob", d, "");
					continue;
				}
				snprintf(d + strlen(d), sizeof(d) - strlen(d),
					 ": cannot delete it: %s", kelp_client_error(c));
			}
			f->report(f->ctx, "leaked blob", d, "");
			f->r->problems++;
		}
		json_decref(j);
	}
	free(vids);
	free(urls);
}

int fsck_run(struct kv *kv, struct kelp_client *c, const struct fsck_options *o, fsck_report_fn rep,
	     void *ctx, dump_progress_fn progress, void *progress_ctx, struct fsck_result *r)
{
	struct fsck f = {
	    .report = rep, .ctx = ctx, .r = r, .progress = progress, .progress_ctx = progress_ctx};
	struct kv_txn *t;
	int rc;

	memset(r, 0, sizeof(*r));
	rc = kv->ops->begin(kv, false, &t);
	if (rc < 0)
		return rc;
	rc = scan_all(t, &f);
	kv->ops->abort(t);
	if (rc == 0) {
		for (size_t i = 0; i < f.n_late; i++)
			report(&f, f.late[i].kind, f.late[i].detail, f.late[i].ino,
			       f.late[i].parent, f.late[i].name);
		check_inodes(&f);
		f.total += f.n_blobs;
		check_blobs(&f, c);
		if (c && o && o->collection)
			find_leaks(&f, c, o);
		if (progress)
			progress(progress_ctx, f.done, f.total);
	}
	for (size_t i = 0; i < f.blob_cap; i++)
		free(f.blobs[i].fid);
	free(f.blobs);
	free(f.inos);
	free(f.arena);
	free(f.late);
	return rc;
}
