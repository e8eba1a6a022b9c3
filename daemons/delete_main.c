/*
 * kelp delete: deletes blobs by file id. One JSON line per fid on stdout:
 *   {"fid":"3,01637037d6","size":5}  or  {"fid":..,"error":..}
 * Exit status 1 when any delete failed (a fid that does not exist is a failure).
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/flags.h"
#include "cluster/client/client.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

int delete_main(int argc, char **argv)
{
	static const char summary[] = "delete blobs by file id";
	char *master = "localhost:9333";
	int timeout_s = 30;
	bool use_public_url = false;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("usePublicUrl", FLAG_BOOL, &use_public_url,
		 "reach the volume servers through their publicUrl"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per file, retries included"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct kelp_client *c;
	int first, failed = 0, ret;

	ret = tool_parse_args(flags, "delete", summary, "fid...", false, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (tool_tls_setup("delete") < 0)
		return 2;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("delete", master, timeout_s, use_public_url, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	for (int i = first; i < argc; i++) {
		uint64_t size = 0;
		int rc = kelp_client_delete(c, argv[i], NULL, &size);
		json_t *obj;
		char *text;

		if (rc == 0) {
			obj = json_pack("{s:o,s:I}", "fid", tool_json_text(argv[i]), "size",
					(json_int_t)size);
		} else {
			failed++;
			obj = json_pack(
			    "{s:o,s:o}", "fid", tool_json_text(argv[i]), "error",
			    tool_json_text(rc == -ENOENT ? "not found" : kelp_client_error(c)));
		}
		text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (text)
			puts(text);
		free(text);
		json_decref(obj);
	}
	fflush(stdout);
	kelp_client_free(c);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
