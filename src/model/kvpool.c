/*
 * kvpool.c — the paged KV pool (see include/realm/kvpool.h).
 *
 * Owns: one anonymous mapping of n_blocks blocks (pages are committed by the kernel only when
 * written), per-block metadata (reference count, prefix-cache key, the block's tokens), a free
 * stack, an LRU list of cached blocks nobody holds, a hash index of cached blocks by key, and the
 * tenants' block counts. One mutex guards all metadata.
 *
 * Invariants: a block is exactly one of free (refs 0, not cached, on the free stack), idle cached
 * (refs 0, cached, on the LRU list) or used (refs > 0). A tenant is charged once for each used
 * block it owns (sharing never crosses tenants, so the owner is every holder's tenant).
 */
#include "realm/kvpool.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "realm/alloc.h"

struct block_meta {
    int32_t refs;
    bool cached;
    uint32_t tenant; /* owner while used or cached */
    uint64_t key, parent;
    int32_t lru_prev, lru_next; /* idle cached list, -1 terminated */
    int32_t hash_next;          /* cached blocks in the same bucket */
};

struct tenant_ent {
    uint32_t id;
    bool present;
    int32_t used;
    int32_t quota; /* 0: default */
};

struct realm_kv_pool {
    pthread_mutex_t mu;
    int32_t n_layer, B, n_blocks, default_quota;
    size_t row_bytes, block_bytes;
    unsigned char *mem;
    size_t mem_bytes;
    struct block_meta *meta;
    int32_t *tok; /* (n_blocks, B): the tokens each block holds */
    int32_t *free_stack;
    int32_t n_free;
    int32_t lru_head, lru_tail, n_idle; /* head = least recently released */
    int32_t high;                       /* blocks [0, high) have been written at least once */
    int32_t *buckets;
    uint32_t n_buckets;
    struct tenant_ent *tenants;
    uint32_t tenants_cap;
    uint32_t n_tenants;
    struct realm_kv_pool_stats st;
};

struct realm_kv_seq {
    struct realm_kv_pool *pool;
    uint32_t tenant;
    int32_t n_ctx;
    int32_t len;
    int32_t reserved; /* positions past len made writable by the last reserve */
    int32_t *table;   /* (ceil(n_ctx / B)) block ids */
    uint64_t *keys;   /* chain key of each full block */
    int32_t n_table;  /* blocks held */
};

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t root_key(uint32_t tenant) {
    return mix64(0x5265616c6d4b5621ull ^ tenant);
}

static uint64_t chain_key(uint64_t parent, const int32_t *tokens, int32_t n) {
    uint64_t h = mix64(parent);
    for (int32_t i = 0; i < n; i++)
        h = mix64(h ^ (uint32_t)tokens[i]);
    return h;
}

/* ---- tenants (open addressing; grows) ---- */

static struct tenant_ent *tenant_find(struct realm_kv_pool *p, uint32_t id, bool create) {
    uint32_t h = (uint32_t)mix64(id) & (p->tenants_cap - 1);
    for (;; h = (h + 1) & (p->tenants_cap - 1)) {
        struct tenant_ent *e = &p->tenants[h];
        if (e->present && e->id == id) return e;
        if (!e->present) {
            if (!create) return NULL;
            if ((p->n_tenants + 1) * 2 > p->tenants_cap) break; /* grow first */
            *e = (struct tenant_ent){.id = id, .present = true};
            p->n_tenants++;
            return e;
        }
    }
    uint32_t cap = p->tenants_cap * 2;
    /* the table lives as long as the pool: never charged to the budget of whichever tenant's
     * session happened to make it grow */
    struct realm_alloc_budget *prev = realm_alloc_budget_enter(NULL);
    struct tenant_ent *t = realm_calloc(cap, sizeof *t);
    realm_alloc_budget_leave(prev);
    if (!t) return NULL;
    for (uint32_t i = 0; i < p->tenants_cap; i++) {
        if (!p->tenants[i].present) continue;
        uint32_t h2 = (uint32_t)mix64(p->tenants[i].id) & (cap - 1);
        while (t[h2].present)
            h2 = (h2 + 1) & (cap - 1);
        t[h2] = p->tenants[i];
    }
    realm_free(p->tenants);
    p->tenants = t;
    p->tenants_cap = cap;
    return tenant_find(p, id, true);
}

static int32_t quota_of(const struct realm_kv_pool *p, const struct tenant_ent *t) {
    int32_t q = t->quota ? t->quota : p->default_quota;
    return q > 0 ? q : p->n_blocks;
}

/* ---- lists ---- */

static void lru_remove(struct realm_kv_pool *p, int32_t b) {
    struct block_meta *m = &p->meta[b];
    if (m->lru_prev >= 0)
        p->meta[m->lru_prev].lru_next = m->lru_next;
    else
        p->lru_head = m->lru_next;
    if (m->lru_next >= 0)
        p->meta[m->lru_next].lru_prev = m->lru_prev;
    else
        p->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = -1;
    p->n_idle--;
}

static void lru_push(struct realm_kv_pool *p, int32_t b) {
    struct block_meta *m = &p->meta[b];
    m->lru_prev = p->lru_tail;
    m->lru_next = -1;
    if (p->lru_tail >= 0)
        p->meta[p->lru_tail].lru_next = b;
    else
        p->lru_head = b;
    p->lru_tail = b;
    p->n_idle++;
}

static void hash_insert(struct realm_kv_pool *p, int32_t b) {
    uint32_t h = (uint32_t)p->meta[b].key & (p->n_buckets - 1);
    p->meta[b].hash_next = p->buckets[h];
    p->buckets[h] = b;
    p->meta[b].cached = true;
}

static void hash_remove(struct realm_kv_pool *p, int32_t b) {
    uint32_t h = (uint32_t)p->meta[b].key & (p->n_buckets - 1);
    for (int32_t *link = &p->buckets[h]; *link >= 0; link = &p->meta[*link].hash_next) {
        if (*link == b) {
            *link = p->meta[b].hash_next;
            break;
        }
    }
    p->meta[b].hash_next = -1;
    p->meta[b].cached = false;
}

/* A cached block with this chain position and tokens, or -1. Tokens and parent are compared so
 * that a 64-bit collision can never hand out another prefix's cache. */
static int32_t hash_lookup(struct realm_kv_pool *p, uint32_t tenant, uint64_t parent, uint64_t key,
                           const int32_t *tokens) {
    for (int32_t b = p->buckets[(uint32_t)key & (p->n_buckets - 1)]; b >= 0;
         b = p->meta[b].hash_next) {
        const struct block_meta *m = &p->meta[b];
        if (m->key == key && m->parent == parent && m->tenant == tenant &&
            !memcmp(&p->tok[(size_t)b * p->B], tokens, (size_t)p->B * sizeof *tokens))
            return b;
    }
    return -1;
}

/* ---- allocation ---- */

/* A block nobody holds. Memory the pool has already written comes first — a free block from the
 * top of the stack, then the least recently released cached block — and a never-touched block
 * only when neither exists, so the resident size follows the peak number of blocks in use and
 * the prefix cache lives within those pages instead of slowly committing the whole pool.
 * Fresh blocks sit at the bottom of the free stack in index order, so a free block is touched
 * iff its index is below the high-water mark. */
static int32_t take_block(struct realm_kv_pool *p) {
    if (p->n_free && p->free_stack[p->n_free - 1] < p->high) return p->free_stack[--p->n_free];
    int32_t b = p->lru_head;
    if (b >= 0) {
        lru_remove(p, b);
        hash_remove(p, b);
        p->st.evictions++;
        return b;
    }
    if (!p->n_free) return -1;
    b = p->free_stack[--p->n_free];
    if (b >= p->high) p->high = b + 1;
    p->st.touched = p->high;
    return b;
}

/* Drops one holder of b; the last one uncharges the owner and parks the block. */
static void release_block(struct realm_kv_pool *p, int32_t b) {
    struct block_meta *m = &p->meta[b];
    if (--m->refs > 0) return;
    struct tenant_ent *t = tenant_find(p, m->tenant, false);
    if (t) t->used--;
    if (m->cached)
        lru_push(p, b);
    else
        p->free_stack[p->n_free++] = b;
}

static unsigned char *block_mem(const struct realm_kv_pool *p, int32_t b) {
    return p->mem + (size_t)b * p->block_bytes; /* 64-bit: pools exceed 2 GiB */
}

/* ---- pool ---- */

int realm_kv_pool_new(const struct realm_kv_pool_params *prm, struct realm_kv_pool **out,
                      struct realm_err *err) {
    int32_t B = prm->block_tokens ? prm->block_tokens : 16;
    if (prm->n_layer < 1 || prm->row_bytes == 0 || B < 1 || prm->default_quota < 0)
        return realm_err_set(err, REALM_E_INVALID,
                             "kvpool: invalid parameters (n_layer %d, row_bytes %zu, "
                             "block_tokens %d)",
                             prm->n_layer, prm->row_bytes, B);
    size_t block_bytes;
    if (realm_mul_size(prm->row_bytes, (size_t)prm->n_layer * (size_t)B * 2, &block_bytes))
        return realm_err_set(err, REALM_E_INVALID, "kvpool: block size overflows");
    size_t n = prm->memory_bytes / block_bytes;
    if (n < 1 || n > INT32_MAX / 2)
        return realm_err_set(err, REALM_E_INVALID,
                             "kvpool: %zu bytes hold %zu blocks of %zu bytes; need at least 1",
                             prm->memory_bytes, n, block_bytes);
    struct realm_kv_pool *p = realm_calloc(1, sizeof *p);
    if (!p) return realm_err_set(err, REALM_E_NOMEM, "kvpool: out of memory");
    p->n_layer = prm->n_layer;
    p->B = B;
    p->row_bytes = prm->row_bytes;
    p->block_bytes = block_bytes;
    p->n_blocks = (int32_t)n;
    p->default_quota = prm->default_quota;
    p->mem_bytes = n * block_bytes;
    p->n_buckets = 64;
    while (p->n_buckets < (uint32_t)n)
        p->n_buckets <<= 1;
    p->tenants_cap = 16;
    p->meta = realm_calloc(n, sizeof *p->meta);
    p->tok = realm_calloc(n * (size_t)B, sizeof *p->tok);
    p->free_stack = realm_calloc(n, sizeof *p->free_stack);
    p->buckets = realm_malloc(p->n_buckets * sizeof *p->buckets);
    p->tenants = realm_calloc(p->tenants_cap, sizeof *p->tenants);
    p->mem = mmap(NULL, p->mem_bytes, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p->mem == MAP_FAILED) p->mem = NULL;
    if (!p->meta || !p->tok || !p->free_stack || !p->buckets || !p->tenants || !p->mem) {
        realm_kv_pool_free(p);
        return realm_err_set(err, REALM_E_NOMEM, "kvpool: cannot reserve %zu bytes for %zu blocks",
                             n * block_bytes, n);
    }
    memset(p->buckets, 0xff, p->n_buckets * sizeof *p->buckets);
    for (int32_t b = 0; b < p->n_blocks; b++) {
        p->meta[b].lru_prev = p->meta[b].lru_next = p->meta[b].hash_next = -1;
        p->free_stack[b] = p->n_blocks - 1 - b; /* pop order 0, 1, 2 ... */
    }
    p->n_free = p->n_blocks;
    p->lru_head = p->lru_tail = -1;
    p->st.n_blocks = p->n_blocks;
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return REALM_OK;
}

void realm_kv_pool_free(struct realm_kv_pool *p) {
    if (!p) return;
    if (p->mem) {
        munmap(p->mem, p->mem_bytes);
        pthread_mutex_destroy(&p->mu);
    }
    realm_free(p->meta);
    realm_free(p->tok);
    realm_free(p->free_stack);
    realm_free(p->buckets);
    realm_free(p->tenants);
    realm_free(p);
}

int realm_kv_pool_set_quota(struct realm_kv_pool *p, uint32_t tenant, int32_t max_blocks) {
    if (max_blocks < 0) return REALM_E_INVALID;
    pthread_mutex_lock(&p->mu);
    struct tenant_ent *t = tenant_find(p, tenant, true);
    if (t) t->quota = max_blocks;
    pthread_mutex_unlock(&p->mu);
    return t ? REALM_OK : REALM_E_NOMEM;
}

void realm_kv_pool_get_stats(struct realm_kv_pool *p, struct realm_kv_pool_stats *out) {
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    out->free = p->n_free;
    out->cached_idle = p->n_idle;
    out->used = p->n_blocks - p->n_free - p->n_idle;
    pthread_mutex_unlock(&p->mu);
}

int32_t realm_kv_pool_tenant_used(struct realm_kv_pool *p, uint32_t tenant) {
    pthread_mutex_lock(&p->mu);
    struct tenant_ent *t = tenant_find(p, tenant, false);
    int32_t used = t ? t->used : 0;
    pthread_mutex_unlock(&p->mu);
    return used;
}

int32_t realm_kv_pool_block_tokens(const struct realm_kv_pool *p) {
    return p->B;
}
size_t realm_kv_pool_row_bytes(const struct realm_kv_pool *p) {
    return p->row_bytes;
}
int32_t realm_kv_pool_n_layer(const struct realm_kv_pool *p) {
    return p->n_layer;
}

/* ---- sequences ---- */

int realm_kv_seq_new(struct realm_kv_pool *p, uint32_t tenant, int32_t n_ctx,
                     struct realm_kv_seq **out, struct realm_err *err) {
    if (n_ctx < 1) return realm_err_set(err, REALM_E_INVALID, "kvpool: n_ctx %d", n_ctx);
    /* 64-bit: n_ctx + B - 1 overflows int32 for an n_ctx near INT32_MAX */
    int32_t max_blocks = (int32_t)(((int64_t)n_ctx + p->B - 1) / p->B);
    struct realm_kv_seq *s = realm_calloc(1, sizeof *s);
    if (s) {
        s->table = realm_malloc((size_t)max_blocks * sizeof *s->table);
        s->keys = realm_malloc((size_t)max_blocks * sizeof *s->keys);
    }
    if (!s || !s->table || !s->keys) {
        if (s) {
            realm_free(s->table);
            realm_free(s->keys);
        }
        realm_free(s);
        return realm_err_set(err, REALM_E_NOMEM, "kvpool: out of memory");
    }
    s->pool = p;
    s->tenant = tenant;
    s->n_ctx = n_ctx;
    pthread_mutex_lock(&p->mu);
    struct tenant_ent *t = tenant_find(p, tenant, true); /* so that stats list it */
    pthread_mutex_unlock(&p->mu);
    if (!t) {
        realm_kv_seq_free(s);
        return realm_err_set(err, REALM_E_NOMEM, "kvpool: out of memory");
    }
    *out = s;
    return REALM_OK;
}

static void release_from(struct realm_kv_seq *s, int32_t first_block) {
    for (int32_t i = first_block; i < s->n_table; i++)
        release_block(s->pool, s->table[i]);
    if (s->n_table > first_block) s->n_table = first_block;
}

void realm_kv_seq_free(struct realm_kv_seq *s) {
    if (!s) return;
    if (s->pool) {
        pthread_mutex_lock(&s->pool->mu);
        release_from(s, 0);
        pthread_mutex_unlock(&s->pool->mu);
    }
    realm_free(s->table);
    realm_free(s->keys);
    realm_free(s);
}

int32_t realm_kv_seq_len(const struct realm_kv_seq *s) {
    return s->len;
}

static uint64_t key_before(const struct realm_kv_seq *s, int32_t block) {
    return block > 0 ? s->keys[block - 1] : root_key(s->tenant);
}

int32_t realm_kv_seq_attach_prefix(struct realm_kv_seq *s, const int32_t *tokens, int32_t n) {
    struct realm_kv_pool *p = s->pool;
    if (s->len != 0 || s->n_table != 0 || n < 2) return 0;
    int32_t max_blocks = (n - 1) / p->B;
    pthread_mutex_lock(&p->mu);
    struct tenant_ent *t = tenant_find(p, s->tenant, true);
    uint64_t parent = root_key(s->tenant);
    for (int32_t i = 0; t && i < max_blocks; i++) {
        const int32_t *bt = tokens + (size_t)i * p->B;
        uint64_t key = chain_key(parent, bt, p->B);
        int32_t b = hash_lookup(p, s->tenant, parent, key, bt);
        if (b < 0) break;
        struct block_meta *m = &p->meta[b];
        if (m->refs == 0) {
            if (t->used + 1 > quota_of(p, t)) break;
            lru_remove(p, b);
            t->used++;
        }
        m->refs++;
        s->table[s->n_table] = b;
        s->keys[s->n_table] = key;
        s->n_table++;
        s->len += p->B;
        p->st.prefix_hits++;
        parent = key;
    }
    pthread_mutex_unlock(&p->mu);
    return s->len;
}

int realm_kv_seq_reserve(struct realm_kv_seq *s, int32_t n, struct realm_err *err) {
    struct realm_kv_pool *p = s->pool;
    if (n < 0 || (int64_t)s->len + n > s->n_ctx)
        return realm_err_set(err, REALM_E_CONTEXT_FULL,
                             "kvpool: %d + %d positions exceed the context of %d", s->len, n,
                             s->n_ctx);
    if (n == 0) {
        s->reserved = 0;
        return REALM_OK;
    }
    int32_t first = s->len / p->B, last = (s->len + n - 1) / p->B;
    pthread_mutex_lock(&p->mu);
    struct tenant_ent *t = tenant_find(p, s->tenant, true);
    /* count what is needed before changing anything: new blocks past the table, and a private
     * copy of a block written while others hold it */
    int32_t need = last >= s->n_table ? last - s->n_table + 1 : 0;
    bool cow = first < s->n_table && p->meta[s->table[first]].refs > 1;
    need += cow;
    int rc = REALM_OK;
    if (!t) {
        rc = realm_err_set(err, REALM_E_NOMEM, "kvpool: out of memory");
    } else if (quota_of(p, t) < p->n_blocks && t->used + need > quota_of(p, t)) {
        /* a quota of the whole pool is no tenant limit: running out of it is the pool's (below) */
        p->st.kv_full++;
        rc = realm_err_set(err, REALM_E_KV_FULL,
                           "kvpool: tenant %u needs %d more KV blocks, quota %d, holds %d",
                           s->tenant, need, quota_of(p, t), t->used);
    } else if (need > p->n_free + p->n_idle) {
        p->st.kv_full++;
        rc = realm_err_set(err, REALM_E_KV_FULL,
                           "kvpool: pool exhausted: %d KV blocks needed, %d available of %d", need,
                           p->n_free + p->n_idle, p->n_blocks);
    }
    if (rc) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    if (cow) {
        int32_t old = s->table[first], b = take_block(p);
        memcpy(block_mem(p, b), block_mem(p, old), p->block_bytes);
        memcpy(&p->tok[(size_t)b * p->B], &p->tok[(size_t)old * p->B],
               (size_t)p->B * sizeof *p->tok);
        p->meta[b] = (struct block_meta){
            .refs = 1, .tenant = s->tenant, .lru_prev = -1, .lru_next = -1, .hash_next = -1};
        p->meta[old].refs--; /* others still hold it, so it stays used and charged */
        t->used++;
        s->table[first] = b;
        p->st.cow_copies++;
    } else if (first < s->n_table && p->meta[s->table[first]].cached) {
        /* ours alone but registered: it is about to change, so it leaves the cache */
        hash_remove(p, s->table[first]);
    }
    while (s->n_table <= last) {
        int32_t b = take_block(p);
        p->meta[b] = (struct block_meta){
            .refs = 1, .tenant = s->tenant, .lru_prev = -1, .lru_next = -1, .hash_next = -1};
        t->used++;
        s->table[s->n_table++] = b;
    }
    s->reserved = n;
    pthread_mutex_unlock(&p->mu);
    return REALM_OK;
}

int realm_kv_seq_commit(struct realm_kv_seq *s, const int32_t *tokens, int32_t n) {
    struct realm_kv_pool *p = s->pool;
    if (n < 0 || n > s->reserved) return REALM_E_RANGE;
    pthread_mutex_lock(&p->mu);
    for (int32_t i = 0; i < n; i++) {
        int32_t bi = s->len / p->B, slot = s->len % p->B, b = s->table[bi];
        p->tok[(size_t)b * p->B + slot] = tokens[i];
        s->len++;
        if (slot != p->B - 1) continue;
        /* the block is full: register it unless an identical block is already cached */
        uint64_t parent = key_before(s, bi);
        uint64_t key = chain_key(parent, &p->tok[(size_t)b * p->B], p->B);
        s->keys[bi] = key;
        p->meta[b].key = key;
        p->meta[b].parent = parent;
        if (hash_lookup(p, s->tenant, parent, key, &p->tok[(size_t)b * p->B]) < 0)
            hash_insert(p, b);
    }
    s->reserved -= n;
    pthread_mutex_unlock(&p->mu);
    return REALM_OK;
}

int realm_kv_seq_rewind(struct realm_kv_seq *s, int32_t n_keep) {
    if (n_keep < 0 || n_keep > s->len) return REALM_E_RANGE;
    struct realm_kv_pool *p = s->pool;
    pthread_mutex_lock(&p->mu);
    release_from(s, (int32_t)(((int64_t)n_keep + p->B - 1) / p->B)); /* 64-bit: as in seq_new */
    s->len = n_keep;
    s->reserved = 0;
    pthread_mutex_unlock(&p->mu);
    return REALM_OK;
}

void *realm_kv_seq_k(const struct realm_kv_seq *s, int32_t layer, int32_t pos) {
    const struct realm_kv_pool *p = s->pool;
    return block_mem(p, s->table[pos / p->B]) +
           ((size_t)layer * p->B + (size_t)(pos % p->B)) * p->row_bytes;
}

void *realm_kv_seq_v(const struct realm_kv_seq *s, int32_t layer, int32_t pos) {
    const struct realm_kv_pool *p = s->pool;
    return block_mem(p, s->table[pos / p->B]) +
           ((size_t)(p->n_layer + layer) * p->B + (size_t)(pos % p->B)) * p->row_bytes;
}
