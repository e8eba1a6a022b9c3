/*
 * locks: flock(2) and POSIX fcntl byte-range locks (F_SETLK, F_SETLKW, F_GETLK, and
 * the F_OFD_* ones, which the kernel passes the same way with the open file as owner)
 * between processes on different mounts of a shared engine (PostgreSQL), kept in the
 * metadata's `locks` table (fuse/meta.h):
 *
 *   ino + kind ('F' flock, 'P' POSIX) + session + owner + start -> end, type, pid
 *
 * A lock belongs to (session, owner): owner is the kernel's lock owner (for POSIX locks
 * the process's file table, for flock and OFD locks the open file). Setting one is one
 * serializable transaction: read every lock of the file (and its change marker: one
 * scan, one round trip), refuse on a conflict
 * (another owner's overlapping range, one of the two a write lock), else replace the
 * owner's own overlapping ranges (split around the new one, as fcntl does) and insert.
 * F_SETLKW and blocking flock poll the database (10 ms doubling to 250 ms) until the
 * lock is free or the caller is interrupted (EINTR). Locks go when the owner unlocks,
 * closes (flush for POSIX locks, release for flock), or its session dies (fuse/meta.h
 * "Sessions": cleaned up by another mount).
 *
 * Deadlocks (POSIX locks): a waiting F_SETLKW records wait rows (waiter -> each owner of
 * a conflicting lock) and fails with EDEADLK when a path of waits leads from its
 * blockers back to itself (every edge checked against the locks table), as Linux does
 * for local POSIX locks: the request that would close the circle fails.
 *
 * Consistency: every lock change first stores the file's buffered writes (when there
 * are any) and, when this mount changed the file since it last said so, writes a new
 * change marker for the file in the same transaction. Taking a lock drops the kernel's
 * cached pages and attributes of the file only when the marker differs from the one
 * this mount saw last (another mount announced a change), so a process that reads
 * under a lock sees what the previous holder wrote under it, on any mount, and a
 * reader re-locking a file nobody changed keeps its cache.
 *
 * With LMDB (one mount) none of this is installed: the kernel keeps the locks itself.
 */
#ifndef KELP_LOCKS_H
#define KELP_LOCKS_H

#include <stdbool.h>
#include <stdint.h>

#include "fuse/meta.h"

#define LOCK_KIND_POSIX 'P'
#define LOCK_KIND_FLOCK 'F'
#define LOCK_END_MAX	UINT64_MAX /* to the end of the file, and beyond */

/* A lock: bytes [start, end) of ino, type F_RDLCK or F_WRLCK (F_UNLCK to unlock). */
struct lock_range {
	uint64_t session, owner;
	uint64_t start, end;
	int type;
	uint32_t pid;
};

/* A file's change marker: the session that announced the last change of the file's
 * data at a lock change, and its serial ({0, 0}: none yet). See fuse/locks.c. */
struct lock_marker {
	uint64_t session, serial;
};
bool lock_marker_eq(const struct lock_marker *a, const struct lock_marker *b);

/* A lock's owner: a session and the kernel's lock owner there. */
struct lock_owner {
	uint64_t session, owner;
};

#define LOCK_MAX_BLOCKERS 16 /* owners one F_SETLKW records waiting for */

/* One lock change (lock_change). */
struct lock_request {
	struct lock_range want; /* F_UNLCK: an unlock */
	bool publish;		/* write `mark` as the file's change marker, in the same
				 * transaction (when the lock changes) */
	struct lock_marker mark;
	bool detect; /* F_SETLKW of a POSIX lock: wait rows and deadlock detection */
	/* the wait rows this request has (in: from its last round; out: now) */
	struct lock_owner waiting[LOCK_MAX_BLOCKERS];
	int n_waiting;
	/* out */
	struct lock_marker before; /* the file's marker as the transaction found it */
	struct lock_range conflict;
};

/*
 * Sets (or with F_UNLCK removes) r->want on ino, in one transaction with one read (the
 * file's locks and marker in one scan): 0 (the marker written when r->publish), -EAGAIN
 * when another owner's lock conflicts (r->conflict; with r->detect the owners waited
 * for are recorded as wait rows, r->waiting), -EDEADLK when waiting would close a
 * circle of waits (r->detect; the request's wait rows are gone), or -errno.
 */
int lock_change(struct meta *m, uint64_t ino, char kind, struct lock_request *r);
/* Removes the wait rows of a request that stops waiting without its lock (EINTR). */
int lock_unwait(struct meta *m, struct lock_request *r);
/* lock_release_owner, also writing *publish as the file's marker (if not NULL) and
 * giving the marker found in *before (if not NULL). */
int lock_release(struct meta *m, uint64_t ino, char kind, uint64_t session, uint64_t owner,
		 const struct lock_marker *publish, struct lock_marker *before);
/* The file's change marker (tests). */
int lock_marker_get(struct meta *m, uint64_t ino, struct lock_marker *out);

/*
 * Sets (or with F_UNLCK removes) a lock of (l->session, l->owner) on ino. Returns 0,
 * -EAGAIN when another owner's lock conflicts (described in *conflict if not NULL), or
 * -errno.
 */
int lock_set(struct meta *m, uint64_t ino, char kind, const struct lock_range *l,
	     struct lock_range *conflict);
/* The first lock of another owner that conflicts with l (F_GETLK): 1 with *out filled,
 * 0 when none does, or -errno. */
int lock_test(struct meta *m, uint64_t ino, char kind, const struct lock_range *l,
	      struct lock_range *out);
/* Removes every lock of (session, owner) on ino of one kind (0: both). Returns the
 * number of locks this session still has on ino, or -errno. */
int lock_release_owner(struct meta *m, uint64_t ino, char kind, uint64_t session, uint64_t owner);

struct fuse_lowlevel_ops;
struct kelp_fs;
/* With a shared engine: sets the getlk, setlk and flock ops and wraps flush and
 * release (a closing owner's locks go). One mount per process. */
void locks_install(struct fuse_lowlevel_ops *ops, struct kelp_fs *fs);

#endif
