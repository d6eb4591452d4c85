/*
 * test_sandbox_util.h — helpers shared by the sandbox tests: paths of the guests built by
 * cmake/guests.cmake, an emit sink that captures output, one-call request runners, and a host
 * configuration small enough for tests (short budgets, 32 MiB memory cap, 4 MiB output cap).
 */
#ifndef REALM_TEST_SANDBOX_UTIL_H
#define REALM_TEST_SANDBOX_UTIL_H

#include "realm/sandbox.h"
#include "testutil.h"

#define TS_MEMORY_LIMIT (32ull << 20)
#define TS_OUTPUT_LIMIT (4ull << 20)

static inline struct realm_sbx_config ts_config(void) {
    struct realm_sbx_config c = {0};
    c.cache_dir = ""; /* hermetic: no disk cache unless a test asks for one */
    c.memory_limit = TS_MEMORY_LIMIT;
    c.max_instances = 64;
    c.init_budget_ms = 300;
    c.generate_budget_ms = 1000;
    c.max_output_bytes = TS_OUTPUT_LIMIT;
    c.max_sessions = 4;
    return c;
}

/* Path of a built guest: "default" → build/guest/default.wasm, others → build/tests/guests/. */
static inline const char *ts_guest_path(const char *name) {
    static char path[4][1024];
    static int k;
    const char *build = getenv("REALM_BUILD");
    if (!build) tu_skip("REALM_BUILD not set");
    char *p = path[k++ & 3];
    snprintf(p, sizeof path[0], "%s/%s/%s.wasm", build,
             strcmp(name, "default") ? "tests/guests" : "guest", name);
    return p;
}

static inline struct realm_sbx_module *ts_module(struct realm_sbx_host *h, const char *name) {
    struct realm_sbx_module *m = NULL;
    struct realm_err err;
    if (realm_sbx_module_load(h, ts_guest_path(name), &m, &err)) {
        fprintf(stderr, "load %s: %s\n", name, err.msg);
        exit(1);
    }
    return m;
}

struct ts_capture {
    char *buf;
    size_t len, cap;
    int chunks;
};

static inline int ts_emit(void *user, const char *text, size_t len) {
    struct ts_capture *c = user;
    if (c->len + len + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len + 1)
            cap *= 2;
        char *b = realloc(c->buf, cap);
        if (!b) return -1;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, text, len);
    c->len += len;
    c->buf[c->len] = 0;
    c->chunks++;
    return 0;
}

static inline void ts_capture_reset(struct ts_capture *c) {
    c->len = 0;
    c->chunks = 0;
    if (c->buf) c->buf[0] = 0;
}

/* Runs one request; the output lands in *out (reset first), usage in *usage if not NULL. */
static inline int ts_run(struct realm_sbx_tenant *t, const char *json, struct ts_capture *out,
                         struct realm_sbx_usage *usage, struct realm_err *err) {
    struct realm_sbx_request r;
    ts_capture_reset(out);
    ts_emit(out, "", 0);
    out->chunks = 0;
    realm_sbx_request_init(&r, json, strlen(json), ts_emit, out);
    int rc = realm_sbx_tenant_generate(t, &r, err);
    if (usage) *usage = r.usage;
    tu_log("  %s -> %d %s [%.60s]\n", json, rc, rc ? err->msg : "", out->buf);
    return rc;
}

static inline struct realm_sbx_tenant *ts_tenant(struct realm_sbx_host *h,
                                                 struct realm_sbx_module *m, const char *name) {
    struct realm_sbx_tenant *t = NULL;
    struct realm_err err;
    struct realm_sbx_tenant_params p = {.name = name};
    if (realm_sbx_tenant_new(h, m, &p, &t, &err)) {
        fprintf(stderr, "tenant %s: %s\n", name, err.msg);
        exit(1);
    }
    return t;
}

#endif
