/*
 * test_registry_pg.c — the PostgreSQL registry backend (src/registry/postgres.c) against a
 * throwaway PostgreSQL cluster this test starts itself: initdb + pg_ctl from
 * /usr/lib/postgresql/<ver>/bin (or $REALM_PG_BIN) in a temp folder, listening on 127.0.0.1 at
 * a free port with its socket in the temp folder, stopped (immediate) at the end whatever happens.
 * As root the server runs as the `postgres` user (initdb refuses root).
 *
 * Checks the registry contracts of include/realm/registry.h as the SQLite test does: tenant CRUD
 * and the generation counter (one step per change), keys (tenant and admin apart, constant-time
 * lookup, revoke by label / key / prefix, duplicate hashes), guest versions (activate, rollback,
 * module bytes in the database: a second node with its own cache folder loads them, a corrupted
 * cache copy is fetched again), the usage ledger, batches (a failing change inside one is undone
 * alone), two handles seeing each other's changes (two nodes), concurrent writers from threads
 * and handles, a server that goes away (REALM_E_IO with the server's message) and comes back
 * (the next call reconnects), a newer schema (REALM_E_FORMAT), and realm_registry_open's choice
 * of backend. Skips (77) only when the PostgreSQL server binaries are absent.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <glob.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "realm/alloc.h"
#include "realm/registry.h"
#include "testutil.h"

static char g_root[256], g_bin[512], g_data[512];
static int g_port;
static bool g_started;
static char g_as[64]; /* "runuser -u postgres -- " when root */

/* ---- the throwaway cluster ---- */

static bool find_bin(void) {
    const char *env = getenv("REALM_PG_BIN");
    if (env && env[0]) {
        snprintf(g_bin, sizeof g_bin, "%s", env);
    } else {
        glob_t gl;
        if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &gl) != 0) return false;
        /* the last in glob's (sorted) order: the newest major version for 1-2 digit versions */
        snprintf(g_bin, sizeof g_bin, "%s", gl.gl_pathv[gl.gl_pathc - 1]);
        globfree(&gl);
        char *slash = strrchr(g_bin, '/');
        *slash = '\0';
    }
    char p[600];
    snprintf(p, sizeof p, "%s/pg_ctl", g_bin);
    return access(p, X_OK) == 0;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (tu_verbose) fprintf(stderr, "+ %s\n", cmd);
    return system(cmd);
}

static bool pg_start(void) {
    /* bounded: pg_ctl waits at most 30 s, `timeout` caps the whole command */
    return sh("timeout 60 %s%s/pg_ctl -D %s -l %s/server.log -w -t 30 -o '-c "
              "listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off' start >/dev/null",
              g_as, g_bin, g_data, g_root, g_port, g_root) == 0;
}

static void pg_stop(void) {
    if (!g_started) return;
    sh("timeout 60 %s%s/pg_ctl -D %s -m immediate -w -t 30 stop >/dev/null 2>&1", g_as, g_bin,
       g_data);
    g_started = false;
}

static void on_signal(int sig) {
    pg_stop();
    signal(sig, SIG_DFL);
    raise(sig);
}

static bool cluster_up(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/realm-test-pg-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_root)) return false;
    snprintf(g_data, sizeof g_data, "%s/data", g_root);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            fprintf(stderr, "running as root and no 'postgres' user to run the server as\n");
            return false;
        }
        if (chown(g_root, pw->pw_uid, pw->pw_gid) != 0) return false;
        snprintf(g_as, sizeof g_as, "runuser -u postgres -- ");
    }
    chmod(g_root, 0755);
    if (sh("timeout 120 %s%s/initdb -D %s -A trust -U realm -E UTF8 --no-sync >%s/initdb.log 2>&1",
           g_as, g_bin, g_data, g_root) != 0) {
        fprintf(stderr, "initdb failed (see %s/initdb.log)\n", g_root);
        return false;
    }
    g_port = free_port();
    if (g_port <= 0 || !pg_start()) {
        fprintf(stderr, "pg_ctl start failed (see %s/server.log)\n", g_root);
        return false;
    }
    g_started = true;
    atexit(pg_stop);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGABRT, on_signal);
    return true;
}

static void url_of(char *out, size_t cap, const char *db) {
    snprintf(out, cap, "postgresql://realm@127.0.0.1:%d/%s", g_port, db);
}

/* Creates database `db` (each test its own, so each starts empty). */
static bool make_db(const char *db) {
    char url[256], sql[128];
    url_of(url, sizeof url, "postgres");
    PGconn *c = PQconnectdb(url);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
        PGresult *res = PQexec(c, sql);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
    } else {
        fprintf(stderr, "connect %s: %s", url, PQerrorMessage(c));
    }
    PQfinish(c);
    return ok;
}

/* Opens database db with the guest cache folder <root>/cache-<cache>. */
static struct realm_registry *open_pg(const char *db, const char *cache) {
    char url[256], dir[512];
    url_of(url, sizeof url, db);
    snprintf(dir, sizeof dir, "%s/cache-%s", g_root, cache);
    struct realm_registry_opts o = {.cache_dir = dir, .busy_timeout_ms = 3000};
    struct realm_registry *r = NULL;
    struct realm_err err = {0};
    int rc = realm_registry_open_postgres(url, &o, &r, &err);
    CHECKF(rc == REALM_OK, "open %s: %s", url, err.msg);
    return r;
}

static struct realm_registry *fresh(const char *db) {
    if (!make_db(db)) {
        CHECKF(false, "cannot create database %s", db);
        return NULL;
    }
    return open_pg(db, db);
}

static uint64_t gen_of(struct realm_registry *r) {
    uint64_t g = 0;
    struct realm_err err = {0};
    CHECKF(realm_registry_generation(r, &g, &err) == REALM_OK, "generation: %s", err.msg);
    return g;
}

static struct realm_reg_tenant tenant_of(const char *id, char **models, size_t n) {
    struct realm_reg_tenant t = {
        .id = (char *)id, .all_models = n == 0, .models = models, .n_models = n};
    return t;
}

/* ---- contracts ---- */

static void test_tenants(void) {
    struct realm_registry *r = fresh("tenants");
    if (!r) return;
    struct realm_err err = {0};
    uint64_t g0 = gen_of(r);
    char *models[] = {"smollm2", "gemma3"};
    struct realm_reg_tenant t = tenant_of("acme", models, 2);
    t.limits.max_concurrent = 8;
    t.limits.tokens_per_minute = 100000;
    t.limits.guest_memory_bytes = INT64_C(64) << 20;
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_E_STATE);
    CHECK(strstr(err.msg, "exists") != NULL);
    struct realm_reg_tenant bad = tenant_of("neg", NULL, 0);
    bad.limits.kv_blocks = -1;
    CHECK_EQ_INT(realm_registry_tenant_create(r, &bad, &err), REALM_E_INVALID);
    struct realm_reg_tenant beta = tenant_of("Beta", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &beta, &err), REALM_OK);
    CHECK(gen_of(r) == g0 + 2); /* failed changes leave it */

    struct realm_reg_tenant got;
    CHECK_EQ_INT(realm_registry_tenant_get(r, "acme", &got, &err), REALM_OK);
    CHECK(!strcmp(got.id, "acme") && !got.all_models);
    CHECK_EQ_INT(got.n_models, 2);
    if (got.n_models == 2)
        CHECK(!strcmp(got.models[0], "gemma3") && !strcmp(got.models[1], "smollm2"));
    CHECK_EQ_INT(got.limits.max_concurrent, 8);
    CHECK_EQ_INT(got.limits.tokens_per_minute, 100000);
    CHECK_EQ_INT(got.limits.guest_memory_bytes, INT64_C(64) << 20);
    CHECK(got.created_at > 1700000000000LL);
    realm_reg_tenant_clear(&got);
    CHECK_EQ_INT(realm_registry_tenant_get(r, "nobody", &got, &err), REALM_E_NOT_FOUND);

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
    if (n == 2) /* byte order, as SQLite sorts: "Beta" < "acme" */
        CHECK(!strcmp(list[0].id, "Beta") && list[0].all_models && !strcmp(list[1].id, "acme"));
    realm_reg_tenants_free(list, n);
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "Beta", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "Beta", &err), REALM_E_NOT_FOUND);
    uint64_t g1 = gen_of(r);
    CHECK(g1 == g0 + 4);
    realm_registry_close(r);

    /* persistence: another connection sees the same */
    r = open_pg("tenants", "tenants");
    if (!r) return;
    CHECK_EQ_INT(realm_registry_tenant_list(r, &list, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 1);
    realm_reg_tenants_free(list, n);
    CHECK(gen_of(r) == g1);
    realm_registry_close(r);
}

static void test_keys(void) {
    struct realm_registry *r = fresh("keys");
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant a = tenant_of("a", NULL, 0), b = tenant_of("b", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &b, &err), REALM_OK);
    char k1[REALM_KEY_LEN + 1], k2[REALM_KEY_LEN + 1], ka[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_key_add(r, "a", "main", k1, sizeof k1, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_add(r, "a", "main", k2, sizeof k2, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_key_add(r, "a", NULL, k2, sizeof k2, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_add(r, "ghost", NULL, k2, sizeof k2, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_admin_key_add(r, "ops", ka, sizeof ka, &err), REALM_OK);

    struct realm_reg_key k;
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_OK);
    CHECK(k.tenant && !strcmp(k.tenant, "a") && !strcmp(k.label, "main"));
    CHECK(k.prefix && !strncmp(k.prefix, k1, REALM_REG_KEY_PREFIX_LEN));
    char h1[REALM_KEY_HASH_HEX + 1];
    realm_key_hash(k1, strlen(k1), h1);
    CHECK(!strcmp(k.hash, h1));
    realm_reg_key_clear(&k);
    /* tenant and admin keys apart */
    CHECK_EQ_INT(realm_registry_admin_key_lookup(r, k1, strlen(k1), &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_lookup(r, ka, strlen(ka), &k, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_admin_key_lookup(r, ka, strlen(ka), &k, &err), REALM_OK);
    CHECK(k.tenant == NULL && !strcmp(k.label, "ops"));
    realm_reg_key_clear(&k);
    CHECK_EQ_INT(realm_registry_key_lookup(r, "realm-nope", 10, &k, &err), REALM_E_NOT_FOUND);

    /* imported hashes: one hash, one owner */
    char ha[REALM_KEY_HASH_HEX + 1];
    realm_key_hash(ka, strlen(ka), ha);
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "b", NULL, ha, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "b", NULL, h1, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "b", NULL, "xyz", &err), REALM_E_INVALID);
    char hx[REALM_KEY_HASH_HEX + 1];
    realm_key_hash("imported", 8, hx);
    for (char *p = hx; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    CHECK_EQ_INT(realm_registry_key_add_hash(r, "b", NULL, hx, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, "imported", 8, &k, &err), REALM_OK);
    CHECK(k.tenant && !strcmp(k.tenant, "b") && k.prefix == NULL && !strncmp(k.label, "hash-", 5));
    realm_reg_key_clear(&k);

    /* list, touch (no generation change) */
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_key_list(r, NULL, &ks, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 3);
    if (n == 3) CHECK(!strcmp(ks[0].tenant, "a") && !strcmp(ks[2].tenant, "b"));
    realm_reg_keys_free(ks, n);
    CHECK_EQ_INT(realm_registry_key_list(r, "a", &ks, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 2);
    realm_reg_keys_free(ks, n);
    CHECK_EQ_INT(realm_registry_admin_key_list(r, &ks, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 1);
    realm_reg_keys_free(ks, n);
    uint64_t g = gen_of(r);
    CHECK_EQ_INT(realm_registry_key_touch(r, h1, 1234, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_touch(r, hx, 99, &err), REALM_OK);
    char hn[REALM_KEY_HASH_HEX + 1];
    realm_key_hash("none", 4, hn);
    CHECK_EQ_INT(realm_registry_key_touch(r, hn, 1, &err), REALM_E_NOT_FOUND);
    CHECK(gen_of(r) == g);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_OK);
    CHECK_EQ_INT(k.last_used_at, 1234);
    realm_reg_key_clear(&k);

    /* revoke by label, by whole key, by prefix; each stops matching at once */
    CHECK_EQ_INT(realm_registry_key_revoke(r, "a", "main", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, k1, strlen(k1), &k, &err), REALM_E_NOT_FOUND);
    char pre[REALM_REG_KEY_PREFIX_LEN + 1];
    memcpy(pre, k2, REALM_REG_KEY_PREFIX_LEN);
    pre[REALM_REG_KEY_PREFIX_LEN] = '\0';
    CHECK_EQ_INT(realm_registry_key_revoke(r, "b", pre, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_key_revoke(r, "a", pre, &err), REALM_OK); /* its label */
    CHECK_EQ_INT(realm_registry_key_lookup(r, k2, strlen(k2), &k, &err), REALM_E_NOT_FOUND);
    char k3[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_key_add(r, "a", "third", k3, sizeof k3, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_revoke(r, "a", k3, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_add(r, "a", "fourth", k3, sizeof k3, &err), REALM_OK);
    memcpy(pre, k3, 10);
    pre[10] = '\0';
    CHECK_EQ_INT(realm_registry_key_revoke(r, "a", pre, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_admin_key_revoke(r, "ops", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_admin_key_revoke(r, "ops", &err), REALM_E_NOT_FOUND);
    /* deleting a tenant cuts its keys off */
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "b", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_key_lookup(r, "imported", 8, &k, &err), REALM_E_NOT_FOUND);
    realm_registry_close(r);
}

static void test_guests(void) {
    struct realm_registry *r = fresh("guests");
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant t = tenant_of("g", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &t, &err), REALM_OK);
    static const unsigned char m1[] = {0, 'a', 's', 'm', 1, 0, 0, 0, 0xff, 0x00, 0x7f};
    unsigned char m2[70000];
    for (size_t i = 0; i < sizeof m2; i++)
        m2[i] = (unsigned char)(i * 7 + 3);
    struct realm_reg_guest g1, g2, g;
    CHECK_EQ_INT(realm_registry_guest_add(r, "nobody", m1, sizeof m1, true, &g1, &err),
                 REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_add(r, "g", m1, 0, true, &g1, &err), REALM_E_INVALID);
    uint64_t g0 = gen_of(r);
    CHECK_EQ_INT(realm_registry_guest_add(r, "g", m1, sizeof m1, true, &g1, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_add(r, "g", m2, sizeof m2, false, &g2, &err), REALM_OK);
    CHECK(gen_of(r) == g0 + 2);
    CHECK_EQ_INT(g1.version, 1);
    CHECK_EQ_INT(g2.version, 2);
    CHECK(g1.active && !g2.active);
    CHECK_EQ_INT(g2.size, (int64_t)sizeof m2);
    CHECK_EQ_INT(realm_registry_guest_active(r, "g", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "g", 2, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "g", 7, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_active(r, "g", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 2);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "g", &g, &err), REALM_OK);
    CHECK_EQ_INT(g.version, 1);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "g", &g, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_activate(r, "g", 0, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_active(r, "g", &g, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_guest_rollback(r, "g", &g, &err), REALM_E_STATE);
    struct realm_reg_guest *gs = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_guest_list(r, "g", &gs, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 2);
    if (n == 2) CHECK(gs[0].version == 1 && gs[1].version == 2 && !gs[0].active);
    realm_free(gs);
    CHECK_EQ_INT(realm_registry_guest_list(r, "nobody", &gs, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 0);
    realm_free(gs);

    /* another node, its own empty cache: the bytes come from the database */
    struct realm_registry *r2 = open_pg("guests", "node2");
    if (r2) {
        char path[1024], want[1024];
        CHECK_EQ_INT(realm_registry_guest_path(r2, g2.sha256, path, sizeof path), REALM_OK);
        snprintf(want, sizeof want, "%s/cache-node2/guests/%s.wasm", g_root, g2.sha256);
        CHECK(!strcmp(path, want));
        CHECK(strstr(realm_registry_dir(r2), "/cache-node2") != NULL);
        size_t len = 0;
        unsigned char *got = tu_read_file(path, &len);
        CHECK(got && len == sizeof m2 && !memcmp(got, m2, len));
        free(got);
        /* a damaged cache copy is detected and fetched again */
        unsigned char junk[sizeof m2];
        memset(junk, 0x55, sizeof junk);
        CHECK(tu_write_file(path, junk, sizeof junk) == 0);
        void *data = NULL;
        CHECK_EQ_INT(realm_registry_guest_read(r2, g2.sha256, &data, &len, &err), REALM_OK);
        CHECK(data && len == sizeof m2 && !memcmp(data, m2, len));
        realm_free(data);
        char nosha[REALM_KEY_HASH_HEX + 1];
        realm_key_hash("missing", 7, nosha);
        CHECK_EQ_INT(realm_registry_guest_read(r2, nosha, &data, &len, &err), REALM_E_NOT_FOUND);
        CHECK_EQ_INT(realm_registry_guest_path(r2, "zz", path, sizeof path), REALM_E_INVALID);
        realm_registry_close(r2);
    }
    /* deleting the tenant removes its versions */
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "g", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_guest_list(r, "g", &gs, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 0);
    realm_free(gs);
    realm_registry_close(r);
}

static void test_usage(void) {
    struct realm_registry *r = fresh("usage");
    if (!r) return;
    struct realm_err err = {0};
    uint64_t g = gen_of(r);
    for (int i = 0; i < 10; i++) {
        struct realm_reg_usage u = {.tenant = i % 2 ? "odd" : "even",
                                    .model = "smollm2",
                                    .key_label = i == 3 ? NULL : "k",
                                    .prompt_tokens = i,
                                    .completion_tokens = 10 * i,
                                    .host_ms = 100,
                                    .outcome = "ok",
                                    .started_at = 1000 + i,
                                    .finished_at = 2000 + i};
        CHECK_EQ_INT(realm_registry_usage_append(r, &u, &err), REALM_OK);
    }
    struct realm_reg_usage bad = {.tenant = "x", .model = "m", .outcome = "ok", .host_ms = -1};
    CHECK_EQ_INT(realm_registry_usage_append(r, &bad, &err), REALM_E_INVALID);
    CHECK(gen_of(r) == g);
    struct realm_reg_usage *us = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_usage_query(r, "odd", 0, 0, &us, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 5);
    if (n == 5)
        CHECK(us[0].finished_at == 2001 && us[4].finished_at == 2009 &&
              !strcmp(us[1].key_label, "") && us[1].completion_tokens == 30 &&
              !strcmp(us[0].outcome, "ok"));
    realm_reg_usages_free(us, n);
    CHECK_EQ_INT(realm_registry_usage_query(r, NULL, 2002, 2005, &us, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 3);
    realm_reg_usages_free(us, n);
    struct realm_reg_usage_sum s;
    CHECK_EQ_INT(realm_registry_usage_sum(r, "even", 0, 0, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, 5);
    CHECK_EQ_INT(s.prompt_tokens, 0 + 2 + 4 + 6 + 8);
    CHECK_EQ_INT(s.completion_tokens, 200);
    CHECK_EQ_INT(s.host_ms, 500);
    CHECK_EQ_INT(realm_registry_usage_sum(r, "nobody", 0, 0, &s, &err), REALM_OK);
    CHECK_EQ_INT(s.requests, 0);
    realm_registry_close(r);
}

static void test_batch_and_nodes(void) {
    struct realm_registry *r = fresh("batch");
    struct realm_registry *r2 = r ? open_pg("batch", "batch2") : NULL;
    if (!r || !r2) {
        realm_registry_close(r);
        return;
    }
    struct realm_err err = {0};
    uint64_t g0 = gen_of(r2);
    CHECK_EQ_INT(realm_registry_batch_end(r, true, &err), REALM_E_STATE);
    CHECK_EQ_INT(realm_registry_batch_begin(r, &err), REALM_OK);
    struct realm_reg_tenant a = tenant_of("a", NULL, 0), b = tenant_of("b", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_E_STATE); /* undone alone */
    CHECK_EQ_INT(realm_registry_tenant_create(r, &b, &err), REALM_OK);
    char k[REALM_KEY_LEN + 1];
    CHECK_EQ_INT(realm_registry_key_add(r, "a", "x", k, sizeof k, &err), REALM_OK);
    CHECK(gen_of(r2) == g0); /* the other node sees nothing yet */
    CHECK_EQ_INT(realm_registry_batch_end(r, true, &err), REALM_OK);
    uint64_t g1 = gen_of(r2);
    CHECK(g1 == g0 + 3);
    struct realm_reg_tenant got;
    CHECK_EQ_INT(realm_registry_tenant_get(r2, "b", &got, &err), REALM_OK);
    realm_reg_tenant_clear(&got);
    struct realm_reg_key kk;
    CHECK_EQ_INT(realm_registry_key_lookup(r2, k, strlen(k), &kk, &err), REALM_OK);
    realm_reg_key_clear(&kk);
    /* rolled back: nothing of it stays */
    struct realm_reg_tenant c = tenant_of("c", NULL, 0);
    CHECK_EQ_INT(realm_registry_batch_begin(r, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &c, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_delete(r, "a", &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_batch_end(r, false, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_tenant_get(r2, "c", &got, &err), REALM_E_NOT_FOUND);
    CHECK_EQ_INT(realm_registry_tenant_get(r2, "a", &got, &err), REALM_OK);
    realm_reg_tenant_clear(&got);
    CHECK(gen_of(r) == g1);
    /* a change on node 2 is seen by node 1 */
    CHECK_EQ_INT(realm_registry_tenant_delete(r2, "b", &err), REALM_OK);
    CHECK(gen_of(r) == g1 + 1);
    CHECK_EQ_INT(realm_registry_tenant_get(r, "b", &got, &err), REALM_E_NOT_FOUND);
    realm_registry_close(r2);
    realm_registry_close(r);
}

/* ---- concurrency: threads on two handles (two nodes) ---- */

struct worker {
    struct realm_registry *r;
    int ok, taken, other;
};

static void *create_same(void *arg) {
    struct worker *w = arg;
    struct realm_err err = {0};
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%02d", i);
        struct realm_reg_tenant t = tenant_of(id, NULL, 0);
        int rc = realm_registry_tenant_create(w->r, &t, &err);
        if (rc == REALM_OK)
            w->ok++;
        else if (rc == REALM_E_STATE)
            w->taken++;
        else
            w->other++;
        struct realm_reg_guest g;
        if (realm_registry_guest_add(w->r, "shared", id, strlen(id), true, &g, &err) != REALM_OK)
            w->other++;
    }
    return NULL;
}

static void test_concurrent(void) {
    struct realm_registry *r = fresh("conc");
    struct realm_registry *r2 = r ? open_pg("conc", "conc2") : NULL;
    if (!r || !r2) {
        realm_registry_close(r);
        return;
    }
    struct realm_err err = {0};
    struct realm_reg_tenant s = tenant_of("shared", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &s, &err), REALM_OK);
    struct worker w[4] = {{.r = r}, {.r = r}, {.r = r2}, {.r = r2}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, create_same, &w[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    int ok = 0, taken = 0, other = 0;
    for (int i = 0; i < 4; i++) {
        ok += w[i].ok;
        taken += w[i].taken;
        other += w[i].other;
    }
    CHECK_EQ_INT(ok, 20);
    CHECK_EQ_INT(taken, 60);
    CHECK_EQ_INT(other, 0);
    struct realm_reg_guest *gs = NULL;
    size_t n = 0;
    CHECK_EQ_INT(realm_registry_guest_list(r2, "shared", &gs, &n, &err), REALM_OK);
    CHECK_EQ_INT(n, 80);
    int active = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(gs[i].version, (int64_t)i + 1);
        active += gs[i].active;
    }
    CHECK_EQ_INT(active, 1);
    realm_free(gs);
    realm_registry_close(r2);
    realm_registry_close(r);
}

/* ---- failures ---- */

static void test_server_gone(void) {
    struct realm_registry *r = fresh("gone");
    if (!r) return;
    struct realm_err err = {0};
    struct realm_reg_tenant a = tenant_of("a", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &a, &err), REALM_OK);
    pg_stop();
    uint64_t g = 0;
    CHECK_EQ_INT(realm_registry_generation(r, &g, &err), REALM_E_IO);
    CHECK(strstr(err.msg, "postgres") != NULL);
    struct realm_reg_tenant b = tenant_of("b", NULL, 0);
    CHECK_EQ_INT(realm_registry_tenant_create(r, &b, &err), REALM_E_IO);
    struct realm_reg_key k;
    CHECK_EQ_INT(realm_registry_key_lookup(r, "x", 1, &k, &err), REALM_E_IO);
    CHECKF(pg_start(), "restart the server (see %s/server.log)", g_root);
    g_started = true;
    /* the next call reconnects */
    CHECK_EQ_INT(realm_registry_tenant_create(r, &b, &err), REALM_OK);
    CHECK_EQ_INT(realm_registry_generation(r, &g, &err), REALM_OK);
    /* a restart between two calls: the connection looks fine until used; the next call (a read,
     * and a change) still succeeds */
    pg_stop();
    CHECKF(pg_start(), "restart the server (see %s/server.log)", g_root);
    g_started = true;
    uint64_t g2 = 0;
    CHECKF(realm_registry_generation(r, &g2, &err) == REALM_OK, "after restart: %s", err.msg);
    CHECK(g2 == g);
    pg_stop();
    CHECKF(pg_start(), "restart the server (see %s/server.log)", g_root);
    g_started = true;
    struct realm_reg_tenant tc = tenant_of("c", NULL, 0);
    CHECKF(realm_registry_tenant_create(r, &tc, &err) == REALM_OK, "after restart: %s", err.msg);
    realm_registry_close(r);

    /* nothing listening: REALM_E_IO with libpq's message */
    char url[256];
    snprintf(url, sizeof url, "postgresql://realm@127.0.0.1:%d/gone?connect_timeout=3",
             free_port());
    struct realm_registry_opts o = {.cache_dir = g_root};
    struct realm_registry *x = NULL;
    CHECK_EQ_INT(realm_registry_open_postgres(url, &o, &x, &err), REALM_E_IO);
    CHECK(x == NULL && strlen(err.msg) > 20);
    url_of(url, sizeof url, "no_such_db");
    CHECK_EQ_INT(realm_registry_open_postgres(url, &o, &x, &err), REALM_E_IO);
    CHECK(strstr(err.msg, "no_such_db") != NULL);

    /* a schema from a newer realm */
    if (make_db("newer")) {
        url_of(url, sizeof url, "newer");
        PGconn *c = PQconnectdb(url);
        PGresult *res = PQexec(c, "CREATE TABLE realm_meta(k text PRIMARY KEY, v bigint NOT NULL);"
                                  "INSERT INTO realm_meta VALUES('schema', 99)");
        CHECK(PQresultStatus(res) == PGRES_COMMAND_OK);
        PQclear(res);
        PQfinish(c);
        CHECK_EQ_INT(realm_registry_open_postgres(url, &o, &x, &err), REALM_E_FORMAT);
    }
}

static void test_open_dispatch(void) {
    struct realm_err err = {0};
    CHECK(realm_registry_spec_is_postgres("postgres://h/db"));
    CHECK(realm_registry_spec_is_postgres("postgresql://h/db"));
    CHECK(!realm_registry_spec_is_postgres("/var/lib/realm"));
    CHECK(!realm_registry_spec_is_postgres("postgres"));
    char shown[128];
    CHECK(
        !strcmp(realm_registry_spec_display("postgresql://u:s3cret@h:5432/db", shown, sizeof shown),
                "postgresql://u:***@h:5432/db"));
    CHECK(!strcmp(realm_registry_spec_display("postgres://u:p@h/db?sslmode=require&password=x&a=b",
                                              shown, sizeof shown),
                  "postgres://u:***@h/db?sslmode=require&password=***&a=b"));
    CHECK(!strcmp(realm_registry_spec_display("postgresql://u@h:5432/db", shown, sizeof shown),
                  "postgresql://u@h:5432/db"));
    CHECK(!strcmp(realm_registry_spec_display("/var/lib/realm", shown, sizeof shown),
                  "/var/lib/realm"));
    char url[256], dir[512];
    url_of(url, sizeof url, "tenants");
    snprintf(dir, sizeof dir, "%s/cache-env", g_root);
    setenv("REALM_REGISTRY_CACHE", dir, 1);
    struct realm_registry *r = NULL;
    CHECK_EQ_INT(realm_registry_open(url, NULL, &r, &err), REALM_OK);
    if (r) {
        CHECK(!strcmp(realm_registry_dir(r), dir));
        struct realm_reg_tenant t;
        CHECK_EQ_INT(realm_registry_tenant_get(r, "acme", &t, &err), REALM_OK); /* postgres */
        realm_reg_tenant_clear(&t);
        realm_registry_close(r);
    }
    snprintf(dir, sizeof dir, "%s/sqlite-state", g_root);
    CHECK_EQ_INT(realm_registry_open(dir, NULL, &r, &err), REALM_OK);
    if (r) {
        char db[600];
        snprintf(db, sizeof db, "%s/registry.db", dir);
        CHECK(access(db, F_OK) == 0);
        realm_registry_close(r);
    }
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    if (!find_bin()) tu_skip("PostgreSQL server binaries (initdb, pg_ctl) not installed");
    if (!cluster_up()) {
        pg_stop();
        fprintf(stderr, "cannot start a PostgreSQL cluster; files kept in %s\n", g_root);
        return 1;
    }
    test_tenants();
    test_keys();
    test_guests();
    test_usage();
    test_batch_and_nodes();
    test_concurrent();
    test_open_dispatch();
    test_server_gone();
    pg_stop();
    if (tu_failures == 0)
        sh("rm -rf %s", g_root);
    else
        fprintf(stderr, "cluster files kept in %s\n", g_root);
    return tu_finish("test_registry_pg");
}
