/*
 * log: leveled logging to stderr, one line per call, with a timestamp.
 *
 * Thread-safe: each call formats the whole line into a local buffer and writes it
 * with a single write(2), so lines from different threads never interleave.
 */
#ifndef KELP_LOG_H
#define KELP_LOG_H

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Minimum level printed; LOG_LEVEL_INFO by default, KELP_LOG=debug|info|warn|error. */
void log_init_from_env(void);
void log_set_level(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
