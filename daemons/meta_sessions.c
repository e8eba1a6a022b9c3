/*
 * kelp meta sessions -meta=DIR|URL: the mounts registered in the metadata (fuse/meta.h,
 * "Sessions"): id, host, pid, mount point, version, start time (UTC) and how long ago
 * each last renewed its heartbeat, by this host's clock (a mount renews every
 * -sessionTimeout / 4; other mounts clean it up after -sessionTimeout without one).
 * -json: one JSON object per line instead.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cluster/base/flags.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"
#include "fuse/kv.h"
#include "fuse/meta.h"

struct listing {
	bool json;
	int n;
	int64_t now_ns;
};

static void utc(int64_t ns, char *out, size_t cap)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* JSON string body: quotes, backslashes and control characters escaped. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int show(void *ctx, const struct meta_session_info *s)
{
	struct listing *l = ctx;
	char started[32];
	double age = (double)(l->now_ns - s->beat_ns) / 1e9;

	utc(s->start_ns, started, sizeof(started));
	if (l->json) {
		printf("{\"id\":%llu,\"host\":", (unsigned long long)s->id);
		json_str(s->host);
		printf(",\"pid\":%u,\"mountpoint\":", s->pid);
		json_str(s->mountpoint);
		printf(",\"version\":");
		json_str(s->version);
		printf(",\"started\":\"%s\",\"heartbeat_age_s\":%.1f,\"beats\":%llu}\n", started,
		       age, (unsigned long long)s->beats);
	} else {
		char beat[32];

		snprintf(beat, sizeof(beat), "%.1f s ago", age);
		if (l->n == 0)
			printf("%-10s %-20s %-8s %-20s %-10s %-12s %s\n", "ID", "HOST", "PID",
			       "STARTED", "VERSION", "HEARTBEAT", "MOUNT POINT");
		printf("%-10llu %-20s %-8u %-20s %-10s %-12s %s\n", (unsigned long long)s->id,
		       s->host, s->pid, started, s->version, beat, s->mountpoint);
	}
	l->n++;
	return 0;
}

int meta_sessions_main(int argc, char **argv)
{
	static const char summary[] = "list the mounts registered in the metadata (sessions)";
	char *spec = "", shown[512];
	bool json = false;
	const struct flag flags[] = {
	    FLAG("meta", FLAG_STRING, &spec, "an LMDB directory or postgres://... (required)"),
	    FLAG("json", FLAG_BOOL, &json, "one JSON object per session and line"),
	    FLAG_END,
	};
	struct meta_options mo = {.timeout_ms = 10000, .connections = 1};
	struct listing l = {0};
	struct meta *m;
	int first, rc;

	rc = tool_parse_args(flags, "meta sessions", summary, "", true, argc, argv, &first);
	if (rc >= 0)
		return rc;
	if (first < argc) {
		fprintf(stderr, "kelp meta sessions: unexpected argument \"%s\"\n", argv[first]);
		return 2;
	}
	if (!*spec) {
		fprintf(stderr,
			"kelp meta sessions: -meta (an LMDB directory or a postgres:// URL) "
			"is required\n");
		return 2;
	}
	kv_mask_url(spec, shown, sizeof(shown));
	rc = meta_open_opts(spec, &mo, &m);
	if (rc < 0) {
		fprintf(stderr, "kelp meta sessions: cannot open the metadata in %s: %s\n", shown,
			rc == -ENOTCONN ? "the database is unreachable" : strerror(-rc));
		return 1;
	}
	l.json = json;
	l.now_ns = meta_now_ns();
	rc = meta_session_list(m, show, &l);
	meta_close(m);
	if (rc < 0) {
		fprintf(stderr, "kelp meta sessions: %s\n", strerror(-rc));
		return 1;
	}
	if (!json && l.n == 0)
		printf("no sessions\n");
	return 0;
}
