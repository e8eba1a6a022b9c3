/*
 * health: is the cluster reachable? The mount's answer for calls that only need
 * LMDB (stat, ls, rename, ...): when no master has answered for -timeout, they fail
 * with EIO like the calls that need data, instead of showing a namespace whose data
 * cannot be read. A master that answers (leader or not) is enough; volume servers
 * are checked by the data calls themselves.
 *
 * A prober thread calls probe() every interval. health_check() is called at the top
 * of every FUSE operation, so its common case is one clock read and two atomic loads,
 * no lock (the prober stores them atomically):
 *
 *   - the last probe succeeded and is recent            -> 0 at once
 *   - no probe succeeded for timeout, the last one failed -> -EIO at once
 *   - the last probe failed, timeout not reached yet     -> waits for the next probes,
 *     up to last success + timeout: 0 if one succeeds, else -EIO. A blip (a master
 *     restarting) costs a short wait, not an error.
 *   - the last success is older than timeout but no probe has failed (one is still
 *     running, or the thread was not scheduled)          -> waits for that probe.
 *
 * So a call fails at most timeout (+ one probe) after the last master went away, and
 * calls work again one interval after a master answers.
 */
#ifndef KELP_HEALTH_H
#define KELP_HEALTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* 0 when the cluster answered, a negative errno otherwise; bounded in time. */
typedef int (*health_probe_fn)(void *ctx);

struct cluster_health {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a probe finished, or stopping */
	pthread_t thread;
	bool started, stopping;
	bool failing;	     /* the last probe failed */
	uint64_t last_ok_ns; /* end of the last successful probe (the start time at first) */
	uint64_t timeout_ns, interval_ns;
	health_probe_fn probe;
	void *probe_ctx;
};

/* What health_check does for a given state (pure; exposed for the unit tests). */
enum health_verdict { HEALTH_UP, HEALTH_DOWN, HEALTH_WAIT };
enum health_verdict health_verdict(bool failing, uint64_t last_ok_ns, uint64_t now_ns,
				   uint64_t timeout_ns);

/* Starts the prober thread. 0 or a negative errno. */
int health_start(struct cluster_health *h, uint64_t timeout_ns, uint64_t interval_ns,
		 health_probe_fn probe, void *ctx);
/* Stops and joins the prober; call it once no health_check can run any more (the
 * FUSE session is over). Safe on a never-started h. */
void health_stop(struct cluster_health *h);
/* 0 when the cluster is reachable, -EIO when it has not been for timeout. */
int health_check(struct cluster_health *h);

#endif
