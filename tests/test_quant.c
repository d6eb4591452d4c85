/*
 * test_quant.c — the quantized kernels (src/quant/): fp16/bf16 conversion, every ISA variant
 * against the scalar reference on random blocks of odd row lengths, realm_quant_matmul against
 * single vec_dots, and the scalar reference against llama.cpp on fixtures cut from real models
 * (tests/quant_fixtures/, made by scripts/gen_quant_fixtures.py).
 *
 * Tolerances: dequantize_row and activation quantize_row must be bit-identical across ISAs;
 * realm_quant_matmul must be bit-identical to the same ISA's vec_dot for every n_b; vec_dot of a
 * variant may differ from the scalar reference by float summation order only:
 * |a - b| <= 1e-5 * sum_i |x_i * y_i| (x, y dequantized), which also bounds the scalar dot against
 * a double-precision dot of the dequantized rows. Exception: the 32-element formats (q4_0 ..
 * q8_0) on AVX-512 take the scalar reference's float steps and must equal it bit for bit
 * (vec_dot, matmul, prepacked).
 */
#include <dirent.h>
#include <math.h>

#include "realm/quant.h"
#include "realm/status.h"
#include "realm/types.h"
#include "testutil.h"

#define DOT_RTOL 1e-5

static const uint32_t k_weight_types[] = {
    REALM_TYPE_F32,  REALM_TYPE_F16,  REALM_TYPE_BF16, REALM_TYPE_Q4_0, REALM_TYPE_Q4_1,
    REALM_TYPE_Q5_0, REALM_TYPE_Q5_1, REALM_TYPE_Q8_0, REALM_TYPE_Q2_K, REALM_TYPE_Q3_K,
    REALM_TYPE_Q4_K, REALM_TYPE_Q5_K, REALM_TYPE_Q6_K,
};
static const uint32_t k_act_types[] = {REALM_TYPE_F32,  REALM_TYPE_F16,  REALM_TYPE_BF16,
                                       REALM_TYPE_Q8_0, REALM_TYPE_Q8_1, REALM_TYPE_Q8_K};
#define N_WEIGHT_TYPES (sizeof k_weight_types / sizeof k_weight_types[0])
#define N_ACT_TYPES (sizeof k_act_types / sizeof k_act_types[0])

static const char *tname(uint32_t t) {
    const struct realm_type_info *i = realm_type_get(t);
    return i ? i->name : "?";
}

static float rand_range(tu_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (tu_rand_float(r) + 1.0f) * 0.5f;
}

static void put_half(unsigned char *p, float f) {
    const uint16_t h = realm_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* Offsets of the fp16 scale fields in a block: {d, m/dmin or -1}; d is signed random, the
 * second (min) field small. */
static void half_fields(uint32_t type, int *d_off, int *m_off) {
    *d_off = -1;
    *m_off = -1;
    switch (type) {
    case REALM_TYPE_Q4_0:
    case REALM_TYPE_Q5_0:
    case REALM_TYPE_Q8_0:
        *d_off = 0;
        break;
    case REALM_TYPE_Q4_1:
    case REALM_TYPE_Q5_1:
        *d_off = 0;
        *m_off = 2;
        break;
    case REALM_TYPE_Q2_K:
        *d_off = 80;
        *m_off = 82;
        break;
    case REALM_TYPE_Q3_K:
        *d_off = 108;
        break;
    case REALM_TYPE_Q4_K:
    case REALM_TYPE_Q5_K:
        *d_off = 0;
        *m_off = 2;
        break;
    case REALM_TYPE_Q6_K:
        *d_off = 208;
        break;
    default:
        break;
    }
}

/* A random weight row of n elements: random quant bytes with sane (finite, small) scales, or
 * random values for the float formats. */
static void random_weights(uint32_t type, void *buf, int64_t n, tu_rng *r) {
    if (type == REALM_TYPE_F32) {
        float *f = buf;
        for (int64_t i = 0; i < n; i++)
            f[i] = tu_rand_float(r);
        return;
    }
    if (type == REALM_TYPE_F16 || type == REALM_TYPE_BF16) {
        uint16_t *h = buf;
        for (int64_t i = 0; i < n; i++) {
            const float v = tu_rand_float(r);
            if (type == REALM_TYPE_F16) {
                h[i] = realm_f32_to_f16(v);
            } else {
                uint32_t u;
                memcpy(&u, &v, 4);
                h[i] = (uint16_t)(u >> 16);
            }
        }
        return;
    }
    const struct realm_type_info *ti = realm_type_get(type);
    const int64_t nb = n / ti->block_size;
    unsigned char *p = buf;
    for (size_t i = 0; i < (size_t)nb * ti->type_size; i++)
        p[i] = (unsigned char)tu_rand_u64(r);
    int d_off, m_off;
    half_fields(type, &d_off, &m_off);
    const int k_quant = ti->block_size == 256;
    for (int64_t b = 0; b < nb; b++) {
        unsigned char *blk = p + (size_t)b * ti->type_size;
        float d = rand_range(r, 0.5e-3f, 2e-2f);
        if (k_quant)
            d *= 0.1f; /* multiplied by 6-8 bit sub-block scales */
        else if (tu_rand_u64(r) & 1)
            d = -d; /* legacy formats: either sign */
        if (d_off >= 0) put_half(blk + d_off, d);
        if (m_off >= 0)
            put_half(blk + m_off,
                     k_quant ? rand_range(r, 0.0f, 2e-3f) : rand_range(r, -0.05f, 0.05f));
    }
}

/* Random activations with a few hard cases: an all-zero block, an outlier, a tie pattern. */
static void random_acts(float *x, int64_t n, tu_rng *r, int variant) {
    for (int64_t i = 0; i < n; i++)
        x[i] = tu_rand_float(r) * 2.5f;
    if (variant == 1 && n >= 64)
        for (int64_t i = 0; i < 32; i++)
            x[i] = 0.0f;
    if (variant == 2) x[n / 2] = 40.0f;
    if (variant == 3) /* values k * amax / 254 land on .5 after scaling: rounding ties */
        for (int64_t i = 0; i < n; i++)
            x[i] = (float)((i % 255) - 127) * 0.5f;
}

static double sum_abs_products(const float *x, const float *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += fabs((double)x[i] * (double)y[i]);
    return s;
}

static double dot_double(const float *x, const float *y, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * (double)y[i];
    return s;
}

/* Bound of the error q8_1's half-rounded block sums add to the dot of a q4_1 / q5_1 row (whose
 * min m is the half at offset 2 of each block of `wbs` bytes): sum |m_x * s_y| * 2^-10 (s_y is
 * half(d * sum q) with d unrounded, while the dequantized activations use half(d)). */
static double q8_1_sum_error(const unsigned char *w, const unsigned char *a, int64_t n,
                             size_t wbs) {
    double e = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        uint16_t m, s;
        memcpy(&m, w + (size_t)i * wbs + 2, 2);
        memcpy(&s, a + (size_t)i * 36 + 2, 2);
        e += fabs((double)realm_f16_to_f32(m) * realm_f16_to_f32(s)) * 0x1p-10;
    }
    return e;
}

/* ---- fp16 / bf16 ---- */

static void test_f16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = realm_f16_to_f32((uint16_t)h);
        const int is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
        if (is_nan) {
            if (!isnan(f) || !isnan(realm_f16_to_f32(realm_f32_to_f16(f)))) bad++;
            continue;
        }
        if (realm_f32_to_f16(f) != h) bad++;
    }
    CHECKF(bad == 0, "%d f16 values do not round-trip", bad);
    /* midpoints round to even; just above / below round to the nearer neighbour */
    bad = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        const float a = realm_f16_to_f32((uint16_t)h), b = realm_f16_to_f32((uint16_t)(h + 1));
        const float mid = 0.5f * (a + b);
        const uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (realm_f32_to_f16(mid) != even) bad++;
        if (realm_f32_to_f16(nextafterf(mid, 0.0f)) != h) bad++;
        if (realm_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1) bad++;
        if (realm_f32_to_f16(-mid) != (even | 0x8000)) bad++;
    }
    CHECKF(bad == 0, "%d f16 rounding errors at midpoints", bad);
    CHECK_EQ_INT(realm_f32_to_f16(65520.0f), 0x7c00);
    CHECK_EQ_INT(realm_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
    CHECK_EQ_INT(realm_f32_to_f16(1e10f), 0x7c00);
    CHECK_EQ_INT(realm_f32_to_f16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(realm_f32_to_f16(0x1p-25f), 0); /* tie between 0 and 2^-24: even */
    CHECK_EQ_INT(realm_f32_to_f16(nextafterf(0x1p-25f, 1)), 1);
    CHECK_EQ_INT(realm_f32_to_f16(1e-30f), 0);
    CHECK_EQ_INT(realm_f32_to_f16(-0.0f), 0x8000);
    CHECK(isnan(realm_f16_to_f32(realm_f32_to_f16(NAN))));
    CHECK(realm_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(realm_bf16_to_f32(0xc040) == -3.0f);
}

/* ---- every ISA variant against the scalar reference ---- */

static void test_act_quant(enum realm_isa isa) {
    tu_rng r = {0x1234 + (uint64_t)isa};
    for (size_t ti = 0; ti < N_ACT_TYPES; ti++) {
        const uint32_t t = k_act_types[ti];
        const struct realm_quant_ops *ref = realm_quant_ops_isa(t, REALM_ISA_SCALAR);
        const struct realm_quant_ops *ops = realm_quant_ops_isa(t, isa);
        CHECKF(ref && ops && ref->quantize_row && ops->quantize_row, "%s: no quantizer", tname(t));
        if (!ref || !ops || !ops->quantize_row) continue;
        const int64_t bs = realm_type_get(t)->block_size;
        const int64_t counts[] = {1, 3, 17};
        for (int ci = 0; ci < 3; ci++) {
            const int64_t n = counts[ci] * (bs == 1 ? 37 : bs);
            const size_t rb = realm_type_row_size(t, n);
            float *x = malloc((size_t)n * sizeof(float));
            unsigned char *a = malloc(rb), *b = malloc(rb);
            for (int v = 0; v < 4; v++) {
                random_acts(x, n, &r, v);
                memset(a, 0xa5, rb);
                memset(b, 0x5a, rb);
                ref->quantize_row(x, a, n);
                ops->quantize_row(x, b, n);
                CHECKF(!memcmp(a, b, rb), "%s quantize_row %s != scalar (n=%lld v=%d)", tname(t),
                       realm_quant_isa_name(isa), (long long)n, v);
            }
            free(x);
            free(a);
            free(b);
        }
    }
}

/* The 32-element formats on AVX-512: vec_dot, the tiles and the 16-row lanes kernels (unpacked
 * and prepacked) all take the scalar reference's float steps, so they equal it bit for bit. */
static int is_type32(uint32_t t) {
    return t == REALM_TYPE_Q4_0 || t == REALM_TYPE_Q4_1 || t == REALM_TYPE_Q5_0 ||
           t == REALM_TYPE_Q5_1 || t == REALM_TYPE_Q8_0;
}
static int exact_ref(uint32_t t, enum realm_isa isa) {
    return is_type32(t) && (isa == REALM_ISA_SCALAR || isa == REALM_ISA_AVX512);
}

static void test_weight_type(uint32_t t, enum realm_isa isa) {
    const struct realm_quant_ops *ref = realm_quant_ops_isa(t, REALM_ISA_SCALAR);
    const struct realm_quant_ops *ops = realm_quant_ops_isa(t, isa);
    CHECKF(ref && ops, "%s: no ops for %s", tname(t), realm_quant_isa_name(isa));
    if (!ref || !ops) return;
    CHECK_EQ_INT(ops->type, t);
    CHECK_EQ_INT(ops->vec_dot_type, ref->vec_dot_type);
    const uint32_t at = ops->vec_dot_type;
    const struct realm_quant_ops *aref = realm_quant_ops_isa(at, REALM_ISA_SCALAR);
    CHECK(aref && aref->quantize_row);
    if (!aref || !aref->quantize_row) return;
    const int64_t bs = realm_type_get(t)->block_size;
    const int64_t abs_ = realm_type_get(at)->block_size;
    const int64_t unit = bs > abs_ ? bs : abs_;
    tu_rng r = {0xabcdef + t * 131 + (uint64_t)isa};
    /* for float formats, odd element counts (tails); for blocks, odd block counts */
    const int64_t counts[] = {1, 3, 17, 33};
    for (int ci = 0; ci < 4; ci++) {
        const int64_t n = unit == 1 ? (int64_t[]){1, 3, 172, 1023}[ci] : counts[ci] * unit;
        if (unit > 32 && ci == 3) continue; /* 33 super-blocks: no new case, only time */
        const int n_r = 9, n_b = 9;
        const size_t wrb = realm_type_row_size(t, n), arb = realm_type_row_size(at, n);
        unsigned char *W = malloc(wrb * n_r), *A = malloc(arb * n_b);
        float *wf = malloc(sizeof(float) * (size_t)n), *wf2 = malloc(sizeof(float) * (size_t)n);
        float *af = malloc(sizeof(float) * (size_t)n * n_b),
              *xs = malloc(sizeof(float) * (size_t)n);
        for (int i = 0; i < n_r; i++)
            random_weights(t, W + wrb * i, n, &r);
        for (int b = 0; b < n_b; b++) {
            random_acts(xs, n, &r, b % 4);
            aref->quantize_row(xs, A + arb * b, n);
            aref->dequantize_row(A + arb * b, af + (size_t)n * b, n);
        }
        /* dequantize: bit-identical */
        for (int i = 0; i < n_r; i++) {
            ref->dequantize_row(W + wrb * i, wf, n);
            memset(wf2, 0xff, sizeof(float) * (size_t)n);
            ops->dequantize_row(W + wrb * i, wf2, n);
            CHECKF(!memcmp(wf, wf2, sizeof(float) * (size_t)n),
                   "%s dequantize %s != scalar (n=%lld)", tname(t), realm_quant_isa_name(isa),
                   (long long)n);
            int finite = 1;
            for (int64_t j = 0; j < n; j++)
                finite &= isfinite(wf[j]) != 0;
            CHECK(finite);
        }
        /* vec_dot against the scalar reference and a double dot of the dequantized rows */
        float dots[9][9];
        for (int i = 0; i < n_r; i++) {
            ref->dequantize_row(W + wrb * i, wf, n);
            for (int b = 0; b < n_b; b++) {
                float s_ref = NAN, s = NAN;
                ref->vec_dot(n, &s_ref, W + wrb * i, A + arb * b);
                ops->vec_dot(n, &s, W + wrb * i, A + arb * b);
                dots[b][i] = s;
                const double sa = sum_abs_products(wf, af + (size_t)n * b, n);
                const double exact = dot_double(wf, af + (size_t)n * b, n);
                const double tol = DOT_RTOL * sa + 1e-30;
                /* q8_1 stores d*sum(q) rounded to half: the min term m_x * s_y carries that
                 * rounding (relative 2^-10) on top of the dequantized dot */
                const double tol_deq =
                    tol + (at == REALM_TYPE_Q8_1
                               ? q8_1_sum_error(W + wrb * i, A + arb * b, n, wrb / (size_t)(n / 32))
                               : 0.0);
                CHECKF(fabs((double)s_ref - exact) <= tol_deq,
                       "%s scalar dot %.9g vs dequantized %.9g (tol %.3g, n=%lld, row %d act %d)",
                       tname(t), s_ref, exact, tol_deq, (long long)n, i, b);
                CHECKF(fabs((double)s - (double)s_ref) <= tol,
                       "%s %s dot %.9g vs scalar %.9g (tol %.3g, n=%lld)", tname(t),
                       realm_quant_isa_name(isa), s, s_ref, tol, (long long)n);
                if (exact_ref(t, isa))
                    CHECKF(!memcmp(&s, &s_ref, 4),
                           "%s %s dot %.9g != scalar %.9g bit for bit (n=%lld, row %d act %d)",
                           tname(t), realm_quant_isa_name(isa), s, s_ref, (long long)n, i, b);
            }
        }
        /* matmul, every n_b and a row sub-range, bit-identical to vec_dot; untouched elsewhere */
        const int stride = n_r + 3;
        float *out = malloc(sizeof(float) * (size_t)stride * n_b);
        for (int nb_ = 1; nb_ <= n_b; nb_++) {
            for (int pass = 0; pass < 2; pass++) {
                const int r0 = pass ? 2 : 0, r1 = pass ? 7 : n_r;
                for (int i = 0; i < stride * n_b; i++)
                    out[i] = -12345.0f;
                realm_quant_matmul(ops, W, wrb, n, r0, r1, A, arb, nb_, out, stride);
                int bad = 0, stray = 0;
                for (int b = 0; b < n_b; b++)
                    for (int i = 0; i < stride; i++) {
                        const float v = out[b * stride + i];
                        if (b < nb_ && i >= r0 && i < r1) {
                            if (memcmp(&v, &dots[b][i], 4)) bad++;
                        } else if (v != -12345.0f) {
                            stray++;
                        }
                    }
                CHECKF(!bad && !stray,
                       "%s %s matmul n=%lld n_b=%d rows %d..%d: %d differ, %d stray", tname(t),
                       realm_quant_isa_name(isa), (long long)n, nb_, r0, r1, bad, stray);
            }
        }
        free(out);
        free(W);
        free(A);
        free(wf);
        free(wf2);
        free(af);
        free(xs);
    }
}

/* matmul over more activation rows than one pass of the batched kernel takes (64), and rows
 * that are not a multiple of the tile: still bit-identical to vec_dot. */
static void test_matmul_many_rows(enum realm_isa isa) {
    const uint32_t types[] = {REALM_TYPE_F32,  REALM_TYPE_Q4_0, REALM_TYPE_Q4_1, REALM_TYPE_Q5_0,
                              REALM_TYPE_Q5_1, REALM_TYPE_Q8_0, REALM_TYPE_Q4_K, REALM_TYPE_Q6_K};
    tu_rng r = {0x5151 + (uint64_t)isa};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const struct realm_quant_ops *ops = realm_quant_ops_isa(types[ti], isa);
        const struct realm_quant_ops *aops =
            ops ? realm_quant_ops_isa(ops->vec_dot_type, REALM_ISA_SCALAR) : NULL;
        CHECK(ops && aops);
        if (!ops || !aops) continue;
        const int64_t
            n = 512,
            n_r = 37,
            n_b = 70; /* 37: two full 16-row groups of the batched K kernels plus a remainder */
        const size_t wrb = realm_type_row_size(types[ti], n),
                     arb = realm_type_row_size(ops->vec_dot_type, n);
        unsigned char *W = malloc(wrb * n_r), *A = malloc(arb * n_b);
        float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n_r * n_b);
        for (int i = 0; i < n_r; i++)
            random_weights(types[ti], W + wrb * i, n, &r);
        for (int b = 0; b < n_b; b++) {
            random_acts(x, n, &r, b % 4);
            aops->quantize_row(x, A + arb * b, n);
        }
        realm_quant_matmul(ops, W, wrb, n, 0, n_r, A, arb, n_b, out, n_r);
        const struct realm_quant_ops *ref = realm_quant_ops_isa(types[ti], REALM_ISA_SCALAR);
        int bad = 0, bad_ref = 0;
        for (int b = 0; b < n_b; b++)
            for (int i = 0; i < n_r; i++) {
                float s, s_ref;
                ops->vec_dot(n, &s, W + wrb * i, A + arb * b);
                if (memcmp(&s, &out[b * n_r + i], 4)) bad++;
                ref->vec_dot(n, &s_ref, W + wrb * i, A + arb * b);
                if (exact_ref(types[ti], isa) && memcmp(&s_ref, &out[b * n_r + i], 4)) bad_ref++;
            }
        CHECKF(!bad && !bad_ref,
               "%s %s matmul n_b=%lld: %d results differ from vec_dot, %d from the scalar "
               "reference",
               tname(types[ti]), realm_quant_isa_name(isa), (long long)n_b, bad, bad_ref);
        free(W);
        free(A);
        free(x);
        free(out);
    }
}

/* Prepacked weights (realm_quant_prepack): where the table has a packed layout, matmul over it
 * equals vec_dot on the original rows bit for bit, for any row count (16-row groups with a
 * padded last one), n_b (decode GEMV and batched), and row sub-range; and is within tolerance of
 * the scalar reference (the 32-element formats on AVX-512: equal to it). Elsewhere prepack gives
 * NULL. */
static void test_prepacked(enum realm_isa isa) {
    /* the 32-element formats three times: 1 block, 17 blocks (a slice of 16 and an odd tail),
     * 40 blocks (two slices and a tail) */
    const uint32_t types[] = {REALM_TYPE_Q4_K, REALM_TYPE_Q6_K, REALM_TYPE_Q4_0, REALM_TYPE_Q4_0,
                              REALM_TYPE_Q4_0, REALM_TYPE_Q4_1, REALM_TYPE_Q4_1, REALM_TYPE_Q4_1,
                              REALM_TYPE_Q5_0, REALM_TYPE_Q5_0, REALM_TYPE_Q5_0, REALM_TYPE_Q5_1,
                              REALM_TYPE_Q5_1, REALM_TYPE_Q5_1, REALM_TYPE_Q8_0, REALM_TYPE_Q8_0,
                              REALM_TYPE_Q8_0};
    const int64_t blocks32[] = {1, 17, 40};
    const int64_t rows_list[] = {1, 15, 16, 17, 37};
    const int64_t nbs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 70};
    tu_rng r = {0x9a9a + (uint64_t)isa};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t t = types[ti];
        const struct realm_quant_ops *ops = realm_quant_ops_isa(t, isa);
        const struct realm_quant_ops *ref = realm_quant_ops_isa(t, REALM_ISA_SCALAR);
        const struct realm_quant_ops *aops =
            ops ? realm_quant_ops_isa(ops->vec_dot_type, REALM_ISA_SCALAR) : NULL;
        CHECK(ops && ref && aops);
        if (!ops || !ref || !aops) continue;
        /* K-quants: 5 super-blocks, a 4-block slice and a tail */
        const int64_t n = is_type32(t) ? 32 * blocks32[(ti - 2) % 3] : 5 * 256, max_b = 70;
        const size_t wrb = realm_type_row_size(t, n),
                     arb = realm_type_row_size(ops->vec_dot_type, n);
        unsigned char *W = malloc(wrb * 37), *A = malloc(arb * max_b);
        float *x = malloc(sizeof(float) * n), *af = malloc(sizeof(float) * n * max_b),
              *wf = malloc(sizeof(float) * n);
        const int64_t stride = 37 + 5;
        float *out = malloc(sizeof(float) * stride * max_b);
        for (int i = 0; i < 37; i++)
            random_weights(t, W + wrb * i, n, &r);
        for (int b = 0; b < max_b; b++) {
            random_acts(x, n, &r, b % 4);
            aops->quantize_row(x, A + arb * b, n);
            aops->dequantize_row(A + arb * b, af + (size_t)n * b, n);
        }
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++) {
            const int64_t rows = rows_list[ri];
            void *P = (void *)1;
            CHECK_EQ_INT(realm_quant_prepack(ops, W, wrb, rows, n, &P), REALM_OK);
            if (!ops->matmul_packed) {
                CHECKF(P == NULL, "%s %s: packed copy without a packed kernel", tname(t),
                       realm_quant_isa_name(isa));
                realm_quant_packed_free(P);
                continue;
            }
            CHECK(P != NULL);
            if (!P) continue;
            CHECK(((uintptr_t)P & 63) == 0);
            for (size_t bi = 0; bi < sizeof nbs / sizeof nbs[0]; bi++) {
                const int64_t nb_ = nbs[bi];
                for (int pass = 0; pass < 2; pass++) {
                    const int64_t r0 = pass && rows > 4 ? 3 : 0,
                                  r1 = pass && rows > 4 ? rows - 1 : rows;
                    for (int64_t i = 0; i < stride * max_b; i++)
                        out[i] = -12345.0f;
                    realm_quant_matmul_packed(ops, P, n, r0, r1, A, arb, nb_, out + r0, stride);
                    int bad = 0, stray = 0, far = 0;
                    for (int64_t b = 0; b < max_b; b++)
                        for (int64_t i = 0; i < stride; i++) {
                            const float v = out[b * stride + i];
                            if (b < nb_ && i >= r0 && i < r1) {
                                float s, s_ref;
                                ops->vec_dot(n, &s, W + wrb * i, A + arb * b);
                                if (memcmp(&v, &s, 4)) bad++;
                                if (exact_ref(t, isa)) {
                                    ref->vec_dot(n, &s_ref, W + wrb * i, A + arb * b);
                                    if (memcmp(&v, &s_ref, 4)) far++;
                                } else if (pass == 0 && nb_ == max_b) {
                                    ref->vec_dot(n, &s_ref, W + wrb * i, A + arb * b);
                                    ref->dequantize_row(W + wrb * i, wf, n);
                                    const double tol =
                                        DOT_RTOL * sum_abs_products(wf, af + (size_t)n * b, n) +
                                        1e-30;
                                    if (fabs((double)v - (double)s_ref) > tol) far++;
                                }
                            } else if (v != -12345.0f) {
                                stray++;
                            }
                        }
                    CHECKF(!bad && !stray && !far,
                           "%s %s packed matmul rows=%lld n_b=%lld r %lld..%lld: %d differ from "
                           "vec_dot, %d stray, %d off the scalar reference",
                           tname(t), realm_quant_isa_name(isa), (long long)rows, (long long)nb_,
                           (long long)r0, (long long)r1, bad, stray, far);
                }
            }
            realm_quant_packed_free(P);
        }
        free(W);
        free(A);
        free(x);
        free(af);
        free(wf);
        free(out);
    }
    /* bad arguments */
    void *P = (void *)1;
    const struct realm_quant_ops *q4k = realm_quant_ops_isa(REALM_TYPE_Q4_K, isa);
    if (q4k && q4k->matmul_packed) {
        CHECK_EQ_INT(realm_quant_prepack(q4k, "", 144, 4, 100, &P), REALM_E_INVALID);
        CHECK(P == NULL);
    }
}

/* ---- fixtures from llama.cpp (scripts/gen_quant_fixtures.py) ----
 * File: "RQF1", u32 kind, u32 type, u32 n_rows, u32 n_per_row, u32 aux, then
 *   kind 1 (dequantize): rows of `type` blocks, then n_rows*n_per_row f32 (llama.cpp's values)
 *   kind 2 (quantize activations): n_rows*n_per_row f32 inputs, then rows of `type` blocks
 *   kind 3 (dot): aux = activation type; weight rows, activation rows, n_rows f32 dots
 */
static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void check_fixture(const char *path, const unsigned char *d, size_t size) {
    if (size < 24 || memcmp(d, "RQF1", 4)) {
        CHECKF(0, "%s: not a fixture", path);
        return;
    }
    const uint32_t kind = rd32(d + 4), t = rd32(d + 8), n_rows = rd32(d + 12), n = rd32(d + 16),
                   aux = rd32(d + 20);
    const size_t rb = realm_type_row_size(t, n);
    const unsigned char *p = d + 24;
    CHECKF(rb > 0, "%s: type %u n %u", path, t, n);
    if (!rb) return;
    for (int isa = 0; isa < REALM_ISA_COUNT; isa++) {
        if (!realm_quant_isa_supported((enum realm_isa)isa)) continue;
        const struct realm_quant_ops *ops = realm_quant_ops_isa(t, (enum realm_isa)isa);
        CHECKF(ops, "%s: type %s unsupported", path, tname(t));
        if (!ops) return;
        if (kind == 1) {
            CHECKF(size == 24 + n_rows * (rb + 4 * (size_t)n), "%s: size", path);
            if (size != 24 + n_rows * (rb + 4 * (size_t)n)) return;
            const float *want = (const float *)(p + n_rows * rb);
            float *got = malloc(4 * (size_t)n);
            for (uint32_t i = 0; i < n_rows; i++) {
                ops->dequantize_row(p + i * rb, got, n);
                int bad = 0;
                for (uint32_t j = 0; j < n; j++)
                    if (memcmp(&got[j], &want[(size_t)i * n + j], 4)) bad++;
                CHECKF(!bad, "%s [%s] row %u: %d values differ from llama.cpp", path,
                       realm_quant_isa_name((enum realm_isa)isa), i, bad);
            }
            free(got);
        } else if (kind == 2) {
            CHECKF(size == 24 + n_rows * (rb + 4 * (size_t)n), "%s: size", path);
            if (size != 24 + n_rows * (rb + 4 * (size_t)n)) return;
            const float *in = (const float *)p;
            const unsigned char *want = p + 4 * (size_t)n * n_rows;
            unsigned char *got = malloc(rb);
            for (uint32_t i = 0; i < n_rows; i++) {
                ops->quantize_row(in + (size_t)i * n, got, n);
                CHECKF(!memcmp(got, want + i * rb, rb), "%s [%s] row %u: quantized bytes differ",
                       path, realm_quant_isa_name((enum realm_isa)isa), i);
            }
            free(got);
        } else if (kind == 3) {
            const size_t arb = realm_type_row_size(aux, n);
            CHECKF(ops->vec_dot_type == aux, "%s: activation type %u, kernels use %u", path, aux,
                   ops->vec_dot_type);
            CHECKF(size == 24 + n_rows * (rb + arb + 4), "%s: size", path);
            if (ops->vec_dot_type != aux || size != 24 + n_rows * (rb + arb + 4)) return;
            const unsigned char *act = p + n_rows * rb;
            const float *want = (const float *)(act + n_rows * arb);
            float *wf = malloc(4 * (size_t)n), *af = malloc(4 * (size_t)n);
            const struct realm_quant_ops *aops = realm_quant_ops_isa(aux, REALM_ISA_SCALAR);
            for (uint32_t i = 0; i < n_rows; i++) {
                float s = NAN;
                ops->vec_dot(n, &s, p + i * rb, act + i * arb);
                ops->dequantize_row(p + i * rb, wf, n);
                aops->dequantize_row(act + i * arb, af, n);
                const double tol = DOT_RTOL * sum_abs_products(wf, af, n) + 1e-30;
                CHECKF(fabs((double)s - want[i]) <= tol, "%s [%s] row %u: dot %.9g, llama.cpp %.9g",
                       path, realm_quant_isa_name((enum realm_isa)isa), i, s, want[i]);
            }
            free(wf);
            free(af);
        } else {
            CHECKF(0, "%s: kind %u", path, kind);
            return;
        }
    }
}

static void test_fixtures(void) {
    const char *src = getenv("REALM_SRC");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/quant_fixtures", src ? src : ".");
    DIR *dp = opendir(dir);
    CHECKF(dp != NULL, "no fixture directory %s", dir);
    if (!dp) return;
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        const size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".bin")) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t size = 0;
        unsigned char *d = tu_read_file(path, &size);
        CHECKF(d != NULL, "cannot read %s", path);
        if (!d) continue;
        check_fixture(e->d_name, d, size);
        free(d);
        n_files++;
    }
    closedir(dp);
    tu_log("%d fixture files", n_files);
    CHECKF(n_files >= 1, "no fixtures in %s", dir);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    realm_quant_init();
    tu_log("dispatched ISA: %s", realm_quant_isa_name(realm_quant_isa()));
    CHECK(realm_quant_isa_supported(REALM_ISA_SCALAR));
    CHECK(realm_quant_ops(REALM_TYPE_IQ2_XXS) == NULL);
    CHECK(realm_quant_ops(12345) == NULL);
    CHECK(realm_quant_ops(REALM_TYPE_Q8_K) && realm_quant_ops(REALM_TYPE_Q8_K)->vec_dot == NULL);

    test_f16();
    for (int isa = 0; isa < REALM_ISA_COUNT; isa++) {
        if (!realm_quant_isa_supported((enum realm_isa)isa)) {
            fprintf(stderr, "test_quant: %s not supported here, its variants are not tested\n",
                    realm_quant_isa_name((enum realm_isa)isa));
            CHECK(realm_quant_ops_isa(REALM_TYPE_F32, (enum realm_isa)isa) == NULL);
            continue;
        }
        tu_log("ISA %s", realm_quant_isa_name((enum realm_isa)isa));
        test_act_quant((enum realm_isa)isa);
        for (size_t i = 0; i < N_WEIGHT_TYPES; i++)
            test_weight_type(k_weight_types[i], (enum realm_isa)isa);
        test_matmul_many_rows((enum realm_isa)isa);
        test_prepacked((enum realm_isa)isa);
    }
    test_fixtures();
    return tu_finish("test_quant");
}
