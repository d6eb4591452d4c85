/*
 * bench_quant.c — single-thread microbenchmark of realm_quant_matmul: weight bytes streamed per
 * second with one activation row (the decode case, memory-bound) and integer/float operations
 * per second with n_b activation rows (the batched case, compute-bound), per type and ISA; also
 * the same n_b computed as n_b separate vec_dot passes, to show what the tiles save.
 *
 * Not built by CMake (it is no test); build against a realm_core build directory:
 *   cc -O2 -std=c11 -Iinclude bench/bench_quant.c BUILD/librealm_core.a -lm -lpthread -o
 * /tmp/bench_quant /tmp/bench_quant [-mb MB] [-nb N] [-isa scalar|avx2|avx512] [type ...]   (types:
 * q4_K q4_1 ...) Uses realm_malloc-free plain malloc: it is a tool, not library code.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "realm/quant.h"
#include "realm/types.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Byte offsets of the half scale fields of a block (d, then min), as in tests/test_quant.c. */
static void half_fields(uint32_t t, int *d, int *m) {
    *d = *m = -1;
    switch (t) {
    case REALM_TYPE_Q4_0:
    case REALM_TYPE_Q5_0:
    case REALM_TYPE_Q8_0:
        *d = 0;
        break;
    case REALM_TYPE_Q4_1:
    case REALM_TYPE_Q5_1:
    case REALM_TYPE_Q4_K:
    case REALM_TYPE_Q5_K:
        *d = 0;
        *m = 2;
        break;
    case REALM_TYPE_Q2_K:
        *d = 80;
        *m = 82;
        break;
    case REALM_TYPE_Q3_K:
        *d = 108;
        break;
    case REALM_TYPE_Q6_K:
        *d = 208;
        break;
    default:
        break;
    }
}

static void fill_weights(uint32_t t, unsigned char *p, size_t bytes, int64_t n_elems) {
    if (t == REALM_TYPE_F32) {
        float *f = (float *)p;
        for (int64_t i = 0; i < n_elems; i++)
            f[i] = (float)(int64_t)(next() % 2001 - 1000) * 1e-3f;
        return;
    }
    if (t == REALM_TYPE_F16 || t == REALM_TYPE_BF16) {
        uint16_t *h = (uint16_t *)p;
        for (int64_t i = 0; i < n_elems; i++) {
            const float v = (float)(int64_t)(next() % 2001 - 1000) * 1e-3f;
            uint32_t u;
            memcpy(&u, &v, 4);
            h[i] = t == REALM_TYPE_F16 ? realm_f32_to_f16(v) : (uint16_t)(u >> 16);
        }
        return;
    }
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        const uint64_t v = next();
        memcpy(p + i, &v, 8);
    }
    const struct realm_type_info *ti = realm_type_get(t);
    int d, m;
    half_fields(t, &d, &m);
    const uint16_t hd = realm_f32_to_f16(0.001f), hm = realm_f32_to_f16(0.0005f);
    for (size_t b = 0; b < bytes / ti->type_size; b++) {
        if (d >= 0) memcpy(p + b * ti->type_size + d, &hd, 2);
        if (m >= 0) memcpy(p + b * ti->type_size + m, &hm, 2);
    }
}

static void bench_type(uint32_t t, enum realm_isa isa, size_t mb, int n_b) {
    const struct realm_quant_ops *ops = realm_quant_ops_isa(t, isa);
    if (!ops) {
        printf("%-6s %-7s: not available\n", realm_type_get(t)->name, realm_quant_isa_name(isa));
        return;
    }
    const struct realm_quant_ops *aops = realm_quant_ops_isa(ops->vec_dot_type, isa);
    const int64_t k = 4096;
    const size_t wrb = realm_type_row_size(t, k), arb = realm_type_row_size(ops->vec_dot_type, k);
    const int64_t rows = (int64_t)(mb * 1024 * 1024 / wrb);
    unsigned char *W = malloc(wrb * (size_t)rows), *A = malloc(arb * (size_t)n_b);
    float *x = malloc(sizeof(float) * (size_t)k), *out = malloc(sizeof(float) * (size_t)rows * n_b);
    fill_weights(t, W, wrb * (size_t)rows, k * rows);
    for (int b = 0; b < n_b; b++) {
        for (int64_t i = 0; i < k; i++)
            x[i] = (float)(int64_t)(next() % 2001 - 1000) * 1e-3f;
        aops->quantize_row(x, A + arb * b, k);
    }
    /* n_b = 1: weight bytes per second (best of 5 passes over a matrix larger than the caches) */
    double best1 = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        const double t0 = now();
        realm_quant_matmul(ops, W, wrb, k, 0, rows, A, arb, 1, out, rows);
        const double dt = now() - t0;
        if (dt < best1) best1 = dt;
    }
    /* n_b rows: tiled matmul vs n_b separate passes of vec_dot (the weights re-read n_b times) */
    double bestb = 1e9, bestv = 1e9;
    const int64_t rows_b = rows / 4 > 0 ? rows / 4 : rows; /* keep it short: a quarter */
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        realm_quant_matmul(ops, W, wrb, k, 0, rows_b, A, arb, n_b, out, rows_b);
        double dt = now() - t0;
        if (dt < bestb) bestb = dt;
        t0 = now();
        for (int b = 0; b < n_b; b++)
            for (int64_t r = 0; r < rows_b; r++)
                ops->vec_dot(k, &out[r], W + wrb * (size_t)r, A + arb * b);
        dt = now() - t0;
        if (dt < bestv) bestv = dt;
    }
    const double ops_b = 2.0 * (double)k * (double)rows_b * n_b;
    printf("%-6s %-7s n_b=1: %6.2f GB/s (%5.1f GMAC/s)   n_b=%d: %6.1f GOPS tiled, %6.1f GOPS as "
           "vec_dots (x%.2f)\n",
           realm_type_get(t)->name, realm_quant_isa_name(isa), (double)wrb * rows / best1 * 1e-9,
           (double)k * rows / best1 * 1e-9, n_b, ops_b / bestb * 1e-9, ops_b / bestv * 1e-9,
           bestv / bestb);
    free(W);
    free(A);
    free(x);
    free(out);
}

int main(int argc, char **argv) {
    size_t mb = 256;
    int n_b = 16;
    int isa = -1;
    uint32_t types[64];
    int n_types = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-mb") && i + 1 < argc) {
            mb = (size_t)atol(argv[++i]);
        } else if (!strcmp(argv[i], "-nb") && i + 1 < argc) {
            n_b = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-isa") && i + 1 < argc) {
            ++i;
            for (int j = 0; j < REALM_ISA_COUNT; j++)
                if (!strcmp(argv[i], realm_quant_isa_name((enum realm_isa)j))) isa = j;
        } else {
            for (uint32_t t = 0; t < REALM_TYPE_COUNT; t++) {
                const struct realm_type_info *ti = realm_type_get(t);
                if (ti && !strcmp(ti->name, argv[i]) && n_types < 64) types[n_types++] = t;
            }
        }
    }
    if (!n_types) {
        const uint32_t def[] = {REALM_TYPE_Q4_K, REALM_TYPE_Q4_1, REALM_TYPE_Q8_0,
                                REALM_TYPE_Q6_K, REALM_TYPE_Q5_0, REALM_TYPE_F16};
        memcpy(types, def, sizeof def);
        n_types = (int)(sizeof def / sizeof def[0]);
    }
    for (int i = 0; i < n_types; i++)
        for (int j = 0; j < REALM_ISA_COUNT; j++) {
            if ((isa >= 0 && j != isa) || !realm_quant_isa_supported((enum realm_isa)j)) continue;
            if (isa < 0 && j == REALM_ISA_SCALAR) continue; /* scalar only on request: slow */
            bench_type(types[i], (enum realm_isa)j, mb, n_b);
        }
    return 0;
}
