/*
 * kelp status: a readable table of the cluster.
 *
 * Asks every master of -master for /cluster/status (role, leader, peers), then the
 * leader for /dir/status (data centers > racks > volume servers, layouts), and prints
 * them as aligned tables with totals. Exit status 1 when no master answered
 * /dir/status.
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

static void print_topology(json_t *top)
{
	json_t *dcs = json_object_get(top, "DataCenters"), *dc, *rack, *dn, *layouts, *l;
	long long nodes = 0, volumes = 0, max = 0, free_slots = 0, racks = 0;
	size_t i, j, k;
	struct table t;

	table_init(&t, 8);
	table_row(&t, "DATA CENTER", "RACK", "VOLUME SERVER", "PUBLIC URL", "VOLUMES", "MAX",
		  "FREE", "VOLUME IDS");
	json_array_foreach(dcs, i, dc)
	{
		json_array_foreach(json_object_get(dc, "Racks"), j, rack)
		{
			racks++;
			json_array_foreach(json_object_get(rack, "DataNodes"), k, dn)
			{
				char v[24], m[24], f[24], ids[1024];
				long long nv = int_field(dn, "Volumes"), nm = int_field(dn, "Max");
				long long nf =
				    json_object_get(dn, "Free") ? int_field(dn, "Free") : nm - nv;

				snprintf(v, sizeof(v), "%lld", nv);
				snprintf(m, sizeof(m), "%lld", nm);
				snprintf(f, sizeof(f), "%lld", nf);
				volume_ids_text(json_object_get(dn, "VolumeIds"), ids, sizeof(ids));
				table_row(&t, str_field(dc, "Id", "?"), str_field(rack, "Id", "?"),
					  str_field(dn, "Url", "?"), str_field(dn, "PublicUrl", ""),
					  v, m, f, ids);
				nodes++;
				volumes += nv;
				max += nm;
				free_slots += nf;
			}
		}
	}
	printf("\nVolume servers\n");
	if (nodes)
		table_print(&t, "  ");
	else
		printf("  (none)\n");
	printf("  total: %zu data center%s, %lld rack%s, %lld volume server%s, %lld volume%s in "
	       "%lld slots, %lld free\n",
	       json_array_size(dcs), json_array_size(dcs) == 1 ? "" : "s", racks,
	       racks == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s", volumes,
	       volumes == 1 ? "" : "s", max, free_slots);

	layouts = json_object_get(top, "Layouts");
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

int status_main(int argc, char **argv)
{
	static const char summary[] =
	    "show the cluster: masters and leader, data centers, racks, volume servers";
	char *master = "localhost:9333";
	int timeout_s = 10;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per request"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	char leader[KELP_URL_MAX], from[KELP_URL_MAX], *body = NULL;
	struct kelp_client *c;
	json_t *root;
	size_t len;
	long status = 0;
	int ret, rc;

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
	print_masters(c, master, leader, sizeof(leader));
	rc = kelp_client_master_get(c, "/dir/status", true, &status, &body, &len, from);
	ret = 1;
	if (rc < 0) {
		fprintf(stderr, "kelp status: %s\n", kelp_client_error(c));
	} else if (status != 200 || !(root = json_loadb(body, len, 0, NULL))) {
		fprintf(stderr, "kelp status: %s answered /dir/status with HTTP %ld: %.200s\n",
			from, status, body);
	} else {
		json_t *top = json_object_get(root, "Topology");

		if (!json_is_object(top)) {
			fprintf(stderr, "kelp status: /dir/status from %s has no Topology\n", from);
		} else {
			print_topology(top);
			ret = 0;
		}
		json_decref(root);
	}
	free(body);
	kelp_client_free(c);
	curl_global_cleanup();
	return ret;
}
