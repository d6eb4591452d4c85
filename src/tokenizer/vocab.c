/*
 * vocab.c — the byte-string index of a vocabulary (open-addressing hash from token text to id),
 * the byte trie of special-token texts used to find which of them occur in an input, and the
 * small growable buffers the segmenters share.
 *
 * Owns nothing global. Thread rule: lookups are read-only and thread-safe; building happens once
 * in realm_tokenizer_load.
 */
#include <string.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "tokenizer/tok.h"

/* A 64-bit multiply-xorshift hash over 8-byte words (fast on short token texts, good spread for
 * the power-of-two table). */
uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

int32_t tok_str_find(const struct realm_tokenizer *t, const char *p, size_t n) {
    if (!t->map.slots) return -1;
    uint64_t i = tok_hash(p, n) & t->map.mask;
    for (;;) {
        uint32_t v = t->map.slots[i];
        if (!v) return -1;
        const struct tok_entry *e = &t->str[v - 1];
        if (e->len == n && memcmp(t->text + e->off, p, n) == 0) return (int32_t)(v - 1);
        i = (i + 1) & t->map.mask;
    }
}

int tok_ids_push(struct tok_ids *a, int32_t id) {
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 256;
        int32_t *v = realm_realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return REALM_E_NOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return REALM_OK;
}

int tok_buf_reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return REALM_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need) {
        if (n > SIZE_MAX / 2) return REALM_E_NOMEM;
        n *= 2;
    }
    size_t bytes;
    if (realm_mul_size(n, elem, &bytes)) return REALM_E_NOMEM;
    void *q = realm_realloc(*p, bytes);
    if (!q) return REALM_E_NOMEM;
    *p = q;
    *cap = n;
    return REALM_OK;
}

/* ---- special-token trie ----
 * Children live in one hash keyed by (node << 8 | byte); the root's children also sit in a
 * 256-entry table because nearly every text position is rejected right there. */
struct tok_trie_slot {
    uint64_t key; /* (node << 8 | byte) + 1, 0 = empty */
    int32_t child;
};

struct tok_trie {
    int32_t *value; /* per node: token id ending here, or -1 */
    int32_t n_nodes;
    int32_t root_child[256];
    struct tok_trie_slot *slots;
    uint64_t mask;
};

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static int32_t trie_child(const struct tok_trie *tr, int32_t node, unsigned char c) {
    if (node == 0) return tr->root_child[c];
    uint64_t key = (((uint64_t)node << 8) | c) + 1;
    uint64_t i = mix64(key) & tr->mask;
    for (;;) {
        if (tr->slots[i].key == key) return tr->slots[i].child;
        if (tr->slots[i].key == 0) return -1;
        i = (i + 1) & tr->mask;
    }
}

static void trie_set_child(struct tok_trie *tr, int32_t node, unsigned char c, int32_t child) {
    if (node == 0) {
        tr->root_child[c] = child;
        return;
    }
    uint64_t key = (((uint64_t)node << 8) | c) + 1;
    uint64_t i = mix64(key) & tr->mask;
    while (tr->slots[i].key != 0)
        i = (i + 1) & tr->mask;
    tr->slots[i].key = key;
    tr->slots[i].child = child;
}

void tok_trie_free(struct tok_trie *tr) {
    if (!tr) return;
    realm_free(tr->value);
    realm_free(tr->slots);
    realm_free(tr);
}

struct tok_trie *tok_trie_build(const struct realm_tokenizer *t) {
    size_t total = 1;
    for (int32_t i = 0; i < t->n_special; i++)
        total += t->str[t->special[i]].len;
    if (total > INT32_MAX / 2) return NULL;
    struct tok_trie *tr = realm_calloc(1, sizeof *tr);
    if (!tr) return NULL;
    uint64_t cap = 16;
    while (cap < total * 2)
        cap <<= 1;
    tr->mask = cap - 1;
    tr->slots = realm_calloc(cap, sizeof *tr->slots);
    tr->value = realm_malloc(total * sizeof *tr->value);
    if (!tr->slots || !tr->value) {
        tok_trie_free(tr);
        return NULL;
    }
    for (int c = 0; c < 256; c++)
        tr->root_child[c] = -1;
    tr->n_nodes = 1;
    tr->value[0] = -1;
    for (int32_t i = 0; i < t->n_special; i++) {
        size_t len;
        const char *s = tok_text(t, t->special[i], &len);
        int32_t node = 0;
        for (size_t k = 0; k < len; k++) {
            int32_t ch = trie_child(tr, node, (unsigned char)s[k]);
            if (ch < 0) {
                ch = tr->n_nodes++;
                tr->value[ch] = -1;
                trie_set_child(tr, node, (unsigned char)s[k], ch);
            }
            node = ch;
        }
        if (node != 0 && tr->value[node] < 0) tr->value[node] = t->special[i];
    }
    return tr;
}

void tok_trie_scan(const struct tok_trie *tr, const char *text, size_t len,
                   void (*fn)(int32_t id, void *user), void *user) {
    for (size_t pos = 0; pos < len; pos++) {
        int32_t node = tr->root_child[(unsigned char)text[pos]];
        size_t k = pos + 1;
        while (node > 0) {
            if (tr->value[node] >= 0) fn(tr->value[node], user);
            if (k >= len) break;
            node = trie_child(tr, node, (unsigned char)text[k++]);
        }
    }
}

/* ---- word cache ----
 * The ids of a word (BPE: a pre-tokenizer chunk; SPM: a piece between safe cut points) depend
 * only on its bytes, so words of up to WC_MAX_WORD bytes are memoised
 * for the duration of one realm_tokenize call (English text: most words repeat). The cache is an
 * open-addressing table sized by the input (256 .. 65536 slots); when it is half full new words
 * are no longer added. */
#define WC_MAX_WORD 24u

struct tok_wcache_slot {
    uint64_t hash; /* 0 = empty */
    uint8_t len;
    uint8_t n_ids;
    char word[WC_MAX_WORD];
    uint32_t ids_off; /* into b->wc_ids */
};

int tok_cached(const struct realm_tokenizer *t, const char *w, size_t n, struct tok_buf *b,
               struct tok_ids *out, tok_word_fn fn) {
    if (n > WC_MAX_WORD) return fn(t, w, n, b, out);
    if (!b->wc) {
        uint32_t slots = 256;
        while (slots < 65536 && slots < b->text_len / 4)
            slots <<= 1;
        b->wc = realm_calloc(slots, sizeof *b->wc);
        if (!b->wc) return REALM_E_NOMEM;
        b->wc_slots = slots;
    }
    const uint32_t mask = b->wc_slots - 1;
    uint64_t h = tok_hash(w, n) | 1;
    uint32_t i = (uint32_t)(h >> 20) & mask;
    for (;;) {
        struct tok_wcache_slot *s = &b->wc[i];
        if (s->hash == 0) break;
        if (s->hash == h && s->len == n && !memcmp(s->word, w, n)) {
            for (uint32_t k = 0; k < s->n_ids; k++)
                if (tok_ids_push(out, b->wc_ids[s->ids_off + k])) return REALM_E_NOMEM;
            return REALM_OK;
        }
        i = (i + 1) & mask;
    }
    int64_t before = out->n;
    int rc = fn(t, w, n, b, out);
    if (rc) return rc;
    int64_t n_ids = out->n - before;
    if (b->wc_used >= b->wc_slots / 2 || n_ids > 255) return REALM_OK;
    if (tok_buf_reserve((void **)&b->wc_ids, &b->wc_ids_cap, b->wc_ids_n + (size_t)n_ids,
                        sizeof *b->wc_ids))
        return REALM_E_NOMEM;
    struct tok_wcache_slot *s = &b->wc[i]; /* the empty slot the probe ended on */
    s->hash = h;
    s->len = (uint8_t)n;
    s->n_ids = (uint8_t)n_ids;
    memcpy(s->word, w, n);
    s->ids_off = (uint32_t)b->wc_ids_n;
    memcpy(b->wc_ids + b->wc_ids_n, out->v + before, (size_t)n_ids * sizeof *b->wc_ids);
    b->wc_ids_n += (size_t)n_ids;
    b->wc_used++;
    return REALM_OK;
}

void tok_buf_free(struct tok_buf *b) {
    realm_free(b->sym);
    realm_free(b->heap);
    realm_free(b->bytes);
    realm_free(b->chunks);
    realm_free(b->chunks2);
    realm_free(b->fix);
    realm_free(b->wc);
    realm_free(b->wc_ids);
    tok_bpe_match_free(b->match_data);
    memset(b, 0, sizeof *b);
}
