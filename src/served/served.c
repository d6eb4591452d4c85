/*
 * served.c — the one place a model is made ready to serve (served.h): weights, tokenizer,
 * engine, paged KV pool, scheduler, in that order, undone in reverse on failure.
 */
#include "realm/served.h"

#include "realm/alloc.h"
#include "realm/kvpool.h"

static int check_params(const struct realm_served_params *p, struct realm_err *err) {
    if (p->max_batch < 0 || p->prefill_chunk < 0 || p->kv_block_tokens < 0 || p->threads < 0 ||
        p->kv_positions < 0)
        return realm_err_set(err, REALM_E_INVALID,
                             "served: negative batch, chunk, block or thread count");
    if (p->kv_type != REALM_KV_F16 && p->kv_type != REALM_KV_F32)
        return realm_err_set(err, REALM_E_INVALID, "served: unknown KV type %d", (int)p->kv_type);
    return REALM_OK;
}

/* The pool size for `positions` (0: one full context of the model), in whole blocks. */
static size_t kv_bytes_for(const struct realm_served *s, int64_t positions) {
    if (positions <= 0) positions = realm_model_config(s->model)->n_ctx_train;
    const size_t block = realm_model_kv_block_bytes(s->model, s->kv_type, s->kv_block_tokens);
    return block * (size_t)((positions + s->kv_block_tokens - 1) / s->kv_block_tokens);
}

int realm_served_new(const struct realm_gguf *g, const struct realm_served_params *params,
                     struct realm_served **out, struct realm_err *err) {
    static const struct realm_served_params defaults = {0};
    const struct realm_served_params *p = params ? params : &defaults;
    if (!g || !out) return realm_err_set(err, REALM_E_INVALID, "served: NULL argument");
    int rc = check_params(p, err);
    if (rc) return rc;
    struct realm_served *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "served: out of memory");
    s->max_batch = p->max_batch ? p->max_batch : REALM_SERVED_MAX_BATCH;
    s->kv_block_tokens = p->kv_block_tokens ? p->kv_block_tokens : REALM_SERVED_BLOCK_TOKENS;
    s->kv_type = p->kv_type;

    const struct realm_model_opts mo = {.prepack = p->prepack};
    if ((rc = realm_model_load_opts(g, &mo, &s->model, err))) goto fail;
    if ((rc = realm_tokenizer_load(g, &s->tok, err))) {
        if (!p->tokenizer_optional || rc == REALM_E_NOMEM) goto fail;
        s->tok = NULL;
        realm_err_clear(err);
    }
    if ((rc = realm_engine_new(s->model, p->threads, s->max_batch, &s->engine, err))) goto fail;
    /* address space is reserved here; pages are committed as blocks fill */
    const size_t kv_bytes = p->kv_bytes ? p->kv_bytes : kv_bytes_for(s, p->kv_positions);
    if ((rc = realm_model_kv_pool_new(s->model, s->kv_type, kv_bytes, s->kv_block_tokens, 0, &s->kv,
                                      err)))
        goto fail;
    const struct realm_sched_backend sb = realm_sched_backend_engine(s->engine, s->model);
    const struct realm_sched_params sp = {
        .max_batch_tokens = s->max_batch,
        .prefill_chunk = p->prefill_chunk ? p->prefill_chunk : REALM_SERVED_PREFILL_CHUNK,
        .tenant_share = p->tenant_share,
        .contended_prefill = p->contended_prefill,
        .prefill_reserve = p->prefill_reserve,
        .max_active = p->max_active};
    if ((rc = realm_sched_new(&sb, &sp, &s->sched, err))) goto fail;
    *out = s;
    return REALM_OK;
fail:
    realm_served_free(s);
    return rc;
}

void realm_served_free(struct realm_served *s) {
    if (!s) return;
    realm_sched_free(s->sched); /* first: its thread drives the engine */
    realm_kv_pool_free(s->kv);
    realm_engine_free(s->engine);
    realm_tokenizer_free(s->tok);
    realm_model_free(s->model);
    realm_free(s);
}

int realm_served_session(struct realm_served *s, uint32_t tenant, int32_t n_ctx,
                         struct realm_session **out, struct realm_err *err) {
    if (!s || !out) return realm_err_set(err, REALM_E_INVALID, "served: NULL argument");
    if (n_ctx == 0) n_ctx = realm_model_config(s->model)->n_ctx_train;
    return realm_session_new_paged(s->model, s->kv, tenant, n_ctx, out, err);
}
