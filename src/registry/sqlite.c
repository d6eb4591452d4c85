/*
 * sqlite.c — the SQLite backend of the tenant registry (include/realm/registry.h): one database,
 * DIR/registry.db, in WAL mode with synchronous=FULL (a commit is on disk before the call
 * returns), foreign keys on, a busy timeout for other processes, and the schema versioned with
 * PRAGMA user_version. Every change runs in one transaction (BEGIN IMMEDIATE, so a writer takes
 * the write lock before reading what it changes) that also bumps the generation counter; inside
 * a batch each change is a savepoint. Only prepared statements with bound parameters touch data.
 *
 * Owns: the connection and the mutex. Thread rule: one connection serves every thread; a
 * recursive mutex serialises calls (recursive so that a batch's owner can make changes inside
 * it while other threads wait for the whole batch).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "realm/alloc.h"
#include "registry/registry.h"

#define SCHEMA_VERSION 1

static const struct reg_ops k_sqlite_ops;

struct sq_registry {
    struct realm_registry base; /* first: ops and dir (registry/registry.h) */
    sqlite3 *db;
    pthread_mutex_t mu; /* recursive; guards db, depth, broken */
    int depth;          /* open transaction levels (batch + change) of the thread holding mu */
    int batch;          /* open batches */
    bool broken;        /* SQLite rolled the batch's transaction back under us */
};

static struct sq_registry *sq_of(struct realm_registry *base) {
    return (struct sq_registry *)base;
}

static const char *const k_schema[] = {
    "CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "INSERT INTO meta VALUES('generation', 0)",
    "CREATE TABLE tenants(id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, all_models INTEGER NOT "
    "NULL,"
    " max_concurrent INTEGER NOT NULL, tokens_per_minute INTEGER NOT NULL,"
    " max_tokens_per_request INTEGER NOT NULL, guest_memory_bytes INTEGER NOT NULL,"
    " kv_blocks INTEGER NOT NULL, init_wall_ms INTEGER NOT NULL, generate_wall_ms INTEGER NOT NULL,"
    " host_memory_bytes INTEGER NOT NULL)",
    "CREATE TABLE tenant_models(tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " model TEXT NOT NULL, PRIMARY KEY(tenant, model))",
    /* head: the first 16 hex digits of the hash, the index a lookup narrows on before comparing
     * full digests in constant time */
    "CREATE TABLE keys(hash TEXT NOT NULL UNIQUE, head TEXT NOT NULL,"
    " tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, label TEXT NOT NULL, prefix "
    "TEXT,"
    " created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL DEFAULT 0, UNIQUE(tenant, label))",
    "CREATE INDEX keys_head ON keys(head)",
    "CREATE TABLE admin_keys(hash TEXT NOT NULL UNIQUE, head TEXT NOT NULL, label TEXT NOT NULL "
    "UNIQUE,"
    " prefix TEXT, created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX admin_keys_head ON admin_keys(head)",
    "CREATE TABLE guests(tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " version INTEGER NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER "
    "NOT NULL,"
    " active INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(tenant, version))",
    "CREATE UNIQUE INDEX guests_active ON guests(tenant) WHERE active",
    "CREATE TABLE usage(id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, model TEXT NOT NULL,"
    " key_label TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
    " host_ms INTEGER NOT NULL, outcome TEXT NOT NULL, started_at INTEGER NOT NULL,"
    " finished_at INTEGER NOT NULL)",
    "CREATE INDEX usage_tenant_time ON usage(tenant, finished_at)",
    "CREATE INDEX usage_time ON usage(finished_at)",
    "PRAGMA user_version = 1",
    NULL,
};

/* ---- errors ---- */

static int code_of(int src) {
    switch (src & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return REALM_E_BUSY;
    case SQLITE_NOMEM:
        return REALM_E_NOMEM;
    case SQLITE_CONSTRAINT:
        return REALM_E_STATE;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return REALM_E_FORMAT;
    default:
        return REALM_E_IO;
    }
}

/* Turns SQLite's result `src` of doing `what` into a status with SQLite's own message. */
static int db_fail(struct sq_registry *r, int src, const char *what, struct realm_err *err) {
    const char *m = r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(src);
    return realm_err_set(err, code_of(src), "registry: %s: %s (sqlite %d)", what, m, src);
}

/* ---- statements: bind by a type string ('t' text or NULL, 'i' int64) ---- */

static int prep(struct sq_registry *r, const char *sql, sqlite3_stmt **st, struct realm_err *err) {
    int rc = sqlite3_prepare_v2(r->db, sql, -1, st, NULL);
    return rc == SQLITE_OK ? REALM_OK : db_fail(r, rc, "prepare", err);
}

static int vbind(struct sq_registry *r, sqlite3_stmt *st, const char *types, va_list ap,
                 struct realm_err *err) {
    for (int i = 0; types[i]; i++) {
        int rc;
        if (types[i] == 't') {
            const char *s = va_arg(ap, const char *);
            rc = s ? sqlite3_bind_text(st, i + 1, s, -1, SQLITE_STATIC)
                   : sqlite3_bind_null(st, i + 1);
        } else {
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
        if (rc != SQLITE_OK) return db_fail(r, rc, "bind", err);
    }
    return REALM_OK;
}

/* Prepares sql and binds its parameters; *st is owned by the caller (sqlite3_finalize). */
static int query(struct sq_registry *r, sqlite3_stmt **st, struct realm_err *err, const char *sql,
                 const char *types, ...) {
    int rc = prep(r, sql, st, err);
    if (rc) return rc;
    va_list ap;
    va_start(ap, types);
    rc = vbind(r, *st, types, ap, err);
    va_end(ap);
    if (rc) {
        sqlite3_finalize(*st);
        *st = NULL;
    }
    return rc;
}

/* Runs a statement that returns no rows; *changes (optional) gets the rows it changed. */
static int run(struct sq_registry *r, int *changes, struct realm_err *err, const char *sql,
               const char *types, ...) {
    sqlite3_stmt *st;
    int rc = prep(r, sql, &st, err);
    if (rc) return rc;
    va_list ap;
    va_start(ap, types);
    rc = vbind(r, st, types, ap, err);
    va_end(ap);
    if (!rc) {
        int s = sqlite3_step(st);
        if (s != SQLITE_DONE && s != SQLITE_ROW)
            rc = db_fail(r, s, "write", err);
        else if (changes)
            *changes = sqlite3_changes(r->db);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Runs a query whose first row's first column is an integer; *found tells whether there was a
 * row (NULL found: absence is REALM_E_NOT_FOUND). */
static int scalar(struct sq_registry *r, int64_t *out, bool *found, struct realm_err *err,
                  const char *sql, const char *types, ...) {
    sqlite3_stmt *st;
    int rc = prep(r, sql, &st, err);
    if (rc) return rc;
    va_list ap;
    va_start(ap, types);
    rc = vbind(r, st, types, ap, err);
    va_end(ap);
    if (!rc) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            if (found) *found = true;
        } else if (s == SQLITE_DONE) {
            if (found)
                *found = false;
            else
                rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such row");
        } else {
            rc = db_fail(r, s, "read", err);
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int exec_sql(struct sq_registry *r, const char *sql, struct realm_err *err) {
    int rc = sqlite3_exec(r->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? REALM_OK : db_fail(r, rc, sql, err);
}

/* A column as an owned string ("" for NULL when want_empty, else NULL); *oom set on failure. */
static char *col_str(sqlite3_stmt *st, int i, bool want_empty, bool *oom) {
    const unsigned char *s = sqlite3_column_text(st, i);
    if (!s && !want_empty) return NULL;
    const char *t = s ? (const char *)s : "";
    char *d = realm_strndup(t, strlen(t));
    if (!d) *oom = true;
    return d;
}

/* ---- transactions ---- */

/* Takes the registry and opens a transaction (write: BEGIN IMMEDIATE; read: BEGIN) or, inside
 * a batch, a savepoint. On failure the registry is released. */
static int tx_begin(struct sq_registry *r, bool write, struct realm_err *err) {
    pthread_mutex_lock(&r->mu);
    if (r->depth && r->broken) {
        /* a savepoint now would open a fresh transaction and commit half a batch */
        pthread_mutex_unlock(&r->mu);
        return realm_err_set(err, REALM_E_IO, "registry: the batch was rolled back by an error");
    }
    const char *sql = r->depth ? "SAVEPOINT change" : write ? "BEGIN IMMEDIATE" : "BEGIN";
    int rc = exec_sql(r, sql, err);
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    r->depth++;
    return REALM_OK;
}

/* Ends what tx_begin opened: commits when rc is REALM_OK (a failed commit is rolled back and
 * becomes the result), rolls back otherwise; releases the registry. Returns the result. */
static int tx_end(struct sq_registry *r, int rc, struct realm_err *err) {
    r->depth--;
    if (r->depth == 0) {
        if (rc == REALM_OK) {
            rc = exec_sql(r, "COMMIT", err);
            if (rc && !sqlite3_get_autocommit(r->db))
                sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        } else if (!sqlite3_get_autocommit(r->db)) {
            sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        }
    } else if (sqlite3_get_autocommit(r->db)) {
        /* an I/O error made SQLite roll the batch back: nothing of it survives */
        r->broken = true;
        if (rc == REALM_OK)
            rc = realm_err_set(err, REALM_E_IO, "registry: the batch was rolled back by an error");
    } else if (rc == REALM_OK) {
        rc = exec_sql(r, "RELEASE change", err);
    } else {
        sqlite3_exec(r->db, "ROLLBACK TO change", NULL, NULL, NULL);
        sqlite3_exec(r->db, "RELEASE change", NULL, NULL, NULL);
        if (sqlite3_get_autocommit(r->db)) r->broken = true;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int bump_generation(struct sq_registry *r, struct realm_err *err) {
    return run(r, NULL, err, "UPDATE meta SET v = v + 1 WHERE k = 'generation'", "");
}

static int sq_batch_begin(struct realm_registry *base, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    pthread_mutex_lock(&r->mu); /* held until batch_end */
    int rc = exec_sql(r, r->depth ? "SAVEPOINT change" : "BEGIN IMMEDIATE", err);
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    if (r->depth == 0) r->broken = false;
    r->depth++;
    r->batch++;
    return REALM_OK;
}

static int sq_batch_end(struct realm_registry *base, bool commit, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    pthread_mutex_lock(&r->mu);
    if (r->batch == 0) {
        pthread_mutex_unlock(&r->mu);
        return realm_err_set(err, REALM_E_STATE, "registry: batch_end without batch_begin");
    }
    r->batch--;
    int rc = REALM_OK;
    if (commit && r->broken)
        rc = realm_err_set(err, REALM_E_IO, "registry: the batch was rolled back by an error");
    else if (!commit)
        rc = REALM_E_CANCELLED; /* internal: roll back quietly */
    rc = tx_end(r, rc, err);
    if (!commit && rc == REALM_E_CANCELLED) rc = REALM_OK;
    pthread_mutex_unlock(&r->mu); /* batch_begin's */
    return rc;
}

/* ---- open / close ---- */

static int setup_schema(struct sq_registry *r, struct realm_err *err) {
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    int64_t ver = 0;
    rc = scalar(r, &ver, NULL, err, "PRAGMA user_version", "");
    if (!rc && ver > SCHEMA_VERSION)
        rc = realm_err_set(err, REALM_E_FORMAT,
                           "registry: schema version %lld, expected at most %d (a newer realm?)",
                           (long long)ver, SCHEMA_VERSION);
    for (int i = 0; !rc && ver == 0 && k_schema[i]; i++)
        rc = exec_sql(r, k_schema[i], err);
    return tx_end(r, rc, err);
}

static int configure(struct sq_registry *r, int busy_ms, struct realm_err *err) {
    sqlite3_extended_result_codes(r->db, 1);
    sqlite3_busy_timeout(r->db, busy_ms);
    /* WAL: readers never block the writer; switching needs a brief exclusive lock that the busy
     * handler does not always wait for, so a few tries absorb a concurrent first open */
    int rc = REALM_OK;
    for (int attempt = 0; attempt < 50; attempt++) {
        sqlite3_stmt *st;
        if ((rc = prep(r, "PRAGMA journal_mode = WAL", &st, err))) return rc;
        int s = sqlite3_step(st);
        bool wal = s == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
        rc = s == SQLITE_ROW ? REALM_OK : db_fail(r, s, "journal_mode", err);
        sqlite3_finalize(st);
        if (wal) break;
        if (rc == REALM_OK)
            rc = realm_err_set(err, REALM_E_IO, "registry: cannot switch to WAL mode");
        if (rc != REALM_E_BUSY) return rc;
        sqlite3_sleep(20);
    }
    if (rc) return rc;
    if ((rc = exec_sql(r, "PRAGMA synchronous = FULL", err)) ||
        (rc = exec_sql(r, "PRAGMA foreign_keys = ON", err)))
        return rc;
    return setup_schema(r, err);
}

static void sq_close(struct realm_registry *base);

int realm_registry_open_sqlite(const char *dir, const struct realm_registry_opts *opts,
                               struct realm_registry **out, struct realm_err *err) {
    if (!dir || !dir[0] || strlen(dir) > 3800)
        return realm_err_set(err, REALM_E_INVALID, "registry: state directory empty or too long");
    char path[4096];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    if (reg_mkdirs(dir) != 0)
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot create: %s", dir,
                             strerror(errno));
    struct sq_registry *r = realm_calloc(1, sizeof *r);
    if (!r || !(r->base.dir = realm_strndup(dir, strlen(dir)))) {
        realm_free(r);
        return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    }
    r->base.ops = &k_sqlite_ops;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&r->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    int busy = opts && opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000;
    int s = sqlite3_open_v2(path, &r->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                            opts ? opts->vfs : NULL);
    int rc = s == SQLITE_OK ? configure(r, busy, err) : db_fail(r, s, path, err);
    if (rc) {
        sq_close(&r->base);
        return rc;
    }
    *out = &r->base;
    return REALM_OK;
}

static void sq_close(struct realm_registry *base) {
    struct sq_registry *r = sq_of(base);
    if (!r) return;
    if (r->db) sqlite3_close_v2(r->db);
    pthread_mutex_destroy(&r->mu);
    realm_free(r->base.dir);
    realm_free(r);
}

static int sq_generation(struct realm_registry *base, uint64_t *out, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    pthread_mutex_lock(&r->mu);
    int64_t v = 0;
    int rc = scalar(r, &v, NULL, err, "SELECT v FROM meta WHERE k = 'generation'", "");
    pthread_mutex_unlock(&r->mu);
    if (!rc) *out = (uint64_t)v;
    return rc;
}

/* ---- tenants ---- */

static int check_tenant(const struct realm_reg_tenant *t, struct realm_err *err) {
    if (!t || !reg_name_ok(t->id))
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: tenant id: empty, too long or control characters");
    const struct realm_tenant_limits *l = &t->limits;
    if (l->max_concurrent < 0 || l->tokens_per_minute < 0 || l->max_tokens_per_request < 0 ||
        l->guest_memory_bytes < 0 || l->kv_blocks < 0 || l->init_wall_ms < 0 ||
        l->generate_wall_ms < 0 || l->host_memory_bytes < 0)
        return realm_err_set(err, REALM_E_INVALID, "registry: tenant %s: negative limit", t->id);
    for (size_t i = 0; i < t->n_models; i++)
        if (!reg_name_ok(t->models[i]))
            return realm_err_set(err, REALM_E_INVALID,
                                 "registry: tenant %s: model name %zu is not valid", t->id, i);
    return REALM_OK;
}

static int put_models(struct sq_registry *r, const struct realm_reg_tenant *t,
                      struct realm_err *err) {
    int rc = run(r, NULL, err, "DELETE FROM tenant_models WHERE tenant = ?", "t", t->id);
    for (size_t i = 0; !rc && !t->all_models && i < t->n_models; i++)
        rc = run(r, NULL, err, "INSERT OR IGNORE INTO tenant_models(tenant, model) VALUES(?, ?)",
                 "tt", t->id, t->models[i]);
    return rc;
}

#define LIMIT_ARGS(l)                                                                              \
    (int64_t)(l)->max_concurrent, (int64_t)(l)->tokens_per_minute,                                 \
        (int64_t)(l)->max_tokens_per_request, (int64_t)(l)->guest_memory_bytes,                    \
        (int64_t)(l)->kv_blocks, (int64_t)(l)->init_wall_ms, (int64_t)(l)->generate_wall_ms,       \
        (int64_t)(l)->host_memory_bytes

static int sq_tenant_create(struct realm_registry *base, const struct realm_reg_tenant *t,
                            struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    int rc = check_tenant(t, err);
    if (rc || (rc = tx_begin(r, true, err))) return rc;
    int64_t dummy;
    bool exists = false;
    rc = scalar(r, &dummy, &exists, err, "SELECT 1 FROM tenants WHERE id = ?", "t", t->id);
    if (!rc && exists) rc = realm_err_set(err, REALM_E_STATE, "registry: tenant %s exists", t->id);
    if (!rc)
        rc =
            run(r, NULL, err,
                "INSERT INTO tenants(id, created_at, all_models, max_concurrent, tokens_per_minute,"
                " max_tokens_per_request, guest_memory_bytes, kv_blocks, init_wall_ms, "
                "generate_wall_ms,"
                " host_memory_bytes) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "tiiiiiiiiii", t->id, reg_now_ms(), (int64_t)t->all_models, LIMIT_ARGS(&t->limits));
    if (!rc) rc = put_models(r, t, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int sq_tenant_update(struct realm_registry *base, const struct realm_reg_tenant *t,
                            struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    int rc = check_tenant(t, err);
    if (rc || (rc = tx_begin(r, true, err))) return rc;
    int n = 0;
    rc = run(r, &n, err,
             "UPDATE tenants SET all_models = ?, max_concurrent = ?, tokens_per_minute = ?,"
             " max_tokens_per_request = ?, guest_memory_bytes = ?, kv_blocks = ?, init_wall_ms = ?,"
             " generate_wall_ms = ?, host_memory_bytes = ? WHERE id = ?",
             "iiiiiiiiit", (int64_t)t->all_models, LIMIT_ARGS(&t->limits), t->id);
    if (!rc && n == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", t->id);
    if (!rc) rc = put_models(r, t, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static const char k_tenant_cols[] =
    "SELECT id, created_at, all_models, max_concurrent, tokens_per_minute, max_tokens_per_request,"
    " guest_memory_bytes, kv_blocks, init_wall_ms, generate_wall_ms, host_memory_bytes FROM "
    "tenants";

/* Fills t from a k_tenant_cols row and its grants. */
static int read_tenant(struct sq_registry *r, sqlite3_stmt *st, struct realm_reg_tenant *t,
                       struct realm_err *err) {
    bool oom = false;
    memset(t, 0, sizeof *t);
    t->id = col_str(st, 0, true, &oom);
    t->created_at = sqlite3_column_int64(st, 1);
    t->all_models = sqlite3_column_int64(st, 2) != 0;
    struct realm_tenant_limits *l = &t->limits;
    l->max_concurrent = (int32_t)sqlite3_column_int64(st, 3);
    l->tokens_per_minute = sqlite3_column_int64(st, 4);
    l->max_tokens_per_request = (int32_t)sqlite3_column_int64(st, 5);
    l->guest_memory_bytes = sqlite3_column_int64(st, 6);
    l->kv_blocks = (int32_t)sqlite3_column_int64(st, 7);
    l->init_wall_ms = sqlite3_column_int64(st, 8);
    l->generate_wall_ms = sqlite3_column_int64(st, 9);
    l->host_memory_bytes = sqlite3_column_int64(st, 10);
    if (oom) return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    sqlite3_stmt *m;
    int rc = query(r, &m, err, "SELECT model FROM tenant_models WHERE tenant = ? ORDER BY model",
                   "t", t->id);
    if (rc) return rc;
    size_t cap = 0;
    int s;
    while (!rc && (s = sqlite3_step(m)) == SQLITE_ROW) {
        if (t->n_models == cap) {
            size_t nc = cap ? cap * 2 : 4;
            char **nm = realm_realloc(t->models, nc * sizeof *nm);
            if (!nm) {
                rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
                break;
            }
            t->models = nm;
            cap = nc;
        }
        char *name = col_str(m, 0, true, &oom);
        if (oom)
            rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        else
            t->models[t->n_models++] = name;
    }
    if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "read grants", err);
    sqlite3_finalize(m);
    return rc;
}

static int sq_tenant_get(struct realm_registry *base, const char *id, struct realm_reg_tenant *out,
                         struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!reg_name_ok(id))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant '%.80s'", id ? id : "");
    int rc = tx_begin(r, false, err);
    if (rc) return rc;
    char sql[512];
    snprintf(sql, sizeof sql, "%s WHERE id = ?", k_tenant_cols);
    sqlite3_stmt *st;
    struct realm_reg_tenant t = {0};
    if (!(rc = query(r, &st, err, sql, "t", id))) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            rc = read_tenant(r, st, &t, err);
        else if (s == SQLITE_DONE)
            rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", id);
        else
            rc = db_fail(r, s, "read tenant", err);
        sqlite3_finalize(st);
    }
    rc = tx_end(r, rc, err);
    if (rc)
        realm_reg_tenant_clear(&t);
    else
        *out = t;
    return rc;
}

/* Makes room for one more element in a result array (capacity doubling from 8). */
static int grow_array(void **arr, size_t *cap, size_t cnt, size_t elt, struct realm_err *err) {
    if (cnt < *cap) return REALM_OK;
    size_t nc = *cap ? *cap * 2 : 8;
    void *na = realm_realloc(*arr, nc * elt);
    if (!na) return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    *arr = na;
    *cap = nc;
    return REALM_OK;
}

static int sq_tenant_list(struct realm_registry *base, struct realm_reg_tenant **out, size_t *n,
                          struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    int rc = tx_begin(r, false, err);
    if (rc) return rc;
    char sql[512];
    snprintf(sql, sizeof sql, "%s ORDER BY id", k_tenant_cols);
    sqlite3_stmt *st;
    struct realm_reg_tenant *arr = NULL;
    size_t cnt = 0, cap = 0;
    if (!(rc = query(r, &st, err, sql, ""))) {
        int s;
        while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
            if ((rc = grow_array((void **)&arr, &cap, cnt, sizeof *arr, err))) break;
            rc = read_tenant(r, st, &arr[cnt], err);
            cnt++; /* counted even on failure: read_tenant leaves it freeable */
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "list tenants", err);
        sqlite3_finalize(st);
    }
    rc = tx_end(r, rc, err);
    if (rc) {
        realm_reg_tenants_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REALM_OK;
}

static int sq_tenant_delete(struct realm_registry *base, const char *id, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!reg_name_ok(id))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant '%.80s'", id ? id : "");
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    int n = 0;
    rc = run(r, &n, err, "DELETE FROM tenants WHERE id = ?", "t",
             id); /* cascades to grants, keys, guests */
    if (!rc && n == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", id);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

/* ---- keys: one implementation for tenant keys (tenant != NULL) and admin keys ---- */

struct key_sql {
    const char *insert, *hash_in_other, *by_label, *by_hash, *by_prefix_count, *by_prefix, *list,
        *lookup;
};

static const struct key_sql k_tenant_sql = {
    "INSERT INTO keys(hash, head, tenant, label, prefix, created_at) VALUES(?, ?, ?, ?, ?, ?)",
    "SELECT 1 FROM admin_keys WHERE hash = ?",
    "DELETE FROM keys WHERE tenant = ? AND label = ?",
    "DELETE FROM keys WHERE tenant = ? AND hash = ?",
    "SELECT count(*) FROM keys WHERE tenant = ? AND prefix IS NOT NULL AND substr(prefix, 1, ?) = "
    "?",
    "DELETE FROM keys WHERE tenant = ? AND prefix IS NOT NULL AND substr(prefix, 1, ?) = ?",
    "SELECT tenant, label, prefix, hash, created_at, last_used_at FROM keys WHERE ?1 IS NULL OR "
    "tenant = ?1"
    " ORDER BY tenant, created_at, rowid",
    "SELECT tenant, label, prefix, hash, created_at, last_used_at FROM keys WHERE head = ?",
};

/* admin statements take the same parameters, so one code path binds both; the tenant (NULL) is
 * bound and left unused (?3 of the insert) or compared with itself (?1 IS ?1: always true) */
static const struct key_sql k_admin_sql = {
    "INSERT INTO admin_keys(hash, head, label, prefix, created_at) VALUES(?1, ?2, ?4, ?5, ?6)",
    "SELECT 1 FROM keys WHERE hash = ?",
    "DELETE FROM admin_keys WHERE ?1 IS ?1 AND label = ?2",
    "DELETE FROM admin_keys WHERE ?1 IS ?1 AND hash = ?2",
    "SELECT count(*) FROM admin_keys WHERE ?1 IS ?1 AND prefix IS NOT NULL AND substr(prefix, 1, "
    "?2) = ?3",
    "DELETE FROM admin_keys WHERE ?1 IS ?1 AND prefix IS NOT NULL AND substr(prefix, 1, ?2) = ?3",
    "SELECT NULL, label, prefix, hash, created_at, last_used_at FROM admin_keys WHERE ?1 IS ?1"
    " ORDER BY created_at, rowid",
    "SELECT NULL, label, prefix, hash, created_at, last_used_at FROM admin_keys WHERE head = ?",
};

static const char *who(const char *tenant) {
    return tenant ? tenant : "(admin)";
}

/* Inserts a key row with hash `hash` (normalized), label and prefix (NULL: imported). */
static int insert_key(struct sq_registry *r, const char *tenant, const char *label,
                      const char *prefix, const char *hash, struct realm_err *err) {
    const struct key_sql *q = tenant ? &k_tenant_sql : &k_admin_sql;
    char head[17];
    memcpy(head, hash, 16);
    head[16] = '\0';
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    int64_t one;
    bool found = false;
    if (tenant) {
        rc = scalar(r, &one, &found, err, "SELECT 1 FROM tenants WHERE id = ?", "t", tenant);
        if (!rc && !found)
            rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", tenant);
    }
    if (!rc) {
        /* a hash in both tables would make one key both a tenant's and the operator's */
        rc = scalar(r, &one, &found, err, q->hash_in_other, "t", hash);
        if (!rc && found)
            rc = realm_err_set(err, REALM_E_STATE, "registry: that key is already stored");
    }
    if (!rc) {
        rc =
            run(r, NULL, err, q->insert, "ttttti", hash, head, tenant, label, prefix, reg_now_ms());
        if (rc == REALM_E_STATE)
            rc =
                realm_err_set(err, REALM_E_STATE, "registry: %s: the label '%s' or that key exists",
                              who(tenant), label);
    }
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int key_add(struct sq_registry *r, const char *tenant, const char *label, char *key_out,
                   size_t cap, struct realm_err *err) {
    if (cap <= REALM_KEY_LEN)
        return realm_err_set(err, REALM_E_TOO_SMALL, "registry: key buffer too small");
    if (label && !reg_name_ok(label))
        return realm_err_set(err, REALM_E_INVALID, "registry: key label is not valid");
    if (tenant && !reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    char key[REALM_KEY_LEN + 1], hash[REALM_KEY_HASH_HEX + 1], prefix[REALM_REG_KEY_PREFIX_LEN + 1];
    if (realm_key_generate(key, sizeof key))
        return realm_err_set(err, REALM_E_INTERNAL, "registry: no randomness for a key");
    realm_key_hash(key, REALM_KEY_LEN, hash);
    memcpy(prefix, key, REALM_REG_KEY_PREFIX_LEN);
    prefix[REALM_REG_KEY_PREFIX_LEN] = '\0';
    int rc = insert_key(r, tenant, label ? label : prefix, prefix, hash, err);
    if (!rc) memcpy(key_out, key, sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static int key_add_hash(struct sq_registry *r, const char *tenant, const char *label,
                        const char *hash_hex, struct realm_err *err) {
    char hash[REALM_KEY_HASH_HEX + 1], deflabel[16];
    if (!reg_hash_normalize(hash_hex, hash))
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: key hash '%.80s', expected 64 hex digits",
                             hash_hex ? hash_hex : "");
    if (label && !reg_name_ok(label))
        return realm_err_set(err, REALM_E_INVALID, "registry: key label is not valid");
    if (tenant && !reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    snprintf(deflabel, sizeof deflabel, "hash-%.8s", hash);
    return insert_key(r, tenant, label ? label : deflabel, NULL, hash, err);
}

static int key_revoke(struct sq_registry *r, const char *tenant, const char *what,
                      struct realm_err *err) {
    const struct key_sql *q = tenant ? &k_tenant_sql : &k_admin_sql;
    if (!what || !what[0]) return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no key given");
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    int n = 0;
    rc = run(r, &n, err, q->by_label, "tt", tenant, what);
    if (!rc && n == 0) {
        /* the whole key itself names its hash */
        char hash[REALM_KEY_HASH_HEX + 1];
        realm_key_hash(what, strlen(what), hash);
        rc = run(r, &n, err, q->by_hash, "tt", tenant, hash);
    }
    size_t len = strlen(what);
    if (!rc && n == 0 && len >= 8 && len <= REALM_REG_KEY_PREFIX_LEN) {
        int64_t cnt = 0;
        rc = scalar(r, &cnt, NULL, err, q->by_prefix_count, "tit", tenant, (int64_t)len, what);
        if (!rc && cnt > 1)
            rc = realm_err_set(err, REALM_E_INVALID,
                               "registry: %s: '%s' matches %lld keys; give a label", who(tenant),
                               what, (long long)cnt);
        if (!rc && cnt == 1) rc = run(r, &n, err, q->by_prefix, "tit", tenant, (int64_t)len, what);
    }
    if (!rc && n == 0)
        rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: %s: no key '%s'", who(tenant), what);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int read_key(sqlite3_stmt *st, struct realm_reg_key *k) {
    bool oom = false;
    memset(k, 0, sizeof *k);
    k->tenant = col_str(st, 0, false, &oom);
    k->label = col_str(st, 1, true, &oom);
    k->prefix = col_str(st, 2, false, &oom);
    const unsigned char *h = sqlite3_column_text(st, 3);
    snprintf(k->hash, sizeof k->hash, "%s", h ? (const char *)h : "");
    k->created_at = sqlite3_column_int64(st, 4);
    k->last_used_at = sqlite3_column_int64(st, 5);
    if (oom) {
        realm_reg_key_clear(k);
        return REALM_E_NOMEM;
    }
    return REALM_OK;
}

static int key_list(struct sq_registry *r, bool admin, const char *tenant,
                    struct realm_reg_key **out, size_t *n, struct realm_err *err) {
    const struct key_sql *q = admin ? &k_admin_sql : &k_tenant_sql;
    pthread_mutex_lock(&r->mu);
    sqlite3_stmt *st;
    struct realm_reg_key *arr = NULL;
    size_t cnt = 0, cap = 0;
    int rc = query(r, &st, err, q->list, "t", tenant);
    if (!rc) {
        int s;
        while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
            if ((rc = grow_array((void **)&arr, &cap, cnt, sizeof *arr, err))) break;
            if (read_key(st, &arr[cnt]))
                rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
            else
                cnt++;
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "list keys", err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc) {
        realm_reg_keys_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REALM_OK;
}

static int key_lookup(struct sq_registry *r, bool admin, const char *key, size_t len,
                      struct realm_reg_key *out, struct realm_err *err) {
    const struct key_sql *q = admin ? &k_admin_sql : &k_tenant_sql;
    char hash[REALM_KEY_HASH_HEX + 1], head[17];
    unsigned char digest[32];
    realm_key_hash(key ? key : "", key ? len : 0, hash);
    reg_hash_decode(hash, digest);
    memcpy(head, hash, 16);
    head[16] = '\0';
    pthread_mutex_lock(&r->mu);
    sqlite3_stmt *st;
    struct realm_reg_key found = {0};
    bool have = false;
    int rc = query(r, &st, err, q->lookup, "t", head);
    if (!rc) {
        int s;
        while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
            unsigned char stored[32];
            const unsigned char *h = sqlite3_column_text(st, 3);
            if (!h || !reg_hash_decode((const char *)h, stored)) continue;
            if (CRYPTO_memcmp(stored, digest, 32) != 0 || have) continue;
            if (read_key(st, &found))
                rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
            else
                have = true;
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "look up key", err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&r->mu);
    OPENSSL_cleanse(digest, sizeof digest);
    if (!rc && !have) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: unknown key");
    if (rc) {
        realm_reg_key_clear(&found);
        return rc;
    }
    *out = found;
    return REALM_OK;
}

static int sq_key_add(struct realm_registry *base, const char *tenant, const char *label,
                      char *key_out, size_t cap, struct realm_err *err) {
    return key_add(sq_of(base), tenant, label, key_out, cap, err);
}
static int sq_key_add_hash(struct realm_registry *base, const char *tenant, const char *label,
                           const char *hash_hex, struct realm_err *err) {
    return key_add_hash(sq_of(base), tenant, label, hash_hex, err);
}
static int sq_key_revoke(struct realm_registry *base, const char *tenant, const char *what,
                         struct realm_err *err) {
    return key_revoke(sq_of(base), tenant, what, err);
}
static int sq_key_list(struct realm_registry *base, bool admin, const char *tenant,
                       struct realm_reg_key **out, size_t *n, struct realm_err *err) {
    return key_list(sq_of(base), admin, tenant, out, n, err);
}
static int sq_key_lookup(struct realm_registry *base, bool admin, const char *key, size_t len,
                         struct realm_reg_key *out, struct realm_err *err) {
    return key_lookup(sq_of(base), admin, key, len, out, err);
}

static int sq_key_touch(struct realm_registry *base, const char *hash_hex, int64_t when,
                        struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    char hash[REALM_KEY_HASH_HEX + 1];
    if (!reg_hash_normalize(hash_hex, hash))
        return realm_err_set(err, REALM_E_INVALID, "registry: not a key hash");
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    int n = 0, m = 0;
    rc = run(r, &n, err, "UPDATE keys SET last_used_at = ? WHERE hash = ?", "it", when, hash);
    if (!rc && n == 0)
        rc = run(r, &m, err, "UPDATE admin_keys SET last_used_at = ? WHERE hash = ?", "it", when,
                 hash);
    if (!rc && n + m == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: unknown key hash");
    return tx_end(r, rc, err);
}

/* ---- guest versions ---- */

static int tenant_exists(struct sq_registry *r, const char *tenant, struct realm_err *err) {
    int64_t one;
    bool found = false;
    int rc = scalar(r, &one, &found, err, "SELECT 1 FROM tenants WHERE id = ?", "t", tenant);
    if (!rc && !found) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", tenant);
    return rc;
}

static const char k_guest_cols[] = "SELECT version, sha256, size, created_at, active FROM guests";

static void read_guest(sqlite3_stmt *st, struct realm_reg_guest *g) {
    memset(g, 0, sizeof *g);
    g->version = sqlite3_column_int64(st, 0);
    const unsigned char *h = sqlite3_column_text(st, 1);
    snprintf(g->sha256, sizeof g->sha256, "%s", h ? (const char *)h : "");
    g->size = sqlite3_column_int64(st, 2);
    g->created_at = sqlite3_column_int64(st, 3);
    g->active = sqlite3_column_int64(st, 4) != 0;
}

/* Reads the tenant's version `version` (0: the active one) into *g. */
static int get_guest(struct sq_registry *r, const char *tenant, int64_t version,
                     struct realm_reg_guest *g, struct realm_err *err) {
    char sql[256];
    snprintf(sql, sizeof sql, "%s WHERE tenant = ?1 AND (?2 = 0 AND active OR version = ?2)",
             k_guest_cols);
    sqlite3_stmt *st;
    int rc = query(r, &st, err, sql, "ti", tenant, version);
    if (rc) return rc;
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW)
        read_guest(st, g);
    else if (s == SQLITE_DONE)
        rc = version ? realm_err_set(err, REALM_E_NOT_FOUND,
                                     "registry: tenant %s has no guest version %lld", tenant,
                                     (long long)version)
                     : realm_err_set(err, REALM_E_NOT_FOUND,
                                     "registry: tenant %s has no active guest", tenant);
    else
        rc = db_fail(r, s, "read guest", err);
    sqlite3_finalize(st);
    return rc;
}

/* Makes `version` (0: none) the only active version of tenant. */
static int set_active(struct sq_registry *r, const char *tenant, int64_t version,
                      struct realm_err *err) {
    int rc =
        run(r, NULL, err, "UPDATE guests SET active = 0 WHERE tenant = ? AND active", "t", tenant);
    if (!rc && version)
        rc = run(r, NULL, err, "UPDATE guests SET active = 1 WHERE tenant = ? AND version = ?",
                 "ti", tenant, version);
    return rc;
}

static int sq_guest_add(struct realm_registry *base, const char *tenant, const void *wasm,
                        size_t len, bool activate, struct realm_reg_guest *out,
                        struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!wasm || len == 0 || (int64_t)len > REALM_REG_GUEST_MAX)
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: guest module of %zu bytes, expected 1..%lld", len,
                             (long long)REALM_REG_GUEST_MAX);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    /* an unknown tenant is refused before its module lands on disk (checked again below) */
    pthread_mutex_lock(&r->mu);
    int rc = tenant_exists(r, tenant, err);
    pthread_mutex_unlock(&r->mu);
    if (rc) return rc;
    /* the file first: a row never names a module that is not on disk */
    char sha[REALM_KEY_HASH_HEX + 1];
    rc = reg_guest_store(r->base.dir, wasm, len, sha, err);
    if (rc || (rc = tx_begin(r, true, err))) return rc;
    int64_t version = 0;
    struct realm_reg_guest g = {0};
    rc = tenant_exists(r, tenant, err);
    if (!rc)
        rc = scalar(r, &version, NULL, err,
                    "SELECT coalesce(max(version), 0) + 1 FROM guests WHERE tenant = ?", "t",
                    tenant);
    if (!rc)
        rc = run(
            r, NULL, err,
            "INSERT INTO guests(tenant, version, sha256, size, created_at) VALUES(?, ?, ?, ?, ?)",
            "titii", tenant, version, sha, (int64_t)len, reg_now_ms());
    if (!rc && activate) rc = set_active(r, tenant, version, err);
    if (!rc) rc = get_guest(r, tenant, version, &g, err);
    if (!rc) rc = bump_generation(r, err);
    rc = tx_end(r, rc, err);
    if (!rc && out) *out = g;
    return rc;
}

static int sq_guest_activate(struct realm_registry *base, const char *tenant, int64_t version,
                             struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    if (version < 0)
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no guest version %lld",
                             (long long)version);
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    struct realm_reg_guest g;
    rc = tenant_exists(r, tenant, err);
    if (!rc && version) rc = get_guest(r, tenant, version, &g, err);
    if (!rc) rc = set_active(r, tenant, version, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int sq_guest_rollback(struct realm_registry *base, const char *tenant,
                             struct realm_reg_guest *out, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    struct realm_reg_guest cur = {0}, g = {0};
    int64_t prev = 0;
    bool found = false;
    rc = tenant_exists(r, tenant, err);
    if (!rc && (rc = get_guest(r, tenant, 0, &cur, err)) == REALM_E_NOT_FOUND)
        rc = realm_err_set(err, REALM_E_STATE,
                           "registry: tenant %s has no active guest to roll back from", tenant);
    if (!rc)
        rc = scalar(r, &prev, &found, err,
                    "SELECT max(version) FROM guests WHERE tenant = ? AND version < ?"
                    " HAVING max(version) IS NOT NULL",
                    "ti", tenant, cur.version);
    if (!rc && !found)
        rc = realm_err_set(err, REALM_E_NOT_FOUND,
                           "registry: tenant %s has no version older than %lld", tenant,
                           (long long)cur.version);
    if (!rc) rc = set_active(r, tenant, prev, err);
    if (!rc) rc = get_guest(r, tenant, prev, &g, err);
    if (!rc) rc = bump_generation(r, err);
    rc = tx_end(r, rc, err);
    if (!rc && out) *out = g;
    return rc;
}

static int sq_guest_list(struct realm_registry *base, const char *tenant,
                         struct realm_reg_guest **out, size_t *n, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    char sql[256];
    snprintf(sql, sizeof sql, "%s WHERE tenant = ? ORDER BY version", k_guest_cols);
    pthread_mutex_lock(&r->mu);
    sqlite3_stmt *st;
    struct realm_reg_guest *arr = NULL;
    size_t cnt = 0, cap = 0;
    int rc = query(r, &st, err, sql, "t", tenant ? tenant : "");
    if (!rc) {
        int s;
        while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
            if ((rc = grow_array((void **)&arr, &cap, cnt, sizeof *arr, err))) break;
            read_guest(st, &arr[cnt++]);
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "list guests", err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc) {
        realm_free(arr);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REALM_OK;
}

static int sq_guest_active(struct realm_registry *base, const char *tenant,
                           struct realm_reg_guest *out, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    pthread_mutex_lock(&r->mu);
    struct realm_reg_guest g;
    int rc = get_guest(r, tenant, 0, &g, err);
    pthread_mutex_unlock(&r->mu);
    if (!rc) *out = g;
    return rc;
}

/* ---- usage ledger ---- */

static int sq_usage_append(struct realm_registry *base, const struct realm_reg_usage *u,
                           struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    if (!u || !reg_name_ok(u->tenant) || !reg_name_ok(u->model) || !reg_name_ok(u->outcome) ||
        (u->key_label && u->key_label[0] && !reg_name_ok(u->key_label)))
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: usage row: tenant, model and outcome must be names");
    if (u->prompt_tokens < 0 || u->completion_tokens < 0 || u->host_ms < 0)
        return realm_err_set(err, REALM_E_INVALID, "registry: usage row: negative count");
    int rc = tx_begin(r, true, err);
    if (rc) return rc;
    rc = run(r, NULL, err,
             "INSERT INTO usage(tenant, model, key_label, prompt_tokens, completion_tokens, "
             "host_ms, outcome,"
             " started_at, finished_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
             "tttiiitii", u->tenant, u->model, u->key_label ? u->key_label : "", u->prompt_tokens,
             u->completion_tokens, u->host_ms, u->outcome, u->started_at, u->finished_at);
    return tx_end(r, rc, err);
}

#define USAGE_WHERE                                                                                \
    " WHERE (?1 IS NULL OR tenant = ?1) AND finished_at >= ?2 AND (?3 = 0 OR finished_at < ?3)"

static int sq_usage_query(struct realm_registry *base, const char *tenant, int64_t since,
                          int64_t until, struct realm_reg_usage **out, size_t *n,
                          struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    pthread_mutex_lock(&r->mu);
    sqlite3_stmt *st;
    struct realm_reg_usage *arr = NULL;
    size_t cnt = 0, cap = 0;
    int rc = query(r, &st, err,
                   "SELECT tenant, model, key_label, prompt_tokens, completion_tokens, host_ms, "
                   "outcome, started_at,"
                   " finished_at FROM usage" USAGE_WHERE " ORDER BY finished_at, id",
                   "tii", tenant, since, until);
    if (!rc) {
        int s;
        while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
            if (cnt == cap) {
                size_t nc = cap ? cap * 2 : 64;
                struct realm_reg_usage *na = realm_realloc(arr, nc * sizeof *na);
                if (!na) {
                    rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
                    break;
                }
                arr = na;
                cap = nc;
            }
            struct realm_reg_usage *u = &arr[cnt++];
            bool oom = false;
            memset(u, 0, sizeof *u);
            u->tenant = col_str(st, 0, true, &oom);
            u->model = col_str(st, 1, true, &oom);
            u->key_label = col_str(st, 2, true, &oom);
            u->prompt_tokens = sqlite3_column_int64(st, 3);
            u->completion_tokens = sqlite3_column_int64(st, 4);
            u->host_ms = sqlite3_column_int64(st, 5);
            u->outcome = col_str(st, 6, true, &oom);
            u->started_at = sqlite3_column_int64(st, 7);
            u->finished_at = sqlite3_column_int64(st, 8);
            if (oom) rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(r, s, "read usage", err);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc) {
        realm_reg_usages_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REALM_OK;
}

static int sq_usage_sum(struct realm_registry *base, const char *tenant, int64_t since,
                        int64_t until, struct realm_reg_usage_sum *out, struct realm_err *err) {
    struct sq_registry *r = sq_of(base);
    pthread_mutex_lock(&r->mu);
    sqlite3_stmt *st;
    int rc = query(
        r, &st, err,
        "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
        " coalesce(sum(host_ms), 0) FROM usage" USAGE_WHERE,
        "tii", tenant, since, until);
    if (!rc) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            out->requests = sqlite3_column_int64(st, 0);
            out->prompt_tokens = sqlite3_column_int64(st, 1);
            out->completion_tokens = sqlite3_column_int64(st, 2);
            out->host_ms = sqlite3_column_int64(st, 3);
        } else {
            rc = db_fail(r, s, "sum usage", err);
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static const struct reg_ops k_sqlite_ops = {
    .close = sq_close,
    .generation = sq_generation,
    .batch_begin = sq_batch_begin,
    .batch_end = sq_batch_end,
    .tenant_create = sq_tenant_create,
    .tenant_update = sq_tenant_update,
    .tenant_get = sq_tenant_get,
    .tenant_list = sq_tenant_list,
    .tenant_delete = sq_tenant_delete,
    .key_add = sq_key_add,
    .key_add_hash = sq_key_add_hash,
    .key_revoke = sq_key_revoke,
    .key_list = sq_key_list,
    .key_lookup = sq_key_lookup,
    .key_touch = sq_key_touch,
    .guest_add = sq_guest_add,
    .guest_activate = sq_guest_activate,
    .guest_rollback = sq_guest_rollback,
    .guest_list = sq_guest_list,
    .guest_active = sq_guest_active,
    .usage_append = sq_usage_append,
    .usage_query = sq_usage_query,
    .usage_sum = sq_usage_sum,
};
