/* client_tools: see client_tools.h. */
#include "daemons/client_tools.h"

#include "cluster/net/http_client.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/base/util.h"

#define BAR_WIDTH 30

int tool_parse_args(const struct flag *flags, const char *cmd, const char *summary,
		    const char *operands, bool operands_optional, int argc, char **argv, int *first)
{
	int n = flags_parse(flags, cmd, summary, argc - 1, argv + 1);

	if (n == -2)
		return 0;
	if (n < 0)
		return 2;
	*first = n + 1;
	if (*first >= argc && !operands_optional) {
		fprintf(stderr, "usage: kelp %s [flags] %s (see kelp %s -h)\n", cmd, operands, cmd);
		return 2;
	}
	return -1;
}

struct tool_tls tool_tls_flags = {"", "", ""};

int tool_tls_setup(const char *cmd)
{
	struct http_tls_config t = {tool_tls_flags.cert, tool_tls_flags.key, tool_tls_flags.ca};

	if (http_tls_configure(&t) < 0) {
		fprintf(stderr,
			"kelp %s: bad -tls.cert / -tls.key / -tls.ca (see the log line above)\n",
			cmd);
		return -EINVAL;
	}
	return 0;
}

int tool_client_new(const char *cmd, const char *masters, int timeout_s, bool use_public_url,
		    struct kelp_client **out)
{
	struct kelp_client_options opt = {
	    .masters = masters,
	    .timeout_ms = timeout_s > 0 ? timeout_s * 1000 : 0,
	    .use_public_url = use_public_url,
	};
	int rc = kelp_client_new(&opt, out);

	if (rc == -EINVAL)
		fprintf(stderr,
			"kelp %s: bad -master list \"%s\" (want host:port[,host:port...])\n", cmd,
			masters ? masters : "");
	else if (rc < 0)
		fprintf(stderr, "kelp %s: cannot create a client: %s\n", cmd, strerror(-rc));
	return rc;
}

json_t *tool_json_text(const char *text)
{
	json_t *j = json_string(text ? text : "");
	char *copy;

	if (j)
		return j;
	copy = strdup(text);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

static void human_bytes(double b, char *buf, size_t cap)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;

	while (b >= 1024 && u < 4) {
		b /= 1024;
		u++;
	}
	snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void progress_draw(struct tool_progress *p, bool final)
{
	uint64_t items = atomic_load(&p->items), failed = atomic_load(&p->failed);
	uint64_t bytes = atomic_load(&p->bytes);
	double secs = (double)(monotonic_ns() - p->start_ns) / 1e9;
	double frac = 0;
	char bar[BAR_WIDTH + 1], done[32], total[32], rate[32], line[256];
	int fill;

	if (p->total_bytes)
		frac = (double)bytes / (double)p->total_bytes;
	else if (p->total_items)
		frac = (double)items / (double)p->total_items;
	if (frac > 1)
		frac = 1;
	fill = (int)(frac * BAR_WIDTH);
	for (int i = 0; i < BAR_WIDTH; i++)
		bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
	bar[BAR_WIDTH] = '\0';
	if (secs <= 0)
		secs = 1e-9;
	if (p->total_bytes) {
		human_bytes((double)bytes, done, sizeof(done));
		human_bytes((double)p->total_bytes, total, sizeof(total));
		human_bytes((double)bytes / secs, rate, sizeof(rate));
		snprintf(line, sizeof(line), "%s [%s] %3.0f%% %llu/%llu, %s/%s, %s/s%s%llu failed",
			 p->label, bar, frac * 100, (unsigned long long)items,
			 (unsigned long long)p->total_items, done, total, rate, ", ",
			 (unsigned long long)failed);
	} else {
		snprintf(line, sizeof(line), "%s [%s] %3.0f%% %llu/%llu, %.0f/s, %llu failed",
			 p->label, bar, frac * 100, (unsigned long long)items,
			 (unsigned long long)p->total_items, (double)items / secs,
			 (unsigned long long)failed);
	}
	/* \r + erase to the end of the line, so a shorter line leaves no debris. */
	fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
	fflush(stderr);
}

static void *progress_thread(void *arg)
{
	struct tool_progress *p = arg;
	struct timespec ts = {0, 200 * 1000 * 1000};

	while (!atomic_load(&p->stop)) {
		pthread_mutex_lock(&p->lock);
		progress_draw(p, false);
		pthread_mutex_unlock(&p->lock);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

void tool_progress_start(struct tool_progress *p, const char *label, uint64_t total_items,
			 uint64_t total_bytes)
{
	memset(p, 0, sizeof(*p));
	p->label = label;
	p->total_items = total_items;
	p->total_bytes = total_bytes;
	p->start_ns = monotonic_ns();
	atomic_init(&p->items, 0);
	atomic_init(&p->failed, 0);
	atomic_init(&p->bytes, 0);
	atomic_init(&p->stop, false);
	pthread_mutex_init(&p->lock, NULL);
	p->enabled = isatty(STDERR_FILENO) == 1;
	if (p->enabled && pthread_create(&p->thread, NULL, progress_thread, p) != 0)
		p->enabled = false;
}

void tool_progress_add(struct tool_progress *p, uint64_t items, uint64_t bytes, bool failed)
{
	atomic_fetch_add(&p->items, items);
	atomic_fetch_add(&p->bytes, bytes);
	if (failed)
		atomic_fetch_add(&p->failed, items);
}

void tool_progress_println(struct tool_progress *p, FILE *f, const char *text)
{
	pthread_mutex_lock(&p->lock);
	if (p->enabled)
		fputs("\r\033[K", stderr); /* the bar comes back on the next tick */
	fprintf(f, "%s\n", text);
	fflush(f);
	pthread_mutex_unlock(&p->lock);
}

void tool_progress_finish(struct tool_progress *p)
{
	if (p->enabled) {
		atomic_store(&p->stop, true);
		pthread_join(p->thread, NULL);
		progress_draw(p, true);
		p->enabled = false;
	}
	pthread_mutex_destroy(&p->lock);
}
