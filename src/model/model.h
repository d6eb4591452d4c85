/*
 * model.h (internal) — the structs behind include/realm/model.h, shared by the files of
 * src/model/: the weights (borrowed views into the GGUF mapping, with a shape comment on every
 * pointer), the KV cache accessors, and the small kernels of ops.c.
 *
 * Shapes are written as (rows, row length): a weight (n_out, n_in) has n_out rows of n_in
 * contiguous elements — GGUF's ne = [n_in, n_out]. Thread rule: as in realm/model.h.
 */
#ifndef REALM_MODEL_INTERNAL_H
#define REALM_MODEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/kvpool.h"
#include "realm/model.h"
#include "realm/quant.h"

/* A 2-D weight matrix in any block format that has kernels. */
struct model_weight {
    const void *data;                  /* (rows, k) in `type`, borrowed from the mapping */
    const struct realm_quant_ops *ops; /* kernels for `type` */
    uint32_t type;                     /* enum realm_type */
    int64_t k;                         /* elements per row = input width */
    int64_t rows;                      /* output width */
    size_t row_bytes;
    /* A prepacked copy (realm_quant_prepack) that forward.c uses instead of data, or NULL.
     * Owned by the model (freed in realm_model_free); NULL for token_embd (and so for a tied
     * output). */
    void *packed;
};

enum model_rope_mode {
    MODEL_ROPE_NORM = 0, /* rotate adjacent pairs (x[2i], x[2i+1]) — llama */
    MODEL_ROPE_NEOX = 1, /* rotate (x[i], x[i + n_rot/2]) — qwen2, qwen3, phi3, gemma2, gemma3 */
};

struct model_layer {
    const float *attn_norm; /* (n_embd) */
    /* wq, wk, wv: separate tensors, or row ranges of one fused attn_qkv (phi3) — quantized rows
     * are independent, so a row range is a complete weight of its own */
    struct model_weight wq;      /* (n_head * head_dim, n_embd) */
    struct model_weight wk;      /* (n_head_kv * head_dim, n_embd) */
    struct model_weight wv;      /* (n_head_kv * head_dim, n_embd) */
    struct model_weight wo;      /* (n_embd, n_head * head_dim) */
    const float *bq;             /* (n_head * head_dim) or NULL — qwen2, or from attn_qkv.bias */
    const float *bk;             /* (n_head_kv * head_dim) or NULL */
    const float *bv;             /* (n_head_kv * head_dim) or NULL */
    const float *bo;             /* (n_embd) or NULL */
    const float *q_norm;         /* (head_dim) or NULL — gemma3 / qwen3 QK-norm */
    const float *k_norm;         /* (head_dim) or NULL */
    const float *post_attn_norm; /* (n_embd) or NULL — gemma2, gemma3 */
    const float *ffn_norm;       /* (n_embd) */
    /* w_gate, w_up: separate tensors, or the two halves of phi3's ffn_up (2 n_ff rows: gate
     * first, as ggml_swiglu activates the first half) */
    struct model_weight w_gate; /* (n_ff, n_embd) */
    struct model_weight w_up;   /* (n_ff, n_embd) */
    struct model_weight w_down; /* (n_embd, n_ff) */
    const float *post_ffn_norm; /* (n_embd) or NULL — gemma2, gemma3 */
    bool swa;                   /* sliding-window layer (attends to the last sliding_window keys) */
    int rope_table;             /* 0: global RoPE base, 1: local (sliding-window) base */
};

#define MODEL_MAX_ROPE_TABLES 2

struct realm_model {
    struct realm_model_config cfg;
    const struct realm_gguf *g; /* borrowed */
    enum model_rope_mode rope_mode;
    int32_t n_rot;     /* rotated dims per head (<= head_dim) */
    int n_rope_tables; /* 1, or 2 when sliding-window layers have their own base or scale (gemma) */
    double *rope_freq[MODEL_MAX_ROPE_TABLES]; /* (n_rot/2) angle per position, owned */
    /* phi3 128k (rope_factors_long / _short): table 0 is built with the short factors, and a
     * session with more than rope_long_ctx positions uses rope_freq_long instead (llama.cpp
     * picks by n_ctx_seq > n_ctx_orig_yarn). NULL / 0 otherwise. */
    double *rope_freq_long; /* (n_rot/2), owned, or NULL */
    int32_t rope_long_ctx;
    bool *swa_layers;       /* (n_layer) which layers use the sliding window, owned, or NULL */
    float rope_attn_factor; /* rope.scaling.attn_factor: multiplies cos and sin (1 if absent) */
    float attn_softcap;  /* 0: none; else scores = c * tanh(scores / c) before softmax (gemma2) */
    float q_scale;       /* multiplies q before q·k (gemma: f_attention_scale; phi3), or 1 */
    float kq_scale;      /* multiplies q·k (1/sqrt(head_dim)), or 1 for gemma and phi3 */
    float embd_scale;    /* 1, or sqrt(n_embd) for gemma */
    bool ffn_gelu;       /* GELU(tanh)-gated FFN (gemma) instead of SwiGLU */
    float final_softcap; /* 0: none; else logits = c * tanh(logits / c) */
    int64_t q_dim;       /* n_head * head_dim */
    int64_t kv_dim;      /* n_head_kv * head_dim */

    struct model_weight tok_embd; /* (n_vocab, n_embd) */
    const float *output_norm;     /* (n_embd) */
    struct model_weight output;   /* (n_vocab, n_embd); a copy of tok_embd when tied */
    struct model_layer *layers;   /* (n_layer), owned */

    float **owned; /* 1-D tensors converted to f32 at load, owned */
    int n_owned, cap_owned;
};

/* ---- KV cache of one session (kv.c): either its own contiguous arrays, or a sequence of blocks
 * in a paged pool (realm/kvpool.h). The forward pass touches the cache only through
 * model_kv_k / model_kv_v / model_kv_run. ---- */
struct realm_session {
    const struct realm_model *m;
    int32_t n_ctx;
    int32_t len;                /* tokens in the cache */
    enum realm_kv_type kv_type; /* f16 or f32 elements */
    size_t row_bytes;           /* bytes of one position's keys (= values) of one layer */
    unsigned char *k;           /* contiguous: (n_layer, n_ctx, kv_dim) in kv_type, owned */
    unsigned char *v;           /* contiguous: (n_layer, n_ctx, kv_dim) in kv_type, owned */
    struct realm_kv_seq *seq;   /* paged: the block table (owned), or NULL */
    int32_t block_tokens;       /* paged: positions per block */
};

/* Keys / values of `layer` at position `pos`: kv_dim elements of s->kv_type. */
static inline void *model_kv_k(const struct realm_session *s, int layer, int32_t pos) {
    if (s->seq) return realm_kv_seq_k(s->seq, layer, pos);
    /* 64-bit offsets: n_layer * n_ctx * kv_dim exceeds 2^31 on large models */
    return s->k + ((size_t)layer * (size_t)s->n_ctx + (size_t)pos) * s->row_bytes;
}
static inline void *model_kv_v(const struct realm_session *s, int layer, int32_t pos) {
    if (s->seq) return realm_kv_seq_v(s->seq, layer, pos);
    return s->v + ((size_t)layer * (size_t)s->n_ctx + (size_t)pos) * s->row_bytes;
}
/* Positions from pos on that sit in one run of rows row_bytes apart (the rest of pos's block, or
 * the whole cache when contiguous), capped at `want`. */
static inline int32_t model_kv_run(const struct realm_session *s, int32_t pos, int32_t want) {
    if (!s->seq) return want;
    const int32_t left = s->block_tokens - pos % s->block_tokens;
    return left < want ? left : want;
}

/* ---- small kernels (ops.c, ops_avx2.c) ---- */
struct model_kernels {
    const char *name;
    /* out[j] = x · row_j for j < ny; rows of n f16 or f32 elements, `stride` elements apart. Every
     * variant sums in one canonical order per dot (see ops_avx2.c), so a dot gives the same bits
     * whichever way the rows are grouped: attention results do not depend on batching. */
    void (*dot_many)(const float *x, const void *rows, int64_t stride, bool f16, int ny, int64_t n,
                     float *out);
    /* o[0..n) = sum_j p[j] * row_j (acc: o[0..n) += ...), one chain per column in ascending j: rows
     * summed over several calls with acc give the same bits as one call (paged KV runs) */
    void (*wsum_rows)(float *o, const float *p, const void *rows, int64_t stride, bool f16, int ny,
                      int64_t n, bool acc);
    void (*to_f16)(const float *x, uint16_t *y, int64_t n);
    void (*f16_to_f32)(const uint16_t *x, float *y, int64_t n);
    void (*silu_mul)(float *g, const float *u, int64_t n); /* g = silu(g) * u */
    void (*gelu_mul)(float *g, const float *u, int64_t n); /* g = gelu_tanh(g) * u */
    void (*scale)(float *y, float s, int64_t n);
    double (*exp_sum)(float *s, int64_t n, float mx); /* s = exp(s - mx); returns sum */
    void (*round_f16)(float *x, int64_t n);           /* x = f32(f16(x)) */
};

/* The kernels for the ISA realm_quant_isa() selected (REALM_ISA=scalar forces the scalar ones).
 * Lifetime: static. */
const struct model_kernels *model_kernels_get(void);
const struct model_kernels *model_kernels_scalar(void);
const struct model_kernels *model_kernels_avx2(void); /* NULL if not compiled in */

/* out = x / sqrt(mean(x^2) + eps) * w (w may be NULL: no weight); sum in double as ggml does. */
void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

#endif
