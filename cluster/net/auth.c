#include "cluster/net/auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cluster/base/sha256.h"
#include "cluster/base/util.h"
#include "cluster/net/http.h"
#include "cluster/net/jwt.h"

bool auth_collection_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	if (name[0] == '.')
		return false;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return n <= AUTH_MAX_COLLECTION_LEN;
}

static bool host_name_chars(const char *host, size_t len)
{
	if (len == 0 || len > 253 || host[0] == '-' || host[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = host[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

bool auth_node_address_valid(const char *host, uint32_t port, bool resolve, char *err,
			     size_t err_cap)
{
	struct in_addr a4;
	struct addrinfo hints, *res = NULL;
	int r;

	if (port == 0 || port > 65535) {
		snprintf(err, err_cap, "port %u is not 1-65535", port);
		return false;
	}
	if (inet_pton(AF_INET, host, &a4) == 1)
		return true;
	if (!host_name_chars(host, strlen(host))) {
		snprintf(err, err_cap,
			 "address \"%.80s\" is neither an IPv4 address nor a host name", host);
		return false;
	}
	if (!resolve)
		return true;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	r = getaddrinfo(host, NULL, &hints, &res);
	if (res)
		freeaddrinfo(res);
	if (r != 0) {
		snprintf(err, err_cap, "host name \"%s\" does not resolve: %s", host,
			 gai_strerror(r));
		return false;
	}
	return true;
}

bool auth_public_url_valid(const char *url)
{
	const char *colon = strrchr(url, ':');
	size_t host_len = colon ? (size_t)(colon - url) : strlen(url);
	char host[256], err[8];

	if (host_len >= sizeof(host))
		return false;
	memcpy(host, url, host_len);
	host[host_len] = '\0';
	if (colon) {
		char *end;
		unsigned long port = strtoul(colon + 1, &end, 10);

		if (!colon[1] || *end || colon[1] == '+' || colon[1] == '-')
			return false;
		return auth_node_address_valid(host, (uint32_t)(port > 65535 ? 0 : port), false,
					       err, sizeof(err));
	}
	return auth_node_address_valid(host, 80, false, err, sizeof(err));
}

int auth_server_header(const char *key, const char *method, const char *path_and_query,
		       const void *body, size_t body_len, char out[AUTH_HEADER_LEN])
{
	static const char prefix[] = "Authorization: Bearer ";
	uint8_t req[SHA256_DIGEST_LEN], bh[SHA256_DIGEST_LEN];
	int ret;

	out[0] = '\0';
	if (!key || !*key)
		return -EINVAL;
	ret = jwt_request_digest_url(method, path_and_query, req);
	if (ret < 0)
		return ret;
	if (body)
		sha256(body, body_len, bh);
	memcpy(out, prefix, sizeof(prefix) - 1);
	return jwt_sign_server(key, req, body ? bh : NULL, (int64_t)(now_ns() / 1000000000ull),
			       out + sizeof(prefix) - 1, AUTH_HEADER_LEN - (sizeof(prefix) - 1));
}

struct query_pairs {
	struct jwt_query q[JWT_MAX_QUERY + 1];
	size_t n;
};

static enum MHD_Result add_pair(void *cls, enum MHD_ValueKind kind, const char *key,
				const char *value)
{
	struct query_pairs *p = cls;

	if (p->n < JWT_MAX_QUERY + 1) {
		p->q[p->n].name = key;
		p->q[p->n++].value = value;
	}
	return MHD_YES;
}

const char *auth_request_token(struct http_request *req)
{
	const char *auth = http_header(req, "Authorization");

	if (auth && !strncasecmp(auth, "Bearer ", 7))
		return auth + 7;
	return http_query(req, "jwt");
}

bool auth_server_request(struct http_request *req, const char *key, bool *has_body_digest,
			 uint8_t body_digest[32])
{
	struct query_pairs p = {.n = 0};
	uint8_t digest[SHA256_DIGEST_LEN];
	const char *token = auth_request_token(req);

	if (has_body_digest)
		*has_body_digest = false;
	if (!token || !key || !*key)
		return false;
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, add_pair, &p);
	if (jwt_request_digest(req->method, req->path, p.q, p.n, digest) < 0)
		return false;
	return jwt_verify_server(key, token, strlen(token), digest,
				 (int64_t)(now_ns() / 1000000000ull), has_body_digest,
				 body_digest) == 0;
}
