/*
 * realm_grammar.h — constrained decoding for guests (guest/sdk/grammar.c, grammar_vocab.c,
 * json_schema.c): llama.cpp's GBNF grammar syntax compiled to a small rule table, an incremental
 * matcher over the set of live parse stacks, token masking over a vocabulary table, and a JSON
 * schema → GBNF converter. Plain C11 over malloc/string.h: it also builds natively for the unit
 * tests (tests/test_grammar.c). Single-threaded; no globals.
 *
 * Typical use in a guest (see the end of this header for the per-step loop):
 *   rg_grammar_parse(gbnf, len, "root", &g, err, sizeof err)    once per request
 *   rg_vocab_load(model, n_vocab, eog, n_eog, &v)                  once per instance (cached)
 *   rg_gmatch_new(g, &m)                                           once per request (per choice)
 *   per step: tok = rg_sample_grammar(&sampler, m, v, logits); rg_gmatch_accept_token(m, v, tok)
 *
 * Errors are REALM_E_* codes: REALM_E_FORMAT (grammar/schema text is wrong: the message says
 * where and why), REALM_E_LIMIT (a size limit below was exceeded), REALM_E_NOMEM,
 * REALM_E_INVALID (a rejected input: the matcher state is unchanged).
 */
#ifndef REALM_GRAMMAR_H
#define REALM_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm_guest.h"

/* Limits: a grammar over these is REALM_E_LIMIT with a message, never a slow or huge matcher. */
#define RG_GRAMMAR_MAX_SOURCE (1u << 20) /* bytes of GBNF text */
#define RG_GRAMMAR_MAX_ELEMS (1u << 18)  /* compiled elements, repetitions expanded */
#define RG_GRAMMAR_MAX_REPEAT 1000       /* m and n of x{m,n} */
#define RG_GRAMMAR_MAX_STACKS 2048       /* live parse stacks after one code point */
#define RG_GRAMMAR_MAX_NODES (1u << 22)  /* stack frames held by one matcher */

/* ---- grammar: immutable once parsed, shared by any number of matchers ---- */
struct rg_grammar;

/* Parses GBNF text src[0..len) with start rule `root` (NULL: "root"). Checks: syntax, undefined
 * rules, left recursion, a start rule that can never complete, the limits above. On failure
 * writes one line to err ("grammar: line 3 col 7: expected ::=") and returns REALM_E_FORMAT,
 * REALM_E_LIMIT or REALM_E_NOMEM. Ownership: *out is the caller's (rg_grammar_free). */
int32_t rg_grammar_parse(const char *src, size_t len, const char *root, struct rg_grammar **out,
                         char *err, size_t err_cap);
/* The same with token references by text (<think>, !<|im_end|>): token_of(ctx, text, len) gets
 * the text with its angle brackets ("<think>") and returns the one token that spells it, or < 0
 * (then the grammar is REALM_E_FORMAT). In a guest: realm_tokenize with
 * REALM_ABI_TOKENIZE_PARSE_SPECIAL and exactly one token. Token ids
 * (<[id]>, !<[id]>) need no resolver. Token elements only match whole tokens
 * (rg_gmatch_accept_token / _allows / masking), never rg_gmatch_advance's bytes. */
int32_t rg_grammar_parse_ex(const char *src, size_t len, const char *root,
                            int32_t (*token_of)(void *ctx, const char *text, size_t len), void *ctx,
                            struct rg_grammar **out, char *err, size_t err_cap);
void rg_grammar_free(struct rg_grammar *g);

/* ---- matcher: the parse state of one output ---- */
struct rg_gmatch;

/* A matcher at the start of `g` (which must outlive it). REALM_E_LIMIT if the start state alone
 * has too many stacks, REALM_E_NOMEM. */
int32_t rg_gmatch_new(const struct rg_grammar *g, struct rg_gmatch **out);
void rg_gmatch_free(struct rg_gmatch *m);
/* Back to the start state (keeps the memory). */
int32_t rg_gmatch_reset(struct rg_gmatch *m);
/* Advances by the bytes s[0..n) (UTF-8; a sequence may be split across calls). REALM_OK, or
 * REALM_E_INVALID if the grammar rejects them (state unchanged), REALM_E_LIMIT when more than
 * RG_GRAMMAR_MAX_STACKS parse stacks would be live (a too ambiguous grammar: report it as such) or
 * the matcher holds RG_GRAMMAR_MAX_NODES frames, REALM_E_NOMEM. */
int32_t rg_gmatch_advance(struct rg_gmatch *m, const char *s, size_t n);
/* Whether advance(s, n) would succeed; never changes the state. */
bool rg_gmatch_accepts(struct rg_gmatch *m, const char *s, size_t n);
/* True when the text so far is a complete sentence of the grammar (end of generation allowed). */
bool rg_gmatch_complete(const struct rg_gmatch *m);
/* True when no further byte can be accepted (complete and nothing may follow). */
bool rg_gmatch_done(const struct rg_gmatch *m);

/* ---- vocabulary table: every token's bytes, a byte trie over them, the EOG set ---- */
struct rg_vocab;

/* An empty table for n_vocab tokens (all pieces empty: such tokens are never allowed). */
int32_t rg_vocab_new(int32_t n_vocab, struct rg_vocab **out);
/* Sets token's bytes (copied). REALM_E_INVALID if token is out of range. */
int32_t rg_vocab_set(struct rg_vocab *v, int32_t token, const char *piece, size_t len);
/* Marks an end-of-generation token: allowed exactly when the matcher is complete. */
int32_t rg_vocab_set_eog(struct rg_vocab *v, int32_t token);
/* Builds the byte trie; call once after the last set, before masking. */
int32_t rg_vocab_build(struct rg_vocab *v);
/* Guest only (uses the token_piece import): the table of a model, built and ready. */
int32_t rg_vocab_load(int32_t model, int32_t n_vocab, const int32_t *eog, size_t n_eog,
                      struct rg_vocab **out);
void rg_vocab_free(struct rg_vocab *v);
int32_t rg_vocab_size(const struct rg_vocab *v);

/* ---- token-level operations ---- */
/* Whether token may come next (EOG tokens: iff complete; empty pieces: never). */
bool rg_gmatch_allows(struct rg_gmatch *m, const struct rg_vocab *v, int32_t token);
/* Advances by the token's bytes (EOG: REALM_OK iff complete, state unchanged). REALM_E_INVALID
 * if not allowed. */
int32_t rg_gmatch_accept_token(struct rg_gmatch *m, const struct rg_vocab *v, int32_t token);
/* Sets logits[t] = -INFINITY for every token t not allowed (one walk of the byte-sorted
 * vocabulary, pruning dead prefixes; the result for the last 8 distinct states is remembered, so
 * a state met again, as inside a long string, costs one pass over the vocabulary). Returns the
 * number allowed, or REALM_E_INVALID when none is (a dead end), REALM_E_LIMIT, REALM_E_NOMEM. */
int32_t rg_gmatch_mask(struct rg_gmatch *m, const struct rg_vocab *v, float *logits);
/* Greedy under the grammar: checks candidates in descending logit order (ties: lower id) and
 * returns the first allowed token; after 65 rejections it masks the vocabulary and takes the
 * argmax. logits may be modified (masked). REALM_E_INVALID if nothing is allowed. */
int32_t rg_gmatch_pick_greedy(struct rg_gmatch *m, const struct rg_vocab *v, float *logits);
/* One sampling step under the grammar: samples with s as usual (bias, penalties, truncation,
 * temperature); if the token is allowed it is returned at once (the common case, no mask);
 * otherwise greedy continues in logit order (rg_gmatch_pick_greedy) and sampling restores the
 * logits, masks them and samples again. For temperature > 0 the result is a draw from the
 * grammar-restricted distribution whenever the first draw is allowed, else from the truncation of
 * the masked distribution (llama.cpp does the same). logits[0..n_vocab) is clobbered. Returns a
 * token or REALM_E_INVALID (dead end), REALM_E_NOMEM. Does not advance m. */
int32_t rg_sample_grammar(struct rg_sampler *s, struct rg_gmatch *m, const struct rg_vocab *v,
                          float *logits);

/* ---- JSON schema → GBNF (json_schema.c) ---- */
/* Converts a JSON schema (already parsed) to GBNF text with start rule "root": a malloc'd
 * NUL-terminated string in *out. Supported: type (string, number, integer, boolean, null,
 * object, array, or a list of them), properties/required/additionalProperties (declared order;
 * optional properties may be left out; extra properties only when additionalProperties is true or a
 * schema), items/minItems/maxItems, prefixItems, enum, const, anyOf/oneOf, $ref to #/$defs/...
 * or #/definitions/..., minLength/maxLength, integer minimum 0 / 1. `{}` or `true` = any JSON
 * value. Unsupported constraints (pattern, allOf, not, other minimum/maximum...) are
 * REALM_E_FORMAT with a message naming the keyword and its path. */
int32_t rg_json_schema_to_gbnf(const struct rj_value *schema, char **out, char *err,
                               size_t err_cap);
/* GBNF for any JSON value (root ::= object or array or scalar, with bounded whitespace): a static
 * string. rg_json_object_gbnf is the same restricted to a top-level object (json_object mode). */
const char *rg_json_any_gbnf(void);
const char *rg_json_object_gbnf(void);

/* The constraint a request asks for, as GBNF (malloc'd, NUL-terminated) in *gbnf, or NULL when
 * it asks for none. Reads the request fields (null counts as absent):
 *   "response_format": {"type": "text"} | {"type": "json_object"} (any JSON object; llama-server's
 *       {"type": "json_object", "schema": {...}} uses the schema) |
 *       {"type": "json_schema", "json_schema": {"name", "schema", "strict"}};
 *   "grammar": GBNF text (llama.cpp's extension);  "json_schema": a schema (llama.cpp's extension).
 * At most one of them. REALM_E_INVALID with a message in err (the field and why: answer 400),
 * REALM_E_NOMEM. The GBNF still has to go through rg_grammar_parse (its errors are also 400s). */
int32_t rg_grammar_from_request(const struct rj_value *req, char **gbnf, char *err, size_t err_cap);

/*
 * Per-step use in a guest (default.c):
 *   if (grammar) {
 *       id = rg_sample_grammar(&smp, m, vocab, logits);     // instead of rg_sampler_sample
 *       if (id < 0) fail("grammar: no token allowed");
 *       if (!is_eog(id)) rg_gmatch_accept_token(m, vocab, id);  // then emit/decode as usual
 *       if (rg_gmatch_done(m)) finish with "stop" after this token (only EOG could follow)
 *   }
 * EOG tokens are only allowed when the grammar is complete, so `ignore_eos` with a grammar must
 * stop at rg_gmatch_done instead of continuing.
 */

#endif
