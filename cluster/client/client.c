/*
 * client: see client.h for the API and its threading rules.
 *
 * Design: every HTTP exchange is one struct transfer run by transfer_perform() on the
 * client's only curl easy handle. curl_easy_reset() before each exchange clears the
 * options but keeps the connection cache, so connections to masters and volume
 * servers are reused (keep-alive) for the life of the client.
 *
 * A transfer's response body goes to a sink chosen by the caller: a growing buffer,
 * a file descriptor, or a fixed caller buffer (ranges). Bodies of non-2xx replies go
 * to a small error buffer instead, so an error text never lands in the caller's data.
 * When a Range request is answered with a plain 200 (a server that ignores Range, or
 * a gzip needle passed through), the sink skips the bytes before the range itself.
 *
 * Retries and deadlines: each public call computes one deadline (timeout_ms) and
 * every inner request gets the time left as its curl timeout, so retries, backoff
 * and leader discovery together never exceed it.
 */
#include "cluster/client/client.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/base/util.h"
#include "cluster/net/auth.h"
#include "cluster/net/http_client.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_TIMEOUT_MS	   30000
#define DEFAULT_STALL_TIMEOUT_MS   30000
#define DEFAULT_UPLOAD_RETRIES	   3
#define DEFAULT_LOOKUP_TTL_MS	   (10 * 60 * 1000)
#define DEFAULT_MASTER_PORT	   "9333"
#define BACKOFF_FIRST_MS	   50
#define BACKOFF_MAX_MS		   1000
#define MASTER_REPLY_LIMIT	   (64u << 20) /* /dir/status of a big cluster */
#define ERROR_BODY_MAX		   1024
#define LOCATION_CACHE_MAX	   65536 /* entries; beyond it the cache is cleared */
#define MAX_CONNECTIONS		   64	 /* kept alive per client */

struct kelp_client {
	CURL *curl;
	char **masters;
	int n_masters;
	int master_index;	       /* the master to ask next */
	char leader[KELP_URL_MAX];     /* "" when unknown */
	char bad_leader[KELP_URL_MAX]; /* a reported leader we could not reach, */
	uint64_t bad_leader_until_ms;  /* bypassed until then */
	int connect_timeout_ms;
	int timeout_ms;
	int stall_timeout_ms;
	int upload_retries;
	bool use_public_url;
	uint64_t (*clock_ns)(void *ctx);
	void *clock_ctx;
	struct kelp_location_cache cache;
	uint64_t rng;	   /* xorshift state: which replica to read first */
	bool read_tokens;  /* a volume server asked for a read token once: always get one */
	bool write_tokens; /* a delete without a token was refused once: always get one */
	char err[512];
	char curl_err[CURL_ERROR_SIZE];
};

/* ---------------------------------------------------------------- small helpers */

static void set_error(struct kelp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct kelp_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

/* Copies src (NULL = "") into dst of cap bytes, cut to fit. */
static void copy_string(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;

	if (cap == 0)
		return;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memmove(dst, src, n);
	dst[n] = '\0';
}

static uint64_t default_clock(void *ctx)
{
	(void)ctx;
	return monotonic_ns();
}

static uint64_t now_ms(void)
{
	return monotonic_ns() / 1000000u;
}

static uint64_t deadline_after(const struct kelp_client *c)
{
	return now_ms() + (uint64_t)c->timeout_ms;
}

static int64_t ms_left(uint64_t deadline)
{
	return (int64_t)deadline - (int64_t)now_ms();
}

/* Sleeps the backoff of the given attempt; false when it would pass the deadline. */
static bool backoff(int attempt, uint64_t deadline)
{
	int64_t ms = BACKOFF_FIRST_MS;
	struct timespec ts;

	for (int i = 0; i < attempt && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	if (ms_left(deadline) <= ms)
		return false;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return true;
}

static uint64_t next_random(struct kelp_client *c)
{
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return c->rng;
}

int kelp_errno_from_status(long status)
{
	if (status >= 200 && status < 400)
		return 0;
	switch (status) {
	case 400:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 406:
		return -ENOSPC;
	case 408:
		return -ETIMEDOUT;
	case 409:
		return -EEXIST;
	case 413:
		return -EFBIG;
	case 416:
		return -ERANGE;
	case 429:
	case 503:
		return -EAGAIN;
	case 507:
		return -ENOSPC;
	}
	return status >= 500 ? -EIO : -EINVAL;
}

/* Errors worth another replica, another master or a re-assign. */
static bool is_retryable(int err)
{
	return err == -ECONNREFUSED || err == -ECONNRESET || err == -ETIMEDOUT ||
	       err == -EHOSTUNREACH || err == -EIO || err == -EAGAIN;
}

/* ---------------------------------------------------------------- master list */

void kelp_free_master_list(char **list)
{
	if (!list)
		return;
	for (char **p = list; *p; p++)
		free(*p);
	free(list);
}

void kelp_normalize_server_address(char *addr)
{
	char *colon = strrchr(addr, ':'), *dot;

	if (!colon || strchr(colon, ']'))
		return;
	dot = strchr(colon, '.');
	if (dot && dot > colon + 1)
		*dot = '\0';
}

/* Checks one "host[:port[.grpc]]" item and returns a normalised malloc'ed copy. */
static char *master_address(const char *s, size_t len)
{
	char buf[KELP_URL_MAX], *colon, *end;
	long port;

	if (len >= 7 && !strncasecmp(s, "http://", 7)) {
		s += 7;
		len -= 7;
	} else if (len >= 8 && !strncasecmp(s, "https://", 8)) {
		s += 8;
		len -= 8;
	}
	while (len > 0 && s[len - 1] == '/')
		len--;
	if (len == 0 || len + sizeof(":" DEFAULT_MASTER_PORT) > sizeof(buf))
		return NULL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (isspace((unsigned char)buf[i]) || buf[i] == '/' || buf[i] == ',' ||
		    buf[i] == '?' || buf[i] == '#' || buf[i] == '@')
			return NULL;
	kelp_normalize_server_address(buf);
	colon = strrchr(buf, ':');
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');

		if (!close || close == buf + 1)
			return NULL;
		colon = close[1] == ':' ? close + 1 : NULL;
		if (!colon && close[1])
			return NULL;
	}
	if (!colon) {
		strcat(buf, ":" DEFAULT_MASTER_PORT);
		return strdup(buf);
	}
	if (colon == buf)
		return NULL;
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port <= 0 || port > 65535)
		return NULL;
	return strdup(buf);
}

int kelp_parse_master_list(const char *s, char ***out)
{
	char **list = NULL;
	int n = 0, cap = 0;

	*out = NULL;
	if (!s)
		return -EINVAL;
	for (const char *p = s; *p;) {
		const char *start, *stop;
		char *addr;
		bool dup = false;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		start = p;
		while (*p && *p != ',')
			p++;
		stop = p;
		while (stop > start && isspace((unsigned char)stop[-1]))
			stop--;
		addr = master_address(start, (size_t)(stop - start));
		if (!addr) {
			kelp_free_master_list(list);
			return -EINVAL;
		}
		for (int i = 0; i < n; i++)
			dup |= !strcmp(list[i], addr);
		if (dup) {
			free(addr);
			continue;
		}
		if (n + 2 > cap) {
			int ncap = cap ? cap * 2 : 4;
			char **grown = realloc(list, (size_t)ncap * sizeof(*list));

			if (!grown) {
				free(addr);
				kelp_free_master_list(list);
				return -ENOMEM;
			}
			list = grown;
			cap = ncap;
		}
		list[n++] = addr;
		list[n] = NULL;
	}
	if (n == 0)
		return -EINVAL;
	*out = list;
	return n;
}

/* ---------------------------------------------------------------- reply parsers */

/* Loads an object; copies its "error" text to err. Returns NULL (with *rc) on failure. */
static json_t *load_reply(const char *body, size_t len, char *err, size_t err_cap, int *rc)
{
	json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *e;

	if (err && err_cap)
		err[0] = '\0';
	if (!json_is_object(root)) {
		json_decref(root);
		*rc = -EPROTO;
		return NULL;
	}
	e = json_object_get(root, "error");
	if (json_is_string(e) && json_string_length(e) > 0) {
		if (err && err_cap)
			copy_string(err, err_cap, json_string_value(e));
		json_decref(root);
		*rc = -EIO;
		return NULL;
	}
	*rc = 0;
	return root;
}

/* Copies string field key into out; false when absent, not a string or too long. */
static bool get_string(json_t *obj, const char *key, char *out, size_t cap)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v) || json_string_length(v) >= cap)
		return false;
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return true;
}

int kelp_parse_assign_reply(const char *body, size_t len, struct kelp_assign_result *out, char *err,
			    size_t err_cap)
{
	json_t *root, *count;
	struct fid fid;
	int rc;

	root = load_reply(body, len, err, err_cap, &rc);
	if (!root)
		return rc;
	out->public_url[0] = '\0';
	if (!get_string(root, "fid", out->fid, sizeof(out->fid)) ||
	    fid_parse(out->fid, strlen(out->fid), &fid) < 0 ||
	    !get_string(root, "url", out->url, sizeof(out->url)) || !out->url[0]) {
		json_decref(root);
		if (err && err_cap)
			copy_string(err, err_cap, "assign reply without a valid fid and url");
		return -EPROTO;
	}
	if (!get_string(root, "publicUrl", out->public_url, sizeof(out->public_url)) ||
	    !out->public_url[0])
		copy_string(out->public_url, sizeof(out->public_url), out->url);
	count = json_object_get(root, "count");
	out->count = json_is_integer(count) && json_integer_value(count) > 0
			 ? (unsigned)json_integer_value(count)
			 : 1;
	json_decref(root);
	return 0;
}

int kelp_parse_lookup_reply(const char *body, size_t len, struct kelp_locations *out, char *err,
			    size_t err_cap)
{
	json_t *root, *locs, *loc;
	size_t i;
	int rc;

	out->n = 0;
	root = load_reply(body, len, err, err_cap, &rc);
	if (!root)
		return rc;
	locs = json_object_get(root, "locations");
	if (!json_is_array(locs)) {
		json_decref(root);
		if (err && err_cap)
			copy_string(err, err_cap, "lookup reply without locations");
		return -EPROTO;
	}
	json_array_foreach(locs, i, loc)
	{
		struct kelp_location *l = &out->loc[out->n];

		if (out->n == KELP_MAX_LOCATIONS)
			break;
		if (!json_is_object(loc) || !get_string(loc, "url", l->url, sizeof(l->url)) ||
		    !l->url[0])
			continue;
		if (!get_string(loc, "publicUrl", l->public_url, sizeof(l->public_url)) ||
		    !l->public_url[0])
			copy_string(l->public_url, sizeof(l->public_url), l->url);
		if (!get_string(loc, "dataCenter", l->data_center, sizeof(l->data_center)))
			l->data_center[0] = '\0';
		out->n++;
	}
	json_decref(root);
	if (out->n == 0) {
		if (err && err_cap)
			copy_string(err, err_cap, "lookup reply with no usable location");
		return -ENOENT;
	}
	return 0;
}

int kelp_parse_cluster_status(const char *body, size_t len, bool *is_leader, char *leader,
			      size_t leader_cap)
{
	json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *v;

	*is_leader = false;
	leader[0] = '\0';
	if (!json_is_object(root)) {
		json_decref(root);
		return -EPROTO;
	}
	v = json_object_get(root, "IsLeader");
	*is_leader = json_is_true(v);
	if (get_string(root, "Leader", leader, leader_cap))
		kelp_normalize_server_address(leader);
	else
		leader[0] = '\0';
	json_decref(root);
	return 0;
}

bool kelp_parse_content_disposition(const char *value, char *out, size_t cap)
{
	const char *p = NULL, *s, *slash;
	size_t n, o = 0;

	if (cap == 0)
		return false;
	out[0] = '\0';
	if (!value)
		return false;
	/* filename= first, and only as a parameter (not the tail of another name). */
	for (s = value; (s = strcasestr(s, "filename=")); s++)
		if (s == value || s[-1] == ';' || s[-1] == ' ' || s[-1] == '\t') {
			p = s + 9;
			break;
		}
	if (!p)
		for (s = value; (s = strcasestr(s, "name=")); s++)
			if (s == value || s[-1] == ';' || s[-1] == ' ' || s[-1] == '\t') {
				p = s + 5;
				break;
			}
	if (!p)
		return false;
	if (*p == '"') {
		p++;
		n = strcspn(p, "\"");
	} else {
		n = strcspn(p, "; \t");
	}
	/* Keep the last path element only, whichever separator was used. */
	for (size_t i = 0; i < n; i++)
		if (p[i] == '/' || p[i] == '\\') {
			slash = p + i + 1;
			n -= (size_t)(slash - p);
			p = slash;
			i = (size_t)-1;
		}
	for (size_t i = 0; i < n && o + 1 < cap; i++) {
		unsigned char ch = (unsigned char)p[i];

		out[o++] = ch < 0x20 || ch == 0x7f ? '_' : (char)ch;
	}
	out[o] = '\0';
	if (!strcmp(out, ".") || !strcmp(out, "..") || o == 0) {
		out[0] = '\0';
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------- location cache */

struct location_cache_entry {
	uint32_t vid;
	bool used;
	int n;
	uint64_t expires_ns;
	struct kelp_location *locs; /* n entries, malloc'ed */
};

static size_t cache_hash(uint32_t vid, size_t cap)
{
	return (size_t)((vid * 2654435761u) & (cap - 1));
}

void kelp_location_cache_init(struct kelp_location_cache *lc, uint64_t ttl_ns)
{
	memset(lc, 0, sizeof(*lc));
	lc->ttl_ns = ttl_ns;
}

void kelp_location_cache_release(struct kelp_location_cache *lc)
{
	for (size_t i = 0; i < lc->cap; i++)
		free(lc->slots[i].locs);
	free(lc->slots);
	lc->slots = NULL;
	lc->cap = lc->used = 0;
}

static struct location_cache_entry *cache_find(struct kelp_location_cache *lc, uint32_t vid)
{
	if (lc->cap == 0)
		return NULL;
	for (size_t i = cache_hash(vid, lc->cap);; i = (i + 1) & (lc->cap - 1)) {
		if (!lc->slots[i].used)
			return NULL;
		if (lc->slots[i].vid == vid)
			return &lc->slots[i];
	}
}

bool kelp_location_cache_get(struct kelp_location_cache *lc, uint32_t vid, uint64_t now_ns,
			     struct kelp_locations *out)
{
	struct location_cache_entry *e = cache_find(lc, vid);

	if (!e || now_ns >= e->expires_ns)
		return false;
	out->n = e->n;
	memcpy(out->loc, e->locs, (size_t)e->n * sizeof(*e->locs));
	return true;
}

size_t kelp_location_cache_size(const struct kelp_location_cache *lc)
{
	return lc->used;
}

/* Removes slot i and shifts later members of its probe run back (no tombstones). */
static void cache_remove_slot(struct kelp_location_cache *lc, size_t i)
{
	size_t mask = lc->cap - 1, j = i;

	free(lc->slots[i].locs);
	memset(&lc->slots[i], 0, sizeof(lc->slots[i]));
	lc->used--;
	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (!lc->slots[j].used)
			return;
		home = cache_hash(lc->slots[j].vid, lc->cap);
		/* Move j into the hole at i unless its home lies cyclically in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			lc->slots[i] = lc->slots[j];
			memset(&lc->slots[j], 0, sizeof(lc->slots[j]));
			i = j;
		}
	}
}

void kelp_location_cache_drop(struct kelp_location_cache *lc, uint32_t vid)
{
	struct location_cache_entry *e = cache_find(lc, vid);

	if (e)
		cache_remove_slot(lc, (size_t)(e - lc->slots));
}

static int cache_grow(struct kelp_location_cache *lc)
{
	size_t ncap = lc->cap ? lc->cap * 2 : 16;
	struct location_cache_entry *old = lc->slots, *slots;
	size_t ocap = lc->cap;

	slots = calloc(ncap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	lc->slots = slots;
	lc->cap = ncap;
	for (size_t i = 0; i < ocap; i++) {
		size_t j;

		if (!old[i].used)
			continue;
		for (j = cache_hash(old[i].vid, ncap); slots[j].used; j = (j + 1) & (ncap - 1))
			;
		slots[j] = old[i];
	}
	free(old);
	return 0;
}

int kelp_location_cache_put(struct kelp_location_cache *lc, uint32_t vid, uint64_t now_ns,
			    const struct kelp_locations *locs)
{
	struct location_cache_entry *e = cache_find(lc, vid);
	struct kelp_location *copy;
	int n = locs->n < 0 ? 0 : locs->n > KELP_MAX_LOCATIONS ? KELP_MAX_LOCATIONS : locs->n;

	copy = malloc((size_t)(n ? n : 1) * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, locs->loc, (size_t)n * sizeof(*copy));
	if (!e) {
		if (lc->used >= LOCATION_CACHE_MAX) {
			/* Drop what has expired; if nothing had, start over. */
			for (size_t i = 0; i < lc->cap;)
				if (lc->slots[i].used && now_ns >= lc->slots[i].expires_ns)
					cache_remove_slot(lc, i);
				else
					i++;
			if (lc->used >= LOCATION_CACHE_MAX)
				kelp_location_cache_release(lc);
		}
		if ((lc->used + 1) * 2 > lc->cap && cache_grow(lc) < 0) {
			free(copy);
			return -ENOMEM;
		}
		for (size_t i = cache_hash(vid, lc->cap);; i = (i + 1) & (lc->cap - 1))
			if (!lc->slots[i].used) {
				e = &lc->slots[i];
				break;
			}
		e->used = true;
		e->vid = vid;
		lc->used++;
	}
	free(e->locs);
	e->locs = copy;
	e->n = n;
	e->expires_ns = now_ns + lc->ttl_ns;
	return 0;
}

/* ---------------------------------------------------------------- transfers */

enum sink_kind { SINK_BUFFER, SINK_FD, SINK_RANGE, SINK_NONE };

struct transfer {
	/* request */
	const char *method; /* "GET", "PUT", "DELETE" */
	char url[KELP_URL_MAX + 2 * FID_MAX_LEN + 1024];
	struct curl_slist *headers;
	bool has_expect; /* the empty Expect: is in headers */
	bool follow_redirects;
	bool accept_gzip; /* let curl ask for and decode gzip (needles stored gzipped) */
	bool upload;
	const uint8_t *src_mem; /* upload source: memory, or src_fd with pread */
	int src_fd;
	uint64_t src_offset, src_size, src_pos;
	int src_err;
	uint64_t range_start; /* the Range we asked for starts here (0 = none) */
	/* sink */
	enum sink_kind sink;
	uint8_t *buf; /* SINK_BUFFER (malloc'ed, grows) or SINK_RANGE (caller's) */
	size_t len, cap, limit;
	int fd;
	uint64_t skip; /* body bytes still to drop (a 200 to a Range request) */
	uint64_t fd_written;
	bool sink_full; /* SINK_RANGE got all it wanted: the abort is not an error */
	int sink_err;
	char errbody[ERROR_BODY_MAX];
	size_t errlen;
	/* response */
	long status;
	bool body_started;
	char auth[KELP_AUTH_MAX];
	char etag[KELP_ETAG_MAX];
	char name[KELP_NAME_MAX];
	char mime[KELP_MIME_MAX];
	uint64_t content_length;
	bool has_content_length;
	bool encoded; /* Content-Encoding: the length on the wire is not the blob's */
	uint64_t range_total;
	bool has_range_total;
};

static void transfer_init(struct transfer *t, const char *method)
{
	memset(t, 0, sizeof(*t));
	t->method = method;
	t->src_fd = -1;
	t->fd = -1;
	t->sink = SINK_NONE;
}

/* Clears what the previous attempt received; keeps the request and the sink target. */
static void transfer_reset_response(struct transfer *t)
{
	t->status = 0;
	t->body_started = false;
	t->auth[0] = t->etag[0] = t->name[0] = t->mime[0] = '\0';
	t->has_content_length = t->has_range_total = t->encoded = false;
	t->content_length = t->range_total = 0;
	t->errlen = 0;
	t->errbody[0] = '\0';
	t->sink_full = false;
	t->sink_err = 0;
	t->src_pos = 0;
	t->src_err = 0;
	if (t->sink == SINK_BUFFER || t->sink == SINK_RANGE)
		t->len = 0;
}

static void transfer_clear_headers(struct transfer *t)
{
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	t->has_expect = false;
}

static void transfer_release(struct transfer *t)
{
	transfer_clear_headers(t);
	if (t->sink == SINK_BUFFER)
		free(t->buf);
	t->buf = NULL;
}

static int add_header(struct transfer *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int add_header(struct transfer *t, const char *fmt, ...)
{
	char line[KELP_AUTH_MAX + 512];
	struct curl_slist *l;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	l = curl_slist_append(t->headers, line);
	if (!l)
		return -ENOMEM;
	t->headers = l;
	return 0;
}

/* "http://" (or https://, http_client.h) + server + path; the server may already carry a
 * scheme. */
static void set_url(struct transfer *t, const char *server, const char *path)
{
	bool has_scheme = !strncasecmp(server, "http://", 7) || !strncasecmp(server, "https://", 8);

	snprintf(t->url, sizeof(t->url), "%s%s%s%s", has_scheme ? "" : http_scheme(),
		 has_scheme ? "" : "://", server, path);
}

/* Trims value (header continuation) into dst without the trailing CR/LF and blanks. */
static void header_value(const char *v, size_t n, char *dst, size_t cap)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static bool header_is(const char *line, size_t n, const char *name, const char **value,
		      size_t *vlen)
{
	size_t len = strlen(name);

	if (n <= len || line[len] != ':' || strncasecmp(line, name, len))
		return false;
	*value = line + len + 1;
	*vlen = n - len - 1;
	return true;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb;
	const char *v;
	size_t vlen;
	char tmp[KELP_AUTH_MAX];

	if (n > 5 && !strncmp(data, "HTTP/", 5)) {
		/* A new response (after a redirect or a 100): forget the previous one. */
		const char *sp = memchr(data, ' ', n);

		t->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		t->auth[0] = t->etag[0] = t->name[0] = t->mime[0] = '\0';
		t->has_content_length = t->has_range_total = t->encoded = false;
		return n;
	}
	if (header_is(data, n, "Authorization", &v, &vlen)) {
		header_value(v, vlen, t->auth, sizeof(t->auth));
	} else if (header_is(data, n, "ETag", &v, &vlen)) {
		header_value(v, vlen, tmp, sizeof(tmp));
		copy_string(t->etag, sizeof(t->etag), tmp + (tmp[0] == '"'));
		if (t->etag[0] && t->etag[strlen(t->etag) - 1] == '"')
			t->etag[strlen(t->etag) - 1] = '\0';
	} else if (header_is(data, n, "Content-Disposition", &v, &vlen)) {
		header_value(v, vlen, tmp, sizeof(tmp));
		kelp_parse_content_disposition(tmp, t->name, sizeof(t->name));
	} else if (header_is(data, n, "Content-Type", &v, &vlen)) {
		header_value(v, vlen, t->mime, sizeof(t->mime));
	} else if (header_is(data, n, "Content-Length", &v, &vlen)) {
		header_value(v, vlen, tmp, sizeof(tmp));
		t->content_length = strtoull(tmp, NULL, 10);
		t->has_content_length = true;
	} else if (header_is(data, n, "Content-Encoding", &v, &vlen)) {
		header_value(v, vlen, tmp, sizeof(tmp));
		t->encoded = tmp[0] && strcasecmp(tmp, "identity");
	} else if (header_is(data, n, "Content-Range", &v, &vlen)) {
		char *slash;

		header_value(v, vlen, tmp, sizeof(tmp));
		slash = strchr(tmp, '/');
		if (slash && slash[1] != '*') {
			t->range_total = strtoull(slash + 1, NULL, 10);
			t->has_range_total = true;
		}
	}
	return n;
}

static size_t sink_error_body(struct transfer *t, const char *data, size_t n)
{
	size_t room = sizeof(t->errbody) - 1 - t->errlen;
	size_t take = n < room ? n : room;

	memcpy(t->errbody + t->errlen, data, take);
	t->errlen += take;
	t->errbody[t->errlen] = '\0';
	return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb, total = n;

	if (!t->body_started) {
		t->body_started = true;
		/* A Range request answered with the whole body: drop what precedes it. */
		t->skip = t->status == 200 ? t->range_start : 0;
	}
	if (t->status < 200 || t->status >= 300)
		return sink_error_body(t, data, n);
	if (t->skip) {
		size_t drop = t->skip < n ? (size_t)t->skip : n;

		t->skip -= drop;
		data += drop;
		n -= drop;
	}
	if (n == 0)
		return total;
	switch (t->sink) {
	case SINK_NONE:
		break;
	case SINK_BUFFER:
		if (t->len + n + 1 > t->cap) {
			size_t ncap = t->cap ? t->cap : 4096;
			uint8_t *p;

			if (t->has_content_length && !t->encoded && t->content_length + 1 > ncap &&
			    t->content_length < t->limit)
				ncap = (size_t)t->content_length + 1;
			while (ncap < t->len + n + 1)
				ncap *= 2;
			if (t->len + n > t->limit) {
				t->sink_err = -EFBIG;
				return 0;
			}
			p = realloc(t->buf, ncap);
			if (!p) {
				t->sink_err = -ENOMEM;
				return 0;
			}
			t->buf = p;
			t->cap = ncap;
		}
		memcpy(t->buf + t->len, data, n);
		t->len += n;
		t->buf[t->len] = '\0';
		break;
	case SINK_RANGE: {
		size_t take = t->cap - t->len < n ? t->cap - t->len : n;

		memcpy(t->buf + t->len, data, take);
		t->len += take;
		if (t->len == t->cap) {
			t->sink_full = true;
			return take == n && t->status == 206 ? total : 0;
		}
		break;
	}
	case SINK_FD:
		while (n > 0) {
			ssize_t w = write(t->fd, data, n);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				t->sink_err = -errno;
				return 0;
			}
			data += w;
			n -= (size_t)w;
			t->fd_written += (uint64_t)w;
		}
		break;
	}
	return total;
}

static size_t on_read(char *buffer, size_t size, size_t nitems, void *userdata)
{
	struct transfer *t = userdata;
	size_t want = size * nitems;
	uint64_t left = t->src_size - t->src_pos;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	if (t->src_mem) {
		memcpy(buffer, t->src_mem + t->src_pos, want);
	} else {
		ssize_t r;

		do
			r = pread(t->src_fd, buffer, want, (off_t)(t->src_offset + t->src_pos));
		while (r < 0 && errno == EINTR);
		if (r < 0 || r == 0) {
			t->src_err = r < 0 ? -errno : -ENODATA; /* the file shrank */
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)r;
	}
	t->src_pos += want;
	return want;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
	struct transfer *t = userdata;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > t->src_size)
		return CURL_SEEKFUNC_FAIL;
	t->src_pos = (uint64_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int errno_from_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/*
 * Runs one exchange. Returns 0 when a response arrived (t->status says which), a
 * transport errno, or *local_error set with a local failure (writing the sink,
 * reading the source) that no retry elsewhere can cure.
 */
static int transfer_perform(struct kelp_client *c, struct transfer *t, uint64_t deadline,
			    bool *local_error)
{
	CURL *h = c->curl;
	int64_t left = ms_left(deadline);
	long stall_s = (c->stall_timeout_ms + 999) / 1000;
	CURLcode rc;

	*local_error = false;
	transfer_reset_response(t);
	if (left <= 0) {
		snprintf(c->curl_err, sizeof(c->curl_err), "timed out");
		return -ETIMEDOUT;
	}
	if (!t->has_expect) {
		if (add_header(t, "Expect:") < 0)
			return -ENOMEM;
		t->has_expect = true;
	}
	curl_easy_reset(h);
	c->curl_err[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, t->url);
	http_tls_apply_curl(h); /* -tls.*: the process-wide certificate and CA */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)(c->connect_timeout_ms < left ? c->connect_timeout_ms : left));
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall_s > 0 ? stall_s : 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_MAXCONNECTS, (long)MAX_CONNECTIONS);
	/* Cluster traffic never goes through an http_proxy from the environment. */
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "kelp-client/" KELP_VERSION);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
	if (t->accept_gzip)
		curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");
	if (t->follow_redirects) {
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
	}
	if (t->upload) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L); /* PUT */
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)t->src_size);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, t);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, t);
	} else if (strcmp(t->method, "GET")) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, t->method);
	}
	rc = curl_easy_perform(h);
	if (rc == CURLE_WRITE_ERROR && t->sink_full)
		return 0;
	if (t->sink_err || t->src_err) {
		*local_error = true;
		snprintf(c->curl_err, sizeof(c->curl_err), "%s",
			 strerror(-(t->sink_err ? t->sink_err : t->src_err)));
		return t->sink_err ? t->sink_err : t->src_err;
	}
	if (rc != CURLE_OK && !c->curl_err[0])
		snprintf(c->curl_err, sizeof(c->curl_err), "%s", curl_easy_strerror(rc));
	return errno_from_curl(rc);
}

/* The "error" of a JSON error body, else the body itself (trimmed), else "". */
static const char *error_text(struct transfer *t, char *buf, size_t cap)
{
	json_t *root = t->errlen ? json_loadb(t->errbody, t->errlen, 0, NULL) : NULL;
	json_t *e = json_object_get(root, "error");

	if (json_is_string(e))
		copy_string(buf, cap, json_string_value(e));
	else
		header_value(t->errbody, t->errlen, buf, cap);
	json_decref(root);
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return buf;
}

/* ---------------------------------------------------------------- masters */

/*
 * Asks master m for /cluster/status and sets c->leader when it names one. Returns 0,
 * -EHOSTUNREACH (m did not answer), -EAGAIN (m knows no leader) or -ENOTSUP (m has
 * no usable /cluster/status: the caller may send its request to m directly).
 */
static int ask_cluster_status(struct kelp_client *c, const char *what, const char *m,
			      uint64_t deadline)
{
	struct transfer t;
	bool local, is_leader;
	char leader[KELP_URL_MAX];
	int rc;

	transfer_init(&t, "GET");
	set_url(&t, m, "/cluster/status");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	rc = transfer_perform(c, &t, deadline, &local);
	if (rc < 0) {
		set_error(c, "%s: master %s: %s", what, m, c->curl_err);
		transfer_release(&t);
		return -EHOSTUNREACH;
	}
	if (t.status >= 500) {
		set_error(c, "%s: master %s: /cluster/status answered HTTP %ld", what, m, t.status);
		transfer_release(&t);
		return -EAGAIN;
	}
	if (t.status != 200 || kelp_parse_cluster_status((char *)t.buf, t.len, &is_leader, leader,
							 sizeof(leader)) < 0) {
		transfer_release(&t);
		return -ENOTSUP;
	}
	transfer_release(&t);
	if (is_leader)
		copy_string(leader, sizeof(leader), m);
	if (!leader[0]) {
		set_error(c, "%s: master %s knows no leader (election in progress?)", what, m);
		return -EAGAIN;
	}
	copy_string(c->leader, sizeof(c->leader), leader);
	return 0;
}

static void next_master(struct kelp_client *c)
{
	c->master_index = (c->master_index + 1) % c->n_masters;
}

/* A leader that did not answer is bypassed (through the other masters) for a while. */
static bool leader_usable(const struct kelp_client *c)
{
	return c->leader[0] &&
	       (strcmp(c->leader, c->bad_leader) || now_ms() >= c->bad_leader_until_ms);
}

/*
 * Sends GET path to the leader (leader=true) or any master, retrying as client.h says
 * until a master gives a non-5xx answer, which is returned in t (any status). The
 * caller prepared t's sink; the URL is set here. from receives the master used.
 */
static int master_request(struct kelp_client *c, const char *what, const char *path, bool leader,
			  uint64_t deadline, struct transfer *t, char *from)
{
	int last = -EHOSTUNREACH, attempt = 0;
	bool answered;
	char msg[256], answer[sizeof(c->err)] = ""; /* what the last master that answered said */

	for (;; attempt++) {
		const char *target = NULL;
		bool local;
		int rc;

		if (leader && !c->leader[0]) {
			rc = ask_cluster_status(c, what, c->masters[c->master_index], deadline);
			if (rc == -ENOTSUP)
				target = c->masters[c->master_index]; /* let it proxy */
			else if (rc == -EAGAIN)
				copy_string(answer, sizeof(answer), c->err);
			if (rc == -EHOSTUNREACH || rc == -EAGAIN) {
				last = rc;
				next_master(c);
				goto retry;
			}
		}
		if (!target)
			target = leader_usable(c) ? c->leader : c->masters[c->master_index];
		set_url(t, target, path);
		rc = transfer_perform(c, t, deadline, &local);
		if (rc < 0 && local)
			return rc;
		if (rc == 0 && t->status < 500) {
			if (from)
				copy_string(from, KELP_URL_MAX, target);
			if (!strcmp(target, c->bad_leader))
				c->bad_leader[0] = '\0';
			return 0;
		}
		if (rc < 0) {
			set_error(c, "%s: master %s: %s", what, target, c->curl_err);
			if (!strcmp(target, c->leader)) {
				copy_string(c->bad_leader, sizeof(c->bad_leader), target);
				c->bad_leader_until_ms = now_ms() + 10000;
			}
		} else {
			last = kelp_errno_from_status(t->status);
			set_error(c, "%s: master %s: HTTP %ld: %s", what, target, t->status,
				  error_text(t, msg, sizeof(msg)));
			copy_string(answer, sizeof(answer), c->err);
		}
		c->leader[0] = '\0';
		next_master(c);
	retry:
		if (!backoff(attempt, deadline)) {
			size_t l;

			/* "No leader" from a live master says more than a dead master's refusal. */
			answered = answer[0] != '\0';
			if (answered)
				copy_string(c->err, sizeof(c->err), answer);
			l = strlen(c->err);
			snprintf(c->err + l, sizeof(c->err) - l, " (gave up after %d ms%s)",
				 c->timeout_ms, answered ? "" : ", no master reachable");
			return answered ? (last == -EHOSTUNREACH ? -EAGAIN : last) : -EHOSTUNREACH;
		}
	}
}

/* Appends "&name=<escaped value>" when value is set. */
static void add_param(struct kelp_client *c, char *buf, size_t cap, const char *name,
		      const char *value)
{
	char *esc;
	size_t l = strlen(buf);

	if (!value || !*value)
		return;
	esc = curl_easy_escape(c->curl, value, 0);
	snprintf(buf + l, cap - l, "%s%s=%s", strchr(buf, '?') ? "&" : "?", name, esc ? esc : "");
	curl_free(esc);
}

static int assign_until(struct kelp_client *c, const struct kelp_assign_request *req,
			struct kelp_assign_result *out, uint64_t deadline)
{
	char path[1024], count[16], msg[256], from[KELP_URL_MAX];
	struct transfer t;
	int rc, attempt = 0;

	snprintf(path, sizeof(path), "/dir/assign");
	snprintf(count, sizeof(count), "%u", req && req->count ? req->count : 1);
	add_param(c, path, sizeof(path), "count", count);
	if (req) {
		add_param(c, path, sizeof(path), "collection", req->collection);
		add_param(c, path, sizeof(path), "replication", req->replication);
		add_param(c, path, sizeof(path), "ttl", req->ttl);
		add_param(c, path, sizeof(path), "dataCenter", req->data_center);
		add_param(c, path, sizeof(path), "rack", req->rack);
	}
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	for (;; attempt++) {
		rc = master_request(c, "assign", path, true, deadline, &t, from);
		if (rc < 0)
			break;
		if (t.status == 200) {
			rc = kelp_parse_assign_reply((char *)t.buf, t.len, out, msg, sizeof(msg));
			if (rc == 0) {
				copy_string(out->auth, sizeof(out->auth), t.auth);
				break;
			}
			set_error(c, "assign: master %s: %s", from,
				  rc == -EPROTO ? "unreadable reply" : msg);
			break;
		}
		rc = kelp_errno_from_status(t.status);
		set_error(c, "assign: master %s: HTTP %ld: %s", from, t.status,
			  error_text(&t, msg, sizeof(msg)));
		/* 408: the master's own pick loop timed out; 429: busy. Worth a retry. */
		if ((t.status != 408 && t.status != 429) || !backoff(attempt, deadline))
			break;
	}
	transfer_release(&t);
	return rc;
}

int kelp_client_assign(struct kelp_client *c, const struct kelp_assign_request *req,
		       struct kelp_assign_result *out)
{
	c->err[0] = '\0';
	return assign_until(c, req, out, deadline_after(c));
}

int kelp_client_master_get(struct kelp_client *c, const char *path_and_query, bool leader,
			   long *status, char **body, size_t *len, char *from)
{
	struct transfer t;
	int rc;

	c->err[0] = '\0';
	*body = NULL;
	*len = 0;
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = MASTER_REPLY_LIMIT;
	rc = master_request(c, path_and_query, path_and_query, leader, deadline_after(c), &t, from);
	if (rc == 0) {
		*status = t.status;
		if (!t.buf && t.errlen) {
			*body = strdup(t.errbody);
			*len = t.errlen;
		} else {
			*body = t.buf ? (char *)t.buf : strdup("");
			*len = t.len;
			t.buf = NULL;
		}
		if (!*body)
			rc = -ENOMEM;
	}
	transfer_release(&t);
	return rc;
}

int kelp_client_get(struct kelp_client *c, const char *server, const char *path_and_query,
		    long *status, char **body, size_t *len)
{
	return kelp_client_admin_get(c, server, path_and_query, NULL, status, body, len);
}

int kelp_client_admin_get(struct kelp_client *c, const char *server, const char *path_and_query,
			  const char *jwt_key, long *status, char **body, size_t *len)
{
	struct transfer t;
	bool local;
	int rc;

	c->err[0] = '\0';
	*body = NULL;
	*len = 0;
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = MASTER_REPLY_LIMIT;
	set_url(&t, server, path_and_query);
	if (jwt_key && *jwt_key) {
		char auth[AUTH_HEADER_LEN];

		/* auth_server_header gives the whole "Authorization: Bearer ..." line */
		if (auth_server_header(jwt_key, "GET", path_and_query, NULL, 0, auth) < 0 ||
		    add_header(&t, "%s", auth) < 0) {
			transfer_release(&t);
			set_error(c, "cannot sign a server token");
			return -ENOMEM;
		}
	}
	rc = transfer_perform(c, &t, deadline_after(c), &local);
	if (rc < 0) {
		set_error(c, "%s: %s", server, c->curl_err);
	} else {
		*status = t.status;
		if (!t.buf && t.errlen) {
			*body = strdup(t.errbody);
			*len = t.errlen;
		} else {
			*body = t.buf ? (char *)t.buf : strdup("");
			*len = t.len;
			t.buf = NULL;
		}
		if (!*body)
			rc = -ENOMEM;
	}
	transfer_release(&t);
	return rc;
}

/* ---------------------------------------------------------------- lookup */

/*
 * Locations of vid, from the cache unless fresh=true. With fid set, the lookup asks
 * for that file (the master then adds a write JWT, copied to auth).
 */
static int lookup_until(struct kelp_client *c, uint32_t vid, const char *fid, bool fresh,
			struct kelp_locations *out, bool *from_cache, char *auth, uint64_t deadline)
{
	char path[256], vid_text[16], msg[256], from[KELP_URL_MAX];
	struct transfer t;
	int rc;

	if (from_cache)
		*from_cache = false;
	if (!fresh && kelp_location_cache_get(&c->cache, vid, c->clock_ns(c->clock_ctx), out)) {
		if (from_cache)
			*from_cache = true;
		return 0;
	}
	snprintf(vid_text, sizeof(vid_text), "%" PRIu32, vid);
	snprintf(path, sizeof(path), "/dir/lookup");
	add_param(c, path, sizeof(path), "volumeId", vid_text);
	add_param(c, path, sizeof(path), "fileId", fid);
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	rc = master_request(c, "lookup", path, false, deadline, &t, from);
	if (rc == 0) {
		if (t.status == 200) {
			rc = kelp_parse_lookup_reply((char *)t.buf, t.len, out, msg, sizeof(msg));
			if (rc < 0)
				set_error(c, "lookup of volume %" PRIu32 ": master %s: %s", vid,
					  from, rc == -EPROTO ? "unreadable reply" : msg);
		} else {
			rc = kelp_errno_from_status(t.status);
			set_error(c, "lookup of volume %" PRIu32 ": master %s: HTTP %ld: %s", vid,
				  from, t.status, error_text(&t, msg, sizeof(msg)));
		}
	}
	if (rc == 0) {
		if (auth)
			copy_string(auth, KELP_AUTH_MAX, t.auth);
		kelp_location_cache_put(&c->cache, vid, c->clock_ns(c->clock_ctx), out);
	}
	transfer_release(&t);
	return rc;
}

int kelp_client_lookup(struct kelp_client *c, uint32_t vid, struct kelp_locations *out)
{
	c->err[0] = '\0';
	return lookup_until(c, vid, NULL, false, out, NULL, NULL, deadline_after(c));
}

void kelp_client_forget_volume(struct kelp_client *c, uint32_t vid)
{
	kelp_location_cache_drop(&c->cache, vid);
}

static const char *location_address(const struct kelp_client *c, const struct kelp_location *l)
{
	return c->use_public_url && l->public_url[0] ? l->public_url : l->url;
}

/* ---------------------------------------------------------------- upload */

/* Content-Disposition quoting: characters that would end or bend the value become '_'. */
static void disposition_name(const char *name, char *out, size_t cap)
{
	size_t o = 0;

	for (const char *p = name; *p && o + 1 < cap; p++) {
		unsigned char ch = (unsigned char)*p;

		out[o++] = ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\' ? '_' : (char)ch;
	}
	out[o] = '\0';
}

static int upload_until(struct kelp_client *c, const char *url, const char *fid, const char *auth,
			const struct kelp_upload_options *opt, struct transfer *t,
			struct kelp_upload_result *out, uint64_t deadline)
{
	char path[FID_MAX_LEN + 256], name[KELP_NAME_MAX], msg[256];
	const char *mime = opt && opt->mime && *opt->mime ? opt->mime : "application/octet-stream";
	bool local;
	int rc;

	snprintf(path, sizeof(path), "/%s", fid);
	if (opt && opt->fsync)
		add_param(c, path, sizeof(path), "fsync", "true");
	if (opt && opt->no_md5)
		add_param(c, path, sizeof(path), "md5", "false");
	if (opt)
		add_param(c, path, sizeof(path), "ttl", opt->ttl);
	set_url(t, url, path);
	t->method = "PUT";
	t->upload = true;
	t->sink = SINK_BUFFER;
	t->limit = 1u << 20;
	if (add_header(t, "Content-Type: %s", mime) < 0)
		return -ENOMEM;
	if (opt && opt->name && *opt->name) {
		disposition_name(opt->name, name, sizeof(name));
		if (add_header(t, "Content-Disposition: inline; filename=\"%s\"", name) < 0)
			return -ENOMEM;
	}
	if (auth && *auth &&
	    add_header(t, "Authorization: %s%s", strncasecmp(auth, "Bearer ", 7) ? "Bearer " : "",
		       auth) < 0)
		return -ENOMEM;
	rc = transfer_perform(c, t, deadline, &local);
	if (rc < 0) {
		set_error(c, "upload %s to %s: %s", fid, url, c->curl_err);
		return rc;
	}
	if (t->status == 201 || t->status == 200 || t->status == 204) {
		json_t *root = t->len ? json_loadb((char *)t->buf, t->len, 0, NULL) : NULL;
		json_t *size = json_object_get(root, "size");
		json_t *etag = json_object_get(root, "eTag");

		out->size =
		    json_is_integer(size) ? (uint64_t)json_integer_value(size) : t->src_size;
		if (t->etag[0])
			copy_string(out->etag, sizeof(out->etag), t->etag);
		else
			copy_string(out->etag, sizeof(out->etag),
				    json_is_string(etag) ? json_string_value(etag) : "");
		json_decref(root);
		return 0;
	}
	rc = kelp_errno_from_status(t->status);
	set_error(c, "upload %s to %s: HTTP %ld: %s", fid, url, t->status,
		  error_text(t, msg, sizeof(msg)));
	return rc;
}

int kelp_client_upload_buffer(struct kelp_client *c, const char *url, const char *fid,
			      const char *auth, const struct kelp_upload_options *opt,
			      const void *data, size_t len, struct kelp_upload_result *out)
{
	struct transfer t;
	int rc;

	c->err[0] = '\0';
	transfer_init(&t, "PUT");
	t.src_mem = len ? data : (const uint8_t *)"";
	t.src_size = len;
	rc = upload_until(c, url, fid, auth, opt, &t, out, deadline_after(c));
	transfer_release(&t);
	return rc;
}

int kelp_client_put_at(struct kelp_client *c, const char *fid,
		       const struct kelp_upload_options *opt, const void *data, size_t len,
		       struct kelp_upload_result *out)
{
	struct kelp_locations locs;
	char auth[KELP_AUTH_MAX] = "";
	uint64_t deadline = deadline_after(c);
	struct transfer t;
	uint32_t vid = fid_text_vid(fid);
	int rc;

	c->err[0] = '\0';
	if (!vid) {
		set_error(c, "bad file id \"%s\"", fid);
		return -EINVAL;
	}
	/* Asked for this fid (fresh): the master adds its write token when it has a key. */
	rc = lookup_until(c, vid, fid, true, &locs, NULL, auth, deadline);
	if (rc < 0)
		return rc;
	if (locs.n == 0) {
		set_error(c, "volume %" PRIu32 " has no location", vid);
		return -ENOENT;
	}
	transfer_init(&t, "PUT");
	t.src_mem = len ? data : (const uint8_t *)"";
	t.src_size = len;
	rc = upload_until(c, location_address(c, &locs.loc[0]), fid, auth, opt, &t, out, deadline);
	transfer_release(&t);
	return rc;
}

int kelp_client_upload_fd(struct kelp_client *c, const char *url, const char *fid, const char *auth,
			  const struct kelp_upload_options *opt, int fd, uint64_t offset,
			  uint64_t size, struct kelp_upload_result *out)
{
	struct transfer t;
	int rc;

	c->err[0] = '\0';
	transfer_init(&t, "PUT");
	t.src_fd = fd;
	t.src_offset = offset;
	t.src_size = size;
	rc = upload_until(c, url, fid, auth, opt, &t, out, deadline_after(c));
	transfer_release(&t);
	return rc;
}

#define PUT_BAD_SERVERS 4
#define PUT_BAD_VOLUMES 8

struct put_avoid {
	char servers[PUT_BAD_SERVERS][KELP_URL_MAX];
	uint32_t vids[PUT_BAD_VOLUMES];
	int n_servers, n_vids;
};

static bool avoided(const struct put_avoid *a, const char *url, uint32_t vid)
{
	for (int i = 0; i < a->n_servers && i < PUT_BAD_SERVERS; i++)
		if (!strcmp(a->servers[i], url))
			return true;
	for (int i = 0; i < a->n_vids && i < PUT_BAD_VOLUMES; i++)
		if (a->vids[i] == vid)
			return true;
	return false;
}

/* Remembers what failed: the server when it could not be reached, else the volume
 * (a replica of it is down, or it is gone from that server). */
static void avoid(struct put_avoid *a, int rc, const char *url, uint32_t vid)
{
	if (rc == -ECONNREFUSED || rc == -EHOSTUNREACH)
		copy_string(a->servers[a->n_servers++ % PUT_BAD_SERVERS], KELP_URL_MAX, url);
	else if (vid && (rc == -EIO || rc == -ENOENT || rc == -ETIMEDOUT || rc == -ECONNRESET ||
			 rc == -ENOSPC))
		a->vids[a->n_vids++ % PUT_BAD_VOLUMES] = vid;
}

/*
 * Assign + upload with re-assigns; src_mem or (src_fd, offset) provide the body.
 * What failed is remembered for this put: a volume server that refused a connection,
 * or a volume whose write failed (a replica of it down: the primary answers 500; its
 * disk full: 507). Until the master notices (a few heartbeats) it keeps assigning
 * them, so an assign that points there again is redone after a backoff without
 * counting as an upload attempt. The deadline bounds it all.
 */
static int put_common(struct kelp_client *c, const struct kelp_assign_request *areq,
		      const struct kelp_upload_options *uopt, const void *data, int fd,
		      uint64_t offset, uint64_t size, struct kelp_put_result *out)
{
	uint64_t deadline = deadline_after(c);
	struct put_avoid bad;
	char last_err[sizeof(c->err)];
	int rc, last_rc = -EHOSTUNREACH, uploads = 0, waits = 0;

	c->err[0] = '\0';
	last_err[0] = '\0';
	memset(&bad, 0, sizeof(bad));
	memset(out, 0, sizeof(*out));
	for (;;) {
		const char *url;
		struct transfer t;
		uint32_t vid;

		rc = assign_until(c, areq, &out->assign, deadline);
		if (rc < 0)
			return rc;
		url = c->use_public_url ? out->assign.public_url : out->assign.url;
		vid = fid_text_vid(out->assign.fid);
		if (avoided(&bad, url, vid)) {
			if (backoff(waits++, deadline))
				continue;
			copy_string(c->err, sizeof(c->err), last_err);
			return last_rc; /* what the last upload got */
		}
		transfer_init(&t, "PUT");
		if (data || fd < 0)
			t.src_mem = data ? data : (const uint8_t *)"";
		else
			t.src_fd = fd;
		t.src_offset = offset;
		t.src_size = size;
		rc = upload_until(c, url, out->assign.fid, out->assign.auth, uopt, &t, &out->upload,
				  deadline);
		transfer_release(&t);
		/* 404: the master's view is stale; 401: the token expired; 507: that disk
		 * is full. Each may pass with a new assign. */
		if (rc == 0 ||
		    !(is_retryable(rc) || rc == -ENOENT || rc == -EACCES || rc == -ENOSPC) ||
		    uploads++ >= c->upload_retries)
			return rc;
		avoid(&bad, rc, url, vid);
		last_rc = rc;
		copy_string(last_err, sizeof(last_err), c->err);
		if (!backoff(uploads - 1, deadline))
			return rc;
	}
}

int kelp_client_put_buffer(struct kelp_client *c, const struct kelp_assign_request *areq,
			   const struct kelp_upload_options *uopt, const void *data, size_t len,
			   struct kelp_put_result *out)
{
	return put_common(c, areq, uopt, data, -1, 0, len, out);
}

int kelp_client_put_fd(struct kelp_client *c, const struct kelp_assign_request *areq,
		       const struct kelp_upload_options *uopt, int fd, uint64_t offset,
		       uint64_t size, struct kelp_put_result *out)
{
	if (fd < 0)
		return -EBADF;
	return put_common(c, areq, uopt, NULL, fd, offset, size, out);
}

int kelp_client_put_path(struct kelp_client *c, const struct kelp_assign_request *areq,
			 const struct kelp_upload_options *uopt, const char *path,
			 struct kelp_put_result *out)
{
	struct kelp_upload_options o = {0};
	struct stat st;
	const char *base;
	int fd, rc;

	c->err[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		set_error(c, "cannot open %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		set_error(c, "%s: not a regular file", path);
		close(fd);
		return rc;
	}
	if (uopt)
		o = *uopt;
	if (!o.name || !*o.name) {
		base = strrchr(path, '/');
		o.name = base ? base + 1 : path;
	}
	rc = put_common(c, areq, &o, NULL, fd, 0, (uint64_t)st.st_size, out);
	close(fd);
	return rc;
}

/* ---------------------------------------------------------------- read */

/*
 * The read token of fid (-jwtReadKey clusters): /dir/lookup?fileId=<fid>&read=yes
 * answers with it in Authorization ("Bearer <jwt>", copied to auth). 0 or -errno.
 */
static int read_token(struct kelp_client *c, const char *fid_text, char *auth, uint64_t deadline)
{
	char path[256], from[KELP_URL_MAX];
	struct transfer t;
	int rc;

	auth[0] = '\0';
	snprintf(path, sizeof(path), "/dir/lookup?read=yes");
	add_param(c, path, sizeof(path), "fileId", fid_text);
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	rc = master_request(c, "read token", path, false, deadline, &t, from);
	if (rc == 0 && t.status == 200 && t.auth[0])
		copy_string(auth, KELP_AUTH_MAX, t.auth);
	else if (rc == 0)
		rc = -EACCES;
	transfer_release(&t);
	return rc;
}

static void fill_info(const struct transfer *t, struct kelp_blob_info *info)
{
	if (!info)
		return;
	copy_string(info->name, sizeof(info->name), t->name);
	copy_string(info->mime, sizeof(info->mime), t->mime);
	copy_string(info->etag, sizeof(info->etag), t->etag);
	if (t->has_range_total && !t->encoded)
		info->size = t->range_total;
	else if (t->status == 200 && t->has_content_length && !t->encoded)
		info->size = t->content_length;
	else if (t->status == 200 && t->sink == SINK_FD)
		info->size = t->fd_written;
	else if (t->status == 200 && t->sink == SINK_BUFFER)
		info->size = t->len;
}

/*
 * GETs fid from its replicas into t's sink. range_end = 0 means "to the end". For
 * SINK_FD, bytes already written survive a replica failure: the next replica is
 * asked for the rest only.
 */
static int read_common(struct kelp_client *c, const char *fid_text, struct transfer *t,
		       uint64_t range_start, uint64_t range_end, bool *past_end,
		       struct kelp_blob_info *info)
{
	uint64_t deadline = deadline_after(c);
	struct kelp_locations locs;
	struct fid fid;
	int rc, other = 0; /* the last failure other than "not found" */
	char msg[256], auth[KELP_AUTH_MAX] = "";
	bool token_tried = false;

	c->err[0] = '\0';
	*past_end = false;
	if (info)
		memset(info, 0, sizeof(*info));
	if (!fid_text || fid_parse(fid_text, strlen(fid_text), &fid) < 0) {
		set_error(c, "bad file id \"%s\"", fid_text ? fid_text : "");
		return -EINVAL;
	}
	for (int round = 0; round < 2; round++) {
		bool cached;
		int start;

		rc = lookup_until(c, fid.vid, NULL, false, &locs, &cached, NULL, deadline);
		if (rc < 0)
			return rc;
		if (c->read_tokens && !token_tried) {
			token_tried = true;
			read_token(c, fid_text, auth, deadline);
		}
		start = (int)(next_random(c) % (uint64_t)locs.n);
		for (int i = 0; i < locs.n; i++) {
			const char *server = location_address(c, &locs.loc[(start + i) % locs.n]);
			uint64_t from = range_start + (t->sink == SINK_FD ? t->fd_written : 0);
			char path[FID_MAX_LEN + 2];
			bool local;

			transfer_clear_headers(t);
			if (from > 0 || range_end) {
				int r = range_end
					    ? add_header(t, "Range: bytes=%" PRIu64 "-%" PRIu64,
							 from, range_end - 1)
					    : add_header(t, "Range: bytes=%" PRIu64 "-", from);

				if (r < 0)
					return r;
			}
			if (auth[0] && add_header(t, "Authorization: %s", auth) < 0)
				return -ENOMEM;
			t->range_start = from;
			snprintf(path, sizeof(path), "/%s", fid_text);
			set_url(t, server, path);
			rc = transfer_perform(c, t, deadline, &local);
			if (rc < 0 && local) {
				set_error(c, "read %s from %s: %s", fid_text, server, c->curl_err);
				return rc;
			}
			if (rc == 0 && (t->status == 200 || t->status == 206 || t->status == 416)) {
				/* A replica failed before this one: look again next time, the
				 * master may know better by then. */
				if (i > 0)
					kelp_location_cache_drop(&c->cache, fid.vid);
				*past_end = t->status == 416;
				fill_info(t, info);
				return 0;
			}
			if (rc < 0) {
				set_error(c, "read %s from %s: %s", fid_text, server, c->curl_err);
				other = rc;
			} else {
				set_error(c, "read %s from %s: HTTP %ld%s%s", fid_text, server,
					  t->status, t->errlen ? ": " : "",
					  error_text(t, msg, sizeof(msg)));
				if (t->status != 404)
					other = kelp_errno_from_status(t->status);
				/* Reads need a token here (-jwtReadKey): get one, and from now
				 * on get one before every read. */
				if (t->status == 401 && !token_tried) {
					token_tried = true;
					c->read_tokens = true;
					if (read_token(c, fid_text, auth, deadline) == 0) {
						i--;
						continue;
					}
				}
				/* A bad fid or a refused token is the same on every replica. */
				if (t->status == 400 || t->status == 401 || t->status == 403)
					return other;
			}
			if (ms_left(deadline) <= 0)
				return other ? other : -ENOENT;
		}
		kelp_location_cache_drop(&c->cache, fid.vid);
		if (!cached)
			break;
	}
	/* A replica that failed might have had it: that failure says more than a 404. */
	return other ? other : -ENOENT;
}

int kelp_client_read(struct kelp_client *c, const char *fid, uint8_t **data, size_t *len,
		     struct kelp_blob_info *info)
{
	struct transfer t;
	bool past_end;
	int rc;

	*data = NULL;
	*len = 0;
	transfer_init(&t, "GET");
	t.sink = SINK_BUFFER;
	t.limit = SIZE_MAX / 2;
	t.follow_redirects = true;
	t.accept_gzip = true;
	rc = read_common(c, fid, &t, 0, 0, &past_end, info);
	if (rc == 0) {
		if (!t.buf && !(t.buf = malloc(1)))
			rc = -ENOMEM;
		else
			t.buf[t.len] = '\0';
		*data = t.buf;
		*len = t.len;
		t.buf = NULL;
	}
	transfer_release(&t);
	return rc;
}

int kelp_client_read_range(struct kelp_client *c, const char *fid, uint64_t offset, size_t len,
			   void *buf, size_t *got, struct kelp_blob_info *info)
{
	struct transfer t;
	bool past_end;
	int rc;

	*got = 0;
	if (len == 0)
		return 0;
	transfer_init(&t, "GET");
	t.sink = SINK_RANGE;
	t.buf = buf;
	t.cap = len;
	t.follow_redirects = true;
	t.accept_gzip = true;
	rc = read_common(c, fid, &t, offset, offset + len, &past_end, info);
	if (rc == 0 && !past_end)
		*got = t.len;
	t.buf = NULL;
	transfer_release(&t);
	return rc;
}

int kelp_client_read_to_fd(struct kelp_client *c, const char *fid, int fd, uint64_t *written,
			   struct kelp_blob_info *info)
{
	struct transfer t;
	bool past_end;
	int rc;

	transfer_init(&t, "GET");
	t.sink = SINK_FD;
	t.fd = fd;
	t.follow_redirects = true;
	t.accept_gzip = true;
	rc = read_common(c, fid, &t, 0, 0, &past_end, info);
	if (written)
		*written = t.fd_written;
	if (rc == 0 && info && past_end)
		info->size = t.fd_written;
	transfer_release(&t);
	return rc;
}

/* ---------------------------------------------------------------- delete */

/*
 * DELETE /fid at the first of locs that has it. *refused: a server answered 401 (a
 * token is needed, or a better one).
 */
static int delete_at(struct kelp_client *c, const char *fid_text, const struct kelp_locations *locs,
		     const char *token, uint64_t *size, uint64_t deadline, bool *refused)
{
	char msg[256], path[FID_MAX_LEN + 2];
	struct transfer t;
	int rc, other = 0; /* the last failure other than "not found" */

	*refused = false;
	snprintf(path, sizeof(path), "/%s", fid_text);
	transfer_init(&t, "DELETE");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	if (token[0] && add_header(&t, "Authorization: %s%s",
				   strncasecmp(token, "Bearer ", 7) ? "Bearer " : "", token) < 0) {
		transfer_release(&t);
		return -ENOMEM;
	}
	for (int i = 0; i < locs->n; i++) {
		const char *server = location_address(c, &locs->loc[i]);
		bool local;

		set_url(&t, server, path);
		rc = transfer_perform(c, &t, deadline, &local);
		if (rc < 0) {
			set_error(c, "delete %s on %s: %s", fid_text, server, c->curl_err);
			other = rc;
			continue;
		}
		if (t.status == 202 || t.status == 200 || t.status == 204) {
			json_t *root = t.len ? json_loadb((char *)t.buf, t.len, 0, NULL) : NULL;
			json_t *s = json_object_get(root, "size");

			if (size && json_is_integer(s))
				*size = (uint64_t)json_integer_value(s);
			json_decref(root);
			transfer_release(&t);
			return 0;
		}
		set_error(c, "delete %s on %s: HTTP %ld: %s", fid_text, server, t.status,
			  t.errlen ? error_text(&t, msg, sizeof(msg)) : "");
		if (t.status == 404)
			continue; /* not there, or this replica lacks the volume: ask the next */
		other = kelp_errno_from_status(t.status);
		*refused = t.status == 401;
		if (t.status < 500)
			break; /* a bad cookie or token is the same on every replica */
	}
	transfer_release(&t);
	return other ? other : -ENOENT;
}

/*
 * Without auth, the first try goes to the cached locations without a token: one
 * request instead of a lookup at the master and a request (a cluster without -jwtKey
 * needs no token). A 401 makes this client ask the master for a token with every
 * delete from then on (write_tokens); a "not found" from cached locations is asked
 * again with fresh ones, so a stale cache never makes a live blob look deleted.
 */
int kelp_client_delete(struct kelp_client *c, const char *fid_text, const char *auth,
		       uint64_t *size)
{
	uint64_t deadline = deadline_after(c);
	struct kelp_locations locs;
	char token[KELP_AUTH_MAX] = "";
	struct fid fid;
	bool refused = false;
	int rc;

	c->err[0] = '\0';
	if (size)
		*size = 0;
	if (!fid_text || fid_parse(fid_text, strlen(fid_text), &fid) < 0) {
		set_error(c, "bad file id \"%s\"", fid_text ? fid_text : "");
		return -EINVAL;
	}
	if (auth && *auth) {
		copy_string(token, sizeof(token), auth);
		rc = lookup_until(c, fid.vid, NULL, false, &locs, NULL, NULL, deadline);
		if (rc == 0)
			rc = delete_at(c, fid_text, &locs, token, size, deadline, &refused);
	} else {
		bool cached = false;

		rc = -EACCES;
		if (!c->write_tokens) {
			rc = lookup_until(c, fid.vid, NULL, false, &locs, &cached, NULL, deadline);
			if (rc == 0)
				rc = delete_at(c, fid_text, &locs, token, size, deadline, &refused);
			if (refused)
				c->write_tokens = true;
		}
		if (refused || c->write_tokens || (rc == -ENOENT && cached)) {
			rc = lookup_until(c, fid.vid, fid_text, true, &locs, NULL, token, deadline);
			if (rc == 0)
				rc = delete_at(c, fid_text, &locs, token, size, deadline, &refused);
		}
	}
	if (rc < 0 && rc != -ENOENT)
		kelp_location_cache_drop(&c->cache, fid.vid);
	return rc;
}

/* POST /admin/sync?volume=vid to every location; stops at the first failure. */
static int sync_locations(struct kelp_client *c, uint32_t vid, const struct kelp_locations *locs,
			  uint64_t deadline)
{
	char path[64], msg[256];
	struct transfer t;
	int rc = 0;

	snprintf(path, sizeof(path), "/admin/sync?volume=%u", vid);
	transfer_init(&t, "POST");
	t.sink = SINK_BUFFER;
	t.limit = 1u << 20;
	for (int i = 0; i < locs->n && rc == 0; i++) {
		const char *server = location_address(c, &locs->loc[i]);
		bool local;

		set_url(&t, server, path);
		rc = transfer_perform(c, &t, deadline, &local);
		if (rc < 0) {
			set_error(c, "sync of volume %u on %s: %s", vid, server, c->curl_err);
		} else if (t.status != 200) {
			set_error(c, "sync of volume %u on %s: HTTP %ld: %s", vid, server, t.status,
				  t.errlen ? error_text(&t, msg, sizeof(msg)) : "");
			rc = t.status == 404 ? -ENOENT : kelp_errno_from_status(t.status);
			if (rc == 0)
				rc = -EIO;
		}
	}
	transfer_release(&t);
	return rc;
}

int kelp_client_sync_volume(struct kelp_client *c, uint32_t vid)
{
	uint64_t deadline = deadline_after(c);
	struct kelp_locations locs;
	int rc;

	c->err[0] = '\0';
	/* A volume the master does not list (a heartbeat late after a pause), or a
	 * replica that fails, is retried with fresh locations until the deadline. */
	for (int attempt = 0;; attempt++) {
		rc = lookup_until(c, vid, NULL, attempt > 0, &locs, NULL, NULL, deadline);
		if (rc == 0)
			rc = sync_locations(c, vid, &locs, deadline);
		if (rc == 0)
			return 0;
		kelp_location_cache_drop(&c->cache, vid);
		if (!(rc == -ENOENT || is_retryable(rc)) || !backoff(attempt, deadline))
			return rc;
	}
}

/* ---------------------------------------------------------------- life cycle */

int kelp_client_new(const struct kelp_client_options *opt, struct kelp_client **out)
{
	struct kelp_client *c;
	int n;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	n = kelp_parse_master_list(opt ? opt->masters : NULL, &c->masters);
	if (n < 0) {
		free(c);
		return n;
	}
	c->n_masters = n;
	c->curl = curl_easy_init();
	if (!c->curl) {
		kelp_free_master_list(c->masters);
		free(c);
		return -ENOMEM;
	}
	c->connect_timeout_ms =
	    opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	c->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->stall_timeout_ms = opt->stall_timeout_ms > 0			 ? opt->stall_timeout_ms
			      : c->timeout_ms < DEFAULT_STALL_TIMEOUT_MS ? c->timeout_ms
									 : DEFAULT_STALL_TIMEOUT_MS;
	c->upload_retries = opt->upload_retries > 0   ? opt->upload_retries
			    : opt->upload_retries < 0 ? 0
						      : DEFAULT_UPLOAD_RETRIES;
	c->use_public_url = opt->use_public_url;
	c->clock_ns = opt->clock_ns ? opt->clock_ns : default_clock;
	c->clock_ctx = opt->clock_ctx;
	kelp_location_cache_init(
	    &c->cache,
	    (uint64_t)(opt->lookup_ttl_ms > 0 ? opt->lookup_ttl_ms : DEFAULT_LOOKUP_TTL_MS) *
		1000000u);
	c->rng = (monotonic_ns() ^ (uint64_t)(uintptr_t)c) | 1;
	c->master_index = (int)(next_random(c) % (uint64_t)n);
	*out = c;
	return 0;
}

void kelp_client_free(struct kelp_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	kelp_location_cache_release(&c->cache);
	kelp_free_master_list(c->masters);
	free(c);
}

const char *kelp_client_error(const struct kelp_client *c)
{
	return c->err;
}

const char *kelp_client_leader(const struct kelp_client *c)
{
	return c->leader;
}
