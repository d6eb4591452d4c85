/*
 * tools.c — tool calling for guests (realm_tools.h): a grammar that forces a call whose
 * arguments follow the function's JSON schema, built by composing one JSON schema for the whole
 * call and converting it with rg_json_schema_to_gbnf, and the parser of generated calls.
 */
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"
#include "realm_tools.h"

/* needle in haystack[0..hn), or NULL (memmem is not in the guest's libc without _GNU_SOURCE) */
static const char *find(const char *h, size_t hn, const char *needle, size_t nn) {
    for (size_t i = 0; nn <= hn && i <= hn - nn; i++)
        if (!memcmp(h + i, needle, nn)) return h + i;
    return NULL;
}

const char *rg_tool_marker(const char *format) {
    return format && !strcmp(format, "llama3") ? NULL : "<tool_call>";
}

static int32_t fail(char *err, size_t cap, const char *msg) {
    if (err && cap) rg_fmt(err, cap, "%s", msg);
    return REALM_E_INVALID;
}

static bool name_ok(const struct rj_value *v) {
    if (!v || v->type != RJ_STRING || v->str_len == 0 || v->str_len > 64) return false;
    for (size_t i = 0; i < v->str_len; i++) {
        char c = v->str[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int32_t puts_(struct rg_buf *b, const char *s) {
    return rg_buf_append(b, s, strlen(s));
}

/* {"type": "object", "properties": {"name": {"const": "f"}, "<args>": <schema>}, "required": [...]}
 * for one function: the call object of the format. */
static int32_t call_schema(struct rg_buf *b, const struct rj_value *fn, const char *json,
                           bool llama3) {
    const struct rj_value *name = rj_get(fn, "name"), *params = rj_get(fn, "parameters");
    const char *key = llama3 ? "parameters" : "arguments";
    int32_t rc = puts_(b, "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"");
    rc = rc ? rc : rg_buf_append(b, name->str, name->str_len);
    rc = rc ? rc : puts_(b, "\"},\"");
    rc = rc ? rc : puts_(b, key);
    rc = rc ? rc : puts_(b, "\":");
    if (params && params->type == RJ_OBJECT)
        rc = rc ? rc : rg_buf_append(b, json + params->src_off, params->src_len);
    else
        rc = rc ? rc : puts_(b, "{\"type\":\"object\"}");
    rc = rc ? rc : puts_(b, "},\"required\":[\"name\",\"");
    rc = rc ? rc : puts_(b, key);
    return rc ? rc : puts_(b, "\"]}");
}

int32_t rg_tools_grammar(const struct rj_value *tools, const char *json, const char *only,
                         const char *format, bool parallel, char **gbnf, const char **root,
                         char *err, size_t err_cap) {
    *gbnf = NULL;
    *root = "root";
    if (!tools || tools->type != RJ_ARRAY || tools->n == 0)
        return fail(err, err_cap, "tools: expected a non-empty array");
    bool llama3 = format && !strcmp(format, "llama3");
    struct rg_buf s = {0};
    int32_t rc = puts_(&s, "{\"anyOf\":[");
    size_t n = 0;
    for (size_t i = 0; i < tools->n && !rc; i++) {
        const struct rj_value *fn = rj_get(&tools->items[i], "function");
        if (!fn || fn->type != RJ_OBJECT || !name_ok(rj_get(fn, "name"))) {
            rc = fail(err, err_cap,
                      "tools: each needs a function with a name of [A-Za-z0-9_-]{1,64}");
            break;
        }
        if (only && strcmp(rj_get(fn, "name")->str, only)) continue;
        rc = (n++ ? puts_(&s, ",") : 0);
        rc = rc ? rc : call_schema(&s, fn, json, llama3);
    }
    rc = rc ? rc : puts_(&s, "]}");
    if (!rc && n == 0)
        rc = fail(err, err_cap, "tool_choice: names a function that is not in tools");
    struct rj_value *schema = NULL;
    char *body = NULL;
    if (!rc) rc = rj_parse(s.data, s.len, &schema, err, err_cap);
    if (!rc) rc = rg_json_schema_to_gbnf(schema, &body, err, err_cap);
    rj_free(schema);
    rg_buf_free(&s);
    if (rc) return rc == REALM_E_FORMAT ? REALM_E_INVALID : rc;
    if (llama3) { /* the call object is the whole answer */
        *gbnf = body;
        return REALM_OK;
    }
    struct rg_buf g = {0};
    rc = puts_(&g, body);
    rc = rc ? rc : puts_(&g, "\ntool-call ::= \"<tool_call>\\n\" root \"</tool_call>\"\n");
    rc = rc ? rc
            : puts_(&g, parallel ? "tool-calls ::= tool-call (\"\\n\" tool-call)*\n"
                                 : "tool-calls ::= tool-call\n");
    rc = rc ? rc : rg_buf_append(&g, "", 1);
    free(body);
    if (rc) {
        rg_buf_free(&g);
        return rc;
    }
    *gbnf = g.data;
    *root = "tool-calls";
    return REALM_OK;
}

/* One call object {"name": string, "<args>": object or JSON string} to the report. */
static int32_t add_call(struct rg_buf *out, const char *text, size_t len, bool llama3, size_t *n) {
    struct rj_value *v = NULL;
    if (rj_parse(text, len, &v, NULL, 0)) return REALM_E_NOT_FOUND;
    const struct rj_value *name = rj_get(v, "name");
    const struct rj_value *args = rj_get(v, llama3 ? "parameters" : "arguments");
    if (!args) args = rj_get(v, llama3 ? "arguments" : "parameters");
    int32_t rc = REALM_E_NOT_FOUND;
    if (v->type == RJ_OBJECT && name && name->type == RJ_STRING && name->str_len &&
        strlen(name->str) == name->str_len &&
        (!args || args->type == RJ_OBJECT || args->type == RJ_STRING)) {
        /* the name goes out as JSON: escape by re-quoting the decoded string byte by byte */
        rc = puts_(out, *n ? ",{\"name\":\"" : "{\"name\":\"");
        for (size_t i = 0; !rc && i < name->str_len; i++) {
            char c = name->str[i], esc[8];
            if (c == '"' || c == '\\')
                rc = rg_buf_append(out, (char[]){'\\', c}, 2);
            else if ((unsigned char)c < 0x20)
                rg_fmt(esc, sizeof esc, "\\u%04x", (unsigned)c), rc = puts_(out, esc);
            else
                rc = rg_buf_append(out, &c, 1);
        }
        rc = rc ? rc : puts_(out, "\",\"arguments\":");
        if (!args) {
            rc = rc ? rc : puts_(out, "\"{}\"");
        } else if (args->type == RJ_STRING) { /* already a string: pass its JSON text on */
            rc = rc ? rc : rg_buf_append(out, text + args->src_off, args->src_len);
        } else { /* the object's text as a JSON string */
            rc = rc ? rc : puts_(out, "\"");
            const char *a = text + args->src_off;
            for (size_t i = 0; !rc && i < args->src_len; i++) {
                char c = a[i], esc[8];
                if (c == '"' || c == '\\')
                    rc = rg_buf_append(out, (char[]){'\\', c}, 2);
                else if (c == '\n')
                    rc = puts_(out, "\\n");
                else if (c == '\r')
                    rc = puts_(out, "\\r");
                else if (c == '\t')
                    rc = puts_(out, "\\t");
                else if ((unsigned char)c < 0x20)
                    rg_fmt(esc, sizeof esc, "\\u%04x", (unsigned)c), rc = puts_(out, esc);
                else
                    rc = rg_buf_append(out, &c, 1);
            }
            rc = rc ? rc : puts_(out, "\"");
        }
        rc = rc ? rc : puts_(out, "}");
        if (!rc) (*n)++;
    }
    rj_free(v);
    return rc;
}

int32_t rg_tool_calls_parse(const char *text, size_t len, const char *format, char **report,
                            size_t *n_calls) {
    *report = NULL;
    *n_calls = 0;
    bool llama3 = format && !strcmp(format, "llama3");
    struct rg_buf out = {0};
    int32_t rc = puts_(&out, "[");
    size_t n = 0;
    if (llama3) {
        /* one object, or several separated by ';' or newlines (as Llama 3.2 writes them) */
        size_t i = 0;
        while (!rc && i < len) {
            while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' ||
                               text[i] == '\r' || text[i] == ';'))
                i++;
            if (i >= len) break;
            if (text[i] != '{') {
                rc = REALM_E_NOT_FOUND;
                break;
            }
            /* the object's end: brackets balanced outside strings */
            size_t j = i, depth = 0;
            bool in_str = false;
            for (; j < len; j++) {
                char c = text[j];
                if (in_str) {
                    if (c == '\\')
                        j++;
                    else if (c == '"')
                        in_str = false;
                } else if (c == '"') {
                    in_str = true;
                } else if (c == '{' || c == '[') {
                    depth++;
                } else if ((c == '}' || c == ']') && --depth == 0) {
                    break;
                }
            }
            if (j >= len) {
                rc = n ? REALM_OK : REALM_E_NOT_FOUND; /* cut short */
                break;
            }
            rc = add_call(&out, text + i, j + 1 - i, true, &n);
            i = j + 1;
        }
    } else {
        static const char open[] = "<tool_call>", close[] = "</tool_call>";
        const char *p = text, *end = text + len;
        while (!rc) {
            const char *o = find(p, (size_t)(end - p), open, sizeof open - 1);
            if (!o) break;
            const char *body = o + sizeof open - 1;
            const char *c = find(body, (size_t)(end - body), close, sizeof close - 1);
            if (!c) {
                if (!n)
                    rc = add_call(&out, body, (size_t)(end - body), false,
                                  &n); /* the only one, unclosed */
                break;
            }
            rc = add_call(&out, body, (size_t)(c - body), false, &n);
            p = c + sizeof close - 1;
        }
    }
    if (!rc && n == 0) rc = REALM_E_NOT_FOUND;
    rc = rc ? rc : rg_buf_append(&out, "]", 2); /* with the NUL */
    if (rc) {
        rg_buf_free(&out);
        return rc;
    }
    *report = out.data;
    *n_calls = n;
    return REALM_OK;
}
