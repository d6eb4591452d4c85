/*
 * module.c — a guest binary: compiled (or loaded from the disk cache), its imports and exports
 * checked against ABI v1, and pre-linked once (wasmtime_instance_pre_t) so that each tenant's
 * instantiation is only the per-store work.
 *
 * Owns: the Wasmtime module and instance_pre (tenants hold their own references).
 * Thread rule: immutable after creation; thread-safe.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "realm/alloc.h"
#include "sandbox/sandbox.h"
#include "sandbox/wasi_nn.h"

struct want_export {
    const char *name;
    const char *sig; /* params ':' results, i = i32, I = i64; NULL: a memory */
    bool required;
};

static const struct want_export g_exports[] = {
    {"memory", NULL, true},      {"realm_abi_version", ":i", true}, {"realm_alloc", "i:i", true},
    {"realm_free", "i:", true},  {"realm_init", ":i", true},        {"realm_generate", ":i", true},
    {"_initialize", ":", false},
};

static char kind_char(wasm_valkind_t k) {
    switch (k) {
    case WASM_I32:
        return 'i';
    case WASM_I64:
        return 'I';
    case WASM_F32:
        return 'f';
    case WASM_F64:
        return 'F';
    default:
        return '?';
    }
}

void sbx_functype_sig(const wasm_functype_t *ft, char *buf, size_t cap) {
    const wasm_valtype_vec_t *p = wasm_functype_params(ft), *r = wasm_functype_results(ft);
    size_t n = 0;
    for (size_t i = 0; i < p->size && n + 2 < cap; i++)
        buf[n++] = kind_char(wasm_valtype_kind(p->data[i]));
    if (n + 1 < cap) buf[n++] = ':';
    for (size_t i = 0; i < r->size && n + 2 < cap; i++)
        buf[n++] = kind_char(wasm_valtype_kind(r->data[i]));
    buf[n < cap ? n : cap - 1] = 0;
}

static int check_exports(const wasmtime_module_t *m, const char *name, bool *has_init,
                         struct realm_err *err) {
    wasm_exporttype_vec_t ex;
    wasmtime_module_exports(m, &ex);
    int rc = REALM_OK;
    bool seen[sizeof g_exports / sizeof g_exports[0]] = {0};
    for (size_t i = 0; i < ex.size && rc == REALM_OK; i++) {
        const wasm_name_t *en = wasm_exporttype_name(ex.data[i]);
        const wasm_externtype_t *et = wasm_exporttype_type(ex.data[i]);
        for (size_t k = 0; k < sizeof g_exports / sizeof g_exports[0]; k++) {
            const struct want_export *w = &g_exports[k];
            if (en->size != strlen(w->name) || memcmp(en->data, w->name, en->size)) continue;
            seen[k] = true;
            if (!w->sig) {
                const wasm_memorytype_t *mt = wasm_externtype_as_memorytype_const(et);
                if (wasm_externtype_kind(et) != WASM_EXTERN_MEMORY || !mt ||
                    wasmtime_memorytype_is64(mt) || wasmtime_memorytype_isshared(mt))
                    rc = realm_err_set(err, REALM_E_FORMAT,
                                       "sandbox: %s: export memory: not a 32-bit unshared memory",
                                       name);
                break;
            }
            char sig[32] = "?";
            if (wasm_externtype_kind(et) == WASM_EXTERN_FUNC)
                sbx_functype_sig(wasm_externtype_as_functype_const(et), sig, sizeof sig);
            if (strcmp(sig, w->sig) != 0)
                rc = realm_err_set(err, REALM_E_FORMAT,
                                   "sandbox: %s: export %s: type %s, expected %s", name, w->name,
                                   sig, w->sig);
            break;
        }
    }
    for (size_t k = 0; k < sizeof g_exports / sizeof g_exports[0] && rc == REALM_OK; k++)
        if (g_exports[k].required && !seen[k])
            rc = realm_err_set(err, REALM_E_FORMAT, "sandbox: %s: missing export %s", name,
                               g_exports[k].name);
    *has_init = seen[sizeof g_exports / sizeof g_exports[0] - 1];
    wasm_exporttype_vec_delete(&ex);
    return rc;
}

int realm_sbx_module_new(struct realm_sbx_host *h, const void *wasm, size_t len, const char *name,
                         struct realm_sbx_module **out, struct realm_err *err) {
    if (!name) name = "guest";
    struct realm_sbx_module *m = realm_calloc(1, sizeof *m);
    if (!m) return realm_err_set(err, REALM_E_NOMEM, "sandbox: module: out of memory");
    m->host = h;
    atomic_init(&m->refs, 1);
    snprintf(m->name, sizeof m->name, "%s", name);
    int rc = sbx_cache_module(h, wasm, len, m->name, &m->module, &m->cached, err);
    if (rc) goto fail;
    /* the guest kind: a WASI command (wasi-nn apps) or a realm ABI guest */
    m->command = sbx_command_detect(m->module);
    if (m->command ? (rc = sbx_command_check(m->module, m->name, err)) != REALM_OK
                   : ((rc = sbx_check_imports(m->module, m->name, err)) ||
                      (rc = check_exports(m->module, m->name, &m->has_initialize, err))))
        goto fail;
    wasmtime_error_t *e = wasmtime_linker_instantiate_pre(h->linker, m->module, &m->pre);
    if (e) {
        char msg[300];
        sbx_error_text(e, msg, sizeof msg);
        rc = realm_err_set(err, REALM_E_FORMAT, "sandbox: %s: cannot link: %s", m->name, msg);
        goto fail;
    }
    *out = m;
    return REALM_OK;
fail:
    sbx_module_unref(m);
    return rc;
}

int realm_sbx_module_load(struct realm_sbx_host *h, const char *path, struct realm_sbx_module **out,
                          struct realm_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return realm_err_set(err, REALM_E_IO, "sandbox: %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        st.st_size > (1 << 28)) {
        fclose(f);
        return realm_err_set(err, REALM_E_IO, "sandbox: %s: not a regular file of 1 B..256 MiB",
                             path);
    }
    unsigned char *buf = realm_malloc((size_t)st.st_size);
    if (!buf) {
        fclose(f);
        return realm_err_set(err, REALM_E_NOMEM, "sandbox: %s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        realm_free(buf);
        return realm_err_set(err, REALM_E_IO, "sandbox: %s: short read", path);
    }
    const char *base = strrchr(path, '/');
    int rc = realm_sbx_module_new(h, buf, got, base ? base + 1 : path, out, err);
    realm_free(buf);
    return rc;
}

bool realm_sbx_module_cached(const struct realm_sbx_module *m) {
    return m->cached;
}

bool realm_sbx_module_is_command(const struct realm_sbx_module *m) {
    return m->command;
}

void realm_sbx_module_free(struct realm_sbx_module *m) {
    if (m) sbx_module_unref(m);
}

void sbx_module_unref(struct realm_sbx_module *m) {
    if (atomic_fetch_sub(&m->refs, 1) != 1) return;
    if (m->pre) wasmtime_instance_pre_delete(m->pre);
    if (m->module) wasmtime_module_delete(m->module);
    realm_free(m);
}
