#include "cluster/master/repair.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/master/growth.h"
#include "cluster/net/auth.h"
#include "cluster/net/http_client.h"

#define SEC	       1000000000ull
#define RETRY_NS       (5 * SEC)  /* a failed copy is tried again after this */
#define EXTRA_GRACE_NS (10 * SEC) /* extra copies are removed after this */
#define LOST_TARGET_NS (30 * SEC) /* a target not answering for this: copy failed */
#define LOCK_LEASE_NS  (30 * SEC)
#define KEEP_FINISHED  32
#define MAX_TRACKED    4096

enum job_state { JOB_RUNNING, JOB_DONE, JOB_FAILED };
static const char *const job_names[] = {"running", "done", "failed"};

struct job {
	uint32_t vid;
	char collection[128];
	uint8_t rp;
	struct ttl ttl;
	char source[128], target[128];
	enum job_state state;
	uint64_t bytes, total;
	uint64_t started, ended, last_answer; /* monotonic */
	char error[400];
};

struct tracked {
	uint32_t vid;
	int copies, want;
	uint64_t under_since, over_since, next_try; /* monotonic; 0 = not */
	bool seen;
	bool force; /* repair_now: no delay */
	char last_error[600];
};

struct removal {
	uint32_t vid;
	char server[128];
	uint64_t at; /* realtime */
};

struct repair {
	struct repair_env env;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cond;
	bool stopping;
	struct job *jobs;
	size_t n_jobs, cap_jobs;
	struct tracked *tracked;
	size_t n_tracked;
	struct removal removals[16];
	int n_removals;
	uint64_t last_check;  /* monotonic: last check.disk pass */
	uint64_t check_fixes; /* needles copied by the periodic check.disk */
	uint64_t check_passes;
	unsigned rand_state;
	/* the operators' lock */
	char lock_token[40];
	char lock_owner[128];
	uint64_t lock_expires; /* monotonic */
};

/* ---------------------------------------------------------------- calls */

static int call(struct repair *r, const char *method, const char *server, const char *pq,
		long timeout_ms, struct http_client_response *rs)
{
	char url[1200], auth[AUTH_HEADER_LEN];
	const char *headers[2] = {NULL, NULL};
	struct http_client_request rq = {.method = method,
					 .url = url,
					 .headers = headers,
					 .body_fd = -1,
					 .timeout_ms = timeout_ms};

	if (r->env.jwt_key && *r->env.jwt_key) {
		if (auth_server_header(r->env.jwt_key, method, pq, NULL, 0, auth) < 0) {
			memset(rs, 0, sizeof(*rs));
			snprintf(rs->error, sizeof(rs->error), "cannot sign the request");
			return -EIO;
		}
		headers[0] = auth;
	}
	snprintf(url, sizeof(url), "%s://%s%s", http_scheme(), server, pq);
	return http_client_do(&rq, rs);
}

/* ---------------------------------------------------------------- state helpers */

static struct tracked *track(struct repair *r, uint32_t vid)
{
	for (size_t i = 0; i < r->n_tracked; i++)
		if (r->tracked[i].vid == vid)
			return &r->tracked[i];
	if (r->n_tracked >= MAX_TRACKED)
		return NULL;
	r->tracked[r->n_tracked] = (struct tracked){.vid = vid};
	return &r->tracked[r->n_tracked++];
}

static struct job *running_job(struct repair *r, uint32_t vid)
{
	for (size_t i = 0; i < r->n_jobs; i++)
		if (r->jobs[i].vid == vid && r->jobs[i].state == JOB_RUNNING)
			return &r->jobs[i];
	return NULL;
}

static int busy_on(struct repair *r, const char *server)
{
	int n = 0;

	for (size_t i = 0; i < r->n_jobs; i++)
		if (r->jobs[i].state == JOB_RUNNING &&
		    (!strcmp(r->jobs[i].source, server) || !strcmp(r->jobs[i].target, server)))
			n++;
	return n;
}

/* Drops the oldest finished jobs beyond KEEP_FINISHED. Caller holds lock. */
static void trim_jobs(struct repair *r)
{
	size_t finished = 0;

	for (size_t i = r->n_jobs; i-- > 0;) {
		if (r->jobs[i].state == JOB_RUNNING)
			continue;
		if (++finished > KEEP_FINISHED) {
			memmove(&r->jobs[i], &r->jobs[i + 1],
				(r->n_jobs - i - 1) * sizeof(r->jobs[0]));
			r->n_jobs--;
		}
	}
}

static struct job *add_job(struct repair *r)
{
	if (r->n_jobs == r->cap_jobs) {
		size_t cap = r->cap_jobs ? r->cap_jobs * 2 : 16;
		struct job *p = realloc(r->jobs, cap * sizeof(*p));

		if (!p)
			return NULL;
		r->jobs = p;
		r->cap_jobs = cap;
	}
	memset(&r->jobs[r->n_jobs], 0, sizeof(r->jobs[0]));
	return &r->jobs[r->n_jobs++];
}

static bool lock_held(struct repair *r, uint64_t now)
{
	return r->lock_token[0] && r->lock_expires > now;
}

/* ---------------------------------------------------------------- one pass */

/* Starts a copy of v to a server the placement allows. Caller holds lock (released
 * around the HTTP call). */
static void start_copy(struct repair *r, const struct topo_volume_view *v, struct tracked *t,
		       uint64_t now)
{
	struct topo_node_view *nodes;
	struct placement_place have[TOPO_MAX_LOCATIONS];
	char reason[300] = "", pq[400], source[128] = "";
	struct http_client_response rs;
	int n, target, ret;
	struct job *j;

	n = topology_nodes(r->env.topo, now_ns(), &nodes);
	if (n < 0)
		return;
	for (int i = 0; i < v->n_locations; i++) {
		have[i].url = v->locations[i].url;
		have[i].data_center = v->locations[i].data_center;
		have[i].rack = v->locations[i].rack;
		/* the least busy live replica is the source */
		if (busy_on(r, v->locations[i].url) < r->env.concurrency &&
		    (!source[0] || busy_on(r, v->locations[i].url) < busy_on(r, source)))
			snprintf(source, sizeof(source), "%s", v->locations[i].url);
	}
	if (!source[0]) {
		free(nodes);
		return; /* every replica is busy copying: next pass */
	}
	/* servers at their copy limit take no new copy now */
	for (int i = 0; i < n; i++)
		if (busy_on(r, nodes[i].url) >= r->env.concurrency)
			nodes[i].free_slots = 0;
	target = growth_pick_repair(nodes, n, v->replica_placement, have, v->n_locations,
				    &r->rand_state, reason, sizeof(reason));
	if (target < 0) {
		snprintf(t->last_error, sizeof(t->last_error), "%s", reason);
		t->next_try = now + RETRY_NS;
		free(nodes);
		return;
	}
	j = add_job(r);
	if (!j) {
		free(nodes);
		return;
	}
	j->vid = v->id;
	snprintf(j->collection, sizeof(j->collection), "%s", v->collection);
	j->rp = v->replica_placement;
	j->ttl = v->ttl;
	snprintf(j->source, sizeof(j->source), "%s", source);
	snprintf(j->target, sizeof(j->target), "%s", nodes[target].url);
	j->state = JOB_RUNNING;
	j->started = j->last_answer = now;
	j->total = v->size;
	free(nodes);
	snprintf(pq, sizeof(pq), "/admin/volume/copy?volume=%u&source=%s&mbps=%g", v->id, source,
		 r->env.mbps);
	{
		char target_url[128];
		uint32_t vid = v->id;

		snprintf(target_url, sizeof(target_url), "%s", j->target);
		pthread_mutex_unlock(&r->lock);
		ret = call(r, "POST", target_url, pq, 10000, &rs);
		pthread_mutex_lock(&r->lock);
		j = running_job(r, vid);
		if (!j)
			goto out;
		if (ret < 0 || rs.status != 202) {
			j->state = JOB_FAILED;
			j->ended = monotonic_ns();
			snprintf(j->error, sizeof(j->error), "%s: %ld %.200s", target_url,
				 rs.status, ret < 0 ? rs.error : rs.body);
			t = track(r, vid);
			if (t) {
				snprintf(t->last_error, sizeof(t->last_error), "%s", j->error);
				t->next_try = now + RETRY_NS;
			}
			log_warn("repair: cannot start the copy of volume %u to %s: %s", vid,
				 target_url, j->error);
		} else {
			log_info("repair: copying volume %u from %s to %s", vid, j->source,
				 target_url);
		}
	}
out:
	http_client_response_release(&rs);
}

/* True when url is a live volume server (heard from within 3 pulses). */
static bool node_live(struct repair *r, const char *url)
{
	struct topo_node_view *nodes;
	int n = topology_nodes(r->env.topo, now_ns(), &nodes);
	bool live = false;

	for (int i = 0; i < n && !live; i++)
		live = !strcmp(nodes[i].url, url);
	if (n >= 0)
		free(nodes);
	return live;
}

/* Asks every target with running copies how they are doing. Caller holds lock. */
static void poll_jobs(struct repair *r, uint64_t now)
{
	char targets[64][128];
	int n_targets = 0;

	for (size_t i = 0; i < r->n_jobs && n_targets < 64; i++) {
		bool seen = false;

		if (r->jobs[i].state != JOB_RUNNING)
			continue;
		for (int k = 0; k < n_targets && !seen; k++)
			seen = !strcmp(targets[k], r->jobs[i].target);
		if (!seen)
			snprintf(targets[n_targets++], sizeof(targets[0]), "%s", r->jobs[i].target);
	}
	for (int k = 0; k < n_targets; k++) {
		struct http_client_response rs;
		json_t *js = NULL, *copies, *c;
		size_t idx;
		int ret;

		pthread_mutex_unlock(&r->lock);
		ret = call(r, "GET", targets[k], "/admin/volume/copy/status", 5000, &rs);
		if (ret == 0 && rs.status == 200)
			js = json_loads(rs.body, 0, NULL);
		http_client_response_release(&rs);
		pthread_mutex_lock(&r->lock);
		copies = json_object_get(js, "Copies");
		for (size_t i = 0; i < r->n_jobs; i++) {
			struct job *j = &r->jobs[i];
			bool found = false;

			if (j->state != JOB_RUNNING || strcmp(j->target, targets[k]))
				continue;
			json_array_foreach(copies, idx, c)
			{
				const char *st = json_string_value(json_object_get(c, "state"));
				const char *src = json_string_value(json_object_get(c, "source"));

				if ((uint32_t)json_integer_value(json_object_get(c, "volume")) !=
					j->vid ||
				    !src || strcmp(src, j->source) || !st)
					continue;
				found = true;
				j->last_answer = now;
				j->bytes =
				    (uint64_t)json_integer_value(json_object_get(c, "bytes"));
				j->total =
				    (uint64_t)json_integer_value(json_object_get(c, "total"));
				if (!strcmp(st, "done")) {
					j->state = JOB_DONE;
					j->ended = now;
					topology_add_volume(r->env.topo, j->target, j->vid,
							    j->collection, j->rp, j->ttl, now_ns());
					log_info("repair: volume %u copied to %s (%" PRIu64
						 " bytes in %.1f s)",
						 j->vid, j->target, j->bytes,
						 (double)(now - j->started) / 1e9);
				} else if (strcmp(st, "running") && strcmp(st, "caught_up")) {
					struct tracked *t = track(r, j->vid);

					j->state = JOB_FAILED;
					j->ended = now;
					snprintf(j->error, sizeof(j->error), "%s",
						 json_string_value(json_object_get(c, "error"))
						     ?: st);
					if (t) {
						snprintf(t->last_error, sizeof(t->last_error),
							 "copy to %s failed: %s", j->target,
							 j->error);
						t->next_try = now + RETRY_NS;
					}
					log_warn("repair: copy of volume %u to %s failed: %s",
						 j->vid, j->target, j->error);
				}
				break;
			}
			if (!found && (now - j->last_answer > LOST_TARGET_NS ||
				       (!js && !node_live(r, j->target)))) {
				struct tracked *t = track(r, j->vid);

				j->state = JOB_FAILED;
				j->ended = now;
				snprintf(j->error, sizeof(j->error),
					 "the target %s stopped answering about the copy",
					 j->target);
				if (t)
					t->next_try = now + RETRY_NS;
				log_warn("repair: copy of volume %u: %s", j->vid, j->error);
			}
		}
		json_decref(js);
	}
}

/* Deletes the stalest copy of a volume with too many. Caller holds lock. */
static void remove_extra(struct repair *r, const struct topo_volume_view *v)
{
	int victim = -1;
	struct placement_place rest[TOPO_MAX_LOCATIONS];
	char pq[100], server[128];
	struct http_client_response rs;
	int ret;

	for (int i = 0; i < v->n_locations; i++) {
		const struct topo_location *l = &v->locations[i];
		int m = 0;

		for (int k = 0; k < v->n_locations; k++) {
			if (k == i)
				continue;
			rest[m].url = v->locations[k].url;
			rest[m].data_center = v->locations[k].data_center;
			rest[m++].rack = v->locations[k].rack;
		}
		/* the copies that stay must still fit the placement */
		if (!placement_fits(v->replica_placement, rest, m))
			continue;
		if (victim < 0)
			victim = i;
		else {
			const struct topo_location *b = &v->locations[victim];

			if (l->compact_revision < b->compact_revision ||
			    (l->compact_revision == b->compact_revision &&
			     (l->size < b->size ||
			      (l->size == b->size && l->read_only && !b->read_only))))
				victim = i;
		}
	}
	if (victim < 0)
		return;
	snprintf(server, sizeof(server), "%s", v->locations[victim].url);
	snprintf(pq, sizeof(pq), "/admin/delete_volume?volume=%u", v->id);
	pthread_mutex_unlock(&r->lock);
	ret = call(r, "POST", server, pq, 10000, &rs);
	http_client_response_release(&rs);
	pthread_mutex_lock(&r->lock);
	if (ret == 0 && (rs.status == 200 || rs.status == 404)) {
		log_info(
		    "repair: volume %u had %d copies for %d wanted: removed the stalest, on %s",
		    v->id, v->n_locations, placement_copies(v->replica_placement), server);
		if (r->n_removals == (int)(sizeof(r->removals) / sizeof(r->removals[0]))) {
			memmove(&r->removals[0], &r->removals[1],
				sizeof(r->removals) - sizeof(r->removals[0]));
			r->n_removals--;
		}
		r->removals[r->n_removals].vid = v->id;
		snprintf(r->removals[r->n_removals].server, sizeof(r->removals[0].server), "%s",
			 server);
		r->removals[r->n_removals++].at = now_ns();
	} else {
		log_warn("repair: cannot remove the extra copy of volume %u on %s", v->id, server);
	}
}

/* One check.disk pass over every volume with several copies. Caller holds lock. */
static void check_disks(struct repair *r)
{
	struct topo_volume_view *views;
	int n = topology_volumes(r->env.topo, now_ns(), &views);

	pthread_mutex_unlock(&r->lock);
	for (int i = 0; i < n; i++) {
		const struct topo_volume_view *v = &views[i];

		if (v->n_locations < 2 || v->n_locations > placement_copies(v->replica_placement))
			continue;
		/* pairs with the first copy, twice when there are more than two */
		for (int pass = 0; pass < (v->n_locations > 2 ? 2 : 1); pass++) {
			for (int k = 1; k < v->n_locations; k++) {
				char pq[300];
				struct http_client_response rs;
				json_t *js;

				snprintf(pq, sizeof(pq),
					 "/admin/volume/check_disk?volume=%u&peer=%s", v->id,
					 v->locations[k].url);
				if (call(r, "POST", v->locations[0].url, pq, 600000, &rs) == 0 &&
				    rs.status == 200 && (js = json_loads(rs.body, 0, NULL))) {
					uint64_t fixed =
					    (uint64_t)json_integer_value(
						json_object_get(js, "copiedToPeer")) +
					    (uint64_t)json_integer_value(
						json_object_get(js, "copiedFromPeer")) +
					    (uint64_t)json_integer_value(
						json_object_get(js, "deletedOnPeer")) +
					    (uint64_t)json_integer_value(
						json_object_get(js, "deletedHere"));

					if (fixed)
						log_info("repair: check.disk of volume %u between "
							 "%s and %s fixed %" PRIu64 " needle(s)",
							 v->id, v->locations[0].url,
							 v->locations[k].url, fixed);
					pthread_mutex_lock(&r->lock);
					r->check_fixes += fixed;
					pthread_mutex_unlock(&r->lock);
					json_decref(js);
				}
				http_client_response_release(&rs);
			}
		}
	}
	if (n > 0)
		free(views);
	pthread_mutex_lock(&r->lock);
	r->check_passes++;
}

static void pass(struct repair *r)
{
	uint64_t now = monotonic_ns();
	struct topo_volume_view *views;
	int n;

	poll_jobs(r, now);
	n = topology_volumes(r->env.topo, now_ns(), &views);
	if (n < 0)
		return;
	for (size_t i = 0; i < r->n_tracked; i++)
		r->tracked[i].seen = false;
	for (int i = 0; i < n; i++) {
		const struct topo_volume_view *v = &views[i];
		int want = placement_copies(v->replica_placement);
		struct tracked *t = track(r, v->id);

		if (!t)
			continue;
		t->seen = true;
		t->copies = v->n_locations;
		t->want = want;
		if (v->n_locations < want) {
			t->over_since = 0;
			if (!t->under_since)
				t->under_since = now;
			if (running_job(r, v->id) || now < t->next_try)
				continue;
			if (!t->force &&
			    (r->env.delay_seconds < 0 ||
			     now - t->under_since < (uint64_t)r->env.delay_seconds * SEC))
				continue;
			start_copy(r, v, t, now);
		} else {
			t->under_since = 0;
			t->force = false;
			t->last_error[0] = '\0';
			if (v->n_locations > want && !running_job(r, v->id)) {
				if (!t->over_since)
					t->over_since = now;
				if (now - t->over_since >= EXTRA_GRACE_NS && !lock_held(r, now)) {
					remove_extra(r, v);
					t->over_since = 0;
				}
			} else {
				t->over_since = 0;
			}
		}
	}
	if (n > 0)
		free(views);
	/* forget volumes no longer there (deleted, or their last copy gone) */
	for (size_t i = 0; i < r->n_tracked;) {
		if (!r->tracked[i].seen && !running_job(r, r->tracked[i].vid))
			r->tracked[i] = r->tracked[--r->n_tracked];
		else
			i++;
	}
	trim_jobs(r);
	if (r->env.check_interval_seconds > 0 &&
	    now - r->last_check >= (uint64_t)r->env.check_interval_seconds * SEC) {
		r->last_check = now;
		check_disks(r);
	}
}

static void *repair_thread(void *arg)
{
	struct repair *r = arg;
	bool was_leader = false;

	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct timespec ts;
		bool leader;

		pthread_mutex_unlock(&r->lock);
		leader = r->env.is_leader(r->env.ctx);
		pthread_mutex_lock(&r->lock);
		if (leader && !was_leader) {
			/* a new leader starts its clocks now: a volume counts as
			 * under-replicated from the moment this master saw it so */
			r->n_tracked = 0;
			r->last_check = monotonic_ns();
		}
		was_leader = leader;
		if (leader)
			pass(r);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		if (!r->stopping)
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* ---------------------------------------------------------------- API */

int repair_start(const struct repair_env *env, struct repair **out)
{
	struct repair *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->env = *env;
	if (r->env.concurrency < 1)
		r->env.concurrency = 1;
	r->tracked = calloc(MAX_TRACKED, sizeof(*r->tracked));
	if (!r->tracked) {
		free(r);
		return -ENOMEM;
	}
	r->rand_state = (unsigned)now_ns();
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	if (pthread_create(&r->thread, NULL, repair_thread, r) != 0) {
		free(r->tracked);
		free(r);
		return -EAGAIN;
	}
	r->started = true;
	*out = r;
	return 0;
}

void repair_stop(struct repair *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->started)
		pthread_join(r->thread, NULL);
	free(r->jobs);
	free(r->tracked);
	free(r);
}

json_t *repair_status_json(struct repair *r)
{
	json_t *under = json_array(), *copies = json_array(), *removed = json_array(), *j;
	uint64_t now = monotonic_ns();

	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->n_tracked; i++) {
		const struct tracked *t = &r->tracked[i];
		double waited, left;

		if (!t->under_since)
			continue;
		waited = (double)(now - t->under_since) / 1e9;
		left = r->env.delay_seconds < 0 ? -1 : r->env.delay_seconds - waited;
		json_array_append_new(
		    under, json_pack("{s:I,s:i,s:i,s:f,s:f,s:b,s:s}", "volume", (json_int_t)t->vid,
				     "copies", t->copies, "want", t->want, "seconds", waited,
				     "startsInSeconds", left > 0 ? left : 0.0, "copying",
				     running_job(r, t->vid) != NULL, "lastError", t->last_error));
	}
	for (size_t i = 0; i < r->n_jobs; i++) {
		const struct job *jb = &r->jobs[i];
		uint64_t end = jb->ended ? jb->ended : now;

		json_array_append_new(
		    copies,
		    json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:f,s:s}", "volume", (json_int_t)jb->vid,
			      "source", jb->source, "target", jb->target, "state",
			      job_names[jb->state], "bytes", (json_int_t)jb->bytes, "total",
			      (json_int_t)jb->total, "seconds", (double)(end - jb->started) / 1e9,
			      "error", jb->error));
	}
	for (int i = 0; i < r->n_removals; i++)
		json_array_append_new(removed, json_pack("{s:I,s:s,s:I}", "volume",
							 (json_int_t)r->removals[i].vid, "server",
							 r->removals[i].server, "atSecond",
							 (json_int_t)(r->removals[i].at / SEC)));
	j = json_pack("{s:i,s:i,s:f,s:i,s:o,s:o,s:o,s:I,s:I,s:s}", "DelaySeconds",
		      r->env.delay_seconds, "Concurrency", r->env.concurrency, "MBps", r->env.mbps,
		      "CheckDiskIntervalSeconds", r->env.check_interval_seconds, "UnderReplicated",
		      under, "Copies", copies, "RemovedExtraCopies", removed, "CheckDiskPasses",
		      (json_int_t)r->check_passes, "CheckDiskFixes", (json_int_t)r->check_fixes,
		      "LockedBy", lock_held(r, now) ? r->lock_owner : "");
	pthread_mutex_unlock(&r->lock);
	return j;
}

int repair_lock(struct repair *r, const char *owner, const char *token, char *out_token, size_t cap,
		char *holder, size_t holder_cap)
{
	uint64_t now = monotonic_ns();
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	if (lock_held(r, now) && (!token || strcmp(token, r->lock_token))) {
		snprintf(holder, holder_cap, "%s", r->lock_owner);
		ret = -EBUSY;
	} else {
		if (!lock_held(r, now) || !token || strcmp(token, r->lock_token)) {
			uint8_t rnd[16];

			if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
				memset(rnd, 0x5a, sizeof(rnd));
			for (int i = 0; i < 16; i++)
				snprintf(r->lock_token + 2 * i, 3, "%02x", rnd[i]);
		}
		snprintf(r->lock_owner, sizeof(r->lock_owner), "%s", owner && *owner ? owner : "?");
		r->lock_expires = now + LOCK_LEASE_NS;
		snprintf(out_token, cap, "%s", r->lock_token);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repair_unlock(struct repair *r, const char *token)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&r->lock);
	if (token && r->lock_token[0] && !strcmp(token, r->lock_token)) {
		r->lock_token[0] = '\0';
		r->lock_owner[0] = '\0';
		r->lock_expires = 0;
		ret = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repair_now(struct repair *r, uint32_t vid)
{
	struct topo_volume_view v;
	struct tracked *t;
	int ret = 0;

	if (!topology_lookup(r->env.topo, vid, now_ns(), &v))
		return -ENOENT;
	pthread_mutex_lock(&r->lock);
	t = track(r, vid);
	if (!t) {
		ret = -ENOMEM;
	} else {
		t->force = true;
		t->next_try = 0;
		if (!t->under_since)
			t->under_since = monotonic_ns();
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return ret;
}

json_t *repair_plan_json(struct repair *r)
{
	struct topo_volume_view *views;
	struct topo_node_view *nodes;
	json_t *add = json_array(), *trim = json_array();
	int n = topology_volumes(r->env.topo, now_ns(), &views);
	int nn = topology_nodes(r->env.topo, now_ns(), &nodes);

	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < n && nn >= 0; i++) {
		const struct topo_volume_view *v = &views[i];
		int want = placement_copies(v->replica_placement);
		struct placement_place have[TOPO_MAX_LOCATIONS];
		char repl[4], reason[300] = "";
		int target;

		placement_format(v->replica_placement, repl);
		for (int k = 0; k < v->n_locations; k++) {
			have[k].url = v->locations[k].url;
			have[k].data_center = v->locations[k].data_center;
			have[k].rack = v->locations[k].rack;
		}
		if (v->n_locations < want) {
			target = growth_pick_repair(nodes, nn, v->replica_placement, have,
						    v->n_locations, &r->rand_state, reason,
						    sizeof(reason));
			json_array_append_new(
			    add, json_pack("{s:I,s:s,s:s,s:i,s:i,s:s,s:s,s:b,s:s}", "volume",
					   (json_int_t)v->id, "collection", v->collection,
					   "replication", repl, "copies", v->n_locations, "want",
					   want, "source", v->locations[0].url, "target",
					   target >= 0 ? nodes[target].url : "", "copying",
					   running_job(r, v->id) != NULL, "error", reason));
		} else if (v->n_locations > want) {
			json_array_append_new(trim,
					      json_pack("{s:I,s:s,s:i,s:i}", "volume",
							(json_int_t)v->id, "replication", repl,
							"copies", v->n_locations, "want", want));
		}
	}
	pthread_mutex_unlock(&r->lock);
	if (n > 0)
		free(views);
	if (nn >= 0)
		free(nodes);
	return json_pack("{s:o,s:o}", "UnderReplicated", add, "OverReplicated", trim);
}
