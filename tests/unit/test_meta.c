/*
 * Unit tests for fuse/meta: the mount's metadata (namespace, link counts, renames,
 * data intervals, blob garbage collection, xattrs, readdir and persistence). Each test
 * gets a fresh database: an LMDB directory under /tmp, or, when KELP_TEST_PG_URL is set
 * (a PostgreSQL URL of a user allowed to create databases; tests/fuse/test_meta_pg.py
 * sets it), a new PostgreSQL database dropped afterwards. Same tests, both engines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "fuse/kv.h"
#include "fuse/locks.h"
#include "fuse/meta.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

struct fx {
	char dir[64];
	char spec[512]; /* dir, or the URL of the test's PostgreSQL database */
	char db[64];	/* its name ("" with LMDB) */
	struct meta *m;
};

/* Runs one statement on the server of KELP_TEST_PG_URL (its admin database). */
static void pg_admin(const char *sql)
{
	PGconn *c = PQconnectdb(getenv("KELP_TEST_PG_URL"));
	PGresult *r;

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("cannot connect to KELP_TEST_PG_URL: %s", PQerrorMessage(c));
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
}

/* The URL of database db on KELP_TEST_PG_URL's server (its path replaced). */
static void pg_url(char *out, size_t cap, const char *db)
{
	const char *base = getenv("KELP_TEST_PG_URL");
	const char *host = strstr(base, "://") + 3;
	const char *slash = strchr(host, '/');
	int n = slash ? (int)(slash - base) : (int)strlen(base);

	snprintf(out, cap, "%.*s/%s", n, base, db);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/kelp-test-meta-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->spec, sizeof(f->spec), "%s", f->dir);
	if (getenv("KELP_TEST_PG_URL")) {
		static int n;
		char sql[128];

		snprintf(f->db, sizeof(f->db), "kelp_test_meta_%d_%d", (int)getpid(), ++n);
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->db);
		pg_admin(sql);
		pg_url(f->spec, sizeof(f->spec), f->db);
	}
	assert_int_equal(meta_open(f->spec, &f->m), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	meta_close(f->m);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (f->db[0]) {
		char sql[128];

		snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", f->db);
		pg_admin(sql);
	}
	free(f);
	return 0;
}

static void reopen(struct fx *f)
{
	meta_close(f->m);
	f->m = NULL;
	assert_int_equal(meta_open(f->spec, &f->m), 0);
}

static uint64_t mk(struct meta *m, uint64_t parent, const char *name, uint32_t mode)
{
	struct meta_attr a;

	assert_int_equal(meta_create(m, parent, name, mode, 0, 0, 0, NULL, &a), 0);
	return a.ino;
}

static uint64_t mkfile(struct meta *m, uint64_t parent, const char *name)
{
	return mk(m, parent, name, S_IFREG | 0644);
}

static uint64_t mkdir_(struct meta *m, uint64_t parent, const char *name)
{
	return mk(m, parent, name, S_IFDIR | 0755);
}

static uint32_t nlink_of(struct meta *m, uint64_t ino)
{
	struct meta_attr a;

	assert_int_equal(meta_getattr(m, ino, &a), 0);
	return a.nlink;
}

static uint64_t size_of(struct meta *m, uint64_t ino)
{
	struct meta_attr a;

	assert_int_equal(meta_getattr(m, ino, &a), 0);
	return a.size;
}

static uint64_t ino_at(struct meta *m, uint64_t parent, const char *name)
{
	struct meta_attr a;

	assert_int_equal(meta_lookup(m, parent, name, &a), 0);
	return a.ino;
}

static struct meta_chunk chunk(uint64_t off, uint64_t len, uint64_t boff, const char *fid)
{
	struct meta_chunk c;

	memset(&c, 0, sizeof(c));
	c.offset = off;
	c.length = len;
	c.blob_offset = boff;
	snprintf(c.fid, sizeof(c.fid), "%s", fid);
	return c;
}

static void write1(struct meta *m, uint64_t ino, uint64_t off, uint64_t len, uint64_t boff,
		   const char *fid)
{
	struct meta_chunk c = chunk(off, len, boff, fid);

	assert_int_equal(meta_write_chunks(m, ino, &c, 1, 0, true, NULL), 0);
}

static void expect_chunk(const struct meta_chunk *c, uint64_t off, uint64_t len, uint64_t boff,
			 const char *fid)
{
	assert_true(c->offset == off);
	assert_true(c->length == len);
	assert_true(c->blob_offset == boff);
	assert_string_equal(c->fid, fid);
}

#define GC_MAX 8192
static char gc_fids[GC_MAX][META_FID_MAX];
static uint64_t gc_seqs[GC_MAX];

/* How many times fid is waiting in gc. */
static int gc_count(struct meta *m, const char *fid)
{
	int n = meta_gc_take(m, GC_MAX, gc_fids, gc_seqs), hits = 0;

	assert_true(n >= 0);
	assert_int_equal(n, meta_gc_pending(m));
	for (int i = 0; i < n; i++)
		if (!strcmp(gc_fids[i], fid))
			hits++;
	return hits;
}

/* Marks every gc entry done. */
static void gc_drain(struct meta *m)
{
	int n = meta_gc_take(m, GC_MAX, gc_fids, gc_seqs);

	for (int i = 0; i < n; i++)
		assert_int_equal(meta_gc_done(m, gc_seqs[i]), 0);
	assert_int_equal(meta_gc_pending(m), 0);
}

/* ---------------------------------------------------------------- namespace */

static void test_root(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	uint64_t count = 0;

	assert_int_equal(meta_getattr(f->m, META_ROOT_INO, &a), 0);
	assert_true(a.ino == META_ROOT_INO);
	assert_true(S_ISDIR(a.mode));
	assert_int_equal(a.nlink, 2);
	assert_int_equal(meta_inode_count(f->m, &count), 0);
	assert_true(count == 1);
	assert_int_equal(meta_getattr(f->m, 12345, &a), -ENOENT);
}

static void test_create_kinds(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, b;
	char buf[64];
	uint64_t file, dir, fifo;

	assert_int_equal(meta_create(f->m, 1, "file", S_IFREG | 0640, 10, 20, 0, NULL, &a), 0);
	file = a.ino;
	assert_true(file > META_ROOT_INO);
	assert_true(S_ISREG(a.mode));
	assert_int_equal(a.mode & 07777, 0640);
	assert_int_equal(a.uid, 10);
	assert_int_equal(a.gid, 20);
	assert_int_equal(a.nlink, 1);
	assert_true(a.size == 0);

	assert_int_equal(meta_lookup(f->m, 1, "file", &b), 0);
	assert_true(b.ino == file);
	assert_int_equal(meta_getattr(f->m, file, &b), 0);
	assert_int_equal(b.mode, a.mode);

	dir = mkdir_(f->m, 1, "dir");
	assert_int_equal(meta_getattr(f->m, dir, &b), 0);
	assert_true(S_ISDIR(b.mode));
	assert_int_equal(b.nlink, 2);
	assert_int_equal(nlink_of(f->m, 1), 3);

	assert_int_equal(meta_create(f->m, dir, "link", 0, 0, 0, 0, "../file", &a), 0);
	assert_true(S_ISLNK(a.mode));
	assert_true(a.size == strlen("../file"));
	assert_int_equal(meta_readlink(f->m, a.ino, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "../file");
	/* Truncated to the buffer, still terminated. */
	assert_int_equal(meta_readlink(f->m, a.ino, buf, 4), 0);
	assert_string_equal(buf, "../");
	/* Not a symlink. */
	assert_int_equal(meta_readlink(f->m, file, buf, sizeof(buf)), -EINVAL);

	fifo = mk(f->m, dir, "fifo", S_IFIFO | 0600);
	assert_int_equal(meta_getattr(f->m, fifo, &b), 0);
	assert_true(S_ISFIFO(b.mode));
	assert_int_equal(meta_create(f->m, dir, "dev", S_IFCHR | 0600, 0, 0, 0x0103, NULL, &a), 0);
	assert_true(S_ISCHR(a.mode));
	assert_int_equal(a.rdev, 0x0103);

	assert_int_equal(meta_lookup(f->m, 1, "nope", &b), -ENOENT);
	assert_int_equal(meta_lookup(f->m, dir, "file", &b), -ENOENT);
}

static void test_create_errors(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	char longname[300];
	uint64_t file, dir, gone;

	file = mkfile(f->m, 1, "f");
	assert_int_equal(meta_create(f->m, 1, "f", S_IFREG | 0644, 0, 0, 0, NULL, &a), -EEXIST);
	assert_int_equal(meta_create(f->m, 1, "f", S_IFDIR | 0755, 0, 0, 0, NULL, &a), -EEXIST);
	assert_int_equal(meta_create(f->m, file, "x", S_IFREG | 0644, 0, 0, 0, NULL, &a), -ENOTDIR);
	assert_int_equal(meta_create(f->m, 999, "x", S_IFREG | 0644, 0, 0, 0, NULL, &a), -ENOENT);

	memset(longname, 'n', 256);
	longname[256] = '\0';
	assert_int_equal(meta_create(f->m, 1, longname, S_IFREG | 0644, 0, 0, 0, NULL, &a),
			 -ENAMETOOLONG);
	assert_int_equal(meta_lookup(f->m, 1, longname, &a), -ENAMETOOLONG);
	/* 255 bytes is fine. */
	longname[255] = '\0';
	assert_int_equal(meta_create(f->m, 1, longname, S_IFREG | 0644, 0, 0, 0, NULL, &a), 0);
	assert_int_equal(meta_lookup(f->m, 1, longname, &a), 0);

	/* A removed directory (still referenced by the kernel) takes no new entries. */
	dir = mkdir_(f->m, 1, "d");
	assert_int_equal(meta_rmdir(f->m, 1, "d", &gone), 0);
	assert_true(gone == dir);
	assert_int_equal(meta_create(f->m, dir, "x", S_IFREG | 0644, 0, 0, 0, NULL, &a), -ENOENT);
	assert_int_equal(meta_release_inode(f->m, dir), 0);
	assert_int_equal(meta_create(f->m, dir, "x", S_IFREG | 0644, 0, 0, 0, NULL, &a), -ENOENT);
	assert_int_equal(meta_getattr(f->m, dir, &a), -ENOENT);
}

static void test_link_counts(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	uint64_t file, d1, d2, sub, gone = 99;

	file = mkfile(f->m, 1, "f");
	d1 = mkdir_(f->m, 1, "d1");
	assert_int_equal(nlink_of(f->m, 1), 3);
	d2 = mkdir_(f->m, 1, "d2");
	assert_int_equal(nlink_of(f->m, 1), 4);
	sub = mkdir_(f->m, d1, "sub");
	assert_int_equal(nlink_of(f->m, d1), 3);
	assert_int_equal(nlink_of(f->m, sub), 2);
	/* Files do not count in a directory's links. */
	mkfile(f->m, d1, "x");
	assert_int_equal(nlink_of(f->m, d1), 3);

	assert_int_equal(meta_link(f->m, file, d1, "f2", &a), 0);
	assert_int_equal(a.nlink, 2);
	assert_int_equal(meta_link(f->m, file, d2, "f3", &a), 0);
	assert_int_equal(a.nlink, 3);
	assert_int_equal(nlink_of(f->m, file), 3);
	assert_true(ino_at(f->m, d2, "f3") == file);
	assert_int_equal(meta_link(f->m, file, d2, "f3", &a), -EEXIST);
	assert_int_equal(meta_link(f->m, d1, d2, "dl", &a), -EPERM);
	assert_int_equal(meta_link(f->m, file, file, "zz", &a), -ENOTDIR);

	assert_int_equal(meta_unlink(f->m, 1, "f", &gone), 0);
	assert_true(gone == 0);
	assert_int_equal(nlink_of(f->m, file), 2);
	assert_int_equal(meta_unlink(f->m, d1, "f2", &gone), 0);
	assert_true(gone == 0);
	assert_int_equal(nlink_of(f->m, file), 1);
	assert_int_equal(meta_unlink(f->m, d2, "f3", &gone), 0);
	assert_true(gone == file);
	assert_int_equal(nlink_of(f->m, file), 0);
	/* No new link to an unlinked file. */
	assert_int_equal(meta_link(f->m, file, 1, "back", &a), -ENOENT);
	assert_int_equal(meta_unlink(f->m, d2, "f3", &gone), -ENOENT);
	assert_int_equal(meta_unlink(f->m, 1, "d1", &gone), -EISDIR);

	/* rmdir: non-empty, not a directory, then empty. */
	assert_int_equal(meta_rmdir(f->m, 1, "d1", &gone), -ENOTEMPTY);
	assert_int_equal(meta_rmdir(f->m, d1, "x", &gone), -ENOTDIR);
	assert_int_equal(meta_rmdir(f->m, d1, "sub", &gone), 0);
	assert_true(gone == sub);
	assert_int_equal(nlink_of(f->m, d1), 2);
	assert_int_equal(meta_unlink(f->m, d1, "x", &gone), 0);
	assert_int_equal(meta_rmdir(f->m, 1, "d1", &gone), 0);
	assert_true(gone == d1);
	assert_int_equal(nlink_of(f->m, 1), 3);
	assert_int_equal(meta_rmdir(f->m, 1, "d2", &gone), 0);
	assert_int_equal(nlink_of(f->m, 1), 2);
	assert_int_equal(meta_lookup(f->m, 1, "d1", &a), -ENOENT);
}

/* ---------------------------------------------------------------- rename */

static void test_rename_basic(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	uint64_t a_ino, b_ino, d, gone = 99;

	a_ino = mkfile(f->m, 1, "a");
	d = mkdir_(f->m, 1, "d");
	assert_int_equal(meta_rename(f->m, 1, "a", 1, "b", 0, &gone), 0);
	assert_true(gone == 0);
	assert_int_equal(meta_lookup(f->m, 1, "a", &a), -ENOENT);
	assert_true(ino_at(f->m, 1, "b") == a_ino);

	/* Across directories. */
	assert_int_equal(meta_rename(f->m, 1, "b", d, "c", 0, &gone), 0);
	assert_true(ino_at(f->m, d, "c") == a_ino);
	assert_int_equal(meta_lookup(f->m, 1, "b", &a), -ENOENT);

	/* Over an existing file: the old one is gone. */
	b_ino = mkfile(f->m, 1, "b");
	assert_int_equal(meta_rename(f->m, d, "c", 1, "b", 0, &gone), 0);
	assert_true(gone == b_ino);
	assert_int_equal(nlink_of(f->m, b_ino), 0);
	assert_true(ino_at(f->m, 1, "b") == a_ino);
	assert_int_equal(meta_lookup(f->m, d, "c", &a), -ENOENT);

	/* Over a hard link of itself: nothing happens. */
	assert_int_equal(meta_link(f->m, a_ino, 1, "b2", NULL), 0);
	assert_int_equal(meta_rename(f->m, 1, "b", 1, "b2", 0, &gone), 0);
	assert_true(gone == 0);
	assert_true(ino_at(f->m, 1, "b") == a_ino);
	assert_true(ino_at(f->m, 1, "b2") == a_ino);
	assert_int_equal(nlink_of(f->m, a_ino), 2);

	/* Missing source, bad flags, long name. */
	assert_int_equal(meta_rename(f->m, 1, "zz", 1, "yy", 0, &gone), -ENOENT);
	assert_int_equal(meta_rename(f->m, 1, "b", 1, "yy", 0x80, &gone), -EINVAL);
	{
		char longname[300];

		memset(longname, 'q', 256);
		longname[256] = '\0';
		assert_int_equal(meta_rename(f->m, 1, "b", 1, longname, 0, &gone), -ENAMETOOLONG);
	}
}

static void test_rename_dirs(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	uint64_t src, empty, full, file, sub, p2, gone = 99;

	src = mkdir_(f->m, 1, "src");
	empty = mkdir_(f->m, 1, "empty");
	full = mkdir_(f->m, 1, "full");
	mkfile(f->m, full, "x");
	file = mkfile(f->m, 1, "file");
	assert_int_equal(nlink_of(f->m, 1), 5);

	assert_int_equal(meta_rename(f->m, 1, "src", 1, "full", 0, &gone), -ENOTEMPTY);
	assert_int_equal(meta_rename(f->m, 1, "file", 1, "empty", 0, &gone), -EISDIR);
	assert_int_equal(meta_rename(f->m, 1, "src", 1, "file", 0, &gone), -ENOTDIR);
	assert_true(ino_at(f->m, 1, "src") == src);
	assert_true(ino_at(f->m, 1, "file") == file);

	/* Directory over an empty directory (same parent). */
	assert_int_equal(meta_rename(f->m, 1, "src", 1, "empty", 0, &gone), 0);
	assert_true(gone == empty);
	assert_true(ino_at(f->m, 1, "empty") == src);
	assert_int_equal(nlink_of(f->m, 1), 4);
	assert_int_equal(meta_release_inode(f->m, empty), 0);
	assert_int_equal(meta_getattr(f->m, empty, &a), -ENOENT);

	/* Directory over an empty directory in another parent. */
	p2 = mkdir_(f->m, 1, "p2");
	sub = mkdir_(f->m, p2, "target");
	assert_int_equal(nlink_of(f->m, 1), 5);
	assert_int_equal(nlink_of(f->m, p2), 3);
	assert_int_equal(meta_rename(f->m, 1, "empty", p2, "target", 0, &gone), 0);
	assert_true(gone == sub);
	assert_int_equal(nlink_of(f->m, 1), 4);
	assert_int_equal(nlink_of(f->m, p2), 3);
	assert_true(ino_at(f->m, p2, "target") == src);

	/* Plain move of a directory: link counts follow. */
	assert_int_equal(meta_rename(f->m, p2, "target", full, "moved", 0, &gone), 0);
	assert_true(gone == 0);
	assert_int_equal(nlink_of(f->m, p2), 2);
	assert_int_equal(nlink_of(f->m, full), 3);

	/* Into its own subtree. */
	sub = mkdir_(f->m, src, "child");
	assert_int_equal(meta_rename(f->m, 1, "full", src, "loop", 0, &gone), -EINVAL);
	assert_int_equal(meta_rename(f->m, 1, "full", sub, "loop", 0, &gone), -EINVAL);
	assert_int_equal(meta_rename(f->m, 1, "full", full, "loop", 0, &gone), -EINVAL);
	assert_true(ino_at(f->m, 1, "full") == full);
	/* Into a file. */
	assert_int_equal(meta_rename(f->m, 1, "p2", file, "x", 0, &gone), -ENOTDIR);
}

static void test_rename_flags(void **state)
{
	struct fx *f = *state;
	uint64_t a, b, d1, d2, dir, gone = 99;

	a = mkfile(f->m, 1, "a");
	b = mkfile(f->m, 1, "b");
	assert_int_equal(meta_rename(f->m, 1, "a", 1, "b", RENAME_NOREPLACE, &gone), -EEXIST);
	assert_true(ino_at(f->m, 1, "a") == a);
	assert_int_equal(meta_rename(f->m, 1, "a", 1, "c", RENAME_NOREPLACE, &gone), 0);
	assert_true(ino_at(f->m, 1, "c") == a);

	/* Exchange needs both names. */
	assert_int_equal(meta_rename(f->m, 1, "c", 1, "nope", RENAME_EXCHANGE, &gone), -ENOENT);
	assert_int_equal(meta_rename(f->m, 1, "c", 1, "b", RENAME_EXCHANGE, &gone), 0);
	assert_true(gone == 0);
	assert_true(ino_at(f->m, 1, "c") == b);
	assert_true(ino_at(f->m, 1, "b") == a);
	assert_int_equal(nlink_of(f->m, a), 1);
	assert_int_equal(nlink_of(f->m, b), 1);

	/* A file and a directory across parents: the parents' link counts swap. */
	d1 = mkdir_(f->m, 1, "d1");
	d2 = mkdir_(f->m, 1, "d2");
	dir = mkdir_(f->m, d1, "dir");
	mkfile(f->m, dir, "inside");
	assert_int_equal(meta_rename(f->m, 1, "b", d2, "file", 0, &gone), 0);
	assert_int_equal(nlink_of(f->m, d1), 3);
	assert_int_equal(nlink_of(f->m, d2), 2);
	assert_int_equal(meta_rename(f->m, d1, "dir", d2, "file", RENAME_EXCHANGE, &gone), 0);
	assert_true(gone == 0);
	assert_true(ino_at(f->m, d1, "dir") == a);
	assert_true(ino_at(f->m, d2, "file") == dir);
	assert_int_equal(nlink_of(f->m, d1), 2);
	assert_int_equal(nlink_of(f->m, d2), 3);
	assert_int_equal(nlink_of(f->m, dir), 2);
	/* The moved directory's new parent is known: moving d2 into it is a loop. */
	assert_int_equal(meta_rename(f->m, 1, "d2", dir, "loop", 0, &gone), -EINVAL);
	/* And d1 can be removed once the file goes. */
	assert_int_equal(meta_unlink(f->m, d1, "dir", &gone), 0);
	assert_true(gone == a);
	assert_int_equal(meta_rmdir(f->m, 1, "d1", &gone), 0);

	/* Back the other way (file in the new parent, directory in the old). */
	mkfile(f->m, 1, "f2");
	assert_int_equal(meta_rename(f->m, 1, "f2", d2, "file", RENAME_EXCHANGE, &gone), 0);
	assert_true(ino_at(f->m, 1, "f2") == dir);
	assert_int_equal(nlink_of(f->m, d2), 2);
	assert_int_equal(nlink_of(f->m, 1), 4); /* root: d2 and the directory now at "f2" */
}

/* ---------------------------------------------------------------- chunks */

static void test_chunks_overlap(void **state)
{
	struct fx *f = *state;
	struct meta_chunk *l;
	uint64_t ino = mkfile(f->m, 1, "f");
	int n;

	write1(f->m, ino, 0, 100, 0, "1,a");
	assert_true(size_of(f->m, ino) == 100);
	/* Middle overwrite splits A. */
	write1(f->m, ino, 40, 20, 5, "1,b");
	n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
	assert_int_equal(n, 3);
	expect_chunk(&l[0], 0, 40, 0, "1,a");
	expect_chunk(&l[1], 40, 20, 5, "1,b");
	expect_chunk(&l[2], 60, 40, 60, "1,a");
	free(l);
	assert_true(size_of(f->m, ino) == 100);

	/* Overlapping the tail of the file grows it, trims the right piece of A. */
	write1(f->m, ino, 90, 50, 0, "1,c");
	assert_true(size_of(f->m, ino) == 140);
	/* Covering the start: trims the left piece of A, drops nothing else. */
	write1(f->m, ino, 0, 10, 100, "1,d");
	/* Covers B exactly and part of A's right piece. */
	write1(f->m, ino, 40, 30, 7, "1,e");
	n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
	assert_int_equal(n, 5);
	expect_chunk(&l[0], 0, 10, 100, "1,d");
	expect_chunk(&l[1], 10, 30, 10, "1,a");
	expect_chunk(&l[2], 40, 30, 7, "1,e");
	expect_chunk(&l[3], 70, 20, 70, "1,a");
	expect_chunk(&l[4], 90, 50, 0, "1,c");
	free(l);
	assert_int_equal(meta_chunk_count(f->m, ino), 5);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	assert_int_equal(gc_count(f->m, "1,a"), 0);

	/* Partial reads: the interval before the offset reaching in is included. */
	n = meta_read_chunks(f->m, ino, 45, 30, &l);
	assert_int_equal(n, 2);
	expect_chunk(&l[0], 40, 30, 7, "1,e");
	expect_chunk(&l[1], 70, 20, 70, "1,a");
	free(l);
	n = meta_read_chunks(f->m, ino, 70, 1, &l);
	assert_int_equal(n, 1);
	expect_chunk(&l[0], 70, 20, 70, "1,a");
	free(l);
	n = meta_read_chunks(f->m, ino, 140, 100, &l);
	assert_int_equal(n, 0);
	free(l);

	/* Several chunks in one call, later ones win; min_size grows the file. */
	{
		struct meta_chunk cs[2] = {chunk(200, 10, 0, "1,f"), chunk(205, 10, 0, "1,g")};
		struct meta_attr a;

		assert_int_equal(meta_write_chunks(f->m, ino, cs, 2, 500, false, &a), 0);
		assert_true(a.size == 500);
		n = meta_read_chunks(f->m, ino, 150, 100, &l);
		assert_int_equal(n, 2);
		expect_chunk(&l[0], 200, 5, 0, "1,f");
		expect_chunk(&l[1], 205, 10, 0, "1,g");
		free(l);
	}
	/* A hole between chunks is simply absent. */
	n = meta_read_chunks(f->m, ino, 140, 60, &l);
	assert_int_equal(n, 0);
	free(l);

	/* Another file's chunks do not leak in. */
	{
		uint64_t other = mkfile(f->m, 1, "g");

		write1(f->m, other, 0, 1000, 0, "2,a");
		n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
		assert_int_equal(n, 7);
		free(l);
		n = meta_read_chunks(f->m, other, 0, UINT64_MAX, &l);
		assert_int_equal(n, 1);
		free(l);
	}
}

static void test_truncate(void **state)
{
	struct fx *f = *state;
	struct meta_chunk *l;
	struct meta_attr in = {0}, out;
	uint64_t ino = mkfile(f->m, 1, "f"), d = mkdir_(f->m, 1, "d");
	int n;

	write1(f->m, ino, 0, 100, 0, "1,a");
	write1(f->m, ino, 100, 100, 0, "1,b");
	in.size = 150;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &out), 0);
	assert_true(out.size == 150);
	n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
	assert_int_equal(n, 2);
	expect_chunk(&l[1], 100, 50, 0, "1,b");
	free(l);
	assert_int_equal(gc_count(f->m, "1,b"), 0);
	in.size = 50;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &out), 0);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	/* Extend: a hole, no chunk. */
	in.size = 4096;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &out), 0);
	assert_true(size_of(f->m, ino) == 4096);
	n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
	assert_int_equal(n, 1);
	expect_chunk(&l[0], 0, 50, 0, "1,a");
	free(l);
	in.size = 0;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &out), 0);
	assert_int_equal(meta_chunk_count(f->m, ino), 0);
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(meta_setattr(f->m, d, &in, META_SET_SIZE, &out), -EISDIR);
	/* A truncate to the same size marks the data modified too (as ext4 does). */
	in.mtime_ns = in.ctime_ns = 7;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_MTIME | META_SET_CTIME, NULL), 0);
	in.size = 0;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &out), 0);
	assert_true(out.mtime_ns > 7 && out.ctime_ns > 7);
	/* An explicit mtime given with the size wins. */
	in.mtime_ns = 9;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE | META_SET_MTIME, &out), 0);
	assert_true(out.mtime_ns == 9 && out.ctime_ns > 7);

	/* Other attributes. */
	in.mode = S_IFDIR | 0600; /* the type never changes */
	in.uid = 7;
	in.gid = 8;
	in.atime_ns = 111;
	in.mtime_ns = 222;
	in.ctime_ns = 333;
	assert_int_equal(meta_setattr(f->m, ino, &in,
				      META_SET_MODE | META_SET_UID | META_SET_GID | META_SET_ATIME |
					  META_SET_MTIME | META_SET_CTIME,
				      &out),
			 0);
	assert_true(S_ISREG(out.mode));
	assert_int_equal(out.mode & 07777, 0600);
	assert_int_equal(out.uid, 7);
	assert_int_equal(out.gid, 8);
	assert_true(out.atime_ns == 111 && out.mtime_ns == 222 && out.ctime_ns == 333);
	assert_int_equal(meta_getattr(f->m, ino, &in), 0);
	assert_memory_equal(&in, &out, sizeof(in));
}

/* Randomised model check: a reference byte array says which blob byte each file byte is. */
#define MODEL_MAX 4096
#define MODEL_OPS 2000

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(uint64_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state % n;
}

static void test_chunks_model(void **state)
{
	struct fx *f = *state;
	static int who[MODEL_MAX];	  /* write number, -1 for a hole */
	static uint64_t where[MODEL_MAX]; /* position inside that write's blob */
	static int seen[MODEL_OPS];
	static int live[MODEL_OPS];
	static int gc_seen[MODEL_OPS];
	uint64_t ino = mkfile(f->m, 1, "model"), size = 0;
	int writes = 0;

	for (int i = 0; i < MODEL_MAX; i++)
		who[i] = -1;
	rng_state = 0x9e3779b97f4a7c15ull;
	for (int op = 0; op < MODEL_OPS; op++) {
		struct meta_chunk *l;
		int n;

		if (rnd(8) == 0) {
			struct meta_attr in = {0};

			in.size = rnd(MODEL_MAX);
			assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, NULL), 0);
			for (uint64_t p = in.size; p < MODEL_MAX; p++)
				who[p] = -1;
			size = in.size;
		} else {
			uint64_t off = rnd(MODEL_MAX - 1), len = 1 + rnd(600), boff = rnd(100);
			char fid[META_FID_MAX];

			if (off + len > MODEL_MAX)
				len = MODEL_MAX - off;
			snprintf(fid, sizeof(fid), "7,%x", writes);
			write1(f->m, ino, off, len, boff, fid);
			for (uint64_t p = off; p < off + len; p++) {
				who[p] = writes;
				where[p] = boff + (p - off);
			}
			if (off + len > size)
				size = off + len;
			writes++;
		}
		assert_true(size_of(f->m, ino) == size);

		/* The whole file. */
		n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
		assert_true(n >= 0);
		memset(seen, 0, sizeof(seen));
		{
			uint64_t next = 0;

			for (int i = 0; i < n; i++) {
				unsigned w;

				assert_true(l[i].length > 0);
				assert_true(l[i].offset >= next); /* in order, no overlap */
				assert_true(l[i].offset + l[i].length <= size);
				for (uint64_t p = next; p < l[i].offset; p++)
					assert_int_equal(who[p], -1);
				assert_int_equal(sscanf(l[i].fid, "7,%x", &w), 1);
				for (uint64_t p = l[i].offset; p < l[i].offset + l[i].length; p++) {
					if (who[p] != (int)w ||
					    where[p] != l[i].blob_offset + (p - l[i].offset))
						fail_msg(
						    "op %d: byte %llu is (%d,%llu) in the model "
						    "but (%u,%llu) in meta",
						    op, (unsigned long long)p, who[p],
						    (unsigned long long)where[p], w,
						    (unsigned long long)(l[i].blob_offset +
									 (p - l[i].offset)));
				}
				next = l[i].offset + l[i].length;
			}
			for (uint64_t p = next; p < MODEL_MAX; p++)
				assert_int_equal(who[p], -1);
		}
		free(l);

		/* A random window returns exactly the intervals overlapping it. */
		{
			uint64_t off = rnd(MODEL_MAX), len = 1 + rnd(1000);
			struct meta_chunk *all;
			int na = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &all), expect = 0;

			for (int i = 0; i < na; i++)
				if (all[i].offset < off + len &&
				    all[i].offset + all[i].length > off)
					expect++;
			n = meta_read_chunks(f->m, ino, off, len, &l);
			assert_int_equal(n, expect);
			for (int i = 0, j = 0; i < na; i++)
				if (all[i].offset < off + len &&
				    all[i].offset + all[i].length > off)
					assert_true(l[j++].offset == all[i].offset);
			free(l);
			free(all);
		}

		/* gc: exactly the blobs no byte uses any more, each once. */
		if (op % 50 == 49 || op == MODEL_OPS - 1) {
			int g = meta_gc_take(f->m, GC_MAX, gc_fids, gc_seqs);

			assert_true(g >= 0 && g < GC_MAX);
			memset(live, 0, sizeof(live));
			memset(gc_seen, 0, sizeof(gc_seen));
			for (int p = 0; p < MODEL_MAX; p++)
				if (who[p] >= 0)
					live[who[p]] = 1;
			for (int i = 0; i < g; i++) {
				unsigned w;

				assert_int_equal(sscanf(gc_fids[i], "7,%x", &w), 1);
				assert_true(w < (unsigned)writes);
				gc_seen[w]++;
			}
			for (int w = 0; w < writes; w++)
				if (gc_seen[w] != !live[w])
					fail_msg("op %d: blob %d live=%d but %d time(s) in gc", op,
						 w, live[w], gc_seen[w]);
		}
	}
	/* Everything to gc once the file is deleted. */
	{
		uint64_t gone;

		assert_int_equal(meta_unlink(f->m, 1, "model", &gone), 0);
		assert_true(gone == ino);
		assert_int_equal(meta_release_inode(f->m, ino), 0);
		assert_int_equal(meta_gc_pending(f->m), writes);
	}
}

/* ---------------------------------------------------------------- gc */

static void test_gc(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f"), gone;
	int n;

	assert_int_equal(meta_gc_pending(f->m), 0);
	write1(f->m, ino, 0, 100, 0, "1,a");
	/* Partially overwritten (split in two): still used. */
	write1(f->m, ino, 10, 10, 0, "1,b");
	assert_int_equal(gc_count(f->m, "1,a"), 0);
	write1(f->m, ino, 0, 15, 0, "1,c");
	assert_int_equal(gc_count(f->m, "1,a"), 0);
	assert_int_equal(gc_count(f->m, "1,b"), 0);
	/* Its last piece goes. */
	write1(f->m, ino, 15, 85, 0, "1,d");
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	assert_int_equal(meta_gc_pending(f->m), 2);

	/* gc_done removes exactly that entry; unknown seqs are fine. */
	n = meta_gc_take(f->m, GC_MAX, gc_fids, gc_seqs);
	assert_int_equal(n, 2);
	assert_int_equal(meta_gc_done(f->m, gc_seqs[0]), 0);
	assert_int_equal(meta_gc_pending(f->m), 1);
	assert_int_equal(meta_gc_done(f->m, gc_seqs[0]), 0);
	assert_int_equal(meta_gc_done(f->m, 987654), 0);
	assert_int_equal(meta_gc_pending(f->m), 1);
	gc_drain(f->m);
	/* take with a small n. */
	write1(f->m, ino, 0, 100, 0, "1,e");
	assert_int_equal(meta_gc_pending(f->m), 2);
	n = meta_gc_take(f->m, 1, gc_fids, gc_seqs);
	assert_int_equal(n, 1);
	gc_drain(f->m);
	/* gc_done_n: a batch in one transaction, exactly those entries. */
	write1(f->m, ino, 0, 100, 0, "1,f");
	write1(f->m, ino, 0, 100, 0, "1,g");
	assert_int_equal(meta_gc_pending(f->m), 2);
	n = meta_gc_take(f->m, GC_MAX, gc_fids, gc_seqs);
	assert_int_equal(n, 2);
	assert_int_equal(meta_gc_done_n(f->m, gc_seqs, 0), 0);
	assert_int_equal(meta_gc_pending(f->m), 2);
	assert_int_equal(meta_gc_done_n(f->m, gc_seqs, 1), 0);
	assert_int_equal(meta_gc_pending(f->m), 1);
	assert_int_equal(meta_gc_done_n(f->m, gc_seqs, 2), 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	write1(f->m, ino, 0, 100, 0, "1,e"); /* back to the state the rest expects */
	gc_drain(f->m);

	/* Data of a file with links left is not freed; of one with none, it is. */
	assert_int_equal(meta_link(f->m, ino, 1, "g", NULL), 0);
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	assert_int_equal(meta_unlink(f->m, 1, "f", &gone), 0);
	assert_true(gone == 0);
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	assert_int_equal(meta_unlink(f->m, 1, "g", &gone), 0);
	assert_true(gone == ino);
	/* Unlinked but open: still readable and writable. */
	assert_int_equal(meta_chunk_count(f->m, ino), 1);
	write1(f->m, ino, 100, 10, 0, "1,f");
	assert_int_equal(meta_gc_pending(f->m), 0);
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(gc_count(f->m, "1,e"), 1);
	assert_int_equal(gc_count(f->m, "1,f"), 1);
	assert_int_equal(meta_gc_pending(f->m), 2);
	/* Twice is harmless. */
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(meta_gc_pending(f->m), 2);
	{
		struct meta_attr a;

		assert_int_equal(meta_getattr(f->m, ino, &a), -ENOENT);
	}
}

/* ---------------------------------------------------------------- holes, copies, ACLs */

static uint64_t stored_of(struct meta *m, uint64_t ino)
{
	struct meta_attr a;

	assert_int_equal(meta_getattr(m, ino, &a), 0);
	return a.stored;
}

/* fallocate: punch holes (blobs no interval uses go to gc), extend, keep the size. */
static void test_fallocate(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f");
	struct meta_chunk *list;
	struct meta_attr a;

	write1(f->m, ino, 0, 100, 0, "1,a");
	write1(f->m, ino, 100, 100, 0, "1,b");
	assert_true(stored_of(f->m, ino) == 200);
	/* a hole over all of b and the end of a: b goes to gc, a stays */
	assert_int_equal(meta_fallocate(f->m, ino, 50, 150, true, false, 0, &a), 0);
	assert_true(a.size == 200 && a.stored == 50);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	assert_int_equal(gc_count(f->m, "1,a"), 0);
	assert_int_equal(meta_read_chunks(f->m, ino, 0, UINT64_MAX, &list), 1);
	expect_chunk(&list[0], 0, 50, 0, "1,a");
	free(list);
	/* a hole inside a: two pieces of one blob */
	assert_int_equal(meta_fallocate(f->m, ino, 10, 5, true, false, 0, NULL), 0);
	assert_int_equal(meta_read_chunks(f->m, ino, 0, UINT64_MAX, &list), 2);
	expect_chunk(&list[0], 0, 10, 0, "1,a");
	expect_chunk(&list[1], 15, 35, 15, "1,a");
	free(list);
	assert_true(stored_of(f->m, ino) == 45);
	/* extend (mode 0), zero range past the end, keep size, min_size */
	assert_int_equal(meta_fallocate(f->m, ino, 1000, 24, false, true, 0, &a), 0);
	assert_true(a.size == 1024 && a.stored == 45);
	assert_int_equal(meta_fallocate(f->m, ino, 2000, 10, true, true, 0, &a), 0);
	assert_true(a.size == 2010);
	assert_int_equal(meta_fallocate(f->m, ino, 5000, 10, false, false, 0, &a), 0);
	assert_true(a.size == 2010);
	assert_int_equal(meta_fallocate(f->m, ino, 0, 10, true, false, 3000, &a), 0);
	assert_true(a.size == 3000 && a.stored == 35);
	assert_int_equal(meta_fallocate(f->m, ino, 0, 0, true, false, 0, NULL), -EINVAL);
	assert_int_equal(meta_fallocate(f->m, 1, 0, 10, true, false, 0, NULL), -EISDIR);
	/* truncate keeps `stored` right */
	write1(f->m, ino, 2990, 10, 0, "1,c");
	assert_true(stored_of(f->m, ino) == 45);
	assert_int_equal(
	    meta_setattr(f->m, ino, &(struct meta_attr){.size = 20}, META_SET_SIZE, &a), 0);
	assert_true(a.stored == 5); /* [15, 20) of a */
}

/* copy_range: the copy names the same blob slices; a blob goes to gc only when no
 * interval of any file uses it. */
static void test_copy_range(void **state)
{
	struct fx *f = *state;
	uint64_t src = mkfile(f->m, 1, "src"), dst = mkfile(f->m, 1, "dst"), copied, gone;
	struct meta_chunk *list;
	struct meta_attr a;

	write1(f->m, src, 0, 100, 0, "1,a");
	write1(f->m, src, 200, 100, 0, "1,b"); /* a hole [100, 200) */
	write1(f->m, dst, 0, 400, 0, "1,d");
	/* [50, 250) of src onto [10, 210) of dst: a's tail, the hole, b's head */
	assert_int_equal(meta_copy_range(f->m, src, 50, dst, 10, 200, &copied, &a), 0);
	assert_true(copied == 200 && a.size == 400);
	assert_true(a.stored == 400 - 200 + 50 + 50);
	assert_int_equal(meta_read_chunks(f->m, dst, 0, UINT64_MAX, &list), 4);
	expect_chunk(&list[0], 0, 10, 0, "1,d");
	expect_chunk(&list[1], 10, 50, 50, "1,a");
	expect_chunk(&list[2], 160, 50, 0, "1,b");
	expect_chunk(&list[3], 210, 190, 210, "1,d");
	free(list);
	assert_int_equal(meta_gc_pending(f->m), 0);
	/* the source goes: nothing the copy uses goes to gc */
	assert_int_equal(meta_unlink(f->m, 1, "src", &gone), 0);
	assert_int_equal(meta_release_inode(f->m, src), 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	/* cut at the source's end; past it, nothing */
	src = mkfile(f->m, 1, "s2");
	write1(f->m, src, 0, 30, 0, "1,e");
	assert_int_equal(meta_copy_range(f->m, src, 20, dst, 500, 100, &copied, &a), 0);
	assert_true(copied == 10 && a.size == 510);
	assert_int_equal(meta_copy_range(f->m, src, 30, dst, 0, 100, &copied, NULL), 0);
	assert_true(copied == 0);
	/* within one file: not overlapping only */
	assert_int_equal(meta_copy_range(f->m, src, 0, src, 10, 20, &copied, NULL), -EINVAL);
	assert_int_equal(meta_copy_range(f->m, src, 0, src, 30, 20, &copied, &a), 0);
	assert_true(copied == 20 && a.size == 50);
	/* the destination's last user of d's blob goes, then e's */
	assert_int_equal(meta_unlink(f->m, 1, "dst", &gone), 0);
	assert_int_equal(meta_release_inode(f->m, dst), 0);
	assert_int_equal(gc_count(f->m, "1,d"), 1);
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	assert_int_equal(gc_count(f->m, "1,e"), 0);
	gc_drain(f->m);
	assert_int_equal(meta_unlink(f->m, 1, "s2", &gone), 0);
	assert_int_equal(meta_release_inode(f->m, src), 0);
	assert_int_equal(gc_count(f->m, "1,e"), 1);
}

/* An ACL value: version 2, then (tag, perm, id) triples. */
static size_t acl(uint8_t *buf, int n, const uint32_t (*e)[3])
{
	buf[0] = 2;
	buf[1] = buf[2] = buf[3] = 0;
	for (int i = 0; i < n; i++) {
		uint8_t *p = buf + 4 + 8 * i;

		p[0] = (uint8_t)e[i][0];
		p[1] = 0;
		p[2] = (uint8_t)e[i][1];
		p[3] = 0;
		memcpy(p + 4, &e[i][2], 4);
	}
	return 4 + 8 * (size_t)n;
}

static uint32_t perm_of(const uint8_t *v, int len, uint32_t tag)
{
	for (int i = 4; i + 8 <= len; i += 8)
		if (v[i] == tag)
			return v[i + 2];
	return 99;
}

static void test_acls(void **state)
{
	struct fx *f = *state;
	uint64_t d = mkdir_(f->m, 1, "d"), x = mkfile(f->m, 1, "x");
	uint8_t v[256], got[256];
	struct meta_attr a;
	const uint32_t ext[][3] = {{1, 6, 0}, {2, 7, 1000}, {4, 4, 0}, {0x10, 6, 0}, {0x20, 0, 0}};
	const uint32_t plain[][3] = {{1, 7, 0}, {4, 5, 0}, {0x20, 1, 0}};
	const uint32_t bad[][3] = {{1, 7, 0}, {0x20, 1, 0}};
	const uint32_t def[][3] = {{1, 7, 0}, {2, 7, 1000}, {4, 5, 0}, {0x10, 7, 0}, {0x20, 5, 0}};
	size_t n;
	int len;

	/* an extended access ACL: kept; the mode's group bits are the mask */
	n = acl(v, 5, ext);
	assert_int_equal(meta_setxattr(f->m, x, META_ACL_ACCESS, v, n, 0), 0);
	assert_int_equal(meta_getattr(f->m, x, &a), 0);
	assert_int_equal(a.mode & 0777, 0660);
	assert_int_equal(meta_getxattr(f->m, x, META_ACL_ACCESS, got, sizeof(got)), (int)n);
	/* chmod: the owner, mask and other entries follow */
	assert_int_equal(
	    meta_setattr(f->m, x, &(struct meta_attr){.mode = 0751}, META_SET_MODE, NULL), 0);
	len = meta_getxattr(f->m, x, META_ACL_ACCESS, got, sizeof(got));
	assert_int_equal(perm_of(got, len, 1), 7);
	assert_int_equal(perm_of(got, len, 0x10), 5);
	assert_int_equal(perm_of(got, len, 4), 4); /* the group entry is left alone */
	assert_int_equal(perm_of(got, len, 0x20), 1);
	/* an ACL the mode says all of: the mode, and no xattr */
	n = acl(v, 3, plain);
	assert_int_equal(meta_setxattr(f->m, x, META_ACL_ACCESS, v, n, 0), 0);
	assert_int_equal(meta_getattr(f->m, x, &a), 0);
	assert_int_equal(a.mode & 0777, 0751);
	assert_int_equal(meta_getxattr(f->m, x, META_ACL_ACCESS, got, sizeof(got)), -ENODATA);
	n = acl(v, 2, bad);
	assert_int_equal(meta_setxattr(f->m, x, META_ACL_ACCESS, v, n, 0), -EINVAL);
	assert_int_equal(meta_setxattr(f->m, x, META_ACL_ACCESS, "junk", 4, 0), -EINVAL);
	/* default ACLs: directories only; inherited, the umask ignored */
	n = acl(v, 5, def);
	assert_int_equal(meta_setxattr(f->m, x, META_ACL_DEFAULT, v, n, 0), -EACCES);
	assert_int_equal(meta_setxattr(f->m, d, META_ACL_DEFAULT, v, n, 0), 0);
	assert_int_equal(meta_create_umask(f->m, d, "f", S_IFREG | 0640, 077, 0, 0, 0, NULL, &a),
			 0);
	assert_int_equal(a.mode, S_IFREG | 0640); /* mask rwx & r-- from the mode: r-- */
	len = meta_getxattr(f->m, a.ino, META_ACL_ACCESS, got, sizeof(got));
	assert_int_equal(len, (int)n);
	assert_int_equal(perm_of(got, len, 1), 6);
	assert_int_equal(perm_of(got, len, 0x10), 4);
	assert_int_equal(perm_of(got, len, 0x20), 0);
	assert_int_equal(perm_of(got, len, 2), 7); /* named entries as they are */
	assert_int_equal(meta_getxattr(f->m, a.ino, META_ACL_DEFAULT, got, sizeof(got)), -ENODATA);
	assert_int_equal(meta_create_umask(f->m, d, "sub", S_IFDIR | 0777, 077, 0, 0, 0, NULL, &a),
			 0);
	assert_int_equal(a.mode, S_IFDIR | 0775);
	assert_int_equal(meta_getxattr(f->m, a.ino, META_ACL_DEFAULT, got, sizeof(got)), (int)n);
	/* a symlink takes nothing; without a default ACL the umask applies */
	assert_int_equal(meta_create_umask(f->m, d, "l", S_IFLNK | 0777, 077, 0, 0, 0, "t", &a), 0);
	assert_int_equal(meta_getxattr(f->m, a.ino, META_ACL_ACCESS, got, sizeof(got)), -ENODATA);
	assert_int_equal(meta_removexattr(f->m, d, META_ACL_DEFAULT), 0);
	assert_int_equal(meta_create_umask(f->m, d, "g", S_IFREG | 0666, 027, 0, 0, 0, NULL, &a),
			 0);
	assert_int_equal(a.mode, S_IFREG | 0640);
	assert_int_equal(meta_getxattr(f->m, a.ino, META_ACL_ACCESS, got, sizeof(got)), -ENODATA);
}

/* Inode records written before `stored` (72 bytes) still read; their `stored` is
 * unknown until their data changes, then computed from the intervals. */
static void test_old_inode_record(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "old");
	struct kv *kv;
	struct kv_txn *t;
	struct meta_attr a;
	const uint8_t *v;
	size_t vlen;
	uint8_t k[8], rec[sizeof(struct meta_attr)];
	const size_t v1 = offsetof(struct meta_attr, stored);

	write1(f->m, ino, 0, 100, 0, "1,a");
	write1(f->m, ino, 200, 50, 0, "1,b");
	assert_true(stored_of(f->m, ino) == 150);
	meta_close(f->m);
	f->m = NULL;
	if (f->db[0]) {
		struct kv_pg_options o = {.timeout_ms = 5000, .connections = 1};

		assert_int_equal(kv_pg_open(f->spec, &o, &kv), 0);
	} else {
		assert_int_equal(kv_lmdb_open(f->spec, &kv), 0);
	}
	assert_int_equal(kv->ops->begin(kv, true, &t), 0);
	be64(k, ino);
	assert_int_equal(kv_get(t, KV_INODES, k, 8, &v, &vlen), 0);
	assert_int_equal(vlen, sizeof(rec));
	memcpy(rec, v, sizeof(rec));
	assert_int_equal(kv_put(t, KV_INODES, k, 8, rec, v1), 0);
	assert_int_equal(kv->ops->commit(t), 0);
	kv->ops->close(kv);
	assert_int_equal(meta_open(f->spec, &f->m), 0);
	assert_int_equal(meta_getattr(f->m, ino, &a), 0);
	assert_true(a.stored == META_STORED_UNKNOWN && a.size == 250);
	assert_int_equal(meta_lookup(f->m, 1, "old", &a), 0);
	assert_true(a.stored == META_STORED_UNKNOWN && a.ino == ino);
	write1(f->m, ino, 0, 10, 0, "1,c");
	assert_true(stored_of(f->m, ino) == 150);
}

/* A blob referenced twice by two files goes to gc only when both are gone. */
static void test_gc_shared_blob(void **state)
{
	struct fx *f = *state;
	uint64_t a = mkfile(f->m, 1, "a"), b = mkfile(f->m, 1, "b"), gone;

	write1(f->m, a, 0, 50, 0, "1,s");
	write1(f->m, b, 0, 50, 50, "1,s");
	write1(f->m, a, 0, 50, 0, "1,t");
	assert_int_equal(gc_count(f->m, "1,s"), 0);
	assert_int_equal(meta_unlink(f->m, 1, "b", &gone), 0);
	assert_int_equal(meta_release_inode(f->m, b), 0);
	assert_int_equal(gc_count(f->m, "1,s"), 1);
}

/*
 * Recording the same chunk again (e.g. a retried commit of the same upload) leaves
 * the blob in use, so it must not be sent to gc: deleting it would lose the file's data.
 */
static void test_gc_rewrite_same_blob(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f");

	write1(f->m, ino, 0, 100, 0, "1,a");
	write1(f->m, ino, 0, 100, 0, "1,a");
	assert_int_equal(meta_chunk_count(f->m, ino), 1);
	assert_int_equal(gc_count(f->m, "1,a"), 0);
}

static void test_orphans(void **state)
{
	struct fx *f = *state;
	uint64_t a = mkfile(f->m, 1, "a"), b = mkfile(f->m, 1, "b"), d = mkdir_(f->m, 1, "d");
	uint64_t gone, count;
	struct meta_attr attr;

	write1(f->m, a, 0, 10, 0, "1,a");
	write1(f->m, b, 0, 10, 0, "1,b");
	assert_int_equal(meta_setxattr(f->m, a, "user.x", "v", 1, 0), 0);
	assert_int_equal(meta_unlink(f->m, 1, "a", &gone), 0);
	assert_true(gone == a);
	assert_int_equal(meta_rmdir(f->m, 1, "d", &gone), 0);
	assert_true(gone == d);
	/* "Crash" while they are open: reopen, then release the orphans. */
	reopen(f);
	assert_int_equal(meta_getattr(f->m, a, &attr), 0);
	assert_int_equal(attr.nlink, 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	assert_int_equal(meta_release_orphans(f->m), 0);
	assert_int_equal(meta_getattr(f->m, a, &attr), -ENOENT);
	assert_int_equal(meta_getattr(f->m, d, &attr), -ENOENT);
	assert_int_equal(meta_getxattr(f->m, a, "user.x", NULL, 0), -ENODATA);
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(gc_count(f->m, "1,b"), 0);
	assert_int_equal(meta_getattr(f->m, b, &attr), 0);
	assert_int_equal(meta_inode_count(f->m, &count), 0);
	assert_true(count == 2);
	/* Nothing left to release. */
	assert_int_equal(meta_release_orphans(f->m), 0);
	assert_int_equal(meta_gc_pending(f->m), 1);
}

static void test_replace_chunks(void **state)
{
	struct fx *f = *state;
	struct meta_chunk *old, *l, fresh;
	uint64_t ino = mkfile(f->m, 1, "f");
	struct meta_attr before, after;
	int n;

	write1(f->m, ino, 0, 10, 0, "1,a");
	write1(f->m, ino, 10, 10, 0, "1,b");
	write1(f->m, ino, 20, 10, 0, "1,c");
	write1(f->m, ino, 30, 10, 0, "1,x");
	n = meta_read_chunks(f->m, ino, 0, 30, &old);
	assert_int_equal(n, 3);
	assert_int_equal(meta_getattr(f->m, ino, &before), 0);

	/* Unchanged: replaced by one chunk, the old blobs go to gc, times unchanged. */
	fresh = chunk(0, 30, 0, "1,m");
	assert_int_equal(meta_replace_chunks(f->m, ino, old, 3, &fresh), 0);
	n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &l);
	assert_int_equal(n, 2);
	expect_chunk(&l[0], 0, 30, 0, "1,m");
	expect_chunk(&l[1], 30, 10, 0, "1,x");
	free(l);
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(gc_count(f->m, "1,b"), 1);
	assert_int_equal(gc_count(f->m, "1,c"), 1);
	assert_int_equal(gc_count(f->m, "1,m"), 0);
	assert_int_equal(meta_getattr(f->m, ino, &after), 0);
	assert_true(after.mtime_ns == before.mtime_ns);
	assert_true(after.size == before.size);
	gc_drain(f->m);

	/* Changed meanwhile: nothing recorded, the new blob goes to gc. */
	write1(f->m, ino, 15, 2, 0, "1,n");
	fresh = chunk(0, 30, 0, "1,o");
	{
		struct meta_chunk stale = chunk(0, 30, 0, "1,m");

		assert_int_equal(meta_replace_chunks(f->m, ino, &stale, 1, &fresh), 0);
	}
	n = meta_read_chunks(f->m, ino, 0, 30, &l);
	assert_int_equal(n, 3);
	expect_chunk(&l[0], 0, 15, 0, "1,m");
	expect_chunk(&l[1], 15, 2, 0, "1,n");
	expect_chunk(&l[2], 17, 13, 17, "1,m");
	free(l);
	assert_int_equal(gc_count(f->m, "1,o"), 1);
	assert_int_equal(gc_count(f->m, "1,m"), 0);
	assert_int_equal(meta_gc_pending(f->m), 1);
	free(old);
}

/* ---------------------------------------------------------------- xattrs */

static void test_xattrs(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f"), other = mkfile(f->m, 1, "g");
	char buf[64];

	assert_int_equal(meta_getxattr(f->m, ino, "user.a", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(meta_listxattr(f->m, ino, buf, sizeof(buf)), 0);
	assert_int_equal(meta_setxattr(f->m, ino, "user.a", "hello", 5, 2), -ENODATA);
	assert_int_equal(meta_setxattr(f->m, ino, "user.a", "hello", 5, 1), 0);
	assert_int_equal(meta_setxattr(f->m, ino, "user.a", "again", 5, 1), -EEXIST);
	assert_int_equal(meta_getxattr(f->m, ino, "user.a", buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(meta_setxattr(f->m, ino, "user.a", "hi", 2, 2), 0);
	assert_int_equal(meta_getxattr(f->m, ino, "user.a", buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "hi", 2);
	assert_int_equal(meta_setxattr(f->m, ino, "user.b", "", 0, 0), 0);
	assert_int_equal(meta_getxattr(f->m, ino, "user.b", buf, sizeof(buf)), 0);
	assert_int_equal(meta_setxattr(f->m, ino, "user.c", "12345678", 8, 0), 0);
	assert_int_equal(meta_setxattr(f->m, ino, "user.c", "abcdefgh", 8, 0), 0);
	/* Sizes and small buffers. */
	assert_int_equal(meta_getxattr(f->m, ino, "user.c", NULL, 0), 8);
	assert_int_equal(meta_getxattr(f->m, ino, "user.c", buf, 7), -ERANGE);
	assert_int_equal(meta_getxattr(f->m, ino, "user.c", buf, 8), 8);
	assert_memory_equal(buf, "abcdefgh", 8);
	assert_int_equal(meta_listxattr(f->m, ino, NULL, 0), 21);
	assert_int_equal(meta_listxattr(f->m, ino, buf, 20), -ERANGE);
	assert_int_equal(meta_listxattr(f->m, ino, buf, 21), 21);
	assert_memory_equal(buf, "user.a\0user.b\0user.c\0", 21);
	/* Per inode. */
	assert_int_equal(meta_listxattr(f->m, other, buf, sizeof(buf)), 0);
	assert_int_equal(meta_getxattr(f->m, other, "user.a", buf, sizeof(buf)), -ENODATA);
	assert_int_equal(meta_setxattr(f->m, 9999, "user.a", "x", 1, 0), -ENOENT);

	{
		/* A change of the xattrs changes ctime (setattr sets it to a known value). */
		struct meta_attr in = {.ctime_ns = 5}, a;

		assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_CTIME, NULL), 0);
		assert_int_equal(meta_setxattr(f->m, ino, "user.d", "x", 1, 0), 0);
		assert_int_equal(meta_getattr(f->m, ino, &a), 0);
		assert_true(a.ctime_ns > 5);
		assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_CTIME, NULL), 0);
		assert_int_equal(meta_removexattr(f->m, ino, "user.d"), 0);
		assert_int_equal(meta_getattr(f->m, ino, &a), 0);
		assert_true(a.ctime_ns > 5);
		/* A failed removal changes nothing. */
		assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_CTIME, NULL), 0);
		assert_int_equal(meta_removexattr(f->m, ino, "user.d"), -ENODATA);
		assert_int_equal(meta_getattr(f->m, ino, &a), 0);
		assert_true(a.ctime_ns == 5);
		assert_int_equal(meta_removexattr(f->m, 9999, "user.d"), -ENOENT);
	}
	assert_int_equal(meta_removexattr(f->m, ino, "user.b"), 0);
	assert_int_equal(meta_removexattr(f->m, ino, "user.b"), -ENODATA);
	assert_int_equal(meta_listxattr(f->m, ino, buf, sizeof(buf)), 14);
	assert_memory_equal(buf, "user.a\0user.c\0", 14);
	assert_int_equal(meta_getxattr(f->m, ino, "user.b", buf, sizeof(buf)), -ENODATA);
}

/* ---------------------------------------------------------------- readdir */

struct names {
	char list[16][16];
	int n, stop_after;
};

static int collect(void *ctx, const char *name, const struct meta_attr *attr)
{
	struct names *s = ctx;

	assert_true(s->n < 16);
	snprintf(s->list[s->n++], sizeof(s->list[0]), "%s", name);
	assert_true(attr->ino > META_ROOT_INO);
	return s->stop_after && s->n >= s->stop_after;
}

static void test_readdir(void **state)
{
	struct fx *f = *state;
	struct names s;
	uint64_t d = mkdir_(f->m, 1, "d"), gone;
	const char *order[] = {"a", "ab", "b", "c", "zz"};

	mkfile(f->m, d, "zz");
	mkfile(f->m, d, "b");
	mkdir_(f->m, d, "ab");
	mkfile(f->m, d, "a");
	mkfile(f->m, d, "c");
	mkfile(f->m, 1, "outside");

	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, d, "", collect, &s), 0);
	assert_int_equal(s.n, 5);
	for (int i = 0; i < 5; i++)
		assert_string_equal(s.list[i], order[i]);

	/* Stop early, resume after the last name. */
	memset(&s, 0, sizeof(s));
	s.stop_after = 2;
	assert_int_equal(meta_readdir(f->m, d, "", collect, &s), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.list[1], "ab");
	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, d, "ab", collect, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.list[0], "b");
	assert_string_equal(s.list[2], "zz");

	/* Resume after a name removed meanwhile. */
	assert_int_equal(meta_unlink(f->m, d, "b", &gone), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, d, "b", collect, &s), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.list[0], "c");
	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, d, "zz", collect, &s), 0);
	assert_int_equal(s.n, 0);
	/* NULL = from the start. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, d, NULL, collect, &s), 0);
	assert_int_equal(s.n, 4);

	/* An empty directory. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(meta_readdir(f->m, ino_at(f->m, d, "ab"), "", collect, &s), 0);
	assert_int_equal(s.n, 0);
}

/* ---------------------------------------------------------------- persistence */

static void test_persistence(void **state)
{
	struct fx *f = *state;
	struct meta_attr a, b;
	struct meta_chunk *l;
	char buf[64];
	uint64_t d, sub, file, sym, gone, count;

	d = mkdir_(f->m, 1, "d");
	sub = mkdir_(f->m, d, "sub");
	assert_int_equal(meta_create(f->m, d, "file", S_IFREG | 0600, 5, 6, 0, NULL, &a), 0);
	file = a.ino;
	write1(f->m, file, 0, 100, 3, "1,a");
	write1(f->m, file, 50, 10, 0, "1,b");
	assert_int_equal(meta_link(f->m, file, 1, "hard", NULL), 0);
	assert_int_equal(meta_create(f->m, 1, "sym", 0, 0, 0, 0, "d/file", &b), 0);
	sym = b.ino;
	assert_int_equal(meta_setxattr(f->m, file, "user.k", "v", 1, 0), 0);
	write1(f->m, file, 0, 100, 0, "1,c"); /* a and b to gc */
	assert_int_equal(meta_gc_pending(f->m), 2);
	assert_int_equal(meta_sync(f->m), 0);
	assert_int_equal(meta_getattr(f->m, file, &a), 0);

	reopen(f);
	assert_int_equal(meta_getattr(f->m, file, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_true(ino_at(f->m, 1, "d") == d);
	assert_true(ino_at(f->m, d, "file") == file);
	assert_true(ino_at(f->m, 1, "hard") == file);
	assert_int_equal(nlink_of(f->m, file), 2);
	assert_int_equal(nlink_of(f->m, 1), 3);
	assert_int_equal(meta_readlink(f->m, sym, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "d/file");
	assert_int_equal(meta_getxattr(f->m, file, "user.k", buf, sizeof(buf)), 1);
	assert_int_equal(meta_read_chunks(f->m, file, 0, UINT64_MAX, &l), 1);
	expect_chunk(&l[0], 0, 100, 0, "1,c");
	free(l);
	assert_int_equal(meta_gc_pending(f->m), 2);
	assert_int_equal(gc_count(f->m, "1,a"), 1);
	assert_int_equal(meta_inode_count(f->m, &count), 0);
	assert_true(count == 5);
	assert_int_equal(nlink_of(f->m, d), 3);
	/* The inode counter survives: new inodes do not reuse numbers. */
	{
		uint64_t n = mkfile(f->m, 1, "new");

		assert_true(n > sym && n > file && n > d);
	}
	/* The gc sequence survives: new entries do not overwrite old ones. */
	write1(f->m, file, 0, 100, 0, "1,d");
	assert_int_equal(meta_gc_pending(f->m), 3);
	/* And the parent links: a rename loop is still refused. */
	assert_int_equal(meta_rename(f->m, 1, "d", sub, "x", 0, &gone), -EINVAL);
}

struct listing {
	int n, stop_at;
	char last[64];
	bool ordered;
};

static int count_cb(void *ctx, const char *name, const struct meta_attr *attr)
{
	struct listing *l = ctx;

	if (l->n && strcmp(l->last, name) >= 0)
		l->ordered = false;
	snprintf(l->last, sizeof(l->last), "%s", name);
	l->n++;
	return l->stop_at && l->n == l->stop_at;
}

/* Directories larger than one batch of meta's readdir: every entry once, in order,
 * from any starting point, stopping when the callback says so. */
static void test_readdir_large(void **state)
{
	struct fx *f = *state;
	uint64_t d = mkdir_(f->m, META_ROOT_INO, "d");
	struct listing l;
	char name[32];

	for (int i = 0; i < 700; i++) {
		snprintf(name, sizeof(name), "f%04d", i);
		mkfile(f->m, d, name);
	}
	memset(&l, 0, sizeof(l));
	l.ordered = true;
	assert_int_equal(meta_readdir(f->m, d, "", count_cb, &l), 0);
	assert_int_equal(l.n, 700);
	assert_true(l.ordered);
	assert_string_equal(l.last, "f0699");
	memset(&l, 0, sizeof(l));
	l.ordered = true;
	assert_int_equal(meta_readdir(f->m, d, "f0300", count_cb, &l), 0);
	assert_int_equal(l.n, 399);
	assert_true(l.ordered);
	memset(&l, 0, sizeof(l));
	l.stop_at = 250;
	assert_int_equal(meta_readdir(f->m, d, "f0010", count_cb, &l), 0);
	assert_int_equal(l.n, 250);
	assert_string_equal(l.last, "f0260");
}

/* "." and "..": what the kernel asks to turn a file handle back into a file. */
static void test_dot_lookups(void **state)
{
	struct fx *f = *state;
	struct meta_attr a;
	uint64_t d = mkdir_(f->m, 1, "d"), e = mkdir_(f->m, d, "e"), file = mkfile(f->m, e, "f");
	uint64_t gone = 0;
	uint32_t gen = meta_generation(f->m);

	assert_true(ino_at(f->m, file, ".") == file);
	assert_true(ino_at(f->m, e, ".") == e);
	assert_true(ino_at(f->m, e, "..") == d);
	assert_true(ino_at(f->m, d, "..") == 1);
	assert_true(ino_at(f->m, 1, "..") == 1);
	assert_int_equal(meta_lookup(f->m, file, "..", &a), -ENOTDIR);
	assert_int_equal(meta_lookup(f->m, 9999, ".", &a), -ENOENT);
	/* ".." follows a rename. */
	assert_int_equal(meta_rename(f->m, d, "e", 1, "e2", 0, &gone), 0);
	assert_true(ino_at(f->m, e, "..") == 1);
	/* A removed file (still open: an orphan) is gone for "." too. */
	assert_int_equal(meta_unlink(f->m, e, "f", &gone), 0);
	assert_true(gone == file);
	assert_int_equal(meta_getattr(f->m, file, &a), 0);
	assert_int_equal(meta_lookup(f->m, file, ".", &a), -ENOENT);
	assert_int_equal(meta_rmdir(f->m, 1, "e2", &gone), 0);
	assert_int_equal(meta_lookup(f->m, e, ".", &a), -ENOENT);
	/* The generation: not 0, kept across restarts, new for new metadata. */
	assert_true(gen != 0);
	reopen(f);
	assert_true(meta_generation(f->m) == gen);
	{
		char dir[64] = "/tmp/kelp-test-meta2-XXXXXX";
		struct meta *other;

		assert_non_null(mkdtemp(dir));
		assert_int_equal(meta_open(dir, &other), 0);
		assert_true(meta_generation(other) != 0 && meta_generation(other) != gen);
		meta_close(other);
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
}

/* ---------------------------------------------------------------- sessions */

static int count_session(void *ctx, const struct meta_session_info *s)
{
	(*(int *)ctx)++;
	return 0;
}

static int sessions_n(struct meta *m)
{
	int n = 0;

	assert_int_equal(meta_session_list(m, count_session, &n), 0);
	return n;
}

static int find_beats(void *ctx, const struct meta_session_info *s)
{
	uint64_t *want = ctx;

	if (s->id == want[0])
		want[1] = s->beats;
	return 0;
}

static struct meta_session_info session_info(const char *where)
{
	struct meta_session_info i;

	memset(&i, 0, sizeof(i));
	snprintf(i.host, sizeof(i.host), "testhost");
	snprintf(i.mountpoint, sizeof(i.mountpoint), "%s", where);
	snprintf(i.version, sizeof(i.version), "test");
	i.pid = (uint32_t)getpid();
	return i;
}

static void test_sessions(void **state)
{
	struct fx *f = *state;
	struct meta_session_info i = session_info("/mnt/a");
	uint64_t first, beats[2];

	assert_int_equal(sessions_n(f->m), 0);
	assert_int_equal(meta_session_register(f->m, &i), 0);
	first = i.id;
	assert_true(first != 0 && meta_session_id(f->m) == first);
	assert_int_equal(sessions_n(f->m), 1);
	assert_int_equal(meta_session_beat(f->m), 0);
	assert_int_equal(meta_session_beat(f->m), 0);
	beats[0] = first;
	beats[1] = 0;
	assert_int_equal(meta_session_list(f->m, find_beats, beats), 0);
	assert_true(beats[1] == 2);
	/* cleaned up by "another mount": the next beat says so; registering again gives a
	 * new id (never reused) */
	assert_int_equal(meta_session_clean(f->m, first), 0);
	assert_int_equal(meta_session_clean(f->m, first), 0); /* twice: nothing left */
	assert_int_equal(meta_session_beat(f->m), -ESTALE);
	assert_int_equal(meta_session_register(f->m, &i), 0);
	assert_true(i.id != first);
	assert_int_equal(meta_session_end(f->m), 0);
	assert_int_equal(sessions_n(f->m), 0);
}

/* A second handle on the same metadata: another mount (PostgreSQL only: LMDB is one
 * mount, one process). NULL with LMDB. */
static struct meta *other_mount(struct fx *f)
{
	struct meta *m2;

	if (!meta_shared(f->m))
		return NULL;
	assert_int_equal(meta_open(f->spec, &m2), 0);
	return m2;
}

static void test_holds(void **state)
{
	struct fx *f = *state;
	struct meta *m2 = other_mount(f);
	struct meta_session_info a = session_info("/mnt/a"), b = session_info("/mnt/b");
	struct meta_hold h;
	struct meta_chunk c = chunk(0, 10, 0, "1,new");
	struct meta_attr attr;
	uint64_t ino, gone = 0;

	if (!m2)
		skip();
	ino = mkfile(f->m, 1, "f");
	write1(f->m, ino, 0, 10, 0, "1,old");
	assert_int_equal(meta_session_register(f->m, &a), 0);
	assert_int_equal(meta_session_register(m2, &b), 0);
	assert_int_equal(meta_hold(m2, ino, &h), 0);	       /* open on B */
	assert_int_equal(meta_unlink(f->m, 1, "f", &gone), 0); /* last name goes on A */
	assert_true(gone == ino);
	assert_int_equal(meta_release_inode(f->m, ino), 0);  /* A is done with it */
	assert_int_equal(meta_getattr(f->m, ino, &attr), 0); /* B still holds it */
	assert_int_equal(gc_count(f->m, "1,old"), 0);
	assert_int_equal(meta_release_orphans(f->m), 0); /* a restart of A: still held */
	assert_int_equal(meta_getattr(f->m, ino, &attr), 0);
	/* B writes through its handle */
	assert_int_equal(meta_write_chunks_held(m2, &h, &c, 1, 0, true, false, NULL), 0);
	assert_int_equal(gc_count(f->m, "1,old"), 1);
	/* B stops renewing: A sees the counter stand still for the timeout (0 here) and
	 * cleans B up: the file goes, its blob too */
	assert_int_equal(meta_session_sweep(f->m, 0), 1);
	assert_int_equal(meta_getattr(f->m, ino, &attr), -ENOENT);
	assert_int_equal(gc_count(f->m, "1,new"), 1);
	assert_int_equal(sessions_n(f->m), 1);
	/* B comes back: its handle is stale, nothing is written through it */
	assert_int_equal(meta_session_beat(m2), -ESTALE);
	assert_int_equal(meta_write_chunks_held(m2, &h, &c, 1, 0, true, false, NULL), -ESTALE);
	assert_int_equal(meta_session_register(m2, &b), 0);
	assert_int_equal(meta_hold(m2, ino, &h), -ENOENT);
	/* an unlinked file held by nobody goes at B's close (meta_unhold) */
	ino = mkfile(f->m, 1, "g");
	assert_int_equal(meta_hold(m2, ino, &h), 0);
	assert_int_equal(meta_unlink(f->m, 1, "g", &gone), 0);
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(meta_getattr(f->m, ino, &attr), 0);
	assert_int_equal(meta_unhold(m2, &h, true), 0);
	assert_int_equal(meta_getattr(f->m, ino, &attr), -ENOENT);
	meta_close(m2);
}

static void test_gc_grace(void **state)
{
	struct fx *f = *state;
	struct meta_options o = {.gc_grace_ms = 60000};
	struct meta *slow;
	char fids[4][META_FID_MAX];
	uint64_t seqs[4], ino = mkfile(f->m, 1, "f");

	if (!meta_shared(f->m))
		skip(); /* the queue time is kept with shared engines only */
	assert_int_equal(meta_open_opts(f->spec, &o, &slow), 0);
	write1(f->m, ino, 0, 10, 0, "1,a");
	write1(f->m, ino, 0, 10, 0, "1,b");			/* 1,a queued now */
	assert_int_equal(meta_gc_take(slow, 4, fids, seqs), 0); /* too young */
	assert_int_equal(meta_gc_take(f->m, 4, fids, seqs), 1); /* no grace */
	assert_string_equal(fids[0], "1,a");
	/* two mounts deleting the same entry: the second done is a no-op */
	assert_int_equal(meta_gc_done(f->m, seqs[0]), 0);
	assert_int_equal(meta_gc_done(slow, seqs[0]), 0);
	assert_int_equal(meta_gc_pending(f->m), 0);
	meta_close(slow);
}

static void test_locks(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f");
	struct lock_range
	    a = {.session = 7, .owner = 1, .start = 0, .end = 100, .type = F_WRLCK, .pid = 11},
	    b = {.session = 8, .owner = 1, .start = 50, .end = 60, .type = F_RDLCK, .pid = 22}, got;

	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &a, NULL), 0);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, &got), -EAGAIN);
	assert_true(got.session == 7 && got.start == 0 && got.end == 100 && got.pid == 11);
	assert_int_equal(lock_test(f->m, ino, LOCK_KIND_POSIX, &b, &got), 1);
	/* flock locks are another kind: no conflict with POSIX ones */
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_FLOCK, &b, NULL), 0);
	/* the owner downgrades the middle to a read lock: split in three */
	a.start = 40;
	a.end = 70;
	a.type = F_RDLCK;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &a, NULL), 0);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, NULL), 0); /* read + read */
	b.start = 60;
	b.end = 80;
	b.type = F_WRLCK;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, &got), -EAGAIN);
	assert_true(got.start == 40 && got.end == 70 && got.type == F_RDLCK); /* first one */
	/* unlock [0, 75): what remains of session 7 is [75, 100) */
	a.start = 0;
	a.end = 75;
	a.type = F_UNLCK;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &a, NULL), 0);
	b.start = 70;
	b.end = 75;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, NULL), 0);
	b.end = 76;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, &got), -EAGAIN);
	assert_true(got.start == 75 && got.end == 100 && got.type == F_WRLCK);
	/* the owner closes: its locks go; session 8 keeps its own (3 left: 2 POSIX, 1 flock) */
	assert_int_equal(lock_release_owner(f->m, ino, 0, 7, 1), 0);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, NULL), 0);
	assert_int_equal(lock_release_owner(f->m, ino, LOCK_KIND_POSIX, 8, 1), 1);
	/* a session cleaned up loses its locks */
	a.type = F_WRLCK;
	a.end = LOCK_END_MAX;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_FLOCK, &a, &got), -EAGAIN);
	assert_int_equal(meta_session_clean(f->m, 8), 0);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_FLOCK, &a, NULL), 0);
	/* bad range */
	a.start = 5;
	a.end = 5;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &a, NULL), -EINVAL);
}

/* ---------------------------------------------------------------- round trips, caches */

struct rows {
	char keys[8][8];
	int n;
};

static int row_one(void *ctx, const uint8_t *k, size_t klen, const uint8_t *v, size_t vlen)
{
	struct rows *r = ctx;

	if (r->n < 8)
		snprintf(r->keys[r->n++], 8, "%.*s", (int)klen, (const char *)k);
	return 0;
}

/* A prefetch answers the same reads a transaction makes later, until the transaction
 * writes what they read; a scan cut by the batch's limit goes on. Both engines. */
static void test_prefetch(void **state)
{
	struct fx *f = *state;
	struct kv *kv = meta_kv(f->m);
	struct kv_txn *t;
	struct kv_read r[4];
	struct rows rows;
	const uint8_t *v;
	size_t vlen;
	uint64_t rt;

	assert_int_equal(kv->ops->begin(kv, true, &t), 0);
	t->n_touched = 0;
	assert_int_equal(kv_put(t, KV_SYMLINKS, "a", 1, "1", 1), 0);
	assert_int_equal(kv_put(t, KV_SYMLINKS, "c", 1, "3", 1), 0);
	assert_int_equal(kv_put(t, KV_SYMLINKS, "e", 1, "5", 1), 0);
	assert_int_equal(kv->ops->commit(t), 0);

	assert_int_equal(kv->ops->begin(kv, true, &t), 0);
	t->n_touched = 0;
	r[0] = (struct kv_read){.table = KV_SYMLINKS, .key = "a", .klen = 1};
	r[1] = (struct kv_read){.table = KV_SYMLINKS, .key = "b", .klen = 1};
	r[2] = (struct kv_read){.table = KV_SYMLINKS,
				.key = "a",
				.klen = 1,
				.scan = true,
				.to = "z",
				.tlen = 1,
				.limit = 2};
	r[3] = (struct kv_read){.table = KV_SYMLINKS,
				.key = "a",
				.klen = 1,
				.scan = true,
				.reverse = true,
				.to = "z",
				.tlen = 1,
				.limit = 1};
	assert_int_equal(kv_prefetch(t, r, 4), 0);
	rt = meta_round_trips(f->m, NULL);
	assert_int_equal(kv_get(t, KV_SYMLINKS, "a", 1, &v, &vlen), 0);
	assert_true(vlen == 1 && v[0] == '1');
	assert_int_equal(kv_get(t, KV_SYMLINKS, "b", 1, &v, &vlen), -ENOENT);
	memset(&rows, 0, sizeof(rows));
	assert_int_equal(kv_scan(t, KV_SYMLINKS, "a", 1, "z", 1, true, 1, row_one, &rows), 0);
	assert_int_equal(rows.n, 1);
	assert_string_equal(rows.keys[0], "e");
	/* answered from the batch: no round trip */
	assert_true(meta_round_trips(f->m, NULL) == rt);
	/* the batch held 2 of the 3: the scan goes on after them */
	memset(&rows, 0, sizeof(rows));
	assert_int_equal(kv_scan(t, KV_SYMLINKS, "a", 1, "z", 1, false, 0, row_one, &rows), 0);
	assert_int_equal(rows.n, 3);
	assert_string_equal(rows.keys[0], "a");
	assert_string_equal(rows.keys[1], "c");
	assert_string_equal(rows.keys[2], "e");
	/* a write of the transaction: what the batch read there is read again */
	assert_int_equal(kv_put(t, KV_SYMLINKS, "b", 1, "2", 1), 0);
	assert_int_equal(kv_get(t, KV_SYMLINKS, "b", 1, &v, &vlen), 0);
	assert_true(vlen == 1 && v[0] == '2');
	memset(&rows, 0, sizeof(rows));
	assert_int_equal(kv_scan(t, KV_SYMLINKS, "a", 1, "z", 1, false, 0, row_one, &rows), 0);
	assert_int_equal(rows.n, 4);
	assert_string_equal(rows.keys[1], "b");
	assert_int_equal(kv_del(t, KV_SYMLINKS, "a", 1), 0);
	assert_int_equal(kv_get(t, KV_SYMLINKS, "a", 1, &v, &vlen), -ENOENT);
	kv->ops->abort(t);
}

/*
 * Round trips per operation on PostgreSQL (what docs/architecture.md lists): a create,
 * the first commit of a small file's data, a lookup, a stat, a chunk map read and a
 * read of a file's whole interval list are one or two each. LMDB counts none.
 */
static void test_round_trips(void **state)
{
	struct fx *f = *state;
	struct meta_chunk c = chunk(0, 4096, 0, "3,0101"), *list;
	struct meta_attr a;
	uint64_t rt, txns, end, ino;
	bool pg = meta_shared(f->m);
	int n;

	mkfile(f->m, META_ROOT_INO, "warm"); /* the first inode block comes from a sequence */
#define RT_DELTA(expect, expr)                                                                     \
	do {                                                                                       \
		rt = meta_round_trips(f->m, &txns);                                                \
		expr;                                                                              \
		assert_int_equal((int)(meta_round_trips(f->m, NULL) - rt), pg ? (expect) : 0);     \
	} while (0)
	RT_DELTA(2, ino = mkfile(f->m, META_ROOT_INO, "f")); /* the parent and name, COMMIT */
	RT_DELTA(2, assert_int_equal(meta_write_chunks(f->m, ino, &c, 1, 0, true, NULL), 0));
	RT_DELTA(1, assert_int_equal(meta_lookup(f->m, META_ROOT_INO, "f", &a), 0));
	RT_DELTA(1, assert_int_equal(meta_getattr(f->m, ino, &a), 0));
	RT_DELTA(1, n = meta_read_chunks(f->m, ino, 0, UINT64_MAX, &list));
	assert_int_equal(n, 1);
	free(list);
	RT_DELTA(1, n = meta_read_map(f->m, ino, 100, 64, &a, &list, &end));
	assert_int_equal(n, 1);
	assert_true(a.size == 4096 && end == UINT64_MAX);
	free(list);
	/* an overwrite: one more for the replaced blob's reference (after the first, which
	 * takes a block of gc sequence numbers) */
	c = chunk(0, 4096, 0, "3,0202");
	assert_int_equal(meta_write_chunks(f->m, ino, &c, 1, 0, true, NULL), 0);
	c = chunk(0, 4096, 0, "3,0303");
	RT_DELTA(3, assert_int_equal(meta_write_chunks(f->m, ino, &c, 1, 0, true, NULL), 0));
	if (pg)
		assert_true(meta_round_trips(f->m, &txns) > 0 && txns > 0);
#undef RT_DELTA
}

/* meta_lookup_cached: names of a directory read ahead in batches (of 8 here); answers
 * from memory cost no round trip; every change this process makes shows at once. */
static void lookup_is(struct meta *m, uint64_t dir, const char *name, int want,
		      struct meta_attr *out)
{
	int64_t age = -1;
	int rc = meta_lookup_cached(m, dir, name, out, &age);

	assert_int_equal(rc, want);
	assert_true(age >= 0 && age < 10 * 1000000000LL);
}

static void test_lookup_cached(void **state)
{
	struct fx *f = *state;
	struct meta_options o = {
	    .lookup_cache = 1000, .lookup_ttl_ns = 3600 * 1000000000LL, .lookup_batch = 8};
	struct meta_lookup_stats st;
	struct meta_chunk c = chunk(0, 5000, 0, "3,0101");
	struct meta_attr a, in;
	uint64_t dir, ino[20], gone, rt;
	bool pg = meta_shared(f->m);
	char name[16];

	assert_false(meta_lookup_stats(f->m, &st)); /* off unless asked for */
	meta_close(f->m);
	assert_int_equal(meta_open_opts(f->spec, &o, &f->m), 0);
	dir = mk(f->m, META_ROOT_INO, "d", S_IFDIR | 0755);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "f%02d", i);
		ino[i] = mkfile(f->m, dir, name);
	}
	/* in name order: a miss, then batches of 8 (the first from the start) */
	rt = meta_round_trips(f->m, NULL);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "f%02d", i);
		lookup_is(f->m, dir, name, 0, &a);
		assert_int_equal(a.ino, ino[i]);
	}
	assert_true(meta_lookup_stats(f->m, &st));
	assert_int_equal(st.loads, 3);	/* f01 (from the start: f00-f07), f08, f16 */
	assert_int_equal(st.misses, 4); /* f00, and the three loads */
	assert_int_equal(st.hits, 16);
	if (pg)
		assert_int_equal((int)(meta_round_trips(f->m, NULL) - rt), 4);
	/* names a batch does not have are asked all the same (another mount may have made
	 * them: no name is ever missing for the cache time) */
	rt = meta_round_trips(f->m, NULL);
	lookup_is(f->m, dir, "f03x", -ENOENT, &a);
	lookup_is(f->m, dir, "f", -ENOENT, &a);
	lookup_is(f->m, dir, "f17x", -ENOENT, &a); /* the last batch reached the end */
	if (pg)
		assert_int_equal((int)(meta_round_trips(f->m, NULL) - rt), 3);
	assert_true(meta_lookup_stats(f->m, &st));
	assert_int_equal(st.absent, 3);
	assert_int_equal(st.loads, 3); /* and they did not read the batches again */
	/* ".", "..", and lookups in other directories are as meta_lookup */
	lookup_is(f->m, dir, "..", 0, &a);
	assert_int_equal(a.ino, META_ROOT_INO);
	lookup_is(f->m, dir, ".", 0, &a);
	assert_int_equal(a.ino, dir);
	lookup_is(f->m, ino[0], "x", -ENOENT, &a);

	/* every change of this process shows at once */
	in.mode = 0600;
	assert_int_equal(meta_setattr(f->m, ino[3], &in, META_SET_MODE, NULL), 0);
	lookup_is(f->m, dir, "f03", 0, &a);
	assert_int_equal(a.mode & 07777, 0600);
	assert_int_equal(meta_write_chunks(f->m, ino[2], &c, 1, 0, true, NULL), 0);
	lookup_is(f->m, dir, "f02", 0, &a);
	assert_int_equal(a.size, 5000);
	assert_int_equal(meta_unlink(f->m, dir, "f04", &gone), 0);
	lookup_is(f->m, dir, "f04", -ENOENT, &a);
	mkfile(f->m, dir, "f03x");
	lookup_is(f->m, dir, "f03x", 0, &a);
	assert_int_equal(meta_rename(f->m, dir, "f05", dir, "f05r", 0, &gone), 0);
	lookup_is(f->m, dir, "f05", -ENOENT, &a);
	lookup_is(f->m, dir, "f05r", 0, &a);
	assert_int_equal(a.ino, ino[5]);
	/* a link elsewhere changes the link count; an xattr the ctime */
	assert_int_equal(meta_link(f->m, ino[9], META_ROOT_INO, "l9", NULL), 0);
	lookup_is(f->m, dir, "f09", 0, &a);
	assert_int_equal(a.nlink, 2);
	{
		struct meta_attr before;

		lookup_is(f->m, dir, "f10", 0, &before);
		assert_int_equal(meta_setxattr(f->m, ino[10], "user.a", "1", 1, 0), 0);
		lookup_is(f->m, dir, "f10", 0, &a);
		assert_true(a.ctime_ns > before.ctime_ns);
	}
	/* a rename into the directory from elsewhere, and out of it */
	mkfile(f->m, META_ROOT_INO, "outside");
	for (int i = 0; i < 3; i++) /* the directory's batches again (many misses) */
		lookup_is(f->m, dir, "f11", 0, &a);
	assert_int_equal(meta_rename(f->m, META_ROOT_INO, "outside", dir, "f11a", 0, &gone), 0);
	lookup_is(f->m, dir, "f11a", 0, &a);
	assert_int_equal(meta_rename(f->m, dir, "f12", META_ROOT_INO, "f12", 0, &gone), 0);
	lookup_is(f->m, dir, "f12", -ENOENT, &a);
	/* another process (mount) removes a name: served from the batch within its time
	 * (the documented cache time), until this process finds the inode gone
	 * (meta_getattr, meta_hold: the kernel is told ESTALE and looks the name up again,
	 * which must then ask the database) */
	if (pg) {
		struct meta *m2;

		assert_int_equal(meta_open(f->spec, &m2), 0);
		for (int i = 0; i < 3; i++)
			lookup_is(f->m, dir, "f13", 0, &a);
		assert_int_equal(meta_unlink(m2, dir, "f13", &gone), 0);
		assert_int_equal(gone, ino[13]);
		assert_int_equal(meta_release_inode(m2, gone), 0);
		lookup_is(f->m, dir, "f13", 0, &a);
		assert_int_equal(a.ino, ino[13]);
		assert_int_equal(meta_getattr(f->m, ino[13], &a), -ENOENT);
		lookup_is(f->m, dir, "f13", -ENOENT, &a);
		meta_close(m2);
	}
	/* the answers agree with meta_lookup for every name */
	for (int i = 0; i < 20; i++) {
		struct meta_attr b;
		int r1, r2;
		int64_t age;

		snprintf(name, sizeof(name), "f%02d", i);
		r1 = meta_lookup(f->m, dir, name, &b);
		r2 = meta_lookup_cached(f->m, dir, name, &a, &age);
		assert_int_equal(r1, r2);
		if (r1 == 0)
			assert_memory_equal(&a, &b, sizeof(a));
	}
}

/* meta_read_map: attributes and intervals from the one at the offset on, cut at max,
 * with how far they are complete. */
static void test_read_map(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, META_ROOT_INO, "m"), end;
	struct meta_chunk *list;
	struct meta_attr a;
	char fid[16];
	int n;

	for (int i = 0; i < 5; i++) {
		snprintf(fid, sizeof(fid), "3,0%d0%d", i + 1, i + 1);
		write1(f->m, ino, (uint64_t)i * 10, 10, 0, fid);
	}
	n = meta_read_map(f->m, ino, 15, 2, &a, &list, &end);
	assert_int_equal(n, 3); /* the one holding 15, then 2 more */
	expect_chunk(&list[0], 10, 10, 0, "3,0202");
	expect_chunk(&list[2], 30, 10, 0, "3,0404");
	assert_true(end == 40 && a.size == 50 && a.ino == ino);
	free(list);
	n = meta_read_map(f->m, ino, 35, 2, &a, &list, &end);
	assert_int_equal(n, 2);
	expect_chunk(&list[1], 40, 10, 0, "3,0505");
	assert_true(end == UINT64_MAX);
	free(list);
	n = meta_read_map(f->m, ino, 60, 2, &a, &list, &end);
	assert_int_equal(n, 0);
	assert_true(end == UINT64_MAX);
	assert_int_equal(meta_read_map(f->m, 999999, 0, 2, &a, &list, &end), -ENOENT);
}

static int no_op(struct kv_txn *t, void *ctx)
{
	return 0;
}

/* The change stamp of an inode moves with every transaction writing its data or
 * attributes (and every meta_run write), not with reads. */
static void test_change_stamp(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, META_ROOT_INO, "s"), s0, s1;
	struct meta_attr a, in = {.size = 5};
	struct meta_chunk *list;
	int n;

	assert_true(meta_change_stamp(f->m, ino, &s0));
	assert_int_equal(meta_getattr(f->m, ino, &a), 0);
	n = meta_read_chunks(f->m, ino, 0, 100, &list);
	assert_int_equal(n, 0);
	assert_true(meta_change_stamp(f->m, ino, &s1) && s1 == s0);
	write1(f->m, ino, 0, 10, 0, "3,0101");
	assert_true(meta_change_stamp(f->m, ino, &s1) && s1 != s0);
	s0 = s1;
	assert_int_equal(meta_setattr(f->m, ino, &in, META_SET_SIZE, &a), 0);
	assert_true(meta_change_stamp(f->m, ino, &s1) && s1 != s0);
	s0 = s1;
	assert_int_equal(meta_run(f->m, true, no_op, NULL), 0);
	assert_true(meta_change_stamp(f->m, ino, &s1) && s1 != s0);
	s0 = s1;
	assert_int_equal(meta_run(f->m, false, no_op, NULL), 0);
	assert_true(meta_change_stamp(f->m, ino, &s1) && s1 == s0);
}

/* A directory with the setgid bit gives new entries its group (and directories the
 * bit), in the create's own transaction. */
static void test_setgid_create(void **state)
{
	struct fx *f = *state;
	uint64_t d = mkdir_(f->m, META_ROOT_INO, "g");
	struct meta_attr a, in = {.mode = 02775, .gid = 777};

	assert_int_equal(meta_setattr(f->m, d, &in, META_SET_MODE | META_SET_GID, &a), 0);
	assert_int_equal(meta_create(f->m, d, "file", S_IFREG | 0644, 5, 6, 0, NULL, &a), 0);
	assert_true(a.gid == 777 && a.uid == 5 && !(a.mode & S_ISGID));
	assert_int_equal(meta_create(f->m, d, "dir", S_IFDIR | 0755, 5, 6, 0, NULL, &a), 0);
	assert_true(a.gid == 777 && (a.mode & S_ISGID));
	assert_int_equal(
	    meta_create(f->m, META_ROOT_INO, "plain", S_IFREG | 0644, 5, 6, 0, NULL, &a), 0);
	assert_true(a.gid == 6);
}

static void test_lock_waits_and_markers(void **state)
{
	struct fx *f = *state;
	uint64_t ino = mkfile(f->m, 1, "f");
	struct lock_request *p = calloc(1, sizeof(*p)), *q = calloc(1, sizeof(*q));
	struct lock_range a = {.session = 7, .owner = 1, .start = 0, .end = 10, .type = F_WRLCK},
			  b = {.session = 8, .owner = 2, .start = 10, .end = 20, .type = F_WRLCK};
	struct lock_marker mk, none = {0, 0};

	assert_non_null(p);
	assert_non_null(q);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &a, NULL), 0);
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, NULL), 0);
	/* 7 waits for 8's range: one wait row; 8 then waiting for 7's closes a circle */
	p->want = a;
	p->want.start = 10;
	p->want.end = 20;
	p->detect = true;
	assert_int_equal(lock_change(f->m, ino, LOCK_KIND_POSIX, p), -EAGAIN);
	assert_int_equal(p->n_waiting, 1);
	assert_true(p->waiting[0].session == 8 && p->waiting[0].owner == 2);
	q->want = b;
	q->want.start = 0;
	q->want.end = 10;
	q->detect = true;
	assert_int_equal(lock_change(f->m, ino, LOCK_KIND_POSIX, q), -EDEADLK);
	assert_int_equal(q->n_waiting, 0);
	/* 7 asks again: 8 gave up waiting, no circle; the same row, nothing rewritten */
	assert_int_equal(lock_change(f->m, ino, LOCK_KIND_POSIX, p), -EAGAIN);
	assert_int_equal(p->n_waiting, 1);
	/* A stale row: 8 unlocks (7 has not looked again), then 8 wants 7's range: the row
	 * 7 -> 8 no longer holds, so this is a wait, not a deadlock. */
	b.type = F_UNLCK;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_POSIX, &b, NULL), 0);
	assert_int_equal(lock_change(f->m, ino, LOCK_KIND_POSIX, q), -EAGAIN);
	assert_int_equal(q->n_waiting, 1);
	/* 7 gets 8's old range (its wait row goes), and announces a change with it */
	p->publish = true;
	p->mark.session = 7;
	p->mark.serial = 42;
	assert_int_equal(lock_change(f->m, ino, LOCK_KIND_POSIX, p), 0);
	assert_int_equal(p->n_waiting, 0);
	assert_true(lock_marker_eq(&p->before, &none));
	assert_int_equal(lock_marker_get(f->m, ino, &mk), 0);
	assert_true(mk.session == 7 && mk.serial == 42);
	/* 8 stops waiting (EINTR): its row goes; 7 wanting nothing of 8 then is no circle */
	assert_int_equal(lock_unwait(f->m, q), 0);
	assert_int_equal(q->n_waiting, 0);
	/* a release announcing a change gives the marker it replaced */
	mk.serial = 43;
	{
		struct lock_marker before;

		assert_int_equal(lock_release(f->m, ino, 0, 7, 1, &mk, &before), 0);
		assert_true(before.session == 7 && before.serial == 42);
	}
	/* a session cleaned up while it held a lock: its file's change is announced */
	a.session = 9;
	assert_int_equal(lock_set(f->m, ino, LOCK_KIND_FLOCK, &a, NULL), 0);
	assert_int_equal(meta_session_clean(f->m, 9), 0);
	assert_int_equal(lock_marker_get(f->m, ino, &mk), 0);
	assert_true(mk.session == 9 && mk.serial == UINT64_MAX);
	/* the marker goes with the inode */
	{
		uint64_t gone;

		assert_int_equal(meta_unlink(f->m, 1, "f", &gone), 0);
	}
	assert_int_equal(meta_release_inode(f->m, ino), 0);
	assert_int_equal(lock_marker_get(f->m, ino, &mk), 0);
	if (meta_shared(f->m))
		assert_true(lock_marker_eq(&mk, &none));
	free(p);
	free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_kinds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_link_counts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_basic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_dirs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_flags, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chunks_overlap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chunks_model, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gc_shared_blob, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fallocate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_copy_range, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_acls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_old_inode_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gc_rewrite_same_blob, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orphans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_holds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_gc_grace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_locks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lock_waits_and_markers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_chunks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_xattrs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readdir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readdir_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dot_lookups, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prefetch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trips, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_cached, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_map, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_change_stamp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setgid_create, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
