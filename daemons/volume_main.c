/* kelp volume: flags, then volume_server_start, then wait for SIGTERM/SIGINT. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/volume_server/volume_server.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

int write_ready_file(const char *path, int port)
{
	char tmp[4096];
	FILE *f;

	if (!path || !*path)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%d\n", port);
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return -errno;
	}
	return 0;
}

void block_stop_signals(void)
{
	sigset_t set;

	/* A shell starts background jobs with SIGINT ignored: undo that, or sigwait
	 * would never see it. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);

	stop_signal_set(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int wait_for_stop_signal(void)
{
	sigset_t set;
	int sig = 0;

	stop_signal_set(&set);
	sigwait(&set, &sig);
	return sig;
}

int volume_main(int argc, char **argv)
{
	static const char summary[] =
	    "run a volume server: stores blobs in volumes, serves them over HTTP";
	char *ip = "127.0.0.1", *public_url = "", *dir = "/tmp", *max = "8",
	     *master = "localhost:9333", *dc = "", *rack = "", *ready_file = "",
	     *read_mode = "proxy";
	char *jwt_key = "", *jwt_read_key = "", *white_list = "";
	int min_free = 1;
	int port = 8080, file_size_limit_mb = 256, threads = 0, pulse_seconds = 1, n_dirs, n_max;
	bool fsync_writes = false, public_status = false;
	const struct flag flags[] = {
	    FLAG("port", FLAG_INT, &port, "HTTP port; 0 picks a free one (see -readyFile)"),
	    FLAG("ip", FLAG_STRING, &ip, "address to bind and to advertise"),
	    FLAG("publicUrl", FLAG_STRING, &public_url,
		 "address clients should use (default ip:port)"),
	    FLAG("dir", FLAG_STRING, &dir, "comma list of data directories"),
	    FLAG("max", FLAG_STRING, &max, "comma list of max volume counts, one per -dir"),
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("mserver", FLAG_STRING, &master),
	    FLAG("dataCenter", FLAG_STRING, &dc, "data center name"),
	    FLAG("rack", FLAG_STRING, &rack, "rack name"),
	    FLAG("fileSizeLimitMB", FLAG_INT, &file_size_limit_mb, "largest accepted upload, MiB"),
	    FLAG("fsync", FLAG_BOOL, &fsync_writes, "fsync every write before acknowledging it"),
	    FLAG("readMode", FLAG_STRING, &read_mode,
		 "reads of volumes held elsewhere: proxy|redirect|local"),
	    FLAG("readyFile", FLAG_STRING, &ready_file, "write the bound port here once serving"),
	    FLAG("threads", FLAG_INT, &threads, "HTTP worker threads (0 = 16)"),
	    FLAG("pulseSeconds", FLAG_INT, &pulse_seconds,
		 "seconds between heartbeats to each master"),
	    FLAG("jwtKey", FLAG_STRING, &jwt_key,
		 "key of the masters' write tokens; \"\" = no tokens needed"),
	    FLAG("jwtReadKey", FLAG_STRING, &jwt_read_key,
		 "key of the masters' read tokens; \"\" = reads need none"),
	    FLAG("whiteList", FLAG_STRING, &white_list,
		 "comma list of IPs allowed to write, call /admin/ and see /status; \"\" = all"),
	    FLAG("publicStatus", FLAG_BOOL, &public_status,
		 "/status answers anyone, not only -whiteList"),
	    FLAG("minFreeSpace", FLAG_INT, &min_free,
		 "percent of a disk kept free: below it its volumes turn read-only"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct volume_server_options opt;
	struct volume_server *vs;
	char **dirs, **maxes;
	int *max_volumes, ret, sig;

	ret = flags_parse(flags, "volume", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("volume") < 0)
		return 2;
	if (ret != argc - 1) {
		fprintf(stderr, "kelp volume: unexpected argument \"%s\"\n", argv[ret + 1]);
		return 2;
	}
	if (port < 0 || port > 65535 || file_size_limit_mb <= 0 || file_size_limit_mb > 4000) {
		fprintf(stderr, "kelp volume: -port must be 0-65535 and -fileSizeLimitMB 1-4000\n");
		return 2;
	}
	dirs = split_list(dir, &n_dirs);
	maxes = split_list(max, &n_max);
	if (!dirs || !maxes || n_dirs == 0) {
		fprintf(stderr, "kelp volume: -dir needs at least one directory\n");
		return 2;
	}
	max_volumes = calloc((size_t)n_dirs, sizeof(int));
	for (int i = 0; i < n_dirs; i++) {
		const char *m = maxes[n_max ? (i < n_max ? i : n_max - 1) : 0];
		char *end;

		max_volumes[i] = m ? (int)strtol(m, &end, 10) : 8;
		if (!m || *end || max_volumes[i] < 0) {
			fprintf(stderr, "kelp volume: bad -max value \"%s\"\n", m ? m : "");
			return 2;
		}
	}
	if (strcmp(read_mode, "proxy") && strcmp(read_mode, "redirect") &&
	    strcmp(read_mode, "local")) {
		fprintf(stderr, "kelp volume: -readMode must be proxy, redirect or local\n");
		return 2;
	}
	if (min_free < 0 || min_free > 99) {
		fprintf(stderr, "kelp volume: -minFreeSpace must be a percentage from 0 to 99\n");
		return 2;
	}
	memset(&opt, 0, sizeof(opt));
	opt.ip = ip;
	opt.port = port;
	opt.public_url = public_url;
	opt.dirs = dirs;
	opt.max_volumes = max_volumes;
	opt.n_dirs = n_dirs;
	opt.masters = master;
	opt.data_center = dc;
	opt.rack = rack;
	opt.file_size_limit_mb = file_size_limit_mb;
	opt.fsync = fsync_writes;
	opt.read_mode = read_mode;
	opt.threads = threads;
	opt.pulse_seconds = pulse_seconds;
	opt.jwt_key = jwt_key;
	opt.jwt_read_key = jwt_read_key;
	opt.white_list = white_list;
	opt.public_status = public_status;
	opt.min_free_percent = min_free;

	block_stop_signals();
	ret = volume_server_start(&opt, &vs);
	if (ret < 0) {
		fprintf(stderr, "kelp volume: cannot start: %s\n", strerror(-ret));
		return 1;
	}
	ret = write_ready_file(ready_file, volume_server_port(vs));
	if (ret < 0)
		log_error("cannot write ready file %s: %s", ready_file, strerror(-ret));
	sig = wait_for_stop_signal();
	log_info("volume server: signal %d, stopping", sig);
	volume_server_stop(vs);
	free_list(dirs);
	free_list(maxes);
	free(max_volumes);
	return 0;
}
