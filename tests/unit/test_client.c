/*
 * test_client: the pure parts of cluster/client: master lists, assign / lookup /
 * cluster status replies, Content-Disposition names, the HTTP status -> errno map,
 * and the location cache with the time passed in. No sockets, no sleeps.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "cluster/client/client.h"

#define SECOND 1000000000ull

static int parse_list(const char *s, char ***out)
{
	return kelp_parse_master_list(s, out);
}

static void expect_list(const char *s, int n, const char *const *want)
{
	char **list = NULL;
	int rc = parse_list(s, &list);

	if (rc != n)
		print_error("list \"%s\": got %d, want %d\n", s, rc, n);
	assert_int_equal(rc, n);
	for (int i = 0; i < n; i++)
		assert_string_equal(list[i], want[i]);
	assert_null(list[n]);
	kelp_free_master_list(list);
}

static void expect_bad_list(const char *s)
{
	char **list = (char **)1;
	int rc = parse_list(s, &list);

	if (rc != -EINVAL)
		print_error("list \"%s\": got %d, want -EINVAL\n", s ? s : "(null)", rc);
	assert_int_equal(rc, -EINVAL);
	assert_null(list);
}

static void test_master_list(void **state)
{
	(void)state;
	expect_list("localhost:9333", 1, (const char *const[]){"localhost:9333"});
	expect_list(" a:1 , b:2,,c:3 ,", 3, (const char *const[]){"a:1", "b:2", "c:3"});
	expect_list("a:1,a:1,b:2,a:1", 2, (const char *const[]){"a:1", "b:2"});
	expect_list("http://m1:9333/,HTTP://m2:9334", 2,
		    (const char *const[]){"m1:9333", "m2:9334"});
	/* No port: SeaweedFS's default master port. */
	expect_list("m1", 1, (const char *const[]){"m1:9333"});
	/* host:port.grpcPort is SeaweedFS's server address form. */
	expect_list("10.0.0.1:9333.19333", 1, (const char *const[]){"10.0.0.1:9333"});
	expect_list("[::1]:9333,[fe80::1]", 2,
		    (const char *const[]){"[::1]:9333", "[fe80::1]:9333"});

	expect_bad_list(NULL);
	expect_bad_list("");
	expect_bad_list(" , ,");
	expect_bad_list(":9333");
	expect_bad_list("a:0");
	expect_bad_list("a:65536");
	expect_bad_list("a:port");
	expect_bad_list("a b:9333");
	expect_bad_list("good:1,bad:x");
	expect_bad_list("a:1/path");
	expect_bad_list("user@a:1");
	expect_bad_list("[]:1");
	expect_bad_list("[::1]x");
}

static void test_normalize_address(void **state)
{
	char a[64];

	(void)state;
	snprintf(a, sizeof(a), "h:9333.19333");
	kelp_normalize_server_address(a);
	assert_string_equal(a, "h:9333");
	snprintf(a, sizeof(a), "10.1.2.3:8080");
	kelp_normalize_server_address(a);
	assert_string_equal(a, "10.1.2.3:8080");
	snprintf(a, sizeof(a), "host.example.com");
	kelp_normalize_server_address(a);
	assert_string_equal(a, "host.example.com");
	snprintf(a, sizeof(a), "[::1]:9333");
	kelp_normalize_server_address(a);
	assert_string_equal(a, "[::1]:9333");
}

static void test_errno_from_status(void **state)
{
	(void)state;
	assert_int_equal(kelp_errno_from_status(200), 0);
	assert_int_equal(kelp_errno_from_status(201), 0);
	assert_int_equal(kelp_errno_from_status(204), 0);
	assert_int_equal(kelp_errno_from_status(206), 0);
	assert_int_equal(kelp_errno_from_status(400), -EINVAL);
	assert_int_equal(kelp_errno_from_status(401), -EACCES);
	assert_int_equal(kelp_errno_from_status(403), -EACCES);
	assert_int_equal(kelp_errno_from_status(404), -ENOENT);
	assert_int_equal(kelp_errno_from_status(406), -ENOSPC);
	assert_int_equal(kelp_errno_from_status(408), -ETIMEDOUT);
	assert_int_equal(kelp_errno_from_status(413), -EFBIG);
	assert_int_equal(kelp_errno_from_status(416), -ERANGE);
	assert_int_equal(kelp_errno_from_status(418), -EINVAL);
	assert_int_equal(kelp_errno_from_status(429), -EAGAIN);
	assert_int_equal(kelp_errno_from_status(500), -EIO);
	assert_int_equal(kelp_errno_from_status(502), -EIO);
	assert_int_equal(kelp_errno_from_status(503), -EAGAIN);
	assert_int_equal(kelp_errno_from_status(507), -ENOSPC);
}

static int assign(const char *body, struct kelp_assign_result *out, char *err)
{
	memset(out, 0x5a, sizeof(*out));
	return kelp_parse_assign_reply(body, strlen(body), out, err, 256);
}

static void test_assign_reply(void **state)
{
	struct kelp_assign_result r;
	char err[256];

	(void)state;
	assert_int_equal(assign("{\"fid\":\"3,01637037d6\",\"url\":\"127.0.0.1:8080\","
				"\"publicUrl\":\"localhost:8080\",\"count\":1}",
				&r, err),
			 0);
	assert_string_equal(r.fid, "3,01637037d6");
	assert_string_equal(r.url, "127.0.0.1:8080");
	assert_string_equal(r.public_url, "localhost:8080");
	assert_int_equal(r.count, 1);

	/* publicUrl absent or empty: the url; count absent: 1; unknown fields ignored. */
	assert_int_equal(
	    assign("{\"url\":\"v:1\",\"fid\":\"7,0a00000001\",\"extra\":[1]}", &r, err), 0);
	assert_string_equal(r.public_url, "v:1");
	assert_int_equal(r.count, 1);
	assert_int_equal(assign("{\"url\":\"v:1\",\"publicUrl\":\"\",\"fid\":\"7,0a00000001\","
				"\"count\":5}",
				&r, err),
			 0);
	assert_string_equal(r.public_url, "v:1");
	assert_int_equal(r.count, 5);

	/* The master's error text is handed back. */
	assert_int_equal(assign("{\"error\":\"no free volumes left\"}", &r, err), -EIO);
	assert_string_equal(err, "no free volumes left");
	assert_int_equal(
	    assign("{\"fid\":\"3,01637037d6\",\"url\":\"v:1\",\"error\":\"x\"}", &r, err), -EIO);

	/* Not what an assign reply looks like. */
	assert_int_equal(assign("", &r, err), -EPROTO);
	assert_int_equal(assign("<html>", &r, err), -EPROTO);
	assert_int_equal(assign("[]", &r, err), -EPROTO);
	assert_int_equal(assign("{\"url\":\"v:1\"}", &r, err), -EPROTO);
	assert_int_equal(assign("{\"fid\":\"3,01637037d6\"}", &r, err), -EPROTO);
	assert_int_equal(assign("{\"fid\":\"3,01637037d6\",\"url\":\"\"}", &r, err), -EPROTO);
	assert_int_equal(assign("{\"fid\":\"nonsense\",\"url\":\"v:1\"}", &r, err), -EPROTO);
	assert_int_equal(assign("{\"fid\":3,\"url\":\"v:1\"}", &r, err), -EPROTO);
	assert_int_equal(kelp_parse_assign_reply(NULL, 0, &r, NULL, 0), -EPROTO);
}

static int lookup(const char *body, struct kelp_locations *out, char *err)
{
	return kelp_parse_lookup_reply(body, strlen(body), out, err, 256);
}

static void test_lookup_reply(void **state)
{
	struct kelp_locations l;
	char err[256], body[4096];
	size_t len;

	(void)state;
	assert_int_equal(
	    lookup("{\"volumeOrFileId\":\"3\",\"volumeId\":\"3\",\"locations\":["
		   "{\"url\":\"a:8080\",\"publicUrl\":\"pa:8080\",\"dataCenter\":\"dc1\"},"
		   "{\"url\":\"b:8080\",\"grpcPort\":18080}]}",
		   &l, err),
	    0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.loc[0].url, "a:8080");
	assert_string_equal(l.loc[0].public_url, "pa:8080");
	assert_string_equal(l.loc[0].data_center, "dc1");
	assert_string_equal(l.loc[1].url, "b:8080");
	assert_string_equal(l.loc[1].public_url, "b:8080");
	assert_string_equal(l.loc[1].data_center, "");

	/* Locations without a usable url are skipped. */
	assert_int_equal(lookup("{\"locations\":[{\"publicUrl\":\"x\"},7,{\"url\":\"\"},"
				"{\"url\":\"c:1\"}]}",
				&l, err),
			 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.loc[0].url, "c:1");

	/* More replicas than we keep: cut to KELP_MAX_LOCATIONS. */
	len = (size_t)snprintf(body, sizeof(body), "{\"locations\":[");
	for (int i = 0; i < KELP_MAX_LOCATIONS + 3; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len, "%s{\"url\":\"h%d:1\"}",
					i ? "," : "", i);
	snprintf(body + len, sizeof(body) - len, "]}");
	assert_int_equal(lookup(body, &l, err), 0);
	assert_int_equal(l.n, KELP_MAX_LOCATIONS);
	assert_string_equal(l.loc[KELP_MAX_LOCATIONS - 1].url, "h7:1");

	assert_int_equal(
	    lookup("{\"volumeOrFileId\":\"9\",\"error\":\"volume id 9 not found\"}", &l, err),
	    -EIO);
	assert_string_equal(err, "volume id 9 not found");
	assert_int_equal(lookup("{\"locations\":[]}", &l, err), -ENOENT);
	assert_int_equal(lookup("{\"volumeId\":\"3\"}", &l, err), -EPROTO);
	assert_int_equal(lookup("{\"locations\":{}}", &l, err), -EPROTO);
	assert_int_equal(lookup("not json", &l, err), -EPROTO);
}

static void test_cluster_status(void **state)
{
	const char *b;
	char leader[64];
	bool is_leader = true;

	(void)state;
	b = "{\"IsLeader\":true,\"Leader\":\"10.0.0.1:9333\",\"Peers\":[\"10.0.0.2:9333\"],"
	    "\"MaxVolumeId\":7}";
	assert_int_equal(
	    kelp_parse_cluster_status(b, strlen(b), &is_leader, leader, sizeof(leader)), 0);
	assert_true(is_leader);
	assert_string_equal(leader, "10.0.0.1:9333");

	/* Followers: IsLeader is omitted, not false; the leader may carry a gRPC port. */
	b = "{\"Leader\":\"10.0.0.1:9333.19333\",\"Peers\":[]}";
	assert_int_equal(
	    kelp_parse_cluster_status(b, strlen(b), &is_leader, leader, sizeof(leader)), 0);
	assert_false(is_leader);
	assert_string_equal(leader, "10.0.0.1:9333");

	/* During an election: no leader. */
	b = "{\"Peers\":[\"a:1\"]}";
	assert_int_equal(
	    kelp_parse_cluster_status(b, strlen(b), &is_leader, leader, sizeof(leader)), 0);
	assert_false(is_leader);
	assert_string_equal(leader, "");
	b = "{\"IsLeader\":false,\"Leader\":7}";
	assert_int_equal(
	    kelp_parse_cluster_status(b, strlen(b), &is_leader, leader, sizeof(leader)), 0);
	assert_false(is_leader);
	assert_string_equal(leader, "");

	b = "503 Service Unavailable";
	assert_int_equal(
	    kelp_parse_cluster_status(b, strlen(b), &is_leader, leader, sizeof(leader)), -EPROTO);
	assert_false(is_leader);
}

static void expect_name(const char *value, const char *want)
{
	char out[64];
	bool ok = kelp_parse_content_disposition(value, out, sizeof(out));

	if (strcmp(out, want ? want : ""))
		print_error("\"%s\": got \"%s\", want \"%s\"\n", value ? value : "(null)", out,
			    want ? want : "");
	assert_int_equal(ok, want != NULL);
	assert_string_equal(out, want ? want : "");
}

static void test_content_disposition(void **state)
{
	(void)state;
	expect_name("inline; filename=\"a.txt\"", "a.txt");
	expect_name("attachment; filename=report.pdf; size=3", "report.pdf");
	expect_name("inline; FILENAME=\"x y.jpg\"", "x y.jpg");
	expect_name("form-data; name=\"file\"", "file");
	expect_name("form-data; name=\"file\"; filename=\"real.bin\"", "real.bin");
	/* Never a path: only the last element survives. */
	expect_name("inline; filename=\"../../etc/passwd\"", "passwd");
	expect_name("inline; filename=\"C:\\\\dir\\\\file.txt\"", "file.txt");
	expect_name("inline; filename=\"a\x01"
		    "b\"",
		    "a_b");
	expect_name("inline; filename=\"..\"", NULL);
	expect_name("inline; filename=\".\"", NULL);
	expect_name("inline; filename=\"dir/\"", NULL);
	expect_name("inline; filename=\"\"", NULL);
	expect_name("inline", NULL);
	expect_name("inline; xfilename=\"no\"", NULL);
	expect_name(NULL, NULL);
	/* Long names are cut to the buffer. */
	{
		char out[8];

		assert_true(kelp_parse_content_disposition("inline; filename=\"abcdefghij\"", out,
							   sizeof(out)));
		assert_string_equal(out, "abcdefg");
	}
}

static void make_locations(struct kelp_locations *l, int n, const char *prefix)
{
	memset(l, 0, sizeof(*l));
	l->n = n;
	for (int i = 0; i < n; i++) {
		snprintf(l->loc[i].url, sizeof(l->loc[i].url), "%s%d:8080", prefix, i);
		snprintf(l->loc[i].public_url, sizeof(l->loc[i].public_url), "pub-%s%d", prefix, i);
	}
}

static void test_location_cache_expiry(void **state)
{
	struct kelp_location_cache lc;
	struct kelp_locations in, out;
	uint64_t t0 = 1000 * SECOND;

	(void)state;
	kelp_location_cache_init(&lc, 60 * SECOND);
	assert_false(kelp_location_cache_get(&lc, 3, t0, &out));

	make_locations(&in, 2, "v");
	assert_int_equal(kelp_location_cache_put(&lc, 3, t0, &in), 0);
	assert_true(kelp_location_cache_get(&lc, 3, t0, &out));
	assert_int_equal(out.n, 2);
	assert_string_equal(out.loc[1].url, "v1:8080");
	assert_string_equal(out.loc[1].public_url, "pub-v1");
	/* Fresh until just before the TTL, gone at it. */
	assert_true(kelp_location_cache_get(&lc, 3, t0 + 60 * SECOND - 1, &out));
	assert_false(kelp_location_cache_get(&lc, 3, t0 + 60 * SECOND, &out));
	assert_false(kelp_location_cache_get(&lc, 4, t0, &out));

	/* A new put refreshes the entry and replaces its locations. */
	make_locations(&in, 1, "w");
	assert_int_equal(kelp_location_cache_put(&lc, 3, t0 + 50 * SECOND, &in), 0);
	assert_int_equal(kelp_location_cache_size(&lc), 1);
	assert_true(kelp_location_cache_get(&lc, 3, t0 + 100 * SECOND, &out));
	assert_int_equal(out.n, 1);
	assert_string_equal(out.loc[0].url, "w0:8080");
	assert_false(kelp_location_cache_get(&lc, 3, t0 + 110 * SECOND, &out));

	/* Dropped (a failed read): asked again next time. */
	assert_int_equal(kelp_location_cache_put(&lc, 3, t0, &in), 0);
	kelp_location_cache_drop(&lc, 3);
	assert_false(kelp_location_cache_get(&lc, 3, t0, &out));
	assert_int_equal(kelp_location_cache_size(&lc), 0);
	kelp_location_cache_drop(&lc, 3); /* dropping what is absent is fine */
	kelp_location_cache_release(&lc);
}

static void test_location_cache_many(void **state)
{
	struct kelp_location_cache lc;
	struct kelp_locations in, out;
	const uint32_t n = 5000;

	(void)state;
	kelp_location_cache_init(&lc, 10 * SECOND);
	for (uint32_t vid = 1; vid <= n; vid++) {
		char prefix[16];

		snprintf(prefix, sizeof(prefix), "n%u-", vid);
		make_locations(&in, 1 + (int)(vid % 3), prefix);
		assert_int_equal(kelp_location_cache_put(&lc, vid, 0, &in), 0);
	}
	assert_int_equal(kelp_location_cache_size(&lc), n);
	/* Drop every third one: the probe runs must stay intact for the others. */
	for (uint32_t vid = 3; vid <= n; vid += 3)
		kelp_location_cache_drop(&lc, vid);
	for (uint32_t vid = 1; vid <= n; vid++) {
		char want[32];
		bool found = kelp_location_cache_get(&lc, vid, SECOND, &out);

		if (vid % 3 == 0) {
			assert_false(found);
			continue;
		}
		assert_true(found);
		assert_int_equal(out.n, 1 + (int)(vid % 3));
		snprintf(want, sizeof(want), "n%u-0:8080", vid);
		assert_string_equal(out.loc[0].url, want);
	}
	assert_int_equal(kelp_location_cache_size(&lc), n - n / 3);
	kelp_location_cache_release(&lc);
	assert_int_equal(kelp_location_cache_size(&lc), 0);
}

static uint64_t fake_now;

static uint64_t fake_clock(void *ctx)
{
	assert_ptr_equal(ctx, &fake_now);
	return fake_now;
}

static void test_client_new(void **state)
{
	struct kelp_client_options opt = {
	    .masters = "m1:9333, m2:9333", .clock_ns = fake_clock, .clock_ctx = &fake_now};
	struct kelp_client *c = NULL;

	(void)state;
	/* Creating a client opens no connection. */
	assert_int_equal(kelp_client_new(&opt, &c), 0);
	assert_non_null(c);
	assert_string_equal(kelp_client_error(c), "");
	assert_string_equal(kelp_client_leader(c), "");
	kelp_client_forget_volume(c, 42);
	kelp_client_free(c);
	kelp_client_free(NULL);

	opt.masters = "";
	c = (struct kelp_client *)1;
	assert_int_equal(kelp_client_new(&opt, &c), -EINVAL);
	assert_null(c);
	opt.masters = "bad host:1";
	assert_int_equal(kelp_client_new(&opt, &c), -EINVAL);
	assert_int_equal(kelp_client_new(NULL, &c), -EINVAL);
}

static void test_client_bad_fids(void **state)
{
	struct kelp_client_options opt = {.masters = "127.0.0.1:9"};
	struct kelp_client *c;
	uint8_t *data = (uint8_t *)1;
	size_t len = 1;
	char buf[4];
	size_t got = 1;

	(void)state;
	assert_int_equal(kelp_client_new(&opt, &c), 0);
	/* Rejected before any lookup, so no socket is touched. */
	assert_int_equal(kelp_client_read(c, "nonsense", &data, &len, NULL), -EINVAL);
	assert_null(data);
	assert_int_equal(len, 0);
	assert_non_null(strstr(kelp_client_error(c), "nonsense"));
	assert_int_equal(kelp_client_read_range(c, "3,zz", 0, sizeof(buf), buf, &got, NULL),
			 -EINVAL);
	assert_int_equal(got, 0);
	assert_int_equal(kelp_client_delete(c, "", NULL, NULL), -EINVAL);
	assert_int_equal(kelp_client_delete(c, NULL, NULL, NULL), -EINVAL);
	/* A zero-length range needs no I/O at all. */
	assert_int_equal(kelp_client_read_range(c, "3,01637037d6", 0, 0, buf, &got, NULL), 0);
	assert_int_equal(got, 0);
	kelp_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_master_list),
	    cmocka_unit_test(test_normalize_address),
	    cmocka_unit_test(test_errno_from_status),
	    cmocka_unit_test(test_assign_reply),
	    cmocka_unit_test(test_lookup_reply),
	    cmocka_unit_test(test_cluster_status),
	    cmocka_unit_test(test_content_disposition),
	    cmocka_unit_test(test_location_cache_expiry),
	    cmocka_unit_test(test_location_cache_many),
	    cmocka_unit_test(test_client_new),
	    cmocka_unit_test(test_client_bad_fids),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
