/*
 * test_sched_model.c — the scheduler over the real engine (stories260K): eight sessions of two
 * tenants, each with its own prompt, decode greedily at the same time through batched steps; every
 * session's tokens must equal the same session run alone, and the steps must really have batched.
 */
#include "testutil.h"

#include <pthread.h>

#include "realm/gguf.h"
#include "realm/model.h"
#include "realm/sched.h"

#define N_SESS 8
#define N_GEN 24

static const struct realm_model *g_model;
static struct realm_sched *g_sched;
static int32_t g_vocab;

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Prompt of session i: BOS then a few distinct tokens, lengths differ so prefill and decode mix. */
static int32_t prompt_of(int i, int32_t *toks) {
    int32_t n = 1 + 3 * i;
    toks[0] = 1;
    for (int32_t j = 1; j < n; j++) toks[j] = 3 + (i * 37 + j * 11) % (g_vocab - 3);
    return n;
}

struct job {
    int i;
    uint32_t tenant;
    int32_t out[N_GEN];
    int rc;
};

static void *run_job(void *arg) {
    struct job *j = arg;
    struct realm_session *s = NULL;
    struct realm_err err;
    float *logits = malloc((size_t)g_vocab * sizeof *logits);
    int32_t toks[64];
    int32_t n = prompt_of(j->i, toks);
    j->rc = realm_session_new(g_model, 256, &s, &err);
    if (!j->rc) j->rc = realm_sched_decode(g_sched, j->tenant, s, toks, n, logits, NULL, &err);
    for (int k = 0; k < N_GEN && !j->rc; k++) {
        int32_t t = argmax(logits, g_vocab);
        j->out[k] = t;
        j->rc = realm_sched_decode(g_sched, j->tenant, s, &t, 1, logits, NULL, &err);
    }
    if (j->rc) fprintf(stderr, "job %d: %s\n", j->i, err.msg);
    realm_session_free(s);
    free(logits);
    return NULL;
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) tu_skip("../shared/models/stories260K.gguf not found");
    struct realm_gguf *g;
    struct realm_model *m;
    struct realm_engine *e;
    struct realm_err err;
    CHECK(realm_gguf_open(path, &g, &err) == REALM_OK);
    CHECK(realm_model_load(g, &m, &err) == REALM_OK);
    CHECK(realm_engine_new(m, 2, 64, &e, &err) == REALM_OK);
    g_model = m;
    g_vocab = realm_model_config(m)->n_vocab;
    struct realm_sched_backend be = realm_sched_backend_engine(e, m);
    struct realm_sched_params p = {.max_batch_tokens = 64, .prefill_chunk = 8};
    CHECK(realm_sched_new(&be, &p, &g_sched, &err) == REALM_OK);

    /* solo runs, one after the other */
    struct job solo[N_SESS], conc[N_SESS];
    for (int i = 0; i < N_SESS; i++) {
        solo[i] = (struct job){.i = i, .tenant = (uint32_t)(i % 2)};
        run_job(&solo[i]);
        CHECK_EQ_INT(solo[i].rc, REALM_OK);
    }
    struct realm_sched_stats before;
    realm_sched_get_stats(g_sched, &before);
    /* the same sessions at once */
    pthread_t th[N_SESS];
    for (int i = 0; i < N_SESS; i++) {
        conc[i] = (struct job){.i = i, .tenant = (uint32_t)(i % 2)};
        pthread_create(&th[i], NULL, run_job, &conc[i]);
    }
    for (int i = 0; i < N_SESS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_SESS; i++) {
        CHECK_EQ_INT(conc[i].rc, REALM_OK);
        CHECKF(!memcmp(solo[i].out, conc[i].out, sizeof solo[i].out), "session %d differs under batching", i);
    }
    struct realm_sched_stats after;
    realm_sched_get_stats(g_sched, &after);
    int64_t steps = after.steps - before.steps, rows = after.rows - before.rows;
    tu_log("concurrent: %lld rows in %lld steps (%.2f rows/step)", (long long)rows, (long long)steps,
           (double)rows / (double)steps);
    CHECKF(rows > steps, "no step batched more than one row (%lld rows, %lld steps)", (long long)rows,
           (long long)steps);
    CHECK_EQ_INT(after.queue_depth, 0);
    realm_sched_free(g_sched);
    realm_engine_free(e);
    realm_model_free(m);
    realm_gguf_close(g);
    return tu_finish("test_sched_model");
}
