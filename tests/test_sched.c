/*
 * test_sched.c — the scheduler over a fake backend whose "logits" are a hash of each session's
 * token history, so any lost, duplicated or reordered token shows. Checks: results equal a solo
 * run under concurrency; rows of a session are consecutive and in order; step and chunk limits;
 * fairness between a 32-session tenant and a 1-session tenant; the per-tenant share of a
 * contended step (tenant_share); cancellation while a step runs (deterministic: the backend holds
 * until the flag is set); context limit;
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

#define HIST 64

struct fake_sess {
    int id;
    int32_t len, n_ctx;
    uint64_t hash;
    /* for the undo tests (backend with reserve / attach / len / rewind) */
    uint64_t hist[HIST]; /* hash after i tokens, i < HIST */
    int32_t held;        /* positions reserved (>= len) */
    int32_t quota;       /* reserve refuses past this many positions (0: no limit) */
    int32_t cached;      /* attach reports this many leading tokens as cached */
};

struct fake {
    pthread_mutex_t mu;
    int max_rows_seen;
    int violations;
    int64_t rows_by_tenant_sess[64];
    atomic_int fail_token; /* a row with this token makes the step fail */
    atomic_bool *trip;     /* set after trip_steps more steps (NULL: never) */
    atomic_int trip_steps;
    /* test_tenant_share: sessions 200..203 are tenant A's, 210 is B's */
    int share_a_max;        /* most A sessions in one step */
    int share_a_max_with_b; /* most A sessions in a step that also has B's row */
    int share_steps_with_b;
    int share_b_max_with_a; /* most rows of B's session in a step that also has A's */
    /* test_errors' cancellation: a step with a row of session hold_id (0: none) marks `holding`
     * and does not return until *hold_until is set, so the flag is set while a step runs */
    int hold_id;
    const atomic_bool *hold_until;
    atomic_bool holding;
};

static uint64_t mix(uint64_t h, int32_t tok) {
    return (h ^ (uint64_t)(tok + 1)) * 0x100000001b3ull;
}

static void fill_logits(uint64_t h, float *out) {
    for (int j = 0; j < NV; j++)
        out[j] = (float)((h >> (j * 7)) & 0x7f);
}

static int fake_forward(void *ctx, const struct realm_batch_row *rows, int32_t n,
                        struct realm_err *err) {
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
            if (rows[j].session == rows[i].session && rows[i - 1].session != rows[i].session)
                f->violations++;
    }
    int per_sess_run = 0;
    for (int32_t i = 0; i < n; i++) {
        struct fake_sess *s = (struct fake_sess *)rows[i].session;
        per_sess_run = (i > 0 && rows[i - 1].session == rows[i].session) ? per_sess_run + 1 : 1;
        if (per_sess_run > CHUNK) f->violations++;
        s->hash = mix(s->hash, rows[i].token);
        s->len++;
        if (s->len < HIST) s->hist[s->len] = s->hash;
        f->rows_by_tenant_sess[s->id % 64]++;
        if (rows[i].logits) fill_logits(s->hash, rows[i].logits);
    }
    int a_rows = 0, b_rows = 0;
    for (int32_t i = 0; i < n; i++) {
        int id = ((struct fake_sess *)rows[i].session)->id;
        a_rows += id >= 200 && id < 204;
        b_rows += id == 210;
    }
    if (a_rows > f->share_a_max) f->share_a_max = a_rows;
    if (b_rows) {
        f->share_steps_with_b++;
        if (a_rows > f->share_a_max_with_b) f->share_a_max_with_b = a_rows;
        if (a_rows && b_rows > f->share_b_max_with_a) f->share_b_max_with_a = b_rows;
    }
    if (f->trip && atomic_fetch_sub(&f->trip_steps, 1) == 1) atomic_store(f->trip, true);
    bool hold = false;
    for (int32_t i = 0; i < n && f->hold_until; i++)
        hold |= ((struct fake_sess *)rows[i].session)->id == f->hold_id;
    pthread_mutex_unlock(&f->mu);
    if (hold) {
        atomic_store(&f->holding, true);
        while (!atomic_load(f->hold_until))
            usleep(100);
    }
    usleep(200); /* a step takes time, so that callers pile up */
    return REALM_OK;
}

static int fake_reserve(void *ctx, struct realm_session *s, int32_t k, struct realm_err *err) {
    (void)ctx;
    struct fake_sess *fs = (struct fake_sess *)s;
    if (fs->quota && fs->len + k > fs->quota)
        return realm_err_set(err, REALM_E_KV_FULL, "fake: quota of %d positions", fs->quota);
    if (fs->len + k > fs->held) fs->held = fs->len + k;
    return REALM_OK;
}

static int32_t fake_attach(void *ctx, struct realm_session *s, const int32_t *tokens, int32_t n) {
    (void)ctx;
    struct fake_sess *fs = (struct fake_sess *)s;
    int32_t c = fs->cached < n ? fs->cached : n - 1;
    for (int32_t i = 0; i < c; i++) {
        fs->hash = mix(fs->hash, tokens[i]);
        fs->hist[++fs->len] = fs->hash;
    }
    fs->held = fs->len;
    return c;
}

static int32_t fake_len(void *ctx, const struct realm_session *s) {
    (void)ctx;
    return ((const struct fake_sess *)s)->len;
}

static int fake_rewind(void *ctx, struct realm_session *s, int32_t n_keep) {
    (void)ctx;
    struct fake_sess *fs = (struct fake_sess *)s;
    if (n_keep < 0 || n_keep > fs->len || n_keep >= HIST) return REALM_E_RANGE;
    fs->len = fs->held = n_keep;
    fs->hash = fs->hist[n_keep];
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
    if (w->prompt && realm_sched_decode(g_s, w->tenant, (struct realm_session *)&w->sess, toks,
                                        w->prompt, logits, NULL, &err) != REALM_OK)
        w->ok = 0;
    w->tokens += w->prompt;
    for (int i = 0; (w->stop ? !atomic_load(w->stop) : i < w->steps) && w->ok; i++) {
        fill_logits(h, expect);
        if (memcmp(expect, logits, sizeof expect) && (w->prompt || i)) w->ok = 0;
        int32_t t = (int32_t)(logits[0]) % NV;
        if (!w->prompt && !i) t = 1;
        h = mix(h, t);
        if (realm_sched_decode(g_s, w->tenant, (struct realm_session *)&w->sess, &t, 1, logits,
                               NULL, &err))
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
        w[i] = (struct worker){.tenant = (uint32_t)(i % 3),
                               .sess = {.id = i, .n_ctx = 1000},
                               .prompt = 3 + i * 4,
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
        w[i] = (struct worker){.tenant = i < NA ? 100 : 200,
                               .sess = {.id = 40 + i, .n_ctx = 1 << 20},
                               .prompt = 1,
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

/* tenant_share 1, contended_prefill 3: A (4 sessions, decode only) alone gets batched steps;
 * once B (1 session, a 20-token prompt) also has work, a step carries at most one of A's
 * requests beside B's, B's prompt goes in chunks of at most 3 rows, and B gets about as many
 * tokens as all of A's sessions together (without the cap: about as many as each of them). */
static void test_tenant_share(const struct realm_sched_backend *be) {
    struct realm_sched_params p = {.max_batch_tokens = MAXB,
                                   .prefill_chunk = CHUNK,
                                   .tenant_share = 1,
                                   .contended_prefill = 3};
    struct realm_sched *saved = g_s;
    struct realm_err err;
    CHECK(realm_sched_new(be, &p, &g_s, &err) == REALM_OK);
    enum { NA = 4 };
    struct worker w[NA + 1];
    pthread_t th[NA + 1];
    atomic_bool stop_a = false, stop_b = false;
    for (int i = 0; i < NA; i++) {
        w[i] = (struct worker){
            .tenant = 300, .sess = {.id = 200 + i, .n_ctx = 1 << 20}, .stop = &stop_a};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    usleep(100 * 1000);
    pthread_mutex_lock(&g_fake.mu);
    int alone_max = g_fake.share_a_max;
    int64_t a_before = 0;
    for (int i = 200; i < 204; i++)
        a_before += g_fake.rows_by_tenant_sess[i % 64];
    pthread_mutex_unlock(&g_fake.mu);
    w[NA] = (struct worker){
        .tenant = 301, .sess = {.id = 210, .n_ctx = 1 << 20}, .prompt = 20, .stop = &stop_b};
    pthread_create(&th[NA], NULL, worker_main, &w[NA]);
    usleep(200 * 1000);
    atomic_store(&stop_b, true);
    pthread_join(th[NA], NULL);
    pthread_mutex_lock(&g_fake.mu);
    int64_t a_with_b = -a_before;
    for (int i = 200; i < 204; i++)
        a_with_b += g_fake.rows_by_tenant_sess[i % 64];
    pthread_mutex_unlock(&g_fake.mu);
    atomic_store(&stop_a, true);
    for (int i = 0; i < NA; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i <= NA; i++)
        CHECKF(w[i].ok, "worker %d saw wrong logits", i);
    double b = (double)w[NA].tokens;
    tu_log("tenant_share 1: A alone up to %d rows a step; with B: %d steps, at most %d A row(s) "
           "beside B's; "
           "B %.0f tokens, A %lld over its %d sessions",
           alone_max, g_fake.share_steps_with_b, g_fake.share_a_max_with_b, b, (long long)a_with_b,
           NA);
    CHECKF(alone_max > 1, "a tenant alone was capped (at most %d rows a step)", alone_max);
    CHECK(g_fake.share_steps_with_b > 10);
    CHECKF(g_fake.share_a_max_with_b <= 1, "%d of A's requests shared a step with B's",
           g_fake.share_a_max_with_b);
    CHECKF(g_fake.share_b_max_with_a >= 1 && g_fake.share_b_max_with_a <= 3,
           "B's prompt went in chunks of up to %d rows beside A (cap 3)",
           g_fake.share_b_max_with_a);
    CHECKF(b >= (double)a_with_b / 2, "B got %.0f tokens while A's sessions got %lld together", b,
           (long long)a_with_b);
    realm_sched_free(g_s);
    g_s = saved;
    p.tenant_share = -1;
    CHECK(realm_sched_new(be, &p, &g_s, &err) == REALM_E_INVALID);
    p.tenant_share = 1;
    p.contended_prefill = -1;
    CHECK(realm_sched_new(be, &p, &g_s, &err) == REALM_E_INVALID);
    g_s = saved;
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
    c->rc = realm_sched_decode(g_s, 7, (struct realm_session *)&c->sess, toks, 60, NULL, &c->cancel,
                               &err);
    return NULL;
}

static void test_errors(void) {
    struct realm_err err;
    struct fake_sess s = {.id = 90, .n_ctx = 10};
    int32_t toks[20] = {0};
    float logits[NV];
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 11, logits, NULL, &err) ==
          REALM_E_CONTEXT_FULL);
    CHECK_EQ_INT(s.len, 0);
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 0, logits, NULL, &err) ==
          REALM_E_INVALID);
    toks[3] = NV;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 5, logits, NULL, &err) ==
          REALM_E_INVALID);
    toks[3] = -1;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 5, logits, NULL, &err) ==
          REALM_E_INVALID);
    toks[3] = 0;
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s, toks, 10, logits, NULL, &err) ==
          REALM_OK);
    CHECK_EQ_INT(s.len, 10);

    /* cancellation mid-prefill, set by another thread while the first step runs: the backend
     * holds in that step until the flag is set, so the scheduler must see it before the second
     * chunk; the one chunk that ran stays (this backend cannot rewind) */
    struct cancel_arg c = {.sess = {.id = 91, .n_ctx = 1000}};
    atomic_store(&g_fake.fail_token, -2);
    atomic_store(&c.cancel, false);
    atomic_store(&g_fake.holding, false);
    pthread_mutex_lock(&g_fake.mu);
    g_fake.hold_id = 91;
    g_fake.hold_until = &c.cancel;
    pthread_mutex_unlock(&g_fake.mu);
    pthread_t th;
    pthread_create(&th, NULL, cancel_main, &c);
    while (!atomic_load(&g_fake.holding))
        usleep(100);
    atomic_store(&c.cancel, true);
    pthread_join(th, NULL);
    pthread_mutex_lock(&g_fake.mu);
    g_fake.hold_until = NULL;
    pthread_mutex_unlock(&g_fake.mu);
    CHECKF(c.rc == REALM_E_CANCELLED, "rc %d after %d tokens", c.rc, c.sess.len);
    CHECKF(c.sess.len > 0 && c.sess.len < 60, "%d of 60 tokens ran", c.sess.len);
    CHECK_EQ_INT(c.sess.len, CHUNK); /* exactly the held step's chunk */
    tu_log("cancel: rc %d after %d tokens", c.rc, c.sess.len);
    atomic_bool pre = true;
    struct fake_sess s3 = {.id = 93, .n_ctx = 10};
    CHECK(realm_sched_decode(g_s, 1, (struct realm_session *)&s3, toks, 1, logits, &pre, &err) ==
          REALM_E_CANCELLED);

    /* a failing step fails its requests with the backend's error; the next one works */
    struct fake_sess s2 = {.id = 92, .n_ctx = 100};
    atomic_store(&g_fake.fail_token, 5);
    int32_t bad = 5;
    CHECK(realm_sched_decode(g_s, 2, (struct realm_session *)&s2, &bad, 1, logits, NULL, &err) ==
          REALM_E_INTERNAL);
    CHECK(strstr(err.msg, "poisoned") != NULL);
    atomic_store(&g_fake.fail_token, -2);
    CHECK(realm_sched_decode(g_s, 2, (struct realm_session *)&s2, &bad, 1, logits, NULL, &err) ==
          REALM_OK);
}

/* A failed decode (refused room, cancellation, backend error) after chunks ran — and after a
 * prefix was attached — leaves the session where the call found it, when the backend can
 * rewind; the session then goes on as if the failed call never happened. */
static void test_undo(void) {
    static struct fake f = {.mu = PTHREAD_MUTEX_INITIALIZER};
    atomic_store(&f.fail_token, -2);
    atomic_bool trip = false;
    f.trip = &trip;
    struct realm_sched_backend be = {.ctx = &f,
                                     .forward = fake_forward,
                                     .room = fake_room,
                                     .n_vocab = NV,
                                     .reserve = fake_reserve,
                                     .attach = fake_attach,
                                     .len = fake_len,
                                     .rewind = fake_rewind};
    struct realm_sched_params p = {.max_batch_tokens = MAXB, .prefill_chunk = CHUNK};
    struct realm_sched *sc;
    struct realm_err err;
    CHECK(realm_sched_new(&be, &p, &sc, &err) == REALM_OK);
    int32_t toks[40];
    for (int i = 0; i < 40; i++)
        toks[i] = (i * 5 + 1) % NV;
    float logits[NV], expect[NV];
    uint64_t h = 0;
    for (int i = 0; i < 7; i++)
        h = mix(h, toks[i]);
    fill_logits(h, expect);

    /* refused room after one chunk of 5 ran: 3 + 5 fit the quota of 12, 8 + 5 do not */
    struct fake_sess s = {.id = 1, .n_ctx = 1000, .quota = 12};
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&s, toks, 3, logits, NULL, &err) ==
          REALM_OK);
    uint64_t h3 = s.hash;
    struct realm_sched_stats st0, st1;
    realm_sched_get_stats(sc, &st0);
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&s, toks + 3, 20, logits, NULL, &err) ==
          REALM_E_KV_FULL);
    realm_sched_get_stats(sc, &st1);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 5); /* a chunk really ran first */
    CHECK_EQ_INT(s.len, 3);
    CHECK_EQ_INT(s.held, 3);
    CHECK(s.hash == h3);
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&s, toks + 3, 4, logits, NULL, &err) ==
          REALM_OK);
    CHECK(!memcmp(logits, expect, sizeof expect));

    /* cancelled after two chunks */
    struct fake_sess c = {.id = 2, .n_ctx = 1000};
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&c, toks, 3, logits, NULL, &err) ==
          REALM_OK);
    atomic_store(&trip, false);
    atomic_store(&f.trip_steps, 2);
    realm_sched_get_stats(sc, &st0);
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&c, toks + 3, 30, logits, &trip,
                             &err) == REALM_E_CANCELLED);
    realm_sched_get_stats(sc, &st1);
    CHECK_EQ_INT(st1.prefill_rows - st0.prefill_rows, 10);
    CHECK_EQ_INT(c.len, 3);
    CHECK(c.hash == h3);
    atomic_store(&f.trip_steps, 0);
    CHECK(realm_sched_decode(sc, 1, (struct realm_session *)&c, toks + 3, 4, logits, NULL, &err) ==
          REALM_OK);
    CHECK(!memcmp(logits, expect, sizeof expect));

    /* a prefix attached by the failing call is given back: refused, then cancelled */
    struct fake_sess a = {.id = 3, .n_ctx = 1000, .cached = 6, .quota = 10};
    realm_sched_get_stats(sc, &st0);
    CHECK(realm_sched_decode(sc, 2, (struct realm_session *)&a, toks, 20, logits, NULL, &err) ==
          REALM_E_KV_FULL);
    realm_sched_get_stats(sc, &st1);
    CHECK_EQ_INT(st1.prefix_tokens - st0.prefix_tokens, 6);
    CHECK(a.len == 0 && a.held == 0 && a.hash == 0);
    a.quota = 0;
    atomic_store(&trip, false);
    atomic_store(&f.trip_steps, 1);
    CHECK(realm_sched_decode(sc, 2, (struct realm_session *)&a, toks, 20, logits, &trip, &err) ==
          REALM_E_CANCELLED);
    CHECK(a.len == 0 && a.held == 0 && a.hash == 0);
    atomic_store(&f.trip_steps, 0);

    /* a failing step: the session of the failed request is rewound too */
    struct fake_sess b = {.id = 4, .n_ctx = 1000};
    CHECK(realm_sched_decode(sc, 3, (struct realm_session *)&b, toks, 3, logits, NULL, &err) ==
          REALM_OK);
    int32_t poisoned[12] = {0};
    poisoned[11] = 6; /* reached in the third chunk */
    atomic_store(&f.fail_token, 6);
    CHECK(realm_sched_decode(sc, 3, (struct realm_session *)&b, poisoned, 12, logits, NULL, &err) ==
          REALM_E_INTERNAL);
    atomic_store(&f.fail_token, -2);
    CHECK(b.len == 3 && b.hash == h3);
    CHECK(realm_sched_decode(sc, 3, (struct realm_session *)&b, toks + 3, 4, logits, NULL, &err) ==
          REALM_OK);
    CHECK(!memcmp(logits, expect, sizeof expect));
    realm_sched_free(sc);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    test_undo();
    atomic_store(&g_fake.fail_token, -2);
    struct realm_sched_backend be = {
        .ctx = &g_fake, .forward = fake_forward, .room = fake_room, .n_vocab = NV};
    struct realm_sched_params p = {.max_batch_tokens = MAXB, .prefill_chunk = CHUNK};
    struct realm_err err;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_OK);
    test_concurrent();
    test_fairness();
    test_tenant_share(&be);
    test_errors();
    struct realm_sched_stats st;
    realm_sched_get_stats(g_s, &st);
    CHECK_EQ_INT(st.queue_depth, 0);
    CHECK(st.steps > 0 && st.rows >= st.steps && st.requests_done > 0 && st.requests_failed == 1);
    int64_t hist = 0;
    for (int i = 0; i < REALM_SCHED_HIST_BUCKETS; i++)
        hist += st.batch_hist[i];
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
