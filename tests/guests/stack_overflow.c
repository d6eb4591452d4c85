/*
 * stack_overflow.c — unbounded recursion. {"kind": "wasm"}: small frames, so the engine's wasm
 * stack limit trips (trap "call stack exhausted"). {"kind": "shadow"}: 4 KiB locals per frame
 * on the C shadow stack in linear memory; with --stack-first it runs below address 0 and traps
 * on an out-of-bounds access instead of overwriting the heap.
 */
#include "check.h"

/* called through a volatile pointer so that the compiler cannot turn the recursion into a loop */
static int32_t (*volatile g_rec)(int32_t);
static int32_t (*volatile g_big)(int32_t);

static int32_t rec(int32_t n) {
    return g_rec(n + 1) + n;
}

static int32_t big(int32_t n) {
    volatile char buf[4096];
    buf[n & 4095] = (char)n;
    return g_big(n + 1) + buf[(n * 7) & 4095];
}

RG_EXPORT(realm_init) int32_t realm_init(void) {
    g_rec = rec;
    g_big = big;
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    bool shadow = !strcmp(req_str(req, "kind"), "shadow");
    rj_free(req);
    int32_t r = shadow ? g_big(0) : g_rec(0);
    return r == 12345 ? REALM_E_INTERNAL : REALM_OK; /* never reached */
}
