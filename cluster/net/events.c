#include "cluster/net/events.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EVENT_TEXT  240
#define EVENT_KINDS 16

struct event {
	uint64_t seq;
	int64_t time;
	char kind[16];
	char text[EVENT_TEXT];
};

struct events {
	pthread_mutex_t lock;
	struct event *ring;
	int cap;
	uint64_t next_seq; /* the sequence number of the next event; ring[(seq-1) % cap] */
	struct {
		char kind[16];
		uint64_t n;
	} counts[EVENT_KINDS];
};

struct events *events_new(int capacity)
{
	struct events *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return NULL;
	ev->cap = capacity > 0 ? capacity : 100;
	ev->ring = calloc((size_t)ev->cap, sizeof(*ev->ring));
	if (!ev->ring) {
		free(ev);
		return NULL;
	}
	ev->next_seq = 1;
	pthread_mutex_init(&ev->lock, NULL);
	return ev;
}

void events_free(struct events *ev)
{
	if (!ev)
		return;
	pthread_mutex_destroy(&ev->lock);
	free(ev->ring);
	free(ev);
}

void events_add(struct events *ev, const char *kind, const char *fmt, ...)
{
	struct event *e;
	va_list ap;

	if (!ev)
		return;
	pthread_mutex_lock(&ev->lock);
	e = &ev->ring[(ev->next_seq - 1) % (uint64_t)ev->cap];
	e->seq = ev->next_seq++;
	e->time = (int64_t)time(NULL);
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
	for (int i = 0; i < EVENT_KINDS; i++) {
		if (!ev->counts[i].kind[0])
			snprintf(ev->counts[i].kind, sizeof(ev->counts[i].kind), "%s", kind);
		if (!strcmp(ev->counts[i].kind, e->kind)) {
			ev->counts[i].n++;
			break;
		}
	}
	pthread_mutex_unlock(&ev->lock);
}

json_t *events_json(struct events *ev, uint64_t since)
{
	json_t *a = json_array();
	uint64_t first;

	if (!ev)
		return a;
	pthread_mutex_lock(&ev->lock);
	first = ev->next_seq > (uint64_t)ev->cap ? ev->next_seq - (uint64_t)ev->cap : 1;
	if (since + 1 > first)
		first = since + 1;
	for (uint64_t s = first; s < ev->next_seq; s++) {
		struct event *e = &ev->ring[(s - 1) % (uint64_t)ev->cap];

		json_array_append_new(a, json_pack("{s:I,s:I,s:s,s:s}", "seq", (json_int_t)e->seq,
						   "time", (json_int_t)e->time, "kind", e->kind,
						   "text", e->text));
	}
	pthread_mutex_unlock(&ev->lock);
	return a;
}

uint64_t events_count(struct events *ev, const char *kind)
{
	uint64_t n = 0;

	if (!ev)
		return 0;
	pthread_mutex_lock(&ev->lock);
	for (int i = 0; i < EVENT_KINDS; i++)
		if (!strcmp(ev->counts[i].kind, kind))
			n = ev->counts[i].n;
	pthread_mutex_unlock(&ev->lock);
	return n;
}
