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
 * last character must be zero, so every token has exactly one spelling. It stays our
 * own 60 lines: OpenSSL's EVP_DecodeBlock knows only the standard alphabet, wants
 * padding and skips whitespace, so using it would take a translation pass and the
 * same strictness checks again. The MAC, SHA-256 and the constant-time comparison
 * come from libcrypto (cluster/base/sha256.h).
 */
#include "cluster/net/jwt.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cluster/base/sha256.h"
#include "cluster/base/util.h"

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

/*
 * Writes header.base64url(claims JSON, sorted keys).base64url(HMAC) into out with
 * mac_key. Returns 0, -ENOSPC (out then holds "") or -ENOMEM.
 */
static int sign_claims(const void *mac_key, size_t mac_key_len, json_t *claims, char *out,
		       size_t cap)
{
	uint8_t mac[SHA256_DIGEST_LEN];
	char *payload;
	size_t payload_len, header_len = sizeof(jwt_header_b64) - 1, body_len, need;

	/* Sorted keys give {"exp":N,"fid":"..."} whatever jansson's hash order. */
	payload = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
	if (!payload)
		return -ENOMEM;
	payload_len = strlen(payload);
	body_len = header_len + 1 + b64url_encoded_len(payload_len);
	need = body_len + 1 + b64url_encoded_len(SHA256_DIGEST_LEN) + 1;
	if (need > cap) {
		free(payload);
		return -ENOSPC;
	}
	memcpy(out, jwt_header_b64, header_len);
	out[header_len] = '.';
	b64url_encode((const uint8_t *)payload, payload_len, out + header_len + 1);
	hmac_sha256(mac_key, mac_key_len, out, body_len, mac);
	out[body_len] = '.';
	b64url_encode(mac, sizeof(mac), out + body_len + 1);
	out[need - 1] = '\0';
	free(payload);
	return 0;
}

int jwt_sign_fid(const char *key, const char *fid, int64_t expires_unix, char *out, size_t cap)
{
	json_t *claims;
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
	ret = sign_claims(key, strlen(key), claims, out, cap);
out_claims:
	json_decref(claims);
	return ret;
}

/* Compares n bytes in time that depends only on n (OpenSSL's CRYPTO_memcmp). */
static bool equal_constant_time(const uint8_t *a, const uint8_t *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
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

static bool claims_allow(json_t *claims, const char *fid, int64_t now)
{
	json_t *claim_fid;
	const char *sep = strrchr(fid, '_');
	size_t fid_len = sep && sep != fid ? (size_t)(sep - fid) : strlen(fid);
	bool has_exp, has_nbf;
	int exp_cmp, nbf_cmp;

	/* A server token has no "fid": it never passes here. */
	claim_fid = json_object_get(claims, "fid");
	if (!json_is_string(claim_fid) || json_string_length(claim_fid) != fid_len ||
	    memcmp(json_string_value(claim_fid), fid, fid_len) != 0)
		return false;
	/* Nor does a fid token carry "aud": one that does is not ours. */
	if (json_object_get(claims, "aud"))
		return false;
	if (!date_claim(claims, "exp", now, &has_exp, &exp_cmp) ||
	    !date_claim(claims, "nbf", now, &has_nbf, &nbf_cmp))
		return false;
	/* Expired from the exp second on, as golang-jwt's now.Before(exp) has it. */
	if (has_exp && exp_cmp >= 0)
		return false;
	if (has_nbf && nbf_cmp < 0)
		return false;
	return true;
}

/*
 * Checks the structure, the header (HS256) and the MAC of a token under mac_key, and
 * only then parses its claims. Returns the claims object, or NULL.
 */
static json_t *verified_claims(const void *mac_key, size_t mac_key_len, const char *token,
			       size_t token_len)
{
	uint8_t mac[SHA256_DIGEST_LEN], given[JWT_MAX_TOKEN_LEN * 3 / 4];
	const char *dot1, *dot2, *sig;
	size_t sig_len;
	long n;

	if (!token || token_len > JWT_MAX_TOKEN_LEN)
		return NULL;
	dot1 = memchr(token, '.', token_len);
	if (!dot1)
		return NULL;
	dot2 = memchr(dot1 + 1, '.', token_len - (size_t)(dot1 + 1 - token));
	if (!dot2)
		return NULL;
	sig = dot2 + 1;
	sig_len = token_len - (size_t)(sig - token);
	/* A third dot would make this a JWE or garbage; the signature alphabet has none. */

	if (!header_is_hs256(token, (size_t)(dot1 - token)))
		return NULL;

	n = b64url_decode(sig, sig_len, given);
	if (n != SHA256_DIGEST_LEN)
		return NULL;
	hmac_sha256(mac_key, mac_key_len, token, (size_t)(dot2 - token), mac);
	if (!equal_constant_time(mac, given, SHA256_DIGEST_LEN))
		return NULL;
	return decode_json_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1));
}

int jwt_verify_fid(const char *key, const char *token, size_t token_len, const char *fid,
		   int64_t now)
{
	json_t *claims;
	bool ok;

	if (!key || !*key || !fid)
		return -EACCES;
	claims = verified_claims(key, strlen(key), token, token_len);
	if (!claims)
		return -EACCES;
	ok = claims_allow(claims, fid, now);
	json_decref(claims);
	return ok ? 0 : -EACCES;
}

/* ---------------------------------------------------------------- server tokens */

/* The MAC key of server tokens: HMAC-SHA256(key, label). */
static void server_mac_key(const char *key, uint8_t out[SHA256_DIGEST_LEN])
{
	static const char label[] = "kelp server token v1";

	hmac_sha256(key, strlen(key), label, sizeof(label) - 1, out);
}

/* URL-decodes n bytes of s into out (n + 1 bytes); '+' is a space, as in a form. */
static void url_decode_n(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '+') {
			out[o++] = ' ';
		} else if (s[i] == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 &&
			   hex_digit(s[i + 2]) >= 0) {
			out[o++] = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
}

static int query_cmp(const void *a, const void *b)
{
	const struct jwt_query *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

int jwt_request_digest(const char *method, const char *path, const struct jwt_query *q, size_t n,
		       uint8_t out[SHA256_DIGEST_LEN])
{
	struct jwt_query sorted[JWT_MAX_QUERY];
	struct sha256_ctx ctx;
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		if (!strcmp(q[i].name, "jwt"))
			continue;
		if (m == JWT_MAX_QUERY)
			return -E2BIG;
		sorted[m].name = q[i].name;
		sorted[m++].value = q[i].value ? q[i].value : "";
	}
	qsort(sorted, m, sizeof(sorted[0]), query_cmp);
	sha256_init(&ctx);
	sha256_update(&ctx, method, strlen(method));
	sha256_update(&ctx, "\n", 1);
	sha256_update(&ctx, path, strlen(path));
	sha256_update(&ctx, "\n", 1);
	for (size_t i = 0; i < m; i++) {
		/* Lengths first: no name or value can shift bytes into its neighbour. */
		char lens[48];
		int l = snprintf(lens, sizeof(lens), "%zu:%zu:", strlen(sorted[i].name),
				 strlen(sorted[i].value));

		sha256_update(&ctx, lens, (size_t)l);
		sha256_update(&ctx, sorted[i].name, strlen(sorted[i].name));
		sha256_update(&ctx, sorted[i].value, strlen(sorted[i].value));
	}
	sha256_final(&ctx, out);
	return 0;
}

int jwt_request_digest_url(const char *method, const char *path_and_query,
			   uint8_t out[SHA256_DIGEST_LEN])
{
	struct jwt_query q[JWT_MAX_QUERY];
	const char *qs = strchr(path_and_query, '?');
	size_t path_len = qs ? (size_t)(qs - path_and_query) : strlen(path_and_query);
	char *path, *buf = NULL;
	size_t n = 0;
	int ret;

	path = strndup(path_and_query, path_len);
	if (!path)
		return -ENOMEM;
	if (qs) {
		size_t len = strlen(qs + 1);
		char *p;

		/* Decoded names and values never grow: two NULs a pair at most. */
		buf = malloc(len * 2 + 2);
		if (!buf) {
			free(path);
			return -ENOMEM;
		}
		p = buf;
		for (const char *s = qs + 1; *s;) {
			size_t seg = strcspn(s, "&"), nl;
			const char *eq = memchr(s, '=', seg);

			if (seg > 0) {
				if (n == JWT_MAX_QUERY) {
					free(buf);
					free(path);
					return -E2BIG;
				}
				nl = eq ? (size_t)(eq - s) : seg;
				url_decode_n(s, nl, p);
				q[n].name = p;
				p += strlen(p) + 1;
				if (eq)
					url_decode_n(eq + 1, seg - nl - 1, p);
				else
					*p = '\0';
				q[n++].value = p;
				p += strlen(p) + 1;
			}
			s += seg;
			if (*s == '&')
				s++;
		}
	}
	ret = jwt_request_digest(method, path, q, n, out);
	free(buf);
	free(path);
	return ret;
}

int jwt_sign_server(const char *key, const uint8_t request_digest[SHA256_DIGEST_LEN],
		    const uint8_t *body_digest, int64_t now, char *out, size_t cap)
{
	uint8_t mac_key[SHA256_DIGEST_LEN];
	char req_b64[48], body_b64[48];
	json_t *claims;
	int ret;

	if (cap > 0)
		out[0] = '\0';
	if (!key || !*key || now < 0)
		return -EINVAL;
	b64url_encode(request_digest, SHA256_DIGEST_LEN, req_b64);
	req_b64[b64url_encoded_len(SHA256_DIGEST_LEN)] = '\0';
	claims =
	    json_pack("{s:s,s:I,s:I,s:s}", "aud", JWT_SERVER_AUDIENCE, "exp",
		      (json_int_t)(now + JWT_SERVER_TTL_S), "iat", (json_int_t)now, "req", req_b64);
	if (!claims)
		return -ENOMEM;
	if (body_digest) {
		b64url_encode(body_digest, SHA256_DIGEST_LEN, body_b64);
		body_b64[b64url_encoded_len(SHA256_DIGEST_LEN)] = '\0';
		if (json_object_set_new(claims, "bh", json_string(body_b64)) != 0) {
			json_decref(claims);
			return -ENOMEM;
		}
	}
	server_mac_key(key, mac_key);
	ret = sign_claims(mac_key, sizeof(mac_key), claims, out, cap);
	explicit_bzero(mac_key, sizeof(mac_key));
	json_decref(claims);
	return ret;
}

/* A claim that must be the base64url of a 32-byte digest. */
static bool digest_claim(json_t *claims, const char *name, uint8_t out[SHA256_DIGEST_LEN])
{
	json_t *v = json_object_get(claims, name);
	uint8_t buf[48];

	if (!json_is_string(v) || json_string_length(v) != b64url_encoded_len(SHA256_DIGEST_LEN))
		return false;
	if (b64url_decode(json_string_value(v), json_string_length(v), buf) != SHA256_DIGEST_LEN)
		return false;
	memcpy(out, buf, SHA256_DIGEST_LEN);
	return true;
}

int jwt_verify_server(const char *key, const char *token, size_t token_len,
		      const uint8_t request_digest[SHA256_DIGEST_LEN], int64_t now,
		      bool *has_body_digest, uint8_t body_digest[SHA256_DIGEST_LEN])
{
	uint8_t mac_key[SHA256_DIGEST_LEN], req[SHA256_DIGEST_LEN];
	json_t *claims, *aud, *exp, *iat;
	bool ok = false;

	if (has_body_digest)
		*has_body_digest = false;
	if (!key || !*key || !token)
		return -EACCES;
	server_mac_key(key, mac_key);
	claims = verified_claims(mac_key, sizeof(mac_key), token, token_len);
	explicit_bzero(mac_key, sizeof(mac_key));
	if (!claims)
		return -EACCES;
	aud = json_object_get(claims, "aud");
	exp = json_object_get(claims, "exp");
	iat = json_object_get(claims, "iat");
	if (!json_is_string(aud) || strcmp(json_string_value(aud), JWT_SERVER_AUDIENCE))
		goto out;
	/* exp is required and bounded: a token lives JWT_SERVER_TTL_S, clocks may differ
	 * by up to JWT_SERVER_SKEW_S. */
	if (!json_is_integer(exp) || !json_is_integer(iat) || json_integer_value(exp) <= now ||
	    json_integer_value(exp) - json_integer_value(iat) > JWT_SERVER_TTL_S ||
	    json_integer_value(iat) > now + JWT_SERVER_SKEW_S)
		goto out;
	if (json_object_get(claims, "fid") || !digest_claim(claims, "req", req) ||
	    !equal_constant_time(req, request_digest, SHA256_DIGEST_LEN))
		goto out;
	if (json_object_get(claims, "bh")) {
		if (!has_body_digest || !body_digest || !digest_claim(claims, "bh", body_digest))
			goto out;
		*has_body_digest = true;
	}
	ok = true;
out:
	json_decref(claims);
	return ok ? 0 : -EACCES;
}
