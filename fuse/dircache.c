#include "fuse/dircache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* An entry of a window; its name is in the window's block. */
struct dc_entry {
	struct meta_attr attr;
	uint64_t stamp;
	uint32_t name_off;
	uint16_t name_len;
	bool known;
};

/* One load: names [lo, hi] of a directory, in one block with its entries and names. */
struct dc_window {
	int64_t loaded_ns;
	uint64_t dir_stamp;
	const char *lo, *hi; /* hi NULL: to the directory's last name */
	int n;
	struct dc_entry *e;
	const char *names;
};

struct dc_dir {
	uint64_t ino;
	struct dc_dir *hnext;		       /* hash chain */
	struct dc_dir *prev, *next;	       /* LRU list: most recent after the sentinel */
	struct dc_window *w[DIRCACHE_WINDOWS]; /* oldest first */
	int nw;
	uint32_t misses;	  /* since the last load */
	uint32_t hits_since_load; /* lookups answered (hit or absent) since the last load */
	uint32_t backoff;	  /* misses needed after a load that answered too few */
	int64_t load_ns;	  /* when the last load was handed out */
	uint64_t loads;
	bool big;     /* a load returned a full batch: later loads read from the name */
	bool loading; /* a thread is loading it (DIRCACHE_LOAD handed out) */
};

struct dircache {
	pthread_mutex_t lock;
	struct dircache_options o;
	struct dc_dir **buckets; /* protected by lock, like everything below */
	size_t nbuckets;	 /* a power of two */
	struct dc_dir lru;	 /* sentinel */
	int ndirs;
	int64_t entries;
	struct meta_lookup_stats st;
};

int dircache_name_cmp(const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b);
	int c = memcmp(a, b, al < bl ? al : bl);

	if (c)
		return c;
	return al < bl ? -1 : al > bl ? 1 : 0;
}

int dircache_new(const struct dircache_options *o, struct dircache **out)
{
	struct dircache *c;
	size_t nb = 64;

	if (!o || o->max_dirs <= 0 || o->max_entries <= 0 || o->ttl_ns <= 0)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	while (nb < (size_t)o->max_dirs && nb < (1u << 20))
		nb <<= 1;
	c->buckets = calloc(nb, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	c->nbuckets = nb;
	c->o = *o;
	c->lru.prev = c->lru.next = &c->lru;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

static size_t bucket_of(const struct dircache *c, uint64_t ino)
{
	return (size_t)((ino * 0x9e3779b97f4a7c15ull) >> 32) & (c->nbuckets - 1);
}

static struct dc_dir *dir_get(struct dircache *c, uint64_t ino)
{
	for (struct dc_dir *d = c->buckets[bucket_of(c, ino)]; d; d = d->hnext)
		if (d->ino == ino)
			return d;
	return NULL;
}

static void lru_unlink(struct dc_dir *d)
{
	d->prev->next = d->next;
	d->next->prev = d->prev;
}

static void lru_front(struct dircache *c, struct dc_dir *d)
{
	d->next = c->lru.next;
	d->prev = &c->lru;
	c->lru.next->prev = d;
	c->lru.next = d;
}

static void window_drop(struct dircache *c, struct dc_dir *d, int i)
{
	c->entries -= d->w[i]->n;
	free(d->w[i]);
	memmove(&d->w[i], &d->w[i + 1], (size_t)(d->nw - i - 1) * sizeof(d->w[0]));
	d->nw--;
}

static void dir_free(struct dircache *c, struct dc_dir *d)
{
	struct dc_dir **p = &c->buckets[bucket_of(c, d->ino)];

	while (*p != d)
		p = &(*p)->hnext;
	*p = d->hnext;
	lru_unlink(d);
	while (d->nw > 0)
		window_drop(c, d, d->nw - 1);
	c->ndirs--;
	free(d);
}

/* Evicts the least recently used directories (never keep) until both bounds hold with
 * room for `more_dirs` more directories. */
static void evict(struct dircache *c, const struct dc_dir *keep, int more_dirs)
{
	struct dc_dir *d = c->lru.prev;

	while (d != &c->lru &&
	       (c->ndirs + more_dirs > c->o.max_dirs || c->entries > c->o.max_entries)) {
		struct dc_dir *prev = d->prev;

		if (d != keep)
			dir_free(c, d);
		d = prev;
	}
}

static struct dc_dir *dir_new(struct dircache *c, uint64_t ino)
{
	struct dc_dir *d;
	size_t b;

	evict(c, NULL, 1);
	if (c->ndirs >= c->o.max_dirs)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->ino = ino;
	d->backoff = 2;
	b = bucket_of(c, ino);
	d->hnext = c->buckets[b];
	c->buckets[b] = d;
	lru_front(c, d);
	c->ndirs++;
	return d;
}

void dircache_free(struct dircache *c)
{
	if (!c)
		return;
	while (c->lru.next != &c->lru)
		dir_free(c, c->lru.next);
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static bool in_window(const struct dc_window *w, const char *name)
{
	return dircache_name_cmp(name, w->lo) >= 0 &&
	       (!w->hi || dircache_name_cmp(name, w->hi) <= 0);
}

/* The entry named name in w, or NULL. */
static struct dc_entry *window_search(struct dc_window *w, const char *name)
{
	size_t nl = strlen(name);
	int lo = 0, hi = w->n - 1;

	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		struct dc_entry *e = &w->e[mid];
		size_t el = e->name_len;
		int c = memcmp(w->names + e->name_off, name, el < nl ? el : nl);

		if (!c)
			c = el < nl ? -1 : el > nl ? 1 : 0;
		if (!c)
			return e;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

enum dircache_result dircache_find(struct dircache *c, uint64_t dir, const char *name,
				   int64_t now_ns, dircache_valid_fn valid, void *vctx,
				   struct dircache_answer *out)
{
	enum dircache_result r = DIRCACHE_MISS;
	struct dc_dir *d;
	uint32_t need;

	pthread_mutex_lock(&c->lock);
	d = dir_get(c, dir);
	if (d) {
		lru_unlink(d);
		lru_front(c, d);
	} else {
		d = dir_new(c, dir);
		if (!d) {
			c->st.misses++;
			pthread_mutex_unlock(&c->lock);
			return DIRCACHE_MISS;
		}
	}
	/* Windows past their time, or whose directory this mount changed, go. */
	for (int i = d->nw - 1; i >= 0; i--)
		if (now_ns - d->w[i]->loaded_ns >= c->o.ttl_ns ||
		    !valid(vctx, dir, d->w[i]->dir_stamp))
			window_drop(c, d, i);
	for (int i = d->nw - 1; i >= 0; i--) {
		struct dc_window *w = d->w[i];
		struct dc_entry *e;

		if (!in_window(w, name))
			continue;
		e = window_search(w, name);
		if (e && e->known && !valid(vctx, e->attr.ino, e->stamp))
			e->known = false; /* changed by this mount: ask again */
		if (e && !e->known)
			break;
		r = e ? DIRCACHE_HIT : DIRCACHE_ABSENT;
		out->loaded_ns = w->loaded_ns;
		if (e) {
			out->attr = e->attr;
			d->hits_since_load++;
			c->st.hits++;
		} else {
			c->st.absent++; /* neither a hit nor a miss that calls for a load */
		}
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	c->st.misses++;
	d->misses++;
	/* The backoff holds while the last load is recent (a directory changing under
	 * every load); a scan that comes later starts afresh. */
	if (d->loads == 0 || now_ns - d->load_ns >= c->o.ttl_ns)
		need = 2;
	else
		need = d->hits_since_load >= DIRCACHE_USEFUL ? 1 : d->backoff;
	if (!d->loading && d->misses >= need) {
		if (d->loads > 0)
			d->backoff = d->hits_since_load >= DIRCACHE_USEFUL   ? 2
				     : d->backoff < DIRCACHE_BACKOFF_MAX / 2 ? d->backoff * 2
									     : DIRCACHE_BACKOFF_MAX;
		d->loading = true;
		d->load_ns = now_ns;
		d->misses = 0;
		d->hits_since_load = 0;
		d->loads++;
		c->st.loads++;
		out->from_start = !d->big;
		r = DIRCACHE_LOAD;
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* [alo, ahi] and [blo, bhi] share a name (hi NULL: no end). */
static bool overlap(const char *alo, const char *ahi, const char *blo, const char *bhi)
{
	return (!bhi || dircache_name_cmp(alo, bhi) <= 0) &&
	       (!ahi || dircache_name_cmp(blo, ahi) <= 0);
}

static struct dc_window *window_make(const char *lo, const char *hi,
				     const struct dircache_row *rows, int n, int64_t loaded_ns,
				     uint64_t dir_stamp)
{
	size_t names = strlen(lo) + 1 + (hi ? strlen(hi) + 1 : 0), off;
	struct dc_window *w;
	char *nb;

	for (int i = 0; i < n; i++)
		names += strlen(rows[i].name) + 1;
	w = malloc(sizeof(*w) + (size_t)n * sizeof(struct dc_entry) + names);
	if (!w)
		return NULL;
	w->e = (struct dc_entry *)(w + 1);
	nb = (char *)(w->e + n);
	w->names = nb;
	w->n = n;
	w->loaded_ns = loaded_ns;
	w->dir_stamp = dir_stamp;
	off = 0;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(rows[i].name);

		memset(&w->e[i], 0, sizeof(w->e[i]));
		if (rows[i].attr)
			w->e[i].attr = *rows[i].attr;
		w->e[i].stamp = rows[i].stamp;
		w->e[i].known = rows[i].known && rows[i].attr;
		w->e[i].name_off = (uint32_t)off;
		w->e[i].name_len = (uint16_t)l;
		memcpy(nb + off, rows[i].name, l + 1);
		off += l + 1;
	}
	memcpy(nb + off, lo, strlen(lo) + 1);
	w->lo = nb + off;
	off += strlen(lo) + 1;
	if (hi) {
		memcpy(nb + off, hi, strlen(hi) + 1);
		w->hi = nb + off;
	} else {
		w->hi = NULL;
	}
	return w;
}

int dircache_fill(struct dircache *c, uint64_t dir, const char *lo, const char *hi,
		  const struct dircache_row *rows, int n, bool full, int64_t loaded_ns,
		  uint64_t dir_stamp)
{
	struct dc_window *w;
	struct dc_dir *d;
	int rc = 0;

	/* In name order and inside [lo, hi]: anything else is the caller's bug. */
	for (int i = 0; i < n; i++)
		if (strlen(rows[i].name) > UINT16_MAX ||
		    (i > 0 && dircache_name_cmp(rows[i - 1].name, rows[i].name) >= 0) ||
		    dircache_name_cmp(rows[i].name, lo) < 0 ||
		    (hi && dircache_name_cmp(rows[i].name, hi) > 0))
			return -EINVAL;
	w = n <= c->o.max_entries ? window_make(lo, hi, rows, n, loaded_ns, dir_stamp) : NULL;
	pthread_mutex_lock(&c->lock);
	d = dir_get(c, dir);
	if (!d)
		d = dir_new(c, dir); /* evicted during the load */
	if (d) {
		d->loading = false;
		if (full)
			d->big = true;
	}
	if (!d || !w) {
		rc = n <= c->o.max_entries ? -ENOMEM : 0;
		pthread_mutex_unlock(&c->lock);
		free(w);
		return rc;
	}
	for (int i = d->nw - 1; i >= 0; i--)
		if (overlap(d->w[i]->lo, d->w[i]->hi, w->lo, w->hi))
			window_drop(c, d, i);
	if (d->nw == DIRCACHE_WINDOWS)
		window_drop(c, d, 0);
	d->w[d->nw++] = w;
	c->entries += n;
	evict(c, d, 0);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void dircache_abandon(struct dircache *c, uint64_t dir)
{
	struct dc_dir *d;

	pthread_mutex_lock(&c->lock);
	d = dir_get(c, dir);
	if (d)
		d->loading = false;
	pthread_mutex_unlock(&c->lock);
}

void dircache_forget(struct dircache *c, uint64_t dir)
{
	struct dc_dir *d;

	pthread_mutex_lock(&c->lock);
	d = dir_get(c, dir);
	if (d)
		dir_free(c, d);
	pthread_mutex_unlock(&c->lock);
}

void dircache_stats(struct dircache *c, struct meta_lookup_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->st;
	out->dirs = (uint64_t)c->ndirs;
	out->entries = (uint64_t)c->entries;
	pthread_mutex_unlock(&c->lock);
}
