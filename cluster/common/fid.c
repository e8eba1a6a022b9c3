#include "cluster/common/fid.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cluster/base/util.h"

static int parse_hex(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 16)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		int h = hex_digit(s[i]);

		if (h < 0)
			return -EINVAL;
		v = (v << 4) | (uint64_t)h;
	}
	*out = v;
	return 0;
}

static int parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		if (v > (max - (uint64_t)(s[i] - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

int fid_parse_vid(const char *s, size_t len, uint32_t *vid)
{
	uint64_t v;

	if (parse_decimal(s, len, UINT32_MAX, &v) < 0)
		return -EINVAL;
	*vid = (uint32_t)v;
	return 0;
}

uint32_t fid_text_vid(const char *fid)
{
	const char *comma = strchr(fid, ',');
	uint32_t vid = 0;

	if (!comma || fid_parse_vid(fid, (size_t)(comma - fid), &vid) < 0)
		return 0;
	return vid;
}

int fid_parse_key_cookie(const char *s, size_t len, uint64_t *key, uint32_t *cookie)
{
	const char *underscore = memchr(s, '_', len);
	size_t hex_len = underscore ? (size_t)(underscore - s) : len;
	uint64_t k, c, delta = 0;

	if (hex_len <= 8 || hex_len > 24)
		return -EINVAL;
	if (parse_hex(s, hex_len - 8, &k) < 0 || parse_hex(s + hex_len - 8, 8, &c) < 0)
		return -EINVAL;
	if (underscore) {
		if (parse_decimal(underscore + 1, len - hex_len - 1, UINT64_MAX, &delta) < 0)
			return -EINVAL;
		if (k > UINT64_MAX - delta)
			return -EINVAL;
	}
	*key = k + delta;
	*cookie = (uint32_t)c;
	return 0;
}

int fid_parse(const char *s, size_t len, struct fid *out)
{
	const char *comma = memchr(s, ',', len);
	struct fid f;

	if (!comma)
		return -EINVAL;
	if (fid_parse_vid(s, comma - s, &f.vid) < 0)
		return -EINVAL;
	if (fid_parse_key_cookie(comma + 1, len - (comma + 1 - s), &f.key, &f.cookie) < 0)
		return -EINVAL;
	*out = f;
	return 0;
}

/* Splits "<keycookie>[.ext]" at the last dot. */
static size_t strip_extension(const char *s, size_t len, const char **ext, size_t *ext_len)
{
	for (size_t i = len; i > 0; i--) {
		if (s[i - 1] == '.') {
			*ext = s + i - 1;
			*ext_len = len - (i - 1);
			return i - 1;
		}
	}
	*ext = NULL;
	*ext_len = 0;
	return len;
}

int fid_parse_path(const char *path, size_t len, struct fid *out, const char **name,
		   size_t *name_len)
{
	const char *parts[4];
	size_t part_len[4], n = 0, start;
	const char *kc, *ext = NULL;
	size_t kc_len, ext_len = 0;
	struct fid f;

	if (len < 2 || path[0] != '/')
		return -EINVAL;
	start = 1;
	for (size_t i = 1; i <= len; i++) {
		if (i == len || path[i] == '/') {
			if (n == 3)
				return -EINVAL;
			parts[n] = path + start;
			part_len[n] = i - start;
			n++;
			start = i + 1;
		}
	}
	if (n == 1) {
		const char *comma = memchr(parts[0], ',', part_len[0]);

		if (!comma)
			return -EINVAL;
		if (fid_parse_vid(parts[0], comma - parts[0], &f.vid) < 0)
			return -EINVAL;
		kc = comma + 1;
		kc_len = strip_extension(kc, part_len[0] - (kc - parts[0]), &ext, &ext_len);
	} else {
		if (fid_parse_vid(parts[0], part_len[0], &f.vid) < 0)
			return -EINVAL;
		kc = parts[1];
		if (n == 2) {
			kc_len = strip_extension(kc, part_len[1], &ext, &ext_len);
		} else {
			kc_len = part_len[1];
			if (part_len[2] == 0)
				return -EINVAL;
			ext = parts[2];
			ext_len = part_len[2];
		}
	}
	if (fid_parse_key_cookie(kc, kc_len, &f.key, &f.cookie) < 0)
		return -EINVAL;
	*out = f;
	if (name) {
		*name = ext;
		*name_len = ext_len;
	}
	return 0;
}

size_t fid_format_key_cookie(uint64_t key, uint32_t cookie, char *buf)
{
	static const char digits[] = "0123456789abcdef";
	uint8_t bytes[12];
	size_t n = 0, first = 0;

	for (int i = 0; i < 8; i++)
		bytes[i] = (uint8_t)(key >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		bytes[8 + i] = (uint8_t)(cookie >> (24 - 8 * i));
	while (first < 8 && bytes[first] == 0)
		first++;
	for (size_t i = first; i < 12; i++) {
		buf[n++] = digits[bytes[i] >> 4];
		buf[n++] = digits[bytes[i] & 15];
	}
	buf[n] = '\0';
	return n;
}

size_t fid_format(const struct fid *fid, char *buf)
{
	int n = snprintf(buf, FID_MAX_LEN, "%u,", fid->vid);

	return (size_t)n + fid_format_key_cookie(fid->key, fid->cookie, buf + n);
}
