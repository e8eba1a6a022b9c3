#include "cluster/master/sequence.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

struct sequence {
	pthread_mutex_t lock;
	char *dir;
	char path[4096];
	uint64_t next_key;     /* next key to hand out */
	uint64_t reserved_end; /* keys below this are reserved on disk */
	bool catch_up;	       /* a new leader: apply every earlier entry before handing out */
	uint32_t max_volume_id;
	char topology_id[40];
	bool replicated;
	struct sequence_replication repl;
};

static int persist(struct sequence *s, uint64_t reserved_end, uint32_t max_vid)
{
	char tmp[4200], *text;
	json_t *j = json_pack("{s:I,s:I,s:s}", "fileKeyReserved", (json_int_t)reserved_end,
			      "maxVolumeId", (json_int_t)max_vid, "topologyId", s->topology_id);
	int fd, ret = 0;

	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(text);
		return -errno;
	}
	ret = pwrite_all(fd, text, strlen(text), 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	free(text);
	if (ret == 0 && rename(tmp, s->path) < 0)
		ret = -errno;
	if (ret == 0)
		ret = fsync_dir(s->dir);
	if (ret < 0)
		log_error("sequence: cannot persist %s: %s", s->path, strerror(-ret));
	return ret;
}

/* Proposes a state change through Raft; the lock must not be held. */
static int propose_state(struct sequence *s, uint64_t reserved_end, uint32_t max_vid,
			 const char *topology_id)
{
	char cmd[256];
	int n =
	    snprintf(cmd, sizeof(cmd),
		     "{\"fileKeyReserved\":%" PRIu64 ",\"maxVolumeId\":%u,\"topologyId\":\"%s\"}",
		     reserved_end, max_vid, topology_id ? topology_id : "");

	return s->repl.propose(s->repl.ctx, cmd, (size_t)n);
}

static void make_uuid(char out[40])
{
	uint8_t b[16];
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || read(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
		for (int i = 0; i < 16; i++)
			b[i] = (uint8_t)(now_ns() >> (i % 8 * 8));
	}
	if (fd >= 0)
		close(fd);
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

int sequence_open(const char *dir, struct sequence **out)
{
	struct sequence *s = calloc(1, sizeof(*s));
	json_error_t err;
	json_t *j;
	int ret;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->dir = strdup(dir);
	ret = mkdir_p(dir, 0755);
	if (ret < 0 || !s->dir) {
		sequence_close(s);
		return ret < 0 ? ret : -ENOMEM;
	}
	snprintf(s->path, sizeof(s->path), "%s/sequence.json", dir);
	s->next_key = 1;
	j = json_load_file(s->path, 0, &err);
	if (j && (!json_is_object(j) || !json_is_integer(json_object_get(j, "fileKeyReserved")) ||
		  json_integer_value(json_object_get(j, "fileKeyReserved")) < 0)) {
		log_error(
		    "sequence: %s is not a kelp sequence file (want an object with a non-negative fileKeyReserved); refusing to start, as file keys could repeat",
		    s->path);
		json_decref(j);
		sequence_close(s);
		return -EINVAL;
	}
	if (j) {
		json_int_t reserved = json_integer_value(json_object_get(j, "fileKeyReserved"));
		json_int_t vid = json_integer_value(json_object_get(j, "maxVolumeId"));
		const char *tid = json_string_value(json_object_get(j, "topologyId"));

		if (reserved > 0)
			s->next_key = (uint64_t)reserved;
		s->reserved_end = s->next_key;
		s->max_volume_id = vid > 0 ? (uint32_t)vid : 0;
		snprintf(s->topology_id, sizeof(s->topology_id), "%s", tid ? tid : "");
		json_decref(j);
	} else if (access(s->path, F_OK) == 0) {
		log_error(
		    "sequence: %s is unreadable (%s); refusing to start, as file keys could repeat",
		    s->path, err.text);
		sequence_close(s);
		return -EINVAL;
	}
	if (!s->topology_id[0]) {
		make_uuid(s->topology_id);
		ret = persist(s, s->reserved_end, s->max_volume_id);
		if (ret < 0) {
			sequence_close(s);
			return ret;
		}
	}
	*out = s;
	return 0;
}

int sequence_open_replicated(const struct sequence_replication *r, struct sequence **out)
{
	struct sequence *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->replicated = true;
	s->repl = *r;
	s->next_key = 1;
	*out = s;
	return 0;
}

int sequence_apply(struct sequence *s, const void *cmd, size_t len)
{
	json_t *j = json_loadb(cmd, len, 0, NULL);
	json_int_t reserved, vid;
	const char *tid;

	if (!json_is_object(j)) {
		json_decref(j);
		return -EINVAL;
	}
	reserved = json_integer_value(json_object_get(j, "fileKeyReserved"));
	vid = json_integer_value(json_object_get(j, "maxVolumeId"));
	tid = json_string_value(json_object_get(j, "topologyId"));
	pthread_mutex_lock(&s->lock);
	if (reserved > 0 && (uint64_t)reserved > s->reserved_end)
		s->reserved_end = (uint64_t)reserved;
	if (vid > 0 && (uint64_t)vid > s->max_volume_id)
		s->max_volume_id = (uint32_t)vid;
	if (tid && *tid && !s->topology_id[0])
		snprintf(s->topology_id, sizeof(s->topology_id), "%s", tid);
	pthread_mutex_unlock(&s->lock);
	json_decref(j);
	return 0;
}

int sequence_snapshot(struct sequence *s, void **buf, size_t *len)
{
	char *text;
	json_t *j;

	pthread_mutex_lock(&s->lock);
	j = json_pack("{s:I,s:I,s:s}", "fileKeyReserved", (json_int_t)s->reserved_end,
		      "maxVolumeId", (json_int_t)s->max_volume_id, "topologyId", s->topology_id);
	pthread_mutex_unlock(&s->lock);
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	*buf = text;
	*len = strlen(text);
	return 0;
}

void sequence_on_leader(struct sequence *s, bool leader)
{
	pthread_mutex_lock(&s->lock);
	/* Skip everything reserved so far: the old leader may have used any of it. */
	if (s->next_key < s->reserved_end)
		s->next_key = s->reserved_end;
	/* A new leader may not have applied every committed entry yet (Raft tells it the
	 * commit index only once an entry of its own term commits): an old leader's last
	 * reservation or volume id may still be missing here. */
	if (leader && s->replicated)
		s->catch_up = true;
	pthread_mutex_unlock(&s->lock);
}

/*
 * A new leader's first hand-out commits an entry of its own first: once it is applied,
 * so is every entry before it, and everything reserved by earlier leaders is skipped.
 */
static int catch_up(struct sequence *s)
{
	bool need;
	int ret;

	pthread_mutex_lock(&s->lock);
	need = s->catch_up;
	pthread_mutex_unlock(&s->lock);
	if (!need)
		return 0;
	ret = propose_state(s, 0, 0, NULL);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&s->lock);
	s->catch_up = false;
	if (s->next_key < s->reserved_end)
		s->next_key = s->reserved_end;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int sequence_ensure_topology_id(struct sequence *s)
{
	char id[40];
	bool has;

	if (!s->replicated)
		return 0;
	pthread_mutex_lock(&s->lock);
	has = s->topology_id[0] != '\0';
	pthread_mutex_unlock(&s->lock);
	if (has)
		return 0;
	make_uuid(id);
	return propose_state(s, 0, 0, id);
}

void sequence_close(struct sequence *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s->dir);
	free(s);
}

int sequence_next_keys(struct sequence *s, uint64_t count, uint64_t *first)
{
	int ret = 0;

	if (count == 0)
		count = 1;
	if (s->replicated && (ret = catch_up(s)) < 0)
		return ret;
	pthread_mutex_lock(&s->lock);
	while (s->replicated && s->next_key + count > s->reserved_end) {
		uint64_t end = (s->next_key > s->reserved_end ? s->next_key : s->reserved_end) +
			       count + SEQUENCE_BLOCK;

		pthread_mutex_unlock(&s->lock);
		ret = propose_state(s, end, 0, NULL);
		pthread_mutex_lock(&s->lock);
		if (ret < 0) {
			pthread_mutex_unlock(&s->lock);
			return ret;
		}
	}
	if (!s->replicated && s->next_key + count > s->reserved_end) {
		uint64_t end = s->next_key + count + SEQUENCE_BLOCK;

		ret = persist(s, end, s->max_volume_id);
		if (ret == 0)
			s->reserved_end = end;
	}
	if (ret == 0) {
		*first = s->next_key;
		s->next_key += count;
	}
	pthread_mutex_unlock(&s->lock);
	return ret < 0 ? -EIO : 0;
}

void sequence_set_max_key(struct sequence *s, uint64_t max)
{
	if (max >= SEQUENCE_MAX_KEY) {
		log_warn("sequence: ignoring a reported file key %" PRIu64 " above 2^62", max);
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (max >= s->next_key)
		s->next_key = max + 1;
	pthread_mutex_unlock(&s->lock);
}

int sequence_next_volume_id(struct sequence *s, uint32_t *vid)
{
	int ret;

	if (s->replicated) {
		uint32_t want;

		ret = catch_up(s);
		if (ret < 0)
			return ret;
		pthread_mutex_lock(&s->lock);
		want = s->max_volume_id + 1;
		pthread_mutex_unlock(&s->lock);
		ret = propose_state(s, 0, want, NULL);
		if (ret == 0)
			*vid = want;
		return ret;
	}
	pthread_mutex_lock(&s->lock);
	ret = persist(s, s->reserved_end, s->max_volume_id + 1);
	if (ret == 0)
		*vid = ++s->max_volume_id;
	pthread_mutex_unlock(&s->lock);
	return ret < 0 ? -EIO : 0;
}

void sequence_set_max_volume_id(struct sequence *s, uint32_t max)
{
	pthread_mutex_lock(&s->lock);
	if (max > s->max_volume_id)
		s->max_volume_id = max;
	pthread_mutex_unlock(&s->lock);
}

uint32_t sequence_max_volume_id(struct sequence *s)
{
	uint32_t v;

	pthread_mutex_lock(&s->lock);
	v = s->max_volume_id;
	pthread_mutex_unlock(&s->lock);
	return v;
}

const char *sequence_topology_id(struct sequence *s)
{
	return s->topology_id;
}
