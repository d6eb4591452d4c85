/*
 * wpm.c — the WordPiece segmenter of `tokenizer.ggml.model = bert` vocabularies, as llama.cpp's
 * llm_tokenizer_wpm_session does it:
 *   1. preprocess: decode UTF-8 (invalid bytes dropped), map each code point to the first code
 *      point of its canonical decomposition (llama.cpp's one-to-one "NFD", which drops accents
 *      of precomposed letters), then split into words: white space ends a word; NUL, U+FFFD and
 *      control characters (Cc, Cf, Co, Cs) are dropped; punctuation (P*), ASCII symbols (S*) and
 *      CJK ideographs are one-character words; everything else is lowercased and appended;
 *   2. each word, prefixed with "▁" (U+2581, how the GGUF conversion marks word starts), is cut
 *      greedily into the longest vocabulary tokens from the left; a word with a position where no
 *      token matches becomes the unknown token.
 * The Unicode properties and mappings come from ICU (u_charType, u_tolower, u_isUWhiteSpace,
 * the NFD normalizer).
 *
 * Owns nothing; scratch lives in the caller's struct tok_buf. Thread-safe (t is read-only; the
 * ICU NFD instance is an immutable process singleton).
 * Cost: O(n * max_token_len) hash lookups for n bytes of text.
 */
#include <string.h>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/utf16.h>

#include "realm/err.h"
#include "realm/status.h"
#include "tokenizer/tok.h"

static const UNormalizer2 *nfd_instance(void) {
    UErrorCode ec = U_ZERO_ERROR;
    const UNormalizer2 *n = unorm2_getNFDInstance(&ec);
    return U_FAILURE(ec) ? NULL : n;
}

int tok_wpm_init(struct realm_tokenizer *t, struct realm_err *err) {
    (void)t;
    if (!nfd_instance())
        return realm_err_set(err, REALM_E_INTERNAL, "tokenizer: ICU NFD normalizer unavailable");
    return REALM_OK;
}

/* First code point of the canonical decomposition of c (c itself when it has none). */
static UChar32 nfd_first(const UNormalizer2 *nfd, UChar32 c) {
    if (c < 0xC0) return c; /* nothing below U+00C0 decomposes canonically */
    UChar buf[32];
    UErrorCode ec = U_ZERO_ERROR;
    int32_t n = unorm2_getDecomposition(nfd, c, buf, (int32_t)(sizeof buf / sizeof buf[0]), &ec);
    if (U_FAILURE(ec) || n <= 0) return c;
    UChar32 first;
    int32_t i = 0;
    U16_NEXT(buf, i, n, first);
    return first;
}

/* llama.cpp's is_chinese_char (the ranges of HF's BERT pre-tokenizer, its 0x2B920 included). */
static bool is_cjk(UChar32 c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static size_t put_utf8(char *o, UChar32 c) {
    uint32_t u = (uint32_t)c;
    if (u < 0x80) {
        o[0] = (char)u;
        return 1;
    }
    if (u < 0x800) {
        o[0] = (char)(0xC0 | (u >> 6));
        o[1] = (char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        o[0] = (char)(0xE0 | (u >> 12));
        o[1] = (char)(0x80 | ((u >> 6) & 0x3F));
        o[2] = (char)(0x80 | (u & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (u >> 18));
    o[1] = (char)(0x80 | ((u >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((u >> 6) & 0x3F));
    o[3] = (char)(0x80 | (u & 0x3F));
    return 4;
}

/* Greedy longest-prefix match of w[0..n) (starting with "▁"); the unknown token if it fails. */
static int wpm_word(const struct realm_tokenizer *t, const char *w, size_t n, struct tok_ids *out) {
    if (n <= 3) return REALM_OK; /* "▁" alone: an empty word */
    int64_t start = out->n;
    size_t maxl = (size_t)t->max_token_len;
    for (size_t i = 0; i < n;) {
        size_t j = n - i < maxl ? n : i + maxl;
        int32_t id = -1;
        for (; j > i; j--)
            if ((id = tok_find(t, w + i, j - i)) >= 0) break;
        if (id < 0) {
            out->n = start; /* discard the word's tokens */
            break;
        }
        if (tok_ids_push(out, id)) return REALM_E_NOMEM;
        i = j;
    }
    if (out->n == start && t->unk >= 0 && tok_ids_push(out, t->unk)) return REALM_E_NOMEM;
    return REALM_OK;
}

int tok_wpm_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out) {
    const UNormalizer2 *nfd = nfd_instance();
    if (!nfd) return REALM_E_INTERNAL;
    /* a word holds at most len code points of <= 4 bytes after the 3-byte "▁" */
    if (len > (SIZE_MAX - 8) / 4) return REALM_E_LIMIT;
    if (tok_buf_reserve((void **)&b->bytes, &b->bytes_cap, 3 + 4 * len + 4, 1))
        return REALM_E_NOMEM;
    char *w = b->bytes;
    memcpy(w, "\xe2\x96\x81", 3);
    size_t wn = 3;
    const unsigned char *s = (const unsigned char *)text;
    int rc = REALM_OK;
    for (size_t i = 0; i < len && rc == REALM_OK;) {
        int r = realm_utf8_seq(s + i, len - i);
        if (r <= 0) { /* invalid or cut off: dropped like llama.cpp's U+FFFD */
            i += r < 0 ? (size_t)(-r) : len - i;
            continue;
        }
        UChar32 c;
        if (r == 1) {
            c = s[i];
        } else {
            c = s[i] & (0x7F >> r);
            for (int k = 1; k < r; k++)
                c = (c << 6) | (s[i + (size_t)k] & 0x3F);
        }
        i += (size_t)r;
        c = nfd_first(nfd, c);
        if (u_isUWhiteSpace(c)) {
            rc = wpm_word(t, w, wn, out);
            wn = 3;
            continue;
        }
        int8_t cat = u_charType(c);
        if (c == 0 || c == 0xFFFD || cat == U_CONTROL_CHAR || cat == U_FORMAT_CHAR ||
            cat == U_PRIVATE_USE_CHAR || cat == U_SURROGATE)
            continue;
        bool punct = cat == U_DASH_PUNCTUATION || cat == U_START_PUNCTUATION ||
                     cat == U_END_PUNCTUATION || cat == U_CONNECTOR_PUNCTUATION ||
                     cat == U_OTHER_PUNCTUATION || cat == U_INITIAL_PUNCTUATION ||
                     cat == U_FINAL_PUNCTUATION;
        bool symbol = cat == U_MATH_SYMBOL || cat == U_CURRENCY_SYMBOL ||
                      cat == U_MODIFIER_SYMBOL || cat == U_OTHER_SYMBOL;
        UChar32 lc = u_tolower(c);
        if (punct || (c < 0x7F && symbol) || is_cjk(c)) {
            rc = wpm_word(t, w, wn, out);
            if (rc) break;
            wn = 3 + put_utf8(w + 3, lc);
            rc = wpm_word(t, w, wn, out);
            wn = 3;
        } else {
            wn += put_utf8(w + wn, lc);
        }
    }
    if (rc == REALM_OK) rc = wpm_word(t, w, wn, out);
    return rc;
}
