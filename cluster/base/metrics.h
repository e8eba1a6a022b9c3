/*
 * metrics: counters, gauges and histograms rendered in the Prometheus text exposition
 * format (version 0.0.4: `# HELP`, `# TYPE`, one sample a line).
 *
 * A registry (struct metrics) holds families (a name, a help text, a type) and their
 * series (one per label set). metrics_counter() / metrics_gauge() / metrics_histogram()
 * get or create a series (under the registry's mutex: call them once and keep the
 * pointer); updating a series is one relaxed atomic add, safe from any thread and cheap
 * enough for every request. Series are never removed.
 *
 * Values that are cheaper to read when scraped than to keep up to date (volumes, disk
 * space, topology counts) come from collectors: callbacks run at each render that
 * write whole families with metrics_out_family() / metrics_out_sample().
 *
 * Conventions (docs/operations.md, "Metrics"): names start with `kelp_`, counters end
 * in `_total`, times are in seconds, sizes in bytes. Histogram buckets are in seconds
 * and observed in nanoseconds.
 */
#ifndef KELP_METRICS_H
#define KELP_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_MAX_BUCKETS  24

struct metrics;
struct metrics_out;

struct metric_counter {
	_Atomic uint64_t value;
};

struct metric_gauge {
	_Atomic int64_t value;
};

struct metric_histogram {
	int n_bounds;
	double bounds[METRICS_MAX_BUCKETS]; /* upper bounds in seconds, increasing */
	uint64_t bounds_ns[METRICS_MAX_BUCKETS];
	_Atomic uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, last = +Inf */
	_Atomic uint64_t sum_ns;
};

/* Latency buckets for requests (100 us .. 10 s) and for FUSE calls (10 us .. 10 s). */
extern const double metrics_request_buckets[];
extern const int metrics_request_buckets_n;
extern const double metrics_fuse_buckets[];
extern const int metrics_fuse_buckets_n;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * Get or create the series `name{labels}`. labels is the inside of the braces, already
 * escaped (metrics_label_escape), e.g. `type="read",code="200"`, or NULL for none. The
 * family's help and type come from its first series; asking for a name with another
 * type returns NULL (a programming error, logged). NULL also when out of memory.
 */
struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
				       const char *labels);
struct metric_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
				   const char *labels);
struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
					   const char *labels, const double *bounds, int n_bounds);

static inline void metric_add(struct metric_counter *c, uint64_t n)
{
	if (c)
		atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

static inline void metric_inc(struct metric_counter *c)
{
	metric_add(c, 1);
}

static inline void metric_gauge_add(struct metric_gauge *g, int64_t n)
{
	if (g)
		atomic_fetch_add_explicit(&g->value, n, memory_order_relaxed);
}

static inline void metric_gauge_set(struct metric_gauge *g, int64_t v)
{
	if (g)
		atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

/* Records one observation of ns nanoseconds. */
void metric_observe_ns(struct metric_histogram *h, uint64_t ns);

/* Collectors run, in the order added, at every render, after the registered series. */
typedef void (*metrics_collector)(void *ctx, struct metrics_out *out);
int metrics_add_collector(struct metrics *m, metrics_collector fn, void *ctx);

/* For collectors: starts a family (type "counter", "gauge"), then its samples. */
void metrics_out_family(struct metrics_out *out, const char *name, const char *help,
			const char *type);
void metrics_out_sample(struct metrics_out *out, const char *name, const char *labels,
			double value);

/* Escapes a label value (backslash, double quote, newline) into buf; returns buf. */
char *metrics_label_escape(const char *value, char *buf, size_t cap);

/* The whole exposition text (malloc'ed, NUL-terminated; *len without the NUL), or NULL. */
char *metrics_render(struct metrics *m, size_t *len);

#endif
