/*
 * value.c — arenas, output buffers and the Python semantics of values: truthiness, equality,
 * str() and repr(), json.dumps as transformers' tojson calls it, float repr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/alloc.h"
#include "template/tpl.h"

/* ---- arena ---- */
struct tpl_chunk {
    struct tpl_chunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

void *tpl_alloc(struct tpl_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && (n > a->limit || a->used > a->limit - n)) {
        a->limited = true;
        return NULL;
    }
    struct tpl_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > 65536 - sizeof *c ? n : 65536 - sizeof *c;
        c = realm_malloc(sizeof *c + size);
        if (!c) return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *r = c->data + c->used;
    c->used += n;
    a->used += n;
    return r;
}

void tpl_arena_free(struct tpl_arena *a) {
    struct tpl_chunk *c = a->head;
    while (c) {
        struct tpl_chunk *nx = c->next;
        realm_free(c);
        c = nx;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- buffers ---- */
bool tb_put(struct tpl_buf *b, const char *s, size_t n) {
    if (n > b->max || b->n > b->max - n) return false;
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n + 1)
            cap *= 2;
        char *np;
        if (b->a) {
            np = tpl_alloc(b->a, cap);
            if (!np) return false;
            if (b->n) memcpy(np, b->p, b->n);
        } else {
            np = realm_realloc(b->p, cap);
            if (!np) return false;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

bool tb_putc(struct tpl_buf *b, char c) {
    return tb_put(b, &c, 1);
}

static bool tb_puts(struct tpl_buf *b, const char *s) {
    return tb_put(b, s, strlen(s));
}

/* ---- utf-8 ---- */
size_t tv_utf8_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

size_t tv_utf8_off(const char *s, size_t n, size_t idx) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (c == idx) return i;
            c++;
        }
    }
    return n;
}

/* ---- semantics ---- */
const char *tv_type_name(const struct tv *v) {
    switch (v->k) {
    case TV_UNDEF:
        return "undefined";
    case TV_NONE:
        return "none";
    case TV_BOOL:
        return "bool";
    case TV_INT:
        return "int";
    case TV_FLOAT:
        return "float";
    case TV_STR:
        return "string";
    case TV_LIST:
        return "list";
    case TV_DICT:
        return "dict";
    case TV_NS:
        return "namespace";
    case TV_MACRO:
        return "macro";
    case TV_FUNC:
        return "function";
    case TV_METHOD:
        return "method";
    }
    return "?";
}

bool tv_truthy(const struct tv *v) {
    switch (v->k) {
    case TV_UNDEF:
    case TV_NONE:
        return false;
    case TV_BOOL:
        return v->u.b;
    case TV_INT:
        return v->u.i != 0;
    case TV_FLOAT:
        return v->u.f != 0.0;
    case TV_STR:
        return v->u.s.n > 0;
    case TV_LIST:
        return v->u.l->n > 0;
    case TV_DICT:
        return v->u.d->n > 0;
    default:
        return true;
    }
}

static bool is_num(const struct tv *v) {
    return v->k == TV_INT || v->k == TV_FLOAT || v->k == TV_BOOL;
}
static double num_f(const struct tv *v) {
    return v->k == TV_FLOAT ? v->u.f : v->k == TV_INT ? (double)v->u.i : (double)v->u.b;
}

static bool equal_d(const struct tv *a, const struct tv *b, int depth) {
    if (depth > TV_MAX_NEST) return false;
    if (is_num(a) && is_num(b)) {
        if (a->k != TV_FLOAT && b->k != TV_FLOAT) {
            int64_t x = a->k == TV_INT ? a->u.i : a->u.b, y = b->k == TV_INT ? b->u.i : b->u.b;
            return x == y;
        }
        return num_f(a) == num_f(b);
    }
    if (a->k != b->k) return false;
    switch (a->k) {
    case TV_UNDEF:
    case TV_NONE:
        return true;
    case TV_STR:
        return a->u.s.n == b->u.s.n && !memcmp(a->u.s.s, b->u.s.s, a->u.s.n);
    case TV_LIST:
        if (a->u.l->n != b->u.l->n) return false;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!equal_d(&a->u.l->v[i], &b->u.l->v[i], depth + 1)) return false;
        return true;
    case TV_DICT: {
        const struct tv_dict *x = a->u.d, *y = b->u.d;
        if (x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++) {
            size_t j = 0;
            while (j < y->n && !equal_d(&x->keys[i], &y->keys[j], depth + 1))
                j++;
            if (j == y->n || !equal_d(&x->vals[i], &y->vals[j], depth + 1)) return false;
        }
        return true;
    }
    case TV_NS:
        return a->u.d == b->u.d;
    case TV_MACRO:
        return a->u.mac.n == b->u.mac.n;
    case TV_FUNC:
        return a->u.func == b->u.func;
    default:
        return false;
    }
}

bool tv_equal(const struct tv *a, const struct tv *b) {
    return equal_d(a, b, 0);
}

/* Python's repr(float): the shortest digits that read back to the same double. */
void tv_float_repr(char *out, size_t cap, double f) {
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e: [-]d[.ddd]e[+-]XX */
    const char *s = e;
    bool neg = *s == '-';
    if (neg) s++;
    char digits[24];
    size_t nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    int ex = atoi(s + 1);
    size_t o = 0;
    char buf[64];
    if (neg) buf[o++] = '-';
    if (ex >= -4 && ex < 16) {
        if (ex >= 0) {
            for (int i = 0; i <= ex; i++)
                buf[o++] = (size_t)i < nd ? digits[i] : '0';
            buf[o++] = '.';
            if ((size_t)ex + 1 < nd)
                for (size_t i = (size_t)ex + 1; i < nd; i++)
                    buf[o++] = digits[i];
            else
                buf[o++] = '0';
        } else {
            buf[o++] = '0';
            buf[o++] = '.';
            for (int i = 0; i < -ex - 1; i++)
                buf[o++] = '0';
            for (size_t i = 0; i < nd; i++)
                buf[o++] = digits[i];
        }
        buf[o] = 0;
    } else {
        buf[o++] = digits[0];
        if (nd > 1) {
            buf[o++] = '.';
            for (size_t i = 1; i < nd; i++)
                buf[o++] = digits[i];
        }
        snprintf(buf + o, sizeof buf - o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    snprintf(out, cap, "%s", buf);
}

static bool put_int(struct tpl_buf *b, int64_t i) {
    char t[32];
    int n = snprintf(t, sizeof t, "%lld", (long long)i);
    return tb_put(b, t, (size_t)n);
}

static bool repr_str(struct tpl_buf *b, const char *s, size_t n) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    if (!tb_putc(b, q)) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char t[8];
        const char *e = NULL;
        if (c == '\\')
            e = "\\\\";
        else if (c == (unsigned char)q)
            e = q == '\'' ? "\\'" : "\\\"";
        else if (c == '\n')
            e = "\\n";
        else if (c == '\r')
            e = "\\r";
        else if (c == '\t')
            e = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(t, sizeof t, "\\x%02x", c);
            e = t;
        }
        if (e ? !tb_puts(b, e) : !tb_putc(b, (char)c)) return false;
    }
    return tb_putc(b, q);
}

static bool str_d(struct tpl_buf *b, const struct tv *v, int depth);

static bool repr_d(struct tpl_buf *b, const struct tv *v, int depth) {
    if (depth > TV_MAX_NEST) return false;
    switch (v->k) {
    case TV_STR:
        return repr_str(b, v->u.s.s, v->u.s.n);
    case TV_LIST:
        if (!tb_putc(b, v->u.l->tuple ? '(' : '[')) return false;
        for (size_t i = 0; i < v->u.l->n; i++)
            if ((i && !tb_puts(b, ", ")) || !repr_d(b, &v->u.l->v[i], depth + 1)) return false;
        if (v->u.l->tuple && v->u.l->n == 1 && !tb_putc(b, ',')) return false;
        return tb_putc(b, v->u.l->tuple ? ')' : ']');
    case TV_DICT:
        if (!tb_putc(b, '{')) return false;
        for (size_t i = 0; i < v->u.d->n; i++)
            if ((i && !tb_puts(b, ", ")) || !repr_d(b, &v->u.d->keys[i], depth + 1) ||
                !tb_puts(b, ": ") || !repr_d(b, &v->u.d->vals[i], depth + 1))
                return false;
        return tb_putc(b, '}');
    default:
        return str_d(b, v, depth);
    }
}

bool tv_repr(struct tpl_buf *b, const struct tv *v) {
    return repr_d(b, v, 0);
}
bool tv_str(struct tpl_buf *b, const struct tv *v) {
    return str_d(b, v, 0);
}

static bool str_d(struct tpl_buf *b, const struct tv *v, int depth) {
    char t[64];
    switch (v->k) {
    case TV_UNDEF:
        return true;
    case TV_NONE:
        return tb_puts(b, "None");
    case TV_BOOL:
        return tb_puts(b, v->u.b ? "True" : "False");
    case TV_INT:
        return put_int(b, v->u.i);
    case TV_FLOAT:
        tv_float_repr(t, sizeof t, v->u.f);
        return tb_puts(b, t);
    case TV_STR:
        return tb_put(b, v->u.s.s, v->u.s.n);
    case TV_LIST:
    case TV_DICT:
        return repr_d(b, v, depth);
    case TV_NS: {
        struct tv d = *v;
        d.k = TV_DICT;
        return tb_puts(b, "<Namespace ") && repr_d(b, &d, depth + 1) && tb_putc(b, '>');
    }
    case TV_MACRO:
        return tb_puts(b, "<Macro>");
    case TV_FUNC:
        return tb_puts(b, "<function>");
    case TV_METHOD:
        return tb_puts(b, "<method>");
    }
    return true;
}

static bool json_str(struct tpl_buf *b, const char *s, size_t n) {
    if (!tb_putc(b, '"')) return false;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *e = NULL;
        char t[8];
        if (c == '"')
            e = "\\\"";
        else if (c == '\\')
            e = "\\\\";
        else if (c == '\n')
            e = "\\n";
        else if (c == '\r')
            e = "\\r";
        else if (c == '\t')
            e = "\\t";
        else if (c == '\b')
            e = "\\b";
        else if (c == '\f')
            e = "\\f";
        else if (c < 0x20) {
            snprintf(t, sizeof t, "\\u%04x", c);
            e = t;
        }
        if (!e) continue;
        if (!tb_put(b, s + run, i - run) || !tb_puts(b, e)) return false;
        run = i + 1;
    }
    return tb_put(b, s + run, n - run) && tb_putc(b, '"');
}

static bool json_indent(struct tpl_buf *b, int indent, int depth) {
    if (indent < 0) return true;
    if (!tb_putc(b, '\n')) return false;
    for (int i = 0; i < indent * depth; i++)
        if (!tb_putc(b, ' ')) return false;
    return true;
}

/* A dict key as json.dumps converts it: strings as they are, numbers/bools/None to text. */
static bool json_key(struct tpl_buf *b, const struct tv *k) {
    char t[64];
    switch (k->k) {
    case TV_STR:
        return json_str(b, k->u.s.s, k->u.s.n);
    case TV_INT:
        snprintf(t, sizeof t, "\"%lld\"", (long long)k->u.i);
        return tb_puts(b, t);
    case TV_BOOL:
        return tb_puts(b, k->u.b ? "\"true\"" : "\"false\"");
    case TV_NONE:
        return tb_puts(b, "\"null\"");
    case TV_FLOAT:
        tv_float_repr(t + 1, sizeof t - 2, k->u.f);
        t[0] = '"';
        strcat(t, "\"");
        return tb_puts(b, t);
    default:
        return false;
    }
}

static int key_cmp(const struct tv *a, const struct tv *b) {
    if (a->k == TV_STR && b->k == TV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int c = memcmp(a->u.s.s, b->u.s.s, n);
        return c ? c : (a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n);
    }
    double x = a->k == TV_INT ? (double)a->u.i : a->k == TV_FLOAT ? a->u.f : 0;
    double y = b->k == TV_INT ? (double)b->u.i : b->k == TV_FLOAT ? b->u.f : 0;
    return x < y ? -1 : x > y;
}

bool tv_json(struct tpl_buf *b, const struct tv *v, int indent, const char *item_sep,
             const char *key_sep, int depth, bool sort_keys) {
    char t[64];
    if (depth > TV_MAX_NEST) return false;
    switch (v->k) {
    case TV_NONE:
        return tb_puts(b, "null");
    case TV_BOOL:
        return tb_puts(b, v->u.b ? "true" : "false");
    case TV_INT:
        return put_int(b, v->u.i);
    case TV_FLOAT:
        if (isnan(v->u.f)) return tb_puts(b, "NaN");
        if (isinf(v->u.f)) return tb_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        tv_float_repr(t, sizeof t, v->u.f);
        return tb_puts(b, t);
    case TV_STR:
        return json_str(b, v->u.s.s, v->u.s.n);
    case TV_LIST: {
        const struct tv_list *l = v->u.l;
        if (!l->n) return tb_puts(b, "[]");
        if (!tb_putc(b, '[')) return false;
        for (size_t i = 0; i < l->n; i++) {
            if (i && !tb_puts(b, item_sep)) return false;
            if (!json_indent(b, indent, depth + 1)) return false;
            if (!tv_json(b, &l->v[i], indent, item_sep, key_sep, depth + 1, sort_keys))
                return false;
        }
        return json_indent(b, indent, depth) && tb_putc(b, ']');
    }
    case TV_DICT:
    case TV_NS: {
        const struct tv_dict *d = v->u.d;
        if (!d->n) return tb_puts(b, "{}");
        if (!tb_putc(b, '{')) return false;
        size_t order_small[64];
        size_t *order = order_small;
        if (sort_keys && d->n > 64) {
            order = realm_malloc(d->n * sizeof *order);
            if (!order) return false;
        }
        for (size_t i = 0; i < d->n; i++)
            order[i] = i;
        if (sort_keys) /* insertion sort: stable, dicts here are small */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0 && key_cmp(&d->keys[order[j - 1]], &d->keys[order[j]]) > 0;
                     j--) {
                    size_t x = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = x;
                }
        bool ok = true;
        for (size_t k = 0; ok && k < d->n; k++) {
            size_t i = order[k];
            ok = (!k || tb_puts(b, item_sep)) && json_indent(b, indent, depth + 1) &&
                 json_key(b, &d->keys[i]) && tb_puts(b, key_sep) &&
                 tv_json(b, &d->vals[i], indent, item_sep, key_sep, depth + 1, sort_keys);
        }
        if (order != order_small) realm_free(order);
        return ok && json_indent(b, indent, depth) && tb_putc(b, '}');
    }
    default:
        return false;
    }
}
