/*
 * sandbox.h (internal) — the structures behind include/realm/sandbox.h, shared by the files of
 * src/sandbox/: host.c (engine, linker, ticker, models), cache.c (compiled-module disk cache),
 * module.c (compile + ABI check), tenant.c (stores, calls into the guest, limits, handles),
 * imports.c (the realm ABI v1 host functions) and backend.c (the decode path).
 *
 * Thread rule: see the public header. Everything under "the current call" in a tenant is touched
 * only by the thread running that tenant, except what the ticker reads: a tenant inside a call
 * is on the host's `active` list (under active_mu), and while it is there its wall_deadline_ns
 * and call_cancel do not change; the ticker only sets its `stop` flag (and bumps the engine's
 * epoch; the epoch callback runs on the tenant's thread).
 */
#ifndef REALM_SANDBOX_INTERNAL_H
#define REALM_SANDBOX_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <wasmtime.h>

#include "realm/clock.h"
#include "realm/sandbox.h"

#define SBX_MAX_HANDLES 64 /* per instance: models + sessions */
#define SBX_SERIAL_BITS 24 /* handle = slot << 24 | serial; serials count up per slot */
/* the last serial: a slot that issued it is retired once freed */
#define SBX_SERIAL_MASK ((1u << SBX_SERIAL_BITS) - 1)
#define SBX_CHECK_TICKS 2 /* epoch ticks between budget checks while guest code runs */

/* tenants alive at once, at most (realm_sbx_config.max_instances) */
#define SBX_MAX_INSTANCES 1000000u

/* A model tenants can open by name. Immutable after realm_sbx_host_add_model. */
struct sbx_model {
    char *name;
    size_t name_len;
    const struct realm_model *model;
    const struct realm_tokenizer *tok;
    struct realm_sched *sched; /* the decode path, unless `decode` replaces it */
    realm_sbx_decode_fn decode;
    void *decode_ctx;
    struct realm_kv_pool *kv_pool; /* NULL: contiguous sessions */
    int32_t n_vocab;
    int32_t n_ctx_train;
    uint64_t kv_bytes_per_pos; /* f16 K and V over every layer */
    char *info;                /* model_info JSON */
    size_t info_len;
};

struct realm_sbx_host {
    struct realm_sbx_config cfg; /* defaults filled in */
    wasm_engine_t *engine;
    wasmtime_linker_t *linker;
    char *cache_dir;      /* NULL: no disk cache */
    char config_key[256]; /* engine settings that change compiled code */
    pthread_t ticker;
    bool ticker_running;
    atomic_bool stop;
    struct sbx_model **models;
    int n_models, cap_models;
    pthread_mutex_t active_mu; /* guards `active` */
    bool active_mu_init;
    struct realm_sbx_tenant *active; /* tenants inside a call (list through active_next) */
    _Atomic uint32_t instances;      /* instances started: picks each one's first handle serial */
    _Atomic uint32_t next_tenant_id;
    _Atomic int64_t n_tenants;
};

struct realm_sbx_module {
    struct realm_sbx_host *host;
    _Atomic int refs; /* the owner's + one per tenant */
    wasmtime_module_t *module;
    wasmtime_instance_pre_t *pre;
    bool cached;
    bool has_initialize;
    bool command; /* a WASI command (`_start`, wasi-nn): one fresh store per request (command.c) */
    char name[64];
};

enum sbx_kind { SBX_SLOT_FREE = 0, SBX_SLOT_MODEL, SBX_SLOT_SESSION };

struct sbx_slot {
    uint32_t serial; /* of the handle now (or last) in this slot, or the instance's
                        starting point. Kept when the slot is freed, so that a reuse
                        gets the next one; SBX_SERIAL_MASK: retired once freed */
    uint8_t kind;
    struct sbx_model *model;
    struct realm_session *session; /* SBX_SLOT_SESSION */
    float *logits;                 /* SBX_SLOT_SESSION: n_vocab floats for unaligned guest buffers
                                      (allocated on first use) */
    uint64_t kv_bytes;
    uint64_t sampled_call; /* SBX_SLOT_SESSION: the call_serial of the call in which it last
                              began returning logits (counts it once per call) */
};

#define SBX_MAX_CALL_PROMPTS 16 /* first decodes per call remembered to spot a repeated prompt */

enum sbx_kill { SBX_KILL_NONE = 0, SBX_KILL_BUDGET, SBX_KILL_WALL, SBX_KILL_CANCEL };

struct realm_sbx_tenant {
    struct realm_sbx_host *host;
    struct realm_sbx_module *mod;
    char *name;
    uint32_t id;
    uint32_t group; /* what decode passes to the scheduler as the tenant */
    struct realm_alloc_budget
        *host_budget;      /* charged for the imports' allocations; borrowed, NULL: none */
    uint64_t memory_limit; /* linear-memory cap of this tenant's store */
    struct sbx_model *default_model;
    bool *allowed; /* per host model; NULL: all */

    wasmtime_store_t *store; /* NULL while broken (re-instantiated on the next request) */
    wasmtime_context_t *cx;
    wasmtime_instance_t inst;
    wasmtime_memory_t mem;
    wasmtime_func_t f_init, f_generate;

    struct sbx_slot slots[SBX_MAX_HANDLES];
    int32_t n_sessions;
    uint64_t kv_bytes;
    bool recycle;              /* handle serials used up: a fresh store before the next request */
    uint64_t init_wall_ms;     /* 0: none */
    uint64_t generate_wall_ms; /* 0: none */

    /* ---- the current call ---- */
    struct realm_sbx_request *req; /* NULL outside realm_generate */
    uint64_t call_start_ns;
    uint64_t call_host_ns;          /* time inside imports during this call */
    uint64_t budget_ns;             /* guest compute time allowed */
    uint64_t wall_deadline_ns;      /* 0: none */
    uint64_t wall_ms;               /* the limit behind it, for messages */
    const atomic_bool *call_cancel; /* the request's or the start's cancel flag (NULL: none) */
    atomic_bool stop;               /* set by the ticker: deadline passed or call_cancel set; what
                                       decode hands the scheduler as its cancel flag */
    struct realm_sbx_tenant *active_next; /* the host's active list */
    bool active;                          /* on that list */
    int64_t call_logit_decodes;           /* successful decodes that returned logits, this call */
    uint64_t call_serial;                 /* counts calls (sessions' sampled_call refers to it) */
    int64_t call_sampled_sessions;        /* sessions that returned logits, this call */
    /* a paged session whose first decode repeats the first decode of an earlier session in this
     * call (n choices of one prompt: the prefix cache serves it) is not charged that prompt
     * again; call_prompts are FNV-1a hashes of those first decodes */
    int64_t call_repeat_tokens;
    uint64_t call_prompts[SBX_MAX_CALL_PROMPTS];
    int32_t n_call_prompts;
    uint64_t cancel_seen_ns; /* when the epoch callback first saw the cancel flag (0: not) */
    int kill;                /* enum sbx_kill, set by the epoch callback */
    int log_lines;
    char last_msg[REALM_ABI_MAX_LOG + 1];
    char
        host_msg[REALM_ERR_MSG_MAX]; /* why the last refused host call (decode) failed, this call */

    int64_t unbilled_tokens; /* decoded in realm_init, not yet charged to a request */
    struct sbx_nn *nn;       /* a command's wasi-nn graphs and contexts (wasi_nn.c), or NULL */

    struct realm_sbx_tenant_stats stats;
};

/* ---- module.c ---- */
/* Writes a function type as "params:results" with i/I/f/F for i32/i64/f32/f64 (e.g. "ii:i"). */
void sbx_functype_sig(const wasm_functype_t *ft, char *buf, size_t cap);
/* Drops one reference (the last frees the module). */
void sbx_module_unref(struct realm_sbx_module *m);

/* ---- cache.c ---- */
/* Returns the module for wasm[0..len): from the cache if a valid entry exists, else compiled
 * (and stored). *cached tells which. */
int sbx_cache_module(struct realm_sbx_host *h, const void *wasm, size_t len, const char *name,
                     wasmtime_module_t **out, bool *cached, struct realm_err *err);

/* ---- imports.c ---- */
/* Defines every realm ABI v1 import in the host's linker. */
int sbx_define_imports(struct realm_sbx_host *h, struct realm_err *err);
/* Checks a module's imports against the ABI (module "realm", known names, exact types). */
int sbx_check_imports(const wasmtime_module_t *m, const char *name, struct realm_err *err);

/* ---- tenant.c ---- */
/* Frees every session and handle of the tenant. */
void sbx_tenant_close_handles(struct realm_sbx_tenant *t);
/* True once the current call's wall-clock deadline has passed. */
bool sbx_tenant_past_deadline(const struct realm_sbx_tenant *t);
/* The ticker's pass over the tenants inside a call (host.c calls it every tick). */
void sbx_tenants_tick(struct realm_sbx_host *h);

/* ---- tenant.c, for command.c ---- */
/* A new store for t (instance slot counted, memory cap, epoch callback); on failure none. */
int sbx_tenant_store_new(struct realm_sbx_tenant *t, struct realm_err *err);
/* Drops the store and everything of the instance (sessions, handles, wasi-nn state). */
void sbx_tenant_store_drop(struct realm_sbx_tenant *t);
/* Starts / ends a call's accounting and its place on the ticker's list. */
void sbx_call_begin(struct realm_sbx_tenant *t, uint64_t budget_ms, uint64_t wall_ms,
                    const atomic_bool *cancel);
void sbx_call_end(struct realm_sbx_tenant *t);
/* The error for a call the epoch callback stopped (t->kill set). */
int sbx_call_kill_error(struct realm_sbx_tenant *t, const char *what, struct realm_err *err);

/* ---- imports.c ---- */
/* Tests only: makes handle slot `slot` of t look as if it had last issued `serial` (the slot
 * must be free), so that serial exhaustion can be tested without 16 M handles. Returns
 * REALM_E_RANGE for a bad slot or serial, REALM_E_STATE for a slot in use. */
int sbx_tenant_test_set_serial(struct realm_sbx_tenant *t, int32_t slot, uint32_t serial);

/* ---- backend.c ---- */
/* The one decode entry point (the scheduler replaces what is behind it). */
int sbx_backend_decode(struct sbx_model *m, uint32_t tenant, struct realm_session *s,
                       const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                       struct realm_err *err);

/* Formats a Wasmtime error/trap message into buf (NUL-terminated) and frees the object. */
void sbx_error_text(wasmtime_error_t *e, char *buf, size_t cap);
void sbx_trap_text(wasm_trap_t *t, char *buf, size_t cap);

#endif
