/*
 * sha256: FIPS 180-4 SHA-256 and RFC 2104 HMAC-SHA256, for signing and checking the
 * JWTs that authorise writes (cluster/jwt.h).
 *
 * Calling sequence: x_init, x_update any number of times, x_final; or the one-shot
 * sha256() / hmac_sha256(). Contexts live in the caller's storage and hold no
 * pointers; x_final wipes the context (and with it any key material), so the caller
 * has nothing to free. A context may be reused only after a new x_init.
 * Not thread-safe per context; distinct contexts may be used from any thread.
 */
#ifndef KELP_SHA256_H
#define KELP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA256_BLOCK_LEN  64

struct sha256_ctx {
	uint32_t state[8];
	uint64_t length; /* bytes hashed so far */
	uint8_t buffer[SHA256_BLOCK_LEN];
	size_t buffered;
};

void sha256_init(struct sha256_ctx *ctx);
/* data may be NULL when len is 0. */
void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len);
void sha256_final(struct sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_LEN]);
void sha256(const void *data, size_t len, uint8_t digest[SHA256_DIGEST_LEN]);

struct hmac_sha256_ctx {
	struct sha256_ctx inner; /* H(K ^ ipad || message) in progress */
	struct sha256_ctx outer; /* H(K ^ opad || ...) waiting for the inner digest */
};

/* Any key length; keys longer than a block are hashed first, as RFC 2104 says. */
void hmac_sha256_init(struct hmac_sha256_ctx *ctx, const void *key, size_t key_len);
void hmac_sha256_update(struct hmac_sha256_ctx *ctx, const void *data, size_t len);
void hmac_sha256_final(struct hmac_sha256_ctx *ctx, uint8_t mac[SHA256_DIGEST_LEN]);
void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
		 uint8_t mac[SHA256_DIGEST_LEN]);

#endif
