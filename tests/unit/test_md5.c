/*
 * test_md5 (MD5 from libcrypto, cluster/base/crypto.c): RFC 1321 appendix A.5 test vectors, lengths around the 56/64-byte padding
 * edges (expected digests computed with an independent MD5), and incremental updates
 * split at every position, which must give the same digest as one call.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/base/md5.h"

static void digest_hex(const uint8_t digest[16], char out[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void md5_hex(const void *data, size_t len, char out[33])
{
	struct md5_ctx ctx;
	uint8_t digest[16];

	md5_init(&ctx);
	md5_update(&ctx, data, len);
	md5_final(&ctx, digest);
	digest_hex(digest, out);
}

static void test_rfc1321_vectors(void **state)
{
	static const struct {
		const char *msg;
		const char *hex;
	} vectors[] = {
	    {"", "d41d8cd98f00b204e9800998ecf8427e"},
	    {"a", "0cc175b9c0f1b6a831c399e269772661"},
	    {"abc", "900150983cd24fb0d6963f7d28e17f72"},
	    {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
	    {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
	    {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
	     "d174ab98d277d9f5a5611c2c9f419d9f"},
	    {"1234567890123456789012345678901234567890123456789012345678901234567890"
	     "1234567890",
	     "57edf4a22be3c955ac49da2e2107b67a"},
	};
	char hex[33];

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		md5_hex(vectors[i].msg, strlen(vectors[i].msg), hex);
		assert_string_equal(hex, vectors[i].hex);
	}
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
	    {1, "8666683506aacd900bbd5a74ac4edf68"},	{55, "52c0e574e1198de5fe3f8f11440dcb1b"},
	    {56, "46c9907fc908ee68b1e7b8e71286a518"},	{57, "1c805dd236c35cab25fcb1bc73802c51"},
	    {63, "a62f6d59e837867693f042f5b8f5a236"},	{64, "7160b8fb5e9e4023d549c3971fbaeead"},
	    {65, "70bd662e7aefbda85a0f7244167b7897"},	{119, "e84905d4214f4d1ca56c2cdcc152b143"},
	    {120, "e3eb5a6c8669ea01a8c185b8abc8a5dc"},	{127, "acce2474d6cc8302120d09c818d17ef7"},
	    {128, "10b2da1a82f16d99a81a7203fe9f02cb"},	{129, "03fefbbcebe2959cf2270241aafe0250"},
	    {1000, "10046f077f2082ac19676b8079f1cb1a"},
	};
	uint8_t buf[1000];
	char hex[33];

	(void)state;
	fill_pattern(buf, sizeof(buf));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		md5_hex(buf, cases[i].len, hex);
		assert_string_equal(hex, cases[i].hex);
	}
}

/* Every split of 200 bytes into two updates, and into three around every offset. */
static void test_incremental_splits(void **state)
{
	uint8_t buf[200];
	uint8_t want[16], got[16];
	struct md5_ctx ctx;

	(void)state;
	fill_pattern(buf, sizeof(buf));
	md5_init(&ctx);
	md5_update(&ctx, buf, sizeof(buf));
	md5_final(&ctx, want);

	for (size_t split = 0; split <= sizeof(buf); split++) {
		md5_init(&ctx);
		md5_update(&ctx, buf, split);
		md5_update(&ctx, NULL, 0);
		md5_update(&ctx, buf + split, sizeof(buf) - split);
		md5_final(&ctx, got);
		assert_memory_equal(got, want, 16);

		for (size_t second = split; second <= sizeof(buf); second += 13) {
			md5_init(&ctx);
			md5_update(&ctx, buf, split);
			md5_update(&ctx, buf + split, second - split);
			md5_update(&ctx, buf + second, sizeof(buf) - second);
			md5_final(&ctx, got);
			assert_memory_equal(got, want, 16);
		}
	}

	md5_init(&ctx);
	for (size_t i = 0; i < sizeof(buf); i++)
		md5_update(&ctx, buf + i, 1);
	md5_final(&ctx, got);
	assert_memory_equal(got, want, 16);
}

/* A million 'a's in uneven pieces (the classic extra vector). */
static void test_million_a(void **state)
{
	uint8_t chunk[997];
	struct md5_ctx ctx;
	uint8_t digest[16];
	char hex[33];
	size_t left = 1000000;

	(void)state;
	memset(chunk, 'a', sizeof(chunk));
	md5_init(&ctx);
	for (size_t n = 1; left > 0; n = (n * 31 + 7) % sizeof(chunk) + 1) {
		size_t take = n < left ? n : left;

		md5_update(&ctx, chunk, take);
		left -= take;
	}
	md5_final(&ctx, digest);
	digest_hex(digest, hex);
	assert_string_equal(hex, "7707d6ae4e027c70eea2a935c2296f21");
}

/* A context can be reused after md5_init, whatever state md5_final left. */
static void test_reuse(void **state)
{
	struct md5_ctx ctx;
	uint8_t digest[16];
	char hex[33];

	(void)state;
	md5_init(&ctx);
	md5_update(&ctx, "garbage", 7);
	md5_final(&ctx, digest);
	md5_init(&ctx);
	md5_update(&ctx, "abc", 3);
	md5_final(&ctx, digest);
	digest_hex(digest, hex);
	assert_string_equal(hex, "900150983cd24fb0d6963f7d28e17f72");
}

/* An unfinished context is released (nothing leaks under ASan), then used again. */
static void test_release(void **state)
{
	struct md5_ctx ctx;
	uint8_t digest[16];
	char hex[33];

	(void)state;
	assert_int_equal(md5_init(&ctx), 0);
	md5_update(&ctx, "abandoned", 9);
	md5_release(&ctx);
	md5_release(&ctx); /* twice is harmless */
	assert_int_equal(md5_init(&ctx), 0);
	md5_update(&ctx, "abc", 3);
	md5_final(&ctx, digest);
	md5_release(&ctx); /* after final too */
	digest_hex(digest, hex);
	assert_string_equal(hex, "900150983cd24fb0d6963f7d28e17f72");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc1321_vectors),
	    cmocka_unit_test(test_padding_edges),
	    cmocka_unit_test(test_incremental_splits),
	    cmocka_unit_test(test_million_a),
	    cmocka_unit_test(test_reuse),
	    cmocka_unit_test(test_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
