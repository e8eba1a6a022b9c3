#include "cluster/master/growth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int growth_count_for(uint8_t rp)
{
	switch (placement_copies(rp)) {
	case 1:
		return 7;
	case 2:
		return 6;
	case 3:
		return 3;
	default:
		return 1;
	}
}

static bool empty(const char *s)
{
	return !s || !*s;
}

/* Weighted random choice among candidates[0..n) with weights w; returns the position. */
static int weighted_pick(const int *weights, int n, unsigned *rs)
{
	long total = 0, r;

	for (int i = 0; i < n; i++)
		total += weights[i];
	if (total <= 0)
		return -1;
	r = (long)((unsigned)rand_r(rs) % (unsigned long)total);
	for (int i = 0; i < n; i++) {
		r -= weights[i];
		if (r < 0)
			return i;
	}
	return n - 1;
}

/* Free nodes of one rack of one DC (or of the whole DC when rack is NULL). */
static int free_nodes(const struct topo_node_view *nodes, int n, const char *dc, const char *rack,
		      int *idx)
{
	int count = 0;

	for (int i = 0; i < n; i++) {
		if (nodes[i].free_slots <= 0 || strcmp(nodes[i].data_center, dc))
			continue;
		if (rack && strcmp(nodes[i].rack, rack))
			continue;
		idx[count++] = i;
	}
	return count;
}

/* Distinct racks of dc that have at least min_free free nodes; returns their count. */
static int racks_with(const struct topo_node_view *nodes, int n, const char *dc, int min_free,
		      const char **racks, int *weights)
{
	int count = 0, *idx = malloc(sizeof(int) * (size_t)(n + 1));

	if (!idx)
		return 0;
	for (int i = 0; i < n; i++) {
		bool seen = false;
		int k, w = 0;

		if (strcmp(nodes[i].data_center, dc))
			continue;
		for (k = 0; k < count && !seen; k++)
			seen = !strcmp(racks[k], nodes[i].rack);
		if (seen)
			continue;
		k = free_nodes(nodes, n, dc, nodes[i].rack, idx);
		if (k < min_free)
			continue;
		for (int j = 0; j < k; j++)
			w += nodes[idx[j]].free_slots;
		racks[count] = nodes[i].rack;
		weights[count++] = w;
	}
	free(idx);
	return count;
}

/* Picks k distinct nodes from idx[0..m) weighted by free slots; false if m < k. */
static bool pick_nodes(const struct topo_node_view *nodes, int *idx, int m, int k, const char *must,
		       unsigned *rs, int *out)
{
	int *w = malloc(sizeof(int) * (size_t)(m + 1)), got = 0;

	if (!w || m < k) {
		free(w);
		return false;
	}
	if (!empty(must)) {
		for (int i = 0; i < m; i++) {
			if (!strcmp(nodes[idx[i]].url, must) ||
			    !strcmp(nodes[idx[i]].public_url, must)) {
				out[got++] = idx[i];
				idx[i] = idx[--m];
				break;
			}
		}
		if (got == 0) {
			free(w);
			return false;
		}
	}
	while (got < k) {
		int p;

		for (int i = 0; i < m; i++)
			w[i] = nodes[idx[i]].free_slots;
		p = weighted_pick(w, m, rs);
		if (p < 0)
			break;
		out[got++] = idx[p];
		idx[p] = idx[--m];
	}
	free(w);
	return got == k;
}

int growth_pick_servers(const struct topo_node_view *nodes, int n, uint8_t rp, const char *dc,
			const char *rack, const char *node, unsigned *rand_state, int *out,
			char *reason, size_t reason_cap)
{
	int x = rp / 100, y = (rp / 10) % 10, z = rp % 10, got = 0, ret = -ENOSPC;
	const char **dcs = calloc((size_t)n + 1, sizeof(*dcs)), **racks = NULL;
	int *dc_w = calloc((size_t)n + 1, sizeof(int)), *rack_w = NULL;
	int *idx = calloc((size_t)n + 1, sizeof(int));
	int n_dcs = 0, n_racks, main_rack, m;
	char dummy[8];

	if (!reason) {
		reason = dummy;
		reason_cap = sizeof(dummy);
	}
	racks = calloc((size_t)n + 1, sizeof(*racks));
	rack_w = calloc((size_t)n + 1, sizeof(int));
	if (!dcs || !dc_w || !idx || !racks || !rack_w) {
		ret = -ENOMEM;
		goto out;
	}
	/* A required server fixes the main data center and rack. */
	if (!empty(node)) {
		int k;

		for (k = 0; k < n; k++)
			if (!strcmp(nodes[k].url, node) || !strcmp(nodes[k].public_url, node))
				break;
		if (k == n || nodes[k].free_slots <= 0 ||
		    (!empty(dc) && strcmp(dc, nodes[k].data_center)) ||
		    (!empty(rack) && strcmp(rack, nodes[k].rack))) {
			snprintf(
			    reason, reason_cap,
			    "server %s is unknown, full, or not in the data center / rack asked for",
			    node);
			goto out;
		}
		dc = nodes[k].data_center;
		rack = nodes[k].rack;
	}
	/* Main data center candidates: room for y+1 racks, one of them with z+1 servers. */
	for (int i = 0; i < n; i++) {
		bool seen = false;
		int w = 0;

		for (int k = 0; k < n_dcs && !seen; k++)
			seen = !strcmp(dcs[k], nodes[i].data_center);
		if (seen || (!empty(dc) && strcmp(nodes[i].data_center, dc)))
			continue;
		if (racks_with(nodes, n, nodes[i].data_center, 1, racks, rack_w) < y + 1)
			continue;
		if (racks_with(nodes, n, nodes[i].data_center, z + 1, racks, rack_w) < 1)
			continue;
		m = free_nodes(nodes, n, nodes[i].data_center, NULL, idx);
		for (int k = 0; k < m; k++)
			w += nodes[idx[k]].free_slots;
		dcs[n_dcs] = nodes[i].data_center;
		dc_w[n_dcs++] = w;
	}
	if (n_dcs == 0) {
		snprintf(
		    reason, reason_cap,
		    "no data center%s%s has %d rack(s) with free slots and a rack with %d server(s) with free slots",
		    empty(dc) ? "" : " named ", empty(dc) ? "" : dc, y + 1, z + 1);
		goto out;
	}
	/* Try main data centers in weighted random order until one fits everything. */
	while (n_dcs > 0) {
		int p = weighted_pick(dc_w, n_dcs, rand_state), n_other = 0;
		const char *main_name;

		if (p < 0)
			break;
		main_name = dcs[p];
		got = 0;
		/* Main rack: z+1 servers. */
		n_racks = racks_with(nodes, n, main_name, z + 1, racks, rack_w);
		main_rack = -1;
		for (int k = 0; k < n_racks; k++)
			if (!empty(rack) && !strcmp(racks[k], rack))
				main_rack = k;
		if (main_rack < 0 && empty(rack))
			main_rack = weighted_pick(rack_w, n_racks, rand_state);
		if (main_rack >= 0) {
			const char *main_rack_name = racks[main_rack];

			m = free_nodes(nodes, n, main_name, main_rack_name, idx);
			if (pick_nodes(nodes, idx, m, z + 1, node, rand_state, out)) {
				got = z + 1;
				/* Other racks of the main DC: one server each. */
				n_racks = racks_with(nodes, n, main_name, 1, racks, rack_w);
				for (int k = 0; k < n_racks; k++) {
					if (!strcmp(racks[k], main_rack_name)) {
						racks[k] = racks[--n_racks];
						rack_w[k] = rack_w[n_racks];
						break;
					}
				}
				for (int r = 0; r < y && n_racks > 0; r++) {
					int q = weighted_pick(rack_w, n_racks, rand_state);

					m = free_nodes(nodes, n, main_name, racks[q], idx);
					if (pick_nodes(nodes, idx, m, 1, NULL, rand_state,
						       out + got))
						got++;
					racks[q] = racks[--n_racks];
					rack_w[q] = rack_w[n_racks];
				}
				/* Other data centers: one server each. */
				{
					const char **others =
					    calloc((size_t)n + 1, sizeof(*others));
					int *ow = calloc((size_t)n + 1, sizeof(int));

					for (int i = 0; others && ow && i < n; i++) {
						bool seen =
						    !strcmp(nodes[i].data_center, main_name);
						int w = 0;

						for (int k = 0; k < n_other && !seen; k++)
							seen = !strcmp(others[k],
								       nodes[i].data_center);
						if (seen)
							continue;
						m = free_nodes(nodes, n, nodes[i].data_center, NULL,
							       idx);
						for (int k = 0; k < m; k++)
							w += nodes[idx[k]].free_slots;
						if (w > 0) {
							others[n_other] = nodes[i].data_center;
							ow[n_other++] = w;
						}
					}
					for (int d = 0; d < x && n_other > 0 && others && ow; d++) {
						int q = weighted_pick(ow, n_other, rand_state);

						m = free_nodes(nodes, n, others[q], NULL, idx);
						if (pick_nodes(nodes, idx, m, 1, NULL, rand_state,
							       out + got))
							got++;
						others[q] = others[--n_other];
						ow[q] = ow[n_other];
					}
					free(others);
					free(ow);
				}
			}
		}
		if (got == x + y + z + 1) {
			ret = got;
			goto out;
		}
		dcs[p] = dcs[--n_dcs];
		dc_w[p] = dc_w[n_dcs];
	}
	snprintf(
	    reason, reason_cap,
	    "not enough free volume slots for replication %d%d%d: need %d server(s) in %d other data center(s), %d other rack(s) and %d other server(s) of one rack",
	    x, y, z, x + y + z + 1, x, y, z);
out:
	free(dcs);
	free(dc_w);
	free(idx);
	free(racks);
	free(rack_w);
	return ret;
}
