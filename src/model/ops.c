/*
 * ops.c — the small kernels of the forward pass besides the projections: RMSNorm, f16 KV dot and
 * axpy, activation functions. Scalar reference versions here; ops_avx2.c has AVX2+F16C+FMA
 * versions of the hot ones. model_kernels_get() picks the table matching the ISA chosen by the
 * quant module (so REALM_ISA=scalar forces scalar everywhere). No state.
 */
#include <math.h>

#include "model/model.h"

void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    /* ggml_compute_forward_rms_norm: sum of squares in double, scale = 1/sqrtf(mean + eps) */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)(x[i] * x[i]);
        s1 += (double)(x[i + 1] * x[i + 1]);
        s2 += (double)(x[i + 2] * x[i + 2]);
        s3 += (double)(x[i + 3] * x[i + 3]);
    }
    for (; i < n; i++)
        s0 += (double)(x[i] * x[i]);
    const float mean = (float)((s0 + s1 + s2 + s3) / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w)
        for (i = 0; i < n; i++)
            out[i] = (x[i] * scale) * w[i];
    else
        for (i = 0; i < n; i++)
            out[i] = x[i] * scale;
}

static inline float row_elt(const void *rows, int64_t i, bool f16) {
    return f16 ? realm_f16_to_f32(((const uint16_t *)rows)[i]) : ((const float *)rows)[i];
}

static void dot_many_scalar(const float *x, const void *rows, int64_t stride, bool f16, int ny,
                            int64_t n, float *out) {
    for (int j = 0; j < ny; j++) {
        const int64_t off = (int64_t)j * stride;
        float s = 0;
        for (int64_t i = 0; i < n; i++)
            s += x[i] * row_elt(rows, off + i, f16);
        out[j] = s;
    }
}

static void wsum_rows_scalar(float *o, const float *p, const void *rows, int64_t stride, bool f16,
                             int ny, int64_t n, bool acc) {
    for (int64_t i = 0; acc == false && i < n; i++)
        o[i] = 0;
    for (int j = 0; j < ny; j++)
        for (int64_t i = 0; i < n; i++)
            o[i] += p[j] * row_elt(rows, (int64_t)j * stride + i, f16);
}

static void f16_to_f32_scalar(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = realm_f16_to_f32(x[i]);
}

static void to_f16_scalar(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = realm_f32_to_f16(x[i]);
}

static void silu_mul_scalar(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* GELU, tanh approximation (gemma's gelu_pytorch_tanh; ggml_gelu_f32). */
static void gelu_mul_scalar(float *g, const float *u, int64_t n) {
    const float c = 0.79788456080286535588f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        g[i] = 0.5f * x * (1.0f + tanhf(c * x * (1.0f + 0.044715f * x * x))) * u[i];
    }
}

static void scale_scalar(float *y, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] *= s;
}

static double exp_sum_scalar(float *s, int64_t n, float mx) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += (double)s[i];
    }
    return sum;
}

static void round_f16_scalar(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = realm_f16_to_f32(realm_f32_to_f16(x[i]));
}

static const struct model_kernels g_scalar = {
    .name = "scalar",
    .dot_many = dot_many_scalar,
    .wsum_rows = wsum_rows_scalar,
    .to_f16 = to_f16_scalar,
    .f16_to_f32 = f16_to_f32_scalar,
    .silu_mul = silu_mul_scalar,
    .gelu_mul = gelu_mul_scalar,
    .scale = scale_scalar,
    .exp_sum = exp_sum_scalar,
    .round_f16 = round_f16_scalar,
};

const struct model_kernels *model_kernels_scalar(void) {
    return &g_scalar;
}

const struct model_kernels *model_kernels_get(void) {
    realm_quant_init();
    if (realm_quant_isa() != REALM_ISA_SCALAR) {
        const struct model_kernels *k = model_kernels_avx2();
        if (k) return k;
    }
    return &g_scalar;
}
