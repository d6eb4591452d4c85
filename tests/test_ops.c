/*
 * test_ops.c — the forward pass's attention and activation kernels (src/model/ops*.c) without a
 * model: every SIMD variant against the scalar one, bit-exactness of row groupings that makes
 * batching invisible, and the activations against libm. A unit test, so it also runs under
 * ASan/UBSan, and nothing about missing models can turn its failures into a skip.
 */
#include <math.h>

#include "model/model.h" /* internal: the attention kernels */
#include "realm/quant.h"
#include "realm/types.h"
#include "testutil.h"

/* dot_many and wsum_rows: the SIMD variant agrees with the scalar one, and a dot gives the same
 * bits whichever group of rows it is computed in (single row, a group of 8, a remainder) — the
 * property that makes a row's attention independent of batching. */
static void test_kernels(void) {
    const struct model_kernels *ks[2] = {model_kernels_scalar(), model_kernels_avx2()};
    if (realm_quant_isa() == REALM_ISA_SCALAR) ks[1] = NULL;
    tu_rng rng = {99};
    enum { NR = 21, MAXN = 264 };
    static float x[MAXN], rf[NR * (MAXN + 3)], out[NR], one[1], o1[MAXN], o2[MAXN], p[NR];
    static uint16_t rh[NR * (MAXN + 3)];
    const int64_t ns[] = {8, 13, 64, 256, 264};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        const int64_t n = ns[t], stride = n + 3;
        for (int64_t i = 0; i < n; i++)
            x[i] = tu_rand_float(&rng);
        for (int64_t i = 0; i < NR * stride; i++) {
            rf[i] = tu_rand_float(&rng);
            rh[i] = realm_f32_to_f16(rf[i]);
        }
        for (int j = 0; j < NR; j++)
            p[j] = tu_rand_float(&rng);
        for (int k = 0; k < 2; k++) {
            const struct model_kernels *K = ks[k];
            if (!K) continue;
            for (int f16 = 0; f16 < 2; f16++) {
                const void *rows = f16 ? (const void *)rh : (const void *)rf;
                K->dot_many(x, rows, stride, f16, NR, n, out);
                for (int j = 0; j < NR; j++) {
                    double ref = 0;
                    for (int64_t i = 0; i < n; i++)
                        ref += (double)x[i] *
                               (f16 ? realm_f16_to_f32(rh[j * stride + i]) : rf[j * stride + i]);
                    CHECKF(fabs(out[j] - ref) <= 1e-5 * (1 + fabs(ref)),
                           "%s dot n=%lld row %d: %g vs %g", K->name, (long long)n, j, out[j], ref);
                    /* the same dot alone, and at another offset within a group */
                    K->dot_many(x, (const char *)rows + (size_t)j * stride * (f16 ? 2 : 4), stride,
                                f16, 1, n, one);
                    CHECKF(memcmp(&one[0], &out[j], sizeof(float)) == 0,
                           "%s dot n=%lld row %d: grouping", K->name, (long long)n, j);
                }
                K->wsum_rows(o1, p, rows, stride, f16, NR, n, false);
                for (int64_t i = 0; i < n; i++) {
                    double ref = 0;
                    for (int j = 0; j < NR; j++)
                        ref += (double)p[j] *
                               (f16 ? realm_f16_to_f32(rh[j * stride + i]) : rf[j * stride + i]);
                    CHECKF(fabs(o1[i] - ref) <= 1e-5 * (1 + fabs(ref)), "%s wsum n=%lld col %lld",
                           K->name, (long long)n, (long long)i);
                }
                /* the rows summed in runs (acc) give the bits of one call: paged KV blocks */
                const size_t elt = f16 ? 2 : 4;
                K->wsum_rows(o2, p, rows, stride, f16, 7, n, false);
                K->wsum_rows(o2, p + 7, (const char *)rows + 7 * (size_t)stride * elt, stride, f16,
                             1, n, true);
                K->wsum_rows(o2, p + 8, (const char *)rows + 8 * (size_t)stride * elt, stride, f16,
                             NR - 8, n, true);
                CHECKF(memcmp(o1, o2, sizeof(float) * (size_t)n) == 0,
                       "%s wsum n=%lld: runs differ from one call", K->name, (long long)n);
            }
        }
    }
    /* exp_sum, round_f16, silu/gelu against libm */
    for (int k = 0; k < 2; k++) {
        const struct model_kernels *K = ks[k];
        if (!K) continue;
        float v[37], g[37], u[37];
        double ref = 0;
        for (int i = 0; i < 37; i++) {
            v[i] = 20 * tu_rand_float(&rng);
            ref += exp((double)v[i] - 20.0);
        }
        double sum = K->exp_sum(v, 37, 20.0f);
        CHECKF(fabs(sum - ref) <= 1e-5 * ref, "%s exp_sum %g vs %g", K->name, sum, ref);
        for (int i = 0; i < 37; i++) {
            g[i] = 8 * tu_rand_float(&rng);
            u[i] = tu_rand_float(&rng);
            v[i] = g[i];
        }
        K->silu_mul(g, u, 37);
        for (int i = 0; i < 37; i++) {
            double r = v[i] / (1 + exp(-(double)v[i])) * u[i];
            CHECKF(fabs(g[i] - r) <= 1e-6 * (1 + fabs(r)), "%s silu %g: %g vs %g", K->name, v[i],
                   g[i], r);
            g[i] = v[i];
        }
        K->gelu_mul(g, u, 37);
        for (int i = 0; i < 37; i++) {
            double xx = v[i], r = 0.5 * xx *
                                  (1 + tanh(0.7978845608028654 * (xx + 0.044715 * xx * xx * xx))) *
                                  u[i];
            CHECKF(fabs(g[i] - r) <= 1e-6 * (1 + fabs(r)), "%s gelu %g: %g vs %g", K->name, v[i],
                   g[i], r);
        }
        for (int i = 0; i < 37; i++)
            v[i] = tu_rand_float(&rng), g[i] = v[i];
        K->round_f16(v, 37);
        for (int i = 0; i < 37; i++)
            CHECK(v[i] == realm_f16_to_f32(realm_f32_to_f16(g[i])));
    }
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    test_kernels();
    return tu_finish("test_ops");
}
