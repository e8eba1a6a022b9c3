/*
 * http_client: blocking HTTP calls between kelp servers (libcurl).
 *
 * Each thread gets its own curl easy handle (thread-local), reused across calls so
 * connections stay alive; handles are never shared between threads (DESIGN.md traps).
 * curl_global_init must have been called once before any thread uses this module
 * (http_client_global_init does it).
 *
 * Every call is bounded: connect timeout 2 s (or less), total timeout timeout_ms.
 */
#ifndef KELP_HTTP_CLIENT_H
#define KELP_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct http_client_request {
	const char *method;	    /* "GET", "POST", "PUT", "DELETE" */
	const char *url;	    /* "http://host:port/path?query" */
	const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
	const void *body;	    /* request body from memory ... */
	size_t body_len;
	int body_fd; /* ... or from a file (body == NULL, body_fd >= 0) */
	uint64_t body_fd_len;
	long timeout_ms;
	size_t max_response; /* 0 = 64 MiB */
};

struct http_client_response {
	long status; /* 0 when no HTTP answer arrived */
	char *body;  /* NUL-terminated, caller frees */
	size_t len;
	char error[256];    /* curl's message when status == 0 */
	char location[512]; /* Location header, if any */
	char content_type[128];
	char content_disposition[512];
	char etag[64];
	char last_modified[64];
	char content_range[128];
	char authorization[1200];
	char retry_after[32];
	int too_large; /* the body passed max_response: the transfer was cut (-EIO) */
};

void http_client_global_init(void);

/*
 * TLS, process-wide (every server and client of a process shares one certificate):
 * PEM files of this process's certificate and key, and of the CA that signed every
 * certificate of the cluster. Call once, before any thread makes a request or a server
 * starts. With cert and key, servers speak HTTPS only, and every URL kelp builds is
 * https://; with ca, servers require a client certificate signed by it and clients
 * verify servers against it (host names or IP addresses in the certificates). NULL or
 * "" fields are unset. Returns 0, or -EINVAL (cert without key or the reverse, or a
 * file that cannot be read) with the reason logged.
 */
struct http_tls_config {
	const char *cert;
	const char *key;
	const char *ca;
};
int http_tls_configure(const struct http_tls_config *tls);
/* The configuration in force (fields NULL when unset). */
const struct http_tls_config *http_tls(void);
/* "https" when TLS is configured, else "http". */
const char *http_scheme(void);
/* Sets the TLS options of a curl easy handle (client certificate, CA); no-op without TLS. */
void http_tls_apply_curl(void *curl);

/* Performs the request. Returns 0 when an HTTP answer arrived (any status), -EIO else. */
int http_client_do(const struct http_client_request *req, struct http_client_response *resp);
void http_client_response_release(struct http_client_response *resp);

/* URL-escapes s into out (cap bytes); returns out. */
char *http_client_escape(const char *s, char *out, size_t cap);

#endif
