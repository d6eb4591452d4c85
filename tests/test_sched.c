/*
 * test_sched.c — the scheduler over a fake backend whose "logits" are a hash of each session's
 * token history, so any lost, duplicated or reordered token shows. Checks: results equal a solo
 * run under concurrency; rows of a session are consecutive and in order; step and chunk limits;
 * fairness between a 32-session tenant and a 1-session tenant; cancellation; context limit;
 * backend failure confined to its step; counters back to zero at the end.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "realm/sched.h"

#define NV 8
#define MAXB 16
#define CHUNK 5

struct fake_sess {
    int id;
    int32_t len, n_ctx;
    uint64_t hash;
};

struct fake {
    pthread_mutex_t mu;
    int max_rows_seen;
    int violations;
    int64_t rows_by_tenant_sess[64];
    atomic_int fail_token; /* a row with this token makes the step fail */
};

static uint64_t mix(uint64_t h, int32_t tok) { return (h ^ (uint64_t)(tok + 1)) * 0x100000001b3ull; }

static void fill_logits(uint64_t h, float *out) {
    for (int j = 0; j < NV; j++) out[j] = (float)((h >> (j * 7)) & 0x7f);
}

static int fake_forward(void *ctx, const struct realm_batch_row *rows, int32_t n, struct realm_err *err) {
    struct fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (n > f->max_rows_seen) f->max_rows_seen = n;
    for (int32_t i = 0; i < n; i++) {
        if (rows[i].token == atomic_load(&f->fail_token)) {
            pthread_mutex_unlock(&f->mu);
            return realm_err_set(err, REALM_E_INTERNAL, "fake: poisoned token");
        }
        /* a session's rows are consecutive: it must not appear again after another session */
        for (int32_t j = 0; j < i; j++)
            if (rows[j].session == rows[i].session && rows[i - 1].session != rows[i].session) f->violations++;
    }
    int per_sess_run = 0;
    for (int32_t i = 0; i < n; i++) {
        struct fake_sess *s = (struct fake_sess *)rows[i].session;
        per_sess_run = (i > 0 && rows[i - 1].session == rows[i].session) ? per_sess_run + 1 : 1;
        if (per_sess_run > CHUNK) f->violations++;
        s->hash = mix(s->hash, rows[i].token);
        s->len++;
        f->rows_by_tenant_sess[s->id % 64]++;
        if (rows[i].logits) fill_logits(s->hash, rows[i].logits);
    }
    pthread_mutex_unlock(&f->mu);
    usleep(200); /* a step takes time, so that callers pile up */
    return REALM_OK;
}

static int32_t fake_room(void *ctx, const struct realm_session *s) {
    (void)ctx;
    const struct fake_sess *fs = (const struct fake_sess *)s;
    return fs->n_ctx - fs->len;
}

static struct fake g_fake = {.mu = PTHREAD_MUTEX_INITIALIZER};
static struct realm_sched *g_s;

struct worker {
    uint32_t tenant;
    struct fake_sess sess;
    int prompt, steps;
    atomic_bool *stop; /* for the fairness test: run until set */
    int ok;
    int64_t tokens;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    int32_t toks[64];
    float logits[NV], expect[NV];
    uint64_t h = 0;
    w->ok = 1;
    for (int i = 0; i < w->prompt; i++) {
        toks[i] = (w->sess.id + i) % NV;
        h = mix(h, toks[i]);
    }
    struct realm_err err;
    if (w->prompt && realm_sched_decode(g_s, w->tenant, (struct realm_session *)&w->sess, toks, w->prompt, logits,
                                        NULL, &err) != REALM_OK)
        w->ok = 0;
    w->tokens += w->prompt;
    for (int i = 0; (w->stop ? !atomic_load(w->stop) : i < w->steps) && w->ok; i++) {
        fill_logits(h, expect);
        if (memcmp(expect, logits, sizeof expect) && (w->prompt || i)) w->ok = 0;
        int32_t t = (int32_t)(logits[0]) % NV;
        if (!w->prompt && !i) t = 1;
        h = mix(h, t);
        if (realm_sched_decode(g_s, w->tenant, (struct realm_session *)&w->sess, &t, 1, logits, NULL, &err))
            w->ok = 0;
        w->tokens++;
    }
    fill_logits(h, expect);
    if (memcmp(expect, logits, sizeof expect)) w->ok = 0;
    return NULL;
}

static void test_concurrent(void) {
    enum { N = 12 };
    struct worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.tenant = (uint32_t)(i % 3), .sess = {.id = i, .n_ctx = 1000}, .prompt = 3 + i * 4,
                               .steps = 40};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].ok, "worker %d saw wrong logits", i);
        CHECK_EQ_INT(w[i].sess.len, 3 + i * 4 + 40);
    }
    CHECK(g_fake.max_rows_seen <= MAXB);
    CHECK(g_fake.max_rows_seen > 1); /* it really batched */
    CHECK_EQ_INT(g_fake.violations, 0);
}

static void test_fairness(void) {
    enum { NA = 32 };
    struct worker w[NA + 1];
    pthread_t th[NA + 1];
    atomic_bool stop = false;
    for (int i = 0; i <= NA; i++) {
        w[i] = (struct worker){.tenant = i < NA ? 100 : 200, .sess = {.id = 40 + i, .n_ctx = 1 << 20}, .prompt = 1,
                               .stop = &stop};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    usleep(300 * 1000);
    atomic_store(&stop, true);
    int64_t a_total = 0;
    for (int i = 0; i <= NA; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].ok);
        if (i < NA) a_total += w[i].tokens;
    }
    double a_per_session = (double)a_total / NA, b = (double)w[NA].tokens;
    tu_log("fairness: A per session %.1f tokens, B %.1f tokens", a_per_session, b);
    CHECKF(b >= a_per_session / 2, "B got %.0f tokens, A's sessions %.1f each", b, a_per_session);
}

struct cancel_arg {
    struct fake_sess sess;
    atomic_bool cancel;
    int rc;
};

static void *cancel_main(void *arg) {
    struct cancel_arg *c = arg;
    int32_t toks[60] = {0};
    struct realm_err err;
    c->rc = realm_sched_decode(g_s, 7, (struct realm_session *)&c->sess, toks, 60, NULL, &c->cancel, &err);
    return NULL;
}

static void test_errors(void) {
    struct realm_err err;
    struct fake_sess s = {.id = 90, .n_ctx = 10};
    int32_t toks[20] = {0};
    float logits[NV];
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 11, logits, NULL, &err) == REALM_E_CONTEXT_FULL);
    CHECK_EQ_INT(s.len, 0);
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 0, logits, NULL, &err) == REALM_E_INVALID);
    toks[3] = NV;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 5, logits, NULL, &err) == REALM_E_INVALID);
    toks[3] = -1;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 5, logits, NULL, &err) == REALM_E_INVALID);
    toks[3] = 0;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 10, logits, NULL, &err) == REALM_OK);
    CHECK_EQ_INT(s.len, 10);

    /* cancellation mid-prefill: at most the chunks run before the flag was seen stay */
    struct cancel_arg c = {.sess = {.id = 91, .n_ctx = 1000}};
    atomic_store(&g_fake.fail_token, -2);
    pthread_t th;
    atomic_store(&c.cancel, false);
    pthread_create(&th, NULL, cancel_main, &c);
    usleep(500);
    atomic_store(&c.cancel, true);
    pthread_join(th, NULL);
    CHECKF(c.rc == REALM_E_CANCELLED || (c.rc == REALM_OK && c.sess.len == 60), "rc %d len %d", c.rc, c.sess.len);
    tu_log("cancel: rc %d after %d tokens", c.rc, c.sess.len);
    atomic_bool pre = true;
    struct fake_sess s3 = {.id = 93, .n_ctx = 10};
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s3, toks, 1, logits, &pre, &err) == REALM_E_CANCELLED);

    /* a failing step fails its requests with the backend's error; the next one works */
    struct fake_sess s2 = {.id = 92, .n_ctx = 100};
    atomic_store(&g_fake.fail_token, 5);
    int32_t bad = 5;
    CHECK(realm_sched_decode(g_s, 2, (struct realm_session *)&s2, &bad, 1, logits, NULL, &err) == REALM_E_INTERNAL);
    CHECK(strstr(err.msg, "poisoned") != NULL);
    atomic_store(&g_fake.fail_token, -2);
    CHECK(realm_sched_decode(g_s, 2, (struct realm_session *)&s2, &bad, 1, logits, NULL, &err) == REALM_OK);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    atomic_store(&g_fake.fail_token, -2);
    struct realm_sched_backend be = {.ctx = &g_fake, .forward = fake_forward, .room = fake_room, .n_vocab = NV};
    struct realm_sched_params p = {.max_batch_tokens = MAXB, .prefill_chunk = CHUNK};
    struct realm_err err;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_OK);
    test_concurrent();
    test_fairness();
    test_errors();
    struct realm_sched_stats st;
    realm_sched_get_stats(g_s, &st);
    CHECK_EQ_INT(st.queue_depth, 0);
    CHECK(st.steps > 0 && st.rows >= st.steps && st.requests_done > 0 && st.requests_failed == 1);
    int64_t hist = 0;
    for (int i = 0; i < REALM_SCHED_HIST_BUCKETS; i++) hist += st.batch_hist[i];
    CHECK_EQ_INT(hist, st.steps);
    for (int i = 0; i < st.n_tenants; i++) {
        CHECK_EQ_INT(st.tenants[i].queued_requests, 0);
        CHECK_EQ_INT(st.tenants[i].queued_tokens, 0);
    }
    tu_log("steps %lld rows %lld decode %lld prefill %lld", (long long)st.steps, (long long)st.rows,
           (long long)st.decode_rows, (long long)st.prefill_rows);
    realm_sched_free(g_s);
    struct realm_sched_backend bad = be;
    bad.n_vocab = 0;
    CHECK(realm_sched_new(&bad, &p, &g_s, &err) == REALM_E_INVALID);
    return tu_finish("test_sched");
}
