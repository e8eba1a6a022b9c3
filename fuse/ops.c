#define FUSE_USE_VERSION 312

#include "fuse/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/killpriv.h"
#include "fuse/locks.h"
#include "fuse/fuse_metrics.h"

#define STAT_BLOCK_SIZE 4096
/* st_blksize, the preferred I/O size: cp, cat and friends size their buffers by it,
 * and 1 MiB (the largest FUSE write) costs 8 times fewer round trips than 128 KiB. */
#define IO_BLOCK_SIZE (1 << 20)
/* The kernel's readahead on the mount (set_readahead): READs of up to 1 MiB, several
 * in flight for a sequential reader. */
#define READAHEAD_KB 4096

static struct kelp_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Nanoseconds to a timespec, flooring (times before 1970 keep tv_nsec in [0, 1e9)). */
static struct timespec ns_to_ts(int64_t ns)
{
	struct timespec t = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

	if (t.tv_nsec < 0) {
		t.tv_nsec += 1000000000;
		t.tv_sec--;
	}
	return t;
}

static void to_stat(struct kelp_fs *fs, const struct meta_attr *attr, struct stat *st)
{
	struct meta_attr fresh;
	const struct meta_attr *a = attr;
	struct open_file *f;

	/* An open file's size counts writes not yet in the metadata; its attributes are
	 * taken again together with them (a commit may have moved bytes meanwhile). */
	if (S_ISREG(attr->mode) && (f = file_find(fs, attr->ino))) {
		if (file_attr(fs, f, &fresh) == 0)
			a = &fresh;
		file_put(fs, f);
	}
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_rdev = a->rdev;
	st->st_size = (off_t)a->size;
	st->st_atim = ns_to_ts(a->atime_ns);
	st->st_mtim = ns_to_ts(a->mtime_ns);
	st->st_ctim = ns_to_ts(a->ctime_ns);
	st->st_blksize = IO_BLOCK_SIZE;
	/* The bytes really stored (holes take no room), in 512-byte units; a record from
	 * before the count (not changed since) shows its size. */
	st->st_blocks =
	    (blkcnt_t)(((a->stored == META_STORED_UNKNOWN ? a->size : a->stored) + 511) / 512);
}

/*
 * With a shared engine, an inode another mount freed while this kernel still had a
 * name cached for it: ESTALE instead of ENOENT makes the kernel look the path up again
 * (as for NFS), so open(O_CREAT) and stat of a name recreated meanwhile reach the new
 * file instead of failing.
 */
static int stale_if_gone(struct kelp_fs *fs, int rc)
{
	return rc == -ENOENT && meta_shared(fs->meta) ? -ESTALE : rc;
}

/* The kernel holds one more reference (lookup count) on ino. */
static void lookup_ref(struct kelp_fs *fs, uint64_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&fs->lookups_lock);
	if (inomap_set(&fs->lookups, ino, inomap_get(&fs->lookups, ino) + 1) < 0)
		log_error("mount: out of memory counting the kernel's references");
	pthread_mutex_unlock(&fs->lookups_lock);
}

static bool kernel_uses(struct kelp_fs *fs, uint64_t ino)
{
	bool used;

	pthread_mutex_lock(&fs->lookups_lock);
	used = inomap_get(&fs->lookups, ino) > 0;
	pthread_mutex_unlock(&fs->lookups_lock);
	return used;
}

/* Frees a removed inode once neither the kernel nor an open file refers to it. */
static void release_if_unused(struct kelp_fs *fs, uint64_t ino)
{
	struct open_file *f;

	if (!ino || kernel_uses(fs, ino))
		return;
	f = file_find(fs, ino);
	if (f) {
		file_set_unlinked(f);
		file_put(fs, f);
		return;
	}
	meta_release_inode(fs->meta, ino);
	fs_kick_gc(fs);
}

static void lookup_unref(struct kelp_fs *fs, uint64_t ino, uint64_t n)
{
	uint64_t count;
	bool gone = false;

	pthread_mutex_lock(&fs->lookups_lock);
	count = inomap_get(&fs->lookups, ino);
	if (count) {
		gone = count <= n;
		inomap_set(&fs->lookups, ino, gone ? 0 : count - n);
	}
	pthread_mutex_unlock(&fs->lookups_lock);
	if (gone) {
		struct meta_attr a;

		if (meta_getattr(fs->meta, ino, &a) == 0 && a.nlink == 0)
			release_if_unused(fs, ino);
	}
}

/* The entry of a, read age_ns ago: the kernel keeps it for its cache times less that. */
static void reply_entry_aged(fuse_req_t req, const struct meta_attr *a, int64_t age_ns)
{
	struct fuse_entry_param e;
	double age = (double)age_ns / 1e9;

	memset(&e, 0, sizeof(e));
	e.ino = a->ino;
	e.generation = meta_generation(fs_of(req)->meta);
	e.attr_timeout = fs_of(req)->opt.attr_timeout - age;
	e.entry_timeout = fs_of(req)->opt.entry_timeout - age;
	if (e.attr_timeout < 0)
		e.attr_timeout = 0;
	if (e.entry_timeout < 0)
		e.entry_timeout = 0;
	to_stat(fs_of(req), a, &e.attr);
	lookup_ref(fs_of(req), a->ino);
	if (fuse_reply_entry(req, &e) != 0)
		lookup_unref(fs_of(req), a->ino, 1); /* the kernel did not take it */
}

static void reply_entry(fuse_req_t req, const struct meta_attr *a)
{
	reply_entry_aged(req, a, 0);
}

static void reply_attr(fuse_req_t req, const struct meta_attr *a)
{
	struct stat st;

	to_stat(fs_of(req), a, &st);
	fuse_reply_attr(req, &st, fs_of(req)->opt.attr_timeout);
}

/*
 * Replies EIO when no master has answered for -timeout (fuse/health.h): the namespace
 * is not shown while its data cannot be read. forget, flush, fsync, release and the
 * locks are never refused (flush and fsync fail by themselves when an upload does).
 */
static bool cluster_away(fuse_req_t req)
{
	if (fs_cluster_check(fs_of(req)) == 0)
		return false;
	fuse_reply_err(req, EIO);
	return true;
}

/* ---------------------------------------------------------------- names */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct meta *m = fs_of(req)->meta;
	struct meta_attr a;
	uint64_t begun;
	int64_t age_ns;
	int rc;

	if (cluster_away(req))
		return;
	begun = meta_reads_begin(m);
	/* possibly read ahead a moment ago (meta_lookup_cached): the kernel gets the rest */
	rc = meta_lookup_cached(m, parent, name, &a, &age_ns);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* for the xattr questions that follow (ls -l), as old as the answer */
	meta_note_attrs(m, begun, &a, age_ns);
	reply_entry_aged(req, &a, age_ns);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	lookup_unref(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		lookup_unref(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct meta *m = fs_of(req)->meta;
	struct meta_attr a;
	uint64_t begun;
	int rc;

	if (cluster_away(req))
		return;
	begun = meta_reads_begin(m);
	rc = meta_getattr_dir(m, ino, &a);
	if (rc < 0) {
		fuse_reply_err(req, -stale_if_gone(fs_of(req), rc));
		return;
	}
	meta_note_attrs(m, begun, &a, 0);
	reply_attr(req, &a);
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Whether the caller of req (arg) is in group gid: its own or a supplementary one. */
static bool caller_in_group(void *arg, uint32_t gid)
{
	fuse_req_t req = arg;
	gid_t groups[64];
	int n;

	if (fuse_req_ctx(req)->gid == gid)
		return true;
	n = fuse_req_getgroups(req, 64, groups);
	for (int i = 0; i < n && i < 64; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* With FUSE_HANDLE_KILLPRIV_V2, before data changes: file_kill_privs for a caller that
 * lacks CAP_FSETID or not. */
static int kill_privs(fuse_req_t req, struct open_file *f, bool lacks_fsetid)
{
	struct kelp_fs *fs = fs_of(req);
	struct kill_caller who = {.in_group = caller_in_group, .arg = req};

	return fs->killpriv_v2 ? file_kill_privs(fs, f, lacks_fsetid ? &who : NULL) : 0;
}

/*
 * With FUSE_HANDLE_KILLPRIV_V2 (fuse/killpriv.c), a SETATTR (a truncate by a caller
 * without CAP_FSETID, or a chown) or an open with O_TRUNC that asks for it clears
 * setuid, and setgid when the group may execute or, for a caller other than root
 * (taken to have CAP_FSETID, as it normally does), when it is not in the file's group:
 * the META_SET_KILL_* flags for meta_setattr.
 */
static unsigned kill_flags(fuse_req_t req, uint64_t ino)
{
	struct kelp_fs *fs = fs_of(req);
	struct meta_attr a;

	if (!fs->killpriv_v2 || !killpriv_request_kills())
		return 0;
	if (fuse_req_ctx(req)->uid != 0 && meta_getattr(fs->meta, ino, &a) == 0 &&
	    (a.mode & (S_ISGID | S_IXGRP)) == S_ISGID && !caller_in_group(req, a.gid))
		return META_SET_KILL_SUIDGID | META_SET_KILL_SGID;
	return META_SET_KILL_SUIDGID;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct meta_attr in, out;
	unsigned valid = 0;
	int64_t now = meta_now_ns();
	int rc;

	if (cluster_away(req))
		return;
	memset(&in, 0, sizeof(in));
	if (to_set & FUSE_SET_ATTR_MODE) {
		valid |= META_SET_MODE;
		in.mode = attr->st_mode;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		valid |= META_SET_UID;
		in.uid = attr->st_uid;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		valid |= META_SET_GID;
		in.gid = attr->st_gid;
	}
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
		valid |= META_SET_ATIME;
		in.atime_ns = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? now : ts_ns(&attr->st_atim);
	}
	if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
		valid |= META_SET_MTIME;
		in.mtime_ns = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : ts_ns(&attr->st_mtim);
	}
	if (to_set & FUSE_SET_ATTR_CTIME) {
		valid |= META_SET_CTIME;
		in.ctime_ns = ts_ns(&attr->st_ctim);
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		valid |= META_SET_SIZE;
		in.size = (uint64_t)attr->st_size;
	}
	valid |= kill_flags(req, ino);
	{
		/* An open file: its buffered writes are recorded or cut first. */
		struct open_file *f = file_find(fs, ino);

		if (f) {
			rc = file_setattr(fs, f, &in, valid, &out);
			file_put(fs, f);
		} else {
			rc = meta_setattr(fs->meta, ino, &in, valid, &out);
		}
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (valid & META_SET_SIZE)
		fs_kick_gc(fs);
	reply_attr(req, &out);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[4097];
	int rc;

	if (cluster_away(req))
		return;
	rc = meta_readlink(fs_of(req)->meta, ino, buf, sizeof(buf));
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, buf);
}

/* Creates a node (meta applies the setgid bit of the parent: its group, and to
 * directories the bit, in the create's transaction). */
static int do_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
		     const char *target, struct meta_attr *out, struct meta_hold *hold)
{
	struct kelp_fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	uint32_t gid = ctx->gid;
	/* The umask (the kernel leaves it to us, FUSE_CAP_DONT_MASK) or the directory's
	 * default ACL (which replaces it) shape the mode. */
	if (hold) /* open(O_CREAT): the file is held open from its creation on */
		return meta_create_held(fs->meta, parent, name, mode, ctx->umask, ctx->uid, gid,
					out, hold);
	return meta_create_umask(fs->meta, parent, name, mode, target ? 0 : ctx->umask, ctx->uid,
				 gid, (uint32_t)rdev, target, out);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct meta_attr a;
	int rc;

	if (cluster_away(req))
		return;
	rc = do_create(req, parent, name, mode, rdev, NULL, &a, NULL);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	op_mknod(req, parent, name, (mode & 07777) | S_IFDIR, 0);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct meta_attr a;
	int rc;

	if (cluster_away(req))
		return;
	rc = strlen(link) > 4095 ? -ENAMETOOLONG
				 : do_create(req, parent, name, S_IFLNK | 0777, 0, link, &a, NULL);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, &a);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct meta_attr a;
	int rc;

	if (cluster_away(req))
		return;
	rc = meta_link(fs_of(req)->meta, ino, newparent, newname, &a);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, &a);
}

/* Replies to a call that may have dropped a name (unlink, rmdir, rename over one):
 * the inode that lost its last name is freed unless still in use. */
static void reply_removed(fuse_req_t req, int rc, uint64_t gone)
{
	if (rc == 0)
		release_if_unused(fs_of(req), gone);
	fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kelp_fs *fs = fs_of(req);
	uint64_t gone = 0;
	int rc;

	if (cluster_away(req))
		return;
	rc = meta_unlink(fs->meta, parent, name, &gone);
	reply_removed(req, rc, gone);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kelp_fs *fs = fs_of(req);
	uint64_t gone = 0;
	int rc;

	if (cluster_away(req))
		return;
	rc = meta_rmdir(fs->meta, parent, name, &gone);
	reply_removed(req, rc, gone);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct kelp_fs *fs = fs_of(req);
	uint64_t gone = 0;
	int rc;

	if (cluster_away(req))
		return;
	rc = meta_rename(fs->meta, parent, name, newparent, newname, flags, &gone);
	reply_removed(req, rc, gone);
}

/* ---------------------------------------------------------------- files */

/*
 * Close-to-open: with a shared metadata another mount may have changed the file since
 * the kernel cached its pages and size, so the pages go at an open and the attributes
 * are marked stale (a read past the cached size asks again). Not while another handle
 * of this mount has the file open for writing: the kernel leaves a buffered write's
 * pages up to date and unlocked before its WRITE reaches us, and pages dropped in that
 * moment could be read back old ahead of the WRITE and stay cached after write()
 * returned (op_init). A file written here and on another mount at the same time is
 * not coordinated anyway. Counts the handle in when it is for writing.
 */
static void keep_or_drop_pages(struct kelp_fs *fs, fuse_ino_t ino, struct open_file *f,
			       struct fuse_file_info *fi)
{
	bool shared = meta_shared(fs->meta);

	fi->keep_cache = !shared || file_writer_count(f) > 0;
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		file_count_writer(f, 1);
	if (shared && fs->session)
		fuse_lowlevel_notify_inval_inode(fs->session, ino, -1, 0);
}

/* The end of a handle of keep_or_drop_pages. */
static void release_handle(struct kelp_fs *fs, struct open_file *f, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		file_count_writer(f, -1);
	file_put(fs, f);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct open_file *f;

	if (cluster_away(req))
		return;
	{
		int rc = file_open(fs, ino, &f);

		if (rc < 0) {
			fuse_reply_err(req, -stale_if_gone(fs, rc));
			return;
		}
	}
	if (fi->flags & O_TRUNC) {
		/* libfuse turns on atomic O_TRUNC: the truncation is ours to do. */
		struct meta_attr in = {.size = 0};
		int rc = file_setattr(fs, f, &in, META_SET_SIZE | kill_flags(req, ino), NULL);

		if (rc < 0) {
			file_put(fs, f);
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	keep_or_drop_pages(fs, ino, f, fi);
	if (fuse_reply_open(req, fi) != 0)
		release_handle(fs, f, fi);
}

/*
 * open(O_CREAT) without O_EXCL of a name another mount created after this kernel looked
 * it up: the file is opened as if it had been there (what a local filesystem does),
 * when the caller may (root, or the owner with the permission bits the open needs;
 * anyone else keeps EEXIST rather than skip the kernel's permission check). O_TRUNC is
 * then the caller's to do, through the open file (file_setattr).
 */
static int open_existing(fuse_req_t req, fuse_ino_t parent, const char *name,
			 struct fuse_file_info *fi, struct meta_attr *a)
{
	struct kelp_fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int acc = fi->flags & O_ACCMODE, rc = meta_lookup(fs->meta, parent, name, a);
	uint32_t need = (acc != O_WRONLY ? S_IRUSR : 0) | (acc != O_RDONLY ? S_IWUSR : 0);

	if (rc < 0)
		return rc == -ENOENT ? -EEXIST : rc;
	if (S_ISDIR(a->mode))
		return -EISDIR;
	if (!S_ISREG(a->mode))
		return -EEXIST;
	if (ctx->uid != 0 && (ctx->uid != a->uid || (a->mode & need) != need))
		return -EEXIST;
	return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct meta_attr a;
	struct meta_hold hold;
	struct open_file *f;
	bool existed = false;
	int rc;

	if (cluster_away(req))
		return;
	rc = do_create(req, parent, name, (mode & 07777) | S_IFREG, 0, NULL, &a, &hold);
	if (rc == -EEXIST && !(fi->flags & O_EXCL) && meta_shared(fs->meta)) {
		rc = open_existing(req, parent, name, fi, &a);
		existed = rc == 0;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* Created: its hold was written with it; an existing file gets one now. */
	rc = existed ? file_open(fs, a.ino, &f) : file_open_held(fs, &hold, a.mode, &f);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (existed && (fi->flags & O_TRUNC)) {
		/* Buffered writes of this mount to it are cut as well (as op_open). */
		struct meta_attr in = {.size = 0};

		rc = file_setattr(fs, f, &in, META_SET_SIZE | kill_flags(req, a.ino), &a);
		if (rc < 0) {
			file_put(fs, f);
			fuse_reply_err(req, -rc);
			return;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	keep_or_drop_pages(fs, a.ino, f, fi);
	memset(&e, 0, sizeof(e));
	e.ino = a.ino;
	e.generation = meta_generation(fs_of(req)->meta);
	e.attr_timeout = fs_of(req)->opt.attr_timeout;
	e.entry_timeout = fs_of(req)->opt.entry_timeout;
	to_stat(fs, &a, &e.attr);
	lookup_ref(fs, a.ino);
	if (fuse_reply_create(req, &e, fi) != 0) {
		lookup_unref(fs, a.ino, 1);
		release_handle(fs, f, fi);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct open_file *f = (struct open_file *)(uintptr_t)fi->fh;
	uint8_t *buf;
	size_t got = 0;
	int rc;

	if (cluster_away(req))
		return;
	{
		/* Most reads lie in one cached chunk: replied from the cache, no copy. */
		const struct chunk_cache_entry *e = NULL;
		const uint8_t *data = NULL;

		rc = file_read_direct(fs, f, (uint64_t)off, size, &e, &data, &got);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		if (rc == 1) {
			struct fuse_bufvec bv = FUSE_BUFVEC_INIT(got);

			bv.buf[0].mem = (void *)data;
			fuse_reply_data(req, &bv, FUSE_BUF_NO_SPLICE);
			chunk_cache_put(fs->cache, e);
			if (fs->metrics)
				metric_add(fs->metrics->bytes_read, got);
			return;
		}
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = file_read(fs, f, (uint64_t)off, size, buf, &got);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		fuse_reply_buf(req, (const char *)buf, got);
		if (fs->metrics)
			metric_add(fs->metrics->bytes_read, got);
	}
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct open_file *f = (struct open_file *)(uintptr_t)fi->fh;
	int rc;

	if (cluster_away(req))
		return;
	rc = kill_privs(req, f, killpriv_request_kills());
	if (rc == 0)
		rc = file_write(fs, f, (uint64_t)off, buf, size);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		fuse_reply_write(req, size);
		if (fs->metrics)
			metric_add(fs->metrics->bytes_written, size);
	}
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);

	fuse_reply_err(req, -file_flush(fs, (struct open_file *)(uintptr_t)fi->fh, false));
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	struct open_file *f = (struct open_file *)(uintptr_t)fi->fh;
	int rc = file_flush(fs, f, false);

	release_handle(fs, f, fi);
	fuse_reply_err(req, -rc);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);

	fuse_reply_err(req, -file_flush(fs, (struct open_file *)(uintptr_t)fi->fh, true));
}

/* ---------------------------------------------------------------- directories */

struct dir_handle {
	char last_name[META_NAME_MAX + 1];
	off_t last_off; /* the offset after last_name */
};

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *d;

	if (cluster_away(req))
		return;
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0)
		free(d);
}

struct fill {
	fuse_req_t req;
	struct kelp_fs *fs;
	char *buf;
	size_t cap, len;
	off_t next_off; /* offset of the entry being added */
	off_t skip_to;	/* slow path: entries before this offset are skipped */
	struct dir_handle *d;
	bool full;
	bool plus;	/* READDIRPLUS: entries carry attributes and a lookup reference */
	uint64_t begun; /* plus: meta_reads_begin before the entries were read */
	uint64_t *refs; /* plus: the inodes given a reference, undone if the reply fails */
	size_t n_refs, cap_refs;
};

/* One more entry in the reply; 1 when it is full. */
static int add_entry(struct fill *fl, const char *name, const struct meta_attr *a)
{
	struct fuse_entry_param e;
	bool dot = !strcmp(name, ".") || !strcmp(name, "..");
	size_t need;

	fl->next_off++;
	if (fl->next_off <= fl->skip_to)
		return 0;
	memset(&e, 0, sizeof(e));
	if (fl->plus) {
		/* "." and "..": attributes only; the kernel takes no reference (ino 0). */
		to_stat(fl->fs, a, &e.attr);
		if (!dot) {
			e.ino = a->ino;
			e.generation = meta_generation(fl->fs->meta);
			e.attr_timeout = fl->fs->opt.attr_timeout;
			e.entry_timeout = fl->fs->opt.entry_timeout;
		}
		need = fuse_add_direntry_plus(fl->req, NULL, 0, name, NULL, 0);
	} else {
		e.attr.st_ino = a->ino;
		e.attr.st_mode = a->mode;
		need = fuse_add_direntry(fl->req, NULL, 0, name, NULL, 0);
	}
	if (fl->len + need > fl->cap) {
		fl->full = true;
		return 1;
	}
	if (fl->plus && e.ino) {
		if (fl->n_refs == fl->cap_refs) {
			size_t cap = fl->cap_refs ? fl->cap_refs * 2 : 64;
			uint64_t *p = realloc(fl->refs, cap * sizeof(*p));

			if (!p) {
				fl->full = true; /* the reply ends here */
				return 1;
			}
			fl->refs = p;
			fl->cap_refs = cap;
		}
		fl->refs[fl->n_refs++] = e.ino;
		lookup_ref(fl->fs, e.ino);
		meta_seen(fl->fs->meta, a);
		meta_note_attrs(fl->fs->meta, fl->begun, a, 0);
		fuse_add_direntry_plus(fl->req, fl->buf + fl->len, fl->cap - fl->len, name, &e,
				       fl->next_off);
	} else if (fl->plus) {
		fuse_add_direntry_plus(fl->req, fl->buf + fl->len, fl->cap - fl->len, name, &e,
				       fl->next_off);
	} else {
		fuse_add_direntry(fl->req, fl->buf + fl->len, fl->cap - fl->len, name, &e.attr,
				  fl->next_off);
	}
	fl->len += need;
	snprintf(fl->d->last_name, sizeof(fl->d->last_name), "%s", name);
	fl->d->last_off = fl->next_off;
	return 0;
}

static int fill_cb(void *ctx, const char *name, const struct meta_attr *a)
{
	return add_entry(ctx, name, a);
}

/*
 * READDIR and READDIRPLUS. The entries come with their attributes from the metadata
 * either way (one engine call per batch); with plus the kernel takes a lookup
 * reference on each entry and caches its name and attributes, so `ls -l`, `find` or
 * `grep -r` need no LOOKUP per name.
 */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct kelp_fs *fs = fs_of(req);
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	struct fill fl = {.req = req, .fs = fs, .cap = size, .d = d, .plus = plus};
	struct meta_attr self;
	const char *after = "";
	int rc;

	if (cluster_away(req))
		return;
	fl.buf = malloc(size ? size : 1);
	if (!fl.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fl.begun = meta_reads_begin(fs->meta);
	rc = meta_getattr(fs->meta, ino, &self);
	if (rc < 0) {
		free(fl.buf);
		fuse_reply_err(req, -rc);
		return;
	}
	/* "." and ".." are offsets 1 and 2; entries follow in name order. */
	if (off > 2 && off == d->last_off) {
		/* Continue after the last name returned (the usual case, O(1)). */
		after = d->last_name;
		fl.next_off = off;
	} else {
		fl.skip_to = off;
		if (add_entry(&fl, ".", &self) == 0) {
			struct meta_attr parent;

			if (meta_lookup(fs->meta, ino, "..", &parent) < 0)
				parent = self; /* removed meanwhile: its own parent */
			add_entry(&fl, "..", &parent);
		}
	}
	if (!fl.full)
		rc = meta_readdir(fs->meta, ino, after, fill_cb, &fl);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (fuse_reply_buf(req, fl.buf, fl.len) == 0)
		fl.n_refs = 0; /* the kernel has them */
	/* The kernel took no reference on entries it never received. */
	for (size_t i = 0; i < fl.n_refs; i++)
		lookup_unref(fs, fl.refs[i], 1);
	free(fl.refs);
	free(fl.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	free((void *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	fuse_reply_err(req, -meta_sync(fs_of(req)->meta));
}

/*
 * statfs: the size and the space available are those of the volume servers' disks;
 * used is what the cluster stores (its volume files, replicas included), so `df`
 * shows Size = the disks, Used = the cluster's data, Avail = free on the disks (other
 * files on those disks are the gap between them). Inodes cost no disk space (they are
 * metadata): IUsed is exact, IFree a large constant.
 */
static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct kelp_fs *fs = fs_of(req);
	struct statvfs st;
	uint64_t total, free_bytes, used, inodes = 0, bfree;

	if (cluster_away(req))
		return;
	fs_capacity(fs, &total, &free_bytes, &used);
	meta_inode_count(fs->meta, &inodes);
	bfree = total > used ? total - used : 0;
	if (bfree < free_bytes)
		bfree = free_bytes; /* f_bfree >= f_bavail */
	if (total < bfree)
		total = bfree;
	memset(&st, 0, sizeof(st));
	st.f_bsize = STAT_BLOCK_SIZE;
	st.f_frsize = STAT_BLOCK_SIZE;
	st.f_blocks = total / STAT_BLOCK_SIZE;
	st.f_bfree = bfree / STAT_BLOCK_SIZE;
	st.f_bavail = free_bytes / STAT_BLOCK_SIZE;
	st.f_files = inodes + 1000000000ull;
	st.f_ffree = 1000000000ull;
	st.f_favail = st.f_ffree;
	st.f_namemax = META_NAME_MAX;
	fuse_reply_statfs(req, &st);
}

/* ---------------------------------------------------------------- xattrs */

/*
 * SELinux labels are not stored. A kernel with SELinux answers security.selinux itself
 * and, labelling FUSE mounts by policy (genfscon), refuses to set it on them; without
 * SELinux nothing uses it, but `ls -l` asks for it on every entry it lists. Answering
 * EOPNOTSUPP (not ENODATA) tells ls that this filesystem has no labels: it stops asking
 * for the rest of the device, a FUSE round trip less per entry. A label stored before
 * (or loaded from a dump) is still read and removed as usual.
 */
static bool selinux_label(const char *name)
{
	return !strcmp(name, "security.selinux");
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	if (cluster_away(req))
		return;
	if (selinux_label(name)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	/* POSIX ACLs too: meta keeps the mode bits in step (and the kernel forgets the
	 * attributes it cached). */
	fuse_reply_err(req, -meta_setxattr(fs_of(req)->meta, ino, name, value, size, flags));
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct kelp_fs *fs = fs_of(req);
	bool cap = !strcmp(name, "security.capability"), stable = false;
	uint64_t stamp = 0, asked = 0;
	char *buf;
	int rc;

	if (cluster_away(req))
		return;
	/* asked before every write: answered from the open file when it is known; and
	 * for any name, what the attributes just given to the kernel say (ls -l) */
	if ((cap && file_no_capability(fs, ino)) || meta_xattr_absent(fs->meta, ino, name)) {
		fuse_reply_err(req, selinux_label(name) ? EOPNOTSUPP : ENODATA);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (cap) {
		stable = meta_change_stamp(fs->meta, ino, &stamp);
		asked = monotonic_ns();
	}
	rc = meta_getxattr(fs->meta, ino, name, buf, size);
	if (rc == -ENODATA && stable)
		file_note_no_capability(fs, ino, stamp, asked);
	if (rc == -ENODATA && selinux_label(name))
		rc = -EOPNOTSUPP;
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)rc);
	else
		fuse_reply_buf(req, buf, (size_t)rc);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf;
	int rc;

	if (cluster_away(req))
		return;
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = meta_listxattr(fs_of(req)->meta, ino, buf, size);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)rc);
	else
		fuse_reply_buf(req, buf, (size_t)rc);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (cluster_away(req))
		return;
	fuse_reply_err(req, -meta_removexattr(fs_of(req)->meta, ino, name));
}

/* ---------------------------------------------------------------- holes and copies */

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif

/*
 * fallocate and copy_file_range change data as a write does, but with
 * FUSE_HANDLE_KILLPRIV_V2 the kernel neither clears setuid and setgid for them (it
 * leaves that to us) nor says whether the caller has CAP_FSETID: root is taken to have
 * it, as it normally does.
 */
static int kill_privs_unasked(fuse_req_t req, struct open_file *f)
{
	return kill_privs(req, f, fuse_req_ctx(req)->uid != 0);
}

/*
 * fallocate: mode 0 and KEEP_SIZE only set the size (space is not reserved: blobs are
 * written with the data), PUNCH_HOLE and ZERO_RANGE make a hole in the chunk map (holes
 * read as zeros). Collapse and insert range would shift every interval after them:
 * EOPNOTSUPP.
 */
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	struct kelp_fs *fs = fs_of(req);
	bool punch = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
	int rc;

	if (cluster_away(req))
		return;
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE))) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	rc = kill_privs_unasked(req, (struct open_file *)(uintptr_t)fi->fh);
	if (rc == 0)
		rc = file_fallocate(fs, (struct open_file *)(uintptr_t)fi->fh, (uint64_t)offset,
				    (uint64_t)length, punch, !(mode & FALLOC_FL_KEEP_SIZE), NULL);
	fuse_reply_err(req, -rc);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	uint64_t pos = 0;
	int rc;

	if (cluster_away(req))
		return;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL); /* the kernel does the others itself */
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	rc = file_lseek(fs_of(req), (struct open_file *)(uintptr_t)fi->fh, (uint64_t)off,
			whence == SEEK_DATA, &pos);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_lseek(req, (off_t)pos);
}

/* At most this much per call: the reply's count is 32 bits (callers loop). */
#define COPY_MAX (1ull << 30)

/*
 * copy_file_range within the mount: no data moves, the destination's range names the
 * source's blob slices (meta_copy_range), at any alignment. (FICLONE / cp --reflink=
 * always never reach a FUSE filesystem: the kernel has no remap_file_range for FUSE
 * and answers EOPNOTSUPP itself; cp --reflink=auto and plain cp use copy_file_range.)
 */
static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct kelp_fs *fs = fs_of(req);
	uint64_t copied = 0;
	int rc;

	if (cluster_away(req))
		return;
	if (flags != 0 || off_in < 0 || off_out < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	rc = kill_privs_unasked(req, (struct open_file *)(uintptr_t)fi_out->fh);
	if (rc == 0)
		rc = file_copy_range(fs, (struct open_file *)(uintptr_t)fi_in->fh, (uint64_t)off_in,
				     (struct open_file *)(uintptr_t)fi_out->fh, (uint64_t)off_out,
				     len > COPY_MAX ? COPY_MAX : len, &copied, NULL);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_write(req, (size_t)copied);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Bigger writes mean fewer round trips; the kernel caps it at its own limit. */
	conn->max_write = 1024 * 1024;
	conn->max_readahead = 1024 * 1024;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
	/*
	 * Asynchronous direct I/O (io_submit) is done synchronously. The kernel drops the
	 * cached pages of a direct write's range before sending it, and once more when it
	 * completes, but with async DIO only before: a buffered read or readahead that ran
	 * meanwhile left the old bytes cached. Synchronously, the kernel drops them again
	 * after the write, as local filesystems do. (Dropping them from here before the
	 * reply can deadlock: the readahead holding a page may wait in the kernel's
	 * background queue behind the very writes not answered yet.)
	 */
	conn->want &= ~FUSE_CAP_ASYNC_DIO;
	/*
	 * A buffered write of whole pages leaves them in the page cache, up to date and
	 * unlocked, before its WRITE reaches us. Were the kernel to drop the file's pages
	 * in that moment (it does so whenever fresh attributes show another mtime, with
	 * FUSE_CAP_AUTO_INVAL_DATA, or another size), a page fault or readahead could
	 * read the old bytes from us ahead of the WRITE and keep them cached after write()
	 * returned. So the kernel never drops pages on attributes
	 * (FUSE_CAP_EXPLICIT_INVAL_DATA): with LMDB every change passes through this
	 * kernel, which keeps its cache right by itself; with a shared engine the pages of
	 * a file other mounts may have changed are dropped at open (keep_or_drop_pages).
	 */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA)
		conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
	/* File handles (open_by_handle_at, NFS): the kernel looks up "." and ".." of an
	 * inode it no longer caches; inode numbers and generations are stable. */
	if (conn->capable & FUSE_CAP_EXPORT_SUPPORT)
		conn->want |= FUSE_CAP_EXPORT_SUPPORT;
	/* POSIX ACLs: stored as the system.posix_acl_* xattrs, evaluated by the kernel
	 * (with default_permissions); the umask is ours to apply, since a directory's
	 * default ACL replaces it (meta_create_umask). */
	if ((conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK))
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
	else
		log_warn("mount: the kernel does not evaluate POSIX ACLs here; they are stored "
			 "but not enforced");
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .symlink = op_symlink,
    .link = op_link,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
    .copy_file_range = op_copy_file_range,
};

const struct fuse_lowlevel_ops *kelp_fuse_ops(void)
{
	return &ops;
}

struct stopper {
	struct fuse_session *se;
	struct kelp_fs *fs;
	const char *mountpoint;
	bool loop_done; /* (atomic) the session ended otherwise: just return */
};

/*
 * Waits for SIGINT/SIGTERM/SIGHUP (blocked in every thread by the caller) and ends
 * the session by unmounting: the kernel then fails the workers' reads, whichever
 * thread the signal would have hit.
 */
static void *stop_on_signal(void *arg)
{
	struct stopper *st = arg;
	sigset_t set;
	int sig = 0;

	stop_signal_set(&set);
	if (sigwait(&set, &sig) == 0 && !__atomic_load_n(&st->loop_done, __ATOMIC_ACQUIRE)) {
		struct stat sb;
		bool have_dev = stat(st->mountpoint, &sb) == 0;

		log_info("mount: signal %d, unmounting %s", sig, st->mountpoint);
		/* write() accepted these bytes: store them before going away. */
		fs_flush_all(st->fs);
		fuse_session_exit(st->se);
		/*
		 * Detach (open files would make a plain unmount fail), then abort the
		 * connection so the workers' reads of /dev/fuse return and the loop ends;
		 * programs still using the mount get ENOTCONN instead of hanging.
		 */
		fuse_session_unmount(st->se); /* lazy (MNT_DETACH) for root; frees its state */
		if (have_dev) {
			char path[128];
			int fd;

			snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort",
				 (unsigned)minor(sb.st_dev));
			fd = open(path, O_WRONLY | O_CLOEXEC);
			if (fd < 0 && errno == ENOENT &&
			    mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL) == 0)
				fd = open(path, O_WRONLY | O_CLOEXEC); /* fusectl was not mounted */
			if (fd >= 0) {
				if (write(fd, "1", 1) < 0) {
					/* the loop ends by the unmount alone */
				}
				close(fd);
			}
		}
		fs_release_thread_client(st->fs); /* the flush's, before fs is destroyed */
	}
	return NULL;
}

/* ---------------------------------------------------------------- trash */

struct trash_purger {
	struct kelp_fs *fs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

/* An entry purged from the trash behind the kernel's back: the kernel drops its name
 * (and, once unused, forgets the inode), then the inode is freed. */
static void trash_removed(void *ctx, uint64_t parent, const char *name, uint64_t ino, uint64_t gone)
{
	struct kelp_fs *fs = ctx;

	if (fs->session)
		fuse_lowlevel_notify_delete(fs->session, parent, ino, name, strlen(name));
	release_if_unused(fs, gone);
}

/* Purges the trash now and then: every 60 s, or every twentieth of the period when
 * that is shorter (a test's), but not more than once a second. */
static void *trash_loop(void *arg)
{
	struct trash_purger *p = arg;
	int64_t every = meta_trash_ns(p->fs->meta) / 20;

	if (every > 60000000000LL)
		every = 60000000000LL;
	if (every < 1000000000LL)
		every = 1000000000LL;
	pthread_mutex_lock(&p->lock);
	while (!p->done) {
		struct timespec until;
		int n;

		pthread_mutex_unlock(&p->lock);
		n = meta_trash_purge(p->fs->meta, meta_now_ns(), trash_removed, p->fs);
		if (n > 0) {
			log_info("mount: %d file(s) older than the trash period removed for good",
				 n);
			fs_kick_gc(p->fs);
		} else if (n < 0) {
			log_error("mount: purging the trash: %s (tried again later)", strerror(-n));
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += every / 1000000000LL;
		until.tv_nsec += every % 1000000000LL;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&p->lock);
		while (!p->done && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
			;
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/*
 * The kernel reads ahead on a FUSE mount at most its default of 128 KiB (max_readahead
 * in FUSE_INIT can only lower it), so a sequential reader cost one READ round trip per
 * 128 KiB. The mount's backing device info takes more from sysfs (root only; otherwise
 * the default stays). The device number comes from /proc/self/mountinfo: a stat of the
 * mount point would ask this very daemon, whose loop is not running yet.
 */
static void set_readahead(const char *mountpoint, unsigned kb)
{
	char real[PATH_MAX], line[4096], path[96];
	unsigned maj = 0, min = 0;
	bool found = false;
	FILE *f;

	if (!realpath(mountpoint, real) || !(f = fopen("/proc/self/mountinfo", "re")))
		return;
	while (fgets(line, sizeof(line), f)) {
		char mp[PATH_MAX], out[PATH_MAX], *fstype;
		unsigned a, b;
		size_t o = 0;

		/* id parent major:minor root mountpoint options ... - fstype source ... */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) != 3 ||
		    !(fstype = strstr(line, " - ")) || strncmp(fstype + 3, "fuse.kelp ", 10) != 0)
			continue;
		for (size_t i = 0; mp[i] && o + 1 < sizeof(out); i++) { /* \040 and friends */
			if (mp[i] == '\\' && mp[i + 1] >= '0' && mp[i + 1] <= '7' && mp[i + 2] &&
			    mp[i + 3]) {
				out[o++] = (char)((mp[i + 1] - '0') * 64 + (mp[i + 2] - '0') * 8 +
						  (mp[i + 3] - '0'));
				i += 3;
			} else {
				out[o++] = mp[i];
			}
		}
		out[o] = '\0';
		if (strcmp(out, real) == 0) {
			maj = a;
			min = b;
			found = true; /* the last one: a mount over an older one */
		}
	}
	fclose(f);
	if (!found)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	f = fopen(path, "we");
	if (!f || fprintf(f, "%u\n", kb) < 0 || fclose(f) != 0)
		log_debug("mount: cannot set %s (readahead stays at the kernel's default)", path);
	else
		log_debug("mount: readahead %u KiB (%s)", kb, path);
}

int kelp_fuse_run(struct kelp_fs *fs, const char *mountpoint, const char *fuse_opts, int threads,
		  void (*ready)(void *ctx), void *ctx)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	struct fuse_loop_config *cfg;
	struct stopper st = {0};
	pthread_t stopper_thread, purger_thread;
	struct trash_purger purger = {0};
	bool purging = false;
	char opts[1024];
	int rc = -EIO;

	snprintf(opts, sizeof(opts), "fsname=kelp,subtype=kelp,default_permissions%s%s",
		 fuse_opts && *fuse_opts ? "," : "", fuse_opts ? fuse_opts : "");
	if (fuse_opt_add_arg(&args, "kelp") || fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, opts))
		return -ENOMEM;
	{
		/* Locks across mounts with a shared engine (the kernel's own otherwise), and
		 * with -metricsPort every op timed. */
		static struct fuse_lowlevel_ops run_ops;

		run_ops = ops;
		if (meta_shared(fs->meta))
			locks_install(&run_ops, fs);
		se = fuse_session_new(&args, fs->metrics ? fuse_metrics_ops(&run_ops) : &run_ops,
				      sizeof(run_ops), fs);
	}
	fs->session = se;
	if (!se) {
		fuse_opt_free_args(&args);
		return -EINVAL;
	}
	if (fuse_session_mount(se, mountpoint) != 0) {
		log_error("mount: cannot mount on %s", mountpoint);
		goto out_destroy;
	}
	killpriv_install(se, fs);
	log_info("mount: kelp mounted on %s", mountpoint);
	set_readahead(mountpoint, READAHEAD_KB);
	st.se = se;
	st.fs = fs;
	st.mountpoint = mountpoint;
	if (pthread_create(&stopper_thread, NULL, stop_on_signal, &st) != 0) {
		fuse_session_unmount(se);
		goto out_destroy;
	}
	if (meta_trash_ns(fs->meta) > 0) {
		purger.fs = fs;
		pthread_mutex_init(&purger.lock, NULL);
		pthread_cond_init(&purger.cond, NULL);
		purging = pthread_create(&purger_thread, NULL, trash_loop, &purger) == 0;
	}
	if (ready)
		ready(ctx);
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_max_threads(cfg, (unsigned)(threads > 0 ? threads : 16));
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	rc = fuse_session_loop_mt(se, cfg) < 0 ? -EIO : 0;
	fuse_loop_cfg_destroy(cfg);
	/* Wake the signal thread (an unmount by fusermount3 -u, no signal): it returns.
	 * Not a cancel: one in the middle of its flush would lose what it holds. */
	__atomic_store_n(&st.loop_done, true, __ATOMIC_RELEASE);
	pthread_kill(stopper_thread, SIGHUP);
	pthread_join(stopper_thread, NULL);
	if (purging) {
		pthread_mutex_lock(&purger.lock);
		purger.done = true;
		pthread_cond_signal(&purger.cond);
		pthread_mutex_unlock(&purger.lock);
		pthread_join(purger_thread, NULL);
	}
	fuse_session_unmount(se); /* a no-op when the signal thread did it */
	log_info("mount: unmounted %s", mountpoint);
out_destroy:
	fs->session = NULL;
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return rc;
}
