#ifndef KELP_CLUSTER_COMMON_LAYOUT_H
#define KELP_CLUSTER_COMMON_LAYOUT_H

/*
 * The vocabulary of a volume layout, shared by the master (which groups volumes by
 * collection, replica placement and TTL) and the volume server (which stores them in
 * needles and superblocks): TTL and replica placement, parsed and formatted as
 * SeaweedFS spells them.
 */

#include <stddef.h>
#include <stdint.h>

/* TTL as stored: count and unit (0 empty, 1 m, 2 h, 3 d, 4 w, 5 M, 6 y). */
struct ttl {
	uint8_t count;
	uint8_t unit;
};

/* TTL helpers: "3m", "4h", "5d", "6w", "7M", "8y", bare number = minutes, "" = none. */
int ttl_parse(const char *s, struct ttl *out);
size_t ttl_format(struct ttl ttl, char *buf, size_t cap); /* "" when empty */
uint64_t ttl_seconds(struct ttl ttl);

/* Copies of a placement byte (x + y + z + 1). */
int placement_copies(uint8_t rp);
/* Parses "xyz" (up to 3 digits, left-padded with 0) into the placement byte. */
int placement_parse(const char *s, uint8_t *out);
void placement_format(uint8_t rp, char buf[4]);

#endif
