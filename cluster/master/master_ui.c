#include "cluster/master/master_ui.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/base/util.h"
#include "cluster/common/layout.h"
#include "cluster/net/auth.h"
#include "cluster/net/http_client.h"
#include "cluster/net/metrics_http.h"

/* Generated at build time from cluster/master/ui/master.html (scripts/embed-asset). */
extern const char kelp_ui_master_html[];
extern const unsigned long kelp_ui_master_html_len;

enum req_type { T_ASSIGN, T_LOOKUP, T_HEARTBEAT, T_SUBMIT, T_ADMIN, T_STATUS, T_OTHER, T_N };

static const char *const type_names[T_N] = {"assign", "lookup", "heartbeat", "submit",
					    "admin",  "status", "other"};

#define MAX_CODE     600
#define RATE_POINTS  100 /* 5 minutes of samples every 3 s */
#define SAMPLE_NS    (3ull * 1000000000ull)
#define VIEW_KEEP_NS (600ull * 1000000000ull)
#define MAX_SAMPLED  256

struct rate_point {
	int64_t time;
	double reads, writes; /* per second */
};

struct server_counts {
	char url[128];
	uint64_t reads, writes;
	bool seen;
};

struct peer_health {
	char url[160];
	bool ok;
	char leader[160];
	char error[160];
};

struct master_ui {
	struct master_ui_source src;
	struct metrics *reg;
	struct events *events;
	_Atomic(struct metric_counter *) requests[T_N][MAX_CODE];
	struct metric_histogram *latency[T_N];
	struct metric_counter *heartbeats, *growth_ok, *growth_failed;

	pthread_t sampler;
	bool sampler_started;
	pthread_mutex_t lock; /* below */
	pthread_cond_t cond;
	bool stopping;
	_Atomic uint64_t last_view_ns; /* monotonic: the page last asked for data */
	struct rate_point rates[RATE_POINTS];
	int n_rates, first_rate;
	struct server_counts counts[MAX_SAMPLED];
	int n_counts;
	uint64_t last_sample_ns;
	struct peer_health *peers;
};

/* ---------------------------------------------------------------- requests */

static enum req_type classify(const struct http_request *req)
{
	const char *p = req->path;

	if (!strcmp(p, "/dir/assign"))
		return T_ASSIGN;
	if (!strcmp(p, "/dir/lookup"))
		return T_LOOKUP;
	if (!strcmp(p, "/heartbeat"))
		return T_HEARTBEAT;
	if (!strcmp(p, "/submit"))
		return T_SUBMIT;
	if (!strcmp(p, "/vol/grow") || !strcmp(p, "/vol/vacuum") || !strcmp(p, "/col/delete"))
		return T_ADMIN;
	if (!strcmp(p, "/") || !strncmp(p, "/ui", 3) || !strcmp(p, "/metrics") ||
	    !strcmp(p, "/dir/status") || !strcmp(p, "/vol/status") || !strncmp(p, "/cluster/", 9) ||
	    !strcmp(p, "/healthz") || !strcmp(p, "/readyz"))
		return T_STATUS;
	return T_OTHER;
}

void master_ui_observe(struct master_ui *ui, const struct http_request *req, unsigned status,
		       uint64_t elapsed_ns)
{
	enum req_type t;
	struct metric_counter *c;

	if (!ui)
		return;
	t = classify(req);
	if (status >= MAX_CODE)
		status = 0;
	c = atomic_load_explicit(&ui->requests[t][status], memory_order_acquire);
	if (!c) {
		char labels[64];

		snprintf(labels, sizeof(labels), "type=\"%s\",code=\"%u\"", type_names[t], status);
		c = metrics_counter(ui->reg, "kelp_master_requests_total",
				    "HTTP requests by type and status code", labels);
		atomic_store_explicit(&ui->requests[t][status], c, memory_order_release);
	}
	metric_inc(c);
	metric_observe_ns(ui->latency[t], elapsed_ns);
	if (t == T_HEARTBEAT && status == 200)
		metric_inc(ui->heartbeats);
}

void master_ui_growth(struct master_ui *ui, bool ok, const char *text)
{
	if (!ui)
		return;
	metric_inc(ok ? ui->growth_ok : ui->growth_failed);
	events_add(ui->events, ok ? "growth" : "error", "%s", text);
}

/* ---------------------------------------------------------------- volumes */

/* Every volume of the nodes array (dead nodes too), by id: an object of
 * {id, collection, replication, ttl, wanted, live, size, files, deletedBytes, readOnly,
 *  locations: [{url, alive}]}. */
static json_t *volumes_of(json_t *nodes)
{
	json_t *vols = json_object(), *node, *v;
	size_t i, j;

	json_array_foreach(nodes, i, node)
	{
		bool alive = json_is_true(json_object_get(node, "alive"));
		const char *url = json_string_value(json_object_get(node, "url"));

		json_array_foreach(json_object_get(node, "volumes"), j, v)
		{
			char key[16];
			json_int_t id = json_integer_value(json_object_get(v, "id"));
			json_t *e;
			uint8_t rp = 0;

			snprintf(key, sizeof(key), "%lld", (long long)id);
			e = json_object_get(vols, key);
			if (!e) {
				placement_parse(
				    json_string_value(json_object_get(v, "replication")), &rp);
				e = json_pack(
				    "{s:I,s:O,s:O,s:O,s:i,s:i,s:I,s:I,s:I,s:b,s:[]}", "id", id,
				    "collection", json_object_get(v, "collection"), "replication",
				    json_object_get(v, "replication"), "ttl",
				    json_object_get(v, "ttl"), "wanted", placement_copies(rp),
				    "live", 0, "size", (json_int_t)0, "files", (json_int_t)0,
				    "deletedBytes", (json_int_t)0, "readOnly", 0, "locations");
				json_object_set_new(vols, key, e);
			}
			json_array_append_new(
			    json_object_get(e, "locations"),
			    json_pack("{s:s,s:b}", "url", url ? url : "", "alive", alive));
			if (!alive)
				continue;
			json_object_set_new(
			    e, "live",
			    json_integer(json_integer_value(json_object_get(e, "live")) + 1));
			/* As the master's lookups: the largest replica's numbers. */
			static const char *const biggest[] = {"size", "files", "deletedBytes"};
			for (int k = 0; k < 3; k++) {
				json_int_t a = json_integer_value(json_object_get(e, biggest[k]));
				json_int_t b = json_integer_value(json_object_get(v, biggest[k]));

				if (b > a)
					json_object_set_new(e, biggest[k], json_integer(b));
			}
			if (json_is_true(json_object_get(v, "readOnly")))
				json_object_set_new(e, "readOnly", json_true());
		}
	}
	return vols;
}

/* ---------------------------------------------------------------- metrics */

struct layout_count {
	char collection[128], replication[4], ttl[16];
	int volumes, under;
};

static void collect(void *ctx, struct metrics_out *out)
{
	struct master_ui *ui = ctx;
	uint64_t now = now_ns();
	json_t *nodes = topology_nodes_json(ui->src.topo, now), *vols, *node, *v;
	struct layout_count *lc = NULL;
	int n_lc = 0, live = 0, dead = 0;
	size_t i;
	const char *key;
	char labels[512], esc[300];

	json_array_foreach(nodes, i, node)
	{
		if (json_is_true(json_object_get(node, "alive")))
			live++;
		else
			dead++;
	}
	vols = volumes_of(nodes);
	json_object_foreach(vols, key, v)
	{
		const char *c = json_string_value(json_object_get(v, "collection"));
		const char *r = json_string_value(json_object_get(v, "replication"));
		const char *t = json_string_value(json_object_get(v, "ttl"));
		int k;

		for (k = 0; k < n_lc; k++)
			if (!strcmp(lc[k].collection, c ? c : "") &&
			    !strcmp(lc[k].replication, r ? r : "") &&
			    !strcmp(lc[k].ttl, t ? t : ""))
				break;
		if (k == n_lc) {
			struct layout_count *p = realloc(lc, (size_t)(n_lc + 1) * sizeof(*p));

			if (!p)
				continue;
			lc = p;
			memset(&lc[k], 0, sizeof(lc[k]));
			snprintf(lc[k].collection, sizeof(lc[k].collection), "%s", c ? c : "");
			snprintf(lc[k].replication, sizeof(lc[k].replication), "%s", r ? r : "");
			snprintf(lc[k].ttl, sizeof(lc[k].ttl), "%s", t ? t : "");
			n_lc++;
		}
		lc[k].volumes++;
		if (json_integer_value(json_object_get(v, "live")) <
		    json_integer_value(json_object_get(v, "wanted")))
			lc[k].under++;
	}
	json_decref(vols);
	json_decref(nodes);

	metrics_out_family(out, "kelp_master_is_leader", "1 if this master is the leader", "gauge");
	metrics_out_sample(out, "kelp_master_is_leader", NULL, ui->src.is_leader(ui->src.ctx));
	metrics_out_family(out, "kelp_master_raft_term",
			   "Current Raft term (0 for a single master)", "gauge");
	metrics_out_sample(out, "kelp_master_raft_term", NULL,
			   (double)(ui->src.term ? ui->src.term(ui->src.ctx) : 0));
	metrics_out_family(out, "kelp_master_volume_servers",
			   "Volume servers known to this master, live or dead (missed 3 pulses)",
			   "gauge");
	metrics_out_sample(out, "kelp_master_volume_servers", "state=\"live\"", live);
	metrics_out_sample(out, "kelp_master_volume_servers", "state=\"dead\"", dead);
	metrics_out_family(out, "kelp_master_volumes",
			   "Volumes by layout (collection, replication, ttl)", "gauge");
	for (int k = 0; k < n_lc; k++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\",replication=\"%s\",ttl=\"%s\"",
			 metrics_label_escape(lc[k].collection, esc, sizeof(esc)),
			 lc[k].replication, lc[k].ttl);
		metrics_out_sample(out, "kelp_master_volumes", labels, lc[k].volumes);
	}
	metrics_out_family(out, "kelp_master_volume_layout_writable", "Writable volumes by layout",
			   "gauge");
	for (int k = 0; k < n_lc; k++) {
		struct topo_filter f = {.collection = lc[k].collection};
		int writable = 0, crowded = 0;

		placement_parse(lc[k].replication, &f.replica_placement);
		ttl_parse(lc[k].ttl, &f.ttl);
		topology_layout_counts(ui->src.topo, &f, now, &writable, &crowded);
		snprintf(labels, sizeof(labels), "collection=\"%s\",replication=\"%s\",ttl=\"%s\"",
			 metrics_label_escape(lc[k].collection, esc, sizeof(esc)),
			 lc[k].replication, lc[k].ttl);
		metrics_out_sample(out, "kelp_master_volume_layout_writable", labels, writable);
	}
	metrics_out_family(out, "kelp_master_under_replicated_volumes",
			   "Volumes with fewer live copies than their replication asks, by layout",
			   "gauge");
	for (int k = 0; k < n_lc; k++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\",replication=\"%s\",ttl=\"%s\"",
			 metrics_label_escape(lc[k].collection, esc, sizeof(esc)),
			 lc[k].replication, lc[k].ttl);
		metrics_out_sample(out, "kelp_master_under_replicated_volumes", labels,
				   lc[k].under);
	}
	free(lc);
}

/* ---------------------------------------------------------------- sampler */

static int sign(struct master_ui *ui, const char *method, const char *path, char *auth)
{
	if (!ui->src.jwt_key || !*ui->src.jwt_key)
		return 0;
	return auth_server_header(ui->src.jwt_key, method, path, NULL, 0, auth) < 0 ? -1 : 1;
}

/* One volume server's read and write request counts from its /ui/stats. */
static bool server_counts(struct master_ui *ui, const char *url, uint64_t *reads, uint64_t *writes)
{
	char full[300], auth[AUTH_HEADER_LEN];
	const char *headers[2] = {NULL, NULL};
	struct http_client_request rq = {
	    .method = "GET", .url = full, .body_fd = -1, .headers = headers, .timeout_ms = 1000};
	struct http_client_response rs;
	json_t *j;
	bool ok;

	if (sign(ui, "GET", "/ui/stats", auth) > 0)
		headers[0] = auth;
	snprintf(full, sizeof(full), "%s://%s/ui/stats", http_scheme(), url);
	if (http_client_do(&rq, &rs) < 0)
		return false;
	j = rs.status == 200 ? json_loads(rs.body, 0, NULL) : NULL;
	ok = j != NULL;
	*reads = (uint64_t)json_integer_value(json_object_get(j, "reads"));
	*writes = (uint64_t)json_integer_value(json_object_get(j, "writes"));
	json_decref(j);
	http_client_response_release(&rs);
	return ok;
}

static void sample_rates(struct master_ui *ui)
{
	uint64_t now = now_ns(), mono = monotonic_ns();
	json_t *nodes = topology_nodes_json(ui->src.topo, now), *node;
	double reads = 0, writes = 0, dt;
	size_t i;
	bool have_prev;

	pthread_mutex_lock(&ui->lock);
	have_prev = ui->last_sample_ns != 0;
	dt = have_prev ? (double)(mono - ui->last_sample_ns) / 1e9 : 0;
	for (int k = 0; k < ui->n_counts; k++)
		ui->counts[k].seen = false;
	pthread_mutex_unlock(&ui->lock);
	json_array_foreach(nodes, i, node)
	{
		const char *url = json_string_value(json_object_get(node, "url"));
		uint64_t r, w;
		int k;

		bool stopping;

		pthread_mutex_lock(&ui->lock);
		stopping = ui->stopping; /* a stop does not wait for every server's answer */
		pthread_mutex_unlock(&ui->lock);
		if (stopping)
			break;
		if (!url || !json_is_true(json_object_get(node, "alive")) ||
		    !server_counts(ui, url, &r, &w))
			continue;
		pthread_mutex_lock(&ui->lock);
		for (k = 0; k < ui->n_counts; k++)
			if (!strcmp(ui->counts[k].url, url))
				break;
		if (k < ui->n_counts) {
			if (have_prev && r >= ui->counts[k].reads && w >= ui->counts[k].writes) {
				reads += (double)(r - ui->counts[k].reads);
				writes += (double)(w - ui->counts[k].writes);
			}
		} else if (k < MAX_SAMPLED) {
			ui->n_counts++;
			snprintf(ui->counts[k].url, sizeof(ui->counts[k].url), "%s", url);
		}
		if (k < MAX_SAMPLED) {
			ui->counts[k].reads = r;
			ui->counts[k].writes = w;
			ui->counts[k].seen = true;
		}
		pthread_mutex_unlock(&ui->lock);
	}
	json_decref(nodes);
	pthread_mutex_lock(&ui->lock);
	ui->last_sample_ns = mono;
	if (have_prev && dt > 0) {
		int idx = (ui->first_rate + ui->n_rates) % RATE_POINTS;

		if (ui->n_rates == RATE_POINTS)
			ui->first_rate = (ui->first_rate + 1) % RATE_POINTS;
		else
			ui->n_rates++;
		ui->rates[idx].time = (int64_t)(now / 1000000000ull);
		ui->rates[idx].reads = reads / dt;
		ui->rates[idx].writes = writes / dt;
	}
	pthread_mutex_unlock(&ui->lock);
}

static void check_peers(struct master_ui *ui)
{
	for (int i = 0; i < ui->src.n_peers; i++) {
		struct peer_health h = {0};
		char full[300], auth[AUTH_HEADER_LEN];
		const char *headers[2] = {NULL, NULL};
		struct http_client_request rq = {.method = "GET",
						 .url = full,
						 .body_fd = -1,
						 .headers = headers,
						 .timeout_ms = 1000};
		struct http_client_response rs;

		snprintf(h.url, sizeof(h.url), "%s", ui->src.peers[i]);
		if (sign(ui, "GET", "/cluster/healthz", auth) > 0)
			headers[0] = auth;
		snprintf(full, sizeof(full), "%s://%s/cluster/healthz", http_scheme(),
			 ui->src.peers[i]);
		if (http_client_do(&rq, &rs) < 0) {
			snprintf(h.error, sizeof(h.error), "%.150s", rs.error);
		} else {
			json_t *j = json_loads(rs.body, 0, NULL);

			h.ok = rs.status == 200;
			if (h.ok)
				snprintf(h.leader, sizeof(h.leader), "%s",
					 json_string_value(json_object_get(j, "Leader")) ?: "");
			else
				snprintf(h.error, sizeof(h.error), "answered %ld", rs.status);
			json_decref(j);
			http_client_response_release(&rs);
		}
		pthread_mutex_lock(&ui->lock);
		ui->peers[i] = h;
		pthread_mutex_unlock(&ui->lock);
	}
}

static void *sampler_loop(void *arg)
{
	struct master_ui *ui = arg;

	pthread_mutex_lock(&ui->lock);
	while (!ui->stopping) {
		struct timespec ts;
		uint64_t viewed = atomic_load(&ui->last_view_ns);

		if (viewed && monotonic_ns() - viewed < VIEW_KEEP_NS) {
			pthread_mutex_unlock(&ui->lock);
			sample_rates(ui);
			check_peers(ui);
			pthread_mutex_lock(&ui->lock);
		} else {
			ui->last_sample_ns = 0; /* no rate across a pause */
		}
		if (ui->stopping)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(SAMPLE_NS / 1000000000ull);
		pthread_cond_timedwait(&ui->cond, &ui->lock, &ts);
	}
	pthread_mutex_unlock(&ui->lock);
	return NULL;
}

/* ---------------------------------------------------------------- pages */

static int cmp_volume(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "id"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "id"));

	return x < y ? -1 : x > y;
}

static json_t *ui_data(struct master_ui *ui)
{
	uint64_t now = now_ns();
	json_t *nodes = topology_nodes_json(ui->src.topo, now);
	json_t *vols = volumes_of(nodes), *list = json_array(), *rates = json_array(),
	       *peers = json_array(), *v, **sorted;
	char leader[160];
	const char *key;
	size_t n = json_object_size(vols), i = 0;
	bool first_view = atomic_exchange(&ui->last_view_ns, monotonic_ns()) == 0;

	sorted = calloc(n ? n : 1, sizeof(*sorted));
	json_object_foreach(vols, key, v)
	{
		if (sorted)
			sorted[i++] = v;
	}
	if (sorted) {
		qsort(sorted, i, sizeof(*sorted), cmp_volume);
		for (size_t k = 0; k < i; k++)
			json_array_append(list, sorted[k]);
		free(sorted);
	}
	json_decref(vols);
	if (first_view) {
		pthread_mutex_lock(&ui->lock);
		pthread_cond_broadcast(&ui->cond); /* start sampling now */
		pthread_mutex_unlock(&ui->lock);
	}
	pthread_mutex_lock(&ui->lock);
	for (int k = 0; k < ui->n_rates; k++) {
		struct rate_point *p = &ui->rates[(ui->first_rate + k) % RATE_POINTS];

		json_array_append_new(rates, json_pack("{s:I,s:f,s:f}", "time", (json_int_t)p->time,
						       "reads", p->reads, "writes", p->writes));
	}
	for (int k = 0; k < ui->src.n_peers; k++) {
		struct peer_health *h = &ui->peers[k];
		bool self = !strcmp(ui->src.peers[k], ui->src.self);

		json_array_append_new(peers, json_pack("{s:s,s:b,s:b,s:b,s:s,s:s}", "url",
						       ui->src.peers[k], "self", self, "checked",
						       h->url[0] != 0, "ok", self || h->ok,
						       "leader", h->leader, "error", h->error));
	}
	pthread_mutex_unlock(&ui->lock);
	if (!ui->src.leader(ui->src.ctx, leader, sizeof(leader)))
		leader[0] = '\0';
	return json_pack("{s:s,s:s,s:s,s:b,s:I,s:o,s:o,s:o,s:o,s:I,s:I}", "version", KELP_VERSION,
			 "self", ui->src.self, "leader", leader, "isLeader",
			 ui->src.is_leader(ui->src.ctx), "term",
			 (json_int_t)(ui->src.term ? ui->src.term(ui->src.ctx) : 0), "peers", peers,
			 "nodes", nodes, "volumes", list, "rates", rates, "volumeSizeLimit",
			 (json_int_t)topology_volume_size_limit(ui->src.topo), "time",
			 (json_int_t)(now / 1000000000ull));
}

bool master_ui_route(struct http_request *req)
{
	const char *accept;

	if (!strncmp(req->path, "/ui", 3) || !strcmp(req->path, "/metrics"))
		return true;
	if (strcmp(req->path, "/"))
		return false;
	/* `/` is the page, unless JSON is asked for (then /dir/status, as before). */
	accept = http_header(req, "Accept");
	return !(accept && strstr(accept, "application/json") && !strstr(accept, "text/html"));
}

void master_ui_handle(struct master_ui *ui, struct http_request *req)
{
	const char *p = req->path;

	if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
		http_reply_error(req, 405, "%s takes a GET", p);
	} else if (!strcmp(p, "/metrics")) {
		http_reply_metrics(req, ui->reg);
	} else if (!strcmp(p, "/") || !strcmp(p, "/ui") || !strcmp(p, "/ui/")) {
		http_reply_buffer(req, 200, kelp_ui_master_html, kelp_ui_master_html_len, false);
		http_add_header(req, "Content-Type", "text/html; charset=utf-8");
		http_add_header(req, "Cache-Control", "no-cache");
		http_add_header(req, "Content-Security-Policy",
				"default-src 'self'; style-src 'self' 'unsafe-inline'; "
				"script-src 'self' 'unsafe-inline'; img-src 'self' data:");
	} else if (!strcmp(p, "/ui/data")) {
		http_reply_json(req, 200, ui_data(ui));
		http_add_header(req, "Cache-Control", "no-store");
	} else if (!strcmp(p, "/ui/events")) {
		const char *since = http_query(req, "since");

		http_reply_json(
		    req, 200,
		    json_pack("{s:o}", "events",
			      events_json(ui->events, since ? strtoull(since, NULL, 10) : 0)));
	} else {
		http_reply_error(req, 404, "no page %s", p);
	}
}

/* ---------------------------------------------------------------- life */

struct master_ui *master_ui_new(const struct master_ui_source *src)
{
	struct master_ui *ui = calloc(1, sizeof(*ui));

	if (!ui)
		return NULL;
	ui->src = *src;
	pthread_mutex_init(&ui->lock, NULL);
	pthread_cond_init(&ui->cond, NULL);
	ui->reg = metrics_new();
	ui->events = events_new(200);
	ui->peers = calloc((size_t)(src->n_peers > 0 ? src->n_peers : 1), sizeof(*ui->peers));
	if (!ui->reg || !ui->events || !ui->peers) {
		master_ui_free(ui);
		return NULL;
	}
	metric_gauge_set(metrics_gauge(ui->reg, "kelp_master_start_time_seconds",
				       "Start time of the process, Unix seconds", NULL),
			 (int64_t)(now_ns() / 1000000000ull));
	metric_gauge_set(metrics_gauge(ui->reg, "kelp_build_info", "Version of kelp (always 1)",
				       "version=\"" KELP_VERSION "\",role=\"master\""),
			 1);
	ui->heartbeats = metrics_counter(ui->reg, "kelp_master_received_heartbeats_total",
					 "Heartbeats accepted from volume servers", NULL);
	ui->growth_ok = metrics_counter(ui->reg, "kelp_master_volume_growth_total",
					"Volume growths (one per volume, all its copies)",
					"result=\"success\"");
	ui->growth_failed = metrics_counter(ui->reg, "kelp_master_volume_growth_total",
					    "Volume growths (one per volume, all its copies)",
					    "result=\"failure\"");
	for (int t = 0; t < T_N; t++) {
		char labels[40];

		snprintf(labels, sizeof(labels), "type=\"%s\"", type_names[t]);
		ui->latency[t] = metrics_histogram(
		    ui->reg, "kelp_master_request_duration_seconds",
		    "Time from a request's headers to the end of its reply, by type", labels,
		    metrics_request_buckets, metrics_request_buckets_n);
	}
	metrics_add_collector(ui->reg, collect, ui);
	if (pthread_create(&ui->sampler, NULL, sampler_loop, ui) == 0)
		ui->sampler_started = true;
	return ui;
}

void master_ui_free(struct master_ui *ui)
{
	if (!ui)
		return;
	pthread_mutex_lock(&ui->lock);
	ui->stopping = true;
	pthread_cond_broadcast(&ui->cond);
	pthread_mutex_unlock(&ui->lock);
	if (ui->sampler_started)
		pthread_join(ui->sampler, NULL);
	metrics_free(ui->reg);
	events_free(ui->events);
	free(ui->peers);
	pthread_cond_destroy(&ui->cond);
	pthread_mutex_destroy(&ui->lock);
	free(ui);
}

struct metrics *master_ui_metrics(struct master_ui *ui)
{
	return ui->reg;
}

struct events *master_ui_events(struct master_ui *ui)
{
	return ui->events;
}
