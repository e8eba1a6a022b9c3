/*
 * http: a small layer over libmicrohttpd for kelp's servers.
 *
 * One handler per server sees every request. Calling sequence per request:
 *   handler(req)              once the headers are in; the handler either replies at
 *                             once (http_reply_*) or sets req->on_body / on_complete
 *   req->on_body(req, ...)    for each piece of the request body, as it arrives
 *   req->on_complete(req)     when the body is complete; it must reply
 *   req->on_cleanup(req)      always, when the request is finished (free req->state)
 * A reply made before the body has been read makes the server answer at once and
 * close the connection after it (used for 413 and early errors).
 *
 * Replies are queued on libmicrohttpd's second call for a request, never the first,
 * which keeps connections alive (DESIGN.md, "known traps").
 *
 * Threads: libmicrohttpd runs an epoll thread pool, or a thread per connection
 * (http_server_options.thread_per_connection); the handler and callbacks of one request
 * always run on one thread, handlers of different requests concurrently.
 */
#ifndef KELP_HTTP_H
#define KELP_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;
struct MHD_Response;
struct http_server;

struct http_request {
	struct MHD_Connection *conn;
	const char *method; /* "GET", "POST", ... */
	const char *path;   /* without the query string */
	void *server_ctx;   /* from http_server_start */
	void *state;	    /* the handler's per-request state */
	int (*on_body)(struct http_request *req, const uint8_t *data, size_t len);
	void (*on_complete)(struct http_request *req);
	void (*on_cleanup)(struct http_request *req);
	/* private */
	struct MHD_Response *response;
	unsigned status;
	bool started;
	bool queued;
};

typedef void (*http_handler)(struct http_request *req);

struct http_server_options {
	const char *ip;	    /* bind address; NULL or "" = all */
	int port;	    /* 0 = any free port */
	int threads;	    /* 0 = 2 x CPUs, at least 4 */
	unsigned timeout_s; /* idle connection timeout; 0 = 120 */
	/* One thread per connection instead of the epoll pool: handlers may block on
	 * other servers (proxying, replication) without stalling unrelated clients. */
	bool thread_per_connection;
};

/* Starts listening. Returns 0 and *out, or -errno (e.g. -EADDRINUSE). */
int http_server_start(const struct http_server_options *opt, http_handler handler, void *ctx,
		      struct http_server **out);
int http_server_port(const struct http_server *s);
void http_server_stop(struct http_server *s);

/* Request accessors; strings are borrowed until the request ends, NULL when absent. */
const char *http_header(struct http_request *req, const char *name);
const char *http_query(struct http_request *req, const char *name);
bool http_query_bool(struct http_request *req, const char *name);
/* Rebuilds the URL-encoded query string (without '?') into buf; returns its length. */
size_t http_query_string(struct http_request *req, char *buf, size_t cap);
/* The peer's IP address as text. */
void http_peer_ip(struct http_request *req, char *buf, size_t cap);
/* True if the peer's IP (written to ip) is in list[0..n); an empty list allows all. */
bool http_peer_in_list(struct http_request *req, char *const *list, int n, char *ip, size_t cap);
/* -whiteList for writes: true if allowed, else replies 401 and returns false. */
bool http_check_white_list(struct http_request *req, char *const *list, int n);

/*
 * Replies. Each sets the one response of the request; the last call wins (earlier
 * responses are destroyed). Headers are added to the current response afterwards.
 */
void http_reply_json(struct http_request *req, unsigned status, json_t *body); /* steals body */
void http_reply_error(struct http_request *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void http_reply_empty(struct http_request *req, unsigned status);
/* mode: copy the bytes, or take ownership of a malloc'ed buffer (free it when sent). */
void http_reply_buffer(struct http_request *req, unsigned status, const void *data, size_t len,
		       bool take_ownership);
/* Sends len bytes of fd from offset (sendfile); takes ownership of fd. */
void http_reply_fd(struct http_request *req, unsigned status, int fd, uint64_t offset,
		   uint64_t len);
/* Streams a body produced by a callback (returns bytes written, 0 at end... see MHD). */
void http_reply_callback(struct http_request *req, unsigned status, uint64_t size,
			 ssize_t (*reader)(void *cls, uint64_t pos, char *buf, size_t max),
			 void *cls, void (*free_cls)(void *cls));
void http_add_header(struct http_request *req, const char *name, const char *value);
struct http_client_response;
/* Replies with another server's answer: its status, body (taken over: resp->body is
 * set to NULL) and the headers http_client captures (Content-Type, ETag, ...). */
void http_reply_relay(struct http_request *req, struct http_client_response *resp);
bool http_has_reply(const struct http_request *req);

#endif
