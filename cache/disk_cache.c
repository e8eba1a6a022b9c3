#include "cache/disk_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

#define MAGIC  0x6b656c70636863ull /* "kelpchc" */
#define HEADER 24		   /* magic u64 | length u64 | crc32c u32 | zero u32 */

static uint32_t checksum(const uint8_t *p, size_t n)
{
	return ~crc32_iscsi((unsigned char *)p, (int)n, ~0u);
}

struct disk_cache {
	char *dir;
	uint64_t capacity;
	pthread_mutex_t lock; /* used */
	uint64_t used;
	unsigned tmp_seq;
};

/* "<dir>/<fid with ',' as '_'>"; fids are digits, hex, ',' and '_' only. */
static int path_of(const struct disk_cache *c, const char *fid, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "%s/", c->dir), i;

	for (i = 0; fid[i] && n + 1 < cap; i++) {
		char ch = fid[i];

		if (ch == ',')
			ch = '_';
		else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || ch == '_'))
			return -EINVAL;
		buf[n++] = ch;
	}
	buf[n] = '\0';
	return fid[i] || i == 0 ? -EINVAL : 0;
}

struct disk_cache *disk_cache_open(const char *dir, uint64_t capacity)
{
	struct disk_cache *c = calloc(1, sizeof(*c));
	DIR *d;
	struct dirent *de;

	if (!c || mkdir_p(dir, 0700) < 0) {
		free(c);
		return NULL;
	}
	c->dir = strdup(dir);
	c->capacity = capacity;
	pthread_mutex_init(&c->lock, NULL);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode)) {
			if (strstr(de->d_name, ".tmp"))
				unlinkat(dirfd(d), de->d_name, 0); /* left by a crash */
			else
				c->used += (uint64_t)st.st_size;
		}
	}
	if (d)
		closedir(d);
	return c;
}

void disk_cache_close(struct disk_cache *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
}

int disk_cache_get(struct disk_cache *c, const char *fid, uint8_t **data, size_t *len)
{
	char path[4096];
	uint8_t head[HEADER];
	struct stat st;
	uint64_t n;
	int fd, rc = -ENOENT;

	if (path_of(c, fid, path, sizeof(path)) < 0)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	if (fstat(fd, &st) == 0 && st.st_size >= HEADER && pread_all(fd, head, HEADER, 0) == 0) {
		uint64_t magic = 0;
		uint32_t crc = 0;

		for (int i = 0; i < 8; i++)
			magic = magic << 8 | head[i];
		n = 0;
		for (int i = 8; i < 16; i++)
			n = n << 8 | head[i];
		for (int i = 16; i < 20; i++)
			crc = crc << 8 | head[i];
		if (magic == MAGIC && n == (uint64_t)st.st_size - HEADER) {
			*data = malloc(n ? n : 1);
			if (*data && pread_all(fd, *data, n, HEADER) == 0 &&
			    checksum(*data, n) == crc) {
				*len = n;
				rc = 0;
			} else {
				free(*data);
				log_warn(
				    "disk cache: %s is damaged, reading the chunk from the cluster",
				    path);
			}
		}
	}
	close(fd);
	if (rc == 0)
		utimensat(AT_FDCWD, path, NULL, 0); /* recently used */
	return rc;
}

static int by_mtime(const void *a, const void *b)
{
	const struct stat *x = a, *y = b;

	if (x->st_mtim.tv_sec != y->st_mtim.tv_sec)
		return x->st_mtim.tv_sec < y->st_mtim.tv_sec ? -1 : 1;
	return x->st_mtim.tv_nsec < y->st_mtim.tv_nsec ? -1
						       : x->st_mtim.tv_nsec > y->st_mtim.tv_nsec;
}

/* Deletes the least recently used files until the cache is at 90 % of its capacity. */
static void evict(struct disk_cache *c)
{
	struct entry {
		struct stat st; /* first: sorted by by_mtime */
		char name[64];
	} *list = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir(c->dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		struct stat st;

		if (de->d_name[0] == '.' || strlen(de->d_name) >= 64 || strstr(de->d_name, ".tmp"))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			struct entry *p;

			cap = cap ? cap * 2 : 256;
			p = realloc(list, cap * sizeof(*p));
			if (!p)
				break;
			list = p;
		}
		list[n].st = st;
		strcpy(list[n].name, de->d_name);
		n++;
	}
	qsort(list, n, sizeof(*list), by_mtime);
	for (size_t i = 0; i < n && c->used > c->capacity / 10 * 9; i++) {
		if (unlinkat(dirfd(d), list[i].name, 0) == 0)
			c->used -= (uint64_t)list[i].st.st_size < c->used
				       ? (uint64_t)list[i].st.st_size
				       : c->used;
	}
	if (d)
		closedir(d);
	free(list);
}

void disk_cache_put(struct disk_cache *c, const char *fid, const uint8_t *data, size_t len)
{
	char path[4096], tmp[4200];
	uint8_t head[HEADER];
	unsigned seq;
	int fd, rc;

	if (len + HEADER > c->capacity || path_of(c, fid, path, sizeof(path)) < 0)
		return;
	pthread_mutex_lock(&c->lock);
	seq = c->tmp_seq++;
	pthread_mutex_unlock(&c->lock);
	snprintf(tmp, sizeof(tmp), "%s.%u.tmp", path, seq);
	uint32_t crc = checksum(data, len);

	memset(head, 0, sizeof(head));
	for (int i = 0; i < 8; i++)
		head[i] = (uint8_t)(MAGIC >> (56 - 8 * i));
	for (int i = 0; i < 8; i++)
		head[8 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		head[16 + i] = (uint8_t)(crc >> (24 - 8 * i));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	rc = pwrite_all(fd, head, HEADER, 0);
	if (rc == 0)
		rc = pwrite_all(fd, data, len, HEADER);
	close(fd);
	{
		/* Replacing a file (a damaged copy, or a second put): count it once. */
		struct stat old;

		if (stat(path, &old) < 0)
			old.st_size = 0;
		if (rc < 0 || rename(tmp, path) < 0) {
			unlink(tmp);
			return;
		}
		pthread_mutex_lock(&c->lock);
		c->used -= (uint64_t)old.st_size < c->used ? (uint64_t)old.st_size : c->used;
	}
	c->used += len + HEADER;
	if (c->used > c->capacity)
		evict(c);
	pthread_mutex_unlock(&c->lock);
}

void disk_cache_forget(struct disk_cache *c, const char *fid)
{
	char path[4096];
	struct stat st;

	if (path_of(c, fid, path, sizeof(path)) < 0 || stat(path, &st) < 0)
		return;
	if (unlink(path) == 0) {
		pthread_mutex_lock(&c->lock);
		c->used -= (uint64_t)st.st_size < c->used ? (uint64_t)st.st_size : c->used;
		pthread_mutex_unlock(&c->lock);
	}
}

uint64_t disk_cache_bytes(struct disk_cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->used;
	pthread_mutex_unlock(&c->lock);
	return n;
}
