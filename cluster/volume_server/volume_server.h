/*
 * volume_server: the HTTP face of a store (kelp volume).
 *
 * Routes (docs/http-api.md has every parameter and status code):
 *   GET/HEAD/POST/PUT/DELETE /<fid> in the five URL forms of fid_parse_path
 *   GET /status, /healthz, /readyz
 *   /admin/assign_volume, /admin/delete_volume, /admin/mark_readonly, /admin/mark_writable,
 *   /admin/vacuum/{check,compact,commit,cleanup}, /admin/delete_collection
 *
 * Uploads stream: up to 4 MiB + 64 KiB of body (a default mount chunk) is kept in
 * memory, the rest is spooled to an
 * unlinked temporary file in the first data directory, then copied into the volume
 * under its append lock. So a 256 MiB upload needs about 4 MiB of memory.
 *
 * Cluster side: one heartbeat thread per master (-master list) POSTs the full volume
 * list every pulse, and at once after a volume is created or deleted, so every master
 * keeps a warm topology and losing one master changes nothing for the others. Writes
 * and deletes to a volume with more than one copy are forwarded to the other replicas
 * (found with /dir/lookup, cached for 10 s) with ?type=replicate, and succeed only
 * when every replica stored them.
 *
 * Threads: requests run on the HTTP thread pool (http.h); the store and volumes do
 * their own locking; `cache_lock` guards the location cache, `hb_lock` the heartbeat
 * state.
 */
#ifndef KELP_VOLUME_SERVER_H
#define KELP_VOLUME_SERVER_H

#include <stdbool.h>

struct volume_server;

struct volume_server_options {
	const char *ip;
	int port;
	const char *public_url;
	char **dirs;
	int *max_volumes;
	int n_dirs;
	const char *masters; /* comma list, for the heartbeat (the master issue) */
	const char *data_center;
	const char *rack;
	int file_size_limit_mb;
	bool fsync;
	const char *read_mode; /* proxy | redirect | local */
	int threads;
	int pulse_seconds;	  /* heartbeat period (1) */
	const char *jwt_key;	  /* "" = writes need no token */
	const char *jwt_read_key; /* "" = reads need no token */
	const char *white_list;	  /* comma list of IPs allowed to write; "" = all */
	bool public_status;	  /* /status answers anyone, not only the white list */
	int min_free_percent;	  /* a disk with less free is read-only; < 0 = 1 % */
};

int volume_server_start(const struct volume_server_options *opt, struct volume_server **out);
int volume_server_port(const struct volume_server *vs);
void volume_server_stop(struct volume_server *vs);

#endif
