/*
 * test_sandbox_smoke.c — the Wasmtime smoke test, written against the raw C API (not realm's
 * sandbox layer) so that it checks the toolchain on its own: libwasmtime links, a C guest built
 * by cmake/guests.cmake instantiates, an export calls a host import with scalars and with a
 * string in linear memory, and the host survives the guest faults it must classify:
 * out-of-bounds access (trap code MEMORY_OUT_OF_BOUNDS), an endless loop stopped by an epoch
 * deadline driven by a ticker thread (INTERRUPT), memory growth refused by the store limiter
 * (memory.grow returns -1), and a host import that fails with a plain error (arrives as `err`).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <wasmtime.h>

#include "testutil.h"

static atomic_int g_stop;

/* Ticks the engine's epoch every millisecond until g_stop. */
static void *ticker(void *arg) {
    const wasm_engine_t *engine = arg;
    struct timespec ts = {0, 1000000};
    while (!atomic_load(&g_stop)) {
        nanosleep(&ts, NULL);
        wasmtime_engine_increment_epoch(engine);
    }
    return NULL;
}

static int g_add_calls;
static char g_str_seen[64];

/* realm.smoke_add(a, b) -> a + b; (-1, -1) fails the call with a plain error. */
static wasm_trap_t *host_add(void *env, wasmtime_caller_t *caller, const wasmtime_val_t *args,
                             size_t nargs, wasmtime_val_t *results, size_t nresults) {
    (void)env, (void)caller;
    CHECK(nargs == 2 && nresults == 1);
    g_add_calls++;
    if (args[0].of.i32 == -1 && args[1].of.i32 == -1) {
        static const char msg[] = "host refused";
        return wasmtime_trap_new(msg, sizeof msg - 1);
    }
    results[0].kind = WASMTIME_I32;
    results[0].of.i32 = args[0].of.i32 + args[1].of.i32;
    return NULL;
}

/* realm.smoke_str(ptr, len) -> len: copies the guest string after a 64-bit bounds check against
 * the current memory size, fetched on this call. */
static wasm_trap_t *host_str(void *env, wasmtime_caller_t *caller, const wasmtime_val_t *args,
                             size_t nargs, wasmtime_val_t *results, size_t nresults) {
    (void)env, (void)nargs, (void)nresults;
    wasmtime_extern_t mem;
    results[0].kind = WASMTIME_I32;
    if (!wasmtime_caller_export_get(caller, "memory", 6, &mem) ||
        mem.kind != WASMTIME_EXTERN_MEMORY) {
        results[0].of.i32 = -1;
        return NULL;
    }
    wasmtime_context_t *cx = wasmtime_caller_context(caller);
    uint8_t *base = wasmtime_memory_data(cx, &mem.of.memory);
    uint64_t size = wasmtime_memory_data_size(cx, &mem.of.memory);
    uint64_t ptr = (uint32_t)args[0].of.i32, len = (uint32_t)args[1].of.i32;
    if (ptr + len > size || len >= sizeof g_str_seen) {
        results[0].of.i32 = -4;
        return NULL;
    }
    memcpy(g_str_seen, base + ptr, len);
    g_str_seen[len] = 0;
    results[0].of.i32 = (int32_t)len;
    return NULL;
}

static void print_error(const char *what, wasmtime_error_t *err) {
    wasm_name_t msg;
    wasmtime_error_message(err, &msg);
    fprintf(stderr, "%s: %.*s\n", what, (int)msg.size, msg.data);
    wasm_byte_vec_delete(&msg);
}

/* Calls export `name` with up to one i32 argument. Returns 0 and *out on success, 1 on a trap
 * (its code in *code, -1 if it has none), 2 on an error. */
static int call(wasmtime_context_t *cx, wasmtime_instance_t *inst, const char *name, int nargs,
                int32_t arg, int32_t *out, int *code) {
    wasmtime_extern_t fn;
    if (!wasmtime_instance_export_get(cx, inst, name, strlen(name), &fn) ||
        fn.kind != WASMTIME_EXTERN_FUNC) {
        fprintf(stderr, "no export %s\n", name);
        return 3;
    }
    wasmtime_val_t a = {.kind = WASMTIME_I32, .of.i32 = arg};
    wasmtime_val_t r = {.kind = WASMTIME_I32, .of.i32 = 0};
    wasm_trap_t *trap = NULL;
    wasmtime_context_set_epoch_deadline(cx, 50);
    wasmtime_error_t *err = wasmtime_func_call(cx, &fn.of.func, &a, (size_t)nargs, &r, 1, &trap);
    if (err) {
        tu_log("%s -> error\n", name);
        wasm_name_t msg;
        wasmtime_error_message(err, &msg);
        CHECK(msg.size > 0);
        wasm_byte_vec_delete(&msg);
        wasmtime_error_delete(err);
        return 2;
    }
    if (trap) {
        wasmtime_trap_code_t c;
        *code = wasmtime_trap_code(trap, &c) ? c : -1;
        wasm_trap_delete(trap);
        return 1;
    }
    *out = r.of.i32;
    return 0;
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *build = getenv("REALM_BUILD");
    if (!build) tu_skip("REALM_BUILD not set");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/guests/smoke.wasm", build);
    size_t wasm_len;
    unsigned char *wasm = tu_read_file(path, &wasm_len);
    if (!wasm) {
        fprintf(stderr, "cannot read %s (build the `guests` target)\n", path);
        return 1;
    }

    wasm_config_t *cfg = wasm_config_new();
    wasmtime_config_epoch_interruption_set(cfg, true);
    wasm_engine_t *engine = wasm_engine_new_with_config(cfg); /* takes cfg */
    CHECK(engine != NULL);

    wasmtime_module_t *module = NULL;
    wasmtime_error_t *err = wasmtime_module_new(engine, wasm, wasm_len, &module);
    if (err) {
        print_error("compile", err);
        return 1;
    }

    wasmtime_linker_t *linker = wasmtime_linker_new(engine);
    wasm_functype_t *t_add = wasm_functype_new_2_1(wasm_valtype_new_i32(), wasm_valtype_new_i32(),
                                                   wasm_valtype_new_i32());
    err = wasmtime_linker_define_func(linker, "realm", 5, "smoke_add", 9, t_add, host_add, NULL,
                                      NULL);
    CHECK(err == NULL);
    err = wasmtime_linker_define_func(linker, "realm", 5, "smoke_str", 9, t_add, host_str, NULL,
                                      NULL);
    CHECK(err == NULL);
    wasm_functype_delete(t_add);

    pthread_t tick;
    CHECK(pthread_create(&tick, NULL, ticker, engine) == 0);

    wasmtime_store_t *store = wasmtime_store_new(engine, NULL, NULL);
    wasmtime_store_limiter(store, 4 << 20, -1, -1, -1, -1); /* 4 MiB per linear memory */
    wasmtime_context_t *cx = wasmtime_store_context(store);
    wasmtime_context_set_epoch_deadline(cx, 50);
    wasmtime_instance_t inst;
    wasm_trap_t *trap = NULL;
    err = wasmtime_linker_instantiate(linker, cx, module, &inst, &trap);
    if (err || trap) {
        if (err) print_error("instantiate", err);
        return 1;
    }

    int32_t out = 0;
    int code = -1;
    int32_t unused;
    /* reactor: C constructors run in _initialize, before any other export */
    wasmtime_extern_t init;
    CHECK(wasmtime_instance_export_get(cx, &inst, "_initialize", 11, &init));
    wasmtime_context_set_epoch_deadline(cx, 50);
    CHECK(wasmtime_func_call(cx, &init.of.func, NULL, 0, NULL, 0, &trap) == NULL && trap == NULL);

    /* export → host import (scalars and a string) */
    CHECK_EQ_INT(call(cx, &inst, "smoke_run", 1, 41, &out, &code), 0);
    CHECK_EQ_INT(out, 42 * 1000 + 15);
    CHECK(!strcmp(g_str_seen, "hello from wasm"));
    CHECK_EQ_INT(g_add_calls, 1);

    /* out-of-bounds load */
    CHECK_EQ_INT(call(cx, &inst, "smoke_oob", 1, 0, &unused, &code), 1);
    CHECK_EQ_INT(code, WASMTIME_TRAP_CODE_MEMORY_OUT_OF_BOUNDS);

    /* endless loop, interrupted by the epoch deadline */
    CHECK_EQ_INT(call(cx, &inst, "smoke_spin", 0, 0, &unused, &code), 1);
    CHECK_EQ_INT(code, WASMTIME_TRAP_CODE_INTERRUPT);

    /* the limiter refuses growth past 4 MiB (64 pages) without trapping */
    CHECK_EQ_INT(call(cx, &inst, "smoke_grow", 1, 1, &out, &code), 0);
    CHECK(out > 0);
    CHECK_EQ_INT(call(cx, &inst, "smoke_grow", 1, 64, &out, &code), 0);
    CHECK_EQ_INT(out, -1);

    /* a plain host error arrives as err, not as a trap */
    CHECK_EQ_INT(call(cx, &inst, "smoke_host_trap", 0, 0, &unused, &code), 2);

    /* the instance still works after all of that */
    CHECK_EQ_INT(call(cx, &inst, "smoke_run", 1, 1, &out, &code), 0);
    CHECK_EQ_INT(out, 2 * 1000 + 15);

    atomic_store(&g_stop, 1);
    pthread_join(tick, NULL);
    wasmtime_store_delete(store);
    wasmtime_linker_delete(linker);
    wasmtime_module_delete(module);
    wasm_engine_delete(engine);
    free(wasm);
    return tu_finish("test_sandbox_smoke");
}
