/*
 * kelp upload: assigns a file id for each file and uploads it, like `weed upload`.
 *
 * Arguments are files or directories (walked recursively, symlinked directories are
 * not followed). Each file gives one JSON line on stdout:
 *   {"fileName":"dir/a.txt","fid":"3,01637037d6","fileUrl":"host:8080/3,01637037d6","size":5}
 * or {"fileName":"dir/a.txt","error":"..."}; fileName is the path as walked, the
 * stored name is its base name. Exit status 1 when any file failed.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cluster/base/flags.h"
#include "cluster/client/client.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

struct file_list {
	char **paths;
	uint64_t *sizes;
	size_t n, cap;
	uint64_t total_bytes;
};

static int list_add(struct file_list *l, const char *path, uint64_t size)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		char **p = realloc(l->paths, ncap * sizeof(*p));
		uint64_t *s;

		if (!p)
			return -ENOMEM;
		l->paths = p;
		s = realloc(l->sizes, ncap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		l->sizes = s;
		l->cap = ncap;
	}
	l->paths[l->n] = strdup(path);
	if (!l->paths[l->n])
		return -ENOMEM;
	l->sizes[l->n++] = size;
	l->total_bytes += size;
	return 0;
}

static void list_free(struct file_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->paths[i]);
	free(l->paths);
	free(l->sizes);
}

static bool included(const char *path, const char *pattern)
{
	const char *base = strrchr(path, '/');

	return !pattern || !*pattern || fnmatch(pattern, base ? base + 1 : path, 0) == 0;
}

/* The JSON line of a path that cannot be uploaded. */
static void print_path_error(const char *path, const char *what)
{
	json_t *obj =
	    json_pack("{s:o,s:o}", "fileName", tool_json_text(path), "error", tool_json_text(what));
	char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);

	if (text)
		puts(text);
	fflush(stdout);
	free(text);
	json_decref(obj);
}

/*
 * Adds path (a file, or a directory walked in name order). Returns how many paths
 * could not be read (each reported as a JSON error line), or -ENOMEM.
 */
static int walk(struct file_list *l, const char *path, const char *pattern, bool top)
{
	struct dirent **names;
	struct stat st;
	int n, rc = 0;

	if ((top ? stat(path, &st) : lstat(path, &st)) < 0) {
		print_path_error(path, strerror(errno));
		return 1;
	}
	if (S_ISLNK(st.st_mode)) {
		/* Inside a tree: follow links to files, not to directories (no loops). */
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			return 0;
	}
	if (S_ISREG(st.st_mode))
		return included(path, pattern) ? list_add(l, path, (uint64_t)st.st_size) : 0;
	if (!S_ISDIR(st.st_mode)) {
		if (!top)
			return 0; /* sockets, fifos, devices inside a tree */
		print_path_error(path, "not a regular file or a directory");
		return 1;
	}
	n = scandir(path, &names, NULL, alphasort);
	if (n < 0) {
		print_path_error(path, strerror(errno));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		size_t plen = strlen(path), clen = plen + strlen(name) + 2;
		char *child;

		if (rc >= 0 && strcmp(name, ".") && strcmp(name, "..")) {
			child = malloc(clen);
			if (!child) {
				rc = -ENOMEM;
			} else {
				int sub;

				snprintf(child, clen, "%s%s%s", path,
					 plen && path[plen - 1] == '/' ? "" : "/", name);
				sub = walk(l, child, pattern, false);
				rc = sub < 0 ? sub : rc + sub;
				free(child);
			}
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

static void print_json(struct tool_progress *p, json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);

	if (text)
		tool_progress_println(p, stdout, text);
	free(text);
	json_decref(obj);
}

int upload_main(int argc, char **argv)
{
	static const char summary[] =
	    "upload files or directories (recursively): one JSON line per file on stdout";
	char *master = "localhost:9333", *collection = "", *replication = "", *ttl = "", *dc = "",
	     *rack = "", *dir = "", *include = "";
	int timeout_s = 300;
	bool fsync_writes = false, use_public_url = false;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("collection", FLAG_STRING, &collection, "collection name"),
	    FLAG("replication", FLAG_STRING, &replication,
		 "replica placement \"xyz\"; \"\" = the master's default"),
	    FLAG("ttl", FLAG_STRING, &ttl, "time to live, e.g. 3m, 4h, 5d, 6w, 7M, 8y"),
	    FLAG("dataCenter", FLAG_STRING, &dc, "prefer volumes in this data center"),
	    FLAG("rack", FLAG_STRING, &rack, "prefer volumes in this rack"),
	    FLAG("dir", FLAG_STRING, &dir, "also upload this directory, recursively"),
	    FLAG("include", FLAG_STRING, &include,
		 "only files whose name matches this pattern, e.g. *.pdf"),
	    FLAG("fsync", FLAG_BOOL, &fsync_writes, "ask volume servers to fsync each file"),
	    FLAG("usePublicUrl", FLAG_BOOL, &use_public_url,
		 "upload through the volume servers' publicUrl"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per file, retries included"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct kelp_assign_request areq = {0};
	struct kelp_upload_options uopt = {0};
	struct file_list files = {0};
	struct tool_progress progress;
	struct kelp_client *c;
	int first, failed = 0, unreadable = 0, rc;

	rc = tool_parse_args(flags, "upload", summary, "file-or-dir...", *dir != '\0', argc, argv,
			     &first);
	if (rc >= 0)
		return rc;
	if (tool_tls_setup("upload") < 0)
		return 2;
	/* -dir first (weed's flag), then the arguments; slot first - 1 stands for -dir. */
	for (int i = first - 1; i < argc; i++) {
		const char *path = i == first - 1 ? dir : argv[i];

		if (!*path)
			continue;
		rc = walk(&files, path, include, true);
		if (rc < 0) {
			fprintf(stderr, "kelp upload: out of memory\n");
			list_free(&files);
			return 1;
		}
		unreadable += rc;
	}
	if (files.n == 0) {
		fprintf(stderr, "kelp upload: no files to upload\n");
		list_free(&files);
		return 1;
	}

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("upload", master, timeout_s, use_public_url, &c) < 0) {
		list_free(&files);
		curl_global_cleanup();
		return 2;
	}
	areq.collection = collection;
	areq.replication = replication;
	areq.ttl = ttl;
	areq.data_center = dc;
	areq.rack = rack;
	uopt.ttl = ttl;
	uopt.fsync = fsync_writes;

	tool_progress_start(&progress, "upload", files.n, files.total_bytes);
	for (size_t i = 0; i < files.n; i++) {
		struct kelp_put_result res;

		rc = kelp_client_put_path(c, &areq, &uopt, files.paths[i], &res);

		if (rc == 0) {
			char url[KELP_URL_MAX + FID_MAX_LEN + 2];

			snprintf(url, sizeof(url), "%s/%s", res.assign.public_url, res.assign.fid);
			print_json(&progress,
				   json_pack("{s:o,s:s,s:s,s:I}", "fileName",
					     tool_json_text(files.paths[i]), "fid", res.assign.fid,
					     "fileUrl", url, "size", (json_int_t)res.upload.size));
		} else {
			failed++;
			print_json(&progress, json_pack("{s:o,s:o}", "fileName",
							tool_json_text(files.paths[i]), "error",
							tool_json_text(kelp_client_error(c))));
		}
		tool_progress_add(&progress, 1, files.sizes[i], rc < 0);
	}
	tool_progress_finish(&progress);
	kelp_client_free(c);
	curl_global_cleanup();
	if (failed)
		fprintf(stderr, "kelp upload: %d of %zu files failed\n", failed, files.n);
	if (unreadable)
		fprintf(stderr, "kelp upload: %d path%s could not be read\n", unreadable,
			unreadable == 1 ? "" : "s");
	list_free(&files);
	return failed || unreadable ? 1 : 0;
}
