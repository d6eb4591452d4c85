/*
 * lanes_avx512.c — the AVX-512-only q4_K / q6_K x q8_K kernels (and those of the 32-element
 * formats q4_0 .. q8_0, section below) that put 16 weight rows in the
 * int32 lanes of a 512-bit vector: the batched kernel that repacks the rows on the fly
 * (quant_matmul_lanes_*_avx512, called by the AVX-512 build of kern_x86.c from n_b >= 3 on) and
 * the kernels over the copy prepacked at load (quant_matmul_packed_*_avx512, the matmul_packed
 * entries of the AVX-512 table; layout in quant.h). Integer sums are the exact int32 of
 * kern_x86.c's kx_tile_k and the float steps those of its kx_k_fin, in super-block order, so the
 * results are bit-identical to the AVX-512 table's vec_dot (tests/test_quant checks it).
 * CMake compiles this file with the AVX-512 flags (files named *_avx512*.c); dispatch.c uses its
 * kernels only when CPUID + XGETBV report the ISA. Built without the flags (not x86) it is empty.
 *
 * Thread rule: pure functions.
 */
#include "quant/quant.h"

#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__AVX512BW__) &&                      \
    defined(__AVX512VNNI__)
#include "quant/simd_x86.h"

/* activation rows sharing each weight vector */
#define KX_GTB 6

/* ============ q4_K / q6_K x q8_K, batched: 16 weight rows in the lanes of a zmm ============ */
/*
 * With several activation rows the weights of 16 rows are repacked, a few super-blocks at a
 * time, into a stack buffer where each 512-bit vector holds the same 4 quants (unsigned, one
 * byte each) of all 16 rows, and the per-row scales, mins and d's sit in lane vectors too. One
 * vpdpbusd with the matching 4 activation bytes broadcast then does 64 multiply-adds for 16
 * (row, activation) pairs, and the sub-block scales, mins and float steps are applied once per
 * vector for 16 rows instead of per 32 elements per row. The repacking (16 x 16 dword
 * transposes) costs about as much as two activation rows and is reused for all n_b of them, so
 * this path starts at KX_GNB_MIN rows.
 * The integer sums are the same exact int32 as kx_tile_k's and the float steps are those of
 * kx_k_fin: results are bit-identical to vec_dot.
 */
#define KX_G 16  /* rows per group: one per int32 lane */
#define KX_GNS 4 /* super-blocks repacked at a time (4 x 5.6 KB on the stack, L1-resident) */

struct kx_kg {
    uint8_t q[64][64];  /* [8 j + s][4 r + e] = quant 32 j + 4 s + e of row r (0..15) */
    int32_t sc[16][16]; /* scale of sub-block j of row r (q4_K: 8 of 32 elements; q6_K: 16 of 16) */
    uint32_t mp[8][16]; /* int16 pairs against bsums 2p, 2p + 1: q4_K (min p, min p); q6_K
                           (scale 2p, scale 2p + 1) */
    float d[16], dmin[16];
};

/* out[c] lane r = dword c of in[r] (16 x 16 transpose of dwords). */
KX_INLINE void kx_transpose16(__m512i in[16], __m512i out[16]) {
    __m512i t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(in[2 * k], in[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(in[2 * k], in[2 * k + 1]);
    }
    /* u[4k + m], 128-bit lane L: rows 4k..4k+3 of column 4L + m */
    for (int k = 0; k < 4; k++) {
        u[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
        u[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
        u[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i ablo = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x44); /* A0 A1 B0 B1 */
        const __m512i abhi = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xEE); /* A2 A3 B2 B3 */
        const __m512i cdlo = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x44);
        const __m512i cdhi = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xEE);
        out[m] = _mm512_shuffle_i32x4(ablo, cdlo, 0x88);      /* lane 0 of A B C D */
        out[4 + m] = _mm512_shuffle_i32x4(ablo, cdlo, 0xDD);  /* lane 1 */
        out[8 + m] = _mm512_shuffle_i32x4(abhi, cdhi, 0x88);  /* lane 2 */
        out[12 + m] = _mm512_shuffle_i32x4(abhi, cdhi, 0xDD); /* lane 3 */
    }
}

/* 64 bytes at byte offset off of super-block i of rows 0..nr-1, transposed: out[c] lane r =
 * dword c (missing rows 0). */
KX_INLINE void kx_gload(const char *W, size_t wrb, size_t bs, int nr, int64_t i, size_t off,
                        __m512i out[16]) {
    __m512i in[16];
    for (int r = 0; r < 16; r++)
        in[r] = r < nr ? _mm512_loadu_si512(W + r * wrb + (size_t)i * bs + off)
                       : _mm512_setzero_si512();
    kx_transpose16(in, out);
}

/* Dword at byte offset off of super-block i of rows 0..nr-1 (missing rows 0), lane r = row r. */
KX_INLINE __m512i kx_ggather(const char *W, size_t wrb, size_t bs, int nr, int64_t i, size_t off) {
    const __m512i rowi =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)wrb));
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), (__mmask16)((1u << nr) - 1u), rowi,
                                       W + (size_t)i * bs + off, 1);
}

/* Repacks super-block i of rows 0..nr-1 (nr <= 16) at W; the lanes of missing rows are 0. */
static void kx_q4k_repack(const char *W, size_t wrb, int nr, int64_t i, struct kx_kg *g) {
    const size_t bs = sizeof(block_q4_K);
    const __m512i m0F = _mm512_set1_epi8(0x0F);
    for (int h = 0; h < 2; h++) { /* qs bytes 64h .. 64h+63: dwords 16h .. 16h+15 */
        __m512i tr[16];
        kx_gload(W, wrb, bs, nr, i, offsetof(block_q4_K, qs) + 64 * h, tr);
        /* dword t = 16h + c of qs: bytes 32p + 4s .. (p = t / 8, s = t % 8), whose low nibbles
         * are quants 4s.. of sub-block 2p and high nibbles those of sub-block 2p + 1 */
        for (int c = 0; c < 16; c++) {
            const int t = 16 * h + c, p = t / 8, s = t % 8;
            _mm512_store_si512(g->q[8 * (2 * p) + s], _mm512_and_si512(tr[c], m0F));
            _mm512_store_si512(g->q[8 * (2 * p + 1) + s],
                               _mm512_and_si512(_mm512_srli_epi16(tr[c], 4), m0F));
        }
    }
    /* d | dmin << 16, then the 12 scale bytes: 4 dwords */
    __m512i u[4];
    for (int t = 0; t < 4; t++)
        u[t] = kx_ggather(W, wrb, bs, nr, i, 4 * (size_t)t);
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    _mm512_store_ps(g->d, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_and_si512(u[0], lo16))));
    _mm512_store_ps(g->dmin, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(u[0], 16))));
    /* kx_scales_k4 on 16 rows at once: bytes of sc0-3, sc4-7, m0-3, m4-7 */
    const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f),
                  m2 = _mm512_set1_epi32(0x03030303);
    const __m512i sc03 = _mm512_and_si512(u[1], m6), mn03 = _mm512_and_si512(u[2], m6);
    const __m512i sc47 =
        _mm512_or_si512(_mm512_and_si512(u[3], m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[1], 6), m2), 4));
    const __m512i mn47 =
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u[3], 4), m4),
                        _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[2], 6), m2), 4));
    const __m512i ff = _mm512_set1_epi32(0xFF);
    KX_UNROLL for (int j = 0; j < 4; j++) {
        _mm512_store_si512(g->sc[j], _mm512_and_si512(_mm512_srli_epi32(sc03, 8 * j), ff));
        _mm512_store_si512(g->sc[4 + j], _mm512_and_si512(_mm512_srli_epi32(sc47, 8 * j), ff));
        const __m512i a = _mm512_and_si512(_mm512_srli_epi32(mn03, 8 * j), ff);
        const __m512i c = _mm512_and_si512(_mm512_srli_epi32(mn47, 8 * j), ff);
        _mm512_store_si512(g->mp[j], _mm512_or_si512(a, _mm512_slli_epi32(a, 16)));
        _mm512_store_si512(g->mp[4 + j], _mm512_or_si512(c, _mm512_slli_epi32(c, 16)));
    }
}

static void kx_q6k_repack(const char *W, size_t wrb, int nr, int64_t i, struct kx_kg *g) {
    const size_t bs = sizeof(block_q6_K);
    __m512i ql[32], qh[16];
    kx_gload(W, wrb, bs, nr, i, offsetof(block_q6_K, ql), ql);
    kx_gload(W, wrb, bs, nr, i, offsetof(block_q6_K, ql) + 64, ql + 16);
    kx_gload(W, wrb, bs, nr, i, offsetof(block_q6_K, qh), qh);
    const __m512i m0F = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    /* chunk j = 4h + c (elements 32j..): low 4 bits in the low (c < 2) or high nibbles of ql
     * bytes 64h + 32(c%2) + l, high 2 bits at 2c in qh bytes 32h + l, l = 4s + e */
    KX_UNROLL for (int j = 0; j < 8; j++) {
        const int h = j / 4, c = j % 4;
        KX_UNROLL for (int s = 0; s < 8; s++) {
            const __m512i l = ql[16 * h + 8 * (c % 2) + s], hb = qh[8 * h + s];
            const __m512i lo = _mm512_and_si512(c < 2 ? l : _mm512_srli_epi16(l, 4), m0F);
            const __m512i hi = _mm512_and_si512(c == 0   ? _mm512_slli_epi16(hb, 4)
                                                : c == 1 ? _mm512_slli_epi16(hb, 2)
                                                : c == 2 ? hb
                                                         : _mm512_srli_epi16(hb, 2),
                                                m30);
            _mm512_store_si512(g->q[8 * j + s], _mm512_or_si512(lo, hi));
        }
    }
    /* 16 int8 scales (4 dwords), d in the high half of the dword at 206 (a dword at 208 would
     * read past the block) */
    __m512i v[4];
    for (int t = 0; t < 4; t++)
        v[t] = kx_ggather(W, wrb, bs, nr, i, offsetof(block_q6_K, scales) + 4 * (size_t)t);
    const __m512i dw = kx_ggather(W, wrb, bs, nr, i, offsetof(block_q6_K, d) - 2);
    _mm512_store_ps(g->d, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dw, 16))));
    _mm512_store_ps(g->dmin, _mm512_setzero_ps());
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    KX_UNROLL for (int t = 0; t < 4; t++) {
        __m512i s[4];
        KX_UNROLL for (int b = 0; b < 4; b++) {
            s[b] = _mm512_srai_epi32(_mm512_slli_epi32(v[t], 24 - 8 * b), 24);
            _mm512_store_si512(g->sc[4 * t + b], s[b]);
        }
        _mm512_store_si512(g->mp[2 * t], _mm512_or_si512(_mm512_and_si512(s[0], lo16),
                                                         _mm512_slli_epi32(s[1], 16)));
        _mm512_store_si512(g->mp[2 * t + 1], _mm512_or_si512(_mm512_and_si512(s[2], lo16),
                                                             _mm512_slli_epi32(s[3], 16)));
    }
}

KX_INLINE __m512i kx_bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* TB activation rows at A against the repacked super-blocks g[0..ns-1] (= blocks i0..); out
 * lanes under mask m, accumulating onto out unless first. */
KX_INLINE void kx_gtile(const int f, const int TB, const struct kx_kg *g, int ns, const char *A,
                        size_t arb, int64_t i0, float *out, int64_t os, __mmask16 m, int first) {
    __m512 acc[KX_GTB];
    KX_UNROLL for (int b = 0; b < TB; b++) acc[b] =
        first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, out + b * os);
    for (int t = 0; t < ns; t++) {
        const struct kx_kg *G = g + t;
        const block_q8_K *y[KX_GTB];
        KX_UNROLL for (int b = 0; b < TB; b++) y[b] = (const block_q8_K *)(A + b * arb) + i0 + t;
        __m512i isum[KX_GTB];
        /* sub-blocks of 8 (q4_K) or 4 (q6_K) steps of 4 quants */
        const int nsub = f == KX_Q4_K ? 8 : 16, steps = f == KX_Q4_K ? 8 : 4;
        KX_UNROLL for (int j = 0; j < nsub; j++) {
            __m512i p[KX_GTB];
            KX_UNROLL for (int b = 0; b < TB; b++) p[b] = _mm512_setzero_si512();
            KX_UNROLL for (int s = 0; s < steps; s++) {
                const int e = 4 * (steps * j + s); /* first element */
                const __m512i w = _mm512_load_si512(G->q[e / 4]);
                KX_UNROLL for (int b = 0; b < TB; b++) p[b] =
                    _mm512_dpbusd_epi32(p[b], w, kx_bcast32(y[b]->qs + e));
            }
            const __m512i sc = _mm512_load_si512(G->sc[j]);
            KX_UNROLL for (int b = 0; b < TB; b++) {
                const __m512i v = _mm512_mullo_epi32(p[b], sc);
                isum[b] = j ? _mm512_add_epi32(isum[b], v) : v;
            }
        }
        const __m512 d = _mm512_load_ps(G->d), dm = _mm512_load_ps(G->dmin);
        KX_UNROLL for (int b = 0; b < TB; b++) {
            __m512i ms = _mm512_setzero_si512();
            KX_UNROLL for (int p = 0; p < 8; p++) ms = _mm512_dpwssd_epi32(
                ms, _mm512_load_si512(G->mp[p]), kx_bcast32(y[b]->bsums + 2 * p));
            const __m512 yd = _mm512_set1_ps(y[b]->d);
            /* kx_k_fin on 16 lanes */
            if (f == KX_Q4_K)
                acc[b] = _mm512_fnmadd_ps(
                    _mm512_cvtepi32_ps(ms), _mm512_mul_ps(dm, yd),
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[b]), _mm512_mul_ps(d, yd), acc[b]));
            else /* quants offset by 32 */
                acc[b] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[b], _mm512_slli_epi32(ms, 5))),
                    _mm512_mul_ps(d, yd), acc[b]);
        }
    }
    KX_UNROLL for (int b = 0; b < TB; b++) _mm512_mask_storeu_ps(out + b * os, m, acc[b]);
}

/* Every activation row (n_b of them) against the same super-blocks g[0..ns-1]: whole tiles of
 * KX_GTB rows, then one tile of the 1 .. KX_GTB-1 left (a constant TB per case, so each tile is
 * compiled for its size). */
KX_INLINE void kx_gtile_rows(const int f, const struct kx_kg *g, int ns, const char *a, size_t arb,
                             int64_t n_b, int64_t i0, float *o, int64_t os, __mmask16 m,
                             int first) {
    int64_t b = 0;
    for (; b + KX_GTB <= n_b; b += KX_GTB)
        kx_gtile(f, KX_GTB, g, ns, a + b * arb, arb, i0, o + b * os, os, m, first);
    switch (n_b - b) {
#define KX_GCASE(n)                                                                                \
    case n:                                                                                        \
        if (n < KX_GTB)                                                                            \
            kx_gtile(f, n < KX_GTB ? n : 1, g, ns, a + b * arb, arb, i0, o + b * os, os, m,        \
                     first);                                                                       \
        break;
        KX_GCASE(1)
        KX_GCASE(2)
        KX_GCASE(3)
        KX_GCASE(4)
        KX_GCASE(5)
        KX_GCASE(6)
        KX_GCASE(7)
#undef KX_GCASE
    default:
        break;
    }
}

KX_INLINE void kx_gmatmul(const int f, const int64_t k, const char *w, size_t wrb, int64_t n_r,
                          const char *a, size_t arb, int64_t n_b, float *out, int64_t os) {
    const size_t bs = f == KX_Q4_K ? sizeof(block_q4_K) : sizeof(block_q6_K);
    const int64_t nb = k / QK_K;
    struct kx_kg g[KX_GNS] __attribute__((aligned(64)));
    for (int64_t r0 = 0; r0 < n_r; r0 += KX_G) {
        const int nr = n_r - r0 < KX_G ? (int)(n_r - r0) : KX_G;
        const __mmask16 m = (__mmask16)((1u << nr) - 1u);
        for (int64_t i0 = 0; i0 < nb; i0 += KX_GNS) {
            const int ns = nb - i0 < KX_GNS ? (int)(nb - i0) : KX_GNS;
            for (int t = 0; t < ns; t++) {
                if (f == KX_Q4_K)
                    kx_q4k_repack(w + r0 * wrb, wrb, nr, i0 + t, &g[t]);
                else
                    kx_q6k_repack(w + r0 * wrb, wrb, nr, i0 + t, &g[t]);
            }
            /* fetch the next slice's rows while this one meets the activations (16 row streams
             * are too many for the hardware prefetcher) */
            {
                int64_t pr0 = r0, pi = i0 + KX_GNS;
                if (pi >= nb) pr0 += KX_G, pi = 0;
                const int64_t pnr = n_r - pr0 < KX_G ? n_r - pr0 : KX_G;
                const int64_t pns = nb - pi < KX_GNS ? nb - pi : KX_GNS;
                for (int64_t r = 0; r < pnr; r++)
                    kx_prefetch(w + (pr0 + r) * wrb + pi * (int64_t)bs, (size_t)pns * bs);
            }
            float *o = out + r0;
            const int first = i0 == 0;
            kx_gtile_rows(f, g, ns, a, arb, n_b, i0, o, os, m, first);
        }
    }
}

/* ============ q4_K / q6_K x q8_K over the prepacked layout (quant.h, quant_pack_*) ============ */
/*
 * The same lane scheme as kx_gtile (one int32 lane per weight row, vpdpbusd against broadcast
 * activation bytes), but the weights come already transposed from the packed copy, so no call
 * repacks and the quants are unpacked in registers (nibbles, q6_K high bits) as they are used;
 * this serves every n_b, decode included. Integer sums are the exact int32 of kx_tile_k and the
 * float steps those of kx_k_fin, in super-block order: bit-identical to vec_dot.
 */
#define KX_PNS 4   /* super-blocks per slice: the slice meets every activation tile while in L1 */
#define KX_PDIST 2 /* software prefetch distance in packed super-blocks */

/* lanes j of the q4_K scales / mins: s[0..7] scales, m[0..7] (min, min) int16 pairs */
KX_INLINE void kx_p4_scales(const struct quant_pack_q4_K *P, __m512i sc[8], __m512i mp[8]) {
    const __m512i v0 = _mm512_load_si512(P->sc[0]), v1 = _mm512_load_si512(P->sc[1]),
                  v2 = _mm512_load_si512(P->sc[2]);
    const __m512i m3F = _mm512_set1_epi8(0x3F), m0F = _mm512_set1_epi8(0x0F),
                  m30 = _mm512_set1_epi8(0x30), ff = _mm512_set1_epi32(0xFF);
    const __m512i sc03 = _mm512_and_si512(v0, m3F), mn03 = _mm512_and_si512(v1, m3F);
    const __m512i sc47 =
        _mm512_or_si512(_mm512_and_si512(v2, m0F), _mm512_and_si512(_mm512_srli_epi32(v0, 2), m30));
    const __m512i mn47 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v2, 4), m0F),
                                         _mm512_and_si512(_mm512_srli_epi32(v1, 2), m30));
    KX_UNROLL for (int j = 0; j < 4; j++) {
        sc[j] = _mm512_and_si512(_mm512_srli_epi32(sc03, 8 * j), ff);
        sc[4 + j] = _mm512_and_si512(_mm512_srli_epi32(sc47, 8 * j), ff);
        const __m512i a = _mm512_and_si512(_mm512_srli_epi32(mn03, 8 * j), ff);
        const __m512i c = _mm512_and_si512(_mm512_srli_epi32(mn47, 8 * j), ff);
        mp[j] = _mm512_or_si512(a, _mm512_slli_epi32(a, 16));
        mp[4 + j] = _mm512_or_si512(c, _mm512_slli_epi32(c, 16));
    }
}

/* TB activation rows at A against packed super-blocks P[0..ns) (= blocks i0..) of one group;
 * lanes under mask m of out, accumulating onto out unless first. */
KX_INLINE void kx_ptile(const int f, const int TB, const void *Pv, int ns, const char *A,
                        size_t arb, int64_t i0, float *out, int64_t os, __mmask16 m, int first,
                        int pf) {
    const size_t ps =
        f == KX_Q4_K ? sizeof(struct quant_pack_q4_K) : sizeof(struct quant_pack_q6_K);
    __m512 acc[KX_GTB];
    KX_UNROLL for (int b = 0; b < TB; b++) acc[b] =
        first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, out + b * os);
    const __m512i m0F = _mm512_set1_epi8(0x0F);
    for (int t = 0; t < ns; t++) {
        /* the packed copy is one stream: fetch KX_PDIST blocks ahead (past the end of the
         * buffer is harmless for a prefetch) */
        if (pf) kx_prefetch((const char *)Pv + (size_t)(t + KX_PDIST) * ps, ps);
        const block_q8_K *y[KX_GTB];
        KX_UNROLL for (int b = 0; b < TB; b++) y[b] = (const block_q8_K *)(A + b * arb) + i0 + t;
        __m512i isum[KX_GTB], ms[KX_GTB];
        __m512 d, dm = _mm512_setzero_ps();
        if (f == KX_Q4_K) {
            const struct quant_pack_q4_K *P = (const struct quant_pack_q4_K *)Pv + t;
            __m512i sc[8], mp[8];
            kx_p4_scales(P, sc, mp);
            /* sub-blocks 2h (low nibbles) and 2h + 1 (high nibbles) of qs dwords 8h .. 8h + 7 */
            KX_UNROLL for (int j = 0; j < 8; j++) {
                const int h = j / 2, hi = j % 2;
                __m512i p[KX_GTB];
                KX_UNROLL for (int b = 0; b < TB; b++) p[b] = _mm512_setzero_si512();
                KX_UNROLL for (int s = 0; s < 8; s++) {
                    const __m512i v = _mm512_load_si512(P->qs[8 * h + s]);
                    const __m512i w = _mm512_and_si512(hi ? _mm512_srli_epi32(v, 4) : v, m0F);
                    const int e = 64 * h + 32 * hi + 4 * s;
                    KX_UNROLL for (int b = 0; b < TB; b++) p[b] =
                        _mm512_dpbusd_epi32(p[b], w, kx_bcast32(y[b]->qs + e));
                }
                KX_UNROLL for (int b = 0; b < TB; b++) {
                    const __m512i v = _mm512_mullo_epi32(p[b], sc[j]);
                    isum[b] = j ? _mm512_add_epi32(isum[b], v) : v;
                }
            }
            KX_UNROLL for (int b = 0; b < TB; b++) {
                ms[b] = _mm512_setzero_si512();
                KX_UNROLL for (int q = 0; q < 8; q++) ms[b] =
                    _mm512_dpwssd_epi32(ms[b], mp[q], kx_bcast32(y[b]->bsums + 2 * q));
            }
            const __m512i dmv = _mm512_load_si512(P->dm);
            d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dmv));
            dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dmv, 16)));
        } else {
            const struct quant_pack_q6_K *P = (const struct quant_pack_q6_K *)Pv + t;
            const __m512i m30 = _mm512_set1_epi8(0x30), lo16 = _mm512_set1_epi32(0xFFFF);
            __m512i sc[16];
            KX_UNROLL for (int u = 0; u < 4; u++) {
                const __m512i v = _mm512_load_si512(P->sc[u]);
                KX_UNROLL for (int q = 0; q < 4; q++) sc[4 * u + q] =
                    _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * q), 24);
            }
            /* chunk j = 4h + c (elements 32j..): low 4 bits in the low (c < 2) or high nibbles
             * of ql dwords 16h + 8(c%2) + s, high 2 bits at 2c in qh dwords 8h + s */
            KX_UNROLL for (int j = 0; j < 8; j++) {
                const int h = j / 4, c = j % 4;
                KX_UNROLL for (int half = 0; half < 2; half++) { /* sub-block 2j + half */
                    __m512i p[KX_GTB];
                    KX_UNROLL for (int b = 0; b < TB; b++) p[b] = _mm512_setzero_si512();
                    KX_UNROLL for (int s = 4 * half; s < 4 * half + 4; s++) {
                        const __m512i l = _mm512_load_si512(P->ql[16 * h + 8 * (c % 2) + s]);
                        const __m512i hb = _mm512_load_si512(P->qh[8 * h + s]);
                        const __m512i lo =
                            _mm512_and_si512(c < 2 ? l : _mm512_srli_epi16(l, 4), m0F);
                        const __m512i hi = _mm512_and_si512(c == 0   ? _mm512_slli_epi16(hb, 4)
                                                            : c == 1 ? _mm512_slli_epi16(hb, 2)
                                                            : c == 2 ? hb
                                                                     : _mm512_srli_epi16(hb, 2),
                                                            m30);
                        const __m512i w = _mm512_or_si512(lo, hi);
                        const int e = 32 * j + 4 * s;
                        KX_UNROLL for (int b = 0; b < TB; b++) p[b] =
                            _mm512_dpbusd_epi32(p[b], w, kx_bcast32(y[b]->qs + e));
                    }
                    const int jj = 2 * j + half;
                    KX_UNROLL for (int b = 0; b < TB; b++) {
                        const __m512i v = _mm512_mullo_epi32(p[b], sc[jj]);
                        isum[b] = jj ? _mm512_add_epi32(isum[b], v) : v;
                    }
                }
            }
            KX_UNROLL for (int b = 0; b < TB; b++) {
                ms[b] = _mm512_setzero_si512();
                KX_UNROLL for (int q = 0; q < 8; q++) ms[b] =
                    _mm512_dpwssd_epi32(ms[b],
                                        _mm512_or_si512(_mm512_and_si512(sc[2 * q], lo16),
                                                        _mm512_slli_epi32(sc[2 * q + 1], 16)),
                                        kx_bcast32(y[b]->bsums + 2 * q));
            }
            d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_load_si512(P->d)));
        }
        KX_UNROLL for (int b = 0; b < TB; b++) {
            const __m512 yd = _mm512_set1_ps(y[b]->d);
            /* kx_k_fin on 16 lanes */
            if (f == KX_Q4_K)
                acc[b] = _mm512_fnmadd_ps(
                    _mm512_cvtepi32_ps(ms[b]), _mm512_mul_ps(dm, yd),
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[b]), _mm512_mul_ps(d, yd), acc[b]));
            else /* quants offset by 32 */
                acc[b] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[b], _mm512_slli_epi32(ms[b], 5))),
                    _mm512_mul_ps(d, yd), acc[b]);
        }
    }
    KX_UNROLL for (int b = 0; b < TB; b++) _mm512_mask_storeu_ps(out + b * os, m, acc[b]);
}

/* q6_K with many activation rows: the 6-bit quants of a slice are unpacked once into the byte
 * form of kx_kg (as kx_q6k_repack, without the transposes) and kx_gtile meets every activation
 * tile with it, instead of rebuilding them per tile. */
#define KX_P6_UNPACK_MIN 12
static void kx_q6k_unpackp(const struct quant_pack_q6_K *P, struct kx_kg *g) {
    const __m512i m0F = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    KX_UNROLL for (int j = 0; j < 8; j++) {
        const int h = j / 4, c = j % 4;
        KX_UNROLL for (int s = 0; s < 8; s++) {
            const __m512i l = _mm512_load_si512(P->ql[16 * h + 8 * (c % 2) + s]);
            const __m512i hb = _mm512_load_si512(P->qh[8 * h + s]);
            const __m512i lo = _mm512_and_si512(c < 2 ? l : _mm512_srli_epi16(l, 4), m0F);
            const __m512i hi = _mm512_and_si512(c == 0   ? _mm512_slli_epi16(hb, 4)
                                                : c == 1 ? _mm512_slli_epi16(hb, 2)
                                                : c == 2 ? hb
                                                         : _mm512_srli_epi16(hb, 2),
                                                m30);
            _mm512_store_si512(g->q[8 * j + s], _mm512_or_si512(lo, hi));
        }
    }
    _mm512_store_ps(g->d, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_load_si512(P->d))));
    _mm512_store_ps(g->dmin, _mm512_setzero_ps());
    const __m512i lo16 = _mm512_set1_epi32(0xFFFF);
    KX_UNROLL for (int t = 0; t < 4; t++) {
        const __m512i v = _mm512_load_si512(P->sc[t]);
        __m512i sc[4];
        KX_UNROLL for (int b = 0; b < 4; b++) {
            sc[b] = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * b), 24);
            _mm512_store_si512(g->sc[4 * t + b], sc[b]);
        }
        _mm512_store_si512(g->mp[2 * t], _mm512_or_si512(_mm512_and_si512(sc[0], lo16),
                                                         _mm512_slli_epi32(sc[1], 16)));
        _mm512_store_si512(g->mp[2 * t + 1], _mm512_or_si512(_mm512_and_si512(sc[2], lo16),
                                                             _mm512_slli_epi32(sc[3], 16)));
    }
}

static void kx_p6_many(const int64_t k, const void *P, int64_t r0, int64_t r1, const char *a,
                       size_t arb, int64_t n_b, float *out, int64_t os) {
    const int64_t nb = k / QK_K;
    struct kx_kg g[KX_GNS] __attribute__((aligned(64)));
    for (int64_t gi = r0 / KX_G; gi * KX_G < r1; gi++) {
        const int64_t g0 = gi * KX_G;
        const int lo = r0 > g0 ? (int)(r0 - g0) : 0;
        const int hi = r1 - g0 < KX_G ? (int)(r1 - g0) : KX_G;
        const __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
        const struct quant_pack_q6_K *Pg = (const struct quant_pack_q6_K *)P + gi * nb;
        float *o = out + (g0 - r0); /* lanes below lo are masked off (never touched) */
        for (int64_t i0 = 0; i0 < nb; i0 += KX_GNS) {
            const int ns = nb - i0 < KX_GNS ? (int)(nb - i0) : KX_GNS;
            for (int t = 0; t < ns; t++)
                kx_q6k_unpackp(Pg + i0 + t, &g[t]);
            kx_prefetch((const char *)(Pg + i0 + ns), (size_t)KX_GNS * sizeof *Pg);
            const int first = i0 == 0;
            kx_gtile_rows(KX_Q6_K, g, ns, a, arb, n_b, i0, o, os, m, first);
        }
    }
}

KX_INLINE void kx_pmatmul(const int f, const int64_t k, const void *P, int64_t r0, int64_t r1,
                          const char *a, size_t arb, int64_t n_b, float *out, int64_t os) {
    if (f == KX_Q6_K && n_b >= KX_P6_UNPACK_MIN && k >= QK_K) {
        kx_p6_many(k, P, r0, r1, a, arb, n_b, out, os);
        return;
    }
    const size_t ps =
        f == KX_Q4_K ? sizeof(struct quant_pack_q4_K) : sizeof(struct quant_pack_q6_K);
    const int64_t nb = k / QK_K;
    for (int64_t g = r0 / KX_G; g * KX_G < r1; g++) {
        const int64_t g0 = g * KX_G;
        const int lo = r0 > g0 ? (int)(r0 - g0) : 0;
        const int hi = r1 - g0 < KX_G ? (int)(r1 - g0) : KX_G;
        const __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
        const char *Pg = (const char *)P + (size_t)(g * nb) * ps;
        float *o = out + (g0 - r0); /* lanes below lo are masked off (never touched) */
        if (nb == 0) {              /* k = 0: empty dots */
            for (int64_t b = 0; b < n_b; b++)
                _mm512_mask_storeu_ps(o + b * os, m, _mm512_setzero_ps());
            continue;
        }
        for (int64_t i0 = 0; i0 < nb; i0 += KX_PNS) {
            const int ns = nb - i0 < KX_PNS ? (int)(nb - i0) : KX_PNS;
            const void *Ps = Pg + (size_t)i0 * ps;
            const int first = i0 == 0;
            int64_t b = 0;
            for (; b + KX_GTB <= n_b; b += KX_GTB)
                kx_ptile(f, KX_GTB, Ps, ns, a + b * arb, arb, i0, o + b * os, os, m, first, b == 0);
            switch (n_b - b) { /* the remaining 1 .. KX_GTB-1 rows */
#define KX_PCASE(n)                                                                                \
    case n:                                                                                        \
        if (n < KX_GTB)                                                                            \
            kx_ptile(f, n < KX_GTB ? n : 1, Ps, ns, a + b * arb, arb, i0, o + b * os, os, m,       \
                     first, b == 0);                                                               \
        break;
                KX_PCASE(1)
                KX_PCASE(2)
                KX_PCASE(3)
                KX_PCASE(4)
                KX_PCASE(5)
                KX_PCASE(6)
                KX_PCASE(7)
#undef KX_PCASE
            default:
                break;
            }
        }
    }
}

/* ============ q4_0 .. q8_0 x q8_0 / q8_1: 16 weight rows in the lanes of a zmm ============ */
/*
 * The 32-element formats in the layout of quant.h (struct quant_pack32_geom): one 512-bit vector
 * holds the same 4 quants of 16 rows, so per block and activation row 8 vpdpbusd (each against 4
 * activation bytes broadcast) give the 16 exact integer dots sum q a over the unsigned quants;
 * the offsets of q4_0 / q5_0 (8, 16) and of q8_0 stored + 128 come off as offset * sum a. The
 * float steps are the scalar reference's, per lane:
 *     acc = acc + (float)isum * (d_w * d_a)   (_1 formats: + ((float)isum * (d_w * d_a) + m_w *
 * s_a)) in block order, so every result equals the scalar vec_dot (and the AVX-512 one) bit for
 * bit. What depends on the activation block only (offset * sum a, d_a, s_a) is computed once per
 * call for a chunk of activation rows (struct kx_lpre, on the stack) instead of once per 16 rows.
 * Packed copies are read in place; the unpacked path (realm_quant_matmul with several
 * activation rows) repacks slices of KX_LNS blocks of 16 rows into a stack buffer first.
 */
#define KX_LNS 16    /* blocks per slice: its weights (<= 8.5 KB) stay in L1 for every tile */
#define KX_LPRE 8192 /* (activation row, block) entries precomputed at a time (64 KB) */
#define KX_LBC 64    /* at most this many activation rows per chunk */

struct kx_l32 {            /* the planes of one slice (block 0 = the slice's first) */
    const uint32_t *qs;    /* nq x 16 dwords per block */
    const uint64_t *qh;    /* 8 masks per block (q5 formats) */
    const uint16_t *d, *m; /* 16 halves per block */
};

/* Per (activation row, block) of a chunk, at [row * kc + block - k0]: offset * sum of the quants
 * (the _0 formats) or s_a as a float (the _1 formats), and d_a as a float. */
struct kx_lpre {
    union {
        int32_t corr;
        float s;
    } x[KX_LPRE];
    float d[KX_LPRE];
};

/* The sum of the 32 activation quants at q. */
KX_INLINE int32_t kx_asum32(const int8_t *q) {
    const __m256i v = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1),
                                          _mm256_loadu_si256((const __m256i *)q));
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
    return _mm_cvtsi128_si32(x);
}

KX_INLINE float kx_h2f(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Fills pre for activation rows [0, nbc) at a and blocks [k0, k0 + kc). */
KX_INLINE void kx_lprep(const uint32_t t, const char *a, size_t arb, int64_t nbc, int64_t k0,
                        int64_t kc, struct kx_lpre *pre) {
    const int q81 = t == REALM_TYPE_Q4_1 || t == REALM_TYPE_Q5_1;
    const int oshift = t == REALM_TYPE_Q4_0 ? 3 : t == REALM_TYPE_Q5_0 ? 4 : 7;
    const size_t abs_ = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0);
    for (int64_t b = 0; b < nbc; b++)
        for (int64_t i = 0; i < kc; i++) {
            const char *y = a + b * arb + (size_t)(k0 + i) * abs_;
            const int64_t e = b * kc + i;
            pre->d[e] = kx_h2f(y);
            if (q81)
                pre->x[e].s = kx_h2f(y + 2);
            else
                pre->x[e].corr = (int32_t)((uint32_t)kx_asum32((const int8_t *)(y + 2)) << oshift);
        }
}

/* TB activation rows at A against the ns blocks of slice S (= blocks i0.., entry pi of pre for
 * the first row, rows kc entries apart); lanes under mask m of out, accumulating onto out unless
 * first; pf: the next slice's weights to prefetch (or NULL), pfn bytes. */
KX_INLINE void kx_ltile(const uint32_t t, const int TB, const struct kx_l32 *S, int ns,
                        const char *A, size_t arb, int64_t i0, const struct kx_lpre *pre,
                        int64_t pi, int64_t kc, float *out, int64_t os, __mmask16 m, int first,
                        const char *pf, size_t pfn) {
    const int q81 = t == REALM_TYPE_Q4_1 || t == REALM_TYPE_Q5_1;
    const int q5 = t == REALM_TYPE_Q5_0 || t == REALM_TYPE_Q5_1;
    const int nq = t == REALM_TYPE_Q8_0 ? 8 : 4;
    const size_t abs_ = q81 ? sizeof(block_q8_1) : sizeof(block_q8_0), aqs = q81 ? 4 : 2;
    if (pf) kx_prefetch(pf, pfn);
    __m512 acc[KX_GTB];
    KX_UNROLL for (int b = 0; b < TB; b++) acc[b] =
        first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, out + b * os);
    const __m512i m0F = _mm512_set1_epi8(0x0F), x10 = _mm512_set1_epi8(0x10);
    for (int u = 0; u < ns; u++) {
        const uint32_t *qs = S->qs + (size_t)u * (size_t)nq * 16;
        const char *y[KX_GTB];
        KX_UNROLL for (int b = 0; b < TB; b++) y[b] = A + b * arb + (size_t)(i0 + u) * abs_ + aqs;
        __m512i p[KX_GTB];
        KX_UNROLL for (int b = 0; b < TB; b++) p[b] = _mm512_setzero_si512();
        KX_UNROLL for (int s = 0; s < 8; s++) { /* elements 4s .. 4s + 3 */
            __m512i w;
            if (t == REALM_TYPE_Q8_0) {
                w = _mm512_load_si512(qs + 16 * s);
            } else {
                const __m512i v = _mm512_load_si512(qs + 16 * (s % 4));
                w = _mm512_and_si512(s < 4 ? v : _mm512_srli_epi32(v, 4), m0F);
                if (q5) w = _mm512_mask_add_epi8(w, (__mmask64)S->qh[8 * u + s], w, x10);
            }
            KX_UNROLL for (int b = 0; b < TB; b++) p[b] =
                _mm512_dpbusd_epi32(p[b], w, kx_bcast32(y[b] + 4 * s));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(S->d + 16 * u)));
        const __m512 mw = q81 ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(S->m + 16 * u)))
                              : _mm512_setzero_ps();
        KX_UNROLL for (int b = 0; b < TB; b++) {
            const int64_t e = pi + b * kc + u;
            const __m512i isum =
                q81 ? p[b] : _mm512_sub_epi32(p[b], _mm512_set1_epi32(pre->x[e].corr));
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(isum),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(pre->d[e])));
            if (q81) v = _mm512_add_ps(v, _mm512_mul_ps(mw, _mm512_set1_ps(pre->x[e].s)));
            acc[b] = _mm512_add_ps(acc[b], v);
        }
    }
    KX_UNROLL for (int b = 0; b < TB; b++) _mm512_mask_storeu_ps(out + b * os, m, acc[b]);
}

/* Every activation row of the chunk (nbc of them) against slice S: whole tiles of KX_GTB rows,
 * then one tile of the 1 .. KX_GTB-1 left (a constant TB per case). */
KX_INLINE void kx_ltile_rows(const uint32_t t, const struct kx_l32 *S, int ns, const char *a,
                             size_t arb, int64_t nbc, int64_t i0, const struct kx_lpre *pre,
                             int64_t pi, int64_t kc, float *o, int64_t os, __mmask16 m, int first,
                             const char *pf, size_t pfn) {
    int64_t b = 0;
    for (; b + KX_GTB <= nbc; b += KX_GTB, pf = NULL)
        kx_ltile(t, KX_GTB, S, ns, a + b * arb, arb, i0, pre, pi + b * kc, kc, o + b * os, os, m,
                 first, pf, pfn);
    switch (nbc - b) {
#define KX_LCASE(n)                                                                                \
    case n:                                                                                        \
        if (n < KX_GTB)                                                                            \
            kx_ltile(t, n < KX_GTB ? n : 1, S, ns, a + b * arb, arb, i0, pre, pi + b * kc, kc,     \
                     o + b * os, os, m, first, pf, pfn);                                           \
        break;
        KX_LCASE(1)
        KX_LCASE(2)
        KX_LCASE(3)
        KX_LCASE(4)
        KX_LCASE(5)
        KX_LCASE(6)
        KX_LCASE(7)
#undef KX_LCASE
    default:
        break;
    }
}

/* The chunks: activation rows [b0, b0 + nbc) x blocks [k0, k0 + kc) fit struct kx_lpre; all
 * blocks at once unless k is so long that fewer than KX_GTB rows would fit. */
KX_INLINE void kx_lchunk(int64_t n_b, int64_t nb, int64_t *nbc, int64_t *kc) {
    *kc = nb;
    *nbc = KX_LPRE / nb < KX_LBC ? KX_LPRE / nb : KX_LBC;
    if (*nbc < KX_GTB) {
        *nbc = KX_GTB;
        *kc = KX_LPRE / KX_GTB / KX_LNS * KX_LNS;
    }
    if (*nbc > n_b) *nbc = n_b;
}

/* Over the packed copy P (quant.h): rows [r0, r1), out relative to r0. */
KX_INLINE void kx_lmatmul_packed(const uint32_t t, const int64_t k, const void *P, int64_t r0,
                                 int64_t r1, const char *a, size_t arb, int64_t n_b, float *out,
                                 int64_t os) {
    const int64_t nb = k / 32;
    struct quant_pack32_geom G;
    quant_pack32_geom(t, nb, &G);
    const size_t bq = (size_t)G.nq * 64; /* qs bytes per block */
    if (nb == 0) {                       /* k = 0: empty dots */
        for (int64_t b = 0; b < n_b; b++)
            for (int64_t r = r0; r < r1; r++)
                out[b * os + (r - r0)] = 0.0f;
        return;
    }
    struct kx_lpre pre;
    int64_t nbc0, kc0;
    kx_lchunk(n_b, nb, &nbc0, &kc0);
    for (int64_t b0 = 0; b0 < n_b; b0 += nbc0) {
        const int64_t nbc = n_b - b0 < nbc0 ? n_b - b0 : nbc0;
        const char *ab = a + b0 * arb;
        for (int64_t k0 = 0; k0 < nb; k0 += kc0) {
            const int64_t kc = nb - k0 < kc0 ? nb - k0 : kc0;
            kx_lprep(t, ab, arb, nbc, k0, kc, &pre);
            for (int64_t g = r0 / KX_G; g * KX_G < r1; g++) {
                const int64_t g0 = g * KX_G;
                const int lo = r0 > g0 ? (int)(r0 - g0) : 0;
                const int hi = r1 - g0 < KX_G ? (int)(r1 - g0) : KX_G;
                const __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
                const char *base = (const char *)P + (size_t)g * G.group;
                float *o = out + b0 * os + (g0 - r0); /* lanes below lo are masked off */
                for (int64_t i0 = k0; i0 < k0 + kc; i0 += KX_LNS) {
                    const int ns = k0 + kc - i0 < KX_LNS ? (int)(k0 + kc - i0) : KX_LNS;
                    const struct kx_l32 S = {
                        .qs = (const uint32_t *)(base + G.qs + (size_t)i0 * bq),
                        .qh = (const uint64_t *)(base + G.qh) + i0 * 8,
                        .d = (const uint16_t *)(base + G.d) + i0 * 16,
                        .m = (const uint16_t *)(base + G.m) + i0 * 16,
                    };
                    /* the next slice's quants (or the next group's first), fetched along */
                    const char *pf =
                        i0 + KX_LNS < nb ? (const char *)S.qs + (size_t)ns * bq : base + G.group;
                    kx_ltile_rows(t, &S, ns, ab, arb, nbc, i0, &pre, i0 - k0, kc, o, os, m, i0 == 0,
                                  pf, (size_t)KX_LNS * bq);
                }
            }
        }
    }
}

/* Over the original rows: each slice of 16 rows x KX_LNS blocks repacked (scalar, the portable
 * quant_pack32_slice) once per chunk of activation rows. */
KX_INLINE void kx_lmatmul(const uint32_t t, const int64_t k, const char *w, size_t wrb, int64_t n_r,
                          const char *a, size_t arb, int64_t n_b, float *out, int64_t os) {
    const int64_t nb = k / 32;
    uint32_t qs[KX_LNS * 8 * 16] __attribute__((aligned(64)));
    uint64_t qh[KX_LNS * 8] __attribute__((aligned(64)));
    uint16_t d[KX_LNS * 16] __attribute__((aligned(64))),
        mm[KX_LNS * 16] __attribute__((aligned(64)));
    const struct kx_l32 S = {.qs = qs, .qh = qh, .d = d, .m = mm};
    struct kx_lpre pre;
    int64_t nbc0, kc0;
    kx_lchunk(n_b, nb, &nbc0, &kc0);
    for (int64_t b0 = 0; b0 < n_b; b0 += nbc0) {
        const int64_t nbc = n_b - b0 < nbc0 ? n_b - b0 : nbc0;
        const char *ab = a + b0 * arb;
        for (int64_t k0 = 0; k0 < nb; k0 += kc0) {
            const int64_t kc = nb - k0 < kc0 ? nb - k0 : kc0;
            kx_lprep(t, ab, arb, nbc, k0, kc, &pre);
            for (int64_t r0 = 0; r0 < n_r; r0 += KX_G) {
                const int nr = n_r - r0 < KX_G ? (int)(n_r - r0) : KX_G;
                const __mmask16 m = (__mmask16)((1u << nr) - 1u);
                for (int64_t i0 = k0; i0 < k0 + kc; i0 += KX_LNS) {
                    const int ns = k0 + kc - i0 < KX_LNS ? (int)(k0 + kc - i0) : KX_LNS;
                    quant_pack32_slice(t, w + r0 * wrb, wrb, nr, i0, ns, qs, qh, d, mm);
                    kx_ltile_rows(t, &S, ns, ab, arb, nbc, i0, &pre, i0 - k0, kc,
                                  out + b0 * os + r0, os, m, i0 == 0, NULL, 0);
                }
            }
        }
    }
}

void quant_matmul_lanes32_avx512(uint32_t type, int64_t k, const void *W, size_t wrb, int64_t n_r,
                                 const void *act, size_t arb, int64_t n_b, float *out, int64_t os) {
    const char *w = W, *a = act;
    switch (type) {
    case REALM_TYPE_Q4_0:
        kx_lmatmul(REALM_TYPE_Q4_0, k, w, wrb, n_r, a, arb, n_b, out, os);
        break;
    case REALM_TYPE_Q4_1:
        kx_lmatmul(REALM_TYPE_Q4_1, k, w, wrb, n_r, a, arb, n_b, out, os);
        break;
    case REALM_TYPE_Q5_0:
        kx_lmatmul(REALM_TYPE_Q5_0, k, w, wrb, n_r, a, arb, n_b, out, os);
        break;
    case REALM_TYPE_Q5_1:
        kx_lmatmul(REALM_TYPE_Q5_1, k, w, wrb, n_r, a, arb, n_b, out, os);
        break;
    default:
        kx_lmatmul(REALM_TYPE_Q8_0, k, w, wrb, n_r, a, arb, n_b, out, os);
        break;
    }
}

#define KX_LPACKED(NAME, TYPE)                                                                     \
    void NAME(const struct realm_quant_ops *ops, const void *P, int64_t k, int64_t r0, int64_t r1, \
              const void *act, size_t arb, int64_t n_b, float *out, int64_t os) {                  \
        (void)ops;                                                                                 \
        kx_lmatmul_packed(TYPE, k, P, r0, r1, (const char *)act, arb, n_b, out, os);               \
    }
KX_LPACKED(quant_matmul_packed_q4_0_avx512, REALM_TYPE_Q4_0)
KX_LPACKED(quant_matmul_packed_q4_1_avx512, REALM_TYPE_Q4_1)
KX_LPACKED(quant_matmul_packed_q5_0_avx512, REALM_TYPE_Q5_0)
KX_LPACKED(quant_matmul_packed_q5_1_avx512, REALM_TYPE_Q5_1)
KX_LPACKED(quant_matmul_packed_q8_0_avx512, REALM_TYPE_Q8_0)

/* ---- entry points (declared in quant.h) ---- */

void quant_matmul_lanes_q4_K_avx512(int64_t k, const void *W, size_t wrb, int64_t n_r,
                                    const void *act, size_t arb, int64_t n_b, float *out,
                                    int64_t os) {
    kx_gmatmul(KX_Q4_K, k, (const char *)W, wrb, n_r, (const char *)act, arb, n_b, out, os);
}
void quant_matmul_lanes_q6_K_avx512(int64_t k, const void *W, size_t wrb, int64_t n_r,
                                    const void *act, size_t arb, int64_t n_b, float *out,
                                    int64_t os) {
    kx_gmatmul(KX_Q6_K, k, (const char *)W, wrb, n_r, (const char *)act, arb, n_b, out, os);
}
void quant_matmul_packed_q4_K_avx512(const struct realm_quant_ops *ops, const void *P, int64_t k,
                                     int64_t r0, int64_t r1, const void *act, size_t arb,
                                     int64_t n_b, float *out, int64_t os) {
    (void)ops;
    kx_pmatmul(KX_Q4_K, k, P, r0, r1, (const char *)act, arb, n_b, out, os);
}
void quant_matmul_packed_q6_K_avx512(const struct realm_quant_ops *ops, const void *P, int64_t k,
                                     int64_t r0, int64_t r1, const void *act, size_t arb,
                                     int64_t n_b, float *out, int64_t os) {
    (void)ops;
    kx_pmatmul(KX_Q6_K, k, P, r0, r1, (const char *)act, arb, n_b, out, os);
}
#else
typedef int quant_lanes_avx512_empty; /* not x86 (or no AVX-512 flags): nothing to build */
#endif
