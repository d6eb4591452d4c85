/*
 * json.c — a strict RFC 8259 JSON parser for guests: recursive descent over (ptr, len) with a
 * depth cap, building a small tree (struct rj_value) whose strings are decoded to UTF-8.
 * Rejected: trailing garbage, leading zeros, "+1", ".5", "1.", control characters and invalid
 * UTF-8 in strings, bad escapes, lone surrogates, duplicate keys, depth > 64, numbers outside
 * the double range. Every allocation is checked; on failure the partial tree is freed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "realm_guest.h"

#define RJ_MAX_DEPTH 64

struct parser {
    const char *s;
    size_t n, i;
    char *err;
    size_t err_cap;
    bool nomem;
};

static int fail(struct parser *p, const char *what) {
    if (p->err && p->err_cap && !p->err[0])
        rg_fmt(p->err, p->err_cap, "json: %s at byte %lu", what, (unsigned long)p->i);
    return -1;
}

static void skip_ws(struct parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static void free_inner(struct rj_value *v) {
    switch (v->type) {
    case RJ_STRING:
        free(v->str);
        break;
    case RJ_ARRAY:
    case RJ_OBJECT:
        for (size_t i = 0; i < v->n; i++) {
            free_inner(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
        free(v->key_lens);
        break;
    default:
        break;
    }
    memset(v, 0, sizeof *v);
}

static int hex4(struct parser *p, uint32_t *out) {
    if (p->n - p->i < 4) return fail(p, "short \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(p, "bad \\u escape");
    }
    *out = v;
    return 0;
}

static int put_cp(struct rg_buf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return rg_buf_append(b, u, n) == REALM_OK ? 0 : -1;
}

/* Parses a string starting at the opening quote into a malloc'd NUL-terminated buffer. */
static int parse_string(struct parser *p, char **out, size_t *out_len) {
    struct rg_buf b = {0};
    p->i++; /* opening quote */
    for (;;) {
        if (p->i >= p->n) {
            rg_buf_free(&b);
            return fail(p, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c < 0x20) {
            rg_buf_free(&b);
            return fail(p, "control character in string");
        }
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n) {
                rg_buf_free(&b);
                return fail(p, "unterminated escape");
            }
            char e = p->s[p->i++];
            char lit = 0;
            switch (e) {
            case '"':
                lit = '"';
                break;
            case '\\':
                lit = '\\';
                break;
            case '/':
                lit = '/';
                break;
            case 'b':
                lit = '\b';
                break;
            case 'f':
                lit = '\f';
                break;
            case 'n':
                lit = '\n';
                break;
            case 'r':
                lit = '\r';
                break;
            case 't':
                lit = '\t';
                break;
            case 'u': {
                uint32_t cp;
                if (hex4(p, &cp)) {
                    rg_buf_free(&b);
                    return -1;
                }
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    rg_buf_free(&b);
                    return fail(p, "lone low surrogate");
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        rg_buf_free(&b);
                        return fail(p, "lone high surrogate");
                    }
                    p->i += 2;
                    if (hex4(p, &lo)) {
                        rg_buf_free(&b);
                        return -1;
                    }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        rg_buf_free(&b);
                        return fail(p, "bad surrogate pair");
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (put_cp(&b, cp)) {
                    p->nomem = true;
                    rg_buf_free(&b);
                    return fail(p, "out of memory");
                }
                continue;
            }
            default:
                rg_buf_free(&b);
                return fail(p, "bad escape");
            }
            if (rg_buf_append(&b, &lit, 1) != REALM_OK) {
                p->nomem = true;
                rg_buf_free(&b);
                return fail(p, "out of memory");
            }
            continue;
        }
        /* a run of plain bytes: must be valid UTF-8 */
        size_t start = p->i;
        while (p->i < p->n) {
            unsigned char d = (unsigned char)p->s[p->i];
            if (d == '"' || d == '\\' || d < 0x20) break;
            p->i++;
        }
        size_t run = p->i - start;
        if (rg_utf8_complete_prefix(p->s + start, run) != run) {
            p->i = start;
            rg_buf_free(&b);
            return fail(p, "invalid UTF-8 in string");
        }
        /* rg_utf8_complete_prefix passes over invalid bytes; check them with the sanitizer's
         * rule: a sanitized copy must be identical */
        struct rg_buf chk = {0};
        if (rg_utf8_sanitize(&chk, p->s + start, run) != REALM_OK) {
            p->nomem = true;
            rg_buf_free(&b);
            return fail(p, "out of memory");
        }
        bool same = chk.len == run && (run == 0 || memcmp(chk.data, p->s + start, run) == 0);
        rg_buf_free(&chk);
        if (!same) {
            p->i = start;
            rg_buf_free(&b);
            return fail(p, "invalid UTF-8 in string");
        }
        if (rg_buf_append(&b, p->s + start, run) != REALM_OK) {
            p->nomem = true;
            rg_buf_free(&b);
            return fail(p, "out of memory");
        }
    }
    if (rg_buf_append(&b, "", 1) != REALM_OK) {
        p->nomem = true;
        rg_buf_free(&b);
        return fail(p, "out of memory");
    }
    *out = b.data;
    *out_len = b.len - 1;
    return 0;
}

static int parse_number(struct parser *p, double *out) {
    size_t start = p->i;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) return fail(p, "bad number");
    if (p->s[p->i] == '0') {
        p->i++;
    } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    } else {
        return fail(p, "bad number");
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d) return fail(p, "bad fraction");
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (p->i == d) return fail(p, "bad exponent");
    }
    size_t len = p->i - start;
    char tmp[64];
    if (len >= sizeof tmp) {
        /* long numbers: copy to the heap so strtod sees a terminated string */
        char *h = malloc(len + 1);
        if (!h) {
            p->nomem = true;
            return fail(p, "out of memory");
        }
        memcpy(h, p->s + start, len);
        h[len] = 0;
        *out = strtod(h, NULL);
        free(h);
    } else {
        memcpy(tmp, p->s + start, len);
        tmp[len] = 0;
        *out = strtod(tmp, NULL);
    }
    if (isinf(*out)) return fail(p, "number out of range");
    return 0;
}

static int parse_value(struct parser *p, struct rj_value *v, int depth);

static int grow(struct parser *p, struct rj_value *v, size_t *cap, bool with_keys) {
    if (v->n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    struct rj_value *items = realloc(v->items, nc * sizeof *items);
    if (!items) goto nomem;
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) goto nomem;
        v->keys = keys;
        size_t *kl = realloc(v->key_lens, nc * sizeof *kl);
        if (!kl) goto nomem;
        v->key_lens = kl;
    }
    *cap = nc;
    return 0;
nomem:
    p->nomem = true;
    return fail(p, "out of memory");
}

static int parse_array(struct parser *p, struct rj_value *v, int depth) {
    size_t cap = 0;
    v->type = RJ_ARRAY;
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        if (grow(p, v, &cap, false)) return -1;
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        v->n++;
        if (parse_value(p, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(p);
        if (p->i >= p->n) return fail(p, "unterminated array");
        char c = p->s[p->i++];
        if (c == ']') return 0;
        if (c != ',') return fail(p, "expected ',' or ']'");
    }
}

static int parse_object(struct parser *p, struct rj_value *v, int depth) {
    size_t cap = 0;
    v->type = RJ_OBJECT;
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != '"') return fail(p, "expected a key");
        if (grow(p, v, &cap, true)) return -1;
        char *key;
        size_t key_len;
        if (parse_string(p, &key, &key_len)) return -1;
        for (size_t k = 0; k < v->n; k++) {
            if (v->key_lens[k] == key_len && !memcmp(v->keys[k], key, key_len)) {
                free(key);
                return fail(p, "duplicate key");
            }
        }
        memset(&v->items[v->n], 0, sizeof v->items[0]);
        v->keys[v->n] = key;
        v->key_lens[v->n] = key_len;
        v->n++;
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') return fail(p, "expected ':'");
        p->i++;
        if (parse_value(p, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(p);
        if (p->i >= p->n) return fail(p, "unterminated object");
        char c = p->s[p->i++];
        if (c == '}') return 0;
        if (c != ',') return fail(p, "expected ',' or '}'");
    }
}

static int literal(struct parser *p, const char *word, enum rj_type t, struct rj_value *v) {
    size_t n = strlen(word);
    if (p->n - p->i < n || memcmp(p->s + p->i, word, n)) return fail(p, "unexpected token");
    p->i += n;
    v->type = t;
    return 0;
}

static int parse_value(struct parser *p, struct rj_value *v, int depth) {
    if (depth > RJ_MAX_DEPTH) return fail(p, "nested too deep");
    skip_ws(p);
    if (p->i >= p->n) return fail(p, "unexpected end");
    size_t start = p->i;
    int rc;
    char c = p->s[p->i];
    switch (c) {
    case '{':
        rc = parse_object(p, v, depth);
        break;
    case '[':
        rc = parse_array(p, v, depth);
        break;
    case '"':
        v->type = RJ_STRING;
        rc = parse_string(p, &v->str, &v->str_len);
        break;
    case 't':
        rc = literal(p, "true", RJ_TRUE, v);
        break;
    case 'f':
        rc = literal(p, "false", RJ_FALSE, v);
        break;
    case 'n':
        rc = literal(p, "null", RJ_NULL, v);
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v->type = RJ_NUMBER;
            rc = parse_number(p, &v->num);
        } else {
            rc = fail(p, "unexpected character");
        }
    }
    v->src_off = (uint32_t)start;
    v->src_len = (uint32_t)(p->i - start);
    return rc;
}

int32_t rj_parse(const char *text, size_t len, struct rj_value **out, char *err, size_t err_cap) {
    if (err && err_cap) err[0] = 0;
    struct parser p = {text, len, 0, err, err_cap, false};
    if (len > UINT32_MAX) return REALM_E_LIMIT;
    struct rj_value *v = calloc(1, sizeof *v);
    if (!v) return REALM_E_NOMEM;
    if (parse_value(&p, v, 0) == 0) {
        skip_ws(&p);
        if (p.i == p.n) {
            *out = v;
            return REALM_OK;
        }
        fail(&p, "trailing characters");
    }
    free_inner(v);
    free(v);
    return p.nomem ? REALM_E_NOMEM : REALM_E_FORMAT;
}

void rj_free(struct rj_value *v) {
    if (!v) return;
    free_inner(v);
    free(v);
}

const struct rj_value *rj_get(const struct rj_value *v, const char *key) {
    if (!v || v->type != RJ_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < v->n; i++)
        if (v->key_lens[i] == kl && !memcmp(v->keys[i], key, kl)) return &v->items[i];
    return NULL;
}

double rj_number(const struct rj_value *v, double dflt) {
    return v && v->type == RJ_NUMBER ? v->num : dflt;
}

bool rj_bool(const struct rj_value *v, bool dflt) {
    if (!v) return dflt;
    if (v->type == RJ_TRUE) return true;
    if (v->type == RJ_FALSE) return false;
    return dflt;
}

const char *rj_string(const struct rj_value *v, const char *dflt) {
    return v && v->type == RJ_STRING ? v->str : dflt;
}

bool rj_is_int(const struct rj_value *v, double lo, double hi) {
    return v && v->type == RJ_NUMBER && v->num == floor(v->num) && v->num >= lo && v->num <= hi;
}
