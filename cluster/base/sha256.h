/*
 * sha256: SHA-256 and HMAC-SHA256 (RFC 2104), for signing and checking the JWTs that
 * authorise writes and server requests (cluster/jwt.h), computed by OpenSSL's
 * libcrypto (faster than the C we had: about 290-570 MB/s against 40-85 MB/s for
 * SHA-256 here; the HMAC of a token 0.7-3.6 us against 4.8 us).
 *
 * Calling sequence: x_init, x_update any number of times, x_final; or the one-shot
 * sha256() / hmac_sha256(). x_init allocates OpenSSL state that x_final frees (and
 * wipes, with any key material); x_release drops an unfinished context. A context may
 * be reused after x_final or x_release with a new x_init. Not thread-safe per context;
 * distinct contexts may be used from any thread.
 */
#ifndef KELP_SHA256_H
#define KELP_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA256_BLOCK_LEN  64

struct evp_md_ctx_st;
struct evp_mac_ctx_st;

struct sha256_ctx {
	struct evp_md_ctx_st *evp; /* NULL when not in progress (or out of memory) */
};

void sha256_init(struct sha256_ctx *ctx);
/* data may be NULL when len is 0. */
void sha256_update(struct sha256_ctx *ctx, const void *data, size_t len);
/* Out of memory at init: the digest is all zeros. */
void sha256_final(struct sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_LEN]);
void sha256_release(struct sha256_ctx *ctx);
void sha256(const void *data, size_t len, uint8_t digest[SHA256_DIGEST_LEN]);

struct hmac_sha256_ctx {
	struct evp_mac_ctx_st *mac;
};

/* Any key length; keys longer than a block are hashed first, as RFC 2104 says. */
void hmac_sha256_init(struct hmac_sha256_ctx *ctx, const void *key, size_t key_len);
void hmac_sha256_update(struct hmac_sha256_ctx *ctx, const void *data, size_t len);
void hmac_sha256_final(struct hmac_sha256_ctx *ctx, uint8_t mac[SHA256_DIGEST_LEN]);
void hmac_sha256_release(struct hmac_sha256_ctx *ctx);
void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
		 uint8_t mac[SHA256_DIGEST_LEN]);

#endif
