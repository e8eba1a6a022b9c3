/*
 * multipart: an incremental multipart/form-data parser (RFC 7578 / RFC 2046).
 *
 * Bodies arrive in pieces of any size (libmicrohttpd hands them over as they come);
 * the parser never buffers a part's data, it calls on_data with slices of the body as
 * soon as it knows they are not part of a boundary. Memory use is bounded by the
 * boundary length plus one header block (MULTIPART_MAX_HEADER bytes).
 *
 * Calling sequence:
 *   multipart_init(&p, boundary, boundary_len, &callbacks, ctx)   -- from Content-Type
 *   multipart_feed(&p, chunk, len)   ... repeatedly, returns 0 or -EINVAL
 *   multipart_finish(&p)             -- -EINVAL if the closing boundary never came
 * For each part: on_part_begin(headers), on_data(...)*, on_part_end(). A callback
 * returning non-zero stops the parser; multipart_feed then returns that value.
 * After an error the parser stays in the error state and every call returns -EINVAL.
 */
#ifndef KELP_MULTIPART_H
#define KELP_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define MULTIPART_MAX_BOUNDARY 70   /* RFC 2046 limit */
#define MULTIPART_MAX_HEADER   8192 /* all header lines of one part together */

/* The headers of one part that kelp uses; strings are NUL-terminated, "" when absent. */
struct multipart_part {
	char name[256];		   /* Content-Disposition name="" */
	char filename[256];	   /* Content-Disposition filename="" (truncated at 255) */
	char content_type[256];	   /* Content-Type */
	char content_md5[64];	   /* Content-MD5 */
	char content_encoding[64]; /* Content-Encoding */
	int has_filename;	   /* 1 when a filename= parameter was present */
};

struct multipart_callbacks {
	int (*on_part_begin)(void *ctx, const struct multipart_part *part);
	int (*on_data)(void *ctx, const uint8_t *data, size_t len);
	int (*on_part_end)(void *ctx);
};

struct multipart_parser {
	/* private state; see multipart.c */
	char boundary[MULTIPART_MAX_BOUNDARY + 8]; /* "\r\n--" + boundary */
	size_t boundary_len;
	int state;
	size_t match; /* bytes of the delimiter matched so far */
	char header[MULTIPART_MAX_HEADER];
	size_t header_len;
	struct multipart_part part;
	struct multipart_callbacks cb;
	void *ctx;
	int error;
	int in_part; /* a part's headers were delivered, its end not yet */
};

/*
 * Extracts the boundary parameter from a Content-Type header value such as
 * `multipart/form-data; boundary="abc"`. Writes it NUL-terminated into out (cap bytes).
 * Returns its length, or -EINVAL when absent, empty, or longer than 70 bytes.
 */
int multipart_boundary_from_content_type(const char *content_type, char *out, size_t cap);

int multipart_init(struct multipart_parser *p, const char *boundary, size_t boundary_len,
		   const struct multipart_callbacks *cb, void *ctx);
int multipart_feed(struct multipart_parser *p, const uint8_t *data, size_t len);
int multipart_finish(struct multipart_parser *p);

#endif
