/*
 * fuzz_tokenizer.c — libFuzzer target for the tokenizers: any bytes are tokenized by a small SPM
 * vocabulary (byte fallback, merges, a user-defined and a control token) and a byte-level BPE
 * vocabulary (all 256 byte characters, merges, qwen2 pre-tokenizer), both built in memory as GGUF.
 * Checks: no crash; the token count agrees with a sizing call; every id is in the vocabulary;
 * pieces give back the input exactly when no special token was produced (both vocabs can spell
 * every byte); the streaming detokenizer only ever emits valid UTF-8 and, on valid UTF-8 input,
 * reproduces it; chat rendering of the input as a message does not crash; chat_tokenize of the
 * input split into a system and a user message gives the same count on a sizing call, ids in the
 * vocabulary and, when no content holds a '<' (every control token's text starts with one), the
 * tokens of the rendered prompt tokenized with PARSE_SPECIAL.
 * The first input byte selects the flags (BOS, parse_special).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/gguf.h"
#include "realm/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct gw {
    unsigned char *b;
    size_t n, cap;
    uint64_t n_kv;
};

static void raw(struct gw *w, const void *p, size_t n) {
    while (w->n + n > w->cap) {
        w->cap = w->cap ? w->cap * 2 : 4096;
        w->b = realloc(w->b, w->cap);
        if (!w->b) abort();
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void u32(struct gw *w, uint32_t v) {
    raw(w, &v, 4);
}
static void u64(struct gw *w, uint64_t v) {
    raw(w, &v, 8);
}
static void str(struct gw *w, const char *s, size_t n) {
    u64(w, n);
    raw(w, s, n);
}
static void key(struct gw *w, const char *k, uint32_t type) {
    str(w, k, strlen(k));
    u32(w, type);
    w->n_kv++;
}
static void kv_str(struct gw *w, const char *k, const char *v) {
    key(w, k, REALM_GGUF_STRING);
    str(w, v, strlen(v));
}
static void kv_strs(struct gw *w, const char *k, char **v, size_t n) {
    key(w, k, REALM_GGUF_ARRAY);
    u32(w, REALM_GGUF_STRING);
    u64(w, n);
    for (size_t i = 0; i < n; i++)
        str(w, v[i], strlen(v[i]));
}
static void kv_arr(struct gw *w, const char *k, uint32_t type, const void *v, size_t n) {
    key(w, k, REALM_GGUF_ARRAY);
    u32(w, type);
    u64(w, n);
    raw(w, v, 4 * n);
}

static struct realm_tokenizer *build(struct gw *body) {
    struct gw w = {0};
    raw(&w, "GGUF", 4);
    u32(&w, 3);
    u64(&w, 0);
    u64(&w, body->n_kv);
    raw(&w, body->b, body->n);
    static const unsigned char zero[32];
    raw(&w, zero, (32 - w.n % 32) % 32);
    free(body->b);
    struct realm_gguf *g;
    struct realm_tokenizer *t = NULL;
    struct realm_err err;
    if (realm_gguf_open_memory(w.b, w.n, "fuzz-vocab", &g, &err)) abort();
    if (realm_tokenizer_load(g, &t, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    realm_gguf_close(g); /* the tokenizer keeps copies */
    free(w.b);
    return t;
}

static struct realm_tokenizer *g_spm, *g_bpe;
static int32_t g_spm_special[3], g_bpe_special[2];

static void init(void) {
    /* SPM: <unk> <s> </s> <0x00..0xFF> ▁ and a few merges, <|im_start|> (control), <u> (user) */
    static const char *normal[] = {"\xe2\x96\x81",
                                   "a",
                                   "b",
                                   "c",
                                   "ab",
                                   "bc",
                                   ("\xe2\x96\x81"
                                    "a"),
                                   "\xe2\x96\x81\xe2\x96\x81",
                                   "\xc3\xa9",
                                   ("\xe2\x96\x81"
                                    "ab")};
    size_t nn = sizeof normal / sizeof normal[0], n = 3 + 256 + nn + 2;
    char **tok = calloc(n, sizeof *tok);
    float *sc = calloc(n, sizeof *sc);
    int32_t *ty = calloc(n, sizeof *ty);
    tok[0] = strdup("<unk>"), ty[0] = 2;
    tok[1] = strdup("<s>"), ty[1] = 3;
    tok[2] = strdup("</s>"), ty[2] = 3;
    for (int b = 0; b < 256; b++) {
        tok[3 + b] = malloc(8);
        snprintf(tok[3 + b], 8, "<0x%02X>", b);
        ty[3 + b] = 6;
    }
    for (size_t i = 0; i < nn; i++) {
        tok[259 + i] = strdup(normal[i]);
        ty[259 + i] = 1;
        sc[259 + i] = -(float)(i % 4);
    }
    tok[n - 2] = strdup("<|im_start|>"), ty[n - 2] = 3;
    tok[n - 1] = strdup("<u>"), ty[n - 1] = 4;
    g_spm_special[0] = 1, g_spm_special[1] = (int32_t)n - 2, g_spm_special[2] = (int32_t)n - 1;
    struct gw w = {0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", tok, n);
    kv_arr(&w, "tokenizer.ggml.scores", REALM_GGUF_FLOAT32, sc, n);
    kv_arr(&w, "tokenizer.ggml.token_type", REALM_GGUF_INT32, ty, n);
    g_spm = build(&w);
    for (size_t i = 0; i < n; i++)
        free(tok[i]);
    free(tok);
    free(sc);
    free(ty);

    /* BPE: the 256 byte characters (GPT-2 table), a few merges, two control tokens */
    int map[256], k = 0;
    for (int i = 0; i < 256; i++) {
        bool keep =
            (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF);
        map[i] = keep ? i : 256 + k++;
    }
    static const char *extra[] = {"ab",
                                  "abc",
                                  ("\xc4\xa0"
                                   "a"),
                                  "12",
                                  "\xc4\xa0\xc4\xa0",
                                  "<|endoftext|>",
                                  "<|im_start|>"};
    size_t ne = sizeof extra / sizeof extra[0];
    n = 256 + ne;
    tok = calloc(n, sizeof *tok);
    ty = calloc(n, sizeof *ty);
    for (int b = 0; b < 256; b++) {
        tok[b] = calloc(3, 1);
        if (map[b] < 0x80) {
            tok[b][0] = (char)map[b];
        } else {
            tok[b][0] = (char)(0xC0 | (map[b] >> 6));
            tok[b][1] = (char)(0x80 | (map[b] & 0x3F));
        }
        ty[b] = 1;
    }
    for (size_t i = 0; i < ne; i++) {
        tok[256 + i] = strdup(extra[i]);
        ty[256 + i] = i + 2 >= ne ? 3 : 1;
    }
    g_bpe_special[0] = (int32_t)n - 2, g_bpe_special[1] = (int32_t)n - 1;
    char *merges[] = {"a b", "ab c", "\xc4\xa0 a", "1 2", "\xc4\xa0 \xc4\xa0"};
    w = (struct gw){0};
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_str(&w, "tokenizer.ggml.pre", "qwen2");
    kv_strs(&w, "tokenizer.ggml.tokens", tok, n);
    kv_arr(&w, "tokenizer.ggml.token_type", REALM_GGUF_INT32, ty, n);
    kv_strs(&w, "tokenizer.ggml.merges", merges, 5);
    g_bpe = build(&w);
    for (size_t i = 0; i < n; i++)
        free(tok[i]);
    free(tok);
    free(ty);
}

static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = c < 0x80                   ? 1
                   : (c >= 0xC2 && c <= 0xDF) ? 2
                   : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4
                                              : 0;
        if (!l || i + l > n) return false;
        for (size_t k = 1; k < l; k++)
            if ((s[i + k] & 0xC0) != 0x80) return false;
        if (c == 0xE0 && s[i + 1] < 0xA0) return false;
        if (c == 0xED && s[i + 1] > 0x9F) return false;
        if (c == 0xF0 && s[i + 1] < 0x90) return false;
        if (c == 0xF4 && s[i + 1] > 0x8F) return false;
        i += l;
    }
    return true;
}

static void check(const struct realm_tokenizer *t, const char *text, size_t n, uint32_t flags,
                  const int32_t *special, int n_special, bool spm) {
    int64_t need = -1;
    int rc = realm_tokenize(t, text, n, flags, NULL, 0, &need);
    if (rc == REALM_OK && need != 0) abort();
    if (rc != REALM_OK && rc != REALM_E_TOO_SMALL) abort();
    int32_t *ids = malloc((size_t)(need > 0 ? need : 1) * sizeof *ids);
    int64_t got = -1;
    if (realm_tokenize(t, text, n, flags, ids, need, &got) != REALM_OK || got != need) abort();
    bool has_special = false;
    for (int64_t i = 0; i < got; i++) {
        if (ids[i] < 0 || ids[i] >= realm_tokenizer_n_vocab(t)) abort();
        for (int k = 0; k < n_special; k++)
            has_special |= ids[i] == special[k];
        /* control and unknown tokens are hidden in pieces */
        has_special |= realm_token_piece(t, ids[i], false, NULL, 0) !=
                       realm_token_piece(t, ids[i], true, NULL, 0);
    }
    /* pieces */
    char *out = malloc(4 * n + 64);
    size_t m = 0;
    for (int64_t i = 0; i < got; i++) {
        int64_t l = realm_token_piece(t, ids[i], false, out + m, 4 * n + 64 - m);
        if (l < 0 || (size_t)l > 4 * n + 64 - m) abort();
        m += (size_t)l;
    }
    const char *o = out;
    if (spm && m && o[0] == ' ') {
        o++;
        m--;
    }
    /* SPM spells spaces as U+2581, so a literal U+2581 in the input comes back as a space */
    bool lossy = spm && n >= 3 && memmem(text, n, "\xe2\x96\x81", 3) != NULL;
    if (!has_special && !lossy && (m != n || memcmp(o, text, n) != 0)) abort();
    /* streaming */
    struct realm_detok d;
    realm_detok_init(&d, t, (flags & 1) != 0);
    size_t cap = 4 * n + 64, k = 0;
    char *s = malloc(cap * 3 + 16);
    for (int64_t i = 0; i < got; i++) {
        int64_t l = realm_detok_push(&d, ids[i], s + k, cap * 3 + 16 - k);
        if (l < 0) abort();
        k += (size_t)l;
    }
    int64_t l = realm_detok_flush(&d, s + k, cap * 3 + 16 - k);
    if (l < 0) abort();
    k += (size_t)l;
    if (!valid_utf8((const unsigned char *)s, k)) abort();
    if (!has_special && !lossy && !(flags & 1) && valid_utf8((const unsigned char *)text, n) &&
        (k != n || memcmp(s, text, n) != 0))
        abort();
    free(s);
    free(out);
    free(ids);
}

/* chat_tokenize of two messages (text split at its first 0x01 byte, or in half). */
static void check_chat_tokenize(const struct realm_tokenizer *t, const char *text, size_t n,
                                bool bos) {
    const char *cut = memchr(text, 1, n);
    size_t n0 = cut ? (size_t)(cut - text) : n / 2, n1 = cut ? n - n0 - 1 : n - n0;
    struct realm_chat_msg msgs[2] = {
        {.role = "system", .role_len = 6, .content = text, .content_len = n0},
        {.role = "user", .role_len = 4, .content = text + n - n1, .content_len = n1}};
    bool plain = memchr(text, '<', n) == NULL;
    const char *names[] = {NULL, "chatml", "llama2-sys", "gemma", "llama3", "phi3"};
    uint32_t flags = bos ? REALM_TOKENIZE_ADD_BOS : 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int64_t need = -1;
        int rc = realm_chat_tokenize(t, names[i], msgs, 2, true, flags, NULL, 0, &need, NULL);
        if (rc == REALM_E_NOT_FOUND) continue;
        /* the model's own Jinja template may refuse (raise_exception) or not be mappable: fail
         * closed */
        if (rc == REALM_E_FORMAT && !names[i]) continue;
        if (rc == REALM_OK && need != 0) abort();
        if (rc != REALM_OK && rc != REALM_E_TOO_SMALL) abort();
        int32_t *ids = malloc((size_t)(need > 0 ? need : 1) * sizeof *ids);
        int64_t got = -1;
        if (realm_chat_tokenize(t, names[i], msgs, 2, true, flags, ids, need, &got, NULL) !=
                REALM_OK ||
            got != need)
            abort();
        for (int64_t k = 0; k < got; k++)
            if (ids[k] < 0 || ids[k] >= realm_tokenizer_n_vocab(t)) abort();
        if (plain) {
            int64_t len = realm_chat_format(t, names[i], msgs, 2, true, NULL, 0);
            if (len < 0) abort();
            char *prompt = malloc((size_t)len + 1);
            if (realm_chat_format(t, names[i], msgs, 2, true, prompt, (size_t)len + 1) != len)
                abort();
            int64_t m = -1;
            realm_tokenize(t, prompt, (size_t)len, flags | REALM_TOKENIZE_PARSE_SPECIAL, NULL, 0,
                           &m);
            int32_t *ref = malloc((size_t)(m > 0 ? m : 1) * sizeof *ref);
            if (realm_tokenize(t, prompt, (size_t)len, flags | REALM_TOKENIZE_PARSE_SPECIAL, ref, m,
                               &m) != REALM_OK)
                abort();
            if (m != got || memcmp(ref, ids, (size_t)got * sizeof *ids) != 0) abort();
            free(ref);
            free(prompt);
        }
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_spm) init();
    if (size == 0) return 0;
    uint32_t flags = data[0] & 3;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    check(g_spm, text, n, flags, g_spm_special, 3, true);
    check(g_bpe, text, n, flags, g_bpe_special, 2, false);
    struct realm_chat_msg msg = {.role = "user", .role_len = 4, .content = text, .content_len = n};
    char buf[256];
    const char *names[] = {NULL, "chatml", "llama2-sys", "gemma", "llama3", "mistral-v3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int64_t r = realm_chat_format(g_bpe, names[i], &msg, 1, true, buf, sizeof buf);
        if (r < 0 && r != REALM_E_NOT_FOUND) abort();
    }
    check_chat_tokenize(g_spm, text, n, flags & 1);
    check_chat_tokenize(g_bpe, text, n, flags & 1);
    return 0;
}
