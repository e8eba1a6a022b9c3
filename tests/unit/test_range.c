/*
 * test_range: range_parse against the answers Go's net/http parseRange gives (and the
 * places where range.h deliberately differs: zero-length ranges, RANGE_MAX).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/net/range.h"

static int parse(const char *header, uint64_t size, struct byte_range *out)
{
	return range_parse(header, strlen(header), size, out);
}

/* Asserts that header on size gives exactly the n ranges in want (start, length pairs). */
static void expect_ranges(const char *header, uint64_t size, int n, const uint64_t *want)
{
	struct byte_range out[RANGE_MAX];
	int rc = parse(header, size, out);

	if (rc != n)
		print_error("header \"%s\" size %llu: got %d ranges, want %d\n", header,
			    (unsigned long long)size, rc, n);
	assert_int_equal(rc, n);
	for (int i = 0; i < n; i++) {
		assert_int_equal(out[i].start, want[2 * i]);
		assert_int_equal(out[i].length, want[2 * i + 1]);
	}
}

static void expect_error(const char *header, uint64_t size, int err)
{
	struct byte_range out[RANGE_MAX];
	int rc = parse(header, size, out);

	if (rc != err)
		print_error("header \"%s\" size %llu: got %d, want %d\n", header,
			    (unsigned long long)size, rc, err);
	assert_int_equal(rc, err);
}

static void test_single_ranges(void **state)
{
	(void)state;
	expect_ranges("bytes=0-499", 10000, 1, (const uint64_t[]){0, 500});
	expect_ranges("bytes=500-999", 10000, 1, (const uint64_t[]){500, 500});
	expect_ranges("bytes=500-", 10000, 1, (const uint64_t[]){500, 9500});
	expect_ranges("bytes=-500", 10000, 1, (const uint64_t[]){9500, 500});
	expect_ranges("bytes=0-0", 10, 1, (const uint64_t[]){0, 1});
	expect_ranges("bytes=9-9", 10, 1, (const uint64_t[]){9, 1});
	expect_ranges("bytes=0-", 10, 1, (const uint64_t[]){0, 10});
	expect_ranges("bytes=-1", 10, 1, (const uint64_t[]){9, 1});
	expect_ranges("bytes=-10", 10, 1, (const uint64_t[]){0, 10});
}

static void test_clamping(void **state)
{
	(void)state;
	/* end beyond the size is clamped to size - 1 */
	expect_ranges("bytes=5-100", 10, 1, (const uint64_t[]){5, 5});
	expect_ranges("bytes=0-9223372036854775807", 10, 1, (const uint64_t[]){0, 10});
	/* a suffix larger than the size means the whole entity */
	expect_ranges("bytes=-11", 10, 1, (const uint64_t[]){0, 10});
	expect_ranges("bytes=-9223372036854775807", 10, 1, (const uint64_t[]){0, 10});
	/* large entities work with 64-bit offsets */
	expect_ranges("bytes=4294967296-", 4294967306ULL, 1, (const uint64_t[]){4294967296ULL, 10});
}

static void test_unsatisfiable(void **state)
{
	(void)state;
	expect_error("bytes=10-", 10, -ERANGE);
	expect_error("bytes=10-20", 10, -ERANGE);
	expect_error("bytes=100-5", 10, -ERANGE); /* Go never looks at the end here */
	expect_error("bytes=100-x", 10, -ERANGE);
	expect_error("bytes=9223372036854775807-", 10, -ERANGE);
	/* size 0: every range is unsatisfiable, suffixes included */
	expect_error("bytes=0-", 0, -ERANGE);
	expect_error("bytes=0-0", 0, -ERANGE);
	expect_error("bytes=-5", 0, -ERANGE);
	expect_error("bytes=-0", 0, -ERANGE);
	/* a zero-length suffix is unsatisfiable (RFC 7233), unlike in Go */
	expect_error("bytes=-0", 10, -ERANGE);
	expect_error("bytes=10-,-0", 10, -ERANGE);
}

static void test_multiple(void **state)
{
	(void)state;
	expect_ranges("bytes=0-0,-1", 10000, 2, (const uint64_t[]){0, 1, 9999, 1});
	expect_ranges("bytes=0-1,5-8", 10, 2, (const uint64_t[]){0, 2, 5, 4});
	/* overlapping and out-of-order ranges are returned as given */
	expect_ranges("bytes=5-8,0-9,2-3", 10, 3, (const uint64_t[]){5, 4, 0, 10, 2, 2});
	/* unsatisfiable elements are dropped when another one is satisfiable */
	expect_ranges("bytes=0-1,99999-", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes=20-30,3-4,10-", 10, 1, (const uint64_t[]){3, 2});
	expect_ranges("bytes=-0,0-0", 10, 1, (const uint64_t[]){0, 1});
	/* empty elements are skipped */
	expect_ranges("bytes=,0-1,,", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes= , 0-1 ,\t, 2-3", 10, 2, (const uint64_t[]){0, 2, 2, 2});
}

static void test_whitespace(void **state)
{
	(void)state;
	expect_ranges("bytes= 0-1", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes=0-1 ", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes=0 - 1", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes=\t0\t-\t1\t", 10, 1, (const uint64_t[]){0, 2});
	expect_ranges("bytes= - 3", 10, 1, (const uint64_t[]){7, 3});
	expect_ranges("bytes=0-1,\r\n 4-", 10, 2, (const uint64_t[]){0, 2, 4, 6});
	/* whitespace inside a number is not trimmed */
	expect_error("bytes=0-1 0", 100, -EINVAL);
	expect_error("bytes=1 0-", 100, -EINVAL);
	/* nor before the "bytes=" prefix */
	expect_error(" bytes=0-1", 10, -EINVAL);
	expect_error("bytes =0-1", 10, -EINVAL);
}

static void test_signs(void **state)
{
	(void)state;
	/* strconv.ParseInt accepts a leading '+'; Go's parseRange inherits that */
	expect_ranges("bytes=+1-+2", 10, 1, (const uint64_t[]){1, 2});
	expect_ranges("bytes=-+3", 10, 1, (const uint64_t[]){7, 3});
	expect_error("bytes=--3", 10, -EINVAL);
	expect_error("bytes=2--3", 10, -EINVAL); /* end parses as -3 < start */
	expect_error("bytes=+-1", 10, -EINVAL);
	expect_error("bytes=+", 10, -EINVAL);
	expect_error("bytes=1-+", 10, -EINVAL);
	expect_error("bytes=++1-2", 10, -EINVAL);
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
	    "bytes",	     "bytes 0-1",    "Bytes=0-1",   "BYTES=0-1",   "items=0-1",
	    "bytes=0",	     "bytes=-",	     "bytes=a-b",   "bytes=1-a",   "bytes=-a",
	    "bytes=0x1-2",   "bytes=1.5-2",  "bytes=5-4",   "bytes=0-1,x", "bytes=0-1,5",
	    "bytes=0-1;2-3", "bytes=1-2-3",  "bytes=0-1,-", "bytes=-1-2",  "=0-1",
	    "bytes=\x01-2",  "bytes=0-\xff",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(bad[i], 10, -EINVAL);
	/* a malformed element makes the whole header malformed, even after good ones */
	expect_error("bytes=0-1,2-3,junk", 10, -EINVAL);
	expect_error("bytes=20-,junk", 10, -EINVAL);
}

static void test_overflow(void **state)
{
	(void)state;
	expect_error("bytes=0-99999999999999999999999", 100, -EINVAL);
	expect_error("bytes=99999999999999999999999-", 100, -EINVAL);
	expect_error("bytes=-99999999999999999999999", 100, -EINVAL);
	/* INT64_MAX is the largest number; one more overflows */
	expect_error("bytes=0-9223372036854775808", 100, -EINVAL);
	expect_error("bytes=9223372036854775808-", 100, -EINVAL);
	expect_error("bytes=-9223372036854775808", 100, -EINVAL);
	expect_error("bytes=0-18446744073709551616", 100, -EINVAL);
	expect_ranges("bytes=0-00000000000000000000000000000001", 100, 1, (const uint64_t[]){0, 2});
}

static void test_empty_and_limits(void **state)
{
	struct byte_range out[RANGE_MAX];
	char header[512];
	size_t len;

	(void)state;
	/* no range at all: well-formed, nothing to do (Go serves the whole entity) */
	assert_int_equal(range_parse("", 0, 10, out), 0);
	assert_int_equal(parse("bytes=", 10, out), 0);
	assert_int_equal(parse("bytes=, ,\t", 10, out), 0);

	/* RANGE_MAX elements are fine, one more is not */
	len = (size_t)snprintf(header, sizeof(header), "bytes=0-0");
	for (int i = 1; i < RANGE_MAX; i++)
		len += (size_t)snprintf(header + len, sizeof(header) - len, ",%d-%d", i, i);
	assert_int_equal(parse(header, 100, out), RANGE_MAX);
	for (int i = 0; i < RANGE_MAX; i++) {
		assert_int_equal(out[i].start, (uint64_t)i);
		assert_int_equal(out[i].length, 1);
	}
	snprintf(header + len, sizeof(header) - len, ",99-99");
	assert_int_equal(parse(header, 100, out), -EINVAL);
	/* unsatisfiable elements count too */
	snprintf(header + len, sizeof(header) - len, ",500-");
	assert_int_equal(parse(header, 100, out), -EINVAL);
}

/* The header is a (pointer, length) pair: nothing past len may be read. */
static void test_not_nul_terminated(void **state)
{
	struct byte_range out[RANGE_MAX];
	const char buf[] = {'b', 'y', 't', 'e', 's', '=', '1', '-', '2', '9', '9'};

	(void)state;
	assert_int_equal(range_parse(buf, 9, 100, out), 1);
	assert_int_equal(out[0].start, 1);
	assert_int_equal(out[0].length, 2);
	assert_int_equal(range_parse(buf, 5, 100, out), -EINVAL);
	assert_int_equal(range_parse(buf, 6, 100, out), 0);
	/* an embedded NUL is just a bad character */
	assert_int_equal(range_parse("bytes=0-1\0", 10, 100, out), -EINVAL);
}

static void test_total(void **state)
{
	struct byte_range r[3] = {{0, 10}, {5, 20}, {100, 1}};
	struct byte_range huge[2] = {{0, UINT64_MAX - 1}, {0, 5}};

	(void)state;
	assert_int_equal(range_total(r, 0), 0);
	assert_int_equal(range_total(r, 3), 31);
	/* saturates rather than wrapping, so "sum > size" checks stay correct */
	assert_true(range_total(huge, 2) == UINT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_ranges),
	    cmocka_unit_test(test_clamping),
	    cmocka_unit_test(test_unsatisfiable),
	    cmocka_unit_test(test_multiple),
	    cmocka_unit_test(test_whitespace),
	    cmocka_unit_test(test_signs),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_overflow),
	    cmocka_unit_test(test_empty_and_limits),
	    cmocka_unit_test(test_not_nul_terminated),
	    cmocka_unit_test(test_total),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
