/*
 * sample_bench.h — the sampling benchmark's body, shared by the native program (bench/sample.c)
 * and the guest that repeats it inside the sandbox (tests/guests/bench_sample.c): random logits
 * of a fixed shape, then per token the fast selection (realm_sample_pick) and the full-sort
 * reference (realm_sample_pick_sorted) on the same logits and uniform number, timed with the
 * caller's clock. Header-only: the guest is one translation unit plus the SDK.
 */
#ifndef REALM_BENCH_SAMPLE_H
#define REALM_BENCH_SAMPLE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "realm/sample.h"

static uint64_t sb_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double sb_uniform(uint64_t *s) {
    return (double)(sb_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* peaked: an LLM-like shape (bulk ~N(0, 2.5), a few tokens 10-22 above it); else flat ~N(0, 1),
 * the worst case: every token keeps a weight. */
static void sb_fill(float *l, int32_t n, int peaked, uint64_t *r) {
    double sigma = peaked ? 2.5 : 1.0;
    for (int32_t i = 0; i < n; i++) {
        double a = sb_uniform(r) + 1e-300, b = sb_uniform(r);
        l[i] = (float)(sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b) * sigma);
    }
    if (peaked)
        for (int j = 0; j < 8; j++)
            l[(int32_t)(sb_uniform(r) * n)] = (float)(10.0 + 12.0 * sb_uniform(r));
}

static int sb_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

struct sb_result {
    int64_t fast_ns, sorted_ns;         /* medians per token */
    int64_t fast_min_ns, sorted_min_ns; /* fastest token: what a quiet machine gives */
    int mismatches;                     /* tokens where the two differ (must be 0) */
};

/* iters tokens of n_vocab logits (fresh logits every 8 tokens); clock() in nanoseconds. The
 * fast path runs its tokens first, then the reference the same ones (so that neither finds the
 * other's scratch in the cache), and the picks are compared. */
static int sb_run(int32_t n_vocab, int iters, int peaked, const struct realm_sample_params *p,
                  int64_t (*clock)(void), struct sb_result *out) {
    float *l = malloc(sizeof(float) * (size_t)n_vocab);
    void *s = malloc(realm_sample_scratch_bytes(n_vocab));
    int64_t *tf = malloc(sizeof(int64_t) * (size_t)iters),
            *ts = malloc(sizeof(int64_t) * (size_t)iters);
    int32_t *pick = malloc(sizeof(int32_t) * (size_t)iters);
    if (!l || !s || !tf || !ts || !pick) {
        free(l), free(s), free(tf), free(ts), free(pick);
        return -1;
    }
    out->mismatches = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint64_t r = 1234;
        for (int i = 0; i < iters; i++) {
            if (i % 8 == 0) sb_fill(l, n_vocab, peaked, &r);
            double u = sb_uniform(&r);
            int64_t t0 = clock();
            int32_t a = pass ? realm_sample_pick_sorted(l, n_vocab, p, u, s)
                             : realm_sample_pick(l, n_vocab, p, u, s);
            (pass ? ts : tf)[i] = clock() - t0;
            if (pass)
                out->mismatches += a != pick[i];
            else
                pick[i] = a;
        }
    }
    qsort(tf, (size_t)iters, sizeof *tf, sb_cmp_i64);
    qsort(ts, (size_t)iters, sizeof *ts, sb_cmp_i64);
    out->fast_ns = tf[iters / 2], out->sorted_ns = ts[iters / 2];
    out->fast_min_ns = tf[0], out->sorted_min_ns = ts[0];
    free(l), free(s), free(tf), free(ts), free(pick);
    return 0;
}

/* The parameter sets reported (top-k 0 throughout: the case a full sort served). */
static const struct realm_sample_params SB_PARAMS[] = {
    {1.0f, 0, 1.0f, 0.0f}, {0.8f, 0, 0.95f, 0.0f}, {0.7f, 0, 1.0f, 0.05f}, {1.0f, 0, 0.9f, 0.05f}};
static const char *const SB_NAMES[] = {"T=1", "T=0.8 top_p=0.95", "T=0.7 min_p=0.05",
                                       "T=1 top_p=0.9 min_p=0.05"};
#define SB_N_PARAMS 4

#endif
