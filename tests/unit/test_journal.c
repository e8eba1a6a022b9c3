/*
 * Unit tests for fuse/journal: the write-back journal of `kelp mount -writeback` (one
 * checksummed file per entry). Each test works in a fresh temporary directory.
 */
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

#include "fuse/journal.h"

struct fx {
	char base[64];
	char dir[128];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->base, sizeof(f->base), "/tmp/kelp-journal-XXXXXX");
	assert_non_null(mkdtemp(f->base));
	snprintf(f->dir, sizeof(f->dir), "%s/j", f->base);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

struct seen {
	int n;
	struct journal_entry e[16];
	uint8_t first[16];
};

static int collect(void *ctx, const struct journal_entry *e, const uint8_t *data)
{
	struct seen *s = ctx;

	assert_true(s->n < 16);
	s->e[s->n] = *e;
	s->first[s->n] = data[0];
	for (uint64_t i = 0; i < e->len; i++)
		assert_int_equal(data[i], (uint8_t)(data[0] + i));
	s->n++;
	return 0;
}

static void fill(uint8_t *p, size_t n, uint8_t first)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(first + i);
}

static struct journal *open_j(struct fx *f, uint64_t limit)
{
	char err[256];
	struct journal *j = journal_open(f->dir, limit, err, sizeof(err));

	assert_non_null(j);
	return j;
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	struct journal *j = open_j(f, 1 << 20);
	uint8_t buf[5000];
	uint64_t ids[3];
	struct seen s = {0};
	int damaged = -1;

	for (int i = 0; i < 3; i++) {
		fill(buf, sizeof(buf), (uint8_t)(10 * i));
		assert_int_equal(
		    journal_append(j, 100 + i, 4096 * i, buf, 1000 + i, 77 + i, &ids[i]), 0);
	}
	assert_true(ids[0] < ids[1] && ids[1] < ids[2]);
	assert_int_equal(journal_bytes(j), 3003);
	journal_remove(j, ids[1], 1001);
	assert_int_equal(journal_bytes(j), 2002);
	journal_close(j);

	/* a crash left a temporary file: dropped, and its id never reused */
	{
		char p[300];
		int fd;

		snprintf(p, sizeof(p), "%s/%016x.tmp", f->dir, 99);
		fd = open(p, O_CREAT | O_WRONLY, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "torn", 4), 4);
		close(fd);
	}
	j = open_j(f, 1 << 20);
	assert_int_equal(journal_replay(j, collect, &s, &damaged), 2);
	assert_int_equal(damaged, 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.e[0].jid, ids[0]);
	assert_int_equal(s.e[0].ino, 100);
	assert_int_equal(s.e[0].off, 0);
	assert_int_equal(s.e[0].len, 1000);
	assert_int_equal(s.e[0].write_ns, 77);
	assert_int_equal(s.first[0], 0);
	assert_int_equal(s.e[1].jid, ids[2]);
	assert_int_equal(s.e[1].ino, 102);
	assert_int_equal(s.e[1].off, 8192);
	assert_int_equal(s.first[1], 20);
	assert_int_equal(journal_bytes(j), 2002);
	{
		uint64_t next;
		char p[300];

		assert_int_equal(journal_append(j, 5, 0, buf, 10, 0, &next), 0);
		assert_true(next > 99);
		snprintf(p, sizeof(p), "%s/%016x.tmp", f->dir, 99);
		assert_int_equal(access(p, F_OK), -1);
	}
	journal_close(j);
}

static void test_limit(void **state)
{
	struct fx *f = *state;
	struct journal *j = open_j(f, 10000);
	uint8_t buf[6000] = {0};
	uint64_t a, b;

	assert_int_equal(journal_append(j, 1, 0, buf, 6000, 0, &a), 0);
	assert_int_equal(journal_append(j, 1, 0, buf, 6000, 0, &b), -EFBIG);
	assert_int_equal(journal_bytes(j), 6000);
	journal_remove(j, a, 6000);
	assert_int_equal(journal_append(j, 1, 0, buf, 6000, 0, &b), 0);
	assert_int_equal(journal_append(j, 1, 0, buf, 0, 0, &b), -EINVAL);
	journal_close(j);
}

static void flip(struct fx *f, uint64_t jid, off_t at)
{
	char p[300];
	uint8_t c;
	int fd;

	snprintf(p, sizeof(p), "%s/%016llx.wbj", f->dir, (unsigned long long)jid);
	fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, at), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, at), 1);
	close(fd);
}

static void test_damaged(void **state)
{
	struct fx *f = *state;
	struct journal *j = open_j(f, 1 << 20);
	uint8_t buf[3000];
	uint64_t ids[5];
	struct seen s = {0};
	int damaged = 0;
	char p[300];

	for (int i = 0; i < 5; i++) {
		fill(buf, sizeof(buf), (uint8_t)i);
		assert_int_equal(journal_append(j, 7, 0, buf, 3000, 0, &ids[i]), 0);
	}
	journal_close(j);
	flip(f, ids[0], JOURNAL_HEADER_SIZE + 5); /* data */
	flip(f, ids[1], 24);			  /* the inode number: header checksum */
	snprintf(p, sizeof(p), "%s/%016llx.wbj", f->dir, (unsigned long long)ids[2]);
	assert_int_equal(truncate(p, 1000), 0); /* cut short */
	flip(f, ids[3], 0);			/* magic */

	j = open_j(f, 1 << 20);
	assert_int_equal(journal_replay(j, collect, &s, &damaged), 1);
	assert_int_equal(damaged, 4);
	assert_int_equal(s.e[0].jid, ids[4]);
	assert_int_equal(journal_bytes(j), 3000);
	for (int i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s/damaged/%016llx.wbj", f->dir,
			 (unsigned long long)ids[i]);
		assert_int_equal(access(p, F_OK), 0);
	}
	journal_close(j);
}

static int stop_at_second(void *ctx, const struct journal_entry *e, const uint8_t *data)
{
	int *n = ctx;

	return ++*n == 2 ? -EIO : 0;
}

static void test_callback_error_stops(void **state)
{
	struct fx *f = *state;
	struct journal *j = open_j(f, 1 << 20);
	uint8_t buf[10] = {1};
	uint64_t id;
	int n = 0, damaged;

	for (int i = 0; i < 3; i++)
		assert_int_equal(journal_append(j, 1, 0, buf, 10, 0, &id), 0);
	journal_close(j);
	j = open_j(f, 1 << 20);
	assert_int_equal(journal_replay(j, stop_at_second, &n, &damaged), -EIO);
	assert_int_equal(n, 2);
	journal_close(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_callback_error_stops, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
