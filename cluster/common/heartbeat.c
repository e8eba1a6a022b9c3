/*
 * heartbeat: conversion between kelp's heartbeat structs and the protobuf-c types
 * generated from cluster/proto/master.proto.
 *
 * Decoding runs in two passes. wire_check() first walks the raw bytes with a
 * bounds-checked reader, driven by the generated descriptors: it rejects malformed
 * framing, wrong wire types, uint32 values that do not fit, strings that are not
 * NUL-free UTF-8 and lists over the cap. Only then does protobuf-c unpack, which is
 * why the check exists at all:
 *   - protobuf-c copies strings into NUL-terminated buffers, so "10.0.0.1\0junk"
 *     would silently read as "10.0.0.1"; only the wire shows the real length;
 *   - protobuf-c allocates one struct per repeated element before kelp sees the
 *     count, and an empty VolumeInformationMessage costs 2 bytes on the wire but over
 *     a hundred in memory, so the list cap must be enforced before unpacking.
 * A custom allocator tells an out-of-memory failure of the unpack apart from bad
 * input, which protobuf-c reports the same way.
 */
#include "cluster/common/heartbeat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/proto/master.pb-c.h"

/* Protobuf wire types. */
enum {
	WIRE_VARINT = 0,
	WIRE_FIXED64 = 1,
	WIRE_LENGTH_DELIMITED = 2,
	WIRE_FIXED32 = 5,
};

/* master.proto nests one level (entries, volumes); the guards leave ample room. */
#define WIRE_MAX_DEPTH	8
#define WIRE_MAX_FIELDS 32

struct wire_reader {
	const uint8_t *p;
	const uint8_t *end;
};

static bool read_varint(struct wire_reader *r, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (r->p == r->end)
			return false;
		b = *r->p++;
		/* The tenth byte holds bit 63 only, as protobuf-go insists. */
		if (shift == 63 && b > 1)
			return false;
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

static bool read_length_delimited(struct wire_reader *r, const uint8_t **data, size_t *len)
{
	uint64_t n;

	if (!read_varint(r, &n) || n > (uint64_t)(r->end - r->p))
		return false;
	*data = r->p;
	*len = (size_t)n;
	r->p += n;
	return true;
}

/* Skips one value of the given wire type; groups (3, 4) and types 6, 7 are refused. */
static bool skip_value(struct wire_reader *r, unsigned wire)
{
	const uint8_t *data;
	uint64_t v;
	size_t n;

	switch (wire) {
	case WIRE_VARINT:
		return read_varint(r, &v);
	case WIRE_FIXED64:
	case WIRE_FIXED32:
		n = wire == WIRE_FIXED64 ? 8 : 4;
		if ((size_t)(r->end - r->p) < n)
			return false;
		r->p += n;
		return true;
	case WIRE_LENGTH_DELIMITED:
		return read_length_delimited(r, &data, &n);
	default:
		return false;
	}
}

static unsigned wire_type_of(ProtobufCType type)
{
	switch (type) {
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return WIRE_FIXED32;
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return WIRE_FIXED64;
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
	case PROTOBUF_C_TYPE_MESSAGE:
		return WIRE_LENGTH_DELIMITED;
	default:
		return WIRE_VARINT;
	}
}

/* Valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), no NUL. */
static bool text_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t n;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/*
 * The first decoding pass; see the top comment. 0 or -EINVAL. *unknown counts the
 * unknown fields of the whole message, nested ones included: protobuf-c keeps a copy
 * of each (about 60 bytes for a 3-byte field), so they need a cap of their own.
 */
static int wire_check(const uint8_t *buf, size_t len, const ProtobufCMessageDescriptor *desc,
		      unsigned depth, uint32_t *unknown)
{
	struct wire_reader r = {buf, buf + len};
	uint32_t counts[WIRE_MAX_FIELDS] = {0};

	if (depth > WIRE_MAX_DEPTH || desc->n_fields > WIRE_MAX_FIELDS)
		return -EINVAL;
	while (r.p < r.end) {
		const ProtobufCFieldDescriptor *field;
		const uint8_t *data;
		uint64_t tag, v;
		unsigned wire;
		size_t n;

		if (!read_varint(&r, &tag) || tag >> 3 == 0 || tag >> 3 > 0x1fffffff)
			return -EINVAL;
		wire = (unsigned)(tag & 7);
		field = protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3));
		if (!field) {
			if (++*unknown > HEARTBEAT_MAX_VOLUMES || !skip_value(&r, wire))
				return -EINVAL;
			continue;
		}
		if (field->label == PROTOBUF_C_LABEL_REPEATED &&
		    ++counts[field - desc->fields] > HEARTBEAT_MAX_VOLUMES)
			return -EINVAL;
		if (wire != wire_type_of(field->type)) {
			/* A packed repeated scalar; protobuf-c checks its contents. */
			if (field->label == PROTOBUF_C_LABEL_REPEATED &&
			    wire == WIRE_LENGTH_DELIMITED && skip_value(&r, wire))
				continue;
			return -EINVAL;
		}
		switch (field->type) {
		case PROTOBUF_C_TYPE_STRING:
			if (!read_length_delimited(&r, &data, &n) || !text_valid(data, n))
				return -EINVAL;
			break;
		case PROTOBUF_C_TYPE_MESSAGE:
			if (!read_length_delimited(&r, &data, &n) ||
			    wire_check(data, n, field->descriptor, depth + 1, unknown) != 0)
				return -EINVAL;
			break;
		case PROTOBUF_C_TYPE_UINT32:
			if (!read_varint(&r, &v) || v > UINT32_MAX)
				return -EINVAL;
			break;
		default:
			if (!skip_value(&r, wire))
				return -EINVAL;
			break;
		}
	}
	return 0;
}

/* protobuf-c's allocator hooks, remembering whether malloc ever failed. */
static void *pb_alloc(void *data, size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		*(bool *)data = true;
	return p;
}

static void pb_free(void *data, void *p)
{
	(void)data;
	free(p);
}

/* Both passes; on success *msg is unpacked with *allocator and must be freed with it. */
static int unpack_checked(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
			  ProtobufCAllocator *allocator, bool *out_of_memory,
			  ProtobufCMessage **msg)
{
	static const uint8_t empty[1];
	uint32_t unknown = 0;
	int ret;

	if (len > HEARTBEAT_MAX_LEN || (!buf && len > 0))
		return -EINVAL;
	if (!buf)
		buf = empty;
	ret = wire_check(buf, len, desc, 0, &unknown);
	if (ret != 0)
		return ret;
	*out_of_memory = false;
	allocator->alloc = pb_alloc;
	allocator->free = pb_free;
	allocator->allocator_data = out_of_memory;
	*msg = protobuf_c_message_unpack(desc, allocator, len, buf);
	if (!*msg)
		return *out_of_memory ? -ENOMEM : -EINVAL;
	return 0;
}

/* Copies a decoded string (already known to be NUL-free UTF-8) that must fit dst. */
static int copy_text(char *dst, size_t cap, const char *src)
{
	size_t n;

	if (!src)
		src = "";
	n = strlen(src);
	if (n >= cap)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/* A string about to be encoded: NUL-terminated within its field and valid UTF-8. */
static bool field_text_valid(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	return n < cap && text_valid((const uint8_t *)s, n);
}

static int replica_placement_from_wire(uint32_t v, uint8_t *out)
{
	if (v > UINT8_MAX)
		return -EINVAL;
	*out = (uint8_t)v;
	return 0;
}

static int volume_from_wire(const MasterPb__VolumeInformationMessage *m, struct hb_volume *v)
{
	v->id = m->id;
	v->size = m->size;
	v->file_count = m->file_count;
	v->delete_count = m->delete_count;
	v->deleted_bytes = m->deleted_byte_count;
	v->read_only = m->read_only;
	v->low_space = m->low_disk_space;
	v->version = m->version;
	v->ttl = m->ttl;
	v->compact_revision = m->compact_revision;
	v->modified_at_second = m->modified_at_second;
	if (replica_placement_from_wire(m->replica_placement, &v->replica_placement) != 0)
		return -EINVAL;
	return copy_text(v->collection, sizeof(v->collection), m->collection);
}

static int short_volume_from_wire(const MasterPb__VolumeShortInformationMessage *m,
				  struct hb_volume *v)
{
	v->id = m->id;
	v->version = m->version;
	v->ttl = m->ttl;
	if (replica_placement_from_wire(m->replica_placement, &v->replica_placement) != 0)
		return -EINVAL;
	return copy_text(v->collection, sizeof(v->collection), m->collection);
}

/* Converts one list of wire messages with convert; *out stays NULL for an empty list. */
#define LIST_FROM_WIRE(name, msg_type, convert)                                                    \
	static int name(msg_type *const *msgs, size_t n, struct hb_volume **out, size_t *n_out)    \
	{                                                                                          \
		struct hb_volume *v;                                                               \
                                                                                                   \
		if (n == 0)                                                                        \
			return 0;                                                                  \
		v = calloc(n, sizeof(*v));                                                         \
		if (!v)                                                                            \
			return -ENOMEM;                                                            \
		*out = v;                                                                          \
		*n_out = n;                                                                        \
		for (size_t i = 0; i < n; i++) {                                                   \
			int ret = convert(msgs[i], &v[i]);                                         \
                                                                                                   \
			if (ret != 0)                                                              \
				return ret;                                                        \
		}                                                                                  \
		return 0;                                                                          \
	}

LIST_FROM_WIRE(volumes_from_wire, MasterPb__VolumeInformationMessage, volume_from_wire)
LIST_FROM_WIRE(short_volumes_from_wire, MasterPb__VolumeShortInformationMessage,
	       short_volume_from_wire)

/* Go's types.ToDiskType maps "" and "hdd" (any case) to the hard-drive type. */
static bool is_hdd_key(const char *key)
{
	return !key || key[0] == '\0' || strcasecmp(key, "hdd") == 0;
}

static int heartbeat_from_wire(const MasterPb__Heartbeat *m, struct heartbeat *out)
{
	int ret;

	out->port = m->port;
	out->max_file_key = m->max_file_key;
	out->grpc_port = m->grpc_port;
	out->has_no_volumes = m->has_no_volumes;
	for (size_t i = 0; i < m->n_max_volume_counts; i++)
		if (is_hdd_key(m->max_volume_counts[i]->key))
			out->max_volume_count = m->max_volume_counts[i]->value;
	/* Disk sizes of every type add up (saturating: the values are untrusted). */
	for (size_t i = 0; i < m->n_disk_total_bytes; i++) {
		uint64_t v = m->disk_total_bytes[i]->value;

		out->disk_total =
		    v > UINT64_MAX - out->disk_total ? UINT64_MAX : out->disk_total + v;
	}
	for (size_t i = 0; i < m->n_disk_free_bytes; i++) {
		uint64_t v = m->disk_free_bytes[i]->value;

		out->disk_free = v > UINT64_MAX - out->disk_free ? UINT64_MAX : out->disk_free + v;
	}

	if (copy_text(out->ip, sizeof(out->ip), m->ip) != 0 ||
	    copy_text(out->public_url, sizeof(out->public_url), m->public_url) != 0 ||
	    copy_text(out->data_center, sizeof(out->data_center), m->data_center) != 0 ||
	    copy_text(out->rack, sizeof(out->rack), m->rack) != 0 ||
	    copy_text(out->id, sizeof(out->id), m->id) != 0)
		return -EINVAL;

	ret = volumes_from_wire(m->volumes, m->n_volumes, &out->volumes, &out->n_volumes);
	if (ret == 0)
		ret = short_volumes_from_wire(m->new_volumes, m->n_new_volumes, &out->new_volumes,
					      &out->n_new);
	if (ret == 0)
		ret = short_volumes_from_wire(m->deleted_volumes, m->n_deleted_volumes,
					      &out->deleted_volumes, &out->n_deleted);
	return ret;
}

int heartbeat_decode(const uint8_t *buf, size_t len, struct heartbeat *out)
{
	ProtobufCAllocator allocator;
	ProtobufCMessage *msg;
	bool out_of_memory;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = unpack_checked(&master_pb__heartbeat__descriptor, buf, len, &allocator,
			     &out_of_memory, &msg);
	if (ret != 0)
		return ret;
	ret = heartbeat_from_wire((const MasterPb__Heartbeat *)msg, out);
	protobuf_c_message_free_unpacked(msg, &allocator);
	if (ret != 0)
		heartbeat_release(out);
	return ret;
}

void heartbeat_release(struct heartbeat *hb)
{
	if (!hb)
		return;
	free(hb->volumes);
	free(hb->new_volumes);
	free(hb->deleted_volumes);
	memset(hb, 0, sizeof(*hb));
}

/* Packs msg into a fresh buffer of exactly its size (at least 1 byte allocated). */
static int pack_message(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
	size_t size = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf;

	if (size > HEARTBEAT_MAX_LEN)
		return -EINVAL;
	buf = malloc(size ? size : 1);
	if (!buf)
		return -ENOMEM;
	*len = protobuf_c_message_pack(msg, buf);
	*out = buf;
	return 0;
}

static bool volume_list_valid(const struct hb_volume *v, size_t n)
{
	if (n > HEARTBEAT_MAX_VOLUMES || (n > 0 && !v))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!field_text_valid(v[i].collection, sizeof(v[i].collection)))
			return false;
	return true;
}

static bool heartbeat_valid(const struct heartbeat *hb)
{
	return field_text_valid(hb->ip, sizeof(hb->ip)) &&
	       field_text_valid(hb->public_url, sizeof(hb->public_url)) &&
	       field_text_valid(hb->data_center, sizeof(hb->data_center)) &&
	       field_text_valid(hb->rack, sizeof(hb->rack)) &&
	       field_text_valid(hb->id, sizeof(hb->id)) &&
	       volume_list_valid(hb->volumes, hb->n_volumes) &&
	       volume_list_valid(hb->new_volumes, hb->n_new) &&
	       volume_list_valid(hb->deleted_volumes, hb->n_deleted);
}

/*
 * The wire-side arrays for one encode. protobuf-c declares string fields char * but
 * only reads them when packing, so they point straight into the caller's structs.
 */
struct wire_lists {
	MasterPb__VolumeInformationMessage *full;
	MasterPb__VolumeInformationMessage **full_ptrs;
	MasterPb__VolumeShortInformationMessage *shorts; /* new, then deleted */
	MasterPb__VolumeShortInformationMessage **short_ptrs;
};

static void wire_lists_release(struct wire_lists *w)
{
	free(w->full);
	free(w->full_ptrs);
	free(w->shorts);
	free(w->short_ptrs);
}

static void volume_to_wire(const struct hb_volume *v, MasterPb__VolumeInformationMessage *m)
{
	master_pb__volume_information_message__init(m);
	m->id = v->id;
	m->size = v->size;
	m->collection = (char *)v->collection;
	m->file_count = v->file_count;
	m->delete_count = v->delete_count;
	m->deleted_byte_count = v->deleted_bytes;
	m->read_only = v->read_only;
	m->low_disk_space = v->low_space;
	m->replica_placement = v->replica_placement;
	m->version = v->version;
	m->ttl = v->ttl;
	m->compact_revision = v->compact_revision;
	m->modified_at_second = v->modified_at_second;
}

static void short_volume_to_wire(const struct hb_volume *v,
				 MasterPb__VolumeShortInformationMessage *m)
{
	master_pb__volume_short_information_message__init(m);
	m->id = v->id;
	m->collection = (char *)v->collection;
	m->replica_placement = v->replica_placement;
	m->version = v->version;
	m->ttl = v->ttl;
}

static int lists_to_wire(const struct heartbeat *hb, struct wire_lists *w, MasterPb__Heartbeat *m)
{
	size_t n_short = hb->n_new + hb->n_deleted;

	/* calloc(0) may return NULL; one spare element keeps NULL meaning ENOMEM only. */
	w->full = calloc(hb->n_volumes + 1, sizeof(*w->full));
	w->full_ptrs = calloc(hb->n_volumes + 1, sizeof(*w->full_ptrs));
	w->shorts = calloc(n_short + 1, sizeof(*w->shorts));
	w->short_ptrs = calloc(n_short + 1, sizeof(*w->short_ptrs));
	if (!w->full || !w->full_ptrs || !w->shorts || !w->short_ptrs)
		return -ENOMEM;

	for (size_t i = 0; i < hb->n_volumes; i++) {
		volume_to_wire(&hb->volumes[i], &w->full[i]);
		w->full_ptrs[i] = &w->full[i];
	}
	for (size_t i = 0; i < n_short; i++) {
		const struct hb_volume *v =
		    i < hb->n_new ? &hb->new_volumes[i] : &hb->deleted_volumes[i - hb->n_new];

		short_volume_to_wire(v, &w->shorts[i]);
		w->short_ptrs[i] = &w->shorts[i];
	}
	m->n_volumes = hb->n_volumes;
	m->volumes = w->full_ptrs;
	m->n_new_volumes = hb->n_new;
	m->new_volumes = w->short_ptrs;
	m->n_deleted_volumes = hb->n_deleted;
	m->deleted_volumes = w->short_ptrs + hb->n_new;
	return 0;
}

int heartbeat_encode(const struct heartbeat *hb, uint8_t **out, size_t *len)
{
	MasterPb__Heartbeat m;
	MasterPb__Heartbeat__MaxVolumeCountsEntry hdd;
	MasterPb__Heartbeat__MaxVolumeCountsEntry *entries[1] = {&hdd};
	MasterPb__Heartbeat__DiskTotalBytesEntry total;
	MasterPb__Heartbeat__DiskTotalBytesEntry *totals[1] = {&total};
	MasterPb__Heartbeat__DiskFreeBytesEntry free_bytes;
	MasterPb__Heartbeat__DiskFreeBytesEntry *frees[1] = {&free_bytes};
	struct wire_lists w = {0};
	int ret;

	if (!heartbeat_valid(hb))
		return -EINVAL;
	master_pb__heartbeat__init(&m);
	m.ip = (char *)hb->ip;
	m.port = hb->port;
	m.public_url = (char *)hb->public_url;
	if (hb->max_volume_count > 0) {
		master_pb__heartbeat__max_volume_counts_entry__init(&hdd);
		hdd.key = (char *)"";
		hdd.value = hb->max_volume_count;
		m.n_max_volume_counts = 1;
		m.max_volume_counts = entries;
	}
	if (hb->disk_total > 0) {
		master_pb__heartbeat__disk_total_bytes_entry__init(&total);
		total.key = (char *)"";
		total.value = hb->disk_total;
		m.n_disk_total_bytes = 1;
		m.disk_total_bytes = totals;
		master_pb__heartbeat__disk_free_bytes_entry__init(&free_bytes);
		free_bytes.key = (char *)"";
		free_bytes.value = hb->disk_free;
		m.n_disk_free_bytes = 1;
		m.disk_free_bytes = frees;
	}
	m.max_file_key = hb->max_file_key;
	m.data_center = (char *)hb->data_center;
	m.rack = (char *)hb->rack;
	m.has_no_volumes = hb->has_no_volumes;
	m.grpc_port = hb->grpc_port;
	m.id = (char *)hb->id;

	ret = lists_to_wire(hb, &w, &m);
	if (ret == 0)
		ret = pack_message(&m.base, out, len);
	wire_lists_release(&w);
	return ret;
}

int heartbeat_response_encode(const struct heartbeat_response *r, uint8_t **out, size_t *len)
{
	MasterPb__HeartbeatResponse m;

	if (!field_text_valid(r->leader, sizeof(r->leader)))
		return -EINVAL;
	master_pb__heartbeat_response__init(&m);
	m.volume_size_limit = r->volume_size_limit;
	m.leader = (char *)r->leader;
	m.resend_full_volume_list = r->resend_full_volume_list;
	return pack_message(&m.base, out, len);
}

int heartbeat_response_decode(const uint8_t *buf, size_t len, struct heartbeat_response *out)
{
	const MasterPb__HeartbeatResponse *m;
	ProtobufCAllocator allocator;
	ProtobufCMessage *msg;
	bool out_of_memory;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = unpack_checked(&master_pb__heartbeat_response__descriptor, buf, len, &allocator,
			     &out_of_memory, &msg);
	if (ret != 0)
		return ret;
	m = (const MasterPb__HeartbeatResponse *)msg;
	out->volume_size_limit = m->volume_size_limit;
	out->resend_full_volume_list = m->resend_full_volume_list;
	ret = copy_text(out->leader, sizeof(out->leader), m->leader);
	protobuf_c_message_free_unpacked(msg, &allocator);
	if (ret != 0)
		memset(out, 0, sizeof(*out));
	return ret;
}
