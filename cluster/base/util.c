#include "cluster/base/util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t base64_encode(const uint8_t *in, size_t len, char *out)
{
	/* OpenSSL's encoder: standard alphabet, padded, NUL-terminated. */
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

long base64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	unsigned char buf[768];
	size_t pads = 0, len;

	if (n % 4 || n > INT_MAX)
		return -1;
	while (pads < 2 && pads < n && s[n - 1 - pads] == '=')
		pads++;
	len = n / 4 * 3 - pads;
	if (len > cap)
		return -1;
	/* EVP_DecodeBlock skips blanks and stray '=': accept the alphabet only. */
	for (size_t i = 0; i < n - pads; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '+' && s[i] != '/')
			return -1;
	/* It writes n / 4 * 3 bytes, pads included: through buf unless out has room. */
	for (size_t i = 0; i < n; i += sizeof(buf) / 3 * 4) {
		size_t in = n - i < sizeof(buf) / 3 * 4 ? n - i : sizeof(buf) / 3 * 4;
		size_t o = i / 4 * 3, got = in / 4 * 3;

		if (EVP_DecodeBlock(buf, (const unsigned char *)s + i, (int)in) != (int)got)
			return -1;
		memcpy(out + o, buf, got - (i + in == n ? pads : 0));
	}
	return (long)len;
}

void http_date_format(time_t t, char *buf, size_t cap)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

time_t http_date_parse(const char *s)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (!end || *end)
		return (time_t)-1;
	return timegm(&tm);
}

int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)offset);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

int pwritev_all(int fd, struct iovec *iov, int n, uint64_t offset)
{
	while (n > 0) {
		ssize_t w = pwritev(fd, iov, n, (off_t)offset);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		offset += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

int pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)offset);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA; /* short file */
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int mkdir_p(const char *path, unsigned mode)
{
	char buf[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];

			buf[i] = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return -errno;
			buf[i] = c;
		}
	}
	return 0;
}

char **split_list(const char *s, int *n)
{
	char **out;
	int count = 1, i = 0;
	const char *p;

	*n = 0;
	if (!s)
		s = "";
	for (p = s; *p; p++)
		count += *p == ',';
	out = calloc((size_t)count + 1, sizeof(*out));
	if (!out)
		return NULL;
	for (p = s;; p++) {
		const char *start = p;

		while (*p && *p != ',')
			p++;
		if (p > start && !(out[i++] = strndup(start, (size_t)(p - start)))) {
			free_list(out);
			return NULL;
		}
		if (!*p)
			break;
	}
	*n = i;
	return out;
}

void free_list(char **list)
{
	for (char **p = list; p && *p; p++)
		free(*p);
	free(list);
}

void stop_signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
}
