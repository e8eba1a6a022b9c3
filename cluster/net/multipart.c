/*
 * multipart: incremental multipart/form-data parser.
 *
 * Design. The body is a byte stream cut at arbitrary places; the parser is a state
 * machine that looks at one byte at a time and keeps nothing of a part's data:
 *
 *   - The delimiter is "\r\n--" + boundary. Inside a part, bytes are passed to on_data
 *     as slices of the caller's chunk as soon as they cannot begin a delimiter. While a
 *     delimiter might be starting, only the count of matched bytes is kept (p->match):
 *     the matched bytes are by definition a prefix of the delimiter, so when the match
 *     fails the parser hands out that prefix from p->boundary instead of a copy of the
 *     input. Boundaries may not contain CR or LF, so '\r' occurs only at the start of
 *     the delimiter and a failed match can only restart at the current byte (no
 *     general KMP table is needed).
 *   - The first boundary may open the body without a CRLF before it; the parser starts
 *     as if "\r\n" had just been seen. Everything before the first boundary (the
 *     preamble) and after the closing one (the epilogue) is ignored.
 *   - After a full delimiter, as in Go's mime/multipart, the next byte decides: '-'
 *     (close delimiter), space/tab (transport padding) or CR make it a boundary; any
 *     other byte means "--boundaryX" was part data after all and it is passed on.
 *     A boundary line must then be exactly "--boundary" LWSP* CRLF, or "--boundary--"
 *     followed by anything (the epilogue).
 *   - A part's header block is kept in p->header (at most MULTIPART_MAX_HEADER bytes,
 *     the blank line included) and parsed when the blank line arrives.
 *
 * Decisions:
 *   - Line endings must be CRLF. A bare LF or bare CR in a header block, or a bare LF
 *     right after a delimiter, is -EINVAL: every client kelp serves (curl, browsers,
 *     the Go and Python HTTP libraries) sends CRLF, and guessing would make the
 *     delimiter ambiguous.
 *   - Header names are case-insensitive tokens; folded (obs-fold) lines are joined; a
 *     header line without ':' or with a non-token name is -EINVAL. Unknown headers are
 *     ignored; for a repeated known header the first one counts (Go's Header.Get).
 *   - Header values longer than their field in struct multipart_part are truncated.
 *   - Content-Disposition is `type *(; attr=value)` with token or quoted-string values.
 *     In quoted strings a backslash escapes only tspecials, so an unescaped Windows
 *     path like "C:\dir\f.txt" survives (Go does the same for MSIE). A repeated name
 *     or filename parameter, an unterminated quote or a missing value is -EINVAL.
 *     RFC 5987 `filename*=UTF-8''%e2%82%ac.txt` (utf-8 or us-ascii, unquoted) takes
 *     precedence over filename=; an undecodable one is ignored, as Go does. The
 *     filename is reported as sent: callers that store it should take its last path
 *     element themselves.
 *   - A part without a Content-Disposition is delivered with empty name/filename.
 *   - A body whose closing boundary comes before any part is valid (zero parts).
 *
 * Threads: a parser belongs to one request; no locking, no global state.
 */
#include "cluster/net/multipart.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "cluster/base/util.h"

enum multipart_state {
	MP_PREAMBLE,	/* before the first boundary: bytes are discarded */
	MP_DATA,	/* inside a part's data */
	MP_AFTER_DELIM, /* a whole delimiter matched; the next byte says if it is one */
	MP_PADDING,	/* transport padding (LWSP) after a boundary */
	MP_LINE_LF,	/* CR after a boundary; LF must follow */
	MP_CLOSE_DASH,	/* one '-' after a boundary; the second makes it the close delimiter */
	MP_HEADERS,	/* collecting a part's header block */
	MP_EPILOGUE,	/* after the close delimiter: bytes are discarded */
	MP_ERROR,	/* stopped by malformed input or a callback */
};

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_tspecial(char c)
{
	return c != '\0' && strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* RFC 2045 token characters (US-ASCII only, like Go's mime package). */
static bool is_token_char(char c)
{
	unsigned char u = (unsigned char)c;

	return u > 0x20 && u < 0x7f && !is_tspecial(c);
}

static bool boundary_valid(const char *b, size_t len)
{
	if (len == 0 || len > MULTIPART_MAX_BOUNDARY)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)b[i];

		/* CR and LF in particular: the matcher relies on '\r' only at the start */
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/* ---- header value parsing (RFC 2045 parameters) ---- */

static const char *skip_wsp(const char *s, const char *end)
{
	while (s < end && is_wsp(*s))
		s++;
	return s;
}

static const char *scan_token(const char *s, const char *end)
{
	while (s < end && is_token_char(*s))
		s++;
	return s;
}

/* Returns the end of the token or quoted-string at s, or NULL when there is none. */
static const char *scan_value(const char *s, const char *end)
{
	const char *e;

	if (s < end && *s == '"') {
		for (s++; s < end; s++) {
			if (*s == '"')
				return s + 1;
			if (*s == '\\' && s + 1 < end && is_tspecial(s[1]))
				s++;
		}
		return NULL;
	}
	e = scan_token(s, end);
	return e == s ? NULL : e;
}

/*
 * Copies the value [s, e) found by scan_value into out (cap > 0 bytes), removing
 * quotes and escapes, truncating and NUL-terminating. Returns the untruncated length.
 */
static size_t unquote(const char *s, const char *e, char *out, size_t cap)
{
	bool quoted = s < e && *s == '"';
	size_t n = 0;

	if (quoted) {
		s++;
		e--;
	}
	for (; s < e; s++) {
		char c = *s;

		if (quoted && c == '\\' && s + 1 < e && is_tspecial(s[1]))
			c = *++s;
		if (n + 1 < cap)
			out[n] = c;
		n++;
	}
	out[n < cap ? n : cap - 1] = '\0';
	return n;
}

/*
 * Finds the next `; attr=value` in [*sp, end). Returns 1 with the attribute and the raw
 * value span, 0 at the end, -EINVAL when malformed. Empty parameters (";;", a trailing
 * ';') are skipped, and space is allowed around '=', as Go's mime package allows.
 */
static int next_param(const char **sp, const char *end, const char **attr, size_t *attr_len,
		      const char **value, const char **value_end)
{
	const char *s = *sp, *a;

	for (;;) {
		s = skip_wsp(s, end);
		if (s == end)
			return 0;
		if (*s != ';')
			return -EINVAL;
		s = skip_wsp(s + 1, end);
		if (s == end)
			return 0;
		if (*s != ';')
			break;
	}
	a = s;
	s = scan_token(s, end);
	if (s == a)
		return -EINVAL;
	*attr = a;
	*attr_len = (size_t)(s - a);
	s = skip_wsp(s, end);
	if (s == end || *s != '=')
		return -EINVAL;
	s = skip_wsp(s + 1, end);
	*value = s;
	s = scan_value(s, end);
	if (!s)
		return -EINVAL;
	*value_end = s;
	*sp = s;
	return 1;
}

static bool span_equals(const char *s, size_t len, const char *lower)
{
	return strlen(lower) == len && strncasecmp(s, lower, len) == 0;
}

/*
 * Decodes an RFC 5987 ext-value `charset'language'percent-encoded` into out (cap > 0,
 * truncated, NUL-terminated). Returns false for anything it will not vouch for: other
 * charsets, bad escapes, %00, quoted values.
 */
static bool decode_ext_value(const char *s, const char *e, char *out, size_t cap)
{
	const char *q1 = memchr(s, '\'', (size_t)(e - s)), *q2;
	size_t n = 0;

	if (!q1)
		return false;
	q2 = memchr(q1 + 1, '\'', (size_t)(e - q1 - 1));
	if (!q2)
		return false;
	if (!span_equals(s, (size_t)(q1 - s), "utf-8") &&
	    !span_equals(s, (size_t)(q1 - s), "us-ascii"))
		return false;
	for (s = q2 + 1; s < e; s++) {
		char c = *s;

		if (c == '%') {
			int hi, lo;

			if (e - s < 3)
				return false;
			hi = hex_digit(s[1]);
			lo = hex_digit(s[2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return false;
			c = (char)(hi << 4 | lo);
			s += 2;
		}
		if (n + 1 < cap)
			out[n++] = c;
	}
	out[n] = '\0';
	return true;
}

/* Content-Disposition: form-data; name="field"; filename="a.txt" */
static int parse_disposition(const char *s, const char *end, struct multipart_part *part)
{
	bool seen_name = false, seen_name_ext = false, name_from_ext = false;
	bool seen_filename = false, seen_filename_ext = false, filename_from_ext = false;
	const char *attr, *value, *value_end, *t;
	size_t attr_len;
	char decoded[sizeof(part->filename)];
	int rc;

	s = skip_wsp(s, end);
	t = scan_token(s, end);
	if (t == s)
		return -EINVAL;
	s = t;
	while ((rc = next_param(&s, end, &attr, &attr_len, &value, &value_end)) > 0) {
		if (span_equals(attr, attr_len, "name")) {
			if (seen_name)
				return -EINVAL;
			seen_name = true;
			if (!name_from_ext)
				unquote(value, value_end, part->name, sizeof(part->name));
		} else if (span_equals(attr, attr_len, "filename")) {
			if (seen_filename)
				return -EINVAL;
			seen_filename = true;
			part->has_filename = 1;
			if (!filename_from_ext)
				unquote(value, value_end, part->filename, sizeof(part->filename));
		} else if (span_equals(attr, attr_len, "name*")) {
			if (seen_name_ext)
				return -EINVAL;
			seen_name_ext = true;
			if (decode_ext_value(value, value_end, decoded, sizeof(part->name))) {
				memcpy(part->name, decoded, sizeof(part->name));
				name_from_ext = true;
			}
		} else if (span_equals(attr, attr_len, "filename*")) {
			if (seen_filename_ext)
				return -EINVAL;
			seen_filename_ext = true;
			if (decode_ext_value(value, value_end, decoded, sizeof(part->filename))) {
				memcpy(part->filename, decoded, sizeof(part->filename));
				part->has_filename = 1;
				filename_from_ext = true;
			}
		}
	}
	return rc;
}

static void copy_value(char *out, size_t cap, const char *s, size_t len)
{
	if (len > cap - 1)
		len = cap - 1;
	memcpy(out, s, len);
	out[len] = '\0';
}

enum {
	SEEN_DISPOSITION = 1 << 0,
	SEEN_TYPE = 1 << 1,
	SEEN_MD5 = 1 << 2,
	SEEN_ENCODING = 1 << 3,
};

static int parse_header_line(struct multipart_part *part, const char *line, size_t len,
			     unsigned *seen)
{
	const char *colon = memchr(line, ':', len);
	const char *end = line + len, *value;
	size_t name_len;

	if (!colon || colon == line || scan_token(line, colon) != colon)
		return -EINVAL;
	name_len = (size_t)(colon - line);
	value = skip_wsp(colon + 1, end);
	while (end > value && is_wsp(end[-1]))
		end--;

	if (span_equals(line, name_len, "content-disposition")) {
		if (*seen & SEEN_DISPOSITION)
			return 0;
		*seen |= SEEN_DISPOSITION;
		return parse_disposition(value, end, part);
	}
	if (span_equals(line, name_len, "content-type")) {
		if (!(*seen & SEEN_TYPE))
			copy_value(part->content_type, sizeof(part->content_type), value,
				   (size_t)(end - value));
		*seen |= SEEN_TYPE;
	} else if (span_equals(line, name_len, "content-md5")) {
		if (!(*seen & SEEN_MD5))
			copy_value(part->content_md5, sizeof(part->content_md5), value,
				   (size_t)(end - value));
		*seen |= SEEN_MD5;
	} else if (span_equals(line, name_len, "content-encoding")) {
		if (!(*seen & SEEN_ENCODING))
			copy_value(part->content_encoding, sizeof(part->content_encoding), value,
				   (size_t)(end - value));
		*seen |= SEEN_ENCODING;
	}
	return 0;
}

/*
 * Parses the complete header block in p->header (lines ending in CRLF, then a blank
 * line; header_byte has already rejected bare CR, bare LF and NUL) into p->part.
 */
static int parse_headers(struct multipart_parser *p)
{
	char *h = p->header;
	size_t len = p->header_len - 2; /* without the blank line */
	size_t start = 0;
	unsigned seen = 0;

	memset(&p->part, 0, sizeof(p->part));
	if (len > 0 && is_wsp(h[0]))
		return -EINVAL; /* a continuation line with nothing to continue */
	/* Unfold: CRLF followed by space or tab continues the previous line. */
	for (size_t i = 0; i + 2 < len; i++) {
		if (h[i] == '\r' && is_wsp(h[i + 2])) {
			h[i] = ' ';
			h[i + 1] = ' ';
		}
	}
	while (start < len) {
		const char *eol = memchr(h + start, '\r', len - start);
		size_t line_len;
		int rc;

		if (!eol)
			return -EINVAL; /* cannot happen: the block ends with CRLF */
		line_len = (size_t)(eol - (h + start));
		rc = parse_header_line(&p->part, h + start, line_len, &seen);
		if (rc < 0)
			return rc;
		start += line_len + 2;
	}
	return 0;
}

/* Adds one byte to the header block. Returns 1 when the block is complete, 0 when more
 * is needed, -EINVAL when it is malformed or too long. */
static int header_byte(struct multipart_parser *p, char c)
{
	size_t n = p->header_len;
	char prev = n > 0 ? p->header[n - 1] : '\0';

	if (c == '\0')
		return -EINVAL;
	if (prev == '\r' && c != '\n')
		return -EINVAL;
	if (c == '\n' && prev != '\r')
		return -EINVAL;
	if (n == MULTIPART_MAX_HEADER)
		return -EINVAL;
	p->header[n++] = c;
	p->header_len = n;
	if (c != '\n')
		return 0;
	return n == 2 || (n >= 4 && p->header[n - 3] == '\n' && p->header[n - 4] == '\r');
}

/* ---- callbacks ---- */

static int emit_data(struct multipart_parser *p, const uint8_t *data, size_t len)
{
	if (!p->in_part || len == 0 || !p->cb.on_data)
		return 0;
	return p->cb.on_data(p->ctx, data, len);
}

static int end_part(struct multipart_parser *p)
{
	if (!p->in_part)
		return 0;
	p->in_part = 0;
	return p->cb.on_part_end ? p->cb.on_part_end(p->ctx) : 0;
}

static int begin_part(struct multipart_parser *p)
{
	p->in_part = 1;
	return p->cb.on_part_begin ? p->cb.on_part_begin(p->ctx, &p->part) : 0;
}

static int stop(struct multipart_parser *p, int rc)
{
	p->state = MP_ERROR;
	p->error = rc;
	return rc;
}

/* ---- public API ---- */

int multipart_boundary_from_content_type(const char *content_type, char *out, size_t cap)
{
	const char *s, *end, *t, *attr, *value, *value_end;
	const char *found = NULL, *found_end = NULL;
	char boundary[MULTIPART_MAX_BOUNDARY + 1];
	size_t attr_len, len;
	int rc;

	if (!content_type || !out || cap == 0)
		return -EINVAL;
	s = content_type;
	end = s + strlen(s);

	/* type/subtype */
	s = skip_wsp(s, end);
	t = scan_token(s, end);
	if (t == s || t == end || *t != '/')
		return -EINVAL;
	s = t + 1;
	t = scan_token(s, end);
	if (t == s)
		return -EINVAL;
	s = t;

	while ((rc = next_param(&s, end, &attr, &attr_len, &value, &value_end)) > 0) {
		if (!span_equals(attr, attr_len, "boundary"))
			continue;
		if (found)
			return -EINVAL;
		found = value;
		found_end = value_end;
	}
	if (rc < 0 || !found)
		return -EINVAL;
	len = unquote(found, found_end, boundary, sizeof(boundary));
	if (!boundary_valid(boundary, len) || len + 1 > cap)
		return -EINVAL;
	memcpy(out, boundary, len + 1);
	return (int)len;
}

int multipart_init(struct multipart_parser *p, const char *boundary, size_t boundary_len,
		   const struct multipart_callbacks *cb, void *ctx)
{
	if (!p)
		return -EINVAL;
	memset(p, 0, sizeof(*p));
	if (!boundary || !boundary_valid(boundary, boundary_len))
		return stop(p, -EINVAL);
	memcpy(p->boundary, "\r\n--", 4);
	memcpy(p->boundary + 4, boundary, boundary_len);
	p->boundary_len = boundary_len + 4;
	if (cb)
		p->cb = *cb;
	p->ctx = ctx;
	p->state = MP_PREAMBLE;
	/* As if a CRLF had just been read, so "--boundary" opens the body directly. */
	p->match = 2;
	return 0;
}

int multipart_feed(struct multipart_parser *p, const uint8_t *data, size_t len)
{
	/*
	 * run: first byte of this chunk not yet passed to on_data nor consumed;
	 * carry: delimiter bytes matched in earlier chunks (they precede data[0]).
	 */
	size_t run = 0, carry;
	int rc;

	if (!p || p->state == MP_ERROR)
		return -EINVAL;
	if (len == 0)
		return 0;
	if (!data)
		return stop(p, -EINVAL);
	carry = p->match;

	for (size_t i = 0; i < len; i++) {
		char c = (char)data[i];

		switch (p->state) {
		case MP_PREAMBLE:
		case MP_DATA:
			if (p->match == 0) {
				/* only a CR can start a delimiter: skip to the next one */
				const uint8_t *cr = memchr(data + i, '\r', len - i);

				if (!cr) {
					i = len - 1;
					continue;
				}
				i = (size_t)(cr - data);
				c = '\r';
			}
			if (c == p->boundary[p->match]) {
				if (p->match == 0) {
					/* a delimiter may start here: hand out what precedes it */
					rc = emit_data(p, data + run, i - run);
					if (rc)
						return stop(p, rc);
					run = i;
				}
				if (++p->match == p->boundary_len)
					p->state = MP_AFTER_DELIM;
				break;
			}
			if (p->match == 0)
				break;
			/* Not a delimiter: the matched bytes were data. Those from earlier
			 * chunks go out now; those in this chunk are still in the run. */
			rc = emit_data(p, (const uint8_t *)p->boundary, carry);
			if (rc)
				return stop(p, rc);
			carry = 0;
			p->match = 0;
			if (c == p->boundary[0]) {
				rc = emit_data(p, data + run, i - run);
				if (rc)
					return stop(p, rc);
				run = i;
				p->match = 1;
			}
			break;

		case MP_AFTER_DELIM:
			if (c == '-') {
				p->state = MP_CLOSE_DASH;
			} else if (is_wsp(c)) {
				p->state = MP_PADDING;
			} else if (c == '\r') {
				p->state = MP_LINE_LF;
			} else if (c == '\n') {
				return stop(p, -EINVAL);
			} else {
				/* "--boundaryX": the delimiter was data; c is not '\r' so
				 * it cannot start another one. */
				rc = emit_data(p, (const uint8_t *)p->boundary, carry);
				if (rc)
					return stop(p, rc);
				carry = 0;
				p->match = 0;
				p->state = p->in_part ? MP_DATA : MP_PREAMBLE;
				break;
			}
			/* it is a boundary: the matched delimiter is consumed */
			carry = 0;
			p->match = 0;
			break;

		case MP_PADDING:
			if (c == '\r')
				p->state = MP_LINE_LF;
			else if (!is_wsp(c))
				return stop(p, -EINVAL);
			break;

		case MP_LINE_LF:
			if (c != '\n')
				return stop(p, -EINVAL);
			rc = end_part(p);
			if (rc)
				return stop(p, rc);
			p->header_len = 0;
			p->state = MP_HEADERS;
			break;

		case MP_CLOSE_DASH:
			if (c != '-')
				return stop(p, -EINVAL);
			rc = end_part(p);
			if (rc)
				return stop(p, rc);
			p->state = MP_EPILOGUE;
			break;

		case MP_HEADERS:
			rc = header_byte(p, c);
			if (rc < 0)
				return stop(p, rc);
			if (rc == 0)
				break;
			rc = parse_headers(p);
			if (rc < 0)
				return stop(p, rc);
			rc = begin_part(p);
			if (rc)
				return stop(p, rc);
			p->state = MP_DATA;
			p->match = 0;
			carry = 0;
			run = i + 1;
			break;

		case MP_EPILOGUE:
			return 0;

		default:
			return stop(p, -EINVAL);
		}
	}

	/* Pass on the rest of the chunk unless it may be the start of a delimiter. */
	if (p->state == MP_DATA && p->match == 0) {
		rc = emit_data(p, data + run, len - run);
		if (rc)
			return stop(p, rc);
	}
	return 0;
}

int multipart_finish(struct multipart_parser *p)
{
	if (!p || p->state == MP_ERROR)
		return -EINVAL;
	if (p->state != MP_EPILOGUE)
		return stop(p, -EINVAL);
	return 0;
}
