/*
 * tokenizer.h — tokenizers built from GGUF metadata (SPM `llama` and byte-level BPE `gpt2` with
 * the pre-tokenizer named by tokenizer.ggml.pre), streaming detokenization, chat templates.
 *
 * Ownership: a realm_tokenizer copies what it needs from the GGUF (the realm_gguf may be closed
 * afterwards). Thread rule: immutable after load; every function is thread-safe except on a
 * realm_detok, which belongs to one caller.
 */
#ifndef REALM_TOKENIZER_H
#define REALM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/gguf.h"

struct realm_tokenizer;

enum realm_tokenize_flags {
    REALM_TOKENIZE_ADD_BOS = 1,       /* prepend BOS if the vocab uses one (add_bos_token) */
    REALM_TOKENIZE_PARSE_SPECIAL = 2, /* recognise special-token text such as "<|im_start|>" */
};

/* Builds the tokenizer of a GGUF file (vocab-only files work).
 * Ownership: returns owned (*out; free with realm_tokenizer_free). Nothing on failure.
 * Errors: REALM_E_NOT_FOUND (no tokenizer.ggml.model), REALM_E_UNSUPPORTED (model or pre-tokenizer
 * kind), REALM_E_FORMAT (inconsistent arrays), REALM_E_NOMEM. */
int realm_tokenizer_load(const struct realm_gguf *g, struct realm_tokenizer **out, struct realm_err *err);
void realm_tokenizer_free(struct realm_tokenizer *t);

int32_t realm_tokenizer_n_vocab(const struct realm_tokenizer *t);
int32_t realm_tokenizer_bos(const struct realm_tokenizer *t); /* -1 if none */
int32_t realm_tokenizer_eos(const struct realm_tokenizer *t); /* -1 if none */
bool realm_tokenizer_add_bos(const struct realm_tokenizer *t); /* the vocab's default */
/* End-of-generation: EOS, EOT, <|im_end|>, <end_of_turn> ... */
bool realm_tokenizer_is_eog(const struct realm_tokenizer *t, int32_t token);
/* "llama" (SPM) or "gpt2" (BPE) and the pre-tokenizer name ("default" if none). */
const char *realm_tokenizer_kind(const struct realm_tokenizer *t);
const char *realm_tokenizer_pre(const struct realm_tokenizer *t);

/* Tokenizes text[0..len) (any bytes). On success writes the tokens to out and *n_out = count.
 * Errors: REALM_E_TOO_SMALL if cap is too small (nothing written, *n_out = tokens needed),
 * REALM_E_NOMEM. Invalid UTF-8 never crashes (bytes fall back as the vocab allows). */
int realm_tokenize(const struct realm_tokenizer *t, const char *text, size_t len, uint32_t flags,
                   int32_t *out, int64_t cap, int64_t *n_out);

/* The bytes a token stands for when detokenized (SPM "▁" → space, <0xNN> → that byte; control
 * tokens → their text only if `special`, else empty). Writes up to cap bytes, returns the full
 * length, or REALM_E_RANGE for a token outside the vocab. */
int64_t realm_token_piece(const struct realm_tokenizer *t, int32_t token, bool special, char *buf,
                          size_t cap);

/* Streaming detokenizer: holds back an incomplete UTF-8 sequence across tokens so that every
 * emitted chunk is valid UTF-8; invalid bytes become U+FFFD. */
struct realm_detok {
    const struct realm_tokenizer *t;
    unsigned char pending[8];
    int n_pending;
    bool special;      /* emit control tokens' text */
    bool strip_space;  /* SPM: drop the leading space of the first piece */
    bool first;
};
void realm_detok_init(struct realm_detok *d, const struct realm_tokenizer *t, bool special);
/* Appends the text completed by `token` to out (at most cap bytes). Returns the byte count, or
 * REALM_E_TOO_SMALL (cap < 4 + piece length; nothing consumed), REALM_E_RANGE (bad token). */
int64_t realm_detok_push(struct realm_detok *d, int32_t token, char *out, size_t cap);
/* Flushes held-back bytes (as U+FFFD) at the end of a stream. */
int64_t realm_detok_flush(struct realm_detok *d, char *out, size_t cap);

/* ---- chat templates ---- */
struct realm_chat_msg {
    const char *role;
    size_t role_len;
    const char *content;
    size_t content_len;
};
/* Template family detected from tokenizer.chat_template ("chatml", "llama2", "llama3", "zephyr",
 * "gemma", "mistral", ...) or NULL if none / not recognised. */
const char *realm_tokenizer_chat_template(const struct realm_tokenizer *t);
/* Renders msgs with template `name` (NULL: the detected one), adding the assistant prefix if
 * add_generation_prompt. Writes up to cap bytes to out; returns the full length.
 * Errors: REALM_E_NOT_FOUND (no template / unknown name), REALM_E_INVALID (bad role). */
int64_t realm_chat_format(const struct realm_tokenizer *t, const char *name,
                          const struct realm_chat_msg *msgs, size_t n_msgs, bool add_generation_prompt,
                          char *out, size_t cap);

#endif
