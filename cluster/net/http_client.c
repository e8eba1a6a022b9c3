#include "cluster/net/http_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cluster/base/log.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static pthread_key_t handle_key; /* each thread's curl handle, cleaned up at its exit */

static void free_handle(void *h)
{
	curl_easy_cleanup(h);
}

static void global_init(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
	pthread_key_create(&handle_key, free_handle);
}

void http_client_global_init(void)
{
	pthread_once(&global_once, global_init);
}

static struct http_tls_config tls_config;
static char *tls_cert, *tls_key, *tls_ca;

static bool readable(const char *path)
{
	return access(path, R_OK) == 0;
}

int http_tls_configure(const struct http_tls_config *tls)
{
	bool cert = tls->cert && *tls->cert, key = tls->key && *tls->key, ca = tls->ca && *tls->ca;

	if (cert != key) {
		log_error("tls: -tls.cert and -tls.key go together");
		return -EINVAL;
	}
	if (ca && !cert) {
		log_error("tls: -tls.ca needs -tls.cert and -tls.key too");
		return -EINVAL;
	}
	if ((cert && !readable(tls->cert)) || (key && !readable(tls->key)) ||
	    (ca && !readable(tls->ca))) {
		log_error("tls: cannot read %s", cert && !readable(tls->cert) ? tls->cert
						 : key && !readable(tls->key) ? tls->key
									      : tls->ca);
		return -EINVAL;
	}
	free(tls_cert);
	free(tls_key);
	free(tls_ca);
	tls_cert = cert ? realpath(tls->cert, NULL) : NULL;
	tls_key = key ? realpath(tls->key, NULL) : NULL;
	tls_ca = ca ? realpath(tls->ca, NULL) : NULL;
	tls_config.cert = tls_cert;
	tls_config.key = tls_key;
	tls_config.ca = tls_ca;
	return 0;
}

const struct http_tls_config *http_tls(void)
{
	return &tls_config;
}

const char *http_scheme(void)
{
	return tls_config.cert ? "https" : "http";
}

void http_tls_apply_curl(void *curl)
{
	CURL *c = curl;

	if (!tls_config.cert)
		return;
	curl_easy_setopt(c, CURLOPT_SSLCERT, tls_config.cert);
	curl_easy_setopt(c, CURLOPT_SSLKEY, tls_config.key);
	if (tls_config.ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, tls_config.ca);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
}

struct sink {
	struct http_client_response *resp;
	size_t cap;
	size_t max;
};

static size_t write_body(char *data, size_t size, size_t n, void *cls)
{
	struct sink *s = cls;
	size_t len = size * n;

	if (s->resp->len + len + 1 > s->max) {
		s->resp->too_large = 1;
		return 0; /* aborts the transfer */
	}
	if (s->resp->len + len + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *p;

		while (cap < s->resp->len + len + 1)
			cap *= 2;
		p = realloc(s->resp->body, cap);
		if (!p)
			return 0;
		s->resp->body = p;
		s->cap = cap;
	}
	memcpy(s->resp->body + s->resp->len, data, len);
	s->resp->len += len;
	s->resp->body[s->resp->len] = '\0';
	return len;
}

static void copy_header_value(char *dst, size_t cap, const char *v, size_t len)
{
	while (len > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
		len--;
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, v, len);
	dst[len] = '\0';
}

static size_t read_header(char *data, size_t size, size_t n, void *cls)
{
	struct http_client_response *r = cls;
	size_t len = size * n;
	static const struct {
		const char *name;
		size_t off;
		size_t cap;
	} wanted[] = {
	    {"Location:", offsetof(struct http_client_response, location), 512},
	    {"Content-Type:", offsetof(struct http_client_response, content_type), 128},
	    {"Content-Disposition:", offsetof(struct http_client_response, content_disposition),
	     512},
	    {"ETag:", offsetof(struct http_client_response, etag), 64},
	    {"Last-Modified:", offsetof(struct http_client_response, last_modified), 64},
	    {"Content-Range:", offsetof(struct http_client_response, content_range), 128},
	    {"Authorization:", offsetof(struct http_client_response, authorization), 1200},
	    {"Retry-After:", offsetof(struct http_client_response, retry_after), 32},
	};

	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		size_t nl = strlen(wanted[i].name);

		if (len > nl && !strncasecmp(data, wanted[i].name, nl))
			copy_header_value((char *)r + wanted[i].off, wanted[i].cap, data + nl,
					  len - nl);
	}
	return len;
}

struct fd_source {
	int fd;
	uint64_t pos;
	uint64_t len;
};

static size_t read_fd(char *buf, size_t size, size_t n, void *cls)
{
	struct fd_source *src = cls;
	size_t want = size * n;
	ssize_t got;

	if (src->pos >= src->len)
		return 0;
	if (want > src->len - src->pos)
		want = (size_t)(src->len - src->pos);
	got = pread(src->fd, buf, want, (off_t)src->pos);
	if (got <= 0)
		return CURL_READFUNC_ABORT;
	src->pos += (uint64_t)got;
	return (size_t)got;
}

int http_client_do(const struct http_client_request *req, struct http_client_response *resp)
{
	struct curl_slist *headers = NULL;
	struct sink sink = {resp, 0, req->max_response ? req->max_response : (64u << 20)};
	struct fd_source src = {req->body_fd, 0, req->body_fd_len};
	char errbuf[CURL_ERROR_SIZE];
	long timeout = req->timeout_ms > 0 ? req->timeout_ms : 10000;
	bool has_body = req->body || (req->body_fd >= 0 && !req->body);
	CURLcode rc;
	CURL *c;

	memset(resp, 0, sizeof(*resp));
	http_client_global_init();
	c = pthread_getspecific(handle_key);
	if (!c) {
		c = curl_easy_init();
		if (c)
			pthread_setspecific(handle_key, c);
	}
	if (!c) {
		snprintf(resp->error, sizeof(resp->error), "cannot create a curl handle");
		return -EIO;
	}
	curl_easy_reset(c);
	errbuf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout < 2000 ? timeout : 2000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, resp);
	http_tls_apply_curl(c);
	headers = curl_slist_append(headers, "Expect:");
	for (const char *const *h = req->headers; h && *h; h++)
		headers = curl_slist_append(headers, *h);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	if (!strcmp(req->method, "GET")) {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	} else if (!strcmp(req->method, "HEAD")) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (has_body && req->body) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (has_body) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, read_fd);
		curl_easy_setopt(c, CURLOPT_READDATA, &src);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->body_fd_len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (!strcmp(req->method, "POST")) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
	} else {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
	}
	rc = curl_easy_perform(c);
	curl_slist_free_all(headers);
	if (rc != CURLE_OK) {
		snprintf(resp->error, sizeof(resp->error), "%s",
			 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		free(resp->body);
		resp->body = NULL;
		resp->len = 0;
		resp->status = 0;
		return -EIO;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	if (!resp->body) {
		resp->body = calloc(1, 1);
		if (!resp->body)
			return -ENOMEM;
	}
	return 0;
}

void http_client_response_release(struct http_client_response *resp)
{
	free(resp->body);
	resp->body = NULL;
	resp->len = 0;
}

char *http_client_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; s && *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
	return out;
}
