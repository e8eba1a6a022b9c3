#include "cluster/volume_server/copy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/common/fid.h"
#include "cluster/common/layout.h"
#include "cluster/net/auth.h"
#include "cluster/net/http.h"
#include "cluster/net/http_client.h"
#include "cluster/storage/store.h"

#define COPY_PIECE	  (64ull << 20) /* bytes asked for in one request */
#define COPY_MAX_ROUNDS	  10000		/* tail rounds before a copy gives up */
#define COPY_KEEP_DONE	  32		/* finished copies listed by copy/status */
#define APPEND_BODY_LIMIT (1100ull << 20)
#define STATE_RECORD_SIZE 32

enum copy_state { COPY_RUNNING, COPY_CAUGHT_UP, COPY_DONE, COPY_FAILED, COPY_CANCELLED };

static const char *const state_names[] = {"running", "caught_up", "done", "failed", "cancelled"};

struct copy_job {
	struct copier *c;
	uint32_t vid;
	char source[160];
	char collection[128];
	char dir[4096];
	double mbps; /* 0 = unlimited */
	bool wait_finish;
	_Atomic int state;
	atomic_bool finish, cancel;
	_Atomic uint64_t done_bytes, total_bytes;
	uint64_t started_ns, ended_ns;
	pthread_mutex_t throttle_lock; /* the two below: streams share the rate */
	uint64_t throttle_start_ns, throttle_bytes;
	char error[300];
	pthread_t thread;
	bool joined;
	struct copy_job *next;
};

struct copier {
	struct copier_env env;
	pthread_mutex_t lock;
	struct copy_job *jobs; /* newest first */
	bool stopping;
};

/* ---------------------------------------------------------------- helpers */

static bool keyed(const struct copier *c)
{
	return c->env.jwt_key && *c->env.jwt_key;
}

/* One request to another volume server, with a server token when keyed. */
static int call_peer(struct copier *c, const char *method, const char *host, const char *pq,
		     const void *body, size_t body_len, long timeout_ms,
		     size_t (*on_body)(void *, const void *, size_t), void *cls,
		     size_t max_response, struct http_client_response *rs)
{
	char url[1200], auth[AUTH_HEADER_LEN];
	const char *headers[3] = {NULL, NULL, NULL};
	int nh = 0;
	struct http_client_request rq = {.method = method,
					 .url = url,
					 .headers = headers,
					 .body = body,
					 .body_len = body_len,
					 .body_fd = -1,
					 .timeout_ms = timeout_ms,
					 .max_response = max_response,
					 .on_body = on_body,
					 .on_body_cls = cls};

	if (body)
		headers[nh++] = "Content-Type: application/octet-stream";
	if (keyed(c)) {
		if (auth_server_header(c->env.jwt_key, method, pq, NULL, 0, auth) < 0) {
			memset(rs, 0, sizeof(*rs));
			snprintf(rs->error, sizeof(rs->error), "cannot sign the request");
			return -EIO;
		}
		headers[nh++] = auth;
	}
	snprintf(url, sizeof(url), "%s://%s%s", http_scheme(), host, pq);
	return http_client_do(&rq, rs);
}

static int parse_u64_param(struct http_request *req, const char *name, bool required, uint64_t *out)
{
	const char *s = http_query(req, name);
	char *end;

	if (!s || !*s) {
		if (!required)
			return 0;
		http_reply_error(req, 400, "parameter %s is required", name);
		return -EINVAL;
	}
	errno = 0;
	*out = strtoull(s, &end, 10);
	if (*end || errno || *s == '-') {
		http_reply_error(req, 400, "parameter %s must be a number, got \"%s\"", name, s);
		return -EINVAL;
	}
	return 0;
}

static int parse_vid(struct http_request *req, uint32_t *vid)
{
	const char *s = http_query(req, "volume");

	if (!s || fid_parse_vid(s, strlen(s), vid) < 0 || *vid == 0) {
		http_reply_error(req, 400, "parameter volume must be a volume id, got \"%s\"",
				 s ? s : "");
		return -EINVAL;
	}
	return 0;
}

/* CRC32C of the first len bytes of fd (read in 1 MiB pieces: cheaper than mapping a
 * large file page by page). */
static int crc_of_prefix(int fd, uint64_t len, uint32_t *crc)
{
	enum { BUF = 1 << 20 };
	uint8_t *buf;
	uint64_t pos = 0;

	*crc = 0;
	if (len == 0)
		return 0;
	buf = malloc(BUF);
	if (!buf)
		return -ENOMEM;
	while (pos < len) {
		size_t n = len - pos > BUF ? BUF : (size_t)(len - pos);
		int ret = pread_all(fd, buf, n, pos);

		if (ret < 0) {
			free(buf);
			return ret == -ENODATA ? -EIO : ret;
		}
		*crc = crc32c(*crc, buf, n);
		pos += n;
	}
	free(buf);
	return 0;
}

/* ---------------------------------------------------------------- source routes */

static json_t *snapshot_json(struct volume *v, const struct volume_snapshot *s)
{
	char repl[4], ttl[16];

	placement_format(s->replica_placement, repl);
	ttl_format(s->ttl, ttl, sizeof(ttl));
	return json_pack("{s:I,s:s,s:s,s:s,s:i,s:i,s:I,s:I,s:b,s:b,s:I}", "Id",
			 (json_int_t)volume_id(v), "Collection", volume_collection(v),
			 "ReplicaPlacement", repl, "Ttl", ttl, "Version", s->version,
			 "CompactRevision", s->compact_revision, "DatSize", (json_int_t)s->dat_size,
			 "IdxSize", (json_int_t)s->idx_size, "ReadOnly", s->read_only, "Compacting",
			 s->compacting, "LastAppendAtNs", (json_int_t)s->last_append_ns);
}

static void handle_file(struct copier *c, struct http_request *req, struct volume *v)
{
	const char *ext = http_query(req, "ext");
	uint64_t offset = 0, size = 0, revision = 0;
	struct volume_snapshot snap;
	int dat_fd, idx_fd, ret;
	uint16_t rev;
	bool is_dat;

	(void)c;
	if (!ext || (strcmp(ext, "dat") && strcmp(ext, "idx"))) {
		http_reply_error(req, 400, "parameter ext must be dat or idx");
		return;
	}
	is_dat = !strcmp(ext, "dat");
	if (parse_u64_param(req, "offset", false, &offset) < 0 ||
	    parse_u64_param(req, "size", true, &size) < 0 ||
	    parse_u64_param(req, "revision", false, &revision) < 0)
		return;
	volume_take_snapshot(v, &snap);
	if (offset + size < offset || offset + size > (is_dat ? snap.dat_size : snap.idx_size)) {
		http_reply_error(req, 416, "range %" PRIu64 "+%" PRIu64 " is past the end of .%s",
				 offset, size, ext);
		return;
	}
	ret = volume_dup_files(v, &dat_fd, &idx_fd, &rev);
	if (ret < 0) {
		http_reply_error(req, 500, "cannot open the volume's files: %s", strerror(-ret));
		return;
	}
	if (http_query(req, "revision") && rev != revision) {
		close(dat_fd);
		close(idx_fd);
		http_reply_error(req, 409, "the volume was vacuumed: revision %u, not %" PRIu64,
				 rev, revision);
		return;
	}
	if (is_dat) {
		close(idx_fd);
		http_reply_fd(req, 200, dat_fd, offset, size);
	} else {
		close(dat_fd);
		http_reply_fd(req, 200, idx_fd, offset, size);
	}
	http_add_header(req, "Content-Type", "application/octet-stream");
}

static void handle_checksum(struct http_request *req, struct volume *v)
{
	uint64_t dat_size, idx_size, revision = 0;
	struct volume_snapshot snap;
	uint32_t dat_crc, idx_crc;
	int dat_fd, idx_fd, ret;
	uint16_t rev;

	if (parse_u64_param(req, "datSize", true, &dat_size) < 0 ||
	    parse_u64_param(req, "idxSize", true, &idx_size) < 0 ||
	    parse_u64_param(req, "revision", false, &revision) < 0)
		return;
	volume_take_snapshot(v, &snap);
	if (dat_size > snap.dat_size || idx_size > snap.idx_size) {
		http_reply_error(req, 416, "sizes past the end of the volume");
		return;
	}
	ret = volume_dup_files(v, &dat_fd, &idx_fd, &rev);
	if (ret < 0) {
		http_reply_error(req, 500, "cannot open the volume's files: %s", strerror(-ret));
		return;
	}
	if (http_query(req, "revision") && rev != revision) {
		http_reply_error(req, 409, "the volume was vacuumed");
	} else if ((ret = crc_of_prefix(dat_fd, dat_size, &dat_crc)) < 0 ||
		   (ret = crc_of_prefix(idx_fd, idx_size, &idx_crc)) < 0) {
		http_reply_error(req, 500, "cannot read the volume: %s", strerror(-ret));
	} else {
		http_reply_json(req, 200,
				json_pack("{s:I,s:I,s:I,s:I}", "DatSize", (json_int_t)dat_size,
					  "IdxSize", (json_int_t)idx_size, "DatCrc",
					  (json_int_t)dat_crc, "IdxCrc", (json_int_t)idx_crc));
	}
	close(dat_fd);
	close(idx_fd);
}

static void encode_states(const struct volume_needle_state *s, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = out + i * STATE_RECORD_SIZE;

		put_be64(p, s[i].key);
		put_be32(p + 8, s[i].offset);
		put_be32(p + 12, s[i].size);
		put_be32(p + 16, s[i].cookie);
		put_be32(p + 20, s[i].checksum);
		put_be64(p + 24, s[i].append_at_ns);
	}
}

static void handle_needles(struct http_request *req, struct volume *v)
{
	struct volume_needle_state *s;
	size_t n;
	uint8_t *buf;
	int ret = volume_needle_states(v, &s, &n);

	if (ret < 0) {
		http_reply_error(req, ret == -EAGAIN ? 409 : 500, "cannot list the needles: %s",
				 strerror(-ret));
		return;
	}
	buf = malloc(n * STATE_RECORD_SIZE + 1);
	if (!buf) {
		free(s);
		http_reply_error(req, 500, "out of memory");
		return;
	}
	encode_states(s, n, buf);
	free(s);
	http_reply_buffer(req, 200, buf, n * STATE_RECORD_SIZE, true);
	http_add_header(req, "Content-Type", "application/octet-stream");
}

static void handle_record(struct http_request *req, struct volume *v)
{
	uint64_t offset;
	uint8_t *rec;
	size_t len;
	int ret;

	if (parse_u64_param(req, "offset", true, &offset) < 0)
		return;
	if (offset == 0 || offset > UINT32_MAX) {
		http_reply_error(req, 400, "offset %" PRIu64 " is not a record offset", offset);
		return;
	}
	ret = volume_read_record(v, (uint32_t)offset, &rec, &len);
	if (ret < 0) {
		http_reply_error(req, ret == -EINVAL || ret == -EBADMSG ? 404 : 500,
				 "no valid record at offset %" PRIu64 ": %s", offset,
				 strerror(-ret));
		return;
	}
	http_reply_buffer(req, 200, rec, len, true);
	http_add_header(req, "Content-Type", "application/octet-stream");
}

/* ---------------------------------------------------------------- append (target of check.disk) */

struct append_body {
	struct copier *c;
	uint32_t vid;
	uint8_t *buf;
	size_t len, cap;
};

static int append_on_body(struct http_request *req, const uint8_t *data, size_t len)
{
	struct append_body *b = req->state;

	if (b->len + len > APPEND_BODY_LIMIT) {
		http_reply_error(req, 413, "record over %llu bytes", APPEND_BODY_LIMIT);
		return -EFBIG;
	}
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 65536;
		uint8_t *p;

		while (cap < b->len + len)
			cap *= 2;
		p = realloc(b->buf, cap);
		if (!p) {
			http_reply_error(req, 500, "out of memory");
			return -ENOMEM;
		}
		b->buf = p;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return 0;
}

static void append_on_complete(struct http_request *req)
{
	struct append_body *b = req->state;
	struct volume *v = store_get_volume(b->c->env.store, b->vid);
	int ret;

	if (!v) {
		http_reply_error(req, 404, "volume %u not found", b->vid);
		return;
	}
	ret = volume_append_record(v, b->buf, b->len);
	store_put_volume(b->c->env.store, v);
	if (ret == -EINVAL || ret == -EBADMSG)
		http_reply_error(req, 400, "not a valid needle record: %s", strerror(-ret));
	else if (ret == -EROFS)
		http_reply_error(req, 409, "volume %u is read-only", b->vid);
	else if (ret < 0)
		http_reply_error(req, 500, "cannot append: %s", strerror(-ret));
	else
		http_reply_json(req, 200, json_pack("{s:I}", "size", (json_int_t)b->len));
}

static void append_on_cleanup(struct http_request *req)
{
	struct append_body *b = req->state;

	if (b) {
		free(b->buf);
		free(b);
	}
	req->state = NULL;
}

/* ---------------------------------------------------------------- the copy job */

static void job_fail(struct copy_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void job_fail(struct copy_job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
}

struct info {
	char collection[128];
	uint64_t dat_size, idx_size;
	int revision;
	bool read_only;
};

static int get_info(struct copy_job *j, struct info *out)
{
	char pq[128];
	struct http_client_response rs;
	json_t *js;
	int ret = -EIO;

	snprintf(pq, sizeof(pq), "/admin/volume/info?volume=%u", j->vid);
	if (call_peer(j->c, "GET", j->source, pq, NULL, 0, 10000, NULL, NULL, 0, &rs) < 0) {
		job_fail(j, "source %s: %s", j->source, rs.error);
		return -EIO;
	}
	js = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
	if (!js) {
		job_fail(j, "source %s answered %ld: %.200s", j->source, rs.status, rs.body);
		ret = rs.status == 404 ? -ENOENT : -EIO;
	} else {
		const char *coll = json_string_value(json_object_get(js, "Collection"));

		snprintf(out->collection, sizeof(out->collection), "%s", coll ? coll : "");
		out->dat_size = (uint64_t)json_integer_value(json_object_get(js, "DatSize"));
		out->idx_size = (uint64_t)json_integer_value(json_object_get(js, "IdxSize"));
		out->revision = (int)json_integer_value(json_object_get(js, "CompactRevision"));
		out->read_only = json_is_true(json_object_get(js, "ReadOnly"));
		ret = 0;
		if (!auth_collection_valid(out->collection)) {
			job_fail(j, "source %s named a bad collection", j->source);
			ret = -EINVAL;
		}
		json_decref(js);
	}
	http_client_response_release(&rs);
	return ret;
}

/* Received bytes are gathered into SINK_BUF before each pwrite. */
#define SINK_BUF (4u << 20)
/* Bulk transfers run COPY_STREAMS requests of COPY_SLICE bytes at once (one HTTP
 * connection each): one stream is bound by the source's per-request send loop. */
#define COPY_STREAMS 4
#define COPY_SLICE   (16ull << 20)

struct sink {
	struct copy_job *j;
	int fd;
	uint64_t pos; /* file offset of buf[0] */
	uint8_t *buf;
	size_t len;
	int err;
};

static int sink_flush(struct sink *s)
{
	int ret;

	if (s->len == 0)
		return 0;
	ret = pwrite_all(s->fd, s->buf, s->len, s->pos);
	if (ret < 0)
		return ret;
	s->pos += s->len;
	s->len = 0;
	return 0;
}

/* Keeps a job under its -repairMBps: sleeps until the bytes so far fit the rate. */
static void throttle(struct copy_job *j, size_t len)
{
	uint64_t now, due;

	if (j->mbps <= 0)
		return;
	pthread_mutex_lock(&j->throttle_lock);
	now = monotonic_ns();
	if (!j->throttle_start_ns || now - j->throttle_start_ns > 5000000000ull) {
		j->throttle_start_ns = now;
		j->throttle_bytes = 0;
	}
	j->throttle_bytes += len;
	due = j->throttle_start_ns +
	      (uint64_t)((double)j->throttle_bytes / (j->mbps * 1048576.0) * 1e9);
	pthread_mutex_unlock(&j->throttle_lock);
	if (due > now)
		usleep((useconds_t)((due - now) / 1000));
}

static size_t sink_write(void *cls, const void *data, size_t len)
{
	struct sink *s = cls;
	const uint8_t *p = data;
	size_t left = len;

	if (atomic_load(&s->j->cancel)) {
		s->err = -ECANCELED;
		return 0;
	}
	while (left > 0) {
		size_t n = SINK_BUF - s->len < left ? SINK_BUF - s->len : left;

		memcpy(s->buf + s->len, p, n);
		s->len += n;
		p += n;
		left -= n;
		if (s->len == SINK_BUF && (s->err = sink_flush(s)) < 0)
			return 0;
	}
	s->j->done_bytes += len;
	throttle(s->j, len);
	return len;
}

/*
 * Without TLS, a piece travels without a copy through this process: the source
 * sendfiles it, and here it is spliced from the socket into the file (a pipe between).
 * A plain HTTP/1.1 GET on its own connection; -ENOTSUP when TLS is on (curl then).
 * Returns 0, -ESTALE (409), or -errno with the reason in err.
 */
static int splice_piece(struct copy_job *j, const char *pq, int fd, uint64_t from, uint64_t n,
			char *err, size_t err_cap)
{
	char host[160], req[2000], auth[AUTH_HEADER_LEN], head[4096];
	const char *colon = strrchr(j->source, ':');
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {30, 0};
	int sock = -1, pipefd[2] = {-1, -1}, ret = -EIO, status;
	size_t hl = 0;
	char *body;
	long long clen = -1;
	uint64_t got = 0;
	loff_t off = (loff_t)from;

	if (http_tls() && http_tls()->cert)
		return -ENOTSUP;
	if (!colon || (size_t)(colon - j->source) >= sizeof(host))
		return -ENOTSUP;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - j->source), j->source);
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -ENOTSUP; /* a host name: curl resolves it */
	auth[0] = '\0';
	if (keyed(j->c) && auth_server_header(j->c->env.jwt_key, "GET", pq, NULL, 0, auth) < 0)
		return -ENOTSUP;
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s%sConnection: close\r\n\r\n",
		 pq, j->source, auth, auth[0] ? "\r\n" : "");
	sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0 || pipe2(pipefd, O_CLOEXEC) < 0)
		goto io;
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	fcntl(pipefd[0], F_SETPIPE_SZ, 1 << 20);
	errno = 0;
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(sock, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
		goto io;
	/* the headers (and perhaps the first body bytes) */
	for (;;) {
		ssize_t r = recv(sock, head + hl, sizeof(head) - 1 - hl, 0);

		if (r <= 0)
			goto io;
		hl += (size_t)r;
		head[hl] = '\0';
		if ((body = strstr(head, "\r\n\r\n")))
			break;
		if (hl >= sizeof(head) - 1)
			goto io;
	}
	body += 4;
	if (sscanf(head, "HTTP/1.%*d %d", &status) != 1)
		goto io;
	{
		const char *cl = strcasestr(head, "\r\nContent-Length:");

		if (cl)
			clen = strtoll(cl + 17, NULL, 10);
	}
	if (status == 409) {
		ret = -ESTALE;
		goto out;
	}
	if (status != 200 || clen != (long long)n) {
		snprintf(err, err_cap, "source %s answered %d for %.150s", j->source, status, pq);
		ret = -EIO;
		goto out;
	}
	if (hl - (size_t)(body - head) > 0) {
		size_t first = hl - (size_t)(body - head);

		if (first > n)
			goto io;
		ret = pwrite_all(fd, body, first, from);
		if (ret < 0)
			goto write_err;
		got = first;
		off += (loff_t)first;
		j->done_bytes += first;
	}
	while (got < n) {
		ssize_t in, moved = 0;
		size_t want = n - got > (1u << 20) ? 1u << 20 : (size_t)(n - got);

		if (atomic_load(&j->cancel)) {
			snprintf(err, err_cap, "cancelled");
			ret = -ECANCELED;
			goto out;
		}
		in = splice(sock, NULL, pipefd[1], NULL, want, SPLICE_F_MOVE);
		if (in <= 0)
			goto io;
		while (moved < in) {
			ssize_t w =
			    splice(pipefd[0], NULL, fd, &off, (size_t)(in - moved), SPLICE_F_MOVE);

			if (w <= 0) {
				ret = w < 0 ? -errno : -EIO;
				goto write_err;
			}
			moved += w;
		}
		got += (uint64_t)in;
		j->done_bytes += (uint64_t)in;
		throttle(j, (size_t)in);
	}
	/* start writing the slice back now: the final fsync then has little left */
	sync_file_range(fd, (off64_t)from, (off64_t)n, SYNC_FILE_RANGE_WRITE);
	ret = 0;
	goto out;
write_err:
	snprintf(err, err_cap, "cannot write the copy: %s", strerror(-ret));
	goto out;
io:
	snprintf(err, err_cap, "source %s: %s", j->source,
		 errno ? strerror(errno) : "connection closed");
	ret = -EIO;
out:
	if (sock >= 0)
		close(sock);
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	return ret;
}

/* One request: [from, from + n) of the source's .ext into fd at the same offsets.
 * 0, -ESTALE (vacuumed meanwhile), or -errno with the reason in err. */
static int fetch_piece(struct copy_job *j, const char *ext, int fd, uint64_t from, uint64_t n,
		       int rev, uint8_t *buf, char *err, size_t err_cap)
{
	struct sink s = {.j = j, .fd = fd, .pos = from, .buf = buf};
	struct http_client_response rs;
	char pq[200];
	/* the slowest we accept: 1 MB/s, or the limit */
	long timeout = 30000 + (long)(n / 1000);

	if (j->mbps > 0 && j->mbps < 1)
		timeout = 30000 + (long)((double)n / (j->mbps * 1000.0));
	snprintf(pq, sizeof(pq),
		 "/admin/volume/file?volume=%u&ext=%s&offset=%" PRIu64 "&size=%" PRIu64
		 "&revision=%d",
		 j->vid, ext, from, n, rev);
	{
		uint64_t before = j->done_bytes;
		int ret = splice_piece(j, pq, fd, from, n, err, err_cap);

		if (ret != -ENOTSUP)
			return ret;
		j->done_bytes = before;
	}
	if (call_peer(j->c, "GET", j->source, pq, NULL, 0, timeout, sink_write, &s, 0, &rs) < 0 ||
	    (s.err = sink_flush(&s)) < 0) {
		if (s.err == -ECANCELED)
			snprintf(err, err_cap, "cancelled");
		else if (s.err < 0)
			snprintf(err, err_cap, "cannot write the copy: %s", strerror(-s.err));
		else
			snprintf(err, err_cap, "source %s: %.200s", j->source, rs.error);
		http_client_response_release(&rs);
		return s.err < 0 ? s.err : -EIO;
	}
	http_client_response_release(&rs);
	if (rs.status == 409)
		return -ESTALE;
	if (rs.status != 200 || s.pos != from + n) {
		snprintf(err, err_cap, "source %s answered %ld for .%s %" PRIu64 "+%" PRIu64,
			 j->source, rs.status, ext, from, n);
		return -EIO;
	}
	return 0;
}

struct streams {
	struct copy_job *j;
	const char *ext;
	int fd, rev;
	pthread_mutex_t lock; /* next, ret, err */
	uint64_t next, to;
	int ret;
	char err[600];
};

static void *stream_thread(void *arg)
{
	struct streams *st = arg;
	uint8_t *buf = malloc(SINK_BUF);
	char err[600];

	pthread_mutex_lock(&st->lock);
	if (!buf && st->ret == 0) {
		st->ret = -ENOMEM;
		snprintf(st->err, sizeof(st->err), "out of memory");
	}
	while (buf && st->ret == 0 && st->next < st->to) {
		uint64_t from = st->next,
			 n = st->to - from > COPY_SLICE ? COPY_SLICE : st->to - from;
		int ret;

		st->next += n;
		pthread_mutex_unlock(&st->lock);
		ret = fetch_piece(st->j, st->ext, st->fd, from, n, st->rev, buf, err, sizeof(err));
		pthread_mutex_lock(&st->lock);
		if (ret < 0 && st->ret == 0) {
			st->ret = ret;
			snprintf(st->err, sizeof(st->err), "%s", err);
		}
	}
	pthread_mutex_unlock(&st->lock);
	free(buf);
	return NULL;
}

/* Fetches [from, to) of the source's .ext into fd at the same offsets, in up to
 * COPY_STREAMS requests at once. 0, -ESTALE, or -errno (job_fail done). */
static int fetch(struct copy_job *j, const char *ext, int fd, uint64_t from, uint64_t to, int rev,
		 uint8_t *buf)
{
	struct streams st = {.j = j, .ext = ext, .fd = fd, .rev = rev, .next = from, .to = to};
	pthread_t th[COPY_STREAMS];
	int n_threads = 0, ret = 0;

	if (from >= to)
		return 0;
	if (to - from <= COPY_SLICE) {
		char err[600];

		ret = fetch_piece(j, ext, fd, from, to - from, rev, buf, err, sizeof(err));
		if (ret < 0 && ret != -ESTALE)
			job_fail(j, "%s", err);
		return ret;
	}
	pthread_mutex_init(&st.lock, NULL);
	for (int i = 0; i < COPY_STREAMS && (uint64_t)i * COPY_SLICE < to - from; i++)
		if (pthread_create(&th[n_threads], NULL, stream_thread, &st) == 0)
			n_threads++;
	if (n_threads == 0)
		stream_thread(&st);
	for (int i = 0; i < n_threads; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&st.lock);
	if (st.ret < 0 && st.ret != -ESTALE)
		job_fail(j, "%s", st.err);
	return st.ret;
}

struct local_crc {
	int dat_fd, idx_fd;
	uint64_t dat_size, idx_size;
	uint32_t dat_crc, idx_crc;
	int ret;
};

static void *local_crc_thread(void *arg)
{
	struct local_crc *l = arg;

	l->ret = crc_of_prefix(l->dat_fd, l->dat_size, &l->dat_crc);
	if (l->ret == 0)
		l->ret = crc_of_prefix(l->idx_fd, l->idx_size, &l->idx_crc);
	return NULL;
}

/* Checks the sizes, and the CRC32Cs of the copy (read back, while the source computes
 * its own) against the source's. */
static int verify(struct copy_job *j, int dat_fd, int idx_fd, uint64_t dat_size, uint64_t idx_size,
		  int rev)
{
	char pq[200];
	struct http_client_response rs;
	json_t *js = NULL;
	int ret = 0;
	struct stat st;
	struct local_crc l = {dat_fd, idx_fd, dat_size, idx_size, 0, 0, 0};
	pthread_t th;
	bool threaded;

	if (fstat(dat_fd, &st) < 0 || (uint64_t)st.st_size != dat_size || fstat(idx_fd, &st) < 0 ||
	    (uint64_t)st.st_size != idx_size) {
		job_fail(j, "the copy's sizes differ from the source's");
		return -EIO;
	}
	threaded = pthread_create(&th, NULL, local_crc_thread, &l) == 0;
	if (!threaded)
		local_crc_thread(&l);
	snprintf(pq, sizeof(pq),
		 "/admin/volume/checksum?volume=%u&datSize=%" PRIu64 "&idxSize=%" PRIu64
		 "&revision=%d",
		 j->vid, dat_size, idx_size, rev);
	if (call_peer(j->c, "GET", j->source, pq, NULL, 0, 600000, NULL, NULL, 0, &rs) < 0) {
		job_fail(j, "source %s: %s", j->source, rs.error);
		ret = -EIO;
	} else {
		js = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
	}
	if (threaded)
		pthread_join(th, NULL);
	if (ret < 0) {
		/* reported above */
	} else if (l.ret < 0) {
		job_fail(j, "cannot read the copy back: %s", strerror(-l.ret));
		ret = l.ret;
	} else if (rs.status == 409) {
		ret = -ESTALE;
	} else if (!js) {
		job_fail(j, "source %s answered %ld to the checksum: %.200s", j->source, rs.status,
			 rs.body);
		ret = -EIO;
	} else if ((uint32_t)json_integer_value(json_object_get(js, "DatCrc")) != l.dat_crc ||
		   (uint32_t)json_integer_value(json_object_get(js, "IdxCrc")) != l.idx_crc) {
		job_fail(j, "checksum mismatch: the copy differs from the source");
		ret = -EIO;
	}
	json_decref(js);
	http_client_response_release(&rs);
	return ret;
}

static int copy_files(struct copy_job *j, int dat_fd, int idx_fd, uint8_t *buf)
{
	uint64_t have_dat = 0, have_idx = 0;
	int rev = -1, ret;

	for (int round = 0; round < COPY_MAX_ROUNDS; round++) {
		struct info in;
		bool finishing = !j->wait_finish || atomic_load(&j->finish);

		if (atomic_load(&j->cancel)) {
			job_fail(j, "cancelled");
			return -ECANCELED;
		}
		ret = get_info(j, &in);
		if (ret < 0)
			return ret;
		if (in.revision != rev || in.dat_size < have_dat || in.idx_size < have_idx) {
			/* first round, or a vacuum swapped the source's files: from zero */
			if (rev >= 0)
				log_info(
				    "copy of volume %u: the source was vacuumed, starting over",
				    j->vid);
			if (ftruncate(dat_fd, 0) < 0 || ftruncate(idx_fd, 0) < 0) {
				job_fail(j, "cannot truncate the copy: %s", strerror(errno));
				return -errno;
			}
			have_dat = have_idx = 0;
			j->done_bytes = 0;
			rev = in.revision;
		}
		j->total_bytes =
		    j->done_bytes + (in.dat_size - have_dat) + (in.idx_size - have_idx);
		if (in.dat_size == have_dat && in.idx_size == have_idx) {
			if (finishing) {
				ret = verify(j, dat_fd, idx_fd, have_dat, have_idx, rev);
				if (ret == -ESTALE)
					continue;
				return ret;
			}
			j->state = COPY_CAUGHT_UP;
			usleep(200000);
			continue;
		}
		ret = fetch(j, "dat", dat_fd, have_dat, in.dat_size, rev, buf);
		if (ret == 0)
			ret = fetch(j, "idx", idx_fd, have_idx, in.idx_size, rev, buf);
		if (ret == -ESTALE) {
			rev = -2; /* force a restart at the next round */
			continue;
		}
		if (ret < 0)
			return ret;
		have_dat = in.dat_size;
		have_idx = in.idx_size;
	}
	job_fail(j, "the source kept changing for %d rounds", COPY_MAX_ROUNDS);
	return -EBUSY;
}

static void *copy_thread(void *arg)
{
	struct copy_job *j = arg;
	struct copier *c = j->c;
	char tdat[4300], tidx[4300], dat[4300], idx[4300];
	int dat_fd = -1, idx_fd = -1, ret;
	uint64_t copied_ns = 0;
	uint8_t *buf;
	struct info in;

	ret = get_info(j, &in);
	if (ret < 0)
		goto out;
	snprintf(j->collection, sizeof(j->collection), "%s", in.collection);
	ret = store_copy_dir(c->env.store, j->vid, j->dir, sizeof(j->dir));
	if (ret < 0) {
		job_fail(j,
			 ret == -EEXIST ? "volume %u is already on this server"
					: "no free volume slot or disk space for volume %u",
			 j->vid);
		goto out;
	}
	if (volume_file_name(j->dir, j->collection, j->vid, STORE_COPY_DAT_EXT, tdat,
			     sizeof(tdat)) < 0 ||
	    volume_file_name(j->dir, j->collection, j->vid, STORE_COPY_IDX_EXT, tidx,
			     sizeof(tidx)) < 0 ||
	    volume_file_name(j->dir, j->collection, j->vid, ".dat", dat, sizeof(dat)) < 0 ||
	    volume_file_name(j->dir, j->collection, j->vid, ".idx", idx, sizeof(idx)) < 0) {
		job_fail(j, "file name too long");
		ret = -ENAMETOOLONG;
		goto out;
	}
	dat_fd = open(tdat, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	idx_fd = open(tidx, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (dat_fd < 0 || idx_fd < 0) {
		ret = -errno;
		job_fail(j, "cannot create %s: %s", tdat, strerror(errno));
		goto out;
	}
	buf = malloc(SINK_BUF);
	if (!buf) {
		job_fail(j, "out of memory");
		ret = -ENOMEM;
	} else {
		ret = copy_files(j, dat_fd, idx_fd, buf);
		free(buf);
	}
	copied_ns = monotonic_ns();
	if (ret == 0 && (fsync(dat_fd) < 0 || fsync(idx_fd) < 0)) {
		ret = -errno;
		job_fail(j, "fsync: %s", strerror(errno));
	}
	if (ret < 0)
		goto out;
	close(dat_fd);
	close(idx_fd);
	dat_fd = idx_fd = -1;
	/* The .dat rename is the commit point: an .idx without its .dat is never loaded,
	 * and a .dat without its .idx gets its index rebuilt at open. */
	if (access(dat, F_OK) == 0) {
		job_fail(j, "%s appeared meanwhile", dat);
		ret = -EEXIST;
		goto out;
	}
	if (rename(tidx, idx) < 0 || rename(tdat, dat) < 0) {
		ret = -errno;
		job_fail(j, "rename: %s", strerror(errno));
		goto out;
	}
	fsync_dir(j->dir);
	ret = store_adopt_volume(c->env.store, j->dir, j->collection, j->vid);
	if (ret < 0) {
		job_fail(j, "cannot open the copied volume: %s", strerror(-ret));
		if (ret != -EEXIST) {
			unlink(dat);
			unlink(idx);
		}
		goto out;
	}
	if (c->env.volumes_changed)
		c->env.volumes_changed(c->env.ctx);
	log_info("copy of volume %u from %s: done, %" PRIu64
		 " bytes in %.2f s (streamed and verified in %.2f s, fsync %.2f s)",
		 j->vid, j->source, (uint64_t)j->done_bytes,
		 (double)(monotonic_ns() - j->started_ns) / 1e9,
		 (double)(copied_ns - j->started_ns) / 1e9,
		 (double)(monotonic_ns() - copied_ns) / 1e9);
out:
	if (dat_fd >= 0)
		close(dat_fd);
	if (idx_fd >= 0)
		close(idx_fd);
	if (ret < 0 && j->dir[0]) {
		unlink(tdat);
		unlink(tidx);
	}
	if (ret < 0)
		log_warn("copy of volume %u from %s failed: %s", j->vid, j->source, j->error);
	j->ended_ns = monotonic_ns();
	j->state = ret == 0					  ? COPY_DONE
		   : ret == -ECANCELED || atomic_load(&j->cancel) ? COPY_CANCELLED
								  : COPY_FAILED;
	return NULL;
}

static bool job_active(const struct copy_job *j)
{
	return j->state == COPY_RUNNING || j->state == COPY_CAUGHT_UP;
}

/* Joins finished threads and drops the oldest finished jobs. Caller holds lock. */
static void reap(struct copier *c)
{
	int kept = 0;

	for (struct copy_job **p = &c->jobs; *p;) {
		struct copy_job *j = *p;

		if (!job_active(j) && !j->joined) {
			pthread_join(j->thread, NULL);
			j->joined = true;
		}
		if (!job_active(j) && ++kept > COPY_KEEP_DONE) {
			*p = j->next;
			free(j);
			continue;
		}
		p = &j->next;
	}
}

static struct copy_job *find_active(struct copier *c, uint32_t vid)
{
	for (struct copy_job *j = c->jobs; j; j = j->next)
		if (j->vid == vid && job_active(j))
			return j;
	return NULL;
}

static void handle_copy(struct copier *c, struct http_request *req, uint32_t vid)
{
	const char *source = http_query(req, "source"), *mbps = http_query(req, "mbps");
	const char *finish = http_query(req, "finish");
	struct copy_job *j;
	struct volume *v;
	int running = 0;
	char *end = NULL;
	double rate = 0;

	if (!source || !auth_public_url_valid(source)) {
		http_reply_error(req, 400, "parameter source must be a volume server's host:port");
		return;
	}
	if (!strcmp(source, c->env.self_url)) {
		http_reply_error(req, 400, "a volume cannot be copied from this server to itself");
		return;
	}
	if (mbps && *mbps) {
		rate = strtod(mbps, &end);
		if (*end || rate < 0) {
			http_reply_error(req, 400, "parameter mbps must be a number >= 0");
			return;
		}
	}
	if (finish && strcmp(finish, "wait") && strcmp(finish, "auto")) {
		http_reply_error(req, 400, "parameter finish must be auto or wait");
		return;
	}
	v = store_get_volume(c->env.store, vid);
	if (v) {
		store_put_volume(c->env.store, v);
		http_reply_error(req, 409, "volume %u is already on this server", vid);
		return;
	}
	pthread_mutex_lock(&c->lock);
	reap(c);
	for (j = c->jobs; j; j = j->next)
		running += job_active(j);
	if (c->stopping || find_active(c, vid)) {
		pthread_mutex_unlock(&c->lock);
		http_reply_error(req, 409, "volume %u is being copied here already", vid);
		return;
	}
	if (running >= (c->env.max_running > 0 ? c->env.max_running : 8)) {
		pthread_mutex_unlock(&c->lock);
		http_reply_error(req, 503, "%d copies are running on this server; retry later",
				 running);
		http_add_header(req, "Retry-After", "1");
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		pthread_mutex_unlock(&c->lock);
		http_reply_error(req, 500, "out of memory");
		return;
	}
	j->c = c;
	j->vid = vid;
	snprintf(j->source, sizeof(j->source), "%s", source);
	j->mbps = rate;
	j->wait_finish = finish && !strcmp(finish, "wait");
	j->state = COPY_RUNNING;
	j->started_ns = monotonic_ns();
	pthread_mutex_init(&j->throttle_lock, NULL);
	if (pthread_create(&j->thread, NULL, copy_thread, j) != 0) {
		pthread_mutex_unlock(&c->lock);
		free(j);
		http_reply_error(req, 500, "cannot start a thread");
		return;
	}
	j->next = c->jobs;
	c->jobs = j;
	pthread_mutex_unlock(&c->lock);
	log_info("copy of volume %u from %s: started%s", vid, source,
		 j->wait_finish ? " (finishes when told)" : "");
	http_reply_json(req, 202,
			json_pack("{s:I,s:s}", "volume", (json_int_t)vid, "source", source));
}

static json_t *job_json(const struct copy_job *j)
{
	uint64_t end = j->ended_ns ? j->ended_ns : monotonic_ns();

	return json_pack("{s:I,s:s,s:s,s:I,s:I,s:f,s:s}", "volume", (json_int_t)j->vid, "source",
			 j->source, "state", state_names[j->state], "bytes",
			 (json_int_t)j->done_bytes, "total", (json_int_t)j->total_bytes, "seconds",
			 (double)(end - j->started_ns) / 1e9, "error", j->error);
}

json_t *copier_status_json(struct copier *c)
{
	json_t *a = json_array();

	pthread_mutex_lock(&c->lock);
	reap(c);
	for (struct copy_job *j = c->jobs; j; j = j->next)
		json_array_append_new(a, job_json(j));
	pthread_mutex_unlock(&c->lock);
	return a;
}

/* ---------------------------------------------------------------- check.disk */

struct state_list {
	struct volume_needle_state *s;
	size_t n;
};

static int by_key(const void *a, const void *b)
{
	const struct volume_needle_state *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

static int peer_states(struct copier *c, const char *peer, uint32_t vid, struct state_list *out,
		       char *err, size_t cap)
{
	char pq[100];
	struct http_client_response rs;

	snprintf(pq, sizeof(pq), "/admin/volume/needles?volume=%u", vid);
	if (call_peer(c, "GET", peer, pq, NULL, 0, 120000, NULL, NULL, 1ull << 31, &rs) < 0) {
		snprintf(err, cap, "%s: %s", peer, rs.error);
		return -EIO;
	}
	if (rs.status != 200 || rs.len % STATE_RECORD_SIZE) {
		snprintf(err, cap, "%s answered %ld: %.200s", peer, rs.status, rs.body);
		http_client_response_release(&rs);
		return -EIO;
	}
	out->n = rs.len / STATE_RECORD_SIZE;
	out->s = calloc(out->n + 1, sizeof(*out->s));
	if (!out->s) {
		http_client_response_release(&rs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < out->n; i++) {
		const uint8_t *p = (const uint8_t *)rs.body + i * STATE_RECORD_SIZE;

		out->s[i].key = get_be64(p);
		out->s[i].offset = get_be32(p + 8);
		out->s[i].size = get_be32(p + 12);
		out->s[i].cookie = get_be32(p + 16);
		out->s[i].checksum = get_be32(p + 20);
		out->s[i].append_at_ns = get_be64(p + 24);
	}
	http_client_response_release(&rs);
	return 0;
}

struct check_result {
	uint64_t local_keys, peer_keys, to_peer, from_peer, deletes_to_peer, deletes_from_peer,
	    failed;
	char err[300];
};

/* Sends our record of s to peer. */
static int push_record(struct copier *c, struct volume *v, const char *peer,
		       const struct volume_needle_state *s, char *err, size_t cap)
{
	uint8_t *rec;
	size_t len;
	char pq[100];
	struct http_client_response rs;
	int ret = volume_read_record(v, s->offset, &rec, &len);

	if (ret < 0) {
		snprintf(err, cap, "cannot read needle %" PRIx64 ": %s", s->key, strerror(-ret));
		return ret;
	}
	snprintf(pq, sizeof(pq), "/admin/volume/append?volume=%u", volume_id(v));
	ret = call_peer(c, "POST", peer, pq, rec, len, 120000, NULL, NULL, 0, &rs);
	free(rec);
	if (ret < 0 || rs.status != 200) {
		snprintf(err, cap, "%s: %ld %.200s", peer, rs.status, ret < 0 ? rs.error : rs.body);
		ret = -EIO;
	}
	http_client_response_release(&rs);
	return ret;
}

static int pull_record(struct copier *c, struct volume *v, const char *peer,
		       const struct volume_needle_state *s, char *err, size_t cap)
{
	char pq[120];
	struct http_client_response rs;
	int ret;

	snprintf(pq, sizeof(pq), "/admin/volume/record?volume=%u&offset=%u", volume_id(v),
		 s->offset);
	ret = call_peer(c, "GET", peer, pq, NULL, 0, 120000, NULL, NULL, 1100u << 20, &rs);
	if (ret < 0 || rs.status != 200) {
		snprintf(err, cap, "%s: %ld %.200s", peer, rs.status, ret < 0 ? rs.error : rs.body);
		http_client_response_release(&rs);
		return -EIO;
	}
	ret = volume_append_record(v, (const uint8_t *)rs.body, rs.len);
	if (ret < 0)
		snprintf(err, cap, "cannot append needle %" PRIx64 ": %s", s->key, strerror(-ret));
	http_client_response_release(&rs);
	return ret;
}

static void check_disk(struct copier *c, struct volume *v, const char *peer, bool apply,
		       uint64_t cutoff_ns, struct check_result *r)
{
	struct state_list mine = {0}, theirs = {0};
	size_t i = 0, k = 0;
	int ret = volume_needle_states(v, &mine.s, &mine.n);

	if (ret < 0) {
		snprintf(r->err, sizeof(r->err), "cannot list the local needles: %s",
			 strerror(-ret));
		r->failed++;
		return;
	}
	if (peer_states(c, peer, volume_id(v), &theirs, r->err, sizeof(r->err)) < 0) {
		free(mine.s);
		r->failed++;
		return;
	}
	r->local_keys = mine.n;
	r->peer_keys = theirs.n;
	qsort(mine.s, mine.n, sizeof(*mine.s), by_key);
	qsort(theirs.s, theirs.n, sizeof(*theirs.s), by_key);
	while (i < mine.n || k < theirs.n) {
		const struct volume_needle_state *a = NULL, *b = NULL;
		char err[300];

		if (k >= theirs.n || (i < mine.n && mine.s[i].key < theirs.s[k].key)) {
			a = &mine.s[i++];
		} else if (i >= mine.n || theirs.s[k].key < mine.s[i].key) {
			b = &theirs.s[k++];
		} else {
			a = &mine.s[i++];
			b = &theirs.s[k++];
		}
		/* The same write on both (replicas append it with their own clocks): the
		 * same state, cookie, size and CRC. */
		if (a && b &&
		    ((a->size == VOLUME_TOMBSTONE_SIZE && b->size == VOLUME_TOMBSTONE_SIZE) ||
		     (a->size == b->size && a->cookie == b->cookie && a->checksum == b->checksum)))
			continue;
		if (a && (!b || a->append_at_ns > b->append_at_ns)) {
			bool del = a->size == VOLUME_TOMBSTONE_SIZE;

			/* A deletion of what the peer never had, or a record too young
			 * (replication may still be on its way): nothing to do. */
			if ((del && !b) || a->offset == 0 || a->append_at_ns >= cutoff_ns)
				continue;
			if (del)
				r->deletes_to_peer++;
			else
				r->to_peer++;
			if (apply && push_record(c, v, peer, a, err, sizeof(err)) < 0) {
				r->failed++;
				snprintf(r->err, sizeof(r->err), "%s", err);
			}
		} else {
			bool del = b->size == VOLUME_TOMBSTONE_SIZE;

			if ((del && !a) || b->offset == 0 || b->append_at_ns >= cutoff_ns)
				continue;
			if (del)
				r->deletes_from_peer++;
			else
				r->from_peer++;
			if (apply && pull_record(c, v, peer, b, err, sizeof(err)) < 0) {
				r->failed++;
				snprintf(r->err, sizeof(r->err), "%s", err);
			}
		}
	}
	free(mine.s);
	free(theirs.s);
}

static void handle_check_disk(struct copier *c, struct http_request *req, struct volume *v)
{
	const char *peer = http_query(req, "peer"), *apply = http_query(req, "apply");
	uint64_t cutoff_s = 10;
	struct check_result r = {0};
	bool do_apply = !apply || strcmp(apply, "false");

	if (!peer || !auth_public_url_valid(peer) || !strcmp(peer, c->env.self_url)) {
		http_reply_error(req, 400,
				 "parameter peer must be another volume server's host:port");
		return;
	}
	if (parse_u64_param(req, "cutoffSeconds", false, &cutoff_s) < 0)
		return;
	check_disk(c, v, peer, do_apply, now_ns() - cutoff_s * 1000000000ull, &r);
	if (r.failed && r.local_keys + r.peer_keys == 0 && r.err[0]) {
		http_reply_error(req, 502, "%s", r.err);
		return;
	}
	http_reply_json(req, 200,
			json_pack("{s:I,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "volume",
				  (json_int_t)volume_id(v), "peer", peer, "applied", do_apply,
				  "localKeys", (json_int_t)r.local_keys, "peerKeys",
				  (json_int_t)r.peer_keys, "copiedToPeer", (json_int_t)r.to_peer,
				  "copiedFromPeer", (json_int_t)r.from_peer, "deletedOnPeer",
				  (json_int_t)r.deletes_to_peer, "deletedHere",
				  (json_int_t)r.deletes_from_peer, "failed", (json_int_t)r.failed,
				  "error", r.err));
}

/* ---------------------------------------------------------------- dispatch */

void copier_handle(struct copier *c, struct http_request *req, const char *op)
{
	struct volume *v;
	uint32_t vid;

	if (!strcmp(op, "copy/status")) {
		http_reply_json(req, 200, json_pack("{s:o}", "Copies", copier_status_json(c)));
		return;
	}
	if (parse_vid(req, &vid) < 0)
		return;
	if (!strcmp(op, "copy")) {
		handle_copy(c, req, vid);
		return;
	}
	if (!strcmp(op, "copy/finish") || !strcmp(op, "copy/cancel")) {
		struct copy_job *j;

		pthread_mutex_lock(&c->lock);
		j = find_active(c, vid);
		if (j) {
			if (!strcmp(op, "copy/finish"))
				j->finish = true;
			else
				j->cancel = true;
		}
		pthread_mutex_unlock(&c->lock);
		if (j)
			http_reply_json(req, 200, json_pack("{s:I}", "volume", (json_int_t)vid));
		else
			http_reply_error(req, 404, "no copy of volume %u is running here", vid);
		return;
	}
	if (!strcmp(op, "append")) {
		struct append_body *b = calloc(1, sizeof(*b));

		if (!b) {
			http_reply_error(req, 500, "out of memory");
			return;
		}
		b->c = c;
		b->vid = vid;
		req->state = b;
		req->on_body = append_on_body;
		req->on_complete = append_on_complete;
		req->on_cleanup = append_on_cleanup;
		return;
	}
	v = store_get_volume(c->env.store, vid);
	if (!v) {
		http_reply_error(req, 404, "volume %u not found", vid);
		return;
	}
	if (!strcmp(op, "info")) {
		struct volume_snapshot snap;

		volume_take_snapshot(v, &snap);
		http_reply_json(req, 200, snapshot_json(v, &snap));
	} else if (!strcmp(op, "file")) {
		handle_file(c, req, v);
	} else if (!strcmp(op, "checksum")) {
		handle_checksum(req, v);
	} else if (!strcmp(op, "needles")) {
		handle_needles(req, v);
	} else if (!strcmp(op, "record")) {
		handle_record(req, v);
	} else if (!strcmp(op, "check_disk")) {
		handle_check_disk(c, req, v);
	} else {
		http_reply_error(req, 404, "unknown admin operation \"volume/%s\"", op);
	}
	store_put_volume(c->env.store, v);
}

int copier_new(const struct copier_env *env, struct copier **out)
{
	struct copier *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->env = *env;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

void copier_free(struct copier *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	for (struct copy_job *j = c->jobs; j; j = j->next)
		j->cancel = true;
	pthread_mutex_unlock(&c->lock);
	for (;;) {
		bool active = false;

		pthread_mutex_lock(&c->lock);
		for (struct copy_job *j = c->jobs; j; j = j->next)
			active |= job_active(j);
		pthread_mutex_unlock(&c->lock);
		if (!active)
			break;
		usleep(10000);
	}
	for (struct copy_job *j = c->jobs, *next; j; j = next) {
		next = j->next;
		if (!j->joined)
			pthread_join(j->thread, NULL);
		free(j);
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}
