/*
 * cache.c — compiled guests cached on disk: <cache_dir>/<key>.cwasm where key = SHA-256 of the
 * wasm bytes and the engine settings that change generated code (host->config_key). Wasmtime's
 * deserializer trusts its input, so an entry is used only if (1) the file belongs to this user
 * and is not writable by group/others, in a directory that is not either, and (2) its header
 * (magic, key, payload length) matches and the SHA-256 of its payload equals the one recorded
 * when it was written. Anything else is recompiled and rewritten (write to a temporary file,
 * rename: readers never see a partial file).
 *
 * File layout: "REALMCW1" | u64 LE payload length | 32-byte key | 32-byte SHA-256(payload) |
 * payload (wasmtime_module_serialize output).
 *
 * Thread rule: thread-safe (no shared state; concurrent writers of one key each rename a
 * complete file).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "sandbox/sandbox.h"

#define CW_MAGIC "REALMCW1"
#define CW_HDR (8 + 8 + 32 + 32)
#define CW_MAX_FILE (1ull << 30) /* far above any guest; refuses absurd files before reading */

static int sha256_parts(const void *a, size_t na, const void *b, size_t nb, unsigned char out[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, a, na) &&
             (nb == 0 || EVP_DigestUpdate(c, b, nb)) && EVP_DigestFinal_ex(c, out, &n) && n == 32;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

/* mkdir -p with mode 0700 for the parts it creates. */
static int make_dirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
            buf[i] = c;
        }
    }
    return 0;
}

static bool private_to_us(const struct stat *st) {
    return st->st_uid == geteuid() && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

static void hex(const unsigned char *k, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", k[i]);
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Loads and checks an entry; returns the module or NULL (absent, foreign, corrupt, stale). */
static wasmtime_module_t *load_entry(struct realm_sbx_host *h, const char *path,
                                     const unsigned char key[32]) {
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    wasmtime_module_t *mod = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !private_to_us(&st) ||
        (uint64_t)st.st_size < CW_HDR || (uint64_t)st.st_size > CW_MAX_FILE)
        goto done;
    buf = realm_malloc((size_t)st.st_size);
    if (!buf) goto done;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) goto done;
        got += (size_t)r;
    }
    uint64_t plen = get_u64(buf + 8);
    unsigned char digest[32];
    if (memcmp(buf, CW_MAGIC, 8) != 0 || plen != (uint64_t)st.st_size - CW_HDR ||
        memcmp(buf + 16, key, 32) != 0 ||
        sha256_parts(buf + CW_HDR, (size_t)plen, NULL, 0, digest) != 0 ||
        memcmp(buf + 48, digest, 32) != 0) {
        realm_log(REALM_LOG_WARN, "sandbox", "cache: %s: bad header or checksum, recompiling",
                  path);
        goto done;
    }
    wasmtime_error_t *e = wasmtime_module_deserialize(h->engine, buf + CW_HDR, (size_t)plen, &mod);
    if (e) {
        char msg[256];
        sbx_error_text(e, msg, sizeof msg);
        realm_log(REALM_LOG_INFO, "sandbox", "cache: %s: not loadable (%s), recompiling", path,
                  msg);
        mod = NULL;
    }
done:
    realm_free(buf);
    close(fd);
    return mod;
}

static void store_entry(const char *dir, const char *path, const unsigned char key[32],
                        const wasmtime_module_t *mod) {
    wasm_byte_vec_t ser;
    wasmtime_error_t *e = wasmtime_module_serialize(mod, &ser);
    if (e) {
        char msg[256];
        sbx_error_text(e, msg, sizeof msg);
        realm_log(REALM_LOG_WARN, "sandbox", "cache: serialize: %s", msg);
        return;
    }
    unsigned char hdr[CW_HDR];
    memcpy(hdr, CW_MAGIC, 8);
    put_u64(hdr + 8, ser.size);
    memcpy(hdr + 16, key, 32);
    char tmp[4400];
    int fd = -1;
    if (sha256_parts(ser.data, ser.size, NULL, 0, hdr + 48) != 0) goto done;
    if (make_dirs(dir) != 0) {
        realm_log(REALM_LOG_WARN, "sandbox", "cache: cannot create %s: %s", dir, strerror(errno));
        goto done;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp%ld.%llx", path, (long)getpid(),
                 (unsigned long long)realm_now_ns()) >= (int)sizeof tmp)
        goto done;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) goto done;
    const unsigned char *parts[2] = {hdr, (const unsigned char *)ser.data};
    size_t lens[2] = {CW_HDR, ser.size};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t w = write(fd, parts[i] + off, lens[i] - off);
            if (w <= 0) {
                close(fd);
                unlink(tmp);
                fd = -1;
                goto done;
            }
            off += (size_t)w;
        }
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) unlink(tmp);
done:
    wasm_byte_vec_delete(&ser);
}

int sbx_cache_module(struct realm_sbx_host *h, const void *wasm, size_t len, const char *name,
                     wasmtime_module_t **out, bool *cached, struct realm_err *err) {
    unsigned char key[32];
    char path[4200];
    bool use_cache = h->cache_dir != NULL;
    if (use_cache && sha256_parts(wasm, len, h->config_key, strlen(h->config_key), key) != 0)
        use_cache = false;
    if (use_cache) {
        struct stat st;
        char k[65];
        hex(key, 32, k);
        snprintf(path, sizeof path, "%s/%s.cwasm", h->cache_dir, k);
        /* a directory others can write to could be fed a crafted file: skip the cache */
        if (stat(h->cache_dir, &st) == 0 && !private_to_us(&st)) {
            realm_log(REALM_LOG_WARN, "sandbox", "cache: %s is writable by others; not used",
                      h->cache_dir);
            use_cache = false;
        }
    }
    if (use_cache) {
        wasmtime_module_t *m = load_entry(h, path, key);
        if (m) {
            *out = m;
            *cached = true;
            return REALM_OK;
        }
    }
    wasmtime_module_t *m = NULL;
    wasmtime_error_t *e = wasmtime_module_new(h->engine, wasm, len, &m);
    if (e) {
        char msg[300];
        sbx_error_text(e, msg, sizeof msg);
        return realm_err_set(err, REALM_E_FORMAT, "sandbox: %s: not a valid module: %s", name, msg);
    }
    if (use_cache) store_entry(h->cache_dir, path, key, m);
    *out = m;
    *cached = false;
    return REALM_OK;
}
