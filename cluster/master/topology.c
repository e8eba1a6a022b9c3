#include "cluster/master/topology.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node_volume {
	uint32_t id;
	char collection[128];
	uint8_t replica_placement;
	struct ttl ttl;
	uint64_t size, file_count, delete_count, deleted_bytes;
	uint32_t compact_revision;
	bool read_only, low_space;
	uint64_t provisional_until; /* grown by the master, not yet in a heartbeat */
};

struct node {
	char url[128];
	char public_url[256];
	char data_center[64];
	char rack[64];
	int max_volumes;
	uint64_t disk_total, disk_free; /* bytes of its disks (0: not reported) */
	uint64_t last_seen;
	struct node_volume *vols;
	size_t n_vols, cap_vols;
};

struct topology {
	pthread_mutex_t lock;
	struct node **nodes;
	size_t n_nodes, cap_nodes;
	uint64_t size_limit;
	uint64_t pulse_ns;
	uint32_t max_volume_id;
	uint64_t max_file_key;
	uint32_t *vacuuming;
	size_t n_vacuuming, cap_vacuuming;
	unsigned rand_state;
};

static const char *dc_name(const char *s)
{
	return s && *s ? s : "DefaultDataCenter";
}

static const char *rack_name(const char *s)
{
	return s && *s ? s : "DefaultRack";
}

struct topology *topology_new(uint64_t volume_size_limit, uint64_t pulse_ns)
{
	struct topology *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	pthread_mutex_init(&t->lock, NULL);
	t->size_limit = volume_size_limit;
	t->pulse_ns = pulse_ns;
	t->rand_state = (unsigned)time(NULL);
	return t;
}

void topology_free(struct topology *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_nodes; i++) {
		free(t->nodes[i]->vols);
		free(t->nodes[i]);
	}
	free(t->nodes);
	free(t->vacuuming);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static bool node_alive(const struct topology *t, const struct node *n, uint64_t now)
{
	return now < n->last_seen + 3 * t->pulse_ns;
}

static struct node *find_node(struct topology *t, const char *url)
{
	for (size_t i = 0; i < t->n_nodes; i++)
		if (!strcmp(t->nodes[i]->url, url))
			return t->nodes[i];
	return NULL;
}

static struct node_volume *node_find_volume(struct node *n, uint32_t vid)
{
	for (size_t i = 0; i < n->n_vols; i++)
		if (n->vols[i].id == vid)
			return &n->vols[i];
	return NULL;
}

static struct node_volume *node_add_volume(struct node *n, uint32_t vid)
{
	struct node_volume *v = node_find_volume(n, vid);

	if (v)
		return v;
	if (n->n_vols == n->cap_vols) {
		size_t cap = n->cap_vols ? n->cap_vols * 2 : 16;
		struct node_volume *p = realloc(n->vols, cap * sizeof(*p));

		if (!p)
			return NULL;
		n->vols = p;
		n->cap_vols = cap;
	}
	v = &n->vols[n->n_vols++];
	memset(v, 0, sizeof(*v));
	v->id = vid;
	return v;
}

static void node_remove_volume(struct node *n, uint32_t vid)
{
	for (size_t i = 0; i < n->n_vols; i++) {
		if (n->vols[i].id == vid) {
			n->vols[i] = n->vols[--n->n_vols];
			return;
		}
	}
}

static void copy_volume_info(struct node_volume *v, const struct hb_volume *h, bool full)
{
	v->id = h->id;
	snprintf(v->collection, sizeof(v->collection), "%s", h->collection);
	v->replica_placement = h->replica_placement;
	v->ttl.count = (uint8_t)(h->ttl >> 8);
	v->ttl.unit = (uint8_t)h->ttl;
	if (full) {
		v->size = h->size;
		v->file_count = h->file_count;
		v->delete_count = h->delete_count;
		v->deleted_bytes = h->deleted_bytes;
		v->read_only = h->read_only;
		v->low_space = h->low_space;
		v->compact_revision = h->compact_revision;
	}
}

int topology_apply_heartbeat(struct topology *t, const struct heartbeat *hb, uint64_t now_ns)
{
	char url[128];
	struct node *n;
	int ret = 0;

	if (!hb->ip[0] || hb->port == 0 || hb->port > 65535)
		return -EINVAL;
	snprintf(url, sizeof(url), "%s:%u", hb->ip, hb->port);
	pthread_mutex_lock(&t->lock);
	n = find_node(t, url);
	if (!n) {
		if (t->n_nodes == t->cap_nodes) {
			size_t cap = t->cap_nodes ? t->cap_nodes * 2 : 16;
			struct node **p = realloc(t->nodes, cap * sizeof(*p));

			if (!p) {
				ret = -ENOMEM;
				goto out;
			}
			t->nodes = p;
			t->cap_nodes = cap;
		}
		n = calloc(1, sizeof(*n));
		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		snprintf(n->url, sizeof(n->url), "%s", url);
		t->nodes[t->n_nodes++] = n;
	}
	snprintf(n->public_url, sizeof(n->public_url), "%s",
		 hb->public_url[0] ? hb->public_url : url);
	snprintf(n->data_center, sizeof(n->data_center), "%s", dc_name(hb->data_center));
	snprintf(n->rack, sizeof(n->rack), "%s", rack_name(hb->rack));
	if (hb->max_volume_count > 0) /* 0: not reported, keep what we knew */
		n->max_volumes = (int)hb->max_volume_count;
	if (hb->disk_total > 0) {
		n->disk_total = hb->disk_total;
		n->disk_free = hb->disk_free < hb->disk_total ? hb->disk_free : hb->disk_total;
	}
	n->last_seen = now_ns;
	if (hb->n_volumes > 0 || hb->has_no_volumes) {
		/*
		 * A full list replaces the node's volumes, except those the master grew
		 * moments ago: a heartbeat built before their creation must not drop them.
		 */
		size_t kept = 0;

		for (size_t i = 0; i < n->n_vols; i++)
			if (n->vols[i].provisional_until > now_ns && !hb->has_no_volumes)
				n->vols[kept++] = n->vols[i];
		n->n_vols = kept;
		for (size_t i = 0; i < hb->n_volumes; i++) {
			struct node_volume *v = node_add_volume(n, hb->volumes[i].id);

			if (v) {
				copy_volume_info(v, &hb->volumes[i], true);
				v->provisional_until = 0;
			}
		}
	}
	for (size_t i = 0; i < hb->n_new; i++) {
		bool existed = node_find_volume(n, hb->new_volumes[i].id) != NULL;
		struct node_volume *v = node_add_volume(n, hb->new_volumes[i].id);

		if (v && !existed)
			copy_volume_info(v, &hb->new_volumes[i], false);
	}
	for (size_t i = 0; i < hb->n_deleted; i++)
		node_remove_volume(n, hb->deleted_volumes[i].id);
	for (size_t i = 0; i < n->n_vols; i++)
		if (n->vols[i].id > t->max_volume_id)
			t->max_volume_id = n->vols[i].id;
	if (hb->max_file_key > t->max_file_key)
		t->max_file_key = hb->max_file_key;
out:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

bool topology_has_node(struct topology *t, const char *url)
{
	bool found;

	pthread_mutex_lock(&t->lock);
	found = find_node(t, url) != NULL;
	pthread_mutex_unlock(&t->lock);
	return found;
}

void topology_remove_node(struct topology *t, const char *url)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		if (!strcmp(t->nodes[i]->url, url)) {
			free(t->nodes[i]->vols);
			free(t->nodes[i]);
			t->nodes[i] = t->nodes[--t->n_nodes];
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

void topology_add_volume(struct topology *t, const char *node_url, uint32_t vid,
			 const char *collection, uint8_t rp, struct ttl ttl, uint64_t now_ns)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = find_node(t, node_url);
	if (n) {
		struct node_volume *v = node_add_volume(n, vid);

		if (v) {
			snprintf(v->collection, sizeof(v->collection), "%s", collection);
			v->replica_placement = rp;
			v->ttl = ttl;
			v->provisional_until = now_ns + 3 * t->pulse_ns;
		}
	}
	if (vid > t->max_volume_id)
		t->max_volume_id = vid;
	pthread_mutex_unlock(&t->lock);
}

static void add_location(struct topo_volume_view *view, const struct node *n,
			 const struct node_volume *v)
{
	struct topo_location *l;

	if (view->n_locations == 0) {
		view->id = v->id;
		snprintf(view->collection, sizeof(view->collection), "%s", v->collection);
		view->replica_placement = v->replica_placement;
		view->ttl = v->ttl;
	}
	if (v->size > view->size)
		view->size = v->size;
	if (v->file_count > view->file_count)
		view->file_count = v->file_count;
	if (v->delete_count > view->delete_count)
		view->delete_count = v->delete_count;
	if (v->deleted_bytes > view->deleted_bytes)
		view->deleted_bytes = v->deleted_bytes;
	view->read_only |= v->read_only;
	view->marked_read_only |= v->read_only && !v->low_space;
	if (view->n_locations >= TOPO_MAX_LOCATIONS)
		return;
	l = &view->locations[view->n_locations++];
	snprintf(l->url, sizeof(l->url), "%s", n->url);
	snprintf(l->public_url, sizeof(l->public_url), "%s", n->public_url);
	snprintf(l->data_center, sizeof(l->data_center), "%s", n->data_center);
	snprintf(l->rack, sizeof(l->rack), "%s", n->rack);
	l->size = v->size;
	l->compact_revision = v->compact_revision;
	l->read_only = v->read_only;
}

/* Fresher first: higher compaction revision, then larger .dat, then writable. */
static int fresher(const void *a, const void *b)
{
	const struct topo_location *x = a, *y = b;

	if (x->compact_revision != y->compact_revision)
		return x->compact_revision > y->compact_revision ? -1 : 1;
	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	return (int)x->read_only - (int)y->read_only;
}

/* More copies than the placement: keep the freshest (see topology_lookup). */
static void drop_stale_copies(struct topo_volume_view *v)
{
	int copies = placement_copies(v->replica_placement);

	if (v->n_locations <= copies)
		return;
	qsort(v->locations, (size_t)v->n_locations, sizeof(v->locations[0]), fresher);
	v->n_locations = copies;
}

static bool lookup_locked(struct topology *t, uint32_t vid, uint64_t now,
			  struct topo_volume_view *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *n = t->nodes[i];
		struct node_volume *v;

		if (!node_alive(t, n, now))
			continue;
		v = node_find_volume(n, vid);
		if (v)
			add_location(out, n, v);
	}
	return out->n_locations > 0;
}

bool topology_lookup(struct topology *t, uint32_t vid, uint64_t now_ns,
		     struct topo_volume_view *out)
{
	bool found;

	pthread_mutex_lock(&t->lock);
	found = lookup_locked(t, vid, now_ns, out);
	pthread_mutex_unlock(&t->lock);
	if (found)
		drop_stale_copies(out);
	return found;
}

static bool is_vacuuming(const struct topology *t, uint32_t vid)
{
	for (size_t i = 0; i < t->n_vacuuming; i++)
		if (t->vacuuming[i] == vid)
			return true;
	return false;
}

static bool layout_matches(const struct node_volume *v, const struct topo_filter *f)
{
	const char *c = f->collection ? f->collection : "";

	return !strcmp(v->collection, c) && v->replica_placement == f->replica_placement &&
	       v->ttl.count == f->ttl.count && v->ttl.unit == f->ttl.unit;
}

/* Collects the views of every volume of the filter's layout (caller frees). */
static int layout_views(struct topology *t, const struct topo_filter *f, uint64_t now,
			struct topo_volume_view **out)
{
	struct topo_volume_view *views = NULL;
	uint32_t *seen = NULL;
	int n = 0, cap = 0;

	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];

		if (!node_alive(t, node, now))
			continue;
		for (size_t j = 0; j < node->n_vols; j++) {
			struct node_volume *v = &node->vols[j];
			bool dup = false;

			if (!layout_matches(v, f))
				continue;
			for (int k = 0; k < n && !dup; k++)
				dup = seen[k] == v->id;
			if (dup)
				continue;
			if (n == cap) {
				int c2 = cap ? cap * 2 : 16;
				struct topo_volume_view *p =
				    realloc(views, (size_t)c2 * sizeof(*p));
				uint32_t *q = realloc(seen, (size_t)c2 * sizeof(*q));

				if (p)
					views = p;
				if (q)
					seen = q;
				if (!p || !q) {
					free(views);
					free(seen);
					return -ENOMEM;
				}
				cap = c2;
			}
			seen[n] = v->id;
			lookup_locked(t, v->id, now, &views[n]);
			n++;
		}
	}
	free(seen);
	*out = views;
	return n;
}

static bool view_writable(const struct topology *t, const struct topo_volume_view *v)
{
	return v->n_locations == placement_copies(v->replica_placement) && !v->read_only &&
	       v->size < t->size_limit && !is_vacuuming(t, v->id);
}

static bool view_matches_filter(const struct topo_volume_view *v, const struct topo_filter *f)
{
	for (int i = 0; i < v->n_locations; i++) {
		const struct topo_location *l = &v->locations[i];

		if (f->data_center && *f->data_center && strcmp(l->data_center, f->data_center))
			continue;
		if (f->rack && *f->rack && strcmp(l->rack, f->rack))
			continue;
		if (f->data_node && *f->data_node && strcmp(l->url, f->data_node) &&
		    strcmp(l->public_url, f->data_node))
			continue;
		return true;
	}
	return false;
}

bool topology_pick_for_write(struct topology *t, const struct topo_filter *f, uint64_t now_ns,
			     struct topo_volume_view *out)
{
	struct topo_volume_view *views;
	int n, candidates[3], nc = 0, start;
	double total = 0, r;
	bool found = false;

	pthread_mutex_lock(&t->lock);
	n = layout_views(t, f, now_ns, &views);
	if (n <= 0) {
		pthread_mutex_unlock(&t->lock);
		return false;
	}
	/* Up to 3 writable candidates from a random start, then a pick weighted by room. */
	start = (int)((unsigned)rand_r(&t->rand_state) % (unsigned)n);
	for (int k = 0; k < n && nc < 3; k++) {
		int i = (start + k) % n;

		if (view_writable(t, &views[i]) && view_matches_filter(&views[i], f))
			candidates[nc++] = i;
	}
	for (int k = 0; k < nc; k++)
		total += (double)(t->size_limit - views[candidates[k]].size);
	r = total * ((double)rand_r(&t->rand_state) / ((double)RAND_MAX + 1.0));
	for (int k = 0; k < nc; k++) {
		r -= (double)(t->size_limit - views[candidates[k]].size);
		if (r < 0 || k == nc - 1) {
			*out = views[candidates[k]];
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(views);
	return found;
}

void topology_layout_counts(struct topology *t, const struct topo_filter *f, uint64_t now_ns,
			    int *writable, int *crowded)
{
	struct topo_volume_view *views;
	int n;

	*writable = *crowded = 0;
	pthread_mutex_lock(&t->lock);
	n = layout_views(t, f, now_ns, &views);
	for (int i = 0; i < n; i++) {
		if (!view_writable(t, &views[i]) || !view_matches_filter(&views[i], f))
			continue;
		(*writable)++;
		if ((double)views[i].size >= 0.9 * (double)t->size_limit)
			(*crowded)++;
	}
	pthread_mutex_unlock(&t->lock);
	if (n > 0)
		free(views);
}

int topology_nodes(struct topology *t, uint64_t now_ns, struct topo_node_view **out)
{
	struct topo_node_view *v;
	int n = 0;

	pthread_mutex_lock(&t->lock);
	v = calloc(t->n_nodes + 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&t->lock);
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];

		if (!node_alive(t, node, now_ns))
			continue;
		snprintf(v[n].url, sizeof(v[n].url), "%s", node->url);
		snprintf(v[n].public_url, sizeof(v[n].public_url), "%s", node->public_url);
		snprintf(v[n].data_center, sizeof(v[n].data_center), "%s", node->data_center);
		snprintf(v[n].rack, sizeof(v[n].rack), "%s", node->rack);
		v[n].free_slots = node->max_volumes - (int)node->n_vols;
		if (v[n].free_slots < 0)
			v[n].free_slots = 0;
		n++;
	}
	pthread_mutex_unlock(&t->lock);
	*out = v;
	return n;
}

bool topology_has_late_nodes(struct topology *t, uint64_t now_ns)
{
	bool late = false;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes && !late; i++)
		late = !node_alive(t, t->nodes[i], now_ns) &&
		       now_ns < t->nodes[i]->last_seen + 10 * t->pulse_ns;
	pthread_mutex_unlock(&t->lock);
	return late;
}

bool topology_has_data_center(struct topology *t, const char *dc, uint64_t now_ns)
{
	bool found = false;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes && !found; i++)
		found = node_alive(t, t->nodes[i], now_ns) && !strcmp(t->nodes[i]->data_center, dc);
	pthread_mutex_unlock(&t->lock);
	return found;
}

int topology_volumes(struct topology *t, uint64_t now_ns, struct topo_volume_view **out)
{
	struct topo_volume_view *views = NULL;
	uint32_t *ids = NULL;
	int n = 0, cap = 0;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];

		if (!node_alive(t, node, now_ns))
			continue;
		for (size_t j = 0; j < node->n_vols; j++) {
			bool dup = false;

			for (int k = 0; k < n && !dup; k++)
				dup = ids[k] == node->vols[j].id;
			if (dup)
				continue;
			if (n == cap) {
				int c2 = cap ? cap * 2 : 16;
				struct topo_volume_view *p =
				    realloc(views, (size_t)c2 * sizeof(*p));
				uint32_t *q = realloc(ids, (size_t)c2 * sizeof(*q));

				if (p)
					views = p;
				if (q)
					ids = q;
				if (!p || !q) {
					pthread_mutex_unlock(&t->lock);
					free(views);
					free(ids);
					return -ENOMEM;
				}
				cap = c2;
			}
			ids[n] = node->vols[j].id;
			lookup_locked(t, ids[n], now_ns, &views[n]);
			n++;
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(ids);
	*out = views;
	return n;
}

void topology_set_vacuuming(struct topology *t, uint32_t vid, bool on)
{
	pthread_mutex_lock(&t->lock);
	if (on && !is_vacuuming(t, vid)) {
		if (t->n_vacuuming == t->cap_vacuuming) {
			size_t cap = t->cap_vacuuming ? t->cap_vacuuming * 2 : 8;
			uint32_t *p = realloc(t->vacuuming, cap * sizeof(*p));

			if (p) {
				t->vacuuming = p;
				t->cap_vacuuming = cap;
			}
		}
		if (t->n_vacuuming < t->cap_vacuuming)
			t->vacuuming[t->n_vacuuming++] = vid;
	} else if (!on) {
		for (size_t i = 0; i < t->n_vacuuming; i++) {
			if (t->vacuuming[i] == vid) {
				t->vacuuming[i] = t->vacuuming[--t->n_vacuuming];
				break;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
}

int topology_delete_collection(struct topology *t, const char *collection)
{
	int removed = 0;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *n = t->nodes[i];

		for (size_t j = 0; j < n->n_vols;) {
			if (!strcmp(n->vols[j].collection, collection)) {
				n->vols[j] = n->vols[--n->n_vols];
				removed++;
			} else {
				j++;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	return removed;
}

bool topology_has_collection(struct topology *t, const char *collection)
{
	bool found = false;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes && !found; i++)
		for (size_t j = 0; j < t->nodes[i]->n_vols && !found; j++)
			found = !strcmp(t->nodes[i]->vols[j].collection, collection);
	pthread_mutex_unlock(&t->lock);
	return found;
}

uint32_t topology_max_volume_id(struct topology *t)
{
	uint32_t v;

	pthread_mutex_lock(&t->lock);
	v = t->max_volume_id;
	pthread_mutex_unlock(&t->lock);
	return v;
}

uint64_t topology_max_file_key(struct topology *t)
{
	uint64_t v;

	pthread_mutex_lock(&t->lock);
	v = t->max_file_key;
	pthread_mutex_unlock(&t->lock);
	return v;
}

uint64_t topology_volume_size_limit(struct topology *t)
{
	return t->size_limit;
}

void topology_capacity(struct topology *t, uint64_t now_ns, int *nodes, int *max, int *free_slots)
{
	*nodes = *max = *free_slots = 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *n = t->nodes[i];

		if (!node_alive(t, n, now_ns))
			continue;
		(*nodes)++;
		*max += n->max_volumes;
		if (n->max_volumes > (int)n->n_vols)
			*free_slots += n->max_volumes - (int)n->n_vols;
	}
	pthread_mutex_unlock(&t->lock);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* "1-3 7" style list of a node's volume ids. */
static json_t *volume_id_ranges(const struct node *n)
{
	uint32_t *ids = malloc((n->n_vols + 1) * sizeof(*ids));
	char buf[4096];
	size_t len = 0;
	json_t *s;

	if (!ids)
		return json_string("");
	for (size_t i = 0; i < n->n_vols; i++)
		ids[i] = n->vols[i].id;
	qsort(ids, n->n_vols, sizeof(*ids), cmp_u32);
	buf[0] = '\0';
	for (size_t i = 0; i < n->n_vols && len < sizeof(buf) - 32;) {
		size_t j = i;

		while (j + 1 < n->n_vols && ids[j + 1] == ids[j] + 1)
			j++;
		if (j > i)
			len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%u-%u",
						len ? " " : "", ids[i], ids[j]);
		else
			len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%u",
						len ? " " : "", ids[i]);
		i = j + 1;
	}
	free(ids);
	s = json_string(buf);
	return s;
}

static json_t *find_by_id(json_t *array, const char *id)
{
	size_t i;
	json_t *e;

	json_array_foreach(array, i, e)
	{
		if (!strcmp(json_string_value(json_object_get(e, "Id")), id))
			return e;
	}
	return NULL;
}

static void add_u64(json_t *obj, const char *key, uint64_t v)
{
	json_object_set_new(
	    obj, key,
	    json_integer(
		(json_int_t)((uint64_t)json_integer_value(json_object_get(obj, key)) + v)));
}

static void add_counts(json_t *obj, int max, int free_slots)
{
	json_object_set_new(obj, "Max",
			    json_integer(json_integer_value(json_object_get(obj, "Max")) + max));
	json_object_set_new(
	    obj, "Free",
	    json_integer(json_integer_value(json_object_get(obj, "Free")) + free_slots));
}

json_t *topology_status_json(struct topology *t, uint64_t now_ns)
{
	json_t *top = json_object(), *dcs = json_array(), *layouts = json_array();
	struct topo_volume_view *views = NULL;
	int n;

	json_object_set_new(top, "Max", json_integer(0));
	json_object_set_new(top, "Free", json_integer(0));
	/* kelp: the live servers' disks (what their data directories' file systems hold and
	 * have free) and the bytes of their volume files, replicas included. */
	json_object_set_new(top, "DiskTotal", json_integer(0));
	json_object_set_new(top, "DiskFree", json_integer(0));
	json_object_set_new(top, "VolumeBytes", json_integer(0));
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];
		json_t *dc, *racks, *rack, *dn;
		int free_slots;

		if (!node_alive(t, node, now_ns))
			continue;
		free_slots = node->max_volumes - (int)node->n_vols;
		if (free_slots < 0)
			free_slots = 0;
		dc = find_by_id(dcs, node->data_center);
		if (!dc) {
			dc = json_pack("{s:s,s:i,s:i,s:[]}", "Id", node->data_center, "Max", 0,
				       "Free", 0, "Racks");
			json_array_append_new(dcs, dc);
		}
		racks = json_object_get(dc, "Racks");
		rack = find_by_id(racks, node->rack);
		if (!rack) {
			rack = json_pack("{s:s,s:i,s:i,s:[]}", "Id", node->rack, "Max", 0, "Free",
					 0, "DataNodes");
			json_array_append_new(racks, rack);
		}
		dn = json_pack("{s:s,s:s,s:i,s:i,s:i,s:i,s:o}", "Url", node->url, "PublicUrl",
			       node->public_url, "Volumes", (int)node->n_vols, "EcShards", 0, "Max",
			       node->max_volumes, "Free", free_slots, "VolumeIds",
			       volume_id_ranges(node));
		json_array_append_new(json_object_get(rack, "DataNodes"), dn);
		add_counts(rack, node->max_volumes, free_slots);
		add_counts(dc, node->max_volumes, free_slots);
		add_counts(top, node->max_volumes, free_slots);
		{
			uint64_t bytes = 0;

			for (size_t k = 0; k < node->n_vols; k++)
				bytes += node->vols[k].size;
			json_object_set_new(dn, "DiskTotal",
					    json_integer((json_int_t)node->disk_total));
			json_object_set_new(dn, "DiskFree",
					    json_integer((json_int_t)node->disk_free));
			json_object_set_new(dn, "VolumeBytes", json_integer((json_int_t)bytes));
			add_u64(top, "DiskTotal", node->disk_total);
			add_u64(top, "DiskFree", node->disk_free);
			add_u64(top, "VolumeBytes", bytes);
		}
	}
	pthread_mutex_unlock(&t->lock);

	/* Layouts with their writable volumes. */
	n = topology_volumes(t, now_ns, &views);
	for (int i = 0; i < n; i++) {
		char repl[4], ttl[16];
		json_t *layout = NULL, *e;
		size_t k;

		placement_format(views[i].replica_placement, repl);
		ttl_format(views[i].ttl, ttl, sizeof(ttl));
		json_array_foreach(layouts, k, e)
		{
			if (!strcmp(json_string_value(json_object_get(e, "collection")),
				    views[i].collection) &&
			    !strcmp(json_string_value(json_object_get(e, "replication")), repl) &&
			    !strcmp(json_string_value(json_object_get(e, "ttl")), ttl)) {
				layout = e;
				break;
			}
		}
		if (!layout) {
			layout = json_pack("{s:s,s:s,s:s,s:[],s:s}", "replication", repl, "ttl",
					   ttl, "collection", views[i].collection, "writables",
					   "diskType", "");
			json_array_append_new(layouts, layout);
		}
		pthread_mutex_lock(&t->lock);
		if (view_writable(t, &views[i]))
			json_array_append_new(json_object_get(layout, "writables"),
					      json_integer(views[i].id));
		pthread_mutex_unlock(&t->lock);
	}
	if (n > 0)
		free(views);
	json_object_set_new(top, "DataCenters", dcs);
	json_object_set_new(top, "Layouts", layouts);
	json_object_set_new(top, "VolumeSizeLimit", json_integer((json_int_t)t->size_limit));
	return top;
}

json_t *topology_volume_status_json(struct topology *t, uint64_t now_ns)
{
	json_t *out = json_object(), *dcs = json_object();
	int nodes, max, free_slots;

	topology_capacity(t, now_ns, &nodes, &max, &free_slots);
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];
		json_t *dc, *rack, *list;

		if (!node_alive(t, node, now_ns))
			continue;
		dc = json_object_get(dcs, node->data_center);
		if (!dc) {
			dc = json_object();
			json_object_set_new(dcs, node->data_center, dc);
		}
		rack = json_object_get(dc, node->rack);
		if (!rack) {
			rack = json_object();
			json_object_set_new(dc, node->rack, rack);
		}
		list = json_array();
		for (size_t j = 0; j < node->n_vols; j++) {
			struct node_volume *v = &node->vols[j];
			char repl[4], ttl[16];

			placement_format(v->replica_placement, repl);
			ttl_format(v->ttl, ttl, sizeof(ttl));
			json_array_append_new(
			    list,
			    json_pack("{s:I,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:b}", "Id",
				      (json_int_t)v->id, "Size", (json_int_t)v->size, "Collection",
				      v->collection, "ReplicaPlacement", repl, "Ttl", ttl,
				      "FileCount", (json_int_t)v->file_count, "DeleteCount",
				      (json_int_t)v->delete_count, "DeletedByteCount",
				      (json_int_t)v->deleted_bytes, "ReadOnly", v->read_only));
		}
		json_object_set_new(rack, node->url, list);
	}
	pthread_mutex_unlock(&t->lock);
	json_object_set_new(out, "Max", json_integer(max));
	json_object_set_new(out, "Free", json_integer(free_slots));
	json_object_set_new(out, "DataCenters", dcs);
	return out;
}

json_t *topology_nodes_json(struct topology *t, uint64_t now_ns)
{
	json_t *nodes = json_array();

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_nodes; i++) {
		struct node *node = t->nodes[i];
		json_t *vols = json_array();
		uint64_t used = 0;

		for (size_t j = 0; j < node->n_vols; j++) {
			struct node_volume *v = &node->vols[j];
			char repl[4], ttl[16];

			placement_format(v->replica_placement, repl);
			ttl_format(v->ttl, ttl, sizeof(ttl));
			used += v->size;
			json_array_append_new(
			    vols,
			    json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:b}", "id",
				      (json_int_t)v->id, "collection", v->collection, "replication",
				      repl, "ttl", ttl, "size", (json_int_t)v->size, "files",
				      (json_int_t)v->file_count, "deletes",
				      (json_int_t)v->delete_count, "deletedBytes",
				      (json_int_t)v->deleted_bytes, "readOnly", v->read_only));
		}
		{
			bool alive = node_alive(t, node, now_ns);
			json_t *n = json_pack(
			    "{s:s,s:s,s:s,s:s,s:b,s:f,s:i,s:I,s:o}", "url", node->url, "publicUrl",
			    node->public_url, "dataCenter", node->data_center, "rack", node->rack,
			    "alive", alive, "lastSeenSecondsAgo",
			    now_ns > node->last_seen ? (double)(now_ns - node->last_seen) / 1e9
						     : 0.0,
			    "maxVolumes", node->max_volumes, "usedBytes", (json_int_t)used,
			    "volumes", vols);

			/* Disks as the last heartbeat reported them; nothing for a dead server
			 * (its figures are stale). */
			if (n && alive && node->disk_total > 0) {
				json_object_set_new(n, "diskTotal",
						    json_integer((json_int_t)node->disk_total));
				json_object_set_new(n, "diskFree",
						    json_integer((json_int_t)node->disk_free));
			}
			json_array_append_new(nodes, n);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return nodes;
}
