/*
 * kelp token: prints a server token (cluster/jwt.h, "Server tokens") for one request,
 * so that an operator holding the cluster's key can call the routes that need one:
 *
 *   curl -H "Authorization: Bearer $(kelp token '/vol/grow?count=2&replication=001')" \
 *        'http://master:9333/vol/grow?count=2&replication=001'
 *
 * The token is bound to the method, the path and the query exactly as given (the same
 * parameters in any order), and lives 60 seconds. The key comes from -jwtKey or, better
 * (other users can read command lines), from the environment variable KELP_JWT_KEY.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/net/auth.h"
#include "cluster/base/flags.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

int token_main(int argc, char **argv)
{
	static const char summary[] =
	    "print a server token for one request (method, path and query), for curl";
	char *key = "", *method = "GET";
	const struct flag flags[] = {
	    FLAG("jwtKey", FLAG_STRING, &key, "the cluster's key (default: $KELP_JWT_KEY)"),
	    FLAG("method", FLAG_STRING, &method, "the request's method: GET, POST, ..."),
	    FLAG_END,
	};
	char header[AUTH_HEADER_LEN];
	int first, ret;

	ret = tool_parse_args(flags, "token", summary, "'/path?query'", false, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*key && getenv("KELP_JWT_KEY"))
		key = getenv("KELP_JWT_KEY");
	if (!*key) {
		fprintf(stderr, "kelp token: no key: give -jwtKey or set KELP_JWT_KEY\n");
		return 2;
	}
	if (first != argc - 1 || argv[first][0] != '/') {
		fprintf(stderr, "kelp token: want one request path starting with '/', like "
				"'/vol/grow?count=1'\n");
		return 2;
	}
	ret = auth_server_header(key, method, argv[first], NULL, 0, header);
	if (ret < 0) {
		fprintf(stderr, "kelp token: cannot sign: %s\n", strerror(-ret));
		return 1;
	}
	puts(header + strlen("Authorization: Bearer "));
	return 0;
}
