/*
 * sched.c — the continuous-batching scheduler (see include/realm/sched.h).
 *
 * State: per-tenant FIFO queues of requests (a request is a decode call blocked in its caller's
 * thread; it lives on that caller's stack), a ring of tenants that have work, and counters. One
 * mutex guards all of it; the scheduler thread drops the mutex while the forward pass runs so that
 * callers can enqueue in the meantime. Each request has its own condition variable, so finishing
 * one wakes exactly its caller.
 *
 * Step selection, in order (each pass visits the tenants round-robin from a rotating start):
 *   1. decode rows: requests with one token left, one request per tenant per pass;
 *   2. prefill chunks: up to prefill_chunk tokens of one request per tenant per pass.
 * While more than one tenant has work, a tenant stops getting passes once it has tenant_share
 * requests in the step (both phases together): step time grows with rows, so without the cap a
 * tenant with many concurrent requests would slow every other tenant's tokens by that factor.
 * For the same reason the prefill rows of such a step are capped at contended_prefill in all: on
 * a compute-bound host a 32-row chunk makes the step several times longer for everyone in it.
 * A request contributes at most one contiguous run of rows per step, so rows of a session are
 * consecutive and in order, as the engine requires.
 *
 * Gathering: the callers whose request just finished usually come straight back with their next
 * token, but each needs a CPU for a moment first (sampling, waking up). Starting the next step
 * the instant any work exists would then run it with whoever was quickest and leave the rest for
 * the step after — on two cores that settles into half-full steps. So after a step the scheduler
 * waits until the sessions whose requests finished in it are queued again, or for at most a quarter
 * of the last step's time (capped at GATHER_MAX_S), whichever comes first.
 */
#include "realm/sched.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/clock.h"
#include "realm/log.h"

#define GATHER_MAX_S 0.005 /* longest wait for returning callers before a step */

struct req {
    struct req *next;
    uint32_t tenant;
    struct realm_session *session;
    const int32_t *tokens;
    int32_t n;
    int32_t done;  /* tokens already run */
    int32_t taken; /* rows in the current step (0 if not in it) */
    bool refused;  /* the backend refused room in this step: finished after collect */
    float *logits;
    const atomic_bool *cancel;
    bool finished;
    int status;
    struct realm_err *err;
    pthread_cond_t cv;
};

struct tenant_q {
    uint32_t id;
    struct req *head, *tail;
    int64_t queued_requests, queued_tokens, tokens_done;
    int32_t in_step; /* requests in the step being collected */
    bool in_ring;
};

struct realm_sched {
    struct realm_sched_backend be;
    struct realm_sched_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_t thread;
    bool stopping;

    /* tenants: dense array + open-addressing index id → slot (-1 empty) */
    struct tenant_q *tenants;
    int32_t n_tenants, cap_tenants;
    int32_t *index;
    uint32_t index_cap;

    /* tenants with queued work, in round-robin order */
    int32_t *ring;
    int32_t ring_len;
    int32_t ring_start;

    /* step scratch, sized max_batch_tokens at creation */
    struct realm_batch_row *rows;
    struct req **step_reqs;
    int32_t n_step_reqs;

    struct realm_sched_stats stats;
    struct realm_session **returning; /* sessions of requests finished in the last step and not
                                         queued again yet (max_batch_tokens entries) */
    int32_t n_returning;
    double last_step_s; /* duration of the last forward */
};

/* ---- tenants ---- */

static uint32_t hash_u32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

static int index_rebuild(struct realm_sched *s, uint32_t cap) {
    int32_t *idx = realm_malloc(cap * sizeof *idx);
    if (!idx) return REALM_E_NOMEM;
    memset(idx, 0xff, cap * sizeof *idx);
    for (int32_t i = 0; i < s->n_tenants; i++) {
        uint32_t h = hash_u32(s->tenants[i].id) & (cap - 1);
        while (idx[h] >= 0)
            h = (h + 1) & (cap - 1);
        idx[h] = i;
    }
    realm_free(s->index);
    s->index = idx;
    s->index_cap = cap;
    return REALM_OK;
}

/* Appends tenant id (absent; h: its free index slot). */
static struct tenant_q *tenant_add(struct realm_sched *s, uint32_t id, uint32_t h) {
    if (s->n_tenants == s->cap_tenants) {
        int32_t cap = s->cap_tenants * 2;
        struct tenant_q *t = realm_realloc(s->tenants, (size_t)cap * sizeof *t);
        int32_t *ring = t ? realm_realloc(s->ring, (size_t)cap * sizeof *ring) : NULL;
        if (t) s->tenants = t;
        if (!ring) return NULL;
        s->ring = ring;
        s->cap_tenants = cap;
    }
    struct tenant_q *t = &s->tenants[s->n_tenants];
    memset(t, 0, sizeof *t);
    t->id = id;
    s->n_tenants++;
    if ((uint32_t)s->n_tenants * 2 > s->index_cap) {
        if (index_rebuild(s, s->index_cap * 2)) {
            s->n_tenants--;
            return NULL;
        }
    } else {
        s->index[h] = s->n_tenants - 1;
    }
    return t;
}

/* The tenant's queue, created on first use; NULL on allocation failure. */
static struct tenant_q *tenant_get(struct realm_sched *s, uint32_t id) {
    uint32_t h = hash_u32(id) & (s->index_cap - 1);
    for (; s->index[h] >= 0; h = (h + 1) & (s->index_cap - 1))
        if (s->tenants[s->index[h]].id == id) return &s->tenants[s->index[h]];
    /* the tables live as long as the scheduler: never charged to the caller's tenant budget */
    struct realm_alloc_budget *prev = realm_alloc_budget_enter(NULL);
    struct tenant_q *t = tenant_add(s, id, h);
    realm_alloc_budget_leave(prev);
    return t;
}

/* ---- queueing ---- */

static void enqueue(struct realm_sched *s, struct tenant_q *t, struct req *r) {
    r->next = NULL;
    if (t->tail)
        t->tail->next = r;
    else
        t->head = r;
    t->tail = r;
    t->queued_requests++;
    t->queued_tokens += r->n;
    s->stats.queue_depth++;
    if (!t->in_ring) {
        t->in_ring = true;
        s->ring[s->ring_len++] = (int32_t)(t - s->tenants);
    }
}

static void unlink_req(struct realm_sched *s, struct tenant_q *t, struct req *r) {
    struct req **link = &t->head, *prev = NULL;
    while (*link != r) {
        prev = *link;
        link = &(*link)->next;
    }
    *link = r->next;
    if (t->tail == r) t->tail = prev;
    t->queued_requests--;
    t->queued_tokens -= r->n - r->done;
    s->stats.queue_depth--;
}

/* Drops tenants without work from the ring, keeping the order of the rest. */
static void compact_ring(struct realm_sched *s) {
    int32_t w = 0;
    for (int32_t i = 0; i < s->ring_len; i++) {
        struct tenant_q *t = &s->tenants[s->ring[i]];
        if (t->head)
            s->ring[w++] = s->ring[i];
        else
            t->in_ring = false;
    }
    s->ring_len = w;
    if (s->ring_start >= w) s->ring_start = 0;
}

static void finish(struct realm_sched *s, struct tenant_q *t, struct req *r, int status) {
    unlink_req(s, t, r);
    r->finished = true;
    r->status = status;
    if (status == REALM_OK)
        s->stats.requests_done++;
    else if (status == REALM_E_CANCELLED)
        s->stats.requests_cancelled++;
    else
        s->stats.requests_failed++;
    pthread_cond_signal(&r->cv);
}

/* ---- one step ---- */

/* Adds k rows of r to the step, after the backend made room for them; false if it refused
 * (r is then marked and failed once collect is done). */
static bool take(struct realm_sched *s, struct req *r, int32_t k, int32_t *n_rows) {
    if (s->be.reserve) {
        int rc = s->be.reserve(s->be.ctx, r->session, k, r->err);
        if (rc) {
            r->refused = true;
            r->status = rc;
            return false;
        }
    }
    for (int32_t i = 0; i < k; i++) {
        struct realm_batch_row *row = &s->rows[*n_rows + i];
        row->session = r->session;
        row->token = r->tokens[r->done + i];
        row->logits = (r->done + i == r->n - 1) ? r->logits : NULL;
    }
    r->taken = k;
    *n_rows += k;
    s->step_reqs[s->n_step_reqs++] = r;
    return true;
}

/* Fails the requests the backend refused room in this step. */
static void finish_refused(struct realm_sched *s) {
    for (int32_t i = 0; i < s->ring_len; i++) {
        struct tenant_q *t = &s->tenants[s->ring[i]];
        for (struct req *r = t->head, *next; r; r = next) {
            next = r->next;
            if (!r->refused) continue;
            s->stats.requests_refused++;
            finish(s, t, r, r->status);
        }
    }
}

/* Next request of tenant t not yet in this step that fits the phase (decode: one token left). */
static struct req *next_candidate(struct tenant_q *t, bool decode) {
    for (struct req *r = t->head; r; r = r->next)
        if (!r->taken && !r->refused && ((r->n - r->done == 1) == decode)) return r;
    return NULL;
}

static void drop_cancelled(struct realm_sched *s) {
    for (int32_t i = 0; i < s->ring_len; i++) {
        struct tenant_q *t = &s->tenants[s->ring[i]];
        for (struct req *r = t->head, *next; r; r = next) {
            next = r->next;
            if (r->cancel && atomic_load(r->cancel)) {
                realm_err_set(r->err, REALM_E_CANCELLED,
                              "sched: request cancelled after %d of %d tokens", r->done, r->n);
                finish(s, t, r, REALM_E_CANCELLED);
            }
        }
    }
}

/* Fills s->rows for one step; returns the row count. */
static int32_t collect(struct realm_sched *s) {
    int32_t budget = s->p.max_batch_tokens, n_rows = 0;
    s->n_step_reqs = 0;
    for (int32_t k = 0; k < s->ring_len; k++)
        s->tenants[s->ring[k]].in_step = 0;
    bool contended = s->ring_len > 1;
    int32_t share = contended && s->p.tenant_share > 0 ? s->p.tenant_share : INT32_MAX;
    for (int phase = 0; phase < 2; phase++) {
        bool decode = phase == 0;
        bool progress = true;
        int32_t limit = budget; /* this phase fills the step up to here */
        if (!decode && contended && s->p.contended_prefill > 0 &&
            n_rows + s->p.contended_prefill < budget)
            limit = n_rows + s->p.contended_prefill;
        while (progress && n_rows < limit) {
            progress = false;
            for (int32_t k = 0; k < s->ring_len && n_rows < limit; k++) {
                struct tenant_q *t = &s->tenants[s->ring[(s->ring_start + k) % s->ring_len]];
                if (t->in_step >= share) continue;
                struct req *r = next_candidate(t, decode);
                if (!r) continue;
                t->in_step++;
                int32_t want = decode ? 1 : r->n - r->done;
                if (!decode && want > s->p.prefill_chunk) want = s->p.prefill_chunk;
                if (want > limit - n_rows) want = limit - n_rows;
                take(s, r, want, &n_rows);
                progress = true; /* taken or refused: either way r is out of this step */
            }
        }
    }
    if (s->ring_len) s->ring_start = (s->ring_start + 1) % s->ring_len; /* rotate who goes first */
    finish_refused(s);
    return n_rows;
}

static int hist_bucket(int32_t n) {
    int b = 0;
    for (int32_t lim = 1; b < REALM_SCHED_HIST_BUCKETS - 1 && n > lim; lim *= 2)
        b++;
    return b;
}

static void complete_step(struct realm_sched *s, int rc, const struct realm_err *step_err,
                          int32_t n_rows) {
    s->stats.steps++;
    s->stats.rows += n_rows;
    s->stats.batch_hist[hist_bucket(n_rows)]++;
    s->n_returning = 0;
    bool contended = s->p.tenant_share > 0 && s->ring_len > 1;
    for (int32_t i = 0; i < s->n_step_reqs; i++) {
        struct req *r = s->step_reqs[i];
        struct tenant_q *t = tenant_get(s, r->tenant); /* exists: r is queued there */
        int32_t k = r->taken;
        r->taken = 0;
        if (rc != REALM_OK) {
            if (r->err) *r->err = *step_err;
            finish(s, t, r, rc);
            continue;
        }
        if (r->n - r->done == 1)
            s->stats.decode_rows++;
        else
            s->stats.prefill_rows += k;
        r->done += k;
        t->queued_tokens -= k;
        t->tokens_done += k;
        if (r->done == r->n) {
            finish(s, t, r, REALM_OK);
            /* no waiting for a caller whose tenant already has its share of the next step
             * queued: its next request could not join that step anyway */
            bool capped = contended && t->queued_requests >= s->p.tenant_share;
            if (!capped) s->returning[s->n_returning++] = r->session;
        }
    }
    compact_ring(s);
}

/* Waits (lock held, released while waiting) for the callers of the last step to come back; see
 * "Gathering" above. */
static void gather(struct realm_sched *s) {
    if (s->n_returning == 0) return;
    double wait = s->last_step_s / 4;
    if (wait > GATHER_MAX_S) wait = GATHER_MAX_S;
    struct timespec ts;
    realm_deadline_after(&ts, wait);
    while (!s->stopping && s->n_returning > 0)
        if (pthread_cond_timedwait(&s->cv_work, &s->mu, &ts)) break; /* timed out */
}

static void *sched_main(void *arg) {
    struct realm_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stopping && s->stats.queue_depth == 0)
            pthread_cond_wait(&s->cv_work, &s->mu);
        if (s->stopping) break;
        gather(s);
        if (s->stopping) break;
        drop_cancelled(s);
        compact_ring(s);
        int32_t n_rows = collect(s);
        if (n_rows == 0) {
            compact_ring(s); /* every candidate may have been refused */
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        /* the forward pass runs without the lock: callers keep enqueueing meanwhile */
        struct realm_err step_err = {0};
        double t0 = realm_now_s();
        int rc = s->be.forward(s->be.ctx, s->rows, n_rows, &step_err);
        double dt = realm_now_s() - t0;
        pthread_mutex_lock(&s->mu);
        s->stats.busy_seconds += dt;
        s->last_step_s = dt;
        if (rc != REALM_OK)
            realm_log(REALM_LOG_ERROR, "sched", "step of %d rows failed: %s", n_rows, step_err.msg);
        complete_step(s, rc, &step_err, n_rows);
    }
    /* stopping: fail everything still queued */
    for (int32_t i = 0; i < s->n_tenants; i++) {
        struct tenant_q *t = &s->tenants[i];
        while (t->head) {
            realm_err_set(t->head->err, REALM_E_CANCELLED, "sched: scheduler stopped");
            finish(s, t, t->head, REALM_E_CANCELLED);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- public API ---- */

/* Frees the scheduler's memory (not the thread or the sync objects). */
static void free_state(struct realm_sched *s) {
    realm_free(s->index);
    realm_free(s->tenants);
    realm_free(s->ring);
    realm_free(s->rows);
    realm_free(s->step_reqs);
    realm_free(s->returning);
    realm_free(s);
}

int realm_sched_new(const struct realm_sched_backend *backend,
                    const struct realm_sched_params *params, struct realm_sched **out,
                    struct realm_err *err) {
    struct realm_sched_params p = {64, 32, 0, 0};
    if (params) {
        if (params->max_batch_tokens) p.max_batch_tokens = params->max_batch_tokens;
        if (params->prefill_chunk) p.prefill_chunk = params->prefill_chunk;
        p.tenant_share = params->tenant_share;
        p.contended_prefill = params->contended_prefill;
    }
    if (!backend || !backend->forward || !backend->room || backend->n_vocab < 1 ||
        p.max_batch_tokens < 1 || p.prefill_chunk < 1 || p.tenant_share < 0 ||
        p.contended_prefill < 0)
        return realm_err_set(err, REALM_E_INVALID,
                             "sched: invalid backend or parameters (max_batch_tokens %d, "
                             "prefill_chunk %d, tenant_share %d, contended_prefill %d)",
                             p.max_batch_tokens, p.prefill_chunk, p.tenant_share,
                             p.contended_prefill);
    struct realm_sched *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
    s->be = *backend;
    s->p = p;
    s->cap_tenants = 16;
    s->tenants = realm_calloc((size_t)s->cap_tenants, sizeof *s->tenants);
    s->ring = realm_calloc((size_t)s->cap_tenants, sizeof *s->ring);
    s->rows = realm_calloc((size_t)p.max_batch_tokens, sizeof *s->rows);
    s->step_reqs = realm_calloc((size_t)p.max_batch_tokens, sizeof *s->step_reqs);
    s->returning = realm_calloc((size_t)p.max_batch_tokens, sizeof *s->returning);
    if (!s->tenants || !s->ring || !s->rows || !s->step_reqs || !s->returning ||
        index_rebuild(s, 64))
        goto fail;
    pthread_mutex_init(&s->mu, NULL);
    realm_cond_init_monotonic(&s->cv_work); /* gather's deadline */
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_cond_destroy(&s->cv_work);
        pthread_mutex_destroy(&s->mu);
        free_state(s);
        return realm_err_set(err, REALM_E_INTERNAL, "sched: cannot start the scheduler thread");
    }
    *out = s;
    return REALM_OK;
fail:
    free_state(s);
    return realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
}

void realm_sched_free(struct realm_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    free_state(s);
}

int realm_sched_decode(struct realm_sched *s, uint32_t tenant, struct realm_session *session,
                       const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                       struct realm_err *err) {
    if (n < 1 || !tokens || !session)
        return realm_err_set(err, REALM_E_INVALID, "sched: decode of %d tokens", n);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= s->be.n_vocab)
            return realm_err_set(err, REALM_E_INVALID,
                                 "sched: token %d at index %d is outside the vocabulary "
                                 "(%d tokens)",
                                 tokens[i], i, s->be.n_vocab);
    int32_t room = s->be.room(s->be.ctx, session);
    if (n > room)
        return realm_err_set(err, REALM_E_CONTEXT_FULL,
                             "sched: %d tokens do not fit, the session has room for %d", n, room);
    if (cancel && atomic_load(cancel))
        return realm_err_set(err, REALM_E_CANCELLED, "sched: request cancelled");

    /* where a failure rewinds to (before the prefix below is attached) */
    const bool undo = s->be.len && s->be.rewind;
    const int32_t len0 = s->be.len      ? s->be.len(s->be.ctx, session)
                         : s->be.attach ? realm_session_len(session) /* a fake session has no len */
                                        : -1;
    /* prefix reuse: tokens the backend already holds for this tenant are not run again */
    int32_t cached = s->be.attach && len0 == 0 ? s->be.attach(s->be.ctx, session, tokens, n) : 0;
    if (cached < 0 || cached >= n) cached = 0;
    tokens += cached;
    n -= cached;
    struct req r = {.tenant = tenant,
                    .session = session,
                    .tokens = tokens,
                    .n = n,
                    .logits = logits,
                    .cancel = cancel,
                    .err = err};
    pthread_cond_init(&r.cv, NULL);
    pthread_mutex_lock(&s->mu);
    struct tenant_q *t = s->stopping ? NULL : tenant_get(s, tenant);
    if (!t) {
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&r.cv);
        if (undo) s->be.rewind(s->be.ctx, session, len0); /* drops the attached prefix */
        return stopping ? realm_err_set(err, REALM_E_CANCELLED, "sched: scheduler stopped")
                        : realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
    }
    s->stats.prefix_tokens += cached;
    for (int32_t i = 0; i < s->n_returning; i++) /* one of the last step's callers is back */
        if (s->returning[i] == session) {
            s->returning[i] = s->returning[--s->n_returning];
            break;
        }
    enqueue(s, t, &r);
    pthread_cond_signal(&s->cv_work);
    while (!r.finished)
        pthread_cond_wait(&r.cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r.cv);
    /* A finished request is in no step (finish happens between forwards), so the session is
     * this thread's again: rewinding gives back the chunks that ran, the room the step reserved
     * for a failed forward, and the prefix attached above. */
    if (r.status != REALM_OK && undo) s->be.rewind(s->be.ctx, session, len0);
    return r.status;
}

void realm_sched_get_stats(struct realm_sched *s, struct realm_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->n_tenants = 0;
    for (int32_t i = 0; i < s->n_tenants && out->n_tenants < REALM_SCHED_MAX_TENANT_STATS; i++) {
        const struct tenant_q *t = &s->tenants[i];
        out->tenants[out->n_tenants++] = (struct realm_sched_tenant_stats){
            t->id, t->queued_requests, t->queued_tokens, t->tokens_done};
    }
    pthread_mutex_unlock(&s->mu);
}
