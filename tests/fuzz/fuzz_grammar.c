/*
 * fuzz_grammar.c — libFuzzer target for the guest SDK's grammar engine (guest/sdk/grammar.c) and
 * JSON schema converter (json_schema.c), built natively. Input: GBNF text, a NUL byte, then text
 * to match. Checks: no crash, leak or sanitizer report; a failed parse says why; the matcher's
 * accepts() agrees with advance() byte by byte; the mask over a small vocabulary agrees with
 * per-token checks. The whole input is also tried as a JSON schema: whenever the converter
 * succeeds, its GBNF must parse (only a schema that recurses without end may be refused).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "realm_grammar.h"
#include "realm_tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the imports sdk.c references are stubbed in tests/sdk_native_stubs.c */

static const char *const PIECES[] = {"a", "b",  "ab", "\"",   "{",    "}",  " ",   "\n",
                                     "1", "12", "é",  "\xc3", "\xa9", "日", "x y", "[",
                                     "]", ",",  ":",  "true", "-",    "\\", ""};
#define N_PIECES (int32_t)(sizeof PIECES / sizeof *PIECES)
static struct rg_vocab *g_vocab;

static void check_tokens(struct rg_gmatch *m) {
    float logits[N_PIECES + 1];
    for (int32_t t = 0; t <= N_PIECES; t++)
        logits[t] = 0;
    int32_t allowed = rg_gmatch_mask(m, g_vocab, logits), count = 0;
    if (allowed == REALM_E_LIMIT) return;
    for (int32_t t = 0; t <= N_PIECES; t++) {
        bool a = rg_gmatch_allows(m, g_vocab, t);
        if (a != (logits[t] > -INFINITY)) abort();
        count += a;
    }
    if (count ? allowed != count : allowed != REALM_E_INVALID) abort();
}

static void run_grammar(const char *src, size_t glen, const uint8_t *text, size_t tlen) {
    struct rg_grammar *g;
    char err[256];
    int32_t rc = rg_grammar_parse(src, glen, NULL, &g, err, sizeof err);
    if (rc != REALM_OK) {
        if (!g && strncmp(err, "grammar: ", 9) != 0) abort();
        return;
    }
    struct rg_gmatch *m;
    if (rg_gmatch_new(g, &m) == REALM_OK) {
        check_tokens(m);
        for (size_t k = 0; k < tlen && k < 256; k++) {
            bool acc = rg_gmatch_accepts(m, (const char *)text + k, 1);
            rc = rg_gmatch_advance(m, (const char *)text + k, 1);
            if (rc == REALM_E_LIMIT || rc == REALM_E_NOMEM) break;
            if (acc != (rc == REALM_OK)) abort();
            if (rc != REALM_OK) break;
            if (k % 16 == 0) check_tokens(m);
        }
        /* a token walk: accept_token succeeds exactly for allowed tokens */
        if (rg_gmatch_reset(m) == REALM_OK) {
            for (size_t k = 0; k < tlen && k < 64; k++) {
                int32_t t = (int32_t)(text[k] % (N_PIECES + 1));
                bool allowed = rg_gmatch_allows(m, g_vocab, t);
                rc = rg_gmatch_accept_token(m, g_vocab, t);
                if (rc == REALM_E_LIMIT || rc == REALM_E_NOMEM) break;
                if (allowed != (rc == REALM_OK)) abort();
                if (k % 8 == 0) check_tokens(m);
            }
        }
        rg_gmatch_free(m);
    }
    rg_grammar_free(g);
}

static void run_schema(const uint8_t *data, size_t size) {
    struct rj_value *s;
    char err[256];
    if (rj_parse((const char *)data, size, &s, err, sizeof err) != REALM_OK) return;
    char *gbnf = NULL;
    if (rg_json_schema_to_gbnf(s, &gbnf, err, sizeof err) == REALM_OK) {
        struct rg_grammar *g;
        int32_t rc = rg_grammar_parse(gbnf, strlen(gbnf), NULL, &g, err, sizeof err);
        if (rc == REALM_E_FORMAT && !strstr(err, "left recursion") &&
            !strstr(err, "never complete"))
            abort();
        rg_grammar_free(g);
    } else if (strncmp(err, "json schema: ", 13) != 0) {
        abort();
    }
    free(gbnf);
    rj_free(s);
}

/* The tool-call parser on any text, in both formats: a report is always a JSON array. */
static void run_tool_calls(const char *text, size_t n) {
    static const char *const formats[] = {"hermes", "llama3"};
    for (int f = 0; f < 2; f++) {
        char *report = NULL;
        size_t calls = 0;
        int32_t rc = rg_tool_calls_parse(text, n, formats[f], &report, &calls);
        if (rc == REALM_OK) {
            struct rj_value *v = NULL;
            if (!report || calls == 0 ||
                rj_parse(report, strlen(report), &v, NULL, 0) != REALM_OK || v->type != RJ_ARRAY ||
                v->n != calls)
                abort();
            rj_free(v);
        } else if (report || (rc != REALM_E_NOT_FOUND && rc != REALM_E_NOMEM)) {
            abort();
        }
        free(report);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_vocab) {
        if (rg_vocab_new(N_PIECES + 1, &g_vocab) != REALM_OK) abort();
        for (int32_t t = 0; t < N_PIECES; t++)
            rg_vocab_set(g_vocab, t, PIECES[t], strlen(PIECES[t]));
        rg_vocab_set_eog(g_vocab, N_PIECES);
        if (rg_vocab_build(g_vocab) != REALM_OK) abort();
    }
    if (size > 1 << 16) return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t glen = nul ? (size_t)(nul - data) : size;
    run_grammar((const char *)data, glen, nul ? nul + 1 : data + size, nul ? size - glen - 1 : 0);
    run_schema(data, size);
    run_tool_calls((const char *)data, size);
    return 0;
}
