#define FUSE_USE_VERSION 312

#include "fuse/fuse_metrics.h"

#include <fuse3/fuse_lowlevel.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/file.h"
#include "fuse/journal.h"
#include "fuse/health.h"
#include "fuse/meta.h"

/* One mount per process: the wrapped table and its series are process-wide. */
static const struct fuse_lowlevel_ops *base_ops;
static struct fuse_lowlevel_ops metered;

enum op {
	OP_LOOKUP,
	OP_FORGET,
	OP_FORGET_MULTI,
	OP_GETATTR,
	OP_SETATTR,
	OP_READLINK,
	OP_MKNOD,
	OP_MKDIR,
	OP_SYMLINK,
	OP_LINK,
	OP_UNLINK,
	OP_RMDIR,
	OP_RENAME,
	OP_OPEN,
	OP_CREATE,
	OP_READ,
	OP_WRITE,
	OP_FLUSH,
	OP_RELEASE,
	OP_FSYNC,
	OP_OPENDIR,
	OP_READDIR,
	OP_RELEASEDIR,
	OP_FSYNCDIR,
	OP_STATFS,
	OP_SETXATTR,
	OP_GETXATTR,
	OP_LISTXATTR,
	OP_REMOVEXATTR,
	OP_READDIRPLUS,
	OP_N
};

static struct metric_histogram *op_latency[OP_N];

static const char *const op_names[OP_N] = {
    "lookup",  "forget",   "forget_multi", "getattr",	"setattr",     "readlink",
    "mknod",   "mkdir",	   "symlink",	   "link",	"unlink",      "rmdir",
    "rename",  "open",	   "create",	   "read",	"write",       "flush",
    "release", "fsync",	   "opendir",	   "readdir",	"releasedir",  "fsyncdir",
    "statfs",  "setxattr", "getxattr",	   "listxattr", "removexattr", "readdirplus"};

/*
 * m_<op> calls the mount's own callback and records how long it ran (after the callback
 * req may be gone, replied: only the time is used).
 */
#define METERED(op, id, params, args)                                                              \
	static void m_##op params                                                                  \
	{                                                                                          \
		uint64_t start = monotonic_ns();                                                   \
                                                                                                   \
		base_ops->op args;                                                                 \
		metric_observe_ns(op_latency[id], monotonic_ns() - start);                         \
	}

METERED(lookup, OP_LOOKUP, (fuse_req_t req, fuse_ino_t parent, const char *name),
	(req, parent, name))
METERED(forget, OP_FORGET, (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup), (req, ino, nlookup))
METERED(forget_multi, OP_FORGET_MULTI,
	(fuse_req_t req, size_t count, struct fuse_forget_data *forgets), (req, count, forgets))
METERED(getattr, OP_GETATTR, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	(req, ino, fi))
METERED(setattr, OP_SETATTR,
	(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi),
	(req, ino, attr, to_set, fi))
METERED(readlink, OP_READLINK, (fuse_req_t req, fuse_ino_t ino), (req, ino))
METERED(mknod, OP_MKNOD,
	(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev),
	(req, parent, name, mode, rdev))
METERED(mkdir, OP_MKDIR, (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode),
	(req, parent, name, mode))
METERED(symlink, OP_SYMLINK,
	(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name),
	(req, link, parent, name))
METERED(link, OP_LINK, (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname),
	(req, ino, newparent, newname))
METERED(unlink, OP_UNLINK, (fuse_req_t req, fuse_ino_t parent, const char *name),
	(req, parent, name))
METERED(rmdir, OP_RMDIR, (fuse_req_t req, fuse_ino_t parent, const char *name), (req, parent, name))
METERED(rename, OP_RENAME,
	(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	 const char *newname, unsigned int flags),
	(req, parent, name, newparent, newname, flags))
METERED(open, OP_OPEN, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi), (req, ino, fi))
METERED(create, OP_CREATE,
	(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	 struct fuse_file_info *fi),
	(req, parent, name, mode, fi))
METERED(read, OP_READ,
	(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
	(req, ino, size, off, fi))
METERED(write, OP_WRITE,
	(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
	 struct fuse_file_info *fi),
	(req, ino, buf, size, off, fi))
METERED(flush, OP_FLUSH, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	(req, ino, fi))
METERED(release, OP_RELEASE, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	(req, ino, fi))
METERED(fsync, OP_FSYNC, (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
	(req, ino, datasync, fi))
METERED(opendir, OP_OPENDIR, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	(req, ino, fi))
METERED(readdir, OP_READDIR,
	(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
	(req, ino, size, off, fi))
METERED(readdirplus, OP_READDIRPLUS,
	(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi),
	(req, ino, size, off, fi))
METERED(releasedir, OP_RELEASEDIR, (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi),
	(req, ino, fi))
METERED(fsyncdir, OP_FSYNCDIR,
	(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi),
	(req, ino, datasync, fi))
METERED(statfs, OP_STATFS, (fuse_req_t req, fuse_ino_t ino), (req, ino))
METERED(setxattr, OP_SETXATTR,
	(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
	 int flags),
	(req, ino, name, value, size, flags))
METERED(getxattr, OP_GETXATTR, (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size),
	(req, ino, name, size))
METERED(listxattr, OP_LISTXATTR, (fuse_req_t req, fuse_ino_t ino, size_t size), (req, ino, size))
METERED(removexattr, OP_REMOVEXATTR, (fuse_req_t req, fuse_ino_t ino, const char *name),
	(req, ino, name))

const struct fuse_lowlevel_ops *fuse_metrics_ops(const struct fuse_lowlevel_ops *base)
{
	base_ops = base;
	metered = *base;

/* Each callback the mount has is wrapped; the others stay unset. */
#define WRAP(op) (metered.op = base->op ? m_##op : NULL)
	WRAP(lookup);
	WRAP(forget);
	WRAP(forget_multi);
	WRAP(getattr);
	WRAP(setattr);
	WRAP(readlink);
	WRAP(mknod);
	WRAP(mkdir);
	WRAP(symlink);
	WRAP(link);
	WRAP(unlink);
	WRAP(rmdir);
	WRAP(rename);
	WRAP(open);
	WRAP(create);
	WRAP(read);
	WRAP(write);
	WRAP(flush);
	WRAP(release);
	WRAP(fsync);
	WRAP(opendir);
	WRAP(readdir);
	WRAP(readdirplus);
	WRAP(releasedir);
	WRAP(fsyncdir);
	WRAP(statfs);
	WRAP(setxattr);
	WRAP(getxattr);
	WRAP(listxattr);
	WRAP(removexattr);
#undef WRAP
	return &metered;
}

/* ---------------------------------------------------------------- scraped */

#define GC_COUNT_CAP 4096

static void collect(void *ctx, struct metrics_out *out)
{
	struct fuse_metrics *fm = ctx;
	struct kelp_fs *fs = fm->fs;
	char(*fids)[META_FID_MAX] = malloc(GC_COUNT_CAP * sizeof(*fids));
	uint64_t *seqs = malloc(GC_COUNT_CAP * sizeof(*seqs));
	int n = fids && seqs ? meta_gc_take(fs->meta, GC_COUNT_CAP, fids, seqs) : -1;

	free(fids);
	free(seqs);
	metrics_out_family(out, "kelp_mount_gc_queue_blobs",
			   "Blobs waiting to be deleted in the cluster (counted up to 4096)",
			   "gauge");
	metrics_out_sample(out, "kelp_mount_gc_queue_blobs", NULL, n < 0 ? 0 : n);
	{
		uint64_t txns, rts = meta_round_trips(fs->meta, &txns);

		metrics_out_family(out, "kelp_mount_meta_round_trips_total",
				   "Round trips to the metadata server (0 with LMDB)", "counter");
		metrics_out_sample(out, "kelp_mount_meta_round_trips_total", NULL, (double)rts);
		metrics_out_family(out, "kelp_mount_meta_transactions_total",
				   "Metadata transactions begun on the server (0 with LMDB)",
				   "counter");
		metrics_out_sample(out, "kelp_mount_meta_transactions_total", NULL, (double)txns);
	}
	{
		struct meta_lookup_stats ls;

		if (meta_lookup_stats(fs->meta, &ls)) {
			metrics_out_family(
			    out, "kelp_mount_lookup_cache_total",
			    "Lookups by how the lookups read ahead answered them: hit "
			    "(an entry from memory), absent (a name a fresh batch does not "
			    "have: asked the metadata all the same), miss (asked the metadata)",
			    "counter");
			metrics_out_sample(out, "kelp_mount_lookup_cache_total", "result=\"hit\"",
					   (double)ls.hits);
			metrics_out_sample(out, "kelp_mount_lookup_cache_total",
					   "result=\"absent\"", (double)ls.absent);
			metrics_out_sample(out, "kelp_mount_lookup_cache_total", "result=\"miss\"",
					   (double)ls.misses);
			metrics_out_family(
			    out, "kelp_mount_lookup_cache_loads_total",
			    "Batches of a directory's entries read ahead (of the misses)",
			    "counter");
			metrics_out_sample(out, "kelp_mount_lookup_cache_loads_total", NULL,
					   (double)ls.loads);
			metrics_out_family(out, "kelp_mount_lookup_cache_entries",
					   "Entries the lookups read ahead hold now", "gauge");
			metrics_out_sample(out, "kelp_mount_lookup_cache_entries", NULL,
					   (double)ls.entries);
		}
	}
	if (fs->journal) {
		metrics_out_family(out, "kelp_mount_writeback_journal_bytes",
				   "-writeback: bytes in the journal, not uploaded yet", "gauge");
		metrics_out_sample(out, "kelp_mount_writeback_journal_bytes", NULL,
				   (int64_t)journal_bytes(fs->journal));
		metrics_out_family(out, "kelp_mount_writeback_journal_entries",
				   "-writeback: journal entries (closes) not uploaded yet",
				   "gauge");
		metrics_out_sample(out, "kelp_mount_writeback_journal_entries", NULL,
				   (int64_t)__atomic_load_n(&fs->wb_jobs, __ATOMIC_RELAXED));
		metrics_out_family(out, "kelp_mount_writeback_fallbacks_total",
				   "-writeback: closes that uploaded themselves (journal full or "
				   "refused by its disk)",
				   "counter");
		metrics_out_sample(out, "kelp_mount_writeback_fallbacks_total", NULL,
				   (int64_t)__atomic_load_n(&fs->wb_fallbacks, __ATOMIC_RELAXED));
	}
	metrics_out_family(out, "kelp_mount_cluster_reachable",
			   "1 while a master answers (or answered within -timeout)", "gauge");
	metrics_out_sample(out, "kelp_mount_cluster_reachable", NULL,
			   !fs->health.started ||
			       !__atomic_load_n(&fs->health.failing, __ATOMIC_ACQUIRE));
}

int fuse_metrics_init(struct kelp_fs *fs)
{
	struct fuse_metrics *fm = calloc(1, sizeof(*fm));
	struct metrics *r;

	if (!fm || !(fm->reg = metrics_new())) {
		free(fm);
		return -ENOMEM;
	}
	r = fm->reg;
	fm->fs = fs;
	metric_gauge_set(metrics_gauge(r, "kelp_mount_start_time_seconds",
				       "Start time of the process, Unix seconds", NULL),
			 (int64_t)(now_ns() / 1000000000ull));
	metric_gauge_set(metrics_gauge(r, "kelp_build_info", "Version of kelp (always 1)",
				       "version=\"" KELP_VERSION "\",role=\"mount\""),
			 1);
	for (int i = 0; i < OP_N; i++) {
		char labels[40];

		snprintf(labels, sizeof(labels), "op=\"%s\"", op_names[i]);
		op_latency[i] = metrics_histogram(
		    r, "kelp_mount_operation_duration_seconds",
		    "FUSE operations by type: time in kelp's callback (count = operations)", labels,
		    metrics_fuse_buckets, metrics_fuse_buckets_n);
	}
	fm->bytes_read = metrics_counter(r, "kelp_mount_read_bytes_total",
					 "Bytes returned to read() calls", NULL);
	fm->bytes_written = metrics_counter(r, "kelp_mount_written_bytes_total",
					    "Bytes accepted from write() calls", NULL);
	fm->mem_hits = metrics_counter(r, "kelp_mount_cache_hits_total",
				       "Chunk reads served by a cache", "cache=\"memory\"");
	fm->disk_hits = metrics_counter(r, "kelp_mount_cache_hits_total",
					"Chunk reads served by a cache", "cache=\"disk\"");
	fm->mem_misses = metrics_counter(r, "kelp_mount_cache_misses_total",
					 "Chunk reads a cache could not serve", "cache=\"memory\"");
	fm->disk_misses = metrics_counter(r, "kelp_mount_cache_misses_total",
					  "Chunk reads a cache could not serve", "cache=\"disk\"");
	fm->uploads = metrics_counter(r, "kelp_mount_chunk_uploads_total",
				      "Chunks uploaded to the cluster", "result=\"success\"");
	fm->upload_errors = metrics_counter(r, "kelp_mount_chunk_uploads_total",
					    "Chunks uploaded to the cluster", "result=\"failure\"");
	fm->uploads_in_flight =
	    metrics_gauge(r, "kelp_mount_uploads_in_flight", "Chunk uploads in progress", NULL);
	metrics_add_collector(r, collect, fm);
	fs->metrics = fm;
	return 0;
}

void fuse_metrics_free(struct kelp_fs *fs)
{
	struct fuse_metrics *fm = fs->metrics;

	if (!fm)
		return;
	fs->metrics = NULL;
	metrics_free(fm->reg);
	free(fm);
}
