/*
 * test_sandbox_wasi.c — WASI command guests (wasi-nn apps, src/sandbox/command.c + wasi_nn.c) on
 * stories260K through the scheduler: tests/guests/wasi/nn_chat.c is detected as a command, its
 * greedy completion equals the default guest's for the same request (text, usage, measured
 * tokens), it streams piece by piece, runs again in a fresh instance with the same bytes, stops
 * at the request's max_tokens, and a client that goes away cancels it; tests/guests/wasi/
 * nn_escape.c gets an error for every file, socket and environment attempt; a command importing
 * anything but WASI and wasi-nn, or a wasi-nn function with a wrong type, is refused at load;
 * the memory cap and the wall-clock limit hold for commands too.
 * Label `sandbox` (the ASan build runs it).
 */
#include <wasmtime.h>

#include "realm/gguf.h"
#include "realm/served.h"
#include "test_sandbox_util.h"

static struct realm_sbx_module *load_wat(struct realm_sbx_host *h, const char *wat,
                                         struct realm_err *err, int *rc) {
    wasm_byte_vec_t wasm;
    wasmtime_error_t *e = wasmtime_wat2wasm(wat, strlen(wat), &wasm);
    CHECKF(e == NULL, "wat2wasm failed");
    if (e) {
        wasmtime_error_delete(e);
        *rc = -1;
        return NULL;
    }
    struct realm_sbx_module *m = NULL;
    *rc = realm_sbx_module_new(h, wasm.data, wasm.size, "bad.wasm", &m, err);
    wasm_byte_vec_delete(&wasm);
    return m;
}

static int g_emits_left;
static int emit_then_leave(void *user, const char *text, size_t len) {
    if (g_emits_left-- <= 0) return -1; /* the client is gone */
    return ts_emit(user, text, len);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) tu_skip("../shared/models/stories260K.gguf not found");
    struct realm_gguf *g = NULL;
    struct realm_served *sv = NULL;
    struct realm_err err;
    if (realm_gguf_open(path, &g, &err) || realm_served_new(g, NULL, &sv, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    struct realm_sbx_config c = ts_config();
    c.generate_budget_ms = 10000;
    struct realm_sbx_host *h = NULL;
    if (realm_sbx_host_new(&c, &h, &err)) {
        fprintf(stderr, "host: %s\n", err.msg);
        return 1;
    }
    struct realm_sbx_model_desc d = {.name = "stories",
                                     .model = sv->model,
                                     .tok = sv->tok,
                                     .sched = sv->sched,
                                     .kv_pool = sv->kv};
    CHECK_EQ_INT(realm_sbx_host_add_model(h, &d, &err), REALM_OK);

    struct realm_sbx_module *def = ts_module(h, "default");
    struct realm_sbx_module *chat = ts_module(h, "wasi/nn_chat");
    struct realm_sbx_module *esc = ts_module(h, "wasi/nn_escape");
    CHECK(!realm_sbx_module_is_command(def));
    CHECK(realm_sbx_module_is_command(chat) && realm_sbx_module_is_command(esc));
    struct realm_sbx_tenant *tdef = ts_tenant(h, def, "ref");
    struct realm_sbx_tenant *tchat = ts_tenant(h, chat, "nn");
    struct realm_sbx_tenant *tesc = ts_tenant(h, esc, "escape");

    /* greedy: the same text, usage and measured tokens as the default guest */
    const char *req = "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0}";
    struct ts_capture ref = {0}, out = {0};
    struct realm_sbx_usage ur, un;
    CHECK_EQ_INT(ts_run(tdef, req, &ref, &ur, &err), REALM_OK);
    CHECK_EQ_INT(ts_run(tchat, req, &out, &un, &err), REALM_OK);
    CHECK(ref.len > 10);
    CHECKF(out.len == ref.len && !memcmp(out.buf, ref.buf, ref.len), "nn [%s] vs default [%s]",
           out.buf ? out.buf : "", ref.buf ? ref.buf : "");
    CHECK(out.chunks > 1); /* streamed piece by piece */
    CHECK_EQ_INT(un.prompt_tokens, ur.prompt_tokens);
    CHECK_EQ_INT(un.completion_tokens, ur.completion_tokens);
    CHECK_EQ_INT(un.completion_tokens, 24);
    CHECK_EQ_INT(un.finish_reason, REALM_ABI_FINISH_LENGTH);
    CHECK_EQ_INT(un.measured_prompt_tokens, ur.measured_prompt_tokens);
    CHECK_EQ_INT(un.measured_completion_tokens, ur.measured_completion_tokens);
    CHECK_EQ_INT(un.output_bytes, (long long)ref.len);

    /* a fresh instance per request: the same bytes again, nothing left open */
    struct ts_capture again = {0};
    CHECK_EQ_INT(ts_run(tchat, req, &again, NULL, &err), REALM_OK);
    CHECK(again.len == out.len && !memcmp(again.buf, out.buf, out.len));
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(tchat, &st);
    CHECK_EQ_INT(st.sessions, 0);
    CHECK_EQ_INT(st.requests, 2);

    /* the request's max_tokens caps the guest, whatever its metadata says */
    CHECK_EQ_INT(ts_run(tchat,
                        "{\"prompt\":\"Once upon a time\",\"max_tokens\":3,\"temperature\":0}",
                        &out, &un, &err),
                 REALM_OK);
    CHECK_EQ_INT(un.completion_tokens, 3);

    /* the client goes away after two pieces: the request ends cancelled */
    g_emits_left = 2;
    struct realm_sbx_request r;
    ts_capture_reset(&out);
    realm_sbx_request_init(&r, req, strlen(req), emit_then_leave, &out);
    CHECK_EQ_INT(realm_sbx_tenant_generate(tchat, &r, &err), REALM_E_CANCELLED);
    CHECK(r.usage.measured_completion_tokens < 24);

    /* files, sockets, env, a path as a model name: each one an error */
    CHECK_EQ_INT(ts_run(tesc, "{}", &out, NULL, &err), REALM_OK);
    CHECKF(out.buf && !strstr(out.buf, "ALLOWED") && strstr(out.buf, "denied: "), "escape: %s",
           out.buf ? out.buf : "");
    int tries = 0, denied = -1;
    for (const char *p = out.buf; p && (p = strstr(p, ": denied")); p++)
        tries++;
    const char *last = out.buf ? strstr(out.buf, "denied: ") : NULL;
    if (last) sscanf(last, "denied: %d", &denied);
    CHECK(tries >= 12);
    CHECK_EQ_INT(denied, tries);

    /* the kind's import check */
    int rc = 0;
    struct realm_sbx_module *bad =
        load_wat(h,
                 "(module (import \"env\" \"system\" (func (param i32) (result i32)))"
                 " (memory (export \"memory\") 1) (func (export \"_start\")))",
                 &err, &rc);
    CHECK_EQ_INT(rc, REALM_E_FORMAT);
    CHECKF(strstr(err.msg, "env.system") != NULL, "%s", err.msg);
    realm_sbx_module_free(bad);
    bad = load_wat(
        h,
        "(module (import \"wasi_ephemeral_nn\" \"compute\" (func (param i64) (result i32)))"
        " (memory (export \"memory\") 1) (func (export \"_start\")))",
        &err, &rc);
    CHECK_EQ_INT(rc, REALM_E_FORMAT);
    CHECKF(strstr(err.msg, "wasi_ephemeral_nn.compute") != NULL, "%s", err.msg);
    realm_sbx_module_free(bad);
    bad = load_wat(
        h,
        "(module (import \"wasi_ephemeral_nn\" \"compute\" (func (param i32) (result i32)))"
        " (memory (export \"memory\") 1) (func (export \"_start\")))",
        &err, &rc);
    CHECK_EQ_INT(rc, REALM_OK);
    realm_sbx_module_free(bad);

    /* the tenant's limits: the memory cap (memory.grow past it fails: the guest exits 3) and
     * the wall-clock limit (a guest that never ends is stopped) */
    struct realm_sbx_module *lim = load_wat(
        h,
        "(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))"
        " (memory (export \"memory\") 1)"
        " (func (export \"_start\") (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1))"
        " (then (call $exit (i32.const 3))))))",
        &err, &rc);
    CHECK_EQ_INT(rc, REALM_OK);
    struct realm_sbx_tenant *tlim = ts_tenant(h, lim, "grow");
    CHECK_EQ_INT(ts_run(tlim, "{}", &out, NULL, &err), REALM_E_INVALID);
    CHECKF(strstr(err.msg, "exited with status 3") != NULL, "%s", err.msg);
    realm_sbx_tenant_free(tlim);
    realm_sbx_module_free(lim);
    struct realm_sbx_module *spin = load_wat(
        h, "(module (memory (export \"memory\") 1) (func (export \"_start\") (loop br 0)))", &err,
        &rc);
    CHECK_EQ_INT(rc, REALM_OK);
    struct realm_sbx_tenant_params tp = {.name = "spin", .generate_wall_ms = 200};
    struct realm_sbx_tenant *tspin = NULL;
    CHECK_EQ_INT(realm_sbx_tenant_new(h, spin, &tp, &tspin, &err), REALM_OK);
    if (tspin) {
        CHECK_EQ_INT(ts_run(tspin, "{}", &out, NULL, &err), REALM_E_TIMEOUT);
        CHECK_EQ_INT(ts_run(tspin, "{}", &out, NULL, &err), REALM_E_TIMEOUT); /* and again */
    }
    realm_sbx_tenant_free(tspin);
    realm_sbx_module_free(spin);

    free(ref.buf);
    free(out.buf);
    free(again.buf);
    realm_sbx_tenant_free(tdef);
    realm_sbx_tenant_free(tchat);
    realm_sbx_tenant_free(tesc);
    realm_sbx_module_free(def);
    realm_sbx_module_free(chat);
    realm_sbx_module_free(esc);
    realm_sbx_host_free(h);
    realm_served_free(sv);
    realm_gguf_close(g);
    return tu_finish("test_sandbox_wasi");
}
