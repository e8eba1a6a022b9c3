/*
 * fid: SeaweedFS file ids, "<vid>,<key hex><cookie hex>[_<delta>]".
 *
 * Example "3,01637037d6": volume 3, needle key 0x01, cookie 0x637037d6. The last 8 hex
 * digits are the cookie, everything before them the key (1-16 hex digits). A decimal
 * "_N" suffix is added to the key (batch assigns). Formatting drops whole leading zero
 * bytes of the key, so the key part always has an even number of digits.
 *
 * All parsers take (pointer, length), never read past it, and return 0 or -EINVAL.
 */
#ifndef KELP_FID_H
#define KELP_FID_H

#include <stddef.h>
#include <stdint.h>

#define FID_MAX_LEN 48 /* "4294967295," + 16 + 8 + "_" + 20 digits, with room */

struct fid {
	uint32_t vid;
	uint64_t key;
	uint32_t cookie;
};

/* Parses "<key><cookie>[_<delta>]" (no vid). */
int fid_parse_key_cookie(const char *s, size_t len, uint64_t *key, uint32_t *cookie);

/* Parses a decimal volume id (1-10 digits, fits in uint32). */
int fid_parse_vid(const char *s, size_t len, uint32_t *vid);

/* The volume id of a fid text "<vid>,..."; 0 when there is none. */
uint32_t fid_text_vid(const char *fid);

/* Parses a whole fid "<vid>,<key><cookie>[_<delta>]". */
int fid_parse(const char *s, size_t len, struct fid *out);

/*
 * Parses a volume server URL path in any of the five forms
 *   /3/01637037d6/name.jpg  /3/01637037d6.jpg  /3,01637037d6.jpg  /3/01637037d6  /3,01637037d6
 * The extension (".jpg") or the trailing file name, if any, is returned through
 * name/name_len (pointing into path; NULL when absent).
 */
int fid_parse_path(const char *path, size_t len, struct fid *out, const char **name,
		   size_t *name_len);

/* Writes "<key><cookie>" into buf (at least 25 bytes); returns the length. */
size_t fid_format_key_cookie(uint64_t key, uint32_t cookie, char *buf);

/* Writes "<vid>,<key><cookie>" into buf (at least FID_MAX_LEN bytes); returns the length. */
size_t fid_format(const struct fid *fid, char *buf);

#endif
