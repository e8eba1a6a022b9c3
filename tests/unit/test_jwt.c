/*
 * test_jwt: HS256 fid tokens. The reference tokens below were made by hand with
 * python3's hmac and hashlib (key "kelp-test-signing-key"), independently of kelp's
 * SHA-256, base64url and JSON code:
 *
 *   b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
 *   s = b64(header) + "." + b64(claims)
 *   token = s + "." + b64(hmac.new(key, s.encode(), hashlib.sha256).digest())
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/net/jwt.h"

#define KEY "kelp-test-signing-key"
#define FID "3,01637037d6"

/* {"alg":"HS256","typ":"JWT"} . {"exp":2000000000,"fid":"3,01637037d6"} */
static const char py_token_exp[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjIwMDAwMDAwMDAsImZpZCI6IjMsMDE2MzcwMzdkNiJ9"
    ".Xv1X1bGvY44qCyqCqQcyHsUq5-q0giWDRKlHPe23NYQ";
/* Claims in the order Go writes them: {"fid":"3,01637037d6","exp":2000000000} */
static const char py_token_go_order[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYiLCJleHAiOjIwMDAwMDAwMDB9"
    ".Lx1v2AdQQwPZYidodR_aSD8GR-a8sQX3qmwhuNuXaE0";
/* {"fid":"3,01637037d6"}, no expiry */
static const char py_token_no_exp[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3"
    "ZDYifQ.E3KJ9Ukujyb6jYJwNVcKyloq-y4hgLsxoX2mkBiLYOw";

static int verify(const char *token, const char *fid, int64_t now)
{
	return jwt_verify_fid(KEY, token, strlen(token), fid, now);
}

static void test_python_tokens(void **state)
{
	char out[JWT_BUF_LEN];

	(void)state;
	assert_int_equal(verify(py_token_exp, FID, 1700000000), 0);
	assert_int_equal(verify(py_token_exp, FID, 1999999999), 0);
	assert_int_equal(verify(py_token_go_order, FID, 1700000000), 0);
	assert_int_equal(verify(py_token_no_exp, FID, 1700000000), 0);
	assert_int_equal(verify(py_token_no_exp, FID, INT64_MAX), 0);

	/* kelp signs the same claims to the same bytes. */
	assert_int_equal(jwt_sign_fid(KEY, FID, 2000000000, out, sizeof(out)), 0);
	assert_string_equal(out, py_token_exp);
	assert_int_equal(jwt_sign_fid(KEY, FID, 0, out, sizeof(out)), 0);
	assert_string_equal(out, py_token_no_exp);

	/* Another key. */
	assert_int_equal(jwt_verify_fid("kelp-test-signing-kez", py_token_exp, strlen(py_token_exp),
					FID, 1700000000),
			 -EACCES);
	assert_int_equal(jwt_verify_fid("", py_token_exp, strlen(py_token_exp), FID, 1700000000),
			 -EACCES);
	assert_int_equal(jwt_verify_fid(NULL, py_token_exp, strlen(py_token_exp), FID, 1700000000),
			 -EACCES);
}

static void test_round_trip(void **state)
{
	static const char *fids[] = {"3,01637037d6", "1,0100000000",
				     "4294967295,ffffffffffffffff12345678", "7,ab\"c\\d",
				     "9,\xc3\xa9t\xc3\xa9"};
	char out[JWT_BUF_LEN];

	(void)state;
	for (size_t i = 0; i < sizeof(fids) / sizeof(fids[0]); i++) {
		assert_int_equal(jwt_sign_fid("k", fids[i], 1700000010, out, sizeof(out)), 0);
		assert_int_equal(jwt_verify_fid("k", out, strlen(out), fids[i], 1700000000), 0);
		assert_int_equal(jwt_verify_fid("k2", out, strlen(out), fids[i], 1700000000),
				 -EACCES);
		assert_int_equal(jwt_sign_fid("k", fids[i], 0, out, sizeof(out)), 0);
		assert_int_equal(jwt_verify_fid("k", out, strlen(out), fids[i], INT64_MAX), 0);
	}
	/* Only the header and dots are fixed; nothing else leaks into the token. */
	assert_int_equal(jwt_sign_fid("k", FID, 5, out, sizeof(out)), 0);
	assert_memory_equal(out, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37);
	assert_null(strchr(out, '='));
	assert_null(strchr(out, '+'));
	assert_null(strchr(out, '/'));
}

/* A batch-assign delta suffix is dropped before comparing, as in SeaweedFS. */
static void test_delta_suffix(void **state)
{
	(void)state;
	assert_int_equal(verify(py_token_exp, FID "_1", 1700000000), 0);
	assert_int_equal(verify(py_token_exp, FID "_123", 1700000000), 0);
	assert_int_equal(verify(py_token_exp, FID "x_1", 1700000000), -EACCES);
	assert_int_equal(verify(py_token_exp, "3,01637037d7_1", 1700000000), -EACCES);
}

static void test_wrong_fid(void **state)
{
	static const char *wrong[] = {"4,01637037d6",  "3,01637037d7", "3,01637037d",
				      "3,01637037d6x", "3,01637037D6", "",
				      "_3,01637037d6", " 3,01637037d6"};

	(void)state;
	for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
		assert_int_equal(verify(py_token_exp, wrong[i], 1700000000), -EACCES);
}

static void test_expiry(void **state)
{
	char out[JWT_BUF_LEN];
	/* {"fid":"3,01637037d6","exp":1999999999.5}: Go accepts fractional NumericDates */
	static const char fractional[] =
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYiLCJleHAiOjE5OTk5OTk"
	    "5OTkuNX0.z0YSCmgQEJjxOZwtaF6893ZKMsNjBd_9we1YzXa2FC4";
	/* {"fid":"3,01637037d6","nbf":1900000000} */
	static const char not_before[] =
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYiLCJuYmYiOjE5MDAwMDA"
	    "wMDB9.yTPjZXGUo9lIbd_jxgEPb-AQrei0RV6k1O5K6dZufq0";

	(void)state;
	assert_int_equal(verify(py_token_exp, FID, 2000000000), -EACCES);
	assert_int_equal(verify(py_token_exp, FID, 2000000001), -EACCES);
	assert_int_equal(verify(py_token_exp, FID, INT64_MAX), -EACCES);

	assert_int_equal(jwt_sign_fid(KEY, FID, 1000, out, sizeof(out)), 0);
	assert_int_equal(verify(out, FID, 999), 0);
	assert_int_equal(verify(out, FID, 1000), -EACCES);
	assert_int_equal(verify(out, FID, 1001), -EACCES);

	assert_int_equal(verify(fractional, FID, 1999999999), 0);
	assert_int_equal(verify(fractional, FID, 2000000000), -EACCES);

	assert_int_equal(verify(not_before, FID, 1899999999), -EACCES);
	assert_int_equal(verify(not_before, FID, 1900000000), 0);
}

/* Validly signed with KEY, but not acceptable. */
static void test_bad_headers_and_claims(void **state)
{
	static const char *tokens[] = {
	    /* {"alg":"HS512","typ":"JWT"} signed with HMAC-SHA256 */
	    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.F2nxufYSGvaqsGVeF"
	    "ejBoGk0QCQ7vUdcscHfZOntb1o",
	    /* {"alg":"none","typ":"JWT"}, with an HMAC anyway */
	    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.8K1MSG6okN4N-aCb1S"
	    "AeYE-ucNC6Nms8HQF7FmLXc-Q",
	    /* alg none, no signature: the classic forgery */
	    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.",
	    /* {"fid":"3,01637037d6","fid":"4,01637037d6"}: duplicate keys */
	    "eyJhbGciOiJIUzI1NiJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYiLCJmaWQiOiI0LDAxNjM3MDM3ZDYifQ.2nmJzi"
	    "r4Is6GhEQBLGn6yW1as3Xv08VIrsOUCU0yjWU",
	    /* "exp":"2000000000", a string */
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYiLCJleHAiOiIyMDAwMDAw"
	    "MDAwIn0.yrxzv6BPyZr9yjO6N5E9IcDzztdJtM2lJSiSzzCyNw0",
	    /* claims ["fid"], not an object */
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.WyJmaWQiXQ.ZYXtPw37dkISnrrwFPN9ZWIl7YDKXnLxtadSLE"
	    "dhGwY",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++)
		assert_int_equal(verify(tokens[i], FID, 1700000000), -EACCES);
	/* Only the first of the duplicate-fid token's fids would match "4,..." either. */
	assert_int_equal(verify(tokens[3], "4,01637037d6", 1700000000), -EACCES);
}

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A token character other than c, the k-th of several (k < 9). */
static char other_char(char c, size_t k)
{
	const char *p = c ? strchr(b64url_chars, c) : NULL;
	size_t idx = p ? (size_t)(p - b64url_chars) : 0;

	return b64url_chars[(idx + 1 + 7 * k) % 64];
}

/* Every single-character change anywhere in the token must be refused. */
static void test_tampered(void **state)
{
	const size_t len = strlen(py_token_exp);
	char t[sizeof(py_token_exp)];

	(void)state;
	for (size_t i = 0; i < len; i++) {
		for (size_t k = 0; k < 3; k++) {
			memcpy(t, py_token_exp, sizeof(t));
			t[i] = other_char(t[i], k);
			assert_true(t[i] != py_token_exp[i]);
			assert_int_equal(jwt_verify_fid(KEY, t, len, FID, 1700000000), -EACCES);
		}
	}
}

static void test_truncated_and_extended(void **state)
{
	const size_t len = strlen(py_token_exp);
	char t[sizeof(py_token_exp) + 2];

	(void)state;
	for (size_t n = 0; n < len; n++) {
		char *copy = malloc(n ? n : 1); /* exact size, so ASan sees any overread */

		assert_non_null(copy);
		memcpy(copy, py_token_exp, n);
		assert_int_equal(jwt_verify_fid(KEY, copy, n, FID, 1700000000), -EACCES);
		free(copy);
	}
	/* Trailing bytes: padding, another segment, a NUL counted in the length. */
	memcpy(t, py_token_exp, len);
	memcpy(t + len, "=", 2);
	assert_int_equal(jwt_verify_fid(KEY, t, len + 1, FID, 1700000000), -EACCES);
	memcpy(t + len, ".", 2);
	assert_int_equal(jwt_verify_fid(KEY, t, len + 1, FID, 1700000000), -EACCES);
	memcpy(t + len, "A", 2);
	assert_int_equal(jwt_verify_fid(KEY, t, len + 1, FID, 1700000000), -EACCES);
	t[len] = '\0';
	assert_int_equal(jwt_verify_fid(KEY, t, len + 1, FID, 1700000000), -EACCES);
	/* The exact length still works from the same buffer. */
	assert_int_equal(jwt_verify_fid(KEY, t, len, FID, 1700000000), 0);
}

static void test_garbage(void **state)
{
	static const char *garbage[] = {
	    "",
	    ".",
	    "..",
	    "...",
	    "a.b.c",
	    "Bearer x",
	    "eyJ.eyJ.eyJ",
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..",
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.", /* {} and no signature */
	    " eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.E3KJ9Ukujyb6jYJw"
	    "NVcKyloq-y4hgLsxoX2mkBiLYOw",
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ==.E3KJ9Ukujyb6jYJ"
	    "wNVcKyloq-y4hgLsxoX2mkBiLYOw",
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJmaWQiOiIzLDAxNjM3MDM3ZDYifQ.E3KJ9Ukujyb6jYJwNV"
	    "cKyloq+y4hgLsxoX2mkBiLYOw", /* standard, not url, alphabet */
	};
	char big[JWT_MAX_TOKEN_LEN + 100];
	uint8_t random[300];
	uint32_t seed = 12345;

	(void)state;
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
		assert_int_equal(verify(garbage[i], FID, 1700000000), -EACCES);

	/* An over-long token, even one that starts like a valid one. */
	memset(big, 'A', sizeof(big));
	memcpy(big, py_token_exp, strlen(py_token_exp));
	assert_int_equal(jwt_verify_fid(KEY, big, sizeof(big), FID, 1700000000), -EACCES);

	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)round % sizeof(random);

		for (size_t i = 0; i < n; i++) {
			seed = seed * 1103515245 + 12345;
			random[i] = (uint8_t)(seed >> 16);
			/* Half the rounds use only token characters, so the splitter runs. */
			if (round & 1)
				random[i] =
				    (uint8_t)(random[i] % 8 == 0 ? '.'
								 : b64url_chars[random[i] % 64]);
		}
		assert_int_equal(jwt_verify_fid(KEY, (const char *)random, n, FID, 1700000000),
				 -EACCES);
	}
}

static void test_sign_errors(void **state)
{
	char out[JWT_BUF_LEN];
	size_t need;

	(void)state;
	assert_int_equal(jwt_sign_fid(NULL, FID, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(jwt_sign_fid("", FID, 0, out, sizeof(out)), -EINVAL);
	assert_string_equal(out, "");
	assert_int_equal(jwt_sign_fid(KEY, NULL, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(jwt_sign_fid(KEY, FID, -1, out, sizeof(out)), -EINVAL);
	assert_int_equal(jwt_sign_fid(KEY, "3,\xff\xfe", 0, out, sizeof(out)), -EINVAL);

	/* The exact size fits; one byte less is -ENOSPC and leaves "". */
	need = strlen(py_token_exp) + 1;
	assert_int_equal(jwt_sign_fid(KEY, FID, 2000000000, out, need), 0);
	assert_string_equal(out, py_token_exp);
	assert_int_equal(jwt_sign_fid(KEY, FID, 2000000000, out, need - 1), -ENOSPC);
	assert_string_equal(out, "");
	assert_int_equal(jwt_sign_fid(KEY, FID, 2000000000, NULL, 0), -ENOSPC);

	/* The largest expiry still signs and verifies. */
	assert_int_equal(jwt_sign_fid(KEY, FID, INT64_MAX, out, sizeof(out)), 0);
	assert_int_equal(verify(out, FID, INT64_MAX - 1), 0);
}

/* Server tokens: bound to one request, under a key derived from the cluster key. */
static void test_server_tokens(void **state)
{
	uint8_t req[32], other[32], same[32], bh[32], body[32], got[32];
	const struct jwt_query q[] = {{"volume", "3"}, {"collection", "a b"}, {"jwt", "x"}};
	const struct jwt_query q_sorted[] = {{"collection", "a b"}, {"volume", "3"}};
	char tok[JWT_BUF_LEN], fid_tok[JWT_BUF_LEN];
	bool has_bh;
	int64_t now = 1800000000;

	(void)state;
	/* The digest ignores the order of the pairs and ?jwt=, and decodes the URL form. */
	assert_int_equal(jwt_request_digest("POST", "/admin/x", q, 3, req), 0);
	assert_int_equal(jwt_request_digest("POST", "/admin/x", q_sorted, 2, same), 0);
	assert_memory_equal(req, same, 32);
	assert_int_equal(
	    jwt_request_digest_url("POST", "/admin/x?volume=3&collection=a%20b&jwt=y", same), 0);
	assert_memory_equal(req, same, 32);
	assert_int_equal(jwt_request_digest_url("POST", "/admin/x?collection=a+b&volume=3", same),
			 0);
	assert_memory_equal(req, same, 32);
	assert_int_equal(jwt_request_digest_url("GET", "/admin/x?volume=3&collection=a%20b", other),
			 0);
	assert_memory_not_equal(req, other, 32);
	assert_int_equal(
	    jwt_request_digest_url("POST", "/admin/x?volume=4&collection=a%20b", other), 0);
	assert_memory_not_equal(req, other, 32);
	/* "ab"+"c" and "a"+"bc" differ: lengths are hashed too */
	{
		const struct jwt_query a[] = {{"ab", "c"}}, b[] = {{"a", "bc"}};

		assert_int_equal(jwt_request_digest("GET", "/", a, 1, same), 0);
		assert_int_equal(jwt_request_digest("GET", "/", b, 1, other), 0);
		assert_memory_not_equal(same, other, 32);
	}

	assert_int_equal(jwt_sign_server(KEY, req, NULL, now, tok, sizeof(tok)), 0);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now, NULL, NULL), 0);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now + 59, NULL, NULL), 0);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now + 60, NULL, NULL),
			 -EACCES);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), other, now, NULL, NULL), -EACCES);
	assert_int_equal(jwt_verify_server("another key", tok, strlen(tok), req, now, NULL, NULL),
			 -EACCES);
	/* Signed more than the allowed skew in the future. */
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now - 61, NULL, NULL),
			 -EACCES);
	/* A server token is no fid token, and a fid token is no server token. */
	assert_int_equal(jwt_verify_fid(KEY, tok, strlen(tok), FID, now), -EACCES);
	assert_int_equal(jwt_sign_fid(KEY, FID, now + 10, fid_tok, sizeof(fid_tok)), 0);
	assert_int_equal(jwt_verify_server(KEY, fid_tok, strlen(fid_tok), req, now, NULL, NULL),
			 -EACCES);

	/* A body digest is handed back, and refused where none is expected. */
	memset(bh, 7, sizeof(bh));
	assert_int_equal(jwt_sign_server(KEY, req, bh, now, tok, sizeof(tok)), 0);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now, NULL, NULL), -EACCES);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now, &has_bh, got), 0);
	assert_true(has_bh);
	assert_memory_equal(got, bh, 32);
	memset(body, 0, sizeof(body));
	assert_int_equal(jwt_sign_server(KEY, req, NULL, now, tok, sizeof(tok)), 0);
	assert_int_equal(jwt_verify_server(KEY, tok, strlen(tok), req, now, &has_bh, got), 0);
	assert_false(has_bh);

	assert_int_equal(jwt_sign_server("", req, NULL, now, tok, sizeof(tok)), -EINVAL);
	assert_int_equal(jwt_sign_server(KEY, req, NULL, now, tok, 20), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_python_tokens), cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_delta_suffix),  cmocka_unit_test(test_wrong_fid),
	    cmocka_unit_test(test_expiry),	  cmocka_unit_test(test_bad_headers_and_claims),
	    cmocka_unit_test(test_tampered),	  cmocka_unit_test(test_truncated_and_extended),
	    cmocka_unit_test(test_garbage),	  cmocka_unit_test(test_sign_errors),
	    cmocka_unit_test(test_server_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
