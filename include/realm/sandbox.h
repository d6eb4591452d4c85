/*
 * sandbox.h — tenant orchestration code in WebAssembly (Wasmtime), talking to the host only
 * through the realm ABI v1 (docs/abi.md).
 *
 * Objects:
 *   realm_sbx_host    one per process: the Wasmtime engine (epoch interruption, pooling
 *                     allocator), the linker with every realm import, the epoch ticker thread,
 *                     the on-disk cache of compiled modules and the list of models tenants may
 *                     open by name.
 *   realm_sbx_module  a compiled guest binary (compiled once, cached on disk by hash).
 *   realm_sbx_tenant  one instance of a module in its own store: memory cap, per-call time
 *                     budget, private handle table. realm_init has run successfully.
 *   realm_sbx_request one call of the guest's realm_generate: the request JSON, where emitted
 *                     text goes, a cancel flag, and the usage/timings filled in.
 *
 * Thread rule: the host and modules are thread-safe once the models are added (add models
 * before any tenant runs). A tenant is used by one thread at a time (any thread). A request's
 * cancel flag, and the cancel flag a tenant start borrows, may be set from any thread.
 *
 * Failure isolation: a guest that traps, runs past its time budget or wall-clock limit (host
 * work such as decode included), ignores cancellation or misuses the ABI ends only its own
 * request (REALM_E_TRAP / REALM_E_TIMEOUT / REALM_E_CANCELLED or the import's error code);
 * the tenant is then re-instantiated before its next request.
 */
#ifndef REALM_SANDBOX_H
#define REALM_SANDBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/abi.h"
#include "realm/err.h"
#include "realm/model.h"
#include "realm/tokenizer.h"

struct realm_sbx_host;
struct realm_sbx_module;
struct realm_sbx_tenant;
struct realm_alloc_budget; /* realm/alloc.h */

/* Host configuration. Zero fields take the defaults in brackets. */
struct realm_sbx_config {
    const char *cache_dir;   /* compiled-module cache [$REALM_CACHE or ~/.cache/realm, +/modules];
                                "" disables the disk cache */
    uint64_t memory_limit;   /* bytes of linear memory per tenant [64 MiB] */
    uint32_t max_instances;  /* pooling-allocator slots = tenants alive at once [1000], at most
                                1,000,000; each reserves (not commits) address space: 4 GiB + 32
                                MiB while max_instances * that fits in 32 TiB (no bounds checks
                                in guest code), else memory_limit + 64 KiB (bounds-checked).
                                A live tenant also holds 4 kernel memory maps: 100,000 need
                                vm.max_map_count >= 450000 (Linux's default is 65530) */
    uint32_t tick_us;        /* epoch ticker period [1000] */
    uint64_t init_budget_ms; /* guest compute time for _initialize + realm_init [1000] */
    uint64_t init_wall_ms;   /* wall time for _initialize + realm_abi_version + realm_init,
                                host calls included [10000] */
    uint64_t generate_budget_ms; /* guest compute time per request, host calls excluded [30000] */
    uint64_t wall_limit_ms;      /* wall time per request, host calls included [0: none];
                                    a tenant's generate_wall_ms overrides it */
    uint64_t cancel_grace_ms;    /* after cancellation, time a guest gets to unwind before it is
                                    stopped [100] */
    uint64_t max_output_bytes;   /* emit bytes per request [4 MiB] */
    int32_t max_sessions;        /* open sessions per tenant [8] */
    int32_t max_ctx;             /* cap on a session's n_ctx [0: the model's n_ctx_train] */
    uint64_t max_kv_bytes;       /* KV cache bytes per tenant [0: no cap] */
    int32_t max_log_lines;       /* guest log lines forwarded to realm_log per call [32] */
    uint64_t max_input_bytes;    /* tokenize / chat_format input bytes per call [4 MiB] */
    uint64_t max_json_values;    /* JSON values in one chat_format input, counted before parsing
                                    (each becomes a host-side cJSON node) [65536] */
};

/* Creates the host: engine, linker, ticker thread.
 * Ownership: returns owned (*out; realm_sbx_host_free). Nothing on failure.
 * Errors: REALM_E_INVALID (bad config), REALM_E_NOMEM, REALM_E_INTERNAL (Wasmtime or thread). */
int realm_sbx_host_new(const struct realm_sbx_config *cfg, struct realm_sbx_host **out,
                       struct realm_err *err);
/* Stops the ticker and frees the host. Every tenant and module must have been freed. NULL is a
 * no-op. */
void realm_sbx_host_free(struct realm_sbx_host *h);

/* The decode path of a model: appends tokens[0..n) to the session and writes the logits of the
 * last token (n_vocab floats) to `logits` (NULL: none). `cancel` is polled between steps.
 * Same contract as realm_sched_decode (sched.h), so a scheduler can be plugged in directly. */
typedef int (*realm_sbx_decode_fn)(void *ctx, uint32_t tenant, struct realm_session *session,
                                   const int32_t *tokens, int32_t n, float *logits,
                                   const atomic_bool *cancel, struct realm_err *err);

struct realm_sbx_model_desc {
    const char *name;                  /* what guests pass to model_open (≤ 256 bytes) */
    const struct realm_model *model;   /* borrowed: must outlive the host */
    const struct realm_tokenizer *tok; /* borrowed: must outlive the host */
    /* Decode path: the model's batching scheduler (borrowed, must outlive the host) — every
     * guest decode joins its steps. `decode` (+ decode_ctx), when set, replaces it: tests inject
     * a backend with the scheduler's contract there. One of the two is required. */
    struct realm_sched *sched;
    realm_sbx_decode_fn decode;
    void *decode_ctx;
    /* Paged KV (realm_model_kv_pool_new for this model; borrowed, must outlive the host): when
     * set, sessions keep their keys and values in this pool under the tenant's group, with the
     * pool's per-group block quota and prefix reuse; when NULL each session owns a contiguous
     * cache of n_ctx positions. */
    struct realm_kv_pool *kv_pool;
};

/* Adds a model to the list tenants can open by name. Not thread-safe against running tenants.
 * Errors: REALM_E_INVALID (empty/long/duplicate name, missing model/tokenizer/decode path,
 * vocab size mismatch), REALM_E_NOMEM. */
int realm_sbx_host_add_model(struct realm_sbx_host *h, const struct realm_sbx_model_desc *d,
                             struct realm_err *err);

/* Compiles a guest (or loads it from the disk cache, keyed by SHA-256 of the bytes and the
 * engine configuration; a cache file is checked against its own hash before Wasmtime sees it)
 * and checks its imports and exports against ABI v1, or, for a module that exports `_start` and
 * not realm_generate, against the WASI command kind (realm_sbx_module_is_command). `name` is used
 * in messages.
 * Ownership: returns owned (*out; realm_sbx_module_free); wasm is borrowed for the call.
 * Errors: REALM_E_FORMAT (not wasm, or imports/exports do not match ABI v1, named in the
 * message), REALM_E_NOMEM, REALM_E_INTERNAL. */
int realm_sbx_module_new(struct realm_sbx_host *h, const void *wasm, size_t len, const char *name,
                         struct realm_sbx_module **out, struct realm_err *err);
/* Reads and compiles a .wasm file. Errors: as realm_sbx_module_new, REALM_E_IO. */
int realm_sbx_module_load(struct realm_sbx_host *h, const char *path, struct realm_sbx_module **out,
                          struct realm_err *err);
/* True if the last realm_sbx_module_new/_load of this module came from the disk cache. */
bool realm_sbx_module_cached(const struct realm_sbx_module *m);
/* True if the module is a WASI command guest (docs/wasi-nn.md): it exports `_start` instead of
 * the realm ABI, imports only wasi_snapshot_preview1 and wasi_ephemeral_nn, and runs once per
 * request in a fresh instance with the request on stdin (realm_sbx_request.stdin_data, else its
 * JSON) and its stdout as the emitted text. */
bool realm_sbx_module_is_command(const struct realm_sbx_module *m);
/* Frees the module (tenants keep their own reference to the code). NULL is a no-op. */
void realm_sbx_module_free(struct realm_sbx_module *m);

struct realm_sbx_tenant_params {
    const char *name;          /* for messages and logs ["tenant"] */
    const char *default_model; /* what model_open("") opens [the host's first model] */
    const char *const *models; /* names this tenant may open [NULL: every model] */
    int n_models;
    uint64_t memory_limit; /* this tenant's linear-memory cap in bytes, at most the host's
                              memory_limit (the pooling slot size) [0: the host's] */
    uint32_t group;        /* scheduling identity: instances with the same group share one
                              fairness slot in the scheduler (a server tenant running several
                              instances at once) [0: the instance's own id] */
    /* Wall-clock limits, host work (decode, tokenize ...) included: past the deadline every
     * import that does work answers REALM_E_TIMEOUT, a decode blocked in the scheduler is
     * cancelled, and guest code is stopped at its next epoch check. */
    uint64_t init_wall_ms;     /* _initialize + realm_abi_version + realm_init, also when the
                                  instance is re-created before a request [0: the host's
                                  init_wall_ms] */
    uint64_t generate_wall_ms; /* each realm_generate [0: the host's wall_limit_ms] */
    /* Borrowed, only during realm_sbx_tenant_new (may be NULL): setting it from any thread
     * aborts an instance start that hangs, with REALM_E_CANCELLED. A re-instantiation inside
     * realm_sbx_tenant_generate uses the request's cancel flag instead. */
    const atomic_bool *cancel;
    /* Host memory the realm imports allocate for this instance (JSON trees, token and text
     * buffers, sessions and their contiguous KV caches) is charged to this budget while the
     * import runs (realm/alloc.h); an allocation over its limit makes the import answer
     * REALM_E_NOMEM. Borrowed: may be shared by several instances (one server tenant), must
     * outlive every instance using it. [NULL: not charged] */
    struct realm_alloc_budget *host_budget;
};

/* Instantiates the module in a new store, runs _initialize, checks realm_abi_version and runs
 * realm_init, all within the init wall-clock limit. If realm_init fails, the error carries the
 * guest's status and its last log message ("guest init failed: <status>: <message>") and no
 * tenant is created.
 * Ownership: returns owned (*out; realm_sbx_tenant_free); params are copied, except
 * params->cancel which is borrowed for this call only.
 * Errors: the guest's status, REALM_E_TRAP, REALM_E_TIMEOUT (compute budget, or "wall-clock
 * limit of N ms": also when realm_init failed after the deadline), REALM_E_CANCELLED
 * (params->cancel was set), REALM_E_UNSUPPORTED (ABI version), REALM_E_LIMIT (no pooling slot
 * left), REALM_E_NOT_FOUND (a model named in params), REALM_E_INVALID (m was loaded by another
 * host), REALM_E_NOMEM. */
int realm_sbx_tenant_new(struct realm_sbx_host *h, struct realm_sbx_module *m,
                         const struct realm_sbx_tenant_params *params,
                         struct realm_sbx_tenant **out, struct realm_err *err);
/* Closes the tenant's sessions and frees its store. NULL is a no-op. */
void realm_sbx_tenant_free(struct realm_sbx_tenant *t);

struct realm_sbx_tenant_stats {
    uint64_t memory_bytes; /* current linear memory size */
    int32_t sessions;      /* open sessions */
    uint64_t kv_bytes;     /* their KV cache */
    int64_t requests;      /* realm_generate calls */
    int64_t restarts;      /* re-instantiations after a trap/timeout */
    int64_t handle_errors; /* REALM_E_BAD_HANDLE answers */
};
/* The instance's figures now. Not while the tenant is running on another thread. */
void realm_sbx_tenant_get_stats(const struct realm_sbx_tenant *t,
                                struct realm_sbx_tenant_stats *out);
/* Closes every session the guest left open (their handles become stale; model handles stay) and
 * returns how many there were: a server calls it between requests so that a guest that forgets
 * session_close cannot hold KV memory while idle. Not while the tenant is running. */
int32_t realm_sbx_tenant_close_sessions(struct realm_sbx_tenant *t);

/* Emitted text goes here. Return 0, or a negative value to cancel the request (client gone). */
typedef int (*realm_sbx_emit_fn)(void *user, const char *text, size_t len);
/* A logprobs() record of the guest, checked by the host: ids[0] / lps[0] the sampled token,
 * ids[1..n) / lps[1..n) the alternatives best first (n - 1 <= REALM_ABI_MAX_TOP_LOGPROBS); ids
 * are in tok's vocabulary, lps are <= 0 (or -inf), never NaN. The arrays are only valid during
 * the call. Return 0, or a realm status the guest gets back (e.g. REALM_E_LIMIT). */
typedef int (*realm_sbx_logprobs_fn)(void *user, const struct realm_tokenizer *tok,
                                     const int32_t *ids, const float *lps, int32_t n);
/* The guest's tool_calls() report for the request (called at most once per request, from the
 * thread running the tenant): `json` (len bytes, NUL-terminated) is a validated array of 1..128
 * objects {"name": string, "arguments": string}, valid during the call. Return 0, or a realm
 * status the guest gets back. */
typedef int (*realm_sbx_tool_calls_fn)(void *user, const char *json, size_t len);

/* What one realm_generate call used. The host charges what it measured: usage() is for display
 * and can never lower the charge. measured_completion_tokens is the number of successful
 * decode calls that returned logits (logits_cap > 0: each one lets the guest sample one
 * token); measured_prompt_tokens is decoded_tokens - (measured_completion_tokens - 1) when
 * measured_completion_tokens >= 1, else decoded_tokens. So the two add up to decoded_tokens + 1
 * for the usual prefill-then-one-token loop, whose last sampled token is never decoded; for
 * guest/default.c they equal what it reports with usage(). A guest that rewinds and decodes
 * again pays for every decode. Tokens an instance decoded in realm_init (at its start, or at a
 * restart) are added to measured_prompt_tokens of the first request it serves (or of the
 * request whose restart failed).With several sessions
 * (the choices of an n > 1 request) measured_prompt_tokens is summed per session, except that a
 * paged session whose first decode repeats an earlier session's first decode of the same call is
 * not charged those tokens again: the paged pool's prefix cache serves them (all but a partial
 * last block), so n choices of one prompt pay for it once. */
struct realm_sbx_usage {
    /* reported by the guest through usage(); -1 when it did not */
    int32_t prompt_tokens, completion_tokens, finish_reason;
    /* measured by the host */
    int64_t measured_prompt_tokens;
    int64_t measured_completion_tokens;
    int64_t decoded_tokens; /* tokens appended by decode */
    int64_t decode_calls;
    int64_t output_bytes;    /* emitted */
    uint64_t guest_ns;       /* running guest code */
    uint64_t host_ns;        /* inside realm imports (decode included) */
    uint64_t decode_ns;      /* inside decode */
    uint64_t first_emit_ns;  /* from the start of the call to the first emit (0: none) */
    uint64_t prefill_ns;     /* duration of the first decode call (the prompt) */
    uint64_t prefill_end_ns; /* from the start of the call to the end of that decode */
    uint64_t total_ns;       /* the whole realm_generate call */
};

struct realm_sbx_request {
    const char *json; /* borrowed for the call */
    size_t json_len;
    /* a command guest's stdin (borrowed for the call; NULL: the JSON above). The JSON still sets
     * its wasi-nn defaults and caps (max_tokens, temperature, seed ...) */
    const char *stdin_data;
    size_t stdin_len;
    realm_sbx_emit_fn emit;
    void *emit_user;
    realm_sbx_logprobs_fn logprobs;     /* NULL: logprobs() records are accepted and dropped */
    realm_sbx_tool_calls_fn tool_calls; /* NULL: tool_calls() reports are checked and dropped */
    bool tool_calls_seen; /* a tool_calls() report was made (the host's; at most one) */
    /* choices (the request's "n"): 0 or 1 means one. The guest's choice() import sets `choice`
     * (< n_choices) for the emit, logprobs and usage calls that follow; emit / logprobs callbacks
     * read it here. usage() keeps per choice: completion_tokens is their sum, finish_reason the
     * last call's, choice_finish[i] each choice's (-1: not reported). */
    int32_t n_choices;
    int32_t choice;
    int32_t choice_completion[REALM_ABI_MAX_CHOICES];
    int32_t choice_finish[REALM_ABI_MAX_CHOICES];
    atomic_bool cancel;
    struct realm_sbx_usage usage; /* out */
};

/* Prepares r for one realm_sbx_tenant_generate: json (borrowed, must outlive the call) is what
 * the guest reads with request_read; emit (+ emit_user) receives its output; every other field is
 * zeroed (set logprobs / tool_calls after). Cannot fail. */
void realm_sbx_request_init(struct realm_sbx_request *r, const char *json, size_t json_len,
                            realm_sbx_emit_fn emit, void *emit_user);
/* Cancels the request: the guest's next realm import returns REALM_E_CANCELLED, a decode
 * waiting in the scheduler ends within a ticker period, and a guest that keeps running is
 * stopped after cancel_grace_ms. Any thread. */
void realm_sbx_request_cancel(struct realm_sbx_request *r);

/* Runs the guest's realm_generate on one request. A tenant broken by an earlier trap or timeout,
 * or whose handle serials are used up, is re-instantiated (and re-initialised) first.
 * r->usage is reset when the call starts and filled on every outcome, failures included (the
 * measured counts are what to bill).
 * Errors: the guest's own status (message: its last log line), REALM_E_TRAP (message: the trap),
 * REALM_E_TIMEOUT (compute budget, or "wall-clock limit of N ms": also when the guest returned
 * an error after the deadline), REALM_E_CANCELLED, REALM_E_INVALID (the guest returned a
 * number that is not a realm status), or those of realm_sbx_tenant_new when a broken tenant
 * cannot be re-initialised. */
int realm_sbx_tenant_generate(struct realm_sbx_tenant *t, struct realm_sbx_request *r,
                              struct realm_err *err);

#endif
