/*
 * metrics_http: /metrics over cluster/net/http.
 *
 * http_reply_metrics() answers one request with a registry's exposition text (the
 * Prometheus content type). metrics_server_start() runs a server of its own that
 * answers GET /metrics and nothing else (the mount's -metricsPort).
 */
#ifndef KELP_METRICS_HTTP_H
#define KELP_METRICS_HTTP_H

#include "cluster/base/metrics.h"
#include "cluster/net/http.h"

void http_reply_metrics(struct http_request *req, struct metrics *m);

/* Listens on ip:port (0 = any free port; see http_server_port). 0 or -errno. */
int metrics_server_start(const char *ip, int port, struct metrics *m, struct http_server **out);

#endif
