#include "fuse/health.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

enum health_verdict health_verdict(bool failing, uint64_t last_ok_ns, uint64_t now_ns,
				   uint64_t timeout_ns)
{
	bool stale = now_ns > last_ok_ns && now_ns - last_ok_ns >= timeout_ns;

	if (!failing && !stale)
		return HEALTH_UP;
	if (failing && stale)
		return HEALTH_DOWN;
	return HEALTH_WAIT;
}

static struct timespec monotonic_ts(uint64_t ns)
{
	struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u),
			     .tv_nsec = (long)(ns % 1000000000u)};
	return t;
}

static void *prober(void *arg)
{
	struct cluster_health *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		struct timespec until;
		int rc;

		pthread_mutex_unlock(&h->lock);
		rc = h->probe(h->probe_ctx);
		pthread_mutex_lock(&h->lock);
		if (rc == 0)
			__atomic_store_n(&h->last_ok_ns, monotonic_ns(), __ATOMIC_RELEASE);
		if ((rc < 0) != h->failing) {
			if (rc < 0)
				log_warn("mount: no master answers (%s); calls fail with EIO if "
					 "none does within %" PRIu64 " s",
					 strerror(-rc), h->timeout_ns / 1000000000u);
			else
				log_info("mount: a master answers again");
		}
		__atomic_store_n(&h->failing, rc < 0, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&h->cond);
		until = monotonic_ts(monotonic_ns() + h->interval_ns);
		while (!h->stopping && pthread_cond_timedwait(&h->cond, &h->lock, &until) == 0)
			; /* woken by a broadcast of our own or by a waiter: keep the pace */
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

int health_start(struct cluster_health *h, uint64_t timeout_ns, uint64_t interval_ns,
		 health_probe_fn probe, void *ctx)
{
	pthread_condattr_t ca;
	int rc;

	memset(h, 0, sizeof(*h));
	h->timeout_ns = timeout_ns;
	h->interval_ns = interval_ns;
	h->probe = probe;
	h->probe_ctx = ctx;
	h->last_ok_ns = monotonic_ns();
	pthread_mutex_init(&h->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&h->thread, NULL, prober, h);
	if (rc != 0)
		return -rc;
	h->started = true;
	return 0;
}

void health_stop(struct cluster_health *h)
{
	if (!h->started)
		return;
	pthread_mutex_lock(&h->lock);
	h->stopping = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	h->started = false;
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
}

int health_check(struct cluster_health *h)
{
	uint64_t now = monotonic_ns(), deadline = 0;
	int rc = -EIO;

	if (!h->started)
		return 0;
	/* The common case without the mutex (the prober stores both fields atomically). */
	if (health_verdict(__atomic_load_n(&h->failing, __ATOMIC_ACQUIRE),
			   __atomic_load_n(&h->last_ok_ns, __ATOMIC_ACQUIRE), now,
			   h->timeout_ns) == HEALTH_UP)
		return 0;
	pthread_mutex_lock(&h->lock);
	for (;;) {
		struct timespec until;

		switch (health_verdict(h->failing, h->last_ok_ns, now, h->timeout_ns)) {
		case HEALTH_UP:
			rc = 0;
			goto out;
		case HEALTH_DOWN:
			goto out;
		case HEALTH_WAIT:
			break;
		}
		if (h->stopping)
			goto out;
		/* Failing: until the timeout runs out. Stale: for the probe under way,
		 * bounded by one more timeout in case the prober itself is stuck. */
		if (!deadline)
			deadline = h->failing ? h->last_ok_ns + h->timeout_ns : now + h->timeout_ns;
		if (now >= deadline)
			goto out;
		until = monotonic_ts(deadline);
		pthread_cond_timedwait(&h->cond, &h->lock, &until);
		now = monotonic_ns();
	}
out:
	pthread_mutex_unlock(&h->lock);
	return rc;
}
