/*
 * nn_sampler.h (internal) — the guest SDK's sampler (guest/sdk/sample.c) behind an opaque type,
 * for wasi_nn.c (see nn_sampler.c). Includes nothing of the host, so that nn_sampler.c can
 * include the guest SDK header, whose import declarations clash with the host's.
 *
 * Thread rule: one thread at a time per sampler.
 */
#ifndef REALM_SANDBOX_NN_SAMPLER_H
#define REALM_SANDBOX_NN_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- nn_sampler.c ---- */
struct sbx_nn_sampler;

struct sbx_nn_sampling {
    float temp;                                                /* <= 0: greedy */
    int32_t top_k;                                             /* 0: off */
    float top_p;                                               /* 1: off */
    float min_p;                                               /* 0: off */
    float repeat_penalty, presence_penalty, frequency_penalty; /* 1, 0, 0: off */
    int32_t penalty_last_n;
    uint64_t seed;
};

/* Ownership: returns owned (*out; sbx_nn_sampler_free). Errors: REALM_E_INVALID (parameters),
 * REALM_E_NOMEM. */
int sbx_nn_sampler_new(const struct sbx_nn_sampling *p, int32_t n_vocab,
                       struct sbx_nn_sampler **out);
/* Records a token (prompt or generated) in the penalty window. */
void sbx_nn_sampler_accept(struct sbx_nn_sampler *s, int32_t token);
/* The next token from logits[0..n_vocab) (modified in place), or REALM_E_NOMEM. */
int32_t sbx_nn_sampler_sample(struct sbx_nn_sampler *s, float *logits);
/* NULL is a no-op. */
void sbx_nn_sampler_free(struct sbx_nn_sampler *s);

/* ---- nn_sampler.c: constrained sampling with the guest SDK's grammar engine ----
 * (guest/sdk/grammar.c, json.c, json_schema.c compiled into the host, their allocations through
 * realm_malloc via nn_sdk_alloc.h, so counted against the current tenant's budget). */
struct sbx_nn_grammar; /* a parsed grammar and one matcher over it */
struct sbx_nn_vocab;   /* a model's token pieces and EOG set, ready for masking */

/* The longest grammar or JSON schema text accepted (the engine's own limits apply below it). */
#define SBX_NN_GRAMMAR_MAX_TEXT (256u * 1024u)

/* Parses text[0..len): GBNF with start rule "root" (is_schema false) or a JSON schema converted to
 * GBNF (is_schema true). token_of resolves <token> references (see rg_grammar_parse_ex). On failure
 * writes a one-line reason to err and returns REALM_E_FORMAT / REALM_E_LIMIT / REALM_E_NOMEM.
 * Ownership: *out is the caller's (sbx_nn_grammar_free). */
int sbx_nn_grammar_new(const char *text, size_t len, bool is_schema,
                       int32_t (*token_of)(void *ctx, const char *text, size_t len), void *ctx,
                       struct sbx_nn_grammar **out, char *err, size_t err_cap);
/* Back to the start of the grammar (a new generation). REALM_OK or an engine error. */
int sbx_nn_grammar_reset(struct sbx_nn_grammar *g);
/* NULL is a no-op. */
void sbx_nn_grammar_free(struct sbx_nn_grammar *g);

/* An empty table for n_vocab tokens; fill with _set / _set_eog, then _build once. Ownership:
 * *out is the caller's (sbx_nn_vocab_free). REALM_E_NOMEM, REALM_E_INVALID (bad token). */
int sbx_nn_vocab_new(int32_t n_vocab, struct sbx_nn_vocab **out);
int sbx_nn_vocab_set(struct sbx_nn_vocab *v, int32_t token, const char *piece, size_t len);
int sbx_nn_vocab_set_eog(struct sbx_nn_vocab *v, int32_t token);
int sbx_nn_vocab_build(struct sbx_nn_vocab *v);
/* NULL is a no-op. */
void sbx_nn_vocab_free(struct sbx_nn_vocab *v);

/* One step under the grammar (rg_sample_grammar): the next token from logits (clobbered), or
 * REALM_E_INVALID when no token can continue, REALM_E_NOMEM / REALM_E_LIMIT. Then
 * sbx_nn_grammar_accept for a token that is not end-of-generation. */
int32_t sbx_nn_sampler_sample_grammar(struct sbx_nn_sampler *s, struct sbx_nn_grammar *g,
                                      const struct sbx_nn_vocab *v, float *logits);
/* Advances the matcher by token; REALM_E_INVALID if the grammar does not allow it. */
int sbx_nn_grammar_accept(struct sbx_nn_grammar *g, const struct sbx_nn_vocab *v, int32_t token);
/* True when the output is a complete sentence and nothing more may follow. */
bool sbx_nn_grammar_done(const struct sbx_nn_grammar *g);

#endif
