#define FUSE_USE_VERSION 312
/*
 * FUSE_HANDLE_KILLPRIV_V2 over libfuse 3.14 (Debian 12), which cannot negotiate it.
 *
 * Without it the kernel asks for security.capability before every write(2) to a file
 * (file_remove_privs: a write must drop file capabilities), one FUSE round trip each:
 * `tar -xf` made 3.06 of them per entry. With it the kernel marks its superblock
 * SB_NOSEC, asks once per inode until its attributes are refreshed, and leaves the
 * clearing of setuid, setgid and the capability to the filesystem: on a write whose
 * caller lacks CAP_FSETID (FUSE_WRITE_KILL_SUIDGID in the WRITE), a truncate by such a
 * caller or a chown (FATTR_KILL_SUIDGID in the SETATTR), an open with O_TRUNC
 * (FUSE_OPEN_KILL_SUIDGID). libfuse 3.16 has FUSE_CAP_HANDLE_KILLPRIV_V2; 3.14 neither
 * sets the flag in its INIT reply nor passes those request flags on.
 *
 * So the session's device I/O goes through fuse_session_custom_io (a public libfuse
 * API): reads note, in a thread-local, whether the request just read asks for the
 * bits to be killed (libfuse handles a request in the thread that read it), and the
 * INIT reply gets FUSE_HANDLE_KILLPRIV_V2 when the kernel offered it. Everything else
 * passes through unchanged.
 */
#include "fuse/killpriv.h"

#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "fuse/file.h"

static __thread bool request_kills;

bool killpriv_request_kills(void)
{
	return request_kills;
}

/* Where a request carries its kill flag: its argument's size, the flag word's offset. */
static const struct {
	uint32_t opcode;
	size_t in_size, field;
	uint32_t bit;
} kill_flags[] = {
    {FUSE_WRITE, sizeof(struct fuse_write_in), offsetof(struct fuse_write_in, write_flags),
     FUSE_WRITE_KILL_SUIDGID},
    {FUSE_SETATTR, sizeof(struct fuse_setattr_in), offsetof(struct fuse_setattr_in, valid),
     FATTR_KILL_SUIDGID},
    {FUSE_OPEN, sizeof(struct fuse_open_in), offsetof(struct fuse_open_in, open_flags),
     FUSE_OPEN_KILL_SUIDGID},
    {FUSE_CREATE, sizeof(struct fuse_create_in), offsetof(struct fuse_create_in, open_flags),
     FUSE_OPEN_KILL_SUIDGID},
};

/* What the request in buf[0..n) asks: FUSE_INIT is remembered, the kill flags noted. */
static void note_request(struct kelp_fs *fs, const uint8_t *buf, size_t n)
{
	const struct fuse_in_header *h = (const void *)buf;
	const uint8_t *arg = buf + sizeof(*h);
	size_t len = n - sizeof(*h);
	uint32_t word;

	if (h->opcode == FUSE_INIT) {
		if (len >= offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
			memcpy(&word, arg + offsetof(struct fuse_init_in, flags), sizeof(word));
			fs->init_unique = h->unique;
			fs->kernel_has_killpriv = (word & FUSE_HANDLE_KILLPRIV_V2) != 0;
		}
		return;
	}
	for (size_t i = 0; i < sizeof(kill_flags) / sizeof(kill_flags[0]); i++) {
		if (kill_flags[i].opcode != h->opcode)
			continue;
		if (len >= kill_flags[i].in_size) {
			memcpy(&word, arg + kill_flags[i].field, sizeof(word));
			request_kills = (word & kill_flags[i].bit) != 0;
		}
		return;
	}
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);

	request_kills = false;
	if (n >= (ssize_t)sizeof(struct fuse_in_header))
		note_request(userdata, buf, (size_t)n);
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct kelp_fs *fs = userdata;

	if (fs->init_unique && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
		struct fuse_out_header *o = iov[0].iov_base;

		if (o->unique == fs->init_unique) {
			struct fuse_init_out *out = iov[1].iov_base;

			fs->init_unique = 0;
			if (o->error == 0 && fs->kernel_has_killpriv) {
				out->flags |= FUSE_HANDLE_KILLPRIV_V2;
				fs->killpriv_v2 = true;
			}
			log_info("mount: the kernel %s FUSE_HANDLE_KILLPRIV_V2",
				 fs->killpriv_v2 ? "takes" : "does not offer");
		}
	}
	return writev(fd, iov, count);
}

int killpriv_install(struct fuse_session *se, struct kelp_fs *fs)
{
	static const struct fuse_custom_io io = {.read = io_read, .writev = io_writev};
	int rc;

	(void)fs; /* the session's userdata, given to the hooks by libfuse */
	rc = fuse_session_custom_io(se, &io, fuse_session_fd(se));
	if (rc < 0)
		log_warn("mount: no custom FUSE I/O (%d): the kernel keeps asking for "
			 "security.capability before every write",
			 rc);
	return rc;
}
