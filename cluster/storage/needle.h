/*
 * needle: one blob record in a volume's .dat file, in SeaweedFS's layout (versions 1-3).
 *
 *   header   cookie u32 | id u64 | Size u32          (16 bytes, all big-endian)
 *   body     DataSize u32 | Data | Flags u8 | [NameSize u8 Name] | [MimeSize u8 Mime]
 *            | [LastModified 5 bytes] | [TTL 2 bytes] | [PairsSize u16 Pairs]
 *            (absent entirely when DataSize == 0: Size is then 0)
 *   tail     CRC32C of Data u32 | AppendAtNs u64 (v3 only) | 1-8 bytes of zero padding
 *
 * Version 1 has no body fields: Data is Size bytes. Every record is 8-byte aligned.
 * Decoders never read outside the buffer they are given and return -EINVAL for
 * malformed bytes, -EBADMSG for a checksum mismatch.
 */
#ifndef KELP_NEEDLE_H
#define KELP_NEEDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/common/layout.h"

#define NEEDLE_HEADER_SIZE   16
#define NEEDLE_CHECKSUM_SIZE 4
#define NEEDLE_PADDING_SIZE  8
#define NEEDLE_VERSION_1     1
#define NEEDLE_VERSION_2     2
#define NEEDLE_VERSION_3     3
#define NEEDLE_MAX_PAIRS     65535
/* Largest data that keeps Size (data + every optional field) within 32 bits. */
#define NEEDLE_MAX_DATA_SIZE (0xFFFFFFFFu - (1u << 20))

#define NEEDLE_FLAG_GZIP	  0x01
#define NEEDLE_FLAG_HAS_NAME	  0x02
#define NEEDLE_FLAG_HAS_MIME	  0x04
#define NEEDLE_FLAG_HAS_LAST_MOD  0x08
#define NEEDLE_FLAG_HAS_TTL	  0x10
#define NEEDLE_FLAG_HAS_PAIRS	  0x20
#define NEEDLE_FLAG_CHUNKMANIFEST 0x80

/*
 * A decoded or to-be-encoded needle. Pointers (data, name, mime, pairs) are borrowed:
 * after needle_decode they point into the decoded buffer.
 */
struct needle {
	uint32_t cookie;
	uint64_t id;
	uint32_t size; /* the header Size field: body length */
	uint32_t data_size;
	const uint8_t *data;
	uint8_t flags;
	uint8_t name_len;
	const char *name;
	uint8_t mime_len;
	const char *mime;
	uint64_t last_modified; /* unix seconds, 40 bits on disk */
	struct ttl ttl;
	uint16_t pairs_len;
	const uint8_t *pairs;
	uint32_t checksum; /* CRC32C of data as stored (raw, never masked when encoding) */
	uint64_t append_at_ns;
};

/* CRC32C (Castagnoli) continuing from crc (0 to start). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The legacy masked form of a CRC that old SeaweedFS versions stored. */
uint32_t crc32c_masked(uint32_t crc);

/* Sets n->flags for the optional fields present and returns the body Size. */
uint32_t needle_compute_size(struct needle *n);

/* Length on disk of a needle with header Size `size`, padding included. */
uint64_t needle_disk_size(uint32_t size, int version);

/* Bytes of the body that follow Data (flags and optional fields). */
size_t needle_meta_size(const struct needle *n);

/*
 * Streaming encoders, in order: head (header + DataSize, 20 bytes, or 16 when data is
 * empty), then the data, then meta (needle_meta_size bytes; none when data is empty),
 * then tail (checksum, append time, padding; returns its length). n->size must be set
 * by needle_compute_size first, n->checksum computed over the data.
 */
size_t needle_encode_head(const struct needle *n, uint8_t *buf);
size_t needle_encode_meta(const struct needle *n, uint8_t *buf);
size_t needle_encode_tail(const struct needle *n, int version, uint8_t *buf);

/*
 * Encodes a whole needle (computes size, flags and checksum) into out, which must hold
 * needle_disk_size(). Returns the length written, or 0 if cap is too small.
 */
size_t needle_encode(struct needle *n, int version, uint8_t *out, size_t cap);

/* Parses a 16-byte header. */
void needle_parse_header(const uint8_t *buf, uint32_t *cookie, uint64_t *id, uint32_t *size);

/*
 * Decodes a whole record from buf (len bytes, at least needle_disk_size()).
 * verify_crc: also check the stored checksum against the data (raw or masked form).
 * Returns 0, -EINVAL (malformed or truncated) or -EBADMSG (checksum mismatch; *out is
 * still filled so the caller can report it).
 */
int needle_decode(const uint8_t *buf, size_t len, int version, bool verify_crc, struct needle *out);

/*
 * Decodes the body fields that follow Data: meta points at the flags byte, meta_len is
 * Size - 4 - DataSize. Fills flags, name, mime, last_modified, ttl, pairs.
 */
int needle_decode_meta(const uint8_t *meta, size_t meta_len, struct needle *out);

/* True if the stored checksum matches crc (the raw or the legacy masked form). */
bool needle_checksum_matches(uint32_t stored, uint32_t crc);

/* Big-endian helpers. */
static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}
static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
	return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

#endif
