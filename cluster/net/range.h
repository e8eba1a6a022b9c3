/*
 * range: HTTP Range header parsing (RFC 7233 byte ranges), as Go's net/http does it.
 *
 *   "bytes=0-499"     first 500 bytes        "bytes=500-"   from 500 to the end
 *   "bytes=-500"      last 500 bytes         "bytes=0-0,-1" several ranges
 *
 * Results are clamped to the entity size. Whitespace around elements is allowed.
 */
#ifndef KELP_RANGE_H
#define KELP_RANGE_H

#include <stddef.h>
#include <stdint.h>

#define RANGE_MAX 16 /* more ranges than this in one header: -EINVAL */

struct byte_range {
	uint64_t start;
	uint64_t length;
};

/*
 * Parses header (len bytes, not necessarily NUL-terminated) for an entity of `size`
 * bytes into out[0..RANGE_MAX). Returns:
 *   n > 0       number of satisfiable ranges written
 *   0           no range at all ("", "bytes=", "bytes= , ,"): serve the whole entity,
 *               as Go does
 *   -EINVAL     malformed header (caller answers 416, as Go does)
 *   -ERANGE     well-formed but no range is satisfiable (start >= size): 416
 * Ranges whose start is beyond the size are dropped if at least one other range is
 * satisfiable (Go's behaviour: "bytes=0-1,99999-" on 10 bytes gives one range).
 * A suffix range larger than the size means the whole entity. A size of 0 makes every
 * range unsatisfiable.
 */
int range_parse(const char *header, size_t len, uint64_t size, struct byte_range *out);

/* Sum of the lengths of n ranges. */
uint64_t range_total(const struct byte_range *r, int n);

#endif
