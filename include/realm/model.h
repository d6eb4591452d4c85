/*
 * model.h — the native compute engine: model configuration and weights over a GGUF mapping,
 * per-session KV caches, and the batched forward pass.
 *
 * A realm_model borrows its realm_gguf (weights are views into the mapping): the gguf must
 * outlive the model. A realm_engine owns a thread pool and the scratch buffers of one batched
 * forward (sized for max_batch rows at creation: no allocation inside a step).
 *
 * Thread rule: realm_model is immutable after load and shared by every user. A realm_session is
 * used by one thread at a time. realm_engine_forward is called by one thread at a time per
 * engine (the scheduler); it fans the work out to the engine's pool.
 */
#ifndef REALM_MODEL_H
#define REALM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/gguf.h"

enum realm_arch {
    REALM_ARCH_LLAMA = 0,
    REALM_ARCH_QWEN2 = 1,
    REALM_ARCH_GEMMA3 = 2,
    REALM_ARCH_QWEN3 = 3,
    REALM_ARCH_PHI3 = 4,
    REALM_ARCH_GEMMA2 = 5,
};

/* The longest context a model gets: a file's context_length above it is capped to it (with a
 * warning in the log), since engines keep per-thread scratch for n_ctx_train positions. */
#define REALM_MODEL_MAX_CTX (1 << 20)

struct realm_model_config {
    enum realm_arch arch;
    const char *arch_name; /* "llama", "qwen2", "gemma3", "qwen3", "phi3", "gemma2" */
    int32_t n_vocab;
    int32_t n_ctx_train; /* the file's context_length, at most REALM_MODEL_MAX_CTX */
    int32_t n_embd;      /* dim */
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim; /* key/value length per head */
    int32_t n_ff;
    float norm_eps;
    float rope_freq_base;
    float rope_freq_base_local; /* gemma2 / gemma3 sliding-window layers */
    int32_t sliding_window;     /* 0: none */
};

struct realm_model;
struct realm_session;
struct realm_engine;

/* Builds a model over g (borrowed; must outlive the model), checking every tensor's presence,
 * shape and type. Errors: REALM_E_UNSUPPORTED (architecture, tensor type), REALM_E_FORMAT
 * (missing tensor, wrong shape; the message names it), REALM_E_NOMEM. */
int realm_model_load(const struct realm_gguf *g, struct realm_model **out, struct realm_err *err);

struct realm_model_opts {
    /* Repack the weights that have a packed kernel layout (Q4_K, Q6_K with AVX-512) once at load
     * into interleaved 16-row blocks and run every matmul on them; the mapped originals are
     * handed back to the kernel (no extra memory). Measured on TinyLlama-shape Q4_K_M, 2 threads:
     * batched decode of 4 / 16 sessions ~1.7x / ~1.3x faster, single-stream decode ~10-15%
     * slower (the packed Q6_K GEMV streams worse) — so servers with many tenants turn it on,
     * single-stream tools leave it off. Default off. */
    bool prepack;
};
/* realm_model_load with options (NULL: defaults). Errors: as realm_model_load. */
int realm_model_load_opts(const struct realm_gguf *g, const struct realm_model_opts *opts,
                          struct realm_model **out, struct realm_err *err);
/* Frees m (NULL: no-op). Every session, engine and KV pool made for it must be freed first. */
void realm_model_free(struct realm_model *m);
/* The model's shape. Lifetime: m's. Never NULL for a loaded model. */
const struct realm_model_config *realm_model_config(const struct realm_model *m);

/* A session: one sequence's KV cache (f16), n_ctx positions (0 → the model's n_ctx_train),
 * allocated whole here. Ownership: returns owned (*out; realm_session_free before m is freed).
 * Errors: REALM_E_INVALID (n_ctx < 0 or above n_ctx_train), REALM_E_NOMEM. */
int realm_session_new(const struct realm_model *m, int32_t n_ctx, struct realm_session **out,
                      struct realm_err *err);

/* KV cache element type: f16 is the default (as llama.cpp); f32 keeps keys and values exact, for
 * comparisons against float references. */
enum realm_kv_type {
    REALM_KV_F16 = 0,
    REALM_KV_F32 = 1,
};
/* realm_session_new with a chosen KV element type. Errors: as realm_session_new, and
 * REALM_E_INVALID for an unknown kv_type. */
int realm_session_new_kv(const struct realm_model *m, int32_t n_ctx, enum realm_kv_type kv_type,
                         struct realm_session **out, struct realm_err *err);
/* ---- paged sessions (realm/kvpool.h): keys and values in blocks of a shared pool ---- */
struct realm_kv_pool;

/* A pool for this model's sessions: n_layer and the bytes per position from the model, block
 * memory `memory_bytes` in total (blocks of block_tokens positions, 0 → 16), default per-tenant
 * quota in blocks (0 → the whole pool). Ownership: returns owned (*out; realm_kv_pool_free after
 * every session on it). Errors: as realm_kv_pool_new. */
int realm_model_kv_pool_new(const struct realm_model *m, enum realm_kv_type kv_type,
                            size_t memory_bytes, int32_t block_tokens, int32_t default_quota,
                            struct realm_kv_pool **out, struct realm_err *err);
/* Bytes one block of the pool would take (to size --kv-memory in whole blocks); 0 if that
 * overflows size_t. */
size_t realm_model_kv_block_bytes(const struct realm_model *m, enum realm_kv_type kv_type,
                                  int32_t block_tokens);

/* A session of `tenant` whose cache lives in `pool` (made by realm_model_kv_pool_new for m; the
 * pool must outlive the session). Holds no blocks until the forward pass needs them; a forward
 * that cannot get them fails with REALM_E_KV_FULL and changes nothing.
 * Errors: REALM_E_INVALID (n_ctx, or a pool made for another model shape), REALM_E_NOMEM. */
int realm_session_new_paged(const struct realm_model *m, struct realm_kv_pool *pool,
                            uint32_t tenant, int32_t n_ctx, struct realm_session **out,
                            struct realm_err *err);
/* Makes room for n more tokens now (the forward pass also does this): REALM_E_CONTEXT_FULL past
 * n_ctx, REALM_E_KV_FULL when the pool or the tenant's quota has no blocks left. A contiguous
 * session only checks n_ctx. */
int realm_session_reserve(struct realm_session *s, int32_t n, struct realm_err *err);
/* On an empty paged session: attaches the tenant's cached KV blocks for a prefix of tokens[0..n)
 * (whole blocks, at most n - 1 tokens) and returns how many tokens the session now holds; the
 * caller runs the rest. 0 for a contiguous or non-empty session. */
int32_t realm_session_attach_prefix(struct realm_session *s, const int32_t *tokens, int32_t n);
/* Whether s keeps its cache in a KV pool (realm_session_new_paged). */
bool realm_session_is_paged(const struct realm_session *s);

/* Frees s and, for a paged session, gives its blocks back to the pool (blocks that hold a
 * cached prefix stay in the pool's cache). NULL: no-op. Not while a forward uses s. */
void realm_session_free(struct realm_session *s);
int32_t realm_session_len(const struct realm_session *s); /* tokens in the cache */
int32_t realm_session_n_ctx(const struct realm_session *s);
/* Keeps the first n_keep tokens (a paged session gives back the blocks past them). Errors:
 * REALM_E_RANGE if n_keep < 0 or > len (nothing changes). */
int realm_session_rewind(struct realm_session *s, int32_t n_keep);

/* An engine: thread pool (n_threads; 0 → number of cores) + scratch for up to max_batch rows,
 * all allocated here (a forward allocates nothing). m is borrowed and must outlive the engine.
 * Ownership: returns owned (*out; realm_engine_free). Nothing on failure.
 * Errors: REALM_E_INVALID (NULL m or out, max_batch outside 1..the engine's limit, n_threads
 * out of range), REALM_E_NOMEM, REALM_E_INTERNAL (a pool thread could not start). */
int realm_engine_new(const struct realm_model *m, int n_threads, int32_t max_batch,
                     struct realm_engine **out, struct realm_err *err);
/* Stops the pool's threads and frees e (NULL: no-op). Not while a forward runs on it. */
void realm_engine_free(struct realm_engine *e);
/* Threads of the engine's pool (n_threads as resolved at creation). */
int realm_engine_n_threads(const struct realm_engine *e);

/* One row of a batched forward: the token is appended to its session at the session's current
 * length; rows of the same session must be consecutive and in order. If logits is not NULL,
 * n_vocab floats of this row's output are written there. If embd is not NULL, the row's hidden
 * state after the final norm (n_embd floats, the classifier's input) is written there. A row with
 * neither skips the last layer's output half and the classifier; a row with only embd skips the
 * classifier. Both outputs of a row are bit-identical whatever else is in the batch. */
struct realm_batch_row {
    struct realm_session *session;
    int32_t token;
    float *logits;
    float *embd;
};

/* Runs the rows (any mix of sessions) through the model in one batched pass and advances each
 * session. rows, the sessions and the logits buffers are borrowed for the call. Thread rule: one
 * call at a time per engine; a session in one call only. n_rows 0 is a no-op.
 * Fails as a whole (no session changes, paged reservations undone) on: REALM_E_INVALID (NULL
 * rows, n_rows < 0 or above max_batch, a NULL session or one of another model, a token out of
 * the vocabulary, rows of a session not consecutive), REALM_E_CONTEXT_FULL (a session would
 * exceed its n_ctx), REALM_E_KV_FULL (a paged session's pool or its tenant's quota has no block
 * left for the new positions). */
int realm_engine_forward(struct realm_engine *e, const struct realm_batch_row *rows, int32_t n_rows,
                         struct realm_err *err);

#endif
