/*
 * sequence: the master's durable counters: file keys and volume ids.
 *
 * File keys are handed out from memory inside a reserved block; before the block runs
 * out, the next one (SEQUENCE_BLOCK keys) is reserved by writing the new high-water mark
 * to <mdir>/sequence.json (tmp file, fsync, rename, fsync dir). After a restart the
 * counter continues above the last reserved block, so no key is ever handed out twice.
 * Volume ids are persisted the same way before a volume is created.
 *
 * Threads: all functions take the sequence's mutex, but never hold it while a
 * replicated proposal is in flight (the state machine applies it on another thread).
 */
#ifndef KELP_SEQUENCE_H
#define KELP_SEQUENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEQUENCE_BLOCK 10000
/* Keys above this are ignored by sequence_set_max_key (they would not fit JSON's int64). */
#define SEQUENCE_MAX_KEY (1ull << 62)

struct sequence;

/* Opens (or creates) the state in dir; -errno on failure. */
int sequence_open(const char *dir, struct sequence **out);

/*
 * Replicated mode (HA masters): reservations are proposed through Raft instead of
 * written to a file. propose() blocks until the command is applied (sequence_apply is
 * then called on every master by the state machine) and returns 0 or -errno.
 * A new leader skips the whole block reserved last (sequence_on_leader), so keys handed
 * out by an old leader from its in-memory block are never handed out again.
 */
struct sequence_replication {
	void *ctx;
	int (*propose)(void *ctx, const char *cmd, size_t len);
};
int sequence_open_replicated(const struct sequence_replication *r, struct sequence **out);
/* State machine hooks: apply a command, snapshot and restore the state (JSON). */
int sequence_apply(struct sequence *s, const void *cmd, size_t len);
int sequence_snapshot(struct sequence *s, void **buf, size_t *len);
void sequence_on_leader(struct sequence *s, bool leader);
/* Makes sure the replicated state has a cluster id (leader only; 0 or -errno). */
int sequence_ensure_topology_id(struct sequence *s);
void sequence_close(struct sequence *s);

/* Reserves count consecutive keys; *first gets the first one. -EIO if it cannot persist. */
int sequence_next_keys(struct sequence *s, uint64_t count, uint64_t *first);

/* Makes sure every future key is above max (from heartbeats). */
void sequence_set_max_key(struct sequence *s, uint64_t max);

/* Returns a new volume id (persisted first), or -EIO. */
int sequence_next_volume_id(struct sequence *s, uint32_t *vid);
void sequence_set_max_volume_id(struct sequence *s, uint32_t max);
uint32_t sequence_max_volume_id(struct sequence *s);

/* The cluster id, a random UUID made at the first start. */
const char *sequence_topology_id(struct sequence *s);

#endif
