/*
 * Unit tests for cluster/volume: one SeaweedFS-format volume (.dat + .idx), its write,
 * read and delete paths, crash repair at open, vacuum (including a crash at every step of
 * its commit), TTL, limits, and the real volumes written by SeaweedFS (reference section
 * 4; files in KELP_COMPAT_DIR).
 *
 * Each test gets a fresh directory under /tmp, removed at the end. A "model" records
 * what every key should hold (cookie, length, seed of its bytes, live or deleted); the
 * checks read every key of the model back, byte for byte. Files are damaged by hand with
 * plain POSIX calls, so the repair code is tested against the bytes, not against itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cluster/base/log.h"
#include "cluster/storage/needle.h"
#include "cluster/storage/volume.h"

#define VID 1

/* ---- helpers: files ------------------------------------------------------------------ */

static int setup_dir(void **state)
{
	char *dir = strdup("/tmp/kelp-test-volume-XXXXXX");

	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	char *dir = *state;
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];

	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
	free(dir);
	return 0;
}

/* <dir>/<vid><ext> in a static buffer (one of four, so a few can be used at once). */
static const char *vpath(const char *dir, uint32_t vid, const char *ext)
{
	static char bufs[4][4096];
	static int next;
	char *buf = bufs[next++ % 4];

	assert_int_equal(volume_file_name(dir, NULL, vid, ext, buf, sizeof(bufs[0])), 0);
	return buf;
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void truncate_file(const char *path, uint64_t size)
{
	assert_int_equal(truncate(path, (off_t)size), 0);
}

static void write_at(const char *path, uint64_t offset, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
	close(fd);
}

static void append_file(const char *path, const void *buf, size_t len)
{
	write_at(path, file_size(path), buf, len);
}

static uint8_t read_byte(const char *path, uint64_t offset)
{
	int fd = open(path, O_RDONLY);
	uint8_t b = 0;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)offset), 1);
	close(fd);
	return b;
}

static void flip_byte(const char *path, uint64_t offset)
{
	uint8_t b = read_byte(path, offset) ^ 0x5a;

	write_at(path, offset, &b, 1);
}

static void copy_file(const char *from, const char *to)
{
	uint8_t buf[1 << 16];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	assert_true(in >= 0);
	assert_true(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	close(out);
}

static void set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};

	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* The last .idx entry for key: its offset (bytes) and Size. False if none. */
static bool idx_lookup(const char *dir, uint32_t vid, uint64_t key, uint64_t *offset,
		       uint32_t *size)
{
	const char *path = vpath(dir, vid, ".idx");
	uint64_t len = file_size(path);
	int fd = open(path, O_RDONLY);
	bool found = false;

	assert_true(fd >= 0);
	for (uint64_t pos = 0; pos + VOLUME_IDX_ENTRY_SIZE <= len; pos += VOLUME_IDX_ENTRY_SIZE) {
		uint8_t e[VOLUME_IDX_ENTRY_SIZE];

		assert_int_equal(pread(fd, e, sizeof(e), (off_t)pos), (ssize_t)sizeof(e));
		if (get_be64(e) == key) {
			*offset = (uint64_t)get_be32(e + 8) * 8;
			*size = get_be32(e + 12);
			found = true;
		}
	}
	close(fd);
	return found;
}

static void assert_no_compaction_files(const char *dir, uint32_t vid)
{
	assert_false(file_exists(vpath(dir, vid, ".cpd")));
	assert_false(file_exists(vpath(dir, vid, ".cpx")));
	assert_false(file_exists(vpath(dir, vid, ".cpc")));
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- helpers: volumes and blobs --------------------------------------------------------- */

static struct volume_options create_opts(void)
{
	struct volume_options o;

	memset(&o, 0, sizeof(o));
	o.create = true;
	return o;
}

static struct volume *open_vol(const char *dir, uint32_t vid, const struct volume_options *opt)
{
	struct volume *v = NULL;

	assert_int_equal(volume_open(dir, NULL, vid, opt, &v), 0);
	assert_non_null(v);
	return v;
}

/* Closes and reopens without create: a missing .dat must not silently become a new one. */
static struct volume *reopen_vol(struct volume *v, const char *dir, uint32_t vid)
{
	struct volume_options o = create_opts();

	o.create = false;
	volume_close(v);
	return open_vol(dir, vid, &o);
}

/* Deterministic pseudo-random bytes for (seed, len). */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x1234567;

	for (size_t i = 0; i < len; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		buf[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
	}
}

static uint8_t *make_data(size_t len, uint64_t seed)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	fill(p, len, seed);
	return p;
}

static uint32_t cookie_of(uint64_t key)
{
	return (uint32_t)(key * 2654435761u) ^ 0x5eed5eedu;
}

/* Writes key from memory with a name; returns volume_write's result. */
static int put_full(struct volume *v, uint64_t key, uint32_t cookie, const uint8_t *data,
		    uint32_t len, bool *unchanged, struct needle *out)
{
	struct needle n;
	struct volume_data d = {.mem = data ? data : (const uint8_t *)"",
				.fd = -1,
				.len = len,
				.crc = crc32c(0, data, len)};
	char name[32];
	int ret;

	memset(&n, 0, sizeof(n));
	n.cookie = cookie;
	n.id = key;
	snprintf(name, sizeof(name), "file-%" PRIu64, key);
	n.name = name;
	n.name_len = (uint8_t)strlen(name);
	n.flags = NEEDLE_FLAG_HAS_LAST_MOD;
	n.last_modified = 1700000000 + key;
	ret = volume_write(v, &n, &d, false, unchanged);
	if (out) {
		*out = n;
		out->name = NULL; /* points at our stack */
	}
	return ret;
}

static int put(struct volume *v, uint64_t key, uint32_t cookie, const uint8_t *data, uint32_t len)
{
	return put_full(v, key, cookie, data, len, NULL, NULL);
}

/* A copy of the data of a blob, from memory or from its fd. */
static uint8_t *blob_data(const struct volume_blob *b)
{
	uint8_t *p = malloc(b->n.data_size ? b->n.data_size : 1);

	assert_non_null(p);
	if (b->n.data_size == 0)
		return p;
	if (b->n.data) {
		memcpy(p, b->n.data, b->n.data_size);
	} else {
		size_t done = 0;

		assert_true(b->fd >= 0);
		while (done < b->n.data_size) {
			ssize_t n = pread(b->fd, p + done, b->n.data_size - done,
					  (off_t)(b->data_offset + done));

			assert_true(n > 0);
			done += (size_t)n;
		}
	}
	return p;
}

static int read_status(struct volume *v, uint64_t key, uint32_t cookie)
{
	struct volume_blob b;
	int ret = volume_read(v, key, cookie, &b);

	if (ret == 0)
		volume_blob_release(&b);
	return ret;
}

/* Reads key and checks its bytes (and its name, as put_full writes it). */
static void expect_blob(struct volume *v, uint64_t key, uint32_t cookie, const uint8_t *data,
			uint32_t len)
{
	struct volume_blob b;
	char name[32];
	uint8_t *got;
	int ret = volume_read(v, key, cookie, &b);

	if (ret != 0)
		fail_msg("key %" PRIu64 ": volume_read returned %d (%s)", key, ret, strerror(-ret));
	assert_true(b.n.id == key);
	assert_int_equal(b.n.cookie, cookie);
	assert_int_equal(b.n.data_size, len);
	got = blob_data(&b);
	if (len > 0 && memcmp(got, data, len) != 0)
		fail_msg("key %" PRIu64 ": data differs", key);
	if (len > 0) {
		snprintf(name, sizeof(name), "file-%" PRIu64, key);
		assert_int_equal(b.n.name_len, strlen(name));
		assert_memory_equal(b.n.name, name, b.n.name_len);
		assert_true(needle_checksum_matches(b.n.checksum, crc32c(0, data, len)));
	}
	free(got);
	volume_blob_release(&b);
	assert_int_equal(b.fd, -1);
	assert_null(b.buf);
}

/* ---- helpers: the model -------------------------------------------------------------- */

enum { KEY_NEVER = 0, KEY_LIVE, KEY_DELETED };

struct model {
	size_t cap;
	int *state;
	uint32_t *cookie, *len;
	uint64_t *seed;
};

static void model_init(struct model *m, size_t cap)
{
	m->cap = cap;
	m->state = calloc(cap, sizeof(*m->state));
	m->cookie = calloc(cap, sizeof(*m->cookie));
	m->len = calloc(cap, sizeof(*m->len));
	m->seed = calloc(cap, sizeof(*m->seed));
	assert_true(m->state && m->cookie && m->len && m->seed);
}

static void model_free(struct model *m)
{
	free(m->state);
	free(m->cookie);
	free(m->len);
	free(m->seed);
}

static void model_put_cookie(struct volume *v, struct model *m, uint64_t key, uint32_t len,
			     uint64_t seed, uint32_t cookie)
{
	uint8_t *data = make_data(len, seed);
	int ret;

	assert_true(key < m->cap);
	ret = put(v, key, cookie, data, len);
	if (ret != 0)
		fail_msg("write of key %" PRIu64 " returned %d", key, ret);
	free(data);
	m->state[key] = KEY_LIVE;
	m->cookie[key] = cookie;
	m->len[key] = len;
	m->seed[key] = seed;
}

static void model_put(struct volume *v, struct model *m, uint64_t key, uint32_t len, uint64_t seed)
{
	model_put_cookie(v, m, key, len, seed, cookie_of(key));
}

static void model_del(struct volume *v, struct model *m, uint64_t key)
{
	uint32_t size = 0;

	assert_int_equal(m->state[key], KEY_LIVE);
	assert_int_equal(volume_delete(v, key, m->cookie[key], &size), 0);
	m->state[key] = KEY_DELETED;
}

static void model_check(struct volume *v, const struct model *m)
{
	for (size_t key = 1; key < m->cap; key++) {
		if (m->state[key] == KEY_LIVE) {
			uint8_t *data = make_data(m->len[key], m->seed[key]);

			expect_blob(v, key, m->cookie[key], data, m->len[key]);
			free(data);
		} else if (m->state[key] == KEY_DELETED) {
			int ret = read_status(v, key, m->cookie[key]);

			if (ret != -ENOENT)
				fail_msg(
				    "deleted key %zu: volume_read returned %d, expected -ENOENT",
				    key, ret);
		}
	}
}

/* Like model_check, but counts (and prints) the mismatches instead of failing, so that a
 * test can release everything before it fails. */
static size_t model_count_bad(struct volume *v, const struct model *m)
{
	size_t bad = 0;

	for (size_t key = 1; key < m->cap; key++) {
		struct volume_blob b;
		int ret;

		if (m->state[key] == KEY_NEVER)
			continue;
		ret = volume_read(v, key, m->cookie[key], &b);
		if (m->state[key] == KEY_DELETED) {
			if (ret == 0)
				volume_blob_release(&b);
			if (ret != -ENOENT) {
				printf("deleted key %zu: volume_read returned %d\n", key, ret);
				bad++;
			}
			continue;
		}
		if (ret == 0) {
			uint8_t *want = make_data(m->len[key], m->seed[key]), *got = blob_data(&b);

			if (b.n.data_size != m->len[key] ||
			    (m->len[key] && memcmp(got, want, m->len[key]) != 0))
				ret = -EILSEQ;
			free(want);
			free(got);
			volume_blob_release(&b);
		}
		if (ret != 0) {
			printf("key %zu: volume_read returned %d (%s)\n", key, ret, strerror(-ret));
			bad++;
		}
	}
	return bad;
}

static size_t model_live(const struct model *m)
{
	size_t n = 0;

	for (size_t key = 1; key < m->cap; key++)
		n += m->state[key] == KEY_LIVE;
	return n;
}

/* ---- open, names, super block ---------------------------------------------------------- */

static void test_open_and_names(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume_info info;
	struct volume *v = NULL;
	char buf[4096], expect[4096];
	uint8_t sb[8];
	int fd;

	/* file names */
	assert_int_equal(volume_file_name("/d", "pics", 7, ".dat", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/d/pics_7.dat");
	assert_int_equal(volume_file_name("/d", "", 7, ".idx", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/d/7.idx");
	assert_int_equal(volume_file_name("/d", NULL, 4294967295u, ".cpd", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/d/4294967295.cpd");
	assert_int_equal(volume_file_name("/d", "pics", 7, ".dat", buf, 13), -ENAMETOOLONG);
	assert_int_equal(volume_file_name("/d", "pics", 7, ".dat", buf, 14), 0);

	/* missing, without create */
	o.create = false;
	assert_int_equal(volume_open(dir, NULL, 3, &o, &v), -ENOENT);
	assert_false(file_exists(vpath(dir, 3, ".dat")));
	assert_false(file_exists(vpath(dir, 3, ".idx")));

	/* a new volume in a collection: super block from the options */
	o.create = true;
	o.replica_placement = 12;
	o.ttl.count = 3;
	o.ttl.unit = 2;
	assert_int_equal(volume_open(dir, "pics", 9, &o, &v), 0);
	assert_int_equal(volume_id(v), 9);
	assert_string_equal(volume_collection(v), "pics");
	volume_get_info(v, &info);
	assert_int_equal(info.id, 9);
	assert_string_equal(info.collection, "pics");
	assert_int_equal(info.version, 3);
	assert_int_equal(info.replica_placement, 12);
	assert_int_equal(info.ttl.count, 3);
	assert_int_equal(info.ttl.unit, 2);
	assert_int_equal(info.size, VOLUME_SUPER_BLOCK_SIZE);
	assert_int_equal(info.file_count, 0);
	assert_int_equal(info.live_count, 0);
	assert_int_equal(info.compact_revision, 0);
	assert_false(info.read_only);
	assert_false(info.compacting);
	assert_true(volume_garbage_ratio(v) == 0.0);
	snprintf(expect, sizeof(expect), "%s/pics_9.dat", dir);
	assert_int_equal(file_size(expect), 8);
	fd = open(expect, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, sb, 8), 8);
	close(fd);
	assert_int_equal(sb[0], 3);
	assert_int_equal(sb[1], 12);
	assert_int_equal(sb[2], 3);
	assert_int_equal(sb[3], 2);
	assert_int_equal(get_be16(sb + 4), 0);
	assert_int_equal(get_be16(sb + 6), 0);
	snprintf(expect, sizeof(expect), "%s/pics_9.idx", dir);
	assert_int_equal(file_size(expect), 0);

	/* reopen: the super block wins over the options */
	volume_close(v);
	o = create_opts();
	o.create = false;
	assert_int_equal(volume_open(dir, "pics", 9, &o, &v), 0);
	volume_get_info(v, &info);
	assert_int_equal(info.replica_placement, 12);
	assert_int_equal(info.ttl.count, 3);

	/* destroy removes the files */
	assert_int_equal(volume_destroy(v), 0);
	snprintf(expect, sizeof(expect), "%s/pics_9.dat", dir);
	assert_false(file_exists(expect));
	snprintf(expect, sizeof(expect), "%s/pics_9.idx", dir);
	assert_false(file_exists(expect));
}

static void test_bad_super_block(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = NULL;
	uint8_t sb[8] = {0, 0, 0, 0, 0, 0, 0, 0};

	/* version 0 and version 4 are refused */
	write_at(vpath(dir, 4, ".dat"), 0, sb, sizeof(sb));
	assert_int_equal(volume_open(dir, NULL, 4, &o, &v), -EINVAL);
	sb[0] = 4;
	write_at(vpath(dir, 4, ".dat"), 0, sb, sizeof(sb));
	assert_int_equal(volume_open(dir, NULL, 4, &o, &v), -EINVAL);
	/* a .dat shorter than a super block */
	sb[0] = 3;
	write_at(vpath(dir, 5, ".dat"), 0, sb, 3);
	assert_int_equal(volume_open(dir, NULL, 5, &o, &v), -EINVAL);
	/* an empty .dat without create */
	write_at(vpath(dir, 6, ".dat"), 0, sb, 0);
	o.create = false;
	assert_int_equal(volume_open(dir, NULL, 6, &o, &v), -EINVAL);
}

/* ---- write, read, delete, reload ------------------------------------------------------- */

static void test_write_read_delete_reload(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct volume_info info, info2;
	struct model m;
	uint64_t last_ns = 0, dat_size;
	size_t writes = 0, deletes = 0;

	model_init(&m, 200);
	for (uint64_t key = 1; key <= 60; key++) {
		uint32_t len = (uint32_t)((key * 977) % 5000);
		uint8_t *data = make_data(len, key);
		struct needle n;

		assert_int_equal(put_full(v, key, cookie_of(key), data, len, NULL, &n), 0);
		/* the write fills size, checksum and a strictly increasing append time */
		assert_true(n.append_at_ns > last_ns);
		last_ns = n.append_at_ns;
		assert_int_equal(n.checksum, crc32c(0, data, len));
		assert_int_equal(n.data_size, len);
		if (len > 0)
			assert_int_equal(n.size, 4 + len + 1 + 1 + strlen("file-") +
						     (key < 10 ? 1 : 2) + 5);
		else
			assert_int_equal(n.size, 0);
		free(data);
		m.state[key] = KEY_LIVE;
		m.cookie[key] = cookie_of(key);
		m.len[key] = len;
		m.seed[key] = key;
		writes++;
	}
	model_check(v, &m);
	/* deletes report the deleted needle's Size */
	for (uint64_t key = 4; key <= 60; key += 4) {
		uint64_t off;
		uint32_t size = 0, idx_size;

		assert_true(idx_lookup(dir, VID, key, &off, &idx_size));
		assert_int_equal(volume_delete(v, key, cookie_of(key), &size), 0);
		assert_int_equal(size, idx_size);
		m.state[key] = KEY_DELETED;
		deletes++;
	}
	/* overwrite some keys with new content (same cookie) */
	for (uint64_t key = 5; key <= 60; key += 10) {
		model_put(v, &m, key, 333, key + 1000);
		writes++;
	}
	/* a deleted key can be written again, with any cookie */
	model_put_cookie(v, &m, 8, 100, 8008, 0xdeadbeef);
	writes++;
	model_check(v, &m);
	assert_int_equal(read_status(v, 12, cookie_of(12)), -ENOENT);
	assert_int_equal(volume_delete(v, 12, cookie_of(12), NULL), -ENOENT);
	assert_int_equal(read_status(v, 1000, 1), -ENOENT);

	volume_get_info(v, &info);
	assert_int_equal(info.file_count, writes);
	assert_int_equal(info.live_count, model_live(&m));
	/* deletions and overwritten needles both count as deleted */
	assert_int_equal(info.delete_count, deletes + 6);
	assert_true(info.deleted_bytes > 0);
	assert_int_equal(info.max_file_key, 60);
	assert_int_equal(info.size, file_size(vpath(dir, VID, ".dat")));
	assert_int_equal(file_size(vpath(dir, VID, ".idx")),
			 (writes + deletes) * VOLUME_IDX_ENTRY_SIZE);
	assert_true(info.modified_at_second > 0);
	dat_size = info.size;

	/* reload: same content, same counters, files untouched */
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_get_info(v, &info2);
	assert_int_equal(info2.file_count, info.file_count);
	assert_int_equal(info2.delete_count, info.delete_count);
	assert_int_equal(info2.deleted_bytes, info.deleted_bytes);
	assert_int_equal(info2.live_count, info.live_count);
	assert_int_equal(info2.max_file_key, info.max_file_key);
	assert_int_equal(info2.size, dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")),
			 (writes + deletes) * VOLUME_IDX_ENTRY_SIZE);

	/* and it keeps working after the reload */
	model_put(v, &m, 150, 4000, 150);
	model_del(v, &m, 1);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static void test_cookie_mismatch(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(500, 1), *other = make_data(500, 2);
	uint64_t dat_size;

	assert_int_equal(put(v, 10, 0x11111111, data, 500), 0);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	/* read */
	assert_int_equal(read_status(v, 10, 0x22222222), -EPERM);
	/* write: refused, nothing appended, old content kept */
	assert_int_equal(put(v, 10, 0x22222222, other, 500), -EPERM);
	assert_int_equal(put(v, 10, 0x22222222, data, 500), -EPERM);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	/* delete: refused, still readable */
	assert_int_equal(volume_delete(v, 10, 0x22222222, NULL), -EPERM);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	expect_blob(v, 10, 0x11111111, data, 500);
	/* the same after a reload */
	v = reopen_vol(v, dir, VID);
	assert_int_equal(read_status(v, 10, 0), -EPERM);
	assert_int_equal(volume_delete(v, 10, 0, NULL), -EPERM);
	assert_int_equal(put(v, 10, 0, other, 500), -EPERM);
	expect_blob(v, 10, 0x11111111, data, 500);
	/* the right cookie can overwrite and delete */
	assert_int_equal(put(v, 10, 0x11111111, other, 500), 0);
	expect_blob(v, 10, 0x11111111, other, 500);
	assert_int_equal(volume_delete(v, 10, 0x11111111, NULL), 0);
	assert_int_equal(read_status(v, 10, 0x11111111), -ENOENT);
	volume_close(v);
	free(data);
	free(other);
}

static void test_delete_missing(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(10, 1);
	uint64_t dat_size, idx_size;

	assert_int_equal(volume_delete(v, 1, 0, NULL), -ENOENT);
	assert_int_equal(put(v, 1, 5, data, 10), 0);
	assert_int_equal(volume_delete(v, 2, 5, NULL), -ENOENT);
	assert_int_equal(volume_delete(v, 1, 5, NULL), 0);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	idx_size = file_size(vpath(dir, VID, ".idx"));
	/* a second delete finds nothing and appends nothing */
	assert_int_equal(volume_delete(v, 1, 5, NULL), -ENOENT);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);
	/* tombstone on disk: 32 bytes in v3, .idx size 0xFFFFFFFF */
	{
		uint64_t off;
		uint32_t size;

		assert_true(idx_lookup(dir, VID, 1, &off, &size));
		assert_int_equal(size, VOLUME_TOMBSTONE_SIZE);
		assert_int_equal(off + 32, dat_size);
	}
	volume_close(v);
	free(data);
}

static void test_unchanged_rewrite(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(2000, 1), *other = make_data(2000, 2);
	uint64_t dat_size, idx_size;
	bool unchanged = true;

	assert_int_equal(put_full(v, 3, 77, data, 2000, &unchanged, NULL), 0);
	assert_false(unchanged);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	idx_size = file_size(vpath(dir, VID, ".idx"));
	/* identical: reported unchanged, nothing appended */
	assert_int_equal(put_full(v, 3, 77, data, 2000, &unchanged, NULL), 0);
	assert_true(unchanged);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);
	/* NULL unchanged pointer is allowed */
	assert_int_equal(put_full(v, 3, 77, data, 2000, NULL, NULL), 0);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	/* different data of the same length: appended */
	assert_int_equal(put_full(v, 3, 77, other, 2000, &unchanged, NULL), 0);
	assert_false(unchanged);
	assert_true(file_size(vpath(dir, VID, ".dat")) > dat_size);
	expect_blob(v, 3, 77, other, 2000);
	/* a different length: appended */
	dat_size = file_size(vpath(dir, VID, ".dat"));
	assert_int_equal(put_full(v, 3, 77, other, 1999, &unchanged, NULL), 0);
	assert_false(unchanged);
	assert_true(file_size(vpath(dir, VID, ".dat")) > dat_size);
	expect_blob(v, 3, 77, other, 1999);
	volume_close(v);

	/* TTL volumes never take the shortcut (reference section 9) */
	o.ttl.count = 5;
	o.ttl.unit = 3;
	v = open_vol(dir, VID + 1, &o);
	assert_int_equal(put_full(v, 3, 77, data, 2000, &unchanged, NULL), 0);
	dat_size = file_size(vpath(dir, VID + 1, ".dat"));
	assert_int_equal(put_full(v, 3, 77, data, 2000, &unchanged, NULL), 0);
	assert_false(unchanged);
	assert_true(file_size(vpath(dir, VID + 1, ".dat")) > dat_size);
	expect_blob(v, 3, 77, data, 2000);
	volume_close(v);
	free(data);
	free(other);
}

static void test_empty_blob(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct volume_blob b;
	uint64_t off;
	uint32_t size;

	assert_int_equal(put(v, 5, 9, NULL, 0), 0);
	assert_true(idx_lookup(dir, VID, 5, &off, &size));
	/* kelp keeps the body of an empty blob with metadata (DataSize 0 + flags), so
	 * Size is not 0 and a rebuild from .dat never takes it for a deletion */
	assert_true(size > 0 && size != VOLUME_TOMBSTONE_SIZE);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), 8 + needle_disk_size(size, 3));
	assert_int_equal(volume_read(v, 5, 9, &b), 0);
	assert_int_equal(b.n.data_size, 0);
	assert_int_equal(b.n.size, size);
	volume_blob_release(&b);
	assert_int_equal(read_status(v, 5, 10), -EPERM);
	/* survives a reload as a live (empty) blob, not as a deletion */
	v = reopen_vol(v, dir, VID);
	assert_int_equal(volume_read(v, 5, 9, &b), 0);
	assert_int_equal(b.n.data_size, 0);
	volume_blob_release(&b);
	/* unchanged on an identical empty rewrite is allowed either way; the blob stays */
	assert_int_equal(put(v, 5, 9, NULL, 0), 0);
	assert_int_equal(read_status(v, 5, 9), 0);
	/* and can be deleted; the deleted size is its Size field */
	{
		uint32_t stored = size;

		assert_int_equal(volume_delete(v, 5, 9, &size), 0);
		assert_int_equal(size, stored);
	}
	assert_int_equal(read_status(v, 5, 9), -ENOENT);
	v = reopen_vol(v, dir, VID);
	assert_int_equal(read_status(v, 5, 9), -ENOENT);

	/* Without metadata an empty blob has no body (Size 0, as SeaweedFS writes it): it
	 * is live as long as its .idx entry says so. (An identical rewrite goes through the
	 * "unchanged" comparison with no data at all.) */
	{
		struct volume_data d = {.mem = (const uint8_t *)"", .fd = -1, .len = 0, .crc = 0};
		struct needle n;
		bool unchanged;

		memset(&n, 0, sizeof(n));
		n.cookie = 7;
		n.id = 6;
		assert_int_equal(volume_write(v, &n, &d, false, NULL), 0);
		assert_int_equal(n.size, 0);
		memset(&n, 0, sizeof(n));
		n.cookie = 7;
		n.id = 6;
		assert_int_equal(volume_write(v, &n, &d, false, &unchanged), 0);
		assert_int_equal(volume_read(v, 6, 7, &b), 0);
		assert_int_equal(b.n.data_size, 0);
		assert_int_equal(b.n.size, 0);
		volume_blob_release(&b);
		v = reopen_vol(v, dir, VID);
		assert_int_equal(read_status(v, 6, 7), 0);
		assert_int_equal(volume_delete(v, 6, 7, NULL), 0);
		assert_int_equal(read_status(v, 6, 7), -ENOENT);
	}
	volume_close(v);
}

/* Writes len bytes of (seed) into a temp file at offset pad; returns the fd. */
static int spool(const char *dir, uint32_t len, uint64_t seed, uint64_t pad)
{
	char path[4096];
	uint8_t *data = make_data(len, seed), junk[64];
	int fd;

	snprintf(path, sizeof(path), "%s/spool-XXXXXX", dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	memset(junk, 0xEE, sizeof(junk));
	for (uint64_t p = 0; p < pad; p += sizeof(junk))
		assert_int_equal(
		    pwrite(fd, junk, pad - p < sizeof(junk) ? pad - p : sizeof(junk), (off_t)p),
		    (ssize_t)(pad - p < sizeof(junk) ? pad - p : sizeof(junk)));
	assert_int_equal(pwrite(fd, data, len, (off_t)pad), (ssize_t)len);
	free(data);
	return fd;
}

static int put_fd(struct volume *v, uint64_t key, uint32_t cookie, int fd, uint64_t fd_offset,
		  uint32_t len, uint32_t crc)
{
	struct needle n;
	struct volume_data d = {
	    .mem = NULL, .fd = fd, .fd_offset = fd_offset, .len = len, .crc = crc};
	char name[32];

	memset(&n, 0, sizeof(n));
	n.cookie = cookie;
	n.id = key;
	snprintf(name, sizeof(name), "file-%" PRIu64, key);
	n.name = name;
	n.name_len = (uint8_t)strlen(name);
	return volume_write(v, &n, &d, false, NULL);
}

static void test_write_from_fd(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	static const uint32_t lens[] = {1, 100, 4096, 70001};

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t *data = make_data(lens[i], 40 + i);
		int fd = spool(dir, lens[i], 40 + i, 100 + i * 13);

		assert_int_equal(
		    put_fd(v, 20 + i, 3, fd, 100 + i * 13, lens[i], crc32c(0, data, lens[i])), 0);
		close(fd);
		expect_blob(v, 20 + i, 3, data, lens[i]);
		free(data);
	}
	/* a spool shorter than the announced length fails and leaves nothing behind */
	{
		int fd = spool(dir, 50, 1, 0);
		uint64_t dat_size = file_size(vpath(dir, VID, ".dat"));
		int ret = put_fd(v, 99, 3, fd, 0, 100, 0);

		close(fd);
		assert_true(ret < 0);
		assert_int_equal(read_status(v, 99, 3), -ENOENT);
		assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
		volume_set_read_only(v, false);
	}
	v = reopen_vol(v, dir, VID);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		uint8_t *data = make_data(lens[i], 40 + i);

		expect_blob(v, 20 + i, 3, data, lens[i]);
		free(data);
	}
	volume_close(v);
}

static void test_large_blob(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	const uint32_t len = (3u << 20) + 12345;
	uint8_t *data = make_data(len, 7), *data2 = make_data(len - 1000, 8),
		*small = make_data(99, 9);
	struct volume_blob b;
	uint64_t off;
	uint32_t size;
	int fd;

	assert_int_equal(put(v, 1, 1, small, 99), 0);
	assert_int_equal(put(v, 2, 2, data, len), 0);
	fd = spool(dir, len - 1000, 8, 4096);
	assert_int_equal(put_fd(v, 3, 3, fd, 4096, len - 1000, crc32c(0, data2, len - 1000)), 0);
	close(fd);
	assert_int_equal(put(v, 4, 4, small, 99), 0);

	/* large blobs come back through an fd and a data offset, not in memory */
	assert_int_equal(volume_read(v, 2, 2, &b), 0);
	assert_null(b.n.data);
	assert_true(b.fd >= 0);
	assert_true(b.data_offset > 0);
	assert_int_equal(b.n.data_size, len);
	assert_int_equal(b.n.name_len, 6);
	assert_memory_equal(b.n.name, "file-2", 6);
	assert_int_equal(b.n.checksum, crc32c(0, data, len));
	assert_true(b.n.append_at_ns > 0);
	assert_true(b.n.flags & NEEDLE_FLAG_HAS_LAST_MOD);
	assert_int_equal(b.n.last_modified, 1700000002);
	volume_blob_release(&b);
	expect_blob(v, 2, 2, data, len);
	expect_blob(v, 3, 3, data2, len - 1000);
	expect_blob(v, 1, 1, small, 99);
	expect_blob(v, 4, 4, small, 99);
	assert_int_equal(read_status(v, 2, 3), -EPERM);
	v = reopen_vol(v, dir, VID);
	expect_blob(v, 2, 2, data, len);
	expect_blob(v, 3, 3, data2, len - 1000);

	/* one flipped byte deep inside the data of a large blob */
	assert_true(idx_lookup(dir, VID, 2, &off, &size));
	flip_byte(vpath(dir, VID, ".dat"), off + 20 + len / 2 + 3);
	assert_int_equal(volume_read(v, 2, 2, &b), -EBADMSG);
	assert_int_equal(b.fd, -1);
	assert_null(b.buf);
	/* and in its last data byte */
	flip_byte(vpath(dir, VID, ".dat"), off + 20 + len / 2 + 3);
	expect_blob(v, 2, 2, data, len);
	flip_byte(vpath(dir, VID, ".dat"), off + 20 + len - 1);
	assert_int_equal(read_status(v, 2, 2), -EBADMSG);
	/* the neighbours are untouched */
	expect_blob(v, 1, 1, small, 99);
	expect_blob(v, 3, 3, data2, len - 1000);
	expect_blob(v, 4, 4, small, 99);
	/* a damaged large blob stays refused after a reload */
	v = reopen_vol(v, dir, VID);
	assert_int_equal(read_status(v, 2, 2), -EBADMSG);
	expect_blob(v, 3, 3, data2, len - 1000);
	volume_close(v);
	free(data);
	free(data2);
	free(small);
}

static void test_corruption(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t off;
	uint32_t size;
	char dat[4096];

	snprintf(dat, sizeof(dat), "%s", vpath(dir, VID, ".dat"));
	model_init(&m, 20);
	for (uint64_t key = 1; key <= 10; key++)
		model_put(v, &m, key, 1000 + (uint32_t)key, key);
	/* a byte of data */
	assert_true(idx_lookup(dir, VID, 3, &off, &size));
	flip_byte(dat, off + 20 + 500);
	assert_int_equal(read_status(v, 3, cookie_of(3)), -EBADMSG);
	/* the stored checksum */
	assert_true(idx_lookup(dir, VID, 4, &off, &size));
	flip_byte(dat, off + 16 + size);
	assert_int_equal(read_status(v, 4, cookie_of(4)), -EBADMSG);
	/* the needle id in the header: the record is not the one the index promises */
	assert_true(idx_lookup(dir, VID, 5, &off, &size));
	flip_byte(dat, off + 11);
	assert_int_equal(read_status(v, 5, cookie_of(5)), -EBADMSG);
	/* the Size in the header */
	assert_true(idx_lookup(dir, VID, 6, &off, &size));
	flip_byte(dat, off + 15);
	assert_int_equal(read_status(v, 6, cookie_of(6)), -EBADMSG);
	/* DataSize larger than Size */
	assert_true(idx_lookup(dir, VID, 7, &off, &size));
	flip_byte(dat, off + 16);
	assert_int_equal(read_status(v, 7, cookie_of(7)), -EBADMSG);
	/* the others are intact */
	for (uint64_t key = 1; key <= 10; key++)
		if (key < 3 || key > 7)
			m.state[key] = KEY_LIVE;
		else
			m.state[key] = KEY_NEVER;
	model_check(v, &m);
	/* a reload neither serves the damaged needles nor loses the good ones */
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	for (uint64_t key = 3; key <= 7; key++) {
		int ret = read_status(v, key, cookie_of(key));

		if (ret != -EBADMSG && ret != -ENOENT)
			fail_msg("damaged key %" PRIu64 ": volume_read returned %d", key, ret);
	}
	volume_close(v);
	model_free(&m);
}

/* ---- TTL -------------------------------------------------------------------------------- */

struct handmade {
	int version;
	uint64_t append_at_ns;	/* v3 */
	uint64_t last_modified; /* 0: none */
	struct ttl ttl;
	bool masked_crc; /* store the legacy masked CRC */
	bool no_idx;	 /* leave the .idx alone */
};

/* Appends a hand-made needle to .dat (and its .idx entry); returns its offset. */
static uint64_t append_handmade(const char *dir, uint32_t vid, uint64_t key, uint32_t cookie,
				const uint8_t *data, uint32_t len, const struct handmade *h)
{
	struct needle n;
	uint8_t *rec, e[VOLUME_IDX_ENTRY_SIZE];
	uint64_t disk, off = file_size(vpath(dir, vid, ".dat"));
	char name[32];
	size_t got;

	memset(&n, 0, sizeof(n));
	n.cookie = cookie;
	n.id = key;
	n.data = data;
	n.data_size = len;
	snprintf(name, sizeof(name), "file-%" PRIu64, key);
	n.name = name;
	n.name_len = (uint8_t)strlen(name);
	n.ttl = h->ttl;
	n.append_at_ns = h->append_at_ns;
	if (h->last_modified) {
		n.flags = NEEDLE_FLAG_HAS_LAST_MOD;
		n.last_modified = h->last_modified;
	}
	disk = needle_disk_size(needle_compute_size(&n), h->version);
	rec = malloc(disk);
	assert_non_null(rec);
	got = needle_encode(&n, h->version, rec, disk);
	assert_int_equal(got, disk);
	if (h->masked_crc)
		put_be32(rec + NEEDLE_HEADER_SIZE + n.size, crc32c_masked(crc32c(0, data, len)));
	assert_int_equal(off % 8, 0);
	write_at(vpath(dir, vid, ".dat"), off, rec, disk);
	if (!h->no_idx) {
		put_be64(e, key);
		put_be32(e + 8, (uint32_t)(off / 8));
		put_be32(e + 12, n.size);
		append_file(vpath(dir, vid, ".idx"), e, sizeof(e));
	}
	free(rec);
	return off;
}

/* A version 3 needle with the given append time, and its .idx entry. */
static void append_needle(const char *dir, uint32_t vid, uint64_t key, uint32_t cookie,
			  const uint8_t *data, uint32_t len, uint64_t append_at_ns, struct ttl ttl)
{
	struct handmade h = {.version = NEEDLE_VERSION_3, .append_at_ns = append_at_ns, .ttl = ttl};

	append_handmade(dir, vid, key, cookie, data, len, &h);
}

static void test_ttl_expiry(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	const struct ttl none = {0, 0}, one_minute = {1, 1}, one_day = {1, 3};
	uint64_t now = wall_ns(), hour_ago = now - 3600ull * 1000000000ull;
	uint8_t *data = make_data(300, 1);
	struct volume *v;
	struct volume_info info;
	uint64_t dat_size;

	/* A volume with a 1-minute TTL: needles written an hour ago are gone, fresh ones
	 * are served, whether they carry the TTL themselves or inherit the volume's. */
	o.ttl = one_minute;
	v = open_vol(dir, VID, &o);
	volume_close(v);
	append_needle(dir, VID, 1, 11, data, 300, hour_ago, one_minute);
	append_needle(dir, VID, 2, 12, data, 300, hour_ago, none);
	append_needle(dir, VID, 3, 13, data, 300, now, one_minute);
	append_needle(dir, VID, 4, 14, data, 300, now, none);
	/* a needle's own TTL wins over the volume's */
	append_needle(dir, VID, 5, 15, data, 300, hour_ago, one_day);
	o.create = false;
	v = open_vol(dir, VID, &o);
	assert_int_equal(read_status(v, 1, 11), -ENOENT);
	assert_int_equal(read_status(v, 2, 12), -ENOENT);
	expect_blob(v, 3, 13, data, 300);
	expect_blob(v, 4, 14, data, 300);
	expect_blob(v, 5, 15, data, 300);
	/* writes to a TTL volume carry its TTL */
	assert_int_equal(put(v, 6, 16, data, 300), 0);
	{
		struct volume_blob b;

		assert_int_equal(volume_read(v, 6, 16, &b), 0);
		assert_true(b.n.flags & NEEDLE_FLAG_HAS_TTL);
		assert_int_equal(b.n.ttl.count, 1);
		assert_int_equal(b.n.ttl.unit, 1);
		volume_blob_release(&b);
	}
	/* vacuum drops the expired needles for good */
	dat_size = file_size(vpath(dir, VID, ".dat"));
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	assert_true(file_size(vpath(dir, VID, ".dat")) < dat_size);
	assert_int_equal(read_status(v, 1, 11), -ENOENT);
	assert_int_equal(read_status(v, 2, 12), -ENOENT);
	expect_blob(v, 3, 13, data, 300);
	expect_blob(v, 6, 16, data, 300);
	volume_get_info(v, &info);
	assert_int_equal(info.live_count, 4);
	volume_close(v);

	/* A volume without TTL: only needles with their own TTL expire. */
	o = create_opts();
	v = open_vol(dir, VID + 1, &o);
	volume_close(v);
	append_needle(dir, VID + 1, 1, 11, data, 300, hour_ago, one_minute);
	append_needle(dir, VID + 1, 2, 12, data, 300, hour_ago, none);
	o.create = false;
	v = open_vol(dir, VID + 1, &o);
	assert_int_equal(read_status(v, 1, 11), -ENOENT);
	expect_blob(v, 2, 12, data, 300);
	volume_close(v);
	free(data);
}

static void test_volume_expired(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v;
	uint8_t *data = make_data(10, 1);

	o.ttl.count = 1;
	o.ttl.unit = 2; /* one hour */
	v = open_vol(dir, VID, &o);
	assert_int_equal(put(v, 1, 1, data, 10), 0);
	assert_false(volume_expired(v));
	volume_close(v);
	/* last written three hours ago */
	set_mtime(vpath(dir, VID, ".dat"), time(NULL) - 3 * 3600);
	o.create = false;
	v = open_vol(dir, VID, &o);
	assert_true(volume_expired(v));
	/* a write makes it live again */
	assert_int_equal(put(v, 2, 1, data, 10), 0);
	assert_false(volume_expired(v));
	volume_close(v);

	/* without TTL a volume never expires */
	o = create_opts();
	v = open_vol(dir, VID + 1, &o);
	volume_close(v);
	set_mtime(vpath(dir, VID + 1, ".dat"), 1000000000);
	o.create = false;
	v = open_vol(dir, VID + 1, &o);
	assert_false(volume_expired(v));
	volume_close(v);
	free(data);
}

/* ---- limits and modes -------------------------------------------------------------------- */

static void test_max_size(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v;
	struct model m;
	uint64_t key = 1, dat_size;
	uint8_t *data = make_data(1000, 1);
	int ret;

	o.max_size = 8 + 5 * 1048 + 100; /* room for five 1000-byte needles */
	v = open_vol(dir, VID, &o);
	model_init(&m, 20);
	while ((ret = put(v, key, cookie_of(key), data, 1000)) == 0) {
		m.state[key] = KEY_LIVE;
		m.cookie[key] = cookie_of(key);
		m.len[key] = 1000;
		m.seed[key] = 1;
		key++;
		assert_true(key < 20);
	}
	assert_int_equal(ret, -EFBIG);
	assert_int_equal(key, 6);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	assert_true(dat_size <= o.max_size);
	assert_int_equal(read_status(v, key, cookie_of(key)), -ENOENT);
	/* still readable, not read-only, and a small write that fits goes through */
	assert_false(volume_is_read_only(v));
	model_check(v, &m);
	assert_int_equal(put(v, 100, 1, data, 10), 0);
	assert_int_equal(put(v, 101, 1, data, 1000), -EFBIG);
	/* deletes keep working on a full volume */
	assert_int_equal(volume_delete(v, 1, cookie_of(1), NULL), 0);
	volume_close(v);
	model_free(&m);
	free(data);
}

static void test_read_only(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(100, 1);
	struct volume_info info;
	uint64_t dat_size;

	assert_int_equal(put(v, 1, 1, data, 100), 0);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	volume_set_read_only(v, true);
	assert_true(volume_is_read_only(v));
	volume_get_info(v, &info);
	assert_true(info.read_only);
	assert_int_equal(put(v, 2, 1, data, 100), -EROFS);
	assert_int_equal(put(v, 1, 1, data, 50), -EROFS);
	assert_int_equal(volume_delete(v, 1, 1, NULL), -EROFS);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	expect_blob(v, 1, 1, data, 100);
	volume_set_read_only(v, false);
	assert_false(volume_is_read_only(v));
	assert_int_equal(put(v, 2, 1, data, 100), 0);
	assert_int_equal(volume_delete(v, 1, 1, NULL), 0);
	expect_blob(v, 2, 1, data, 100);
	volume_close(v);
	free(data);
}

/* ---- crash repair at open ------------------------------------------------------------------ */

/* Writes keys 1..n, deletes a few, overwrites one. */
static void populate(struct volume *v, struct model *m, uint64_t n)
{
	for (uint64_t key = 1; key <= n; key++)
		model_put(v, m, key, (uint32_t)(200 + key * 37 % 900), key * 31);
	for (uint64_t key = 3; key <= n; key += 7)
		model_del(v, m, key);
	model_put(v, m, 2, 777, 222); /* an overwrite */
}

enum tail_kind { TAIL_RANDOM, TAIL_PARTIAL_NEEDLE, TAIL_ZEROS };

static void torn_tail(const char *dir, enum tail_kind kind)
{
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t dat_size, idx_size;
	uint8_t junk[5000];

	model_init(&m, 100);
	populate(v, &m, 40);
	volume_close(v);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	idx_size = file_size(vpath(dir, VID, ".idx"));
	switch (kind) {
	case TAIL_RANDOM:
		fill(junk, sizeof(junk), 99);
		append_file(vpath(dir, VID, ".dat"), junk, sizeof(junk));
		break;
	case TAIL_PARTIAL_NEEDLE: {
		/* the first 30 bytes of a valid record (key 7's) */
		uint64_t off;
		uint32_t size;
		int fd = open(vpath(dir, VID, ".dat"), O_RDONLY);

		assert_true(idx_lookup(dir, VID, 7, &off, &size));
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, junk, 30, (off_t)off), 30);
		close(fd);
		/* a different key, so it cannot be mistaken for an existing needle */
		put_be64(junk + 4, 1000);
		append_file(vpath(dir, VID, ".dat"), junk, 30);
		break;
	}
	case TAIL_ZEROS:
		memset(junk, 0, sizeof(junk));
		append_file(vpath(dir, VID, ".dat"), junk, 4096);
		break;
	}
	assert_true(file_size(vpath(dir, VID, ".dat")) > dat_size);
	o.create = false;
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	assert_int_equal(read_status(v, 1000, 0), -ENOENT);
	/* the tail is cut back to the end of the last good needle; .idx untouched */
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);
	/* new writes land right after the last good needle and survive a reload */
	model_put(v, &m, 60, 1234, 60);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static void test_torn_tail_random(void **state)
{
	torn_tail(*state, TAIL_RANDOM);
}

static void test_torn_tail_partial_needle(void **state)
{
	torn_tail(*state, TAIL_PARTIAL_NEEDLE);
}

static void test_torn_tail_zeros(void **state)
{
	torn_tail(*state, TAIL_ZEROS);
}

static void test_unindexed_needles_at_tail(void **state)
{
	/* A crash after the .dat append but before the .idx append: the needles are whole
	 * in .dat, the index does not know them. They must be indexed at open. */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t idx_size, dat_size;

	model_init(&m, 100);
	populate(v, &m, 20);
	idx_size = file_size(vpath(dir, VID, ".idx"));
	model_put(v, &m, 30, 500, 30);
	model_put(v, &m, 31, 0, 31);  /* an empty blob (it has a name, so a body) */
	model_put(v, &m, 4, 600, 44); /* an overwrite */
	model_del(v, &m, 5);
	volume_close(v);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	truncate_file(vpath(dir, VID, ".idx"), idx_size);
	o.create = false;
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size + 4 * VOLUME_IDX_ENTRY_SIZE);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static void test_idx_partial_entry(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t idx_size, dat_size;

	model_init(&m, 100);
	populate(v, &m, 30);
	volume_close(v);
	idx_size = file_size(vpath(dir, VID, ".idx"));
	dat_size = file_size(vpath(dir, VID, ".dat"));
	/* cut the last entry in its middle */
	truncate_file(vpath(dir, VID, ".idx"), idx_size - 7);
	o.create = false;
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	/* whole entries only; the needle of the cut entry is indexed again from .dat */
	assert_int_equal(file_size(vpath(dir, VID, ".idx")) % VOLUME_IDX_ENTRY_SIZE, 0);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	volume_close(v);

	/* a stray byte after the last whole entry */
	append_file(vpath(dir, VID, ".idx"), "\x42", 1);
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);
	volume_close(v);
	model_free(&m);
}

static void test_idx_missing_entries(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t idx_size;

	model_init(&m, 100);
	populate(v, &m, 30);
	/* last two: new keys */
	model_put(v, &m, 50, 1500, 50);
	model_put(v, &m, 51, 2500, 51);
	volume_close(v);
	idx_size = file_size(vpath(dir, VID, ".idx"));
	truncate_file(vpath(dir, VID, ".idx"), idx_size - 2 * VOLUME_IDX_ENTRY_SIZE);
	o.create = false;
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);

	/* last two: an overwrite and a deletion */
	model_put(v, &m, 10, 900, 1010);
	model_del(v, &m, 11);
	volume_close(v);
	idx_size = file_size(vpath(dir, VID, ".idx"));
	truncate_file(vpath(dir, VID, ".idx"), idx_size - 2 * VOLUME_IDX_ENTRY_SIZE);
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), idx_size);

	/* no .idx at all: everything is indexed from .dat */
	volume_close(v);
	assert_int_equal(unlink(vpath(dir, VID, ".idx")), 0);
	v = open_vol(dir, VID, &o);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static void test_idx_past_end_of_dat(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t off15, cut;
	uint32_t size15;

	model_init(&m, 100);
	for (uint64_t key = 1; key <= 10; key++)
		model_put(v, &m, key, 1000 + (uint32_t)key * 10, key);
	model_del(v, &m, 2);
	model_del(v, &m, 4);
	model_put(v, &m, 6, 50, 606); /* overwrite before the cut */
	for (uint64_t key = 11; key <= 20; key++)
		model_put(v, &m, key, 1000 + (uint32_t)key * 10, key);
	model_del(v, &m, 8); /* a tombstone after the cut */
	volume_close(v);

	/* .dat loses its tail in the middle of key 15's needle (the page cache lost it,
	 * the .idx kept its entries) */
	assert_true(idx_lookup(dir, VID, 15, &off15, &size15));
	cut = off15 + 100;
	truncate_file(vpath(dir, VID, ".dat"), cut);
	o.create = false;
	v = open_vol(dir, VID, &o);
	/* everything still in .dat is served; what was lost is not found */
	for (uint64_t key = 15; key <= 20; key++)
		m.state[key] = KEY_NEVER;
	m.state[8] = KEY_LIVE; /* its deletion was lost with the tail */
	model_check(v, &m);
	for (uint64_t key = 15; key <= 20; key++)
		assert_int_equal(read_status(v, key, cookie_of(key)), -ENOENT);
	/* the torn needle is cut off */
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), off15);
	/* the rebuilt index points inside .dat only: a reload needs no repair */
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), off15);
	/* and new writes work */
	model_put(v, &m, 15, 10, 15);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static void test_idx_bitrot_does_not_cut_dat(void **state)
{
	/*
	 * Two faults at once: a crash lost the last three .idx entries (their needles are
	 * whole in .dat), and an early .idx entry has a damaged Size whose "end" falls inside
	 * one of those unindexed needles. Open must not start its tail scan there and cut
	 * .dat: every needle but the damaged key's must still be served.
	 */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t dat_size, idx_size, off1, off11, target, cut_to;
	uint32_t size1, size11, bad_size = 0;
	uint8_t e[4];
	size_t bad;
	int ret;

	model_init(&m, 100);
	for (uint64_t key = 1; key <= 12; key++)
		model_put(v, &m, key, 2000, key);
	volume_close(v);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	idx_size = file_size(vpath(dir, VID, ".idx"));
	assert_true(idx_lookup(dir, VID, 1, &off1, &size1));
	assert_true(idx_lookup(dir, VID, 11, &off11, &size11));
	truncate_file(vpath(dir, VID, ".idx"), idx_size - 3 * VOLUME_IDX_ENTRY_SIZE);
	/* a Size for key 1 that makes its needle "end" inside key 11's data */
	target = off11 + 512;
	for (uint32_t s = size1; s < 1u << 20; s++) {
		if (off1 + needle_disk_size(s, NEEDLE_VERSION_3) == target) {
			bad_size = s;
			break;
		}
	}
	assert_true(bad_size != 0);
	put_be32(e, bad_size);
	write_at(vpath(dir, VID, ".idx"), 12, e, 4); /* entry 0 is key 1 */
	o.create = false;
	v = open_vol(dir, VID, &o);
	m.state[1] = KEY_NEVER;
	ret = read_status(v, 1, cookie_of(1));
	bad = model_count_bad(v, &m);
	cut_to = file_size(vpath(dir, VID, ".dat"));
	volume_close(v);
	model_free(&m);
	assert_true(ret == 0 || ret == -EBADMSG || ret == -ENOENT);
	if (cut_to != dat_size || bad != 0)
		fail_msg(".dat cut from %" PRIu64 " to %" PRIu64
			 " bytes at open because of one bad .idx entry; %zu of keys 2..12 lost",
			 dat_size, cut_to, bad);
}

static void test_idx_entry_key_zero(void **state)
{
	/*
	 * A damaged .idx entry whose key reads 0 (a key SeaweedFS never issues, and the
	 * needle map's empty marker) must be repaired like any other bad entry, not make
	 * the whole volume fail to open.
	 */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t off;
	uint32_t size;
	uint8_t e[VOLUME_IDX_ENTRY_SIZE];
	size_t bad = 0;
	int ret;

	model_init(&m, 100);
	populate(v, &m, 10);
	volume_close(v);
	assert_true(idx_lookup(dir, VID, 1, &off, &size));
	put_be64(e, 0);
	put_be32(e + 8, (uint32_t)(off / 8));
	put_be32(e + 12, size);
	append_file(vpath(dir, VID, ".idx"), e, sizeof(e));
	o.create = false;
	v = NULL;
	ret = volume_open(dir, NULL, VID, &o, &v);
	if (ret == 0) {
		bad = model_count_bad(v, &m);
		volume_close(v);
	}
	model_free(&m);
	if (ret != 0)
		fail_msg("volume_open returned %d (%s) for an .idx with one key-0 entry", ret,
			 strerror(-ret));
	assert_int_equal(bad, 0);
}

/* Appends a tombstone needle (Size 0) to .dat, without an .idx entry; returns its offset. */
static uint64_t append_tombstone_needle(const char *dir, uint32_t vid, uint64_t key,
					uint32_t cookie)
{
	struct needle n;
	uint8_t rec[64];
	uint64_t off = file_size(vpath(dir, vid, ".dat"));
	size_t len;

	memset(&n, 0, sizeof(n));
	n.cookie = cookie;
	n.id = key;
	n.append_at_ns = wall_ns();
	len = needle_encode(&n, NEEDLE_VERSION_3, rec, sizeof(rec));
	assert_int_equal(len, 32);
	write_at(vpath(dir, vid, ".dat"), off, rec, len);
	return off;
}

static void append_idx_entry(const char *dir, uint32_t vid, uint64_t key, uint64_t offset,
			     uint32_t size)
{
	uint8_t e[VOLUME_IDX_ENTRY_SIZE];

	put_be64(e, key);
	put_be32(e + 8, (uint32_t)(offset / 8));
	put_be32(e + 12, size);
	append_file(vpath(dir, vid, ".idx"), e, sizeof(e));
}

static void test_seaweedfs_offset0_deletions_at_tail(void **state)
{
	/*
	 * Deletions as SeaweedFS writes them in two places (reference 4.4: "older code wrote
	 * offset 0 - accept both"): its vacuum's makeupDiff appends a fake tombstone needle
	 * (cookie 0x12345678) to .dat and an .idx entry (key, 0, -1); older delete code
	 * appended the tombstone needle with the file's cookie and an .idx entry with offset
	 * 0. When such deletions are the last operations, their tombstone needles lie after
	 * the last .idx entry that has an offset. They must not bring the keys back (as
	 * empty blobs) at open.
	 */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(700, 1);
	uint64_t dat_size;
	int ret1, ret2, ret3;

	assert_int_equal(put(v, 1, cookie_of(1), data, 700), 0);
	assert_int_equal(put(v, 2, cookie_of(2), data, 700), 0);
	assert_int_equal(put(v, 3, cookie_of(3), data, 700), 0);
	volume_close(v);
	append_tombstone_needle(dir, VID, 2, 0x12345678); /* makeupDiff */
	append_idx_entry(dir, VID, 2, 0, VOLUME_TOMBSTONE_SIZE);
	append_tombstone_needle(dir, VID, 1, cookie_of(1)); /* old delete path */
	append_idx_entry(dir, VID, 1, 0, 0);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	o.create = false;
	v = open_vol(dir, VID, &o);
	ret1 = read_status(v, 1, cookie_of(1));
	ret2 = read_status(v, 2, cookie_of(2));
	ret3 = read_status(v, 3, cookie_of(3));
	volume_close(v);
	free(data);
	assert_int_equal(ret3, 0);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	if (ret1 != -ENOENT || ret2 != -ENOENT)
		fail_msg(
		    "deleted keys came back at open: key 1 (old delete) read %d, key 2 (vacuum makeupDiff) read %d; expected -ENOENT for both",
		    ret1, ret2);
}

static void test_idx_tombstone_entry_on_live_needle(void **state)
{
	/*
	 * A damaged last .idx entry that says "deleted" (size 0xFFFFFFFF) but points at a
	 * live needle of the same key: the needle is not a tombstone (its Size is not 0), so
	 * the entry does not match .dat. Open must not start the tail scan 32 bytes into
	 * that needle and cut .dat there.
	 */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	uint64_t dat_size, idx_size, off5, cut_to;
	uint32_t size5;
	size_t bad;

	model_init(&m, 100);
	for (uint64_t key = 1; key <= 5; key++)
		model_put(v, &m, key, 3000, key);
	volume_close(v);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	idx_size = file_size(vpath(dir, VID, ".idx"));
	assert_true(idx_lookup(dir, VID, 5, &off5, &size5));
	/* the last entry (key 5) turns into a deletion of key 5 at the same offset */
	truncate_file(vpath(dir, VID, ".idx"), idx_size - VOLUME_IDX_ENTRY_SIZE);
	append_idx_entry(dir, VID, 5, off5, VOLUME_TOMBSTONE_SIZE);
	o.create = false;
	v = open_vol(dir, VID, &o);
	m.state[5] = KEY_NEVER; /* live or deleted: either reading is defensible */
	bad = model_count_bad(v, &m);
	cut_to = file_size(vpath(dir, VID, ".dat"));
	volume_close(v);
	model_free(&m);
	if (cut_to != dat_size)
		fail_msg(".dat cut from %" PRIu64 " to %" PRIu64
			 " bytes at open (inside key 5's needle at %" PRIu64 ")",
			 dat_size, cut_to, off5);
	assert_int_equal(bad, 0);
}

static void test_append_time_monotonic_across_reopen(void **state)
{
	/*
	 * AppendAtNs is strictly increasing per volume (reference 4.3). After a reopen the
	 * next append must come after the last needle in .dat even if the clock is behind
	 * it (clock stepped back, or a needle written by a host with a fast clock).
	 */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	uint8_t *data = make_data(100, 1);
	uint64_t future = wall_ns() + 3600ull * 1000000000ull;
	struct needle n;
	const struct ttl none = {0, 0};
	int ret;

	assert_int_equal(put(v, 1, 1, data, 100), 0);
	volume_close(v);
	append_needle(dir, VID, 2, 2, data, 100, future, none);
	o.create = false;
	v = open_vol(dir, VID, &o);
	expect_blob(v, 2, 2, data, 100);
	ret = put_full(v, 3, 3, data, 100, NULL, &n);
	volume_close(v);
	free(data);
	assert_int_equal(ret, 0);
	if (n.append_at_ns <= future)
		fail_msg("append_at_ns %" PRIu64
			 " after reopen is not after the last needle's %" PRIu64,
			 n.append_at_ns, future);
}

static void write_super_block(const char *dir, uint32_t vid, uint8_t version, uint16_t extra)
{
	uint8_t sb[8] = {version, 1, 0, 0, 0, 0, 0, 0};
	uint8_t junk[64];

	put_be16(sb + 6, extra);
	write_at(vpath(dir, vid, ".dat"), 0, sb, sizeof(sb));
	memset(junk, 0xAB, sizeof(junk));
	if (extra)
		write_at(vpath(dir, vid, ".dat"), 8, junk, extra);
	write_at(vpath(dir, vid, ".idx"), 0, junk, 0);
}

static void test_version2_volume(void **state)
{
	/* Volumes written by older SeaweedFS: version 2 needles (no append time), some with
	 * the legacy masked CRC. kelp reads and deletes in them but appends only to v3. */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct handmade h = {.version = NEEDLE_VERSION_2, .last_modified = 1600000000};
	const struct ttl one_minute = {1, 1};
	uint8_t *data = make_data(1500, 2);
	struct volume_info info;
	struct volume *v;
	uint64_t dat_size;
	uint32_t size;

	write_super_block(dir, VID, 2, 0);
	append_handmade(dir, VID, 1, 11, data, 1500, &h);
	h.masked_crc = true;
	append_handmade(dir, VID, 2, 12, data, 1000, &h);
	h.masked_crc = false;
	append_handmade(dir, VID, 3, 13, data, 0, &h);
	/* TTL on v2 counts from LastModified (long ago) */
	h.ttl = one_minute;
	append_handmade(dir, VID, 4, 14, data, 10, &h);
	h.ttl.count = 0;
	h.no_idx = true; /* written just before a crash: only in .dat */
	append_handmade(dir, VID, 5, 15, data, 700, &h);
	dat_size = file_size(vpath(dir, VID, ".dat"));
	append_file(vpath(dir, VID, ".dat"), "\0\0\0", 3);

	o.create = false;
	v = open_vol(dir, VID, &o);
	volume_get_info(v, &info);
	assert_int_equal(info.version, 2);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), dat_size);
	expect_blob(v, 1, 11, data, 1500);
	expect_blob(v, 2, 12, data, 1000);
	assert_int_equal(read_status(v, 3, 13), 0);
	assert_int_equal(read_status(v, 4, 14), -ENOENT);
	expect_blob(v, 5, 15, data, 700);
	assert_int_equal(read_status(v, 1, 12), -EPERM);
	/* damage on a masked-CRC needle is still caught */
	{
		uint64_t off;

		assert_true(idx_lookup(dir, VID, 2, &off, &size));
		flip_byte(vpath(dir, VID, ".dat"), off + 20 + 10);
		assert_int_equal(read_status(v, 2, 12), -EBADMSG);
		flip_byte(vpath(dir, VID, ".dat"), off + 20 + 10);
	}
	/* no appends of needles to a v2 volume, no vacuum; deletes work */
	assert_int_equal(put(v, 9, 1, data, 10), -EROFS);
	assert_int_equal(volume_compact(v), -EROFS);
	assert_int_equal(volume_delete(v, 1, 11, &size), 0);
	assert_int_equal(read_status(v, 1, 11), -ENOENT);
	v = reopen_vol(v, dir, VID);
	assert_int_equal(read_status(v, 1, 11), -ENOENT);
	expect_blob(v, 2, 12, data, 1000);
	expect_blob(v, 5, 15, data, 700);
	volume_close(v);
	free(data);
}

static void test_super_block_extra(void **state)
{
	/* A super block with extra bytes (SeaweedFS's SuperBlockExtra): needles start after
	 * them, and a missing index is rebuilt from there. */
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct handmade h = {
	    .version = NEEDLE_VERSION_3, .append_at_ns = wall_ns(), .no_idx = true};
	uint8_t *data = make_data(900, 3);
	struct volume *v;
	struct model m;

	write_super_block(dir, VID, 3, 16);
	assert_int_equal(append_handmade(dir, VID, 1, cookie_of(1), data, 900, &h), 24);
	h.append_at_ns++;
	append_handmade(dir, VID, 2, cookie_of(2), data, 800, &h);
	o.create = false;
	v = open_vol(dir, VID, &o);
	expect_blob(v, 1, cookie_of(1), data, 900);
	expect_blob(v, 2, cookie_of(2), data, 800);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), 2 * VOLUME_IDX_ENTRY_SIZE);
	/* appends and vacuum keep working */
	model_init(&m, 10);
	model_put(v, &m, 3, 100, 3);
	assert_int_equal(volume_delete(v, 2, cookie_of(2), NULL), 0);
	v = reopen_vol(v, dir, VID);
	expect_blob(v, 1, cookie_of(1), data, 900);
	model_check(v, &m);
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	expect_blob(v, 1, cookie_of(1), data, 900);
	assert_int_equal(read_status(v, 2, cookie_of(2)), -ENOENT);
	model_check(v, &m);
	v = reopen_vol(v, dir, VID);
	expect_blob(v, 1, cookie_of(1), data, 900);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
	free(data);
}

/* ---- vacuum ----------------------------------------------------------------------------- */

static void test_garbage_ratio(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct model m;
	double r;

	model_init(&m, 100);
	assert_true(volume_garbage_ratio(v) == 0.0);
	for (uint64_t key = 1; key <= 10; key++)
		model_put(v, &m, key, 1000, key);
	assert_true(volume_garbage_ratio(v) == 0.0);
	for (uint64_t key = 1; key <= 5; key++)
		model_del(v, &m, key);
	r = volume_garbage_ratio(v);
	assert_true(r > 0.45 && r < 0.55);
	/* an overwrite is garbage too */
	model_put(v, &m, 6, 1000, 66);
	assert_true(volume_garbage_ratio(v) > r);
	/* the ratio survives a reload */
	r = volume_garbage_ratio(v);
	v = reopen_vol(v, dir, VID);
	assert_true(volume_garbage_ratio(v) == r);
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	assert_true(volume_garbage_ratio(v) == 0.0);
	model_check(v, &m);
	v = reopen_vol(v, dir, VID);
	assert_true(volume_garbage_ratio(v) == 0.0);
	volume_close(v);
	model_free(&m);
}

static void test_vacuum(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct volume_info info;
	struct model m;
	uint64_t size_before;
	uint8_t sb[8];
	int fd;

	model_init(&m, 300);
	/* misuse first */
	assert_int_equal(volume_commit_compact(v), -EINVAL);

	for (uint64_t key = 1; key <= 100; key++)
		model_put(v, &m, key, 1000 + (uint32_t)(key * 53 % 2000), key);
	for (uint64_t key = 2; key <= 100; key += 2)
		model_del(v, &m, key);
	assert_true(volume_garbage_ratio(v) > 0.0);
	size_before = file_size(vpath(dir, VID, ".dat"));

	assert_int_equal(volume_compact(v), 0);
	volume_get_info(v, &info);
	assert_true(info.compacting);
	assert_true(file_exists(vpath(dir, VID, ".cpd")));
	assert_true(file_exists(vpath(dir, VID, ".cpx")));
	assert_int_equal(volume_compact(v), -EBUSY);
	/* the compact window: writes, overwrites and deletes go on */
	for (uint64_t key = 201; key <= 210; key++)
		model_put(v, &m, key, 700, key);
	model_put(v, &m, 1, 1500, 1001);		 /* compacted, then overwritten */
	model_put_cookie(v, &m, 2, 800, 1002, 0xabcdef); /* deleted before, written again */
	model_del(v, &m, 3);
	model_del(v, &m, 5);
	model_del(v, &m, 201);
	model_put(v, &m, 202, 10, 2002); /* written twice in the window */
	model_check(v, &m);
	assert_int_equal(volume_commit_compact(v), 0);

	volume_get_info(v, &info);
	assert_false(info.compacting);
	assert_int_equal(info.compact_revision, 1);
	assert_int_equal(info.live_count, model_live(&m));
	assert_no_compaction_files(dir, VID);
	assert_true(file_size(vpath(dir, VID, ".dat")) < size_before);
	assert_int_equal(info.size, file_size(vpath(dir, VID, ".dat")));
	model_check(v, &m);
	fd = open(vpath(dir, VID, ".dat"), O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, sb, 8), 8);
	close(fd);
	assert_int_equal(sb[0], 3);
	assert_int_equal(get_be16(sb + 4), 1);
	/* after commit: not compacting any more */
	assert_int_equal(volume_commit_compact(v), -EINVAL);

	/* reload: the same */
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_get_info(v, &info);
	assert_int_equal(info.compact_revision, 1);
	assert_int_equal(info.live_count, model_live(&m));
	/* writes after a vacuum, and a second vacuum */
	model_put(v, &m, 250, 3000, 250);
	model_del(v, &m, 7);
	size_before = file_size(vpath(dir, VID, ".dat"));
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	volume_get_info(v, &info);
	assert_int_equal(info.compact_revision, 2);
	assert_true(volume_garbage_ratio(v) == 0.0);
	assert_true(file_size(vpath(dir, VID, ".dat")) < size_before);
	model_check(v, &m);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);

	/* cleanup abandons a compaction */
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_cleanup_compact(v), 0);
	assert_false(file_exists(vpath(dir, VID, ".cpd")));
	assert_false(file_exists(vpath(dir, VID, ".cpx")));
	volume_get_info(v, &info);
	assert_false(info.compacting);
	assert_int_equal(info.compact_revision, 2);
	assert_int_equal(volume_commit_compact(v), -EINVAL);
	model_check(v, &m);

	/* an empty volume compacts to a bare super block */
	for (uint64_t key = 1; key < m.cap; key++)
		if (m.state[key] == KEY_LIVE)
			model_del(v, &m, key);
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	assert_int_equal(file_size(vpath(dir, VID, ".dat")), 8);
	assert_int_equal(file_size(vpath(dir, VID, ".idx")), 0);
	model_check(v, &m);
	v = reopen_vol(v, dir, VID);
	model_check(v, &m);
	volume_close(v);
	model_free(&m);
}

static int fault_step, fault_hits;

static int fault_at_step(int step)
{
	if (step == fault_step) {
		fault_hits++;
		return 1;
	}
	return 0;
}

static void test_vacuum_crash(void **state)
{
	const char *dir = *state;

	for (int step = VACUUM_STEP_COMPACT_COPIED; step <= VACUUM_STEP_COMMIT_IDX_RENAMED;
	     step++) {
		struct volume_options o = create_opts();
		uint32_t vid = 100 + (uint32_t)step;
		struct volume *v;
		struct volume_info info;
		struct model m;
		uint64_t size_before, size_window;
		int ret;

		o.fault = fault_at_step;
		fault_step = step;
		fault_hits = 0;
		v = open_vol(dir, vid, &o);
		model_init(&m, 100);
		for (uint64_t key = 1; key <= 40; key++)
			model_put(v, &m, key, 300 + (uint32_t)key * 11, key + 100 * (uint64_t)step);
		for (uint64_t key = 1; key <= 40; key += 3)
			model_del(v, &m, key);
		size_before = file_size(vpath(dir, vid, ".dat"));

		ret = volume_compact(v);
		/* writes go on during the compact window */
		for (uint64_t key = 41; key <= 45; key++)
			model_put(v, &m, key, 400, key);
		model_put(v, &m, 2, 999, 2222);
		model_del(v, &m, 5);
		model_del(v, &m, 41);
		size_window = file_size(vpath(dir, vid, ".dat"));
		if (step == VACUUM_STEP_COMPACT_COPIED) {
			assert_int_not_equal(ret, 0);
		} else {
			assert_int_equal(ret, 0);
			ret = volume_commit_compact(v);
			assert_int_not_equal(ret, 0);
		}
		assert_int_equal(fault_hits, 1);

		/* "crash": drop the process state, reopen without the fault */
		volume_close(v);
		o.fault = NULL;
		o.create = false;
		v = open_vol(dir, vid, &o);
		model_check(v, &m);
		assert_no_compaction_files(dir, vid);
		volume_get_info(v, &info);
		assert_int_equal(info.live_count, model_live(&m));
		/* before the marker: rolled back; from the marker on: rolled forward */
		if (step <= VACUUM_STEP_COMMIT_REPLAYED) {
			assert_int_equal(info.compact_revision, 0);
			assert_int_equal(file_size(vpath(dir, vid, ".dat")), size_window);
		} else {
			assert_int_equal(info.compact_revision, 1);
			assert_true(file_size(vpath(dir, vid, ".dat")) < size_before);
		}
		/* the volume is usable: write, vacuum again, reload */
		model_put(v, &m, 60, 100, 60);
		assert_int_equal(volume_compact(v), 0);
		assert_int_equal(volume_commit_compact(v), 0);
		model_check(v, &m);
		v = reopen_vol(v, dir, vid);
		model_check(v, &m);
		assert_no_compaction_files(dir, vid);
		volume_close(v);
		model_free(&m);
	}
}

/* ---- the volumes written by SeaweedFS ---------------------------------------------------- */

/* tests/data/seaweedfs of the repository (KELP_COMPAT_DIR at build time) or $KELP_COMPAT_DIR. */
static const char *compat_dir(void)
{
	const char *dir = getenv("KELP_COMPAT_DIR");

	return dir && *dir ? dir : KELP_COMPAT_DIR;
}

/*
 * Copies <compat>/<name>.dat/.idx to <dir>/<vid>.dat/.idx. The files are part of the
 * repository: a missing one fails the test.
 */
static void install_compat_volume(const char *dir, const char *name, uint32_t vid)
{
	const char *exts[] = {".dat", ".idx"};
	char from[4096];

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		snprintf(from, sizeof(from), "%s/%s%s", compat_dir(), name, exts[i]);
		if (!file_exists(from))
			fail_msg(
			    "%s is missing (the SeaweedFS compatibility files, tests/data/seaweedfs)",
			    from);
		copy_file(from, vpath(dir, vid, exts[i]));
	}
}

static json_t *load_expected(const char *name)
{
	char path[4096];
	json_error_t err;
	json_t *j;

	snprintf(path, sizeof(path), "%s/%s.expected.json", compat_dir(), name);
	j = json_load_file(path, 0, &err);
	if (!j)
		fail_msg("%s: %s", path, err.text);
	return j;
}

/* Checks every key of the expected file; keys whose crc_ok is false must be refused. */
static void check_compat_volume(struct volume *v, json_t *expected, size_t *live, size_t *deleted,
				size_t *damaged)
{
	json_t *needles = json_object_get(expected, "needles"), *n;
	size_t i;

	*live = *deleted = *damaged = 0;
	assert_true(json_is_array(needles));
	json_array_foreach(needles, i, n)
	{
		uint64_t key = (uint64_t)json_integer_value(json_object_get(n, "key"));
		uint32_t cookie = (uint32_t)json_integer_value(json_object_get(n, "cookie"));
		struct volume_blob b;
		const char *name, *etag;
		char hex[16];
		uint8_t *data;
		int ret;

		if (json_is_true(json_object_get(n, "deleted"))) {
			assert_int_equal(read_status(v, key, 0), -ENOENT);
			(*deleted)++;
			continue;
		}
		ret = volume_read(v, key, cookie, &b);
		if (!json_is_true(json_object_get(n, "crc_ok"))) {
			if (ret != -EBADMSG)
				fail_msg("damaged key %" PRIu64
					 ": volume_read returned %d, expected -EBADMSG",
					 key, ret);
			(*damaged)++;
			continue;
		}
		if (ret != 0)
			fail_msg("key %" PRIu64 ": volume_read returned %d", key, ret);
		assert_int_equal(b.n.cookie, cookie);
		assert_int_equal(b.n.size, json_integer_value(json_object_get(n, "size_field")));
		assert_int_equal(b.n.data_size,
				 json_integer_value(json_object_get(n, "data_size")));
		assert_int_equal(b.n.flags, json_integer_value(json_object_get(n, "flags")));
		assert_int_equal(b.n.last_modified,
				 json_integer_value(json_object_get(n, "last_modified")));
		name = json_string_value(json_object_get(n, "name"));
		assert_non_null(name);
		assert_int_equal(b.n.name_len, strlen(name));
		assert_memory_equal(b.n.name, name, b.n.name_len);
		assert_int_equal(b.n.mime_len,
				 strlen(json_string_value(json_object_get(n, "mime"))));
		etag = json_string_value(json_object_get(n, "etag"));
		data = blob_data(&b);
		snprintf(hex, sizeof(hex), "%08x", crc32c(0, data, b.n.data_size));
		assert_string_equal(hex, etag);
		snprintf(hex, sizeof(hex), "%08x", b.n.checksum);
		assert_string_equal(hex, etag);
		free(data);
		volume_blob_release(&b);
		/* the wrong cookie is refused */
		assert_int_equal(read_status(v, key, cookie ^ 1), -EPERM);
		(*live)++;
	}
}

static void test_seaweedfs_healthy_volume(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume_info info;
	struct volume *v;
	json_t *expected;
	size_t live, deleted, damaged;
	uint64_t dat_size, idx_size;
	uint8_t *data = make_data(4321, 5);

	install_compat_volume(dir, "healthy_volume", 5);
	expected = load_expected("healthy_volume");
	dat_size = file_size(vpath(dir, 5, ".dat"));
	idx_size = file_size(vpath(dir, 5, ".idx"));
	o.create = false;
	v = open_vol(dir, 5, &o);
	volume_get_info(v, &info);
	assert_int_equal(info.file_count, 17);
	assert_int_equal(info.delete_count, 10);
	assert_int_equal(info.live_count, 7);
	assert_int_equal(info.version, 3);
	assert_int_equal(info.replica_placement,
			 json_integer_value(json_object_get(expected, "replica_placement_byte")));
	assert_int_equal(info.max_file_key, 48);
	assert_int_equal(info.size, dat_size);
	assert_int_equal(idx_size, json_integer_value(json_object_get(expected, "index_entries")) *
				       VOLUME_IDX_ENTRY_SIZE);
	check_compat_volume(v, expected, &live, &deleted, &damaged);
	assert_int_equal(live, 7);
	assert_int_equal(deleted, 10);
	assert_int_equal(damaged, 0);
	/* a healthy volume is not modified by opening it */
	assert_int_equal(file_size(vpath(dir, 5, ".dat")), dat_size);
	assert_int_equal(file_size(vpath(dir, 5, ".idx")), idx_size);

	/* kelp can append to it, and vacuum it, and it still reads the same */
	assert_int_equal(put(v, 1000, 42, data, 4321), 0);
	v = reopen_vol(v, dir, 5);
	check_compat_volume(v, expected, &live, &deleted, &damaged);
	expect_blob(v, 1000, 42, data, 4321);
	assert_int_equal(volume_compact(v), 0);
	assert_int_equal(volume_commit_compact(v), 0);
	assert_true(file_size(vpath(dir, 5, ".dat")) < dat_size);
	check_compat_volume(v, expected, &live, &deleted, &damaged);
	assert_int_equal(live, 7);
	expect_blob(v, 1000, 42, data, 4321);
	volume_get_info(v, &info);
	assert_int_equal(info.replica_placement, 2);
	assert_int_equal(info.compact_revision, 1);
	volume_close(v);
	json_decref(expected);
	free(data);
}

static void test_seaweedfs_bitrot_volume(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume_info info;
	struct volume *v;
	json_t *expected;
	size_t live, deleted, damaged;
	uint64_t dat_size;

	install_compat_volume(dir, "bitrot_volume", 5);
	expected = load_expected("bitrot_volume");
	dat_size = file_size(vpath(dir, 5, ".dat"));
	o.create = false;
	v = open_vol(dir, 5, &o);
	check_compat_volume(v, expected, &live, &deleted, &damaged);
	assert_int_equal(live, 5);
	assert_int_equal(deleted, 10);
	assert_int_equal(damaged, 2);
	volume_get_info(v, &info);
	assert_int_equal(info.file_count, 17);
	assert_int_equal(info.delete_count, 10);
	/* the stray byte is cut, nothing else */
	assert_int_equal(file_size(vpath(dir, 5, ".dat")), dat_size - 1);
	assert_int_equal(info.size, dat_size - 1);
	v = reopen_vol(v, dir, 5);
	check_compat_volume(v, expected, &live, &deleted, &damaged);
	assert_int_equal(live, 5);
	assert_int_equal(damaged, 2);
	assert_int_equal(file_size(vpath(dir, 5, ".dat")), dat_size - 1);
	volume_close(v);
	json_decref(expected);
}

/* ---- concurrency and scale ---------------------------------------------------------------- */

struct writer_arg {
	struct volume *v;
	uint64_t first;
	int ret;
};

static void *writer_thread(void *p)
{
	struct writer_arg *a = p;

	for (uint64_t i = 0; i < 200 && a->ret == 0; i++) {
		uint64_t key = a->first + i;
		uint32_t len = (uint32_t)(key % 3000);
		uint8_t *data = make_data(len, key);
		struct needle n;
		struct volume_data d = {
		    .mem = data, .fd = -1, .len = len, .crc = crc32c(0, data, len)};
		struct volume_blob b;

		memset(&n, 0, sizeof(n));
		n.cookie = cookie_of(key);
		n.id = key;
		/* every tenth write waits for the group fsync */
		a->ret = volume_write(a->v, &n, &d, i % 10 == 0, NULL);
		if (a->ret == 0) {
			a->ret = volume_read(a->v, key, cookie_of(key), &b);
			if (a->ret == 0) {
				if (b.n.data_size != len ||
				    (len && memcmp(b.n.data, data, len) != 0))
					a->ret = -EIO;
				volume_blob_release(&b);
			}
		}
		if (a->ret == 0 && i % 4 == 0)
			a->ret = volume_delete(a->v, key, cookie_of(key), NULL);
		free(data);
	}
	return NULL;
}

static void test_concurrent_writers(void **state)
{
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct writer_arg args[4];
	pthread_t th[4];

	for (int t = 0; t < 4; t++) {
		args[t] = (struct writer_arg){.v = v, .first = 1 + (uint64_t)t * 1000, .ret = 0};
		assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &args[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(args[t].ret, 0);
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int t = 0; t < 4; t++) {
			for (uint64_t i = 0; i < 200; i++) {
				uint64_t key = args[t].first + i;
				uint32_t len = (uint32_t)(key % 3000);

				if (i % 4 == 0) {
					assert_int_equal(read_status(v, key, cookie_of(key)),
							 -ENOENT);
				} else {
					uint8_t *data = make_data(len, key);
					struct volume_blob b;

					assert_int_equal(volume_read(v, key, cookie_of(key), &b),
							 0);
					assert_int_equal(b.n.data_size, len);
					if (len)
						assert_memory_equal(b.n.data, data, len);
					volume_blob_release(&b);
					free(data);
				}
			}
		}
		v = reopen_vol(v, dir, VID);
	}
	volume_close(v);
}

static void test_load_one_million(void **state)
{
	enum { N = 1000000 };
	const char *dir = *state;
	struct volume_options o = create_opts();
	struct volume *v = open_vol(dir, VID, &o);
	struct volume_info info;
	double t0, t_write, t_load;
	uint8_t data[8];

	t0 = now_seconds();
	for (uint64_t key = 1; key <= N; key++) {
		struct needle n;
		struct volume_data d = {.mem = data, .fd = -1, .len = sizeof(data)};

		put_be64(data, key);
		d.crc = crc32c(0, data, sizeof(data));
		memset(&n, 0, sizeof(n));
		n.cookie = (uint32_t)key;
		n.id = key;
		if (volume_write(v, &n, &d, false, NULL) != 0)
			fail_msg("write %" PRIu64 " failed", key);
	}
	t_write = now_seconds() - t0;
	volume_close(v);

	o.create = false;
	t0 = now_seconds();
	v = open_vol(dir, VID, &o);
	t_load = now_seconds() - t0;
	volume_get_info(v, &info);
	printf("volume: 1,000,000 needles written in %.2f s, loaded in %.3f s (target < 1 s), "
	       "map %.1f bytes/needle, .dat %" PRIu64 " bytes\n",
	       t_write, t_load, (double)volume_map_memory(v) / N, info.size);
	assert_int_equal(info.live_count, N);
	assert_int_equal(info.file_count, N);
	assert_true((double)volume_map_memory(v) / N <= 40.0);
	for (uint64_t key = 1; key <= N; key += 9973) {
		struct volume_blob b;

		assert_int_equal(volume_read(v, key, (uint32_t)key, &b), 0);
		assert_int_equal(b.n.data_size, 8);
		assert_true(get_be64(b.n.data) == key);
		volume_blob_release(&b);
	}
	assert_true(t_load < 5.0);
	volume_close(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)
	    T(test_open_and_names),
	    T(test_bad_super_block),
	    T(test_write_read_delete_reload),
	    T(test_cookie_mismatch),
	    T(test_delete_missing),
	    T(test_unchanged_rewrite),
	    T(test_empty_blob),
	    T(test_write_from_fd),
	    T(test_large_blob),
	    T(test_corruption),
	    T(test_ttl_expiry),
	    T(test_volume_expired),
	    T(test_max_size),
	    T(test_read_only),
	    T(test_torn_tail_random),
	    T(test_torn_tail_partial_needle),
	    T(test_torn_tail_zeros),
	    T(test_unindexed_needles_at_tail),
	    T(test_idx_partial_entry),
	    T(test_idx_missing_entries),
	    T(test_idx_past_end_of_dat),
	    T(test_idx_bitrot_does_not_cut_dat),
	    T(test_idx_entry_key_zero),
	    T(test_seaweedfs_offset0_deletions_at_tail),
	    T(test_idx_tombstone_entry_on_live_needle),
	    T(test_append_time_monotonic_across_reopen),
	    T(test_version2_volume),
	    T(test_super_block_extra),
	    T(test_garbage_ratio),
	    T(test_vacuum),
	    T(test_vacuum_crash),
	    T(test_seaweedfs_healthy_volume),
	    T(test_seaweedfs_bitrot_volume),
	    T(test_concurrent_writers),
	    T(test_load_one_million),
#undef T
	};

	/* Repairs log warnings by design; keep the output to errors unless asked. */
	if (!getenv("KELP_LOG"))
		log_set_level(LOG_LEVEL_ERROR);
	else
		log_init_from_env();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
