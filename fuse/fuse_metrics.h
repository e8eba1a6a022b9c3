/*
 * fuse_metrics: what the mount's /metrics (-metricsPort) shows: FUSE operations by type with a
 * latency histogram, bytes read and written, chunk cache hits and misses (memory and
 * disk), uploads in flight, the gc queue, whether the cluster is reachable.
 *
 * Operations are timed by a second table of libfuse callbacks wrapping kelp's own
 * (fuse_metrics_ops): with metrics off the session uses kelp's table directly and
 * nothing is measured. An operation that replies from another thread later would be
 * timed to its hand-over; kelp's all reply before returning.
 */
#ifndef KELP_FUSE_METRICS_H
#define KELP_FUSE_METRICS_H

#include <stdint.h>

#include "cluster/base/metrics.h"

struct kelp_fs;
struct fuse_lowlevel_ops;

struct fuse_metrics {
	struct metrics *reg;
	struct kelp_fs *fs;
	struct metric_counter *bytes_read, *bytes_written;
	struct metric_counter *mem_hits, *mem_misses, *disk_hits, *disk_misses;
	struct metric_counter *uploads, *upload_errors;
	struct metric_gauge *uploads_in_flight;
};

/* Creates the registry of fs (fs->metrics; the FUSE session then uses the timed
 * callbacks). The server that answers /metrics is the daemon's (daemons/mount_main.c,
 * cluster/net/metrics_http.h). 0 or -ENOMEM. */
int fuse_metrics_init(struct kelp_fs *fs);
/* After the session has ended (no callback counts any more). */
void fuse_metrics_free(struct kelp_fs *fs);

/* The callbacks of base, each timed (base must outlive the session). */
const struct fuse_lowlevel_ops *fuse_metrics_ops(const struct fuse_lowlevel_ops *base);

#endif
