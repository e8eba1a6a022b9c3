/*
 * kelp meta: tools for a mount's metadata (an LMDB directory or a PostgreSQL URL),
 * one subcommand each in its own file: "kelp meta sessions -meta=URL", ...
 */
#include <stdio.h>
#include <string.h>

#include "daemons/commands.h"

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} subcommands[] = {
    {"sessions", meta_sessions_main, "list the mounts registered in the metadata"},
};

#define N_SUB (sizeof(subcommands) / sizeof(subcommands[0]))

int meta_main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < N_SUB; i++)
			if (!strcmp(argv[1], subcommands[i].name))
				return subcommands[i].main(argc - 1, argv + 1);
	}
	if (argc >= 2 && strcmp(argv[1], "-h") && strcmp(argv[1], "--help") &&
	    strcmp(argv[1], "help"))
		fprintf(stderr, "kelp meta: unknown subcommand \"%s\"\n", argv[1]);
	fprintf(argc >= 2 ? stderr : stdout, "usage: kelp meta <subcommand> -meta=DIR|URL\n");
	for (size_t i = 0; i < N_SUB; i++)
		fprintf(argc >= 2 ? stderr : stdout, "  %-10s %s\n", subcommands[i].name,
			subcommands[i].summary);
	return argc >= 2 && strcmp(argv[1], "-h") && strcmp(argv[1], "--help") &&
		       strcmp(argv[1], "help")
		   ? 2
		   : 0;
}
