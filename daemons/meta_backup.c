/*
 * kelp meta backup / kelp meta restore: metadata backups kept in the cluster
 * (fuse/backup.h for the layout, docs/operations.md for the procedure).
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "cluster/client/client.h"
#include "daemons/client_tools.h"
#include "daemons/meta_tools.h"
#include "fuse/backup.h"
#include "fuse/kv.h"

static void fmt_time(int64_t ns, char *out, size_t cap)
{
	time_t s = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "2026-12-05T22:00:00Z" (or without the Z, or a space for the T; UTC) or Unix seconds. */
static int parse_time(const char *s, int64_t *ns)
{
	struct tm tm;
	char *end;
	long long secs = strtoll(s, &end, 10);

	if (end != s && *end == '\0') {
		*ns = secs * 1000000000ll;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		end = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
	if (!end || (*end && strcmp(end, "Z")))
		return -EINVAL;
	*ns = (int64_t)timegm(&tm) * 1000000000ll + 999999999ll;
	return 0;
}

int meta_backup_main(int argc, char **argv)
{
	static const char summary[] =
	    "store a backup of the metadata in the cluster (a compressed dump, one read "
	    "transaction: the filesystem goes on) and keep the last -keep";
	char *meta = "", *master = "localhost:9333", *replication = "", *hold = "48h",
	     *tmp_dir = "";
	int timeout_s = 60, keep = 24, ret, first, removed = 0;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta, "an LMDB directory or a postgres:// URL (required)"),
	    FLAG("master", FLAG_STRING, &master, "comma list of masters"),
	    FLAG("keep", FLAG_INT, &keep, "backups kept (older ones are deleted)"),
	    FLAG("replication", FLAG_STRING, &replication,
		 "replication of the backup blobs (\"\" = the master's default)"),
	    FLAG("hold", FLAG_STRING, &hold,
		 "gc keeps the blobs a kept backup may reference for this long after this "
		 "backup (0 = no hold)"),
	    FLAG("tmpDir", FLAG_STRING, &tmp_dir, "where the compressed dump is staged"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds per cluster call and database wait"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct backup_options o = {0};
	struct backup_entry e;
	struct tool_progress p;
	struct kelp_client *c;
	struct kv *kv;
	double hold_s;
	char err[512], when[32];

	ret = tool_parse_args(flags, "meta backup", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*meta || keep < 1 || keep > BACKUP_MAX_KEEP ||
	    tool_parse_duration(hold, &hold_s) < 0) {
		fprintf(stderr,
			"kelp meta backup: -meta is required, -keep 1-%d, -hold a duration "
			"(48h, 30m, ...)\n",
			BACKUP_MAX_KEEP);
		return 2;
	}
	if (tool_tls_setup("meta backup") < 0)
		return 2;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("meta backup", master, timeout_s, false, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	if (meta_tool_open_kv("backup", meta, timeout_s, &kv) < 0) {
		kelp_client_free(c);
		curl_global_cleanup();
		return 1;
	}
	o.keep = keep;
	o.replication = *replication ? replication : NULL;
	o.hold_ns = (int64_t)(hold_s * 1e9);
	o.tmp_dir = *tmp_dir ? tmp_dir : NULL;
	tool_progress_start(&p, "backup", 0, 0);
	o.progress = meta_tool_progress;
	o.progress_ctx = &p;
	ret = backup_run(kv, c, &o, &e, &removed, err, sizeof(err));
	tool_progress_finish(&p);
	kv->ops->close(kv);
	kelp_client_free(c);
	curl_global_cleanup();
	if (ret < 0) {
		fprintf(stderr, "kelp meta backup: %s\n", err[0] ? err : strerror(-ret));
		return 1;
	}
	fmt_time(e.time_ns, when, sizeof(when));
	printf("{\"time\":\"%s\",\"time_ns\":%" PRId64 ",\"records\":%" PRIu64
	       ",\"inodes\":%" PRIu64 ",\"size\":%" PRIu64 ",\"sha256\":\"%s\",\"parts\":%d,"
	       "\"removed\":%d}\n",
	       when, e.time_ns, e.records, e.inodes, e.size, e.sha256, e.n_parts, removed);
	backup_entry_release(&e);
	return 0;
}

static void list_backups(const struct backup_manifest *ms, int n)
{
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < ms[i].n; k++) {
			const struct backup_entry *e = &ms[i].e[k];
			char when[32];

			fmt_time(e->time_ns, when, sizeof(when));
			printf(
			    "{\"fs\":\"%08x\",\"cluster_id\":\"%s\",\"time\":\"%s\",\"time_ns\":%" PRId64
			    ",\"records\":%" PRIu64 ",\"inodes\":%" PRIu64 ",\"size\":%" PRIu64
			    ",\"engine\":\"%s\",\"parts\":[",
			    ms[i].fs, ms[i].cluster_id, when, e->time_ns, e->records, e->inodes,
			    e->size, e->engine);
			for (int x = 0; x < e->n_parts; x++)
				printf("%s\"%s\"", x ? "," : "", e->parts[x]);
			printf("]}\n");
		}
	}
}

int meta_restore_main(int argc, char **argv)
{
	static const char summary[] =
	    "rebuild a filesystem's metadata from a backup in the cluster into an empty -meta "
	    "(the newest backup, or the newest at or before -at); -list shows the backups";
	char *meta = "", *master = "localhost:9333", *at = "", *fs_text = "", *tmp_dir = "";
	int timeout_s = 60, ret, first, chosen = -1, used = -1;
	bool list = false;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta,
		 "the new metadata: an empty LMDB directory or PostgreSQL database"),
	    FLAG("master", FLAG_STRING, &master, "comma list of masters"),
	    FLAG("at", FLAG_STRING, &at,
		 "restore the newest backup taken at or before this time (2026-12-05T22:00:00Z "
		 "in UTC, or Unix seconds)"),
	    FLAG("list", FLAG_BOOL, &list, "list the backups (JSON lines) and restore nothing"),
	    FLAG("fs", FLAG_STRING, &fs_text,
		 "the filesystem (8 hex digits, see -list) when the cluster holds backups of "
		 "several"),
	    FLAG("tmpDir", FLAG_STRING, &tmp_dir, "where the compressed dump is staged"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds per cluster call and database wait"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct backup_manifest *ms = NULL, *m = NULL;
	struct dump_load_options lo = {0};
	struct tool_progress p;
	struct kelp_client *c;
	struct kv *kv;
	char err[512], cid[128] = "", when[32];
	int n = 0;
	int64_t at_ns = 0;

	ret = tool_parse_args(flags, "meta restore", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if ((!list && !*meta) || (*at && parse_time(at, &at_ns) < 0)) {
		fprintf(stderr, "kelp meta restore: -meta is required (unless -list); -at is "
				"2026-12-05T22:00:00Z or Unix seconds\n");
		return 2;
	}
	if (tool_tls_setup("meta restore") < 0)
		return 2;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("meta restore", master, timeout_s, false, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	ret = backup_find(c, NULL, &ms, &n, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "kelp meta restore: %s\n", err[0] ? err : strerror(-ret));
		goto out_client;
	}
	if (list) {
		list_backups(ms, n);
		ret = 0;
		goto out_client;
	}
	for (int i = 0; i < n; i++)
		if (!*fs_text || ms[i].fs == (uint32_t)strtoul(fs_text, NULL, 16))
			m = m ? (ret = -EEXIST, m) : &ms[i];
	if (!m || ret == -EEXIST) {
		fprintf(stderr, "kelp meta restore: %s\n",
			!m ? "no backup of this filesystem in the cluster (see -list)"
			   : "the cluster holds backups of several filesystems: choose one with "
			     "-fs (see -list)");
		ret = -ENOENT;
		goto out_client;
	}
	for (int i = 0; i < m->n && chosen < 0; i++)
		if (!at_ns || m->e[i].time_ns <= at_ns)
			chosen = i;
	if (chosen < 0) {
		fprintf(stderr, "kelp meta restore: no backup taken at or before %s\n", at);
		ret = -ENOENT;
		goto out_client;
	}
	tool_cluster_id(master, timeout_s * 1000, cid, sizeof(cid));
	if (meta_tool_open_kv("restore", meta, timeout_s, &kv) < 0) {
		ret = -EIO;
		goto out_client;
	}
	tool_progress_start(&p, "restore", 0, 0);
	lo.progress = meta_tool_progress;
	lo.progress_ctx = &p;
	ret = backup_restore(kv, c, m, chosen, cid, *tmp_dir ? tmp_dir : NULL, &lo, &used, err,
			     sizeof(err));
	tool_progress_finish(&p);
	kv->ops->close(kv);
	if (ret < 0) {
		fprintf(stderr, "kelp meta restore: %s\n", err[0] ? err : strerror(-ret));
		goto out_client;
	}
	fmt_time(m->e[used].time_ns, when, sizeof(when));
	printf("{\"fs\":\"%08x\",\"time\":\"%s\",\"time_ns\":%" PRId64 ",\"records\":%" PRIu64
	       ",\"fell_back\":%d}\n",
	       m->fs, when, m->e[used].time_ns, m->e[used].records, used - chosen);
out_client:
	backup_manifests_free(ms, n);
	kelp_client_free(c);
	curl_global_cleanup();
	return ret < 0 ? 1 : 0;
}
