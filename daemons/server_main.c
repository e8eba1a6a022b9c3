/*
 * kelp server: a master and a volume server in one process, for a single machine.
 * Data under -dir: <dir>/master (the master's state) and <dir>/volume (volumes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "cluster/master/master.h"
#include "cluster/volume_server/volume_server.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

int server_main(int argc, char **argv)
{
	static const char summary[] =
	    "run a master and a volume server in one process, for one machine";
	char *ip = "127.0.0.1", *dir = "./data", *default_replication = "000", *jwt_key = "",
	     *jwt_read_key = "", *white_list = "", *ready_file = "", *volume_ready_file = "",
	     *dc = "", *rack = "";
	int mport = 9333, volume_port = 8080, volume_max = 32, volume_size_limit_mb = 30000,
	    file_size_limit_mb = 256, pulse_seconds = 1, threads = 0, min_free = 1;
	double garbage_threshold = 0.3;
	bool fsync_writes = false, public_status = false;
	const struct flag flags[] = {
	    FLAG("dir", FLAG_STRING, &dir, "data directory (master state and volumes under it)"),
	    FLAG("ip", FLAG_STRING, &ip, "address to bind and to advertise"),
	    FLAG("master.port", FLAG_INT, &mport, "master HTTP port; 0 picks a free one"),
	    FLAG("volume.port", FLAG_INT, &volume_port,
		 "volume server HTTP port; 0 picks a free one"),
	    FLAG("volume.max", FLAG_INT, &volume_max, "most volumes this server holds"),
	    FLAG("dataCenter", FLAG_STRING, &dc, "data center name"),
	    FLAG("rack", FLAG_STRING, &rack, "rack name"),
	    FLAG("defaultReplication", FLAG_STRING, &default_replication,
		 "replication when assign names none"),
	    FLAG("volumeSizeLimitMB", FLAG_INT, &volume_size_limit_mb,
		 "a volume over this size stops taking writes, MiB"),
	    FLAG("fileSizeLimitMB", FLAG_INT, &file_size_limit_mb, "largest accepted upload, MiB"),
	    FLAG("garbageThreshold", FLAG_DOUBLE, &garbage_threshold,
		 "vacuum volumes with more garbage than this ratio"),
	    FLAG("pulseSeconds", FLAG_INT, &pulse_seconds, "heartbeat period"),
	    FLAG("fsync", FLAG_BOOL, &fsync_writes, "fsync every write before acknowledging it"),
	    FLAG("jwtKey", FLAG_STRING, &jwt_key, "sign and check write tokens with this key"),
	    FLAG("jwtReadKey", FLAG_STRING, &jwt_read_key,
		 "sign and check read tokens with this key (reads then need one)"),
	    FLAG("whiteList", FLAG_STRING, &white_list,
		 "comma list of IPs allowed to write and to see the status pages"),
	    FLAG("publicStatus", FLAG_BOOL, &public_status,
		 "status pages answer anyone, not only -whiteList"),
	    FLAG("volume.minFreeSpace", FLAG_INT, &min_free,
		 "percent of a disk kept free: below it its volumes turn read-only"),
	    FLAG("readyFile", FLAG_STRING, &ready_file,
		 "write the master's port here once serving"),
	    FLAG("volume.readyFile", FLAG_STRING, &volume_ready_file,
		 "write the volume server's port here once serving"),
	    FLAG("threads", FLAG_INT, &threads,
		 "HTTP worker threads per server (0 = 2 x CPUs, at least 4)"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct master_options mo;
	struct volume_server_options vo;
	struct master *m;
	struct volume_server *vs;
	char mdir[4096], vdir[4096], master_addr[160], *dirs[1];
	int ret, sig, max_volumes[1];

	ret = flags_parse(flags, "server", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("server") < 0)
		return 2;
	if (ret != argc - 1) {
		fprintf(stderr, "kelp server: unexpected argument \"%s\"\n", argv[ret + 1]);
		return 2;
	}
	if (min_free < 0 || min_free > 99) {
		fprintf(stderr,
			"kelp server: -volume.minFreeSpace must be a percentage from 0 to 99\n");
		return 2;
	}
	snprintf(mdir, sizeof(mdir), "%s/master", dir);
	snprintf(vdir, sizeof(vdir), "%s/volume", dir);

	memset(&mo, 0, sizeof(mo));
	mo.ip = ip;
	mo.port = mport;
	mo.mdir = mdir;
	mo.peers = "";
	mo.default_replication = default_replication;
	mo.volume_size_limit_mb = volume_size_limit_mb;
	mo.garbage_threshold = garbage_threshold;
	mo.pulse_seconds = pulse_seconds;
	mo.jwt_key = jwt_key;
	mo.jwt_read_key = jwt_read_key;
	mo.white_list = white_list;
	mo.public_status = public_status;
	mo.vacuum_interval_seconds = 15 * 60;
	mo.threads = threads;

	block_stop_signals();
	ret = master_start(&mo, &m);
	if (ret < 0) {
		fprintf(stderr, "kelp server: cannot start the master: %s\n", strerror(-ret));
		return 1;
	}
	snprintf(master_addr, sizeof(master_addr), "%s:%d", ip, master_port(m));
	dirs[0] = vdir;
	max_volumes[0] = volume_max;
	memset(&vo, 0, sizeof(vo));
	vo.ip = ip;
	vo.port = volume_port;
	vo.public_url = "";
	vo.dirs = dirs;
	vo.max_volumes = max_volumes;
	vo.n_dirs = 1;
	vo.masters = master_addr;
	vo.data_center = dc;
	vo.rack = rack;
	vo.file_size_limit_mb = file_size_limit_mb;
	vo.fsync = fsync_writes;
	vo.read_mode = "proxy";
	vo.threads = threads;
	vo.pulse_seconds = pulse_seconds;
	vo.jwt_key = jwt_key;
	vo.jwt_read_key = jwt_read_key;
	vo.white_list = white_list;
	vo.public_status = public_status;
	vo.min_free_percent = min_free;
	ret = volume_server_start(&vo, &vs);
	if (ret < 0) {
		fprintf(stderr, "kelp server: cannot start the volume server: %s\n",
			strerror(-ret));
		master_stop(m);
		return 1;
	}
	if (write_ready_file(volume_ready_file, volume_server_port(vs)) < 0 ||
	    write_ready_file(ready_file, master_port(m)) < 0)
		log_error("kelp server: cannot write the ready files");
	log_info("kelp server: master on %s, volume server on %s:%d, data in %s", master_addr, ip,
		 volume_server_port(vs), dir);
	sig = wait_for_stop_signal();
	log_info("kelp server: signal %d, stopping", sig);
	volume_server_stop(vs);
	master_stop(m);
	return 0;
}
