/*
 * embed.h — embeddings over HTTP: POST /v1/embeddings (OpenAI's shape) and POST /embed (Spin's
 * remote LLM protocol), and Spin's POST /infer translated into a completion. Host-only: an
 * embedding runs no guest — the host tokenizes, runs every token through the tenant's share of
 * the model's batched steps (realm_sched_embed) and pools the hidden states — but it is
 * authenticated, model-checked, rate-limited, KV-quota'd and accounted as the tenant's like any
 * other request.
 *
 * embed_req.c: request parsing, tokenization and response bodies (no server state: the fuzz
 * target runs them alone). embed.c: the request end to end on the connection's thread.
 * spin.c: /infer's body to a completion request and the job's answer back to Spin's shape.
 *
 * Thread rule: stateless; every function may run on any thread.
 */
#ifndef REALM_SERVER_EMBED_H
#define REALM_SERVER_EMBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/buf.h"
#include "realm/tokenizer.h"

struct srv_error;
struct srv_job;
struct srv_tenant;
struct realm_server;

enum srv_embed_shape {
    SRV_EMBED_OPENAI = 0, /* {"model","input","encoding_format","dimensions","user"} → "list" */
    SRV_EMBED_SPIN = 1, /* {"model","input":[...]} → {"embeddings","usage":{promptTokenCount}} */
};

struct srv_embed_input {
    char *text;      /* a string input (realm_malloc'd, NUL-terminated), or NULL for token ids */
    size_t text_len; /* bytes of text */
    int32_t *tokens; /* the ids given, or (after srv_embed_tokenize) the text's tokens */
    int32_t n;       /* tokens */
};

struct srv_embed_req {
    enum srv_embed_shape shape;
    char *model;        /* the requested model name (owned) */
    bool base64;        /* encoding_format "base64": little-endian f32 bytes, base64 */
    int64_t dimensions; /* the client's "dimensions"; 0: not given */
    struct srv_embed_input *inputs;
    size_t n_inputs;
    int64_t n_tokens; /* all inputs' tokens (token-id inputs after parse, the rest after
                         srv_embed_tokenize) */
};

/* Parses and validates a request body of `shape`: at most max_inputs inputs, each non-empty;
 * token-id inputs at most max_tokens ids, each a non-negative integer. Unknown fields are refused
 * (400 naming the field), as on the other routes. Ownership: fills *out with owned memory
 * (srv_embed_req_free) only on success. Returns 0, or -1 with a 400 (or 500 on NOMEM) in *e. */
int srv_embed_parse(enum srv_embed_shape shape, const char *body, size_t len, int32_t max_inputs,
                    int32_t max_tokens, struct srv_embed_req *out, struct srv_error *e);
/* Tokenizes the text inputs (BOS as the vocabulary wants it; special-token text stays text) and
 * checks every input against max_tokens and ids against n_vocab; sets r->n_tokens.
 * Returns 0, or -1 with a 400 (or 500) in *e. */
int srv_embed_tokenize(struct srv_embed_req *r, const struct realm_tokenizer *tok, int32_t n_vocab,
                       int32_t max_tokens, struct srv_error *e);
void srv_embed_req_free(struct srv_embed_req *r);

/* The response body: r->n_inputs vectors of `width` floats (vecs, input-major) in r's shape and
 * encoding, usage r->n_tokens. Errors: REALM_E_NOMEM, REALM_E_FORMAT (a non-finite value). */
int srv_embed_response(struct realm_buf *b, const struct srv_embed_req *r, const char *model,
                       const float *vecs, int32_t width);
/* Standard base64 (with padding) of data[0..n), appended to b. Errors: REALM_E_NOMEM. */
int srv_base64_append(struct realm_buf *b, const void *data, size_t n);

/* embed.c: POST /v1/embeddings or /embed for tenant t (authenticated; key_label for the ledger):
 * parse, model access, limits, admission (concurrency, tokens_per_minute), the batched run, the
 * accounting. Returns 0 with the 200 body in out, or -1 with *e set (400, 403, 404, 429, 500, 503).
 */
int srv_embed_handle(struct realm_server *s, struct srv_tenant *t, const char *key_label,
                     enum srv_embed_shape shape, const char *body, size_t len,
                     struct realm_buf *out, struct srv_error *e);

/* spin.c: Spin's /infer body ({"model","prompt","options":{maxTokens, repeatPenalty,
 * repeatPenaltyLastNTokenCount, temperature, topK, topP}}) as the /v1/completions body it means
 * (out, appended). Returns 0, or -1 with a 400 in *e. */
int srv_spin_infer_body(const char *body, size_t len, struct realm_buf *out, struct srv_error *e);
/* The answer of a finished non-streamed completion job in Spin's shape: {"text","usage":
 * {"promptTokenCount","generatedTokenCount"}}. Errors: REALM_E_NOMEM. */
int srv_spin_infer_response(struct realm_buf *b, const struct srv_job *j);

#endif
