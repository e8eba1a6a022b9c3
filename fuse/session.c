#include "fuse/session.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

/* The heartbeat interval: a quarter of the timeout, so three beats may be lost (a slow
 * database, a busy host) before other mounts see the session as dead. */
static int beat_interval_ms(int timeout_ms)
{
	int ms = timeout_ms / 4;

	return ms < 100 ? 100 : ms;
}

static void *session_loop(void *arg)
{
	struct mount_session *s = arg;
	uint64_t last_ok = monotonic_ns();
	bool failing = false;

	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		struct timespec ts;
		uint64_t at;
		int rc;

		clock_gettime(CLOCK_REALTIME, &ts);
		at = (uint64_t)ts.tv_nsec + (uint64_t)beat_interval_ms(s->timeout_ms) * 1000000u;
		ts.tv_sec += (time_t)(at / 1000000000u);
		ts.tv_nsec = (long)(at % 1000000000u);
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
		if (s->stopping)
			break;
		pthread_mutex_unlock(&s->lock);
		rc = meta_session_beat(s->meta);
		if (rc == -ESTALE) {
			uint64_t old = s->info.id;

			rc = meta_session_register(s->meta, &s->info);
			if (rc == 0)
				log_error(
				    "mount: session %llu was cleaned up by another mount (this "
				    "one was cut off from the metadata for longer than "
				    "-sessionTimeout); registered again as session %llu. Files "
				    "opened before fail with EIO",
				    (unsigned long long)old, (unsigned long long)s->info.id);
		}
		if (rc == 0) {
			if (failing)
				log_info("mount: session %llu renewed again",
					 (unsigned long long)meta_session_id(s->meta));
			failing = false;
			last_ok = monotonic_ns();
			if (meta_shared(s->meta))
				meta_session_sweep(s->meta, s->timeout_ms);
		} else if (!failing) {
			failing = true;
			log_warn("mount: cannot renew session %llu (%s); other mounts clean it up "
				 "%d s after the last renewal",
				 (unsigned long long)meta_session_id(s->meta), strerror(-rc),
				 s->timeout_ms / 1000);
		} else if (monotonic_ns() - last_ok > (uint64_t)s->timeout_ms * 1000000u) {
			log_debug("mount: session not renewed for more than -sessionTimeout");
		}
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int mount_session_start(struct mount_session *s, struct meta *m, const char *mountpoint,
			int timeout_ms)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->meta = m;
	s->timeout_ms = timeout_ms;
	gethostname(s->info.host, sizeof(s->info.host) - 1);
	s->info.pid = (uint32_t)getpid();
	snprintf(s->info.mountpoint, sizeof(s->info.mountpoint), "%s", mountpoint);
	snprintf(s->info.version, sizeof(s->info.version), "%s", KELP_VERSION);
	rc = meta_session_register(m, &s->info);
	if (rc < 0) {
		log_error("mount: cannot register the session: %s", strerror(-rc));
		return rc;
	}
	log_info("mount: session %llu registered (heartbeat every %d ms, timeout %d ms)",
		 (unsigned long long)s->info.id, beat_interval_ms(timeout_ms), timeout_ms);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	if (pthread_create(&s->thread, NULL, session_loop, s) != 0) {
		meta_session_end(m);
		return -EAGAIN;
	}
	s->started = true;
	return 0;
}

void mount_session_stop(struct mount_session *s)
{
	if (!s->started)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	s->started = false;
	meta_session_end(s->meta);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}
