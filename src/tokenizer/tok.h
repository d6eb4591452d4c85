/*
 * tok.h — internals of the tokenizer module: the vocabulary (token texts, scores, attributes and
 * a byte-string hash index), the BPE merge table, the pre-tokenizer regexes and the entry points
 * of the SPM, BPE and WordPiece segmenters. The public API is include/realm/tokenizer.h.
 *
 * The behaviour reproduces llama.cpp's src/llama-vocab.cpp (llm_tokenizer_spm_session,
 * llm_tokenizer_bpe_session, llm_tokenizer_wpm_session, tokenizer_st_partition,
 * token_to_piece) so that token ids are the same for the same GGUF file.
 *
 * Ownership: a struct realm_tokenizer owns every array below (realm_malloc'd) and the compiled
 * PCRE2 codes. Thread rule: immutable after tok_vocab_load; segmenters keep their scratch in a
 * per-call struct tok_buf, so any number of threads may tokenize with one tokenizer.
 */
#ifndef REALM_TOK_H
#define REALM_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/template.h"
#include "realm/tokenizer.h"
#include "realm/utf8.h"

/* Token attributes (llama.cpp's llama_token_attr, derived from tokenizer.ggml.token_type). */
enum tok_attr {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_LSTRIP = 1 << 7,
    TOK_ATTR_RSTRIP = 1 << 8,
};

/* GGUF tokenizer.ggml.token_type values (gguf-py TokenType). */
enum tok_type {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

enum tok_kind { TOK_KIND_SPM = 1, TOK_KIND_BPE = 2, TOK_KIND_WPM = 3 };

struct tok_entry {
    uint32_t off; /* into strings */
    uint32_t len;
    float score;
    uint32_t attr; /* enum tok_attr bits */
};

/* Open-addressing hash from a byte string to a string id (slots hold id + 1, 0 = empty). */
struct tok_strmap {
    uint32_t *slots;
    uint64_t mask;
};

/* Open-addressing hash from a pair of string ids to (rank, id of the merged string). */
struct tok_merge_slot {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank;
    int32_t result;
};

#define TOK_MAX_REGEX 8

struct realm_tokenizer {
    enum tok_kind kind;
    char kind_name[16];
    char pre_name[48];
    int pre_type;

    /* strings: ids [0, n_vocab) are the tokens; ids [n_vocab, n_str) are strings that occur only
     * in BPE merges (never emitted). */
    int32_t n_vocab;
    int32_t n_str;
    struct tok_entry *str;
    char *text;
    size_t text_len;
    struct tok_strmap map;
    int32_t max_token_len;

    /* special ids (-1 = none) */
    int32_t bos, eos, eot, eom, unk, sep, pad;
    bool add_bos, add_eos, add_sep, add_space_prefix, ignore_merges, clean_spaces;
    uint8_t *eog; /* n_vocab flags */

    /* tokens whose text is split out before segmentation (CONTROL | USER_DEFINED | UNKNOWN),
     * in a byte trie for the candidate scan */
    int32_t n_special;
    int32_t *special; /* ids */
    struct tok_trie *trie;

    /* SPM: <0xNN> fallback per byte (-1 if absent or not allowed) */
    int32_t byte_token[256];
    /* SPM: bit (a << 8 | b) set if bytes a, b are adjacent inside some token */
    uint8_t spm_pairs[8192];

    /* BPE */
    struct tok_merge_slot *merges;
    uint64_t merges_mask;
    int32_t byte_sid[256]; /* string id of the byte-to-unicode char of each byte, or -1 */
    char byte_enc[256][3]; /* UTF-8 of the byte-to-unicode char, NUL-padded */
    uint8_t byte_enc_len[256];
    int16_t unicode_to_byte[324]; /* inverse for code points < 324, -1 elsewhere */
    int n_regex;
    void *regex[TOK_MAX_REGEX]; /* pcre2_code_8 * */
    void *gctx;                 /* pcre2_general_context_8 * (realm_malloc) */

    /* chat template */
    char *chat_template; /* the Jinja source in use (the GGUF's or a configured file's), or NULL */
    size_t chat_template_len;
    const char *chat_family;    /* static name or NULL */
    struct realm_template *tpl; /* chat_template parsed; NULL: render with a family (chat_family) */
    bool family_forced;         /* a configured family name replaces the file's template */
    _Atomic bool warned_chatml; /* the ChatML fallback has been logged */
};

/* A growable int32 array, the output of the segmenters. */
struct tok_ids {
    int32_t *v;
    int64_t n, cap;
};
int tok_ids_push(struct tok_ids *a, int32_t id);

/* Per-call scratch shared by the segmenters (grown on demand, freed by tok_buf_free). */
struct tok_buf {
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
    char *bytes;
    size_t bytes_cap;
    void *chunks;
    size_t chunks_cap;
    void *chunks2;
    size_t chunks2_cap;
    void *match_data; /* pcre2_match_data_8 * */
    char *fix;        /* BPE: the text with untokenizable invalid bytes replaced */
    size_t fix_cap;
    /* BPE: per-call cache of short words -> ids (natural text repeats its words) */
    struct tok_wcache_slot *wc;
    int32_t *wc_ids;
    size_t wc_ids_n, wc_ids_cap;
    uint32_t wc_used, wc_slots;
    size_t text_len; /* the whole input (sizes the word cache) */
};
void tok_buf_free(struct tok_buf *b);

/* Segments one word with fn, memoising the ids of short words for the rest of the call. */
typedef int (*tok_word_fn)(const struct realm_tokenizer *t, const char *w, size_t n,
                           struct tok_buf *b, struct tok_ids *out);
int tok_cached(const struct realm_tokenizer *t, const char *w, size_t n, struct tok_buf *b,
               struct tok_ids *out, tok_word_fn fn);
int tok_buf_reserve(void **p, size_t *cap, size_t need, size_t elem);

/* ---- vocab.c ---- */
uint64_t tok_hash(const void *p, size_t n);
/* String id of bytes (p, n), or -1. */
int32_t tok_str_find(const struct realm_tokenizer *t, const char *p, size_t n);
/* Token id of bytes (p, n) (string ids past the vocabulary excluded), or -1. */
static inline int32_t tok_find(const struct realm_tokenizer *t, const char *p, size_t n) {
    int32_t id = tok_str_find(t, p, n);
    return id < t->n_vocab ? id : -1;
}
static inline const char *tok_text(const struct realm_tokenizer *t, int32_t id, size_t *len) {
    *len = t->str[id].len;
    return t->text + t->str[id].off;
}

/* ---- spm.c ---- */
/* Segments (text, len) — already space-escaped — with the SPM bigram algorithm, appending ids. */
int tok_spm_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out);

/* ---- wpm.c ---- */
/* Checks that the Unicode tables (ICU) are usable. Errors: REALM_E_INTERNAL. */
int tok_wpm_init(struct realm_tokenizer *t, struct realm_err *err);
/* Normalizes, splits and WordPiece-segments one raw fragment, appending ids. */
int tok_wpm_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out);

/* ---- bpe.c ---- */
/* Selects the pre-tokenizer regexes for t->pre_name and compiles them; fills the byte tables.
 * Errors: REALM_E_UNSUPPORTED (unknown pre-tokenizer), REALM_E_INTERNAL (regex), NOMEM. */
int tok_bpe_init(struct realm_tokenizer *t, struct realm_err *err);
/* Loads tokenizer.ggml.merges into the merge table. */
int tok_bpe_load_merges(struct realm_tokenizer *t, const struct realm_gguf *g,
                        struct realm_err *err);
void tok_bpe_free(struct realm_tokenizer *t);
/* Frees a tok_buf's PCRE2 match data (NULL is a no-op). */
void tok_bpe_match_free(void *md);
/* Fills byte_sid from the string table (after merges are loaded). */
void tok_bpe_byte_sids(struct realm_tokenizer *t);
/* Pre-tokenizes and BPE-encodes one raw fragment, appending ids. */
int tok_bpe_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out);

/* ---- trie (vocab.c) ---- */
struct tok_trie;
struct tok_trie *tok_trie_build(const struct realm_tokenizer *t);
void tok_trie_free(struct tok_trie *tr);
/* Calls fn(id) for every special token whose text starts at text[pos] (any length). */
void tok_trie_scan(const struct tok_trie *tr, const char *text, size_t len,
                   void (*fn)(int32_t id, void *user), void *user);

/* ---- tokenizer.c ---- */
/* Bytes [off, off + len) of a text. */
struct tok_span {
    size_t off, len;
};
/* realm_tokenize, except that control and unknown tokens are recognised (with PARSE_SPECIAL)
 * only where their text overlaps none of plain[0..n_plain) (sorted, disjoint, non-empty spans):
 * inside those spans the text is tokenized as without PARSE_SPECIAL. Same contract otherwise. */
int tok_tokenize(const struct realm_tokenizer *t, const char *text, size_t len, uint32_t flags,
                 const struct tok_span *plain, size_t n_plain, int32_t *out, int64_t cap,
                 int64_t *n_out);

/* ---- chat.c ---- */
const char *tok_chat_detect(const char *tmpl, size_t len);
const char *tok_chat_detect_vocab(const struct realm_tokenizer *t);
/* Parses src as t's Jinja chat template (replacing any earlier one; the source is copied).
 * Errors: as realm_template_parse. */
int tok_chat_set_template(struct realm_tokenizer *t, const char *src, size_t len,
                          struct realm_err *err);

/* Content-span mapping of a Jinja rendering (chat.c; exposed for tests). `sent` is the template
 * rendered with every content slot replaced by opener + decimal slot index + closer; `real` the
 * same rendering with the real slot texts. Finds where each slot's text landed in `real`: the
 * bytes between sentinels must equal the real text exactly, and a slot's text may appear as is
 * or with leading/trailing whitespace (or only newlines) stripped, as templates' trim/strip do.
 * On success *spans (realm_malloc'd, sorted, disjoint, non-empty, touching ones merged) and
 * *n_spans. REALM_E_FORMAT if the renderings cannot be mapped (fail closed), REALM_E_NOMEM. */
struct tok_slot {
    const char *text;
    size_t len;
};
int tok_chat_map_spans(const char *sent, size_t sent_len, const char *real, size_t real_len,
                       const char *opener, const char *closer, const struct tok_slot *slots,
                       size_t n_slots, struct tok_span **spans, size_t *n_spans);

/* ---- UTF-8 helpers ---- */
/* llama.cpp's unicode_len_utf8: the sequence length announced by a lead byte (1 for others). */
static inline size_t tok_utf8_len(unsigned char c) {
    static const uint8_t lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lut[c >> 4];
}

#endif
