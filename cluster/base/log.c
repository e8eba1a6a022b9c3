#include "cluster/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LEVEL_INFO;

void log_set_level(enum log_level level)
{
	min_level = level;
}

void log_init_from_env(void)
{
	const char *v = getenv("KELP_LOG");

	if (!v)
		return;
	if (!strcmp(v, "debug"))
		min_level = LOG_LEVEL_DEBUG;
	else if (!strcmp(v, "warn"))
		min_level = LOG_LEVEL_WARN;
	else if (!strcmp(v, "error"))
		min_level = LOG_LEVEL_ERROR;
	else
		min_level = LOG_LEVEL_INFO;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char tags[] = "DIWE";
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n, m;

	if (level < min_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%c%02d%02d %02d:%02d:%02d.%06ld %d ", tags[level],
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000,
		     (int)getpid());
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
}
