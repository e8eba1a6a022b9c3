/*
 * vs_ui: the volume server's page (/ui: its volumes, disks and recent errors, built
 * from /status and /ui/events), /ui/events, and /ui/stats (read and write request
 * counts, sampled by the masters for their page's charts).
 */
#ifndef KELP_VS_UI_H
#define KELP_VS_UI_H

#include "cluster/net/http.h"
#include "cluster/volume_server/vs_metrics.h"

void vs_ui_handle(struct http_request *req, struct vs_metrics *vm);

#endif
