/*
 * bpe.c — the byte-level BPE segmenter of `tokenizer.ggml.model = gpt2` vocabularies:
 *   1. pre-tokenization: the regex list that llama.cpp's llm_tokenizer_bpe assigns to the
 *      `tokenizer.ggml.pre` name, applied in sequence (each regex splits every current chunk into
 *      its matches and the gaps between them, as unicode_regex_split does), run by PCRE2 in UTF
 *      mode with Unicode properties (PCRE2_UTF | PCRE2_UCP) and JIT;
 *   2. byte-to-unicode: every byte of a chunk becomes one printable character (GPT-2's table);
 *   3. merges: the adjacent pair with the lowest rank in tokenizer.ggml.merges is merged until no
 *      pair is in the table (ties: leftmost), as llm_tokenizer_bpe_session does.
 *
 * `\s` and `\S` in the patterns are rewritten to the Unicode White_Space set (the set HF
 * tokenizers and llama.cpp use; PCRE2's own \s differs on U+0085 and U+180E).
 * Invalid UTF-8 never matches a pattern item (PCRE2_MATCH_INVALID_UTF), so such bytes end up in
 * gap chunks and are encoded byte by byte: every input round-trips. (llama.cpp replaces them by
 * U+FFFD instead; valid UTF-8 is tokenized identically.)
 *
 * Owns the compiled patterns, the general context and the merge table of a tokenizer.
 * Thread rule: patterns are read-only after tok_bpe_init; match data lives in struct tok_buf.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/status.h"
#include "tokenizer/tok.h"

/* ---- pre-tokenizer table (llama.cpp src/llama-vocab.cpp, llm_tokenizer_bpe) ---- */

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RX_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3                                                                                  \
    RX_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"   \
                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                   \
    RX_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"        \
                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* The CJK ideograph / Hangul class of the DeepSeek tokenizers. */
#define RX_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* The cased-letter class of deepseek-llm (code points of llama.cpp's literal class). */
#define RX_DEEPSEEK_LETTERS                                                                        \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"            \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"         \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}" \
    "\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}"  \
    "\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}"                 \
    "\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}"                 \
    "\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"         \
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}"        \
    "\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"                 \
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}"         \
    "\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}"                   \
    "\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}"         \
    "\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"                  \
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}"                 \
    "\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}"                 \
    "\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}"           \
    "\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"
#define RX_PORO " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+"
#define RX_TEKKEN                                                                                  \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|"                        \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}|"                 \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_GPT4O                                                                                   \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" RX_CONTRACTIONS "?|"    \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" RX_CONTRACTIONS "?|"    \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

enum {
    PRE_DEFAULT,
    PRE_LLAMA3,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK_CODER,
    PRE_DEEPSEEK3,
    PRE_FALCON,
    PRE_STARCODER, /* starcoder, refact, command-r, smollm, codeshell, exaone, minerva */
    PRE_GPT2,      /* gpt-2, mpt, olmo, jais, roberta, ... */
    PRE_QWEN2,
    PRE_PORO,
    PRE_CHATGLM4,
    PRE_VIKING,
    PRE_TEKKEN,
    PRE_CHAMELEON,
    PRE_GPT4O,
    PRE_SEED_CODER,
    PRE_BAILINGMOE,
};

struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    int type;
    bool ignore_merges, add_bos, clean_spaces, no_bos;
    const char *rx[6];
};

static const struct pre_def g_pre[] = {
    {"default",
     PRE_DEFAULT,
     false,
     false,
     true,
     false,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2",
     PRE_LLAMA3,
     true,
     true,
     true,
     false,
     {RX_LLAMA3}},
    {"dbrx|smaug-bpe", PRE_LLAMA3, false, false, true, false, {RX_LLAMA3}},
    {"deepseek-llm",
     PRE_DEEPSEEK_LLM,
     false,
     false,
     false,
     false,
     {"[\r\n]", RX_DEEPSEEK_LETTERS,
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "\\s+$", RX_CJK, "\\p{N}+"}},
    {"deepseek-coder",
     PRE_DEEPSEEK_CODER,
     false,
     false,
     false,
     false,
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RX_CJK, "\\p{N}"}},
    {"deepseek-v3",
     PRE_DEEPSEEK3,
     false,
     false,
     false,
     false,
     {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
      "[!\"#$%&'()*+,\\-./"
      ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
      " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}},
    {"falcon",
     PRE_FALCON,
     false,
     false,
     true,
     false,
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder|refact|codeshell|exaone|minerva-7b",
     PRE_STARCODER,
     false,
     false,
     true,
     false,
     {"\\p{N}", RX_GPT2}},
    {"command-r|smollm", PRE_STARCODER, false, false, false, false, {"\\p{N}", RX_GPT2}},
    {"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v2-es|jina-v2-de|a.x-4.0|mellum|exaone4|mpt|olmo|"
     "jais|roberta-bpe|jina-v1-en|jina-v2-code",
     PRE_GPT2,
     false,
     false,
     true,
     false,
     {RX_GPT2}},
    {"trillion|granite-docling", PRE_GPT2, false, false, false, false, {RX_GPT2}},
    {"qwen2|deepseek-r1-qwen|megrez", PRE_QWEN2, false, false, false, false, {RX_QWEN2}},
    {"stablelm2|hunyuan", PRE_QWEN2, false, false, true, false, {RX_QWEN2}},
    {"poro-chat", PRE_PORO, false, false, false, false, {RX_PORO}},
    {"bloom|gpt3-finnish", PRE_PORO, false, false, true, false, {RX_PORO}},
    {"chatglm-bpe|glm4", PRE_CHATGLM4, false, false, true, true, {RX_LLAMA3}},
    {"viking", PRE_VIKING, false, false, false, false, {RX_PORO, "\\p{N}"}},
    {"tekken", PRE_TEKKEN, true, true, false, false, {RX_TEKKEN}},
    {"chameleon",
     PRE_CHAMELEON,
     false,
     true,
     false,
     false,
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RX_GPT2}},
    {"gpt-4o|llama4", PRE_GPT4O, false, false, false, false, {RX_GPT4O}},
    {"seed-coder",
     PRE_SEED_CODER,
     false,
     false,
     false,
     false,
     {RX_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|"
                      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"bailingmoe|bailingmoe2|llada-moe",
     PRE_BAILINGMOE,
     false,
     false,
     false,
     false,
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
      " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}},
};

static bool name_in(const char *names, const char *name) {
    size_t n = strlen(name);
    for (const char *p = names;;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, name, n) == 0) return true;
        if (!e) return false;
        p = e + 1;
    }
}

/* The White_Space property: what `\s` means in HF tokenizers (Rust regex / Oniguruma) and in
 * llama.cpp (ASCII isspace plus non-ASCII whitespace folded to \v). */
#define WS_SET                                                                                     \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* Rewrites \s / \S into the White_Space class. Returns a realm_malloc'd string, or NULL
 * (out of memory, or \S inside a class, which no table pattern uses). */
static char *rewrite_ws(const char *rx) {
    size_t n = strlen(rx), cap = n * 8 + 64;
    char *o = realm_malloc(cap);
    if (!o) return NULL;
    size_t k = 0;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = rx[i];
        if (c == '\\' && i + 1 < n) {
            char d = rx[i + 1];
            const char *rep = NULL;
            if (d == 's') rep = in_class ? WS_SET : "[" WS_SET "]";
            if (d == 'S') {
                if (in_class) {
                    realm_free(o);
                    return NULL;
                }
                rep = "[^" WS_SET "]";
            }
            if (rep) {
                size_t l = strlen(rep);
                if (k + l + 1 > cap) goto overflow;
                memcpy(o + k, rep, l);
                k += l;
            } else {
                if (k + 3 > cap) goto overflow;
                o[k++] = c;
                o[k++] = d;
            }
            i++;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            if (k + 4 > cap) goto overflow;
            o[k++] = c;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && rx[i + 1] == '^') o[k++] = rx[++i];
            if (i + 1 < n && rx[i + 1] == ']') o[k++] = rx[++i];
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        if (k + 2 > cap) goto overflow;
        o[k++] = c;
    }
    o[k] = 0;
    return o;
overflow:
    realm_free(o);
    return NULL;
}

static void *pcre_alloc(size_t size, void *user) {
    (void)user;
    return realm_malloc(size);
}
static void pcre_free(void *p, void *user) {
    (void)user;
    realm_free(p);
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. */
static void build_byte_tables(struct realm_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 324; i++)
        t->unicode_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep =
            (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = keep ? b : 256 + n++;
        t->unicode_to_byte[cp] = (int16_t)b;
        memset(t->byte_enc[b], 0, 3);
        if (cp < 0x80) {
            t->byte_enc[b][0] = (char)cp;
            t->byte_enc_len[b] = 1;
        } else {
            t->byte_enc[b][0] = (char)(0xC0 | (cp >> 6));
            t->byte_enc[b][1] = (char)(0x80 | (cp & 0x3F));
            t->byte_enc_len[b] = 2;
        }
    }
}

int tok_bpe_init(struct realm_tokenizer *t, struct realm_err *err) {
    const struct pre_def *def = NULL;
    const char *pre = t->pre_name[0] ? t->pre_name : "default";
    for (size_t i = 0; i < sizeof g_pre / sizeof g_pre[0] && !def; i++)
        if (name_in(g_pre[i].names, pre)) def = &g_pre[i];
    if (!def)
        return realm_err_set(err, REALM_E_UNSUPPORTED,
                             "tokenizer: tokenizer.ggml.pre: '%s', expected a known pre-tokenizer",
                             pre);
    if (!t->pre_name[0]) snprintf(t->pre_name, sizeof t->pre_name, "default");
    t->pre_type = def->type;
    t->ignore_merges = def->ignore_merges;
    t->clean_spaces = def->clean_spaces;
    if (def->add_bos) t->add_bos = true;
    if (def->no_bos) t->bos = -1;

    build_byte_tables(t);

    pcre2_general_context *gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    if (!gctx) return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
    t->gctx = gctx;
    pcre2_compile_context *cctx = pcre2_compile_context_create(gctx);
    if (!cctx) return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
    int rc = REALM_OK;
    for (int i = 0; i < 6 && def->rx[i]; i++) {
        char *rx = rewrite_ws(def->rx[i]);
        if (!rx) {
            rc = realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
            break;
        }
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *code = pcre2_compile(
            (PCRE2_SPTR)rx, PCRE2_ZERO_TERMINATED,
            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &ec, &eo, cctx);
        if (!code) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            rc =
                realm_err_set(err, ec == PCRE2_ERROR_HEAP_FAILED ? REALM_E_NOMEM : REALM_E_INTERNAL,
                              "tokenizer: pre-tokenizer '%s' regex %d: %s at offset %zu", pre, i,
                              (const char *)msg, (size_t)eo);
            realm_free(rx);
            break;
        }
        realm_free(rx);
        /* JIT is an optimisation: without it (unsupported CPU, no executable memory) the
         * interpreter gives the same matches */
        if (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0)
            realm_log(REALM_LOG_DEBUG, "tokenizer", "PCRE2 JIT unavailable for regex %d", i);
        t->regex[t->n_regex++] = code;
    }
    pcre2_compile_context_free(cctx);
    return rc;
}

void tok_bpe_free(struct realm_tokenizer *t) {
    for (int i = 0; i < t->n_regex; i++)
        pcre2_code_free((pcre2_code *)t->regex[i]);
    t->n_regex = 0;
    if (t->gctx) pcre2_general_context_free((pcre2_general_context *)t->gctx);
    t->gctx = NULL;
    realm_free(t->merges);
    t->merges = NULL;
}

/* ---- string table growth for merge-only strings ---- */

static int map_insert(struct realm_tokenizer *t, int32_t id) {
    const struct tok_entry *e = &t->str[id];
    uint64_t i = tok_hash(t->text + e->off, e->len) & t->map.mask;
    while (t->map.slots[i])
        i = (i + 1) & t->map.mask;
    t->map.slots[i] = (uint32_t)id + 1;
    return REALM_OK;
}

static int32_t str_get_or_add(struct realm_tokenizer *t, const char *s, size_t n, size_t *str_cap,
                              size_t *text_cap) {
    int32_t id = tok_str_find(t, s, n);
    if (id >= 0) return id;
    if (t->n_str == INT32_MAX - 1 || n > UINT32_MAX || t->text_len + n > UINT32_MAX) return -1;
    if ((uint64_t)(t->n_str + 1) * 2 > t->map.mask + 1) { /* keep the load factor <= 1/2 */
        uint64_t cap = (t->map.mask + 1) * 2;
        uint32_t *slots = realm_calloc(cap, sizeof *slots);
        if (!slots) return -1;
        realm_free(t->map.slots);
        t->map.slots = slots;
        t->map.mask = cap - 1;
        for (int32_t i = 0; i < t->n_str; i++)
            if (t->str[i].len) map_insert(t, i);
    }
    if (tok_buf_reserve((void **)&t->str, str_cap, (size_t)t->n_str + 1, sizeof *t->str) ||
        tok_buf_reserve((void **)&t->text, text_cap, t->text_len + n + 1, 1))
        return -1;
    memcpy(t->text + t->text_len, s, n);
    struct tok_entry *e = &t->str[t->n_str];
    e->off = (uint32_t)t->text_len;
    e->len = (uint32_t)n;
    e->score = 0;
    e->attr = TOK_ATTR_UNDEFINED;
    t->text_len += n;
    id = t->n_str++;
    map_insert(t, id);
    return id;
}

static uint64_t merge_key(int32_t l, int32_t r) {
    return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
}

static const struct tok_merge_slot *merge_find(const struct realm_tokenizer *t, int32_t l,
                                               int32_t r) {
    uint64_t key = merge_key(l, r);
    uint64_t i = (key * 0x9E3779B97F4A7C15ull >> 17) & t->merges_mask;
    for (;;) {
        const struct tok_merge_slot *s = &t->merges[i];
        if (s->key == key) return s;
        if (s->key == 0) return NULL;
        i = (i + 1) & t->merges_mask;
    }
}

int tok_bpe_load_merges(struct realm_tokenizer *t, const struct realm_gguf *g,
                        struct realm_err *err) {
    static const char *key = "tokenizer.ggml.merges";
    int64_t kv = realm_gguf_find_key(g, key);
    enum realm_gguf_vtype et;
    uint64_t n;
    const void *data;
    if (kv < 0)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: missing, expected the BPE merges",
                             key);
    if (!realm_gguf_get_arr(g, key, &et, &n, &data) || et != REALM_GGUF_STRING)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: not a string array", key);
    if (n > INT32_MAX / 4)
        return realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s: %llu merges, too many", key,
                             (unsigned long long)n);
    uint64_t cap = 16;
    while (cap < n * 2 + 2)
        cap <<= 1;
    t->merges = realm_calloc(cap, sizeof *t->merges);
    if (!t->merges) return realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory");
    t->merges_mask = cap - 1;

    size_t str_cap = (size_t)t->n_str, text_cap = t->text_len;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = REALM_OK;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (!realm_gguf_kv_arr_str(g, kv, i, &s, &len)) {
            rc = realm_err_set(err, REALM_E_FORMAT, "tokenizer: %s[%llu]: unreadable", key,
                               (unsigned long long)i);
            break;
        }
        /* "left right", split at the first space after the first byte (llama.cpp) */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) continue;
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        if (rl == 0) continue; /* can never match: symbols are never empty */
        if (tok_buf_reserve((void **)&cat, &cat_cap, ll + rl + 1, 1)) {
            rc = REALM_E_NOMEM;
            break;
        }
        memcpy(cat, s, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t l = str_get_or_add(t, s, ll, &str_cap, &text_cap);
        int32_t r = l < 0 ? -1 : str_get_or_add(t, sp + 1, rl, &str_cap, &text_cap);
        int32_t m = r < 0 ? -1 : str_get_or_add(t, cat, ll + rl, &str_cap, &text_cap);
        if (m < 0) {
            rc = realm_err_set(err, REALM_E_NOMEM, "tokenizer: out of memory (merges)");
            break;
        }
        uint64_t k = merge_key(l, r);
        uint64_t j = (k * 0x9E3779B97F4A7C15ull >> 17) & t->merges_mask;
        while (t->merges[j].key && t->merges[j].key != k)
            j = (j + 1) & t->merges_mask;
        if (t->merges[j].key) continue; /* first (lowest) rank wins, like map::emplace */
        t->merges[j].key = k;
        t->merges[j].rank = (int32_t)i;
        t->merges[j].result = m;
    }
    realm_free(cat);
    if (rc == REALM_E_NOMEM) realm_err_set(err, rc, "tokenizer: out of memory");
    return rc;
}

/* ---- segmentation ---- */

struct chunk {
    uint32_t off, len;
};

struct bpe_sym {
    int32_t prev, next;
    uint32_t start, n;
    int32_t sid;
};

struct bpe_bigram {
    int32_t rank;
    int32_t left, right;
    uint32_t ln, rn; /* lengths at push time: a change means the pair is stale */
};

static inline bool bg_before(const struct bpe_bigram *a, const struct bpe_bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bg_push(struct bpe_bigram *h, size_t *n, struct bpe_bigram x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_before(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static struct bpe_bigram bg_pop(struct bpe_bigram *h, size_t *np) {
    struct bpe_bigram top = h[0];
    size_t n = --(*np);
    struct bpe_bigram x = h[n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t c = (l + 1 < n && bg_before(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!bg_before(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = x;
    return top;
}

/* BPE-encodes one pre-tokenized word (raw bytes). */
static int bpe_word(const struct realm_tokenizer *t, const unsigned char *w, uint32_t n,
                    struct tok_buf *b, struct tok_ids *out) {
    if (n == 0) return REALM_OK;
    if (t->ignore_merges) {
        /* llama3-style vocabularies take a whole word that is a token as is */
        if (tok_buf_reserve((void **)&b->bytes, &b->bytes_cap, (size_t)n * 2, 1))
            return REALM_E_NOMEM;
        size_t k = 0;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(b->bytes + k, t->byte_enc[w[i]], t->byte_enc_len[w[i]]);
            k += t->byte_enc_len[w[i]];
        }
        int32_t id = tok_find(t, b->bytes, k);
        if (id >= 0) return tok_ids_push(out, id);
    }
    if (n == 1) {
        int32_t sid = t->byte_sid[w[0]];
        if (sid >= 0 && sid < t->n_vocab) return tok_ids_push(out, sid);
        return REALM_OK;
    }
    if (tok_buf_reserve(&b->sym, &b->sym_cap, n, sizeof(struct bpe_sym)) ||
        tok_buf_reserve(&b->heap, &b->heap_cap, 3 * (size_t)n + 1, sizeof(struct bpe_bigram)))
        return REALM_E_NOMEM;
    struct bpe_sym *sym = b->sym;
    struct bpe_bigram *heap = b->heap;
    size_t hn = 0;
    for (uint32_t i = 0; i < n; i++) {
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 == n ? -1 : (int32_t)i + 1;
        sym[i].start = i;
        sym[i].n = 1;
        sym[i].sid = t->byte_sid[w[i]];
    }
#define ADD(L, R)                                                                                  \
    do {                                                                                           \
        int32_t l_ = (L), r_ = (R);                                                                \
        if (l_ >= 0 && r_ >= 0 && sym[l_].sid >= 0 && sym[r_].sid >= 0) {                          \
            const struct tok_merge_slot *m_ = merge_find(t, sym[l_].sid, sym[r_].sid);             \
            if (m_) {                                                                              \
                struct bpe_bigram bg_ = {m_->rank, l_, r_, sym[l_].n, sym[r_].n};                  \
                bg_push(heap, &hn, bg_);                                                           \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    for (uint32_t i = 1; i < n; i++)
        ADD((int32_t)i - 1, (int32_t)i);
    while (hn) {
        struct bpe_bigram bg = bg_pop(heap, &hn);
        struct bpe_sym *ls = &sym[bg.left], *rs = &sym[bg.right];
        if (ls->n == 0 || rs->n == 0 || ls->n != bg.ln || rs->n != bg.rn) continue;
        const struct tok_merge_slot *m = merge_find(t, ls->sid, rs->sid);
        ls->sid = m ? m->result : -1;
        ls->n += rs->n;
        rs->n = 0;
        ls->next = rs->next;
        if (rs->next >= 0) sym[rs->next].prev = bg.left;
        ADD(ls->prev, bg.left);
        ADD(bg.left, ls->next);
    }
#undef ADD
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        if (sym[i].sid >= 0 && sym[i].sid < t->n_vocab) {
            if (tok_ids_push(out, sym[i].sid)) return REALM_E_NOMEM;
            continue;
        }
        /* a merge produced a string outside the vocabulary: fall back to byte tokens */
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t sid = t->byte_sid[w[sym[i].start + k]];
            if (sid >= 0 && sid < t->n_vocab && tok_ids_push(out, sid)) return REALM_E_NOMEM;
        }
    }
    return REALM_OK;
}

static int bpe_word_fn(const struct realm_tokenizer *t, const char *w, size_t n, struct tok_buf *b,
                       struct tok_ids *out) {
    return bpe_word(t, (const unsigned char *)w, (uint32_t)n, b, out);
}

/* Advances past one UTF-8 character (or one invalid byte). */
static size_t next_char(const unsigned char *s, size_t len, size_t i) {
    size_t l = tok_utf8_len(s[i]);
    if (l > len - i) l = len - i;
    for (size_t k = 1; k < l; k++)
        if ((s[i + k] & 0xC0) != 0x80) return i + k;
    return i + l;
}

static int split_chunks(const struct realm_tokenizer *t, pcre2_code *code, const char *text,
                        const struct chunk *in, size_t n_in, struct tok_buf *b, size_t *n_out) {
    pcre2_match_data *md = b->match_data;
    size_t no = 0;
    for (size_t c = 0; c < n_in; c++) {
        const unsigned char *s = (const unsigned char *)text + in[c].off;
        size_t len = in[c].len, start = 0;
        /* at most 2 output chunks per match (gap + match) plus the tail */
        while (start < len) {
            int rc = pcre2_match(code, s, len, start, 0, md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match(code, s, len, start, PCRE2_NO_JIT, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0 && rc != 0) {
                realm_log(REALM_LOG_WARN, "tokenizer",
                          "regex match failed (%d); keeping the chunk whole", rc);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (ms < start || me < ms || me > len) break; /* \K tricks: not in our patterns */
            if (tok_buf_reserve(&b->chunks2, &b->chunks2_cap, no + 3, sizeof(struct chunk)))
                return REALM_E_NOMEM;
            struct chunk *o = b->chunks2;
            if (me == ms) { /* empty match: not a piece; step over one character */
                start = next_char(s, len, ms);
                continue;
            }
            if (ms > start)
                o[no++] = (struct chunk){in[c].off + (uint32_t)start, (uint32_t)(ms - start)};
            o[no++] = (struct chunk){in[c].off + (uint32_t)ms, (uint32_t)(me - ms)};
            start = me;
        }
        if (start < len) {
            if (tok_buf_reserve(&b->chunks2, &b->chunks2_cap, no + 1, sizeof(struct chunk)))
                return REALM_E_NOMEM;
            struct chunk *o = b->chunks2;
            o[no++] = (struct chunk){in[c].off + (uint32_t)start, (uint32_t)(len - start)};
        }
    }
    *n_out = no;
    (void)t;
    return REALM_OK;
}

/* Bytes outside valid UTF-8 are kept (and round-trip) when the vocabulary has their byte
 * character; the others become U+FFFD, as llama.cpp turns every invalid byte into U+FFFD (some
 * vocabularies, e.g. SmolLM2's, have no token for bytes like 0xFE that UTF-8 never uses).
 * Returns the text to segment (text itself, or b->fix) and its length in *len, NULL on OOM. */
static const char *fix_invalid(const struct realm_tokenizer *t, const char *text, size_t *len,
                               struct tok_buf *b) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = *len, i = 0;
    bool need = false;
    while (i < n && !need) {
        int r = realm_utf8_seq(s + i, n - i);
        if (r > 0) {
            i += (size_t)r;
            continue;
        }
        size_t k = r == 0 ? n - i : (size_t)-r;
        for (size_t q = 0; q < k; q++)
            if (t->byte_sid[s[i + q]] < 0 || t->byte_sid[s[i + q]] >= t->n_vocab) need = true;
        i += k;
    }
    if (!need) return text;
    if (n > SIZE_MAX / 3 || tok_buf_reserve((void **)&b->fix, &b->fix_cap, 3 * n, 1)) return NULL;
    size_t o = 0;
    for (i = 0; i < n;) {
        int r = realm_utf8_seq(s + i, n - i);
        if (r > 0) {
            memcpy(b->fix + o, s + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
            continue;
        }
        size_t k = r == 0 ? n - i : (size_t)-r;
        for (size_t q = 0; q < k; q++, i++) {
            int32_t sid = t->byte_sid[s[i]];
            if (sid >= 0 && sid < t->n_vocab) {
                b->fix[o++] = (char)s[i];
            } else {
                memcpy(b->fix + o, "\xef\xbf\xbd", 3);
                o += 3;
            }
        }
    }
    *len = o;
    return b->fix;
}

int tok_bpe_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out) {
    if (len == 0) return REALM_OK;
    if (len > UINT32_MAX / 8) return REALM_E_LIMIT;
    text = fix_invalid(t, text, &len, b);
    if (!text) return REALM_E_NOMEM;
    if (!b->match_data) {
        b->match_data = pcre2_match_data_create(16, (pcre2_general_context *)t->gctx);
        if (!b->match_data) return REALM_E_NOMEM;
    }
    if (tok_buf_reserve(&b->chunks, &b->chunks_cap, 1, sizeof(struct chunk))) return REALM_E_NOMEM;
    ((struct chunk *)b->chunks)[0] = (struct chunk){0, (uint32_t)len};
    size_t n = 1;
    for (int r = 0; r < t->n_regex; r++) {
        size_t no;
        int rc = split_chunks(t, (pcre2_code *)t->regex[r], text, b->chunks, n, b, &no);
        if (rc) return rc;
        void *tmp = b->chunks;
        size_t tcap = b->chunks_cap;
        b->chunks = b->chunks2;
        b->chunks_cap = b->chunks2_cap;
        b->chunks2 = tmp;
        b->chunks2_cap = tcap;
        n = no;
    }
    const struct chunk *ch = b->chunks;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *w = (const unsigned char *)text + ch[i].off;
        int rc = ch[i].len > 1 ? tok_cached(t, (const char *)w, ch[i].len, b, out, bpe_word_fn)
                               : bpe_word(t, w, ch[i].len, b, out);
        if (rc) return rc;
    }
    return REALM_OK;
}

void tok_bpe_byte_sids(struct realm_tokenizer *t) {
    for (int b = 0; b < 256; b++)
        t->byte_sid[b] = tok_str_find(t, t->byte_enc[b], t->byte_enc_len[b]);
}

void tok_bpe_match_free(void *md) {
    if (md) pcre2_match_data_free((pcre2_match_data *)md);
}
