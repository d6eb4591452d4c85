/*
 * test_sched.c — the scheduler over a fake backend whose "logits" are a hash of each session's
 * token history, so any lost, duplicated or reordered token shows. Checks: results equal a solo
 * run under concurrency; rows of a session are consecutive and in order; step and chunk limits;
 * fairness between a 32-session tenant and a 1-session tenant; the per-tenant share of a
 * contended step (tenant_share); cancellation while a step runs (deterministic: the backend holds
 * until the flag is set); context limit;
 * backend failure confined to its step; counters back to zero at the end.
 * Latency targets (steps counted by the fake backend, never wall time): with 64 long decodes
 * running, a new prompt's logits arrive within the bound stated in sched.h; weights 3:1 give a
 * 3:1 token share (±10%) while both tenants saturate; the admission queue admits in arrival order
 * within a tenant and interleaves tenants by weight, reserves nothing for a waiting request, and
 * frees a slot on release, cancellation or lease expiry.
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
    atomic_long steps; /* forward calls: the tests' clock */
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
    atomic_fetch_add(&f->steps, 1);
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

/* Waits (polling) until the fake backend has run `n` more steps than `from`. */
static void wait_steps(long from, long n) {
    while (atomic_load(&g_fake.steps) < from + n)
        usleep(500);
}

static long ceil_div(long a, long b) {
    return (a + b - 1) / b;
}

/* 64 sessions of 4 tenants decode without end in steps of 64 rows (so decode alone could fill
 * every step); a new 40-token prompt — of a fifth tenant, then of one of the decoding tenants —
 * must get its logits within sched.h's bound: ceil((Q + P) / R) + ceil(P / c) steps, plus one for
 * a step already running when it is queued (Q = 0 here, R = the default reserve min(c, 64 / 2)). */
static void test_ttft_bound(const struct realm_sched_backend *be) {
    enum { NDEC = 64, B = 64, C = 8, P = 40 };
    struct realm_sched_params p = {.max_batch_tokens = B, .prefill_chunk = C};
    struct realm_sched *saved = g_s;
    struct realm_err err;
    CHECK(realm_sched_new(be, &p, &g_s, &err) == REALM_OK);
    static struct worker w[NDEC];
    pthread_t th[NDEC];
    atomic_bool stop = false;
    for (int i = 0; i < NDEC; i++) {
        w[i] = (struct worker){.tenant = 500 + (uint32_t)(i % 4),
                               .sess = {.id = 300 + i, .n_ctx = 1 << 20},
                               .prompt = 1,
                               .stop = &stop};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    wait_steps(atomic_load(&g_fake.steps), 50); /* every decoder is running */
    const long R = C < B / 2 ? C : B / 2;
    const long bound = ceil_div(P, R) + ceil_div(P, C) + 1;
    int32_t toks[P];
    for (int i = 0; i < P; i++)
        toks[i] = (i * 3 + 1) % NV;
    uint64_t h = 0;
    for (int i = 0; i < P; i++)
        h = mix(h, toks[i]);
    float logits[NV], expect[NV];
    fill_logits(h, expect);
    const uint32_t tenants[2] = {600, 501};
    for (int k = 0; k < 2; k++) {
        struct fake_sess ps = {.id = 380 + k, .n_ctx = 1000};
        struct realm_sched_stats st0, st1;
        realm_sched_get_stats(g_s, &st0);
        long s0 = atomic_load(&g_fake.steps);
        CHECK(realm_sched_decode(g_s, tenants[k], (struct realm_session *)&ps, toks, P, logits,
                                 NULL, &err) == REALM_OK);
        long took = atomic_load(&g_fake.steps) - s0;
        realm_sched_get_stats(g_s, &st1);
        CHECK(!memcmp(logits, expect, sizeof expect));
        tu_log("ttft: %d-token prompt of tenant %u beside %d decodes: %ld steps (bound %ld), %lld "
               "decode rows meanwhile",
               P, tenants[k], NDEC, took, bound, (long long)(st1.decode_rows - st0.decode_rows));
        CHECKF(took <= bound, "first logits after %ld steps, bound %ld", took, bound);
        CHECK(st1.decode_rows - st0.decode_rows >= took - 1); /* decode went on meanwhile */
        CHECK(st1.prompts_done == st0.prompts_done + 1);
        CHECK(st1.prompt_steps_max <= bound);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < NDEC; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].ok, "decoder %d saw wrong logits", i);
    }
    realm_sched_free(g_s);
    g_s = saved;
}

static const struct realm_sched_tenant_stats *tenant_stats(const struct realm_sched_stats *st,
                                                           uint32_t id) {
    for (int i = 0; i < st->n_tenants; i++)
        if (st->tenants[i].tenant == id) return &st->tenants[i];
    return NULL;
}

/* Two tenants of 32 decoding sessions each, weights 3 and 1, in steps of 16 rows: both always
 * have more requests queued than their share of a step, so their tokens must split 3:1 (±10%). */
static void test_weights(const struct realm_sched_backend *be) {
    enum { N = 32 };
    struct realm_sched_params p = {.max_batch_tokens = MAXB, .prefill_chunk = CHUNK};
    struct realm_sched *saved = g_s;
    struct realm_err err;
    CHECK(realm_sched_new(be, &p, &g_s, &err) == REALM_OK);
    CHECK(realm_sched_set_tenant_weight(g_s, 700, 3) == REALM_OK);
    CHECK(realm_sched_set_tenant_weight(g_s, 701, 1) == REALM_OK);
    CHECK(realm_sched_set_tenant_weight(g_s, 702, 0) == REALM_E_INVALID);
    CHECK(realm_sched_set_tenant_weight(g_s, 702, REALM_SCHED_MAX_WEIGHT + 1) == REALM_E_INVALID);
    static struct worker w[2 * N];
    pthread_t th[2 * N];
    atomic_bool stop = false;
    for (int i = 0; i < 2 * N; i++) {
        w[i] = (struct worker){.tenant = i < N ? 700 : 701,
                               .sess = {.id = 500 + i, .n_ctx = 1 << 20},
                               .prompt = 1,
                               .stop = &stop};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    wait_steps(atomic_load(&g_fake.steps), 50);
    struct realm_sched_stats st0, st1;
    realm_sched_get_stats(g_s, &st0);
    wait_steps(atomic_load(&g_fake.steps), 400);
    realm_sched_get_stats(g_s, &st1);
    atomic_store(&stop, true);
    for (int i = 0; i < 2 * N; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].ok, "worker %d saw wrong logits", i);
    }
    const struct realm_sched_tenant_stats *a0 = tenant_stats(&st0, 700),
                                          *a1 = tenant_stats(&st1, 700),
                                          *b0 = tenant_stats(&st0, 701),
                                          *b1 = tenant_stats(&st1, 701);
    CHECK(a0 && a1 && b0 && b1);
    if (a0 && a1 && b0 && b1) {
        CHECK(a1->weight == 3 && b1->weight == 1);
        double a = (double)(a1->tokens_done - a0->tokens_done);
        double b = (double)(b1->tokens_done - b0->tokens_done);
        tu_log("weights 3:1: %.0f vs %.0f tokens over %lld steps (%.2f:1)", a, b,
               (long long)(st1.steps - st0.steps), b > 0 ? a / b : 0.0);
        CHECKF(b > 0 && a / b >= 2.7 && a / b <= 3.3, "token share %.0f:%.0f, not 3:1 (+-10%%)", a,
               b);
    }
    realm_sched_free(g_s);
    g_s = saved;
}

struct adm_arg {
    uint32_t tenant;
    struct fake_sess sess;
    atomic_bool cancel;
    atomic_int *order; /* next completion index */
    int done_at;       /* this request's completion index */
    int rc;
};

static void *adm_main(void *arg) {
    struct adm_arg *a = arg;
    int32_t toks[3] = {1, 2, 3};
    float logits[NV];
    struct realm_err err;
    a->rc = realm_sched_decode(g_s, a->tenant, (struct realm_session *)&a->sess, toks, 3, logits,
                               &a->cancel, &err);
    if (a->order) a->done_at = atomic_fetch_add(a->order, 1);
    realm_sched_release(g_s, (struct realm_session *)&a->sess); /* the sequence ends */
    return NULL;
}

static int64_t admission_waiting(void) {
    struct realm_sched_stats st;
    realm_sched_get_stats(g_s, &st);
    return st.admission_waiting;
}

/* max_active 1: one running sequence holds the slot; five new ones (A1 A2 A3 of tenant A, then
 * B1 B2 of tenant B, equal weights) queue in that order without anything reserved for them; a
 * sixth is cancelled while it waits. Released, the slot goes to A1, B1, A2, B2, A3 — arrival
 * order within a tenant, alternating between tenants. A sequence that is never released frees its
 * slot after REALM_SCHED_LEASE_S without requests. */
static void test_admission(const struct realm_sched_backend *base) {
    struct realm_sched_backend be = *base;
    be.reserve = fake_reserve;
    be.len = fake_len;
    struct realm_sched_params p = {
        .max_batch_tokens = MAXB, .prefill_chunk = CHUNK, .max_active = 1};
    struct realm_sched *saved = g_s;
    struct realm_err err;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_OK);
    struct fake_sess holder = {.id = 600, .n_ctx = 100};
    int32_t toks[3] = {1, 2, 3};
    float logits[NV];
    CHECK(realm_sched_decode(g_s, 900, (struct realm_session *)&holder, toks, 3, logits, NULL,
                             &err) == REALM_OK);
    /* a running sequence's next request does not queue */
    CHECK(realm_sched_decode(g_s, 900, (struct realm_session *)&holder, toks, 1, logits, NULL,
                             &err) == REALM_OK);
    enum { N = 5 };
    static const uint32_t tenant_of[N] = {901, 901, 901, 902, 902};
    static const int expect_order[N] = {0, 2, 4, 1, 3}; /* A1 B1 A2 B2 A3 → done_at per arrival */
    static struct adm_arg a[N + 1];
    pthread_t th[N + 1];
    atomic_int order = 0;
    for (int i = 0; i < N; i++) {
        a[i] = (struct adm_arg){
            .tenant = tenant_of[i], .sess = {.id = 610 + i, .n_ctx = 100}, .order = &order};
        atomic_store(&a[i].cancel, false);
        pthread_create(&th[i], NULL, adm_main, &a[i]);
        while (admission_waiting() < i + 1) /* queued: the next one arrives after it */
            usleep(200);
    }
    a[N] = (struct adm_arg){.tenant = 901, .sess = {.id = 620, .n_ctx = 100}};
    atomic_store(&a[N].cancel, false);
    pthread_create(&th[N], NULL, adm_main, &a[N]);
    while (admission_waiting() < N + 1)
        usleep(200);
    struct realm_sched_stats st;
    realm_sched_get_stats(g_s, &st);
    CHECK_EQ_INT(st.active_sequences, 1);
    for (int i = 0; i <= N; i++) /* nothing ran or was reserved for a waiting request */
        CHECK(a[i].sess.len == 0 && a[i].sess.held == 0);
    atomic_store(&a[N].cancel, true);
    pthread_join(th[N], NULL);
    CHECK_EQ_INT(a[N].rc, REALM_E_CANCELLED);
    CHECK_EQ_INT(admission_waiting(), N);
    realm_sched_release(g_s, (struct realm_session *)&holder);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(a[i].rc, REALM_OK);
        CHECKF(a[i].done_at == expect_order[i], "request %d (tenant %u) admitted as #%d, not #%d",
               i, tenant_of[i], a[i].done_at, expect_order[i]);
        CHECK_EQ_INT(a[i].sess.len, 3);
    }
    realm_sched_get_stats(g_s, &st);
    CHECK_EQ_INT(st.admission_waiting, 0);
    CHECK_EQ_INT(st.active_sequences, 0);
    CHECK(st.admitted >= N + 1 && st.admission_wait_max_s > 0);

    /* a sequence that is never released: its slot frees once it has been idle for the lease */
    struct fake_sess idle = {.id = 630, .n_ctx = 100};
    CHECK(realm_sched_decode(g_s, 900, (struct realm_session *)&idle, toks, 3, logits, NULL,
                             &err) == REALM_OK);
    a[0] = (struct adm_arg){.tenant = 901, .sess = {.id = 631, .n_ctx = 100}};
    atomic_store(&a[0].cancel, false);
    pthread_create(&th[0], NULL, adm_main, &a[0]);
    pthread_join(th[0], NULL); /* returns only once the lease has run out */
    CHECK_EQ_INT(a[0].rc, REALM_OK);
    realm_sched_free(g_s);

    /* parameters */
    p.max_active = -1;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_E_INVALID);
    p.max_active = 0;
    p.prefill_reserve = MAXB;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_E_INVALID);
    p.prefill_reserve = -2;
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_E_INVALID);
    p.prefill_reserve = -1; /* no reserve: valid */
    CHECK(realm_sched_new(&be, &p, &g_s, &err) == REALM_OK);
    realm_sched_free(g_s);
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
    test_ttft_bound(&be);
    test_weights(&be);
    test_admission(&be);
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
