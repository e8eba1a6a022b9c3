/*
 * kelp shell: the operators' console (cluster/client/shell.h), like `weed shell`.
 *
 *   kelp shell -master=m1:9333,m2:9333                 interactive (prompt "> ")
 *   kelp shell -master=m1:9333 -c "lock; volume.list"   one line, then exit
 *   echo "volume.list" | kelp shell -master=m1:9333      commands from a pipe
 *
 * Ctrl-C interrupts the command that runs (a copy in progress is cancelled cleanly);
 * at the prompt it does nothing, Ctrl-D or "exit" leaves. The exit status is 1 when a
 * command failed (with -c or from a pipe), 0 otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/base/flags.h"
#include "cluster/client/shell.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

int shell_main(int argc, char **argv)
{
	static const char summary[] = "the operators' console: volume.list, volume.move, "
				      "volume.fix.replication, ... (help lists them)";
	char *masters = "127.0.0.1:9333", *command = "", *key = "";
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &masters, "comma list of masters"),
	    FLAG("c", FLAG_STRING, &command, "run these commands (';' between them) and exit"),
	    FLAG("jwtKey", FLAG_STRING, &key, "the cluster's key (default: $KELP_JWT_KEY)"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct shell_options so = {0};
	struct sigaction sa;
	struct shell *sh;
	bool tty = isatty(0) && isatty(1);
	int first, ret, status = 0;
	char *line = NULL;
	size_t cap = 0;

	ret = tool_parse_args(flags, "shell", summary, "", true, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (first < argc) {
		fprintf(stderr,
			"kelp shell: unexpected argument \"%s\" (commands go in -c or on "
			"stdin)\n",
			argv[first]);
		return 2;
	}
	if (tool_tls_setup("shell") < 0)
		return 2;
	if (!*key && getenv("KELP_JWT_KEY"))
		key = getenv("KELP_JWT_KEY");
	so.masters = masters;
	so.jwt_key = key;
	so.interrupted = &interrupted;
	if (shell_new(&so, &sh) < 0) {
		fprintf(stderr, "kelp shell: bad -master \"%s\"\n", masters);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint; /* no SA_RESTART: a blocked read returns */
	sigaction(SIGINT, &sa, NULL);
	if (*command) {
		ret = shell_run_line(sh, command);
		status = ret == 1;
	} else {
		for (;;) {
			ssize_t n;

			if (tty) {
				fputs("> ", stdout);
				fflush(stdout);
			}
			interrupted = 0;
			n = getline(&line, &cap, stdin);
			if (n < 0) {
				if (errno == EINTR && tty) {
					clearerr(stdin);
					fputc('\n', stdout);
					continue;
				}
				break;
			}
			ret = shell_run_line(sh, line);
			if (ret == 2)
				break;
			if (ret == 1 && !tty)
				status = 1;
		}
		if (tty)
			fputc('\n', stdout);
	}
	free(line);
	shell_free(sh);
	return status;
}
