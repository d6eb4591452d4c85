/*
 * test_sample.c — the sampler's selection core (realm/sample.h): the fast path (bucket sums,
 * no full sort) picks bit for bit the token of the full-sort reference, for many seeds, logit
 * shapes (flat, peaked, tied, with -inf and NaN) and parameter sets; the integer weights follow
 * 2^y; and the picks agree with the previous double-precision full-sort sampler on nearly every
 * draw (they differ only where its rounding and the integer weights' put a boundary apart).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/sample.h"
#include "testutil.h"

static uint64_t rng_next(uint64_t *s) { /* splitmix64, as the samplers' callers draw */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) {
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t *s) {
    double a = uniform(s) + 1e-300, b = uniform(s);
    return sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b);
}

enum shape { FLAT, PEAKED, TIED, SPIKY, SHAPES };

/* Random logits of one shape: FLAT ~N(0, sigma); PEAKED: an LLM-like bulk far below a few top
 * tokens; TIED: quantized to quarter steps (many equal logits); SPIKY: PEAKED with -inf
 * entries (banned tokens). */
static void fill(float *l, int32_t n, enum shape sh, uint64_t *r) {
    double sigma = 0.5 + 3.0 * uniform(r);
    for (int32_t i = 0; i < n; i++) {
        double x = normal(r) * sigma;
        if (sh == TIED) x = floor(x * 4.0) / 4.0;
        l[i] = (float)x;
    }
    if (sh == PEAKED || sh == SPIKY) {
        int top = 1 + (int)(uniform(r) * 20);
        for (int j = 0; j < top; j++)
            l[(int32_t)(uniform(r) * n)] = (float)(8.0 + 12.0 * uniform(r));
    }
    if (sh == SPIKY)
        for (int32_t i = 0; i < n / 10; i++)
            l[(int32_t)(uniform(r) * n)] = -INFINITY;
}

static const struct realm_sample_params PARAMS[] = {
    {1.0f, 0, 1.0f, 0.0f},  {0.8f, 0, 0.95f, 0.0f},  {0.7f, 0, 1.0f, 0.05f},
    {1.3f, 0, 0.9f, 0.02f}, {0.5f, 0, 0.5f, 0.0f},   {2.0f, 0, 1.0f, 0.0f},
    {1.0f, 0, 0.1f, 0.0f},  {0.8f, 40, 0.95f, 0.0f}, {1.0f, 1000, 1.0f, 0.1f},
    {0.1f, 0, 1.0f, 0.0f},  {1.0f, 0, 0.99f, 0.5f},  {5.0f, 0, 0.999f, 0.0f},
};
#define N_PARAMS (int)(sizeof PARAMS / sizeof PARAMS[0])

/* The fast path against the reference: identical tokens. */
static void test_fast_equals_sorted(void) {
    static const int32_t sizes[] = {1, 3, 7, 100, 1001, 4099, 49152, 262144};
    uint64_t r = 42;
    int checks = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int32_t n = sizes[si];
        float *l = malloc(sizeof(float) * (size_t)n);
        void *s1 = malloc(realm_sample_scratch_bytes(n)),
             *s2 = malloc(realm_sample_scratch_bytes(n));
        CHECK(l && s1 && s2);
        int rounds = n >= 100000 ? 2 : n >= 10000 ? 4 : 16;
        for (int round = 0; round < rounds; round++) {
            fill(l, n, (enum shape)(round % SHAPES), &r);
            for (int pi = 0; pi < N_PARAMS; pi++) {
                int draws = n >= 10000 ? 1 : 4;
                for (int d = 0; d < draws; d++) {
                    double u = uniform(&r);
                    int32_t a = realm_sample_pick(l, n, &PARAMS[pi], u, s1);
                    int32_t b = realm_sample_pick_sorted(l, n, &PARAMS[pi], u, s2);
                    CHECKF(a == b && a >= 0 && a < n, "n %d shape %d params %d u %.17g: %d vs %d",
                           n, round % SHAPES, pi, u, a, b);
                    checks++;
                }
            }
        }
        /* the extremes of u: the first and the last candidate of the kept set */
        fill(l, n, FLAT, &r);
        for (int pi = 0; pi < N_PARAMS; pi++) {
            const double us[] = {0.0, 1.0 - 1.0 / 9007199254740992.0};
            for (int k = 0; k < 2; k++)
                CHECK_EQ_INT(realm_sample_pick(l, n, &PARAMS[pi], us[k], s1),
                             realm_sample_pick_sorted(l, n, &PARAMS[pi], us[k], s2));
        }
        free(l), free(s1), free(s2);
    }
    CHECK(checks > 1000);
}

/* Odd inputs: all equal (one bucket holds everything), NaN and +inf (the reference decides),
 * all -inf but one, a huge temperature. */
static void test_edges(void) {
    int32_t n = 5003;
    float *l = malloc(sizeof(float) * (size_t)n);
    void *s1 = malloc(realm_sample_scratch_bytes(n)), *s2 = malloc(realm_sample_scratch_bytes(n));
    uint64_t r = 7;
    for (int c = 0; c < 5; c++) {
        for (int32_t i = 0; i < n; i++)
            l[i] = c == 3 ? -INFINITY : 1.5f;
        if (c == 1) l[17] = NAN;
        if (c == 2) l[4000] = INFINITY;
        if (c == 3) l[99] = 0.0f;
        for (int pi = 0; pi < N_PARAMS; pi++) {
            struct realm_sample_params p = PARAMS[pi];
            if (c == 4) p.temperature = 1e-39f; /* log2(e) / T overflows */
            double u = uniform(&r);
            int32_t a = realm_sample_pick(l, n, &p, u, s1);
            CHECK_EQ_INT(a, realm_sample_pick_sorted(l, n, &p, u, s2));
            if (c == 2) CHECK_EQ_INT(a, 4000);
            if (c == 3) CHECK_EQ_INT(a, 99);
            if (c == 4) CHECK_EQ_INT(a, 0); /* no finite weights: the first in order */
        }
    }
    /* all equal at temperature 1, no truncation: the draw is uniform over ids in order */
    struct realm_sample_params p = {1.0f, 0, 1.0f, 0.0f};
    for (int32_t i = 0; i < n; i++)
        l[i] = 1.5f;
    CHECK_EQ_INT(realm_sample_pick(l, n, &p, 0.5, s1), n / 2);
    CHECK_EQ_INT(realm_sample_pick(l, 0, &p, 0.5, s1), -1);
    free(l), free(s1), free(s2);
}

/* The weights follow 2^30 * 2^y (relative error under 1e-6), are 0 past y = -30 and never
 * decrease as the logit rises. */
static void test_weights(void) {
    const float k = 1.44269504088896340736f;
    uint32_t prev = 0;
    double worst = 0;
    for (int i = -310000; i <= 0; i++) {
        float x = (float)i * 1e-4f;
        uint32_t w = realm_sample_weight(x, 0.0f, k);
        CHECKF(w >= prev || i == -310000, "weight falls at %g", (double)x);
        prev = w;
        double want = ldexp(exp2((double)(x * k)), 30);
        if (want > 1e3) { /* beyond the floor's 1 */
            double e = (fabs((double)w - want) - 0.5) / want;
            if (e > worst) worst = e;
        }
        if ((double)(x * k) <= -30.0) CHECK(w == 0);
    }
    CHECKF(worst < 1e-6, "relative error %g", worst);
    CHECK_EQ_INT((int)realm_sample_weight(3.0f, 3.0f, k), 1 << 30);
}

/* The previous sampler (double exp over a full qsort, top-k, top-p, temperature, draw), kept
 * here as the yardstick: the new arithmetic picks the same token on nearly every draw. */
static const float *g_l;
static int by_logit(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return g_l[x] < g_l[y] ? 1 : g_l[x] > g_l[y] ? -1 : (x > y) - (x < y);
}

static int32_t old_sample(const float *l, int32_t n, const struct realm_sample_params *p, double u,
                          int32_t *c) {
    for (int32_t i = 0; i < n; i++)
        c[i] = i;
    g_l = l;
    qsort(c, (size_t)n, sizeof *c, by_logit);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    float l0 = l[c[0]];
    if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double sum = 0, cum = 0;
        for (int32_t i = 0; i < n; i++)
            sum += exp((double)(l[c[i]] - l0));
        for (int32_t i = 0; i < n; i++) {
            cum += exp((double)(l[c[i]] - l0)) / sum;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float thr = l0 + logf(p->min_p);
        int32_t m = 1;
        while (m < n && l[c[m]] >= thr)
            m++;
        n = m;
    }
    double sum = 0, cum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(l[c[i]] - l0) / p->temperature);
    u *= sum;
    for (int32_t i = 0; i < n; i++) {
        cum += exp((double)(l[c[i]] - l0) / p->temperature);
        if (u < cum) return c[i];
    }
    return c[n - 1];
}

static void test_same_as_before(void) {
    int32_t n = 8000;
    float *l = malloc(sizeof(float) * (size_t)n);
    int32_t *c = malloc(sizeof(int32_t) * (size_t)n);
    void *s = malloc(realm_sample_scratch_bytes(n));
    uint64_t r = 99;
    int same = 0, total = 0;
    for (int round = 0; round < 24; round++) {
        fill(l, n, round % 2 ? PEAKED : FLAT, &r);
        for (int pi = 0; pi < N_PARAMS; pi++)
            for (int d = 0; d < 8; d++) {
                double u = uniform(&r);
                int32_t a = realm_sample_pick(l, n, &PARAMS[pi], u, s),
                        b = old_sample(l, n, &PARAMS[pi], u, c);
                if (a != b && getenv("SAMPLE_DEBUG"))
                    printf("round %d params %d u %.6f: %d (%g) vs %d (%g)\n", round, pi, u, a,
                           (double)l[a], b, (double)l[b]);
                same += a == b;
                total++;
            }
    }
    printf("same token as the previous sampler: %d of %d draws\n", same, total);
    CHECKF(same >= total - total / 50, "%d of %d", same, total);
    free(l), free(c), free(s);
}

int main(void) {
    test_weights();
    test_edges();
    test_fast_equals_sorted();
    test_same_as_before();
    return tu_finish("test_sample");
}
