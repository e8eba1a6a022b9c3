/*
 * meta: the mount's metadata: the filesystem rules (names, inodes, link counts, rename
 * semantics, data intervals, xattrs, the gc queue), written once over an ordered
 * transactional key-value engine (fuse/kv.h): LMDB in a directory on the mount host
 * (kv_lmdb.c, the default), or a PostgreSQL database shared by many mounts (kv_pg.c,
 * when the spec is a postgres:// or postgresql:// URL).
 *
 * Tables (all keys big-endian so ranges scan in order):
 *   inodes    ino                  -> struct meta_attr (fixed layout)
 *   symlinks  ino                  -> target
 *   dentries  parent ino + name    -> child ino
 *   chunks    ino + file offset    -> fid, offset inside the blob, length   (see below)
 *   fidrefs   fid                  -> number of chunk entries using that blob
 *   xattrs    ino + name           -> value
 *   gc        sequence number      -> fid of a blob to delete in the cluster
 *   counters  name                 -> u64 (next inode number, next gc sequence; LMDB)
 *   orphans   ino                  -> inodes with no links left, still in use (value:
 *                                     the session that removed the last name)
 *   parents   directory ino        -> its parent (for the rename-into-itself check)
 *   sessions  session id           -> the mount: host, pid, mount point, version, start
 *                                     time, heartbeat (see "Sessions" below)
 *   holds     ino + session + serial -> a file open on that mount (shared engines)
 *   locks     ino + kind + session + owner + start -> a flock or POSIX lock (fuse/locks.c);
 *             ino + META_LOCK_MARK -> the file's change marker (the session and serial of
 *             the last change announced at a lock change); all-ones + 'W' + waiter +
 *             blocker -> a wait of F_SETLKW (deadlock detection)
 *
 * A file's data is a set of NON-OVERLAPPING intervals, each a slice of a blob: writing
 * [o, o+n) with a new blob trims or drops the intervals it covers, so the newest data
 * wins and reads are a range scan. A blob no interval uses any more goes to `gc`,
 * and a background thread deletes it in the cluster (the gc table survives restarts,
 * so nothing leaks). Holes read as zeros.
 *
 * Every namespace change is one read-write transaction, so it is atomic; with
 * PostgreSQL it runs at SERIALIZABLE and is run again from the start when it conflicts
 * with another mount's (serialization failure, deadlock) or the server was lost (up to
 * the timeout, then -EIO). It is in the engine when the call returns: a crash of the
 * mount process loses nothing. LMDB commits do not fsync (MDB_NOSYNC); meta_sync does,
 * called on fsync and at least every second by the mount, so a power loss loses at most
 * the last second of changes not fsync'ed. PostgreSQL commits are durable as the server
 * is configured (synchronous_commit). Read-only calls use read transactions (one
 * snapshot). No transaction is ever held across network I/O to the cluster: callers
 * upload first, then commit.
 *
 * Threads: any thread may call anything.
 *
 * Errors: 0 or -errno (-ENOENT, -EEXIST, -ENOTDIR, -EISDIR, -ENOTEMPTY, -ENAMETOOLONG,
 * -ENODATA for a missing xattr, -ERANGE, -EIO for engine failures, -ENOSPC when the
 * LMDB map is full).
 */
#ifndef KELP_META_H
#define KELP_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define META_ROOT_INO 1
#define META_NAME_MAX 255
#define META_FID_MAX  48

struct meta;

struct meta_attr {
	uint64_t ino;
	uint64_t size;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	uint32_t rdev;
	uint32_t flags; /* META_F_*; 0 in records written before them */
	int64_t atime_ns, mtime_ns, ctime_ns, crtime_ns;
	/* Bytes of data really stored: the sum of the file's interval lengths (holes do not
	 * count; st_blocks). META_STORED_UNKNOWN in a record from before this field (72
	 * bytes): computed the next time the file's data changes. */
	uint64_t stored;
};

#define META_STORED_UNKNOWN UINT64_MAX
/* An inode record as stored (the current layout or the one before `stored`, which
 * then reads as META_STORED_UNKNOWN). 0 or -EIO. */
int meta_decode_attr(const uint8_t *v, size_t vlen, struct meta_attr *out);
/* struct meta_attr.flags: the inode has a system.posix_acl_* xattr (saves a read on
 * every create in a directory and every chmod that has none). */
#define META_F_ACL_ACCESS  (1u << 0)
#define META_F_ACL_DEFAULT (1u << 1)
/* The kind byte of a file's change marker in the locks table (fuse/locks.c). */
#define META_LOCK_MARK 'C'
/* The file is in the trash (its one name is under /.trash; cleared by a restore). A
 * shared engine's mount opens such a file only when its kernel found it there: another
 * mount's kernel may still cache the name it had (meta_hold, ESTALE). */
#define META_F_TRASHED (1u << 2)
/* The inode has no xattr but the ACLs its META_F_ACL_* flags say: set at its create,
 * cleared by any other xattr written. A record without it may have any. */
#define META_F_NO_XATTRS (1u << 3)
/* The POSIX ACL xattrs (Linux's format: a version, then tag/perm/id entries). */
#define META_ACL_ACCESS	 "system.posix_acl_access"
#define META_ACL_DEFAULT "system.posix_acl_default"

/* One interval of a file's data: bytes [offset, offset+length) come from blob `fid`
 * starting at blob_offset. */
struct meta_chunk {
	uint64_t offset;
	uint64_t length;
	uint64_t blob_offset;
	char fid[META_FID_MAX];
};

struct meta_options {
	const char *cluster_id; /* PostgreSQL: the masters' TopologyId, checked and stored */
	int timeout_ms;		/* how long calls wait for a lost server (default 30 s) */
	int connections;	/* PostgreSQL: connections in the pool (default 8) */
	/* The mount, e.g. "host:/mount/point": orphans recorded under this string by older
	 * versions are freed by meta_release_orphans. */
	const char *owner;
	/* Shared engines: blobs stay queued for gc at least this long (0 = none), so a
	 * read on another mount that resolved a blob just before it left the file's chunk
	 * map still finds it (the read guard, fuse/file.c, covers only this mount). */
	int gc_grace_ms;
	/* Removed files stay in /.trash this long (0: removed at once); see below. */
	int64_t trash_ns;
	/* Lookups read ahead (meta_lookup_cached): at most this many entries cached (0:
	 * off), in at most lookup_cache_dirs directories (0: 1,024), each answer served
	 * for at most lookup_ttl_ns after its read (0: off); lookup_batch entries read at
	 * once (0: 256). */
	int lookup_cache;
	int lookup_cache_dirs;
	int64_t lookup_ttl_ns;
	int lookup_batch;
	/* Shared engines: the attributes of a directory this process's transaction just
	 * wrote answer meta_getattr_dir for this long (0: off); see there. */
	int64_t dir_attr_ttl_ns;
	/* Every change durable when its call returns (PostgreSQL: every commit waits for
	 * the WAL flush; LMDB: synced after every commit). Default: changes of the
	 * namespace only (create, mkdir, rename, unlink, chmod, xattrs, ...) commit
	 * lazily on PostgreSQL (durable within the WAL writer's delay, or at the next
	 * meta_sync), as LMDB commits all (synced every second); the data's commit at
	 * close and fsync, locks and sessions wait. */
	bool sync_every;
};

/* spec: an LMDB directory, or a postgres:// / postgresql:// URL. */
int meta_open(const char *spec, struct meta **out);
int meta_open_opts(const char *spec, const struct meta_options *o, struct meta **out);
/* True when other mounts may change the metadata (PostgreSQL). */
bool meta_shared(struct meta *m);
/* "lmdb" or "postgres". */
const char *meta_engine(struct meta *m);
/* Transactions run again after a conflict or a lost server, since open. */
uint64_t meta_retries(struct meta *m);
/* Flushes this process's committed transactions to disk (waiting for a lost server up
 * to the timeout, as transactions do). */
int meta_sync(struct meta *m);
/* Flushes every committed transaction, other mounts' lazy ones too (shared engines):
 * before the gc deletes blobs whose last reference they removed. */
int meta_sync_all(struct meta *m);
/* Round trips to the engine's server since open (0 with LMDB); *txns (may be NULL)
 * gets the transactions begun. For tests and benches. */
uint64_t meta_round_trips(struct meta *m, uint64_t *txns);
/* meta_options.gc_grace_ms as opened (0: none). */
int meta_gc_grace_ms(struct meta *m);
/*
 * A value that changes whenever a transaction of THIS process that writes ino's data
 * or attributes commits (or may have: any outcome), for caches of what meta returned
 * (fuse/file.c's chunk maps). False while such a transaction is committing: what is
 * read then must not be cached. Taken before reading what is cached, compared before
 * each use: a different value means read it again. Transactions of meta_run (rules
 * kept in other files, e.g. locks) change every inode's value. Other mounts' changes
 * are not seen here (close-to-open: caches are dropped at open).
 */
bool meta_change_stamp(struct meta *m, uint64_t ino, uint64_t *stamp);
void meta_close(struct meta *m);

int meta_getattr(struct meta *m, uint64_t ino, struct meta_attr *out);
/*
 * meta_getattr for the kernel's GETATTR. With a shared engine, a directory's attributes
 * that a transaction of this process wrote (a create, unlink, rename, mkdir in it, a
 * chmod of it) are answered from memory for meta_options.dir_attr_ttl_ns, while no other
 * transaction of this process changed it since (meta_change_stamp, taken as the commit
 * ended). With default_permissions the kernel asks for a directory's attributes again
 * after every change in it (to check the next one's permission): a create costs one
 * round trip less. Another mount's changes show within that time, as the kernel's own
 * attribute cache allows.
 */
int meta_getattr_dir(struct meta *m, uint64_t ino, struct meta_attr *out);
/*
 * Answering xattr questions without the engine (shared engines; `ls -l` asks for two
 * xattrs of every entry it lists). meta_reads_begin before a read whose attributes go
 * to the kernel, meta_note_attrs with them after it: they are remembered (4,096 inodes)
 * when no transaction of this process committed meanwhile, as read age_ns ago (an
 * answer of the lookups read ahead: meta_lookup_cached's age). meta_xattr_absent is then
 * true for a name that an inode remembered with META_F_NO_XATTRS does not have, while
 * its change stamp holds and for dir_attr_ttl_ns (another mount's setxattr shows
 * within that time, as the kernel's attribute cache allows).
 */
uint64_t meta_reads_begin(struct meta *m);
void meta_note_attrs(struct meta *m, uint64_t begun, const struct meta_attr *a, int64_t age_ns);
bool meta_xattr_absent(struct meta *m, uint64_t ino, const char *name);
/*
 * The entry name of directory parent. Also "." (parent itself, which may be any inode)
 * and ".." (the directory holding parent): what the kernel asks to turn a file handle
 * back into a file (NFS export). -ENOENT for an inode with no name left.
 */
int meta_lookup(struct meta *m, uint64_t parent, const char *name, struct meta_attr *out);
/* Notes what the kernel is given inode a by a lookup or a READDIRPLUS entry implies. */
void meta_seen(struct meta *m, const struct meta_attr *a);
/*
 * meta_lookup for the kernel's LOOKUP, answered from the lookups read ahead when they
 * are on (meta_options.lookup_cache): after misses in a directory its entries are read
 * with their attributes, a batch in one statement (fuse/dircache.h), and the following
 * lookups there are answered from memory while the batch is younger than
 * lookup_ttl_ns and no transaction of this process changed the directory or the
 * inode (meta_change_stamp). A name the batch does not have is asked of the engine
 * (another mount may have made it: ENOENT is never answered from memory).
 * *age_ns gets how old the answer is (0: read now): the kernel may keep it for its
 * cache times less that. "." and ".." are never read ahead.
 */
int meta_lookup_cached(struct meta *m, uint64_t parent, const char *name, struct meta_attr *out,
		       int64_t *age_ns);
/* What the lookups read ahead did since open: answers from memory (hits), names a fresh
 * batch did not have (absent: asked of the engine), other lookups asked of the engine
 * (misses; loads: of those, the ones that read a batch), directories and entries held
 * now. False when they are off. */
struct meta_lookup_stats {
	uint64_t hits, absent, misses, loads, dirs, entries;
};
bool meta_lookup_stats(struct meta *m, struct meta_lookup_stats *out);
/*
 * The generation of every inode: drawn at random when the metadata is created, so a
 * file handle (inode number + generation) from other metadata is stale here. Inode
 * numbers are never reused within one metadata.
 */
uint32_t meta_generation(struct meta *m);

/* Creates name in parent: a file, directory, FIFO, device or (target != NULL) symlink.
 * A parent with the setgid bit gives the new inode its group instead of gid (and a new
 * directory the bit). */
int meta_create(struct meta *m, uint64_t parent, const char *name, uint32_t mode, uint32_t uid,
		uint32_t gid, uint32_t rdev, const char *target, struct meta_attr *out);
/*
 * meta_create with the caller's umask: when parent has a default POSIX ACL, the new
 * inode inherits it (its access ACL is the default ACL masked by mode, a directory also
 * gets the default ACL) and the umask is ignored; otherwise mode loses the umask bits.
 */
int meta_create_umask(struct meta *m, uint64_t parent, const char *name, uint32_t mode,
		      uint32_t umask, uint32_t uid, uint32_t gid, uint32_t rdev, const char *target,
		      struct meta_attr *out);
int meta_readlink(struct meta *m, uint64_t ino, char *buf, size_t cap);

/* A new hard link newparent/newname to ino (not a directory). */
int meta_link(struct meta *m, uint64_t ino, uint64_t newparent, const char *newname,
	      struct meta_attr *out);

/*
 * Removes parent/name (not a directory; -EISDIR). *gone_ino gets the inode whose link
 * count dropped to 0 (0 if it still has links): it is recorded as an orphan, and the
 * caller frees it with meta_release_inode once the kernel no longer references it
 * (open files, lookups); orphans left by a crash go at meta_release_orphans.
 */
int meta_unlink(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino);
/* Removes an empty directory; *gone_ino as for unlink (freed once unused). */
int meta_rmdir(struct meta *m, uint64_t parent, const char *name, uint64_t *gone_ino);

/* Renames with flags 0, RENAME_NOREPLACE or RENAME_EXCHANGE; *gone_ino as for unlink. */
int meta_rename(struct meta *m, uint64_t parent, const char *name, uint64_t newparent,
		const char *newname, unsigned flags, uint64_t *gone_ino);

/* Deletes an inode with no links left: its data goes to gc. */
int meta_release_inode(struct meta *m, uint64_t ino);

/* Which fields of struct meta_attr setattr changes. */
#define META_SET_MODE  (1u << 0)
#define META_SET_UID   (1u << 1)
#define META_SET_GID   (1u << 2)
#define META_SET_SIZE  (1u << 3)
#define META_SET_ATIME (1u << 4)
#define META_SET_MTIME (1u << 5)
#define META_SET_CTIME (1u << 6)
/* In the same transaction: clears setuid, and setgid when the group may execute;
 * KILL_SGID clears setgid in any case. Linux's rule for a write or truncate by a
 * caller without CAP_FSETID, and for a chown: both, and setgid too when the caller is
 * not in the file's group (the caller knows that one). */
#define META_SET_KILL_SUIDGID (1u << 7)
#define META_SET_KILL_SGID    (1u << 8)

/* Changes attributes; a size change truncates or extends (a hole) the data. A mode
 * change also changes the access ACL (its owner, mask or group, other entries). */
int meta_setattr(struct meta *m, uint64_t ino, const struct meta_attr *in, unsigned valid,
		 struct meta_attr *out);

/*
 * Records new data: for each chunk, trims what it covers and inserts it; the file
 * grows to at least min_size; with touch, mtime/ctime become now (not when the same
 * bytes are only rewritten into fewer blobs). One transaction.
 */
int meta_write_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *chunks, int n,
		      uint64_t min_size, bool touch, struct meta_attr *out);

/*
 * Replaces the intervals old[0..n) (contiguous, in order) by one chunk with the same
 * bytes, if they are all still exactly there; else records nothing and sends the new
 * chunk's blob to gc. Times and size are untouched. One transaction.
 */
int meta_replace_chunks(struct meta *m, uint64_t ino, const struct meta_chunk *old, int n,
			const struct meta_chunk *fresh);

/*
 * fallocate's metadata: with punch, [offset, offset+len) becomes a hole (its intervals
 * are dropped or trimmed, blobs no interval uses any more go to gc); with extend, the
 * size grows to at least offset+len; in any case to at least min_size. Space is not reserved in the cluster (blobs are
 * written when data is). mtime and ctime become now when anything changed.
 */
int meta_fallocate(struct meta *m, uint64_t ino, uint64_t offset, uint64_t len, bool punch,
		   bool extend, uint64_t min_size, struct meta_attr *out);

/*
 * Copies [off_in, off_in+len) of src to dst at off_out without moving data: dst's range
 * is replaced by intervals naming the same blob slices (each counted in fidrefs, so a
 * blob goes to gc only when no interval of any file uses it); holes stay holes. len is
 * cut at src's end; *copied gets the bytes copied; dst grows to cover them. -EINVAL for
 * overlapping ranges of one file. One transaction.
 */
int meta_copy_range(struct meta *m, uint64_t src, uint64_t off_in, uint64_t dst, uint64_t off_out,
		    uint64_t len, uint64_t *copied, struct meta_attr *out);

/*
 * The intervals overlapping [offset, offset+len), in order (caller frees *out).
 * Returns their number, or -errno.
 */
int meta_read_chunks(struct meta *m, uint64_t ino, uint64_t offset, uint64_t len,
		     struct meta_chunk **out);

/*
 * One snapshot (one round trip on PostgreSQL): ino's attributes, and its intervals from
 * the one overlapping offset on, at most max of them (caller frees *out). *end gets how
 * far they are complete: every interval of [offset, *end) is in *out (UINT64_MAX: to
 * the end of the file). Returns their number, or -errno.
 */
int meta_read_map(struct meta *m, uint64_t ino, uint64_t offset, int max, struct meta_attr *attr,
		  struct meta_chunk **out, uint64_t *end);

/* Number of intervals of a file (tests fragmentation). */
int meta_chunk_count(struct meta *m, uint64_t ino);

/*
 * Lists a directory from the entry after `after` ("" = from the start); calls fn for
 * each entry until it returns non-zero. Returns 0 or -errno.
 */
int meta_readdir(struct meta *m, uint64_t ino, const char *after,
		 int (*fn)(void *ctx, const char *name, const struct meta_attr *attr), void *ctx);

int meta_setxattr(struct meta *m, uint64_t ino, const char *name, const void *value, size_t len,
		  int flags);
/* Returns the value's length (copied when cap allows; -ERANGE when cap is too small
 * and non-zero), -ENODATA when absent. */
int meta_getxattr(struct meta *m, uint64_t ino, const char *name, void *buf, size_t cap);
/* Returns the length of the NUL-separated list (same cap rules). */
int meta_listxattr(struct meta *m, uint64_t ino, char *buf, size_t cap);
int meta_removexattr(struct meta *m, uint64_t ino, const char *name);

/*
 * Up to n fids waiting for deletion; seqs identify them for meta_gc_done. With a grace
 * period (meta_options.gc_grace_ms) only those queued longer ago. Every mount of a
 * shared engine takes from the one queue: two may take the same entry and both delete
 * the blob; the second delete finds nothing (a missing blob counts as deleted) and
 * meta_gc_done of a gone entry is a no-op. File ids are never reused, so a repeated
 * delete can never hit another blob.
 */
int meta_gc_take(struct meta *m, int n, char fids[][META_FID_MAX], uint64_t *seqs);
int meta_gc_done(struct meta *m, uint64_t seq);
/* meta_gc_done of n entries in one transaction (the gc thread's batches). */
int meta_gc_done_n(struct meta *m, const uint64_t *seqs, int n);
int meta_gc_pending(struct meta *m);
/* Changes whenever a blob may have been sent to gc (cheap: no transaction). */
uint64_t meta_gc_generation(struct meta *m);

/*
 * The backup hold: until until_ns, gc keeps the blobs queued at or after oldest_ns
 * (the oldest backup kept: a restore of it may reference them). 0 removes it. Stored
 * in the metadata, so every mount of a shared database honours it.
 */
int meta_set_backup_hold(struct meta *m, int64_t oldest_ns, int64_t until_ns);

/* A gc queue value: the fid (META_FID_MAX), and when it was queued (0 = unknown).
 * -EIO when malformed. */
int meta_gc_decode(const uint8_t *v, size_t vlen, char *fid, int64_t *queued_ns);

/* The backup hold in the counters table: 16 bytes, big-endian: gc keeps blobs queued at
 * or after the first 8 (ns) until the time in the last 8 (fuse/backup.h). */
#define META_BACKUP_HOLD_KEY "backup_hold"

/* Set in the counters table while `kelp meta load` runs: meta_open refuses (-EUCLEAN). */
#define META_LOADING_KEY "load_incomplete"

/* The cluster id recorded in the metadata ("" when none). 0 or -errno. */
int meta_cluster_id(struct meta *m, char *out, size_t cap);

/* The engine under m (dump, backup: fuse/dump.h). */
struct kv *meta_kv(struct meta *m);

/* Number of inodes (statfs). */
int meta_inode_count(struct meta *m, uint64_t *count);

/* Deletes inodes left with no links by a crash (they were open when it died); with a
 * shared engine only those recorded by this mount's owner (another mount may still
 * have its own open). */
int meta_release_orphans(struct meta *m);

/*
 * The trash. With a trash period (meta_options.trash_ns), a file or symlink losing its
 * last name (unlink, a rename over it) moves to /.trash/<YYYY-MM-DD-HH>/<ino>-<name>
 * (UTC hour; directories owned by root, mode 0700), its ctime the time of removal and
 * the xattr META_TRASH_XATTR holding the path it had. Renaming it out restores it
 * (and drops that xattr); removing it inside /.trash removes it for good.
 */
#define META_TRASH_NAME	 ".trash"
#define META_TRASH_XATTR "trusted.kelp.trash.path"
int64_t meta_trash_ns(struct meta *m);
/*
 * Removes for good what has been in the trash longer than the period at now_ns (and
 * the hour directories that expired whole); removed(ctx, parent, name, ino, gone) for
 * every entry removed, gone being the inode left with no name (0 if none), to be freed
 * once unused (as meta_unlink's gone_ino). Returns the number of entries removed or
 * -errno. Safe to run from several mounts at once.
 */
int meta_trash_purge(struct meta *m, int64_t now_ns,
		     void (*removed)(void *ctx, uint64_t parent, const char *name, uint64_t ino,
				     uint64_t gone),
		     void *ctx);

int64_t meta_now_ns(void);

/*
 * Sessions. Every mount registers one (meta_session_register) and renews its
 * heartbeat (meta_session_beat) every -sessionTimeout / 4. With a shared engine a
 * mount records each file it has open as a hold (ino + session + serial): a file whose
 * last name goes (on any mount) is freed, its blobs sent to gc, only once no session
 * holds it. A session that has not renewed for the timeout, as seen by another mount's
 * own clock (meta_session_sweep: the heartbeat counter did not move), is cleaned up by
 * that mount: its holds and locks are dropped, the files it kept alive freed, the record
 * deleted (one transaction; two mounts doing it at once: one wins, the other finds
 * nothing left). A mount that finds its own record gone (it was partitioned longer than
 * the timeout) registers again under a new id; handles opened under the old one fail
 * with EIO (their holds are gone: meta_write_chunks_held refuses to write through them).
 */
struct meta_session_info {
	uint64_t id;
	int64_t start_ns; /* wall clock of the mount's host */
	int64_t beat_ns;  /* wall clock of its last heartbeat */
	uint64_t beats;	  /* heartbeats so far: other mounts watch it move */
	uint32_t pid;
	char host[256];
	char mountpoint[1024];
	char version[64];
};

/* A file held open by a session: what meta_hold recorded. */
struct meta_hold {
	uint64_t ino, session, serial;
};

/* Registers this mount (id, start and heartbeat filled in); the session of every later
 * hold. With LMDB (one mount) the sessions of earlier runs are cleaned up at once. */
int meta_session_register(struct meta *m, struct meta_session_info *info);
/* Renews the heartbeat. -ESTALE when the record is gone (cleaned up by another mount):
 * the caller registers again. */
int meta_session_beat(struct meta *m);
/* This mount's session id (0 before registering). */
uint64_t meta_session_id(struct meta *m);
/* Deletes this mount's session and its holds and locks (a clean unmount). */
int meta_session_end(struct meta *m);
/* A row of the sessions table (key, value) decoded: 0 or -EIO (fuse/fsck.c reads the
 * table in its own transaction). */
int meta_session_decode(const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen,
			struct meta_session_info *out);
/* Calls fn for each session, in id order. */
int meta_session_list(struct meta *m, int (*fn)(void *ctx, const struct meta_session_info *s),
		      void *ctx);
/* Cleans up session id: its holds and locks go, the files only it kept alive are freed
 * (their blobs to gc), the record is deleted. 0 also when it was already gone. */
int meta_session_clean(struct meta *m, uint64_t id);
/*
 * Looks at every session: one whose heartbeat counter has not moved for timeout_ms of
 * this process's monotonic clock (watched across calls) is cleaned up. Returns the
 * number cleaned, or -errno.
 */
int meta_session_sweep(struct meta *m, int timeout_ms);

/* Shared engines: records that this mount has ino open (-ENOENT when it is gone). With
 * LMDB a no-op (the mount's own table of open files is the truth). */
int meta_hold(struct meta *m, uint64_t ino, struct meta_hold *out);
/* Drops a hold; with may_free, frees the inode if it has no links and no holds left. */
int meta_unhold(struct meta *m, const struct meta_hold *h, bool may_free);
/* meta_unhold of n holds in one transaction (closes are batched). may_free[i] false
 * (this kernel still knows the inode): freed only if another mount removed its last
 * name (this kernel's forget frees it otherwise). */
int meta_unhold_many(struct meta *m, const struct meta_hold *h, const bool *may_free, int n);
/* meta_create_umask of a regular file held open by this mount (open(O_CREAT)): the
 * hold is written in the same transaction. h->ino is the new inode. */
int meta_create_held(struct meta *m, uint64_t parent, const char *name, uint32_t mode,
		     uint32_t umask, uint32_t uid, uint32_t gid, struct meta_attr *out,
		     struct meta_hold *h);
/* meta_write_chunks through an open file: with a shared engine, -ESTALE (nothing
 * written) when its hold is gone (the session was cleaned up meanwhile). lazy: the
 * commit need not be durable when this returns (kv_txn.lazy; unless sync_every): a
 * chunk handed over while writing, whose durability point (close, fsync) comes later
 * and calls meta_sync unless an eager commit came after it. */
int meta_write_chunks_held(struct meta *m, const struct meta_hold *h,
			   const struct meta_chunk *chunks, int n, uint64_t min_size, bool touch,
			   bool lazy, struct meta_attr *out);

/*
 * Runs fn in one transaction of the engine (fuse/kv.h), again from the start after a
 * conflict or a lost server (up to the timeout, then -EIO), like every call above:
 * for rules kept in their own file (fuse/locks.c). fn's value, or the commit's error.
 */
struct kv_txn;
int meta_run(struct meta *m, bool write, int (*fn)(struct kv_txn *t, void *ctx), void *ctx);
/* An inode's attributes read inside such a transaction (-ENOENT when absent). */
int meta_get_attr_in(struct kv_txn *t, uint64_t ino, struct meta_attr *out);
/* Stores an inode's attributes inside such a transaction (the one record format). */
int meta_put_attr_in(struct kv_txn *t, const struct meta_attr *a);

#endif
