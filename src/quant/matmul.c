/*
 * matmul.c — realm_quant_matmul, the batched entry point every projection goes through, and the
 * generic batched kernel used for types without a tiled SIMD kernel (a loop of vec_dot that keeps
 * one weight row in L1 while it meets every activation row); and the prepacked weights
 * (realm_quant_prepack / realm_quant_matmul_packed): the portable packing of q4_K / q6_K rows
 * into the 16-row layout of quant.h, whose kernels are in the ISA tables (matmul_packed).
 *
 * Thread rule: pure functions; callers split [r0, r1) between threads.
 */
#include <assert.h>
#include <stddef.h>

#include "realm/alloc.h"
#include "realm/status.h"

#include "quant/quant.h"

/* The public wrappers have the table entries' types (a compile error otherwise). */
realm_quant_matmul_fn realm_quant_matmul;
realm_quant_matmul_packed_fn realm_quant_matmul_packed;

void quant_matmul_generic(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes,
                          int64_t k, int64_t r0, int64_t r1, const void *act, size_t act_row_bytes,
                          int64_t n_b, float *out, int64_t out_stride) {
    const char *w = W;
    const char *a = act;
    for (int64_t r = r0; r < r1; r++) {
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
    ops->matmul(ops, W, w_row_bytes, k, r0, r1, act, act_row_bytes, n_b, out, out_stride);
}

/* ---- prepacked weights (layout: quant.h, struct quant_pack_q4_K / quant_pack_q6_K) ---- */

size_t quant_packed_size(uint32_t type, int64_t rows, int64_t k) {
    const size_t per = type == REALM_TYPE_Q4_K   ? sizeof(struct quant_pack_q4_K)
                       : type == REALM_TYPE_Q6_K ? sizeof(struct quant_pack_q6_K)
                                                 : 0;
    const int64_t groups = (rows + QUANT_PACK_ROWS - 1) / QUANT_PACK_ROWS;
    return per * (size_t)groups * (size_t)(k / QK_K);
}

/* dst[c][r] = dword c of src row r (16 rows of n dwords, rows >= nr are zero) */
static void pack_dwords(const char *src, size_t rs, int nr, int n, uint32_t (*dst)[16]) {
    for (int r = 0; r < QUANT_PACK_ROWS; r++)
        for (int c = 0; c < n; c++) {
            uint32_t v = 0;
            if (r < nr) memcpy(&v, src + (size_t)r * rs + 4 * (size_t)c, 4);
            dst[c][r] = v;
        }
}

void quant_pack(uint32_t type, const void *W, size_t w_row_bytes, int64_t rows, int64_t k,
                void *P) {
    const int64_t nb = k / QK_K;
    const char *w = W;
    for (int64_t g = 0; g * QUANT_PACK_ROWS < rows; g++) {
        const int64_t g0 = g * QUANT_PACK_ROWS;
        const int nr = rows - g0 < QUANT_PACK_ROWS ? (int)(rows - g0) : QUANT_PACK_ROWS;
        for (int64_t i = 0; i < nb; i++) {
            if (type == REALM_TYPE_Q4_K) {
                struct quant_pack_q4_K *p = (struct quant_pack_q4_K *)P + g * nb + i;
                const char *b = w + (size_t)g0 * w_row_bytes + (size_t)i * sizeof(block_q4_K);
                pack_dwords(b, w_row_bytes, nr, 1, &p->dm);
                pack_dwords(b + offsetof(block_q4_K, scales), w_row_bytes, nr, 3, p->sc);
                pack_dwords(b + offsetof(block_q4_K, qs), w_row_bytes, nr, 32, p->qs);
            } else {
                struct quant_pack_q6_K *p = (struct quant_pack_q6_K *)P + g * nb + i;
                const char *b = w + (size_t)g0 * w_row_bytes + (size_t)i * sizeof(block_q6_K);
                pack_dwords(b + offsetof(block_q6_K, ql), w_row_bytes, nr, 32, p->ql);
                pack_dwords(b + offsetof(block_q6_K, qh), w_row_bytes, nr, 16, p->qh);
                pack_dwords(b + offsetof(block_q6_K, scales), w_row_bytes, nr, 4, p->sc);
                for (int r = 0; r < QUANT_PACK_ROWS; r++) {
                    uint16_t d = 0;
                    if (r < nr)
                        memcpy(&d, b + (size_t)r * w_row_bytes + offsetof(block_q6_K, d), 2);
                    p->d[r] = d;
                }
            }
        }
    }
}

int realm_quant_prepack(const struct realm_quant_ops *ops, const void *W, size_t w_row_bytes,
                        int64_t rows, int64_t k, void **out) {
    *out = NULL;
    if (!ops) return REALM_E_INVALID;
    if (!ops->matmul_packed) return REALM_OK; /* no packed layout in this table */
    if (rows <= 0 || k <= 0 || k % QK_K || realm_type_row_size(ops->type, k) > w_row_bytes || !W)
        return REALM_E_INVALID;
    const size_t bytes = quant_packed_size(ops->type, rows, k);
    if (bytes == 0) return REALM_E_INVALID;
    void *P = realm_malloc_aligned(64, bytes);
    if (!P) return REALM_E_NOMEM;
    quant_pack(ops->type, W, w_row_bytes, rows, k, P);
    *out = P;
    return REALM_OK;
}

void realm_quant_packed_free(void *P) {
    realm_free_aligned(P);
}

void realm_quant_matmul_packed(const struct realm_quant_ops *ops, const void *P, int64_t k,
                               int64_t r0, int64_t r1, const void *act, size_t act_row_bytes,
                               int64_t n_b, float *out, int64_t out_stride) {
    assert(ops && ops->matmul_packed && P);
    assert(r0 >= 0 && r1 >= r0 && n_b >= 0);
    if (r1 == r0 || n_b == 0) return;
    ops->matmul_packed(ops, P, k, r0, r1, act, act_row_bytes, n_b, out, out_stride);
}
