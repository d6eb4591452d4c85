/*
 * utf8.h — strict UTF-8 sequence check (Unicode Table 3-7: no overlongs, surrogates or code points
 * past U+10FFFF), shared by the tokenizer, the server's JSON writer and the guest SDK so that every
 * side of realm accepts and replaces exactly the same bytes. Header-only and freestanding (guests
 * compiled to wasm32 include it). Pure function: thread-safe.
 */
#ifndef REALM_UTF8_H
#define REALM_UTF8_H

#include <stddef.h>

/* The length of the sequence at s[0..n) (n >= 1) if complete and valid, 0 if valid so far but cut
 * off by n, or -k when the first k bytes are a maximal ill-formed subpart (replace them by one
 * U+FFFD). */
static inline int realm_utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return 0;
        unsigned char x = s[k];
        if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return -k;
    }
    return need + 1;
}

/* Whether s[0..n) is valid UTF-8 as a whole (no cut-off sequence at the end either). */
static inline int realm_utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = realm_utf8_seq(s + i, n - i);
        if (l <= 0) return 0;
        i += (size_t)l;
    }
    return 1;
}

#endif
