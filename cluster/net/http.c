#include "cluster/net/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/net/http_client.h"

struct http_server {
	struct MHD_Daemon *daemon;
	http_handler handler;
	void *ctx;
	int port;
	/* TLS (http_client.h's process-wide configuration): PEM texts, kept while the
	 * daemon runs; require_client_cert with -tls.ca */
	char *tls_cert, *tls_key, *tls_ca;
	bool require_client_cert;
};

/* Per connection: the client certificate's verdict, checked once (-tls.ca). */
enum peer_state { PEER_UNCHECKED, PEER_OK, PEER_REFUSED };

static bool client_cert_ok(struct MHD_Connection *conn);

static void reply_set(struct http_request *req, unsigned status, struct MHD_Response *r)
{
	if (req->response)
		MHD_destroy_response(req->response);
	req->response = r;
	req->status = status;
	if (!r)
		log_error("http: cannot create a response for %s %s", req->method, req->path);
}

bool http_has_reply(const struct http_request *req)
{
	return req->response != NULL;
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
	if (req->response)
		MHD_add_response_header(req->response, name, value);
}

void http_reply_buffer(struct http_request *req, unsigned status, const void *data, size_t len,
		       bool take_ownership)
{
	struct MHD_Response *r;

	if (take_ownership)
		r = MHD_create_response_from_buffer_with_free_callback(len, (void *)data, free);
	else
		r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
	reply_set(req, status, r);
}

void http_reply_relay(struct http_request *req, struct http_client_response *resp)
{
	const struct {
		const char *name;
		const char *value;
	} headers[] = {
	    {"Content-Type", resp->content_type},
	    {"Content-Disposition", resp->content_disposition},
	    {"ETag", resp->etag},
	    {"Last-Modified", resp->last_modified},
	    {"Content-Range", resp->content_range},
	    {"Authorization", resp->authorization},
	    {"Retry-After", resp->retry_after},
	    {"Location", resp->location},
	};

	http_reply_buffer(req, (unsigned)resp->status, resp->body, resp->len, true);
	resp->body = NULL;
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
		if (headers[i].value[0])
			http_add_header(req, headers[i].name, headers[i].value);
}

void http_reply_empty(struct http_request *req, unsigned status)
{
	reply_set(req, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

void http_reply_json(struct http_request *req, unsigned status, json_t *body)
{
	const char *pretty = http_query(req, "pretty");
	char *text = json_dumps(body, JSON_COMPACT | (pretty ? JSON_INDENT(2) : 0));
	size_t len;

	json_decref(body);
	if (!text) {
		http_reply_empty(req, 500);
		return;
	}
	len = strlen(text);
	http_reply_buffer(req, status, text, len, true);
	http_add_header(req, "Content-Type", "application/json");
	http_add_header(req, "X-Content-Type-Options", "nosniff");
}

void http_reply_error(struct http_request *req, unsigned status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	http_reply_json(req, status, json_pack("{s:s}", "error", msg));
}

void http_reply_fd(struct http_request *req, unsigned status, int fd, uint64_t offset, uint64_t len)
{
	reply_set(req, status, MHD_create_response_from_fd_at_offset64(len, fd, offset));
}

void http_reply_callback(struct http_request *req, unsigned status, uint64_t size,
			 ssize_t (*reader)(void *cls, uint64_t pos, char *buf, size_t max),
			 void *cls, void (*free_cls)(void *cls))
{
	reply_set(req, status,
		  MHD_create_response_from_callback(size, 64 * 1024, reader, cls, free_cls));
}

const char *http_header(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool http_query_bool(struct http_request *req, const char *name)
{
	const char *v = http_query(req, name);

	return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}

struct query_builder {
	char *buf;
	size_t cap, len;
};

static void append_escaped(struct query_builder *q, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; s && *s && q->len + 4 < q->cap; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~' || c == ',') {
			q->buf[q->len++] = (char)c;
		} else {
			q->buf[q->len++] = '%';
			q->buf[q->len++] = hex[c >> 4];
			q->buf[q->len++] = hex[c & 15];
		}
	}
	q->buf[q->len] = '\0';
}

static enum MHD_Result add_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	struct query_builder *q = cls;

	if (q->len > 0 && q->len + 1 < q->cap)
		q->buf[q->len++] = '&';
	append_escaped(q, key);
	if (value && q->len + 1 < q->cap) {
		q->buf[q->len++] = '=';
		append_escaped(q, value);
	}
	return MHD_YES;
}

size_t http_query_string(struct http_request *req, char *buf, size_t cap)
{
	struct query_builder q = {buf, cap, 0};

	if (cap)
		buf[0] = '\0';
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, add_query_arg, &q);
	return q.len;
}

void http_peer_ip(struct http_request *req, char *buf, size_t cap)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

	buf[0] = '\0';
	if (!ci || !ci->client_addr)
		return;
	if (ci->client_addr->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)ci->client_addr)->sin_addr, buf, cap);
	else if (ci->client_addr->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ci->client_addr)->sin6_addr, buf, cap);
}

bool http_peer_in_list(struct http_request *req, char *const *list, int n, char *ip, size_t cap)
{
	http_peer_ip(req, ip, cap);
	if (n == 0)
		return true;
	for (int i = 0; i < n; i++)
		if (!strcmp(list[i], ip))
			return true;
	return false;
}

bool http_check_white_list(struct http_request *req, char *const *list, int n)
{
	char ip[64];

	if (http_peer_in_list(req, list, n, ip, sizeof(ip)))
		return true;
	http_reply_error(req, 401, "%s is not in the white list", ip);
	return false;
}

static enum MHD_Result queue(struct http_request *req)
{
	enum MHD_Result ret;

	if (!req->response)
		http_reply_error(req, 500, "internal error: no reply for %s %s", req->method,
				 req->path);
	if (!req->response)
		return MHD_NO;
	ret = MHD_queue_response(req->conn, req->status, req->response);
	req->queued = true;
	return ret;
}

static bool request_has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
	const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");

	return (cl && strcmp(cl, "0")) || te;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
				      const char *method, const char *version,
				      const char *upload_data, size_t *upload_data_size,
				      void **con_cls)
{
	struct http_server *s = cls;
	struct http_request *req = *con_cls;

	if (!req) {
		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		req->conn = conn;
		req->method = method;
		req->path = url;
		req->server_ctx = s->ctx;
		*con_cls = req;
		if (s->require_client_cert && !client_cert_ok(conn))
			http_reply_error(
			    req, 403,
			    "a client certificate signed by the cluster's CA is required");
		else
			s->handler(req);
		/*
		 * Reply on the next call, which keeps the connection alive; but an early
		 * reply (an error) to a request with a body goes out now: libmicrohttpd
		 * refuses to queue while body data is pending, and the body is not read.
		 */
		if (req->response && request_has_body(conn))
			return queue(req);
		return MHD_YES;
	}
	if (req->queued) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		/*
		 * Once a reply is set mid-body (a body over the limit, a malformed part),
		 * the rest of the body is read and dropped: libmicrohttpd cannot queue a
		 * reply while body data is pending.
		 */
		if (!req->response && req->on_body)
			req->on_body(req, (const uint8_t *)upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (!req->response && req->on_complete)
		req->on_complete(req);
	return queue(req);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			      enum MHD_RequestTerminationCode toe)
{
	struct http_request *req = *con_cls;

	if (!req)
		return;
	if (req->on_cleanup)
		req->on_cleanup(req);
	if (req->response)
		MHD_destroy_response(req->response);
	free(req);
	*con_cls = NULL;
}

/*
 * With -tls.ca, the peer must have sent a certificate that verifies against it (chain,
 * validity dates). libmicrohttpd only asks for one, so the verdict is ours, once per
 * connection.
 */
static bool client_cert_ok(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	enum peer_state *state = ci ? ci->socket_context : NULL;
	gnutls_session_t session;
	unsigned int status = 1, n = 0;

	if (state && *state != PEER_UNCHECKED)
		return *state == PEER_OK;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	session = ci ? (gnutls_session_t)ci->tls_session : NULL;
	if (session && gnutls_certificate_type_get(session) == GNUTLS_CRT_X509 &&
	    gnutls_certificate_get_peers(session, &n) && n > 0 &&
	    gnutls_certificate_verify_peers2(session, &status) < 0)
		status = 1;
	if (state)
		*state = status == 0 && n > 0 ? PEER_OK : PEER_REFUSED;
	if (status != 0 || n == 0) {
		char ip[64] = "";
		const union MHD_ConnectionInfo *ai =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)ai->client_addr)->sin_addr, ip,
				  sizeof(ip));
		log_warn("http: refused %s: %s", ip,
			 n == 0 ? "no client certificate" : "its certificate does not verify");
		return false;
	}
	return true;
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			      enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		*socket_context = calloc(1, sizeof(enum peer_state));
	} else {
		free(*socket_context);
		*socket_context = NULL;
	}
}

/* Reads a whole PEM file; NULL (logged) when it cannot. */
static char *read_pem(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || len > (1 << 20) ||
	    fseek(f, 0, SEEK_SET) < 0 || !(buf = calloc(1, (size_t)len + 1)) ||
	    fread(buf, 1, (size_t)len, f) != (size_t)len) {
		log_error("http: cannot read %s", path);
		free(buf);
		buf = NULL;
	}
	if (f)
		fclose(f);
	return buf;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_debug("libmicrohttpd: %s", msg);
}

int http_server_start(const struct http_server_options *opt, http_handler handler, void *ctx,
		      struct http_server **out)
{
	struct MHD_OptionItem tls_ops[8];
	unsigned int tls_flag = 0;
	struct http_server *s = calloc(1, sizeof(*s));
	struct sockaddr_in addr;
	const union MHD_DaemonInfo *info;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned threads = opt->threads > 0 ? (unsigned)opt->threads : (unsigned)(cpus * 2);

	if (!s)
		return -ENOMEM;
	if (threads < 4)
		threads = 4;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)opt->port);
	if (opt->ip && *opt->ip && strcmp(opt->ip, "0.0.0.0")) {
		if (inet_pton(AF_INET, opt->ip, &addr.sin_addr) != 1) {
			free(s);
			return -EINVAL;
		}
	}
	s->handler = handler;
	s->ctx = ctx;
	{
		const struct http_tls_config *tls = http_tls();
		int n = 0;

		if (tls->cert) {
			s->tls_cert = read_pem(tls->cert);
			s->tls_key = read_pem(tls->key);
			s->tls_ca = tls->ca ? read_pem(tls->ca) : NULL;
			if (!s->tls_cert || !s->tls_key || (tls->ca && !s->tls_ca)) {
				free(s->tls_cert);
				free(s->tls_key);
				free(s->tls_ca);
				free(s);
				return -EINVAL;
			}
			tls_flag = MHD_USE_TLS;
			tls_ops[n++] =
			    (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
			tls_ops[n++] =
			    (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
			if (s->tls_ca) {
				s->require_client_cert = true;
				tls_ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST,
								       0, s->tls_ca};
				tls_ops[n++] =
				    (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION,
							    (intptr_t)notify_connection, NULL};
			}
		}
		tls_ops[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
	}
	if (opt->thread_per_connection)
		s->daemon = MHD_start_daemon(
		    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			MHD_USE_ERROR_LOG | MHD_USE_TURBO | tls_flag,
		    0, NULL, NULL, access_handler, s, MHD_OPTION_SOCK_ADDR,
		    (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
		    MHD_OPTION_CONNECTION_TIMEOUT, opt->timeout_s ? opt->timeout_s : 120u,
		    MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		    (size_t)(256 * 1024), MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
		    MHD_OPTION_ARRAY, tls_ops, MHD_OPTION_END);
	else
		s->daemon = MHD_start_daemon(
		    MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_TURBO | tls_flag, 0,
		    NULL, NULL, access_handler, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
		    MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED,
		    request_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
		    opt->timeout_s ? opt->timeout_s : 120u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
		    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
		    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_ARRAY, tls_ops,
		    MHD_OPTION_END);
	if (!s->daemon) {
		free(s->tls_cert);
		free(s->tls_key);
		free(s->tls_ca);
		free(s);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : opt->port;
	*out = s;
	return 0;
}

int http_server_port(const struct http_server *s)
{
	return s->port;
}

void http_server_stop(struct http_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->daemon);
	free(s->tls_cert);
	free(s->tls_key);
	free(s->tls_ca);
	free(s);
}
