/*
 * kvpool.h — the paged KV cache: one pool of fixed-size blocks sized at start-up, a block table
 * per sequence, a block quota per tenant, and reuse of cached prompt prefixes within a tenant.
 *
 * A block holds `block_tokens` positions of keys and values for every layer:
 *   block = K[n_layer][block_tokens][row_bytes] then V[n_layer][block_tokens][row_bytes]
 * A sequence's position p lives in block table[p / block_tokens] at slot p % block_tokens.
 *
 * Prefix reuse: when a block of a sequence is full, it is registered under a key chained over
 * the tenant and every token up to its end (key_i = H(key_{i-1}, tokens of block i), key_-1 =
 * H(tenant)). A new sequence of the same tenant whose tokens start with the same blocks attaches
 * them (reference count + 1) instead of computing them again. Keys never match across tenants
 * because the tenant is the root of the chain, and the block's tokens and parent key are compared
 * on every hit, so a hash collision cannot leak another prompt's cache. Shared blocks are
 * copy-on-write: a sequence that writes into a block others also hold first gets its own copy.
 * Cached blocks nobody holds stay cached (least recently released first out) until a free block
 * is needed; a block never written is used only when no written block is free or cached, so the
 * pool's resident memory follows its peak use rather than its size.
 *
 * Quota: blocks held by a tenant's sequences (shared ones counted once per tenant) must stay
 * within its quota; cached blocks nobody holds are not charged.
 *
 * Thread rule: all pool and sequence functions are thread-safe (one mutex per pool); the block
 * memory itself is written only by the thread running the forward pass for that sequence, after
 * realm_kv_seq_reserve made its blocks exclusive.
 */
#ifndef REALM_KVPOOL_H
#define REALM_KVPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"

struct realm_kv_pool;
struct realm_kv_seq;

struct realm_kv_pool_params {
    int32_t n_layer;
    size_t row_bytes;      /* bytes of one position's keys (= values) in one layer */
    int32_t block_tokens;  /* positions per block [16] */
    size_t memory_bytes;   /* total pool size; n_blocks = memory_bytes / block bytes */
    int32_t default_quota; /* blocks per tenant when not set [0: the whole pool] */
};

/* Ownership: returns owned (*out; realm_kv_pool_free). Block memory is reserved, not touched: pages
 * cost RAM only once written. Errors: REALM_E_INVALID (params, fewer than 1 block), REALM_E_NOMEM.
 */
int realm_kv_pool_new(const struct realm_kv_pool_params *p, struct realm_kv_pool **out,
                      struct realm_err *err);
/* Every sequence must have been freed. NULL is a no-op. */
void realm_kv_pool_free(struct realm_kv_pool *pool);

/* Sets a tenant's block quota (0: default). Lowering it below current use only stops growth. */
int realm_kv_pool_set_quota(struct realm_kv_pool *pool, uint32_t tenant, int32_t max_blocks);

struct realm_kv_pool_stats {
    int32_t n_blocks;
    int32_t used;        /* held by at least one sequence */
    int32_t cached_idle; /* cached, held by nobody (reclaimable) */
    int32_t free;        /* neither */
    int32_t touched;     /* blocks ever written (their pages are resident): the peak in use, as
                            fresh blocks are used only when no written one is free or cached */
    int64_t prefix_hits; /* blocks attached from the prefix cache */
    int64_t cow_copies;
    int64_t evictions;
    int64_t kv_full; /* reservations refused */
};
/* A consistent snapshot of the counters (taken under the pool's lock). Cannot fail. */
void realm_kv_pool_get_stats(struct realm_kv_pool *pool, struct realm_kv_pool_stats *out);
/* Blocks a tenant currently holds. */
int32_t realm_kv_pool_tenant_used(struct realm_kv_pool *pool, uint32_t tenant);
/* The pool's shape, fixed at creation: positions per block, bytes of one layer's K (or V) row
 * of one position, layers. Cannot fail. */
int32_t realm_kv_pool_block_tokens(const struct realm_kv_pool *pool);
size_t realm_kv_pool_row_bytes(const struct realm_kv_pool *pool);
int32_t realm_kv_pool_n_layer(const struct realm_kv_pool *pool);

/* A sequence of up to n_ctx positions for a tenant. Holds no blocks until reserved.
 * Ownership: returns owned (*out; realm_kv_seq_free releases its blocks). */
int realm_kv_seq_new(struct realm_kv_pool *pool, uint32_t tenant, int32_t n_ctx,
                     struct realm_kv_seq **out, struct realm_err *err);
/* Gives the sequence's blocks back (full blocks stay cached for prefix reuse) and frees it.
 * NULL is a no-op. */
void realm_kv_seq_free(struct realm_kv_seq *seq);

/* Tokens committed. */
int32_t realm_kv_seq_len(const struct realm_kv_seq *seq);

/* Attaches cached blocks for a prefix of tokens[0..n) to an EMPTY sequence, whole blocks only and
 * at most n - 1 tokens (the caller still runs the last token to get its logits). Returns the
 * number of tokens attached (a multiple of block_tokens, possibly 0); the sequence's length
 * becomes that. Blocks over the tenant's quota are not attached. */
int32_t realm_kv_seq_attach_prefix(struct realm_kv_seq *seq, const int32_t *tokens, int32_t n);

/* Makes positions [len, len + n) writable: allocates blocks (evicting idle cached blocks when
 * the free list is empty) and copies a shared block before it is written.
 * Errors (nothing changes): REALM_E_CONTEXT_FULL (len + n > n_ctx), REALM_E_KV_FULL (pool or
 * tenant quota exhausted; the message says which: it contains "pool exhausted" or "quota" — the
 * server maps the first to 503 and the second to 429). */
int realm_kv_seq_reserve(struct realm_kv_seq *seq, int32_t n, struct realm_err *err);

/* Records that positions [len, len + n) now hold tokens[0..n) (written by the forward pass after
 * realm_kv_seq_reserve), registers blocks that became full in the prefix cache, and advances
 * len. Errors: REALM_E_RANGE if the positions were not reserved. */
int realm_kv_seq_commit(struct realm_kv_seq *seq, const int32_t *tokens, int32_t n);

/* Keeps the first n_keep positions and releases blocks past them. Errors: REALM_E_RANGE. */
int realm_kv_seq_rewind(struct realm_kv_seq *seq, int32_t n_keep);

/* Address of the keys / values of `layer` at position `pos` (row_bytes bytes). pos must be below
 * len + the reserved count. Lifetime: until the next reserve/rewind/free of this sequence. */
void *realm_kv_seq_k(const struct realm_kv_seq *seq, int32_t layer, int32_t pos);
void *realm_kv_seq_v(const struct realm_kv_seq *seq, int32_t layer, int32_t pos);

#endif
