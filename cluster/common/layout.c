#include "cluster/common/layout.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct {
	char letter;
	uint32_t minutes;
} ttl_units[] = {
    {0, 0}, {'m', 1}, {'h', 60}, {'d', 1440}, {'w', 10080}, {'M', 43200}, {'y', 525600},
};

int ttl_parse(const char *s, struct ttl *out)
{
	uint64_t count = 0, minutes;
	size_t i = 0;
	int unit = 1;

	out->count = out->unit = 0;
	if (!s || !*s)
		return 0;
	while (s[i] >= '0' && s[i] <= '9') {
		count = count * 10 + (uint64_t)(s[i] - '0');
		if (count > 1000000)
			return -EINVAL;
		i++;
	}
	if (i == 0)
		return -EINVAL;
	if (s[i]) {
		if (s[i + 1])
			return -EINVAL;
		for (unit = 1; unit <= 6; unit++)
			if (ttl_units[unit].letter == s[i])
				break;
		if (unit > 6)
			return -EINVAL;
	}
	if (count == 0)
		return 0;
	minutes = count * ttl_units[unit].minutes;
	/* Normalise to the largest unit that divides evenly with a count under 256. */
	for (int u = 6; u >= 1; u--) {
		if (minutes % ttl_units[u].minutes == 0 && minutes / ttl_units[u].minutes < 256) {
			out->count = (uint8_t)(minutes / ttl_units[u].minutes);
			out->unit = (uint8_t)u;
			return 0;
		}
	}
	return -EINVAL;
}

size_t ttl_format(struct ttl ttl, char *buf, size_t cap)
{
	int n;

	if (ttl.count == 0 || ttl.unit == 0 || ttl.unit > 6) {
		if (cap)
			buf[0] = '\0';
		return 0;
	}
	n = snprintf(buf, cap, "%u%c", ttl.count, ttl_units[ttl.unit].letter);
	return n < 0 ? 0 : (size_t)n;
}

uint64_t ttl_seconds(struct ttl ttl)
{
	if (ttl.unit == 0 || ttl.unit > 6)
		return 0;
	return (uint64_t)ttl.count * ttl_units[ttl.unit].minutes * 60;
}

int placement_copies(uint8_t rp)
{
	return rp / 100 + (rp / 10) % 10 + rp % 10 + 1;
}

int placement_parse(const char *s, uint8_t *out)
{
	size_t len = s ? strlen(s) : 0;
	int v = 0;

	if (len > 3)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 255)
		return -EINVAL;
	*out = (uint8_t)v;
	return 0;
}

void placement_format(uint8_t rp, char buf[4])
{
	snprintf(buf, 4, "%d%d%d", rp / 100, (rp / 10) % 10, rp % 10);
}
