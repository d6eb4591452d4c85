/* buf.c — see include/realm/buf.h. */
#include "realm/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "realm/utf8.h"

static int reserve(struct realm_buf *b, size_t extra) {
    size_t need;
    if (realm_add_size(b->len, extra, &need) || realm_add_size(need, 1, &need))
        return REALM_E_NOMEM;
    if (need <= b->cap) return REALM_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return REALM_E_NOMEM;
        cap *= 2;
    }
    char *p = realm_realloc(b->data, cap);
    if (!p) return REALM_E_NOMEM;
    b->data = p;
    b->cap = cap;
    return REALM_OK;
}

int realm_buf_append(struct realm_buf *b, const void *p, size_t n) {
    if (reserve(b, n)) return REALM_E_NOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return REALM_OK;
}

int realm_buf_puts(struct realm_buf *b, const char *s) {
    return realm_buf_append(b, s, strlen(s));
}

int realm_buf_printf(struct realm_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n)) return REALM_E_NOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return REALM_OK;
}

int realm_buf_json_string(struct realm_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    /* worst case: every byte becomes \u00XX (6) or U+FFFD (3) */
    size_t worst;
    if (realm_mul_size(n, 6, &worst) || reserve(b, worst + 2)) return REALM_E_NOMEM;
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c >= 0x80) {
            int l = realm_utf8_seq(u + i, n - i);
            if (l <= 0) { /* invalid or cut off: one U+FFFD per byte */
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, u + i, (size_t)l);
                o += l;
                i += (size_t)l;
            }
            continue;
        }
        switch (c) {
        case '"':
            *o++ = '\\';
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                memcpy(o, "\\u00", 4);
                o[4] = hex[c >> 4];
                o[5] = hex[c & 15];
                o += 6;
            } else {
                *o++ = (char)c;
            }
        }
        i++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return REALM_OK;
}

void realm_buf_reset(struct realm_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void realm_buf_free(struct realm_buf *b) {
    realm_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
