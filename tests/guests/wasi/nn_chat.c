/*
 * nn_chat.c — a wasi-nn app written only against wasi_ephemeral_nn + WASI, the way LlamaEdge's
 * llama-chat drives WasmEdge's GGML backend: read the prompt from stdin, load_by_name("default"),
 * set the metadata and the prompt, then compute_single / get_output_single until end of sequence,
 * writing each piece to stdout as it comes; the usage JSON (get_output index 1) goes to stderr.
 *
 * stdin is either the raw prompt (`realm run --guest nn_chat.wasm -p PROMPT`) or the request
 * JSON of `realm serve`, whose "prompt" (or last message's "content") is the prompt.
 * A request's "grammar" (GBNF) and "json_schema" (llama.cpp's extensions) become the metadata keys
 * `grammar` and `json-schema`, as LlamaEdge's API server passes them.
 * Exit status 0 on success; 1 with a line on stderr on any wasi-nn error.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *nb = realloc(buf, (cap *= 2) + 1);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    if (buf) buf[n] = 0;
    *len = n;
    return buf;
}

static int hex(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static unsigned hex4(const char *p) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex(p[i]);
        if (h < 0) return 0xFFFD;
        v = v << 4 | (unsigned)h;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 63)),
               o[2] = (char)(0x80 | (cp & 63)), 3;
    return o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 63)),
           o[2] = (char)(0x80 | (cp >> 6 & 63)), o[3] = (char)(0x80 | (cp & 63)), 4;
}

/* The JSON string starting at s (just after its opening quote), unescaped in place into out;
 * returns its length. */
static size_t json_string(const char *s, char *out) {
    size_t n = 0;
    while (*s && *s != '"') {
        if (*s != '\\') {
            out[n++] = *s++;
            continue;
        }
        s++;
        char c = *s ? *s++ : 0;
        switch (c) {
        case 'n':
            out[n++] = '\n';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'u': {
            if (strlen(s) < 4) return n;
            unsigned cp = hex4(s);
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[0] == '\\' && s[1] == 'u' && strlen(s) >= 6) {
                unsigned lo = hex4(s + 2);
                if (lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
            }
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            out[n++] = c;
            break;
        }
    }
    return n;
}

/* The prompt inside a request JSON: "prompt", else the last "content"; NULL if neither. */
static char *request_prompt(char *json, size_t *len) {
    const char *key = strstr(json, "\"prompt\":\"");
    size_t kl = strlen("\"prompt\":\"");
    if (!key) {
        for (const char *p = json; (p = strstr(p, "\"content\":\"")); p++)
            key = p;
        kl = strlen("\"content\":\"");
    }
    if (!key) return NULL;
    char *out = malloc(strlen(key) + 1); /* unescaping never grows the text */
    if (out) *len = json_string(key + kl, out);
    return out;
}

/* The end of the JSON value starting at v (a string, an object or array, or a scalar). */
static const char *json_value_end(const char *v) {
    int depth = 0;
    bool in_str = false;
    for (; *v; v++) {
        if (in_str) {
            if (*v == '\\' && v[1])
                v++;
            else if (*v == '"' && (in_str = false, depth == 0))
                return v + 1;
            continue;
        }
        if (*v == '"')
            in_str = true;
        else if (*v == '{' || *v == '[')
            depth++;
        else if (*v == '}' || *v == ']') {
            if (depth == 0) return v; /* a scalar ended by its container */
            if (--depth == 0) return v + 1;
        } else if (*v == ',' && depth == 0)
            return v;
    }
    return v;
}

/* Appends `,"mkey":VALUE` to md (capacity cap) when the request has "rkey": VALUE. */
static void copy_field(const char *json, const char *rkey, const char *mkey, char *md, size_t cap) {
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", rkey);
    const char *v = strstr(json, pat);
    if (!v) return;
    v += strlen(pat);
    while (*v == ' ')
        v++;
    size_t n = (size_t)(json_value_end(v) - v), l = strlen(md);
    if (l + n + strlen(mkey) + 8 < cap) snprintf(md + l, cap - l, ",\"%s\":%.*s", mkey, (int)n, v);
}

static int fail(const char *what, uint32_t rc) {
    fprintf(stderr, "nn_chat: %s: wasi-nn error %u\n", what, (unsigned)rc);
    return 1;
}

int main(void) {
    size_t len = 0;
    char *in = read_stdin(&len);
    if (!in) return fail("read stdin", 0);
    char *prompt = in;
    /* settings beyond the request's come here, as llama-chat passes its options; an unknown key
     * is ignored by the host */
    size_t md_cap = len + 128;
    char *md = malloc(md_cap);
    if (!md) return fail("metadata", 0);
    snprintf(md, md_cap, "{\"stream-stdout\":false,\"enable-log\":false,\"x-unknown\":1");
    if (in[0] == '{') {
        copy_field(in, "grammar", "grammar", md, md_cap - 1);
        copy_field(in, "json_schema", "json-schema", md, md_cap - 1);
        prompt = request_prompt(in, &len);
        if (!prompt) return fail("request without a prompt", 0);
    }
    uint32_t graph = 0, ctx = 0, rc;
    if ((rc = nn_load_by_name("default", 7, &graph))) return fail("load_by_name", rc);
    if ((rc = nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", rc);
    strcat(md, "}");
    uint32_t dims[1] = {(uint32_t)strlen(md)};
    struct nn_tensor t = {dims, 1, NN_TENSOR_U8, md, dims[0]};
    if ((rc = nn_set_input(ctx, 1, &t))) return fail("set_input metadata", rc);
    dims[0] = (uint32_t)len;
    t = (struct nn_tensor){dims, 1, NN_TENSOR_U8, prompt, (uint32_t)len};
    if ((rc = nn_set_input(ctx, 0, &t))) return fail("set_input prompt", rc);
    char piece[512];
    for (;;) {
        rc = nn_compute_single(ctx);
        if (rc == NN_END_OF_SEQUENCE || rc == NN_CONTEXT_FULL) break;
        if (rc) return fail("compute_single", rc);
        uint32_t n = 0;
        if ((rc = nn_get_output_single(ctx, 0, piece, sizeof piece, &n)))
            return fail("get_output_single", rc);
        fwrite(piece, 1, n, stdout);
        fflush(stdout);
    }
    char usage[256];
    uint32_t n = 0;
    if ((rc = nn_get_output(ctx, 1, usage, sizeof usage - 1, &n))) return fail("get_output", rc);
    usage[n] = 0;
    fprintf(stderr, "usage: %s\n", usage);
    if ((rc = nn_fini_single(ctx))) return fail("fini_single", rc);
    if ((rc = nn_unload(graph))) return fail("unload", rc);
    return 0;
}
