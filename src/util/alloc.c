/*
 * alloc.c — accounted allocation with a fail-after-N hook and per-thread budgets (see
 * include/realm/alloc.h).
 * Each block carries a 16-byte header holding its size and the budget it is charged to (NULL:
 * none), so that realm_free on any thread can account it; aligned blocks keep the same two words
 * right below the returned pointer.
 * Globals: two atomics (bytes in use, the failure countdown) and the cJSON hooks installed once
 * at start-up; the current budget is thread-local. Thread-safe.
 */
#include "realm/alloc.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- Globals: process-wide counters, atomics ---- */
static _Atomic int64_t g_in_use;
static _Atomic int64_t g_fail_after = -1; /* < 0: never fail */
static _Thread_local struct realm_alloc_budget *t_budget;
static _Thread_local int64_t t_failures; /* allocations that returned NULL on this thread */

#define HDR 16 /* size + budget; keeps 16-byte alignment of the returned pointer */
_Static_assert(sizeof(size_t) + sizeof(struct realm_alloc_budget *) <= HDR, "header too small");

static int injected_failure(void) {
    int64_t n = atomic_load(&g_fail_after);
    while (n >= 0) {
        if (n == 0) return 1;
        if (atomic_compare_exchange_weak(&g_fail_after, &n, n - 1)) return 0;
    }
    return 0;
}

void realm_alloc_fail_after(int64_t n_ok) {
    atomic_store(&g_fail_after, n_ok < 0 ? -1 : n_ok);
}

int64_t realm_alloc_bytes_in_use(void) {
    return atomic_load(&g_in_use);
}

/* ---- budgets ---- */

struct realm_alloc_budget *realm_alloc_budget_enter(struct realm_alloc_budget *b) {
    struct realm_alloc_budget *prev = t_budget;
    t_budget = b;
    return prev;
}

void realm_alloc_budget_leave(struct realm_alloc_budget *prev) {
    t_budget = prev;
}

struct realm_alloc_budget *realm_alloc_budget_current(void) {
    return t_budget;
}

int64_t realm_alloc_thread_failures(void) {
    return t_failures;
}

/* Every NULL a public allocator returns passes through here. */
static void *failed(void) {
    t_failures++;
    return NULL;
}

/* Charges n bytes to b (NULL: nothing to do); 0, or -1 (counted as refused) over the limit. A
 * compare-and-swap rather than add-then-check, so that two racing allocations near the limit
 * cannot both be refused because each saw the other's tentative charge. */
static int charge(struct realm_alloc_budget *b, size_t n) {
    if (!b) return 0;
    if (n > (size_t)INT64_MAX / 2) { /* no real allocation is this large: keep the sums in range */
        atomic_fetch_add(&b->refused, 1);
        return -1;
    }
    int64_t used = atomic_load(&b->used), want;
    do {
        want = used + (int64_t)n;
        if (b->limit > 0 && want > b->limit) {
            atomic_fetch_add(&b->refused, 1);
            return -1;
        }
    } while (!atomic_compare_exchange_weak(&b->used, &used, want));
    int64_t peak = atomic_load(&b->peak);
    while (want > peak && !atomic_compare_exchange_weak(&b->peak, &peak, want)) {
    }
    return 0;
}

static void credit(struct realm_alloc_budget *b, size_t n) {
    if (b) atomic_fetch_sub(&b->used, (int64_t)n);
}

/* ---- blocks ---- */

static void put_header(unsigned char *base, size_t size, struct realm_alloc_budget *b) {
    memcpy(base, &size, sizeof size);
    memcpy(base + sizeof size, &b, sizeof b);
}

static void get_header(const unsigned char *base, size_t *size, struct realm_alloc_budget **b) {
    memcpy(size, base, sizeof *size);
    memcpy(b, base + sizeof *size, sizeof *b);
}

void *realm_malloc(size_t size) {
    if (injected_failure() || size > SIZE_MAX - HDR) return failed();
    struct realm_alloc_budget *b = t_budget;
    if (charge(b, size)) return failed();
    unsigned char *p = malloc(size + HDR);
    if (!p) {
        credit(b, size);
        return failed();
    }
    put_header(p, size, b);
    atomic_fetch_add(&g_in_use, (int64_t)size);
    return p + HDR;
}

void *realm_calloc(size_t n, size_t size) {
    size_t total;
    if (realm_mul_size(n, size, &total)) return failed();
    void *p = realm_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void realm_free(void *p) {
    if (!p) return;
    unsigned char *base = (unsigned char *)p - HDR;
    size_t size;
    struct realm_alloc_budget *b;
    get_header(base, &size, &b);
    credit(b, size);
    atomic_fetch_sub(&g_in_use, (int64_t)size);
    free(base);
}

void *realm_realloc(void *p, size_t size) {
    if (!p) return realm_malloc(size);
    if (injected_failure() || size > SIZE_MAX - HDR) return failed();
    unsigned char *base = (unsigned char *)p - HDR;
    size_t old;
    struct realm_alloc_budget *b;
    get_header(base, &old, &b);
    /* growth is charged before the block moves, so a refusal leaves p as it was */
    if (size > old && charge(b, size - old)) return failed();
    unsigned char *nb = realloc(base, size + HDR);
    if (!nb) {
        if (size > old) credit(b, size - old);
        return failed();
    }
    if (size < old) credit(b, old - size);
    put_header(nb, size, b);
    atomic_fetch_add(&g_in_use, (int64_t)size - (int64_t)old);
    return nb + HDR;
}

void *realm_malloc_aligned(size_t alignment, size_t size) {
    if (injected_failure()) return failed();
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return failed();
    /* Layout: [pad][size_t size][budget*][void* base] p ... ; the three words sit right below p. */
    const size_t words = sizeof(size_t) + 2 * sizeof(void *);
    size_t extra = alignment + words;
    if (size > SIZE_MAX - extra) return failed();
    struct realm_alloc_budget *b = t_budget;
    if (charge(b, size)) return failed();
    unsigned char *base = malloc(size + extra);
    if (!base) {
        credit(b, size);
        return failed();
    }
    uintptr_t a = ((uintptr_t)base + words + alignment - 1) & ~(uintptr_t)(alignment - 1);
    unsigned char *p = (unsigned char *)a;
    memcpy(p - sizeof(void *), &base, sizeof base);
    put_header(p - words, size, b);
    atomic_fetch_add(&g_in_use, (int64_t)size);
    return p;
}

void realm_free_aligned(void *p) {
    if (!p) return;
    unsigned char *q = p;
    const size_t words = sizeof(size_t) + 2 * sizeof(void *);
    void *base;
    size_t size;
    struct realm_alloc_budget *b;
    memcpy(&base, q - sizeof(void *), sizeof base);
    get_header(q - words, &size, &b);
    credit(b, size);
    atomic_fetch_sub(&g_in_use, (int64_t)size);
    free(base);
}

/* ---- cJSON ---- */

static void *cjson_malloc(size_t size) {
    return realm_malloc(size);
}

void realm_alloc_install_cjson_hooks(void) {
    static atomic_flag done = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&done)) return;
    cJSON_Hooks h = {.malloc_fn = cjson_malloc, .free_fn = realm_free};
    cJSON_InitHooks(&h);
}

/* Before main and before any thread: no cJSON buffer can exist yet that was made with malloc and
 * would later reach realm_free (see alloc.h). alloc.c is linked into every program that uses
 * realm_malloc, so every such program gets the hooks. */
__attribute__((constructor)) static void install_hooks_at_start(void) {
    realm_alloc_install_cjson_hooks();
}

char *realm_strndup(const char *s, size_t n) {
    char *d = realm_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
