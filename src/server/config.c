/*
 * config.c — the server configuration: defaults, the JSON file format (cJSON; docs/server.md),
 * programmatic building for the CLI, cross-checks, and `realm key add` (rewrites the file with
 * one more key hash, atomically).
 *
 * Thread rule: a config is built by one thread, then only read.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "realm/alloc.h"
#include "realm/sched.h" /* REALM_SCHED_MAX_WEIGHT */
#include "realm/server.h"
#include "realm/status.h"
#include "server/srv.h"

#define MAX_CONFIG_BYTES (16u << 20)

static char *dupstr(const char *s) {
    return realm_strndup(s, strlen(s));
}

int realm_server_config_new(struct realm_server_config **out) {
    struct realm_server_config *c = realm_calloc(1, sizeof *c);
    if (!c) return REALM_E_NOMEM;
    c->host = dupstr("127.0.0.1");
    if (!c->host) {
        realm_free(c);
        return REALM_E_NOMEM;
    }
    c->port = 8080;
    c->max_body_bytes = 4u << 20;
    c->max_inflight = 64;
    c->kv_memory_bytes = INT64_C(1) << 30;
    c->max_queue = 256;
    c->max_connections = 512;
    c->shutdown_grace_s = 10.0;
    c->metrics_public = false;
    c->max_connections_per_ip = 32;
    c->tenant_step_share = 1;
    c->contended_prefill_rows = 8;
    c->read_timeout_s = 30.0;
    c->stream_stall_s = 30.0;
    c->default_max_tokens = 2048;
    c->max_choices = 8;
    c->embed_max_inputs = 64;
    c->embed_max_tokens = 512;
    c->max_tenants = 1024;
    c->max_guest_bytes = 16u << 20;
    *out = c;
    return REALM_OK;
}

static void tenant_clear(struct realm_tenant_spec *t) {
    realm_free(t->id);
    for (size_t i = 0; i < t->n_keys; i++)
        realm_free(t->key_hashes[i]);
    realm_free(t->key_hashes);
    for (size_t i = 0; i < t->n_models; i++)
        realm_free(t->models[i]);
    realm_free(t->models);
    realm_free(t->guest);
}

void realm_server_config_free(struct realm_server_config *c) {
    if (!c) return;
    realm_free(c->host);
    realm_free(c->default_guest);
    realm_free(c->state_dir);
    for (size_t i = 0; i < c->n_admin_keys; i++)
        realm_free(c->admin_key_hashes[i]);
    realm_free(c->admin_key_hashes);
    for (size_t i = 0; i < c->n_models; i++) {
        realm_free(c->models[i].name);
        realm_free(c->models[i].path);
        realm_free(c->models[i].chat_template);
    }
    realm_free(c->models);
    for (size_t i = 0; i < c->n_tenants; i++)
        tenant_clear(&c->tenants[i]);
    realm_free(c->tenants);
    realm_free(c);
}

int realm_server_config_add_model(struct realm_server_config *c, const char *name, const char *path,
                                  int32_t n_ctx, struct realm_err *err) {
    if (!name[0] || !path[0])
        return realm_err_set(err, REALM_E_INVALID, "config: model: empty name or path");
    if (n_ctx < 0)
        return realm_err_set(err, REALM_E_INVALID, "config: model %s: n_ctx %d, expected >= 0",
                             name, n_ctx);
    for (size_t i = 0; i < c->n_models; i++)
        if (!strcmp(c->models[i].name, name))
            return realm_err_set(err, REALM_E_INVALID, "config: model %s: defined twice", name);
    struct realm_model_spec *m = realm_realloc(c->models, (c->n_models + 1) * sizeof *m);
    if (!m) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    c->models = m;
    char *n = dupstr(name), *p = dupstr(path);
    if (!n || !p) {
        realm_free(n);
        realm_free(p);
        return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    }
    m[c->n_models++] = (struct realm_model_spec){.name = n, .path = p, .n_ctx = n_ctx};
    return REALM_OK;
}

int realm_server_config_add_tenant(struct realm_server_config *c, const char *id,
                                   struct realm_tenant_spec **out, struct realm_err *err) {
    if (!id[0]) return realm_err_set(err, REALM_E_INVALID, "config: tenant: empty id");
    for (size_t i = 0; i < c->n_tenants; i++)
        if (!strcmp(c->tenants[i].id, id))
            return realm_err_set(err, REALM_E_INVALID, "config: tenant %s: defined twice", id);
    struct realm_tenant_spec *t = realm_realloc(c->tenants, (c->n_tenants + 1) * sizeof *t);
    if (!t) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    c->tenants = t;
    char *d = dupstr(id);
    if (!d) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    t[c->n_tenants] = (struct realm_tenant_spec){.id = d, .all_models = true};
    if (out) *out = &t[c->n_tenants];
    c->n_tenants++;
    return REALM_OK;
}

static int set_str(char **dst, const char *v) {
    char *d = dupstr(v);
    if (!d) return REALM_E_NOMEM;
    realm_free(*dst);
    *dst = d;
    return REALM_OK;
}

int realm_server_config_set_host(struct realm_server_config *c, const char *host) {
    return set_str(&c->host, host);
}

int realm_server_config_set_default_guest(struct realm_server_config *c, const char *path) {
    return set_str(&c->default_guest, path);
}

int realm_server_config_set_state_dir(struct realm_server_config *c, const char *dir) {
    return set_str(&c->state_dir, dir);
}

static bool is_hex64(const char *s) {
    unsigned char tmp[32];
    return srv_hex_decode32(s, tmp) == 0;
}

/* Appends a lower-cased copy of a (checked) hex digest to a list. */
static int append_hash(char ***list, size_t *n, const char *hex, struct realm_err *err) {
    char **k = realm_realloc(*list, (*n + 1) * sizeof *k);
    if (!k) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    *list = k;
    char *d = dupstr(hex);
    if (!d) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    k[(*n)++] = d;
    return REALM_OK;
}

int realm_tenant_add_key_hash(struct realm_tenant_spec *t, const char *hex, struct realm_err *err) {
    if (!is_hex64(hex))
        return realm_err_set(
            err, REALM_E_INVALID,
            "config: tenant %s: key hash '%.80s', expected 64 hex digits (SHA-256)", t->id, hex);
    return append_hash(&t->key_hashes, &t->n_keys, hex, err);
}

int realm_server_config_check(const struct realm_server_config *c, struct realm_err *err) {
    if (c->n_models == 0) return realm_err_set(err, REALM_E_INVALID, "config: no models");
    if (c->state_dir) {
        if (c->n_tenants)
            return realm_err_set(
                err, REALM_E_INVALID,
                "config: with a state directory tenants live in its registry; import the config's "
                "%zu tenant(s) with `realm admin import` and remove them from the config",
                c->n_tenants);
        if (c->n_admin_keys)
            return realm_err_set(
                err, REALM_E_INVALID,
                "config: with a state directory admin keys live in its registry; add them with "
                "`realm admin` and remove admin_key_hashes from the config");
        return REALM_OK;
    }
    if (c->n_tenants == 0) return realm_err_set(err, REALM_E_INVALID, "config: no tenants");
    for (size_t i = 0; i < c->n_tenants; i++) {
        const struct realm_tenant_spec *t = &c->tenants[i];
        if (t->n_keys == 0)
            return realm_err_set(err, REALM_E_INVALID,
                                 "config: tenant %s: no API key (add one with `realm key add %s`)",
                                 t->id, t->id);
        for (size_t j = 0; j < t->n_models; j++) {
            bool found = false;
            for (size_t k = 0; k < c->n_models; k++)
                found |= !strcmp(c->models[k].name, t->models[j]);
            if (!found)
                return realm_err_set(err, REALM_E_INVALID,
                                     "config: tenant %s: model '%s' is not configured", t->id,
                                     t->models[j]);
        }
    }
    return REALM_OK;
}

/* ---- JSON parsing ---- */

/* Resolves a path from the config: "~/" → $HOME, relative → base_dir. Returns owned or NULL. */
static char *resolve_path(const char *p, const char *base_dir) {
    char buf[PATH_MAX];
    int n;
    if (p[0] == '~' && p[1] == '/') {
        const char *home = getenv("HOME");
        n = snprintf(buf, sizeof buf, "%s/%s", home ? home : "", p + 2);
    } else if (p[0] != '/' && base_dir && base_dir[0]) {
        n = snprintf(buf, sizeof buf, "%s/%s", base_dir, p);
    } else {
        n = snprintf(buf, sizeof buf, "%s", p);
    }
    if (n < 0 || (size_t)n >= sizeof buf) return NULL;
    return dupstr(buf);
}

struct jctx {
    struct realm_err *err;
    const char *base_dir;
};

static bool key_known(const char *k, const char *const *known) {
    if (k[0] == '_') return true; /* "_comment" and friends */
    for (; *known; known++)
        if (!strcmp(k, *known)) return true;
    return false;
}

static int check_keys(const cJSON *obj, const char *what, const char *const *known,
                      struct realm_err *err) {
    for (const cJSON *it = obj->child; it; it = it->next)
        if (!key_known(it->string, known))
            return realm_err_set(err, REALM_E_FORMAT, "config: %s: unknown field '%s'", what,
                                 it->string);
    return REALM_OK;
}

/* Reads an integer field in [lo, hi] if present. */
static int get_int(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *what, struct realm_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return REALM_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return realm_err_set(err, REALM_E_FORMAT,
                             "config: %s.%s: expected an integer in [%lld, %lld]", what, key,
                             (long long)lo, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return REALM_OK;
}

static int get_string(const cJSON *obj, const char *key, const char **out, const char *what,
                      struct realm_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return REALM_OK;
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return realm_err_set(err, REALM_E_FORMAT, "config: %s.%s: expected a non-empty string",
                             what, key);
    *out = v->valuestring;
    return REALM_OK;
}

static int parse_models(struct realm_server_config *c, const cJSON *arr, struct jctx *x) {
    static const char *const known[] = {"name", "path", "n_ctx", "chat_template", "pooling", NULL};
    if (!cJSON_IsArray(arr))
        return realm_err_set(x->err, REALM_E_FORMAT, "config: models: expected an array");
    int i = 0;
    for (const cJSON *m = arr->child; m; m = m->next, i++) {
        char what[64];
        snprintf(what, sizeof what, "models[%d]", i);
        if (!cJSON_IsObject(m))
            return realm_err_set(x->err, REALM_E_FORMAT, "config: %s: expected an object", what);
        int rc = check_keys(m, what, known, x->err);
        const char *name = NULL, *path = NULL, *tpl = NULL, *pool = NULL;
        int64_t n_ctx = 0;
        if (rc || (rc = get_string(m, "name", &name, what, x->err)) ||
            (rc = get_string(m, "path", &path, what, x->err)) ||
            (rc = get_int(m, "n_ctx", 0, INT32_MAX, &n_ctx, what, x->err)) ||
            (rc = get_string(m, "chat_template", &tpl, what, x->err)) ||
            (rc = get_string(m, "pooling", &pool, what, x->err)))
            return rc;
        if (pool && strcmp(pool, "mean") && strcmp(pool, "last"))
            return realm_err_set(x->err, REALM_E_FORMAT,
                                 "config: %s.pooling: \"%.32s\", expected \"mean\" or \"last\"",
                                 what, pool);
        if (!name || !path)
            return realm_err_set(x->err, REALM_E_FORMAT, "config: %s: needs \"name\" and \"path\"",
                                 what);
        char *rp = resolve_path(path, x->base_dir);
        if (!rp) return realm_err_set(x->err, REALM_E_FORMAT, "config: %s.path: too long", what);
        rc = realm_server_config_add_model(c, name, rp, (int32_t)n_ctx, x->err);
        realm_free(rp);
        if (rc) return rc == REALM_E_INVALID ? REALM_E_FORMAT : rc;
        c->models[c->n_models - 1].pooling = pool && !strcmp(pool, "last") ? 1 : 0;
        if (tpl) {
            /* a family name has neither '/' nor '.'; anything else is a file, resolved as paths are
             */
            char *t = strpbrk(tpl, "/.") ? resolve_path(tpl, x->base_dir) : dupstr(tpl);
            if (!t)
                return realm_err_set(x->err, REALM_E_FORMAT, "config: %s.chat_template: too long",
                                     what);
            c->models[c->n_models - 1].chat_template = t;
        }
    }
    return REALM_OK;
}

int srv_config_parse_limits(struct realm_tenant_limits *l, const cJSON *o, const char *what,
                            struct realm_err *err) {
    static const char *const known[] = {
        "max_concurrent",   "tokens_per_minute", "max_tokens_per_request",
        "guest_memory_mb",  "kv_blocks",         "init_wall_ms",
        "generate_wall_ms", "host_memory_mb",    NULL};
    if (!cJSON_IsObject(o))
        return realm_err_set(err, REALM_E_FORMAT, "config: %s: expected an object", what);
    int64_t mc = l->max_concurrent, tpm = l->tokens_per_minute, mt = l->max_tokens_per_request,
            mem = l->guest_memory_bytes >> 20, kv = l->kv_blocks, iw = l->init_wall_ms,
            gw = l->generate_wall_ms, hm = l->host_memory_bytes >> 20;
    int rc;
    if ((rc = check_keys(o, what, known, err)) ||
        (rc = get_int(o, "max_concurrent", 0, 1 << 20, &mc, what, err)) ||
        (rc = get_int(o, "tokens_per_minute", 0, INT64_C(1) << 40, &tpm, what, err)) ||
        (rc = get_int(o, "max_tokens_per_request", 0, INT32_MAX, &mt, what, err)) ||
        (rc = get_int(o, "guest_memory_mb", 0, 4096, &mem, what, err)) ||
        (rc = get_int(o, "kv_blocks", 0, INT32_MAX, &kv, what, err)) ||
        (rc = get_int(o, "init_wall_ms", 0, INT64_C(24) * 3600 * 1000, &iw, what, err)) ||
        (rc = get_int(o, "generate_wall_ms", 0, INT64_C(24) * 3600 * 1000, &gw, what, err)) ||
        (rc = get_int(o, "host_memory_mb", 0, 1 << 20, &hm, what, err)))
        return rc;
    l->max_concurrent = (int32_t)mc;
    l->tokens_per_minute = tpm;
    l->max_tokens_per_request = (int32_t)mt;
    l->guest_memory_bytes = mem << 20;
    l->kv_blocks = (int32_t)kv;
    l->init_wall_ms = iw;
    l->generate_wall_ms = gw;
    l->host_memory_bytes = hm << 20;
    return REALM_OK;
}

static int parse_tenants(struct realm_server_config *c, const cJSON *arr, struct jctx *x) {
    static const char *const known[] = {"id",     "key_hashes", "models", "guest",
                                        "limits", "weight",     NULL};
    if (!cJSON_IsArray(arr))
        return realm_err_set(x->err, REALM_E_FORMAT, "config: tenants: expected an array");
    int i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        char what[96];
        snprintf(what, sizeof what, "tenants[%d]", i);
        if (!cJSON_IsObject(o))
            return realm_err_set(x->err, REALM_E_FORMAT, "config: %s: expected an object", what);
        int rc = check_keys(o, what, known, x->err);
        const char *id = NULL, *guest = NULL;
        if (rc || (rc = get_string(o, "id", &id, what, x->err)) ||
            (rc = get_string(o, "guest", &guest, what, x->err)))
            return rc;
        if (!id) return realm_err_set(x->err, REALM_E_FORMAT, "config: %s: needs an \"id\"", what);
        struct realm_tenant_spec *t;
        if ((rc = realm_server_config_add_tenant(c, id, &t, x->err)))
            return rc == REALM_E_INVALID ? REALM_E_FORMAT : rc;
        snprintf(what, sizeof what, "tenant %s", id);
        const cJSON *keys = cJSON_GetObjectItemCaseSensitive(o, "key_hashes");
        if (keys) {
            if (!cJSON_IsArray(keys))
                return realm_err_set(x->err, REALM_E_FORMAT,
                                     "config: %s: key_hashes: expected an array of strings", what);
            for (const cJSON *k = keys->child; k; k = k->next) {
                if (!cJSON_IsString(k))
                    return realm_err_set(x->err, REALM_E_FORMAT,
                                         "config: %s: key_hashes: expected strings", what);
                if ((rc = realm_tenant_add_key_hash(t, k->valuestring, x->err)))
                    return rc == REALM_E_INVALID ? REALM_E_FORMAT : rc;
            }
        }
        const cJSON *models = cJSON_GetObjectItemCaseSensitive(o, "models");
        if (models && !(cJSON_IsString(models) && !strcmp(models->valuestring, "*"))) {
            if (!cJSON_IsArray(models))
                return realm_err_set(x->err, REALM_E_FORMAT,
                                     "config: %s: models: expected \"*\" or an array of names",
                                     what);
            t->all_models = false;
            int n = cJSON_GetArraySize(models);
            if (n > 0 && !(t->models = realm_calloc((size_t)n, sizeof *t->models)))
                return realm_err_set(x->err, REALM_E_NOMEM, "config: out of memory");
            for (const cJSON *m = models->child; m; m = m->next) {
                if (!cJSON_IsString(m))
                    return realm_err_set(x->err, REALM_E_FORMAT,
                                         "config: %s: models: expected strings", what);
                if (!strcmp(m->valuestring, "*")) {
                    t->all_models = true;
                    continue;
                }
                if (!(t->models[t->n_models] = dupstr(m->valuestring)))
                    return realm_err_set(x->err, REALM_E_NOMEM, "config: out of memory");
                t->n_models++;
            }
        }
        if (guest && strcmp(guest, "default")) {
            if (!(t->guest = resolve_path(guest, x->base_dir)))
                return realm_err_set(x->err, REALM_E_FORMAT, "config: %s: guest: path too long",
                                     what);
        }
        const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
        if (lim && (rc = srv_config_parse_limits(&t->limits, lim, what, x->err))) return rc;
        int64_t weight = 1;
        if ((rc = get_int(o, "weight", 1, REALM_SCHED_MAX_WEIGHT, &weight, what, x->err)))
            return rc;
        t->weight = (int32_t)weight;
    }
    return REALM_OK;
}

/* A number of seconds in [lo, hi] if present. */
static int get_seconds(const cJSON *root, const char *key, double lo, double hi, double *out,
                       struct realm_err *err) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!g) return REALM_OK;
    if (!cJSON_IsNumber(g) || !(g->valuedouble >= lo && g->valuedouble <= hi))
        return realm_err_set(err, REALM_E_FORMAT,
                             "config: %s: expected a number of seconds in [%g, %g]", key, lo, hi);
    *out = g->valuedouble;
    return REALM_OK;
}

int realm_server_config_add_admin_key_hash(struct realm_server_config *c, const char *hex,
                                           struct realm_err *err) {
    if (!is_hex64(hex))
        return realm_err_set(err, REALM_E_INVALID,
                             "config: admin key hash '%.80s', expected 64 hex digits (SHA-256)",
                             hex);
    return append_hash(&c->admin_key_hashes, &c->n_admin_keys, hex, err);
}

static int parse_admin_keys(struct realm_server_config *c, const cJSON *keys,
                            struct realm_err *err) {
    if (!keys) return REALM_OK;
    if (!cJSON_IsArray(keys))
        return realm_err_set(err, REALM_E_FORMAT,
                             "config: admin_key_hashes: expected an array of strings");
    for (const cJSON *k = keys->child; k; k = k->next) {
        if (!cJSON_IsString(k))
            return realm_err_set(err, REALM_E_FORMAT, "config: admin_key_hashes: expected strings");
        int rc = realm_server_config_add_admin_key_hash(c, k->valuestring, err);
        if (rc) return rc == REALM_E_INVALID ? REALM_E_FORMAT : rc;
    }
    return REALM_OK;
}

bool realm_tenant_may_use(const struct realm_tenant_spec *t, const char *name) {
    if (t->all_models) return true;
    for (size_t i = 0; i < t->n_models; i++)
        if (!strcmp(t->models[i], name)) return true;
    return false;
}

int realm_server_config_parse(const char *json, size_t len, const char *base_dir,
                              struct realm_server_config **out, struct realm_err *err) {
    static const char *const known[] = {"host",
                                        "port",
                                        "max_body_bytes",
                                        "max_inflight",
                                        "max_queue",
                                        "max_connections",
                                        "shutdown_grace_s",
                                        "default_guest",
                                        "metrics_public",
                                        "models",
                                        "tenants",
                                        "kv_memory_mb",
                                        "admin_key_hashes",
                                        "max_connections_per_ip",
                                        "read_timeout_s",
                                        "stream_stall_s",
                                        "default_max_tokens",
                                        "tenant_step_share",
                                        "contended_prefill_rows",
                                        "prefill_reserve_rows",
                                        "max_active_sequences",
                                        "max_tenants",
                                        "max_guest_bytes",
                                        "max_choices",
                                        "embedding_max_inputs",
                                        "embedding_max_tokens",
                                        NULL};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t off = end && end >= json ? (size_t)(end - json) : 0;
        return realm_err_set(err, REALM_E_FORMAT, "config: invalid JSON near byte %zu", off);
    }
    struct realm_server_config *c = NULL;
    struct jctx x = {.err = err, .base_dir = base_dir};
    int rc = realm_server_config_new(&c);
    if (rc) {
        realm_err_set(err, rc, "config: out of memory");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = realm_err_set(err, REALM_E_FORMAT, "config: expected a JSON object at the top level");
        goto fail;
    }
    if ((rc = check_keys(root, "top level", known, err))) goto fail;
    const char *host = NULL, *dg = NULL;
    int64_t port = c->port, body = (int64_t)c->max_body_bytes, infl = c->max_inflight,
            q = c->max_queue, conns = c->max_connections, kvmb = c->kv_memory_bytes >> 20,
            per_ip = c->max_connections_per_ip, dmt = c->default_max_tokens,
            share = c->tenant_step_share, cpre = c->contended_prefill_rows, mten = c->max_tenants,
            pres = c->prefill_reserve_rows, mact = c->max_active_sequences,
            mgb = (int64_t)c->max_guest_bytes, mch = c->max_choices, emi = c->embed_max_inputs,
            emt = c->embed_max_tokens;
    if ((rc = get_string(root, "host", &host, "top level", err)) ||
        (rc = get_string(root, "default_guest", &dg, "top level", err)) ||
        (rc = get_int(root, "port", 0, 65535, &port, "top level", err)) ||
        (rc = get_int(root, "max_body_bytes", 1024, INT64_C(1) << 30, &body, "top level", err)) ||
        (rc = get_int(root, "max_inflight", 1, 4096, &infl, "top level", err)) ||
        (rc = get_int(root, "max_queue", 0, 1 << 20, &q, "top level", err)) ||
        (rc = get_int(root, "max_connections", 4, 65536, &conns, "top level", err)) ||
        (rc = get_int(root, "kv_memory_mb", 1, INT64_C(1) << 24, &kvmb, "top level", err)) ||
        (rc = get_int(root, "max_connections_per_ip", 1, 65536, &per_ip, "top level", err)) ||
        (rc = get_int(root, "default_max_tokens", 1, 1 << 30, &dmt, "top level", err)) ||
        (rc = get_int(root, "max_choices", 1, REALM_ABI_MAX_CHOICES, &mch, "top level", err)) ||
        (rc = get_int(root, "embedding_max_inputs", 1, 1 << 16, &emi, "top level", err)) ||
        (rc = get_int(root, "embedding_max_tokens", 1, 1 << 20, &emt, "top level", err)) ||
        (rc = get_int(root, "tenant_step_share", 0, 4096, &share, "top level", err)) ||
        (rc = get_int(root, "contended_prefill_rows", 0, 4096, &cpre, "top level", err)) ||
        (rc = get_int(root, "prefill_reserve_rows", -1, 4096, &pres, "top level", err)) ||
        (rc = get_int(root, "max_active_sequences", 0, 1 << 20, &mact, "top level", err)) ||
        (rc = get_int(root, "max_tenants", 1, 1 << 20, &mten, "top level", err)) ||
        (rc = get_int(root, "max_guest_bytes", 1024, INT64_C(256) << 20, &mgb, "top level", err)) ||
        (rc = get_seconds(root, "read_timeout_s", 1, 3600, &c->read_timeout_s, err)) ||
        (rc = get_seconds(root, "stream_stall_s", 1, 3600, &c->stream_stall_s, err)) ||
        (rc = get_seconds(root, "shutdown_grace_s", 0, 3600, &c->shutdown_grace_s, err)) ||
        (rc = parse_admin_keys(c, cJSON_GetObjectItemCaseSensitive(root, "admin_key_hashes"), err)))
        goto fail;
    c->max_connections_per_ip = (int32_t)per_ip;
    c->default_max_tokens = (int32_t)dmt;
    c->max_choices = (int32_t)mch;
    c->embed_max_inputs = (int32_t)emi;
    c->embed_max_tokens = (int32_t)emt;
    c->tenant_step_share = (int32_t)share;
    c->contended_prefill_rows = (int32_t)cpre;
    c->prefill_reserve_rows = (int32_t)pres;
    c->max_active_sequences = (int32_t)mact;
    c->max_tenants = (int32_t)mten;
    c->max_guest_bytes = (size_t)mgb;
    c->kv_memory_bytes = kvmb << 20;
    c->port = (uint16_t)port;
    c->max_body_bytes = (size_t)body;
    c->max_inflight = (int32_t)infl;
    c->max_queue = (int32_t)q;
    c->max_connections = (int32_t)conns;
    if (host) {
        char *h = dupstr(host);
        if (!h) {
            rc = realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
            goto fail;
        }
        realm_free(c->host);
        c->host = h;
    }
    if (dg && !(c->default_guest = resolve_path(dg, base_dir))) {
        rc = realm_err_set(err, REALM_E_FORMAT, "config: default_guest: path too long");
        goto fail;
    }
    const cJSON *mp = cJSON_GetObjectItemCaseSensitive(root, "metrics_public");
    if (mp) {
        if (!cJSON_IsBool(mp)) {
            rc = realm_err_set(err, REALM_E_FORMAT,
                               "config: metrics_public: expected true or false");
            goto fail;
        }
        c->metrics_public = cJSON_IsTrue(mp);
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (models && (rc = parse_models(c, models, &x))) goto fail;
    const cJSON *tenants = cJSON_GetObjectItemCaseSensitive(root, "tenants");
    if (tenants && (rc = parse_tenants(c, tenants, &x))) goto fail;
    cJSON_Delete(root);
    *out = c;
    return REALM_OK;
fail:
    cJSON_Delete(root);
    realm_server_config_free(c);
    return rc;
}

/* Reads a whole file (at most MAX_CONFIG_BYTES) into a realm_malloc'd buffer. */
static int read_file(const char *path, char **out, size_t *len, struct realm_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return realm_err_set(err, REALM_E_IO, "config: %s: cannot open: %s", path, strerror(errno));
    struct realm_buf b = {0};
    char chunk[65536];
    size_t n;
    int rc = REALM_OK;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > MAX_CONFIG_BYTES) {
            rc = realm_err_set(err, REALM_E_FORMAT, "config: %s: larger than %u bytes", path,
                               MAX_CONFIG_BYTES);
            break;
        }
        if (realm_buf_append(&b, chunk, n)) {
            rc = realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
            break;
        }
    }
    if (!rc && ferror(f)) rc = realm_err_set(err, REALM_E_IO, "config: %s: read error", path);
    fclose(f);
    if (rc) {
        realm_buf_free(&b);
        return rc;
    }
    if (!b.data && realm_buf_append(&b, "", 0))
        return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    *out = b.data;
    *len = b.len;
    return REALM_OK;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return dupstr(".");
    if (slash == path) return dupstr("/");
    return realm_strndup(path, (size_t)(slash - path));
}

int realm_server_config_load(const char *path, struct realm_server_config **out,
                             struct realm_err *err) {
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len, err);
    if (rc) return rc;
    char *dir = dir_of(path);
    if (!dir) {
        realm_free(text);
        return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    }
    rc = realm_server_config_parse(text, len, dir, out, err);
    if (rc && err && strncmp(err->msg, "config: ", 8) == 0) {
        char tmp[REALM_ERR_MSG_MAX];
        snprintf(tmp, sizeof tmp, "%s", err->msg + 8);
        realm_err_set(err, rc, "config %s: %s", path, tmp);
    }
    realm_free(dir);
    realm_free(text);
    return rc;
}

/* ---- realm key add ---- */

static int write_atomic(const char *path, const char *text, struct realm_err *err) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return realm_err_set(err, REALM_E_IO, "config: %s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return realm_err_set(err, REALM_E_IO, "config: %s: cannot create a temporary file: %s",
                             path, strerror(errno));
    size_t len = strlen(text), off = 0;
    int rc = REALM_OK;
    if (fchmod(fd, 0600) != 0)
        rc = realm_err_set(err, REALM_E_IO, "config: %s: chmod: %s", tmp, strerror(errno));
    while (!rc && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            rc = realm_err_set(err, REALM_E_IO, "config: %s: write: %s", tmp, strerror(errno));
        else
            off += (size_t)w;
    }
    if (!rc && fsync(fd) != 0)
        rc = realm_err_set(err, REALM_E_IO, "config: %s: fsync: %s", tmp, strerror(errno));
    if (close(fd) != 0 && !rc)
        rc = realm_err_set(err, REALM_E_IO, "config: %s: close: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = realm_err_set(err, REALM_E_IO, "config: %s: rename: %s", path, strerror(errno));
    if (rc) unlink(tmp);
    return rc;
}

int realm_config_add_key(const char *path, const char *tenant_id, char *key_out, size_t cap,
                         bool *created, struct realm_err *err) {
    if (cap <= REALM_KEY_LEN)
        return realm_err_set(err, REALM_E_TOO_SMALL, "key: output buffer too small");
    if (!tenant_id[0]) return realm_err_set(err, REALM_E_INVALID, "key: empty tenant id");
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    int rc;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) {
        root = cJSON_CreateObject(); /* a new config with just this tenant */
    } else {
        if ((rc = read_file(path, &text, &len, err))) return rc;
        root = cJSON_ParseWithLength(text, len);
        realm_free(text);
        if (!root || !cJSON_IsObject(root)) {
            cJSON_Delete(root);
            return realm_err_set(err, REALM_E_FORMAT, "config: %s: not a JSON object", path);
        }
    }
    if (!root) return realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
    /* validate the file as a config first: never rewrite something we would refuse to serve */
    char *dir = dir_of(path);
    char *printed = cJSON_PrintUnformatted(root);
    struct realm_server_config *chk = NULL;
    rc = dir && printed ? realm_server_config_parse(printed, strlen(printed), dir, &chk, err)
                        : REALM_E_NOMEM;
    realm_server_config_free(chk);
    cJSON_free(printed);
    realm_free(dir);
    if (rc) goto done;

    cJSON *tenants = cJSON_GetObjectItemCaseSensitive(root, "tenants");
    if (!tenants) tenants = cJSON_AddArrayToObject(root, "tenants");
    cJSON *t = NULL;
    for (cJSON *it = tenants ? tenants->child : NULL; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsString(id) && !strcmp(id->valuestring, tenant_id)) t = it;
    }
    *created = t == NULL;
    if (!t) {
        t = cJSON_CreateObject();
        if (!t || !cJSON_AddStringToObject(t, "id", tenant_id) ||
            !cJSON_AddStringToObject(t, "models", "*") ||
            !cJSON_AddStringToObject(t, "guest", "default") || !cJSON_AddItemToArray(tenants, t)) {
            cJSON_Delete(t);
            rc = realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
            goto done;
        }
    }
    cJSON *keys = cJSON_GetObjectItemCaseSensitive(t, "key_hashes");
    if (!keys) keys = cJSON_AddArrayToObject(t, "key_hashes");
    char key[REALM_KEY_LEN + 1], hex[REALM_KEY_HASH_HEX + 1];
    if ((rc = realm_key_generate(key, sizeof key))) {
        realm_err_set(err, rc, "key: no random bytes available");
        goto done;
    }
    realm_key_hash(key, strlen(key), hex);
    cJSON *h = cJSON_CreateString(hex);
    if (!keys || !h || !cJSON_AddItemToArray(keys, h)) {
        cJSON_Delete(h);
        rc = realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
        goto done;
    }
    char *out_text = cJSON_Print(root);
    if (!out_text) {
        rc = realm_err_set(err, REALM_E_NOMEM, "config: out of memory");
        goto done;
    }
    struct realm_buf b = {0};
    rc = realm_buf_puts(&b, out_text) || realm_buf_puts(&b, "\n") ? REALM_E_NOMEM : REALM_OK;
    cJSON_free(out_text);
    if (!rc)
        rc = write_atomic(path, b.data, err);
    else
        realm_err_set(err, rc, "config: out of memory");
    realm_buf_free(&b);
    if (!rc) memcpy(key_out, key, REALM_KEY_LEN + 1);
    memset(key, 0, sizeof key);
done:
    cJSON_Delete(root);
    return rc;
}
