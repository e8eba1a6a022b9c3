/*
 * test_growth: growth_count_for and growth_pick_servers over hand-built node sets.
 * Every pick is checked against the placement "xyz" exactly (x other data centers,
 * y other racks of the main data center, z other servers of the main rack), against
 * the dataCenter / rack / dataNode constraints, and for weighting by free slots.
 * Deterministic: every random choice comes from a fixed seed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/master/growth.h"

#define MAX_NODES 64
#define SEEDS	  2000

struct nodeset {
	struct topo_node_view v[MAX_NODES];
	int n;
};

static void add_node(struct nodeset *s, const char *url, const char *dc, const char *rack,
		     int free_slots)
{
	struct topo_node_view *v = &s->v[s->n++];

	assert_true(s->n <= MAX_NODES);
	memset(v, 0, sizeof(*v));
	snprintf(v->url, sizeof(v->url), "%s", url);
	snprintf(v->public_url, sizeof(v->public_url), "pub-%s", url);
	snprintf(v->data_center, sizeof(v->data_center), "%s", dc);
	snprintf(v->rack, sizeof(v->rack), "%s", rack);
	v->free_slots = free_slots;
}

/*
 * Three data centers; rack names repeat across data centers on purpose (a rack is
 * identified by data center + rack). Nodes with 0 free slots are scattered around.
 *   dc1: r1 = a1 a2 a3 (+ a0 full), r2 = b1 b2, r3 = c1, r4 = d0 (full only)
 *   dc2: r1 = e1 e2, r2 = f1 (+ f0 full)
 *   dc3: r1 = g1 g2
 *   dc4: r1 = h0 (full only)
 */
static void big_set(struct nodeset *s)
{
	memset(s, 0, sizeof(*s));
	add_node(s, "10.1.1.1:8080", "dc1", "r1", 3);
	add_node(s, "10.1.1.0:8080", "dc1", "r1", 0);
	add_node(s, "10.1.1.2:8080", "dc1", "r1", 1);
	add_node(s, "10.1.2.1:8080", "dc1", "r2", 5);
	add_node(s, "10.1.1.3:8080", "dc1", "r1", 2);
	add_node(s, "10.1.2.2:8080", "dc1", "r2", 1);
	add_node(s, "10.1.3.1:8080", "dc1", "r3", 4);
	add_node(s, "10.1.4.0:8080", "dc1", "r4", 0);
	add_node(s, "10.2.1.1:8080", "dc2", "r1", 2);
	add_node(s, "10.2.1.2:8080", "dc2", "r1", 7);
	add_node(s, "10.2.2.1:8080", "dc2", "r2", 1);
	add_node(s, "10.2.2.0:8080", "dc2", "r2", 0);
	add_node(s, "10.3.1.1:8080", "dc3", "r1", 6);
	add_node(s, "10.3.1.2:8080", "dc3", "r1", 2);
	add_node(s, "10.4.1.0:8080", "dc4", "r1", 0);
}

static uint8_t rp_of(const char *s)
{
	uint8_t rp = 0;

	assert_int_equal(placement_parse(s, &rp), 0);
	return rp;
}

static bool same_rack(const struct topo_node_view *a, const struct topo_node_view *b)
{
	return !strcmp(a->data_center, b->data_center) && !strcmp(a->rack, b->rack);
}

/* Asserts that out[0..count) satisfies placement rp exactly, and the constraints. */
static void check_pick(const struct nodeset *s, const char *placement, const int *out, int count,
		       const char *dc, const char *rack, const char *node, unsigned seed)
{
	uint8_t rp = rp_of(placement);
	int x = rp / 100, y = (rp / 10) % 10, z = rp % 10;
	const struct topo_node_view *m0;
	int in_main_rack = 0, in_main_dc = 0, n_dcs = 0, n_racks = 0;
	const struct topo_node_view *dcs[MAX_NODES], *racks[MAX_NODES];

	if (count != x + y + z + 1)
		print_error("placement %s seed %u: %d servers\n", placement, seed, count);
	assert_int_equal(count, x + y + z + 1);
	for (int i = 0; i < count; i++) {
		assert_in_range(out[i], 0, s->n - 1);
		if (s->v[out[i]].free_slots <= 0)
			print_error("placement %s seed %u: picked full node %s\n", placement, seed,
				    s->v[out[i]].url);
		assert_true(s->v[out[i]].free_slots > 0);
		for (int j = 0; j < i; j++) {
			if (out[i] == out[j])
				print_error("placement %s seed %u: %s twice\n", placement, seed,
					    s->v[out[i]].url);
			assert_int_not_equal(out[i], out[j]);
		}
	}
	m0 = &s->v[out[0]];
	for (int i = 0; i < count; i++) {
		const struct topo_node_view *v = &s->v[out[i]];
		bool seen = false;

		for (int k = 0; k < n_dcs && !seen; k++)
			seen = !strcmp(dcs[k]->data_center, v->data_center);
		if (!seen)
			dcs[n_dcs++] = v;
		if (!strcmp(v->data_center, m0->data_center)) {
			in_main_dc++;
			seen = false;
			for (int k = 0; k < n_racks && !seen; k++)
				seen = same_rack(racks[k], v);
			if (!seen)
				racks[n_racks++] = v;
		}
		if (same_rack(v, m0))
			in_main_rack++;
	}
	if (n_dcs != x + 1 || n_racks != y + 1 || in_main_rack != z + 1 ||
	    in_main_dc != y + z + 1) {
		print_error("placement %s seed %u: %d dcs, %d racks in main dc, %d servers in main "
			    "rack, %d in main dc:",
			    placement, seed, n_dcs, n_racks, in_main_rack, in_main_dc);
		for (int i = 0; i < count; i++)
			print_error(" %s/%s/%s", s->v[out[i]].data_center, s->v[out[i]].rack,
				    s->v[out[i]].url);
		print_error("\n");
	}
	/* Other data centers: one server each, so distinct DCs == x + 1 means exactly that. */
	assert_int_equal(n_dcs, x + 1);
	assert_int_equal(count - in_main_dc, x);
	/* Main data center: y + 1 racks, the other racks one server each. */
	assert_int_equal(n_racks, y + 1);
	assert_int_equal(in_main_dc, y + z + 1);
	/* Main rack: z + 1 servers. */
	assert_int_equal(in_main_rack, z + 1);

	if (dc && *dc)
		assert_string_equal(m0->data_center, dc);
	if (rack && *rack)
		assert_string_equal(m0->rack, rack);
	if (node && *node && strcmp(m0->url, node) && strcmp(m0->public_url, node))
		fail_msg("placement %s seed %u: main copy %s is not %s", placement, seed, m0->url,
			 node);
}

static int pick(const struct nodeset *s, const char *placement, const char *dc, const char *rack,
		const char *node, unsigned seed, int *out, char *reason, size_t cap)
{
	unsigned rs = seed;

	return growth_pick_servers(s->v, s->n, rp_of(placement), dc, rack, node, &rs, out, reason,
				   cap);
}

/* Every seed must succeed and satisfy the placement; *coverage counts main copies. */
static void pick_many(const struct nodeset *s, const char *placement, const char *dc,
		      const char *rack, const char *node, int *main_count)
{
	for (unsigned seed = 1; seed <= SEEDS; seed++) {
		int out[32];
		char reason[256] = "";
		int rc;

		for (int i = 0; i < 32; i++)
			out[i] = -1;
		rc = pick(s, placement, dc, rack, node, seed, out, reason, sizeof(reason));
		if (rc < 0)
			fail_msg("placement %s dc=%s rack=%s node=%s seed %u: %d (%s)", placement,
				 dc ? dc : "", rack ? rack : "", node ? node : "", seed, rc,
				 reason);
		check_pick(s, placement, out, rc, dc, rack, node, seed);
		/* Nothing written past the copies. */
		for (int i = rc; i < 32; i++)
			assert_int_equal(out[i], -1);
		if (main_count)
			main_count[out[0]]++;
	}
}

static void test_count_for(void **state)
{
	(void)state;
	assert_int_equal(growth_count_for(rp_of("000")), 7);
	assert_int_equal(growth_count_for(rp_of("001")), 6);
	assert_int_equal(growth_count_for(rp_of("010")), 6);
	assert_int_equal(growth_count_for(rp_of("100")), 6);
	assert_int_equal(growth_count_for(rp_of("002")), 3);
	assert_int_equal(growth_count_for(rp_of("020")), 3);
	assert_int_equal(growth_count_for(rp_of("200")), 3);
	assert_int_equal(growth_count_for(rp_of("011")), 3);
	assert_int_equal(growth_count_for(rp_of("110")), 3);
	assert_int_equal(growth_count_for(rp_of("101")), 3);
	assert_int_equal(growth_count_for(rp_of("111")), 1);
	assert_int_equal(growth_count_for(rp_of("003")), 1);
	assert_int_equal(growth_count_for(rp_of("210")), 1);
	assert_int_equal(growth_count_for(rp_of("222")), 1);
}

static void test_placements_exact(void **state)
{
	static const char *const placements[] = {"000", "001", "010", "100", "200", "110",
						 "011", "002", "101", "111", "020", "021"};
	struct nodeset s;

	(void)state;
	big_set(&s);
	for (size_t p = 0; p < sizeof(placements) / sizeof(placements[0]); p++)
		pick_many(&s, placements[p], NULL, NULL, NULL, NULL);
}

/* "000" reaches every node with free slots as main copy, and never a full one. */
static void test_placement_000_coverage(void **state)
{
	struct nodeset s;
	int count[MAX_NODES] = {0};

	(void)state;
	big_set(&s);
	pick_many(&s, "000", NULL, NULL, NULL, count);
	for (int i = 0; i < s.n; i++) {
		if (s.v[i].free_slots > 0 && count[i] == 0)
			fail_msg("node %s never picked for 000", s.v[i].url);
		if (s.v[i].free_slots == 0)
			assert_int_equal(count[i], 0);
	}
}

/* Small sets where a placement has exactly one valid answer (up to order). */
static void test_placements_tight(void **state)
{
	struct nodeset s;
	int out[8];
	int rc;

	(void)state;
	/* 002 with exactly 3 free servers in one rack, the rest elsewhere. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b:1", "dc1", "r1", 1);
	add_node(&s, "c:1", "dc1", "r1", 1);
	add_node(&s, "d:1", "dc1", "r2", 9);
	add_node(&s, "e:1", "dc2", "r1", 9);
	add_node(&s, "f:1", "dc2", "r1", 9);
	pick_many(&s, "002", NULL, NULL, NULL, NULL);

	/* 100 with two DCs of one server each: always both. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b:1", "dc2", "r1", 1);
	for (unsigned seed = 1; seed <= 200; seed++) {
		rc = pick(&s, "100", NULL, NULL, NULL, seed, out, NULL, 0);
		assert_int_equal(rc, 2);
		assert_int_equal(out[0] + out[1], 1);
	}

	/* 010 where only one rack has 2 servers: main rack may be either rack. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b:1", "dc1", "r2", 1);
	add_node(&s, "c:1", "dc1", "r2", 0);
	pick_many(&s, "010", NULL, NULL, NULL, NULL);

	/* 011: racks r1 (2 free) + r2 (1 free): main rack must be r1. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b:1", "dc1", "r1", 1);
	add_node(&s, "c:1", "dc1", "r2", 50);
	for (unsigned seed = 1; seed <= SEEDS; seed++) {
		rc = pick(&s, "011", NULL, NULL, NULL, seed, out, NULL, 0);
		assert_int_equal(rc, 3);
		check_pick(&s, "011", out, rc, NULL, NULL, NULL, seed);
		assert_string_equal(s.v[out[0]].rack, "r1");
	}

	/* 200 with exactly three DCs, one of them with a single free node among full ones. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b0:1", "dc2", "r1", 0);
	add_node(&s, "b:1", "dc2", "r2", 1);
	add_node(&s, "c:1", "dc3", "r1", 4);
	pick_many(&s, "200", NULL, NULL, NULL, NULL);

	/* 110: only dc1 has two racks, so it must be the main DC. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 1);
	add_node(&s, "b:1", "dc1", "r2", 1);
	add_node(&s, "c:1", "dc2", "r1", 100);
	add_node(&s, "d:1", "dc2", "r1", 100);
	for (unsigned seed = 1; seed <= SEEDS; seed++) {
		rc = pick(&s, "110", NULL, NULL, NULL, seed, out, NULL, 0);
		assert_int_equal(rc, 3);
		check_pick(&s, "110", out, rc, NULL, NULL, NULL, seed);
		assert_string_equal(s.v[out[0]].data_center, "dc1");
	}
}

static void test_constraint_data_center(void **state)
{
	static const char *const placements[] = {"000", "001", "010", "100",
						 "200", "110", "011", "002"};
	struct nodeset s;

	(void)state;
	big_set(&s);
	pick_many(&s, "000", "dc2", NULL, NULL, NULL);
	pick_many(&s, "001", "dc2", NULL, NULL, NULL);
	pick_many(&s, "010", "dc2", NULL, NULL, NULL);
	pick_many(&s, "100", "dc3", NULL, NULL, NULL);
	pick_many(&s, "110", "dc2", NULL, NULL, NULL);
	pick_many(&s, "200", "dc1", NULL, NULL, NULL);
	/* Every placement constrained to dc1, which can host all of them. */
	for (size_t p = 0; p < sizeof(placements) / sizeof(placements[0]); p++)
		pick_many(&s, placements[p], "dc1", NULL, NULL, NULL);
}

static void test_constraint_rack(void **state)
{
	struct nodeset s;

	(void)state;
	big_set(&s);
	pick_many(&s, "000", "dc1", "r2", NULL, NULL);
	pick_many(&s, "001", "dc1", "r2", NULL, NULL);
	pick_many(&s, "010", "dc1", "r3", NULL, NULL);
	pick_many(&s, "100", "dc2", "r2", NULL, NULL);
	pick_many(&s, "002", "dc1", "r1", NULL, NULL);
	/* Rack without data center: r3 only exists in dc1. */
	pick_many(&s, "000", NULL, "r3", NULL, NULL);
	pick_many(&s, "100", NULL, "r3", NULL, NULL);
	/* r2 exists in dc1 and dc2. */
	pick_many(&s, "001", NULL, "r2", NULL, NULL);
}

/* dataNode constrains the main copy: with its rack (and data center) given too. */
static void test_constraint_data_node_with_rack(void **state)
{
	struct nodeset s;

	(void)state;
	big_set(&s);
	pick_many(&s, "000", "dc1", "r2", "10.1.2.2:8080", NULL);
	pick_many(&s, "001", "dc1", "r2", "10.1.2.2:8080", NULL);
	pick_many(&s, "010", "dc1", "r3", "10.1.3.1:8080", NULL);
	pick_many(&s, "000", NULL, "r3", "pub-10.1.3.1:8080", NULL);
	/* A node in a single-rack data center. */
	pick_many(&s, "000", NULL, NULL, "10.3.1.2:8080", NULL);
	pick_many(&s, "100", NULL, NULL, "10.3.1.2:8080", NULL);
}

/*
 * dataNode alone (or with its data center only) in a data center of several racks:
 * the pick must still always succeed with that node first. Smallest case: two nodes
 * in two racks of one DC, "000", dataNode = the first.
 */
static void test_constraint_data_node_alone(void **state)
{
	struct nodeset s;

	(void)state;
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 5);
	add_node(&s, "b:1", "dc1", "r2", 5);
	pick_many(&s, "000", NULL, NULL, "a:1", NULL);
	pick_many(&s, "000", "dc1", NULL, "a:1", NULL);

	big_set(&s);
	pick_many(&s, "000", NULL, NULL, "10.1.3.1:8080", NULL);
	pick_many(&s, "000", NULL, NULL, "pub-10.2.2.1:8080", NULL);
	pick_many(&s, "001", NULL, NULL, "10.1.2.2:8080", NULL);
	pick_many(&s, "010", NULL, NULL, "10.1.1.2:8080", NULL);
	pick_many(&s, "000", "dc1", NULL, "10.1.1.2:8080", NULL);
}

/* Same rack: a node with 9 free slots is picked ~9x as often as one with 1. */
static void test_weighting_nodes(void **state)
{
	struct nodeset s;
	int count[2] = {0, 0};
	unsigned rs = 20240601;
	int out[4];

	(void)state;
	memset(&s, 0, sizeof(s));
	add_node(&s, "big:1", "dc1", "r1", 9);
	add_node(&s, "small:1", "dc1", "r1", 1);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(
		    growth_pick_servers(s.v, s.n, 0, NULL, NULL, NULL, &rs, out, NULL, 0), 1);
		count[out[0]]++;
	}
	print_message("9:1 in one rack: %d vs %d\n", count[0], count[1]);
	assert_true(count[1] > 0);
	assert_in_range(count[0] * 10 / count[1], 60, 130); /* ratio 6..13 */
}

/* Weighting also holds across racks and across data centers. */
static void test_weighting_racks_dcs(void **state)
{
	struct nodeset s;
	int count[4] = {0};
	unsigned rs = 7;
	int out[4];

	(void)state;
	memset(&s, 0, sizeof(s));
	add_node(&s, "big:1", "dc1", "r1", 9);
	add_node(&s, "small:1", "dc1", "r2", 1);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(
		    growth_pick_servers(s.v, s.n, 0, NULL, NULL, NULL, &rs, out, NULL, 0), 1);
		count[out[0]]++;
	}
	print_message("9:1 across racks: %d vs %d\n", count[0], count[1]);
	assert_true(count[1] > 0);
	assert_in_range(count[0] * 10 / count[1], 60, 130);

	memset(&s, 0, sizeof(s));
	memset(count, 0, sizeof(count));
	add_node(&s, "big:1", "dc1", "r1", 9);
	add_node(&s, "small:1", "dc2", "r1", 1);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(
		    growth_pick_servers(s.v, s.n, 0, NULL, NULL, NULL, &rs, out, NULL, 0), 1);
		count[out[0]]++;
	}
	print_message("9:1 across dcs: %d vs %d\n", count[0], count[1]);
	assert_true(count[1] > 0);
	assert_in_range(count[0] * 10 / count[1], 60, 130);

	/* The copy in another DC ("100"): dc2 big (9) vs dc3 small (1), main always dc1. */
	memset(&s, 0, sizeof(s));
	memset(count, 0, sizeof(count));
	add_node(&s, "main:1", "dc1", "r1", 1000);
	add_node(&s, "big:1", "dc2", "r1", 9);
	add_node(&s, "small:1", "dc3", "r1", 1);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(
		    growth_pick_servers(s.v, s.n, 100, "dc1", NULL, NULL, &rs, out, NULL, 0), 2);
		assert_int_equal(out[0], 0);
		count[out[1]]++;
	}
	print_message("9:1 for the other-DC copy: %d vs %d\n", count[1], count[2]);
	assert_true(count[2] > 0);
	assert_in_range(count[1] * 10 / count[2], 60, 130);
}

/* Same seed, same answer. */
static void test_deterministic(void **state)
{
	struct nodeset s;

	(void)state;
	big_set(&s);
	for (unsigned seed = 1; seed <= 100; seed++) {
		int a[8], b[8];
		int ra = pick(&s, "111", NULL, NULL, NULL, seed, a, NULL, 0);
		int rb = pick(&s, "111", NULL, NULL, NULL, seed, b, NULL, 0);

		assert_int_equal(ra, 4);
		assert_int_equal(rb, 4);
		assert_memory_equal(a, b, sizeof(int) * 4);
	}
}

static void expect_enospc(const struct nodeset *s, const char *placement, const char *dc,
			  const char *rack, const char *node)
{
	for (unsigned seed = 1; seed <= 50; seed++) {
		char reason[256];
		int out[32];
		int rc;

		memset(reason, 0, sizeof(reason));
		rc = pick(s, placement, dc, rack, node, seed, out, reason, sizeof(reason));
		if (rc != -ENOSPC)
			fail_msg("placement %s dc=%s rack=%s node=%s seed %u: got %d, want -ENOSPC",
				 placement, dc ? dc : "", rack ? rack : "", node ? node : "", seed,
				 rc);
		if (!reason[0])
			fail_msg("placement %s: empty reason", placement);
		/* A NULL reason is fine too. */
		rc = pick(s, placement, dc, rack, node, seed, out, NULL, 0);
		assert_int_equal(rc, -ENOSPC);
		/* A tiny buffer is NUL-terminated. */
		memset(reason, 'x', sizeof(reason));
		rc = pick(s, placement, dc, rack, node, seed, out, reason, 4);
		assert_int_equal(rc, -ENOSPC);
		assert_true(memchr(reason, '\0', 4) != NULL);
	}
}

static void test_enospc(void **state)
{
	struct nodeset s;

	(void)state;
	/* One data center, plenty of racks and servers. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 5);
	add_node(&s, "b:1", "dc1", "r1", 5);
	add_node(&s, "c:1", "dc1", "r2", 5);
	add_node(&s, "d:1", "dc1", "r3", 5);
	expect_enospc(&s, "100", NULL, NULL, NULL);
	expect_enospc(&s, "200", NULL, NULL, NULL);
	expect_enospc(&s, "110", NULL, NULL, NULL);
	/* Only two servers per rack. */
	expect_enospc(&s, "002", NULL, NULL, NULL);
	/* Four racks needed, three there. */
	expect_enospc(&s, "030", NULL, NULL, NULL);
	/* 011 works, but not in rack r2 (one server) as main rack. */
	expect_enospc(&s, "011", NULL, "r2", NULL);
	/* Unknown data center / rack / node. */
	expect_enospc(&s, "000", "nowhere", NULL, NULL);
	expect_enospc(&s, "000", NULL, "nowhere", NULL);
	expect_enospc(&s, "000", "dc1", "nowhere", NULL);
	expect_enospc(&s, "000", NULL, NULL, "nowhere:1");
	/* Node and rack that disagree. */
	expect_enospc(&s, "000", NULL, "r2", "a:1");

	/* 002 with exactly 2 servers in the only rack. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 5);
	add_node(&s, "b:1", "dc1", "r1", 5);
	expect_enospc(&s, "002", NULL, NULL, NULL);
	expect_enospc(&s, "010", NULL, NULL, NULL);

	/* 002: three servers in the rack but one of them full. */
	add_node(&s, "c:1", "dc1", "r1", 0);
	expect_enospc(&s, "002", NULL, NULL, NULL);

	/* Two DCs: 200 impossible; 100 impossible when the other DC is full. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 5);
	add_node(&s, "b:1", "dc2", "r1", 5);
	expect_enospc(&s, "200", NULL, NULL, NULL);
	s.v[1].free_slots = 0;
	expect_enospc(&s, "100", NULL, NULL, NULL);
	/* The dataNode has no free slot. */
	expect_enospc(&s, "000", NULL, NULL, "b:1");

	/* All slots full. */
	memset(&s, 0, sizeof(s));
	add_node(&s, "a:1", "dc1", "r1", 0);
	add_node(&s, "b:1", "dc1", "r2", 0);
	add_node(&s, "c:1", "dc2", "r1", 0);
	expect_enospc(&s, "000", NULL, NULL, NULL);
	expect_enospc(&s, "000", "dc1", NULL, NULL);
	expect_enospc(&s, "001", NULL, NULL, NULL);

	/* No nodes at all. */
	memset(&s, 0, sizeof(s));
	expect_enospc(&s, "000", NULL, NULL, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_count_for),
	    cmocka_unit_test(test_placements_exact),
	    cmocka_unit_test(test_placement_000_coverage),
	    cmocka_unit_test(test_placements_tight),
	    cmocka_unit_test(test_constraint_data_center),
	    cmocka_unit_test(test_constraint_rack),
	    cmocka_unit_test(test_constraint_data_node_with_rack),
	    cmocka_unit_test(test_constraint_data_node_alone),
	    cmocka_unit_test(test_weighting_nodes),
	    cmocka_unit_test(test_weighting_racks_dcs),
	    cmocka_unit_test(test_deterministic),
	    cmocka_unit_test(test_enospc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
