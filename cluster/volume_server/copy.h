/*
 * copy: volume copies between volume servers, and the needle-level comparison of
 * replicas (volume.check.disk). The admin routes under /admin/volume/ (docs/http-api.md):
 *
 * Source side (read-only, served while the volume keeps taking writes):
 *   GET  info?volume=V                  sizes of .dat/.idx as one consistent snapshot
 *   GET  file?volume=V&ext=dat|idx&offset=O&size=N   bytes of one file (sendfile)
 *   GET  checksum?volume=V&datSize=&idxSize=&revision=  CRC32C of both prefixes
 *   GET  needles?volume=V               every key's last state (32-byte records)
 *   GET  record?volume=V&offset=O       one raw needle record
 * Target side:
 *   POST copy?volume=V&source=S[&mbps=M][&finish=wait]  starts a copy (202); the job
 *        streams .dat and .idx into <base>.cdt/.cix, catches up the tail written
 *        meanwhile until a round brings nothing new (or, with finish=wait, until
 *        copy/finish), checks sizes and CRC32C against the source, renames to
 *        .dat/.idx, serves the volume and heartbeats at once
 *   POST copy/finish?volume=V, copy/cancel?volume=V;  GET copy/status
 *   POST append?volume=V                one raw record from another replica
 *   POST check_disk?volume=V&peer=P[&apply=false]  compares the needle sets of this
 *        replica and P's; the newest record of each key wins (deletions included) and
 *        is appended where it is missing, on both sides
 *
 * A crash of either side leaves only .cdt/.cix files, which are never served and are
 * removed when the store opens; the master (or the shell) starts the copy again.
 *
 * Threads: one thread per running copy; `lock` guards the job list.
 */
#ifndef KELP_COPY_H
#define KELP_COPY_H

#include <jansson.h>

struct store;
struct http_request;
struct copier;

struct copier_env {
	struct store *store;
	const char *jwt_key;		    /* NULL or "": no server tokens */
	const char *self_url;		    /* ip:port of this server */
	void (*volumes_changed)(void *ctx); /* heartbeat at once */
	void *ctx;
	int max_running; /* copies running at once on this server (0 = 8) */
};

int copier_new(const struct copier_env *env, struct copier **out);
/* Cancels the running copies and waits for them. */
void copier_free(struct copier *c);

/* Serves /admin/volume/<op> (access already checked). */
void copier_handle(struct copier *c, struct http_request *req, const char *op);

/* The copies running and the recent ones, as copy/status shows them (new reference). */
json_t *copier_status_json(struct copier *c);

#endif
