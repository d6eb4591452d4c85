/*
 * test_model.c — the forward pass against golden data, and the batching contract.
 *
 *  - stories260K (F32, ../shared/models): the logits of positions 0..3 match the float64
 *    reference within 1e-4 and greedy decoding from BOS reproduces the 256 reference tokens
 *    exactly (f32 KV cache; 1 and 3 threads).
 *  - batching: k sessions with different prompts, prefilled together in one call and then decoded
 *    interleaved, give the same logits as k separate runs (stories260K and, when cached, the real
 *    quantized models).
 *  - the error contract: bad tokens, non-consecutive sessions, a full context, rewind; engine
 *    creation with each of its allocations failing in turn (fail-after-N).
 *  - parity fixtures (tests/parity/fixtures/, JSON files made by tests/parity/gen_fixtures.py from
 *    llama.cpp and a float64 reference): for each fixture whose model file is present and
 *    identical, realm's logits on the fixture's 64 tokens meet the criteria of check_fixture().
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>

#include "model/model.h" /* internal: the attention kernels */
#include "realm/alloc.h"
#include "realm/gguf.h"
#include "realm/kvpool.h"
#include "realm/log.h"
#include "realm/model.h"
#include "realm/sched.h"
#include "realm/served.h"
#include "testutil.h"

/* ---- helpers ---- */

/* A file's contents as a NUL-terminated string (tu_read_file does not terminate). */
static char *read_text(const char *path, size_t *size) {
    size_t n;
    unsigned char *raw = tu_read_file(path, &n);
    if (!raw) return NULL;
    char *t = malloc(n + 1);
    if (t) {
        memcpy(t, raw, n);
        t[n] = 0;
        *size = n;
    }
    free(raw);
    return t;
}

struct loaded {
    struct realm_gguf *g;
    struct realm_model *m;
};

static int load_opts(const char *path, struct loaded *L, bool prepack) {
    struct realm_err err;
    memset(L, 0, sizeof *L);
    int rc = realm_gguf_open(path, &L->g, &err);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        return rc;
    }
    const struct realm_model_opts mo = {.prepack = prepack};
    rc = realm_model_load_opts(L->g, &mo, &L->m, &err);
    if (rc) {
        fprintf(stderr, "load %s: %s\n", path, err.msg);
        realm_gguf_close(L->g);
        L->g = NULL;
    }
    return rc;
}

static int load(const char *path, struct loaded *L) {
    return load_opts(path, L, false);
}

static void unload(struct loaded *L) {
    realm_model_free(L->m);
    realm_gguf_close(L->g);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Forwards one token with logits. */
static int step(struct realm_engine *e, struct realm_session *s, int32_t tok, float *logits) {
    struct realm_batch_row row = {s, tok, logits, NULL};
    struct realm_err err;
    int rc = realm_engine_forward(e, &row, 1, &err);
    if (rc) fprintf(stderr, "forward: %s\n", err.msg);
    return rc;
}

/* Reads the ints after "greedy_ids:" */
static int read_greedy(const char *path, int32_t *ids, int cap) {
    size_t size;
    char *text = read_text(path, &size);
    if (!text) return -1;
    char *p = strstr(text, "greedy_ids:");
    int n = 0;
    if (p) {
        p += strlen("greedy_ids:");
        char *end;
        for (;;) {
            long v = strtol(p, &end, 10);
            if (end == p || n >= cap) break;
            ids[n++] = (int32_t)v;
            p = end;
            while (*p == ' ')
                p++;
            if (*p == '\n' || *p == '\0') break;
        }
    }
    free(text);
    return n;
}

/* ---- stories260K ---- */

static void test_stories_logits(struct loaded *L, int n_threads) {
    const char *path = tu_shared_path("models/stories260K.logits4.txt");
    if (!path) return;
    size_t size;
    char *text = read_text(path, &size);
    CHECK(text != NULL);
    if (!text) return;
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    CHECK_EQ_INT(realm_engine_new(L->m, n_threads, 8, &e, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new_kv(L->m, 0, REALM_KV_F32, &s, NULL), REALM_OK);
    float logits[512];
    int lines = 0;
    double worst = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *p = line, *end;
        long pos = strtol(p, &end, 10);
        p = end;
        long tok = strtol(p, &end, 10);
        p = end;
        CHECK_EQ_INT(pos, lines);
        CHECK_EQ_INT(step(e, s, (int32_t)tok, logits), REALM_OK);
        for (int i = 0; i < 512; i++) {
            double ref = strtod(p, &end);
            CHECK(end != p);
            p = end;
            double d = fabs(ref - logits[i]);
            if (d > worst) worst = d;
        }
        lines++;
    }
    CHECK_EQ_INT(lines, 4);
    CHECKF(worst <= 1e-4, "max |logit - reference| = %g", worst);
    tu_log("stories260K logits4 (%d threads): max abs diff %.3g", n_threads, worst);
    realm_session_free(s);
    realm_engine_free(e);
    free(text);
}

static void test_stories_greedy(struct loaded *L, int n_threads, enum realm_kv_type kv) {
    const char *path = tu_shared_path("models/stories260K.greedy256.txt");
    if (!path) return;
    int32_t ref[300];
    int n = read_greedy(path, ref, 300);
    CHECK_EQ_INT(n, 256);
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    CHECK_EQ_INT(realm_engine_new(L->m, n_threads, 1, &e, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new_kv(L->m, 512, kv, &s, NULL), REALM_OK);
    float logits[512];
    int32_t tok = 1; /* BOS */
    int same = 0;
    for (int i = 0; i < n; i++) {
        if (step(e, s, tok, logits)) break;
        tok = argmax(logits, 512);
        if (tok != ref[i]) break;
        same++;
    }
    if (kv == REALM_KV_F32)
        CHECKF(same == n, "greedy diverges from the reference at token %d (%d threads)", same,
               n_threads);
    tu_log("stories260K greedy (%d threads, kv %s): %d/%d tokens match", n_threads,
           kv == REALM_KV_F32 ? "f32" : "f16", same, n);
    realm_session_free(s);
    realm_engine_free(e);
}

/* ---- batching ---- */

static double max_rel_diff(const float *a, const float *b, int n) {
    double mx = 0, scale = 1e-6;
    for (int i = 0; i < n; i++) {
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
        if (fabs(a[i] - b[i]) > mx) mx = fabs(a[i] - b[i]);
    }
    return mx / scale;
}

/* k sessions with prompts of different lengths: reference = each alone, token by token; batched =
 * all prompts in one forward (logits for every row), then `n_dec` interleaved decode steps with one
 * row per session. Logits must agree (tolerance: kernels may sum in another order for n > 1). */
/* Returns the largest relative difference seen (0: bit for bit). */
static double test_batching(struct loaded *L, int n_threads, const char *name) {
    enum { K = 3, MAXP = 7, NDEC = 4 };
    const int plen[K] = {5, 7, 3};
    const int V = realm_model_config(L->m)->n_vocab;
    int32_t prompt[K][MAXP + NDEC];
    tu_rng rng = {12345};
    for (int k = 0; k < K; k++)
        for (int i = 0; i < MAXP + NDEC; i++)
            prompt[k][i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V);
    const int total = MAXP + NDEC;
    double worst = 0;
    float *ref = malloc(sizeof(float) * (size_t)K * total * V);
    float *got = malloc(sizeof(float) * (size_t)K * total * V);
    struct realm_batch_row *rows = malloc(sizeof(*rows) * K * MAXP);
    struct realm_engine *e = NULL;
    struct realm_session *s[K] = {0};
    CHECK_EQ_INT(realm_engine_new(L->m, n_threads, K * MAXP, &e, NULL), REALM_OK);
    if (!e || !ref || !got || !rows) goto out;
    /* reference: separate sessions, one token at a time */
    for (int k = 0; k < K; k++) {
        struct realm_session *one = NULL;
        CHECK_EQ_INT(realm_session_new(L->m, 64, &one, NULL), REALM_OK);
        for (int i = 0; i < plen[k] + NDEC; i++)
            CHECK_EQ_INT(step(e, one, prompt[k][i], ref + ((size_t)k * total + i) * V), REALM_OK);
        realm_session_free(one);
    }
    /* batched prefill of all prompts in one call; logits for the last row of each prompt and for
     * row 1 (so that the last layer's row compaction moves rows), none for the others */
    int n = 0;
    bool want[K][MAXP + NDEC];
    for (int k = 0; k < K; k++) {
        CHECK_EQ_INT(realm_session_new(L->m, 64, &s[k], NULL), REALM_OK);
        for (int i = 0; i < plen[k]; i++) {
            want[k][i] = i == plen[k] - 1 || i == 1;
            rows[n++] = (struct realm_batch_row){
                s[k], prompt[k][i], want[k][i] ? got + ((size_t)k * total + i) * V : NULL, NULL};
        }
        for (int i = plen[k]; i < MAXP + NDEC; i++)
            want[k][i] = true;
    }
    struct realm_err err;
    CHECK_EQ_INT(realm_engine_forward(e, rows, n, &err), REALM_OK);
    for (int k = 0; k < K; k++)
        CHECK_EQ_INT(realm_session_len(s[k]), plen[k]);
    /* interleaved decode: one row per session per call, sessions in rotating order */
    for (int d = 0; d < NDEC; d++) {
        for (int j = 0; j < K; j++) {
            int k = (j + d) % K;
            int i = plen[k] + d;
            rows[j] = (struct realm_batch_row){s[k], prompt[k][i],
                                               got + ((size_t)k * total + i) * V, NULL};
        }
        CHECK_EQ_INT(realm_engine_forward(e, rows, K, &err), REALM_OK);
    }
    for (int k = 0; k < K; k++)
        for (int i = 0; i < plen[k] + NDEC; i++) {
            if (!want[k][i]) continue;
            const float *a = got + ((size_t)k * total + i) * V,
                        *b = ref + ((size_t)k * total + i) * V;
            double d = max_rel_diff(a, b, V);
            if (d > worst) worst = d;
            CHECK_EQ_INT(argmax(a, V), argmax(b, V));
        }
    CHECKF(worst <= 1e-4, "%s: batched vs separate logits differ by %g (relative to max |logit|)",
           name, worst);
    tu_log("%s batching (%d threads): max relative diff %.3g", name, n_threads, worst);
out:
    for (int k = 0; k < K; k++)
        realm_session_free(s[k]);
    realm_engine_free(e);
    free(ref);
    free(got);
    free(rows);
    return worst;
}

/* ---- paged KV sessions ---- */

/* Runs tokens[0..n) through s in chunks of `chunk` rows; logits of the last row into `last`. */
static int run_chunks(struct realm_engine *e, struct realm_session *s, const int32_t *tokens, int n,
                      int chunk, float *last, struct realm_err *err) {
    struct realm_batch_row rows[16];
    for (int i = 0; i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        for (int j = 0; j < k; j++)
            rows[j] =
                (struct realm_batch_row){s, tokens[i + j], i + j == n - 1 ? last : NULL, NULL};
        int rc = realm_engine_forward(e, rows, k, err);
        if (rc) return rc;
    }
    return REALM_OK;
}

/* A paged session (blocks of 4 positions, so attention crosses many runs) gives the same logits,
 * bit for bit, as a contiguous one; a second session of the same tenant attaches the cached
 * prefix and still gets the same bits; another tenant attaches nothing; a session that rewinds
 * into shared blocks copies them and leaves the other session intact; a tenant over its quota
 * gets REALM_E_KV_FULL with nothing changed; after every session ends, no block is held. */
static void test_paged(struct loaded *L, int n_threads, const char *name, int n_prompt) {
    enum { NDEC = 3, CHUNK = 16, BT = 4 };
    const struct realm_model_config *c = realm_model_config(L->m);
    const int V = c->n_vocab, n_ctx = n_prompt + NDEC + 8;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(n_prompt + NDEC));
    float *ref = malloc(sizeof(float) * (size_t)(NDEC + 1) * V);
    float *got = malloc(sizeof(float) * (size_t)V);
    struct realm_engine *e = NULL;
    struct realm_kv_pool *pool = NULL;
    struct realm_session *cs = NULL, *a = NULL, *b = NULL, *o = NULL, *q = NULL;
    struct realm_err err;
    tu_rng rng = {777};
    for (int i = 0; i < n_prompt + NDEC; i++)
        tok[i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V);
    CHECK_EQ_INT(realm_engine_new(L->m, n_threads, CHUNK, &e, NULL), REALM_OK);
    const int32_t n_blocks = 4 * ((n_ctx + BT - 1) / BT) + 8;
    CHECK_EQ_INT(realm_model_kv_pool_new(L->m, REALM_KV_F16,
                                         (size_t)n_blocks *
                                             realm_model_kv_block_bytes(L->m, REALM_KV_F16, BT),
                                         BT, 0, &pool, &err),
                 REALM_OK);
    if (!tok || !ref || !got || !e || !pool) goto out;

    /* reference: contiguous session, prompt in chunks, then NDEC decode steps */
    CHECK_EQ_INT(realm_session_new(L->m, n_ctx, &cs, NULL), REALM_OK);
    CHECK_EQ_INT(run_chunks(e, cs, tok, n_prompt, CHUNK, ref, &err), REALM_OK);
    for (int d = 0; d < NDEC; d++)
        CHECK_EQ_INT(step(e, cs, tok[n_prompt + d], ref + (size_t)(d + 1) * V), REALM_OK);

    /* paged, same chunks: identical bits */
    CHECK_EQ_INT(realm_session_new_paged(L->m, pool, 1, n_ctx, &a, &err), REALM_OK);
    CHECK(realm_session_is_paged(a));
    CHECK_EQ_INT(run_chunks(e, a, tok, n_prompt, CHUNK, got, &err), REALM_OK);
    CHECKF(memcmp(got, ref, sizeof(float) * (size_t)V) == 0, "%s: paged prefill logits differ",
           name);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 1), (n_prompt + BT - 1) / BT);

    /* same tenant, same prompt: the full blocks are attached, the rest computed, same bits */
    CHECK_EQ_INT(realm_session_new_paged(L->m, pool, 1, n_ctx, &b, &err), REALM_OK);
    int32_t att = realm_session_attach_prefix(b, tok, n_prompt);
    CHECK_EQ_INT(att, ((n_prompt - 1) / BT) * BT);
    CHECK_EQ_INT(realm_session_len(b), att);
    CHECK_EQ_INT(run_chunks(e, b, tok + att, n_prompt - att, CHUNK, got, &err), REALM_OK);
    CHECKF(memcmp(got, ref, sizeof(float) * (size_t)V) == 0, "%s: logits after prefix reuse differ",
           name);
    struct realm_kv_pool_stats st;
    realm_kv_pool_get_stats(pool, &st);
    CHECK_EQ_INT((int)st.prefix_hits, att / BT);

    /* another tenant never sees tenant 1's cache */
    CHECK_EQ_INT(realm_session_new_paged(L->m, pool, 2, n_ctx, &o, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_attach_prefix(o, tok, n_prompt), 0);

    /* b rewinds into the shared blocks and writes other tokens: copy-on-write keeps a intact */
    const int keep = att > BT ? att - BT / 2 : 1;
    CHECK_EQ_INT(realm_session_rewind(b, keep), REALM_OK);
    int32_t other[BT];
    for (int i = 0; i < BT; i++)
        other[i] = (tok[keep + i] + 1) % V;
    CHECK_EQ_INT(run_chunks(e, b, other, BT, CHUNK, got, &err), REALM_OK);
    if (att > BT) {
        realm_kv_pool_get_stats(pool, &st);
        CHECK(st.cow_copies >= 1);
    }
    for (int d = 0; d < NDEC; d++) {
        CHECK_EQ_INT(step(e, a, tok[n_prompt + d], got), REALM_OK);
        CHECKF(memcmp(got, ref + (size_t)(d + 1) * V, sizeof(float) * (size_t)V) == 0,
               "%s: paged decode step %d differs after another session's copy-on-write", name, d);
    }

    /* quota: 2 blocks for tenant 3; 3 blocks' worth of rows fail as a whole */
    CHECK_EQ_INT(realm_kv_pool_set_quota(pool, 3, 2), REALM_OK);
    CHECK_EQ_INT(realm_session_new_paged(L->m, pool, 3, n_ctx, &q, &err), REALM_OK);
    CHECK_EQ_INT(run_chunks(e, q, tok, 3 * BT, CHUNK, NULL, &err), REALM_E_KV_FULL);
    CHECK(strstr(err.msg, "quota") != NULL);
    CHECK_EQ_INT(realm_session_len(q), 0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 3), 0);
    CHECK_EQ_INT(run_chunks(e, q, tok, 2 * BT, CHUNK, NULL, &err), REALM_OK);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 3), 2);
    /* a batch mixing a session that fits with one that does not changes neither */
    struct realm_batch_row mix[2] = {{o, tok[0], NULL, NULL}, {q, tok[0], NULL, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, mix, 2, &err), REALM_E_KV_FULL);
    CHECK_EQ_INT(realm_session_len(o), 0);
    CHECK_EQ_INT(realm_kv_pool_tenant_used(pool, 2), 0);
    tu_log("%s paged KV (%d threads, %d-token prompt): bit-identical, prefix %d tokens reused",
           name, n_threads, n_prompt, att);
out:
    realm_session_free(cs);
    realm_session_free(a);
    realm_session_free(b);
    realm_session_free(o);
    realm_session_free(q);
    if (pool) {
        realm_kv_pool_get_stats(pool, &st);
        CHECK_EQ_INT(st.used, 0);
        CHECK_EQ_INT(st.free + st.cached_idle, st.n_blocks);
    }
    realm_kv_pool_free(pool);
    realm_engine_free(e);
    free(tok);
    free(ref);
    free(got);
}

/* Prepacked weights (Q4_K / Q6_K in interleaved 16-row blocks) give the same logits, bit for
 * bit, as the mapped originals: prompt rows in one batch, then decode steps. */
static void test_prepack_same_bits(const char *path) {
    struct loaded A, P;
    CHECK_EQ_INT(load_opts(path, &A, false), REALM_OK);
    CHECK_EQ_INT(load_opts(path, &P, true), REALM_OK);
    if (!A.m || !P.m) return;
    const int V = realm_model_config(A.m)->n_vocab;
    enum { NP = 9, ND = 3 };
    float *la = malloc(sizeof(float) * (size_t)V), *lp = malloc(sizeof(float) * (size_t)V);
    struct realm_engine *ea = NULL, *ep = NULL;
    struct realm_session *sa = NULL, *sp = NULL;
    CHECK_EQ_INT(realm_engine_new(A.m, 2, 16, &ea, NULL), REALM_OK);
    CHECK_EQ_INT(realm_engine_new(P.m, 2, 16, &ep, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new(A.m, 64, &sa, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new(P.m, 64, &sp, NULL), REALM_OK);
    int32_t tok[NP + ND];
    tu_rng rng = {4242};
    for (int i = 0; i < NP + ND; i++)
        tok[i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V);
    struct realm_err err;
    if (la && lp && ea && ep && sa && sp) {
        CHECK_EQ_INT(run_chunks(ea, sa, tok, NP, 16, la, &err), REALM_OK);
        CHECK_EQ_INT(run_chunks(ep, sp, tok, NP, 16, lp, &err), REALM_OK);
        CHECKF(!memcmp(la, lp, sizeof(float) * (size_t)V), "prepacked prefill logits differ");
        for (int d = 0; d < ND; d++) {
            CHECK_EQ_INT(step(ea, sa, tok[NP + d], la), REALM_OK);
            CHECK_EQ_INT(step(ep, sp, tok[NP + d], lp), REALM_OK);
            CHECKF(!memcmp(la, lp, sizeof(float) * (size_t)V), "prepacked decode step %d differs",
                   d);
        }
    }
    tu_log("prepacked weights: same bits as the mapped ones (%s)", path);
    realm_session_free(sa);
    realm_session_free(sp);
    realm_engine_free(ea);
    realm_engine_free(ep);
    free(la);
    free(lp);
    unload(&A);
    unload(&P);
}

/* ---- out of memory at every allocation of engine creation (fail-after-N) ---- */

/* realm_engine_new with the n-th allocation failing, for every n until it succeeds: each try
 * returns REALM_OK or REALM_E_NOMEM with a message, writes *out only on success and frees all it
 * allocated (its thread pool included); the engine that finally comes out computes the same
 * logits as one made without injected failures. */
static void test_engine_alloc_failures(struct loaded *L) {
    const struct realm_model_config *c = realm_model_config(L->m);
    const size_t V = (size_t)c->n_vocab;
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    struct realm_err err;
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    CHECK_EQ_INT(realm_engine_new(L->m, 2, 4, &e, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L->m, 8, &s, &err), REALM_OK);
    struct realm_batch_row row = {s, 1, want, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, &row, 1, &err), REALM_OK);
    realm_engine_free(e);
    const int64_t before = realm_alloc_bytes_in_use();
    int n_nomem = 0, ok = 0;
    for (int64_t f = 0; f < 400 && !ok; f++) {
        static char untouched; /* what *out holds until a call succeeds */
        struct realm_engine *const sentinel = (struct realm_engine *)&untouched;
        e = sentinel;
        err = (struct realm_err){0};
        realm_alloc_fail_after(f);
        const int rc = realm_engine_new(L->m, 2, 4, &e, &err);
        realm_alloc_fail_after(-1);
        CHECKF(rc == REALM_OK || rc == REALM_E_NOMEM, "fail after %lld: rc %d", (long long)f, rc);
        if (rc != REALM_OK) {
            n_nomem += rc == REALM_E_NOMEM;
            CHECKF(err.msg[0] != 0, "fail after %lld: no message", (long long)f);
            CHECKF(e == sentinel, "fail after %lld: *out written on failure", (long long)f);
            CHECKF(realm_alloc_bytes_in_use() == before, "fail after %lld: %lld bytes leaked",
                   (long long)f, (long long)(realm_alloc_bytes_in_use() - before));
            continue;
        }
        ok = 1;
        CHECK_EQ_INT(realm_session_rewind(s, 0), REALM_OK);
        row.logits = got;
        CHECK_EQ_INT(realm_engine_forward(e, &row, 1, &err), REALM_OK);
        CHECK(memcmp(want, got, sizeof(float) * V) == 0);
        realm_engine_free(e);
        CHECK_EQ_INT(realm_alloc_bytes_in_use(), before);
    }
    CHECK(ok);
    CHECKF(n_nomem >= 10, "only %d allocation failures seen", n_nomem);
    tu_log("engine_new: %d injected failures before success", n_nomem);
    realm_session_free(s);
    free(want);
    free(got);
}

/* ---- out of memory at every allocation of a served model (fail-after-N) ---- */

/* realm_served_new — model load, tokenizer, engine, KV pool, scheduler — with the n-th allocation
 * failing, for every n until it succeeds (prepacked too, which allocates the packed copies):
 * each try returns REALM_OK or REALM_E_NOMEM with a message, leaves *out untouched on failure
 * and frees everything it allocated; the bundle that finally comes out decodes through its
 * scheduler to the same logits as the engine over a model loaded without failures. */
static void test_served_alloc_failures(struct loaded *L, bool prepack) {
    const size_t V = (size_t)realm_model_config(L->m)->n_vocab;
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * V);
    struct realm_err err;
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    const int32_t toks[3] = {1, 42, 7};
    CHECK_EQ_INT(realm_engine_new(L->m, 1, 4, &e, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L->m, 8, &s, &err), REALM_OK);
    for (int i = 0; i < 3; i++) {
        struct realm_batch_row row = {s, toks[i], i == 2 ? want : NULL, NULL};
        CHECK_EQ_INT(realm_engine_forward(e, &row, 1, &err), REALM_OK);
    }
    realm_session_free(s);
    realm_engine_free(e);
    const struct realm_served_params sp = {
        .prepack = prepack, .threads = 1, .max_batch = 4, .kv_positions = 64};
    const int64_t before = realm_alloc_bytes_in_use();
    int n_nomem = 0, ok = 0;
    for (int64_t f = 0; f < 20000 && !ok; f++) {
        static char untouched;
        struct realm_served *const sentinel = (struct realm_served *)&untouched;
        struct realm_served *sv = sentinel;
        err = (struct realm_err){0};
        realm_alloc_fail_after(f);
        const int rc = realm_served_new(L->g, &sp, &sv, &err);
        realm_alloc_fail_after(-1);
        CHECKF(rc == REALM_OK || rc == REALM_E_NOMEM, "fail after %lld: rc %d (%s)", (long long)f,
               rc, err.msg);
        if (rc != REALM_OK) {
            n_nomem += rc == REALM_E_NOMEM;
            CHECKF(err.msg[0] != 0, "fail after %lld: no message", (long long)f);
            CHECKF(sv == sentinel, "fail after %lld: *out written on failure", (long long)f);
            CHECKF(realm_alloc_bytes_in_use() == before, "fail after %lld: %lld bytes leaked",
                   (long long)f, (long long)(realm_alloc_bytes_in_use() - before));
            if (rc != REALM_E_NOMEM) break;
            continue;
        }
        ok = 1;
        CHECK_EQ_INT(realm_served_session(sv, 1, 8, &s, &err), REALM_OK);
        CHECK_EQ_INT(realm_sched_decode(sv->sched, 1, s, toks, 3, got, NULL, &err), REALM_OK);
        CHECK(memcmp(want, got, sizeof(float) * V) == 0);
        realm_session_free(s);
        realm_served_free(sv);
        CHECK_EQ_INT(realm_alloc_bytes_in_use(), before);
    }
    CHECK(ok);
    CHECKF(n_nomem >= 20, "only %d allocation failures seen", n_nomem);
    tu_log("served_new%s: %d injected failures before success", prepack ? " (prepack)" : "",
           n_nomem);
    free(want);
    free(got);
}

/* ---- error contract ---- */

static void test_errors(struct loaded *L) {
    const struct realm_model_config *c = realm_model_config(L->m);
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL, *t = NULL;
    struct realm_err err;
    CHECK_EQ_INT(realm_session_new(L->m, -1, &s, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_session_new(L->m, c->n_ctx_train + 1, &s, &err), REALM_E_INVALID);
    CHECK(s == NULL);
    CHECK_EQ_INT(realm_session_new_kv(L->m, 4, (enum realm_kv_type)7, &s, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_engine_new(L->m, 2, 0, &e, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_engine_new(L->m, 2, 4, &e, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L->m, 4, &s, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L->m, 0, &t, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_n_ctx(s), 4);
    CHECK_EQ_INT(realm_session_n_ctx(t), c->n_ctx_train);
    float *lg = malloc(sizeof(float) * (size_t)c->n_vocab);
    float *lg2 = malloc(sizeof(float) * (size_t)c->n_vocab);

    struct realm_batch_row bad[3] = {{s, c->n_vocab, NULL, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    bad[0] = (struct realm_batch_row){s, -1, NULL, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    bad[0] = (struct realm_batch_row){NULL, 1, NULL, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    /* s, t, s: not consecutive */
    bad[0] = (struct realm_batch_row){s, 1, NULL, NULL};
    bad[1] = (struct realm_batch_row){t, 1, NULL, NULL};
    bad[2] = (struct realm_batch_row){s, 1, NULL, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 3, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_engine_forward(e, bad, 5, &err), REALM_E_INVALID); /* above max_batch */
    CHECK_EQ_INT(realm_engine_forward(e, bad, 0, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 0);
    CHECK_EQ_INT(realm_session_len(t), 0);

    /* fill s to its context of 4, then one more fails as a whole (t is not advanced either) */
    struct realm_batch_row r4[4] = {
        {s, 1, NULL, NULL}, {s, 2, NULL, NULL}, {s, 3, NULL, NULL}, {s, 4, lg, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, r4, 3, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 3);
    struct realm_batch_row two[2] = {{t, 5, NULL, NULL}, {s, 4, NULL, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, two, 2, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 4);
    two[1] = (struct realm_batch_row){s, 5, NULL, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, two, 2, &err), REALM_E_CONTEXT_FULL);
    CHECK(strstr(err.msg, "context") != NULL);
    CHECK_EQ_INT(realm_session_len(s), 4);
    CHECK_EQ_INT(realm_session_len(t), 1);

    /* rewind: re-running the last token after rewinding reproduces its logits */
    CHECK_EQ_INT(realm_session_rewind(s, 5), REALM_E_RANGE);
    CHECK_EQ_INT(realm_session_rewind(s, -1), REALM_E_RANGE);
    CHECK_EQ_INT(realm_session_rewind(s, 3), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 3);
    CHECK_EQ_INT(step(e, s, 4, lg), REALM_OK);
    CHECK_EQ_INT(realm_session_rewind(s, 3), REALM_OK);
    CHECK_EQ_INT(step(e, s, 7, lg2), REALM_OK); /* other token: other logits */
    CHECK(memcmp(lg, lg2, sizeof(float) * (size_t)c->n_vocab) != 0);
    CHECK_EQ_INT(realm_session_rewind(s, 3), REALM_OK);
    CHECK_EQ_INT(step(e, s, 4, lg2), REALM_OK);
    CHECK(memcmp(lg, lg2, sizeof(float) * (size_t)c->n_vocab) == 0);
    CHECK_EQ_INT(realm_session_rewind(s, 0), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 0);

    free(lg);
    free(lg2);
    realm_session_free(s);
    realm_session_free(t);
    realm_engine_free(e);
}

/* ---- context_length from the file ---- */

static char g_last_log[512];
static void record_log(int level, const char *module, const char *msg, void *user) {
    (void)level, (void)user;
    snprintf(g_last_log, sizeof g_last_log, "%s: %s", module, msg);
}

/* A model file with its <arch>.context_length (a u32 in the metadata) replaced by `ctx`, loaded
 * from memory; *buf keeps the bytes (64-byte aligned, like a mapping) and must be freed. */
static int load_with_ctx(const char *path, uint32_t ctx, struct loaded *L, unsigned char **buf,
                         struct realm_err *err) {
    size_t n;
    unsigned char *raw = tu_read_file(path, &n);
    memset(L, 0, sizeof *L);
    *buf = raw ? aligned_alloc(64, (n + 63) / 64 * 64) : NULL;
    if (!*buf) {
        free(raw);
        return REALM_E_NOMEM;
    }
    memcpy(*buf, raw, n);
    free(raw);
    static const char key[] = ".context_length"; /* "<arch>.context_length" (not "original_...") */
    unsigned char *k = memmem(*buf, n, key, sizeof key - 1);
    uint32_t type = 0;
    if (k) memcpy(&type, k + sizeof key - 1, 4);
    CHECKF(k && type == 4 /* GGUF u32 */, "context_length not found as a u32");
    if (!k || type != 4) return REALM_E_FORMAT;
    memcpy(k + sizeof key - 1 + 4, &ctx, 4);
    int rc = realm_gguf_open_memory(*buf, n, "patched", &L->g, err);
    if (rc) return rc;
    rc = realm_model_load(L->g, &L->m, err);
    if (rc) {
        realm_gguf_close(L->g);
        L->g = NULL;
    }
    return rc;
}

/* A file that claims an absurd context is capped at REALM_MODEL_MAX_CTX with a warning naming
 * the key, and then behaves exactly like the original (sizes computed from n_ctx_train stay in
 * range); a zero context is refused. */
static void test_huge_context(const char *path, struct loaded *orig) {
    struct realm_err err;
    struct loaded H;
    unsigned char *buf;
    g_last_log[0] = 0;
    realm_log_set_sink(record_log, NULL);
    int rc = load_with_ctx(path, UINT32_MAX, &H, &buf, &err);
    realm_log_set_sink(NULL, NULL);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    CHECKF(strstr(g_last_log, "context_length: 4294967295, capped to 1048576") != NULL, "log: %s",
           g_last_log);
    if (rc == REALM_OK) {
        const int32_t nv = realm_model_config(H.m)->n_vocab;
        CHECK_EQ_INT(realm_model_config(H.m)->n_ctx_train, REALM_MODEL_MAX_CTX);
        struct realm_session *s = NULL, *o = NULL;
        CHECK_EQ_INT(realm_session_new(H.m, REALM_MODEL_MAX_CTX + 1, &s, &err), REALM_E_INVALID);
        struct realm_kv_pool *pool = NULL;
        CHECK_EQ_INT(realm_model_kv_pool_new(H.m, REALM_KV_F16,
                                             4 * realm_model_kv_block_bytes(H.m, REALM_KV_F16, 16),
                                             16, 0, &pool, &err),
                     REALM_OK);
        CHECK_EQ_INT(realm_session_new_paged(H.m, pool, 1, 0, &s, &err),
                     REALM_OK); /* n_ctx_train positions */
        CHECK_EQ_INT(realm_session_n_ctx(s), REALM_MODEL_MAX_CTX);
        CHECK_EQ_INT(realm_session_new(orig->m, 16, &o, &err), REALM_OK);
        struct realm_engine *eh = NULL, *eo = NULL;
        CHECK_EQ_INT(realm_engine_new(H.m, 2, 8, &eh, &err), REALM_OK);
        CHECK_EQ_INT(realm_engine_new(orig->m, 2, 8, &eo, &err), REALM_OK);
        float *a = malloc((size_t)nv * sizeof *a), *b = malloc((size_t)nv * sizeof *b);
        const int32_t toks[5] = {1, 45, 300, 7, 200};
        for (int i = 0; s && o && eh && eo && i < 5; i++) {
            CHECK_EQ_INT(step(eh, s, toks[i], a), REALM_OK);
            CHECK_EQ_INT(step(eo, o, toks[i], b), REALM_OK);
            CHECKF(!memcmp(a, b, (size_t)nv * sizeof *a),
                   "token %d: logits differ from the original model's", i);
        }
        free(a);
        free(b);
        realm_engine_free(eh);
        realm_engine_free(eo);
        realm_session_free(s);
        realm_session_free(o);
        realm_kv_pool_free(pool);
        unload(&H);
    }
    free(buf);
    /* exactly the cap: kept as is, nothing logged */
    g_last_log[0] = 0;
    realm_log_set_sink(record_log, NULL);
    rc = load_with_ctx(path, REALM_MODEL_MAX_CTX, &H, &buf, &err);
    realm_log_set_sink(NULL, NULL);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    if (rc == REALM_OK) {
        CHECK_EQ_INT(realm_model_config(H.m)->n_ctx_train, REALM_MODEL_MAX_CTX);
        unload(&H);
    }
    CHECK(g_last_log[0] == 0);
    free(buf);
    /* zero: refused, with the key in the message */
    rc = load_with_ctx(path, 0, &H, &buf, &err);
    CHECK_EQ_INT(rc, REALM_E_FORMAT);
    CHECKF(strstr(err.msg, "context_length") != NULL, "%s", err.msg);
    free(buf);
}

/* ---- qwen3 / phi3 / gemma2 (issue 19) on the tiny synthetic files ---- */

/* phi3 128k-style RoPE: tiny-phi3 has rope_factors_short/_long and original_context_length 2048.
 * With its context_length patched to 4096, a session of at most 2048 positions uses the short
 * factors (the same bits as the unpatched model), a longer one the long factors (other logits
 * once positions are past 0) — llama.cpp's choice by n_ctx_seq > n_ctx_orig_yarn. */
static void test_phi3_long_rope(const char *path, struct loaded *orig) {
    struct realm_err err;
    struct loaded P;
    unsigned char *buf = NULL;
    int rc = load_with_ctx(path, 4096, &P, &buf, &err);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    if (rc) {
        free(buf);
        return;
    }
    const int V = realm_model_config(P.m)->n_vocab;
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V),
          *c = malloc(sizeof(float) * (size_t)V);
    struct realm_engine *ep = NULL, *eo = NULL;
    struct realm_session *s_short = NULL, *s_long = NULL, *s_orig = NULL;
    CHECK_EQ_INT(realm_engine_new(P.m, 2, 4, &ep, &err), REALM_OK);
    CHECK_EQ_INT(realm_engine_new(orig->m, 2, 4, &eo, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(P.m, 2048, &s_short, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(P.m, 2049, &s_long, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_new(orig->m, 64, &s_orig, &err), REALM_OK);
    const int32_t toks[4] = {1, 300, 42, 977};
    for (int i = 0; a && b && c && ep && eo && s_short && s_long && s_orig && i < 4; i++) {
        CHECK_EQ_INT(step(ep, s_short, toks[i], a), REALM_OK);
        CHECK_EQ_INT(step(ep, s_long, toks[i], b), REALM_OK);
        CHECK_EQ_INT(step(eo, s_orig, toks[i], c), REALM_OK);
        CHECKF(!memcmp(a, c, sizeof(float) * (size_t)V), "token %d: short factors differ", i);
        if (i == 0)
            CHECKF(!memcmp(a, b, sizeof(float) * (size_t)V), "position 0 does not rotate");
        else
            CHECKF(max_rel_diff(a, b, V) > 1e-3, "token %d: long factors not used", i);
    }
    tu_log("phi3 rope factors: short up to 2048 positions, long beyond");
    realm_session_free(s_short);
    realm_session_free(s_long);
    realm_session_free(s_orig);
    realm_engine_free(ep);
    realm_engine_free(eo);
    free(a);
    free(b);
    free(c);
    unload(&P);
    free(buf);
}

/* An architecture realm does not run is refused with REALM_E_UNSUPPORTED naming it (the tiny
 * qwen3 file with general.architecture rewritten to "qwenX"). */
static void test_unsupported_arch(const char *path) {
    size_t n;
    unsigned char *raw = tu_read_file(path, &n);
    CHECK(raw != NULL);
    if (!raw) return;
    unsigned char *buf = aligned_alloc(64, (n + 63) / 64 * 64);
    CHECK(buf != NULL);
    if (buf) {
        memcpy(buf, raw, n);
        static const char key[] = "general.architecture";
        unsigned char *k = memmem(buf, n, key, sizeof key - 1);
        /* key, then the u32 type (8: string), the u64 length (5), the bytes */
        CHECK(k && !memcmp(k + sizeof key - 1 + 12, "qwen3", 5));
        struct realm_gguf *g = NULL;
        struct realm_model *m = NULL;
        struct realm_err err;
        if (k) memcpy(k + sizeof key - 1 + 12, "qwenX", 5);
        CHECK_EQ_INT(realm_gguf_open_memory(buf, n, "patched", &g, &err), REALM_OK);
        if (g) {
            CHECK_EQ_INT(realm_model_load(g, &m, &err), REALM_E_UNSUPPORTED);
            CHECKF(strstr(err.msg, "'qwenX'") != NULL, "%s", err.msg);
            CHECK(m == NULL);
            realm_gguf_close(g);
        }
        free(buf);
    }
    free(raw);
}

/* The shape each tiny synthetic file must load as (scripts/gen_synthetic.py's SHAPES / EXTRA). */
static void check_tiny_config(const struct realm_model_config *c, enum realm_arch arch) {
    CHECK_EQ_INT(c->arch, arch);
    CHECK_EQ_INT(c->n_layer, 4);
    CHECK_EQ_INT(c->n_embd, 256);
    CHECK_EQ_INT(c->n_ff, 768);
    CHECK_EQ_INT(c->n_head, 4);
    CHECK_EQ_INT(c->n_head_kv, 2);
    CHECK_EQ_INT(c->n_vocab, 1024);
    CHECK_EQ_INT(c->head_dim, arch == REALM_ARCH_PHI3 ? 64 : 128); /* key_length for the others */
    CHECK_EQ_INT(c->sliding_window, arch == REALM_ARCH_GEMMA2 ? 16 : 0); /* phi3's is ignored */
}

/* Every new architecture, F16 and Q4_K_M: batched == solo bit for bit, paged == contiguous past
 * gemma2's 16-token window, prepacked == mapped (phi3's fused tensors are packed as row ranges). */
static int test_new_archs(void) {
    static const struct {
        const char *shape;
        enum realm_arch arch;
    } archs[] = {{"tiny-qwen3", REALM_ARCH_QWEN3},
                 {"tiny-phi3", REALM_ARCH_PHI3},
                 {"tiny-gemma2", REALM_ARCH_GEMMA2}};
    static const char *const types[] = {"F16", "Q4_K_M"};
    int ran = 0;
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            char rel[256], path[4096], name[128];
            snprintf(name, sizeof name, "synthetic-%s-%s.gguf", archs[a].shape, types[t]);
            snprintf(rel, sizeof rel, "synthetic/%s", name);
            const char *p = tu_model_path(rel);
            if (!p) {
                tu_log("%s: absent (scripts/gen_synthetic.py --parity-set makes it)", name);
                continue;
            }
            snprintf(path, sizeof path, "%s", p);
            struct loaded L;
            CHECK_EQ_INT(load(path, &L), REALM_OK);
            if (!L.m) continue;
            check_tiny_config(realm_model_config(L.m), archs[a].arch);
            CHECKF(test_batching(&L, 2, name) == 0, "%s: batched logits not bit-identical", name);
            test_paged(&L, 2, name, 45);
            if (archs[a].arch == REALM_ARCH_PHI3 && t == 0) test_phi3_long_rope(path, &L);
            if (archs[a].arch == REALM_ARCH_QWEN3 && t == 0) test_unsupported_arch(path);
            unload(&L);
            if (t == 1) test_prepack_same_bits(path);
            ran++;
        }
    return ran;
}

/* The legacy 32-element formats (their 16-row batched kernels, issue 20), on the tiny synthetic
 * llama files: batched == solo bit for bit, mapped and prepacked, and prepacked == mapped.
 * Q4_0, Q4_1, Q8_0 come with scripts/setup.sh models; Q5_0 / Q5_1 when generated
 * (scripts/gen_synthetic.py --shape tiny --types Q5_0,Q5_1). */
static int test_legacy_types(void) {
    static const char *const types[] = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"};
    int ran = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        char rel[256], path[4096], name[128];
        snprintf(name, sizeof name, "synthetic-tiny-%s.gguf", types[t]);
        snprintf(rel, sizeof rel, "synthetic/%s", name);
        const char *p = tu_model_path(rel);
        if (!p) {
            tu_log("%s: absent (scripts/gen_synthetic.py --shape tiny --types %s makes it)", name,
                   types[t]);
            continue;
        }
        snprintf(path, sizeof path, "%s", p);
        for (int packed = 0; packed < 2; packed++) {
            struct loaded L;
            CHECK_EQ_INT(load_opts(path, &L, packed), REALM_OK);
            if (!L.m) continue;
            CHECKF(test_batching(&L, 2, name) == 0, "%s%s: batched logits not bit-identical", name,
                   packed ? " (prepacked)" : "");
            unload(&L);
        }
        test_prepack_same_bits(path);
        ran++;
    }
    return ran;
}

/* ---- parity fixtures ---- */

/* FNV-1a 64 over the file size, the first and the last MiB: a cheap identity check that the cached
 * model is the file the fixture was made from (tests/parity/common.py computes the same). */
static int file_fingerprint(const char *path, char out[17]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < 8; i++) {
        h ^= (uint64_t)((uint64_t)size >> (8 * i)) & 0xff;
        h *= 0x100000001b3ULL;
    }
    static unsigned char buf[1 << 20];
    long offs[2] = {0, size > (1 << 20) ? size - (1 << 20) : 0};
    for (int k = 0; k < 2; k++) {
        fseek(f, offs[k], SEEK_SET);
        size_t n = fread(buf, 1, sizeof buf, f);
        for (size_t i = 0; i < n; i++) {
            h ^= buf[i];
            h *= 0x100000001b3ULL;
        }
    }
    fclose(f);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return 0;
}

static const char *fixture_model_path(const char *file) {
    const char *p = tu_model_path(file);
    if (p) return p;
    static char rel[512];
    snprintf(rel, sizeof rel, "synthetic/%s", file);
    return tu_model_path(rel);
}

static const cJSON *item(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}
static double num_at(const cJSON *arr, int i) {
    return cJSON_GetArrayItem(arr, i)->valuedouble;
}

/* One fixture: realm's logits on the fixture's tokens against llama.cpp's and the float64
 * reference's values stored there. Passes on the literal criterion (relative L2 to llama.cpp
 * <= 1e-2 on the stored subset, same argmax on >= 95% of positions) or the noise-aware one (as
 * close to the float64 reference as llama.cpp, x1.25 + 1e-3; argmax agreement with the reference
 * at most 4 below llama.cpp's) — see tests/parity/reference.py for why both exist. */
static int check_fixture(const char *fpath, int *n_checked) {
    size_t size;
    char *text = read_text(fpath, &size);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, size);
    free(text);
    CHECKF(j != NULL, "%s: not JSON", fpath);
    if (!j) return -1;
    const cJSON *jm = item(j, "model"), *jfp = item(j, "fingerprint"), *jt = item(j, "tokens");
    const cJSON *jla = item(j, "llama_argmax"), *jra = item(j, "ref_argmax"),
                *jpos = item(j, "positions");
    const cJSON *jids = item(j, "ids"), *jll = item(j, "llama"), *jref = item(j, "ref");
    const cJSON *jlr = item(j, "llama_ref_rel_l2"), *jlra = item(j, "llama_ref_argmax_agree");
    const bool ok = cJSON_IsString(jm) && cJSON_IsString(jfp) && cJSON_IsArray(jt) &&
                    cJSON_IsArray(jla) && cJSON_IsArray(jra) && cJSON_IsArray(jpos) &&
                    cJSON_IsArray(jids) && cJSON_IsArray(jll) && cJSON_IsArray(jref) &&
                    cJSON_IsNumber(jlr) && cJSON_IsNumber(jlra);
    CHECKF(ok, "%s: missing fields", fpath);
    if (!ok) {
        cJSON_Delete(j);
        return -1;
    }
    const char *mpath = fixture_model_path(jm->valuestring);
    char fp[17];
    if (!mpath || file_fingerprint(mpath, fp) || strcmp(fp, jfp->valuestring)) {
        tu_log("parity %s: model %s, skipped", jm->valuestring,
               mpath ? "differs from the fixture's" : "absent");
        cJSON_Delete(j);
        return 0;
    }
    char mcopy[4096];
    snprintf(mcopy, sizeof mcopy, "%s", mpath);
    struct loaded L;
    if (load(mcopy, &L)) {
        CHECKF(0, "%s: cannot load %s", fpath, mcopy);
        cJSON_Delete(j);
        return -1;
    }
    const int V = realm_model_config(L.m)->n_vocab;
    const int n = cJSON_GetArraySize(jt);
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    struct realm_batch_row *rows = malloc(sizeof(*rows) * (size_t)n);
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    CHECK_EQ_INT(realm_engine_new(L.m, 0, n, &e, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L.m, n, &s, NULL), REALM_OK);
    for (int i = 0; i < n; i++)
        rows[i] = (struct realm_batch_row){s, (int32_t)num_at(jt, i), lg + (size_t)i * V, NULL};
    struct realm_err err;
    CHECK_EQ_INT(realm_engine_forward(e, rows, n, &err), REALM_OK);
    int agree_llama = 0, agree_ref = 0;
    for (int i = 0; i < n; i++) {
        const int am = argmax(lg + (size_t)i * V, V);
        agree_llama += am == (int)num_at(jla, i);
        agree_ref += am == (int)num_at(jra, i);
    }
    double nl = 0, dl = 0, nr = 0, dr = 0;
    for (int pi = 0; pi < cJSON_GetArraySize(jpos); pi++) {
        const int p = (int)num_at(jpos, pi);
        const cJSON *rid = cJSON_GetArrayItem(jids, pi), *rl = cJSON_GetArrayItem(jll, pi),
                    *rr = cJSON_GetArrayItem(jref, pi);
        if (p < 0 || p >= n) continue;
        for (int k = 0; k < cJSON_GetArraySize(rid); k++) {
            const int id = (int)num_at(rid, k);
            if (id < 0 || id >= V) continue;
            const double x = lg[(size_t)p * V + id], a = num_at(rl, k), r = num_at(rr, k);
            nl += (x - a) * (x - a), dl += a * a;
            nr += (x - r) * (x - r), dr += r * r;
        }
    }
    const double rel_llama = sqrt(nl / (dl > 0 ? dl : 1)), rel_ref = sqrt(nr / (dr > 0 ? dr : 1));
    const bool literal = rel_llama <= 1e-2 && agree_llama * 100 >= 95 * n;
    const bool noise_aware =
        rel_ref <= 1.25 * jlr->valuedouble + 1e-3 && agree_ref >= (int)jlra->valuedouble - 4;
    CHECKF(literal || noise_aware,
           "%s: vs llama.cpp rel L2 %.3g, argmax %d/%d; vs float64 rel L2 %.3g (llama.cpp %.3g), "
           "argmax %d "
           "(llama.cpp %d)",
           jm->valuestring, rel_llama, agree_llama, n, rel_ref, jlr->valuedouble, agree_ref,
           (int)jlra->valuedouble);
    tu_log("parity %-36s %s: vs llama.cpp rel L2 %.2e argmax %d/%d; vs float64 %.2e (llama.cpp "
           "%.2e) argmax %d "
           "(llama.cpp %d)",
           jm->valuestring,
           literal       ? "literal"
           : noise_aware ? "noise-aware"
                         : "FAIL",
           rel_llama, agree_llama, n, rel_ref, jlr->valuedouble, agree_ref, (int)jlra->valuedouble);
    (*n_checked)++;
    realm_session_free(s);
    realm_engine_free(e);
    free(lg);
    free(rows);
    unload(&L);
    cJSON_Delete(j);
    return 0;
}

static void test_parity_fixtures(void) {
    const char *src = getenv("REALM_SRC");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/parity/fixtures", src ? src : "..");
    DIR *d = opendir(dir);
    if (!d) {
        tu_log("no parity fixtures in %s", dir);
        return;
    }
    int n_checked = 0, n_fixtures = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        char path[1536];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        n_fixtures++;
        check_fixture(path, &n_checked);
    }
    closedir(d);
    tu_log("parity fixtures checked: %d of %d", n_checked, n_fixtures);
    /* fixtures whose models are all absent or different would make this check pass vacuously */
    CHECKF(n_fixtures == 0 || n_checked > 0, "%d parity fixtures in %s but none could be checked",
           n_fixtures, dir);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    int ran = 0;
    const char *sp = tu_shared_path("models/stories260K.gguf");
    if (sp) {
        char path[4096];
        snprintf(path, sizeof path, "%s", sp);
        struct loaded L;
        CHECK_EQ_INT(load(path, &L), REALM_OK);
        if (L.m) {
            const struct realm_model_config *c = realm_model_config(L.m);
            CHECK_EQ_INT(c->arch, REALM_ARCH_LLAMA);
            CHECK_EQ_INT(c->n_layer, 5);
            CHECK_EQ_INT(c->n_embd, 64);
            CHECK_EQ_INT(c->n_head, 8);
            CHECK_EQ_INT(c->n_head_kv, 4);
            CHECK_EQ_INT(c->head_dim, 8);
            CHECK_EQ_INT(c->n_ff, 172);
            CHECK_EQ_INT(c->n_vocab, 512);
            CHECK(c->rope_freq_base == 10000.0f);
            test_stories_logits(&L, 1);
            test_stories_logits(&L, 3);
            test_stories_greedy(&L, 1, REALM_KV_F32);
            test_stories_greedy(&L, 3, REALM_KV_F32);
            test_stories_greedy(&L, 2, REALM_KV_F16);
            test_batching(&L, 2, "stories260K");
            test_paged(&L, 2, "stories260K", 41);
            test_errors(&L);
            test_engine_alloc_failures(&L);
            test_served_alloc_failures(&L, false);
            test_served_alloc_failures(&L, true);
            test_huge_context(path, &L);
            unload(&L);
        }
        ran++;
    }
    const char *real[] = {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"};
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++) {
        const char *p = tu_model_path(real[i]);
        if (!p) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s", p);
        struct loaded L;
        CHECK_EQ_INT(load(path, &L), REALM_OK);
        if (L.m) {
            test_batching(&L, 2, real[i]);
            /* gemma3: past its 512-token sliding window, so windowed layers start mid-block */
            test_paged(&L, 2, real[i], i == 1 ? 530 : 45);
            unload(&L);
            if (i == 1) { /* gemma3: Q4_K and Q6_K weights, packed when the AVX-512 kernels run */
                test_prepack_same_bits(path);
                struct loaded P;
                CHECK_EQ_INT(load_opts(path, &P, true), REALM_OK);
                if (P.m) {
                    test_batching(&P, 2, "gemma3 prepacked");
                    test_paged(&P, 2, "gemma3 prepacked", 40);
                    unload(&P);
                }
            }
        }
        ran++;
    }
    ran += test_new_archs();
    ran += test_legacy_types();
    test_parity_fixtures();
    if (!ran)
        tu_skip("no model: ../shared/models/stories260K.gguf and the cached models are absent");
    return tu_finish("test_model");
}
