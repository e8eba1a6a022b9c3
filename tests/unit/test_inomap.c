/* Unit tests for fuse/inomap: the mount's lookup counts, checked against a plain array. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "fuse/inomap.h"

static void test_basic(void **state)
{
	struct inomap m;

	inomap_init(&m);
	assert_int_equal(inomap_get(&m, 5), 0);
	assert_int_equal(inomap_set(&m, 0, 1), -22);
	assert_int_equal(inomap_set(&m, 5, 3), 0);
	assert_int_equal(inomap_get(&m, 5), 3);
	assert_int_equal(inomap_set(&m, 5, 0), 0);
	assert_int_equal(inomap_get(&m, 5), 0);
	assert_int_equal(inomap_size(&m), 0);
	assert_int_equal(inomap_set(&m, 7, 0), 0); /* removing the absent: nothing */
	assert_int_equal(inomap_size(&m), 0);
	inomap_release(&m);
}

/* Random sets and removals over a small key space (many collisions and wraps), the
 * map compared with an array after every step. */
static void test_model(void **state)
{
	enum { KEYS = 3000, STEPS = 200000 };
	static uint64_t model[KEYS];
	struct inomap m;
	size_t n = 0;

	srand(42);
	inomap_init(&m);
	for (int s = 0; s < STEPS; s++) {
		uint64_t k = 1 + (uint64_t)(rand() % (KEYS - 1)) * 4096; /* clustered hashes */
		uint64_t idx = (k - 1) / 4096, v = rand() % 3 ? (uint64_t)(rand() % 5) : 0;

		n += (model[idx] == 0 && v != 0);
		n -= (model[idx] != 0 && v == 0);
		model[idx] = v;
		assert_int_equal(inomap_set(&m, k, v), 0);
		assert_int_equal(inomap_get(&m, k), v);
		if (s % 997 == 0)
			for (uint64_t i = 0; i < KEYS - 1; i++)
				assert_int_equal(inomap_get(&m, 1 + i * 4096), model[i]);
		assert_int_equal(inomap_size(&m), n);
	}
	inomap_release(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_basic),
	    cmocka_unit_test(test_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
