/*
 * kv.c — a session: one sequence's KV cache, f16 keys and values of every layer for n_ctx
 * positions (f16 by default, f32 on request), either contiguous per layer in the session's own
 * arrays or in blocks of a paged pool (kvpool.c). The forward pass reads and writes it only
 * through model_kv_k / model_kv_v / model_kv_run (model/model.h).
 *
 * Owns: the two cache arrays, or the pool sequence (its blocks go back to the pool on free).
 * Borrows the model and the pool (which must outlive the session).
 * Thread rule: one thread at a time.
 */
#include <inttypes.h>

#include "model/model.h"
#include "realm/alloc.h"

int realm_session_new(const struct realm_model *m, int32_t n_ctx, struct realm_session **out,
                      struct realm_err *err) {
    return realm_session_new_kv(m, n_ctx, REALM_KV_F16, out, err);
}

int realm_session_new_kv(const struct realm_model *m, int32_t n_ctx, enum realm_kv_type kv_type,
                         struct realm_session **out, struct realm_err *err) {
    if (!m || !out) return realm_err_set(err, REALM_E_INVALID, "session: NULL argument");
    if (kv_type != REALM_KV_F16 && kv_type != REALM_KV_F32)
        return realm_err_set(err, REALM_E_INVALID,
                             "session: kv_type %d, expected f16 (0) or f32 (1)", (int)kv_type);
    const size_t elt = kv_type == REALM_KV_F32 ? 4 : 2;
    if (n_ctx == 0) n_ctx = m->cfg.n_ctx_train;
    if (n_ctx < 0 || n_ctx > m->cfg.n_ctx_train)
        return realm_err_set(err, REALM_E_INVALID,
                             "session: n_ctx %d, expected 0..%d (the model's n_ctx_train)", n_ctx,
                             m->cfg.n_ctx_train);
    size_t per_layer, bytes;
    if (realm_mul_size((size_t)n_ctx, (size_t)m->kv_dim * elt, &per_layer) ||
        realm_mul_size(per_layer, (size_t)m->cfg.n_layer, &bytes))
        return realm_err_set(err, REALM_E_NOMEM, "session: KV cache size overflows");
    struct realm_session *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "session: out of memory");
    s->m = m;
    s->n_ctx = n_ctx;
    s->kv_type = kv_type;
    s->row_bytes = (size_t)m->kv_dim * elt;
    /* not zeroed: positions >= len are never read, and untouched pages cost no memory */
    s->k = realm_malloc(bytes);
    s->v = realm_malloc(bytes);
    if (!s->k || !s->v) {
        realm_session_free(s);
        return realm_err_set(err, REALM_E_NOMEM, "session: KV cache of %zu bytes: out of memory",
                             2 * bytes);
    }
    *out = s;
    return REALM_OK;
}

static size_t kv_elt(enum realm_kv_type t) {
    return t == REALM_KV_F32 ? 4 : 2;
}

size_t realm_model_kv_block_bytes(const struct realm_model *m, enum realm_kv_type kv_type,
                                  int32_t block_tokens) {
    if (block_tokens <= 0) block_tokens = 16;
    size_t row = (size_t)m->kv_dim * kv_elt(kv_type), per_layer, bytes;
    if (realm_mul_size(row, (size_t)block_tokens, &per_layer) ||
        realm_mul_size(per_layer, 2 * (size_t)m->cfg.n_layer, &bytes))
        return 0;
    return bytes;
}

int realm_model_kv_pool_new(const struct realm_model *m, enum realm_kv_type kv_type,
                            size_t memory_bytes, int32_t block_tokens, int32_t default_quota,
                            struct realm_kv_pool **out, struct realm_err *err) {
    if (!m || !out) return realm_err_set(err, REALM_E_INVALID, "kv pool: NULL argument");
    if (kv_type != REALM_KV_F16 && kv_type != REALM_KV_F32)
        return realm_err_set(err, REALM_E_INVALID,
                             "kv pool: kv_type %d, expected f16 (0) or f32 (1)", (int)kv_type);
    const struct realm_kv_pool_params p = {
        .n_layer = m->cfg.n_layer,
        .row_bytes = (size_t)m->kv_dim * kv_elt(kv_type),
        .block_tokens = block_tokens > 0 ? block_tokens : 16,
        .memory_bytes = memory_bytes,
        .default_quota = default_quota,
    };
    return realm_kv_pool_new(&p, out, err);
}

int realm_session_new_paged(const struct realm_model *m, struct realm_kv_pool *pool,
                            uint32_t tenant, int32_t n_ctx, struct realm_session **out,
                            struct realm_err *err) {
    if (!m || !pool || !out) return realm_err_set(err, REALM_E_INVALID, "session: NULL argument");
    if (n_ctx == 0) n_ctx = m->cfg.n_ctx_train;
    if (n_ctx < 0 || n_ctx > m->cfg.n_ctx_train)
        return realm_err_set(err, REALM_E_INVALID,
                             "session: n_ctx %d, expected 0..%d (the model's n_ctx_train)", n_ctx,
                             m->cfg.n_ctx_train);
    const size_t row = realm_kv_pool_row_bytes(pool);
    enum realm_kv_type t;
    if (row == (size_t)m->kv_dim * 2)
        t = REALM_KV_F16;
    else if (row == (size_t)m->kv_dim * 4)
        t = REALM_KV_F32;
    else
        return realm_err_set(err, REALM_E_INVALID,
                             "session: the KV pool's rows are %zu bytes, this model's %lld values",
                             row, (long long)m->kv_dim);
    if (realm_kv_pool_n_layer(pool) != m->cfg.n_layer)
        return realm_err_set(err, REALM_E_INVALID,
                             "session: the KV pool has %d layers, the model %d",
                             realm_kv_pool_n_layer(pool), m->cfg.n_layer);
    struct realm_session *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "session: out of memory");
    int rc = realm_kv_seq_new(pool, tenant, n_ctx, &s->seq, err);
    if (rc) {
        realm_free(s);
        return rc;
    }
    s->m = m;
    s->n_ctx = n_ctx;
    s->kv_type = t;
    s->row_bytes = row;
    s->block_tokens = realm_kv_pool_block_tokens(pool);
    *out = s;
    return REALM_OK;
}

bool realm_session_is_paged(const struct realm_session *s) {
    return s->seq != NULL;
}

int realm_session_reserve(struct realm_session *s, int32_t n, struct realm_err *err) {
    if (n < 0 || (int64_t)s->len + n > s->n_ctx)
        return realm_err_set(err, REALM_E_CONTEXT_FULL,
                             "session holds %d tokens, adding %d more exceeds its context of %d",
                             s->len, n, s->n_ctx);
    return s->seq ? realm_kv_seq_reserve(s->seq, n, err) : REALM_OK;
}

int32_t realm_session_attach_prefix(struct realm_session *s, const int32_t *tokens, int32_t n) {
    if (!s->seq || s->len != 0) return 0;
    s->len = realm_kv_seq_attach_prefix(s->seq, tokens, n);
    return s->len;
}

void realm_session_free(struct realm_session *s) {
    if (!s) return;
    realm_kv_seq_free(s->seq);
    realm_free(s->k);
    realm_free(s->v);
    realm_free(s);
}

int32_t realm_session_len(const struct realm_session *s) {
    return s->len;
}
int32_t realm_session_n_ctx(const struct realm_session *s) {
    return s->n_ctx;
}

int realm_session_rewind(struct realm_session *s, int32_t n_keep) {
    if (n_keep < 0 || n_keep > s->len) return REALM_E_RANGE;
    if (s->seq) realm_kv_seq_rewind(s->seq, n_keep); /* releases the blocks past n_keep */
    s->len = n_keep;
    return REALM_OK;
}
