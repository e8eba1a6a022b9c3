/*
 * ops: the libfuse low-level callbacks of the kelp mount. The only place that sends
 * FUSE replies: each op calls a do_x() that returns 0 / -errno (from meta.c and
 * file.c) and sends exactly one fuse_reply_*.
 *
 * Inode numbers are meta's LMDB keys (the root is 1, FUSE_ROOT_ID). Inodes live in
 * LMDB, so forget needs no bookkeeping; unlinked files still open are kept until their
 * last release (file.h).
 */
#ifndef KELP_OPS_H
#define KELP_OPS_H

#include "fuse/file.h"

struct fuse_lowlevel_ops;

/* The op table; userdata of the session must be a struct kelp_fs. */
const struct fuse_lowlevel_ops *kelp_fuse_ops(void);

/*
 * Mounts at mountpoint and serves until unmounted or signalled (SIGINT, SIGTERM,
 * SIGHUP; the caller blocks them in every thread before starting any). fuse_opts: extra "-o" options (comma list), may be NULL. ready: called once
 * mounted (may be NULL). Returns 0 or -errno.
 */
int kelp_fuse_run(struct kelp_fs *fs, const char *mountpoint, const char *fuse_opts, int threads,
		  void (*ready)(void *ctx), void *ctx);

#endif
