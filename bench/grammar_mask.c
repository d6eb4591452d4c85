/*
 * grammar_mask.c — cost of grammar-constrained sampling per token (issue 14 target: <= 1 ms per
 * token over SmolLM2's 49k vocabulary for the JSON grammar). Native build of the guest SDK's
 * grammar engine (guest/sdk/grammar.c, sample.c) with the real vocabulary read through the host
 * tokenizer. Replays the tokens of a few JSON documents as if a model produced them and times,
 * per step:
 *   plain   — rg_sampler_sample alone (no grammar);
 *   grammar — rg_sample_grammar (the common case: the sampled token is allowed, one check);
 *   miss    — rg_sample_grammar when the model's favourite ("Sure", at the steps where the grammar
 *             rejects it) is rejected: greedy continues in logit order; sampling masks the whole
 *             vocabulary and samples again;
 *   mask    — rg_gmatch_mask alone, first thing at each step (the whole vocabulary; states seen
 *             before, as inside a string, come from the matcher's memo).
 * Usage: bench_grammar_mask [model.gguf] [json.gbnf]  (defaults: ~/.cache/realm/models/SmolLM2...,
 * ~/.cache/realm/gbnf/json.gbnf from scripts/fetch-gbnf.sh).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../tests/read_all.h"
#include "grammar_mask.h"
#include "realm_grammar.h"

/* grammar.c's one SDK dependency outside sample.c (sdk.c cannot link next to realm_core) */
int rg_fmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* Thread CPU time, not wall time: on a loaded machine a preemption in the middle of a call would
 * otherwise be charged to it (the p99 then measures the scheduler). */
static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *what, double *v, size_t n) {
    if (!n) return;
    qsort(v, n, sizeof *v, cmp_d);
    double sum = 0;
    for (size_t k = 0; k < n; k++)
        sum += v[k];
    printf("  %-28s p50 %8.1f us  p99 %8.1f us  mean %8.1f us  max %8.1f us  (n=%zu)\n", what,
           v[n / 2], v[(size_t)((double)n * 0.99)], sum / (double)n, v[n - 1], n);
}

static const char *const DOCS[] = {
    "{\"name\": \"Alice Martin\", \"age\": 30, \"email\": \"alice@example.com\", \"tags\": "
    "[\"admin\", \"dev\"],\n"
    " \"address\": {\"street\": \"12 rue de la Paix\", \"city\": \"Paris\", \"zip\": \"75001\"}, "
    "\"active\": true,\n"
    " \"score\": 12.5, \"notes\": null}",
    "{\n  \"id\": 123456,\n  \"items\": [\n    {\"sku\": \"A-1\", \"qty\": 2, \"price\": 9.99},\n"
    "    {\"sku\": \"B-22\", \"qty\": 1, \"price\": 120.0}\n  ],\n  \"comment\": \"Deliver after "
    "6pm, ring twice. "
    "Merci!\"\n}",
};

int main(int argc, char **argv) {
    const char *home = getenv("HOME");
    char mpath[512], gpath[512];
    snprintf(mpath, sizeof mpath, "%s/.cache/realm/models/SmolLM2-135M-Instruct.Q4_1.gguf",
             home ? home : ".");
    snprintf(gpath, sizeof gpath, "%s/.cache/realm/gbnf/json.gbnf", home ? home : ".");
    const char *model = argc > 1 ? argv[1] : mpath, *gram = argc > 2 ? argv[2] : gpath;

    if (bench_tok_open(model)) return 1;
    char *src = tu_read_all(gram, NULL);
    if (!src) {
        fprintf(stderr, "bench: %s missing (scripts/fetch-gbnf.sh)\n", gram);
        return 1;
    }
    char gerr[256];
    struct rg_grammar *g;
    if (rg_grammar_parse(src, strlen(src), NULL, &g, gerr, sizeof gerr)) {
        fprintf(stderr, "bench: %s\n", gerr);
        return 1;
    }
    int32_t nv = bench_tok_n_vocab();
    struct rg_vocab *v;
    double t0 = now_us();
    if (rg_vocab_new(nv, &v)) return 1;
    char buf[1024];
    for (int32_t t = 0; t < nv; t++) {
        int64_t l = bench_tok_piece(t, buf, sizeof buf);
        if (l < 0 || l > (int64_t)sizeof buf) l = 0;
        rg_vocab_set(v, t, buf, (size_t)l);
        if (bench_tok_is_eog(t)) rg_vocab_set_eog(v, t);
    }
    if (rg_vocab_build(v)) return 1;
    printf("vocab: %d tokens from %s, table built in %.1f ms\n", nv, model, (now_us() - t0) / 1e3);

    size_t cap = 4096, n_plain = 0, n_gr = 0, n_miss = 0, n_mask = 0, n_gmiss = 0;
    double *plain = malloc(cap * sizeof *plain), *gr = malloc(cap * sizeof *gr),
           *miss = malloc(cap * sizeof *miss), *mask = malloc(cap * sizeof *mask),
           *gmiss = malloc(cap * sizeof *gmiss);
    float *base = malloc((size_t)nv * sizeof *base), *l = malloc((size_t)nv * sizeof *l);
    uint64_t rng = 12345;
    for (int32_t t = 0; t < nv; t++) { /* a fixed, model-like spread of logits */
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        base[t] = (float)((double)(rng >> 11) / 9007199254740992.0) * 8.0f - 4.0f;
    }
    struct rg_sampler_params sp;
    rg_sampler_params_default(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.seed = 7;
    struct rg_sampler smp, sg;
    rg_sampler_init(&smp, &sp, nv);
    sp.temperature = 0;
    rg_sampler_init(&sg, &sp, nv);
    int32_t reject_tok = -1; /* a token never allowed inside JSON: "Sure" */
    {
        int32_t ids[8];
        if (bench_tok_encode("Sure", ids, 8) >= 1) reject_tok = ids[0];
    }
    for (size_t d = 0; d < sizeof DOCS / sizeof *DOCS; d++) {
        int32_t ids[1024];
        int64_t n = bench_tok_encode(DOCS[d], ids, 1024);
        if (n < 0) return 1;
        struct rg_gmatch *m;
        if (rg_gmatch_new(g, &m)) return 1;
        for (int64_t k = 0; k < n && n_plain < cap; k++) {
            int32_t want = ids[k];
            /* the full mask first, before anything else looked at this state (a state seen at an
             * earlier step, e.g. inside a string, is served from the matcher's memo) */
            memcpy(l, base, (size_t)nv * sizeof *l);
            double a0 = now_us();
            int32_t allowed = rg_gmatch_mask(m, v, l);
            mask[n_mask++] = now_us() - a0;
            if (k < 3 || k == n - 1)
                printf("  step %lld: %d tokens allowed\n", (long long)k, allowed);
            /* plain sampling: the document token is the favourite by a wide margin */
            memcpy(l, base, (size_t)nv * sizeof *l);
            l[want] = 30;
            double a = now_us();
            int32_t tok = rg_sampler_sample(&smp, l);
            plain[n_plain++] = now_us() - a;
            /* the same under the grammar */
            memcpy(l, base, (size_t)nv * sizeof *l);
            l[want] = 30;
            a = now_us();
            tok = rg_sample_grammar(&smp, m, v, l);
            gr[n_gr++] = now_us() - a;
            if (tok != want)
                fprintf(stderr, "bench: step %lld: sampled %d, want %d\n", (long long)k, tok, want);
            /* the model's favourite is rejected: sampling falls back to a full mask */
            if (reject_tok >= 0 && !rg_gmatch_allows(m, v, reject_tok)) {
                memcpy(l, base, (size_t)nv * sizeof *l);
                l[reject_tok] = 40;
                l[want] = 30;
                a = now_us();
                tok = rg_sample_grammar(&smp, m, v, l);
                miss[n_miss++] = now_us() - a;
                memcpy(l, base, (size_t)nv * sizeof *l);
                l[reject_tok] = 40;
                l[want] = 30;
                a = now_us();
                tok = rg_sample_grammar(&sg, m, v, l);
                gmiss[n_gmiss++] = now_us() - a;
                if (tok != want)
                    fprintf(stderr, "bench: greedy step %lld: %d, want %d\n", (long long)k, tok,
                            want);
            }
            if (rg_gmatch_accept_token(m, v, want)) {
                fprintf(stderr, "bench: doc %zu token %lld rejected by the grammar\n", d,
                        (long long)k);
                return 1;
            }
        }
        rg_gmatch_free(m);
    }
    printf("JSON grammar (%s), %zu steps over %zu documents:\n", gram, n_plain,
           sizeof DOCS / sizeof *DOCS);
    report("plain sampling (no grammar)", plain, n_plain);
    report("grammar, favourite allowed", gr, n_gr);
    report("grammar sample, fav. rejected", miss, n_miss);
    report("grammar greedy, fav. rejected", gmiss, n_gmiss);
    report("full mask only", mask, n_mask);
    rg_sampler_free(&smp);
    rg_sampler_free(&sg);
    rg_vocab_free(v);
    rg_grammar_free(g);
    bench_tok_close();
    free(src);
    free(plain), free(gr), free(miss), free(mask), free(gmiss), free(base), free(l);
    return 0;
}
