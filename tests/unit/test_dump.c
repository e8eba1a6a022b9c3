/*
 * Unit tests for fuse/dump: the dump format written and parsed back (through LMDB in
 * temporary directories), and the parser's answers to malformed input: a clear error
 * naming the line, and the target left empty.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
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

#include "cluster/base/util.h"
#include "fuse/dump.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

struct buf {
	char *p;
	size_t n, cap, pos;
};

static int buf_out(void *ctx, const void *data, size_t n)
{
	struct buf *b = ctx;

	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, data, n);
	b->n += n;
	b->p[b->n] = '\0';
	return 0;
}

static ssize_t buf_in(void *ctx, void *data, size_t cap)
{
	struct buf *b = ctx;
	size_t n = b->n - b->pos < cap ? b->n - b->pos : cap;

	/* small reads: lines cross read boundaries */
	if (n > 7)
		n = 7;
	memcpy(data, b->p + b->pos, n);
	b->pos += n;
	return (ssize_t)n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

struct fx {
	char a[64], b[64];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->a, "/tmp/kelp-test-dump-a-XXXXXX");
	strcpy(f->b, "/tmp/kelp-test-dump-b-XXXXXX");
	assert_non_null(mkdtemp(f->a));
	assert_non_null(mkdtemp(f->b));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->a, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	nftw(f->b, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A tree with every kind of record. */
static void fill(const char *dir)
{
	struct meta *m;
	struct meta_attr d, a, s;
	struct meta_chunk c[2] = {{0, 100, 0, "3,01aa11223344"}, {4096, 50, 10, "4,02bb11223344"}};
	struct meta_chunk g1 = {0, 100, 0, "6,0a11223344"}, g2 = {0, 100, 0, "7,0b11223344"};
	const char odd[] = "odd\xff\xfe\n\"name\\";
	uint8_t bin[300];
	uint64_t gone = 0;

	for (int i = 0; i < 300; i++)
		bin[i] = (uint8_t)i;
	assert_int_equal(meta_open(dir, &m), 0);
	assert_int_equal(meta_create(m, 1, "d", S_IFDIR | 0750, 5, 6, 0, NULL, &d), 0);
	assert_int_equal(meta_create(m, d.ino, "f", S_IFREG | 0644, 7, 8, 0, NULL, &a), 0);
	assert_int_equal(meta_write_chunks(m, a.ino, c, 2, 5000, true, &a), 0);
	assert_int_equal(meta_create(m, 1, odd, S_IFREG | 0600, 0, 0, 0, NULL, &s), 0);
	assert_int_equal(meta_link(m, a.ino, 1, "hard", &a), 0);
	assert_int_equal(meta_create(m, 1, "sym", S_IFLNK | 0777, 0, 0, 0, "d/f", &s), 0);
	assert_int_equal(meta_create(m, 1, "dev", S_IFCHR | 0600, 0, 0, 0x0103, NULL, &s), 0);
	assert_int_equal(meta_setxattr(m, a.ino, "user.bin", bin, sizeof(bin), 0), 0);
	assert_int_equal(meta_setxattr(m, d.ino, "user.text", "hello", 5, 0), 0);
	/* an overwrite queues a blob for gc; an open-unlinked file is an orphan */
	assert_int_equal(meta_create(m, 1, "g", S_IFREG | 0644, 0, 0, 0, NULL, &s), 0);
	assert_int_equal(meta_write_chunks(m, s.ino, &g1, 1, 100, true, &s), 0);
	assert_int_equal(meta_write_chunks(m, s.ino, &g2, 1, 100, true, &s), 0);
	assert_int_equal(meta_unlink(m, 1, "g", &gone), 0);
	assert_true(gone != 0);
	assert_int_equal(meta_gc_pending(m), 1);
	meta_close(m);
}

static void dump_dir(const char *dir, struct buf *out)
{
	struct kv *kv;

	assert_int_equal(dump_open_kv(dir, 1000, &kv), 0);
	assert_int_equal(dump_write(kv, buf_out, out, NULL, NULL, NULL), 0);
	kv->ops->close(kv);
}

/* The text after the header line (whose "time" differs). */
static const char *body(const struct buf *b)
{
	const char *nl = strchr(b->p, '\n');

	assert_non_null(nl);
	return nl + 1;
}

static int load_text(const char *dir, const char *text, int batch, char *err, size_t cap)
{
	struct buf in = {(char *)text, strlen(text), 0, 0};
	struct dump_load_options o = {.batch = batch};
	struct kv *kv;
	int rc;

	assert_int_equal(dump_open_kv(dir, 1000, &kv), 0);
	rc = dump_load(kv, buf_in, &in, &o, NULL, err, cap);
	kv->ops->close(kv);
	return rc;
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	struct buf a = {0}, b = {0};
	char err[512];

	fill(f->a);
	dump_dir(f->a, &a);
	assert_non_null(strstr(a.p, "\"name64\":"));  /* the odd name */
	assert_non_null(strstr(a.p, "\"value64\":")); /* the binary xattr */
	assert_non_null(strstr(a.p, "\"value\":\"hello\""));
	assert_non_null(strstr(a.p, "{\"symlink\":"));
	assert_non_null(strstr(a.p, "{\"orphan\":"));
	assert_non_null(strstr(a.p, "{\"gc\":"));
	assert_int_equal(load_text(f->b, a.p, 3, err, sizeof(err)), 0);
	dump_dir(f->b, &b);
	assert_string_equal(body(&a), body(&b));
	/* the loaded copy opens as a filesystem with the same generation */
	{
		struct meta *m1, *m2;
		struct meta_attr x;
		char target[64];

		assert_int_equal(meta_open(f->a, &m1), 0);
		assert_int_equal(meta_open(f->b, &m2), 0);
		assert_int_equal(meta_generation(m1), meta_generation(m2));
		assert_int_equal(meta_lookup(m2, 1, "sym", &x), 0);
		assert_int_equal(meta_readlink(m2, x.ino, target, sizeof(target)), 0);
		assert_string_equal(target, "d/f");
		meta_close(m1);
		meta_close(m2);
	}
	free(a.p);
	free(b.p);
}

/* Every table of dir is empty (the store's properties aside). */
static void assert_empty(const char *dir)
{
	struct buf d = {0};

	dump_dir(dir, &d);
	assert_string_equal(body(&d), "{\"end\":0}\n");
	free(d.p);
}

static void test_malformed(void **state)
{
	struct fx *f = *state;
	struct buf a = {0};
	char err[512], *text;
	const char *hdr_end;
	size_t hlen;
	static const struct {
		const char *line, *msg;
	} bad[] = {
	    {"{\"inode\":0,\"mode\":33188,\"nlink\":1,\"uid\":0,\"gid\":0,\"rdev\":0,\"size\":0,"
	     "\"atime\":0,\"mtime\":0,\"ctime\":0,\"crtime\":0}",
	     "must be an inode number"},
	    {"{\"inode\":9,\"mode\":4095,\"nlink\":1,\"uid\":0,\"gid\":0,\"rdev\":0,\"size\":0,"
	     "\"atime\":0,\"mtime\":0,\"ctime\":0,\"crtime\":0}",
	     "is not a file type"},
	    {"{\"inode\":9,\"mode\":33188}", "\"nlink\" must be"},
	    {"{\"inode\":9,\"mode\":-1}", "\"mode\" must be"},
	    {"{\"inode\":9,\"mode\":99999999999}", "out of range"},
	    {"{\"dentry\":1,\"name\":\"..\",\"ino\":2}", "not a valid file name"},
	    {"{\"dentry\":1,\"name\":\"\",\"ino\":2}", "is empty"},
	    {"{\"dentry\":1,\"ino\":2}", "is missing"},
	    {"{\"dentry\":1,\"name64\":\"YQ\",\"ino\":2}", "not base64"},
	    {"{\"xattr\":1,\"name\":\"user.x\",\"value64\":\"=AAA\"}", "not base64"},
	    {"{\"chunk\":1,\"offset\":-1,\"length\":1,\"blob_offset\":0,"
	     "\"fid\":\"3,01\"}",
	     "must be a non-negative integer"},
	    {"{\"fidref\":\"3,01\",\"count\":0}", "\"count\" must be > 0"},
	    {"{\"gc\":1,\"fid\":\"zz\",\"queued\":0}", "not a file id"},
	    {"{\"orphan\":1}", "is missing"},
	    {"{\"symlink\":1,\"target\":\"\"}", "is empty"},
	    {"{}", "not a record"},
	    {"[1]", "not a JSON object"},
	    {"\"text\"", "not JSON"},
	    {"{\"inode\":", "not JSON"},
	};

	fill(f->a);
	dump_dir(f->a, &a);
	hdr_end = strchr(a.p, '\n') + 1;
	hlen = (size_t)(hdr_end - a.p);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* the header, the good records, then the bad one before the end line */
		size_t n = a.n + strlen(bad[i].line) + 2;
		const char *end = strstr(a.p, "{\"end\":");

		text = malloc(n + 1);
		memcpy(text, a.p, (size_t)(end - a.p));
		sprintf(text + (end - a.p), "%s\n%s", bad[i].line, end);
		assert_int_equal(load_text(f->b, text, 2, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].msg) || strncmp(err, "line ", 5))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].msg);
		assert_empty(f->b);
		free(text);
	}
	/* header problems */
	assert_int_equal(load_text(f->b, "", 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty input"));
	assert_int_equal(load_text(f->b, "{\"kelp_dump\":2}\n{\"end\":0}\n", 0, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "version 2"));
	/* no generation in the header */
	assert_int_equal(load_text(f->b, "{\"kelp_dump\":1}\n{\"end\":0}\n", 0, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "generation"));
	assert_empty(f->b);
	/* a line longer than the limit */
	{
		size_t big = (2u << 20);

		text = malloc(hlen + big + 16);
		memcpy(text, a.p, hlen);
		memset(text + hlen, 'x', big);
		strcpy(text + hlen + big, "\n{\"end\":0}\n");
		assert_int_equal(load_text(f->b, text, 0, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "longer than"));
		free(text);
		assert_empty(f->b);
	}
	/* the end count must match, and nothing may follow the end */
	text = strdup(a.p);
	strstr(text, "{\"end\":")[7] = '1';
	assert_int_equal(load_text(f->b, text, 0, err, sizeof(err)), -EINVAL);
	free(text);
	assert_non_null(strstr(err, "a damaged dump"));
	assert_empty(f->b);
	free(a.p);
}

static void test_not_empty_and_unfinished(void **state)
{
	struct fx *f = *state;
	struct buf a = {0}, before = {0}, after = {0};
	char err[512];
	struct kv *kv;
	struct kv_txn *t;
	struct meta *m;

	fill(f->a);
	dump_dir(f->a, &a);
	/* a target with files: refused, unchanged */
	fill(f->b);
	dump_dir(f->b, &before);
	assert_int_equal(load_text(f->b, a.p, 0, err, sizeof(err)), -ENOTEMPTY);
	assert_non_null(strstr(err, "not empty"));
	dump_dir(f->b, &after);
	assert_string_equal(body(&before), body(&after));
	/* a load that died half-way: the marker stays, meta_open refuses, a new load
	 * replaces it */
	nftw(f->b, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(dump_open_kv(f->b, 1000, &kv), 0);
	assert_int_equal(kv->ops->begin(kv, true, &t), 0);
	assert_int_equal(kv_put(t, KV_COUNTERS, META_LOADING_KEY, strlen(META_LOADING_KEY), "1", 1),
			 0);
	assert_int_equal(kv_put(t, KV_DENTRIES, "\0\0\0\0\0\0\0\1junk", 12, "\0\0\0\0\0\0\0\7", 8),
			 0);
	assert_int_equal(kv->ops->commit(t), 0);
	kv->ops->close(kv);
	assert_int_equal(meta_open(f->b, &m), -EUCLEAN);
	assert_int_equal(load_text(f->b, a.p, 0, err, sizeof(err)), 0);
	free(after.p);
	after = (struct buf){0};
	dump_dir(f->b, &after);
	assert_string_equal(body(&a), body(&after));
	assert_int_equal(meta_open(f->b, &m), 0);
	meta_close(m);
	free(a.p);
	free(before.p);
	free(after.p);
}

/* The base64 the dump uses for names and values that are not UTF-8 (base/util). */
static void test_base64(void **state)
{
	uint8_t raw[3000] = {0}, out[3000];
	char enc[4100];
	size_t n;

	(void)state;
	for (size_t len = 0; len < sizeof(raw); len += len < 10 ? 1 : 397) {
		for (size_t i = 0; i < len; i++)
			raw[i] = (uint8_t)(i * 131 + len);
		n = base64_encode(raw, len, enc);
		assert_int_equal(base64_decode(enc, n, out, len), (long)len);
		assert_memory_equal(out, raw, len);
		if (len > 0) /* one byte too small */
			assert_int_equal(base64_decode(enc, n, out, len - 1), -1);
	}
	assert_int_equal(base64_decode("aGk=", 4, out, 2), 2);
	assert_memory_equal(out, "hi", 2);
	assert_int_equal(base64_decode("aGk", 3, out, 9), -1);	/* length */
	assert_int_equal(base64_decode("a=Gk", 4, out, 9), -1); /* '=' inside */
	assert_int_equal(base64_decode("a===", 4, out, 9), -1); /* three '=' */
	assert_int_equal(base64_decode("aG k", 4, out, 9), -1); /* a blank */
	assert_int_equal(base64_decode("aG-_", 4, out, 9), -1); /* base64url */
	assert_int_equal(base64_decode("", 0, out, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_empty_and_unfinished, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
