/*
 * vs_metrics: the volume server's /metrics (names and their SeaweedFS counterparts in
 * docs/operations.md, "Metrics") and the recent events of its /ui page.
 *
 * Requests are counted by an http observer (vs_metrics_observe) when they finish: no
 * code on the request paths themselves. Volumes, sizes, disks and needle map memory
 * are read from the store when scraped.
 */
#ifndef KELP_VS_METRICS_H
#define KELP_VS_METRICS_H

#include <stdint.h>

#include "cluster/base/metrics.h"
#include "cluster/net/events.h"
#include "cluster/net/http.h"
#include "cluster/storage/store.h"

struct vs_metrics;

struct vs_metrics *vs_metrics_new(struct store *store);
void vs_metrics_free(struct vs_metrics *vm);
struct metrics *vs_metrics_registry(struct vs_metrics *vm);
struct events *vs_metrics_events(struct vs_metrics *vm);

/* An http_observer: ctx is whatever the server's ctx is; vm comes from vs_metrics_of. */
void vs_metrics_observe(struct vs_metrics *vm, const struct http_request *req, unsigned status,
			uint64_t elapsed_ns, uint64_t bytes_in, uint64_t bytes_out);
/* Read and write requests answered so far (any status). */
void vs_metrics_totals(struct vs_metrics *vm, uint64_t *reads, uint64_t *writes);
void vs_metrics_replication_error(struct vs_metrics *vm, const char *what);

#endif
