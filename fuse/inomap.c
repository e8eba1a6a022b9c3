#include "fuse/inomap.h"

#include <errno.h>
#include <stdlib.h>

static size_t slot_of(uint64_t ino, size_t cap)
{
	ino ^= ino >> 33;
	ino *= 0xff51afd7ed558ccdull;
	ino ^= ino >> 33;
	return (size_t)ino & (cap - 1);
}

void inomap_init(struct inomap *m)
{
	m->slots = NULL;
	m->cap = m->n = 0;
}

void inomap_release(struct inomap *m)
{
	free(m->slots);
	inomap_init(m);
}

size_t inomap_size(const struct inomap *m)
{
	return m->n;
}

static struct inomap_slot *find(const struct inomap *m, uint64_t ino)
{
	if (!m->cap)
		return NULL;
	for (size_t i = slot_of(ino, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->slots[i].ino == ino)
			return &m->slots[i];
		if (!m->slots[i].ino)
			return NULL;
	}
}

uint64_t inomap_get(const struct inomap *m, uint64_t ino)
{
	struct inomap_slot *s = ino ? find(m, ino) : NULL;

	return s ? s->count : 0;
}

static void put(struct inomap *m, uint64_t ino, uint64_t count)
{
	size_t i = slot_of(ino, m->cap);

	while (m->slots[i].ino)
		i = (i + 1) & (m->cap - 1);
	m->slots[i].ino = ino;
	m->slots[i].count = count;
	m->n++;
}

static int grow(struct inomap *m)
{
	struct inomap old = *m;
	size_t cap = m->cap ? m->cap * 2 : 64;

	m->slots = calloc(cap, sizeof(*m->slots));
	if (!m->slots) {
		*m = old;
		return -ENOMEM;
	}
	m->cap = cap;
	m->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.slots[i].ino)
			put(m, old.slots[i].ino, old.slots[i].count);
	free(old.slots);
	return 0;
}

/* Removes slot i, moving later entries of the probe run back into the hole. */
static void remove_at(struct inomap *m, size_t i)
{
	size_t mask = m->cap - 1, j = i;

	m->slots[i].ino = 0;
	m->n--;
	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (!m->slots[j].ino)
			return;
		home = slot_of(m->slots[j].ino, m->cap);
		/* The entry at j may move to the hole at i unless its home lies in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			m->slots[i] = m->slots[j];
			m->slots[j].ino = 0;
			i = j;
		}
	}
}

int inomap_set(struct inomap *m, uint64_t ino, uint64_t count)
{
	struct inomap_slot *s;

	if (!ino)
		return -EINVAL;
	s = find(m, ino);
	if (s) {
		if (count)
			s->count = count;
		else
			remove_at(m, (size_t)(s - m->slots));
		return 0;
	}
	if (!count)
		return 0;
	if ((m->n + 1) * 4 > m->cap * 3 && grow(m) < 0)
		return -ENOMEM;
	put(m, ino, count);
	return 0;
}
