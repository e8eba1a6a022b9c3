/*
 * client_tools: what the command-line clients (upload, download, delete, status,
 * benchmark) share: making a struct kelp_client from their flags, and a progress
 * bar on stderr that only draws when stderr is a terminal.
 *
 * Threads: a progress bar runs one drawing thread; any thread may add to its
 * counters (atomics). Everything else is single-threaded.
 */
#ifndef KELP_CLIENT_TOOLS_H
#define KELP_CLIENT_TOOLS_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster/base/flags.h"
#include "cluster/client/client.h"

/*
 * -tls.cert, -tls.key, -tls.ca: every daemon and client command has them (put
 * TOOL_TLS_FLAGS in the flag list, call tool_tls_setup after parsing, before any
 * thread starts). See http_client.h, http_tls_configure.
 */
struct tool_tls {
	char *cert, *key, *ca;
};
extern struct tool_tls tool_tls_flags;
#define TOOL_TLS_FLAGS                                                                             \
	FLAG("tls.cert", FLAG_STRING, &tool_tls_flags.cert,                                        \
	     "PEM certificate of this process: HTTPS everywhere (with -tls.key)"),                 \
	    FLAG("tls.key", FLAG_STRING, &tool_tls_flags.key, "PEM private key of -tls.cert"),     \
	    FLAG("tls.ca", FLAG_STRING, &tool_tls_flags.ca,                                        \
		 "PEM CA of the cluster: verify servers, and servers require client certificates")
/* Applies the parsed TLS flags; prints "kelp <cmd>: ..." and returns -EINVAL if bad. */
int tool_tls_setup(const char *cmd);

/*
 * Parses the flags of `kelp <cmd>`, which takes operands described by `operands`
 * ("fid...", "file-or-dir..."). Returns -1 with *first the index in argv of the first
 * operand, or the status to exit with: 0 after -h, 2 on a bad flag or (unless
 * operands_optional) no operand, with a usage line.
 */
int tool_parse_args(const struct flag *flags, const char *cmd, const char *summary,
		    const char *operands, bool operands_optional, int argc, char **argv,
		    int *first);

/*
 * Makes a client for masters with timeout_s seconds per call (0 = the client's
 * default). Prints "kelp <cmd>: ..." to stderr on failure. 0 or -errno.
 */
int tool_client_new(const char *cmd, const char *masters, int timeout_s, bool use_public_url,
		    struct kelp_client **out);

/*
 * A JSON string of text; bytes that are not valid UTF-8 (file names can be anything)
 * become '?'. Never NULL unless out of memory.
 */
json_t *tool_json_text(const char *text);

struct tool_progress {
	const char *label;
	uint64_t total_items; /* 0 = unknown */
	uint64_t total_bytes; /* 0 = do not show bytes */
	atomic_uint_fast64_t items;
	atomic_uint_fast64_t failed;
	atomic_uint_fast64_t bytes;
	uint64_t start_ns;
	bool enabled; /* stderr is a terminal */
	atomic_bool stop;
	pthread_t thread;
	pthread_mutex_t lock; /* serialises drawing and tool_progress_println */
};

/* Starts drawing (if stderr is a terminal) every 200 ms. */
void tool_progress_start(struct tool_progress *p, const char *label, uint64_t total_items,
			 uint64_t total_bytes);
void tool_progress_add(struct tool_progress *p, uint64_t items, uint64_t bytes, bool failed);
/* Prints text and a newline to f (flushed) without mixing it into the bar. */
void tool_progress_println(struct tool_progress *p, FILE *f, const char *text);
/* Stops the thread, draws the final state and ends the line. */
void tool_progress_finish(struct tool_progress *p);

#endif
