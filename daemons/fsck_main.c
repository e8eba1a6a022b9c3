/*
 * kelp fsck: checks a filesystem's metadata and the blobs it references (fuse/fsck.h).
 * One JSON line per problem on stdout: {"problem":..,"detail":..,"path":..}; a summary
 * on stderr. Exit status 0 when nothing is wrong, 1 when something is, 2 when the check
 * could not run.
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
#include "daemons/meta_tools.h"
#include "fuse/fsck.h"
#include "fuse/kv.h"

struct out {
	struct tool_progress *p;
};

static void print_problem(void *ctx, const char *kind, const char *detail, const char *path)
{
	struct out *o = ctx;
	json_t *j = json_pack("{s:s,s:s,s:o}", "problem", kind, "detail", detail, "path",
			      tool_json_text(path));
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	if (text) {
		tool_progress_println(o->p, stdout, text);
		free(text);
	}
	json_decref(j);
}

int fsck_main(int argc, char **argv)
{
	static const char summary[] =
	    "check a filesystem's metadata (names, link counts, directory tree, blob reference "
	    "counts, gc queue) and that every blob it references is in the cluster";
	char *meta = "", *master = "localhost:9333", *collection = "", *grace = "1h", *jwt_key = "";
	int timeout_s = 30, ret, first;
	bool no_blobs = false, leaks = false, repair = false;
	double grace_s;
	struct fsck_options fo = {0};
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta, "an LMDB directory or a postgres:// URL (required)"),
	    FLAG("master", FLAG_STRING, &master, "comma list of masters"),
	    FLAG("noBlobs", FLAG_BOOL, &no_blobs, "check the metadata only, not the cluster"),
	    FLAG("leaks", FLAG_BOOL, &leaks,
		 "also list leaked blobs: needles of -collection that nothing references "
		 "(only for a collection this filesystem alone writes to)"),
	    FLAG("repair", FLAG_BOOL, &repair, "delete the leaked blobs found (implies -leaks)"),
	    FLAG("collection", FLAG_STRING, &collection,
		 "the mount's -collection, searched for leaks"),
	    FLAG("grace", FLAG_STRING, &grace,
		 "blobs written less than this long ago are never leaks (uploads whose commit "
		 "may still come)"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds per cluster call and database wait"),
	    FLAG("jwtKey", FLAG_STRING, &jwt_key,
		 "the cluster's key, to list the volume servers' needles with -leaks (default: "
		 "$KELP_JWT_KEY)"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct kelp_client *c = NULL;
	struct tool_progress p;
	struct fsck_result r;
	struct out o = {&p};
	struct kv *kv;

	ret = tool_parse_args(flags, "fsck", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*meta || tool_parse_duration(grace, &grace_s) < 0 || ((leaks || repair) && no_blobs) ||
	    !strcmp(collection, "kelp_meta_backup")) {
		fprintf(stderr, "kelp fsck: -meta is required; -grace is a duration (1h, 30m); "
				"-leaks/-repair need the cluster (not -noBlobs); the backups' "
				"collection is not a mount's\n");
		return 2;
	}
	if (!*jwt_key && getenv("KELP_JWT_KEY"))
		jwt_key = getenv("KELP_JWT_KEY");
	if (leaks || repair) {
		fo.jwt_key = jwt_key;
		fo.collection = collection;
		fo.repair = repair;
		fo.grace_ns = (int64_t)(grace_s * 1e9);
	}
	if (tool_tls_setup("fsck") < 0)
		return 2;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!no_blobs && tool_client_new("fsck", master, timeout_s, false, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	if (meta_tool_open_kv("fsck", meta, timeout_s, &kv) < 0) {
		kelp_client_free(c);
		curl_global_cleanup();
		return 2;
	}
	tool_progress_start(&p, "fsck", 0, 0);
	ret = fsck_run(kv, c, &fo, print_problem, &o, meta_tool_progress, &p, &r);
	tool_progress_finish(&p);
	fflush(stdout);
	kv->ops->close(kv);
	kelp_client_free(c);
	curl_global_cleanup();
	if (ret < 0) {
		fprintf(stderr, "kelp fsck: the check failed: %s\n", strerror(-ret));
		return 2;
	}
	fprintf(stderr,
		"kelp fsck: %llu inodes, %llu names, %llu chunks, %llu blobs (%llu checked in the "
		"cluster), %llu needles searched for leaks: %llu leaked blob(s), %llu deleted; "
		"%llu problem(s)\n",
		(unsigned long long)r.inodes, (unsigned long long)r.dentries,
		(unsigned long long)r.chunks, (unsigned long long)r.blobs,
		(unsigned long long)r.blobs_checked, (unsigned long long)r.needles,
		(unsigned long long)r.leaks, (unsigned long long)r.leaks_deleted,
		(unsigned long long)r.problems);
	return r.problems ? 1 : 0;
}
