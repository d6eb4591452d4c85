/*
 * sdk.c — the exports every realm guest has (realm_abi_version, realm_alloc, realm_free), typed
 * helpers over the raw imports (whole-buffer reads that grow their buffer until the result fits,
 * logging), a tiny printf without stdio (stdio would import WASI), a growable buffer and UTF-8
 * helpers. Single-threaded, like every wasm32 guest.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "realm/utf8.h"
#include "realm_guest.h"

/* ---- exports ---- */

/* Weak so that a test guest can declare another ABI version. */
RG_EXPORT(realm_abi_version) __attribute__((weak)) int32_t realm_abi_version(void) {
    return REALM_ABI_VERSION;
}

RG_EXPORT(realm_alloc) void *realm_alloc(int32_t size) {
    if (size < 0) return NULL;
    return malloc((size_t)size);
}

RG_EXPORT(realm_free) void realm_free(void *p) {
    free(p);
}

/* ---- status text (same words as the host's realm_strerror) ---- */

const char *rg_strerror(int32_t code) {
    return realm_status_text(code);
}

/* ---- formatting ---- */

struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->cap && o->len < o->cap - 1) o->buf[o->len] = s[i];
}

static void put_u64(struct out *o, uint64_t v, unsigned base, bool neg) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg) tmp[n++] = '-';
    for (int i = n - 1; i >= 0; i--)
        put(o, &tmp[i], 1);
}

static void put_double(struct out *o, double d) {
    if (d != d) {
        put(o, "nan", 3);
        return;
    }
    if (d < 0) {
        put(o, "-", 1);
        d = -d;
    }
    if (d > 1e18) {
        put(o, "inf", 3);
        return;
    }
    uint64_t ip = (uint64_t)d;
    uint64_t frac = (uint64_t)((d - (double)ip) * 1e6 + 0.5);
    if (frac >= 1000000) {
        ip++;
        frac -= 1000000;
    }
    put_u64(o, ip, 10, false);
    put(o, ".", 1);
    char f[6];
    for (int i = 5; i >= 0; i--, frac /= 10)
        f[i] = (char)('0' + frac % 10);
    put(o, f, 6);
}

static int vfmt(char *buf, size_t cap, const char *fmt, va_list ap) {
    struct out o = {buf, cap, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, p, 1);
            continue;
        }
        p++;
        int lng = 0, prec = -1;
        if (p[0] == '.' && p[1] == '*') {
            prec = va_arg(ap, int);
            p += 2;
        }
        while (*p == 'l')
            lng++, p++;
        switch (*p) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            size_t n = 0;
            while ((prec < 0 || n < (size_t)prec) && s[n])
                n++;
            put(&o, s, n);
            break;
        }
        case 'd':
        case 'i': {
            long long v = lng >= 2 ? va_arg(ap, long long)
                          : lng    ? va_arg(ap, long)
                                   : va_arg(ap, int);
            put_u64(&o, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 10, v < 0);
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = lng >= 2 ? va_arg(ap, unsigned long long)
                                   : lng    ? va_arg(ap, unsigned long)
                                            : va_arg(ap, unsigned);
            put_u64(&o, v, *p == 'x' ? 16 : 10, false);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put(&o, &c, 1);
            break;
        }
        case 'f':
            put_double(&o, va_arg(ap, double));
            break;
        case '%':
            put(&o, "%", 1);
            break;
        case 0:
            p--;
            break;
        default:
            put(&o, p - 1, 2);
            break;
        }
    }
    if (cap) buf[o.len < cap ? o.len : cap - 1] = 0;
    return (int)o.len;
}

int rg_fmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void rg_log(int32_t level, const char *msg) {
    realm_log(level, msg, (int32_t)strlen(msg));
}

void rg_logf(int32_t level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vfmt(buf, sizeof buf, fmt, ap);
    va_end(ap);
    realm_log(level, buf, n < (int)sizeof buf ? n : (int)sizeof buf - 1);
}

int32_t rg_emit_str(const char *s) {
    return realm_emit(s, (int32_t)strlen(s));
}

/* ---- whole-buffer reads: call, and again with the exact size if the first buffer was short ----
 */

typedef int32_t (*fill_fn)(void *ctx, char *buf, int32_t cap);

static int32_t read_all(fill_fn fn, void *ctx, char **out, size_t *len) {
    int32_t cap = 1024;
    for (int tries = 0; tries < 3; tries++) {
        char *buf = malloc((size_t)cap + 1);
        if (!buf) return REALM_E_NOMEM;
        int32_t n = fn(ctx, buf, cap);
        if (n < 0) {
            free(buf);
            return n;
        }
        if (n <= cap) {
            buf[n] = 0;
            *out = buf;
            *len = (size_t)n;
            return REALM_OK;
        }
        free(buf);
        if (n == INT32_MAX) return REALM_E_LIMIT;
        cap = n; /* the result's full length: the next call fits unless it changed */
    }
    return REALM_E_INTERNAL;
}

static int32_t fill_request(void *ctx, char *buf, int32_t cap) {
    (void)ctx;
    return realm_request_read(buf, cap);
}

int32_t rg_request_read_all(char **out, size_t *len) {
    return read_all(fill_request, NULL, out, len);
}

static int32_t fill_info(void *ctx, char *buf, int32_t cap) {
    return realm_model_info(*(int32_t *)ctx, buf, cap);
}

int32_t rg_model_info_all(int32_t model, char **out, size_t *len) {
    return read_all(fill_info, &model, out, len);
}

struct chat_ctx {
    int32_t model;
    const char *msgs;
    size_t len;
};

static int32_t fill_chat(void *ctx, char *buf, int32_t cap) {
    struct chat_ctx *c = ctx;
    return realm_chat_format(c->model, c->msgs, (int32_t)c->len, buf, cap);
}

int32_t rg_chat_format_all(int32_t model, const char *messages_json, size_t len, char **out,
                           size_t *out_len) {
    if (len > INT32_MAX) return REALM_E_LIMIT;
    struct chat_ctx c = {model, messages_json, len};
    return read_all(fill_chat, &c, out, out_len);
}

/* A token-filling import, called as fill(ctx, buf, cap): returns the full count (or an error). */
typedef int32_t (*fill_tokens_fn)(void *ctx, int32_t *buf, int32_t cap);

/* Calls `fill` with a buffer of `cap` tokens, and once more with the exact size if that was too
 * small; *out is malloc'd (the caller frees it). */
static int32_t tokens_all(fill_tokens_fn fill, void *ctx, int32_t cap, int32_t **out, int32_t *n) {
    for (int tries = 0; tries < 2; tries++) {
        int32_t *buf = malloc((size_t)cap * sizeof *buf);
        if (!buf) return REALM_E_NOMEM;
        int32_t r = fill(ctx, buf, cap);
        if (r < 0) {
            free(buf);
            return r;
        }
        if (r <= cap) {
            *out = buf;
            *n = r;
            return REALM_OK;
        }
        free(buf);
        if (r > INT32_MAX / 4) return REALM_E_LIMIT; /* r * 4 bytes must fit a wasm32 size_t */
        cap = r;
    }
    return REALM_E_INTERNAL;
}

struct tok_ctx {
    int32_t model;
    const char *src;
    int32_t len, flags;
};

static int32_t fill_chat_tokens(void *ctx, int32_t *buf, int32_t cap) {
    const struct tok_ctx *c = ctx;
    return realm_chat_tokenize(c->model, c->src, c->len, c->flags, buf, cap);
}

static int32_t fill_tokens(void *ctx, int32_t *buf, int32_t cap) {
    const struct tok_ctx *c = ctx;
    return realm_tokenize(c->model, c->src, c->len, c->flags, buf, cap);
}

int32_t rg_chat_tokenize_all(int32_t model, const char *messages_json, size_t len, int32_t flags,
                             int32_t **out, int32_t *n) {
    if (len > INT32_MAX / 4 - 256) return REALM_E_LIMIT;
    /* the JSON is usually longer than the prompt's tokens; else the second call has the size */
    struct tok_ctx c = {model, messages_json, (int32_t)len, flags};
    return tokens_all(fill_chat_tokens, &c, (int32_t)len + 64, out, n);
}

int32_t rg_tokenize_all(int32_t model, const char *text, size_t len, int32_t flags, int32_t **out,
                        int32_t *n) {
    if (len > INT32_MAX / 4 - 16) return REALM_E_LIMIT;
    /* an SPM or byte-level BPE token covers at least one byte, plus BOS/EOS */
    struct tok_ctx c = {model, text, (int32_t)len, flags};
    return tokens_all(fill_tokens, &c, (int32_t)len + 4, out, n);
}

/* ---- growable buffer ---- */

int32_t rg_buf_append(struct rg_buf *b, const void *p, size_t n) {
    if (b->len + n < b->len) return REALM_E_NOMEM;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) return REALM_E_NOMEM;
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (!d) return REALM_E_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return REALM_OK;
}

void rg_buf_consume(struct rg_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void rg_buf_free(struct rg_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 ---- */

size_t rg_utf8_complete_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = realm_utf8_seq(u + i, n - i);
        if (l == 0) return i;
        i += (size_t)(l < 0 ? -l : l);
    }
    return n;
}

int32_t rg_utf8_sanitize(struct rg_buf *out, const char *s, size_t n) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        int l = realm_utf8_seq(u + i, n - i);
        if (l > 0) {
            i += (size_t)l;
            continue;
        }
        /* an invalid subpart, or an incomplete tail (the caller passes complete text or the final
         * flush): flush the valid run, then one U+FFFD */
        int32_t rc = rg_buf_append(out, s + run, i - run);
        if (rc == REALM_OK) rc = rg_buf_append(out, fffd, 3);
        if (rc != REALM_OK) return rc;
        i = l < 0 ? i + (size_t)-l : n;
        run = i;
    }
    return rg_buf_append(out, s + run, n - run);
}
