/*
 * test_heartbeat: protobuf encoding of Heartbeat / HeartbeatResponse.
 *
 * The reference messages are written byte by byte from the protobuf wire format
 * (tag = field number << 3 | wire type; varints little-endian base 128) with the
 * field numbers of docs/seaweedfs-reference.md section 6.1, so they check the field
 * numbers in both directions independently of protoc-c. The rest are round trips and
 * hostile input: truncation at every length, wrong wire types, bad strings, lists
 * over the cap, random bytes and bit flips. Meant to run under ASan/UBSan too.
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

#include "cluster/common/heartbeat.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* --- the hand-written message, one top-level field per chunk --- */

static const uint8_t f_ip[] = {0x0a, 0x01, 'a'};		   /* 1 ip "a" */
static const uint8_t f_port[] = {0x10, 0x01};			   /* 2 port 1 */
static const uint8_t f_public_url[] = {0x1a, 0x03, 'p', 'u', 'b'}; /* 3 public_url */
/* 4 max_volume_counts {"": 7}: an entry message {1 key, 2 value}. Go writes the empty
 * key explicitly; protobuf-c (proto3) leaves it out. Both must decode. */
static const uint8_t f_counts_go[] = {0x22, 0x04, 0x0a, 0x00, 0x10, 0x07};
static const uint8_t f_counts_kelp[] = {0x22, 0x02, 0x10, 0x07};
static const uint8_t f_max_file_key[] = {0x28, 0x2a};	       /* 5 max_file_key 42 */
static const uint8_t f_data_center[] = {0x32, 0x02, 'd', 'c'}; /* 6 data_center */
static const uint8_t f_rack[] = {0x3a, 0x01, 'r'};	       /* 7 rack */
static const uint8_t f_admin_port[] = {0x40, 0x05};	       /* 8, dropped */
/* 9 volumes: one VolumeInformationMessage, as a Go volume server sends it */
static const uint8_t f_volume_go[] = {
    0x4a, 0x27,				/* field 9, 39 bytes */
    0x08, 0x03,				/* 1 id 3 */
    0x10, 0x80, 0x08,			/* 2 size 1024 */
    0x1a, 0x01, 'c',			/* 3 collection "c" */
    0x20, 0x05,				/* 4 file_count 5 */
    0x28, 0x01,				/* 5 delete_count 1 */
    0x30, 0x64,				/* 6 deleted_byte_count 100 */
    0x38, 0x01,				/* 7 read_only */
    0x40, 0x01,				/* 8 replica_placement "001" */
    0x48, 0x03,				/* 9 version 3 */
    0x50, 0x83, 0x02,			/* 10 ttl 1<<8|3 ("1d") */
    0x58, 0x02,				/* 11 compact_revision 2 */
    0x60, 0x80, 0xe2, 0xcf, 0xaa, 0x06, /* 12 modified_at_second 1700000000 */
    0x7a, 0x03, 'h',  'd',  'd',	/* 15 disk_type, dropped */
    0x80, 0x01, 0x02,			/* 16 disk_id 2, dropped */
};
/* The same volume as kelp writes it: no disk type or id. */
static const uint8_t f_volume_kelp[] = {
    0x4a, 0x1f, 0x08, 0x03, 0x10, 0x80, 0x08, 0x1a, 0x01, 'c',	0x20,
    0x05, 0x28, 0x01, 0x30, 0x64, 0x38, 0x01, 0x40, 0x01, 0x48, 0x03,
    0x50, 0x83, 0x02, 0x58, 0x02, 0x60, 0x80, 0xe2, 0xcf, 0xaa, 0x06,
};
/* 10 new_volumes: VolumeShortInformationMessage {1 id 4, 3 "n", 8 rp 2, 9 v 3, 10 ttl 5} */
static const uint8_t f_new_volume[] = {0x52, 0x0b, 0x08, 0x04, 0x1a, 0x01, 'n',
				       0x40, 0x02, 0x48, 0x03, 0x50, 0x05};
static const uint8_t f_deleted_volume[] = {0x5a, 0x02, 0x08, 0x05};  /* 11 {1 id 5} */
static const uint8_t f_has_no_volumes[] = {0x60, 0x01};		     /* 12 true */
static const uint8_t f_ec_shards[] = {0x82, 0x01, 0x02, 0x08, 0x01}; /* 16, not declared */
static const uint8_t f_grpc_port[] = {0xa0, 0x01, 0x90, 0x4e};	     /* 20 grpc_port 10000 */
static const uint8_t f_id[] = {0xb2, 0x01, 0x03, 'a', ':', '1'};     /* 22 id "a:1" */

struct chunk {
	const uint8_t *bytes;
	size_t len;
};

/* clang-format off */
#define CHUNK(a) {(a), sizeof(a)}
/* clang-format on */

static const struct chunk go_message[] = {
    CHUNK(f_ip),	 CHUNK(f_port),		  CHUNK(f_public_url),
    CHUNK(f_counts_go),	 CHUNK(f_max_file_key),	  CHUNK(f_data_center),
    CHUNK(f_rack),	 CHUNK(f_admin_port),	  CHUNK(f_volume_go),
    CHUNK(f_new_volume), CHUNK(f_deleted_volume), CHUNK(f_has_no_volumes),
    CHUNK(f_ec_shards),	 CHUNK(f_grpc_port),	  CHUNK(f_id),
};

static const struct chunk kelp_message[] = {
    CHUNK(f_ip),	   CHUNK(f_port),	    CHUNK(f_public_url),     CHUNK(f_counts_kelp),
    CHUNK(f_max_file_key), CHUNK(f_data_center),    CHUNK(f_rack),	     CHUNK(f_volume_kelp),
    CHUNK(f_new_volume),   CHUNK(f_deleted_volume), CHUNK(f_has_no_volumes), CHUNK(f_grpc_port),
    CHUNK(f_id),
};

/* Concatenates chunks into buf (big enough); returns the length. */
static size_t join(const struct chunk *chunks, size_t n, uint8_t *buf)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		memcpy(buf + len, chunks[i].bytes, chunks[i].len);
		len += chunks[i].len;
	}
	return len;
}

/* The struct the hand-written message stands for (what kelp can represent of it). */
static struct hb_volume ref_volume, ref_new, ref_deleted;

static void reference_heartbeat(struct heartbeat *hb)
{
	memset(hb, 0, sizeof(*hb));
	strcpy(hb->ip, "a");
	hb->port = 1;
	strcpy(hb->public_url, "pub");
	hb->max_volume_count = 7;
	hb->max_file_key = 42;
	strcpy(hb->data_center, "dc");
	strcpy(hb->rack, "r");
	hb->grpc_port = 10000;
	strcpy(hb->id, "a:1");
	hb->has_no_volumes = true;

	memset(&ref_volume, 0, sizeof(ref_volume));
	ref_volume.id = 3;
	ref_volume.size = 1024;
	strcpy(ref_volume.collection, "c");
	ref_volume.file_count = 5;
	ref_volume.delete_count = 1;
	ref_volume.deleted_bytes = 100;
	ref_volume.read_only = true;
	ref_volume.replica_placement = 1;
	ref_volume.version = 3;
	ref_volume.ttl = 1 << 8 | 3;
	ref_volume.compact_revision = 2;
	ref_volume.modified_at_second = 1700000000;
	hb->volumes = &ref_volume;
	hb->n_volumes = 1;

	memset(&ref_new, 0, sizeof(ref_new));
	ref_new.id = 4;
	strcpy(ref_new.collection, "n");
	ref_new.replica_placement = 2;
	ref_new.version = 3;
	ref_new.ttl = 5;
	hb->new_volumes = &ref_new;
	hb->n_new = 1;

	memset(&ref_deleted, 0, sizeof(ref_deleted));
	ref_deleted.id = 5;
	hb->deleted_volumes = &ref_deleted;
	hb->n_deleted = 1;
}

static void assert_volume_equal(const struct hb_volume *a, const struct hb_volume *b)
{
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->size, b->size);
	assert_string_equal(a->collection, b->collection);
	assert_int_equal(a->file_count, b->file_count);
	assert_int_equal(a->delete_count, b->delete_count);
	assert_int_equal(a->deleted_bytes, b->deleted_bytes);
	assert_int_equal(a->read_only, b->read_only);
	assert_int_equal(a->low_space, b->low_space);
	assert_int_equal(a->replica_placement, b->replica_placement);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->ttl, b->ttl);
	assert_int_equal(a->compact_revision, b->compact_revision);
	assert_int_equal(a->modified_at_second, b->modified_at_second);
	assert_int_equal(a->max_file_key_unused, 0);
}

/* Short-info lists carry only id, collection, replica placement, version and ttl. */
static void assert_short_volume_equal(const struct hb_volume *got, const struct hb_volume *sent)
{
	struct hb_volume expect = {0};

	expect.id = sent->id;
	strcpy(expect.collection, sent->collection);
	expect.replica_placement = sent->replica_placement;
	expect.version = sent->version;
	expect.ttl = sent->ttl;
	assert_volume_equal(got, &expect);
}

static void assert_list(const struct hb_volume *got, size_t n_got, const struct hb_volume *sent,
			size_t n_sent, bool short_info)
{
	assert_int_equal(n_got, n_sent);
	if (n_sent == 0) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	for (size_t i = 0; i < n_sent; i++) {
		if (short_info)
			assert_short_volume_equal(&got[i], &sent[i]);
		else
			assert_volume_equal(&got[i], &sent[i]);
	}
}

static void assert_heartbeat_equal(const struct heartbeat *got, const struct heartbeat *sent)
{
	assert_string_equal(got->ip, sent->ip);
	assert_int_equal(got->port, sent->port);
	assert_string_equal(got->public_url, sent->public_url);
	assert_int_equal(got->max_volume_count, sent->max_volume_count);
	assert_int_equal(got->max_file_key, sent->max_file_key);
	assert_string_equal(got->data_center, sent->data_center);
	assert_string_equal(got->rack, sent->rack);
	assert_string_equal(got->id, sent->id);
	assert_int_equal(got->grpc_port, sent->grpc_port);
	assert_int_equal(got->has_no_volumes, sent->has_no_volumes);
	assert_list(got->volumes, got->n_volumes, sent->volumes, sent->n_volumes, false);
	assert_list(got->new_volumes, got->n_new, sent->new_volumes, sent->n_new, true);
	assert_list(got->deleted_volumes, got->n_deleted, sent->deleted_volumes, sent->n_deleted,
		    true);
}

/* Decoding must fail with -EINVAL and leave *out zeroed. */
static void assert_rejected(const uint8_t *buf, size_t len)
{
	struct heartbeat hb;
	static const struct heartbeat zero;

	memset(&hb, 0xa5, sizeof(hb));
	assert_int_equal(heartbeat_decode(buf, len, &hb), -EINVAL);
	assert_memory_equal(&hb, &zero, sizeof(hb));
	heartbeat_release(&hb);
}

static void assert_accepted(const uint8_t *buf, size_t len)
{
	struct heartbeat hb;

	assert_int_equal(heartbeat_decode(buf, len, &hb), 0);
	heartbeat_release(&hb);
}

/* --- field numbers --- */

static void test_tiny_message_bytes(void **state)
{
	static const uint8_t expect[] = {0x0a, 0x01, 0x61, 0x10, 0x01};
	struct heartbeat hb = {0}, back;
	uint8_t *buf;
	size_t len;

	(void)state;
	strcpy(hb.ip, "a");
	hb.port = 1;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(len, sizeof(expect));
	assert_memory_equal(buf, expect, sizeof(expect));
	free(buf);

	assert_int_equal(heartbeat_decode(expect, sizeof(expect), &back), 0);
	assert_string_equal(back.ip, "a");
	assert_int_equal(back.port, 1);
	assert_int_equal(back.n_volumes, 0);
	heartbeat_release(&back);

	/* An all-default heartbeat is the empty message. */
	memset(&hb, 0, sizeof(hb));
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_non_null(buf);
	assert_int_equal(len, 0);
	free(buf);
}

/* Every field kelp writes, byte for byte. */
static void test_encode_matches_hand_bytes(void **state)
{
	uint8_t expect[256], *buf;
	size_t expect_len = join(kelp_message, ARRAY_LEN(kelp_message), expect), len;
	struct heartbeat hb;

	(void)state;
	reference_heartbeat(&hb);
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(len, expect_len);
	assert_memory_equal(buf, expect, expect_len);
	free(buf);
}

/* Every field a Go volume server writes, including ones kelp drops or does not know. */
static void test_decode_hand_bytes(void **state)
{
	uint8_t msg[256];
	size_t len = join(go_message, ARRAY_LEN(go_message), msg);
	struct heartbeat ref, hb;

	(void)state;
	reference_heartbeat(&ref);
	assert_int_equal(heartbeat_decode(msg, len, &hb), 0);
	assert_heartbeat_equal(&hb, &ref);
	heartbeat_release(&hb);
	assert_null(hb.volumes);
	assert_int_equal(hb.n_volumes, 0);

	/* kelp's own spelling decodes to the same. */
	len = join(kelp_message, ARRAY_LEN(kelp_message), msg);
	assert_int_equal(heartbeat_decode(msg, len, &hb), 0);
	assert_heartbeat_equal(&hb, &ref);
	heartbeat_release(&hb);
}

/* --- the max_volume_counts map (field 4) --- */

static uint32_t decode_max_count(const uint8_t *msg, size_t len)
{
	struct heartbeat hb;
	uint32_t n;

	assert_int_equal(heartbeat_decode(msg, len, &hb), 0);
	n = hb.max_volume_count;
	heartbeat_release(&hb);
	return n;
}

static void test_max_volume_counts_map(void **state)
{
	struct heartbeat hb = {0};
	uint8_t *buf;
	size_t len;

	(void)state;
	/* kelp writes one entry, key "" (hdd), only when there is a count to report. */
	hb.max_volume_count = 300;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	{
		static const uint8_t expect[] = {0x22, 0x03, 0x10, 0xac, 0x02};

		assert_int_equal(len, sizeof(expect));
		assert_memory_equal(buf, expect, sizeof(expect));
	}
	free(buf);
	hb.max_volume_count = 0;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(len, 0);
	free(buf);

	{
		/* Go's spelling with the explicit empty key, and the value before the key. */
		static const uint8_t go[] = {0x22, 0x04, 0x0a, 0x00, 0x10, 0x08};
		static const uint8_t swapped[] = {0x22, 0x04, 0x10, 0x08, 0x0a, 0x00};
		/* {"ssd": 5} only: not hdd, so not reported */
		static const uint8_t ssd[] = {0x22, 0x07, 0x0a, 0x03, 's', 's', 'd', 0x10, 0x05};
		/* {"ssd": 5, "HDD": 9}: "hdd" in any case is the hard-drive type */
		static const uint8_t mixed[] = {0x22, 0x07, 0x0a, 0x03, 's', 's', 'd', 0x10, 0x05,
						0x22, 0x07, 0x0a, 0x03, 'H', 'D', 'D', 0x10, 0x09};
		/* {"": 3} then {"": 4}: the last entry for a key wins, as for any map */
		static const uint8_t twice[] = {0x22, 0x02, 0x10, 0x03, 0x22, 0x02, 0x10, 0x04};
		/* An entry with neither key nor value: {"": 0} */
		static const uint8_t empty_entry[] = {0x22, 0x00};
		/* Wrong wire type inside the entry: value as a string */
		static const uint8_t bad_value[] = {0x22, 0x03, 0x12, 0x01, 0x08};
		/* Key not valid UTF-8 */
		static const uint8_t bad_key[] = {0x22, 0x03, 0x0a, 0x01, 0xff};

		assert_int_equal(decode_max_count(go, sizeof(go)), 8);
		assert_int_equal(decode_max_count(swapped, sizeof(swapped)), 8);
		assert_int_equal(decode_max_count(ssd, sizeof(ssd)), 0);
		assert_int_equal(decode_max_count(mixed, sizeof(mixed)), 9);
		assert_int_equal(decode_max_count(twice, sizeof(twice)), 4);
		assert_int_equal(decode_max_count(empty_entry, sizeof(empty_entry)), 0);
		assert_rejected(bad_value, sizeof(bad_value));
		assert_rejected(bad_key, sizeof(bad_key));
	}
}

/* --- round trips --- */

static void fill_volume(struct hb_volume *v, uint32_t i)
{
	memset(v, 0, sizeof(*v));
	v->id = i + 1;
	v->size = (uint64_t)i * 1000003 + (i % 3 == 0 ? 1ull << 40 : 0);
	if (i % 4)
		snprintf(v->collection, sizeof(v->collection), "coll-%u", i % 5);
	v->file_count = i * 17ull;
	v->delete_count = i % 7;
	v->deleted_bytes = i * 4096ull;
	v->read_only = i % 2;
	v->low_space = i % 4 == 1; /* kelp's field 100, only with read_only */
	v->replica_placement = (uint8_t)(i * 37);
	v->version = 2 + i % 2;
	v->ttl = i % 6 ? (uint32_t)(i % 200) << 8 | (i % 6) : 0;
	v->compact_revision = i % 3;
	v->modified_at_second = i % 5 == 0 ? -(int64_t)i : 1700000000 + (int64_t)i;
}

static void test_round_trip(void **state)
{
	struct hb_volume vols[40], news[3], dels[2];
	struct heartbeat hb = {0}, back;
	uint8_t *buf;
	size_t len;

	(void)state;
	for (uint32_t i = 0; i < ARRAY_LEN(vols); i++)
		fill_volume(&vols[i], i);
	for (uint32_t i = 0; i < ARRAY_LEN(news); i++)
		fill_volume(&news[i], 100 + i);
	for (uint32_t i = 0; i < ARRAY_LEN(dels); i++)
		fill_volume(&dels[i], 200 + i);
	/* The longest strings that fit, multibyte UTF-8 included. */
	memset(vols[5].collection, 'x', sizeof(vols[5].collection) - 1);
	strcpy(vols[6].collection, "caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x90\x98");

	strcpy(hb.ip, "192.168.10.20");
	hb.port = 8080;
	snprintf(hb.public_url, sizeof(hb.public_url), "%s", "vol1.example.com:8080");
	hb.max_volume_count = 8;
	hb.max_file_key = UINT64_MAX;
	memset(hb.data_center, 'd', sizeof(hb.data_center) - 1);
	strcpy(hb.rack, "rack1");
	memset(hb.id, 'i', sizeof(hb.id) - 1);
	hb.grpc_port = 18080;
	hb.volumes = vols;
	hb.n_volumes = ARRAY_LEN(vols);
	hb.new_volumes = news;
	hb.n_new = ARRAY_LEN(news);
	hb.deleted_volumes = dels;
	hb.n_deleted = ARRAY_LEN(dels);

	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(heartbeat_decode(buf, len, &back), 0);
	assert_heartbeat_equal(&back, &hb);
	heartbeat_release(&back);
	free(buf);

	/* Deltas only, as a volume server sends right after creating a volume. */
	hb.volumes = NULL;
	hb.n_volumes = 0;
	hb.deleted_volumes = NULL;
	hb.n_deleted = 0;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(heartbeat_decode(buf, len, &back), 0);
	assert_heartbeat_equal(&back, &hb);
	heartbeat_release(&back);
	free(buf);

	/* Graceful stop: nothing but has_no_volumes. */
	memset(&hb, 0, sizeof(hb));
	hb.has_no_volumes = true;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	assert_int_equal(heartbeat_decode(buf, len, &back), 0);
	assert_heartbeat_equal(&back, &hb);
	heartbeat_release(&back);
	free(buf);

	/* The empty message, with or without a buffer. */
	assert_int_equal(heartbeat_decode(NULL, 0, &back), 0);
	assert_int_equal(back.port, 0);
	assert_null(back.volumes);
	heartbeat_release(&back);
	heartbeat_release(NULL);
}

static void test_response(void **state)
{
	static const uint8_t tiny[] = {0x08, 0x01, 0x12, 0x01, 'b', 0x40, 0x01};
	struct heartbeat_response r = {0}, back;
	uint8_t *buf;
	size_t len;

	(void)state;
	r.volume_size_limit = 1;
	strcpy(r.leader, "b");
	r.resend_full_volume_list = true;
	assert_int_equal(heartbeat_response_encode(&r, &buf, &len), 0);
	assert_int_equal(len, sizeof(tiny));
	assert_memory_equal(buf, tiny, sizeof(tiny));
	free(buf);

	r.volume_size_limit = 30000ull << 20;
	memset(r.leader, 'l', sizeof(r.leader) - 1);
	r.resend_full_volume_list = false;
	assert_int_equal(heartbeat_response_encode(&r, &buf, &len), 0);
	assert_int_equal(heartbeat_response_decode(buf, len, &back), 0);
	assert_int_equal(back.volume_size_limit, r.volume_size_limit);
	assert_string_equal(back.leader, r.leader);
	assert_false(back.resend_full_volume_list);
	free(buf);

	{
		/* A Go master's first reply: limit 30000 MiB, preallocate, digest supported,
		 * a metrics address (3, not declared) and a duplicated uuid (6). */
		static const uint8_t go[] = {0x08, 0x80, 0x80, 0x80, 0x98, 0x75, 0x1a, 0x02, 'm',
					     'a',  0x32, 0x01, 'u',  0x38, 0x01, 0x48, 0x01};
		/* leader 256 bytes: one more than fits */
		uint8_t long_leader[3 + 256];

		assert_int_equal(heartbeat_response_decode(go, sizeof(go), &back), 0);
		assert_int_equal(back.volume_size_limit, 30000ull << 20);
		assert_string_equal(back.leader, "");
		assert_false(back.resend_full_volume_list);

		long_leader[0] = 0x12;
		long_leader[1] = 0x80;
		long_leader[2] = 0x02;
		memset(long_leader + 3, 'l', 256);
		assert_int_equal(heartbeat_response_decode(long_leader, sizeof(long_leader), &back),
				 -EINVAL);
		assert_string_equal(back.leader, "");
		long_leader[1] = 0xff;
		long_leader[2] = 0x01; /* 255 bytes fit */
		assert_int_equal(
		    heartbeat_response_decode(long_leader, sizeof(long_leader) - 1, &back), 0);
		assert_int_equal(strlen(back.leader), 255);
		/* truncated */
		for (size_t n = 1; n < sizeof(go); n++) {
			int ret = heartbeat_response_decode(go, n, &back);

			assert_true(ret == 0 || ret == -EINVAL);
		}
		assert_int_equal(heartbeat_response_decode(go, 3, &back), -EINVAL);
	}
	/* An unterminated leader cannot be encoded. */
	memset(r.leader, 'l', sizeof(r.leader));
	assert_int_equal(heartbeat_response_encode(&r, &buf, &len), -EINVAL);
}

/* --- hostile input --- */

/* Cut the hand-written message everywhere: only cuts between top-level fields leave a
 * valid (shorter) message; every other cut must be refused. */
static void test_truncated_everywhere(void **state)
{
	uint8_t msg[256];
	size_t len = join(go_message, ARRAY_LEN(go_message), msg);
	bool boundary[256] = {false};
	size_t at = 0;

	(void)state;
	boundary[0] = true;
	for (size_t i = 0; i < ARRAY_LEN(go_message); i++) {
		at += go_message[i].len;
		boundary[at] = true;
	}
	for (size_t n = 0; n < len; n++) {
		uint8_t *copy = malloc(n ? n : 1); /* exact size, so ASan sees any overread */

		assert_non_null(copy);
		memcpy(copy, msg, n);
		if (boundary[n])
			assert_accepted(copy, n);
		else
			assert_rejected(copy, n);
		free(copy);
	}
}

/* The same for a kelp-encoded message with many volumes: as many cuts succeed as
 * there are top-level fields, everything else is refused. */
static void test_truncated_encoded(void **state)
{
	struct hb_volume vols[12], news[2];
	struct heartbeat hb = {0};
	uint8_t *buf;
	size_t len, accepted = 0;

	(void)state;
	for (uint32_t i = 0; i < ARRAY_LEN(vols); i++)
		fill_volume(&vols[i], i + 1);
	for (uint32_t i = 0; i < ARRAY_LEN(news); i++)
		fill_volume(&news[i], 50 + i);
	strcpy(hb.ip, "10.0.0.1");
	hb.port = 8080;
	hb.max_volume_count = 7;
	strcpy(hb.rack, "r");
	hb.volumes = vols;
	hb.n_volumes = ARRAY_LEN(vols);
	hb.new_volumes = news;
	hb.n_new = ARRAY_LEN(news);
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), 0);
	for (size_t n = 0; n < len; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		struct heartbeat back;
		int ret;

		assert_non_null(copy);
		memcpy(copy, buf, n);
		ret = heartbeat_decode(copy, n, &back);
		assert_true(ret == 0 || ret == -EINVAL);
		if (ret == 0) {
			accepted++;
			assert_true(back.n_volumes <= hb.n_volumes);
		}
		heartbeat_release(&back);
		free(copy);
	}
	/* Fields: ip, port, map, rack, the volumes, the new volumes. Accepted cuts: the
	 * empty prefix and the end of every field but the last (the whole message). */
	assert_int_equal(accepted, 4 + ARRAY_LEN(vols) + ARRAY_LEN(news));
	free(buf);
}

static void test_wrong_wire_types(void **state)
{
	static const struct {
		const char *what;
		uint8_t bytes[8];
		size_t len;
	} cases[] = {
	    {"ip as varint", {0x08, 0x05}, 2},
	    {"port as string", {0x12, 0x01, 0x05}, 3},
	    {"port as fixed32", {0x15, 0x01, 0x00, 0x00, 0x00}, 5},
	    {"max_file_key as fixed64", {0x29, 1, 2, 3, 4, 5, 6, 7}, 8},
	    {"volumes as varint", {0x48, 0x01}, 2},
	    {"has_no_volumes as string", {0x62, 0x01, 0x01}, 3},
	    {"collection as varint in a volume", {0x4a, 0x02, 0x18, 0x01}, 4},
	    {"id as string in a volume", {0x4a, 0x03, 0x0a, 0x01, 0x01}, 5},
	    {"start group, field 1", {0x0b, 0x0c}, 2},
	    {"start group, unknown field 30", {0xf3, 0x01, 0xf4, 0x01}, 4},
	    {"wire type 6", {0x0e, 0x00}, 2},
	    {"wire type 7 on an unknown field", {0xff, 0x01, 0x00}, 3},
	    {"field number 0", {0x00, 0x00}, 2},
	    {"field number 0 as string", {0x02, 0x00}, 2},
	    {"unterminated varint", {0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}, 8},
	    {"port over 32 bits", {0x10, 0x80, 0x80, 0x80, 0x80, 0x10}, 6},
	    {"length past the end", {0x0a, 0x05, 'a'}, 3},
	    {"huge length", {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}, 7},
	};
	static const uint8_t long_varint[] = {0x28, 0x80, 0x80, 0x80, 0x80, 0x80,
					      0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
	static const uint8_t tenth_byte_2[] = {0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
					       0xff, 0xff, 0xff, 0xff, 0x02};
	static const uint8_t max_u64[] = {0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0x01};
	static const uint8_t rp_256[] = {0x4a, 0x03, 0x40, 0x80, 0x02};
	static const uint8_t rp_255[] = {0x4a, 0x03, 0x40, 0xff, 0x01};
	static const uint8_t short_rp_256[] = {0x52, 0x03, 0x40, 0x80, 0x02};
	struct heartbeat hb;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		print_message("%s\n", cases[i].what);
		assert_rejected(cases[i].bytes, cases[i].len);
	}
	assert_rejected(long_varint, sizeof(long_varint));
	assert_rejected(tenth_byte_2, sizeof(tenth_byte_2));
	assert_int_equal(heartbeat_decode(max_u64, sizeof(max_u64), &hb), 0);
	assert_true(hb.max_file_key == UINT64_MAX);
	heartbeat_release(&hb);

	/* replica_placement is a byte in kelp: 256 does not fit, 255 does. */
	assert_rejected(rp_256, sizeof(rp_256));
	assert_rejected(short_rp_256, sizeof(short_rp_256));
	assert_int_equal(heartbeat_decode(rp_255, sizeof(rp_255), &hb), 0);
	assert_int_equal(hb.volumes[0].replica_placement, 255);
	heartbeat_release(&hb);
}

/* A message holding one string field: tag, length (< 16384), bytes. */
static size_t string_field(uint8_t *buf, uint8_t tag, const char *s, size_t n)
{
	size_t at = 0;

	buf[at++] = tag;
	if (n >= 128) {
		buf[at++] = (uint8_t)(n | 0x80);
		buf[at++] = (uint8_t)(n >> 7);
	} else {
		buf[at++] = (uint8_t)n;
	}
	memcpy(buf + at, s, n);
	return at + n;
}

static void test_strings(void **state)
{
	static const struct {
		uint8_t tag;
		size_t cap; /* size of kelp's field */
	} fields[] = {
	    {0x0a, 64},	 /* ip */
	    {0x1a, 256}, /* public_url */
	    {0x32, 64},	 /* data_center */
	    {0x3a, 64},	 /* rack */
	};
	static const char *bad[] = {
	    "10.0.0.1\0junk",	/* NUL: would otherwise read as "10.0.0.1" */
	    "\xff",		/* not UTF-8 */
	    "\xc0\x80",		/* overlong NUL */
	    "\xe0\x80\xaf",	/* overlong '/' */
	    "\xed\xa0\x80",	/* UTF-16 surrogate */
	    "\xf4\x90\x80\x80", /* past U+10FFFF */
	    "\xc3",		/* cut multibyte sequence */
	    "\x80",		/* lone continuation byte */
	};
	static const size_t bad_len[] = {13, 1, 2, 3, 3, 4, 1, 1};
	char text[300];
	uint8_t msg[320], vol[320];
	size_t len;

	(void)state;
	memset(text, 'x', sizeof(text));
	for (size_t i = 0; i < ARRAY_LEN(fields); i++) {
		len = string_field(msg, fields[i].tag, text, fields[i].cap - 1);
		assert_accepted(msg, len);
		len = string_field(msg, fields[i].tag, text, fields[i].cap);
		assert_rejected(msg, len);
		for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
			len = string_field(msg, fields[i].tag, bad[k], bad_len[k]);
			assert_rejected(msg, len);
		}
	}
	/* id (field 22: a two-byte tag), 128 bytes in kelp */
	len = string_field(msg + 1, 0x01, text, 127);
	msg[0] = 0xb2;
	assert_accepted(msg, len + 1);
	len = string_field(msg + 1, 0x01, text, 128);
	assert_rejected(msg, len + 1);

	/* collection inside a volume and inside a short volume: 128 bytes in kelp */
	for (int tag = 0x4a; tag <= 0x5a; tag += 8) {
		size_t vlen = string_field(vol, 0x1a, text, 127);

		len = string_field(msg, (uint8_t)tag, (const char *)vol, vlen);
		assert_accepted(msg, len);
		vlen = string_field(vol, 0x1a, text, 128);
		len = string_field(msg, (uint8_t)tag, (const char *)vol, vlen);
		assert_rejected(msg, len);
		vlen = string_field(vol, 0x1a, "a\0b", 3);
		len = string_field(msg, (uint8_t)tag, (const char *)vol, vlen);
		assert_rejected(msg, len);
	}
	/* Strings kelp does not keep are still checked (Go would refuse them too). */
	len = string_field(vol, 0x7a, "\xff", 1); /* disk_type */
	len = string_field(msg, 0x4a, (const char *)vol, len);
	assert_rejected(msg, len);
	/* ...but unknown fields are opaque bytes. */
	{
		static const uint8_t unknown[] = {0x82, 0x01, 0x02, 0xff, 0x00}; /* field 16 */

		assert_accepted(unknown, sizeof(unknown));
	}
	/* Valid multibyte text is fine. */
	len = string_field(msg, 0x3a, "r\xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x98", 10);
	assert_accepted(msg, len);
}

static void test_encode_rejects(void **state)
{
	struct hb_volume v = {0};
	struct heartbeat hb = {0};
	uint8_t *buf = NULL;
	size_t len;

	(void)state;
	memset(hb.ip, 'a', sizeof(hb.ip)); /* not terminated */
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	memset(&hb, 0, sizeof(hb));
	strcpy(hb.rack, "\xff");
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	memset(&hb, 0, sizeof(hb));
	hb.n_volumes = 1; /* and no array */
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	hb.n_volumes = 0;
	hb.n_deleted = 2;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	hb.n_deleted = 0;
	memset(v.collection, 'c', sizeof(v.collection));
	hb.new_volumes = &v;
	hb.n_new = 1;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	/* Over the cap: refused before the array is read. */
	memset(&v, 0, sizeof(v));
	hb.n_new = HEARTBEAT_MAX_VOLUMES + 1;
	assert_int_equal(heartbeat_encode(&hb, &buf, &len), -EINVAL);
	assert_null(buf);
}

static void test_list_cap(void **state)
{
	/* n empty volumes {}: 2 bytes each */
	size_t n = HEARTBEAT_MAX_VOLUMES + 1;
	uint8_t *msg = malloc(2 * n);
	struct heartbeat hb;

	(void)state;
	assert_non_null(msg);
	for (size_t i = 0; i < n; i++) {
		msg[2 * i] = 0x4a;
		msg[2 * i + 1] = 0x00;
	}
	assert_int_equal(heartbeat_decode(msg, 2 * (n - 1), &hb), 0);
	assert_int_equal(hb.n_volumes, HEARTBEAT_MAX_VOLUMES);
	assert_int_equal(hb.volumes[HEARTBEAT_MAX_VOLUMES - 1].id, 0);
	heartbeat_release(&hb);
	assert_rejected(msg, 2 * n);

	/* The same for deleted volumes, and for unknown fields (field 16, ec_shards). */
	for (size_t i = 0; i < n; i++)
		msg[2 * i] = 0x5a;
	assert_rejected(msg, 2 * n);
	free(msg);
	msg = malloc(3 * n);
	assert_non_null(msg);
	for (size_t i = 0; i < n; i++) {
		msg[3 * i] = 0x80; /* field 16 varint is tag 0x80 0x01, then value 0 */
		msg[3 * i + 1] = 0x01;
		msg[3 * i + 2] = 0x00;
	}
	assert_accepted(msg, 3 * (n - 1));
	assert_rejected(msg, 3 * n);
	free(msg);

	/* Unknown fields count over the whole message, not per nested message: volumes
	 * {17: 0, 17: 0}, two unknown fields each. */
	n = HEARTBEAT_MAX_VOLUMES / 2 + 1;
	msg = malloc(8 * n);
	assert_non_null(msg);
	for (size_t i = 0; i < n; i++)
		memcpy(msg + 8 * i, "\x4a\x06\x88\x01\x00\x88\x01\x00", 8);
	assert_accepted(msg, 8 * (n - 1));
	assert_rejected(msg, 8 * n);
	free(msg);

	/* A message over HEARTBEAT_MAX_LEN is refused before a byte is read (the
	 * 1-byte buffer would make ASan report any read). */
	assert_rejected((const uint8_t *)"", (size_t)HEARTBEAT_MAX_LEN + 1);
}

static uint32_t rng_next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void check_decoded_sane(const struct heartbeat *hb)
{
	assert_true(strnlen(hb->ip, sizeof(hb->ip)) < sizeof(hb->ip));
	assert_true(strnlen(hb->public_url, sizeof(hb->public_url)) < sizeof(hb->public_url));
	assert_true(strnlen(hb->id, sizeof(hb->id)) < sizeof(hb->id));
	assert_true(hb->n_volumes <= HEARTBEAT_MAX_VOLUMES);
	assert_true((hb->n_volumes == 0) == (hb->volumes == NULL));
	assert_true((hb->n_new == 0) == (hb->new_volumes == NULL));
	assert_true((hb->n_deleted == 0) == (hb->deleted_volumes == NULL));
	for (size_t i = 0; i < hb->n_volumes; i++)
		assert_true(strnlen(hb->volumes[i].collection, 128) < 128);
}

/* Random bytes and random bit flips of valid messages: 0 or -EINVAL, never a crash. */
static void test_garbage(void **state)
{
	uint8_t valid[256], buf[256];
	size_t valid_len = join(go_message, ARRAY_LEN(go_message), valid);
	uint32_t seed = 0x9e3779b9;
	size_t accepted = 0;

	(void)state;
	for (int round = 0; round < 20000; round++) {
		struct heartbeat hb;
		struct heartbeat_response r;
		size_t len;
		int ret;

		if (round % 2) {
			len = rng_next(&seed) % sizeof(buf);
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)rng_next(&seed);
		} else {
			len = valid_len;
			memcpy(buf, valid, len);
			for (int k = 1 + (int)(rng_next(&seed) % 4); k > 0; k--)
				buf[rng_next(&seed) % len] ^=
				    (uint8_t)(1u << (rng_next(&seed) % 8));
		}
		ret = heartbeat_decode(buf, len, &hb);
		assert_true(ret == 0 || ret == -EINVAL);
		if (ret == 0) {
			accepted++;
			check_decoded_sane(&hb);
		}
		heartbeat_release(&hb);
		ret = heartbeat_response_decode(buf, len, &r);
		assert_true(ret == 0 || ret == -EINVAL);
	}
	/* Not vacuous: some flips leave a valid message, most do not. */
	assert_true(accepted > 100 && accepted < 19000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tiny_message_bytes),
	    cmocka_unit_test(test_encode_matches_hand_bytes),
	    cmocka_unit_test(test_decode_hand_bytes),
	    cmocka_unit_test(test_max_volume_counts_map),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_response),
	    cmocka_unit_test(test_truncated_everywhere),
	    cmocka_unit_test(test_truncated_encoded),
	    cmocka_unit_test(test_wrong_wire_types),
	    cmocka_unit_test(test_strings),
	    cmocka_unit_test(test_encode_rejects),
	    cmocka_unit_test(test_list_cap),
	    cmocka_unit_test(test_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
