/*
 * ops_avx2.c — AVX2 + FMA + F16C versions of the forward pass's small kernels (see ops.c for the
 * scalar reference they must match). Compiled with -mavx2 -mfma -mf16c (CMake gives per-file ISA
 * flags to *_avx2.c); used only when the quant dispatcher selected AVX2 or better. No state.
 */
#include "model/model.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#include <math.h>

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static inline __m256 load_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The canonical dot: one 8-lane accumulator over the 8-element chunks in order (fused multiply-
 * add), lanes reduced as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), then the n % 8 tail added one
 * product at a time. tree8 and the transposed reduction in dot_many give that same tree. */
static inline float tree8(__m256 v) {
    __m256 h = _mm256_hadd_ps(v, v);
    h = _mm256_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

/* DOT_MANY(NAME, LOAD, ELT, T): dot_many for rows of type T, loaded 8 at a time by LOAD. Two
 * instances (f16, f32) keep the element type out of the inner loops. */
#define DOT_MANY(NAME, LOAD, ELT, T)                                                               \
    static void NAME(const float *x, const T *rows, int64_t stride, int ny, int64_t n,             \
                     float *out) {                                                                 \
        const int64_t nc = n & ~(int64_t)7;                                                        \
        int j = 0;                                                                                 \
        for (; j + 8 <= ny; j += 8) {                                                              \
            const T *r0 = rows + (int64_t)j * stride;                                              \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, \
                   a7 = a0;                                                                        \
            for (int64_t c = 0; c < nc; c += 8) {                                                  \
                const __m256 xc = _mm256_loadu_ps(x + c);                                          \
                a0 = _mm256_fmadd_ps(xc, LOAD(r0 + c), a0);                                        \
                a1 = _mm256_fmadd_ps(xc, LOAD(r0 + stride + c), a1);                               \
                a2 = _mm256_fmadd_ps(xc, LOAD(r0 + 2 * stride + c), a2);                           \
                a3 = _mm256_fmadd_ps(xc, LOAD(r0 + 3 * stride + c), a3);                           \
                a4 = _mm256_fmadd_ps(xc, LOAD(r0 + 4 * stride + c), a4);                           \
                a5 = _mm256_fmadd_ps(xc, LOAD(r0 + 5 * stride + c), a5);                           \
                a6 = _mm256_fmadd_ps(xc, LOAD(r0 + 6 * stride + c), a6);                           \
                a7 = _mm256_fmadd_ps(xc, LOAD(r0 + 7 * stride + c), a7);                           \
            }                                                                                      \
            const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));      \
            const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));      \
            _mm256_storeu_ps(out + j, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),          \
                                                    _mm256_permute2f128_ps(u0, u1, 0x31)));        \
            if (nc < n)                                                                            \
                for (int r = 0; r < 8; r++) {                                                      \
                    float sum = out[j + r];                                                        \
                    for (int64_t i = nc; i < n; i++)                                               \
                        sum += x[i] * ELT(r0[r * stride + i]);                                     \
                    out[j + r] = sum;                                                              \
                }                                                                                  \
        }                                                                                          \
        for (; j < ny; j++) {                                                                      \
            const T *r0 = rows + (int64_t)j * stride;                                              \
            __m256 a = _mm256_setzero_ps();                                                        \
            for (int64_t c = 0; c < nc; c += 8)                                                    \
                a = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), LOAD(r0 + c), a);                      \
            float sum = tree8(a);                                                                  \
            for (int64_t i = nc; i < n; i++)                                                       \
                sum += x[i] * ELT(r0[i]);                                                          \
            out[j] = sum;                                                                          \
        }                                                                                          \
    }

#define ELT_F16(v) _cvtsh_ss(v)
#define ELT_F32(v) (v)
DOT_MANY(dot_many_f16, load_f16, ELT_F16, uint16_t)
DOT_MANY(dot_many_f32, _mm256_loadu_ps, ELT_F32, float)

static void dot_many_avx2(const float *x, const void *rows, int64_t stride, bool f16, int ny,
                          int64_t n, float *out) {
    if (f16)
        dot_many_f16(x, rows, stride, ny, n, out);
    else
        dot_many_f32(x, rows, stride, ny, n, out);
}

/* WSUM_ROWS: o = sum_j p[j] row_j (acc: o += ...), accumulators in registers for 64 columns at a
 * time. Each column is one chain of fused multiply-adds in ascending j starting from 0 (or from
 * o), so summing rows in several calls with acc gives the same bits as one call. */
#define WSUM_ROWS(NAME, LOAD, ELT, T)                                                              \
    static void NAME(float *o, const float *p, const T *rows, int64_t stride, int ny, int64_t n,   \
                     bool acc) {                                                                   \
        const int64_t nc = n & ~(int64_t)7;                                                        \
        int64_t d0 = 0;                                                                            \
        for (; d0 + 64 <= nc; d0 += 64) {                                                          \
            __m256 a0 = INIT(o + d0), a1 = INIT(o + d0 + 8), a2 = INIT(o + d0 + 16),               \
                   a3 = INIT(o + d0 + 24), a4 = INIT(o + d0 + 32), a5 = INIT(o + d0 + 40),         \
                   a6 = INIT(o + d0 + 48), a7 = INIT(o + d0 + 56);                                 \
            const T *r = rows + d0;                                                                \
            for (int j = 0; j < ny; j++, r += stride) {                                            \
                const __m256 pj = _mm256_set1_ps(p[j]);                                            \
                a0 = _mm256_fmadd_ps(pj, LOAD(r), a0);                                             \
                a1 = _mm256_fmadd_ps(pj, LOAD(r + 8), a1);                                         \
                a2 = _mm256_fmadd_ps(pj, LOAD(r + 16), a2);                                        \
                a3 = _mm256_fmadd_ps(pj, LOAD(r + 24), a3);                                        \
                a4 = _mm256_fmadd_ps(pj, LOAD(r + 32), a4);                                        \
                a5 = _mm256_fmadd_ps(pj, LOAD(r + 40), a5);                                        \
                a6 = _mm256_fmadd_ps(pj, LOAD(r + 48), a6);                                        \
                a7 = _mm256_fmadd_ps(pj, LOAD(r + 56), a7);                                        \
            }                                                                                      \
            _mm256_storeu_ps(o + d0, a0);                                                          \
            _mm256_storeu_ps(o + d0 + 8, a1);                                                      \
            _mm256_storeu_ps(o + d0 + 16, a2);                                                     \
            _mm256_storeu_ps(o + d0 + 24, a3);                                                     \
            _mm256_storeu_ps(o + d0 + 32, a4);                                                     \
            _mm256_storeu_ps(o + d0 + 40, a5);                                                     \
            _mm256_storeu_ps(o + d0 + 48, a6);                                                     \
            _mm256_storeu_ps(o + d0 + 56, a7);                                                     \
        }                                                                                          \
        for (; d0 < nc; d0 += 8) {                                                                 \
            __m256 a = INIT(o + d0);                                                               \
            const T *r = rows + d0;                                                                \
            for (int j = 0; j < ny; j++, r += stride)                                              \
                a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), LOAD(r), a);                             \
            _mm256_storeu_ps(o + d0, a);                                                           \
        }                                                                                          \
        for (int64_t i = nc; i < n; i++) {                                                         \
            float sum = acc ? o[i] : 0;                                                            \
            for (int j = 0; j < ny; j++)                                                           \
                sum += p[j] * ELT(rows[(int64_t)j * stride + i]);                                  \
            o[i] = sum;                                                                            \
        }                                                                                          \
    }

#define INIT(ptr) (acc ? _mm256_loadu_ps(ptr) : _mm256_setzero_ps())
WSUM_ROWS(wsum_rows_f16, load_f16, ELT_F16, uint16_t)
WSUM_ROWS(wsum_rows_f32, _mm256_loadu_ps, ELT_F32, float)

static void wsum_rows_avx2(float *o, const float *p, const void *rows, int64_t stride, bool f16,
                           int ny, int64_t n, bool acc) {
    if (f16)
        wsum_rows_f16(o, p, rows, stride, ny, n, acc);
    else
        wsum_rows_f32(o, p, rows, stride, ny, n, acc);
}

static void f16_to_f32_avx2(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, load_f16(x + i));
    for (; i < n; i++)
        y[i] = _cvtsh_ss(x[i]);
}

static void to_f16_avx2(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

/* e^x for x in [-87.3, 88.3] (clamped), Cephes expf: 2^n * p(r), |rel err| ~ 2 ulp. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static void silu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 s =
            _mm256_div_ps(x, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* gelu_tanh(x) = 0.5 x (1 + tanh(z)) = x / (1 + e^(-2z)), z = sqrt(2/pi) (x + 0.044715 x^3) */
static void gelu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), c = _mm256_set1_ps(-2.0f * 0.79788456080286535588f),
                 a = _mm256_set1_ps(0.044715f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 z = _mm256_mul_ps(_mm256_mul_ps(c, x), _mm256_fmadd_ps(_mm256_mul_ps(a, x), x, one));
        __m256 y = _mm256_div_ps(x, _mm256_add_ps(one, exp256(z)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
    }
    const float k = 0.79788456080286535588f;
    for (; i < n; i++) {
        float x = g[i];
        g[i] = 0.5f * x * (1.0f + tanhf(k * x * (1.0f + 0.044715f * x * x))) * u[i];
    }
}

static void scale_avx2(float *y, float s, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vs));
    for (; i < n; i++)
        y[i] *= s;
}

/* as ggml_vec_soft_max_f32: each group of 8 summed in f32, the groups in double */
static double exp_sum_avx2(float *s, int64_t n, float mx) {
    const __m256 vm = _mm256_set1_ps(mx);
    double sum = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
        _mm256_storeu_ps(s + i, v);
        sum += (double)hsum(v);
    }
    for (; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += (double)s[i];
    }
    return sum;
}

static void round_f16_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++)
        x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

static const struct model_kernels g_avx2 = {
    .name = "avx2",
    .dot_many = dot_many_avx2,
    .wsum_rows = wsum_rows_avx2,
    .to_f16 = to_f16_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .silu_mul = silu_mul_avx2,
    .gelu_mul = gelu_mul_avx2,
    .scale = scale_avx2,
    .exp_sum = exp_sum_avx2,
    .round_f16 = round_f16_avx2,
};

const struct model_kernels *model_kernels_avx2(void) {
    return &g_avx2;
}

#else
const struct model_kernels *model_kernels_avx2(void) {
    return NULL;
}
#endif
