/*
 * forward.c — the engine and the batched forward pass.
 *
 * One realm_engine_forward call runs n rows (tokens of one or more sessions, each at its own
 * position) through the transformer in a single parallel task: every thread of the pool walks the
 * same sequence of labelled steps below and meets the others at a barrier where a step needs the
 * complete output of the previous one (llama.cpp's graph-compute pattern, without a graph). Work
 * inside a step is split by output rows of the weight matrices, so each weight byte is read once
 * per step for all n rows (realm_quant_matmul does the row × batch loop).
 *
 * Per layer (llama / qwen2 / qwen3 / phi3 / gemma2 / gemma3; phi3's fused attn_qkv and ffn_up are
 * row ranges of one tensor, model.c, so they run as separate weights here):
 *   xb = rmsnorm(x) * attn_norm                      (every thread, or rows split when n is large)
 *   q, k, v = xb Wq, xb Wk, xb Wv (+ bias)           split by heads; the same thread then applies
 *   [QK-norm], RoPE, q *= scale, K/V → cache (f16)   its heads' QK-norm, RoPE and cache writes
 *   ---- barrier
 *   att = softmax([softcap](q K^T) * scale) V        per (block of <= 8 rows of a session, head),
 *                                                    units claimed from an atomic counter
 *   ---- barrier  (last layer: only the rows that want logits or embd go on)
 *   x += [post_norm](att Wo)                         split by output rows
 *   ---- barrier
 *   xb = rmsnorm(x) * ffn_norm; h = act(xb Wgate) * (xb Wup)      split by FFN rows
 *   ---- barrier
 *   x += [post_norm](h Wdown)                        split by output rows
 *   ---- barrier
 * then h = rmsnorm(x) * output_norm (copied out for the rows that asked for their hidden state)
 * and logits = h Wout for the rows that asked for them, split by vocabulary rows.
 *
 * Activations are quantized once per step into the weight's vec_dot_type (Q8_0 / Q8_K, or used
 * as f32). With few rows (decode) every thread prepares them itself into private buffers, which
 * costs less than the barrier it saves; with many rows (prefill) the rows are split.
 *
 * Owns: the pool and every scratch buffer (sized at creation for max_batch rows: no allocation
 * inside a step). Thread rule: one caller at a time per engine.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "model/model.h"
#include "realm/alloc.h"
#include "realm/threadpool.h"
#include "realm/types.h"

#define PRIVATE_ROWS 4 /* up to this many rows, each thread prepares activations itself */
#define ACT_SLOTS 3    /* distinct activation formats one step may need (q, k, v weights) */
#define LOGIT_TILE 64  /* vocabulary rows per output tile when several rows want logits */
#define ATT_BLOCK 8    /* rows of one session that share an attention unit (prefill) */
#define MAX_BATCH (1 << 16)

/* Activation rows ready for projections, in up to ACT_SLOTS formats. */
struct act {
    int n;
    uint32_t type[ACT_SLOTS];
    const void *data[ACT_SLOTS];
    size_t row_bytes[ACT_SLOTS];
};

struct thread_buf {
    float *xb;            /* (PRIVATE_ROWS, max_k) normalised rows, private preparation */
    void *act[ACT_SLOTS]; /* (PRIVATE_ROWS, act_row_max) quantized rows */
    float *logits;        /* (max_batch, LOGIT_TILE) output tile */
    float *scores;        /* (ATT_BLOCK, n_ctx_train) attention scores of one unit */
    float *q;             /* (ATT_BLOCK, head_dim) the queries of one unit */
    float *kbuf;          /* (head_dim) one key in f32 */
};

struct realm_engine {
    const struct realm_model *m;
    const struct model_kernels *kern;
    struct realm_threadpool *pool;
    int nth;
    int32_t max_batch;
    int64_t max_k;      /* widest activation row: max(n_embd, q_dim, n_ff) */
    int64_t qkv_dim;    /* q_dim + 2 kv_dim */
    size_t act_row_max; /* bytes of the widest quantized activation row */

    float *x;             /* (max_batch, n_embd) residual stream */
    float *xb;            /* (max_batch, max_k) normalised rows, shared preparation */
    float *qkv;           /* (max_batch, q_dim + 2 kv_dim) q | k | v per row */
    float *att;           /* (max_batch, q_dim) attention output */
    float *tmp;           /* (max_batch, n_embd) projection output before the residual add */
    float *hb;            /* (max_batch, n_ff) FFN gate, then the gated activation */
    float *hb2;           /* (max_batch, n_ff) FFN up */
    void *act[ACT_SLOTS]; /* (max_batch, act_row_max) quantized rows, shared preparation */
    float *rope;          /* (max_batch, n_rope_tables, n_rot/2, 2) cos, sin per row */
    int32_t *pos;         /* (max_batch) position of each row in its session */
    int32_t *out_rows;    /* (max_batch) indices of the rows that want logits or embd */
    int32_t *lg_rows;     /* (max_batch) positions in out_rows of the rows that want logits */
    int32_t *blk_b0;      /* (max_batch) attention blocks: first row ... */
    int32_t *blk_n;       /* (max_batch) ... and row count (<= ATT_BLOCK, one session) */
    struct realm_session **runs; /* (max_batch) sessions seen, for validation */
    struct thread_buf *tb;       /* (nth) */
    _Atomic int *attn_next;      /* (n_layer) next attention unit to claim */

    /* the call in progress */
    const struct realm_batch_row *rows;
    int32_t n_rows;
    int32_t n_out;
    int32_t n_lg;        /* rows that want logits (a subset of the n_out output rows) */
    int32_t n_embd_rows; /* rows that want their hidden state */
    int32_t n_blk;
};

/* ---- helpers ---- */

static inline float *rope_row(const struct realm_engine *e, int64_t b, int t) {
    const struct realm_model *m = e->m;
    return e->rope + ((b * m->n_rope_tables + t) * (m->n_rot / 2)) * 2;
}

/* Rotates one head in place by the angles of its row (cs: cos, sin per pair). */
static void rope_apply(const struct realm_model *m, float *v, const float *cs) {
    const int64_t half = m->n_rot / 2;
    if (m->rope_mode == MODEL_ROPE_NORM) {
        for (int64_t i = 0; i < half; i++) {
            const float x0 = v[2 * i], x1 = v[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
            v[2 * i] = x0 * c - x1 * s;
            v[2 * i + 1] = x0 * s + x1 * c;
        }
    } else {
        for (int64_t i = 0; i < half; i++) {
            const float x0 = v[i], x1 = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
            v[i] = x0 * c - x1 * s;
            v[i + half] = x0 * s + x1 * c;
        }
    }
}

/* Writes n floats at element offset `off` of a KV cache row, in the session's element type. */
static inline void kv_store(const struct model_kernels *K, const struct realm_session *s, void *row,
                            int64_t off, const float *x, int64_t n) {
    if (s->kv_type == REALM_KV_F32)
        memcpy((float *)row + off, x, (size_t)n * sizeof(float));
    else
        K->to_f16(x, (uint16_t *)row + off, n);
}

static inline void add_vec(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* Makes n rows of src (row i at src + i * stride, k wide) ready for the weights
 * ws[0..nw): RMSNorm'ed with `norm` if not NULL, then quantized into each distinct vec_dot_type
 * (f32 activations are used in place). Few rows: every thread prepares all rows privately and
 * no barrier is needed; many rows: rows are split across threads, then a barrier. */
static void prep(struct realm_engine *e, int ith, int nth, const float *src, int64_t stride,
                 int32_t n, int64_t k, const float *norm, const struct model_weight *const *ws,
                 int nw, struct act *a) {
    const bool priv = n <= PRIVATE_ROWS;
    float *xb = priv ? e->tb[ith].xb : e->xb;
    void *const *slots = priv ? e->tb[ith].act : e->act;
    const bool copy = norm != NULL; /* float rows live in xb (compact) rather than in src */
    const struct realm_quant_ops *qops[ACT_SLOTS];
    a->n = 0;
    for (int i = 0; i < nw; i++) {
        const uint32_t t = ws[i]->ops->vec_dot_type;
        int j = 0;
        while (j < a->n && a->type[j] != t)
            j++;
        if (j < a->n) continue;
        a->type[j] = t;
        if (t == REALM_TYPE_F32) {
            a->data[j] = copy ? xb : src;
            a->row_bytes[j] = (size_t)(copy ? k : stride) * sizeof(float);
            qops[j] = NULL;
        } else {
            a->data[j] = slots[j];
            a->row_bytes[j] = realm_type_row_size(t, k);
            qops[j] = realm_quant_ops(t);
        }
        a->n++;
    }
    int64_t r0 = 0, r1 = n;
    if (!priv) realm_split(n, ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const float *s = src + r * stride;
        float *d = xb + r * k;
        if (norm) model_rmsnorm(d, s, norm, k, e->m->cfg.norm_eps);
        const float *f = copy ? d : s;
        for (int j = 0; j < a->n; j++)
            if (qops[j]) qops[j]->quantize_row(f, (char *)slots[j] + r * a->row_bytes[j], k);
    }
    if (!priv) realm_threadpool_barrier(e->pool);
}

/* out[b * out_stride + (r - r0)] = W row r · activation row b, for r in [r0, r1), b in [0, n);
 * from the prepacked copy when the model made one (output rows: any split works, 16-row aligned
 * ranges waste nothing). */
static void matmul_rel(const struct model_weight *w, int64_t r0, int64_t r1, const struct act *a,
                       int32_t n, float *out, int64_t out_stride) {
    if (r1 <= r0 || n <= 0) return;
    int j = 0;
    while (a->type[j] != w->ops->vec_dot_type)
        j++; /* prep() was given this weight */
    if (w->packed)
        realm_quant_matmul_packed(w->ops, w->packed, w->k, r0, r1, a->data[j], a->row_bytes[j], n,
                                  out, out_stride);
    else
        realm_quant_matmul(w->ops, (const char *)w->data + (size_t)r0 * w->row_bytes, w->row_bytes,
                           w->k, 0, r1 - r0, a->data[j], a->row_bytes[j], n, out, out_stride);
}

/* out[b * out_stride + r] = W row r · activation row b, for r in [r0, r1), b in [0, n). */
static void matmul(const struct model_weight *w, int64_t r0, int64_t r1, const struct act *a,
                   int32_t n, float *out, int64_t out_stride) {
    if (r1 <= r0 || n <= 0) return;
    matmul_rel(w, r0, r1, a, n, out + r0, out_stride);
}

/* x += [rmsnorm(.) * post_norm](a W + bias): this thread computes output rows [r0, r1). Without a
 * post-norm the residual add is done by the same thread; with one (gemma3) it needs complete
 * rows, so it runs after a barrier, split by batch rows. Ends with a barrier. */
static void residual_proj(struct realm_engine *e, int ith, int nth, int32_t n,
                          const struct model_weight *w, const struct act *a, const float *bias,
                          const float *post_norm) {
    const int64_t E = e->m->cfg.n_embd;
    int64_t r0, r1;
    realm_split(E, ith, nth, 16, &r0, &r1);
    matmul(w, r0, r1, a, n, e->tmp, E);
    if (!post_norm) {
        for (int64_t b = 0; b < n; b++) {
            float *x = e->x + b * E, *t = e->tmp + b * E;
            if (bias)
                for (int64_t r = r0; r < r1; r++)
                    x[r] += t[r] + bias[r];
            else
                for (int64_t r = r0; r < r1; r++)
                    x[r] += t[r];
        }
        realm_threadpool_barrier(e->pool);
        return;
    }
    if (bias)
        for (int64_t b = 0; b < n; b++)
            add_vec(e->tmp + b * E + r0, bias + r0, r1 - r0);
    realm_threadpool_barrier(e->pool);
    int64_t b0, b1;
    realm_split(n, ith, nth, 1, &b0, &b1);
    for (int64_t b = b0; b < b1; b++) {
        float *t = e->tmp + b * E;
        model_rmsnorm(t, t, post_norm, E, e->m->cfg.norm_eps);
        add_vec(e->x + b * E, t, E);
    }
    realm_threadpool_barrier(e->pool);
}

/* y = c * tanh(y / c), as ggml computes it: scale by 1/c, tanh, scale by c (gemma2 attention
 * scores, gemma final logits). */
static void softcap(float *y, int64_t n, float c) {
    const float inv = 1.0f / c;
    for (int64_t i = 0; i < n; i++)
        y[i] = tanhf(y[i] * inv) * c;
}

/* Attention of one unit: query head h of the rows [b0, b0 + nb) — consecutive positions of one
 * session — over the keys each row may see ([start, pos]: causal, sliding window on swa layers).
 *
 * Numerics with an f16 cache follow llama.cpp's default (non flash-attention) path, because logits
 * parity depends on them: q rounded to f16, s = (q · k) * kq_scale in f32, softmax in f32 (sum in
 * double), probabilities rounded to f16, values accumulated in f32. An f32 cache keeps q and the
 * probabilities in f32.
 *
 * A block of rows converts each key once and meets all its queries (dot_many over the queries);
 * a single row (decode) runs dot_many over the keys. Both sum every dot in the same order, and the
 * softmax and value sums are per row, so a row's output does not depend on how rows are grouped.
 * Scratch: `scores` (ATT_BLOCK x n_ctx), `qbuf` (ATT_BLOCK x head_dim), `kbuf` (head_dim). */
static void attend(struct realm_engine *e, int il, bool swa, int32_t b0, int32_t nb, int32_t h,
                   struct thread_buf *tb) {
    const struct realm_model *m = e->m;
    const struct model_kernels *K = e->kern;
    const int64_t HD = m->cfg.head_dim, kv_stride = m->kv_dim;
    const int64_t koff =
        (int64_t)(h / (m->cfg.n_head / m->cfg.n_head_kv)) * HD; /* kv head offset */
    const struct realm_session *s = e->rows[b0].session;
    const bool f16 = s->kv_type == REALM_KV_F16;
    const int32_t window = swa ? m->cfg.sliding_window : 0;
#define ROW_START(p) (window > 0 && (p) >= window ? (p)-window + 1 : 0) /* p - j < n_swa */
    const int32_t p0 = e->pos[b0], p_last = e->pos[b0 + nb - 1], k0 = ROW_START(p0);
    const int64_t n_keys = p_last + 1 - k0;
    float *q = tb->q;
    for (int32_t i = 0; i < nb; i++) {
        memcpy(q + i * HD, e->qkv + (b0 + i) * e->qkv_dim + h * HD, (size_t)HD * sizeof(float));
        if (f16) K->round_f16(q + i * HD, HD);
    }
    /* keys and values of this kv head at position j: row j of a run of rows kv_dim elements
     * apart — the whole cache when contiguous, one block's worth when paged (model_kv_run) */
    const size_t elt = f16 ? 2 : 4, hoff = (size_t)koff * elt;

    /* 1. scores S[i][j - k0] = q_i · k_j */
    float *S = tb->scores; /* (nb, n_keys) */
    if (nb == 1) {
        for (int32_t j = k0, r; j <= p_last; j += r) {
            r = model_kv_run(s, j, p_last + 1 - j);
            K->dot_many(q, (const char *)model_kv_k(s, il, j) + hoff, kv_stride, f16, (int)r, HD,
                        S + (j - k0));
        }
    } else {
        float *kf = tb->kbuf, col[ATT_BLOCK];
        for (int32_t j = k0; j <= p_last; j++) {
            const char *kr = (const char *)model_kv_k(s, il, j) + hoff;
            if (f16)
                K->f16_to_f32((const uint16_t *)kr, kf, HD);
            else
                memcpy(kf, kr, (size_t)HD * sizeof(float));
            K->dot_many(kf, q, HD, false, nb, HD, col);
            for (int32_t i = 0; i < nb; i++)
                S[i * n_keys + (j - k0)] = col[i];
        }
    }
    /* 2. per row: softmax over its own keys, then the weighted sum of their values (run by run:
     *    wsum_rows accumulates in the same order, so the bits do not depend on the layout) */
    for (int32_t i = 0; i < nb; i++) {
        const int32_t p = p0 + i, st = ROW_START(p);
        const int64_t n = p + 1 - st;
        float *sr = S + i * n_keys + (st - k0);
        if (m->attn_softcap > 0) softcap(sr, n, m->attn_softcap); /* gemma2: before kq_scale */
        K->scale(sr, m->kq_scale, n);
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++)
            mx = sr[j] > mx ? sr[j] : mx;
        K->scale(sr, (float)(1.0 / K->exp_sum(sr, n, mx)), n);
        if (f16) K->round_f16(sr, n);
        float *o = e->att + (b0 + i) * m->q_dim + h * HD;
        for (int32_t j = st, r; j <= p; j += r) {
            r = model_kv_run(s, j, p + 1 - j);
            K->wsum_rows(o, sr + (j - st), (const char *)model_kv_v(s, il, j) + hoff, kv_stride,
                         f16, (int)r, HD, j > st);
        }
    }
#undef ROW_START
}

/* ---- the forward pass (runs on every thread of the pool) ----
 *
 * Each step below is called by every thread with the same arguments and ends with the barrier
 * its output needs (or says why it has none); the worker at the end reads as the recipe. */

/* What one thread carries from step to step. */
struct fw {
    struct realm_engine *e;
    int ith, nth;
    int32_t n;      /* rows still computed: all, then in the last layer only those with logits */
    int64_t u0, u1; /* this thread's q/k/v heads (step_qkv → step_rope_store) */
    struct act a;   /* the activations of the current step */
};

/* 1. token embeddings (x[b] = tok_embd[token] * embd_scale) and the RoPE cos/sin of each row's
 *    position (times rope.scaling.attn_factor, as ggml's mscale), computed in double once for all
 *    layers; rows split. */
static void step_embed(struct fw *f) {
    struct realm_engine *e = f->e;
    const struct realm_model *m = e->m;
    const int64_t E = m->cfg.n_embd, half = m->n_rot / 2;
    int64_t r0, r1;
    realm_split(f->n, f->ith, f->nth, 1, &r0, &r1);
    for (int64_t b = r0; b < r1; b++) {
        const int32_t tok = e->rows[b].token;
        m->tok_embd.ops->dequantize_row(
            (const char *)m->tok_embd.data + (size_t)tok * m->tok_embd.row_bytes, e->x + b * E, E);
        if (m->embd_scale != 1.0f) e->kern->scale(e->x + b * E, m->embd_scale, E);
        /* phi3 128k: sessions longer than the original context take the long factors */
        const bool lng = m->rope_freq_long && e->rows[b].session->n_ctx > m->rope_long_ctx;
        for (int t = 0; t < m->n_rope_tables; t++) {
            float *cs = rope_row(e, b, t);
            const double *fr = t == 0 && lng ? m->rope_freq_long : m->rope_freq[t];
            for (int64_t i = 0; i < half; i++) {
                const double th = (double)e->pos[b] * fr[i];
                cs[2 * i] = (float)cos(th) * m->rope_attn_factor;
                cs[2 * i + 1] = (float)sin(th) * m->rope_attn_factor;
            }
        }
    }
    realm_threadpool_barrier(e->pool);
}

/* 2. attention norm, then the q, k, v projections split by heads: unit u < HQ is query head u,
 *    then the HK key heads, then the HK value heads (their rows sit in that order in qkv). No
 *    barrier: the same thread finishes its heads in step_rope_store. */
static void step_qkv(struct fw *f, const struct model_layer *L) {
    struct realm_engine *e = f->e;
    const struct realm_model *m = e->m;
    const int64_t E = m->cfg.n_embd, HD = m->cfg.head_dim, HQ = m->cfg.n_head,
                  HK = m->cfg.n_head_kv;
    const int64_t Q = m->q_dim, KV = m->kv_dim, QKV = e->qkv_dim;
    const struct model_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
    prep(e, f->ith, f->nth, e->x, E, f->n, E, L->attn_norm, wqkv, 3, &f->a);
    realm_split(HQ + 2 * HK, f->ith, f->nth, 1, &f->u0, &f->u1);
    const int64_t u0 = f->u0, u1 = f->u1;
#define CLAMP(v, lo, hi) ((v) < (lo) ? (lo) : (v) > (hi) ? (hi) : (v))
    matmul(&L->wq, CLAMP(u0, 0, HQ) * HD, CLAMP(u1, 0, HQ) * HD, &f->a, f->n, e->qkv, QKV);
    matmul(&L->wk, CLAMP(u0 - HQ, 0, HK) * HD, CLAMP(u1 - HQ, 0, HK) * HD, &f->a, f->n, e->qkv + Q,
           QKV);
    matmul(&L->wv, CLAMP(u0 - HQ - HK, 0, HK) * HD, CLAMP(u1 - HQ - HK, 0, HK) * HD, &f->a, f->n,
           e->qkv + Q + KV, QKV);
#undef CLAMP
}

/* 3. on this thread's heads: bias, QK-norm, RoPE, q scaling, and the new keys and values into
 *    the cache. Barrier: attention reads every head of every row. */
static void step_rope_store(struct fw *f, const struct model_layer *L, int il) {
    struct realm_engine *e = f->e;
    const struct realm_model *m = e->m;
    const struct realm_model_config *c = &m->cfg;
    const struct model_kernels *K = e->kern;
    const int64_t HD = c->head_dim, HQ = c->n_head, HK = c->n_head_kv, QKV = e->qkv_dim;
    for (int64_t b = 0; b < f->n; b++) {
        struct realm_session *s = e->rows[b].session;
        const int32_t p = e->pos[b];
        const float *cs = rope_row(e, b, L->rope_table);
        for (int64_t u = f->u0; u < f->u1; u++) {
            float *v = e->qkv + b * QKV + u * HD; /* (HD) this head of this row */
            if (u < HQ) {
                if (L->bq) add_vec(v, L->bq + u * HD, HD);
                if (L->q_norm) model_rmsnorm(v, v, L->q_norm, HD, c->norm_eps);
                rope_apply(m, v, cs);
                if (m->q_scale != 1.0f) K->scale(v, m->q_scale, HD);
            } else if (u < HQ + HK) {
                const int64_t h = u - HQ;
                if (L->bk) add_vec(v, L->bk + h * HD, HD);
                if (L->k_norm) model_rmsnorm(v, v, L->k_norm, HD, c->norm_eps);
                rope_apply(m, v, cs);
                kv_store(K, s, model_kv_k(s, il, p), h * HD, v, HD);
            } else {
                const int64_t h = u - HQ - HK;
                if (L->bv) add_vec(v, L->bv + h * HD, HD);
                kv_store(K, s, model_kv_v(s, il, p), h * HD, v, HD);
            }
        }
    }
    realm_threadpool_barrier(e->pool);
}

/* 4. attention per (block of rows, query head), units claimed dynamically: later rows of a
 *    prefill attend to more keys, so a static split would be unbalanced. Barrier: the output
 *    projection reads whole rows. */
static void step_attention(struct fw *f, const struct model_layer *L, int il) {
    struct realm_engine *e = f->e;
    const int32_t HQ = (int32_t)e->m->cfg.n_head;
    for (;;) {
        const int u = atomic_fetch_add_explicit(&e->attn_next[il], 1, memory_order_relaxed);
        if (u >= e->n_blk * HQ) break;
        const int32_t blk = u / HQ;
        attend(e, il, L->swa, e->blk_b0[blk], e->blk_n[blk], u % HQ, &e->tb[f->ith]);
    }
    realm_threadpool_barrier(e->pool);
}

/* 4b. last layer: every key and value is in the cache now, and only the rows that want logits or
 *     their hidden state go on (llama.cpp's inp_out_ids): move them to the front (row j <-
 *     out_rows[j], increasing, so one thread can copy in place). Returns false when no row wants
 *     either (every thread sees the same and stops: no barrier is left to meet). */
static bool step_keep_logit_rows(struct fw *f) {
    struct realm_engine *e = f->e;
    const int64_t Q = e->m->q_dim, E = e->m->cfg.n_embd;
    if (e->n_out == f->n) return true;
    if (f->ith == 0)
        for (int32_t j = 0; j < e->n_out; j++) {
            const int32_t src = e->out_rows[j];
            if (src == j) continue;
            memcpy(e->att + j * Q, e->att + (int64_t)src * Q, (size_t)Q * sizeof(float));
            memcpy(e->x + j * E, e->x + (int64_t)src * E, (size_t)E * sizeof(float));
        }
    f->n = e->n_out;
    if (f->n == 0) return false;
    realm_threadpool_barrier(e->pool);
    return true;
}

/* 5. output projection and residual: x += [post_attn_norm](att Wo + bo); residual_proj ends with
 *    the barrier. */
static void step_attn_out(struct fw *f, const struct model_layer *L) {
    struct realm_engine *e = f->e;
    const int64_t Q = e->m->q_dim;
    const struct model_weight *wo[1] = {&L->wo};
    prep(e, f->ith, f->nth, e->att, Q, f->n, Q, NULL, wo, 1, &f->a);
    residual_proj(e, f->ith, f->nth, f->n, &L->wo, &f->a, L->bo, L->post_attn_norm);
}

/* 6. FFN: hb = act(xb Wgate) * (xb Wup), split by FFN rows (SiLU, or GELU for gemma), barrier,
 *    then x += [post_ffn_norm](hb Wdown) (residual_proj ends with the barrier). */
static void step_ffn(struct fw *f, const struct model_layer *L) {
    struct realm_engine *e = f->e;
    const struct realm_model *m = e->m;
    const int64_t E = m->cfg.n_embd, F = m->cfg.n_ff;
    const struct model_weight *wgu[2] = {&L->w_gate, &L->w_up};
    prep(e, f->ith, f->nth, e->x, E, f->n, E, L->ffn_norm, wgu, 2, &f->a);
    int64_t r0, r1;
    realm_split(F, f->ith, f->nth, 16, &r0, &r1);
    matmul(&L->w_gate, r0, r1, &f->a, f->n, e->hb, F);
    matmul(&L->w_up, r0, r1, &f->a, f->n, e->hb2, F);
    for (int64_t b = 0; b < f->n && r1 > r0; b++) {
        if (m->ffn_gelu)
            e->kern->gelu_mul(e->hb + b * F + r0, e->hb2 + b * F + r0, r1 - r0);
        else
            e->kern->silu_mul(e->hb + b * F + r0, e->hb2 + b * F + r0, r1 - r0);
    }
    realm_threadpool_barrier(e->pool);
    const struct model_weight *wd[1] = {&L->w_down};
    prep(e, f->ith, f->nth, e->hb, F, f->n, F, NULL, wd, 1, &f->a);
    residual_proj(e, f->ith, f->nth, f->n, &L->w_down, &f->a, NULL, L->post_ffn_norm);
}

/* 7a. the hidden states after the final norm (rows 0..n_out-1, normalised into xb by prep: the
 *     thread's own copy of every row when prep ran privately, else the shared one after its
 *     barrier) to the rows that asked for them, rows split. */
static void copy_hidden(struct fw *f, const float *xb) {
    struct realm_engine *e = f->e;
    const int64_t E = e->m->cfg.n_embd;
    int64_t r0, r1;
    realm_split(e->n_out, f->ith, f->nth, 1, &r0, &r1);
    for (int64_t j = r0; j < r1; j++) {
        float *dst = e->rows[e->out_rows[j]].embd;
        if (dst) memcpy(dst, xb + j * E, (size_t)E * sizeof(float));
    }
}

/* 7b. rows that want only their hidden state are dropped before the classifier: the prepared
 *     activation rows of the logit rows move to the front (lg_rows increasing, so in place). The
 *     shared buffers are rewritten by one thread between barriers (the first also ends
 *     copy_hidden's reads); private ones by each thread alone. */
static void keep_logit_acts(struct fw *f, bool priv) {
    struct realm_engine *e = f->e;
    if (!priv) realm_threadpool_barrier(e->pool);
    if (priv || f->ith == 0)
        for (int s = 0; s < f->a.n; s++) {
            char *base = (char *)(uintptr_t)f->a.data[s];
            const size_t rb = f->a.row_bytes[s];
            for (int32_t j = 0; j < e->n_lg; j++)
                if (e->lg_rows[j] != j)
                    memmove(base + (size_t)j * rb, base + (size_t)e->lg_rows[j] * rb, rb);
        }
    if (!priv) realm_threadpool_barrier(e->pool);
}

/* 7. final norm, the hidden states out, then the classifier for the rows that want logits, split
 *    by vocabulary rows; one row writes straight into its logits, several go through a tile so
 *    each weight row is read once for all of them. The last step: no barrier at the end. */
static void step_logits(struct fw *f) {
    struct realm_engine *e = f->e;
    const struct realm_model *m = e->m;
    const int32_t n_out = e->n_out, n_lg = e->n_lg;
    if (n_out == 0) return;
    const struct model_weight *wout[1] = {&m->output};
    prep(e, f->ith, f->nth, e->x, m->cfg.n_embd, n_out, m->cfg.n_embd, m->output_norm, wout, 1,
         &f->a);
    const bool priv = n_out <= PRIVATE_ROWS; /* as prep decided */
    if (e->n_embd_rows > 0) copy_hidden(f, priv ? e->tb[f->ith].xb : e->xb);
    if (n_lg == 0) return;
    if (n_lg < n_out) keep_logit_acts(f, priv); /* some rows want only their hidden state */
#define LOGITS_OF(j) (e->rows[e->out_rows[e->lg_rows[j]]].logits)
    int64_t r0, r1;
    realm_split(m->cfg.n_vocab, f->ith, f->nth, 64, &r0, &r1);
    if (n_lg == 1) {
        float *lg = LOGITS_OF(0);
        matmul(&m->output, r0, r1, &f->a, 1, lg, 0);
        if (m->final_softcap > 0) softcap(lg + r0, r1 - r0, m->final_softcap);
        return;
    }
    float *tile = e->tb[f->ith].logits; /* (n_lg, LOGIT_TILE) */
    for (int64_t t0 = r0; t0 < r1; t0 += LOGIT_TILE) {
        const int64_t nt = r1 - t0 < LOGIT_TILE ? r1 - t0 : LOGIT_TILE;
        matmul_rel(&m->output, t0, t0 + nt, &f->a, n_lg, tile, LOGIT_TILE);
        for (int32_t j = 0; j < n_lg; j++) {
            float *lg = LOGITS_OF(j) + t0;
            memcpy(lg, tile + (int64_t)j * LOGIT_TILE, (size_t)nt * sizeof(float));
            if (m->final_softcap > 0) softcap(lg, nt, m->final_softcap);
        }
    }
#undef LOGITS_OF
}

static void forward_worker(void *arg, int ith, int nth) {
    struct fw f = {.e = arg, .ith = ith, .nth = nth, .n = ((struct realm_engine *)arg)->n_rows};
    const struct realm_model *m = f.e->m;
    step_embed(&f);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const struct model_layer *L = &m->layers[il];
        step_qkv(&f, L);
        step_rope_store(&f, L, il);
        step_attention(&f, L, il);
        if (il == m->cfg.n_layer - 1 && !step_keep_logit_rows(&f)) return;
        step_attn_out(&f, L);
        step_ffn(&f, L);
    }
    step_logits(&f);
}

/* ---- engine ---- */

static void *alloc_f(size_t n_floats, int *fail) {
    void *p = realm_malloc_aligned(64, n_floats * sizeof(float) + 64);
    if (!p) *fail = 1;
    return p;
}

static void max_act(size_t *mx, const struct model_weight *w) {
    if (w->ops->vec_dot_type == REALM_TYPE_F32) return;
    size_t rb = realm_type_row_size(w->ops->vec_dot_type, w->k);
    if (rb > *mx) *mx = rb;
}

int realm_engine_new(const struct realm_model *m, int n_threads, int32_t max_batch,
                     struct realm_engine **out, struct realm_err *err) {
    if (!m || !out) return realm_err_set(err, REALM_E_INVALID, "engine: NULL argument");
    if (max_batch < 1 || max_batch > MAX_BATCH)
        return realm_err_set(err, REALM_E_INVALID, "engine: max_batch %d, expected 1..%d",
                             max_batch, MAX_BATCH);
    const struct realm_model_config *c = &m->cfg;
    struct realm_engine *e = realm_calloc(1, sizeof *e);
    if (!e) return realm_err_set(err, REALM_E_NOMEM, "engine: out of memory");
    e->m = m;
    e->kern = model_kernels_get();
    e->max_batch = max_batch;
    int rc = realm_threadpool_new(n_threads, &e->pool, err);
    if (rc) {
        realm_free(e);
        return rc;
    }
    e->nth = realm_threadpool_n_threads(e->pool);
    const int64_t B = max_batch, E = c->n_embd, F = c->n_ff;
    e->max_k = E > m->q_dim ? E : m->q_dim;
    if (F > e->max_k) e->max_k = F;
    e->qkv_dim = m->q_dim + 2 * m->kv_dim;
    size_t arm = 0;
    for (int il = 0; il < c->n_layer; il++) {
        const struct model_layer *L = &m->layers[il];
        max_act(&arm, &L->wq), max_act(&arm, &L->wk), max_act(&arm, &L->wv), max_act(&arm, &L->wo);
        max_act(&arm, &L->w_gate), max_act(&arm, &L->w_up), max_act(&arm, &L->w_down);
    }
    max_act(&arm, &m->output);
    e->act_row_max = arm;

    int fail = 0;
    e->x = alloc_f((size_t)(B * E), &fail);
    e->xb = alloc_f((size_t)(B * e->max_k), &fail);
    e->qkv = alloc_f((size_t)(B * e->qkv_dim), &fail);
    e->att = alloc_f((size_t)(B * m->q_dim), &fail);
    e->tmp = alloc_f((size_t)(B * E), &fail);
    e->hb = alloc_f((size_t)(B * F), &fail);
    e->hb2 = alloc_f((size_t)(B * F), &fail);
    for (int j = 0; j < ACT_SLOTS; j++) {
        e->act[j] = realm_malloc_aligned(64, (size_t)B * arm + 64);
        if (!e->act[j]) fail = 1;
    }
    e->rope = alloc_f((size_t)(B * m->n_rope_tables * m->n_rot), &fail);
    e->pos = realm_malloc((size_t)B * sizeof(int32_t));
    e->out_rows = realm_malloc((size_t)B * sizeof(int32_t));
    e->lg_rows = realm_malloc((size_t)B * sizeof(int32_t));
    e->blk_b0 = realm_malloc((size_t)B * sizeof(int32_t));
    e->blk_n = realm_malloc((size_t)B * sizeof(int32_t));
    e->runs = realm_malloc((size_t)B * sizeof(*e->runs));
    e->attn_next = realm_malloc((size_t)c->n_layer * sizeof(*e->attn_next));
    e->tb = realm_calloc((size_t)e->nth, sizeof *e->tb);
    if (!e->pos || !e->out_rows || !e->lg_rows || !e->blk_b0 || !e->blk_n || !e->runs ||
        !e->attn_next || !e->tb)
        fail = 1;
    for (int t = 0; !fail && t < e->nth; t++) {
        struct thread_buf *tb = &e->tb[t];
        tb->xb = alloc_f((size_t)(PRIVATE_ROWS * e->max_k), &fail);
        for (int j = 0; j < ACT_SLOTS; j++) {
            tb->act[j] = realm_malloc_aligned(64, PRIVATE_ROWS * arm + 64);
            if (!tb->act[j]) fail = 1;
        }
        tb->logits = alloc_f((size_t)(B * LOGIT_TILE), &fail);
        tb->scores = alloc_f((size_t)ATT_BLOCK * (size_t)c->n_ctx_train, &fail);
        tb->q = alloc_f((size_t)(ATT_BLOCK * c->head_dim), &fail);
        tb->kbuf = alloc_f((size_t)c->head_dim, &fail);
    }
    if (fail) {
        realm_engine_free(e);
        return realm_err_set(err, REALM_E_NOMEM, "engine: scratch for %d rows: out of memory",
                             max_batch);
    }
    *out = e;
    return REALM_OK;
}

void realm_engine_free(struct realm_engine *e) {
    if (!e) return;
    realm_threadpool_free(e->pool);
    if (e->tb)
        for (int t = 0; t < e->nth; t++) {
            realm_free_aligned(e->tb[t].xb);
            for (int j = 0; j < ACT_SLOTS; j++)
                realm_free_aligned(e->tb[t].act[j]);
            realm_free_aligned(e->tb[t].logits);
            realm_free_aligned(e->tb[t].scores);
            realm_free_aligned(e->tb[t].q);
            realm_free_aligned(e->tb[t].kbuf);
        }
    realm_free(e->tb);
    realm_free_aligned(e->x);
    realm_free_aligned(e->xb);
    realm_free_aligned(e->qkv);
    realm_free_aligned(e->att);
    realm_free_aligned(e->tmp);
    realm_free_aligned(e->hb);
    realm_free_aligned(e->hb2);
    for (int j = 0; j < ACT_SLOTS; j++)
        realm_free_aligned(e->act[j]);
    realm_free_aligned(e->rope);
    realm_free(e->pos);
    realm_free(e->out_rows);
    realm_free(e->lg_rows);
    realm_free(e->blk_b0);
    realm_free(e->blk_n);
    realm_free(e->runs);
    realm_free(e->attn_next);
    realm_free(e);
}

int realm_engine_n_threads(const struct realm_engine *e) {
    return e->nth;
}

int realm_engine_forward(struct realm_engine *e, const struct realm_batch_row *rows, int32_t n_rows,
                         struct realm_err *err) {
    const struct realm_model *m = e->m;
    if (n_rows == 0) return REALM_OK;
    if (!rows || n_rows < 0 || n_rows > e->max_batch)
        return realm_err_set(err, REALM_E_INVALID, "engine: %d rows, expected 1..%d", n_rows,
                             e->max_batch);

    /* Validate everything before touching any session: the call fails as a whole. */
    int32_t n_runs = 0, n_out = 0, n_lg = 0, n_embd_rows = 0, run_start = 0, n_blk = 0;
    for (int32_t i = 0; i < n_rows; i++) {
        struct realm_session *s = rows[i].session;
        if (!s || s->m != m)
            return realm_err_set(err, REALM_E_INVALID, "engine: row %d: session %s", i,
                                 s ? "belongs to another model" : "is NULL");
        if (rows[i].token < 0 || rows[i].token >= m->cfg.n_vocab)
            return realm_err_set(err, REALM_E_INVALID, "engine: row %d: token %d, expected 0..%d",
                                 i, rows[i].token, m->cfg.n_vocab - 1);
        if (i == 0 || rows[i - 1].session != s) {
            for (int32_t r = 0; r < n_runs; r++)
                if (e->runs[r] == s)
                    return realm_err_set(err, REALM_E_INVALID,
                                         "engine: row %d: rows of one session must be consecutive",
                                         i);
            e->runs[n_runs++] = s;
            run_start = i;
        }
        if (i == run_start || e->blk_n[n_blk - 1] == ATT_BLOCK) { /* a new attention block */
            e->blk_b0[n_blk] = i;
            e->blk_n[n_blk++] = 0;
        }
        e->blk_n[n_blk - 1]++;
        const int64_t p = (int64_t)s->len + (i - run_start);
        if (p >= s->n_ctx)
            return realm_err_set(
                err, REALM_E_CONTEXT_FULL,
                "engine: row %d: session holds %d tokens, adding %d more exceeds its "
                "context of %d",
                i, s->len, i - run_start + 1, s->n_ctx);
        e->pos[i] = (int32_t)p;
        if (rows[i].logits) e->lg_rows[n_lg++] = n_out;
        if (rows[i].embd) n_embd_rows++;
        if (rows[i].logits || rows[i].embd) e->out_rows[n_out++] = i;
    }

    /* Paged sessions: make their new positions writable (blocks, copy-on-write) before any is
     * written; a refusal undoes the reservations made so far. */
    for (int32_t i = 0, r = 0; i < n_rows; i = r) {
        struct realm_session *s = rows[i].session;
        for (r = i + 1; r < n_rows && rows[r].session == s; r++) {
        }
        int rc = realm_session_reserve(s, r - i, err);
        if (rc) {
            for (int32_t j = 0; j < i; j++)
                if (rows[j].session->seq)
                    realm_kv_seq_rewind(rows[j].session->seq, rows[j].session->len);
            return rc;
        }
    }

    e->rows = rows;
    e->n_rows = n_rows;
    e->n_out = n_out;
    e->n_lg = n_lg;
    e->n_embd_rows = n_embd_rows;
    e->n_blk = n_blk;
    for (int il = 0; il < m->cfg.n_layer; il++)
        atomic_store_explicit(&e->attn_next[il], 0, memory_order_relaxed);
    realm_threadpool_run(e->pool, forward_worker, e);
    for (int32_t i = 0; i < n_rows; i++) {
        struct realm_session *s = rows[i].session;
        if (s->seq) realm_kv_seq_commit(s->seq, &rows[i].token, 1);
        s->len = e->pos[i] + 1;
    }
    e->rows = NULL;
    return REALM_OK;
}
