#include "cluster/storage/store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/common/fid.h"

struct store_entry {
	struct volume *v;
	int location;
	atomic_int refs; /* the table holds one */
	bool deleted;	 /* remove files when the last reference goes */
	struct store_entry *next;
};

struct store_location {
	char *dir;
	int max_volumes;
	int count;
	bool low; /* short of space at the last store_check_space */
};

struct store {
	struct store_options opt;
	struct store_location *locations;
	int n_locations;
	pthread_rwlock_t lock;
	struct store_entry *entries; /* a list: volume servers hold tens of volumes */
};

static struct store_entry *find_entry(struct store *s, uint32_t vid)
{
	for (struct store_entry *e = s->entries; e; e = e->next)
		if (volume_id(e->v) == vid)
			return e;
	return NULL;
}

static void volume_options_for(const struct store *s, struct volume_options *o)
{
	memset(o, 0, sizeof(*o));
	o->fsync_every_write = s->opt.fsync_every_write;
	o->max_size = s->opt.max_volume_size;
}

static void add_entry(struct store *s, struct volume *v, int location)
{
	struct store_entry *e = calloc(1, sizeof(*e));

	if (!e) {
		volume_close(v);
		return;
	}
	e->v = v;
	e->location = location;
	atomic_init(&e->refs, 1);
	e->next = s->entries;
	s->entries = e;
	s->locations[location].count++;
}

/* Parses "[<collection>_]<vid>.dat"; returns false for other names. */
static bool parse_volume_file(const char *name, char *collection, size_t cap, uint32_t *vid)
{
	size_t len = strlen(name);
	const char *underscore, *digits;

	if (len < 5 || strcmp(name + len - 4, ".dat"))
		return false;
	underscore = memrchr(name, '_', len - 4);
	digits = underscore ? underscore + 1 : name;
	if (fid_parse_vid(digits, (size_t)(name + len - 4 - digits), vid) < 0)
		return false;
	if (underscore) {
		size_t clen = (size_t)(underscore - name);

		if (clen == 0 || clen >= cap)
			return false;
		memcpy(collection, name, clen);
		collection[clen] = '\0';
	} else {
		collection[0] = '\0';
	}
	return true;
}

static void load_location(struct store *s, int location)
{
	struct store_location *loc = &s->locations[location];
	DIR *d = opendir(loc->dir);
	struct dirent *de;

	if (!d) {
		log_error("store: cannot read directory %s: %s", loc->dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		char collection[128];
		struct volume_options o;
		struct volume *v;
		uint32_t vid;

		if (!parse_volume_file(de->d_name, collection, sizeof(collection), &vid))
			continue;
		if (find_entry(s, vid)) {
			log_error(
			    "store: volume %u found twice (again in %s), ignoring the second copy",
			    vid, loc->dir);
			continue;
		}
		volume_options_for(s, &o);
		if (volume_open(loc->dir, collection, vid, &o, &v) == 0) {
			add_entry(s, v, location);
			log_info("store: loaded volume %u%s%s from %s", vid,
				 *collection ? " of " : "", collection, loc->dir);
		}
	}
	closedir(d);
}

int store_open(char **dirs, const int *max_volumes, int n, const struct store_options *opt,
	       struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->opt = *opt;
	s->locations = calloc((size_t)n, sizeof(*s->locations));
	if (!s->locations) {
		free(s);
		return -ENOMEM;
	}
	s->n_locations = n;
	pthread_rwlock_init(&s->lock, NULL);
	for (int i = 0; i < n; i++) {
		int ret = mkdir_p(dirs[i], 0755);

		s->locations[i].dir = strdup(dirs[i]);
		s->locations[i].max_volumes = max_volumes[i];
		if (ret < 0) {
			log_error("store: cannot create directory %s: %s", dirs[i], strerror(-ret));
			store_close(s);
			return ret;
		}
	}
	for (int i = 0; i < n; i++)
		load_location(s, i);
	*out = s;
	return 0;
}

static void entry_unref(struct store *s, struct store_entry *e)
{
	if (atomic_fetch_sub(&e->refs, 1) != 1)
		return;
	if (e->deleted)
		volume_destroy(e->v);
	else
		volume_close(e->v);
	free(e);
}

void store_close(struct store *s)
{
	struct store_entry *e, *next;

	if (!s)
		return;
	for (e = s->entries; e; e = next) {
		next = e->next;
		entry_unref(s, e);
	}
	for (int i = 0; i < s->n_locations; i++)
		free(s->locations[i].dir);
	free(s->locations);
	pthread_rwlock_destroy(&s->lock);
	free(s);
}

/*
 * References are counted on the entry; a volume pointer maps back to its entry by a
 * search under the lock, which is cheap for the tens of volumes a server holds.
 */
struct volume *store_get_volume(struct store *s, uint32_t vid)
{
	struct store_entry *e;

	pthread_rwlock_rdlock(&s->lock);
	e = find_entry(s, vid);
	if (e)
		atomic_fetch_add(&e->refs, 1);
	pthread_rwlock_unlock(&s->lock);
	return e ? e->v : NULL;
}

/* Entries removed from the table but still referenced wait here. */
static pthread_mutex_t orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static struct store_entry *orphans;

/* Drops one reference of an orphaned entry; the last one closes (and deletes) it. */
static void orphan_unref(struct store *s, struct store_entry *e)
{
	bool last;

	pthread_mutex_lock(&orphans_lock);
	last = atomic_fetch_sub(&e->refs, 1) == 1;
	if (last) {
		for (struct store_entry **p = &orphans; *p; p = &(*p)->next) {
			if (*p == e) {
				*p = e->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&orphans_lock);
	if (last) {
		if (e->deleted)
			volume_destroy(e->v);
		else
			volume_close(e->v);
		free(e);
	}
}

void store_put_volume(struct store *s, struct volume *v)
{
	struct store_entry *e;

	pthread_rwlock_rdlock(&s->lock);
	e = find_entry(s, volume_id(v));
	if (e && e->v == v) {
		/* Still in the table, which holds a reference: never the last one. */
		atomic_fetch_sub(&e->refs, 1);
		pthread_rwlock_unlock(&s->lock);
		return;
	}
	pthread_rwlock_unlock(&s->lock);
	pthread_mutex_lock(&orphans_lock);
	for (e = orphans; e && e->v != v; e = e->next)
		;
	pthread_mutex_unlock(&orphans_lock);
	if (e)
		orphan_unref(s, e);
}

/* Free bytes of a directory's disk and the reserve -minFreeSpace keeps; false when
 * statvfs fails. */
static bool disk_space(const struct store *s, int i, uint64_t *free_bytes, uint64_t *reserve)
{
	struct statvfs st;

	if (statvfs(s->locations[i].dir, &st) < 0)
		return false;
	*free_bytes = (uint64_t)st.f_bavail * st.f_frsize;
	*reserve = (uint64_t)st.f_blocks * st.f_frsize / 100 * s->opt.min_free_percent;
	return true;
}

int store_create_volume(struct store *s, uint32_t vid, const char *collection,
			uint8_t replica_placement, struct ttl ttl)
{
	struct volume_options o;
	struct volume *v;
	int best = -1, ret;

	pthread_rwlock_wrlock(&s->lock);
	if (find_entry(s, vid)) {
		pthread_rwlock_unlock(&s->lock);
		return -EEXIST;
	}
	for (int i = 0; i < s->n_locations; i++) {
		int free_slots = s->locations[i].max_volumes - s->locations[i].count;
		uint64_t free_bytes, reserve;

		if (s->locations[i].low ||
		    (disk_space(s, i, &free_bytes, &reserve) && free_bytes <= reserve))
			continue; /* a new volume there would be read-only at once */
		if (free_slots > 0 && (best < 0 || free_slots > s->locations[best].max_volumes -
								    s->locations[best].count))
			best = i;
	}
	if (best < 0) {
		pthread_rwlock_unlock(&s->lock);
		return -ENOSPC;
	}
	volume_options_for(s, &o);
	o.create = true;
	o.replica_placement = replica_placement;
	o.ttl = ttl;
	ret = volume_open(s->locations[best].dir, collection, vid, &o, &v);
	if (ret == 0) {
		add_entry(s, v, best);
		log_info("store: created volume %u%s%s in %s", vid, *collection ? " of " : "",
			 collection, s->locations[best].dir);
	}
	pthread_rwlock_unlock(&s->lock);
	return ret;
}

/* Unlinks e from the table; caller holds the write lock. */
static void remove_entry(struct store *s, struct store_entry *e)
{
	for (struct store_entry **p = &s->entries; *p; p = &(*p)->next) {
		if (*p == e) {
			*p = e->next;
			break;
		}
	}
	s->locations[e->location].count--;
	e->deleted = true;
	pthread_mutex_lock(&orphans_lock);
	e->next = orphans;
	orphans = e;
	pthread_mutex_unlock(&orphans_lock);
}

int store_delete_volume(struct store *s, uint32_t vid)
{
	struct store_entry *e;

	pthread_rwlock_wrlock(&s->lock);
	e = find_entry(s, vid);
	if (!e) {
		pthread_rwlock_unlock(&s->lock);
		return -ENOENT;
	}
	remove_entry(s, e);
	pthread_rwlock_unlock(&s->lock);
	log_info("store: deleted volume %u", vid);
	orphan_unref(s, e);
	return 0;
}

int store_delete_collection(struct store *s, const char *collection)
{
	struct store_entry *victims[1024];
	int n = 0;

	pthread_rwlock_wrlock(&s->lock);
	for (struct store_entry *e = s->entries, *next; e && n < 1024; e = next) {
		next = e->next;
		if (!strcmp(volume_collection(e->v), collection)) {
			remove_entry(s, e);
			victims[n++] = e;
		}
	}
	pthread_rwlock_unlock(&s->lock);
	for (int i = 0; i < n; i++)
		orphan_unref(s, victims[i]);
	if (n)
		log_info("store: deleted %d volumes of collection %s", n, collection);
	return n;
}

void store_each_volume(struct store *s, void (*fn)(void *ctx, struct volume *v), void *ctx)
{
	pthread_rwlock_rdlock(&s->lock);
	for (struct store_entry *e = s->entries; e; e = e->next)
		fn(ctx, e->v);
	pthread_rwlock_unlock(&s->lock);
}

bool store_check_space(struct store *s)
{
	bool changed = false;

	pthread_rwlock_rdlock(&s->lock);
	for (int i = 0; i < s->n_locations; i++) {
		uint64_t free_bytes, reserve, needed = 0;
		bool low;

		if (!disk_space(s, i, &free_bytes, &reserve))
			continue;
		/* A write that failed with ENOSPC on one volume holds for the whole disk. */
		for (struct store_entry *e = s->entries; e; e = e->next)
			if (e->location == i && volume_space_needed(e->v) > needed)
				needed = volume_space_needed(e->v);
		low = free_bytes < reserve || (needed && free_bytes < reserve + needed);
		s->locations[i].low = low;
		for (struct store_entry *e = s->entries; e; e = e->next)
			if (e->location == i && !e->deleted)
				changed |= volume_set_low_space(e->v, low);
	}
	pthread_rwlock_unlock(&s->lock);
	return changed;
}

int store_disk_statuses(struct store *s, struct store_disk_status *out, int cap)
{
	pthread_rwlock_rdlock(&s->lock);
	for (int i = 0; i < s->n_locations && i < cap; i++) {
		struct statvfs st;

		memset(&out[i], 0, sizeof(out[i]));
		out[i].dir = s->locations[i].dir;
		out[i].max_volumes = s->locations[i].max_volumes;
		out[i].volume_count = s->locations[i].count;
		if (statvfs(s->locations[i].dir, &st) == 0) {
			out[i].all = (uint64_t)st.f_blocks * st.f_frsize;
			out[i].free = (uint64_t)st.f_bavail * st.f_frsize;
			out[i].used = out[i].all - (uint64_t)st.f_bfree * st.f_frsize;
		}
	}
	pthread_rwlock_unlock(&s->lock);
	return s->n_locations;
}

void store_counts(struct store *s, int *max_volumes, int *volume_count)
{
	*max_volumes = *volume_count = 0;
	pthread_rwlock_rdlock(&s->lock);
	for (int i = 0; i < s->n_locations; i++) {
		/* A disk short of space offers no free slot: masters grow volumes elsewhere. */
		*max_volumes +=
		    s->locations[i].low ? s->locations[i].count : s->locations[i].max_volumes;
		*volume_count += s->locations[i].count;
	}
	pthread_rwlock_unlock(&s->lock);
}
