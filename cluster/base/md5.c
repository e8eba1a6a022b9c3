/*
 * md5: RFC 1321 MD5, written from the RFC's description.
 *
 * Words are read little-endian byte by byte, so the code does not depend on host
 * endianness or alignment. Not constant-time; kelp only uses it to check Content-MD5.
 */
#include "cluster/base/md5.h"

#include <string.h>

/* T[i] = floor(2^32 * abs(sin(i + 1))), RFC 1321 section 3.4. */
static const uint32_t md5_t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static uint32_t rotl32(uint32_t x, unsigned n)
{
	return (x << n) | (x >> (32 - n));
}

static uint32_t load_le32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint32_t v;

	memcpy(&v, p, 4); /* one unaligned load */
	return v;
#else
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static void store_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/*
 * The four auxiliary functions of RFC 1321 section 3.4, in equivalent forms with one
 * operation less: F = (b & c) | (~b & d), G = (b & d) | (c & ~d).
 */
#define MD5_F(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define MD5_G(b, c, d) ((c) ^ ((d) & ((b) ^ (c))))
#define MD5_H(b, c, d) ((b) ^ (c) ^ (d))
#define MD5_I(b, c, d) ((c) ^ ((b) | ~(d)))

/* One of the 64 steps: a = b + ((a + fn(b, c, d) + x[k] + T[i]) <<< s). */
#define MD5_STEP(fn, a, b, c, d, k, i, s)                                                          \
	(a) = (b) + rotl32((a) + fn((b), (c), (d)) + x[(k)] + md5_t[(i)], (s))

/* Processes one 64-byte block (RFC 1321 section 3.4), the 64 steps unrolled. */
static void md5_block(uint32_t state[4], const uint8_t block[64])
{
	uint32_t x[16];
	uint32_t a = state[0], b = state[1], c = state[2], d = state[3];

	for (int i = 0; i < 16; i++)
		x[i] = load_le32(block + 4 * i);

	/* Round 1: k = i. */
	for (int i = 0; i < 16; i += 4) {
		MD5_STEP(MD5_F, a, b, c, d, i, i, 7);
		MD5_STEP(MD5_F, d, a, b, c, i + 1, i + 1, 12);
		MD5_STEP(MD5_F, c, d, a, b, i + 2, i + 2, 17);
		MD5_STEP(MD5_F, b, c, d, a, i + 3, i + 3, 22);
	}
	/* Round 2: k = (5i + 1) mod 16. */
	for (int i = 16; i < 32; i += 4) {
		MD5_STEP(MD5_G, a, b, c, d, (5 * i + 1) % 16, i, 5);
		MD5_STEP(MD5_G, d, a, b, c, (5 * i + 6) % 16, i + 1, 9);
		MD5_STEP(MD5_G, c, d, a, b, (5 * i + 11) % 16, i + 2, 14);
		MD5_STEP(MD5_G, b, c, d, a, (5 * i + 16) % 16, i + 3, 20);
	}
	/* Round 3: k = (3i + 5) mod 16. */
	for (int i = 32; i < 48; i += 4) {
		MD5_STEP(MD5_H, a, b, c, d, (3 * i + 5) % 16, i, 4);
		MD5_STEP(MD5_H, d, a, b, c, (3 * i + 8) % 16, i + 1, 11);
		MD5_STEP(MD5_H, c, d, a, b, (3 * i + 11) % 16, i + 2, 16);
		MD5_STEP(MD5_H, b, c, d, a, (3 * i + 14) % 16, i + 3, 23);
	}
	/* Round 4: k = 7i mod 16. */
	for (int i = 48; i < 64; i += 4) {
		MD5_STEP(MD5_I, a, b, c, d, (7 * i) % 16, i, 6);
		MD5_STEP(MD5_I, d, a, b, c, (7 * i + 7) % 16, i + 1, 10);
		MD5_STEP(MD5_I, c, d, a, b, (7 * i + 14) % 16, i + 2, 15);
		MD5_STEP(MD5_I, b, c, d, a, (7 * i + 21) % 16, i + 3, 21);
	}

	state[0] += a;
	state[1] += b;
	state[2] += c;
	state[3] += d;
}

void md5_init(struct md5_ctx *ctx)
{
	ctx->state[0] = 0x67452301;
	ctx->state[1] = 0xefcdab89;
	ctx->state[2] = 0x98badcfe;
	ctx->state[3] = 0x10325476;
	ctx->length = 0;
	ctx->buffered = 0;
}

void md5_update(struct md5_ctx *ctx, const void *data, size_t len)
{
	const uint8_t *p = data;

	if (len == 0)
		return; /* data may be NULL then; memcpy must not see it */
	ctx->length += len;
	if (ctx->buffered > 0) {
		size_t take = 64 - ctx->buffered;

		if (take > len)
			take = len;
		memcpy(ctx->buffer + ctx->buffered, p, take);
		ctx->buffered += take;
		p += take;
		len -= take;
		if (ctx->buffered < 64)
			return;
		md5_block(ctx->state, ctx->buffer);
		ctx->buffered = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		md5_block(ctx->state, p);
	if (len > 0) {
		memcpy(ctx->buffer, p, len);
		ctx->buffered = len;
	}
}

void md5_final(struct md5_ctx *ctx, uint8_t digest[16])
{
	uint64_t bits = ctx->length << 3;

	/* Pad with 0x80, zeros up to 56 mod 64, then the bit length little-endian. */
	ctx->buffer[ctx->buffered++] = 0x80;
	if (ctx->buffered > 56) {
		memset(ctx->buffer + ctx->buffered, 0, 64 - ctx->buffered);
		md5_block(ctx->state, ctx->buffer);
		ctx->buffered = 0;
	}
	memset(ctx->buffer + ctx->buffered, 0, 56 - ctx->buffered);
	store_le32(ctx->buffer + 56, (uint32_t)bits);
	store_le32(ctx->buffer + 60, (uint32_t)(bits >> 32));
	md5_block(ctx->state, ctx->buffer);

	for (int i = 0; i < 4; i++)
		store_le32(digest + 4 * i, ctx->state[i]);
	/* Leave nothing of the message behind in the caller's context. */
	memset(ctx, 0, sizeof(*ctx));
}
