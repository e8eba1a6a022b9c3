/*
 * repair: the leader master keeps every volume at its placement's copy count.
 *
 * Once a second (on the leader only) it compares each volume's live copies with its
 * placement:
 *  - fewer copies for longer than -repairDelaySeconds: a copy is made from a live
 *    replica to a server chosen by the placement rules (growth_pick_repair), with the
 *    volume server's /admin/volume/copy (cluster/volume_server/copy.h). At most
 *    -repairConcurrency copies run at once per server (as source or target), each
 *    limited to -repairMBps; copies of different volumes run side by side. A failed
 *    copy is tried again 5 s later (another target may be chosen).
 *  - more copies than the placement for 10 s (a server came back after its volumes
 *    were copied elsewhere), and no operator holds the lock: the stalest copy (lowest
 *    compaction revision, then smallest) is deleted, keeping the freshest. Until then
 *    lookups already leave it out (topology_lookup).
 *  - every -checkDiskIntervalSeconds: the replicas of each volume compare their needle
 *    sets and copy what the other misses (volume.check.disk).
 *
 * It also holds the operators' lock (`kelp shell` lock/unlock): a lease of 30 s that
 * its holder renews; one holder at a time.
 *
 * Threads: one repair thread; `lock` guards the state that status and the lock routes
 * read.
 */
#ifndef KELP_REPAIR_H
#define KELP_REPAIR_H

#include <jansson.h>
#include <stdbool.h>

#include "cluster/master/topology.h"

struct repair;

struct repair_env {
	struct topology *topo;
	const char *jwt_key; /* "" or NULL: no server tokens */
	bool (*is_leader)(void *ctx);
	void *ctx;
	int delay_seconds;	    /* -repairDelaySeconds; < 0: never repair */
	int concurrency;	    /* -repairConcurrency per server (>= 1) */
	double mbps;		    /* -repairMBps per copy; 0 = unlimited */
	int check_interval_seconds; /* -checkDiskIntervalSeconds; 0 = never */
};

int repair_start(const struct repair_env *env, struct repair **out);
void repair_stop(struct repair *r);

/* The "Repair" object of /cluster/repair and /dir/status (new reference). */
json_t *repair_status_json(struct repair *r);

/*
 * The operators' lock. owner: who asks (shown to others). token: "" to take a free
 * lock, or the token held, to renew it. Returns 0 and a token (lease 30 s), or -EBUSY
 * with the holder's name in holder.
 */
int repair_lock(struct repair *r, const char *owner, const char *token, char *out_token, size_t cap,
		char *holder, size_t holder_cap);
/* What a pass would do now: under-replicated volumes with the source and the target
 * the placement picks, over-replicated ones (new reference). */
json_t *repair_plan_json(struct repair *r);

/* Repairs vid at the next pass, without waiting for the delay. -ENOENT unknown. */
int repair_now(struct repair *r, uint32_t vid);

/* Releases the lock held with token; -ENOENT when token does not hold it. */
int repair_unlock(struct repair *r, const char *token);

#endif
