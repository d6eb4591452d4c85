/*
 * sample.h — the token sampler's selection core, shared by the native CLI (src/cli/cmd_run.c)
 * and the guest SDK (guest/sdk/sample.c, compiled to wasm32): top-k, then top-p, then min-p, then
 * one temperature draw, over candidates ordered (logit desc, token id asc). Plain C with no
 * allocation and no imports, so that both builds run the same arithmetic and give the same token
 * for the same logits and uniform number.
 *
 * Arithmetic (what makes partial selection exact): a candidate's weight at temperature T is the
 * integer round(2^30 * 2^y) with y = (logit - max) * (log2(e) / T) in float, computed by
 * realm_sample_weight's fixed polynomial (relative error ~1e-7; 0 below y = -30, a probability
 * under 1e-9 of the best token's). Sums of weights are exact 64-bit integers, so they do not
 * depend on summation order: the fast path finds the top-p and draw thresholds from per-bucket
 * sums and sorts only the bucket where a threshold falls, and still picks exactly the token a
 * full sort followed by the same sequential walks picks (realm_sample_pick_sorted, the
 * reference the tests compare against).
 *   top-p (0 < top_p < 1): keep the shortest sorted prefix whose temperature-1 weight sum is
 *     >= ceil(top_p * total);
 *   min-p (> 0): of those, keep the ones with logit >= max + logf(min_p) (at least one);
 *   draw: t = floor(u * S) over the kept weights' sum S; the token is the first in sorted order
 *     whose running sum exceeds t.
 */
#ifndef REALM_SAMPLE_H
#define REALM_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

struct realm_sample_params {
    float temperature; /* > 0 (greedy is the caller's argmax) */
    int32_t top_k;     /* 0: the whole vocabulary */
    float top_p;       /* (0, 1]; 1: off */
    float min_p;       /* [0, 1]; 0: off */
};

/* Bytes of scratch realm_sample_pick needs for n_vocab candidates (n_vocab <= 2^22). */
size_t realm_sample_scratch_bytes(int32_t n_vocab);

/* The sampled token id of logits[0..n_vocab), for u uniform in [0, 1) (one draw per token).
 * scratch: realm_sample_scratch_bytes(n_vocab) bytes, 8-byte aligned (as malloc's), owned by
 * the caller, free between calls (one scratch per concurrent caller). Parameters are the caller's
 * to validate (see realm_sample_params); NaN or infinite logits take the reference path (same
 * answer, full sort). Returns -1 only for n_vocab < 1 or > 2^22. */
int32_t realm_sample_pick(const float *logits, int32_t n_vocab, const struct realm_sample_params *p,
                          double u, void *scratch);

/* The reference: sorts every candidate, then walks the sorted list. Same contract and answer as
 * realm_sample_pick, slower (a full radix sort per call). */
int32_t realm_sample_pick_sorted(const float *logits, int32_t n_vocab,
                                 const struct realm_sample_params *p, double u, void *scratch);

/* The integer weight of a logit at scale k = log2(e) / T relative to the maximum l0 (see
 * above); exposed for tests. */
uint32_t realm_sample_weight(float logit, float l0, float k);

#endif
