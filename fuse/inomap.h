/*
 * inomap: a small hash map from inode number to a count, for the kernel's lookup counts
 * of the mount (FUSE forget). Open addressing with linear probing and backward-shift
 * deletion, at most 3/4 full, grown by doubling. Not thread-safe: the caller locks.
 * Key 0 is never stored (no inode is 0).
 */
#ifndef KELP_INOMAP_H
#define KELP_INOMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct inomap {
	struct inomap_slot {
		uint64_t ino, count;
	} * slots;
	size_t cap, n; /* cap is 0 or a power of two */
};

void inomap_init(struct inomap *m);
void inomap_release(struct inomap *m);
/* The count of ino, 0 when absent. */
uint64_t inomap_get(const struct inomap *m, uint64_t ino);
/* Sets ino's count; 0 removes it. -ENOMEM when it cannot grow. */
int inomap_set(struct inomap *m, uint64_t ino, uint64_t count);
size_t inomap_size(const struct inomap *m);

#endif
