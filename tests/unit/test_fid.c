/*
 * Unit tests for cluster/fid: parsing and formatting of SeaweedFS file ids and of the
 * volume server URL paths that carry them (reference section 3 and 2.1).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/common/fid.h"

/* Parses a NUL-terminated fid; the length passed excludes the NUL. */
static int parse(const char *s, struct fid *f)
{
	return fid_parse(s, strlen(s), f);
}

static void expect_fid(const char *s, uint32_t vid, uint64_t key, uint32_t cookie)
{
	struct fid f = {0};

	if (parse(s, &f) != 0)
		fail_msg("fid_parse(\"%s\") failed", s);
	assert_int_equal(f.vid, vid);
	assert_true(f.key == key);
	assert_int_equal(f.cookie, cookie);
}

static void expect_bad_fid(const char *s)
{
	struct fid f = {.vid = 77, .key = 88, .cookie = 99};

	if (parse(s, &f) != -EINVAL)
		fail_msg("fid_parse(\"%s\") accepted a malformed fid", s);
	/* A failed parse leaves the output alone. */
	assert_int_equal(f.vid, 77);
	assert_true(f.key == 88);
	assert_int_equal(f.cookie, 99);
}

static void test_reference_example(void **state)
{
	char buf[FID_MAX_LEN];
	struct fid f = {.vid = 3, .key = 1, .cookie = 0x637037d6};

	expect_fid("3,01637037d6", 3, 1, 0x637037d6);
	assert_int_equal(fid_format(&f, buf), 12);
	assert_string_equal(buf, "3,01637037d6");
}

static void test_format_drops_whole_zero_bytes(void **state)
{
	char buf[FID_MAX_LEN];
	struct {
		uint64_t key;
		uint32_t cookie;
		const char *want;
	} cases[] = {
	    {0x1, 0x0, "0100000000"},
	    {0xf, 0x1, "0f00000001"},
	    {0x10, 0xdeadbeef, "10deadbeef"},
	    {0x100, 0x637037d6, "0100637037d6"},
	    {0x123456, 0xabcdef01, "123456abcdef01"},
	    {0x0102030405060708ULL, 0x090a0b0c, "0102030405060708090a0b0c"},
	    {UINT64_MAX, UINT32_MAX, "ffffffffffffffffffffffff"},
	    {0x8000000000000000ULL, 0, "800000000000000000000000"},
	    /* Key 0 loses all its bytes, exactly like SeaweedFS's formatNeedleIdCookie. */
	    {0, 0x637037d6, "637037d6"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = fid_format_key_cookie(cases[i].key, cases[i].cookie, buf);

		assert_string_equal(buf, cases[i].want);
		assert_int_equal(n, strlen(cases[i].want));
	}
}

static void test_format_whole_fid(void **state)
{
	char buf[FID_MAX_LEN];
	struct fid f = {.vid = UINT32_MAX, .key = UINT64_MAX, .cookie = UINT32_MAX};
	size_t n = fid_format(&f, buf);

	assert_string_equal(buf, "4294967295,ffffffffffffffffffffffff");
	assert_int_equal(n, 35);
	assert_true(n < FID_MAX_LEN);

	f = (struct fid){.vid = 0, .key = 0x2a, .cookie = 0x1};
	assert_int_equal(fid_format(&f, buf), 12);
	assert_string_equal(buf, "0,2a00000001");
}

static void test_key_zero_does_not_round_trip(void **state)
{
	/*
	 * Formatting key 0 yields only the 8 cookie digits, which no parser accepts (the
	 * key+cookie part must be longer than 8). SeaweedFS behaves the same, and the
	 * sequencer never hands out key 0; this test pins the behaviour down.
	 */
	char buf[FID_MAX_LEN];
	struct fid f = {.vid = 1, .key = 0, .cookie = 0x12345678};
	struct fid g;

	fid_format(&f, buf);
	assert_string_equal(buf, "1,12345678");
	assert_int_equal(fid_parse(buf, strlen(buf), &g), -EINVAL);
	/* Key 0 written with explicit zero digits is accepted, though. */
	expect_fid("1,0012345678", 1, 0, 0x12345678);
	expect_fid("1,012345678", 1, 0, 0x12345678);
}

static void test_round_trips(void **state)
{
	static const uint64_t keys[] = {1,
					0xff,
					0x100,
					0xffff,
					0x10000,
					0x123456789aULL,
					0xffffffffffffffULL,
					0x100000000000000ULL,
					UINT64_MAX - 1,
					UINT64_MAX};
	static const uint32_t cookies[] = {0, 1, 0x637037d6, 0x80000000, UINT32_MAX};
	static const uint32_t vids[] = {0, 1, 3, 65535, 1000000, UINT32_MAX};

	for (size_t v = 0; v < sizeof(vids) / sizeof(vids[0]); v++) {
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			for (size_t c = 0; c < sizeof(cookies) / sizeof(cookies[0]); c++) {
				struct fid in = {vids[v], keys[k], cookies[c]}, out = {0};
				char buf[FID_MAX_LEN];
				size_t n = fid_format(&in, buf);

				assert_int_equal(n, strlen(buf));
				assert_int_equal(fid_parse(buf, n, &out), 0);
				assert_int_equal(out.vid, in.vid);
				assert_true(out.key == in.key);
				assert_int_equal(out.cookie, in.cookie);
				/* The key part always has an even number of digits. */
				assert_int_equal((n - (size_t)(strchr(buf, ',') - buf) - 1) % 2, 0);
			}
		}
	}
}

static void test_parse_variants(void **state)
{
	/* Odd-length and single-digit keys are accepted by the parser. */
	expect_fid("3,1637037d6", 3, 1, 0x637037d6);
	expect_fid("3,abc637037d6", 3, 0xabc, 0x637037d6);
	/* Uppercase hex, like Go's strconv.ParseUint(s, 16, 64). */
	expect_fid("3,0A637037D6", 3, 0xa, 0x637037d6);
	/* 24 hex digits: the largest key and cookie. */
	expect_fid("7,ffffffffffffffffffffffff", 7, UINT64_MAX, UINT32_MAX);
	/* Leading zero digits in the key beyond whole bytes. */
	expect_fid("3,0000000000000001637037d6", 3, 1, 0x637037d6);
	/* vid limits. */
	expect_fid("0,01637037d6", 0, 1, 0x637037d6);
	expect_fid("4294967295,01637037d6", UINT32_MAX, 1, 0x637037d6);
	/* Leading zeros in the vid, as Go's ParseUint accepts. */
	expect_fid("03,01637037d6", 3, 1, 0x637037d6);
}

static void test_parse_vid(void **state)
{
	uint32_t vid = 12345;

	assert_int_equal(fid_parse_vid("1", 1, &vid), 0);
	assert_int_equal(vid, 1);
	assert_int_equal(fid_parse_vid("4294967295", 10, &vid), 0);
	assert_int_equal(vid, UINT32_MAX);
	/* Only the first len bytes count. */
	assert_int_equal(fid_parse_vid("12345", 2, &vid), 0);
	assert_int_equal(vid, 12);

	vid = 5;
	assert_int_equal(fid_parse_vid("", 0, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("4294967296", 10, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("9999999999", 10, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("18446744073709551616", 20, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("99999999999999999999999", 23, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("-1", 2, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("+1", 2, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid(" 1", 2, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("1 ", 2, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("0x1", 3, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("1a", 2, &vid), -EINVAL);
	assert_int_equal(fid_parse_vid("1\0002", 3, &vid), -EINVAL);
	assert_int_equal(vid, 5);
}

static void test_delta_suffix(void **state)
{
	uint64_t key = 0;
	uint32_t cookie = 0;

	expect_fid("3,01637037d6_0", 3, 1, 0x637037d6);
	expect_fid("3,01637037d6_1", 3, 2, 0x637037d6);
	expect_fid("3,01637037d6_10", 3, 11, 0x637037d6);
	expect_fid("3,0a637037d6_0005", 3, 15, 0x637037d6);
	/* Overflow is checked exactly at the boundary. */
	expect_fid("3,fffffffffffffffe637037d6_1", 3, UINT64_MAX, 0x637037d6);
	expect_fid("3,ffffffffffffffff637037d6_0", 3, UINT64_MAX, 0x637037d6);
	expect_fid("3,00637037d6_18446744073709551615", 3, UINT64_MAX, 0x637037d6);
	expect_bad_fid("3,01637037d6_18446744073709551615");
	expect_bad_fid("3,ffffffffffffffff637037d6_1");
	expect_bad_fid("3,fffffffffffffffe637037d6_2");
	expect_bad_fid("3,00637037d6_18446744073709551616");
	expect_bad_fid("3,00637037d6_99999999999999999999");
	expect_bad_fid("3,00637037d6_999999999999999999999");
	/* Malformed deltas. */
	expect_bad_fid("3,01637037d6_");
	expect_bad_fid("3,01637037d6_-1");
	expect_bad_fid("3,01637037d6_+1");
	expect_bad_fid("3,01637037d6_a");
	expect_bad_fid("3,01637037d6_1a");
	expect_bad_fid("3,01637037d6_ 1");
	expect_bad_fid("3,01637037d6_1 ");
	expect_bad_fid("3,01637037d6_1_2");
	expect_bad_fid("3,01637037d6__1");
	expect_bad_fid("3,_101637037d6");
	/* The underscore does not count towards the 8 cookie digits. */
	expect_bad_fid("3,637037d6_1");

	assert_int_equal(fid_parse_key_cookie("01637037d6_3", 12, &key, &cookie), 0);
	assert_true(key == 4);
	assert_int_equal(cookie, 0x637037d6);
	/* A length that stops before the suffix ignores it. */
	assert_int_equal(fid_parse_key_cookie("01637037d6_3", 10, &key, &cookie), 0);
	assert_true(key == 1);
	/* A length that stops right after the underscore leaves an empty delta. */
	assert_int_equal(fid_parse_key_cookie("01637037d6_3", 11, &key, &cookie), -EINVAL);
}

static void test_key_cookie_lengths(void **state)
{
	/* 9 to 24 hex digits are accepted, 0 to 8 and 25+ are not. */
	static const char digits[] = "123456789abcdef0123456789abcdef";
	uint64_t key;
	uint32_t cookie;

	for (size_t len = 0; len < sizeof(digits); len++) {
		int rc = fid_parse_key_cookie(digits, len, &key, &cookie);

		if (len > 8 && len <= 24)
			assert_int_equal(rc, 0);
		else
			assert_int_equal(rc, -EINVAL);
	}
	assert_int_equal(fid_parse_key_cookie("123456789", 9, &key, &cookie), 0);
	assert_true(key == 1);
	assert_int_equal(cookie, 0x23456789);
}

static void test_malformed(void **state)
{
	static const char *bad[] = {
	    "",
	    ",",
	    "3",
	    "3,",
	    ",01637037d6",
	    "301637037d6",
	    "3;01637037d6",
	    "3.01637037d6",
	    "3/01637037d6",
	    /* too short: 8 or fewer hex digits after the comma */
	    "3,637037d6",
	    "3,37037d6",
	    "3,1",
	    /* too long: more than 24 hex digits */
	    "3,0ffffffffffffffff637037d6",
	    "3,00000000000000000000000000000001637037d6",
	    /* non-hex digits, in the key or in the cookie */
	    "3,0g637037d6",
	    "3,01637037dg",
	    "3,01637037d-",
	    "3,zz637037d6",
	    "3,0x637037d6",
	    "3,-1637037d6",
	    "3,+1637037d6",
	    /* vid problems */
	    "4294967296,01637037d6",
	    "99999999999,01637037d6",
	    "18446744073709551617,01637037d6",
	    "-3,01637037d6",
	    "+3,01637037d6",
	    "a,01637037d6",
	    "3a,01637037d6",
	    "0x3,01637037d6",
	    /* spaces anywhere */
	    " 3,01637037d6",
	    "3 ,01637037d6",
	    "3, 01637037d6",
	    "3,01637037d6 ",
	    "3,01 637037d6",
	    "3,01637037d6\n",
	    "\t3,01637037d6",
	    /* trailing garbage */
	    "3,01637037d6,",
	    "3,01637037d6,1",
	    "3,01637037d6.jpg",
	    "3,01637037d6/",
	    "3,01637037d6_1,",
	    /* two commas */
	    "3,,01637037d6",
	    "3,01,637037d6",
	    /* URL paths are not fids */
	    "/3,01637037d6",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_bad_fid(bad[i]);
}

static void test_explicit_length(void **state)
{
	struct fid f;
	static const char embedded[] = "3,0163\0007037d6";
	static const char nul_in_vid[] = "3\000,01637037d6";
	static const char trailing_nul[] = "3,01637037d6\0";
	static const char cut[] = "3,01637037d6xyz";

	/* Embedded NUL bytes are rejected, not treated as terminators. */
	assert_int_equal(fid_parse(embedded, sizeof(embedded) - 1, &f), -EINVAL);
	assert_int_equal(fid_parse(nul_in_vid, sizeof(nul_in_vid) - 1, &f), -EINVAL);
	assert_int_equal(fid_parse(trailing_nul, sizeof(trailing_nul), &f), -EINVAL);
	/* The parser stops at len even when more (garbage) bytes follow. */
	assert_int_equal(fid_parse(cut, 12, &f), 0);
	assert_int_equal(f.vid, 3);
	assert_true(f.key == 1);
	assert_int_equal(f.cookie, 0x637037d6);
	assert_int_equal(fid_parse(cut, 13, &f), -EINVAL);
	assert_int_equal(fid_parse(cut, 11, &f), 0);
	assert_true(f.key == 0);
	assert_int_equal(f.cookie, 0x1637037d);
	assert_int_equal(fid_parse(cut, 10, &f), -EINVAL);
	assert_int_equal(fid_parse(cut, 0, &f), -EINVAL);
	/* The comma beyond len is not seen. */
	assert_int_equal(fid_parse(cut, 1, &f), -EINVAL);
}

struct path_case {
	const char *path;
	uint32_t vid;
	uint64_t key;
	uint32_t cookie;
	const char *name; /* NULL: no name expected */
};

static void expect_path(const struct path_case *c)
{
	struct fid f = {0};
	const char *name = (const char *)1;
	size_t name_len = 12345;
	size_t len = strlen(c->path);

	if (fid_parse_path(c->path, len, &f, &name, &name_len) != 0)
		fail_msg("fid_parse_path(\"%s\") failed", c->path);
	assert_int_equal(f.vid, c->vid);
	assert_true(f.key == c->key);
	assert_int_equal(f.cookie, c->cookie);
	if (!c->name) {
		assert_null(name);
		assert_int_equal(name_len, 0);
	} else {
		assert_non_null(name);
		/* The name points into the path. */
		assert_true(name >= c->path && name + name_len <= c->path + len);
		assert_int_equal(name_len, strlen(c->name));
		assert_memory_equal(name, c->name, name_len);
	}
	/* name may be NULL when the caller does not want it. */
	f = (struct fid){0};
	assert_int_equal(fid_parse_path(c->path, len, &f, NULL, NULL), 0);
	assert_int_equal(f.vid, c->vid);
}

static void test_path_five_forms(void **state)
{
	static const struct path_case cases[] = {
	    {"/3/01637037d6/name.jpg", 3, 1, 0x637037d6, "name.jpg"},
	    {"/3/01637037d6.jpg", 3, 1, 0x637037d6, ".jpg"},
	    {"/3,01637037d6.jpg", 3, 1, 0x637037d6, ".jpg"},
	    {"/3/01637037d6", 3, 1, 0x637037d6, NULL},
	    {"/3,01637037d6", 3, 1, 0x637037d6, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_path(&cases[i]);
}

static void test_path_variants(void **state)
{
	static const struct path_case cases[] = {
	    /* README's own example name */
	    {"/3/01637037d6/my_preferred_name.jpg", 3, 1, 0x637037d6, "my_preferred_name.jpg"},
	    /* the extension starts at the last dot */
	    {"/3,01637037d6.", 3, 1, 0x637037d6, "."},
	    {"/3/01637037d6.", 3, 1, 0x637037d6, "."},
	    /* a file name is taken as is, dots, commas and all */
	    {"/3/01637037d6/a,b.c.d", 3, 1, 0x637037d6, "a,b.c.d"},
	    {"/3/01637037d6/noext", 3, 1, 0x637037d6, "noext"},
	    /* delta suffixes in every form */
	    {"/3,01637037d6_2", 3, 3, 0x637037d6, NULL},
	    {"/3,01637037d6_2.png", 3, 3, 0x637037d6, ".png"},
	    {"/3/01637037d6_2", 3, 3, 0x637037d6, NULL},
	    {"/3/01637037d6_2.png", 3, 3, 0x637037d6, ".png"},
	    {"/3/01637037d6_2/x.png", 3, 3, 0x637037d6, "x.png"},
	    /* big numbers */
	    {"/4294967295,ffffffffffffffffffffffff", UINT32_MAX, UINT64_MAX, UINT32_MAX, NULL},
	    {"/4294967295/ffffffffffffffffffffffff/f", UINT32_MAX, UINT64_MAX, UINT32_MAX, "f"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_path(&cases[i]);
}

static void test_path_malformed(void **state)
{
	static const char *bad[] = {
	    "",
	    "/",
	    "//",
	    "///",
	    "////",
	    "3,01637037d6", /* no leading slash */
	    "3/01637037d6", /* no leading slash */
	    " /3,01637037d6",
	    "/3", /* volume id only is not a fid */
	    "/3.jpg",
	    "/3/",
	    "/3//",
	    "/3//name.jpg",	       /* empty key segment */
	    "//01637037d6",	       /* empty vid segment */
	    "//3,01637037d6",	       /* empty first segment */
	    "/3/01637037d6/",	       /* empty name segment */
	    "/3/01637037d6/name.jpg/", /* 4 segments */
	    "/3/01637037d6/a/b",       /* 4 segments */
	    "/3/01637037d6/a/b/c",
	    "/3/01/637037d6",
	    "/3,01637037d6/", /* comma form plus a slash: vid "3,01637037d6" */
	    "/3,01637037d6/name.jpg",
	    "/,01637037d6",
	    "/3,",
	    "/3,.jpg",
	    "/3,637037d6", /* key+cookie too short */
	    "/3,637037d6.jpg",
	    "/3/637037d6",
	    "/3/637037d6/name",
	    "/3,0ffffffffffffffff637037d6", /* too long */
	    "/3,0g637037d6",
	    "/3/0g637037d6",
	    "/3/0g637037d6/name",
	    "/x,01637037d6",
	    "/x/01637037d6",
	    "/-3,01637037d6",
	    "/4294967296,01637037d6",
	    "/4294967296/01637037d6",
	    "/4294967296/01637037d6/n",
	    "/3,01637037d6_",
	    "/3/01637037d6_x.jpg",
	    "/3/01637037d6.jpg/name", /* extension on the key segment of the 3-part form */
	    "/3,01.637037d6",	      /* dot inside the key: stripped as an extension */
	    "/3,01637037d6.tar.gz",   /* only ".gz" is stripped, as in SeaweedFS */
	    "/3/01637037d6.tar.gz",
	    "/3 ,01637037d6",
	    "/3, 01637037d6",
	    "/3,01637037d6 ", /* no dot: trailing space is part of the key+cookie */
	    "\\3,01637037d6",
	    "/3,01637037d6?x=1",
	};
	struct fid f = {.vid = 77};
	const char *name = (const char *)1;
	size_t name_len = 99;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (fid_parse_path(bad[i], strlen(bad[i]), &f, &name, &name_len) != -EINVAL)
			fail_msg("fid_parse_path(\"%s\") accepted a malformed path", bad[i]);
		assert_int_equal(f.vid, 77);
		assert_ptr_equal(name, (const char *)1);
		assert_int_equal(name_len, 99);
	}
}

static void test_path_explicit_length(void **state)
{
	static const char path[] = "/3/01637037d6/name.jpg";
	static const char nul_in_key[] = "/3,0163\0007037d6";
	struct fid f;
	const char *name;
	size_t name_len;

	/* Cut before the name segment: the 2-segment form. */
	assert_int_equal(fid_parse_path(path, 13, &f, &name, &name_len), 0);
	assert_null(name);
	/* Cut right after the slash: an empty file name. */
	assert_int_equal(fid_parse_path(path, 14, &f, &name, &name_len), -EINVAL);
	/* Cut inside the name. */
	assert_int_equal(fid_parse_path(path, 18, &f, &name, &name_len), 0);
	assert_int_equal(name_len, 4);
	assert_memory_equal(name, "name", 4);
	/* Every shorter prefix up to the key is malformed. */
	for (size_t len = 0; len < 12; len++)
		assert_int_equal(fid_parse_path(path, len, &f, &name, &name_len), -EINVAL);
	assert_int_equal(fid_parse_path(nul_in_key, sizeof(nul_in_key) - 1, &f, NULL, NULL),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reference_example),
	    cmocka_unit_test(test_format_drops_whole_zero_bytes),
	    cmocka_unit_test(test_format_whole_fid),
	    cmocka_unit_test(test_key_zero_does_not_round_trip),
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_parse_variants),
	    cmocka_unit_test(test_parse_vid),
	    cmocka_unit_test(test_delta_suffix),
	    cmocka_unit_test(test_key_cookie_lengths),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_explicit_length),
	    cmocka_unit_test(test_path_five_forms),
	    cmocka_unit_test(test_path_variants),
	    cmocka_unit_test(test_path_malformed),
	    cmocka_unit_test(test_path_explicit_length),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
