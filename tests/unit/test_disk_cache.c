/*
 * Unit tests for cache/disk_cache: chunks kept as checksummed files in a directory,
 * bounded by a byte capacity with LRU (mtime) eviction. Each test works in a fresh
 * temporary directory under /tmp; LRU order is set with explicit mtimes (no sleeps).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/disk_cache.h"

#define HEADER 24 /* bytes of header per file (magic, length, crc32c) */

struct fx {
	char base[64];
	char dir[128]; /* base/cache/sub: created by disk_cache_open */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->base, "/tmp/kelp-test-disk-cache-XXXXXX");
	assert_non_null(mkdtemp(f->base));
	snprintf(f->dir, sizeof(f->dir), "%s/cache/sub", f->base);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 31 + seed);
	return p;
}

static void expect_hit(struct disk_cache *c, const char *fid, size_t len, unsigned seed)
{
	uint8_t *data = NULL, *want = pattern(len, seed);
	size_t got = 12345;

	assert_int_equal(disk_cache_get(c, fid, &data, &got), 0);
	assert_int_equal(got, len);
	if (len)
		assert_memory_equal(data, want, len);
	free(data);
	free(want);
}

static void expect_miss(struct disk_cache *c, const char *fid)
{
	uint8_t *data = NULL;
	size_t len = 0;

	assert_int_equal(disk_cache_get(c, fid, &data, &len), -ENOENT);
}

static void put(struct disk_cache *c, const char *fid, size_t len, unsigned seed)
{
	uint8_t *p = pattern(len, seed);

	disk_cache_put(c, fid, p, len);
	free(p);
}

/* The file holding fid ("3,01ab" is stored as "3_01ab"). */
static void file_of(const struct fx *f, const char *fid, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "%s/", f->dir);

	for (; *fid && n + 1 < cap; fid++)
		buf[n++] = *fid == ',' ? '_' : *fid;
	buf[n] = '\0';
}

static void set_mtime(const struct fx *f, const char *fid, time_t sec)
{
	char path[256];
	struct timespec ts[2] = {{sec, 0}, {sec, 0}};

	file_of(f, fid, path, sizeof(path));
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* Total size of the regular files in the cache directory, and their number. */
static uint64_t bytes_on_disk(const struct fx *f, int *files)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;
	uint64_t total = 0;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		assert_int_equal(fstatat(dirfd(d), de->d_name, &st, 0), 0);
		total += (uint64_t)st.st_size;
		n++;
	}
	closedir(d);
	if (files)
		*files = n;
	return total;
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);
	int files;

	assert_non_null(c);
	assert_true(disk_cache_bytes(c) == 0);
	expect_miss(c, "1,abc");
	put(c, "1,abc", 1000, 1);
	expect_hit(c, "1,abc", 1000, 1);
	assert_true(disk_cache_bytes(c) == 1000 + HEADER);
	expect_miss(c, "1,abd");
	expect_miss(c, "2,abc");
	put(c, "2,0123456789abcdef_1", 0, 0); /* an empty chunk */
	expect_hit(c, "2,0123456789abcdef_1", 0, 0);
	put(c, "3,ff", 70000, 3);
	expect_hit(c, "3,ff", 70000, 3);
	assert_true(disk_cache_bytes(c) == 1000 + 0 + 70000 + 3 * HEADER);
	assert_true(bytes_on_disk(f, &files) == disk_cache_bytes(c));
	assert_int_equal(files, 3);
	/* Bigger than the whole cache: not stored. */
	put(c, "4,aa", 1 << 20, 4);
	expect_miss(c, "4,aa");
	assert_true(disk_cache_bytes(c) == 1000 + 0 + 70000 + 3 * HEADER);
	disk_cache_close(c);
	disk_cache_close(NULL);
}

/* Rewrites the file of fid through fn, then checks that it reads as a miss. */
static void damage(struct fx *f, struct disk_cache *c, const char *fid,
		   void (*fn)(const char *path, void *arg), void *arg)
{
	char path[256];

	file_of(f, fid, path, sizeof(path));
	fn(path, arg);
	expect_miss(c, fid);
}

static void flip_byte(const char *path, void *arg)
{
	long at = *(long *)arg;
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, at), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, at), 1);
	close(fd);
}

static void truncate_to(const char *path, void *arg)
{
	assert_int_equal(truncate(path, *(long *)arg), 0);
}

static void append_byte(const char *path, void *arg)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
}

static void test_damaged(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);
	long at;

	/* A flipped data byte (the checksum). */
	put(c, "1,a1", 500, 1);
	at = HEADER + 250;
	damage(f, c, "1,a1", flip_byte, &at);
	/* A flipped length (first byte of the length field). */
	put(c, "1,a2", 500, 2);
	at = 8 + 7;
	damage(f, c, "1,a2", flip_byte, &at);
	/* A wrong magic. */
	put(c, "1,a3", 500, 3);
	at = 0;
	damage(f, c, "1,a3", flip_byte, &at);
	/* A flipped checksum byte. */
	put(c, "1,a4", 500, 4);
	at = 17;
	damage(f, c, "1,a4", flip_byte, &at);
	/* Truncated data, truncated header, an empty file. */
	put(c, "1,a5", 500, 5);
	at = HEADER + 499;
	damage(f, c, "1,a5", truncate_to, &at);
	put(c, "1,a6", 500, 6);
	at = HEADER - 1;
	damage(f, c, "1,a6", truncate_to, &at);
	put(c, "1,a7", 500, 7);
	at = 0;
	damage(f, c, "1,a7", truncate_to, &at);
	/* Longer than the header says. */
	put(c, "1,a8", 500, 8);
	damage(f, c, "1,a8", append_byte, NULL);
	/* An empty chunk with a wrong checksum. */
	put(c, "1,a9", 0, 0);
	at = 16;
	damage(f, c, "1,a9", flip_byte, &at);

	/* Storing it again repairs it. */
	put(c, "1,a1", 500, 1);
	expect_hit(c, "1,a1", 500, 1);
	/* Undamaged neighbours are fine. */
	put(c, "1,b", 100, 9);
	expect_hit(c, "1,b", 100, 9);
	disk_cache_close(c);
}

static void test_eviction(void **state)
{
	struct fx *f = *state;
	const uint64_t cap = 1000, each = 200 + HEADER;
	struct disk_cache *c = disk_cache_open(f->dir, cap);
	const char *fids[] = {"1,a", "1,b", "1,c", "1,d"};
	int files;

	for (int i = 0; i < 4; i++) {
		put(c, fids[i], 200, (unsigned)i);
		set_mtime(f, fids[i], 1000000 + 1000 * i); /* a oldest ... d newest */
	}
	assert_true(disk_cache_bytes(c) == 4 * each);
	/* A read refreshes a: b is now the least recently used. */
	expect_hit(c, "1,a", 200, 0);
	put(c, "1,e", 200, 4);
	assert_true(disk_cache_bytes(c) <= cap);
	assert_true(disk_cache_bytes(c) == 4 * each);
	assert_true(bytes_on_disk(f, &files) == disk_cache_bytes(c));
	assert_int_equal(files, 4);
	expect_miss(c, "1,b");
	expect_hit(c, "1,a", 200, 0);
	expect_hit(c, "1,c", 200, 2);
	expect_hit(c, "1,d", 200, 3);
	expect_hit(c, "1,e", 200, 4);

	/* Many more: always under the capacity, and the count matches the disk. */
	for (int i = 0; i < 50; i++) {
		char fid[16];

		snprintf(fid, sizeof(fid), "2,%x", i);
		put(c, fid, 100 + (size_t)i * 7, (unsigned)i);
		set_mtime(f, fid, 2000000 + i);
		assert_true(disk_cache_bytes(c) <= cap);
		assert_true(bytes_on_disk(f, NULL) == disk_cache_bytes(c));
	}
	/* The newest is kept. */
	expect_hit(c, "2,31", 100 + 49 * 7, 49);
	disk_cache_close(c);
}

static void test_reopen(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);
	char tmp[256];
	uint64_t used;
	int fd, files;

	put(c, "1,a", 300, 1);
	put(c, "1,b", 400, 2);
	used = disk_cache_bytes(c);
	assert_true(used == 700 + 2 * HEADER);
	disk_cache_close(c);

	/* A temporary file left by a crash is removed at open, not counted. */
	snprintf(tmp, sizeof(tmp), "%s/1_c.7.tmp", f->dir);
	fd = open(tmp, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "partial", 7), 7);
	close(fd);

	c = disk_cache_open(f->dir, 1 << 20);
	assert_non_null(c);
	assert_true(disk_cache_bytes(c) == used);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_true(bytes_on_disk(f, &files) == used);
	assert_int_equal(files, 2);
	expect_hit(c, "1,a", 300, 1);
	expect_hit(c, "1,b", 400, 2);
	disk_cache_close(c);

	/* Reopened with a smaller capacity: the next put evicts down to it. */
	c = disk_cache_open(f->dir, 500);
	assert_true(disk_cache_bytes(c) == used);
	put(c, "1,d", 10, 3);
	assert_true(disk_cache_bytes(c) <= 500);
	assert_true(bytes_on_disk(f, NULL) == disk_cache_bytes(c));
	disk_cache_close(c);
}

static void test_forget(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);

	put(c, "1,a", 300, 1);
	put(c, "1,b", 400, 2);
	disk_cache_forget(c, "1,a");
	expect_miss(c, "1,a");
	expect_hit(c, "1,b", 400, 2);
	assert_true(disk_cache_bytes(c) == 400 + HEADER);
	disk_cache_forget(c, "1,a"); /* absent: harmless */
	disk_cache_forget(c, "../x");
	assert_true(disk_cache_bytes(c) == 400 + HEADER);
	disk_cache_forget(c, "1,b");
	assert_true(disk_cache_bytes(c) == 0);
	assert_true(bytes_on_disk(f, NULL) == 0);
	disk_cache_close(c);
}

/* Storing a fid that is already cached replaces the file: the count must not grow. */
static void test_put_twice(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);

	put(c, "1,a", 300, 1);
	put(c, "1,a", 300, 1);
	expect_hit(c, "1,a", 300, 1);
	assert_true(bytes_on_disk(f, NULL) == 300 + HEADER);
	assert_true(disk_cache_bytes(c) == 300 + HEADER);
	disk_cache_close(c);
}

static void test_invalid_fids(void **state)
{
	struct fx *f = *state;
	struct disk_cache *c = disk_cache_open(f->dir, 1 << 20);
	const char *bad[] = {"", "1,ABC", "../1_a", "1/a", "1,a.tmp", "1,g", " 1,a", "1,a\n"};
	char *longfid = malloc(5000);
	int files;

	assert_non_null(longfid);
	memset(longfid, 'a', 4999);
	longfid[4999] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(c, bad[i], 10, 1);
		expect_miss(c, bad[i]);
		disk_cache_forget(c, bad[i]);
	}
	put(c, longfid, 10, 1);
	expect_miss(c, longfid);
	assert_true(disk_cache_bytes(c) == 0);
	assert_true(bytes_on_disk(f, &files) == 0);
	assert_int_equal(files, 0);
	/* Nothing was written outside the directory either. */
	{
		char outside[256];

		snprintf(outside, sizeof(outside), "%s/cache/1_a", f->base);
		assert_int_equal(access(outside, F_OK), -1);
	}
	/* The valid spellings: digits, lowercase hex, ',' and '_'. */
	put(c, "0123456789,abcdef_9", 10, 1);
	expect_hit(c, "0123456789,abcdef_9", 10, 1);
	free(longfid);
	disk_cache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eviction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_put_twice, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_invalid_fids, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
