/*
 * topology: the master's view of the cluster, data center > rack > node > volumes.
 *
 * Fed by heartbeats (topology_apply_heartbeat): each names its node (ip:port), data
 * center and rack, capacity (max volumes), and either the full list of its volumes or
 * deltas. A node not heard from for 3 pulses is dead: it is left out of lookups and its
 * volumes are not writable, until its next heartbeat brings it back.
 *
 * Layouts are not stored: the writable volumes of a (collection, replication, ttl)
 * are those whose known, live locations number exactly the copy count of the
 * placement, none read-only, all under the volume size limit.
 *
 * Threads: every function takes the topology's mutex; nothing blocks on I/O inside.
 */
#ifndef KELP_TOPOLOGY_H
#define KELP_TOPOLOGY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/common/heartbeat.h"
#include "cluster/common/layout.h"

#define TOPO_MAX_LOCATIONS 16

struct topology;

struct topo_location {
	char url[128]; /* ip:port */
	char public_url[256];
	char data_center[64];
	char rack[64];
};

/* One volume as the master sees it, with its live locations. */
struct topo_volume_view {
	uint32_t id;
	char collection[128];
	uint8_t replica_placement;
	struct ttl ttl;
	uint64_t size; /* largest over replicas */
	uint64_t file_count, delete_count, deleted_bytes;
	bool read_only;	       /* on some replica: not writable */
	bool marked_read_only; /* for another reason than a full disk (not vacuumed) */
	int n_locations;
	struct topo_location locations[TOPO_MAX_LOCATIONS];
};

/* A candidate server for a new volume. */
struct topo_node_view {
	char url[128];
	char public_url[256];
	char data_center[64];
	char rack[64];
	int free_slots;
};

struct topology *topology_new(uint64_t volume_size_limit, uint64_t pulse_ns);
void topology_free(struct topology *t);

/*
 * Applies a heartbeat received at now_ns. Returns 0 or -EINVAL (missing ip/port).
 * *max_file_key / *max_volume_id get the largest values it reported.
 */
int topology_apply_heartbeat(struct topology *t, const struct heartbeat *hb, uint64_t now_ns);

/* Removes a node at once (graceful stop). */
void topology_remove_node(struct topology *t, const char *url);

/* Registers a freshly grown volume on a node before its heartbeat reports it. */
void topology_add_volume(struct topology *t, const char *node_url, uint32_t vid,
			 const char *collection, uint8_t rp, struct ttl ttl, uint64_t now_ns);

/* Finds volume vid; true and *out filled with its live locations. */
bool topology_lookup(struct topology *t, uint32_t vid, uint64_t now_ns,
		     struct topo_volume_view *out);

/* Constraints of an assign or a growth. NULL/empty strings mean "any". */
struct topo_filter {
	const char *collection;
	uint8_t replica_placement;
	struct ttl ttl;
	const char *data_center;
	const char *rack;
	const char *data_node;
};

/*
 * Picks a writable volume for the filter: up to 3 random candidates weighted by free
 * space. Returns true and *out; false when there is none.
 */
bool topology_pick_for_write(struct topology *t, const struct topo_filter *f, uint64_t now_ns,
			     struct topo_volume_view *out);

/* Number of writable volumes of the filter's layout, and how many are crowded (>90%). */
void topology_layout_counts(struct topology *t, const struct topo_filter *f, uint64_t now_ns,
			    int *writable, int *crowded);

/* Live nodes with their free slots (caller frees *out). Returns the count or -ENOMEM. */
int topology_nodes(struct topology *t, uint64_t now_ns, struct topo_node_view **out);

/* True if a node missed its last heartbeats but was seen within 10 pulses (late, not
 * gone: a placement that fails now may work in a moment). */
bool topology_has_late_nodes(struct topology *t, uint64_t now_ns);

/* True if any live node is in data center dc. */
bool topology_has_data_center(struct topology *t, const char *dc, uint64_t now_ns);

/* All volumes (caller frees *out). Returns the count or -ENOMEM. */
int topology_volumes(struct topology *t, uint64_t now_ns, struct topo_volume_view **out);

/* Marks a volume as (not) being vacuumed: a vacuuming volume is not writable. */
void topology_set_vacuuming(struct topology *t, uint32_t vid, bool on);

/* Forgets every volume of a collection. Returns how many. */
int topology_delete_collection(struct topology *t, const char *collection);
bool topology_has_collection(struct topology *t, const char *collection);
/* True when a node "ip:port" is known (alive or not). */
bool topology_has_node(struct topology *t, const char *url);

/* Largest volume id and file key any heartbeat reported. */
uint32_t topology_max_volume_id(struct topology *t);
uint64_t topology_max_file_key(struct topology *t);

uint64_t topology_volume_size_limit(struct topology *t);

/* Counts of live nodes, slots and free slots. */
void topology_capacity(struct topology *t, uint64_t now_ns, int *nodes, int *max, int *free);

/* /dir/status "Topology" object and /vol/status "Volumes" object (new references). */
json_t *topology_status_json(struct topology *t, uint64_t now_ns);
json_t *topology_volume_status_json(struct topology *t, uint64_t now_ns);

#endif
