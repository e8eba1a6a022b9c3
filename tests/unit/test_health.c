/* Unit tests of fuse/health: the verdict table, and the prober with a fake probe
 * (short intervals: every wait below is bounded by a few hundred milliseconds). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "cluster/base/util.h"
#include "fuse/health.h"

#define MS 1000000ull

static void test_verdict(void **state)
{
	(void)state;
	/* recent success */
	assert_int_equal(health_verdict(false, 1000 * MS, 1100 * MS, 500 * MS), HEALTH_UP);
	/* a failed probe within the timeout: wait */
	assert_int_equal(health_verdict(true, 1000 * MS, 1100 * MS, 500 * MS), HEALTH_WAIT);
	/* failed and the timeout ran out */
	assert_int_equal(health_verdict(true, 1000 * MS, 1500 * MS, 500 * MS), HEALTH_DOWN);
	assert_int_equal(health_verdict(true, 1000 * MS, 9000 * MS, 500 * MS), HEALTH_DOWN);
	/* no failure seen but the last success is old (a probe under way): wait */
	assert_int_equal(health_verdict(false, 1000 * MS, 1600 * MS, 500 * MS), HEALTH_WAIT);
	/* a success stamped after "now" was read is not stale */
	assert_int_equal(health_verdict(false, 2000 * MS, 1000 * MS, 500 * MS), HEALTH_UP);
	assert_int_equal(health_verdict(true, 2000 * MS, 1000 * MS, 500 * MS), HEALTH_WAIT);
}

static int probe_result; /* what the fake probe answers */

static int fake_probe(void *ctx)
{
	(void)ctx;
	return __atomic_load_n(&probe_result, __ATOMIC_SEQ_CST);
}

static void set_probe(int rc)
{
	__atomic_store_n(&probe_result, rc, __ATOMIC_SEQ_CST);
}

static void test_not_started_is_up(void **state)
{
	struct cluster_health h = {0};

	(void)state;
	assert_int_equal(health_check(&h), 0);
	health_stop(&h);
}

static void test_down_within_timeout_then_up(void **state)
{
	struct cluster_health h;
	uint64_t t0, waited;
	int rc = -1;

	(void)state;
	set_probe(0);
	assert_int_equal(health_start(&h, 300 * MS, 10 * MS, fake_probe, NULL), 0);
	assert_int_equal(health_check(&h), 0);

	/* the cluster goes away: a call fails with EIO at most timeout (+ a probe) later */
	set_probe(-ECONNREFUSED);
	t0 = monotonic_ns();
	while (monotonic_ns() - t0 < 2000 * MS && (rc = health_check(&h)) == 0)
		;
	waited = monotonic_ns() - t0;
	assert_int_equal(rc, -EIO);
	assert_true(waited >= 250 * MS); /* calls waited, they did not fail at once */
	assert_true(waited < 1000 * MS);

	/* down: fails at once */
	t0 = monotonic_ns();
	assert_int_equal(health_check(&h), -EIO);
	assert_true(monotonic_ns() - t0 < 100 * MS);

	/* back: works again within a few probes */
	set_probe(0);
	t0 = monotonic_ns();
	while (monotonic_ns() - t0 < 2000 * MS && (rc = health_check(&h)) != 0)
		;
	assert_int_equal(rc, 0);
	health_stop(&h);
}

static void test_blip_waits_and_succeeds(void **state)
{
	struct cluster_health h;
	uint64_t t0;

	(void)state;
	set_probe(0);
	assert_int_equal(health_start(&h, 2000 * MS, 10 * MS, fake_probe, NULL), 0);
	set_probe(-ETIMEDOUT);
	/* wait for a failed probe to be recorded */
	t0 = monotonic_ns();
	for (;;) {
		bool failing;

		pthread_mutex_lock(&h.lock);
		failing = h.failing;
		pthread_mutex_unlock(&h.lock);
		if (failing || monotonic_ns() - t0 > 1000 * MS)
			break;
	}
	assert_true(h.failing);
	set_probe(0); /* the master is back before the timeout */
	assert_int_equal(health_check(&h), 0);
	assert_true(monotonic_ns() - t0 < 1500 * MS);
	health_stop(&h);
}

static void test_stop_then_check(void **state)
{
	struct cluster_health h;

	(void)state;
	set_probe(-EIO);
	assert_int_equal(health_start(&h, 60000 * MS, 10 * MS, fake_probe, NULL), 0);
	health_stop(&h);
	assert_int_equal(health_check(&h), 0); /* stopped = not started: never blocks */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_verdict),
	    cmocka_unit_test(test_not_started_is_up),
	    cmocka_unit_test(test_down_within_timeout_then_up),
	    cmocka_unit_test(test_blip_waits_and_succeeds),
	    cmocka_unit_test(test_stop_then_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
