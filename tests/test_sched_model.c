/*
 * test_sched_model.c — the scheduler over the real engine (stories260K): eight sessions of two
 * tenants, each with its own prompt, decode greedily at the same time through batched steps; every
 * session's tokens must equal the same session run alone, and the steps must really have batched.
 * Then the same with paged KV sessions from one pool: identical output, prefix reuse within a
 * tenant, a tenant over its block quota refused while the others finish, the pool back to fully
 * free at the end; and the starvation check: tenant A with 32 sessions, tenant B with 1, through
 * steps too small for everyone — B's rate stays within 2x of A's per-session rate.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "realm/gguf.h"
#include "realm/kvpool.h"
#include "realm/model.h"
#include "realm/sched.h"

#define N_SESS 8
#define N_GEN 24
#define N_GEN_STARVE 32

static const struct realm_model *g_model;
static struct realm_sched *g_sched;
static int32_t g_vocab;
static struct realm_kv_pool *g_pool; /* NULL: contiguous sessions */

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
    for (int32_t j = 1; j < n; j++)
        toks[j] = 3 + (i * 37 + j * 11) % (g_vocab - 3);
    return n;
}

struct job {
    int i;
    uint32_t tenant;
    int32_t out[256];
    int rc;
    int n_gen;      /* 0: N_GEN */
    double seconds; /* wall time of the decode loop */
    char msg[256];
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *run_job(void *arg) {
    struct job *j = arg;
    struct realm_session *s = NULL;
    struct realm_err err;
    float *logits = malloc((size_t)g_vocab * sizeof *logits);
    int32_t toks[64];
    int32_t n = prompt_of(j->i, toks);
    j->rc = g_pool ? realm_session_new_paged(g_model, g_pool, j->tenant, 256, &s, &err)
                   : realm_session_new(g_model, 256, &s, &err);
    if (!j->rc) j->rc = realm_sched_decode(g_sched, j->tenant, s, toks, n, logits, NULL, &err);
    const int n_gen = j->n_gen ? j->n_gen : N_GEN;
    const double t0 = now_s();
    for (int k = 0; k < n_gen && !j->rc; k++) {
        int32_t t = argmax(logits, g_vocab);
        j->out[k] = t;
        j->rc = realm_sched_decode(g_sched, j->tenant, s, &t, 1, logits, NULL, &err);
    }
    j->seconds = now_s() - t0;
    if (j->rc) snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    realm_session_free(s);
    free(logits);
    return NULL;
}

struct loaded {
    struct realm_gguf *g;
    struct realm_model *m;
    struct realm_engine *e;
};

/* Opens the file, loads its model and a 2-thread engine, and makes it the model of the jobs. */
static void open_model(const char *path, struct loaded *L) {
    struct realm_err err;
    CHECK(realm_gguf_open(path, &L->g, &err) == REALM_OK);
    CHECK(realm_model_load(L->g, &L->m, &err) == REALM_OK);
    CHECK(realm_engine_new(L->m, 2, 64, &L->e, &err) == REALM_OK);
    g_model = L->m;
    g_vocab = realm_model_config(L->m)->n_vocab;
}

static void close_model(struct loaded *L) {
    realm_engine_free(L->e);
    realm_model_free(L->m);
    realm_gguf_close(L->g);
}

/* Tenant A with 32 sessions and tenant B with 1 through 8-row steps (so A alone could fill every
 * step): B's tokens per second stay within 2x of A's per-session rate. */
static void starvation(const char *path) {
    struct loaded L;
    struct realm_err err;
    open_model(path, &L);
    struct realm_sched_backend be = realm_sched_backend_engine(L.e, L.m);
    struct realm_sched_params p = {.max_batch_tokens = 8, .prefill_chunk = 8};
    CHECK(realm_sched_new(&be, &p, &g_sched, &err) == REALM_OK);
    enum { N_A = 32 };
    struct job a[N_A], b = {.i = 3, .tenant = 11, .n_gen = N_GEN_STARVE};
    pthread_t ta[N_A], tb;
    for (int i = 0; i < N_A; i++) {
        a[i] = (struct job){.i = i % N_SESS, .tenant = 10, .n_gen = N_GEN_STARVE};
        pthread_create(&ta[i], NULL, run_job, &a[i]);
    }
    pthread_create(&tb, NULL, run_job, &b);
    for (int i = 0; i < N_A; i++)
        pthread_join(ta[i], NULL);
    pthread_join(tb, NULL);
    double a_rate = 0;
    for (int i = 0; i < N_A; i++) {
        CHECKF(a[i].rc == REALM_OK, "A %d: %s", i, a[i].msg);
        a_rate += N_GEN_STARVE / a[i].seconds / N_A;
    }
    CHECKF(b.rc == REALM_OK, "B: %s", b.msg);
    const double b_rate = N_GEN_STARVE / b.seconds;
    tu_log("starvation (SmolLM2): tenant B %.1f tok/s, tenant A %.1f tok/s per session (32 "
           "sessions, 8-row steps)",
           b_rate, a_rate);
    CHECKF(b_rate >= a_rate / 2, "tenant B starved: %.1f tok/s vs A's %.1f per session", b_rate,
           a_rate);
    realm_sched_free(g_sched);
    close_model(&L);
}

/* ---- a failed decode leaves the session as it was ----
 * The scheduler runs over the engine's backend wrapped so that a step can trip a cancel flag:
 * after `trip_steps` more forward passes it is set, so a cancellation lands between two prefill
 * chunks deterministically. */
struct tripping {
    struct realm_sched_backend inner;
    atomic_bool *flag;
    atomic_int steps;
};

static int trip_forward(void *ctx, const struct realm_batch_row *rows, int32_t n,
                        struct realm_err *err) {
    struct tripping *t = ctx;
    int rc = t->inner.forward(t->inner.ctx, rows, n, err);
    if (t->flag && atomic_fetch_sub(&t->steps, 1) == 1) atomic_store(t->flag, true);
    return rc;
}
static int32_t trip_room(void *ctx, const struct realm_session *s) {
    struct tripping *t = ctx;
    return t->inner.room(t->inner.ctx, s);
}
static int trip_reserve(void *ctx, struct realm_session *s, int32_t k, struct realm_err *err) {
    struct tripping *t = ctx;
    return t->inner.reserve(t->inner.ctx, s, k, err);
}
static int32_t trip_attach(void *ctx, struct realm_session *s, const int32_t *tokens, int32_t n) {
    struct tripping *t = ctx;
    return t->inner.attach(t->inner.ctx, s, tokens, n);
}
static int32_t trip_len(void *ctx, const struct realm_session *s) {
    struct tripping *t = ctx;
    return t->inner.len(t->inner.ctx, s);
}
static int trip_rewind(void *ctx, struct realm_session *s, int32_t n_keep) {
    struct tripping *t = ctx;
    return t->inner.rewind(t->inner.ctx, s, n_keep);
}

/* Logits after decoding toks[0..n0) and then toks[n0..n) in a fresh paged session of `tenant`. */
static void fresh_logits(struct realm_sched *sc, struct realm_kv_pool *pool, uint32_t tenant,
                         const int32_t *toks, int32_t n0, int32_t n, float *out) {
    struct realm_session *r;
    struct realm_err err;
    CHECK(realm_session_new_paged(g_model, pool, tenant, 256, &r, &err) == REALM_OK);
    CHECK(realm_sched_decode(sc, tenant, r, toks, n0, out, NULL, &err) == REALM_OK);
    CHECK(realm_sched_decode(sc, tenant, r, toks + n0, n - n0, out, NULL, &err) == REALM_OK);
    realm_session_free(r);
}

static int32_t pool_used(struct realm_kv_pool *pool) {
    struct realm_kv_pool_stats ks;
    realm_kv_pool_get_stats(pool, &ks);
    return ks.used;
}

static void failed_decodes(struct loaded *L) {
    struct realm_err err;
    const struct realm_model *m = L->m;
    struct realm_kv_pool *pool;
    CHECK(realm_model_kv_pool_new(m, REALM_KV_F16,
                                  64 * realm_model_kv_block_bytes(m, REALM_KV_F16, 16), 16, 0,
                                  &pool, &err) == REALM_OK);
    atomic_bool cancel = false;
    struct tripping tr = {.inner = realm_sched_backend_engine(L->e, m), .flag = &cancel};
    struct realm_sched_backend be = tr.inner;
    be.ctx = &tr;
    be.forward = trip_forward, be.room = trip_room, be.reserve = trip_reserve,
    be.attach = trip_attach;
    be.len = trip_len, be.rewind = trip_rewind;
    struct realm_sched_params p = {.max_batch_tokens = 64, .prefill_chunk = 8};
    struct realm_sched *sc;
    CHECK(realm_sched_new(&be, &p, &sc, &err) == REALM_OK);
    int32_t toks[64];
    toks[0] = 1;
    for (int32_t j = 1; j < 64; j++)
        toks[j] = 3 + (j * 29) % (g_vocab - 3);
    float *lg = malloc((size_t)g_vocab * sizeof *lg), *ref = malloc((size_t)g_vocab * sizeof *ref);
    struct realm_sched_stats st0, st1;

    /* session of tenant 30 holding 5 tokens (part of one block) */
    struct realm_session *s;
    CHECK(realm_session_new_paged(m, pool, 30, 256, &s, &err) == REALM_OK);
    CHECK(realm_sched_decode(sc, 30, s, toks, 5, lg, NULL, &err) == REALM_OK);
    const int32_t used0 = pool_used(pool), held0 = realm_kv_pool_tenant_used(pool, 30);
    CHECK_EQ_INT(held0, 1);

    /* quota of 2 blocks: chunks 5..13, 13..21, 21..29 run, 29..37 needs a third block */
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 30, 2), REALM_OK);
    realm_sched_get_stats(sc, &st0);
    int rc = realm_sched_decode(sc, 30, s, toks + 5, 40, lg, NULL, &err);
    realm_sched_get_stats(sc, &st1);
    CHECKF(rc == REALM_E_KV_FULL, "rc %d: %s", rc, err.msg);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 24);
    CHECK_EQ_INT(realm_session_len(s), 5);
    CHECK_EQ_INT(pool_used(pool), used0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 30), held0);
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 30, 0), REALM_OK);

    /* cancelled between chunks: after two of them */
    atomic_store(&cancel, false);
    atomic_store(&tr.steps, 2);
    realm_sched_get_stats(sc, &st0);
    rc = realm_sched_decode(sc, 30, s, toks + 5, 40, lg, &cancel, &err);
    realm_sched_get_stats(sc, &st1);
    CHECKF(rc == REALM_E_CANCELLED, "rc %d: %s", rc, err.msg);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 16);
    CHECK_EQ_INT(realm_session_len(s), 5);
    CHECK_EQ_INT(pool_used(pool), used0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 30), held0);
    atomic_store(&tr.steps, 0);

    /* ... and then goes on exactly like a session that never saw those calls */
    CHECK(realm_sched_decode(sc, 30, s, toks + 5, 20, lg, NULL, &err) == REALM_OK);
    fresh_logits(sc, pool, 31, toks, 5, 25, ref);
    CHECK(!memcmp(lg, ref, (size_t)g_vocab * sizeof *lg));
    realm_session_free(s);

    /* prefix attached by the failing call: tenant 40 caches the first 2 blocks of a 40-token
     * prompt; a new session's 60-token decode attaches them (32 tokens), then fails */
    CHECK(realm_session_new_paged(m, pool, 40, 256, &s, &err) == REALM_OK);
    CHECK(realm_sched_decode(sc, 40, s, toks, 40, lg, NULL, &err) == REALM_OK);
    realm_session_free(s);
    const int32_t used1 = pool_used(pool);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 40), 0);
    CHECK(realm_session_new_paged(m, pool, 40, 256, &s, &err) == REALM_OK);
    /* quota 3: the 2 attached blocks + 1 fit, the 4th (positions 48..60) does not */
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 40, 3), REALM_OK);
    realm_sched_get_stats(sc, &st0);
    rc = realm_sched_decode(sc, 40, s, toks, 60, lg, NULL, &err);
    realm_sched_get_stats(sc, &st1);
    CHECKF(rc == REALM_E_KV_FULL, "rc %d: %s", rc, err.msg);
    CHECK_EQ_INT(st1.prefix_tokens - st0.prefix_tokens, 32);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 16);
    CHECK_EQ_INT(realm_session_len(s), 0);
    CHECK_EQ_INT(pool_used(pool), used1);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 40), 0);
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 40, 0), REALM_OK);
    /* the block the failed call filled (positions 32..48) is not held, but stays in the prefix
     * cache like any released full block: from now on 48 tokens attach */
    atomic_store(&cancel, false);
    atomic_store(&tr.steps, 1);
    realm_sched_get_stats(sc, &st0);
    rc = realm_sched_decode(sc, 40, s, toks, 60, lg, &cancel, &err);
    realm_sched_get_stats(sc, &st1);
    CHECKF(rc == REALM_E_CANCELLED, "rc %d: %s", rc, err.msg);
    CHECK_EQ_INT(st1.prefix_tokens - st0.prefix_tokens, 48);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 8);
    CHECK_EQ_INT(realm_session_len(s), 0);
    CHECK_EQ_INT(pool_used(pool), used1);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 40), 0);
    atomic_store(&tr.steps, 0);
    /* the prefix is still cached and reused; the result is a fresh session's, bit for bit */
    realm_sched_get_stats(sc, &st0);
    CHECK(realm_sched_decode(sc, 40, s, toks, 50, lg, NULL, &err) == REALM_OK);
    realm_sched_get_stats(sc, &st1);
    CHECK_EQ_INT(st1.prefix_tokens - st0.prefix_tokens, 48);
    fresh_logits(sc, pool, 41, toks, 1, 50, ref);
    CHECK(!memcmp(lg, ref, (size_t)g_vocab * sizeof *lg));
    realm_session_free(s);
    realm_sched_free(sc);

    /* the engine itself: a batch whose second session is over its quota fails as a whole, and
     * the first session's new block is given back */
    struct realm_session *a, *b;
    CHECK(realm_session_new_paged(m, pool, 50, 256, &a, &err) == REALM_OK);
    CHECK(realm_session_new_paged(m, pool, 51, 256, &b, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 51, 1), REALM_OK);
    struct realm_batch_row rows[40];
    for (int32_t i = 0; i < 20; i++)
        rows[i] = (struct realm_batch_row){a, toks[i], NULL, NULL};
    for (int32_t i = 0; i < 20; i++)
        rows[20 + i] = (struct realm_batch_row){b, toks[i], i == 19 ? lg : NULL, NULL};
    const int32_t used2 = pool_used(pool);
    CHECK(realm_engine_forward(L->e, rows, 40, &err) == REALM_E_KV_FULL);
    CHECK(realm_session_len(a) == 0 && realm_session_len(b) == 0);
    CHECK_EQ_INT(pool_used(pool), used2);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 50), 0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 51), 0);
    realm_session_free(a);
    realm_session_free(b);

    struct realm_kv_pool_stats ks;
    realm_kv_pool_get_stats(pool, &ks);
    CHECK_EQ_INT(ks.used, 0);
    realm_kv_pool_free(pool);
    free(lg);
    free(ref);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) tu_skip("../shared/models/stories260K.gguf not found");
    struct loaded L;
    struct realm_err err;
    open_model(path, &L);
    const struct realm_model *m = L.m;
    struct realm_sched_backend be = realm_sched_backend_engine(L.e, L.m);
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
    for (int i = 0; i < N_SESS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N_SESS; i++) {
        CHECK_EQ_INT(conc[i].rc, REALM_OK);
        CHECKF(!memcmp(solo[i].out, conc[i].out, sizeof solo[i].out),
               "session %d differs under batching", i);
    }
    struct realm_sched_stats after;
    realm_sched_get_stats(g_sched, &after);
    int64_t steps = after.steps - before.steps, rows = after.rows - before.rows;
    tu_log("concurrent: %lld rows in %lld steps (%.2f rows/step)", (long long)rows,
           (long long)steps, (double)rows / (double)steps);
    CHECKF(rows > steps, "no step batched more than one row (%lld rows, %lld steps)",
           (long long)rows, (long long)steps);
    CHECK_EQ_INT(after.queue_depth, 0);

    /* ---- paged sessions from one pool (blocks of 16 positions) ---- */
    CHECK(realm_model_kv_pool_new(m, REALM_KV_F16,
                                  256 * realm_model_kv_block_bytes(m, REALM_KV_F16, 16), 16, 0,
                                  &g_pool, &err) == REALM_OK);
    for (int i = 0; i < N_SESS; i++) {
        conc[i] = (struct job){.i = i, .tenant = (uint32_t)(i % 2)};
        pthread_create(&th[i], NULL, run_job, &conc[i]);
    }
    for (int i = 0; i < N_SESS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N_SESS; i++) {
        CHECKF(conc[i].rc == REALM_OK, "paged session %d: %s", i, conc[i].msg);
        CHECKF(!memcmp(solo[i].out, conc[i].out, sizeof solo[i].out), "paged session %d differs",
               i);
    }
    /* prefix reuse: session 7's prompt (22 tokens) again for tenant 1 attaches its first block */
    struct realm_sched_stats st0, st1;
    realm_sched_get_stats(g_sched, &st0);
    struct job again = {.i = 7, .tenant = 1};
    run_job(&again);
    CHECK_EQ_INT(again.rc, REALM_OK);
    CHECK(!memcmp(again.out, solo[7].out, sizeof again.out));
    realm_sched_get_stats(g_sched, &st1);
    CHECK_EQ_INT(st1.prefix_tokens - st0.prefix_tokens, 16);
    /* ... but not for tenant 0 (same prompt, other tenant) */
    struct job other = {.i = 7, .tenant = 0};
    run_job(&other);
    CHECK_EQ_INT(other.rc, REALM_OK);
    CHECK(!memcmp(other.out, solo[7].out, sizeof other.out));
    realm_sched_get_stats(g_sched, &st0);
    CHECK_EQ_INT(st0.prefix_tokens - st1.prefix_tokens, 0);

    /* quota: tenant 5 may hold 1 block (16 positions); its sessions need 2, the others go on */
    CHECK_EQ_INT(realm_kv_pool_set_quota(g_pool, 5, 1), REALM_OK);
    for (int i = 0; i < N_SESS; i++) {
        conc[i] = (struct job){.i = i, .tenant = i < 2 ? 5u : (uint32_t)(i % 2)};
        pthread_create(&th[i], NULL, run_job, &conc[i]);
    }
    for (int i = 0; i < N_SESS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N_SESS; i++) {
        if (i < 2) {
            CHECKF(conc[i].rc == REALM_E_KV_FULL, "session %d over quota: rc %d", i, conc[i].rc);
            CHECKF(strstr(conc[i].msg, "quota") != NULL, "message: %s", conc[i].msg);
        } else {
            CHECKF(conc[i].rc == REALM_OK, "session %d beside the refused tenant: %s", i,
                   conc[i].msg);
            CHECK(!memcmp(solo[i].out, conc[i].out, sizeof solo[i].out));
        }
    }
    realm_sched_get_stats(g_sched, &st1);
    CHECK(st1.requests_refused >= 2);
    struct realm_kv_pool_stats ks;
    realm_kv_pool_get_stats(g_pool, &ks);
    CHECK_EQ_INT(ks.used, 0);
    CHECK_EQ_INT(ks.free + ks.cached_idle, ks.n_blocks);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(g_pool, 5), 0);
    realm_sched_free(g_sched);

    realm_kv_pool_free(g_pool);
    g_pool = NULL;
    failed_decodes(&L);
    close_model(&L);

    /* ---- starvation, on SmolLM2: its steps (milliseconds) dwarf a thread's wake-up, so the
     * rates measure the scheduler, not how fast 34 threads get a CPU on a loaded machine ---- */
    const char *smol = tu_model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (smol)
        starvation(smol);
    else
        tu_log("starvation check skipped: SmolLM2-135M-Instruct.Q4_1.gguf not cached");
    return tu_finish("test_sched_model");
}
