/*
 * sched.c — the continuous-batching scheduler (see include/realm/sched.h).
 *
 * State: per-tenant FIFO queues of requests (a request is a decode call blocked in its caller's
 * thread; it lives on that caller's stack), a ring of tenants that have work, and counters. One
 * mutex guards all of it; the scheduler thread drops the mutex while the forward pass runs so that
 * callers can enqueue in the meantime. Each request has its own condition variable, so finishing
 * one wakes exactly its caller.
 *
 * Step selection, in order (each phase shares its rows between tenants by deficit round robin,
 * fill_phase; the turn in progress carries over to the next step):
 *   1. decode rows: requests with one token left, oldest first within a tenant, up to the budget
 *      less the prefill reserve while a prompt waits;
 *   2. prefill chunks: up to prefill_chunk tokens of one request;
 *   3. decode rows again, into what prompts left.
 * The reserve, because a step full of decode rows would otherwise leave a new prompt waiting for
 * as long as decodes keep coming (TTFT p99 of 11 s at 64 streams before this). Decode still goes
 * first within the step so that in a contended step a tenant's share goes to its decode rows
 * before its prompts, as before: a flooding tenant's prompt chunks then do not lengthen every
 * step the other tenants' next tokens wait for (tests/abuse).
 * While more than one tenant has work, a tenant stops getting turns once it has
 * weight × tenant_share requests in the step (all phases together): step time grows with rows,
 * so without the cap a
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
#define ADMIT_POLL_S                                                                               \
    0.01 /* an admission waiter rechecks its cancel flag and the leases this often */

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
    float *embd; /* realm_sched_embed: every token's hidden state (n x be.n_embd); else NULL */
    const atomic_bool *cancel;
    bool prompt;         /* more than one token asked for: its logits are a first token (TTFT) */
    int64_t step_queued; /* stats.steps when it was queued */
    double t_called;     /* when realm_sched_decode was called (admission included) */
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
    int32_t weight;     /* deficit round robin and admission share (default 1) */
    int64_t deficit[2]; /* credit of its turn in the decode [0] and prefill [1] phase, tokens */
    int64_t decode_tokens, prefill_tokens;
    int64_t adm_waiting; /* its requests in the admission queue */
    double adm_tag;      /* virtual time of its last admission request */
};

/* A caller waiting for admission (on its stack). */
struct adm_wait {
    struct adm_wait *next;
    int32_t tenant; /* slot in s->tenants (the array may move) */
    const struct realm_session *session;
    double tag;   /* weighted fair order: the smallest goes first */
    uint64_t seq; /* arrival order, for equal tags */
    bool granted;
    pthread_cond_t cv;
};

/* A sequence counted against max_active. */
struct active_seq {
    const struct realm_session *session;
    int32_t busy; /* decode calls of it in progress (0 or 1) */
    double last;  /* when its last call ended or began */
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

    /* step scratch, sized max_batch_tokens at creation */
    struct realm_batch_row *rows;
    struct req **step_reqs;
    int32_t n_step_reqs;

    struct realm_sched_stats stats;
    struct realm_session **returning; /* sessions of requests finished in the last step and not
                                         queued again yet (max_batch_tokens entries) */
    int32_t n_returning;
    double last_step_s; /* duration of the last forward */

    /* deficit round robin: per phase (0 decode, 1 prefill) the tenant slot whose turn is in
     * progress, and whether the next visit starts a fresh turn */
    int32_t drr_cur[2];
    bool drr_fresh[2];

    /* admission (p.max_active > 0) */
    struct adm_wait *adm_head; /* in arrival order */
    uint64_t adm_seq;
    double adm_vtime; /* tag of the last admitted request */
    struct active_seq *active;
    int32_t n_active, cap_active;
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
    t->weight = 1;
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
    r->step_queued = s->stats.steps;
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
        row->embd = r->embd ? r->embd + (size_t)(r->done + i) * (size_t)s->be.n_embd : NULL;
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

/* Position of tenant slot `slot` in the ring, or -1 when it has left it. */
static int32_t ring_pos(const struct realm_sched *s, int32_t slot) {
    for (int32_t i = 0; i < s->ring_len; i++)
        if (s->ring[i] == slot) return i;
    return -1;
}

/* Requests tenant t may put in a contended step (share: the per-weight cap, INT32_MAX: none). */
static int32_t tenant_cap(const struct tenant_q *t, int32_t share) {
    return share == INT32_MAX ? INT32_MAX : share * t->weight; /* ≤ 4096 × 10000: no overflow */
}

/* Adds requests of one phase (decode rows, or prefill chunks) to the step by deficit round robin
 * over the tenants of the ring until the step has `limit` rows or no tenant has one it may add;
 * returns the rows added. A fresh turn gives the tenant weight × quantum tokens of credit (decode
 * 1; prefill the most rows one request can get in the step, so every turn of a tenant with work
 * adds something and no turn outlasts one step of the contended prefill cap); it adds its oldest
 * requests while the credit lasts. A turn the step's end cuts short
 * goes on in the next step, so over many steps busy tenants' tokens follow their weights exactly.
 * A tenant with nothing to add loses its credit (it is not backlogged: no banking for later). */
static int32_t fill_phase(struct realm_sched *s, bool decode, int32_t limit, int32_t share,
                          int32_t prefill_cap, int32_t *n_rows) {
    const int ph = decode ? 0 : 1;
    const int64_t quantum =
        decode ? 1 : (s->p.prefill_chunk < prefill_cap ? s->p.prefill_chunk : prefill_cap);
    const int32_t n = s->ring_len;
    int32_t added = 0;
    if (n == 0 || *n_rows >= limit) return 0;
    int32_t pos = ring_pos(s, s->drr_cur[ph]);
    bool fresh = s->drr_fresh[ph] || pos < 0;
    if (pos < 0) pos = 0;
    /* stops after a whole round in which nobody added anything: every tenant was visited with a
     * fresh turn, and a fresh turn always suffices for one request */
    for (int32_t idle = 0; *n_rows < limit && idle <= n;) {
        struct tenant_q *t = &s->tenants[s->ring[pos]];
        struct req *r = t->in_step < tenant_cap(t, share) ? next_candidate(t, decode) : NULL;
        if (fresh) {
            t->deficit[ph] = r ? t->deficit[ph] + quantum * t->weight : 0;
            fresh = false;
        }
        int32_t want = 0;
        if (r) {
            want = decode ? 1 : r->n - r->done;
            if (want > s->p.prefill_chunk) want = s->p.prefill_chunk;
            if (want > limit - *n_rows) want = limit - *n_rows;
        }
        if (!r || t->deficit[ph] < want) { /* its turn is over */
            if (!r) t->deficit[ph] = 0;
            pos = (pos + 1) % n;
            fresh = true;
            idle++;
            continue;
        }
        t->deficit[ph] -= want;
        t->in_step++;
        take(s, r, want, n_rows); /* taken or refused: either way r is out of this step */
        added += want;
        idle = 0;
    }
    s->drr_cur[ph] = s->ring[pos];
    s->drr_fresh[ph] = fresh;
    return added;
}

/* Fills s->rows for one step; returns the row count. See "Step selection" above. */
static int32_t collect(struct realm_sched *s) {
    const int32_t budget = s->p.max_batch_tokens;
    int32_t n_rows = 0;
    s->n_step_reqs = 0;
    bool prompts = false; /* a queued request has more than one token left */
    for (int32_t k = 0; k < s->ring_len; k++) {
        struct tenant_q *t = &s->tenants[s->ring[k]];
        t->in_step = 0;
        prompts |= t->queued_tokens > t->queued_requests;
    }
    const bool contended = s->ring_len > 1;
    const int32_t share = contended && s->p.tenant_share > 0 ? s->p.tenant_share : INT32_MAX;
    int32_t prefill_cap = budget; /* prefill rows of this step in all */
    if (contended && s->p.contended_prefill > 0 && s->p.contended_prefill < budget)
        prefill_cap = s->p.contended_prefill;
    int32_t reserve = s->p.prefill_reserve < prefill_cap ? s->p.prefill_reserve : prefill_cap;
    if (!prompts) reserve = 0;
    fill_phase(s, true, budget - reserve, share, prefill_cap, &n_rows);
    int32_t limit = n_rows + prefill_cap < budget ? n_rows + prefill_cap : budget;
    fill_phase(s, false, limit, share, prefill_cap, &n_rows);
    fill_phase(s, true, budget, share, prefill_cap, &n_rows); /* into what prompts left */
    finish_refused(s);
    return n_rows;
}

static int hist_bucket(int32_t n) {
    int b = 0;
    for (int32_t lim = 1; b < REALM_SCHED_HIST_BUCKETS - 1 && n > lim; lim *= 2)
        b++;
    return b;
}

/* Time to first logits of prompt request r, done in the step that just ended. */
static void note_first_logits(struct realm_sched *s, const struct req *r, double now) {
    int64_t steps = s->stats.steps - r->step_queued;
    s->stats.prompts_done++;
    s->stats.prompt_steps_total += steps;
    if (steps > s->stats.prompt_steps_max) s->stats.prompt_steps_max = steps;
    s->stats.prompt_seconds_total += now - r->t_called;
}

static void complete_step(struct realm_sched *s, int rc, const struct realm_err *step_err,
                          int32_t n_rows) {
    s->stats.steps++;
    s->stats.rows += n_rows;
    s->stats.batch_hist[hist_bucket(n_rows)]++;
    s->n_returning = 0;
    bool contended = s->p.tenant_share > 0 && s->ring_len > 1;
    const double now = realm_now_s();
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
        if (r->n - r->done == 1) {
            s->stats.decode_rows++;
            t->decode_tokens++;
        } else {
            s->stats.prefill_rows += k;
            t->prefill_tokens += k;
        }
        r->done += k;
        t->queued_tokens -= k;
        t->tokens_done += k;
        if (r->done == r->n) {
            if (r->prompt) note_first_logits(s, r, now);
            finish(s, t, r, REALM_OK);
            /* no waiting for a caller whose tenant already has its share of the next step
             * queued: its next request could not join that step anyway */
            bool capped = contended && t->queued_requests >= tenant_cap(t, s->p.tenant_share);
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

/* ---- admission (see sched.h; only with p.max_active > 0) ---- */

static struct active_seq *active_find(struct realm_sched *s, const struct realm_session *session) {
    for (int32_t i = 0; i < s->n_active; i++)
        if (s->active[i].session == session) return &s->active[i];
    return NULL;
}

/* Counts session as running; NULL on allocation failure. */
static struct active_seq *active_add(struct realm_sched *s, const struct realm_session *session,
                                     double now) {
    if (s->n_active == s->cap_active) {
        int32_t cap = s->cap_active ? s->cap_active * 2 : 16;
        /* lives as long as the scheduler: never charged to the caller's tenant budget */
        struct realm_alloc_budget *prev = realm_alloc_budget_enter(NULL);
        struct active_seq *a = realm_realloc(s->active, (size_t)cap * sizeof *a);
        realm_alloc_budget_leave(prev);
        if (!a) return NULL;
        s->active = a;
        s->cap_active = cap;
    }
    struct active_seq *a = &s->active[s->n_active++];
    *a = (struct active_seq){.session = session, .last = now};
    return a;
}

/* Stops counting sequences that had no request for REALM_SCHED_LEASE_S. */
static void expire_leases(struct realm_sched *s, double now) {
    for (int32_t i = 0; i < s->n_active;)
        if (!s->active[i].busy && now - s->active[i].last > REALM_SCHED_LEASE_S)
            s->active[i] = s->active[--s->n_active];
        else
            i++;
}

/* Admits queued callers, smallest (tag, arrival) first, while fewer than max_active run. */
static void admit_waiting(struct realm_sched *s, double now) {
    if (s->adm_head && s->n_active >= s->p.max_active) expire_leases(s, now);
    while (s->adm_head && s->n_active < s->p.max_active) {
        struct adm_wait **best = &s->adm_head;
        for (struct adm_wait **w = &(*best)->next; *w; w = &(*w)->next)
            if ((*w)->tag < (*best)->tag || ((*w)->tag == (*best)->tag && (*w)->seq < (*best)->seq))
                best = w;
        struct adm_wait *w = *best;
        struct active_seq *a = active_add(s, w->session, now);
        if (!a) return; /* out of memory: the waiters retry at their next poll */
        a->busy = 1;
        *best = w->next;
        s->adm_vtime = w->tag;
        s->tenants[w->tenant].adm_waiting--;
        s->stats.admission_waiting--;
        w->granted = true;
        pthread_cond_signal(&w->cv);
    }
}

static void adm_unlink(struct realm_sched *s, struct adm_wait *w) {
    struct adm_wait **link = &s->adm_head;
    while (*link != w)
        link = &(*link)->next;
    *link = w->next;
    s->tenants[w->tenant].adm_waiting--;
    s->stats.admission_waiting--;
}

/* Blocks (lock held; released while waiting) until `session` may run: at once when it is counted
 * already or holds tokens (len0 > 0), else after its turn in the admission queue. The wait polls
 * `cancel`, the scheduler's stop and the leases every ADMIT_POLL_S. */
static int admit(struct realm_sched *s, int32_t slot, const struct realm_session *session,
                 int32_t len0, const atomic_bool *cancel, struct realm_err *err) {
    double now = realm_now_s();
    struct active_seq *a = active_find(s, session);
    if (!a && len0 > 0 && !(a = active_add(s, session, now)))
        return realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
    if (a) {
        a->busy = 1;
        a->last = now;
        return REALM_OK;
    }
    struct tenant_q *t = &s->tenants[slot];
    struct adm_wait w = {.tenant = slot, .session = session, .seq = s->adm_seq++};
    w.tag = (t->adm_tag > s->adm_vtime ? t->adm_tag : s->adm_vtime) + 1.0 / t->weight;
    t->adm_tag = w.tag;
    realm_cond_init_monotonic(&w.cv);
    w.next = s->adm_head;
    s->adm_head = &w;
    t->adm_waiting++;
    s->stats.admission_waiting++;
    admit_waiting(s, now);
    int rc = REALM_OK;
    while (!w.granted) {
        if (s->stopping || (cancel && atomic_load(cancel))) {
            adm_unlink(s, &w);
            rc = s->stopping
                     ? realm_err_set(err, REALM_E_CANCELLED, "sched: scheduler stopped")
                     : realm_err_set(err, REALM_E_CANCELLED,
                                     "sched: request cancelled while waiting for admission");
            break;
        }
        struct timespec ts;
        realm_deadline_after(&ts, ADMIT_POLL_S);
        pthread_cond_timedwait(&w.cv, &s->mu, &ts);
        if (!w.granted) admit_waiting(s, realm_now_s());
    }
    pthread_cond_destroy(&w.cv);
    if (rc) return rc;
    double waited = realm_now_s() - now;
    s->stats.admitted++;
    s->stats.admission_wait_seconds += waited;
    if (waited > s->stats.admission_wait_max_s) s->stats.admission_wait_max_s = waited;
    return REALM_OK;
}

/* realm_sched_decode's admission (before anything of the request runs or is attached). */
static int admission_enter(struct realm_sched *s, uint32_t tenant,
                           const struct realm_session *session, int32_t len0,
                           const atomic_bool *cancel, struct realm_err *err) {
    if (s->p.max_active == 0) return REALM_OK;
    pthread_mutex_lock(&s->mu);
    struct tenant_q *t = s->stopping ? NULL : tenant_get(s, tenant);
    int rc = !t ? (s->stopping ? realm_err_set(err, REALM_E_CANCELLED, "sched: scheduler stopped")
                               : realm_err_set(err, REALM_E_NOMEM, "sched: out of memory"))
                : admit(s, (int32_t)(t - s->tenants), session, len0, cancel, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The decode call on session ended (lock held): its lease runs from now. */
static void admission_leave(struct realm_sched *s, const struct realm_session *session) {
    if (s->p.max_active == 0) return;
    struct active_seq *a = active_find(s, session);
    if (a) {
        a->busy = 0;
        a->last = realm_now_s();
    }
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
    realm_free(s->active);
    realm_free(s);
}

int realm_sched_new(const struct realm_sched_backend *backend,
                    const struct realm_sched_params *params, struct realm_sched **out,
                    struct realm_err *err) {
    struct realm_sched_params p = {.max_batch_tokens = 64, .prefill_chunk = 32};
    if (params) {
        if (params->max_batch_tokens) p.max_batch_tokens = params->max_batch_tokens;
        if (params->prefill_chunk) p.prefill_chunk = params->prefill_chunk;
        p.tenant_share = params->tenant_share;
        p.contended_prefill = params->contended_prefill;
        p.prefill_reserve = params->prefill_reserve;
        p.max_active = params->max_active;
    }
    if (p.prefill_reserve == 0) /* default: a chunk, but never more than half the step */
        p.prefill_reserve =
            p.prefill_chunk < p.max_batch_tokens / 2 ? p.prefill_chunk : p.max_batch_tokens / 2;
    else if (p.prefill_reserve == -1)
        p.prefill_reserve = 0;
    else if (p.prefill_reserve < 0 || p.prefill_reserve >= p.max_batch_tokens)
        p.prefill_reserve = -2; /* invalid: refused below */
    if (!backend || !backend->forward || !backend->room || backend->n_vocab < 1 ||
        p.max_batch_tokens < 1 || p.prefill_chunk < 1 || p.tenant_share < 0 ||
        p.tenant_share > 4096 || p.contended_prefill < 0 || p.prefill_reserve < 0 ||
        p.max_active < 0)
        return realm_err_set(err, REALM_E_INVALID,
                             "sched: invalid backend or parameters (max_batch_tokens %d, "
                             "prefill_chunk %d, tenant_share %d, contended_prefill %d, "
                             "prefill_reserve %d, max_active %d)",
                             p.max_batch_tokens, p.prefill_chunk, p.tenant_share,
                             p.contended_prefill, params ? params->prefill_reserve : 0,
                             p.max_active);
    struct realm_sched *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
    s->be = *backend;
    s->p = p;
    s->drr_fresh[0] = s->drr_fresh[1] = true;
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
    const double t_called = realm_now_s();
    const bool prompt = n > 1;
    /* a sequence that has not started waits here while max_active run (nothing attached yet) */
    int rc = admission_enter(s, tenant, session, len0, cancel, err);
    if (rc) return rc;
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
                    .prompt = prompt,
                    .t_called = t_called,
                    .err = err};
    pthread_cond_init(&r.cv, NULL);
    pthread_mutex_lock(&s->mu);
    struct tenant_q *t = s->stopping ? NULL : tenant_get(s, tenant);
    if (!t) {
        bool stopping = s->stopping;
        admission_leave(s, session);
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
    admission_leave(s, session);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r.cv);
    /* A finished request is in no step (finish happens between forwards), so the session is
     * this thread's again: rewinding gives back the chunks that ran, the room the step reserved
     * for a failed forward, and the prefix attached above. */
    if (r.status != REALM_OK && undo) s->be.rewind(s->be.ctx, session, len0);
    return r.status;
}

/* As realm_sched_decode, but every row asks for its hidden state and none for logits, and no
 * cached prefix is attached (a skipped token would have no state). */
int realm_sched_embed(struct realm_sched *s, uint32_t tenant, struct realm_session *session,
                      const int32_t *tokens, int32_t n, float *states, const atomic_bool *cancel,
                      struct realm_err *err) {
    if (s->be.n_embd < 1)
        return realm_err_set(err, REALM_E_INVALID, "sched: this backend gives no hidden states");
    if (n < 1 || !tokens || !session || !states)
        return realm_err_set(err, REALM_E_INVALID, "sched: embedding of %d tokens", n);
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
    const bool undo = s->be.len && s->be.rewind;
    const int32_t len0 = undo ? s->be.len(s->be.ctx, session) : -1;
    struct req r = {.tenant = tenant,
                    .session = session,
                    .tokens = tokens,
                    .n = n,
                    .embd = states,
                    .cancel = cancel,
                    .err = err};
    pthread_cond_init(&r.cv, NULL);
    pthread_mutex_lock(&s->mu);
    struct tenant_q *t = s->stopping ? NULL : tenant_get(s, tenant);
    if (!t) {
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&r.cv);
        return stopping ? realm_err_set(err, REALM_E_CANCELLED, "sched: scheduler stopped")
                        : realm_err_set(err, REALM_E_NOMEM, "sched: out of memory");
    }
    enqueue(s, t, &r);
    pthread_cond_signal(&s->cv_work);
    while (!r.finished)
        pthread_cond_wait(&r.cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&r.cv);
    if (r.status != REALM_OK && undo) s->be.rewind(s->be.ctx, session, len0);
    return r.status;
}

static struct realm_sched_tenant_stats tenant_stats_of(const struct tenant_q *t) {
    return (struct realm_sched_tenant_stats){.tenant = t->id,
                                             .queued_requests = t->queued_requests,
                                             .queued_tokens = t->queued_tokens,
                                             .tokens_done = t->tokens_done,
                                             .decode_tokens = t->decode_tokens,
                                             .prefill_tokens = t->prefill_tokens,
                                             .weight = t->weight,
                                             .admission_waiting = t->adm_waiting};
}

void realm_sched_get_stats(struct realm_sched *s, struct realm_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->n_tenants = 0;
    for (int32_t i = 0; i < s->n_tenants && out->n_tenants < REALM_SCHED_MAX_TENANT_STATS; i++) {
        const struct tenant_q *t = &s->tenants[i];
        out->tenants[out->n_tenants++] = tenant_stats_of(t);
    }
    out->active_sequences = s->n_active;
    pthread_mutex_unlock(&s->mu);
}

bool realm_sched_tenant_get_stats(struct realm_sched *s, uint32_t tenant,
                                  struct realm_sched_tenant_stats *out) {
    *out = (struct realm_sched_tenant_stats){.tenant = tenant, .weight = 1};
    pthread_mutex_lock(&s->mu);
    const struct tenant_q *t = NULL;
    uint32_t h = hash_u32(tenant) & (s->index_cap - 1);
    for (; s->index[h] >= 0 && !t; h = (h + 1) & (s->index_cap - 1))
        if (s->tenants[s->index[h]].id == tenant) t = &s->tenants[s->index[h]];
    if (t) *out = tenant_stats_of(t);
    pthread_mutex_unlock(&s->mu);
    return t != NULL;
}

int realm_sched_set_tenant_weight(struct realm_sched *s, uint32_t tenant, int32_t weight) {
    if (weight < 1 || weight > REALM_SCHED_MAX_WEIGHT) return REALM_E_INVALID;
    pthread_mutex_lock(&s->mu);
    struct tenant_q *t = tenant_get(s, tenant);
    if (t) t->weight = weight;
    pthread_mutex_unlock(&s->mu);
    return t ? REALM_OK : REALM_E_NOMEM;
}

void realm_sched_release(struct realm_sched *s, const struct realm_session *session) {
    if (!s || s->p.max_active == 0) return;
    pthread_mutex_lock(&s->mu);
    struct active_seq *a = active_find(s, session);
    if (a) {
        *a = s->active[--s->n_active];
        admit_waiting(s, realm_now_s());
    }
    pthread_mutex_unlock(&s->mu);
}
