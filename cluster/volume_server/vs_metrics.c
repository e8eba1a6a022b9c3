#include "cluster/volume_server/vs_metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/util.h"

enum req_type { T_READ, T_WRITE, T_DELETE, T_ADMIN, T_STATUS, T_OTHER, T_N };

static const char *const type_names[T_N] = {"read", "write", "delete", "admin", "status", "other"};

#define MAX_CODE 600

struct vs_metrics {
	struct metrics *reg;
	struct events *events;
	struct store *store;
	_Atomic(struct metric_counter *) requests[T_N][MAX_CODE];
	struct metric_histogram *latency[T_N];
	struct metric_counter *bytes_in, *bytes_out, *repl_errors;
	struct metric_gauge *start_time;
};

static enum req_type classify(const struct http_request *req)
{
	const char *p = req->path, *m = req->method;

	if (!strncmp(p, "/admin/", 7))
		return T_ADMIN;
	if (!strcmp(p, "/status") || !strcmp(p, "/metrics") || !strncmp(p, "/ui", 3) ||
	    !strcmp(p, "/healthz") || !strcmp(p, "/readyz"))
		return T_STATUS;
	if (!strcmp(m, "GET") || !strcmp(m, "HEAD"))
		return T_READ;
	if (!strcmp(m, "POST") || !strcmp(m, "PUT"))
		return T_WRITE;
	if (!strcmp(m, "DELETE"))
		return T_DELETE;
	return T_OTHER;
}

void vs_metrics_observe(struct vs_metrics *vm, const struct http_request *req, unsigned status,
			uint64_t elapsed_ns, uint64_t bytes_in, uint64_t bytes_out)
{
	enum req_type t;
	struct metric_counter *c;

	if (!vm)
		return;
	t = classify(req);
	if (status >= MAX_CODE)
		status = 0;
	c = atomic_load_explicit(&vm->requests[t][status], memory_order_acquire);
	if (!c) {
		char labels[64];

		snprintf(labels, sizeof(labels), "type=\"%s\",code=\"%u\"", type_names[t], status);
		c = metrics_counter(vm->reg, "kelp_volume_server_requests_total",
				    "HTTP requests by type and status code", labels);
		atomic_store_explicit(&vm->requests[t][status], c, memory_order_release);
	}
	metric_inc(c);
	metric_observe_ns(vm->latency[t], elapsed_ns);
	if (bytes_in)
		metric_add(vm->bytes_in, bytes_in);
	if (bytes_out && status < 300)
		metric_add(vm->bytes_out, bytes_out);
	if (status >= 500)
		events_add(vm->events, "error", "%s %s answered %u", req->method, req->path,
			   status);
}

void vs_metrics_totals(struct vs_metrics *vm, uint64_t *reads, uint64_t *writes)
{
	*reads = *writes = 0;
	for (int code = 0; code < MAX_CODE; code++) {
		struct metric_counter *r = atomic_load(&vm->requests[T_READ][code]);
		struct metric_counter *w = atomic_load(&vm->requests[T_WRITE][code]);

		if (r)
			*reads += atomic_load_explicit(&r->value, memory_order_relaxed);
		if (w)
			*writes += atomic_load_explicit(&w->value, memory_order_relaxed);
	}
}

void vs_metrics_replication_error(struct vs_metrics *vm, const char *what)
{
	if (!vm)
		return;
	metric_inc(vm->repl_errors);
	events_add(vm->events, "replication", "%s", what);
}

/* ---------------------------------------------------------------- scraped */

struct coll_stats {
	char name[128];
	uint64_t volumes, read_only, size, files, deleted_bytes;
};

struct scrape {
	struct coll_stats *colls;
	int n, cap;
	uint64_t map_memory;
};

static void scrape_volume(void *ctx, struct volume *v)
{
	struct scrape *s = ctx;
	struct volume_info info;
	struct coll_stats *c = NULL;

	volume_get_info(v, &info);
	s->map_memory += volume_map_memory(v);
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->colls[i].name, info.collection))
			c = &s->colls[i];
	if (!c) {
		if (s->n == s->cap) {
			int cap = s->cap ? s->cap * 2 : 8;
			struct coll_stats *p = realloc(s->colls, (size_t)cap * sizeof(*p));

			if (!p)
				return;
			s->colls = p;
			s->cap = cap;
		}
		c = &s->colls[s->n++];
		memset(c, 0, sizeof(*c));
		snprintf(c->name, sizeof(c->name), "%s", info.collection);
	}
	c->volumes++;
	c->read_only += info.read_only;
	c->size += info.size;
	c->files += info.live_count;
	c->deleted_bytes += info.deleted_bytes;
}

static void collect(void *ctx, struct metrics_out *out)
{
	struct vs_metrics *vm = ctx;
	struct scrape s = {0};
	struct store_disk_status disks[64];
	int nd = store_disk_statuses(vm->store, disks, 64), max_volumes, held;
	char esc[300], labels[400];

	store_each_volume(vm->store, scrape_volume, &s);
	store_counts(vm->store, &max_volumes, &held);
	metrics_out_family(out, "kelp_volume_server_volumes", "Volumes held, by collection",
			   "gauge");
	for (int i = 0; i < s.n; i++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\"",
			 metrics_label_escape(s.colls[i].name, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_volumes", labels,
				   (double)s.colls[i].volumes);
	}
	metrics_out_family(out, "kelp_volume_server_read_only_volumes",
			   "Read-only volumes (marked, or on a disk short of space), by collection",
			   "gauge");
	for (int i = 0; i < s.n; i++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\"",
			 metrics_label_escape(s.colls[i].name, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_read_only_volumes", labels,
				   (double)s.colls[i].read_only);
	}
	metrics_out_family(out, "kelp_volume_server_volume_size_bytes",
			   "Bytes of the volumes' .dat files, by collection", "gauge");
	for (int i = 0; i < s.n; i++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\"",
			 metrics_label_escape(s.colls[i].name, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_volume_size_bytes", labels,
				   (double)s.colls[i].size);
	}
	metrics_out_family(out, "kelp_volume_server_deleted_bytes",
			   "Bytes of deleted blobs not yet vacuumed, by collection", "gauge");
	for (int i = 0; i < s.n; i++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\"",
			 metrics_label_escape(s.colls[i].name, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_deleted_bytes", labels,
				   (double)s.colls[i].deleted_bytes);
	}
	metrics_out_family(out, "kelp_volume_server_files", "Live blobs, by collection", "gauge");
	for (int i = 0; i < s.n; i++) {
		snprintf(labels, sizeof(labels), "collection=\"%s\"",
			 metrics_label_escape(s.colls[i].name, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_files", labels,
				   (double)s.colls[i].files);
	}
	metrics_out_family(out, "kelp_volume_server_max_volumes",
			   "Volume slots over all data directories (-max)", "gauge");
	metrics_out_sample(out, "kelp_volume_server_max_volumes", NULL, max_volumes);
	metrics_out_family(out, "kelp_volume_server_needle_map_bytes",
			   "Memory of the in-memory needle maps of all volumes", "gauge");
	metrics_out_sample(out, "kelp_volume_server_needle_map_bytes", NULL, (double)s.map_memory);
	metrics_out_family(out, "kelp_volume_server_disk_total_bytes",
			   "Size of the file system of each data directory", "gauge");
	for (int i = 0; i < nd && i < 64; i++) {
		snprintf(labels, sizeof(labels), "dir=\"%s\"",
			 metrics_label_escape(disks[i].dir, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_disk_total_bytes", labels,
				   (double)disks[i].all);
	}
	metrics_out_family(out, "kelp_volume_server_disk_free_bytes",
			   "Free bytes on the file system of each data directory", "gauge");
	for (int i = 0; i < nd && i < 64; i++) {
		snprintf(labels, sizeof(labels), "dir=\"%s\"",
			 metrics_label_escape(disks[i].dir, esc, sizeof(esc)));
		metrics_out_sample(out, "kelp_volume_server_disk_free_bytes", labels,
				   (double)disks[i].free);
	}
	free(s.colls);
}

struct vs_metrics *vs_metrics_new(struct store *store)
{
	struct vs_metrics *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->store = store;
	vm->reg = metrics_new();
	vm->events = events_new(200);
	if (!vm->reg || !vm->events) {
		vs_metrics_free(vm);
		return NULL;
	}
	/* The families in a stable order, with their first series, before any request. */
	vm->start_time = metrics_gauge(vm->reg, "kelp_volume_server_start_time_seconds",
				       "Start time of the process, Unix seconds", NULL);
	metric_gauge_set(vm->start_time, (int64_t)(now_ns() / 1000000000ull));
	metric_gauge_set(metrics_gauge(vm->reg, "kelp_build_info", "Version of kelp (always 1)",
				       "version=\"" KELP_VERSION "\",role=\"volume\""),
			 1);
	for (int t = 0; t < T_N; t++) {
		char labels[40];

		snprintf(labels, sizeof(labels), "type=\"%s\"", type_names[t]);
		vm->latency[t] = metrics_histogram(
		    vm->reg, "kelp_volume_server_request_duration_seconds",
		    "Time from a request's headers to the end of its reply, by type", labels,
		    metrics_request_buckets, metrics_request_buckets_n);
	}
	vm->bytes_in = metrics_counter(vm->reg, "kelp_volume_server_received_bytes_total",
				       "Request body bytes received", NULL);
	vm->bytes_out = metrics_counter(vm->reg, "kelp_volume_server_sent_bytes_total",
					"Reply body bytes sent (successful replies)", NULL);
	vm->repl_errors =
	    metrics_counter(vm->reg, "kelp_volume_server_replication_errors_total",
			    "Writes or deletes that could not be copied to every replica", NULL);
	metrics_add_collector(vm->reg, collect, vm);
	return vm;
}

void vs_metrics_free(struct vs_metrics *vm)
{
	if (!vm)
		return;
	metrics_free(vm->reg);
	events_free(vm->events);
	free(vm);
}

struct metrics *vs_metrics_registry(struct vs_metrics *vm)
{
	return vm->reg;
}

struct events *vs_metrics_events(struct vs_metrics *vm)
{
	return vm->events;
}
