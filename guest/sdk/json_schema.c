/*
 * json_schema.c — JSON schema → GBNF for structured output. Each subschema becomes one rule
 * (r1, r2, ...) built from fixed primitive rules (string, number, integer, ws, value ...); every
 * value rule ends with optional whitespace, so a sequence needs no whitespace of its own after a
 * value. Whitespace is bounded (one newline and at most 64 blanks of indent at a time) so that a
 * model cannot run away in it.
 *
 * Objects list properties in declared order; optional ones may be left out. Two rule chains do
 * the commas without ambiguity: F_i = "the members from property i on, none written yet" and
 * R_i = "the members from property i on, after at least one" (each member then starts with ",").
 *
 * Choices: keywords that only describe (title, description, format, default, examples, $schema,
 * $id, $comment, readOnly, writeOnly, deprecated) are ignored; keywords that restrict values and
 * are not implemented are an error naming them, never silently dropped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"

#define MAX_REFS 256
#define MAX_DEPTH 48 /* nested subschemas (and $ref chains): bounds the guest's C stack */

struct conv {
    const struct rj_value *root;
    struct rg_buf rules;
    char *err;
    size_t err_cap;
    int32_t rc;
    uint32_t next_id;
    int depth;
    struct {
        const char *ref;
        char name[16];
    } refs[MAX_REFS];
    int n_refs;
};

static const char PRIMITIVES[] =
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,64}\n"
    "value ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value ( \",\" ws string \":\" ws value )* )? \"}\" ws\n"
    "array ::= \"[\" ws ( value ( \",\" ws value )* )? \"]\" ws\n"
    "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
    "string ::= \"\\\"\" char* \"\\\"\" ws\n"
    "uint ::= \"0\" | [1-9] [0-9]{0,15}\n"
    "frac ::= \".\" [0-9]{1,16}\n"
    "exp ::= [eE] [-+]? [0-9]{1,3}\n"
    "number ::= \"-\"? uint frac? exp? ws\n"
    "integer ::= \"-\"? uint ws\n"
    "boolean ::= (\"true\" | \"false\") ws\n"
    "null ::= \"null\" ws\n";

static const char ANY_GBNF[] = "root ::= ws value\n";
static const char OBJECT_GBNF[] = "root ::= ws object\n";

static char g_any[sizeof ANY_GBNF + sizeof PRIMITIVES];
static char g_obj[sizeof OBJECT_GBNF + sizeof PRIMITIVES];

const char *rg_json_any_gbnf(void) {
    if (!g_any[0]) {
        memcpy(g_any, ANY_GBNF, sizeof ANY_GBNF - 1);
        memcpy(g_any + sizeof ANY_GBNF - 1, PRIMITIVES, sizeof PRIMITIVES);
    }
    return g_any;
}

const char *rg_json_object_gbnf(void) {
    if (!g_obj[0]) {
        memcpy(g_obj, OBJECT_GBNF, sizeof OBJECT_GBNF - 1);
        memcpy(g_obj + sizeof OBJECT_GBNF - 1, PRIMITIVES, sizeof PRIMITIVES);
    }
    return g_obj;
}

/* ---- output helpers ---- */

static int fail(struct conv *c, const char *path, const char *what, const char *arg) {
    if (c->rc == REALM_OK) {
        size_t n = strlen(path); /* a deep path keeps its end, so that the reason still fits */
        const char *shown = n > 100 ? path + n - 100 : path;
        if (c->err && c->err_cap)
            rg_fmt(c->err, c->err_cap, "json schema: %s%s: %s%s", n > 100 ? "..." : "",
                   n ? shown : "/", what, arg ? arg : "");
        c->rc = REALM_E_FORMAT;
    }
    return -1;
}

static int put(struct conv *c, struct rg_buf *b, const char *s) {
    if (rg_buf_append(b, s, strlen(s)) != REALM_OK) {
        c->rc = REALM_E_NOMEM;
        return -1;
    }
    return 0;
}

static int putn(struct conv *c, struct rg_buf *b, const char *s, size_t n) {
    if (rg_buf_append(b, s, n) != REALM_OK) {
        c->rc = REALM_E_NOMEM;
        return -1;
    }
    return 0;
}

/* A GBNF string literal matching exactly the bytes s[0..n). */
static int put_lit(struct conv *c, struct rg_buf *b, const char *s, size_t n) {
    if (put(c, b, "\"")) return -1;
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        char tmp[8];
        if (ch == '"' || ch == '\\')
            rg_fmt(tmp, sizeof tmp, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7F)
            rg_fmt(tmp, sizeof tmp, "\\x%c%c", "0123456789ABCDEF"[ch >> 4],
                   "0123456789ABCDEF"[ch & 15]);
        else
            tmp[0] = (char)ch, tmp[1] = 0;
        if (put(c, b, tmp)) return -1;
    }
    return put(c, b, "\"");
}

/* The JSON text of string s[0..n) (quotes and escapes) appended to b. */
static int json_str(struct conv *c, struct rg_buf *b, const char *s, size_t n) {
    if (put(c, b, "\"")) return -1;
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)s[k];
        char tmp[8];
        if (ch == '"' || ch == '\\')
            rg_fmt(tmp, sizeof tmp, "\\%c", ch);
        else if (ch == '\n')
            memcpy(tmp, "\\n", 3);
        else if (ch == '\t')
            memcpy(tmp, "\\t", 3);
        else if (ch == '\r')
            memcpy(tmp, "\\r", 3);
        else if (ch < 0x20)
            rg_fmt(tmp, sizeof tmp, "\\u00%c%c", "0123456789abcdef"[ch >> 4],
                   "0123456789abcdef"[ch & 15]);
        else
            tmp[0] = (char)ch, tmp[1] = 0;
        if (put(c, b, tmp)) return -1;
    }
    return put(c, b, "\"");
}

/* Compact JSON text of v (for enum and const). */
static int json_text(struct conv *c, struct rg_buf *b, const struct rj_value *v) {
    char num[64];
    switch (v->type) {
    case RJ_NULL:
        return put(c, b, "null");
    case RJ_TRUE:
        return put(c, b, "true");
    case RJ_FALSE:
        return put(c, b, "false");
    case RJ_STRING:
        return json_str(c, b, v->str, v->str_len);
    case RJ_NUMBER:
        if (v->num == floor(v->num) && fabs(v->num) < 9007199254740992.0) {
            rg_fmt(num, sizeof num, "%lld", (long long)v->num);
        } else {
            rg_fmt(num, sizeof num, "%f", v->num);
            size_t l = strlen(num);
            while (l > 1 && num[l - 1] == '0' && strchr(num, '.'))
                num[--l] = 0;
        }
        return put(c, b, num);
    case RJ_ARRAY:
        if (put(c, b, "[")) return -1;
        for (size_t k = 0; k < v->n; k++)
            if ((k && put(c, b, ",")) || json_text(c, b, &v->items[k])) return -1;
        return put(c, b, "]");
    case RJ_OBJECT:
        if (put(c, b, "{")) return -1;
        for (size_t k = 0; k < v->n; k++)
            if ((k && put(c, b, ",")) || json_str(c, b, v->keys[k], v->key_lens[k]) ||
                put(c, b, ":") || json_text(c, b, &v->items[k]))
                return -1;
        return put(c, b, "}");
    }
    return -1;
}

/* A literal for the JSON text of v, followed by ws. */
static int put_value_lit(struct conv *c, struct rg_buf *b, const struct rj_value *v) {
    struct rg_buf t = {0};
    int rc = json_text(c, &t, v);
    if (rc == 0) rc = put_lit(c, b, t.data ? t.data : "", t.len);
    rg_buf_free(&t);
    return rc ? rc : put(c, b, " ws");
}

static void new_name(struct conv *c, char name[16]) {
    rg_fmt(name, 16, "r%u", (unsigned)++c->next_id);
}

/* Appends "name ::= body\n" to the rules. */
static int add_rule(struct conv *c, const char *name, const struct rg_buf *body) {
    /* an empty body would let the parser read on into the next line: spell it "" */
    if (put(c, &c->rules, name) || put(c, &c->rules, " ::= ") ||
        (body->len ? putn(c, &c->rules, body->data, body->len) : put(c, &c->rules, "\"\"")) ||
        put(c, &c->rules, "\n"))
        return -1;
    return 0;
}

static int gen_into(struct conv *c, const struct rj_value *s, const char *path, const char *name);

/* A rule for subschema s; its name in name (a primitive's name when s is one). */
static int gen(struct conv *c, const struct rj_value *s, const char *path, char name[16]) {
    new_name(c, name);
    return gen_into(c, s, path, name);
}

static int sub_path(char *out, size_t cap, const char *path, const char *a, const char *b) {
    rg_fmt(out, cap, "%s/%s%s%s", path, a, b ? "/" : "", b ? b : "");
    return 0;
}

/* ---- keywords ---- */

static const char *const UNSUPPORTED[] = {
    "pattern",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "unevaluatedProperties",
    "unevaluatedItems",
    "maximum",
    "exclusiveMaximum",
    "$dynamicRef",
    "$recursiveRef",
};

static int check_keywords(struct conv *c, const struct rj_value *s, const char *path) {
    for (size_t k = 0; k < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; k++)
        if (rj_get(s, UNSUPPORTED[k])) {
            char what[64];
            rg_fmt(what, sizeof what, "'%s' is not supported", UNSUPPORTED[k]);
            return fail(c, path, what, NULL);
        }
    return 0;
}

static int resolve_ref(struct conv *c, const struct rj_value *ref, const char *path,
                       char name[16]) {
    const char *r = rj_string(ref, NULL);
    if (!r) return fail(c, path, "$ref must be a string", NULL);
    for (int k = 0; k < c->n_refs; k++)
        if (!strcmp(c->refs[k].ref, r)) {
            memcpy(name, c->refs[k].name, 16);
            return 0;
        }
    const struct rj_value *target = NULL;
    if (!strcmp(r, "#"))
        target = c->root;
    else if (!strncmp(r, "#/$defs/", 8))
        target = rj_get(rj_get(c->root, "$defs"), r + 8);
    else if (!strncmp(r, "#/definitions/", 14))
        target = rj_get(rj_get(c->root, "definitions"), r + 14);
    else
        return fail(c, path,
                    "only local $ref (#, #/$defs/..., #/definitions/...) is supported: ", r);
    if (!target) return fail(c, path, "$ref to a missing definition: ", r);
    if (c->n_refs == MAX_REFS) return fail(c, path, "too many $ref targets", NULL);
    c->refs[c->n_refs].ref = r;
    new_name(c, c->refs[c->n_refs].name);
    memcpy(name, c->refs[c->n_refs].name, 16);
    c->n_refs++;
    return gen_into(c, target, r + 1, name);
}

/* "A"/"B"/... alternatives of subschemas (anyOf, oneOf). */
static int gen_alts(struct conv *c, const struct rj_value *list, const char *path, const char *kw,
                    struct rg_buf *body) {
    char p[512];
    if (!list || list->type != RJ_ARRAY || list->n == 0)
        return fail(c, path, kw, " must be a non-empty array");
    for (size_t k = 0; k < list->n; k++) {
        char idx[24], name[16];
        rg_fmt(idx, sizeof idx, "%lu", (unsigned long)k);
        sub_path(p, sizeof p, path, kw, idx);
        if (gen(c, &list->items[k], p, name)) return -1;
        if ((k && put(c, body, " | ")) || put(c, body, name)) return -1;
    }
    return 0;
}

static int gen_string(struct conv *c, const struct rj_value *s, const char *path,
                      struct rg_buf *body) {
    double lo = 0, hi = -1;
    const struct rj_value *mn = rj_get(s, "minLength"), *mx = rj_get(s, "maxLength");
    if (mn) {
        if (!rj_is_int(mn, 0, RG_GRAMMAR_MAX_REPEAT))
            return fail(c, path, "minLength must be an integer in [0, 1000]", NULL);
        lo = mn->num;
    }
    if (mx) {
        if (!rj_is_int(mx, lo, RG_GRAMMAR_MAX_REPEAT))
            return fail(c, path, "maxLength must be an integer in [minLength, 1000]", NULL);
        hi = mx->num;
    }
    if (!mn && !mx) return put(c, body, "string");
    char rep[64];
    if (hi < 0)
        rg_fmt(rep, sizeof rep, "\"\\\"\" char{%d,} \"\\\"\" ws", (int)lo);
    else
        rg_fmt(rep, sizeof rep, "\"\\\"\" char{%d,%d} \"\\\"\" ws", (int)lo, (int)hi);
    return put(c, body, rep);
}

/* integer/number with the one supported bound: a minimum of 0 (or exclusiveMinimum 0 / minimum 1
 * for integers). */
static int gen_number(struct conv *c, const struct rj_value *s, const char *path, bool integer,
                      struct rg_buf *body) {
    const struct rj_value *mn = rj_get(s, "minimum"), *emn = rj_get(s, "exclusiveMinimum");
    if (!mn && !emn) return put(c, body, integer ? "integer" : "number");
    if (mn && emn)
        return fail(c, path, "both minimum and exclusiveMinimum are not supported", NULL);
    double b = mn ? rj_number(mn, NAN) : rj_number(emn, NAN);
    bool strict = emn != NULL;
    if (integer && ((!strict && b == 1) || (strict && b == 0)))
        return put(c, body, "[1-9] [0-9]{0,15} ws");
    if (!strict && b == 0) return put(c, body, integer ? "uint ws" : "uint frac? exp? ws");
    return fail(c, path, mn ? "'minimum'" : "'exclusiveMinimum'",
                " is only supported as 0 (or 1 for integers)");
}

static int gen_array(struct conv *c, const struct rj_value *s, const char *path,
                     struct rg_buf *body) {
    char p[512];
    const struct rj_value *items = rj_get(s, "items"), *prefix = rj_get(s, "prefixItems");
    const struct rj_value *mn = rj_get(s, "minItems"), *mx = rj_get(s, "maxItems");
    double lo = 0, hi = -1;
    if (mn) {
        if (!rj_is_int(mn, 0, RG_GRAMMAR_MAX_REPEAT))
            return fail(c, path, "minItems must be an integer in [0, 1000]", NULL);
        lo = mn->num;
    }
    if (mx) {
        if (!rj_is_int(mx, 0, RG_GRAMMAR_MAX_REPEAT) || mx->num < lo)
            return fail(c, path, "maxItems must be an integer in [minItems, 1000]", NULL);
        hi = mx->num;
    }
    /* the element rules: prefixItems first, then items (false: no more) */
    size_t n_prefix = 0;
    char(*pnames)[16] = NULL;
    if (prefix) {
        if (prefix->type != RJ_ARRAY) return fail(c, path, "prefixItems must be an array", NULL);
        n_prefix = prefix->n;
        pnames = malloc((n_prefix + 1) * sizeof *pnames);
        if (!pnames) return c->rc = REALM_E_NOMEM, -1;
        for (size_t k = 0; k < n_prefix; k++) {
            char idx[24];
            rg_fmt(idx, sizeof idx, "%lu", (unsigned long)k);
            sub_path(p, sizeof p, path, "prefixItems", idx);
            if (gen(c, &prefix->items[k], p, pnames[k])) {
                free(pnames);
                return -1;
            }
        }
    }
    char iname[16] = "value";
    bool more = true;
    if (items && items->type == RJ_FALSE)
        more = false;
    else if (items) {
        sub_path(p, sizeof p, path, "items", NULL);
        if (gen(c, items, p, iname)) {
            free(pnames);
            return -1;
        }
    }
    if (!more && hi < 0) hi = (double)n_prefix;
    if (!more && lo > (double)n_prefix) {
        free(pnames);
        return fail(c, path, "minItems above the number of prefixItems with items false", NULL);
    }
    /* "[" ws ( e0 ("," ws e1 ...) )? "]" ws, built as a fixed prefix part then a repetition */
    int rc = put(c, body, "\"[\" ws ");
    size_t total_min = (size_t)lo;
    /* elements 0..n_prefix-1 are fixed; elements are optional past total_min */
    size_t opened = 0;
    for (size_t k = 0; rc == 0 && k < n_prefix && (hi < 0 || k < (size_t)hi); k++) {
        if (k >= total_min) {
            rc = put(c, body, "( ");
            opened++;
        }
        if (rc == 0 && k) rc = put(c, body, "\",\" ws ");
        if (rc == 0) rc = put(c, body, pnames[k]);
        if (rc == 0) rc = put(c, body, " ");
    }
    if (rc == 0 && more) {
        size_t start = n_prefix;
        size_t need = total_min > start ? total_min - start : 0; /* required after the prefix */
        long long extra = hi < 0 ? -1 : (long long)hi - (long long)start - (long long)need;
        char rep[160];
        if (start == 0) {
            /* first element without comma */
            if (need == 0) {
                if (extra != 0) {
                    rg_fmt(rep, sizeof rep, "( %s ", iname);
                    rc = put(c, body, rep);
                    if (rc == 0 && extra != 1) {
                        if (extra < 0)
                            rg_fmt(rep, sizeof rep, "( \",\" ws %s )* ", iname);
                        else
                            rg_fmt(rep, sizeof rep, "( \",\" ws %s ){0,%lld} ", iname, extra - 1);
                        rc = put(c, body, rep);
                    }
                    if (rc == 0) rc = put(c, body, ")? ");
                }
            } else {
                rg_fmt(rep, sizeof rep, "%s ", iname);
                rc = put(c, body, rep);
                if (rc == 0 && need > 1) {
                    rg_fmt(rep, sizeof rep, "( \",\" ws %s ){%lu} ", iname,
                           (unsigned long)(need - 1));
                    rc = put(c, body, rep);
                }
                if (rc == 0 && extra != 0) {
                    if (extra < 0)
                        rg_fmt(rep, sizeof rep, "( \",\" ws %s )* ", iname);
                    else
                        rg_fmt(rep, sizeof rep, "( \",\" ws %s ){0,%lld} ", iname, extra);
                    rc = put(c, body, rep);
                }
            }
        } else {
            if (need) {
                rg_fmt(rep, sizeof rep, "( \",\" ws %s ){%lu} ", iname, (unsigned long)need);
                rc = put(c, body, rep);
            }
            if (rc == 0 && extra != 0) {
                if (extra < 0)
                    rg_fmt(rep, sizeof rep, "( \",\" ws %s )* ", iname);
                else
                    rg_fmt(rep, sizeof rep, "( \",\" ws %s ){0,%lld} ", iname, extra);
                rc = put(c, body, rep);
            }
        }
    }
    for (size_t k = 0; rc == 0 && k < opened; k++)
        rc = put(c, body, ")? ");
    if (rc == 0) rc = put(c, body, "\"]\" ws");
    free(pnames);
    return rc;
}

static bool is_required(const struct rj_value *req, const char *key, size_t len) {
    for (size_t k = 0; req && req->type == RJ_ARRAY && k < req->n; k++)
        if (req->items[k].type == RJ_STRING && req->items[k].str_len == len &&
            !memcmp(req->items[k].str, key, len))
            return true;
    return false;
}

static int gen_object(struct conv *c, const struct rj_value *s, const char *path,
                      struct rg_buf *body) {
    char p[512];
    const struct rj_value *props = rj_get(s, "properties"), *req = rj_get(s, "required");
    const struct rj_value *ap = rj_get(s, "additionalProperties");
    if (props && props->type != RJ_OBJECT)
        return fail(c, path, "properties must be an object", NULL);
    if (req && req->type != RJ_ARRAY) return fail(c, path, "required must be an array", NULL);
    for (size_t k = 0; req && k < req->n; k++)
        if (req->items[k].type != RJ_STRING)
            return fail(c, path, "required must list strings", NULL);
        else if (!props || !rj_get(props, req->items[k].str))
            return fail(c, path,
                        "a required property without a schema in properties: ", req->items[k].str);
    /* extra members: only when additionalProperties says so (true or a schema), or when the schema
     * declares no properties at all (then it is a free-form object) */
    char aname[16] = "";
    if (ap && ap->type == RJ_OBJECT) {
        sub_path(p, sizeof p, path, "additionalProperties", NULL);
        if (gen(c, ap, p, aname)) return -1;
    } else if ((ap && ap->type == RJ_TRUE) || (!ap && !props)) {
        memcpy(aname, "value", 6);
    } else if (ap && ap->type != RJ_FALSE) {
        return fail(c, path, "additionalProperties must be a boolean or a schema", NULL);
    }
    size_t n = props ? props->n : 0;
    char(*vn)[16] = malloc((n + 1) * sizeof *vn);
    char(*fn)[16] = malloc((n + 1) * sizeof *fn);
    char(*rn)[16] = malloc((n + 1) * sizeof *rn);
    int rc = (!vn || !fn || !rn) ? (c->rc = REALM_E_NOMEM, -1) : 0;
    for (size_t k = 0; rc == 0 && k < n; k++) {
        sub_path(p, sizeof p, path, "properties", props->keys[k]);
        rc = gen(c, &props->items[k], p, vn[k]);
    }
    for (size_t k = 0; rc == 0 && k <= n; k++) {
        new_name(c, fn[k]);
        new_name(c, rn[k]);
    }
    /* F_n and R_n: the additional members, if any */
    struct rg_buf b = {0};
    if (rc == 0) {
        char t[200];
        if (aname[0])
            rg_fmt(t, sizeof t, "( string \":\" ws %s ( \",\" ws string \":\" ws %s )* )?", aname,
                   aname);
        else
            t[0] = 0;
        rc = put(c, &b, t);
        if (rc == 0) rc = add_rule(c, fn[n], &b);
        b.len = 0;
        if (aname[0]) rg_fmt(t, sizeof t, "( \",\" ws string \":\" ws %s )*", aname);
        if (rc == 0) rc = put(c, &b, t);
        if (rc == 0) rc = add_rule(c, rn[n], &b);
    }
    for (size_t k = n; rc == 0 && k-- > 0;) {
        bool required = is_required(req, props->keys[k], props->key_lens[k]);
        struct rg_buf kv = {0};
        rc = json_str(c, &kv, props->keys[k], props->key_lens[k]);
        struct rg_buf lit = {0};
        if (rc == 0) rc = put_lit(c, &lit, kv.data, kv.len);
        if (rc == 0) rc = put(c, &lit, " ws \":\" ws ");
        if (rc == 0) rc = put(c, &lit, vn[k]);
        /* R_k ::= "," ws kv R_{k+1} [| R_{k+1}] */
        b.len = 0;
        if (rc == 0) rc = put(c, &b, "\",\" ws ");
        if (rc == 0) rc = putn(c, &b, lit.data, lit.len);
        if (rc == 0) rc = put(c, &b, " ");
        if (rc == 0) rc = put(c, &b, rn[k + 1]);
        if (rc == 0 && !required) rc = put(c, &b, " | ") || put(c, &b, rn[k + 1]);
        if (rc == 0) rc = add_rule(c, rn[k], &b);
        /* F_k ::= kv R_{k+1} [| F_{k+1}] */
        b.len = 0;
        if (rc == 0) rc = putn(c, &b, lit.data, lit.len);
        if (rc == 0) rc = put(c, &b, " ");
        if (rc == 0) rc = put(c, &b, rn[k + 1]);
        if (rc == 0 && !required) rc = put(c, &b, " | ") || put(c, &b, fn[k + 1]);
        if (rc == 0) rc = add_rule(c, fn[k], &b);
        rg_buf_free(&kv);
        rg_buf_free(&lit);
    }
    rg_buf_free(&b);
    if (rc == 0) rc = put(c, body, "\"{\" ws ") || put(c, body, fn[0]) || put(c, body, " \"}\" ws");
    free(vn);
    free(fn);
    free(rn);
    return rc;
}

static int gen_type(struct conv *c, const struct rj_value *s, const char *path, const char *type,
                    struct rg_buf *body) {
    if (!strcmp(type, "string")) return gen_string(c, s, path, body);
    if (!strcmp(type, "number")) return gen_number(c, s, path, false, body);
    if (!strcmp(type, "integer")) return gen_number(c, s, path, true, body);
    if (!strcmp(type, "boolean")) return put(c, body, "boolean");
    if (!strcmp(type, "null")) return put(c, body, "null");
    if (!strcmp(type, "object")) return gen_object(c, s, path, body);
    if (!strcmp(type, "array")) return gen_array(c, s, path, body);
    return fail(c, path, "unknown type: ", type);
}

static int gen_body(struct conv *c, const struct rj_value *s, const char *path,
                    struct rg_buf *body) {
    if (s->type == RJ_TRUE) return put(c, body, "value");
    if (s->type == RJ_FALSE) return fail(c, path, "the schema false matches nothing", NULL);
    if (s->type != RJ_OBJECT) return fail(c, path, "a schema must be an object or a boolean", NULL);
    if (check_keywords(c, s, path)) return -1;
    const struct rj_value *v;
    char name[16];
    if ((v = rj_get(s, "$ref"))) {
        if (resolve_ref(c, v, path, name)) return -1;
        return put(c, body, name);
    }
    if ((v = rj_get(s, "const"))) return put_value_lit(c, body, v);
    if ((v = rj_get(s, "enum"))) {
        if (v->type != RJ_ARRAY || v->n == 0)
            return fail(c, path, "enum must be a non-empty array", NULL);
        for (size_t k = 0; k < v->n; k++)
            if ((k && put(c, body, " | ")) || put_value_lit(c, body, &v->items[k])) return -1;
        return 0;
    }
    if ((v = rj_get(s, "anyOf"))) return gen_alts(c, v, path, "anyOf", body);
    if ((v = rj_get(s, "oneOf"))) return gen_alts(c, v, path, "oneOf", body);
    const struct rj_value *t = rj_get(s, "type");
    if (t && t->type == RJ_STRING) return gen_type(c, s, path, t->str, body);
    if (t && t->type == RJ_ARRAY) {
        if (t->n == 0) return fail(c, path, "type must not be an empty array", NULL);
        for (size_t k = 0; k < t->n; k++) {
            if (t->items[k].type != RJ_STRING) return fail(c, path, "type must list strings", NULL);
            if ((k && put(c, body, " | ")) || put(c, body, "( ") ||
                gen_type(c, s, path, t->items[k].str, body) || put(c, body, " )"))
                return -1;
        }
        return 0;
    }
    if (t) return fail(c, path, "type must be a string or an array", NULL);
    if (rj_get(s, "properties") || rj_get(s, "additionalProperties"))
        return gen_object(c, s, path, body);
    if (rj_get(s, "items") || rj_get(s, "prefixItems")) return gen_array(c, s, path, body);
    return put(c, body, "value");
}

static int gen_into(struct conv *c, const struct rj_value *s, const char *path, const char *name) {
    if (c->depth >= MAX_DEPTH)
        return fail(c, path, "schema nested too deeply (subschemas and $ref chains: 48 levels)",
                    NULL);
    c->depth++;
    struct rg_buf body = {0};
    int rc = gen_body(c, s, path, &body);
    c->depth--;
    if (rc == 0) rc = add_rule(c, name, &body);
    rg_buf_free(&body);
    return rc;
}

int32_t rg_json_schema_to_gbnf(const struct rj_value *schema, char **out, char *err,
                               size_t err_cap) {
    *out = NULL;
    if (err && err_cap) err[0] = 0;
    struct conv *c = calloc(1, sizeof *c);
    if (!c) return REALM_E_NOMEM;
    c->root = schema;
    c->err = err;
    c->err_cap = err_cap;
    char name[16];
    int rc = gen(c, schema, "", name);
    struct rg_buf all = {0};
    if (rc == 0) {
        char head[48];
        rg_fmt(head, sizeof head, "root ::= ws %s\n", name);
        rc = put(c, &all, head) || putn(c, &all, c->rules.data, c->rules.len) ||
             put(c, &all, PRIMITIVES) || putn(c, &all, "", 1);
    }
    int32_t status = c->rc != REALM_OK ? c->rc : (rc ? REALM_E_NOMEM : REALM_OK);
    if (status == REALM_E_NOMEM && err && err_cap && !err[0])
        rg_fmt(err, err_cap, "json schema: out of memory");
    rg_buf_free(&c->rules);
    free(c);
    if (status != REALM_OK) {
        rg_buf_free(&all);
        return status;
    }
    *out = all.data;
    return REALM_OK;
}

/* ---- request fields ---- */

static int32_t req_fail(char *err, size_t cap, const char *msg) {
    if (err && cap) rg_fmt(err, cap, "%s", msg);
    return REALM_E_INVALID;
}

static int32_t copy_text(const char *s, size_t n, char **out) {
    char *t = malloc(n + 1);
    if (!t) return REALM_E_NOMEM;
    memcpy(t, s, n);
    t[n] = 0;
    *out = t;
    return REALM_OK;
}

int32_t rg_grammar_from_request(const struct rj_value *req, char **gbnf, char *err,
                                size_t err_cap) {
    *gbnf = NULL;
    if (err && err_cap) err[0] = 0;
    const struct rj_value *rf = rj_get(req, "response_format"), *gr = rj_get(req, "grammar"),
                          *js = rj_get(req, "json_schema");
    if (rf && rf->type == RJ_NULL) rf = NULL;
    if (gr && gr->type == RJ_NULL) gr = NULL;
    if (js && js->type == RJ_NULL) js = NULL;
    const char *rtype = NULL;
    if (rf) {
        if (rf->type != RJ_OBJECT)
            return req_fail(err, err_cap, "response_format: expected an object");
        rtype = rj_string(rj_get(rf, "type"), NULL);
        if (!rtype)
            return req_fail(
                err, err_cap,
                "response_format.type: expected \"text\", \"json_object\" or \"json_schema\"");
        if (!strcmp(rtype, "text"))
            rtype = NULL;
        else if (strcmp(rtype, "json_object") && strcmp(rtype, "json_schema"))
            return req_fail(
                err, err_cap,
                "response_format.type: expected \"text\", \"json_object\" or \"json_schema\"");
    }
    if ((rtype != NULL) + (gr != NULL) + (js != NULL) > 1)
        return req_fail(err, err_cap, "response_format, grammar and json_schema: give at most one");
    if (gr) {
        if (gr->type != RJ_STRING)
            return req_fail(err, err_cap, "grammar: expected a string (GBNF)");
        return copy_text(gr->str, gr->str_len, gbnf);
    }
    const struct rj_value *schema = js;
    if (rtype && !strcmp(rtype, "json_object")) {
        /* llama-server's extension: {"type": "json_object", "schema": {...}} */
        schema = rj_get(rf, "schema");
        if (!schema || schema->type == RJ_NULL) {
            const char *g = rg_json_object_gbnf();
            return copy_text(g, strlen(g), gbnf);
        }
    } else if (rtype) {
        const struct rj_value *spec = rj_get(rf, "json_schema");
        if (!spec || spec->type != RJ_OBJECT)
            return req_fail(err, err_cap, "response_format.json_schema: expected an object");
        schema = rj_get(spec, "schema");
        if (!schema) return req_fail(err, err_cap, "response_format.json_schema.schema: missing");
    }
    if (!schema) return REALM_OK;
    int32_t rc = rg_json_schema_to_gbnf(schema, gbnf, err, err_cap);
    return rc == REALM_E_FORMAT ? REALM_E_INVALID : rc;
}
