/*
 * sched.h — continuous batching across sessions and tenants.
 *
 * Any number of threads (one per running guest) call realm_sched_decode, which queues their
 * tokens and blocks. One scheduler thread runs steps: each step takes up to max_batch_tokens rows
 * — first one decode row per session that has a single token pending (round-robin between
 * tenants, so a tenant with 50 sessions cannot starve a tenant with 1), then prefill in chunks of
 * at most prefill_chunk tokens per request (round-robin too) — runs ONE batched forward over all
 * of them, writes each finished request's logits into its caller's buffer and wakes it. A step
 * starts as soon as work exists; an idle scheduler sleeps on a condition variable.
 *
 * Thread rule: realm_sched_decode may be called from any thread, concurrently; a session must
 * not be in two decode calls at once (REALM_E_STATE). realm_sched_free must not race with decode
 * callers (stop the callers first; pending calls then fail with REALM_E_CANCELLED).
 */
#ifndef REALM_SCHED_H
#define REALM_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/model.h"

struct realm_sched;

/* What the scheduler drives: by default an engine (realm_sched_backend_engine); tests inject
 * their own. forward has realm_engine_forward's contract; room gives the positions a session
 * still has; n_vocab the logits width. */
struct realm_sched_backend {
    void *ctx;
    int (*forward)(void *ctx, const struct realm_batch_row *rows, int32_t n_rows,
                   struct realm_err *err);
    int32_t (*room)(void *ctx, const struct realm_session *s);
    int32_t n_vocab;
    /* Optional (NULL: not used). reserve: make room for k more tokens of s before they join a
     * step; a refusal (e.g. REALM_E_KV_FULL) fails that request alone, the step goes on without
     * it. attach: on a request for an empty session, how many leading tokens are already cached
     * (prefix reuse) and need not run (at most n - 1). */
    int (*reserve)(void *ctx, struct realm_session *s, int32_t k, struct realm_err *err);
    int32_t (*attach)(void *ctx, struct realm_session *s, const int32_t *tokens, int32_t n);
    /* Optional (NULL: a failed decode keeps what already ran). len: tokens the session holds;
     * rewind: keep its first n_keep tokens and give back everything past them (reserved room,
     * attached prefix blocks). With both, a failed realm_sched_decode rewinds the session to
     * where the call found it. */
    int32_t (*len)(void *ctx, const struct realm_session *s);
    int (*rewind)(void *ctx, struct realm_session *s, int32_t n_keep);
};

/* The backend of an engine over model m (both borrowed; must outlive the scheduler). */
struct realm_sched_backend realm_sched_backend_engine(struct realm_engine *e,
                                                      const struct realm_model *m);

struct realm_sched_params {
    int32_t max_batch_tokens; /* rows per step (≤ the engine's max_batch); default 64 */
    int32_t prefill_chunk;    /* prefill tokens per request per step; default 32 */
    /* Per-tenant share of a contended step: while more than one tenant has work queued, one
     * tenant puts at most this many requests (decode rows or prefill chunks) in a step, so a
     * tenant's many concurrent requests share its turn instead of lengthening every step for
     * the others. A tenant alone is never capped. 0: no cap (one request per tenant per
     * round-robin pass until the step is full). */
    int32_t tenant_share;
    /* Prefill rows a step may carry in all while more than one tenant has work (decode rows are
     * not counted): bounds how much one tenant's prompt lengthens the steps every other tenant's
     * next token waits for, at the price of slower prefill under contention. 0: no cap. */
    int32_t contended_prefill;
};

/* Starts the scheduler thread. Ownership: returns owned (*out; realm_sched_free).
 * Errors: REALM_E_INVALID (bad params), REALM_E_NOMEM, REALM_E_INTERNAL (thread creation). */
int realm_sched_new(const struct realm_sched_backend *backend,
                    const struct realm_sched_params *params, struct realm_sched **out,
                    struct realm_err *err);
/* Stops the thread; queued requests fail with REALM_E_CANCELLED. NULL is a no-op. */
void realm_sched_free(struct realm_sched *s);

/* Appends tokens[0..n) to the session through batched steps and writes the logits of the last
 * token (n_vocab floats) to `logits` (may be NULL). Blocks until done. `tenant` groups requests
 * for fairness. `cancel` (may be NULL) is polled at every step: once set, the request's
 * remaining tokens are dropped and REALM_E_CANCELLED returned.
 * A failed call leaves the session as it found it when the backend has len and rewind (the
 * engine's does): prefill chunks that already ran, a prefix attached by this call and room
 * reserved for it are given back. Without them, chunks already run stay in the session. The
 * content of `logits` is unspecified after a failure.
 * Errors: REALM_E_INVALID (n < 1, token out of vocab), REALM_E_CONTEXT_FULL (checked before any
 * token is queued), REALM_E_STATE (session already busy), REALM_E_CANCELLED, REALM_E_KV_FULL
 * (the backend's reserve refused room), REALM_E_NOMEM, or the backend's error (a failed step
 * fails every request in it). */
int realm_sched_decode(struct realm_sched *s, uint32_t tenant, struct realm_session *session,
                       const int32_t *tokens, int32_t n, float *logits, const atomic_bool *cancel,
                       struct realm_err *err);

/* ---- observability ---- */
/* batch rows: 1, 2, ≤4, ≤8, ≤16, ≤32, ≤64, ≤128, ≤256, more */
#define REALM_SCHED_HIST_BUCKETS 10
#define REALM_SCHED_MAX_TENANT_STATS 64

struct realm_sched_tenant_stats {
    uint32_t tenant;
    int64_t queued_requests; /* now */
    int64_t queued_tokens;   /* now */
    int64_t tokens_done;     /* total */
};

struct realm_sched_stats {
    int64_t steps;
    int64_t rows; /* total rows run */
    int64_t decode_rows;
    int64_t prefill_rows;
    int64_t requests_done;
    int64_t requests_failed;
    int64_t requests_cancelled;
    int64_t requests_refused; /* refused room by the backend's reserve (KV full) */
    int64_t prefix_tokens;    /* tokens skipped because the backend had them cached */
    int64_t queue_depth;      /* requests waiting now */
    int64_t batch_hist[REALM_SCHED_HIST_BUCKETS];
    double busy_seconds; /* time inside forward */
    int n_tenants; /* entries used in tenants[] (the first REALM_SCHED_MAX_TENANT_STATS seen) */
    struct realm_sched_tenant_stats tenants[REALM_SCHED_MAX_TENANT_STATS];
};

/* A consistent snapshot of the counters. */
void realm_sched_get_stats(struct realm_sched *s, struct realm_sched_stats *out);

#endif
