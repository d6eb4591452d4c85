/*
 * alloc.h — every allocation in the host library goes through realm_malloc/realm_free so that
 * memory can be accounted (process-wide, and per tenant through budgets) and allocation
 * failures can be injected in tests.
 *
 * Thread rule: all functions are thread-safe. The counters are process-wide atomics; the
 * current budget is per thread.
 */
#ifndef REALM_ALLOC_H
#define REALM_ALLOC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Like malloc/calloc/realloc/free. Returns NULL on failure (or on an injected failure, or over
 * the current budget's limit). Pointers are 16-byte aligned. A size of 0 returns a unique
 * non-NULL pointer. realm_free(NULL) is a no-op. realm_realloc returns NULL and leaves `p`
 * untouched on failure. */
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

/* ---- budgets: host memory charged to whoever it is allocated for (a tenant) ----
 *
 * While a budget is current on a thread, realm_malloc, realm_calloc, realm_realloc,
 * realm_malloc_aligned and realm_strndup on that thread charge the block's size to it, and fail
 * (NULL, `refused` + 1) when `used` would exceed `limit`. The block remembers its budget, so
 * realm_free / realm_free_aligned from any thread credit the right one; realm_realloc charges or
 * credits the size difference to the block's own budget (not the caller's current one). Blocks
 * allocated with no budget current are never charged.
 *
 * Lifetime: a budget must outlive every block charged to it. Code that allocates long-lived
 * shared state (a scheduler's tenant table, a pool's index) while a tenant may be current makes
 * no budget current around it: realm_alloc_budget_enter(NULL).
 * Thread rule: one budget may be current on many threads at once (counters are atomics); the
 * current budget is per thread. */
struct realm_alloc_budget {
    _Atomic int64_t used;    /* bytes charged now */
    int64_t limit;           /* bytes; 0: no limit (charge and count only). Set before use. */
    _Atomic int64_t peak;    /* highest `used` seen */
    _Atomic int64_t refused; /* allocations failed for the limit */
};
/* Makes b (NULL: none) this thread's current budget and returns the previous one, to be handed
 * back to realm_alloc_budget_leave. Scopes nest. Ownership: b is borrowed. */
struct realm_alloc_budget *realm_alloc_budget_enter(struct realm_alloc_budget *b);
/* Restores prev (what the matching realm_alloc_budget_enter returned) as the current budget. */
void realm_alloc_budget_leave(struct realm_alloc_budget *prev);
/* This thread's current budget, or NULL. */
struct realm_alloc_budget *realm_alloc_budget_current(void);
/* Allocations that failed on this thread so far (budget refusals, injected failures, malloc
 * returning NULL): compared before and after a call that only reports NULL (cJSON_Parse), it
 * tells running out of memory from bad input. */
int64_t realm_alloc_thread_failures(void);

/* Makes cJSON allocate through realm_malloc/realm_free (cJSON_InitHooks), so that JSON parsed
 * for a tenant is charged to its budget. Process-wide and idempotent. It already runs when the
 * program starts (a constructor in alloc.c): installing the hooks later would be unsafe, since a
 * cJSON string printed before then (with malloc) and freed after (with realm_free) would corrupt
 * the heap. So every cJSON buffer must be freed with cJSON_free or cJSON_Delete, never free(). */
void realm_alloc_install_cjson_hooks(void);
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
