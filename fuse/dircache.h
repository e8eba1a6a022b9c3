/*
 * dircache: the directory read-ahead cache of lookups (shared metadata engines: a
 * PostgreSQL lookup is one round trip; docs/architecture.md, "Lookups read ahead").
 *
 * What it holds: per directory, up to DIRCACHE_WINDOWS windows. A window is a range of
 * names [lo, hi] of one directory (lo "" = from its first name, hi NULL = to its last)
 * and every entry the engine had in that range, each with its inode's attributes, as
 * read in one snapshot at loaded_ns. A name inside a fresh window is answered from it:
 * its attributes, or "absent" when the window does not have it (the caller asks the
 * engine all the same: fuse/meta.c answers no ENOENT from memory, so that a name
 * another mount made shows at once; an absent name neither counts as a hit nor calls
 * for a load).
 *
 * Freshness is the caller's (fuse/meta.c): a window is used until loaded_ns + ttl_ns,
 * and only while valid(ctx, dir, dir_stamp) says the directory's change stamp is the
 * one taken before the load (meta_change_stamp: no transaction of this process touched
 * the directory since), and an entry only while valid(ctx, ino, stamp) says the same
 * of its inode. A window whose directory changed is dropped whole; an entry whose
 * inode changed is marked unknown (its name then misses: it still exists, so it must
 * not read as absent).
 *
 * When to load: dircache_find answers DIRCACHE_LOAD for a miss when the directory has
 * seen enough misses: 2 for a directory never loaded (a path walk's one lookup per
 * directory never loads), 1 after a load that answered at least DIRCACHE_USEFUL
 * lookups (a scan in name order goes from window to window), and after a load that did
 * not (the directory keeps changing under it: a create after each lookup), twice as
 * many as the time before, up to DIRCACHE_BACKOFF_MAX, while the last load is younger
 * than ttl_ns (then 2 again: a create storm loads about once per ttl_ns, and a scan
 * after it is read ahead from its second lookup). The first load of a directory
 * reads from its first name (a small directory whole); once a load returned a full
 * batch the directory is big and loads read from the missed name on. While one thread
 * loads a directory, the others' misses there are plain misses (no second load).
 *
 * Bounds: at most max_dirs directories and max_entries entries; the least recently
 * used directory goes first.
 *
 * Threads: every call takes the cache's mutex; nothing is held across the caller's
 * load (DIRCACHE_LOAD, then dircache_fill or dircache_abandon). valid() is called
 * under the mutex: it must be cheap (atomic loads) and must not call back.
 */
#ifndef KELP_DIRCACHE_H
#define KELP_DIRCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "fuse/meta.h"

#define DIRCACHE_WINDOWS     4
#define DIRCACHE_USEFUL	     4
#define DIRCACHE_BACKOFF_MAX 1024

struct dircache;

struct dircache_options {
	int max_dirs;	 /* > 0 */
	int max_entries; /* > 0 */
	int64_t ttl_ns;	 /* > 0: how long a window is used after its load */
};

/* True when the stamp recorded for ino (a directory or an entry's inode) is current. */
typedef bool (*dircache_valid_fn)(void *ctx, uint64_t ino, uint64_t stamp);

enum dircache_result {
	DIRCACHE_MISS,	 /* not known: ask the engine */
	DIRCACHE_HIT,	 /* answer->attr */
	DIRCACHE_ABSENT, /* not in the directory when the window was read */
	DIRCACHE_LOAD,	 /* not known: the caller loads a window, then fill or abandon */
};

struct dircache_answer {
	struct meta_attr attr; /* HIT */
	int64_t loaded_ns;     /* HIT, ABSENT: when the snapshot was taken */
	bool from_start;       /* LOAD: read from the directory's first name, else from name */
};

/* One entry of a load: name, its inode's attributes and their stamp. known false: the
 * name exists but its inode cannot be cached (it was changing during the load). */
struct dircache_row {
	const char *name;
	const struct meta_attr *attr;
	uint64_t stamp;
	bool known;
};

/* 0, -EINVAL for bad options, -ENOMEM. */
int dircache_new(const struct dircache_options *o, struct dircache **out);
void dircache_free(struct dircache *c);

/* Looks name up in directory dir at now_ns (monotonic). */
enum dircache_result dircache_find(struct dircache *c, uint64_t dir, const char *name,
				   int64_t now_ns, dircache_valid_fn valid, void *vctx,
				   struct dircache_answer *out);

/*
 * After DIRCACHE_LOAD: the window [lo, hi] (hi NULL: to the directory's last name) of
 * dir read at loaded_ns (taken before the read was sent), dir_stamp the directory's
 * stamp then; rows in name order, all the directory had in that range. full: the
 * load returned as many entries as it asked for (the directory is big: later loads
 * read from the missed name). Windows of dir that overlap it are replaced. Returns 0
 * or -ENOMEM (nothing cached then; the load is over either way).
 */
int dircache_fill(struct dircache *c, uint64_t dir, const char *lo, const char *hi,
		  const struct dircache_row *rows, int n, bool full, int64_t loaded_ns,
		  uint64_t dir_stamp);
/* After DIRCACHE_LOAD, when nothing is to be cached (the load failed, or the directory
 * was changing during it). */
void dircache_abandon(struct dircache *c, uint64_t dir);
/* Drops what is cached of dir. */
void dircache_forget(struct dircache *c, uint64_t dir);

void dircache_stats(struct dircache *c, struct meta_lookup_stats *out);

/* Compares two names as the engine orders them (bytes, then the shorter first). */
int dircache_name_cmp(const char *a, const char *b);

#endif
