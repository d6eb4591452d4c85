/*
 * read_all.h — a whole file into memory, for tests and benchmarks, including those built without
 * realm_core or the test library (the guest SDK's native builds). Header-only for that reason.
 */
#ifndef REALM_TESTS_READ_ALL_H
#define REALM_TESTS_READ_ALL_H

#include <stdio.h>
#include <stdlib.h>

/* The bytes of `path` plus a NUL (so text can be used as a string), malloc'ed; *size (may be
 * NULL) gets the length without the NUL. NULL when the file cannot be opened or read. */
static inline char *tu_read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    if (size) *size = (size_t)n;
    return buf;
}

#endif
