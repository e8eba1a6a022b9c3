/* backup: metadata backups in the cluster (the layout is described in backup.h). */
#include "fuse/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cluster/base/log.h"
#include "cluster/base/sha256.h"
#include "cluster/base/util.h"
#include "cluster/client/client.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

#define DEFAULT_KEEP	  24
#define DEFAULT_PART	  (64ull << 20)
#define MANIFEST_MAX	  (4u << 20)
#define HOLD_MARGIN_NS	  (600ll * 1000000000ll) /* transactions in flight at the snapshot */
#define DIRECTORY_KEY	  1ull
#define MANIFEST_KEY_BASE (1ull << 32)

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, cap, fmt, ap);
	va_end(ap);
}

static void hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static const char *collection_of(const struct backup_options *o)
{
	return o && o->collection && *o->collection ? o->collection : BACKUP_COLLECTION;
}

static int tmp_file(const char *dir)
{
	const char *d = dir && *dir ? dir : getenv("TMPDIR");
	int fd;

	if (!d || !*d)
		d = "/tmp";
	fd = open(d, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/kelp-meta-XXXXXX", d);
		fd = mkstemp(path);
		if (fd >= 0)
			unlink(path);
	}
	return fd < 0 ? -errno : fd;
}

/* ---------------------------------------------------------------- entries */

void backup_entry_release(struct backup_entry *e)
{
	free(e->parts);
	free(e->part_sizes);
	e->parts = NULL;
	e->part_sizes = NULL;
	e->n_parts = 0;
}

static void manifest_release(struct backup_manifest *m)
{
	for (int k = 0; k < m->n; k++)
		backup_entry_release(&m->e[k]);
	free(m->e);
	m->e = NULL;
	m->n = 0;
}

void backup_manifests_free(struct backup_manifest *m, int n)
{
	for (int i = 0; i < n; i++)
		manifest_release(&m[i]);
	free(m);
}

/* ---------------------------------------------------------------- well-known blobs */

static void well_known_fid(uint32_t vid, uint64_t key, char *out)
{
	struct fid f = {.vid = vid, .key = key, .cookie = BACKUP_COOKIE};

	fid_format(&f, out);
}

/* The volumes of the collection, ascending (*out malloc'ed). */
static int collection_volumes(struct kelp_client *c, const char *collection, uint32_t **out, int *n,
			      char *err, size_t cap)
{
	char *body = NULL;
	size_t len = 0;
	long status = 0;
	json_t *j, *dcs, *racks, *nodes, *vols, *v;
	const char *k1, *k2, *k3;
	uint32_t *list = NULL;
	int count = 0, rc;

	*out = NULL;
	*n = 0;
	rc = kelp_client_master_get(c, "/vol/status", true, &status, &body, &len, NULL);
	if (rc < 0 || status != 200) {
		set_err(err, cap, "cannot list the volumes: %s",
			rc < 0 ? kelp_client_error(c) : "the master refused /vol/status");
		free(body);
		return rc < 0 ? rc : -EIO;
	}
	j = json_loadb(body, len, 0, NULL);
	free(body);
	dcs = json_object_get(json_object_get(j, "Volumes"), "DataCenters");
	json_object_foreach(dcs, k1, racks)
	{
		json_object_foreach(racks, k2, nodes)
		{
			json_object_foreach(nodes, k3, vols)
			{
				size_t i;

				json_array_foreach(vols, i, v)
				{
					const char *col =
					    json_string_value(json_object_get(v, "Collection"));
					json_int_t id =
					    json_integer_value(json_object_get(v, "Id"));
					bool dup = false;

					if (!col || strcmp(col, collection) || id <= 0)
						continue;
					for (int x = 0; x < count; x++)
						dup |= list[x] == (uint32_t)id;
					if (dup)
						continue;
					uint32_t *p =
					    realloc(list, (size_t)(count + 1) * sizeof(*p));

					if (!p) {
						json_decref(j);
						free(list);
						return -ENOMEM;
					}
					list = p;
					list[count++] = (uint32_t)id;
				}
			}
		}
	}
	json_decref(j);
	for (int a = 1; a < count; a++)
		for (int b = a; b > 0 && list[b - 1] > list[b]; b--) {
			uint32_t t = list[b];

			list[b] = list[b - 1];
			list[b - 1] = t;
		}
	*out = list;
	*n = count;
	return 0;
}

/* A well-known document: JSON, then "sha256:<hex>\n". NULL when absent or damaged. */
static json_t *read_doc(struct kelp_client *c, const char *fid)
{
	uint8_t *data = NULL, digest[SHA256_DIGEST_LEN];
	size_t len = 0;
	char want[65];
	const char *mark;
	json_t *j = NULL;

	if (kelp_client_read(c, fid, &data, &len, NULL) < 0)
		return NULL;
	mark = len ? memmem(data, len, "\nsha256:", 8) : NULL;
	if (mark && (size_t)((const uint8_t *)mark - data) + 8 + 64 <= len) {
		size_t body = (size_t)((const uint8_t *)mark - data);

		sha256(data, body, digest);
		hex(digest, SHA256_DIGEST_LEN, want);
		if (!memcmp(mark + 8, want, 64))
			j = json_loadb((const char *)data, body, 0, NULL);
		else
			log_warn("backup: the copy of %s is damaged (checksum); ignored", fid);
	}
	free(data);
	return j;
}

/* Writes a document to key in the two lowest volumes that take it. */
static int write_doc(struct kelp_client *c, const uint32_t *vols, int n, uint64_t key, json_t *doc,
		     char *err, size_t cap)
{
	char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER), *blob, hexd[65];
	uint8_t digest[SHA256_DIGEST_LEN];
	size_t tlen, blen;
	int written = 0, rc = -ENOENT;

	if (!text)
		return -ENOMEM;
	tlen = strlen(text);
	blob = malloc(tlen + 80);
	if (!blob) {
		free(text);
		return -ENOMEM;
	}
	sha256(text, tlen, digest);
	hex(digest, SHA256_DIGEST_LEN, hexd);
	blen = (size_t)sprintf(blob, "%s\nsha256:%s\n", text, hexd);
	for (int i = 0; i < n && written < 2; i++) {
		char fid[FID_MAX_LEN];
		struct kelp_upload_options uo = {
		    .name = "kelp-meta-manifest.json", .mime = "application/json", .fsync = true};
		struct kelp_upload_result ur;

		well_known_fid(vols[i], key, fid);
		rc = kelp_client_put_at(c, fid, &uo, blob, blen, &ur);
		if (rc == 0)
			written++;
		else
			log_warn("backup: cannot write %s: %s", fid, kelp_client_error(c));
	}
	free(blob);
	free(text);
	if (!written) {
		set_err(err, cap, "cannot write the manifest into any volume of the collection");
		return rc < 0 ? rc : -EIO;
	}
	return 0;
}

static int parse_entry(json_t *j, struct backup_entry *e)
{
	json_t *parts = json_object_get(j, "parts"), *p;
	const char *sha = json_string_value(json_object_get(j, "sha256"));
	const char *eng = json_string_value(json_object_get(j, "engine"));
	size_t i;

	memset(e, 0, sizeof(*e));
	if (!json_is_array(parts) || !sha || strlen(sha) != 64 || json_array_size(parts) == 0 ||
	    json_array_size(parts) > BACKUP_MAX_PARTS)
		return -EINVAL;
	e->time_ns = json_integer_value(json_object_get(j, "time"));
	e->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
	e->records = (uint64_t)json_integer_value(json_object_get(j, "records"));
	e->inodes = (uint64_t)json_integer_value(json_object_get(j, "inodes"));
	snprintf(e->sha256, sizeof(e->sha256), "%s", sha);
	snprintf(e->engine, sizeof(e->engine), "%s", eng ? eng : "");
	e->parts = calloc(json_array_size(parts), sizeof(*e->parts));
	e->part_sizes = calloc(json_array_size(parts), sizeof(*e->part_sizes));
	if (!e->parts || !e->part_sizes) {
		backup_entry_release(e);
		return -ENOMEM;
	}
	json_array_foreach(parts, i, p)
	{
		const char *fid = json_string_value(json_object_get(p, "fid"));

		if (!fid || strlen(fid) >= FID_MAX_LEN) {
			backup_entry_release(e);
			return -EINVAL;
		}
		snprintf(e->parts[i], FID_MAX_LEN, "%s", fid);
		e->part_sizes[i] = (uint64_t)json_integer_value(json_object_get(p, "size"));
		e->n_parts++;
	}
	return 0;
}

static int parse_manifest(json_t *j, struct backup_manifest *m)
{
	json_t *list = json_object_get(j, "backups"), *b;
	const char *fs = json_string_value(json_object_get(j, "fs"));
	const char *cid = json_string_value(json_object_get(j, "cluster_id"));
	size_t i;

	memset(m, 0, sizeof(*m));
	if (json_integer_value(json_object_get(j, "kelp_meta_backup")) != 1 || !fs ||
	    !json_is_array(list))
		return -EINVAL;
	m->fs = (uint32_t)strtoul(fs, NULL, 16);
	snprintf(m->cluster_id, sizeof(m->cluster_id), "%s", cid ? cid : "");
	m->updated_ns = json_integer_value(json_object_get(j, "updated"));
	m->e = calloc(json_array_size(list) + 1, sizeof(*m->e));
	if (!m->e)
		return -ENOMEM;
	json_array_foreach(list, i, b)
	{
		if (parse_entry(b, &m->e[m->n]) == 0)
			m->n++;
	}
	return 0;
}

static json_t *entry_json(const struct backup_entry *e)
{
	json_t *parts = json_array();

	for (int i = 0; i < e->n_parts; i++)
		json_array_append_new(parts, json_pack("{s:s,s:I}", "fid", e->parts[i], "size",
						       (json_int_t)e->part_sizes[i]));
	return json_pack("{s:I,s:I,s:s,s:I,s:I,s:s,s:o}", "time", (json_int_t)e->time_ns, "size",
			 (json_int_t)e->size, "sha256", e->sha256, "records",
			 (json_int_t)e->records, "inodes", (json_int_t)e->inodes, "engine",
			 e->engine, "parts", parts);
}

/* The newest copy of fs's manifest among the volumes; -ENOENT when there is none. */
static int read_manifest(struct kelp_client *c, const uint32_t *vols, int n, uint32_t fs,
			 struct backup_manifest *out)
{
	bool found = false;

	memset(out, 0, sizeof(*out));
	for (int i = 0; i < n; i++) {
		char fid[FID_MAX_LEN];
		struct backup_manifest m;
		json_t *j;

		well_known_fid(vols[i], MANIFEST_KEY_BASE + fs, fid);
		j = read_doc(c, fid);
		if (!j)
			continue;
		if (parse_manifest(j, &m) == 0 && m.fs == fs &&
		    (!found || m.updated_ns > out->updated_ns)) {
			if (found)
				manifest_release(out);
			*out = m;
			found = true;
		} else {
			manifest_release(&m);
		}
		json_decref(j);
	}
	return found ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------- backup */

struct gz_out {
	int fd;
	z_stream z;
	struct sha256_ctx sha;
	uint64_t size;
	uint8_t buf[1 << 16];
};

static int gz_emit(struct gz_out *g, int flush)
{
	int zr;

	do {
		size_t have;

		g->z.next_out = g->buf;
		g->z.avail_out = sizeof(g->buf);
		zr = deflate(&g->z, flush);
		if (zr == Z_STREAM_ERROR)
			return -EIO;
		have = sizeof(g->buf) - g->z.avail_out;
		if (have) {
			int rc = pwrite_all(g->fd, g->buf, have, g->size);

			if (rc < 0)
				return rc;
			sha256_update(&g->sha, g->buf, have);
			g->size += have;
		}
	} while (g->z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
	return 0;
}

static int gz_write(void *ctx, const void *buf, size_t n)
{
	struct gz_out *g = ctx;

	g->z.next_in = (Bytef *)buf;
	g->z.avail_in = (uInt)n;
	return gz_emit(g, Z_NO_FLUSH);
}

static int upload_parts(struct kelp_client *c, const struct backup_options *o, int fd,
			uint64_t size, uint32_t fs, int64_t time_ns, struct backup_entry *e,
			char *err, size_t cap)
{
	uint64_t part = o && o->part_size ? o->part_size : DEFAULT_PART;
	int n = (int)((size + part - 1) / part);

	if (n > BACKUP_MAX_PARTS) {
		set_err(err, cap, "the dump is too big for %d parts", BACKUP_MAX_PARTS);
		return -EFBIG;
	}
	e->parts = calloc((size_t)n, sizeof(*e->parts));
	e->part_sizes = calloc((size_t)n, sizeof(*e->part_sizes));
	if (!e->parts || !e->part_sizes)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		struct kelp_assign_request ar = {.collection = collection_of(o),
						 .replication = o ? o->replication : NULL};
		char name[96];
		struct kelp_upload_options uo = {.name = name, .fsync = true};
		struct kelp_put_result pr;
		uint64_t off = (uint64_t)i * part, len = size - off < part ? size - off : part;
		int rc;

		snprintf(name, sizeof(name), "kelp-meta-%08x-%" PRId64 ".json.gz.%d", fs,
			 time_ns / 1000000000, i);
		rc = kelp_client_put_fd(c, &ar, &uo, fd, off, len, &pr);
		if (rc < 0) {
			set_err(err, cap, "cannot store part %d of the backup: %s", i,
				kelp_client_error(c));
			return rc;
		}
		snprintf(e->parts[i], FID_MAX_LEN, "%s", pr.assign.fid);
		e->part_sizes[i] = len;
		e->n_parts++;
	}
	return 0;
}

static int delete_parts(struct kelp_client *c, const struct backup_entry *e)
{
	int failed = 0;

	for (int i = 0; i < e->n_parts; i++) {
		int rc = kelp_client_delete(c, e->parts[i], NULL, NULL);

		if (rc < 0 && rc != -ENOENT) {
			log_warn("backup: cannot delete %s of an old backup: %s", e->parts[i],
				 kelp_client_error(c));
			failed++;
		}
	}
	return failed;
}

/* Adds fs to the directory of filesystems if it is not there. */
static int update_directory(struct kelp_client *c, const uint32_t *vols, int n, uint32_t fs,
			    char *err, size_t cap)
{
	char name[16];
	json_t *dir = NULL, *list;
	size_t i;
	bool present = false;
	json_t *v;
	int rc;

	snprintf(name, sizeof(name), "%08x", fs);
	for (int k = 0; k < n && !dir; k++) {
		char fid[FID_MAX_LEN];

		well_known_fid(vols[k], DIRECTORY_KEY, fid);
		dir = read_doc(c, fid);
		if (dir && !json_is_array(json_object_get(dir, "filesystems"))) {
			json_decref(dir);
			dir = NULL;
		}
	}
	if (!dir)
		dir = json_pack("{s:i,s:[]}", "kelp_meta_backup_directory", 1, "filesystems");
	list = json_object_get(dir, "filesystems");
	json_array_foreach(list, i, v) present |=
	    json_is_string(v) && !strcmp(json_string_value(v), name);
	if (present) {
		json_decref(dir);
		return 0;
	}
	json_array_append_new(list, json_string(name));
	rc = write_doc(c, vols, n, DIRECTORY_KEY, dir, err, cap);
	json_decref(dir);
	return rc;
}

/*
 * One small write transaction, run again (up to 50 times, 10 s) after a conflict with
 * another mount's or a lost connection. only_if_none: leave a hold that is still on.
 * (oldest_ns is given without the margin.)
 */
static int set_hold(struct kv *kv, int64_t oldest_ns, int64_t until_ns, bool only_if_none)
{
	uint8_t v[16];
	int rc = -EAGAIN;

	be64(v, (uint64_t)(oldest_ns - HOLD_MARGIN_NS));
	be64(v + 8, (uint64_t)until_ns);
	for (int attempt = 0; attempt < 50 && (rc == -EAGAIN || rc == -ENOTCONN); attempt++) {
		struct kv_txn *t;

		if (attempt)
			usleep(200000);
		rc = kv->ops->begin(kv, true, &t);
		if (rc < 0)
			continue;
		if (only_if_none) {
			const uint8_t *cur;
			size_t clen;

			rc = kv_get(t, KV_COUNTERS, META_BACKUP_HOLD_KEY,
				    strlen(META_BACKUP_HOLD_KEY), &cur, &clen);
			if (rc == 0 && clen == 16 && (int64_t)rd64(cur + 8) > (int64_t)now_ns()) {
				kv->ops->abort(t);
				return 0; /* a hold is on: it covers this backup already */
			}
		}
		rc = kv_put(t, KV_COUNTERS, META_BACKUP_HOLD_KEY, strlen(META_BACKUP_HOLD_KEY), v,
			    16);
		if (rc < 0 || t->failed) {
			rc = rc < 0 ? rc : t->failed;
			kv->ops->abort(t);
			continue;
		}
		rc = kv->ops->commit(t);
	}
	return rc;
}

int backup_run(struct kv *kv, struct kelp_client *c, const struct backup_options *o,
	       struct backup_entry *made, int *removed, char *err, size_t cap)
{
	struct gz_out *g = calloc(1, sizeof(*g));
	struct backup_entry e = {0};
	struct backup_manifest old = {0};
	struct dump_stats st;
	uint8_t digest[SHA256_DIGEST_LEN];
	uint32_t *vols = NULL;
	int nvols = 0, keep = o && o->keep > 0 ? o->keep : DEFAULT_KEEP, rc, dropped = 0;
	json_t *doc = NULL, *list;
	char fsname[16];
	bool have_old = false;

	err[0] = '\0';
	if (removed)
		*removed = 0;
	if (!g)
		return -ENOMEM;
	g->fd = tmp_file(o ? o->tmp_dir : NULL);
	if (g->fd < 0) {
		rc = g->fd;
		set_err(err, cap, "cannot create a temporary file: %s", strerror(-rc));
		free(g);
		return rc;
	}
	sha256_init(&g->sha);
	if (deflateInit2(&g->z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		rc = -ENOMEM;
		goto out;
	}
	/* 0. blobs queued from now on stay while this backup is made (the first backup
	 * has no hold yet; gc runs every second) */
	if (o && o->hold_ns > 0) {
		rc = set_hold(kv, (int64_t)now_ns(), (int64_t)now_ns() + o->hold_ns, true);
		if (rc < 0) {
			deflateEnd(&g->z);
			set_err(err, cap, "cannot record the gc hold: %s", strerror(-rc));
			goto out;
		}
	}
	/* 1. the dump, compressed, into the temporary file (one read transaction) */
	rc = dump_write(kv, gz_write, g, o ? o->progress : NULL, o ? o->progress_ctx : NULL, &st);
	if (rc == 0) {
		g->z.next_in = NULL;
		g->z.avail_in = 0;
		rc = gz_emit(g, Z_FINISH);
	}
	deflateEnd(&g->z);
	if (rc < 0) {
		set_err(err, cap, "cannot dump the metadata: %s", strerror(-rc));
		goto out;
	}
	sha256_final(&g->sha, digest);
	hex(digest, SHA256_DIGEST_LEN, e.sha256);
	e.time_ns = st.time_ns;
	e.size = g->size;
	e.records = st.records;
	e.inodes = st.inodes;
	snprintf(e.engine, sizeof(e.engine), "%s", kv->ops->name);
	snprintf(fsname, sizeof(fsname), "%08x", st.generation);
	/* 2. its parts into the collection (the first assign creates the collection) */
	rc = upload_parts(c, o, g->fd, g->size, st.generation, st.time_ns, &e, err, cap);
	if (rc < 0)
		goto out;
	/* 3. the manifest: the new backup first, then the kept older ones */
	rc = collection_volumes(c, collection_of(o), &vols, &nvols, err, cap);
	if (rc < 0)
		goto out;
	have_old = read_manifest(c, vols, nvols, st.generation, &old) == 0;
	list = json_array();
	json_array_append_new(list, entry_json(&e));
	for (int i = 0; have_old && i < old.n; i++)
		if (i + 1 < keep)
			json_array_append_new(list, entry_json(&old.e[i]));
	doc = json_pack("{s:i,s:s,s:s,s:I,s:o}", "kelp_meta_backup", 1, "fs", fsname, "cluster_id",
			st.cluster_id, "updated", (json_int_t)now_ns(), "backups", list);
	rc = doc ? write_doc(c, vols, nvols, MANIFEST_KEY_BASE + st.generation, doc, err, cap)
		 : -ENOMEM;
	if (rc == 0)
		rc = update_directory(c, vols, nvols, st.generation, err, cap);
	if (rc < 0) {
		delete_parts(c, &e); /* not listed anywhere: would leak */
		goto out;
	}
	/* 4. the gc hold: blobs a kept backup may reference stay */
	if (o && o->hold_ns > 0) {
		int64_t oldest = e.time_ns;
		int kept = have_old ? (old.n < keep - 1 ? old.n : keep - 1) : 0;

		if (kept > 0)
			oldest = old.e[kept - 1].time_ns;
		rc = set_hold(kv, oldest, (int64_t)now_ns() + o->hold_ns, false);
		if (rc < 0) {
			set_err(err, cap, "cannot record the gc hold: %s", strerror(-rc));
			goto out;
		}
	}
	/* 5. the backups no longer listed */
	for (int i = keep - 1; have_old && i < old.n; i++) {
		delete_parts(c, &old.e[i]);
		dropped++;
	}
	if (removed)
		*removed = dropped;
out:
	json_decref(doc);
	free(vols);
	if (have_old)
		manifest_release(&old);
	sha256_release(&g->sha);
	close(g->fd);
	free(g);
	if (rc == 0 && made)
		*made = e;
	else
		backup_entry_release(&e);
	return rc;
}

/* ---------------------------------------------------------------- find, restore */

int backup_find(struct kelp_client *c, const char *collection, struct backup_manifest **out, int *n,
		char *err, size_t cap)
{
	const char *col = collection && *collection ? collection : BACKUP_COLLECTION;
	uint32_t *vols = NULL, seen[256];
	int nvols = 0, nseen = 0, rc;
	struct backup_manifest *list = NULL;
	int count = 0;

	*out = NULL;
	*n = 0;
	err[0] = '\0';
	rc = collection_volumes(c, col, &vols, &nvols, err, cap);
	if (rc < 0)
		return rc;
	for (int k = 0; k < nvols; k++) {
		char fid[FID_MAX_LEN];
		json_t *dir, *v;
		size_t i;

		well_known_fid(vols[k], DIRECTORY_KEY, fid);
		dir = read_doc(c, fid);
		json_array_foreach(json_object_get(dir, "filesystems"), i, v)
		{
			uint32_t fs;
			bool dup = false;

			if (!json_is_string(v))
				continue;
			fs = (uint32_t)strtoul(json_string_value(v), NULL, 16);
			for (int x = 0; x < nseen; x++)
				dup |= seen[x] == fs;
			if (!dup && nseen < 256)
				seen[nseen++] = fs;
		}
		json_decref(dir);
	}
	for (int x = 0; x < nseen; x++) {
		struct backup_manifest m;

		if (read_manifest(c, vols, nvols, seen[x], &m) < 0)
			continue;
		struct backup_manifest *p = realloc(list, (size_t)(count + 1) * sizeof(*p));

		if (!p) {
			manifest_release(&m);
			rc = -ENOMEM;
			break;
		}
		list = p;
		list[count++] = m;
	}
	free(vols);
	if (rc < 0) {
		backup_manifests_free(list, count);
		return rc;
	}
	*out = list;
	*n = count;
	return 0;
}

struct gz_in {
	z_stream z;
	int fd;
	uint64_t off, size;
	uint8_t buf[1 << 16];
	bool done;
};

static ssize_t gz_read(void *ctx, void *out, size_t cap)
{
	struct gz_in *g = ctx;

	if (g->done)
		return 0;
	g->z.next_out = out;
	g->z.avail_out = (uInt)cap;
	while (g->z.avail_out == cap) {
		int zr;

		if (g->z.avail_in == 0 && g->off < g->size) {
			size_t n =
			    g->size - g->off < sizeof(g->buf) ? g->size - g->off : sizeof(g->buf);
			int rc = pread_all(g->fd, g->buf, n, g->off);

			if (rc < 0)
				return rc;
			g->off += n;
			g->z.next_in = g->buf;
			g->z.avail_in = (uInt)n;
		}
		zr = inflate(&g->z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END) {
			g->done = true;
			break;
		}
		if (zr != Z_OK && !(zr == Z_BUF_ERROR && g->z.avail_in == 0 && g->off < g->size)) {
			log_error("backup: the compressed dump is damaged (%s)",
				  g->z.msg ? g->z.msg : "inflate");
			return -EINVAL;
		}
	}
	return (ssize_t)(cap - g->z.avail_out);
}

/* Fetches every part into fd, checking sizes and the SHA-256. */
static int fetch(struct kelp_client *c, const struct backup_entry *e, int fd, char *why, size_t cap)
{
	struct sha256_ctx sha;
	uint8_t digest[SHA256_DIGEST_LEN], buf[1 << 16];
	char got[65];
	uint64_t total = 0;

	for (int i = 0; i < e->n_parts; i++) {
		uint64_t written = 0;
		int rc = kelp_client_read_to_fd(c, e->parts[i], fd, &written, NULL);

		if (rc < 0) {
			set_err(why, cap, "part %s cannot be read (%s)", e->parts[i],
				kelp_client_error(c));
			return rc;
		}
		if (written != e->part_sizes[i]) {
			set_err(why, cap,
				"part %s has %" PRIu64 " bytes, the manifest says %" PRIu64,
				e->parts[i], written, e->part_sizes[i]);
			return -EIO;
		}
		total += written;
	}
	if (total != e->size) {
		set_err(why, cap, "%" PRIu64 " bytes, the manifest says %" PRIu64, total, e->size);
		return -EIO;
	}
	sha256_init(&sha);
	for (uint64_t off = 0; off < total;) {
		size_t n = total - off < sizeof(buf) ? total - off : sizeof(buf);
		int rc = pread_all(fd, buf, n, off);

		if (rc < 0) {
			sha256_release(&sha);
			return rc;
		}
		sha256_update(&sha, buf, n);
		off += n;
	}
	sha256_final(&sha, digest);
	sha256_release(&sha);
	hex(digest, SHA256_DIGEST_LEN, got);
	if (strcmp(got, e->sha256)) {
		set_err(why, cap,
			"checksum mismatch (SHA-256 %.16s..., the manifest says %.16s...)", got,
			e->sha256);
		return -EIO;
	}
	return 0;
}

static void fmt_time(int64_t ns, char *out, size_t cap)
{
	time_t s = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int backup_restore(struct kv *kv, struct kelp_client *c, const struct backup_manifest *m, int first,
		   const char *cluster_id, const char *tmp_dir, const struct dump_load_options *lo,
		   int *used, char *err, size_t cap)
{
	int rc = -ENOENT;

	err[0] = '\0';
	for (int i = first; i < m->n; i++) {
		const struct backup_entry *e = &m->e[i];
		struct dump_load_options o = lo ? *lo : (struct dump_load_options){0};
		struct gz_in *g;
		char why[512] = "", when[32];
		int fd = tmp_file(tmp_dir);

		fmt_time(e->time_ns, when, sizeof(when));
		if (fd < 0) {
			set_err(err, cap, "cannot create a temporary file: %s", strerror(-fd));
			return fd;
		}
		rc = fetch(c, e, fd, why, sizeof(why));
		if (rc == 0) {
			g = calloc(1, sizeof(*g));
			if (!g) {
				close(fd);
				return -ENOMEM;
			}
			g->fd = fd;
			g->size = e->size;
			if (inflateInit2(&g->z, 15 + 16) != Z_OK) {
				free(g);
				close(fd);
				return -ENOMEM;
			}
			o.cluster_id = cluster_id;
			rc = dump_load(kv, gz_read, g, &o, NULL, why, sizeof(why));
			inflateEnd(&g->z);
			free(g);
			/* Not the backup's fault: stop, do not fall back. */
			if (rc == -ENOTEMPTY || rc == -EXDEV) {
				close(fd);
				set_err(err, cap, "%s", why);
				return rc;
			}
		}
		close(fd);
		if (rc == 0) {
			if (used)
				*used = i;
			return 0;
		}
		if (i + 1 < m->n) {
			char prev[32];

			fmt_time(m->e[i + 1].time_ns, prev, sizeof(prev));
			log_warn("WARNING: the backup of %s is damaged: %s; falling back to the "
				 "previous backup, of %s",
				 when, why, prev);
		} else {
			set_err(err, cap,
				"the backup of %s is damaged: %s; no older backup is left to try",
				when, why);
		}
	}
	if (!err[0])
		set_err(err, cap, "no backup to restore");
	return rc < 0 ? rc : -ENOENT;
}
