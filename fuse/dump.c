/* dump: the metadata as JSON lines and back (the format is described in dump.h). */
#include "fuse/dump.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

#define LINE_MAX_BYTES (1u << 20)
#define DEFAULT_BATCH  5000

static const char *const table_label[KV_NTABLES] = {
    [KV_INODES] = "inodes",   [KV_SYMLINKS] = "symlinks", [KV_DENTRIES] = "dentries",
    [KV_CHUNKS] = "chunks",   [KV_FIDREFS] = "fidrefs",	  [KV_XATTRS] = "xattrs",
    [KV_GC] = "gc",	      [KV_COUNTERS] = "counters", [KV_ORPHANS] = "orphans",
    [KV_PARENTS] = "parents",
};

/* The tables a dump carries, in the order it writes them (counters: in the header). */
static const int dumped[] = {KV_INODES,	 KV_SYMLINKS, KV_DENTRIES, KV_PARENTS, KV_CHUNKS,
			     KV_FIDREFS, KV_XATTRS,   KV_GC,	   KV_ORPHANS};
#define N_DUMPED (int)(sizeof(dumped) / sizeof(dumped[0]))

int dump_open_kv(const char *spec, int timeout_ms, struct kv **out)
{
	if (kv_is_pg_url(spec)) {
		struct kv_pg_options po = {.timeout_ms = timeout_ms, .connections = 2};

		return kv_pg_open(spec, &po, out);
	}
	return kv_lmdb_open(spec, out);
}

/* ---------------------------------------------------------------- writing */

struct writer {
	dump_out_fn out;
	void *ctx;
	char buf[1 << 16];
	size_t n;
	int rc;
	uint64_t records, bytes, total;
	dump_progress_fn progress;
	void *progress_ctx;
};

static void w_flush(struct writer *w)
{
	if (w->n && !w->rc)
		w->rc = w->out(w->ctx, w->buf, w->n);
	w->bytes += w->n;
	w->n = 0;
}

static void w_put(struct writer *w, const void *p, size_t n)
{
	if (w->n + n > sizeof(w->buf))
		w_flush(w);
	if (n > sizeof(w->buf)) {
		if (!w->rc)
			w->rc = w->out(w->ctx, p, n);
		w->bytes += n;
		return;
	}
	memcpy(w->buf + w->n, p, n);
	w->n += n;
}

static void w_fmt(struct writer *w, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		w_put(w, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Valid UTF-8 with no NUL (what a JSON string carries unchanged). */
static bool is_text(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		int more;
		uint32_t cp;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			more = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3, cp = c & 0x07;
		else
			return false;
		if (i + (size_t)more >= n)
			return false;
		for (int k = 1; k <= more; k++) {
			if ((p[i + (size_t)k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + (size_t)k] & 0x3f);
		}
		if ((more == 2 && cp < 0x800) || (more == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += (size_t)more + 1;
	}
	return true;
}

/* sep"key":"text" or sep"key64":"base64" (sep: "," or "" for the first field) */
static void w_field(struct writer *w, const char *sep, const char *key, const uint8_t *p, size_t n)
{
	if (is_text(p, n)) {
		w_fmt(w, "%s\"%s\":\"", sep, key);
		for (size_t i = 0; i < n; i++) {
			uint8_t c = p[i];

			if (c == '"' || c == '\\') {
				char e[2] = {'\\', (char)c};

				w_put(w, e, 2);
			} else if (c < 0x20 || c == 0x7f) {
				w_fmt(w, "\\u%04x", c);
			} else {
				w_put(w, &c, 1);
			}
		}
		w_put(w, "\"", 1);
	} else {
		char *b = malloc(4 * (n / 3 + 1) + 1);

		if (!b) {
			w->rc = w->rc ? w->rc : -ENOMEM;
			return;
		}
		base64_encode(p, n, b);
		w_fmt(w, "%s\"%s64\":\"", sep, key);
		w_put(w, b, strlen(b));
		w_put(w, "\"", 1);
		free(b);
	}
}

static void w_bytes(struct writer *w, const char *key, const uint8_t *p, size_t n)
{
	w_field(w, ",", key, p, n);
}

static void w_end_record(struct writer *w)
{
	w_put(w, "}\n", 2);
	w->records++;
	if (w->progress && w->records % 4096 == 0)
		w->progress(w->progress_ctx, w->records, w->total);
}

static int dump_row(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen);

struct row_ctx {
	struct writer *w;
	int table;
	uint64_t inodes;
};

static int bad_row(struct row_ctx *r, size_t klen, size_t vlen)
{
	log_error("meta dump: a malformed %s row (key %zu bytes, value %zu bytes)",
		  table_label[r->table], klen, vlen);
	return -EIO;
}

static int dump_row(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct row_ctx *r = ctx;
	struct writer *w = r->w;

	switch (r->table) {
	case KV_INODES: {
		struct meta_attr a;

		if (klen != 8 || meta_decode_attr(v, vlen, &a) < 0)
			return bad_row(r, klen, vlen);
		w_fmt(w,
		      "{\"inode\":%" PRIu64 ",\"mode\":%u,\"nlink\":%u,\"uid\":%u,\"gid\":%u,"
		      "\"rdev\":%u,\"size\":%" PRIu64 ",\"atime\":%" PRId64 ",\"mtime\":%" PRId64
		      ",\"ctime\":%" PRId64 ",\"crtime\":%" PRId64,
		      rd64(k), a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.atime_ns,
		      a.mtime_ns, a.ctime_ns, a.crtime_ns);
		/* Only when set: a record without them reads back the same. */
		if (a.flags)
			w_fmt(w, ",\"flags\":%u", a.flags);
		if (a.stored != META_STORED_UNKNOWN)
			w_fmt(w, ",\"stored\":%" PRIu64, a.stored);
		r->inodes++;
		break;
	}
	case KV_SYMLINKS:
		if (klen != 8)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"symlink\":%" PRIu64, rd64(k));
		w_bytes(w, "target", v, vlen);
		break;
	case KV_DENTRIES:
		if (klen < 9 || vlen != 8)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"dentry\":%" PRIu64, rd64(k));
		w_bytes(w, "name", k + 8, klen - 8);
		w_fmt(w, ",\"ino\":%" PRIu64, rd64(v));
		break;
	case KV_PARENTS:
		if (klen != 8 || vlen != 8)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"dir\":%" PRIu64 ",\"parent\":%" PRIu64, rd64(k), rd64(v));
		break;
	case KV_CHUNKS:
		if (klen != 16 || vlen < 17 || vlen >= 16 + META_FID_MAX)
			return bad_row(r, klen, vlen);
		w_fmt(w,
		      "{\"chunk\":%" PRIu64 ",\"offset\":%" PRIu64 ",\"length\":%" PRIu64
		      ",\"blob_offset\":%" PRIu64,
		      rd64(k), rd64(k + 8), rd64(v), rd64(v + 8));
		w_bytes(w, "fid", v + 16, vlen - 16);
		break;
	case KV_FIDREFS: {
		uint32_t count;

		if (vlen != 4 || klen == 0 || klen >= META_FID_MAX)
			return bad_row(r, klen, vlen);
		memcpy(&count, v, 4);
		w_put(w, "{", 1);
		w_field(w, "", "fidref", k, klen);
		w_fmt(w, ",\"count\":%u", count);
		break;
	}
	case KV_XATTRS:
		if (klen < 9)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"xattr\":%" PRIu64, rd64(k));
		w_bytes(w, "name", k + 8, klen - 8);
		w_bytes(w, "value", v, vlen);
		break;
	case KV_GC: {
		char fid[META_FID_MAX];
		int64_t queued;

		if (klen != 8 || meta_gc_decode(v, vlen, fid, &queued) < 0)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"gc\":%" PRIu64, rd64(k));
		w_bytes(w, "fid", (const uint8_t *)fid, strlen(fid));
		w_fmt(w, ",\"queued\":%" PRId64, queued);
		break;
	}
	case KV_ORPHANS:
		if (klen != 8)
			return bad_row(r, klen, vlen);
		w_fmt(w, "{\"orphan\":%" PRIu64, rd64(k));
		w_bytes(w, "owner", v, vlen);
		break;
	default:
		return 0;
	}
	w_end_record(w);
	return w->rc;
}

static int dump_tx(struct kv_txn *t, struct writer *w, struct dump_stats *st)
{
	uint64_t counts[KV_NTABLES] = {0}, next_ino = 0, next_gc = 0, total = 0;
	char format[32], cluster[128];
	const uint8_t *v;
	size_t vlen;
	uint32_t generation = 0;
	int64_t now = meta_now_ns();
	int rc;

	for (int i = 0; i < N_DUMPED; i++) {
		rc = kv_count(t, dumped[i], &counts[dumped[i]]);
		if (rc < 0)
			return rc;
		total += counts[dumped[i]];
	}
	rc = kv_get_prop(t, "format", format, sizeof(format));
	if (rc == 0)
		rc = kv_get_prop(t, "cluster_id", cluster, sizeof(cluster));
	if (rc == 0)
		rc = kv_peek_id(t, KV_ID_INO, &next_ino);
	if (rc == 0)
		rc = kv_peek_id(t, KV_ID_GC, &next_gc);
	if (rc < 0)
		return rc;
	rc = kv_get(t, KV_COUNTERS, "generation", 10, &v, &vlen);
	if (rc == 0 && vlen == 4)
		memcpy(&generation, v, 4);
	else if (rc < 0 && rc != -ENOENT)
		return rc;
	w->total = total;
	w_fmt(w, "{\"kelp_dump\":%d,\"engine\":\"%s\",\"format\":\"%s\"", DUMP_VERSION,
	      t->kv->ops->name, format);
	w_bytes(w, "cluster_id", (const uint8_t *)cluster, strlen(cluster));
	w_fmt(w,
	      ",\"generation\":%u,\"next_ino\":%" PRIu64 ",\"next_gc\":%" PRIu64
	      ",\"time\":%" PRId64 ",\"counts\":{",
	      generation, next_ino, next_gc, now);
	for (int i = 0; i < N_DUMPED; i++)
		w_fmt(w, "%s\"%s\":%" PRIu64, i ? "," : "", table_label[dumped[i]],
		      counts[dumped[i]]);
	w_put(w, "}}\n", 3);
	for (int i = 0; i < N_DUMPED && w->rc == 0; i++) {
		struct row_ctx r = {w, dumped[i], 0};
		uint8_t from[1] = {0};

		rc = kv_scan(t, dumped[i], from, 0, NULL, 0, false, 0, dump_row, &r);
		if (rc < 0)
			return rc;
		if (dumped[i] == KV_INODES && st)
			st->inodes = r.inodes;
	}
	w_fmt(w, "{\"end\":%" PRIu64 "}\n", w->records);
	w_flush(w);
	if (st) {
		st->records = w->records;
		st->bytes = w->bytes;
		st->time_ns = now;
		st->generation = generation;
		snprintf(st->cluster_id, sizeof(st->cluster_id), "%s", cluster);
	}
	if (w->progress)
		w->progress(w->progress_ctx, w->records, w->total);
	return w->rc;
}

int dump_write(struct kv *kv, dump_out_fn out, void *out_ctx, dump_progress_fn progress,
	       void *progress_ctx, struct dump_stats *st)
{
	struct writer *w = calloc(1, sizeof(*w));
	struct kv_txn *t;
	int rc;

	if (!w)
		return -ENOMEM;
	w->out = out;
	w->ctx = out_ctx;
	w->progress = progress;
	w->progress_ctx = progress_ctx;
	/* One read transaction: the snapshot. Never conflicts (kv.h), so no retry. */
	rc = kv->ops->begin(kv, false, &t);
	if (rc == 0) {
		rc = dump_tx(t, w, st);
		kv->ops->abort(t);
	}
	free(w);
	return rc;
}

/* ---------------------------------------------------------------- wiping */

struct key_batch {
	uint8_t *keys[1000];
	size_t lens[1000];
	int n;
	bool skip_props; /* counters: keep "prop:*" */
};

static int collect_key(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct key_batch *b = ctx;

	if (b->skip_props && klen >= 5 && !memcmp(k, "prop:", 5))
		return 0;
	if (b->n == 1000)
		return 1;
	b->keys[b->n] = malloc(klen ? klen : 1);
	if (!b->keys[b->n])
		return -ENOMEM;
	memcpy(b->keys[b->n], k, klen);
	b->lens[b->n++] = klen;
	return 0;
}

static void batch_free(struct key_batch *b)
{
	for (int i = 0; i < b->n; i++)
		free(b->keys[i]);
	b->n = 0;
}

int dump_wipe(struct kv *kv)
{
	/* The counters (and the load marker in them) last. */
	for (int i = 0; i < KV_NTABLES; i++) {
		int table = i < KV_COUNTERS ? i : i + 1 < KV_NTABLES ? i + 1 : KV_COUNTERS;

		for (;;) {
			struct key_batch b = {.skip_props = table == KV_COUNTERS};
			struct kv_txn *t;
			int rc = kv->ops->begin(kv, true, &t), n;

			if (rc < 0)
				return rc;
			rc = kv_scan(t, table, "", 0, NULL, 0, false, 0, collect_key, &b);
			for (int i = 0; rc == 0 && i < b.n; i++)
				rc = kv_del(t, table, b.keys[i], b.lens[i]);
			n = b.n;
			batch_free(&b);
			if (rc < 0 || t->failed) {
				rc = rc < 0 ? rc : t->failed;
				kv->ops->abort(t);
				return rc;
			}
			rc = kv->ops->commit(t);
			if (rc < 0)
				return rc;
			if (n < 1000)
				break;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- loading */

struct loader {
	dump_in_fn in;
	void *in_ctx;
	char *buf; /* LINE_MAX_BYTES + read-ahead */
	size_t len, pos;
	bool eof;
	uint64_t line_no, bytes;
	char *err;
	size_t cap;
	uint64_t max_ino, max_gc;
	uint8_t bytes_buf[65536 + 16]; /* a value being decoded */
};

static int fail(struct loader *l, int rc, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(l->err, l->cap, "line %" PRIu64 ": ", l->line_no);

	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < l->cap)
		vsnprintf(l->err + n, l->cap - (size_t)n, fmt, ap);
	va_end(ap);
	return rc;
}

/* The next line (without its newline), NULL at the end; *rc < 0 on an error. */
static char *next_line(struct loader *l, size_t *n, int *rc)
{
	const size_t size = LINE_MAX_BYTES + 65536;

	*rc = 0;
	for (;;) {
		char *nl = memchr(l->buf + l->pos, '\n', l->len - l->pos);

		if (nl || (l->eof && l->pos < l->len)) {
			char *line = l->buf + l->pos;

			*n = nl ? (size_t)(nl - line) : l->len - l->pos;
			l->pos += *n + (nl ? 1 : 0);
			l->line_no++;
			line[*n] = '\0'; /* the buffer has a byte to spare */
			return line;
		}
		if (l->eof)
			return NULL;
		if (l->len - l->pos > LINE_MAX_BYTES) {
			l->line_no++;
			*rc = fail(l, -EINVAL, "longer than %u bytes", LINE_MAX_BYTES);
			return NULL;
		}
		memmove(l->buf, l->buf + l->pos, l->len - l->pos);
		l->len -= l->pos;
		l->pos = 0;
		{
			ssize_t got = l->in(l->in_ctx, l->buf + l->len, size - 1 - l->len);

			if (got < 0) {
				*rc = fail(l, (int)got, "cannot read the input: %s",
					   strerror((int)-got));
				return NULL;
			}
			if (got == 0)
				l->eof = true;
			l->len += (size_t)got;
			l->bytes += (size_t)got;
		}
	}
}

static int get_u64(struct loader *l, json_t *o, const char *key, uint64_t *out)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return fail(l, -EINVAL, "\"%s\" must be a non-negative integer", key);
	*out = (uint64_t)json_integer_value(j);
	return 0;
}

static int get_i64(struct loader *l, json_t *o, const char *key, int64_t *out)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j))
		return fail(l, -EINVAL, "\"%s\" must be an integer", key);
	*out = (int64_t)json_integer_value(j);
	return 0;
}

static int get_u32(struct loader *l, json_t *o, const char *key, uint32_t *out)
{
	uint64_t v;
	int rc = get_u64(l, o, key, &v);

	if (rc == 0 && v > UINT32_MAX)
		rc = fail(l, -EINVAL, "\"%s\" is out of range", key);
	*out = (uint32_t)v;
	return rc;
}

/* A byte string: "key" (text) or "key64" (base64), 1 (or 0 with allow_empty) to cap
 * bytes. */
static int get_bytes(struct loader *l, json_t *o, const char *key, uint8_t *out, size_t cap,
		     size_t *n, bool allow_empty)
{
	char k64[32];
	json_t *j = json_object_get(o, key);

	if (json_is_string(j)) {
		size_t len = json_string_length(j);

		if (len > cap)
			return fail(l, -EINVAL, "\"%s\" is longer than %zu bytes", key, cap);
		memcpy(out, json_string_value(j), len);
		*n = len;
	} else {
		long len;

		snprintf(k64, sizeof(k64), "%s64", key);
		j = json_object_get(o, k64);
		if (!json_is_string(j))
			return fail(l, -EINVAL, "\"%s\" (or \"%s\") is missing", key, k64);
		len = base64_decode(json_string_value(j), json_string_length(j), out, cap);
		if (len < 0)
			return fail(l, -EINVAL, "\"%s\" is not base64 of at most %zu bytes", k64,
				    cap);
		*n = (size_t)len;
	}
	if (*n == 0 && !allow_empty)
		return fail(l, -EINVAL, "\"%s\" is empty", key);
	return 0;
}

static int get_name(struct loader *l, json_t *o, uint8_t *out, size_t *n)
{
	int rc = get_bytes(l, o, "name", out, META_NAME_MAX, n, false);

	if (rc < 0)
		return rc;
	if (memchr(out, '/', *n) || memchr(out, '\0', *n) || (*n == 1 && out[0] == '.') ||
	    (*n == 2 && out[0] == '.' && out[1] == '.'))
		return fail(l, -EINVAL, "\"name\" is not a valid file name");
	return 0;
}

static int get_fid(struct loader *l, json_t *o, const char *key, char *fid)
{
	size_t n;
	int rc = get_bytes(l, o, key, (uint8_t *)fid, META_FID_MAX - 1, &n, false);

	if (rc < 0)
		return rc;
	fid[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (!((fid[i] >= '0' && fid[i] <= '9') || (fid[i] >= 'a' && fid[i] <= 'f') ||
		      (fid[i] >= 'A' && fid[i] <= 'F') || fid[i] == ',' || fid[i] == '_'))
			return fail(l, -EINVAL, "\"%s\" is not a file id", key);
	if (!strchr(fid, ','))
		return fail(l, -EINVAL, "\"%s\" is not a file id", key);
	return 0;
}

static int need_ino(struct loader *l, json_t *o, const char *key, uint64_t *ino)
{
	int rc = get_u64(l, o, key, ino);

	if (rc == 0 && *ino == 0)
		rc = fail(l, -EINVAL, "\"%s\" must be an inode number (> 0)", key);
	if (rc == 0 && *ino > l->max_ino)
		l->max_ino = *ino;
	return rc;
}

/* One record into the transaction. */
/*
 * An xattr row loaded for an inode whose record says it has none (META_F_NO_XATTRS; a
 * dump is written inodes first) clears that flag: the mount would otherwise answer
 * questions for it from the flag. ACLs have their own flags.
 */
static int clear_no_xattrs(struct kv_txn *t, uint64_t ino, const char *name)
{
	struct meta_attr a;
	int rc;

	if (!strcmp(name, META_ACL_ACCESS) || !strcmp(name, META_ACL_DEFAULT))
		return 0;
	rc = meta_get_attr_in(t, ino, &a);
	if (rc == -ENOENT)
		return 0; /* an xattr of no inode: loaded as it is (fsck reports it) */
	if (rc < 0 || !(a.flags & META_F_NO_XATTRS))
		return rc;
	a.flags &= ~META_F_NO_XATTRS;
	return meta_put_attr_in(t, &a);
}

static int load_record(struct loader *l, struct kv_txn *t, json_t *o)
{
	uint8_t *bytes = l->bytes_buf;
	uint8_t k[16 + META_NAME_MAX], v[16 + META_FID_MAX];
	size_t n;
	uint64_t ino, x;
	int rc;

	if (json_object_get(o, "inode")) {
		struct meta_attr a = {0};
		uint32_t type;

		rc = need_ino(l, o, "inode", &a.ino);
		if (rc == 0)
			rc = get_u32(l, o, "mode", &a.mode);
		if (rc == 0)
			rc = get_u32(l, o, "nlink", &a.nlink);
		if (rc == 0)
			rc = get_u32(l, o, "uid", &a.uid);
		if (rc == 0)
			rc = get_u32(l, o, "gid", &a.gid);
		if (rc == 0)
			rc = get_u32(l, o, "rdev", &a.rdev);
		if (rc == 0)
			rc = get_u64(l, o, "size", &a.size);
		if (rc == 0)
			rc = get_i64(l, o, "atime", &a.atime_ns);
		if (rc == 0)
			rc = get_i64(l, o, "mtime", &a.mtime_ns);
		if (rc == 0)
			rc = get_i64(l, o, "ctime", &a.ctime_ns);
		if (rc == 0)
			rc = get_i64(l, o, "crtime", &a.crtime_ns);
		/* Optional: dumps from before them have neither (the stored byte count is
		 * then computed at the file's next change, as for such records). */
		a.stored = META_STORED_UNKNOWN;
		if (rc == 0 && json_object_get(o, "flags"))
			rc = get_u32(l, o, "flags", &a.flags);
		if (rc == 0 && json_object_get(o, "stored"))
			rc = get_u64(l, o, "stored", &a.stored);
		if (rc < 0)
			return rc;
		type = a.mode & S_IFMT;
		if (type != S_IFREG && type != S_IFDIR && type != S_IFLNK && type != S_IFIFO &&
		    type != S_IFCHR && type != S_IFBLK && type != S_IFSOCK)
			return fail(l, -EINVAL, "\"mode\" %u is not a file type", a.mode);
		return meta_put_attr_in(t, &a);
	}
	if (json_object_get(o, "symlink")) {
		rc = need_ino(l, o, "symlink", &ino);
		if (rc == 0)
			rc = get_bytes(l, o, "target", bytes, 4096, &n, false);
		if (rc < 0)
			return rc;
		be64(k, ino);
		return kv_put(t, KV_SYMLINKS, k, 8, bytes, n);
	}
	if (json_object_get(o, "dentry")) {
		rc = need_ino(l, o, "dentry", &x);
		if (rc == 0)
			rc = get_name(l, o, k + 8, &n);
		if (rc == 0)
			rc = need_ino(l, o, "ino", &ino);
		if (rc < 0)
			return rc;
		be64(k, x);
		be64(v, ino);
		return kv_put(t, KV_DENTRIES, k, 8 + n, v, 8);
	}
	if (json_object_get(o, "dir")) {
		rc = need_ino(l, o, "dir", &ino);
		if (rc == 0)
			rc = need_ino(l, o, "parent", &x);
		if (rc < 0)
			return rc;
		be64(k, ino);
		be64(v, x);
		return kv_put(t, KV_PARENTS, k, 8, v, 8);
	}
	if (json_object_get(o, "chunk")) {
		uint64_t off, len, boff;
		char fid[META_FID_MAX];

		rc = need_ino(l, o, "chunk", &ino);
		if (rc == 0)
			rc = get_u64(l, o, "offset", &off);
		if (rc == 0)
			rc = get_u64(l, o, "length", &len);
		if (rc == 0)
			rc = get_u64(l, o, "blob_offset", &boff);
		if (rc == 0)
			rc = get_fid(l, o, "fid", fid);
		if (rc < 0)
			return rc;
		if (len == 0 || off + len < off)
			return fail(l, -EINVAL, "\"length\" must be > 0 and end below 2^64");
		be64(k, ino);
		be64(k + 8, off);
		be64(v, len);
		be64(v + 8, boff);
		memcpy(v + 16, fid, strlen(fid));
		return kv_put(t, KV_CHUNKS, k, 16, v, 16 + strlen(fid));
	}
	if (json_object_get(o, "fidref")) {
		char fid[META_FID_MAX];
		uint32_t count;

		rc = get_fid(l, o, "fidref", fid);
		if (rc == 0)
			rc = get_u32(l, o, "count", &count);
		if (rc < 0)
			return rc;
		if (count == 0)
			return fail(l, -EINVAL, "\"count\" must be > 0");
		return kv_put(t, KV_FIDREFS, fid, strlen(fid), &count, 4);
	}
	if (json_object_get(o, "xattr")) {
		rc = need_ino(l, o, "xattr", &ino);
		if (rc == 0)
			rc = get_bytes(l, o, "name", k + 8, META_NAME_MAX, &n, false);
		if (rc < 0)
			return rc;
		be64(k, ino);
		{
			size_t vn;

			rc = get_bytes(l, o, "value", bytes, 65536, &vn, true);
			if (rc < 0)
				return rc;
			k[8 + n] = '\0';
			rc = clear_no_xattrs(t, ino, (const char *)k + 8);
			if (rc < 0)
				return rc;
			return kv_put(t, KV_XATTRS, k, 8 + n, bytes, vn);
		}
	}
	if (json_object_get(o, "gc")) {
		char fid[META_FID_MAX];
		int64_t queued;
		uint64_t seq;
		size_t flen;

		rc = get_u64(l, o, "gc", &seq);
		if (rc == 0)
			rc = get_fid(l, o, "fid", fid);
		if (rc == 0)
			rc = get_i64(l, o, "queued", &queued);
		if (rc < 0)
			return rc;
		if (seq > l->max_gc)
			l->max_gc = seq;
		flen = strlen(fid);
		be64(k, seq);
		memcpy(v, fid, flen);
		v[flen] = '\0';
		be64(v + flen + 1, (uint64_t)queued);
		return kv_put(t, KV_GC, k, 8, v, flen + 9);
	}
	if (json_object_get(o, "orphan")) {
		rc = need_ino(l, o, "orphan", &ino);
		if (rc == 0)
			rc = get_bytes(l, o, "owner", bytes, 4096, &n, true);
		if (rc < 0)
			return rc;
		be64(k, ino);
		return kv_put(t, KV_ORPHANS, k, 8, bytes, n);
	}
	return fail(l, -EINVAL, "not a record of a kelp dump");
}

/* The line as a JSON object (caller decrefs), or NULL with l->err set. */
static json_t *parse_line(struct loader *l, const char *line, size_t n)
{
	json_error_t je;
	json_t *o = json_loadb(line, n, 0, &je);

	if (!o) {
		fail(l, -EINVAL, "not JSON: %s", je.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		fail(l, -EINVAL, "not a JSON object");
		return NULL;
	}
	return o;
}

/* The target holds nothing but (maybe) an empty root directory, or an unfinished load. */
static int check_empty(struct loader *l, struct kv_txn *t, bool *unfinished)
{
	const uint8_t *v;
	size_t vlen;
	int rc = kv_get(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY), &v, &vlen);

	*unfinished = rc == 0;
	if (rc == 0 || rc != -ENOENT)
		return rc == 0 ? 0 : rc;
	for (int table = 0; table < KV_NTABLES; table++) {
		uint64_t n = 0;

		if (table == KV_COUNTERS)
			continue;
		rc = kv_count(t, table, &n);
		if (rc < 0)
			return rc;
		if (table == KV_INODES && n <= 1) {
			uint8_t k[8];

			be64(k, META_ROOT_INO);
			if (n == 0 || kv_get(t, KV_INODES, k, 8, &v, &vlen) == 0)
				continue;
		}
		if (n) {
			snprintf(l->err, l->cap,
				 "the target metadata is not empty (%" PRIu64
				 " rows of %s): load only into a new LMDB directory or an "
				 "empty database",
				 n, table_label[table]);
			return -ENOTEMPTY;
		}
	}
	return 0;
}

static int check_header(struct loader *l, json_t *h, const struct dump_load_options *o,
			struct kv_txn *t, struct dump_stats *st, uint64_t *total)
{
	json_t *ver = json_object_get(h, "kelp_dump"), *cid = json_object_get(h, "cluster_id"),
	       *counts = json_object_get(h, "counts"), *val;
	const char *key;
	char stored[128];
	int rc;

	if (!json_is_integer(ver))
		return fail(l, -EINVAL, "not a kelp dump (the first line has no \"kelp_dump\")");
	if (json_integer_value(ver) != DUMP_VERSION)
		return fail(l, -EINVAL,
			    "a kelp dump of version %" JSON_INTEGER_FORMAT
			    " (this kelp reads version %d)",
			    json_integer_value(ver), DUMP_VERSION);
	if (cid && !json_is_string(cid))
		return fail(l, -EINVAL, "\"cluster_id\" must be a string");
	snprintf(st->cluster_id, sizeof(st->cluster_id), "%s", cid ? json_string_value(cid) : "");
	val = json_object_get(h, "time");
	st->time_ns = json_is_integer(val) ? json_integer_value(val) : 0;
	*total = 0;
	json_object_foreach(counts, key, val)
	{
		if (json_is_integer(val))
			*total += (uint64_t)json_integer_value(val);
	}
	if (o && o->cluster_id && *o->cluster_id && *st->cluster_id &&
	    strcmp(o->cluster_id, st->cluster_id)) {
		return fail(l, -EXDEV,
			    "the dump belongs to the cluster %s, and the masters are the cluster "
			    "%s: its blobs are not there",
			    st->cluster_id, o->cluster_id);
	}
	rc = kv_get_prop(t, "cluster_id", stored, sizeof(stored));
	if (rc < 0)
		return rc;
	if (*stored && *st->cluster_id && strcmp(stored, st->cluster_id))
		return fail(l, -EXDEV, "the target belongs to the cluster %s, the dump to %s",
			    stored, st->cluster_id);
	return 0;
}

/* Reads the whole input into the engine; the caller wipes on failure. */
static int load_all(struct loader *l, struct kv *kv, const struct dump_load_options *o,
		    struct dump_stats *st)
{
	int batch = o && o->batch > 0 ? o->batch : DEFAULT_BATCH, rc, in_batch = 0;
	uint64_t total = 0, records = 0, generation = 0, next_ino = 0, next_gc = 0;
	struct kv_txn *t = NULL;
	bool unfinished = false, ended = false;
	json_t *h;
	char *line;
	size_t n;

	line = next_line(l, &n, &rc);
	if (!line)
		return rc < 0 ? rc : fail(l, -EINVAL, "empty input: not a kelp dump");
	h = parse_line(l, line, n);
	if (!h)
		return -EINVAL;
	rc = kv->ops->begin(kv, true, &t);
	if (rc == 0)
		rc = check_header(l, h, o, t, st, &total);
	if (rc == 0)
		rc = check_empty(l, t, &unfinished);
	if (rc == 0 && unfinished)
		log_warn("meta load: the target holds an unfinished load: replacing it");
	if (rc == 0) {
		json_t *j;

		j = json_object_get(h, "generation");
		generation = json_is_integer(j) ? (uint64_t)json_integer_value(j) : 0;
		j = json_object_get(h, "next_ino");
		next_ino = json_is_integer(j) ? (uint64_t)json_integer_value(j) : 0;
		j = json_object_get(h, "next_gc");
		next_gc = json_is_integer(j) ? (uint64_t)json_integer_value(j) : 0;
		/* The marker first, in the transaction that found the target empty. */
		rc = kv_put(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY), "1", 1);
	}
	json_decref(h);
	if (t) {
		rc = rc < 0 ? (kv->ops->abort(t), rc) : kv->ops->commit(t);
		t = NULL;
	}
	if (rc < 0)
		return rc;
	/* An unfinished load: start over from nothing (the marker stays until the end). */
	if (unfinished) {
		rc = dump_wipe(kv);
		if (rc == 0 && (rc = kv->ops->begin(kv, true, &t)) == 0) {
			rc = kv_put(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY), "1",
				    1);
			rc = rc < 0 ? (kv->ops->abort(t), rc) : kv->ops->commit(t);
			t = NULL;
		}
		if (rc < 0)
			return rc;
	}
	/* What meta_open created in an empty target goes: the dump has its own. */
	rc = kv->ops->begin(kv, true, &t);
	if (rc < 0)
		return rc;
	{
		uint8_t k[8];

		be64(k, META_ROOT_INO);
		kv_del(t, KV_INODES, k, 8);
		kv_del(t, KV_COUNTERS, "generation", 10);
	}
	while ((line = next_line(l, &n, &rc)) != NULL) {
		json_t *o2;

		if (n == 0 || (n == 1 && line[0] == '\r'))
			continue;
		if (ended) {
			rc = fail(l, -EINVAL, "data after the end line");
			break;
		}
		o2 = parse_line(l, line, n);
		if (!o2) {
			rc = -EINVAL;
			break;
		}
		if (json_object_get(o2, "end")) {
			json_t *e = json_object_get(o2, "end");

			if (!json_is_integer(e) || (uint64_t)json_integer_value(e) != records)
				rc = fail(l, -EINVAL,
					  "the end line counts %s records, %" PRIu64
					  " were read: a damaged dump",
					  json_is_integer(e) ? "other" : "no", records);
			ended = true;
		} else {
			rc = load_record(l, t, o2);
			records++;
			in_batch++;
		}
		json_decref(o2);
		if (rc == 0 && t->failed)
			rc = t->failed;
		if (rc < 0)
			break;
		if (in_batch >= batch) {
			rc = kv->ops->commit(t);
			t = NULL;
			if (rc == 0)
				rc = kv->ops->begin(kv, true, &t);
			if (rc < 0) {
				snprintf(l->err, l->cap, "the engine failed: %s", strerror(-rc));
				break;
			}
			in_batch = 0;
			if (o && o->progress)
				o->progress(o->progress_ctx, records, total);
		}
	}
	if (rc == 0 && !ended)
		rc = fail(l, -EINVAL, "the input ends before the end line: a truncated dump");
	if (rc == 0) {
		uint32_t g = (uint32_t)generation;
		const char *cid =
		    o && o->cluster_id && *o->cluster_id ? o->cluster_id : st->cluster_id;

		st->generation = g;
		if (g == 0)
			rc = fail(l, -EINVAL, "the header has no \"generation\"");
		if (rc == 0)
			rc = kv_put(t, KV_COUNTERS, "generation", 10, &g, 4);
		if (rc == 0)
			rc = kv_raise_id(t, KV_ID_INO,
					 next_ino > l->max_ino ? next_ino : l->max_ino + 1);
		if (rc == 0)
			rc =
			    kv_raise_id(t, KV_ID_GC, next_gc > l->max_gc ? next_gc : l->max_gc + 1);
		if (rc == 0 && *cid)
			rc = kv_set_prop(t, "cluster_id", cid);
		if (rc == 0)
			rc = kv_del(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY));
	}
	if (t) {
		if (rc < 0) {
			kv->ops->abort(t);
		} else {
			rc = kv->ops->commit(t);
			if (rc < 0)
				snprintf(l->err, l->cap, "the engine failed: %s", strerror(-rc));
		}
	}
	st->records = records;
	st->bytes = l->bytes;
	if (rc == 0 && o && o->progress)
		o->progress(o->progress_ctx, records, total);
	return rc;
}

int dump_load(struct kv *kv, dump_in_fn in, void *in_ctx, const struct dump_load_options *o,
	      struct dump_stats *st, char *err, size_t cap)
{
	struct loader l = {.in = in, .in_ctx = in_ctx, .err = err, .cap = cap};
	struct dump_stats local;
	int rc;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	err[0] = '\0';
	l.buf = malloc(LINE_MAX_BYTES + 65536);
	if (!l.buf) {
		snprintf(err, cap, "out of memory");
		return -ENOMEM;
	}
	rc = load_all(&l, kv, o, st);
	free(l.buf);
	if (rc < 0 && rc != -ENOTEMPTY && rc != -EXDEV) {
		/* Whatever part of the dump went in goes (the marker last: until then
		 * nothing mounts it). */
		bool marker = false;
		struct kv_txn *t;

		if (kv->ops->begin(kv, false, &t) == 0) {
			const uint8_t *v;
			size_t vlen;

			marker = kv_get(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY),
					&v, &vlen) == 0;
			kv->ops->abort(t);
		}
		if (marker && dump_wipe(kv) < 0)
			log_error("meta load: could not delete the partly loaded data; the "
				  "metadata stays marked unfinished (load again to replace it)");
	}
	if (rc < 0 && !err[0])
		snprintf(err, cap, "%s", strerror(-rc));
	return rc;
}
