/*
 * fuzz_multipart: the incremental multipart parser on arbitrary bodies.
 *
 * Input format: the first line (up to the first '\n', a trailing '\r' removed) selects
 * the boundary, the rest of the input is the body.
 *   - If the line starts with "multipart/" it is a Content-Type header value and the
 *     boundary comes from multipart_boundary_from_content_type (no boundary: done).
 *   - Otherwise the line itself is the boundary.
 * Inputs without a '\n' only exercise multipart_boundary_from_content_type.
 *
 * The body is parsed three times: in one piece, one byte at a time, and in pieces
 * whose sizes come from the body's own bytes. All three must agree on the result and
 * on what the callbacks saw (a hash of headers and data, which ignores how the data
 * was sliced), and the callbacks must come in order: begin, data*, end.
 */
#include "fuzz.h"

#include "cluster/net/multipart.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct observed {
	uint64_t hash;
	size_t data_bytes;
	int parts;
	int in_part;
};

static void hash_bytes(struct observed *o, const void *p, size_t len)
{
	const uint8_t *b = p;

	/* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		o->hash ^= b[i];
		o->hash *= 0x100000001b3ULL;
	}
}

static void check_string(const char *s, size_t cap)
{
	if (!memchr(s, '\0', cap))
		abort();
}

static int on_begin(void *ctx, const struct multipart_part *part)
{
	struct observed *o = ctx;

	if (o->in_part)
		abort();
	check_string(part->name, sizeof(part->name));
	check_string(part->filename, sizeof(part->filename));
	check_string(part->content_type, sizeof(part->content_type));
	check_string(part->content_md5, sizeof(part->content_md5));
	check_string(part->content_encoding, sizeof(part->content_encoding));
	if (part->has_filename != 0 && part->has_filename != 1)
		abort();
	if (!part->has_filename && part->filename[0])
		abort();
	o->in_part = 1;
	o->parts++;
	hash_bytes(o, "B", 1);
	hash_bytes(o, part->name, strlen(part->name) + 1);
	hash_bytes(o, part->filename, strlen(part->filename) + 1);
	hash_bytes(o, part->content_type, strlen(part->content_type) + 1);
	hash_bytes(o, part->content_md5, strlen(part->content_md5) + 1);
	hash_bytes(o, part->content_encoding, strlen(part->content_encoding) + 1);
	hash_bytes(o, &part->has_filename, sizeof(part->has_filename));
	return 0;
}

static int on_data(void *ctx, const uint8_t *data, size_t len)
{
	struct observed *o = ctx;

	if (!o->in_part || len == 0)
		abort();
	o->data_bytes += len;
	hash_bytes(o, data, len);
	return 0;
}

static int on_end(void *ctx)
{
	struct observed *o = ctx;

	if (!o->in_part)
		abort();
	o->in_part = 0;
	hash_bytes(o, "E", 1);
	return 0;
}

static const struct multipart_callbacks callbacks = {on_begin, on_data, on_end};

/* mode 0: whole body; 1: byte by byte; 2: pieces sized by the body's bytes */
static int parse(const char *boundary, size_t boundary_len, const uint8_t *body, size_t len,
		 int mode, struct observed *o)
{
	struct multipart_parser *p = malloc(sizeof(*p));
	size_t at = 0;
	int rc;

	if (!p)
		abort();
	memset(o, 0, sizeof(*o));
	o->hash = 0xcbf29ce484222325ULL;
	rc = multipart_init(p, boundary, boundary_len, &callbacks, o);
	if (rc != 0) {
		free(p);
		return rc;
	}
	while (at < len) {
		size_t n = len - at;

		if (mode == 1)
			n = 1;
		else if (mode == 2 && n > 1)
			n = 1 + body[at] % (n < 97 ? n : 97);
		rc = multipart_feed(p, body + at, n);
		if (rc != 0)
			break;
		at += n;
	}
	if (rc == 0)
		rc = multipart_finish(p);
	else if (multipart_feed(p, body, len) != -EINVAL || multipart_finish(p) != -EINVAL)
		abort(); /* an error must be sticky */
	if (rc != 0 && rc != -EINVAL)
		abort();
	if (o->data_bytes > len)
		abort();
	free(p);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t line_len = nl ? (size_t)(nl - data) : size;
	char *line = malloc(line_len + 1);
	char boundary[MULTIPART_MAX_BOUNDARY + 1];
	const char *b = NULL;
	size_t b_len = 0;
	struct observed o[3];
	int rc[3];

	if (!line)
		abort();
	memcpy(line, data, line_len);
	line[line_len] = '\0';
	if (line_len > 0 && line[line_len - 1] == '\r')
		line[--line_len] = '\0';

	/* the Content-Type parser sees every first line, whatever comes next */
	rc[0] = multipart_boundary_from_content_type(line, boundary, sizeof(boundary));
	if (rc[0] != -EINVAL &&
	    (rc[0] <= 0 || rc[0] > MULTIPART_MAX_BOUNDARY || strlen(boundary) != (size_t)rc[0]))
		abort();
	if (!nl)
		goto out;

	if (strncmp(line, "multipart/", 10) == 0) {
		if (rc[0] < 0)
			goto out;
		b = boundary;
		b_len = (size_t)rc[0];
	} else {
		b = line;
		b_len = line_len;
	}

	for (int mode = 0; mode < 3; mode++)
		rc[mode] = parse(b, b_len, nl + 1, size - (size_t)(nl + 1 - data), mode, &o[mode]);
	for (int mode = 1; mode < 3; mode++) {
		if (rc[mode] != rc[0] || o[mode].hash != o[0].hash ||
		    o[mode].data_bytes != o[0].data_bytes || o[mode].parts != o[0].parts ||
		    o[mode].in_part != o[0].in_part)
			abort();
	}
out:
	free(line);
	return 0;
}
