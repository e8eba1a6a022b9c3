/* The subcommands of the kelp binary: each takes (argc, argv) with argv[0] = its name. */
#ifndef KELP_COMMANDS_H
#define KELP_COMMANDS_H

int master_main(int argc, char **argv);
int volume_main(int argc, char **argv);
int server_main(int argc, char **argv);
int mount_main(int argc, char **argv);
int meta_main(int argc, char **argv);
int fsck_main(int argc, char **argv);
int upload_main(int argc, char **argv);
int download_main(int argc, char **argv);
int delete_main(int argc, char **argv);
int status_main(int argc, char **argv);
int benchmark_main(int argc, char **argv);
int token_main(int argc, char **argv);
int meta_main(int argc, char **argv);
/* kelp meta sessions (daemons/meta_sessions.c) */
int meta_sessions_main(int argc, char **argv);
int shell_main(int argc, char **argv);
int version_main(int argc, char **argv);
int help_main(int argc, char **argv);

/* Shared by the daemons: writes the port to path atomically (tmp + rename). */
int write_ready_file(const char *path, int port);
/* Blocks SIGINT/SIGTERM/SIGHUP in all threads and waits for one; returns it. */
int wait_for_stop_signal(void);
void block_stop_signals(void);

#endif
