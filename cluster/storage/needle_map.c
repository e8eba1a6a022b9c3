#include "cluster/storage/needle_map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAPACITY 64

static inline size_t slot_of(uint64_t key, size_t mask)
{
	/* A 64-bit finalizer (murmur3's): every key bit moves every slot bit. */
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdull;
	key ^= key >> 33;
	return (size_t)key & mask;
}

void needle_map_init(struct needle_map *m)
{
	m->slots = NULL;
	m->capacity = 0;
	m->count = 0;
}

void needle_map_release(struct needle_map *m)
{
	free(m->slots);
	needle_map_init(m);
}

static void insert_fresh(struct needle_map_entry *slots, size_t mask,
			 const struct needle_map_entry *e)
{
	size_t i = slot_of(e->key, mask);

	while (slots[i].key != 0)
		i = (i + 1) & mask;
	slots[i] = *e;
}

static int grow(struct needle_map *m)
{
	size_t cap = m->capacity ? m->capacity * 2 : MIN_CAPACITY;
	struct needle_map_entry *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < m->capacity; i++)
		if (m->slots[i].key != 0)
			insert_fresh(slots, cap - 1, &m->slots[i]);
	free(m->slots);
	m->slots = slots;
	m->capacity = cap;
	return 0;
}

int needle_map_set(struct needle_map *m, uint64_t key, uint32_t offset, uint32_t size,
		   struct needle_map_entry *old)
{
	size_t mask, i;

	if (key == 0)
		return -EINVAL;
	if ((m->count + 1) * 5 > m->capacity * 4) {
		int ret = grow(m);

		if (ret < 0)
			return ret;
	}
	mask = m->capacity - 1;
	for (i = slot_of(key, mask); m->slots[i].key != 0; i = (i + 1) & mask) {
		if (m->slots[i].key == key) {
			if (old)
				*old = m->slots[i];
			m->slots[i].offset = offset;
			m->slots[i].size = size;
			return 1;
		}
	}
	m->slots[i].key = key;
	m->slots[i].offset = offset;
	m->slots[i].size = size;
	m->count++;
	return 0;
}

static long find(const struct needle_map *m, uint64_t key)
{
	size_t mask, i;

	if (m->capacity == 0 || key == 0)
		return -1;
	mask = m->capacity - 1;
	for (i = slot_of(key, mask); m->slots[i].key != 0; i = (i + 1) & mask)
		if (m->slots[i].key == key)
			return (long)i;
	return -1;
}

bool needle_map_get(const struct needle_map *m, uint64_t key, struct needle_map_entry *out)
{
	long i = find(m, key);

	if (i < 0)
		return false;
	*out = m->slots[i];
	return true;
}

bool needle_map_delete(struct needle_map *m, uint64_t key, struct needle_map_entry *old)
{
	long found = find(m, key);
	size_t mask, hole, j;

	if (found < 0)
		return false;
	if (old)
		*old = m->slots[found];
	mask = m->capacity - 1;
	hole = (size_t)found;
	/* Backward-shift deletion: pull later members of the probe chain into the hole. */
	for (j = (hole + 1) & mask; m->slots[j].key != 0; j = (j + 1) & mask) {
		size_t home = slot_of(m->slots[j].key, mask);

		/* Move j into hole unless its home lies cyclically in (hole, j]. */
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			m->slots[hole] = m->slots[j];
			hole = j;
		}
	}
	m->slots[hole].key = 0;
	m->count--;
	return true;
}

size_t needle_map_memory(const struct needle_map *m)
{
	return m->capacity * sizeof(struct needle_map_entry);
}

int needle_map_each(const struct needle_map *m,
		    int (*fn)(void *ctx, const struct needle_map_entry *e), void *ctx)
{
	for (size_t i = 0; i < m->capacity; i++) {
		if (m->slots[i].key != 0) {
			int ret = fn(ctx, &m->slots[i]);

			if (ret)
				return ret;
		}
	}
	return 0;
}
