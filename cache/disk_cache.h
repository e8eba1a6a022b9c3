/*
 * disk_cache: whole chunks kept as files in a local directory (-cacheDir), bounded by
 * a byte capacity; the least recently used files are evicted first (a read refreshes a
 * file's mtime). Survives restarts: the directory is scanned at open. A damaged or
 * truncated file is simply a miss (the length is checked against the file's header).
 * Knows nothing of FUSE.
 *
 * Threads: `lock` guards the byte count and eviction; file writes go through a
 * temporary name and rename, so readers never see half a file.
 */
#ifndef KELP_DISK_CACHE_H
#define KELP_DISK_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct disk_cache;

/* Opens (creating dir) with a capacity in bytes; NULL on failure. */
struct disk_cache *disk_cache_open(const char *dir, uint64_t capacity);
void disk_cache_close(struct disk_cache *c);

/* 0 and *data (malloc'ed, caller frees) / *len on a hit; -ENOENT on a miss. */
int disk_cache_get(struct disk_cache *c, const char *fid, uint8_t **data, size_t *len);
/* Stores a copy (best effort: errors are logged and ignored). */
void disk_cache_put(struct disk_cache *c, const char *fid, const uint8_t *data, size_t len);
void disk_cache_forget(struct disk_cache *c, const char *fid);

uint64_t disk_cache_bytes(struct disk_cache *c);

#endif
