/*
 * Unit tests for cache/chunk_cache: the reference-counted LRU memory cache of blobs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/chunk_cache.h"

/* A malloc'ed buffer of len bytes, all `fill`. */
static uint8_t *blob(size_t len, uint8_t fill)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	memset(p, fill, len);
	return p;
}

static void expect_bytes(const struct chunk_cache_entry *e, size_t len, uint8_t fill)
{
	assert_non_null(e);
	assert_int_equal(e->len, len);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(e->data[i], fill);
}

static void test_insert_get_put(void **state)
{
	struct chunk_cache *c = chunk_cache_new(1000);
	const struct chunk_cache_entry *e, *g;

	assert_non_null(c);
	assert_null(chunk_cache_get(c, "1,a"));
	e = chunk_cache_insert(c, "1,a", blob(100, 0xa1), 100);
	expect_bytes(e, 100, 0xa1);
	assert_int_equal(chunk_cache_bytes(c), 100);
	g = chunk_cache_get(c, "1,a");
	assert_ptr_equal(g, e);
	chunk_cache_put(c, g);
	chunk_cache_put(c, e);
	/* Still cached with no reference held. */
	g = chunk_cache_get(c, "1,a");
	expect_bytes(g, 100, 0xa1);
	chunk_cache_put(c, g);
	assert_null(chunk_cache_get(c, "1,b"));
	chunk_cache_put(c, NULL); /* harmless */

	/* An empty blob. */
	e = chunk_cache_insert(c, "1,e", blob(0, 0), 0);
	assert_non_null(e);
	assert_int_equal(e->len, 0);
	chunk_cache_put(c, e);
	g = chunk_cache_get(c, "1,e");
	assert_non_null(g);
	chunk_cache_put(c, g);
	assert_int_equal(chunk_cache_bytes(c), 100);
	chunk_cache_free(c);
	chunk_cache_free(NULL);
}

static void test_lru_eviction(void **state)
{
	struct chunk_cache *c = chunk_cache_new(300);
	const struct chunk_cache_entry *e;
	char fid[16];

	for (int i = 0; i < 3; i++) {
		snprintf(fid, sizeof(fid), "1,%d", i);
		chunk_cache_put(c, chunk_cache_insert(c, fid, blob(100, (uint8_t)i), 100));
	}
	assert_int_equal(chunk_cache_bytes(c), 300);
	/* Touch 0: 1 is now the least recently used. */
	e = chunk_cache_get(c, "1,0");
	assert_non_null(e);
	chunk_cache_put(c, e);
	chunk_cache_put(c, chunk_cache_insert(c, "1,3", blob(100, 3), 100));
	assert_int_equal(chunk_cache_bytes(c), 300);
	assert_null(chunk_cache_get(c, "1,1"));
	for (int i = 0; i < 4; i++) {
		if (i == 1)
			continue;
		snprintf(fid, sizeof(fid), "1,%d", i);
		e = chunk_cache_get(c, fid);
		expect_bytes(e, 100, (uint8_t)i);
		chunk_cache_put(c, e);
	}
	/* Gets in order 0, 2, 3: a 200-byte insert evicts 0 and 2. */
	chunk_cache_put(c, chunk_cache_insert(c, "1,4", blob(200, 4), 200));
	assert_int_equal(chunk_cache_bytes(c), 300);
	assert_null(chunk_cache_get(c, "1,0"));
	assert_null(chunk_cache_get(c, "1,2"));
	e = chunk_cache_get(c, "1,3");
	assert_non_null(e);
	chunk_cache_put(c, e);

	/* A blob bigger than the whole cache is handed back but not kept. */
	e = chunk_cache_insert(c, "1,big", blob(301, 9), 301);
	expect_bytes(e, 301, 9);
	assert_int_equal(chunk_cache_bytes(c), 300);
	assert_null(chunk_cache_get(c, "1,big"));
	chunk_cache_put(c, e);
	/* A blob of exactly the capacity replaces everything. */
	chunk_cache_put(c, chunk_cache_insert(c, "1,full", blob(300, 8), 300));
	assert_int_equal(chunk_cache_bytes(c), 300);
	assert_null(chunk_cache_get(c, "1,3"));
	assert_null(chunk_cache_get(c, "1,4"));
	e = chunk_cache_get(c, "1,full");
	expect_bytes(e, 300, 8);
	chunk_cache_put(c, e);
	chunk_cache_free(c);
}

static void test_refs_survive_eviction(void **state)
{
	struct chunk_cache *c = chunk_cache_new(100);
	const struct chunk_cache_entry *a, *a2, *b;

	a = chunk_cache_insert(c, "1,a", blob(100, 0xaa), 100);
	a2 = chunk_cache_get(c, "1,a");
	assert_ptr_equal(a, a2);
	/* Evicted by b while two references are held. */
	b = chunk_cache_insert(c, "1,b", blob(100, 0xbb), 100);
	assert_null(chunk_cache_get(c, "1,a"));
	assert_int_equal(chunk_cache_bytes(c), 100);
	expect_bytes(a, 100, 0xaa);
	chunk_cache_put(c, a);
	expect_bytes(a2, 100, 0xaa);
	chunk_cache_put(c, a2);

	/* Forgotten while referenced. */
	chunk_cache_forget(c, "1,b");
	assert_null(chunk_cache_get(c, "1,b"));
	assert_int_equal(chunk_cache_bytes(c), 0);
	expect_bytes(b, 100, 0xbb);
	chunk_cache_put(c, b);
	chunk_cache_forget(c, "1,b"); /* absent: harmless */
	chunk_cache_free(c);
}

static void test_duplicate_insert(void **state)
{
	struct chunk_cache *c = chunk_cache_new(1000);
	const struct chunk_cache_entry *a, *dup;

	a = chunk_cache_insert(c, "1,a", blob(10, 1), 10);
	/* The second insert's data is freed (checked by the sanitizers/valgrind). */
	dup = chunk_cache_insert(c, "1,a", blob(20, 2), 20);
	assert_ptr_equal(dup, a);
	expect_bytes(dup, 10, 1);
	assert_int_equal(chunk_cache_bytes(c), 10);
	chunk_cache_put(c, dup);
	chunk_cache_put(c, a);
	a = chunk_cache_get(c, "1,a");
	expect_bytes(a, 10, 1);
	chunk_cache_put(c, a);
	chunk_cache_free(c);
}

static void test_capacity_zero(void **state)
{
	struct chunk_cache *c = chunk_cache_new(0);
	const struct chunk_cache_entry *e, *e2;

	assert_non_null(c);
	e = chunk_cache_insert(c, "1,a", blob(64, 7), 64);
	expect_bytes(e, 64, 7);
	assert_null(chunk_cache_get(c, "1,a"));
	assert_int_equal(chunk_cache_bytes(c), 0);
	/* A second insert of the same fid is a separate, usable entry. */
	e2 = chunk_cache_insert(c, "1,a", blob(64, 8), 64);
	expect_bytes(e2, 64, 8);
	chunk_cache_ref(c, e);
	chunk_cache_put(c, e);
	expect_bytes(e, 64, 7);
	chunk_cache_put(c, e);
	chunk_cache_put(c, e2);
	chunk_cache_free(c);
}

static void test_ref(void **state)
{
	struct chunk_cache *c = chunk_cache_new(100);
	const struct chunk_cache_entry *e;

	e = chunk_cache_insert(c, "1,a", blob(100, 5), 100);
	chunk_cache_ref(c, e);
	chunk_cache_ref(c, e);
	chunk_cache_forget(c, "1,a");
	/* Three references left: caller's insert and two refs. */
	chunk_cache_put(c, e);
	expect_bytes(e, 100, 5);
	chunk_cache_put(c, e);
	expect_bytes(e, 100, 5);
	chunk_cache_put(c, e);
	assert_int_equal(chunk_cache_bytes(c), 0);
	chunk_cache_free(c);
}

/* Many fids (hash collisions, long LRU lists) stay consistent. */
static void test_many(void **state)
{
	struct chunk_cache *c = chunk_cache_new(50 * 1000);
	char fid[32];

	for (int i = 0; i < 10000; i++) {
		snprintf(fid, sizeof(fid), "%d,%x", i % 7, i);
		chunk_cache_put(c, chunk_cache_insert(c, fid, blob(100, (uint8_t)i), 100));
		assert_true(chunk_cache_bytes(c) <= 50 * 1000);
	}
	assert_int_equal(chunk_cache_bytes(c), 50 * 1000);
	for (int i = 0; i < 10000; i++) {
		const struct chunk_cache_entry *e;

		snprintf(fid, sizeof(fid), "%d,%x", i % 7, i);
		e = chunk_cache_get(c, fid);
		if (i < 9500) {
			assert_null(e);
		} else {
			expect_bytes(e, 100, (uint8_t)i);
			chunk_cache_put(c, e);
		}
	}
	for (int i = 9500; i < 10000; i += 2) {
		snprintf(fid, sizeof(fid), "%d,%x", i % 7, i);
		chunk_cache_forget(c, fid);
	}
	assert_int_equal(chunk_cache_bytes(c), 25 * 1000);
	chunk_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_insert_get_put),
	    cmocka_unit_test(test_lru_eviction),
	    cmocka_unit_test(test_refs_survive_eviction),
	    cmocka_unit_test(test_duplicate_insert),
	    cmocka_unit_test(test_capacity_zero),
	    cmocka_unit_test(test_ref),
	    cmocka_unit_test(test_many),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
