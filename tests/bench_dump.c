/*
 * bench_dump: what one metadata snapshot costs (docs/benchmarks.md; not a test).
 *   bench_dump SPEC [N] [DIRS]   SPEC: an LMDB directory or a postgres:// URL
 * Fills SPEC with N files (default 1,000,000) in DIRS directories (1000), each with one
 * chunk and every 100th with an xattr, unless it holds them already; then measures:
 * a dump to /dev/null (JSON lines), a dump compressed as a backup stores it (gzip level 6
 * into a file), a load of that into a fresh LMDB directory, and the rate of file
 * creates by another thread while a dump runs against the rate without one (the
 * filesystem does not pause). Prints one line per measure.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "fuse/dump.h"
#include "fuse/kv.h"
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
		fprintf(stderr, "bench_dump: %s: %s\n", what, strerror(-rc));
		exit(1);
	}
}

/* Heap in use (LMDB's map is file-backed and not counted: RSS would include it). */
static long heap_mb(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (long)((mi.uordblks + mi.hblkhd) >> 20);
}

static long peak_heap;

/* Called every 4096 records: the largest heap seen during a dump. */
static void sample_heap(void *ctx, uint64_t done, uint64_t total)
{
	long h = heap_mb();

	if (h > peak_heap)
		peak_heap = h;
}

static int out_null(void *ctx, const void *buf, size_t n)
{
	*(uint64_t *)ctx += n;
	return 0;
}

struct gz {
	gzFile f;
};

static int out_gz(void *ctx, const void *buf, size_t n)
{
	return gzwrite(((struct gz *)ctx)->f, buf, (unsigned)n) == (int)n ? 0 : -EIO;
}

static ssize_t in_gz(void *ctx, void *buf, size_t cap)
{
	return gzread((gzFile)ctx, buf, (unsigned)cap);
}

/* A thread creating files while the main thread dumps. */
struct creator {
	struct meta *m;
	uint64_t dir;
	atomic_bool stop;
	atomic_long done;
};

static void *create_loop(void *arg)
{
	struct creator *c = arg;
	struct meta_attr a;
	char name[64];

	/* names of this run only (an earlier run's would fail with EEXIST) */
	long run = (long)(secs() * 1000) % 100000000;

	for (long i = 0; !atomic_load(&c->stop); i++) {
		snprintf(name, sizeof(name), "c%ld-%ld-%ld", (long)c->dir, run, i);
		if (meta_create(c->m, c->dir, name, S_IFREG | 0644, 0, 0, 0, NULL, &a) == 0)
			atomic_fetch_add(&c->done, 1);
	}
	return NULL;
}

static double create_rate(struct meta *m, uint64_t dir, double seconds)
{
	struct creator c = {.m = m, .dir = dir};
	pthread_t th;
	double t0 = secs();

	pthread_create(&th, NULL, create_loop, &c);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&c.stop, true);
	pthread_join(th, NULL);
	return (double)atomic_load(&c.done) / (secs() - t0);
}

struct dump_job {
	struct kv *kv;
	uint64_t bytes;
	double seconds;
	struct dump_stats st;
};

static void *dump_thread(void *arg)
{
	struct dump_job *j = arg;
	double t0 = secs();

	check(dump_write(j->kv, out_null, &j->bytes, NULL, NULL, &j->st), "dump");
	j->seconds = secs() - t0;
	return NULL;
}

int main(int argc, char **argv)
{
	const char *spec = argc > 1 ? argv[1] : NULL;
	long n = argc > 2 ? atol(argv[2]) : 1000000, dirs = argc > 3 ? atol(argv[3]) : 1000;
	struct meta *m;
	struct meta_attr a;
	uint64_t have = 0, bytes = 0, *dir_inos;
	struct dump_stats st;
	char path[4200], name[64];
	double t0;

	if (!spec || n <= 0 || dirs <= 0) {
		fprintf(stderr, "usage: bench_dump SPEC [N] [DIRS]\n");
		return 2;
	}
	check(meta_open(spec, &m), "open");
	check(meta_inode_count(m, &have), "count");
	dir_inos = calloc((size_t)dirs, sizeof(*dir_inos));
	if ((long)have < n) {
		t0 = secs();
		for (long d = 0; d < dirs; d++) {
			snprintf(name, sizeof(name), "d%04ld", d);
			check(
			    meta_create(m, META_ROOT_INO, name, S_IFDIR | 0755, 0, 0, 0, NULL, &a),
			    "mkdir");
			dir_inos[d] = a.ino;
		}
		for (long i = 0; i < n; i++) {
			struct meta_chunk ch = {.offset = 0, .length = 4096, .blob_offset = 0};

			snprintf(name, sizeof(name), "file-%08ld.dat", i);
			check(meta_create(m, dir_inos[i % dirs], name, S_IFREG | 0644, 1000, 1000,
					  0, NULL, &a),
			      "create");
			snprintf(ch.fid, sizeof(ch.fid), "%ld,%lx%08x", 1 + i % 30, 0x100 + i,
				 0x1234abcdu);
			check(meta_write_chunks(m, a.ino, &ch, 1, 4096, true, &a), "write");
			if (i % 100 == 0)
				check(meta_setxattr(m, a.ino, "user.tag", "benchmark", 9, 0),
				      "setxattr");
		}
		meta_sync(m);
		printf("fill: %ld files in %ld directories in %.1f s\n", n, dirs, secs() - t0);
	} else {
		struct meta_attr d;

		check(meta_lookup(m, META_ROOT_INO, "d0000", &d), "lookup d0000");
		dir_inos[0] = d.ino;
	}
	/* 1. dump to nowhere: the reading and formatting alone */
	t0 = secs();
	peak_heap = 0;
	check(dump_write(meta_kv(m), out_null, &bytes, sample_heap, NULL, &st), "dump");
	printf("dump: %llu records (%llu inodes), %.1f MB of JSON in %.2f s (%.0f records/s), "
	       "largest heap during it %ld MB\n",
	       (unsigned long long)st.records, (unsigned long long)st.inodes, (double)bytes / 1e6,
	       secs() - t0, (double)st.records / (secs() - t0), peak_heap);
	/* 2. dump + gzip as a backup stores it */
	snprintf(path, sizeof(path), "%s.bench-dump.json.gz",
		 kv_is_pg_url(spec) ? "/tmp/kelp-bench" : spec);
	{
		struct gz g = {gzopen(path, "wb6")};
		struct stat sb;

		t0 = secs();
		check(dump_write(meta_kv(m), out_gz, &g, NULL, NULL, &st), "dump gz");
		gzclose(g.f);
		stat(path, &sb);
		printf("dump+gzip: %.1f MB compressed in %.2f s, heap in use after it %ld MB\n",
		       (double)sb.st_size / 1e6, secs() - t0, heap_mb());
	}
	/* 3. load it into a fresh LMDB directory */
	{
		char target[4300], err[512];
		struct kv *kv;
		gzFile in = gzopen(path, "rb");
		struct dump_stats ls;

		snprintf(target, sizeof(target), "%s.bench-load", path);
		check(kv_lmdb_open(target, &kv), "open target");
		t0 = secs();
		if (dump_load(kv, in_gz, in, NULL, &ls, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench_dump: load: %s\n", err);
			return 1;
		}
		kv->ops->sync(kv, true);
		printf("load (LMDB): %llu records in %.2f s (%.0f records/s)\n",
		       (unsigned long long)ls.records, secs() - t0,
		       (double)ls.records / (secs() - t0));
		gzclose(in);
		kv->ops->close(kv);
		{
			char cmd[4400];

			snprintf(cmd, sizeof(cmd), "rm -rf '%s'", target);
			if (system(cmd) != 0)
				fprintf(stderr, "bench_dump: cannot remove %s\n", target);
		}
		if (0)
			fprintf(stderr, "bench_dump: cannot remove %s\n", target);
		unlink(path);
	}
	/* 4. the filesystem goes on during a dump */
	{
		double alone = create_rate(m, dir_inos[0], 3.0), during;
		struct dump_job j = {.kv = meta_kv(m)};
		struct creator c = {.m = m, .dir = dir_inos[0]};
		pthread_t dt, ct;

		pthread_create(&ct, NULL, create_loop, &c);
		t0 = secs();
		pthread_create(&dt, NULL, dump_thread, &j);
		pthread_join(dt, NULL);
		atomic_store(&c.stop, true);
		pthread_join(ct, NULL);
		during = (double)atomic_load(&c.done) / (secs() - t0);
		printf("creates by another thread: %.0f/s alone, %.0f/s during a dump (%.2f s)\n",
		       alone, during, j.seconds);
	}
	meta_close(m);
	free(dir_inos);
	return 0;
}
