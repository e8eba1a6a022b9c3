/* kelp master: flags, then master_start, then wait for SIGTERM/SIGINT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "cluster/master/master.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

int master_main(int argc, char **argv)
{
	static const char summary[] =
	    "run a master: knows the volume servers, assigns file ids, grows volumes";
	char *ip = "127.0.0.1", *mdir = "/tmp", *peers = "", *default_replication = "000",
	     *jwt_key = "", *jwt_read_key = "", *white_list = "", *ready_file = "";
	int port = 9333, volume_size_limit_mb = 30000, pulse_seconds = 1, threads = 0,
	    vacuum_interval = 15 * 60, election_timeout_ms = 1000;
	double garbage_threshold = 0.3;
	bool public_status = false;
	const struct flag flags[] = {
	    FLAG("port", FLAG_INT, &port, "HTTP port; 0 picks a free one (see -readyFile)"),
	    FLAG("ip", FLAG_STRING, &ip, "address to bind and to advertise"),
	    FLAG("mdir", FLAG_STRING, &mdir, "directory for the master's state (sequence, raft)"),
	    FLAG("peers", FLAG_STRING, &peers,
		 "comma list of every master's ip:port, this one included (HA with Raft)"),
	    FLAG("defaultReplication", FLAG_STRING, &default_replication,
		 "replication when assign names none"),
	    FLAG("volumeSizeLimitMB", FLAG_INT, &volume_size_limit_mb,
		 "a volume over this size stops taking writes, MiB"),
	    FLAG("garbageThreshold", FLAG_DOUBLE, &garbage_threshold,
		 "vacuum volumes with more garbage than this ratio"),
	    FLAG("pulseSeconds", FLAG_INT, &pulse_seconds,
		 "heartbeat period of volume servers; a node is dead after 3"),
	    FLAG("jwtKey", FLAG_STRING, &jwt_key,
		 "sign write tokens with this key; \"\" = no tokens"),
	    FLAG("jwtReadKey", FLAG_STRING, &jwt_read_key,
		 "sign read tokens (/dir/lookup?fileId=...&read=yes) with this key; \"\" = none"),
	    FLAG("whiteList", FLAG_STRING, &white_list,
		 "comma list of IPs allowed to write and to see the status pages; \"\" = all"),
	    FLAG("publicStatus", FLAG_BOOL, &public_status,
		 "status and topology pages answer anyone, not only -whiteList"),
	    FLAG("vacuumIntervalSeconds", FLAG_INT, &vacuum_interval,
		 "seconds between automatic vacuum passes; 0 = never"),
	    FLAG("electionTimeoutMs", FLAG_INT, &election_timeout_ms,
		 "Raft election timeout with -peers, ms"),
	    FLAG("readyFile", FLAG_STRING, &ready_file, "write the bound port here once serving"),
	    FLAG("threads", FLAG_INT, &threads, "unused: the master runs a thread per connection"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct master_options opt;
	struct master *m;
	int ret, sig;

	ret = flags_parse(flags, "master", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("master") < 0)
		return 2;
	if (ret != argc - 1) {
		fprintf(stderr, "kelp master: unexpected argument \"%s\"\n", argv[ret + 1]);
		return 2;
	}
	if (port < 0 || port > 65535 || volume_size_limit_mb <= 0 || pulse_seconds <= 0 ||
	    volume_size_limit_mb > 32 * 1024) {
		fprintf(
		    stderr,
		    "kelp master: -port must be 0-65535, -pulseSeconds positive, -volumeSizeLimitMB 1-32768\n");
		return 2;
	}
	memset(&opt, 0, sizeof(opt));
	opt.ip = ip;
	opt.port = port;
	opt.mdir = mdir;
	opt.peers = peers;
	opt.default_replication = default_replication;
	opt.volume_size_limit_mb = volume_size_limit_mb;
	opt.garbage_threshold = garbage_threshold;
	opt.pulse_seconds = pulse_seconds;
	opt.jwt_key = jwt_key;
	opt.jwt_read_key = jwt_read_key;
	opt.white_list = white_list;
	opt.public_status = public_status;
	opt.vacuum_interval_seconds = vacuum_interval;
	opt.threads = threads;
	opt.election_timeout_ms = election_timeout_ms;

	block_stop_signals();
	ret = master_start(&opt, &m);
	if (ret < 0) {
		fprintf(stderr, "kelp master: cannot start: %s\n", strerror(-ret));
		return 1;
	}
	ret = write_ready_file(ready_file, master_port(m));
	if (ret < 0)
		log_error("cannot write ready file %s: %s", ready_file, strerror(-ret));
	sig = wait_for_stop_signal();
	log_info("master: signal %d, stopping", sig);
	master_stop(m);
	return 0;
}
