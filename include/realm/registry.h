/*
 * registry.h — the durable tenant registry of a realm state directory: tenants (limits and model
 * grants), tenant API keys and operator (admin) keys (only SHA-256 hashes are stored), guest
 * versions (module bytes content-addressed on disk, metadata in the registry), a usage ledger
 * (one row per finished request) and a change counter a server polls to notice changes.
 *
 * The interface is backend-neutral: struct realm_registry is opaque and every operation
 * dispatches on the backend chosen at open time: SQLite (realm_registry_open_sqlite:
 * DIR/registry.db in WAL mode with synchronous=FULL, schema versioned with PRAGMA user_version)
 * for one machine, PostgreSQL (realm_registry_open_postgres, src/registry/postgres.c) for several
 * nodes sharing one registry; realm_registry_open picks one from a directory or URL. What is said
 * below of files, fsync and locks is the SQLite backend's; the PostgreSQL one gives the same
 * guarantees through its transactions (see realm_registry_open_postgres).
 *
 * State directory layout: DIR/registry.db (+ -wal, -shm), DIR/guests/<sha256>.wasm.
 *
 * Durability: a function that changes the registry returns REALM_OK only after the change is
 * committed and synced (fsync) — a client may be told it succeeded. Each change is atomic: after
 * a crash or an error the registry holds the state before or after it, never a mix. When the
 * storage fails (REALM_E_IO: disk full, fsync failed) the outcome of that one change is unknown
 * — as with any database at a failed fsync it may have been committed or not — but it is never
 * partial. A failed call writes nothing to its out-parameters.
 *
 * Times are milliseconds since the Unix epoch (UTC), taken from CLOCK_REALTIME by the registry
 * for created_at fields and given by the caller for the ledger.
 *
 * Strings and arrays returned are allocated with realm_malloc and owned by the caller, who frees
 * them with the matching realm_reg_*_clear / realm_reg_*s_free function. Lifetime: nothing
 * returned points into the registry, so results stay valid after realm_registry_close. Input
 * strings are borrowed for the call. Identifiers (tenant ids, key labels, model names,
 * outcomes) are NUL-terminated UTF-8 of 1..REALM_REG_NAME_MAX bytes without control characters.
 *
 * Thread rule: one struct realm_registry may be used from any number of threads at once; the
 * SQLite backend serialises calls on one connection behind a (recursive) mutex, so a slow
 * fsync in one call delays the others. Several processes may open the same directory (the CLI
 * while a server runs): SQLite's locks and busy timeout arbitrate, writers wait up to
 * busy_timeout_ms and then fail with REALM_E_BUSY.
 */
#ifndef REALM_REGISTRY_H
#define REALM_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/server.h" /* struct realm_tenant_limits, REALM_KEY_LEN, REALM_KEY_HASH_HEX */

#define REALM_REG_NAME_MAX 128
/* Characters of a generated key kept in the registry to recognise it ("realm-" + 6): the
 * default label of a key and what `key revoke` matches a prefix against. 36 of the key's 256
 * random bits; the rest stay secret. */
#define REALM_REG_KEY_PREFIX_LEN 12
/* Largest guest module the registry stores (bytes). */
#define REALM_REG_GUEST_MAX (INT64_C(256) << 20)

struct realm_registry;

struct realm_registry_opts {
    const char *vfs;       /* SQLite VFS name (NULL: the default); tests register a failing one */
    int busy_timeout_ms;   /* wait for another process's write lock (0: 5000); PostgreSQL: the
                              connect timeout and lock_timeout */
    const char *cache_dir; /* PostgreSQL: local folder the guest modules are copied into
                              (NULL: $REALM_REGISTRY_CACHE, else ~/.cache/realm/registry) */
};

/* Opens (creating if needed, mode 0700) the state directory `dir` and its SQLite registry,
 * creating or upgrading the schema. opts may be NULL (defaults).
 * Ownership: returns owned (*out; realm_registry_close). Nothing on failure.
 * Errors: REALM_E_INVALID (dir empty or too long), REALM_E_IO (cannot create/open, storage
 * error), REALM_E_FORMAT (not a registry, or a schema newer than this build), REALM_E_BUSY,
 * REALM_E_NOMEM. */
int realm_registry_open_sqlite(const char *dir, const struct realm_registry_opts *opts,
                               struct realm_registry **out, struct realm_err *err);
/* Opens a PostgreSQL registry: conninfo is a libpq connection string or URI
 * ("postgresql://user@host:5432/db", "host=/run/postgresql dbname=realm"). Creates the schema
 * (tables realm_*) when absent, under an advisory lock so that nodes starting together agree.
 * Guest module bytes live in the database (realm_guest_blobs, keyed by SHA-256); guest_path and
 * guest_read copy a module into the local cache folder (opts->cache_dir) on first use and
 * check it against its hash, so any node can load any tenant's guest. realm_registry_dir returns
 * that cache folder. Every change is one transaction that also bumps the generation row; writers
 * serialise on that row (SELECT ... FOR UPDATE), like SQLite's write lock. A lost connection is
 * re-established at the next call outside a batch; calls meanwhile fail with REALM_E_IO and the
 * server's message. Errors: as realm_registry_open_sqlite; REALM_E_IO also for a server that
 * cannot be reached or refuses the login. */
int realm_registry_open_postgres(const char *conninfo, const struct realm_registry_opts *opts,
                                 struct realm_registry **out, struct realm_err *err);
/* Opens the registry `spec` names: "postgres://..." or "postgresql://..." a PostgreSQL one,
 * anything else a state directory (SQLite). Contract as the opener it picks. */
int realm_registry_open(const char *spec, const struct realm_registry_opts *opts,
                        struct realm_registry **out, struct realm_err *err);
/* Whether spec names a PostgreSQL registry (the rule realm_registry_open uses). */
bool realm_registry_spec_is_postgres(const char *spec);
/* spec for logs and messages: a URL's password (user:PASSWORD@, password=...) becomes "***".
 * Writes at most cap bytes (truncated, NUL-terminated; cap > 0). Returns out. */
char *realm_registry_spec_display(const char *spec, char *out, size_t cap);
/* Closes the registry. NULL is a no-op. No call may be in progress. */
void realm_registry_close(struct realm_registry *r);
/* The state directory (as given to open). Lifetime: until realm_registry_close. */
const char *realm_registry_dir(const struct realm_registry *r);

/* The change counter: increases with every committed change to tenants, grants, limits, keys
 * and guest versions (not with usage rows or key last-used times), from any process. A server
 * compares it with the value it last loaded to know whether to reload. Cheap (one indexed read).
 * Errors: REALM_E_IO, REALM_E_BUSY. */
int realm_registry_generation(struct realm_registry *r, uint64_t *out, struct realm_err *err);

/* ---- batches: several changes committed as one ----
 * Between batch_begin and batch_end every change joins one transaction, which batch_end
 * commits (commit = true) or rolls back. A change that fails inside a batch is undone on its own
 * (a savepoint), so the caller may go on or roll the whole batch back. The calling thread holds
 * the registry for the whole batch (other threads wait); batches nest.
 * Errors (begin): REALM_E_IO, REALM_E_BUSY. Errors (end): REALM_E_IO on a failed commit, after
 * which the batch is rolled back; REALM_E_STATE without a batch. */
int realm_registry_batch_begin(struct realm_registry *r, struct realm_err *err);
int realm_registry_batch_end(struct realm_registry *r, bool commit, struct realm_err *err);

/* ---- tenants ---- */
struct realm_reg_tenant {
    char *id;
    struct realm_tenant_limits limits; /* 0 fields mean what they mean in server.h */
    bool all_models;                   /* every configured model; `models` is then ignored */
    char **models;                     /* n_models granted model names */
    size_t n_models;
    int64_t created_at; /* set by the registry (ignored on create/update) */
};
/* Frees the fields of t (not t itself) and zeroes it. NULL is a no-op. */
void realm_reg_tenant_clear(struct realm_reg_tenant *t);
/* Frees n tenants and the array. NULL is a no-op. */
void realm_reg_tenants_free(struct realm_reg_tenant *t, size_t n);

/* Creates tenant t->id with t's limits and grants (no keys, no guest: the default one).
 * Ownership: t is borrowed. Errors: REALM_E_INVALID (bad id or model name, negative limit),
 * REALM_E_STATE (the tenant exists), REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_tenant_create(struct realm_registry *r, const struct realm_reg_tenant *t,
                                 struct realm_err *err);
/* Replaces the limits and grants of tenant t->id (keys and guests untouched).
 * Errors: as create, REALM_E_NOT_FOUND instead of REALM_E_STATE. */
int realm_registry_tenant_update(struct realm_registry *r, const struct realm_reg_tenant *t,
                                 struct realm_err *err);
/* Reads one tenant. Ownership: *out is owned by the caller (realm_reg_tenant_clear).
 * Errors: REALM_E_NOT_FOUND, REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_tenant_get(struct realm_registry *r, const char *id,
                              struct realm_reg_tenant *out, struct realm_err *err);
/* Every tenant, ordered by id. Ownership: *out (NULL when *n is 0) is owned by the caller
 * (realm_reg_tenants_free). Errors: REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_tenant_list(struct realm_registry *r, struct realm_reg_tenant **out, size_t *n,
                               struct realm_err *err);
/* Deletes a tenant with its grants, keys (cut off at once) and guest version rows. Its ledger
 * rows stay (accounting); module files stay (content-addressed, maybe shared).
 * Errors: REALM_E_NOT_FOUND, REALM_E_IO, REALM_E_BUSY. */
int realm_registry_tenant_delete(struct realm_registry *r, const char *id, struct realm_err *err);

/* ---- API keys (tenant keys) and admin keys ----
 * Keys are realm_key_generate keys; the registry stores realm_key_hash (lower-case hex SHA-256
 * of the key's bytes, the scheme of realm.json's key_hashes), so hashes move between both. */
struct realm_reg_key {
    char *tenant; /* owning tenant; NULL for admin keys */
    char *label;  /* unique per tenant (admin keys: unique among admin keys) */
    char *prefix; /* the first REALM_REG_KEY_PREFIX_LEN characters of a generated key; NULL for
                     an imported hash */
    char hash[REALM_KEY_HASH_HEX + 1];
    int64_t created_at;
    int64_t last_used_at; /* 0: never (see realm_registry_key_touch) */
};
void realm_reg_key_clear(struct realm_reg_key *k);
void realm_reg_keys_free(struct realm_reg_key *k, size_t n);

/* Generates a key for tenant `tenant` (label NULL: the key's prefix), stores its hash, and writes
 * the key (REALM_KEY_LEN characters + NUL) to key_out — the only time it exists outside the
 * caller. Ownership: strings borrowed. Errors: REALM_E_TOO_SMALL (cap <= REALM_KEY_LEN),
 * REALM_E_NOT_FOUND (no tenant), REALM_E_STATE (label taken), REALM_E_INVALID (bad label),
 * REALM_E_IO, REALM_E_BUSY, REALM_E_INTERNAL (no randomness). */
int realm_registry_key_add(struct realm_registry *r, const char *tenant, const char *label,
                           char *key_out, size_t cap, struct realm_err *err);
/* Stores an existing key's hash (64 hex digits, any case; from realm.json). label NULL: "hash-"
 * and the first 8 hex digits. Errors: as key_add, REALM_E_INVALID (not a hash), REALM_E_STATE
 * (that hash is already stored, for any tenant). */
int realm_registry_key_add_hash(struct realm_registry *r, const char *tenant, const char *label,
                                const char *hash_hex, struct realm_err *err);
/* Removes one key of `tenant` named by its label, else by the whole key, else by a prefix of the
 * key (8..REALM_REG_KEY_PREFIX_LEN characters, e.g. what the default label shows) that matches
 * exactly one of its generated keys. The key stops matching at once (the next lookup fails).
 * Ownership: strings borrowed. Errors: REALM_E_NOT_FOUND, REALM_E_INVALID (prefix matches several
 * keys), REALM_E_IO, REALM_E_BUSY. */
int realm_registry_key_revoke(struct realm_registry *r, const char *tenant,
                              const char *label_or_prefix, struct realm_err *err);
/* Keys of `tenant` (NULL: of every tenant), ordered by tenant then created_at. Ownership: *out
 * owned (realm_reg_keys_free). Errors: REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_key_list(struct realm_registry *r, const char *tenant,
                            struct realm_reg_key **out, size_t *n, struct realm_err *err);
/* Finds the tenant key whose hash is SHA-256(key[0..len)): candidates are found by the first 64
 * bits of the hash, and each candidate's full digest is compared with CRYPTO_memcmp (constant
 * time). Read-only: does not update last_used_at (realm_registry_key_touch does, if wanted).
 * Ownership: *out owned (realm_reg_key_clear). Errors: REALM_E_NOT_FOUND (no such key — the
 * caller answers 401), REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_key_lookup(struct realm_registry *r, const char *key, size_t len,
                              struct realm_reg_key *out, struct realm_err *err);
/* Sets last_used_at of the tenant or admin key with this hash (synchronous write: call it
 * sparingly, e.g. at most once a minute per key). Does not change the generation.
 * Errors: REALM_E_NOT_FOUND, REALM_E_INVALID, REALM_E_IO, REALM_E_BUSY. */
int realm_registry_key_touch(struct realm_registry *r, const char *hash_hex, int64_t when,
                             struct realm_err *err);

/* Admin keys: the same scheme, in their own table — a tenant key never passes for an admin key.
 * Contracts as the tenant functions without the tenant (label NULL: the key's prefix / "hash-…").
 * Errors of admin_key_revoke: REALM_E_NOT_FOUND, REALM_E_INVALID, REALM_E_IO, REALM_E_BUSY. */
int realm_registry_admin_key_add(struct realm_registry *r, const char *label, char *key_out,
                                 size_t cap, struct realm_err *err);
int realm_registry_admin_key_add_hash(struct realm_registry *r, const char *label,
                                      const char *hash_hex, struct realm_err *err);
int realm_registry_admin_key_revoke(struct realm_registry *r, const char *label_or_prefix,
                                    struct realm_err *err);
int realm_registry_admin_key_list(struct realm_registry *r, struct realm_reg_key **out, size_t *n,
                                  struct realm_err *err);
int realm_registry_admin_key_lookup(struct realm_registry *r, const char *key, size_t len,
                                    struct realm_reg_key *out, struct realm_err *err);

/* ---- guest versions ---- */
struct realm_reg_guest {
    int64_t version;                     /* 1, 2, ... per tenant */
    char sha256[REALM_KEY_HASH_HEX + 1]; /* lower-case hex of the module bytes */
    int64_t size;                        /* bytes */
    int64_t created_at;
    bool active; /* the version new requests use (at most one per tenant) */
};

/* Stores wasm[0..len) as DIR/guests/<sha256>.wasm (temp file, fsync, rename, directory fsync;
 * kept as is if that file exists) and records it as tenant's next version, made active when
 * `activate`. The registry does not validate the module: compile and check it (and run its init)
 * before activating. Ownership: wasm borrowed; *out (optional) written on success.
 * Errors: REALM_E_INVALID (len 0 or above REALM_REG_GUEST_MAX), REALM_E_NOT_FOUND (no tenant),
 * REALM_E_IO (file or database), REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_guest_add(struct realm_registry *r, const char *tenant, const void *wasm,
                             size_t len, bool activate, struct realm_reg_guest *out,
                             struct realm_err *err);
/* Makes `version` the tenant's active version (version 0: none, back to the default guest).
 * Errors: REALM_E_NOT_FOUND (tenant or version), REALM_E_IO, REALM_E_BUSY. */
int realm_registry_guest_activate(struct realm_registry *r, const char *tenant, int64_t version,
                                  struct realm_err *err);
/* Activates the newest version older than the active one; *out (optional) gets it.
 * Errors: REALM_E_NOT_FOUND (no tenant, or no older version), REALM_E_STATE (no active version),
 * REALM_E_IO, REALM_E_BUSY. */
int realm_registry_guest_rollback(struct realm_registry *r, const char *tenant,
                                  struct realm_reg_guest *out, struct realm_err *err);
/* The tenant's versions, oldest first. Ownership: *out owned (realm_free). Errors: REALM_E_IO,
 * REALM_E_BUSY, REALM_E_NOMEM (an unknown tenant has no versions: *n = 0). */
int realm_registry_guest_list(struct realm_registry *r, const char *tenant,
                              struct realm_reg_guest **out, size_t *n, struct realm_err *err);
/* The tenant's active version. Errors: REALM_E_NOT_FOUND (none: the default guest), REALM_E_IO,
 * REALM_E_BUSY. */
int realm_registry_guest_active(struct realm_registry *r, const char *tenant,
                                struct realm_reg_guest *out, struct realm_err *err);
/* Writes "DIR/guests/<sha256>.wasm" to out. PostgreSQL: first copies the module from the
 * database into the cache folder if it is not there (checked against the hash).
 * Errors: REALM_E_INVALID (not a hash), REALM_E_TOO_SMALL; PostgreSQL also REALM_E_NOT_FOUND
 * (no such module), REALM_E_IO, REALM_E_FORMAT (stored bytes do not match the hash). */
int realm_registry_guest_path(const struct realm_registry *r, const char *sha256, char *out,
                              size_t cap);
/* Reads the module with this hash and checks its bytes against it. Ownership: *out owned
 * (realm_free). Errors: REALM_E_IO (missing or unreadable), REALM_E_FORMAT (content does not
 * match the hash), REALM_E_INVALID, REALM_E_NOMEM. */
int realm_registry_guest_read(const struct realm_registry *r, const char *sha256, void **out,
                              size_t *len, struct realm_err *err);

/* ---- usage ledger ---- */
struct realm_reg_usage {
    char *tenant;
    char *model;
    char *key_label;       /* "" when the request had no key label (e.g. admin) */
    int64_t prompt_tokens; /* as the host measured them */
    int64_t completion_tokens;
    int64_t host_ms; /* host time spent on the request */
    char *outcome;   /* "ok", "cancelled", "error", "limit", ... (free text, short) */
    int64_t started_at;
    int64_t finished_at;
};
void realm_reg_usage_clear(struct realm_reg_usage *u);
void realm_reg_usages_free(struct realm_reg_usage *u, size_t n);

struct realm_reg_usage_sum {
    int64_t requests;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t host_ms;
};

/* Appends one finished request (durable on return). Ownership: u and its strings borrowed.
 * Errors: REALM_E_INVALID (empty tenant/model/outcome, negative counts), REALM_E_IO,
 * REALM_E_BUSY. The tenant need not exist any more. */
int realm_registry_usage_append(struct realm_registry *r, const struct realm_reg_usage *u,
                                struct realm_err *err);
/* Rows with since <= finished_at < until (until 0: no upper bound) of `tenant` (NULL: all),
 * ordered by finished_at. Ownership: *out owned (realm_reg_usages_free).
 * Errors: REALM_E_IO, REALM_E_BUSY, REALM_E_NOMEM. */
int realm_registry_usage_query(struct realm_registry *r, const char *tenant, int64_t since,
                               int64_t until, struct realm_reg_usage **out, size_t *n,
                               struct realm_err *err);
/* Sums over the same rows as usage_query. Errors: REALM_E_IO, REALM_E_BUSY. */
int realm_registry_usage_sum(struct realm_registry *r, const char *tenant, int64_t since,
                             int64_t until, struct realm_reg_usage_sum *out, struct realm_err *err);

#endif
