/*
 * kelp download: fetches blobs by file id into a directory, like `weed download`.
 *
 * Each blob is streamed into a temporary file in -dir and renamed to its stored name
 * (the Content-Disposition file name, reduced to a safe base name) or, when it has
 * none, to the file id; so an interrupted download never leaves a partial file under
 * the final name. One JSON line per fid on stdout:
 *   {"fid":"3,01637037d6","fileName":"a.txt","size":5}  or  {"fid":..,"error":..}
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/base/flags.h"
#include "cluster/client/client.h"
#include "daemons/client_tools.h"
#include "daemons/commands.h"

static void print_json(json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);

	if (text) {
		puts(text);
		fflush(stdout);
	}
	free(text);
	json_decref(obj);
}

/* Downloads one fid into dir; fills name (the final file name). 0 or -errno (message in err). */
static int download_one(struct kelp_client *c, const char *dir, const char *fid, mode_t mode,
			char *name, size_t name_cap, uint64_t *size, char *err, size_t err_cap)
{
	struct kelp_blob_info info;
	char tmp[4096], final[4096];
	int fd, rc;

	name[0] = '\0';
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.kelp-download.XXXXXX", dir) >= sizeof(tmp)) {
		snprintf(err, err_cap, "directory name too long");
		return -ENAMETOOLONG;
	}
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, err_cap, "cannot create a file in %.400s: %s", dir, strerror(errno));
		return rc;
	}
	rc = kelp_client_read_to_fd(c, fid, fd, size, &info);
	if (rc < 0)
		snprintf(err, err_cap, "%s", kelp_client_error(c));
	if (rc == 0 && (fchmod(fd, mode) < 0 || fsync(fd) < 0)) {
		rc = -errno;
		snprintf(err, err_cap, "cannot write %.400s: %s", tmp, strerror(errno));
	}
	if (close(fd) < 0 && rc == 0) {
		rc = -errno;
		snprintf(err, err_cap, "cannot write %.400s: %s", tmp, strerror(errno));
	}
	if (rc == 0) {
		snprintf(name, name_cap, "%s", info.name[0] ? info.name : fid);
		snprintf(final, sizeof(final), "%s/%s", dir, name);
		if (rename(tmp, final) < 0) {
			rc = -errno;
			snprintf(err, err_cap, "cannot rename to %.400s: %s", final,
				 strerror(errno));
		}
	}
	if (rc < 0)
		unlink(tmp);
	return rc;
}

int download_main(int argc, char **argv)
{
	static const char summary[] = "download blobs by file id into a directory, under their "
				      "stored names (or the file id)";
	char *master = "localhost:9333", *dir = ".";
	int timeout_s = 300;
	bool use_public_url = false;
	const struct flag flags[] = {
	    FLAG("master", FLAG_STRING, &master, "comma list of master addresses"),
	    FLAG_ALIAS("server", FLAG_STRING, &master),
	    FLAG("dir", FLAG_STRING, &dir, "directory to write the files to"),
	    FLAG("usePublicUrl", FLAG_BOOL, &use_public_url,
		 "read through the volume servers' publicUrl"),
	    FLAG("timeout", FLAG_INT, &timeout_s, "seconds allowed per file, retries included"),
	    TOOL_TLS_FLAGS,
	    FLAG_END,
	};
	struct kelp_client *c;
	struct stat st;
	mode_t mask, mode;
	int first, failed = 0, ret;

	ret = tool_parse_args(flags, "download", summary, "fid...", false, argc, argv, &first);
	if (ret >= 0)
		return ret;
	if (tool_tls_setup("download") < 0)
		return 2;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "kelp download: -dir %s is not a directory\n", dir);
		return 2;
	}
	mask = umask(0);
	umask(mask);
	mode = 0666 & ~mask;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (tool_client_new("download", master, timeout_s, use_public_url, &c) < 0) {
		curl_global_cleanup();
		return 2;
	}
	for (int i = first; i < argc; i++) {
		char name[KELP_NAME_MAX + FID_MAX_LEN], err[600];
		uint64_t size = 0;
		int rc = download_one(c, dir, argv[i], mode, name, sizeof(name), &size, err,
				      sizeof(err));

		if (rc == 0) {
			print_json(json_pack("{s:o,s:o,s:I}", "fid", tool_json_text(argv[i]),
					     "fileName", tool_json_text(name), "size",
					     (json_int_t)size));
		} else {
			failed++;
			print_json(json_pack("{s:o,s:o}", "fid", tool_json_text(argv[i]), "error",
					     tool_json_text(err)));
		}
	}
	kelp_client_free(c);
	curl_global_cleanup();
	return failed ? 1 : 0;
}
