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

#define KEY_LEN	     33 /* ino, kind, session, owner, start */
#define VAL_LEN	     13 /* end, type, pid */
#define MARK_KEY_LEN 9	/* ino, META_LOCK_MARK */
#define MARK_VAL_LEN 16 /* session, serial */
#define WAIT_KEY_LEN 41 /* all-ones, 'W', waiter session, owner, blocker session, owner */
#define WAIT_VAL_LEN 26 /* ino, kind, start, end, type: the range waited for */
#define WAIT_KIND    'W'
#define MAX_WAITS    4096 /* wait rows read for the deadlock check (beyond: not checked) */

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

static int put_mark(struct kv_txn *t, uint64_t ino, const struct lock_marker *mk)
{
	uint8_t k[MARK_KEY_LEN], v[MARK_VAL_LEN];

	be64(k, ino);
	k[8] = META_LOCK_MARK;
	be64(v, mk->session);
	be64(v + 8, mk->serial);
	return kv_put(t, KV_LOCKS, k, MARK_KEY_LEN, v, MARK_VAL_LEN);
}

struct lock_list {
	struct lock_range *l;
	char *kinds;
	int n, cap;
	char kind; /* only this kind (0: both) */
	struct lock_marker mark;
};

static int lock_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct lock_list *ll = ctx;
	struct lock_range *l;

	if (klen == MARK_KEY_LEN && k[8] == META_LOCK_MARK && vlen == MARK_VAL_LEN) {
		ll->mark.session = rd64(v);
		ll->mark.serial = rd64(v + 8);
		return 0;
	}
	if (klen != KEY_LEN || vlen != VAL_LEN || (ll->kind && k[8] != (uint8_t)ll->kind))
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

/* Every lock of ino (of one kind, or both with kind 0) and its change marker: one scan
 * of the file's rows (one round trip). */
static int read_locks(struct kv_txn *t, uint64_t ino, char kind, struct lock_list *ll)
{
	uint8_t from[8], to[8];

	ll->kind = kind;
	be64(from, ino);
	be64(to, ino + 1);
	return kv_scan(t, KV_LOCKS, from, 8, to, 8, false, 0, lock_one, ll);
}

static void free_locks(struct lock_list *ll)
{
	free(ll->l);
	free(ll->kinds);
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

bool lock_marker_eq(const struct lock_marker *a, const struct lock_marker *b)
{
	return a->session == b->session && a->serial == b->serial;
}

/* ---------------------------------------------------------------- waits (deadlocks) */

/*
 * An F_SETLKW that must wait records, for each owner holding a conflicting lock, a row
 * waiter -> blocker (with the range it wants). Before it waits, it looks for a path of
 * such rows from one of its blockers back to itself: that is a deadlock, and the one
 * that would close the circle gets EDEADLK (as Linux does for local POSIX locks). Every
 * edge of a circle found is checked against the locks table in the same transaction
 * (its waiter may have got the lock since its last look), so a deadlock reported is one
 * of this snapshot. Two waiters closing one circle at once both read each other's rows
 * and write their own: serializable isolation lets only one of them commit first, and
 * the other, run again, sees the circle.
 */
struct wait_edge {
	struct lock_owner from, to;
	uint64_t ino;
	char kind;
	struct lock_range want; /* start, end, type (owner: from) */
	bool dead;		/* found stale: not followed */
};

struct wait_graph {
	struct wait_edge *e;
	int n, cap;
	bool truncated;
};

static bool owner_eq(const struct lock_owner *a, const struct lock_owner *b)
{
	return a->session == b->session && a->owner == b->owner;
}

static void wait_key(uint8_t *k, const struct lock_owner *from, const struct lock_owner *to)
{
	memset(k, 0xff, 8);
	k[8] = WAIT_KIND;
	be64(k + 9, from->session);
	be64(k + 17, from->owner);
	be64(k + 25, to->session);
	be64(k + 33, to->owner);
}

static int edge_add(struct wait_graph *g, const struct wait_edge *e)
{
	if (g->n == g->cap) {
		int cap = g->cap ? g->cap * 2 : 16;
		void *a = realloc(g->e, (size_t)cap * sizeof(*g->e));

		if (!a)
			return -ENOMEM;
		g->e = a;
		g->cap = cap;
	}
	g->e[g->n++] = *e;
	return 0;
}

static int wait_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct wait_graph *g = ctx;
	struct wait_edge e = {0};

	if (klen != WAIT_KEY_LEN || vlen != WAIT_VAL_LEN)
		return 0;
	if (g->n >= MAX_WAITS) {
		g->truncated = true;
		return 1;
	}
	e.from.session = rd64(k + 9);
	e.from.owner = rd64(k + 17);
	e.to.session = rd64(k + 25);
	e.to.owner = rd64(k + 33);
	e.ino = rd64(v);
	e.kind = (char)v[8];
	e.want.session = e.from.session;
	e.want.owner = e.from.owner;
	e.want.start = rd64(v + 9);
	e.want.end = rd64(v + 17);
	e.want.type = v[25] == 'W' ? F_WRLCK : F_RDLCK;
	return edge_add(g, &e);
}

static int read_waits(struct kv_txn *t, struct wait_graph *g)
{
	uint8_t from[9], to[9];
	int rc;

	memset(from, 0xff, 8);
	from[8] = WAIT_KIND;
	memcpy(to, from, 8);
	to[8] = WAIT_KIND + 1;
	rc = kv_scan(t, KV_LOCKS, from, 9, to, 9, false, MAX_WAITS + 1, wait_one, g);
	return rc > 0 ? 0 : rc;
}

static int put_wait(struct kv_txn *t, const struct lock_owner *from, const struct lock_owner *to,
		    uint64_t ino, char kind, const struct lock_range *want)
{
	uint8_t k[WAIT_KEY_LEN], v[WAIT_VAL_LEN];

	wait_key(k, from, to);
	be64(v, ino);
	v[8] = (uint8_t)kind;
	be64(v + 9, want->start);
	be64(v + 17, want->end);
	v[25] = want->type == F_WRLCK ? 'W' : 'R';
	return kv_put(t, KV_LOCKS, k, WAIT_KEY_LEN, v, WAIT_VAL_LEN);
}

static int del_waits(struct kv_txn *t, const struct lock_owner *from, const struct lock_owner *to,
		     int n)
{
	int rc = 0;

	for (int i = 0; rc == 0 && i < n; i++) {
		uint8_t k[WAIT_KEY_LEN];

		wait_key(k, from, &to[i]);
		rc = kv_del(t, KV_LOCKS, k, WAIT_KEY_LEN);
	}
	return rc;
}

/* Does edge e still hold: its blocker has a lock conflicting with what its waiter wants? */
static int edge_live(struct kv_txn *t, const struct wait_edge *e, bool *live)
{
	struct lock_list ll = {0};
	int rc = read_locks(t, e->ino, e->kind, &ll);

	*live = false;
	for (int i = 0; rc == 0 && i < ll.n && !*live; i++)
		*live = ll.l[i].session == e->to.session && ll.l[i].owner == e->to.owner &&
			conflicts(&ll.l[i], &e->want);
	free_locks(&ll);
	return rc;
}

/*
 * A circle through me in g (breadth first from me, so the shortest): its edges are
 * checked (edge_live; mine are fresh), a stale one is marked dead and the search runs
 * again. *found when a circle of live edges exists.
 */
static int find_circle(struct kv_txn *t, struct wait_graph *g, const struct lock_owner *me,
		       bool *found)
{
	int *via, *queue, rc = 0;

	*found = false;
	if (g->n == 0)
		return 0;
	via = malloc((size_t)g->n * sizeof(int));
	queue = malloc((size_t)g->n * sizeof(int));
	if (!via || !queue) {
		free(via);
		free(queue);
		return -ENOMEM;
	}
	for (int round = 0; round <= g->n && rc == 0 && !*found; round++) {
		/* via[i]: the edge by which edge i's waiter was reached (-1: from me) */
		int head = 0, tail = 0, closing = -1;
		bool stale = false;

		for (int i = 0; i < g->n; i++)
			via[i] = -2; /* not reached */
		for (int i = 0; i < g->n; i++) {
			if (!g->e[i].dead && owner_eq(&g->e[i].from, me)) {
				via[i] = -1;
				queue[tail++] = i;
			}
		}
		while (head < tail && closing < 0) {
			int cur = queue[head++];

			for (int i = 0; i < g->n; i++) {
				if (g->e[i].dead || via[i] != -2 ||
				    !owner_eq(&g->e[i].from, &g->e[cur].to))
					continue;
				via[i] = cur;
				if (owner_eq(&g->e[i].to, me)) {
					closing = i;
					break;
				}
				queue[tail++] = i;
			}
			if (closing < 0 && owner_eq(&g->e[cur].to, me))
				closing = cur; /* I wait for myself (cannot happen: same owner) */
		}
		if (closing < 0)
			break;
		for (int i = closing; i >= 0 && rc == 0; i = via[i]) {
			bool live = true;

			if (!owner_eq(&g->e[i].from, me))
				rc = edge_live(t, &g->e[i], &live);
			if (rc == 0 && !live) {
				g->e[i].dead = true;
				stale = true;
			}
		}
		if (rc == 0 && !stale)
			*found = true;
	}
	free(via);
	free(queue);
	return rc;
}

struct set_ctx {
	uint64_t ino;
	char kind;
	const struct lock_range *want;
	/* the change marker to write when publish (any lock change may announce one) */
	bool publish;
	struct lock_marker mark;
	/* deadlock detection: the blockers recorded by earlier rounds of this wait */
	bool detect;
	const struct lock_owner *prev;
	int n_prev;
	/* results */
	struct lock_marker before; /* the marker found */
	struct lock_range conflict;
	bool conflicted, deadlock;
	struct lock_owner blockers[LOCK_MAX_BLOCKERS];
	int n_blockers; /* the wait rows now recorded (detect) */
};

static int cmp_owner(const void *a, const void *b)
{
	const struct lock_owner *x = a, *y = b;

	if (x->session != y->session)
		return x->session < y->session ? -1 : 1;
	return x->owner < y->owner ? -1 : x->owner > y->owner;
}

/* A conflicting owner, once (the list is small: linear). */
static void add_blocker(struct set_ctx *c, const struct lock_range *l)
{
	struct lock_owner o = {l->session, l->owner};

	for (int i = 0; i < c->n_blockers; i++)
		if (owner_eq(&c->blockers[i], &o))
			return;
	if (c->n_blockers < LOCK_MAX_BLOCKERS)
		c->blockers[c->n_blockers++] = o;
}

static bool has_blocker(const struct set_ctx *c, const struct lock_owner *o)
{
	for (int i = 0; i < c->n_blockers; i++)
		if (owner_eq(&c->blockers[i], o))
			return true;
	return false;
}

/*
 * The conflicted F_SETLKW: the circle check over every wait row (mine replaced by the
 * new ones), then my rows brought up to date (rows of mine left by an earlier wait that
 * could not remove them go too). Nothing is written when they are unchanged.
 */
static int record_wait(struct kv_txn *t, struct set_ctx *c)
{
	struct lock_owner me = {c->want->session, c->want->owner};
	struct wait_graph g = {0};
	bool found = false;
	int n_old, rc;

	qsort(c->blockers, (size_t)c->n_blockers, sizeof(c->blockers[0]), cmp_owner);
	rc = read_waits(t, &g);
	n_old = g.n;
	for (int i = 0; i < n_old; i++)
		if (owner_eq(&g.e[i].from, &me))
			g.e[i].dead = true; /* as they are about to be: the new ones below */
	for (int i = 0; rc == 0 && i < c->n_blockers; i++) {
		struct wait_edge e = {.from = me,
				      .to = c->blockers[i],
				      .ino = c->ino,
				      .kind = c->kind,
				      .want = *c->want};

		rc = edge_add(&g, &e);
	}
	if (rc == 0 && !g.truncated)
		rc = find_circle(t, &g, &me, &found);
	if (found) {
		/* This request stops waiting: its rows go. (Two waiters cannot both close
		 * one circle: the second to write its rows read the first's, whose
		 * transaction had read the second's, so one of them is run again.) */
		c->deadlock = true;
		c->n_blockers = 0;
	}
	/* My rows in the snapshot that are not wanted any more go; new ones are added. */
	for (int i = 0; rc == 0 && i < n_old; i++) {
		bool keep = false;

		if (!owner_eq(&g.e[i].from, &me))
			continue;
		keep = has_blocker(c, &g.e[i].to) && g.e[i].ino == c->ino &&
		       g.e[i].kind == c->kind && g.e[i].want.start == c->want->start &&
		       g.e[i].want.end == c->want->end && g.e[i].want.type == c->want->type;
		if (keep)
			g.e[i].dead = false; /* marks "already there" for the loop below */
		else
			rc = del_waits(t, &me, &g.e[i].to, 1);
	}
	for (int i = 0; rc == 0 && i < c->n_blockers; i++) {
		bool there = false;

		for (int j = 0; j < n_old && !there; j++)
			there = !g.e[j].dead && owner_eq(&g.e[j].from, &me) &&
				owner_eq(&g.e[j].to, &c->blockers[i]);
		if (!there)
			rc = put_wait(t, &me, &c->blockers[i], c->ino, c->kind, c->want);
	}
	free(g.e);
	return rc;
}

static int set_tx(struct kv_txn *t, void *arg)
{
	struct set_ctx *c = arg;
	const struct lock_range *w = c->want;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, c->kind, &ll);

	c->conflicted = false;
	c->deadlock = false;
	c->n_blockers = 0;
	c->before = ll.mark;
	for (int i = 0; rc == 0 && w->type != F_UNLCK && i < ll.n; i++) {
		if (conflicts(&ll.l[i], w)) {
			if (!c->conflicted)
				c->conflict = ll.l[i];
			c->conflicted = true;
			if (!c->detect)
				break;
			add_blocker(c, &ll.l[i]);
		}
	}
	if (rc == 0 && c->conflicted) {
		/* nothing changes but the wait rows: without them, the commit writes nothing */
		if (c->detect)
			rc = record_wait(t, c);
		goto out;
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
	if (rc == 0 && c->n_prev > 0) {
		struct lock_owner me = {w->session, w->owner};

		rc = del_waits(t, &me, c->prev, c->n_prev); /* no longer waiting */
	}
	if (rc == 0 && c->publish)
		rc = put_mark(t, c->ino, &c->mark);
out:
	free_locks(&ll);
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

int lock_change(struct meta *m, uint64_t ino, char kind, struct lock_request *r)
{
	struct set_ctx c = {.ino = ino,
			    .kind = kind,
			    .want = &r->want,
			    .publish = r->publish,
			    .mark = r->mark,
			    .detect = r->detect && kind == LOCK_KIND_POSIX,
			    .prev = r->waiting,
			    .n_prev = r->n_waiting};
	int rc;

	if (r->want.start >= r->want.end)
		return -EINVAL;
	rc = meta_run(m, true, set_tx, &c);
	if (rc < 0)
		return rc;
	r->before = c.before;
	if (c.deadlock) {
		r->n_waiting = 0;
		return -EDEADLK;
	}
	if (c.conflicted) {
		r->conflict = c.conflict;
		if (c.detect) {
			memcpy(r->waiting, c.blockers,
			       (size_t)c.n_blockers * sizeof(c.blockers[0]));
			r->n_waiting = c.n_blockers;
		}
		return -EAGAIN;
	}
	r->n_waiting = 0;
	return 0;
}

struct unwait_ctx {
	struct lock_owner me;
	const struct lock_owner *prev;
	int n;
};

static int unwait_tx(struct kv_txn *t, void *arg)
{
	struct unwait_ctx *c = arg;

	return del_waits(t, &c->me, c->prev, c->n);
}

int lock_unwait(struct meta *m, struct lock_request *r)
{
	struct unwait_ctx c = {{r->want.session, r->want.owner}, r->waiting, r->n_waiting};
	int rc = r->n_waiting > 0 ? meta_run(m, true, unwait_tx, &c) : 0;

	if (rc == 0)
		r->n_waiting = 0;
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
	free_locks(&ll);
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
	const struct lock_marker *mark; /* to write, or NULL */
	struct lock_marker before;
	int left;
};

static int release_tx(struct kv_txn *t, void *arg)
{
	struct release_ctx *c = arg;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, 0, &ll);

	c->left = 0;
	c->before = ll.mark;
	for (int i = 0; rc == 0 && i < ll.n; i++) {
		const struct lock_range *l = &ll.l[i];

		if (l->session != c->session)
			continue;
		if (l->owner == c->owner && (!c->kind || ll.kinds[i] == c->kind))
			rc = del_lock(t, c->ino, ll.kinds[i], l);
		else
			c->left++;
	}
	if (rc == 0 && c->mark)
		rc = put_mark(t, c->ino, c->mark);
	free_locks(&ll);
	return rc;
}

int lock_release(struct meta *m, uint64_t ino, char kind, uint64_t session, uint64_t owner,
		 const struct lock_marker *publish, struct lock_marker *before)
{
	struct release_ctx c = {
	    .ino = ino, .session = session, .owner = owner, .kind = kind, .mark = publish};
	int rc = meta_run(m, true, release_tx, &c);

	if (rc == 0 && before)
		*before = c.before;
	return rc < 0 ? rc : c.left;
}

int lock_release_owner(struct meta *m, uint64_t ino, char kind, uint64_t session, uint64_t owner)
{
	return lock_release(m, ino, kind, session, owner, NULL, NULL);
}

struct marker_ctx {
	uint64_t ino;
	struct lock_marker mark;
};

static int marker_tx(struct kv_txn *t, void *arg)
{
	struct marker_ctx *c = arg;
	struct lock_list ll = {0};
	int rc = read_locks(t, c->ino, 0, &ll);

	c->mark = ll.mark;
	free_locks(&ll);
	return rc;
}

int lock_marker_get(struct meta *m, uint64_t ino, struct lock_marker *out)
{
	struct marker_ctx c = {.ino = ino};
	int rc = meta_run(m, false, marker_tx, &c);

	*out = c.mark;
	return rc;
}

/* ---------------------------------------------------------------- FUSE ops */

static struct kelp_fs *lk_fs;
static void (*next_flush)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
static void (*next_release)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
/* Files this mount has taken locks on (so a close without locks costs nothing). */
static pthread_mutex_t locked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct inomap locked;

/*
 * What this mount knows of a file's data against the other mounts (see "Data under
 * locks" in fuse/locks.h): `seen` is a change marker such that no other mount has
 * announced a change since this kernel's cached pages of the file were last dropped
 * (or since this mount announced its own, its kernel being right about its own
 * writes); `published` is the stamp (file_changes) of this mount's last change that
 * it announced. Forgetting an entry is always safe: it costs one drop and one
 * announcement more.
 */
struct file_view {
	uint64_t ino;
	struct lock_marker seen;
	bool known;
	uint64_t published;
	struct file_view *next;
};

#define VIEW_BUCKETS 256
static pthread_mutex_t views_lock = PTHREAD_MUTEX_INITIALIZER;
static struct file_view *views[VIEW_BUCKETS];
static uint64_t mark_serial; /* atomic: the serial of this mount's last marker */

/* The view of ino (created when create; NULL if absent or out of memory). views_lock. */
static struct file_view *view_of(uint64_t ino, bool create)
{
	struct file_view **b = &views[ino % VIEW_BUCKETS], *v;

	for (v = *b; v && v->ino != ino; v = v->next)
		;
	if (!v && create && (v = calloc(1, sizeof(*v))) != NULL) {
		v->ino = ino;
		v->next = *b;
		*b = v;
	}
	return v;
}

static void view_forget(uint64_t ino)
{
	pthread_mutex_lock(&views_lock);
	for (struct file_view **p = &views[ino % VIEW_BUCKETS]; *p; p = &(*p)->next) {
		if ((*p)->ino == ino) {
			struct file_view *v = *p;

			*p = v->next;
			free(v);
			break;
		}
	}
	pthread_mutex_unlock(&views_lock);
}

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

/*
 * Before a lock change: this mount's buffered writes to the file are stored (only when
 * there are any), and whether it changed the file since it last announced a change
 * (then *publish, with the marker to write and the stamp it covers).
 */
static void prepare(uint64_t ino, bool *publish, struct lock_marker *mark, uint64_t *stamp)
{
	struct open_file *f = file_find(lk_fs, ino);
	bool pending = false;
	struct file_view *v;

	*stamp = 0;
	if (f) {
		*stamp = file_changes(f, &pending);
		if (pending) {
			int rc = file_flush(lk_fs, f, false);

			if (rc < 0)
				log_warn("mount: storing inode %" PRIu64
					 " before a lock change failed: %s",
					 ino, strerror(-rc));
		}
		file_put(lk_fs, f);
	}
	pthread_mutex_lock(&views_lock);
	v = view_of(ino, false);
	*publish = *stamp > (v ? v->published : 0);
	pthread_mutex_unlock(&views_lock);
	mark->session = meta_session_id(lk_fs->meta);
	mark->serial = __atomic_add_fetch(&mark_serial, 1, __ATOMIC_RELAXED);
}

/*
 * After a lock change committed: before is the marker the transaction found, published
 * whether it wrote mark. Returns whether the kernel's cache of the file must go (taking
 * a lock when another mount announced a change since `seen`); the caller drops it, then
 * calls settle() so that no other thread skips its drop before it is done.
 */
static bool must_drop(uint64_t ino, bool taking, const struct lock_marker *before, bool published,
		      const struct lock_marker *mark, uint64_t stamp)
{
	struct file_view *v;
	bool drop;

	pthread_mutex_lock(&views_lock);
	v = view_of(ino, true);
	drop = taking && (!v || !v->known || !lock_marker_eq(&v->seen, before));
	if (v && published && stamp > v->published)
		v->published = stamp;
	/* Up to date (nothing announced by others since): it stays so with our own mark. */
	if (v && !drop && v->known && lock_marker_eq(&v->seen, before))
		v->seen = published ? *mark : *before;
	pthread_mutex_unlock(&views_lock);
	return drop;
}

static void settle(uint64_t ino, const struct lock_marker *now)
{
	struct file_view *v;

	pthread_mutex_lock(&views_lock);
	v = view_of(ino, true);
	if (v) {
		v->seen = *now;
		v->known = true;
	}
	pthread_mutex_unlock(&views_lock);
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
 * database, 10 ms doubling to 250 ms; EINTR once the caller is interrupted, EDEADLK
 * when a POSIX lock's wait would close a circle of waits).
 */
static int set_waiting(fuse_req_t req, uint64_t ino, char kind, const struct lock_range *l,
		       bool wait)
{
	struct lock_request *r = calloc(1, sizeof(*r));
	unsigned pause_ms = 10;
	uint64_t stamp;
	int rc;

	if (!r)
		return -ENOMEM;
	r->want = *l;
	r->detect = wait;
	for (;;) {
		prepare(ino, &r->publish, &r->mark, &stamp);
		rc = lock_change(lk_fs->meta, ino, kind, r);
		if (rc != -EAGAIN || !wait)
			break;
		if (fuse_req_interrupted(req)) {
			rc = -EINTR;
			break;
		}
		usleep(pause_ms * 1000);
		pause_ms = pause_ms * 2 > 250 ? 250 : pause_ms * 2;
	}
	if (rc < 0 && r->n_waiting > 0 && lock_unwait(lk_fs->meta, r) < 0)
		log_warn("mount: removing the wait rows of inode %" PRIu64
			 " failed (they go at the next wait of that owner, or with this "
			 "mount's session)",
			 ino);
	if (rc == 0) {
		bool taking = l->type != F_UNLCK;

		if (taking)
			note_locked(ino, true);
		if (must_drop(ino, taking, &r->before, r->publish, &r->mark, stamp)) {
			drop_cache(ino);
			settle(ino, r->publish ? &r->mark : &r->before);
		}
	}
	free(r);
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

/* A closing owner's locks of one kind go (before the flush/release itself runs): the
 * file's writes are stored first and announced with the release, so they are there
 * before another owner can lock. */
static void release_owner(uint64_t ino, char kind, uint64_t owner)
{
	struct lock_marker mark, before;
	uint64_t stamp;
	bool publish;
	int left;

	prepare(ino, &publish, &mark, &stamp);
	left = lock_release(lk_fs->meta, ino, kind, meta_session_id(lk_fs->meta), owner,
			    publish ? &mark : NULL, &before);
	if (left < 0) {
		log_warn("mount: releasing the locks of inode %" PRIu64 " failed: %s (they go "
			 "with this mount's session)",
			 ino, strerror(-left));
		return;
	}
	must_drop(ino, false, &before, publish, &mark, stamp);
	if (left == 0)
		note_locked(ino, false);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* close(): the process's POSIX locks on the file go. */
	if (has_locked(ino))
		release_owner(ino, LOCK_KIND_POSIX, fi->lock_owner);
	next_flush(req, ino, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (fi->flock_release && has_locked(ino))
		release_owner(ino, LOCK_KIND_FLOCK, fi->lock_owner);
	next_release(req, ino, fi);
	/* No lock of this mount left on it: what it knew of the file may go (bounds the
	 * memory; a later lock drops the cache once more). */
	if (!has_locked(ino))
		view_forget(ino);
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
