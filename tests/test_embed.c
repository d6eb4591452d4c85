/*
 * test_embed.c — hidden-state rows (realm_batch_row.embd) and embeddings through the scheduler,
 * on the real engine (stories260K):
 *   - a row's hidden state is bit-identical whether its session runs alone one token at a time,
 *     alone in one batch, or batched with other sessions, with logits rows, with rows that want
 *     nothing, in batches on either side of the engine's private-preparation threshold;
 *   - asking for the hidden state changes no logits bit, and logits rows next to hidden-state-only
 *     rows are those of a logits-only run;
 *   - realm_sched_embed gives the same states as the engine alone, also while other sessions
 *     decode and embed in the same steps, and leaves no logits row in its steps;
 *   - realm_embed_pool: mean and last-token pooling match a pooling done here by hand, unit norm,
 *     and its argument checks.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>

#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/sched.h"
#include "realm/status.h"

#define NCTX 256
#define MAXT 40

static const struct realm_model *g_m;
static struct realm_engine *g_e;
static int32_t g_V, g_E;

static int32_t prompt_of(int i, int32_t n, int32_t *toks) {
    toks[0] = 1;
    for (int32_t j = 1; j < n; j++)
        toks[j] = 3 + (i * 29 + j * 13) % (g_V - 3);
    return n;
}

/* Reference: the session alone, one token per forward call; states (n, E) and last logits. */
static void solo(const int32_t *toks, int32_t n, float *states, float *logits) {
    struct realm_session *s;
    struct realm_err err;
    CHECK(realm_session_new(g_m, NCTX, &s, &err) == REALM_OK);
    for (int32_t i = 0; i < n; i++) {
        struct realm_batch_row row = {s, toks[i], i == n - 1 ? logits : NULL,
                                      states + (size_t)i * g_E};
        CHECK(realm_engine_forward(g_e, &row, 1, &err) == REALM_OK);
    }
    realm_session_free(s);
}

static bool same(const float *a, const float *b, size_t n) {
    return !memcmp(a, b, n * sizeof *a);
}

/* Three sessions' prompts in one or more batches: A wants every state, B only logits of its last
 * row, C every state of odd rows and logits of its last; compared with each run alone. */
static void engine_batched(int32_t chunk) {
    enum { K = 3 };
    const int32_t len[K] = {MAXT, 17, 9};
    int32_t toks[K][MAXT];
    float *ref_st[K], *ref_lg[K], *st[K], *lg[K];
    for (int k = 0; k < K; k++) {
        prompt_of(k, len[k], toks[k]);
        ref_st[k] = calloc((size_t)MAXT * g_E, sizeof(float));
        st[k] = calloc((size_t)MAXT * g_E, sizeof(float));
        ref_lg[k] = calloc((size_t)g_V, sizeof(float));
        lg[k] = calloc((size_t)g_V, sizeof(float));
        solo(toks[k], len[k], ref_st[k], ref_lg[k]);
    }
    struct realm_session *s[K];
    struct realm_err err;
    for (int k = 0; k < K; k++)
        CHECK(realm_session_new(g_m, NCTX, &s[k], &err) == REALM_OK);
    struct realm_batch_row rows[3 * MAXT];
    int32_t done[K] = {0};
    for (;;) {
        int32_t n = 0;
        for (int k = 0; k < K; k++)
            for (int32_t j = 0; j < chunk && done[k] < len[k]; j++, done[k]++) {
                const int32_t i = done[k];
                const bool last = i == len[k] - 1;
                float *sp = st[k] + (size_t)i * g_E;
                rows[n++] =
                    (struct realm_batch_row){s[k], toks[k][i], (k != 0 && last) ? lg[k] : NULL,
                                             k == 0 || (k == 2 && i % 2 == 1) ? sp : NULL};
            }
        if (n == 0) break;
        CHECK(realm_engine_forward(g_e, rows, n, &err) == REALM_OK);
    }
    for (int32_t i = 0; i < len[0]; i++)
        CHECKF(same(st[0] + (size_t)i * g_E, ref_st[0] + (size_t)i * g_E, (size_t)g_E),
               "chunk %d: session A row %d state differs from solo", chunk, i);
    for (int32_t i = 1; i < len[2]; i += 2)
        CHECKF(same(st[2] + (size_t)i * g_E, ref_st[2] + (size_t)i * g_E, (size_t)g_E),
               "chunk %d: session C row %d state differs from solo", chunk, i);
    CHECKF(same(lg[1], ref_lg[1], (size_t)g_V), "chunk %d: B's logits differ", chunk);
    CHECKF(same(lg[2], ref_lg[2], (size_t)g_V), "chunk %d: C's logits differ", chunk);
    /* rows that asked for nothing got nothing */
    for (int32_t i = 0; i < len[2]; i += 2)
        for (int32_t d = 0; d < g_E; d++)
            if (st[2][(size_t)i * g_E + d] != 0) {
                CHECKF(0, "chunk %d: C row %d got a state it did not ask for", chunk, i);
                break;
            }
    for (int k = 0; k < K; k++) {
        realm_session_free(s[k]);
        free(ref_st[k]), free(st[k]), free(ref_lg[k]), free(lg[k]);
    }
}

/* The states are not all zero and vary by position (a state row is really written). */
static void states_sane(void) {
    int32_t toks[8];
    prompt_of(5, 8, toks);
    float *st = calloc((size_t)8 * g_E, sizeof(float)), *lg = calloc((size_t)g_V, sizeof(float));
    solo(toks, 8, st, lg);
    double n0 = 0, diff = 0;
    for (int32_t d = 0; d < g_E; d++) {
        n0 += fabs(st[d]);
        diff += fabs(st[d] - st[(size_t)7 * g_E + d]);
        CHECK(isfinite(st[(size_t)7 * g_E + d]));
    }
    CHECK(n0 > 0);
    CHECK(diff > 0);
    free(st);
    free(lg);
}

/* ---- the scheduler ---- */

struct job {
    struct realm_sched *sc;
    int i;
    int32_t n;
    bool decode; /* a decoding session (greedy, logits) instead of an embedding */
    float *states;
    int rc;
};

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void *run_job(void *arg) {
    struct job *j = arg;
    struct realm_session *s;
    struct realm_err err;
    int32_t toks[MAXT];
    prompt_of(j->i, j->n, toks);
    j->rc = realm_session_new(g_m, NCTX, &s, &err);
    if (j->rc) return NULL;
    if (j->decode) {
        float *lg = malloc((size_t)g_V * sizeof *lg);
        j->rc = realm_sched_decode(j->sc, 7, s, toks, j->n, lg, NULL, &err);
        for (int k = 0; k < 16 && !j->rc; k++) {
            int32_t t = argmax(lg, g_V);
            j->rc = realm_sched_decode(j->sc, 7, s, &t, 1, lg, NULL, &err);
        }
        free(lg);
    } else {
        j->rc = realm_sched_embed(j->sc, (uint32_t)j->i, s, toks, j->n, j->states, NULL, &err);
        if (!j->rc) CHECK_EQ_INT(realm_session_len(s), j->n);
    }
    realm_session_free(s);
    return NULL;
}

static void sched_embed(void) {
    struct realm_sched_backend be = realm_sched_backend_engine(g_e, g_m);
    CHECK_EQ_INT(be.n_embd, g_E);
    struct realm_sched_params p = {.max_batch_tokens = 24, .prefill_chunk = 7};
    struct realm_sched *sc;
    struct realm_err err;
    CHECK(realm_sched_new(&be, &p, &sc, &err) == REALM_OK);
    enum { NJ = 6 };
    struct job jobs[NJ];
    pthread_t th[NJ];
    float *ref[NJ];
    for (int i = 0; i < NJ; i++) {
        jobs[i] = (struct job){.sc = sc, .i = i, .n = 5 + 7 * i % MAXT, .decode = i % 3 == 2};
        if (jobs[i].n > MAXT) jobs[i].n = MAXT;
        jobs[i].states = calloc((size_t)MAXT * g_E, sizeof(float));
        ref[i] = calloc((size_t)MAXT * g_E, sizeof(float));
        int32_t toks[MAXT];
        float *lg = malloc((size_t)g_V * sizeof *lg);
        prompt_of(i, jobs[i].n, toks);
        solo(toks, jobs[i].n, ref[i], lg);
        free(lg);
    }
    struct realm_sched_stats st0;
    realm_sched_get_stats(sc, &st0);
    for (int i = 0; i < NJ; i++)
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < NJ; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NJ; i++) {
        CHECKF(jobs[i].rc == REALM_OK, "job %d failed: %d", i, jobs[i].rc);
        if (jobs[i].decode) continue;
        CHECKF(same(jobs[i].states, ref[i], (size_t)jobs[i].n * g_E),
               "job %d: scheduled states differ from the engine alone", i);
    }

    /* pooled: mean and last-token against pooling by hand (float sums in double, in order) */
    const struct job *j = &jobs[1];
    float *mean = malloc((size_t)g_E * sizeof *mean), *last = malloc((size_t)g_E * sizeof *last);
    CHECK(realm_embed_pool(j->states, j->n, g_E, REALM_POOLING_MEAN, true, mean) == REALM_OK);
    CHECK(realm_embed_pool(j->states, j->n, g_E, REALM_POOLING_LAST, true, last) == REALM_OK);
    double nm = 0, nl = 0, hm2 = 0, hl2 = 0;
    double *hm = calloc((size_t)g_E, sizeof *hm);
    for (int32_t d = 0; d < g_E; d++) {
        for (int32_t i = 0; i < j->n; i++)
            hm[d] += j->states[(size_t)i * g_E + d];
        hm[d] /= j->n;
        hm2 += hm[d] * hm[d];
        const double l = j->states[(size_t)(j->n - 1) * g_E + d];
        hl2 += l * l;
    }
    for (int32_t d = 0; d < g_E; d++) {
        const double l = j->states[(size_t)(j->n - 1) * g_E + d] / sqrt(hl2);
        CHECKF(fabs(mean[d] - hm[d] / sqrt(hm2)) < 1e-6, "mean dim %d: %g vs %g", d, mean[d],
               hm[d] / sqrt(hm2));
        CHECKF(fabs(last[d] - l) < 1e-6, "last dim %d: %g vs %g", d, last[d], l);
        nm += (double)mean[d] * mean[d];
        nl += (double)last[d] * last[d];
    }
    CHECK(fabs(nm - 1) < 1e-5 && fabs(nl - 1) < 1e-5);
    /* the same states always pool to the same bits */
    float *again = malloc((size_t)g_E * sizeof *again);
    CHECK(realm_embed_pool(j->states, j->n, g_E, REALM_POOLING_MEAN, true, again) == REALM_OK);
    CHECK(same(again, mean, (size_t)g_E));
    free(hm), free(mean), free(last), free(again);

    /* errors */
    struct realm_session *s;
    CHECK(realm_session_new(g_m, 8, &s, &err) == REALM_OK);
    int32_t toks[MAXT];
    prompt_of(0, MAXT, toks);
    float *buf = malloc((size_t)MAXT * g_E * sizeof *buf);
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, toks, 9, buf, NULL, &err), REALM_E_CONTEXT_FULL);
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, toks, 0, buf, NULL, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, toks, 3, NULL, NULL, &err), REALM_E_INVALID);
    int32_t bad = g_V;
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, &bad, 1, buf, NULL, &err), REALM_E_INVALID);
    atomic_bool cancel = true;
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, toks, 3, buf, &cancel, &err), REALM_E_CANCELLED);
    CHECK_EQ_INT(realm_session_len(s), 0);
    realm_session_free(s);
    free(buf);
    realm_sched_free(sc);

    /* a backend without hidden states refuses */
    be.n_embd = 0;
    CHECK(realm_sched_new(&be, &p, &sc, &err) == REALM_OK);
    CHECK(realm_session_new(g_m, 8, &s, &err) == REALM_OK);
    float one[1];
    CHECK_EQ_INT(realm_sched_embed(sc, 1, s, toks, 1, one, NULL, &err), REALM_E_INVALID);
    realm_session_free(s);
    realm_sched_free(sc);
    for (int i = 0; i < NJ; i++)
        free(jobs[i].states), free(ref[i]);
}

static void pool_args(void) {
    float st[6] = {3, 4, 0, 0, 0, 0}, out[2] = {7, 7};
    CHECK(realm_embed_pool(st, 1, 2, REALM_POOLING_MEAN, true, out) == REALM_OK);
    CHECK(fabsf(out[0] - 0.6f) < 1e-7f && fabsf(out[1] - 0.8f) < 1e-7f);
    CHECK(realm_embed_pool(st, 3, 2, REALM_POOLING_MEAN, false, out) == REALM_OK);
    CHECK(fabsf(out[0] - 1.0f) < 1e-7f && fabsf(out[1] - 4.0f / 3) < 1e-6f);
    CHECK(realm_embed_pool(st, 3, 2, REALM_POOLING_LAST, true, out) == REALM_OK);
    CHECK(out[0] == 0 && out[1] == 0); /* a zero vector stays zero */
    out[0] = 7;
    CHECK(realm_embed_pool(st, 0, 2, REALM_POOLING_MEAN, true, out) == REALM_E_INVALID);
    CHECK(realm_embed_pool(st, 1, 0, REALM_POOLING_MEAN, true, out) == REALM_E_INVALID);
    CHECK(realm_embed_pool(st, 1, 2, (enum realm_pooling)9, true, out) == REALM_E_INVALID);
    CHECK(realm_embed_pool(NULL, 1, 2, REALM_POOLING_MEAN, true, out) == REALM_E_INVALID);
    CHECK(out[0] == 7); /* untouched on failure */
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    pool_args();
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) tu_skip("../shared/models/stories260K.gguf not found");
    struct realm_gguf *g;
    struct realm_model *m;
    struct realm_err err;
    CHECK(realm_gguf_open(path, &g, &err) == REALM_OK);
    CHECK(realm_model_load(g, &m, &err) == REALM_OK);
    CHECK(realm_engine_new(m, 2, 3 * MAXT, &g_e, &err) == REALM_OK); /* chunk 40: 66 rows */
    g_m = m;
    g_V = realm_model_config(m)->n_vocab;
    g_E = realm_model_config(m)->n_embd;
    states_sane();
    engine_batched(1);  /* 3 rows a batch: private preparation */
    engine_batched(2);  /* 6 rows: shared */
    engine_batched(40); /* whole prompts */
    sched_embed();
    realm_engine_free(g_e);
    realm_model_free(m);
    realm_gguf_close(g);
    return tu_finish("test_embed");
}
