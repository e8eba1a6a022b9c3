#include "cluster/master/master.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "cluster/net/auth.h"
#include "cluster/base/log.h"
#include "cluster/base/sha256.h"
#include "cluster/base/util.h"
#include "cluster/master/consensus.h"
#include "cluster/common/fid.h"
#include "cluster/master/growth.h"
#include "cluster/common/heartbeat.h"
#include "cluster/net/http.h"
#include "cluster/net/http_client.h"
#include "cluster/net/jwt.h"
#include "cluster/master/repair.h"
#include "cluster/master/sequence.h"
#include "cluster/master/topology.h"
#include "cluster/master/master_ui.h"

#define FORM_LIMIT	(64u << 10)
#define HEARTBEAT_LIMIT (16u << 20)
#define SUBMIT_LIMIT	(256ull << 20)
/* /submit bodies are held in memory: all of them together stay under this (503 beyond). */
#define SUBMIT_BUDGET (512ull << 20)

struct master {
	struct master_options opt;
	char self[160]; /* ip:port */
	uint8_t default_rp;
	struct topology *topo;
	struct sequence *seq;
	struct http_server *http;
	pthread_mutex_t grow_lock;
	pthread_mutex_t vacuum_lock;
	pthread_t vacuum_thread;
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cond;
	bool stopping;
	bool vacuum_started;
	bool ready; /* the sequence is open: requests may be served (atomic) */
	char **white_list;
	int n_white_list;
	/* HA */
	struct consensus *cons; /* NULL for a single master */
	char **peers;		/* HTTP addresses of all masters */
	int n_peers;
	char **raft_peers;	       /* their Raft addresses (port + 10000) */
	_Atomic uint64_t submit_bytes; /* reserved by /submit bodies being received */
	struct repair *repair;	       /* re-replication, check.disk, operators' lock */
	struct master_ui *ui;	       /* /metrics and the status page (master_ui.c) */
};

#define RAFT_PORT_OFFSET 10000

/* "host:port" -> "host:port+delta" into out; -EINVAL when malformed. */
static int shift_port(const char *addr, int delta, char *out, size_t cap)
{
	const char *colon = strrchr(addr, ':');
	long port;
	char *end;

	if (!colon)
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || port + delta <= 0 || port + delta > 65535)
		return -EINVAL;
	snprintf(out, cap, "%.*s:%ld", (int)(colon - addr), addr, port + delta);
	return 0;
}

/* The leader's HTTP address into buf; false when no leader is known. */
static bool leader_http(struct master *m, char *buf, size_t cap)
{
	char raft_addr[128];

	if (!m->cons) {
		snprintf(buf, cap, "%s", m->self);
		return true;
	}
	if (!consensus_leader(m->cons, raft_addr, sizeof(raft_addr)))
		return false;
	return shift_port(raft_addr, -RAFT_PORT_OFFSET, buf, cap) == 0;
}

static bool is_leader(struct master *m)
{
	return !m->cons || consensus_is_leader(m->cons);
}

static bool leader_cb(void *ctx)
{
	return is_leader(ctx);
}

/* Per-request state: the url-encoded form body (params may come from it) or a body. */
struct mreq {
	struct master *m;
	char *body;
	size_t len;
	size_t limit;
	void (*handler)(struct master *m, struct http_request *req);
	/* parsed form: name=value pairs, decoded in place */
	char **names, **values;
	int n;
	/* a heartbeat's server token covers its body: the body's SHA-256 */
	bool has_body_digest;
	uint8_t body_digest[SHA256_DIGEST_LEN];
	bool no_form;	   /* parameters only from the query string (the token covers it) */
	uint64_t reserved; /* bytes of the /submit budget this request holds */
};

/* ---------------------------------------------------------------- params */

static void url_decode(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (*s == '+') {
			*o++ = ' ';
		} else if (*s == '%' && hex_digit(s[1]) >= 0 && hex_digit(s[2]) >= 0) {
			*o++ = (char)(hex_digit(s[1]) * 16 + hex_digit(s[2]));
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

static void parse_form(struct mreq *r)
{
	int count = 1;

	if (!r->body)
		return;
	for (size_t i = 0; i < r->len; i++)
		count += r->body[i] == '&';
	r->names = calloc((size_t)count, sizeof(char *));
	r->values = calloc((size_t)count, sizeof(char *));
	if (!r->names || !r->values)
		return;
	for (char *save = NULL, *tok = strtok_r(r->body, "&", &save); tok;
	     tok = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(tok, '=');

		if (eq)
			*eq = '\0';
		url_decode(tok);
		if (eq)
			url_decode(eq + 1);
		r->names[r->n] = tok;
		r->values[r->n++] = eq ? eq + 1 : "";
	}
}

/* A parameter from the query string or a url-encoded form body (Go's FormValue). */
static const char *param(struct http_request *req, const char *name)
{
	struct mreq *r = req->state;
	const char *v = http_query(req, name);

	if (v || !r)
		return v;
	for (int i = 0; i < r->n; i++)
		if (!strcmp(r->names[i], name))
			return r->values[i];
	return NULL;
}

static const char *param_or(struct http_request *req, const char *name, const char *def)
{
	const char *v = param(req, name);

	return v && *v ? v : def;
}

/* ---------------------------------------------------------------- helpers */

static bool write_allowed(struct master *m, struct http_request *req)
{
	return http_check_white_list(req, m->white_list, m->n_white_list);
}

static bool keyed(const struct master *m)
{
	return m->opt.jwt_key && *m->opt.jwt_key;
}

/*
 * Status and topology pages: with a white list (and no -publicStatus), only for its
 * addresses, or a server of the cluster (a server token: volume servers learn the
 * masters from /cluster/status). Replies 401 and returns false otherwise.
 */
static bool status_allowed(struct master *m, struct http_request *req)
{
	char ip[64];

	if (m->opt.public_status ||
	    http_peer_in_list(req, m->white_list, m->n_white_list, ip, sizeof(ip)))
		return true;
	if (keyed(m) && auth_server_request(req, m->opt.jwt_key, NULL, NULL))
		return true;
	http_reply_error(req, 401, "%s is not in the white list (status pages are not public)", ip);
	return false;
}

static bool status_route(const char *p)
{
	return !strcmp(p, "/dir/status") || !strcmp(p, "/") || !strcmp(p, "/vol/status") ||
	       !strcmp(p, "/cluster/status") || !strcmp(p, "/cluster/repair") ||
	       !strcmp(p, "/cluster/repair/plan") || !strcmp(p, "/metrics") ||
	       !strncmp(p, "/ui", 3);
}

/* Calls a volume server's admin route; 0 on a 2xx answer, -ENOSPC on a 507 (no slot or
 * no disk space there), else -EIO; why in err. */
static int call_volume_server(struct master *m, const char *url, const char *path_and_query,
			      long timeout_ms, char *err, size_t err_cap)
{
	char full[1024], auth[AUTH_HEADER_LEN];
	const char *headers[2] = {NULL, NULL};
	struct http_client_request rq = {.method = "POST",
					 .url = full,
					 .body_fd = -1,
					 .headers = headers,
					 .timeout_ms = timeout_ms};
	struct http_client_response rs;
	int ret;

	if (keyed(m)) {
		if (auth_server_header(m->opt.jwt_key, "POST", path_and_query, NULL, 0, auth) < 0) {
			snprintf(err, err_cap, "cannot sign the request to %s", url);
			return -EIO;
		}
		headers[0] = auth;
	}
	snprintf(full, sizeof(full), "%s://%s%s", http_scheme(), url, path_and_query);
	ret = http_client_do(&rq, &rs);
	if (ret < 0) {
		snprintf(err, err_cap, "%s: %s", url, rs.error);
		return -EIO;
	}
	if (rs.status < 200 || rs.status >= 300) {
		snprintf(err, err_cap, "%s answered %ld: %.200s", url, rs.status, rs.body);
		ret = rs.status == 507 ? -ENOSPC : -EIO;
		http_client_response_release(&rs);
		return ret;
	}
	http_client_response_release(&rs);
	return 0;
}

struct grow_options {
	const char *collection;
	uint8_t rp;
	struct ttl ttl;
	const char *data_center, *rack, *data_node;
};

/*
 * Grows `count` logical volumes. Returns how many were created (>= 0), or -ENOSPC /
 * -EIO with the reason in err when not even one could be.
 */
static int grow_volumes(struct master *m, const struct grow_options *g, int count,
			const struct topo_filter *unless_writable, char *err, size_t err_cap)
{
	struct topo_node_view *nodes;
	unsigned rs = (unsigned)now_ns();
	char repl[4], ttl[16], coll[400];
	int n, created = 0, ret = 0, refusals = 0;

	placement_format(g->rp, repl);
	ttl_format(g->ttl, ttl, sizeof(ttl));
	http_client_escape(g->collection ? g->collection : "", coll, sizeof(coll));
	pthread_mutex_lock(&m->grow_lock);
	if (unless_writable) {
		/* Concurrent assigns wait here for one growth: the others find its volumes. */
		struct topo_volume_view v;

		if (topology_pick_for_write(m->topo, unless_writable, now_ns(), &v)) {
			pthread_mutex_unlock(&m->grow_lock);
			return 0;
		}
	}
	n = topology_nodes(m->topo, now_ns(), &nodes);
	if (n < 0) {
		pthread_mutex_unlock(&m->grow_lock);
		snprintf(err, err_cap, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < count; i++) {
		int idx[TOPO_MAX_LOCATIONS], copies;
		uint32_t vid;
		char path[600];
		int done = 0;

		copies = growth_pick_servers(nodes, n, g->rp, g->data_center, g->rack, g->data_node,
					     &rs, idx, err, err_cap);
		if (copies < 0) {
			ret = copies;
			break;
		}
		if (sequence_next_volume_id(m->seq, &vid) < 0) {
			snprintf(err, err_cap, "cannot persist the next volume id under %s",
				 m->opt.mdir);
			ret = -EIO;
			break;
		}
		snprintf(path, sizeof(path),
			 "/admin/assign_volume?volume=%u&collection=%s&replication=%s&ttl=%s", vid,
			 coll, repl, ttl);
		for (done = 0; done < copies; done++) {
			ret =
			    call_volume_server(m, nodes[idx[done]].url, path, 10000, err, err_cap);
			if (ret < 0)
				break;
		}
		if (done < copies) {
			char ignored[256];

			snprintf(path, sizeof(path), "/admin/delete_volume?volume=%u", vid);
			for (int k = 0; k < done; k++)
				call_volume_server(m, nodes[idx[k]].url, path, 5000, ignored,
						   sizeof(ignored));
			if (ret == -ENOSPC && refusals++ < n) {
				/* Its disk is full (its next heartbeat will say so): place the
				 * volume elsewhere if the rule allows. */
				log_warn("master: growth: %s", err);
				nodes[idx[done]].free_slots = 0;
				i--;
				continue;
			}
			ret = ret == -ENOSPC ? -ENOSPC : -EIO;
			break;
		}
		for (int k = 0; k < copies; k++) {
			topology_add_volume(m->topo, nodes[idx[k]].url, vid,
					    g->collection ? g->collection : "", g->rp, g->ttl,
					    now_ns());
			nodes[idx[k]].free_slots--;
		}
		log_info(
		    "master: grew volume %u (collection \"%s\", replication %s, ttl \"%s\") on %d server(s)",
		    vid, g->collection ? g->collection : "", repl, ttl, copies);
		{
			char ev[400];

			snprintf(ev, sizeof(ev),
				 "volume %u grown: collection \"%.128s\", replication %s, %d cop%s",
				 vid, g->collection ? g->collection : "", repl, copies,
				 copies == 1 ? "y" : "ies");
			master_ui_growth(m->ui, true, ev);
		}
		created++;
	}
	pthread_mutex_unlock(&m->grow_lock);
	free(nodes);
	if (created == 0 && ret < 0) {
		char ev[700];

		snprintf(ev, sizeof(ev), "volume growth failed: %.600s", err);
		master_ui_growth(m->ui, false, ev);
	}
	return created > 0 ? created : ret;
}

/* Reads the assign/grow options; replies 406/400 and returns -EINVAL when bad. */
static int parse_grow_options(struct master *m, struct http_request *req, struct grow_options *g)
{
	const char *repl = param(req, "replication");
	const char *ttl = param(req, "ttl");

	memset(g, 0, sizeof(*g));
	g->collection = param_or(req, "collection", "");
	g->rp = m->default_rp;
	if (repl && *repl && placement_parse(repl, &g->rp) < 0) {
		http_reply_error(req, 406, "bad replication \"%s\": want up to 3 digits like 001",
				 repl);
		return -EINVAL;
	}
	if (ttl_parse(ttl, &g->ttl) < 0) {
		http_reply_error(
		    req, 406, "bad ttl \"%s\": want a number with a unit m, h, d, w, M or y", ttl);
		return -EINVAL;
	}
	if (!auth_collection_valid(g->collection)) {
		http_reply_error(
		    req, 400, "bad collection name: want up to %d of A-Z a-z 0-9 _ - . (not first)",
		    AUTH_MAX_COLLECTION_LEN);
		return -EINVAL;
	}
	g->data_center = param_or(req, "dataCenter", NULL);
	g->rack = param_or(req, "rack", NULL);
	g->data_node = param_or(req, "dataNode", NULL);
	if (g->data_center && !topology_has_data_center(m->topo, g->data_center, now_ns())) {
		http_reply_error(req, 400, "data center %s not found in the topology",
				 g->data_center);
		return -EINVAL;
	}
	return 0;
}

static void filter_of(const struct grow_options *g, struct topo_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->collection = g->collection;
	f->replica_placement = g->rp;
	f->ttl = g->ttl;
	f->data_center = g->data_center;
	f->rack = g->rack;
	f->data_node = g->data_node;
}

/* Forwards the request to the leader and relays its answer (a transparent proxy). */
static void proxy_to_leader(struct master *m, struct http_request *req)
{
	struct mreq *r = req->state;
	char leader[160], url[4096], query[3000], ct[300], auth[JWT_MAX_TOKEN_LEN + 40];
	const char *ctype = http_header(req, "Content-Type");
	const char *token = auth_request_token(req);
	const char *headers[3] = {NULL, NULL, NULL};
	int nh = 0;
	struct http_client_request rq = {.method = req->method,
					 .url = url,
					 .body_fd = -1,
					 .headers = headers,
					 .timeout_ms = 30000};
	struct http_client_response rs;

	if (!leader_http(m, leader, sizeof(leader)) || !strcmp(leader, m->self)) {
		http_reply_error(
		    req, 503,
		    "no master leader is known right now (election in progress or no quorum); retry");
		http_add_header(req, "Retry-After", "1");
		return;
	}
	http_query_string(req, query, sizeof(query));
	snprintf(url, sizeof(url), "%s://%s%s%s%s", http_scheme(), leader, req->path,
		 query[0] ? "?" : "", query);
	if (ctype) {
		snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
		headers[nh++] = ct;
	}
	/* The leader checks the server token of an admin route again: same request. */
	if (token && strlen(token) <= JWT_MAX_TOKEN_LEN) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		headers[nh++] = auth;
	}
	if (r && r->body) {
		rq.body = r->body;
		rq.body_len = r->len;
	}
	if (http_client_do(&rq, &rs) < 0) {
		http_reply_error(req, 503, "the leader %s did not answer: %s", leader, rs.error);
		http_add_header(req, "Retry-After", "1");
		return;
	}
	http_reply_relay(req, &rs);
}

/* ---------------------------------------------------------------- handlers */

static void handle_assign(struct master *m, struct http_request *req)
{
	struct grow_options g;
	struct topo_filter f;
	struct topo_volume_view v;
	struct fid fid;
	const char *count_s = param(req, "count");
	long count = count_s ? strtol(count_s, NULL, 10) : 1;
	char fid_text[FID_MAX_LEN], err[512];
	uint64_t first;

	if (!write_allowed(m, req) || parse_grow_options(m, req, &g) < 0)
		return;
	if (count <= 0 || count > 1000000)
		count = 1;
	sequence_ensure_topology_id(m->seq);
	filter_of(&g, &f);
	if (!topology_pick_for_write(m->topo, &f, now_ns(), &v)) {
		const char *wvc = param(req, "writableVolumeCount");
		int grow = wvc && atoi(wvc) > 0 ? atoi(wvc) : growth_count_for(g.rp);
		int ret = grow_volumes(m, &g, grow, &f, err, sizeof(err));

		if (ret == -ENOSPC && topology_pick_for_write(m->topo, &f, now_ns(), &v))
			ret = 0; /* another assign's growth made room meanwhile */
		if (ret == -ENOSPC && topology_has_late_nodes(m->topo, now_ns())) {
			http_reply_error(
			    req, 503,
			    "no writable volume now and some volume servers are late with their heartbeats: %s; retry",
			    err);
			http_add_header(req, "Retry-After", "1");
			return;
		}
		if (ret == -ENOSPC) {
			http_reply_error(req, 406,
					 "no writable volumes and no free volumes left: %s", err);
			return;
		}
		if (ret < 0) {
			http_reply_error(req, 500, "cannot grow volumes: %s", err);
			return;
		}
		if (!topology_pick_for_write(m->topo, &f, now_ns(), &v)) {
			http_reply_error(req, 503, "volume growth in progress, retry");
			http_add_header(req, "Retry-After", "1");
			return;
		}
	}
	if (sequence_next_keys(m->seq, (uint64_t)count, &first) < 0) {
		if (m->cons) {
			http_reply_error(
			    req, 503,
			    "cannot reserve file keys: no Raft quorum or leadership lost; retry");
			http_add_header(req, "Retry-After", "1");
		} else {
			http_reply_error(req, 500, "cannot persist the file key sequence under %s",
					 m->opt.mdir);
		}
		return;
	}
	fid.vid = v.id;
	fid.key = first;
	if (getrandom(&fid.cookie, sizeof(fid.cookie), 0) != sizeof(fid.cookie))
		fid.cookie = (uint32_t)now_ns();
	fid_format(&fid, fid_text);
	http_reply_json(req, 200,
			json_pack("{s:s,s:s,s:s,s:I}", "fid", fid_text, "url", v.locations[0].url,
				  "publicUrl", v.locations[0].public_url, "count",
				  (json_int_t)count));
	if (m->opt.jwt_key && *m->opt.jwt_key) {
		char token[1024], header[1100];

		if (jwt_sign_fid(m->opt.jwt_key, fid_text, (int64_t)(now_ns() / 1000000000ull) + 10,
				 token, sizeof(token)) >= 0) {
			snprintf(header, sizeof(header), "Bearer %s", token);
			http_add_header(req, "Authorization", header);
		}
	}
}

static json_t *locations_json(const struct topo_volume_view *v)
{
	json_t *locs = json_array();

	for (int i = 0; i < v->n_locations; i++)
		json_array_append_new(locs, json_pack("{s:s,s:s,s:s}", "url", v->locations[i].url,
						      "publicUrl", v->locations[i].public_url,
						      "dataCenter", v->locations[i].data_center));
	return locs;
}

static void handle_lookup(struct master *m, struct http_request *req)
{
	const char *q = param(req, "volumeId");
	struct topo_volume_view v;
	uint32_t vid;
	size_t len;
	char ip[64];

	if (!q || !*q)
		q = param(req, "fileId");
	if (!q || !*q) {
		http_reply_error(req, 400, "parameter volumeId or fileId is required");
		return;
	}
	len = strcspn(q, ",");
	if (fid_parse_vid(q, len, &vid) < 0) {
		http_reply_json(req, 400,
				json_pack("{s:s,s:s,s:s}", "volumeOrFileId", q, "volumeId", q,
					  "error", "unknown volume id format"));
		return;
	}
	if (!topology_lookup(m->topo, vid, now_ns(), &v)) {
		char msg[64];

		snprintf(msg, sizeof(msg), "volume id %u not found", vid);
		http_reply_json(
		    req, 404,
		    json_pack("{s:s,s:s,s:s}", "volumeOrFileId", q, "volumeId", q, "error", msg));
		return;
	}
	http_reply_json(req, 200,
			json_pack("{s:s,s:s,s:o}", "volumeOrFileId", q, "volumeId", q, "locations",
				  locations_json(&v)));
	/* As SeaweedFS: a lookup naming a file id gets its write token (for deletes), or
	 * with read=yes its read token (-jwtReadKey; valid 60 s). */
	bool read = http_query_bool(req, "read");
	const char *key = read ? m->opt.jwt_read_key : m->opt.jwt_key;

	/* the file id is fileId's, even when volumeId is given too (kelp's client sends
	 * both: a token was then never signed, and keyed deletes failed with 401) */
	if (param(req, "fileId") && strchr(param(req, "fileId"), ','))
		q = param(req, "fileId");
	if (key && *key && strchr(q, ',') &&
	    http_peer_in_list(req, m->white_list, m->n_white_list, ip, sizeof(ip))) {
		char token[1024], header[1100];

		if (jwt_sign_fid(key, q, (int64_t)(now_ns() / 1000000000ull) + (read ? 60 : 10),
				 token, sizeof(token)) == 0) {
			snprintf(header, sizeof(header), "Bearer %s", token);
			http_add_header(req, "Authorization", header);
		}
	}
}

static void handle_dir_status(struct master *m, struct http_request *req)
{
	http_reply_json(req, 200,
			json_pack("{s:s,s:s,s:o}", "Version", KELP_VERSION, "TopologyId",
				  sequence_topology_id(m->seq), "Topology",
				  topology_status_json(m->topo, now_ns())));
}

static void handle_cluster_status(struct master *m, struct http_request *req)
{
	uint32_t max_vid = sequence_max_volume_id(m->seq);
	json_t *j = json_object(), *peers = json_array();
	char leader[160];

	/* As SeaweedFS: IsLeader absent on followers, Leader absent when unknown. */
	if (is_leader(m))
		json_object_set_new(j, "IsLeader", json_true());
	if (leader_http(m, leader, sizeof(leader)))
		json_object_set_new(j, "Leader", json_string(leader));
	for (int i = 0; i < m->n_peers; i++)
		if (strcmp(m->peers[i], m->self))
			json_array_append_new(peers, json_string(m->peers[i]));
	json_object_set_new(j, "Peers", peers);
	json_object_set_new(j, "MaxVolumeId", json_integer(max_vid));
	http_reply_json(req, 200, j);
}

static void handle_grow(struct master *m, struct http_request *req)
{
	struct grow_options g;
	const char *count_s = param(req, "count");
	char *end = NULL, err[512];
	long count = count_s ? strtol(count_s, &end, 10) : 0;
	int nodes, max, free_slots, copies, ret;

	if (!write_allowed(m, req))
		return;
	if (!count_s || !end || *end || count <= 0 || count > 1000) {
		http_reply_error(req, 400,
				 "parameter count must be a number from 1 to 1000, got \"%s\"",
				 count_s ? count_s : "");
		return;
	}
	if (parse_grow_options(m, req, &g) < 0)
		return;
	copies = placement_copies(g.rp);
	topology_capacity(m->topo, now_ns(), &nodes, &max, &free_slots);
	if (free_slots < count * copies) {
		http_reply_error(req, 406, "only %d volumes left, not enough for %ld", free_slots,
				 count * copies);
		return;
	}
	ret = grow_volumes(m, &g, (int)count, NULL, err, sizeof(err));
	if (ret == -ENOSPC) {
		http_reply_error(req, 406, "%s", err);
		return;
	}
	if (ret < 0) {
		http_reply_error(req, 500, "cannot grow volumes: %s", err);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:i}", "count", ret * copies));
}

static void handle_vol_status(struct master *m, struct http_request *req)
{
	http_reply_json(req, 200,
			json_pack("{s:s,s:o}", "Version", KELP_VERSION, "Volumes",
				  topology_volume_status_json(m->topo, now_ns())));
}

/* Runs the vacuum protocol on every replica of one volume. */
static void vacuum_volume(struct master *m, const struct topo_volume_view *v, double threshold)
{
	char path[128], err[512];
	bool over = false, ok = true;

	for (int i = 0; i < v->n_locations; i++) {
		char full[300], check[64], auth[AUTH_HEADER_LEN];
		const char *headers[2] = {NULL, NULL};
		struct http_client_request rq = {.method = "GET",
						 .url = full,
						 .body_fd = -1,
						 .headers = headers,
						 .timeout_ms = 10000};
		struct http_client_response rs;
		json_t *j;

		snprintf(check, sizeof(check), "/admin/vacuum/check?volume=%u", v->id);
		if (keyed(m)) {
			if (auth_server_header(m->opt.jwt_key, "GET", check, NULL, 0, auth) < 0)
				return;
			headers[0] = auth;
		}
		snprintf(full, sizeof(full), "%s://%s%s", http_scheme(), v->locations[i].url,
			 check);
		if (http_client_do(&rq, &rs) < 0)
			return;
		j = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
		if (j && json_real_value(json_object_get(j, "garbageRatio")) >= threshold)
			over = true;
		json_decref(j);
		http_client_response_release(&rs);
	}
	if (!over)
		return;
	log_info("master: vacuuming volume %u on %d replica(s)", v->id, v->n_locations);
	topology_set_vacuuming(m->topo, v->id, true);
	snprintf(path, sizeof(path), "/admin/vacuum/compact?volume=%u", v->id);
	for (int i = 0; i < v->n_locations && ok; i++)
		ok =
		    call_volume_server(m, v->locations[i].url, path, 600000, err, sizeof(err)) == 0;
	if (!ok)
		log_warn("master: vacuum of volume %u failed: %s", v->id, err);
	if (ok)
		events_add(master_ui_events(m->ui), "vacuum", "volume %u vacuumed on %d replica(s)",
			   v->id, v->n_locations);
	else
		events_add(master_ui_events(m->ui), "error", "vacuum of volume %u failed: %.300s",
			   v->id, err);
	snprintf(path, sizeof(path),
		 ok ? "/admin/vacuum/commit?volume=%u" : "/admin/vacuum/cleanup?volume=%u", v->id);
	for (int i = 0; i < v->n_locations; i++)
		if (call_volume_server(m, v->locations[i].url, path, 600000, err, sizeof(err)) < 0)
			log_warn("master: vacuum of volume %u: %s", v->id, err);
	topology_set_vacuuming(m->topo, v->id, false);
}

static void vacuum_all(struct master *m, double threshold)
{
	struct topo_volume_view *views;
	int n;

	pthread_mutex_lock(&m->vacuum_lock);
	n = topology_volumes(m->topo, now_ns(), &views);
	for (int i = 0; i < n; i++) {
		/*
		 * Every replica is asked for its garbage ratio (heartbeats may not have
		 * reported recent deletes yet). A volume missing a replica or marked
		 * read-only is left alone: the copies would end up at different revisions.
		 * One read-only because its disk is full is vacuumed: that is how room
		 * comes back after deletions.
		 */
		if (views[i].marked_read_only ||
		    views[i].n_locations < placement_copies(views[i].replica_placement))
			continue;
		vacuum_volume(m, &views[i], threshold);
	}
	if (n > 0)
		free(views);
	pthread_mutex_unlock(&m->vacuum_lock);
}

static void handle_vacuum(struct master *m, struct http_request *req)
{
	const char *t = param(req, "garbageThreshold");
	double threshold = m->opt.garbage_threshold;

	if (!write_allowed(m, req))
		return;
	if (t && *t) {
		char *end;

		threshold = strtod(t, &end);
		if (*end || threshold < 0 || threshold > 1) {
			http_reply_error(req, 406, "bad garbageThreshold \"%s\"", t);
			return;
		}
	}
	vacuum_all(m, threshold);
	handle_dir_status(m, req);
}

static void handle_col_delete(struct master *m, struct http_request *req)
{
	const char *c = param(req, "collection");
	struct topo_volume_view *views;
	char **done = NULL, err[512], path[400], coll[300];
	int n, n_done = 0;
	bool failed = false;

	if (!write_allowed(m, req))
		return;
	if (!c || !*c) {
		http_reply_error(req, 400, "parameter collection is required");
		return;
	}
	if (!auth_collection_valid(c)) {
		http_reply_error(
		    req, 400, "bad collection name: want up to %d of A-Z a-z 0-9 _ - . (not first)",
		    AUTH_MAX_COLLECTION_LEN);
		return;
	}
	if (!topology_has_collection(m->topo, c)) {
		http_reply_error(req, 400, "collection %s does not exist", c);
		return;
	}
	snprintf(path, sizeof(path), "/admin/delete_collection?collection=%s",
		 http_client_escape(c, coll, sizeof(coll)));
	n = topology_volumes(m->topo, now_ns(), &views);
	done = calloc((size_t)(n > 0 ? n : 1) * TOPO_MAX_LOCATIONS, sizeof(char *));
	for (int i = 0; i < n && done; i++) {
		if (strcmp(views[i].collection, c))
			continue;
		for (int k = 0; k < views[i].n_locations; k++) {
			bool seen = false;

			for (int d = 0; d < n_done && !seen; d++)
				seen = !strcmp(done[d], views[i].locations[k].url);
			if (seen)
				continue;
			done[n_done++] = views[i].locations[k].url;
			if (call_volume_server(m, views[i].locations[k].url, path, 30000, err,
					       sizeof(err)) < 0)
				failed = true;
		}
	}
	free(done);
	if (n > 0)
		free(views);
	if (failed) {
		http_reply_error(req, 500, "deleting collection %s: %s", c, err);
		return;
	}
	topology_delete_collection(m->topo, c);
	http_reply_empty(req, 204);
}

static bool volumes_sane(const struct hb_volume *v, size_t n, char *err, size_t err_cap)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i].id == 0 || v[i].id > AUTH_MAX_VOLUME_ID) {
			snprintf(err, err_cap, "volume id %u is not 1-%u", v[i].id,
				 AUTH_MAX_VOLUME_ID);
			return false;
		}
		if (!auth_collection_valid(v[i].collection)) {
			snprintf(err, err_cap, "volume %u has a bad collection name", v[i].id);
			return false;
		}
	}
	return true;
}

/*
 * What a heartbeat may claim: an IPv4 address or a host name that resolves (checked
 * when the node is new) and a port; a sane public URL; volume ids, collection names
 * and the file key within bounds (AUTH_*). False with the reason in err.
 */
static bool heartbeat_sane(struct master *m, const struct heartbeat *hb, char *err, size_t err_cap)
{
	char url[128];

	snprintf(url, sizeof(url), "%s:%u", hb->ip, hb->port);
	if (!auth_node_address_valid(hb->ip, hb->port, false, err, err_cap))
		return false;
	if (!topology_has_node(m->topo, url) &&
	    !auth_node_address_valid(hb->ip, hb->port, true, err, err_cap))
		return false;
	if (hb->public_url[0] && !auth_public_url_valid(hb->public_url)) {
		snprintf(err, err_cap, "public url \"%.100s\" is not host[:port]", hb->public_url);
		return false;
	}
	if (hb->max_file_key >= AUTH_MAX_FILE_KEY) {
		snprintf(err, err_cap, "file key %" PRIu64 " is not below 2^62", hb->max_file_key);
		return false;
	}
	return volumes_sane(hb->volumes, hb->n_volumes, err, err_cap) &&
	       volumes_sane(hb->new_volumes, hb->n_new, err, err_cap) &&
	       volumes_sane(hb->deleted_volumes, hb->n_deleted, err, err_cap);
}

/* Logs a refused heartbeat, at most one line every 10 s (a flood fills no disk). */
static void log_refused_heartbeat(struct master *m, struct http_request *req, const char *why)
{
	static _Atomic uint64_t last;
	static _Atomic unsigned suppressed;
	uint64_t now = monotonic_ns(), prev = last;
	char ip[64];

	if (prev && now - prev < 10000000000ull) {
		suppressed++;
		return;
	}
	last = now;
	http_peer_ip(req, ip, sizeof(ip));
	log_warn("master: refused a heartbeat from %s: %s (%u more refused since the last "
		 "report)",
		 ip, why, (unsigned)suppressed);
	suppressed = 0;
}

static void handle_heartbeat(struct master *m, struct http_request *req)
{
	struct mreq *r = req->state;
	struct heartbeat hb;
	struct heartbeat_response resp;
	uint8_t *out;
	size_t out_len;
	char err[300];

	if (keyed(m)) {
		/* The token was checked before the body was read; now the body it covers. */
		uint8_t digest[SHA256_DIGEST_LEN];

		sha256(r->body ? r->body : "", r->len, digest);
		if (!r->has_body_digest || memcmp(digest, r->body_digest, sizeof(digest))) {
			log_refused_heartbeat(m, req, "its body is not the one its token covers");
			http_reply_error(req, 401,
					 "the heartbeat's body is not the one its token "
					 "covers");
			return;
		}
	}
	if (!r->body || heartbeat_decode((const uint8_t *)r->body, r->len, &hb) < 0) {
		log_refused_heartbeat(m, req, "malformed");
		http_reply_error(req, 400, "malformed heartbeat");
		return;
	}
	if (!hb.ip[0])
		http_peer_ip(req, hb.ip, sizeof(hb.ip));
	if (!heartbeat_sane(m, &hb, err, sizeof(err))) {
		log_refused_heartbeat(m, req, err);
		heartbeat_release(&hb);
		http_reply_error(req, 400, "heartbeat refused: %s", err);
		return;
	}
	if (topology_apply_heartbeat(m->topo, &hb, now_ns()) < 0) {
		heartbeat_release(&hb);
		http_reply_error(req, 400, "heartbeat without an address and port");
		return;
	}
	sequence_set_max_key(m->seq, hb.max_file_key);
	sequence_set_max_volume_id(m->seq, topology_max_volume_id(m->topo));
	heartbeat_release(&hb);
	memset(&resp, 0, sizeof(resp));
	resp.volume_size_limit = topology_volume_size_limit(m->topo);
	if (!leader_http(m, resp.leader, sizeof(resp.leader)))
		resp.leader[0] = '\0';
	if (heartbeat_response_encode(&resp, &out, &out_len) < 0) {
		http_reply_error(req, 500, "cannot encode the heartbeat response");
		return;
	}
	http_reply_buffer(req, 200, out, out_len, true);
	http_add_header(req, "Content-Type", "application/x-protobuf");
}

static void handle_submit(struct master *m, struct http_request *req)
{
	struct mreq *r = req->state;
	struct grow_options g;
	struct topo_filter f;
	struct topo_volume_view v;
	struct fid fid;
	char fid_text[FID_MAX_LEN], url[512], ct[600], *headers[3] = {NULL};
	struct http_client_request rq = {
	    .method = "POST", .url = url, .body_fd = -1, .timeout_ms = 60000};
	struct http_client_response rs;
	const char *ctype = http_header(req, "Content-Type");
	uint64_t first;
	json_t *j;

	if (strcmp(req->method, "POST")) {
		http_reply_error(req, 405, "/submit takes a POST with a multipart body");
		return;
	}
	if (!write_allowed(m, req) || parse_grow_options(m, req, &g) < 0)
		return;
	filter_of(&g, &f);
	if (!topology_pick_for_write(m->topo, &f, now_ns(), &v)) {
		char err[512];

		if (grow_volumes(m, &g, growth_count_for(g.rp), &f, err, sizeof(err)) < 0 ||
		    !topology_pick_for_write(m->topo, &f, now_ns(), &v)) {
			http_reply_error(req, 406, "no writable volumes: %s", err);
			return;
		}
	}
	if (sequence_next_keys(m->seq, 1, &first) < 0) {
		http_reply_error(req, 500, "cannot persist the file key sequence");
		return;
	}
	fid.vid = v.id;
	fid.key = first;
	if (getrandom(&fid.cookie, sizeof(fid.cookie), 0) != sizeof(fid.cookie))
		fid.cookie = (uint32_t)now_ns();
	fid_format(&fid, fid_text);
	snprintf(url, sizeof(url), "%s://%s/%s", http_scheme(), v.locations[0].url, fid_text);
	snprintf(ct, sizeof(ct), "Content-Type: %s", ctype ? ctype : "application/octet-stream");
	headers[0] = ct;
	if (m->opt.jwt_key && *m->opt.jwt_key) {
		static __thread char auth[1200];
		char token[1024];

		if (jwt_sign_fid(m->opt.jwt_key, fid_text, (int64_t)(now_ns() / 1000000000ull) + 60,
				 token, sizeof(token)) < 0) {
			http_reply_error(req, 500, "cannot sign the write token");
			return;
		}
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		headers[1] = auth;
	}
	rq.headers = (const char *const *)headers;
	rq.body = r->body ? r->body : "";
	rq.body_len = r->len;
	if (http_client_do(&rq, &rs) < 0) {
		http_reply_error(req, 500, "upload to %s failed: %s", v.locations[0].url, rs.error);
		return;
	}
	j = json_loads(rs.body, 0, NULL);
	if (rs.status != 201 && rs.status != 204) {
		http_reply_error(req, 500, "upload to %s failed with %ld: %.300s",
				 v.locations[0].url, rs.status, rs.body);
	} else {
		char file_url[700];

		snprintf(file_url, sizeof(file_url), "%s/%s", v.locations[0].public_url, fid_text);
		http_reply_json(req, 201,
				json_pack("{s:s,s:s,s:s,s:I,s:s}", "fileName",
					  json_string_value(json_object_get(j, "name")) ?: "",
					  "fid", fid_text, "fileUrl", file_url, "size",
					  json_integer_value(json_object_get(j, "size")), "eTag",
					  json_string_value(json_object_get(j, "eTag")) ?: ""));
	}
	json_decref(j);
	http_client_response_release(&rs);
}

static void handle_redirect(struct master *m, struct http_request *req)
{
	struct fid fid;
	struct topo_volume_view v;
	const char *path = req->path;
	char location[1200];

	if (fid_parse_path(path, strlen(path), &fid, NULL, NULL) < 0) {
		http_reply_error(req, 400, "unknown path %s", path);
		return;
	}
	if (!topology_lookup(m->topo, fid.vid, now_ns(), &v)) {
		http_reply_error(req, 404, "volume id %u not found", fid.vid);
		return;
	}
	{
		char query[600];

		http_query_string(req, query, sizeof(query));
		snprintf(location, sizeof(location), "%s://%s%s%s%s", http_scheme(),
			 v.locations[(unsigned)now_ns() % (unsigned)v.n_locations].public_url, path,
			 query[0] ? "?" : "", query);
	}
	http_reply_empty(req, 308);
	http_add_header(req, "Location", location);
}

static bool proxied_route(const char *p)
{
	return !strcmp(p, "/dir/assign") || !strcmp(p, "/dir/status") || !strcmp(p, "/") ||
	       !strncmp(p, "/vol/", 5) || !strcmp(p, "/col/delete") || !strcmp(p, "/submit") ||
	       !strncmp(p, "/cluster/repair", 15) || !strcmp(p, "/cluster/lock") ||
	       !strcmp(p, "/cluster/unlock");
}

/* /cluster/repair, /cluster/lock, /cluster/unlock (repair.h). */
static void handle_repair_routes(struct master *m, struct http_request *req)
{
	char token[64], holder[128];
	int ret;

	if (!strcmp(req->path, "/cluster/repair")) {
		http_reply_json(req, 200,
				json_pack("{s:o}", "Repair", repair_status_json(m->repair)));
		return;
	}
	if (!strcmp(req->path, "/cluster/repair/plan")) {
		http_reply_json(req, 200, repair_plan_json(m->repair));
		return;
	}
	if (!strcmp(req->path, "/cluster/repair/now")) {
		const char *v = param(req, "volume");
		char *end = NULL;
		unsigned long vid = v ? strtoul(v, &end, 10) : 0;

		if (!v || !*v || *end || vid == 0 || vid > AUTH_MAX_VOLUME_ID)
			http_reply_error(req, 400, "parameter volume must be a volume id");
		else if (repair_now(m->repair, (uint32_t)vid) < 0)
			http_reply_error(req, 404, "volume %lu not found", vid);
		else
			http_reply_json(req, 200, json_pack("{s:I}", "volume", (json_int_t)vid));
		return;
	}
	if (!strcmp(req->path, "/cluster/unlock")) {
		if (repair_unlock(m->repair, param(req, "token")) < 0)
			http_reply_error(req, 409, "this token does not hold the lock");
		else
			http_reply_json(req, 200, json_object());
		return;
	}
	ret = repair_lock(m->repair, param_or(req, "owner", "?"), param(req, "token"), token,
			  sizeof(token), holder, sizeof(holder));
	if (ret == -EBUSY)
		http_reply_error(req, 409, "the cluster is locked by %s", holder);
	else
		http_reply_json(req, 200,
				json_pack("{s:s,s:i}", "token", token, "leaseSeconds", 30));
}

static void dispatch(struct master *m, struct http_request *req)
{
	const char *p = req->path;

	if (master_ui_route(req))
		master_ui_handle(m->ui, req); /* served by every master, leader or not */
	else if (m->cons && proxied_route(p) && !is_leader(m))
		proxy_to_leader(m, req);
	else if (!strcmp(p, "/dir/assign"))
		handle_assign(m, req);
	else if (!strcmp(p, "/dir/lookup"))
		handle_lookup(m, req);
	else if (!strcmp(p, "/heartbeat"))
		handle_heartbeat(m, req);
	else if (!strcmp(p, "/dir/status") || !strcmp(p, "/"))
		handle_dir_status(m, req);
	else if (!strcmp(p, "/cluster/status"))
		handle_cluster_status(m, req);
	else if (!strcmp(p, "/cluster/healthz")) {
		char leader[160];

		if (leader_http(m, leader, sizeof(leader)))
			http_reply_json(req, 200, json_pack("{s:s}", "Leader", leader));
		else
			http_reply_error(req, 503, "no leader");
	} else if (!strcmp(p, "/healthz") || !strcmp(p, "/readyz"))
		http_reply_json(req, 200, json_object());
	else if (!strcmp(p, "/vol/grow"))
		handle_grow(m, req);
	else if (!strcmp(p, "/vol/status"))
		handle_vol_status(m, req);
	else if (!strcmp(p, "/vol/vacuum"))
		handle_vacuum(m, req);
	else if (!strcmp(p, "/col/delete"))
		handle_col_delete(m, req);
	else if (!strcmp(p, "/submit"))
		handle_submit(m, req);
	else if (!strcmp(p, "/cluster/repair") || !strcmp(p, "/cluster/repair/plan") ||
		 !strcmp(p, "/cluster/repair/now") || !strcmp(p, "/cluster/lock") ||
		 !strcmp(p, "/cluster/unlock"))
		handle_repair_routes(m, req);
	else
		handle_redirect(m, req);
	if (http_has_reply(req))
		http_add_header(req, "Server", "kelp Master " KELP_VERSION);
}

static int mreq_body(struct http_request *req, const uint8_t *data, size_t len)
{
	struct mreq *r = req->state;

	if (r->len + len > r->limit) {
		http_reply_error(req, 413, "request body over %zu bytes", r->limit);
		return -EFBIG;
	}
	if (!r->body || r->len + len + 1 > malloc_usable_size(r->body)) {
		size_t cap = (r->len + len + 1) * 2;
		char *p;

		if (cap > r->limit + 1)
			cap = r->limit + 1;
		p = realloc(r->body, cap);
		if (!p) {
			http_reply_error(req, 500, "out of memory");
			return -ENOMEM;
		}
		r->body = p;
	}
	memcpy(r->body + r->len, data, len);
	r->len += len;
	r->body[r->len] = '\0';
	return 0;
}

/* The operator's routes: with -jwtKey they need a server token. */
static bool admin_route(const char *p)
{
	return !strcmp(p, "/vol/grow") || !strcmp(p, "/vol/vacuum") || !strcmp(p, "/col/delete") ||
	       !strcmp(p, "/cluster/lock") || !strcmp(p, "/cluster/unlock") ||
	       !strcmp(p, "/cluster/repair/now");
}

static void mreq_complete(struct http_request *req)
{
	struct mreq *r = req->state;
	const char *ct = http_header(req, "Content-Type");

	if (r->body && !r->no_form && ct && strstr(ct, "application/x-www-form-urlencoded") &&
	    strcmp(req->path, "/heartbeat") && strcmp(req->path, "/submit"))
		parse_form(r);
	dispatch(r->m, req);
}

static void mreq_cleanup(struct http_request *req)
{
	struct mreq *r = req->state;

	if (!r)
		return;
	r->m->submit_bytes -= r->reserved;
	free(r->body);
	free(r->names);
	free(r->values);
	free(r);
}

/* Reserves room for a /submit body (its Content-Length, else the limit); replies
 * 413 / 503 and returns false when there is none. */
static bool reserve_submit(struct master *m, struct http_request *req, struct mreq *r)
{
	const char *cl = http_header(req, "Content-Length");
	uint64_t want = cl ? strtoull(cl, NULL, 10) : SUBMIT_LIMIT;

	if (want > SUBMIT_LIMIT) {
		http_reply_error(req, 413, "request body over %llu bytes", SUBMIT_LIMIT);
		return false;
	}
	if ((m->submit_bytes += want) > SUBMIT_BUDGET) {
		m->submit_bytes -= want;
		http_reply_error(req, 503, "too many /submit uploads in progress; retry");
		http_add_header(req, "Retry-After", "1");
		return false;
	}
	r->reserved = want;
	return true;
}

/* Routes that change the cluster on a client's behalf: the white list applies. */
static bool client_write_route(const char *p)
{
	return !strcmp(p, "/dir/assign") || !strcmp(p, "/submit") || admin_route(p);
}

static void handle_request(struct http_request *req)
{
	struct master *m = req->server_ctx;
	struct mreq *r;

	if (!__atomic_load_n(&m->ready, __ATOMIC_ACQUIRE)) {
		http_reply_error(req, 503, "master is starting");
		http_add_header(req, "Retry-After", "1");
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		http_reply_error(req, 500, "out of memory");
		return;
	}
	r->m = m;
	r->limit = !strcmp(req->path, "/heartbeat") ? HEARTBEAT_LIMIT
		   : !strcmp(req->path, "/submit")  ? SUBMIT_LIMIT
						    : FORM_LIMIT;
	req->state = r;
	req->on_cleanup = mreq_cleanup;
	/* Who may ask comes first, from the headers: a refused request's body is never
	 * read (the reply goes out at once and the connection is closed). */
	if (client_write_route(req->path) && !write_allowed(m, req))
		return;
	if (status_route(req->path) && !status_allowed(m, req))
		return;
	if (keyed(m) && admin_route(req->path)) {
		if (!auth_server_request(req, m->opt.jwt_key, NULL, NULL)) {
			http_reply_error(req, 401, "%s needs a server token (-jwtKey is set)",
					 req->path);
			return;
		}
		r->no_form = true;
	}
	if (keyed(m) && !strcmp(req->path, "/heartbeat") &&
	    !auth_server_request(req, m->opt.jwt_key, &r->has_body_digest, r->body_digest)) {
		log_refused_heartbeat(m, req, "no valid server token");
		http_reply_error(req, 401, "a heartbeat needs a server token (-jwtKey is set)");
		return;
	}
	if (!strcmp(req->path, "/submit") && !reserve_submit(m, req, r))
		return;
	req->on_body = mreq_body;
	req->on_complete = mreq_complete;
}

static void *vacuum_loop(void *arg)
{
	struct master *m = arg;

	pthread_mutex_lock(&m->stop_lock);
	while (!m->stopping) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += m->opt.vacuum_interval_seconds;
		pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &ts);
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->stop_lock);
		vacuum_all(m, m->opt.garbage_threshold);
		pthread_mutex_lock(&m->stop_lock);
	}
	pthread_mutex_unlock(&m->stop_lock);
	return NULL;
}

static int fsm_apply(void *ctx, const void *cmd, size_t len)
{
	return sequence_apply(((struct master *)ctx)->seq, cmd, len);
}

static int fsm_snapshot(void *ctx, void **buf, size_t *len)
{
	return sequence_snapshot(((struct master *)ctx)->seq, buf, len);
}

static int fsm_restore(void *ctx, const void *buf, size_t len)
{
	return sequence_apply(((struct master *)ctx)->seq, buf, len);
}

static void fsm_leader_change(void *ctx, bool leader)
{
	sequence_on_leader(((struct master *)ctx)->seq, leader);
}

static int seq_propose(void *ctx, const char *cmd, size_t len)
{
	struct master *m = ctx;

	return consensus_propose(m->cons, cmd, len, 2000);
}

/* Sets up the Raft group from -peers; m->self must already be known. */
static int start_consensus(struct master *m)
{
	struct sequence_replication repl = {m, seq_propose, m->self};
	struct consensus_fsm fsm = {m, fsm_apply, fsm_snapshot, fsm_restore, fsm_leader_change};
	struct consensus_options co;
	char raft_self[160], raft_dir[4200];
	bool listed = false;
	int ret;

	m->peers = split_list(m->opt.peers, &m->n_peers);
	m->raft_peers = calloc((size_t)m->n_peers + 1, sizeof(char *));
	if (!m->peers || !m->raft_peers)
		return -ENOMEM;
	for (int i = 0; i < m->n_peers; i++) {
		char buf[160];

		if (shift_port(m->peers[i], RAFT_PORT_OFFSET, buf, sizeof(buf)) < 0) {
			log_error("master: bad peer address \"%s\" (want host:port)", m->peers[i]);
			return -EINVAL;
		}
		m->raft_peers[i] = strdup(buf);
		listed |= !strcmp(m->peers[i], m->self);
	}
	if (!listed) {
		log_error(
		    "master: this master %s is not in -peers=%s (list every master, this one too, as -ip:-port)",
		    m->self, m->opt.peers);
		return -EINVAL;
	}
	ret = sequence_open_replicated(&repl, &m->seq);
	if (ret < 0)
		return ret;
	shift_port(m->self, RAFT_PORT_OFFSET, raft_self, sizeof(raft_self));
	snprintf(raft_dir, sizeof(raft_dir), "%s/raft", m->opt.mdir);
	memset(&co, 0, sizeof(co));
	co.auth_key = m->opt.jwt_key; /* with -jwtKey, Raft connections prove it too */
	co.dir = raft_dir;
	co.self = raft_self;
	co.peers = m->raft_peers;
	co.n_peers = m->n_peers;
	co.election_timeout_ms =
	    m->opt.election_timeout_ms > 0 ? (unsigned)m->opt.election_timeout_ms : 1000;
	ret = consensus_start(&co, &fsm, &m->cons);
	if (ret < 0)
		log_error("master: cannot start Raft in %s: %s", raft_dir, strerror(-ret));
	return ret;
}

static bool ui_is_leader(void *ctx)
{
	return is_leader(ctx);
}

static bool ui_leader(void *ctx, char *buf, size_t cap)
{
	return leader_http(ctx, buf, cap);
}

static uint64_t ui_term(void *ctx)
{
	struct master *m = ctx;

	return m->cons ? consensus_term(m->cons) : 0;
}

static void observe_request(void *ctx, const struct http_request *req, unsigned status,
			    uint64_t elapsed_ns, uint64_t bytes_in, uint64_t bytes_out)
{
	struct master *m = ctx;

	master_ui_observe(__atomic_load_n(&m->ui, __ATOMIC_ACQUIRE), req, status, elapsed_ns);
}

struct events *master_events(struct master *m)
{
	return m ? master_ui_events(m->ui) : NULL;
}

int master_start(const struct master_options *opt, struct master **out)
{
	struct master *m = calloc(1, sizeof(*m));
	struct http_server_options ho = {.ip = opt->ip,
					 .port = opt->port,
					 .threads = opt->threads,
					 .thread_per_connection = true,
					 .observer = observe_request};
	int ret;

	if (!m)
		return -ENOMEM;
	m->opt = *opt;
	if (placement_parse(opt->default_replication, &m->default_rp) < 0) {
		log_error("master: bad -defaultReplication \"%s\"", opt->default_replication);
		free(m);
		return -EINVAL;
	}
	pthread_mutex_init(&m->grow_lock, NULL);
	pthread_mutex_init(&m->vacuum_lock, NULL);
	pthread_mutex_init(&m->stop_lock, NULL);
	pthread_cond_init(&m->stop_cond, NULL);
	m->white_list = split_list(opt->white_list, &m->n_white_list);
	http_client_global_init();
	m->topo = topology_new((uint64_t)opt->volume_size_limit_mb << 20,
			       (uint64_t)(opt->pulse_seconds > 0 ? opt->pulse_seconds : 1) *
				   1000000000ull);
	if (!m->topo) {
		master_stop(m);
		return -ENOMEM;
	}
	if (opt->peers && *opt->peers && opt->port == 0) {
		log_error("master: with -peers, -port must be the port listed in -peers");
		master_stop(m);
		return -EINVAL;
	}
	ret = http_server_start(&ho, handle_request, m, &m->http);
	if (ret < 0) {
		log_error("master: cannot listen on %s:%d: %s", opt->ip, opt->port,
			  ret == -EADDRINUSE
			      ? "the port is in use (or the address is not this host's)"
			      : strerror(-ret));
		master_stop(m);
		return ret;
	}
	snprintf(m->self, sizeof(m->self), "%s:%d", opt->ip && *opt->ip ? opt->ip : "127.0.0.1",
		 http_server_port(m->http));
	if (opt->peers && *opt->peers)
		ret = start_consensus(m);
	else
		ret = sequence_open(opt->mdir, &m->seq);
	if (ret < 0) {
		log_error("master: cannot open its state in %s: %s", opt->mdir, strerror(-ret));
		master_stop(m);
		return ret;
	}
	{
		struct repair_env re = {.topo = m->topo,
					.jwt_key = opt->jwt_key,
					.is_leader = leader_cb,
					.ctx = m,
					.delay_seconds = opt->repair_delay_seconds,
					.concurrency = opt->repair_concurrency,
					.mbps = opt->repair_mbps,
					.check_interval_seconds = opt->check_disk_interval_seconds};

		ret = repair_start(&re, &m->repair);
		if (ret < 0) {
			master_stop(m);
			return ret;
		}
	}
	{
		struct master_ui_source src = {.ctx = m,
					       .topo = m->topo,
					       .self = m->self,
					       .peers = m->peers,
					       .n_peers = m->n_peers,
					       .jwt_key = opt->jwt_key,
					       .is_leader = ui_is_leader,
					       .leader = ui_leader,
					       .term = ui_term};

		__atomic_store_n(&m->ui, master_ui_new(&src), __ATOMIC_RELEASE);
		if (!m->ui) {
			master_stop(m);
			return -ENOMEM;
		}
	}
	__atomic_store_n(&m->ready, true, __ATOMIC_RELEASE);
	if (opt->vacuum_interval_seconds > 0 &&
	    pthread_create(&m->vacuum_thread, NULL, vacuum_loop, m) == 0)
		m->vacuum_started = true;
	log_info("master: listening on %s, state in %s, cluster %s", m->self, opt->mdir,
		 sequence_topology_id(m->seq));
	*out = m;
	return 0;
}

int master_port(const struct master *m)
{
	return http_server_port(m->http);
}

void master_stop(struct master *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->stop_lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->stop_cond);
	pthread_mutex_unlock(&m->stop_lock);
	if (m->vacuum_started)
		pthread_join(m->vacuum_thread, NULL);
	http_server_stop(m->http);
	repair_stop(m->repair);
	master_ui_free(m->ui); /* after the server: no observer call is left */
	consensus_stop(m->cons);
	topology_free(m->topo);
	sequence_close(m->seq);
	free_list(m->peers);
	free_list(m->raft_peers);
	free_list(m->white_list);
	free(m);
}
