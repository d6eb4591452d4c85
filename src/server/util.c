/*
 * util.c — the server's small helpers: a growable byte buffer (realm_malloc'd), JSON string
 * escaping that always produces valid JSON, OpenAI error bodies, and clocks.
 *
 * Thread rule: a srv_buf belongs to one thread at a time; the rest is stateless.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "realm/utf8.h"
#include "server/srv.h"

static int reserve(struct srv_buf *b, size_t extra) {
    size_t need;
    if (realm_add_size(b->len, extra, &need) || realm_add_size(need, 1, &need)) return REALM_E_NOMEM;
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

int srv_buf_append(struct srv_buf *b, const void *p, size_t n) {
    if (reserve(b, n)) return REALM_E_NOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return REALM_OK;
}

int srv_buf_puts(struct srv_buf *b, const char *s) { return srv_buf_append(b, s, strlen(s)); }

int srv_buf_printf(struct srv_buf *b, const char *fmt, ...) {
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

int srv_buf_json_string(struct srv_buf *b, const char *s, size_t n) {
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
        case '"': *o++ = '\\'; *o++ = '"'; break;
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
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

void srv_buf_reset(struct srv_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void srv_buf_free(struct srv_buf *b) {
    realm_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t srv_unix_time(void) { return (int64_t)time(NULL); }

void srv_cond_init(pthread_cond_t *cv) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

void srv_deadline(struct timespec *ts, double seconds) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (seconds > 1e6) seconds = 1e6;
    long long ns = (long long)ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

int srv_error_set(struct srv_error *e, int http, const char *type, const char *code, const char *param,
                  const char *fmt, ...) {
    e->http = http;
    e->type = type;
    e->code = code;
    e->param = param;
    e->retry_after = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *srv_error_json(const struct srv_error *e, size_t *len) {
    struct srv_buf b = {0};
    int rc = srv_buf_puts(&b, "{\"error\":{\"message\":");
    rc |= srv_buf_json_string(&b, e->message, strlen(e->message));
    rc |= srv_buf_puts(&b, ",\"type\":");
    rc |= srv_buf_json_string(&b, e->type, strlen(e->type));
    rc |= srv_buf_puts(&b, ",\"param\":");
    rc |= e->param ? srv_buf_json_string(&b, e->param, strlen(e->param)) : srv_buf_puts(&b, "null");
    rc |= srv_buf_puts(&b, ",\"code\":");
    rc |= e->code ? srv_buf_json_string(&b, e->code, strlen(e->code)) : srv_buf_puts(&b, "null");
    rc |= srv_buf_puts(&b, "}}");
    if (rc) {
        srv_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}
