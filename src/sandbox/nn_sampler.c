/*
 * nn_sampler.c — the guest SDK's sampler (guest/sdk/sample.c, compiled into the host library)
 * behind an opaque type for wasi_nn.c. Reusing it, rather than a second sampler, makes a wasi-nn
 * guest's tokens equal the default guest's for the same logits and parameters: same penalty
 * formulas, same chain order, same argmax tie rule, same seeded draw.
 *
 * This file includes the guest SDK header, whose import declarations clash with the host's
 * headers; that is why the wrapper lives alone here.
 *
 * The grammar engine (guest/sdk/grammar.c, json.c, json_schema.c) is compiled into the host too;
 * the few SDK helpers it needs from sdk.c, which also holds the guest's imports, are defined at
 * the end of this file over realm_malloc.
 *
 * Owns: each sampler and its scratch, each grammar with its matcher, each vocabulary table. Thread
 * rule: one thread at a time per sampler.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/utf8.h"
#include "realm_grammar.h"
#include "realm_guest.h"
#include "sandbox/nn_sampler.h"

struct sbx_nn_sampler {
    struct rg_sampler s;
};

int sbx_nn_sampler_new(const struct sbx_nn_sampling *p, int32_t n_vocab,
                       struct sbx_nn_sampler **out) {
    struct rg_sampler_params sp;
    rg_sampler_params_default(&sp);
    sp.temperature = p->temp;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty;
    sp.presence_penalty = p->presence_penalty;
    sp.frequency_penalty = p->frequency_penalty;
    sp.penalty_last_n = p->penalty_last_n;
    sp.seed = p->seed;
    struct sbx_nn_sampler *s = realm_calloc(1, sizeof *s);
    if (!s) return REALM_E_NOMEM;
    int32_t rc = rg_sampler_init(&s->s, &sp, n_vocab);
    if (rc) {
        realm_free(s);
        return rc;
    }
    *out = s;
    return REALM_OK;
}

void sbx_nn_sampler_accept(struct sbx_nn_sampler *s, int32_t token) {
    rg_sampler_accept(&s->s, token);
}

int32_t sbx_nn_sampler_sample(struct sbx_nn_sampler *s, float *logits) {
    return rg_sampler_sample(&s->s, logits);
}

void sbx_nn_sampler_free(struct sbx_nn_sampler *s) {
    if (!s) return;
    rg_sampler_free(&s->s);
    realm_free(s);
}

/* ---- constrained sampling ---- */

struct sbx_nn_grammar {
    struct rg_grammar *g;
    struct rg_gmatch *m;
};

/* The GBNF of a JSON schema text (a malloc'd string in *gbnf, through nn_sdk_alloc.h). */
static int schema_gbnf(const char *text, size_t len, char **gbnf, char *err, size_t err_cap) {
    struct rj_value *schema = NULL;
    char perr[160] = "";
    int32_t rc = rj_parse(text, len, &schema, perr, sizeof perr);
    if (rc) {
        snprintf(err, err_cap, "json schema: not JSON: %s", perr);
        return rc == REALM_E_NOMEM ? REALM_E_NOMEM : REALM_E_FORMAT;
    }
    rc = rg_json_schema_to_gbnf(schema, gbnf, err, err_cap);
    rj_free(schema);
    return rc;
}

int sbx_nn_grammar_new(const char *text, size_t len, bool is_schema,
                       int32_t (*token_of)(void *ctx, const char *text, size_t len), void *ctx,
                       struct sbx_nn_grammar **out, char *err, size_t err_cap) {
    if (len > SBX_NN_GRAMMAR_MAX_TEXT) {
        snprintf(err, err_cap, "%s of %zu bytes exceeds %u", is_schema ? "json schema" : "grammar",
                 len, SBX_NN_GRAMMAR_MAX_TEXT);
        return REALM_E_LIMIT;
    }
    char *gbnf = NULL;
    int32_t rc = REALM_OK;
    if (is_schema && (rc = schema_gbnf(text, len, &gbnf, err, err_cap))) return rc;
    struct sbx_nn_grammar *g = realm_calloc(1, sizeof *g);
    if (!g) rc = REALM_E_NOMEM;
    if (!rc)
        rc = rg_grammar_parse_ex(gbnf ? gbnf : text, gbnf ? strlen(gbnf) : len, "root", token_of,
                                 ctx, &g->g, err, err_cap);
    if (!rc && (rc = rg_gmatch_new(g->g, &g->m)))
        snprintf(err, err_cap, "grammar: %s",
                 rc == REALM_E_LIMIT ? "too many parse stacks at the start" : "out of memory");
    realm_free(gbnf); /* nn_sdk_alloc.h: the SDK allocates with realm_malloc */
    if (rc) {
        sbx_nn_grammar_free(g);
        return rc;
    }
    *out = g;
    return REALM_OK;
}

int sbx_nn_grammar_reset(struct sbx_nn_grammar *g) {
    return rg_gmatch_reset(g->m);
}

void sbx_nn_grammar_free(struct sbx_nn_grammar *g) {
    if (!g) return;
    rg_gmatch_free(g->m);
    rg_grammar_free(g->g);
    realm_free(g);
}

/* struct sbx_nn_vocab is struct rg_vocab under another name */
int sbx_nn_vocab_new(int32_t n_vocab, struct sbx_nn_vocab **out) {
    return rg_vocab_new(n_vocab, (struct rg_vocab **)out);
}

int sbx_nn_vocab_set(struct sbx_nn_vocab *v, int32_t token, const char *piece, size_t len) {
    return rg_vocab_set((struct rg_vocab *)v, token, piece, len);
}

int sbx_nn_vocab_set_eog(struct sbx_nn_vocab *v, int32_t token) {
    return rg_vocab_set_eog((struct rg_vocab *)v, token);
}

int sbx_nn_vocab_build(struct sbx_nn_vocab *v) {
    return rg_vocab_build((struct rg_vocab *)v);
}

void sbx_nn_vocab_free(struct sbx_nn_vocab *v) {
    rg_vocab_free((struct rg_vocab *)v);
}

int32_t sbx_nn_sampler_sample_grammar(struct sbx_nn_sampler *s, struct sbx_nn_grammar *g,
                                      const struct sbx_nn_vocab *v, float *logits) {
    return rg_sample_grammar(&s->s, g->m, (const struct rg_vocab *)v, logits);
}

int sbx_nn_grammar_accept(struct sbx_nn_grammar *g, const struct sbx_nn_vocab *v, int32_t token) {
    return rg_gmatch_accept_token(g->m, (const struct rg_vocab *)v, token);
}

bool sbx_nn_grammar_done(const struct sbx_nn_grammar *g) {
    return rg_gmatch_done(g->m);
}

/* ---- the guest SDK helpers the grammar engine links against (guest/sdk/sdk.c's, which cannot
 * come along: that file defines the guest's imports) ---- */

int32_t rg_buf_append(struct rg_buf *b, const void *p, size_t n) {
    if (b->len + n < b->len) return REALM_E_NOMEM;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) return REALM_E_NOMEM;
            cap *= 2;
        }
        char *d = realm_realloc(b->data, cap);
        if (!d) return REALM_E_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return REALM_OK;
}

void rg_buf_free(struct rg_buf *b) {
    realm_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int rg_fmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

size_t rg_utf8_complete_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = realm_utf8_seq(u + i, n - i);
        if (l == 0) return i;
        i += (size_t)(l < 0 ? -l : l);
    }
    return n;
}

int32_t rg_utf8_sanitize(struct rg_buf *out, const char *s, size_t n) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        int l = realm_utf8_seq(u + i, n - i);
        if (l > 0) {
            i += (size_t)l;
            continue;
        }
        int32_t rc = rg_buf_append(out, s + run, i - run);
        if (rc == REALM_OK) rc = rg_buf_append(out, fffd, 3);
        if (rc != REALM_OK) return rc;
        i = l < 0 ? i + (size_t)-l : n;
        run = i;
    }
    return rg_buf_append(out, s + run, n - run);
}
