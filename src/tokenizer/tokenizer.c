/*
 * tokenizer.c — the public tokenizer API: building a tokenizer from GGUF metadata (as llama.cpp's
 * llama_vocab::impl::load does), tokenization with special-token partitioning
 * (tokenizer_st_partition), token pieces (token_to_piece) and the streaming UTF-8 detokenizer.
 *
 * Owns: the realm_tokenizer and all its arrays. Thread rule: a tokenizer is immutable after
 * realm_tokenizer_load; realm_tokenize and realm_token_piece may run concurrently; a realm_detok
 * belongs to one caller.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/tokenizer.h"
#include "tokenizer/tok.h"

/* ---------------------------------------------------------------------------------------------
 * loading
 * ------------------------------------------------------------------------------------------- */

static bool get_str(const struct realm_gguf *g, const char *key, char *buf, size_t cap) {
    const char *s;
    size_t n;
    if (!realm_gguf_get_str(g, key, &s, &n)) return false;
    if (n >= cap) n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return true;
}

static void set_id(const struct realm_tokenizer *t, const struct realm_gguf *g, const char *key,
                   int32_t *id) {
    /* a default outside the vocabulary is disabled; a key outside it keeps the default */
    if (*id >= t->n_vocab) *id = -1;
    uint32_t v;
    if (!realm_gguf_get_u32(g, key, &v)) return;
    if (v < (uint32_t)t->n_vocab)
        *id = (int32_t)v;
    else
        realm_log(REALM_LOG_DEBUG, "tokenizer", "%s = %u is outside the vocabulary (%d); ignored",
                  key, v, t->n_vocab);
}

static int32_t find_cstr(const struct realm_tokenizer *t, const char *s) {
    return tok_find(t, s, strlen(s));
}

/* The first token of `names` present in the vocabulary, or -1 (llama.cpp detects EOT/FIM tokens
 * by text; it also turns such tokens into control tokens). */
static int32_t detect_by_text(struct realm_tokenizer *t, const char *const *names) {
    for (size_t i = 0; names[i]; i++) {
        int32_t id = find_cstr(t, names[i]);
        if (id >= 0) {
            t->str[id].attr |= TOK_ATTR_CONTROL;
            return id;
        }
    }
    return -1;
}

static const char *const k_eot_names[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "<|end_of_text|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          ("<\xef\xbd\x9c"
                                           "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"),
                                          "<end_of_utterance>",
                                          NULL};
static const char *const k_eom_names[] = {"<|eom_id|>", NULL};
static const char *const k_fim_pre_names[] = {"<|fim_prefix|>",
                                              "<fim-prefix>",
                                              "<fim_prefix>",
                                              ("<\xef\xbd\x9c"
                                               "fim\xe2\x96\x81"
                                               "begin\xef\xbd\x9c>"),
                                              "<PRE>",
                                              "\xe2\x96\x81<PRE>",
                                              "<|code_prefix|>",
                                              "<|prefix|>",
                                              NULL};
static const char *const k_fim_suf_names[] = {"<|fim_suffix|>",
                                              "<fim-suffix>",
                                              "<fim_suffix>",
                                              ("<\xef\xbd\x9c"
                                               "fim\xe2\x96\x81hole\xef\xbd\x9c>"),
                                              "<SUF>",
                                              "\xe2\x96\x81<SUF>",
                                              "<|code_suffix|>",
                                              "<|suffix|>",
                                              NULL};
static const char *const k_fim_mid_names[] = {"<|fim_middle|>",
                                              "<fim-middle>",
                                              "<fim_middle>",
                                              ("<\xef\xbd\x9c"
                                               "fim\xe2\x96\x81"
                                               "end\xef\xbd\x9c>"),
                                              "<MID>",
                                              "\xe2\x96\x81<MID>",
                                              "<|code_middle|>",
                                              "<|middle|>",
                                              NULL};
static const char *const k_fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                              "<PAD>",       "[PAD]",     NULL};
static const char *const k_fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                              "<REPO>",       "<reponame>",    NULL};
static const char *const k_fim_sep_names[] = {"<|file_sep|>", NULL};
/* Tokens that end a generation wherever they occur (llama.cpp's special_eog_ids text list). */
static const char *const k_eog_names[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<|return|>",
                                          "<|call|>",
                                          "<|flush|>",
                                          "<|calls|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "<|eom_id|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "[EOS]",
                                          "<|end_of_text|>",
                                          "<end_of_utterance>",
                                          "</s>",
                                          "<eos>",
                                          "<turn|>",
                                          "<|tool_response>",
                                          "[e~[",
                                          ("<\xef\xbd\x9c"
                                           "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"),
                                          NULL};

static void mark_eog(struct realm_tokenizer *t, int32_t id) {
    if (id >= 0 && id < t->n_vocab) t->eog[id] = 1;
}

/* A special id from metadata (keys tried in order), else detected by text (llama.cpp only
 * detects, and turns into a control token, when the file names none). */
static int32_t special_id(struct realm_tokenizer *t, const struct realm_gguf *g, const char *key1,
                          const char *key2, const char *const *names) {
    const char *keys[2] = {key1, key2};
    int32_t id = -1;
    for (int k = 0; k < 2; k++) {
        uint32_t v;
        if (keys[k] && realm_gguf_get_u32(g, keys[k], &v) && v < (uint32_t)t->n_vocab)
            id = (int32_t)v;
    }
    return id >= 0 ? id : detect_by_text(t, names);
}

static void detect_specials(struct realm_tokenizer *t, const struct realm_gguf *g) {
    if (t->eot < 0) t->eot = detect_by_text(t, k_eot_names);
    if (t->eom < 0) t->eom = detect_by_text(t, k_eom_names);
    special_id(t, g, "tokenizer.ggml.prefix_token_id", "tokenizer.ggml.fim_pre_token_id",
               k_fim_pre_names);
    special_id(t, g, "tokenizer.ggml.suffix_token_id", "tokenizer.ggml.fim_suf_token_id",
               k_fim_suf_names);
    special_id(t, g, "tokenizer.ggml.middle_token_id", "tokenizer.ggml.fim_mid_token_id",
               k_fim_mid_names);
    int32_t fim_pad = special_id(t, g, "tokenizer.ggml.fim_pad_token_id", NULL, k_fim_pad_names);
    int32_t fim_rep = special_id(t, g, "tokenizer.ggml.fim_rep_token_id", NULL, k_fim_rep_names);
    int32_t fim_sep = special_id(t, g, "tokenizer.ggml.fim_sep_token_id", NULL, k_fim_sep_names);
    mark_eog(t, fim_pad);
    mark_eog(t, fim_rep);
    mark_eog(t, fim_sep);
    for (size_t i = 0; k_eog_names[i]; i++) {
        int32_t id = find_cstr(t, k_eog_names[i]);
        if (id < 0) continue;
        t->str[id].attr |= TOK_ATTR_CONTROL;
        mark_eog(t, id);
    }
    mark_eog(t, t->eos);
    mark_eog(t, t->eot);
    mark_eog(t, t->eom);
    /* o200k_harmony / solar-open: "<|end|>" is not an end of generation there */
    int32_t ret = find_cstr(t, "<|return|>"), call = find_cstr(t, "<|call|>");
    int32_t calls = find_cstr(t, "<|calls|>"), flush = find_cstr(t, "<|flush|>");
    int32_t end = find_cstr(t, "<|end|>");
    if (end >= 0 && ((ret >= 0 && call >= 0) || (calls >= 0 && flush >= 0))) {
        t->eog[end] = 0;
        t->str[end].attr = TOK_ATTR_USER_DEFINED;
    }
    /* gemma4 / paddleocr: "</s>" is ordinary text where "<|tool_response>" exists */
    int32_t s_end = find_cstr(t, "</s>");
    if (s_end >= 0 && find_cstr(t, "<|tool_response>") >= 0 && s_end != t->eos) {
        t->eog[s_end] = 0;
        t->str[s_end].attr = TOK_ATTR_NORMAL;
    }
    /* control tokens named "unused" are unused (llama.cpp) */
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!(t->str[i].attr & TOK_ATTR_CONTROL)) continue;
        size_t len;
        const char *s = tok_text(t, i, &len);
        if (len >= 6 && memmem(s, len, "unused", 6)) t->str[i].attr |= TOK_ATTR_UNUSED;
    }
}

static int cmp_special(const void *a, const void *b, void *tv) {
    const struct realm_tokenizer *t = tv;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->str[x].len != t->str[y].len) return t->str[x].len > t->str[y].len ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Phi-3 files strip whitespace after their special tokens (llama.cpp's per-model attributes). */
static void model_token_attrs(struct realm_tokenizer *t, const struct realm_gguf *g) {
    char name[128] = "";
    get_str(g, "general.name", name, sizeof name);
    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!strstr(name, "phi-3") && !strstr(name, "phi3")) return;
    for (int32_t i = 0; i < t->n_special; i++)
        t->str[t->special[i]].attr |= TOK_ATTR_RSTRIP;
    int32_t id = find_cstr(t, "</s>");
    if (id >= 0) t->str[id].attr |= TOK_ATTR_RSTRIP;
    static const char *const off[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (size_t i = 0; i < 3; i++)
        if ((id = find_cstr(t, off[i])) >= 0) t->str[id].attr &= ~(uint32_t)TOK_ATTR_RSTRIP;
}

static uint32_t type_to_attr(int32_t type) {
    switch (type) {
    case TOK_TYPE_NORMAL:
        return TOK_ATTR_NORMAL;
    case TOK_TYPE_UNKNOWN:
        return TOK_ATTR_UNKNOWN;
    case TOK_TYPE_CONTROL:
        return TOK_ATTR_CONTROL;
    case TOK_TYPE_USER_DEFINED:
        return TOK_ATTR_USER_DEFINED;
    case TOK_TYPE_UNUSED:
        return TOK_ATTR_UNUSED;
    case TOK_TYPE_BYTE:
        return TOK_ATTR_BYTE;
    default:
        return TOK_ATTR_UNDEFINED;
    }
}

static int load_tokens(struct realm_tokenizer *t, const struct realm_gguf *g,
                       struct realm_err *err) {
    static const char *key = "tokenizer.ggml.tokens";
    int64_t kv = realm_gguf_find_key(g, key);
    enum realm_gguf_vtype et;
    uint64_t n;
    const void *data;
    if (kv < 0)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: missing, expected the vocabulary",
                             key);
    if (!realm_gguf_get_arr(g, key, &et, &n, &data) || et != REALM_GGUF_STRING)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: not a string array", key);
    if (n == 0 || n > (uint64_t)INT32_MAX / 4)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: %llu tokens, expected 1..%d", key,
                             (unsigned long long)n, INT32_MAX / 4);

    /* scores (f32, or i32 in some converters) and types are optional but must cover the vocab */
    const void *scores = NULL, *types = NULL;
    enum realm_gguf_vtype st = REALM_GGUF_FLOAT32;
    uint64_t m;
    if (realm_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        if (!realm_gguf_get_arr(g, "tokenizer.ggml.scores", &st, &m, &scores) ||
            (st != REALM_GGUF_FLOAT32 && st != REALM_GGUF_INT32) || m < n)
            return realm_err_set(
                err, REALM_E_FORMAT,
                "tokenizer: tokenizer.ggml.scores: not an f32/i32 array of >= %llu",
                (unsigned long long)n);
    }
    if (realm_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        enum realm_gguf_vtype tt;
        if (!realm_gguf_get_arr(g, "tokenizer.ggml.token_type", &tt, &m, &types) ||
            tt != REALM_GGUF_INT32 || m < n)
            return realm_err_set(
                err, REALM_E_FORMAT,
                "tokenizer: tokenizer.ggml.token_type: not an i32 array of >= %llu",
                (unsigned long long)n);
    }

    size_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (!realm_gguf_kv_arr_str(g, kv, i, &s, &len))
            return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s[%llu]: unreadable", key,
                                 (unsigned long long)i);
        if (len > UINT32_MAX - total)
            return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: token texts exceed 4 GiB",
                                 key);
        total += len;
    }
    t->n_vocab = t->n_str = (int32_t)n;
    t->str = realm_calloc(n, sizeof *t->str);
    t->text = realm_malloc(total + 1);
    t->eog = realm_calloc(n, 1);
    uint64_t cap = 16;
    while (cap < n * 2 + 2)
        cap <<= 1;
    t->map.slots = realm_calloc(cap, sizeof *t->map.slots);
    t->map.mask = cap - 1;
    if (!t->str || !t->text || !t->eog || !t->map.slots)
        return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory (%llu tokens)",
                             (unsigned long long)n);

    size_t off = 0;
    int64_t dup = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        realm_gguf_kv_arr_str(g, kv, i, &s, &len);
        memcpy(t->text + off, s, len);
        struct tok_entry *e = &t->str[i];
        e->off = (uint32_t)off;
        e->len = (uint32_t)len;
        off += len;
        if (scores) {
            if (st == REALM_GGUF_FLOAT32) {
                memcpy(&e->score, (const char *)scores + 4 * i, 4);
            } else {
                int32_t v;
                memcpy(&v, (const char *)scores + 4 * i, 4);
                e->score = (float)v;
            }
        }
        int32_t type = TOK_TYPE_NORMAL;
        if (types) memcpy(&type, (const char *)types + 4 * i, 4);
        e->attr = types ? type_to_attr(type) : TOK_ATTR_NORMAL;
        if ((int32_t)len > t->max_token_len) t->max_token_len = (int32_t)len;
        if (len == 0) continue; /* unreachable by text */
        if (tok_str_find(t, t->text + e->off, len) >= 0) {
            dup++; /* the first id keeps the text */
            continue;
        }
        uint64_t h = tok_hash(t->text + e->off, len) & t->map.mask;
        while (t->map.slots[h])
            h = (h + 1) & t->map.mask;
        t->map.slots[h] = (uint32_t)i + 1;
    }
    t->text_len = off;
    if (dup)
        realm_log(REALM_LOG_WARN, "tokenizer", "%lld duplicate token texts (first id kept)",
                  (long long)dup);
    return REALM_OK;
}

static int build_specials(struct realm_tokenizer *t, struct realm_err *err) {
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if ((t->str[i].attr & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) &&
            t->str[i].len)
            n++;
    t->special = realm_malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!t->special) return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
    t->n_special = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if ((t->str[i].attr & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) &&
            t->str[i].len)
            t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    return REALM_OK;
}

void realm_tokenizer_free(struct realm_tokenizer *t) {
    if (!t) return;
    tok_bpe_free(t);
    tok_trie_free(t->trie);
    realm_free(t->str);
    realm_free(t->text);
    realm_free(t->map.slots);
    realm_free(t->eog);
    realm_free(t->special);
    realm_free(t->chat_template);
    realm_template_free(t->tpl);
    realm_free(t);
}

int realm_tokenizer_load(const struct realm_gguf *g, struct realm_tokenizer **out,
                         struct realm_err *err) {
    if (!g || !out) return realm_err_set(err, REALM_E_INVALID, "tokenizer: NULL argument");
    char model[32];
    if (!get_str(g, "tokenizer.ggml.model", model, sizeof model))
        return realm_err_set(err, REALM_E_NOT_FOUND, "tokenizer: tokenizer.ggml.model: missing");
    enum tok_kind kind;
    if (!strcmp(model, "llama"))
        kind = TOK_KIND_SPM;
    else if (!strcmp(model, "gpt2"))
        kind = TOK_KIND_BPE;
    else if (!strcmp(model, "bert"))
        kind = TOK_KIND_WPM;
    else
        return realm_err_set(err, REALM_E_UNSUPPORTED,
                             "tokenizer: tokenizer.ggml.model: '%s', expected 'llama' (SPM), "
                             "'gpt2' (BPE) or 'bert' (WordPiece)",
                             model);

    struct realm_tokenizer *t = realm_calloc(1, sizeof *t);
    if (!t) return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
    int rc;
    t->kind = kind;
    snprintf(t->kind_name, sizeof t->kind_name, "%s",
             kind == TOK_KIND_SPM   ? "llama"
             : kind == TOK_KIND_BPE ? "gpt2"
                                    : "bert");
    {
        const char *p;
        size_t n;
        if (realm_gguf_get_str(g, "tokenizer.ggml.pre", &p, &n)) {
            if (n >= sizeof t->pre_name) {
                rc = realm_err_set(err, REALM_E_UNSUPPORTED,
                                   "tokenizer: tokenizer.ggml.pre: %zu-byte name, unknown", n);
                goto fail;
            }
            memcpy(t->pre_name, p, n);
            t->pre_name[n] = 0;
        }
    }
    rc = load_tokens(t, g, err);
    if (rc) goto fail;

    /* defaults of llama.cpp per vocabulary type */
    t->eot = t->eom = t->sep = t->pad = -1;
    if (kind == TOK_KIND_SPM) {
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_space_prefix = true;
        t->add_bos = true;
        snprintf(t->pre_name, sizeof t->pre_name, "default"); /* llama.cpp ignores it for SPM */
    } else if (kind == TOK_KIND_WPM) {
        /* BERT: [CLS] text [SEP]; llama.cpp treats [CLS] as the BOS token */
        t->bos = 101;
        t->eos = -1;
        t->unk = 100;
        t->sep = 102;
        t->pad = 0;
        t->add_bos = true;
        t->add_sep = true;
        t->add_space_prefix = false;
        rc = tok_wpm_init(t, err);
        if (rc) goto fail;
    } else {
        t->bos = 11;
        t->eos = 11;
        t->unk = -1;
        t->add_space_prefix = false;
        rc = tok_bpe_init(t, err); /* sets pre-specific add_bos / ignore_merges / clean_spaces */
        if (rc) goto fail;
    }
    realm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);

    set_id(t, g, "tokenizer.ggml.cls_token_id", &t->bos);
    set_id(t, g, "tokenizer.ggml.bos_token_id", &t->bos);
    set_id(t, g, "tokenizer.ggml.eos_token_id", &t->eos);
    set_id(t, g, "tokenizer.ggml.eot_token_id", &t->eot);
    set_id(t, g, "tokenizer.ggml.eom_token_id", &t->eom);
    set_id(t, g, "tokenizer.ggml.unknown_token_id", &t->unk);
    set_id(t, g, "tokenizer.ggml.seperator_token_id", &t->sep);
    set_id(t, g, "tokenizer.ggml.padding_token_id", &t->pad);
    realm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    realm_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    realm_gguf_get_bool(g, "tokenizer.ggml.add_sep_token", &t->add_sep);
    if (t->add_sep && t->sep < 0) t->add_sep = false;
    if (t->add_bos && t->bos < 0) {
        realm_log(REALM_LOG_WARN, "tokenizer",
                  "add_bos_token is set but there is no BOS token; ignored");
        t->add_bos = false;
    }
    if (t->add_eos && t->eos < 0) {
        realm_log(REALM_LOG_WARN, "tokenizer",
                  "add_eos_token is set but there is no EOS token; ignored");
        t->add_eos = false;
    }

    detect_specials(t, g);
    rc = build_specials(t, err);
    if (rc) goto fail;
    model_token_attrs(t, g);
    t->trie = tok_trie_build(t);
    if (!t->trie) {
        rc = realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory (special tokens)");
        goto fail;
    }

    if (kind == TOK_KIND_SPM) {
        /* byte fallback: <0xNN>, else the one-byte token; never a control token */
        for (int b = 0; b < 256; b++) {
            char hex[8];
            snprintf(hex, sizeof hex, "<0x%02X>", b);
            int32_t id = find_cstr(t, hex);
            if (id >= 0 && (t->str[id].attr & TOK_ATTR_CONTROL)) id = -1;
            if (id < 0) {
                char one = (char)b;
                id = tok_find(t, &one, 1);
                if (id >= 0 && (t->str[id].attr & TOK_ATTR_CONTROL)) id = -1;
            }
            t->byte_token[b] = id;
        }
        for (int32_t i = 0; i < t->n_vocab; i++) {
            size_t len;
            const unsigned char *s = (const unsigned char *)tok_text(t, i, &len);
            for (size_t k = 1; k < len; k++) {
                unsigned bit = (unsigned)s[k - 1] << 8 | s[k];
                t->spm_pairs[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            }
        }
    } else if (kind == TOK_KIND_BPE) {
        rc = tok_bpe_load_merges(t, g, err);
        if (rc) goto fail;
        tok_bpe_byte_sids(t);
    }

    {
        const char *s;
        size_t n;
        if (realm_gguf_get_str(g, "tokenizer.chat_template", &s, &n)) {
            t->chat_template = realm_strndup(s, n);
            if (!t->chat_template) {
                rc = realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
                goto fail;
            }
            t->chat_template_len = n;
            t->chat_family = tok_chat_detect(s, n);
            /* the template itself renders chats; one our interpreter cannot parse leaves the
             * family renderer detected from its text (or ChatML) in its place */
            struct realm_err te;
            realm_err_clear(&te);
            int trc = realm_template_parse(s, n, &t->tpl, &te);
            if (trc == REALM_E_NOMEM) {
                rc = realm_err_set(err, trc, "tokenizer: out of memory");
                goto fail;
            }
            if (trc)
                realm_log(REALM_LOG_WARN, "tokenizer",
                          "tokenizer.chat_template: %s; chats use the %s renderer", te.msg,
                          t->chat_family ? t->chat_family : "ChatML");
        } else {
            t->chat_family = tok_chat_detect_vocab(t);
        }
    }
    *out = t;
    return REALM_OK;

fail:
    realm_tokenizer_free(t);
    return rc;
}

int32_t realm_tokenizer_n_vocab(const struct realm_tokenizer *t) {
    return t->n_vocab;
}
int32_t realm_tokenizer_bos(const struct realm_tokenizer *t) {
    return t->bos;
}
int32_t realm_tokenizer_eos(const struct realm_tokenizer *t) {
    return t->eos;
}
bool realm_tokenizer_add_bos(const struct realm_tokenizer *t) {
    return t->add_bos;
}
bool realm_tokenizer_is_eog(const struct realm_tokenizer *t, int32_t token) {
    return token >= 0 && token < t->n_vocab && t->eog[token];
}
const char *realm_tokenizer_kind(const struct realm_tokenizer *t) {
    return t->kind_name;
}
const char *realm_tokenizer_pre(const struct realm_tokenizer *t) {
    return t->pre_name;
}
const char *realm_tokenizer_chat_template(const struct realm_tokenizer *t) {
    return t->chat_family;
}

/* ---------------------------------------------------------------------------------------------
 * tokenization
 * ------------------------------------------------------------------------------------------- */

struct frag {
    int32_t token; /* -1: raw text [off, off + len) */
    uint32_t off, len;
};

struct frag_list {
    struct frag *v;
    size_t n, cap;
};

static int frag_push(struct frag_list *l, struct frag f) {
    if (tok_buf_reserve((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) return REALM_E_NOMEM;
    l->v[l->n++] = f;
    return REALM_OK;
}

struct cand_ctx {
    const struct realm_tokenizer *t;
    bool parse_special;
    uint8_t *seen;
    int32_t *ids;
    size_t n, cap;
    int rc;
};

static void cand_found(int32_t id, void *user) {
    struct cand_ctx *c = user;
    if (c->seen[id >> 3] & (1u << (id & 7))) return;
    c->seen[id >> 3] |= (uint8_t)(1u << (id & 7));
    uint32_t attr = c->t->str[id].attr;
    /* without parse_special only user-defined tokens are split out (HF added tokens) */
    if (!c->parse_special && (attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN))) return;
    if (tok_buf_reserve((void **)&c->ids, &c->cap, c->n + 1, sizeof *c->ids)) {
        c->rc = REALM_E_NOMEM;
        return;
    }
    c->ids[c->n++] = id;
}

static bool is_space(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* True if [pos, pos + n) overlaps none of the sorted, disjoint, non-empty spans. */
static bool outside_spans(const struct tok_span *sp, size_t n_sp, size_t pos, size_t n) {
    size_t lo = 0, hi = n_sp;
    while (lo < hi) { /* the first span that ends after pos */
        size_t mid = lo + (hi - lo) / 2;
        if (sp[mid].off + sp[mid].len <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n_sp || sp[lo].off >= pos + n;
}

/* tokenizer_st_partition: special tokens, longest text first, split every raw fragment at their
 * occurrences. Only tokens that occur in the text are tried (found with the trie), which gives the
 * same fragments as trying all of them. An occurrence of a control or unknown token that overlaps
 * a plain span stays text (user-defined tokens split out everywhere, as without parse_special);
 * the search goes on one byte further, so an allowed occurrence overlapping it is still found. */
static int partition(const struct realm_tokenizer *t, const char *text, size_t len,
                     bool parse_special, const struct tok_span *plain, size_t n_plain,
                     struct frag_list *out) {
    out->n = 0;
    if (len == 0) return REALM_OK;
    if (frag_push(out, (struct frag){-1, 0, (uint32_t)len})) return REALM_E_NOMEM;
    if (t->n_special == 0) return REALM_OK;
    struct cand_ctx c = {t, parse_special, NULL, NULL, 0, 0, REALM_OK};
    c.seen = realm_calloc((size_t)t->n_vocab / 8 + 1, 1);
    if (!c.seen) return REALM_E_NOMEM;
    tok_trie_scan(t->trie, text, len, cand_found, &c);
    realm_free(c.seen);
    if (c.rc) {
        realm_free(c.ids);
        return c.rc;
    }
    if (c.n == 0) return REALM_OK;
    qsort_r(c.ids, c.n, sizeof *c.ids, cmp_special, (void *)t);

    struct frag_list next = {0};
    int rc = REALM_OK;
    for (size_t k = 0; k < c.n && rc == REALM_OK; k++) {
        int32_t id = c.ids[k];
        size_t slen;
        const char *s = tok_text(t, id, &slen);
        uint32_t attr = t->str[id].attr;
        bool guarded = n_plain && (attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
        next.n = 0;
        for (size_t i = 0; i < out->n && rc == REALM_OK; i++) {
            struct frag f = out->v[i];
            if (f.token >= 0) {
                rc = frag_push(&next, f);
                continue;
            }
            size_t base = f.off, blen = f.len, from = base;
            for (;;) {
                size_t rest = base + blen - from;
                const char *m = slen && rest >= slen ? memmem(text + from, rest, s, slen) : NULL;
                if (m && guarded && !outside_spans(plain, n_plain, (size_t)(m - text), slen)) {
                    from = (size_t)(m - text) + 1;
                    continue;
                }
                if (!m) {
                    if (blen)
                        rc = frag_push(&next, (struct frag){-1, (uint32_t)base, (uint32_t)blen});
                    break;
                }
                size_t mpos = (size_t)(m - text);
                size_t llen = mpos - base;
                if (attr & TOK_ATTR_LSTRIP)
                    while (llen > 0 && is_space(text[base + llen - 1]))
                        llen--;
                if (llen) rc = frag_push(&next, (struct frag){-1, (uint32_t)base, (uint32_t)llen});
                if (!rc) rc = frag_push(&next, (struct frag){id, 0, 0});
                if (rc) break;
                size_t roff = mpos + slen, rlen = base + blen - roff;
                if (attr & TOK_ATTR_RSTRIP)
                    while (rlen > 0 && is_space(text[roff])) {
                        roff++;
                        rlen--;
                    }
                base = from = roff;
                blen = rlen;
                if (!blen) break;
            }
        }
        struct frag_list tmp = *out;
        *out = next;
        next = tmp;
    }
    realm_free(next.v);
    realm_free(c.ids);
    return rc;
}

/* SPM: optional leading space, then ' ' -> U+2581 ("▁"), as llama_escape_whitespace. */
static int spm_fragment(const struct realm_tokenizer *t, const char *s, size_t n, bool prefix,
                        struct tok_buf *b, char **esc_buf, size_t *esc_cap, struct tok_ids *ids) {
    size_t need = 3 * (n + 1);
    if (tok_buf_reserve((void **)esc_buf, esc_cap, need, 1)) return REALM_E_NOMEM;
    char *o = *esc_buf;
    size_t k = 0;
    if (prefix) {
        memcpy(o, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(o + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            o[k++] = s[i];
        }
    }
    return tok_spm_segment(t, o, k, b, ids);
}

int realm_tokenize(const struct realm_tokenizer *t, const char *text, size_t len, uint32_t flags,
                   int32_t *out, int64_t cap, int64_t *n_out) {
    return tok_tokenize(t, text, len, flags, NULL, 0, out, cap, n_out);
}

int tok_tokenize(const struct realm_tokenizer *t, const char *text, size_t len, uint32_t flags,
                 const struct tok_span *plain, size_t n_plain, int32_t *out, int64_t cap,
                 int64_t *n_out) {
    if (!t || (!text && len) || !n_out || cap < 0 || (cap > 0 && !out)) return REALM_E_INVALID;
    if (len > (size_t)INT32_MAX / 4) return REALM_E_LIMIT;
    bool add_special = (flags & REALM_TOKENIZE_ADD_BOS) != 0;
    bool parse_special = (flags & REALM_TOKENIZE_PARSE_SPECIAL) != 0;

    struct frag_list frags = {0};
    struct tok_ids ids = {0};
    struct tok_buf b = {0};
    char *esc = NULL;
    size_t esc_cap = 0;
    b.text_len = len;
    int rc = partition(t, text, len, parse_special, plain, n_plain, &frags);
    if (rc) goto done;

    if (add_special && t->add_bos && t->bos >= 0 && (rc = tok_ids_push(&ids, t->bos))) goto done;
    bool prev_special = true; /* SPM: the first raw fragment gets the space prefix */
    for (size_t i = 0; i < frags.n && !rc; i++) {
        const struct frag *f = &frags.v[i];
        if (f->token >= 0) {
            rc = tok_ids_push(&ids, f->token);
            prev_special = true;
            continue;
        }
        if (t->kind == TOK_KIND_SPM) {
            rc = spm_fragment(t, text + f->off, f->len, t->add_space_prefix && prev_special, &b,
                              &esc, &esc_cap, &ids);
            prev_special = false;
        } else if (t->kind == TOK_KIND_WPM) {
            rc = tok_wpm_segment(t, text + f->off, f->len, &b, &ids);
        } else {
            rc = tok_bpe_segment(t, text + f->off, f->len, &b, &ids);
        }
    }
    if (!rc && add_special && t->add_eos && t->eos >= 0) rc = tok_ids_push(&ids, t->eos);
    if (!rc && add_special && t->add_sep && t->sep >= 0) rc = tok_ids_push(&ids, t->sep);
    if (rc) goto done;
    if (ids.n > cap) {
        *n_out = ids.n;
        rc = REALM_E_TOO_SMALL;
        goto done;
    }
    if (ids.n) memcpy(out, ids.v, (size_t)ids.n * sizeof *out);
    *n_out = ids.n;
done:
    realm_free(frags.v);
    realm_free(ids.v);
    realm_free(esc);
    tok_buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * detokenization
 * ------------------------------------------------------------------------------------------- */

/* Code point at s[i] (valid or not: used only on the vocabulary's own BPE text). */
static uint32_t decode_cp(const unsigned char *s, size_t n, size_t *i) {
    unsigned char c = s[*i];
    size_t l = tok_utf8_len(c);
    if (l == 1 || *i + l > n) {
        (*i)++;
        return c;
    }
    uint32_t cp = l == 2 ? (c & 0x1Fu) : l == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t k = 1; k < l; k++)
        cp = (cp << 6) | (s[*i + k] & 0x3Fu);
    *i += l;
    return cp;
}

int64_t realm_token_piece(const struct realm_tokenizer *t, int32_t token, bool special, char *buf,
                          size_t cap) {
    if (!t || token < 0 || token >= t->n_vocab) return REALM_E_RANGE;
    if (!buf) cap = 0;
    uint32_t attr = t->str[token].attr;
    if (!special && (attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))) return 0;
    size_t len;
    const char *s = tok_text(t, token, &len);
    size_t k = 0;
#define EMIT(ch)                                                                                   \
    do {                                                                                           \
        if (k < cap) buf[k] = (char)(ch);                                                          \
        k++;                                                                                       \
    } while (0)
    if (attr & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED)) {
        for (size_t i = 0; i < len; i++)
            EMIT(s[i]);
    } else if (attr & TOK_ATTR_NORMAL) {
        if (t->kind == TOK_KIND_SPM || t->kind == TOK_KIND_WPM) {
            /* "▁" -> ' ' (WPM: the word-start mark of the GGUF conversion) */
            for (size_t i = 0; i < len; i++) {
                if (i + 2 < len && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                    EMIT(' ');
                    i += 2;
                } else {
                    EMIT(s[i]);
                }
            }
        } else {
            /* byte-level BPE: each character stands for one byte; a character outside the
             * byte table (a vocabulary oddity) is copied through as UTF-8 */
            const unsigned char *u = (const unsigned char *)s;
            for (size_t i = 0; i < len;) {
                size_t i0 = i;
                uint32_t cp = decode_cp(u, len, &i);
                if (cp < 324 && t->unicode_to_byte[cp] >= 0)
                    EMIT(t->unicode_to_byte[cp]);
                else
                    for (size_t q = i0; q < i; q++)
                        EMIT(s[q]);
            }
        }
    } else if (attr & TOK_ATTR_BYTE) {
        /* <0xNN> */
        if (len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>') {
            char hex[3] = {s[3], s[4], 0};
            EMIT(strtol(hex, NULL, 16));
        }
    }
#undef EMIT
    return (int64_t)k;
}

void realm_detok_init(struct realm_detok *d, const struct realm_tokenizer *t, bool special) {
    memset(d, 0, sizeof *d);
    d->t = t;
    d->special = special;
    /* SPM's added space, or the word-start mark of the first WPM word */
    d->strip_space = t->add_space_prefix || t->kind == TOK_KIND_WPM;
    d->first = true;
}

/* Converts pending + piece into valid UTF-8 in o (capacity >= 3 * total), returning the bytes
 * written; the incomplete tail goes to tail/n_tail. */
static size_t utf8_fix(const unsigned char *s, size_t n, char *o, unsigned char *tail,
                       int *n_tail) {
    size_t i = 0, k = 0;
    *n_tail = 0;
    while (i < n) {
        int r = realm_utf8_seq(s + i, n - i);
        if (r > 0) {
            memcpy(o + k, s + i, (size_t)r);
            k += (size_t)r;
            i += (size_t)r;
        } else if (r == 0) {
            *n_tail = (int)(n - i);
            memcpy(tail, s + i, n - i);
            break;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += (size_t)(-r);
        }
    }
    return k;
}

int64_t realm_detok_push(struct realm_detok *d, int32_t token, char *out, size_t cap) {
    int64_t plen = realm_token_piece(d->t, token, d->special, NULL, 0);
    if (plen < 0) return plen;
    size_t total = (size_t)d->n_pending + (size_t)plen;
    unsigned char stack[512];
    char ostack[3 * 512];
    unsigned char *in = total <= sizeof stack ? stack : realm_malloc(total);
    char *o = total <= sizeof stack ? ostack : realm_malloc(3 * total);
    if (!in || !o) {
        if (in != stack) realm_free(in);
        if (o != ostack) realm_free(o);
        return REALM_E_NOMEM;
    }
    memcpy(in, d->pending, (size_t)d->n_pending);
    realm_token_piece(d->t, token, d->special, (char *)in + d->n_pending, (size_t)plen);
    size_t skip = 0;
    bool first = d->first;
    if (plen > 0 && first) {
        /* SPM adds a space in front of the text: drop it from the first visible piece */
        if (d->strip_space && in[d->n_pending] == ' ') {
            memmove(in + d->n_pending, in + d->n_pending + 1, (size_t)plen - 1);
            skip = 1;
        }
        first = false;
    }
    unsigned char tail[8];
    int n_tail;
    size_t k = utf8_fix(in, total - skip, o, tail, &n_tail);
    int64_t rc;
    if (k > cap || n_tail > (int)sizeof d->pending) {
        rc = REALM_E_TOO_SMALL;
    } else {
        if (k) memcpy(out, o, k);
        memcpy(d->pending, tail, (size_t)n_tail);
        d->n_pending = n_tail;
        d->first = first;
        rc = (int64_t)k;
    }
    if (in != stack) realm_free(in);
    if (o != ostack) realm_free(o);
    return rc;
}

int64_t realm_detok_flush(struct realm_detok *d, char *out, size_t cap) {
    if (d->n_pending == 0) return 0;
    /* the held bytes are a valid but unfinished prefix: one maximal subpart, one U+FFFD */
    if (cap < 3) return REALM_E_TOO_SMALL;
    memcpy(out, "\xef\xbf\xbd", 3);
    d->n_pending = 0;
    return 3;
}
