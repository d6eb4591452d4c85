/*
 * test_model.c — the forward pass against golden data, and the batching contract.
 *
 *  - stories260K (F32, ../shared/models): the logits of positions 0..3 match the float64
 *    reference within 1e-4 and greedy decoding from BOS reproduces the 256 reference tokens
 *    exactly (f32 KV cache; 1 and 3 threads).
 *  - batching: k sessions with different prompts, prefilled together in one call and then decoded
 *    interleaved, give the same logits as k separate runs (stories260K and, when cached, the real
 *    quantized models).
 *  - the error contract: bad tokens, non-consecutive sessions, a full context, rewind.
 *  - parity fixtures (tests/parity/fixtures/, JSON files made from llama.cpp by
 *    tests/parity/gen_fixtures.py): for each fixture whose model file is present and identical,
 *    realm's logits on the fixture's 64 tokens match llama.cpp's stored subset (relative L2 over
 *    the stored entries <= 1e-2, same argmax on >= 95% of the positions).
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>

#include "realm/gguf.h"
#include "realm/model.h"
#include "testutil.h"

/* ---- helpers ---- */

struct loaded {
    struct realm_gguf *g;
    struct realm_model *m;
};

static int load(const char *path, struct loaded *L) {
    struct realm_err err;
    memset(L, 0, sizeof *L);
    int rc = realm_gguf_open(path, &L->g, &err);
    if (rc) {
        fprintf(stderr, "open %s: %s\n", path, err.msg);
        return rc;
    }
    rc = realm_model_load(L->g, &L->m, &err);
    if (rc) {
        fprintf(stderr, "load %s: %s\n", path, err.msg);
        realm_gguf_close(L->g);
        L->g = NULL;
    }
    return rc;
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
    struct realm_batch_row row = {s, tok, logits};
    struct realm_err err;
    int rc = realm_engine_forward(e, &row, 1, &err);
    if (rc) fprintf(stderr, "forward: %s\n", err.msg);
    return rc;
}

/* Reads the ints after "greedy_ids:" */
static int read_greedy(const char *path, int32_t *ids, int cap) {
    size_t size;
    char *text = (char *)tu_read_file(path, &size);
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
            while (*p == ' ') p++;
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
    char *text = (char *)tu_read_file(path, &size);
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
        CHECKF(same == n, "greedy diverges from the reference at token %d (%d threads)", same, n_threads);
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
static void test_batching(struct loaded *L, int n_threads, const char *name) {
    enum { K = 3, MAXP = 7, NDEC = 4 };
    const int plen[K] = {5, 7, 3};
    const int V = realm_model_config(L->m)->n_vocab;
    int32_t prompt[K][MAXP + NDEC];
    tu_rng rng = {12345};
    for (int k = 0; k < K; k++)
        for (int i = 0; i < MAXP + NDEC; i++) prompt[k][i] = (int32_t)(tu_rand_u64(&rng) % (uint64_t)V);
    const int total = MAXP + NDEC;
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
    /* batched prefill of all prompts in one call */
    int n = 0;
    for (int k = 0; k < K; k++) {
        CHECK_EQ_INT(realm_session_new(L->m, 64, &s[k], NULL), REALM_OK);
        for (int i = 0; i < plen[k]; i++)
            rows[n++] = (struct realm_batch_row){s[k], prompt[k][i], got + ((size_t)k * total + i) * V};
    }
    struct realm_err err;
    CHECK_EQ_INT(realm_engine_forward(e, rows, n, &err), REALM_OK);
    for (int k = 0; k < K; k++) CHECK_EQ_INT(realm_session_len(s[k]), plen[k]);
    /* interleaved decode: one row per session per call, sessions in rotating order */
    for (int d = 0; d < NDEC; d++) {
        for (int j = 0; j < K; j++) {
            int k = (j + d) % K;
            int i = plen[k] + d;
            rows[j] = (struct realm_batch_row){s[k], prompt[k][i], got + ((size_t)k * total + i) * V};
        }
        CHECK_EQ_INT(realm_engine_forward(e, rows, K, &err), REALM_OK);
    }
    double worst = 0;
    for (int k = 0; k < K; k++)
        for (int i = 0; i < plen[k] + NDEC; i++) {
            const float *a = got + ((size_t)k * total + i) * V, *b = ref + ((size_t)k * total + i) * V;
            double d = max_rel_diff(a, b, V);
            if (d > worst) worst = d;
            CHECK_EQ_INT(argmax(a, V), argmax(b, V));
        }
    CHECKF(worst <= 1e-4, "%s: batched vs separate logits differ by %g (relative to max |logit|)", name, worst);
    tu_log("%s batching (%d threads): max relative diff %.3g", name, n_threads, worst);
out:
    for (int k = 0; k < K; k++) realm_session_free(s[k]);
    realm_engine_free(e);
    free(ref);
    free(got);
    free(rows);
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

    struct realm_batch_row bad[3] = {{s, c->n_vocab, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    bad[0] = (struct realm_batch_row){s, -1, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    bad[0] = (struct realm_batch_row){NULL, 1, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 1, &err), REALM_E_INVALID);
    /* s, t, s: not consecutive */
    bad[0] = (struct realm_batch_row){s, 1, NULL};
    bad[1] = (struct realm_batch_row){t, 1, NULL};
    bad[2] = (struct realm_batch_row){s, 1, NULL};
    CHECK_EQ_INT(realm_engine_forward(e, bad, 3, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_engine_forward(e, bad, 5, &err), REALM_E_INVALID); /* above max_batch */
    CHECK_EQ_INT(realm_engine_forward(e, bad, 0, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 0);
    CHECK_EQ_INT(realm_session_len(t), 0);

    /* fill s to its context of 4, then one more fails as a whole (t is not advanced either) */
    struct realm_batch_row r4[4] = {{s, 1, NULL}, {s, 2, NULL}, {s, 3, NULL}, {s, 4, lg}};
    CHECK_EQ_INT(realm_engine_forward(e, r4, 3, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 3);
    struct realm_batch_row two[2] = {{t, 5, NULL}, {s, 4, NULL}};
    CHECK_EQ_INT(realm_engine_forward(e, two, 2, &err), REALM_OK);
    CHECK_EQ_INT(realm_session_len(s), 4);
    two[1] = (struct realm_batch_row){s, 5, NULL};
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

static int check_fixture(const char *fpath, int *n_checked) {
    size_t size;
    char *text = (char *)tu_read_file(fpath, &size);
    if (!text) return -1;
    cJSON *j = cJSON_ParseWithLength(text, size);
    free(text);
    CHECKF(j != NULL, "%s: not JSON", fpath);
    if (!j) return -1;
    const cJSON *jm = cJSON_GetObjectItem(j, "model"), *jfp = cJSON_GetObjectItem(j, "fingerprint");
    const cJSON *jt = cJSON_GetObjectItem(j, "tokens"), *jam = cJSON_GetObjectItem(j, "argmax");
    const cJSON *jids = cJSON_GetObjectItem(j, "ids"), *jpos = cJSON_GetObjectItem(j, "positions");
    const cJSON *jlog = cJSON_GetObjectItem(j, "logits");
    CHECKF(cJSON_IsString(jm) && cJSON_IsString(jfp) && cJSON_IsArray(jt) && cJSON_IsArray(jam) &&
               cJSON_IsArray(jids) && cJSON_IsArray(jpos) && cJSON_IsArray(jlog),
           "%s: missing fields", fpath);
    if (!cJSON_IsString(jm) || !cJSON_IsArray(jt) || !cJSON_IsArray(jlog) || !cJSON_IsArray(jpos) ||
        !cJSON_IsArray(jids) || !cJSON_IsArray(jam) || !cJSON_IsString(jfp)) {
        cJSON_Delete(j);
        return -1;
    }
    const char *mpath = fixture_model_path(jm->valuestring);
    char fp[17];
    if (!mpath || file_fingerprint(mpath, fp) || strcmp(fp, jfp->valuestring)) {
        tu_log("parity %s: model %s %s, skipped", fpath, jm->valuestring, mpath ? "differs" : "absent");
        cJSON_Delete(j);
        return 0;
    }
    struct loaded L;
    if (load(mpath, &L)) {
        CHECKF(0, "%s: cannot load %s", fpath, mpath);
        cJSON_Delete(j);
        return -1;
    }
    const int V = realm_model_config(L.m)->n_vocab;
    const int n = cJSON_GetArraySize(jt);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    struct realm_batch_row *rows = malloc(sizeof(*rows) * (size_t)n);
    struct realm_engine *e = NULL;
    struct realm_session *s = NULL;
    CHECK_EQ_INT(realm_engine_new(L.m, 0, n, &e, NULL), REALM_OK);
    CHECK_EQ_INT(realm_session_new(L.m, n, &s, NULL), REALM_OK);
    for (int i = 0; i < n; i++) {
        toks[i] = (int32_t)cJSON_GetArrayItem(jt, i)->valuedouble;
        rows[i] = (struct realm_batch_row){s, toks[i], lg + (size_t)i * V};
    }
    struct realm_err err;
    CHECK_EQ_INT(realm_engine_forward(e, rows, n, &err), REALM_OK);
    /* argmax agreement over all positions */
    int agree = 0;
    for (int i = 0; i < n; i++)
        if (argmax(lg + (size_t)i * V, V) == (int)cJSON_GetArrayItem(jam, i)->valuedouble) agree++;
    /* relative L2 over the stored (position, id) entries */
    double num = 0, den = 0;
    const int np = cJSON_GetArraySize(jpos), nid = cJSON_GetArraySize(jids);
    for (int pi = 0; pi < np; pi++) {
        const int p = (int)cJSON_GetArrayItem(jpos, pi)->valuedouble;
        const cJSON *row = cJSON_GetArrayItem(jlog, pi);
        const cJSON *rid = cJSON_GetArrayItem(jids, pi);
        const int m = cJSON_GetArraySize(row);
        CHECK(m == cJSON_GetArraySize(rid) && p >= 0 && p < n);
        for (int k = 0; k < m && p >= 0 && p < n; k++) {
            const int id = (int)cJSON_GetArrayItem(rid, k)->valuedouble;
            const double ref = cJSON_GetArrayItem(row, k)->valuedouble;
            if (id < 0 || id >= V) continue;
            const double d = lg[(size_t)p * V + id] - ref;
            num += d * d;
            den += ref * ref;
        }
    }
    (void)nid;
    const double rel = sqrt(num / (den > 0 ? den : 1));
    CHECKF(rel <= 1e-2, "%s: relative L2 %.4g > 1e-2", fpath, rel);
    CHECKF(agree * 100 >= 95 * n, "%s: argmax agrees on %d/%d positions", fpath, agree, n);
    tu_log("parity %s: relative L2 %.3g, argmax %d/%d", jm->valuestring, rel, agree, n);
    (*n_checked)++;
    realm_session_free(s);
    realm_engine_free(e);
    free(toks);
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
    int n_checked = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        char path[1536];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        check_fixture(path, &n_checked);
    }
    closedir(d);
    tu_log("parity fixtures checked: %d", n_checked);
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
            test_errors(&L);
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
            unload(&L);
        }
        ran++;
    }
    test_parity_fixtures();
    if (!ran) tu_skip("no model: ../shared/models/stories260K.gguf and the cached models are absent");
    return tu_finish("test_model");
}
