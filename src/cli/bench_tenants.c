/*
 * bench_tenants.c — `realm bench --tenants 1,4,16,64`: aggregate decode throughput when T tenants
 * decode at once through the continuous-batching scheduler, each with its own paged session.
 *
 * The model is built as the server builds it (realm_served: engine, paged KV pool, scheduler),
 * once, with rows and KV room for the largest count. Per tenant count T and repetition: T threads
 * (one per tenant, standing in for T guests) each prefill their own P-token prompt through the
 * scheduler, meet at a barrier, then decode N tokens greedily, one realm_sched_decode per token.
 * Reported: aggregate decode tokens/s (T·N ÷ time from the barrier to the last thread's end; the
 * median over repetitions), and p50 / p99 of the time of one decode call (all tokens of all reps),
 * plus the mean rows per scheduler step while decoding. The sandbox's own per-call cost is measured
 * apart (bench/tenants.c --overhead).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "realm/kvpool.h"
#include "realm/model.h"
#include "realm/quant.h"
#include "realm/sched.h"
#include "realm/served.h"

#define BT_MAX_COUNTS 16

struct bt_shared {
    const struct realm_model *m;
    struct realm_sched *sched;
    struct realm_kv_pool *pool;
    const int32_t *toks; /* pseudo-random ids, n_toks of them */
    int n_toks, n_prompt, n_gen, n_vocab;
    pthread_barrier_t start;
    double t_start;
    struct realm_sched_stats at_start; /* counters when decoding began */
};

struct bt_thread {
    struct bt_shared *sh;
    int tenant;
    int rc;
    char msg[REALM_ERR_MSG_MAX];
    double t_end;
    double *lat; /* n_gen per-call seconds */
};

static int32_t argmax_f(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void *bt_main(void *arg) {
    struct bt_thread *t = arg;
    struct bt_shared *sh = t->sh;
    struct realm_session *s = NULL;
    struct realm_err err = {0};
    float *logits = malloc(sizeof(float) * (size_t)sh->n_vocab);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)sh->n_prompt);
    t->rc = logits && prompt ? REALM_OK : REALM_E_NOMEM;
    if (!t->rc) {
        /* a distinct prompt per tenant: the shared id list from a tenant-specific offset */
        for (int i = 0; i < sh->n_prompt; i++)
            prompt[i] = sh->toks[(t->tenant * 7919 + i) % sh->n_toks];
        t->rc = realm_session_new_paged(sh->m, sh->pool, (uint32_t)t->tenant + 1,
                                        sh->n_prompt + sh->n_gen + 1, &s, &err);
    }
    if (!t->rc)
        t->rc = realm_sched_decode(sh->sched, (uint32_t)t->tenant + 1, s, prompt, sh->n_prompt,
                                   logits, NULL, &err);
    pthread_barrier_wait(&sh->start); /* everyone decodes from the same moment */
    if (t->tenant == 0) {
        realm_sched_get_stats(sh->sched, &sh->at_start);
        sh->t_start = realm_now_s();
    }
    for (int i = 0; i < sh->n_gen && !t->rc; i++) {
        int32_t tok = argmax_f(logits, sh->n_vocab);
        double t0 = realm_now_s();
        t->rc =
            realm_sched_decode(sh->sched, (uint32_t)t->tenant + 1, s, &tok, 1, logits, NULL, &err);
        t->lat[i] = realm_now_s() - t0;
    }
    t->t_end = realm_now_s();
    if (t->rc) snprintf(t->msg, sizeof t->msg, "%s", err.msg[0] ? err.msg : realm_strerror(t->rc));
    realm_session_free(s);
    free(logits);
    free(prompt);
    return NULL;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of v[0..n), sorting v. */
static double quantile(double *v, size_t n, double q) {
    qsort(v, n, sizeof *v, cmp_dbl);
    size_t k = (size_t)(q * (double)n);
    return v[k < n ? k : n - 1];
}

int cli_parse_tenant_counts(const char *s, int *out, int cap) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1024 || n == cap) return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

/* Positions one tenant's session holds, in whole 16-token blocks plus one of slack. */
static int64_t bt_session_positions(int n_prompt, int n_gen) {
    const int64_t per = (int64_t)n_prompt + n_gen + 1;
    return ((per + 15) / 16 + 1) * 16;
}

void cli_bench_tenants_params(const int *counts, int n_counts, int n_prompt, int n_gen, int threads,
                              bool prepack, struct realm_served_params *out) {
    int max_t = 1;
    for (int i = 0; i < n_counts; i++)
        max_t = counts[i] > max_t ? counts[i] : max_t;
    *out = (struct realm_served_params){.prepack = prepack,
                                        .threads = threads,
                                        .max_batch = max_t > 64 ? max_t : 64,
                                        .prefill_chunk = 32,
                                        .kv_block_tokens = 16,
                                        .kv_positions =
                                            (int64_t)max_t * bt_session_positions(n_prompt, n_gen)};
}

/* One repetition with T tenants; fills the aggregate tok/s, latencies and rows per step. */
static int bt_rep(struct bt_shared *sh, int T, double *agg, double *lat, double *rows_step) {
    struct bt_thread *th = calloc((size_t)T, sizeof *th);
    pthread_t *tid = calloc((size_t)T, sizeof *tid);
    int rc = th && tid ? REALM_OK : REALM_E_NOMEM;
    if (rc) {
        cli_error("bench: out of memory");
        goto out;
    }
    pthread_barrier_init(&sh->start, NULL, (unsigned)T);
    int started = 0;
    for (int i = 0; i < T; i++) {
        th[i] = (struct bt_thread){.sh = sh, .tenant = i, .lat = lat + (size_t)i * sh->n_gen};
        if (pthread_create(&tid[i], NULL, bt_main, &th[i])) break;
        started++;
    }
    if (started < T) {
        /* the barrier would never open: fail loudly rather than hang */
        cli_error("bench: cannot start %d threads (started %d)", T, started);
        exit(1);
    }
    for (int i = 0; i < T; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&sh->start);
    double t_end = 0;
    for (int i = 0; i < T; i++) {
        if (th[i].rc) {
            cli_error("bench: tenant %d: %s", i + 1, th[i].msg);
            rc = th[i].rc;
        }
        if (th[i].t_end > t_end) t_end = th[i].t_end;
    }
    struct realm_sched_stats st;
    realm_sched_get_stats(sh->sched, &st);
    *agg = (double)T * sh->n_gen / (t_end - sh->t_start);
    const int64_t steps = st.steps - sh->at_start.steps, rows = st.rows - sh->at_start.rows;
    *rows_step = steps ? (double)rows / (double)steps : 0; /* decode phase only */
out:
    free(th);
    free(tid);
    return rc;
}

int cli_bench_tenants(const char *model_path, struct realm_served *sv, const int *counts,
                      int n_counts, const int32_t *toks, int n_toks, int n_prompt, int n_gen,
                      int reps, bool json) {
    const struct realm_model_config *c = realm_model_config(sv->model);
    if (n_gen < 1) {
        cli_error("bench: --tenants needs -n >= 1 decode tokens");
        return 2;
    }
    if (n_prompt + n_gen + 1 > c->n_ctx_train) {
        cli_error("bench: %d + %d tokens exceed the model's context of %d", n_prompt, n_gen,
                  c->n_ctx_train);
        return 2;
    }
    struct bt_shared sh = {.m = sv->model,
                           .sched = sv->sched,
                           .pool = sv->kv,
                           .toks = toks,
                           .n_toks = n_toks,
                           .n_prompt = n_prompt,
                           .n_gen = n_gen,
                           .n_vocab = c->n_vocab};
    double agg[BT_MAX_COUNTS], p50[BT_MAX_COUNTS], p99[BT_MAX_COUNTS], rps[BT_MAX_COUNTS];
    int status = 0;
    for (int k = 0; k < n_counts && !status; k++) {
        const int T = counts[k];
        size_t per_rep = (size_t)T * (size_t)n_gen;
        double *lat = malloc(sizeof(double) * per_rep * (size_t)(reps + 1));
        double *aggs = malloc(sizeof(double) * (size_t)reps),
               *rs = malloc(sizeof(double) * (size_t)reps);
        if (!lat || !aggs || !rs) {
            cli_error("out of memory");
            status = 1;
        }
        /* one untimed warm-up repetition, then reps */
        for (int r = 0; r <= reps && !status; r++) {
            double a, rows;
            if (bt_rep(&sh, T, &a, lat + (size_t)r * per_rep, &rows)) {
                status = 1;
                break;
            }
            if (r == 0) continue;
            aggs[r - 1] = a;
            rs[r - 1] = rows;
            if (!json)
                fprintf(stderr, "tenants %d rep %d: %.2f tok/s aggregate, %.1f rows/step\n", T, r,
                        a, rows);
        }
        if (!status) {
            agg[k] = quantile(aggs, (size_t)reps, 0.5);
            rps[k] = quantile(rs, (size_t)reps, 0.5);
            p50[k] = quantile(lat + per_rep, per_rep * (size_t)reps, 0.50);
            p99[k] = quantile(lat + per_rep, per_rep * (size_t)reps, 0.99);
        }
        free(lat);
        free(aggs);
        free(rs);
    }
    const int nth = realm_engine_n_threads(sv->engine);
    if (status) return status;
    char cpu[256];
    cli_cpu_model(cpu, sizeof cpu);
    if (json) {
        printf("{\"model\": ");
        cli_json_str(stdout, model_path);
        printf(", \"arch\": \"%s\", \"cpu\": ", c->arch_name);
        cli_json_str(stdout, cpu);
        printf(", \"isa\": \"%s\", \"threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"reps\": %d, "
               "\"results\": [",
               realm_quant_isa_name(realm_quant_isa()), nth, n_prompt, n_gen, reps);
        for (int k = 0; k < n_counts; k++)
            printf("%s{\"tenants\": %d, \"decode_tok_s\": %.3f, \"token_ms_p50\": %.3f, "
                   "\"token_ms_p99\": %.3f, "
                   "\"rows_per_step\": %.2f, \"speedup_vs_first\": %.3f}",
                   k ? ", " : "", counts[k], agg[k], p50[k] * 1e3, p99[k] * 1e3, rps[k],
                   agg[k] / agg[0]);
        printf("]}\n");
    } else {
        printf("%s (%s, %d threads, %s): prompt %d, decode %d tokens per tenant, median of %d\n",
               model_path, c->arch_name, nth, realm_quant_isa_name(realm_quant_isa()), n_prompt,
               n_gen, reps);
        printf("%8s %14s %12s %12s %10s %9s\n", "tenants", "decode tok/s", "p50 ms/tok",
               "p99 ms/tok", "rows/step", "vs first");
        for (int k = 0; k < n_counts; k++)
            printf("%8d %14.2f %12.2f %12.2f %10.2f %8.2fx\n", counts[k], agg[k], p50[k] * 1e3,
                   p99[k] * 1e3, rps[k], agg[k] / agg[0]);
    }
    return 0;
}
