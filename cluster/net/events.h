/*
 * events: a small ring of recent notable events (volume growth, vacuum, repair, errors)
 * for the status pages, newest last, with a sequence number so that a page polling
 * `?since=<seq>` gets only what is new.
 *
 * Any module may add events: events_add(ev, "repair", "volume %u copied to %s", ...).
 * The master's ring is master_events(m) (cluster/master/master.h); its page shows the
 * kinds "growth", "vacuum", "repair" and "error" with their own colours, others plainly.
 *
 * Threads: every function takes the ring's mutex.
 */
#ifndef KELP_EVENTS_H
#define KELP_EVENTS_H

#include <jansson.h>
#include <stdint.h>

struct events;

struct events *events_new(int capacity);
void events_free(struct events *ev);
void events_add(struct events *ev, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Events with a sequence number above since, oldest first, as a JSON array of
 * {"seq", "time" (Unix seconds), "kind", "text"} (a new reference). */
json_t *events_json(struct events *ev, uint64_t since);
/* How many events of a kind were ever added (for counters). */
uint64_t events_count(struct events *ev, const char *kind);

#endif
