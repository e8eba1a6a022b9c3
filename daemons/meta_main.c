/*
 * kelp meta: tools for a filesystem's metadata, one subcommand each (a table, so other
 * files add theirs with one line): init, dump, load, backup, restore.
 *   kelp meta init -meta=SPEC [-master=...]
 *   kelp meta dump -meta=SPEC > fs.json          (a consistent snapshot, while mounted)
 *   kelp meta load -meta=SPEC [-master=...] < fs.json   (into an empty engine)
 *   kelp meta backup / restore: daemons/meta_backup.c
 * Exit status: 0, 1 when the operation failed, 2 on bad flags.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"
#include "daemons/meta_tools.h"
#include "fuse/dump.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

/* ---------------------------------------------------------------- shared */

void meta_tool_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct tool_progress *p = ctx;
	uint64_t seen = atomic_load(&p->items);

	if (total && !p->total_items)
		p->total_items = total;
	if (done > seen)
		tool_progress_add(p, done - seen, 0, false);
}

int meta_tool_open_kv(const char *cmd, const char *spec, int timeout_s, struct kv **out)
{
	char shown[512];
	int rc;

	kv_mask_url(spec, shown, sizeof(shown));
	rc = dump_open_kv(spec, timeout_s * 1000, out);
	if (rc < 0)
		fprintf(stderr, "kelp meta %s: cannot open the metadata in %s: %s\n", cmd, shown,
			rc == -ENOTCONN ? "the database is unreachable" : strerror(-rc));
	return rc;
}

/* ---------------------------------------------------------------- init */

static int init_main(int argc, char **argv)
{
	static const char summary[] =
	    "create an empty filesystem's metadata (schema, root directory) in -meta";
	char *meta = "", *master = "";
	int timeout_s = 30, ret, first;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta, "an LMDB directory or a postgres:// URL (required)"),
	    FLAG("master", FLAG_STRING, &master,
		 "masters: record their cluster id (a mount of another cluster is refused)"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds to wait for the database"),
	    FLAG_END,
	};
	struct meta_options mo = {.timeout_ms = 0};
	struct meta *m;
	char cid[128] = "";

	ret = tool_parse_args(flags, "meta init", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*meta) {
		fprintf(stderr, "kelp meta init: -meta is required\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (*master)
		tool_cluster_id(master, timeout_s * 1000, cid, sizeof(cid));
	mo.timeout_ms = timeout_s * 1000;
	mo.cluster_id = cid;
	ret = meta_open_opts(meta, &mo, &m);
	if (ret == 0 && *cid && !meta_shared(m)) {
		struct kv *kv = meta_kv(m);
		struct kv_txn *t;

		ret = kv->ops->begin(kv, true, &t);
		if (ret == 0) {
			ret = kv_set_prop(t, "cluster_id", cid);
			ret = ret < 0 ? (kv->ops->abort(t), ret) : kv->ops->commit(t);
		}
	}
	curl_global_cleanup();
	if (ret < 0) {
		fprintf(stderr, "kelp meta init: %s\n", strerror(-ret));
		return 1;
	}
	meta_close(m);
	return 0;
}

/* ---------------------------------------------------------------- dump */

static int out_stdout(void *ctx, const void *buf, size_t n)
{
	if (fwrite(buf, 1, n, stdout) != n)
		return -errno ? -errno : -EIO;
	return 0;
}

static int dump_main(int argc, char **argv)
{
	static const char summary[] =
	    "write the whole metadata to stdout as JSON lines: one consistent snapshot (a read "
	    "transaction), also while mounted";
	char *meta = "";
	int timeout_s = 30, ret, first;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta, "an LMDB directory or a postgres:// URL (required)"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds to wait for the database"),
	    FLAG_END,
	};
	struct tool_progress p;
	struct dump_stats st;
	struct kv *kv;

	ret = tool_parse_args(flags, "meta dump", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*meta) {
		fprintf(stderr, "kelp meta dump: -meta is required\n");
		return 2;
	}
	if (meta_tool_open_kv("dump", meta, timeout_s, &kv) < 0)
		return 1;
	tool_progress_start(&p, "dump", 0, 0);
	ret = dump_write(kv, out_stdout, NULL, meta_tool_progress, &p, &st);
	if (ret == 0 && fflush(stdout) != 0)
		ret = -errno;
	tool_progress_finish(&p);
	kv->ops->close(kv);
	if (ret < 0) {
		fprintf(stderr, "kelp meta dump: %s\n", strerror(-ret));
		return 1;
	}
	fprintf(stderr, "kelp meta dump: %llu records (%llu inodes), %llu bytes\n",
		(unsigned long long)st.records, (unsigned long long)st.inodes,
		(unsigned long long)st.bytes);
	return 0;
}

/* ---------------------------------------------------------------- load */

static ssize_t in_gz(void *ctx, void *buf, size_t cap)
{
	int n = gzread((gzFile)ctx, buf, (unsigned)(cap > (1u << 30) ? 1u << 30 : cap));

	if (n < 0) {
		int e;
		const char *msg = gzerror((gzFile)ctx, &e);

		log_error("meta load: %s", msg);
		return e == Z_ERRNO ? -errno : -EINVAL;
	}
	return n;
}

int meta_tool_load(const char *cmd, struct kv *kv, gzFile in, const char *cluster_id,
		   struct dump_stats *st)
{
	struct dump_load_options o = {.cluster_id = cluster_id};
	struct tool_progress p;
	char err[512];
	int rc;

	tool_progress_start(&p, "load", 0, 0);
	o.progress = meta_tool_progress;
	o.progress_ctx = &p;
	rc = dump_load(kv, in_gz, in, &o, st, err, sizeof(err));
	tool_progress_finish(&p);
	if (rc < 0)
		fprintf(stderr, "kelp meta %s: %s\n", cmd, err);
	return rc;
}

static int load_main(int argc, char **argv)
{
	static const char summary[] =
	    "read a dump (kelp meta dump, plain or gzip) from stdin into an empty -meta";
	char *meta = "", *master = "";
	int timeout_s = 30, ret, first;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &meta,
		 "an empty LMDB directory or PostgreSQL database (required)"),
	    FLAG("master", FLAG_STRING, &master,
		 "masters: their cluster id must be the dump's (its blobs are there)"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds to wait for the database"),
	    FLAG_END,
	};
	struct dump_stats st;
	char cid[128] = "";
	struct kv *kv;
	gzFile in;

	ret = tool_parse_args(flags, "meta load", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (!*meta) {
		fprintf(stderr, "kelp meta load: -meta is required\n");
		return 2;
	}
	if (*master) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		tool_cluster_id(master, timeout_s * 1000, cid, sizeof(cid));
		curl_global_cleanup();
	}
	in = gzdopen(dup(STDIN_FILENO), "rb");
	if (!in) {
		fprintf(stderr, "kelp meta load: cannot read stdin\n");
		return 1;
	}
	gzbuffer(in, 1 << 17);
	if (meta_tool_open_kv("load", meta, timeout_s, &kv) < 0) {
		gzclose(in);
		return 1;
	}
	ret = meta_tool_load("load", kv, in, cid, &st);
	gzclose(in);
	kv->ops->close(kv);
	if (ret < 0)
		return 1;
	fprintf(stderr, "kelp meta load: %llu records loaded\n", (unsigned long long)st.records);
	return 0;
}

/* ---------------------------------------------------------------- dispatch */

static const struct meta_command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} meta_commands[] = {
    {"init", init_main, "create an empty filesystem's metadata"},
    {"dump", dump_main, "write the whole metadata to stdout (JSON lines)"},
    {"load", load_main, "read a dump into an empty metadata"},
    {"backup", meta_backup_main, "store a compressed dump in the cluster"},
    {"restore", meta_restore_main, "rebuild a metadata from a backup in the cluster"},
    {"sessions", meta_sessions_main, "list the mounts registered in the metadata"},
};

#define N_META_COMMANDS (sizeof(meta_commands) / sizeof(meta_commands[0]))

int meta_main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < N_META_COMMANDS; i++)
			if (!strcmp(argv[1], meta_commands[i].name))
				return meta_commands[i].main(argc - 1, argv + 1);
	}
	if (argc >= 2 && strcmp(argv[1], "-h") && strcmp(argv[1], "-help") &&
	    strcmp(argv[1], "--help") && strcmp(argv[1], "help"))
		fprintf(stderr, "kelp meta: unknown subcommand \"%s\"\n\n", argv[1]);
	printf("usage: kelp meta <subcommand> [flags]\n\nsubcommands:\n");
	for (size_t i = 0; i < N_META_COMMANDS; i++)
		printf("  %-10s %s\n", meta_commands[i].name, meta_commands[i].summary);
	printf("\n\"kelp meta <subcommand> -h\" lists its flags.\n");
	return argc >= 2 && strcmp(argv[1], "-h") && strcmp(argv[1], "-help") &&
		       strcmp(argv[1], "--help") && strcmp(argv[1], "help")
		   ? 2
		   : 0;
}
