/*
 * cmd_run.c — `realm run`: load a model, tokenize a prompt (or take --tokens), prefill it in
 * batches, then decode N tokens (greedy or temperature / top-k / top-p sampling), streaming the
 * text to stdout; a one-line summary goes to stderr. cli_run_native() is the native path the
 * sandboxed `--guest` path sits beside.
 *
 * Owns everything it opens, for the duration of the command.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/sample.h"
#include "realm/threadpool.h"
#include "realm/tokenizer.h"

int cli_model_open(const char *path, struct realm_gguf **g, struct realm_model **m) {
    return cli_model_open_opts(path, NULL, g, m);
}

int cli_model_open_opts(const char *path, const struct realm_model_opts *opts,
                        struct realm_gguf **g, struct realm_model **m) {
    struct realm_err err;
    *g = NULL;
    *m = NULL;
    if (realm_gguf_open(path, g, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    if (realm_model_load_opts(*g, opts, m, &err)) {
        cli_error("%s: %s", path, err.msg);
        realm_gguf_close(*g);
        *g = NULL;
        return 1;
    }
    return 0;
}

/* Parses "1,2,3" (commas or spaces) into a new array. Returns the count, -1 on a bad list. */
int cli_parse_tokens(const char *s, int32_t **out) {
    int64_t cap = 16, n = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return -1;
    const char *p = s;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -1;
        }
        if (n == cap) {
            int32_t *nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[n++] = (int32_t)x;
        p = end;
        if (*p && *p != ',' && *p != ' ') {
            free(v);
            return -1;
        }
    }
    *out = v;
    return (int)n;
}

/* ---- sampling (llama.cpp's default chain order: top-k, top-p, temperature, draw) ---- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Draws a token with the selection core the guest SDK uses (realm/sample.h), so that a seed
 * gives the same tokens natively and through the default guest; `scratch` holds
 * realm_sample_scratch_bytes(n_vocab). */
static int32_t sample(const float *logits, int32_t n_vocab, const struct cli_run_opts *o,
                      void *scratch, uint64_t *rng) {
    if (o->temp <= 0.0f) return argmax(logits, n_vocab);
    struct realm_sample_params p = {o->temp, o->top_k, o->top_p, 0.0f};
    double u = (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return realm_sample_pick(logits, n_vocab, &p, u, scratch);
}

/* ---- the native run ---- */

/* Streams one generated token: its text, or its id when there is no tokenizer; with --print-ids
 * (`ids`) the ids space-separated (n_before: tokens printed before this one). */
static void emit_token(struct realm_tokenizer *tok, struct realm_detok *d, int32_t id, bool ids,
                       int n_before) {
    char buf[1024];
    if (ids) {
        printf(n_before ? " %d" : "%d", id);
        fflush(stdout);
        return;
    }
    if (!tok) {
        printf("%d ", id);
        fflush(stdout);
        return;
    }
    int64_t n = realm_detok_push(d, id, buf, sizeof buf);
    if (n > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        fflush(stdout);
    }
}

int cli_run_native(const struct cli_run_opts *o) {
    struct realm_gguf *g = NULL;
    struct realm_model *m = NULL;
    struct realm_tokenizer *tok = NULL;
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    void *cands = NULL; /* the sampler's scratch */
    struct realm_batch_row *rows = NULL;
    FILE *lf = NULL;
    int status = 1, n_prompt = 0;
    struct realm_err err;

    if (cli_model_open(o->model, &g, &m)) return 1;
    const struct realm_model_config *c = realm_model_config(m);
    if (realm_tokenizer_load(g, &tok, &err)) {
        if (!o->tokens) {
            cli_error("%s: no usable tokenizer (%s); pass --tokens", o->model, err.msg);
            goto out;
        }
        tok = NULL;
    }

    /* 1. prompt tokens */
    if (o->tokens) {
        n_prompt = cli_parse_tokens(o->tokens, &toks);
        if (n_prompt < 0) {
            cli_error("--tokens: '%s': expected comma-separated token ids", o->tokens);
            status = 2;
            goto out;
        }
    } else {
        const char *p = o->prompt ? o->prompt : "";
        uint32_t flags = REALM_TOKENIZE_PARSE_SPECIAL | (o->no_bos ? 0 : REALM_TOKENIZE_ADD_BOS);
        int64_t need = 0, cap = (int64_t)strlen(p) + 8;
        toks = malloc((size_t)cap * sizeof *toks);
        if (!toks) goto oom;
        int rc = realm_tokenize(tok, p, strlen(p), flags, toks, cap, &need);
        if (rc == REALM_E_TOO_SMALL) {
            free(toks);
            cap = need;
            toks = malloc((size_t)(cap > 0 ? cap : 1) * sizeof *toks);
            if (!toks) goto oom;
            rc = realm_tokenize(tok, p, strlen(p), flags, toks, cap, &need);
        }
        if (rc) {
            cli_error("tokenize: %s", realm_strerror(rc));
            goto out;
        }
        n_prompt = (int)need;
    }
    if (n_prompt == 0) {
        if (!tok || realm_tokenizer_bos(tok) < 0) {
            cli_error("empty prompt and the vocabulary has no BOS token");
            status = 2;
            goto out;
        }
        toks[n_prompt++] = realm_tokenizer_bos(tok); /* a generation needs one input token */
    }
    for (int i = 0; i < n_prompt; i++)
        if (toks[i] >= c->n_vocab) {
            cli_error("token %d at prompt position %d: outside the vocabulary of %d", toks[i], i,
                      c->n_vocab);
            status = 2;
            goto out;
        }

    /* 2. session, engine */
    int64_t want =
        o->n_ctx > 0 ? o->n_ctx : (int64_t)n_prompt + (o->n_predict > 0 ? o->n_predict : 0);
    if (want > c->n_ctx_train) want = c->n_ctx_train;
    if (want < 1) want = 1;
    if (n_prompt > want) {
        cli_error("prompt of %d tokens exceeds the context of %" PRId64 " tokens", n_prompt, want);
        goto out;
    }
    if (realm_session_new_kv(m, (int32_t)want, o->kv_f32 ? REALM_KV_F32 : REALM_KV_F16, &s, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    int32_t batch = o->batch > 0 ? o->batch : 512;
    if (batch > n_prompt) batch = n_prompt;
    if (realm_engine_new(m, o->threads, batch, &e, &err)) {
        cli_error("%s", err.msg);
        goto out;
    }
    const size_t V = (size_t)c->n_vocab;
    logits = malloc(sizeof(float) * V * (o->logits_out ? (size_t)n_prompt : 1));
    cands = malloc(realm_sample_scratch_bytes(V));
    rows = malloc(sizeof(*rows) * (size_t)batch);
    if (!logits || !cands || !rows) goto oom;

    /* 3. prefill in batches; logits for the last prompt row (or all of them for --logits-out) */
    double t0 = realm_now_s();
    for (int i = 0; i < n_prompt; i += batch) {
        int nb = n_prompt - i < batch ? n_prompt - i : batch;
        for (int j = 0; j < nb; j++) {
            int p = i + j;
            float *lg =
                o->logits_out ? logits + (size_t)p * V : (p == n_prompt - 1 ? logits : NULL);
            rows[j] = (struct realm_batch_row){s, toks[p], lg, NULL};
        }
        if (realm_engine_forward(e, rows, nb, &err)) {
            cli_error("%s", err.msg);
            goto out;
        }
    }
    double t_prefill = realm_now_s() - t0;
    const float *last = o->logits_out ? logits + (size_t)(n_prompt - 1) * V : logits;
    if (o->logits_out) {
        lf = fopen(o->logits_out, "wb");
        if (!lf || fwrite(logits, sizeof(float) * V, (size_t)n_prompt, lf) != (size_t)n_prompt) {
            cli_error("%s: cannot write: %s", o->logits_out, strerror(errno));
            goto out;
        }
        if (fclose(lf)) {
            lf = NULL;
            cli_error("%s: cannot write: %s", o->logits_out, strerror(errno));
            goto out;
        }
        lf = NULL;
    }

    /* 4. decode: sample from the last logits, feed the token back */
    uint64_t rng = o->seed_set ? o->seed : (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)&rng << 16);
    struct realm_detok d;
    if (tok) realm_detok_init(&d, tok, false);
    int n_gen = 0, n_fwd = 0;
    double t_decode = 0;
    const char *stop = NULL;
    t0 = realm_now_s();
    while (n_gen < o->n_predict) {
        int32_t id = sample(last, c->n_vocab, o, cands, &rng);
        n_gen++;
        if (tok && !o->ignore_eos && realm_tokenizer_is_eog(tok, id)) {
            stop = "end of generation";
            break;
        }
        emit_token(tok, &d, id, o->print_ids, n_gen - 1);
        if (n_gen == o->n_predict) break;
        if (realm_session_len(s) >= realm_session_n_ctx(s)) {
            stop = "context full";
            break;
        }
        struct realm_batch_row row = {s, id, logits, NULL};
        if (realm_engine_forward(e, &row, 1, &err)) {
            cli_error("%s", err.msg);
            goto out;
        }
        last = logits;
        n_fwd++;
    }
    t_decode = realm_now_s() - t0;
    if (tok && !o->print_ids) {
        char buf[64];
        int64_t nf = realm_detok_flush(&d, buf, sizeof buf);
        if (nf > 0) fwrite(buf, 1, (size_t)nf, stdout);
    }
    if (n_gen > 0) putchar('\n');
    fflush(stdout);
    fprintf(stderr,
            "realm: prompt %d tokens, generated %d tokens, prefill %.1f tok/s, decode %.1f tok/s "
            "(%d threads%s%s)\n",
            n_prompt, n_gen, t_prefill > 0 ? n_prompt / t_prefill : 0.0,
            n_fwd > 0 && t_decode > 0 ? n_fwd / t_decode : 0.0, realm_engine_n_threads(e),
            stop ? ", stopped: " : "", stop ? stop : "");
    status = 0;
    goto out;
oom:
    cli_error("out of memory");
out:
    if (lf) fclose(lf);
    free(rows);
    free(cands);
    free(logits);
    free(toks);
    realm_session_free(s);
    realm_engine_free(e);
    realm_tokenizer_free(tok);
    realm_model_free(m);
    realm_gguf_close(g);
    return status;
}

/* ---- option parsing ---- */

static void run_usage(FILE *f) {
    fprintf(
        f,
        "usage: realm run -m MODEL [-p PROMPT | --tokens 1,2,3] [-n N] [--native | --guest "
        "FILE.wasm]\n"
        "                 [--temp T] [--top-k K] [--top-p P] [--seed S] [-t|--threads N]\n"
        "                 [-c|--ctx N] [-b|--batch N] [--no-bos] [--ignore-eos] [--kv f16|f32]\n"
        "                 [--logits-out FILE] [--print-ids]\n"
        "Generates N tokens (default 64) after the prompt and streams them to stdout; a summary\n"
        "line goes to stderr. Sampling defaults to llama.cpp's: --temp 0.8 --top-k 40 --top-p "
        "0.95\n"
        "(--temp 0: greedy). --logits-out writes the f32 logits of every prompt position.\n"
        "--print-ids prints the generated token ids, space-separated, instead of text (with\n"
        "--native), to compare engines token by token.\n");
}

/* Parses a number option; returns 0 on success. */
static int num_arg(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || errno || !(x >= lo && x <= hi)) {
        cli_error("%s: '%s': expected a number in [%g, %g]", opt, v ? v : "", lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

int cli_run_parse(int argc, char **argv, struct cli_run_opts *o) {
    *o = (struct cli_run_opts){.n_predict = 64, .temp = 0.8f, .top_k = 40, .top_p = 0.95f};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
#define VAL()                                                                                      \
    do {                                                                                           \
        if (!v) {                                                                                  \
            cli_error("run: %s needs a value", a);                                                 \
            return 2;                                                                              \
        }                                                                                          \
    } while (0)
#define NUM(lo, hi)                                                                                \
    do {                                                                                           \
        if (num_arg(a, v, lo, hi, &x)) return 2;                                                   \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            VAL();
            o->model = v, i++;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            VAL();
            o->prompt = v, i++;
        } else if (!strcmp(a, "--tokens")) {
            VAL();
            o->tokens = v, i++;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            NUM(0, 1e9);
            o->n_predict = (int)x;
        } else if (!strcmp(a, "--temp")) {
            NUM(0, 100);
            o->temp = (float)x;
        } else if (!strcmp(a, "--top-k")) {
            NUM(0, 1e9);
            o->top_k = (int)x;
        } else if (!strcmp(a, "--top-p")) {
            NUM(0, 1);
            o->top_p = (float)x;
        } else if (!strcmp(a, "--seed")) {
            NUM(0, 1.8446744073709552e19);
            o->seed = (uint64_t)x, o->seed_set = true;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NUM(0, 512);
            o->threads = (int)x;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            NUM(0, 2147483647.0);
            o->n_ctx = (int32_t)x;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            NUM(1, 65536);
            o->batch = (int32_t)x;
        } else if (!strcmp(a, "--kv")) {
            if (!v || (strcmp(v, "f16") && strcmp(v, "f32"))) {
                cli_error("--kv: expected f16 or f32");
                return 2;
            }
            o->kv_f32 = !strcmp(v, "f32"), i++;
        } else if (!strcmp(a, "--logits-out")) {
            VAL();
            o->logits_out = v, i++;
        } else if (!strcmp(a, "--print-ids")) {
            o->print_ids = true;
        } else if (!strcmp(a, "--no-bos")) {
            o->no_bos = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (!strcmp(a, "--native")) {
            o->native = true;
        } else if (!strcmp(a, "--guest")) {
            VAL();
            o->guest = v, i++;
        } else {
            cli_error("run: unknown option '%s' (see realm run --help)", a);
            return 2;
        }
#undef NUM
#undef VAL
    }
    if (!o->model) {
        cli_error("run: -m MODEL is required (see realm run --help)");
        return 2;
    }
    if (!o->prompt && !o->tokens) {
        cli_error("run: -p PROMPT or --tokens is required");
        return 2;
    }
    if (o->native && o->guest) {
        cli_error("run: --native and --guest exclude each other");
        return 2;
    }
    /* the sandboxed path streams the guest's text (docs/abi.md emit), not token ids */
    if (o->print_ids && !o->native) {
        cli_error("run: --print-ids needs --native");
        return 2;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    struct cli_run_opts o;
    int rc = cli_run_parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    /* the sandbox is the default path (run_sandbox.c); --native runs the engine directly */
    if (o.native) return cli_run_native(&o);
    return cli_run_sandbox(&o);
}
