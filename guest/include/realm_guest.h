/*
 * realm_guest.h — the guest SDK of the realm ABI v1: the raw imports of module "realm", typed
 * wrappers, the exports every guest has (realm_abi_version, realm_alloc, realm_free from
 * guest/sdk/sdk.c), a strict JSON parser (guest/sdk/json.c), a sampler (guest/sdk/sample.c) and
 * small string helpers. Guests are C11 built for wasm32-wasi as reactors (cmake/guests.cmake);
 * they may use wasi-libc's malloc/string.h/stdlib.h/math.h but nothing that does I/O (stdio's
 * printf family imports WASI functions the host does not provide: use rg_fmt instead).
 *
 * A guest defines two exports:
 *   int32_t realm_init(void)      — once after instantiation; return REALM_OK or a REALM_E_* code
 *                                   (log the reason with rg_log first: the host reports it).
 *   int32_t realm_generate(void)  — one request end to end (request_read ... emit ... usage).
 *
 * Conventions of every import (docs/abi.md): (pointer, length) pairs into linear memory; the
 * host checks them against the current memory size and returns REALM_E_RANGE if they do not fit.
 * Negative results are REALM_E_* codes. Functions that fill a buffer return the full length of
 * the result and write min(length, cap) bytes (like snprintf): a result larger than cap means
 * "call again with a larger buffer". Handles are positive, private to the instance, and become
 * REALM_E_BAD_HANDLE once closed.
 */
#ifndef REALM_GUEST_H
#define REALM_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../include/realm/abi.h"
#include "../../include/realm/status.h"

#ifdef __wasm__
#define RG_IMPORT(name) __attribute__((import_module("realm"), import_name(#name)))
#define RG_EXPORT(name) __attribute__((export_name(#name)))
#else /* a native build of SDK code for unit tests (tests/test_grammar.c stubs the imports) */
#define RG_IMPORT(name)
#define RG_EXPORT(name)
#endif

/* ---- raw imports (module "realm"); docs/abi.md has the full contract of each ---- */
RG_IMPORT(model_open) int32_t realm_model_open(const char *name, int32_t name_len);
RG_IMPORT(model_info) int32_t realm_model_info(int32_t model, char *buf, int32_t cap);
RG_IMPORT(tokenize)
int32_t realm_tokenize(int32_t model, const char *text, int32_t text_len, int32_t flags,
                       int32_t *out, int32_t out_cap);
RG_IMPORT(token_piece)
int32_t realm_token_piece(int32_t model, int32_t token, char *buf, int32_t cap);
RG_IMPORT(chat_format)
int32_t realm_chat_format(int32_t model, const char *messages_json, int32_t len, char *out,
                          int32_t out_cap);
/* chat_format + tokenize where message content is never parsed for special tokens: the safe
 * way to turn client messages into a prompt (flags: REALM_ABI_TOKENIZE_ADD_BOS only). */
RG_IMPORT(chat_tokenize)
int32_t realm_chat_tokenize(int32_t model, const char *messages_json, int32_t len, int32_t flags,
                            int32_t *out, int32_t out_cap);
RG_IMPORT(session_open) int32_t realm_session_open(int32_t model, int32_t n_ctx);
RG_IMPORT(session_close) int32_t realm_session_close(int32_t session);
RG_IMPORT(session_rewind) int32_t realm_session_rewind(int32_t session, int32_t n_keep);
RG_IMPORT(decode)
int32_t realm_decode(int32_t session, const int32_t *tokens, int32_t n_tokens, float *logits,
                     int32_t logits_cap);
RG_IMPORT(emit) int32_t realm_emit(const char *text, int32_t len);
RG_IMPORT(logprobs)
int32_t realm_logprobs(int32_t model, const int32_t *ids, const float *lps, int32_t n);
/* The request's answer is these tool calls (a JSON array [{"name", "arguments": JSON text}]; at
 * most once per request; docs/abi.md). */
RG_IMPORT(tool_calls) int32_t realm_tool_calls(const char *json, int32_t len);
RG_IMPORT(request_read) int32_t realm_request_read(char *buf, int32_t cap);
RG_IMPORT(log) int32_t realm_log(int32_t level, const char *msg, int32_t len);
RG_IMPORT(now_ns) int64_t realm_now_ns(void);
RG_IMPORT(random_seed) int64_t realm_random_seed(void);
RG_IMPORT(usage)
int32_t realm_usage(int32_t prompt_tokens, int32_t completion_tokens, int32_t finish_reason);
/* The choice (0 .. the request's n - 1) that the following emit, logprobs and usage calls belong
 * to; a guest that never calls it answers in choice 0. REALM_E_RANGE outside the request's n. */
RG_IMPORT(choice) int32_t realm_choice(int32_t index);

/* ---- exports provided by the SDK (sdk.c) ---- */
int32_t realm_abi_version(void); /* REALM_ABI_VERSION */
void *realm_alloc(int32_t size); /* malloc; NULL (0) on failure or size < 0 */
void realm_free(void *p);

/* ---- typed helpers (sdk.c) ---- */
/* Static text for a status code ("bad handle" ...), never NULL. */
const char *rg_strerror(int32_t code);
/* Logs a NUL-terminated message. */
void rg_log(int32_t level, const char *msg);
/* A tiny snprintf: %s %.*s %d %i %u %ld %lu %lld %llu %x %c %f (6 digits) %%. Returns the full
 * length, writes at most cap-1 bytes plus a NUL (cap > 0). */
int rg_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* rg_fmt into a 1 KiB stack buffer, then log. */
void rg_logf(int32_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The whole request JSON in a malloc'd NUL-terminated buffer (*len without the NUL).
 * Returns REALM_OK or a REALM_E_* code. */
int32_t rg_request_read_all(char **out, size_t *len);
/* The model's info JSON (malloc'd, NUL-terminated). */
int32_t rg_model_info_all(int32_t model, char **out, size_t *len);
/* Chat template rendering into a malloc'd NUL-terminated buffer. */
int32_t rg_chat_format_all(int32_t model, const char *messages_json, size_t len, char **out,
                           size_t *out_len);
/* Chat messages (a JSON array) rendered and tokenized by chat_tokenize into a malloc'd array
 * (*n tokens); content is never parsed for special tokens. */
int32_t rg_chat_tokenize_all(int32_t model, const char *messages_json, size_t len, int32_t flags,
                             int32_t **out, int32_t *n);
/* Tokenizes into a malloc'd array (*n tokens). */
int32_t rg_tokenize_all(int32_t model, const char *text, size_t len, int32_t flags, int32_t **out,
                        int32_t *n);
/* Emits a NUL-terminated string. */
int32_t rg_emit_str(const char *s);

/* ---- a growable byte buffer ---- */
struct rg_buf {
    char *data;
    size_t len, cap;
};
/* Appends n bytes; REALM_E_NOMEM on failure (the buffer is unchanged). */
int32_t rg_buf_append(struct rg_buf *b, const void *p, size_t n);
/* Drops the first n bytes. */
void rg_buf_consume(struct rg_buf *b, size_t n);
void rg_buf_free(struct rg_buf *b);

/* ---- UTF-8 ---- */
/* Length of the longest prefix of s[0..n) that ends on a sequence boundary, given that more bytes
 * may follow: an incomplete but so far valid sequence at the end is excluded. */
size_t rg_utf8_complete_prefix(const char *s, size_t n);
/* Appends s[0..n) to out with every invalid byte sequence replaced by U+FFFD (as the host's
 * streaming detokenizer does). */
int32_t rg_utf8_sanitize(struct rg_buf *out, const char *s, size_t n);

/* ---- strict JSON (RFC 8259) ---- */
enum rj_type { RJ_NULL, RJ_FALSE, RJ_TRUE, RJ_NUMBER, RJ_STRING, RJ_ARRAY, RJ_OBJECT };

struct rj_value {
    enum rj_type type;
    uint32_t src_off,
        src_len; /* the value's bytes in the parsed text (to pass a sub-document on) */
    double num;  /* RJ_NUMBER */
    char *str;   /* RJ_STRING: decoded UTF-8, NUL-terminated; may contain NULs */
    size_t str_len;
    struct rj_value *items; /* RJ_ARRAY: n items; RJ_OBJECT: n values */
    char **keys;            /* RJ_OBJECT: n decoded keys (NUL-terminated) */
    size_t *key_lens;
    size_t n;
};

/* Parses text[0..len) as one JSON value (whitespace around it allowed, nothing else). Rejects
 * invalid UTF-8, lone surrogates, control characters in strings, leading zeros, depth > 64 and
 * duplicate object keys. On failure returns REALM_E_FORMAT and writes a message to err (if not
 * NULL). Ownership: *out is owned by the caller (rj_free). */
int32_t rj_parse(const char *text, size_t len, struct rj_value **out, char *err, size_t err_cap);
void rj_free(struct rj_value *v);
/* Member `key` of an object, or NULL (also if v is NULL or not an object). */
const struct rj_value *rj_get(const struct rj_value *v, const char *key);
/* Typed reads with a default: the default is used when v is NULL or of another type. */
double rj_number(const struct rj_value *v, double dflt);
bool rj_bool(const struct rj_value *v, bool dflt);
const char *rj_string(const struct rj_value *v, const char *dflt);
/* True if v is a number with an integral value in [lo, hi]. */
bool rj_is_int(const struct rj_value *v, double lo, double hi);

/* ---- sampling (sample.c) ---- */
struct rg_bias {
    int32_t token;
    float bias;
};

struct rg_sampler_params {
    float temperature;       /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;           /* 0: off */
    float top_p;             /* 1: off */
    float min_p;             /* 0: off */
    float repeat_penalty;    /* 1: off (divide positive logits, multiply negative ones) */
    float frequency_penalty; /* 0: off; subtracted count times */
    float presence_penalty;  /* 0: off; subtracted once if present */
    int32_t penalty_last_n;  /* window of previous tokens the penalties look at */
    uint64_t seed;
    const struct rg_bias *bias; /* logit_bias, applied first (copied by init) */
    int32_t n_bias;
};

struct rg_sampler {
    struct rg_sampler_params p;
    int32_t n_vocab;
    uint64_t rng;  /* splitmix64 state (starts at the seed) */
    int32_t *hist; /* ring of the last penalty_last_n tokens */
    int32_t n_hist, hist_pos;
    void *scratch; /* the selection core's (realm/sample.h), allocated on first use */
    int32_t *win;  /* scratch: sorted window (penalty_last_n) */
    struct rg_bias *bias;
};

/* Defaults: temperature 1, top_k 0, top_p 1, min_p 0, penalties off (repeat 1, window 64). */
void rg_sampler_params_default(struct rg_sampler_params *p);
/* REALM_E_INVALID (bad parameter), REALM_E_NOMEM. */
int32_t rg_sampler_init(struct rg_sampler *s, const struct rg_sampler_params *p, int32_t n_vocab);
void rg_sampler_free(struct rg_sampler *s);
/* Records a token (prompt or generated) in the penalty window. */
void rg_sampler_accept(struct rg_sampler *s, int32_t token);
/* Picks the next token from logits[0..n_vocab) (modified in place); REALM_E_NOMEM if the
 * sampler's scratch (about 21 bytes per vocabulary entry) cannot be allocated. */
int32_t rg_sampler_sample(struct rg_sampler *s, float *logits);
/* Index of the largest of l[0..n) (lowest index on ties), as a scalar `>` scan would pick. */
int32_t rg_argmax(const float *l, int32_t n);
/* Log-probabilities of logits[0..n) as a distribution (log-softmax at temperature 1, no
 * truncation): ids[0] / lps[0] = `chosen`, then the k most likely tokens best first (lower id
 * first on ties) in ids[1..k] / lps[1..k]. Every value is <= 0. k <= REALM_ABI_MAX_TOP_LOGPROBS;
 * returns k + 1 (what logprobs() takes as n), or REALM_E_INVALID. Pass the logits
 * rg_sampler_sample left behind (logit_bias and penalties applied) to report the distribution
 * the token was drawn from before temperature and top-k/top-p/min-p. */
int32_t rg_logprobs(const float *logits, int32_t n, int32_t chosen, int32_t k, int32_t *ids,
                    float *lps);
/* Uniform double in [0, 1) from the sampler's RNG. */
double rg_sampler_uniform(struct rg_sampler *s);

#endif
