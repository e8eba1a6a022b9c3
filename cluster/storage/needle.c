#include "cluster/storage/needle.h"

#include <errno.h>
#include <isa-l/crc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	/* ISA-L's crc32_iscsi does no pre/post inversion. */
	return ~crc32_iscsi((unsigned char *)buf, (int)len, ~crc);
}

uint32_t crc32c_masked(uint32_t crc)
{
	return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

bool needle_checksum_matches(uint32_t stored, uint32_t crc)
{
	return stored == crc || stored == crc32c_masked(crc);
}

uint32_t needle_compute_size(struct needle *n)
{
	uint32_t size;

	/*
	 * Empty data with no metadata has no body (Size 0, like a tombstone). With
	 * metadata the body is kept (DataSize 0), which readers accept and which tells
	 * an empty blob from a deletion when an index is rebuilt from .dat.
	 */
	if (n->data_size == 0 && !(n->flags & NEEDLE_FLAG_HAS_LAST_MOD) && n->name_len == 0 &&
	    n->mime_len == 0 && n->ttl.count == 0 && n->pairs_len == 0) {
		n->size = 0;
		return 0;
	}
	n->flags &= NEEDLE_FLAG_GZIP | NEEDLE_FLAG_CHUNKMANIFEST | NEEDLE_FLAG_HAS_LAST_MOD;
	size = 4 + n->data_size + 1;
	if (n->name_len > 0) {
		n->flags |= NEEDLE_FLAG_HAS_NAME;
		size += 1 + n->name_len;
	}
	if (n->mime_len > 0) {
		n->flags |= NEEDLE_FLAG_HAS_MIME;
		size += 1 + n->mime_len;
	}
	if (n->flags & NEEDLE_FLAG_HAS_LAST_MOD)
		size += 5;
	if (n->ttl.count > 0) {
		n->flags |= NEEDLE_FLAG_HAS_TTL;
		size += 2;
	}
	if (n->pairs_len > 0) {
		n->flags |= NEEDLE_FLAG_HAS_PAIRS;
		size += 2 + n->pairs_len;
	}
	n->size = size;
	return size;
}

uint64_t needle_disk_size(uint32_t size, int version)
{
	uint64_t len = NEEDLE_HEADER_SIZE + (uint64_t)size + NEEDLE_CHECKSUM_SIZE;

	if (version == NEEDLE_VERSION_3)
		len += 8;
	return len + (NEEDLE_PADDING_SIZE - len % NEEDLE_PADDING_SIZE);
}

size_t needle_meta_size(const struct needle *n)
{
	if (n->size == 0)
		return 0;
	return n->size - 4 - n->data_size;
}

size_t needle_encode_head(const struct needle *n, uint8_t *buf)
{
	put_be32(buf, n->cookie);
	put_be64(buf + 4, n->id);
	put_be32(buf + 12, n->size);
	if (n->size == 0)
		return NEEDLE_HEADER_SIZE;
	put_be32(buf + 16, n->data_size);
	return NEEDLE_HEADER_SIZE + 4;
}

size_t needle_encode_meta(const struct needle *n, uint8_t *buf)
{
	size_t p = 0;

	if (n->size == 0)
		return 0;
	buf[p++] = n->flags;
	if (n->flags & NEEDLE_FLAG_HAS_NAME) {
		buf[p++] = n->name_len;
		memcpy(buf + p, n->name, n->name_len);
		p += n->name_len;
	}
	if (n->flags & NEEDLE_FLAG_HAS_MIME) {
		buf[p++] = n->mime_len;
		memcpy(buf + p, n->mime, n->mime_len);
		p += n->mime_len;
	}
	if (n->flags & NEEDLE_FLAG_HAS_LAST_MOD) {
		for (int i = 0; i < 5; i++)
			buf[p++] = (uint8_t)(n->last_modified >> (32 - 8 * i));
	}
	if (n->flags & NEEDLE_FLAG_HAS_TTL) {
		buf[p++] = n->ttl.count;
		buf[p++] = n->ttl.unit;
	}
	if (n->flags & NEEDLE_FLAG_HAS_PAIRS) {
		put_be16(buf + p, n->pairs_len);
		p += 2;
		memcpy(buf + p, n->pairs, n->pairs_len);
		p += n->pairs_len;
	}
	return p;
}

size_t needle_encode_tail(const struct needle *n, int version, uint8_t *buf)
{
	uint64_t total = needle_disk_size(n->size, version);
	size_t tail = (size_t)(total - NEEDLE_HEADER_SIZE - n->size);
	size_t p = 0;

	put_be32(buf, n->checksum);
	p = 4;
	if (version == NEEDLE_VERSION_3) {
		put_be64(buf + 4, n->append_at_ns);
		p = 12;
	}
	memset(buf + p, 0, tail - p);
	return tail;
}

size_t needle_encode(struct needle *n, int version, uint8_t *out, size_t cap)
{
	size_t p;

	if (n->data_size > NEEDLE_MAX_DATA_SIZE)
		return 0;
	needle_compute_size(n);
	if (needle_disk_size(n->size, version) > cap)
		return 0;
	n->checksum = crc32c(0, n->data, n->data_size);
	if (version == NEEDLE_VERSION_1) {
		/* Version 1: the body is the raw data. */
		n->size = n->data_size;
		put_be32(out, n->cookie);
		put_be64(out + 4, n->id);
		put_be32(out + 12, n->size);
		memcpy(out + NEEDLE_HEADER_SIZE, n->data, n->data_size);
		p = NEEDLE_HEADER_SIZE + n->data_size;
		return p + needle_encode_tail(n, version, out + p);
	}
	p = needle_encode_head(n, out);
	if (n->size > 0) {
		memcpy(out + p, n->data, n->data_size);
		p += n->data_size;
		p += needle_encode_meta(n, out + p);
	}
	return p + needle_encode_tail(n, version, out + p);
}

void needle_parse_header(const uint8_t *buf, uint32_t *cookie, uint64_t *id, uint32_t *size)
{
	*cookie = get_be32(buf);
	*id = get_be64(buf + 4);
	*size = get_be32(buf + 12);
}

int needle_decode_meta(const uint8_t *meta, size_t meta_len, struct needle *out)
{
	size_t p = 0;

	if (meta_len < 1)
		return -EINVAL;
	out->flags = meta[p++];
	out->name = NULL;
	out->name_len = 0;
	out->mime = NULL;
	out->mime_len = 0;
	out->last_modified = 0;
	out->ttl.count = out->ttl.unit = 0;
	out->pairs = NULL;
	out->pairs_len = 0;
	if (out->flags & NEEDLE_FLAG_HAS_NAME) {
		if (p + 1 > meta_len || p + 1 + meta[p] > meta_len)
			return -EINVAL;
		out->name_len = meta[p];
		out->name = (const char *)meta + p + 1;
		p += 1 + out->name_len;
	}
	if (out->flags & NEEDLE_FLAG_HAS_MIME) {
		if (p + 1 > meta_len || p + 1 + meta[p] > meta_len)
			return -EINVAL;
		out->mime_len = meta[p];
		out->mime = (const char *)meta + p + 1;
		p += 1 + out->mime_len;
	}
	if (out->flags & NEEDLE_FLAG_HAS_LAST_MOD) {
		if (p + 5 > meta_len)
			return -EINVAL;
		for (int i = 0; i < 5; i++)
			out->last_modified = (out->last_modified << 8) | meta[p + i];
		p += 5;
	}
	if (out->flags & NEEDLE_FLAG_HAS_TTL) {
		if (p + 2 > meta_len)
			return -EINVAL;
		out->ttl.count = meta[p];
		out->ttl.unit = meta[p + 1];
		p += 2;
	}
	if (out->flags & NEEDLE_FLAG_HAS_PAIRS) {
		if (p + 2 > meta_len)
			return -EINVAL;
		out->pairs_len = get_be16(meta + p);
		p += 2;
		if (p + out->pairs_len > meta_len)
			return -EINVAL;
		out->pairs = meta + p;
		p += out->pairs_len;
	}
	return p == meta_len ? 0 : -EINVAL;
}

int needle_decode(const uint8_t *buf, size_t len, int version, bool verify_crc, struct needle *out)
{
	uint64_t disk;
	size_t tail;

	if (version < NEEDLE_VERSION_1 || version > NEEDLE_VERSION_3)
		return -EINVAL;
	if (len < NEEDLE_HEADER_SIZE)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	needle_parse_header(buf, &out->cookie, &out->id, &out->size);
	disk = needle_disk_size(out->size, version);
	if (disk > len)
		return -EINVAL;
	tail = NEEDLE_HEADER_SIZE + out->size;
	if (version == NEEDLE_VERSION_1) {
		out->data_size = out->size;
		out->data = buf + NEEDLE_HEADER_SIZE;
	} else if (out->size > 0) {
		if (out->size < 5)
			return -EINVAL;
		out->data_size = get_be32(buf + NEEDLE_HEADER_SIZE);
		if ((uint64_t)out->data_size + 5 > out->size)
			return -EINVAL;
		out->data = buf + NEEDLE_HEADER_SIZE + 4;
		if (needle_decode_meta(out->data + out->data_size, out->size - 4 - out->data_size,
				       out) < 0)
			return -EINVAL;
	}
	out->checksum = get_be32(buf + tail);
	if (version == NEEDLE_VERSION_3)
		out->append_at_ns = get_be64(buf + tail + 4);
	if (verify_crc && out->data_size > 0 &&
	    !needle_checksum_matches(out->checksum, crc32c(0, out->data, out->data_size)))
		return -EBADMSG;
	return 0;
}
