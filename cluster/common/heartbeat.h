/*
 * heartbeat: the Heartbeat / HeartbeatResponse protobuf messages that volume servers
 * and masters exchange, wire-compatible with SeaweedFS's master_pb (field numbers in
 * cluster/proto/master.proto and docs/seaweedfs-reference.md section 6.1).
 *
 * This module is the only user of the protobuf-c generated code: everything else in
 * kelp sees the plain structs below. Calling sequence:
 *   volume server: fill a struct heartbeat, heartbeat_encode, send, free(*out);
 *                  heartbeat_response_decode on the reply.
 *   master:        heartbeat_decode the request, use it, heartbeat_release;
 *                  heartbeat_response_encode the reply, free(*out).
 *
 * Decoding is for untrusted bytes: malformed protobuf, wrong wire types, strings that
 * are not valid UTF-8 (as protobuf-go refuses too), strings with NUL bytes or too long
 * for their field, values too big for kelp's field, and lists longer than
 * HEARTBEAT_MAX_VOLUMES are rejected with -EINVAL, never truncated. Unknown fields
 * (EC shards, disk tags, newer additions) are skipped. What kelp does not model is
 * dropped on decode and sent as zero/empty on encode: admin_port, disk types and ids
 * (everything is "" = hdd), remote storage, location uuids, disk sizes, the digest
 * fields, and from the response preallocate and volume_digest_supported (a kelp
 * master must never set the latter; see master.proto).
 *
 * Stateless and thread-safe; structs belong to the caller.
 */
#ifndef KELP_HEARTBEAT_H
#define KELP_HEARTBEAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Cap on each list in a message, and on the unknown fields of a whole message. */
#define HEARTBEAT_MAX_VOLUMES 100000

/* Encoded messages longer than this are refused by both encode and decode. */
#define HEARTBEAT_MAX_LEN (32u << 20)

struct hb_volume {
	uint32_t id;
	uint64_t size; /* .dat file size */
	char collection[128];
	uint64_t file_count, delete_count, deleted_bytes;
	bool read_only;
	bool low_space;		   /* read_only because the disk is full (kelp; still vacuumed) */
	uint8_t replica_placement; /* the super block byte, e.g. 0x01 for "001" */
	uint32_t version;
	uint32_t ttl; /* count<<8|unit */
	uint32_t compact_revision;
	int64_t modified_at_second;
	uint64_t max_file_key_unused; /* not on the wire; always 0 after decode */
};

struct heartbeat {
	char ip[64];
	uint32_t port;
	char public_url[256];
	/*
	 * max_volume_counts[""] (hdd; an "hdd" key in any case counts too, the last on
	 * the wire winning, as Go's master resolves it). 0 = not reported: encode leaves
	 * the map empty and a master keeps what it knew, as SeaweedFS's master does.
	 */
	uint32_t max_volume_count;
	uint64_t max_file_key;
	char data_center[64];
	char rack[64];
	char id[128];	    /* stable node id; "" means ip:port */
	uint32_t grpc_port; /* 0 = not reported (a Go master then assumes port + 10000) */

	/*
	 * The lists. Decode allocates each (NULL when empty); heartbeat_release frees them.
	 * For encode they are borrowed and only read.
	 */
	struct hb_volume *volumes; /* full list */
	size_t n_volumes;
	/* Deltas, sent as short info: only id, collection, replica_placement, version, ttl. */
	struct hb_volume *new_volumes;
	size_t n_new;
	struct hb_volume *deleted_volumes;
	size_t n_deleted;
	bool has_no_volumes; /* "I hold no volumes at all" (graceful stop) */
};

struct heartbeat_response {
	uint64_t volume_size_limit;
	char leader[256]; /* "host:port" of the leader, "" if the sender is it / unknown */
	bool resend_full_volume_list;
};

/*
 * Encodes hb into a malloc'd buffer: *out (caller frees; never NULL on success, even
 * for an empty message) and *len. Returns 0, -EINVAL (a string not NUL-terminated
 * within its field or not valid UTF-8, a list over HEARTBEAT_MAX_VOLUMES, a non-empty
 * list with a NULL pointer, a result over HEARTBEAT_MAX_LEN) or -ENOMEM.
 */
int heartbeat_encode(const struct heartbeat *hb, uint8_t **out, size_t *len);

/*
 * Decodes len bytes (buf may be NULL when len is 0) into *out, overwriting it.
 * Returns 0 (caller then calls heartbeat_release), -EINVAL (malformed, see the top
 * comment) or -ENOMEM. On failure *out is zeroed and owns nothing; releasing it is
 * harmless.
 */
int heartbeat_decode(const uint8_t *buf, size_t len, struct heartbeat *out);

/* Frees the lists decode allocated and zeroes *hb. NULL is fine. */
void heartbeat_release(struct heartbeat *hb);

/* As heartbeat_encode, for the master's reply. */
int heartbeat_response_encode(const struct heartbeat_response *r, uint8_t **out, size_t *len);

/* As heartbeat_decode; allocates nothing, so there is nothing to release. */
int heartbeat_response_decode(const uint8_t *buf, size_t len, struct heartbeat_response *out);

#endif
