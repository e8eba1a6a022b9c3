/*
 * test_topology: the master's cluster view fed by hand-built heartbeats at injected
 * times: lookups, dead nodes, full lists and deltas, writable picks and layout counts,
 * capacity, collections, the /dir/status and /vol/status JSON, placement strings.
 *
 * topology_pick_for_write draws from a state seeded by time(NULL) that cannot be
 * injected, so pick tests assert properties that hold for every draw, and "every
 * writable volume gets picked" over PICKS draws (miss odds per volume < 1e-30).
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

#include "cluster/master/topology.h"

#define SEC	 1000000000ull
#define PULSE	 (5 * SEC)
#define T0	 (1000000 * SEC)
#define LIMIT	 1000
#define PICKS	 1000
#define MAX_VOLS 32

static uint8_t rp_of(const char *s)
{
	uint8_t rp = 0;

	assert_int_equal(placement_parse(s, &rp), 0);
	return rp;
}

static struct ttl ttl_of(const char *s)
{
	struct ttl t = {0, 0};

	assert_int_equal(ttl_parse(s, &t), 0);
	return t;
}

static struct hb_volume vol(uint32_t id, const char *coll, const char *rp, const char *ttl,
			    uint64_t size)
{
	struct hb_volume v;
	struct ttl t = ttl_of(ttl);

	memset(&v, 0, sizeof(v));
	v.id = id;
	snprintf(v.collection, sizeof(v.collection), "%s", coll);
	v.replica_placement = rp_of(rp);
	v.ttl = (uint32_t)t.count << 8 | t.unit;
	v.size = size;
	v.version = 3;
	v.file_count = size / 10;
	v.delete_count = id;
	v.deleted_bytes = id * 7;
	return v;
}

static struct hb_volume ro(struct hb_volume v)
{
	v.read_only = true;
	return v;
}

static struct heartbeat mkhb(const char *ip, uint32_t port, const char *dc, const char *rack,
			     uint32_t max)
{
	struct heartbeat hb;

	memset(&hb, 0, sizeof(hb));
	snprintf(hb.ip, sizeof(hb.ip), "%s", ip);
	hb.port = port;
	snprintf(hb.data_center, sizeof(hb.data_center), "%s", dc);
	snprintf(hb.rack, sizeof(hb.rack), "%s", rack);
	hb.max_volume_count = max;
	return hb;
}

/* A heartbeat with a full volume list. */
static void send_full(struct topology *t, const char *ip, const char *dc, const char *rack,
		      uint32_t max, struct hb_volume *vols, size_t n, uint64_t now)
{
	struct heartbeat hb = mkhb(ip, 8080, dc, rack, max);

	hb.volumes = vols;
	hb.n_volumes = n;
	hb.has_no_volumes = n == 0;
	assert_int_equal(topology_apply_heartbeat(t, &hb, now), 0);
}

/* A heartbeat with neither list nor deltas (a plain pulse). */
static void send_pulse(struct topology *t, const char *ip, const char *dc, const char *rack,
		       uint32_t max, uint64_t now)
{
	struct heartbeat hb = mkhb(ip, 8080, dc, rack, max);

	assert_int_equal(topology_apply_heartbeat(t, &hb, now), 0);
}

#define A	"10.0.0.1"
#define B	"10.0.0.2"
#define C	"10.0.0.3"
#define D	"10.0.0.4"
#define E	"10.0.0.5"
#define URL(ip) ip ":8080"

/*
 * The fixture (volume size limit 1000):
 *   dc1/rackA: A (max 10, public url pubA:80), B (max 10)
 *   dc1/rackB: C (max 5)
 *   dc2/rackA: D (max 8)      (same rack name as in dc1 on purpose)
 *   dc2/rackC: E (max 3)
 * Volumes:
 *   1  ""/000        A                 writable
 *   2  ""/001        A (200) B (150)   writable, size 200
 *   3  ""/010        A C               writable
 *   4  ""/100        B D               writable
 *   5  pics/000      C                 writable
 *   6  ""/000/3d     D                 writable
 *   7  ""/200        A D               2 of 3 copies: not writable
 *   8  ""/000        E read-only       not writable
 *   9  ""/000        E size 1000       at the limit: not writable
 *   10 ""/000        A B               over-replicated: not writable
 *   11 ""/001        D                 under-replicated: not writable
 *   12 ""/000        E size 500        writable
 *   13 ""/001        A, B read-only    one replica read-only: not writable
 *   14 ""/001        A (999) B (1000)  one replica at the limit: not writable
 * Free: A 10-7=3, B 10-5=5, C 5-2=3, D 8-4=4, E 3-3=0: 15 of 36.
 */
static struct topology *fixture(uint64_t now)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume va[] = {vol(1, "", "000", "", 100), vol(2, "", "001", "", 200),
				 vol(3, "", "010", "", 300), vol(7, "", "200", "", 10),
				 vol(10, "", "000", "", 10), vol(13, "", "001", "", 10),
				 vol(14, "", "001", "", 999)};
	struct hb_volume vb[] = {vol(2, "", "001", "", 150), vol(4, "", "100", "", 400),
				 vol(10, "", "000", "", 10), ro(vol(13, "", "001", "", 10)),
				 vol(14, "", "001", "", 1000)};
	struct hb_volume vc[] = {vol(3, "", "010", "", 300), vol(5, "pics", "000", "", 500)};
	struct hb_volume vd[] = {vol(4, "", "100", "", 400), vol(6, "", "000", "3d", 600),
				 vol(7, "", "200", "", 10), vol(11, "", "001", "", 10)};
	struct hb_volume ve[] = {ro(vol(8, "", "000", "", 10)), vol(9, "", "000", "", 1000),
				 vol(12, "", "000", "", 500)};
	struct heartbeat hb = mkhb(A, 8080, "dc1", "rackA", 10);

	assert_non_null(t);
	snprintf(hb.public_url, sizeof(hb.public_url), "pubA:80");
	hb.volumes = va;
	hb.n_volumes = sizeof(va) / sizeof(va[0]);
	hb.max_file_key = 777;
	assert_int_equal(topology_apply_heartbeat(t, &hb, now), 0);
	send_full(t, B, "dc1", "rackA", 10, vb, sizeof(vb) / sizeof(vb[0]), now);
	send_full(t, C, "dc1", "rackB", 5, vc, sizeof(vc) / sizeof(vc[0]), now);
	send_full(t, D, "dc2", "rackA", 8, vd, sizeof(vd) / sizeof(vd[0]), now);
	send_full(t, E, "dc2", "rackC", 3, ve, sizeof(ve) / sizeof(ve[0]), now);
	return t;
}

/* The set of volume ids pick_for_write returns over PICKS draws, sorted. */
static int picks(struct topology *t, const struct topo_filter *f, uint64_t now, uint32_t *ids)
{
	int n = 0;

	for (int i = 0; i < PICKS; i++) {
		struct topo_volume_view v;
		bool seen = false;

		memset(&v, 0xa5, sizeof(v));
		if (!topology_pick_for_write(t, f, now, &v))
			continue;
		for (int k = 0; k < n && !seen; k++)
			seen = ids[k] == v.id;
		if (!seen) {
			assert_true(n < MAX_VOLS);
			ids[n++] = v.id;
		}
	}
	for (int i = 1; i < n; i++)
		for (int k = i; k > 0 && ids[k - 1] > ids[k]; k--) {
			uint32_t x = ids[k];

			ids[k] = ids[k - 1];
			ids[k - 1] = x;
		}
	return n;
}

/* Asserts that picks over f give exactly the ids of want (sorted, 0-terminated). */
static void expect_picks(struct topology *t, const struct topo_filter *f, uint64_t now,
			 const uint32_t *want)
{
	uint32_t got[MAX_VOLS];
	int n = picks(t, f, now, got), nw = 0;
	bool ok;

	while (want[nw])
		nw++;
	ok = n == nw;
	for (int i = 0; ok && i < n; i++)
		ok = got[i] == want[i];
	if (!ok) {
		print_error("filter coll=%s rp=%u dc=%s rack=%s node=%s: got {",
			    f->collection ? f->collection : "(null)", f->replica_placement,
			    f->data_center ? f->data_center : "", f->rack ? f->rack : "",
			    f->data_node ? f->data_node : "");
		for (int i = 0; i < n; i++)
			print_error(" %u", got[i]);
		print_error(" } want {");
		for (int i = 0; i < nw; i++)
			print_error(" %u", want[i]);
		print_error(" }\n");
	}
	assert_true(ok);
}

static struct topo_filter filt(const char *coll, const char *rp, const char *ttl)
{
	struct topo_filter f;

	memset(&f, 0, sizeof(f));
	f.collection = coll;
	f.replica_placement = rp_of(rp);
	f.ttl = ttl_of(ttl);
	return f;
}

static const struct topo_location *find_loc(const struct topo_volume_view *v, const char *url)
{
	for (int i = 0; i < v->n_locations; i++)
		if (!strcmp(v->locations[i].url, url))
			return &v->locations[i];
	return NULL;
}

/* Asserts that vid's live locations are exactly the urls given (NULL-terminated). */
static void expect_locations(struct topology *t, uint32_t vid, uint64_t now, ...)
{
	struct topo_volume_view v;
	va_list ap;
	const char *url;
	int n = 0;
	bool found = topology_lookup(t, vid, now, &v);

	va_start(ap, now);
	while ((url = va_arg(ap, const char *)) != NULL) {
		if (!found || !find_loc(&v, url))
			fail_msg("volume %u: %s not among its %d locations", vid, url,
				 found ? v.n_locations : 0);
		n++;
	}
	va_end(ap);
	if (n == 0) {
		if (found)
			fail_msg("volume %u: found with %d locations, want none", vid,
				 v.n_locations);
		return;
	}
	assert_true(found);
	assert_int_equal(v.n_locations, n);
	assert_int_equal(v.id, vid);
}

static void test_lookup(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_volume_view v;
	const struct topo_location *l;

	(void)state;
	expect_locations(t, 1, T0, URL(A), NULL);
	expect_locations(t, 2, T0, URL(A), URL(B), NULL);
	expect_locations(t, 3, T0, URL(A), URL(C), NULL);
	expect_locations(t, 4, T0, URL(B), URL(D), NULL);
	expect_locations(t, 7, T0, URL(A), URL(D), NULL);
	expect_locations(t, 99, T0, NULL);
	expect_locations(t, 0, T0, NULL);

	assert_true(topology_lookup(t, 2, T0, &v));
	assert_int_equal(v.id, 2);
	assert_string_equal(v.collection, "");
	assert_int_equal(v.replica_placement, 1);
	assert_int_equal(v.size, 200); /* largest over replicas */
	assert_false(v.read_only);
	l = find_loc(&v, URL(A));
	assert_non_null(l);
	assert_string_equal(l->public_url, "pubA:80");
	assert_string_equal(l->data_center, "dc1");
	assert_string_equal(l->rack, "rackA");
	l = find_loc(&v, URL(B));
	assert_non_null(l);
	assert_string_equal(l->public_url, URL(B)); /* defaults to the url */

	assert_true(topology_lookup(t, 4, T0, &v));
	l = find_loc(&v, URL(D));
	assert_string_equal(l->data_center, "dc2");
	assert_string_equal(l->rack, "rackA");

	assert_true(topology_lookup(t, 6, T0, &v));
	assert_int_equal(v.ttl.count, 3);
	assert_int_equal(v.ttl.unit, ttl_of("3d").unit);
	assert_int_equal(v.file_count, 60);

	assert_true(topology_lookup(t, 5, T0, &v));
	assert_string_equal(v.collection, "pics");

	assert_true(topology_lookup(t, 13, T0, &v));
	assert_true(v.read_only); /* one replica read-only is enough */

	topology_free(t);
}

static void test_default_names_and_invalid(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume v1[] = {vol(1, "", "000", "", 0)};
	struct heartbeat hb = mkhb("", 8080, "dc1", "r1", 5);
	struct topo_volume_view v;
	int nodes, max, free_slots;

	(void)state;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0), -EINVAL);
	hb = mkhb("10.0.0.9", 0, "dc1", "r1", 5);
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0), -EINVAL);
	hb = mkhb("10.0.0.9", 65536, "dc1", "r1", 5);
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0), -EINVAL);
	topology_capacity(t, T0, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 0);

	send_full(t, "10.0.0.9", "", "", 5, v1, 1, T0);
	assert_true(topology_lookup(t, 1, T0, &v));
	assert_int_equal(v.n_locations, 1);
	assert_string_equal(v.locations[0].url, "10.0.0.9:8080");
	assert_string_equal(v.locations[0].public_url, "10.0.0.9:8080");
	assert_string_equal(v.locations[0].data_center, "DefaultDataCenter");
	assert_string_equal(v.locations[0].rack, "DefaultRack");
	assert_true(topology_has_data_center(t, "DefaultDataCenter", T0));

	/* The node moves to a named rack: the next heartbeat says so. */
	send_pulse(t, "10.0.0.9", "dcX", "rX", 5, T0 + SEC);
	assert_true(topology_lookup(t, 1, T0 + SEC, &v));
	assert_string_equal(v.locations[0].data_center, "dcX");
	assert_string_equal(v.locations[0].rack, "rX");
	topology_free(t);
}

/* Asserts the live node urls are exactly those given (NULL-terminated). */
static void expect_nodes(struct topology *t, uint64_t now, ...)
{
	struct topo_node_view *nv = NULL;
	int n = topology_nodes(t, now, &nv), want = 0;
	va_list ap;
	const char *url;

	assert_true(n >= 0);
	va_start(ap, now);
	while ((url = va_arg(ap, const char *)) != NULL) {
		bool found = false;

		for (int i = 0; i < n && !found; i++)
			found = !strcmp(nv[i].url, url);
		if (!found)
			fail_msg("node %s not live", url);
		want++;
	}
	va_end(ap);
	assert_int_equal(n, want);
	free(nv);
}

static bool status_has_url(json_t *status, const char *url)
{
	size_t i, j, k;
	json_t *dc, *rack, *dn;

	json_array_foreach(json_object_get(status, "DataCenters"), i, dc)
	{
		json_array_foreach(json_object_get(dc, "Racks"), j, rack)
		{
			json_array_foreach(json_object_get(rack, "DataNodes"), k, dn)
			{
				if (!strcmp(json_string_value(json_object_get(dn, "Url")), url))
					return true;
			}
		}
	}
	return false;
}

static bool volstatus_has_url(json_t *status, const char *url)
{
	const char *k1, *k2;
	json_t *dc, *rack;

	json_object_foreach(json_object_get(status, "DataCenters"), k1, dc)
	{
		json_object_foreach(dc, k2, rack)
		{
			if (json_object_get(rack, url))
				return true;
		}
	}
	return false;
}

static void test_dead_node(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_filter f001 = filt("", "001", ""), f100 = filt("", "100", "");
	uint64_t t2 = T0 + 2 * PULSE, dead = T0 + 3 * PULSE + 1;
	int nodes, max, free_slots, w, c;
	json_t *js;

	(void)state;
	/* Everyone but B pulses at T0 + 2 pulses. */
	send_pulse(t, A, "dc1", "rackA", 10, t2);
	send_pulse(t, C, "dc1", "rackB", 5, t2);
	send_pulse(t, D, "dc2", "rackA", 8, t2);
	send_pulse(t, E, "dc2", "rackC", 3, t2);

	/* Just under 3 pulses: B is still there. */
	expect_locations(t, 2, T0 + 3 * PULSE - 1, URL(A), URL(B), NULL);
	expect_picks(t, &f001, T0 + 3 * PULSE - 1, (const uint32_t[]){2, 0});

	/* 3 pulses without a word: B is gone everywhere. */
	expect_locations(t, 2, dead, URL(A), NULL);
	expect_locations(t, 4, dead, URL(D), NULL);
	expect_picks(t, &f001, dead, (const uint32_t[]){0});
	expect_picks(t, &f100, dead, (const uint32_t[]){0});
	topology_layout_counts(t, &f001, dead, &w, &c);
	assert_int_equal(w, 0);
	expect_nodes(t, dead, URL(A), URL(C), URL(D), URL(E), NULL);
	topology_capacity(t, dead, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 4);
	assert_int_equal(max, 26);
	assert_int_equal(free_slots, 10);
	js = topology_status_json(t, dead);
	assert_false(status_has_url(js, URL(B)));
	assert_true(status_has_url(js, URL(A)));
	assert_int_equal(json_integer_value(json_object_get(js, "Max")), 26);
	json_decref(js);
	js = topology_volume_status_json(t, dead);
	assert_false(volstatus_has_url(js, URL(B)));
	assert_true(volstatus_has_url(js, URL(A)));
	json_decref(js);

	/* A whole data center dying. */
	assert_true(topology_has_data_center(t, "dc2", dead));
	assert_false(topology_has_data_center(t, "dc2", t2 + 3 * PULSE));

	/* B's next heartbeat (a plain pulse, no list) brings it back with its volumes. */
	send_pulse(t, B, "dc1", "rackA", 10, dead);
	expect_locations(t, 2, dead, URL(A), URL(B), NULL);
	expect_locations(t, 4, dead, URL(B), URL(D), NULL);
	expect_picks(t, &f001, dead, (const uint32_t[]){2, 0});
	expect_picks(t, &f100, dead, (const uint32_t[]){4, 0});
	expect_nodes(t, dead, URL(A), URL(B), URL(C), URL(D), URL(E), NULL);
	js = topology_status_json(t, dead);
	assert_true(status_has_url(js, URL(B)));
	json_decref(js);

	/* Everyone silent: nothing left. */
	expect_nodes(t, dead + 3 * PULSE, NULL);
	expect_locations(t, 1, dead + 3 * PULSE, NULL);
	topology_free(t);
}

static void test_full_list_replaces(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume l1[] = {vol(1, "", "000", "", 10), vol(2, "", "000", "", 20),
				 vol(3, "", "000", "", 30)};
	struct hb_volume l2[] = {vol(2, "", "000", "", 500), vol(9, "c", "000", "", 90)};
	struct hb_volume l3[] = {ro(vol(2, "", "000", "", 600))};
	struct topo_filter f = filt("", "000", "");
	struct topo_volume_view v;

	(void)state;
	send_full(t, A, "dc1", "r1", 10, l1, 3, T0);
	expect_locations(t, 1, T0, URL(A), NULL);
	expect_locations(t, 3, T0, URL(A), NULL);
	expect_picks(t, &f, T0, (const uint32_t[]){1, 2, 3, 0});

	send_full(t, A, "dc1", "r1", 10, l2, 2, T0 + 1);
	expect_locations(t, 1, T0 + 1, NULL);
	expect_locations(t, 3, T0 + 1, NULL);
	expect_locations(t, 9, T0 + 1, URL(A), NULL);
	assert_true(topology_lookup(t, 2, T0 + 1, &v));
	assert_int_equal(v.size, 500);
	assert_true(topology_lookup(t, 9, T0 + 1, &v));
	assert_string_equal(v.collection, "c");
	expect_picks(t, &f, T0 + 1, (const uint32_t[]){2, 0});

	/* A plain pulse keeps the list. */
	send_pulse(t, A, "dc1", "r1", 10, T0 + 2);
	expect_locations(t, 2, T0 + 2, URL(A), NULL);
	expect_locations(t, 9, T0 + 2, URL(A), NULL);

	/* The full list also updates size / read-only. */
	send_full(t, A, "dc1", "r1", 10, l3, 1, T0 + 3);
	assert_true(topology_lookup(t, 2, T0 + 3, &v));
	assert_int_equal(v.size, 600);
	assert_true(v.read_only);
	expect_picks(t, &f, T0 + 3, (const uint32_t[]){0});

	/* has_no_volumes: an empty full list. */
	send_full(t, A, "dc1", "r1", 10, NULL, 0, T0 + 4);
	expect_locations(t, 2, T0 + 4, NULL);
	expect_locations(t, 9, T0 + 4, NULL);
	expect_nodes(t, T0 + 4, URL(A), NULL);
	topology_free(t);
}

static void test_deltas(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume l1[] = {vol(1, "", "000", "", 300)};
	struct hb_volume nv[] = {vol(5, "pics", "001", "1h", 0), vol(1, "other", "010", "", 0)};
	struct hb_volume dv[] = {vol(1, "", "000", "", 0), vol(42, "", "000", "", 0)};
	struct heartbeat hb;
	struct topo_volume_view v;

	(void)state;
	send_full(t, A, "dc1", "r1", 10, l1, 1, T0);
	send_full(t, B, "dc1", "r1", 10, NULL, 0, T0);

	hb = mkhb(A, 8080, "dc1", "r1", 10);
	hb.new_volumes = nv;
	hb.n_new = 2;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 1), 0);
	expect_locations(t, 5, T0 + 1, URL(A), NULL);
	assert_true(topology_lookup(t, 5, T0 + 1, &v));
	assert_string_equal(v.collection, "pics");
	assert_int_equal(v.replica_placement, 1);
	assert_int_equal(v.ttl.count, 1);
	assert_int_equal(v.ttl.unit, ttl_of("1h").unit);
	/* A "new" volume the node already had keeps what the full list said. */
	assert_true(topology_lookup(t, 1, T0 + 1, &v));
	assert_int_equal(v.size, 300);
	assert_string_equal(v.collection, "");
	assert_int_equal(v.replica_placement, 0);

	/* The same new volume on B: two locations, writable as 001/1h in pics. */
	hb = mkhb(B, 8080, "dc1", "r1", 10);
	hb.new_volumes = nv;
	hb.n_new = 1;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 2), 0);
	expect_locations(t, 5, T0 + 2, URL(A), URL(B), NULL);
	{
		struct topo_filter f = filt("pics", "001", "1h");

		expect_picks(t, &f, T0 + 2, (const uint32_t[]){5, 0});
	}

	/* Deleted deltas; an unknown id is ignored. */
	hb = mkhb(A, 8080, "dc1", "r1", 10);
	hb.deleted_volumes = dv;
	hb.n_deleted = 2;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 3), 0);
	expect_locations(t, 1, T0 + 3, NULL);
	expect_locations(t, 5, T0 + 3, URL(A), URL(B), NULL);
	hb.deleted_volumes = nv;
	hb.n_deleted = 1;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 4), 0);
	expect_locations(t, 5, T0 + 4, URL(B), NULL);
	topology_free(t);
}

static void test_max_ids(void **state)
{
	struct topology *t = fixture(T0);
	struct heartbeat hb = mkhb(B, 8080, "dc1", "rackA", 10);

	(void)state;
	assert_int_equal(topology_max_volume_id(t), 14);
	assert_int_equal(topology_max_file_key(t), 777);
	hb.max_file_key = 100; /* lower: no effect */
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 1), 0);
	assert_int_equal(topology_max_file_key(t), 777);
	hb.max_file_key = 1ull << 40;
	assert_int_equal(topology_apply_heartbeat(t, &hb, T0 + 2), 0);
	assert_int_equal(topology_max_file_key(t), 1ull << 40);
	assert_int_equal(topology_volume_size_limit(t), LIMIT);
	topology_free(t);
}

static void test_pick_for_write(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_filter f;
	struct topo_volume_view v;

	(void)state;
	f = filt("", "000", "");
	expect_picks(t, &f, T0, (const uint32_t[]){1, 12, 0});
	f.collection = NULL; /* NULL = "" */
	expect_picks(t, &f, T0, (const uint32_t[]){1, 12, 0});
	f = filt("", "001", "");
	expect_picks(t, &f, T0, (const uint32_t[]){2, 0});
	f = filt("", "010", "");
	expect_picks(t, &f, T0, (const uint32_t[]){3, 0});
	f = filt("", "100", "");
	expect_picks(t, &f, T0, (const uint32_t[]){4, 0});
	f = filt("pics", "000", "");
	expect_picks(t, &f, T0, (const uint32_t[]){5, 0});
	f = filt("", "000", "3d");
	expect_picks(t, &f, T0, (const uint32_t[]){6, 0});
	f = filt("", "000", "4d");
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f = filt("", "200", "");
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f = filt("nope", "000", "");
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f = filt("pics", "001", "");
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f = filt("", "002", "");
	expect_picks(t, &f, T0, (const uint32_t[]){0});

	/* The returned view is complete. */
	f = filt("", "001", "");
	assert_true(topology_pick_for_write(t, &f, T0, &v));
	assert_int_equal(v.id, 2);
	assert_int_equal(v.n_locations, 2);
	assert_non_null(find_loc(&v, URL(A)));
	assert_non_null(find_loc(&v, URL(B)));
	assert_int_equal(v.replica_placement, 1);

	/* Data center / rack / node filters: some replica must match them all. */
	f = filt("", "000", "");
	f.data_center = "dc2";
	expect_picks(t, &f, T0, (const uint32_t[]){12, 0});
	f.data_center = "dc1";
	expect_picks(t, &f, T0, (const uint32_t[]){1, 0});
	f.data_center = "dc3";
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f.data_center = "";
	f.rack = "rackC";
	expect_picks(t, &f, T0, (const uint32_t[]){12, 0});
	f.rack = "rackA";
	expect_picks(t, &f, T0, (const uint32_t[]){1, 0});
	f.rack = NULL;
	f.data_node = URL(E);
	expect_picks(t, &f, T0, (const uint32_t[]){12, 0});
	f.data_node = "pubA:80"; /* public url matches too */
	expect_picks(t, &f, T0, (const uint32_t[]){1, 0});
	f.data_node = URL(A);
	expect_picks(t, &f, T0, (const uint32_t[]){1, 0});
	f.data_node = "10.9.9.9:8080";
	expect_picks(t, &f, T0, (const uint32_t[]){0});

	f = filt("", "100", "");
	f.data_center = "dc2";
	expect_picks(t, &f, T0, (const uint32_t[]){4, 0});
	f.rack = "rackA"; /* D is dc2/rackA */
	expect_picks(t, &f, T0, (const uint32_t[]){4, 0});
	f.rack = "rackB"; /* dc2 has no rackB replica of 4 */
	expect_picks(t, &f, T0, (const uint32_t[]){0});
	f.data_center = "dc1";
	f.rack = "rackA"; /* B */
	expect_picks(t, &f, T0, (const uint32_t[]){4, 0});
	f.data_node = URL(B);
	expect_picks(t, &f, T0, (const uint32_t[]){4, 0});
	f.data_node = URL(D); /* D is not in dc1 */
	expect_picks(t, &f, T0, (const uint32_t[]){0});

	/* Vacuuming volumes are not writable, until vacuuming ends. */
	f = filt("", "000", "");
	topology_set_vacuuming(t, 12, true);
	topology_set_vacuuming(t, 12, true);
	expect_picks(t, &f, T0, (const uint32_t[]){1, 0});
	topology_set_vacuuming(t, 12, false);
	expect_picks(t, &f, T0, (const uint32_t[]){1, 12, 0});
	topology_set_vacuuming(t, 99, false); /* unknown: harmless */
	topology_free(t);
}

/* Many writable volumes: each gets picked, never an unwritable one. */
static void test_pick_spread(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume l[12];
	struct topo_filter f = filt("c", "000", "");

	(void)state;
	for (uint32_t i = 0; i < 12; i++)
		l[i] = vol(i + 1, "c", "000", "", i % 3 == 0 ? LIMIT : 100);
	send_full(t, A, "dc1", "r1", 20, l, 12, T0);
	expect_picks(t, &f, T0, (const uint32_t[]){2, 3, 5, 6, 8, 9, 11, 12, 0});
	topology_free(t);
}

/* Picks are weighted by room left: size 0 vs size 900 of 1000 is ~10:1. */
static void test_pick_weighting(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume l[] = {vol(1, "", "000", "", 0), vol(2, "", "000", "", 900)};
	struct topo_filter f = filt("", "000", "");
	int count[3] = {0, 0, 0};

	(void)state;
	send_full(t, A, "dc1", "r1", 20, l, 2, T0);
	for (int i = 0; i < 20000; i++) {
		struct topo_volume_view v;

		assert_true(topology_pick_for_write(t, &f, T0, &v));
		assert_in_range(v.id, 1, 2);
		count[v.id]++;
	}
	print_message("room 1000:100 -> picks %d:%d\n", count[1], count[2]);
	assert_true(count[2] > 0);
	assert_in_range(count[1] * 10 / count[2], 60, 160);
	topology_free(t);
}

static void test_layout_counts(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	struct hb_volume l[] = {
	    vol(1, "", "000", "", 0),	   vol(2, "", "000", "", 899),	vol(3, "", "000", "", 901),
	    vol(4, "", "000", "", 950),	   vol(5, "", "000", "", 999),	vol(6, "", "000", "", 1000),
	    ro(vol(7, "", "000", "", 10)), vol(8, "x", "000", "", 950), vol(9, "", "001", "", 950)};
	struct topo_filter f = filt("", "000", "");
	int w = -1, c = -1;

	(void)state;
	send_full(t, A, "dc1", "r1", 20, l, sizeof(l) / sizeof(l[0]), T0);
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 5);
	assert_int_equal(c, 3);
	topology_set_vacuuming(t, 4, true);
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 4);
	assert_int_equal(c, 2);
	f.data_center = "dc2";
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 0);
	assert_int_equal(c, 0);
	f = filt("x", "000", "");
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 1);
	assert_int_equal(c, 1);
	f = filt("", "001", ""); /* one location of two */
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 0);
	assert_int_equal(c, 0);
	f = filt("none", "000", "");
	topology_layout_counts(t, &f, T0, &w, &c);
	assert_int_equal(w, 0);
	assert_int_equal(c, 0);
	/* Everything dead. */
	f = filt("", "000", "");
	topology_layout_counts(t, &f, T0 + 10 * PULSE, &w, &c);
	assert_int_equal(w, 0);
	topology_free(t);
}

static void test_add_volume(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_filter f = filt("", "001", "");
	struct topo_volume_view v;
	int nodes, max, free_slots;

	(void)state;
	topology_add_volume(t, URL(C), 50, "", rp_of("001"), ttl_of(""), T0);
	expect_locations(t, 50, T0, URL(C), NULL);
	expect_picks(t, &f, T0, (const uint32_t[]){2, 0}); /* one copy of two yet */
	topology_add_volume(t, URL(E), 50, "", rp_of("001"), ttl_of(""), T0);
	expect_locations(t, 50, T0, URL(C), URL(E), NULL);
	expect_picks(t, &f, T0, (const uint32_t[]){2, 50, 0});
	assert_int_equal(topology_max_volume_id(t), 50);
	/* Registered volumes take slots. */
	topology_capacity(t, T0, &nodes, &max, &free_slots);
	assert_int_equal(free_slots, 15 - 1); /* C 3 -> 2; E was full already */

	topology_add_volume(t, URL(A), 51, "docs", rp_of("000"), ttl_of("5m"), T0);
	assert_true(topology_lookup(t, 51, T0, &v));
	assert_string_equal(v.collection, "docs");
	assert_int_equal(v.ttl.count, 5);
	f = filt("docs", "000", "5m");
	expect_picks(t, &f, T0, (const uint32_t[]){51, 0});
	assert_true(topology_has_collection(t, "docs"));

	/* Unknown node: nothing to attach to, no crash. */
	topology_add_volume(t, "10.9.9.9:1", 52, "", 0, ttl_of(""), T0);
	expect_locations(t, 52, T0, NULL);
	topology_free(t);
}

static void test_collections(void **state)
{
	struct topology *t = fixture(T0);
	struct hb_volume l[] = {vol(20, "pics", "001", "", 0), vol(21, "docs", "000", "", 0)};
	int removed;

	(void)state;
	send_full(t, "10.0.0.6", "dc1", "rackB", 10, l, 2, T0);
	topology_add_volume(t, URL(C), 20, "pics", rp_of("001"), ttl_of(""), T0);
	assert_true(topology_has_collection(t, "pics"));
	assert_true(topology_has_collection(t, "docs"));
	assert_false(topology_has_collection(t, "nope"));
	assert_false(topology_has_collection(t, "pic"));

	removed = topology_delete_collection(t, "pics");
	assert_true(removed >= 2); /* volumes 5 and 20 */
	assert_false(topology_has_collection(t, "pics"));
	expect_locations(t, 5, T0, NULL);
	expect_locations(t, 20, T0, NULL);
	expect_locations(t, 21, T0, "10.0.0.6:8080", NULL);
	expect_locations(t, 2, T0, URL(A), URL(B), NULL);
	assert_int_equal(topology_delete_collection(t, "pics"), 0);
	assert_int_equal(topology_delete_collection(t, "nope"), 0);
	topology_free(t);
}

static void test_capacity_and_nodes(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_node_view *nv = NULL;
	struct hb_volume l[] = {vol(30, "", "000", "", 0), vol(31, "", "000", "", 0),
				vol(32, "", "000", "", 0)};
	int nodes, max, free_slots, n;

	(void)state;
	topology_capacity(t, T0, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 5);
	assert_int_equal(max, 36);
	assert_int_equal(free_slots, 15);

	n = topology_nodes(t, T0, &nv);
	assert_int_equal(n, 5);
	for (int i = 0; i < n; i++) {
		static const struct {
			const char *url, *dc, *rack;
			int free_slots;
		} want[] = {{URL(A), "dc1", "rackA", 3},
			    {URL(B), "dc1", "rackA", 5},
			    {URL(C), "dc1", "rackB", 3},
			    {URL(D), "dc2", "rackA", 4},
			    {URL(E), "dc2", "rackC", 0}};
		bool found = false;

		for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
			if (strcmp(nv[i].url, want[k].url))
				continue;
			found = true;
			assert_string_equal(nv[i].data_center, want[k].dc);
			assert_string_equal(nv[i].rack, want[k].rack);
			assert_int_equal(nv[i].free_slots, want[k].free_slots);
		}
		assert_true(found);
		if (!strcmp(nv[i].url, URL(A)))
			assert_string_equal(nv[i].public_url, "pubA:80");
	}
	free(nv);

	assert_true(topology_has_data_center(t, "dc1", T0));
	assert_true(topology_has_data_center(t, "dc2", T0));
	assert_false(topology_has_data_center(t, "dc3", T0));

	/* More volumes than slots: free is 0, never negative. */
	send_full(t, "10.0.0.6", "dc3", "r1", 1, l, 3, T0);
	topology_capacity(t, T0, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 6);
	assert_int_equal(max, 37);
	assert_int_equal(free_slots, 15);
	n = topology_nodes(t, T0, &nv);
	for (int i = 0; i < n; i++)
		if (!strcmp(nv[i].url, "10.0.0.6:8080"))
			assert_int_equal(nv[i].free_slots, 0);
	free(nv);

	/* Capacity changes with the next heartbeat. */
	send_pulse(t, "10.0.0.6", "dc3", "r1", 5, T0 + 1);
	topology_capacity(t, T0 + 1, &nodes, &max, &free_slots);
	assert_int_equal(max, 41);
	assert_int_equal(free_slots, 17);

	/* Graceful stop. */
	topology_remove_node(t, "10.0.0.6:8080");
	topology_remove_node(t, "10.0.0.6:8080");
	topology_capacity(t, T0 + 1, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 5);
	assert_int_equal(max, 36);
	expect_locations(t, 30, T0 + 1, NULL);
	topology_free(t);
}

/*
 * heartbeat.h: max_volume_count 0 = "not reported: ... a master keeps what it knew".
 * A heartbeat without the count must not zero the node's capacity.
 */
static void test_capacity_unreported_max_kept(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	int nodes, max, free_slots;

	(void)state;
	send_full(t, A, "dc1", "r1", 8, NULL, 0, T0);
	topology_capacity(t, T0, &nodes, &max, &free_slots);
	assert_int_equal(max, 8);
	send_pulse(t, A, "dc1", "r1", 0, T0 + 1);
	topology_capacity(t, T0 + 1, &nodes, &max, &free_slots);
	assert_int_equal(nodes, 1);
	assert_int_equal(max, 8);
	assert_int_equal(free_slots, 8);
	topology_free(t);
}

static json_t *by_key(json_t *array, const char *key, const char *value)
{
	size_t i;
	json_t *e;

	json_array_foreach(array, i, e)
	{
		const char *s = json_string_value(json_object_get(e, key));

		if (s && !strcmp(s, value))
			return e;
	}
	return NULL;
}

static json_int_t int_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("\"%s\" is not an integer", key);
	return json_integer_value(v);
}

static void expect_node_json(json_t *rack, const char *url, const char *public_url, int volumes,
			     int max, int free_slots, const char *ids)
{
	json_t *dn = by_key(json_object_get(rack, "DataNodes"), "Url", url);

	if (!dn)
		fail_msg("DataNode %s missing", url);
	assert_string_equal(json_string_value(json_object_get(dn, "PublicUrl")), public_url);
	assert_int_equal(int_of(dn, "Volumes"), volumes);
	assert_int_equal(int_of(dn, "Max"), max);
	assert_int_equal(int_of(dn, "Free"), free_slots);
	assert_string_equal(json_string_value(json_object_get(dn, "VolumeIds")), ids);
}

static void expect_writables(json_t *layouts, const char *coll, const char *repl, const char *ttl,
			     const uint32_t *want)
{
	size_t i, n = 0;
	json_t *e, *layout = NULL, *w;

	json_array_foreach(layouts, i, e)
	{
		if (!strcmp(json_string_value(json_object_get(e, "collection")), coll) &&
		    !strcmp(json_string_value(json_object_get(e, "replication")), repl) &&
		    !strcmp(json_string_value(json_object_get(e, "ttl")), ttl)) {
			assert_null(layout); /* one layout per key */
			layout = e;
		}
	}
	if (!layout)
		fail_msg("layout %s/%s/%s missing", coll, repl, ttl);
	w = json_object_get(layout, "writables");
	assert_true(json_is_array(w));
	while (want[n])
		n++;
	assert_int_equal(json_array_size(w), n);
	for (size_t k = 0; k < n; k++) {
		bool found = false;

		json_array_foreach(w, i, e)
		{
			found |= json_integer_value(e) == want[k];
		}
		if (!found)
			fail_msg("layout %s/%s/%s: %u not writable", coll, repl, ttl, want[k]);
	}
}

static void test_status_json(void **state)
{
	struct topology *t = fixture(T0);
	json_t *js = topology_status_json(t, T0), *dcs, *dc1, *dc2, *rack, *layouts;

	(void)state;
	assert_non_null(js);
	assert_int_equal(int_of(js, "Max"), 36);
	assert_int_equal(int_of(js, "Free"), 15);
	dcs = json_object_get(js, "DataCenters");
	assert_true(json_is_array(dcs));
	assert_int_equal(json_array_size(dcs), 2);
	dc1 = by_key(dcs, "Id", "dc1");
	dc2 = by_key(dcs, "Id", "dc2");
	assert_non_null(dc1);
	assert_non_null(dc2);
	assert_int_equal(int_of(dc1, "Max"), 25);
	assert_int_equal(int_of(dc1, "Free"), 11);
	assert_int_equal(int_of(dc2, "Max"), 11);
	assert_int_equal(int_of(dc2, "Free"), 4);
	assert_int_equal(json_array_size(json_object_get(dc1, "Racks")), 2);
	assert_int_equal(json_array_size(json_object_get(dc2, "Racks")), 2);

	rack = by_key(json_object_get(dc1, "Racks"), "Id", "rackA");
	assert_non_null(rack);
	assert_int_equal(int_of(rack, "Max"), 20);
	assert_int_equal(int_of(rack, "Free"), 8);
	assert_int_equal(json_array_size(json_object_get(rack, "DataNodes")), 2);
	expect_node_json(rack, URL(A), "pubA:80", 7, 10, 3, "1-3 7 10 13-14");
	expect_node_json(rack, URL(B), URL(B), 5, 10, 5, "2 4 10 13-14");
	rack = by_key(json_object_get(dc1, "Racks"), "Id", "rackB");
	assert_non_null(rack);
	expect_node_json(rack, URL(C), URL(C), 2, 5, 3, "3 5");
	rack = by_key(json_object_get(dc2, "Racks"), "Id", "rackA");
	assert_non_null(rack);
	assert_int_equal(json_array_size(json_object_get(rack, "DataNodes")), 1);
	expect_node_json(rack, URL(D), URL(D), 4, 8, 4, "4 6-7 11");
	rack = by_key(json_object_get(dc2, "Racks"), "Id", "rackC");
	assert_non_null(rack);
	expect_node_json(rack, URL(E), URL(E), 3, 3, 0, "8-9 12");

	layouts = json_object_get(js, "Layouts");
	assert_true(json_is_array(layouts));
	expect_writables(layouts, "", "000", "", (const uint32_t[]){1, 12, 0});
	expect_writables(layouts, "", "001", "", (const uint32_t[]){2, 0});
	expect_writables(layouts, "", "010", "", (const uint32_t[]){3, 0});
	expect_writables(layouts, "", "100", "", (const uint32_t[]){4, 0});
	expect_writables(layouts, "pics", "000", "", (const uint32_t[]){5, 0});
	expect_writables(layouts, "", "000", "3d", (const uint32_t[]){6, 0});
	expect_writables(layouts, "", "200", "", (const uint32_t[]){0});
	assert_int_equal(json_array_size(layouts), 7);
	{
		json_t *l0 = json_array_get(layouts, 0);

		assert_true(json_is_string(json_object_get(l0, "diskType")));
	}
	json_decref(js);

	/* Empty topology: the shape is there, empty. */
	topology_free(t);
	t = topology_new(LIMIT, PULSE);
	js = topology_status_json(t, T0);
	assert_int_equal(int_of(js, "Max"), 0);
	assert_int_equal(int_of(js, "Free"), 0);
	assert_true(json_is_array(json_object_get(js, "DataCenters")));
	assert_int_equal(json_array_size(json_object_get(js, "DataCenters")), 0);
	assert_true(json_is_array(json_object_get(js, "Layouts")));
	assert_int_equal(json_array_size(json_object_get(js, "Layouts")), 0);
	json_decref(js);
	topology_free(t);
}

/* A node with no volumes has VolumeIds "". */
static void test_status_json_empty_node(void **state)
{
	struct topology *t = topology_new(LIMIT, PULSE);
	json_t *js, *rack;

	(void)state;
	send_full(t, A, "", "", 4, NULL, 0, T0);
	js = topology_status_json(t, T0);
	rack = by_key(
	    json_object_get(by_key(json_object_get(js, "DataCenters"), "Id", "DefaultDataCenter"),
			    "Racks"),
	    "Id", "DefaultRack");
	assert_non_null(rack);
	expect_node_json(rack, URL(A), URL(A), 0, 4, 4, "");
	json_decref(js);
	topology_free(t);
}

static json_t *vol_entry(json_t *list, uint32_t id)
{
	size_t i;
	json_t *e;

	json_array_foreach(list, i, e)
	{
		if (json_integer_value(json_object_get(e, "Id")) == id)
			return e;
	}
	return NULL;
}

static void test_volume_status_json(void **state)
{
	struct topology *t = fixture(T0);
	json_t *js = topology_volume_status_json(t, T0), *dcs, *list, *e;

	(void)state;
	assert_non_null(js);
	assert_int_equal(int_of(js, "Max"), 36);
	assert_int_equal(int_of(js, "Free"), 15);
	dcs = json_object_get(js, "DataCenters");
	assert_true(json_is_object(dcs));
	assert_int_equal(json_object_size(dcs), 2);
	assert_int_equal(json_object_size(json_object_get(dcs, "dc1")), 2);
	assert_int_equal(json_object_size(json_object_get(dcs, "dc2")), 2);
	assert_int_equal(json_object_size(json_object_get(json_object_get(dcs, "dc1"), "rackA")),
			 2);

	list = json_object_get(json_object_get(json_object_get(dcs, "dc1"), "rackA"), URL(A));
	assert_true(json_is_array(list));
	assert_int_equal(json_array_size(list), 7);
	e = vol_entry(list, 2);
	assert_non_null(e);
	assert_int_equal(int_of(e, "Size"), 200);
	assert_string_equal(json_string_value(json_object_get(e, "Collection")), "");
	assert_int_equal(int_of(e, "FileCount"), 20);
	assert_int_equal(int_of(e, "DeleteCount"), 2);
	assert_int_equal(int_of(e, "DeletedByteCount"), 14);
	assert_true(json_is_false(json_object_get(e, "ReadOnly")));
	assert_non_null(json_object_get(e, "ReplicaPlacement"));
	assert_non_null(json_object_get(e, "Ttl"));

	list = json_object_get(json_object_get(json_object_get(dcs, "dc1"), "rackA"), URL(B));
	e = vol_entry(list, 13);
	assert_non_null(e);
	assert_true(json_is_true(json_object_get(e, "ReadOnly")));
	assert_int_equal(int_of(e, "Size"), 10);

	list = json_object_get(json_object_get(json_object_get(dcs, "dc1"), "rackB"), URL(C));
	e = vol_entry(list, 5);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "Collection")), "pics");

	list = json_object_get(json_object_get(json_object_get(dcs, "dc2"), "rackC"), URL(E));
	assert_int_equal(json_array_size(list), 3);
	json_decref(js);
	topology_free(t);
}

static void test_volumes_list(void **state)
{
	struct topology *t = fixture(T0);
	struct topo_volume_view *views = NULL;
	int n = topology_volumes(t, T0, &views);
	bool seen[16] = {false};

	(void)state;
	assert_int_equal(n, 14);
	for (int i = 0; i < n; i++) {
		assert_in_range(views[i].id, 1, 14);
		assert_false(seen[views[i].id]);
		seen[views[i].id] = true;
		if (views[i].id == 2 || views[i].id == 4 || views[i].id == 7)
			assert_int_equal(views[i].n_locations, 2);
		if (views[i].id == 5)
			assert_string_equal(views[i].collection, "pics");
	}
	free(views);
	n = topology_volumes(t, T0 + 10 * PULSE, &views);
	assert_int_equal(n, 0);
	free(views);
	topology_free(t);
}

static void expect_parse(const char *s, int rc, int value)
{
	uint8_t out = 0xee;
	int got = placement_parse(s, &out);

	if (got != rc)
		fail_msg("placement_parse(\"%s\") = %d, want %d", s, got, rc);
	if (rc == 0 && out != value)
		fail_msg("placement_parse(\"%s\") -> %u, want %d", s, out, value);
}

static void test_placement(void **state)
{
	char buf[4];

	(void)state;
	expect_parse("", 0, 0);
	expect_parse("000", 0, 0);
	expect_parse("001", 0, 1);
	expect_parse("1", 0, 1);
	expect_parse("01", 0, 1);
	expect_parse("10", 0, 10);
	expect_parse("010", 0, 10);
	expect_parse("100", 0, 100);
	expect_parse("110", 0, 110);
	expect_parse("200", 0, 200);
	expect_parse("255", 0, 255);
	expect_parse("1234", -EINVAL, 0);
	expect_parse("0001", -EINVAL, 0);
	expect_parse("3x", -EINVAL, 0);
	expect_parse("x", -EINVAL, 0);
	expect_parse("-1", -EINVAL, 0);
	expect_parse("+1", -EINVAL, 0);
	expect_parse(" 1", -EINVAL, 0);
	expect_parse("1 ", -EINVAL, 0);
	expect_parse("256", -EINVAL, 0);
	expect_parse("999", -EINVAL, 0);

	placement_format(0, buf);
	assert_string_equal(buf, "000");
	placement_format(1, buf);
	assert_string_equal(buf, "001");
	placement_format(10, buf);
	assert_string_equal(buf, "010");
	placement_format(110, buf);
	assert_string_equal(buf, "110");
	placement_format(255, buf);
	assert_string_equal(buf, "255");
	for (int v = 0; v < 256; v++) {
		uint8_t back = 0;

		placement_format((uint8_t)v, buf);
		assert_int_equal(strlen(buf), 3);
		assert_int_equal(placement_parse(buf, &back), 0);
		assert_int_equal(back, v);
	}

	assert_int_equal(placement_copies(0), 1);
	assert_int_equal(placement_copies(1), 2);
	assert_int_equal(placement_copies(10), 2);
	assert_int_equal(placement_copies(100), 2);
	assert_int_equal(placement_copies(110), 3);
	assert_int_equal(placement_copies(200), 3);
	assert_int_equal(placement_copies(222), 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_default_names_and_invalid),
	    cmocka_unit_test(test_dead_node),
	    cmocka_unit_test(test_full_list_replaces),
	    cmocka_unit_test(test_deltas),
	    cmocka_unit_test(test_max_ids),
	    cmocka_unit_test(test_pick_for_write),
	    cmocka_unit_test(test_pick_spread),
	    cmocka_unit_test(test_pick_weighting),
	    cmocka_unit_test(test_layout_counts),
	    cmocka_unit_test(test_add_volume),
	    cmocka_unit_test(test_collections),
	    cmocka_unit_test(test_capacity_and_nodes),
	    cmocka_unit_test(test_capacity_unreported_max_kept),
	    cmocka_unit_test(test_status_json),
	    cmocka_unit_test(test_status_json_empty_node),
	    cmocka_unit_test(test_volume_status_json),
	    cmocka_unit_test(test_volumes_list),
	    cmocka_unit_test(test_placement),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
