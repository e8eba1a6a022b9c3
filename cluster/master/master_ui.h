/*
 * master_ui: the master's /metrics, its status page (`/` for browsers, the data at
 * /ui/data, recent events at /ui/events) and the counters behind them.
 *
 * Requests are counted by an http observer when they finish. Topology gauges (servers,
 * volumes per layout, writable and under-replicated volumes) are computed when scraped.
 * While the page is being looked at (a /ui/data request in the last 10 minutes) a
 * sampler thread asks every live volume server for its read and write counts every
 * 3 seconds (the page's charts) and every peer master whether it answers.
 */
#ifndef KELP_MASTER_UI_H
#define KELP_MASTER_UI_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/base/metrics.h"
#include "cluster/master/topology.h"
#include "cluster/net/events.h"
#include "cluster/net/http.h"

struct master_ui;

/* What the page and the metrics read from the master. */
struct master_ui_source {
	void *ctx;
	struct topology *topo;
	const char *self; /* ip:port */
	char **peers;	  /* every master (HA), or NULL */
	int n_peers;
	const char *jwt_key; /* signs the sampler's requests; NULL/"" = none */
	bool (*is_leader)(void *ctx);
	bool (*leader)(void *ctx, char *buf, size_t cap);
	uint64_t (*term)(void *ctx); /* Raft term; 0 without Raft */
};

struct master_ui *master_ui_new(const struct master_ui_source *src);
void master_ui_free(struct master_ui *ui);
struct metrics *master_ui_metrics(struct master_ui *ui);
struct events *master_ui_events(struct master_ui *ui);

void master_ui_observe(struct master_ui *ui, const struct http_request *req, unsigned status,
		       uint64_t elapsed_ns);
/* A volume growth finished: ok, or failed with text. */
void master_ui_growth(struct master_ui *ui, bool ok, const char *text);

/* True when the request is for the page (`/` asked by a browser, /ui, /ui/...). */
bool master_ui_route(struct http_request *req);
/* Serves /, /ui/data, /ui/events and /metrics. */
void master_ui_handle(struct master_ui *ui, struct http_request *req);

#endif
