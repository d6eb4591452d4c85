/*
 * matmul.c — realm_quant_matmul, the batched entry point every projection goes through, and the
 * generic batched kernel used for types without a tiled SIMD kernel (a loop of vec_dot that keeps
 * one weight row in L1 while it meets every activation row).
 *
 * Thread rule: pure functions; callers split [r0, r1) between threads.
 */
#include <assert.h>

#include "quant/quant.h"

void quant_matmul_generic(const struct realm_quant_ops *ops, int64_t k, const void *W,
                          size_t w_row_bytes, int64_t n_r, const void *act, size_t act_row_bytes,
                          int64_t n_b, float *out, int64_t out_stride) {
    const char *w = W;
    const char *a = act;
    for (int64_t r = 0; r < n_r; r++) {
        const void *wr = w + (size_t)r * w_row_bytes;
        for (int64_t b = 0; b < n_b; b++)
            ops->vec_dot(k, &out[b * out_stride + r], wr, a + (size_t)b * act_row_bytes);
    }
}

void realm_quant_matmul(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes,
                        int64_t k, int64_t r0, int64_t r1, const void *act, size_t act_row_bytes,
                        int64_t n_b, float *out, int64_t out_stride) {
    assert(ops && ops->vec_dot && ops->matmul);
    assert(r0 >= 0 && r1 >= r0 && n_b >= 0);
    assert(realm_type_row_size(ops->type, k) <= w_row_bytes || k == 0);
    if (r1 == r0 || n_b == 0) return;
    ops->matmul(ops, k, (const char *)W + (size_t)r0 * w_row_bytes, w_row_bytes, r1 - r0, act,
                act_row_bytes, n_b, out + r0, out_stride);
}
