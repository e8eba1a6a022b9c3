/*
 * kelp fsck: checks a filesystem's metadata and the blobs it references, and repairs
 * with -repair (fuse/fsck.h). One JSON line per problem on stdout:
 * {"problem":..,"detail":..,"path":..}, with -repair also "repaired" (true/false) and,
 * when false, "why"; a summary on stderr. Exit status 0 when nothing is wrong, 1 when
 * something was found (repaired or not: the summary and the lines say), 2 when the
 * check or the repair could not run.
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

static void print_problem(void *ctx, const struct fsck_problem *p)
{
	struct out *o = ctx;
	json_t *j = json_pack("{s:s,s:s,s:o}", "problem", p->kind, "detail", p->detail, "path",
			      tool_json_text(p->path));
	char *text;

	if (j && p->repair != FSCK_CHECKED) {
		json_object_set_new(j, "repaired", json_boolean(p->repair == FSCK_REPAIRED));
		if (p->repair == FSCK_NOT_REPAIRED && p->why)
			json_object_set_new(j, "why", json_string(p->why));
	}
	text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

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
	    "counts, gc queue) and that every blob it references is in the cluster; repair it "
	    "with -repair (every mount stopped)";
	char *meta = "", *master = "localhost:9333", *collection = "", *grace = "1h", *jwt_key = "";
	int timeout_s = 30, session_timeout_s = 60, ret, first;
	bool no_blobs = false, leaks = false, repair = false, drop_missing = false;
	double grace_s;
	struct fsck_options fo = {0};
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta, "an LMDB directory or a postgres:// URL (required)"),
	    FLAG("master", FLAG_STRING, &master, "comma list of masters"),
	    FLAG("noBlobs", FLAG_BOOL, &no_blobs, "check the metadata only, not the cluster"),
	    FLAG("leaks", FLAG_BOOL, &leaks,
		 "also list leaked blobs: needles of -collection that nothing references "
		 "(only for a collection this filesystem alone writes to)"),
	    FLAG("repair", FLAG_BOOL, &repair,
		 "repair the metadata (names of missing inodes, link counts, parents, reference "
		 "counts, the gc queue, unreachable inodes into /lost+found; refused while a "
		 "mount is live) and delete the leaked blobs found (with -leaks or -collection)"),
	    FLAG("dropMissing", FLAG_BOOL, &drop_missing,
		 "with -repair: the ranges of files whose blob is not in the cluster become "
		 "holes (listed by path)"),
	    FLAG("sessionTimeout", FLAG_INT, &session_timeout_s,
		 "seconds: a mount whose heartbeat is older is not live (the mounts' "
		 "-sessionTimeout)"),
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
	if (!*meta || tool_parse_duration(grace, &grace_s) < 0 ||
	    ((leaks || *collection || drop_missing) && no_blobs) || (drop_missing && !repair) ||
	    session_timeout_s <= 0 || !strcmp(collection, "kelp_meta_backup")) {
		fprintf(stderr, "kelp fsck: -meta is required; -grace is a duration (1h, 30m); "
				"-leaks, -collection and -dropMissing need the cluster (not "
				"-noBlobs); -dropMissing needs -repair; -sessionTimeout is "
				"positive; the backups' collection is not a mount's\n");
		return 2;
	}
	if (!*jwt_key && getenv("KELP_JWT_KEY"))
		jwt_key = getenv("KELP_JWT_KEY");
	fo.repair = repair;
	fo.drop_missing = drop_missing;
	fo.session_timeout_ns = (int64_t)session_timeout_s * 1000000000;
	fo.timeout_ms = timeout_s * 1000;
	if (leaks || (repair && *collection)) {
		fo.jwt_key = jwt_key;
		fo.collection = collection;
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
		"%llu problem(s)",
		(unsigned long long)r.inodes, (unsigned long long)r.dentries,
		(unsigned long long)r.chunks, (unsigned long long)r.blobs,
		(unsigned long long)r.blobs_checked, (unsigned long long)r.needles,
		(unsigned long long)r.leaks, (unsigned long long)r.leaks_deleted,
		(unsigned long long)r.problems);
	if (repair)
		fprintf(stderr, ", %llu repaired, %llu left", (unsigned long long)r.repaired,
			(unsigned long long)(r.problems - r.repaired));
	fprintf(stderr, "\n");
	if (r.mounted)
		fprintf(stderr,
			"kelp fsck: the metadata was not repaired: it is mounted (%s); stop every "
			"mount (or wait -sessionTimeout after a crash) and run -repair again\n",
			r.mounted_by);
	if (r.repair_error) {
		/* after a commit only the flush to disk can fail (LMDB) */
		fprintf(stderr, "kelp fsck: the repair failed%s: %s\n",
			r.committed ? " after its commit (flushing the metadata to disk)"
				    : ", nothing was changed",
			strerror(-r.repair_error));
		return 2;
	}
	return r.problems ? 1 : 0;
}
