/*
 * sample.c — the guest-side sampler: logit_bias, repetition/frequency/presence penalties over a
 * window of previous tokens, then greedy, or top-k → top-p → min-p → temperature → one draw
 * from a seeded splitmix64 generator. The order and the penalty formulas follow llama.cpp's
 * sampler chain (llama_sampler_penalties_apply, top_k, top_p, min_p, temp, dist): penalties use
 * the token counts in the window; top-p and min-p look at the distribution before temperature.
 * The selection after the penalties is realm/sample.h's core (src/sample/sample.c, compiled into
 * the guest): candidate order (logit desc, token id asc), exact integer weights, no full sort.
 * The native CLI (src/cli/cmd_run.c) calls the same core, so both paths give the same tokens
 * for one seed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

#include "realm/sample.h"
#include "realm_guest.h"

void rg_sampler_params_default(struct rg_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
    p->seed = 0;
}

/* splitmix64: the native CLI's generator, so that one seed gives one output on both paths */
static uint64_t next_u64(struct rg_sampler *s) {
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double rg_sampler_uniform(struct rg_sampler *s) {
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

int32_t rg_sampler_init(struct rg_sampler *s, const struct rg_sampler_params *p, int32_t n_vocab) {
    memset(s, 0, sizeof *s);
    if (n_vocab <= 0 || p->top_k < 0 || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
        !(p->min_p >= 0.0f && p->min_p <= 1.0f) || !(p->repeat_penalty > 0.0f) ||
        p->penalty_last_n < 0 || p->penalty_last_n > 1 << 20 || p->n_bias < 0 ||
        isnan(p->temperature) || isnan(p->frequency_penalty) || isnan(p->presence_penalty))
        return REALM_E_INVALID;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed;
    if (p->penalty_last_n) {
        s->hist = malloc((size_t)p->penalty_last_n * sizeof *s->hist);
        s->win = malloc((size_t)p->penalty_last_n * sizeof *s->win);
    }
    if (p->n_bias) {
        s->bias = malloc((size_t)p->n_bias * sizeof *s->bias);
        if (s->bias) memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    }
    s->p.bias = s->bias;
    if ((p->penalty_last_n && (!s->hist || !s->win)) || (p->n_bias && !s->bias)) {
        rg_sampler_free(s);
        return REALM_E_NOMEM;
    }
    return REALM_OK;
}

void rg_sampler_free(struct rg_sampler *s) {
    free(s->scratch);
    free(s->hist);
    free(s->win);
    free(s->bias);
    memset(s, 0, sizeof *s);
}

void rg_sampler_accept(struct rg_sampler *s, int32_t token) {
    int32_t w = s->p.penalty_last_n;
    if (w <= 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % w;
    if (s->n_hist < w) s->n_hist++;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void apply_penalties(struct rg_sampler *s, float *logits) {
    const struct rg_sampler_params *p = &s->p;
    if (s->n_hist == 0 ||
        (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f))
        return;
    memcpy(s->win, s->hist, (size_t)s->n_hist * sizeof *s->win);
    qsort(s->win, (size_t)s->n_hist, sizeof *s->win, cmp_i32);
    for (int32_t i = 0; i < s->n_hist;) {
        int32_t tok = s->win[i], count = 0;
        while (i < s->n_hist && s->win[i] == tok)
            i++, count++;
        if (tok < 0 || tok >= s->n_vocab) continue;
        float l = logits[tok];
        l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
        l -= (float)count * p->frequency_penalty + (count > 0 ? p->presence_penalty : 0.0f);
        logits[tok] = l;
    }
}

static int32_t argmax_scalar(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

int32_t rg_argmax(const float *l, int32_t n) {
#ifdef __wasm_simd128__
    /* the greedy path runs once per token over the whole vocabulary (49k-262k floats): find the
     * maximum four lanes at a time (pmax is `a < b ? b : a`, as the scalar loop compares), then
     * the first index holding it — the scalar loop's answer, lowest id on ties */
    if (n >= 32) {
        v128_t m0 = wasm_v128_load(l), m1 = wasm_v128_load(l + 4), m2 = wasm_v128_load(l + 8),
               m3 = wasm_v128_load(l + 12);
        int32_t i = 16;
        for (; i + 16 <= n; i += 16) {
            m0 = wasm_f32x4_pmax(m0, wasm_v128_load(l + i));
            m1 = wasm_f32x4_pmax(m1, wasm_v128_load(l + i + 4));
            m2 = wasm_f32x4_pmax(m2, wasm_v128_load(l + i + 8));
            m3 = wasm_f32x4_pmax(m3, wasm_v128_load(l + i + 12));
        }
        v128_t m = wasm_f32x4_pmax(wasm_f32x4_pmax(m0, m1), wasm_f32x4_pmax(m2, m3));
        float best = wasm_f32x4_extract_lane(m, 0);
        for (int k = 1; k < 4; k++) {
            float v = k == 1   ? wasm_f32x4_extract_lane(m, 1)
                      : k == 2 ? wasm_f32x4_extract_lane(m, 2)
                               : wasm_f32x4_extract_lane(m, 3);
            if (best < v) best = v;
        }
        for (; i < n; i++)
            if (best < l[i]) best = l[i];
        v128_t bv = wasm_f32x4_splat(best);
        int32_t j = 0;
        for (; j + 4 <= n; j += 4)
            if (wasm_v128_any_true(wasm_f32x4_eq(wasm_v128_load(l + j), bv))) break;
        for (; j < n; j++)
            if (l[j] == best) return j;
        /* not found: a NaN took part; the scalar loop defines the answer */
    }
#endif
    return argmax_scalar(l, n);
}

int32_t rg_sampler_sample(struct rg_sampler *s, float *logits) {
    const struct rg_sampler_params *p = &s->p;
    int32_t nv = s->n_vocab;
    for (int32_t i = 0; i < p->n_bias; i++) {
        int32_t t = p->bias[i].token;
        if (t >= 0 && t < nv) logits[t] += p->bias[i].bias;
    }
    apply_penalties(s, logits);

    if (p->temperature <= 0.0f) return rg_argmax(logits, nv);

    if (!s->scratch && !(s->scratch = malloc(realm_sample_scratch_bytes(nv)))) return REALM_E_NOMEM;
    struct realm_sample_params sp = {p->temperature, p->top_k, p->top_p, p->min_p};
    int32_t id = realm_sample_pick(logits, nv, &sp, rg_sampler_uniform(s), s->scratch);
    return id < 0 ? REALM_E_INVALID : id; /* a vocabulary over 2^22 */
}

int32_t rg_logprobs(const float *logits, int32_t n, int32_t chosen, int32_t k, int32_t *ids,
                    float *lps) {
    if (n < 1 || chosen < 0 || chosen >= n || k < 0 || k > REALM_ABI_MAX_TOP_LOGPROBS)
        return REALM_E_INVALID;
    float mx = logits[rg_argmax(logits, n)];
    if (!(mx > -INFINITY)) return REALM_E_INVALID; /* nothing has any probability */
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(logits[i] - mx));
    double lse = (double)mx + log(sum);
    /* the k best in ids[1..k], kept sorted: a candidate must beat the current last one */
    int32_t m = 0;
    for (int32_t i = 0; i < n && k > 0; i++) {
        float v = logits[i];
        if (m == k && !(v > logits[ids[m]])) continue; /* ties keep the lower id already there */
        int32_t j = m < k ? ++m : m;
        while (j > 1 && v > logits[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    ids[0] = chosen;
    for (int32_t i = 0; i <= m; i++) {
        double lp = (double)logits[ids[i]] - lse;
        lps[i] = lp > 0 ? 0.0f : (float)lp;
    }
    return m + 1;
}
