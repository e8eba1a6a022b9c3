/*
 * fuzz: the libFuzzer entry point every fuzz_<target>.c defines. driver.c calls it on
 * each file of a corpus (the replay tests); with -fsanitize=fuzzer libFuzzer calls it.
 */
#ifndef KELP_FUZZ_H
#define KELP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input; returns 0. A bug makes it crash or abort(). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
