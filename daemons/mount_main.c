/* kelp mount: flags, open the metadata, mount, serve until unmounted or signalled. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/base/flags.h"
#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/client/client.h"
#include "cluster/net/metrics_http.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"
#include "fuse/backup.h"
#include "fuse/file.h"
#include "fuse/fuse_metrics.h"
#include "fuse/kv.h"
#include "fuse/meta.h"
#include "fuse/ops.h"
#include "fuse/session.h"

struct mount_ready {
	const char *ready_file;
	int daemon_pipe; /* -daemon: tells the waiting parent the mount is up, or -1 */
};

static void mounted(void *ctx)
{
	struct mount_ready *r = ctx;

	if (r->ready_file && *r->ready_file && write_ready_file(r->ready_file, 1) < 0)
		log_error("cannot write ready file %s", r->ready_file);
	if (r->daemon_pipe >= 0) {
		if (write(r->daemon_pipe, "1", 1) != 1)
			log_error("cannot tell the parent the mount is up");
		close(r->daemon_pipe);
		r->daemon_pipe = -1;
	}
}

/*
 * -daemon: forks; the parent waits until the child has mounted (exit 0) or failed
 * (exit 1), so "kelp mount -daemon" and mount(8) return once the mount works.
 * Returns the pipe the child reports on, or -1 in the parent's error case.
 */
static int daemonize(const char *log_file)
{
	int fds[2], fd;
	pid_t pid;
	char c;

	if (pipe(fds) < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		close(fds[1]);
		_exit(read(fds[0], &c, 1) == 1 ? 0 : 1);
	}
	close(fds[0]);
	setsid();
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	fd = open(log_file && *log_file ? log_file : "/dev/null",
		  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	if (chdir("/") < 0) {
		/* nothing depends on the working directory */
	}
	return fds[1];
}

/*
 * The periodic metadata backup (-backupInterval, fuse/backup.h): a thread that sleeps
 * an interval, then stores a backup through its own client. A backup is one read
 * transaction: the filesystem goes on meanwhile. The gc hold lasts backupKeep
 * intervals: as long as the oldest kept backup, if backups stop.
 */
struct backup_thread {
	struct meta *meta;
	const char *masters;
	struct backup_options o;
	double interval_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
};

static void *backup_loop(void *arg)
{
	struct backup_thread *b = arg;
	struct kelp_client_options co = {.masters = b->masters, .timeout_ms = 60000};
	struct kelp_client *c = NULL;

	if (kelp_client_new(&co, &c) < 0) {
		log_error("mount: no client for the metadata backups: they are off");
		return NULL;
	}
	pthread_mutex_lock(&b->lock);
	while (!b->stop) {
		struct timespec ts;
		uint64_t at;

		clock_gettime(CLOCK_REALTIME, &ts);
		at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
		     (uint64_t)(b->interval_s * 1e9);
		ts.tv_sec = (time_t)(at / 1000000000ull);
		ts.tv_nsec = (long)(at % 1000000000ull);
		while (!b->stop && pthread_cond_timedwait(&b->cond, &b->lock, &ts) == 0)
			;
		if (b->stop)
			break;
		pthread_mutex_unlock(&b->lock);
		{
			struct backup_entry e;
			char err[512];
			int removed = 0, rc;
			uint64_t t0 = monotonic_ns();

			rc = backup_run(meta_kv(b->meta), c, &b->o, &e, &removed, err, sizeof(err));
			if (rc == 0) {
				log_info(
				    "mount: metadata backup: %llu records, %llu bytes compressed "
				    "in %d part(s), %.1f s; %d old backup(s) removed",
				    (unsigned long long)e.records, (unsigned long long)e.size,
				    e.n_parts, (double)(monotonic_ns() - t0) / 1e9, removed);
				backup_entry_release(&e);
			} else {
				log_error("mount: metadata backup failed: %s (next try in %.0f s)",
					  err[0] ? err : strerror(-rc), b->interval_s);
			}
		}
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	kelp_client_free(c);
	return NULL;
}

/*
 * True when a master of the list answers within timeout_ms; else false with the
 * client's reason in why (a mount that no master answers would fail every call).
 */
static bool masters_answer(const char *masters, int timeout_ms, char *why, size_t cap)
{
	struct kelp_client_options co = {.masters = masters, .timeout_ms = timeout_ms};
	struct kelp_client *c = NULL;
	char *body = NULL;
	size_t len = 0;
	long status = 0;
	bool ok;

	if (kelp_client_new(&co, &c) < 0) {
		snprintf(why, cap, "bad -master list");
		return false;
	}
	ok =
	    kelp_client_master_get(c, "/cluster/healthz", false, &status, &body, &len, NULL) == 0 ||
	    status != 0;
	if (!ok)
		snprintf(why, cap, "%s", kelp_client_error(c));
	free(body);
	kelp_client_free(c);
	return ok;
}

/*
 * -metricsPort: the registry of the mount (fuse_metrics) and a server answering GET
 * /metrics on ip:port (0 = any free port, written to port_file when given).
 */
static int start_metrics(struct kelp_fs *fs, const char *ip, int port, const char *port_file,
			 struct http_server **out)
{
	int ret = fuse_metrics_init(fs);

	if (ret < 0)
		return ret;
	ret = metrics_server_start(ip, port, fs->metrics->reg, out);
	if (ret < 0) {
		log_error("mount: cannot serve metrics on %s:%d: %s", ip, port,
			  ret == -EADDRINUSE ? "the port is in use" : strerror(-ret));
		return ret;
	}
	if (port_file && *port_file) {
		char tmp[4200];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", http_server_port(*out)) < 0 || fclose(f) != 0 ||
		    rename(tmp, port_file) < 0) {
			log_error("mount: cannot write the metrics port to %s", port_file);
			return -EIO;
		}
	}
	log_info("mount: metrics on http://%s:%d/metrics", ip, http_server_port(*out));
	return 0;
}

int mount_main(int argc, char **argv)
{
	static const char summary[] =
	    "mount the cluster as a filesystem: metadata in LMDB under -meta (or in a PostgreSQL "
	    "database shared by many mounts: -meta=postgres://...), data in the cluster";
	char *dir = "", *master = "localhost:9333", *meta_dir = "/var/lib/kelp/meta",
	     *collection = "", *replication = "", *ttl = "", *options = "", *ready_file = "";
	char *log_file = "";
	char *cache_dir = "";
	char *backup_interval = "1h";
	int backup_keep = 24;
	struct backup_thread bt;
	bool backups = false;
	int chunk_mb = 4, cache_mb = 1024, memory_cache_mb = 64, timeout_s = 30, threads = 16;
	int lookup_cache = -1;
	int meta_conns = 8, session_timeout_s = SESSION_TIMEOUT_DEFAULT_S, metrics_port = -1;
	char *metrics_ip = "127.0.0.1", *metrics_port_file = "";
	struct mount_session session;
	double attr_cache_s = 1, entry_cache_s = 1, gc_grace_s = -1;
	double trash_days = 1;
	bool daemon_mode = false, meta_offline = false, writeback = false, sync_meta = false;
	int writeback_mb = 256;
	struct mount_ready ready = {NULL, -1};
	const struct flag flags[] = {
	    FLAG("dir", FLAG_STRING, &dir, "mount point (required)"),
	    FLAG("master", FLAG_STRING, &master, "comma list of masters"),
	    FLAG("meta", FLAG_STRING, &meta_dir,
		 "the metadata: an LMDB directory on this host, or "
		 "postgres://user[:password]@host[:port]/dbname (also postgresql://; libpq "
		 "conventions: PGPASSWORD, ~/.pgpass, ?sslmode=...) shared by every mount of it"),
	    FLAG("metaConnections", FLAG_INT, &meta_conns,
		 "PostgreSQL: connections of this mount to the database"),
	    FLAG("sessionTimeout", FLAG_INT, &session_timeout_s,
		 "seconds without a heartbeat after which other mounts clean up this mount's "
		 "session (its open files of removed names and its locks are released)"),
	    FLAG("gcGraceSec", FLAG_DOUBLE, &gc_grace_s,
		 "with a shared -meta: blobs a file stopped using are deleted no sooner than this "
		 "(-1 = 2 x -attrCacheSec + 5 s), for reads on other mounts that resolved them "
		 "just before"),
	    FLAG("attrCacheSec", FLAG_DOUBLE, &attr_cache_s,
		 "seconds the kernel caches attributes (0 = always ask; with a shared -meta, "
		 "how late another mount's changes may be seen)"),
	    FLAG("entryCacheSec", FLAG_DOUBLE, &entry_cache_s,
		 "seconds the kernel caches names (0 = always ask)"),
	    FLAG("lookupCache", FLAG_INT, &lookup_cache,
		 "entries of the lookups read ahead: a directory's names with their attributes, "
		 "read in batches and answered from memory for at most the lesser of "
		 "-attrCacheSec and -entryCacheSec (0 = off; -1 = 65536 with a postgres:// "
		 "-meta, off with LMDB)"),
	    FLAG("collection", FLAG_STRING, &collection, "collection of the file data"),
	    FLAG("replication", FLAG_STRING, &replication,
		 "replication of the file data (\"\" = the master's default)"),
	    FLAG("ttl", FLAG_STRING, &ttl, "time to live of the file data (\"\" = none)"),
	    FLAG("chunkSizeLimitMB", FLAG_INT, &chunk_mb,
		 "files are stored in chunks of this size, MiB"),
	    FLAG("cacheDir", FLAG_STRING, &cache_dir,
		 "on-disk chunk cache directory (default <meta>/cache; none with a postgres:// "
		 "-meta unless given)"),
	    FLAG("cacheCapacityMB", FLAG_INT, &cache_mb,
		 "on-disk chunk cache size, MiB (0 = none)"),
	    FLAG("memoryCacheMB", FLAG_INT, &memory_cache_mb,
		 "memory chunk cache size, MiB (0 = none)"),
	    FLAG("writeback", FLAG_BOOL, &writeback,
		 "close() stores a file's data in a local journal (-cacheDir/journal) and "
		 "returns; it is uploaded in the background and replayed after a crash. fsync() "
		 "still uploads. Weaker: a close()d file is in the cluster only later, and lost "
		 "if this host's disk is (docs/operations.md). LMDB -meta only"),
	    FLAG("writebackMB", FLAG_INT, &writeback_mb,
		 "-writeback: most MiB in the journal (also held in memory until uploaded); "
		 "when full, closes upload themselves"),
	    FLAG("syncMeta", FLAG_BOOL, &sync_meta,
		 "every metadata change is on disk when its call returns (PostgreSQL: each commit "
		 "waits for the WAL flush; LMDB: synced at each commit). Default: on PostgreSQL "
		 "namespace changes (create, mkdir, rename, unlink, chmod, xattrs) commit without "
		 "waiting and are on disk within a second, as every LMDB commit; close() and "
		 "fsync() wait (docs/operations.md)"),
	    FLAG("timeout", FLAG_INT, &timeout_s,
		 "seconds before a call fails with EIO when the cluster is unreachable"),
	    FLAG("trashDays", FLAG_DOUBLE, &trash_days,
		 "days a removed file stays in /.trash before it is removed for good (fractions "
		 "allowed; 0 = no trash)"),
	    FLAG("metaOffline", FLAG_BOOL, &meta_offline,
		 "keep serving metadata calls (stat, ls, rename, ...) from LMDB while no master "
		 "answers, instead of failing them with EIO"),
	    FLAG("backupInterval", FLAG_STRING, &backup_interval,
		 "store a backup of the metadata in the cluster this often (1h, 30m, 90s; "
		 "0 = off): see kelp meta restore"),
	    FLAG("backupKeep", FLAG_INT, &backup_keep,
		 "metadata backups kept in the cluster (older ones are deleted)"),
	    FLAG("o", FLAG_STRING, &options,
		 "FUSE mount options, comma list (allow_other, ro, ...)"),
	    FLAG("threads", FLAG_INT, &threads, "most FUSE worker threads"),
	    FLAG("readyFile", FLAG_STRING, &ready_file, "write \"1\" here once mounted"),
	    FLAG("daemon", FLAG_BOOL, &daemon_mode, "run in the background; return once mounted"),
	    FLAG("logFile", FLAG_STRING, &log_file, "with -daemon: append the log here"),
	    FLAG("metricsPort", FLAG_INT, &metrics_port,
		 "serve Prometheus metrics at http://-metricsIp:port/metrics (-1 = off; 0 = any "
		 "free port, written to -metricsPortFile)"),
	    FLAG("metricsIp", FLAG_STRING, &metrics_ip, "address of the metrics server"),
	    FLAG("metricsPortFile", FLAG_STRING, &metrics_port_file,
		 "write the metrics port here once it listens"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct kelp_fs_options fo;
	struct kelp_fs fs;
	struct http_server *metrics_server = NULL;
	struct meta *meta;
	struct meta_options mo;
	char meta_shown[512], cid[128] = "", owner[4400];
	bool is_pg = false;
	int ret;

	ret = flags_parse(flags, "mount", summary, argc - 1, argv + 1);
	if (ret == -2)
		return 0;
	if (ret < 0)
		return 2;
	if (tool_tls_setup("mount") < 0)
		return 2;
	if (ret < argc - 1 && !*dir)
		dir = argv[ret + 1]; /* "kelp mount /mnt/kelp" */
	if (!*dir) {
		fprintf(stderr, "kelp mount: -dir (the mount point) is required\n");
		return 2;
	}
	if (metrics_port < -1 || metrics_port > 65535) {
		fprintf(stderr, "kelp mount: -metricsPort must be -1 (off) or 0-65535\n");
		return 2;
	}
	if (chunk_mb <= 0 || chunk_mb > 1024 || cache_mb < 0 || memory_cache_mb < 0 ||
	    timeout_s <= 0 || session_timeout_s < 1 || session_timeout_s > 86400 ||
	    meta_conns <= 0 || meta_conns > 1000 || attr_cache_s < 0 || entry_cache_s < 0 ||
	    attr_cache_s > 86400 || entry_cache_s > 86400 || gc_grace_s > 86400 ||
	    !(trash_days >= 0 && trash_days <= 36500)) {
		fprintf(
		    stderr,
		    "kelp mount: -chunkSizeLimitMB must be 1-1024, cache sizes >= 0, -timeout > "
		    "0, -sessionTimeout 1-86400, -metaConnections 1-1000, -attrCacheSec and "
		    "-entryCacheSec 0-86400, -gcGraceSec at most 86400, -trashDays 0-36500\n");
		return 2;
	}
	if (lookup_cache < -1 || lookup_cache > 16 * 1024 * 1024) {
		fprintf(stderr, "kelp mount: -lookupCache must be -1 (default), 0 (off) or at most "
				"16777216 entries\n");
		return 2;
	}
	if (writeback_mb < 1 || writeback_mb > 1048576) {
		fprintf(stderr, "kelp mount: -writebackMB must be 1-1048576\n");
		return 2;
	}
	if (writeback && kv_is_pg_url(meta_dir)) {
		fprintf(
		    stderr,
		    "kelp mount: -writeback needs an LMDB -meta: with a shared (PostgreSQL) "
		    "metadata, other mounts would not see a closed file until its upload, which "
		    "breaks close-to-open between mounts\n");
		return 2;
	}
	memset(&bt, 0, sizeof(bt));
	if (tool_parse_duration(backup_interval, &bt.interval_s) < 0 || backup_keep < 1 ||
	    backup_keep > BACKUP_MAX_KEEP) {
		fprintf(stderr,
			"kelp mount: -backupInterval is a duration (1h, 30m, 90s, 0 = off), "
			"-backupKeep 1-%d\n",
			BACKUP_MAX_KEEP);
		return 2;
	}
	{
		struct stat st;

		int rc = stat(dir, &st), err = errno;

		if (rc < 0 && err == ENOTCONN)
			fprintf(
			    stderr,
			    "kelp mount: %s is a dead mount (its daemon died): fusermount3 -u -z %s, "
			    "then mount again\n",
			    dir, dir);
		else if (rc < 0 && err == ENOENT)
			fprintf(
			    stderr,
			    "kelp mount: the mount point %s does not exist (create it first: mkdir "
			    "-p %s)\n",
			    dir, dir);
		else if (rc < 0)
			fprintf(stderr, "kelp mount: the mount point %s: %s\n", dir, strerror(err));
		else if (!S_ISDIR(st.st_mode))
			fprintf(stderr, "kelp mount: the mount point %s is not a directory\n", dir);
		if (rc < 0 || !S_ISDIR(st.st_mode))
			return 1;
	}
	/* A mount that no master answers would mount and then fail every call with EIO:
	 * refuse, unless the metadata alone is to be served (-metaOffline). */
	if (!meta_offline) {
		char why[512];

		curl_global_init(CURL_GLOBAL_ALL);
		if (!masters_answer(master, timeout_s * 1000, why, sizeof(why))) {
			fprintf(
			    stderr,
			    "kelp mount: no master answers at %s within %d s (-timeout): %s. Is the "
			    "cluster running and -master right? (-metaOffline mounts anyway and "
			    "serves the metadata alone)\n",
			    master, timeout_s, why);
			curl_global_cleanup();
			return 1;
		}
		curl_global_cleanup();
	}
	is_pg = kv_is_pg_url(meta_dir);
	kv_mask_url(meta_dir, meta_shown, sizeof(meta_shown));
	if (daemon_mode) {
		char meta_abs[4096], dir_abs[4096];

		/* Paths are relative to where we were started, not to "/". */
		if (is_pg) {
			snprintf(meta_abs, sizeof(meta_abs), "%s", meta_dir);
		} else if (!realpath(meta_dir, meta_abs)) {
			if (mkdir(meta_dir, 0700) < 0 || !realpath(meta_dir, meta_abs)) {
				fprintf(stderr, "kelp mount: bad -meta %s\n", meta_dir);
				return 2;
			}
		}
		if (!realpath(dir, dir_abs)) {
			fprintf(stderr, "kelp mount: bad mount point %s\n", dir);
			return 2;
		}
		meta_dir = strdup(meta_abs);
		dir = strdup(dir_abs);
		if (*cache_dir && realpath(cache_dir, meta_abs))
			cache_dir = strdup(meta_abs);
		ready.daemon_pipe = daemonize(log_file);
		if (ready.daemon_pipe < 0) {
			fprintf(stderr, "kelp mount: cannot daemonize\n");
			return 1;
		}
	}
	ready.ready_file = ready_file;
	/*
	 * Chunk-sized buffers (MiBs) come and go all the time. Served from mmap, each
	 * costs a thousand page faults, the kernel zeroing it and a TLB shootdown when it
	 * is unmapped (measured: the mount's system time halves, sequential reads go from
	 * 350 to 700 MiB/s, when they come from the heap). So they come from the heap
	 * (mmap only above a chunk, at most glibc's 32 MiB limit), and each of the few
	 * arenas keeps up to 16 MiB free for reuse (peak RSS during a 3 GiB read: 105 ->
	 * 150 MiB; 64 MiB kept gave the same speed); few arenas keep 16 FUSE threads from
	 * each holding some.
	 */
	{
		size_t t = (size_t)chunk_mb << 20;

		t = t + (1u << 20) < (32u << 20) ? t + (1u << 20) : (32u << 20);
		mallopt(M_MMAP_THRESHOLD, (int)t);
		mallopt(M_TRIM_THRESHOLD, 16 << 20);
	}
	mallopt(M_ARENA_MAX, 4);
	block_stop_signals(); /* before any thread: kelp_fuse_run waits for them */
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	memset(&mo, 0, sizeof(mo));
	mo.timeout_ms = timeout_s * 1000;
	mo.connections = meta_conns;
	if (gc_grace_s < 0)
		gc_grace_s = 2 * attr_cache_s + 5;
	mo.gc_grace_ms = (int)(gc_grace_s * 1000);
	mo.trash_ns = (int64_t)(trash_days * 86400e9);
	/* Lookups read ahead: answers at most the lesser cache time old (none with 0). */
	mo.lookup_cache = lookup_cache >= 0 ? lookup_cache : is_pg ? 65536 : 0;
	mo.lookup_ttl_ns =
	    (int64_t)((attr_cache_s < entry_cache_s ? attr_cache_s : entry_cache_s) * 1e9);
	mo.dir_attr_ttl_ns = (int64_t)(attr_cache_s * 1e9);
	mo.sync_every = sync_meta;
	if (is_pg) {
		char host[256] = "", where[4096];

		tool_cluster_id(master, timeout_s * 1000, cid, sizeof(cid));
		mo.cluster_id = cid;
		gethostname(host, sizeof(host) - 1);
		if (!realpath(dir, where))
			snprintf(where, sizeof(where), "%s", dir);
		snprintf(owner, sizeof(owner), "%s:%s", host, where);
		mo.owner = owner;
	}
	ret = meta_open_opts(meta_dir, &mo, &meta);
	if (ret < 0) {
		fprintf(stderr, "kelp mount: cannot open the metadata in %s: %s\n", meta_shown,
			ret == -ENOTCONN	  ? "the database is unreachable"
			: ret == -ENOENT && is_pg ? "no such database or user (see the log)"
			: ret == -EACCES && is_pg ? "access refused (see the log)"
			: ret == -EXDEV		  ? "it belongs to another cluster (see the log)"
			: ret == -EPROTONOSUPPORT ? "it has a newer format (see the log)"
						  : strerror(-ret));
		return 1;
	}
	/* LMDB metadata from `kelp meta load/restore -master` knows its cluster: check it
	 * (PostgreSQL checked at open). Not asked otherwise: a plain LMDB mount does not
	 * wait for the masters. */
	if (!is_pg && meta_cluster_id(meta, cid, sizeof(cid)) == 0 && *cid) {
		char masters_id[128];

		tool_cluster_id(master, 5000, masters_id, sizeof(masters_id));
		if (*masters_id && strcmp(masters_id, cid)) {
			fprintf(stderr,
				"kelp mount: the metadata in %s belongs to the cluster %s, and the "
				"masters are the cluster %s: refusing to mount it\n",
				meta_shown, cid, masters_id);
			meta_close(meta);
			return 1;
		}
	}
	{
		char where[4096];

		if (!realpath(dir, where))
			snprintf(where, sizeof(where), "%s", dir);
		ret = mount_session_start(&session, meta, where, session_timeout_s * 1000);
	}
	if (ret < 0) {
		fprintf(stderr, "kelp mount: cannot register the session in %s: %s\n", meta_shown,
			strerror(-ret));
		meta_close(meta);
		return 1;
	}
	/* Files unlinked while open by a mount that is gone (with LMDB: this one before a
	 * crash); with a shared database those another live mount holds stay. */
	meta_release_orphans(meta);
	memset(&fo, 0, sizeof(fo));
	fo.masters = master;
	fo.collection = collection;
	fo.replication = *replication ? replication : NULL;
	fo.ttl = *ttl ? ttl : NULL;
	fo.chunk_size = (size_t)chunk_mb << 20;
	fo.timeout_ms = timeout_s * 1000;
	fo.meta_offline = meta_offline;
	fo.cache_bytes = (size_t)memory_cache_mb << 20;
	{
		static char default_dir[4200];

		if (!*cache_dir && !is_pg) {
			snprintf(default_dir, sizeof(default_dir), "%s/cache", meta_dir);
			cache_dir = default_dir;
		}
	}
	fo.cache_dir = *cache_dir ? cache_dir : NULL;
	fo.attr_timeout = attr_cache_s;
	fo.entry_timeout = entry_cache_s;
	fo.disk_cache_bytes = (uint64_t)cache_mb << 20;
	if (*cache_dir) {
		/* With -writeback the journal; without, a journal an earlier -writeback mount
		 * left is replayed all the same. */
		static char journal_dir[4300];

		snprintf(journal_dir, sizeof(journal_dir), "%s/journal", cache_dir);
		fo.writeback = writeback;
		fo.journal_dir = journal_dir;
		fo.journal_bytes = (uint64_t)writeback_mb << 20;
	}
	ret = kelp_fs_init(&fs, meta, &fo);
	if (ret == 0 && bt.interval_s > 0) {
		bt.meta = meta;
		bt.masters = master;
		bt.o.keep = backup_keep;
		bt.o.replication = fo.replication;
		bt.o.hold_ns = (int64_t)(bt.interval_s * 1e9) * backup_keep;
		pthread_mutex_init(&bt.lock, NULL);
		pthread_cond_init(&bt.cond, NULL);
		backups = pthread_create(&bt.thread, NULL, backup_loop, &bt) == 0;
		if (!backups)
			log_error("mount: cannot start the backup thread: backups are off");
	}
	if (ret == 0 && metrics_port >= 0)
		ret = start_metrics(&fs, metrics_ip, metrics_port, metrics_port_file,
				    &metrics_server);
	if (ret == 0)
		ret = kelp_fuse_run(&fs, dir, options, threads, mounted, &ready);
	http_server_stop(metrics_server);
	fuse_metrics_free(&fs); /* the session is over: no callback counts any more */
	if (backups) {
		pthread_mutex_lock(&bt.lock);
		bt.stop = true;
		pthread_cond_signal(&bt.cond);
		pthread_mutex_unlock(&bt.lock);
		pthread_join(bt.thread, NULL); /* a backup under way finishes first */
	}
	kelp_fs_destroy(&fs);
	mount_session_stop(&session);
	meta_close(meta);
	curl_global_cleanup();
	if (ret < 0) {
		fprintf(stderr, "kelp mount: %s\n", strerror(-ret));
		return 1;
	}
	return 0;
}
