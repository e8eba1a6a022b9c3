/*
 * range: HTTP Range header parsing, following Go's net/http parseRange, which the
 * SeaweedFS volume server uses, so clients see the same answers from kelp.
 *
 * Go's rules, kept here on purpose:
 *   - the header must start with exactly "bytes=" (case-sensitive, no leading space);
 *   - elements are split on ','; empty elements (after trimming) are skipped;
 *   - space, tab, CR and LF around an element and around its two numbers are trimmed;
 *   - numbers are parsed like strconv.ParseInt(s, 10, 64): an optional '+' or '-'
 *     sign, decimal digits only, at most INT64_MAX (anything larger is malformed);
 *   - "a-b" with b < a is malformed; b >= size is clamped to size - 1;
 *   - a suffix "-n" with n > size means the whole entity;
 *   - an element starting at or after the size is dropped; if every element was
 *     dropped the result is -ERANGE.
 * Where range.h asks for something Go does not do, range.h wins:
 *   - a range of length 0 (suffix "-0", or any suffix when size is 0) is
 *     unsatisfiable (RFC 7233 section 2.1) and dropped like a start beyond the size;
 *   - more than RANGE_MAX non-empty elements is -EINVAL, even when some would be
 *     dropped, so the work per header stays bounded.
 * A header with no non-empty element ("" or "bytes=" or "bytes= , ,") returns 0: Go
 * returns no ranges and no error for it, and net/http then serves the whole entity.
 */
#include "cluster/net/range.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static bool is_trim_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Narrows [*s, *e) to exclude leading and trailing ASCII space (textproto.TrimString). */
static void trim(const char **s, const char **e)
{
	while (*s < *e && is_trim_space(**s))
		(*s)++;
	while (*e > *s && is_trim_space((*e)[-1]))
		(*e)--;
}

/* strconv.ParseInt(s, 10, 64) on [s, e); returns false when it would fail. */
static bool parse_int64(const char *s, const char *e, int64_t *out)
{
	bool negative = false;
	uint64_t limit = INT64_MAX;
	uint64_t v = 0;

	if (s < e && (*s == '+' || *s == '-')) {
		negative = *s == '-';
		s++;
	}
	if (s == e)
		return false;
	if (negative)
		limit = (uint64_t)INT64_MAX + 1;
	for (; s < e; s++) {
		unsigned d;

		if (*s < '0' || *s > '9')
			return false;
		d = (unsigned)(*s - '0');
		if (v > (limit - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (negative)
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	else
		*out = (int64_t)v;
	return true;
}

/*
 * Parses one trimmed, non-empty element. Returns 1 and fills *r for a satisfiable
 * range, 0 when it is well-formed but unsatisfiable, -EINVAL when malformed.
 */
static int parse_element(const char *s, const char *e, uint64_t size, struct byte_range *r)
{
	const char *dash = memchr(s, '-', (size_t)(e - s));
	const char *start_s = s, *start_e, *end_s, *end_e = e;
	int64_t start, end;

	if (!dash)
		return -EINVAL;
	start_e = dash;
	end_s = dash + 1;
	trim(&start_s, &start_e);
	trim(&end_s, &end_e);

	if (start_s == start_e) {
		/* suffix-byte-range-spec: the last `end` bytes */
		if (end_s == end_e || *end_s == '-')
			return -EINVAL;
		if (!parse_int64(end_s, end_e, &end) || end < 0)
			return -EINVAL;
		if ((uint64_t)end > size)
			end = (int64_t)size;
		if (end == 0)
			return 0;
		r->start = size - (uint64_t)end;
		r->length = (uint64_t)end;
		return 1;
	}

	if (!parse_int64(start_s, start_e, &start) || start < 0)
		return -EINVAL;
	/* Go drops a range starting beyond the size before it looks at the end at all, so
	 * "bytes=100-x" on 10 bytes is unsatisfiable rather than malformed. */
	if ((uint64_t)start >= size)
		return 0;
	r->start = (uint64_t)start;
	if (end_s == end_e) {
		r->length = size - (uint64_t)start;
		return 1;
	}
	if (!parse_int64(end_s, end_e, &end) || start > end)
		return -EINVAL;
	if ((uint64_t)end >= size)
		end = (int64_t)(size - 1);
	r->length = (uint64_t)(end - start) + 1;
	return 1;
}

int range_parse(const char *header, size_t len, uint64_t size, struct byte_range *out)
{
	static const char prefix[] = "bytes=";
	const size_t prefix_len = sizeof(prefix) - 1;
	const char *p, *end;
	int elements = 0, n = 0;
	bool dropped = false;

	if (len == 0)
		return 0;
	if (!header || len < prefix_len || memcmp(header, prefix, prefix_len) != 0)
		return -EINVAL;

	p = header + prefix_len;
	end = header + len;
	for (;;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *s = p, *e = comma ? comma : end;
		int rc;

		trim(&s, &e);
		if (s != e) {
			if (++elements > RANGE_MAX)
				return -EINVAL;
			rc = parse_element(s, e, size, &out[n]);
			if (rc < 0)
				return rc;
			if (rc > 0)
				n++;
			else
				dropped = true;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	if (n == 0 && dropped)
		return -ERANGE;
	return n;
}

uint64_t range_total(const struct byte_range *r, int n)
{
	uint64_t total = 0;

	for (int i = 0; i < n; i++) {
		/* Saturate: callers compare the sum with the size, as Go's sumRangesSize. */
		if (r[i].length > UINT64_MAX - total)
			return UINT64_MAX;
		total += r[i].length;
	}
	return total;
}
