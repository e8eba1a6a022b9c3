#include "cluster/client/shell.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/base/util.h"
#include "cluster/common/layout.h"
#include "cluster/net/auth.h"
#include "cluster/net/http_client.h"

#define MAX_MASTERS   16
#define LOCK_RENEW_NS (10ull * 1000000000ull)

struct shell {
	struct shell_options opt;
	char *masters[MAX_MASTERS];
	int n_masters;
	char leader[160];
	char owner[160];
	pthread_mutex_t lock; /* lock_token, renewing */
	pthread_cond_t cond;
	char lock_token[64];
	bool renewer_running, stop_renewer;
	pthread_t renewer;
	volatile sig_atomic_t no_interrupt;
};

/* ---------------------------------------------------------------- parsing */

int shell_parse_line(const char *line, struct shell_command **cmds, int *n, char *err,
		     size_t err_cap)
{
	struct shell_command *out = NULL;
	int n_out = 0;
	char *word = malloc(strlen(line) + 1);
	size_t wl = 0;
	bool in_word = false;
	char **argv = NULL;
	int argc = 0;
	const char *p = line;

	*cmds = NULL;
	*n = 0;
	if (!word)
		return -ENOMEM;
	for (;;) {
		char ch = *p;
		bool end_word = false, end_cmd = false;

		if (ch == '\0') {
			end_word = end_cmd = true;
		} else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
			end_word = true;
			p++;
		} else if (ch == ';') {
			end_word = end_cmd = true;
			p++;
		} else if (ch == '"' || ch == '\'') {
			char q = ch;

			in_word = true;
			for (p++; *p && *p != q; p++) {
				if (q == '"' && *p == '\\' && p[1])
					p++;
				word[wl++] = *p;
			}
			if (!*p) {
				snprintf(err, err_cap, "unterminated %c quote", q);
				goto fail;
			}
			p++;
		} else if (ch == '\\') {
			if (!p[1]) {
				snprintf(err, err_cap, "a backslash ends the line");
				goto fail;
			}
			in_word = true;
			word[wl++] = p[1];
			p += 2;
		} else {
			in_word = true;
			word[wl++] = ch;
			p++;
		}
		if (end_word && in_word) {
			char **a = realloc(argv, sizeof(*a) * (size_t)(argc + 2));

			if (!a)
				goto nomem;
			argv = a;
			word[wl] = '\0';
			argv[argc] = strdup(word);
			if (!argv[argc])
				goto nomem;
			argv[++argc] = NULL;
			wl = 0;
			in_word = false;
		}
		if (end_cmd) {
			if (argc > 0) {
				struct shell_command *c =
				    realloc(out, sizeof(*c) * (size_t)(n_out + 1));

				if (!c)
					goto nomem;
				out = c;
				out[n_out].argc = argc;
				out[n_out++].argv = argv;
				argv = NULL;
				argc = 0;
			}
			if (ch == '\0')
				break;
		}
	}
	free(word);
	*cmds = out;
	*n = n_out;
	return 0;
nomem:
	snprintf(err, err_cap, "out of memory");
fail:
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
	free(word);
	shell_free_commands(out, n_out);
	return -EINVAL;
}

void shell_free_commands(struct shell_command *cmds, int n)
{
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < cmds[i].argc; k++)
			free(cmds[i].argv[k]);
		free(cmds[i].argv);
	}
	free(cmds);
}

bool shell_pattern_match(const char *pat, const char *s)
{
	if (!*pat)
		return true;
	for (; *pat; pat++, s++) {
		if (*pat == '*') {
			for (const char *t = s;; t++) {
				if (!pat[1] || shell_pattern_match(pat + 1, t))
					return true;
				if (!*t)
					return false;
			}
		}
		if (!*s || (*pat != '?' && *pat != *s))
			return false;
	}
	return !*s;
}

/* Command flags: -name=value, -name value, --name..., bools as -name / -name=false. */
struct flagdef {
	const char *name;
	bool is_bool;
	const char *value; /* after parsing: NULL when absent, "true" for a bare bool */
};

static int parse_flags(struct shell *sh, struct flagdef *defs, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq;
		struct flagdef *d = NULL;
		size_t len;

		if (a[0] != '-') {
			fprintf(sh->opt.err, "error: unexpected argument \"%s\"\n", a);
			return -EINVAL;
		}
		a += a[1] == '-' ? 2 : 1;
		eq = strchr(a, '=');
		len = eq ? (size_t)(eq - a) : strlen(a);
		for (struct flagdef *f = defs; f->name; f++)
			if (strlen(f->name) == len && !strncmp(f->name, a, len))
				d = f;
		if (!d) {
			fprintf(sh->opt.err, "error: %s: unknown flag -%.*s\n", argv[0], (int)len,
				a);
			return -EINVAL;
		}
		if (eq)
			d->value = eq + 1;
		else if (d->is_bool)
			d->value = "true";
		else if (i + 1 < argc)
			d->value = argv[++i];
		else {
			fprintf(sh->opt.err, "error: %s: flag -%s needs a value\n", argv[0],
				d->name);
			return -EINVAL;
		}
	}
	return 0;
}

static const char *flag_str(const struct flagdef *defs, const char *name, const char *def)
{
	for (const struct flagdef *f = defs; f->name; f++)
		if (!strcmp(f->name, name))
			return f->value ? f->value : def;
	return def;
}

static bool flag_bool(const struct flagdef *defs, const char *name)
{
	const char *v = flag_str(defs, name, NULL);

	return v && (!strcmp(v, "true") || !strcmp(v, "1"));
}

/* ---------------------------------------------------------------- output */

static void out(struct shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct shell *sh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(sh->opt.out, fmt, ap);
	va_end(ap);
	fflush(sh->opt.out);
}

static int fail(struct shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct shell *sh, const char *fmt, ...)
{
	va_list ap;

	fputs("error: ", sh->opt.err);
	va_start(ap, fmt);
	vfprintf(sh->opt.err, fmt, ap);
	va_end(ap);
	fputc('\n', sh->opt.err);
	fflush(sh->opt.err);
	return -1;
}

static bool interrupted(struct shell *sh)
{
	return sh->opt.interrupted && *sh->opt.interrupted;
}

/* ---------------------------------------------------------------- HTTP */

/* One request; *js gets the parsed JSON body (when it is JSON). Returns the status, or
 * -1 with the transport error in err. */
static long call(struct shell *sh, const char *method, const char *server, const char *pq,
		 long timeout_ms, json_t **js, char *err, size_t err_cap)
{
	char url[1200], auth[AUTH_HEADER_LEN];
	const char *headers[2] = {NULL, NULL};
	struct http_client_request rq = {.method = method,
					 .url = url,
					 .headers = headers,
					 .body_fd = -1,
					 .timeout_ms = timeout_ms};
	struct http_client_response rs;
	long status;

	if (js)
		*js = NULL;
	if (sh->opt.jwt_key && *sh->opt.jwt_key &&
	    auth_server_header(sh->opt.jwt_key, method, pq, NULL, 0, auth) == 0)
		headers[0] = auth;
	snprintf(url, sizeof(url), "%s://%s%s", http_scheme(), server, pq);
	if (http_client_do(&rq, &rs) < 0) {
		snprintf(err, err_cap, "%s: %s", server, rs.error);
		http_client_response_release(&rs);
		return -1;
	}
	status = rs.status;
	if (js)
		*js = json_loads(rs.body, 0, NULL);
	if (status >= 300) {
		json_t *e = js ? json_object_get(*js, "error") : NULL;

		snprintf(err, err_cap, "%s answered %ld: %.300s", server, status,
			 json_is_string(e) ? json_string_value(e) : rs.body);
	}
	http_client_response_release(&rs);
	return status;
}

static int find_leader(struct shell *sh, char *err, size_t cap)
{
	for (int i = 0; i < sh->n_masters; i++) {
		json_t *js;
		long st = call(sh, "GET", sh->masters[i], "/cluster/status", 5000, &js, err, cap);
		const char *leader = json_string_value(json_object_get(js, "Leader"));

		if (st == 200 && json_is_true(json_object_get(js, "IsLeader")))
			leader = sh->masters[i];
		if (st == 200 && leader) {
			snprintf(sh->leader, sizeof(sh->leader), "%s", leader);
			json_decref(js);
			return 0;
		}
		json_decref(js);
	}
	if (!err[0])
		snprintf(err, cap, "no master knows a leader");
	return -1;
}

/* A request to the leader master (found again once when it fails). */
static long leader_call(struct shell *sh, const char *method, const char *pq, long timeout_ms,
			json_t **js, char *err, size_t cap)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		long st;

		err[0] = '\0';
		if ((!sh->leader[0] || attempt > 0) && find_leader(sh, err, cap) < 0)
			return -1;
		st = call(sh, method, sh->leader, pq, timeout_ms, js, err, cap);
		if (st > 0 && st != 503)
			return st;
		if (js) {
			json_decref(*js);
			*js = NULL;
		}
		sh->leader[0] = '\0';
	}
	return -1;
}

/* ---------------------------------------------------------------- the topology */

struct vol {
	uint32_t id;
	char collection[128];
	uint64_t size, file_count, delete_count, deleted_bytes;
	bool read_only;
	char replication[4];
	char ttl[16];
	int version;
	int64_t modified;
};

struct node {
	char url[128], dc[64], rack[64], version[32];
	int max;
	struct vol *vols;
	int n_vols;
	bool planned_vols; /* n_vols changed by a plan (vols is then stale) */
};

struct topo {
	uint64_t size_limit;
	struct node *nodes;
	int n;
};

static void topo_free(struct topo *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->nodes[i].vols);
	free(t->nodes);
	memset(t, 0, sizeof(*t));
}

static int cmp_node(const void *a, const void *b)
{
	const struct node *x = a, *y = b;
	int c = strcmp(x->dc, y->dc);

	if (!c)
		c = strcmp(x->rack, y->rack);
	return c ? c : strcmp(x->url, y->url);
}

static int cmp_vol(const void *a, const void *b)
{
	const struct vol *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* /dir/status from the leader, then each server's /status. */
static int load_topo(struct shell *sh, struct topo *t)
{
	char err[600];
	json_t *js, *dcs, *dc, *racks, *rack, *dns, *dn;
	size_t i, k, m;
	long st = leader_call(sh, "GET", "/dir/status", 10000, &js, err, sizeof(err));

	memset(t, 0, sizeof(*t));
	if (st != 200) {
		json_decref(js);
		return fail(sh, "cannot read the topology: %s", err);
	}
	t->size_limit = (uint64_t)json_integer_value(
	    json_object_get(json_object_get(js, "Topology"), "VolumeSizeLimit"));
	dcs = json_object_get(json_object_get(js, "Topology"), "DataCenters");
	json_array_foreach(dcs, i, dc)
	{
		racks = json_object_get(dc, "Racks");
		json_array_foreach(racks, k, rack)
		{
			dns = json_object_get(rack, "DataNodes");
			json_array_foreach(dns, m, dn)
			{
				struct node *p = realloc(t->nodes, sizeof(*p) * (size_t)(t->n + 1));

				if (!p)
					break;
				t->nodes = p;
				p = &t->nodes[t->n++];
				memset(p, 0, sizeof(*p));
				snprintf(p->url, sizeof(p->url), "%s",
					 json_string_value(json_object_get(dn, "Url")) ?: "");
				snprintf(p->dc, sizeof(p->dc), "%s",
					 json_string_value(json_object_get(dc, "Id")) ?: "");
				snprintf(p->rack, sizeof(p->rack), "%s",
					 json_string_value(json_object_get(rack, "Id")) ?: "");
				p->max = (int)json_integer_value(json_object_get(dn, "Max"));
			}
		}
	}
	json_decref(js);
	for (int n = 0; n < t->n; n++) {
		struct node *nd = &t->nodes[n];
		json_t *vs, *v;
		size_t idx;

		st = call(sh, "GET", nd->url, "/status", 10000, &js, err, sizeof(err));
		if (st != 200) {
			json_decref(js);
			fail(sh, "cannot read the volumes of %s: %s", nd->url, err);
			topo_free(t);
			return -1;
		}
		snprintf(nd->version, sizeof(nd->version), "%s",
			 json_string_value(json_object_get(js, "Version")) ?: "");
		vs = json_object_get(js, "Volumes");
		nd->vols = calloc(json_array_size(vs) + 1, sizeof(*nd->vols));
		json_array_foreach(vs, idx, v)
		{
			struct vol *o = &nd->vols[nd->n_vols++];

			o->id = (uint32_t)json_integer_value(json_object_get(v, "Id"));
			snprintf(o->collection, sizeof(o->collection), "%s",
				 json_string_value(json_object_get(v, "Collection")) ?: "");
			o->size = (uint64_t)json_integer_value(json_object_get(v, "Size"));
			o->file_count =
			    (uint64_t)json_integer_value(json_object_get(v, "FileCount"));
			o->delete_count =
			    (uint64_t)json_integer_value(json_object_get(v, "DeleteCount"));
			o->deleted_bytes =
			    (uint64_t)json_integer_value(json_object_get(v, "DeletedByteCount"));
			o->read_only = json_is_true(json_object_get(v, "ReadOnly"));
			snprintf(o->replication, sizeof(o->replication), "%s",
				 json_string_value(json_object_get(v, "ReplicaPlacement"))
				     ?: "000");
			snprintf(o->ttl, sizeof(o->ttl), "%s",
				 json_string_value(json_object_get(v, "Ttl")) ?: "");
			o->version = (int)json_integer_value(json_object_get(v, "Version"));
			o->modified = json_integer_value(json_object_get(v, "ModifiedAtSecond"));
		}
		qsort(nd->vols, (size_t)nd->n_vols, sizeof(*nd->vols), cmp_vol);
		json_decref(js);
	}
	qsort(t->nodes, (size_t)t->n, sizeof(*t->nodes), cmp_node);
	return 0;
}

static struct vol *node_vol(struct node *n, uint32_t vid)
{
	for (int i = 0; i < n->n_vols; i++)
		if (n->vols[i].id == vid)
			return &n->vols[i];
	return NULL;
}

static struct node *topo_node(struct topo *t, const char *url)
{
	for (int i = 0; i < t->n; i++)
		if (!strcmp(t->nodes[i].url, url))
			return &t->nodes[i];
	return NULL;
}

/* The nodes holding vid (up to cap). */
static int holders(struct topo *t, uint32_t vid, struct node **out, int cap)
{
	int n = 0;

	for (int i = 0; i < t->n && n < cap; i++)
		if (node_vol(&t->nodes[i], vid))
			out[n++] = &t->nodes[i];
	return n;
}

static const char *show_collection(const char *c)
{
	return c;
}

/* ---------------------------------------------------------------- lock */

static bool locked(struct shell *sh)
{
	bool held;

	pthread_mutex_lock(&sh->lock);
	held = sh->lock_token[0] != '\0';
	pthread_mutex_unlock(&sh->lock);
	return held;
}

static int need_lock(struct shell *sh)
{
	if (!locked(sh))
		return fail(sh, "need to run \"lock\" first to continue");
	return 0;
}

static void *renew_thread(void *arg)
{
	struct shell *sh = arg;

	pthread_mutex_lock(&sh->lock);
	while (!sh->stop_renewer) {
		struct timespec ts;
		char pq[300], token[64], err[600], owner[400];

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += (time_t)(LOCK_RENEW_NS / 1000000000ull);
		pthread_cond_timedwait(&sh->cond, &sh->lock, &ts);
		if (sh->stop_renewer || !sh->lock_token[0])
			continue;
		snprintf(token, sizeof(token), "%s", sh->lock_token);
		pthread_mutex_unlock(&sh->lock);
		snprintf(pq, sizeof(pq), "/cluster/lock?owner=%s&token=%s",
			 http_client_escape(sh->owner, owner, sizeof(owner)), token);
		leader_call(sh, "POST", pq, 5000, NULL, err, sizeof(err));
		pthread_mutex_lock(&sh->lock);
	}
	pthread_mutex_unlock(&sh->lock);
	return NULL;
}

static int cmd_lock(struct shell *sh, int argc, char **argv)
{
	char pq[400], err[600], owner[400];
	bool waited = false;

	(void)argc;
	(void)argv;
	if (locked(sh)) {
		out(sh, "lock acquired\n");
		return 0;
	}
	snprintf(pq, sizeof(pq), "/cluster/lock?owner=%s",
		 http_client_escape(sh->owner, owner, sizeof(owner)));
	for (;;) {
		json_t *js;
		long st = leader_call(sh, "POST", pq, 5000, &js, err, sizeof(err));

		if (st == 200) {
			pthread_mutex_lock(&sh->lock);
			snprintf(sh->lock_token, sizeof(sh->lock_token), "%s",
				 json_string_value(json_object_get(js, "token")) ?: "");
			if (!sh->renewer_running &&
			    pthread_create(&sh->renewer, NULL, renew_thread, sh) == 0)
				sh->renewer_running = true;
			pthread_mutex_unlock(&sh->lock);
			json_decref(js);
			out(sh, "lock acquired\n");
			return 0;
		}
		json_decref(js);
		if (st != 409)
			return fail(sh, "lock: %s", err);
		if (!waited) {
			const char *by = strstr(err, "locked by ");

			out(sh, "waiting for lock held by %s\n", by ? by + 10 : "another shell");
			waited = true;
		}
		if (interrupted(sh))
			return fail(sh, "lock: interrupted");
		usleep(500000);
	}
}

static int release_lock(struct shell *sh)
{
	char pq[200], err[600], token[64];

	pthread_mutex_lock(&sh->lock);
	snprintf(token, sizeof(token), "%s", sh->lock_token);
	sh->lock_token[0] = '\0';
	pthread_mutex_unlock(&sh->lock);
	if (!token[0])
		return 0;
	snprintf(pq, sizeof(pq), "/cluster/unlock?token=%s", token);
	if (leader_call(sh, "POST", pq, 5000, NULL, err, sizeof(err)) != 200)
		return fail(sh, "unlock: %s", err);
	return 0;
}

static int cmd_unlock(struct shell *sh, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (release_lock(sh) < 0)
		return -1;
	out(sh, "lock released\n");
	return 0;
}

/* ---------------------------------------------------------------- volume.list */

struct counts {
	int volumes, max, active;
	uint64_t size, files, deleted_files, deleted_bytes;
};

static void count_node(const struct node *n, struct counts *c, uint64_t limit)
{
	c->max += n->max;
	for (int i = 0; i < n->n_vols; i++) {
		const struct vol *v = &n->vols[i];

		c->volumes++;
		c->active += !v->read_only && (!limit || v->size < limit);
		c->size += v->size;
		c->files += v->file_count;
		c->deleted_files += v->delete_count;
		c->deleted_bytes += v->deleted_bytes;
	}
}

static void print_disk(struct shell *sh, const struct counts *c)
{
	int free_slots = c->max - c->volumes;

	out(sh, "hdd(volume:%d/%d active:%d free:%d remote:0)", c->volumes, c->max, c->active,
	    free_slots > 0 ? free_slots : 0);
}

static void print_total(struct shell *sh, const char *indent, const char *what,
			const struct counts *c)
{
	out(sh, "%s%stotal size:%" PRIu64 " file_count:%" PRIu64, indent, what, c->size, c->files);
	if (c->deleted_files)
		out(sh, " deleted_file:%" PRIu64 " deleted_bytes:%" PRIu64, c->deleted_files,
		    c->deleted_bytes);
	out(sh, " \n");
}

struct list_filter {
	const char *pattern, *dc, *rack, *node;
	uint32_t vid;
	bool readonly, writable;
	uint64_t limit;
};

static bool vol_selected(const struct list_filter *f, const struct vol *v)
{
	const char *c = v->collection;

	if (f->vid && v->id != f->vid)
		return false;
	if (f->pattern && *f->pattern &&
	    !(strcmp(f->pattern, "_default") ? shell_pattern_match(f->pattern, c) : !*c))
		return false;
	if (f->readonly && !v->read_only)
		return false;
	if (f->writable && (v->read_only || (f->limit && v->size >= f->limit)))
		return false;
	return true;
}

static int cmd_volume_list(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"v", false, NULL},	 {"collectionPattern", false, NULL},
			      {"readonly", true, NULL},	 {"writable", true, NULL},
			      {"volumeId", false, NULL}, {"dataCenter", false, NULL},
			      {"rack", false, NULL},	 {"dataNode", false, NULL},
			      {NULL, false, NULL}};
	struct topo t;
	struct list_filter lf = {0};
	struct counts all = {0};
	int verbose;

	if (parse_flags(sh, f, argc, argv) < 0)
		return -1;
	verbose = atoi(flag_str(f, "v", "5"));
	lf.pattern = flag_str(f, "collectionPattern", "");
	lf.dc = flag_str(f, "dataCenter", "");
	lf.rack = flag_str(f, "rack", "");
	lf.node = flag_str(f, "dataNode", "");
	lf.vid = (uint32_t)strtoul(flag_str(f, "volumeId", "0"), NULL, 10);
	lf.readonly = flag_bool(f, "readonly");
	lf.writable = flag_bool(f, "writable");
	if (load_topo(sh, &t) < 0)
		return -1;
	lf.limit = t.size_limit;
	for (int i = 0; i < t.n; i++)
		count_node(&t.nodes[i], &all, t.size_limit);
	out(sh, "Topology volumeSizeLimit:%" PRIu64 " MB ", t.size_limit >> 20);
	print_disk(sh, &all);
	out(sh, "\n");
	for (int i = 0; i < t.n;) {
		int dc_end = i;
		struct counts dcc = {0};

		while (dc_end < t.n && !strcmp(t.nodes[dc_end].dc, t.nodes[i].dc))
			count_node(&t.nodes[dc_end++], &dcc, t.size_limit);
		if (*lf.dc && strcmp(lf.dc, t.nodes[i].dc)) {
			i = dc_end;
			continue;
		}
		if (verbose >= 1) {
			out(sh, "  DataCenter %s ", t.nodes[i].dc);
			print_disk(sh, &dcc);
			out(sh, "\n");
		}
		for (int r = i; r < dc_end;) {
			int rack_end = r;
			struct counts rc = {0};

			while (rack_end < dc_end &&
			       !strcmp(t.nodes[rack_end].rack, t.nodes[r].rack))
				count_node(&t.nodes[rack_end++], &rc, t.size_limit);
			if (*lf.rack && strcmp(lf.rack, t.nodes[r].rack)) {
				r = rack_end;
				continue;
			}
			if (verbose >= 2) {
				out(sh, "    Rack %s ", t.nodes[r].rack);
				print_disk(sh, &rc);
				out(sh, "\n");
			}
			for (int k = r; k < rack_end; k++) {
				struct node *n = &t.nodes[k];
				struct counts nc = {0};

				if (*lf.node && strcmp(lf.node, n->url))
					continue;
				count_node(n, &nc, t.size_limit);
				if (verbose >= 3) {
					out(sh, "      DataNode %s ", n->url);
					print_disk(sh, &nc);
					out(sh, "\n");
				}
				if (verbose >= 4) {
					out(sh, "        Disk ");
					print_disk(sh, &nc);
					out(sh, " id:0\n");
				}
				for (int v = 0; v < n->n_vols && verbose >= 5; v++) {
					const struct vol *o = &n->vols[v];

					if (!vol_selected(&lf, o))
						continue;
					out(sh,
					    "          volume Id:%u, Size:%" PRIu64
					    ", ReplicaPlacement:%s, Collection:%s, Version:%d, Ttl:%s, "
					    "FileCount:%" PRIu64 ", DeleteCount:%" PRIu64
					    ", DeletedByteCount:%" PRIu64
					    ", ReadOnly:%s, ModifiedAtSecond:%" PRId64 " \n",
					    o->id, o->size, o->replication,
					    show_collection(o->collection), o->version, o->ttl,
					    o->file_count, o->delete_count, o->deleted_bytes,
					    o->read_only ? "true" : "false", o->modified);
				}
				if (verbose >= 4)
					print_total(sh, "        ", "Disk hdd ", &nc);
				if (verbose >= 3)
					print_total(sh, "      ", "DataNode ", &nc);
				(void)nc;
			}
			if (verbose >= 2) {
				char what[100];

				snprintf(what, sizeof(what), "Rack %s ", t.nodes[r].rack);
				print_total(sh, "    ", what, &rc);
			}
			r = rack_end;
		}
		if (verbose >= 1) {
			char what[100];

			snprintf(what, sizeof(what), "DataCenter %s ", t.nodes[i].dc);
			print_total(sh, "  ", what, &dcc);
		}
		i = dc_end;
	}
	print_total(sh, "", "", &all);
	topo_free(&t);
	return 0;
}

/* ---------------------------------------------------------------- cluster.* collection.* */

static int cmd_cluster_ps(struct shell *sh, int argc, char **argv)
{
	struct topo t;
	char err[600];

	(void)argc;
	(void)argv;
	if (load_topo(sh, &t) < 0)
		return -1;
	out(sh, "* masters %d\n", sh->n_masters);
	for (int i = 0; i < sh->n_masters; i++) {
		json_t *js;
		long st =
		    call(sh, "GET", sh->masters[i], "/cluster/status", 5000, &js, err, sizeof(err));

		out(sh, "  * %s%s\n", sh->masters[i],
		    st != 200					    ? " (not answering)"
		    : json_is_true(json_object_get(js, "IsLeader")) ? " (leader)"
								    : "");
		json_decref(js);
	}
	out(sh, "* volume servers %d\n", t.n);
	for (int i = 0; i < t.n; i++) {
		if (i == 0 || strcmp(t.nodes[i].dc, t.nodes[i - 1].dc))
			out(sh, "  * data center %s\n", t.nodes[i].dc);
		if (i == 0 || strcmp(t.nodes[i].dc, t.nodes[i - 1].dc) ||
		    strcmp(t.nodes[i].rack, t.nodes[i - 1].rack))
			out(sh, "    * rack %s\n", t.nodes[i].rack);
		out(sh, "      * %s (%s)\n", t.nodes[i].url, t.nodes[i].version);
	}
	topo_free(&t);
	return 0;
}

static int cmd_cluster_check(struct shell *sh, int argc, char **argv)
{
	struct topo t;
	struct counts all = {0};
	char err[600];
	int bad = 0, under = 0;

	(void)argc;
	(void)argv;
	if (load_topo(sh, &t) < 0)
		return -1;
	for (int i = 0; i < t.n; i++)
		count_node(&t.nodes[i], &all, t.size_limit);
	out(sh, "Topology volumeSizeLimit:%" PRIu64 " MB ", t.size_limit >> 20);
	print_disk(sh, &all);
	out(sh, "\n");
	if (all.max == 0) {
		topo_free(&t);
		return fail(sh, "no volume server has a volume slot");
	}
	out(sh, "the cluster has %d masters and %d volume servers\n", sh->n_masters, t.n);
	for (int i = 0; i < sh->n_masters + t.n; i++) {
		const char *who =
		    i < sh->n_masters ? sh->masters[i] : t.nodes[i - sh->n_masters].url;
		uint64_t t0 = monotonic_ns();
		long st = call(sh, "GET", who, "/healthz", 5000, NULL, err, sizeof(err));
		uint64_t t1 = monotonic_ns();

		out(sh, "checking shell to %s %s ... ",
		    i < sh->n_masters ? "master" : "volume server", who);
		if (st == 200)
			out(sh, "ok round trip %.3fms\n", (double)(t1 - t0) / 1e6);
		else {
			out(sh, "%s\n", st < 0 ? err : "bad status");
			bad++;
		}
	}
	/* replica counts */
	for (int i = 0; i < t.n; i++) {
		for (int v = 0; v < t.nodes[i].n_vols; v++) {
			const struct vol *o = &t.nodes[i].vols[v];
			struct node *h[16];
			int n = holders(&t, o->id, h, 16);
			uint8_t rp = 0;

			if (h[0] != &t.nodes[i]) /* report each volume once */
				continue;
			placement_parse(o->replication, &rp);
			if (n != placement_copies(rp)) {
				out(sh, "volume %u replication %s has %d of %d copies\n", o->id,
				    o->replication, n, placement_copies(rp));
				under++;
			}
		}
	}
	if (bad + under == 0)
		out(sh, "the cluster is healthy\n");
	topo_free(&t);
	if (bad)
		return fail(sh, "%d server(s) did not answer", bad);
	return 0;
}

struct coll_sum {
	char name[128];
	uint32_t *ids;
	int n_ids;
	double size, files, deleted_files, deleted_bytes; /* summed over copies / copies */
};

static int cmd_collection_list(struct shell *sh, int argc, char **argv)
{
	struct topo t;
	struct coll_sum *cs = NULL;
	int n_cs = 0;

	(void)argc;
	(void)argv;
	if (load_topo(sh, &t) < 0)
		return -1;
	for (int i = 0; i < t.n; i++) {
		for (int v = 0; v < t.nodes[i].n_vols; v++) {
			const struct vol *o = &t.nodes[i].vols[v];
			struct coll_sum *c = NULL;
			uint8_t rp = 0;
			int copies;
			bool seen = false;

			for (int k = 0; k < n_cs; k++)
				if (!strcmp(cs[k].name, o->collection))
					c = &cs[k];
			if (!c) {
				struct coll_sum *p = realloc(cs, sizeof(*p) * (size_t)(n_cs + 1));

				if (!p)
					continue;
				cs = p;
				c = &cs[n_cs++];
				memset(c, 0, sizeof(*c));
				snprintf(c->name, sizeof(c->name), "%s", o->collection);
			}
			placement_parse(o->replication, &rp);
			copies = placement_copies(rp);
			c->size += (double)o->size / copies;
			c->files += (double)o->file_count / copies;
			c->deleted_files += (double)o->delete_count / copies;
			c->deleted_bytes += (double)o->deleted_bytes / copies;
			for (int k = 0; k < c->n_ids && !seen; k++)
				seen = c->ids[k] == o->id;
			if (!seen) {
				uint32_t *p = realloc(c->ids, sizeof(*p) * (size_t)(c->n_ids + 1));

				if (p) {
					c->ids = p;
					c->ids[c->n_ids++] = o->id;
				}
			}
		}
	}
	for (int k = 0; k < n_cs; k++) {
		out(sh,
		    "collection:\"%s\"\tvolumeCount:%d\tsize:%" PRIu64 "\tfileCount:%" PRIu64
		    "\tdeletedBytes:%" PRIu64 "\tdeletion:%" PRIu64 "\n",
		    cs[k].name, cs[k].n_ids, (uint64_t)(cs[k].size + 0.5),
		    (uint64_t)(cs[k].files + 0.5), (uint64_t)(cs[k].deleted_bytes + 0.5),
		    (uint64_t)(cs[k].deleted_files + 0.5));
		free(cs[k].ids);
	}
	out(sh, "Total %d collections.\n", n_cs);
	free(cs);
	topo_free(&t);
	return 0;
}

static int cmd_collection_delete(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"collection", false, NULL},
			      {"apply", true, NULL},
			      {"force", true, NULL},
			      {NULL, false, NULL}};
	const char *c;
	char pq[400], err[600], esc[300];
	long st;

	if (parse_flags(sh, f, argc, argv) < 0 || need_lock(sh) < 0)
		return -1;
	c = flag_str(f, "collection", "");
	if (!*c)
		return fail(sh, "collection.delete: -collection is required");
	if (!strcmp(c, "_default_"))
		c = "";
	if (!flag_bool(f, "apply") && !flag_bool(f, "force")) {
		out(sh, "collection '%s' will be deleted. Use -apply to apply the change.\n", c);
		return 0;
	}
	snprintf(pq, sizeof(pq), "/col/delete?collection=%s",
		 http_client_escape(c, esc, sizeof(esc)));
	st = leader_call(sh, "POST", pq, 60000, NULL, err, sizeof(err));
	if (st != 200 && st != 204)
		return fail(sh, "collection.delete: %s", err);
	out(sh, "collection %s is deleted.\n", c);
	return 0;
}

/* ---------------------------------------------------------------- moving volumes */

struct copy_progress {
	char state[32];
	uint64_t bytes, total;
	char error[600];
};

static int copy_status(struct shell *sh, const char *target, uint32_t vid, const char *source,
		       struct copy_progress *p)
{
	char err[600];
	json_t *js, *c;
	size_t i;
	long st = call(sh, "GET", target, "/admin/volume/copy/status", 5000, &js, err, sizeof(err));

	memset(p, 0, sizeof(*p));
	if (st != 200) {
		json_decref(js);
		snprintf(p->error, sizeof(p->error), "%s", err);
		return -1;
	}
	json_array_foreach(json_object_get(js, "Copies"), i, c)
	{
		const char *src = json_string_value(json_object_get(c, "source"));

		if ((uint32_t)json_integer_value(json_object_get(c, "volume")) != vid || !src ||
		    strcmp(src, source))
			continue;
		snprintf(p->state, sizeof(p->state), "%s",
			 json_string_value(json_object_get(c, "state")) ?: "");
		snprintf(p->error, sizeof(p->error), "%s",
			 json_string_value(json_object_get(c, "error")) ?: "");
		p->bytes = (uint64_t)json_integer_value(json_object_get(c, "bytes"));
		p->total = (uint64_t)json_integer_value(json_object_get(c, "total"));
		break;
	}
	json_decref(js);
	return p->state[0] ? 0 : -1;
}

static int admin_post(struct shell *sh, const char *server, const char *op, uint32_t vid, char *err,
		      size_t cap)
{
	char pq[200];

	snprintf(pq, sizeof(pq), "/admin/%s?volume=%u", op, vid);
	return call(sh, "POST", server, pq, 60000, NULL, err, cap) == 200 ? 0 : -1;
}

/* Waits until the copy reaches one of the states (0), fails (-1) or the user
 * interrupts (-2), printing progress once a second. */
static int wait_copy(struct shell *sh, const char *target, uint32_t vid, const char *source,
		     const char *want, char *err, size_t cap)
{
	uint64_t last_print = 0;

	for (;;) {
		struct copy_progress p;
		uint64_t now = monotonic_ns();

		if (interrupted(sh)) {
			snprintf(err, cap, "interrupted");
			return -2;
		}
		if (copy_status(sh, target, vid, source, &p) < 0) {
			snprintf(err, cap, "cannot follow the copy on %s: %.400s", target, p.error);
			return -1;
		}
		if (strstr(want, p.state))
			return 0;
		if (!strcmp(p.state, "failed") || !strcmp(p.state, "cancelled")) {
			snprintf(err, cap, "copy to %s %s: %.400s", target, p.state, p.error);
			return -1;
		}
		if (now - last_print >= 1000000000ull) {
			out(sh, "  volume %u: %.1f of %.1f MiB copied to %s\n", vid,
			    (double)p.bytes / 1048576.0, (double)p.total / 1048576.0, target);
			last_print = now;
		}
		usleep(200000);
	}
}

/*
 * Copies vid from source to target while the source keeps serving, freezes the
 * source for the last round, and then deletes it (move) or makes it writable again
 * (copy). On any failure or interruption before the end, the copy is cancelled and
 * the source made writable again.
 */
static int live_copy(struct shell *sh, uint32_t vid, const char *source, const char *target,
		     double mbps, bool delete_source)
{
	char pq[400], err[600] = "", e2[600];
	json_t *js;
	bool was_ro, frozen = false;
	long st;
	int ret;

	if (!strcmp(source, target))
		return fail(sh, "source and target are the same server %s", source);
	snprintf(pq, sizeof(pq), "/admin/volume/info?volume=%u", vid);
	st = call(sh, "GET", source, pq, 10000, &js, err, sizeof(err));
	if (st != 200) {
		json_decref(js);
		return fail(sh, "volume %u on %s: %s", vid, source, err);
	}
	was_ro = json_is_true(json_object_get(js, "ReadOnly"));
	json_decref(js);
	snprintf(pq, sizeof(pq), "/admin/volume/copy?volume=%u&source=%s&finish=wait&mbps=%g", vid,
		 source, mbps);
	if (call(sh, "POST", target, pq, 10000, NULL, err, sizeof(err)) != 202)
		return fail(sh, "cannot start copying volume %u to %s: %s", vid, target, err);
	ret = wait_copy(sh, target, vid, source, "caught_up done", err, sizeof(err));
	if (ret == 0 && !was_ro) {
		ret = admin_post(sh, source, "mark_readonly", vid, err, sizeof(err));
		frozen = ret == 0;
	}
	if (ret == 0) {
		snprintf(pq, sizeof(pq), "/admin/volume/copy/finish?volume=%u", vid);
		if (call(sh, "POST", target, pq, 10000, NULL, err, sizeof(err)) != 200)
			ret = -1;
	}
	if (ret == 0)
		ret = wait_copy(sh, target, vid, source, "done", err, sizeof(err));
	if (ret < 0) {
		snprintf(pq, sizeof(pq), "/admin/volume/copy/cancel?volume=%u", vid);
		call(sh, "POST", target, pq, 10000, NULL, e2, sizeof(e2));
		if (frozen)
			admin_post(sh, source, "mark_writable", vid, e2, sizeof(e2));
		return fail(sh, "volume %u from %s to %s: %s%s", vid, source, target, err,
			    frozen ? " (the source is writable again)" : "");
	}
	if (was_ro)
		admin_post(sh, target, "mark_readonly", vid, e2, sizeof(e2));
	if (delete_source) {
		if (admin_post(sh, source, "delete_volume", vid, err, sizeof(err)) < 0)
			return fail(sh,
				    "volume %u copied to %s, but the source copy on %s was not "
				    "deleted: %s",
				    vid, target, source, err);
	} else if (frozen) {
		admin_post(sh, source, "mark_writable", vid, e2, sizeof(e2));
	}
	out(sh, "volume %u %s from %s to %s\n", vid, delete_source ? "moved" : "copied", source,
	    target);
	return 0;
}

static int vid_flag(struct shell *sh, const struct flagdef *f, uint32_t *vid)
{
	const char *s = flag_str(f, "volumeId", "");
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (!*s || *end || v == 0 || v > AUTH_MAX_VOLUME_ID)
		return fail(sh, "-volumeId must be a volume id, got \"%s\"", s);
	*vid = (uint32_t)v;
	return 0;
}

static int cmd_volume_move_copy(struct shell *sh, int argc, char **argv, bool move)
{
	struct flagdef f[] = {{"volumeId", false, NULL},	{"source", false, NULL},
			      {"target", false, NULL},		{"noLock", true, NULL},
			      {"ioBytePerSecond", false, NULL}, {"disk", false, NULL},
			      {"timeout", false, NULL},		{NULL, false, NULL}};
	uint32_t vid;
	const char *src, *dst;
	double bps;

	if (parse_flags(sh, f, argc, argv) < 0 || vid_flag(sh, f, &vid) < 0)
		return -1;
	if (!flag_bool(f, "noLock") && need_lock(sh) < 0)
		return -1;
	src = flag_str(f, "source", "");
	dst = flag_str(f, "target", "");
	if (!*src || !*dst)
		return fail(sh, "%s: -source and -target are required", argv[0]);
	bps = strtod(flag_str(f, "ioBytePerSecond", "0"), NULL);
	return live_copy(sh, vid, src, dst, bps / 1048576.0, move);
}

static int cmd_volume_move(struct shell *sh, int argc, char **argv)
{
	return cmd_volume_move_copy(sh, argc, argv, true);
}

static int cmd_volume_copy(struct shell *sh, int argc, char **argv)
{
	return cmd_volume_move_copy(sh, argc, argv, false);
}

static int cmd_volume_delete(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"volumeId", false, NULL},
			      {"node", false, NULL},
			      {"timeout", false, NULL},
			      {NULL, false, NULL}};
	uint32_t vid;
	char err[600];
	const char *node;

	if (parse_flags(sh, f, argc, argv) < 0 || vid_flag(sh, f, &vid) < 0 || need_lock(sh) < 0)
		return -1;
	node = flag_str(f, "node", "");
	if (!*node)
		return fail(sh, "volume.delete: -node is required");
	if (admin_post(sh, node, "delete_volume", vid, err, sizeof(err)) < 0)
		return fail(sh, "volume.delete: %s", err);
	out(sh, "volume %u deleted from %s\n", vid, node);
	return 0;
}

static int cmd_volume_mark(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"volumeId", false, NULL},   {"node", false, NULL},
			      {"collection", false, NULL}, {"readonly", true, NULL},
			      {"writable", true, NULL},	   {NULL, false, NULL}};
	bool ro, rw;
	const char *node, *coll, *op;
	char err[600];
	uint32_t vid = 0;
	int marked = 0;

	if (parse_flags(sh, f, argc, argv) < 0 || need_lock(sh) < 0)
		return -1;
	ro = flag_bool(f, "readonly");
	rw = flag_bool(f, "writable");
	if (ro == rw)
		return fail(sh, "volume.mark: give exactly one of -readonly and -writable");
	op = ro ? "mark_readonly" : "mark_writable";
	node = flag_str(f, "node", "");
	coll = flag_str(f, "collection", NULL);
	if (coll) {
		struct topo t;

		if (!strcmp(coll, "_default"))
			coll = "";
		if (load_topo(sh, &t) < 0)
			return -1;
		for (int i = 0; i < t.n; i++)
			for (int v = 0; v < t.nodes[i].n_vols; v++)
				if (!strcmp(t.nodes[i].vols[v].collection, coll)) {
					if (admin_post(sh, t.nodes[i].url, op,
						       t.nodes[i].vols[v].id, err,
						       sizeof(err)) < 0) {
						topo_free(&t);
						return fail(sh, "volume.mark: %s", err);
					}
					marked++;
				}
		topo_free(&t);
		out(sh, "%d volume copies marked %s\n", marked, ro ? "read-only" : "writable");
		return 0;
	}
	if (vid_flag(sh, f, &vid) < 0)
		return -1;
	if (!*node)
		return fail(sh, "volume.mark: -node (or -collection) is required");
	if (admin_post(sh, node, op, vid, err, sizeof(err)) < 0)
		return fail(sh, "volume.mark: %s", err);
	out(sh, "volume %u on %s marked %s\n", vid, node, ro ? "read-only" : "writable");
	return 0;
}

static int cmd_volume_vacuum(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"garbageThreshold", false, NULL},
			      {"collection", false, NULL},
			      {"volumeId", false, NULL},
			      {NULL, false, NULL}};
	char pq[200], err[600];
	double th;
	char *end;
	const char *s;

	if (parse_flags(sh, f, argc, argv) < 0 || need_lock(sh) < 0)
		return -1;
	s = flag_str(f, "garbageThreshold", "0.3");
	th = strtod(s, &end);
	if (*end || th < 0 || th > 1)
		return fail(sh, "volume.vacuum: -garbageThreshold must be 0-1, got \"%s\"", s);
	snprintf(pq, sizeof(pq), "/vol/vacuum?garbageThreshold=%g", th);
	if (leader_call(sh, "POST", pq, 3600000, NULL, err, sizeof(err)) != 200)
		return fail(sh, "volume.vacuum: %s", err);
	out(sh, "vacuumed the volumes with more than %g garbage\n", th);
	return 0;
}

/* ---------------------------------------------------------------- plans */

struct move {
	uint32_t vid;
	char collection[128];
	char src[128], dst[128];
};

/* Would the copies of vid fit its placement with `from` replaced by `to`? */
static bool fits_after_move(struct topo *t, uint32_t vid, const char *rp_text,
			    const struct node *from, const struct node *to)
{
	struct node *h[16];
	struct placement_place p[17];
	int n = holders(t, vid, h, 16), m = 0;
	uint8_t rp = 0;

	placement_parse(rp_text, &rp);
	for (int i = 0; i < n; i++) {
		if (h[i] == from)
			continue;
		if (h[i] == to)
			return false;
		p[m].url = h[i]->url;
		p[m].data_center = h[i]->dc;
		p[m++].rack = h[i]->rack;
	}
	p[m].url = to->url;
	p[m].data_center = to->dc;
	p[m++].rack = to->rack;
	return placement_fits(rp, p, m);
}

/* Moves one volume between two nodes of the in-memory topology (plans see it). */
static void plan_apply(struct node *from, struct node *to, uint32_t vid)
{
	for (int i = 0; i < from->n_vols; i++) {
		if (from->vols[i].id != vid)
			continue;
		struct vol v = from->vols[i];
		struct vol *p = realloc(to->vols, sizeof(*p) * (size_t)(to->n_vols + 1));

		if (!p)
			return;
		to->vols = p;
		to->vols[to->n_vols++] = v;
		from->vols[i] = from->vols[--from->n_vols];
		return;
	}
}

static int run_moves(struct shell *sh, const struct move *mv, int n, double mbps)
{
	for (int i = 0; i < n; i++) {
		if (interrupted(sh))
			return fail(sh, "interrupted after %d of %d moves", i, n);
		if (live_copy(sh, mv[i].vid, mv[i].src, mv[i].dst, mbps, true) < 0)
			return -1;
	}
	return 0;
}

static void print_moves(struct shell *sh, const struct move *mv, int n)
{
	for (int i = 0; i < n; i++)
		out(sh, "  moving volume %s%s%u %s => %s\n", mv[i].collection,
		    *mv[i].collection ? "_" : "", mv[i].vid, mv[i].src, mv[i].dst);
}

static double ratio(const struct node *n, int delta)
{
	return n->max > 0 ? (double)(n->n_vols + delta) / (double)n->max : 1e9;
}

static int cmd_volume_balance(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"collection", false, NULL}, {"dataCenter", false, NULL},
			      {"apply", true, NULL},	   {"force", true, NULL},
			      {"noLock", true, NULL},	   {"ioBytePerSecond", false, NULL},
			      {NULL, false, NULL}};
	struct topo t;
	struct move *mv = NULL;
	int n_mv = 0, ret = 0, total = 0, max = 0;
	bool apply;
	const char *coll, *dc;
	double ideal;

	if (parse_flags(sh, f, argc, argv) < 0)
		return -1;
	apply = flag_bool(f, "apply") || flag_bool(f, "force");
	if (!flag_bool(f, "noLock") && need_lock(sh) < 0)
		return -1;
	coll = flag_str(f, "collection", "ALL_COLLECTIONS");
	dc = flag_str(f, "dataCenter", "");
	if (load_topo(sh, &t) < 0)
		return -1;
	for (int i = 0; i < t.n; i++) {
		if (*dc && strcmp(t.nodes[i].dc, dc))
			continue;
		total += t.nodes[i].n_vols;
		max += t.nodes[i].max;
	}
	ideal = max > 0 ? (double)total / (double)max : 0;
	for (int round = 0; round < 10000; round++) {
		struct node *src = NULL;
		bool moved = false;

		for (int i = 0; i < t.n; i++)
			if ((!*dc || !strcmp(t.nodes[i].dc, dc)) && t.nodes[i].max > 0 &&
			    (!src || ratio(&t.nodes[i], 0) > ratio(src, 0)))
				src = &t.nodes[i];
		if (!src || ratio(src, -1) < ideal)
			break;
		/* emptiest targets first; the smallest fitting volume of the source */
		for (int pass = 0; pass < t.n && !moved; pass++) {
			struct node *dst = NULL;

			for (int i = 0, rank = 0; i < t.n; i++) {
				struct node *c = &t.nodes[i];
				int better = 0;

				if (c == src || (*dc && strcmp(c->dc, dc)) || c->max <= 0)
					continue;
				for (int k = 0; k < t.n; k++)
					better += &t.nodes[k] != src && t.nodes[k].max > 0 &&
						  (!*dc || !strcmp(t.nodes[k].dc, dc)) &&
						  (ratio(&t.nodes[k], 0) < ratio(c, 0) ||
						   (ratio(&t.nodes[k], 0) == ratio(c, 0) && k < i));
				if (better == pass) {
					dst = c;
					break;
				}
				(void)rank;
			}
			if (!dst || ratio(dst, 1) > ideal + 1e-9 || dst->n_vols >= dst->max)
				break;
			{
				struct vol *best = NULL;

				for (int v = 0; v < src->n_vols; v++) {
					struct vol *o = &src->vols[v];

					if (strcmp(coll, "ALL_COLLECTIONS") &&
					    strcmp(coll, "EACH_COLLECTION") &&
					    !shell_pattern_match(coll, o->collection))
						continue;
					if (!fits_after_move(&t, o->id, o->replication, src, dst))
						continue;
					if (!best || o->size < best->size)
						best = o;
				}
				if (best) {
					struct move *p =
					    realloc(mv, sizeof(*p) * (size_t)(n_mv + 1));

					if (!p)
						break;
					mv = p;
					mv[n_mv].vid = best->id;
					snprintf(mv[n_mv].collection, sizeof(mv[0].collection),
						 "%s", best->collection);
					snprintf(mv[n_mv].src, sizeof(mv[0].src), "%s", src->url);
					snprintf(mv[n_mv].dst, sizeof(mv[0].dst), "%s", dst->url);
					n_mv++;
					plan_apply(src, dst, best->id);
					moved = true;
				}
			}
		}
		if (!moved)
			break;
	}
	if (!apply)
		out(sh,
		    "Running in simulation mode. Use \"-apply\" option to apply the changes.\n");
	print_moves(sh, mv, n_mv);
	if (n_mv == 0)
		out(sh, "the volumes are balanced\n");
	if (apply)
		ret = run_moves(sh, mv, n_mv,
				strtod(flag_str(f, "ioBytePerSecond", "0"), NULL) / 1048576.0);
	free(mv);
	topo_free(&t);
	return ret;
}

static int cmd_evacuate(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"node", false, NULL},   {"apply", true, NULL},
			      {"force", true, NULL},   {"skipNonMoveable", true, NULL},
			      {"target", false, NULL}, {"ioBytePerSecond", false, NULL},
			      {NULL, false, NULL}};
	struct topo t;
	struct node *from;
	struct move *mv = NULL;
	int n_mv = 0, ret = 0;
	bool apply;
	const char *node, *only;

	if (parse_flags(sh, f, argc, argv) < 0)
		return -1;
	apply = flag_bool(f, "apply") || flag_bool(f, "force");
	if (apply && need_lock(sh) < 0)
		return -1;
	node = flag_str(f, "node", "");
	only = flag_str(f, "target", "");
	if (!*node)
		return fail(sh, "volumeServer.evacuate: -node is required");
	if (load_topo(sh, &t) < 0)
		return -1;
	from = topo_node(&t, node);
	if (!from) {
		topo_free(&t);
		return fail(sh, "volumeServer.evacuate: %s is not a live volume server", node);
	}
	while (from->n_vols > 0 && ret == 0) {
		struct vol *o = &from->vols[0];
		struct node *best = NULL;

		for (int i = 0; i < t.n; i++) {
			struct node *c = &t.nodes[i];

			if (c == from || c->n_vols >= c->max || (*only && strcmp(c->url, only)))
				continue;
			if (!fits_after_move(&t, o->id, o->replication, from, c))
				continue;
			if (!best || ratio(c, 0) < ratio(best, 0))
				best = c;
		}
		if (!best) {
			if (flag_bool(f, "skipNonMoveable")) {
				out(sh, "skipping non moveable volume %u replication:%s\n", o->id,
				    o->replication);
				from->vols[0] = from->vols[--from->n_vols];
				continue;
			}
			ret = fail(sh,
				   "volume %u (replication %s) cannot move anywhere: no server "
				   "with a free slot keeps its placement",
				   o->id, o->replication);
			break;
		}
		struct move *p = realloc(mv, sizeof(*p) * (size_t)(n_mv + 1));

		if (!p)
			break;
		mv = p;
		mv[n_mv].vid = o->id;
		snprintf(mv[n_mv].collection, sizeof(mv[0].collection), "%s", o->collection);
		snprintf(mv[n_mv].src, sizeof(mv[0].src), "%s", from->url);
		snprintf(mv[n_mv].dst, sizeof(mv[0].dst), "%s", best->url);
		n_mv++;
		plan_apply(from, best, o->id);
	}
	if (ret == 0) {
		if (!apply)
			out(sh, "Running in simulation mode. Use \"-apply\" option to apply the "
				"changes.\n");
		print_moves(sh, mv, n_mv);
		if (apply)
			ret = run_moves(sh, mv, n_mv,
					strtod(flag_str(f, "ioBytePerSecond", "0"), NULL) /
					    1048576.0);
	}
	free(mv);
	topo_free(&t);
	return ret;
}

/* ---------------------------------------------------------------- repair */

static int cmd_fix_replication(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"n", true, NULL},
			      {"apply", true, NULL},
			      {"force", true, NULL},
			      {"collectionPattern", false, NULL},
			      {NULL, false, NULL}};
	char err[600], pq[100];
	json_t *plan, *v;
	size_t i;
	bool dry;
	const char *pattern;
	uint32_t *started = NULL;
	int n_started = 0, ret = 0;

	if (parse_flags(sh, f, argc, argv) < 0)
		return -1;
	dry = flag_bool(f, "n");
	pattern = flag_str(f, "collectionPattern", "");
	if (!dry && need_lock(sh) < 0)
		return -1;
	if (leader_call(sh, "GET", "/cluster/repair/plan", 10000, &plan, err, sizeof(err)) != 200) {
		json_decref(plan);
		return fail(sh, "volume.fix.replication: %s", err);
	}
	json_array_foreach(json_object_get(plan, "UnderReplicated"), i, v)
	{
		uint32_t vid = (uint32_t)json_integer_value(json_object_get(v, "volume"));
		const char *repl = json_string_value(json_object_get(v, "replication")) ?: "";
		const char *target = json_string_value(json_object_get(v, "target")) ?: "";
		const char *coll = json_string_value(json_object_get(v, "collection")) ?: "";
		int copies = (int)json_integer_value(json_object_get(v, "copies"));
		int want = (int)json_integer_value(json_object_get(v, "want"));

		if (*pattern && !shell_pattern_match(pattern, coll))
			continue;
		out(sh, "volume %u replication %s, but under replicated +%d\n", vid, repl,
		    want - copies);
		if (!*target) {
			out(sh, "  no server can take a copy: %s\n",
			    json_string_value(json_object_get(v, "error")) ?: "");
			continue;
		}
		out(sh, "replicating volume %u %s from %s to dataNode %s ...\n", vid, repl,
		    json_string_value(json_object_get(v, "source")) ?: "", target);
		if (dry)
			continue;
		snprintf(pq, sizeof(pq), "/cluster/repair/now?volume=%u", vid);
		if (leader_call(sh, "POST", pq, 10000, NULL, err, sizeof(err)) != 200) {
			ret = fail(sh, "volume %u: %s", vid, err);
			continue;
		}
		uint32_t *p = realloc(started, sizeof(*p) * (size_t)(n_started + 1));

		if (p) {
			started = p;
			started[n_started++] = vid;
		}
	}
	json_array_foreach(json_object_get(plan, "OverReplicated"), i, v)
	    out(sh, "volume %u has %d copies, %d wanted: the master removes the stalest\n",
		(uint32_t)json_integer_value(json_object_get(v, "volume")),
		(int)json_integer_value(json_object_get(v, "copies")),
		(int)json_integer_value(json_object_get(v, "want")));
	json_decref(plan);
	/* follow the copies the master runs until none of them is under-replicated */
	for (uint64_t last = 0; n_started > 0;) {
		json_t *st = NULL;
		int left = 0;

		if (interrupted(sh)) {
			ret =
			    fail(sh, "interrupted (the master goes on with the copies it started)");
			break;
		}
		if (leader_call(sh, "GET", "/cluster/repair", 10000, &st, err, sizeof(err)) !=
		    200) {
			json_decref(st);
			ret = fail(sh, "volume.fix.replication: %s", err);
			break;
		}
		json_array_foreach(
		    json_object_get(json_object_get(st, "Repair"), "UnderReplicated"), i, v)
		{
			uint32_t vid = (uint32_t)json_integer_value(json_object_get(v, "volume"));

			for (int k = 0; k < n_started; k++)
				left += started[k] == vid;
		}
		if (monotonic_ns() - last > 1000000000ull) {
			json_t *c;

			json_array_foreach(json_object_get(json_object_get(st, "Repair"), "Copies"),
					   i, c)
			{
				if (strcmp(json_string_value(json_object_get(c, "state")) ?: "",
					   "running"))
					continue;
				out(sh, "  volume %u: %.1f of %.1f MiB copied to %s\n",
				    (uint32_t)json_integer_value(json_object_get(c, "volume")),
				    (double)json_integer_value(json_object_get(c, "bytes")) /
					1048576.0,
				    (double)json_integer_value(json_object_get(c, "total")) /
					1048576.0,
				    json_string_value(json_object_get(c, "target")) ?: "");
			}
			last = monotonic_ns();
		}
		json_decref(st);
		if (left == 0) {
			out(sh, "%d volume(s) fully replicated again\n", n_started);
			break;
		}
		usleep(300000);
	}
	free(started);
	return ret;
}

static int cmd_check_disk(struct shell *sh, int argc, char **argv)
{
	struct flagdef f[] = {{"volumeId", false, NULL},      {"apply", true, NULL},
			      {"force", true, NULL},	      {"v", true, NULL},
			      {"slow", true, NULL},	      {"syncDeleted", true, NULL},
			      {"cutoffSeconds", false, NULL}, {NULL, false, NULL}};
	struct topo t;
	uint32_t only = 0;
	bool apply;
	int ret = 0;

	if (parse_flags(sh, f, argc, argv) < 0)
		return -1;
	apply = flag_bool(f, "apply") || flag_bool(f, "force");
	if (need_lock(sh) < 0)
		return -1;
	if (flag_str(f, "volumeId", NULL) && vid_flag(sh, f, &only) < 0)
		return -1;
	if (load_topo(sh, &t) < 0)
		return -1;
	if (!apply)
		out(sh,
		    "Running in simulation mode. Use \"-apply\" option to apply the changes.\n");
	for (int i = 0; i < t.n; i++) {
		for (int v = 0; v < t.nodes[i].n_vols; v++) {
			uint32_t vid = t.nodes[i].vols[v].id;
			struct node *h[16];
			int n = holders(&t, vid, h, 16);

			if (h[0] != &t.nodes[i] || n < 2 || (only && vid != only))
				continue;
			for (int k = 1; k < n; k++) {
				char pq[400], err[600];
				json_t *js;

				snprintf(pq, sizeof(pq),
					 "/admin/volume/check_disk?volume=%u&peer=%s&apply=%s"
					 "&cutoffSeconds=%ld",
					 vid, h[k]->url, apply ? "true" : "false",
					 strtol(flag_str(f, "cutoffSeconds", "10"), NULL, 10));
				if (call(sh, "POST", h[0]->url, pq, 600000, &js, err,
					 sizeof(err)) != 200) {
					json_decref(js);
					ret = fail(sh, "volume %u: %s", vid, err);
					continue;
				}
				out(sh,
				    "volume %u %s has %lld entries, %s missed %lld and partially deleted "
				    "%lld entries\n",
				    vid, h[0]->url,
				    json_integer_value(json_object_get(js, "localKeys")), h[k]->url,
				    json_integer_value(json_object_get(js, "copiedToPeer")),
				    json_integer_value(json_object_get(js, "deletedOnPeer")));
				out(sh,
				    "volume %u %s has %lld entries, %s missed %lld and partially deleted "
				    "%lld entries\n",
				    vid, h[k]->url,
				    json_integer_value(json_object_get(js, "peerKeys")), h[0]->url,
				    json_integer_value(json_object_get(js, "copiedFromPeer")),
				    json_integer_value(json_object_get(js, "deletedHere")));
				json_decref(js);
			}
		}
	}
	topo_free(&t);
	return ret;
}

/* ---------------------------------------------------------------- dispatch */

struct command {
	const char *name;
	int (*fn)(struct shell *sh, int argc, char **argv);
	const char *help;
};

static int cmd_help(struct shell *sh, int argc, char **argv);

static const struct command commands[] = {
    {"cluster.check", cmd_cluster_check,
     "check the masters and volume servers answer, and every volume has its copies"},
    {"cluster.ps", cmd_cluster_ps, "list the masters and the volume servers"},
    {"collection.delete", cmd_collection_delete,
     "-collection=<name> [-apply]: delete a collection"},
    {"collection.list", cmd_collection_list, "list the collections"},
    {"lock", cmd_lock, "take the operators' lock (one operator at a time changes the topology)"},
    {"unlock", cmd_unlock, "release the operators' lock"},
    {"volume.balance", cmd_volume_balance,
     "[-collection=<pattern>] [-dataCenter=<dc>] [-apply|-force]: even out volume counts, keeping placements"},
    {"volume.check.disk", cmd_check_disk,
     "[-volumeId=<id>] [-apply] [-cutoffSeconds=10]: compare the needles of replicas and copy what is missing (newest wins)"},
    {"volume.copy", cmd_volume_copy,
     "-volumeId=<id> -source=<host:port> -target=<host:port>: copy a volume"},
    {"volume.delete", cmd_volume_delete,
     "-volumeId=<id> -node=<host:port>: delete one copy of a volume"},
    {"volume.fix.replication", cmd_fix_replication,
     "[-n]: copy under-replicated volumes now (-n: print the plan only)"},
    {"volume.list", cmd_volume_list,
     "[-v=5] [-collectionPattern=..] [-volumeId=..] [-readonly] [-writable] [-dataCenter=..] [-rack=..] [-dataNode=..]: list the volumes"},
    {"volume.mark", cmd_volume_mark,
     "-volumeId=<id> -node=<host:port> (or -collection=<c>) -readonly|-writable"},
    {"volume.move", cmd_volume_move,
     "-volumeId=<id> -source=<host:port> -target=<host:port>: live move"},
    {"volume.vacuum", cmd_volume_vacuum, "[-garbageThreshold=0.3]: vacuum volumes"},
    {"volumeServer.evacuate", cmd_evacuate,
     "-node=<host:port> [-apply]: move every volume off a server"},
    {"help", cmd_help, "[command]: list the commands or show one"},
};

static int cmd_help(struct shell *sh, int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (argc < 2 || !strcmp(argv[1], commands[i].name))
			out(sh, "  %-24s %s\n", commands[i].name, commands[i].help);
	return 0;
}

int shell_run_line(struct shell *sh, const char *line)
{
	struct shell_command *cmds;
	char err[200];
	int n, ret = 0;

	if (shell_parse_line(line, &cmds, &n, err, sizeof(err)) < 0) {
		fail(sh, "%s", err);
		return 1;
	}
	for (int i = 0; i < n && ret != 2; i++) {
		const char *name = cmds[i].argv[0];
		bool found = false;

		if (!strcmp(name, "exit") || !strcmp(name, "quit")) {
			ret = 2;
			break;
		}
		if (!strcmp(name, "?"))
			name = "help";
		for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
			if (strcmp(name, commands[k].name))
				continue;
			found = true;
			if (cmds[i].argc > 1 &&
			    (!strcmp(cmds[i].argv[1], "-h") || !strcmp(cmds[i].argv[1], "-help") ||
			     !strcmp(cmds[i].argv[1], "--help")))
				out(sh, "  %s %s\n", commands[k].name, commands[k].help);
			else if (commands[k].fn(sh, cmds[i].argc, cmds[i].argv) < 0)
				ret = 1;
		}
		if (!found) {
			fprintf(sh->opt.err, "unknown command: %s\n", name);
			fflush(sh->opt.err);
			ret = 1;
		}
	}
	shell_free_commands(cmds, n);
	return ret;
}

int shell_new(const struct shell_options *opt, struct shell **out_sh)
{
	struct shell *sh = calloc(1, sizeof(*sh));
	const char *p;
	char host[100] = "";

	if (!sh)
		return -ENOMEM;
	sh->opt = *opt;
	if (!sh->opt.out)
		sh->opt.out = stdout;
	if (!sh->opt.err)
		sh->opt.err = stderr;
	p = opt->masters ? opt->masters : "";
	while (*p && sh->n_masters < MAX_MASTERS) {
		size_t len = strcspn(p, ",");

		if (len > 0 && len < 160)
			sh->masters[sh->n_masters++] = strndup(p, len);
		p += len + (p[len] == ',');
	}
	if (sh->n_masters == 0) {
		free(sh);
		return -EINVAL;
	}
	gethostname(host, sizeof(host) - 1);
	snprintf(sh->owner, sizeof(sh->owner), "shell %s pid %d", host, (int)getpid());
	pthread_mutex_init(&sh->lock, NULL);
	pthread_cond_init(&sh->cond, NULL);
	http_client_global_init();
	*out_sh = sh;
	return 0;
}

void shell_free(struct shell *sh)
{
	if (!sh)
		return;
	release_lock(sh);
	pthread_mutex_lock(&sh->lock);
	sh->stop_renewer = true;
	pthread_cond_broadcast(&sh->cond);
	pthread_mutex_unlock(&sh->lock);
	if (sh->renewer_running)
		pthread_join(sh->renewer, NULL);
	for (int i = 0; i < sh->n_masters; i++)
		free(sh->masters[i]);
	pthread_mutex_destroy(&sh->lock);
	pthread_cond_destroy(&sh->cond);
	free(sh);
}
