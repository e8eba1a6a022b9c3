/*
 * growth: where the copies of a new volume go, by SeaweedFS's replica placement "xyz":
 * x copies in other data centers, y in other racks of the main data center, z on other
 * servers of the main rack, plus the main copy: x + y + z + 1 servers.
 *
 * Pure functions over a snapshot of the nodes (topology_nodes), so they are unit-tested
 * without a cluster. Choices are random, weighted by free slots, from rand_state.
 */
#ifndef KELP_GROWTH_H
#define KELP_GROWTH_H

#include <stdint.h>

#include "cluster/master/topology.h"

/* Logical volumes created per growth event for a placement (7 / 6 / 3 / 1). */
int growth_count_for(uint8_t rp);

/*
 * Picks servers for one volume. nodes[i].free_slots must be > 0 for a node to be used.
 * dc / rack / node (NULL or "" = any) constrain the main copy. On success writes
 * placement_copies(rp) indices into out (main copy first) and returns that count;
 * -ENOSPC when the cluster has no room for the placement (why in reason, if non-NULL).
 */
int growth_pick_servers(const struct topo_node_view *nodes, int n, uint8_t rp, const char *dc,
			const char *rack, const char *node, unsigned *rand_state, int *out,
			char *reason, size_t reason_cap);

#endif
