/*
 * bench_meta: the metadata layer alone, no FUSE, no cluster (scripts/bench meta).
 *   bench_meta SPEC [N]   SPEC: an LMDB directory or a postgres:// URL
 * Creates N files in one directory (create + one chunk write, as a small file's
 * create+write+close does), stats them all, then renames and unlinks them; prints
 * operations per second of each phase.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuse/meta.h"

static double secs(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "bench_meta: %s: %s\n", what, strerror(-rc));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	struct meta *m;
	struct meta_attr a, d;
	int n = argc > 2 ? atoi(argv[2]) : 10000;
	uint64_t *inos;
	char name[64], name2[64];
	double t0;

	if (argc < 2 || n <= 0) {
		fprintf(stderr, "usage: bench_meta SPEC [N]\n");
		return 2;
	}
	inos = calloc((size_t)n, sizeof(*inos));
	check(meta_open(argv[1], &m), "open");
	snprintf(name, sizeof(name), "bench-%ld", (long)time(NULL));
	check(meta_create(m, META_ROOT_INO, name, S_IFDIR | 0755, 0, 0, 0, NULL, &d), "mkdir");
	t0 = secs();
	for (int i = 0; i < n; i++) {
		struct meta_chunk c = {0, 4096, 0, ""};

		snprintf(name, sizeof(name), "f%06d", i);
		check(meta_create(m, d.ino, name, S_IFREG | 0644, 0, 0, 0, NULL, &a), "create");
		inos[i] = a.ino;
		snprintf(c.fid, sizeof(c.fid), "3,%08x%08x", i + 1, 0x1234);
		check(meta_write_chunks(m, a.ino, &c, 1, 0, true, NULL), "write");
	}
	printf("create+write %.0f files/s\n", n / (secs() - t0));
	t0 = secs();
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "f%06d", i);
		check(meta_lookup(m, d.ino, name, &a), "lookup");
	}
	printf("lookup       %.0f /s\n", n / (secs() - t0));
	t0 = secs();
	for (int i = 0; i < n; i++)
		check(meta_getattr(m, inos[i], &a), "getattr");
	printf("getattr      %.0f /s\n", n / (secs() - t0));
	t0 = secs();
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "f%06d", i);
		snprintf(name2, sizeof(name2), "g%06d", i);
		check(meta_rename(m, d.ino, name, d.ino, name2, 0, &a.ino), "rename");
	}
	printf("rename       %.0f /s\n", n / (secs() - t0));
	t0 = secs();
	for (int i = 0; i < n; i++) {
		uint64_t gone = 0;

		snprintf(name2, sizeof(name2), "g%06d", i);
		check(meta_unlink(m, d.ino, name2, &gone), "unlink");
		if (gone)
			check(meta_release_inode(m, gone), "release");
	}
	printf("unlink       %.0f /s\n", n / (secs() - t0));
	meta_close(m);
	free(inos);
	return 0;
}
