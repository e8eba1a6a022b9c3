#include "cluster/volume_server/vs_ui.h"

#include <stdlib.h>
#include <string.h>

/* Generated at build time from cluster/volume_server/ui/volume.html. */
extern const char kelp_ui_volume_html[];
extern const unsigned long kelp_ui_volume_html_len;

void vs_ui_handle(struct http_request *req, struct vs_metrics *vm)
{
	const char *p = req->path;

	if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
		http_reply_error(req, 405, "%s takes a GET", p);
	} else if (!strcmp(p, "/ui") || !strcmp(p, "/ui/")) {
		http_reply_buffer(req, 200, kelp_ui_volume_html, kelp_ui_volume_html_len, false);
		http_add_header(req, "Content-Type", "text/html; charset=utf-8");
		http_add_header(req, "Cache-Control", "no-cache");
		http_add_header(req, "Content-Security-Policy",
				"default-src 'self'; style-src 'self' 'unsafe-inline'; "
				"script-src 'self' 'unsafe-inline'; img-src 'self' data:");
	} else if (!strcmp(p, "/ui/events")) {
		const char *since = http_query(req, "since");

		http_reply_json(req, 200,
				json_pack("{s:o}", "events",
					  events_json(vs_metrics_events(vm),
						      since ? strtoull(since, NULL, 10) : 0)));
	} else if (!strcmp(p, "/ui/stats")) {
		uint64_t reads, writes;

		vs_metrics_totals(vm, &reads, &writes);
		http_reply_json(req, 200,
				json_pack("{s:I,s:I}", "reads", (json_int_t)reads, "writes",
					  (json_int_t)writes));
	} else {
		http_reply_error(req, 404, "no page %s", p);
	}
}
