/*
 * journal: the write-back journal of `kelp mount -writeback` (fuse/file.c): bytes a
 * close() returned for, kept on the local cache disk until they are uploaded and
 * their chunk committed. Knows nothing of open files or the cluster.
 *
 * One file per entry in the journal directory, named `<jid>.wbj` (jid: 16 hex digits,
 * increasing, never reused in one directory): a 64-byte header (magic, format, jid,
 * inode, file offset, length, write time, CRC32 of the data, CRC32 of the header) then
 * the data. An entry is written to `<jid>.tmp` and renamed, so after a crash of the
 * process a `.wbj` is complete and a `.tmp` is one whose close never returned (deleted
 * at replay). Nothing is fsync'ed: the journal survives a crash (kill -9) of the mount
 * daemon, not a power loss (fsync() of a file uploads it instead).
 *
 * A `.wbj` that does not verify (damaged on the disk, written by hand) is moved to
 * `damaged/` with an error naming it; the others replay as usual.
 *
 * Threads: append and remove may be called from any thread (the byte count is atomic,
 * the jid counter too); replay runs before the others start.
 */
#ifndef KELP_JOURNAL_H
#define KELP_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_HEADER_SIZE 64

struct journal;

struct journal_entry {
	uint64_t jid;
	uint64_t ino;
	uint64_t off;
	uint64_t len;
	int64_t write_ns;
};

/* Opens (creating) dir with a bound of limit bytes of entry data. NULL with a reason
 * in err on failure. */
struct journal *journal_open(const char *dir, uint64_t limit, char *err, size_t cap);
void journal_close(struct journal *j);

/*
 * Writes one entry; *jid gets its id. -EFBIG when the bound would be passed, -ENOSPC /
 * -EIO / ... when the disk refuses it (nothing is left behind then).
 */
int journal_append(struct journal *j, uint64_t ino, uint64_t off, const void *data, size_t len,
		   int64_t write_ns, uint64_t *jid);
/* The entry is done with (committed, or its file is gone): deleted, its bytes freed. */
void journal_remove(struct journal *j, uint64_t jid, uint64_t len);

/*
 * Calls fn for every complete entry, in jid order, with its data (valid during the
 * call). fn's error stops the replay and is returned; damaged entries are moved aside
 * and counted in *damaged. Returns the number of entries handed to fn. Entries stay
 * on the disk (and counted) until journal_remove.
 */
int journal_replay(struct journal *j,
		   int (*fn)(void *ctx, const struct journal_entry *e, const uint8_t *data),
		   void *ctx, int *damaged);

/* Does dir hold journal entries (a quick look, without opening a journal)? */
bool journal_has_entries(const char *dir);

/* Bytes of entry data in the journal now, and its bound. */
uint64_t journal_bytes(struct journal *j);
uint64_t journal_limit(struct journal *j);
const char *journal_dir(struct journal *j);

#endif
