#include "cluster/base/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/log.h"

const double metrics_request_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
					  0.01,	  0.025,   0.05,   0.1,	  0.25,	  0.5,
					  1,	  2.5,	   5,	   10};
const int metrics_request_buckets_n =
    (int)(sizeof(metrics_request_buckets) / sizeof(metrics_request_buckets[0]));
const double metrics_fuse_buckets[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
				       0.001,	0.0025,	  0.005,   0.01,   0.025,   0.05,
				       0.1,	0.25,	  0.5,	   1,	   2.5,	    10};
const int metrics_fuse_buckets_n =
    (int)(sizeof(metrics_fuse_buckets) / sizeof(metrics_fuse_buckets[0]));

enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct series {
	struct series *next;
	char *labels; /* "" for none */
	union {
		struct metric_counter counter;
		struct metric_gauge gauge;
		struct metric_histogram histogram;
	} u;
};

struct family {
	struct family *next;
	char *name, *help;
	enum metric_type type;
	struct series *series, *last;
};

struct collector {
	metrics_collector fn;
	void *ctx;
};

struct metrics {
	pthread_mutex_t lock;
	struct family *families, *last;
	struct collector *collectors;
	int n_collectors;
};

struct metrics_out {
	char *buf;
	size_t len, cap;
	bool failed;
};

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (m)
		pthread_mutex_init(&m->lock, NULL);
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (struct family *f = m->families, *fn; f; f = fn) {
		fn = f->next;
		for (struct series *s = f->series, *sn; s; s = sn) {
			sn = s->next;
			free(s->labels);
			free(s);
		}
		free(f->name);
		free(f->help);
		free(f);
	}
	free(m->collectors);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* Under m->lock: the series, created with its family when new; NULL on a type clash. */
static struct series *get_series(struct metrics *m, const char *name, const char *help,
				 enum metric_type type, const char *labels, bool *created)
{
	struct family *f;
	struct series *s;

	if (!labels)
		labels = "";
	*created = false;
	for (f = m->families; f; f = f->next)
		if (!strcmp(f->name, name))
			break;
	if (f && f->type != type) {
		log_error("metrics: %s is a %s, asked for as a %s", name, type_names[f->type],
			  type_names[type]);
		return NULL;
	}
	if (!f) {
		f = calloc(1, sizeof(*f));
		if (!f)
			return NULL;
		f->name = strdup(name);
		f->help = strdup(help ? help : "");
		f->type = type;
		if (!f->name || !f->help) {
			free(f->name);
			free(f->help);
			free(f);
			return NULL;
		}
		if (m->last)
			m->last->next = f;
		else
			m->families = f;
		m->last = f;
	}
	for (s = f->series; s; s = s->next)
		if (!strcmp(s->labels, labels))
			return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->labels = strdup(labels);
	if (!s->labels) {
		free(s);
		return NULL;
	}
	if (f->last)
		f->last->next = s;
	else
		f->series = s;
	f->last = s;
	*created = true;
	return s;
}

struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
				       const char *labels)
{
	struct series *s;
	bool created;

	if (!m)
		return NULL;
	pthread_mutex_lock(&m->lock);
	s = get_series(m, name, help, TYPE_COUNTER, labels, &created);
	pthread_mutex_unlock(&m->lock);
	return s ? &s->u.counter : NULL;
}

struct metric_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
				   const char *labels)
{
	struct series *s;
	bool created;

	if (!m)
		return NULL;
	pthread_mutex_lock(&m->lock);
	s = get_series(m, name, help, TYPE_GAUGE, labels, &created);
	pthread_mutex_unlock(&m->lock);
	return s ? &s->u.gauge : NULL;
}

struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
					   const char *labels, const double *bounds, int n_bounds)
{
	struct series *s;
	bool created;

	if (!m || n_bounds < 1 || n_bounds > METRICS_MAX_BUCKETS)
		return NULL;
	pthread_mutex_lock(&m->lock);
	s = get_series(m, name, help, TYPE_HISTOGRAM, labels, &created);
	if (s && created) {
		struct metric_histogram *h = &s->u.histogram;

		h->n_bounds = n_bounds;
		for (int i = 0; i < n_bounds; i++) {
			h->bounds[i] = bounds[i];
			h->bounds_ns[i] = (uint64_t)(bounds[i] * 1e9 + 0.5);
		}
	}
	pthread_mutex_unlock(&m->lock);
	return s ? &s->u.histogram : NULL;
}

void metric_observe_ns(struct metric_histogram *h, uint64_t ns)
{
	int i = 0;

	if (!h)
		return;
	/* A linear scan: 16-18 bounds, most observations stop in the first few. */
	while (i < h->n_bounds && ns > h->bounds_ns[i])
		i++;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

int metrics_add_collector(struct metrics *m, metrics_collector fn, void *ctx)
{
	struct collector *c;

	pthread_mutex_lock(&m->lock);
	c = realloc(m->collectors, (size_t)(m->n_collectors + 1) * sizeof(*c));
	if (c) {
		m->collectors = c;
		c[m->n_collectors].fn = fn;
		c[m->n_collectors].ctx = ctx;
		m->n_collectors++;
	}
	pthread_mutex_unlock(&m->lock);
	return c ? 0 : -1;
}

static void out_printf(struct metrics_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void out_printf(struct metrics_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->failed)
		return;
	for (;;) {
		size_t room = o->cap - o->len;

		va_start(ap, fmt);
		n = vsnprintf(o->buf ? o->buf + o->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = true;
			return;
		}
		if ((size_t)n < room) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap ? o->cap * 2 : 8192;
		while (cap - o->len <= (size_t)n)
			cap *= 2;
		char *p = realloc(o->buf, cap);
		if (!p) {
			o->failed = true;
			return;
		}
		o->buf = p;
		o->cap = cap;
	}
}

/* A float as Prometheus reads it: integers without a fraction, +Inf/-Inf/NaN spelled. */
static void out_value(struct metrics_out *o, double v)
{
	if (isnan(v))
		out_printf(o, "NaN");
	else if (isinf(v))
		out_printf(o, v > 0 ? "+Inf" : "-Inf");
	else if (v == (double)(int64_t)v && fabs(v) < 9e15)
		out_printf(o, "%" PRId64, (int64_t)v);
	else
		out_printf(o, "%.15g", v);
}

/* The help text with backslash and newline escaped, as the format wants. */
static void out_help(struct metrics_out *o, const char *name, const char *help, const char *type)
{
	out_printf(o, "# HELP %s ", name);
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			out_printf(o, "\\\\");
		else if (*p == '\n')
			out_printf(o, "\\n");
		else
			out_printf(o, "%c", *p);
	}
	out_printf(o, "\n# TYPE %s %s\n", name, type);
}

void metrics_out_family(struct metrics_out *out, const char *name, const char *help,
			const char *type)
{
	out_help(out, name, help, type);
}

void metrics_out_sample(struct metrics_out *out, const char *name, const char *labels, double value)
{
	if (labels && *labels)
		out_printf(out, "%s{%s} ", name, labels);
	else
		out_printf(out, "%s ", name);
	out_value(out, value);
	out_printf(out, "\n");
}

char *metrics_label_escape(const char *value, char *buf, size_t cap)
{
	size_t o = 0;

	if (!cap)
		return buf;
	for (const char *p = value ? value : ""; *p && o + 3 < cap; p++) {
		if (*p == '\\' || *p == '"') {
			buf[o++] = '\\';
			buf[o++] = *p;
		} else if (*p == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return buf;
}

static void render_histogram(struct metrics_out *o, const char *name, const char *labels,
			     struct metric_histogram *h)
{
	uint64_t counts[METRICS_MAX_BUCKETS + 1], cum = 0;
	const char *sep = *labels ? "," : "";

	/* One snapshot: the +Inf bucket and _count agree even while others observe. */
	for (int i = 0; i <= h->n_bounds; i++)
		counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
	for (int i = 0; i <= h->n_bounds; i++) {
		cum += counts[i];
		if (i < h->n_bounds) {
			out_printf(o, "%s_bucket{%s%sle=\"", name, labels, sep);
			out_value(o, h->bounds[i]);
			out_printf(o, "\"} %" PRIu64 "\n", cum);
		} else {
			out_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep,
				   cum);
		}
	}
	if (*labels)
		out_printf(o, "%s_sum{%s} ", name, labels);
	else
		out_printf(o, "%s_sum ", name);
	out_value(o, (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
	if (*labels)
		out_printf(o, "\n%s_count{%s} %" PRIu64 "\n", name, labels, cum);
	else
		out_printf(o, "\n%s_count %" PRIu64 "\n", name, cum);
}

char *metrics_render(struct metrics *m, size_t *len)
{
	struct metrics_out o = {0};
	struct collector *cs = NULL;
	int n = 0;

	pthread_mutex_lock(&m->lock);
	for (struct family *f = m->families; f; f = f->next) {
		out_help(&o, f->name, f->help, type_names[f->type]);
		for (struct series *s = f->series; s; s = s->next) {
			switch (f->type) {
			case TYPE_COUNTER:
				out_printf(
				    &o, *s->labels ? "%s{%s} %" PRIu64 "\n" : "%s%s %" PRIu64 "\n",
				    f->name, s->labels,
				    atomic_load_explicit(&s->u.counter.value,
							 memory_order_relaxed));
				break;
			case TYPE_GAUGE:
				out_printf(
				    &o, *s->labels ? "%s{%s} %" PRId64 "\n" : "%s%s %" PRId64 "\n",
				    f->name, s->labels,
				    atomic_load_explicit(&s->u.gauge.value, memory_order_relaxed));
				break;
			case TYPE_HISTOGRAM:
				render_histogram(&o, f->name, s->labels, &s->u.histogram);
				break;
			}
		}
	}
	if (m->n_collectors) {
		cs = malloc((size_t)m->n_collectors * sizeof(*cs));
		if (cs) {
			memcpy(cs, m->collectors, (size_t)m->n_collectors * sizeof(*cs));
			n = m->n_collectors;
		}
	}
	pthread_mutex_unlock(&m->lock);
	/* Collectors run without the registry's lock: they may take their own locks. */
	for (int i = 0; i < n; i++)
		cs[i].fn(cs[i].ctx, &o);
	free(cs);
	if (!o.buf)
		out_printf(&o, "%s", "");
	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	if (len)
		*len = o.len;
	return o.buf;
}
