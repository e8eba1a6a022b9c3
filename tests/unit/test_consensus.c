/*
 * test_consensus: the masters' replicated sequence (sequence.h, replicated mode) under
 * real Raft, with libraft's in-memory fixture (raft/fixture.h): three servers, each
 * with a struct sequence wrapped into a struct raft_fsm, proposals that commit only
 * when a majority has the entry, followers that learn commits late, leaders that die
 * or get cut off. The contract: a file key is never handed out twice, whoever leads.
 *
 * What the master does around the state machine (consensus.c) is emulated here:
 *  - a proposal (sequence_replication.propose) is raft_apply on the node's own server,
 *    then the fixture is stepped until the entry is applied there (or 2 s of fixture
 *    time pass: -ETIMEDOUT, as consensus_propose);
 *  - "this node became leader" (sequence_on_leader) is delivered as consensus.c does
 *    it: once a raft_barrier() of the new term has been applied, so that every entry
 *    committed by earlier leaders is applied first (establish_leader()). Delivered as
 *    soon as raft_state() says LEADER instead (what consensus.c did before), every
 *    test here fails: a new leader that has not yet applied its predecessor's last
 *    reservation skips only the block before it, and hands out keys (and a volume id)
 *    a second time. Pass false to establish_leader() to see it.
 *
 * No sockets, no sleeps: fixture time is simulated.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "cluster/master/sequence.h"

#define N	   3
#define BATCH	   9000 /* keys per assign: every other assign reserves a new block */
#define MAX_RANGES 4096
#define MAX_REQS   4096

struct harness;

struct node {
	struct raft_fsm fsm;
	struct sequence *seq;
	struct harness *h;
	unsigned i;
};

struct apply_req {
	struct raft_apply req;
	bool done;
	int status;
};

struct range {
	uint64_t first, count;
	unsigned by;
};

struct harness {
	struct raft_fixture f;
	struct node nodes[N];
	/* Requests stay allocated until the end: libraft may complete one after the
	 * proposer gave up on it. */
	void *reqs[MAX_REQS];
	int n_reqs;
	struct range ranges[MAX_RANGES];
	int n_ranges;
};

/* ---------------------------------------------------------------- the fsm */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
	struct node *n = fsm->data;

	*result = NULL;
	return sequence_apply(n->seq, buf->base, buf->len) < 0 ? RAFT_INVALID : 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	struct node *n = fsm->data;
	void *data;
	size_t len;

	if (sequence_snapshot(n->seq, &data, &len) < 0)
		return RAFT_NOMEM;
	*bufs = raft_malloc(sizeof(**bufs));
	assert_non_null(*bufs);
	(*bufs)[0].base = raft_malloc(len);
	assert_non_null((*bufs)[0].base);
	memcpy((*bufs)[0].base, data, len);
	(*bufs)[0].len = len;
	*n_bufs = 1;
	free(data);
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct node *n = fsm->data;
	int rc = sequence_apply(n->seq, buf->base, buf->len);

	raft_free(buf->base);
	return rc < 0 ? RAFT_INVALID : 0;
}

/* ---------------------------------------------------------------- proposals */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
	struct apply_req *a = req->data;

	(void)result;
	a->done = true;
	a->status = status;
}

static bool req_done(struct raft_fixture *f, void *arg)
{
	(void)f;
	return ((struct apply_req *)arg)->done;
}

static int propose(void *ctx, const char *cmd, size_t len)
{
	struct node *n = ctx;
	struct harness *h = n->h;
	struct raft *r = raft_fixture_get(&h->f, n->i);
	struct apply_req *a;
	struct raft_buffer buf;
	int rv;

	if (!raft_fixture_alive(&h->f, n->i))
		return -EPERM;
	assert_true(h->n_reqs < MAX_REQS);
	a = calloc(1, sizeof(*a));
	assert_non_null(a);
	h->reqs[h->n_reqs++] = a;
	/* libraft's uv backend wants payloads in multiples of 8 bytes. */
	buf.len = (len + 7) & ~(size_t)7;
	buf.base = raft_malloc(buf.len);
	assert_non_null(buf.base);
	memset(buf.base, ' ', buf.len);
	memcpy(buf.base, cmd, len);
	a->req.data = a;
	rv = raft_apply(r, &a->req, &buf, 1, apply_cb);
	if (rv != 0) {
		raft_free(buf.base);
		return rv == RAFT_NOTLEADER ? -EPERM : -EIO;
	}
	if (!raft_fixture_step_until(&h->f, req_done, a, 2000))
		return -ETIMEDOUT;
	return a->status == 0 ? 0 : -EPERM;
}

/* ---------------------------------------------------------------- harness */

static int setup(void **state)
{
	struct harness *h = calloc(1, sizeof(*h));
	struct raft_configuration conf;

	if (!h)
		return -1;
	if (raft_fixture_initialize(&h->f) != 0)
		return -1;
	for (unsigned i = 0; i < N; i++) {
		struct node *n = &h->nodes[i];
		struct sequence_replication repl = {n, propose};

		n->h = h;
		n->i = i;
		n->fsm.version = 1;
		n->fsm.data = n;
		n->fsm.apply = fsm_apply;
		n->fsm.snapshot = fsm_snapshot;
		n->fsm.restore = fsm_restore;
		if (sequence_open_replicated(&repl, &n->seq) != 0)
			return -1;
		if (raft_fixture_grow(&h->f, &n->fsm) != 0)
			return -1;
	}
	if (raft_fixture_configuration(&h->f, N, &conf) != 0)
		return -1;
	if (raft_fixture_bootstrap(&h->f, &conf) != 0)
		return -1;
	raft_configuration_close(&conf);
	for (unsigned i = 0; i < N; i++)
		raft_set_pre_vote(raft_fixture_get(&h->f, i), true); /* as consensus.c */
	if (raft_fixture_start(&h->f) != 0)
		return -1;
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	raft_fixture_close(&h->f);
	for (unsigned i = 0; i < N; i++)
		sequence_close(h->nodes[i].seq);
	for (int i = 0; i < h->n_reqs; i++)
		free(h->reqs[i]);
	free(h);
	return 0;
}

struct barrier_req {
	struct raft_barrier req;
	bool finished;
	int status;
};

static void barrier_cb(struct raft_barrier *req, int status)
{
	struct barrier_req *b = req->data;

	b->finished = true;
	b->status = status;
}

struct barrier_wait {
	struct barrier_req *b;
	unsigned i;
};

static bool barrier_over(struct raft_fixture *f, void *arg)
{
	struct barrier_wait *w = arg;

	return w->b->finished || raft_state(raft_fixture_get(f, w->i)) != RAFT_LEADER;
}

struct leader_wait {
	unsigned skip; /* a server that does not count (the old leader), or N */
	unsigned found;
};

static bool other_is_leader(struct raft_fixture *f, void *arg)
{
	struct leader_wait *w = arg;

	for (unsigned i = 0; i < N; i++)
		if (i != w->skip && raft_fixture_alive(f, i) &&
		    raft_state(raft_fixture_get(f, i)) == RAFT_LEADER) {
			w->found = i;
			return true;
		}
	return false;
}

/*
 * Steps until a server other than `skip` is leader and delivers "you are leader" to its
 * sequence: once a barrier of its term has been applied, as consensus.c does (a leader
 * that loses its leadership meanwhile is not notified; the wait goes on for the next
 * one), or at once when after_barrier is false. Returns the leader.
 */
static unsigned establish_leader(struct harness *h, unsigned skip, bool after_barrier)
{
	for (int attempt = 0; attempt < 10; attempt++) {
		struct leader_wait w = {skip, N};
		struct barrier_req *b;
		struct barrier_wait bw;

		if (!raft_fixture_step_until(&h->f, other_is_leader, &w, 30000))
			fail_msg("no leader other than %u after 30 s of fixture time", skip);
		if (!after_barrier) {
			sequence_on_leader(h->nodes[w.found].seq, true);
			return w.found;
		}
		assert_true(h->n_reqs < MAX_REQS);
		b = calloc(1, sizeof(*b));
		assert_non_null(b);
		h->reqs[h->n_reqs++] = b; /* freed at teardown */
		b->req.data = b;
		assert_int_equal(
		    raft_barrier(raft_fixture_get(&h->f, w.found), &b->req, barrier_cb), 0);
		bw = (struct barrier_wait){b, w.found};
		if (raft_fixture_step_until(&h->f, barrier_over, &bw, 5000) && b->finished &&
		    b->status == 0 && raft_state(raft_fixture_get(&h->f, w.found)) == RAFT_LEADER) {
			sequence_on_leader(h->nodes[w.found].seq, true);
			return w.found;
		}
	}
	fail_msg("no leader could apply a barrier in 10 attempts");
	return N;
}

/* Takes count keys on node i; records the range. Returns 0 or the error. */
static int take(struct harness *h, unsigned i, uint64_t count)
{
	uint64_t first;
	int rc = sequence_next_keys(h->nodes[i].seq, count, &first);

	if (rc == 0) {
		assert_true(h->n_ranges < MAX_RANGES);
		h->ranges[h->n_ranges++] = (struct range){first, count, i};
	}
	return rc;
}

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

static void assert_no_overlap(struct harness *h)
{
	struct range sorted[MAX_RANGES];

	memcpy(sorted, h->ranges, sizeof(sorted[0]) * (size_t)h->n_ranges);
	qsort(sorted, (size_t)h->n_ranges, sizeof(sorted[0]), cmp_range);
	for (int k = 1; k < h->n_ranges; k++) {
		const struct range *a = &sorted[k - 1], *b = &sorted[k];

		if (b->first < a->first + a->count)
			fail_msg(
			    "keys %llu..%llu handed out by server %u and again from %llu by server %u",
			    (unsigned long long)a->first,
			    (unsigned long long)(a->first + a->count - 1), a->by,
			    (unsigned long long)b->first, b->by);
	}
}

/* ---------------------------------------------------------------- tests */

/*
 * The leader reserves blocks and hands keys out; it dies right after its last
 * reservation committed (the followers have the entry, not yet its commit). The new
 * leader's keys must lie above everything the old one could have handed out.
 */
static void leader_loss(void **state, bool after_barrier)
{
	struct harness *h = *state;
	unsigned old = 0, now;

	raft_fixture_elect(&h->f, old);
	old = establish_leader(h, N, after_barrier);
	for (int round = 0; round < 3; round++) {
		for (int k = 0; k < 5; k++)
			assert_int_equal(take(h, old, BATCH), 0);
		raft_fixture_kill(&h->f, old);
		now = establish_leader(h, old, after_barrier);
		for (int k = 0; k < 3; k++)
			assert_int_equal(take(h, now, BATCH), 0);
		assert_no_overlap(h);
		/* the dead one comes back as a follower, with the state it had */
		raft_fixture_revive(&h->f, old);
		sequence_on_leader(h->nodes[old].seq, false);
		old = now;
	}
	assert_no_overlap(h);
}

static void test_leader_loss(void **state)
{
	leader_loss(state, true);
}

/*
 * The leader is cut off from both followers (messages both ways dropped). It keeps
 * handing out keys from the block it holds in memory until it needs a new one, which
 * cannot commit. The majority elects a new leader and hands keys out. Healed, the old
 * leader follows the new one. No key twice, the cut-off leader's included.
 */
static void partition_and_heal(void **state, bool after_barrier)
{
	struct harness *h = *state;
	unsigned old = 0, now;
	int stale_ok = 0, stale_failed = 0;

	raft_fixture_elect(&h->f, old);
	old = establish_leader(h, N, after_barrier);
	for (int k = 0; k < 5; k++)
		assert_int_equal(take(h, old, BATCH), 0);
	for (unsigned j = 0; j < N; j++)
		if (j != old) {
			raft_fixture_saturate(&h->f, old, j);
			raft_fixture_saturate(&h->f, j, old);
		}
	/* the cut-off leader: keys from memory, then a reservation that cannot commit */
	for (int k = 0; k < 3; k++) {
		if (take(h, old, BATCH) == 0)
			stale_ok++;
		else
			stale_failed++;
	}
	assert_true(stale_failed > 0); /* it could not reserve without a majority */
	now = establish_leader(h, old, after_barrier);
	for (int k = 0; k < 5; k++)
		assert_int_equal(take(h, now, BATCH), 0);
	assert_no_overlap(h);
	/* the old leader, still cut off, tries again: whatever it hands out must be new */
	(void)take(h, old, 1);
	for (unsigned j = 0; j < N; j++)
		if (j != old) {
			raft_fixture_desaturate(&h->f, old, j);
			raft_fixture_desaturate(&h->f, j, old);
		}
	assert_true(raft_fixture_step_until_state_is(&h->f, old, RAFT_FOLLOWER, 10000));
	sequence_on_leader(h->nodes[old].seq, false);
	for (int k = 0; k < 3; k++)
		assert_int_equal(take(h, now, BATCH), 0);
	/* the healed follower has caught up: the old leader's view equals the new one's */
	assert_true(raft_fixture_step_until_applied(
	    &h->f, N, raft_last_index(raft_fixture_get(&h->f, now)), 10000));
	assert_int_equal(sequence_max_volume_id(h->nodes[old].seq),
			 sequence_max_volume_id(h->nodes[now].seq));
	assert_no_overlap(h);
	(void)stale_ok;
}

static void test_partition_and_heal(void **state)
{
	partition_and_heal(state, true);
}

/* Volume ids through Raft, across a leader loss: never the same id twice. */
static void volume_ids(void **state, bool after_barrier)
{
	struct harness *h = *state;
	unsigned old = 0, now;
	uint32_t seen[64], vid;
	int n = 0;

	raft_fixture_elect(&h->f, old);
	old = establish_leader(h, N, after_barrier);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(sequence_next_volume_id(h->nodes[old].seq, &vid), 0);
		seen[n++] = vid;
	}
	raft_fixture_kill(&h->f, old);
	now = establish_leader(h, old, after_barrier);
	for (int k = 0; k < 5; k++) {
		assert_int_equal(sequence_next_volume_id(h->nodes[now].seq, &vid), 0);
		for (int j = 0; j < n; j++)
			if (seen[j] == vid)
				fail_msg(
				    "volume id %u handed out twice (old leader %u, new leader %u)",
				    vid, old, now);
		seen[n++] = vid;
	}
}

static void test_volume_ids(void **state)
{
	volume_ids(state, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_leader_loss, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partition_and_heal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_volume_ids, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
