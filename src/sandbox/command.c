/*
 * command.c — WASI command guests (wasi-nn apps written for WasmEdge/LlamaEdge): a module that
 * exports `_start` instead of the realm ABI. Such a program runs to its end once, so each request
 * gets a fresh store: instantiate, `_start`, drop. What it may touch is what this file grants:
 *   stdin   the request's stdin bytes (the prompt for `realm run`) or its JSON (`realm serve`);
 *   stdout  the request's output: each write goes to the emit callback (streamed as it comes),
 *           within max_output_bytes;
 *   stderr  the tenant's log (max_log_lines per call; the last line names a failure);
 *   args    the module's name only; env: none; clock and random: yes;
 *   files   none (no preopened directory, so every path fails); sockets: none (preview 1 has
 *           no socket creation, and no socket is preopened).
 * The tenant's limits apply as to realm_generate: the memory cap of the store, the compute budget
 * and wall-clock limit (epoch callback and ticker), cancellation, the host-memory budget of the
 * imports, and wasi-nn's token caps from the request (wasi_nn.c). Usage is measured by the host.
 *
 * A `proc_exit(0)` or a return from `_start` is success; another exit status fails the request
 * with the guest's last stderr line (or the last failing wasi-nn call) in the message.
 *
 * Thread rule: one thread at a time per tenant. Wasmtime may run the stdout callback on one of
 * its I/O threads while the tenant's thread waits inside the guest's write, so the callback only
 * touches the request's output state, which nothing else touches during that write.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "sandbox/wasi_nn.h"

static bool export_is(const wasm_name_t *n, const char *want) {
    return n->size == strlen(want) && !memcmp(n->data, want, n->size);
}

bool sbx_command_detect(const wasmtime_module_t *m) {
    wasm_exporttype_vec_t ex;
    wasmtime_module_exports(m, &ex);
    bool start = false, generate = false;
    for (size_t i = 0; i < ex.size; i++) {
        const wasm_name_t *n = wasm_exporttype_name(ex.data[i]);
        start = start || export_is(n, "_start");
        generate = generate || export_is(n, "realm_generate");
    }
    wasm_exporttype_vec_delete(&ex);
    return start && !generate;
}

static int check_imports(const wasmtime_module_t *m, const char *name, struct realm_err *err) {
    wasm_importtype_vec_t im;
    wasmtime_module_imports(m, &im);
    int rc = REALM_OK;
    for (size_t i = 0; i < im.size && rc == REALM_OK; i++) {
        const wasm_name_t *mod = wasm_importtype_module(im.data[i]);
        const wasm_name_t *nm = wasm_importtype_name(im.data[i]);
        const wasm_externtype_t *et = wasm_importtype_type(im.data[i]);
        int ml = (int)(mod->size < 64 ? mod->size : 64), nl = (int)(nm->size < 64 ? nm->size : 64);
        char sig[32] = "?";
        if (wasm_externtype_kind(et) == WASM_EXTERN_FUNC)
            sbx_functype_sig(wasm_externtype_as_functype_const(et), sig, sizeof sig);
        /* WASI's own names and types are checked by the linker (unknown ones fail to link) */
        if (export_is(mod, "wasi_snapshot_preview1") &&
            wasm_externtype_kind(et) == WASM_EXTERN_FUNC)
            continue;
        if (export_is(mod, "wasi_ephemeral_nn")) {
            if (!sbx_nn_known_import(nm->data, nm->size, sig))
                rc = realm_err_set(err, REALM_E_FORMAT,
                                   "sandbox: %s: unknown import wasi_ephemeral_nn.%.*s (type %s)",
                                   name, nl, nm->data, sig);
            continue;
        }
        rc = realm_err_set(err, REALM_E_FORMAT,
                           "sandbox: %s: imports %.*s.%.*s; a WASI command guest may import only "
                           "wasi_snapshot_preview1 and wasi_ephemeral_nn",
                           name, ml, mod->data, nl, nm->data);
    }
    wasm_importtype_vec_delete(&im);
    return rc;
}

int sbx_command_check(const wasmtime_module_t *m, const char *name, struct realm_err *err) {
    int rc = check_imports(m, name, err);
    if (rc) return rc;
    wasm_exporttype_vec_t ex;
    wasmtime_module_exports(m, &ex);
    bool memory = false;
    for (size_t i = 0; i < ex.size && rc == REALM_OK; i++) {
        const wasm_name_t *n = wasm_exporttype_name(ex.data[i]);
        const wasm_externtype_t *et = wasm_exporttype_type(ex.data[i]);
        if (export_is(n, "memory")) {
            const wasm_memorytype_t *mt = wasm_externtype_as_memorytype_const(et);
            memory = mt && !wasmtime_memorytype_is64(mt) && !wasmtime_memorytype_isshared(mt);
        } else if (export_is(n, "_start")) {
            char sig[32] = "?";
            if (wasm_externtype_kind(et) == WASM_EXTERN_FUNC)
                sbx_functype_sig(wasm_externtype_as_functype_const(et), sig, sizeof sig);
            if (strcmp(sig, ":"))
                rc = realm_err_set(err, REALM_E_FORMAT,
                                   "sandbox: %s: export _start: type %s, expected :", name, sig);
        }
    }
    wasm_exporttype_vec_delete(&ex);
    if (rc == REALM_OK && !memory)
        rc =
            realm_err_set(err, REALM_E_FORMAT,
                          "sandbox: %s: a WASI command must export a 32-bit unshared memory", name);
    return rc;
}

/* ---- stdio ---- */

/* The guest's stdout: each write is the request's output. */
static ptrdiff_t stdout_write(void *data, const unsigned char *buf, size_t len) {
    struct realm_sbx_tenant *t = data;
    struct realm_sbx_request *r = t->req;
    if (!r) return -EBADF;
    if ((uint64_t)r->usage.output_bytes + len > t->host->cfg.max_output_bytes) {
        snprintf(t->host_msg, sizeof t->host_msg, "stdout: output exceeds max_output_bytes");
        return -EFBIG;
    }
    if (len && r->emit && r->emit(r->emit_user, (const char *)buf, len) < 0) {
        atomic_store(&r->cancel, true); /* the client is gone */
        return -EPIPE;
    }
    if (len && !r->usage.first_emit_ns) r->usage.first_emit_ns = realm_now_ns() - t->call_start_ns;
    r->usage.output_bytes += (int64_t)len;
    return (ptrdiff_t)len;
}

/* The guest's stderr: its log (as the realm ABI's log import), the last line kept for errors. */
static ptrdiff_t stderr_write(void *data, const unsigned char *buf, size_t len) {
    struct realm_sbx_tenant *t = data;
    size_t n = len, k = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) return (ptrdiff_t)len;
    if (n > REALM_ABI_MAX_LOG) n = REALM_ABI_MAX_LOG;
    for (size_t i = 0; i < n; i++) { /* no control characters in logs and error replies */
        unsigned char c = buf[i];
        t->last_msg[k++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
    }
    t->last_msg[k] = 0;
    if (t->log_lines < t->host->cfg.max_log_lines) {
        t->log_lines++;
        realm_log(REALM_LOG_INFO, "guest", "%s: %s", t->name, t->last_msg);
    }
    return (ptrdiff_t)len;
}

/* The WASI context of one run: argv = the module's name, stdin, stdout and stderr as above;
 * nothing inherited, no preopened directories, no network. */
static int set_wasi(struct realm_sbx_tenant *t, const struct realm_sbx_request *r,
                    struct realm_err *err) {
    wasi_config_t *wc = wasi_config_new();
    if (!wc) return realm_err_set(err, REALM_E_NOMEM, "sandbox: %s: WASI: out of memory", t->name);
    const char *argv[1] = {t->mod->name};
    wasi_config_set_argv(wc, 1, argv);
    const char *in = r->stdin_data ? r->stdin_data : r->json;
    size_t in_len = r->stdin_data ? r->stdin_len : r->json_len;
    wasm_byte_vec_t bytes;
    wasm_byte_vec_new(&bytes, in_len, in ? in : ""); /* copied: the config owns it */
    wasi_config_set_stdin_bytes(wc, &bytes);
    wasi_config_set_stdout_custom(wc, stdout_write, t, NULL);
    wasi_config_set_stderr_custom(wc, stderr_write, t, NULL);
    wasmtime_error_t *e = wasmtime_context_set_wasi(t->cx, wc); /* takes wc */
    if (e) {
        char msg[256];
        sbx_error_text(e, msg, sizeof msg);
        return realm_err_set(err, REALM_E_INTERNAL, "sandbox: %s: WASI: %s", t->name, msg);
    }
    return REALM_OK;
}

/* ---- one run ---- */

/* Instantiates the command in a fresh store and runs `_start`. *exit_status: what the guest
 * passed to proc_exit (0 when `_start` returned). */
static int run_start(struct realm_sbx_tenant *t, struct realm_sbx_request *r, int *exit_status,
                     struct realm_err *err) {
    *exit_status = 0;
    int rc = sbx_tenant_store_new(t, err);
    if (rc || (rc = set_wasi(t, r, err))) return rc;
    char msg[300];
    wasm_trap_t *trap = NULL;
    wasmtime_context_set_epoch_deadline(t->cx, SBX_CHECK_TICKS);
    wasmtime_error_t *e = wasmtime_instance_pre_instantiate(t->mod->pre, t->cx, &t->inst, &trap);
    if (e || trap) {
        if (t->kill) {
            if (e) wasmtime_error_delete(e);
            if (trap) wasm_trap_delete(trap);
            return sbx_call_kill_error(t, "instantiate", err);
        }
        if (e)
            sbx_error_text(e, msg, sizeof msg);
        else
            sbx_trap_text(trap, msg, sizeof msg);
        return realm_err_set(err, e ? REALM_E_LIMIT : REALM_E_TRAP, "sandbox: %s: instantiate: %s",
                             t->name, msg);
    }
    wasmtime_extern_t mem, start;
    if (!wasmtime_instance_export_get(t->cx, &t->inst, "memory", 6, &mem) ||
        mem.kind != WASMTIME_EXTERN_MEMORY ||
        !wasmtime_instance_export_get(t->cx, &t->inst, "_start", 6, &start) ||
        start.kind != WASMTIME_EXTERN_FUNC)
        return realm_err_set(err, REALM_E_INTERNAL, "sandbox: %s: exports vanished", t->name);
    t->mem = mem.of.memory;
    wasmtime_context_set_epoch_deadline(t->cx, SBX_CHECK_TICKS);
    e = wasmtime_func_call(t->cx, &start.of.func, NULL, 0, NULL, 0, &trap);
    if (e) {
        if (wasmtime_error_exit_status(e, exit_status)) {
            wasmtime_error_delete(e);
            return REALM_OK;
        }
        if (t->kill) {
            wasmtime_error_delete(e);
            return sbx_call_kill_error(t, "_start", err);
        }
        sbx_error_text(e, msg, sizeof msg);
        return realm_err_set(err, REALM_E_INTERNAL, "sandbox: %s: _start: %s", t->name, msg);
    }
    if (trap) {
        sbx_trap_text(trap, msg, sizeof msg);
        if (t->kill) return sbx_call_kill_error(t, "_start", err);
        return realm_err_set(err, REALM_E_TRAP, "sandbox: %s: _start trapped: %s", t->name, msg);
    }
    return REALM_OK;
}

/* The request's usage after the run: measured as for realm_generate, reported from wasi-nn. */
static void fill_usage(struct realm_sbx_tenant *t, struct realm_sbx_request *r) {
    struct realm_sbx_usage *u = &r->usage;
    uint64_t total = realm_now_ns() - t->call_start_ns;
    u->total_ns = total;
    u->guest_ns = total > t->call_host_ns ? total - t->call_host_ns : 0;
    u->measured_completion_tokens = t->call_logit_decodes;
    u->measured_prompt_tokens =
        u->decoded_tokens - t->call_logit_decodes + t->call_sampled_sessions;
    if (u->measured_prompt_tokens < 0) u->measured_prompt_tokens = 0;
    int32_t p, c, f;
    sbx_nn_usage(t, &p, &c, &f);
    if (u->decode_calls > 0) {
        u->prompt_tokens = p;
        u->completion_tokens = c;
        u->finish_reason = f >= 0 ? f : REALM_ABI_FINISH_STOP;
    }
}

int sbx_command_generate(struct realm_sbx_tenant *t, struct realm_sbx_request *r,
                         struct realm_err *err) {
    r->usage =
        (struct realm_sbx_usage){.prompt_tokens = -1, .completion_tokens = -1, .finish_reason = -1};
    r->tool_calls_seen = false;
    r->choice = 0;
    for (int i = 0; i < REALM_ABI_MAX_CHOICES; i++)
        r->choice_completion[i] = r->choice_finish[i] = -1;
    t->stats.requests++;
    t->req = r;
    t->log_lines = 0;
    t->last_msg[0] = 0;
    t->host_msg[0] = 0;
    sbx_call_begin(t, t->host->cfg.generate_budget_ms, t->generate_wall_ms, &r->cancel);
    int exit_status = 0;
    int rc = run_start(t, r, &exit_status, err);
    sbx_call_end(t);
    fill_usage(t, r);
    int nn_status = sbx_nn_realm_status(t);
    t->req = NULL;
    sbx_tenant_store_drop(t); /* a command runs once: sessions, handles and store go */
    if (rc) return rc;
    if (atomic_load(&r->cancel))
        return realm_err_set(err, REALM_E_CANCELLED, "sandbox: %s: request cancelled", t->name);
    if (exit_status == 0) return REALM_OK;
    if (sbx_tenant_past_deadline(t))
        return realm_err_set(err, REALM_E_TIMEOUT,
                             "sandbox: %s: _start stopped: wall-clock limit of %llu ms", t->name,
                             (unsigned long long)t->wall_ms);
    return realm_err_set(err, nn_status ? nn_status : REALM_E_INVALID,
                         "guest: exited with status %d%s%s%s%s%s", exit_status,
                         t->last_msg[0] ? ": " : "", t->last_msg, t->host_msg[0] ? " (host: " : "",
                         t->host_msg, t->host_msg[0] ? ")" : "");
}
