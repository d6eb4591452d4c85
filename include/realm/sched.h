/*
 * sched.h — continuous batching across sessions and tenants.
 *
 * Any number of threads (one per running guest) call realm_sched_decode, which queues their
 * tokens and blocks. One scheduler thread runs steps: each step has a budget of max_batch_tokens
 * rows, filled in three phases —
 *   1. decode rows (requests with a single token pending), but while any prompt waits at most
 *      the budget less prefill_reserve rows, so decode rows can never fill a step a prompt waits
 *      for; those that do not fit stay queued in front and go first in the next step, so every
 *      running session progresses in turn;
 *   2. prompt chunks (at most prefill_chunk tokens of one request) into the rest;
 *   3. decode rows into what prompts left —
 * then runs ONE batched forward over all of them, writes each finished request's logits into its
 * caller's buffer and wakes it. A step starts as soon as work exists; an idle scheduler sleeps.
 *
 * Tenants share each phase by deficit round robin by tokens: a tenant's turn gives it
 * weight × quantum tokens of credit (decode: 1 row; prompts: prefill_chunk rows, at most the
 * step's contended_prefill cap), it adds its oldest requests while the credit lasts, and a turn
 * cut short by the end of a step goes on in the next one — so tenants that keep work queued get
 * tokens in proportion to their weights (realm_sched_set_tenant_weight; default 1), whatever their
 * number of sessions. Within a tenant, requests go in arrival order.
 *
 * Time to first logits (the bound). Let c = prefill_chunk and R = the reserve of a step
 * (prefill_reserve; in a contended step at most contended_prefill). A request of P > 1 tokens
 * whose tenant has Q prompt tokens queued before it, while no other tenant has a prompt queued,
 * gets its logits within
 *       ceil((Q + P) / R) + ceil(P / c)   steps that start after it is queued
 * (each step either gives R rows to it and the prompts before it, or a whole chunk to it),
 * however many decode rows are queued. A step already running when it is queued adds one. With
 * other tenants' prompts queued, of total weight W beside the tenant's weight w, the tenant gets
 * at least w / (w + W) of the reserve per round: read R as R·w/(w + W) and add one step per
 * tenant for the rounds' edges. With tenant_share s in a contended step, a tenant adds at most
 * s·w requests a step and its decode rows take them first (so that a flooding tenant's prompts
 * do not lengthen every other tenant's steps): the bound holds for a tenant with fewer than s·w
 * sessions decoding (read R as at most (s·w − decoding)·c), and a tenant with more waits for its
 * own streams. Time spent in the admission queue (below) comes before this count.
 * realm_sched_stats.prompt_steps_max reports the largest count seen.
 *
 * Admission (max_active > 0): a request on a session the scheduler has not started — its first
 * request, when the backend's len says it is empty (without len: any session not counted) — waits
 * in an admission queue while max_active sequences are running, before anything of it runs, a
 * prefix is attached or room reserved. The queue admits in arrival order within a tenant and by
 * weighted fair order across tenants (each admission advances a tenant's virtual time by 1 /
 * weight). A sequence stops counting when realm_sched_release is called for its session, or when it
 * has had no request for REALM_SCHED_LEASE_S (a session freed without a release must not hold its
 * slot for good). Requests on sessions that already hold tokens never wait (their KV is already
 * taken).
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
    /* Optional (0: realm_sched_embed refuses): the width of a row's hidden state (n_embd). */
    int32_t n_embd;
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
    /* Rows of each step that prompt chunks take before decode rows while a prompt waits (see the
     * bound above). 0: min(prefill_chunk, max_batch_tokens / 2); -1: none (decode rows first, as
     * before: a prompt may then wait as long as decode rows fill the steps). Below
     * max_batch_tokens. The tenant_share cap applies as weight × tenant_share. */
    int32_t prefill_reserve;
    /* Sequences running at once; requests for more wait in the admission queue (see above).
     * 0: no limit, every request starts at once. */
    int32_t max_active;
};

#define REALM_SCHED_MAX_WEIGHT 10000
#define REALM_SCHED_LEASE_S 1.0 /* an admitted session with no request this long stops counting */

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

/* Sets the weight of `tenant` (the id passed to realm_sched_decode) in every step's deficit round
 * robin and in the admission order: tenants that keep work queued get tokens in proportion to
 * their weights. Default 1; takes effect from the next step. Any thread.
 * Errors: REALM_E_INVALID (weight outside 1..REALM_SCHED_MAX_WEIGHT), REALM_E_NOMEM. */
int realm_sched_set_tenant_weight(struct realm_sched *s, uint32_t tenant, int32_t weight);

/* The sequence on `session` ended (the caller is about to free or reuse the session): its
 * admission slot goes to the next queued request at once. A session the scheduler does not count
 * is ignored. Must not race with a decode call on the same session. Any thread. */
void realm_sched_release(struct realm_sched *s, const struct realm_session *session);

/* ---- embeddings ---- */

/* Runs tokens[0..n) through the model on `session` in batched steps shared with every other
 * caller (the same queue, fairness and chunking as realm_sched_decode) and writes the hidden state
 * after the final norm of token i to states + i * n_embd (n * n_embd floats in all; n_embd is the
 * backend's). No logits are computed, and no cached prefix is attached: every token runs, so its
 * state is the model's own. Blocks until done; `cancel` as for realm_sched_decode. The session
 * keeps the tokens (free or rewind it after); a failed call rewinds it as realm_sched_decode does.
 * Each state is bit-identical to the same tokens run alone, whatever shares the steps.
 * Ownership: borrows everything for the call. Errors: REALM_E_INVALID (n < 1, NULL states, token
 * out of vocab, a backend without n_embd), REALM_E_CONTEXT_FULL, REALM_E_CANCELLED,
 * REALM_E_KV_FULL, REALM_E_NOMEM, or the backend's error. */
int realm_sched_embed(struct realm_sched *s, uint32_t tenant, struct realm_session *session,
                      const int32_t *tokens, int32_t n, float *states, const atomic_bool *cancel,
                      struct realm_err *err);

enum realm_pooling {
    REALM_POOLING_MEAN = 0, /* the mean of every token's state */
    REALM_POOLING_LAST = 1, /* the last token's state (causal models: it has seen them all) */
};

/* Pools n token states (row i at states + i * width) into out[0..width) — summed in token order in
 * double, so the result depends only on the states — then scales out to unit L2 norm when
 * `normalize` (a zero vector stays zero). Returns REALM_OK, or REALM_E_INVALID (n < 1, width < 1,
 * an unknown pooling, NULL pointers; out is then untouched). Any thread. */
int realm_embed_pool(const float *states, int32_t n, int32_t width, enum realm_pooling pooling,
                     bool normalize, float *out);

/* ---- observability ---- */
/* batch rows: 1, 2, ≤4, ≤8, ≤16, ≤32, ≤64, ≤128, ≤256, more */
#define REALM_SCHED_HIST_BUCKETS 10
#define REALM_SCHED_MAX_TENANT_STATS 64

struct realm_sched_tenant_stats {
    uint32_t tenant;
    int64_t queued_requests; /* now */
    int64_t queued_tokens;   /* now */
    int64_t tokens_done;     /* total */
    int64_t decode_tokens;   /* total, of tokens_done */
    int64_t prefill_tokens;  /* total, of tokens_done */
    int32_t weight;
    int64_t admission_waiting; /* now */
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
    /* admission (max_active > 0) */
    int64_t admission_waiting;     /* requests in the admission queue now */
    int64_t active_sequences;      /* sequences counted against max_active now */
    int64_t admitted;              /* requests admitted as new sequences, total */
    double admission_wait_seconds; /* their time in the admission queue, summed */
    double admission_wait_max_s;   /* the longest of those waits */
    /* time to first logits: requests of more than one token (prompts), counted when done */
    int64_t prompts_done;
    int64_t prompt_steps_total;  /* steps from queued (after admission) to logits, summed */
    int64_t prompt_steps_max;    /* the most steps one of them waited (see the bound above) */
    double prompt_seconds_total; /* from the call (admission included) to logits, summed */
    int64_t batch_hist[REALM_SCHED_HIST_BUCKETS];
    double busy_seconds; /* time inside forward */
    int n_tenants; /* entries used in tenants[] (the first REALM_SCHED_MAX_TENANT_STATS seen) */
    struct realm_sched_tenant_stats tenants[REALM_SCHED_MAX_TENANT_STATS];
};

/* A consistent snapshot of the counters. */
void realm_sched_get_stats(struct realm_sched *s, struct realm_sched_stats *out);
/* The counters of one tenant (any number of tenants, unlike stats.tenants[]); false (and *out
 * zeroed, weight 1) for a tenant the scheduler has not seen. */
bool realm_sched_tenant_get_stats(struct realm_sched *s, uint32_t tenant,
                                  struct realm_sched_tenant_stats *out);

#endif
