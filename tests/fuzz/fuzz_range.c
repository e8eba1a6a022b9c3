/*
 * fuzz_range: range_parse on arbitrary headers.
 *
 * Input format: if the input starts with a decimal number (up to 20 digits) followed
 * by '\n', that number is the entity size and the rest is the Range header; otherwise
 * the whole input is the header. The header is parsed against that size (or 1000),
 * and also against sizes 0 and 1, and every result is checked for consistency:
 *   - the return value is a count in 0..RANGE_MAX, -EINVAL or -ERANGE;
 *   - every range is non-empty and lies inside the entity, without overflow;
 *   - size 0 never yields a range.
 */
#include "fuzz.h"

#include "cluster/net/range.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void check(const uint8_t *header, size_t len, uint64_t size)
{
	struct byte_range out[RANGE_MAX + 1];
	int n;

	/* a canary past the documented capacity */
	out[RANGE_MAX].start = 0x5a5a5a5a;
	out[RANGE_MAX].length = 0xa5a5a5a5;
	n = range_parse((const char *)header, len, size, out);
	if (n != -EINVAL && n != -ERANGE && (n < 0 || n > RANGE_MAX))
		abort();
	if (out[RANGE_MAX].start != 0x5a5a5a5a || out[RANGE_MAX].length != 0xa5a5a5a5)
		abort();
	if (size == 0 && n > 0)
		abort();
	for (int i = 0; i < n; i++) {
		if (out[i].length == 0 || out[i].start >= size)
			abort();
		if (out[i].length > size - out[i].start)
			abort();
	}
	if (n > 0 && range_total(out, n) < out[0].length)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t entity = 1000;
	size_t i = 0;

	while (i < size && i < 20 && data[i] >= '0' && data[i] <= '9')
		i++;
	if (i > 0 && i < size && data[i] == '\n') {
		uint64_t v = 0;

		for (size_t k = 0; k < i; k++)
			v = v * 10 + (uint64_t)(data[k] - '0'); /* wraps for 20 digits: fine */
		entity = v;
		data += i + 1;
		size -= i + 1;
	}

	check(data, size, entity);
	check(data, size, 0);
	check(data, size, 1);
	check(data, size, UINT64_MAX);
	return 0;
}
