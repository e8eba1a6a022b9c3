/*
 * test_auth: the input rules at the edge (collection names, node addresses, public
 * URLs) and the server-token header round trip through the request digest.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cluster/net/auth.h"
#include "cluster/net/jwt.h"

static void test_collection_names(void **state)
{
	char long_name[AUTH_MAX_COLLECTION_LEN + 2];

	(void)state;
	assert_true(auth_collection_valid(""));
	assert_true(auth_collection_valid("pics"));
	assert_true(auth_collection_valid("a.b-c_D9"));
	assert_false(auth_collection_valid(NULL));
	assert_false(auth_collection_valid("."));
	assert_false(auth_collection_valid(".."));
	assert_false(auth_collection_valid(".hidden"));
	assert_false(auth_collection_valid("a/b"));
	assert_false(auth_collection_valid("a,b"));
	assert_false(auth_collection_valid("a b"));
	assert_false(auth_collection_valid("caf\xc3\xa9"));
	assert_false(auth_collection_valid("\xff\xfe"));
	assert_false(auth_collection_valid("a?x"));
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(auth_collection_valid(long_name));
	long_name[AUTH_MAX_COLLECTION_LEN] = '\0';
	assert_true(auth_collection_valid(long_name));
}

static void test_node_addresses(void **state)
{
	char err[200];

	(void)state;
	assert_true(auth_node_address_valid("10.0.0.1", 8080, true, err, sizeof(err)));
	assert_true(auth_node_address_valid("localhost", 1, true, err, sizeof(err)));
	assert_true(auth_node_address_valid("volume-3.example", 65535, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("10.0.0.1", 0, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("10.0.0.1", 65536, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("10.0.0.1/x", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("evil?x", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("a b", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("-x", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("::1", 80, false, err, sizeof(err)));
	assert_false(auth_node_address_valid("no-such-host.invalid", 80, true, err, sizeof(err)));
	assert_non_null(strstr(err, "does not resolve"));

	assert_true(auth_public_url_valid("10.0.0.1:8080"));
	assert_true(auth_public_url_valid("files.example.com"));
	assert_true(auth_public_url_valid("files.example.com:443"));
	assert_false(auth_public_url_valid("evil/x?y"));
	assert_false(auth_public_url_valid("host:"));
	assert_false(auth_public_url_valid("host:-1"));
	assert_false(auth_public_url_valid("host:99999"));
	assert_false(auth_public_url_valid("http://host:80"));
}

/* A header made by auth_server_header verifies against the digest of the same request
 * as a server would see it (decoded pairs, any order), and of no other. */
static void test_server_header(void **state)
{
	char header[AUTH_HEADER_LEN];
	const char *token;
	uint8_t digest[32];
	const struct jwt_query seen[] = {{"collection", "x y"}, {"volume", "7"}};
	const struct jwt_query other[] = {{"collection", "x y"}, {"volume", "8"}};

	(void)state;
	assert_int_equal(auth_server_header("", "POST", "/admin/x", NULL, 0, header), -EINVAL);
	assert_int_equal(
	    auth_server_header("k", "POST", "/admin/x?volume=7&collection=x%20y", NULL, 0, header),
	    0);
	assert_true(!strncmp(header, "Authorization: Bearer ", 22));
	token = header + 22;
	assert_int_equal(jwt_request_digest("POST", "/admin/x", seen, 2, digest), 0);
	assert_int_equal(
	    jwt_verify_server("k", token, strlen(token), digest, (int64_t)time(NULL), NULL, NULL),
	    0);
	assert_int_equal(jwt_request_digest("POST", "/admin/x", other, 2, digest), 0);
	assert_int_equal(
	    jwt_verify_server("k", token, strlen(token), digest, (int64_t)time(NULL), NULL, NULL),
	    -EACCES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_collection_names),
	    cmocka_unit_test(test_node_addresses),
	    cmocka_unit_test(test_server_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
