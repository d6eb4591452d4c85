/*
 * nn_sampler.c — the guest SDK's sampler (guest/sdk/sample.c, compiled into the host library)
 * behind an opaque type for wasi_nn.c. Reusing it, rather than a second sampler, makes a wasi-nn
 * guest's tokens equal the default guest's for the same logits and parameters: same penalty
 * formulas, same chain order, same argmax tie rule, same seeded draw.
 *
 * This file includes the guest SDK header, whose import declarations clash with the host's
 * headers; that is why the wrapper lives alone here.
 *
 * Owns: each sampler and its scratch. Thread rule: one thread at a time per sampler.
 */
#include "sandbox/nn_sampler.h"
#include "realm/alloc.h"
#include "realm_guest.h"

struct sbx_nn_sampler {
    struct rg_sampler s;
};

int sbx_nn_sampler_new(const struct sbx_nn_sampling *p, int32_t n_vocab,
                       struct sbx_nn_sampler **out) {
    struct rg_sampler_params sp;
    rg_sampler_params_default(&sp);
    sp.temperature = p->temp;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty;
    sp.presence_penalty = p->presence_penalty;
    sp.frequency_penalty = p->frequency_penalty;
    sp.penalty_last_n = p->penalty_last_n;
    sp.seed = p->seed;
    struct sbx_nn_sampler *s = realm_calloc(1, sizeof *s);
    if (!s) return REALM_E_NOMEM;
    int32_t rc = rg_sampler_init(&s->s, &sp, n_vocab);
    if (rc) {
        realm_free(s);
        return rc;
    }
    *out = s;
    return REALM_OK;
}

void sbx_nn_sampler_accept(struct sbx_nn_sampler *s, int32_t token) {
    rg_sampler_accept(&s->s, token);
}

int32_t sbx_nn_sampler_sample(struct sbx_nn_sampler *s, float *logits) {
    return rg_sampler_sample(&s->s, logits);
}

void sbx_nn_sampler_free(struct sbx_nn_sampler *s) {
    if (!s) return;
    rg_sampler_free(&s->s);
    realm_free(s);
}
