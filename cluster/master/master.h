/*
 * master: the HTTP face of the topology (kelp master), SeaweedFS-compatible.
 *
 * Routes (docs/http-api.md): POST /heartbeat (protobuf Heartbeat from volume servers),
 * /dir/assign, /dir/lookup, /dir/status, /cluster/status, /cluster/healthz, /vol/grow,
 * /vol/status, /vol/vacuum, /col/delete, /submit, /healthz, /readyz, and /<fid>
 * (308 redirect to a volume server holding it).
 *
 * Volume growth creates volumes on volume servers with /admin/assign_volume (see
 * growth.h for the placement); file keys and volume ids come from sequence.h. A
 * background thread vacuums volumes whose garbage ratio passes -garbageThreshold.
 *
 * High availability: with -peers (the HTTP addresses of every master, this one
 * included), the masters form a Raft group (consensus.h) on port HTTP + 10000. The
 * file-key high-water mark, the max volume id and the cluster id are replicated through
 * it (sequence.h). Every master takes heartbeats from every volume server, so every
 * master's topology is warm and answers /dir/lookup itself; followers proxy
 * /dir/assign, /dir/status, the /vol/ routes, /col/delete and /submit to the leader, and answer
 * 503 when no leader is known.
 *
 * Threads: HTTP requests run on the HTTP thread pool; growth is serialised by
 * `grow_lock`, vacuum by `vacuum_lock`; topology and sequence lock themselves.
 */
#ifndef KELP_MASTER_H
#define KELP_MASTER_H

#include <stdbool.h>

struct master;

struct master_options {
	const char *ip;
	int port;
	const char *mdir;
	const char *peers;
	const char *default_replication;
	int volume_size_limit_mb;
	double garbage_threshold;
	int pulse_seconds;
	const char *jwt_key;	  /* "" = no signing */
	const char *jwt_read_key; /* "" = reads need no token; else /dir/lookup?read=yes signs */
	const char *white_list;	  /* comma list of IPs allowed to write; "" = all */
	bool public_status;	  /* status pages answer anyone, not only the white list */
	int vacuum_interval_seconds;
	int threads;
	int election_timeout_ms; /* HA: Raft election timeout (1000) */
};

int master_start(const struct master_options *opt, struct master **out);
int master_port(const struct master *m);
void master_stop(struct master *m);

#endif
