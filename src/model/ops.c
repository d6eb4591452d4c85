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
    for (; i < n; i++) s0 += (double)(x[i] * x[i]);
    const float mean = (float)((s0 + s1 + s2 + s3) / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w)
        for (i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
    else
        for (i = 0; i < n; i++) out[i] = x[i] * scale;
}

static float dot_f16_scalar(const float *x, const uint16_t *y, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * realm_f16_to_f32(y[i]);
    return s;
}

static void axpy_f16_scalar(float *y, float a, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * realm_f16_to_f32(x[i]);
}

static void to_f16_scalar(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = realm_f32_to_f16(x[i]);
}

static void silu_mul_scalar(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
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
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

static float exp_sum_scalar(float *s, int64_t n, float mx) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    return sum;
}

static float dot_f32_scalar(const float *x, const float *y, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

static void axpy_f32_scalar(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static const struct model_kernels g_scalar = {
    .name = "scalar",
    .dot_f16 = dot_f16_scalar,
    .axpy_f16 = axpy_f16_scalar,
    .to_f16 = to_f16_scalar,
    .silu_mul = silu_mul_scalar,
    .gelu_mul = gelu_mul_scalar,
    .scale = scale_scalar,
    .exp_sum = exp_sum_scalar,
    .dot_f32 = dot_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
};

const struct model_kernels *model_kernels_scalar(void) { return &g_scalar; }

const struct model_kernels *model_kernels_get(void) {
    realm_quant_init();
    if (realm_quant_isa() != REALM_ISA_SCALAR) {
        const struct model_kernels *k = model_kernels_avx2();
        if (k) return k;
    }
    return &g_scalar;
}
