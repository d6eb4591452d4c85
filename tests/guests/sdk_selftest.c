/*
 * sdk_selftest.c — unit tests of the guest SDK run inside the sandbox: the strict JSON parser
 * (accepts and rejects), UTF-8 helpers, rg_fmt, and the sampler (greedy, top-k 1, logit_bias,
 * penalties, determinism per seed) and rg_logprobs. Emits "ok <checks>" or fails with the first
 * mismatch logged.
 */
#include <math.h>

#include "check.h"

static int g_checks;
#define T(cond)                                                                                    \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            rg_logf(REALM_ABI_LOG_ERROR, "line %d: %s", __LINE__, #cond);                          \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

static int32_t parse(const char *s, struct rj_value **v) {
    return rj_parse(s, strlen(s), v, NULL, 0);
}

static void json_tests(void) {
    static const char *good[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5e3",
        "-12.25E-2",
        "true",
        "false",
        "null",
        "\"\"",
        " {\"a\" : [1, 2, {\"b\": null}], \"c\": \"\\u00e9\\ud83d\\ude00\\n\"} ",
        "\"caf\xc3\xa9\"",
        "[[[[[]]]]]",
        "1e308",
    };
    static const char *bad[] = {
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "01",
        "+1",
        ".5",
        "1.",
        "1e",
        "-",
        "tru",
        "nul",
        "\"abc",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"a\x01\"",
        "\"\xc3\"",
        "\"\xff\"",
        "\"\xed\xa0\x80\"",
        "{\"a\":1,\"a\":2}",
        "[1] 2",
        "{1:2}",
        "1e999",
        "[1 2]",
        "'a'",
        "NaN",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct rj_value *v = NULL;
        T(parse(good[i], &v) == REALM_OK);
        rj_free(v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rj_value *v = NULL;
        char err[80];
        int32_t rc = rj_parse(bad[i], strlen(bad[i]), &v, err, sizeof err);
        T(rc == REALM_E_FORMAT && v == NULL && err[0]);
        if (rc == REALM_OK) rg_logf(REALM_ABI_LOG_ERROR, "accepted bad JSON #%d", (int)i);
    }
    /* depth cap */
    char deep[200];
    for (int i = 0; i < 100; i++)
        deep[i] = '[', deep[199 - i] = ']';
    struct rj_value *v = NULL;
    T(rj_parse(deep, sizeof deep, &v, NULL, 0) == REALM_E_FORMAT);
    /* values and source spans */
    const char *doc = "{\"s\":\"a\\\"b\\u0041\",\"n\":-2.5,\"arr\":[1,true],\"o\":{\"k\":null}}";
    T(parse(doc, &v) == REALM_OK);
    T(!strcmp(rj_string(rj_get(v, "s"), ""), "a\"bA"));
    T(rj_number(rj_get(v, "n"), 0) == -2.5);
    const struct rj_value *arr = rj_get(v, "arr");
    T(arr && arr->type == RJ_ARRAY && arr->n == 2 && arr->items[1].type == RJ_TRUE);
    T(arr && arr->src_len == 8 && !memcmp(doc + arr->src_off, "[1,true]", 8));
    T(rj_get(v, "missing") == NULL && rj_get(rj_get(v, "o"), "k")->type == RJ_NULL);
    T(rj_is_int(&arr->items[0], 0, 5) && !rj_is_int(rj_get(v, "n"), -10, 10));
    rj_free(v);
    /* a NUL inside a string is kept and counted */
    T(parse("\"a\\u0000b\"", &v) == REALM_OK && v->str_len == 3 && v->str[1] == 0);
    rj_free(v);
}

static void utf8_tests(void) {
    T(rg_utf8_complete_prefix("ab\xc3", 3) == 2);
    T(rg_utf8_complete_prefix("ab\xc3\xa9", 4) == 4);
    T(rg_utf8_complete_prefix("\xf0\x9f\x98", 3) == 0);
    T(rg_utf8_complete_prefix("\xff"
                              "a",
                              2) == 2); /* invalid bytes are not waited for */
    struct rg_buf b = {0};
    T(rg_utf8_sanitize(&b,
                       "a\xff"
                       "b",
                       3) == REALM_OK &&
      b.len == 5 &&
      !memcmp(b.data,
              "a\xef\xbf\xbd"
              "b",
              5));
    b.len = 0;
    /* E2 82 41: one U+FFFD for the maximal subpart E2 82, then 'A' */
    T(rg_utf8_sanitize(&b,
                       "\xe2\x82"
                       "A",
                       3) == REALM_OK &&
      b.len == 4 &&
      !memcmp(b.data,
              "\xef\xbf\xbd"
              "A",
              4));
    rg_buf_free(&b);
}

static void fmt_tests(void) {
    char buf[64];
    const char *want = "-42|7|hi|ff|-5000000000|z|%";
    T(rg_fmt(buf, sizeof buf, "%d|%u|%s|%x|%lld|%c|%%", -42, 7u, "hi", 255u, -5000000000ll, 'z') ==
          (int)strlen(want) &&
      !strcmp(buf, want));
    T(rg_fmt(buf, 4, "%s", "abcdef") == 6 && !strcmp(buf, "abc"));
    T(rg_fmt(buf, sizeof buf, "%.*s", 2, "abcdef") == 2 && !strcmp(buf, "ab"));
    T(rg_fmt(buf, sizeof buf, "%f", 1.25) == 8 && !strcmp(buf, "1.250000"));
}

static int32_t sample_seq(const struct rg_sampler_params *p, int32_t n_vocab, int32_t *out, int n) {
    struct rg_sampler s;
    if (rg_sampler_init(&s, p, n_vocab)) return -1;
    float *l = malloc((size_t)n_vocab * sizeof *l);
    for (int i = 0; i < n; i++) {
        for (int32_t k = 0; k < n_vocab; k++)
            l[k] = (float)((k * 37 + i * 11) % 101) / 25.0f;
        out[i] = rg_sampler_sample(&s, l);
        rg_sampler_accept(&s, out[i]);
    }
    free(l);
    rg_sampler_free(&s);
    return 0;
}

/* rg_logprobs: log-softmax values, the k best sorted (lower id first on ties), bad arguments. */
static void logprobs_tests(void) {
    float l[6] = {1.0f, 3.0f, 3.0f, -INFINITY, 0.0f, 2.0f};
    int32_t ids[REALM_ABI_MAX_TOP_LOGPROBS + 1];
    float lps[REALM_ABI_MAX_TOP_LOGPROBS + 1];
    double lse = log(exp(1.0) + 2 * exp(3.0) + exp(0.0) + exp(2.0));
    T(rg_logprobs(l, 6, 4, 3, ids, lps) == 4);
    T(ids[0] == 4 && ids[1] == 1 && ids[2] == 2 && ids[3] == 5);
    T(fabs(lps[0] - (0.0 - lse)) < 1e-5 && fabs(lps[1] - (3.0 - lse)) < 1e-5 && lps[1] == lps[2]);
    T(lps[3] < lps[2] && lps[3] <= 0);
    T(rg_logprobs(l, 6, 3, 0, ids, lps) == 1 && ids[0] == 3 && isinf(lps[0]) && lps[0] < 0);
    T(rg_logprobs(l, 6, 1, 20, ids, lps) == 7 &&
      ids[6] == 3); /* k past the vocabulary: all of it */
    T(rg_logprobs(l, 6, 6, 1, ids, lps) == REALM_E_INVALID);
    T(rg_logprobs(l, 6, 0, 21, ids, lps) == REALM_E_INVALID);
    float dead[2] = {-INFINITY, -INFINITY};
    T(rg_logprobs(dead, 2, 0, 1, ids, lps) == REALM_E_INVALID);
}

static void sampler_tests(void) {
    enum { V = 300, N = 40 };
    int32_t a[N], b[N], c[N];
    struct rg_sampler_params p;
    rg_sampler_params_default(&p);
    /* greedy picks the argmax, lowest id on ties */
    p.temperature = 0;
    T(sample_seq(&p, V, a, N) == 0);
    T(a[0] == 30); /* (k*37) % 101 == 100 first at k = 30 (again at 131, 232: ties go low) */
    /* top-k 1 at any temperature is greedy */
    rg_sampler_params_default(&p);
    p.top_k = 1;
    p.seed = 9;
    T(sample_seq(&p, V, b, N) == 0 && !memcmp(a, b, sizeof a));
    /* one seed, one sequence; another seed, another sequence */
    rg_sampler_params_default(&p);
    p.seed = 1;
    T(sample_seq(&p, V, a, N) == 0 && sample_seq(&p, V, b, N) == 0 && !memcmp(a, b, sizeof a));
    p.seed = 2;
    T(sample_seq(&p, V, c, N) == 0 && memcmp(a, c, sizeof a) != 0);
    /* a -100 bias bans a token, +100 forces one */
    struct rg_bias bias = {30, -100.0f};
    rg_sampler_params_default(&p);
    p.temperature = 0;
    p.bias = &bias;
    p.n_bias = 1;
    T(sample_seq(&p, V, a, 1) == 0 && a[0] == 131);
    bias = (struct rg_bias){250, 100.0f};
    T(sample_seq(&p, V, a, N) == 0 && a[0] == 250 && a[N - 1] == 250);
    /* a strong repeat penalty keeps greedy from repeating within the window */
    rg_sampler_params_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 1e6f;
    p.penalty_last_n = 8;
    T(sample_seq(&p, V, a, 9) == 0);
    int dup = 0;
    for (int i = 0; i < 9; i++)
        for (int j = i + 1; j < 9 && j - i <= 8; j++)
            dup += a[i] == a[j];
    T(dup == 0);
    /* bad parameters */
    struct rg_sampler s;
    rg_sampler_params_default(&p);
    p.top_p = 0;
    T(rg_sampler_init(&s, &p, V) == REALM_E_INVALID);
    rg_sampler_params_default(&p);
    T(rg_sampler_init(&s, &p, 0) == REALM_E_INVALID);
}

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    json_tests();
    utf8_tests();
    fmt_tests();
    sampler_tests();
    logprobs_tests();
    if (g_fail) return REALM_E_INTERNAL;
    char buf[32];
    return realm_emit(buf, rg_fmt(buf, sizeof buf, "ok %d", g_checks));
}
