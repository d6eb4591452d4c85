/*
 * testutil.h — the tiny test harness every tests/test_*.c uses: CHECK macros that record a
 * failure and go on, a verbose flag (-v), a deterministic RNG, and lookup of the shared data
 * folder and cached models (a test that needs them exits 77 = skipped when they are absent).
 */
#ifndef REALM_TESTUTIL_H
#define REALM_TESTUTIL_H

#undef NDEBUG
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int tu_failures;
extern int tu_verbose;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            tu_failures++;                                                                         \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            tu_failures++;                                                                         \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        CHECKF(a_ == b_, "%s = %lld, expected %lld", #a, a_, b_);                                  \
    } while (0)

/* Parses -v; call first in main. */
void tu_init(int argc, char **argv);
/* Prints a summary when failing or verbose; returns the process exit code. */
int tu_finish(const char *name);
/* Prints only with -v. */
void tu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Path of a file in ../shared ($REALM_SHARED), or NULL if it does not exist. */
const char *tu_shared_path(const char *rel);
/* Path of a cached model ($REALM_MODELS or ~/.cache/realm/models), or NULL if absent. */
const char *tu_model_path(const char *file);
/* Exits 77 (skip) with a message — or 1 if a check already failed, so that a skip never turns
 * recorded failures into "skipped". */
void tu_skip(const char *why) __attribute__((noreturn));

/* xorshift64* RNG, deterministic per seed. */
typedef struct {
    uint64_t s;
} tu_rng;
uint64_t tu_rand_u64(tu_rng *r);
float tu_rand_float(tu_rng *r); /* uniform in [-1, 1) */

/* Reads a whole file into a malloc'd buffer; NULL on failure. */
unsigned char *tu_read_file(const char *path, size_t *size);
/* Writes a buffer to a file; 0 on success. */
int tu_write_file(const char *path, const void *data, size_t size);

#endif
