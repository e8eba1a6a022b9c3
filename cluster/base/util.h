/*
 * util: small helpers shared by every module: time, base64, HTTP dates, strings.
 */
#ifndef KELP_UTIL_H
#define KELP_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

uint64_t now_ns(void);	     /* CLOCK_REALTIME in nanoseconds */
uint64_t monotonic_ns(void); /* CLOCK_MONOTONIC in nanoseconds */

/* Standard base64 with padding (OpenSSL's EVP_EncodeBlock). Returns the output length
 * (out holds 4*ceil(n/3)+1). len must be below 2^31. */
size_t base64_encode(const uint8_t *in, size_t len, char *out);
/* Standard base64 with padding (OpenSSL's EVP_DecodeBlock), strictly: only the alphabet,
 * at most two '=' at the end, a length a multiple of 4. Returns the decoded length, or
 * -1 when malformed or longer than cap. */
long base64_decode(const char *s, size_t n, uint8_t *out, size_t cap);

/* "Sun, 06 Nov 1994 08:49:37 GMT" into buf (at least 32 bytes). */
void http_date_format(time_t t, char *buf, size_t cap);
/* Parses the RFC 1123 form; returns -1 when malformed. */
time_t http_date_parse(const char *s);

/* Writes the whole buffer / reads exactly len bytes at offset; 0 or -errno. */
int pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);
int pread_all(int fd, void *buf, size_t len, uint64_t offset);
/* Writes n iovecs at offset, whole (iov is consumed); 0 or -errno. */
struct iovec;
int pwritev_all(int fd, struct iovec *iov, int n, uint64_t offset);

/* The value of a hex digit (either case), or -1. */
int hex_digit(char c);

/* SIGINT, SIGTERM and SIGHUP: the signals that stop a daemon cleanly. */
void stop_signal_set(sigset_t *set);

/* fsyncs a directory so renames and creations in it are durable. */
int fsync_dir(const char *dir);

/* Makes every missing directory of path (like mkdir -p). */
int mkdir_p(const char *path, unsigned mode);

/* Splits a comma list into a NULL-terminated array of strings, empty items skipped.
 * *n gets the count. Caller frees with free_list. NULL on allocation failure. */
char **split_list(const char *s, int *n);
void free_list(char **list);

#endif
