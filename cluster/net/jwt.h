/*
 * jwt: HS256 JSON Web Tokens that authorise writing or deleting one file id, as
 * SeaweedFS does (weed/security/jwt.go; docs/seaweedfs-reference.md section 2.2).
 *
 * When a signing key is configured, the master's /dir/assign hands out a token for the
 * fid it assigned and the volume server accepts a POST/PUT/DELETE of that fid only
 * with it (`Authorization: Bearer <token>` or `?jwt=<token>`; extracting the token is
 * the caller's job). Tokens look like
 *   base64url({"alg":"HS256","typ":"JWT"}) "." base64url({"exp":N,"fid":"3,01637037d6"})
 *   "." base64url(HMAC-SHA256(key, first two parts))
 * base64url without padding (RFC 7515). A Go peer may order the claims differently
 * ({"fid":...,"exp":N}); that does not matter, because the signature covers the
 * bytes as sent and the verifier parses whatever JSON it gets.
 *
 * With no key configured, SeaweedFS neither issues nor checks tokens; callers do the
 * same and never call these functions with an empty key (both reject it).
 *
 * Stateless and thread-safe. Not a general JWT library: only HS256, only the claims
 * above (plus "nbf", which is honoured if present; other claims are ignored).
 */
#ifndef KELP_JWT_H
#define KELP_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Enough room for the token of any fid fid_format() produces (they are < 48 bytes). */
#define JWT_BUF_LEN 512

/* Tokens longer than this are rejected unread (a real one is about 170 bytes). */
#define JWT_MAX_TOKEN_LEN 4096

/*
 * Signs a token for fid (NUL-terminated, valid UTF-8) that expires at expires_unix
 * (seconds since the epoch; 0 = never, and the "exp" claim is left out).
 * Writes the NUL-terminated token into out (cap bytes; JWT_BUF_LEN is enough).
 * Returns 0, -EINVAL (NULL or empty key, NULL or non-UTF-8 fid, negative expiry),
 * -ENOSPC (out too small; out then holds "") or -ENOMEM.
 */
int jwt_sign_fid(const char *key, const char *fid, int64_t expires_unix, char *out, size_t cap);

/*
 * Checks that token (token_len bytes, need not be NUL-terminated) is an HS256 token
 * signed with key whose "fid" claim names fid, and that it has not expired at now
 * (seconds since the epoch: expired when now >= exp; not yet valid when now < nbf).
 * As SeaweedFS does, a "_<delta>" suffix on fid (batch assigns: "3,01637037d6_2") is
 * dropped before comparing, since the master signed the base fid.
 * Returns 0 when the write is allowed, else -EACCES, whatever the reason: bad or
 * missing signature, alg other than HS256 (including "none"), malformed token or
 * JSON, duplicate JSON keys, fid mismatch, expired, empty key. The signature is
 * compared in constant time and checked before the claims are parsed.
 */
int jwt_verify_fid(const char *key, const char *token, size_t token_len, const char *fid,
		   int64_t now);

/*
 * Server tokens: the proof that a request comes from a server of the cluster (a
 * heartbeat, a master's /admin/ call, a replicated write, an operator's admin call).
 * Claims {"aud":"kelp-server","bh":B,"exp":N,"iat":N,"req":R}, HS256, but the MAC key
 * is HMAC-SHA256(key, "kelp server token v1"), not the key itself: a client's fid
 * token can never verify as a server token, nor a server token as a fid token (it has
 * no "fid", and jwt_verify_fid refuses any token with an "aud").
 *
 * R binds the token to one request: base64url(SHA-256) of the method, the path and
 * the query parameters (decoded, sorted, "jwt" left out); see jwt_request_digest. B,
 * optional, is the base64url SHA-256 of the body (heartbeats; the receiver checks it
 * once the body is in). A token lives JWT_SERVER_TTL_S seconds; servers' clocks may
 * differ by up to JWT_SERVER_SKEW_S.
 */
#define JWT_SERVER_AUDIENCE "kelp-server"
#define JWT_SERVER_TTL_S    60
#define JWT_SERVER_SKEW_S   60
#define JWT_MAX_QUERY	    64 /* query parameters a server request may have */

struct jwt_query {
	const char *name;
	const char *value; /* NULL = "" */
};

/* The request digest R of method, path (no query) and n decoded query pairs.
 * Returns 0, or -E2BIG over JWT_MAX_QUERY pairs. */
int jwt_request_digest(const char *method, const char *path, const struct jwt_query *q, size_t n,
		       uint8_t out[32]);
/* The same from "path?query" as sent (URL-escaped; '+' is a space). 0, -E2BIG, -ENOMEM. */
int jwt_request_digest_url(const char *method, const char *path_and_query, uint8_t out[32]);

/* Signs a server token for a request digest (and a body digest, or NULL) at now.
 * Returns 0, -EINVAL (no key), -ENOSPC or -ENOMEM. JWT_BUF_LEN is enough room. */
int jwt_sign_server(const char *key, const uint8_t request_digest[32], const uint8_t *body_digest,
		    int64_t now, char *out, size_t cap);

/* Checks a server token against the request's digest at now. 0 or -EACCES. When the
 * token carries a body digest, *has_body_digest is set and the digest copied to
 * body_digest (both may be NULL: then a token with a body digest is refused). */
int jwt_verify_server(const char *key, const char *token, size_t token_len,
		      const uint8_t request_digest[32], int64_t now, bool *has_body_digest,
		      uint8_t body_digest[32]);

#endif
