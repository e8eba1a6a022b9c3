/*
 * kelp benchmark: write then randomly read many small blobs, like `weed benchmark`.
 *
 * Write phase: -c threads share -n files (thread i takes a contiguous slice); each
 * file is one assign + one upload of -size bytes plus 0-63 random extra bytes, timed
 * together (with -assignBatch N, one assign of N file ids serves N uploads, so the
 * figure is the volume servers' rather than the master's). The file ids go to memory and to -list (one per line, weed's format).
 * Read phase: -n reads of files picked at random (or in order with
 * -readSequentially) from what was written, or from -list when -write=false; the
 * volume lookup is cached by the client, so a read is normally one GET. By default one
 * thread keeps -c GETs in flight (libcurl's multi interface, -readLoop): -c blocking
 * threads cost the client more CPU per read than the volume server spends on it (their
 * wake-ups, on a machine where the client shares the cores), and the figure is meant
 * to measure the server. -readLoop=false reads through the client library
 * (kelp_client_read, with its retries over replicas and read tokens) in -c threads.
 *
 * Each thread owns a struct kelp_client (kept-alive connections) and a preallocated
 * latency array sized for its slice, so the hot loop allocates nothing of its own.
 * The report per phase: completed/failed requests, elapsed time, requests/s, MB/s,
 * latency min/avg/p50/p90/p99/max in ms.
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/flags.h"
#include "cluster/base/util.h"
#include "cluster/client/client.h"
#include "cluster/common/fid.h"
#include "cluster/net/http_client.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

#define EXTRA_BYTES_MAX 63
#define SIZE_UNKNOWN	UINT32_MAX	 /* a file read from -list: length not checked */
#define SIZE_FAILED	(UINT32_MAX - 1) /* its write failed: not read */

struct bench_file {
	struct fid fid;
	uint32_t size;
};

struct bench {
	const char *masters;
	int timeout_s;
	bool fsync;
	bool read_sequentially;
	int concurrency;       /* -c: threads, or transfers of the read loop */
	unsigned assign_batch; /* file ids per assign (count=); 1 = one assign per file */
	struct kelp_assign_request areq;
	const uint8_t *data; /* size + EXTRA_BYTES_MAX random bytes, read-only */
	uint32_t size;
	struct bench_file *files;
	uint64_t n_files;
	uint64_t *readable; /* indices of files that can be read */
	uint64_t n_readable;
	struct tool_progress progress;
};

struct worker {
	struct bench *b;
	int id;
	uint64_t begin, end;  /* this thread's slice of the requests */
	uint32_t *latency_us; /* end - begin entries, preallocated */
	uint64_t n_latency;
	uint64_t completed, failed, bytes;
	unsigned int seed;
	char first_error[512];
	pthread_t thread;
};

static void note_error(struct worker *w, struct kelp_client *c)
{
	if (!w->first_error[0])
		snprintf(w->first_error, sizeof(w->first_error), "%s", kelp_client_error(c));
}

static uint32_t elapsed_us(uint64_t start_ns)
{
	uint64_t us = (monotonic_ns() - start_ns) / 1000;

	return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void *write_worker(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct kelp_upload_options uopt = {.fsync = b->fsync};
	struct kelp_client *c;

	if (tool_client_new("benchmark", b->masters, b->timeout_s, false, &c) < 0) {
		w->failed = w->end - w->begin;
		return NULL;
	}
	struct kelp_assign_request areq = b->areq;
	struct kelp_assign_result batch = {0};
	unsigned next = 0; /* the next id of batch to use */

	areq.count = b->assign_batch;
	for (uint64_t i = w->begin; i < w->end; i++) {
		uint32_t size = b->size + (uint32_t)(rand_r(&w->seed) % (EXTRA_BYTES_MAX + 1));
		struct kelp_put_result res;
		uint64_t start = monotonic_ns();
		int rc = -1;

		if (b->assign_batch > 1) {
			/* fid, fid_1, ... fid_<count-1> from one assign; a failed upload
			 * falls back to assign + upload with retries */
			if (next >= batch.count) {
				next = 0;
				if (kelp_client_assign(c, &areq, &batch) < 0)
					batch.count = 0;
				else if (batch.count == 0)
					batch.count = 1;
			}
			if (next < batch.count) {
				res.assign = batch;
				if (next &&
				    snprintf(res.assign.fid, sizeof(res.assign.fid), "%s_%u",
					     batch.fid, next) >= (int)sizeof(res.assign.fid))
					next = batch.count; /* cannot happen: fids are short */
				next++;
				if (next <= batch.count)
					rc = kelp_client_upload_buffer(c, batch.url, res.assign.fid,
								       batch.auth, &uopt, b->data,
								       size, &res.upload);
				if (rc < 0)
					next = batch.count;
			}
		}
		if (rc < 0)
			rc = kelp_client_put_buffer(c, &b->areq, &uopt, b->data, size, &res);
		if (rc == 0 &&
		    fid_parse(res.assign.fid, strlen(res.assign.fid), &b->files[i].fid) == 0) {
			w->latency_us[w->n_latency++] = elapsed_us(start);
			b->files[i].size = size;
			w->completed++;
			w->bytes += size;
		} else {
			b->files[i].size = SIZE_FAILED;
			w->failed++;
			note_error(w, c);
		}
		tool_progress_add(&b->progress, 1, size, rc < 0);
	}
	kelp_client_free(c);
	return NULL;
}

/* The index into b->readable of request i. */
static uint64_t pick_file(struct worker *w, uint64_t i)
{
	const struct bench *b = w->b;

	return b->read_sequentially
		   ? i % b->n_readable
		   : (((uint64_t)rand_r(&w->seed) << 31) ^ (uint64_t)rand_r(&w->seed)) %
			 b->n_readable;
}

static void *read_worker(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct kelp_client *c;

	if (tool_client_new("benchmark", b->masters, b->timeout_s, false, &c) < 0) {
		w->failed = w->end - w->begin;
		return NULL;
	}
	for (uint64_t i = w->begin; i < w->end; i++) {
		struct bench_file *f = &b->files[b->readable[pick_file(w, i)]];
		char fid[FID_MAX_LEN];
		uint8_t *data = NULL;
		size_t len = 0;
		uint64_t start = monotonic_ns();
		int rc;

		fid_format(&f->fid, fid);
		rc = kelp_client_read(c, fid, &data, &len, NULL);
		if (rc == 0 && (f->size == SIZE_UNKNOWN || len == f->size)) {
			w->latency_us[w->n_latency++] = elapsed_us(start);
			w->completed++;
			w->bytes += len;
		} else {
			w->failed++;
			if (rc == 0 && !w->first_error[0])
				snprintf(w->first_error, sizeof(w->first_error),
					 "read %s: got %zu bytes, wrote %" PRIu32, fid, len,
					 f->size);
			else
				note_error(w, c);
		}
		free(data);
		tool_progress_add(&b->progress, 1, len, rc < 0);
	}
	kelp_client_free(c);
	return NULL;
}

/* One transfer of the read loop. */
struct read_slot {
	CURL *h;
	struct bench_file *file;
	uint64_t start, got;
	char url[KELP_URL_MAX + FID_MAX_LEN + 16];
};

static size_t count_body(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	((struct read_slot *)arg)->got += size * n;
	return size * n;
}

/* Starts the read of request i on slot s: the volume's location (cached by c), then the
 * GET on the slot's handle (its connection kept alive). */
static int read_slot_start(struct worker *w, struct kelp_client *c, CURLM *m, struct read_slot *s,
			   uint64_t i)
{
	struct kelp_locations locs;
	char fid[FID_MAX_LEN];
	const char *server;
	bool has_scheme;

	s->file = &w->b->files[w->b->readable[pick_file(w, i)]];
	if (kelp_client_lookup(c, s->file->fid.vid, &locs) < 0 || locs.n < 1)
		return -1;
	server = locs.loc[0].url;
	has_scheme = !strncasecmp(server, "http://", 7) || !strncasecmp(server, "https://", 8);
	fid_format(&s->file->fid, fid);
	snprintf(s->url, sizeof(s->url), "%s%s%s/%s", has_scheme ? "" : http_scheme(),
		 has_scheme ? "" : "://", server, fid);
	curl_easy_setopt(s->h, CURLOPT_URL, s->url);
	s->got = 0;
	s->start = monotonic_ns();
	return curl_multi_add_handle(m, s->h) == CURLM_OK ? 0 : -1;
}

/* A finished transfer: counted, and its slot free again. */
static void read_slot_done(struct worker *w, CURLM *m, struct read_slot *s, CURLcode code)
{
	long status = 0;
	bool ok;

	curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(m, s->h);
	ok = code == CURLE_OK && status == 200 &&
	     (s->file->size == SIZE_UNKNOWN || s->got == s->file->size);
	if (ok) {
		w->latency_us[w->n_latency++] = elapsed_us(s->start);
		w->completed++;
		w->bytes += s->got;
	} else {
		w->failed++;
		if (!w->first_error[0])
			snprintf(w->first_error, sizeof(w->first_error),
				 "read %s: %s, HTTP %ld, %" PRIu64 " bytes (-readLoop=false reads "
				 "through the client library: other replicas, read tokens)",
				 s->url, curl_easy_strerror(code), status, s->got);
	}
	tool_progress_add(&w->b->progress, 1, s->got, !ok);
}

/* Starts the next request on slot s, counting those whose volume cannot be looked up as
 * failed; 1 when one was started, 0 when none is left. */
static int start_next(struct worker *w, struct kelp_client *c, CURLM *m, struct read_slot *s,
		      uint64_t *next)
{
	while (*next < w->end) {
		if (read_slot_start(w, c, m, s, (*next)++) == 0)
			return 1;
		w->failed++;
		tool_progress_add(&w->b->progress, 1, 0, true);
		if (!w->first_error[0])
			snprintf(w->first_error, sizeof(w->first_error), "lookup: %s",
				 kelp_client_error(c));
	}
	return 0;
}

/* -readLoop: this one thread keeps -c GETs in flight (the worker's slice is all of them). */
static void *read_loop_worker(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	uint64_t next = w->begin, total = w->end - w->begin;
	int n_slots = (uint64_t)b->concurrency < total ? b->concurrency : (int)total, active = 0;
	struct read_slot *slots = calloc((size_t)n_slots, sizeof(*slots));
	struct kelp_client *c = NULL;
	CURLM *m = curl_multi_init();

	if (!slots || !m || tool_client_new("benchmark", b->masters, b->timeout_s, false, &c) < 0) {
		w->failed = total;
		goto out;
	}
	for (int i = 0; i < n_slots; i++) {
		struct read_slot *s = &slots[i];

		if (!(s->h = curl_easy_init())) {
			w->failed = total;
			goto out;
		}
		http_tls_apply_curl(s->h);
		curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(s->h, CURLOPT_PROXY, "");
		curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, (long)b->timeout_s * 1000L);
		curl_easy_setopt(s->h, CURLOPT_USERAGENT, "kelp-benchmark/" KELP_VERSION);
		curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, count_body);
		curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
		curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
	}
	for (int i = 0; i < n_slots; i++)
		active += start_next(w, c, m, &slots[i], &next);
	while (active > 0) {
		CURLMsg *msg;
		int running, left;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left))) {
			struct read_slot *s = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			read_slot_done(w, m, s, msg->data.result);
			active += start_next(w, c, m, s, &next) - 1;
		}
		if (active > 0)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	}
out:
	for (int i = 0; slots && i < n_slots; i++)
		if (slots[i].h)
			curl_easy_cleanup(slots[i].h);
	free(slots);
	if (m)
		curl_multi_cleanup(m);
	kelp_client_free(c);
	return NULL;
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double percentile_ms(const uint32_t *sorted, uint64_t n, double p)
{
	uint64_t i;

	if (n == 0)
		return 0;
	i = (uint64_t)(p / 100.0 * (double)n);
	if (i >= n)
		i = n - 1;
	return sorted[i] / 1000.0;
}

/* level: the requests in flight (-c), whether threads or the read loop's transfers */
static void report(const char *title, struct worker *workers, int n_workers, int level, double secs)
{
	uint64_t completed = 0, failed = 0, bytes = 0, n = 0;
	uint32_t *all;
	double sum = 0;
	char first_error[512] = "";

	for (int i = 0; i < n_workers; i++) {
		completed += workers[i].completed;
		failed += workers[i].failed;
		bytes += workers[i].bytes;
		n += workers[i].n_latency;
		if (!first_error[0] && workers[i].first_error[0])
			snprintf(first_error, sizeof(first_error), "%s", workers[i].first_error);
	}
	all = malloc((n ? n : 1) * sizeof(*all));
	n = 0;
	for (int i = 0; all && i < n_workers; i++) {
		memcpy(all + n, workers[i].latency_us, workers[i].n_latency * sizeof(*all));
		n += workers[i].n_latency;
	}
	if (!all)
		n = 0;
	for (uint64_t i = 0; i < n; i++)
		sum += all[i];
	if (n)
		qsort(all, n, sizeof(*all), compare_u32);
	if (secs <= 0)
		secs = 1e-9;
	printf("\n------------ %s ----------\n", title);
	printf("Concurrency Level:      %d\n", level);
	printf("Time taken for tests:   %.3f seconds\n", secs);
	printf("Completed requests:     %" PRIu64 "\n", completed);
	printf("Failed requests:        %" PRIu64 "\n", failed);
	printf("Total transferred:      %" PRIu64 " bytes\n", bytes);
	printf("Requests per second:    %.2f [#/sec]\n", (double)completed / secs);
	printf("Transfer rate:          %.2f [MB/sec] (%.2f [Kbytes/sec])\n",
	       (double)bytes / secs / 1e6, (double)bytes / secs / 1024);
	printf("\nLatency (ms)   min      avg      p50      p90      p99      max\n");
	printf("            %6.1f   %6.1f   %6.1f   %6.1f   %6.1f   %6.1f\n",
	       n ? all[0] / 1000.0 : 0.0, n ? sum / (double)n / 1000.0 : 0.0,
	       percentile_ms(all, n, 50), percentile_ms(all, n, 90), percentile_ms(all, n, 99),
	       n ? all[n - 1] / 1000.0 : 0.0);
	if (first_error[0])
		printf("\nFirst error: %s\n", first_error);
	fflush(stdout);
	free(all);
}

/* Runs one phase of total requests on n_workers threads; returns the failures. */
static uint64_t run_phase(struct bench *b, const char *title, const char *label, int n_workers,
			  uint64_t total, void *(*fn)(void *))
{
	struct worker *workers = calloc((size_t)n_workers, sizeof(*workers));
	uint64_t start, failed = 0;
	int started = 0;

	if (!workers) {
		fprintf(stderr, "kelp benchmark: out of memory\n");
		return total;
	}
	for (int i = 0; i < n_workers; i++) {
		struct worker *w = &workers[i];

		w->b = b;
		w->id = i;
		w->begin = total * (uint64_t)i / (uint64_t)n_workers;
		w->end = total * (uint64_t)(i + 1) / (uint64_t)n_workers;
		w->seed = (unsigned)(monotonic_ns() ^ ((uint64_t)i * 2654435761u));
		w->latency_us = malloc((w->end - w->begin + 1) * sizeof(*w->latency_us));
		if (!w->latency_us) {
			fprintf(stderr, "kelp benchmark: out of memory\n");
			n_workers = i;
			break;
		}
	}
	tool_progress_start(&b->progress, label, total, 0);
	start = monotonic_ns();
	for (int i = 0; i < n_workers; i++) {
		if (pthread_create(&workers[i].thread, NULL, fn, &workers[i]) != 0) {
			fprintf(stderr, "kelp benchmark: cannot start a thread\n");
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	tool_progress_finish(&b->progress);
	report(title, workers, started, b->concurrency, (double)(monotonic_ns() - start) / 1e9);
	for (int i = 0; i < n_workers; i++) {
		failed += workers[i].failed;
		if (i >= started)
			failed += workers[i].end - workers[i].begin;
		free(workers[i].latency_us);
	}
	free(workers);
	return failed;
}

static int write_list(const struct bench *b, const char *path)
{
	FILE *f = fopen(path, "w");
	char fid[FID_MAX_LEN];

	if (!f)
		return -errno;
	for (uint64_t i = 0; i < b->n_files; i++)
		if (b->files[i].size != SIZE_FAILED) {
			fid_format(&b->files[i].fid, fid);
			fprintf(f, "%s\n", fid);
		}
	return fclose(f) == 0 ? 0 : -errno;
}

static int read_list(struct bench *b, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];
	uint64_t cap = 0;

	if (!f)
		return -errno;
	b->n_files = 0;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strcspn(line, "\r\n \t");

		if (len == 0)
			continue;
		if (b->n_files == cap) {
			struct bench_file *p;

			cap = cap ? cap * 2 : 4096;
			p = realloc(b->files, cap * sizeof(*p));
			if (!p) {
				fclose(f);
				return -ENOMEM;
			}
			b->files = p;
		}
		if (fid_parse(line, len, &b->files[b->n_files].fid) < 0)
			continue;
		b->files[b->n_files++].size = SIZE_UNKNOWN;
	}
	fclose(f);
	return 0;
}

int benchmark_main(int argc, char **argv)
{
	static const char summary[] = "write then randomly read many small blobs and report "
				      "throughput and latency (like weed benchmark)";
	char *master = "localhost:9333", *collection = "benchmark", *replication = "", *dc = "",
	     *list = "/tmp/benchmark_list.txt";
	int concurrency = 16, n = 1048576, size = 1024, timeout_s = 30, assign_batch = 1;
	bool do_write = true, do_read = true, fsync_writes = false, sequential = false,
	     read_loop = true;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("c", FLAG_INT, &concurrency, "number of concurrent threads"),
	    FLAG("n", FLAG_INT, &n, "number of files to write, and of reads"),
	    FLAG("size", FLAG_INT, &size, "file size in bytes (plus 0-63 random bytes)"),
	    FLAG("collection", FLAG_STRING, &collection, "collection to write to"),
	    FLAG("replication", FLAG_STRING, &replication,
		 "replica placement \"xyz\"; \"\" = the master's default"),
	    FLAG("dataCenter", FLAG_STRING, &dc, "write to volumes in this data center"),
	    FLAG("write", FLAG_BOOL, &do_write, "run the write phase"),
	    FLAG("read", FLAG_BOOL, &do_read, "run the read phase"),
	    FLAG("fsync", FLAG_BOOL, &fsync_writes, "ask volume servers to fsync each write"),
	    FLAG("assignBatch", FLAG_INT, &assign_batch,
		 "file ids per assign (count=); 1 = an assign per file, as weed benchmark"),
	    FLAG("readSequentially", FLAG_BOOL, &sequential,
		 "read the files in the order written instead of at random"),
	    FLAG("readLoop", FLAG_BOOL, &read_loop,
		 "read with one thread keeping -c GETs in flight (false: -c threads reading "
		 "through the client library, with its retries over replicas and read tokens)"),
	    FLAG("list", FLAG_STRING, &list,
		 "file of written file ids (read from it when -write=false; \"\" = none)"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per request, retries included"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct bench b;
	uint8_t *data;
	uint64_t failed = 0;
	int ret;

	ret = flags_parse(flags, "benchmark", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("benchmark") < 0)
		return 2;
	if (ret != argc - 1) {
		fprintf(stderr, "kelp benchmark: unexpected argument \"%s\"\n", argv[ret + 1]);
		return 2;
	}
	if (concurrency < 1 || concurrency > 4096 || n < 1 || size < 0 || size > (1 << 30) ||
	    assign_batch < 1 || assign_batch > 10000) {
		fprintf(stderr,
			"kelp benchmark: want 1 <= -c <= 4096, -n >= 1, 0 <= -size <= 1 GiB, "
			"1 <= -assignBatch <= 10000\n");
		return 2;
	}
	if (!do_write && !do_read)
		return 0;
	memset(&b, 0, sizeof(b));
	b.masters = master;
	b.timeout_s = timeout_s;
	b.fsync = fsync_writes;
	b.read_sequentially = sequential;
	b.concurrency = concurrency;
	b.assign_batch = (unsigned)assign_batch;
	b.areq.collection = collection;
	b.areq.replication = replication;
	b.areq.data_center = dc;
	b.size = (uint32_t)size;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (do_write) {
		unsigned int seed = (unsigned)monotonic_ns();

		data = malloc((size_t)size + EXTRA_BYTES_MAX);
		b.files = calloc((size_t)n, sizeof(*b.files));
		if (!data || !b.files) {
			fprintf(stderr, "kelp benchmark: out of memory\n");
			return 1;
		}
		for (size_t i = 0; i < (size_t)size + EXTRA_BYTES_MAX; i++)
			data[i] = (uint8_t)rand_r(&seed);
		b.data = data;
		b.n_files = (uint64_t)n;
		failed += run_phase(&b, "Writing Benchmark", "write", concurrency, (uint64_t)n,
				    write_worker);
		free(data);
		b.data = NULL;
		if (*list && (ret = write_list(&b, list)) < 0)
			fprintf(stderr, "kelp benchmark: cannot write -list %s: %s\n", list,
				strerror(-ret));
	} else if (!*list || (ret = read_list(&b, list)) < 0) {
		fprintf(stderr, "kelp benchmark: -write=false needs a readable -list: %s\n",
			*list ? strerror(-ret) : "none given");
		curl_global_cleanup();
		return 1;
	}
	if (do_read) {
		b.readable = malloc((b.n_files ? b.n_files : 1) * sizeof(*b.readable));
		if (!b.readable) {
			fprintf(stderr, "kelp benchmark: out of memory\n");
			return 1;
		}
		for (uint64_t i = 0; i < b.n_files; i++)
			if (b.files[i].size != SIZE_FAILED)
				b.readable[b.n_readable++] = i;
		if (b.n_readable == 0) {
			fprintf(stderr, "kelp benchmark: no file to read\n");
			failed++;
		} else {
			failed += run_phase(&b,
					    sequential ? "Sequentially Reading Benchmark"
						       : "Randomly Reading Benchmark",
					    "read", read_loop ? 1 : concurrency, (uint64_t)n,
					    read_loop ? read_loop_worker : read_worker);
		}
		free(b.readable);
	}
	free(b.files);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
