/*
 * sched_engine.c — the scheduler's default backend: a realm_engine over its model. Kept apart from
 * sched.c so that the scheduler core has no dependency on the engine (its tests inject a fake).
 */
#include "realm/sched.h"

static int engine_forward(void *ctx, const struct realm_batch_row *rows, int32_t n_rows,
                          struct realm_err *err) {
    return realm_engine_forward(ctx, rows, n_rows, err);
}

static int32_t engine_room(void *ctx, const struct realm_session *sess) {
    (void)ctx;
    return realm_session_n_ctx(sess) - realm_session_len(sess);
}

static int engine_reserve(void *ctx, struct realm_session *sess, int32_t k, struct realm_err *err) {
    (void)ctx;
    return realm_session_reserve(sess, k, err);
}

static int32_t engine_attach(void *ctx, struct realm_session *sess, const int32_t *tokens,
                             int32_t n) {
    (void)ctx;
    return realm_session_attach_prefix(sess, tokens, n);
}

static int32_t engine_len(void *ctx, const struct realm_session *sess) {
    (void)ctx;
    return realm_session_len(sess);
}

static int engine_rewind(void *ctx, struct realm_session *sess, int32_t n_keep) {
    (void)ctx;
    return realm_session_rewind(sess, n_keep);
}

struct realm_sched_backend realm_sched_backend_engine(struct realm_engine *e,
                                                      const struct realm_model *m) {
    return (struct realm_sched_backend){.ctx = e,
                                        .forward = engine_forward,
                                        .room = engine_room,
                                        .n_vocab = realm_model_config(m)->n_vocab,
                                        .n_embd = realm_model_config(m)->n_embd,
                                        .reserve = engine_reserve,
                                        .attach = engine_attach,
                                        .len = engine_len,
                                        .rewind = engine_rewind};
}
