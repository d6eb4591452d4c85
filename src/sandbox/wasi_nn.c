/*
 * wasi_nn.c — the host functions of module "wasi_ephemeral_nn" in WasmEdge's core-module ABI
 * with the GGML backend's behaviour (what LlamaEdge's apps call): load, load_by_name,
 * load_by_name_with_config, init_execution_context, set_input (index 0: prompt bytes, index 1:
 * metadata JSON), compute, get_output (index 0: text, index 1: usage JSON), compute_single,
 * get_output_single, fini_single, finalize_execution_context and unload. Every function returns
 * a WasmEdge errno (0 success ... 8 not found, 100 end of sequence, 101 context full, 102 prompt
 * too long, 103 model not found); handles are indexes into per-instance tables.
 *
 * What differs from WasmEdge, on purpose: a graph is a model the operator configured, found by
 * name ("default" or "" is the tenant's default model); `load` accepts only "preload:NAME"
 * builders, never model bytes or paths. Each execution context is a realm session of the
 * tenant's group, decoded through the model's scheduler (sbx_backend_decode), so contexts of many
 * tenants share batched steps; sampling runs on the host with the guest SDK's sampler from the
 * metadata; a `grammar` (GBNF) or `json-schema` key constrains it with the guest SDK's grammar
 * engine, as the default guest's grammar / response_format does. Defaults come from the request
 * (max_tokens, temperature, top_k, top_p, seed ...), and the request's max_tokens and n_ctx are
 * also caps the metadata cannot raise: a guest cannot generate more than the request allows.
 * Decodes are accounted like the realm ABI's decode. Every guest pointer and length is checked
 * against the memory size on that call.
 *
 * Owns: t->nn (graphs, contexts, their sessions and buffers), freed by sbx_nn_free.
 * Thread rule: runs on the thread running the tenant.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "realm/alloc.h"
#include "realm/buf.h"
#include "realm/json.h"
#include "realm/log.h"
#include "sandbox/wasi_nn.h"

/* WasmEdge's errno values (wasi_ephemeral_nn) */
enum nn_errno {
    NN_SUCCESS = 0,
    NN_INVALID_ARGUMENT = 1,
    NN_INVALID_ENCODING = 2,
    NN_MISSING_MEMORY = 3,
    NN_BUSY = 4,
    NN_RUNTIME_ERROR = 5,
    NN_UNSUPPORTED = 6,
    NN_TOO_LARGE = 7,
    NN_NOT_FOUND = 8,
    NN_END_OF_SEQUENCE = 100,
    NN_CONTEXT_FULL = 101,
    NN_PROMPT_TOO_LONG = 102,
    NN_MODEL_NOT_FOUND = 103,
};

#define NN_ENCODING_GGML 6
#define NN_TARGET_AUTO 3 /* CPU 0, GPU 1, TPU 2, AUTO 3: all run on the host's CPU */
#define NN_TENSOR_I64 5  /* F16 0, F32 1, F64 2, U8 3, I32 4, I64 5 */
#define NN_MAX_GRAPHS 16
#define NN_MAX_CONTEXTS 16
#define NN_PRELOAD "preload:"

/* Generation settings: the request's defaults, then the graph's config, then set_input's
 * metadata. */
struct nn_opts {
    int64_t n_predict; /* -1: until the context is full */
    int32_t ctx_size;  /* 0: the largest allowed */
    struct sbx_nn_sampling smp;
    bool seed_set;
    bool ignore_eos;
    bool stream_stdout; /* compute streams each piece to stdout (the request's output) */
    char reverse_prompt[256];
};

struct nn_graph {
    bool used;
    struct sbx_model *model;
    cJSON *config; /* load_by_name_with_config's metadata, or NULL */
};

struct nn_ctx {
    int32_t graph;
    struct sbx_model *model;
    struct nn_opts opts;
    struct realm_session *session;
    uint64_t kv_bytes; /* contiguous sessions: charged against max_kv_bytes */
    int32_t n_ctx;
    float *logits;
    struct sbx_nn_sampler *smp;
    struct sbx_nn_grammar *gram; /* the output constraint (grammar / json-schema), or NULL */
    struct sbx_nn_vocab *vocab;  /* the model's token table for gram, built on first use */
    int32_t *prompt;
    int32_t n_prompt;
    bool prompt_done;  /* the prompt is decoded (single mode) */
    bool have_last;    /* last_tok is sampled but not decoded yet */
    bool finished;     /* end of sequence / context full reached: the next step says so */
    int finish_status; /* what the next compute_single answers once finished */
    int32_t last_tok;
    int64_t n_gen;
    struct realm_buf text; /* everything generated since the last reset */
    size_t piece_off;      /* the last piece: text.data[piece_off..text.len) */
    uint64_t sampled_call; /* the call in which it last produced logits */
};

struct sbx_nn {
    struct nn_graph graphs[NN_MAX_GRAPHS];
    struct nn_ctx *ctxs[NN_MAX_CONTEXTS];
    bool req_read; /* the request's defaults below are parsed */
    struct nn_opts req_opts;
    int64_t max_tokens; /* the request's cap on generated tokens in this call (-1: none) */
    int32_t max_ctx;    /* the request's n_ctx cap (0: none) */
    int64_t generated;  /* tokens generated in this call, over all contexts */
    int32_t usage_prompt, usage_completion, usage_finish;
    int last_errno; /* of the last call that failed (end of sequence is no failure) */
};

/* ---- guest memory ---- */

static uint8_t *span(struct realm_sbx_tenant *t, uint32_t ptr, uint64_t len) {
    uint64_t size = wasmtime_memory_data_size(t->cx, &t->mem);
    if (len > size || ptr > size - len) return NULL;
    return wasmtime_memory_data(t->cx, &t->mem) + ptr;
}

static int put_u32(struct realm_sbx_tenant *t, uint32_t ptr, uint32_t v) {
    uint8_t *p = span(t, ptr, 4);
    if (!p) return NN_INVALID_ARGUMENT;
    memcpy(p, &v, 4); /* wasm is little-endian, as is every host realm builds for */
    return NN_SUCCESS;
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- errors ---- */

static int nn_fail(struct realm_sbx_tenant *t, int errno_, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records why a call failed (the request's error names it if the guest gives up) and logs it. */
static int nn_fail(struct realm_sbx_tenant *t, int errno_, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof t->host_msg - 16];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(t->host_msg, sizeof t->host_msg, "wasi-nn: %s", msg);
    realm_log(REALM_LOG_DEBUG, "sandbox", "%s: wasi-nn: %s", t->name, msg);
    return errno_;
}

static int from_realm(int rc) {
    switch (rc) {
    case REALM_OK:
        return NN_SUCCESS;
    case REALM_E_CONTEXT_FULL:
    case REALM_E_KV_FULL:
        return NN_CONTEXT_FULL;
    case REALM_E_INVALID:
    case REALM_E_RANGE:
        return NN_INVALID_ARGUMENT;
    case REALM_E_NOT_FOUND:
        return NN_MODEL_NOT_FOUND;
    case REALM_E_LIMIT:
    case REALM_E_NOMEM:
        return NN_TOO_LARGE;
    case REALM_E_BUSY:
        return NN_BUSY;
    default:
        return NN_RUNTIME_ERROR;
    }
}

/* ---- settings ---- */

static void opts_default(struct nn_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    /* the default guest's defaults (llama.cpp's): temp 0.8, top-k 40, top-p 0.95 */
    o->smp = (struct sbx_nn_sampling){
        .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .repeat_penalty = 1.0f, .penalty_last_n = 64};
}

/* A number field of obj in [lo, hi] (integral if `integer`): 1 if present and valid (*out set),
 * 0 if absent or null, -1 if invalid. */
static int num_key(const cJSON *obj, const char *key, double lo, double hi, bool integer,
                   double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (!(x >= lo && x <= hi) || (integer && x != floor(x))) return -1;
    *out = x;
    return 1;
}

/* The request's fields that set wasi-nn defaults and caps (the request JSON of docs/abi.md). */
static void read_request(struct realm_sbx_tenant *t, struct sbx_nn *nn) {
    nn->req_read = true;
    nn->usage_finish = -1;
    opts_default(&nn->req_opts);
    nn->max_tokens = -1;
    nn->max_ctx = 0;
    if (!t->req || !t->req->json) return;
    cJSON *root = cJSON_ParseWithLength(t->req->json, t->req->json_len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    struct nn_opts *o = &nn->req_opts;
    double x;
    if (num_key(root, "max_tokens", 0, 1 << 30, true, &x) > 0)
        o->n_predict = nn->max_tokens = (int64_t)x;
    if (num_key(root, "n_ctx", 1, 1 << 30, true, &x) > 0) o->ctx_size = nn->max_ctx = (int32_t)x;
    if (num_key(root, "temperature", 0, 100, false, &x) > 0) o->smp.temp = (float)x;
    if (num_key(root, "top_k", 0, 1 << 30, true, &x) > 0) o->smp.top_k = (int32_t)x;
    if (num_key(root, "top_p", 0, 1, false, &x) > 0) o->smp.top_p = x > 0 ? (float)x : 1.0f;
    if (num_key(root, "min_p", 0, 1, false, &x) > 0) o->smp.min_p = (float)x;
    if (num_key(root, "repeat_penalty", 0.01, 100, false, &x) > 0) o->smp.repeat_penalty = (float)x;
    if (num_key(root, "presence_penalty", -2, 2, false, &x) > 0) o->smp.presence_penalty = (float)x;
    if (num_key(root, "frequency_penalty", -2, 2, false, &x) > 0)
        o->smp.frequency_penalty = (float)x;
    if (num_key(root, "seed", 0, 9007199254740991.0, true, &x) > 0) {
        o->smp.seed = (uint64_t)x;
        o->seed_set = true;
    }
    const cJSON *ie = cJSON_GetObjectItemCaseSensitive(root, "ignore_eos");
    o->ignore_eos = cJSON_IsTrue(ie);
    cJSON_Delete(root);
}

/* Metadata keys that WasmEdge's GGML backend knows and that do not apply here (hardware, logging,
 * multimodal): accepted silently. Any other unknown key is logged and ignored. */
/* Whether a grammar / json-schema item asks for a constraint (null and "" drop it). */
static bool constraint_set(const cJSON *it) {
    return it && !cJSON_IsNull(it) && !(cJSON_IsString(it) && !it->valuestring[0]);
}

static const char *const g_quiet_keys[] = {
    "enable-log", "enable-debug-log", "n-gpu-layers", "main-gpu",  "tensor-split", "use-mmap",
    "threads",    "batch-size",       "ubatch-size",  "embedding", "mmproj",       "image",
};

static bool quiet_key(const char *k) {
    for (size_t i = 0; i < sizeof g_quiet_keys / sizeof g_quiet_keys[0]; i++)
        if (!strcmp(k, g_quiet_keys[i])) return true;
    return false;
}

/* Applies a metadata object (WasmEdge's GGML keys) over o. The output constraint is not an
 * option: its item ("grammar" or "json-schema", possibly null or "" to drop one) goes to
 * *constraint (left alone if md has neither); the caller compiles it. Returns NN_SUCCESS, or
 * NN_INVALID_ARGUMENT naming the key in host_msg. */
static int apply_metadata(struct realm_sbx_tenant *t, const cJSON *md, struct nn_opts *o,
                          const cJSON **constraint) {
    const cJSON *gr = cJSON_GetObjectItemCaseSensitive(md, "grammar");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(md, "json-schema");
    if (gr && !cJSON_IsNull(gr) && !cJSON_IsString(gr))
        return nn_fail(t, NN_INVALID_ARGUMENT, "metadata: \"grammar\": expected GBNF text");
    if (js && !cJSON_IsNull(js) && !cJSON_IsString(js) && !cJSON_IsObject(js) && !cJSON_IsBool(js))
        return nn_fail(t, NN_INVALID_ARGUMENT,
                       "metadata: \"json-schema\": expected a JSON schema (object or string)");
    if (constraint_set(gr) && constraint_set(js))
        return nn_fail(t, NN_INVALID_ARGUMENT,
                       "metadata: \"grammar\" and \"json-schema\" are exclusive");
    if (constraint_set(gr) || (gr && !js))
        *constraint = gr;
    else if (js)
        *constraint = js;
    struct {
        const char *key;
        double lo, hi;
        bool integer;
    } const nums[] = {
        {"n-predict", -2, 1 << 30, true},
        {"ctx-size", 0, 1 << 30, true},
        {"temp", 0, 100, false},
        {"top-p", 0, 1, false},
        {"top-k", 0, 1 << 30, true},
        {"min-p", 0, 1, false},
        {"repeat-penalty", 0.01, 100, false},
        {"presence-penalty", -2, 2, false},
        {"frequency-penalty", -2, 2, false},
        {"seed", 0, 4294967295.0, true},
    };
    const cJSON *it;
    cJSON_ArrayForEach(it, md) {
        const char *k = it->string;
        int known = -1;
        for (int i = 0; i < (int)(sizeof nums / sizeof nums[0]); i++)
            if (!strcmp(k, nums[i].key)) known = i;
        if (known >= 0) {
            double x = 0;
            int r = num_key(md, k, nums[known].lo, nums[known].hi, nums[known].integer, &x);
            if (r < 0)
                return nn_fail(t, NN_INVALID_ARGUMENT,
                               "metadata: \"%s\": expected a number in %g..%g", k, nums[known].lo,
                               nums[known].hi);
            if (r == 0) continue;
            switch (known) {
            case 0:
                o->n_predict = x < 0 ? -1 : (int64_t)x;
                break;
            case 1:
                o->ctx_size = (int32_t)x;
                break;
            case 2:
                o->smp.temp = (float)x;
                break;
            case 3:
                o->smp.top_p = x > 0 ? (float)x : 1.0f;
                break;
            case 4:
                o->smp.top_k = (int32_t)x;
                break;
            case 5:
                o->smp.min_p = (float)x;
                break;
            case 6:
                o->smp.repeat_penalty = (float)x;
                break;
            case 7:
                o->smp.presence_penalty = (float)x;
                break;
            case 8:
                o->smp.frequency_penalty = (float)x;
                break;
            default:
                o->smp.seed = (uint64_t)x, o->seed_set = true;
                break;
            }
        } else if (!strcmp(k, "reverse-prompt")) {
            if (cJSON_IsNull(it)) continue;
            if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof o->reverse_prompt)
                return nn_fail(t, NN_INVALID_ARGUMENT,
                               "metadata: \"reverse-prompt\": expected a string of < 256 bytes");
            snprintf(o->reverse_prompt, sizeof o->reverse_prompt, "%s", it->valuestring);
        } else if (!strcmp(k, "stream-stdout")) {
            if (!cJSON_IsBool(it))
                return nn_fail(t, NN_INVALID_ARGUMENT,
                               "metadata: \"stream-stdout\": expected a boolean");
            o->stream_stdout = cJSON_IsTrue(it);
        } else if (!strcmp(k, "grammar") || !strcmp(k, "json-schema")) {
            continue; /* checked above */
        } else if (!quiet_key(k)) {
            realm_log(REALM_LOG_INFO, "sandbox",
                      "%s: wasi-nn: ignoring unknown metadata key \"%.64s\"", t->name, k);
        }
    }
    return NN_SUCCESS;
}

/* Parses guest JSON bytes (an object) within the host's JSON limits. */
static int parse_object(struct realm_sbx_tenant *t, const uint8_t *p, uint32_t len, cJSON **out) {
    if ((uint64_t)len > t->host->cfg.max_input_bytes)
        return nn_fail(t, NN_TOO_LARGE, "metadata of %u bytes exceeds max_input_bytes", len);
    if (realm_json_values_bound(p, len, t->host->cfg.max_json_values) >
        t->host->cfg.max_json_values)
        return nn_fail(t, NN_TOO_LARGE, "metadata: too many JSON values");
    cJSON *root = cJSON_ParseWithLength((const char *)p, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return nn_fail(t, NN_INVALID_ARGUMENT, "metadata: expected a JSON object");
    }
    *out = root;
    return NN_SUCCESS;
}

/* ---- output constraint ---- */

/* A grammar's <token> reference: the one token that spells it (special tokens included), or -1. */
static int32_t token_of(void *ctx, const char *text, size_t len) {
    const struct realm_tokenizer *tok = ctx;
    int32_t out[2];
    int64_t n = 0;
    int rc = realm_tokenize(tok, text, len, REALM_TOKENIZE_PARSE_SPECIAL, out, 2, &n);
    return rc == REALM_OK && n == 1 ? out[0] : -1;
}

/* Compiles a constraint item (constraint_set) for the model into *out. A grammar or schema that
 * does not parse is the guest's error: NN_INVALID_ARGUMENT with the reason logged and in
 * host_msg; over the size limits NN_TOO_LARGE. */
static int compile_constraint(struct realm_sbx_tenant *t, const struct sbx_model *m,
                              const cJSON *it, struct sbx_nn_grammar **out) {
    bool schema = strcmp(it->string, "grammar") != 0;
    char *printed = NULL;
    const char *text = it->valuestring;
    if (!cJSON_IsString(it)) { /* a schema given as a JSON value */
        if (!(printed = cJSON_PrintUnformatted(it))) return NN_TOO_LARGE;
        text = printed;
    }
    char err[200] = "";
    int rc = sbx_nn_grammar_new(text, strlen(text), schema, token_of, (void *)m->tok, out, err,
                                sizeof err);
    cJSON_free(printed);
    if (rc == REALM_OK) return NN_SUCCESS;
    realm_log(REALM_LOG_INFO, "sandbox", "%s: wasi-nn: metadata \"%s\": %s", t->name, it->string,
              err[0] ? err : realm_strerror(rc));
    return nn_fail(t, rc == REALM_E_FORMAT ? NN_INVALID_ARGUMENT : from_realm(rc),
                   "metadata: \"%s\": %s", it->string, err[0] ? err : realm_strerror(rc));
}

/* Replaces the context's constraint with the metadata item's (NULL item: unchanged; null or "":
 * none). On failure the context keeps its constraint. */
static int set_constraint(struct realm_sbx_tenant *t, struct nn_ctx *c, const cJSON *it) {
    if (!it) return NN_SUCCESS;
    struct sbx_nn_grammar *g = NULL;
    if (constraint_set(it)) {
        int rc = compile_constraint(t, c->model, it, &g);
        if (rc) return rc;
    }
    sbx_nn_grammar_free(c->gram);
    c->gram = g;
    return NN_SUCCESS;
}

/* The model's token table for grammar masking: every token's text (as token_piece gives it to
 * realm ABI guests) and the end-of-generation set. */
static int build_vocab(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    if (c->vocab) return NN_SUCCESS;
    const struct realm_tokenizer *tok = c->model->tok;
    int32_t nv = c->model->n_vocab;
    struct sbx_nn_vocab *v = NULL;
    int rc = sbx_nn_vocab_new(nv, &v);
    char small[256], *big = NULL;
    for (int32_t id = 0; rc == REALM_OK && id < nv; id++) {
        int64_t n = realm_token_piece(tok, id, false, small, sizeof small);
        const char *piece = small;
        if (n < 0) n = 0; /* no text: never allowed */
        if ((size_t)n > sizeof small) {
            realm_free(big);
            if (!(big = realm_malloc((size_t)n))) {
                rc = REALM_E_NOMEM;
                break;
            }
            realm_token_piece(tok, id, false, big, (size_t)n);
            piece = big;
        }
        rc = sbx_nn_vocab_set(v, id, piece, (size_t)n);
        if (rc == REALM_OK && realm_tokenizer_is_eog(tok, id)) rc = sbx_nn_vocab_set_eog(v, id);
    }
    realm_free(big);
    if (rc == REALM_OK) rc = sbx_nn_vocab_build(v);
    if (rc) {
        sbx_nn_vocab_free(v);
        return nn_fail(t, from_realm(rc), "grammar: vocabulary: %s", realm_strerror(rc));
    }
    c->vocab = v;
    return NN_SUCCESS;
}

/* ---- state ---- */

static struct sbx_nn *nn_state(struct realm_sbx_tenant *t) {
    if (!t->nn) t->nn = realm_calloc(1, sizeof *t->nn);
    if (t->nn && !t->nn->req_read) read_request(t, t->nn);
    return t->nn;
}

static struct nn_graph *get_graph(struct sbx_nn *nn, uint32_t id) {
    return id < NN_MAX_GRAPHS && nn->graphs[id].used ? &nn->graphs[id] : NULL;
}

static struct nn_ctx *get_ctx(struct sbx_nn *nn, uint32_t id) {
    return id < NN_MAX_CONTEXTS ? nn->ctxs[id] : NULL;
}

/* Ends the context's generation state; the prompt stays (fini_single, a new compute). */
static void ctx_reset(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    if (c->session) realm_session_rewind(c->session, 0);
    sbx_nn_sampler_free(c->smp);
    c->smp = NULL;
    c->prompt_done = c->have_last = c->finished = false;
    c->finish_status = NN_SUCCESS;
    c->n_gen = 0;
    realm_buf_reset(&c->text);
    c->piece_off = 0;
    /* the start state was built when the grammar was, so resetting to it cannot fail for lack
     * of memory or stacks */
    if (c->gram) (void)sbx_nn_grammar_reset(c->gram);
    (void)t;
}

static void ctx_close_session(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    if (!c->session) return;
    realm_session_free(c->session);
    c->session = NULL;
    t->kv_bytes -= c->kv_bytes;
    c->kv_bytes = 0;
    t->n_sessions--;
}

static void ctx_free(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    if (!c) return;
    ctx_close_session(t, c);
    sbx_nn_sampler_free(c->smp);
    sbx_nn_grammar_free(c->gram);
    sbx_nn_vocab_free(c->vocab);
    realm_free(c->logits);
    realm_free(c->prompt);
    realm_buf_free(&c->text);
    realm_free(c);
}

void sbx_nn_free(struct realm_sbx_tenant *t) {
    struct sbx_nn *nn = t->nn;
    if (!nn) return;
    for (int i = 0; i < NN_MAX_CONTEXTS; i++)
        ctx_free(t, nn->ctxs[i]);
    for (int i = 0; i < NN_MAX_GRAPHS; i++)
        cJSON_Delete(nn->graphs[i].config);
    realm_free(nn);
    t->nn = NULL;
}

void sbx_nn_usage(const struct realm_sbx_tenant *t, int32_t *prompt, int32_t *completion,
                  int32_t *finish) {
    const struct sbx_nn *nn = t->nn;
    *prompt = nn ? nn->usage_prompt : 0;
    *completion = nn ? nn->usage_completion : 0;
    *finish = nn ? nn->usage_finish : -1;
}

int sbx_nn_realm_status(const struct realm_sbx_tenant *t) {
    switch (t->nn ? t->nn->last_errno : NN_SUCCESS) {
    case NN_SUCCESS:
        return REALM_OK;
    case NN_MODEL_NOT_FOUND:
        return REALM_E_NOT_FOUND;
    case NN_PROMPT_TOO_LONG:
    case NN_CONTEXT_FULL:
        return REALM_E_CONTEXT_FULL;
    case NN_TOO_LARGE:
        return REALM_E_LIMIT;
    case NN_UNSUPPORTED:
        return REALM_E_UNSUPPORTED;
    case NN_RUNTIME_ERROR:
        return REALM_E_INTERNAL;
    default:
        return REALM_E_INVALID;
    }
}

/* A model this tenant may open: "" or "default" (unless a model has that name) is its default. */
static struct sbx_model *find_model(struct realm_sbx_tenant *t, const uint8_t *name, uint32_t len) {
    struct realm_sbx_host *h = t->host;
    for (int i = 0; i < h->n_models; i++) {
        struct sbx_model *m = h->models[i];
        if (m->name_len == len && !memcmp(m->name, name, len))
            return t->allowed && !t->allowed[i] ? NULL : m; /* forbidden looks like absent */
    }
    if (len == 0 || (len == 7 && !memcmp(name, "default", 7))) return t->default_model;
    return NULL;
}

static int new_graph(struct realm_sbx_tenant *t, const uint8_t *name, uint32_t len, cJSON *config,
                     uint32_t graph_ptr) {
    struct sbx_nn *nn = t->nn;
    if (!span(t, graph_ptr, 4)) {
        cJSON_Delete(config);
        return NN_INVALID_ARGUMENT;
    }
    struct sbx_model *m = len <= REALM_ABI_MAX_NAME ? find_model(t, name, len) : NULL;
    if (!m) {
        cJSON_Delete(config);
        return nn_fail(t, NN_MODEL_NOT_FOUND, "no model named \"%.*s\"", (int)(len < 64 ? len : 64),
                       (const char *)name);
    }
    for (uint32_t i = 0; i < NN_MAX_GRAPHS; i++) {
        if (nn->graphs[i].used) continue;
        nn->graphs[i] = (struct nn_graph){.used = true, .model = m, .config = config};
        return put_u32(t, graph_ptr, i);
    }
    cJSON_Delete(config);
    return nn_fail(t, NN_TOO_LARGE, "all %d graph handles in use", NN_MAX_GRAPHS);
}

/* ---- decoding ---- */

/* The context's session, opened on its first compute (the metadata has set ctx-size by then):
 * the limits of the realm ABI's session_open apply (max_sessions, max_ctx, max_kv_bytes). */
static int open_session(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    if (c->session) return NN_SUCCESS;
    struct sbx_model *m = c->model;
    const struct realm_sbx_config *cfg = &t->host->cfg;
    int32_t max_ctx = m->n_ctx_train;
    if (cfg->max_ctx > 0 && cfg->max_ctx < max_ctx) max_ctx = cfg->max_ctx;
    if (t->nn->max_ctx > 0 && t->nn->max_ctx < max_ctx) max_ctx = t->nn->max_ctx;
    int32_t n_ctx = c->opts.ctx_size > 0 && c->opts.ctx_size < max_ctx ? c->opts.ctx_size : max_ctx;
    if (t->n_sessions >= cfg->max_sessions)
        return nn_fail(t, NN_TOO_LARGE, "max_sessions (%d) reached", cfg->max_sessions);
    uint64_t kv = 0;
    if (!m->kv_pool && realm_mul_u64(m->kv_bytes_per_pos, (uint64_t)n_ctx, &kv))
        return NN_TOO_LARGE;
    if (cfg->max_kv_bytes && (kv > cfg->max_kv_bytes || t->kv_bytes > cfg->max_kv_bytes - kv))
        return nn_fail(t, NN_CONTEXT_FULL, "max_kv_bytes reached");
    struct realm_err e;
    realm_err_clear(&e);
    int rc = m->kv_pool
                 ? realm_session_new_paged(m->model, m->kv_pool, t->group, n_ctx, &c->session, &e)
                 : realm_session_new(m->model, n_ctx, &c->session, &e);
    if (rc) return nn_fail(t, from_realm(rc), "session: %s", e.msg[0] ? e.msg : realm_strerror(rc));
    c->n_ctx = n_ctx;
    c->kv_bytes = kv;
    t->kv_bytes += kv;
    t->n_sessions++;
    return NN_SUCCESS;
}

/* Appends toks to the session and leaves the last position's logits in c->logits, through the
 * model's scheduler; accounted as the realm ABI's decode accounts (struct realm_sbx_usage). */
static int nn_decode(struct realm_sbx_tenant *t, struct nn_ctx *c, const int32_t *toks, int32_t n) {
    uint64_t t0 = realm_now_ns();
    struct realm_err e;
    realm_err_clear(&e);
    /* t->stop: raised by the ticker at the call's wall deadline or on cancellation */
    int rc = sbx_backend_decode(c->model, t->group, c->session, toks, n, c->logits, &t->stop, &e);
    struct realm_sbx_usage *u = t->req ? &t->req->usage : NULL;
    if (u) u->decode_ns += realm_now_ns() - t0;
    if (rc == REALM_E_CANCELLED && !(t->call_cancel && atomic_load(t->call_cancel)) &&
        sbx_tenant_past_deadline(t))
        rc = REALM_E_TIMEOUT;
    if (rc) {
        if (rc == REALM_E_KV_FULL && strstr(e.msg, "pool exhausted"))
            return nn_fail(t, NN_CONTEXT_FULL, "kvpool: pool exhausted");
        return nn_fail(t, from_realm(rc), "decode: %s", e.msg[0] ? e.msg : realm_strerror(rc));
    }
    if (u) {
        if (u->decode_calls == 0) {
            uint64_t t1 = realm_now_ns();
            u->prefill_ns = t1 - t0;
            u->prefill_end_ns = t1 - t->call_start_ns;
        }
        u->decoded_tokens += n;
        u->decode_calls++;
    } else {
        t->unbilled_tokens += n;
    }
    t->call_logit_decodes++;
    if (c->sampled_call != t->call_serial) {
        c->sampled_call = t->call_serial;
        t->call_sampled_sessions++;
    }
    return NN_SUCCESS;
}

static void note_finish(struct sbx_nn *nn, struct nn_ctx *c, int finish, int status) {
    c->finished = true;
    c->finish_status = status;
    nn->usage_finish = finish;
}

/* n-predict, or the request's max_tokens over every context of this call. */
static bool cap_reached(const struct sbx_nn *nn, const struct nn_ctx *c) {
    return (c->opts.n_predict >= 0 && c->n_gen >= c->opts.n_predict) ||
           (nn->max_tokens >= 0 && nn->generated >= nn->max_tokens);
}

/* One step of generation: decodes the prompt (first step) or the token sampled last, samples
 * the next one and appends its text. NN_SUCCESS with a new piece, or NN_END_OF_SEQUENCE /
 * NN_CONTEXT_FULL / NN_PROMPT_TOO_LONG when generation is over, or an error. */
static int nn_step(struct realm_sbx_tenant *t, struct nn_ctx *c) {
    struct sbx_nn *nn = t->nn;
    if (c->finished) return c->finish_status;
    if (!c->prompt) return nn_fail(t, NN_INVALID_ARGUMENT, "compute before set_input");
    int rc = open_session(t, c);
    if (rc) return rc;
    if (!c->prompt_done) {
        if (c->n_prompt > c->n_ctx) {
            note_finish(nn, c, REALM_ABI_FINISH_LENGTH, NN_PROMPT_TOO_LONG);
            return nn_fail(t, NN_PROMPT_TOO_LONG, "prompt of %d tokens exceeds the context of %d",
                           c->n_prompt, c->n_ctx);
        }
        if (!c->smp) {
            struct sbx_nn_sampling sp = c->opts.smp;
            if (!c->opts.seed_set) {
                uint64_t v = 0;
                if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) v = realm_now_ns();
                sp.seed = v >> 1;
            }
            if ((rc = sbx_nn_sampler_new(&sp, c->model->n_vocab, &c->smp)))
                return nn_fail(t, from_realm(rc), "sampler: invalid parameters");
            for (int32_t i = 0; i < c->n_prompt; i++)
                sbx_nn_sampler_accept(c->smp, c->prompt[i]);
        }
        if ((rc = nn_decode(t, c, c->prompt, c->n_prompt))) return rc;
        c->prompt_done = true;
        nn->usage_prompt += c->n_prompt;
    } else if (cap_reached(nn, c)) { /* before decoding a token nothing would follow */
        note_finish(nn, c, REALM_ABI_FINISH_LENGTH, NN_END_OF_SEQUENCE);
        return NN_END_OF_SEQUENCE;
    } else if (c->have_last) {
        if (realm_session_len(c->session) >= c->n_ctx) {
            note_finish(nn, c, REALM_ABI_FINISH_LENGTH, NN_CONTEXT_FULL);
            return NN_CONTEXT_FULL;
        }
        if ((rc = nn_decode(t, c, &c->last_tok, 1))) return rc;
        c->have_last = false;
    }
    if (cap_reached(nn, c)) {
        note_finish(nn, c, REALM_ABI_FINISH_LENGTH, NN_END_OF_SEQUENCE);
        return NN_END_OF_SEQUENCE;
    }
    if (c->gram && (rc = build_vocab(t, c))) return rc;
    int32_t id = c->gram ? sbx_nn_sampler_sample_grammar(c->smp, c->gram, c->vocab, c->logits)
                         : sbx_nn_sampler_sample(c->smp, c->logits);
    if (id == REALM_E_INVALID && c->gram)
        return nn_fail(t, NN_RUNTIME_ERROR, "grammar: no token can continue the output");
    if (id < 0) return nn_fail(t, from_realm(id), "sampler: %s", realm_strerror(id));
    c->n_gen++;
    nn->generated++;
    nn->usage_completion++;
    /* under a grammar an end-of-generation token only comes once the grammar is complete: it
     * ends the output even with ignore_eos (as in the default guest) */
    if ((!c->opts.ignore_eos || c->gram) && realm_tokenizer_is_eog(c->model->tok, id)) {
        note_finish(nn, c, REALM_ABI_FINISH_STOP, NN_END_OF_SEQUENCE);
        return NN_END_OF_SEQUENCE;
    }
    if (c->gram && (rc = sbx_nn_grammar_accept(c->gram, c->vocab, id)))
        return nn_fail(t, NN_RUNTIME_ERROR, "grammar: token %d: %s", id, realm_strerror(rc));
    sbx_nn_sampler_accept(c->smp, id);
    char small[256], *piece = small;
    int64_t n = realm_token_piece(c->model->tok, id, false, small, sizeof small);
    if (n < 0) return nn_fail(t, NN_RUNTIME_ERROR, "token %d: no text", id);
    if ((size_t)n > sizeof small) { /* a long piece: its exact size */
        if (!(piece = realm_malloc((size_t)n))) return NN_TOO_LARGE;
        realm_token_piece(c->model->tok, id, false, piece, (size_t)n);
    }
    c->piece_off = c->text.len;
    rc = realm_buf_append(&c->text, piece, (size_t)n);
    if (piece != small) realm_free(piece);
    if (rc) return NN_TOO_LARGE;
    c->last_tok = id;
    c->have_last = true;
    size_t rl = strlen(c->opts.reverse_prompt);
    if (rl && c->text.len >= rl &&
        !memcmp(c->text.data + c->text.len - rl, c->opts.reverse_prompt, rl))
        note_finish(nn, c, REALM_ABI_FINISH_STOP, NN_END_OF_SEQUENCE); /* this piece is the last */
    else if (c->gram && sbx_nn_grammar_done(c->gram)) /* a finished grammar: nothing may follow */
        note_finish(nn, c, REALM_ABI_FINISH_STOP, NN_END_OF_SEQUENCE);
    return NN_SUCCESS;
}

/* ---- the imports ---- */

typedef int (*nn_fn)(struct realm_sbx_tenant *t, const wasmtime_val_t *a);
#define U(i) ((uint32_t)a[i].of.i32)

static int nn_load(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    uint32_t n = U(1), enc = U(2), target = U(3);
    const uint8_t *b = span(t, U(0), (uint64_t)n * 8);
    if (!b || n == 0 || target > NN_TARGET_AUTO || !span(t, U(4), 4)) return NN_INVALID_ARGUMENT;
    if (enc != NN_ENCODING_GGML)
        return nn_fail(t, NN_INVALID_ENCODING, "load: encoding %u, only GGML (6)", enc);
    /* only a configured model, named as WasmEdge names preloaded ones: "preload:NAME" */
    const uint8_t *p = span(t, get_u32(b), get_u32(b + 4));
    uint32_t len = get_u32(b + 4);
    size_t pl = strlen(NN_PRELOAD);
    if (!p) return NN_INVALID_ARGUMENT;
    if (len < pl || memcmp(p, NN_PRELOAD, pl))
        return nn_fail(t, NN_UNSUPPORTED, "load: model bytes are not accepted; use load_by_name");
    return new_graph(t, p + pl, len - (uint32_t)pl, NULL, U(4));
}

static int nn_load_by_name(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    const uint8_t *name = span(t, U(0), U(1));
    if (!name) return NN_INVALID_ARGUMENT;
    return new_graph(t, name, U(1), NULL, U(2));
}

static int nn_load_by_name_with_config(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    const uint8_t *name = span(t, U(0), U(1)), *cfg = span(t, U(2), U(3));
    if (!name || !cfg) return NN_INVALID_ARGUMENT;
    cJSON *config = NULL;
    if (U(3) > 0) {
        int rc = parse_object(t, cfg, U(3), &config);
        if (rc) return rc;
        struct nn_opts check = t->nn->req_opts; /* reject bad values at load, as WasmEdge does */
        const cJSON *cons = NULL;               /* compiled per context (init_execution_context) */
        if ((rc = apply_metadata(t, config, &check, &cons))) {
            cJSON_Delete(config);
            return rc;
        }
    }
    return new_graph(t, name, U(1), config, U(4));
}

static int nn_init_execution_context(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_nn *nn = t->nn;
    struct nn_graph *g = get_graph(nn, U(0));
    if (!g) return nn_fail(t, NN_INVALID_ARGUMENT, "init_execution_context: bad graph %u", U(0));
    if (!span(t, U(1), 4)) return NN_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < NN_MAX_CONTEXTS; i++) {
        if (nn->ctxs[i]) continue;
        struct nn_ctx *c = realm_calloc(1, sizeof *c);
        if (c) c->logits = realm_malloc((size_t)g->model->n_vocab * sizeof *c->logits);
        if (!c || !c->logits) {
            realm_free(c);
            return NN_TOO_LARGE;
        }
        c->graph = (int32_t)U(0);
        c->model = g->model;
        c->opts = nn->req_opts;
        const cJSON *cons = NULL;
        if (g->config) apply_metadata(t, g->config, &c->opts, &cons); /* checked at load */
        int rc = set_constraint(t, c, cons);
        if (rc) {
            ctx_free(t, c);
            return rc;
        }
        nn->ctxs[i] = c;
        return put_u32(t, U(1), i);
    }
    return nn_fail(t, NN_TOO_LARGE, "all %d execution contexts in use", NN_MAX_CONTEXTS);
}

/* set_input(ctx, index, tensor*): tensor = {dims_ptr, dims_len, type, data_ptr, data_len} (u32
 * each). Index 0: the prompt (tokenized with BOS and special tokens, as the GGML backend does);
 * index 1: metadata JSON. Either resets the context's generation. */
static int nn_set_input(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "set_input: bad context %u", U(0));
    const uint8_t *tensor = span(t, U(2), 20);
    if (!tensor) return NN_INVALID_ARGUMENT;
    uint32_t dims = get_u32(tensor), n_dims = get_u32(tensor + 4), type = get_u32(tensor + 8);
    uint32_t len = get_u32(tensor + 16);
    if (!span(t, dims, (uint64_t)n_dims * 4) || type > NN_TENSOR_I64) return NN_INVALID_ARGUMENT;
    const uint8_t *data = span(t, get_u32(tensor + 12), len);
    if (!data) return NN_INVALID_ARGUMENT;
    int rc;
    if (U(1) == 1) {
        cJSON *md = NULL;
        if ((rc = parse_object(t, data, len, &md))) return rc;
        struct nn_opts o = c->opts;
        const cJSON *cons = NULL;
        rc = apply_metadata(t, md, &o, &cons);
        if (rc == NN_SUCCESS) rc = set_constraint(t, c, cons);
        cJSON_Delete(md);
        if (rc) return rc;
        /* the request's caps stay: a guest cannot raise its own limits */
        if (t->nn->max_ctx > 0 && (o.ctx_size == 0 || o.ctx_size > t->nn->max_ctx))
            o.ctx_size = t->nn->max_ctx;
        if (c->session && o.ctx_size != c->opts.ctx_size) ctx_close_session(t, c);
        c->opts = o;
        ctx_reset(t, c);
        return NN_SUCCESS;
    }
    if (U(1) != 0)
        return nn_fail(t, NN_INVALID_ARGUMENT, "set_input: index %u (0 prompt, 1 metadata)", U(1));
    if ((uint64_t)len > t->host->cfg.max_input_bytes)
        return nn_fail(t, NN_TOO_LARGE, "prompt of %u bytes exceeds max_input_bytes", len);
    /* at most one token per byte plus BOS/EOS; the exact size if that is not enough */
    int64_t cap = (int64_t)len + 8, n = 0;
    int32_t *toks = realm_malloc((size_t)cap * sizeof *toks);
    if (!toks) return NN_TOO_LARGE;
    const struct realm_tokenizer *tok = c->model->tok;
    uint32_t flags = REALM_TOKENIZE_ADD_BOS | REALM_TOKENIZE_PARSE_SPECIAL;
    rc = realm_tokenize(tok, (const char *)data, len, flags, toks, cap, &n);
    if (rc == REALM_E_TOO_SMALL && n > cap && n <= INT32_MAX) {
        realm_free(toks);
        cap = n;
        toks = realm_malloc((size_t)cap * sizeof *toks);
        if (!toks) return NN_TOO_LARGE;
        rc = realm_tokenize(tok, (const char *)data, len, flags, toks, cap, &n);
    }
    if (rc == REALM_OK && n == 0) { /* a generation needs one input token */
        int32_t bos = realm_tokenizer_bos(tok);
        if (bos < 0) rc = REALM_E_INVALID;
        toks[0] = bos;
        n = 1;
    }
    if (rc) {
        realm_free(toks);
        return nn_fail(t, from_realm(rc), "tokenize: %s", realm_strerror(rc));
    }
    realm_free(c->prompt);
    c->prompt = toks;
    c->n_prompt = (int32_t)n;
    ctx_reset(t, c);
    return NN_SUCCESS;
}

/* The whole generation; with stream-stdout each piece also goes to the request's output. */
static int nn_compute(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "compute: bad context %u", U(0));
    ctx_reset(t, c);
    for (;;) {
        int rc = nn_step(t, c);
        if (rc == NN_END_OF_SEQUENCE) return NN_SUCCESS;
        if (rc) return rc;
        struct realm_sbx_request *r = t->req;
        if (c->opts.stream_stdout && r && r->emit) {
            size_t n = c->text.len - c->piece_off;
            if (r->usage.output_bytes + n > t->host->cfg.max_output_bytes)
                return nn_fail(t, NN_TOO_LARGE, "output exceeds max_output_bytes");
            if (n && r->emit(r->emit_user, c->text.data + c->piece_off, n) < 0) {
                atomic_store(&r->cancel, true);
                return NN_RUNTIME_ERROR;
            }
            r->usage.output_bytes += (int64_t)n;
        }
        if (t->call_cancel && atomic_load(t->call_cancel)) return NN_RUNTIME_ERROR;
    }
}

static int nn_compute_single(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "compute_single: bad context %u", U(0));
    return nn_step(t, c);
}

/* Writes out[0..n) to the guest's buffer (too small: nothing but the size needed, TooLarge). */
static int write_output(struct realm_sbx_tenant *t, const wasmtime_val_t *a, const char *out,
                        size_t n) {
    uint8_t *buf = span(t, U(2), U(3));
    if (!buf || !span(t, U(4), 4)) return NN_INVALID_ARGUMENT;
    if (n > U(3)) {
        put_u32(t, U(4), (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n));
        return NN_TOO_LARGE;
    }
    if (n) memcpy(buf, out, n);
    return put_u32(t, U(4), (uint32_t)n);
}

static int usage_output(struct realm_sbx_tenant *t, const wasmtime_val_t *a, struct nn_ctx *c) {
    char js[160];
    int n = snprintf(js, sizeof js,
                     "{\"input_tokens\":%d,\"output_tokens\":%lld,\"llama_build_number\":0,"
                     "\"llama_commit\":\"realm\"}",
                     c->prompt_done ? c->n_prompt : 0, (long long)c->n_gen);
    return write_output(t, a, js, (size_t)n);
}

static int nn_get_output(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "get_output: bad context %u", U(0));
    if (U(1) == 1) return usage_output(t, a, c);
    if (U(1) != 0) return NN_INVALID_ARGUMENT;
    return write_output(t, a, c->text.data ? c->text.data : "", c->text.len);
}

static int nn_get_output_single(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "get_output_single: bad context %u", U(0));
    if (U(1) == 1) return usage_output(t, a, c);
    if (U(1) != 0) return NN_INVALID_ARGUMENT;
    size_t off = c->piece_off <= c->text.len ? c->piece_off : c->text.len;
    return write_output(t, a, c->text.data ? c->text.data + off : "", c->text.len - off);
}

static int nn_fini_single(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c) return nn_fail(t, NN_INVALID_ARGUMENT, "fini_single: bad context %u", U(0));
    ctx_reset(t, c);
    return NN_SUCCESS;
}

static int nn_finalize_execution_context(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct nn_ctx *c = get_ctx(t->nn, U(0));
    if (!c)
        return nn_fail(t, NN_INVALID_ARGUMENT, "finalize_execution_context: bad context %u", U(0));
    t->nn->ctxs[U(0)] = NULL;
    ctx_free(t, c);
    return NN_SUCCESS;
}

static int nn_unload(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_nn *nn = t->nn;
    struct nn_graph *g = get_graph(nn, U(0));
    if (!g) return nn_fail(t, NN_INVALID_ARGUMENT, "unload: bad graph %u", U(0));
    for (int i = 0; i < NN_MAX_CONTEXTS; i++) /* its contexts go with it */
        if (nn->ctxs[i] && nn->ctxs[i]->graph == (int32_t)U(0)) {
            ctx_free(t, nn->ctxs[i]);
            nn->ctxs[i] = NULL;
        }
    cJSON_Delete(g->config);
    memset(g, 0, sizeof *g);
    return NN_SUCCESS;
}
#undef U

/* ---- the import table ---- */

struct nn_def {
    const char *name;
    const char *sig;
    nn_fn fn;
    bool when_cancelled; /* clean-up still works after cancellation or the deadline */
};

static const struct nn_def g_nn[] = {
    {"load", "iiiii:i", nn_load, false},
    {"load_by_name", "iii:i", nn_load_by_name, false},
    {"load_by_name_with_config", "iiiii:i", nn_load_by_name_with_config, false},
    {"init_execution_context", "ii:i", nn_init_execution_context, false},
    {"set_input", "iii:i", nn_set_input, false},
    {"get_output", "iiiii:i", nn_get_output, false},
    {"get_output_single", "iiiii:i", nn_get_output_single, false},
    {"compute", "i:i", nn_compute, false},
    {"compute_single", "i:i", nn_compute_single, false},
    {"fini_single", "i:i", nn_fini_single, true},
    {"finalize_execution_context", "i:i", nn_finalize_execution_context, true},
    {"unload", "i:i", nn_unload, true},
};
#define N_NN (sizeof g_nn / sizeof g_nn[0])

bool sbx_nn_known_import(const char *name, size_t name_len, const char *sig) {
    for (size_t i = 0; i < N_NN; i++)
        if (strlen(g_nn[i].name) == name_len && !memcmp(g_nn[i].name, name, name_len))
            return !strcmp(g_nn[i].sig, sig);
    return false;
}

static wasm_trap_t *nn_dispatch(void *env, wasmtime_caller_t *caller, const wasmtime_val_t *args,
                                size_t nargs, wasmtime_val_t *results, size_t nresults) {
    (void)nargs, (void)nresults; /* the linker checked the types */
    const struct nn_def *d = env;
    struct realm_sbx_tenant *t = wasmtime_context_get_data(wasmtime_caller_context(caller));
    uint64_t t0 = realm_now_ns();
    int r;
    if (t->call_cancel && !d->when_cancelled && atomic_load(t->call_cancel))
        r = NN_RUNTIME_ERROR;
    else if (t->wall_deadline_ns && !d->when_cancelled && t0 >= t->wall_deadline_ns)
        r = nn_fail(t, NN_RUNTIME_ERROR, "wall-clock limit reached");
    else {
        /* what the import allocates counts against its tenant's host memory */
        struct realm_alloc_budget *prev = realm_alloc_budget_enter(t->host_budget);
        r = nn_state(t) ? d->fn(t, args) : NN_TOO_LARGE;
        realm_alloc_budget_leave(prev);
    }
    if (r && r != NN_END_OF_SEQUENCE && t->nn) t->nn->last_errno = r;
    results[0].kind = WASMTIME_I32;
    results[0].of.i32 = r;
    uint64_t dt = realm_now_ns() - t0;
    t->call_host_ns += dt;
    if (t->req) t->req->usage.host_ns += dt;
    return NULL;
}

int sbx_nn_define_imports(struct realm_sbx_host *h, struct realm_err *err) {
    static const char mod[] = "wasi_ephemeral_nn";
    for (size_t i = 0; i < N_NN; i++) {
        const struct nn_def *d = &g_nn[i];
        size_t np = strchr(d->sig, ':') - d->sig;
        wasm_valtype_t *ps[8];
        for (size_t k = 0; k < np; k++)
            ps[k] = wasm_valtype_new(WASM_I32);
        wasm_valtype_t *rs[1] = {wasm_valtype_new(WASM_I32)};
        wasm_valtype_vec_t pv, rv;
        wasm_valtype_vec_new(&pv, np, ps);
        wasm_valtype_vec_new(&rv, 1, rs);
        wasm_functype_t *ft = wasm_functype_new(&pv, &rv);
        wasmtime_error_t *e =
            wasmtime_linker_define_func(h->linker, mod, sizeof mod - 1, d->name, strlen(d->name),
                                        ft, nn_dispatch, (void *)d, NULL);
        wasm_functype_delete(ft);
        if (e) {
            char msg[256];
            sbx_error_text(e, msg, sizeof msg);
            return realm_err_set(err, REALM_E_INTERNAL, "sandbox: define %s.%s: %s", mod, d->name,
                                 msg);
        }
    }
    return REALM_OK;
}
