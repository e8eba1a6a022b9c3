/*
 * auth: who may change the cluster, and which names and numbers it accepts at the edge.
 *
 * Server proof (with -jwtKey): every request one server of the cluster makes to
 * another (heartbeats, a master's /admin/ calls, replicated writes and deletes, the
 * master's admin routes) carries `Authorization: Bearer <server token>`, a short-lived
 * token signed with a key derived from -jwtKey and bound to the request's method, path
 * and query (cluster/jwt.h, "Server tokens"). Receivers check it from the request
 * headers alone, before any body byte is read.
 *
 * Input rules: collection names (auth_collection_valid), node addresses
 * (auth_node_address_valid) and the bounds of volume ids and file keys a heartbeat may
 * report (AUTH_MAX_VOLUME_ID, AUTH_MAX_FILE_KEY).
 *
 * Stateless and thread-safe.
 */
#ifndef KELP_AUTH_H
#define KELP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request;

/* "Authorization: Bearer " + a server token + NUL. */
#define AUTH_HEADER_LEN 600

/* Collection names: 1 to AUTH_MAX_COLLECTION_LEN of [A-Za-z0-9_.-], not starting
 * with '.'. "" (no collection) is valid too. */
#define AUTH_MAX_COLLECTION_LEN 64
bool auth_collection_valid(const char *name);

/* Volume ids a heartbeat may report: 1 .. AUTH_MAX_VOLUME_ID (2^31 - 1), so the
 * master's 32-bit volume id counter always has room to grow. File keys: below
 * AUTH_MAX_FILE_KEY (2^62, the sequence's limit; see sequence.h). */
#define AUTH_MAX_VOLUME_ID 0x7fffffffu
#define AUTH_MAX_FILE_KEY  (1ull << 62)

/*
 * A node's host (an IPv4 address or a host name: letters, digits, '-' and '.', at
 * most 253 bytes) and port (1-65535). resolve: a host name must also resolve
 * (getaddrinfo; may block on DNS). Returns true when acceptable; else why in err.
 */
bool auth_node_address_valid(const char *host, uint32_t port, bool resolve, char *err,
			     size_t err_cap);
/* A "host[:port]" public URL as above, without resolving. */
bool auth_public_url_valid(const char *url);

/*
 * Writes the header line "Authorization: Bearer <server token>" for a request with
 * method and path_and_query ("/admin/x?volume=3", as sent), and the body's digest
 * when body is not NULL. Returns 0 or -errno (-EINVAL: no key).
 */
int auth_server_header(const char *key, const char *method, const char *path_and_query,
		       const void *body, size_t body_len, char out[AUTH_HEADER_LEN]);

/*
 * True when req carries a valid server token for its method, path and query under
 * key. body_digest: where a body digest claim goes (then *has_body_digest says if
 * there was one); NULL refuses tokens that have one.
 */
bool auth_server_request(struct http_request *req, const char *key, bool *has_body_digest,
			 uint8_t body_digest[32]);

/* The bearer token of req (Authorization: Bearer, else ?jwt=), or NULL. */
const char *auth_request_token(struct http_request *req);

#endif
