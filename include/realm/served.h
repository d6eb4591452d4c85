/*
 * served.h — a model ready to serve: its weights, tokenizer, one engine, a paged KV pool and the
 * batching scheduler over them, built by one function so that the server, `realm run`,
 * `realm bench --tenants` and bench/tenants.c set up and decode the same way.
 *
 * Ownership: realm_served_new returns an owned bundle; every member below is owned by it and
 * freed by realm_served_free (the GGUF file is borrowed and must outlive it). Members are
 * read-only for callers. Thread rule: as for each member (the scheduler takes concurrent
 * decode calls; the engine one caller at a time, which the scheduler is once it runs).
 */
#ifndef REALM_SERVED_H
#define REALM_SERVED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/sched.h"
#include "realm/tokenizer.h"

#define REALM_SERVED_MAX_BATCH 64     /* default rows per batched forward and per step */
#define REALM_SERVED_PREFILL_CHUNK 32 /* default prompt tokens per request per step */
#define REALM_SERVED_BLOCK_TOKENS 16  /* default positions per KV block */

struct realm_served_params {
    bool prepack;          /* realm_model_opts.prepack (packed kernels for batched steps) */
    int threads;           /* engine threads; 0: one per core */
    int32_t max_batch;     /* engine rows and scheduler rows per step; 0: REALM_SERVED_MAX_BATCH */
    int32_t prefill_chunk; /* 0: REALM_SERVED_PREFILL_CHUNK */
    size_t kv_bytes;       /* the paged KV pool's size; 0: kv_positions */
    int64_t kv_positions;  /* with kv_bytes 0: room for this many positions in whole blocks;
                              0 too: one full context (n_ctx_train) */
    int32_t kv_block_tokens;    /* 0: REALM_SERVED_BLOCK_TOKENS */
    enum realm_kv_type kv_type; /* default (0) REALM_KV_F16 */
    bool
        tokenizer_optional; /* a file without a usable tokenizer is served without one (tok NULL) */
    int32_t tenant_share;   /* realm_sched_params.tenant_share */
    int32_t contended_prefill; /* realm_sched_params.contended_prefill */
    int32_t prefill_reserve;   /* realm_sched_params.prefill_reserve */
    int32_t max_active;        /* realm_sched_params.max_active */
};

struct realm_served {
    struct realm_model *model;
    struct realm_tokenizer *tok; /* NULL only with tokenizer_optional */
    struct realm_engine *engine;
    struct realm_kv_pool *kv;
    struct realm_sched *sched; /* over engine; sessions for it come from kv */
    int32_t max_batch;
    int32_t kv_block_tokens;
    enum realm_kv_type kv_type;
};

/* Loads the model and tokenizer of g and builds engine, KV pool and scheduler. p may be NULL
 * (all defaults). On failure *out is untouched and nothing is left allocated.
 * Errors: the loaders' (REALM_E_FORMAT, REALM_E_UNSUPPORTED, ...), REALM_E_INVALID (params),
 * REALM_E_NOMEM, REALM_E_INTERNAL (scheduler thread). */
int realm_served_new(const struct realm_gguf *g, const struct realm_served_params *p,
                     struct realm_served **out, struct realm_err *err);
/* Stops the scheduler (pending decode calls fail with REALM_E_CANCELLED; stop callers first) and
 * frees everything; every session made from kv must be freed before. NULL is a no-op. */
void realm_served_free(struct realm_served *s);

/* A new session of `tenant` in the served model's pool (n_ctx 0: the model's n_ctx_train).
 * Ownership: owned (*out; realm_session_free), before realm_served_free.
 * Errors: as realm_session_new_paged. */
int realm_served_session(struct realm_served *s, uint32_t tenant, int32_t n_ctx,
                         struct realm_session **out, struct realm_err *err);

#endif
