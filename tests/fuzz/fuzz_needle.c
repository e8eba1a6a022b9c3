/*
 * Fuzz target for cluster/needle: needle_decode for versions 1 to 3, with and without
 * checksum verification, and needle_decode_meta, on arbitrary bytes.
 *
 * Checked: no crash or out-of-bounds read (ASan), every pointer and length returned lies
 * inside the input, the result is consistent across verify modes, and a decoded needle
 * re-encodes into a record that decodes to the same fields.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/storage/needle.h"
#include "tests/fuzz/fuzz.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static bool inside(const void *p, size_t len, const uint8_t *buf, size_t size)
{
	const uint8_t *q = p;

	if (!q)
		return len == 0;
	return q >= buf && q <= buf + size && len <= (size_t)(buf + size - q);
}

static void check_fields_inside(const struct needle *n, const uint8_t *buf, size_t size)
{
	CHECK(inside(n->data, n->data_size, buf, size));
	CHECK(inside(n->name, n->name_len, buf, size));
	CHECK(inside(n->mime, n->mime_len, buf, size));
	CHECK(inside(n->pairs, n->pairs_len, buf, size));
}

static bool same_bytes(const void *a, const void *b, size_t len)
{
	return len == 0 || memcmp(a, b, len) == 0;
}

/* Re-encodes a decoded needle and checks the result decodes to the same fields. */
static void check_reencode(const struct needle *n, int version)
{
	struct needle in = *n, out;
	uint64_t cap;
	uint8_t *rec;
	size_t len;

	/* Fields whose flag was set but whose value the encoder would drop are normalised. */
	needle_compute_size(&in);
	cap = needle_disk_size(in.size, version);
	rec = malloc((size_t)cap);
	if (!rec)
		return;
	len = needle_encode(&in, version, rec, (size_t)cap);
	CHECK(len == cap || (version == NEEDLE_VERSION_1 && len > 0 && len <= cap));
	CHECK(needle_decode(rec, len, version, true, &out) == 0);
	CHECK(out.cookie == n->cookie && out.id == n->id);
	CHECK(out.data_size == n->data_size && same_bytes(out.data, n->data, n->data_size));
	CHECK(out.checksum == crc32c(0, n->data, n->data_size));
	if (version == NEEDLE_VERSION_3)
		CHECK(out.append_at_ns == n->append_at_ns);
	if (version != NEEDLE_VERSION_1 && n->data_size > 0) {
		CHECK(out.name_len == n->name_len && same_bytes(out.name, n->name, n->name_len));
		CHECK(out.mime_len == n->mime_len && same_bytes(out.mime, n->mime, n->mime_len));
		CHECK(out.pairs_len == n->pairs_len &&
		      same_bytes(out.pairs, n->pairs, n->pairs_len));
		if (n->flags & NEEDLE_FLAG_HAS_LAST_MOD)
			CHECK(out.last_modified == n->last_modified);
		if (n->ttl.count > 0)
			CHECK(out.ttl.count == n->ttl.count && out.ttl.unit == n->ttl.unit);
		CHECK((out.flags & (NEEDLE_FLAG_GZIP | NEEDLE_FLAG_CHUNKMANIFEST)) ==
		      (n->flags & (NEEDLE_FLAG_GZIP | NEEDLE_FLAG_CHUNKMANIFEST)));
	}
	free(rec);
}

static void fuzz_decode(const uint8_t *buf, size_t size, int version)
{
	struct needle plain, verified;
	int rc_plain = needle_decode(buf, size, version, false, &plain);
	int rc_verified = needle_decode(buf, size, version, true, &verified);

	CHECK(rc_plain == 0 || rc_plain == -EINVAL);
	CHECK(rc_verified == 0 || rc_verified == -EINVAL || rc_verified == -EBADMSG);
	/* Only the checksum check differs between the two modes. */
	CHECK((rc_plain == -EINVAL) == (rc_verified == -EINVAL));
	if (rc_plain != 0)
		return;
	CHECK(memcmp(&plain, &verified, sizeof(plain)) == 0);
	check_fields_inside(&plain, buf, size);
	CHECK(needle_disk_size(plain.size, version) <= size);
	CHECK(plain.data_size <= plain.size);
	if (version == NEEDLE_VERSION_1) {
		CHECK(plain.data_size == plain.size);
	} else if (plain.size > 0) {
		CHECK((uint64_t)plain.data_size + 5 <= plain.size);
		/* All the body fields lie inside the body. */
		CHECK(inside(plain.data, plain.size - 4, buf + 20, plain.size - 4));
	}
	if (rc_verified == 0 && plain.data_size > 0)
		CHECK(needle_checksum_matches(plain.checksum,
					      crc32c(0, plain.data, plain.data_size)));
	if (rc_verified == -EBADMSG)
		CHECK(plain.data_size > 0 &&
		      !needle_checksum_matches(plain.checksum,
					       crc32c(0, plain.data, plain.data_size)));
	check_reencode(&plain, version);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so that any read past the end is caught by ASan. */
	uint8_t *buf = malloc(size ? size : 1);
	struct needle n;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	for (int version = NEEDLE_VERSION_1; version <= NEEDLE_VERSION_3; version++)
		fuzz_decode(buf, size, version);
	/* Out-of-range versions are refused. */
	CHECK(needle_decode(buf, size, 0, true, &n) == -EINVAL);
	CHECK(needle_decode(buf, size, 4, false, &n) == -EINVAL);
	/* The body fields on their own. */
	memset(&n, 0, sizeof(n));
	if (needle_decode_meta(buf, size, &n) == 0)
		check_fields_inside(&n, buf, size);
	free(buf);
	return 0;
}
