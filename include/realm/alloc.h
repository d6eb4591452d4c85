/*
 * alloc.h — every allocation in the host library goes through realm_malloc/realm_free so that
 * memory can be accounted and allocation failures can be injected in tests.
 *
 * Thread rule: all functions are thread-safe. The counters are process-wide atomics.
 */
#ifndef REALM_ALLOC_H
#define REALM_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* Like malloc/calloc/realloc/free. Returns NULL on failure (or on an injected failure). A size
 * of 0 returns a unique non-NULL pointer. realm_free(NULL) is a no-op. realm_realloc returns
 * NULL and leaves `p` untouched on failure. */
void *realm_malloc(size_t size);
void *realm_calloc(size_t n, size_t size);
void *realm_realloc(void *p, size_t size);
void realm_free(void *p);
/* Aligned allocation (alignment a power of two >= sizeof(void*)); free with realm_free_aligned. */
void *realm_malloc_aligned(size_t alignment, size_t size);
void realm_free_aligned(void *p);
/* A NUL-terminated copy of (s, n); NULL on failure. */
char *realm_strndup(const char *s, size_t n);

/* Bytes currently allocated through realm_malloc & co. */
int64_t realm_alloc_bytes_in_use(void);
/* Test hook: the next `n_ok` allocations succeed, then every allocation fails until reset with
 * n_ok < 0. */
void realm_alloc_fail_after(int64_t n_ok);

/* Overflow-checked size arithmetic; return 0 on success, -1 on overflow (out is then untouched). */
static inline int realm_mul_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
static inline int realm_add_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
static inline int realm_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}
static inline int realm_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) return -1;
    *out = r;
    return 0;
}

#endif
