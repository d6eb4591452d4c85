/*
 * postgres.c — the PostgreSQL backend of the tenant registry (include/realm/registry.h), for
 * several realm nodes sharing one registry. The contracts are those of the SQLite backend
 * (sqlite.c); what differs is how they are kept:
 *
 * - Every change is one transaction. Changes that move the generation first lock its row
 *   (SELECT ... FOR UPDATE), so writers from every node serialise as SQLite's BEGIN IMMEDIATE
 *   makes them, and a check-then-insert (next guest version, "tenant exists") cannot race.
 *   Ledger appends and key touches do not take that lock. Inside a batch each change is a
 *   savepoint. A COMMIT is durable when it returns (synchronous_commit as the server has it).
 * - Guest module bytes are rows of realm_guest_blobs (bytea, keyed by their SHA-256), inserted in
 *   the transaction that records the version, so every node can load them; a node copies one
 *   into its local cache folder (DIR/guests/<sha>.wasm, the file store of registry.c, checked
 *   against the hash) the first time it needs the path.
 * - Errors keep the server's message: unique/foreign-key violations are REALM_E_STATE, lock and
 *   serialisation failures REALM_E_BUSY, everything else (connection lost, disk full on the
 *   server) REALM_E_IO. A lost connection is re-established at the next call made outside a
 *   batch; a batch whose connection dropped is broken and rolls back.
 * - Parameters are always bound (PQexecParams with declared types), never spliced into SQL.
 *
 * Owns: the connection and the mutex. Thread rule: one connection serves every thread; a
 * recursive mutex serialises calls (recursive so that a batch's owner can make changes inside
 * it while other threads wait for the whole batch).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "realm/alloc.h"
#include "registry/registry.h"

#define SCHEMA_VERSION 1
#define MAX_PARAMS 12
/* pg_advisory_xact_lock key of schema creation ("realm" in ASCII) */
#define SCHEMA_LOCK "469853547373"

/* parameter type OIDs (pg_type.h) */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

static const struct reg_ops k_pg_ops;

struct pg_registry {
    struct realm_registry base; /* first: ops and dir (the guest cache folder) */
    PGconn *conn;
    pthread_mutex_t mu; /* recursive; guards conn, depth, batch, broken */
    int depth;          /* open transaction levels (batch + change) of the thread holding mu */
    int batch;          /* open batches */
    bool broken;        /* the batch's transaction is gone (connection lost) */
};

static struct pg_registry *pg_of(struct realm_registry *base) {
    return (struct pg_registry *)base;
}

static const char *const k_schema[] = {
    "CREATE TABLE realm_meta(k text PRIMARY KEY, v bigint NOT NULL)",
    "INSERT INTO realm_meta VALUES('generation', 0), ('schema', 1)",
    "CREATE TABLE realm_tenants(id text PRIMARY KEY, created_at bigint NOT NULL,"
    " all_models boolean NOT NULL, max_concurrent bigint NOT NULL,"
    " tokens_per_minute bigint NOT NULL, max_tokens_per_request bigint NOT NULL,"
    " guest_memory_bytes bigint NOT NULL, kv_blocks bigint NOT NULL, init_wall_ms bigint NOT NULL,"
    " generate_wall_ms bigint NOT NULL, host_memory_bytes bigint NOT NULL)",
    "CREATE TABLE realm_tenant_models(tenant text NOT NULL REFERENCES realm_tenants(id)"
    " ON DELETE CASCADE, model text NOT NULL, PRIMARY KEY(tenant, model))",
    /* head: the first 16 hex digits of the hash, the index a lookup narrows on before comparing
     * full digests in constant time */
    "CREATE TABLE realm_keys(id bigserial PRIMARY KEY, hash text NOT NULL UNIQUE,"
    " head text NOT NULL, tenant text NOT NULL REFERENCES realm_tenants(id) ON DELETE CASCADE,"
    " label text NOT NULL, prefix text, created_at bigint NOT NULL,"
    " last_used_at bigint NOT NULL DEFAULT 0, UNIQUE(tenant, label))",
    "CREATE INDEX realm_keys_head ON realm_keys(head)",
    "CREATE TABLE realm_admin_keys(id bigserial PRIMARY KEY, hash text NOT NULL UNIQUE,"
    " head text NOT NULL, label text NOT NULL UNIQUE, prefix text, created_at bigint NOT NULL,"
    " last_used_at bigint NOT NULL DEFAULT 0)",
    "CREATE INDEX realm_admin_keys_head ON realm_admin_keys(head)",
    "CREATE TABLE realm_guest_blobs(sha256 text PRIMARY KEY, size bigint NOT NULL,"
    " data bytea NOT NULL)",
    "CREATE TABLE realm_guests(tenant text NOT NULL REFERENCES realm_tenants(id)"
    " ON DELETE CASCADE, version bigint NOT NULL,"
    " sha256 text NOT NULL REFERENCES realm_guest_blobs(sha256), size bigint NOT NULL,"
    " created_at bigint NOT NULL, active boolean NOT NULL DEFAULT false,"
    " PRIMARY KEY(tenant, version))",
    "CREATE UNIQUE INDEX realm_guests_active ON realm_guests(tenant) WHERE active",
    "CREATE TABLE realm_usage(id bigserial PRIMARY KEY, tenant text NOT NULL, model text NOT NULL,"
    " key_label text NOT NULL, prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL,"
    " host_ms bigint NOT NULL, outcome text NOT NULL, started_at bigint NOT NULL,"
    " finished_at bigint NOT NULL)",
    "CREATE INDEX realm_usage_tenant_time ON realm_usage(tenant, finished_at)",
    "CREATE INDEX realm_usage_time ON realm_usage(finished_at)",
    NULL,
};

/* ---- errors ---- */

static int code_of_state(const char *st) {
    if (!st) return REALM_E_IO;
    if (!strncmp(st, "23", 2)) return REALM_E_STATE; /* integrity constraint violation */
    if (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03"))
        return REALM_E_BUSY; /* serialization failure, deadlock, lock not available */
    if (!strcmp(st, "53200")) return REALM_E_NOMEM;
    return REALM_E_IO;
}

/* The server's (or libpq's) message for res, without its trailing newline. */
static void msg_of(struct pg_registry *r, const PGresult *res, char *out, size_t cap) {
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!m || !m[0]) m = r->conn ? PQerrorMessage(r->conn) : "no connection";
    snprintf(out, cap, "%s", m && m[0] ? m : "unknown error");
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
}

static int db_fail(struct pg_registry *r, const PGresult *res, const char *what,
                   struct realm_err *err) {
    char m[400];
    msg_of(r, res, m, sizeof m);
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return realm_err_set(err, code_of_state(st), "registry: postgres: %s: %s", what, m);
}

/* ---- connection ---- */

/* Runs one statement. Outside a transaction a statement that finds the connection dead (the
 * server restarted, a fail-over) is sent again once on a new connection: nothing of it can have
 * run. Inside a transaction it is not — the transaction is gone, and the caller reports it. */
static PGresult *pg_exec(struct pg_registry *r, const char *sql, int n, const Oid *oids,
                         const char *const *vals, const int *lens, const int *fmts, int binary) {
    bool idle = PQtransactionStatus(r->conn) == PQTRANS_IDLE;
    PGresult *p = PQexecParams(r->conn, sql, n, oids, vals, lens, fmts, binary);
    ExecStatusType s = p ? PQresultStatus(p) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && idle &&
        PQstatus(r->conn) == CONNECTION_BAD) {
        PQreset(r->conn);
        if (PQstatus(r->conn) == CONNECTION_OK) {
            PQclear(p);
            p = PQexecParams(r->conn, sql, n, oids, vals, lens, fmts, binary);
        }
    }
    return p;
}

/* ---- statements: bind by a type string ('t' text or NULL, 'i' int64, 'b' bytes + size_t) ---- */

/* Runs sql with the parameters; *res (owned, PQclear) on success. binary: results in binary. */
static int vexec(struct pg_registry *r, PGresult **res, bool binary, struct realm_err *err,
                 const char *sql, const char *types, va_list ap) {
    const char *vals[MAX_PARAMS];
    int lens[MAX_PARAMS], fmts[MAX_PARAMS];
    Oid oids[MAX_PARAMS];
    char nums[MAX_PARAMS][24];
    int n = 0;
    for (; types[n]; n++) {
        if (n == MAX_PARAMS)
            return realm_err_set(err, REALM_E_INTERNAL, "registry: too many parameters");
        lens[n] = 0;
        fmts[n] = 0;
        if (types[n] == 't') {
            vals[n] = va_arg(ap, const char *);
            oids[n] = OID_TEXT;
        } else if (types[n] == 'i') {
            snprintf(nums[n], sizeof nums[n], "%lld", (long long)va_arg(ap, int64_t));
            vals[n] = nums[n];
            oids[n] = OID_INT8;
        } else {
            vals[n] = va_arg(ap, const char *);
            lens[n] = (int)va_arg(ap, size_t);
            fmts[n] = 1;
            oids[n] = OID_BYTEA;
        }
    }
    PGresult *p = pg_exec(r, sql, n, oids, vals, lens, fmts, binary ? 1 : 0);
    ExecStatusType s = p ? PQresultStatus(p) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        int rc = db_fail(r, p, "query", err);
        PQclear(p);
        return rc;
    }
    *res = p;
    return REALM_OK;
}

static int query(struct pg_registry *r, PGresult **res, struct realm_err *err, const char *sql,
                 const char *types, ...) {
    va_list ap;
    va_start(ap, types);
    int rc = vexec(r, res, false, err, sql, types, ap);
    va_end(ap);
    return rc;
}

/* Runs a statement; *changes (optional) gets the rows it changed. */
static int run(struct pg_registry *r, int *changes, struct realm_err *err, const char *sql,
               const char *types, ...) {
    PGresult *res = NULL;
    va_list ap;
    va_start(ap, types);
    int rc = vexec(r, &res, false, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    if (changes) *changes = atoi(PQcmdTuples(res));
    PQclear(res);
    return REALM_OK;
}

static int64_t col_i64(const PGresult *res, int row, int col) {
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static bool col_bool(const PGresult *res, int row, int col) {
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* A column as an owned string ("" for NULL when want_empty, else NULL); *oom set on failure. */
static char *col_str(const PGresult *res, int row, int col, bool want_empty, bool *oom) {
    if (PQgetisnull(res, row, col) && !want_empty) return NULL;
    const char *t = PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
    char *d = realm_strndup(t, strlen(t));
    if (!d) *oom = true;
    return d;
}

/* Runs a query whose first row's first column is an integer; *found tells whether there was a
 * row with a non-NULL value (NULL found: absence is REALM_E_NOT_FOUND). */
static int scalar(struct pg_registry *r, int64_t *out, bool *found, struct realm_err *err,
                  const char *sql, const char *types, ...) {
    PGresult *res = NULL;
    va_list ap;
    va_start(ap, types);
    int rc = vexec(r, &res, false, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    bool have = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0);
    if (have) *out = col_i64(res, 0, 0);
    PQclear(res);
    if (found)
        *found = have;
    else if (!have)
        rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such row");
    return rc;
}

static int exec_sql(struct pg_registry *r, const char *sql, struct realm_err *err) {
    PGresult *res = pg_exec(r, sql, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    int rc = REALM_OK;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        rc = db_fail(r, res, sql, err);
    else if (!strcmp(sql, "COMMIT") && strcmp(PQcmdStatus(res), "COMMIT"))
        /* a transaction that failed is rolled back by COMMIT, which still "succeeds" */
        rc = realm_err_set(err, REALM_E_IO, "registry: postgres: the transaction was rolled back");
    PQclear(res);
    return rc;
}

/* Outside a transaction: reconnects when the connection was lost (a restarted server, a
 * fail-over). Caller holds mu. */
static int ensure_conn(struct pg_registry *r, struct realm_err *err) {
    if (PQstatus(r->conn) == CONNECTION_OK) return REALM_OK;
    PQreset(r->conn);
    if (PQstatus(r->conn) == CONNECTION_OK) return REALM_OK;
    return db_fail(r, NULL, "connect", err);
}

/* A connection that lost its transaction: nothing of a batch survives. */
static bool tx_lost(struct pg_registry *r) {
    PGTransactionStatusType t = PQtransactionStatus(r->conn);
    return PQstatus(r->conn) != CONNECTION_OK || t == PQTRANS_IDLE || t == PQTRANS_UNKNOWN;
}

/* ---- transactions ---- */

enum tx_mode {
    TX_READ,   /* a consistent snapshot of several reads */
    TX_APPEND, /* a write that does not move the generation (ledger, key touch) */
    TX_WRITE,  /* a change: takes the generation row's lock first */
};

static int lock_generation(struct pg_registry *r, struct realm_err *err) {
    return exec_sql(r, "SELECT v FROM realm_meta WHERE k = 'generation' FOR UPDATE", err);
}

/* Takes the registry and opens a transaction or, inside a batch, a savepoint. On failure the
 * registry is released. */
static int tx_begin(struct pg_registry *r, enum tx_mode mode, struct realm_err *err) {
    pthread_mutex_lock(&r->mu);
    int rc = REALM_OK;
    if (r->depth && (r->broken || tx_lost(r))) {
        r->broken = true;
        rc = realm_err_set(err, REALM_E_IO, "registry: the batch was rolled back by an error");
    } else if (r->depth) {
        rc = exec_sql(r, "SAVEPOINT change", err);
    } else if (!(rc = ensure_conn(r, err))) {
        rc = exec_sql(r, mode == TX_READ ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN", err);
    }
    if (!rc && mode == TX_WRITE && (rc = lock_generation(r, err)) && r->depth == 0)
        exec_sql(r, "ROLLBACK", NULL);
    else if (rc && r->depth && !r->broken)
        exec_sql(r, "ROLLBACK TO SAVEPOINT change", NULL);
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    r->depth++;
    return REALM_OK;
}

/* Ends what tx_begin opened: commits when rc is REALM_OK (a failed commit becomes the result),
 * rolls back otherwise; releases the registry. Returns the result. */
static int tx_end(struct pg_registry *r, int rc, struct realm_err *err) {
    r->depth--;
    if (r->depth == 0) {
        if (rc == REALM_OK) {
            rc = exec_sql(r, "COMMIT", err);
            if (rc && PQtransactionStatus(r->conn) != PQTRANS_IDLE) exec_sql(r, "ROLLBACK", NULL);
        } else if (PQtransactionStatus(r->conn) != PQTRANS_IDLE) {
            exec_sql(r, "ROLLBACK", NULL);
        }
    } else if (r->broken || tx_lost(r)) {
        r->broken = true;
        if (rc == REALM_OK)
            rc = realm_err_set(err, REALM_E_IO, "registry: the batch was rolled back by an error");
    } else if (rc == REALM_OK) {
        rc = exec_sql(r, "RELEASE SAVEPOINT change", err);
    } else {
        if (exec_sql(r, "ROLLBACK TO SAVEPOINT change", NULL) ||
            exec_sql(r, "RELEASE SAVEPOINT change", NULL))
            r->broken = true;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int bump_generation(struct pg_registry *r, struct realm_err *err) {
    return run(r, NULL, err, "UPDATE realm_meta SET v = v + 1 WHERE k = 'generation'", "");
}

static int pg_batch_begin(struct realm_registry *base, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    pthread_mutex_lock(&r->mu); /* held until batch_end */
    bool outer = r->depth == 0;
    int rc = tx_begin(r, TX_WRITE, err); /* like BEGIN IMMEDIATE: the write lock at once */
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    if (outer) r->broken = false;
    r->batch++;
    pthread_mutex_unlock(&r->mu); /* tx_begin's; batch_begin's stays */
    return REALM_OK;
}

static int pg_batch_end(struct realm_registry *base, bool commit, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
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

static int setup_schema(struct pg_registry *r, struct realm_err *err) {
    int rc = tx_begin(r, TX_APPEND, err);
    if (rc) return rc;
    int64_t exists = 0, ver = 0;
    bool found = false;
    /* nodes starting together: one creates, the others wait and then see the tables */
    rc = exec_sql(r, "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ")", err);
    if (!rc)
        rc = scalar(r, &exists, NULL, err, "SELECT (to_regclass('realm_meta') IS NOT NULL)::int",
                    "");
    if (!rc && exists) {
        rc = scalar(r, &ver, &found, err, "SELECT v FROM realm_meta WHERE k = 'schema'", "");
        if (!rc && (!found || ver > SCHEMA_VERSION))
            rc = realm_err_set(err, REALM_E_FORMAT,
                               "registry: schema version %lld, expected at most %d (a newer realm, "
                               "or not a realm registry?)",
                               (long long)ver, SCHEMA_VERSION);
    }
    for (int i = 0; !rc && !exists && k_schema[i]; i++)
        rc = exec_sql(r, k_schema[i], err);
    return tx_end(r, rc, err);
}

static void quiet_notices(void *arg, const char *msg) {
    (void)arg;
    (void)msg; /* NOTICEs (e.g. implicit index names) are not errors; errors are returned */
}

static void pg_close(struct realm_registry *base);

/* The guest cache folder: opts->cache_dir, $REALM_REGISTRY_CACHE, ~/.cache/realm/registry. */
static char *cache_dir_of(const struct realm_registry_opts *opts) {
    const char *d = opts && opts->cache_dir && opts->cache_dir[0] ? opts->cache_dir : NULL;
    char buf[4096];
    if (!d) d = getenv("REALM_REGISTRY_CACHE");
    if (!d || !d[0]) {
        const char *home = getenv("HOME");
        snprintf(buf, sizeof buf, "%s/.cache/realm/registry", home && home[0] ? home : "/tmp");
        d = buf;
    }
    return realm_strndup(d, strlen(d));
}

int realm_registry_open_postgres(const char *conninfo, const struct realm_registry_opts *opts,
                                 struct realm_registry **out, struct realm_err *err) {
    if (!conninfo || !conninfo[0] || strlen(conninfo) > 3800)
        return realm_err_set(err, REALM_E_INVALID, "registry: connection string empty or too long");
    struct pg_registry *r = realm_calloc(1, sizeof *r);
    if (!r || !(r->base.dir = cache_dir_of(opts))) {
        realm_free(r);
        return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    }
    r->base.ops = &k_pg_ops;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&r->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (strlen(r->base.dir) > 3800 || reg_mkdirs(r->base.dir) != 0) {
        int rc = realm_err_set(err, REALM_E_IO, "registry: guest cache %s: cannot create: %s",
                               r->base.dir, strerror(errno));
        pg_close(&r->base);
        return rc;
    }
    int busy_ms = opts && opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000;
    char timeout_s[16], options[64];
    snprintf(timeout_s, sizeof timeout_s, "%d", busy_ms < 2000 ? 2 : busy_ms / 1000);
    /* a writer waiting for another node's lock fails with REALM_E_BUSY, as with SQLite */
    snprintf(options, sizeof options, "-c lock_timeout=%d", busy_ms);
    /* later entries override: the connection string's own settings win over ours */
    const char *keys[] = {"connect_timeout", "options", "application_name", "dbname", NULL};
    const char *vals[] = {timeout_s, options, "realm", conninfo, NULL};
    r->conn = PQconnectdbParams(keys, vals, 1);
    int rc = REALM_OK;
    if (!r->conn)
        rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    else if (PQstatus(r->conn) != CONNECTION_OK)
        rc = db_fail(r, NULL, "connect", err);
    if (!rc) {
        PQsetNoticeProcessor(r->conn, quiet_notices, NULL);
        rc = setup_schema(r, err);
    }
    if (rc) {
        pg_close(&r->base);
        return rc;
    }
    *out = &r->base;
    return REALM_OK;
}

static void pg_close(struct realm_registry *base) {
    struct pg_registry *r = pg_of(base);
    if (!r) return;
    if (r->conn) PQfinish(r->conn);
    pthread_mutex_destroy(&r->mu);
    realm_free(r->base.dir);
    realm_free(r);
}

static int pg_generation(struct realm_registry *base, uint64_t *out, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    pthread_mutex_lock(&r->mu);
    int64_t v = 0;
    int rc = r->depth ? REALM_OK : ensure_conn(r, err);
    if (!rc) rc = scalar(r, &v, NULL, err, "SELECT v FROM realm_meta WHERE k = 'generation'", "");
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

static int put_models(struct pg_registry *r, const struct realm_reg_tenant *t,
                      struct realm_err *err) {
    int rc = run(r, NULL, err, "DELETE FROM realm_tenant_models WHERE tenant = $1", "t", t->id);
    for (size_t i = 0; !rc && !t->all_models && i < t->n_models; i++)
        rc = run(r, NULL, err,
                 "INSERT INTO realm_tenant_models(tenant, model) VALUES($1, $2)"
                 " ON CONFLICT DO NOTHING",
                 "tt", t->id, t->models[i]);
    return rc;
}

#define LIMIT_ARGS(l)                                                                              \
    (int64_t)(l)->max_concurrent, (int64_t)(l)->tokens_per_minute,                                 \
        (int64_t)(l)->max_tokens_per_request, (int64_t)(l)->guest_memory_bytes,                    \
        (int64_t)(l)->kv_blocks, (int64_t)(l)->init_wall_ms, (int64_t)(l)->generate_wall_ms,       \
        (int64_t)(l)->host_memory_bytes

static int tenant_exists(struct pg_registry *r, const char *tenant, struct realm_err *err) {
    int64_t one;
    bool found = false;
    int rc = scalar(r, &one, &found, err, "SELECT 1 FROM realm_tenants WHERE id = $1", "t", tenant);
    if (!rc && !found) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", tenant);
    return rc;
}

static int pg_tenant_create(struct realm_registry *base, const struct realm_reg_tenant *t,
                            struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    int rc = check_tenant(t, err);
    if (rc || (rc = tx_begin(r, TX_WRITE, err))) return rc;
    rc = tenant_exists(r, t->id, err);
    if (rc == REALM_OK)
        rc = realm_err_set(err, REALM_E_STATE, "registry: tenant %s exists", t->id);
    else if (rc == REALM_E_NOT_FOUND)
        rc =
            run(r, NULL, err,
                "INSERT INTO realm_tenants(id, created_at, all_models, max_concurrent,"
                " tokens_per_minute, max_tokens_per_request, guest_memory_bytes, kv_blocks,"
                " init_wall_ms, generate_wall_ms, host_memory_bytes)"
                " VALUES($1, $2, $3 <> 0, $4, $5, $6, $7, $8, $9, $10, $11)",
                "tiiiiiiiiii", t->id, reg_now_ms(), (int64_t)t->all_models, LIMIT_ARGS(&t->limits));
    if (!rc) rc = put_models(r, t, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int pg_tenant_update(struct realm_registry *base, const struct realm_reg_tenant *t,
                            struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    int rc = check_tenant(t, err);
    if (rc || (rc = tx_begin(r, TX_WRITE, err))) return rc;
    int n = 0;
    rc = run(r, &n, err,
             "UPDATE realm_tenants SET all_models = $1 <> 0, max_concurrent = $2,"
             " tokens_per_minute = $3, max_tokens_per_request = $4, guest_memory_bytes = $5,"
             " kv_blocks = $6, init_wall_ms = $7, generate_wall_ms = $8, host_memory_bytes = $9"
             " WHERE id = $10",
             "iiiiiiiiit", (int64_t)t->all_models, LIMIT_ARGS(&t->limits), t->id);
    if (!rc && n == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", t->id);
    if (!rc) rc = put_models(r, t, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static const char k_tenant_cols[] =
    "SELECT id, created_at, all_models, max_concurrent, tokens_per_minute, max_tokens_per_request,"
    " guest_memory_bytes, kv_blocks, init_wall_ms, generate_wall_ms, host_memory_bytes"
    " FROM realm_tenants";

/* Fills t from row `row` of a k_tenant_cols result and its grants. t is freeable on failure. */
static int read_tenant(struct pg_registry *r, const PGresult *res, int row,
                       struct realm_reg_tenant *t, struct realm_err *err) {
    bool oom = false;
    memset(t, 0, sizeof *t);
    t->id = col_str(res, row, 0, true, &oom);
    t->created_at = col_i64(res, row, 1);
    t->all_models = col_bool(res, row, 2);
    struct realm_tenant_limits *l = &t->limits;
    l->max_concurrent = (int32_t)col_i64(res, row, 3);
    l->tokens_per_minute = col_i64(res, row, 4);
    l->max_tokens_per_request = (int32_t)col_i64(res, row, 5);
    l->guest_memory_bytes = col_i64(res, row, 6);
    l->kv_blocks = (int32_t)col_i64(res, row, 7);
    l->init_wall_ms = col_i64(res, row, 8);
    l->generate_wall_ms = col_i64(res, row, 9);
    l->host_memory_bytes = col_i64(res, row, 10);
    if (oom) return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    PGresult *m = NULL;
    int rc = query(r, &m, err,
                   "SELECT model FROM realm_tenant_models WHERE tenant = $1"
                   " ORDER BY model COLLATE \"C\"",
                   "t", t->id);
    if (rc) return rc;
    int n = PQntuples(m);
    if (n > 0 && !(t->models = realm_calloc((size_t)n, sizeof *t->models)))
        rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    for (int i = 0; !rc && i < n; i++) {
        char *name = col_str(m, i, 0, true, &oom);
        if (oom)
            rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        else
            t->models[t->n_models++] = name;
    }
    PQclear(m);
    return rc;
}

static int pg_tenant_get(struct realm_registry *base, const char *id, struct realm_reg_tenant *out,
                         struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!reg_name_ok(id))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant '%.80s'", id ? id : "");
    int rc = tx_begin(r, TX_READ, err);
    if (rc) return rc;
    char sql[512];
    snprintf(sql, sizeof sql, "%s WHERE id = $1", k_tenant_cols);
    PGresult *res = NULL;
    struct realm_reg_tenant t = {0};
    if (!(rc = query(r, &res, err, sql, "t", id))) {
        if (PQntuples(res) > 0)
            rc = read_tenant(r, res, 0, &t, err);
        else
            rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", id);
        PQclear(res);
    }
    rc = tx_end(r, rc, err);
    if (rc)
        realm_reg_tenant_clear(&t);
    else
        *out = t;
    return rc;
}

static int pg_tenant_list(struct realm_registry *base, struct realm_reg_tenant **out, size_t *n,
                          struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    int rc = tx_begin(r, TX_READ, err);
    if (rc) return rc;
    char sql[512];
    snprintf(sql, sizeof sql, "%s ORDER BY id COLLATE \"C\"", k_tenant_cols);
    PGresult *res = NULL;
    struct realm_reg_tenant *arr = NULL;
    size_t cnt = 0;
    if (!(rc = query(r, &res, err, sql, ""))) {
        int rows = PQntuples(res);
        if (rows > 0 && !(arr = realm_calloc((size_t)rows, sizeof *arr)))
            rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        for (int i = 0; !rc && i < rows; i++) {
            rc = read_tenant(r, res, i, &arr[cnt], err);
            cnt++; /* counted even on failure: read_tenant leaves it freeable */
        }
        PQclear(res);
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

static int pg_tenant_delete(struct realm_registry *base, const char *id, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!reg_name_ok(id))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant '%.80s'", id ? id : "");
    int rc = tx_begin(r, TX_WRITE, err);
    if (rc) return rc;
    int n = 0;
    /* cascades to grants, keys, guest versions; blobs stay (content-addressed, maybe shared) */
    rc = run(r, &n, err, "DELETE FROM realm_tenants WHERE id = $1", "t", id);
    if (!rc && n == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant %s", id);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

/* ---- keys: one implementation for tenant keys (tenant != NULL) and admin keys ----
 * Both statement sets take the same parameters ($1 the tenant, typed, so that the admin ones
 * may leave it unused). */

struct key_sql {
    const char *insert, *hash_in_other, *by_label, *by_hash, *by_prefix_count, *by_prefix, *list,
        *lookup;
};

static const struct key_sql k_tenant_sql = {
    "INSERT INTO realm_keys(tenant, hash, head, label, prefix, created_at)"
    " VALUES($1, $2, $3, $4, $5, $6)",
    "SELECT 1 FROM realm_admin_keys WHERE hash = $1",
    "DELETE FROM realm_keys WHERE tenant = $1 AND label = $2",
    "DELETE FROM realm_keys WHERE tenant = $1 AND hash = $2",
    "SELECT count(*) FROM realm_keys WHERE tenant = $1 AND prefix IS NOT NULL"
    " AND substr(prefix, 1, $2::int) = $3",
    "DELETE FROM realm_keys WHERE tenant = $1 AND prefix IS NOT NULL"
    " AND substr(prefix, 1, $2::int) = $3",
    "SELECT tenant, label, prefix, hash, created_at, last_used_at FROM realm_keys"
    " WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant COLLATE \"C\", created_at, id",
    "SELECT tenant, label, prefix, hash, created_at, last_used_at FROM realm_keys WHERE head = $1",
};

static const struct key_sql k_admin_sql = {
    "INSERT INTO realm_admin_keys(hash, head, label, prefix, created_at)"
    " VALUES($2, $3, $4, $5, $6)",
    "SELECT 1 FROM realm_keys WHERE hash = $1",
    "DELETE FROM realm_admin_keys WHERE label = $2",
    "DELETE FROM realm_admin_keys WHERE hash = $2",
    "SELECT count(*) FROM realm_admin_keys WHERE prefix IS NOT NULL"
    " AND substr(prefix, 1, $2::int) = $3",
    "DELETE FROM realm_admin_keys WHERE prefix IS NOT NULL AND substr(prefix, 1, $2::int) = $3",
    "SELECT NULL, label, prefix, hash, created_at, last_used_at FROM realm_admin_keys"
    " ORDER BY created_at, id",
    "SELECT NULL, label, prefix, hash, created_at, last_used_at FROM realm_admin_keys"
    " WHERE head = $1",
};

static const char *who(const char *tenant) {
    return tenant ? tenant : "(admin)";
}

/* Inserts a key row with hash `hash` (normalized), label and prefix (NULL: imported). */
static int insert_key(struct pg_registry *r, const char *tenant, const char *label,
                      const char *prefix, const char *hash, struct realm_err *err) {
    const struct key_sql *q = tenant ? &k_tenant_sql : &k_admin_sql;
    char head[17];
    memcpy(head, hash, 16);
    head[16] = '\0';
    int rc = tx_begin(r, TX_WRITE, err);
    if (rc) return rc;
    int64_t one;
    bool found = false;
    if (tenant) rc = tenant_exists(r, tenant, err);
    if (!rc) {
        /* a hash in both tables would make one key both a tenant's and the operator's */
        rc = scalar(r, &one, &found, err, q->hash_in_other, "t", hash);
        if (!rc && found)
            rc = realm_err_set(err, REALM_E_STATE, "registry: that key is already stored");
    }
    if (!rc) {
        rc =
            run(r, NULL, err, q->insert, "ttttti", tenant, hash, head, label, prefix, reg_now_ms());
        if (rc == REALM_E_STATE)
            rc =
                realm_err_set(err, REALM_E_STATE, "registry: %s: the label '%s' or that key exists",
                              who(tenant), label);
    }
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int pg_key_add(struct realm_registry *base, const char *tenant, const char *label,
                      char *key_out, size_t cap, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
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

static int pg_key_add_hash(struct realm_registry *base, const char *tenant, const char *label,
                           const char *hash_hex, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
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

static int pg_key_revoke(struct realm_registry *base, const char *tenant, const char *what,
                         struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    const struct key_sql *q = tenant ? &k_tenant_sql : &k_admin_sql;
    if (!what || !what[0]) return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no key given");
    int rc = tx_begin(r, TX_WRITE, err);
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

static int read_key(const PGresult *res, int row, struct realm_reg_key *k) {
    bool oom = false;
    memset(k, 0, sizeof *k);
    k->tenant = col_str(res, row, 0, false, &oom);
    k->label = col_str(res, row, 1, true, &oom);
    k->prefix = col_str(res, row, 2, false, &oom);
    snprintf(k->hash, sizeof k->hash, "%s", PQgetvalue(res, row, 3));
    k->created_at = col_i64(res, row, 4);
    k->last_used_at = col_i64(res, row, 5);
    if (oom) {
        realm_reg_key_clear(k);
        return REALM_E_NOMEM;
    }
    return REALM_OK;
}

/* A read outside any transaction of ours: reconnect first when idle. Takes mu. */
static int read_begin(struct pg_registry *r, struct realm_err *err) {
    pthread_mutex_lock(&r->mu);
    int rc = r->depth ? REALM_OK : ensure_conn(r, err);
    if (rc) pthread_mutex_unlock(&r->mu);
    return rc;
}

static int pg_key_list(struct realm_registry *base, bool admin, const char *tenant,
                       struct realm_reg_key **out, size_t *n, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    const struct key_sql *q = admin ? &k_admin_sql : &k_tenant_sql;
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    struct realm_reg_key *arr = NULL;
    size_t cnt = 0;
    if (!(rc = query(r, &res, err, q->list, "t", admin ? NULL : tenant))) {
        int rows = PQntuples(res);
        if (rows > 0 && !(arr = realm_calloc((size_t)rows, sizeof *arr)))
            rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        for (int i = 0; !rc && i < rows; i++) {
            if (read_key(res, i, &arr[cnt]))
                rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
            else
                cnt++;
        }
        PQclear(res);
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

static int pg_key_lookup(struct realm_registry *base, bool admin, const char *key, size_t len,
                         struct realm_reg_key *out, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    const struct key_sql *q = admin ? &k_admin_sql : &k_tenant_sql;
    char hash[REALM_KEY_HASH_HEX + 1], head[17];
    unsigned char digest[32];
    realm_key_hash(key ? key : "", key ? len : 0, hash);
    reg_hash_decode(hash, digest);
    memcpy(head, hash, 16);
    head[16] = '\0';
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    struct realm_reg_key found = {0};
    bool have = false;
    if (!(rc = query(r, &res, err, q->lookup, "t", head))) {
        for (int i = 0; !rc && i < PQntuples(res); i++) {
            unsigned char stored[32];
            if (!reg_hash_decode(PQgetvalue(res, i, 3), stored)) continue;
            if (CRYPTO_memcmp(stored, digest, 32) != 0 || have) continue;
            if (read_key(res, i, &found))
                rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
            else
                have = true;
        }
        PQclear(res);
    }
    pthread_mutex_unlock(&r->mu);
    OPENSSL_cleanse(digest, sizeof digest);
    OPENSSL_cleanse(hash, sizeof hash);
    if (!rc && !have) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: unknown key");
    if (rc) {
        realm_reg_key_clear(&found);
        return rc;
    }
    *out = found;
    return REALM_OK;
}

static int pg_key_touch(struct realm_registry *base, const char *hash_hex, int64_t when,
                        struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    char hash[REALM_KEY_HASH_HEX + 1];
    if (!reg_hash_normalize(hash_hex, hash))
        return realm_err_set(err, REALM_E_INVALID, "registry: not a key hash");
    int rc = tx_begin(r, TX_APPEND, err);
    if (rc) return rc;
    int n = 0, m = 0;
    rc = run(r, &n, err, "UPDATE realm_keys SET last_used_at = $1 WHERE hash = $2", "it", when,
             hash);
    if (!rc && n == 0)
        rc = run(r, &m, err, "UPDATE realm_admin_keys SET last_used_at = $1 WHERE hash = $2", "it",
                 when, hash);
    if (!rc && n + m == 0) rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: unknown key hash");
    return tx_end(r, rc, err);
}

/* ---- guest versions ---- */

static const char k_guest_cols[] =
    "SELECT version, sha256, size, created_at, active FROM realm_guests";

static void read_guest(const PGresult *res, int row, struct realm_reg_guest *g) {
    memset(g, 0, sizeof *g);
    g->version = col_i64(res, row, 0);
    snprintf(g->sha256, sizeof g->sha256, "%s", PQgetvalue(res, row, 1));
    g->size = col_i64(res, row, 2);
    g->created_at = col_i64(res, row, 3);
    g->active = col_bool(res, row, 4);
}

/* Reads the tenant's version `version` (0: the active one) into *g. */
static int get_guest(struct pg_registry *r, const char *tenant, int64_t version,
                     struct realm_reg_guest *g, struct realm_err *err) {
    char sql[256];
    snprintf(sql, sizeof sql, "%s WHERE tenant = $1 AND ($2 = 0 AND active OR version = $2)",
             k_guest_cols);
    PGresult *res = NULL;
    int rc = query(r, &res, err, sql, "ti", tenant, version);
    if (rc) return rc;
    if (PQntuples(res) > 0)
        read_guest(res, 0, g);
    else
        rc = version ? realm_err_set(err, REALM_E_NOT_FOUND,
                                     "registry: tenant %s has no guest version %lld", tenant,
                                     (long long)version)
                     : realm_err_set(err, REALM_E_NOT_FOUND,
                                     "registry: tenant %s has no active guest", tenant);
    PQclear(res);
    return rc;
}

/* Makes `version` (0: none) the only active version of tenant. */
static int set_active(struct pg_registry *r, const char *tenant, int64_t version,
                      struct realm_err *err) {
    int rc =
        run(r, NULL, err, "UPDATE realm_guests SET active = false WHERE tenant = $1 AND active",
            "t", tenant);
    if (!rc && version)
        rc = run(r, NULL, err,
                 "UPDATE realm_guests SET active = true WHERE tenant = $1 AND version = $2", "ti",
                 tenant, version);
    return rc;
}

static int pg_guest_add(struct realm_registry *base, const char *tenant, const void *wasm,
                        size_t len, bool activate, struct realm_reg_guest *out,
                        struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!wasm || len == 0 || (int64_t)len > REALM_REG_GUEST_MAX)
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: guest module of %zu bytes, expected 1..%lld", len,
                             (long long)REALM_REG_GUEST_MAX);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    char sha[REALM_KEY_HASH_HEX + 1];
    reg_sha256_hex(wasm, len, sha);
    int rc = tx_begin(r, TX_WRITE, err);
    if (rc) return rc;
    int64_t version = 0;
    struct realm_reg_guest g = {0};
    rc = tenant_exists(r, tenant, err);
    /* the bytes in the same transaction as the row: a row never names a missing module */
    if (!rc)
        rc = run(r, NULL, err,
                 "INSERT INTO realm_guest_blobs(sha256, size, data) VALUES($1, $2, $3)"
                 " ON CONFLICT (sha256) DO NOTHING",
                 "tib", sha, (int64_t)len, (const char *)wasm, len);
    if (!rc)
        rc = scalar(r, &version, NULL, err,
                    "SELECT coalesce(max(version), 0) + 1 FROM realm_guests WHERE tenant = $1", "t",
                    tenant);
    if (!rc)
        rc = run(r, NULL, err,
                 "INSERT INTO realm_guests(tenant, version, sha256, size, created_at)"
                 " VALUES($1, $2, $3, $4, $5)",
                 "titii", tenant, version, sha, (int64_t)len, reg_now_ms());
    if (!rc && activate) rc = set_active(r, tenant, version, err);
    if (!rc) rc = get_guest(r, tenant, version, &g, err);
    if (!rc) rc = bump_generation(r, err);
    rc = tx_end(r, rc, err);
    if (rc) return rc;
    /* this node's cache gets it now; a failure here only means a fetch later */
    char ignored[REALM_KEY_HASH_HEX + 1];
    (void)reg_guest_store(r->base.dir, wasm, len, ignored, NULL);
    if (out) *out = g;
    return REALM_OK;
}

static int pg_guest_activate(struct realm_registry *base, const char *tenant, int64_t version,
                             struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    if (version < 0)
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no guest version %lld",
                             (long long)version);
    int rc = tx_begin(r, TX_WRITE, err);
    if (rc) return rc;
    struct realm_reg_guest g;
    rc = tenant_exists(r, tenant, err);
    if (!rc && version) rc = get_guest(r, tenant, version, &g, err);
    if (!rc) rc = set_active(r, tenant, version, err);
    if (!rc) rc = bump_generation(r, err);
    return tx_end(r, rc, err);
}

static int pg_guest_rollback(struct realm_registry *base, const char *tenant,
                             struct realm_reg_guest *out, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    int rc = tx_begin(r, TX_WRITE, err);
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
                    "SELECT max(version) FROM realm_guests WHERE tenant = $1 AND version < $2",
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

static int pg_guest_list(struct realm_registry *base, const char *tenant,
                         struct realm_reg_guest **out, size_t *n, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    char sql[256];
    snprintf(sql, sizeof sql, "%s WHERE tenant = $1 ORDER BY version", k_guest_cols);
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    struct realm_reg_guest *arr = NULL;
    size_t cnt = 0;
    if (!(rc = query(r, &res, err, sql, "t", tenant ? tenant : ""))) {
        int rows = PQntuples(res);
        if (rows > 0 && !(arr = realm_calloc((size_t)rows, sizeof *arr)))
            rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
        for (int i = 0; !rc && i < rows; i++)
            read_guest(res, i, &arr[cnt++]);
        PQclear(res);
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

static int pg_guest_active(struct realm_registry *base, const char *tenant,
                           struct realm_reg_guest *out, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!reg_name_ok(tenant))
        return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no such tenant");
    int rc = read_begin(r, err);
    if (rc) return rc;
    struct realm_reg_guest g;
    rc = get_guest(r, tenant, 0, &g, err);
    pthread_mutex_unlock(&r->mu);
    if (!rc) *out = g;
    return rc;
}

/* Copies the module with hash sha from the database into the cache folder (if not there yet,
 * or if the cached copy does not match its hash). */
static int fetch_guest(struct pg_registry *r, const char *sha, struct realm_err *err) {
    char h[REALM_KEY_HASH_HEX + 1], got[REALM_KEY_HASH_HEX + 1];
    if (!reg_hash_normalize(sha, h))
        return realm_err_set(err, REALM_E_INVALID, "registry: guest '%.80s': not a SHA-256 hash",
                             sha ? sha : "");
    void *cached = NULL;
    size_t cached_len = 0;
    if (reg_guest_read(r->base.dir, h, &cached, &cached_len, NULL) == REALM_OK) {
        realm_free(cached);
        return REALM_OK;
    }
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    static const char sql[] = "SELECT data FROM realm_guest_blobs WHERE sha256 = $1";
    const char *vals[] = {h};
    Oid oids[] = {OID_TEXT};
    res = pg_exec(r, sql, 1, oids, vals, NULL, NULL, 1);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = db_fail(r, res, "read guest module", err);
    else if (PQntuples(res) == 0)
        rc = realm_err_set(err, REALM_E_NOT_FOUND, "registry: no guest module %s", h);
    pthread_mutex_unlock(&r->mu);
    if (!rc) {
        const char *data = PQgetvalue(res, 0, 0);
        size_t len = (size_t)PQgetlength(res, 0, 0);
        rc = reg_guest_store(r->base.dir, data, len, got, err);
        if (!rc && strcmp(got, h))
            rc =
                realm_err_set(err, REALM_E_FORMAT,
                              "registry: guest module %.16s…: stored bytes hash to %.16s…", h, got);
    }
    PQclear(res);
    return rc;
}

static int pg_guest_path(struct realm_registry *base, const char *sha256, char *out, size_t cap) {
    int rc = fetch_guest(pg_of(base), sha256, NULL);
    return rc ? rc : reg_guest_path(base->dir, sha256, out, cap);
}

static int pg_guest_read(struct realm_registry *base, const char *sha256, void **out, size_t *len,
                         struct realm_err *err) {
    int rc = fetch_guest(pg_of(base), sha256, err);
    return rc ? rc : reg_guest_read(base->dir, sha256, out, len, err);
}

/* ---- usage ledger ---- */

static int pg_usage_append(struct realm_registry *base, const struct realm_reg_usage *u,
                           struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    if (!u || !reg_name_ok(u->tenant) || !reg_name_ok(u->model) || !reg_name_ok(u->outcome) ||
        (u->key_label && u->key_label[0] && !reg_name_ok(u->key_label)))
        return realm_err_set(err, REALM_E_INVALID,
                             "registry: usage row: tenant, model and outcome must be names");
    if (u->prompt_tokens < 0 || u->completion_tokens < 0 || u->host_ms < 0)
        return realm_err_set(err, REALM_E_INVALID, "registry: usage row: negative count");
    int rc = tx_begin(r, TX_APPEND, err);
    if (rc) return rc;
    rc = run(
        r, NULL, err,
        "INSERT INTO realm_usage(tenant, model, key_label, prompt_tokens, completion_tokens,"
        " host_ms, outcome, started_at, finished_at) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        "tttiiitii", u->tenant, u->model, u->key_label ? u->key_label : "", u->prompt_tokens,
        u->completion_tokens, u->host_ms, u->outcome, u->started_at, u->finished_at);
    return tx_end(r, rc, err);
}

#define USAGE_WHERE                                                                                \
    " WHERE ($1::text IS NULL OR tenant = $1) AND finished_at >= $2"                               \
    " AND ($3 = 0 OR finished_at < $3)"

static int pg_usage_query(struct realm_registry *base, const char *tenant, int64_t since,
                          int64_t until, struct realm_reg_usage **out, size_t *n,
                          struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    struct realm_reg_usage *arr = NULL;
    size_t cnt = 0;
    rc = query(r, &res, err,
               "SELECT tenant, model, key_label, prompt_tokens, completion_tokens, host_ms,"
               " outcome, started_at, finished_at FROM realm_usage" USAGE_WHERE
               " ORDER BY finished_at, id",
               "tii", tenant, since, until);
    pthread_mutex_unlock(&r->mu);
    if (rc) return rc;
    int rows = PQntuples(res);
    if (rows > 0 && !(arr = realm_calloc((size_t)rows, sizeof *arr)))
        rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    for (int i = 0; !rc && i < rows; i++) {
        struct realm_reg_usage *u = &arr[cnt++];
        bool oom = false;
        u->tenant = col_str(res, i, 0, true, &oom);
        u->model = col_str(res, i, 1, true, &oom);
        u->key_label = col_str(res, i, 2, true, &oom);
        u->prompt_tokens = col_i64(res, i, 3);
        u->completion_tokens = col_i64(res, i, 4);
        u->host_ms = col_i64(res, i, 5);
        u->outcome = col_str(res, i, 6, true, &oom);
        u->started_at = col_i64(res, i, 7);
        u->finished_at = col_i64(res, i, 8);
        if (oom) rc = realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    }
    PQclear(res);
    if (rc) {
        realm_reg_usages_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REALM_OK;
}

static int pg_usage_sum(struct realm_registry *base, const char *tenant, int64_t since,
                        int64_t until, struct realm_reg_usage_sum *out, struct realm_err *err) {
    struct pg_registry *r = pg_of(base);
    int rc = read_begin(r, err);
    if (rc) return rc;
    PGresult *res = NULL;
    rc = query(r, &res, err,
               "SELECT count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens),"
               " 0), coalesce(sum(host_ms), 0) FROM realm_usage" USAGE_WHERE,
               "tii", tenant, since, until);
    pthread_mutex_unlock(&r->mu);
    if (rc) return rc;
    out->requests = col_i64(res, 0, 0);
    out->prompt_tokens = col_i64(res, 0, 1);
    out->completion_tokens = col_i64(res, 0, 2);
    out->host_ms = col_i64(res, 0, 3);
    PQclear(res);
    return REALM_OK;
}

static const struct reg_ops k_pg_ops = {
    .close = pg_close,
    .generation = pg_generation,
    .batch_begin = pg_batch_begin,
    .batch_end = pg_batch_end,
    .tenant_create = pg_tenant_create,
    .tenant_update = pg_tenant_update,
    .tenant_get = pg_tenant_get,
    .tenant_list = pg_tenant_list,
    .tenant_delete = pg_tenant_delete,
    .key_add = pg_key_add,
    .key_add_hash = pg_key_add_hash,
    .key_revoke = pg_key_revoke,
    .key_list = pg_key_list,
    .key_lookup = pg_key_lookup,
    .key_touch = pg_key_touch,
    .guest_add = pg_guest_add,
    .guest_activate = pg_guest_activate,
    .guest_rollback = pg_guest_rollback,
    .guest_list = pg_guest_list,
    .guest_active = pg_guest_active,
    .usage_append = pg_usage_append,
    .usage_query = pg_usage_query,
    .usage_sum = pg_usage_sum,
    .guest_path = pg_guest_path,
    .guest_read = pg_guest_read,
};
