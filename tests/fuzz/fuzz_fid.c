/*
 * Fuzz target for cluster/fid: every parser on arbitrary bytes. The key/cookie, vid and
 * fid parsers must agree with a simple reference parser; whatever parses must format and
 * parse back to the same value; name pointers must lie inside the input.
 *
 * Key 0 is the one value that cannot round-trip: it formats as the 8 cookie digits only,
 * which is too short to parse (SeaweedFS does the same; keys start at 1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/common/fid.h"
#include "tests/fuzz/fuzz.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void check_formatted(const char *buf, size_t len)
{
	CHECK(len < FID_MAX_LEN);
	CHECK(strlen(buf) == len);
	for (size_t i = 0; i < len; i++)
		CHECK((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f') ||
		      buf[i] == ',');
}

static void round_trip_fid(const struct fid *f)
{
	char buf[FID_MAX_LEN];
	struct fid g;
	size_t len = fid_format(f, buf);

	check_formatted(buf, len);
	if (f->key == 0) {
		CHECK(fid_parse(buf, len, &g) != 0);
		return;
	}
	CHECK(fid_parse(buf, len, &g) == 0);
	CHECK(g.vid == f->vid && g.key == f->key && g.cookie == f->cookie);
}

static void fuzz_parse(const char *s, size_t len)
{
	struct fid f;

	if (fid_parse(s, len, &f) == 0)
		round_trip_fid(&f);
}

/*
 * Straightforward reference parsers for "<key><cookie>[_<delta>]" and "<vid>" (reference
 * section 3), written independently of fid.c, to compare results with. They return 0
 * (valid), -1 (invalid) or UNSPECIFIED for decimal numbers with leading zeros: Go's
 * ParseUint takes any number of them, fid.c caps decimal fields at 20 characters, and
 * either is fine.
 */
#define UNSPECIFIED 1

static int ref_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
	}
	for (size_t i = 0; i < len; i++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v) || v > max)
			return -1;
	}
	*out = v;
	return len > 1 && s[0] == '0' ? UNSPECIFIED : 0;
}

static int ref_key_cookie(const char *s, size_t len, uint64_t *key, uint32_t *cookie)
{
	size_t hex_len = len, i;
	uint64_t k = 0, c = 0, delta = 0;
	int rc = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '_') {
			hex_len = i;
			break;
		}
	}
	if (hex_len < 9 || hex_len > 24)
		return -1;
	for (i = 0; i < hex_len; i++) {
		char ch = s[i];
		unsigned d;

		if (ch >= '0' && ch <= '9')
			d = (unsigned)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			d = (unsigned)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			d = (unsigned)(ch - 'A' + 10);
		else
			return -1;
		if (i < hex_len - 8)
			k = k * 16 + d;
		else
			c = c * 16 + d;
	}
	if (hex_len < len) {
		rc = ref_decimal(s + hex_len + 1, len - hex_len - 1, UINT64_MAX, &delta);
		if (rc < 0)
			return rc;
	}
	if (__builtin_add_overflow(k, delta, key))
		return -1;
	*cookie = (uint32_t)c;
	return rc;
}

static int ref_vid(const char *s, size_t len, uint32_t *vid)
{
	uint64_t v;
	int rc = ref_decimal(s, len, UINT32_MAX, &v);

	if (rc >= 0)
		*vid = (uint32_t)v;
	return rc;
}

static void compare_with_reference(const char *s, size_t len)
{
	uint64_t key = 0, ref_key = 0;
	uint32_t cookie = 0, ref_cookie = 0, vid = 0, ref_vid_value = 0;
	const char *comma = memchr(s, ',', len);
	struct fid f;
	int rc, ref;

	rc = fid_parse_key_cookie(s, len, &key, &cookie);
	ref = ref_key_cookie(s, len, &ref_key, &ref_cookie);
	if (ref != UNSPECIFIED)
		CHECK((rc == 0) == (ref == 0));
	if (rc == 0 && ref >= 0)
		CHECK(key == ref_key && cookie == ref_cookie);

	rc = fid_parse_vid(s, len, &vid);
	ref = ref_vid(s, len, &ref_vid_value);
	if (ref != UNSPECIFIED)
		CHECK((rc == 0) == (ref == 0));
	if (rc == 0 && ref >= 0)
		CHECK(vid == ref_vid_value);

	/* A fid is "<vid>,<key cookie>", split at the first comma. */
	rc = fid_parse(s, len, &f);
	ref = comma ? ref_vid(s, (size_t)(comma - s), &ref_vid_value) : -1;
	if (ref >= 0) {
		int ref2 =
		    ref_key_cookie(comma + 1, len - (size_t)(comma + 1 - s), &ref_key, &ref_cookie);

		ref = ref2 < 0 ? ref2 : ref | ref2;
	}
	if (ref != UNSPECIFIED)
		CHECK((rc == 0) == (ref == 0));
	if (rc == 0 && ref >= 0)
		CHECK(f.vid == ref_vid_value && f.key == ref_key && f.cookie == ref_cookie);
}

static void fuzz_key_cookie(const char *s, size_t len)
{
	char buf[32];
	uint64_t key, key2;
	uint32_t cookie, cookie2;
	size_t n;

	if (fid_parse_key_cookie(s, len, &key, &cookie) != 0)
		return;
	n = fid_format_key_cookie(key, cookie, buf);
	CHECK(n <= 24 && n % 2 == 0);
	check_formatted(buf, n);
	if (key == 0) {
		CHECK(n == 8);
		return;
	}
	CHECK(fid_parse_key_cookie(buf, n, &key2, &cookie2) == 0);
	CHECK(key2 == key && cookie2 == cookie);
}

static void fuzz_vid(const char *s, size_t len)
{
	char buf[16];
	uint32_t vid, vid2;
	int n;

	if (fid_parse_vid(s, len, &vid) != 0)
		return;
	n = snprintf(buf, sizeof(buf), "%u", vid);
	CHECK(fid_parse_vid(buf, (size_t)n, &vid2) == 0 && vid2 == vid);
}

static void fuzz_path(const char *s, size_t len)
{
	char buf[FID_MAX_LEN + 1];
	struct fid f, g;
	const char *name;
	size_t name_len, n;

	if (fid_parse_path(s, len, &f, &name, &name_len) != 0)
		return;
	if (name) {
		CHECK(name >= s && name_len <= len && name + name_len <= s + len);
		CHECK(name_len > 0);
	} else {
		CHECK(name_len == 0);
	}
	round_trip_fid(&f);
	if (f.key == 0)
		return;
	/* The canonical "/vid,keycookie" path parses back to the same fid. */
	buf[0] = '/';
	n = 1 + fid_format(&f, buf + 1);
	CHECK(fid_parse_path(buf, n, &g, &name, &name_len) == 0);
	CHECK(g.vid == f.vid && g.key == f.key && g.cookie == f.cookie && !name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so that any read past the end is caught by ASan. */
	char *s = malloc(size ? size : 1);

	if (!s)
		return 0;
	memcpy(s, data, size);
	compare_with_reference(s, size);
	fuzz_parse(s, size);
	fuzz_key_cookie(s, size);
	fuzz_vid(s, size);
	fuzz_path(s, size);
	free(s);
	return 0;
}
