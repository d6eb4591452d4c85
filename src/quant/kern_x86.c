/*
 * kern_x86.c — the x86 SIMD dot and batched-matmul kernels, written once on 256-bit vectors and
 * compiled twice by CMake (CMakeLists.txt, "kern_x86.c once per ISA"): with -DREALM_KERN_AVX2 and
 * the AVX2 + FMA + F16C flags (16 vector registers), and with -DREALM_KERN_AVX512 and the AVX-512
 * flags (adds VL/BW/VNNI: vpdpbusd / vpdpwssd for the integer dots, mask moves for the 5th bits,
 * 32 registers so larger tiles). Each build defines its own quant_fill_ops_<isa> (the kernels
 * are static), which dispatch.c calls only when CPUID + XGETBV report the ISA. On Zen 4 a 512-bit
 * op costs two 256-bit ones, so 256-bit vectors lose nothing there and fit the 32-element blocks
 * exactly.
 *
 * Structure of every kernel: a tile function computes the dots of R weight rows x B activation
 * rows, loading each weight block once for all B rows (and each activation block once for all R
 * rows). vec_dot is the 1 x 1 tile and matmul tiles the (rows x batch) grid, so every (row,
 * batch) dot runs the same operation sequence whatever the tile: matmul results are
 * bit-identical to vec_dot for every n_b. Integer block sums are exact (no saturation: every
 * maddubs operand pair is bounded, checked per format below); the kernels differ from the scalar
 * reference by float order only.
 *
 * Exception (AVX-512 build, q4_K and q6_K): with n_b >= KX_GNB_MIN the batched kernel puts 16
 * weight rows in the lanes of a 512-bit vector (lanes_avx512.c, weights repacked on the fly into
 * a stack buffer). There the order of the float steps is defined per super-block (kx_k_fin), and
 * the tiles and vec_dot of that build follow it, so the bit-identity above holds within each
 * build; for these two formats the AVX2 and AVX-512 results may differ in the last bits.
 * The same build also runs these two formats from a copy prepacked once at load
 * (realm_quant_prepack, layout in quant.h; kernels in lanes_avx512.c) for every n_b, decode
 * included: same integer sums and kx_k_fin float steps, so again bit-identical to vec_dot.
 * The vectorized quantize_row_q8_K is bit-identical to the scalar reference in both builds.
 *
 * AVX-512 build, the 32-element formats (q4_0 .. q8_0): the float steps are the scalar
 * reference's, per block (kx_step32_exact), and so are those of their 16-row kernels
 * (lanes_avx512.c: from n_b >= KX_L32_NB_MIN on over the original rows, and for every n_b over a
 * prepacked copy): vec_dot, every matmul path and the scalar reference agree bit for bit.
 *
 * Thread rule: pure functions.
 */
#include "quant/quant.h"

#if defined(REALM_KERN_AVX2) == defined(REALM_KERN_AVX512)
#error "kern_x86.c: compile with exactly one of -DREALM_KERN_AVX2, -DREALM_KERN_AVX512"
#endif

/* The ISA of this build: the suffix of its names, and whether its flags are on (KX_ON; without
 * them, on other architectures, the fill function below puts nothing in the table). */
#ifdef REALM_KERN_AVX512
#define KX(name) name##_avx512
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) &&                      \
    defined(__AVX512VNNI__)
#define KX_ON 1
#endif
#else
#define KX(name) name##_avx2
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define KX_ON 1
#endif
#endif

#ifdef KX_ON
#include <string.h>

#include "quant/simd_x86.h"

#ifdef REALM_KERN_AVX512
#define KX_VNNI 1
/* tiles (rows x batch) sized to 32 vector registers */
#define KX_TR 4
#define KX_TB 4
#define KX_FTR 4 /* float formats keep two accumulators per dot */
#define KX_FTB 2
#else
#define KX_VNNI 0
#define KX_TR 2
#define KX_TB 3
#define KX_FTR 2
#define KX_FTB 2
#endif

#define KX_MAXR 4
/* rows per tile for a single activation row (decode): amortizes the activation-side unpacking */
#define KX_R1 4
#define KX_MAXB 4

/* ---- helpers ---- */

KX_INLINE float kx_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KX_INLINE __m256 kx_bcast_f16(const uint16_t *h) {
    return _mm256_set1_ps(_cvtsh_ss(*h));
}

/* acc + sum of 4 adjacent u8*s8 products per int32 lane. Without VNNI through maddubs, which
 * saturates pair sums above 32767: callers guarantee u <= 128 (then 2*128*127 < 32767). */
KX_INLINE __m256i kx_dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if KX_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* acc + sum of 2 adjacent i16*i16 products per int32 lane. */
KX_INLINE __m256i kx_dot_i16(__m256i acc, __m256i a, __m256i b) {
#if KX_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

/* The 32 bits of qh (little-endian) -> 32 bytes, 0x10 where the bit is set. */
KX_INLINE __m256i kx_bits32_x10(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
#if KX_VNNI
    return _mm256_maskz_mov_epi8((__mmask32)bits, _mm256_set1_epi8(0x10));
#else
    /* byte i <- byte i/8 of bits, keep bit i%8, compare */
    const __m256i sel = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)bits), _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                         0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(sel, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
#endif
}

/* ---- the matmul driver: tiles of TR x TB, edges with 1-row / 1-batch tiles ---- */

/* Activation rows per pass over the weights in the batched case: their quants (64 x k bytes,
 * e.g. 150 KB for k = 2048 q8_K) stay in L2 while every weight tile meets them. */
#define KX_BCHUNK 64

#define KX_DRIVER(NAME, TILE, TR, TB)                                                              \
    static void NAME(const struct realm_quant_ops *ops, const void *W, size_t wrb, int64_t k,      \
                     int64_t r0, int64_t r1, const void *act, size_t arb, int64_t n_b, float *out, \
                     int64_t os) {                                                                 \
        (void)ops;                                                                                 \
        const char *w = (const char *)W + (size_t)r0 * wrb;                                        \
        const int64_t n_r = r1 - r0;                                                               \
        out += r0;                                                                                 \
        /* one activation row (decode): KX_R1-row tiles, the next tile's rows prefetched along:    \
         * rows are short streams, too short for the hardware prefetcher when read 4 at a time     \
         * (measured: 2-3x slower from DRAM without the software prefetch) */                      \
        if (n_b == 1) {                                                                            \
            int64_t r = 0;                                                                         \
            for (; r + KX_R1 <= n_r; r += KX_R1)                                                   \
                TILE(KX_R1, 1, k, w + r * wrb, wrb, (const char *)act, arb, out + r, os,           \
                     r + 2 * KX_R1 <= n_r ? w + (r + KX_R1) * wrb : NULL);                         \
            for (; r < n_r; r++)                                                                   \
                TILE(1, 1, k, w + r * wrb, wrb, (const char *)act, arb, out + r, os, NULL);        \
            return;                                                                                \
        }                                                                                          \
        for (int64_t b0 = 0; b0 < n_b; b0 += KX_BCHUNK) {                                          \
            const int64_t b1 = b0 + KX_BCHUNK < n_b ? b0 + KX_BCHUNK : n_b;                        \
            const char *a = (const char *)act;                                                     \
            int64_t r = 0;                                                                         \
            for (; r + (TR) <= n_r; r += (TR)) {                                                   \
                /* prefetch the next tile's rows while this one runs (with its first b tile) */    \
                const char *pf = r + 2 * (TR) <= n_r ? w + (r + (TR)) * wrb : NULL;                \
                int64_t b = b0;                                                                    \
                for (; b + (TB) <= b1; b += (TB)) {                                                \
                    TILE(TR, TB, k, w + r * wrb, wrb, a + b * arb, arb, out + b * os + r, os, pf); \
                    pf = NULL;                                                                     \
                }                                                                                  \
                for (; b < b1; b++) {                                                              \
                    TILE(TR, 1, k, w + r * wrb, wrb, a + b * arb, arb, out + b * os + r, os, pf);  \
                    pf = NULL;                                                                     \
                }                                                                                  \
            }                                                                                      \
            for (; r < n_r; r++) {                                                                 \
                int64_t b = b0;                                                                    \
                for (; b + (TB) <= b1; b += (TB))                                                  \
                    TILE(1, TB, k, w + r * wrb, wrb, a + b * arb, arb, out + b * os + r, os,       \
                         NULL);                                                                    \
                for (; b < b1; b++)                                                                \
                    TILE(1, 1, k, w + r * wrb, wrb, a + b * arb, arb, out + b * os + r, os, NULL); \
            }                                                                                      \
        }                                                                                          \
    }

#define KX_VEC_DOT(NAME, TILE)                                                                     \
    static void NAME(int64_t n, float *s, const void *x, const void *y) {                          \
        TILE(1, 1, n, (const char *)x, 0, (const char *)y, 0, s, 0, NULL);                         \
    }

/* ======================= F32 / F16 / BF16 weights x F32 activations ======================== */

/* 8 weights as floats. */
KX_INLINE __m256 kx_load_w(int wt, const char *p) {
    if (wt == REALM_TYPE_F32) return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (wt == REALM_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* bf16 */
}

/* Two accumulators per dot (even / odd 8-element chunks) hide the FMA latency; a tail of
 * fewer than 8 elements is zero-padded into the odd one. */
KX_INLINE void kx_tile_float(const int wt, const int R, const int B, int64_t n, const char *W,
                             size_t wrb, const char *A, size_t arb, float *out, int64_t os,
                             const char *pf) {
    const size_t es = wt == REALM_TYPE_F32 ? 4 : 2;
    __m256 acc0[KX_MAXR][KX_MAXB], acc1[KX_MAXR][KX_MAXB];
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) {
        acc0[r][b] = _mm256_setzero_ps();
        acc1[r][b] = _mm256_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0[KX_MAXR], w1[KX_MAXR];
        if (pf) kx_prefetch(pf + (size_t)i * R * es, 16 * R * es);
        KX_UNROLL for (int r = 0; r < R; r++) {
            w0[r] = kx_load_w(wt, W + r * wrb + i * es);
            w1[r] = kx_load_w(wt, W + r * wrb + (i + 8) * es);
        }
        KX_UNROLL for (int b = 0; b < B; b++) {
            const float *a = (const float *)(A + b * arb) + i;
            const __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8);
            KX_UNROLL for (int r = 0; r < R; r++) {
                acc0[r][b] = _mm256_fmadd_ps(w0[r], a0, acc0[r][b]);
                acc1[r][b] = _mm256_fmadd_ps(w1[r], a1, acc1[r][b]);
            }
        }
    }
    if (i + 8 <= n) {
        __m256 w0[KX_MAXR];
        KX_UNROLL for (int r = 0; r < R; r++) w0[r] = kx_load_w(wt, W + r * wrb + i * es);
        KX_UNROLL for (int b = 0; b < B; b++) {
            const __m256 a0 = _mm256_loadu_ps((const float *)(A + b * arb) + i);
            KX_UNROLL for (int r = 0; r < R; r++) acc0[r][b] =
                _mm256_fmadd_ps(w0[r], a0, acc0[r][b]);
        }
        i += 8;
    }
    if (i < n) {
        const size_t rem = (size_t)(n - i);
        __m256 w1[KX_MAXR];
        KX_UNROLL for (int r = 0; r < R; r++) {
            uint8_t tmp[32] = {0};
            memcpy(tmp, W + r * wrb + i * es, rem * es);
            w1[r] = kx_load_w(wt, (const char *)tmp);
        }
        KX_UNROLL for (int b = 0; b < B; b++) {
            float tmp[8] = {0};
            memcpy(tmp, (const float *)(A + b * arb) + i, rem * 4);
            const __m256 a1 = _mm256_loadu_ps(tmp);
            KX_UNROLL for (int r = 0; r < R; r++) acc1[r][b] =
                _mm256_fmadd_ps(w1[r], a1, acc1[r][b]);
        }
    }
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) out[b * os + r] =
        kx_hsum(_mm256_add_ps(acc0[r][b], acc1[r][b]));
}

#define KX_TILE_F32(R, B, ...) kx_tile_float(REALM_TYPE_F32, R, B, __VA_ARGS__)
#define KX_TILE_F16(R, B, ...) kx_tile_float(REALM_TYPE_F16, R, B, __VA_ARGS__)
#define KX_TILE_BF16(R, B, ...) kx_tile_float(REALM_TYPE_BF16, R, B, __VA_ARGS__)
KX_VEC_DOT(KX(vec_dot_f32_f32), KX_TILE_F32)
KX_VEC_DOT(KX(vec_dot_f16_f32), KX_TILE_F16)
KX_VEC_DOT(KX(vec_dot_bf16_f32), KX_TILE_BF16)
KX_DRIVER(KX(matmul_f32), KX_TILE_F32, KX_FTR, KX_FTB)
KX_DRIVER(KX(matmul_f16), KX_TILE_F16, KX_FTR, KX_FTB)
KX_DRIVER(KX(matmul_bf16), KX_TILE_BF16, KX_FTR, KX_FTB)

/* ====================== 32-element formats x Q8_0 / Q8_1 activations ======================= */
/*
 * Blocks go two at a time: vector A holds elements 0..15 of blocks i and i+1 (one per 128-bit
 * half), vector B elements 16..31, so one int32x8 dot carries block i in lanes 0-3 and block
 * i+1 in lanes 4-7. The block scales of each operand come as h = [d, m|s, d', m'|s'] (4 floats,
 * one F16C conversion) and spread to [d x4 | d' x4] once per side; per (row, batch) pair and two
 * blocks:
 *     acc  = fma(float(dot), w.d * a.d, acc)
 *     accm = fma(w.h, a.h, accm)         (lanes 1, 3: the min terms m_w s_a of the _1 formats)
 * and the result is hsum(acc) + (accm1 + accm3). An odd last block runs with a zero partner.
 * Quant offsets (q - 8, q - 16, and Q8_0's signed weights as q + 128 with VNNI) are handled on
 * the activation side: corr = -offset * (sums of 4 activations per lane), once per activation
 * block pair, is the start value of the weight dot. Without VNNI, Q8_0 uses the sign trick
 * (|w| as u8 <= 128 keeps maddubs from saturating).
 */

enum { KX_Q4_0, KX_Q4_1, KX_Q5_0, KX_Q5_1, KX_Q8_0 };

struct kx_w2 {
    __m256i a, b; /* unsigned quants, elements 0..15 / 16..31 of both blocks */
    __m128 h;     /* d, m, d', m' (m = 0 for the formats without) */
    __m256 d;     /* [d x4 | d' x4] */
};
struct kx_a2 {
    __m256i a, b, corr;
    __m128 h; /* d, s, d', s' (s = 0 for q8_0) */
    __m256 d; /* [d x4 | d' x4] */
};

KX_INLINE __m256 kx_spread02(__m128 h) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(h),
                                    _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2));
}

KX_INLINE size_t kx_bsize32(const int f) {
    return f == KX_Q4_0   ? sizeof(block_q4_0)
           : f == KX_Q4_1 ? sizeof(block_q4_1)
           : f == KX_Q5_0 ? sizeof(block_q5_0)
           : f == KX_Q5_1 ? sizeof(block_q5_1)
                          : sizeof(block_q8_0);
}

/* 16 bytes at lo and (if two) at hi as the two halves of a vector; else the high half zero. */
KX_INLINE __m256i kx_pair128(const int two, const char *lo, const char *hi) {
    const __m256i l = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo));
    return _mm256_inserti128_si256(
        l, two ? _mm_loadu_si128((const __m128i *)hi) : _mm_setzero_si128(), 1);
}

/* The leading halves of two blocks as floats [h0, h1, h0', h1']: both halves (d and m / s) if
 * `both`, else d only (h1 = 0); the second block zero when absent. */
KX_INLINE __m128 kx_halves2(const int two, const int both, const char *p0, const char *p1) {
    uint32_t u0, u1 = 0;
    memcpy(&u0, p0, 4);
    if (two) memcpy(&u1, p1, 4);
    if (!both) {
        u0 &= 0xFFFFu;
        u1 &= 0xFFFFu;
    }
    return _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)u1, (int)u0));
}

KX_INLINE void kx_w32(const int f, const int two, const char *row, int64_t i, struct kx_w2 *w) {
    const size_t bs = kx_bsize32(f);
    const char *x0 = row + (size_t)i * bs, *x1 = x0 + bs;
    w->h = kx_halves2(two, f == KX_Q4_1 || f == KX_Q5_1, x0, x1);
    w->d = kx_spread02(w->h);
    if (f == KX_Q8_0) {
        w->a = kx_pair128(two, x0 + 2, x1 + 2);
        w->b = kx_pair128(two, x0 + 18, x1 + 18);
#if KX_VNNI
        w->a = _mm256_xor_si256(w->a, _mm256_set1_epi8((char)0x80));
        w->b = _mm256_xor_si256(w->b, _mm256_set1_epi8((char)0x80));
#endif
        return;
    }
    const size_t qs_off = f == KX_Q4_0 ? 2 : f == KX_Q4_1 ? 4 : f == KX_Q5_0 ? 6 : 8;
    const __m256i q = kx_pair128(two, x0 + qs_off, x1 + qs_off);
    const __m256i m0F = _mm256_set1_epi8(0x0F);
    w->a = _mm256_and_si256(q, m0F);
    w->b = _mm256_and_si256(_mm256_srli_epi16(q, 4), m0F);
    if (f == KX_Q5_0 || f == KX_Q5_1) {
        const size_t qh_off = f == KX_Q5_0 ? 2 : 4;
        uint32_t h0, h1 = 0;
        memcpy(&h0, x0 + qh_off, 4);
        if (two) memcpy(&h1, x1 + qh_off, 4);
        /* bits 0..15 belong to vector A, 16..31 to B; block i+1 fills the upper 16 bits */
        const uint32_t ha = (h0 & 0xFFFFu) | (h1 << 16), hb = (h0 >> 16) | (h1 & 0xFFFF0000u);
        w->a = _mm256_or_si256(w->a, kx_bits32_x10((const uint8_t *)&ha));
        w->b = _mm256_or_si256(w->b, kx_bits32_x10((const uint8_t *)&hb));
    }
}

KX_INLINE void kx_a32(const int f, const int two, const char *row, int64_t i, struct kx_a2 *a) {
    const int q81 = f == KX_Q4_1 || f == KX_Q5_1;
    const size_t bs = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0), qs = q81 ? 4 : 2;
    const char *y0 = row + (size_t)i * bs, *y1 = y0 + bs;
    a->h = kx_halves2(two, q81, y0, y1);
    a->d = kx_spread02(a->h);
    a->a = kx_pair128(two, y0 + qs, y1 + qs);
    a->b = kx_pair128(two, y0 + qs + 16, y1 + qs + 16);
    const int offset = f == KX_Q4_0 ? 8 : f == KX_Q5_0 ? 16 : (f == KX_Q8_0 && KX_VNNI) ? 128 : 0;
    a->corr = _mm256_setzero_si256();
    if (offset) {
        const __m256i o = _mm256_set1_epi8((char)offset);
        a->corr = _mm256_sub_epi32(a->corr, kx_dot_u8s8(kx_dot_u8s8(a->corr, o, a->a), o, a->b));
    }
}

KX_INLINE void kx_pair32(const int f, const struct kx_w2 *w, const struct kx_a2 *a, __m256 *acc,
                         __m128 *accm) {
    __m256i d;
    if (f == KX_Q8_0 && !KX_VNNI)
        d = kx_dot_u8s8(
            kx_dot_u8s8(a->corr, _mm256_sign_epi8(w->a, w->a), _mm256_sign_epi8(a->a, w->a)),
            _mm256_sign_epi8(w->b, w->b), _mm256_sign_epi8(a->b, w->b));
    else /* u <= 31 (<= 255 with VNNI, which does not saturate) */
        d = kx_dot_u8s8(kx_dot_u8s8(a->corr, w->a, a->a), w->b, a->b);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(w->d, a->d), *acc);
    if (f == KX_Q4_1 || f == KX_Q5_1) *accm = _mm_fmadd_ps(w->h, a->h, *accm);
}

KX_INLINE void kx_step32(const int f, const int two, const int R, const int B, const char *W,
                         size_t wrb, const char *A, size_t arb, int64_t i, const char *pf,
                         __m256 acc[KX_MAXR][KX_MAXB], __m128 accm[KX_MAXR][KX_MAXB]) {
    struct kx_w2 w[KX_MAXR];
    if (pf) kx_prefetch(pf + (size_t)i * R * kx_bsize32(f), (size_t)2 * R * kx_bsize32(f));
    KX_UNROLL for (int r = 0; r < R; r++) kx_w32(f, two, W + r * wrb, i, &w[r]);
    KX_UNROLL for (int b = 0; b < B; b++) {
        struct kx_a2 a;
        kx_a32(f, two, A + b * arb, i, &a);
        KX_UNROLL for (int r = 0; r < R; r++) kx_pair32(f, &w[r], &a, &acc[r][b], &accm[r][b]);
    }
}

/*
 * AVX-512 build: the float steps of the scalar reference (ref_q4.c, ref_q5.c, ref_q8.c), per
 * (row, activation) pair and block: sumf += (float)isum * (d_w * d_a) [+ m_w * s_a], in block
 * order, with the exact int32 block sum isum. The 16-row kernels of lanes_avx512.c do the same
 * per lane, so vec_dot, every matmul path and the scalar reference agree bit for bit. Here the
 * lanes of acc4[b] are the tile's rows: the integer dots of the 4 rows are reduced together
 * (hadd: block i in lanes 0-3, block i+1 in 4-7) and both blocks are added in order.
 */
KX_INLINE void kx_step32_exact(const int f, const int two, const int R, const int B, const char *W,
                               size_t wrb, const char *A, size_t arb, int64_t i, const char *pf,
                               __m128 acc4[KX_MAXB]) {
    const int q81 = f == KX_Q4_1 || f == KX_Q5_1;
    struct kx_w2 w[KX_MAXR];
    if (pf) kx_prefetch(pf + (size_t)i * R * kx_bsize32(f), (size_t)2 * R * kx_bsize32(f));
    KX_UNROLL for (int r = 0; r < R; r++) kx_w32(f, two, W + r * wrb, i, &w[r]);
    /* [d_r | d'_r] and [m_r | m'_r] over rows r = 0..3: a transpose of the h = [d, m, d', m'] */
    __m128 h0 = w[0].h, h1 = R > 1 ? w[1].h : _mm_setzero_ps(),
           h2 = R > 2 ? w[2].h : _mm_setzero_ps(), h3 = R > 3 ? w[3].h : _mm_setzero_ps();
    _MM_TRANSPOSE4_PS(h0, h1, h2, h3);
    const __m256 dw = _mm256_set_m128(h2, h0), mw = _mm256_set_m128(h3, h1);
    KX_UNROLL for (int b = 0; b < B; b++) {
        struct kx_a2 a;
        kx_a32(f, two, A + b * arb, i, &a);
        __m256i dv[4];
        KX_UNROLL for (int r = 0; r < 4; r++) dv[r] =
            r < R ? kx_dot_u8s8(kx_dot_u8s8(a.corr, w[r].a, a.a), w[r].b, a.b)
                  : _mm256_setzero_si256();
        const __m256i x =
            _mm256_hadd_epi32(_mm256_hadd_epi32(dv[0], dv[1]), _mm256_hadd_epi32(dv[2], dv[3]));
        __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_mul_ps(dw, a.d));
        if (q81) /* [s x4 | s' x4] */
            t = _mm256_add_ps(t, _mm256_mul_ps(mw, _mm256_permutevar8x32_ps(
                                                       _mm256_castps128_ps256(a.h),
                                                       _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3))));
        acc4[b] = _mm_add_ps(acc4[b], _mm256_castps256_ps128(t));
        if (two) acc4[b] = _mm_add_ps(acc4[b], _mm256_extractf128_ps(t, 1));
    }
}

/* pf: start of the next tile's weight rows (prefetched along), or NULL. */
KX_INLINE void kx_tile_32(const int f, const int R, const int B, int64_t n, const char *W,
                          size_t wrb, const char *A, size_t arb, float *out, int64_t os,
                          const char *pf) {
    const int64_t nb = n / 32;
    if (KX_VNNI) {
        __m128 acc4[KX_MAXB];
        KX_UNROLL for (int b = 0; b < B; b++) acc4[b] = _mm_setzero_ps();
        int64_t i = 0;
        for (; i + 2 <= nb; i += 2)
            kx_step32_exact(f, 1, R, B, W, wrb, A, arb, i, pf, acc4);
        if (i < nb) kx_step32_exact(f, 0, R, B, W, wrb, A, arb, i, pf, acc4);
        KX_UNROLL for (int b = 0; b < B; b++) {
            float t[4];
            _mm_storeu_ps(t, acc4[b]);
            KX_UNROLL for (int r = 0; r < R; r++) out[b * os + r] = t[r];
        }
        return;
    }
    __m256 acc[KX_MAXR][KX_MAXB];
    __m128 accm[KX_MAXR][KX_MAXB];
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) {
        acc[r][b] = _mm256_setzero_ps();
        accm[r][b] = _mm_setzero_ps();
    }
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2)
        kx_step32(f, 1, R, B, W, wrb, A, arb, i, pf, acc, accm);
    if (i < nb) kx_step32(f, 0, R, B, W, wrb, A, arb, i, pf, acc, accm);
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) {
        float s = kx_hsum(acc[r][b]);
        if (f == KX_Q4_1 || f == KX_Q5_1) {
            const __m128 m = accm[r][b];
            s += _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(m, m, 3));
        }
        out[b * os + r] = s;
    }
}

#define KX_TILE_Q4_0(R, B, ...) kx_tile_32(KX_Q4_0, R, B, __VA_ARGS__)
#define KX_TILE_Q4_1(R, B, ...) kx_tile_32(KX_Q4_1, R, B, __VA_ARGS__)
#define KX_TILE_Q5_0(R, B, ...) kx_tile_32(KX_Q5_0, R, B, __VA_ARGS__)
#define KX_TILE_Q5_1(R, B, ...) kx_tile_32(KX_Q5_1, R, B, __VA_ARGS__)
#define KX_TILE_Q8_0(R, B, ...) kx_tile_32(KX_Q8_0, R, B, __VA_ARGS__)
KX_VEC_DOT(KX(vec_dot_q4_0_q8_0), KX_TILE_Q4_0)
KX_VEC_DOT(KX(vec_dot_q4_1_q8_1), KX_TILE_Q4_1)
KX_VEC_DOT(KX(vec_dot_q5_0_q8_0), KX_TILE_Q5_0)
KX_VEC_DOT(KX(vec_dot_q5_1_q8_1), KX_TILE_Q5_1)
KX_VEC_DOT(KX(vec_dot_q8_0_q8_0), KX_TILE_Q8_0)
#if KX_VNNI
KX_DRIVER(KX(matmul_q4_0_tiled), KX_TILE_Q4_0, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q4_1_tiled), KX_TILE_Q4_1, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q5_0_tiled), KX_TILE_Q5_0, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q5_1_tiled), KX_TILE_Q5_1, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q8_0_tiled), KX_TILE_Q8_0, KX_TR, KX_TB)
/* With several activation rows: 16 weight rows per 512-bit vector (lanes_avx512.c), slices of
 * the rows repacked on the fly; the repacking is paid once for all n_b rows, so few rows stay
 * on the tiles (same results either way). */
#define KX_L32_NB_MIN 4
#define KX_L32MATMUL(NAME, TYPE, TILED)                                                            \
    static void NAME(const struct realm_quant_ops *ops, const void *W, size_t wrb, int64_t k,      \
                     int64_t r0, int64_t r1, const void *act, size_t arb, int64_t n_b, float *out, \
                     int64_t os) {                                                                 \
        if (n_b < KX_L32_NB_MIN || k < 32) {                                                       \
            TILED(ops, W, wrb, k, r0, r1, act, arb, n_b, out, os);                                 \
            return;                                                                                \
        }                                                                                          \
        quant_matmul_lanes32_avx512(TYPE, k, (const char *)W + (size_t)r0 * wrb, wrb, r1 - r0,     \
                                    act, arb, n_b, out + r0, os);                                  \
    }
KX_L32MATMUL(KX(matmul_q4_0), REALM_TYPE_Q4_0, KX(matmul_q4_0_tiled))
KX_L32MATMUL(KX(matmul_q4_1), REALM_TYPE_Q4_1, KX(matmul_q4_1_tiled))
KX_L32MATMUL(KX(matmul_q5_0), REALM_TYPE_Q5_0, KX(matmul_q5_0_tiled))
KX_L32MATMUL(KX(matmul_q5_1), REALM_TYPE_Q5_1, KX(matmul_q5_1_tiled))
KX_L32MATMUL(KX(matmul_q8_0), REALM_TYPE_Q8_0, KX(matmul_q8_0_tiled))
#else
KX_DRIVER(KX(matmul_q4_0), KX_TILE_Q4_0, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q4_1), KX_TILE_Q4_1, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q5_0), KX_TILE_Q5_0, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q5_1), KX_TILE_Q5_1, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q8_0), KX_TILE_Q8_0, KX_TR, KX_TB)
#endif

/* =============================== K-quants x Q8_K activations =============================== */
/*
 * A super-block is walked in 8 chunks of 32 elements (chunk c = elements 32c..32c+31, the layout
 * of the activation quants); per chunk and row the unsigned quants are unpacked once and used for
 * all B activation rows. Per (row, batch) pair and chunk: maddubs (u8 quant x s8 activation; pair
 * sums stay within int16 since q <= 63 and |a| <= 127) and one int16 dot with the chunk's scale
 * vector (16 lanes = 16 element pairs; lanes 0-7 carry the scale of the first 16 elements and
 * 8-15 that of the next 16) into int32 lanes:
 *     isum = sum_c dot16(maddubs(q_c, a_c), sc_c),   msum = dot16(bsums, m16)   (8 lanes)
 * Formats with mins (q2_K, q4_K, q5_K; m16 = the mins per bsum group): d_a (d isum - dmin msum).
 * Formats with a constant quant offset o (q3_K: 4, q6_K: 32; m16 = the scales):
 * d_a d (isum - o msum), the subtraction in int32.
 */

/* (the K-quant format tags KX_Q2_K .. KX_Q6_K are in simd_x86.h) */

struct kx_ks {
    __m256i s0, s1; /* int16 scales, shuffle sources: [s0..7 | s0..7] and (16-scale formats) [s8..15
                       | s8..15] */
    __m256i m16;    /* int16 factors of the 16 bsums */
    __m256 d, dmin;
};

/* Decodes the 12 bytes of q4_K / q5_K scales: out[0..7] = scales, out[8..15] = mins. */
KX_INLINE __m128i kx_scales_k4(const uint8_t *s12) {
    uint32_t u[4];
    memcpy(u, s12, 12);
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    u[3] = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4); /* mins 4..7 */
    const uint32_t mins03 = u[1] & m6;
    u[1] = (u[2] & m4) | (((u[0] >> 6) & m2) << 4); /* scales 4..7 */
    u[2] = mins03;
    u[0] &= m6; /* scales 0..3 */
    return _mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]);
}

KX_INLINE __m256i kx_dup128(__m128i v) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(v), v, 1);
}

/* scales (16 int16 in a ymm) -> shuffle sources s0, s1 */
KX_INLINE void kx_scales16(__m256i s16, struct kx_ks *s) {
    s->s0 = _mm256_permute4x64_epi64(s16, 0x44);
    s->s1 = _mm256_permute4x64_epi64(s16, 0xEE);
}

KX_INLINE void kx_kscales(const int f, const char *blk, struct kx_ks *s) {
    switch (f) {
    case KX_Q4_K:
    case KX_Q5_K: {
        const block_q4_K *x = (const block_q4_K *)blk; /* q5_K starts the same way */
        const __m128i sm = kx_scales_k4(x->scales);
        s->s0 = kx_dup128(_mm_cvtepu8_epi16(sm));
        s->s1 = s->s0;
        /* bsum g belongs to sub-block g/2: factors m0 m0 m1 m1 ... m7 m7 */
        const __m128i m8 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
        s->m16 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m8, m8)),
                                         _mm_unpackhi_epi16(m8, m8), 1);
        s->d = kx_bcast_f16(&x->d);
        s->dmin = kx_bcast_f16(&x->dmin);
        break;
    }
    case KX_Q6_K: {
        const block_q6_K *x = (const block_q6_K *)blk;
        s->m16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
        kx_scales16(s->m16, s);
        s->d = kx_bcast_f16(&x->d);
        s->dmin = _mm256_setzero_ps();
        break;
    }
    case KX_Q2_K: {
        const block_q2_K *x = (const block_q2_K *)blk;
        const __m128i sc = _mm_loadu_si128((const __m128i *)x->scales), m0F = _mm_set1_epi8(0x0F);
        kx_scales16(_mm256_cvtepu8_epi16(_mm_and_si128(sc, m0F)), s);
        s->m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), m0F));
        s->d = kx_bcast_f16(&x->d);
        s->dmin = kx_bcast_f16(&x->dmin);
        break;
    }
    default: { /* q3_K: 16 6-bit scales, offset 32 */
        const block_q3_K *x = (const block_q3_K *)blk;
        uint32_t a[4];
        memcpy(a, x->scales, 12);
        const uint32_t m4 = 0x0f0f0f0f, m2 = 0x03030303, t = a[2];
        /* scale g: low nibble of byte g % 8 (nibble g / 8), 2 high bits from byte 8 + g % 4 */
        a[2] = ((a[0] >> 4) & m4) | (((t >> 4) & m2) << 4);
        a[3] = ((a[1] >> 4) & m4) | (((t >> 6) & m2) << 4);
        a[0] = (a[0] & m4) | (((t >> 0) & m2) << 4);
        a[1] = (a[1] & m4) | (((t >> 2) & m2) << 4);
        const __m128i sc = _mm_sub_epi8(_mm_setr_epi32((int)a[0], (int)a[1], (int)a[2], (int)a[3]),
                                        _mm_set1_epi8(32));
        s->m16 = _mm256_cvtepi8_epi16(sc);
        kx_scales16(s->m16, s);
        s->d = kx_bcast_f16(&x->d);
        s->dmin = _mm256_setzero_ps();
        break;
    }
    }
}

/* The int16 scale vector of chunk c. */
KX_INLINE __m256i kx_ksc(const int f, const struct kx_ks *s, const int c) {
    if (f == KX_Q4_K || f == KX_Q5_K) /* one sub-block of 32 per chunk: scale c everywhere */
        return _mm256_shuffle_epi8(s->s0, _mm256_set1_epi16((short)((2 * c) | (2 * c + 1) << 8)));
    const int g0 = 2 * (c & 3), g1 = g0 + 1; /* groups 2c, 2c+1 within the 8 of s0 / s1 */
    const __m256i ctl = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16((short)((2 * g0) | (2 * g0 + 1) << 8))),
        _mm_set1_epi16((short)((2 * g1) | (2 * g1 + 1) << 8)), 1);
    return _mm256_shuffle_epi8(c < 4 ? s->s0 : s->s1, ctl);
}

/* The unsigned quants of chunk c. */
KX_INLINE __m256i kx_kq(const int f, const char *blk, const int c) {
    const __m256i m0F = _mm256_set1_epi8(0x0F);
    switch (f) {
    case KX_Q4_K: {
        const __m256i q =
            _mm256_loadu_si256((const __m256i *)(((const block_q4_K *)blk)->qs + 32 * (c / 2)));
        return _mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, m0F);
    }
    case KX_Q5_K: {
        const block_q5_K *x = (const block_q5_K *)blk;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * (c / 2)));
        const __m256i hb = _mm256_loadu_si256((const __m256i *)x->qh);
        /* bit c of qh[l] is bit 4 of element 32c + l: 16-bit shifts move it within its byte */
        const __m256i h = c <= 4 ? _mm256_slli_epi16(hb, 4 - c) : _mm256_srli_epi16(hb, c - 4);
        return _mm256_or_si256(_mm256_and_si256(c % 2 ? _mm256_srli_epi16(q, 4) : q, m0F),
                               _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
    }
    case KX_Q6_K: {
        /* half h = c / 4, quarter j = c % 4: low 4 bits from ql[64h + 32(j%2) ..] (low nibble for
         * j < 2, high for j >= 2), high 2 bits = bits 2j..2j+1 of qh[32h ..] moved to 4..5 */
        const block_q6_K *x = (const block_q6_K *)blk;
        const int h = c / 4, j = c % 4;
        const __m256i l = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32 * (j % 2)));
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        const __m256i hs = j == 0   ? _mm256_slli_epi16(hb, 4)
                           : j == 1 ? _mm256_slli_epi16(hb, 2)
                           : j == 2 ? hb
                                    : _mm256_srli_epi16(hb, 2);
        return _mm256_or_si256(_mm256_and_si256(j < 2 ? l : _mm256_srli_epi16(l, 4), m0F),
                               _mm256_and_si256(hs, _mm256_set1_epi8(0x30)));
    }
    case KX_Q2_K: {
        const __m256i q =
            _mm256_loadu_si256((const __m256i *)(((const block_q2_K *)blk)->qs + 32 * (c / 4)));
        return _mm256_and_si256(_mm256_srli_epi16(q, 2 * (c % 4)), _mm256_set1_epi8(3));
    }
    default: { /* q3_K: q' = low 2 bits + 4 * high bit (0..7), the value being q' - 4 */
        const block_q3_K *x = (const block_q3_K *)blk;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * (c / 4)));
        const __m256i hm = _mm256_loadu_si256((const __m256i *)x->hmask);
        /* the high bit of chunk c is bit c of hmask[l]: move it to bit 2 */
        const __m256i hb = c >= 2 ? _mm256_srli_epi16(hm, c - 2) : _mm256_slli_epi16(hm, 2 - c);
        return _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(q, 2 * (c % 4)), _mm256_set1_epi8(3)),
            _mm256_and_si256(hb, _mm256_set1_epi8(4)));
    }
    }
}

/* Lane k of the result = the sum of the 8 int32 lanes of v_k (exact, any order). */
KX_INLINE __m256i kx_hsum8_epi32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i v4,
                                 __m256i v5, __m256i v6, __m256i v7) {
    const __m256i a01 = _mm256_hadd_epi32(v0, v1), a23 = _mm256_hadd_epi32(v2, v3);
    const __m256i a45 = _mm256_hadd_epi32(v4, v5), a67 = _mm256_hadd_epi32(v6, v7);
    /* per 128-bit half: [v0 v1 v2 v3] (v4..v7) partial sums of that half */
    const __m256i b0 = _mm256_hadd_epi32(a01, a23), b1 = _mm256_hadd_epi32(a45, a67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20),
                            _mm256_permute2x128_si256(b0, b1, 0x31));
}

/* Lanes 0..3 of the result = the sums of the 8 int32 lanes of v0..v3. */
KX_INLINE __m128i kx_hsum4_epi32(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
}

/*
 * The float steps of q4_K and q6_K (AVX-512 build), per (row, activation) pair and super-block,
 * shared by every kernel of the table so that vec_dot and all matmul paths agree bit for bit
 * (they differ only in how the exact int32 sums are formed: isum = sum_j sc_j sum q y over the
 * unsigned quants, msum = sum_g f_g bsums_g with f = the mins (q4_K) or the scales (q6_K)):
 *     q4_K:  acc = fma((float)isum, d * d_y, acc);   acc = fma(-(float)msum, dmin * d_y, acc)
 *     q6_K:  acc = fma((float)(isum - 32 msum), d * d_y, acc)
 * one lane per pair; the 16-row kernel (kx_gtile) does the same on 512-bit vectors.
 */
KX_INLINE __m128 kx_k_fin(const int f, __m128 acc, __m128 fi, __m128 fm, __m128 dy, __m128 my) {
    if (f == KX_Q6_K) return _mm_fmadd_ps(fi, dy, acc);
    return _mm_fnmadd_ps(fm, my, _mm_fmadd_ps(fi, dy, acc));
}

KX_INLINE size_t kx_bsizek(const int f) {
    return f == KX_Q2_K   ? sizeof(block_q2_K)
           : f == KX_Q3_K ? sizeof(block_q3_K)
           : f == KX_Q4_K ? sizeof(block_q4_K)
           : f == KX_Q5_K ? sizeof(block_q5_K)
                          : sizeof(block_q6_K);
}

KX_INLINE void kx_tile_k(const int f, const int R, const int B, int64_t n, const char *W,
                         size_t wrb, const char *A, size_t arb, float *out, int64_t os,
                         const char *pf) {
    /* log2 of the quant offset (q3_K: 4, q6_K: 32); 0 for the formats with mins */
    const int oshift = f == KX_Q3_K ? 2 : f == KX_Q6_K ? 5 : 0;
    const size_t bs = kx_bsizek(f);
    const int64_t nb = n / QK_K;
    __m256 acc[KX_MAXR][KX_MAXB];
    __m128 acc4[KX_MAXB]; /* q4_K, q6_K with VNNI: lane r = row r */
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) acc[r][b] =
        _mm256_setzero_ps();
    KX_UNROLL for (int b = 0; b < B; b++) acc4[b] = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        struct kx_ks S[KX_MAXR];
        if (pf) kx_prefetch(pf + (size_t)i * R * bs, R * bs);
        KX_UNROLL for (int r = 0; r < R; r++) kx_kscales(f, W + r * wrb + (size_t)i * bs, &S[r]);
        __m256i isum[KX_MAXR][KX_MAXB];
        KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) isum[r][b] =
            _mm256_setzero_si256();
        KX_UNROLL for (int c = 0; c < 8; c++) {
            __m256i yq[KX_MAXB];
            KX_UNROLL for (int b = 0; b < B; b++) yq[b] = _mm256_loadu_si256(
                (const __m256i *)(((const block_q8_K *)(A + b * arb) + i)->qs + 32 * c));
            KX_UNROLL for (int r = 0; r < R; r++) {
                const __m256i q = kx_kq(f, W + r * wrb + (size_t)i * bs, c);
                const __m256i sc = kx_ksc(f, &S[r], c);
                KX_UNROLL for (int b = 0; b < B; b++) isum[r][b] =
                    kx_dot_i16(isum[r][b], _mm256_maddubs_epi16(q, yq[b]), sc);
            }
        }
        if (KX_VNNI && f == KX_Q6_K) {
            /* per-block integer sums, then the float steps of kx_k_fin (lanes = rows) */
            __m256i s[4];
            uint16_t dh[8] = {0};
            KX_UNROLL for (int b = 0; b < B; b++) {
                const block_q8_K *y = (const block_q8_K *)(A + b * arb) + i;
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
                KX_UNROLL for (int r = 0; r < 4; r++) s[r] =
                    r < R
                        ? _mm256_sub_epi32(isum[r][b],
                                           _mm256_slli_epi32(_mm256_madd_epi16(bsums, S[r].m16), 5))
                        : _mm256_setzero_si256();
                __m128i x;
                if (R == 1) {
                    x = _mm_add_epi32(_mm256_castsi256_si128(s[0]),
                                      _mm256_extracti128_si256(s[0], 1));
                    x = _mm_hadd_epi32(x, x);
                    x = _mm_hadd_epi32(x, x);
                } else {
                    x = kx_hsum4_epi32(s[0], s[1], s[2], s[3]);
                }
                if (b == 0)
                    KX_UNROLL for (int r = 0; r < R; r++) dh[r] =
                        ((const block_q6_K *)(W + r * wrb + (size_t)i * bs))->d;
                const __m128 dy = _mm_mul_ps(_mm_cvtph_ps(_mm_loadu_si128((const __m128i *)dh)),
                                             _mm_set1_ps(y->d));
                acc4[b] = kx_k_fin(f, acc4[b], _mm_cvtepi32_ps(x), dy, dy, dy);
            }
            continue;
        }
        if (KX_VNNI && f == KX_Q4_K) {
            /* per-block integer sums, then the float steps of kx_k_fin (lanes = rows) */
            if (R == 1 && B == 1) { /* vec_dot: a 2-vector reduction, lane 0 */
                const block_q8_K *y = (const block_q8_K *)(A) + i;
                const __m256i h = _mm256_hadd_epi32(
                    isum[0][0],
                    _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), S[0].m16));
                __m128i x =
                    _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                x = _mm_hadd_epi32(x, x); /* isum, msum, isum, msum */
                uint32_t dm;
                memcpy(&dm, W + (size_t)i * bs, 4); /* d, dmin */
                const __m128 fs = _mm_cvtepi32_ps(x);
                const __m128 dy =
                    _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dm)), _mm_set1_ps(y->d));
                acc4[0] = kx_k_fin(f, acc4[0], fs, _mm_movehdup_ps(fs), dy, _mm_movehdup_ps(dy));
                continue;
            }
            uint16_t dh[8] = {0};
            KX_UNROLL for (int r = 0; r < R; r++) {
                const block_q4_K *x = (const block_q4_K *)(W + r * wrb + (size_t)i * bs);
                dh[r] = x->d;
                dh[4 + r] = x->dmin;
            }
            const __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)dh));
            KX_UNROLL for (int b = 0; b < B; b++) {
                const block_q8_K *y = (const block_q8_K *)(A + b * arb) + i;
                const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
                __m256i is[4], ms[4];
                KX_UNROLL for (int r = 0; r < 4; r++) {
                    is[r] = r < R ? isum[r][b] : _mm256_setzero_si256();
                    ms[r] = r < R ? _mm256_madd_epi16(bsums, S[r].m16) : _mm256_setzero_si256();
                }
                const __m256 s = _mm256_cvtepi32_ps(
                    kx_hsum8_epi32(is[0], is[1], is[2], is[3], ms[0], ms[1], ms[2], ms[3]));
                const __m256 dy = _mm256_mul_ps(dd, _mm256_set1_ps(y->d));
                acc4[b] =
                    kx_k_fin(f, acc4[b], _mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1),
                             _mm256_castps256_ps128(dy), _mm256_extractf128_ps(dy, 1));
            }
            continue;
        }
        KX_UNROLL for (int b = 0; b < B; b++) {
            const block_q8_K *y = (const block_q8_K *)(A + b * arb) + i;
            const __m256 yd = _mm256_set1_ps(y->d);
            const __m256i bsums = _mm256_loadu_si256((const __m256i *)y->bsums);
            KX_UNROLL for (int r = 0; r < R; r++) {
                const __m256i msum = _mm256_madd_epi16(bsums, S[r].m16);
                if (oshift) {
                    const __m256i s = _mm256_sub_epi32(isum[r][b], _mm256_slli_epi32(msum, oshift));
                    acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(S[r].d, yd),
                                                acc[r][b]);
                } else {
                    acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][b]),
                                                _mm256_mul_ps(S[r].d, yd), acc[r][b]);
                    acc[r][b] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum),
                                                 _mm256_mul_ps(S[r].dmin, yd), acc[r][b]);
                }
            }
        }
    }
    if (KX_VNNI && (f == KX_Q4_K || f == KX_Q6_K)) {
        KX_UNROLL for (int b = 0; b < B; b++) {
            float t[4];
            _mm_storeu_ps(t, acc4[b]);
            KX_UNROLL for (int r = 0; r < R; r++) out[b * os + r] = t[r];
        }
        return;
    }
    KX_UNROLL for (int r = 0; r < R; r++) KX_UNROLL for (int b = 0; b < B; b++) out[b * os + r] =
        kx_hsum(acc[r][b]);
}

#define KX_TILE_Q2_K(R, B, ...) kx_tile_k(KX_Q2_K, R, B, __VA_ARGS__)
#define KX_TILE_Q3_K(R, B, ...) kx_tile_k(KX_Q3_K, R, B, __VA_ARGS__)
#define KX_TILE_Q4_K(R, B, ...) kx_tile_k(KX_Q4_K, R, B, __VA_ARGS__)
#define KX_TILE_Q5_K(R, B, ...) kx_tile_k(KX_Q5_K, R, B, __VA_ARGS__)
#define KX_TILE_Q6_K(R, B, ...) kx_tile_k(KX_Q6_K, R, B, __VA_ARGS__)
KX_VEC_DOT(KX(vec_dot_q2_K_q8_K), KX_TILE_Q2_K)
KX_VEC_DOT(KX(vec_dot_q3_K_q8_K), KX_TILE_Q3_K)
KX_VEC_DOT(KX(vec_dot_q4_K_q8_K), KX_TILE_Q4_K)
KX_VEC_DOT(KX(vec_dot_q5_K_q8_K), KX_TILE_Q5_K)
KX_VEC_DOT(KX(vec_dot_q6_K_q8_K), KX_TILE_Q6_K)
KX_DRIVER(KX(matmul_q2_K), KX_TILE_Q2_K, KX_TR, KX_TB)
KX_DRIVER(KX(matmul_q3_K), KX_TILE_Q3_K, KX_TR, KX_TB)
#if KX_VNNI
KX_DRIVER(KX(matmul_q4_K_tiled), KX_TILE_Q4_K, KX_TR, KX_TB)
#else
KX_DRIVER(KX(matmul_q4_K), KX_TILE_Q4_K, KX_TR, KX_TB)
#endif
KX_DRIVER(KX(matmul_q5_K), KX_TILE_Q5_K, KX_TR, KX_TB)
#if KX_VNNI
KX_DRIVER(KX(matmul_q6_K_tiled), KX_TILE_Q6_K, KX_TR, KX_TB)
#else
KX_DRIVER(KX(matmul_q6_K), KX_TILE_Q6_K, KX_TR, KX_TB)
#endif

#if KX_VNNI
/* q4_K / q6_K with several activation rows: 16 weight rows per 512-bit vector (lanes_avx512.c).
 * Few activation rows, k = 0 (nothing to repack; the tiles write the zeros) and rows over 128 MB
 * (gather offsets are int32) go to the tiles. */
#define KX_GNB_MIN 3
#define KX_GMATMUL(NAME, LANES, TILED)                                                             \
    static void NAME(const struct realm_quant_ops *ops, const void *W, size_t wrb, int64_t k,      \
                     int64_t r0, int64_t r1, const void *act, size_t arb, int64_t n_b, float *out, \
                     int64_t os) {                                                                 \
        if (n_b < KX_GNB_MIN || k < QK_K || wrb > (size_t)INT32_MAX / QUANT_PACK_ROWS) {           \
            TILED(ops, W, wrb, k, r0, r1, act, arb, n_b, out, os);                                 \
            return;                                                                                \
        }                                                                                          \
        LANES(k, (const char *)W + (size_t)r0 * wrb, wrb, r1 - r0, act, arb, n_b, out + r0, os);   \
    }
KX_GMATMUL(KX(matmul_q4_K), quant_matmul_lanes_q4_K_avx512, KX(matmul_q4_K_tiled))
KX_GMATMUL(KX(matmul_q6_K), quant_matmul_lanes_q6_K_avx512, KX(matmul_q6_K_tiled))
#endif

/* ============================ activations: quantize_row_q8_K ============================ */
/*
 * Bit-identical to quant_quantize_row_q8_K (ref_q8.c): the same IEEE operations per element
 * (|x| max with NaNs skipped, the first element of that magnitude, iscale = -127/max, the
 * nearest_int magic-number rounding, min 127, truncation to int8), only vectorized; the bsums
 * are exact integer sums of the stored quants.
 */
static void KX(quantize_row_q8_K)(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    const int64_t nb = n / QK_K;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) /* max_ps returns its 2nd operand if one is NaN */
            m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        if (amax == 0) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        int jmax = 0;
        for (int j = 0; j < QK_K; j += 8) {
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(
                _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (mask) {
                jmax = j + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        const float iscale = -127.f / x[jmax];
        const __m256 vs = _mm256_set1_ps(iscale), magic = _mm256_set1_ps(12582912.f);
        const __m256i mant = _mm256_set1_epi32(0x007fffff), off = _mm256_set1_epi32(0x00400000);
        const __m256i c127 = _mm256_set1_epi32(127), ff = _mm256_set1_epi32(0xFF);
        __m256i sums[8];
        for (int j = 0; j < QK_K; j += 32) {
            __m256i v[4];
            for (int u = 0; u < 4; u++) {
                const __m256 f =
                    _mm256_add_ps(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * u)), magic);
                const __m256i q =
                    _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(f), mant), off);
                v[u] = _mm256_and_si256(_mm256_min_epi32(q, c127), ff); /* int8 bits */
            }
            /* [v0 0-3 v1 0-3 v2 0-3 v3 0-3 | v0 4-7 ...] -> element order */
            const __m256i b =
                _mm256_permutevar8x32_epi32(_mm256_packus_epi16(_mm256_packus_epi32(v[0], v[1]),
                                                                _mm256_packus_epi32(v[2], v[3])),
                                            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), b);
            /* 4-sums: lanes 0-3 group j/16, lanes 4-7 group j/16 + 1 */
            sums[j / 32] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), b),
                                             _mm256_set1_epi16(1));
        }
        /* [g0 g2 g4 g6 | g1 g3 g5 g7] and [g8 .. g14 | g9 .. g15] */
        const __m256i w0 = _mm256_hadd_epi32(_mm256_hadd_epi32(sums[0], sums[1]),
                                             _mm256_hadd_epi32(sums[2], sums[3]));
        const __m256i w1 = _mm256_hadd_epi32(_mm256_hadd_epi32(sums[4], sums[5]),
                                             _mm256_hadd_epi32(sums[6], sums[7]));
        const __m256i p = _mm256_packs_epi32(w0, w1); /* |sum| <= 2048: exact */
        const __m128i ev = _mm256_castsi256_si128(p), od = _mm256_extracti128_si256(p, 1);
        _mm_storeu_si128((__m128i *)y[i].bsums, _mm_unpacklo_epi16(ev, od));
        _mm_storeu_si128((__m128i *)(y[i].bsums + 8), _mm_unpackhi_epi16(ev, od));
        y[i].d = 1 / iscale;
    }
}

/* ---- the table entries ---- */

int KX(quant_fill_ops)(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    static const struct {
        uint32_t type;
        quant_vec_dot_fn dot;
        realm_quant_matmul_fn *mm;
    } k[] = {
        {REALM_TYPE_F32, KX(vec_dot_f32_f32), KX(matmul_f32)},
        {REALM_TYPE_F16, KX(vec_dot_f16_f32), KX(matmul_f16)},
        {REALM_TYPE_BF16, KX(vec_dot_bf16_f32), KX(matmul_bf16)},
        {REALM_TYPE_Q4_0, KX(vec_dot_q4_0_q8_0), KX(matmul_q4_0)},
        {REALM_TYPE_Q4_1, KX(vec_dot_q4_1_q8_1), KX(matmul_q4_1)},
        {REALM_TYPE_Q5_0, KX(vec_dot_q5_0_q8_0), KX(matmul_q5_0)},
        {REALM_TYPE_Q5_1, KX(vec_dot_q5_1_q8_1), KX(matmul_q5_1)},
        {REALM_TYPE_Q8_0, KX(vec_dot_q8_0_q8_0), KX(matmul_q8_0)},
        {REALM_TYPE_Q2_K, KX(vec_dot_q2_K_q8_K), KX(matmul_q2_K)},
        {REALM_TYPE_Q3_K, KX(vec_dot_q3_K_q8_K), KX(matmul_q3_K)},
        {REALM_TYPE_Q4_K, KX(vec_dot_q4_K_q8_K), KX(matmul_q4_K)},
        {REALM_TYPE_Q5_K, KX(vec_dot_q5_K_q8_K), KX(matmul_q5_K)},
        {REALM_TYPE_Q6_K, KX(vec_dot_q6_K_q8_K), KX(matmul_q6_K)},
    };
    const int n = (int)(sizeof k / sizeof k[0]);
    for (int i = 0; i < n; i++) {
        tab[k[i].type].vec_dot = k[i].dot;
        tab[k[i].type].matmul = k[i].mm;
    }
    tab[REALM_TYPE_Q8_K].quantize_row = KX(quantize_row_q8_K);
#if KX_VNNI
    tab[REALM_TYPE_Q4_K].matmul_packed = quant_matmul_packed_q4_K_avx512;
    tab[REALM_TYPE_Q6_K].matmul_packed = quant_matmul_packed_q6_K_avx512;
    tab[REALM_TYPE_Q4_0].matmul_packed = quant_matmul_packed_q4_0_avx512;
    tab[REALM_TYPE_Q4_1].matmul_packed = quant_matmul_packed_q4_1_avx512;
    tab[REALM_TYPE_Q5_0].matmul_packed = quant_matmul_packed_q5_0_avx512;
    tab[REALM_TYPE_Q5_1].matmul_packed = quant_matmul_packed_q5_1_avx512;
    tab[REALM_TYPE_Q8_0].matmul_packed = quant_matmul_packed_q8_0_avx512;
#endif
    return n + 1;
}

#else
/* Built without this ISA's flags (not x86): no variants. */
int KX(quant_fill_ops)(struct realm_quant_ops tab[REALM_TYPE_COUNT]) {
    (void)tab;
    return 0;
}
#endif
