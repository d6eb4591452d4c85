/*
 * model.c — builds a realm_model from a GGUF file: hyper-parameters from the metadata (with the
 * defaults llama.cpp's llama_model::load_hparams uses when a key is absent), and every weight as a
 * borrowed, shape-checked view into the mapping (llama_model::load_tensors). 1-D tensors that
 * are not f32 (norms, biases in f16 files) are converted once into owned f32 copies.
 *
 * Owns: the layer table, the RoPE frequency tables, the converted 1-D tensors. Borrows the gguf.
 * Thread rule: immutable after realm_model_load; shared by every engine and session.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "model/model.h"
#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/types.h"

#define MAX_LAYERS 4096
#define MAX_DIM (1 << 20)

struct loader {
    const struct realm_gguf *g;
    const char *arch;
    struct realm_model *m;
    struct realm_err *err;
    bool prepack; /* realm_model_opts.prepack */
};

/* ---- metadata ---- */

/* "<arch>.<suffix>" into buf. */
static const char *akey(const struct loader *L, const char *suffix, char *buf, size_t cap) {
    snprintf(buf, cap, "%s.%s", L->arch, suffix);
    return buf;
}

/* Reads an unsigned key. Absent: *out = def and OK if !required, REALM_E_FORMAT if required.
 * Present with another type (e.g. a per-layer array): REALM_E_UNSUPPORTED. */
static int get_u32(const struct loader *L, const char *suffix, bool required, uint32_t def,
                   uint32_t *out) {
    char key[160];
    akey(L, suffix, key, sizeof key);
    if (realm_gguf_find_key(L->g, key) < 0) {
        if (required)
            return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: missing, expected a u32", key);
        *out = def;
        return REALM_OK;
    }
    if (!realm_gguf_get_u32(L->g, key, out)) {
        enum realm_gguf_vtype et;
        uint64_t n;
        const void *data;
        if (realm_gguf_get_arr(L->g, key, &et, &n, &data) && n > 0 &&
            (et == REALM_GGUF_UINT32 || et == REALM_GGUF_INT32)) {
            /* per-layer arrays: accepted when all values are equal (one uniform model) */
            uint32_t first, v;
            memcpy(&first, data, 4);
            for (uint64_t i = 1; i < n; i++) {
                memcpy(&v, (const char *)data + 4 * i, 4);
                if (v != first)
                    return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                                         "model: %s: per-layer values differ, expected one value",
                                         key);
            }
            if (et == REALM_GGUF_INT32 && (int32_t)first < 0)
                return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: negative", key);
            *out = first;
            return REALM_OK;
        }
        return realm_err_set(
            L->err, REALM_E_FORMAT, "model: %s: %s value, expected a u32", key,
            realm_gguf_vtype_name(realm_gguf_kv_type(L->g, realm_gguf_find_key(L->g, key))));
    }
    return REALM_OK;
}

static int get_f32(const struct loader *L, const char *suffix, bool required, float def,
                   float *out) {
    char key[160];
    akey(L, suffix, key, sizeof key);
    if (realm_gguf_find_key(L->g, key) < 0) {
        if (required)
            return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: missing, expected an f32",
                                 key);
        *out = def;
        return REALM_OK;
    }
    if (!realm_gguf_get_f32(L->g, key, out) || !isfinite(*out))
        return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: not a finite float", key);
    return REALM_OK;
}

static int check_range(const struct loader *L, const char *what, int64_t v, int64_t lo,
                       int64_t hi) {
    if (v < lo || v > hi)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: %s.%s: %" PRId64 ", expected %" PRId64 "..%" PRId64, L->arch,
                             what, v, lo, hi);
    return REALM_OK;
}

/* ---- tensors ---- */

static const struct realm_gguf_tensor *find(const struct loader *L, const char *name) {
    return realm_gguf_find_tensor(L->g, name);
}

/* A 2-D weight of shape (rows, k). Absent and !required: w->data = NULL. */
static int get_weight(const struct loader *L, const char *name, int64_t k, int64_t rows,
                      bool required, struct model_weight *w) {
    memset(w, 0, sizeof *w);
    const struct realm_gguf_tensor *t = find(L, name);
    if (!t) {
        if (!required) return REALM_OK;
        return realm_err_set(L->err, REALM_E_FORMAT, "model: tensor %s: missing", name);
    }
    if (t->n_dims != 2 || t->ne[0] != k || t->ne[1] != rows)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: tensor %s: shape [%" PRId64 ", %" PRId64 ", %" PRId64
                             "] (%u dims), expected [%" PRId64 ", %" PRId64 "]",
                             name, t->ne[0], t->ne[1], t->ne[2], t->n_dims, k, rows);
    const struct realm_type_info *ti = realm_type_get(t->type);
    const struct realm_quant_ops *ops = realm_quant_ops(t->type);
    if (!ops || !ops->vec_dot || !ops->dequantize_row)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: tensor %s: type %s has no kernels", name,
                             ti ? ti->name : "unknown");
    const struct realm_quant_ops *act = realm_quant_ops(ops->vec_dot_type);
    if (!act || !act->quantize_row)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: tensor %s: activation type %u has no quantizer", name,
                             ops->vec_dot_type);
    size_t rb = realm_type_row_size(t->type, k);
    if (rb == 0 || realm_type_row_size(ops->vec_dot_type, k) == 0)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: tensor %s: row of %" PRId64
                             " not a multiple of the block size of %s",
                             name, k, ti ? ti->name : "?");
    if ((uint64_t)rb * (uint64_t)rows > t->size)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: tensor %s: %zu bytes, expected %" PRIu64, name, t->size,
                             (uint64_t)rb * (uint64_t)rows);
    w->data = t->data;
    w->ops = ops;
    w->type = t->type;
    w->k = k;
    w->rows = rows;
    w->row_bytes = rb;
    return REALM_OK;
}

/* A 1-D f32 vector of n elements (converted to an owned f32 copy if stored in another type). */
static int get_vec(const struct loader *L, const char *name, int64_t n, bool required,
                   const float **out) {
    *out = NULL;
    const struct realm_gguf_tensor *t = find(L, name);
    if (!t) {
        if (!required) return REALM_OK;
        return realm_err_set(L->err, REALM_E_FORMAT, "model: tensor %s: missing", name);
    }
    int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (t->ne[0] != n || ne != n)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: tensor %s: %" PRId64 " elements (ne0 %" PRId64
                             "), expected %" PRId64,
                             name, ne, t->ne[0], n);
    if (t->type == REALM_TYPE_F32) {
        if (t->size < (size_t)n * 4 || ((uintptr_t)t->data & 3))
            return realm_err_set(L->err, REALM_E_FORMAT, "model: tensor %s: bad f32 data", name);
        *out = t->data;
        return REALM_OK;
    }
    const struct realm_quant_ops *ops = realm_quant_ops(t->type);
    if (!ops || !ops->dequantize_row || realm_type_row_size(t->type, n) == 0 ||
        realm_type_row_size(t->type, n) > t->size)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: tensor %s: type %u not usable for a vector", name, t->type);
    struct realm_model *m = L->m;
    if (m->n_owned == m->cap_owned)
        return realm_err_set(L->err, REALM_E_INTERNAL, "model: too many converted vectors");
    float *v = realm_malloc((size_t)n * sizeof(float));
    if (!v) return realm_err_set(L->err, REALM_E_NOMEM, "model: out of memory");
    ops->dequantize_row(t->data, v, n);
    m->owned[m->n_owned++] = v;
    *out = v;
    return REALM_OK;
}

/* ---- RoPE tables ---- */

/* freq[i] = freq_scale * base^(-2i/n_rot) / factor[i]: the angle per position of pair i (ggml_rope
 * with ext_factor 0: theta = freq_scale * pos * theta_scale^i, divided by the freq factor). */
static int build_rope_table(struct realm_model *m, double **out, float base, float scale,
                            const float *factors, struct realm_err *err) {
    int64_t half = m->n_rot / 2;
    double *f = realm_malloc((size_t)half * sizeof(double));
    if (!f) return realm_err_set(err, REALM_E_NOMEM, "model: out of memory");
    for (int64_t i = 0; i < half; i++) {
        double v = (double)scale * pow((double)base, -2.0 * (double)i / (double)m->n_rot);
        if (factors) v /= (double)factors[i];
        f[i] = v;
    }
    *out = f;
    return REALM_OK;
}

/* ---- load ---- */

static int parse_arch(struct loader *L, struct realm_model *m) {
    static const struct {
        const char *name;
        enum realm_arch arch;
    } known[] = {
        {"llama", REALM_ARCH_LLAMA}, {"qwen2", REALM_ARCH_QWEN2}, {"gemma3", REALM_ARCH_GEMMA3},
        {"qwen3", REALM_ARCH_QWEN3}, {"phi3", REALM_ARCH_PHI3},   {"gemma2", REALM_ARCH_GEMMA2},
    };
    const char *s;
    size_t n;
    if (!realm_gguf_get_str(L->g, "general.architecture", &s, &n))
        return realm_err_set(L->err, REALM_E_FORMAT, "model: general.architecture: missing");
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == n && !memcmp(s, known[i].name, n)) {
            m->cfg.arch = known[i].arch;
            m->cfg.arch_name = known[i].name;
            L->arch = m->cfg.arch_name;
            return REALM_OK;
        }
    return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                         "model: architecture '%.*s', expected llama, qwen2, qwen3, phi3, gemma2 "
                         "or gemma3",
                         (int)(n > 64 ? 64 : n), s);
}

/* Hyper-parameters (llama_model::load_hparams). */
static int load_hparams(struct loader *L, struct realm_model *m) {
    struct realm_model_config *c = &m->cfg;
    uint32_t u;
    int rc;
    if ((rc = get_u32(L, "context_length", true, 0, &u))) return rc;
    /* The file's word is not trusted: every engine thread keeps attention scores for n_ctx_train
     * positions and a session defaults to that many, so an absurd value is capped (positions then
     * stay far below int32 range, whatever they are multiplied by). */
    if (u > REALM_MODEL_MAX_CTX) {
        realm_log(REALM_LOG_WARN, "model", "%s.context_length: %u, capped to %d positions", L->arch,
                  u, REALM_MODEL_MAX_CTX);
        u = REALM_MODEL_MAX_CTX;
    }
    c->n_ctx_train = (int32_t)u;
    if ((rc = get_u32(L, "embedding_length", true, 0, &u))) return rc;
    c->n_embd = (int32_t)(u > MAX_DIM ? MAX_DIM + 1 : u);
    if ((rc = get_u32(L, "block_count", true, 0, &u))) return rc;
    c->n_layer = (int32_t)(u > MAX_LAYERS ? MAX_LAYERS + 1 : u);
    if ((rc = get_u32(L, "feed_forward_length", true, 0, &u))) return rc;
    c->n_ff = (int32_t)(u > MAX_DIM ? MAX_DIM + 1 : u);
    if ((rc = get_u32(L, "attention.head_count", true, 0, &u))) return rc;
    c->n_head = (int32_t)(u > 4096 ? 4097 : u);
    if ((rc = check_range(L, "context_length", c->n_ctx_train, 1, REALM_MODEL_MAX_CTX)) ||
        (rc = check_range(L, "embedding_length", c->n_embd, 1, MAX_DIM)) ||
        (rc = check_range(L, "block_count", c->n_layer, 1, MAX_LAYERS)) ||
        (rc = check_range(L, "feed_forward_length", c->n_ff, 1, MAX_DIM)) ||
        (rc = check_range(L, "attention.head_count", c->n_head, 1, 4096)))
        return rc;
    /* llama.cpp: n_head_kv defaults to n_head (no GQA) */
    if ((rc = get_u32(L, "attention.head_count_kv", false, (uint32_t)c->n_head, &u))) return rc;
    c->n_head_kv = (int32_t)(u > 4096 ? 4097 : u);
    if ((rc = check_range(L, "attention.head_count_kv", c->n_head_kv, 1, c->n_head))) return rc;
    if (c->n_head % c->n_head_kv)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: %s: n_head %d not a multiple of n_head_kv %d", L->arch,
                             c->n_head, c->n_head_kv);
    /* llama.cpp: n_embd_head_k = key_length, default n_embd / n_head; same for values */
    uint32_t hk, hv;
    if (c->n_embd % c->n_head) { /* the default needs divisibility */
        char key[160];
        if (realm_gguf_find_key(L->g, akey(L, "attention.key_length", key, sizeof key)) < 0)
            return realm_err_set(
                L->err, REALM_E_FORMAT,
                "model: %s: n_embd %d not a multiple of n_head %d and no key_length", L->arch,
                c->n_embd, c->n_head);
    }
    if ((rc = get_u32(L, "attention.key_length", false, (uint32_t)(c->n_embd / c->n_head), &hk)))
        return rc;
    if ((rc = get_u32(L, "attention.value_length", false, hk, &hv))) return rc;
    if ((rc = check_range(L, "attention.key_length", hk, 2, 4096))) return rc;
    if (hk != hv)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: %s: key_length %u != value_length %u, expected equal", L->arch,
                             hk, hv);
    if (hk % 2)
        return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: key_length %u is odd", L->arch,
                             hk);
    c->head_dim = (int32_t)hk;
    if ((rc = get_f32(L, "attention.layer_norm_rms_epsilon", true, 0, &c->norm_eps))) return rc;
    if (!(c->norm_eps >= 0 && c->norm_eps < 1))
        return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: rms epsilon %g out of range",
                             L->arch, (double)c->norm_eps);
    /* llama.cpp: rope_freq_base default 10000; n_rot default n_embd_head_k */
    if ((rc = get_f32(L, "rope.freq_base", false, 10000.0f, &c->rope_freq_base))) return rc;
    if (!(c->rope_freq_base > 0))
        return realm_err_set(L->err, REALM_E_FORMAT, "model: rope.freq_base %g",
                             (double)c->rope_freq_base);
    if ((rc = get_u32(L, "rope.dimension_count", false, (uint32_t)c->head_dim, &u))) return rc;
    if (u > (uint32_t)c->head_dim || u % 2 || u == 0)
        return realm_err_set(L->err, REALM_E_FORMAT,
                             "model: %s.rope.dimension_count: %u, expected even, <= %d", L->arch, u,
                             c->head_dim);
    m->n_rot = (int32_t)u;
    /* llama.cpp asserts n_rot == head size for these graphs (phi3 may rotate part of a head) */
    if ((c->arch == REALM_ARCH_LLAMA || c->arch == REALM_ARCH_QWEN3) && m->n_rot != c->head_dim)
        return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: n_rot %d != head_dim %d", L->arch,
                             m->n_rot, c->head_dim);
    uint32_t n_expert;
    if ((rc = get_u32(L, "expert_count", false, 0, &n_expert))) return rc;
    if (n_expert > 0)
        return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                             "model: %s: mixture of %u experts not supported", L->arch, n_expert);
    c->rope_freq_base_local = c->rope_freq_base;
    c->sliding_window = 0;
    return REALM_OK;
}

/* RoPE scaling: none or linear (rope.scaling.type / rope.scaling.factor, or legacy
 * rope.scale_linear); freq_scale = 1 / factor as in llama.cpp. "longrope" (phi3 128k) is plain
 * RoPE with the per-pair rope_factors_long / _short, as ggml applies it (ext_factor 0). */
static int rope_scale(struct loader *L, float *scale) {
    char key[160];
    const char *s = NULL;
    size_t n = 0;
    float factor = 0;
    int rc;
    *scale = 1.0f;
    if (realm_gguf_get_str(L->g, akey(L, "rope.scaling.type", key, sizeof key), &s, &n)) {
        if (n == 4 && !memcmp(s, "none", 4)) return REALM_OK;
        if (!(n == 6 && !memcmp(s, "linear", 6)) && !(n == 8 && !memcmp(s, "longrope", 8)))
            return realm_err_set(L->err, REALM_E_UNSUPPORTED,
                                 "model: rope scaling '%.*s' not supported", (int)(n > 32 ? 32 : n),
                                 s);
    }
    if ((rc = get_f32(L, "rope.scaling.factor", false, 0.0f, &factor))) return rc;
    if (factor == 0.0f && (rc = get_f32(L, "rope.scale_linear", false, 0.0f, &factor))) return rc;
    if (factor != 0.0f && factor != 1.0f) {
        if (!(factor > 0))
            return realm_err_set(L->err, REALM_E_FORMAT, "model: rope scaling factor %g",
                                 (double)factor);
        *scale = 1.0f / factor;
    }
    return REALM_OK;
}

/* Rows [r0, r0 + rows) of the weight `whole` as a weight of their own (a fused tensor's part). */
static struct model_weight weight_rows(const struct model_weight *whole, int64_t r0, int64_t rows) {
    struct model_weight w = *whole;
    w.data = (const char *)whole->data + (size_t)r0 * whole->row_bytes;
    w.rows = rows;
    w.packed = NULL;
    return w;
}

/* Q, K, V projections (llama_model_base::create_tensor_qkv): one fused attn_qkv (Q rows, then
 * K, then V) with an optional fused bias, or separate tensors with optional biases (required
 * for qwen2). */
static int load_qkv(struct loader *L, struct realm_model *m, int il, struct model_layer *ly) {
    const int64_t E = m->cfg.n_embd, Q = m->q_dim, KV = m->kv_dim;
    const bool need_bias = m->cfg.arch == REALM_ARCH_QWEN2;
    char n[96];
    int rc;
#define TN(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, il), n)
    if (find(L, TN("attn_qkv.weight"))) {
        struct model_weight qkv;
        if ((rc = get_weight(L, n, E, Q + 2 * KV, true, &qkv))) return rc;
        ly->wq = weight_rows(&qkv, 0, Q);
        ly->wk = weight_rows(&qkv, Q, KV);
        ly->wv = weight_rows(&qkv, Q + KV, KV);
        const float *b = NULL;
        if ((rc = get_vec(L, TN("attn_qkv.bias"), Q + 2 * KV, need_bias, &b))) return rc;
        if (b) {
            ly->bq = b, ly->bk = b + Q, ly->bv = b + Q + KV;
            return REALM_OK;
        }
    } else {
        if ((rc = get_weight(L, TN("attn_q.weight"), E, Q, true, &ly->wq))) return rc;
        if ((rc = get_weight(L, TN("attn_k.weight"), E, KV, true, &ly->wk))) return rc;
        if ((rc = get_weight(L, TN("attn_v.weight"), E, KV, true, &ly->wv))) return rc;
    }
    if ((rc = get_vec(L, TN("attn_q.bias"), Q, need_bias, &ly->bq))) return rc;
    if ((rc = get_vec(L, TN("attn_k.bias"), KV, need_bias, &ly->bk))) return rc;
    if ((rc = get_vec(L, TN("attn_v.bias"), KV, need_bias, &ly->bv))) return rc;
#undef TN
    return REALM_OK;
}

static int load_layer(struct loader *L, struct realm_model *m, int il) {
    const struct realm_model_config *c = &m->cfg;
    struct model_layer *ly = &m->layers[il];
    const int64_t E = c->n_embd, Q = m->q_dim, F = c->n_ff, HD = c->head_dim;
    const enum realm_arch a = c->arch;
    const bool qk_norm = a == REALM_ARCH_GEMMA3 || a == REALM_ARCH_QWEN3;
    const bool post_norms = a == REALM_ARCH_GEMMA3 || a == REALM_ARCH_GEMMA2;
    char n[96];
    int rc;
#define TN(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, il), n)
    if ((rc = get_vec(L, TN("attn_norm.weight"), E, true, &ly->attn_norm))) return rc;
    if ((rc = load_qkv(L, m, il, ly))) return rc;
    if ((rc = get_weight(L, TN("attn_output.weight"), Q, E, true, &ly->wo))) return rc;
    /* llama.cpp TENSOR_NOT_REQUIRED for llama; gemma2 ignores it (no bias in its graph) */
    if (a != REALM_ARCH_GEMMA2 && (rc = get_vec(L, TN("attn_output.bias"), E, false, &ly->bo)))
        return rc;
    if (qk_norm) {
        if ((rc = get_vec(L, TN("attn_q_norm.weight"), HD, true, &ly->q_norm))) return rc;
        if ((rc = get_vec(L, TN("attn_k_norm.weight"), HD, true, &ly->k_norm))) return rc;
    }
    if (post_norms) {
        if ((rc = get_vec(L, TN("post_attention_norm.weight"), E, true, &ly->post_attn_norm)))
            return rc;
        if ((rc = get_vec(L, TN("post_ffw_norm.weight"), E, true, &ly->post_ffn_norm))) return rc;
    }
    if ((rc = get_vec(L, TN("ffn_norm.weight"), E, true, &ly->ffn_norm))) return rc;
    if (a == REALM_ARCH_PHI3) { /* ffn_up holds gate ‖ up (LLM_FFN_SWIGLU over one tensor) */
        struct model_weight gu;
        if ((rc = get_weight(L, TN("ffn_up.weight"), E, 2 * F, true, &gu))) return rc;
        ly->w_gate = weight_rows(&gu, 0, F);
        ly->w_up = weight_rows(&gu, F, F);
    } else {
        if ((rc = get_weight(L, TN("ffn_gate.weight"), E, F, true, &ly->w_gate))) return rc;
        if ((rc = get_weight(L, TN("ffn_up.weight"), E, F, true, &ly->w_up))) return rc;
    }
    if ((rc = get_weight(L, TN("ffn_down.weight"), F, E, true, &ly->w_down))) return rc;
#undef TN
    ly->swa = m->swa_layers ? m->swa_layers[il] : false;
    ly->rope_table = ly->swa && m->n_rope_tables > 1 ? 1 : 0;
    return REALM_OK;
}

static int prepack(const struct loader *L, struct realm_model *m);

/* Which layers use the sliding window (llama_model_base::load_swa_pattern): the per-layer bool
 * array attention.sliding_window_pattern, else a period n (that key as a number, or `def`) where
 * layers with il % n < n - 1 are windowed (n = 0: all; n = 1: none). */
static int load_swa_layers(struct loader *L, struct realm_model *m, uint32_t def) {
    const int nl = m->cfg.n_layer;
    char key[160];
    akey(L, "attention.sliding_window_pattern", key, sizeof key);
    m->swa_layers = realm_calloc((size_t)nl, sizeof *m->swa_layers);
    if (!m->swa_layers) return realm_err_set(L->err, REALM_E_NOMEM, "model: out of memory");
    enum realm_gguf_vtype et;
    uint64_t n;
    const void *data;
    if (realm_gguf_get_arr(L->g, key, &et, &n, &data) && et == REALM_GGUF_BOOL) {
        if (n < (uint64_t)nl)
            return realm_err_set(L->err, REALM_E_FORMAT,
                                 "model: %s: %" PRIu64 " values for %d layers", key, n, nl);
        for (int il = 0; il < nl; il++)
            m->swa_layers[il] = ((const unsigned char *)data)[il] != 0;
        return REALM_OK;
    }
    uint32_t period;
    int rc = get_u32(L, "attention.sliding_window_pattern", false, def, &period);
    if (rc) return rc;
    for (int il = 0; il < nl; il++)
        m->swa_layers[il] = period == 0 || (uint32_t)il % period < period - 1;
    return REALM_OK;
}

/* The sliding window size from attention.sliding_window (absent: def). */
static int load_window(struct loader *L, uint32_t def, int32_t *out) {
    uint32_t swa;
    int rc = get_u32(L, "attention.sliding_window", false, def, &swa);
    if (rc) return rc;
    *out = (int32_t)(swa > INT32_MAX ? INT32_MAX : swa);
    return REALM_OK;
}

/* The per-architecture rules of llama.cpp's load_arch_hparams and graph builders. `scale_local`
 * is the RoPE frequency scale of sliding-window layers. */
static int load_arch(struct loader *L, struct realm_model *m, float scale, float *scale_local) {
    struct realm_model_config *c = &m->cfg;
    int rc;
    switch (c->arch) {
    case REALM_ARCH_LLAMA:
    case REALM_ARCH_QWEN2:
    case REALM_ARCH_QWEN3: /* llm_build_qwen3: QK-norm, kq_scale 1/sqrt(head_dim) */
        return REALM_OK;
    case REALM_ARCH_PHI3: {
        /* llama.cpp scales q by 1/sqrt(head_dim) before attention (kq_scale 1), and disables
         * phi3's sliding window ("Phi SWA is currently disabled", llama_model_phi3::
         * load_arch_hparams): a window in the metadata is logged and ignored for parity. */
        m->q_scale = 1.0f / sqrtf((float)c->head_dim);
        m->kq_scale = 1.0f;
        int32_t w = 0;
        if ((rc = load_window(L, 0, &w))) return rc;
        if (w > 0)
            realm_log(REALM_LOG_WARN, "model",
                      "phi3: sliding window %d ignored, as llama.cpp does (full attention)", w);
        return REALM_OK;
    }
    case REALM_ARCH_GEMMA2:
        /* llm_build_gemma2: inputs scaled by sqrt(n_embd), GELU FFN, post-norms; q scaled by
         * f_attention_scale (1/sqrt(head_dim), or 1/sqrt(n_embd/n_head) for the 27B with 46
         * layers), kq_scale 1; attention scores and logits soft-capped (defaults 50 and 30);
         * every other layer windowed (pattern 2, default window 4096), with rope.freq_base_swa
         * (default: the global base) and the global frequency scale. */
        if ((rc = load_window(L, 4096, &c->sliding_window))) return rc;
        if ((rc = load_swa_layers(L, m, 2))) return rc;
        if ((rc = get_f32(L, "rope.freq_base_swa", false, c->rope_freq_base,
                          &c->rope_freq_base_local)))
            return rc;
        *scale_local = scale;
        m->embd_scale = sqrtf((float)c->n_embd);
        m->ffn_gelu = true;
        m->q_scale = c->n_layer == 46 ? 1.0f / sqrtf((float)(c->n_embd / c->n_head))
                                      : 1.0f / sqrtf((float)c->head_dim);
        m->kq_scale = 1.0f;
        if ((rc = get_f32(L, "attn_logit_softcapping", false, 50.0f, &m->attn_softcap))) return rc;
        if ((rc = get_f32(L, "final_logit_softcapping", false, 30.0f, &m->final_softcap)))
            return rc;
        if (!(m->attn_softcap > 0) || !(m->final_softcap > 0))
            return realm_err_set(L->err, REALM_E_FORMAT,
                                 "model: gemma2: soft-capping %g / %g, expected > 0",
                                 (double)m->attn_softcap, (double)m->final_softcap);
        return REALM_OK;
    case REALM_ARCH_GEMMA3:
        /* llama.cpp llm_build_gemma3: inputs scaled by sqrt(n_embd), GELU-gated FFN, q scaled by
         * f_attention_scale (1/sqrt(n_embd_head_k), 1/sqrt(n_embd/n_head) for the 27B with 62
         * layers) and kq_scale 1; sliding window (when set) with pattern 6, local RoPE base
         * rope.freq_base_swa (default 10000) and scale 1. */
        if ((rc = load_window(L, 0, &c->sliding_window))) return rc;
        if (c->sliding_window > 0) {
            if ((rc = load_swa_layers(L, m, 6))) return rc;
            if ((rc = get_f32(L, "rope.freq_base_swa", false, 10000.0f, &c->rope_freq_base_local)))
                return rc;
            *scale_local = 1.0f;
        }
        m->embd_scale = sqrtf((float)c->n_embd);
        m->ffn_gelu = true;
        m->q_scale = c->n_layer == 62 ? 1.0f / sqrtf((float)(c->n_embd / c->n_head))
                                      : 1.0f / sqrtf((float)c->head_dim);
        m->kq_scale = 1.0f;
        if ((rc = get_f32(L, "final_logit_softcapping", false, 0.0f, &m->final_softcap))) return rc;
        if (m->final_softcap < 0) m->final_softcap = 0;
        return REALM_OK;
    }
    return realm_err_set(L->err, REALM_E_UNSUPPORTED, "model: architecture %d", (int)c->arch);
}

/* RoPE tables: the global one (with llama3's rope_freqs, or phi3's short factors), the local one
 * of sliding-window layers when its base or scale differs, and phi3's long one. */
static int load_rope(struct loader *L, struct realm_model *m, float scale, float scale_local) {
    const struct realm_model_config *c = &m->cfg;
    const int64_t half = m->n_rot / 2;
    int rc;
    const float *factors = NULL, *f_long = NULL, *f_short = NULL;
    if ((rc = get_vec(L, "rope_freqs.weight", half, false, &factors))) return rc;
    if ((rc = get_vec(L, "rope_factors_long.weight", half, false, &f_long))) return rc;
    if ((rc = get_vec(L, "rope_factors_short.weight", half, false, &f_short))) return rc;
    /* llama_model::get_rope_factors: rope_freqs wins; else long past n_ctx_orig_yarn, else short */
    if (!factors && (f_long || f_short)) {
        uint32_t orig;
        if ((rc = get_u32(L, "rope.scaling.original_context_length", false,
                          (uint32_t)c->n_ctx_train, &orig)))
            return rc;
        factors = f_short;
        if (f_long) {
            m->rope_long_ctx = (int32_t)(orig > INT32_MAX ? INT32_MAX : orig);
            if ((rc = build_rope_table(m, &m->rope_freq_long, c->rope_freq_base, scale, f_long,
                                       L->err)))
                return rc;
        }
    }
    if ((rc = get_f32(L, "rope.scaling.attn_factor", false, 1.0f, &m->rope_attn_factor))) return rc;
    const bool local =
        m->swa_layers && (c->rope_freq_base_local != c->rope_freq_base || scale_local != scale);
    m->n_rope_tables = local ? 2 : 1;
    if ((rc = build_rope_table(m, &m->rope_freq[0], c->rope_freq_base, scale, factors, L->err)))
        return rc;
    if (local && (rc = build_rope_table(m, &m->rope_freq[1], c->rope_freq_base_local, scale_local,
                                        factors, L->err)))
        return rc;
    return REALM_OK;
}

static int load(struct loader *L, struct realm_model *m) {
    int rc;
    if ((rc = parse_arch(L, m))) return rc;
    if ((rc = load_hparams(L, m))) return rc;
    struct realm_model_config *c = &m->cfg;
    m->q_dim = (int64_t)c->n_head * c->head_dim;
    m->kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    m->rope_mode = c->arch == REALM_ARCH_LLAMA ? MODEL_ROPE_NORM : MODEL_ROPE_NEOX;
    m->embd_scale = 1.0f;
    m->q_scale = 1.0f;
    m->kq_scale = 1.0f / sqrtf((float)c->head_dim);
    m->ffn_gelu = false;
    m->final_softcap = 0.0f;
    m->attn_softcap = 0.0f;
    float scale;
    if ((rc = rope_scale(L, &scale))) return rc;
    float scale_local = scale;
    if ((rc = load_arch(L, m, scale, &scale_local))) return rc;

    /* token embeddings: their row count is the vocabulary size */
    const struct realm_gguf_tensor *te = find(L, "token_embd.weight");
    if (!te)
        return realm_err_set(L->err, REALM_E_FORMAT, "model: tensor token_embd.weight: missing");
    if (te->n_dims != 2 || te->ne[1] < 1 || te->ne[1] > INT32_MAX)
        return realm_err_set(L->err, REALM_E_FORMAT, "model: tensor token_embd.weight: bad shape");
    c->n_vocab = (int32_t)te->ne[1];
    uint32_t vs;
    char key[160];
    if (realm_gguf_get_u32(L->g, akey(L, "vocab_size", key, sizeof key), &vs) &&
        vs != (uint32_t)c->n_vocab)
        return realm_err_set(L->err, REALM_E_FORMAT, "model: %s: %u, token_embd has %d rows", key,
                             vs, c->n_vocab);
    if ((rc = get_weight(L, "token_embd.weight", c->n_embd, c->n_vocab, true, &m->tok_embd)))
        return rc;
    if ((rc = get_vec(L, "output_norm.weight", c->n_embd, true, &m->output_norm))) return rc;
    /* gemma2's graph always uses token_embd as the classifier (llama.cpp TENSOR_DUPLICATED) */
    if (c->arch != REALM_ARCH_GEMMA2 &&
        (rc = get_weight(L, "output.weight", c->n_embd, c->n_vocab, false, &m->output)))
        return rc;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */

    if ((rc = load_rope(L, m, scale, scale_local))) return rc;

    m->layers = realm_calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) return realm_err_set(L->err, REALM_E_NOMEM, "model: out of memory");
    for (int il = 0; il < c->n_layer; il++)
        if ((rc = load_layer(L, m, il))) return rc;
    return L->prepack ? prepack(L, m) : REALM_OK;
}

/* The projection weights of the model (output only when it is not token_embd: that one keeps
 * its rows for the embedding lookup, so a packed copy would double it). */
static int model_weights(struct realm_model *m, struct model_weight **ws) {
    int n = 0;
    for (int il = 0; m->layers && il < m->cfg.n_layer; il++) {
        struct model_layer *ly = &m->layers[il];
        struct model_weight *l[] = {&ly->wq,     &ly->wk,   &ly->wv,    &ly->wo,
                                    &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t j = 0; j < sizeof l / sizeof l[0]; j++)
            ws[n++] = l[j];
    }
    if (m->output.data && m->output.data != m->tok_embd.data) ws[n++] = &m->output;
    return n;
}

/* Asks the kernel to reclaim the whole pages of [p, p + n): the original rows of a prepacked
 * weight, never read again. MADV_PAGEOUT is non-destructive whatever the memory is (clean file
 * pages of the mapping are dropped and re-read from the file if ever touched; the anonymous
 * buffer of realm_gguf_open_memory keeps its contents); it only takes them out of the resident
 * set. Errors (kernels before 5.4) are ignored: then the pages just stay. */
static void reclaim(const void *p, size_t n) {
#ifdef MADV_PAGEOUT
    const long ps = sysconf(_SC_PAGESIZE);
    const uintptr_t pg = ps > 0 ? (uintptr_t)ps : 4096, a = ((uintptr_t)p + pg - 1) & ~(pg - 1),
                    b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) (void)madvise((void *)a, b - a, MADV_PAGEOUT);
#else
    (void)p;
    (void)n;
#endif
}

/* Prepacks the weights whose kernels have a packed layout (realm_quant_prepack): from then on
 * forward.c reads only the packed copies of those, never their mapped pages again. */
static int prepack(const struct loader *L, struct realm_model *m) {
    struct model_weight **ws = realm_malloc(sizeof *ws * (7 * (size_t)m->cfg.n_layer + 1));
    if (!ws) return realm_err_set(L->err, REALM_E_NOMEM, "model: out of memory");
    const int n = model_weights(m, ws);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t bytes = 0;
    int np = 0, rc = REALM_OK;
    for (int i = 0; i < n && !rc; i++) {
        struct model_weight *w = ws[i];
        if (!w->data) continue;
        rc = realm_quant_prepack(w->ops, w->data, w->row_bytes, w->rows, w->k, &w->packed);
        if (rc) {
            rc = realm_err_set(L->err, rc,
                               "model: prepacking a %" PRId64 " x %" PRId64 " weight: %s", w->rows,
                               w->k, realm_status_text(rc));
        } else if (w->packed) {
            np++;
            bytes += (size_t)w->rows * w->row_bytes;
            reclaim(w->data, (size_t)w->rows * w->row_bytes);
        }
    }
    realm_free(ws);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (np)
        realm_log(REALM_LOG_INFO, "model", "prepacked %d weights (%.1f MB) in %.2f s", np,
                  (double)bytes / 1e6,
                  (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    return rc;
}

int realm_model_load(const struct realm_gguf *g, struct realm_model **out, struct realm_err *err) {
    return realm_model_load_opts(g, NULL, out, err);
}

int realm_model_load_opts(const struct realm_gguf *g, const struct realm_model_opts *opts,
                          struct realm_model **out, struct realm_err *err) {
    if (!g || !out) return realm_err_set(err, REALM_E_INVALID, "model: NULL argument");
    realm_quant_init();
    struct realm_model *m = realm_calloc(1, sizeof *m);
    if (!m) return realm_err_set(err, REALM_E_NOMEM, "model: out of memory");
    m->g = g;
    struct loader L = {.g = g, .arch = "?", .m = m, .err = err, .prepack = opts && opts->prepack};
    /* upper bound of converted vectors: 12 per layer + output_norm + rope_freqs; the layer count
     * is validated in load_hparams, so size the table after a first peek */
    uint32_t nl = 0;
    char key[160];
    const char *a;
    size_t an;
    if (realm_gguf_get_str(g, "general.architecture", &a, &an) && an < 32) {
        snprintf(key, sizeof key, "%.*s.block_count", (int)an, a);
        realm_gguf_get_u32(g, key, &nl);
    }
    if (nl > MAX_LAYERS) nl = MAX_LAYERS;
    m->cap_owned = 12 * (int)nl + 4;
    m->owned = realm_calloc((size_t)m->cap_owned, sizeof *m->owned);
    int rc = m->owned ? load(&L, m) : realm_err_set(err, REALM_E_NOMEM, "model: out of memory");
    if (rc) {
        realm_model_free(m);
        return rc;
    }
    realm_log(
        REALM_LOG_INFO, "model",
        "%s: %d layers, n_embd %d, n_ff %d, %d/%d heads of %d, vocab %d, ctx %d, rope %s base %g",
        m->cfg.arch_name, m->cfg.n_layer, m->cfg.n_embd, m->cfg.n_ff, m->cfg.n_head,
        m->cfg.n_head_kv, m->cfg.head_dim, m->cfg.n_vocab, m->cfg.n_ctx_train,
        m->rope_mode == MODEL_ROPE_NORM ? "norm" : "neox", (double)m->cfg.rope_freq_base);
    *out = m;
    return REALM_OK;
}

void realm_model_free(struct realm_model *m) {
    if (!m) return;
    for (int il = 0; m->layers && il < m->cfg.n_layer; il++) {
        struct model_layer *ly = &m->layers[il];
        realm_quant_packed_free(ly->wq.packed);
        realm_quant_packed_free(ly->wk.packed);
        realm_quant_packed_free(ly->wv.packed);
        realm_quant_packed_free(ly->wo.packed);
        realm_quant_packed_free(ly->w_gate.packed);
        realm_quant_packed_free(ly->w_up.packed);
        realm_quant_packed_free(ly->w_down.packed);
    }
    if (m->output.data != m->tok_embd.data) realm_quant_packed_free(m->output.packed);
    for (int i = 0; i < m->n_owned; i++)
        realm_free(m->owned[i]);
    realm_free(m->owned);
    for (int t = 0; t < MODEL_MAX_ROPE_TABLES; t++)
        realm_free(m->rope_freq[t]);
    realm_free(m->rope_freq_long);
    realm_free(m->swa_layers);
    realm_free(m->layers);
    realm_free(m);
}

const struct realm_model_config *realm_model_config(const struct realm_model *m) {
    return &m->cfg;
}
