/*
 * registry.h (internal) — what the registry's backends share (src/registry/registry.c): name and
 * hash validation, the wall clock, and the content-addressed guest module files under
 * DIR/guests/, which are the same whatever database holds the metadata. The public interface is
 * include/realm/registry.h; src/registry/sqlite.c is the SQLite backend.
 *
 * Thread rule: every function here is thread-safe (no shared state).
 */
#ifndef REALM_REGISTRY_INT_H
#define REALM_REGISTRY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/registry.h"

/* ---- backends ----
 * A backend fills a reg_ops table; the public functions (registry.c) check arguments common to
 * every backend and dispatch through it. Each op has the contract of the public function of the
 * same name; the key ops serve tenant keys (tenant != NULL) and admin keys (tenant NULL, or
 * admin = true) alike. A backend's object begins with struct realm_registry. */
struct reg_ops {
    void (*close)(struct realm_registry *r); /* frees everything, r included */
    int (*generation)(struct realm_registry *r, uint64_t *out, struct realm_err *err);
    int (*batch_begin)(struct realm_registry *r, struct realm_err *err);
    int (*batch_end)(struct realm_registry *r, bool commit, struct realm_err *err);
    int (*tenant_create)(struct realm_registry *r, const struct realm_reg_tenant *t,
                         struct realm_err *err);
    int (*tenant_update)(struct realm_registry *r, const struct realm_reg_tenant *t,
                         struct realm_err *err);
    int (*tenant_get)(struct realm_registry *r, const char *id, struct realm_reg_tenant *out,
                      struct realm_err *err);
    int (*tenant_list)(struct realm_registry *r, struct realm_reg_tenant **out, size_t *n,
                       struct realm_err *err);
    int (*tenant_delete)(struct realm_registry *r, const char *id, struct realm_err *err);
    int (*key_add)(struct realm_registry *r, const char *tenant, const char *label, char *key_out,
                   size_t cap, struct realm_err *err);
    int (*key_add_hash)(struct realm_registry *r, const char *tenant, const char *label,
                        const char *hash_hex, struct realm_err *err);
    int (*key_revoke)(struct realm_registry *r, const char *tenant, const char *what,
                      struct realm_err *err);
    int (*key_list)(struct realm_registry *r, bool admin, const char *tenant,
                    struct realm_reg_key **out, size_t *n, struct realm_err *err);
    int (*key_lookup)(struct realm_registry *r, bool admin, const char *key, size_t len,
                      struct realm_reg_key *out, struct realm_err *err);
    int (*key_touch)(struct realm_registry *r, const char *hash_hex, int64_t when,
                     struct realm_err *err);
    int (*guest_add)(struct realm_registry *r, const char *tenant, const void *wasm, size_t len,
                     bool activate, struct realm_reg_guest *out, struct realm_err *err);
    int (*guest_activate)(struct realm_registry *r, const char *tenant, int64_t version,
                          struct realm_err *err);
    int (*guest_rollback)(struct realm_registry *r, const char *tenant, struct realm_reg_guest *out,
                          struct realm_err *err);
    int (*guest_list)(struct realm_registry *r, const char *tenant, struct realm_reg_guest **out,
                      size_t *n, struct realm_err *err);
    int (*guest_active)(struct realm_registry *r, const char *tenant, struct realm_reg_guest *out,
                        struct realm_err *err);
    int (*usage_append)(struct realm_registry *r, const struct realm_reg_usage *u,
                        struct realm_err *err);
    int (*usage_query)(struct realm_registry *r, const char *tenant, int64_t since, int64_t until,
                       struct realm_reg_usage **out, size_t *n, struct realm_err *err);
    int (*usage_sum)(struct realm_registry *r, const char *tenant, int64_t since, int64_t until,
                     struct realm_reg_usage_sum *out, struct realm_err *err);
    /* Optional (NULL: the module files under dir): backends that keep module bytes elsewhere
     * (PostgreSQL) bring them into dir/guests first. r is the caller's (const) registry: the
     * backend serialises on its own lock. */
    int (*guest_path)(struct realm_registry *r, const char *sha256, char *out, size_t cap);
    int (*guest_read)(struct realm_registry *r, const char *sha256, void **out, size_t *len,
                      struct realm_err *err);
};

/* What every backend's object starts with. */
struct realm_registry {
    const struct reg_ops *ops;
    char *dir; /* the state directory (realm_malloc'd, freed by the backend's close) */
};

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t reg_now_ms(void);
/* Whether s is a valid identifier: 1..REALM_REG_NAME_MAX bytes, no control characters. */
bool reg_name_ok(const char *s);
/* Copies a 64-hex-digit hash to out in lower case; false if s is not one. */
bool reg_hash_normalize(const char *s, char out[REALM_KEY_HASH_HEX + 1]);
/* Hex → 32 bytes; false if not 64 hex digits. */
bool reg_hash_decode(const char *hex, unsigned char out[32]);
/* Lower-case hex SHA-256 of data[0..len). */
void reg_sha256_hex(const void *data, size_t len, char out[REALM_KEY_HASH_HEX + 1]);
/* mkdir -p with mode 0700 for the parts it creates. Returns 0 or -1 (errno set). */
int reg_mkdirs(const char *path);
/* Writes wasm[0..len) to DIR/guests/<sha256>.wasm unless it exists: a temp file in the same
 * folder, fsync, rename, fsync of the folder — a crash leaves the old state or the whole file,
 * never a torn one (a stray temp file at worst). sha_out gets the hash.
 * Errors: REALM_E_IO, REALM_E_TOO_SMALL (path too long). */
int reg_guest_store(const char *dir, const void *wasm, size_t len,
                    char sha_out[REALM_KEY_HASH_HEX + 1], struct realm_err *err);
/* realm_registry_guest_path / _read over a state directory. */
int reg_guest_path(const char *dir, const char *sha256, char *out, size_t cap);
int reg_guest_read(const char *dir, const char *sha256, void **out, size_t *len,
                   struct realm_err *err);

#endif
