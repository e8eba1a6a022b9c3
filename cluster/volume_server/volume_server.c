#include "cluster/volume_server/volume_server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "cluster/net/auth.h"
#include "cluster/base/log.h"
#include "cluster/base/md5.h"
#include "cluster/base/util.h"
#include "cluster/common/fid.h"
#include "cluster/common/heartbeat.h"
#include "cluster/net/http.h"
#include "cluster/net/metrics_http.h"
#include "cluster/volume_server/vs_metrics.h"
#include "cluster/volume_server/vs_ui.h"
#include "cluster/net/http_client.h"
#include "cluster/net/jwt.h"
#include "cluster/net/multipart.h"
#include "cluster/net/range.h"
#include "cluster/storage/store.h"
#include "cluster/volume_server/copy.h"
#include "cluster/common/layout.h"

#define MEMORY_BODY_LIMIT                                                                          \
	((4u << 20) + (64u << 10)) /* a default 4 MiB mount chunk stays in memory */
#define SERVER_HEADER "kelp Volume " KELP_VERSION

#define LOCATION_CACHE_NS   (10ull * 1000000000ull)
#define MAX_MASTERS	    64
#define PEER_REFRESH_PULSES 10
#define LOCATION_CACHE_SIZE 64

struct cached_locations {
	uint32_t vid;
	uint64_t expires;
	int n;
	char urls[8][160];
};

struct volume_server {
	struct volume_server_options opt;
	struct store *store;
	struct http_server *http;
	uint64_t size_limit; /* bytes */
	char self_url[128];  /* ip:port */
	char public_url[256];

	pthread_mutex_t masters_lock; /* masters, n_masters, hb_threads */
	char *masters[MAX_MASTERS];   /* from -master, then learned from /cluster/status */
	int n_masters;
	pthread_t hb_threads[MAX_MASTERS];
	int n_hb_threads;
	pthread_t space_thread; /* watches the free space of the data directories */
	bool space_started;
	pthread_mutex_t hb_lock; /* stopping, hb_generation */
	pthread_cond_t hb_cond;
	bool stopping;
	uint64_t hb_generation; /* bumped when volumes change: heartbeat at once */
	_Atomic uint64_t volume_size_limit;
	_Atomic uint64_t last_skip_log_ns; /* rate limit of "volume left out" */
	_Atomic int inflating;		   /* gzip blobs being inflated for a reply */
	_Atomic uint64_t multirange_bytes; /* held by multi-range replies of large blobs */
	_Atomic uint64_t proxy_bytes;	   /* reserved by proxied reads */

	pthread_mutex_t cache_lock;
	struct cached_locations cache[LOCATION_CACHE_SIZE];

	char **white_list;
	int n_white_list;
	struct copier *copier;	    /* volume copies and check.disk (copy.h) */
	struct vs_metrics *metrics; /* /metrics, /ui (vs_metrics.c, vs_ui.c) */
};

/* ---------------------------------------------------------------- helpers */

static const struct {
	const char *ext;
	const char *mime;
} mime_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
    {".xml", "text/xml; charset=utf-8"},
    {".csv", "text/csv; charset=utf-8"},
    {".md", "text/markdown; charset=utf-8"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".png", "image/png"},
    {".gif", "image/gif"},
    {".webp", "image/webp"},
    {".svg", "image/svg+xml"},
    {".ico", "image/vnd.microsoft.icon"},
    {".pdf", "application/pdf"},
    {".zip", "application/zip"},
    {".gz", "application/gzip"},
    {".tar", "application/x-tar"},
    {".mp4", "video/mp4"},
    {".mp3", "audio/mpeg"},
    {".wasm", "application/wasm"},
    {".bin", "application/octet-stream"},
};

static const char *mime_by_name(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(mime_types) / sizeof(mime_types[0]); i++) {
		size_t el = strlen(mime_types[i].ext);

		if (len >= el && !strncasecmp(name + len - el, mime_types[i].ext, el))
			return mime_types[i].mime;
	}
	return NULL;
}

static int parse_vid_param(struct http_request *req, uint32_t *vid)
{
	const char *s = http_query(req, "volume");

	if (!s || fid_parse_vid(s, strlen(s), vid) < 0) {
		http_reply_error(req, 400, "parameter volume must be a volume id, got \"%s\"",
				 s ? s : "");
		return -EINVAL;
	}
	return 0;
}

static bool keyed(const struct volume_server *vs)
{
	return vs->opt.jwt_key && *vs->opt.jwt_key;
}

static void etag_of(uint32_t crc, char *buf, size_t cap)
{
	snprintf(buf, cap, "\"%08x\"", crc);
}

/* ---------------------------------------------------------------- cluster side */

static void kick_heartbeat(struct volume_server *vs)
{
	pthread_mutex_lock(&vs->hb_lock);
	vs->hb_generation++;
	pthread_cond_broadcast(&vs->hb_cond);
	pthread_mutex_unlock(&vs->hb_lock);
}

static void volumes_changed(void *ctx)
{
	kick_heartbeat(ctx);
}

/*
 * Every second: volumes on a disk short of -minFreeSpace turn read-only (and back when
 * space returns); the masters hear of it at once, so they assign elsewhere.
 */
static void *space_thread(void *arg)
{
	struct volume_server *vs = arg;
	struct timespec ts;

	pthread_mutex_lock(&vs->hb_lock);
	while (!vs->stopping) {
		pthread_mutex_unlock(&vs->hb_lock);
		if (store_check_space(vs->store))
			kick_heartbeat(vs);
		pthread_mutex_lock(&vs->hb_lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		while (!vs->stopping &&
		       pthread_cond_timedwait(&vs->hb_cond, &vs->hb_lock, &ts) == 0)
			;
	}
	pthread_mutex_unlock(&vs->hb_lock);
	return NULL;
}

struct hb_build {
	struct volume_server *vs;
	struct hb_volume *vols;
	size_t n, cap;
	uint64_t max_file_key;
};

static void hb_add_volume(void *ctx, struct volume *v)
{
	struct hb_build *b = ctx;
	struct volume_info info;
	struct hb_volume *h;

	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct hb_volume *p = realloc(b->vols, cap * sizeof(*p));

		if (!p)
			return;
		b->vols = p;
		b->cap = cap;
	}
	volume_get_info(v, &info);
	/*
	 * A volume the masters would refuse (a collection name outside the safe alphabet,
	 * e.g. a file copied in by hand, or an id out of bounds) is left out, loudly, so
	 * the rest of the server stays in the cluster.
	 */
	if (!auth_collection_valid(info.collection) || info.id == 0 ||
	    info.id > AUTH_MAX_VOLUME_ID || info.max_file_key >= AUTH_MAX_FILE_KEY) {
		uint64_t now = monotonic_ns();

		if (now - b->vs->last_skip_log_ns > 60000000000ull || !b->vs->last_skip_log_ns) {
			b->vs->last_skip_log_ns = now;
			log_error("volume server: volume %u (collection \"%.*s\") is left out of "
				  "the heartbeats: its collection name, id or file keys are "
				  "outside what masters accept; rename or remove its files",
				  info.id, 64, info.collection);
		}
		return;
	}
	h = &b->vols[b->n++];
	memset(h, 0, sizeof(*h));
	h->id = info.id;
	h->size = info.size;
	snprintf(h->collection, sizeof(h->collection), "%s", info.collection);
	h->file_count = info.file_count;
	h->delete_count = info.delete_count;
	h->deleted_bytes = info.deleted_bytes;
	h->read_only = info.read_only;
	h->low_space = info.low_space;
	h->replica_placement = info.replica_placement;
	h->version = info.version;
	h->ttl = (uint32_t)info.ttl.count << 8 | info.ttl.unit;
	h->compact_revision = info.compact_revision;
	h->modified_at_second = info.modified_at_second;
	if (info.max_file_key > b->max_file_key)
		b->max_file_key = info.max_file_key;
}

/* goodbye: the last heartbeat of a stopping server, with no volumes. */
static int build_heartbeat(struct volume_server *vs, bool goodbye, uint8_t **out, size_t *len)
{
	struct hb_build b = {.vs = vs};
	struct heartbeat hb;
	int max_volumes, count, ret;

	memset(&hb, 0, sizeof(hb));
	if (!goodbye)
		store_each_volume(vs->store, hb_add_volume, &b);
	store_counts(vs->store, &max_volumes, &count);
	snprintf(hb.ip, sizeof(hb.ip), "%s", vs->opt.ip && *vs->opt.ip ? vs->opt.ip : "127.0.0.1");
	hb.port = (uint32_t)http_server_port(vs->http);
	snprintf(hb.public_url, sizeof(hb.public_url), "%s", vs->public_url);
	hb.max_volume_count = (uint32_t)max_volumes;
	store_disk_space(vs->store, &hb.disk_total, &hb.disk_free);
	hb.max_file_key = b.max_file_key;
	snprintf(hb.data_center, sizeof(hb.data_center), "%s",
		 vs->opt.data_center ? vs->opt.data_center : "");
	snprintf(hb.rack, sizeof(hb.rack), "%s", vs->opt.rack ? vs->opt.rack : "");
	snprintf(hb.id, sizeof(hb.id), "%s", vs->self_url);
	hb.volumes = b.vols;
	hb.n_volumes = b.n;
	hb.has_no_volumes = b.n == 0;
	ret = heartbeat_encode(&hb, out, len);
	if (ret < 0)
		log_error("volume server: cannot encode a heartbeat of %zu volumes (%s): the "
			  "masters will lose this server",
			  b.n, strerror(-ret));
	free(b.vols);
	return ret;
}

struct hb_arg {
	struct volume_server *vs;
	const char *master;
};

static void start_heartbeat_thread(struct volume_server *vs, const char *master);

/*
 * Learns the other masters from one master's /cluster/status (Leader and Peers) and
 * starts heartbeating to each new one, so a server started with a single -master
 * keeps every master's topology warm and survives the death of that master.
 */
static void learn_masters(struct volume_server *vs, const char *master)
{
	char url[300];
	struct http_client_request rq = {
	    .method = "GET", .url = url, .body_fd = -1, .timeout_ms = 2000};
	struct http_client_response rs;
	json_t *j, *peers, *p;
	size_t i;

	char auth[AUTH_HEADER_LEN];
	const char *headers[2] = {NULL, NULL};

	snprintf(url, sizeof(url), "%s://%s/cluster/status", http_scheme(), master);
	/* A master with a white list shows its status to servers that prove the key. */
	if (keyed(vs) &&
	    auth_server_header(vs->opt.jwt_key, "GET", "/cluster/status", NULL, 0, auth) == 0) {
		headers[0] = auth;
		rq.headers = headers;
	}
	if (http_client_do(&rq, &rs) < 0)
		return;
	j = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
	http_client_response_release(&rs);
	if (!j)
		return;
	peers = json_object_get(j, "Peers");
	json_array_foreach(peers, i, p)
	{
		if (json_is_string(p))
			start_heartbeat_thread(vs, json_string_value(p));
	}
	if (json_is_string(json_object_get(j, "Leader")))
		start_heartbeat_thread(vs, json_string_value(json_object_get(j, "Leader")));
	json_decref(j);
}

/* One per master: a heartbeat every pulse, and at once when the volumes change. */
static void *heartbeat_thread(void *arg)
{
	struct hb_arg *a = arg;
	struct volume_server *vs = a->vs;
	uint64_t seen_generation = 0, failures = 0, beats = 0;
	int pulse = vs->opt.pulse_seconds > 0 ? vs->opt.pulse_seconds : 1;
	char url[300];

	snprintf(url, sizeof(url), "%s://%s/heartbeat", http_scheme(), a->master);
	for (;;) {
		struct http_client_request rq = {.method = "POST",
						 .url = url,
						 .body_fd = -1,
						 .timeout_ms = 1000L * pulse + 1000};
		struct http_client_response rs;
		char auth[AUTH_HEADER_LEN];
		const char *headers[] = {"Content-Type: application/x-protobuf", NULL, NULL};
		struct timespec ts;
		uint8_t *body;
		size_t len;

		if (build_heartbeat(vs, false, &body, &len) == 0) {
			/* With a key, the token covers this body: a heartbeat cannot be
			 * replayed with other volumes. */
			if (keyed(vs) && auth_server_header(vs->opt.jwt_key, "POST", "/heartbeat",
							    body, len, auth) == 0)
				headers[1] = auth;
			rq.body = body;
			rq.body_len = len;
			rq.headers = headers;
			if (http_client_do(&rq, &rs) == 0 && rs.status == 200) {
				struct heartbeat_response r;

				if (heartbeat_response_decode((const uint8_t *)rs.body, rs.len,
							      &r) == 0 &&
				    r.volume_size_limit > 0)
					vs->volume_size_limit = r.volume_size_limit;
				if (failures > 0)
					log_info("volume server: master %s is reachable again",
						 a->master);
				failures = 0;
				if (beats++ % PEER_REFRESH_PULSES == 0)
					learn_masters(vs, a->master);
			} else {
				if (failures++ == 0)
					log_warn("volume server: heartbeat to master %s failed: %s",
						 a->master, rs.status ? "bad status" : rs.error);
			}
			http_client_response_release(&rs);
			free(body);
		}
		pthread_mutex_lock(&vs->hb_lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += pulse;
		while (!vs->stopping && vs->hb_generation == seen_generation)
			if (pthread_cond_timedwait(&vs->hb_cond, &vs->hb_lock, &ts) != 0)
				break;
		seen_generation = vs->hb_generation;
		if (vs->stopping) {
			pthread_mutex_unlock(&vs->hb_lock);
			break;
		}
		pthread_mutex_unlock(&vs->hb_lock);
	}
	free(a);
	return NULL;
}

/* Starts heartbeating to master unless already doing so (or the list is full). */
static void start_heartbeat_thread(struct volume_server *vs, const char *master)
{
	struct hb_arg *a;

	pthread_mutex_lock(&vs->masters_lock);
	for (int i = 0; i < vs->n_masters; i++) {
		if (!strcmp(vs->masters[i], master)) {
			if (i >= vs->n_hb_threads)
				break; /* listed by -master, thread being started */
			pthread_mutex_unlock(&vs->masters_lock);
			return;
		}
	}
	if (vs->n_hb_threads >= MAX_MASTERS || vs->stopping) {
		pthread_mutex_unlock(&vs->masters_lock);
		return;
	}
	a = malloc(sizeof(*a));
	if (a && vs->n_hb_threads == vs->n_masters) {
		vs->masters[vs->n_masters] = strdup(master);
		if (vs->masters[vs->n_masters])
			vs->n_masters++;
	}
	if (a && vs->n_hb_threads < vs->n_masters) {
		a->vs = vs;
		a->master = vs->masters[vs->n_hb_threads];
		if (pthread_create(&vs->hb_threads[vs->n_hb_threads], NULL, heartbeat_thread, a) ==
		    0) {
			if (vs->n_hb_threads > 0)
				log_info("volume server: also heartbeating to master %s",
					 a->master);
			vs->n_hb_threads++;
			a = NULL;
		}
	}
	pthread_mutex_unlock(&vs->masters_lock);
	free(a);
}

static void invalidate_locations(struct volume_server *vs, uint32_t vid)
{
	pthread_mutex_lock(&vs->cache_lock);
	vs->cache[vid % LOCATION_CACHE_SIZE].expires = 0;
	pthread_mutex_unlock(&vs->cache_lock);
}

/*
 * Locations of vid from the masters (cached for 10 s), asking them in turn from the
 * first-th. -ENOENT unknown, -EIO no master answered.
 */
static int lookup_locations(struct volume_server *vs, uint32_t vid, int first,
			    struct cached_locations *out)
{
	struct cached_locations *c = &vs->cache[vid % LOCATION_CACHE_SIZE];
	uint64_t now = monotonic_ns();
	int ret = -EIO;

	pthread_mutex_lock(&vs->cache_lock);
	if (c->vid == vid && c->expires > now) {
		*out = *c;
		pthread_mutex_unlock(&vs->cache_lock);
		return 0;
	}
	pthread_mutex_unlock(&vs->cache_lock);
	for (int i = 0; ret == -EIO; i++) {
		char url[300], master[160];

		pthread_mutex_lock(&vs->masters_lock);
		if (i >= vs->n_masters) {
			pthread_mutex_unlock(&vs->masters_lock);
			break;
		}
		snprintf(master, sizeof(master), "%s", vs->masters[(first + i) % vs->n_masters]);
		pthread_mutex_unlock(&vs->masters_lock);
		struct http_client_request rq = {
		    .method = "GET", .url = url, .body_fd = -1, .timeout_ms = 3000};
		struct http_client_response rs;
		json_t *j, *locs, *loc;
		size_t k;

		snprintf(url, sizeof(url), "%s://%s/dir/lookup?volumeId=%u", http_scheme(), master,
			 vid);
		if (http_client_do(&rq, &rs) < 0)
			continue;
		if (rs.status == 404) {
			ret = -ENOENT;
		} else if (rs.status == 200 && (j = json_loads(rs.body, 0, NULL))) {
			memset(out, 0, sizeof(*out));
			out->vid = vid;
			locs = json_object_get(j, "locations");
			json_array_foreach(locs, k, loc)
			{
				const char *u = json_string_value(json_object_get(loc, "url"));

				if (u && out->n < 8)
					snprintf(out->urls[out->n++], sizeof(out->urls[0]), "%s",
						 u);
			}
			json_decref(j);
			out->expires = now + LOCATION_CACHE_NS;
			pthread_mutex_lock(&vs->cache_lock);
			*c = *out;
			pthread_mutex_unlock(&vs->cache_lock);
			ret = 0;
		}
		http_client_response_release(&rs);
	}
	return ret;
}

static bool is_self(const struct volume_server *vs, const char *url)
{
	return !strcmp(url, vs->self_url) || !strcmp(url, vs->public_url);
}

static bool write_allowed(struct volume_server *vs, struct http_request *req)
{
	return http_check_white_list(req, vs->white_list, vs->n_white_list);
}

static bool asks_replicate(struct http_request *req)
{
	const char *t = http_query(req, "type");

	return t && !strcmp(t, "replicate");
}

/*
 * A replicated write or delete: ?type=replicate, and with -jwtKey a server token for
 * this very request (write_auth checked it); the query parameter alone is believed
 * only in a cluster without a key, where nothing is authenticated.
 */
static bool is_replica_request(struct http_request *req)
{
	return asks_replicate(req);
}

/* The fid a token must name, from the request path: "_N" batch suffixes and names
 * dropped ("3,01637037d6", also for the /3/01637037d6/name form). */
static void token_fid_of_path(const char *path, char *fid_text, size_t cap)
{
	const char *p = path + 1, *end = p + strcspn(p, "_.");
	const char *slash = strchr(p, '/');

	if (slash && slash < end) {
		size_t vlen = (size_t)(slash - p), klen;
		const char *kc = slash + 1;

		klen = strcspn(kc, "_./");
		snprintf(fid_text, cap, "%.*s,%.*s", (int)vlen, p, (int)klen, kc);
	} else {
		snprintf(fid_text, cap, "%.*s", (int)(end - p), p);
	}
}

/* -jwtReadKey: a GET or HEAD needs the read token of the fid (from the master's
 * /dir/lookup?fileId=...&read=yes). Replies 401 and returns false otherwise. */
static bool read_allowed(struct volume_server *vs, struct http_request *req)
{
	const char *token;
	char fid_text[FID_MAX_LEN];

	if (!vs->opt.jwt_read_key || !*vs->opt.jwt_read_key)
		return true;
	token = auth_request_token(req);
	token_fid_of_path(req->path, fid_text, sizeof(fid_text));
	if (token && jwt_verify_fid(vs->opt.jwt_read_key, token, strlen(token), fid_text,
				    (int64_t)(now_ns() / 1000000000ull)) == 0)
		return true;
	http_reply_error(req, 401, "reading needs a read token (-jwtReadKey)");
	return false;
}

static bool jwt_allowed(struct volume_server *vs, struct http_request *req, const struct fid *fid)
{
	const char *token;
	char fid_text[FID_MAX_LEN];

	if (!keyed(vs))
		return true;
	if (asks_replicate(req)) {
		/* Only another server of the cluster replicates: it proves the key. */
		if (auth_server_request(req, vs->opt.jwt_key, NULL, NULL))
			return true;
		http_reply_error(req, 401, "a replicated write needs a server token");
		return false;
	}
	token = auth_request_token(req);
	/* The token names the assigned fid; "_N" batch suffixes share it. */
	token_fid_of_path(req->path, fid_text, sizeof(fid_text));
	(void)fid;
	/* Replicas get a server token of their own (replicate()), so a client token is
	 * checked against the clock as it is, on every path. */
	if (token && jwt_verify_fid(vs->opt.jwt_key, token, strlen(token), fid_text,
				    (int64_t)(now_ns() / 1000000000ull)) == 0)
		return true;
	http_reply_error(req, 401, "wrong jwt");
	return false;
}

/*
 * Sends a write or delete to every other replica of fid's volume. `method` is PUT or
 * DELETE; for PUT the body comes from mem or fd. include_self: forward to all locations
 * (this server does not hold the volume). Returns 0, or -EIO with the reason in err.
 */
static int replicate_once(struct volume_server *vs, struct http_request *req, const struct fid *fid,
			  int copies, const char *method, const char *query,
			  const char *const *headers, const uint8_t *mem, int fd, uint64_t len,
			  char *err, size_t err_cap);

/* Copies a write or a delete to the other replicas; failures are counted (metrics). */
static int replicate(struct volume_server *vs, struct http_request *req, const struct fid *fid,
		     int copies, const char *method, const char *query, const char *const *headers,
		     const uint8_t *mem, int fd, uint64_t len, char *err, size_t err_cap)
{
	int ret = replicate_once(vs, req, fid, copies, method, query, headers, mem, fd, len, err,
				 err_cap);

	if (ret == -EIO)
		vs_metrics_replication_error(vs->metrics, err);
	return ret;
}

static int replicate_once(struct volume_server *vs, struct http_request *req, const struct fid *fid,
			  int copies, const char *method, const char *query,
			  const char *const *headers, const uint8_t *mem, int fd, uint64_t len,
			  char *err, size_t err_cap)
{
	struct cached_locations locs;
	int others = 0, ret;

	/*
	 * A volume grown a moment ago may not be complete yet in every master's topology
	 * (each replica's heartbeat reaches each master on its own): ask again, another
	 * master each time, for up to about a second before failing the write.
	 */
	for (int attempt = 0;; attempt++) {
		ret = lookup_locations(vs, fid->vid, attempt, &locs);
		if (ret < 0 && (ret != -ENOENT || attempt >= 5)) {
			snprintf(err, err_cap, "cannot look up the replicas of volume %u: %s",
				 fid->vid,
				 ret == -ENOENT ? "unknown to the masters" : "no master answered");
			return copies == 0 ? -ENOENT : -EIO;
		}
		others = 0;
		for (int i = 0; ret == 0 && i < locs.n; i++)
			others += !is_self(vs, locs.urls[i]);
		if (ret == 0 && (copies == 0 || others >= copies - 1))
			break;
		invalidate_locations(vs, fid->vid);
		if (attempt >= 5) {
			snprintf(err, err_cap,
				 "volume %u has %d of its %d replicas known to the masters",
				 fid->vid, others + 1, copies);
			return -EIO;
		}
		usleep(200000);
	}
	/* With a key, the replicas get a server token for the forwarded request instead of
	 * the client's token (which may expire while a large body is received). */
	const char *all_headers[72];
	char path_query[1100], auth[AUTH_HEADER_LEN];
	int nh = 0;

	snprintf(path_query, sizeof(path_query), "%s?type=replicate%s", req->path, query);
	for (; headers && headers[nh] && nh < 70; nh++)
		all_headers[nh] = headers[nh];
	if (keyed(vs)) {
		if (auth_server_header(vs->opt.jwt_key, method, path_query, NULL, 0, auth) < 0) {
			snprintf(err, err_cap, "cannot sign the replication request");
			return -EIO;
		}
		all_headers[nh++] = auth;
	}
	all_headers[nh] = NULL;
	for (int i = 0; i < locs.n; i++) {
		char url[1200];
		struct http_client_request rq = {.method = method,
						 .url = url,
						 .headers = all_headers,
						 .body = mem,
						 .body_len = len,
						 .body_fd = mem ? -1 : fd,
						 .body_fd_len = len,
						 .timeout_ms = 60000};
		struct http_client_response rs;

		if (is_self(vs, locs.urls[i]))
			continue;
		snprintf(url, sizeof(url), "%s://%s%s", http_scheme(), locs.urls[i], path_query);
		if (!strcmp(method, "DELETE")) {
			rq.body = NULL;
			rq.body_fd = -1;
		}
		if (http_client_do(&rq, &rs) < 0) {
			invalidate_locations(vs, fid->vid);
			snprintf(err, err_cap, "failed to write to replica %s: %s", locs.urls[i],
				 rs.error);
			return -EIO;
		}
		if (rs.status >= 300 && !(rs.status == 404 && !strcmp(method, "DELETE"))) {
			snprintf(err, err_cap, "failed to write to replica %s: %ld %.200s",
				 locs.urls[i], rs.status, rs.body);
			http_client_response_release(&rs);
			return -EIO;
		}
		http_client_response_release(&rs);
	}
	return 0;
}

/* ---------------------------------------------------------------- status */

struct status_ctx {
	json_t *volumes;
};

static json_t *volume_json(struct volume *v)
{
	struct volume_info info;
	char repl[4], ttl[16];

	volume_get_info(v, &info);
	placement_format(info.replica_placement, repl);
	ttl_format(info.ttl, ttl, sizeof(ttl));
	return json_pack(
	    "{s:I,s:I,s:s,s:I,s:I,s:I,s:b,s:s,s:s,s:i,s:i,s:I,s:I,s:f}", "Id", (json_int_t)info.id,
	    "Size", (json_int_t)info.size, "Collection", info.collection, "FileCount",
	    (json_int_t)info.file_count, "DeleteCount", (json_int_t)info.delete_count,
	    "DeletedByteCount", (json_int_t)info.deleted_bytes, "ReadOnly", info.read_only,
	    "ReplicaPlacement", repl, "Ttl", ttl, "Version", info.version, "CompactRevision",
	    info.compact_revision, "ModifiedAtSecond", (json_int_t)info.modified_at_second,
	    "MaxFileKey", (json_int_t)info.max_file_key, "GarbageRatio", volume_garbage_ratio(v));
}

static void status_add_volume(void *ctx, struct volume *v)
{
	struct status_ctx *sc = ctx;

	json_array_append_new(sc->volumes, volume_json(v));
}

static void handle_status(struct volume_server *vs, struct http_request *req)
{
	struct status_ctx sc = {json_array()};
	struct store_disk_status disks[64];
	json_t *jd = json_array();
	int n = store_disk_statuses(vs->store, disks, 64);

	store_each_volume(vs->store, status_add_volume, &sc);
	for (int i = 0; i < n && i < 64; i++) {
		double all = (double)disks[i].all;

		json_array_append_new(
		    jd,
		    json_pack("{s:s,s:I,s:I,s:I,s:f,s:f,s:s,s:i,s:i}", "dir", disks[i].dir, "all",
			      (json_int_t)disks[i].all, "used", (json_int_t)disks[i].used, "free",
			      (json_int_t)disks[i].free, "percent_free",
			      all > 0 ? 100.0 * (double)disks[i].free / all : 0.0, "percent_used",
			      all > 0 ? 100.0 * (double)disks[i].used / all : 0.0, "disk_type",
			      "hdd", "max_volumes", disks[i].max_volumes, "volume_count",
			      disks[i].volume_count));
	}
	http_reply_json(req, 200,
			json_pack("{s:s,s:o,s:o}", "Version", KELP_VERSION, "DiskStatuses", jd,
				  "Volumes", sc.volumes));
}

/* ---------------------------------------------------------------- admin */

/*
 * GET /admin/needles?volume=N: every live needle of a volume, for `kelp fsck`'s leak
 * search: {"Volume":N,"Collection":"..","Needles":[[key,cookie,size,appendAtNs],...]}.
 */
static void handle_list_needles(struct volume_server *vs, struct http_request *req,
				struct volume *v)
{
	struct volume_needle *list;
	json_t *arr;
	size_t n;
	int ret = volume_list(v, &list, &n);

	if (ret < 0) {
		http_reply_error(req, 500, "cannot list volume %u: %s", volume_id(v),
				 strerror(-ret));
		return;
	}
	arr = json_array();
	for (size_t i = 0; i < n && arr; i++)
		json_array_append_new(
		    arr, json_pack("[I,I,I,I]", (json_int_t)list[i].key, (json_int_t)list[i].cookie,
				   (json_int_t)list[i].size, (json_int_t)list[i].append_at_ns));
	free(list);
	http_reply_json(req, 200,
			json_pack("{s:i,s:s,s:o}", "Volume", (int)volume_id(v), "Collection",
				  volume_collection(v), "Needles", arr ? arr : json_array()));
}

static void handle_admin(struct volume_server *vs, struct http_request *req, const char *op)
{
	struct volume *v;
	uint32_t vid;
	int ret;

	if (!strncmp(op, "volume/", 7)) {
		copier_handle(vs->copier, req, op + 7);
		return;
	}
	if (!strcmp(op, "delete_collection")) {
		const char *c = http_query(req, "collection");

		if (!c || !*c) {
			http_reply_error(req, 400, "parameter collection is required");
			return;
		}
		if (!auth_collection_valid(c)) {
			http_reply_error(req, 400,
					 "bad collection name: want up to %d of A-Z a-z 0-9 _ - . "
					 "(not first)",
					 AUTH_MAX_COLLECTION_LEN);
			return;
		}
		ret = store_delete_collection(vs->store, c);
		kick_heartbeat(vs);
		http_reply_json(req, 200, json_pack("{s:i}", "deleted", ret));
		return;
	}
	if (parse_vid_param(req, &vid) < 0)
		return;
	if (!strcmp(op, "assign_volume")) {
		const char *collection = http_query(req, "collection");
		uint8_t repl = 0;
		struct ttl ttl;

		if (placement_parse(http_query(req, "replication"), &repl) < 0) {
			http_reply_error(req, 400, "bad replication \"%s\"",
					 http_query(req, "replication"));
			return;
		}
		if (ttl_parse(http_query(req, "ttl"), &ttl) < 0) {
			http_reply_error(req, 400, "bad ttl \"%s\"", http_query(req, "ttl"));
			return;
		}
		if (collection && !auth_collection_valid(collection)) {
			http_reply_error(req, 400,
					 "bad collection name: want up to %d of A-Z a-z 0-9 _ - . "
					 "(not first)",
					 AUTH_MAX_COLLECTION_LEN);
			return;
		}
		if (vid == 0 || vid > AUTH_MAX_VOLUME_ID) {
			http_reply_error(req, 400, "volume id %u is not 1-%u", vid,
					 AUTH_MAX_VOLUME_ID);
			return;
		}
		ret = store_create_volume(vs->store, vid, collection ? collection : "", repl, ttl);
		if (ret == -EEXIST)
			http_reply_error(req, 409, "volume %u already exists", vid);
		else if (ret == -ENOSPC)
			http_reply_error(req, 507,
					 "no free volume slot or disk space for volume %u", vid);
		else if (ret < 0)
			http_reply_error(req, 500, "cannot create volume %u: %s", vid,
					 strerror(-ret));
		else
			http_reply_json(req, 200, json_pack("{s:I}", "volume", (json_int_t)vid));
		kick_heartbeat(vs);
		return;
	}
	if (!strcmp(op, "delete_volume")) {
		ret = store_delete_volume(vs->store, vid);
		kick_heartbeat(vs);
		if (ret == -ENOENT)
			http_reply_error(req, 404, "volume %u not found", vid);
		else
			http_reply_json(req, 200, json_pack("{s:I}", "volume", (json_int_t)vid));
		return;
	}
	v = store_get_volume(vs->store, vid);
	if (!v) {
		http_reply_error(req, 404, "volume %u not found", vid);
		return;
	}
	ret = 0;
	if (!strcmp(op, "mark_readonly")) {
		volume_set_read_only(v, true);
	} else if (!strcmp(op, "mark_writable")) {
		volume_set_read_only(v, false);
	} else if (!strcmp(op, "vacuum/check")) {
		http_reply_json(req, 200,
				json_pack("{s:I,s:f}", "volume", (json_int_t)vid, "garbageRatio",
					  volume_garbage_ratio(v)));
	} else if (!strcmp(op, "vacuum/compact")) {
		ret = volume_compact(v);
	} else if (!strcmp(op, "vacuum/commit")) {
		ret = volume_commit_compact(v);
	} else if (!strcmp(op, "vacuum/cleanup")) {
		ret = volume_cleanup_compact(v);
	} else if (!strcmp(op, "sync")) {
		ret = volume_sync(v);
	} else if (!strcmp(op, "needles")) {
		handle_list_needles(vs, req, v);
	} else {
		http_reply_error(req, 404, "unknown admin operation \"%s\"", op);
	}
	if (!http_has_reply(req)) {
		if (ret == -EBUSY)
			http_reply_error(req, 409, "volume %u is already being vacuumed", vid);
		else if (ret == -EINVAL)
			http_reply_error(req, 409, "volume %u has no vacuum to commit", vid);
		else if (ret < 0)
			http_reply_error(req, 500, "volume %u: %s failed: %s", vid, op,
					 strerror(-ret));
		else
			http_reply_json(req, 200, volume_json(v));
	}
	store_put_volume(vs->store, v);
	kick_heartbeat(vs);
}

/* ---------------------------------------------------------------- upload */

struct upload {
	struct volume_server *vs;
	struct fid fid;
	struct volume *v; /* NULL: not held here, forward to the holders */
	bool multipart;
	struct multipart_parser mp;
	int part_taken; /* 0 none, 1 a part without a filename, 2 with a filename */
	bool in_taken_part;
	char name[256];
	char mime[256];
	char content_md5[64];
	bool gzip;
	/* the body sink */
	uint8_t *mem;
	size_t mem_len;
	size_t mem_cap;
	int spool_fd;
	uint64_t len;
	uint32_t crc;
	struct md5_ctx md5;
	bool want_md5; /* unless ?md5=false and there is no Content-MD5 to check */
};

static void sink_reset(struct upload *u)
{
	u->mem_len = 0;
	u->len = 0;
	u->crc = 0;
	md5_release(&u->md5);
	md5_init(&u->md5);
	if (u->spool_fd >= 0 && ftruncate(u->spool_fd, 0) < 0) {
		close(u->spool_fd);
		u->spool_fd = -1;
	}
}

static int sink_write(struct http_request *req, struct upload *u, const uint8_t *data, size_t len)
{
	if (u->len + len > u->vs->size_limit) {
		http_reply_error(req, 413, "file over the limit of %d MiB (-fileSizeLimitMB)",
				 u->vs->opt.file_size_limit_mb);
		return -EFBIG;
	}
	u->crc = crc32c(u->crc, data, len);
	if (u->want_md5)
		md5_update(&u->md5, data, len);
	if (u->spool_fd < 0 && u->mem_len + len <= MEMORY_BODY_LIMIT) {
		if (u->mem_len + len > u->mem_cap) {
			/* Sized from Content-Length when known, so small bodies take one malloc. */
			size_t cap = u->mem_cap ? u->mem_cap * 2 : 16384;
			uint8_t *p;

			while (cap < u->mem_len + len)
				cap *= 2;
			if (cap > MEMORY_BODY_LIMIT)
				cap = MEMORY_BODY_LIMIT;
			p = realloc(u->mem, cap);
			if (!p) {
				http_reply_error(req, 500, "out of memory");
				return -ENOMEM;
			}
			u->mem = p;
			u->mem_cap = cap;
		}
		memcpy(u->mem + u->mem_len, data, len);
		u->mem_len += len;
	} else {
		int ret;

		if (u->spool_fd < 0) {
			u->spool_fd =
			    open(u->vs->opt.dirs[0], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
			if (u->spool_fd < 0) {
				http_reply_error(req, 500, "cannot spool the upload: %s",
						 strerror(errno));
				return -errno;
			}
			ret = pwrite_all(u->spool_fd, u->mem, u->mem_len, 0);
			if (ret < 0) {
				http_reply_error(req, 500, "cannot spool the upload: %s",
						 strerror(-ret));
				return ret;
			}
		}
		ret = pwrite_all(u->spool_fd, data, len, u->len);
		if (ret < 0) {
			http_reply_error(req, 500, "cannot spool the upload: %s", strerror(-ret));
			return ret;
		}
	}
	u->len += len;
	return 0;
}

static void copy_string(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static int mp_part_begin(void *ctx, const struct multipart_part *part)
{
	struct http_request *req = ctx;
	struct upload *u = req->state;

	/* The first part is used, unless it has no file name and a later one has. */
	u->in_taken_part = false;
	if (u->part_taken == 2 || (u->part_taken == 1 && !part->has_filename))
		return 0;
	sink_reset(u);
	u->part_taken = part->has_filename ? 2 : 1;
	u->in_taken_part = true;
	/* Only the last path element of the name, as SeaweedFS keeps it. */
	{
		const char *base = part->filename, *p;

		for (p = part->filename; *p; p++)
			if (*p == '/' || *p == '\\')
				base = p + 1;
		copy_string(u->name, sizeof(u->name), base);
	}
	if (part->content_type[0])
		copy_string(u->mime, sizeof(u->mime), part->content_type);
	if (part->content_md5[0]) {
		copy_string(u->content_md5, sizeof(u->content_md5), part->content_md5);
		u->want_md5 = true; /* before any of the part's data */
	}
	u->gzip = !strcasecmp(part->content_encoding, "gzip");
	return 0;
}

static int mp_data(void *ctx, const uint8_t *data, size_t len)
{
	struct http_request *req = ctx;
	struct upload *u = req->state;

	if (!u->in_taken_part)
		return 0;
	return sink_write(req, u, data, len) < 0 ? -EFBIG : 0;
}

static int mp_part_end(void *ctx)
{
	struct http_request *req = ctx;
	struct upload *u = req->state;

	u->in_taken_part = false;
	return 0;
}

static int upload_body(struct http_request *req, const uint8_t *data, size_t len)
{
	struct upload *u = req->state;
	int ret;

	if (!u->multipart)
		return sink_write(req, u, data, len);
	ret = multipart_feed(&u->mp, data, len);
	if (ret < 0 && !http_has_reply(req))
		http_reply_error(req, 400, "malformed multipart body");
	return ret;
}

/* Measures (and MD5s) the uncompressed form of gzip data. */
static int gunzip_measure(struct upload *u, uint64_t *size, uint8_t digest[16])
{
	uint8_t in[65536], out[65536];
	struct md5_ctx md5;
	z_stream z;
	uint64_t pos = 0;
	int zr = Z_OK;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	if (md5_init(&md5) < 0) {
		inflateEnd(&z);
		return -ENOMEM;
	}
	*size = 0;
	while (zr != Z_STREAM_END && pos < u->len) {
		size_t chunk = u->len - pos > sizeof(in) ? sizeof(in) : u->len - pos;

		if (u->spool_fd >= 0) {
			if (pread_all(u->spool_fd, in, chunk, pos) < 0)
				break;
			z.next_in = in;
		} else {
			z.next_in = u->mem + pos;
		}
		z.avail_in = (uInt)chunk;
		pos += chunk;
		while (z.avail_in > 0 && zr != Z_STREAM_END) {
			z.next_out = out;
			z.avail_out = sizeof(out);
			zr = inflate(&z, Z_NO_FLUSH);
			if (zr != Z_OK && zr != Z_STREAM_END)
				break;
			md5_update(&md5, out, sizeof(out) - z.avail_out);
			*size += sizeof(out) - z.avail_out;
		}
		if (zr != Z_OK && zr != Z_STREAM_END)
			break;
	}
	inflateEnd(&z);
	md5_final(&md5, digest);
	return zr == Z_STREAM_END ? 0 : -EINVAL;
}

/* Collects Seaweed-* request headers into a JSON object of pairs. */
static enum MHD_Result collect_pair(void *cls, enum MHD_ValueKind kind, const char *key,
				    const char *value)
{
	json_t *pairs = cls;

	if (strncasecmp(key, "Seaweed-", 8) == 0 && key[8])
		json_object_set_new(pairs, key + 8, json_string(value ? value : ""));
	return MHD_YES;
}

/* Forwards a stored upload to the other replicas; replies 500 and returns -EREMOTEIO
 * when one fails. copies == 0: this server holds no copy, send to every holder. */
static int replicate_upload(struct http_request *req, struct upload *u, const struct needle *n,
			    const char *pairs_text, int copies)
{
	char ct[300], cd[300], query[200], ttl[16], err[600];
	const char *headers[64];
	char pair_headers[32][300];
	int nh = 0, np = 0;
	json_t *pairs = NULL, *value;
	const char *key;
	int ret;

	snprintf(ct, sizeof(ct), "Content-Type: %s",
		 u->mime[0] ? u->mime : "application/octet-stream");
	headers[nh++] = ct;
	if (u->name[0]) {
		snprintf(cd, sizeof(cd), "Content-Disposition: inline; filename=\"%s\"", u->name);
		headers[nh++] = cd;
	}
	if (u->gzip)
		headers[nh++] = "Content-Encoding: gzip";
	if (pairs_text && (pairs = json_loads(pairs_text, 0, NULL))) {
		json_object_foreach(pairs, key, value)
		{
			if (np < 32 && json_is_string(value)) {
				snprintf(pair_headers[np], sizeof(pair_headers[np]),
					 "Seaweed-%s: %s", key, json_string_value(value));
				headers[nh++] = pair_headers[np++];
			}
		}
	}
	headers[nh] = NULL;
	ttl_format(n->ttl, ttl, sizeof(ttl));
	snprintf(query, sizeof(query), "&ts=%" PRIu64 "%s%s%s%s%s", n->last_modified,
		 ttl[0] ? "&ttl=" : "", ttl, http_query_bool(req, "fsync") ? "&fsync=true" : "",
		 (n->flags & NEEDLE_FLAG_CHUNKMANIFEST) ? "&cm=true" : "",
		 u->want_md5 ? "" : "&md5=false");
	ret = replicate(u->vs, req, &u->fid, copies, "PUT", query, headers,
			u->spool_fd >= 0 ? NULL : (u->mem ? u->mem : (const uint8_t *)""),
			u->spool_fd, u->len, err, sizeof(err));
	if (ret < 0) {
		if (ret == -ENOENT)
			http_reply_error(req, 404, "volume %u is not on this server: %s",
					 u->fid.vid, err);
		else
			http_reply_error(req, 500, "%s", err);
		json_decref(pairs);
		return -EREMOTEIO;
	}
	json_decref(pairs);
	return 0;
}

static void upload_complete(struct http_request *req)
{
	struct upload *u = req->state;
	struct needle n;
	struct volume_data data;
	uint8_t digest[16];
	char md5_b64[32], etag[16], etag_hex[12], *pairs_text = NULL;
	const char *ts = http_query(req, "ts");
	uint64_t original_size = u->len;
	json_t *pairs, *result;
	bool unchanged;
	int ret;

	if (u->multipart && multipart_finish(&u->mp) < 0) {
		http_reply_error(req, 400, "malformed multipart body: no closing boundary");
		return;
	}
	if (u->multipart && u->part_taken == 0) {
		http_reply_error(req, 400, "multipart body has no part");
		return;
	}
	md5_final(&u->md5, digest);
	if (u->gzip && gunzip_measure(u, &original_size, digest) < 0) {
		http_reply_error(req, 400,
				 "Content-Encoding is gzip but the body is not gzip data");
		return;
	}
	md5_b64[0] = '\0';
	if (u->want_md5 || u->gzip)
		base64_encode(digest, 16, md5_b64);
	if (u->content_md5[0] && strcmp(u->content_md5, md5_b64)) {
		http_reply_error(req, 400, "Content-MD5 %s does not match the data's MD5 %s",
				 u->content_md5, md5_b64);
		return;
	}

	memset(&n, 0, sizeof(n));
	n.cookie = u->fid.cookie;
	n.id = u->fid.key;
	n.flags = NEEDLE_FLAG_HAS_LAST_MOD | (u->gzip ? NEEDLE_FLAG_GZIP : 0);
	if (http_query_bool(req, "cm"))
		n.flags |= NEEDLE_FLAG_CHUNKMANIFEST;
	n.name = u->name;
	n.name_len = (uint8_t)strnlen(u->name, 255);
	if (u->mime[0] && strncasecmp(u->mime, "application/octet-stream", 24) &&
	    strncasecmp(u->mime, "multipart/", 10)) {
		const char *by_ext = mime_by_name(u->name, n.name_len);

		if (!by_ext || strcmp(by_ext, u->mime)) {
			n.mime = u->mime;
			n.mime_len = (uint8_t)strnlen(u->mime, 255);
		}
	}
	n.last_modified = now_ns() / 1000000000ull;
	if (ts && *ts) {
		char *end;
		unsigned long long t = strtoull(ts, &end, 10);

		if (*end || t > 0xFFFFFFFFFFull) {
			http_reply_error(req, 400, "bad ts \"%s\"", ts);
			return;
		}
		n.last_modified = t;
	}
	if (ttl_parse(http_query(req, "ttl"), &n.ttl) < 0) {
		http_reply_error(req, 400, "bad ttl \"%s\"", http_query(req, "ttl"));
		return;
	}
	pairs = json_object();
	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, collect_pair, pairs);
	if (json_object_size(pairs) > 0) {
		pairs_text = json_dumps(pairs, JSON_COMPACT);
		if (!pairs_text || strlen(pairs_text) >= 65536) {
			json_decref(pairs);
			free(pairs_text);
			http_reply_error(req, 400, "Seaweed- headers are over 64 KiB");
			return;
		}
		n.pairs = (const uint8_t *)pairs_text;
		n.pairs_len = (uint16_t)strlen(pairs_text);
	}
	json_decref(pairs);
	if (u->len > 0xFFFFFFF0ull) {
		free(pairs_text);
		http_reply_error(req, 413, "file too large for one needle");
		return;
	}

	data.mem = u->spool_fd >= 0 ? NULL : (u->mem ? u->mem : (const uint8_t *)"");
	data.fd = u->spool_fd;
	data.fd_offset = 0;
	data.len = (uint32_t)u->len;
	data.crc = u->crc;
	unchanged = false;
	ret = u->v ? volume_write(u->v, &n, &data, http_query_bool(req, "fsync"), &unchanged) : 0;
	etag_of(u->crc, etag, sizeof(etag));
	if (ret == 0 && !is_replica_request(req)) {
		int copies = 0;

		if (u->v) {
			struct volume_info info;

			volume_get_info(u->v, &info);
			copies = placement_copies(info.replica_placement);
		}
		if (!u->v || copies > 1)
			ret = replicate_upload(req, u, &n, pairs_text, copies);
	}
	free(pairs_text);
	if (ret == -EREMOTEIO)
		return; /* replicate_upload replied */
	switch (ret) {
	case 0:
		break;
	case -EROFS:
		http_reply_error(req, 500, "failed to write to local disk: volume %u is read only",
				 u->fid.vid);
		return;
	case -EPERM:
		http_reply_error(
		    req, 500,
		    "failed to write to local disk: mismatching cookie for needle %" PRIx64,
		    u->fid.key);
		return;
	case -EFBIG:
		http_reply_error(req, 500, "failed to write to local disk: volume %u is full",
				 u->fid.vid);
		return;
	case -ENOSPC:
		http_reply_error(
		    req, 507,
		    "failed to write to local disk: no space left on the disk of volume %u",
		    u->fid.vid);
		/* the other volumes on that disk too, and tell the masters now */
		if (store_check_space(u->vs->store))
			kick_heartbeat(u->vs);
		return;
	default:
		http_reply_error(req, 500, "failed to write to local disk: %s", strerror(-ret));
		return;
	}
	if (unchanged) {
		http_reply_empty(req, 204);
	} else {
		snprintf(etag_hex, sizeof(etag_hex), "%08x", u->crc);
		result = json_pack("{s:s,s:I,s:s}", "name", u->name, "size",
				   (json_int_t)original_size, "eTag", etag_hex);
		if (n.mime_len)
			json_object_set_new(result, "mime", json_string(u->mime));
		if (md5_b64[0])
			json_object_set_new(result, "contentMd5", json_string(md5_b64));
		http_reply_json(req, 201, result);
	}
	http_add_header(req, "ETag", etag);
	if (md5_b64[0])
		http_add_header(req, "Content-MD5", md5_b64);
}

static void upload_cleanup(struct http_request *req)
{
	struct upload *u = req->state;

	if (!u)
		return;
	if (u->v)
		store_put_volume(u->vs->store, u->v);
	if (u->spool_fd >= 0)
		close(u->spool_fd);
	md5_release(&u->md5);
	free(u->mem);
	free(u);
	req->state = NULL;
}

static bool is_false(const char *v)
{
	return v && (!strcmp(v, "false") || !strcmp(v, "0"));
}

/* The file name of a raw upload: Content-Disposition, else the last path element. */
static void raw_upload_name(struct http_request *req, char *out, size_t cap)
{
	const char *cd = http_header(req, "Content-Disposition");
	const char *p, *last;

	out[0] = '\0';
	if (cd && ((p = strstr(cd, "filename=")) || (p = strstr(cd, "name=")))) {
		size_t n;

		p = strchr(p, '=') + 1;
		if (*p == '"') {
			p++;
			n = strcspn(p, "\"");
		} else {
			n = strcspn(p, "; ");
		}
		if (n >= cap)
			n = cap - 1;
		memcpy(out, p, n);
		out[n] = '\0';
		return;
	}
	last = strrchr(req->path, '/');
	copy_string(out, cap, last ? last + 1 : req->path);
}

static void handle_upload(struct volume_server *vs, struct http_request *req, const struct fid *fid)
{
	const char *ct = http_header(req, "Content-Type");
	const char *cl = http_header(req, "Content-Length");
	struct upload *u;

	bool multipart = !strcmp(req->method, "POST") && (!ct || !*ct || strstr(ct, "form-data"));

	/* Who may write comes first, from the headers: nothing is allocated or read for a
	 * refused request. */
	if (!write_allowed(vs, req) || !jwt_allowed(vs, req, fid))
		return;
	/* Raw bodies are the data itself; multipart ones carry some headers more. */
	if (cl && strtoull(cl, NULL, 10) > vs->size_limit + (multipart ? (64u << 10) : 0)) {
		http_reply_error(req, 413, "file over the limit of %d MiB (-fileSizeLimitMB)",
				 vs->opt.file_size_limit_mb);
		return;
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	u->vs = vs;
	u->fid = *fid;
	u->spool_fd = -1;
	if (cl) {
		unsigned long long n = strtoull(cl, NULL, 10);

		if (n > 0 && n <= MEMORY_BODY_LIMIT && (u->mem = malloc(n)))
			u->mem_cap = n;
	}
	req->state = u;
	req->on_cleanup = upload_cleanup;
	if (md5_init(&u->md5) < 0) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	u->v = store_get_volume(vs->store, fid->vid);
	if (!u->v && (vs->n_masters == 0 || is_replica_request(req))) {
		http_reply_error(req, 404, "volume %u not found on this server", fid->vid);
		return;
	}
	if (multipart) {
		static const struct multipart_callbacks cb = {mp_part_begin, mp_data, mp_part_end};
		char boundary[MULTIPART_MAX_BOUNDARY + 1];
		int blen = ct ? multipart_boundary_from_content_type(ct, boundary, sizeof(boundary))
			      : -EINVAL;

		if (blen < 0 || multipart_init(&u->mp, boundary, (size_t)blen, &cb, req) < 0) {
			http_reply_error(req, 400, "multipart upload without a valid boundary");
			return;
		}
		u->multipart = true;
	} else {
		const char *ce = http_header(req, "Content-Encoding");
		const char *md5 = http_header(req, "Content-MD5");

		raw_upload_name(req, u->name, sizeof(u->name));
		copy_string(u->mime, sizeof(u->mime), ct);
		copy_string(u->content_md5, sizeof(u->content_md5), md5);
		u->gzip = ce && !strcasecmp(ce, "gzip");
	}
	if (!u->multipart || !u->content_md5[0])
		copy_string(u->content_md5, sizeof(u->content_md5),
			    http_header(req, "Content-MD5"));
	/* ?md5=false (kelp's mount: its chunks are checked by CRC32C) saves hashing every
	 * byte; a Content-MD5 to check is hashed anyway. */
	u->want_md5 = !is_false(http_query(req, "md5")) || u->content_md5[0];
	req->on_body = upload_body;
	req->on_complete = upload_complete;
}

/* ---------------------------------------------------------------- delete */

static void handle_delete(struct volume_server *vs, struct http_request *req, const struct fid *fid)
{
	struct volume *v;
	uint32_t size = 0;
	int ret, copies = 0;
	char err[600];

	if (!write_allowed(vs, req) || !jwt_allowed(vs, req, fid))
		return;
	v = store_get_volume(vs->store, fid->vid);
	if (!v && (vs->n_masters == 0 || is_replica_request(req))) {
		http_reply_error(req, 404, "volume %u not found on this server", fid->vid);
		return;
	}
	ret = 0;
	if (v) {
		struct volume_info info;

		volume_get_info(v, &info);
		copies = placement_copies(info.replica_placement);
		ret = volume_delete(v, fid->key, fid->cookie, &size);
		store_put_volume(vs->store, v);
	}
	if ((ret == 0 || ret == -ENOENT) && !is_replica_request(req) && (!v || copies > 1)) {
		int r = replicate(vs, req, fid, copies, "DELETE", "", NULL, NULL, -1, 0, err,
				  sizeof(err));

		if (r == -ENOENT) {
			http_reply_error(req, 404, "volume %u is not on this server: %s", fid->vid,
					 err);
			return;
		}
		if (r < 0) {
			http_reply_error(req, 500, "Deletion Failed: %s", err);
			return;
		}
	}
	if (ret == 0)
		http_reply_json(req, 202, json_pack("{s:I}", "size", (json_int_t)size));
	else if (ret == -ENOENT)
		http_reply_json(req, 404, json_pack("{s:i}", "size", 0));
	else if (ret == -EPERM)
		http_reply_error(req, 400, "File Random Cookie does not match.");
	else if (ret == -EROFS)
		http_reply_error(req, 500, "Deletion Failed: volume %u is read only", fid->vid);
	else if (ret == -ENOSPC)
		http_reply_error(
		    req, 507, "Deletion Failed: no space left on the disk of volume %u", fid->vid);
	else
		http_reply_error(req, 500, "Deletion Failed: %s", strerror(-ret));
}

/* ---------------------------------------------------------------- read */

/*
 * Reads of gzip-stored blobs by clients that do not accept gzip are inflated as they
 * are sent, in bounded memory: one pass measures the inflated size (for Content-Length
 * and ranges), a second produces the bytes as libmicrohttpd asks for them. Each such
 * reply holds about 200 KiB (zlib's state and window, a 64 KiB input buffer, the
 * 64 KiB response block), and at most INFLATE_MAX_CONCURRENT run at once; more get 503.
 */
#define INFLATE_CHUNK	       (64u << 10)
#define INFLATE_MAX_CONCURRENT 32

struct inflate_reply {
	struct volume_server *vs;
	struct volume_blob blob; /* owned: data in blob.n.data, or from blob.fd */
	z_stream z;
	bool z_open;
	bool ended;	     /* the gzip stream's end was seen (trailing bytes are ignored, as at
		     * upload) */
	uint64_t in_pos;     /* compressed bytes handed to zlib so far */
	uint64_t skip, left; /* inflated bytes to drop, then to send */
	uint8_t in[INFLATE_CHUNK]; /* fd blobs: the compressed input */
};

/* Feeds the next piece of compressed input when zlib has none; -EIO on a read error. */
static int inflate_feed(struct inflate_reply *r)
{
	uint64_t total = r->blob.n.data_size;
	size_t chunk;

	if (r->z.avail_in > 0 || r->in_pos >= total)
		return 0;
	chunk = total - r->in_pos > INFLATE_CHUNK ? INFLATE_CHUNK : (size_t)(total - r->in_pos);
	if (r->blob.fd < 0) {
		r->z.next_in = (uint8_t *)r->blob.n.data + r->in_pos;
	} else {
		if (pread_all(r->blob.fd, r->in, chunk, r->blob.data_offset + r->in_pos) < 0)
			return -EIO;
		r->z.next_in = r->in;
	}
	r->z.avail_in = (uInt)chunk;
	r->in_pos += chunk;
	return 0;
}

/*
 * Inflates up to cap bytes into out. Returns the count (0 only at the end of the
 * stream), or -EINVAL (not gzip data) / -EIO.
 */
static ssize_t inflate_some(struct inflate_reply *r, uint8_t *out, size_t cap)
{
	r->z.next_out = out;
	r->z.avail_out = (uInt)cap;
	while (r->z.avail_out == cap && !r->ended) {
		int zr;

		if (inflate_feed(r) < 0)
			return -EIO;
		if (r->z.avail_in == 0)
			return -EINVAL; /* input exhausted before the end of the stream */
		zr = inflate(&r->z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			r->ended = true;
		else if (zr != Z_OK)
			return -EINVAL;
	}
	return (ssize_t)(cap - r->z.avail_out);
}

static int inflate_restart(struct inflate_reply *r)
{
	if (r->z_open)
		inflateEnd(&r->z);
	memset(&r->z, 0, sizeof(r->z));
	r->in_pos = 0;
	r->ended = false;
	r->z_open = inflateInit2(&r->z, 16 + MAX_WBITS) == Z_OK;
	return r->z_open ? 0 : -ENOMEM;
}

static void inflate_reply_free(void *cls)
{
	struct inflate_reply *r = cls;

	if (r->z_open)
		inflateEnd(&r->z);
	volume_blob_release(&r->blob);
	r->vs->inflating--;
	free(r);
}

/* Measures the inflated size: one pass, nothing kept. -EINVAL: not gzip or over limit. */
static int inflate_measure(struct inflate_reply *r, uint64_t limit, uint64_t *size)
{
	uint8_t *scratch = malloc(INFLATE_CHUNK);
	ssize_t n;
	int ret = 0;

	if (!scratch)
		return -ENOMEM;
	*size = 0;
	while ((n = inflate_some(r, scratch, INFLATE_CHUNK)) > 0) {
		*size += (uint64_t)n;
		if (*size > limit) {
			ret = -EINVAL;
			break;
		}
	}
	free(scratch);
	if (n < 0)
		return (int)n;
	return ret;
}

static ssize_t inflate_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct inflate_reply *r = cls;
	ssize_t n;

	while (r->skip > 0) {
		size_t want = r->skip < max ? (size_t)r->skip : max;

		n = inflate_some(r, (uint8_t *)buf, want);
		if (n <= 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		r->skip -= (uint64_t)n;
	}
	if (r->left == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	n = inflate_some(r, (uint8_t *)buf, r->left < max ? (size_t)r->left : max);
	if (n <= 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	r->left -= (uint64_t)n;
	return n;
}

static bool not_modified(struct http_request *req, const char *etag, uint64_t last_modified)
{
	const char *inm = http_header(req, "If-None-Match");
	const char *ims = http_header(req, "If-Modified-Since");

	if (inm)
		return !strcmp(inm, etag);
	if (ims && last_modified > 0) {
		time_t t = http_date_parse(ims);

		return t != (time_t)-1 && (uint64_t)t >= last_modified;
	}
	return false;
}

static void add_pair_headers(struct http_request *req, const struct needle *n)
{
	json_t *pairs, *value;
	const char *key;

	if (!n->pairs_len)
		return;
	pairs = json_loadb((const char *)n->pairs, n->pairs_len, 0, NULL);
	if (!json_is_object(pairs)) {
		json_decref(pairs);
		return;
	}
	json_object_foreach(pairs, key, value)
	{
		char name[300];

		if (json_is_string(value)) {
			snprintf(name, sizeof(name), "Seaweed-%s", key);
			http_add_header(req, name, json_string_value(value));
		}
	}
	json_decref(pairs);
}

/* Serves several ranges of an in-memory body as multipart/byteranges. */
/*
 * Replies built in memory from large blobs (several ranges of one) hold their bytes
 * until sent: all of them together stay under MULTIRANGE_BUDGET, more get 503.
 */
#define MULTIRANGE_BUDGET (128ull << 20)

static void multirange_release(struct http_request *req)
{
	struct volume_server *vs = req->server_ctx;

	vs->multirange_bytes -= (uint64_t)(uintptr_t)req->state;
	req->state = NULL;
}

/* Serves several ranges of a body in memory, or of fd from fd_offset (body NULL). */
static void reply_multirange(struct http_request *req, const uint8_t *body, int fd,
			     uint64_t fd_offset, uint64_t size, const struct byte_range *r, int n,
			     const char *ctype)
{
	static const char boundary[] = "kelpbyteranges7d3f9a";
	struct volume_server *vs = req->server_ctx;
	size_t cap = 256, len = 0;
	char *out, ct[128];

	for (int i = 0; i < n; i++)
		cap += 256 + strlen(ctype) + r[i].length;
	if (!body) {
		if ((vs->multirange_bytes += cap) > MULTIRANGE_BUDGET) {
			vs->multirange_bytes -= cap;
			http_reply_error(req, 503,
					 "too many multi-range replies in progress; retry");
			http_add_header(req, "Retry-After", "1");
			return;
		}
		req->state = (void *)(uintptr_t)cap;
		req->on_cleanup = multirange_release;
	}
	out = malloc(cap);
	if (!out) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	for (int i = 0; i < n; i++) {
		len += (size_t)snprintf(
		    out + len, cap - len,
		    "\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %" PRIu64 "-%" PRIu64
		    "/%" PRIu64 "\r\n\r\n",
		    boundary, ctype, r[i].start, r[i].start + r[i].length - 1, size);
		if (body) {
			memcpy(out + len, body + r[i].start, r[i].length);
		} else if (pread_all(fd, out + len, r[i].length, fd_offset + r[i].start) < 0) {
			free(out);
			http_reply_error(req, 500, "read failed");
			return;
		}
		len += r[i].length;
	}
	len += (size_t)snprintf(out + len, cap - len, "\r\n--%s--\r\n", boundary);
	http_reply_buffer(req, 206, out, len, true);
	snprintf(ct, sizeof(ct), "multipart/byteranges; boundary=%s", boundary);
	http_add_header(req, "Content-Type", ct);
}

/*
 * Proxied reads hold the other server's reply in memory: at most PROXY_MAX_REPLY each
 * (a 4 MiB mount chunk and its headers), all of them within PROXY_BUDGET. A bigger
 * blob, or a read when the budget is spent, is redirected to its holder instead.
 */
#define PROXY_MAX_REPLY ((4u << 20) + (64u << 10))
#define PROXY_BUDGET	(128ull << 20)

static void proxy_release(struct http_request *req)
{
	struct volume_server *vs = req->server_ctx;

	vs->proxy_bytes -= PROXY_MAX_REPLY;
}

/* A read of a volume this server does not hold: -readMode local, redirect or proxy. */
static void read_elsewhere(struct volume_server *vs, struct http_request *req,
			   const struct fid *fid)
{
	struct cached_locations locs;
	const char *other = NULL;
	char url[4400];

	if (!strcmp(vs->opt.read_mode, "local") || vs->n_masters == 0 ||
	    http_query(req, "proxied")) {
		http_reply_error(req, 404, "volume %u not found on this server", fid->vid);
		return;
	}
	if (lookup_locations(vs, fid->vid, 0, &locs) == 0)
		for (int i = 0; i < locs.n && !other; i++)
			if (!is_self(vs, locs.urls[i]))
				other = locs.urls[i];
	if (!other) {
		http_reply_error(req, 404, "volume %u not found", fid->vid);
		return;
	}
	{
		/* A read token goes along: in the URL (a redirect), in the header (a proxy). */
		const char *token =
		    vs->opt.jwt_read_key && *vs->opt.jwt_read_key ? auth_request_token(req) : NULL;
		char escaped[3 * 1024 + 1];

		if (token && strlen(token) <= 1024)
			snprintf(url, sizeof(url), "%s://%s%s?proxied=true&jwt=%s", http_scheme(),
				 other, req->path,
				 http_client_escape(token, escaped, sizeof(escaped)));
		else
			snprintf(url, sizeof(url), "%s://%s%s?proxied=true", http_scheme(), other,
				 req->path);
	}
	if (!strcmp(vs->opt.read_mode, "redirect")) {
		http_reply_empty(req, 301);
		http_add_header(req, "Location", url);
		return;
	}
	if ((vs->proxy_bytes += PROXY_MAX_REPLY) > PROXY_BUDGET) {
		vs->proxy_bytes -= PROXY_MAX_REPLY;
		http_reply_empty(req, 302);
		http_add_header(req, "Location", url);
		return;
	}
	req->on_cleanup = proxy_release;
	{
		const char *range = http_header(req, "Range");
		char range_h[300];
		const char *headers[2] = {NULL, NULL};
		struct http_client_request rq = {.method = req->method,
						 .url = url,
						 .body_fd = -1,
						 .headers = headers,
						 .timeout_ms = 60000,
						 .max_response = PROXY_MAX_REPLY};
		struct http_client_response rs;

		if (range) {
			snprintf(range_h, sizeof(range_h), "Range: %s", range);
			headers[0] = range_h;
		}
		if (http_client_do(&rq, &rs) < 0 && rs.too_large) {
			/* Too big to hold: the client reads it from the holder itself. */
			http_client_response_release(&rs);
			http_reply_empty(req, 302);
			http_add_header(req, "Location", url);
			return;
		}
		if (rs.status == 0) {
			invalidate_locations(vs, fid->vid);
			http_reply_error(req, 502, "reading from %s failed: %s", other, rs.error);
			return;
		}
		http_reply_relay(req, &rs);
	}
}

static void handle_read(struct volume_server *vs, struct http_request *req, const struct fid *fid,
			const char *url_name, size_t url_name_len)
{
	struct volume *v = store_get_volume(vs->store, fid->vid);
	struct volume_blob blob;
	struct byte_range ranges[RANGE_MAX];
	const char *range_header, *ae, *ctype = NULL;
	char etag[16], lm[64], name[512], cd[600];
	uint8_t *body = NULL;
	struct inflate_reply *inflating = NULL;
	uint64_t size;
	bool send_gzip = false;
	int ret, nranges = 0;

	if (!v) {
		read_elsewhere(vs, req, fid);
		return;
	}
	ret = volume_read(v, fid->key, fid->cookie, &blob);
	store_put_volume(vs->store, v);
	if (ret == -ENOENT || ret == -EPERM) {
		http_reply_error(req, 404, "file %s not found", req->path);
		return;
	}
	if (ret == -EBADMSG) {
		http_reply_error(req, 500,
				 "data on disk corrupted: needle %" PRIx64
				 " of volume %u fails its checksum",
				 fid->key, fid->vid);
		return;
	}
	if (ret < 0) {
		http_reply_error(req, 500, "read failed: %s", strerror(-ret));
		return;
	}
	etag_of(blob.n.checksum, etag, sizeof(etag));
	if (not_modified(req, etag, blob.n.last_modified)) {
		http_reply_empty(req, 304);
		http_add_header(req, "ETag", etag);
		volume_blob_release(&blob);
		return;
	}

	/* The name: from a /vid/fid/name URL, else the stored one. */
	name[0] = '\0';
	if (url_name && url_name[0] != '.')
		snprintf(name, sizeof(name), "%.*s", (int)url_name_len, url_name);
	else if (blob.n.name_len)
		snprintf(name, sizeof(name), "%.*s", blob.n.name_len, blob.n.name);
	if (blob.n.mime_len) {
		static __thread char mime[256];

		snprintf(mime, sizeof(mime), "%.*s", blob.n.mime_len, blob.n.mime);
		ctype = mime;
	}
	if (!ctype && name[0])
		ctype = mime_by_name(name, strlen(name));
	if (!ctype && url_name && url_name[0] == '.')
		ctype = mime_by_name(url_name, url_name_len);
	if (!ctype)
		ctype = "application/octet-stream";

	size = blob.n.data_size;
	body = (uint8_t *)blob.n.data;
	if (blob.n.flags & NEEDLE_FLAG_GZIP) {
		ae = http_header(req, "Accept-Encoding");
		if (ae && strstr(ae, "gzip")) {
			send_gzip = true;
		} else {
			int r;

			if (++vs->inflating > INFLATE_MAX_CONCURRENT) {
				vs->inflating--;
				http_reply_error(
				    req, 503,
				    "too many compressed blobs being inflated; retry, or "
				    "send Accept-Encoding: gzip");
				http_add_header(req, "Retry-After", "1");
				volume_blob_release(&blob);
				return;
			}
			inflating = calloc(1, sizeof(*inflating));
			if (!inflating) {
				vs->inflating--;
				http_reply_error(req, 500, "out of memory");
				volume_blob_release(&blob);
				return;
			}
			/* The reply owns the blob from now on; blob.n's pointers stay valid as
			 * long as it lives, which is past this function. */
			inflating->vs = vs;
			inflating->blob = blob;
			blob.buf = NULL;
			blob.fd = -1;
			r = inflate_restart(inflating);
			if (r == 0)
				r = inflate_measure(inflating, vs->size_limit * 4 + (1u << 20),
						    &size);
			if (r == 0)
				r = inflate_restart(inflating);
			if (r < 0) {
				http_reply_error(req, 500,
						 "stored gzip data cannot be decompressed%s",
						 r == -EIO ? ": read error" : "");
				inflate_reply_free(inflating);
				return;
			}
		}
	}

	range_header = http_header(req, "Range");
	if (range_header && !send_gzip) {
		nranges = range_parse(range_header, strlen(range_header), size, ranges);
		if (nranges < 0) {
			char cr[64];

			http_reply_error(req, 416, "requested range not satisfiable: %s",
					 range_header);
			snprintf(cr, sizeof(cr), "bytes */%" PRIu64, size);
			http_add_header(req, "Content-Range", cr);
			goto out;
		}
		if (range_total(ranges, nranges) > size)
			nranges = 0; /* asks for more than the whole: send it all */
		if (inflating && nranges > 1)
			nranges = 0; /* several ranges of inflated data: the whole (RFC 9110
				      * allows ignoring Range) */
	}

	if (nranges > 1 && blob.fd >= 0) {
		/* Multiple ranges of a large blob: only the ranges are read, within a budget. */
		reply_multirange(req, NULL, blob.fd, blob.data_offset, size, ranges, nranges,
				 ctype);
	} else if (nranges > 1) {
		reply_multirange(req, body, -1, 0, size, ranges, nranges, ctype);
	} else {
		uint64_t start = nranges == 1 ? ranges[0].start : 0;
		uint64_t len = nranges == 1 ? ranges[0].length : size;
		unsigned status = nranges == 1 ? 206 : 200;

		if (inflating) {
			inflating->skip = start;
			inflating->left = len;
			http_reply_callback(req, status, len, inflate_reader, inflating,
					    inflate_reply_free);
			if (!http_has_reply(req))
				inflate_reply_free(inflating);
			inflating = NULL;
		} else if (blob.fd >= 0) {
			http_reply_fd(req, status, blob.fd, blob.data_offset + start, len);
			blob.fd = -1; /* the response owns it */
		} else {
			http_reply_buffer(req, status, body + start, len, false);
		}
		if (nranges == 1) {
			char cr[96];

			snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start,
				 start + len - 1, size);
			http_add_header(req, "Content-Range", cr);
		}
		http_add_header(req, "Content-Type", ctype);
	}
	if (send_gzip)
		http_add_header(req, "Content-Encoding", "gzip");
	http_add_header(req, "ETag", etag);
	http_add_header(req, "Accept-Ranges", "bytes");
	if (blob.n.last_modified) {
		http_date_format((time_t)blob.n.last_modified, lm, sizeof(lm));
		http_add_header(req, "Last-Modified", lm);
	}
	if (name[0]) {
		snprintf(cd, sizeof(cd), "%s; filename=\"%s\"",
			 http_query_bool(req, "dl") ? "attachment" : "inline", name);
		http_add_header(req, "Content-Disposition", cd);
	}
	if (blob.n.flags & NEEDLE_FLAG_CHUNKMANIFEST)
		http_add_header(req, "X-File-Store", "chunked");
	add_pair_headers(req, &blob.n);
out:
	if (inflating)
		inflate_reply_free(inflating);
	volume_blob_release(&blob);
}

/* ---------------------------------------------------------------- dispatch */

static void handle_request(struct http_request *req)
{
	struct volume_server *vs = req->server_ctx;
	const char *path = req->path, *url_name = NULL;
	size_t url_name_len = 0;
	struct fid fid;

	if (!strcmp(path, "/status") || !strcmp(path, "/metrics") || !strncmp(path, "/ui", 3)) {
		char ip[64];

		/* With a white list, the status routes are for its addresses (or a server of
		 * the cluster with -jwtKey), unless -publicStatus. */
		if (!vs->opt.public_status &&
		    !http_peer_in_list(req, vs->white_list, vs->n_white_list, ip, sizeof(ip)) &&
		    !(keyed(vs) && auth_server_request(req, vs->opt.jwt_key, NULL, NULL)))
			http_reply_error(req, 401,
					 "%s is not in the white list (-publicStatus is off)", ip);
		else if (!strcmp(path, "/status"))
			handle_status(vs, req);
		else if (!strcmp(path, "/metrics"))
			http_reply_metrics(req, vs_metrics_registry(vs->metrics));
		else
			vs_ui_handle(req, vs->metrics);
	} else if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz")) {
		http_reply_json(req, 200, json_object());
	} else if (!strncmp(path, "/admin/", 7)) {
		/* Every admin route changes something (or serves the master): the white list,
		 * then with -jwtKey a server token, from the headers alone. */
		if (!write_allowed(vs, req))
			;
		else if (keyed(vs) && !auth_server_request(req, vs->opt.jwt_key, NULL, NULL))
			http_reply_error(req, 401, "admin routes need a server token");
		else
			handle_admin(vs, req, path + 7);
	} else if (!strcmp(req->method, "OPTIONS")) {
		http_reply_empty(req, 200);
		http_add_header(req, "Access-Control-Allow-Methods",
				"PUT, POST, GET, DELETE, OPTIONS");
	} else if (fid_parse_path(path, strlen(path), &fid, &url_name, &url_name_len) < 0) {
		http_reply_error(req, 400, "bad file id in path \"%s\"", path);
	} else if (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD")) {
		if (read_allowed(vs, req))
			handle_read(vs, req, &fid, url_name, url_name_len);
	} else if (!strcmp(req->method, "POST") || !strcmp(req->method, "PUT")) {
		handle_upload(vs, req, &fid);
	} else if (!strcmp(req->method, "DELETE")) {
		handle_delete(vs, req, &fid);
	} else {
		http_reply_error(req, 400, "unsupported method %s", req->method);
	}
	if (http_has_reply(req)) {
		http_add_header(req, "Server", SERVER_HEADER);
		if (http_header(req, "Origin")) {
			http_add_header(req, "Access-Control-Allow-Origin", "*");
			http_add_header(req, "Access-Control-Allow-Credentials", "true");
		}
	}
}

static void observe_request(void *ctx, const struct http_request *req, unsigned status,
			    uint64_t elapsed_ns, uint64_t bytes_in, uint64_t bytes_out)
{
	vs_metrics_observe(((struct volume_server *)ctx)->metrics, req, status, elapsed_ns,
			   bytes_in, bytes_out);
}

int volume_server_start(const struct volume_server_options *opt, struct volume_server **out)
{
	struct volume_server *vs = calloc(1, sizeof(*vs));
	struct store_options so = {
	    .fsync_every_write = opt->fsync,
	    .min_free_percent = opt->min_free_percent >= 0 ? (unsigned)opt->min_free_percent : 1};
	/*
	 * Replication and proxied reads block a pool thread on another server; enough
	 * threads keep one slow peer from stalling the rest.
	 */
	struct http_server_options ho = {
	    .ip = opt->ip, .port = opt->port, .threads = opt->threads > 0 ? opt->threads : 16};
	int ret;

	if (!vs)
		return -ENOMEM;
	vs->opt = *opt;
	ho.observer = observe_request;
	pthread_mutex_init(&vs->hb_lock, NULL);
	pthread_cond_init(&vs->hb_cond, NULL);
	pthread_mutex_init(&vs->cache_lock, NULL);
	pthread_mutex_init(&vs->masters_lock, NULL);
	http_client_global_init();
	vs->size_limit = (uint64_t)(opt->file_size_limit_mb > 0 ? opt->file_size_limit_mb : 256)
			 << 20;
	ret = store_open(opt->dirs, opt->max_volumes, opt->n_dirs, &so, &vs->store);
	if (ret < 0) {
		free(vs);
		return ret;
	}
	vs->metrics = vs_metrics_new(vs->store);
	if (!vs->metrics) {
		store_close(vs->store);
		free(vs);
		return -ENOMEM;
	}
	ret = http_server_start(&ho, handle_request, vs, &vs->http);
	if (ret < 0) {
		log_error(
		    "volume server: cannot listen on %s:%d: %s", opt->ip ? opt->ip : "*", opt->port,
		    ret == -EADDRINUSE ? "the port is in use (or the address is not this host's)"
				       : strerror(-ret));
		store_close(vs->store);
		vs_metrics_free(vs->metrics);
		free(vs);
		return ret;
	}
	snprintf(vs->self_url, sizeof(vs->self_url), "%s:%d",
		 opt->ip && *opt->ip ? opt->ip : "127.0.0.1", http_server_port(vs->http));
	snprintf(vs->public_url, sizeof(vs->public_url), "%s",
		 opt->public_url && *opt->public_url ? opt->public_url : vs->self_url);
	vs->white_list = split_list(opt->white_list, &vs->n_white_list);
	{
		struct copier_env ce = {.store = vs->store,
					.jwt_key = opt->jwt_key,
					.self_url = vs->self_url,
					.volumes_changed = volumes_changed,
					.ctx = vs};

		if (copier_new(&ce, &vs->copier) < 0) {
			http_server_stop(vs->http);
			store_close(vs->store);
			free(vs);
			return -ENOMEM;
		}
	}
	store_check_space(vs->store);
	if (pthread_create(&vs->space_thread, NULL, space_thread, vs) == 0)
		vs->space_started = true;
	{
		int n;
		char **seeds = split_list(opt->masters, &n);

		for (int i = 0; seeds && i < n; i++)
			start_heartbeat_thread(vs, seeds[i]);
		free_list(seeds);
	}
	log_info("volume server: listening on %s, %d data director%s, %d master(s)", vs->self_url,
		 opt->n_dirs, opt->n_dirs == 1 ? "y" : "ies", vs->n_masters);
	*out = vs;
	return 0;
}

int volume_server_port(const struct volume_server *vs)
{
	return http_server_port(vs->http);
}

/* Tells every master at once that this server's volumes are gone (graceful stop). */
static void say_goodbye(struct volume_server *vs)
{
	const char *headers[] = {"Content-Type: application/x-protobuf", NULL, NULL};
	char auth[AUTH_HEADER_LEN];
	uint8_t *body;
	size_t len;

	if (build_heartbeat(vs, true, &body, &len) < 0)
		return;
	if (keyed(vs) &&
	    auth_server_header(vs->opt.jwt_key, "POST", "/heartbeat", body, len, auth) == 0)
		headers[1] = auth;
	for (int i = 0; i < vs->n_masters; i++) {
		char url[300];
		struct http_client_request rq = {.method = "POST",
						 .url = url,
						 .body = body,
						 .body_len = len,
						 .body_fd = -1,
						 .headers = headers,
						 .timeout_ms = 1000};
		struct http_client_response rs;

		snprintf(url, sizeof(url), "%s://%s/heartbeat", http_scheme(), vs->masters[i]);
		if (http_client_do(&rq, &rs) == 0)
			http_client_response_release(&rs);
	}
	free(body);
}

void volume_server_stop(struct volume_server *vs)
{
	int n_threads;

	if (!vs)
		return;
	/* Both locks: no heartbeat thread can be started once stopping is seen. */
	pthread_mutex_lock(&vs->masters_lock);
	pthread_mutex_lock(&vs->hb_lock);
	vs->stopping = true;
	pthread_cond_broadcast(&vs->hb_cond);
	pthread_mutex_unlock(&vs->hb_lock);
	n_threads = vs->n_hb_threads;
	pthread_mutex_unlock(&vs->masters_lock);
	for (int i = 0; i < n_threads; i++)
		pthread_join(vs->hb_threads[i], NULL);
	if (vs->space_started)
		pthread_join(vs->space_thread, NULL);
	say_goodbye(vs);
	http_server_stop(vs->http);
	copier_free(vs->copier);
	vs_metrics_free(vs->metrics); /* after the server: no observer call is left */
	store_close(vs->store);
	for (int i = 0; i < vs->n_masters; i++)
		free(vs->masters[i]);
	free_list(vs->white_list);
	free(vs);
}
