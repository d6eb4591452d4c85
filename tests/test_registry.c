/*
 * test_registry.c — the tenant registry (include/realm/registry.h, SQLite backend): tenant CRUD,
 * key add / lookup / revoke (tenant and admin keys apart), guest versions (activate, rollback,
 * content-addressed files), the usage ledger (queries and sums), batches, persistence across
 * reopening, concurrent use from threads, and fault injection: a VFS shim over the default one
 * whose writes and syncs fail after N calls (SQLITE_FULL / SQLITE_IOERR) — for every N until a
 * change completes, the change either succeeds in whole or fails with a message, and reopening
 * with the normal VFS shows the state before or after it (never a mix), integrity_check ok.
 */
#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/registry.h"
#include "sqlite_fault_vfs.h"
#include "testutil.h"

/* ---- helpers ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}
static void rm_rf(const char *dir) {
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char g_root[256];

/* A fresh folder name under the test's temp root (not created). */
static void fresh_dir(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", g_root, name);
}

static struct realm_registry *open_reg(const char *dir) {
    struct realm_registry *r = NULL;
    struct realm_err err = {0};
    int rc = realm_registry_open_sqlite(dir, NULL, &r, &err);
    CHECKF(rc == REALM_OK, "open %s: %s", dir, err.msg);
    return r;
}

static struct realm_reg_tenant tenant_of(const char *id, char **models, size_t n) {
    struct realm_reg_tenant t = {
        .id = (char *)id, .all_models = n == 0, .models = models, .n_models = n};
    return t;
}

/* ---- CRUD ---- */

static void test_tenants(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "tenants");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err = {0};
    uint64_t g0 = 0, g1 = 0;
    CHECK_EQ_INT(realm_registry_generation(r, &g0, &err), REALM_OK);

    char *models[] = {"smollm2", "gemma3"};
    struct realm_reg_tenant t = tenant_of("acme", models, 2);
    t.limits.max_concurrent = 8;
    t.limits.tokens_per_minute = 100000;
    t.limits.guest_memory_bytes = INT64_C(64) << 20;
    t.limits.generate_wall_ms = 300000;
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_E_STATE);
    CHECK(strstr(err.msg, "exists") != NULL);
    struct realm_reg_tenant bad = tenant_of("", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &bad, &err), REALM_E_INVALID);
    bad.id = "neg";
    bad.limits.kv_blocks = -1;
    CHECK_EQ_INT(realm_registry_tenant_create(r, &bad, &err), REALM_E_INVALID);
    struct realm_reg_tenant beta = tenant_of("beta", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &beta, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_generation(r, &g1, &err), REALM_OK);
    CHECK(g1 == g0 + 2);

    struct realm_reg_tenant got;
    CHECK_EQ_INT(realm_registry_tenant_get(r, "acme", &got, &err), REALM_OK);
    CHECK(!strcmp(got.id, "acme"));
    CHECK(!got.all_models);
    CHECK_EQ_INT(got.n_models, 2);
    if (got.n_models == 2)
        CHECK(!strcmp(got.models[0], "gemma3") && !strcmp(got.models[1], "smollm2"));
    CHECK_EQ_INT(got.limits.max_concurrent, 8);
    CHECK_EQ_INT(got.limits.tokens_per_minute, 100000);
    CHECK_EQ_INT(got.limits.guest_memory_bytes, INT64_C(64) << 20);
    CHECK_EQ_INT(got.limits.generate_wall_ms, 300000);
    CHECK_EQ_INT(got.limits.kv_blocks + got.limits.init_wall_ms + got.limits.host_memory_bytes, 0);
    CHECK(got.created_at > 1700000000000LL);
    realm_reg_tenant_clear(&got);
    CHECK_EQ_INT(realm_registry_tenant_get(r, "nobody", &got, &err), REALM_E_NOT_FOUND);

    /* update replaces limits and grants */
    char *m2[] = {"smollm2"};
    struct realm_reg_tenant u = tenant_of("acme", m2, 1);
    u.limits.max_concurrent = 2;
    CHECK_EQ_INT(realm_registry_tenant_update(r, &u, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_get(r, "acme", &got, &err), REALM_OK);
    CHECK_EQ_INT(got.n_models, 1);
    CHECK_EQ_INT(got.limits.max_concurrent, 2);
    CHECK_EQ_INT(got.limits.tokens_per_minute, 0);
    realm_reg_tenant_clear(&got);
    u.id = "ghost";
    CHECK_EQ_INT(realm_registry_tenant_update(r, &u, &err), REALM_E_NOT_FOUND);

    struct realm_reg_tenant *list = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_tenant_list(r, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 2);
    if (n == 2)
        CHECK(!strcmp(list[0].id, "acme") && !strcmp(list[1].id, "beta") && list[1].all_models);
    realm_reg_tenants_free(list, n);

    CHECK_EQ_INT(realm_registry_tenant_delete(r, "beta", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "beta", &err), REALM_E_NOT_FOUND);
    realm_registry_close(r);

    /* persistence */
    r = open_reg(dir);
    if (!r) return;
    CHECK_EQ_INT(realm_registry_tenant_list(r, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 1);
    realm_reg_tenants_free(list, n);
    uint64_t g2 = 0;
    CHECK_EQ_INT(realm_registry_generation(r, &g2, &err), REALM_OK);
    CHECK(g2 == g1 + 2);
    realm_registry_close(r);
}

static void test_keys(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "keys");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant t = tenant_of("acme", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);

    char k1[REALM_KEY_LEN + 1], k2[REALM_KEY_LEN + 1], ka[REALM_KEY_LEN + 1], small[8];
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "ci", small, sizeof small, &err),
                 REALM_E_TOO_SMALL);
    CHECK_EQ_INT(realm_registry_key_add(r, "nobody", "ci", k1, sizeof k1, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "ci", k1, sizeof k1, &err), REALM_OK);
    CHECK_EQ_INT(strlen(k1), REALM_KEY_LEN);
    CHECK(!strncmp(k1, "realm-", 6));
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "ci", k2, sizeof k2, &err),
                 REALM_E_STATE); /* label taken */
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", NULL, k2, sizeof k2, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_admin_key_add(r, "ops", ka, sizeof ka, &err), REALM_OK);

    /* the stored hash is realm_key_hash of the key; lookups find the owner */
    struct realm_reg_key k;
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_OK);
    char h[REALM_KEY_HASH_HEX + 1];
    realm_key_hash(k1, strlen(k1), h);
    CHECK(k.tenant && !strcmp(k.tenant, "acme"));
    CHECK(k.label && !strcmp(k.label, "ci"));
    CHECK(!strcmp(k.hash, h));
    CHECK(k.prefix && !strncmp(k.prefix, k1, REALM_REG_KEY_PREFIX_LEN));
    realm_reg_key_clear(&k);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1) - 1, &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_lookup(r, "", 0, &k, &err), REALM_E_NOT_FOUND);
    /* tenant keys and admin keys never pass for each other */
    CHECK_EQ_INT(realm_registry_admin_key_lookup(r, k1, strlen(k1), &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_lookup(r, ka, strlen(ka), &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_admin_key_lookup(r, ka, strlen(ka), &k, &err), REALM_OK);
    CHECK(k.tenant == NULL && !strcmp(k.label, "ops"));
    realm_reg_key_clear(&k);

    /* imported hashes: realm.example.json's example key */
    const char *ex = "realm-example-acme";
    CHECK_EQ_INT(realm_registry_key_add_hash(
                     r, "acme", NULL,
                     "FC5C36A7B6A04286EA7B56C7692B3D5208494376A607591D53BEECAE2F42A5D7", &err),
                 REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, ex, strlen(ex), &k, &err), REALM_OK);
    CHECK(k.prefix == NULL && !strcmp(k.label, "hash-fc5c36a7"));
    realm_reg_key_clear(&k);
    CHECK_EQ_INT(realm_registry_key_add_hash(
                     r, "acme", "again",
                     "fc5c36a7b6a04286ea7b56c7692b3d5208494376a607591d53beecae2f42a5d7", &err),
                 REALM_E_STATE);
    realm_key_hash(ka, strlen(ka), h);
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "acme", "stolen", h, &err),
                 REALM_E_STATE); /* an admin key's */
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "acme", NULL, "abc", &err), REALM_E_INVALID);

    /* last used */
    realm_key_hash(k1, strlen(k1), h);
    CHECK_EQ_INT(realm_registry_key_touch(r, h, 1234, &err), REALM_OK);
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_key_list(r, "acme", &ks, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 3);
    bool touched = false;
    for (size_t i = 0; i < n; i++)
        touched |= !strcmp(ks[i].label, "ci") && ks[i].last_used_at == 1234;
    CHECK(touched);
    realm_reg_keys_free(ks, n);

    /* revoke: by label, by prefix, by the whole key */
    CHECK_EQ_INT(realm_registry_key_revoke(r, "acme", "ci", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_E_NOT_FOUND);
    char pre[9];
    memcpy(pre, k2, 8);
    pre[8] = '\0';
    CHECK_EQ_INT(realm_registry_key_revoke(r, "acme", "realm-", &err),
                 REALM_E_NOT_FOUND); /* too short */
    CHECK_EQ_INT(realm_registry_key_revoke(r, "acme", pre, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k2, strlen(k2), &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_revoke(r, "acme", ex, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_revoke(r, "acme", ex, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_admin_key_revoke(r, "ops", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_admin_key_lookup(r, ka, strlen(ka), &k, &err), REALM_E_NOT_FOUND);

    /* deleting a tenant cuts its keys off */
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "last", k1, sizeof k1, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "acme", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_E_NOT_FOUND);
    realm_registry_close(r);
}

static void test_guests(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "guests");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant t = tenant_of("acme", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);
    static const unsigned char w1[] = "\0asm\1\0\0\0 version one",
                               w2[] = "\0asm\1\0\0\0 version two";
    struct realm_reg_guest g1, g2, g;
    CHECK_EQ_INT(realm_registry_guest_active(r, "acme", &g, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "acme", &g, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_guest_add(r, "nobody", w1, sizeof w1, true, &g1, &err),
                 REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", w1, 0, true, &g1, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", w1, sizeof w1, true, &g1, &err), REALM_OK);
    CHECK_EQ_INT(g1.version, 1);
    CHECK(g1.active);
    CHECK_EQ_INT(g1.size, sizeof w1);
    char h[REALM_KEY_HASH_HEX + 1];
    realm_key_hash((const char *)w1, sizeof w1, h);
    CHECK(!strcmp(g1.sha256, h));
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", w2, sizeof w2, false, &g2, &err), REALM_OK);
    CHECK_EQ_INT(g2.version, 2);
    CHECK(!g2.active);
    CHECK_EQ_INT(realm_registry_guest_active(r, "acme", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "acme", 2, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "acme", 7, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_active(r, "acme", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 2);
    /* the same bytes again: a new version, the same file */
    struct realm_reg_guest g3;
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", w1, sizeof w1, true, &g3, &err), REALM_OK);
    CHECK_EQ_INT(g3.version, 3);
    CHECK(!strcmp(g3.sha256, g1.sha256));
    struct realm_reg_guest *list = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_guest_list(r, "acme", &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 3);
    int n_active = 0;
    for (size_t i = 0; i < n; i++)
        n_active += list[i].active;
    CHECK_EQ_INT(n_active, 1);
    if (n == 3) CHECK(list[2].active && list[0].version == 1);
    realm_free(list);
    /* rollback walks back one version at a time */
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "acme", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 2);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "acme", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "acme", &g, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_active(r, "acme", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "acme", 0, &err),
                 REALM_OK); /* back to the default */
    CHECK_EQ_INT(realm_registry_guest_active(r, "acme", &g, &err), REALM_E_NOT_FOUND);

    /* content-addressed files */
    char path[1024];
    CHECK_EQ_INT(realm_registry_guest_path(r, g2.sha256, path, sizeof path), REALM_OK);
    char want[1024];
    snprintf(want, sizeof want, "%s/guests/%s.wasm", dir, g2.sha256);
    CHECK(!strcmp(path, want));
    size_t len = 0;
    unsigned char *bytes = tu_read_file(path, &len);
    CHECK(bytes && len == sizeof w2 && !memcmp(bytes, w2, len));
    free(bytes);
    void *rb = NULL;
    CHECK_EQ_INT(realm_registry_guest_read(r, g2.sha256, &rb, &len, &err), REALM_OK);
    CHECK(rb && len == sizeof w2 && !memcmp(rb, w2, len));
    realm_free(rb);
    CHECK_EQ_INT(tu_write_file(path, "tampered", 8), 0);
    CHECK_EQ_INT(realm_registry_guest_read(r, g2.sha256, &rb, &len, &err), REALM_E_FORMAT);
    CHECK_EQ_INT(realm_registry_guest_read(r, "00", &rb, &len, &err), REALM_E_INVALID);
    /* storing the module again replaces a damaged file (same size, other bytes) */
    unsigned char same_size[sizeof w2];
    memset(same_size, 'x', sizeof same_size);
    CHECK_EQ_INT(tu_write_file(path, same_size, sizeof same_size), 0);
    struct realm_reg_guest g4;
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", w2, sizeof w2, false, &g4, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_read(r, g2.sha256, &rb, &len, &err), REALM_OK);
    CHECK(rb && len == sizeof w2 && !memcmp(rb, w2, len));
    realm_free(rb);
    /* no temp files left behind */
    char gdir[600];
    snprintf(gdir, sizeof gdir, "%s/guests", dir);
    int files = 0;
    FILE *ls;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", gdir);
    if ((ls = popen(cmd, "r"))) {
        char line[512];
        while (fgets(line, sizeof line, ls)) {
            files++;
            CHECKF(line[0] != '.', "stray file %s", line);
        }
        pclose(ls);
    }
    CHECK_EQ_INT(files, 2);

    /* deleting the tenant drops its version rows, keeps the files */
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "acme", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_list(r, "acme", &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 0); /* (v4 went with the tenant too) */
    realm_free(list);
    CHECK(access(path, F_OK) == 0);
    realm_registry_close(r);
}

static void test_usage(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "usage");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err = {0};
    uint64_t g0 = 0, g1 = 0;
    CHECK_EQ_INT(realm_registry_generation(r, &g0, &err), REALM_OK);
    int64_t base = INT64_C(1764000000000);
    for (int i = 0; i < 10; i++) {
        struct realm_reg_usage u = {.tenant = i % 2 ? "beta" : "acme",
                                    .model = "smollm2",
                                    .key_label = "ci",
                                    .prompt_tokens = 10 + i,
                                    .completion_tokens = 100 + i,
                                    .host_ms = 5,
                                    .outcome = i == 9 ? "cancelled" : "ok",
                                    .started_at = base + i * 1000 - 500,
                                    .finished_at = base + i * 1000};
        CHECK_EQ_INT(realm_registry_usage_append(r, &u, &err), REALM_OK);
    }
    struct realm_reg_usage badu = {.tenant = "acme", .model = "", .outcome = "ok"};
    CHECK_EQ_INT(realm_registry_usage_append(r, &badu, &err), REALM_E_INVALID);
    CHECK_EQ_INT(realm_registry_generation(r, &g1, &err), REALM_OK);
    CHECK(g1 == g0); /* the ledger is not configuration */
    realm_registry_close(r);
    r = open_reg(dir);
    if (!r) return;

    struct realm_reg_usage *u = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_usage_query(r, NULL, 0, 0, &u, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 10);
    if (n == 10)
        CHECK(!strcmp(u[9].outcome, "cancelled") && !strcmp(u[9].tenant, "beta") &&
              u[9].prompt_tokens == 19);
    realm_reg_usages_free(u, n);
    /* acme rows are i = 0, 2, 4, 6, 8; [base + 2000, base + 8000) holds i = 2, 4, 6 */
    CHECK_EQ_INT(realm_registry_usage_query(r, "acme", base + 2000, base + 8000, &u, &n, &err),
                 REALM_OK);
    CHECK_EQ_INT(n, 3);
    if (n == 3) CHECK(u[0].finished_at == base + 2000 && u[2].finished_at == base + 6000);
    realm_reg_usages_free(u, n);
    struct realm_reg_usage_sum s;
    CHECK_EQ_INT(realm_registry_usage_sum(r, "acme", base + 2000, base + 8000, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, 3);
    CHECK_EQ_INT(s.prompt_tokens, 12 + 14 + 16);
    CHECK_EQ_INT(s.completion_tokens, 102 + 104 + 106);
    CHECK_EQ_INT(s.host_ms, 15);
    CHECK_EQ_INT(realm_registry_usage_sum(r, NULL, 0, 0, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, 10);
    CHECK_EQ_INT(s.prompt_tokens, 145);
    CHECK_EQ_INT(realm_registry_usage_sum(r, "nobody", 0, 0, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, 0);
    realm_registry_close(r);
}

static void test_batch(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "batch");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant a = tenant_of("a", NULL, 0), b = tenant_of("b", NULL, 0),
                            c = tenant_of("c", NULL, 0);
    CHECK_EQ_INT(realm_registry_batch_begin(r, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &b, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_batch_end(r, false, &err), REALM_OK);
    struct realm_reg_tenant *list = NULL;
    size_t n = 9;
    CHECK_EQ_INT(realm_registry_tenant_list(r, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 0);
    realm_reg_tenants_free(list, n);
    /* a failed change inside a batch is undone alone; the batch goes on */
    CHECK_EQ_INT(realm_registry_batch_begin(r, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_E_STATE);
    char key[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_key_add(r, "zz", NULL, key, sizeof key, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &c, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_batch_end(r, true, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_batch_end(r, true, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_tenant_list(r, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 2);
    realm_reg_tenants_free(list, n);
    realm_registry_close(r);
}

/* ---- threads: one registry, many callers ---- */

struct thread_arg {
    struct realm_registry *r;
    int id;
    int ok;
};

static void *thread_main(void *p) {
    struct thread_arg *a = p;
    char id[32], key[REALM_KEY_LEN + 1];
    snprintf(id, sizeof id, "t%d", a->id);
    struct realm_reg_tenant t = tenant_of(id, NULL, 0);
    struct realm_err err;
    if (realm_registry_tenant_create(a->r, &t, &err)) return NULL;
    for (int i = 0; i < 5; i++) {
        struct realm_reg_key k;
        if (realm_registry_key_add(a->r, id, NULL, key, sizeof key, &err)) return NULL;
        if (realm_registry_key_lookup(a->r, key, strlen(key), &k, &err)) return NULL;
        if (strcmp(k.tenant, id)) return NULL;
        realm_reg_key_clear(&k);
        struct realm_reg_usage u = {
            .tenant = id, .model = "m", .key_label = "", .outcome = "ok", .finished_at = i};
        if (realm_registry_usage_append(a->r, &u, &err)) return NULL;
    }
    a->ok = 1;
    return NULL;
}

static void test_threads(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "threads");
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    enum { N = 4 };
    pthread_t th[N];
    struct thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct thread_arg){.r = r, .id = i};
        pthread_create(&th[i], NULL, thread_main, &args[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECKF(args[i].ok, "thread %d failed", i);
    }
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    struct realm_err err;
    CHECK_EQ_INT(realm_registry_key_list(r, NULL, &ks, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, N * 5);
    realm_reg_keys_free(ks, n);
    struct realm_reg_usage_sum s;
    CHECK_EQ_INT(realm_registry_usage_sum(r, NULL, 0, 0, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, N * 5);
    realm_registry_close(r);
}

/* ---- fault injection: the failing VFS of sqlite_fault_vfs.h ---- */

/* A text signature of everything a change could touch: tenants, grants, limits, keys, guest
 * versions, generation. Read with the normal VFS. */
static void signature(const char *dir, char *out, size_t cap) {
    struct realm_registry *r = open_reg(dir);
    size_t o = 0;
    out[0] = '\0';
    if (!r) return;
    struct realm_err err;
    uint64_t gen = 0;
    CHECK_EQ_INT(realm_registry_generation(r, &gen, &err), REALM_OK);
    o += (size_t)snprintf(out + o, cap - o, "gen=%llu;", (unsigned long long)gen);
    struct realm_reg_tenant *ts = NULL;
    size_t nt = 0;
    CHECK_EQ_INT(realm_registry_tenant_list(r, &ts, &nt, &err), REALM_OK);
    for (size_t i = 0; i < nt && o < cap; i++) {
        o += (size_t)snprintf(out + o, cap - o, "T%s:%d:%lld:%d:", ts[i].id, ts[i].all_models,
                              (long long)ts[i].limits.tokens_per_minute,
                              ts[i].limits.max_concurrent);
        for (size_t m = 0; m < ts[i].n_models && o < cap; m++)
            o += (size_t)snprintf(out + o, cap - o, "%s,", ts[i].models[m]);
        struct realm_reg_guest *g = NULL;
        size_t ng = 0;
        CHECK_EQ_INT(realm_registry_guest_list(r, ts[i].id, &g, &ng, &err), REALM_OK);
        for (size_t k = 0; k < ng && o < cap; k++)
            o += (size_t)snprintf(out + o, cap - o, "G%lld%s%.8s,", (long long)g[k].version,
                                  g[k].active ? "*" : "", g[k].sha256);
        realm_free(g);
    }
    realm_reg_tenants_free(ts, nt);
    struct realm_reg_key *ks = NULL;
    size_t nk = 0;
    CHECK_EQ_INT(realm_registry_key_list(r, NULL, &ks, &nk, &err), REALM_OK);
    for (size_t i = 0; i < nk && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "K%s/%s/%.8s;", ks[i].tenant, ks[i].label,
                              ks[i].hash);
    realm_reg_keys_free(ks, nk);
    realm_registry_close(r);
}

static bool integrity_ok(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    sqlite3 *db = NULL;
    bool ok = false;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
            ok = sqlite3_step(st) == SQLITE_ROW &&
                 !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return ok;
}

static int copy_file(const char *from, const char *to) {
    size_t n = 0;
    unsigned char *b = tu_read_file(from, &n);
    if (!b) return -1;
    int rc = tu_write_file(to, b, n);
    free(b);
    return rc;
}

/* The state every fault run starts from: acme (grants, limits, two keys, guests v1 and v2*). */
static void build_base(const char *dir) {
    struct realm_registry *r = open_reg(dir);
    if (!r) return;
    struct realm_err err;
    char *models[] = {"a", "b"};
    struct realm_reg_tenant t = tenant_of("acme", models, 2);
    t.limits.tokens_per_minute = 1000;
    char key[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "k1", key, sizeof key, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_add(r, "acme", "k2", key, sizeof key, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", "guest-one", 9, true, NULL, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_add(r, "acme", "guest-two", 9, true, NULL, &err), REALM_OK);
    realm_registry_close(r); /* checkpoints: registry.db alone holds the state */
}

enum { MUT_UPDATE, MUT_ROLLBACK, MUT_DELETE, MUT_BATCH, MUT_KEY_ADD, N_MUT };

/* One multi-statement change. */
static int mutate(struct realm_registry *r, int which, struct realm_err *err) {
    char *models[] = {"c"};
    struct realm_reg_tenant t = tenant_of("acme", models, 1);
    t.limits.tokens_per_minute = 5000;
    t.limits.max_concurrent = 3;
    char key[REALM_KEY_LEN + 1];
    switch (which) {
    case MUT_UPDATE:
        return realm_registry_tenant_update(r, &t, err);
    case MUT_ROLLBACK:
        return realm_registry_guest_rollback(r, "acme", NULL, err);
    case MUT_DELETE:
        return realm_registry_tenant_delete(r, "acme", err);
    case MUT_KEY_ADD:
        return realm_registry_key_add(r, "acme", "k3", key, sizeof key, err);
    case MUT_BATCH: {
        int rc = realm_registry_batch_begin(r, err);
        if (rc) return rc;
        struct realm_reg_tenant n = tenant_of("newco", models, 1);
        if (!rc) rc = realm_registry_tenant_create(r, &n, err);
        if (!rc)
            rc = realm_registry_key_add_hash(
                r, "newco", "imported",
                "fc5c36a7b6a04286ea7b56c7692b3d5208494376a607591d53beecae2f42a5d7", err);
        if (!rc) rc = realm_registry_guest_add(r, "newco", "guest-new", 9, true, NULL, err);
        if (!rc) rc = realm_registry_tenant_update(r, &t, err);
        if (rc) {
            realm_registry_batch_end(r, false, NULL);
            return rc;
        }
        return realm_registry_batch_end(r, true, err);
    }
    }
    return REALM_E_INTERNAL;
}

/* Signatures compare without key hashes of keys generated by the change (random each run). */
static void strip_random(char *sig) {
    char *p;
    while ((p = strstr(sig, "/k3/"))) {
        memset(p + 4, 'x', 8);
        p[1] = 'K';
    }
}

static void test_faults(void) {
    fault_vfs_register(false);
    char base[512], expect_dir[512], dir[512], src[600], dst[600];
    fresh_dir(base, sizeof base, "fault-base");
    build_base(base);
    char before[4096], after[4096], got[4096];
    signature(base, before, sizeof before);
    snprintf(src, sizeof src, "%s/registry.db", base);
    int total_runs = 0, total_errors = 0;
    for (int which = 0; which < N_MUT; which++) {
        /* the expected result, without faults */
        snprintf(expect_dir, sizeof expect_dir, "%s/fault-expect-%d", g_root, which);
        mkdir(expect_dir, 0700);
        snprintf(dst, sizeof dst, "%s/registry.db", expect_dir);
        CHECK_EQ_INT(copy_file(src, dst), 0);
        struct realm_registry *r = open_reg(expect_dir);
        struct realm_err err = {0};
        if (!r) return;
        CHECKF(mutate(r, which, &err) == REALM_OK, "mutation %d: %s", which, err.msg);
        realm_registry_close(r);
        signature(expect_dir, after, sizeof after);
        strip_random(after);
        CHECKF(strcmp(before, after), "mutation %d changes nothing", which);
        const int write_error = which % 2 ? SQLITE_IOERR_WRITE : SQLITE_FULL;

        bool completed = false;
        for (int n = 0; n < 400 && !completed; n++) {
            snprintf(dir, sizeof dir, "%s/fault-%d-%d", g_root, which, n);
            mkdir(dir, 0700);
            snprintf(dst, sizeof dst, "%s/registry.db", dir);
            CHECK_EQ_INT(copy_file(src, dst), 0);
            fault_vfs_arm(n, write_error);
            struct realm_registry_opts o = {.vfs = FAULT_VFS_NAME};
            struct realm_registry *fr = NULL;
            int rc = realm_registry_open_sqlite(dir, &o, &fr, &err);
            if (rc == REALM_OK) {
                memset(&err, 0, sizeof err);
                rc = mutate(fr, which, &err);
                realm_registry_close(fr);
            }
            completed = !fault_vfs_tripped();
            fault_vfs_arm(-1, 0);
            total_runs++;
            signature(dir, got, sizeof got);
            strip_random(got);
            if (rc == REALM_OK) {
                CHECKF(!strcmp(got, after),
                       "mutation %d, %d writes: succeeded but state is\n%s\nexpected\n%s", which, n,
                       got, after);
            } else {
                total_errors++;
                CHECKF(rc < 0 && err.msg[0], "mutation %d, %d writes: error %d without a message",
                       which, n, rc);
                CHECKF(!strcmp(got, before) || !strcmp(got, after),
                       "mutation %d, %d writes: %s → partial state\n%s\nbefore\n%s\nafter\n%s",
                       which, n, err.msg, got, before, after);
            }
            CHECKF(integrity_ok(dir), "mutation %d, %d writes: integrity_check failed", which, n);
            tu_log("mutation %d budget %d: rc %d %s", which, n, rc, rc ? err.msg : "");
            rm_rf(dir);
        }
        CHECKF(completed, "mutation %d never completed under the fault budget", which);
    }
    CHECK(total_errors > 0);
    tu_log("fault runs: %d, failed with an error: %d", total_runs, total_errors);

    /* creating the schema under faults: afterwards a normal open finds no schema or all of it */
    bool completed = false;
    for (int n = 0; n < 200 && !completed; n++) {
        snprintf(dir, sizeof dir, "%s/fault-new-%d", g_root, n);
        fault_vfs_arm(n, SQLITE_FULL);
        struct realm_registry_opts o = {.vfs = FAULT_VFS_NAME};
        struct realm_registry *fr = NULL;
        struct realm_err err = {0};
        int rc = realm_registry_open_sqlite(dir, &o, &fr, &err);
        realm_registry_close(fr);
        completed = !fault_vfs_tripped();
        fault_vfs_arm(-1, 0);
        CHECKF(rc == REALM_OK || err.msg[0], "new registry, %d writes: error %d without a message",
               n, rc);
        tu_log("new registry budget %d: rc %d %s", n, rc, rc ? err.msg : "");
        struct realm_registry *r = open_reg(dir);
        struct realm_reg_tenant t = tenant_of("acme", NULL, 0);
        if (r)
            CHECKF(realm_registry_tenant_create(r, &t, &err) == REALM_OK, "after %d writes: %s", n,
                   err.msg);
        realm_registry_close(r);
        CHECKF(integrity_ok(dir), "new registry, %d writes: integrity_check failed", n);
        rm_rf(dir);
    }
    CHECK(completed);
}

/* Another connection (another process in real life) holding the write lock: a writer waits
 * busy_timeout_ms, then fails with REALM_E_BUSY and changes nothing. */
static void test_busy(void) {
    char dir[512];
    fresh_dir(dir, sizeof dir, "busy");
    struct realm_registry *a = open_reg(dir), *b = NULL;
    struct realm_err err = {0};
    struct realm_registry_opts o = {.busy_timeout_ms = 50};
    CHECK_EQ_INT(realm_registry_open_sqlite(dir, &o, &b, &err), REALM_OK);
    if (!a || !b) return;
    struct realm_reg_tenant t = tenant_of("acme", NULL, 0), u = tenant_of("beta", NULL, 0);
    CHECK_EQ_INT(realm_registry_batch_begin(a, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(a, &t, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(b, &u, &err), REALM_E_BUSY);
    CHECK(strstr(err.msg, "locked") != NULL);
    struct realm_reg_tenant *list = NULL;
    size_t n = 9;
    CHECK_EQ_INT(realm_registry_tenant_list(b, &list, &n, &err),
                 REALM_OK); /* readers are not blocked */
    CHECK_EQ_INT(n, 0);
    realm_reg_tenants_free(list, n);
    CHECK_EQ_INT(realm_registry_batch_end(a, true, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(b, &u, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_list(b, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 2);
    realm_reg_tenants_free(list, n);
    realm_registry_close(a);
    realm_registry_close(b);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/realm-test-registry-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_tenants();
    test_keys();
    test_guests();
    test_usage();
    test_batch();
    test_threads();
    test_busy();
    test_faults();
    if (tu_failures == 0)
        rm_rf(g_root);
    else
        fprintf(stderr, "state kept in %s\n", g_root);
    return tu_finish("test_registry");
}
