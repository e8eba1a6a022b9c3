/*
 * flags: command-line flags in SeaweedFS's style.
 *
 * Accepted spellings: -name=value, -name value, --name=value, --name value, and for
 * booleans -name alone (true) or -name=false. A flag table is an array of struct
 * flag ended by an entry with name == NULL. Values are written through the typed
 * pointer of each entry; defaults are whatever the caller stored there before.
 * Aliases: an entry with the same target and FLAG_ALIAS set is accepted but not listed.
 */
#ifndef KELP_FLAGS_H
#define KELP_FLAGS_H

#include <stdbool.h>
#include <stdio.h>

enum flag_type { FLAG_STRING, FLAG_INT, FLAG_BOOL, FLAG_DOUBLE };

struct flag {
	const char *name;
	enum flag_type type;
	void *target; /* char ** (points into argv), int *, bool *, double * */
	const char *help;
	bool alias;
};

/* Table entries: FLAG(name, type, &var, help), FLAG_ALIAS(name, type, &var), FLAG_END. */
#define FLAG(name, type, target, help)                                                             \
	{                                                                                          \
		(name), (type), (target), (help), false                                            \
	}
#define FLAG_ALIAS(name, type, target)                                                             \
	{                                                                                          \
		(name), (type), (target), "", true                                                 \
	}
#define FLAG_END                                                                                   \
	{                                                                                          \
		NULL, FLAG_BOOL, NULL, NULL, false                                                 \
	}

/*
 * Parses argv[0..argc) against the table. Returns the index of the first positional
 * argument (argc when none), -1 on an error (message printed to stderr), or -2 when
 * -h / -help / --help was given (usage printed to stdout).
 */
int flags_parse(const struct flag *table, const char *cmd, const char *summary, int argc,
		char **argv);

/* Prints "kelp <cmd>: summary" and every flag with its default to out. */
void flags_usage(const struct flag *table, const char *cmd, const char *summary, FILE *out);

#endif
