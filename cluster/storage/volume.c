#include "cluster/storage/volume.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"
#include "cluster/storage/needle_map.h"

/* Records up to this size are read whole into memory; larger ones are streamed. */
#define SMALL_READ_LIMIT (1u << 20)
/* A needle claiming more than this while scanning a .dat tail is treated as garbage. */
#define SCAN_RECORD_LIMIT (1100ull << 20)

struct volume {
	char *dir;
	char *collection;
	uint32_t vid;
	struct volume_options opt;

	pthread_rwlock_t lock; /* map, fds, counters, compaction state */
	int dat_fd;
	int idx_fd;
	uint8_t version;
	uint8_t replica_placement;
	struct ttl ttl;
	uint16_t compact_revision;
	uint64_t data_start;
	struct needle_map map;
	uint64_t file_count, file_bytes, delete_count, deleted_bytes, max_file_key;
	int64_t modified_at;

	pthread_mutex_t append_lock; /* dat_size, idx_size, last_append_ns, write_gen */
	uint64_t dat_size;
	uint64_t idx_size;
	uint64_t last_append_ns;
	uint64_t write_gen;

	pthread_mutex_t sync_lock; /* group fsync */
	pthread_cond_t sync_cond;
	bool syncing;
	uint64_t synced_gen;

	atomic_bool read_only;
	/* The disk is (nearly) full: writes are refused with -ENOSPC until it has room
	 * again (the store checks, volume_set_low_space). space_needed: the record that
	 * did not fit. */
	atomic_bool low_space;
	_Atomic uint64_t space_needed;
	bool compacting; /* protected by append_lock */
	uint64_t compact_idx_size;
	uint16_t compact_from_revision;
};

int volume_file_name(const char *dir, const char *collection, uint32_t vid, const char *ext,
		     char *buf, size_t cap)
{
	int n;

	if (collection && *collection)
		n = snprintf(buf, cap, "%s/%s_%u%s", dir, collection, vid, ext);
	else
		n = snprintf(buf, cap, "%s/%u%s", dir, vid, ext);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static void file_name(const struct volume *v, const char *ext, char *buf, size_t cap)
{
	if (volume_file_name(v->dir, v->collection, v->vid, ext, buf, cap) < 0)
		buf[0] = '\0';
}

static void encode_idx_entry(uint8_t *p, uint64_t key, uint32_t offset, uint32_t size)
{
	put_be64(p, key);
	put_be32(p + 8, offset);
	put_be32(p + 12, size);
}

static void encode_super_block(const struct volume *v, uint16_t revision, uint8_t *sb)
{
	sb[0] = v->version;
	sb[1] = v->replica_placement;
	sb[2] = v->ttl.count;
	sb[3] = v->ttl.unit;
	put_be16(sb + 4, revision);
	put_be16(sb + 6, 0);
}

static void reset_state(struct volume *v)
{
	needle_map_release(&v->map);
	v->file_count = v->file_bytes = v->delete_count = v->deleted_bytes = 0;
	v->max_file_key = 0;
}

/* Applies one index entry to the map and the counters. Caller holds lock (or owns v). */
static int apply_entry(struct volume *v, uint64_t key, uint32_t offset, uint32_t size)
{
	struct needle_map_entry old;
	int ret;

	if (key > v->max_file_key)
		v->max_file_key = key;
	if (offset == 0 || size == VOLUME_TOMBSTONE_SIZE) {
		if (needle_map_delete(&v->map, key, &old)) {
			v->delete_count++;
			v->deleted_bytes += old.size;
		}
		return 0;
	}
	ret = needle_map_set(&v->map, key, offset, size, &old);
	if (ret < 0)
		return ret;
	v->file_count++;
	v->file_bytes += size;
	if (ret == 1) {
		v->delete_count++;
		v->deleted_bytes += old.size;
	}
	return 0;
}

static uint64_t entry_end(const struct volume *v, uint32_t offset, uint32_t size)
{
	if (offset == 0)
		return 0;
	return (uint64_t)offset * 8 +
	       needle_disk_size(size == VOLUME_TOMBSTONE_SIZE ? 0 : size, v->version);
}

static int append_idx(struct volume *v, uint64_t key, uint32_t offset, uint32_t size)
{
	uint8_t e[VOLUME_IDX_ENTRY_SIZE];
	int ret;

	encode_idx_entry(e, key, offset, size);
	ret = pwrite_all(v->idx_fd, e, sizeof(e), v->idx_size);
	if (ret == 0)
		v->idx_size += sizeof(e);
	return ret;
}

/*
 * Loads .idx into the map. Returns the end of the furthest needle it references, or
 * 0 when the index disagrees with .dat and must be rebuilt; -errno on I/O errors.
 */
static int64_t load_index(struct volume *v)
{
	enum { BATCH = 4096 };
	uint8_t *buf = malloc(BATCH * VOLUME_IDX_ENTRY_SIZE);
	uint64_t max_end = v->data_start, pos = 0, whole, last_key = 0;
	uint32_t last_offset = 0, last_size = 0;
	bool zero_key_warned = false;
	struct stat st;
	int ret;

	if (!buf)
		return -ENOMEM;
	if (fstat(v->idx_fd, &st) < 0) {
		free(buf);
		return -errno;
	}
	whole = (uint64_t)st.st_size - (uint64_t)st.st_size % VOLUME_IDX_ENTRY_SIZE;
	if (whole != (uint64_t)st.st_size) {
		log_warn("volume %u: .idx has %" PRIu64
			 " stray bytes after the last whole entry, cutting them",
			 v->vid, (uint64_t)st.st_size - whole);
		if (ftruncate(v->idx_fd, (off_t)whole) < 0) {
			free(buf);
			return -errno;
		}
	}
	while (pos < whole) {
		size_t n = whole - pos > BATCH * VOLUME_IDX_ENTRY_SIZE
			       ? BATCH * VOLUME_IDX_ENTRY_SIZE
			       : whole - pos;

		ret = pread_all(v->idx_fd, buf, n, pos);
		if (ret < 0) {
			free(buf);
			return ret;
		}
		for (size_t i = 0; i < n; i += VOLUME_IDX_ENTRY_SIZE) {
			uint64_t key = get_be64(buf + i), end;
			uint32_t offset = get_be32(buf + i + 8), size = get_be32(buf + i + 12);

			if (key == 0) {
				/* Never issued: a damaged entry. Its needle, if any, is found again by the tail scan or a rebuild. */
				if (!zero_key_warned)
					log_warn("volume %u: .idx entry %" PRIu64
						 " has key 0, ignoring it",
						 v->vid, (pos + i) / VOLUME_IDX_ENTRY_SIZE);
				zero_key_warned = true;
				continue;
			}
			end = entry_end(v, offset, size);
			if (end > v->dat_size ||
			    (offset != 0 && (uint64_t)offset * 8 < v->data_start)) {
				log_warn(
				    "volume %u: .idx entry %" PRIu64
				    " points past the end of .dat, rebuilding the index from .dat",
				    v->vid, (pos + i) / VOLUME_IDX_ENTRY_SIZE);
				free(buf);
				return 0;
			}
			/*
			 * Needles are appended in order, so the tail starts after the entry with
			 * the highest offset; a damaged Size elsewhere must not move it.
			 */
			if (offset != 0 && offset >= last_offset)
				max_end = end;
			ret = apply_entry(v, key, offset, size);
			if (ret < 0) {
				free(buf);
				return ret;
			}
			if (offset != 0 && offset >= last_offset) {
				last_key = key;
				last_offset = offset;
				last_size = size;
			}
		}
		pos += n;
	}
	free(buf);
	v->idx_size = whole;
	if (last_offset != 0) {
		uint8_t h[NEEDLE_HEADER_SIZE];
		uint32_t cookie, size;
		uint64_t id;

		ret = pread_all(v->dat_fd, h, sizeof(h), (uint64_t)last_offset * 8);
		if (ret < 0)
			return ret;
		needle_parse_header(h, &cookie, &id, &size);
		if (id != last_key || (last_size != VOLUME_TOMBSTONE_SIZE && size != last_size)) {
			log_warn(
			    "volume %u: last .idx entry does not match .dat, rebuilding the index from .dat",
			    v->vid);
			return 0;
		}
		/* The tail starts after the needle really there (a deletion entry may point at
		 * the deleted needle itself rather than at a tombstone). */
		if ((uint64_t)last_offset * 8 + needle_disk_size(size, v->version) > v->dat_size) {
			log_warn(
			    "volume %u: the last needle runs past the end of .dat, rebuilding the index from .dat",
			    v->vid);
			return 0;
		}
		max_end = (uint64_t)last_offset * 8 + needle_disk_size(size, v->version);
		last_size = size;
		/* Appends continue after the last append time, even if the clock went back. */
		if (v->version == NEEDLE_VERSION_3) {
			uint8_t t[8];
			uint64_t tail = (uint64_t)last_offset * 8 + NEEDLE_HEADER_SIZE + last_size +
					NEEDLE_CHECKSUM_SIZE;

			if (pread_all(v->dat_fd, t, sizeof(t), tail) == 0 &&
			    get_be64(t) > v->last_append_ns)
				v->last_append_ns = get_be64(t);
		}
	}
	return (int64_t)max_end;
}

/*
 * Indexes the needles found in .dat from pos on (written after the last indexed one)
 * and cuts a torn tail. Needles with a bad checksum are logged and left unindexed.
 */
static int scan_dat(struct volume *v, uint64_t pos)
{
	uint8_t *rec = NULL;
	size_t rec_cap = 0;
	uint64_t indexed = 0;
	int ret = 0;

	while (pos < v->dat_size) {
		uint8_t h[NEEDLE_HEADER_SIZE];
		struct needle n;
		uint32_t cookie, size;
		uint64_t id, disk;

		if (v->dat_size - pos < NEEDLE_HEADER_SIZE)
			break;
		ret = pread_all(v->dat_fd, h, sizeof(h), pos);
		if (ret < 0)
			goto out;
		needle_parse_header(h, &cookie, &id, &size);
		disk = needle_disk_size(size, v->version);
		if (id == 0 || disk > SCAN_RECORD_LIMIT || pos + disk > v->dat_size)
			break;
		if (disk > rec_cap) {
			uint8_t *p = realloc(rec, disk);

			if (!p) {
				ret = -ENOMEM;
				goto out;
			}
			rec = p;
			rec_cap = disk;
		}
		ret = pread_all(v->dat_fd, rec, disk, pos);
		if (ret < 0)
			goto out;
		ret = needle_decode(rec, disk, v->version, true, &n);
		if (ret == -EINVAL || (v->version == NEEDLE_VERSION_3 && n.append_at_ns == 0))
			break;
		if (ret == -EBADMSG) {
			log_warn("volume %u: needle %" PRIx64 " at offset %" PRIu64
				 " has a bad checksum, not indexing it",
				 v->vid, id, pos);
		} else {
			uint32_t idx_size = size;

			/*
			 * Size 0 is a tombstone: kelp writes empty blobs with a body (DataSize 0
			 * plus their flags), so only deletions have no body. (SeaweedFS writes
			 * empty blobs without one; losing such a blob's index entry in a crash
			 * makes it read as deleted, never the reverse.)
			 */
			if (size == 0)
				idx_size = VOLUME_TOMBSTONE_SIZE;
			ret = append_idx(v, id, (uint32_t)(pos / 8), idx_size);
			if (ret < 0)
				goto out;
			ret = apply_entry(v, id, (uint32_t)(pos / 8), idx_size);
			if (ret < 0)
				goto out;
			if (v->version == NEEDLE_VERSION_3 && n.append_at_ns > v->last_append_ns)
				v->last_append_ns = n.append_at_ns;
			indexed++;
		}
		pos += disk;
	}
	ret = 0;
	if (indexed)
		log_warn("volume %u: indexed %" PRIu64 " needles found after the last .idx entry",
			 v->vid, indexed);
	if (pos < v->dat_size) {
		log_warn("volume %u: cutting a torn tail of %" PRIu64 " bytes at offset %" PRIu64
			 " of .dat",
			 v->vid, v->dat_size - pos, pos);
		if (ftruncate(v->dat_fd, (off_t)pos) < 0) {
			ret = -errno;
			goto out;
		}
		v->dat_size = pos;
	}
out:
	free(rec);
	return ret;
}

static int read_super_block(struct volume *v)
{
	uint8_t sb[VOLUME_SUPER_BLOCK_SIZE];
	int ret = pread_all(v->dat_fd, sb, sizeof(sb), 0);

	if (ret < 0)
		return ret == -ENODATA ? -EINVAL : ret;
	if (sb[0] < NEEDLE_VERSION_1 || sb[0] > NEEDLE_VERSION_3)
		return -EINVAL;
	v->version = sb[0];
	v->replica_placement = sb[1];
	v->ttl.count = sb[2];
	v->ttl.unit = sb[3];
	v->compact_revision = get_be16(sb + 4);
	v->data_start = VOLUME_SUPER_BLOCK_SIZE + (v->version > 1 ? get_be16(sb + 6) : 0);
	return 0;
}

/* Opens .dat/.idx, reads the super block, loads and repairs the index. */
static int load(struct volume *v, bool create)
{
	char path[4096];
	struct stat st;
	int64_t end;
	int ret, flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);

	file_name(v, ".dat", path, sizeof(path));
	v->dat_fd = open(path, flags, 0644);
	if (v->dat_fd < 0)
		return -errno;
	if (fstat(v->dat_fd, &st) < 0)
		return -errno;
	if (st.st_size == 0) {
		uint8_t sb[VOLUME_SUPER_BLOCK_SIZE];

		if (!create)
			return -EINVAL;
		v->version = NEEDLE_VERSION_3;
		v->replica_placement = v->opt.replica_placement;
		v->ttl = v->opt.ttl;
		v->compact_revision = 0;
		encode_super_block(v, 0, sb);
		ret = pwrite_all(v->dat_fd, sb, sizeof(sb), 0);
		if (ret < 0)
			return ret;
		if (fsync(v->dat_fd) < 0)
			return -errno;
		st.st_size = sizeof(sb);
	}
	ret = read_super_block(v);
	if (ret < 0) {
		log_error("volume %u: %s has a bad super block", v->vid, path);
		return ret;
	}
	v->dat_size = (uint64_t)st.st_size;
	v->modified_at = st.st_mtime;
	file_name(v, ".idx", path, sizeof(path));
	v->idx_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (v->idx_fd < 0)
		return -errno;
	v->idx_size = 0;
	end = load_index(v);
	if (end < 0)
		return (int)end;
	if (end == 0) {
		reset_state(v);
		if (ftruncate(v->idx_fd, 0) < 0)
			return -errno;
		v->idx_size = 0;
		end = (int64_t)v->data_start;
	}
	ret = scan_dat(v, (uint64_t)end);
	if (ret < 0)
		return ret;
	return 0;
}

static void close_files(struct volume *v)
{
	if (v->dat_fd >= 0)
		close(v->dat_fd);
	if (v->idx_fd >= 0)
		close(v->idx_fd);
	v->dat_fd = v->idx_fd = -1;
}

/* Finishes or undoes a vacuum interrupted by a crash (see the top of volume.h). */
static int recover_compaction(struct volume *v)
{
	char cpc[4096], cpd[4096], cpx[4096], dat[4096], idx[4096];

	file_name(v, ".cpc", cpc, sizeof(cpc));
	file_name(v, ".cpd", cpd, sizeof(cpd));
	file_name(v, ".cpx", cpx, sizeof(cpx));
	file_name(v, ".dat", dat, sizeof(dat));
	file_name(v, ".idx", idx, sizeof(idx));
	if (access(cpc, F_OK) == 0) {
		log_warn("volume %u: finishing an interrupted vacuum commit", v->vid);
		if (access(cpd, F_OK) == 0 && rename(cpd, dat) < 0)
			return -errno;
		if (access(cpx, F_OK) == 0 && rename(cpx, idx) < 0)
			return -errno;
		fsync_dir(v->dir);
		unlink(cpc);
		return fsync_dir(v->dir);
	}
	if (unlink(cpd) == 0 || unlink(cpx) == 0)
		log_warn("volume %u: removed the files of an unfinished vacuum", v->vid);
	unlink(cpx);
	return 0;
}

int volume_open(const char *dir, const char *collection, uint32_t vid,
		const struct volume_options *opt, struct volume **out)
{
	struct volume *v = calloc(1, sizeof(*v));
	char path[4096];
	int ret;

	if (!v)
		return -ENOMEM;
	v->dir = strdup(dir);
	v->collection = strdup(collection ? collection : "");
	v->vid = vid;
	v->opt = *opt;
	if (v->opt.max_size == 0 || v->opt.max_size > VOLUME_MAX_SIZE)
		v->opt.max_size = VOLUME_MAX_SIZE;
	v->dat_fd = v->idx_fd = -1;
	needle_map_init(&v->map);
	pthread_rwlock_init(&v->lock, NULL);
	pthread_mutex_init(&v->append_lock, NULL);
	pthread_mutex_init(&v->sync_lock, NULL);
	pthread_cond_init(&v->sync_cond, NULL);
	if (!v->dir || !v->collection) {
		ret = -ENOMEM;
		goto fail;
	}
	if (volume_file_name(dir, v->collection, vid, ".dat", path, sizeof(path)) < 0) {
		ret = -ENAMETOOLONG;
		goto fail;
	}
	if (!opt->create && access(path, F_OK) != 0) {
		ret = -ENOENT;
		goto fail;
	}
	ret = recover_compaction(v);
	if (ret < 0)
		goto fail;
	ret = load(v, opt->create);
	if (ret < 0)
		goto fail;
	*out = v;
	return 0;
fail:
	log_error("volume %u in %s: cannot open: %s", vid, dir, strerror(-ret));
	volume_close(v);
	return ret;
}

void volume_close(struct volume *v)
{
	if (!v)
		return;
	close_files(v);
	needle_map_release(&v->map);
	pthread_rwlock_destroy(&v->lock);
	pthread_mutex_destroy(&v->append_lock);
	pthread_mutex_destroy(&v->sync_lock);
	pthread_cond_destroy(&v->sync_cond);
	free(v->dir);
	free(v->collection);
	free(v);
}

int volume_destroy(struct volume *v)
{
	static const char *const exts[] = {".dat", ".idx", ".cpd", ".cpx", ".cpc"};
	char path[4096];
	int ret = 0;

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		file_name(v, exts[i], path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			ret = -errno;
	}
	volume_close(v);
	return ret;
}

uint32_t volume_id(const struct volume *v)
{
	return v->vid;
}

const char *volume_collection(const struct volume *v)
{
	return v->collection;
}

void volume_get_info(struct volume *v, struct volume_info *out)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&v->lock);
	out->id = v->vid;
	snprintf(out->collection, sizeof(out->collection), "%s", v->collection);
	out->size = __atomic_load_n(&v->dat_size, __ATOMIC_RELAXED);
	out->file_count = v->file_count;
	out->delete_count = v->delete_count;
	out->deleted_bytes = v->deleted_bytes;
	out->live_count = v->map.count;
	out->low_space = atomic_load(&v->low_space);
	out->read_only = atomic_load(&v->read_only) || out->low_space;
	out->replica_placement = v->replica_placement;
	out->ttl = v->ttl;
	out->version = v->version;
	out->compact_revision = v->compact_revision;
	out->max_file_key = v->max_file_key;
	out->modified_at_second = v->modified_at;
	out->compacting = v->compacting;
	pthread_rwlock_unlock(&v->lock);
}

void volume_set_read_only(struct volume *v, bool read_only)
{
	atomic_store(&v->read_only, read_only);
}

bool volume_is_read_only(struct volume *v)
{
	return atomic_load(&v->read_only);
}

uint64_t volume_space_needed(struct volume *v)
{
	return atomic_load(&v->space_needed);
}

bool volume_set_low_space(struct volume *v, bool low)
{
	bool was = atomic_exchange(&v->low_space, low);

	if (!low)
		atomic_store(&v->space_needed, 0);
	if (low != was)
		log_info("volume %u: %s", v->vid,
			 low ? "its disk is full: read-only until it has room"
			     : "its disk has room again: writable");
	return low != was;
}

/* A write that did not fit: refuse writes until the disk has room for it. */
static void out_of_space(struct volume *v, const char *what, uint64_t needed)
{
	log_warn("volume %u: %s: no space left on the disk; writes are refused until it has "
		 "room",
		 v->vid, what);
	atomic_store(&v->space_needed, needed ? needed : 1);
	atomic_store(&v->low_space, true);
}

size_t volume_map_memory(struct volume *v)
{
	size_t n;

	pthread_rwlock_rdlock(&v->lock);
	n = needle_map_memory(&v->map);
	pthread_rwlock_unlock(&v->lock);
	return n;
}

bool volume_expired(struct volume *v)
{
	uint64_t secs = ttl_seconds(v->ttl);

	return secs > 0 && (uint64_t)(now_ns() / 1000000000ull) > (uint64_t)v->modified_at + secs;
}

static void fail_read_only(struct volume *v, const char *what, int err)
{
	log_error("volume %u: %s failed: %s; the volume is now read-only", v->vid, what,
		  strerror(-err));
	atomic_store(&v->read_only, true);
}

/* Waits until every write up to generation gen is on disk (group fsync). */
static int group_sync(struct volume *v, uint64_t gen)
{
	int ret = 0;

	pthread_mutex_lock(&v->sync_lock);
	while (v->synced_gen < gen && ret == 0) {
		if (v->syncing) {
			pthread_cond_wait(&v->sync_cond, &v->sync_lock);
			continue;
		}
		v->syncing = true;
		pthread_mutex_unlock(&v->sync_lock);

		pthread_mutex_lock(&v->append_lock);
		uint64_t target = v->write_gen;
		pthread_mutex_unlock(&v->append_lock);
		pthread_rwlock_rdlock(&v->lock);
		if (fdatasync(v->dat_fd) < 0 || fdatasync(v->idx_fd) < 0)
			ret = -errno;
		pthread_rwlock_unlock(&v->lock);

		pthread_mutex_lock(&v->sync_lock);
		v->syncing = false;
		if (ret == 0 && target > v->synced_gen)
			v->synced_gen = target;
		pthread_cond_broadcast(&v->sync_cond);
	}
	pthread_mutex_unlock(&v->sync_lock);
	if (ret < 0)
		fail_read_only(v, "fsync", ret);
	return ret;
}

int volume_sync(struct volume *v)
{
	uint64_t gen;

	pthread_mutex_lock(&v->append_lock);
	gen = v->write_gen;
	pthread_mutex_unlock(&v->append_lock);
	return group_sync(v, gen);
}

/* Reads the cookie of the needle at an index offset. */
static int read_cookie(struct volume *v, uint32_t offset, uint32_t *cookie)
{
	uint8_t h[NEEDLE_HEADER_SIZE];
	uint32_t size;
	uint64_t id;
	int ret = pread_all(v->dat_fd, h, sizeof(h), (uint64_t)offset * 8);

	if (ret < 0)
		return ret == -ENODATA ? -EIO : ret;
	needle_parse_header(h, cookie, &id, &size);
	return 0;
}

/* Bodies up to this size are copied into one record buffer and written at once. */
#define SMALL_RECORD (64u << 10)

/* Copies len bytes from a spooled upload into .dat. */
static int copy_from_fd(int dst, uint64_t dst_off, int src, uint64_t src_off, uint64_t len)
{
	uint8_t buf[1 << 16];

	while (len > 0) {
		loff_t in = (loff_t)src_off, o = (loff_t)dst_off;
		ssize_t n = copy_file_range(src, &in, dst, &o, len, 0);

		if (n <= 0) {
			/* Not supported across these files (or short): plain copy. */
			size_t chunk = len > sizeof(buf) ? sizeof(buf) : len;
			int ret = pread_all(src, buf, chunk, src_off);

			if (ret < 0)
				return ret == -ENODATA ? -EIO : ret;
			ret = pwrite_all(dst, buf, chunk, dst_off);
			if (ret < 0)
				return ret;
			n = (ssize_t)chunk;
		}
		src_off += (uint64_t)n;
		dst_off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* True when the stored needle at e has exactly data (for the "unchanged" shortcut). */
static bool same_content(struct volume *v, const struct needle_map_entry *e, const struct needle *n,
			 const uint8_t *data)
{
	uint64_t disk = needle_disk_size(e->size, v->version);
	struct needle old;
	uint8_t *buf;
	bool same = false;

	if (disk > SMALL_READ_LIMIT || !(buf = malloc(disk)))
		return false;
	if (pread_all(v->dat_fd, buf, disk, (uint64_t)e->offset * 8) == 0 &&
	    needle_decode(buf, disk, v->version, false, &old) == 0)
		same = old.checksum == n->checksum && old.data_size == n->data_size &&
		       (n->data_size == 0 || memcmp(old.data, data, n->data_size) == 0);
	free(buf);
	return same;
}

int volume_write(struct volume *v, struct needle *n, const struct volume_data *data, bool fsync,
		 bool *unchanged)
{
	struct needle_map_entry e;
	uint8_t *rec = NULL, head[NEEDLE_HEADER_SIZE + 4], *tail_buf = NULL;
	size_t head_len, meta_len, tail_len;
	uint64_t disk, offset, gen;
	bool exists;
	int ret;

	if (unchanged)
		*unchanged = false;
	if (atomic_load(&v->read_only))
		return -EROFS;
	if (atomic_load(&v->low_space))
		return -ENOSPC;
	if (data->len > NEEDLE_MAX_DATA_SIZE)
		return -EFBIG;
	n->data_size = data->len;
	n->checksum = data->crc;
	if (v->ttl.count && !n->ttl.count)
		n->ttl = v->ttl;
	needle_compute_size(n);
	disk = needle_disk_size(n->size, v->version);
	if (v->version != NEEDLE_VERSION_3)
		return -EROFS; /* kelp appends only to version 3 volumes */

	pthread_rwlock_rdlock(&v->lock);
	exists = needle_map_get(&v->map, n->id, &e);
	if (exists) {
		uint32_t cookie;

		ret = read_cookie(v, e.offset, &cookie);
		if (ret == 0 && cookie != n->cookie)
			ret = -EPERM;
		if (ret == 0 && data->mem && v->ttl.count == 0 && e.size == n->size &&
		    same_content(v, &e, n, data->mem)) {
			pthread_rwlock_unlock(&v->lock);
			if (unchanged)
				*unchanged = true;
			return 0;
		}
		if (ret < 0) {
			pthread_rwlock_unlock(&v->lock);
			return ret;
		}
	}
	pthread_rwlock_unlock(&v->lock);

	/* Encode everything but the append time outside the lock. */
	meta_len = needle_meta_size(n);
	tail_len = (size_t)(disk - NEEDLE_HEADER_SIZE - n->size);
	if (data->mem && data->len <= SMALL_RECORD) {
		rec = malloc(disk);
		if (!rec)
			return -ENOMEM;
		head_len = needle_encode_head(n, rec);
		memcpy(rec + head_len, data->mem, data->len);
		needle_encode_meta(n, rec + head_len + data->len);
	} else {
		tail_buf = malloc(meta_len + tail_len);
		if (!tail_buf)
			return -ENOMEM;
		head_len = needle_encode_head(n, head);
		needle_encode_meta(n, tail_buf);
	}

	pthread_mutex_lock(&v->append_lock);
	offset = v->dat_size;
	if (offset + disk > v->opt.max_size) {
		pthread_mutex_unlock(&v->append_lock);
		free(rec);
		free(tail_buf);
		return -EFBIG;
	}
	n->append_at_ns = now_ns();
	if (n->append_at_ns <= v->last_append_ns)
		n->append_at_ns = v->last_append_ns + 1;
	if (rec) {
		needle_encode_tail(n, v->version, rec + NEEDLE_HEADER_SIZE + n->size);
		ret = pwrite_all(v->dat_fd, rec, disk, offset);
	} else if (data->mem) {
		/* A big body is written from where it is, not copied into a record. */
		struct iovec iov[3] = {{head, head_len},
				       {(void *)data->mem, data->len},
				       {tail_buf, meta_len + tail_len}};

		needle_encode_tail(n, v->version, tail_buf + meta_len);
		ret = pwritev_all(v->dat_fd, iov, 3, offset);
	} else {
		needle_encode_tail(n, v->version, tail_buf + meta_len);
		ret = pwrite_all(v->dat_fd, head, head_len, offset);
		if (ret == 0)
			ret = copy_from_fd(v->dat_fd, offset + head_len, data->fd, data->fd_offset,
					   data->len);
		if (ret == 0)
			ret = pwrite_all(v->dat_fd, tail_buf, meta_len + tail_len,
					 offset + head_len + data->len);
	}
	if (ret == 0)
		ret = append_idx(v, n->id, (uint32_t)(offset / 8), n->size);
	if (ret < 0) {
		if (ftruncate(v->dat_fd, (off_t)offset) < 0) {
			/* the tail scan at the next open cuts it */
		}
		if (ftruncate(v->idx_fd, (off_t)v->idx_size) < 0) {
			/* likewise */
		}
		if (ret == -ENOSPC || ret == -EDQUOT)
			out_of_space(v, "append", disk);
		else
			fail_read_only(v, "append", ret);
		pthread_mutex_unlock(&v->append_lock);
		free(rec);
		free(tail_buf);
		return ret == -ENOSPC || ret == -EDQUOT ? -ENOSPC : -EIO;
	}
	v->last_append_ns = n->append_at_ns;
	__atomic_store_n(&v->dat_size, offset + disk, __ATOMIC_RELAXED);
	pthread_rwlock_wrlock(&v->lock);
	ret = apply_entry(v, n->id, (uint32_t)(offset / 8), n->size);
	v->modified_at = (int64_t)(n->append_at_ns / 1000000000ull);
	pthread_rwlock_unlock(&v->lock);
	gen = ++v->write_gen;
	pthread_mutex_unlock(&v->append_lock);
	free(rec);
	free(tail_buf);
	if (ret < 0)
		return ret;
	if (fsync || v->opt.fsync_every_write)
		return group_sync(v, gen);
	return 0;
}

int volume_delete(struct volume *v, uint64_t key, uint32_t cookie, uint32_t *size_out)
{
	struct needle_map_entry e;
	struct needle t = {.cookie = cookie, .id = key};
	uint8_t rec[64];
	uint64_t offset, disk = needle_disk_size(0, v->version);
	uint32_t stored_cookie;
	int ret;

	/* Allowed on a disk short of space (a tombstone is tiny; if it does not fit, it
	 * fails alone): deleting is how room is made. */
	if (atomic_load(&v->read_only))
		return -EROFS;
	pthread_mutex_lock(&v->append_lock);
	pthread_rwlock_rdlock(&v->lock);
	if (!needle_map_get(&v->map, key, &e)) {
		ret = -ENOENT;
	} else {
		ret = read_cookie(v, e.offset, &stored_cookie);
		if (ret == 0 && stored_cookie != cookie)
			ret = -EPERM;
	}
	pthread_rwlock_unlock(&v->lock);
	if (ret < 0)
		goto out;
	offset = v->dat_size;
	t.append_at_ns = now_ns();
	if (t.append_at_ns <= v->last_append_ns)
		t.append_at_ns = v->last_append_ns + 1;
	needle_encode(&t, v->version, rec, sizeof(rec));
	ret = pwrite_all(v->dat_fd, rec, disk, offset);
	if (ret == 0)
		ret = append_idx(v, key, (uint32_t)(offset / 8), VOLUME_TOMBSTONE_SIZE);
	if (ret < 0) {
		if (ftruncate(v->dat_fd, (off_t)offset) < 0) {
			/* cut at the next open */
		}
		if (ftruncate(v->idx_fd, (off_t)v->idx_size) < 0) {
			/* likewise */
		}
		if (ret == -ENOSPC || ret == -EDQUOT) {
			log_warn("volume %u: delete: no space left on the disk", v->vid);
			ret = -ENOSPC;
		} else {
			fail_read_only(v, "delete", ret);
			ret = -EIO;
		}
		goto out;
	}
	v->last_append_ns = t.append_at_ns;
	__atomic_store_n(&v->dat_size, offset + disk, __ATOMIC_RELAXED);
	pthread_rwlock_wrlock(&v->lock);
	apply_entry(v, key, (uint32_t)(offset / 8), VOLUME_TOMBSTONE_SIZE);
	v->modified_at = (int64_t)(t.append_at_ns / 1000000000ull);
	pthread_rwlock_unlock(&v->lock);
	v->write_gen++;
	if (size_out)
		*size_out = e.size;
out:
	pthread_mutex_unlock(&v->append_lock);
	return ret;
}

static bool needle_expired(const struct volume *v, const struct needle *n)
{
	struct ttl ttl = (n->flags & NEEDLE_FLAG_HAS_TTL) ? n->ttl : v->ttl;
	uint64_t secs = ttl_seconds(ttl), written;

	if (secs == 0)
		return false;
	written =
	    v->version == NEEDLE_VERSION_3 ? n->append_at_ns / 1000000000ull : n->last_modified;
	return now_ns() / 1000000000ull >= written + secs;
}

/* Streams the data of a large needle through the CRC. */
static int verify_large(int fd, uint64_t offset, uint32_t len, uint32_t stored)
{
	size_t cap = 1 << 20;
	uint8_t *buf = malloc(cap);
	uint32_t crc = 0;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (len > 0) {
		size_t chunk = len > cap ? cap : len;

		ret = pread_all(fd, buf, chunk, offset);
		if (ret < 0)
			break;
		crc = crc32c(crc, buf, chunk);
		offset += chunk;
		len -= (uint32_t)chunk;
	}
	free(buf);
	if (ret < 0)
		return ret == -ENODATA ? -EIO : ret;
	return needle_checksum_matches(stored, crc) ? 0 : -EBADMSG;
}

int volume_read(struct volume *v, uint64_t key, uint32_t cookie, struct volume_blob *out)
{
	struct needle_map_entry e;
	uint64_t disk, offset;
	int ret;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	pthread_rwlock_rdlock(&v->lock);
	if (!needle_map_get(&v->map, key, &e)) {
		pthread_rwlock_unlock(&v->lock);
		return -ENOENT;
	}
	disk = needle_disk_size(e.size, v->version);
	offset = (uint64_t)e.offset * 8;
	if (disk <= SMALL_READ_LIMIT || v->version == NEEDLE_VERSION_1) {
		out->buf = malloc(disk);
		if (!out->buf) {
			pthread_rwlock_unlock(&v->lock);
			return -ENOMEM;
		}
		ret = pread_all(v->dat_fd, out->buf, disk, offset);
		pthread_rwlock_unlock(&v->lock);
		if (ret == 0)
			ret = needle_decode(out->buf, disk, v->version, false, &out->n);
	} else {
		/* Header + DataSize, then the meta and tail after the data. */
		uint8_t h[NEEDLE_HEADER_SIZE + 4];

		ret = pread_all(v->dat_fd, h, sizeof(h), offset);
		if (ret == 0) {
			uint32_t data_size = get_be32(h + NEEDLE_HEADER_SIZE);
			uint64_t rest = disk - NEEDLE_HEADER_SIZE - 4 - (uint64_t)data_size;

			needle_parse_header(h, &out->n.cookie, &out->n.id, &out->n.size);
			if ((uint64_t)data_size + 5 > e.size) {
				ret = -EINVAL;
			} else if (!(out->buf = malloc(rest))) {
				ret = -ENOMEM;
			} else {
				ret = pread_all(v->dat_fd, out->buf, rest,
						offset + NEEDLE_HEADER_SIZE + 4 + data_size);
				out->fd = dup(v->dat_fd);
				if (out->fd < 0)
					ret = -errno;
			}
			if (ret == 0) {
				size_t meta = e.size - 4 - data_size;

				out->n.data_size = data_size;
				out->data_offset = offset + NEEDLE_HEADER_SIZE + 4;
				ret = needle_decode_meta(out->buf, meta, &out->n);
				out->n.checksum = get_be32(out->buf + meta);
				out->n.append_at_ns = get_be64(out->buf + meta + 4);
			}
		}
		pthread_rwlock_unlock(&v->lock);
	}
	if (ret == 0 && (out->n.id != key || out->n.size != e.size))
		ret = -EINVAL;
	if (ret == -EINVAL || ret == -ENODATA) {
		log_error("volume %u: needle %" PRIx64 " at offset %" PRIu64 " is damaged", v->vid,
			  key, offset);
		ret = -EBADMSG;
	}
	if (ret == 0 && out->n.cookie != cookie)
		ret = -EPERM;
	if (ret == 0 && needle_expired(v, &out->n))
		ret = -ENOENT;
	if (ret == 0 && out->n.data_size > 0) {
		if (out->fd < 0) {
			if (!needle_checksum_matches(out->n.checksum,
						     crc32c(0, out->n.data, out->n.data_size)))
				ret = -EBADMSG;
		} else {
			ret = verify_large(out->fd, out->data_offset, out->n.data_size,
					   out->n.checksum);
		}
		if (ret == -EBADMSG)
			log_error("volume %u: needle %" PRIx64 " at offset %" PRIu64
				  ": data on disk corrupted (checksum mismatch)",
				  v->vid, key, offset);
	}
	if (ret < 0)
		volume_blob_release(out);
	return ret;
}

void volume_blob_release(struct volume_blob *b)
{
	free(b->buf);
	b->buf = NULL;
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

double volume_garbage_ratio(struct volume *v)
{
	double r = 0;

	pthread_rwlock_rdlock(&v->lock);
	if (v->file_bytes > 0)
		r = (double)v->deleted_bytes / (double)v->file_bytes;
	pthread_rwlock_unlock(&v->lock);
	return r;
}

static int collect_entry(void *ctx, const struct needle_map_entry *e)
{
	struct {
		struct needle_map_entry *items;
		size_t n;
	} *list = ctx;

	list->items[list->n++] = *e;
	return 0;
}

static int by_offset(const void *a, const void *b)
{
	const struct needle_map_entry *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Copies the record at old offset `from` (Size `size`) to the end of the .cpd. */
static int copy_record(struct volume *v, int cpd, uint64_t *pos, uint32_t from, uint32_t size,
		       bool drop_expired, bool *dropped)
{
	uint64_t disk = needle_disk_size(size, v->version);
	uint8_t *buf = malloc(disk);
	int ret;

	*dropped = false;
	if (!buf)
		return -ENOMEM;
	ret = pread_all(v->dat_fd, buf, disk, (uint64_t)from * 8);
	if (ret == 0 && drop_expired) {
		struct needle n;

		if (needle_decode(buf, disk, v->version, false, &n) == 0 && needle_expired(v, &n))
			*dropped = true;
	}
	if (ret == 0 && !*dropped) {
		ret = pwrite_all(cpd, buf, disk, *pos);
		if (ret == 0)
			*pos += disk;
	}
	free(buf);
	return ret == -ENODATA ? -EIO : ret;
}

int volume_compact(struct volume *v)
{
	struct {
		struct needle_map_entry *items;
		size_t n;
	} list = {NULL, 0};
	char cpd_path[4096], cpx_path[4096];
	uint8_t sb[VOLUME_SUPER_BLOCK_SIZE];
	uint64_t pos = VOLUME_SUPER_BLOCK_SIZE, idx_pos = 0;
	int cpd = -1, cpx = -1, ret = 0;

	if (v->version != NEEDLE_VERSION_3)
		return -EROFS;
	pthread_mutex_lock(&v->append_lock);
	if (v->compacting) {
		pthread_mutex_unlock(&v->append_lock);
		return -EBUSY;
	}
	pthread_rwlock_wrlock(&v->lock);
	v->compacting = true;
	v->compact_idx_size = v->idx_size;
	v->compact_from_revision = v->compact_revision;
	list.items = malloc((v->map.count + 1) * sizeof(*list.items));
	if (list.items)
		needle_map_each(&v->map, collect_entry, &list);
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->append_lock);
	if (!list.items) {
		ret = -ENOMEM;
		goto out;
	}
	qsort(list.items, list.n, sizeof(*list.items), by_offset);

	file_name(v, ".cpd", cpd_path, sizeof(cpd_path));
	file_name(v, ".cpx", cpx_path, sizeof(cpx_path));
	cpd = open(cpd_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cpx = open(cpx_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (cpd < 0 || cpx < 0) {
		ret = -errno;
		goto out;
	}
	encode_super_block(v, (uint16_t)(v->compact_from_revision + 1), sb);
	ret = pwrite_all(cpd, sb, sizeof(sb), 0);
	for (size_t i = 0; i < list.n && ret == 0; i++) {
		uint64_t at = pos;
		bool dropped;
		uint8_t e[VOLUME_IDX_ENTRY_SIZE];

		pthread_rwlock_rdlock(&v->lock);
		ret = copy_record(v, cpd, &pos, list.items[i].offset, list.items[i].size, true,
				  &dropped);
		pthread_rwlock_unlock(&v->lock);
		if (ret < 0 || dropped)
			continue;
		encode_idx_entry(e, list.items[i].key, (uint32_t)(at / 8), list.items[i].size);
		ret = pwrite_all(cpx, e, sizeof(e), idx_pos);
		idx_pos += sizeof(e);
	}
	if (ret == 0 && (fdatasync(cpd) < 0 || fdatasync(cpx) < 0))
		ret = -errno;
	if (ret == 0 && v->opt.fault && v->opt.fault(VACUUM_STEP_COMPACT_COPIED))
		ret = -EINTR;
out:
	if (cpd >= 0)
		close(cpd);
	if (cpx >= 0)
		close(cpx);
	free(list.items);
	if (ret < 0 && ret != -EINTR) {
		log_error("volume %u: compaction failed: %s", v->vid, strerror(-ret));
		volume_cleanup_compact(v);
	}
	return ret;
}

/* Appends the index entries written since the compaction started to .cpd/.cpx. */
static int replay_since_compact(struct volume *v, int cpd, int cpx)
{
	struct stat st;
	uint64_t pos, idx_pos, at;
	int ret = 0;

	if (fstat(cpd, &st) < 0)
		return -errno;
	pos = (uint64_t)st.st_size;
	if (fstat(cpx, &st) < 0)
		return -errno;
	idx_pos = (uint64_t)st.st_size;
	for (at = v->compact_idx_size; at < v->idx_size && ret == 0; at += VOLUME_IDX_ENTRY_SIZE) {
		uint8_t e[VOLUME_IDX_ENTRY_SIZE];
		uint64_t key, start = pos;
		uint32_t offset, size;
		bool dropped;

		ret = pread_all(v->idx_fd, e, sizeof(e), at);
		if (ret < 0)
			break;
		key = get_be64(e);
		offset = get_be32(e + 8);
		size = get_be32(e + 12);
		if (offset == 0 || size == VOLUME_TOMBSTONE_SIZE) {
			struct needle t = {.id = key};
			uint8_t rec[64];
			size_t len;

			if (offset != 0)
				read_cookie(v, offset, &t.cookie);
			t.append_at_ns = now_ns();
			len = needle_encode(&t, v->version, rec, sizeof(rec));
			ret = pwrite_all(cpd, rec, len, pos);
			pos += len;
			size = VOLUME_TOMBSTONE_SIZE;
		} else {
			ret = copy_record(v, cpd, &pos, offset, size, false, &dropped);
		}
		if (ret < 0)
			break;
		encode_idx_entry(e, key, (uint32_t)(start / 8), size);
		ret = pwrite_all(cpx, e, sizeof(e), idx_pos);
		idx_pos += sizeof(e);
	}
	if (ret == 0 && (fdatasync(cpd) < 0 || fdatasync(cpx) < 0))
		ret = -errno;
	return ret;
}

#define FAULT(v, step) ((v)->opt.fault && (v)->opt.fault(step))

int volume_commit_compact(struct volume *v)
{
	char cpd_path[4096], cpx_path[4096], cpc_path[4096], dat_path[4096], idx_path[4096];
	int cpd = -1, cpx = -1, fd, ret;
	bool marked = false; /* the .cpc exists: only rolling forward is safe now */

	file_name(v, ".cpd", cpd_path, sizeof(cpd_path));
	file_name(v, ".cpx", cpx_path, sizeof(cpx_path));
	file_name(v, ".cpc", cpc_path, sizeof(cpc_path));
	file_name(v, ".dat", dat_path, sizeof(dat_path));
	file_name(v, ".idx", idx_path, sizeof(idx_path));

	pthread_mutex_lock(&v->append_lock);
	pthread_rwlock_wrlock(&v->lock);
	if (!v->compacting) {
		ret = -EINVAL;
		goto out;
	}
	if (v->compact_revision != v->compact_from_revision) {
		ret = -ESTALE;
		goto out;
	}
	cpd = open(cpd_path, O_RDWR | O_CLOEXEC);
	cpx = open(cpx_path, O_RDWR | O_CLOEXEC);
	if (cpd < 0 || cpx < 0) {
		ret = -errno;
		goto out;
	}
	ret = replay_since_compact(v, cpd, cpx);
	close(cpd);
	close(cpx);
	if (ret < 0)
		goto out;
	if (FAULT(v, VACUUM_STEP_COMMIT_REPLAYED)) {
		ret = -EINTR;
		goto out;
	}
	fd = open(cpc_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret == 0)
		ret = fsync_dir(v->dir);
	if (ret < 0)
		goto out;
	marked = true;
	if (FAULT(v, VACUUM_STEP_COMMIT_MARKED)) {
		ret = -EINTR;
		goto out;
	}
	if (rename(cpd_path, dat_path) < 0) {
		ret = -errno;
		goto out;
	}
	if (FAULT(v, VACUUM_STEP_COMMIT_DAT_RENAMED)) {
		ret = -EINTR;
		goto out;
	}
	if (rename(cpx_path, idx_path) < 0) {
		ret = -errno;
		goto out;
	}
	fsync_dir(v->dir);
	if (FAULT(v, VACUUM_STEP_COMMIT_IDX_RENAMED)) {
		ret = -EINTR;
		goto out;
	}
	unlink(cpc_path);
	fsync_dir(v->dir);

	/* Reload the new files. */
	close_files(v);
	reset_state(v);
	v->last_append_ns = 0;
	ret = load(v, false);
	if (ret < 0) {
		log_error("volume %u: cannot reload after vacuum: %s", v->vid, strerror(-ret));
		atomic_store(&v->read_only, true);
		goto out;
	}
	v->compacting = false;
	pthread_mutex_lock(&v->sync_lock);
	v->synced_gen = v->write_gen;
	pthread_mutex_unlock(&v->sync_lock);
	log_info("volume %u: vacuum committed, revision %u, %" PRIu64 " bytes", v->vid,
		 v->compact_revision, v->dat_size);
out:
	if (ret < 0 && ret != -EINTR && ret != -EINVAL && marked) {
		/* The old files may already be replaced: stop writing; the next open rolls
		 * the commit forward from the marker. */
		log_error(
		    "volume %u: vacuum commit failed after its marker (%s); the volume is read-only until it is reopened",
		    v->vid, strerror(-ret));
		atomic_store(&v->read_only, true);
	} else if (ret < 0 && ret != -EINTR && ret != -EINVAL) {
		unlink(cpd_path);
		unlink(cpx_path);
		v->compacting = false;
	}
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->append_lock);
	return ret;
}

int volume_cleanup_compact(struct volume *v)
{
	char path[4096];

	pthread_mutex_lock(&v->append_lock);
	file_name(v, ".cpd", path, sizeof(path));
	unlink(path);
	file_name(v, ".cpx", path, sizeof(path));
	unlink(path);
	v->compacting = false;
	pthread_mutex_unlock(&v->append_lock);
	return 0;
}
