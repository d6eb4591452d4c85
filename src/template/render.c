/*
 * render.c — evaluates the syntax tree: statements, expressions, and the filters, tests,
 * methods and global functions of the Jinja subset chat templates use. Semantics follow Python
 * jinja2 with its default Undefined (prints as nothing, is false, iterates as empty, but an
 * attribute of it or arithmetic on it is an error).
 *
 * Errors longjmp back to realm_template_render, which frees the render's arena.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unicode/ustring.h>

#include "realm/alloc.h"
#include "realm/template.h"
#include "template/tpl.h"

enum { TF_RANGE = 1, TF_NAMESPACE, TF_RAISE, TF_STRFTIME, TF_DICT };

struct frame {
    struct frame *parent;
    struct tv_dict vars;
};

struct rctx {
    struct tpl_arena arena;
    struct tpl_buf *out;
    struct tv_dict globals; /* the render's variables */
    uint64_t steps, max_steps;
    uint32_t depth, max_depth;
    uint32_t nest; /* eval/exec recursion */
    size_t max_output;
    struct realm_err *err;
    jmp_buf jb;
};

/* ------------------------------------------------------------- errors ---- */

static _Noreturn void rerr(struct rctx *c, const struct tpl_node *at, int code, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));
static _Noreturn void rerr(struct rctx *c, const struct tpl_node *at, int code, const char *fmt,
                           ...) {
    char msg[220];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        realm_err_set(c->err, code, "template: %d:%d: %s", at->line, at->col, msg);
    else
        realm_err_set(c->err, code, "template: variables: %s",
                      msg); /* while converting the input */
    longjmp(c->jb, 1);
}

static _Noreturn void oom(struct rctx *c, const struct tpl_node *at) {
    if (c->arena.limited)
        rerr(c, at, REALM_E_LIMIT, "memory limit of %zu bytes exceeded", c->arena.limit);
    rerr(c, at, REALM_E_NOMEM, "out of memory");
}

static void step(struct rctx *c, const struct tpl_node *at) {
    if (++c->steps > c->max_steps)
        rerr(c, at, REALM_E_LIMIT, "step limit of %llu exceeded (loop iterations, calls, output)",
             (unsigned long long)c->max_steps);
}

/* Charges an operation linear in `bytes` to the step budget (one step per 256 bytes), so that
 * loops over long strings (indexing, length, slicing) stay bounded in time as well. */
static void work(struct rctx *c, const struct tpl_node *at, size_t bytes) {
    c->steps += bytes >> 8;
    step(c, at);
}

static void *ralloc(struct rctx *c, const struct tpl_node *at, size_t n) {
    void *p = tpl_alloc(&c->arena, n);
    if (!p) oom(c, at);
    return p;
}

/* ------------------------------------------------------ constructors ---- */

static struct tv v_undef(const char *hint) {
    struct tv v = {.k = TV_UNDEF};
    v.u.s.s = hint;
    return v;
}
static struct tv v_none(void) {
    return (struct tv){.k = TV_NONE};
}
static struct tv v_bool(bool b) {
    struct tv v = {.k = TV_BOOL};
    v.u.b = b;
    return v;
}
static struct tv v_int(int64_t i) {
    struct tv v = {.k = TV_INT};
    v.u.i = i;
    return v;
}
static struct tv v_float(double f) {
    struct tv v = {.k = TV_FLOAT};
    v.u.f = f;
    return v;
}
static struct tv v_strn(const char *s, size_t n) {
    struct tv v = {.k = TV_STR};
    v.u.s.s = s;
    v.u.s.n = n;
    return v;
}
static struct tv v_str_copy(struct rctx *c, const struct tpl_node *at, const char *s, size_t n) {
    char *p = ralloc(c, at, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return v_strn(p, n);
}

static struct tv v_list(struct rctx *c, const struct tpl_node *at, size_t cap) {
    struct tv v = {.k = TV_LIST};
    v.u.l = ralloc(c, at, sizeof *v.u.l);
    v.u.l->n = 0;
    v.u.l->cap = cap;
    v.u.l->tuple = false;
    v.u.l->v = cap ? ralloc(c, at, cap * sizeof(struct tv)) : NULL;
    return v;
}
static void list_push(struct rctx *c, const struct tpl_node *at, struct tv_list *l, struct tv x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct tv *nv = ralloc(c, at, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = x;
}
static struct tv v_dict(struct rctx *c, const struct tpl_node *at) {
    struct tv v = {.k = TV_DICT};
    v.u.d = ralloc(c, at, sizeof *v.u.d);
    memset(v.u.d, 0, sizeof *v.u.d);
    return v;
}
static struct tv *dict_find(const struct tv_dict *d, const struct tv *key) {
    for (size_t i = 0; i < d->n; i++)
        if (tv_equal(&d->keys[i], key)) return &d->vals[i];
    return NULL;
}
static struct tv *dict_find_s(const struct tv_dict *d, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].k == TV_STR && d->keys[i].u.s.n == n && !memcmp(d->keys[i].u.s.s, key, n))
            return &d->vals[i];
    return NULL;
}
static void dict_set(struct rctx *c, const struct tpl_node *at, struct tv_dict *d, struct tv key,
                     struct tv val) {
    struct tv *e = dict_find(d, &key);
    if (e) {
        *e = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct tv *nk = ralloc(c, at, cap * sizeof *nk), *nv = ralloc(c, at, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->keys, d->n * sizeof *nk);
            memcpy(nv, d->vals, d->n * sizeof *nv);
        }
        d->keys = nk;
        d->vals = nv;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
}
static void dict_set_s(struct rctx *c, const struct tpl_node *at, struct tv_dict *d,
                       const char *key, struct tv val) {
    dict_set(c, at, d, v_strn(key, strlen(key)), val);
}

static struct tv from_json(struct rctx *c, const cJSON *j) {
    if (cJSON_IsNull(j)) return v_none();
    if (cJSON_IsBool(j)) return v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9.2e18) return v_int((int64_t)d);
        return v_float(d);
    }
    if (cJSON_IsString(j)) return v_strn(j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        struct tv l = v_list(c, NULL, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *e = j->child; e; e = e->next)
            list_push(c, NULL, l.u.l, from_json(c, e));
        return l;
    }
    if (cJSON_IsObject(j)) {
        struct tv d = v_dict(c, NULL);
        for (const cJSON *e = j->child; e; e = e->next)
            dict_set(c, NULL, d.u.d, v_strn(e->string, strlen(e->string)), from_json(c, e));
        return d;
    }
    return v_none();
}

/* ----------------------------------------------------------- strings ---- */

static struct tv to_str(struct rctx *c, const struct tpl_node *at, const struct tv *v) {
    if (v->k == TV_STR) return *v;
    struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
    if (!tv_str(&b, v)) rerr(c, at, REALM_E_LIMIT, "value too large or nested too deeply to print");
    work(c, at, b.n);
    return v_strn(b.p ? b.p : "", b.n);
}

static struct tv concat(struct rctx *c, const struct tpl_node *at, struct tv a, struct tv b) {
    size_t n;
    if (realm_add_size(a.u.s.n, b.u.s.n, &n) || n > c->max_output)
        rerr(c, at, REALM_E_LIMIT, "string longer than the output limit");
    work(c, at, n);
    char *p = ralloc(c, at, n + 1);
    memcpy(p, a.u.s.s, a.u.s.n);
    memcpy(p + a.u.s.n, b.u.s.s, b.u.s.n);
    p[n] = 0;
    return v_strn(p, n);
}

/* Decodes the code point at s[i]; returns its byte length (1 for invalid bytes). */
static size_t cp_at(const char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned char b = (unsigned char)s[i];
    size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 1;
    if (i + len > n) len = 1;
    uint32_t v = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (size_t k = 1; k < len; k++)
        v = (v << 6) | ((unsigned char)s[i + k] & 0x3Fu);
    *cp = v;
    return len;
}
/* Start of the code point that ends at s[i-1]. */
static size_t cp_start_before(const char *s, size_t i) {
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80 && i - j < 4)
        j--;
    return j;
}
/* Python's str.isspace() for one code point. */
static bool cp_space(uint32_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}
static bool cp_in(uint32_t cp, const struct tv *chars) {
    for (size_t i = 0; i < chars->u.s.n;) {
        uint32_t x;
        i += cp_at(chars->u.s.s, chars->u.s.n, i, &x);
        if (x == cp) return true;
    }
    return false;
}
/* str.strip/lstrip/rstrip: which = 1 left, 2 right, 3 both; chars NULL or none: whitespace. */
static struct tv str_strip(const struct tv *s, const struct tv *chars, int which) {
    size_t a = 0, b = s->u.s.n;
    const char *p = s->u.s.s;
    bool ws = !chars || chars->k != TV_STR;
    if (which & 1)
        while (a < b) {
            uint32_t cp;
            size_t l = cp_at(p, b, a, &cp);
            if (ws ? !cp_space(cp) : !cp_in(cp, chars)) break;
            a += l;
        }
    if (which & 2)
        while (b > a) {
            size_t st = cp_start_before(p, b);
            if (st < a) st = a;
            uint32_t cp;
            cp_at(p, b, st, &cp);
            if (ws ? !cp_space(cp) : !cp_in(cp, chars)) break;
            b = st;
        }
    return v_strn(p + a, b - a);
}

static bool is_ws_char(char ch) {
    return ch == ' ' || (ch >= 9 && ch <= 13);
}

static bool str_starts(const struct tv *s, const struct tv *pre) {
    return pre->u.s.n <= s->u.s.n && !memcmp(s->u.s.s, pre->u.s.s, pre->u.s.n);
}
static bool str_ends(const struct tv *s, const struct tv *suf) {
    return suf->u.s.n <= s->u.s.n &&
           !memcmp(s->u.s.s + s->u.s.n - suf->u.s.n, suf->u.s.s, suf->u.s.n);
}
static const char *str_find(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0) return h;
    return memmem(h, hn, nd, nn); /* linear time in glibc (two-way), unlike a naive scan */
}

/* Python's str.lower()/upper() for non-ASCII text: ICU's full case mapping in the root locale
 * (ß → SS, final sigma). false (caller keeps the ASCII mapping) on invalid UTF-8. */
static bool icu_map_case(struct rctx *c, const struct tpl_node *at, const struct tv *s, bool upper,
                         struct tv *out) {
    if (s->u.s.n > (size_t)INT32_MAX / 4) return false;
    int32_t cap = (int32_t)s->u.s.n + 1, n16 = 0, subs = 0;
    UChar *u = ralloc(c, at, (size_t)cap * sizeof *u);
    UErrorCode st = U_ZERO_ERROR;
    u_strFromUTF8WithSub(u, cap, &n16, s->u.s.s, (int32_t)s->u.s.n, 0xFFFD, &subs, &st);
    if (U_FAILURE(st) || subs) return false;
    int32_t cap2 = n16 * 3 + 1, n2;
    UChar *m = ralloc(c, at, (size_t)cap2 * sizeof *m);
    n2 = upper ? u_strToUpper(m, cap2, u, n16, "", &st) : u_strToLower(m, cap2, u, n16, "", &st);
    if (U_FAILURE(st)) return false;
    int32_t cap3 = n2 * 3 + 1, n8;
    char *o = ralloc(c, at, (size_t)cap3);
    u_strToUTF8(o, cap3, &n8, m, n2, &st);
    if (U_FAILURE(st)) return false;
    *out = v_strn(o, (size_t)n8);
    return true;
}

static struct tv str_map_case(struct rctx *c, const struct tpl_node *at, const struct tv *s,
                              int mode) {
    if (mode <= 1) {
        bool ascii = true;
        for (size_t i = 0; ascii && i < s->u.s.n; i++)
            ascii = (unsigned char)s->u.s.s[i] < 0x80;
        struct tv r;
        if (!ascii && icu_map_case(c, at, s, mode == 1, &r)) return r;
    }
    /* mode 0 lower, 1 upper, 2 capitalize, 3 str.title() (a word starts after any non-letter),
     * 4 the title filter (a word starts after whitespace or one of "-({[<"). ASCII letters only;
     * other bytes are unchanged. */
    char *p = ralloc(c, at, s->u.s.n + 1);
    bool prev_alpha = false;
    for (size_t i = 0; i < s->u.s.n; i++) {
        char ch = s->u.s.s[i];
        bool lower = ch >= 'a' && ch <= 'z', upper = ch >= 'A' && ch <= 'Z';
        bool up = mode == 1 || (mode == 2 && i == 0) || (mode == 3 && !prev_alpha) ||
                  (mode == 4 &&
                   (i == 0 || (s->u.s.s[i - 1] && strchr("-({[< \t\n\r\f\v", s->u.s.s[i - 1]))));
        if (up && lower)
            ch = (char)(ch - 32);
        else if (!up && upper)
            ch = (char)(ch + 32);
        prev_alpha = lower || upper || ((unsigned char)ch >= 0x80 && mode == 3 && prev_alpha);
        p[i] = ch;
    }
    p[s->u.s.n] = 0;
    return v_strn(p, s->u.s.n);
}

static struct tv str_replace(struct rctx *c, const struct tpl_node *at, const struct tv *s,
                             const struct tv *old, const struct tv *new_, int64_t count) {
    struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
    size_t i = 0;
    int64_t done = 0;
    bool ok = true;
    if (old->u.s.n == 0) { /* Python inserts `new` between every character */
        while (ok && i <= s->u.s.n && (count < 0 || done < count)) {
            ok = tb_put(&b, new_->u.s.s, new_->u.s.n);
            done++;
            if (i == s->u.s.n) {
                i++;
                break;
            }
            uint32_t cp;
            size_t l = cp_at(s->u.s.s, s->u.s.n, i, &cp);
            ok = ok && tb_put(&b, s->u.s.s + i, l);
            i += l;
            step(c, at);
        }
        if (ok && i < s->u.s.n) ok = tb_put(&b, s->u.s.s + i, s->u.s.n - i);
    } else {
        while (ok) {
            const char *f = (count < 0 || done < count)
                                ? str_find(s->u.s.s + i, s->u.s.n - i, old->u.s.s, old->u.s.n)
                                : NULL;
            if (!f) {
                ok = tb_put(&b, s->u.s.s + i, s->u.s.n - i);
                break;
            }
            size_t off = (size_t)(f - s->u.s.s);
            ok = tb_put(&b, s->u.s.s + i, off - i) && tb_put(&b, new_->u.s.s, new_->u.s.n);
            i = off + old->u.s.n;
            done++;
        }
    }
    if (!ok) rerr(c, at, REALM_E_LIMIT, "replace: result longer than the output limit");
    return v_strn(b.p ? b.p : "", b.n);
}

static struct tv str_split(struct rctx *c, const struct tpl_node *at, const struct tv *s,
                           const struct tv *sep, int64_t maxsplit) {
    struct tv l = v_list(c, at, 0);
    const char *p = s->u.s.s;
    size_t n = s->u.s.n, i = 0;
    if (!sep || sep->k == TV_NONE) {
        while (i < n) {
            uint32_t cp;
            size_t len;
            while (i < n && (len = cp_at(p, n, i, &cp), cp_space(cp)))
                i += len;
            if (i >= n) break;
            if (maxsplit >= 0 && (int64_t)l.u.l->n >= maxsplit) {
                struct tv rest =
                    str_strip(&(struct tv){.k = TV_STR, .u.s = {p + i, n - i}}, NULL, 2);
                list_push(c, at, l.u.l, rest);
                break;
            }
            size_t st = i;
            while (i < n && (len = cp_at(p, n, i, &cp), !cp_space(cp)))
                i += len;
            list_push(c, at, l.u.l, v_strn(p + st, i - st));
        }
        return l;
    }
    if (sep->k != TV_STR) rerr(c, at, REALM_E_FORMAT, "split: separator must be a string");
    if (sep->u.s.n == 0) rerr(c, at, REALM_E_FORMAT, "split: empty separator");
    for (;;) {
        const char *f = (maxsplit < 0 || (int64_t)l.u.l->n < maxsplit)
                            ? str_find(p + i, n - i, sep->u.s.s, sep->u.s.n)
                            : NULL;
        if (!f) {
            list_push(c, at, l.u.l, v_strn(p + i, n - i));
            return l;
        }
        size_t off = (size_t)(f - p);
        list_push(c, at, l.u.l, v_strn(p + i, off - i));
        i = off + sep->u.s.n;
        step(c, at);
    }
}

/* -------------------------------------------------------------- scope ---- */

static struct tv lookup(struct rctx *c, struct frame *f, const char *name) {
    for (; f; f = f->parent) {
        struct tv *v = dict_find_s(&f->vars, name);
        if (v) return *v;
    }
    struct tv *v = dict_find_s(&c->globals, name);
    if (v) return *v;
    struct tv fn = {.k = TV_FUNC};
    if (!strcmp(name, "range"))
        fn.u.func = TF_RANGE;
    else if (!strcmp(name, "namespace"))
        fn.u.func = TF_NAMESPACE;
    else if (!strcmp(name, "raise_exception"))
        fn.u.func = TF_RAISE;
    else if (!strcmp(name, "strftime_now"))
        fn.u.func = TF_STRFTIME;
    else if (!strcmp(name, "dict"))
        fn.u.func = TF_DICT;
    else
        return v_undef(name);
    return fn;
}

/* --------------------------------------------------------- evaluation ---- */

struct args {
    struct tv pos[8];
    size_t n_pos;
    const char *kw_names[8];
    struct tv kw[8];
    size_t n_kw;
};

static struct tv eval(struct rctx *c, struct frame *f, const struct tpl_node *n);
static int exec(struct rctx *c, struct frame *f, const struct tpl_node *n);

static void eval_args(struct rctx *c, struct frame *f, const struct tpl_node *n, struct args *a,
                      size_t skip) {
    memset(a, 0, sizeof *a);
    if (n->n_kids + skip > 8 || n->n_kw > 8) rerr(c, n, REALM_E_UNSUPPORTED, "too many arguments");
    for (size_t i = 0; i < n->n_kids; i++)
        a->pos[skip + i] = eval(c, f, n->kids[i]);
    a->n_pos = n->n_kids + skip;
    for (size_t i = 0; i < n->n_kw; i++) {
        a->kw_names[i] = n->kw_names[i];
        a->kw[i] = eval(c, f, n->kw_vals[i]);
    }
    a->n_kw = n->n_kw;
}

/* Argument i (positional) or name (keyword), else NULL. */
static const struct tv *arg(const struct args *a, size_t i, const char *name) {
    if (i < a->n_pos) return &a->pos[i];
    for (size_t k = 0; name && k < a->n_kw; k++)
        if (!strcmp(a->kw_names[k], name)) return &a->kw[k];
    return NULL;
}

static const struct tv *kwarg(const struct args *a, const char *name) {
    for (size_t k = 0; k < a->n_kw; k++)
        if (!strcmp(a->kw_names[k], name)) return &a->kw[k];
    return NULL;
}

static int64_t want_int(struct rctx *c, const struct tpl_node *at, const struct tv *v,
                        const char *what) {
    if (v->k == TV_INT) return v->u.i;
    if (v->k == TV_BOOL) return v->u.b;
    rerr(c, at, REALM_E_FORMAT, "%s: expected an integer, got %s", what, tv_type_name(v));
}
static const struct tv *want_str(struct rctx *c, const struct tpl_node *at, const struct tv *v,
                                 const char *what) {
    if (v->k != TV_STR)
        rerr(c, at, REALM_E_FORMAT, "%s: expected a string, got %s", what, tv_type_name(v));
    return v;
}

static struct tv method_value(struct rctx *c, const struct tpl_node *at, struct tv obj,
                              const char *name) {
    struct tv m = {.k = TV_METHOD};
    m.u.m.self = ralloc(c, at, sizeof *m.u.m.self);
    *m.u.m.self = obj;
    m.u.m.name = name;
    return m;
}

static bool is_str_method(const char *n) {
    static const char *const m[] = {
        "startswith", "endswith",   "split",   "rsplit",     "strip",   "lstrip",  "rstrip",
        "upper",      "lower",      "title",   "capitalize", "replace", "find",    "count",
        "join",       "splitlines", "isdigit", "isspace",    "isalpha", "isalnum", NULL};
    for (size_t i = 0; m[i]; i++)
        if (!strcmp(n, m[i])) return true;
    return false;
}
static bool is_dict_method(const char *n) {
    return !strcmp(n, "items") || !strcmp(n, "keys") || !strcmp(n, "values") || !strcmp(n, "get");
}

static _Noreturn void undefined_error(struct rctx *c, const struct tpl_node *at, const struct tv *u,
                                      const char *what) {
    if (u->u.s.s) rerr(c, at, REALM_E_FORMAT, "'%s' is undefined (%s)", u->u.s.s, what);
    rerr(c, at, REALM_E_FORMAT, "undefined value (%s)", what);
}

static struct tv get_attr(struct rctx *c, const struct tpl_node *at, struct tv obj,
                          const char *name) {
    switch (obj.k) {
    case TV_UNDEF:
        undefined_error(c, at, &obj, "attribute access");
    case TV_DICT: {
        struct tv *v = dict_find_s(obj.u.d, name);
        if (v) return *v;
        if (is_dict_method(name)) return method_value(c, at, obj, name);
        return v_undef(name);
    }
    case TV_NS: {
        struct tv *v = dict_find_s(obj.u.d, name);
        return v ? *v : v_undef(name);
    }
    case TV_STR:
        if (is_str_method(name)) return method_value(c, at, obj, name);
        return v_undef(name);
    default:
        return v_undef(name);
    }
}

static int64_t norm_index(int64_t i, size_t n) {
    return i < 0 ? i + (int64_t)n : i;
}

static struct tv get_item(struct rctx *c, const struct tpl_node *at, struct tv obj, struct tv key) {
    switch (obj.k) {
    case TV_UNDEF:
        undefined_error(c, at, &obj, "subscript");
    case TV_DICT:
    case TV_NS: {
        struct tv *v = dict_find(obj.u.d, &key);
        if (v) return *v;
        if (key.k == TV_STR && obj.k == TV_DICT && is_dict_method(key.u.s.s))
            return method_value(c, at, obj, key.u.s.s);
        return v_undef(NULL);
    }
    case TV_LIST:
        if (key.k == TV_INT || key.k == TV_BOOL) {
            int64_t i = norm_index(key.k == TV_INT ? key.u.i : key.u.b, obj.u.l->n);
            if (i < 0 || (uint64_t)i >= obj.u.l->n) return v_undef(NULL);
            return obj.u.l->v[i];
        }
        return v_undef(NULL);
    case TV_STR:
        if (key.k == TV_INT || key.k == TV_BOOL) {
            work(c, at, obj.u.s.n);
            size_t len = tv_utf8_len(obj.u.s.s, obj.u.s.n);
            int64_t i = norm_index(key.k == TV_INT ? key.u.i : key.u.b, len);
            if (i < 0 || (uint64_t)i >= len) return v_undef(NULL);
            size_t a = tv_utf8_off(obj.u.s.s, obj.u.s.n, (size_t)i);
            size_t b = tv_utf8_off(obj.u.s.s, obj.u.s.n, (size_t)i + 1);
            return v_strn(obj.u.s.s + a, b - a);
        }
        if (key.k == TV_STR) return get_attr(c, at, obj, key.u.s.s);
        return v_undef(NULL);
    default:
        return v_undef(NULL);
    }
}

/* Python slice semantics over n elements. */
static void slice_bounds(struct rctx *c, const struct tpl_node *at, const struct tv *sv, size_t n,
                         int64_t *start, int64_t *stop, int64_t *stepv) {
    int64_t st = 1;
    if (sv[2].k != TV_NONE) st = want_int(c, at, &sv[2], "slice step");
    if (st == 0) rerr(c, at, REALM_E_FORMAT, "slice step cannot be zero");
    int64_t len = (int64_t)n;
    int64_t a, b;
    if (sv[0].k == TV_NONE)
        a = st < 0 ? len - 1 : 0;
    else {
        a = want_int(c, at, &sv[0], "slice start");
        if (a < 0) a += len;
        if (a < 0) a = st < 0 ? -1 : 0;
        if (a >= len) a = st < 0 ? len - 1 : len;
    }
    if (sv[1].k == TV_NONE)
        b = st < 0 ? -1 : len;
    else {
        b = want_int(c, at, &sv[1], "slice stop");
        if (b < 0) b += len;
        if (b < 0) b = st < 0 ? -1 : 0;
        if (b >= len) b = st < 0 ? len - 1 : len;
    }
    *start = a;
    *stop = b;
    *stepv = st;
}

static struct tv eval_slice(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    struct tv obj = eval(c, f, n->a);
    struct tv sv[3];
    for (int i = 0; i < 3; i++)
        sv[i] = n->kids[i] ? eval(c, f, n->kids[i]) : v_none();
    int64_t a, b, st;
    if (obj.k == TV_LIST) {
        slice_bounds(c, n, sv, obj.u.l->n, &a, &b, &st);
        struct tv l = v_list(c, n, 0);
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            list_push(c, n, l.u.l, obj.u.l->v[i]);
        return l;
    }
    if (obj.k == TV_STR) {
        work(c, n, obj.u.s.n);
        /* code point offsets, computed once: slicing by code points stays linear */
        size_t len = tv_utf8_len(obj.u.s.s, obj.u.s.n);
        size_t *off = ralloc(c, n, (len + 1) * sizeof *off);
        size_t k = 0;
        for (size_t i = 0; i < obj.u.s.n; i++)
            if (((unsigned char)obj.u.s.s[i] & 0xC0) != 0x80) off[k++] = i;
        off[len] = obj.u.s.n;
        slice_bounds(c, n, sv, len, &a, &b, &st);
        if (st == 1) {
            if (b <= a) return v_strn("", 0);
            return v_strn(obj.u.s.s + off[a], off[b] - off[a]);
        }
        struct tpl_buf buf = {.max = c->max_output, .a = &c->arena};
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st) {
            if (!tb_put(&buf, obj.u.s.s + off[i], off[i + 1] - off[i])) oom(c, n);
            step(c, n);
        }
        return v_strn(buf.p ? buf.p : "", buf.n);
    }
    if (obj.k == TV_UNDEF) undefined_error(c, n, &obj, "slice");
    rerr(c, n, REALM_E_FORMAT, "cannot slice a %s", tv_type_name(&obj));
}

/* The items a for loop or filter iterates over: list items, dict keys, string characters. */
static struct tv_list *iter_list(struct rctx *c, const struct tpl_node *at, struct tv v) {
    switch (v.k) {
    case TV_LIST:
        return v.u.l;
    case TV_UNDEF:
        return v_list(c, at, 0).u.l;
    case TV_DICT: {
        struct tv l = v_list(c, at, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            list_push(c, at, l.u.l, v.u.d->keys[i]);
        return l.u.l;
    }
    case TV_STR: {
        struct tv l = v_list(c, at, 0);
        for (size_t i = 0; i < v.u.s.n;) {
            uint32_t cp;
            size_t len = cp_at(v.u.s.s, v.u.s.n, i, &cp);
            list_push(c, at, l.u.l, v_strn(v.u.s.s + i, len));
            i += len;
        }
        return l.u.l;
    }
    default:
        rerr(c, at, REALM_E_FORMAT, "'%s' value is not iterable", tv_type_name(&v));
    }
}

static bool contains(struct rctx *c, const struct tpl_node *at, struct tv needle, struct tv hay) {
    switch (hay.k) {
    case TV_STR:
        if (needle.k != TV_STR)
            rerr(c, at, REALM_E_FORMAT, "'in <string>' requires a string, got %s",
                 tv_type_name(&needle));
        work(c, at, hay.u.s.n);
        return str_find(hay.u.s.s, hay.u.s.n, needle.u.s.s, needle.u.s.n) != NULL;
    case TV_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (tv_equal(&needle, &hay.u.l->v[i])) return true;
        return false;
    case TV_DICT:
    case TV_NS:
        return dict_find(hay.u.d, &needle) != NULL;
    case TV_UNDEF:
        return false;
    default:
        rerr(c, at, REALM_E_FORMAT, "'in' needs a string, list or mapping, got %s",
             tv_type_name(&hay));
    }
}

static bool is_numv(const struct tv *v) {
    return v->k == TV_INT || v->k == TV_FLOAT || v->k == TV_BOOL;
}
static double as_f(const struct tv *v) {
    return v->k == TV_FLOAT  ? v->u.f
           : v->k == TV_INT  ? (double)v->u.i
           : v->k == TV_BOOL ? v->u.b
                             : 0;
}
static int64_t as_i(const struct tv *v) {
    return v->k == TV_INT ? v->u.i : v->k == TV_BOOL ? v->u.b : 0;
}

static int compare(struct rctx *c, const struct tpl_node *at, const struct tv *a,
                   const struct tv *b, const char *op) {
    if (is_numv(a) && is_numv(b)) {
        if (a->k != TV_FLOAT && b->k != TV_FLOAT) return as_i(a) < as_i(b) ? -1 : as_i(a) > as_i(b);
        double x = as_f(a), y = as_f(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a->k == TV_STR && b->k == TV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.s, b->u.s.s, n);
        if (r) return r < 0 ? -1 : 1;
        return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
    }
    if (a->k == TV_LIST && b->k == TV_LIST) {
        for (size_t i = 0; i < a->u.l->n && i < b->u.l->n; i++) {
            if (tv_equal(&a->u.l->v[i], &b->u.l->v[i])) continue;
            return compare(c, at, &a->u.l->v[i], &b->u.l->v[i], op);
        }
        return a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
    }
    if (a->k == TV_UNDEF) undefined_error(c, at, a, op);
    if (b->k == TV_UNDEF) undefined_error(c, at, b, op);
    rerr(c, at, REALM_E_FORMAT, "'%s' not supported between %s and %s", op, tv_type_name(a),
         tv_type_name(b));
}

static const char *op_name(int op) {
    static const char *const names[] = {"?",  "+",  "-", "*",  "/", "//", "%",  "**",    "~",
                                        "==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    return op >= 0 && op <= T_NOTIN ? names[op] : "?";
}

static struct tv repeat(struct rctx *c, const struct tpl_node *at, struct tv seq, int64_t times) {
    if (times < 0) times = 0;
    if (seq.k == TV_STR) {
        size_t total;
        if (realm_mul_size(seq.u.s.n, (size_t)times, &total) || total > c->max_output)
            rerr(c, at, REALM_E_LIMIT, "string repetition longer than the output limit");
        char *p = ralloc(c, at, total + 1);
        for (int64_t i = 0; i < times; i++)
            memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.s, seq.u.s.n);
        p[total] = 0;
        return v_strn(p, total);
    }
    size_t total;
    if (realm_mul_size(seq.u.l->n, (size_t)times, &total) || total > c->max_steps)
        rerr(c, at, REALM_E_LIMIT, "list repetition too large");
    struct tv l = v_list(c, at, total);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < seq.u.l->n; k++)
            list_push(c, at, l.u.l, seq.u.l->v[k]);
    return l;
}

static struct tv arith(struct rctx *c, const struct tpl_node *at, int op, struct tv a,
                       struct tv b) {
    if (op == T_TILDE) return concat(c, at, to_str(c, at, &a), to_str(c, at, &b));
    if (a.k == TV_UNDEF) undefined_error(c, at, &a, op_name(op));
    if (b.k == TV_UNDEF) undefined_error(c, at, &b, op_name(op));
    if (op == T_ADD) {
        if (a.k == TV_STR && b.k == TV_STR) return concat(c, at, a, b);
        if (a.k == TV_LIST && b.k == TV_LIST) {
            struct tv l = v_list(c, at, a.u.l->n + b.u.l->n);
            for (size_t i = 0; i < a.u.l->n; i++)
                list_push(c, at, l.u.l, a.u.l->v[i]);
            for (size_t i = 0; i < b.u.l->n; i++)
                list_push(c, at, l.u.l, b.u.l->v[i]);
            return l;
        }
    }
    if (op == T_MUL) {
        if ((a.k == TV_STR || a.k == TV_LIST) && (b.k == TV_INT || b.k == TV_BOOL))
            return repeat(c, at, a, as_i(&b));
        if ((b.k == TV_STR || b.k == TV_LIST) && (a.k == TV_INT || a.k == TV_BOOL))
            return repeat(c, at, b, as_i(&a));
    }
    if (!is_numv(&a) || !is_numv(&b))
        rerr(c, at, REALM_E_FORMAT, "unsupported operand types for %s: %s and %s", op_name(op),
             tv_type_name(&a), tv_type_name(&b));
    bool ints = a.k != TV_FLOAT && b.k != TV_FLOAT;
    int64_t x = as_i(&a), y = as_i(&b), r;
    double fx = as_f(&a), fy = as_f(&b);
    switch (op) {
    case T_ADD:
        if (!ints) return v_float(fx + fy);
        if (__builtin_add_overflow(x, y, &r)) rerr(c, at, REALM_E_RANGE, "integer overflow");
        return v_int(r);
    case T_SUB:
        if (!ints) return v_float(fx - fy);
        if (__builtin_sub_overflow(x, y, &r)) rerr(c, at, REALM_E_RANGE, "integer overflow");
        return v_int(r);
    case T_MUL:
        if (!ints) return v_float(fx * fy);
        if (__builtin_mul_overflow(x, y, &r)) rerr(c, at, REALM_E_RANGE, "integer overflow");
        return v_int(r);
    case T_DIV:
        if (fy == 0) rerr(c, at, REALM_E_FORMAT, "division by zero");
        return v_float(fx / fy);
    case T_FLOORDIV:
    case T_MOD:
        if (ints) {
            if (y == 0) rerr(c, at, REALM_E_FORMAT, "division by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == T_MOD) return v_int(0);
                rerr(c, at, REALM_E_RANGE, "integer overflow");
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return v_int(op == T_MOD ? m : q);
        }
        if (fy == 0) rerr(c, at, REALM_E_FORMAT, "division by zero");
        if (op == T_FLOORDIV) return v_float(floor(fx / fy));
        {
            double m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            return v_float(m);
        }
    case T_POW:
        if (ints && y >= 0) {
            int64_t acc = 1;
            for (int64_t i = 0; i < y; i++) {
                if (__builtin_mul_overflow(acc, x, &acc))
                    rerr(c, at, REALM_E_RANGE, "integer overflow");
                if (acc == 0 || acc == 1) break;
                if (i > 64 && (acc == -1)) {
                    acc = (y % 2) ? -1 : 1;
                    break;
                }
            }
            return v_int(acc);
        }
        return v_float(pow(fx, fy));
    }
    rerr(c, at, REALM_E_INTERNAL, "bad operator");
}

/* ------------------------------------------------------------- tests ---- */

static bool run_test(struct rctx *c, const struct tpl_node *at, const char *name, struct tv v,
                     const struct args *a) {
    const struct tv *x = arg(a, 1, NULL);
    if (!strcmp(name, "defined")) return v.k != TV_UNDEF;
    if (!strcmp(name, "undefined")) return v.k == TV_UNDEF;
    if (!strcmp(name, "none")) return v.k == TV_NONE;
    if (!strcmp(name, "string")) return v.k == TV_STR;
    if (!strcmp(name, "mapping")) return v.k == TV_DICT;
    if (!strcmp(name, "iterable"))
        return v.k == TV_STR || v.k == TV_LIST || v.k == TV_DICT || v.k == TV_UNDEF;
    if (!strcmp(name, "sequence")) return v.k == TV_STR || v.k == TV_LIST || v.k == TV_DICT;
    if (!strcmp(name, "number")) return is_numv(&v) && v.k != TV_BOOL ? true : v.k == TV_BOOL;
    if (!strcmp(name, "integer")) return v.k == TV_INT;
    if (!strcmp(name, "float")) return v.k == TV_FLOAT;
    if (!strcmp(name, "boolean")) return v.k == TV_BOOL;
    if (!strcmp(name, "true")) return v.k == TV_BOOL && v.u.b;
    if (!strcmp(name, "false")) return v.k == TV_BOOL && !v.u.b;
    if (!strcmp(name, "callable")) return v.k == TV_MACRO || v.k == TV_FUNC || v.k == TV_METHOD;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (v.k != TV_STR) return false;
        struct tv m = str_map_case(c, at, &v, name[0] == 'u');
        return tv_equal(&m, &v);
    }
    if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        int64_t i = want_int(c, at, &v, name);
        return ((i % 2) != 0) == (name[0] == 'o');
    }
    if (!x) rerr(c, at, REALM_E_FORMAT, "unknown test '%s' or missing argument", name);
    if (!strcmp(name, "divisibleby")) {
        int64_t d = want_int(c, at, x, name);
        if (d == 0) rerr(c, at, REALM_E_FORMAT, "divisibleby 0");
        return want_int(c, at, &v, name) % d == 0;
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "=="))
        return tv_equal(&v, x);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !tv_equal(&v, x);
    if (!strcmp(name, "sameas")) return tv_equal(&v, x) && v.k == x->k;
    if (!strcmp(name, "in")) return contains(c, at, v, *x);
    if (!strcmp(name, "lt") || !strcmp(name, "lessthan")) return compare(c, at, &v, x, "<") < 0;
    if (!strcmp(name, "le")) return compare(c, at, &v, x, "<=") <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, "greaterthan")) return compare(c, at, &v, x, ">") > 0;
    if (!strcmp(name, "ge")) return compare(c, at, &v, x, ">=") >= 0;
    rerr(c, at, REALM_E_FORMAT, "unknown test '%s'", name);
}

/* ----------------------------------------------------------- filters ---- */

static struct tv apply_filter(struct rctx *c, struct frame *f, const struct tpl_node *at,
                              const char *name, struct tv v, const struct args *a);

static struct tv attr_path(struct rctx *c, const struct tpl_node *at, struct tv v,
                           const struct tv *attr) {
    if (attr->k == TV_INT) return get_item(c, at, v, *attr);
    want_str(c, at, attr, "attribute");
    /* "a.b" walks nested attributes, as jinja2's make_attrgetter does */
    const char *s = attr->u.s.s, *e = s + attr->u.s.n;
    while (s <= e) {
        const char *dot = memchr(s, '.', (size_t)(e - s));
        if (!dot) dot = e;
        struct tv key = v_str_copy(c, at, s, (size_t)(dot - s));
        if (v.k == TV_UNDEF) return v;
        v = get_item(c, at, v, key);
        s = dot + 1;
    }
    return v;
}

static struct tv f_select(struct rctx *c, const struct tpl_node *at, struct tv v,
                          const struct args *a, bool by_attr, bool keep) {
    struct tv_list *in = iter_list(c, at, v);
    struct tv out = v_list(c, at, 0);
    size_t ti = by_attr ? 2 : 1;
    const struct tv *test = arg(a, ti, NULL);
    if (test && test->k != TV_STR)
        rerr(c, at, REALM_E_FORMAT, "select: test name must be a string");
    struct args ta = {0};
    for (size_t k = ti + 1; k < a->n_pos && ta.n_pos + 1 < 8; k++)
        ta.pos[++ta.n_pos] = a->pos[k];
    if (a->n_pos > ti + 1) ta.n_pos++;
    for (size_t i = 0; i < in->n; i++) {
        step(c, at);
        struct tv x =
            by_attr ? attr_path(c, at, in->v[i],
                                arg(a, 1, NULL) ? arg(a, 1, NULL) : &(struct tv){.k = TV_NONE})
                    : in->v[i];
        bool r = test ? run_test(c, at, test->u.s.s, x, &ta) : tv_truthy(&x);
        if (r == keep) list_push(c, at, out.u.l, in->v[i]);
    }
    return out;
}

static struct tv apply_filter(struct rctx *c, struct frame *f, const struct tpl_node *at,
                              const char *name, struct tv v, const struct args *a) {
    (void)f;
    const struct tv *a1 = arg(a, 1, NULL);
    if (v.k == TV_STR) work(c, at, v.u.s.n);
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct tv *bo = arg(a, 2, "boolean");
        bool use = v.k == TV_UNDEF || (bo && tv_truthy(bo) && !tv_truthy(&v));
        const struct tv *dv = arg(a, 1, "default_value");
        return use ? (dv ? *dv : v_strn("", 0)) : v;
    }
    if (!strcmp(name, "tojson")) {
        /* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None,
         * sort_keys=False) */
        const struct tv *asc = arg(a, 1, "ensure_ascii"), *ind = arg(a, 2, "indent");
        const struct tv *seps = arg(a, 3, "separators"), *sk = arg(a, 4, "sort_keys");
        if (asc && tv_truthy(asc))
            rerr(c, at, REALM_E_UNSUPPORTED, "tojson: ensure_ascii=True is not supported");
        int indent = -1;
        if (ind && ind->k != TV_NONE) {
            int64_t i = want_int(c, at, ind, "tojson indent");
            if (i < 0 || i > 64) rerr(c, at, REALM_E_FORMAT, "tojson: indent out of range");
            indent = (int)i;
        }
        const char *item_sep = indent >= 0 ? "," : ", ", *key_sep = ": ";
        if (seps && seps->k != TV_NONE) {
            if (seps->k != TV_LIST || seps->u.l->n != 2 || seps->u.l->v[0].k != TV_STR ||
                seps->u.l->v[1].k != TV_STR)
                rerr(c, at, REALM_E_FORMAT, "tojson: separators must be two strings");
            item_sep = v_str_copy(c, at, seps->u.l->v[0].u.s.s, seps->u.l->v[0].u.s.n).u.s.s;
            key_sep = v_str_copy(c, at, seps->u.l->v[1].u.s.s, seps->u.l->v[1].u.s.n).u.s.s;
        }
        struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
        if (!tv_json(&b, &v, indent, item_sep, key_sep, 0, sk && tv_truthy(sk)))
            rerr(c, at, REALM_E_FORMAT,
                 "tojson: value not serializable (%s), nested too deeply or too large",
                 tv_type_name(&v));
        return v_strn(b.p ? b.p : "", b.n);
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        switch (v.k) {
        case TV_STR:
            work(c, at, v.u.s.n);
            return v_int((int64_t)tv_utf8_len(v.u.s.s, v.u.s.n));
        case TV_LIST:
            return v_int((int64_t)v.u.l->n);
        case TV_DICT:
        case TV_NS:
            return v_int((int64_t)v.u.d->n);
        case TV_UNDEF:
            return v_int(0);
        default:
            rerr(c, at, REALM_E_FORMAT, "length: %s has no length", tv_type_name(&v));
        }
    }
    if (!strcmp(name, "string")) return to_str(c, at, &v);
    if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) {
        if (name[0] == 's') return v;
        struct tv s = to_str(c, at, &v);
        struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
        bool ok = true;
        for (size_t i = 0; ok && i < s.u.s.n; i++) {
            char ch = s.u.s.s[i];
            const char *e = ch == '&'    ? "&amp;"
                            : ch == '<'  ? "&lt;"
                            : ch == '>'  ? "&gt;"
                            : ch == '"'  ? "&#34;"
                            : ch == '\'' ? "&#39;"
                                         : NULL;
            ok = e ? tb_put(&b, e, strlen(e)) : tb_putc(&b, ch);
        }
        if (!ok) oom(c, at);
        return v_strn(b.p ? b.p : "", b.n);
    }
    if (!strcmp(name, "trim")) {
        struct tv s = to_str(c, at, &v);
        return str_strip(&s, a1, 3);
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") ||
        !strcmp(name, "title")) {
        struct tv s = to_str(c, at, &v);
        int mode = name[0] == 'l' ? 0 : name[0] == 'u' ? 1 : name[0] == 'c' ? 2 : 4;
        return str_map_case(c, at, &s, mode);
    }
    if (!strcmp(name, "replace")) {
        const struct tv *old = arg(a, 1, "old"), *nw = arg(a, 2, "new"), *cnt = arg(a, 3, "count");
        if (!old || !nw) rerr(c, at, REALM_E_FORMAT, "replace: needs two arguments");
        struct tv s = to_str(c, at, &v);
        struct tv o = to_str(c, at, old), n2 = to_str(c, at, nw);
        return str_replace(c, at, &s, &o, &n2,
                           cnt && cnt->k != TV_NONE ? want_int(c, at, cnt, "replace count") : -1);
    }
    if (!strcmp(name, "join")) {
        const struct tv *sep = arg(a, 1, "d"), *attr = arg(a, 2, "attribute");
        struct tv_list *l = iter_list(c, at, v);
        struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
        struct tv sp = sep ? to_str(c, at, sep) : v_strn("", 0);
        for (size_t i = 0; i < l->n; i++) {
            struct tv x = attr ? attr_path(c, at, l->v[i], attr) : l->v[i];
            struct tv s = to_str(c, at, &x);
            if ((i && !tb_put(&b, sp.u.s.s, sp.u.s.n)) || !tb_put(&b, s.u.s.s, s.u.s.n))
                rerr(c, at, REALM_E_LIMIT, "join: result longer than the output limit");
        }
        return v_strn(b.p ? b.p : "", b.n);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (v.k == TV_STR) {
            if (!v.u.s.n) return v_undef(NULL);
            size_t len = tv_utf8_len(v.u.s.s, v.u.s.n);
            return get_item(c, at, v, v_int(name[0] == 'f' ? 0 : (int64_t)len - 1));
        }
        struct tv_list *l = iter_list(c, at, v);
        if (!l->n) return v_undef(NULL);
        return l->v[name[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(name, "items") || !strcmp(name, "dictsort")) {
        if (v.k == TV_UNDEF) return v_list(c, at, 0);
        if (v.k != TV_DICT)
            rerr(c, at, REALM_E_FORMAT, "%s: expected a mapping, got %s", name, tv_type_name(&v));
        struct tv l = v_list(c, at, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) {
            struct tv p = v_list(c, at, 2);
            p.u.l->tuple = true;
            list_push(c, at, p.u.l, v.u.d->keys[i]);
            list_push(c, at, p.u.l, v.u.d->vals[i]);
            list_push(c, at, l.u.l, p);
        }
        if (name[0] == 'd') /* by key; case-insensitive like jinja2's default */
            for (size_t i = 1; i < l.u.l->n; i++)
                for (size_t j = i; j > 0; j--) {
                    struct tv ka = l.u.l->v[j - 1].u.l->v[0], kb = l.u.l->v[j].u.l->v[0];
                    if (ka.k == TV_STR) ka = str_map_case(c, at, &ka, 0);
                    if (kb.k == TV_STR) kb = str_map_case(c, at, &kb, 0);
                    if (compare(c, at, &ka, &kb, "<") <= 0) break;
                    struct tv t = l.u.l->v[j];
                    l.u.l->v[j] = l.u.l->v[j - 1];
                    l.u.l->v[j - 1] = t;
                }
        return l;
    }
    if (!strcmp(name, "selectattr")) return f_select(c, at, v, a, true, true);
    if (!strcmp(name, "rejectattr")) return f_select(c, at, v, a, true, false);
    if (!strcmp(name, "select")) return f_select(c, at, v, a, false, true);
    if (!strcmp(name, "reject")) return f_select(c, at, v, a, false, false);
    if (!strcmp(name, "map")) {
        struct tv_list *in = iter_list(c, at, v);
        struct tv out = v_list(c, at, in->n);
        const struct tv *attr = kwarg(a, "attribute"), *dflt = kwarg(a, "default");
        if (!attr && !a1) rerr(c, at, REALM_E_FORMAT, "map: needs a filter name or attribute=");
        if (!attr) want_str(c, at, a1, "map filter");
        struct args fa = {0};
        for (size_t k = 2; k < a->n_pos; k++)
            fa.pos[fa.n_pos = k - 1] = a->pos[k];
        if (a->n_pos > 2) fa.n_pos = a->n_pos - 1;
        for (size_t i = 0; i < in->n; i++) {
            step(c, at);
            struct tv x;
            if (attr) {
                x = attr_path(c, at, in->v[i], attr);
                if (x.k == TV_UNDEF && dflt) x = *dflt;
            } else {
                x = apply_filter(c, f, at, a1->u.s.s, in->v[i], &fa);
            }
            list_push(c, at, out.u.l, x);
        }
        return out;
    }
    if (!strcmp(name, "list")) {
        struct tv_list *in = iter_list(c, at, v);
        struct tv out = v_list(c, at, in->n);
        for (size_t i = 0; i < in->n; i++)
            list_push(c, at, out.u.l, in->v[i]);
        return out;
    }
    if (!strcmp(name, "reverse")) {
        if (v.k == TV_STR) {
            struct tv_list *in = iter_list(c, at, v);
            struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
            for (size_t i = in->n; i > 0; i--)
                if (!tb_put(&b, in->v[i - 1].u.s.s, in->v[i - 1].u.s.n)) oom(c, at);
            return v_strn(b.p ? b.p : "", b.n);
        }
        struct tv_list *in = iter_list(c, at, v);
        struct tv out = v_list(c, at, in->n);
        for (size_t i = in->n; i > 0; i--)
            list_push(c, at, out.u.l, in->v[i - 1]);
        return out;
    }
    if (!strcmp(name, "unique")) {
        struct tv_list *in = iter_list(c, at, v);
        struct tv out = v_list(c, at, 0);
        for (size_t i = 0; i < in->n; i++) {
            step(c, at);
            if (!contains(c, at, in->v[i], out)) list_push(c, at, out.u.l, in->v[i]);
        }
        return out;
    }
    if (!strcmp(name, "sort")) {
        const struct tv *rev = arg(a, 1, "reverse"), *attr = arg(a, 3, "attribute");
        struct tv_list *in = iter_list(c, at, v);
        struct tv out = v_list(c, at, in->n);
        for (size_t i = 0; i < in->n; i++)
            list_push(c, at, out.u.l, in->v[i]);
        bool r = rev && tv_truthy(rev);
        struct tv_list *l = out.u.l;
        for (size_t i = 1; i < l->n; i++) {
            for (size_t j = i; j > 0; j--) {
                step(c, at);
                struct tv ka = attr ? attr_path(c, at, l->v[j - 1], attr) : l->v[j - 1];
                struct tv kb = attr ? attr_path(c, at, l->v[j], attr) : l->v[j];
                if (ka.k == TV_STR) ka = str_map_case(c, at, &ka, 0);
                if (kb.k == TV_STR) kb = str_map_case(c, at, &kb, 0);
                int cmp = compare(c, at, &ka, &kb, "<");
                if (r ? cmp >= 0 : cmp <= 0) break;
                struct tv t = l->v[j];
                l->v[j] = l->v[j - 1];
                l->v[j - 1] = t;
            }
        }
        return out;
    }
    if (!strcmp(name, "sum")) {
        const struct tv *attr = arg(a, 1, "attribute"), *start = arg(a, 2, "start");
        struct tv_list *in = iter_list(c, at, v);
        struct tv acc = start ? *start : v_int(0);
        for (size_t i = 0; i < in->n; i++) {
            step(c, at);
            acc = arith(c, at, T_ADD, acc,
                        attr && attr->k != TV_NONE ? attr_path(c, at, in->v[i], attr) : in->v[i]);
        }
        return acc;
    }
    if (!strcmp(name, "min") || !strcmp(name, "max")) {
        const struct tv *cs = arg(a, 1, "case_sensitive"), *attr = arg(a, 2, "attribute");
        struct tv_list *in = iter_list(c, at, v);
        if (!in->n) return v_undef(NULL);
        size_t best = 0;
        struct tv bk = {0};
        for (size_t i = 0; i < in->n; i++) {
            step(c, at);
            struct tv k = attr && attr->k != TV_NONE ? attr_path(c, at, in->v[i], attr) : in->v[i];
            if (k.k == TV_STR && !(cs && tv_truthy(cs))) k = str_map_case(c, at, &k, 0);
            int cmp = i ? compare(c, at, &k, &bk, "<") : 0;
            if (!i || (name[1] == 'i' ? cmp < 0 : cmp > 0)) {
                best = i;
                bk = k;
            }
        }
        return in->v[best];
    }
    if (!strcmp(name, "int")) {
        const struct tv *dv = arg(a, 1, "default");
        struct tv d = dv ? *dv : v_int(0);
        if (v.k == TV_INT) return v;
        if (v.k == TV_BOOL) return v_int(v.u.b);
        if (v.k == TV_FLOAT)
            return isfinite(v.u.f) && fabs(v.u.f) < 9.2e18 ? v_int((int64_t)v.u.f) : d;
        if (v.k == TV_STR) {
            struct tv s = str_strip(&v, NULL, 3);
            char buf[64];
            if (!s.u.s.n || s.u.s.n >= sizeof buf || memchr(s.u.s.s, 'x', s.u.s.n) ||
                memchr(s.u.s.s, 'X', s.u.s.n))
                return d; /* int(s, 10) then float(s): no hexadecimal */
            memcpy(buf, s.u.s.s, s.u.s.n);
            buf[s.u.s.n] = 0;
            char *end;
            long long i = strtoll(buf, &end, 10);
            if (!*end) return v_int(i);
            double x = strtod(buf, &end);
            if (!*end && isfinite(x) && fabs(x) < 9.2e18) return v_int((int64_t)x);
            return d;
        }
        return d;
    }
    if (!strcmp(name, "float")) {
        if (v.k == TV_FLOAT) return v;
        if (v.k == TV_INT || v.k == TV_BOOL) return v_float((double)as_i(&v));
        if (v.k == TV_STR) {
            char buf[64];
            struct tv s = str_strip(&v, NULL, 3);
            if (s.u.s.n && s.u.s.n < sizeof buf) {
                memcpy(buf, s.u.s.s, s.u.s.n);
                buf[s.u.s.n] = 0;
                char *end;
                double x = strtod(buf, &end);
                if (!*end) return v_float(x);
            }
        }
        const struct tv *dv = arg(a, 1, "default");
        return dv ? *dv : v_float(0);
    }
    if (!strcmp(name, "abs")) {
        if (v.k == TV_FLOAT) return v_float(fabs(v.u.f));
        int64_t i = want_int(c, at, &v, "abs");
        if (i == INT64_MIN) rerr(c, at, REALM_E_RANGE, "integer overflow");
        return v_int(i < 0 ? -i : i);
    }
    if (!strcmp(name, "round")) {
        const struct tv *pr = arg(a, 1, "precision");
        int64_t p = pr ? want_int(c, at, pr, "round precision") : 0;
        if (p < 0 || p > 15) rerr(c, at, REALM_E_FORMAT, "round: precision out of range");
        if (!is_numv(&v))
            rerr(c, at, REALM_E_FORMAT, "round: expected a number, got %s", tv_type_name(&v));
        double m = pow(10, (double)p);
        return v_float(nearbyint(as_f(&v) * m) / m); /* half to even, as Python round() */
    }
    if (!strcmp(name, "indent")) {
        const struct tv *w = arg(a, 1, "width"), *first = arg(a, 2, "first"),
                        *blank = arg(a, 3, "blank");
        struct tv pad = w && w->k == TV_STR ? *w : v_strn("    ", w ? (size_t)0 : 4);
        if (w && w->k != TV_STR) {
            int64_t n = want_int(c, at, w, "indent width");
            if (n < 0 || n > 256) rerr(c, at, REALM_E_FORMAT, "indent: width out of range");
            char *p = ralloc(c, at, (size_t)n + 1);
            memset(p, ' ', (size_t)n);
            pad = v_strn(p, (size_t)n);
        }
        struct tv s = to_str(c, at, &v);
        struct tpl_buf b = {.max = c->max_output, .a = &c->arena};
        bool ok = true, line_start = true, is_first = true;
        for (size_t i = 0; ok && i < s.u.s.n; i++) {
            if (line_start) {
                bool empty = s.u.s.s[i] == '\n';
                if ((!is_first || (first && tv_truthy(first))) &&
                    (!empty || (blank && tv_truthy(blank))))
                    ok = tb_put(&b, pad.u.s.s, pad.u.s.n);
                is_first = false;
            }
            ok = ok && tb_putc(&b, s.u.s.s[i]);
            line_start = s.u.s.s[i] == '\n';
        }
        if (!ok) rerr(c, at, REALM_E_LIMIT, "indent: result longer than the output limit");
        return v_strn(b.p ? b.p : "", b.n);
    }
    rerr(c, at, REALM_E_FORMAT, "unknown filter '%s'", name);
}

/* ------------------------------------------------------------ methods ---- */

static struct tv call_method(struct rctx *c, const struct tpl_node *at, struct tv self,
                             const char *name, const struct args *a) {
    const struct tv *a0 = arg(a, 0, NULL), *a1 = arg(a, 1, NULL);
    if (self.k == TV_DICT) {
        if (!strcmp(name, "cycle")) { /* loop.cycle(a, b, ...) */
            if (!a->n_pos) rerr(c, at, REALM_E_FORMAT, "loop.cycle: needs at least one value");
            const struct tv *i0 = dict_find_s(self.u.d, "index0");
            return a->pos[(size_t)(i0 ? as_i(i0) : 0) % a->n_pos];
        }
        if (!strcmp(name, "get")) {
            if (!a0) rerr(c, at, REALM_E_FORMAT, "get: needs a key");
            struct tv *v = dict_find(self.u.d, a0);
            return v ? *v : a1 ? *a1 : v_none();
        }
        if (!strcmp(name, "items"))
            return apply_filter(c, NULL, at, "items", self, &(struct args){0});
        struct tv l = v_list(c, at, self.u.d->n);
        for (size_t i = 0; i < self.u.d->n; i++)
            list_push(c, at, l.u.l, name[0] == 'k' ? self.u.d->keys[i] : self.u.d->vals[i]);
        return l;
    }
    /* string methods */
    work(c, at, self.u.s.n);
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (!a0) rerr(c, at, REALM_E_FORMAT, "%s: needs an argument", name);
        bool starts = name[0] == 's';
        if (a0->k == TV_LIST) {
            for (size_t i = 0; i < a0->u.l->n; i++) {
                const struct tv *p = want_str(c, at, &a0->u.l->v[i], name);
                if (starts ? str_starts(&self, p) : str_ends(&self, p)) return v_bool(true);
            }
            return v_bool(false);
        }
        want_str(c, at, a0, name);
        return v_bool(starts ? str_starts(&self, a0) : str_ends(&self, a0));
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        const struct tv *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
        int64_t m = mx ? want_int(c, at, mx, "maxsplit") : -1;
        if (name[0] == 'r' && m >= 0)
            rerr(c, at, REALM_E_UNSUPPORTED, "rsplit with maxsplit is not supported");
        return str_split(c, at, &self, sep, m);
    }
    if (!strcmp(name, "splitlines")) {
        struct tv l = v_list(c, at, 0);
        size_t i = 0, n = self.u.s.n;
        while (i < n) {
            size_t st = i;
            while (i < n && self.u.s.s[i] != '\n' && self.u.s.s[i] != '\r')
                i++;
            list_push(c, at, l.u.l, v_strn(self.u.s.s + st, i - st));
            if (i < n && self.u.s.s[i] == '\r' && i + 1 < n && self.u.s.s[i + 1] == '\n') i++;
            if (i < n) i++;
        }
        return l;
    }
    if (!strcmp(name, "strip")) return str_strip(&self, a0, 3);
    if (!strcmp(name, "lstrip")) return str_strip(&self, a0, 1);
    if (!strcmp(name, "rstrip")) return str_strip(&self, a0, 2);
    if (!strcmp(name, "upper")) return str_map_case(c, at, &self, 1);
    if (!strcmp(name, "lower")) return str_map_case(c, at, &self, 0);
    if (!strcmp(name, "capitalize")) return str_map_case(c, at, &self, 2);
    if (!strcmp(name, "title")) return str_map_case(c, at, &self, 3);
    if (!strcmp(name, "replace")) {
        if (!a0 || !a1) rerr(c, at, REALM_E_FORMAT, "replace: needs two arguments");
        const struct tv *cnt = arg(a, 2, "count");
        return str_replace(c, at, &self, want_str(c, at, a0, name), want_str(c, at, a1, name),
                           cnt ? want_int(c, at, cnt, "count") : -1);
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        if (!a0) rerr(c, at, REALM_E_FORMAT, "%s: needs an argument", name);
        want_str(c, at, a0, name);
        if (name[0] == 'f') {
            const char *p = str_find(self.u.s.s, self.u.s.n, a0->u.s.s, a0->u.s.n);
            return v_int(p ? (int64_t)tv_utf8_len(self.u.s.s, (size_t)(p - self.u.s.s)) : -1);
        }
        if (!a0->u.s.n) return v_int((int64_t)tv_utf8_len(self.u.s.s, self.u.s.n) + 1);
        int64_t k = 0;
        for (size_t i = 0; i < self.u.s.n;) {
            const char *p = str_find(self.u.s.s + i, self.u.s.n - i, a0->u.s.s, a0->u.s.n);
            if (!p) break;
            k++;
            i = (size_t)(p - self.u.s.s) + a0->u.s.n;
        }
        return v_int(k);
    }
    if (!strcmp(name, "join")) {
        if (!a0) rerr(c, at, REALM_E_FORMAT, "join: needs an argument");
        struct args ja = {.n_pos = 2};
        ja.pos[1] = self;
        struct tv_list *l = iter_list(c, at, *a0);
        for (size_t i = 0; i < l->n; i++)
            want_str(c, at, &l->v[i], "join");
        return apply_filter(c, NULL, at, "join", *a0, &ja);
    }
    if (!strncmp(name, "is", 2)) {
        bool all = self.u.s.n > 0;
        for (size_t i = 0; i < self.u.s.n; i++) {
            char ch = self.u.s.s[i];
            bool d = ch >= '0' && ch <= '9',
                 al = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
            bool ok = !strcmp(name, "isdigit")   ? d
                      : !strcmp(name, "isalpha") ? al
                      : !strcmp(name, "isalnum") ? d || al
                                                 : is_ws_char(ch);
            if (!ok) all = false;
        }
        return v_bool(all);
    }
    rerr(c, at, REALM_E_FORMAT, "unknown method '%s'", name);
}

/* ----------------------------------------------------------- functions ---- */

static bool has_namespace(const struct tv *v, int depth) {
    if (depth > TV_MAX_NEST || v->k == TV_NS) return true;
    if (v->k == TV_LIST)
        for (size_t i = 0; i < v->u.l->n; i++)
            if (has_namespace(&v->u.l->v[i], depth + 1)) return true;
    if (v->k == TV_DICT)
        for (size_t i = 0; i < v->u.d->n; i++)
            if (has_namespace(&v->u.d->vals[i], depth + 1)) return true;
    return false;
}

static struct tv call_func(struct rctx *c, const struct tpl_node *at, int fn,
                           const struct args *a) {
    switch (fn) {
    case TF_RANGE: {
        int64_t start = 0, stop, st = 1;
        if (a->n_pos == 1)
            stop = want_int(c, at, &a->pos[0], "range");
        else if (a->n_pos == 2 || a->n_pos == 3) {
            start = want_int(c, at, &a->pos[0], "range");
            stop = want_int(c, at, &a->pos[1], "range");
            if (a->n_pos == 3) st = want_int(c, at, &a->pos[2], "range");
        } else {
            rerr(c, at, REALM_E_FORMAT, "range: expected 1 to 3 arguments");
        }
        if (st == 0) rerr(c, at, REALM_E_FORMAT, "range: step cannot be zero");
        struct tv l = v_list(c, at, 0);
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) {
            step(c, at);
            list_push(c, at, l.u.l, v_int(i));
            if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
        }
        return l;
    }
    case TF_NAMESPACE:
    case TF_DICT: {
        struct tv d = v_dict(c, at);
        if (a->n_pos > 1) rerr(c, at, REALM_E_FORMAT, "namespace: at most one positional argument");
        if (a->n_pos == 1) {
            if (a->pos[0].k != TV_DICT)
                rerr(c, at, REALM_E_FORMAT, "namespace: the argument must be a mapping");
            for (size_t i = 0; i < a->pos[0].u.d->n; i++)
                dict_set(c, at, d.u.d, a->pos[0].u.d->keys[i], a->pos[0].u.d->vals[i]);
        }
        for (size_t i = 0; i < a->n_kw; i++) {
            if (fn == TF_NAMESPACE && has_namespace(&a->kw[i], 0))
                rerr(c, at, REALM_E_UNSUPPORTED, "a namespace cannot hold a namespace");
            dict_set_s(c, at, d.u.d, a->kw_names[i], a->kw[i]);
        }
        if (fn == TF_NAMESPACE) d.k = TV_NS;
        return d;
    }
    case TF_RAISE: {
        struct tv m = a->n_pos ? to_str(c, at, &a->pos[0]) : v_strn("", 0);
        rerr(c, at, REALM_E_FORMAT, "raise_exception: %.*s", (int)(m.u.s.n > 180 ? 180 : m.u.s.n),
             m.u.s.s);
    }
    case TF_STRFTIME: {
        if (a->n_pos != 1) rerr(c, at, REALM_E_FORMAT, "strftime_now: expected a format string");
        struct tv fmt = *want_str(c, at, &a->pos[0], "strftime_now");
        if (fmt.u.s.n > 200) rerr(c, at, REALM_E_LIMIT, "strftime_now: format too long");
        char f[256], out[1024];
        memcpy(f, fmt.u.s.s, fmt.u.s.n);
        f[fmt.u.s.n] = 0;
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        size_t n = f[0] ? strftime(out, sizeof out, f, &tmv) : 0; /* the template's own format */
#pragma GCC diagnostic pop
        return v_str_copy(c, at, out, n);
    }
    }
    rerr(c, at, REALM_E_INTERNAL, "bad function");
}

static struct tv call_macro(struct rctx *c, const struct tpl_node *at, struct tv m,
                            const struct args *a) {
    const struct tpl_node *mn = m.u.mac.n;
    if (++c->depth > c->max_depth)
        rerr(c, at, REALM_E_LIMIT, "recursion depth limit of %u exceeded", c->max_depth);
    step(c, at);
    if (a->n_pos > mn->n_kids)
        rerr(c, at, REALM_E_FORMAT, "macro '%s' takes %zu argument(s), got %zu", mn->name,
             mn->n_kids, a->n_pos);
    struct frame *fr = ralloc(c, at, sizeof *fr);
    memset(fr, 0, sizeof *fr);
    fr->parent = m.u.mac.env;
    for (size_t i = 0; i < a->n_kw; i++) {
        size_t k = 0;
        while (k < mn->n_kids && strcmp(mn->kids[k]->name, a->kw_names[i]))
            k++;
        if (k == mn->n_kids)
            rerr(c, at, REALM_E_FORMAT, "macro '%s' has no argument '%s'", mn->name,
                 a->kw_names[i]);
    }
    for (size_t i = 0; i < mn->n_kids; i++) {
        const struct tv *v = arg(a, i, mn->kids[i]->name);
        struct tv val = v                ? *v
                        : mn->kids[i]->a ? eval(c, fr, mn->kids[i]->a)
                                         : v_undef(mn->kids[i]->name);
        dict_set_s(c, at, &fr->vars, mn->kids[i]->name, val);
    }
    struct tpl_buf buf = {.max = c->max_output, .a = &c->arena};
    struct tpl_buf *saved = c->out;
    c->out = &buf;
    exec(c, fr, mn->a);
    c->out = saved;
    c->depth--;
    return v_strn(buf.p ? buf.p : "", buf.n);
}

static __attribute__((noinline)) struct tv eval_call(struct rctx *c, struct frame *f,
                                                     const struct tpl_node *n) {
    struct args a;
    if (n->a->k == N_ATTR) {
        struct tv obj = eval(c, f, n->a->a);
        struct tv m = get_attr(c, n, obj, n->a->name);
        if (m.k == TV_METHOD) {
            eval_args(c, f, n, &a, 0);
            return call_method(c, n, *m.u.m.self, m.u.m.name, &a);
        }
        if (m.k == TV_UNDEF)
            rerr(c, n, REALM_E_FORMAT, "%s has no method '%s'", tv_type_name(&obj), n->a->name);
        eval_args(c, f, n, &a, 0);
        if (m.k == TV_MACRO) return call_macro(c, n, m, &a);
        rerr(c, n, REALM_E_FORMAT, "'%s' is not callable", n->a->name);
    }
    struct tv callee = eval(c, f, n->a);
    eval_args(c, f, n, &a, 0);
    switch (callee.k) {
    case TV_MACRO:
        return call_macro(c, n, callee, &a);
    case TV_FUNC:
        return call_func(c, n, callee.u.func, &a);
    case TV_METHOD:
        return call_method(c, n, *callee.u.m.self, callee.u.m.name, &a);
    case TV_UNDEF:
        undefined_error(c, n, &callee, "call");
    default:
        rerr(c, n, REALM_E_FORMAT, "%s is not callable", tv_type_name(&callee));
    }
}

/* Out of line so that eval_node's stack frame stays small. */
static __attribute__((noinline)) struct tv eval_filter_or_test(struct rctx *c, struct frame *f,
                                                               const struct tpl_node *n) {
    struct args args;
    eval_args(c, f, n, &args, 1);
    args.pos[0] = eval(c, f, n->a);
    if (n->k == N_FILTER) return apply_filter(c, f, n, n->name, args.pos[0], &args);
    bool r = run_test(c, n, n->name, args.pos[0], &args);
    return v_bool(n->op ? !r : r);
}

static struct tv eval_node(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    struct tv a, b;
    switch (n->k) {
    case N_LIT:
        return n->lit;
    case N_NAME:
        return lookup(c, f, n->name);
    case N_LIST:
    case N_TUPLE: {
        struct tv l = v_list(c, n, n->n_kids);
        l.u.l->tuple = n->k == N_TUPLE;
        for (size_t i = 0; i < n->n_kids; i++)
            list_push(c, n, l.u.l, eval(c, f, n->kids[i]));
        return l;
    }
    case N_DICT: {
        struct tv d = v_dict(c, n);
        for (size_t i = 0; i + 1 < n->n_kids; i += 2) {
            struct tv k = eval(c, f, n->kids[i]);
            dict_set(c, n, d.u.d, k, eval(c, f, n->kids[i + 1]));
        }
        return d;
    }
    case N_ATTR:
        return get_attr(c, n, eval(c, f, n->a), n->name);
    case N_ITEM:
        a = eval(c, f, n->a);
        return get_item(c, n, a, eval(c, f, n->b));
    case N_SLICE:
        return eval_slice(c, f, n);
    case N_CALL:
        return eval_call(c, f, n);
    case N_FILTER:
    case N_TEST:
        return eval_filter_or_test(c, f, n);
    case N_UNARY:
        a = eval(c, f, n->a);
        if (n->op == T_ADD) {
            if (!is_numv(&a))
                rerr(c, n, REALM_E_FORMAT, "bad operand for unary +: %s", tv_type_name(&a));
            return a;
        }
        if (a.k == TV_FLOAT) return v_float(-a.u.f);
        if (a.k == TV_INT || a.k == TV_BOOL) {
            if (as_i(&a) == INT64_MIN) rerr(c, n, REALM_E_RANGE, "integer overflow");
            return v_int(-as_i(&a));
        }
        rerr(c, n, REALM_E_FORMAT, "bad operand for unary -: %s", tv_type_name(&a));
    case N_BIN:
        a = eval(c, f, n->a);
        b = eval(c, f, n->b);
        switch (n->op) {
        case T_EQ:
            return v_bool(tv_equal(&a, &b));
        case T_NE:
            return v_bool(!tv_equal(&a, &b));
        case T_LT:
            return v_bool(compare(c, n, &a, &b, "<") < 0);
        case T_LE:
            return v_bool(compare(c, n, &a, &b, "<=") <= 0);
        case T_GT:
            return v_bool(compare(c, n, &a, &b, ">") > 0);
        case T_GE:
            return v_bool(compare(c, n, &a, &b, ">=") >= 0);
        case T_IN:
            return v_bool(contains(c, n, a, b));
        case T_NOTIN:
            return v_bool(!contains(c, n, a, b));
        default:
            return arith(c, n, n->op, a, b);
        }
    case N_AND:
        a = eval(c, f, n->a);
        return tv_truthy(&a) ? eval(c, f, n->b) : a;
    case N_OR:
        a = eval(c, f, n->a);
        return tv_truthy(&a) ? a : eval(c, f, n->b);
    case N_NOT:
        a = eval(c, f, n->a);
        return v_bool(!tv_truthy(&a));
    case N_COND:
        a = eval(c, f, n->a);
        if (tv_truthy(&a)) return eval(c, f, n->b);
        return n->c ? eval(c, f, n->c) : v_undef(NULL);
    default:
        break;
    }
    rerr(c, n, REALM_E_INTERNAL, "not an expression");
}

/* ---------------------------------------------------------- statements ---- */

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static void emit(struct rctx *c, const struct tpl_node *at, const char *s, size_t n) {
    step(c, at);
    if (!tb_put(c->out, s, n)) {
        if (c->out->n + n > c->out->max)
            rerr(c, at, REALM_E_LIMIT, "output limit of %zu bytes exceeded", c->out->max);
        oom(c, at);
    }
}

static void assign_targets(struct rctx *c, const struct tpl_node *at, struct frame *f,
                           const char **names, size_t n, struct tv v) {
    if (n == 1) {
        dict_set_s(c, at, &f->vars, names[0], v);
        return;
    }
    if (v.k != TV_LIST && v.k != TV_STR && v.k != TV_DICT)
        rerr(c, at, REALM_E_FORMAT, "cannot unpack a %s into %zu names", tv_type_name(&v), n);
    struct tv_list *l = iter_list(c, at, v);
    if (l->n != n) rerr(c, at, REALM_E_FORMAT, "cannot unpack %zu values into %zu names", l->n, n);
    for (size_t i = 0; i < n; i++)
        dict_set_s(c, at, &f->vars, names[i], l->v[i]);
}

static void exec_for(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    struct tv seq = eval(c, f, n->a);
    struct tv_list *items = iter_list(c, n, seq);
    struct frame *fr = ralloc(c, n, sizeof *fr);
    memset(fr, 0, sizeof *fr);
    fr->parent = f;
    if (n->n_kw) { /* {% for x in xs if cond %}: filtered first, so loop.length counts the kept
                      items */
        struct tv kept = v_list(c, n, 0);
        for (size_t i = 0; i < items->n; i++) {
            step(c, n);
            assign_targets(c, n, fr, n->targets, n->n_targets, items->v[i]);
            struct tv ok = eval(c, fr, n->kw_vals[0]);
            if (tv_truthy(&ok)) list_push(c, n, kept.u.l, items->v[i]);
        }
        items = kept.u.l;
    }
    if (!items->n) {
        if (n->c) exec(c, f, n->c);
        return;
    }
    size_t len = items->n;
    for (size_t i = 0; i < len; i++) {
        step(c, n);
        /* a fresh scope per iteration: jinja2 forgets names set in the previous iteration */
        fr = ralloc(c, n, sizeof *fr);
        memset(fr, 0, sizeof *fr);
        fr->parent = f;
        struct tv loop = v_dict(c, n);
        struct tv_dict *d = loop.u.d;
        dict_set_s(c, n, d, "index", v_int((int64_t)i + 1));
        dict_set_s(c, n, d, "index0", v_int((int64_t)i));
        dict_set_s(c, n, d, "revindex", v_int((int64_t)(len - i)));
        dict_set_s(c, n, d, "revindex0", v_int((int64_t)(len - i - 1)));
        dict_set_s(c, n, d, "first", v_bool(i == 0));
        dict_set_s(c, n, d, "last", v_bool(i + 1 == len));
        dict_set_s(c, n, d, "length", v_int((int64_t)len));
        dict_set_s(c, n, d, "depth", v_int(1));
        dict_set_s(c, n, d, "depth0", v_int(0));
        dict_set_s(c, n, d, "previtem", i ? items->v[i - 1] : v_undef("previtem"));
        dict_set_s(c, n, d, "nextitem", i + 1 < len ? items->v[i + 1] : v_undef("nextitem"));
        dict_set_s(c, n, d, "cycle", method_value(c, n, loop, "cycle"));
        dict_set_s(c, n, &fr->vars, "loop", loop);
        assign_targets(c, n, fr, n->targets, n->n_targets, items->v[i]);
        if (exec(c, fr, n->b) == FLOW_BREAK) break;
    }
}

/* Every eval/exec level counts against one nesting bound, so that macros recursing through deep
 * expressions cannot exhaust the C stack of the calling thread (at most ~TPL_MAX_NEST frames of a
 * few hundred bytes). */
#define TPL_MAX_NEST 600

static struct tv eval(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    if (++c->nest > TPL_MAX_NEST) rerr(c, n, REALM_E_LIMIT, "evaluation nested too deeply");
    struct tv v = eval_node(c, f, n);
    c->nest--;
    return v;
}

static int exec_node(struct rctx *c, struct frame *f, const struct tpl_node *n);

static int exec(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    if (++c->nest > TPL_MAX_NEST) rerr(c, n, REALM_E_LIMIT, "evaluation nested too deeply");
    int r = exec_node(c, f, n);
    c->nest--;
    return r;
}

static int exec_node(struct rctx *c, struct frame *f, const struct tpl_node *n) {
    switch (n->k) {
    case N_BODY:
        for (size_t i = 0; i < n->n_kids; i++) {
            int r = exec(c, f, n->kids[i]);
            if (r != FLOW_NEXT) return r;
        }
        return FLOW_NEXT;
    case N_TEXT:
        emit(c, n, n->lit.u.s.s, n->lit.u.s.n);
        return FLOW_NEXT;
    case N_OUT: {
        struct tv v = eval(c, f, n->a);
        if (v.k == TV_STR)
            emit(c, n, v.u.s.s, v.u.s.n);
        else {
            struct tv s = to_str(c, n, &v);
            emit(c, n, s.u.s.s, s.u.s.n);
        }
        return FLOW_NEXT;
    }
    case N_IF: {
        struct tv cond = eval(c, f, n->a);
        if (tv_truthy(&cond)) return exec(c, f, n->b);
        return n->c ? exec(c, f, n->c) : FLOW_NEXT;
    }
    case N_FOR:
        exec_for(c, f, n);
        return FLOW_NEXT;
    case N_SET: {
        struct tv v = eval(c, f, n->a);
        if (n->name2) {
            struct tv ns = lookup(c, f, n->name);
            if (ns.k != TV_NS)
                rerr(c, n, REALM_E_FORMAT, "cannot set attribute '%s' of %s (not a namespace)",
                     n->name2, tv_type_name(&ns));
            if (has_namespace(&v, 0))
                rerr(c, n, REALM_E_UNSUPPORTED, "a namespace cannot hold a namespace");
            dict_set_s(c, n, ns.u.d, n->name2, v);
        } else if (n->targets) {
            assign_targets(c, n, f, n->targets, n->n_targets, v);
        } else {
            dict_set_s(c, n, &f->vars, n->name, v);
        }
        return FLOW_NEXT;
    }
    case N_SETBLOCK: {
        struct tpl_buf buf = {.max = c->max_output, .a = &c->arena};
        struct tpl_buf *saved = c->out;
        c->out = &buf;
        exec(c, f, n->a);
        c->out = saved;
        dict_set_s(c, n, &f->vars, n->name, v_strn(buf.p ? buf.p : "", buf.n));
        return FLOW_NEXT;
    }
    case N_MACRO: {
        struct tv m = {.k = TV_MACRO};
        m.u.mac.n = n;
        m.u.mac.env = f;
        dict_set_s(c, n, &f->vars, n->name, m);
        return FLOW_NEXT;
    }
    case N_BREAK:
        return FLOW_BREAK;
    case N_CONTINUE:
        return FLOW_CONTINUE;
    default:
        break;
    }
    rerr(c, n, REALM_E_INTERNAL, "not a statement");
}

/* ------------------------------------------------------------- entry ---- */

int realm_template_render(const struct realm_template *t, const cJSON *vars,
                          const struct realm_template_limits *lim, char **out, size_t *out_len,
                          struct realm_err *err) {
    if (out) *out = NULL;
    if (out_len) *out_len = 0;
    if (!t || !out || !t->root)
        return realm_err_set(err, REALM_E_INVALID, "template: render: NULL argument");
    if (vars && !cJSON_IsObject(vars))
        return realm_err_set(err, REALM_E_INVALID,
                             "template: render: variables must be a JSON object");
    struct rctx *c = realm_calloc(1, sizeof *c);
    if (!c) return realm_err_set(err, REALM_E_NOMEM, "template: out of memory");
    c->err = err;
    c->max_output = lim && lim->max_output ? lim->max_output : 4u << 20;
    c->max_steps = lim && lim->max_steps ? lim->max_steps : 1000000;
    c->max_depth = lim && lim->max_depth ? lim->max_depth : 64;
    c->arena.limit = lim && lim->max_memory ? lim->max_memory : (size_t)64 << 20;
    struct tpl_buf main_out = {.max = c->max_output};
    int rc = REALM_OK;
    if (setjmp(c->jb)) {
        rc = err && err->code ? err->code : REALM_E_FORMAT;
        realm_free(main_out.p);
        goto done;
    }
    if (vars)
        for (const cJSON *e = vars->child; e; e = e->next)
            dict_set(c, NULL, &c->globals, v_strn(e->string, strlen(e->string)), from_json(c, e));
    struct frame *top = ralloc(c, NULL, sizeof *top);
    memset(top, 0, sizeof *top);
    c->out = &main_out;
    if (!tb_put(&main_out, "", 0)) oom(c, NULL);
    exec(c, top, t->root);
    *out = main_out.p;
    if (out_len) *out_len = main_out.n;
done:
    tpl_arena_free(&c->arena);
    realm_free(c);
    return rc;
}
