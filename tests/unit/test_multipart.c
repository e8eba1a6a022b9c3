/*
 * test_multipart: the incremental multipart/form-data parser.
 *
 * A recorder collects what the callbacks report (headers, data, part ends) and checks
 * their order. The central property is that chunking never matters: a body fed in one
 * piece, one byte at a time, split at every position, or in random pieces must give
 * the same parts and the same result code.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/net/multipart.h"

#define MAX_PARTS 8
#define MAX_DATA  20000

struct rec_part {
	struct multipart_part hdr;
	uint8_t data[MAX_DATA];
	size_t len;
	int ended;
};

struct rec {
	struct rec_part parts[MAX_PARTS];
	int nparts;
	int bad_order;	  /* a callback came out of sequence or overflowed */
	size_t delivered; /* data bytes handed out so far, all parts */
	int data_calls;
	int stop_begin_at; /* on_part_begin of this part (1-based) returns 7 */
	int stop_data;	   /* on_data returns 8 */
	int stop_end;	   /* on_part_end returns 9 */
};

static struct rec *rec_new(void)
{
	struct rec *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	return r;
}

static int on_begin(void *ctx, const struct multipart_part *part)
{
	struct rec *r = ctx;

	if (r->nparts == MAX_PARTS || (r->nparts > 0 && !r->parts[r->nparts - 1].ended)) {
		r->bad_order = 1;
		return -1;
	}
	r->parts[r->nparts].hdr = *part;
	r->nparts++;
	if (r->stop_begin_at == r->nparts)
		return 7;
	return 0;
}

static int on_data(void *ctx, const uint8_t *data, size_t len)
{
	struct rec *r = ctx;
	struct rec_part *p;

	if (r->nparts == 0 || r->parts[r->nparts - 1].ended || len == 0) {
		r->bad_order = 1;
		return -1;
	}
	p = &r->parts[r->nparts - 1];
	if (len > MAX_DATA - p->len) {
		r->bad_order = 1;
		return -1;
	}
	memcpy(p->data + p->len, data, len);
	p->len += len;
	r->delivered += len;
	r->data_calls++;
	return r->stop_data ? 8 : 0;
}

static int on_end(void *ctx)
{
	struct rec *r = ctx;

	if (r->nparts == 0 || r->parts[r->nparts - 1].ended) {
		r->bad_order = 1;
		return -1;
	}
	r->parts[r->nparts - 1].ended = 1;
	return r->stop_end ? 9 : 0;
}

static const struct multipart_callbacks callbacks = {on_begin, on_data, on_end};

/*
 * Feeds body cut at the given offsets (ascending), then finishes. Returns the first
 * non-zero result of multipart_feed, else that of multipart_finish.
 */
static int parse_cuts(const char *boundary, const void *body, size_t len, const size_t *cuts,
		      int ncuts, struct rec *r)
{
	struct multipart_parser p;
	const uint8_t *b = body;
	size_t at = 0;
	int rc;

	assert_int_equal(multipart_init(&p, boundary, strlen(boundary), &callbacks, r), 0);
	for (int i = 0; i <= ncuts; i++) {
		size_t next = i < ncuts ? cuts[i] : len;

		rc = multipart_feed(&p, b + at, next - at);
		if (rc != 0)
			return rc;
		at = next;
	}
	return multipart_finish(&p);
}

static int parse_whole(const char *boundary, const void *body, size_t len, struct rec *r)
{
	return parse_cuts(boundary, body, len, NULL, 0, r);
}

static int parse_str(const char *boundary, const char *body, struct rec *r)
{
	return parse_whole(boundary, body, strlen(body), r);
}

/* Feeds one byte at a time. */
static int parse_bytes(const char *boundary, const void *body, size_t len, struct rec *r)
{
	struct multipart_parser p;
	const uint8_t *b = body;
	int rc;

	assert_int_equal(multipart_init(&p, boundary, strlen(boundary), &callbacks, r), 0);
	for (size_t i = 0; i < len; i++) {
		rc = multipart_feed(&p, b + i, 1);
		if (rc != 0)
			return rc;
	}
	return multipart_finish(&p);
}

static void assert_rec_equal(const struct rec *a, const struct rec *b)
{
	assert_int_equal(a->bad_order, 0);
	assert_int_equal(b->bad_order, 0);
	assert_int_equal(a->nparts, b->nparts);
	for (int i = 0; i < a->nparts; i++) {
		assert_memory_equal(&a->parts[i].hdr, &b->parts[i].hdr, sizeof(a->parts[i].hdr));
		assert_int_equal(a->parts[i].len, b->parts[i].len);
		assert_memory_equal(a->parts[i].data, b->parts[i].data, a->parts[i].len);
		assert_int_equal(a->parts[i].ended, b->parts[i].ended);
	}
}

static void assert_part_data(const struct rec *r, int i, const void *want, size_t len)
{
	assert_true(i < r->nparts);
	assert_int_equal(r->parts[i].len, len);
	assert_memory_equal(r->parts[i].data, want, len);
}

/* ---- the sample body used by the split tests ---- */

#define SAMPLE_BOUNDARY "XyZ"

/* Binary data full of near-delimiters, none of them a real one. */
static const char sample_file_data[] = "bin\0\xff\r\n"
				       "\r\n--Xy!\r\n--X\r\n-\r\n--\r"
				       "\r\r\n--XyZa" /* --XyZ + letter: data, as in Go */
				       "\n--XyZ\r"    /* LF only before it: data */
				       "--XyZ--"      /* CR only before it: data */
				       "\r\n--XyZZ\r\n--Xy\r";

static size_t build_sample(uint8_t *out)
{
	static const char head[] = "this is a preamble\r\n--XyZ\r\n"
				   "Content-Disposition: form-data; name=\"field1\"\r\n"
				   "\r\n"
				   "value one\r\n"
				   "--XyZ  \t\r\n" /* transport padding */
				   "content-DISPOSITION: form-data; name=\"file\";"
				   " filename=\"a \\\"q\\\".txt\"\r\n"
				   "Content-Type: application/octet-stream\r\n"
				   "content-md5:1B2M2Y8AsgTpgAmY7PhCfg==  \r\n"
				   "Content-Encoding: gzip\r\n"
				   "X-Other: ignored\r\n"
				   "\r\n";
	static const char tail[] = "\r\n--XyZ\r\n"
				   "\r\n" /* a part without headers, with empty data */
				   "\r\n--XyZ--\r\nepilogue\r\n--XyZ\r\nignored";
	size_t n = 0;

	memcpy(out + n, head, sizeof(head) - 1);
	n += sizeof(head) - 1;
	memcpy(out + n, sample_file_data, sizeof(sample_file_data) - 1);
	n += sizeof(sample_file_data) - 1;
	memcpy(out + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	return n;
}

static void check_sample(const struct rec *r)
{
	assert_int_equal(r->bad_order, 0);
	assert_int_equal(r->nparts, 3);

	assert_string_equal(r->parts[0].hdr.name, "field1");
	assert_string_equal(r->parts[0].hdr.filename, "");
	assert_int_equal(r->parts[0].hdr.has_filename, 0);
	assert_string_equal(r->parts[0].hdr.content_type, "");
	assert_part_data(r, 0, "value one", 9);

	assert_string_equal(r->parts[1].hdr.name, "file");
	assert_string_equal(r->parts[1].hdr.filename, "a \"q\".txt");
	assert_int_equal(r->parts[1].hdr.has_filename, 1);
	assert_string_equal(r->parts[1].hdr.content_type, "application/octet-stream");
	assert_string_equal(r->parts[1].hdr.content_md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
	assert_string_equal(r->parts[1].hdr.content_encoding, "gzip");
	assert_part_data(r, 1, sample_file_data, sizeof(sample_file_data) - 1);

	assert_string_equal(r->parts[2].hdr.name, "");
	assert_part_data(r, 2, "", 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r->parts[i].ended, 1);
}

static void test_sample_whole(void **state)
{
	uint8_t body[1024];
	size_t len = build_sample(body);
	struct rec *r = rec_new();

	(void)state;
	assert_int_equal(parse_whole(SAMPLE_BOUNDARY, body, len, r), 0);
	check_sample(r);
	free(r);
}

static void test_sample_one_byte_chunks(void **state)
{
	uint8_t body[1024];
	size_t len = build_sample(body);
	struct rec *r = rec_new();

	(void)state;
	assert_int_equal(parse_bytes(SAMPLE_BOUNDARY, body, len, r), 0);
	check_sample(r);
	free(r);
}

static void test_sample_every_split(void **state)
{
	uint8_t body[1024];
	size_t len = build_sample(body);
	struct rec *r = rec_new();

	(void)state;
	for (size_t cut = 0; cut <= len; cut++) {
		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_cuts(SAMPLE_BOUNDARY, body, len, &cut, 1, r), 0);
		check_sample(r);
	}
	/* and every pair of cuts, the first one on a stride to keep it quick */
	for (size_t a = 0; a <= len; a += 7) {
		for (size_t b = a; b <= len; b++) {
			size_t cuts[2] = {a, b};

			memset(r, 0, sizeof(*r));
			assert_int_equal(parse_cuts(SAMPLE_BOUNDARY, body, len, cuts, 2, r), 0);
			check_sample(r);
		}
	}
	free(r);
}

/* Every truncation of the sample is incomplete and must fail in finish, not crash. */
static void test_sample_every_truncation(void **state)
{
	uint8_t body[1024];
	size_t len = build_sample(body);
	const char *close = "\r\n--XyZ--";
	size_t complete =
	    (size_t)((uint8_t *)memmem(body, len, close, strlen(close)) - body) + strlen(close);
	struct rec *r = rec_new();

	(void)state;
	for (size_t n = 0; n <= len; n++) {
		int want = n < complete ? -EINVAL : 0;

		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_whole(SAMPLE_BOUNDARY, body, n, r), want);
		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_bytes(SAMPLE_BOUNDARY, body, n, r), want);
		assert_int_equal(r->bad_order, 0);
	}
	free(r);
}

/* ---- basics ---- */

static void test_simple_upload(void **state)
{
	const char *body =
	    "--b\r\n"
	    "Content-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\n"
	    "Content-Type: text/plain\r\n"
	    "\r\n"
	    "hello world\r\n"
	    "--b--\r\n";
	struct rec *r = rec_new();

	(void)state;
	assert_int_equal(parse_str("b", body, r), 0);
	assert_int_equal(r->nparts, 1);
	assert_string_equal(r->parts[0].hdr.name, "file");
	assert_string_equal(r->parts[0].hdr.filename, "hello.txt");
	assert_int_equal(r->parts[0].hdr.has_filename, 1);
	assert_string_equal(r->parts[0].hdr.content_type, "text/plain");
	assert_string_equal(r->parts[0].hdr.content_md5, "");
	assert_string_equal(r->parts[0].hdr.content_encoding, "");
	assert_part_data(r, 0, "hello world", 11);
	assert_int_equal(r->parts[0].ended, 1);
	free(r);
}

static void test_preamble_and_epilogue(void **state)
{
	struct rec *r = rec_new();

	(void)state;
	/* preamble that starts with CRLF and contains a near-boundary */
	assert_int_equal(
	    parse_str("bnd", "\r\n--bn\r\n--bndx\r\nstuff\r\n--bnd\r\n\r\nD\r\n--bnd--", r), 0);
	assert_int_equal(r->nparts, 1);
	assert_part_data(r, 0, "D", 1);

	/* epilogue with arbitrary bytes, even a bare LF and further boundaries */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("bnd", "--bnd\r\n\r\nD\r\n--bnd--junk\n\r\n--bnd\r\nx", r), 0);
	assert_int_equal(r->nparts, 1);
	assert_part_data(r, 0, "D", 1);

	/* close delimiter followed by padding and CRLF */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("bnd", "--bnd\r\n\r\nD\r\n--bnd-- \r\n", r), 0);
	assert_int_equal(r->nparts, 1);
	free(r);
}

static void test_zero_parts_and_empty_parts(void **state)
{
	struct rec *r = rec_new();

	(void)state;
	assert_int_equal(parse_str("b", "--b--", r), 0);
	assert_int_equal(r->nparts, 0);

	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b",
				   "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n"
				   "\r\n--b\r\nContent-Disposition: form-data; name=b\r\n\r\n"
				   "\r\n--b--",
				   r),
			 0);
	assert_int_equal(r->nparts, 2);
	assert_string_equal(r->parts[0].hdr.name, "a");
	assert_string_equal(r->parts[1].hdr.name, "b");
	assert_part_data(r, 0, "", 0);
	assert_part_data(r, 1, "", 0);
	assert_int_equal(r->parts[1].ended, 1);
	free(r);
}

static void test_data_like_boundaries(void **state)
{
	/* every line below is data for boundary "abc" */
	static const char data[] = "--abc\r\n"	  /* at data start, no CRLF before it */
				   "\r\n--ab\r\n" /* prefix */
				   "\r\n--abd"	  /* mismatch on the last byte */
				   "\r\n--abcd"	  /* full delimiter + letter (Go: data) */
				   "\r\n--abc_"
				   "\r\r\r\n\r\n-\r\n--\r\n--a"
				   "x\r";
	char body[512];
	struct rec *r = rec_new();
	int n;

	(void)state;
	n = snprintf(body, sizeof(body), "--abc\r\n\r\n%s\r\n--abc--", data);
	assert_int_equal(parse_whole("abc", body, (size_t)n, r), 0);
	assert_int_equal(r->nparts, 1);
	assert_part_data(r, 0, data, strlen(data));
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_bytes("abc", body, (size_t)n, r), 0);
	assert_part_data(r, 0, data, strlen(data));
	free(r);
}

/* Data is handed out as soon as it cannot be a delimiter: never more than the
 * delimiter's length is held back, and nothing at all when no CR is pending. */
static void test_lookahead_bound(void **state)
{
	struct multipart_parser p;
	struct rec *r = rec_new();
	const char *head = "--boundary\r\n\r\n";
	const char *delim = "\r\n--boundary";
	size_t fed = 0;

	(void)state;
	assert_int_equal(multipart_init(&p, "boundary", 8, &callbacks, r), 0);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)head, strlen(head)), 0);
	for (int round = 0; round < 50; round++) {
		/* a growing prefix of the delimiter, then a byte that breaks it */
		size_t k = (size_t)round % strlen(delim);

		assert_int_equal(multipart_feed(&p, (const uint8_t *)delim, k), 0);
		fed += k;
		assert_true(r->delivered + k >= fed);
		assert_int_equal(multipart_feed(&p, (const uint8_t *)"x", 1), 0);
		fed++;
		assert_int_equal(r->delivered, fed);
	}
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(multipart_feed(&p, (const uint8_t *)"0123456789", 10), 0);
		fed += 10;
		assert_int_equal(r->delivered, fed);
	}
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"\r\n--boundary--", 14), 0);
	assert_int_equal(multipart_finish(&p), 0);
	assert_int_equal(r->nparts, 1);
	assert_int_equal(r->parts[0].len, fed);
	assert_int_equal(r->parts[0].ended, 1);
	free(r);
}

/* Large data in one chunk arrives in one on_data call (no per-byte callbacks). */
static void test_large_chunk_single_callback(void **state)
{
	static uint8_t body[16000];
	struct multipart_parser p;
	struct rec *r = rec_new();
	size_t n = 0;

	(void)state;
	memcpy(body, "--q\r\n\r\n", 7);
	n = 7;
	memset(body + n, 'z', 15000);
	n += 15000;
	memcpy(body + n, "\r\n--q--", 7);
	n += 7;
	assert_int_equal(multipart_init(&p, "q", 1, &callbacks, r), 0);
	assert_int_equal(multipart_feed(&p, body, n), 0);
	assert_int_equal(multipart_finish(&p), 0);
	assert_int_equal(r->parts[0].len, 15000);
	assert_int_equal(r->data_calls, 1);
	free(r);
}

/* ---- headers ---- */

static int parse_one_header(const char *header_lines, struct rec *r)
{
	char body[16384];
	int n = snprintf(body, sizeof(body), "--b\r\n%s\r\nDATA\r\n--b--", header_lines);

	assert_true(n > 0 && (size_t)n < sizeof(body));
	memset(r, 0, sizeof(*r));
	return parse_whole("b", body, (size_t)n, r);
}

static void test_disposition_values(void **state)
{
	struct rec *r = rec_new();
	char long_name[400], lines[600];

	(void)state;
	/* escaped quote and backslash */
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=\"f\";"
					  " filename=\"a\\\"b\\\\c.txt\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "a\"b\\c.txt");

	/* an unneeded backslash stays (MSIE full paths) */
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=\"f\";"
					  " filename=\"C:\\dir\\f.txt\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "C:\\dir\\f.txt");

	/* token values, odd spacing, parameter names case-insensitive, trailing ';' */
	assert_int_equal(parse_one_header("content-disposition:form-data;NAME = x ;"
					  "FileName=y.bin;;\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.name, "x");
	assert_string_equal(r->parts[0].hdr.filename, "y.bin");
	assert_int_equal(r->parts[0].hdr.has_filename, 1);

	/* empty filename is still a filename */
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=\"f\";"
					  " filename=\"\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "");
	assert_int_equal(r->parts[0].hdr.has_filename, 1);

	/* UTF-8 bytes in a quoted filename, unknown parameters ignored */
	assert_int_equal(parse_one_header("Content-Disposition: attachment; size=3; filename="
					  "\"\xc3\xa9t\xc3\xa9.txt\"; creation-date=\"x;y\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "\xc3\xa9t\xc3\xa9.txt");
	assert_string_equal(r->parts[0].hdr.name, "");

	/* RFC 5987 filename* wins over filename, in either order */
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=f;"
					  " filename*=UTF-8''%e2%82%ac%20rates.txt;"
					  " filename=\"EUR rates.txt\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "\xe2\x82\xac rates.txt");
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=f;"
					  " filename=\"EUR rates.txt\";"
					  " filename*=utf-8'en'%e2%82%ac%20rates.txt\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "\xe2\x82\xac rates.txt");
	/* an undecodable filename* is ignored */
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=f;"
					  " filename=\"plain.txt\"; filename*=koi8-r''%c1\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "plain.txt");
	assert_int_equal(parse_one_header("Content-Disposition: form-data; name=f;"
					  " filename*=UTF-8''a%00b\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.filename, "");
	assert_int_equal(r->parts[0].hdr.has_filename, 0);

	/* long filename: truncated at 255 bytes */
	memset(long_name, 'n', 300);
	long_name[300] = '\0';
	snprintf(lines, sizeof(lines), "Content-Disposition: form-data; filename=\"%s\"\r\n",
		 long_name);
	assert_int_equal(parse_one_header(lines, r), 0);
	assert_int_equal(strlen(r->parts[0].hdr.filename), 255);
	assert_int_equal(r->parts[0].hdr.has_filename, 1);

	/* folded header line */
	assert_int_equal(parse_one_header("Content-Disposition: form-data;\r\n"
					  "\tname=\"folded\"\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.name, "folded");

	/* first of repeated headers wins */
	assert_int_equal(parse_one_header("Content-Type: a/b\r\nContent-Type: c/d\r\n"
					  "Content-Disposition: form-data; name=one\r\n"
					  "Content-Disposition: form-data; name=two\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.content_type, "a/b");
	assert_string_equal(r->parts[0].hdr.name, "one");
	free(r);
}

static void test_other_header_values(void **state)
{
	struct rec *r = rec_new();
	char lines[700], value[300];

	(void)state;
	assert_int_equal(parse_one_header("CONTENT-TYPE:  image/png ; q=1 \t\r\n"
					  "content-encoding: gzip\r\n"
					  "Content-Md5: XrY7u+Ae7tCTyyK7j1rNww==\r\n",
					  r),
			 0);
	assert_string_equal(r->parts[0].hdr.content_type, "image/png ; q=1");
	assert_string_equal(r->parts[0].hdr.content_encoding, "gzip");
	assert_string_equal(r->parts[0].hdr.content_md5, "XrY7u+Ae7tCTyyK7j1rNww==");

	/* empty value */
	assert_int_equal(parse_one_header("Content-Type:\r\n", r), 0);
	assert_string_equal(r->parts[0].hdr.content_type, "");

	/* values longer than their field are truncated */
	memset(value, 'v', 299);
	value[299] = '\0';
	snprintf(lines, sizeof(lines), "Content-MD5: %s\r\nContent-Type: %s\r\n", value, value);
	assert_int_equal(parse_one_header(lines, r), 0);
	assert_int_equal(strlen(r->parts[0].hdr.content_md5), 63);
	assert_int_equal(strlen(r->parts[0].hdr.content_type), 255);
	free(r);
}

static void test_malformed_headers(void **state)
{
	static const char *const bad[] = {
	    "no colon here\r\n",
	    ": empty name\r\n",
	    "Content-Type : space before colon\r\n",
	    "Bad Name: x\r\n",
	    " leading: continuation\r\n",
	    "Content-Type: a\nX: bare LF\r\n",
	    "Content-Type: a\rX: bare CR\r\n",
	    "Content-Disposition: form-data; name=\"unterminated\r\n",
	    "Content-Disposition: form-data; name=\"x\\\"\r\n",
	    "Content-Disposition: ; name=x\r\n",
	    "Content-Disposition:\r\n",
	    "Content-Disposition: form-data; name\r\n",
	    "Content-Disposition: form-data; name=\r\n",
	    "Content-Disposition: form-data; =x\r\n",
	    "Content-Disposition: form-data; name=a b\r\n",
	    "Content-Disposition: form-data name=x\r\n",
	    "Content-Disposition: form-data; name=a; name=b\r\n",
	    "Content-Disposition: form-data; filename=a; FILENAME=b\r\n",
	    "Content-Disposition: form-data; filename=a/b\r\n",
	    "Content-Disposition: form-data; name=\"x\"junk\r\n",
	};
	struct rec *r = rec_new();

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_one_header(bad[i], r);

		if (rc != -EINVAL)
			print_error("accepted: %s", bad[i]);
		assert_int_equal(rc, -EINVAL);
		assert_int_equal(r->nparts, 0);
	}
	free(r);
}

static void test_nul_in_header(void **state)
{
	static const char body[] = "--b\r\nContent-Type: a\0b\r\n\r\nD\r\n--b--";
	struct rec *r = rec_new();

	(void)state;
	assert_int_equal(parse_whole("b", body, sizeof(body) - 1, r), -EINVAL);
	assert_int_equal(r->nparts, 0);
	free(r);
}

static void test_header_size_limit(void **state)
{
	static char body[MULTIPART_MAX_HEADER + 256];
	struct rec *r = rec_new();
	const char *start = "--b\r\n";
	const char *end = "\r\nD\r\n--b--";
	size_t n;

	(void)state;
	/* the whole block, blank line included, is exactly MULTIPART_MAX_HEADER bytes */
	for (int extra = 0; extra <= 1; extra++) {
		size_t fill = MULTIPART_MAX_HEADER - strlen("X: \r\n") - 2 + (size_t)extra;

		n = 0;
		memcpy(body + n, start, strlen(start));
		n += strlen(start);
		memcpy(body + n, "X: ", 3);
		n += 3;
		memset(body + n, 'h', fill);
		n += fill;
		memcpy(body + n, "\r\n", 2);
		n += 2;
		memcpy(body + n, end, strlen(end));
		n += strlen(end);
		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_whole("b", body, n, r), extra ? -EINVAL : 0);
		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_bytes("b", body, n, r), extra ? -EINVAL : 0);
	}
	/* a header block that never ends */
	memcpy(body, start, strlen(start));
	memset(body + strlen(start), 'h', sizeof(body) - strlen(start));
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_whole("b", body, sizeof(body), r), -EINVAL);
	free(r);
}

/* ---- boundaries and line structure ---- */

static void test_boundary_lines(void **state)
{
	struct rec *r = rec_new();

	(void)state;
	/* padding, then garbage */
	assert_int_equal(parse_str("b", "--b \tx\r\n\r\nD\r\n--b--", r), -EINVAL);
	/* a single dash then something else */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "--b\r\n\r\nD\r\n--b-x", r), -EINVAL);
	/* CR not followed by LF */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "--b\rX\r\n\r\nD\r\n--b--", r), -EINVAL);
	/* LF-only line endings are rejected */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "--b\nContent-Type: a\n\nD\n--b--\n", r), -EINVAL);
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "--b\r\n\r\nD\r\n--b\n\r\nE\r\n--b--", r), -EINVAL);
	assert_int_equal(r->nparts, 1);
	/* a body without any boundary */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "just some text\r\n", r), -EINVAL);
	assert_int_equal(r->nparts, 0);
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "", r), -EINVAL);
	free(r);
}

static void test_missing_close(void **state)
{
	static const char *const bodies[] = {
	    "--b\r\n\r\ndata",
	    "--b\r\n\r\ndata\r\n",
	    "--b\r\n\r\ndata\r\n--b",
	    "--b\r\n\r\ndata\r\n--b-",
	    "--b\r\n\r\ndata\r\n--b  ",
	    "--b\r\n\r\ndata\r\n--b\r",
	    "--b\r\n\r\ndata\r\n--b\r\n",
	    "--b\r\nContent-Type: x\r\n",
	    "--b",
	    "--b--",
	};
	struct rec *r = rec_new();

	(void)state;
	for (size_t i = 0; i + 1 < sizeof(bodies) / sizeof(bodies[0]); i++) {
		memset(r, 0, sizeof(*r));
		assert_int_equal(parse_str("b", bodies[i], r), -EINVAL);
		assert_int_equal(r->bad_order, 0);
	}
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", bodies[sizeof(bodies) / sizeof(bodies[0]) - 1], r), 0);
	/* the data before the missing delimiter was delivered, the part never ended */
	memset(r, 0, sizeof(*r));
	assert_int_equal(parse_str("b", "--b\r\n\r\ndata\r\n--b", r), -EINVAL);
	assert_part_data(r, 0, "data", 4);
	assert_int_equal(r->parts[0].ended, 0);
	free(r);
}

static void test_init_and_boundary_limits(void **state)
{
	struct multipart_parser p;
	char b[80];
	char body[256];
	struct rec *r = rec_new();
	int n;

	(void)state;
	memset(b, 'B', sizeof(b));
	assert_int_equal(multipart_init(&p, b, 71, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"x", 1), -EINVAL);
	assert_int_equal(multipart_finish(&p), -EINVAL);
	assert_int_equal(multipart_init(&p, b, 0, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_init(&p, NULL, 5, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_init(NULL, "b", 1, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_init(&p, "a\r\nb", 4, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_init(&p, "a\nb", 3, &callbacks, r), -EINVAL);
	assert_int_equal(multipart_init(&p, "a\0b", 3, &callbacks, r), -EINVAL);

	/* a 70-byte boundary works */
	b[70] = '\0';
	n = snprintf(body, sizeof(body), "--%s\r\n\r\nxy\r\n--%s--", b, b);
	assert_int_equal(parse_whole(b, body, (size_t)n, r), 0);
	assert_part_data(r, 0, "xy", 2);
	/* "--" + 70 bytes of a 69-byte boundary: not a boundary line */
	memset(r, 0, sizeof(*r));
	b[69] = '\0';
	assert_int_equal(parse_whole(b, body, (size_t)n, r), -EINVAL);
	assert_int_equal(r->nparts, 0);

	/* no callbacks at all is allowed */
	assert_int_equal(multipart_init(&p, "b", 1, NULL, NULL), 0);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"--b\r\n\r\nD\r\n--b--", 15), 0);
	assert_int_equal(multipart_finish(&p), 0);
	/* empty feeds, including a NULL pointer with length 0 */
	assert_int_equal(multipart_init(&p, "b", 1, NULL, NULL), 0);
	assert_int_equal(multipart_feed(&p, NULL, 0), 0);
	assert_int_equal(multipart_feed(&p, NULL, 3), -EINVAL);
	free(r);
}

static void test_boundary_from_content_type(void **state)
{
	char out[MULTIPART_MAX_BOUNDARY + 1];
	char ct[200], b71[72];

	(void)state;
	assert_int_equal(multipart_boundary_from_content_type("multipart/form-data; boundary=abc",
							      out, sizeof(out)),
			 3);
	assert_string_equal(out, "abc");
	assert_int_equal(
	    multipart_boundary_from_content_type(
		"Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\\\"d\"", out, sizeof(out)),
	    7);
	assert_string_equal(out, "a b:c\"d");
	assert_int_equal(multipart_boundary_from_content_type(
			     "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW ",
			     out, sizeof(out)),
			 37);
	assert_string_equal(out, "----WebKitFormBoundary7MA4YWxkTrZu0gW");

	/* 70 is the limit */
	memset(b71, 'x', 71);
	b71[71] = '\0';
	snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", b71);
	assert_int_equal(multipart_boundary_from_content_type(ct, out, sizeof(out)), -EINVAL);
	snprintf(ct, sizeof(ct), "multipart/form-data; boundary=\"%.70s\"", b71);
	assert_int_equal(multipart_boundary_from_content_type(ct, out, sizeof(out)), 70);
	/* too small an output buffer */
	assert_int_equal(
	    multipart_boundary_from_content_type("multipart/form-data; boundary=abc", out, 3),
	    -EINVAL);
	assert_int_equal(
	    multipart_boundary_from_content_type("multipart/form-data; boundary=abc", out, 4), 3);

	static const char *const bad[] = {
	    "multipart/form-data",
	    "multipart/form-data; boundary=",
	    "multipart/form-data; boundary=\"\"",
	    "multipart/form-data; boundary=\"abc",
	    "multipart/form-data; boundary=a; boundary=b",
	    "multipart/form-data; boundary=a b",
	    "multipart/form-data; charset; boundary=a",
	    "multipart/form-data boundary=a",
	    "multipart; boundary=a",
	    "; boundary=a",
	    "",
	    "multipart/form-data; boundary=\"a\tb\"",
	    "multipart/form-data; xboundary=a",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (multipart_boundary_from_content_type(bad[i], out, sizeof(out)) != -EINVAL)
			print_error("accepted: %s\n", bad[i]);
		assert_int_equal(multipart_boundary_from_content_type(bad[i], out, sizeof(out)),
				 -EINVAL);
	}
	assert_int_equal(multipart_boundary_from_content_type(NULL, out, sizeof(out)), -EINVAL);
}

/* ---- callbacks stopping the parser, error state ---- */

static void test_callback_stops(void **state)
{
	const char *body = "--b\r\n\r\nA\r\n--b\r\n\r\nB\r\n--b--";
	struct multipart_parser p;
	struct rec *r = rec_new();

	(void)state;
	r->stop_begin_at = 2;
	assert_int_equal(parse_str("b", body, r), 7);
	assert_int_equal(r->nparts, 2);
	assert_part_data(r, 0, "A", 1);
	assert_int_equal(r->parts[1].len, 0);

	memset(r, 0, sizeof(*r));
	r->stop_data = 1;
	assert_int_equal(parse_str("b", body, r), 8);
	assert_int_equal(r->nparts, 1);

	memset(r, 0, sizeof(*r));
	r->stop_end = 1;
	assert_int_equal(parse_str("b", body, r), 9);
	assert_int_equal(r->nparts, 1);
	assert_int_equal(r->parts[0].ended, 1);

	/* after a stop every call is -EINVAL */
	memset(r, 0, sizeof(*r));
	r->stop_data = 1;
	assert_int_equal(multipart_init(&p, "b", 1, &callbacks, r), 0);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)body, strlen(body)), 8);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"x", 1), -EINVAL);
	assert_int_equal(multipart_finish(&p), -EINVAL);

	/* same after malformed input */
	memset(r, 0, sizeof(*r));
	assert_int_equal(multipart_init(&p, "b", 1, &callbacks, r), 0);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"--b\r\nbad\r\n\r\n", 12), -EINVAL);
	assert_int_equal(multipart_feed(&p, (const uint8_t *)"--b--", 5), -EINVAL);
	assert_int_equal(multipart_finish(&p), -EINVAL);
	free(r);
}

/* ---- random bodies: chunking never changes the outcome ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

/* Random parts with data drawn from delimiter characters, encoded and parsed back. */
static void test_random_roundtrip(void **state)
{
	static const char alphabet[] = "\r\n-Bxq";
	static uint8_t body[4096];
	static uint8_t data[4][64];
	size_t data_len[4];
	struct rec *whole = rec_new(), *chunked = rec_new();

	(void)state;
	for (int iter = 0; iter < 3000; iter++) {
		int nparts = (int)(rng() % 4) + 1;
		size_t n = 0;

		if (rng() % 2) {
			/* a preamble that looks like the start of a delimiter */
			memcpy(body, "pre\r\n--\r\n", 9);
			n = 9;
		}
		for (int i = 0; i < nparts; i++) {
			n += (size_t)snprintf(
			    (char *)body + n, sizeof(body) - n,
			    "--Bx\r\nContent-Disposition: form-data; name=p%d\r\n\r\n", i);
			do {
				data_len[i] = rng() % 40;
				for (size_t j = 0; j < data_len[i]; j++)
					data[i][j] = (uint8_t)alphabet[rng() % 6];
			} while (memmem(data[i], data_len[i], "\r\n--Bx", 6));
			memcpy(body + n, data[i], data_len[i]);
			n += data_len[i];
			memcpy(body + n, "\r\n", 2);
			n += 2;
		}
		memcpy(body + n, "--Bx--", 6);
		n += 6;

		memset(whole, 0, sizeof(*whole));
		assert_int_equal(parse_whole("Bx", body, n, whole), 0);
		assert_int_equal(whole->nparts, nparts);
		for (int i = 0; i < nparts; i++)
			assert_part_data(whole, i, data[i], data_len[i]);

		memset(chunked, 0, sizeof(*chunked));
		assert_int_equal(parse_bytes("Bx", body, n, chunked), 0);
		assert_rec_equal(whole, chunked);
	}
	free(whole);
	free(chunked);
}

/* Random garbage near the grammar: one-shot, byte-wise and random chunks all agree. */
static void test_random_chunking_invariance(void **state)
{
	static const char *const pieces[] = {
	    "\r\n",
	    "--",
	    "Bx",
	    "-",
	    "\r",
	    "\n",
	    "x",
	    " ",
	    "Content-Disposition: form-data; ",
	    "name=\"a\"",
	    "filename=\"f\\\"g\"",
	    ";",
	    "Content-Type: t/t\r\n",
	    "\t",
	    "\"",
	};
	static uint8_t body[2048];
	struct rec *a = rec_new(), *b = rec_new(), *c = rec_new();

	(void)state;
	for (int iter = 0; iter < 5000; iter++) {
		size_t n = 0, cuts[8];
		int npieces = (int)(rng() % 40), ncuts = (int)(rng() % 8), rc_a, rc_b, rc_c;

		if (rng() % 4)
			n = (size_t)snprintf((char *)body, sizeof(body), "--Bx\r\n");
		for (int i = 0; i < npieces; i++) {
			const char *s = pieces[rng() % (sizeof(pieces) / sizeof(pieces[0]))];

			memcpy(body + n, s, strlen(s));
			n += strlen(s);
		}
		if (rng() % 2) {
			memcpy(body + n, "\r\n--Bx--", 8);
			n += 8;
		}
		for (int i = 0; i < ncuts; i++)
			cuts[i] = n ? rng() % (n + 1) : 0;
		/* sort the cuts */
		for (int i = 1; i < ncuts; i++)
			for (int j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
				size_t t = cuts[j];

				cuts[j] = cuts[j - 1];
				cuts[j - 1] = t;
			}

		memset(a, 0, sizeof(*a));
		memset(b, 0, sizeof(*b));
		memset(c, 0, sizeof(*c));
		rc_a = parse_whole("Bx", body, n, a);
		rc_b = parse_bytes("Bx", body, n, b);
		rc_c = parse_cuts("Bx", body, n, cuts, ncuts, c);
		assert_true(rc_a == 0 || rc_a == -EINVAL);
		assert_int_equal(rc_a, rc_b);
		assert_int_equal(rc_a, rc_c);
		assert_rec_equal(a, b);
		assert_rec_equal(a, c);
	}
	free(a);
	free(b);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sample_whole),
	    cmocka_unit_test(test_sample_one_byte_chunks),
	    cmocka_unit_test(test_sample_every_split),
	    cmocka_unit_test(test_sample_every_truncation),
	    cmocka_unit_test(test_simple_upload),
	    cmocka_unit_test(test_preamble_and_epilogue),
	    cmocka_unit_test(test_zero_parts_and_empty_parts),
	    cmocka_unit_test(test_data_like_boundaries),
	    cmocka_unit_test(test_lookahead_bound),
	    cmocka_unit_test(test_large_chunk_single_callback),
	    cmocka_unit_test(test_disposition_values),
	    cmocka_unit_test(test_other_header_values),
	    cmocka_unit_test(test_malformed_headers),
	    cmocka_unit_test(test_nul_in_header),
	    cmocka_unit_test(test_header_size_limit),
	    cmocka_unit_test(test_boundary_lines),
	    cmocka_unit_test(test_missing_close),
	    cmocka_unit_test(test_init_and_boundary_limits),
	    cmocka_unit_test(test_boundary_from_content_type),
	    cmocka_unit_test(test_callback_stops),
	    cmocka_unit_test(test_random_roundtrip),
	    cmocka_unit_test(test_random_chunking_invariance),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
