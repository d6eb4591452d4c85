/*
 * memory_bomb.c — grows linear memory until refused: {"how": "grow"} with memory.grow page by
 * page, {"how": "malloc"} with 1 MiB mallocs. Reports how far it got, then fails with
 * REALM_E_NOMEM; the host must have capped memory at its limit without trapping.
 * {"how": "poke", "past": N}: reads the byte N bytes past the end of the current memory, which
 * must trap (out of bounds) whatever the host's slot layout.
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    bool use_malloc = !strcmp(req_str(req, "how"), "malloc");
    if (!strcmp(req_str(req, "how"), "poke")) {
        uint32_t past = (uint32_t)rj_number(rj_get(req, "past"), 0);
        rj_free(req);
        volatile const uint8_t *p = (const uint8_t *)(uintptr_t)(mem_bytes() + past);
        return *p; /* traps: never returns */
    }
    rj_free(req);
    uint32_t n = 0;
    if (use_malloc) {
        void *keep = NULL;
        for (;;) { /* a chain of 1 MiB blocks so that nothing is unreachable */
            void **p = malloc(1 << 20);
            if (!p) break;
            *p = keep;
            keep = p;
            n++;
        }
    } else {
        while (__builtin_wasm_memory_grow(0, 1) != (size_t)-1)
            n++;
    }
    char buf[64];
    int len = rg_fmt(buf, sizeof buf, "%u %u", n, mem_bytes());
    realm_emit(buf, len);
    rg_logf(REALM_ABI_LOG_ERROR, "refused after %u %s", n, use_malloc ? "MiB" : "pages");
    return REALM_E_NOMEM;
}
