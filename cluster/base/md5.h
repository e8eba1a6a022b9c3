/*
 * md5: RFC 1321 MD5, for Content-MD5 checks (not for security).
 * Calling sequence: md5_init, md5_update any number of times, md5_final.
 */
#ifndef KELP_MD5_H
#define KELP_MD5_H

#include <stddef.h>
#include <stdint.h>

struct md5_ctx {
	uint32_t state[4];
	uint64_t length; /* bytes hashed so far */
	uint8_t buffer[64];
	size_t buffered;
};

void md5_init(struct md5_ctx *ctx);
void md5_update(struct md5_ctx *ctx, const void *data, size_t len);
void md5_final(struct md5_ctx *ctx, uint8_t digest[16]);

#endif
