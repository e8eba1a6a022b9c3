/*
 * jwt: HS256 tokens for one fid. See jwt.h for the format and the rules.
 *
 * Verification order: split on the two dots, decode and check the header (alg must be
 * HS256), recompute the MAC over "header.payload" and compare it in constant time
 * with the decoded signature, and only then parse the claims, so that unauthenticated
 * bytes never reach more of the JSON parser than the small header. Every failure
 * is -EACCES: the volume server answers 401 whatever the reason, and telling an
 * attacker which check failed helps nobody.
 *
 * base64url is strict: no padding, no whitespace, and the unused low bits of the
 * last character must be zero, so every token has exactly one spelling.
 */
#include "cluster/jwt.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cluster/base/sha256.h"

/* base64url of {"alg":"HS256","typ":"JWT"}, the header golang-jwt writes too. */
static const char jwt_header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_encoded_len(size_t len)
{
	return len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

/* Writes b64url_encoded_len(len) characters (no NUL) to out. */
static void b64url_encode(const uint8_t *in, size_t len, char *out)
{
	size_t i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*out++ = b64url_alphabet[v >> 18];
		*out++ = b64url_alphabet[(v >> 12) & 63];
		*out++ = b64url_alphabet[(v >> 6) & 63];
		*out++ = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		*out++ = b64url_alphabet[v >> 18];
		*out++ = b64url_alphabet[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		*out++ = b64url_alphabet[v >> 18];
		*out++ = b64url_alphabet[(v >> 12) & 63];
		*out++ = b64url_alphabet[(v >> 6) & 63];
	}
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decodes unpadded base64url; out must hold len * 3 / 4 bytes. Returns the decoded
 * length, or -1 on a bad character, an impossible length (len % 4 == 1) or non-zero
 * unused bits in the last character.
 */
static long b64url_decode(const char *in, size_t len, uint8_t *out)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t n = 0;

	if (len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value(in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (uint8_t)(acc >> bits);
		}
	}
	if (acc & ((1u << bits) - 1))
		return -1;
	return (long)n;
}

int jwt_sign_fid(const char *key, const char *fid, int64_t expires_unix, char *out, size_t cap)
{
	uint8_t mac[SHA256_DIGEST_LEN];
	json_t *claims = NULL;
	char *payload = NULL;
	size_t payload_len, header_len = sizeof(jwt_header_b64) - 1, body_len, need;
	int ret;

	if (cap > 0)
		out[0] = '\0';
	if (!key || !*key || !fid || expires_unix < 0)
		return -EINVAL;

	claims = json_object();
	if (!claims)
		return -ENOMEM;
	if (expires_unix > 0 &&
	    json_object_set_new(claims, "exp", json_integer((json_int_t)expires_unix)) != 0) {
		ret = -ENOMEM;
		goto out_claims;
	}
	/* json_string() is NULL both on bad UTF-8 and on ENOMEM; bad input is likelier. */
	if (json_object_set_new(claims, "fid", json_string(fid)) != 0) {
		ret = -EINVAL;
		goto out_claims;
	}
	/* Sorted keys give {"exp":N,"fid":"..."} whatever jansson's hash order. */
	payload = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
	if (!payload) {
		ret = -ENOMEM;
		goto out_claims;
	}
	payload_len = strlen(payload);

	body_len = header_len + 1 + b64url_encoded_len(payload_len);
	need = body_len + 1 + b64url_encoded_len(SHA256_DIGEST_LEN) + 1;
	if (need > cap) {
		ret = -ENOSPC;
		goto out_payload;
	}
	memcpy(out, jwt_header_b64, header_len);
	out[header_len] = '.';
	b64url_encode((const uint8_t *)payload, payload_len, out + header_len + 1);
	hmac_sha256(key, strlen(key), out, body_len, mac);
	out[body_len] = '.';
	b64url_encode(mac, sizeof(mac), out + body_len + 1);
	out[need - 1] = '\0';
	ret = 0;

out_payload:
	free(payload);
out_claims:
	json_decref(claims);
	return ret;
}

/* Compares n bytes in time that depends only on n. */
static bool equal_constant_time(const uint8_t *a, const uint8_t *b, size_t n)
{
	volatile uint8_t diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* Decodes a base64url JSON object segment; NULL when anything is wrong. */
static json_t *decode_json_segment(const char *seg, size_t len)
{
	uint8_t buf[JWT_MAX_TOKEN_LEN * 3 / 4];
	json_error_t error;
	json_t *obj;
	long n = b64url_decode(seg, len, buf);

	if (n <= 0)
		return NULL;
	/* Duplicate keys are refused: "fid" twice must not mean whichever comes last. */
	obj = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &error);
	if (obj && !json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static bool header_is_hs256(const char *seg, size_t len)
{
	json_t *header = decode_json_segment(seg, len);
	json_t *alg;
	bool ok;

	if (!header)
		return false;
	alg = json_object_get(header, "alg");
	ok = json_is_string(alg) && json_string_length(alg) == 5 &&
	     memcmp(json_string_value(alg), "HS256", 5) == 0;
	json_decref(header);
	return ok;
}

/*
 * Checks an optional NumericDate claim: absent is fine; present must be a JSON number,
 * and *cmp is set to <0, 0 or >0 as now is before, at or after it. Integers compare
 * exactly; golang-jwt also accepts fractional seconds, so reals are compared as reals.
 */
static bool date_claim(json_t *claims, const char *name, int64_t now, bool *present, int *cmp)
{
	json_t *v = json_object_get(claims, name);

	*present = v != NULL;
	*cmp = 0;
	if (!v)
		return true;
	if (json_is_integer(v)) {
		json_int_t c = json_integer_value(v);

		*cmp = now < c ? -1 : now > c;
	} else if (json_is_real(v)) {
		double c = json_real_value(v);

		*cmp = (double)now < c ? -1 : (double)now > c;
	} else {
		return false;
	}
	return true;
}

static bool claims_allow(const char *seg, size_t len, const char *fid, int64_t now)
{
	json_t *claims = decode_json_segment(seg, len);
	json_t *claim_fid;
	const char *sep = strrchr(fid, '_');
	size_t fid_len = sep && sep != fid ? (size_t)(sep - fid) : strlen(fid);
	bool has_exp, has_nbf, ok = false;
	int exp_cmp, nbf_cmp;

	if (!claims)
		return false;
	claim_fid = json_object_get(claims, "fid");
	if (!json_is_string(claim_fid) || json_string_length(claim_fid) != fid_len ||
	    memcmp(json_string_value(claim_fid), fid, fid_len) != 0)
		goto out;
	if (!date_claim(claims, "exp", now, &has_exp, &exp_cmp) ||
	    !date_claim(claims, "nbf", now, &has_nbf, &nbf_cmp))
		goto out;
	/* Expired from the exp second on, as golang-jwt's now.Before(exp) has it. */
	if (has_exp && exp_cmp >= 0)
		goto out;
	if (has_nbf && nbf_cmp < 0)
		goto out;
	ok = true;
out:
	json_decref(claims);
	return ok;
}

int jwt_verify_fid(const char *key, const char *token, size_t token_len, const char *fid,
		   int64_t now)
{
	uint8_t mac[SHA256_DIGEST_LEN], given[JWT_MAX_TOKEN_LEN * 3 / 4];
	const char *dot1, *dot2, *sig;
	size_t sig_len;
	long n;

	if (!key || !*key || !token || !fid || token_len > JWT_MAX_TOKEN_LEN)
		return -EACCES;
	dot1 = memchr(token, '.', token_len);
	if (!dot1)
		return -EACCES;
	dot2 = memchr(dot1 + 1, '.', token_len - (size_t)(dot1 + 1 - token));
	if (!dot2)
		return -EACCES;
	sig = dot2 + 1;
	sig_len = token_len - (size_t)(sig - token);
	/* A third dot would make this a JWE or garbage; the signature alphabet has none. */

	if (!header_is_hs256(token, (size_t)(dot1 - token)))
		return -EACCES;

	n = b64url_decode(sig, sig_len, given);
	if (n != SHA256_DIGEST_LEN)
		return -EACCES;
	hmac_sha256(key, strlen(key), token, (size_t)(dot2 - token), mac);
	if (!equal_constant_time(mac, given, SHA256_DIGEST_LEN))
		return -EACCES;

	if (!claims_allow(dot1 + 1, (size_t)(dot2 - dot1 - 1), fid, now))
		return -EACCES;
	return 0;
}
