/*
 * grammar.c — GBNF grammars (llama.cpp's syntax) for constrained decoding: a recursive-descent
 * parser that compiles the text into rules of element sequences (repetitions expanded into helper
 * rules), static checks (undefined rules, left recursion, a start rule that cannot complete), and a
 * matcher that keeps the set of live parse stacks.
 *
 * Representation. Each rule has alternatives; an alternative is a run of elements ending in
 * EL_END; an element is a character class (EL_CHARS) or a rule reference (EL_REF). A parse stack
 * is a persistent linked list of frames (pos = the next element of some alternative, parent = the
 * frame to return to), hash-consed so that equal stacks are the same id and sets of stacks
 * deduplicate by id. The top frame of a live stack always sits on an EL_CHARS element; the empty
 * stack (id 0) in a set means "the text so far is complete". A reference that ends its
 * alternative does not push a return frame (a tail call), so x* loops run in constant depth.
 *
 * Token masking walks the vocabulary in byte-sorted order with one state per prefix depth: a
 * token shares the states of its common prefix with the previous one, and a dead prefix skips
 * every following token that shares it (a trie walk without a trie).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"

/* Terminals are >= EL_CHARS: a character class, or one token by id (<[id]>, <text>) or any token
 * but one (!<...>), matched only by whole tokens (rg_gmatch_accept_token, masking). */
enum { EL_END = 0, EL_REF = 1, EL_CHARS = 2, EL_TOKEN = 3, EL_NTOKEN = 4 };

struct elem {
    uint32_t type, val; /* val: rule index (EL_REF), class index (EL_CHARS) or token id */
};

struct cls {
    uint32_t ascii[4];   /* membership of code points < 128, negation applied */
    uint32_t r_off, r_n; /* sorted, merged ranges (before negation) */
    bool neg;
};

struct range {
    uint32_t lo, hi;
};

struct rg_grammar {
    struct elem *elems;
    uint32_t n_elems;
    uint32_t *alt_start; /* element index of each alternative */
    uint32_t *rule_alt;  /* rule r's alternatives: alt_start[rule_alt[r] .. rule_alt[r + 1]) */
    uint32_t n_rules, root;
    struct cls *cls;
    uint32_t n_cls;
    struct range *ranges;
    uint32_t n_ranges;
    bool has_tokens; /* some element is EL_TOKEN or EL_NTOKEN */
};

/* ======================================================================================== */
/* ---- parser ---- */

struct rule_build {
    char *name; /* NULL for generated rules */
    size_t name_len;
    uint32_t parent; /* the named rule a generated one belongs to (for messages) */
    bool defined;
    struct elem *el; /* alternatives, each ending in EL_END */
    size_t n, cap;
    uint32_t line; /* where first referenced (for "undefined rule" messages) */
};

struct gparser {
    const char *s;
    size_t n, i;
    char *err;
    size_t err_cap;
    int32_t rc;
    struct rule_build *rules;
    size_t n_rules, cap_rules;
    struct cls *cls;
    size_t n_cls, cap_cls;
    struct range *ranges;
    size_t n_ranges, cap_ranges;
    size_t total_elems;
    uint32_t cur_named; /* the named rule being parsed */
    int depth;
    int32_t (*token_of)(void *ctx, const char *text, size_t len);
    void *token_ctx;
};

static void pos_of(const struct gparser *p, size_t at, unsigned *line, unsigned *col) {
    unsigned l = 1, c = 1;
    for (size_t k = 0; k < at && k < p->n; k++) {
        if (p->s[k] == '\n')
            l++, c = 1;
        else
            c++;
    }
    *line = l;
    *col = c;
}

static int perr(struct gparser *p, int32_t rc, const char *what) {
    if (p->rc == REALM_OK) {
        unsigned line, col;
        pos_of(p, p->i, &line, &col);
        if (p->err && p->err_cap)
            rg_fmt(p->err, p->err_cap, "grammar: line %u col %u: %s", line, col, what);
        p->rc = rc;
    }
    return -1;
}

static int nomem(struct gparser *p) {
    return perr(p, REALM_E_NOMEM, "out of memory");
}

static int grow(void **ptr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*ptr, c * size);
    if (!q) return -1;
    *ptr = q;
    *cap = c;
    return 0;
}

static int new_rule(struct gparser *p, const char *name, size_t len, uint32_t *out) {
    if (p->n_rules >= (1u << 20)) return perr(p, REALM_E_LIMIT, "too many rules");
    if (grow((void **)&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules)) return nomem(p);
    struct rule_build *r = &p->rules[p->n_rules];
    memset(r, 0, sizeof *r);
    if (name) {
        r->name = malloc(len + 1);
        if (!r->name) return nomem(p);
        memcpy(r->name, name, len);
        r->name[len] = 0;
        r->name_len = len;
    }
    r->parent = name ? (uint32_t)p->n_rules : p->cur_named;
    *out = (uint32_t)p->n_rules++;
    return 0;
}

static int rule_by_name(struct gparser *p, const char *name, size_t len, uint32_t *out) {
    for (size_t k = 0; k < p->n_rules; k++) {
        struct rule_build *r = &p->rules[k];
        if (r->name && r->name_len == len && !memcmp(r->name, name, len)) {
            *out = (uint32_t)k;
            return 0;
        }
    }
    if (new_rule(p, name, len, out)) return -1;
    unsigned line, col;
    pos_of(p, p->i, &line, &col);
    p->rules[*out].line = line;
    return 0;
}

static int emit(struct gparser *p, uint32_t rule, uint32_t type, uint32_t val) {
    if (++p->total_elems > RG_GRAMMAR_MAX_ELEMS)
        return perr(p, REALM_E_LIMIT,
                    "grammar too large (too many elements after expanding repetitions)");
    struct rule_build *r = &p->rules[rule];
    if (grow((void **)&r->el, &r->cap, r->n + 1, sizeof *r->el)) return nomem(p);
    r->el[r->n].type = type;
    r->el[r->n].val = val;
    r->n++;
    return 0;
}

static int cmp_range(const void *a, const void *b) {
    const struct range *x = a, *y = b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

/* Adds a class from ranges[0..n) (sorted and merged here); *out is its index. */
static int add_class(struct gparser *p, struct range *rs, size_t n, bool neg, uint32_t *out) {
    if (n > 1) qsort(rs, n, sizeof *rs, cmp_range);
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (m && rs[k].lo <= rs[m - 1].hi + 1) {
            if (rs[k].hi > rs[m - 1].hi) rs[m - 1].hi = rs[k].hi;
        } else {
            rs[m++] = rs[k];
        }
    }
    if (grow((void **)&p->cls, &p->cap_cls, p->n_cls + 1, sizeof *p->cls) ||
        grow((void **)&p->ranges, &p->cap_ranges, p->n_ranges + m, sizeof *p->ranges))
        return nomem(p);
    struct cls *c = &p->cls[p->n_cls];
    memset(c, 0, sizeof *c);
    c->r_off = (uint32_t)p->n_ranges;
    c->r_n = (uint32_t)m;
    c->neg = neg;
    if (m) memcpy(p->ranges + p->n_ranges, rs, m * sizeof *rs);
    p->n_ranges += m;
    for (uint32_t cp = 0; cp < 128; cp++) {
        bool in = false;
        for (size_t k = 0; k < m && rs[k].lo <= cp; k++)
            if (cp <= rs[k].hi) in = true;
        if (in != neg) c->ascii[cp >> 5] |= 1u << (cp & 31);
    }
    *out = (uint32_t)p->n_cls++;
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes one UTF-8 code point of the source at p->i. */
static int src_utf8(struct gparser *p, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)p->s + p->i;
    size_t left = p->n - p->i;
    unsigned char b = u[0];
    uint32_t v, min;
    size_t len;
    if (b < 0x80)
        len = 1, v = b, min = 0;
    else if (b >= 0xC2 && b <= 0xDF)
        len = 2, v = b & 0x1F, min = 0x80;
    else if (b >= 0xE0 && b <= 0xEF)
        len = 3, v = b & 0x0F, min = 0x800;
    else if (b >= 0xF0 && b <= 0xF4)
        len = 4, v = b & 0x07, min = 0x10000;
    else
        return perr(p, REALM_E_FORMAT, "invalid UTF-8");
    if (left < len) return perr(p, REALM_E_FORMAT, "truncated UTF-8");
    for (size_t k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) return perr(p, REALM_E_FORMAT, "invalid UTF-8");
        v = v << 6 | (u[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return perr(p, REALM_E_FORMAT, "invalid UTF-8");
    p->i += len;
    *cp = v;
    return 0;
}

/* One character of a literal or class, with escapes: \x.. \u.... \U........ \t \r \n \\ \" \[ \]
 * \- \^ \/ \' */
static int parse_char(struct gparser *p, uint32_t *cp) {
    if (p->i >= p->n) return perr(p, REALM_E_FORMAT, "unexpected end of input");
    if (p->s[p->i] != '\\') return src_utf8(p, cp);
    p->i++;
    if (p->i >= p->n) return perr(p, REALM_E_FORMAT, "unexpected end of input after \\");
    char c = p->s[p->i++];
    int digits = 0;
    switch (c) {
    case 'x':
        digits = 2;
        break;
    case 'u':
        digits = 4;
        break;
    case 'U':
        digits = 8;
        break;
    case 't':
        *cp = '\t';
        return 0;
    case 'r':
        *cp = '\r';
        return 0;
    case 'n':
        *cp = '\n';
        return 0;
    case '\\':
    case '"':
    case '[':
    case ']':
    case '-':
    case '^':
    case '/':
    case '\'':
        *cp = (unsigned char)c;
        return 0;
    default:
        p->i--;
        return perr(p, REALM_E_FORMAT, "unknown escape");
    }
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        int h = p->i < p->n ? hexval(p->s[p->i]) : -1;
        if (h < 0) return perr(p, REALM_E_FORMAT, "expected hex digits in escape");
        v = v << 4 | (uint32_t)h;
        p->i++;
    }
    if (v > 0x10FFFF) return perr(p, REALM_E_FORMAT, "code point above U+10FFFF");
    *cp = v;
    return 0;
}

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Skips blanks and comments; newlines too when `newlines` (inside groups, after ::= and |). */
static void skip_space(struct gparser *p, bool newlines) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t')
            p->i++;
        else if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n')
                p->i++;
        } else if (newlines && (c == '\n' || c == '\r'))
            p->i++;
        else
            break;
    }
}

static int parse_alternatives(struct gparser *p, uint32_t rule, bool nested);

/* Moves elements [start, end) of rule `rule` into a new single-alternative rule, unless they are
 * already one reference; *out is the rule that matches the item once. */
static int item_rule(struct gparser *p, uint32_t rule, size_t start, uint32_t *out) {
    struct rule_build *r = &p->rules[rule];
    if (r->n - start == 1 && r->el[start].type == EL_REF) {
        *out = r->el[start].val;
        r->n = start;
        p->total_elems--;
        return 0;
    }
    uint32_t x;
    if (new_rule(p, NULL, 0, &x)) return -1;
    r = &p->rules[rule];
    size_t cnt = r->n - start;
    struct rule_build *xr = &p->rules[x];
    if (grow((void **)&xr->el, &xr->cap, cnt + 1, sizeof *xr->el)) return nomem(p);
    if (cnt) memcpy(xr->el, r->el + start, cnt * sizeof *r->el);
    xr->el[cnt].type = EL_END;
    xr->el[cnt].val = 0;
    xr->n = cnt + 1;
    xr->defined = true;
    p->total_elems++;
    r->n = start;
    *out = x;
    return 0;
}

/* S ::= x S | ε  (x at least zero times) */
static int star_rule(struct gparser *p, uint32_t x, uint32_t *out) {
    uint32_t s;
    if (new_rule(p, NULL, 0, &s)) return -1;
    p->rules[s].defined = true;
    if (emit(p, s, EL_REF, x) || emit(p, s, EL_REF, s) || emit(p, s, EL_END, 0) ||
        emit(p, s, EL_END, 0))
        return -1;
    *out = s;
    return 0;
}

/* O_k ::= x O_{k-1} | ε, O_1 ::= x | ε  (x at most k times) */
static int upto_rule(struct gparser *p, uint32_t x, uint32_t k, uint32_t *out) {
    uint32_t prev = 0;
    for (uint32_t j = 1; j <= k; j++) {
        uint32_t o;
        if (new_rule(p, NULL, 0, &o)) return -1;
        p->rules[o].defined = true;
        if (emit(p, o, EL_REF, x)) return -1;
        if (j > 1 && emit(p, o, EL_REF, prev)) return -1;
        if (emit(p, o, EL_END, 0) || emit(p, o, EL_END, 0)) return -1;
        prev = o;
    }
    *out = prev;
    return 0;
}

/* Applies x{min,max} (max UINT32_MAX: unbounded) to the item at [start, end) of `rule`. */
static int repeat(struct gparser *p, uint32_t rule, size_t start, uint32_t min, uint32_t max) {
    uint32_t x;
    if (item_rule(p, rule, start, &x)) return -1;
    for (uint32_t k = 0; k < min; k++)
        if (emit(p, rule, EL_REF, x)) return -1;
    if (max == UINT32_MAX) {
        uint32_t s;
        if (star_rule(p, x, &s) || emit(p, rule, EL_REF, s)) return -1;
    } else if (max > min) {
        uint32_t o;
        if (upto_rule(p, x, max - min, &o) || emit(p, rule, EL_REF, o)) return -1;
    }
    return 0;
}

static int parse_uint(struct gparser *p, uint32_t *out) {
    size_t b = p->i;
    uint64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        v = v * 10 + (uint64_t)(p->s[p->i++] - '0');
        if (v > RG_GRAMMAR_MAX_REPEAT) return perr(p, REALM_E_LIMIT, "repetition count too large");
    }
    if (p->i == b) return perr(p, REALM_E_FORMAT, "expected a number");
    *out = (uint32_t)v;
    return 0;
}

/* {m} {m,} {m,n} after an item. */
static int parse_braces(struct gparser *p, uint32_t *min, uint32_t *max) {
    p->i++;
    skip_space(p, true);
    if (parse_uint(p, min)) return -1;
    skip_space(p, true);
    *max = *min;
    if (p->i < p->n && p->s[p->i] == ',') {
        p->i++;
        skip_space(p, true);
        if (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
            if (parse_uint(p, max)) return -1;
            if (*max < *min) return perr(p, REALM_E_FORMAT, "repetition {m,n} with n < m");
        } else {
            *max = UINT32_MAX;
        }
        skip_space(p, true);
    }
    if (p->i >= p->n || p->s[p->i] != '}')
        return perr(p, REALM_E_FORMAT, "expected } in repetition");
    p->i++;
    return 0;
}

static int parse_literal(struct gparser *p, uint32_t rule) {
    p->i++;
    for (;;) {
        if (p->i >= p->n) return perr(p, REALM_E_FORMAT, "unterminated string literal");
        if (p->s[p->i] == '"') break;
        if (p->s[p->i] == '\n') return perr(p, REALM_E_FORMAT, "newline in string literal");
        uint32_t cp, c;
        if (parse_char(p, &cp)) return -1;
        struct range r = {cp, cp};
        if (add_class(p, &r, 1, false, &c) || emit(p, rule, EL_CHARS, c)) return -1;
    }
    p->i++;
    return 0;
}

static int parse_class(struct gparser *p, uint32_t rule) {
    p->i++;
    bool neg = false;
    if (p->i < p->n && p->s[p->i] == '^') neg = true, p->i++;
    struct range *rs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (p->i >= p->n) {
            rc = perr(p, REALM_E_FORMAT, "unterminated character class");
            break;
        }
        if (p->s[p->i] == ']') break;
        uint32_t lo, hi;
        if ((rc = parse_char(p, &lo))) break;
        hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            if ((rc = parse_char(p, &hi))) break;
            if (hi < lo) {
                rc = perr(p, REALM_E_FORMAT, "character range out of order");
                break;
            }
        }
        if (grow((void **)&rs, &cap, n + 1, sizeof *rs)) {
            rc = nomem(p);
            break;
        }
        rs[n].lo = lo;
        rs[n].hi = hi;
        n++;
    }
    if (rc == 0) {
        p->i++;
        uint32_t c;
        rc = add_class(p, rs, n, neg, &c);
        if (rc == 0) rc = emit(p, rule, EL_CHARS, c);
    }
    free(rs);
    return rc;
}

/* <[id]>, <text> (one token of the vocabulary, through the caller's resolver), with a leading !
 * for "any token but this one". */
static int parse_token_ref(struct gparser *p, uint32_t rule) {
    bool neg = p->s[p->i] == '!';
    p->i += neg ? 2 : 1;
    int64_t id = -1;
    if (p->i < p->n && p->s[p->i] == '[') {
        p->i++;
        size_t b = p->i;
        id = 0;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && id <= INT32_MAX)
            id = id * 10 + (p->s[p->i++] - '0');
        if (p->i == b || id > INT32_MAX)
            return perr(p, REALM_E_FORMAT, "expected a token id in <[...]>");
        if (p->n - p->i < 2 || p->s[p->i] != ']' || p->s[p->i + 1] != '>')
            return perr(p, REALM_E_FORMAT, "expected ]> after a token id");
        p->i += 2;
    } else {
        size_t b = p->i;
        while (p->i < p->n && p->s[p->i] != '>' && p->s[p->i] != '\n')
            p->i++;
        if (p->i >= p->n || p->s[p->i] != '>' || p->i == b)
            return perr(p, REALM_E_FORMAT, "expected <text> (a token's text)");
        if (!p->token_of) {
            p->i = b;
            return perr(p, REALM_E_FORMAT,
                        "token text needs a vocabulary (use <[id]> or rg_grammar_parse_ex)");
        }
        int32_t t = p->token_of(p->token_ctx, p->s + b - 1, p->i - b + 2); /* with its < > */
        if (t < 0) {
            p->i = b;
            return perr(p, REALM_E_FORMAT, "<text> is not exactly one token of the vocabulary");
        }
        p->i++;
        id = t;
    }
    return emit(p, rule, neg ? EL_NTOKEN : EL_TOKEN, (uint32_t)id);
}

/* One sequence of items (one alternative), appended to `rule` and ended with EL_END. */
static int parse_sequence(struct gparser *p, uint32_t rule, bool nested) {
    size_t last = SIZE_MAX; /* start of the last item (for postfix operators) */
    while (p->i < p->n) {
        char c = p->s[p->i];
        size_t here = p->rules[rule].n;
        if (c == '"') {
            if (parse_literal(p, rule)) return -1;
            last = here;
        } else if (c == '[') {
            if (parse_class(p, rule)) return -1;
            last = here;
        } else if (c == '.') {
            p->i++;
            uint32_t cls;
            if (add_class(p, NULL, 0, true, &cls) || emit(p, rule, EL_CHARS, cls)) return -1;
            last = here;
        } else if (is_word(c)) {
            size_t b = p->i;
            while (p->i < p->n && is_word(p->s[p->i]))
                p->i++;
            uint32_t ref;
            if (rule_by_name(p, p->s + b, p->i - b, &ref) || emit(p, rule, EL_REF, ref)) return -1;
            last = here;
        } else if (c == '(') {
            if (++p->depth > 100) return perr(p, REALM_E_LIMIT, "groups nested too deeply");
            p->i++;
            skip_space(p, true);
            uint32_t g;
            if (new_rule(p, NULL, 0, &g)) return -1;
            p->rules[g].defined = true;
            if (parse_alternatives(p, g, true)) return -1;
            if (p->i >= p->n || p->s[p->i] != ')') return perr(p, REALM_E_FORMAT, "expected )");
            p->i++;
            p->depth--;
            if (emit(p, rule, EL_REF, g)) return -1;
            last = here;
        } else if (c == '<' || (c == '!' && p->i + 1 < p->n && p->s[p->i + 1] == '<')) {
            if (parse_token_ref(p, rule)) return -1;
            last = here;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == SIZE_MAX)
                return perr(p, REALM_E_FORMAT, "repetition operator without an item before it");
            uint32_t min = 0, max = UINT32_MAX;
            if (c == '{') {
                if (parse_braces(p, &min, &max)) return -1;
            } else {
                p->i++;
                if (c == '+') min = 1;
                if (c == '?') max = 1;
            }
            if (repeat(p, rule, last, min, max)) return -1;
            last = SIZE_MAX;
        } else {
            break;
        }
        skip_space(p, nested);
    }
    return emit(p, rule, EL_END, 0);
}

static int parse_alternatives(struct gparser *p, uint32_t rule, bool nested) {
    if (parse_sequence(p, rule, nested)) return -1;
    while (p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        skip_space(p, true);
        if (parse_sequence(p, rule, nested)) return -1;
    }
    return 0;
}

static int parse_rule(struct gparser *p) {
    size_t b = p->i;
    while (p->i < p->n && is_word(p->s[p->i]))
        p->i++;
    if (p->i == b) return perr(p, REALM_E_FORMAT, "expected a rule name");
    uint32_t r;
    if (rule_by_name(p, p->s + b, p->i - b, &r)) return -1;
    if (p->rules[r].defined) {
        p->i = b;
        return perr(p, REALM_E_FORMAT, "rule defined twice");
    }
    p->rules[r].defined = true;
    p->cur_named = r;
    skip_space(p, false);
    if (p->n - p->i < 3 || memcmp(p->s + p->i, "::=", 3) != 0)
        return perr(p, REALM_E_FORMAT, "expected ::=");
    p->i += 3;
    skip_space(p, true);
    if (parse_alternatives(p, r, false)) return -1;
    if (p->i < p->n) {
        if (p->s[p->i] == '\r') p->i++;
        if (p->i >= p->n || p->s[p->i] != '\n')
            return perr(p, REALM_E_FORMAT, "unexpected character (expected the end of the rule)");
    }
    skip_space(p, true);
    return 0;
}

/* ---- static checks ---- */

static const char *rule_label(const struct gparser *p, uint32_t r) {
    const struct rule_build *rb = &p->rules[r];
    if (rb->name) return rb->name;
    const struct rule_build *pb = &p->rules[rb->parent];
    return pb->name ? pb->name : "?";
}

/* Flattens the built rules into g. */
static int flatten(struct gparser *p, struct rg_grammar *g) {
    size_t n_alts = 0;
    for (size_t r = 0; r < p->n_rules; r++)
        for (size_t k = 0; k < p->rules[r].n; k++)
            if (p->rules[r].el[k].type == EL_END) n_alts++;
    g->elems = malloc((p->total_elems + 1) * sizeof *g->elems);
    g->alt_start = malloc((n_alts + 1) * sizeof *g->alt_start);
    g->rule_alt = malloc((p->n_rules + 1) * sizeof *g->rule_alt);
    if (!g->elems || !g->alt_start || !g->rule_alt) return nomem(p);
    uint32_t e = 0, a = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        g->rule_alt[r] = a;
        const struct rule_build *rb = &p->rules[r];
        bool at_start = true;
        for (size_t k = 0; k < rb->n; k++) {
            if (at_start) g->alt_start[a++] = e;
            g->elems[e++] = rb->el[k];
            at_start = rb->el[k].type == EL_END;
            if (rb->el[k].type >= EL_TOKEN) g->has_tokens = true;
        }
    }
    g->rule_alt[p->n_rules] = a;
    g->n_elems = e;
    g->n_rules = (uint32_t)p->n_rules;
    g->cls = p->cls;
    g->n_cls = (uint32_t)p->n_cls;
    if (!p->ranges && !(p->ranges = malloc(sizeof *p->ranges)))
        return nomem(p); /* never NULL: classes index it */
    g->ranges = p->ranges;
    g->n_ranges = (uint32_t)p->n_ranges;
    p->cls = NULL;
    p->ranges = NULL;
    return 0;
}

/* nullable[r]: r derives the empty string; productive[r]: r derives some finite string. */
static void fixpoints(const struct rg_grammar *g, bool *nullable, bool *productive) {
    for (int pass = 0; pass < 2; pass++) {
        bool *set = pass ? productive : nullable;
        bool changed = true;
        while (changed) {
            changed = false;
            for (uint32_t r = 0; r < g->n_rules; r++) {
                if (set[r]) continue;
                for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1] && !set[r]; a++) {
                    bool ok = true;
                    for (uint32_t e = g->alt_start[a]; g->elems[e].type != EL_END && ok; e++) {
                        const struct elem *el = &g->elems[e];
                        if (el->type >= EL_CHARS)
                            ok = pass == 1;
                        else
                            ok = set[el->val];
                    }
                    if (ok) set[r] = changed = true;
                }
            }
        }
    }
}

/* Left recursion: a rule that can reach itself without consuming input would expand forever.
 * Iterative DFS over "r can start with s" edges (colours: 0 new, 1 on the path, 2 done). */
static int check_left_recursion(struct gparser *p, const struct rg_grammar *g,
                                const bool *nullable) {
    uint8_t *colour = calloc(g->n_rules, 1);
    struct frame {
        uint32_t rule, alt, e;
    } *st = malloc((g->n_rules + 1) * sizeof *st);
    int rc = 0;
    if (!colour || !st) rc = nomem(p);
    for (uint32_t r0 = 0; rc == 0 && r0 < g->n_rules; r0++) {
        if (colour[r0]) continue;
        size_t top = 0;
        st[top++] = (struct frame){r0, g->rule_alt[r0], g->alt_start[g->rule_alt[r0]]};
        colour[r0] = 1;
        while (top && rc == 0) {
            struct frame *f = &st[top - 1];
            if (f->alt >= g->rule_alt[f->rule + 1]) {
                colour[f->rule] = 2;
                top--;
                continue;
            }
            const struct elem *el = &g->elems[f->e];
            bool next_alt = el->type == EL_END || el->type >= EL_CHARS ||
                            (el->type == EL_REF && !nullable[el->val]);
            uint32_t target = el->type == EL_REF ? el->val : UINT32_MAX;
            if (next_alt) {
                f->alt++;
                if (f->alt < g->rule_alt[f->rule + 1]) f->e = g->alt_start[f->alt];
            } else {
                f->e++;
            }
            if (target == UINT32_MAX) continue;
            if (colour[target] == 1) {
                char msg[160];
                rg_fmt(msg, sizeof msg,
                       "left recursion through rule '%s' (it can reach itself without consuming "
                       "input)",
                       rule_label(p, target));
                p->i = 0;
                if (p->err && p->err_cap) rg_fmt(p->err, p->err_cap, "grammar: %s", msg);
                p->rc = REALM_E_FORMAT;
                rc = -1;
            } else if (colour[target] == 0) {
                colour[target] = 1;
                st[top++] =
                    (struct frame){target, g->rule_alt[target], g->alt_start[g->rule_alt[target]]};
            }
        }
    }
    free(colour);
    free(st);
    return rc;
}

static int check_grammar(struct gparser *p, struct rg_grammar *g) {
    bool *nullable = calloc(g->n_rules, sizeof *nullable),
         *productive = calloc(g->n_rules, sizeof *productive);
    int rc = 0;
    if (!nullable || !productive) rc = nomem(p);
    if (rc == 0) {
        fixpoints(g, nullable, productive);
        rc = check_left_recursion(p, g, nullable);
    }
    if (rc == 0 && !productive[g->root]) {
        if (p->err && p->err_cap)
            rg_fmt(p->err, p->err_cap,
                   "grammar: rule '%s' can never complete (every alternative recurses forever)",
                   rule_label(p, g->root));
        p->rc = REALM_E_FORMAT;
        rc = -1;
    }
    free(nullable);
    free(productive);
    return rc;
}

void rg_grammar_free(struct rg_grammar *g) {
    if (!g) return;
    free(g->elems);
    free(g->alt_start);
    free(g->rule_alt);
    free(g->cls);
    free(g->ranges);
    free(g);
}

int32_t rg_grammar_parse(const char *src, size_t len, const char *root, struct rg_grammar **out,
                         char *err, size_t err_cap) {
    return rg_grammar_parse_ex(src, len, root, NULL, NULL, out, err, err_cap);
}

int32_t rg_grammar_parse_ex(const char *src, size_t len, const char *root,
                            int32_t (*token_of)(void *ctx, const char *text, size_t len), void *ctx,
                            struct rg_grammar **out, char *err, size_t err_cap) {
    *out = NULL;
    if (err && err_cap) err[0] = 0;
    if (!root) root = "root";
    struct gparser p = {
        .s = src, .n = len, .err = err, .err_cap = err_cap, .token_of = token_of, .token_ctx = ctx};
    if (len > RG_GRAMMAR_MAX_SOURCE) {
        perr(&p, REALM_E_LIMIT, "grammar text too large");
        return p.rc;
    }
    skip_space(&p, true);
    if (p.i >= p.n) perr(&p, REALM_E_FORMAT, "empty grammar");
    while (p.rc == REALM_OK && p.i < p.n)
        parse_rule(&p);
    uint32_t root_rule = UINT32_MAX;
    for (size_t k = 0; p.rc == REALM_OK && k < p.n_rules; k++) {
        struct rule_build *r = &p.rules[k];
        if (!r->defined) {
            if (err && err_cap)
                rg_fmt(err, err_cap, "grammar: line %u: undefined rule '%s'", r->line, r->name);
            p.rc = REALM_E_FORMAT;
        } else if (r->name && !strcmp(r->name, root)) {
            root_rule = (uint32_t)k;
        }
    }
    if (p.rc == REALM_OK && root_rule == UINT32_MAX) {
        if (err && err_cap) rg_fmt(err, err_cap, "grammar: no rule named '%s'", root);
        p.rc = REALM_E_FORMAT;
    }
    struct rg_grammar *g = NULL;
    if (p.rc == REALM_OK) {
        g = calloc(1, sizeof *g);
        if (!g)
            nomem(&p);
        else {
            g->root = root_rule;
            if (flatten(&p, g) == 0) check_grammar(&p, g);
        }
    }
    for (size_t k = 0; k < p.n_rules; k++) {
        free(p.rules[k].name);
        free(p.rules[k].el);
    }
    free(p.rules);
    free(p.cls);
    free(p.ranges);
    if (p.rc != REALM_OK) {
        rg_grammar_free(g);
        return p.rc;
    }
    *out = g;
    return REALM_OK;
}

/* ======================================================================================== */
/* ---- matcher ---- */

struct gnode {
    uint32_t pos, parent;
};

struct utf8st {
    uint32_t cp;  /* bits so far */
    uint8_t need; /* continuation bytes still expected */
    uint8_t len;  /* sequence length */
};

#define MASK_MEMO 8

struct rg_gmatch {
    const struct rg_grammar *g;
    /* hash-consed frames; id 0 is the empty stack */
    struct gnode *nodes;
    uint32_t *next, *stamp;
    uint32_t n_nodes, cap_nodes;
    uint32_t *bucket;
    uint32_t n_buckets; /* power of two */
    uint32_t gen;
    /* scratch and sets: ar holds the current set at [0, n_cur) and temporary sets after it */
    uint32_t *ar;
    size_t ar_len, ar_cap;
    size_t n_cur;
    struct utf8st u;
    struct gnode *work;
    size_t n_work, cap_work;
    uint32_t live_mark; /* nodes below this id are referenced by the current set */
    uint32_t gc_floor;  /* frames kept by the last compaction (compact again at 4x) */
    float *logit_copy;  /* rg_sample_grammar's copy of the logits */
    int32_t n_copy;
    /* masks of recent states: inside a JSON string every step starts from the same set of frames
     * (hash-consing gives them the same ids), so the full mask is a copy. Valid until the frame
     * ids change (compact, reset). */
    struct mask_memo {
        const struct rg_vocab *v; /* NULL: empty slot */
        uint32_t *set;
        size_t n;
        struct utf8st u;
        uint8_t *bits; /* allowed non-EOG tokens */
        uint64_t used;
    } memo[MASK_MEMO];
    uint64_t memo_clock;
};

static uint32_t node_hash(uint32_t pos, uint32_t parent) {
    return (pos * 0x9E3779B1u) ^ (parent * 0x85EBCA77u + (parent >> 16));
}

static int32_t rehash(struct rg_gmatch *m, uint32_t n_buckets) {
    uint32_t *b = malloc((size_t)n_buckets * sizeof *b);
    if (!b) return REALM_E_NOMEM;
    for (uint32_t k = 0; k < n_buckets; k++)
        b[k] = UINT32_MAX;
    for (uint32_t id = 1; id < m->n_nodes; id++) { /* in id order: newest at each chain's head */
        uint32_t h = node_hash(m->nodes[id].pos, m->nodes[id].parent) & (n_buckets - 1);
        m->next[id] = b[h];
        b[h] = id;
    }
    free(m->bucket);
    m->bucket = b;
    m->n_buckets = n_buckets;
    return REALM_OK;
}

/* The id of frame (pos, parent), creating it if new. 0 on failure (id 0 is never a frame). */
static uint32_t intern(struct rg_gmatch *m, uint32_t pos, uint32_t parent, int32_t *rc) {
    uint32_t h = node_hash(pos, parent) & (m->n_buckets - 1);
    for (uint32_t id = m->bucket[h]; id != UINT32_MAX; id = m->next[id])
        if (m->nodes[id].pos == pos && m->nodes[id].parent == parent) return id;
    if (m->n_nodes >= RG_GRAMMAR_MAX_NODES) {
        *rc = REALM_E_LIMIT;
        return 0;
    }
    if (m->n_nodes == m->cap_nodes) {
        uint32_t cap = m->cap_nodes * 2;
        struct gnode *n = realloc(m->nodes, (size_t)cap * sizeof *n);
        if (n) m->nodes = n;
        uint32_t *nx = n ? realloc(m->next, (size_t)cap * sizeof *nx) : NULL;
        if (nx) m->next = nx;
        uint32_t *st = nx ? realloc(m->stamp, (size_t)cap * sizeof *st) : NULL;
        if (!st) {
            *rc = REALM_E_NOMEM;
            return 0;
        }
        m->stamp = st;
        memset(m->stamp + m->cap_nodes, 0, (size_t)(cap - m->cap_nodes) * sizeof *st);
        m->cap_nodes = cap;
    }
    uint32_t id = m->n_nodes++;
    m->nodes[id].pos = pos;
    m->nodes[id].parent = parent;
    m->stamp[id] = 0;
    m->next[id] = m->bucket[h];
    m->bucket[h] = id;
    if (m->n_nodes > m->n_buckets && (*rc = rehash(m, m->n_buckets * 2)) != REALM_OK) return 0;
    return id;
}

/* Drops every frame created at or after `mark` (they are at the heads of their chains). */
static void rollback(struct rg_gmatch *m, uint32_t mark) {
    while (m->n_nodes > mark) {
        uint32_t id = --m->n_nodes;
        uint32_t h = node_hash(m->nodes[id].pos, m->nodes[id].parent) & (m->n_buckets - 1);
        m->bucket[h] = m->next[id];
    }
}

static int32_t ar_reserve(struct rg_gmatch *m, size_t extra) {
    if (m->ar_len + extra <= m->ar_cap) return REALM_OK;
    size_t cap = m->ar_cap ? m->ar_cap : 256;
    while (cap < m->ar_len + extra)
        cap *= 2;
    uint32_t *a = realloc(m->ar, cap * sizeof *a);
    if (!a) return REALM_E_NOMEM;
    m->ar = a;
    m->ar_cap = cap;
    return REALM_OK;
}

static int32_t push_work(struct rg_gmatch *m, uint32_t pos, uint32_t parent) {
    if (m->n_work == m->cap_work) {
        size_t cap = m->cap_work ? m->cap_work * 2 : 64;
        struct gnode *w = realloc(m->work, cap * sizeof *w);
        if (!w) return REALM_E_NOMEM;
        m->work = w;
        m->cap_work = cap;
    }
    m->work[m->n_work].pos = pos;
    m->work[m->n_work].parent = parent;
    m->n_work++;
    return REALM_OK;
}

/* Expands the queued work items (position, continuation) into stacks whose top is a character
 * class (or the empty stack), appended at m->ar[m->ar_len...]; *count gets their number. */
static int32_t expand(struct rg_gmatch *m, size_t *count) {
    const struct rg_grammar *g = m->g;
    int32_t rc = REALM_OK;
    bool empty_added = false;
    size_t start = m->ar_len, n = 0;
    if (++m->gen == 0) { /* stamps wrapped: clear them */
        memset(m->stamp, 0, (size_t)m->cap_nodes * sizeof *m->stamp);
        m->gen = 1;
    }
    while (m->n_work) {
        struct gnode w = m->work[--m->n_work];
        const struct elem *el = &g->elems[w.pos];
        if (el->type == EL_END) {
            if (w.parent == 0) {
                if (!empty_added) {
                    empty_added = true;
                    if ((rc = ar_reserve(m, start + n + 1 - m->ar_len))) break;
                    m->ar[start + n++] = 0;
                }
            } else {
                struct gnode ret = m->nodes[w.parent];
                if ((rc = push_work(m, ret.pos, ret.parent))) break;
            }
            continue;
        }
        uint32_t id = intern(m, w.pos, w.parent, &rc);
        if (!id) break;
        if (m->stamp[id] == m->gen) continue;
        m->stamp[id] = m->gen;
        if (el->type >= EL_CHARS) {
            if (n >= RG_GRAMMAR_MAX_STACKS) {
                rc = REALM_E_LIMIT;
                break;
            }
            if ((rc = ar_reserve(m, start + n + 1 - m->ar_len))) break;
            m->ar[start + n++] = id;
            continue;
        }
        uint32_t cont = w.parent;
        if (g->elems[w.pos + 1].type != EL_END && !(cont = intern(m, w.pos + 1, w.parent, &rc)))
            break;
        uint32_t r = el->val;
        for (uint32_t a = g->rule_alt[r + 1]; a-- > g->rule_alt[r];)
            if ((rc = push_work(m, g->alt_start[a], cont))) break;
        if (rc) break;
    }
    m->n_work = 0;
    *count = n;
    return rc;
}

static bool class_has(const struct rg_grammar *g, uint32_t c, uint32_t cp) {
    const struct cls *k = &g->cls[c];
    if (cp < 128) return k->ascii[cp >> 5] >> (cp & 31) & 1;
    const struct range *r = g->ranges + k->r_off;
    uint32_t lo = 0, hi = k->r_n;
    while (lo < hi) { /* first range with r.hi >= cp */
        uint32_t mid = (lo + hi) / 2;
        if (r[mid].hi < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    bool in = lo < k->r_n && r[lo].lo <= cp;
    return in != k->neg;
}

/* Whether class c contains any code point of [lo, hi]. */
static bool class_meets(const struct rg_grammar *g, uint32_t c, uint32_t lo, uint32_t hi) {
    const struct cls *k = &g->cls[c];
    const struct range *r = g->ranges + k->r_off;
    for (uint32_t j = 0; j < k->r_n; j++) {
        if (k->neg) {
            if (r[j].lo <= lo && r[j].hi >= hi) return false; /* merged: one range covers all */
        } else if (r[j].lo <= hi && r[j].hi >= lo) {
            return true;
        }
    }
    return k->neg;
}

/* Advances the set in[0..n) by code point cp into a new set at ar[ar_len...]. `in` may point
 * into ar: it is read in full before anything is written. */
static int32_t advance_cp(struct rg_gmatch *m, const uint32_t *in, size_t n, uint32_t cp,
                          size_t *out_n) {
    const struct rg_grammar *g = m->g;
    for (size_t k = n; k-- > 0;) {
        uint32_t id = in[k];
        if (!id) continue;
        struct gnode nd = m->nodes[id];
        const struct elem *el = &g->elems[nd.pos];
        if (el->type != EL_CHARS || !class_has(g, el->val, cp)) continue;
        int32_t rc = push_work(m, nd.pos + 1, nd.parent);
        if (rc) return rc;
    }
    return expand(m, out_n);
}

/* Whether some stack of the set could take a code point in [lo, hi] (a partial UTF-8 sequence). */
static bool set_meets(const struct rg_gmatch *m, const uint32_t *set, size_t n, uint32_t lo,
                      uint32_t hi) {
    for (size_t k = 0; k < n; k++) {
        uint32_t id = set[k];
        const struct elem *el = id ? &m->g->elems[m->nodes[id].pos] : NULL;
        if (el && el->type == EL_CHARS && class_meets(m->g, el->val, lo, hi)) return true;
    }
    return false;
}

/* The code points a partial UTF-8 sequence u (u->need > 0) can still complete to, as [*lo, *hi]:
 * the bits so far followed by any continuation bits, cut to the sequence length's valid range
 * (E0 and F0 leads carry no value bits: without the cut [0, 0xFFF] / [0, 0x3FFFF] would meet
 * ASCII classes, so an overlong lead byte looked like a possible '"' and led to a dead end) and
 * past the surrogates. False when none is valid. */
static const uint32_t utf8_min[5] = {0, 0, 0x80, 0x800, 0x10000};

static bool partial_range(const struct utf8st *u, uint32_t *lo, uint32_t *hi) {
    uint32_t shift = 6u * u->need;
    uint32_t l = u->cp << shift, h = l | ((1u << shift) - 1);
    if (l < utf8_min[u->len]) l = utf8_min[u->len];
    if (h > 0x10FFFF) h = 0x10FFFF;
    if (l > h || (l >= 0xD800 && h <= 0xDFFF)) return false;
    *lo = l;
    *hi = h;
    return true;
}

/* One byte from state (set at [*off, *off + *n), utf8 *u): on success the new set is at
 * [*off, *off + *n) (appended at ar_len when a code point completed; same set otherwise).
 * REALM_E_INVALID: rejected. */
static int32_t step_byte(struct rg_gmatch *m, size_t *off, size_t *n, struct utf8st *u,
                         unsigned char b) {
    uint32_t cp;
    if (u->need == 0) {
        if (b < 0x80) {
            cp = b;
            goto full;
        }
        if (b >= 0xC2 && b <= 0xDF)
            u->len = 2, u->cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF)
            u->len = 3, u->cp = b & 0x0F;
        else if (b >= 0xF0 && b <= 0xF4)
            u->len = 4, u->cp = b & 0x07;
        else
            return REALM_E_INVALID;
        u->need = (uint8_t)(u->len - 1);
    } else {
        if ((b & 0xC0) != 0x80) return REALM_E_INVALID;
        u->cp = u->cp << 6 | (b & 0x3F);
        u->need--;
        if (u->need == 0) {
            cp = u->cp;
            if (cp < utf8_min[u->len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return REALM_E_INVALID;
            goto full;
        }
    }
    {
        uint32_t lo, hi;
        if (!partial_range(u, &lo, &hi) || !set_meets(m, m->ar + *off, *n, lo, hi))
            return REALM_E_INVALID;
        return REALM_OK;
    }
full : {
    size_t start = m->ar_len, cnt;
    int32_t rc = advance_cp(m, m->ar + *off, *n, cp, &cnt);
    if (rc) return rc;
    if (cnt == 0) return REALM_E_INVALID;
    m->ar_len = start + cnt;
    *off = start;
    *n = cnt;
    return REALM_OK;
}
}

/* Runs s[0..len) from the current state; on success (*off, *n, *u) hold the resulting state (a set
 * in the scratch part of ar, or the current set itself). ar_len and nodes grow (caller rolls
 * back or commits). */
static int32_t run_bytes(struct rg_gmatch *m, const char *s, size_t len, size_t *off, size_t *n,
                         struct utf8st *u) {
    *off = 0;
    *n = m->n_cur;
    *u = m->u;
    for (size_t k = 0; k < len; k++) {
        int32_t rc = step_byte(m, off, n, u, (unsigned char)s[k]);
        if (rc) return rc;
    }
    return REALM_OK;
}

/* Rebuilds the frame table with only the frames the current set uses (called when it has grown
 * well beyond them), so a long generation does not keep every frame it ever made. */
static void memo_clear(struct rg_gmatch *m) {
    for (int k = 0; k < MASK_MEMO; k++) {
        free(m->memo[k].set);
        free(m->memo[k].bits);
        memset(&m->memo[k], 0, sizeof m->memo[k]);
    }
}

static int32_t compact(struct rg_gmatch *m) {
    memo_clear(m);
    uint32_t old_n = m->n_nodes;
    struct gnode *old = malloc((size_t)old_n * sizeof *old);
    uint32_t *map = calloc(old_n, sizeof *map), *chain = NULL;
    size_t n_chain = 0, cap_chain = 0;
    int32_t rc = (!old || !map) ? REALM_E_NOMEM : REALM_OK;
    if (rc == REALM_OK) {
        memcpy(old, m->nodes, (size_t)old_n * sizeof *old);
        rollback(m, 1);
    }
    for (size_t k = 0; rc == REALM_OK && k < m->n_cur; k++) {
        n_chain = 0;
        for (uint32_t id = m->ar[k]; id && !map[id]; id = old[id].parent) {
            if (grow((void **)&chain, &cap_chain, n_chain + 1, sizeof *chain)) {
                rc = REALM_E_NOMEM;
                break;
            }
            chain[n_chain++] = id;
        }
        while (rc == REALM_OK && n_chain) {
            uint32_t id = chain[--n_chain];
            uint32_t par = old[id].parent ? map[old[id].parent] : 0;
            map[id] = intern(m, old[id].pos, par, &rc);
        }
        if (rc == REALM_OK && m->ar[k]) m->ar[k] = map[m->ar[k]];
    }
    free(old);
    free(map);
    free(chain);
    m->live_mark = m->n_nodes;
    m->gc_floor = m->n_nodes;
    return rc;
}

/* Makes the state at (off, n, u) the current one. */
static int32_t commit(struct rg_gmatch *m, size_t off, size_t n, struct utf8st u) {
    if (off != 0) memmove(m->ar, m->ar + off, n * sizeof *m->ar);
    m->n_cur = n;
    m->ar_len = n;
    m->u = u;
    m->live_mark = m->n_nodes;
    if (m->n_nodes > 65536 && m->n_nodes / 4 > m->gc_floor) return compact(m);
    return REALM_OK;
}

int32_t rg_gmatch_reset(struct rg_gmatch *m) {
    memo_clear(m);
    rollback(m, 1);
    m->ar_len = 0;
    m->n_cur = 0;
    memset(&m->u, 0, sizeof m->u);
    uint32_t r = m->g->root;
    int32_t rc = REALM_OK;
    for (uint32_t a = m->g->rule_alt[r + 1]; a-- > m->g->rule_alt[r];)
        if ((rc = push_work(m, m->g->alt_start[a], 0))) return rc;
    size_t n;
    if ((rc = expand(m, &n))) return rc;
    m->n_cur = m->ar_len = n;
    m->live_mark = m->n_nodes;
    return REALM_OK;
}

int32_t rg_gmatch_new(const struct rg_grammar *g, struct rg_gmatch **out) {
    *out = NULL;
    struct rg_gmatch *m = calloc(1, sizeof *m);
    if (!m) return REALM_E_NOMEM;
    m->g = g;
    m->cap_nodes = 1024;
    m->nodes = malloc(m->cap_nodes * sizeof *m->nodes);
    m->next = malloc(m->cap_nodes * sizeof *m->next);
    m->stamp = calloc(m->cap_nodes, sizeof *m->stamp);
    m->n_nodes = 1; /* id 0: the empty stack */
    int32_t rc = (!m->nodes || !m->next || !m->stamp) ? REALM_E_NOMEM : rehash(m, 1024);
    if (rc == REALM_OK) {
        m->nodes[0].pos = m->nodes[0].parent = 0;
        rc = rg_gmatch_reset(m);
    }
    if (rc) {
        rg_gmatch_free(m);
        return rc;
    }
    *out = m;
    return REALM_OK;
}

void rg_gmatch_free(struct rg_gmatch *m) {
    if (!m) return;
    free(m->nodes);
    free(m->next);
    free(m->stamp);
    free(m->bucket);
    free(m->ar);
    free(m->work);
    free(m->logit_copy);
    memo_clear(m);
    free(m);
}

static void discard(struct rg_gmatch *m) {
    rollback(m, m->live_mark);
    m->ar_len = m->n_cur;
}

int32_t rg_gmatch_advance(struct rg_gmatch *m, const char *s, size_t n) {
    size_t off, cnt;
    struct utf8st u;
    int32_t rc = run_bytes(m, s, n, &off, &cnt, &u);
    if (rc) {
        discard(m);
        return rc;
    }
    return commit(m, off, cnt, u);
}

bool rg_gmatch_accepts(struct rg_gmatch *m, const char *s, size_t n) {
    size_t off, cnt;
    struct utf8st u;
    int32_t rc = run_bytes(m, s, n, &off, &cnt, &u);
    discard(m);
    return rc == REALM_OK;
}

bool rg_gmatch_complete(const struct rg_gmatch *m) {
    if (m->u.need) return false;
    for (size_t k = 0; k < m->n_cur; k++)
        if (m->ar[k] == 0) return true;
    return false;
}

bool rg_gmatch_done(const struct rg_gmatch *m) {
    return m->u.need == 0 && m->n_cur == 1 && m->ar[0] == 0;
}

/* ======================================================================================== */
/* ---- vocabulary ---- */

struct rg_vocab {
    int32_t n;
    uint32_t *off, *len; /* piece of token t: bytes[off[t] .. off[t] + len[t]) */
    char *bytes;
    size_t n_bytes, cap_bytes;
    uint8_t *eog;
    int32_t *sorted; /* non-empty, non-EOG tokens in byte order */
    uint32_t *lcp;   /* common prefix length of sorted[k] with sorted[k - 1] */
    int32_t n_sorted;
    uint32_t max_len;
};

int32_t rg_vocab_new(int32_t n_vocab, struct rg_vocab **out) {
    *out = NULL;
    if (n_vocab <= 0) return REALM_E_INVALID;
    struct rg_vocab *v = calloc(1, sizeof *v);
    if (!v) return REALM_E_NOMEM;
    v->n = n_vocab;
    v->off = calloc((size_t)n_vocab, sizeof *v->off);
    v->len = calloc((size_t)n_vocab, sizeof *v->len);
    v->eog = calloc((size_t)n_vocab, 1);
    if (!v->off || !v->len || !v->eog) {
        rg_vocab_free(v);
        return REALM_E_NOMEM;
    }
    *out = v;
    return REALM_OK;
}

void rg_vocab_free(struct rg_vocab *v) {
    if (!v) return;
    free(v->off);
    free(v->len);
    free(v->bytes);
    free(v->eog);
    free(v->sorted);
    free(v->lcp);
    free(v);
}

int32_t rg_vocab_size(const struct rg_vocab *v) {
    return v->n;
}

int32_t rg_vocab_set(struct rg_vocab *v, int32_t token, const char *piece, size_t len) {
    if (token < 0 || token >= v->n || len > UINT32_MAX / 2) return REALM_E_INVALID;
    if (grow((void **)&v->bytes, &v->cap_bytes, v->n_bytes + len + 1, 1)) return REALM_E_NOMEM;
    if (len) memcpy(v->bytes + v->n_bytes, piece, len);
    v->off[token] = (uint32_t)v->n_bytes;
    v->len[token] = (uint32_t)len;
    v->n_bytes += len;
    return REALM_OK;
}

int32_t rg_vocab_set_eog(struct rg_vocab *v, int32_t token) {
    if (token < 0 || token >= v->n) return REALM_E_INVALID;
    v->eog[token] = 1;
    return REALM_OK;
}

static const struct rg_vocab *g_sort_vocab; /* valid only during one qsort (single-threaded) */
static int cmp_piece(const void *a, const void *b) {
    const struct rg_vocab *v = g_sort_vocab;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = v->len[x], ly = v->len[y];
    int c = memcmp(v->bytes + v->off[x], v->bytes + v->off[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return (x > y) - (x < y);
}

int32_t rg_vocab_build(struct rg_vocab *v) {
    free(v->sorted);
    free(v->lcp);
    v->sorted = malloc((size_t)v->n * sizeof *v->sorted);
    v->lcp = malloc((size_t)v->n * sizeof *v->lcp);
    if (!v->sorted || !v->lcp) return REALM_E_NOMEM;
    v->n_sorted = 0;
    v->max_len = 0;
    for (int32_t t = 0; t < v->n; t++) {
        if (v->len[t] == 0 || v->eog[t]) continue;
        v->sorted[v->n_sorted++] = t;
        if (v->len[t] > v->max_len) v->max_len = v->len[t];
    }
    g_sort_vocab = v;
    qsort(v->sorted, (size_t)v->n_sorted, sizeof *v->sorted, cmp_piece);
    g_sort_vocab = NULL;
    for (int32_t k = 0; k < v->n_sorted; k++) {
        uint32_t l = 0;
        if (k > 0) {
            int32_t a = v->sorted[k - 1], b = v->sorted[k];
            const char *pa = v->bytes + v->off[a], *pb = v->bytes + v->off[b];
            uint32_t lim = v->len[a] < v->len[b] ? v->len[a] : v->len[b];
            while (l < lim && pa[l] == pb[l])
                l++;
        }
        v->lcp[k] = l;
    }
    return REALM_OK;
}

#ifdef __wasm__
int32_t rg_vocab_load(int32_t model, int32_t n_vocab, const int32_t *eog, size_t n_eog,
                      struct rg_vocab **out) {
    struct rg_vocab *v;
    int32_t rc = rg_vocab_new(n_vocab, &v);
    if (rc) return rc;
    char buf[256];
    char *big = NULL;
    for (int32_t t = 0; rc == REALM_OK && t < n_vocab; t++) {
        int32_t len = realm_token_piece(model, t, buf, (int32_t)sizeof buf);
        if (len < 0) {
            rc = len;
            break;
        }
        const char *src = buf;
        if ((size_t)len > sizeof buf) { /* a long piece: fetch it again into a fitting buffer */
            char *b2 = realloc(big, (size_t)len);
            if (!b2) {
                rc = REALM_E_NOMEM;
                break;
            }
            big = b2;
            int32_t l2 = realm_token_piece(model, t, big, len);
            if (l2 != len) {
                rc = l2 < 0 ? l2 : REALM_E_STATE;
                break;
            }
            src = big;
        }
        rc = rg_vocab_set(v, t, src, (size_t)len);
    }
    free(big);
    for (size_t k = 0; rc == REALM_OK && k < n_eog; k++)
        rc = rg_vocab_set_eog(v, eog[k]);
    if (rc == REALM_OK) rc = rg_vocab_build(v);
    if (rc) {
        rg_vocab_free(v);
        return rc;
    }
    *out = v;
    return REALM_OK;
}
#endif

/* ======================================================================================== */
/* ---- token operations ---- */

static bool token_matches(const struct elem *el, int32_t token) {
    return (el->type == EL_TOKEN && el->val == (uint32_t)token) ||
           (el->type == EL_NTOKEN && el->val != (uint32_t)token);
}

/* The stacks of the current set whose top is a token element matching `token`, advanced past
 * it: a set appended at ar[ar_len...] with *count entries (0: none). Token elements only match at
 * a code point boundary. */
static int32_t token_step(struct rg_gmatch *m, int32_t token, size_t *count) {
    *count = 0;
    if (m->u.need || !m->g->has_tokens) return REALM_OK;
    for (size_t k = m->n_cur; k-- > 0;) {
        uint32_t id = m->ar[k];
        if (!id || !token_matches(&m->g->elems[m->nodes[id].pos], token)) continue;
        int32_t rc = push_work(m, m->nodes[id].pos + 1, m->nodes[id].parent);
        if (rc) return rc;
    }
    return m->n_work ? expand(m, count) : REALM_OK;
}

bool rg_gmatch_allows(struct rg_gmatch *m, const struct rg_vocab *v, int32_t token) {
    if (token < 0 || token >= v->n) return false;
    if (m->g->has_tokens) {
        size_t c;
        int32_t rc = token_step(m, token, &c);
        discard(m);
        if (rc == REALM_OK && c) return true;
    }
    if (v->eog[token]) return rg_gmatch_complete(m);
    if (v->len[token] == 0) return false;
    return rg_gmatch_accepts(m, v->bytes + v->off[token], v->len[token]);
}

/* Token elements and text both may take a token: the new state is the union of both ways. */
static int32_t accept_token_union(struct rg_gmatch *m, const struct rg_vocab *v, int32_t token) {
    size_t base = m->ar_len, c_tok;
    int32_t rc = token_step(m, token, &c_tok);
    if (rc) {
        discard(m);
        return rc;
    }
    m->ar_len = base + c_tok;
    size_t off = 0, c_txt = 0;
    struct utf8st u = m->u;
    bool txt = false;
    if (!v->eog[token] && v->len[token]) {
        rc = run_bytes(m, v->bytes + v->off[token], v->len[token], &off, &c_txt, &u);
        if (rc && rc != REALM_E_INVALID) {
            discard(m);
            return rc;
        }
        txt = rc == REALM_OK && (c_tok == 0 || u.need == 0); /* a partial sequence cannot merge */
    }
    if (!c_tok && !txt) {
        bool eog_ok = v->eog[token] && rg_gmatch_complete(m);
        discard(m);
        return eog_ok ? REALM_OK : REALM_E_INVALID;
    }
    if (!txt) return commit(m, base, c_tok, m->u);
    if (!c_tok) return commit(m, off, c_txt, u);
    /* both: the text's set, then the token's stacks it lacks, at the end of ar */
    size_t end = m->ar_len;
    if ((rc = ar_reserve(m, c_txt + c_tok))) {
        discard(m);
        return rc;
    }
    memmove(m->ar + end, m->ar + off, c_txt * sizeof *m->ar);
    if (++m->gen == 0) {
        memset(m->stamp, 0, (size_t)m->cap_nodes * sizeof *m->stamp);
        m->gen = 1;
    }
    bool empty = false;
    size_t n = c_txt;
    for (size_t k = 0; k < c_txt; k++) {
        uint32_t id = m->ar[end + k];
        if (id)
            m->stamp[id] = m->gen;
        else
            empty = true;
    }
    for (size_t k = 0; k < c_tok; k++) {
        uint32_t id = m->ar[base + k];
        if (id ? m->stamp[id] == m->gen : empty) continue;
        if (id)
            m->stamp[id] = m->gen;
        else
            empty = true;
        m->ar[end + n++] = id;
    }
    if (n > RG_GRAMMAR_MAX_STACKS) {
        discard(m);
        return REALM_E_LIMIT;
    }
    m->ar_len = end + n;
    return commit(m, end, n, u);
}

int32_t rg_gmatch_accept_token(struct rg_gmatch *m, const struct rg_vocab *v, int32_t token) {
    if (token < 0 || token >= v->n) return REALM_E_INVALID;
    if (m->g->has_tokens) return accept_token_union(m, v, token);
    if (v->eog[token]) return rg_gmatch_complete(m) ? REALM_OK : REALM_E_INVALID;
    if (v->len[token] == 0) return REALM_E_INVALID;
    return rg_gmatch_advance(m, v->bytes + v->off[token], v->len[token]);
}

/* Marks in ok[] the tokens that token elements on top of the current stacks take. */
static void mask_token_elems(const struct rg_gmatch *m, int32_t n_vocab, uint8_t *ok) {
    if (m->u.need || !m->g->has_tokens) return;
    int64_t excluded = -1; /* the one token every !<...> top refuses; -2: none is refused by all */
    for (size_t k = 0; k < m->n_cur; k++) {
        uint32_t id = m->ar[k];
        const struct elem *el = id ? &m->g->elems[m->nodes[id].pos] : NULL;
        if (!el) continue;
        if (el->type == EL_TOKEN && el->val < (uint32_t)n_vocab) ok[el->val] = 1;
        if (el->type == EL_NTOKEN)
            excluded = excluded == -1 || excluded == (int64_t)el->val ? (int64_t)el->val : -2;
    }
    if (excluded == -1) return;
    for (int32_t t = 0; t < n_vocab; t++)
        if (t != excluded) ok[t] = 1;
}

/* ---- masking: stack sets interned for one mask call, with a per-set ASCII transition table, so
 * that the many tokens that keep a set where it was (text inside a JSON string) cost a lookup per
 * byte. Sets and transitions are scratch of one call: the frames they use are rolled back. ---- */

struct mset {
    uint32_t off, n; /* content: sbuf[off .. off + n) */
    uint32_t trans;  /* offset of its 128 ASCII transitions in tbuf, or UINT32_MAX */
};

struct masker {
    struct mset *sets;
    size_t n_sets, cap_sets;
    uint32_t *sbuf;
    size_t n_sbuf, cap_sbuf;
    uint32_t *tbuf; /* 0 unknown, 1 dead, k + 2: set k */
    size_t n_tbuf, cap_tbuf;
    uint32_t *table;            /* open addressing: set id + 1, 0 empty */
    size_t n_table;             /* power of two */
    struct cp_trans {           /* transitions by non-ASCII code points: a small lossy cache */
        uint32_t set, cp, next; /* next: 0 empty, 1 dead, k + 2: set k */
    } * cpc;
};

#define CP_CACHE 4096

static uint32_t set_hash(const uint32_t *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t k = 0; k < n; k++)
        h = (h ^ s[k]) * 16777619u;
    return h;
}

static int32_t mk_rehash(struct masker *k, size_t n_table) {
    uint32_t *t = calloc(n_table, sizeof *t);
    if (!t) return REALM_E_NOMEM;
    for (size_t id = 0; id < k->n_sets; id++) {
        size_t h = set_hash(k->sbuf + k->sets[id].off, k->sets[id].n) & (n_table - 1);
        while (t[h])
            h = (h + 1) & (n_table - 1);
        t[h] = (uint32_t)id + 1;
    }
    free(k->table);
    k->table = t;
    k->n_table = n_table;
    return REALM_OK;
}

/* The id of the set s[0..n) (copied in if new). */
static int32_t mk_intern(struct masker *k, const uint32_t *s, size_t n, uint32_t *out) {
    if (2 * (k->n_sets + 1) > k->n_table) {
        int32_t rc = mk_rehash(k, k->n_table ? k->n_table * 2 : 256);
        if (rc) return rc;
    }
    size_t h = set_hash(s, n) & (k->n_table - 1);
    for (; k->table[h]; h = (h + 1) & (k->n_table - 1)) {
        const struct mset *e = &k->sets[k->table[h] - 1];
        if (e->n == n && !memcmp(k->sbuf + e->off, s, n * sizeof *s)) {
            *out = k->table[h] - 1;
            return REALM_OK;
        }
    }
    if (grow((void **)&k->sets, &k->cap_sets, k->n_sets + 1, sizeof *k->sets) ||
        grow((void **)&k->sbuf, &k->cap_sbuf, k->n_sbuf + n + 1, sizeof *k->sbuf))
        return REALM_E_NOMEM;
    memcpy(k->sbuf + k->n_sbuf, s, n * sizeof *s);
    k->sets[k->n_sets] = (struct mset){(uint32_t)k->n_sbuf, (uint32_t)n, UINT32_MAX};
    k->n_sbuf += n;
    k->table[h] = (uint32_t)k->n_sets + 1;
    *out = (uint32_t)k->n_sets++;
    return REALM_OK;
}

static void mk_free(struct masker *k) {
    free(k->cpc);
    free(k->sets);
    free(k->sbuf);
    free(k->tbuf);
    free(k->table);
}

/* Set `id` advanced by cp: *next is the new set, or UINT32_MAX when no stack survives. */
static int32_t mk_advance(struct rg_gmatch *m, struct masker *k, uint32_t id, uint32_t cp,
                          uint32_t *next) {
    size_t base = m->ar_len, cnt;
    int32_t rc = advance_cp(m, k->sbuf + k->sets[id].off, k->sets[id].n, cp, &cnt);
    if (rc) return rc;
    *next = UINT32_MAX;
    if (cnt) rc = mk_intern(k, m->ar + base, cnt, next);
    m->ar_len = base;
    return rc;
}

struct mstate {
    uint32_t set;
    struct utf8st u;
};

/* One byte from state *s (updated on success); REALM_E_INVALID: rejected. */
static int32_t mk_step(struct rg_gmatch *m, struct masker *k, struct mstate *s, unsigned char b) {
    uint32_t cp, next;
    int32_t rc;
    if (s->u.need == 0 && b < 0x80) {
        struct mset *e = &k->sets[s->set];
        if (e->trans == UINT32_MAX) {
            if (grow((void **)&k->tbuf, &k->cap_tbuf, k->n_tbuf + 128, sizeof *k->tbuf))
                return REALM_E_NOMEM;
            memset(k->tbuf + k->n_tbuf, 0, 128 * sizeof *k->tbuf);
            e->trans = (uint32_t)k->n_tbuf;
            k->n_tbuf += 128;
        }
        uint32_t t = k->tbuf[e->trans + b];
        if (t == 1) return REALM_E_INVALID;
        if (t) {
            s->set = t - 2;
            return REALM_OK;
        }
        uint32_t toff = e->trans; /* e may move while the set table grows */
        if ((rc = mk_advance(m, k, s->set, b, &next))) return rc;
        k->tbuf[toff + b] = next == UINT32_MAX ? 1 : next + 2;
        if (next == UINT32_MAX) return REALM_E_INVALID;
        s->set = next;
        return REALM_OK;
    }
    struct utf8st *u = &s->u;
    if (u->need == 0) {
        if (b >= 0xC2 && b <= 0xDF)
            u->len = 2, u->cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF)
            u->len = 3, u->cp = b & 0x0F;
        else if (b >= 0xF0 && b <= 0xF4)
            u->len = 4, u->cp = b & 0x07;
        else
            return REALM_E_INVALID;
        u->need = (uint8_t)(u->len - 1);
    } else {
        if ((b & 0xC0) != 0x80) return REALM_E_INVALID;
        u->cp = u->cp << 6 | (b & 0x3F);
        u->need--;
    }
    if (u->need) {
        uint32_t lo, hi;
        const struct mset *e = &k->sets[s->set];
        return partial_range(u, &lo, &hi) && set_meets(m, k->sbuf + e->off, e->n, lo, hi)
                   ? REALM_OK
                   : REALM_E_INVALID;
    }
    cp = u->cp;
    if (cp < utf8_min[u->len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return REALM_E_INVALID;
    if (!k->cpc && !(k->cpc = calloc(CP_CACHE, sizeof *k->cpc))) return REALM_E_NOMEM;
    struct cp_trans *c = &k->cpc[(s->set * 0x9E3779B1u ^ cp * 0x85EBCA77u) & (CP_CACHE - 1)];
    if (c->next && c->set == s->set && c->cp == cp) {
        if (c->next == 1) return REALM_E_INVALID;
        s->set = c->next - 2;
        return REALM_OK;
    }
    if ((rc = mk_advance(m, k, s->set, cp, &next))) return rc;
    c->set = s->set;
    c->cp = cp;
    c->next = next == UINT32_MAX ? 1 : next + 2;
    if (next == UINT32_MAX) return REALM_E_INVALID;
    s->set = next;
    return REALM_OK;
}

static bool same_utf8(struct utf8st a, struct utf8st b) {
    return a.cp == b.cp && a.need == b.need && a.len == b.len;
}

static struct mask_memo *memo_find(struct rg_gmatch *m, const struct rg_vocab *v) {
    for (int k = 0; k < MASK_MEMO; k++) {
        struct mask_memo *e = &m->memo[k];
        if (e->v == v && e->n == m->n_cur && same_utf8(e->u, m->u) &&
            !memcmp(e->set, m->ar, m->n_cur * sizeof *m->ar)) {
            e->used = ++m->memo_clock;
            return e;
        }
    }
    return NULL;
}

/* Remembers the mask ok[0..n_vocab) of the current state (silently skipped without memory). */
static void memo_store(struct rg_gmatch *m, const struct rg_vocab *v, const uint8_t *ok) {
    struct mask_memo *e = &m->memo[0];
    for (int k = 1; k < MASK_MEMO; k++)
        if (m->memo[k].used < e->used) e = &m->memo[k];
    free(e->set);
    free(e->bits);
    memset(e, 0, sizeof *e);
    e->set = malloc((m->n_cur + 1) * sizeof *e->set);
    e->bits = calloc((size_t)v->n / 8 + 1, 1);
    if (!e->set || !e->bits) {
        free(e->set);
        free(e->bits);
        memset(e, 0, sizeof *e);
        return;
    }
    memcpy(e->set, m->ar, m->n_cur * sizeof *e->set);
    e->n = m->n_cur;
    e->u = m->u;
    for (int32_t t = 0; t < v->n; t++)
        if (ok[t]) e->bits[t >> 3] |= (uint8_t)(1u << (t & 7));
    e->v = v;
    e->used = ++m->memo_clock;
}

int32_t rg_gmatch_mask(struct rg_gmatch *m, const struct rg_vocab *v, float *logits) {
    if (!v->sorted) return REALM_E_STATE;
    const struct mask_memo *hit = memo_find(m, v);
    if (hit) {
        bool complete = rg_gmatch_complete(m);
        int32_t allowed = 0;
        for (int32_t t = 0; t < v->n; t++) {
            if ((hit->bits[t >> 3] >> (t & 7) & 1) || (v->eog[t] && complete))
                allowed++;
            else
                logits[t] = -INFINITY;
        }
        return allowed ? allowed : REALM_E_INVALID;
    }
    struct masker k = {0};
    uint8_t *ok = calloc((size_t)v->n, 1);
    struct mstate *ds = malloc(((size_t)v->max_len + 1) * sizeof *ds);
    int32_t rc = (!ok || !ds) ? REALM_E_NOMEM : REALM_OK;
    int32_t allowed = 0;
    if (rc == REALM_OK) {
        ds[0].u = m->u;
        rc = mk_intern(&k, m->ar, m->n_cur, &ds[0].set);
    }
    uint32_t depth = 0; /* ds[0..depth] hold the states along the previous token */
    for (int32_t i = 0; rc == REALM_OK && i < v->n_sorted; i++) {
        int32_t t = v->sorted[i];
        const unsigned char *piece = (const unsigned char *)v->bytes + v->off[t];
        uint32_t len = v->len[t], d = v->lcp[i];
        if (d > depth) d = depth;
        bool dead = false;
        for (; d < len; d++) {
            struct mstate s = ds[d];
            int32_t r = mk_step(m, &k, &s, piece[d]);
            if (r == REALM_E_INVALID) {
                dead = true;
                break;
            }
            if (r) {
                rc = r;
                break;
            }
            ds[d + 1] = s;
        }
        if (rc) break;
        depth = d;
        if (!dead) {
            ok[t] = 1;
            allowed++;
            continue;
        }
        /* every following token with this dead prefix (d + 1 bytes) is rejected too */
        while (i + 1 < v->n_sorted && v->lcp[i + 1] > d)
            i++;
    }
    discard(m);
    mk_free(&k);
    if (rc == REALM_OK) {
        mask_token_elems(m, v->n, ok);
        memo_store(m, v, ok);
        bool complete = rg_gmatch_complete(m);
        allowed = 0;
        for (int32_t t = 0; t < v->n; t++) {
            if (ok[t] || (v->eog[t] && complete))
                allowed++;
            else
                logits[t] = -INFINITY;
        }
        if (allowed == 0) rc = REALM_E_INVALID;
    }
    free(ok);
    free(ds);
    return rc ? rc : allowed;
}

/* Candidate order: higher logit first, then lower id. */
static bool better(const float *l, int32_t a, int32_t b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

#define GREEDY_TRIES 64

/* Greedy once `best` (the argmax) has been rejected. */
static int32_t greedy_after(struct rg_gmatch *m, const struct rg_vocab *v, float *logits,
                            int32_t best) {
    int32_t n = v->n;
    if (memo_find(m, v)) { /* a remembered mask is cheaper than sorting candidates */
        int32_t rc = rg_gmatch_mask(m, v, logits);
        if (rc < 0) return rc;
        best = rg_argmax(logits, n);
        return logits[best] > -INFINITY ? best : REALM_E_INVALID;
    }
    /* the next GREEDY_TRIES candidates by a bounded insertion sort (cheap for small k) */
    int32_t top[GREEDY_TRIES];
    int32_t k = 0;
    for (int32_t t = 0; t < n; t++) {
        if (t == best) continue;
        if (k == GREEDY_TRIES && !better(logits, t, top[k - 1])) continue;
        int32_t j = k < GREEDY_TRIES ? k++ : k - 1;
        while (j > 0 && better(logits, t, top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = t;
    }
    for (int32_t j = 0; j < k; j++)
        if (logits[top[j]] > -INFINITY && rg_gmatch_allows(m, v, top[j])) return top[j];
    int32_t rc = rg_gmatch_mask(m, v, logits);
    if (rc < 0) return rc;
    best = rg_argmax(logits, n);
    return logits[best] > -INFINITY ? best : REALM_E_INVALID;
}

int32_t rg_gmatch_pick_greedy(struct rg_gmatch *m, const struct rg_vocab *v, float *logits) {
    int32_t best = rg_argmax(logits, v->n);
    return rg_gmatch_allows(m, v, best) ? best : greedy_after(m, v, logits, best);
}

int32_t rg_sample_grammar(struct rg_sampler *s, struct rg_gmatch *m, const struct rg_vocab *v,
                          float *logits) {
    int32_t n = v->n < s->n_vocab ? v->n : s->n_vocab;
    bool greedy = s->p.temperature <= 0.0f;
    if (!greedy && m->n_copy < n) {
        float *c = realloc(m->logit_copy, (size_t)n * sizeof *c);
        if (!c) return REALM_E_NOMEM;
        m->logit_copy = c;
        m->n_copy = n;
    }
    if (!greedy) memcpy(m->logit_copy, logits, (size_t)n * sizeof *logits);
    int32_t tok = rg_sampler_sample(s, logits);
    if (tok < 0) return tok;
    if (rg_gmatch_allows(m, v, tok)) return tok;
    /* greedy: the logits now carry bias and penalties; continue down their order */
    if (greedy) return greedy_after(m, v, logits, tok);
    memcpy(logits, m->logit_copy, (size_t)n * sizeof *logits);
    int32_t rc = rg_gmatch_mask(m, v, logits);
    if (rc < 0) return rc;
    tok = rg_sampler_sample(s, logits);
    if (tok >= 0 && !rg_gmatch_allows(m, v, tok)) /* rounding picked a zero-weight candidate */
        tok = rg_gmatch_pick_greedy(m, v, logits);
    return tok;
}
