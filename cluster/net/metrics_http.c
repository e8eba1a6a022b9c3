#include "cluster/net/metrics_http.h"

#include <stdlib.h>
#include <string.h>

void http_reply_metrics(struct http_request *req, struct metrics *m)
{
	size_t len;
	char *text = metrics_render(m, &len);

	if (!text) {
		http_reply_error(req, 500, "out of memory rendering the metrics");
		return;
	}
	http_reply_buffer(req, 200, text, len, true);
	http_add_header(req, "Content-Type", METRICS_CONTENT_TYPE);
	http_add_header(req, "Cache-Control", "no-store");
}

static void handle(struct http_request *req)
{
	if (strcmp(req->path, "/metrics"))
		http_reply_error(req, 404, "only /metrics is served here");
	else if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
		http_reply_error(req, 405, "/metrics takes a GET");
	else
		http_reply_metrics(req, req->server_ctx);
}

int metrics_server_start(const char *ip, int port, struct metrics *m, struct http_server **out)
{
	struct http_server_options o = {.ip = ip, .port = port, .threads = 1};

	return http_server_start(&o, handle, m, out);
}
