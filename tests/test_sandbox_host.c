/*
 * test_sandbox_host.c — the sandbox host without a model: the guest SDK's own tests run inside
 * the sandbox; modules are refused for WASI imports, unknown or mistyped imports, missing or
 * mistyped exports, an ABI version the host does not speak; the compiled-module disk cache hits,
 * and recompiles on a corrupt or foreign-writable file; a failing realm_init reports the guest's
 * status and message (the seed regression) and an endless one its time budget, or its wall-clock
 * limit when the budget is larger, or its cancel flag; the configuration's caps are checked; the
 * instance pool refuses tenants past max_instances; a memory bomb is capped, stack overflows trap,
 * a 100 MB emit is refused or capped, an endless realm_generate is stopped and the tenant serves
 * its next request from a fresh instance.
 */
#include <sys/stat.h>
#include <unistd.h>
#include <wasmtime.h>

#include "test_sandbox_util.h"

static struct realm_sbx_host *new_host(struct realm_sbx_config c) {
    struct realm_sbx_host *h = NULL;
    struct realm_err err;
    if (realm_sbx_host_new(&c, &h, &err)) {
        fprintf(stderr, "host: %s\n", err.msg);
        exit(1);
    }
    return h;
}

static void test_sdk_selftest(struct realm_sbx_host *h) {
    struct realm_sbx_module *m = ts_module(h, "sdk_selftest");
    struct realm_sbx_tenant *t = ts_tenant(h, m, "sdk");
    struct ts_capture out = {0};
    struct realm_err err;
    int rc = ts_run(t, "{}", &out, NULL, &err);
    CHECKF(rc == REALM_OK, "sdk self-test: %s", err.msg);
    CHECK(!strncmp(out.buf, "ok ", 3) && atoi(out.buf + 3) > 50);
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

/* Compiles WAT text and tries it as a guest; returns the status of module + tenant creation. */
static int try_wat(struct realm_sbx_host *h, const char *wat, char *msg, size_t cap) {
    wasm_byte_vec_t bin;
    wasmtime_error_t *e = wasmtime_wat2wasm(wat, strlen(wat), &bin);
    if (e) {
        wasmtime_error_delete(e);
        snprintf(msg, cap, "bad WAT in the test");
        return 999;
    }
    struct realm_sbx_module *m = NULL;
    struct realm_sbx_tenant *t = NULL;
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_sbx_module_new(h, bin.data, bin.size, "wat", &m, &err);
    if (rc == REALM_OK) rc = realm_sbx_tenant_new(h, m, NULL, &t, &err);
    snprintf(msg, cap, "%s", err.msg);
    tu_log("  wat -> %d %s\n", rc, err.msg);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    wasm_byte_vec_delete(&bin);
    return rc;
}

#define EXPORTS_OK                                                                                 \
    "(func (export \"realm_abi_version\") (result i32) i32.const 1)"                               \
    "(func (export \"realm_alloc\") (param i32) (result i32) i32.const 0)"                         \
    "(func (export \"realm_free\") (param i32))"                                                   \
    "(func (export \"realm_init\") (result i32) i32.const 0)"

static void test_module_checks(struct realm_sbx_host *h) {
    char msg[REALM_ERR_MSG_MAX];
    struct realm_sbx_module *m = NULL;
    struct realm_err err;
    /* a C guest that uses stdio imports WASI: refused at load, the import named */
    CHECK_EQ_INT(realm_sbx_module_load(h, ts_guest_path("uses_wasi"), &m, &err), REALM_E_FORMAT);
    CHECKF(strstr(err.msg, "wasi_snapshot_preview1") != NULL, "%s", err.msg);
    /* not wasm at all */
    CHECK_EQ_INT(realm_sbx_module_new(h, "hello", 5, "junk", &m, &err), REALM_E_FORMAT);
    CHECK_EQ_INT(realm_sbx_module_load(h, "/nonexistent/x.wasm", &m, &err), REALM_E_IO);
    /* a complete minimal guest works */
    CHECK_EQ_INT(try_wat(h,
                         "(module (memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_OK);
    CHECK_EQ_INT(
        try_wat(h, "(module (memory (export \"memory\") 1)" EXPORTS_OK ")", msg, sizeof msg),
        REALM_E_FORMAT);
    CHECKF(strstr(msg, "missing export realm_generate") != NULL, "%s", msg);
    CHECK_EQ_INT(try_wat(h,
                         "(module (memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (param i32) (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_FORMAT);
    CHECKF(strstr(msg, "realm_generate: type i:i, expected :i") != NULL, "%s", msg);
    CHECK_EQ_INT(try_wat(h,
                         "(module (import \"realm\" \"decode\" (func (param i32) (result i32)))"
                         "(memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_FORMAT);
    CHECKF(strstr(msg, "realm.decode: type i:i, expected iiiii:i") != NULL, "%s", msg);
    CHECK_EQ_INT(try_wat(h,
                         "(module (import \"realm\" \"open_file\" (func))"
                         "(memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_FORMAT);
    CHECKF(strstr(msg, "unknown import realm.open_file") != NULL, "%s", msg);
    CHECK_EQ_INT(try_wat(h,
                         "(module (import \"env\" \"x\" (func))"
                         "(memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_FORMAT);
    /* no memory export, a 64-bit memory */
    CHECK_EQ_INT(try_wat(h,
                         "(module " EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_FORMAT);
    CHECK(try_wat(h,
                  "(module (memory (export \"memory\") i64 1)" EXPORTS_OK
                  "(func (export \"realm_generate\") (result i32) i32.const 0))",
                  msg, sizeof msg) != REALM_OK);
    /* an initial memory above the tenant cap (1000 pages = 62.5 MiB > 32 MiB) cannot instantiate */
    CHECK(try_wat(h,
                  "(module (memory (export \"memory\") 1000)" EXPORTS_OK
                  "(func (export \"realm_generate\") (result i32) i32.const 0))",
                  msg, sizeof msg) != REALM_OK);
    /* a start function that traps */
    CHECK_EQ_INT(try_wat(h,
                         "(module (memory (export \"memory\") 1)" EXPORTS_OK
                         "(func (export \"realm_generate\") (result i32) i32.const 0)"
                         "(func $boom unreachable) (start $boom))",
                         msg, sizeof msg),
                 REALM_E_TRAP);
    /* a realm_init that returns something that is not a status */
    CHECK_EQ_INT(try_wat(h,
                         "(module (memory (export \"memory\") 1)"
                         "(func (export \"realm_abi_version\") (result i32) i32.const 1)"
                         "(func (export \"realm_alloc\") (param i32) (result i32) i32.const 0)"
                         "(func (export \"realm_free\") (param i32))"
                         "(func (export \"realm_init\") (result i32) i32.const -12345)"
                         "(func (export \"realm_generate\") (result i32) i32.const 0))",
                         msg, sizeof msg),
                 REALM_E_INVALID);
    CHECKF(strstr(msg, "status -12345") != NULL, "%s", msg);
    /* ABI version 2: refused before realm_init runs */
    struct realm_sbx_module *v2 = ts_module(h, "abi_v2");
    struct realm_sbx_tenant *t = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, v2, NULL, &t, &err), REALM_E_UNSUPPORTED);
    CHECKF(strstr(err.msg, "ABI version 2") != NULL && !strstr(err.msg, "must not run"), "%s",
           err.msg);
    CHECK(t == NULL);
    realm_sbx_module_free(v2);
}

static void test_init_failures(struct realm_sbx_host *h) {
    struct realm_err err;
    struct realm_sbx_tenant *t = NULL;
    /* the seed regression: a failing init is an error with the guest's status and message */
    struct realm_sbx_module *m = ts_module(h, "init_fail");
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, NULL, &t, &err), REALM_E_NOT_FOUND);
    CHECKF(!strcmp(err.msg, "guest init failed: not found: config: key 'greeting' missing"), "%s",
           err.msg);
    CHECK(t == NULL);
    realm_sbx_module_free(m);
    /* an endless init is stopped by the init budget */
    m = ts_module(h, "loop_init");
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, NULL, &t, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_init stopped: compute budget") != NULL, "%s", err.msg);
    CHECK(t == NULL);
    realm_sbx_module_free(m);
}

/* The init wall-clock limit (host config, or the tenant's) and the start's cancel flag also stop
 * guest code that never calls the host; over-large caps are refused. */
static void test_init_wall(void) {
    struct realm_sbx_config c = ts_config();
    c.init_budget_ms = 30000;
    c.init_wall_ms = 200;
    struct realm_sbx_host *h = new_host(c);
    struct realm_sbx_module *m = ts_module(h, "loop_init");
    struct realm_sbx_tenant *t = NULL;
    struct realm_err err;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, NULL, &t, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_init stopped: wall-clock limit of 200 ms") != NULL, "%s",
           err.msg);
    CHECK(t == NULL);
    struct realm_sbx_tenant_params p = {.name = "w", .init_wall_ms = 100};
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, &p, &t, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_init stopped: wall-clock limit of 100 ms") != NULL, "%s",
           err.msg);
    /* a set cancel flag stops it after the grace period, long before the wall limit */
    atomic_bool cancel;
    atomic_init(&cancel, true);
    p.init_wall_ms = 30000;
    p.cancel = &cancel;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, &p, &t, &err), REALM_E_CANCELLED);
    CHECKF(strstr(err.msg, "realm_init stopped: start cancelled") != NULL, "%s", err.msg);
    CHECK(t == NULL);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);

    c = ts_config();
    c.max_input_bytes = 1ull << 31; /* lengths are i32 */
    h = NULL;
    CHECK_EQ_INT(realm_sbx_host_new(&c, &h, &err), REALM_E_INVALID);
    CHECK(h == NULL);
}

static void test_cache(void) {
    char dir[] = "/tmp/realm-sbx-cache-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char sub[256];
    snprintf(sub, sizeof sub, "%s/modules", dir);
    struct realm_sbx_config c = ts_config();
    c.cache_dir = sub;
    struct realm_sbx_host *h = new_host(c);
    struct realm_sbx_module *m;
    m = ts_module(h, "default");
    CHECK(!realm_sbx_module_cached(m));
    realm_sbx_module_free(m);
    m = ts_module(h, "default");
    CHECK(realm_sbx_module_cached(m));
    /* the cached module runs */
    struct realm_sbx_tenant *t = ts_tenant(h, m, "cached");
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);

    /* find the entry, flip one payload byte: the checksum catches it, the module is rebuilt */
    char cmd[512], entry[512] = "";
    snprintf(cmd, sizeof cmd, "ls %s/*.cwasm", sub);
    FILE *p = popen(cmd, "r");
    CHECK(p && fgets(entry, sizeof entry, p));
    if (p) pclose(p);
    entry[strcspn(entry, "\n")] = 0;
    size_t n;
    unsigned char *buf = tu_read_file(entry, &n);
    CHECK(buf && n > 200);
    if (buf && n > 200) {
        buf[n - 100] ^= 0x5a;
        CHECK(tu_write_file(entry, buf, n) == 0);
        chmod(entry, 0600);
        m = ts_module(h, "default");
        CHECK(!realm_sbx_module_cached(m));
        t = ts_tenant(h, m, "recompiled");
        realm_sbx_tenant_free(t);
        realm_sbx_module_free(m);
        m = ts_module(h, "default");
        CHECK(realm_sbx_module_cached(m)); /* rewritten */
        realm_sbx_module_free(m);
        /* a file others may write is not trusted */
        chmod(entry, 0666);
        m = ts_module(h, "default");
        CHECK(!realm_sbx_module_cached(m));
        realm_sbx_module_free(m);
        struct stat st;
        CHECK(stat(entry, &st) == 0 && (st.st_mode & 0777) == 0600);
    }
    free(buf);
    realm_sbx_host_free(h);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* A pool too large for 4 GiB slots (issue 20: 100,000 tenants) sizes each slot by the memory
 * cap: the caps still hold to the byte, and accesses past the memory, inside the slot or past
 * it, still trap. */
static void test_dense_pool(void) {
    struct realm_sbx_config c = ts_config();
    c.max_instances = 100000;
    struct realm_sbx_host *h = new_host(c);
    struct realm_sbx_module *m = ts_module(h, "memory_bomb");
    struct ts_capture out = {0};
    struct realm_err err;
    unsigned n = 0, bytes = 0;
    struct realm_sbx_tenant *t = ts_tenant(h, m, "dense");
    CHECK_EQ_INT(ts_run(t, "{\"how\":\"grow\"}", &out, NULL, &err), REALM_E_NOMEM);
    CHECK(sscanf(out.buf, "%u %u", &n, &bytes) == 2 && bytes == TS_MEMORY_LIMIT);
    /* past the end of a full memory: the guard page after the slot, then far beyond it */
    const char *pokes[] = {"{\"how\":\"poke\",\"past\":0}", "{\"how\":\"poke\",\"past\":70000}",
                           "{\"how\":\"poke\",\"past\":1000000000}"};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(ts_run(t, pokes[i], &out, NULL, &err), REALM_E_TRAP);
        CHECKF(strstr(err.msg, "out of bounds memory access") != NULL, "%s", err.msg);
    }
    realm_sbx_tenant_free(t);
    /* a fresh instance (small memory): past its end but inside the slot traps too */
    t = ts_tenant(h, m, "dense2");
    CHECK_EQ_INT(ts_run(t, pokes[0], &out, NULL, &err), REALM_E_TRAP);
    CHECKF(strstr(err.msg, "out of bounds memory access") != NULL, "%s", err.msg);
    realm_sbx_tenant_free(t);
    struct realm_sbx_tenant_params tp = {.name = "small", .memory_limit = TS_MEMORY_LIMIT / 4};
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, &tp, &t, &err), REALM_OK);
    if (t) {
        CHECK_EQ_INT(ts_run(t, "{\"how\":\"grow\"}", &out, NULL, &err), REALM_E_NOMEM);
        CHECK(sscanf(out.buf, "%u %u", &n, &bytes) == 2 && bytes == TS_MEMORY_LIMIT / 4);
        realm_sbx_tenant_free(t);
    }
    free(out.buf);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);
    /* slots that cannot fit in the address space are refused plainly */
    c.memory_limit = 4096ull << 20;
    c.max_instances = 1000000;
    struct realm_sbx_host *big = NULL;
    CHECK_EQ_INT(realm_sbx_host_new(&c, &big, &err), REALM_E_INVALID);
    CHECKF(strstr(err.msg, "address space") != NULL, "%s", err.msg);
}

static void test_pool_limit(void) {
    struct realm_sbx_config c = ts_config();
    c.max_instances = 2;
    struct realm_sbx_host *h = new_host(c);
    struct realm_sbx_module *m = ts_module(h, "sdk_selftest");
    struct realm_sbx_tenant *a = ts_tenant(h, m, "a"), *b = ts_tenant(h, m, "b"), *x = NULL;
    struct realm_err err;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, NULL, &x, &err), REALM_E_LIMIT);
    realm_sbx_tenant_free(a);
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, NULL, &x, &err), REALM_OK);
    realm_sbx_tenant_free(x);
    realm_sbx_tenant_free(b);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);
}

static void test_memory_bomb(struct realm_sbx_host *h) {
    struct realm_sbx_module *m = ts_module(h, "memory_bomb");
    struct ts_capture out = {0};
    struct realm_err err;
    struct realm_sbx_tenant_stats st;
    const char *how[] = {"{\"how\":\"grow\"}", "{\"how\":\"malloc\"}"};
    for (int i = 0; i < 2; i++) {
        struct realm_sbx_tenant *t = ts_tenant(h, m, "bomb");
        CHECK_EQ_INT(ts_run(t, how[i], &out, NULL, &err), REALM_E_NOMEM);
        CHECKF(strstr(err.msg, "refused after") != NULL, "%s", err.msg);
        unsigned n = 0, bytes = 0;
        CHECK(sscanf(out.buf, "%u %u", &n, &bytes) == 2 && n > 0);
        CHECK(bytes <= TS_MEMORY_LIMIT && bytes > TS_MEMORY_LIMIT / 2);
        realm_sbx_tenant_get_stats(t, &st);
        CHECK(st.memory_bytes <= TS_MEMORY_LIMIT);
        CHECK_EQ_INT(st.restarts, 0); /* refused growth is not a fault */
        /* the instance still serves: the rest up to the cap, then refused again */
        CHECK_EQ_INT(ts_run(t, how[0], &out, NULL, &err), REALM_E_NOMEM);
        CHECK(sscanf(out.buf, "%u %u", &n, &bytes) == 2 && bytes == TS_MEMORY_LIMIT);
        realm_sbx_tenant_free(t);
    }
    /* a per-tenant cap below the host's applies to that tenant only */
    struct realm_sbx_tenant_params tp = {.name = "small", .memory_limit = TS_MEMORY_LIMIT / 4};
    struct realm_sbx_tenant *small = NULL, *big = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, &tp, &small, &err), REALM_OK);
    if (small) {
        CHECK_EQ_INT(ts_run(small, how[0], &out, NULL, &err), REALM_E_NOMEM);
        unsigned n = 0, bytes = 0;
        CHECK(sscanf(out.buf, "%u %u", &n, &bytes) == 2 && bytes == TS_MEMORY_LIMIT / 4);
        realm_sbx_tenant_free(small);
    }
    tp.memory_limit = (uint64_t)TS_MEMORY_LIMIT * 2;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, m, &tp, &big, &err), REALM_E_INVALID);
    CHECK(strstr(err.msg, "exceeds the host's") != NULL);
    free(out.buf);
    realm_sbx_module_free(m);
}

static void test_stack_overflow(struct realm_sbx_host *h) {
    struct realm_sbx_module *m = ts_module(h, "stack_overflow");
    struct realm_sbx_tenant *t = ts_tenant(h, m, "stack");
    struct ts_capture out = {0};
    struct realm_err err;
    CHECK_EQ_INT(ts_run(t, "{\"kind\":\"wasm\"}", &out, NULL, &err), REALM_E_TRAP);
    CHECKF(strstr(err.msg, "realm_generate trapped: call stack exhausted in rec") != NULL, "%s",
           err.msg);
    CHECK_EQ_INT(ts_run(t, "{\"kind\":\"shadow\"}", &out, NULL, &err), REALM_E_TRAP);
    CHECKF(strstr(err.msg, "trapped: out of bounds memory access in big") != NULL, "%s", err.msg);
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 1); /* the second request ran on a fresh instance */
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

static void test_emit_flood(struct realm_sbx_host *h) {
    struct realm_sbx_module *m = ts_module(h, "emit_flood");
    struct realm_sbx_tenant *t = ts_tenant(h, m, "flood");
    struct ts_capture out = {0};
    struct realm_sbx_usage u;
    struct realm_err err;
    CHECK_EQ_INT(ts_run(t, "{\"how\":\"one\"}", &out, &u, &err), REALM_E_RANGE);
    CHECK_EQ_INT(out.len, 0);
    CHECK_EQ_INT(ts_run(t, "{\"how\":\"chunks\"}", &out, &u, &err), REALM_E_LIMIT);
    CHECK_EQ_INT(out.len, TS_OUTPUT_LIMIT);
    CHECK_EQ_INT(u.output_bytes, TS_OUTPUT_LIMIT);
    CHECK_EQ_INT(ts_run(t, "{\"how\":\"ignore\"}", &out, &u, &err), REALM_OK);
    CHECK_EQ_INT(out.len, TS_OUTPUT_LIMIT);
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

static void test_endless_generate(struct realm_sbx_host *h) {
    struct realm_sbx_module *m = ts_module(h, "loop_generate");
    struct realm_sbx_tenant *t = ts_tenant(h, m, "loop");
    struct ts_capture out = {0};
    struct realm_err err;
    CHECK_EQ_INT(ts_run(t, "{}", &out, NULL, &err), REALM_OK);
    CHECK(!strcmp(out.buf, "alive 1"));
    CHECK_EQ_INT(ts_run(t, "{}", &out, NULL, &err), REALM_OK);
    CHECK(!strcmp(out.buf, "alive 2"));
    struct realm_sbx_usage u;
    CHECK_EQ_INT(ts_run(t, "{\"loop\":true}", &out, &u, &err), REALM_E_TIMEOUT);
    CHECKF(strstr(err.msg, "realm_generate stopped: compute budget of 1000 ms") != NULL, "%s",
           err.msg);
    CHECK(u.guest_ns >= 1000000000ull);
    /* the next request runs on a fresh instance: its count starts again */
    CHECK_EQ_INT(ts_run(t, "{}", &out, NULL, &err), REALM_OK);
    CHECK(!strcmp(out.buf, "alive 1"));
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(t, &st);
    CHECK_EQ_INT(st.restarts, 1);
    CHECK_EQ_INT(st.requests, 4);
    free(out.buf);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    struct realm_sbx_host *h = new_host(ts_config());
    test_sdk_selftest(h);
    test_module_checks(h);
    test_init_failures(h);
    test_memory_bomb(h);
    test_stack_overflow(h);
    test_emit_flood(h);
    test_endless_generate(h);
    realm_sbx_host_free(h);
    test_cache();
    test_pool_limit();
    test_dense_pool();
    test_init_wall();
    return tu_finish("test_sandbox_host");
}
