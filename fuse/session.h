/*
 * session: this mount's session in the metadata (fuse/meta.h, "Sessions"): registered
 * at start, its heartbeat renewed every -sessionTimeout / 4 by a thread of its own,
 * which also cleans up other mounts' sessions that stopped renewing (shared engines),
 * and registers again when another mount cleaned this one up (it was cut off longer
 * than the timeout: files opened before then fail with EIO, fuse/file.c).
 */
#ifndef KELP_SESSION_H
#define KELP_SESSION_H

#include <pthread.h>
#include <stdbool.h>

#include "fuse/meta.h"

#define SESSION_TIMEOUT_DEFAULT_S 60

struct mount_session {
	struct meta *meta;
	struct meta_session_info info;
	int timeout_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping, started;
};

/* Registers the session (host, pid, mount point, version) and starts its thread. */
int mount_session_start(struct mount_session *s, struct meta *m, const char *mountpoint,
			int timeout_ms);
/* Stops the thread and ends the session (its holds and locks go). */
void mount_session_stop(struct mount_session *s);

#endif
