/*
 * kelp status: a readable table of the cluster.
 *
 * Asks every master of -master for /cluster/status (role, leader, peers), then the
 * leader for /dir/status (layouts) and /ui/data (every volume server, dead ones too,
 * every volume with its live and wanted copies), and each live volume server for its
 * disks (/status). Prints aligned tables with totals, the under-replicated volumes, or
 * with -json one JSON object. Exit status 1 when no master answered.
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/flags.h"
#include "cluster/client/client.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

#define MAX_COLUMNS 10

/* A table printed with columns as wide as their widest cell. */
struct table {
	int n_cols;
	char **cells; /* rows * n_cols, malloc'ed strings */
	size_t rows, cap;
};

static void table_init(struct table *t, int n_cols)
{
	memset(t, 0, sizeof(*t));
	t->n_cols = n_cols;
}

/* Adds a row of n_cols printf-formatted cells; each format arg is one cell's text. */
static void table_row(struct table *t, ...)
{
	va_list ap;

	if (t->rows == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 16;
		char **p = realloc(t->cells, ncap * (size_t)t->n_cols * sizeof(*p));

		if (!p)
			return;
		t->cells = p;
		t->cap = ncap;
	}
	va_start(ap, t);
	for (int i = 0; i < t->n_cols; i++) {
		const char *s = va_arg(ap, const char *);

		t->cells[t->rows * (size_t)t->n_cols + (size_t)i] = strdup(s ? s : "");
	}
	va_end(ap);
	t->rows++;
}

static void table_print(struct table *t, const char *indent)
{
	size_t width[MAX_COLUMNS] = {0};

	for (size_t r = 0; r < t->rows; r++)
		for (int i = 0; i < t->n_cols; i++) {
			const char *s = t->cells[r * (size_t)t->n_cols + (size_t)i];
			size_t l = s ? strlen(s) : 0;

			if (l > width[i])
				width[i] = l;
		}
	for (size_t r = 0; r < t->rows; r++) {
		fputs(indent, stdout);
		for (int i = 0; i < t->n_cols; i++) {
			const char *s = t->cells[r * (size_t)t->n_cols + (size_t)i];

			if (i == t->n_cols - 1)
				printf("%s\n", s ? s : "");
			else
				printf("%-*s  ", (int)width[i], s ? s : "");
		}
	}
	for (size_t i = 0; i < t->rows * (size_t)t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->rows = t->cap = 0;
}

static const char *str_field(json_t *obj, const char *key, const char *dflt)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : dflt;
}

static long long int_field(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/* "VolumeIds" is "1-3 7" in SeaweedFS; accept an array of numbers as well. */
static void volume_ids_text(json_t *v, char *buf, size_t cap)
{
	size_t i, len = 0;
	json_t *e;

	buf[0] = '\0';
	if (json_is_string(v)) {
		snprintf(buf, cap, "%s", json_string_value(v));
		return;
	}
	json_array_foreach(v, i, e)
	{
		if (len < cap)
			len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? " " : "",
						(long long)json_integer_value(e));
	}
}

/* Prints the masters table; returns the number that answered. */
static int print_masters(struct kelp_client *c, const char *masters, char *leader_out,
			 size_t leader_cap)
{
	struct table t;
	char **list;
	int n = kelp_parse_master_list(masters, &list), answered = 0;
	json_t *any_status = NULL;

	leader_out[0] = '\0';
	if (n < 0)
		return 0;
	table_init(&t, 4);
	table_row(&t, "MASTER", "ROLE", "LEADER", "MAX VOLUME ID");
	for (int i = 0; i < n; i++) {
		char *body = NULL, leader[KELP_URL_MAX], maxvid[24];
		size_t len;
		long status = 0;
		bool is_leader;
		int rc = kelp_client_get(c, list[i], "/cluster/status", &status, &body, &len);

		if (rc < 0) {
			table_row(&t, list[i], "down", strerror(-rc), "");
		} else if (status != 200 || kelp_parse_cluster_status(body, len, &is_leader, leader,
								      sizeof(leader)) < 0) {
			char what[64];

			snprintf(what, sizeof(what), "HTTP %ld", status);
			table_row(&t, list[i], "?", what, "");
		} else {
			json_t *root = json_loadb(body, len, 0, NULL);

			answered++;
			snprintf(maxvid, sizeof(maxvid), "%lld", int_field(root, "MaxVolumeId"));
			table_row(&t, list[i], is_leader ? "leader" : "follower",
				  leader[0] ? leader : "(none known)", maxvid);
			if (is_leader && !leader[0])
				snprintf(leader, sizeof(leader), "%s", list[i]);
			if (leader[0] && (!leader_out[0] || is_leader))
				snprintf(leader_out, leader_cap, "%s", leader);
			if (!any_status || is_leader) {
				json_decref(any_status);
				any_status = root;
			} else {
				json_decref(root);
			}
		}
		free(body);
	}
	printf("Masters\n");
	table_print(&t, "  ");
	if (any_status) {
		json_t *peers = json_object_get(any_status, "Peers"), *p;
		size_t i;

		printf("  leader: %s", leader_out[0] ? leader_out : "(none known)");
		if (json_array_size(peers)) {
			printf(", raft peers:");
			json_array_foreach(peers, i, p)
			{
				if (json_is_string(p))
					printf(" %s", json_string_value(p));
			}
		}
		printf("\n");
	}
	json_decref(any_status);
	kelp_free_master_list(list);
	return answered;
}

static void human(double n, char *buf, size_t cap)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	int u = 0;

	while (n >= 1024 && u < 5) {
		n /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%.0f B", n);
	else
		snprintf(buf, cap, "%.1f %s", n, units[u]);
}

/*
 * Each live volume server's disks (its /status DiskStatuses): free and total bytes
 * summed, into node["diskFree"], node["diskTotal"]; left out when it does not answer.
 */
static void add_disks(struct kelp_client *c, json_t *nodes)
{
	size_t i, j;
	json_t *n, *d;

	json_array_foreach(nodes, i, n)
	{
		char *body = NULL;
		size_t len;
		long status = 0;
		json_t *st;
		long long free_b = 0, all = 0;

		if (!json_is_true(json_object_get(n, "alive")) ||
		    kelp_client_get(c, str_field(n, "url", ""), "/status", &status, &body, &len) <
			0 ||
		    status != 200 || !(st = json_loadb(body, len, 0, NULL))) {
			free(body);
			continue;
		}
		json_array_foreach(json_object_get(st, "DiskStatuses"), j, d)
		{
			free_b += int_field(d, "free");
			all += int_field(d, "all");
		}
		json_object_set_new(n, "diskFree", json_integer(free_b));
		json_object_set_new(n, "diskTotal", json_integer(all));
		json_decref(st);
		free(body);
	}
}

/* Per collection: volumes, files, bytes, deleted bytes (from /ui/data's volumes). */
static json_t *collections_of(json_t *vols)
{
	json_t *out = json_object(), *v;
	size_t i;

	json_array_foreach(vols, i, v)
	{
		const char *name = str_field(v, "collection", "");
		json_t *c = json_object_get(out, name);

		if (!c) {
			c = json_pack("{s:i,s:i,s:i,s:i}", "volumes", 0, "files", 0, "bytes", 0,
				      "deletedBytes", 0);
			json_object_set_new(out, name, c);
		}
		json_object_set_new(c, "volumes", json_integer(int_field(c, "volumes") + 1));
		json_object_set_new(c, "files",
				    json_integer(int_field(c, "files") + int_field(v, "files")));
		json_object_set_new(c, "bytes",
				    json_integer(int_field(c, "bytes") + int_field(v, "size")));
		json_object_set_new(
		    c, "deletedBytes",
		    json_integer(int_field(c, "deletedBytes") + int_field(v, "deletedBytes")));
	}
	return out;
}

static void print_servers(json_t *data)
{
	json_t *nodes = json_object_get(data, "nodes"), *n;
	long long live = 0, dead = 0, vols = 0, max = 0, used = 0;
	size_t i;
	struct table t;

	table_init(&t, 8);
	table_row(&t, "DATA CENTER", "RACK", "VOLUME SERVER", "STATE", "VOLUMES", "USED",
		  "DISK FREE", "VOLUME IDS");
	json_array_foreach(nodes, i, n)
	{
		char v[48], u[24], f[64], ids[1024], state[48];
		json_t *vl = json_object_get(n, "volumes"), *e;
		size_t k, len = 0;
		bool alive = json_is_true(json_object_get(n, "alive"));

		snprintf(v, sizeof(v), "%zu/%lld", json_array_size(vl), int_field(n, "maxVolumes"));
		human((double)int_field(n, "usedBytes"), u, sizeof(u));
		if (json_object_get(n, "diskTotal")) {
			char a[24], b[24];
			long long all = int_field(n, "diskTotal"), fr = int_field(n, "diskFree");

			human((double)fr, a, sizeof(a));
			human((double)all, b, sizeof(b));
			snprintf(f, sizeof(f), "%s of %s (%.0f%%)", a, b,
				 all > 0 ? 100.0 * (double)fr / (double)all : 0.0);
		} else {
			snprintf(f, sizeof(f), "?");
		}
		if (alive)
			snprintf(state, sizeof(state), "alive");
		else
			snprintf(state, sizeof(state), "DEAD (%.0f s)",
				 json_real_value(json_object_get(n, "lastSeenSecondsAgo")));
		ids[0] = '\0';
		json_array_foreach(vl, k, e)
		{
			if (len < sizeof(ids))
				len += (size_t)snprintf(ids + len, sizeof(ids) - len, "%s%lld",
							k ? " " : "", int_field(e, "id"));
		}
		table_row(&t, str_field(n, "dataCenter", "?"), str_field(n, "rack", "?"),
			  str_field(n, "url", "?"), state, v, u, f, ids);
		alive ? live++ : dead++;
		vols += (long long)json_array_size(vl);
		max += int_field(n, "maxVolumes");
		used += int_field(n, "usedBytes");
	}
	printf("\nVolume servers\n");
	if (json_array_size(nodes))
		table_print(&t, "  ");
	else
		printf("  (none)\n");
	{
		char u[24];

		human((double)used, u, sizeof(u));
		printf("  total: %lld alive, %lld dead; %lld volume%s in %lld slots; %s used\n",
		       live, dead, vols, vols == 1 ? "" : "s", max, u);
	}
}

static void print_collections(json_t *colls)
{
	const char *name;
	json_t *c;
	struct table t;

	table_init(&t, 5);
	table_row(&t, "COLLECTION", "VOLUMES", "FILES", "SIZE", "GARBAGE");
	json_object_foreach(colls, name, c)
	{
		char v[24], f[24], sz[24], g[24];
		long long bytes = int_field(c, "bytes");

		snprintf(v, sizeof(v), "%lld", int_field(c, "volumes"));
		snprintf(f, sizeof(f), "%lld", int_field(c, "files"));
		human((double)bytes, sz, sizeof(sz));
		snprintf(g, sizeof(g), "%.1f%%",
			 bytes > 0 ? 100.0 * (double)int_field(c, "deletedBytes") / (double)bytes
				   : 0.0);
		table_row(&t, *name ? name : "(default)", v, f, sz, g);
	}
	printf("\nCollections\n");
	if (json_object_size(colls))
		table_print(&t, "  ");
	else
		printf("  (no volumes yet)\n");
}

/* Lists the volumes with fewer live copies than their replication asks for. */
static void print_under_replicated(json_t *under)
{
	json_t *v, *l;
	size_t i, j;

	if (!json_array_size(under)) {
		printf("\nEvery volume has all its copies.\n");
		return;
	}
	printf("\nUnder-replicated volumes: %zu\n", json_array_size(under));
	json_array_foreach(under, i, v)
	{
		printf(
		    "  volume %lld (collection \"%s\", replication %s): %lld of %lld copies alive;",
		    int_field(v, "id"), str_field(v, "collection", ""),
		    str_field(v, "replication", ""), int_field(v, "live"), int_field(v, "wanted"));
		json_array_foreach(json_object_get(v, "locations"), j, l)
		{
			printf(" %s%s", str_field(l, "url", "?"),
			       json_is_true(json_object_get(l, "alive")) ? "" : " (dead)");
		}
		printf("\n");
	}
}

static void print_layouts(json_t *top)
{
	json_t *layouts = json_object_get(top, "Layouts"), *l;
	size_t i;
	struct table t;

	if (json_array_size(layouts) == 0)
		return;
	table_init(&t, 4);
	table_row(&t, "COLLECTION", "REPLICATION", "TTL", "WRITABLE VOLUMES");
	json_array_foreach(layouts, i, l)
	{
		char ids[1024];

		volume_ids_text(json_object_get(l, "writables"), ids, sizeof(ids));
		table_row(&t,
			  *str_field(l, "collection", "") ? str_field(l, "collection", "")
							  : "(default)",
			  str_field(l, "replication", ""),
			  *str_field(l, "ttl", "") ? str_field(l, "ttl", "") : "-",
			  ids[0] ? ids : "(none)");
	}
	printf("\nLayouts\n");
	table_print(&t, "  ");
}

/* The leader's repair: volumes short of copies, copies running and recent. */
static void print_repair(struct kelp_client *c)
{
	char *body = NULL;
	size_t len, i;
	long status = 0;
	json_t *root, *rep, *u, *j;
	struct table t;
	int shown = 0;

	if (kelp_client_master_get(c, "/cluster/repair", true, &status, &body, &len, NULL) < 0 ||
	    status != 200 || !(root = json_loadb(body, len, 0, NULL))) {
		free(body);
		return;
	}
	free(body);
	rep = json_object_get(root, "Repair");
	printf("\nRepair (after %llds under-replicated, %lld copies per server, %s)\n",
	       int_field(rep, "DelaySeconds"), int_field(rep, "Concurrency"),
	       json_real_value(json_object_get(rep, "MBps")) > 0 ? "MB/s limited"
								 : "no MB/s limit");
	if (*str_field(rep, "LockedBy", ""))
		printf("  locked by %s\n", str_field(rep, "LockedBy", ""));
	table_init(&t, 5);
	table_row(&t, "VOLUME", "COPIES", "WANTED", "FOR", "STATE");
	json_array_foreach(json_object_get(rep, "UnderReplicated"), i, u)
	{
		char v[24], h[24], w[24], f[32], st[400];

		snprintf(v, sizeof(v), "%lld", int_field(u, "volume"));
		snprintf(h, sizeof(h), "%lld", int_field(u, "copies"));
		snprintf(w, sizeof(w), "%lld", int_field(u, "want"));
		snprintf(f, sizeof(f), "%.0fs", json_real_value(json_object_get(u, "seconds")));
		if (json_is_true(json_object_get(u, "copying")))
			snprintf(st, sizeof(st), "copying");
		else if (*str_field(u, "lastError", ""))
			snprintf(st, sizeof(st), "%.300s", str_field(u, "lastError", ""));
		else
			snprintf(st, sizeof(st), "copy in %.0fs",
				 json_real_value(json_object_get(u, "startsInSeconds")));
		table_row(&t, v, h, w, f, st);
		shown++;
	}
	if (shown)
		table_print(&t, "  ");
	else
		printf("  every volume has its copies\n");
	table_init(&t, 6);
	table_row(&t, "VOLUME", "FROM", "TO", "STATE", "COPIED", "SECONDS");
	shown = 0;
	json_array_foreach(json_object_get(rep, "Copies"), i, j)
	{
		char v[24], b[64], sec[32];
		double total = (double)int_field(j, "total"), done = (double)int_field(j, "bytes");

		snprintf(v, sizeof(v), "%lld", int_field(j, "volume"));
		snprintf(b, sizeof(b), "%.1f/%.1f MiB", done / 1048576.0, total / 1048576.0);
		snprintf(sec, sizeof(sec), "%.1f", json_real_value(json_object_get(j, "seconds")));
		table_row(&t, v, str_field(j, "source", ""), str_field(j, "target", ""),
			  str_field(j, "state", ""), b, sec);
		shown++;
	}
	if (shown) {
		printf("  copies (running and recent):\n");
		table_print(&t, "  ");
	}
	json_decref(root);
}

/* GET path from the leader as JSON; NULL with the reason printed. */
static json_t *leader_json(struct kelp_client *c, const char *path)
{
	char from[KELP_URL_MAX], *body = NULL;
	size_t len;
	long status = 0;
	json_t *root = NULL;

	if (kelp_client_master_get(c, path, true, &status, &body, &len, from) < 0)
		fprintf(stderr, "kelp status: %s\n", kelp_client_error(c));
	else if (status != 200 || !(root = json_loadb(body, len, 0, NULL)))
		fprintf(stderr, "kelp status: %s answered %s with HTTP %ld: %.200s\n", from, path,
			status, body);
	free(body);
	return root;
}

int status_main(int argc, char **argv)
{
	static const char summary[] =
	    "show the cluster: masters and leader, volume servers (alive or dead, volumes, "
	    "space), collections (files, size, garbage), under-replicated volumes, layouts";
	char *master = "localhost:9333";
	int timeout_s = 10;
	bool as_json = false;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per request"),
	    FLAG("json", FLAG_BOOL, &as_json,
		 "print one JSON object (leader, masters, servers, volumes, collections, "
		 "underReplicated, layouts) instead of tables"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	char leader[KELP_URL_MAX];
	struct kelp_client *c;
	json_t *dir, *data;
	int ret;

	ret = flags_parse(flags, "status", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("status") < 0)
		return 2;
	if (ret != argc - 1) {
		fprintf(stderr, "kelp status: unexpected argument \"%s\"\n", argv[ret + 1]);
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("status", master, timeout_s, false, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	if (!as_json)
		print_masters(c, master, leader, sizeof(leader));
	dir = leader_json(c, "/dir/status");
	data = dir ? leader_json(c, "/ui/data") : NULL;
	ret = 1;
	if (dir && !json_is_object(json_object_get(dir, "Topology"))) {
		fprintf(stderr, "kelp status: /dir/status has no Topology\n");
	} else if (dir && data) {
		json_t *vols = json_object_get(data, "volumes"), *under = json_array(), *v, *colls;
		size_t i;

		add_disks(c, json_object_get(data, "nodes"));
		json_array_foreach(vols, i, v)
		{
			if (int_field(v, "live") < int_field(v, "wanted"))
				json_array_append(under, v);
		}
		colls = collections_of(vols);
		if (as_json) {
			json_t *out =
			    json_pack("{s:s,s:O,s:O,s:O,s:o,s:o,s:O}", "leader",
				      str_field(data, "leader", ""), "masters",
				      json_object_get(data, "peers"), "servers",
				      json_object_get(data, "nodes"), "volumes", vols,
				      "collections", colls, "underReplicated", under, "layouts",
				      json_object_get(json_object_get(dir, "Topology"), "Layouts"));

			json_dumpf(out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
			printf("\n");
			json_decref(out);
		} else {
			print_servers(data);
			print_collections(colls);
			print_under_replicated(under);
			print_layouts(json_object_get(dir, "Topology"));
			print_repair(c);
			json_decref(colls);
			json_decref(under);
		}
		ret = 0;
	}
	json_decref(dir);
	json_decref(data);
	kelp_client_free(c);
	curl_global_cleanup();
	return ret;
}
