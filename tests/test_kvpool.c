/*
 * test_kvpool.c — the paged KV pool: block addressing, tenant quotas and pool exhaustion (clear
 * KV_FULL, other tenants unaffected), prefix reuse within a tenant and never across tenants,
 * copy-on-write of shared blocks, eviction of idle cached blocks, counters back to all-free, and
 * out of memory at every allocation of pool and sequence creation (fail-after-N).
 */
#include "testutil.h"

#include "realm/alloc.h"
#include "realm/kvpool.h"

#define B 4
#define NL 2
#define ROW 8

static struct realm_kv_pool *new_pool(int32_t n_blocks, int32_t quota) {
    struct realm_kv_pool_params p = {.n_layer = NL,
                                     .row_bytes = ROW,
                                     .block_tokens = B,
                                     .memory_bytes = (size_t)n_blocks * NL * B * ROW * 2,
                                     .default_quota = quota};
    struct realm_kv_pool *pool = NULL;
    struct realm_err err;
    CHECKF(realm_kv_pool_new(&p, &pool, &err) == REALM_OK, "%s", err.msg);
    return pool;
}

/* Appends tokens through reserve + write + commit; the "KV" bytes are a function of the token. */
static int append(struct realm_kv_seq *s, const int32_t *toks, int32_t n, struct realm_err *err) {
    int32_t len = realm_kv_seq_len(s);
    int rc = realm_kv_seq_reserve(s, n, err);
    if (rc) return rc;
    for (int32_t i = 0; i < n; i++)
        for (int l = 0; l < NL; l++) {
            memset(realm_kv_seq_k(s, l, len + i), (toks[i] * 3 + l) & 0xff, ROW);
            memset(realm_kv_seq_v(s, l, len + i), (toks[i] * 5 + l) & 0xff, ROW);
        }
    return realm_kv_seq_commit(s, toks, n);
}

static int holds(struct realm_kv_seq *s, const int32_t *toks, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        for (int l = 0; l < NL; l++) {
            const unsigned char *k = realm_kv_seq_k(s, l, i), *v = realm_kv_seq_v(s, l, i);
            for (int j = 0; j < ROW; j++)
                if (k[j] != ((toks[i] * 3 + l) & 0xff) || v[j] != ((toks[i] * 5 + l) & 0xff))
                    return 0;
        }
    return 1;
}

static void test_basic_and_quota(void) {
    struct realm_kv_pool *pool = new_pool(10, 3);
    struct realm_kv_seq *a, *b;
    struct realm_err err;
    int32_t toks[40];
    for (int i = 0; i < 40; i++)
        toks[i] = 100 + i;
    CHECK(realm_kv_seq_new(pool, 1, 64, &a, &err) == REALM_OK);
    CHECK(realm_kv_seq_new(pool, 2, 64, &b, &err) == REALM_OK);
    CHECK(append(a, toks, 5, &err) == REALM_OK);
    CHECK(append(a, toks + 5, 7, &err) == REALM_OK);
    CHECK(holds(a, toks, 12));
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), 3);
    /* over tenant 1's quota of 3 blocks: refused, nothing changes, tenant 2 unaffected */
    CHECK(append(a, toks + 12, 1, &err) == REALM_E_KV_FULL);
    CHECK(strstr(err.msg, "quota") != NULL);
    CHECK_EQ_INT(realm_kv_seq_len(a), 12);
    CHECK(append(b, toks, 12, &err) == REALM_OK);
    CHECK(holds(a, toks, 12) && holds(b, toks, 12));
    /* context limit */
    struct realm_kv_seq *c;
    CHECK(realm_kv_seq_new(pool, 3, 6, &c, &err) == REALM_OK);
    CHECK(append(c, toks, 7, &err) == REALM_E_CONTEXT_FULL);
    /* pool exhaustion (10 blocks: 6 used; tenant 3 may use the whole pool) */
    CHECK(realm_kv_pool_set_quota(pool, 3, 100) == REALM_OK);
    struct realm_kv_seq *d;
    CHECK(realm_kv_seq_new(pool, 3, 64, &d, &err) == REALM_OK);
    CHECK(append(d, toks, 20, &err) == REALM_E_KV_FULL);
    CHECK(strstr(err.msg, "pool exhausted") != NULL);
    CHECK(append(d, toks, 16, &err) == REALM_OK);
    struct realm_kv_pool_stats st;
    realm_kv_pool_get_stats(pool, &st);
    CHECK_EQ_INT(st.used, 10);
    CHECK_EQ_INT(st.kv_full, 2);
    /* rewind releases whole blocks past the kept positions */
    CHECK(realm_kv_seq_rewind(d, 5) == REALM_OK);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 3), 2);
    CHECK(realm_kv_seq_rewind(d, 6) == REALM_E_RANGE);
    realm_kv_seq_free(a);
    realm_kv_seq_free(b);
    realm_kv_seq_free(c);
    realm_kv_seq_free(d);
    realm_kv_pool_get_stats(pool, &st);
    CHECK_EQ_INT(st.used, 0);
    CHECK_EQ_INT(st.free + st.cached_idle, 10);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), 0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 3), 0);
    realm_kv_pool_free(pool);
}

static void test_prefix_cow_evict(void) {
    struct realm_kv_pool *pool = new_pool(8, 0);
    struct realm_err err;
    int32_t toks[16], other[16];
    for (int i = 0; i < 16; i++) {
        toks[i] = 7 + i;
        other[i] = 7 + i + (i == 5); /* differs in block 1 */
    }
    struct realm_kv_seq *a, *b, *x, *o;
    CHECK(realm_kv_seq_new(pool, 1, 64, &a, &err) == REALM_OK);
    CHECK(append(a, toks, 14, &err) == REALM_OK); /* blocks 0..2 full, block 3 partial */
    /* same tenant, same prompt: 3 blocks reused (at most n-1 tokens) */
    CHECK(realm_kv_seq_new(pool, 1, 64, &b, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_seq_attach_prefix(b, toks, 14), 12);
    CHECK(holds(b, toks, 12));
    CHECK(realm_kv_seq_k(b, 1, 9) == realm_kv_seq_k(a, 1, 9)); /* the same memory */
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), 4);       /* shared blocks charged once */
    /* a prompt of exactly 12 tokens reuses only 2 blocks: the last token must still run */
    struct realm_kv_seq *b2;
    CHECK(realm_kv_seq_new(pool, 1, 64, &b2, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_seq_attach_prefix(b2, toks, 12), 8);
    realm_kv_seq_free(b2);
    /* another tenant with the same tokens reuses nothing */
    CHECK(realm_kv_seq_new(pool, 2, 64, &x, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_seq_attach_prefix(x, toks, 14), 0);
    /* a different block 1 stops reuse after block 0 */
    CHECK(realm_kv_seq_new(pool, 1, 64, &o, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_seq_attach_prefix(o, other, 14), 4);
    realm_kv_seq_free(o);
    /* copy-on-write: b rewinds into shared block 1 and writes; a keeps its data */
    CHECK(realm_kv_seq_rewind(b, 6) == REALM_OK);
    int32_t nt[2] = {99, 98};
    CHECK(append(b, nt, 2, &err) == REALM_OK);
    CHECK(holds(a, toks, 14));
    int32_t bexp[8];
    memcpy(bexp, toks, 6 * sizeof *bexp);
    bexp[6] = 99;
    bexp[7] = 98;
    CHECK(holds(b, bexp, 8));
    struct realm_kv_pool_stats st;
    realm_kv_pool_get_stats(pool, &st);
    CHECK_EQ_INT(st.cow_copies, 1);
    CHECK(st.prefix_hits >= 3 + 2 + 1);
    realm_kv_seq_free(a);
    realm_kv_seq_free(b);
    realm_kv_seq_free(x);
    /* idle cached blocks: a new sequence of tenant 1 still finds block 0..2 of `toks` */
    struct realm_kv_seq *c;
    CHECK(realm_kv_seq_new(pool, 1, 64, &c, &err) == REALM_OK);
    CHECK_EQ_INT(realm_kv_seq_attach_prefix(c, toks, 16), 12);
    CHECK(holds(c, toks, 12));
    realm_kv_seq_free(c);
    /* tenant 2 needs the whole pool: idle cached blocks are evicted for it */
    struct realm_kv_seq *big;
    CHECK(realm_kv_seq_new(pool, 2, 64, &big, &err) == REALM_OK);
    int32_t many[32];
    for (int i = 0; i < 32; i++)
        many[i] = 500 + i;
    CHECK(append(big, many, 32, &err) == REALM_OK);
    CHECK(holds(big, many, 32));
    realm_kv_pool_get_stats(pool, &st);
    CHECK(st.evictions > 0);
    CHECK_EQ_INT(st.used, 8);
    realm_kv_seq_free(big);
    realm_kv_pool_get_stats(pool, &st);
    CHECK_EQ_INT(st.used, 0);
    CHECK_EQ_INT(st.free + st.cached_idle, 8);
    realm_kv_pool_free(pool);
}

/* Resident memory follows peak use: sequences that come and go, each with its own prompt, keep
 * reusing the blocks already written (free or cached) instead of touching new ones. */
static void test_touched_follows_peak(void) {
    struct realm_kv_pool *pool = new_pool(64, 0);
    struct realm_err err;
    for (int round = 0; round < 20; round++) {
        struct realm_kv_seq *s[2];
        for (int k = 0; k < 2; k++) {
            int32_t toks[12];
            for (int i = 0; i < 12; i++)
                toks[i] = 1000 * round + 100 * k + i; /* all different */
            CHECK(realm_kv_seq_new(pool, 1, 64, &s[k], &err) == REALM_OK);
            CHECK(append(s[k], toks, 12, &err) == REALM_OK); /* 3 full blocks, cached on release */
            CHECK(holds(s[k], toks, 12));
        }
        realm_kv_seq_free(s[0]);
        realm_kv_seq_free(s[1]);
    }
    struct realm_kv_pool_stats st;
    realm_kv_pool_get_stats(pool, &st);
    CHECKF(st.touched == 6, "touched %d blocks for a peak of 6 in use", st.touched);
    CHECK(st.evictions > 0);
    CHECK_EQ_INT(st.used, 0);
    realm_kv_pool_free(pool);
}

/* A sequence as long as int32 allows: its block count and rewinds are computed in 64 bits
 * (n_ctx + block_tokens - 1 overflows int32). Blocks of 2^20 positions keep the table small. */
static void test_huge_n_ctx(void) {
    const int32_t big_b = 1 << 20;
    struct realm_kv_pool_params p = {
        .n_layer = 1, .row_bytes = 1, .block_tokens = big_b, .memory_bytes = (size_t)2 * 2 * big_b};
    struct realm_kv_pool *pool = NULL;
    struct realm_kv_seq *s = NULL;
    struct realm_err err;
    CHECKF(realm_kv_pool_new(&p, &pool, &err) == REALM_OK, "%s", err.msg);
    if (!pool) return;
    CHECKF(realm_kv_seq_new(pool, 1, INT32_MAX, &s, &err) == REALM_OK, "%s", err.msg);
    if (s) {
        const int32_t toks[3] = {7, 8, 9};
        CHECK_EQ_INT(realm_kv_seq_reserve(s, 3, &err), REALM_OK);
        CHECK_EQ_INT(realm_kv_seq_commit(s, toks, 3), REALM_OK);
        CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), 1);
        CHECK_EQ_INT(realm_kv_seq_reserve(s, INT32_MAX - 2, &err), REALM_E_CONTEXT_FULL);
        CHECK_EQ_INT(realm_kv_seq_rewind(s, 0), REALM_OK);
        CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), 0);
        realm_kv_seq_free(s);
    }
    realm_kv_pool_free(pool);
}

/* Out of memory at every allocation in turn (realm_alloc_fail_after): creating the pool, a
 * sequence of a new tenant (its table and the tenant's entry) and the first append either
 * succeed or fail with REALM_E_NOMEM and a message, leave nothing written to their out
 * parameters and free everything they allocated; the pool works once allocations succeed. */
static void test_alloc_failures(void) {
    struct realm_kv_pool_params p = {.n_layer = NL,
                                     .row_bytes = ROW,
                                     .block_tokens = B,
                                     .memory_bytes = (size_t)8 * NL * B * ROW * 2,
                                     .default_quota = 4};
    const int32_t toks[6] = {1, 2, 3, 4, 5, 6};
    const int64_t before = realm_alloc_bytes_in_use();
    int n_nomem = 0, done = 0;
    for (int64_t f = 0; f < 200 && !done; f++) {
        static char untouched; /* what the out parameters hold until a call succeeds */
        struct realm_kv_pool *const pool_sentinel = (struct realm_kv_pool *)&untouched;
        struct realm_kv_seq *const seq_sentinel = (struct realm_kv_seq *)&untouched;
        struct realm_kv_pool *pool = pool_sentinel;
        struct realm_kv_seq *s = seq_sentinel;
        struct realm_err err = {0};
        realm_alloc_fail_after(f);
        int rc = realm_kv_pool_new(&p, &pool, &err);
        if (rc == REALM_OK) {
            rc = realm_kv_seq_new(pool, 7, 64, &s, &err);
            if (rc == REALM_OK) {
                rc = append(s, toks, 6, &err);
                if (rc == REALM_OK) done = holds(s, toks, 6);
                CHECKF(rc != REALM_OK || done, "fail after %lld: wrong KV bytes", (long long)f);
                realm_kv_seq_free(s);
            } else {
                CHECKF(s == seq_sentinel, "fail after %lld: seq written on failure", (long long)f);
            }
            realm_kv_pool_free(pool);
        } else {
            CHECKF(pool == pool_sentinel, "fail after %lld: pool written on failure", (long long)f);
        }
        realm_alloc_fail_after(-1);
        CHECKF(rc == REALM_OK || rc == REALM_E_NOMEM, "fail after %lld: rc %d", (long long)f, rc);
        if (rc == REALM_E_NOMEM) {
            n_nomem++;
            CHECKF(err.msg[0] != 0, "fail after %lld: no message", (long long)f);
        }
        CHECKF(realm_alloc_bytes_in_use() == before, "fail after %lld: %lld bytes leaked",
               (long long)f, (long long)(realm_alloc_bytes_in_use() - before));
    }
    CHECK(done);
    CHECKF(n_nomem >= 8, "only %d allocation failures seen", n_nomem); /* 6 in pool_new alone */
    tu_log("kvpool: %d injected failures before success", n_nomem);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    int64_t base = realm_alloc_bytes_in_use();
    test_basic_and_quota();
    test_prefix_cow_evict();
    test_touched_follows_peak();
    test_huge_n_ctx();
    test_alloc_failures();
    struct realm_kv_pool *pool = NULL;
    struct realm_err err;
    struct realm_kv_pool_params bad = {.n_layer = 2, .row_bytes = 8, .memory_bytes = 10};
    CHECK(realm_kv_pool_new(&bad, &pool, &err) == REALM_E_INVALID);
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), base);
    return tu_finish("test_kvpool");
}
