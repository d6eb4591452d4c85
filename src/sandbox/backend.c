/*
 * backend.c — the decode path behind the `decode` import, kept behind one function so that the
 * scheduler (sched.h, continuous batching across tenants) can replace it: a model added with a
 * `decode` callback (e.g. realm_sched_decode) uses it directly; a model added with an engine
 * runs realm_engine_forward under the model's mutex, prefill in chunks of max_batch rows with
 * logits only on the last row, and polls the cancel flag between chunks.
 *
 * Thread rule: any thread; the engine path serialises forwards per model.
 */
#include "realm/alloc.h"
#include "sandbox/sandbox.h"

int sbx_backend_decode(struct sbx_model *m, uint32_t tenant, struct realm_session *s,
                       const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                       struct realm_err *err) {
    if (m->decode) return m->decode(m->decode_ctx, tenant, s, tokens, n, logits, cancel, err);

    int32_t len0 = realm_session_len(s);
    int rc = REALM_OK;
    for (int32_t done = 0; done < n && rc == REALM_OK;) {
        if (cancel && atomic_load_explicit(cancel, memory_order_relaxed)) {
            rc = REALM_E_CANCELLED;
            break;
        }
        int32_t k = n - done < m->max_batch ? n - done : m->max_batch;
        pthread_mutex_lock(&m->mu);
        for (int32_t i = 0; i < k; i++) {
            m->rows[i].session = s;
            m->rows[i].token = tokens[done + i];
            m->rows[i].logits = done + i == n - 1 ? logits : NULL;
        }
        rc = realm_engine_forward(m->engine, m->rows, k, err);
        pthread_mutex_unlock(&m->mu);
        done += k;
    }
    /* a failed call changes nothing: drop the chunks that did run */
    if (rc != REALM_OK && realm_session_len(s) != len0) realm_session_rewind(s, len0);
    return rc;
}
