/*
 * kelp: one binary, one subcommand per daemon or tool. This file only dispatches;
 * each subcommand parses its own flags (cluster/base/flags.h) in its *_main.c.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cluster/base/log.h"
#include "daemons/commands.h"

static const struct command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
} commands[] = {
    {"master", master_main,
     "run a master: knows the volume servers, assigns file ids, grows volumes"},
    {"volume", volume_main, "run a volume server: stores blobs in volumes, serves them over HTTP"},
    {"mount", mount_main, "mount the cluster as a FUSE filesystem (metadata in LMDB)"},
    {"server", server_main, "run a master and a volume server in one process, for one machine"},
    {"meta", meta_main,
     "a filesystem's metadata: init, dump, load, backup into the cluster, restore"},
    {"fsck", fsck_main,
     "check a filesystem's metadata and that the cluster holds every blob it references"},
    {"upload", upload_main, "upload files or directories: assign a file id, store each file"},
    {"download", download_main, "download blobs by file id into a directory"},
    {"delete", delete_main, "delete blobs by file id"},
    {"status", status_main, "show the cluster: masters, leader, volume servers, volumes"},
    {"benchmark", benchmark_main, "write then read many small blobs; report throughput, latency"},
    {"meta", meta_main, "the mounts' metadata: kelp meta sessions -meta=DIR|URL, ..."},
    {"shell", shell_main, "the operators' console: volume.list, volume.move, volume.balance, ..."},
    {"token", token_main, "print a server token for one admin request (needs the -jwtKey)"},
    {"version", version_main, "print the version"},
    {"help", help_main, "list the commands, or the flags of one: kelp help <command>"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

int version_main(int argc, char **argv)
{
	printf("kelp %s\n", KELP_VERSION);
	return 0;
}

int help_main(int argc, char **argv)
{
	if (argc > 1) {
		for (size_t i = 0; i < N_COMMANDS; i++) {
			if (!strcmp(commands[i].name, argv[1])) {
				char *args[] = {argv[1], "-h", NULL};

				return commands[i].main(2, args) == 0 ? 0 : 0;
			}
		}
		fprintf(stderr, "kelp: unknown command \"%s\"\n", argv[1]);
		return 2;
	}
	printf("kelp %s: a distributed blob store with a FUSE filesystem\n\n"
	       "usage: kelp <command> [flags]\n\ncommands:\n",
	       KELP_VERSION);
	for (size_t i = 0; i < N_COMMANDS; i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].summary);
	printf("\n\"kelp <command> -h\" lists the flags of a command with their defaults.\n");
	return 0;
}

int main(int argc, char **argv)
{
	log_init_from_env();
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		help_main(1, argv);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-help"))
		return help_main(1, argv);
	if (!strcmp(argv[1], "-version") || !strcmp(argv[1], "--version"))
		return version_main(1, argv);
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, argv[1]))
			return commands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "kelp: unknown command \"%s\" (see kelp help)\n", argv[1]);
	return 2;
}
