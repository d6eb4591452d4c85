/*
 * server.c — the server object and its generation jobs: start-up (tenants, backend, worker pool,
 * HTTP), admission into a bounded queue, the worker threads that run each job in its tenant's
 * guest, the emit path that hands text to the HTTP side, and graceful shutdown (stop accepting,
 * let in-flight jobs finish within the grace period, cancel the rest, join everything).
 *
 * Thread rule: realm_server_* are called by one controlling thread. Jobs are shared by a
 * connection thread, a worker and (streams) MHD's content reader, counted by refs; each job's
 * mu/cv guard its output state. The queue is under qmu, the live list under live_mu.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/status.h"
#include "server/srv.h"

/* emitted stream text the client has not taken yet: past this the guest's emit waits for the
 * reader (and gives up after stream_stall_s). Small on purpose: socket buffers already hold a
 * few hundred KiB, so a client that stops reading is noticed here within stream_stall_s. */
#define MAX_PENDING_BYTES (64u << 10)
#define STACK_KEEP (64u << 10) /* stack kept below a worker's idle frame (release_unused_stack) */
#define TRIM_EVERY_S 1.0       /* how often an idle worker looks for grown idle instances */

/* ---- jobs ---- */

static void job_free(struct srv_job *j) {
    /* the last reference goes when both the guest and the HTTP response are done: only then is
     * the tenant's concurrency slot free again (a stalled stream holds it until it is cut) */
    if (j->holds_slot) srv_tenant_slot_release(j->tenant);
    srv_request_free(&j->req);
    realm_buf_free(&j->pending);
    realm_buf_free(&j->sse);
    realm_free(j->lp);
    realm_free(j->tool_calls);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    realm_free(j);
}

void srv_job_count_stall(struct srv_job *j) {
    if (!atomic_exchange(&j->stalled, true)) atomic_fetch_add(&j->srv->metrics.stalled, 1);
}

void srv_job_unref(struct srv_job *j) {
    if (j && atomic_fetch_sub(&j->refs, 1) == 1) job_free(j);
}

/* The guest's emit: runs on the worker thread. Applies back-pressure when a streaming client
 * reads slower than the guest writes (waits, checking for cancellation) so memory stays bounded. */
static int job_emit(void *user, const char *text, size_t len) {
    struct srv_job *j = user;
    if (atomic_load(&j->sreq.cancel)) return REALM_E_CANCELLED;
    if (len == 0) return REALM_OK;
    pthread_mutex_lock(&j->mu);
    /* a non-streamed answer accumulates here until the end (the sandbox's max_output_bytes caps
     * it); a stream is drained by its reader, so a slow reader makes the guest wait */
    double wait_start = 0;
    while (j->req.stream && j->pending.len > MAX_PENDING_BYTES && !atomic_load(&j->sreq.cancel)) {
        /* the reader took nothing for stream_stall_s: the client stalled, so the request gives its
         * worker and KV back instead of waiting on it (the HTTP side's timer closes the socket) */
        double now = realm_now_s();
        if (wait_start == 0)
            wait_start = now;
        else if (now - wait_start > j->srv->cfg->stream_stall_s) {
            realm_sbx_request_cancel(&j->sreq);
            srv_job_count_stall(j);
            break;
        }
        struct timespec ts;
        realm_deadline_after(&ts, 0.05);
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    if (atomic_load(&j->sreq.cancel)) {
        pthread_mutex_unlock(&j->mu);
        return REALM_E_CANCELLED;
    }
    int rc = j->req.n > 1 ? srv_choice_record_append(&j->pending, j->sreq.choice, text, len)
                          : realm_buf_append(&j->pending, text, len);
    if (rc == REALM_OK && !j->any_output) {
        j->any_output = true;
        j->t_first = realm_now_s();
        srv_hist_observe(&j->srv->metrics.ttft, j->t_first - j->t_admit);
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* The guest's logprobs() record (worker thread): kept for the response, at most one per token
 * the request may generate (a guest cannot grow the host's memory past that). */
static int job_logprobs(void *user, const struct realm_tokenizer *tok, const int32_t *ids,
                        const float *lps, int32_t n) {
    struct srv_job *j = user;
    if (!j->req.logprobs) return REALM_OK; /* not asked for: dropped */
    int rc = REALM_OK;
    pthread_mutex_lock(&j->mu);
    size_t cap_records =
        (size_t)(j->req.max_tokens > 0 ? j->req.max_tokens : j->srv->cfg->default_max_tokens) + 1;
    if (j->lp_len >= cap_records) {
        rc = REALM_E_LIMIT;
    } else if (j->lp_len == j->lp_cap) {
        size_t cap = j->lp_cap ? j->lp_cap * 2 : 64;
        if (cap > cap_records) cap = cap_records;
        struct srv_logprob *p = realm_realloc(j->lp, cap * sizeof *p);
        if (!p)
            rc = REALM_E_NOMEM;
        else
            j->lp = p, j->lp_cap = cap;
    }
    if (rc == REALM_OK) {
        struct srv_logprob *r = &j->lp[j->lp_len++];
        r->tok = tok;
        r->n = n;
        memcpy(r->ids, ids, (size_t)n * sizeof *ids);
        memcpy(r->lps, lps, (size_t)n * sizeof *lps);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* The guest's tool_calls() report (worker thread, at most once): kept for the response, which
 * then carries message.tool_calls and finish_reason "tool_calls". Only chats that offered tools
 * take one. */
static int job_tool_calls(void *user, const char *json, size_t len) {
    struct srv_job *j = user;
    if (j->req.kind != SRV_CHAT || !j->req.tools) return REALM_E_STATE;
    char *copy = realm_strndup(json, len);
    if (!copy) return REALM_E_NOMEM;
    pthread_mutex_lock(&j->mu);
    realm_free(j->tool_calls);
    j->tool_calls = copy;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return REALM_OK;
}

static void live_remove(struct realm_server *s, struct srv_job *j) {
    pthread_mutex_lock(&s->live_mu);
    if (j->lprev)
        j->lprev->lnext = j->lnext;
    else
        s->live = j->lnext;
    if (j->lnext) j->lnext->lprev = j->lprev;
    j->lprev = j->lnext = NULL;
    s->n_live--;
    pthread_cond_broadcast(&s->live_cv);
    pthread_mutex_unlock(&s->live_mu);
}

void srv_reply_done(struct realm_server *s) {
    pthread_mutex_lock(&s->live_mu);
    s->n_replying--;
    pthread_cond_broadcast(&s->live_cv);
    pthread_mutex_unlock(&s->live_mu);
}

static void run_job(struct realm_server *s, struct srv_job *j) {
    struct srv_metrics *m = &s->metrics;
    atomic_fetch_sub(&m->queued, 1);
    atomic_fetch_add(&m->running, 1);
    double t0 = realm_now_s();
    srv_hist_observe(&m->queue_wait, t0 - j->t_admit);
    pthread_mutex_lock(&j->mu);
    j->t_start = t0;
    j->started = true;
    pthread_mutex_unlock(&j->mu);

    struct srv_gen_result res;
    if (atomic_load(&j->sreq.cancel)) {
        memset(&res, 0, sizeof res);
        res.status = REALM_E_CANCELLED;
        res.guest_prompt_tokens = res.guest_completion_tokens = res.finish_reason = -1;
        snprintf(res.message, sizeof res.message, "cancelled before it started");
    } else {
        srv_backend_generate(s->backend, j->tenant->index, &j->sreq, &res);
    }
    double t1 = realm_now_s();

    /* the host's measurement, whatever the outcome (the backend never lets the guest lower it) */
    int64_t pin = res.prompt_tokens > 0 ? res.prompt_tokens : 0;
    int64_t pout = res.completion_tokens > 0 ? res.completion_tokens : 0;
    struct srv_tenant_stats *ts = &j->tenant->st;
    atomic_fetch_add(&m->tokens_in, pin);
    atomic_fetch_add(&m->tokens_out, pout);
    atomic_fetch_add(&ts->prompt_tokens, pin);
    atomic_fetch_add(&ts->completion_tokens, pout);
    if (res.status == REALM_OK)
        atomic_fetch_add(&ts->succeeded, 1);
    else if (res.status == REALM_E_CANCELLED) {
        atomic_fetch_add(&ts->cancelled, 1);
        atomic_fetch_add(&m->cancelled, 1);
    } else
        atomic_fetch_add(&ts->failed, 1);
    srv_hist_observe(&m->duration, t1 - j->t_admit);
    srv_tenant_settle(j->tenant, j->reserved, pin + pout);
    /* durable before the client hears the outcome, so the ledger never lags what clients saw */
    if (s->state) srv_state_record(s, j, res.status, pin, pout, t1 - t0);

    pthread_mutex_lock(&j->mu);
    j->result = res;
    j->t_end = t1;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);

    atomic_fetch_sub(&m->running, 1);
    atomic_fetch_sub(&m->active, 1);
    if (res.status != REALM_OK && res.status != REALM_E_CANCELLED)
        realm_log(REALM_LOG_INFO, "server", "request %s (tenant %s) failed: %s: %s", j->id,
                  j->tenant->spec->id, realm_strerror(res.status), res.message);
    live_remove(s, j);
    srv_job_unref(j); /* the worker's reference */
}

/* Idle workers give back what idle guest instances grew (srv_backend_trim_idle) and, once no
 * request is running, the free heap pages malloc keeps (a request's large buffers — a 16 MiB
 * answer, a guest's instance — would otherwise stay resident in glibc's arenas). Not while
 * requests run: malloc_trim walks whole arenas holding their locks, a stall for everyone. */
static void trim_idle(struct realm_server *s, bool all_idle) {
    bool freed = srv_backend_trim_idle(s->backend) > 0;
    if (all_idle && (atomic_exchange(&s->ran_since_trim, false) || freed)) malloc_trim(0);
}

/* The lowest address of the calling thread's stack that may be given back (above the guard). */
static char *own_stack_floor(void) {
    pthread_attr_t a;
    void *addr = NULL;
    size_t size = 0, guard = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0) return NULL;
    pthread_attr_getstack(&a, &addr, &size);
    pthread_attr_getguardsize(&a, &guard);
    pthread_attr_destroy(&a);
    return addr ? (char *)addr + guard : NULL;
}

/* Gives back the stack pages below the current frame (less a margin): a guest that recursed
 * to Wasmtime's stack limit (up to max_wasm_stack, 512 KiB) would otherwise leave them resident
 * on this worker for good. Only the calling thread's own, unused stack is touched. */
static void release_unused_stack(char *floor) {
    if (!floor) return;
    char here;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)floor + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)&here - STACK_KEEP) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static void *worker_main(void *arg) {
    struct realm_server *s = arg;
    char *stack_floor = own_stack_floor();
    for (;;) {
        pthread_mutex_lock(&s->qmu);
        while (!s->qhead && !s->stop_workers) {
            struct timespec ts;
            realm_deadline_after(&ts, TRIM_EVERY_S);
            if (pthread_cond_timedwait(&s->qcv, &s->qmu, &ts) == ETIMEDOUT &&
                realm_now_s() - s->last_trim >= TRIM_EVERY_S) {
                s->last_trim = realm_now_s(); /* one idle worker per period does it */
                bool all_idle = s->n_idle == s->n_workers && !s->qhead;
                pthread_mutex_unlock(&s->qmu);
                trim_idle(s, all_idle);
                pthread_mutex_lock(&s->qmu);
            }
        }
        struct srv_job *j = s->qhead;
        if (!j) { /* stopping and nothing left */
            pthread_mutex_unlock(&s->qmu);
            return NULL;
        }
        s->qhead = j->qnext;
        if (!s->qhead) s->qtail = NULL;
        s->qlen--;
        s->n_idle--;
        pthread_mutex_unlock(&s->qmu);
        run_job(s, j);
        release_unused_stack(stack_floor);
        atomic_store(&s->ran_since_trim, true);
        pthread_mutex_lock(&s->qmu);
        s->n_idle++;
        pthread_mutex_unlock(&s->qmu);
    }
}

static void make_id(char *out, size_t cap, const char *prefix) {
    unsigned char r[12];
    static _Atomic uint64_t counter;
    if (RAND_bytes(r, sizeof r) != 1) { /* ids need uniqueness, not secrecy */
        uint64_t c = atomic_fetch_add(&counter, 1) ^ (uint64_t)time(NULL) << 20;
        memcpy(r, &c, 8);
        memset(r + 8, 0, 4);
    }
    int n = snprintf(out, cap, "%s", prefix);
    for (size_t i = 0; i < sizeof r && (size_t)n + 2 < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%02x", r[i]);
}

int srv_job_submit(struct realm_server *s, struct srv_tenant *t, int64_t reserved,
                   struct srv_request *req, int fd, struct srv_job **out, struct srv_error *e) {
    struct srv_job *j = realm_calloc(1, sizeof *j);
    if (!j) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    atomic_init(&j->refs, 2); /* the caller's and the worker's */
    j->srv = s;
    j->tenant = t;
    j->reserved = reserved;
    j->fd = fd;
    j->created = srv_unix_time();
    j->t_admit = realm_now_s();
    make_id(j->id, sizeof j->id, req->kind == SRV_CHAT ? "chatcmpl-" : "cmpl-");
    pthread_mutex_init(&j->mu, NULL);
    realm_cond_init_monotonic(&j->cv);
    j->req = *req;
    realm_sbx_request_init(&j->sreq, j->req.guest_json, j->req.guest_len, job_emit, j);
    j->sreq.logprobs = job_logprobs;
    j->sreq.tool_calls = job_tool_calls;
    j->sreq.n_choices = j->req.n;

    /* draining is checked under live_mu so that shutdown's "no live jobs" is final */
    pthread_mutex_lock(&s->live_mu);
    if (atomic_load(&s->draining)) {
        pthread_mutex_unlock(&s->live_mu);
        goto busy_draining;
    }
    pthread_mutex_lock(&s->qmu);
    if (s->qlen - s->n_idle >= s->cfg->max_queue) {
        pthread_mutex_unlock(&s->qmu);
        pthread_mutex_unlock(&s->live_mu);
        atomic_fetch_add(&s->metrics.rejected_busy, 1);
        /* no figures: how busy the server is says something about other tenants */
        srv_error_set(e, 503, "server_error", "server_overloaded", NULL,
                      "The server is at capacity; retry shortly.");
        e->retry_after = 1;
        goto fail;
    }
    j->lnext = s->live;
    if (s->live) s->live->lprev = j;
    s->live = j;
    s->n_live++;
    s->n_replying++;
    atomic_fetch_add(&s->metrics.active, 1);
    atomic_fetch_add(&s->metrics.queued, 1);
    if (s->qtail)
        s->qtail->qnext = j;
    else
        s->qhead = j;
    s->qtail = j;
    s->qlen++;
    pthread_cond_signal(&s->qcv);
    j->holds_slot = true; /* from here on the job gives the tenant's slot back when freed */
    pthread_mutex_unlock(&s->qmu);
    pthread_mutex_unlock(&s->live_mu);
    *out = j;
    return 0;

busy_draining:
    srv_error_set(e, 503, "server_error", "server_shutting_down", NULL,
                  "The server is shutting down.");
    e->retry_after = 1;
fail:
    j->req.guest_json = NULL; /* the request stays the caller's */
    atomic_store(&j->refs, 1);
    srv_job_unref(j);
    return -1;
}

/* ---- the server ---- */

int realm_server_start(const struct realm_server_config *cfg, struct realm_server **out,
                       struct realm_err *err) {
    int rc = realm_server_config_check(cfg, err);
    if (rc) return rc;
    struct realm_server *s = realm_calloc(1, sizeof *s);
    if (!s) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    s->cfg = cfg;
    s->listen_fd = -1;
    s->t_start = realm_now_s();
    pthread_mutex_init(&s->qmu, NULL);
    realm_cond_init_monotonic(&s->qcv); /* the workers' idle waits are timed (trim_idle) */
    pthread_mutex_init(&s->live_mu, NULL);
    realm_cond_init_monotonic(&s->live_cv);
    if ((rc = srv_tenants_init(&s->tenants, cfg, err))) goto fail;
    s->n_tenants = cfg->n_tenants;
    s->cap_tenants = cfg->state_dir ? (size_t)cfg->max_tenants : cfg->n_tenants;
    s->admin_keys = realm_calloc(cfg->n_admin_keys ? cfg->n_admin_keys : 1, sizeof *s->admin_keys);
    if (!s->admin_keys) {
        rc = realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_admin_keys; i++, s->n_admin_keys++)
        if (srv_hex_decode32(cfg->admin_key_hashes[i], s->admin_keys[i])) {
            rc = realm_err_set(err, REALM_E_INVALID, "server: malformed admin key hash");
            goto fail;
        }
    if ((rc = srv_backend_new(cfg, &s->backend, err))) goto fail;
    if (cfg->state_dir && (rc = srv_state_open(s, err))) goto fail;

    s->workers = realm_calloc((size_t)cfg->max_inflight, sizeof *s->workers);
    if (!s->workers) {
        rc = realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->max_inflight; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        /* guest code runs on this thread's stack (Wasmtime's max_wasm_stack, 512 KiB by default,
         * plus the host imports under it); only the pages touched become resident */
        pthread_attr_setstacksize(&attr, 4u << 20);
        int e = pthread_create(&s->workers[i], &attr, worker_main, s);
        pthread_attr_destroy(&attr);
        if (e) {
            rc = realm_err_set(err, REALM_E_INTERNAL, "server: cannot start worker thread: %s",
                               strerror(e));
            goto fail;
        }
        pthread_mutex_lock(&s->qmu);
        s->n_workers++;
        s->n_idle++;
        pthread_mutex_unlock(&s->qmu);
    }
    if ((rc = http_start(s, err))) goto fail;
    *out = s;
    return REALM_OK;
fail:
    realm_server_free(s);
    return rc;
}

uint16_t realm_server_port(const struct realm_server *s) {
    return s->port;
}

void realm_server_shutdown(struct realm_server *s) {
    if (!s || s->shut) return;
    s->shut = true;
    pthread_mutex_lock(&s->live_mu);
    atomic_store(&s->draining, true);
    pthread_mutex_unlock(&s->live_mu);
    http_quiesce(s);

    /* let in-flight requests finish and their responses reach the client for up to the grace
     * period, then cancel what still runs */
    struct timespec deadline;
    realm_deadline_after(&deadline, s->cfg->shutdown_grace_s);
    pthread_mutex_lock(&s->live_mu);
    while ((s->n_live > 0 || s->n_replying > 0) &&
           pthread_cond_timedwait(&s->live_cv, &s->live_mu, &deadline) != ETIMEDOUT) {
    }
    if (s->n_live > 0) {
        realm_log(REALM_LOG_WARN, "server", "shutdown: cancelling %lld request(s) still running",
                  (long long)s->n_live);
        for (struct srv_job *j = s->live; j; j = j->lnext)
            realm_sbx_request_cancel(&j->sreq);
    }
    while (s->n_live > 0)
        pthread_cond_wait(&s->live_cv, &s->live_mu);
    pthread_mutex_unlock(&s->live_mu);

    http_stop(s); /* closes connections, joins their threads */

    pthread_mutex_lock(&s->qmu);
    s->stop_workers = true;
    pthread_cond_broadcast(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    s->n_workers = 0;
}

void realm_server_free(struct realm_server *s) {
    if (!s) return;
    realm_server_shutdown(s);
    realm_free(s->workers);
    srv_backend_free(s->backend);
    srv_state_free(s->state); /* after the backend: pools borrow the specs it keeps */
    srv_tenants_free(s->tenants, s->n_tenants);
    realm_free(s->admin_keys);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->qcv);
    pthread_mutex_destroy(&s->live_mu);
    pthread_cond_destroy(&s->live_cv);
    realm_free(s);
}
