#include "fuse/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

#define MAGIC	       "KELPWBJ1"
#define FORMAT	       1u
#define MAX_ENTRY_DATA (1ull << 30) /* a chunk is at most 1 GiB (-chunkSizeLimitMB) */

struct journal {
	char dir[4096];
	int dfd;
	uint64_t limit;
	uint64_t bytes;	   /* atomic */
	uint64_t next_jid; /* atomic */
};

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t crc(const void *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);
	const uint8_t *b = p;

	/* zlib takes uInt lengths */
	while (n > 0) {
		uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;

		c = crc32(c, b, k);
		b += k;
		n -= k;
	}
	return (uint32_t)c;
}

/*
 * Header, little-endian: 0 magic[8], 8 format u32, 12 header size u32, 16 jid, 24 ino,
 * 32 offset, 40 length, 48 write time (ns), 56 data CRC32 u32, 60 header CRC32 u32 (of
 * bytes 0-59).
 */
static void encode_header(uint8_t *h, const struct journal_entry *e, uint32_t data_crc)
{
	memset(h, 0, JOURNAL_HEADER_SIZE);
	memcpy(h, MAGIC, 8);
	put_le32(h + 8, FORMAT);
	put_le32(h + 12, JOURNAL_HEADER_SIZE);
	put_le64(h + 16, e->jid);
	put_le64(h + 24, e->ino);
	put_le64(h + 32, e->off);
	put_le64(h + 40, e->len);
	put_le64(h + 48, (uint64_t)e->write_ns);
	put_le32(h + 56, data_crc);
	put_le32(h + 60, crc(h, 60));
}

/* 0, or a reason the header is not one (why). */
static int decode_header(const uint8_t *h, struct journal_entry *e, uint32_t *data_crc,
			 const char **why)
{
	if (memcmp(h, MAGIC, 8)) {
		*why = "not a journal entry (bad magic)";
		return -EINVAL;
	}
	if (get_le32(h + 60) != crc(h, 60)) {
		*why = "header checksum mismatch";
		return -EINVAL;
	}
	if (get_le32(h + 8) != FORMAT || get_le32(h + 12) != JOURNAL_HEADER_SIZE) {
		*why = "unknown entry format";
		return -EINVAL;
	}
	e->jid = get_le64(h + 16);
	e->ino = get_le64(h + 24);
	e->off = get_le64(h + 32);
	e->len = get_le64(h + 40);
	e->write_ns = (int64_t)get_le64(h + 48);
	*data_crc = get_le32(h + 56);
	if (e->len == 0 || e->len > MAX_ENTRY_DATA || e->off > INT64_MAX ||
	    e->len > (uint64_t)INT64_MAX - e->off || e->ino < 1) {
		*why = "impossible offset, length or inode";
		return -EINVAL;
	}
	return 0;
}

struct journal *journal_open(const char *dir, uint64_t limit, char *err, size_t cap)
{
	struct journal *j = calloc(1, sizeof(*j));
	char sub[4200];

	if (!j) {
		snprintf(err, cap, "out of memory");
		return NULL;
	}
	snprintf(j->dir, sizeof(j->dir), "%s", dir);
	snprintf(sub, sizeof(sub), "%s/damaged", dir);
	if (mkdir_p(dir, 0700) < 0 || mkdir_p(sub, 0700) < 0) {
		snprintf(err, cap, "cannot create %s: %s", sub, strerror(errno));
		free(j);
		return NULL;
	}
	j->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dfd < 0) {
		snprintf(err, cap, "cannot open %s: %s", dir, strerror(errno));
		free(j);
		return NULL;
	}
	j->limit = limit;
	j->next_jid = 1;
	return j;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	close(j->dfd);
	free(j);
}

uint64_t journal_bytes(struct journal *j)
{
	return __atomic_load_n(&j->bytes, __ATOMIC_RELAXED);
}

uint64_t journal_limit(struct journal *j)
{
	return j->limit;
}

const char *journal_dir(struct journal *j)
{
	return j->dir;
}

int journal_append(struct journal *j, uint64_t ino, uint64_t off, const void *data, size_t len,
		   int64_t write_ns, uint64_t *jid)
{
	struct journal_entry e = {.ino = ino, .off = off, .len = len, .write_ns = write_ns};
	uint8_t h[JOURNAL_HEADER_SIZE];
	struct iovec iov[2];
	char tmp[40], name[40];
	uint64_t was;
	int fd, rc;

	if (len == 0 || len > MAX_ENTRY_DATA)
		return -EINVAL;
	/* Reserve the bytes first: two closes at once cannot both pass the bound. */
	was = __atomic_fetch_add(&j->bytes, len, __ATOMIC_RELAXED);
	if (was + len > j->limit) {
		__atomic_fetch_sub(&j->bytes, len, __ATOMIC_RELAXED);
		return -EFBIG;
	}
	e.jid = __atomic_fetch_add(&j->next_jid, 1, __ATOMIC_RELAXED);
	snprintf(tmp, sizeof(tmp), "%016" PRIx64 ".tmp", e.jid);
	snprintf(name, sizeof(name), "%016" PRIx64 ".wbj", e.jid);
	encode_header(h, &e, crc(data, len));
	fd = openat(j->dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	iov[0].iov_base = h;
	iov[0].iov_len = sizeof(h);
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = len;
	rc = pwritev_all(fd, iov, 2, 0);
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && renameat(j->dfd, tmp, j->dfd, name) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(j->dfd, tmp, 0);
		goto fail;
	}
	*jid = e.jid;
	return 0;
fail:
	__atomic_fetch_sub(&j->bytes, len, __ATOMIC_RELAXED);
	return rc < 0 ? rc : -EIO;
}

bool journal_has_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool found = false;

	while (d && !found && (de = readdir(d))) {
		size_t n = strlen(de->d_name);

		found = n > 4 && !strcmp(de->d_name + n - 4, ".wbj");
	}
	if (d)
		closedir(d);
	return found;
}

void journal_remove(struct journal *j, uint64_t jid, uint64_t len)
{
	char name[40];

	snprintf(name, sizeof(name), "%016" PRIx64 ".wbj", jid);
	if (unlinkat(j->dfd, name, 0) < 0 && errno != ENOENT)
		log_warn("mount: cannot remove the journal entry %s/%s: %s (it is replayed "
			 "again at the next mount, which is harmless)",
			 j->dir, name, strerror(errno));
	__atomic_fetch_sub(&j->bytes, len, __ATOMIC_RELAXED);
}

/* Moves a damaged entry aside (never deleted: an operator may want it). */
static void set_aside(struct journal *j, const char *name, const char *why)
{
	char to[300];

	snprintf(to, sizeof(to), "damaged/%s", name);
	log_error("mount: write-back journal entry %s/%s is damaged (%s): moved to %s/%s; its "
		  "bytes are NOT in the file it was written to (the other entries are replayed)",
		  j->dir, name, why, j->dir, to);
	if (renameat(j->dfd, name, j->dfd, to) < 0)
		log_error("mount: cannot move %s/%s aside: %s", j->dir, name, strerror(errno));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Reads and checks one entry file; 0 with *data (malloc'ed), or why it is damaged. */
static int load_entry(struct journal *j, const char *name, uint64_t jid, struct journal_entry *e,
		      uint8_t **data, const char **why)
{
	uint8_t h[JOURNAL_HEADER_SIZE];
	struct stat st;
	uint32_t data_crc;
	int fd = openat(j->dfd, name, O_RDONLY | O_CLOEXEC), rc;

	*data = NULL;
	if (fd < 0) {
		*why = strerror(errno);
		return -errno;
	}
	rc = fstat(fd, &st) < 0 ? -errno : 0;
	if (rc == 0 && st.st_size < JOURNAL_HEADER_SIZE) {
		*why = "shorter than a header";
		rc = -EINVAL;
	}
	if (rc == 0 && (rc = pread_all(fd, h, sizeof(h), 0)) < 0)
		*why = "cannot read the header";
	if (rc == 0)
		rc = decode_header(h, e, &data_crc, why);
	if (rc == 0 && e->jid != jid) {
		*why = "the name does not match the entry's id";
		rc = -EINVAL;
	}
	if (rc == 0 && (uint64_t)st.st_size != JOURNAL_HEADER_SIZE + e->len) {
		*why = "its length does not match the header (truncated or extended)";
		rc = -EINVAL;
	}
	if (rc == 0 && !(*data = malloc(e->len))) {
		*why = "out of memory";
		rc = -ENOMEM;
	}
	if (rc == 0 && (rc = pread_all(fd, *data, e->len, JOURNAL_HEADER_SIZE)) < 0)
		*why = "cannot read the data";
	if (rc == 0 && crc(*data, e->len) != data_crc) {
		*why = "data checksum mismatch";
		rc = -EINVAL;
	}
	close(fd);
	if (rc < 0) {
		free(*data);
		*data = NULL;
	}
	return rc;
}

int journal_replay(struct journal *j,
		   int (*fn)(void *ctx, const struct journal_entry *e, const uint8_t *data),
		   void *ctx, int *damaged)
{
	uint64_t *jids = NULL, max = 0;
	size_t n = 0, cap = 0;
	int dfd = dup(j->dfd), count = 0, rc = 0;
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *de;

	*damaged = 0;
	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		const char *nm = de->d_name, *dot = strchr(nm, '.');
		uint64_t jid = 0;
		bool hex = dot && dot - nm == 16;

		if (nm[0] == '.' || !strcmp(nm, "damaged"))
			continue;
		for (int i = 0; hex && i < 16; i++) {
			int v = hex_digit(nm[i]);

			hex = v >= 0;
			jid = jid * 16 + (uint64_t)(v < 0 ? 0 : v);
		}
		if (hex && !strcmp(dot, ".tmp")) {
			/* a close that never returned: not promised, not kept */
			unlinkat(j->dfd, nm, 0);
			if (jid > max)
				max = jid;
			continue;
		}
		if (!hex || strcmp(dot, ".wbj")) {
			log_warn("mount: %s/%s is not a journal entry: left alone", j->dir, nm);
			continue;
		}
		if (jid > max)
			max = jid;
		if (n == cap) {
			size_t c = cap ? cap * 2 : 256;
			uint64_t *p = realloc(jids, c * sizeof(*p));

			if (!p) {
				rc = -ENOMEM;
				break;
			}
			jids = p;
			cap = c;
		}
		jids[n++] = jid;
	}
	closedir(d);
	/* New entries come after every entry and temporary file seen. */
	__atomic_store_n(&j->next_jid, max + 1, __ATOMIC_RELAXED);
	if (rc == 0)
		qsort(jids, n, sizeof(*jids), cmp_u64);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct journal_entry e;
		uint8_t *data;
		const char *why = "";
		char name[40];

		snprintf(name, sizeof(name), "%016" PRIx64 ".wbj", jids[i]);
		rc = load_entry(j, name, jids[i], &e, &data, &why);
		if (rc == -ENOMEM)
			break;
		if (rc < 0) {
			set_aside(j, name, why);
			(*damaged)++;
			rc = 0;
			continue;
		}
		__atomic_fetch_add(&j->bytes, e.len, __ATOMIC_RELAXED);
		rc = fn(ctx, &e, data);
		free(data);
		if (rc == 0)
			count++;
	}
	free(jids);
	return rc < 0 ? rc : count;
}
