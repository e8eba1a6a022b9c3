/*
 * client: a libcurl client of a kelp (or SeaweedFS) blob cluster.
 *
 * It talks to the masters (/cluster/status, /dir/assign, /dir/lookup) and to the
 * volume servers (PUT, GET, DELETE /<fid>). Calling sequence:
 *
 *   curl_global_init(CURL_GLOBAL_DEFAULT);    once per process, by the caller, before
 *                                             any thread creates a client (and after
 *                                             daemonizing); SIGPIPE should be ignored
 *   kelp_client_new(&opt, &c);                one client per thread
 *   kelp_client_put_buffer(c, ...);           assign + upload, re-assigning on failure
 *   kelp_client_read(c, fid, ...);            lookup (cached) + GET, other replicas on failure
 *   kelp_client_delete(c, fid);
 *   kelp_client_free(c);
 *   curl_global_cleanup();                    once, after the last client is freed
 *
 * Threads: a struct kelp_client is NOT thread-safe. It owns one curl easy handle, whose
 * connection cache keeps connections to the masters and volume servers alive between
 * calls, and a volume location cache; neither is locked. Give each thread its own
 * client and never share one (DESIGN.md, "known traps"). Clients are independent, so
 * any number of threads may each use their own at the same time.
 *
 * Masters and leader discovery: the client takes a comma list of masters. It asks one
 * of them for /cluster/status and follows its "Leader"; assigns go to the leader,
 * lookups to the leader or any master. On a connection error, a 5xx or a "no leader"
 * answer it forgets the leader and tries the next master after a small backoff (50 ms
 * doubling to 1 s). A leader that cannot be reached is bypassed by sending the request
 * to another master, which proxies it.
 *
 * Time bounds: every public call is bounded by opt.timeout_ms in total, retries and
 * backoff included; each connection attempt by opt.connect_timeout_ms; and a transfer
 * that moves no data for opt.stall_timeout_ms is aborted. A call that cannot reach a
 * master leader fails with -EHOSTUNREACH (no master answered) or -EAGAIN (masters
 * answered but none is or knows a leader / the leader is not ready).
 *
 * Errors: every action returns 0 or a negative errno, and leaves a one-line message
 * for kelp_client_error(). The mapping of HTTP statuses is kelp_errno_from_status().
 * Transport failures are -ECONNREFUSED, -ETIMEDOUT, -ECONNRESET, -EHOSTUNREACH.
 *
 * Strings in results are copied into the result structs (no ownership to track);
 * only kelp_client_read() and kelp_client_master_get() return a malloc'ed buffer.
 */
#ifndef KELP_CLIENT_H
#define KELP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/common/fid.h"

#define KELP_URL_MAX	   256	/* "host:port" of a server, or a leader address */
#define KELP_DC_MAX	   64	/* data center name */
#define KELP_AUTH_MAX	   1024 /* "Bearer <jwt>" */
#define KELP_NAME_MAX	   256	/* stored file name (the volume server keeps < 256 bytes) */
#define KELP_MIME_MAX	   256
#define KELP_ETAG_MAX	   48
#define KELP_MAX_LOCATIONS 8 /* replicas kept per volume */

struct kelp_client;

struct kelp_client_options {
	const char *masters;	/* comma list "host:port[,host:port...]"; required */
	int connect_timeout_ms; /* per connection attempt; 0 = 5000 */
	int timeout_ms;		/* per public call, retries included; 0 = 30000 */
	int stall_timeout_ms;	/* abort a transfer idle this long; 0 = min(timeout, 30 s) */
	int upload_retries;  /* re-assign + re-upload attempts after the first; 0 = 3, <0 = none */
	int lookup_ttl_ms;   /* how long a volume's locations are cached; 0 = 10 min */
	bool use_public_url; /* talk to volume servers through publicUrl instead of url */
	/* The clock of the location cache (tests inject one); NULL = monotonic_ns(). */
	uint64_t (*clock_ns)(void *ctx);
	void *clock_ctx;
};

/*
 * Creates a client. Copies everything it needs from opt. Returns -EINVAL when the
 * master list is empty or malformed, -ENOMEM. Opens no connection yet.
 */
int kelp_client_new(const struct kelp_client_options *opt, struct kelp_client **out);
/* Frees the client and closes its connections. NULL is allowed. */
void kelp_client_free(struct kelp_client *c);

/* The message of the last failed call ("" if none); valid until the next call on c. */
const char *kelp_client_error(const struct kelp_client *c);

/* The leader this client currently follows ("" when unknown); valid until the next call. */
const char *kelp_client_leader(const struct kelp_client *c);

/* ---------------------------------------------------------------- assign */

struct kelp_assign_request {
	unsigned count;		 /* file keys to reserve; 0 = 1 */
	const char *collection;	 /* NULL or "" = default */
	const char *replication; /* "xyz"; NULL = the master's default */
	const char *ttl;	 /* "3m", "4h", ...; NULL = none */
	const char *data_center; /* NULL = any */
	const char *rack;	 /* NULL = any */
};

struct kelp_assign_result {
	char fid[FID_MAX_LEN];
	char url[KELP_URL_MAX]; /* of the volume server to upload to */
	char public_url[KELP_URL_MAX];
	unsigned count;
	char auth[KELP_AUTH_MAX]; /* the Authorization header to send ("" = none) */
};

/*
 * Asks the leader for a file id. Errors: -EAGAIN / -EHOSTUNREACH (no leader within the
 * timeout), -ENOSPC (406: no writable volume and no free slot), -EINVAL (400: bad
 * option, unknown data center), -EPROTO (unreadable reply).
 */
int kelp_client_assign(struct kelp_client *c, const struct kelp_assign_request *req,
		       struct kelp_assign_result *out);

/* ---------------------------------------------------------------- upload */

struct kelp_upload_options {
	const char *name; /* stored file name; NULL = none (put_path: the base name) */
	const char *mime; /* Content-Type; NULL = application/octet-stream */
	const char *ttl;  /* must match the volume's ttl for TTL volumes; NULL = none */
	bool fsync;	  /* ask the volume server to fsync before replying */
	bool no_md5;	  /* ?md5=false: the server skips the MD5 (none in the reply) */
};

struct kelp_upload_result {
	uint64_t size;		  /* bytes stored, as the volume server reports them */
	char etag[KELP_ETAG_MAX]; /* CRC32-C of the stored bytes, 8 hex digits, no quotes */
};

/*
 * Uploads len bytes to http://<url>/<fid> as one raw PUT (Content-Disposition carries
 * the name). auth is the assign's Authorization value or NULL/"". The data is
 * borrowed for the duration of the call. Errors: transport errors, -EIO (5xx),
 * -EACCES (401: bad or missing JWT), -EFBIG (413), -ENOENT (404: volume not there),
 * -EINVAL (400).
 */
int kelp_client_upload_buffer(struct kelp_client *c, const char *url, const char *fid,
			      const char *auth, const struct kelp_upload_options *opt,
			      const void *data, size_t len, struct kelp_upload_result *out);

/*
 * Same, streaming size bytes of fd from offset (read with pread, so the fd's position
 * is untouched and the body can be resent; fd must be a regular file). fd stays the
 * caller's.
 */
int kelp_client_upload_fd(struct kelp_client *c, const char *url, const char *fid, const char *auth,
			  const struct kelp_upload_options *opt, int fd, uint64_t offset,
			  uint64_t size, struct kelp_upload_result *out);

/*
 * Uploads len bytes to a fid the caller chose (a key in an existing volume, e.g. a
 * well-known name), replacing what that key held: the master's lookup of the fid
 * gives the volume's location and, in a -jwtKey cluster, the write token. The volume
 * server refuses (-EINVAL) to replace a needle whose cookie differs. No retries on
 * another volume (the fid names one).
 */
int kelp_client_put_at(struct kelp_client *c, const char *fid,
		       const struct kelp_upload_options *opt, const void *data, size_t len,
		       struct kelp_upload_result *out);

/* What put_* did: the assign it used and the upload's result. */
struct kelp_put_result {
	struct kelp_assign_result assign;
	struct kelp_upload_result upload;
};

/*
 * Assign + upload. When the upload fails with a connection error, a 5xx, a 404 (the
 * volume is not where the master said), a 401 (token expired) or a 507 (that disk is
 * full), assigns again (possibly another volume) and uploads again, up to
 * opt.upload_retries times. While the master still hands out a server that refused
 * the connection, or a volume whose write failed, those assigns are redone without
 * uploading. The whole sequence is bounded by opt.timeout_ms. out is filled on
 * success (out->assign.fid is the blob's id); when it fails, the error is the last
 * upload's (-ENOSPC when the disks were full).
 */
int kelp_client_put_buffer(struct kelp_client *c, const struct kelp_assign_request *areq,
			   const struct kelp_upload_options *uopt, const void *data, size_t len,
			   struct kelp_put_result *out);
int kelp_client_put_fd(struct kelp_client *c, const struct kelp_assign_request *areq,
		       const struct kelp_upload_options *uopt, int fd, uint64_t offset,
		       uint64_t size, struct kelp_put_result *out);
/* Opens path, uploads all of it (name defaults to its base name), closes it. */
int kelp_client_put_path(struct kelp_client *c, const struct kelp_assign_request *areq,
			 const struct kelp_upload_options *uopt, const char *path,
			 struct kelp_put_result *out);

/* ---------------------------------------------------------------- lookup */

struct kelp_location {
	char url[KELP_URL_MAX];
	char public_url[KELP_URL_MAX];
	char data_center[KELP_DC_MAX];
};

struct kelp_locations {
	int n;
	struct kelp_location loc[KELP_MAX_LOCATIONS];
};

/*
 * The locations of volume vid: from the cache when fresh, else from a master (then
 * cached for opt.lookup_ttl_ms). Errors: -ENOENT (404: unknown volume), master errors.
 */
int kelp_client_lookup(struct kelp_client *c, uint32_t vid, struct kelp_locations *out);
/* Drops vid from the location cache (the next lookup asks a master). */
void kelp_client_forget_volume(struct kelp_client *c, uint32_t vid);

/* ---------------------------------------------------------------- read */

struct kelp_blob_info {
	uint64_t size;		  /* the blob's whole size, when the server told it */
	char name[KELP_NAME_MAX]; /* from Content-Disposition, "" when none */
	char mime[KELP_MIME_MAX]; /* Content-Type */
	char etag[KELP_ETAG_MAX]; /* without quotes */
};

/*
 * Reads a whole blob into a malloc'ed buffer (*data, caller frees; NUL-terminated
 * for convenience, *len excludes it). Replicas are tried starting at a random one;
 * on a failed read (connection error, 5xx, 404) the next one is tried. A failure
 * drops the volume's cached locations (the next call asks a master again); when all
 * replicas fail and the locations came from the cache, the volume is looked up once
 * more at once. Redirects (a volume server in -readMode=redirect) are followed.
 * Blobs stored gzipped are decoded. info may be NULL. Errors: -ENOENT (no replica has
 * it, or a wrong cookie), -EINVAL (bad fid), -EACCES, transport errors, -EIO.
 */
int kelp_client_read(struct kelp_client *c, const char *fid, uint8_t **data, size_t *len,
		     struct kelp_blob_info *info);

/*
 * Reads up to len bytes from offset into buf (caller's). *got is the number read;
 * 0 when offset is at or beyond the end (not an error).
 */
int kelp_client_read_range(struct kelp_client *c, const char *fid, uint64_t offset, size_t len,
			   void *buf, size_t *got, struct kelp_blob_info *info);

/*
 * Streams a whole blob to fd with write(2) at its current position. If a replica
 * fails mid-way the rest is fetched from another one with a Range request, so the
 * fd receives each byte once. *written (may be NULL) is the number of bytes written.
 */
int kelp_client_read_to_fd(struct kelp_client *c, const char *fid, int fd, uint64_t *written,
			   struct kelp_blob_info *info);

/* ---------------------------------------------------------------- delete */

/*
 * Deletes a blob (the volume server deletes the other replicas). auth may be NULL:
 * then the client looks the fid up with fileId= and uses the Authorization the master
 * returns, if any. *size (may be NULL) is the size the server reports. Errors:
 * -ENOENT (not found), -EINVAL (400: cookie mismatch, bad fid), -EACCES, transport.
 */
int kelp_client_delete(struct kelp_client *c, const char *fid, const char *auth, uint64_t *size);

/*
 * Makes every replica of volume vid flush to disk what it has taken so far
 * (POST /admin/sync, a kelp extension): writes made earlier without fsync become
 * durable. Errors: -ENOENT (a replica lacks the volume), -EIO (a replica failed to
 * sync or answered an error), transport errors.
 */
int kelp_client_sync_volume(struct kelp_client *c, uint32_t vid);

/* ---------------------------------------------------------------- masters */

/*
 * GET path_and_query (e.g. "/dir/status") from the leader (leader=true) or any master,
 * with the same discovery and retries as assign (5xx answers are retried, others are
 * returned). *body is malloc'ed and NUL-terminated (caller frees; the body of a
 * non-2xx answer is cut to 1 KiB), *status the HTTP status. *from (may be NULL,
 * KELP_URL_MAX bytes) receives the master that answered.
 */
int kelp_client_master_get(struct kelp_client *c, const char *path_and_query, bool leader,
			   long *status, char **body, size_t *len, char *from);

/*
 * GET http://<server><path_and_query> from one given server, no retries (status tools
 * asking each master in turn). Same outputs as kelp_client_master_get.
 */
int kelp_client_get(struct kelp_client *c, const char *server, const char *path_and_query,
		    long *status, char **body, size_t *len);
/* kelp_client_get with a server token for this request signed under jwt_key (NULL or
 * "": none), for the admin routes of a cluster started with -jwtKey. */
int kelp_client_admin_get(struct kelp_client *c, const char *server, const char *path_and_query,
			  const char *jwt_key, long *status, char **body, size_t *len);

/* ---------------------------------------------------------------- pure helpers */
/* Exposed for the unit tests and the command-line tools; none of these does I/O. */

/* The errno for an HTTP status: 2xx/3xx 0, 400 -EINVAL, 401/403 -EACCES, 404 -ENOENT,
 * 406 -ENOSPC, 408 -ETIMEDOUT, 409 -EEXIST, 413 -EFBIG, 416 -ERANGE, 429/503 -EAGAIN,
 * 507 -ENOSPC, other 4xx -EINVAL, other 5xx -EIO. */
int kelp_errno_from_status(long status);

/*
 * Splits "a:1, b:2,,c:3" into addresses (blanks and empty items skipped, a leading
 * "http://" dropped, duplicates removed). Returns the count (>= 1) and a
 * NULL-terminated malloc'ed array of malloc'ed strings (free with
 * kelp_free_master_list), or -EINVAL when there is none or one is malformed
 * (no host, bad port, spaces inside).
 */
int kelp_parse_master_list(const char *s, char ***out);
void kelp_free_master_list(char **list);

/*
 * Parses a /dir/assign reply body. Returns 0, -EPROTO if it is not the expected JSON
 * or lacks fid/url, or a negative errno (-EIO) with the "error" text copied to err
 * (err_cap bytes, may be NULL) when the reply carries one. auth is not touched.
 */
int kelp_parse_assign_reply(const char *body, size_t len, struct kelp_assign_result *out, char *err,
			    size_t err_cap);

/* Parses a /dir/lookup reply; same conventions. More than KELP_MAX_LOCATIONS are cut. */
int kelp_parse_lookup_reply(const char *body, size_t len, struct kelp_locations *out, char *err,
			    size_t err_cap);

/*
 * Parses a /cluster/status reply: *is_leader (absent = false), leader (the "Leader"
 * field normalised to host:port, "" when absent), leader_cap bytes. -EPROTO if not JSON.
 */
int kelp_parse_cluster_status(const char *body, size_t len, bool *is_leader, char *leader,
			      size_t leader_cap);

/* "host:port.grpcPort" -> "host:port" (in place); other forms are left alone. */
void kelp_normalize_server_address(char *addr);

/*
 * The file name of a Content-Disposition value (filename="x" or filename=x, else
 * name=), reduced to a safe base name: no directories, no control characters, not
 * "." or "..". Returns false (out = "") when there is none.
 */
bool kelp_parse_content_disposition(const char *value, char *out, size_t cap);

/*
 * The location cache: vid -> locations with an expiry time. Pure data structure with
 * the time passed in, so it can be tested without a clock. Not thread-safe (it lives
 * inside one client).
 */
struct kelp_location_cache {
	struct location_cache_entry *slots; /* open addressing, linear probing */
	size_t cap;			    /* power of two, or 0 */
	size_t used;
	uint64_t ttl_ns;
};

void kelp_location_cache_init(struct kelp_location_cache *lc, uint64_t ttl_ns);
void kelp_location_cache_release(struct kelp_location_cache *lc);
/* Copies the entry of vid into out if present and now < its expiry; else false. */
bool kelp_location_cache_get(struct kelp_location_cache *lc, uint32_t vid, uint64_t now_ns,
			     struct kelp_locations *out);
/* Stores (copies) locs for vid, expiring at now + ttl. 0 or -ENOMEM. */
int kelp_location_cache_put(struct kelp_location_cache *lc, uint32_t vid, uint64_t now_ns,
			    const struct kelp_locations *locs);
void kelp_location_cache_drop(struct kelp_location_cache *lc, uint32_t vid);
/* Number of entries, fresh or not. */
size_t kelp_location_cache_size(const struct kelp_location_cache *lc);

#endif
