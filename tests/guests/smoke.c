/*
 * smoke.c — the Wasmtime smoke-test guest (tests/test_sandbox_smoke.c): an export that calls a
 * host import, one that passes a string to the host, and the three ways a guest can misbehave
 * that the host must survive (out-of-bounds access, an endless loop, memory growth past a cap).
 * It uses its own imports ("realm"."smoke_*"), not the realm ABI.
 */
#include <stdint.h>
#include <string.h>

__attribute__((import_module("realm"), import_name("smoke_add"))) extern int32_t
smoke_add(int32_t a, int32_t b);
__attribute__((import_module("realm"), import_name("smoke_str"))) extern int32_t
smoke_str(const char *p, int32_t n);

/* Calls the host twice: once with scalars and once with a string in linear memory. */
__attribute__((export_name("smoke_run"))) int32_t smoke_run(int32_t x) {
    static const char msg[] = "hello from wasm";
    int32_t a = smoke_add(x, 1);
    int32_t b = smoke_str(msg, (int32_t)strlen(msg));
    return a * 1000 + b;
}

/* Reads far past the end of linear memory: MEMORY_OUT_OF_BOUNDS. */
__attribute__((export_name("smoke_oob"))) int32_t smoke_oob(int32_t off) {
    volatile int32_t *p = (volatile int32_t *)(uintptr_t)(0xFFFFFF00u + (uint32_t)off);
    return *p;
}

/* Never returns on its own: the host's epoch deadline must interrupt it. */
__attribute__((export_name("smoke_spin"))) int32_t smoke_spin(void) {
    volatile uint32_t n = 0;
    for (;;)
        n++;
    return (int32_t)n;
}

/* Grows memory by `pages` 64 KiB pages; -1 when refused (the store's limiter). */
__attribute__((export_name("smoke_grow"))) int32_t smoke_grow(int32_t pages) {
    return (int32_t)__builtin_wasm_memory_grow(0, (uint32_t)pages);
}

/* Calls an import that the host makes fail with a trap. */
__attribute__((export_name("smoke_host_trap"))) int32_t smoke_host_trap(void) {
    return smoke_add(-1, -1);
}
