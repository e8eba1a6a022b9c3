/*
 * needle_map: the in-memory index of one volume, needle key -> (offset, size).
 *
 * An open-addressing hash table with linear probing and backward-shift deletion:
 * 16 bytes per slot, at most 80% full, so 20-40 bytes per live needle (33.5 bytes
 * at one million needles). Key 0 marks an empty slot; SeaweedFS never issues key 0
 * (its file id would have no key digits).
 *
 * Not thread-safe: the owning volume serialises access with its lock.
 */
#ifndef KELP_NEEDLE_MAP_H
#define KELP_NEEDLE_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct needle_map_entry {
	uint64_t key;
	uint32_t offset; /* in units of 8 bytes, as in .idx */
	uint32_t size;	 /* the needle header Size field */
};

struct needle_map {
	struct needle_map_entry *slots;
	size_t capacity; /* power of two, or 0 */
	size_t count;
};

void needle_map_init(struct needle_map *m);
void needle_map_release(struct needle_map *m);

/*
 * Sets key to (offset, size). Returns 1 if the key existed (its previous value in
 * *old when old != NULL), 0 if it is new, -ENOMEM, or -EINVAL for key 0.
 */
int needle_map_set(struct needle_map *m, uint64_t key, uint32_t offset, uint32_t size,
		   struct needle_map_entry *old);

/* Looks key up; true and *out filled when present. */
bool needle_map_get(const struct needle_map *m, uint64_t key, struct needle_map_entry *out);

/* Removes key; true and *old filled (when old != NULL) if it was present. */
bool needle_map_delete(struct needle_map *m, uint64_t key, struct needle_map_entry *old);

/* Bytes of memory held by the table. */
size_t needle_map_memory(const struct needle_map *m);

/* Calls fn for every entry (any order); stops and returns fn's value if non-zero. */
int needle_map_each(const struct needle_map *m,
		    int (*fn)(void *ctx, const struct needle_map_entry *e), void *ctx);

#endif
