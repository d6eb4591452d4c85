/*
 * kv.c — a session: one sequence's KV cache, f16 keys and values of every layer for n_ctx
 * positions, contiguous per layer (f16 by default, f32 on request). The forward pass reads and
 * writes it only through model_kv_k / model_kv_v (model/model.h) so that a paged pool can replace
 * it.
 *
 * Owns: the two cache arrays. Borrows the model (which must outlive the session).
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

void realm_session_free(struct realm_session *s) {
    if (!s) return;
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
    s->len = n_keep;
    return REALM_OK;
}
