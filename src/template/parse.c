/*
 * parse.c — the lexer (with Jinja's whitespace rules as transformers configures them:
 * trim_blocks, lstrip_blocks, keep_trailing_newline off) and a recursive-descent parser that
 * builds the syntax tree in the template's arena.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/alloc.h"
#include "template/tpl.h"

#define TPL_MAX_SRC (1u << 20)
#define TPL_MAX_PARSE_DEPTH 200

enum tk {
    TK_EOF,
    TK_TEXT,
    TK_VBEGIN,
    TK_VEND,
    TK_BBEGIN,
    TK_BEND,
    TK_NAME,
    TK_STR,
    TK_INT,
    TK_FLOAT,
    TK_OP
};

struct tok {
    enum tk k;
    int line, col;
    const char *s; /* TK_NAME / TK_OP / TK_TEXT / TK_STR: text (NUL-terminated, in the arena) */
    size_t n;
    int64_t i;
    double f;
};

struct parser {
    struct realm_template *t;
    struct realm_err *err;
    const char *src;
    size_t len, pos;
    int line, col;         /* of pos */
    int end_line, end_col; /* of the last tag end lexed */
    struct tok *toks;
    size_t n_toks, cap_toks, at;
    int depth;
    jmp_buf jb;
};

static _Noreturn void perr(struct parser *p, int line, int col, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static _Noreturn void perr(struct parser *p, int line, int col, int code, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    realm_err_set(p->err, code, "template: %d:%d: %s", line, col, msg);
    longjmp(p->jb, 1);
}

static void *palloc(struct parser *p, size_t n) {
    void *r = tpl_alloc(&p->t->arena, n);
    if (!r) perr(p, p->line, p->col, REALM_E_NOMEM, "out of memory");
    memset(r, 0, n);
    return r;
}

static char *pstrdup(struct parser *p, const char *s, size_t n) {
    char *r = palloc(p, n + 1);
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

/* ---------------------------------------------------------------- lexer ---- */

static void advance(struct parser *p, size_t n) {
    for (size_t i = 0; i < n && p->pos < p->len; i++, p->pos++) {
        if (p->src[p->pos] == '\n') {
            p->line++;
            p->col = 1;
        } else
            p->col++;
    }
}

static struct tok *push_tok(struct parser *p, enum tk k, int line, int col) {
    if (p->n_toks == p->cap_toks) {
        size_t cap = p->cap_toks ? p->cap_toks * 2 : 256;
        struct tok *nt = realm_realloc(p->toks, cap * sizeof *nt);
        if (!nt) perr(p, line, col, REALM_E_NOMEM, "out of memory");
        p->toks = nt;
        p->cap_toks = cap;
    }
    struct tok *t = &p->toks[p->n_toks++];
    memset(t, 0, sizeof *t);
    t->k = k;
    t->line = line;
    t->col = col;
    return t;
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static bool is_name0(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

static void put_utf8(char *o, size_t *n, uint32_t cp) {
    if (cp < 0x80)
        o[(*n)++] = (char)cp;
    else if (cp < 0x800) {
        o[(*n)++] = (char)(0xC0 | (cp >> 6));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xE0 | (cp >> 12));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*n)++] = (char)(0xF0 | (cp >> 18));
        o[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A Python string literal with its escapes. */
static void lex_string(struct parser *p) {
    int line = p->line, col = p->col;
    char q = p->src[p->pos];
    size_t i = p->pos + 1;
    while (i < p->len && p->src[i] != q) {
        if (p->src[i] == '\\') i++;
        i++;
    }
    if (i >= p->len) perr(p, line, col, REALM_E_FORMAT, "unterminated string literal");
    size_t raw_n = i - p->pos - 1;
    const char *r = p->src + p->pos + 1;
    char *o = palloc(p, raw_n + 1);
    size_t n = 0;
    for (size_t j = 0; j < raw_n; j++) {
        if (r[j] != '\\' || j + 1 >= raw_n) {
            o[n++] = r[j];
            continue;
        }
        char e = r[++j];
        int digits = 0;
        switch (e) {
        case 'n':
            o[n++] = '\n';
            break;
        case 't':
            o[n++] = '\t';
            break;
        case 'r':
            o[n++] = '\r';
            break;
        case 'b':
            o[n++] = '\b';
            break;
        case 'f':
            o[n++] = '\f';
            break;
        case 'v':
            o[n++] = '\v';
            break;
        case 'a':
            o[n++] = '\a';
            break;
        case '0':
            o[n++] = '\0';
            break;
        case '\\':
        case '\'':
        case '"':
            o[n++] = e;
            break;
        case '\n':
            break;
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        default:
            o[n++] = '\\';
            o[n++] = e;
            break;
        }
        if (digits) {
            uint32_t cp = 0;
            if (j + (size_t)digits >= raw_n)
                perr(p, line, col, REALM_E_FORMAT, "truncated \\%c escape", e);
            for (int d = 0; d < digits; d++) {
                int h = hexval(r[j + 1 + (size_t)d]);
                if (h < 0) perr(p, line, col, REALM_E_FORMAT, "bad \\%c escape", e);
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
                perr(p, line, col, REALM_E_FORMAT, "escape \\%c is not a valid code point", e);
            put_utf8(o, &n, cp); /* at most 4 bytes, never more than the escape's length */
            j += (size_t)digits;
        }
    }
    o[n] = 0;
    struct tok *t = push_tok(p, TK_STR, line, col);
    t->s = o;
    t->n = n;
    advance(p, i + 1 - p->pos);
}

static void lex_number(struct parser *p) {
    int line = p->line, col = p->col;
    size_t i = p->pos;
    bool is_float = false;
    char buf[64];
    size_t bn = 0;
    while (i < p->len && (is_digit(p->src[i]) || p->src[i] == '_')) {
        if (p->src[i] != '_' && bn < sizeof buf - 1) buf[bn++] = p->src[i];
        i++;
    }
    if (i + 1 < p->len && p->src[i] == '.' && is_digit(p->src[i + 1])) {
        is_float = true;
        buf[bn < sizeof buf - 1 ? bn++ : bn] = '.';
        i++;
        while (i < p->len && (is_digit(p->src[i]) || p->src[i] == '_')) {
            if (p->src[i] != '_' && bn < sizeof buf - 1) buf[bn++] = p->src[i];
            i++;
        }
    }
    if (i < p->len && (p->src[i] == 'e' || p->src[i] == 'E')) {
        size_t j = i + 1;
        if (j < p->len && (p->src[j] == '+' || p->src[j] == '-')) j++;
        if (j < p->len && is_digit(p->src[j])) {
            is_float = true;
            while (i < j && bn < sizeof buf - 1)
                buf[bn++] = p->src[i++];
            while (i < p->len && is_digit(p->src[i])) {
                if (bn < sizeof buf - 1) buf[bn++] = p->src[i];
                i++;
            }
        }
    }
    buf[bn] = 0;
    if (bn >= sizeof buf - 1) perr(p, line, col, REALM_E_FORMAT, "number literal too long");
    struct tok *t = push_tok(p, is_float ? TK_FLOAT : TK_INT, line, col);
    if (is_float)
        t->f = strtod(buf, NULL);
    else {
        unsigned long long v = strtoull(buf, NULL, 10);
        if (bn > 19) v = ULLONG_MAX;
        if (v > INT64_MAX) perr(p, line, col, REALM_E_FORMAT, "integer literal too large");
        t->i = (int64_t)v;
    }
    advance(p, i - p->pos);
}

static const char *const g_ops2[] = {"//", "**", "==", "!=", "<=", ">=", NULL};
static const char g_ops1[] = "+-*/%~<>=()[]{},.:|";

/* Lexes the inside of a {{ }} or {% %} tag, up to and including its end. Returns the strip
 * sign before the end ('-', '+' or 0). */
static char lex_tag(struct parser *p, bool block) {
    const char *end = block ? "%}" : "}}";
    int nest = 0; /* brackets: a '}' inside {{ {..} }} does not end the tag */
    for (;;) {
        while (p->pos < p->len && is_ws(p->src[p->pos]))
            advance(p, 1);
        if (p->pos >= p->len)
            perr(p, p->line, p->col, REALM_E_FORMAT, "unexpected end of template, expected '%s'",
                 end);
        const char *s = p->src + p->pos;
        size_t left = p->len - p->pos;
        p->end_line = p->line;
        p->end_col = p->col;
        if (nest == 0) {
            if (left >= 2 && !memcmp(s, end, 2)) {
                advance(p, 2);
                return 0;
            }
            if (left >= 3 && (s[0] == '-' || s[0] == '+') && !memcmp(s + 1, end, 2)) {
                advance(p, 3);
                return s[0];
            }
        }
        char c = s[0];
        if (c == '\'' || c == '"') {
            lex_string(p);
            continue;
        }
        if (is_digit(c)) {
            lex_number(p);
            continue;
        }
        if (is_name0(c)) {
            size_t n = 1;
            while (n < left && (is_name0(s[n]) || is_digit(s[n])))
                n++;
            struct tok *t = push_tok(p, TK_NAME, p->line, p->col);
            t->s = pstrdup(p, s, n);
            t->n = n;
            advance(p, n);
            continue;
        }
        size_t n = 0;
        for (int i = 0; g_ops2[i]; i++)
            if (left >= 2 && !memcmp(s, g_ops2[i], 2)) n = 2;
        if (!n && strchr(g_ops1, c) && c) n = 1;
        if (!n) perr(p, p->line, p->col, REALM_E_FORMAT, "unexpected character '%c'", c);
        if (n == 1 && (c == '(' || c == '[' || c == '{')) nest++;
        if (n == 1 && (c == ')' || c == ']' || c == '}') && nest > 0) nest--;
        struct tok *t = push_tok(p, TK_OP, p->line, p->col);
        t->s = pstrdup(p, s, n);
        t->n = n;
        advance(p, n);
    }
}

/* Skips whitespace after a '-' end; returns whether the last char skipped was a newline. */
static bool skip_ws_after(struct parser *p, bool line_starting) {
    while (p->pos < p->len && is_ws(p->src[p->pos])) {
        line_starting = p->src[p->pos] == '\n';
        advance(p, 1);
    }
    return line_starting;
}

/* After a block or comment end: '-' strips all whitespace, '+' nothing, else trim_blocks eats
 * one newline. Returns line_starting. */
static bool after_block_end(struct parser *p, char sign) {
    if (sign == '-') return skip_ws_after(p, false);
    if (sign != '+' && p->pos < p->len && p->src[p->pos] == '\n') {
        advance(p, 1);
        return true;
    }
    return false;
}

static void lex(struct parser *p) {
    bool line_starting = true;
    while (p->pos < p->len) {
        /* the next tag */
        size_t i = p->pos;
        int kind = 0; /* 1 var, 2 block, 3 comment */
        for (; i + 1 < p->len; i++) {
            if (p->src[i] != '{') continue;
            char c = p->src[i + 1];
            if (c == '{') {
                kind = 1;
                break;
            }
            if (c == '%') {
                kind = 2;
                break;
            }
            if (c == '#') {
                kind = 3;
                break;
            }
        }
        if (!kind) i = p->len;
        char sign = (kind && i + 2 < p->len) ? p->src[i + 2] : 0;
        if (sign != '-' && sign != '+') sign = 0;
        if (kind == 1 && sign == '+') sign = 0;
        /* the text before it, with whitespace control */
        size_t t0 = p->pos, t1 = i;
        if (sign == '-') {
            while (t1 > t0 && is_ws(p->src[t1 - 1]))
                t1--;
        } else if (kind >= 2 && sign != '+') {
            size_t l = t1;
            while (l > t0 &&
                   (p->src[l - 1] == ' ' || p->src[l - 1] == '\t' || p->src[l - 1] == '\f' ||
                    p->src[l - 1] == '\v' || p->src[l - 1] == '\r'))
                l--;
            if ((l > t0 && p->src[l - 1] == '\n') || (l == t0 && line_starting)) t1 = l;
        }
        if (t1 > t0) {
            struct tok *t = push_tok(p, TK_TEXT, p->line, p->col);
            t->s = pstrdup(p, p->src + t0, t1 - t0);
            t->n = t1 - t0;
        }
        advance(p, i - p->pos);
        if (!kind) break;
        int line = p->line, col = p->col;
        advance(p, sign ? 3 : 2);
        if (kind == 3) {
            size_t j = p->pos;
            while (j + 1 < p->len && !(p->src[j] == '#' && p->src[j + 1] == '}'))
                j++;
            if (j + 1 >= p->len) perr(p, line, col, REALM_E_FORMAT, "unterminated comment");
            char esign =
                (j > p->pos && (p->src[j - 1] == '-' || p->src[j - 1] == '+')) ? p->src[j - 1] : 0;
            advance(p, j + 2 - p->pos);
            line_starting = after_block_end(p, esign);
            continue;
        }
        push_tok(p, kind == 1 ? TK_VBEGIN : TK_BBEGIN, line, col);
        char esign = lex_tag(p, kind == 2);
        push_tok(p, kind == 1 ? TK_VEND : TK_BEND, p->end_line, p->end_col);
        if (kind == 2)
            line_starting = after_block_end(p, esign);
        else
            line_starting = esign == '-' ? skip_ws_after(p, false) : false;
        /* {% raw %}: the text up to {% endraw %} is literal */
        size_t nt = p->n_toks;
        if (kind == 2 && nt >= 3 && p->toks[nt - 2].k == TK_NAME &&
            !strcmp(p->toks[nt - 2].s, "raw") && p->toks[nt - 3].k == TK_BBEGIN) {
            p->n_toks -= 3;
            size_t j = p->pos;
            for (;; j++) {
                if (j + 1 >= p->len) perr(p, line, col, REALM_E_FORMAT, "missing {%% endraw %%}");
                if (p->src[j] != '{' || p->src[j + 1] != '%') continue;
                size_t k = j + 2;
                if (k < p->len && (p->src[k] == '-' || p->src[k] == '+')) k++;
                while (k < p->len && is_ws(p->src[k]))
                    k++;
                if (k + 6 <= p->len && !memcmp(p->src + k, "endraw", 6)) break;
            }
            size_t r1 = j;
            if (j + 2 < p->len && p->src[j + 2] == '-')
                while (r1 > p->pos && is_ws(p->src[r1 - 1]))
                    r1--;
            if (r1 > p->pos) {
                struct tok *t = push_tok(p, TK_TEXT, p->line, p->col);
                t->s = pstrdup(p, p->src + p->pos, r1 - p->pos);
                t->n = r1 - p->pos;
            }
            advance(p, j - p->pos);
            int l2 = p->line, c2 = p->col;
            advance(p, p->src[j + 2] == '-' || p->src[j + 2] == '+' ? 3 : 2);
            size_t before = p->n_toks;
            char s2 = lex_tag(p, true);
            if (p->n_toks != before + 1)
                perr(p, l2, c2, REALM_E_FORMAT, "malformed {%% endraw %%}");
            p->n_toks = before;
            line_starting = after_block_end(p, s2);
        }
    }
    push_tok(p, TK_EOF, p->line, p->col);
}

/* --------------------------------------------------------------- parser ---- */

static struct tok *peek(struct parser *p) {
    return &p->toks[p->at];
}
static struct tok *next(struct parser *p) {
    struct tok *t = &p->toks[p->at];
    if (t->k != TK_EOF) p->at++;
    return t;
}
static bool is_op(const struct tok *t, const char *op) {
    return t->k == TK_OP && !strcmp(t->s, op);
}
static bool is_name(const struct tok *t, const char *nm) {
    return t->k == TK_NAME && !strcmp(t->s, nm);
}

static const char *tok_desc(const struct tok *t) {
    switch (t->k) {
    case TK_EOF:
        return "end of template";
    case TK_TEXT:
        return "text";
    case TK_VBEGIN:
        return "'{{'";
    case TK_VEND:
        return "'}}'";
    case TK_BBEGIN:
        return "'{%'";
    case TK_BEND:
        return "'%}'";
    case TK_STR:
        return "string";
    case TK_INT:
    case TK_FLOAT:
        return "number";
    case TK_NAME:
    case TK_OP:
        return t->s;
    }
    return "?";
}

static void expect_op(struct parser *p, const char *op) {
    struct tok *t = next(p);
    if (!is_op(t, op))
        perr(p, t->line, t->col, REALM_E_FORMAT, "expected '%s', found %s", op, tok_desc(t));
}
static const char *expect_name(struct parser *p) {
    struct tok *t = next(p);
    if (t->k != TK_NAME)
        perr(p, t->line, t->col, REALM_E_FORMAT, "expected a name, found %s", tok_desc(t));
    return t->s;
}
static void expect_kind(struct parser *p, enum tk k, const char *what) {
    struct tok *t = next(p);
    if (t->k != k)
        perr(p, t->line, t->col, REALM_E_FORMAT, "expected %s, found %s", what, tok_desc(t));
}

static struct tpl_node *mk(struct parser *p, enum tpl_nk k, const struct tok *at) {
    struct tpl_node *n = palloc(p, sizeof *n);
    n->k = k;
    n->line = at->line;
    n->col = at->col;
    return n;
}

/* A growable node array in the arena. */
struct nvec {
    struct tpl_node **v;
    size_t n, cap;
};
static void nvec_push(struct parser *p, struct nvec *v, struct tpl_node *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        struct tpl_node **nv = palloc(p, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}
struct svec {
    const char **v;
    size_t n, cap;
};
static void svec_push(struct parser *p, struct svec *v, const char *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        const char **nv = palloc(p, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static struct tpl_node *parse_expr(struct parser *p);
static struct tpl_node *parse_or(struct parser *p);
static struct tpl_node *parse_unary(struct parser *p);

static void enter(struct parser *p) {
    if (++p->depth > TPL_MAX_PARSE_DEPTH)
        perr(p, peek(p)->line, peek(p)->col, REALM_E_LIMIT, "template nested too deeply");
}

/* (args, kw=args) after an opening '(' already consumed. */
static void parse_call_args(struct parser *p, struct tpl_node *n) {
    struct nvec pos = {0};
    struct nvec kv = {0};
    struct svec kn = {0};
    while (!is_op(peek(p), ")")) {
        if (pos.n + kv.n) expect_op(p, ",");
        if (is_op(peek(p), ")")) break;
        struct tok *t = peek(p);
        if (t->k == TK_NAME && is_op(&p->toks[p->at + 1], "=")) {
            next(p);
            next(p);
            svec_push(p, &kn, t->s);
            nvec_push(p, &kv, parse_expr(p));
        } else {
            if (kv.n)
                perr(p, t->line, t->col, REALM_E_FORMAT,
                     "positional argument after keyword argument");
            nvec_push(p, &pos, parse_expr(p));
        }
    }
    expect_op(p, ")");
    n->kids = pos.v;
    n->n_kids = pos.n;
    n->kw_names = kn.v;
    n->kw_vals = kv.v;
    n->n_kw = kv.n;
}

static struct tpl_node *parse_primary(struct parser *p) {
    struct tok *t = next(p);
    struct tpl_node *n;
    switch (t->k) {
    case TK_STR:
        n = mk(p, N_LIT, t);
        n->lit.k = TV_STR;
        n->lit.u.s.s = t->s;
        n->lit.u.s.n = t->n;
        /* adjacent string literals concatenate, as in Python */
        while (peek(p)->k == TK_STR) {
            struct tok *t2 = next(p);
            char *s = palloc(p, n->lit.u.s.n + t2->n + 1);
            memcpy(s, n->lit.u.s.s, n->lit.u.s.n);
            memcpy(s + n->lit.u.s.n, t2->s, t2->n);
            n->lit.u.s.s = s;
            n->lit.u.s.n += t2->n;
        }
        return n;
    case TK_INT:
        n = mk(p, N_LIT, t);
        n->lit.k = TV_INT;
        n->lit.u.i = t->i;
        return n;
    case TK_FLOAT:
        n = mk(p, N_LIT, t);
        n->lit.k = TV_FLOAT;
        n->lit.u.f = t->f;
        return n;
    case TK_NAME:
        n = mk(p, N_LIT, t);
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) {
            n->lit.k = TV_BOOL;
            n->lit.u.b = true;
            return n;
        }
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) {
            n->lit.k = TV_BOOL;
            return n;
        }
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n->lit.k = TV_NONE;
            return n;
        }
        n->k = N_NAME;
        n->name = t->s;
        return n;
    case TK_OP:
        if (is_op(t, "(")) {
            enter(p);
            if (is_op(peek(p), ")")) {
                next(p);
                n = mk(p, N_TUPLE, t);
                p->depth--;
                return n;
            }
            struct tpl_node *e = parse_expr(p);
            if (is_op(peek(p), ",")) {
                struct nvec v = {0};
                nvec_push(p, &v, e);
                while (is_op(peek(p), ",")) {
                    next(p);
                    if (is_op(peek(p), ")")) break;
                    nvec_push(p, &v, parse_expr(p));
                }
                e = mk(p, N_TUPLE, t);
                e->kids = v.v;
                e->n_kids = v.n;
            }
            expect_op(p, ")");
            p->depth--;
            return e;
        }
        if (is_op(t, "[")) {
            enter(p);
            n = mk(p, N_LIST, t);
            struct nvec v = {0};
            while (!is_op(peek(p), "]")) {
                if (v.n) expect_op(p, ",");
                if (is_op(peek(p), "]")) break;
                nvec_push(p, &v, parse_expr(p));
            }
            expect_op(p, "]");
            n->kids = v.v;
            n->n_kids = v.n;
            p->depth--;
            return n;
        }
        if (is_op(t, "{")) {
            enter(p);
            n = mk(p, N_DICT, t);
            struct nvec v = {0};
            while (!is_op(peek(p), "}")) {
                if (v.n) expect_op(p, ",");
                if (is_op(peek(p), "}")) break;
                nvec_push(p, &v, parse_expr(p));
                expect_op(p, ":");
                nvec_push(p, &v, parse_expr(p));
            }
            expect_op(p, "}");
            n->kids = v.v;
            n->n_kids = v.n;
            p->depth--;
            return n;
        }
        break;
    default:
        break;
    }
    perr(p, t->line, t->col, REALM_E_FORMAT, "unexpected %s in expression", tok_desc(t));
}

static struct tpl_node *parse_subscript(struct parser *p, struct tpl_node *obj, struct tok *at) {
    /* [i] or [a:b:c] */
    struct tpl_node *parts[3] = {0};
    int colons = 0;
    for (;;) {
        struct tok *t = peek(p);
        if (is_op(t, "]")) break;
        if (is_op(t, ":")) {
            if (++colons > 2) perr(p, t->line, t->col, REALM_E_FORMAT, "too many ':' in slice");
            next(p);
            continue;
        }
        if (parts[colons])
            perr(p, t->line, t->col, REALM_E_FORMAT, "expected ']' or ':', found %s", tok_desc(t));
        parts[colons] = parse_expr(p);
    }
    expect_op(p, "]");
    struct tpl_node *n = mk(p, colons ? N_SLICE : N_ITEM, at);
    n->a = obj;
    if (!colons) {
        if (!parts[0]) perr(p, at->line, at->col, REALM_E_FORMAT, "empty subscript");
        n->b = parts[0];
    } else {
        struct tpl_node **k = palloc(p, 3 * sizeof *k);
        memcpy(k, parts, sizeof parts);
        n->kids = k;
        n->n_kids = 3;
    }
    return n;
}

static struct tpl_node *parse_postfix(struct parser *p, struct tpl_node *n) {
    for (;;) {
        struct tok *t = peek(p);
        if (is_op(t, ".")) {
            next(p);
            struct tok *nt = next(p);
            struct tpl_node *a;
            if (nt->k == TK_NAME) {
                a = mk(p, N_ATTR, nt);
                a->name = nt->s;
            } else if (nt->k == TK_INT) {
                a = mk(p, N_ITEM, nt);
                a->b = mk(p, N_LIT, nt);
                a->b->lit.k = TV_INT;
                a->b->lit.u.i = nt->i;
            } else {
                perr(p, nt->line, nt->col, REALM_E_FORMAT, "expected an attribute name, found %s",
                     tok_desc(nt));
            }
            a->a = n;
            n = a;
        } else if (is_op(t, "[")) {
            next(p);
            enter(p);
            n = parse_subscript(p, n, t);
            p->depth--;
        } else if (is_op(t, "(")) {
            next(p);
            enter(p);
            struct tpl_node *c = mk(p, N_CALL, t);
            c->line = n->line; /* errors of a call point at the callee */
            c->col = n->col;
            c->a = n;
            parse_call_args(p, c);
            p->depth--;
            n = c;
        } else {
            return n;
        }
    }
}

static struct tpl_node *parse_filter_expr(struct parser *p, struct tpl_node *n) {
    for (;;) {
        struct tok *t = peek(p);
        if (is_op(t, "|")) {
            next(p);
            struct tok *nt = peek(p);
            struct tpl_node *f = mk(p, N_FILTER, nt);
            f->name = expect_name(p);
            while (is_op(peek(p), ".")) { /* dotted filter names are not supported; say so */
                perr(p, nt->line, nt->col, REALM_E_FORMAT, "unknown filter '%s.'", f->name);
            }
            f->a = n;
            if (is_op(peek(p), "(")) {
                next(p);
                enter(p);
                parse_call_args(p, f);
                p->depth--;
            }
            n = f;
        } else if (is_name(t, "is")) {
            next(p);
            struct tpl_node *f = mk(p, N_TEST, t);
            if (is_name(peek(p), "not")) {
                next(p);
                f->op = 1;
            }
            struct tok *nt = next(p);
            if (nt->k == TK_NAME)
                f->name = nt->s;
            else if (is_op(nt, "=="))
                f->name = "eq";
            else if (is_op(nt, "!="))
                f->name = "ne";
            else if (is_op(nt, "<"))
                f->name = "lt";
            else if (is_op(nt, "<="))
                f->name = "le";
            else if (is_op(nt, ">"))
                f->name = "gt";
            else if (is_op(nt, ">="))
                f->name = "ge";
            else
                perr(p, nt->line, nt->col, REALM_E_FORMAT, "expected a test name, found %s",
                     tok_desc(nt));
            f->a = n;
            struct tok *a = peek(p);
            if (is_op(a, "(")) {
                next(p);
                enter(p);
                parse_call_args(p, f);
                p->depth--;
            } else if (a->k == TK_STR || a->k == TK_INT || a->k == TK_FLOAT ||
                       (a->k == TK_NAME && !is_name(a, "and") && !is_name(a, "or") &&
                        !is_name(a, "else") && !is_name(a, "if") && !is_name(a, "in") &&
                        !is_name(a, "is") && !is_name(a, "not"))) {
                /* `x is divisibleby 3`, `x is sameas none`: one argument without parentheses */
                struct tpl_node **k = palloc(p, sizeof *k);
                enter(p);
                k[0] = parse_postfix(p, parse_primary(p));
                p->depth--;
                f->kids = k;
                f->n_kids = 1;
            }
            n = f;
        } else {
            return n;
        }
    }
}

/* jinja2: `-x|f` is `(-x)|f`: the sign binds tighter than filters and tests. */
static struct tpl_node *parse_unary_f(struct parser *p, bool with_filter) {
    enter(p);
    struct tok *t = peek(p);
    struct tpl_node *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next(p);
        n = mk(p, N_UNARY, t);
        n->op = is_op(t, "-") ? T_SUB : T_ADD;
        n->a = parse_unary_f(p, false);
    } else {
        n = parse_postfix(p, parse_primary(p));
    }
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}
static struct tpl_node *parse_unary(struct parser *p) {
    return parse_unary_f(p, true);
}

static struct tpl_node *bin(struct parser *p, struct tok *t, int op, struct tpl_node *a,
                            struct tpl_node *b) {
    struct tpl_node *n = mk(p, N_BIN, t);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static struct tpl_node *parse_pow(struct parser *p) {
    struct tpl_node *n = parse_unary(p);
    while (is_op(peek(p), "**")) {
        struct tok *t = next(p);
        n = bin(p, t, T_POW, n, parse_unary(p));
    }
    return n;
}
static struct tpl_node *parse_math2(struct parser *p) {
    struct tpl_node *n = parse_pow(p);
    for (;;) {
        struct tok *t = peek(p);
        int op = is_op(t, "*")    ? T_MUL
                 : is_op(t, "/")  ? T_DIV
                 : is_op(t, "//") ? T_FLOORDIV
                 : is_op(t, "%")  ? T_MOD
                                  : 0;
        if (!op) return n;
        next(p);
        n = bin(p, t, op, n, parse_pow(p));
    }
}
static struct tpl_node *parse_concat(struct parser *p) {
    struct tpl_node *n = parse_math2(p);
    while (is_op(peek(p), "~")) {
        struct tok *t = next(p);
        n = bin(p, t, T_TILDE, n, parse_math2(p));
    }
    return n;
}
static struct tpl_node *parse_math1(struct parser *p) {
    struct tpl_node *n = parse_concat(p);
    for (;;) {
        struct tok *t = peek(p);
        int op = is_op(t, "+") ? T_ADD : is_op(t, "-") ? T_SUB : 0;
        if (!op) return n;
        next(p);
        n = bin(p, t, op, n, parse_concat(p));
    }
}
static struct tpl_node *parse_compare(struct parser *p) {
    struct tpl_node *n = parse_math1(p);
    struct tpl_node *result = NULL;
    for (;;) {
        struct tok *t = peek(p);
        int op = is_op(t, "==")     ? T_EQ
                 : is_op(t, "!=")   ? T_NE
                 : is_op(t, "<")    ? T_LT
                 : is_op(t, "<=")   ? T_LE
                 : is_op(t, ">")    ? T_GT
                 : is_op(t, ">=")   ? T_GE
                 : is_name(t, "in") ? T_IN
                                    : 0;
        if (!op && is_name(t, "not") && is_name(&p->toks[p->at + 1], "in")) {
            next(p);
            op = T_NOTIN;
        }
        if (!op) return result ? result : n;
        next(p);
        struct tpl_node *rhs = parse_math1(p);
        /* chained comparisons: a < b < c is (a < b) and (b < c) */
        struct tpl_node *c = bin(p, t, op, n, rhs);
        if (result) {
            struct tpl_node *a = mk(p, N_AND, t);
            a->a = result;
            a->b = c;
            result = a;
        } else {
            result = c;
        }
        n = rhs;
    }
}
static struct tpl_node *parse_not(struct parser *p) {
    struct tok *t = peek(p);
    if (is_name(t, "not")) {
        next(p);
        enter(p);
        struct tpl_node *n = mk(p, N_NOT, t);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}
static struct tpl_node *parse_and(struct parser *p) {
    struct tpl_node *n = parse_not(p);
    while (is_name(peek(p), "and")) {
        struct tok *t = next(p);
        struct tpl_node *a = mk(p, N_AND, t);
        a->a = n;
        a->b = parse_not(p);
        n = a;
    }
    return n;
}
static struct tpl_node *parse_or(struct parser *p) {
    struct tpl_node *n = parse_and(p);
    while (is_name(peek(p), "or")) {
        struct tok *t = next(p);
        struct tpl_node *a = mk(p, N_OR, t);
        a->a = n;
        a->b = parse_and(p);
        n = a;
    }
    return n;
}
/* `a if cond else b` */
static struct tpl_node *parse_expr(struct parser *p) {
    enter(p);
    struct tpl_node *n = parse_or(p);
    while (is_name(peek(p), "if")) {
        struct tok *t = next(p);
        struct tpl_node *c = mk(p, N_COND, t);
        c->a = parse_or(p);
        c->b = n;
        if (is_name(peek(p), "else")) {
            next(p);
            c->c = parse_expr(p);
        }
        n = c;
    }
    p->depth--;
    return n;
}

/* ----------------------------------------------------------- statements ---- */

static struct tpl_node *parse_body(struct parser *p, const char *const *ends, const char **found);

static void end_block(struct parser *p) {
    expect_kind(p, TK_BEND, "'%}'");
}

/* Consumes `{% name %}` where name is the end tag found by parse_body. */
static void parse_end_tag(struct parser *p) {
    next(p); /* name */
    end_block(p);
}

static struct tpl_node *parse_if(struct parser *p, struct tok *at) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    struct tpl_node *n = mk(p, N_IF, at);
    n->a = parse_expr(p);
    end_block(p);
    const char *found;
    n->b = parse_body(p, ends, &found);
    struct tok *t = peek(p);
    if (!strcmp(found, "elif")) {
        next(p);
        n->c = parse_if(p, t);
        return n;
    }
    if (!strcmp(found, "else")) {
        parse_end_tag(p);
        static const char *const ends2[] = {"endif", NULL};
        n->c = parse_body(p, ends2, &found);
    }
    parse_end_tag(p);
    return n;
}

static struct tpl_node *parse_for(struct parser *p, struct tok *at) {
    struct tpl_node *n = mk(p, N_FOR, at);
    struct svec tg = {0};
    bool paren = is_op(peek(p), "(");
    if (paren) next(p);
    svec_push(p, &tg, expect_name(p));
    while (is_op(peek(p), ",")) {
        next(p);
        svec_push(p, &tg, expect_name(p));
    }
    if (paren) expect_op(p, ")");
    n->targets = tg.v;
    n->n_targets = tg.n;
    struct tok *t = next(p);
    if (!is_name(t, "in"))
        perr(p, t->line, t->col, REALM_E_FORMAT, "expected 'in', found %s", tok_desc(t));
    n->a = parse_or(p); /* not parse_expr: a trailing `if` is the loop filter */
    if (is_name(peek(p), "if")) {
        next(p);
        n->kw_vals = palloc(p, sizeof *n->kw_vals);
        n->kw_vals[0] = parse_expr(p);
        n->n_kw = 1;
    }
    if (is_name(peek(p), "recursive"))
        perr(p, peek(p)->line, peek(p)->col, REALM_E_FORMAT, "recursive loops are not supported");
    end_block(p);
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *found;
    n->b = parse_body(p, ends, &found);
    if (!strcmp(found, "else")) {
        parse_end_tag(p);
        static const char *const ends2[] = {"endfor", NULL};
        n->c = parse_body(p, ends2, &found);
    }
    parse_end_tag(p);
    return n;
}

static struct tpl_node *parse_set(struct parser *p, struct tok *at) {
    struct tpl_node *n = mk(p, N_SET, at);
    struct svec tg = {0};
    n->name = expect_name(p);
    if (is_op(peek(p), ".")) {
        next(p);
        n->name2 = expect_name(p);
    } else {
        svec_push(p, &tg, n->name);
        while (is_op(peek(p), ",")) {
            next(p);
            svec_push(p, &tg, expect_name(p));
        }
        if (tg.n > 1) {
            n->targets = tg.v;
            n->n_targets = tg.n;
        }
    }
    if (peek(p)->k == TK_BEND && !n->name2 && !n->targets) {
        /* {% set x %}...{% endset %} */
        end_block(p);
        n->k = N_SETBLOCK;
        static const char *const ends[] = {"endset", NULL};
        const char *found;
        n->a = parse_body(p, ends, &found);
        parse_end_tag(p);
        return n;
    }
    expect_op(p, "=");
    struct tpl_node *e = parse_expr(p);
    if (is_op(peek(p), ",")) { /* set a = 1, 2 → a tuple */
        struct nvec v = {0};
        nvec_push(p, &v, e);
        while (is_op(peek(p), ",")) {
            next(p);
            nvec_push(p, &v, parse_expr(p));
        }
        e = mk(p, N_TUPLE, at);
        e->kids = v.v;
        e->n_kids = v.n;
    }
    n->a = e;
    end_block(p);
    return n;
}

static struct tpl_node *parse_macro(struct parser *p, struct tok *at) {
    struct tpl_node *n = mk(p, N_MACRO, at);
    n->name = expect_name(p);
    expect_op(p, "(");
    struct nvec params = {0};
    while (!is_op(peek(p), ")")) {
        if (params.n) expect_op(p, ",");
        if (is_op(peek(p), ")")) break;
        struct tok *t = peek(p);
        struct tpl_node *pn = mk(p, N_NAME, t);
        pn->name = expect_name(p);
        nvec_push(p, &params, pn);
        if (is_op(peek(p), "=")) {
            next(p);
            pn->a = parse_expr(p); /* the default */
        }
    }
    expect_op(p, ")");
    end_block(p);
    n->kids = params.v;
    n->n_kids = params.n;
    static const char *const ends[] = {"endmacro", NULL};
    const char *found;
    n->a = parse_body(p, ends, &found);
    parse_end_tag(p);
    return n;
}

static struct tpl_node *parse_stmt(struct parser *p) {
    struct tok *begin = next(p); /* TK_BBEGIN */
    struct tok *t = next(p);
    if (t->k != TK_NAME)
        perr(p, t->line, t->col, REALM_E_FORMAT, "expected a statement, found %s", tok_desc(t));
    const char *kw = t->s;
    (void)begin;
    if (!strcmp(kw, "if")) return parse_if(p, t);
    if (!strcmp(kw, "for")) return parse_for(p, t);
    if (!strcmp(kw, "set")) return parse_set(p, t);
    if (!strcmp(kw, "macro")) return parse_macro(p, t);
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        struct tpl_node *n = mk(p, kw[0] == 'b' ? N_BREAK : N_CONTINUE, t);
        end_block(p);
        return n;
    }
    if (!strcmp(kw, "generation")) {
        /* transformers' {% generation %} marks assistant text; it renders its body unchanged */
        end_block(p);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *found;
        struct tpl_node *n = parse_body(p, ends, &found);
        parse_end_tag(p);
        return n;
    }
    perr(p, t->line, t->col, REALM_E_FORMAT, "unknown or unexpected tag '%s'", kw);
}

/* Statements up to one of `ends` (a {% name %} left unconsumed, *found set) or, when ends is
 * NULL, the end of the template. */
static struct tpl_node *parse_body(struct parser *p, const char *const *ends, const char **found) {
    enter(p);
    struct tok *start = peek(p);
    struct tpl_node *body = mk(p, N_BODY, start);
    struct nvec v = {0};
    for (;;) {
        struct tok *t = peek(p);
        if (t->k == TK_EOF) {
            if (ends) {
                size_t last = 0;
                while (ends[last + 1])
                    last++;
                perr(p, t->line, t->col, REALM_E_FORMAT,
                     "unexpected end of template, expected {%% %s %%}", ends[last]);
            }
            break;
        }
        if (t->k == TK_TEXT) {
            next(p);
            struct tpl_node *n = mk(p, N_TEXT, t);
            n->lit.k = TV_STR;
            n->lit.u.s.s = t->s;
            n->lit.u.s.n = t->n;
            nvec_push(p, &v, n);
            continue;
        }
        if (t->k == TK_VBEGIN) {
            next(p);
            struct tpl_node *n = mk(p, N_OUT, t);
            n->a = parse_expr(p);
            expect_kind(p, TK_VEND, "'}}'");
            nvec_push(p, &v, n);
            continue;
        }
        if (t->k == TK_BBEGIN) {
            struct tok *nm = &p->toks[p->at + 1];
            if (ends && nm->k == TK_NAME) {
                for (size_t i = 0; ends[i]; i++)
                    if (!strcmp(nm->s, ends[i])) {
                        next(p); /* the {% */
                        *found = ends[i];
                        goto done;
                    }
            }
            if (nm->k == TK_NAME &&
                (!strncmp(nm->s, "end", 3) || !strcmp(nm->s, "elif") || !strcmp(nm->s, "else")))
                perr(p, nm->line, nm->col, REALM_E_FORMAT, "unexpected {%% %s %%}", nm->s);
            nvec_push(p, &v, parse_stmt(p));
            continue;
        }
        perr(p, t->line, t->col, REALM_E_FORMAT, "unexpected %s", tok_desc(t));
    }
done:
    body->kids = v.v;
    body->n_kids = v.n;
    p->depth--;
    return body;
}

int tpl_parse(struct realm_template *t, const char *src, size_t len, struct realm_err *err) {
    if (len > TPL_MAX_SRC)
        return realm_err_set(err, REALM_E_LIMIT, "template: %zu bytes, expected at most %u", len,
                             TPL_MAX_SRC);
    struct parser *p = realm_calloc(1, sizeof *p);
    if (!p) return realm_err_set(err, REALM_E_NOMEM, "template: out of memory");
    p->t = t;
    p->err = err;
    p->line = 1;
    p->col = 1;
    int rc = REALM_OK;
    if (setjmp(p->jb)) {
        rc = err ? err->code : REALM_E_FORMAT;
        if (rc == REALM_OK) rc = REALM_E_FORMAT;
        goto out;
    }
    /* Newlines normalised to \n and one trailing newline dropped, as jinja2 does by default. */
    char *norm = palloc(p, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[n++] = src[i];
        }
    }
    if (n && norm[n - 1] == '\n') n--;
    norm[n] = 0;
    p->src = norm;
    p->len = n;
    lex(p);
    const char *found = NULL;
    t->root = parse_body(p, NULL, &found);
out:
    realm_free(p->toks);
    realm_free(p);
    return rc;
}
