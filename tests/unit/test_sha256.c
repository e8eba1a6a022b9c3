/*
 * test_sha256: FIPS 180-2 appendix / NIST example vectors (empty string, "abc", the
 * 448- and 896-bit messages, one million 'a'), lengths around the 55/56/64-byte
 * padding edges (expected digests from python3's hashlib), incremental updates split
 * at every position, and the RFC 4231 HMAC-SHA256 test cases plus key lengths at the
 * block-size edge (expected MACs from python3's hmac).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/base/sha256.h"

static void to_hex(const uint8_t *digest, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	uint8_t digest[SHA256_DIGEST_LEN];

	sha256(data, len, digest);
	to_hex(digest, sizeof(digest), out);
}

static void test_fips_vectors(void **state)
{
	static const struct {
		const char *msg;
		const char *hex;
	} vectors[] = {
	    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	    /* 448 bits: fills the first block past the 55-byte limit for the length. */
	    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqk"
	     "lmnopqrlmnopqrsmnopqrstnopqrstu",
	     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
	};
	char hex[65];

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		sha256_hex(vectors[i].msg, strlen(vectors[i].msg), hex);
		assert_string_equal(hex, vectors[i].hex);
	}
}

static void test_million_a(void **state)
{
	struct sha256_ctx ctx;
	uint8_t digest[SHA256_DIGEST_LEN];
	char chunk[1000], hex[65];
	char *all = malloc(1000000);

	(void)state;
	assert_non_null(all);
	memset(chunk, 'a', sizeof(chunk));
	/* Once in one call, once in 1000-byte updates (not a multiple of 64). */
	memset(all, 'a', 1000000);
	sha256_hex(all, 1000000, hex);
	free(all);
	assert_string_equal(hex,
			    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

	sha256_init(&ctx);
	for (int i = 0; i < 1000; i++)
		sha256_update(&ctx, chunk, sizeof(chunk));
	sha256_final(&ctx, digest);
	to_hex(digest, sizeof(digest), hex);
	assert_string_equal(hex,
			    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void fill_pattern(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 7 + 3);
}

static void test_padding_edges(void **state)
{
	static const struct {
		size_t len;
		const char *hex;
	} cases[] = {
	    {1, "084fed08b978af4d7d196a7446a86b58009e636b611db16211b65a9aadff29c5"},
	    {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
	    {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
	    {57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73"},
	    {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
	    {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
	    {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
	    {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
	    {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
	    {127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07"},
	    {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
	    {129, "307f8fc2c1622b92762e818d39a185d4d667ad49a4b07ceae1f4afa008a93ec4"},
	    {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
	};
	uint8_t buf[1000];
	char hex[65];

	(void)state;
	fill_pattern(buf, sizeof(buf));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sha256_hex(buf, cases[i].len, hex);
		assert_string_equal(hex, cases[i].hex);
	}
}

/* Every split point of a 200-byte message, in two and three updates. */
static void test_incremental_splits(void **state)
{
	uint8_t buf[200], one[SHA256_DIGEST_LEN], split[SHA256_DIGEST_LEN];
	struct sha256_ctx ctx;

	(void)state;
	fill_pattern(buf, sizeof(buf));
	sha256(buf, sizeof(buf), one);
	for (size_t a = 0; a <= sizeof(buf); a++) {
		sha256_init(&ctx);
		sha256_update(&ctx, buf, a);
		sha256_update(&ctx, NULL, 0);
		sha256_update(&ctx, buf + a, sizeof(buf) - a);
		sha256_final(&ctx, split);
		assert_memory_equal(one, split, sizeof(one));

		size_t b = a + (sizeof(buf) - a) / 3;
		sha256_init(&ctx);
		sha256_update(&ctx, buf, a);
		sha256_update(&ctx, buf + a, b - a);
		sha256_update(&ctx, buf + b, sizeof(buf) - b);
		sha256_final(&ctx, split);
		assert_memory_equal(one, split, sizeof(one));
	}
}

static void hmac_hex(const void *key, size_t key_len, const void *data, size_t len, char out[65])
{
	uint8_t mac[SHA256_DIGEST_LEN];

	hmac_sha256(key, key_len, data, len, mac);
	to_hex(mac, sizeof(mac), out);
}

static void test_rfc4231(void **state)
{
	uint8_t key_0b[20], key_aa20[20], key_25[25], key_0c[20], key_aa131[131];
	uint8_t data_dd[50], data_cd[50];
	char hex[65];

	(void)state;
	memset(key_0b, 0x0b, sizeof(key_0b));
	memset(key_aa20, 0xaa, sizeof(key_aa20));
	for (size_t i = 0; i < sizeof(key_25); i++)
		key_25[i] = (uint8_t)(i + 1);
	memset(key_0c, 0x0c, sizeof(key_0c));
	memset(key_aa131, 0xaa, sizeof(key_aa131));
	memset(data_dd, 0xdd, sizeof(data_dd));
	memset(data_cd, 0xcd, sizeof(data_cd));

	/* 4.2 test case 1 */
	hmac_hex(key_0b, sizeof(key_0b), "Hi There", 8, hex);
	assert_string_equal(hex,
			    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	/* 4.3 test case 2: a key shorter than the output */
	hmac_hex("Jefe", 4, "what do ya want for nothing?", 28, hex);
	assert_string_equal(hex,
			    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* 4.4 test case 3 */
	hmac_hex(key_aa20, sizeof(key_aa20), data_dd, sizeof(data_dd), hex);
	assert_string_equal(hex,
			    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
	/* 4.5 test case 4 */
	hmac_hex(key_25, sizeof(key_25), data_cd, sizeof(data_cd), hex);
	assert_string_equal(hex,
			    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
	/* 4.6 test case 5: the RFC gives only the first 128 bits */
	hmac_hex(key_0c, sizeof(key_0c), "Test With Truncation", 20, hex);
	assert_memory_equal(hex, "a3b6167473100ee06e0c796c2955552b", 32);
	/* 4.7 test case 6: a key longer than a block is hashed first */
	hmac_hex(key_aa131, sizeof(key_aa131),
		 "Test Using Larger Than Block-Size Key - Hash Key First", 54, hex);
	assert_string_equal(hex,
			    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	/* 4.8 test case 7 */
	static const char tc7[] =
	    "This is a test using a larger than block-size key and a larger than block-size "
	    "data. The key needs to be hashed before being used by the HMAC algorithm.";
	hmac_hex(key_aa131, sizeof(key_aa131), tc7, sizeof(tc7) - 1, hex);
	assert_string_equal(hex,
			    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

/* Empty key, and keys of exactly one block (used as is) and one byte more (hashed). */
static void test_hmac_key_edges(void **state)
{
	uint8_t key[65];
	char hex[65];

	(void)state;
	hmac_hex(NULL, 0, NULL, 0, hex);
	assert_string_equal(hex,
			    "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
	memset(key, 'k', sizeof(key));
	hmac_hex(key, 64, "block-size key", 14, hex);
	assert_string_equal(hex,
			    "3639ed45f96410ae1abf821aaf15a4e616209464f7e06fb79435d35e485bd3c2");
	hmac_hex(key, 65, "block-size key", 14, hex);
	assert_string_equal(hex,
			    "492c0e30e79bd478c547ea77404336b1093be9a3fe2de81aca2185a7a92a69fa");
}

static void test_hmac_incremental(void **state)
{
	uint8_t buf[300], one[SHA256_DIGEST_LEN], split[SHA256_DIGEST_LEN];
	struct hmac_sha256_ctx ctx;

	(void)state;
	fill_pattern(buf, sizeof(buf));
	hmac_sha256("secret", 6, buf, sizeof(buf), one);
	for (size_t a = 0; a <= sizeof(buf); a += 7) {
		hmac_sha256_init(&ctx, "secret", 6);
		hmac_sha256_update(&ctx, buf, a);
		hmac_sha256_update(&ctx, buf + a, sizeof(buf) - a);
		hmac_sha256_final(&ctx, split);
		assert_memory_equal(one, split, sizeof(one));
	}
	/* A different key or message must change the MAC. */
	hmac_sha256("secreT", 6, buf, sizeof(buf), split);
	assert_memory_not_equal(one, split, sizeof(one));
	buf[299] ^= 1;
	hmac_sha256("secret", 6, buf, sizeof(buf), split);
	assert_memory_not_equal(one, split, sizeof(one));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fips_vectors),     cmocka_unit_test(test_million_a),
	    cmocka_unit_test(test_padding_edges),    cmocka_unit_test(test_incremental_splits),
	    cmocka_unit_test(test_rfc4231),	     cmocka_unit_test(test_hmac_key_edges),
	    cmocka_unit_test(test_hmac_incremental),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
