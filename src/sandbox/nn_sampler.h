/*
 * nn_sampler.h (internal) — the guest SDK's sampler (guest/sdk/sample.c) behind an opaque type,
 * for wasi_nn.c (see nn_sampler.c). Includes nothing of the host, so that nn_sampler.c can
 * include the guest SDK header, whose import declarations clash with the host's.
 *
 * Thread rule: one thread at a time per sampler.
 */
#ifndef REALM_SANDBOX_NN_SAMPLER_H
#define REALM_SANDBOX_NN_SAMPLER_H

#include <stdint.h>

/* ---- nn_sampler.c ---- */
struct sbx_nn_sampler;

struct sbx_nn_sampling {
    float temp;                                                /* <= 0: greedy */
    int32_t top_k;                                             /* 0: off */
    float top_p;                                               /* 1: off */
    float min_p;                                               /* 0: off */
    float repeat_penalty, presence_penalty, frequency_penalty; /* 1, 0, 0: off */
    int32_t penalty_last_n;
    uint64_t seed;
};

/* Ownership: returns owned (*out; sbx_nn_sampler_free). Errors: REALM_E_INVALID (parameters),
 * REALM_E_NOMEM. */
int sbx_nn_sampler_new(const struct sbx_nn_sampling *p, int32_t n_vocab,
                       struct sbx_nn_sampler **out);
/* Records a token (prompt or generated) in the penalty window. */
void sbx_nn_sampler_accept(struct sbx_nn_sampler *s, int32_t token);
/* The next token from logits[0..n_vocab) (modified in place), or REALM_E_NOMEM. */
int32_t sbx_nn_sampler_sample(struct sbx_nn_sampler *s, float *logits);
/* NULL is a no-op. */
void sbx_nn_sampler_free(struct sbx_nn_sampler *s);

#endif
