/*
 * nn_chat.c — a wasi-nn app written only against wasi_ephemeral_nn + WASI, the way LlamaEdge's
 * llama-chat drives WasmEdge's GGML backend: read the prompt from stdin, load_by_name("default"),
 * set the metadata and the prompt, then compute_single / get_output_single until end of sequence,
 * writing each piece to stdout as it comes; the usage JSON (get_output index 1) goes to stderr.
 *
 * stdin is either the raw prompt (`realm run --guest nn_chat.wasm -p PROMPT`) or the request
 * JSON of `realm serve`, whose "prompt" (or last message's "content") is the prompt.
 * Exit status 0 on success; 1 with a line on stderr on any wasi-nn error.
 */
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

static int fail(const char *what, uint32_t rc) {
    fprintf(stderr, "nn_chat: %s: wasi-nn error %u\n", what, (unsigned)rc);
    return 1;
}

int main(void) {
    size_t len = 0;
    char *in = read_stdin(&len);
    if (!in) return fail("read stdin", 0);
    char *prompt = in;
    if (in[0] == '{') {
        prompt = request_prompt(in, &len);
        if (!prompt) return fail("request without a prompt", 0);
    }
    uint32_t graph = 0, ctx = 0, rc;
    if ((rc = nn_load_by_name("default", 7, &graph))) return fail("load_by_name", rc);
    if ((rc = nn_init_execution_context(graph, &ctx))) return fail("init_execution_context", rc);
    /* settings beyond the request's come here, as llama-chat passes its options; an unknown key
     * is ignored by the host */
    static const char md[] = "{\"stream-stdout\":false,\"enable-log\":false,\"x-unknown\":1}";
    uint32_t dims[1] = {sizeof md - 1};
    struct nn_tensor t = {dims, 1, NN_TENSOR_U8, md, sizeof md - 1};
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
