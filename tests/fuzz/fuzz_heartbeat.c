/*
 * Fuzz target for cluster/heartbeat: both decoders on arbitrary bytes.
 *
 * Whatever decodes must be sane (strings terminated inside their fields, list
 * pointers present exactly when the count is non-zero, counts under the cap) and
 * stable: encoding it and decoding that again gives the same values. The first
 * encoding need not equal the input (unknown fields and field order are not kept).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/common/heartbeat.h"
#include "tests/fuzz/fuzz.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define TERMINATED(field) (strnlen((field), sizeof(field)) < sizeof(field))

static void check_list(const struct hb_volume *v, size_t n)
{
	CHECK(n <= HEARTBEAT_MAX_VOLUMES);
	CHECK((n == 0) == (v == NULL));
	for (size_t i = 0; i < n; i++) {
		CHECK(TERMINATED(v[i].collection));
		CHECK(v[i].max_file_key_unused == 0);
	}
}

static void check_sane(const struct heartbeat *hb)
{
	CHECK(TERMINATED(hb->ip));
	CHECK(TERMINATED(hb->public_url));
	CHECK(TERMINATED(hb->data_center));
	CHECK(TERMINATED(hb->rack));
	CHECK(TERMINATED(hb->id));
	check_list(hb->volumes, hb->n_volumes);
	check_list(hb->new_volumes, hb->n_new);
	check_list(hb->deleted_volumes, hb->n_deleted);
}

/* Lists are compared whole: decode callocs them and copies strings with their NUL,
 * so padding and the bytes after each string are zero on both sides. */
static void check_same(const struct heartbeat *a, const struct heartbeat *b)
{
	CHECK(strcmp(a->ip, b->ip) == 0);
	CHECK(a->port == b->port);
	CHECK(strcmp(a->public_url, b->public_url) == 0);
	CHECK(a->max_volume_count == b->max_volume_count);
	CHECK(a->max_file_key == b->max_file_key);
	CHECK(strcmp(a->data_center, b->data_center) == 0);
	CHECK(strcmp(a->rack, b->rack) == 0);
	CHECK(strcmp(a->id, b->id) == 0);
	CHECK(a->grpc_port == b->grpc_port);
	CHECK(a->has_no_volumes == b->has_no_volumes);
	CHECK(a->n_volumes == b->n_volumes && a->n_new == b->n_new && a->n_deleted == b->n_deleted);
	CHECK(a->n_volumes == 0 ||
	      memcmp(a->volumes, b->volumes, a->n_volumes * sizeof(*a->volumes)) == 0);
	CHECK(a->n_new == 0 ||
	      memcmp(a->new_volumes, b->new_volumes, a->n_new * sizeof(*a->new_volumes)) == 0);
	CHECK(a->n_deleted == 0 || memcmp(a->deleted_volumes, b->deleted_volumes,
					  a->n_deleted * sizeof(*a->deleted_volumes)) == 0);
}

static void fuzz_heartbeat(const uint8_t *data, size_t size)
{
	struct heartbeat hb, again;
	uint8_t *buf;
	size_t len;
	int ret = heartbeat_decode(data, size, &hb);

	CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	if (ret != 0) {
		heartbeat_release(&hb); /* harmless after a failure */
		return;
	}
	check_sane(&hb);
	ret = heartbeat_encode(&hb, &buf, &len);
	CHECK(ret == 0 || ret == -ENOMEM);
	if (ret == 0) {
		ret = heartbeat_decode(buf, len, &again);
		CHECK(ret == 0 || ret == -ENOMEM);
		if (ret == 0)
			check_same(&hb, &again);
		heartbeat_release(&again);
		free(buf);
	}
	heartbeat_release(&hb);
}

static void fuzz_response(const uint8_t *data, size_t size)
{
	struct heartbeat_response r, again;
	uint8_t *buf;
	size_t len;
	int ret = heartbeat_response_decode(data, size, &r);

	CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	if (ret != 0)
		return;
	CHECK(TERMINATED(r.leader));
	if (heartbeat_response_encode(&r, &buf, &len) != 0)
		return;
	CHECK(heartbeat_response_decode(buf, len, &again) == 0);
	CHECK(again.volume_size_limit == r.volume_size_limit);
	CHECK(strcmp(again.leader, r.leader) == 0);
	CHECK(again.resend_full_volume_list == r.resend_full_volume_list);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so that any read past the end is caught by ASan. */
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	fuzz_heartbeat(copy, size);
	fuzz_response(copy, size);
	free(copy);
	return 0;
}
