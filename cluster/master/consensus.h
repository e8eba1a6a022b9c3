/*
 * consensus: a thin adapter over libraft (uv backend) for the masters.
 *
 * The masters replicate only small, monotonic state through Raft (the max volume id,
 * the file-key high-water mark, the cluster id): the caller provides a state machine
 * as callbacks, and proposes commands from any thread with consensus_propose, which
 * blocks until the command is committed and applied here, or fails. Commands and
 * snapshots reach the state machine padded with spaces to a multiple of 8 bytes.
 *
 * Addresses are Raft addresses (host:port of the Raft TCP transport). Node ids are
 * raft_digest(address), so every master derives the same ids from the same -peers
 * list. A node with an empty data directory bootstraps with the full peer list as the
 * configuration; every node does the same, so they agree, and a master restarted with
 * an empty directory is caught up by the leader.
 *
 * Threads: libraft is single-threaded. One thread runs the libuv loop and makes every
 * raft_* call; other threads enqueue proposals and wake it with uv_async_send (the
 * loop drains the whole queue: wake-ups coalesce). The state machine callbacks run on
 * the loop thread. A 50 ms timer publishes the leader state (is_leader, leader
 * address, term) under `lock` for other threads, and calls on_leader_change before
 * publishing that this node became leader.
 */
#ifndef KELP_CONSENSUS_H
#define KELP_CONSENSUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct consensus;

struct consensus_fsm {
	void *ctx;
	/* Applies a committed command (every node, log order). 0 or -errno. */
	int (*apply)(void *ctx, const void *cmd, size_t len);
	/* Serialises the whole state into *buf (malloc'ed, caller of the hook frees). */
	int (*snapshot)(void *ctx, void **buf, size_t *len);
	/* Replaces the state with a snapshot. */
	int (*restore)(void *ctx, const void *buf, size_t len);
	/* Called on the loop thread when this node becomes (true) or stops being leader. */
	void (*on_leader_change)(void *ctx, bool leader);
};

struct consensus_options {
	const char *dir;  /* Raft log and snapshots */
	const char *self; /* this node's Raft address */
	char **peers;	  /* every node's Raft address, self included */
	int n_peers;
	unsigned election_timeout_ms; /* default 1000 */
	unsigned snapshot_threshold;  /* entries between snapshots; default 256 */
	/*
	 * The cluster key (-jwtKey), or NULL/"": then every Raft connection starts, right
	 * after libraft's handshake, with 40 bytes of proof (a timestamp and an HMAC under
	 * a key derived from it, over both ends' addresses); a connection without it is
	 * closed before raft reads a message.
	 */
	const char *auth_key;
};

int consensus_start(const struct consensus_options *opt, const struct consensus_fsm *fsm,
		    struct consensus **out);
void consensus_stop(struct consensus *c);

/*
 * Proposes a command and waits until it is applied locally. Returns 0, -EPERM when this
 * node is not the leader (or stopped being it), -ETIMEDOUT after timeout_ms (the
 * command may still commit later), or -EIO.
 */
int consensus_propose(struct consensus *c, const void *cmd, size_t len, int timeout_ms);

bool consensus_is_leader(struct consensus *c);
/* The leader's Raft address into buf ("" when unknown); returns true when known. */
bool consensus_leader(struct consensus *c, char *buf, size_t cap);
uint64_t consensus_term(struct consensus *c);

#endif
