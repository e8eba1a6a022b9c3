/*
 * Unit tests for cluster/needle_map: the open-addressing key -> (offset, size) table
 * behind every volume's in-memory index.
 *
 * Besides the API contract (set/get/delete, overwrite, key 0, each), a randomised run
 * checks every answer against a trivial reference model, with key sets small enough to
 * keep the table at a few dozen slots (so probe chains wrap around the end of the table
 * and backward-shift deletion is exercised on every delete) and large enough to grow it
 * many times. The memory figure at one million keys is the limit (40 bytes).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/storage/needle_map.h"

/* xorshift64*: a fixed-seed generator, so that failures reproduce. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed ? seed : 1;
}

static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static bool is_power_of_two(size_t n)
{
	return n != 0 && (n & (n - 1)) == 0;
}

/* ---- basic contract ---------------------------------------------------------------- */

static void test_empty_map(void **state)
{
	struct needle_map m;
	struct needle_map_entry e;

	needle_map_init(&m);
	assert_int_equal(m.count, 0);
	assert_false(needle_map_get(&m, 1, &e));
	assert_false(needle_map_delete(&m, 1, &e));
	assert_false(needle_map_delete(&m, 1, NULL));
	assert_int_equal(needle_map_memory(&m), 0);
	needle_map_release(&m);
	/* release on an empty (and on a released) map is harmless */
	needle_map_release(&m);
	assert_int_equal(m.count, 0);
	assert_int_equal(m.capacity, 0);
	assert_null(m.slots);
}

static void test_set_get_delete(void **state)
{
	struct needle_map m;
	struct needle_map_entry e;

	needle_map_init(&m);
	assert_int_equal(needle_map_set(&m, 42, 1000, 77, NULL), 0);
	assert_int_equal(m.count, 1);
	assert_true(is_power_of_two(m.capacity));
	assert_true(needle_map_get(&m, 42, &e));
	assert_int_equal(e.key, 42);
	assert_int_equal(e.offset, 1000);
	assert_int_equal(e.size, 77);
	assert_false(needle_map_get(&m, 43, &e));

	/* extreme values survive unchanged */
	assert_int_equal(needle_map_set(&m, UINT64_MAX, UINT32_MAX, UINT32_MAX, NULL), 0);
	assert_true(needle_map_get(&m, UINT64_MAX, &e));
	assert_true(e.key == UINT64_MAX);
	assert_int_equal(e.offset, UINT32_MAX);
	assert_int_equal(e.size, UINT32_MAX);
	assert_int_equal(needle_map_set(&m, 1, 0, 0, NULL), 0);
	assert_true(needle_map_get(&m, 1, &e));
	assert_int_equal(e.offset, 0);
	assert_int_equal(e.size, 0);
	assert_int_equal(m.count, 3);

	memset(&e, 0, sizeof(e));
	assert_true(needle_map_delete(&m, 42, &e));
	assert_int_equal(e.key, 42);
	assert_int_equal(e.offset, 1000);
	assert_int_equal(e.size, 77);
	assert_int_equal(m.count, 2);
	assert_false(needle_map_get(&m, 42, &e));
	assert_false(needle_map_delete(&m, 42, &e));
	assert_int_equal(m.count, 2);
	assert_true(needle_map_get(&m, UINT64_MAX, &e));
	assert_true(needle_map_get(&m, 1, &e));

	/* delete without an out parameter, then set again: a new key */
	assert_true(needle_map_delete(&m, 1, NULL));
	assert_int_equal(needle_map_set(&m, 1, 5, 6, NULL), 0);
	assert_true(needle_map_get(&m, 1, &e));
	assert_int_equal(e.offset, 5);
	assert_int_equal(e.size, 6);
	needle_map_release(&m);
}

static void test_overwrite_returns_old(void **state)
{
	struct needle_map m;
	struct needle_map_entry old, e;

	needle_map_init(&m);
	assert_int_equal(needle_map_set(&m, 7, 10, 20, &old), 0);
	memset(&old, 0xAA, sizeof(old));
	assert_int_equal(needle_map_set(&m, 7, 30, 40, &old), 1);
	assert_int_equal(old.key, 7);
	assert_int_equal(old.offset, 10);
	assert_int_equal(old.size, 20);
	assert_int_equal(m.count, 1);
	assert_true(needle_map_get(&m, 7, &e));
	assert_int_equal(e.offset, 30);
	assert_int_equal(e.size, 40);
	/* NULL old is allowed on overwrite too */
	assert_int_equal(needle_map_set(&m, 7, 50, 60, NULL), 1);
	assert_true(needle_map_get(&m, 7, &e));
	assert_int_equal(e.offset, 50);
	assert_int_equal(e.size, 60);
	assert_int_equal(m.count, 1);
	needle_map_release(&m);
}

static void test_key_zero_rejected(void **state)
{
	struct needle_map m;
	struct needle_map_entry e;

	needle_map_init(&m);
	assert_int_equal(needle_map_set(&m, 0, 1, 2, &e), -EINVAL);
	assert_int_equal(m.count, 0);
	assert_false(needle_map_get(&m, 0, &e));
	assert_false(needle_map_delete(&m, 0, &e));
	/* and with entries present (key 0 is the empty-slot marker) */
	for (uint64_t k = 1; k <= 100; k++)
		assert_int_equal(needle_map_set(&m, k, (uint32_t)k, 1, NULL), 0);
	assert_int_equal(needle_map_set(&m, 0, 1, 2, NULL), -EINVAL);
	assert_false(needle_map_get(&m, 0, &e));
	assert_false(needle_map_delete(&m, 0, NULL));
	assert_int_equal(m.count, 100);
	for (uint64_t k = 1; k <= 100; k++)
		assert_true(needle_map_get(&m, k, &e));
	needle_map_release(&m);
}

/* ---- growth ------------------------------------------------------------------------ */

static void check_all_sequential(const struct needle_map *m, uint64_t n, uint64_t stride)
{
	struct needle_map_entry e;

	for (uint64_t i = 1; i <= n; i++) {
		uint64_t key = i * stride;

		assert_true(needle_map_get(m, key, &e));
		assert_true(e.key == key);
		assert_int_equal(e.offset, (uint32_t)(i * 3));
		assert_int_equal(e.size, (uint32_t)(i ^ 0x5555));
	}
	assert_false(needle_map_get(m, (n + 1) * stride, &e));
}

static void test_growth(void **state)
{
	/* Sequential keys, multiples of a power of two, and keys spread over 64 bits. */
	static const uint64_t strides[] = {1, 1024, 0x9E3779B1ull};
	struct needle_map m;

	for (size_t s = 0; s < sizeof(strides) / sizeof(strides[0]); s++) {
		size_t last_cap = 0, grows = 0;

		needle_map_init(&m);
		for (uint64_t i = 1; i <= 300000; i++) {
			assert_int_equal(needle_map_set(&m, i * strides[s], (uint32_t)(i * 3),
							(uint32_t)(i ^ 0x5555), NULL),
					 0);
			assert_int_equal(m.count, i);
			/* at most 80% full, a power of two, 16 bytes a slot */
			assert_true(is_power_of_two(m.capacity));
			assert_true(m.count * 5 <= m.capacity * 4);
			assert_int_equal(needle_map_memory(&m),
					 m.capacity * sizeof(struct needle_map_entry));
			if (m.capacity != last_cap) {
				grows++;
				last_cap = m.capacity;
				/* right after each growth, every entry is still there */
				check_all_sequential(&m, i, strides[s]);
			}
		}
		assert_true(grows >= 10);
		check_all_sequential(&m, 300000, strides[s]);
		needle_map_release(&m);
	}
}

/* ---- randomised comparison with a reference model -------------------------------------- */

struct model {
	uint64_t *keys; /* the key universe */
	bool *present;
	uint32_t *offset, *size;
	size_t nkeys, count;
};

static void model_init(struct model *r, size_t nkeys)
{
	r->keys = calloc(nkeys, sizeof(*r->keys));
	r->present = calloc(nkeys, sizeof(*r->present));
	r->offset = calloc(nkeys, sizeof(*r->offset));
	r->size = calloc(nkeys, sizeof(*r->size));
	assert_non_null(r->keys);
	assert_non_null(r->present);
	assert_non_null(r->offset);
	assert_non_null(r->size);
	r->nkeys = nkeys;
	r->count = 0;
	/* Half sequential keys (as SeaweedFS issues them), half arbitrary 64-bit keys. */
	for (size_t i = 0; i < nkeys; i++) {
		if (i % 2 == 0) {
			r->keys[i] = i / 2 + 1;
		} else {
			do {
				r->keys[i] = rng_next() | (1ull << 63);
			} while (r->keys[i] == 0);
		}
	}
}

static void model_free(struct model *r)
{
	free(r->keys);
	free(r->present);
	free(r->offset);
	free(r->size);
}

static void check_against_model(const struct needle_map *m, const struct model *r)
{
	struct needle_map_entry e;

	assert_int_equal(m->count, r->count);
	for (size_t i = 0; i < r->nkeys; i++) {
		bool found = needle_map_get(m, r->keys[i], &e);

		assert_int_equal(found, r->present[i]);
		if (found) {
			assert_true(e.key == r->keys[i]);
			assert_int_equal(e.offset, r->offset[i]);
			assert_int_equal(e.size, r->size[i]);
		}
	}
}

/* Runs ops random operations over a universe of nkeys keys; returns the number of deletes. */
static size_t random_run(size_t nkeys, size_t ops, uint64_t seed)
{
	struct needle_map m;
	struct model r;
	size_t deletes = 0;

	rng_seed(seed);
	model_init(&r, nkeys);
	needle_map_init(&m);
	for (size_t op = 0; op < ops; op++) {
		size_t i = (size_t)(rng_next() % nkeys);
		uint64_t key = r.keys[i];
		unsigned kind = (unsigned)(rng_next() % 100);
		struct needle_map_entry e;

		if (kind < 45) {
			uint32_t off = (uint32_t)rng_next(), size = (uint32_t)rng_next();
			int ret;

			memset(&e, 0, sizeof(e));
			ret = needle_map_set(&m, key, off, size, &e);
			assert_int_equal(ret, r.present[i] ? 1 : 0);
			if (r.present[i]) {
				assert_true(e.key == key);
				assert_int_equal(e.offset, r.offset[i]);
				assert_int_equal(e.size, r.size[i]);
			} else {
				r.count++;
			}
			r.present[i] = true;
			r.offset[i] = off;
			r.size[i] = size;
		} else if (kind < 80) {
			bool found = needle_map_delete(&m, key, &e);

			assert_int_equal(found, r.present[i]);
			if (found) {
				assert_true(e.key == key);
				assert_int_equal(e.offset, r.offset[i]);
				assert_int_equal(e.size, r.size[i]);
				r.count--;
				deletes++;
			}
			r.present[i] = false;
		} else {
			bool found = needle_map_get(&m, key, &e);

			assert_int_equal(found, r.present[i]);
			if (found) {
				assert_true(e.key == key);
				assert_int_equal(e.offset, r.offset[i]);
				assert_int_equal(e.size, r.size[i]);
			}
		}
		assert_int_equal(m.count, r.count);
		/* After a delete, the keys that shared its probe chain must still be found:
		 * small tables are checked in full every time, large ones now and then. */
		if (nkeys <= 64 || op % 4096 == 0)
			check_against_model(&m, &r);
	}
	check_against_model(&m, &r);
	/* delete everything: the table ends empty and every get misses */
	for (size_t i = 0; i < nkeys; i++) {
		assert_int_equal(needle_map_delete(&m, r.keys[i], NULL), r.present[i]);
		r.present[i] = false;
	}
	r.count = 0;
	check_against_model(&m, &r);
	for (size_t i = 0; i < m.capacity; i++)
		assert_true(m.slots[i].key == 0);
	needle_map_release(&m);
	model_free(&r);
	return deletes;
}

static void test_random_against_model(void **state)
{
	size_t deletes = 0;

	/* 200k operations in all: a tiny table (wrap-around, long chains relative to its
	 * size), a medium one, and one large enough to grow many times. */
	deletes += random_run(40, 50000, 0x1234);
	deletes += random_run(2000, 50000, 0x5678);
	deletes += random_run(100000, 100000, 0x9abc);
	printf("random run: %zu successful deletes\n", deletes);
	assert_true(deletes > 10000);
}

/* The table's own hash, copied here only to pick keys that collide on purpose; if the
 * implementation changes its hash, the test still checks correctness, less pointedly. */
static size_t home_slot(uint64_t key, size_t mask)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
}

static void test_backward_shift_wraparound(void **state)
{
	/* 40 keys whose home is one of the last two slots of a 64-slot table: their probe
	 * chain wraps around slot 0. Delete them in every order class and check the rest. */
	uint64_t keys[40];
	size_t n = 0;
	struct needle_map m;
	struct needle_map_entry e;

	for (uint64_t k = 1; n < 40; k++) {
		size_t h = home_slot(k, 63);

		if (h >= 62)
			keys[n++] = k;
	}
	for (int order = 0; order < 3; order++) {
		needle_map_init(&m);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(
			    needle_map_set(&m, keys[i], (uint32_t)i, (uint32_t)(i + 1), NULL), 0);
		assert_int_equal(m.capacity, 64);
		for (size_t d = 0; d < n; d++) {
			/* order 0: first inserted first, 1: last first, 2: from the middle outwards */
			size_t victim = order == 0 ? d : order == 1 ? n - 1 - d : (d * 7 + 3) % n;

			assert_true(needle_map_delete(&m, keys[victim], &e));
			assert_int_equal(e.offset, (uint32_t)victim);
			assert_false(needle_map_get(&m, keys[victim], &e));
			/* everything not yet deleted is still found */
			for (size_t j = d + 1; j < n; j++) {
				size_t other = order == 0   ? j
					       : order == 1 ? n - 1 - j
							    : (j * 7 + 3) % n;

				assert_true(needle_map_get(&m, keys[other], &e));
				assert_int_equal(e.offset, (uint32_t)other);
				assert_int_equal(e.size, (uint32_t)(other + 1));
			}
		}
		assert_int_equal(m.count, 0);
		needle_map_release(&m);
	}
}

/* Longest run of consecutive occupied slots (cyclic): the worst probe length. */
static size_t longest_run(const struct needle_map *m)
{
	size_t best = 0, run = 0, start = 0;

	/* start right after an empty slot so that a run wrapping around is counted once */
	while (start < m->capacity && m->slots[start].key != 0)
		start++;
	for (size_t n = 0; n < m->capacity; n++) {
		size_t i = (start + n) & (m->capacity - 1);

		run = m->slots[i].key != 0 ? run + 1 : 0;
		if (run > best)
			best = run;
	}
	return best;
}

static void test_high_bit_keys_spread(void **state)
{
	/*
	 * Keys that differ only in their high bits (client-chosen file ids can be anything)
	 * must still spread over the table: with linear probing, keys that share a home slot
	 * form one run that every lookup walks, and inserting n of them costs O(n^2).
	 * Good hashing at <= 80% load keeps the longest run in the tens; 1000 of 10000 keys in
	 * one run means the hash ignores the bits the keys differ in.
	 */
	static const unsigned shifts[] = {32, 40, 48};
	enum { N = 10000 };
	size_t worst = 0;

	for (size_t s = 0; s < sizeof(shifts) / sizeof(shifts[0]); s++) {
		struct needle_map m;
		struct needle_map_entry e;
		size_t run;

		needle_map_init(&m);
		for (uint64_t i = 1; i <= N; i++)
			assert_int_equal(needle_map_set(&m, i << shifts[s], (uint32_t)i, 1, NULL),
					 0);
		for (uint64_t i = 1; i <= N; i++) {
			assert_true(needle_map_get(&m, i << shifts[s], &e));
			assert_int_equal(e.offset, (uint32_t)i);
		}
		run = longest_run(&m);
		printf("keys i<<%u: longest probe run %zu of %zu slots\n", shifts[s], run,
		       m.capacity);
		if (run > worst)
			worst = run;
		needle_map_release(&m);
	}
	assert_true(worst < 1000);
}

/* ---- each() ------------------------------------------------------------------------ */

struct visit {
	uint8_t *seen; /* by key */
	size_t max_key, calls, stop_after;
};

static int visit_entry(void *ctx, const struct needle_map_entry *e)
{
	struct visit *v = ctx;

	assert_true(e->key >= 1 && e->key <= v->max_key);
	assert_int_equal(e->offset, (uint32_t)(e->key * 2));
	assert_int_equal(e->size, (uint32_t)(e->key + 9));
	v->seen[e->key]++;
	v->calls++;
	if (v->stop_after && v->calls == v->stop_after)
		return 77;
	return 0;
}

static void test_each(void **state)
{
	enum { N = 50000 };
	struct needle_map m;
	struct visit v = {.max_key = N};
	size_t live = 0;

	v.seen = calloc(N + 1, 1);
	assert_non_null(v.seen);
	needle_map_init(&m);
	/* nothing to visit in an empty map */
	assert_int_equal(needle_map_each(&m, visit_entry, &v), 0);
	assert_int_equal(v.calls, 0);

	for (uint64_t k = 1; k <= N; k++)
		assert_int_equal(needle_map_set(&m, k, (uint32_t)(k * 2), (uint32_t)(k + 9), NULL),
				 0);
	/* delete every third key and overwrite some others with the same value */
	for (uint64_t k = 3; k <= N; k += 3)
		assert_true(needle_map_delete(&m, k, NULL));
	for (uint64_t k = 1; k <= N; k += 5)
		if (k % 3 != 0)
			assert_int_equal(
			    needle_map_set(&m, k, (uint32_t)(k * 2), (uint32_t)(k + 9), NULL), 1);

	assert_int_equal(needle_map_each(&m, visit_entry, &v), 0);
	for (uint64_t k = 1; k <= N; k++) {
		assert_int_equal(v.seen[k], k % 3 == 0 ? 0 : 1);
		live += k % 3 != 0;
	}
	assert_int_equal(v.calls, live);
	assert_int_equal(m.count, live);

	/* a non-zero return stops the walk and is passed through */
	memset(v.seen, 0, N + 1);
	v.calls = 0;
	v.stop_after = 10;
	assert_int_equal(needle_map_each(&m, visit_entry, &v), 77);
	assert_int_equal(v.calls, 10);
	free(v.seen);
	needle_map_release(&m);
}

/* ---- memory ------------------------------------------------------------------------- */

static void test_memory_per_entry(void **state)
{
	enum { N = 1000000 };
	struct needle_map m;
	struct needle_map_entry e;
	double per_entry;

	needle_map_init(&m);
	/* keys as a volume sees them: increasing, with gaps */
	for (uint64_t k = 1; k <= N; k++)
		assert_int_equal(needle_map_set(&m, k * 3 + 1000, (uint32_t)k, 100, NULL), 0);
	assert_int_equal(m.count, N);
	per_entry = (double)needle_map_memory(&m) / 1e6;
	printf("needle_map: %zu bytes for %d entries = %.2f bytes/entry (limit 40)\n",
	       needle_map_memory(&m), N, per_entry);
	assert_true(per_entry <= 40.0);
	for (uint64_t k = 1; k <= N; k += 997) {
		assert_true(needle_map_get(&m, k * 3 + 1000, &e));
		assert_int_equal(e.offset, (uint32_t)k);
	}
	needle_map_release(&m);
	assert_int_equal(needle_map_memory(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_map),
	    cmocka_unit_test(test_set_get_delete),
	    cmocka_unit_test(test_overwrite_returns_old),
	    cmocka_unit_test(test_key_zero_rejected),
	    cmocka_unit_test(test_growth),
	    cmocka_unit_test(test_random_against_model),
	    cmocka_unit_test(test_backward_shift_wraparound),
	    cmocka_unit_test(test_high_bit_keys_spread),
	    cmocka_unit_test(test_each),
	    cmocka_unit_test(test_memory_per_entry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
