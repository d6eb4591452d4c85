/*
 * run_sandbox.c — `realm run` through the sandbox (the default path; --native bypasses it): the
 * model is loaded natively once, a guest orchestrator (the built-in default guest, or --guest
 * FILE.wasm) runs in its own Wasmtime store, receives the run options as a request JSON, and
 * streams text back through emit. A WASI command guest (a wasi-nn app, docs/wasi-nn.md) gets the
 * prompt on stdin instead, and its stdout is the output; the options still set its defaults.
 * The model is built as the server builds it (realm_served) and the guest decodes through the
 * same scheduler. Prints the native path's summary line plus the
 * sandbox's own time (guest code and host calls).
 *
 * The default guest (build/guest/default.wasm) is embedded in the binary at build time
 * (REALM_DEFAULT_GUEST, set by cmake/guests.cmake), so `realm run` works from any directory.
 *
 * Owns everything it opens, for the duration of the command.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/sandbox.h"
#include "realm/served.h"
#include "realm/threadpool.h"
#include "realm/tokenizer.h"

#ifdef REALM_DEFAULT_GUEST
/* The default guest's bytes, placed in .rodata by the assembler. */
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".hidden realm_default_guest_wasm\n"
        ".globl realm_default_guest_wasm\n"
        "realm_default_guest_wasm:\n"
        ".incbin \"" REALM_DEFAULT_GUEST "\"\n"
        ".hidden realm_default_guest_wasm_end\n"
        ".globl realm_default_guest_wasm_end\n"
        "realm_default_guest_wasm_end:\n"
        ".previous\n");
extern const unsigned char realm_default_guest_wasm[];
extern const unsigned char realm_default_guest_wasm_end[];
#endif

static int emit_stdout(void *user, const char *text, size_t len) {
    size_t *total = user;
    if (fwrite(text, 1, len, stdout) != len) return -1;
    fflush(stdout);
    *total += len;
    return 0;
}

/* The run options as a request of the default guest (docs/abi.md). NULL on a bad --tokens list
 * or out of memory (a message is printed). */
static char *build_request(const struct cli_run_opts *o) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    if (o->tokens) {
        int32_t *toks = NULL;
        int n = cli_parse_tokens(o->tokens, &toks);
        if (n < 0) {
            cli_error("--tokens: '%s': expected comma-separated token ids", o->tokens);
            cJSON_Delete(r);
            return NULL;
        }
        cJSON *a = cJSON_AddArrayToObject(r, "tokens");
        for (int i = 0; a && i < n; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(toks[i]));
        free(toks);
    } else {
        cJSON_AddStringToObject(r, "prompt", o->prompt ? o->prompt : "");
    }
    cJSON_AddNumberToObject(r, "max_tokens", o->n_predict);
    cJSON_AddNumberToObject(r, "temperature", o->temp);
    cJSON_AddNumberToObject(r, "top_k", o->top_k);
    cJSON_AddNumberToObject(r, "top_p", o->top_p);
    /* JSON numbers are exact up to 2^53; larger seeds are folded into that range */
    if (o->seed_set) cJSON_AddNumberToObject(r, "seed", (double)(o->seed & ((1ull << 53) - 1)));
    if (o->n_ctx > 0) cJSON_AddNumberToObject(r, "n_ctx", o->n_ctx);
    cJSON_AddBoolToObject(r, "add_bos", !o->no_bos);
    cJSON_AddBoolToObject(r, "ignore_eos", o->ignore_eos);
    /* print exactly what the native path prints: it drops SPM's leading space */
    cJSON_AddBoolToObject(r, "strip_leading_space", true);
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    if (!s) cli_error("out of memory");
    return s;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

int cli_run_sandbox(const struct cli_run_opts *o) {
    struct realm_gguf *g = NULL;
    struct realm_served *sv = NULL;
    struct realm_sbx_host *host = NULL;
    struct realm_sbx_module *mod = NULL;
    struct realm_sbx_tenant *ten = NULL;
    char *req_json = NULL;
    int status = 1;
    struct realm_err err;

    if (o->logits_out || o->kv_f32) {
        cli_error("run: %s needs --native", o->logits_out ? "--logits-out" : "--kv f32");
        return 2;
    }
    if (o->seed_set && o->seed >= (1ull << 53)) {
        cli_error("--seed: %llu: the sandboxed path takes seeds below 2^53",
                  (unsigned long long)o->seed);
        return 2;
    }
    if (!(req_json = build_request(o))) return 2;
    if (realm_gguf_open(o->model, &g, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    /* the server's decode path (scheduler over engine and paged KV), with the prompt run in
     * chunks of --batch rows as the native path does */
    int32_t batch = o->batch > 0 ? o->batch : 512;
    const struct realm_served_params sp = {
        .threads = o->threads, .max_batch = batch, .prefill_chunk = batch};
    if (realm_served_new(g, &sp, &sv, &err)) {
        cli_error("%s: %s", o->model, err.msg);
        goto out;
    }

    double t0 = realm_now_s();
    /* one tenant: a small instance pool (each slot reserves address space for a memory) */
    struct realm_sbx_config sc = {.max_instances = 4};
    if (realm_sbx_host_new(&sc, &host, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    struct realm_sbx_model_desc md = {.name = base_name(o->model),
                                      .model = sv->model,
                                      .tok = sv->tok,
                                      .sched = sv->sched,
                                      .kv_pool = sv->kv};
    if (realm_sbx_host_add_model(host, &md, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    if (o->guest) {
        if (realm_sbx_module_load(host, o->guest, &mod, &err)) {
            cli_error("%s", err.msg);
            goto out;
        }
    } else {
#ifdef REALM_DEFAULT_GUEST
        size_t n = (size_t)(realm_default_guest_wasm_end - realm_default_guest_wasm);
        if (realm_sbx_module_new(host, realm_default_guest_wasm, n, "default.wasm", &mod, &err)) {
            cli_error("%s", err.msg);
            goto out;
        }
#else
        cli_error("run: this build has no default guest; pass --guest FILE.wasm or --native");
        goto out;
#endif
    }
    struct realm_sbx_tenant_params tp = {.name = "cli"};
    if (realm_sbx_tenant_new(host, mod, &tp, &ten, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    double t_setup = realm_now_s() - t0;

    size_t emitted = 0;
    struct realm_sbx_request rq;
    realm_sbx_request_init(&rq, req_json, strlen(req_json), emit_stdout, &emitted);
    if (realm_sbx_module_is_command(mod)) { /* a WASI command (wasi-nn app) reads the prompt */
        rq.stdin_data = o->prompt ? o->prompt : "";
        rq.stdin_len = strlen(rq.stdin_data);
    }
    int rc = realm_sbx_tenant_generate(ten, &rq, &err);
    if (emitted > 0 || rq.usage.completion_tokens > 0) putchar('\n');
    fflush(stdout);
    if (rc) {
        cli_error("%s", err.msg);
        goto out;
    }
    const struct realm_sbx_usage *u = &rq.usage;
    int n_prompt = u->prompt_tokens, n_gen = u->completion_tokens;
    int64_t n_fwd = u->decode_calls > 0 ? u->decode_calls - 1 : 0;
    double t_prefill = (double)u->prefill_ns * 1e-9;
    double t_decode = (double)(u->total_ns - u->prefill_end_ns) * 1e-9;
    const char *stop = NULL;
    if (u->finish_reason == REALM_ABI_FINISH_STOP)
        stop = "end of generation";
    else if (u->finish_reason == REALM_ABI_FINISH_LENGTH && n_gen < o->n_predict)
        stop = "context full";
    if (n_prompt < 0 || n_gen < 0) { /* a guest that does not report usage: what the host saw */
        fprintf(stderr,
                "realm: the guest reported no usage; %lld tokens decoded in %lld calls, sandbox: "
                "guest %.1f ms, "
                "host calls %.1f ms, setup %.1f ms\n",
                (long long)u->decoded_tokens, (long long)u->decode_calls,
                (double)u->guest_ns * 1e-6, (double)u->host_ns * 1e-6, t_setup * 1e3);
        status = 0;
        goto out;
    }
    fprintf(stderr,
            "realm: prompt %d tokens, generated %d tokens, prefill %.1f tok/s, decode %.1f tok/s "
            "(%d threads%s%s), sandbox: guest %.1f ms, host calls %.1f ms, setup %.1f ms%s\n",
            n_prompt, n_gen, t_prefill > 0 ? n_prompt / t_prefill : 0.0,
            n_fwd > 0 && t_decode > 0 ? (double)n_fwd / t_decode : 0.0,
            o->threads > 0 ? o->threads : realm_cpu_count(), stop ? ", stopped: " : "",
            stop ? stop : "", (double)u->guest_ns * 1e-6, (double)u->host_ns * 1e-6, t_setup * 1e3,
            realm_sbx_module_cached(mod) ? " (cached module)" : "");
    status = 0;
out:
    realm_sbx_tenant_free(ten);
    realm_sbx_module_free(mod);
    realm_sbx_host_free(host);
    cJSON_free(req_json);
    realm_served_free(sv);
    realm_gguf_close(g);
    return status;
}
