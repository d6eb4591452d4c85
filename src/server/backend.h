/*
 * backend.h — the narrow interface between the HTTP server and the sandbox: run one request in
 * a tenant's guest, receive the text it emits through a callback, and get its final status and
 * usage. backend.c implements it over include/realm/sandbox.h; nothing else in src/server/
 * knows about Wasmtime.
 *
 * Thread rule: srv_backend_generate is called concurrently from the server's worker threads (one
 * request per thread); the request's emit callback runs on the calling thread. srv_backend_new/free
 * are called by the controlling thread with no generation running.
 */
#ifndef REALM_SERVER_BACKEND_H
#define REALM_SERVER_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/sandbox.h"
#include "realm/server.h"

struct srv_backend;

struct srv_gen_result {
    int status; /* REALM_OK or the REALM_E_* that ended the request */
    /* what the tenant is charged: the tokens the host measured (realm_sbx_usage.measured_*),
     * raised to what the guest reported if that is more; set on every outcome */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t guest_prompt_tokens, guest_completion_tokens; /* the guest's usage() report; -1: none */
    int32_t finish_reason;           /* REALM_ABI_FINISH_*; -1 if the guest did not report one */
    char message[REALM_ERR_MSG_MAX]; /* why it failed (guest's last error log, trap text ...) */
};

struct srv_backend_stats {
    bool have_sched; /* the scheduler fields below are valid */
    int64_t steps, rows, decode_rows, prefill_rows, queue_depth;
    int64_t batch_hist[10]; /* rows per step: 1, 2, ≤4, ≤8, ≤16, ≤32, ≤64, ≤128, ≤256, more */
    double busy_seconds;
    int64_t instances;      /* guest instances alive (idle + busy) */
    int64_t instances_busy; /* running a request now */
    int64_t idle_sessions;  /* sessions left open in idle instances (a leak if not 0) */
    int64_t idle_kv_bytes;  /* their KV cache bytes */
    int64_t prefix_tokens;  /* prompt tokens served from cached KV blocks (prefix reuse) */
    int64_t kv_refused;     /* decode calls refused KV blocks (tenant quota or pool full) */
    /* the schedulers' admission queue and time to first logits (realm_sched_stats) */
    int64_t admission_waiting, active_sequences, admitted;
    double admission_wait_seconds, admission_wait_max_s;
    int64_t prompts_done, prompt_steps_total, prompt_steps_max;
    double prompt_seconds_total;
    bool have_kv;                                   /* the KV pool fields below are valid */
    int64_t kv_blocks, kv_used, kv_cached, kv_free; /* blocks: all, held, cached idle, free */
    int64_t kv_prefix_hits, kv_cow, kv_evictions;
    int64_t kv_touched;        /* blocks ever written: their pages are resident */
    int64_t kv_resident_bytes; /* their bytes */
};

/* Loads the config's models and compiles every guest (default + per tenant).
 * Ownership: borrows cfg (must outlive the backend); returns owned (*out; srv_backend_free).
 * Errors: the sandbox's (the message names the model or guest that failed). */
int srv_backend_new(const struct realm_server_config *cfg, struct srv_backend **out,
                    struct realm_err *err);
void srv_backend_free(struct srv_backend *b);

/* ---- state mode: tenants that come and change at run time (one caller at a time: state.c's
 * sync holds its mutex; generation may run concurrently) ---- */
/* Readies pool `tenant` (the next one: tenant == the pools made so far) for spec (borrowed until
 * replaced, and then until the backend is freed) running the guest at guest_path (NULL: the
 * default guest), and starts one instance. Errors: the sandbox's, named after the tenant. */
int srv_backend_tenant_add(struct srv_backend *b, size_t tenant,
                           const struct realm_tenant_spec *spec, const char *guest_path,
                           struct realm_err *err);
/* New limits and grants for pool `tenant`, for the instances started from now on (the KV quota
 * and host-memory budget apply at once). */
void srv_backend_tenant_update(struct srv_backend *b, size_t tenant,
                               const struct realm_tenant_spec *spec);
/* Switches pool `tenant` to the guest at guest_path (NULL: the default), compiling it now:
 * requests from now on start on it; idle instances of the old guest are freed and busy ones when
 * their request ends (a request in flight finishes on the guest it started with).
 * Errors: the sandbox's (the old guest stays). */
int srv_backend_tenant_set_guest(struct srv_backend *b, size_t tenant, const char *guest_path,
                                 struct realm_err *err);
/* Checks an uploaded guest for pool `tenant`: compiles it (imports, exports, ABI version) and
 * starts a scratch instance with the tenant's limits, which runs its realm_init within the
 * tenant's init budget; frees both. Returns REALM_OK, or the error with the guest's own message
 * in msg[cap]. */
int srv_backend_guest_check(struct srv_backend *b, size_t tenant, const void *wasm, size_t len,
                            char *msg, size_t cap);
/* Whether pool `tenant` can run requests (its guest compiled; false after a failed add until a
 * set_guest succeeds). */
bool srv_backend_tenant_ready(struct srv_backend *b, size_t tenant);
/* The largest guest memory any tenant may have (the sandbox's pooling slot size). */
uint64_t srv_backend_guest_memory_cap(const struct srv_backend *b);

/* Runs one request in tenant cfg->tenants[tenant]'s guest, on an idle instance of that tenant
 * (a new one is instantiated when all are busy). The caller prepared r with
 * realm_sbx_request_init (request JSON — docs/server.md "guest request" — and the emit callback)
 * and may cancel it from any thread with realm_sbx_request_cancel. Blocks until the guest
 * returns. Always fills *out; out->status is also the return value. */
int srv_backend_generate(struct srv_backend *b, size_t tenant, struct realm_sbx_request *r,
                         struct srv_gen_result *out);

/* Frees idle instances whose linear memory grew well past a fresh one's and that have been idle
 * for a while (see IDLE_TRIM_S in backend.c), so memory a guest grew once does not stay resident.
 * Any thread; cheap when there is nothing to free. Returns how many were freed. */
int32_t srv_backend_trim_idle(struct srv_backend *b);

/* Embeddings (host-only: no guest runs): the hidden state after the final norm of every token of
 * tokens[0..n) of cfg->models[model], into states (n x srv_backend_n_embd floats), through the
 * model's scheduler as tenant `tenant` (its fair share of batched steps) in a paged session of that
 * tenant, so its KV block quota applies; the session is freed before returning. Blocks until done;
 * `cancel` (may be NULL) stops it. Any thread. Errors: realm_sched_embed's (REALM_E_KV_FULL when
 * the tenant's quota or the pool has no room, REALM_E_CONTEXT_FULL past the model's context). */
int srv_backend_embed(struct srv_backend *b, size_t tenant, size_t model, const int32_t *tokens,
                      int32_t n, float *states, const atomic_bool *cancel, struct realm_err *err);
/* The width of cfg->models[model]'s hidden state (n_embd) and its training context. */
int32_t srv_backend_n_embd(struct srv_backend *b, size_t model);
int32_t srv_backend_n_ctx_train(struct srv_backend *b, size_t model);

/* The tokenizer of cfg->models[model] (borrowed; lives as long as the backend). Any thread. */
const struct realm_tokenizer *srv_backend_tokenizer(struct srv_backend *b, size_t model);

/* A snapshot of the scheduler / KV / instance counters (fields it cannot know stay false). */
void srv_backend_stats_get(struct srv_backend *b, struct srv_backend_stats *out);
/* Host memory tenant cfg->tenants[tenant]'s guests hold through imports now, and how many host
 * allocations its budget refused so far. */
void srv_backend_tenant_host_memory(struct srv_backend *b, size_t tenant, int64_t *bytes,
                                    int64_t *refused);
/* KV blocks tenant cfg->tenants[tenant]'s sessions hold now, over every model. */
int32_t srv_backend_tenant_kv_blocks(struct srv_backend *b, size_t tenant);
/* Tokens the schedulers ran for tenant slot `tenant` (decode and prompt rows, over every model),
 * and its step weight. */
void srv_backend_tenant_sched(struct srv_backend *b, size_t tenant, int64_t *decode_tokens,
                              int64_t *prefill_tokens, int32_t *weight);

#endif
