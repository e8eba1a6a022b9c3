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
	OP_N
};

static struct metric_histogram *op_latency[OP_N];

struct op_timer {
	uint64_t start;
};

static inline struct op_timer timer_start(fuse_req_t req)
{
	struct op_timer t = {monotonic_ns()};

	return t;
}

/* After the callback: req may be gone (replied), only the time is used. */
static inline void timer_end(const struct op_timer *t, enum op op)
{
	metric_observe_ns(op_latency[op], monotonic_ns() - t->start);
}

static const char *const op_names[OP_N] = {
    "lookup",  "forget",   "forget_multi", "getattr",	"setattr",    "readlink",
    "mknod",   "mkdir",	   "symlink",	   "link",	"unlink",     "rmdir",
    "rename",  "open",	   "create",	   "read",	"write",      "flush",
    "release", "fsync",	   "opendir",	   "readdir",	"releasedir", "fsyncdir",
    "statfs",  "setxattr", "getxattr",	   "listxattr", "removexattr"};

static void m_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op_timer t = timer_start(req);

	base_ops->lookup(req, parent, name);
	timer_end(&t, OP_LOOKUP);
}

static void m_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct op_timer t = timer_start(req);

	base_ops->forget(req, ino, nlookup);
	timer_end(&t, OP_FORGET);
}

static void m_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct op_timer t = timer_start(req);

	base_ops->forget_multi(req, count, forgets);
	timer_end(&t, OP_FORGET_MULTI);
}

static void m_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->getattr(req, ino, fi);
	timer_end(&t, OP_GETATTR);
}

static void m_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		      struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->setattr(req, ino, attr, to_set, fi);
	timer_end(&t, OP_SETATTR);
}

static void m_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct op_timer t = timer_start(req);

	base_ops->readlink(req, ino);
	timer_end(&t, OP_READLINK);
}

static void m_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct op_timer t = timer_start(req);

	base_ops->mknod(req, parent, name, mode, rdev);
	timer_end(&t, OP_MKNOD);
}

static void m_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct op_timer t = timer_start(req);

	base_ops->mkdir(req, parent, name, mode);
	timer_end(&t, OP_MKDIR);
}

static void m_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct op_timer t = timer_start(req);

	base_ops->symlink(req, link, parent, name);
	timer_end(&t, OP_SYMLINK);
}

static void m_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct op_timer t = timer_start(req);

	base_ops->link(req, ino, newparent, newname);
	timer_end(&t, OP_LINK);
}

static void m_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op_timer t = timer_start(req);

	base_ops->unlink(req, parent, name);
	timer_end(&t, OP_UNLINK);
}

static void m_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct op_timer t = timer_start(req);

	base_ops->rmdir(req, parent, name);
	timer_end(&t, OP_RMDIR);
}

static void m_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		     const char *newname, unsigned int flags)
{
	struct op_timer t = timer_start(req);

	base_ops->rename(req, parent, name, newparent, newname, flags);
	timer_end(&t, OP_RENAME);
}

static void m_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->open(req, ino, fi);
	timer_end(&t, OP_OPEN);
}

static void m_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->create(req, parent, name, mode, fi);
	timer_end(&t, OP_CREATE);
}

static void m_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->read(req, ino, size, off, fi);
	timer_end(&t, OP_READ);
}

static void m_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->write(req, ino, buf, size, off, fi);
	timer_end(&t, OP_WRITE);
}

static void m_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->flush(req, ino, fi);
	timer_end(&t, OP_FLUSH);
}

static void m_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->release(req, ino, fi);
	timer_end(&t, OP_RELEASE);
}

static void m_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->fsync(req, ino, datasync, fi);
	timer_end(&t, OP_FSYNC);
}

static void m_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->opendir(req, ino, fi);
	timer_end(&t, OP_OPENDIR);
}

static void m_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->readdir(req, ino, size, off, fi);
	timer_end(&t, OP_READDIR);
}

static void m_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->releasedir(req, ino, fi);
	timer_end(&t, OP_RELEASEDIR);
}

static void m_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct op_timer t = timer_start(req);

	base_ops->fsyncdir(req, ino, datasync, fi);
	timer_end(&t, OP_FSYNCDIR);
}

static void m_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct op_timer t = timer_start(req);

	base_ops->statfs(req, ino);
	timer_end(&t, OP_STATFS);
}

static void m_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		       size_t size, int flags)
{
	struct op_timer t = timer_start(req);

	base_ops->setxattr(req, ino, name, value, size, flags);
	timer_end(&t, OP_SETXATTR);
}

static void m_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct op_timer t = timer_start(req);

	base_ops->getxattr(req, ino, name, size);
	timer_end(&t, OP_GETXATTR);
}

static void m_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct op_timer t = timer_start(req);

	base_ops->listxattr(req, ino, size);
	timer_end(&t, OP_LISTXATTR);
}

static void m_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct op_timer t = timer_start(req);

	base_ops->removexattr(req, ino, name);
	timer_end(&t, OP_REMOVEXATTR);
}

const struct fuse_lowlevel_ops *fuse_metrics_ops(const struct fuse_lowlevel_ops *base)
{
	base_ops = base;
	metered = *base;

	if (base->lookup)
		metered.lookup = m_lookup;

	if (base->forget)
		metered.forget = m_forget;

	if (base->forget_multi)
		metered.forget_multi = m_forget_multi;

	if (base->getattr)
		metered.getattr = m_getattr;

	if (base->setattr)
		metered.setattr = m_setattr;

	if (base->readlink)
		metered.readlink = m_readlink;

	if (base->mknod)
		metered.mknod = m_mknod;

	if (base->mkdir)
		metered.mkdir = m_mkdir;

	if (base->symlink)
		metered.symlink = m_symlink;

	if (base->link)
		metered.link = m_link;

	if (base->unlink)
		metered.unlink = m_unlink;

	if (base->rmdir)
		metered.rmdir = m_rmdir;

	if (base->rename)
		metered.rename = m_rename;

	if (base->open)
		metered.open = m_open;

	if (base->create)
		metered.create = m_create;

	if (base->read)
		metered.read = m_read;

	if (base->write)
		metered.write = m_write;

	if (base->flush)
		metered.flush = m_flush;

	if (base->release)
		metered.release = m_release;

	if (base->fsync)
		metered.fsync = m_fsync;

	if (base->opendir)
		metered.opendir = m_opendir;

	if (base->readdir)
		metered.readdir = m_readdir;

	if (base->releasedir)
		metered.releasedir = m_releasedir;

	if (base->fsyncdir)
		metered.fsyncdir = m_fsyncdir;

	if (base->statfs)
		metered.statfs = m_statfs;

	if (base->setxattr)
		metered.setxattr = m_setxattr;

	if (base->getxattr)
		metered.getxattr = m_getxattr;

	if (base->listxattr)
		metered.listxattr = m_listxattr;

	if (base->removexattr)
		metered.removexattr = m_removexattr;

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
