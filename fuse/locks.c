#define FUSE_USE_VERSION 312

#include "fuse/locks.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "fuse/file.h"
#include "fuse/inomap.h"
#include "fuse/kv.h"

#define KEY_LEN 33 /* ino, kind, session, owner, start */
#define VAL_LEN 13 /* end, type, pid */

/* ---------------------------------------------------------------- the rules */

static void lock_key(uint8_t *k, uint64_t ino, char kind, const struct lock_range *l)
{
	be64(k, ino);
	k[8] = (uint8_t)kind;
	be64(k + 9, l->session);
	be64(k + 17, l->owner);
	be64(k + 25, l->start);
}

static int put_lock(struct kv_txn *t, uint64_t ino, char kind, const struct lock_range *l)
{
	uint8_t k[KEY_LEN], v[VAL_LEN];

	lock_key(k, ino, kind, l);
	be64(v, l->end);
	v[8] = l->type == F_WRLCK ? 'W' : 'R';
	v[9] = (uint8_t)(l->pid >> 24);
	v[10] = (uint8_t)(l->pid >> 16);
	v[11] = (uint8_t)(l->pid >> 8);
	v[12] = (uint8_t)l->pid;
	return kv_put(t, KV_LOCKS, k, KEY_LEN, v, VAL_LEN);
}

static int del_lock(struct kv_txn *t, uint64_t ino, char kind, const struct lock_range *l)
{
	uint8_t k[KEY_LEN];

	lock_key(k, ino, kind, l);
	return kv_del(t, KV_LOCKS, k, KEY_LEN);
}

struct lock_list {
	struct lock_range *l;
	char *kinds;
	int n, cap;
};

static int lock_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct lock_list *ll = ctx;
	struct lock_range *l;

	if (klen != KEY_LEN || vlen != VAL_LEN)
		return 0;
	if (ll->n == ll->cap) {
		int cap = ll->cap ? ll->cap * 2 : 16;
		void *a = realloc(ll->l, (size_t)cap * sizeof(*ll->l));

		if (!a)
			return -ENOMEM;
		ll->l = a;
		a = realloc(ll->kinds, (size_t)cap);
		if (!a)
			return -ENOMEM;
		ll->kinds = a;
		ll->cap = cap;
	}
	l = &ll->l[ll->n];
	ll->kinds[ll->n++] = (char)k[8];
	l->session = rd64(k + 9);
	l->owner = rd64(k + 17);
	l->start = rd64(k + 25);
	l->end = rd64(v);
	l->type = v[8] == 'W' ? F_WRLCK : F_RDLCK;
	l->pid = (uint32_t)v[9] << 24 | (uint32_t)v[10] << 16 | (uint32_t)v[11] << 8 | v[12];
	return 0;
}

/* Every lock of ino (of one kind, or both with kind 0). */
static int read_locks(struct kv_txn *t, uint64_t ino, char kind, struct lock_list *ll)
{
	uint8_t from[9], to[9];

	be64(from, ino);
	if (kind) {
		from[8] = (uint8_t)kind;
		memcpy(to, from, 8);
		to[8] = (uint8_t)(kind + 1);
		return kv_scan(t, KV_LOCKS, from, 9, to, 9, false, 0, lock_one, ll);
	}
	be64(to, ino + 1);
	return kv_scan(t, KV_LOCKS, from, 8, to, 8, false, 0, lock_one, ll);
}

static bool same_owner(const struct lock_range *a, const struct lock_range *b)
{
	return a->session == b->session && a->owner == b->owner;
}

static bool overlap(const struct lock_range *a, const struct lock_range *b)
{
	return a->start < b->end && b->start < a->end;
}

static bool conflicts(const struct lock_range *held, const struct lock_range *want)
{
	return !same_owner(held, want) && overlap(held, want) &&
	       (held->type == F_WRLCK || want->type == F_WRLCK);
}

struct set_ctx {
	uint64_t ino;
	char kind;
	const struct lock_range *want;
	struct lock_range conflict;
	bool conflicted;
};

static int set_tx(struct kv_txn *t, void *arg)
{
	struct set_ctx *c = arg;
	const struct lock_range *w = c->want;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, c->kind, &ll);

	c->conflicted = false;
	for (int i = 0; rc == 0 && w->type != F_UNLCK && i < ll.n; i++) {
		if (conflicts(&ll.l[i], w)) {
			c->conflict = ll.l[i];
			c->conflicted = true;
			goto out; /* nothing written: the commit is a no-op */
		}
	}
	/* The owner's own ranges under the new one go; what sticks out stays. */
	for (int i = 0; rc == 0 && i < ll.n; i++) {
		struct lock_range old = ll.l[i], part;

		if (!same_owner(&old, w) || !overlap(&old, w))
			continue;
		rc = del_lock(t, c->ino, c->kind, &old);
		if (rc == 0 && old.start < w->start) {
			part = old;
			part.end = w->start;
			rc = put_lock(t, c->ino, c->kind, &part);
		}
		if (rc == 0 && old.end > w->end) {
			part = old;
			part.start = w->end;
			rc = put_lock(t, c->ino, c->kind, &part);
		}
	}
	if (rc == 0 && w->type != F_UNLCK)
		rc = put_lock(t, c->ino, c->kind, w);
out:
	free(ll.l);
	free(ll.kinds);
	return rc;
}

int lock_set(struct meta *m, uint64_t ino, char kind, const struct lock_range *l,
	     struct lock_range *conflict)
{
	struct set_ctx c = {.ino = ino, .kind = kind, .want = l};
	int rc;

	if (l->start >= l->end)
		return -EINVAL;
	rc = meta_run(m, true, set_tx, &c);
	if (rc == 0 && c.conflicted) {
		if (conflict)
			*conflict = c.conflict;
		return -EAGAIN;
	}
	return rc;
}

static int test_tx(struct kv_txn *t, void *arg)
{
	struct set_ctx *c = arg;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, c->kind, &ll);

	c->conflicted = false;
	for (int i = 0; rc == 0 && i < ll.n && !c->conflicted; i++) {
		if (conflicts(&ll.l[i], c->want)) {
			c->conflict = ll.l[i];
			c->conflicted = true;
		}
	}
	free(ll.l);
	free(ll.kinds);
	return rc;
}

int lock_test(struct meta *m, uint64_t ino, char kind, const struct lock_range *l,
	      struct lock_range *out)
{
	struct set_ctx c = {.ino = ino, .kind = kind, .want = l};
	int rc = meta_run(m, false, test_tx, &c);

	if (rc < 0)
		return rc;
	if (c.conflicted)
		*out = c.conflict;
	return c.conflicted ? 1 : 0;
}

struct release_ctx {
	uint64_t ino, session, owner;
	char kind;
	int left;
};

static int release_tx(struct kv_txn *t, void *arg)
{
	struct release_ctx *c = arg;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, 0, &ll);

	c->left = 0;
	for (int i = 0; rc == 0 && i < ll.n; i++) {
		const struct lock_range *l = &ll.l[i];

		if (l->session != c->session)
			continue;
		if (l->owner == c->owner && (!c->kind || ll.kinds[i] == c->kind))
			rc = del_lock(t, c->ino, ll.kinds[i], l);
		else
			c->left++;
	}
	free(ll.l);
	free(ll.kinds);
	return rc;
}

int lock_release_owner(struct meta *m, uint64_t ino, char kind, uint64_t session, uint64_t owner)
{
	struct release_ctx c = {.ino = ino, .session = session, .owner = owner, .kind = kind};
	int rc = meta_run(m, true, release_tx, &c);

	return rc < 0 ? rc : c.left;
}

/* ---------------------------------------------------------------- FUSE ops */

static struct kelp_fs *lk_fs;
static void (*next_flush)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void (*next_release)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
/* Files this mount has taken locks on (so a close without locks costs nothing). */
static pthread_mutex_t locked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inomap locked;

static void note_locked(uint64_t ino, bool any)
{
	pthread_mutex_lock(&locked_lock);
	inomap_set(&locked, ino, any ? 1 : 0);
	pthread_mutex_unlock(&locked_lock);
}

static bool has_locked(uint64_t ino)
{
	bool r;

	pthread_mutex_lock(&locked_lock);
	r = inomap_get(&locked, ino) > 0;
	pthread_mutex_unlock(&locked_lock);
	return r;
}

/* Before a lock goes: this mount's buffered writes to the file are stored. */
static int flush_file(uint64_t ino)
{
	struct open_file *f = file_find(lk_fs, ino);
	int rc = 0;

	if (f) {
		rc = file_flush(lk_fs, f, false);
		file_put(lk_fs, f);
	}
	return rc;
}

/* After a lock is taken: what the kernel cached of the file may be older. */
static void drop_cache(uint64_t ino)
{
	if (lk_fs->session)
		fuse_lowlevel_notify_inval_inode(lk_fs->session, ino, 0, 0);
}

static void to_range(const struct flock *fl, struct fuse_file_info *fi, struct lock_range *l)
{
	memset(l, 0, sizeof(*l));
	l->session = meta_session_id(lk_fs->meta);
	l->owner = fi->lock_owner;
	l->start = (uint64_t)fl->l_start;
	l->end = fl->l_len <= 0 ? LOCK_END_MAX : (uint64_t)fl->l_start + (uint64_t)fl->l_len;
	l->type = fl->l_type;
	l->pid = (uint32_t)fl->l_pid;
}

/*
 * Sets l, waiting while another owner holds a conflicting lock when wait (polling the
 * database, 10 ms doubling to 250 ms; EINTR once the caller is interrupted).
 */
static int set_waiting(fuse_req_t req, uint64_t ino, char kind, const struct lock_range *l,
		       bool wait)
{
	unsigned pause_ms = 10;
	int rc;

	if (l->type == F_UNLCK) {
		rc = flush_file(ino);
		if (rc < 0)
			log_warn("mount: storing inode %" PRIu64 " before an unlock failed: %s",
				 ino, strerror(-rc));
	}
	for (;;) {
		rc = lock_set(lk_fs->meta, ino, kind, l, NULL);
		if (rc != -EAGAIN || !wait)
			break;
		if (fuse_req_interrupted(req))
			return -EINTR;
		usleep(pause_ms * 1000);
		pause_ms = pause_ms * 2 > 250 ? 250 : pause_ms * 2;
	}
	if (rc == 0 && l->type != F_UNLCK) {
		note_locked(ino, true);
		drop_cache(ino);
	}
	return rc;
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	struct lock_range want, held;
	int rc;

	to_range(lock, fi, &want);
	rc = lock_test(lk_fs->meta, ino, LOCK_KIND_POSIX, &want, &held);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	if (rc == 0) {
		lock->l_type = F_UNLCK;
	} else {
		lock->l_type = (short)held.type;
		lock->l_whence = SEEK_SET;
		lock->l_start = (off_t)held.start;
		lock->l_len = held.end == LOCK_END_MAX ? 0 : (off_t)(held.end - held.start);
		lock->l_pid = (pid_t)held.pid;
	}
	fuse_reply_lock(req, lock);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
		     int sleep)
{
	struct lock_range want;

	to_range(lock, fi, &want);
	if (want.start >= want.end) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_err(req, -set_waiting(req, ino, LOCK_KIND_POSIX, &want, sleep != 0));
}

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct lock_range want = {0};

	want.session = meta_session_id(lk_fs->meta);
	want.owner = fi->lock_owner;
	want.start = 0;
	want.end = LOCK_END_MAX;
	want.pid = (uint32_t)fuse_req_ctx(req)->pid;
	switch (op & ~LOCK_NB) {
	case LOCK_SH:
		want.type = F_RDLCK;
		break;
	case LOCK_EX:
		want.type = F_WRLCK;
		break;
	case LOCK_UN:
		want.type = F_UNLCK;
		break;
	default:
		fuse_reply_err(req, EINVAL);
		return;
	}
	{
		int rc = set_waiting(req, ino, LOCK_KIND_FLOCK, &want, !(op & LOCK_NB));

		fuse_reply_err(req, rc == -EAGAIN ? EWOULDBLOCK : -rc);
	}
}

/* A closing owner's locks of one kind go (before the flush/release itself runs). */
static void release_owner(uint64_t ino, char kind, uint64_t owner)
{
	int left;

	if (!has_locked(ino))
		return;
	left = lock_release_owner(lk_fs->meta, ino, kind, meta_session_id(lk_fs->meta), owner);
	if (left < 0)
		log_warn("mount: releasing the locks of inode %" PRIu64 " failed: %s (they go "
			 "with this mount's session)",
			 ino, strerror(-left));
	else if (left == 0)
		note_locked(ino, false);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* close(): the process's POSIX locks on the file go; its writes are stored first
	 * (by the flush), so they are there before another owner can lock. */
	if (has_locked(ino)) {
		int rc = flush_file(ino);

		if (rc < 0)
			log_warn("mount: storing inode %" PRIu64 " before an unlock failed: %s",
				 ino, strerror(-rc));
		release_owner(ino, LOCK_KIND_POSIX, fi->lock_owner);
	}
	next_flush(req, ino, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fi->flock_release && has_locked(ino)) {
		int rc = flush_file(ino);

		if (rc < 0)
			log_warn("mount: storing inode %" PRIu64 " before an unlock failed: %s",
				 ino, strerror(-rc));
		release_owner(ino, LOCK_KIND_FLOCK, fi->lock_owner);
	}
	next_release(req, ino, fi);
}

void locks_install(struct fuse_lowlevel_ops *ops, struct kelp_fs *fs)
{
	lk_fs = fs;
	inomap_init(&locked);
	next_flush = ops->flush;
	next_release = ops->release;
	ops->getlk = op_getlk;
	ops->setlk = op_setlk;
	ops->flock = op_flock;
	ops->flush = op_flush;
	ops->release = op_release;
}
