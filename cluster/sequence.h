/*
 * sequence: the master's durable counters: file keys and volume ids.
 *
 * File keys are handed out from memory inside a reserved block; before the block runs
 * out, the next one (SEQUENCE_BLOCK keys) is reserved by writing the new high-water mark
 * to <mdir>/sequence.json (tmp file, fsync, rename, fsync dir). After a restart the
 * counter continues above the last reserved block, so no key is ever handed out twice.
 * Volume ids are persisted the same way before a volume is created.
 *
 * Threads: all functions take the sequence's mutex.
 */
#ifndef KELP_SEQUENCE_H
#define KELP_SEQUENCE_H

#include <stdint.h>

#define SEQUENCE_BLOCK 10000

struct sequence;

/* Opens (or creates) the state in dir; -errno on failure. */
int sequence_open(const char *dir, struct sequence **out);
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
