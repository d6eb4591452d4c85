/*
 * sample.c — the guest-side sampler: logit_bias, repetition/frequency/presence penalties over a
 * window of previous tokens, then greedy, or top-k → top-p → min-p → temperature → one draw
 * from a seeded splitmix64 generator. The order and the penalty formulas follow llama.cpp's
 * sampler chain (llama_sampler_penalties_apply, top_k, top_p, min_p, temp, dist): penalties use
 * the token counts in the window; top-p and min-p look at the distribution before temperature.
 * Deterministic for a given seed: candidate order is (logit desc, token id asc), never
 * dependent on qsort's algorithm. The arithmetic (double sums, the draw over sorted candidates)
 * is the native CLI's (src/cli/cmd_run.c), so both paths give the same tokens for one seed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

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
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    if (p->penalty_last_n) {
        s->hist = malloc((size_t)p->penalty_last_n * sizeof *s->hist);
        s->win = malloc((size_t)p->penalty_last_n * sizeof *s->win);
    }
    if (p->n_bias) {
        s->bias = malloc((size_t)p->n_bias * sizeof *s->bias);
        if (s->bias) memcpy(s->bias, p->bias, (size_t)p->n_bias * sizeof *s->bias);
    }
    s->p.bias = s->bias;
    if (!s->idx || (p->penalty_last_n && (!s->hist || !s->win)) || (p->n_bias && !s->bias)) {
        rg_sampler_free(s);
        return REALM_E_NOMEM;
    }
    return REALM_OK;
}

void rg_sampler_free(struct rg_sampler *s) {
    free(s->idx);
    free(s->hist);
    free(s->win);
    free(s->bias);
    free(s->rkey);
    free(s->ridx);
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

/* Candidate order: higher logit first, then lower token id (a total order: qsort's result does
 * not depend on its algorithm). */
static const float *g_cmp_val; /* valid only during one qsort call (single-threaded guest) */
static int cmp_cand(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float vx = g_cmp_val[x], vy = g_cmp_val[y];
    if (vx > vy) return -1;
    if (vx < vy) return 1;
    return (x > y) - (x < y);
}

/* Restores the min-heap (by logit) below position j of idx[0..k). */
static void sift_down(int32_t *idx, const float *l, int32_t k, int32_t j) {
    for (;;) {
        int32_t a = 2 * j + 1, b = a + 1, m = j;
        if (a < k && l[idx[a]] < l[idx[m]]) m = a;
        if (b < k && l[idx[b]] < l[idx[m]]) m = b;
        if (m == j) return;
        int32_t t = idx[j];
        idx[j] = idx[m];
        idx[m] = t;
        j = m;
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

/* Order-preserving map of a float to an unsigned key (larger float, larger key). */
static uint32_t float_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* Sorts idx[0..n) (token ids in ascending order) by logit descending; a stable LSD radix sort
 * on the inverted key, so equal logits stay in ascending id order: the same total order as
 * cmp_cand, in O(n) instead of qsort's O(n log n) indirect calls (a full vocabulary per token). */
static int32_t radix_sort(struct rg_sampler *s, const float *logits, int32_t n) {
    if (!s->rkey) {
        s->rkey = malloc((size_t)s->n_vocab * 2 * sizeof *s->rkey);
        s->ridx = malloc((size_t)s->n_vocab * sizeof *s->ridx);
        if (!s->rkey || !s->ridx) return REALM_E_NOMEM;
    }
    uint32_t *key = s->rkey, *key2 = s->rkey + s->n_vocab;
    int32_t *idx = s->idx, *idx2 = s->ridx;
    for (int32_t i = 0; i < n; i++)
        key[i] = ~float_key(logits[idx[i]]);
    for (int shift = 0; shift < 32; shift += 8) {
        uint32_t count[257] = {0};
        for (int32_t i = 0; i < n; i++)
            count[((key[i] >> shift) & 255) + 1]++;
        for (int b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (int32_t i = 0; i < n; i++) {
            uint32_t d = (key[i] >> shift) & 255, at = count[d]++;
            key2[at] = key[i];
            idx2[at] = idx[i];
        }
        uint32_t *tk = key;
        key = key2, key2 = tk;
        int32_t *ti = idx;
        idx = idx2, idx2 = ti;
    }
    /* four passes: the result is back in s->idx / s->rkey[0..n) */
    return REALM_OK;
}

/* Candidates sorted best first in s->idx: the k largest logits (a min-heap of size k over the
 * vocabulary, the same selection as the native CLI's sampler), or all of them. Returns the
 * count, or REALM_E_NOMEM. */
static int32_t candidates(struct rg_sampler *s, const float *logits, int32_t k) {
    int32_t nv = s->n_vocab;
    if (k > 0 && k < nv) {
        for (int32_t i = 0; i < k; i++)
            s->idx[i] = i;
        for (int32_t i = k / 2 - 1; i >= 0; i--)
            sift_down(s->idx, logits, k, i);
        int32_t i = k;
#ifdef __wasm_simd128__
        /* most of the vocabulary is below the heap's minimum: skip it four at a time (the same
         * `logits[i] <= min` test, so the same heap) */
        for (; i + 4 <= nv; i += 4) {
            v128_t v = wasm_v128_load(logits + i);
            if (!wasm_v128_any_true(wasm_f32x4_gt(v, wasm_f32x4_splat(logits[s->idx[0]]))))
                continue;
            for (int32_t j = i; j < i + 4; j++) {
                if (logits[j] <= logits[s->idx[0]]) continue;
                s->idx[0] = j;
                sift_down(s->idx, logits, k, 0);
            }
        }
#endif
        for (; i < nv; i++) {
            if (logits[i] <= logits[s->idx[0]]) continue;
            s->idx[0] = i;
            sift_down(s->idx, logits, k, 0);
        }
        g_cmp_val = logits;
        qsort(s->idx, (size_t)k, sizeof *s->idx, cmp_cand);
        return k;
    }
    for (int32_t i = 0; i < nv; i++)
        s->idx[i] = i;
    int32_t rc = radix_sort(s, logits, nv);
    return rc < 0 ? rc : nv;
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

    int32_t n = candidates(s, logits, p->top_k);
    if (n < 0) return n;
    const int32_t *c = s->idx;
    float l0 = logits[c[0]];
    /* top-p over the softmax at temperature 1 */
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double sum = 0, cum = 0;
        for (int32_t i = 0; i < n; i++)
            sum += exp((double)(logits[c[i]] - l0));
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)(logits[c[i]] - l0)) / sum;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    /* min-p: p >= min_p * p_max, i.e. logit >= max + log(min_p); the order stays sorted */
    if (p->min_p > 0.0f) {
        float thr = l0 + logf(p->min_p);
        int32_t m = 1;
        while (m < n && logits[c[m]] >= thr)
            m++;
        n = m;
    }
    /* temperature, then one draw over the sorted candidates */
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(logits[c[i]] - l0) / p->temperature);
    double u = rg_sampler_uniform(s) * sum, cum = 0;
    for (int32_t i = 0; i < n; i++) {
        cum += exp((double)(logits[c[i]] - l0) / p->temperature);
        if (u < cum) return c[i];
    }
    return c[n - 1];
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
