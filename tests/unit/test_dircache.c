/* Unit tests for fuse/dircache: the lookups read ahead (windows, freshness, stamps, when
 * to load, bounds), without an engine: the stamps are an array the test moves. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fuse/dircache.h"

#define SEC 1000000000LL

/* The "change stamps": stamp[ino] (inodes < 4096). */
static uint64_t stamp[4096];

static bool valid(void *ctx, uint64_t ino, uint64_t s)
{
	(void)ctx;
	return stamp[ino % 4096] == s;
}

/* rows named prefix + number, i in [first, first + n), inode 1000 + i, size i */
struct rowset {
	char names[600][32];
	struct meta_attr attrs[600];
	struct dircache_row rows[600];
};

static void make_rows(struct rowset *r, int first, int n)
{
	for (int i = 0; i < n; i++) {
		snprintf(r->names[i], sizeof(r->names[i]), "f%05d", first + i);
		memset(&r->attrs[i], 0, sizeof(r->attrs[i]));
		r->attrs[i].ino = 1000 + (uint64_t)(first + i);
		r->attrs[i].size = (uint64_t)(first + i);
		r->attrs[i].nlink = 1;
		r->rows[i].name = r->names[i];
		r->rows[i].attr = &r->attrs[i];
		r->rows[i].stamp = stamp[r->attrs[i].ino % 4096];
		r->rows[i].known = true;
	}
}

static struct dircache *new_cache(int dirs, int entries, int64_t ttl)
{
	struct dircache_options o = {.max_dirs = dirs, .max_entries = entries, .ttl_ns = ttl};
	struct dircache *c = NULL;

	assert_int_equal(dircache_new(&o, &c), 0);
	return c;
}

static enum dircache_result find(struct dircache *c, uint64_t dir, const char *name, int64_t now,
				 struct dircache_answer *a)
{
	return dircache_find(c, dir, name, now, valid, NULL, a);
}

/* A lookup that must not be answered from memory: a miss, or a load (given up here). */
static void assert_unknown(struct dircache *c, uint64_t dir, const char *name, int64_t now)
{
	struct dircache_answer a;
	enum dircache_result r = find(c, dir, name, now, &a);

	assert_true(r == DIRCACHE_MISS || r == DIRCACHE_LOAD);
	if (r == DIRCACHE_LOAD)
		dircache_abandon(c, dir);
}

static void test_options_and_order(void **state)
{
	struct dircache_options bad = {.max_dirs = 0, .max_entries = 1, .ttl_ns = 1};
	struct dircache *c = NULL;

	(void)state;
	assert_int_equal(dircache_new(&bad, &c), -EINVAL);
	bad.max_dirs = 1;
	bad.ttl_ns = 0;
	assert_int_equal(dircache_new(&bad, &c), -EINVAL);
	assert_int_equal(dircache_new(NULL, &c), -EINVAL);
	/* the engine's key order: bytes, then the shorter first */
	assert_true(dircache_name_cmp("a", "b") < 0);
	assert_true(dircache_name_cmp("a", "ab") < 0);
	assert_true(dircache_name_cmp("ab", "a") > 0);
	assert_true(dircache_name_cmp("", "a") < 0);
	assert_int_equal(dircache_name_cmp("abc", "abc"), 0);
	assert_true(dircache_name_cmp("\xff", "a") > 0); /* unsigned bytes */
}

/* Two misses load a never-loaded directory, from its start; the window answers hits and
 * absent names inside it until its time is up. */
static void test_load_hit_absent_expiry(void **state)
{
	struct dircache *c = new_cache(8, 1000, SEC);
	struct dircache_answer a;
	struct meta_lookup_stats st;
	static struct rowset r;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	assert_int_equal(find(c, 5, "f00003", 0, &a), DIRCACHE_MISS); /* a path walk's one */
	assert_int_equal(find(c, 5, "f00004", 0, &a), DIRCACHE_LOAD);
	assert_true(a.from_start);
	/* while it loads, others miss without loading again */
	assert_int_equal(find(c, 5, "f00005", 1, &a), DIRCACHE_MISS);
	assert_int_equal(find(c, 5, "f00006", 1, &a), DIRCACHE_MISS);
	make_rows(&r, 0, 10);
	assert_int_equal(dircache_fill(c, 5, "", NULL, r.rows, 10, false, 100, stamp[5]), 0);
	assert_int_equal(find(c, 5, "f00007", 200, &a), DIRCACHE_HIT);
	assert_int_equal(a.attr.ino, 1007);
	assert_int_equal(a.attr.size, 7);
	assert_int_equal(a.loaded_ns, 100);
	/* the window is the whole directory: anything else is absent */
	assert_int_equal(find(c, 5, "f00010", 300, &a), DIRCACHE_ABSENT);
	assert_int_equal(find(c, 5, "a", 300, &a), DIRCACHE_ABSENT);
	assert_int_equal(find(c, 5, "zzz", 300, &a), DIRCACHE_ABSENT);
	/* another directory knows nothing */
	assert_int_equal(find(c, 6, "f00007", 300, &a), DIRCACHE_MISS);
	/* up to loaded + ttl, not at it */
	assert_int_equal(find(c, 5, "f00001", 100 + SEC - 1, &a), DIRCACHE_HIT);
	/* expired: the window served, so this first miss loads again */
	assert_int_equal(find(c, 5, "f00001", 100 + SEC, &a), DIRCACHE_LOAD);
	dircache_abandon(c, 5);
	dircache_stats(c, &st);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.absent, 3);
	assert_int_equal(st.loads, 2);
	assert_int_equal(st.misses, 6);
	assert_int_equal(st.entries, 0); /* the expired window went */
	dircache_free(c);
}

/* A change of the directory drops its windows; a change of an inode its entry only,
 * which then misses (it must not read as absent). */
static void test_stamps(void **state)
{
	struct dircache *c = new_cache(8, 1000, SEC);
	struct dircache_answer a;
	static struct rowset r;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	find(c, 7, "x", 0, &a);
	assert_int_equal(find(c, 7, "x", 0, &a), DIRCACHE_LOAD);
	make_rows(&r, 0, 20);
	r.rows[3].known = false; /* changing during the load */
	assert_int_equal(dircache_fill(c, 7, "", NULL, r.rows, 20, false, 0, stamp[7]), 0);
	assert_unknown(c, 7, "f00003", 1);
	assert_int_equal(find(c, 7, "f00004", 1, &a), DIRCACHE_HIT);
	stamp[1004]++; /* this mount wrote f00004 */
	assert_unknown(c, 7, "f00004", 2);
	stamp[1004]--; /* even with the stamp it was loaded with: unknown until loaded again */
	assert_unknown(c, 7, "f00004", 2);
	assert_int_equal(find(c, 7, "f00005", 2, &a), DIRCACHE_HIT);
	assert_int_equal(find(c, 7, "nothere", 2, &a), DIRCACHE_ABSENT);
	stamp[7]++; /* a name made or removed in the directory */
	assert_unknown(c, 7, "f00005", 3);
	assert_unknown(c, 7, "nothere", 3);
	/* while a load is out, no second one */
	for (int i = 0;
	     i < 2 * DIRCACHE_BACKOFF_MAX && find(c, 7, "nothere", 3, &a) != DIRCACHE_LOAD; i++)
		;
	assert_int_equal(find(c, 7, "nothere", 3, &a), DIRCACHE_MISS);
	assert_int_equal(find(c, 7, "nothere", 3, &a), DIRCACHE_MISS);
	dircache_abandon(c, 7);
	dircache_free(c);
}

/* A big directory: a full batch from the start marks it big, the next loads read from
 * the missed name; a scan in name order then loads at its first miss past a window. */
static void test_big_directory_windows(void **state)
{
	struct dircache *c = new_cache(8, 100000, SEC);
	struct dircache_answer a;
	struct meta_lookup_stats st;
	static struct rowset r;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	find(c, 9, "f00000", 0, &a);
	assert_int_equal(find(c, 9, "f00001", 0, &a), DIRCACHE_LOAD);
	assert_true(a.from_start);
	make_rows(&r, 0, 100);
	assert_int_equal(dircache_fill(c, 9, "", r.names[99], r.rows, 100, true, 0, 0), 0);
	for (int i = 2; i < 100; i++) {
		char n[16];

		snprintf(n, sizeof(n), "f%05d", i);
		assert_int_equal(find(c, 9, n, 1, &a), DIRCACHE_HIT);
	}
	/* past the window: not absent, a miss, loaded at once (the last load served) */
	assert_int_equal(find(c, 9, "f00100", 1, &a), DIRCACHE_LOAD);
	assert_false(a.from_start);
	make_rows(&r, 100, 100);
	assert_int_equal(dircache_fill(c, 9, "f00100", r.names[99], r.rows, 100, true, 1, 0), 0);
	assert_int_equal(find(c, 9, "f00150", 2, &a), DIRCACHE_HIT);
	assert_int_equal(find(c, 9, "f00050", 2, &a), DIRCACHE_HIT); /* the first still there */
	assert_int_equal(find(c, 9, "f00100a", 2, &a), DIRCACHE_ABSENT);
	assert_int_equal(find(c, 9, "f00199", 2, &a), DIRCACHE_HIT);
	assert_unknown(c, 9, "f00099a", 2); /* between the windows */
	assert_unknown(c, 9, "f00199a", 2); /* past both */
	/* a window overlapping an older one replaces it */
	make_rows(&r, 150, 10);
	assert_int_equal(dircache_fill(c, 9, "f00150", r.names[9], r.rows, 10, false, 3, 0), 0);
	assert_unknown(c, 9, "f00100", 4); /* the old [100,199] went */
	assert_int_equal(find(c, 9, "f00155", 4, &a), DIRCACHE_HIT);
	assert_int_equal(find(c, 9, "f00010", 4, &a), DIRCACHE_HIT);
	dircache_stats(c, &st);
	assert_int_equal(st.entries, 110);
	/* rows out of order or outside the window are refused */
	make_rows(&r, 0, 3);
	r.rows[1].name = "f00009";
	assert_int_equal(dircache_fill(c, 9, "", NULL, r.rows, 3, false, 5, 0), -EINVAL);
	make_rows(&r, 0, 3);
	assert_int_equal(dircache_fill(c, 9, "f00001", NULL, r.rows, 3, false, 5, 0), -EINVAL);
	assert_int_equal(dircache_fill(c, 9, "", "f00001", r.rows, 3, false, 5, 0), -EINVAL);
	dircache_free(c);
}

/* A directory changing after every load (creates: a lookup, then a create) loads less
 * and less often: 2, 4, 8, ... misses, up to DIRCACHE_BACKOFF_MAX. */
static void test_backoff(void **state)
{
	struct dircache *c = new_cache(8, 100000, SEC);
	struct dircache_answer a;
	int loads = 0, lookups = 0, gaps[16], ngaps = 0, since = 0;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	for (int i = 0; i < 6000; i++) {
		char n[16];

		snprintf(n, sizeof(n), "new%05d", i);
		lookups++;
		since++;
		if (find(c, 11, n, i, &a) == DIRCACHE_LOAD) {
			assert_int_equal(
			    dircache_fill(c, 11, "", NULL, NULL, 0, false, i, stamp[11]), 0);
			if (ngaps < 16)
				gaps[ngaps++] = since;
			since = 0;
			loads++;
		}
		stamp[11]++; /* the create */
	}
	assert_true(ngaps >= 8);
	assert_int_equal(gaps[0], 2);
	for (int i = 1; i < 8; i++)
		assert_int_equal(gaps[i], 1 << i); /* 2, 4, 8, ... 128 */
	assert_true(loads <= 16);
	(void)lookups;
	/* a scan a while (the cache time) after the storm is read ahead at once (the
	 * storm's misses since its last load count) */
	assert_int_equal(find(c, 11, "a", 6000 + SEC, &a), DIRCACHE_LOAD);
	dircache_abandon(c, 11);
	/* a storm of 100 creates a second for 20 s: about one load a second */
	loads = 0;
	for (int i = 0; i < 2000; i++) {
		int64_t now = 100 * SEC + (int64_t)i * (SEC / 100);

		if (find(c, 11, "x", now, &a) == DIRCACHE_LOAD) {
			assert_int_equal(
			    dircache_fill(c, 11, "", NULL, NULL, 0, false, now, stamp[11]), 0);
			loads++;
		}
		stamp[11]++;
	}
	assert_true(loads >= 10 && loads <= 40);
	dircache_free(c);
}

/* Bounds: the least recently used directory goes when there are too many directories or
 * entries; a window bigger than the whole cache is not kept. */
static void test_bounds(void **state)
{
	struct dircache *c = new_cache(3, 25, SEC);
	struct dircache_answer a;
	struct meta_lookup_stats st;
	static struct rowset r;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	for (uint64_t d = 1; d <= 3; d++) {
		find(c, d, "x", 0, &a);
		assert_int_equal(find(c, d, "x", 0, &a), DIRCACHE_LOAD);
		make_rows(&r, 0, 10);
		assert_int_equal(dircache_fill(c, d, "", NULL, r.rows, 10, false, 0, 0), 0);
		dircache_stats(c, &st);
		assert_true(st.entries <= 25);
	}
	/* 3 x 10 > 25: directory 1 (least recently used) went */
	dircache_stats(c, &st);
	assert_int_equal(st.entries, 20);
	assert_int_equal(find(c, 1, "f00001", 1, &a), DIRCACHE_MISS);
	assert_int_equal(find(c, 2, "f00001", 1, &a), DIRCACHE_HIT);
	assert_int_equal(find(c, 3, "f00001", 1, &a), DIRCACHE_HIT);
	/* a fourth directory: the least recently used (1 was just made again, 2 and 3
	 * used after it: 1 is the oldest) */
	dircache_stats(c, &st);
	assert_int_equal(st.dirs, 3);
	assert_int_equal(find(c, 4, "f00001", 1, &a), DIRCACHE_MISS);
	dircache_stats(c, &st);
	assert_int_equal(st.dirs, 3);
	assert_int_equal(find(c, 2, "f00001", 1, &a), DIRCACHE_HIT);
	/* too big for the cache: not kept, the load is over */
	assert_int_equal(find(c, 4, "f00002", 1, &a), DIRCACHE_LOAD);
	make_rows(&r, 0, 30);
	assert_int_equal(dircache_fill(c, 4, "", NULL, r.rows, 30, false, 1, 0), 0);
	assert_int_equal(find(c, 4, "f00002", 2, &a), DIRCACHE_MISS);
	dircache_forget(c, 2);
	assert_int_equal(find(c, 2, "f00001", 2, &a), DIRCACHE_MISS);
	dircache_free(c);
}

/* Windows per directory are bounded (the oldest goes). */
static void test_windows_per_directory(void **state)
{
	struct dircache *c = new_cache(8, 100000, SEC);
	struct dircache_answer a;
	static struct rowset r;

	(void)state;
	memset(stamp, 0, sizeof(stamp));
	for (int w = 0; w < DIRCACHE_WINDOWS + 1; w++) {
		find(c, 3, "x", w, &a);
		find(c, 3, "x", w, &a);
		dircache_abandon(c, 3);
		make_rows(&r, w * 100, 10);
		assert_int_equal(
		    dircache_fill(c, 3, r.names[0], r.names[9], r.rows, 10, true, w, 0), 0);
	}
	assert_unknown(c, 3, "f00005", 10); /* the first went */
	for (int w = 1; w <= DIRCACHE_WINDOWS; w++) {
		char n[16];

		snprintf(n, sizeof(n), "f%05d", w * 100 + 5);
		assert_int_equal(find(c, 3, n, 10, &a), DIRCACHE_HIT);
	}
	dircache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_options_and_order),
	    cmocka_unit_test(test_load_hit_absent_expiry),
	    cmocka_unit_test(test_stamps),
	    cmocka_unit_test(test_big_directory_windows),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_windows_per_directory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
