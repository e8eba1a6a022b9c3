/*
 * fuzz_idx: volume_open with an arbitrary .idx next to a small, valid .dat.
 *
 * Once per process a volume is built with volume_write in a temp dir (a few needles:
 * an overwrite, an empty blob, a deletion, a 64-bit key) and its .dat kept in memory.
 * Each input becomes the .idx of a fresh copy of that .dat (open may cut .dat), then:
 *   - volume_open must succeed: a bad index is repaired, never fatal;
 *   - every key named by a whole entry of the input, and every key of the volume, is
 *     read: the result is 0, -ENOENT, -EPERM or -EBADMSG; a key of the volume read with
 *     its own cookie never gives -EPERM, and whatever it returns is one of the versions
 *     written under that key (never another needle's bytes);
 *   - open never cuts the .dat: it is intact, so cutting it loses good needles because
 *     of a bad index (KELP_FUZZ_IDX_ALLOW_CUT=1 turns this check off, to look for other
 *     bugs while a known one is being fixed);
 *   - a new needle can be written and read back, the volume vacuumed, and after the
 *     vacuum and a reopen the same holds.
 * The temp dir is made under $TMPDIR (default /tmp); /dev/shm makes fuzzing much faster,
 * since the vacuum fsyncs.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/storage/needle.h"
#include "cluster/storage/volume.h"

static void fail(const char *file, int line, const char *what);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail(__FILE__, __LINE__, #cond);                                           \
	} while (0)

#define VID	1
#define NEW_KEY 0xFEEDFACEull

/* The needles of the fixed volume, in write order; a key may appear more than once. */
static const struct {
	uint64_t key;
	uint32_t len;
	uint8_t seed;
	bool deleted_after; /* deleted once all writes are done */
} writes[] = {
    {1, 100, 1, false}, {2, 1000, 2, false}, {3, 0, 3, false},
    {4, 3000, 4, true}, {5, 1, 5, false},    {0x123456789abcdef0ull, 200, 6, false},
    {2, 50, 7, false},	{7, 5000, 8, false},
};
#define NWRITES (sizeof(writes) / sizeof(writes[0]))

static char dir[4096];
static char dat_path[4200], idx_path[4200];
static uint8_t *golden_dat;
static size_t golden_len;
static bool allow_cut;

static uint32_t cookie_of(uint64_t key)
{
	return (uint32_t)(key * 2654435761u) ^ 0x5eed5eedu;
}

static void fill(uint8_t *buf, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 37 + i * 11 + (i >> 8));
}

static bool is_golden_key(uint64_t key)
{
	for (size_t i = 0; i < NWRITES; i++)
		if (writes[i].key == key)
			return true;
	return false;
}

/* True if data is one of the versions written under key. */
static bool matches_a_version(uint64_t key, const uint8_t *data, uint32_t len)
{
	uint8_t buf[5000];

	for (size_t i = 0; i < NWRITES; i++) {
		if (writes[i].key != key || writes[i].len != len)
			continue;
		fill(buf, len, writes[i].seed);
		if (len == 0 || memcmp(buf, data, len) == 0)
			return true;
	}
	return false;
}

static void write_file(const char *path, const uint8_t *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	CHECK(fd >= 0);
	CHECK(len == 0 || write(fd, data, len) == (ssize_t)len);
	close(fd);
}

static void remove_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4400];

	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

/* Reports a failed check, removes the temp dir (abort skips atexit) and aborts. */
static void fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
	if (dir[0])
		remove_dir();
	abort();
}

static int put(struct volume *v, uint64_t key, const uint8_t *data, uint32_t len)
{
	struct needle n;
	struct volume_data d = {.mem = data, .fd = -1, .len = len, .crc = crc32c(0, data, len)};

	memset(&n, 0, sizeof(n));
	n.cookie = cookie_of(key);
	n.id = key;
	n.name = "name.bin";
	n.name_len = 8;
	n.mime = "application/octet-stream";
	n.mime_len = 24;
	n.flags = NEEDLE_FLAG_HAS_LAST_MOD;
	n.last_modified = 1700000000;
	return volume_write(v, &n, &d, false, NULL);
}

static void init_once(void)
{
	struct volume_options opt = {.create = true};
	struct volume *v;
	uint8_t buf[5000];
	struct stat st;
	int fd;

	if (golden_dat)
		return;
	allow_cut =
	    getenv("KELP_FUZZ_IDX_ALLOW_CUT") && atoi(getenv("KELP_FUZZ_IDX_ALLOW_CUT")) != 0;
	if (!getenv("KELP_LOG"))
		log_set_level(LOG_LEVEL_ERROR);
	snprintf(dir, sizeof(dir), "%s/kelp-fuzz-idx-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	atexit(remove_dir);
	CHECK(volume_file_name(dir, NULL, VID, ".dat", dat_path, sizeof(dat_path)) == 0);
	CHECK(volume_file_name(dir, NULL, VID, ".idx", idx_path, sizeof(idx_path)) == 0);
	CHECK(volume_open(dir, NULL, VID, &opt, &v) == 0);
	for (size_t i = 0; i < NWRITES; i++) {
		fill(buf, writes[i].len, writes[i].seed);
		CHECK(put(v, writes[i].key, buf, writes[i].len) == 0);
	}
	for (size_t i = 0; i < NWRITES; i++)
		if (writes[i].deleted_after)
			CHECK(volume_delete(v, writes[i].key, cookie_of(writes[i].key), NULL) == 0);
	volume_close(v);

	fd = open(dat_path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(fstat(fd, &st) == 0);
	golden_len = (size_t)st.st_size;
	golden_dat = malloc(golden_len);
	CHECK(golden_dat != NULL);
	CHECK(read(fd, golden_dat, golden_len) == (ssize_t)golden_len);
	close(fd);
}

/* Reads key; checks the result class and, for the volume's own keys, the content. */
static void read_key(struct volume *v, uint64_t key)
{
	bool golden = is_golden_key(key);
	struct volume_blob b;
	int ret = volume_read(v, key, golden || key == NEW_KEY ? cookie_of(key) : 0, &b);

	CHECK(ret == 0 || ret == -ENOENT || ret == -EPERM || ret == -EBADMSG);
	if (ret != 0) {
		/* only another needle's record can carry another cookie */
		CHECK(!(golden && ret == -EPERM));
		return;
	}
	CHECK(b.n.id == key);
	CHECK(b.n.data != NULL || b.n.data_size == 0 || b.fd >= 0);
	if (is_golden_key(key) && b.n.data_size > 0 && b.n.data)
		CHECK(matches_a_version(key, b.n.data, b.n.data_size));
	volume_blob_release(&b);
}

static void read_all(struct volume *v, const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < NWRITES; i++)
		read_key(v, writes[i].key);
	for (size_t p = 0; p + VOLUME_IDX_ENTRY_SIZE <= size; p += VOLUME_IDX_ENTRY_SIZE)
		read_key(v, get_be64(data + p));
	read_key(v, 0);
	read_key(v, UINT64_MAX);
}

static void check_info(struct volume *v)
{
	struct volume_info info;
	struct stat st;

	volume_get_info(v, &info);
	CHECK(stat(dat_path, &st) == 0);
	CHECK(info.size == (uint64_t)st.st_size);
	CHECK(info.size >= VOLUME_SUPER_BLOCK_SIZE && info.size % 8 == 0);
	CHECK(info.live_count <= info.file_count);
	CHECK(stat(idx_path, &st) == 0);
	CHECK(st.st_size % VOLUME_IDX_ENTRY_SIZE == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct volume_options opt = {.create = false};
	struct volume *v = NULL;
	uint8_t fresh[777];
	struct volume_blob b;
	bool written;
	int ret;

	init_once();
	write_file(dat_path, golden_dat, golden_len);
	write_file(idx_path, data, size);

	ret = volume_open(dir, NULL, VID, &opt, &v);
	CHECK(ret == 0);
	check_info(v);
	if (!allow_cut) {
		struct stat st;

		CHECK(stat(dat_path, &st) == 0);
		CHECK((size_t)st.st_size == golden_len);
	}
	read_all(v, data, size);

	/* the repaired volume takes new writes */
	fill(fresh, sizeof(fresh), 99);
	ret = put(v, NEW_KEY, fresh, sizeof(fresh));
	CHECK(ret == 0 || ret == -EPERM);
	written = ret == 0;
	if (written) {
		CHECK(volume_read(v, NEW_KEY, cookie_of(NEW_KEY), &b) == 0);
		CHECK(b.n.data_size == sizeof(fresh) &&
		      memcmp(b.n.data, fresh, sizeof(fresh)) == 0);
		volume_blob_release(&b);
	}

	/* vacuum whatever map the index produced */
	CHECK(volume_compact(v) == 0);
	CHECK(volume_commit_compact(v) == 0);
	check_info(v);
	read_all(v, data, size);
	volume_close(v);

	CHECK(volume_open(dir, NULL, VID, &opt, &v) == 0);
	check_info(v);
	read_all(v, data, size);
	if (written) {
		CHECK(volume_read(v, NEW_KEY, cookie_of(NEW_KEY), &b) == 0);
		CHECK(b.n.data_size == sizeof(fresh) &&
		      memcmp(b.n.data, fresh, sizeof(fresh)) == 0);
		volume_blob_release(&b);
	}
	volume_close(v);
	return 0;
}
