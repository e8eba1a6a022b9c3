/* FUSE_HANDLE_KILLPRIV_V2 over libfuse 3.14: fuse/killpriv.c says how and why. */
#ifndef KELP_FUSE_KILLPRIV_H
#define KELP_FUSE_KILLPRIV_H

#include <stdbool.h>

struct fuse_session;
struct kelp_fs;

/* After fuse_session_mount, before the loop: the session's device I/O through our
 * hooks (fs is the session's userdata). fs->killpriv_v2 tells, after INIT, whether
 * the kernel took the flag. */
int killpriv_install(struct fuse_session *se, struct kelp_fs *fs);
/* The request this thread is handling (a WRITE, SETATTR, OPEN or CREATE) asks for
 * setuid and setgid to be cleared (its caller lacks CAP_FSETID, or a chown). */
bool killpriv_request_kills(void);

#endif
