/*
 * alloc.c — accounted allocation with a fail-after-N hook (see include/realm/alloc.h).
 * Each block carries a 16-byte header holding its size so that realm_free can account it.
 * Globals: two atomics (bytes in use, the failure countdown); thread-safe.
 */
#include "realm/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- Globals: process-wide counters, atomics ---- */
static _Atomic int64_t g_in_use;
static _Atomic int64_t g_fail_after = -1; /* < 0: never fail */

#define HDR 16 /* keeps 16-byte alignment of the returned pointer */

static int injected_failure(void) {
    int64_t n = atomic_load(&g_fail_after);
    while (n >= 0) {
        if (n == 0) return 1;
        if (atomic_compare_exchange_weak(&g_fail_after, &n, n - 1)) return 0;
    }
    return 0;
}

void realm_alloc_fail_after(int64_t n_ok) { atomic_store(&g_fail_after, n_ok < 0 ? -1 : n_ok); }

int64_t realm_alloc_bytes_in_use(void) { return atomic_load(&g_in_use); }

void *realm_malloc(size_t size) {
    if (injected_failure() || size > SIZE_MAX - HDR) return NULL;
    unsigned char *p = malloc(size + HDR);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    atomic_fetch_add(&g_in_use, (int64_t)size);
    return p + HDR;
}

void *realm_calloc(size_t n, size_t size) {
    size_t total;
    if (realm_mul_size(n, size, &total)) return NULL;
    void *p = realm_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void realm_free(void *p) {
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t size;
    memcpy(&size, base, sizeof size);
    atomic_fetch_sub(&g_in_use, (int64_t)size);
    free(base);
}

void *realm_realloc(void *p, size_t size) {
    if (!p) return realm_malloc(size);
    if (injected_failure() || size > SIZE_MAX - HDR) return NULL;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t old;
    memcpy(&old, base, sizeof old);
    unsigned char *nb = realloc(base, size + HDR);
    if (!nb) return NULL;
    memcpy(nb, &size, sizeof size);
    atomic_fetch_add(&g_in_use, (int64_t)size - (int64_t)old);
    return nb + HDR;
}

void *realm_malloc_aligned(size_t alignment, size_t size) {
    if (injected_failure()) return NULL;
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return NULL;
    /* Layout: [pad][size_t size][void* base] p ... ; the two words sit right below p. */
    size_t extra = alignment + sizeof(size_t) + sizeof(void *);
    if (size > SIZE_MAX - extra) return NULL;
    unsigned char *base = malloc(size + extra);
    if (!base) return NULL;
    uintptr_t a = ((uintptr_t)base + sizeof(size_t) + sizeof(void *) + alignment - 1) &
                  ~(uintptr_t)(alignment - 1);
    unsigned char *p = (unsigned char *)a;
    memcpy(p - sizeof(void *), &base, sizeof base);
    memcpy(p - sizeof(void *) - sizeof(size_t), &size, sizeof size);
    atomic_fetch_add(&g_in_use, (int64_t)size);
    return p;
}

void realm_free_aligned(void *p) {
    if (!p) return;
    unsigned char *q = p;
    void *base;
    size_t size;
    memcpy(&base, q - sizeof(void *), sizeof base);
    memcpy(&size, q - sizeof(void *) - sizeof(size_t), sizeof size);
    atomic_fetch_sub(&g_in_use, (int64_t)size);
    free(base);
}

char *realm_strndup(const char *s, size_t n) {
    char *d = realm_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
