/*
 * spm.c — the SentencePiece-BPE segmenter of `tokenizer.ggml.model = llama` vocabularies, as
 * llama.cpp's llm_tokenizer_spm_session does it: split the (space-escaped) text into UTF-8
 * characters, then repeatedly merge the adjacent pair whose concatenation is the vocabulary token
 * with the highest score (ties: leftmost), using a max-heap of candidate bigrams; finally emit
 * each symbol's token, or its bytes as <0xNN> tokens when the symbol is not in the vocabulary.
 *
 * Owns nothing; scratch lives in the caller's struct tok_buf. Thread-safe (t is read-only).
 * Cost: O(n log n) in the number of characters of the fragment.
 */
#include <string.h>

#include "realm/status.h"
#include "tokenizer/tok.h"

struct spm_sym {
    int32_t prev, next;
    uint32_t start, n;
};

struct spm_bigram {
    float score;
    int32_t left, right;
    uint32_t size;
};

/* true if a should be popped before b: higher score first, then the leftmost pair (llama.cpp's
 * llm_bigram_spm::comparator). */
static inline bool before(const struct spm_bigram *a, const struct spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

struct spm_heap {
    struct spm_bigram *v;
    size_t n;
};

static void heap_push(struct spm_heap *h, struct spm_bigram x) {
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&x, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
}

static struct spm_bigram heap_pop(struct spm_heap *h) {
    struct spm_bigram top = h->v[0];
    struct spm_bigram x = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t c = (l + 1 < n && before(&h->v[l + 1], &h->v[l])) ? l + 1 : l;
        if (!before(&h->v[c], &x)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (n) h->v[i] = x;
    return top;
}

static size_t char_len(const char *text, size_t len, size_t off);

static int spm_run(const struct realm_tokenizer *t, const char *text, size_t len, struct tok_buf *b,
                   struct tok_ids *out) {
    if (len == 0) return REALM_OK;
    /* one symbol per UTF-8 character (at most len); each merge can push at most 2 bigrams and
     * there are at most n-1 merges, plus n-1 seeds: 3n bounds the heap */
    if (tok_buf_reserve(&b->sym, &b->sym_cap, len, sizeof(struct spm_sym)) ||
        tok_buf_reserve(&b->heap, &b->heap_cap, 3 * len + 1, sizeof(struct spm_bigram)))
        return REALM_E_NOMEM;
    struct spm_sym *sym = b->sym;
    struct spm_heap heap = {b->heap, 0};

    int32_t n = 0;
    for (size_t off = 0; off < len;) {
        /* a cut-off sequence ends at the first non-continuation byte: llama.cpp would swallow the
         * next character (e.g. the "▁" of a space) into the symbol and break the round trip;
         * valid UTF-8 is split identically */
        size_t cl = char_len(text, len, off);
        sym[n].start = (uint32_t)off;
        sym[n].n = (uint32_t)cl;
        sym[n].prev = n - 1;
        off += cl;
        sym[n].next = off == len ? -1 : n + 1;
        n++;
    }

#define TRY_ADD(L, R)                                                                              \
    do {                                                                                           \
        int32_t l_ = (L), r_ = (R);                                                                \
        if (l_ >= 0 && r_ >= 0) {                                                                  \
            uint32_t sz_ = sym[l_].n + sym[r_].n;                                                  \
            int32_t id_ = tok_find(t, text + sym[l_].start, sz_);                                  \
            if (id_ >= 0) {                                                                        \
                struct spm_bigram bg_ = {t->str[id_].score, l_, r_, sz_};                          \
                heap_push(&heap, bg_);                                                             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

    for (int32_t i = 1; i < n; i++)
        TRY_ADD(i - 1, i);

    while (heap.n) {
        struct spm_bigram bg = heap_pop(&heap);
        struct spm_sym *ls = &sym[bg.left], *rs = &sym[bg.right];
        /* skip pairs made stale by an earlier merge */
        if (ls->n == 0 || rs->n == 0 || ls->n + rs->n != bg.size) continue;
        ls->n += rs->n;
        rs->n = 0;
        ls->next = rs->next;
        if (rs->next >= 0) sym[rs->next].prev = bg.left;
        TRY_ADD(ls->prev, bg.left);
        TRY_ADD(bg.left, ls->next);
    }
#undef TRY_ADD

    /* every merged symbol is a token by construction; single characters may not be, and fall
     * back to their bytes (llama.cpp's resegment + byte_to_token) */
    for (int32_t i = 0; i != -1; i = sym[i].next) {
        const char *s = text + sym[i].start;
        int32_t id = tok_find(t, s, sym[i].n);
        if (id >= 0) {
            if (tok_ids_push(out, id)) return REALM_E_NOMEM;
            continue;
        }
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t bid = t->byte_token[(unsigned char)s[k]];
            if (bid < 0) bid = t->unk;
            if (bid >= 0 && tok_ids_push(out, bid)) return REALM_E_NOMEM;
        }
    }
    return REALM_OK;
}

/* Length of the character at text[off] as the segmenter sees it. */
static size_t char_len(const char *text, size_t len, size_t off) {
    size_t cl = tok_utf8_len((unsigned char)text[off]);
    if (cl > len - off) cl = len - off;
    for (size_t k = 1; k < cl; k++)
        if (((unsigned char)text[off + k] & 0xC0) != 0x80) return k;
    return cl;
}

/* SPM has no pre-tokenizer, so the merges run over a whole fragment; but no symbol can ever span
 * two adjacent characters whose boundary bytes (last byte of the first, first byte of the second)
 * are adjacent in no token at all. Cutting the text there gives independent pieces whose merges
 * happen in the same relative order (scores, then leftmost), so the result is identical while
 * the heaps stay small (in English text, every "▁" starts a new piece). */
int tok_spm_segment(const struct realm_tokenizer *t, const char *text, size_t len,
                    struct tok_buf *b, struct tok_ids *out) {
    if (len == 0) return REALM_OK;
    if (len > INT32_MAX) return REALM_E_LIMIT;
    size_t start = 0, off = 0;
    while (off < len) {
        size_t cl = char_len(text, len, off);
        size_t next = off + cl;
        if (next < len) {
            unsigned a = (unsigned char)text[next - 1], c = (unsigned char)text[next];
            unsigned bit = a << 8 | c;
            if (!(t->spm_pairs[bit >> 3] & (1u << (bit & 7)))) {
                int rc = tok_cached(t, text + start, next - start, b, out, spm_run);
                if (rc) return rc;
                start = next;
            }
        }
        off = next;
    }
    return tok_cached(t, text + start, len - start, b, out, spm_run);
}
