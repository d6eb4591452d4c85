/*
 * matmul.c — realm_quant_matmul, the batched entry point every projection goes through, and the
 * generic batched kernel used for types without a tiled SIMD kernel (a loop of vec_dot that keeps
 * one weight row in L1 while it meets every activation row); and the prepacked weights
 * (realm_quant_prepack / realm_quant_matmul_packed): the portable packing of q4_K / q6_K rows
 * and of the 32-element formats into the 16-row layouts of quant.h, whose kernels are in the ISA
 * tables (matmul_packed).
 *
 * Thread rule: pure functions; callers split [r0, r1) between threads.
 */
#include <assert.h>
#include <stddef.h>
#include <string.h>

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

static int is_type32(uint32_t type) {
    return type == REALM_TYPE_Q4_0 || type == REALM_TYPE_Q4_1 || type == REALM_TYPE_Q5_0 ||
           type == REALM_TYPE_Q5_1 || type == REALM_TYPE_Q8_0;
}

void quant_pack32_geom(uint32_t type, int64_t nb, struct quant_pack32_geom *g) {
    const size_t n = (size_t)nb;
    g->nq = type == REALM_TYPE_Q8_0 ? 8 : 4;
    g->has_qh = type == REALM_TYPE_Q5_0 || type == REALM_TYPE_Q5_1;
    g->has_m = type == REALM_TYPE_Q4_1 || type == REALM_TYPE_Q5_1;
    g->qs = 0;
    size_t o = n * (size_t)g->nq * 64;
    g->qh = g->has_qh ? o : 0;
    o += g->has_qh ? n * 64 : 0;
    g->d = o;
    o += n * 32;
    g->m = g->has_m ? o : 0;
    o += g->has_m ? n * 32 : 0;
    g->group = (o + 63) & ~(size_t)63;
}

/* byte offsets of d, m (or -1), qh (or -1), qs within a block */
static void block32_fields(uint32_t type, int *m, int *qh, int *qs) {
    switch (type) {
    case REALM_TYPE_Q4_0:
        *m = -1, *qh = -1, *qs = offsetof(block_q4_0, qs);
        break;
    case REALM_TYPE_Q4_1:
        *m = offsetof(block_q4_1, m), *qh = -1, *qs = offsetof(block_q4_1, qs);
        break;
    case REALM_TYPE_Q5_0:
        *m = -1, *qh = offsetof(block_q5_0, qh), *qs = offsetof(block_q5_0, qs);
        break;
    case REALM_TYPE_Q5_1:
        *m = offsetof(block_q5_1, m), *qh = offsetof(block_q5_1, qh),
        *qs = offsetof(block_q5_1, qs);
        break;
    default:
        *m = -1, *qh = -1, *qs = offsetof(block_q8_0, qs);
        break;
    }
}

void quant_pack32_slice(uint32_t type, const void *W, size_t w_row_bytes, int nr, int64_t i0,
                        int64_t ns, uint32_t *qs, uint64_t *qh, uint16_t *d, uint16_t *m) {
    const size_t bs = realm_type_row_size(type, 32);
    const int nq = type == REALM_TYPE_Q8_0 ? 8 : 4;
    int mo, qho, qso;
    block32_fields(type, &mo, &qho, &qso);
    for (int64_t t = 0; t < ns; t++) {
        uint32_t *q = qs + (size_t)t * (size_t)nq * 16;
        uint64_t *h = qho >= 0 ? qh + (size_t)t * 8 : NULL;
        if (h) memset(h, 0, 8 * sizeof *h);
        for (int r = 0; r < QUANT_PACK_ROWS; r++) {
            const char *b =
                r < nr ? (const char *)W + (size_t)r * w_row_bytes + (size_t)(i0 + t) * bs : NULL;
            uint16_t dv = 0, mv = 0;
            uint32_t hv = 0;
            if (b) {
                memcpy(&dv, b, 2);
                if (mo >= 0) memcpy(&mv, b + mo, 2);
                if (qho >= 0) memcpy(&hv, b + qho, 4);
            }
            d[t * 16 + r] = dv;
            if (mo >= 0) m[t * 16 + r] = mv;
            for (int c = 0; c < nq; c++) {
                uint32_t v = 0;
                if (b) memcpy(&v, b + qso + 4 * c, 4);
                /* q8_0: the signed quant + 128 as an unsigned byte */
                q[c * 16 + r] = type == REALM_TYPE_Q8_0 ? v ^ 0x80808080u : v;
            }
            if (h)
                for (int s = 0; s < 8; s++)
                    h[s] |= (uint64_t)((hv >> (4 * s)) & 0xFu) << (4 * r);
        }
    }
}

size_t quant_packed_size(uint32_t type, int64_t rows, int64_t k) {
    const int64_t groups32 = (rows + QUANT_PACK_ROWS - 1) / QUANT_PACK_ROWS;
    if (is_type32(type)) {
        struct quant_pack32_geom g;
        quant_pack32_geom(type, k / 32, &g);
        return g.group * (size_t)groups32;
    }
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
    const char *w = W;
    if (is_type32(type)) {
        struct quant_pack32_geom g;
        quant_pack32_geom(type, k / 32, &g);
        for (int64_t gi = 0; gi * QUANT_PACK_ROWS < rows; gi++) {
            const int64_t g0 = gi * QUANT_PACK_ROWS;
            const int nr = rows - g0 < QUANT_PACK_ROWS ? (int)(rows - g0) : QUANT_PACK_ROWS;
            char *base = (char *)P + (size_t)gi * g.group;
            memset(base, 0, g.group); /* the padding too */
            quant_pack32_slice(type, w + (size_t)g0 * w_row_bytes, w_row_bytes, nr, 0, k / 32,
                               (uint32_t *)(base + g.qs), (uint64_t *)(base + g.qh),
                               (uint16_t *)(base + g.d), (uint16_t *)(base + g.m));
        }
        return;
    }
    const int64_t nb = k / QK_K;
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
    const int64_t bs = is_type32(ops->type) ? 32 : QK_K;
    if (rows <= 0 || k <= 0 || k % bs || realm_type_row_size(ops->type, k) > w_row_bytes || !W)
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
