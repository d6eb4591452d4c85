/*
 * cmd_bench.c — `realm bench`: prefill and decode throughput of the native engine on one model.
 *
 * Each repetition: a fresh session (rewound to 0) prefills P prompt tokens in batches (logits for
 * the last row only), then decodes N tokens one row at a time with logits, feeding tokens from
 * the same list. After one untimed warm-up, the median over --reps repetitions is reported, as
 * text or as one JSON object (--json). bench/vs_llamacpp.py drives llama.cpp through the same
 * procedure with the same tokens (--tokens-file) to compare the two.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/quant.h"
#include "realm/served.h"
#include "realm/threadpool.h"

struct bench_opts {
    const char *model;
    int n_prompt, n_gen, threads, reps, batch;
    bool json, kv_f32;
    const char *tokens_file;
    int tenants[16]; /* --tenants: counts to run through the scheduler (0 entries: off) */
    int n_tenants;
    bool p_set, n_set;
    int prepack; /* -1: default (on with --tenants), 0 off, 1 on */
};

static void bench_usage(FILE *f) {
    fprintf(
        f,
        "usage: realm bench -m MODEL [-p 512] [-n 128] [-t THREADS] [--reps 3] [-b|--batch 512]\n"
        "                   [--tokens-file FILE] [--kv f16|f32] [--prepack on|off] [--json]\n"
        "       realm bench -m MODEL --tenants 1,4,16,64 [-p 32] [-n 64] [-t THREADS] [--reps 3] "
        "[--json]\n"
        "Prefill P tokens, then decode N tokens, --reps times after a warm-up; prints the median\n"
        "tokens per second of each phase. Tokens: ids from FILE (cycled), or pseudo-random ids.\n"
        "--tenants: for each count T, T tenants each prefill their own P-token prompt and then "
        "decode\n"
        "N tokens greedily at the same time through the batching scheduler (paged KV); prints the\n"
        "aggregate decode tok/s (median of reps), p50/p99 time per token and rows per step.\n"
        "--prepack: repack Q4_K/Q6_K weights at load for the batched kernels (default: on with\n"
        "--tenants, as realm serve does; off otherwise, as realm run does).\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *t = malloc(sizeof(double) * (size_t)n);
    if (!t) return 0;
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double m = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return m;
}

void cli_cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *p = strchr(line, ':');
        if (!p) break;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\n")] = 0;
        snprintf(buf, cap, "%s", p);
        break;
    }
    fclose(f);
}

void cli_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* One prefill + decode pass; returns 0 and the two durations in seconds. */
static int bench_pass(struct realm_engine *e, struct realm_session *s, const int32_t *toks,
                      int n_toks, int n_prompt, int n_gen, int batch, float *logits,
                      struct realm_batch_row *rows, double *t_pre, double *t_dec) {
    struct realm_err err;
    realm_session_rewind(s, 0);
    double t0 = realm_now_s();
    for (int i = 0; i < n_prompt; i += batch) {
        int nb = n_prompt - i < batch ? n_prompt - i : batch;
        for (int j = 0; j < nb; j++)
            rows[j] = (struct realm_batch_row){s, toks[(i + j) % n_toks],
                                               i + j == n_prompt - 1 ? logits : NULL, NULL};
        if (realm_engine_forward(e, rows, nb, &err)) {
            cli_error("%s", err.msg);
            return 1;
        }
    }
    double t1 = realm_now_s();
    for (int i = 0; i < n_gen; i++) {
        struct realm_batch_row row = {s, toks[(n_prompt + i) % n_toks], logits, NULL};
        if (realm_engine_forward(e, &row, 1, &err)) {
            cli_error("%s", err.msg);
            return 1;
        }
    }
    *t_pre = t1 - t0;
    *t_dec = realm_now_s() - t1;
    return 0;
}

static int read_tokens_file(const char *path, int32_t **out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(text);
        cli_error("%s: cannot read", path);
        return -1;
    }
    fclose(f);
    text[size] = 0;
    for (long i = 0; i < size; i++)
        if (text[i] == '\n' || text[i] == '\t' || text[i] == '\r') text[i] = ' ';
    int n = cli_parse_tokens(text, out);
    free(text);
    if (n <= 0) cli_error("%s: expected token ids separated by spaces or commas", path);
    return n > 0 ? n : -1;
}

static int parse(int argc, char **argv, struct bench_opts *o) {
    *o = (struct bench_opts){.n_prompt = 512, .n_gen = 128, .reps = 3, .batch = 512, .prepack = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *num = NULL;
        long lo = 0, hi = 1 << 20;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return -1;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        } else if (!strcmp(a, "--prepack")) {
            if (!v || (strcmp(v, "on") && strcmp(v, "off"))) {
                cli_error("bench: --prepack: expected on or off");
                return 2;
            }
            o->prepack = !strcmp(v, "on");
            i++;
            continue;
        } else if (!strcmp(a, "--tenants")) {
            o->n_tenants = v ? cli_parse_tenant_counts(v, o->tenants, 16) : -1;
            if (o->n_tenants <= 0) {
                cli_error(
                    "bench: --tenants: expected a list like 1,4,16,64 (each 1..1024, at most 16)");
                return 2;
            }
            i++;
            continue;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "--tokens-file") ||
                   !strcmp(a, "--kv")) {
            if (!v) {
                cli_error("bench: %s needs a value", a);
                return 2;
            }
            if (!strcmp(a, "--kv")) {
                if (strcmp(v, "f16") && strcmp(v, "f32")) {
                    cli_error("bench: --kv: expected f16 or f32");
                    return 2;
                }
                o->kv_f32 = !strcmp(v, "f32");
            } else if (!strcmp(a, "--tokens-file")) {
                o->tokens_file = v;
            } else {
                o->model = v;
            }
            i++;
            continue;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            num = &o->n_prompt, lo = 1, o->p_set = true;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            num = &o->n_gen, o->n_set = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            num = &o->threads, hi = 512;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) {
            num = &o->reps, lo = 1, hi = 1000;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            num = &o->batch, lo = 1, hi = 65536;
        } else {
            cli_error("bench: unknown option '%s' (see realm bench --help)", a);
            return 2;
        }
        char *end;
        errno = 0;
        long x = v ? strtol(v, &end, 10) : 0;
        if (!v || end == v || *end || errno || x < lo || x > hi) {
            cli_error("bench: %s: '%s': expected an integer in [%ld, %ld]", a, v ? v : "", lo, hi);
            return 2;
        }
        *num = (int)x;
        i++;
    }
    if (!o->model) {
        cli_error("bench: -m MODEL is required (see realm bench --help)");
        return 2;
    }
    if (o->n_tenants > 0) { /* many tenants: short prompts and generations by default */
        if (!o->p_set) o->n_prompt = 32;
        if (!o->n_set) o->n_gen = 64;
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    struct bench_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;

    struct realm_gguf *g = NULL;
    struct realm_model *m = NULL;   /* the engine benchmark */
    struct realm_served *sv = NULL; /* --tenants */
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    struct realm_batch_row *rows = NULL;
    double *pre = NULL, *dec = NULL;
    int status = 1, n_toks;
    struct realm_err err;

    const bool prepack = o.prepack < 0 ? o.n_tenants > 0 : o.prepack == 1;
    if (o.n_tenants > 0) { /* the server's decode path: a served model and its scheduler */
        struct realm_served_params sp;
        cli_bench_tenants_params(o.tenants, o.n_tenants, o.n_prompt, o.n_gen, o.threads, prepack,
                                 &sp);
        if (realm_gguf_open(o.model, &g, &err) || realm_served_new(g, &sp, &sv, &err)) {
            cli_error("%s: %s", o.model, err.msg);
            goto out;
        }
    } else {
        const struct realm_model_opts mo = {.prepack = prepack};
        if (cli_model_open_opts(o.model, &mo, &g, &m)) return 1;
    }
    const struct realm_model_config *c = realm_model_config(sv ? sv->model : m);
    if (o.tokens_file) {
        if ((n_toks = read_tokens_file(o.tokens_file, &toks)) < 0) goto out;
        for (int i = 0; i < n_toks; i++)
            if (toks[i] >= c->n_vocab) {
                cli_error("%s: token %d outside the vocabulary of %d", o.tokens_file, toks[i],
                          c->n_vocab);
                goto out;
            }
    } else {
        n_toks = o.n_prompt + o.n_gen;
        toks = malloc(sizeof(int32_t) * (size_t)n_toks);
        if (!toks) goto oom;
        uint64_t st = 0x5eed;
        for (int i = 0; i < n_toks; i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            toks[i] = (int32_t)((st >> 33) % (uint64_t)c->n_vocab);
        }
    }
    if (o.n_tenants > 0) {
        status = cli_bench_tenants(o.model, sv, o.tenants, o.n_tenants, toks, n_toks, o.n_prompt,
                                   o.n_gen, o.reps, o.json);
        goto out;
    }
    int64_t n_ctx = (int64_t)o.n_prompt + o.n_gen;
    if (n_ctx > c->n_ctx_train) {
        cli_error("bench: %d + %d tokens exceed the model's context of %d", o.n_prompt, o.n_gen,
                  c->n_ctx_train);
        status = 2;
        goto out;
    }
    int batch = o.batch < o.n_prompt ? o.batch : o.n_prompt;
    if (realm_session_new_kv(m, (int32_t)n_ctx, o.kv_f32 ? REALM_KV_F32 : REALM_KV_F16, &s, &err) ||
        realm_engine_new(m, o.threads, batch, &e, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    rows = malloc(sizeof(*rows) * (size_t)batch);
    pre = malloc(sizeof(double) * (size_t)o.reps);
    dec = malloc(sizeof(double) * (size_t)o.reps);
    if (!logits || !rows || !pre || !dec) goto oom;

    double tp, td;
    int wp = o.n_prompt < 32 ? o.n_prompt : 32; /* warm-up: pages the weights in */
    if (bench_pass(e, s, toks, n_toks, wp, o.n_gen < 4 ? o.n_gen : 4, batch, logits, rows, &tp,
                   &td))
        goto out;
    for (int r = 0; r < o.reps; r++) {
        if (bench_pass(e, s, toks, n_toks, o.n_prompt, o.n_gen, batch, logits, rows, &tp, &td))
            goto out;
        pre[r] = o.n_prompt / tp;
        dec[r] = o.n_gen > 0 ? o.n_gen / td : 0;
        if (!o.json)
            fprintf(stderr, "rep %d: prefill %.2f tok/s, decode %.2f tok/s\n", r + 1, pre[r],
                    dec[r]);
    }
    const int nth = realm_engine_n_threads(e);
    const char *isa = realm_quant_isa_name(realm_quant_isa());
    struct stat st;
    long long bytes = stat(o.model, &st) == 0 ? (long long)st.st_size : -1;
    if (o.json) {
        char cpu[256];
        cli_cpu_model(cpu, sizeof cpu);
        printf("{\"model\": ");
        cli_json_str(stdout, o.model);
        printf(", \"arch\": \"%s\", \"model_bytes\": %lld, \"cpu\": ", c->arch_name, bytes);
        cli_json_str(stdout, cpu);
        printf(
            ", \"isa\": \"%s\", \"threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"batch\": %d, "
            "\"reps\": %d, \"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f, \"prefill_runs\": [",
            isa, nth, o.n_prompt, o.n_gen, batch, o.reps, median(pre, o.reps), median(dec, o.reps));
        for (int r = 0; r < o.reps; r++)
            printf("%s%.3f", r ? ", " : "", pre[r]);
        printf("], \"decode_runs\": [");
        for (int r = 0; r < o.reps; r++)
            printf("%s%.3f", r ? ", " : "", dec[r]);
        printf("]}\n");
    } else {
        printf("%s (%s, %d threads, %s): prefill %d tokens %.2f tok/s, decode %d tokens %.2f tok/s "
               "(median of %d)\n",
               o.model, c->arch_name, nth, isa, o.n_prompt, median(pre, o.reps), o.n_gen,
               median(dec, o.reps), o.reps);
    }
    status = 0;
    goto out;
oom:
    cli_error("out of memory");
out:
    free(pre);
    free(dec);
    free(rows);
    free(logits);
    free(toks);
    realm_session_free(s);
    realm_engine_free(e);
    realm_model_free(m);
    realm_served_free(sv);
    realm_gguf_close(g);
    return status;
}
