/*
 * test_metrics (cluster/base/metrics.c): the exact exposition text of counters, gauges
 * and histograms (HELP/TYPE once per family, labels, cumulative buckets with le="+Inf",
 * _sum in seconds, _count), bucket edges (an observation equal to a bound counts in that
 * bucket: le is "less or equal"), label escaping, a type clash refused, collectors
 * rendered after the registered series, and exact totals under concurrent updates
 * (cluster/events.c's ring is tested at the end: capacity, since, counts).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/base/metrics.h"
#include "cluster/net/events.h"

static char *render(struct metrics *m)
{
	size_t len = 0;
	char *text = metrics_render(m, &len);

	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static void test_counter_and_gauge_text(void **state)
{
	struct metrics *m = metrics_new();
	struct metric_counter *a = metrics_counter(m, "kelp_x_total", "Xs done", "type=\"read\"");
	struct metric_counter *b = metrics_counter(m, "kelp_x_total", "ignored", "type=\"write\"");
	struct metric_gauge *g = metrics_gauge(m, "kelp_g", "A gauge\nwith \\ two lines", NULL);
	char *text;

	assert_ptr_equal(a, metrics_counter(m, "kelp_x_total", "", "type=\"read\""));
	metric_inc(a);
	metric_add(b, 41);
	metric_inc(b);
	metric_gauge_set(g, 7);
	metric_gauge_add(g, -10);
	text = render(m);
	assert_string_equal(text, "# HELP kelp_x_total Xs done\n"
				  "# TYPE kelp_x_total counter\n"
				  "kelp_x_total{type=\"read\"} 1\n"
				  "kelp_x_total{type=\"write\"} 42\n"
				  "# HELP kelp_g A gauge\\nwith \\\\ two lines\n"
				  "# TYPE kelp_g gauge\n"
				  "kelp_g -3\n");
	free(text);
	/* asking for a family with another type is refused */
	assert_null(metrics_gauge(m, "kelp_x_total", "", NULL));
	metrics_free(m);
}

static void test_histogram_text_and_edges(void **state)
{
	static const double bounds[] = {0.001, 0.01, 1};
	struct metrics *m = metrics_new();
	struct metric_histogram *h =
	    metrics_histogram(m, "kelp_h_seconds", "Latency", "op=\"read\"", bounds, 3);
	char *text;

	metric_observe_ns(h, 1000000);	  /* exactly 1 ms: in le="0.001" */
	metric_observe_ns(h, 1000001);	  /* just above: le="0.01" */
	metric_observe_ns(h, 500000000);  /* 0.5 s */
	metric_observe_ns(h, 2000000000); /* 2 s: only +Inf */
	text = render(m);
	assert_string_equal(text, "# HELP kelp_h_seconds Latency\n"
				  "# TYPE kelp_h_seconds histogram\n"
				  "kelp_h_seconds_bucket{op=\"read\",le=\"0.001\"} 1\n"
				  "kelp_h_seconds_bucket{op=\"read\",le=\"0.01\"} 2\n"
				  "kelp_h_seconds_bucket{op=\"read\",le=\"1\"} 3\n"
				  "kelp_h_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"
				  "kelp_h_seconds_sum{op=\"read\"} 2.502000001\n"
				  "kelp_h_seconds_count{op=\"read\"} 4\n");
	free(text);
	assert_null(metrics_histogram(m, "kelp_too_many", "", NULL, bounds, 0));
	metrics_free(m);
}

static void collector(void *ctx, struct metrics_out *out)
{
	char esc[64], labels[100];

	metrics_out_family(out, "kelp_c", "Collected", "gauge");
	snprintf(labels, sizeof(labels), "dir=\"%s\"",
		 metrics_label_escape("a\"b\\c\nd", esc, sizeof(esc)));
	metrics_out_sample(out, "kelp_c", labels, *(double *)ctx);
	metrics_out_sample(out, "kelp_c", NULL, 0.25);
}

static void test_collectors_and_escaping(void **state)
{
	struct metrics *m = metrics_new();
	double v = 1e18;
	char *text;

	metrics_counter(m, "kelp_first_total", "First", NULL);
	assert_int_equal(metrics_add_collector(m, collector, &v), 0);
	text = render(m);
	assert_string_equal(text, "# HELP kelp_first_total First\n"
				  "# TYPE kelp_first_total counter\n"
				  "kelp_first_total 0\n"
				  "# HELP kelp_c Collected\n"
				  "# TYPE kelp_c gauge\n"
				  "kelp_c{dir=\"a\\\"b\\\\c\\nd\"} 1e+18\n"
				  "kelp_c 0.25\n");
	free(text);
	metrics_free(m);
}

struct worker {
	struct metric_counter *c;
	struct metric_histogram *h;
};

static void *work(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < 100000; i++) {
		metric_inc(w->c);
		metric_observe_ns(w->h, (uint64_t)i);
	}
	return NULL;
}

static void test_concurrent_updates_are_exact(void **state)
{
	static const double bounds[] = {0.00005};
	struct metrics *m = metrics_new();
	struct worker w = {metrics_counter(m, "kelp_n_total", "", NULL),
			   metrics_histogram(m, "kelp_t_seconds", "", NULL, bounds, 1)};
	pthread_t t[4];
	char *text;

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, work, &w), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	text = render(m);
	assert_non_null(strstr(text, "kelp_n_total 400000\n"));
	/* 0..50000 ns are <= 50 us: 50001 per thread */
	assert_non_null(strstr(text, "kelp_t_seconds_bucket{le=\"5e-05\"} 200004\n"));
	assert_non_null(strstr(text, "kelp_t_seconds_bucket{le=\"+Inf\"} 400000\n"));
	assert_non_null(strstr(text, "kelp_t_seconds_count 400000\n"));
	free(text);
	metrics_free(m);
}

static void test_events_ring(void **state)
{
	struct events *ev = events_new(3);
	json_t *a;

	for (int i = 1; i <= 5; i++)
		events_add(ev, i % 2 ? "growth" : "error", "event %d", i);
	a = events_json(ev, 0); /* the last 3 */
	assert_int_equal(json_array_size(a), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "text")),
			    "event 3");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 2), "seq")), 5);
	json_decref(a);
	a = events_json(ev, 4);
	assert_int_equal(json_array_size(a), 1);
	json_decref(a);
	a = events_json(ev, 5);
	assert_int_equal(json_array_size(a), 0);
	json_decref(a);
	assert_int_equal(events_count(ev, "growth"), 3);
	assert_int_equal(events_count(ev, "error"), 2);
	assert_int_equal(events_count(ev, "repair"), 0);
	events_free(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter_and_gauge_text),
	    cmocka_unit_test(test_histogram_text_and_edges),
	    cmocka_unit_test(test_collectors_and_escaping),
	    cmocka_unit_test(test_concurrent_updates_are_exact),
	    cmocka_unit_test(test_events_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
