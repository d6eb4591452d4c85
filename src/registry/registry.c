/*
 * registry.c — the backend-neutral part of the tenant registry: freeing what the queries return,
 * identifier and hash checks, and the content-addressed guest module files (DIR/guests/
 * <sha256>.wasm), which every backend stores the same way: the database keeps only the hash.
 *
 * It also holds the public functions, which dispatch to the backend through its reg_ops table
 * (registry/registry.h).
 *
 * Thread rule: every function is thread-safe; files are written under unique temp names and
 * renamed into place, so concurrent stores of the same module are harmless.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "realm/alloc.h"
#include "registry/registry.h"

int64_t reg_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool reg_name_ok(const char *s) {
    if (!s) return false;
    size_t n = strlen(s);
    if (n == 0 || n > REALM_REG_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool reg_hash_normalize(const char *s, char out[REALM_KEY_HASH_HEX + 1]) {
    if (!s || strlen(s) != REALM_KEY_HASH_HEX) return false;
    for (int i = 0; i < REALM_KEY_HASH_HEX; i++) {
        int v = hexval(s[i]);
        if (v < 0) return false;
        out[i] = "0123456789abcdef"[v];
    }
    out[REALM_KEY_HASH_HEX] = '\0';
    return true;
}

bool reg_hash_decode(const char *hex, unsigned char out[32]) {
    if (!hex || strlen(hex) != REALM_KEY_HASH_HEX) return false;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

void reg_sha256_hex(const void *data, size_t len, char out[REALM_KEY_HASH_HEX + 1]) {
    /* the same digest as realm_key_hash, over arbitrary bytes */
    realm_key_hash((const char *)data, len, out);
}

int reg_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        buf[i] = c;
    }
    return 0;
}

/* ---- freeing query results ---- */

void realm_reg_tenant_clear(struct realm_reg_tenant *t) {
    if (!t) return;
    realm_free(t->id);
    for (size_t i = 0; i < t->n_models; i++)
        realm_free(t->models[i]);
    realm_free(t->models);
    memset(t, 0, sizeof *t);
}

void realm_reg_tenants_free(struct realm_reg_tenant *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++)
        realm_reg_tenant_clear(&t[i]);
    realm_free(t);
}

void realm_reg_key_clear(struct realm_reg_key *k) {
    if (!k) return;
    realm_free(k->tenant);
    realm_free(k->label);
    realm_free(k->prefix);
    memset(k, 0, sizeof *k);
}

void realm_reg_keys_free(struct realm_reg_key *k, size_t n) {
    if (!k) return;
    for (size_t i = 0; i < n; i++)
        realm_reg_key_clear(&k[i]);
    realm_free(k);
}

void realm_reg_usage_clear(struct realm_reg_usage *u) {
    if (!u) return;
    realm_free(u->tenant);
    realm_free(u->model);
    realm_free(u->key_label);
    realm_free(u->outcome);
    memset(u, 0, sizeof *u);
}

void realm_reg_usages_free(struct realm_reg_usage *u, size_t n) {
    if (!u) return;
    for (size_t i = 0; i < n; i++)
        realm_reg_usage_clear(&u[i]);
    realm_free(u);
}

/* ---- guest module files ---- */

int reg_guest_path(const char *dir, const char *sha256, char *out, size_t cap) {
    char h[REALM_KEY_HASH_HEX + 1];
    if (!reg_hash_normalize(sha256, h)) return REALM_E_INVALID;
    int n = snprintf(out, cap, "%s/guests/%s.wasm", dir, h);
    if (n < 0 || (size_t)n >= cap) return REALM_E_TOO_SMALL;
    return REALM_OK;
}

static int write_all(int fd, const unsigned char *p, size_t len) {
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsync of a folder, so that a rename or a new entry in it survives a crash. */
static int sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int reg_guest_store(const char *dir, const void *wasm, size_t len,
                    char sha_out[REALM_KEY_HASH_HEX + 1], struct realm_err *err) {
    char sha[REALM_KEY_HASH_HEX + 1], gdir[4096], path[4200], tmp[4300];
    reg_sha256_hex(wasm, len, sha);
    int n = snprintf(gdir, sizeof gdir, "%s/guests", dir);
    if (n < 0 || (size_t)n >= sizeof gdir || reg_guest_path(dir, sha, path, sizeof path))
        return realm_err_set(err, REALM_E_TOO_SMALL, "registry: %s: path too long", dir);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size == (off_t)len) {
        /* already stored (content-addressed: same name, same bytes) — unless someone changed
         * the file, which is then replaced */
        void *old = NULL;
        size_t old_len = 0;
        if (reg_guest_read(dir, sha, &old, &old_len, NULL) == REALM_OK) {
            realm_free(old);
            memcpy(sha_out, sha, sizeof sha);
            return REALM_OK;
        }
    }
    if (reg_mkdirs(gdir) != 0)
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot create: %s", gdir,
                             strerror(errno));
    unsigned char rnd[6] = {0};
    (void)RAND_bytes(rnd, sizeof rnd); /* uniqueness only; the pid already separates processes */
    snprintf(tmp, sizeof tmp, "%s/.tmp-%.16s-%d-%02x%02x%02x%02x%02x%02x", gdir, sha, (int)getpid(),
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot create: %s", tmp,
                             strerror(errno));
    if (write_all(fd, wasm, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot write: %s", tmp, strerror(e));
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot store: %s", path, strerror(e));
    }
    if (sync_dir(gdir) != 0)
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot sync: %s", gdir,
                             strerror(errno));
    memcpy(sha_out, sha, sizeof sha);
    return REALM_OK;
}

int reg_guest_read(const char *dir, const char *sha256, void **out, size_t *len,
                   struct realm_err *err) {
    char path[4200], h[REALM_KEY_HASH_HEX + 1], got[REALM_KEY_HASH_HEX + 1];
    int rc = reg_guest_path(dir, sha256, path, sizeof path);
    if (rc)
        return realm_err_set(
            err, rc, "registry: guest '%.80s': not a SHA-256 hash or path too long", sha256);
    reg_hash_normalize(sha256, h);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return realm_err_set(err, REALM_E_IO, "registry: %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || st.st_size > REALM_REG_GUEST_MAX) {
        close(fd);
        return realm_err_set(err, REALM_E_IO, "registry: %s: cannot stat or too large", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = realm_malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return realm_err_set(err, REALM_E_NOMEM, "registry: out of memory");
    }
    size_t got_n = 0;
    while (got_n < n) {
        ssize_t r = read(fd, buf + got_n, n - got_n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got_n += (size_t)r;
    }
    close(fd);
    reg_sha256_hex(buf, got_n, got);
    if (got_n != n || strcmp(got, h)) {
        realm_free(buf);
        return realm_err_set(err, REALM_E_FORMAT,
                             "registry: %s: content hash %.16s…, expected %.16s…", path, got, h);
    }
    *out = buf;
    *len = n;
    return REALM_OK;
}

/* ---- the public interface: dispatch to the backend ---- */

void realm_registry_close(struct realm_registry *r) {
    if (r) r->ops->close(r);
}
const char *realm_registry_dir(const struct realm_registry *r) {
    return r->dir;
}
int realm_registry_generation(struct realm_registry *r, uint64_t *out, struct realm_err *err) {
    return r->ops->generation(r, out, err);
}
int realm_registry_batch_begin(struct realm_registry *r, struct realm_err *err) {
    return r->ops->batch_begin(r, err);
}
int realm_registry_batch_end(struct realm_registry *r, bool commit, struct realm_err *err) {
    return r->ops->batch_end(r, commit, err);
}

int realm_registry_tenant_create(struct realm_registry *r, const struct realm_reg_tenant *t,
                                 struct realm_err *err) {
    return r->ops->tenant_create(r, t, err);
}
int realm_registry_tenant_update(struct realm_registry *r, const struct realm_reg_tenant *t,
                                 struct realm_err *err) {
    return r->ops->tenant_update(r, t, err);
}
int realm_registry_tenant_get(struct realm_registry *r, const char *id,
                              struct realm_reg_tenant *out, struct realm_err *err) {
    return r->ops->tenant_get(r, id, out, err);
}
int realm_registry_tenant_list(struct realm_registry *r, struct realm_reg_tenant **out, size_t *n,
                               struct realm_err *err) {
    return r->ops->tenant_list(r, out, n, err);
}
int realm_registry_tenant_delete(struct realm_registry *r, const char *id, struct realm_err *err) {
    return r->ops->tenant_delete(r, id, err);
}

/* A NULL tenant would reach the admin table: the tenant functions refuse it. */
static int no_tenant(struct realm_err *err) {
    return realm_err_set(err, REALM_E_NOT_FOUND, "registry: no tenant given");
}
int realm_registry_key_add(struct realm_registry *r, const char *tenant, const char *label,
                           char *key_out, size_t cap, struct realm_err *err) {
    return tenant ? r->ops->key_add(r, tenant, label, key_out, cap, err) : no_tenant(err);
}
int realm_registry_key_add_hash(struct realm_registry *r, const char *tenant, const char *label,
                                const char *hash_hex, struct realm_err *err) {
    return tenant ? r->ops->key_add_hash(r, tenant, label, hash_hex, err) : no_tenant(err);
}
int realm_registry_key_revoke(struct realm_registry *r, const char *tenant,
                              const char *label_or_prefix, struct realm_err *err) {
    return tenant ? r->ops->key_revoke(r, tenant, label_or_prefix, err) : no_tenant(err);
}
int realm_registry_key_list(struct realm_registry *r, const char *tenant,
                            struct realm_reg_key **out, size_t *n, struct realm_err *err) {
    return r->ops->key_list(r, false, tenant, out, n, err);
}
int realm_registry_key_lookup(struct realm_registry *r, const char *key, size_t len,
                              struct realm_reg_key *out, struct realm_err *err) {
    return r->ops->key_lookup(r, false, key, len, out, err);
}
int realm_registry_key_touch(struct realm_registry *r, const char *hash_hex, int64_t when,
                             struct realm_err *err) {
    return r->ops->key_touch(r, hash_hex, when, err);
}
int realm_registry_admin_key_add(struct realm_registry *r, const char *label, char *key_out,
                                 size_t cap, struct realm_err *err) {
    return r->ops->key_add(r, NULL, label, key_out, cap, err);
}
int realm_registry_admin_key_add_hash(struct realm_registry *r, const char *label,
                                      const char *hash_hex, struct realm_err *err) {
    return r->ops->key_add_hash(r, NULL, label, hash_hex, err);
}
int realm_registry_admin_key_revoke(struct realm_registry *r, const char *label_or_prefix,
                                    struct realm_err *err) {
    return r->ops->key_revoke(r, NULL, label_or_prefix, err);
}
int realm_registry_admin_key_list(struct realm_registry *r, struct realm_reg_key **out, size_t *n,
                                  struct realm_err *err) {
    return r->ops->key_list(r, true, NULL, out, n, err);
}
int realm_registry_admin_key_lookup(struct realm_registry *r, const char *key, size_t len,
                                    struct realm_reg_key *out, struct realm_err *err) {
    return r->ops->key_lookup(r, true, key, len, out, err);
}

int realm_registry_guest_add(struct realm_registry *r, const char *tenant, const void *wasm,
                             size_t len, bool activate, struct realm_reg_guest *out,
                             struct realm_err *err) {
    return r->ops->guest_add(r, tenant, wasm, len, activate, out, err);
}
int realm_registry_guest_activate(struct realm_registry *r, const char *tenant, int64_t version,
                                  struct realm_err *err) {
    return r->ops->guest_activate(r, tenant, version, err);
}
int realm_registry_guest_rollback(struct realm_registry *r, const char *tenant,
                                  struct realm_reg_guest *out, struct realm_err *err) {
    return r->ops->guest_rollback(r, tenant, out, err);
}
int realm_registry_guest_list(struct realm_registry *r, const char *tenant,
                              struct realm_reg_guest **out, size_t *n, struct realm_err *err) {
    return r->ops->guest_list(r, tenant, out, n, err);
}
int realm_registry_guest_active(struct realm_registry *r, const char *tenant,
                                struct realm_reg_guest *out, struct realm_err *err) {
    return r->ops->guest_active(r, tenant, out, err);
}
/* The const is the interface's promise about the registry's contents; a backend that fetches
 * modules on demand only fills its local cache (under its own lock). */
int realm_registry_guest_path(const struct realm_registry *r, const char *sha256, char *out,
                              size_t cap) {
    if (r->ops->guest_path)
        return r->ops->guest_path((struct realm_registry *)(uintptr_t)r, sha256, out, cap);
    return reg_guest_path(r->dir, sha256, out, cap);
}
int realm_registry_guest_read(const struct realm_registry *r, const char *sha256, void **out,
                              size_t *len, struct realm_err *err) {
    if (r->ops->guest_read)
        return r->ops->guest_read((struct realm_registry *)(uintptr_t)r, sha256, out, len, err);
    return reg_guest_read(r->dir, sha256, out, len, err);
}

bool realm_registry_spec_is_postgres(const char *spec) {
    return spec && (!strncmp(spec, "postgres://", 11) || !strncmp(spec, "postgresql://", 13));
}

char *realm_registry_spec_display(const char *spec, char *out, size_t cap) {
    snprintf(out, cap, "%s", spec ? spec : "");
    if (!realm_registry_spec_is_postgres(out)) return out;
    /* scheme://user:password@host... */
    char *auth = strstr(out, "://") + 3, *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    char *colon = strchr(auth, ':');
    if (at && (!slash || at < slash) && colon && colon < at) {
        size_t tail = strlen(at) + 1;
        if ((size_t)(colon + 1 - out) + 3 + tail <= cap) {
            memmove(colon + 4, at, tail);
            memcpy(colon + 1, "***", 3);
        }
    }
    /* ...?password=secret&... */
    char *p = strstr(out, "password=");
    if (p) {
        char *end = p + 9 + strcspn(p + 9, "&");
        size_t tail = strlen(end) + 1;
        if ((size_t)(p + 9 - out) + 3 + tail <= cap) {
            memmove(p + 12, end, tail);
            memcpy(p + 9, "***", 3);
        }
    }
    return out;
}

int realm_registry_open(const char *spec, const struct realm_registry_opts *opts,
                        struct realm_registry **out, struct realm_err *err) {
    if (realm_registry_spec_is_postgres(spec))
        return realm_registry_open_postgres(spec, opts, out, err);
    return realm_registry_open_sqlite(spec, opts, out, err);
}

int realm_registry_usage_append(struct realm_registry *r, const struct realm_reg_usage *u,
                                struct realm_err *err) {
    return r->ops->usage_append(r, u, err);
}
int realm_registry_usage_query(struct realm_registry *r, const char *tenant, int64_t since,
                               int64_t until, struct realm_reg_usage **out, size_t *n,
                               struct realm_err *err) {
    return r->ops->usage_query(r, tenant, since, until, out, n, err);
}
int realm_registry_usage_sum(struct realm_registry *r, const char *tenant, int64_t since,
                             int64_t until, struct realm_reg_usage_sum *out,
                             struct realm_err *err) {
    return r->ops->usage_sum(r, tenant, since, until, out, err);
}
