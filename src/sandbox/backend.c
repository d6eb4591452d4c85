/*
 * backend.c — the decode path behind the `decode` import: the model's batching scheduler
 * (realm_sched_decode), so every tenant's decode joins the same batched steps; a model added
 * with a `decode` callback (tests) uses that instead, under the same contract. Tokens and context
 * room are checked there, once, before anything is queued; imp_decode checks only the guest's
 * spans.
 *
 * Thread rule: any thread (the scheduler takes concurrent callers).
 */
#include "realm/sched.h"
#include "sandbox/sandbox.h"

int sbx_backend_decode(struct sbx_model *m, uint32_t tenant, struct realm_session *s,
                       const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                       struct realm_err *err) {
    if (m->decode) return m->decode(m->decode_ctx, tenant, s, tokens, n, logits, cancel, err);
    return realm_sched_decode(m->sched, tenant, s, tokens, n, logits, cancel, err);
}
