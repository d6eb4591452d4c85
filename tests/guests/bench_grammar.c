/*
 * bench_grammar.c — a guest benchmark of grammar-constrained sampling (issue 14 target: <= 1 ms
 * per token over SmolLM2's 49k vocabulary for the JSON grammar), run inside the sandbox:
 *   realm run -m SmolLM2-135M-Instruct.Q4_1.gguf --guest build/tests/guests/bench_grammar.wasm \
 *             -p "A JSON object describing a person:" -n 96
 * Generates up to max_tokens tokens with the model under the JSON-object grammar and times, per
 * step, on the same logits: plain sampling (rg_sampler_sample, no grammar), grammar sampling
 * (rg_sample_grammar, what a guest calls) and a full vocabulary mask (rg_gmatch_mask, the worst
 * case). Decode time is not counted. Wall time (realm_now_ns): on a loaded machine the p99 of the
 * longer calls includes preemptions. Emits the report and the generated text.
 */
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void report(struct rg_buf *out, const char *what, int64_t *v, int n) {
    if (n <= 0) return;
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    int64_t sum = 0;
    for (int k = 0; k < n; k++)
        sum += v[k];
    char line[200];
    int len = rg_fmt(line, sizeof line,
                     "%s: p50 %lld us, p99 %lld us, mean %lld us, max %lld us (n=%d)\n", what,
                     (long long)(v[n / 2] / 1000), (long long)(v[(n * 99) / 100] / 1000),
                     (long long)(sum / n / 1000), (long long)(v[n - 1] / 1000), n);
    rg_buf_append(out, line, (size_t)len);
}

#define FAIL(rc_, ...)                                                                             \
    do {                                                                                           \
        rg_logf(REALM_ABI_LOG_ERROR, __VA_ARGS__);                                                 \
        return (rc_);                                                                              \
    } while (0)

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    char *req_text;
    size_t req_len;
    int32_t rc = rg_request_read_all(&req_text, &req_len);
    if (rc) return rc;
    struct rj_value *req;
    if (rj_parse(req_text, req_len, &req, NULL, 0)) FAIL(REALM_E_FORMAT, "bad request");
    const char *prompt = rj_string(rj_get(req, "prompt"), "A JSON object describing a person:");
    int32_t max_tokens = (int32_t)rj_number(rj_get(req, "max_tokens"), 96);
    if (max_tokens <= 0 || max_tokens > 4096) max_tokens = 96;

    int32_t model = realm_model_open("", 0);
    if (model < 0) FAIL(model, "model_open: %s", rg_strerror(model));
    char *info;
    size_t info_len;
    if ((rc = rg_model_info_all(model, &info, &info_len))) return rc;
    struct rj_value *mi;
    if (rj_parse(info, info_len, &mi, NULL, 0)) FAIL(REALM_E_FORMAT, "bad model info");
    int32_t n_vocab = (int32_t)rj_number(rj_get(mi, "n_vocab"), 0);
    const struct rj_value *eogv = rj_get(mi, "eog");
    int32_t eog[16];
    size_t n_eog = 0;
    for (size_t k = 0; eogv && eogv->type == RJ_ARRAY && k < eogv->n && n_eog < 16; k++)
        eog[n_eog++] = (int32_t)eogv->items[k].num;

    int64_t t0 = realm_now_ns();
    struct rg_vocab *v;
    if ((rc = rg_vocab_load(model, n_vocab, eog, n_eog, &v)))
        FAIL(rc, "vocab: %s", rg_strerror(rc));
    int64_t t_vocab = realm_now_ns() - t0;
    char err[256];
    struct rg_grammar *g;
    const char *gbnf = rg_json_object_gbnf();
    t0 = realm_now_ns();
    if ((rc = rg_grammar_parse(gbnf, strlen(gbnf), NULL, &g, err, sizeof err))) FAIL(rc, "%s", err);
    int64_t t_parse = realm_now_ns() - t0;
    struct rg_gmatch *m;
    if ((rc = rg_gmatch_new(g, &m))) FAIL(rc, "matcher: %s", rg_strerror(rc));

    int32_t *toks, n_toks;
    if ((rc = rg_tokenize_all(model, prompt, strlen(prompt), REALM_ABI_TOKENIZE_ADD_BOS, &toks,
                              &n_toks)))
        return rc;
    int32_t session = realm_session_open(model, n_toks + max_tokens + 1);
    if (session < 0) FAIL(session, "session_open: %s", rg_strerror(session));
    float *logits = malloc((size_t)n_vocab * sizeof *logits),
          *copy = malloc((size_t)n_vocab * sizeof *copy);
    int64_t *t_plain = malloc((size_t)max_tokens * sizeof(int64_t)),
            *t_gr = malloc((size_t)max_tokens * sizeof(int64_t)),
            *t_mask = malloc((size_t)max_tokens * sizeof(int64_t));
    if (!logits || !copy || !t_plain || !t_gr || !t_mask) return REALM_E_NOMEM;
    if ((rc = realm_decode(session, toks, n_toks, logits, n_vocab)))
        FAIL(rc, "decode: %s", rg_strerror(rc));

    struct rg_sampler_params sp;
    rg_sampler_params_default(&sp);
    sp.temperature = (float)rj_number(rj_get(req, "temperature"), 0.8);
    sp.top_k = (int32_t)rj_number(rj_get(req, "top_k"), 40);
    sp.top_p = (float)rj_number(rj_get(req, "top_p"), 0.95);
    sp.seed = 1234;
    struct rg_sampler plain, gs;
    if (rg_sampler_init(&plain, &sp, n_vocab) || rg_sampler_init(&gs, &sp, n_vocab))
        return REALM_E_NOMEM;
    struct rg_buf text = {0};
    int steps = 0;
    bool complete = false;
    for (; steps < max_tokens; steps++) {
        memcpy(copy, logits, (size_t)n_vocab * sizeof *copy);
        t0 = realm_now_ns();
        rg_sampler_sample(&plain, copy);
        t_plain[steps] = realm_now_ns() - t0;
        memcpy(copy, logits, (size_t)n_vocab * sizeof *copy);
        t0 = realm_now_ns();
        rg_gmatch_mask(m, v, copy);
        t_mask[steps] = realm_now_ns() - t0;
        t0 = realm_now_ns();
        int32_t tok = rg_sample_grammar(&gs, m, v, logits);
        t_gr[steps] = realm_now_ns() - t0;
        if (tok < 0) FAIL(tok, "grammar: no token allowed at step %d", steps);
        bool is_eog = false;
        for (size_t k = 0; k < n_eog; k++)
            is_eog |= eog[k] == tok;
        if (is_eog) {
            complete = true;
            steps++;
            break;
        }
        if ((rc = rg_gmatch_accept_token(m, v, tok))) FAIL(rc, "accept: %s", rg_strerror(rc));
        char piece[256];
        int32_t pl = realm_token_piece(model, tok, piece, sizeof piece);
        if (pl > 0) rg_buf_append(&text, piece, (size_t)(pl < 256 ? pl : 256));
        if (rg_gmatch_done(m)) {
            complete = true;
            steps++;
            break;
        }
        if ((rc = realm_decode(session, &tok, 1, logits, n_vocab)))
            FAIL(rc, "decode: %s", rg_strerror(rc));
    }
    struct rg_buf out = {0};
    char line[256];
    int len =
        rg_fmt(line, sizeof line,
               "vocab %d tokens loaded through token_piece in %lld ms; grammar parsed in %lld us\n",
               n_vocab, (long long)(t_vocab / 1000000), (long long)(t_parse / 1000));
    rg_buf_append(&out, line, (size_t)len);
    report(&out, "plain sampling", t_plain, steps);
    report(&out, "grammar sampling", t_gr, steps);
    report(&out, "full mask", t_mask, steps);
    len = rg_fmt(line, sizeof line, "%s after %d tokens: ", complete ? "complete" : "incomplete",
                 steps);
    rg_buf_append(&out, line, (size_t)len);
    rg_buf_append(&out, text.data ? text.data : "", text.len);
    rg_buf_append(&out, "\n", 1);
    rc = realm_emit(out.data, (int32_t)out.len);
    realm_usage(n_toks, steps, 0);
    rg_buf_free(&out);
    rg_buf_free(&text);
    rg_sampler_free(&plain);
    rg_sampler_free(&gs);
    rg_gmatch_free(m);
    rg_grammar_free(g);
    rg_vocab_free(v);
    free(logits), free(copy), free(t_plain), free(t_gr), free(t_mask), free(toks), free(info),
        free(req_text);
    rj_free(req);
    rj_free(mi);
    realm_session_close(session);
    return rc;
}
