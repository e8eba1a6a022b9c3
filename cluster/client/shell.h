/*
 * shell: `kelp shell`, the operators' console, a client of the masters and the volume
 * servers (it is part of neither). Command names, flags and output follow SeaweedFS's
 * `weed shell` where the command exists there (docs/operations.md, "kelp shell").
 *
 * A line holds commands separated by ';'. Words are split on blanks; "..." and '...'
 * group, a backslash escapes the next character (not inside '...').
 *
 * Data-moving commands (volume.move, volume.copy, volume.balance, volumeServer.evacuate,
 * volume.fix.replication) print their progress and stop cleanly when *interrupted
 * becomes non-zero (Ctrl-C): a copy in progress is cancelled (the target keeps nothing)
 * and a source frozen for the last round is made writable again.
 *
 * Threads: one shell per thread; a background thread renews the operators' lock while
 * it is held.
 */
#ifndef KELP_SHELL_H
#define KELP_SHELL_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

struct shell;

struct shell_options {
	const char *masters;		    /* comma list */
	const char *jwt_key;		    /* "" or NULL: the cluster has no key */
	FILE *out, *err;		    /* stdout, stderr by default */
	volatile sig_atomic_t *interrupted; /* set by the caller's SIGINT handler */
};

int shell_new(const struct shell_options *opt, struct shell **out);
/* Releases the lock if held. */
void shell_free(struct shell *sh);

/*
 * Runs every command of one line. Returns 0 when all succeeded, 1 when one failed
 * (its error printed as "error: ..." on err), 2 on "exit" / "quit".
 */
int shell_run_line(struct shell *sh, const char *line);

/* ---------------------------------------------------------------- pure helpers */

struct shell_command {
	int argc;
	char **argv; /* NULL-terminated */
};

/* Splits a line into commands and words as described above. 0, or -EINVAL (why in
 * err) for an unterminated quote or a trailing backslash. Empty commands are dropped. */
int shell_parse_line(const char *line, struct shell_command **cmds, int *n, char *err,
		     size_t err_cap);
void shell_free_commands(struct shell_command *cmds, int n);

/* "a*b?" wildcard match of a collection pattern ("" matches everything). */
bool shell_pattern_match(const char *pattern, const char *s);

#endif
