#include "cache/chunk_cache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096

struct entry {
	struct chunk_cache_entry pub; /* first: handles are entry pointers */
	char fid[48];
	int refs; /* the cache's own reference counts as one while linked */
	bool linked;
	struct entry *hnext;	   /* hash chain */
	struct entry *prev, *next; /* LRU list, most recent first */
};

struct chunk_cache {
	pthread_mutex_t lock;
	size_t capacity, bytes;
	struct entry *buckets[BUCKETS];
	struct entry *head, *tail;
};

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % BUCKETS;
}

struct chunk_cache *chunk_cache_new(size_t capacity)
{
	struct chunk_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	c->capacity = capacity;
	return c;
}

static void entry_unref(struct entry *e)
{
	if (--e->refs == 0) {
		free((void *)e->pub.data);
		free(e);
	}
}

static void unlink_entry(struct chunk_cache *c, struct entry *e)
{
	struct entry **p = &c->buckets[hash(e->fid)];

	while (*p && *p != e)
		p = &(*p)->hnext;
	if (*p)
		*p = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	c->bytes -= e->pub.len;
	e->linked = false;
	entry_unref(e);
}

void chunk_cache_free(struct chunk_cache *c)
{
	if (!c)
		return;
	while (c->head)
		unlink_entry(c, c->head);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static struct entry *find(struct chunk_cache *c, const char *fid)
{
	for (struct entry *e = c->buckets[hash(fid)]; e; e = e->hnext)
		if (!strcmp(e->fid, fid))
			return e;
	return NULL;
}

static void to_front(struct chunk_cache *c, struct entry *e)
{
	if (c->head == e)
		return;
	if (e->prev)
		e->prev->next = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

const struct chunk_cache_entry *chunk_cache_get(struct chunk_cache *c, const char *fid)
{
	struct entry *e;

	pthread_mutex_lock(&c->lock);
	e = find(c, fid);
	if (e) {
		e->refs++;
		to_front(c, e);
	}
	pthread_mutex_unlock(&c->lock);
	return e ? &e->pub : NULL;
}

const struct chunk_cache_entry *chunk_cache_insert(struct chunk_cache *c, const char *fid,
						   uint8_t *data, size_t len)
{
	struct entry *e, *old;

	e = calloc(1, sizeof(*e));
	if (!e) {
		free(data);
		return NULL;
	}
	e->pub.data = data;
	e->pub.len = len;
	strncpy(e->fid, fid, sizeof(e->fid) - 1);
	e->refs = 1; /* the caller's */
	pthread_mutex_lock(&c->lock);
	old = find(c, fid);
	if (old) {
		old->refs++;
		to_front(c, old);
		pthread_mutex_unlock(&c->lock);
		entry_unref(e);
		return &old->pub;
	}
	if (c->capacity > 0 && len <= c->capacity) {
		unsigned h = hash(fid);

		e->refs++; /* the cache's */
		e->linked = true;
		e->hnext = c->buckets[h];
		c->buckets[h] = e;
		e->next = c->head;
		if (c->head)
			c->head->prev = e;
		c->head = e;
		if (!c->tail)
			c->tail = e;
		c->bytes += len;
		while (c->bytes > c->capacity && c->tail && c->tail != e)
			unlink_entry(c, c->tail);
	}
	pthread_mutex_unlock(&c->lock);
	return &e->pub;
}

void chunk_cache_put(struct chunk_cache *c, const struct chunk_cache_entry *pub)
{
	if (!pub)
		return;
	pthread_mutex_lock(&c->lock);
	entry_unref((struct entry *)pub);
	pthread_mutex_unlock(&c->lock);
}

void chunk_cache_ref(struct chunk_cache *c, const struct chunk_cache_entry *pub)
{
	pthread_mutex_lock(&c->lock);
	((struct entry *)pub)->refs++;
	pthread_mutex_unlock(&c->lock);
}

void chunk_cache_forget(struct chunk_cache *c, const char *fid)
{
	struct entry *e;

	pthread_mutex_lock(&c->lock);
	e = find(c, fid);
	if (e)
		unlink_entry(c, e);
	pthread_mutex_unlock(&c->lock);
}

size_t chunk_cache_bytes(struct chunk_cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->bytes;
	pthread_mutex_unlock(&c->lock);
	return n;
}
