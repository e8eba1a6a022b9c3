/*
 * bench_volume_load N: writes N needles of 64 bytes into a fresh volume, closes it,
 * then times volume_open (rebuilding the needle map from .idx) and reports the map's
 * memory per needle. Used by scripts/bench load; not a test.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/base/util.h"
#include "cluster/storage/volume.h"

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000, t0, t1;
	char dir[] = "/tmp/kelp-load-XXXXXX", cmd[256];
	struct volume_options opt = {.create = true};
	uint8_t data[64];
	struct volume *v;

	if (!mkdtemp(dir))
		return 1;
	memset(data, 'x', sizeof(data));
	if (volume_open(dir, "", 1, &opt, &v) < 0)
		return 1;
	for (uint64_t i = 1; i <= n; i++) {
		struct needle nd = {.cookie = 0x12345678, .id = i};
		struct volume_data d = {
		    .mem = data, .len = sizeof(data), .crc = crc32c(0, data, sizeof(data))};

		if (volume_write(v, &nd, &d, false, NULL) < 0) {
			fprintf(stderr, "write %" PRIu64 " failed\n", i);
			return 1;
		}
	}
	volume_close(v);
	if (system("sync") != 0)
		fprintf(stderr, "sync failed\n");
	opt.create = false;
	t0 = monotonic_ns();
	if (volume_open(dir, "", 1, &opt, &v) < 0)
		return 1;
	t1 = monotonic_ns();
	printf("volume with %" PRIu64 " needles: open in %.3f s, needle map %.1f bytes/needle\n", n,
	       (double)(t1 - t0) / 1e9, (double)volume_map_memory(v) / (double)n);
	volume_close(v);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
