/*
 * chunk_cache: a memory cache of whole blobs (file chunks), keyed by file id, evicting
 * the least recently used when over its byte capacity. Knows nothing of FUSE.
 *
 * Entries are reference counted: chunk_cache_get returns a handle whose data stays
 * valid until chunk_cache_put, even if the entry is evicted meanwhile.
 *
 * Threads: every function takes the cache's mutex; the data itself is immutable.
 */
#ifndef KELP_CHUNK_CACHE_H
#define KELP_CHUNK_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct chunk_cache;
struct chunk_cache_entry {
	const uint8_t *data;
	size_t len;
};

/* capacity 0 disables caching (get always misses, insert only hands data back). */
struct chunk_cache *chunk_cache_new(size_t capacity);
void chunk_cache_free(struct chunk_cache *c);

/* A cached blob (a reference: release with chunk_cache_put), or NULL. */
const struct chunk_cache_entry *chunk_cache_get(struct chunk_cache *c, const char *fid);

/*
 * Adds a blob, taking ownership of data (malloc'ed); returns a reference to the entry
 * (the existing one if another thread inserted the same fid first). NULL on ENOMEM
 * (data is freed).
 */
const struct chunk_cache_entry *chunk_cache_insert(struct chunk_cache *c, const char *fid,
						   uint8_t *data, size_t len);
void chunk_cache_put(struct chunk_cache *c, const struct chunk_cache_entry *e);
/* Takes one more reference on an entry the caller holds (release with chunk_cache_put). */
void chunk_cache_ref(struct chunk_cache *c, const struct chunk_cache_entry *e);

/* Drops a blob (deleted, or found damaged). */
void chunk_cache_forget(struct chunk_cache *c, const char *fid);

size_t chunk_cache_bytes(struct chunk_cache *c);

#endif
