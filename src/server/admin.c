/*
 * admin.c — the admin API and guest deployment of state mode (docs/server.md "Admin API").
 *
 *   admin key:  GET|POST /admin/v1/tenants, GET|PATCH|DELETE /admin/v1/tenants/{id},
 *               GET|POST /admin/v1/tenants/{id}/keys, DELETE /admin/v1/tenants/{id}/keys/{label},
 *               GET|PUT /admin/v1/tenants/{id}/guest, POST /admin/v1/tenants/{id}/guest/rollback,
 *               GET /admin/v1/usage[?tenant=&since=&until=&format=csv]
 *   tenant key: GET|PUT /v1/guest, POST /v1/guest/rollback (its own guest)
 *
 * Every change goes to the registry, which makes it durable before it returns; the tenant slots
 * are then synced at once (srv_state_sync), so the change holds for the next request. A guest
 * upload is compiled and started in a scratch instance with the tenant's limits (its realm_init
 * runs within its init budget) before it is stored and activated: a broken upload gets a 400 with
 * the guest's own message and the tenant keeps serving with its current guest.
 *
 * Thread rule: any connection thread; the registry and the sync serialise what must be.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/registry.h"
#include "realm/status.h"
#include "server/srv.h"

#define ID_MAX REALM_REG_NAME_MAX

/* ---- errors ---- */

/* The HTTP answer for a registry (or sync) failure, with its message. */
static int reg_error(struct srv_error *e, int rc, const struct realm_err *err) {
    const char *msg = err && err->msg[0] ? err->msg : realm_strerror(rc);
    switch (rc) {
    case REALM_E_NOT_FOUND:
        return srv_error_set(e, 404, "invalid_request_error", "not_found", NULL, "%s", msg);
    case REALM_E_STATE:
        return srv_error_set(e, 409, "invalid_request_error", "conflict", NULL, "%s", msg);
    case REALM_E_INVALID:
    case REALM_E_FORMAT:
    case REALM_E_TOO_SMALL:
        return srv_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "%s", msg);
    case REALM_E_LIMIT:
        return srv_error_set(e, 429, "invalid_request_error", "limit_exceeded", NULL, "%s", msg);
    case REALM_E_NOMEM:
        return srv_error_set(e, 500, "server_error", "out_of_memory", NULL, "%s", msg);
    default: {
        int r = srv_error_set(e, 503, "server_error", "registry_unavailable", NULL,
                              "The registry failed: %s", msg);
        e->retry_after = 1;
        return r;
    }
    }
}

static int bad(struct srv_error *e, const char *param, const char *msg) {
    return srv_error_set(e, 400, "invalid_request_error", "invalid_value", param, "%s", msg);
}

/* Syncs the slots after a change; the change itself is durable whatever happens here. */
static void sync_after(struct realm_server *s) {
    struct realm_err err;
    realm_err_clear(&err);
    if (srv_state_sync(s, &err))
        realm_log(REALM_LOG_WARN, "server", "admin: after a change: %s", err.msg);
}

/* ---- JSON writers ---- */

static int limits_json(struct realm_buf *b, const struct realm_tenant_limits *l) {
    return realm_buf_printf(
        b,
        "{\"max_concurrent\":%d,\"tokens_per_minute\":%lld,\"max_tokens_per_request\":%d,"
        "\"guest_memory_mb\":%lld,\"kv_blocks\":%d,\"init_wall_ms\":%lld,"
        "\"generate_wall_ms\":%lld,\"host_memory_mb\":%lld}",
        l->max_concurrent, (long long)l->tokens_per_minute, l->max_tokens_per_request,
        (long long)(l->guest_memory_bytes >> 20), l->kv_blocks, (long long)l->init_wall_ms,
        (long long)l->generate_wall_ms, (long long)(l->host_memory_bytes >> 20));
}

static int guest_json(struct realm_buf *b, const struct realm_reg_guest *g) {
    return realm_buf_printf(
        b,
        "{\"object\":\"guest.version\",\"version\":%lld,\"sha256\":\"%s\",\"size\":%lld,"
        "\"created_at\":%lld,\"active\":%s}",
        (long long)g->version, g->sha256, (long long)g->size, (long long)g->created_at,
        g->active ? "true" : "false");
}

static int tenant_json(struct realm_buf *b, struct realm_registry *reg,
                       const struct realm_reg_tenant *t) {
    int rc = realm_buf_puts(b, "{\"object\":\"tenant\",\"id\":") ||
             realm_buf_json_string(b, t->id, strlen(t->id)) || realm_buf_puts(b, ",\"models\":");
    if (t->all_models)
        rc = rc || realm_buf_puts(b, "\"*\"");
    else {
        rc = rc || realm_buf_puts(b, "[");
        for (size_t i = 0; i < t->n_models && !rc; i++)
            rc = (i && realm_buf_puts(b, ",")) ||
                 realm_buf_json_string(b, t->models[i], strlen(t->models[i]));
        rc = rc || realm_buf_puts(b, "]");
    }
    rc = rc || realm_buf_puts(b, ",\"limits\":") || limits_json(b, &t->limits) ||
         realm_buf_printf(b, ",\"created_at\":%lld,\"guest\":", (long long)t->created_at);
    struct realm_reg_guest g;
    if (realm_registry_guest_active(reg, t->id, &g, NULL) == REALM_OK)
        rc = rc || guest_json(b, &g);
    else
        rc = rc || realm_buf_puts(b, "null");
    return rc || realm_buf_puts(b, "}");
}

/* ---- request bodies ---- */

static cJSON *parse_object(const char *body, size_t len, struct srv_error *e) {
    if (len == 0) {
        cJSON *o = cJSON_CreateObject();
        if (!o) srv_error_set(e, 500, "server_error", "out_of_memory", NULL, "Out of memory.");
        return o;
    }
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        srv_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                      "The body must be a JSON object.");
        return NULL;
    }
    return o;
}

/* Rejects fields other than known[] (a typo must not pass silently). */
static int only_known(const cJSON *o, const char *const *known, struct srv_error *e) {
    for (const cJSON *it = o->child; it; it = it->next) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = !strcmp(it->string, *k);
        if (!ok)
            return srv_error_set(e, 400, "invalid_request_error", "unknown_parameter", it->string,
                                 "Unrecognized request argument supplied: %.100s", it->string);
    }
    return 0;
}

/* Reads "models" ("*" or an array of configured model names) and "limits" (merged into t's)
 * from o into t. The strings in t->models point into o. */
static int read_tenant_fields(struct realm_server *s, const cJSON *o, struct realm_reg_tenant *t,
                              const char **names, size_t cap, struct srv_error *e) {
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(o, "models");
    if (models) {
        if (cJSON_IsString(models) && !strcmp(models->valuestring, "*")) {
            t->all_models = true;
            t->n_models = 0;
        } else if (cJSON_IsArray(models)) {
            t->all_models = false;
            t->n_models = 0;
            for (const cJSON *m = models->child; m; m = m->next) {
                if (!cJSON_IsString(m))
                    return bad(e, "models", "'models' must be \"*\" or an array of model names.");
                bool configured = false;
                for (size_t k = 0; k < s->cfg->n_models && !configured; k++)
                    configured = !strcmp(s->cfg->models[k].name, m->valuestring);
                if (!configured)
                    return srv_error_set(e, 400, "invalid_request_error", "model_not_found",
                                         "models", "The model '%.100s' is not served here.",
                                         m->valuestring);
                if (t->n_models == cap) return bad(e, "models", "Too many models.");
                names[t->n_models++] = m->valuestring;
            }
            t->models = (char **)names;
        } else {
            return bad(e, "models", "'models' must be \"*\" or an array of model names.");
        }
    }
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
    if (lim) {
        struct realm_err err;
        realm_err_clear(&err);
        if (srv_config_parse_limits(&t->limits, lim, "limits", &err))
            return bad(e, "limits", err.msg);
        if ((uint64_t)t->limits.guest_memory_bytes > srv_backend_guest_memory_cap(s->backend))
            return srv_error_set(
                e, 400, "invalid_request_error", "invalid_value", "limits",
                "guest_memory_mb %lld is above this server's largest guest memory (%llu MiB).",
                (long long)(t->limits.guest_memory_bytes >> 20),
                (unsigned long long)(srv_backend_guest_memory_cap(s->backend) >> 20));
    }
    return 0;
}

/* ---- tenants ---- */

static int tenants_list(struct realm_server *s, struct realm_buf *out, struct srv_error *e) {
    struct realm_registry *reg = srv_state_registry(s);
    struct realm_reg_tenant *ts = NULL;
    size_t n = 0;
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_tenant_list(reg, &ts, &n, &err);
    if (rc) return reg_error(e, rc, &err);
    int w = realm_buf_puts(out, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n && !w; i++)
        w = (i && realm_buf_puts(out, ",")) || tenant_json(out, reg, &ts[i]);
    w = w || realm_buf_puts(out, "]}");
    realm_reg_tenants_free(ts, n);
    return w ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
}

static int tenant_get(struct realm_server *s, const char *id, struct realm_buf *out,
                      struct srv_error *e) {
    struct realm_registry *reg = srv_state_registry(s);
    struct realm_reg_tenant t = {0};
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_tenant_get(reg, id, &t, &err);
    if (rc) return reg_error(e, rc, &err);
    int w = tenant_json(out, reg, &t);
    realm_reg_tenant_clear(&t);
    return w ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
}

static int tenant_create(struct realm_server *s, const char *body, size_t len,
                         struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"id", "models", "limits", NULL};
    cJSON *o = parse_object(body, len, e);
    if (!o) return -1;
    const char *names[256];
    struct realm_reg_tenant t = {.all_models = true};
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    int status = -1;
    if (only_known(o, known, e)) goto done;
    if (!cJSON_IsString(id) || !id->valuestring[0]) {
        bad(e, "id", "'id' (a non-empty string) is required.");
        goto done;
    }
    t.id = id->valuestring;
    if (read_tenant_fields(s, o, &t, names, 256, e)) goto done;
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_tenant_create(srv_state_registry(s), &t, &err);
    if (rc) {
        reg_error(e, rc, &err);
        goto done;
    }
    sync_after(s);
    status = tenant_get(s, t.id, out, e) == 200 ? 201 : -1;
done:
    cJSON_Delete(o);
    return status;
}

static int tenant_update(struct realm_server *s, const char *id, const char *body, size_t len,
                         struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"models", "limits", NULL};
    struct realm_registry *reg = srv_state_registry(s);
    cJSON *o = parse_object(body, len, e);
    if (!o) return -1;
    const char *names[256];
    struct realm_reg_tenant cur = {0};
    struct realm_err err;
    realm_err_clear(&err);
    int status = -1, rc;
    if (only_known(o, known, e)) goto done;
    if ((rc = realm_registry_tenant_get(reg, id, &cur, &err))) {
        reg_error(e, rc, &err);
        goto done;
    }
    /* fields not given keep their values: a copy of the current record, then the body over it */
    struct realm_reg_tenant t = cur;
    if (read_tenant_fields(s, o, &t, names, 256, e)) goto done;
    if ((rc = realm_registry_tenant_update(reg, &t, &err))) {
        reg_error(e, rc, &err);
        goto done;
    }
    sync_after(s);
    status = tenant_get(s, id, out, e);
done:
    realm_reg_tenant_clear(&cur);
    cJSON_Delete(o);
    return status;
}

static int tenant_delete(struct realm_server *s, const char *id, struct realm_buf *out,
                         struct srv_error *e) {
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_tenant_delete(srv_state_registry(s), id, &err);
    if (rc) return reg_error(e, rc, &err);
    sync_after(s);
    if (realm_buf_puts(out, "{\"object\":\"tenant\",\"id\":") ||
        realm_buf_json_string(out, id, strlen(id)) || realm_buf_puts(out, ",\"deleted\":true}"))
        return reg_error(e, REALM_E_NOMEM, NULL);
    return 200;
}

/* ---- keys ---- */

static int key_json(struct realm_buf *b, const struct realm_reg_key *k) {
    return realm_buf_puts(b, "{\"object\":\"api_key\",\"label\":") ||
           realm_buf_json_string(b, k->label, strlen(k->label)) ||
           realm_buf_puts(b, ",\"prefix\":") ||
           (k->prefix ? realm_buf_json_string(b, k->prefix, strlen(k->prefix))
                      : realm_buf_puts(b, "null")) ||
           realm_buf_printf(b, ",\"created_at\":%lld,\"last_used_at\":%lld}",
                            (long long)k->created_at, (long long)k->last_used_at);
}

static int keys_list(struct realm_server *s, const char *id, struct realm_buf *out,
                     struct srv_error *e) {
    struct realm_registry *reg = srv_state_registry(s);
    struct realm_reg_tenant t = {0};
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_tenant_get(reg, id, &t,
                                       &err); /* 404 for an unknown tenant, not an empty list */
    realm_reg_tenant_clear(&t);
    if (rc) return reg_error(e, rc, &err);
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    if ((rc = realm_registry_key_list(reg, id, &ks, &n, &err))) return reg_error(e, rc, &err);
    int w = realm_buf_puts(out, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n && !w; i++)
        w = (i && realm_buf_puts(out, ",")) || key_json(out, &ks[i]);
    w = w || realm_buf_puts(out, "]}");
    realm_reg_keys_free(ks, n);
    return w ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
}

static int key_add(struct realm_server *s, const char *id, const char *body, size_t len,
                   struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"label", NULL};
    cJSON *o = parse_object(body, len, e);
    if (!o) return -1;
    int status = -1;
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(o, "label");
    char key[REALM_KEY_LEN + 1];
    if (only_known(o, known, e)) goto done;
    if (label && !cJSON_IsString(label)) {
        bad(e, "label", "'label' must be a string.");
        goto done;
    }
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_key_add(srv_state_registry(s), id, label ? label->valuestring : NULL,
                                    key, sizeof key, &err);
    if (rc) {
        reg_error(e, rc, &err);
        goto done;
    }
    /* the one time the secret leaves the server: the label tells it apart later */
    struct realm_reg_key *ks = NULL;
    size_t n = 0;
    char hash[REALM_KEY_HASH_HEX + 1];
    realm_key_hash(key, strlen(key), hash);
    int w = realm_buf_puts(out, "{\"object\":\"api_key\",\"key\":\"") || realm_buf_puts(out, key) ||
            realm_buf_puts(out, "\",\"tenant\":") || realm_buf_json_string(out, id, strlen(id));
    if (!w && realm_registry_key_list(srv_state_registry(s), id, &ks, &n, NULL) == REALM_OK)
        for (size_t i = 0; i < n && !w; i++)
            if (!strcmp(ks[i].hash, hash))
                w = realm_buf_puts(out, ",\"label\":") ||
                    realm_buf_json_string(out, ks[i].label, strlen(ks[i].label));
    w = w || realm_buf_puts(out, "}");
    realm_reg_keys_free(ks, n);
    memset(key, 0, sizeof key);
    status = w ? reg_error(e, REALM_E_NOMEM, NULL) : 201;
done:
    cJSON_Delete(o);
    return status;
}

static int key_revoke(struct realm_server *s, const char *id, const char *label,
                      struct realm_buf *out, struct srv_error *e) {
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_key_revoke(srv_state_registry(s), id, label, &err);
    if (rc) return reg_error(e, rc, &err);
    if (realm_buf_puts(out, "{\"object\":\"api_key\",\"label\":") ||
        realm_buf_json_string(out, label, strlen(label)) ||
        realm_buf_puts(out, ",\"revoked\":true}"))
        return reg_error(e, REALM_E_NOMEM, NULL);
    return 200;
}

/* ---- guests ---- */

static struct srv_tenant *live_slot(struct realm_server *s, const char *id) {
    size_t n = atomic_load(&s->n_tenants);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(atomic_load(&s->tenants[i].spec)->id, id) &&
            !atomic_load(&s->tenants[i].removed))
            return &s->tenants[i];
    return NULL;
}

static int guests_list(struct realm_server *s, const char *id, struct realm_buf *out,
                       struct srv_error *e) {
    struct realm_reg_guest *gs = NULL;
    size_t n = 0;
    struct realm_err err;
    realm_err_clear(&err);
    int rc = realm_registry_guest_list(srv_state_registry(s), id, &gs, &n, &err);
    if (rc) return reg_error(e, rc, &err);
    int w = realm_buf_puts(out, "{\"object\":\"list\",\"tenant\":") ||
            realm_buf_json_string(out, id, strlen(id)) || realm_buf_puts(out, ",\"data\":[");
    for (size_t i = 0; i < n && !w; i++)
        w = (i && realm_buf_puts(out, ",")) || guest_json(out, &gs[i]);
    w = w || realm_buf_puts(out, "]}");
    realm_free(gs);
    return w ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
}

static int guest_deploy(struct realm_server *s, const char *id, const char *body, size_t len,
                        struct realm_buf *out, struct srv_error *e) {
    sync_after(s); /* a tenant created a moment ago by another process */
    struct srv_tenant *t = live_slot(s, id);
    if (!t)
        return srv_error_set(e, 404, "invalid_request_error", "not_found", NULL,
                             "No tenant '%.128s'.", id);
    if (len == 0) return bad(e, NULL, "The body must be the guest's WebAssembly module.");
    char msg[REALM_ERR_MSG_MAX];
    int rc = srv_backend_guest_check(s->backend, t->index, body, len, msg, sizeof msg);
    if (rc) {
        realm_log(REALM_LOG_INFO, "server", "tenant %s: guest upload refused: %s", id, msg);
        return srv_error_set(e, 400, "invalid_request_error", "guest_invalid", NULL,
                             "The guest was refused: %s", msg);
    }
    struct realm_reg_guest g;
    struct realm_err err;
    realm_err_clear(&err);
    if ((rc = realm_registry_guest_add(srv_state_registry(s), id, body, len, true, &g, &err)))
        return reg_error(e, rc, &err);
    sync_after(s);
    realm_log(REALM_LOG_INFO, "server", "tenant %s: guest version %lld (%s) deployed", id,
              (long long)g.version, g.sha256);
    return guest_json(out, &g) ? reg_error(e, REALM_E_NOMEM, NULL) : 201;
}

static int guest_rollback(struct realm_server *s, const char *id, const char *body, size_t len,
                          struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"version", NULL};
    struct realm_registry *reg = srv_state_registry(s);
    cJSON *o = parse_object(body, len, e);
    if (!o) return -1;
    int status = -1, rc;
    struct realm_err err;
    realm_err_clear(&err);
    struct realm_reg_guest g;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
    if (only_known(o, known, e)) goto done;
    if (v && (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
              v->valuedouble != (double)(int64_t)v->valuedouble)) {
        bad(e, "version", "'version' must be a version number (0: the default guest).");
        goto done;
    }
    if (v)
        rc = realm_registry_guest_activate(reg, id, (int64_t)v->valuedouble, &err);
    else
        rc = realm_registry_guest_rollback(reg, id, &g, &err);
    if (rc) {
        reg_error(e, rc, &err);
        goto done;
    }
    sync_after(s);
    rc = realm_registry_guest_active(reg, id, &g, &err);
    if (rc == REALM_E_NOT_FOUND)
        status = realm_buf_puts(out, "{\"object\":\"guest.version\",\"version\":0,\"active\":true}")
                     ? reg_error(e, REALM_E_NOMEM, NULL)
                     : 200;
    else if (rc)
        reg_error(e, rc, &err);
    else
        status = guest_json(out, &g) ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
done:
    cJSON_Delete(o);
    return status;
}

/* ---- usage ---- */

/* A time argument: milliseconds since the epoch, or an ISO-8601 UTC date ("2026-12-03" or
 * "2026-12-03T16:00:00Z"). */
static int parse_time(const char *v, int64_t *out) {
    if (!v || !v[0]) return -1;
    char *end;
    long long ms = strtoll(v, &end, 10);
    if (!*end) {
        *out = ms;
        return 0;
    }
    struct tm tm = {0};
    const char *r = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!r) r = strptime(v, "%Y-%m-%d", &tm);
    if (!r || (*r && strcmp(r, "Z"))) return -1;
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

/* RFC 4180 as `realm admin usage --csv` writes it (the two must be byte-identical): quoted only
 * when needed, quotes doubled. */
static int csv_field(struct realm_buf *b, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) return realm_buf_puts(b, s);
    int rc = realm_buf_puts(b, "\"");
    for (const char *p = s; *p && !rc; p++)
        rc = *p == '"' ? realm_buf_puts(b, "\"\"") : realm_buf_append(b, p, 1);
    return rc || realm_buf_puts(b, "\"");
}

/* ms since the epoch → "2026-12-03T16:41:02.123Z" (empty for 0), as the CLI writes it. */
static int csv_time(struct realm_buf *b, int64_t ms) {
    if (ms <= 0) return 0;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    return realm_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                            (int)(ms % 1000));
}

static int usage_report(struct realm_server *s, const struct srv_admin_args *a,
                        struct realm_buf *out, const char **ctype, struct srv_error *e) {
    int64_t since = 0, until = 0;
    if (a->since && parse_time(a->since, &since))
        return bad(e, "since", "'since': milliseconds or an ISO-8601 date.");
    if (a->until && parse_time(a->until, &until))
        return bad(e, "until", "'until': milliseconds or an ISO-8601 date.");
    const bool csv = a->format && !strcmp(a->format, "csv");
    if (a->format && !csv && strcmp(a->format, "json"))
        return bad(e, "format", "'format' is json or csv.");
    struct realm_reg_usage *rows = NULL;
    struct realm_reg_usage_sum sum = {0};
    size_t n = 0;
    struct realm_err err;
    realm_err_clear(&err);
    int rc =
        realm_registry_usage_query(srv_state_registry(s), a->tenant, since, until, &rows, &n, &err);
    if (!rc)
        rc = realm_registry_usage_sum(srv_state_registry(s), a->tenant, since, until, &sum, &err);
    if (rc) {
        realm_reg_usages_free(rows, n);
        return reg_error(e, rc, &err);
    }
    int w = 0;
    if (csv) {
        *ctype = "text/csv; charset=utf-8";
        w = realm_buf_puts(
            out,
            "tenant,model,key_label,prompt_tokens,completion_tokens,host_ms,outcome,started_at,"
            "finished_at\n");
        for (size_t i = 0; i < n && !w; i++) {
            const struct realm_reg_usage *u = &rows[i];
            w = csv_field(out, u->tenant) || realm_buf_puts(out, ",") || csv_field(out, u->model) ||
                realm_buf_puts(out, ",") || csv_field(out, u->key_label ? u->key_label : "") ||
                realm_buf_printf(out, ",%lld,%lld,%lld,", (long long)u->prompt_tokens,
                                 (long long)u->completion_tokens, (long long)u->host_ms) ||
                csv_field(out, u->outcome) || realm_buf_puts(out, ",") ||
                csv_time(out, u->started_at) || realm_buf_puts(out, ",") ||
                csv_time(out, u->finished_at) || realm_buf_puts(out, "\n");
        }
    } else {
        w = realm_buf_puts(out, "{\"object\":\"usage\",\"data\":[");
        for (size_t i = 0; i < n && !w; i++) {
            const struct realm_reg_usage *u = &rows[i];
            w = (i && realm_buf_puts(out, ",")) || realm_buf_puts(out, "{\"tenant\":") ||
                realm_buf_json_string(out, u->tenant, strlen(u->tenant)) ||
                realm_buf_puts(out, ",\"model\":") ||
                realm_buf_json_string(out, u->model, strlen(u->model)) ||
                realm_buf_puts(out, ",\"key_label\":") ||
                realm_buf_json_string(out, u->key_label ? u->key_label : "",
                                      u->key_label ? strlen(u->key_label) : 0) ||
                realm_buf_printf(out,
                                 ",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"host_ms\":%"
                                 "lld,\"outcome\":",
                                 (long long)u->prompt_tokens, (long long)u->completion_tokens,
                                 (long long)u->host_ms) ||
                realm_buf_json_string(out, u->outcome, strlen(u->outcome)) ||
                realm_buf_printf(out, ",\"started_at\":%lld,\"finished_at\":%lld}",
                                 (long long)u->started_at, (long long)u->finished_at);
        }
        w = w ||
            realm_buf_printf(
                out,
                "],\"totals\":{\"requests\":%lld,\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                "\"host_ms\":%lld}}",
                (long long)sum.requests, (long long)sum.prompt_tokens,
                (long long)sum.completion_tokens, (long long)sum.host_ms);
    }
    realm_reg_usages_free(rows, n);
    return w ? reg_error(e, REALM_E_NOMEM, NULL) : 200;
}

/* ---- routing ---- */

static int not_allowed(struct srv_error *e, const char *method, const char *url) {
    return srv_error_set(e, 405, "invalid_request_error", "method_not_allowed", NULL,
                         "%.16s is not allowed on %.200s.", method, url);
}

/* The tenant routes' own guest: GET|PUT /v1/guest, POST /v1/guest/rollback. */
static int guest_routes(struct realm_server *s, const char *method, const char *rest,
                        const char *id, const char *body, size_t len, struct realm_buf *out,
                        struct srv_error *e, const char *url) {
    if (!rest[0]) {
        if (!strcmp(method, "GET")) return guests_list(s, id, out, e);
        if (!strcmp(method, "PUT")) return guest_deploy(s, id, body, len, out, e);
        return not_allowed(e, method, url);
    }
    if (!strcmp(rest, "/rollback")) {
        if (!strcmp(method, "POST")) return guest_rollback(s, id, body, len, out, e);
        return not_allowed(e, method, url);
    }
    return srv_error_set(e, 404, "invalid_request_error", "not_found", NULL,
                         "Unknown request URL: %.16s %.200s.", method, url);
}

int srv_admin_route(struct realm_server *s, const char *method, const char *url,
                    struct srv_tenant *tenant, bool admin, const char *body, size_t len,
                    const struct srv_admin_args *args, struct realm_buf *out, const char **ctype,
                    struct srv_error *e) {
    *ctype = "application/json";
    if (!s->state)
        return srv_error_set(
            e, 404, "invalid_request_error", "not_found", NULL,
            "%.200s: this server has no tenant registry (start it with --state DIR).", url);
    if (!strncmp(url, "/v1/guest", 9)) {
        if (!tenant)
            return srv_error_set(
                e, 401, "invalid_request_error", "invalid_api_key", NULL,
                "This route needs a tenant's API key (an admin uses /admin/v1/tenants/ID/guest).");
        return guest_routes(s, method, url + 9, atomic_load(&tenant->spec)->id, body, len, out, e,
                            url);
    }
    if (!admin)
        return srv_error_set(e, 403, "invalid_request_error", "admin_key_required", NULL,
                             "The admin API needs an admin key; tenant keys cannot use it.");
    if (!strcmp(url, "/admin/v1/usage")) {
        if (strcmp(method, "GET")) return not_allowed(e, method, url);
        return usage_report(s, args, out, ctype, e);
    }
    if (!strcmp(url, "/admin/v1/tenants")) {
        if (!strcmp(method, "GET")) return tenants_list(s, out, e);
        if (!strcmp(method, "POST")) return tenant_create(s, body, len, out, e);
        return not_allowed(e, method, url);
    }
    if (strncmp(url, "/admin/v1/tenants/", 18))
        return srv_error_set(e, 404, "invalid_request_error", "not_found", NULL,
                             "Unknown request URL: %.16s %.200s.", method, url);
    /* /admin/v1/tenants/{id}[/keys[/{label}] | /guest[/rollback]] */
    const char *p = url + 18, *slash = strchr(p, '/');
    size_t idl = slash ? (size_t)(slash - p) : strlen(p);
    if (idl == 0 || idl > ID_MAX) return bad(e, NULL, "Bad tenant id in the URL.");
    char id[ID_MAX + 1];
    memcpy(id, p, idl);
    id[idl] = '\0';
    const char *rest = slash ? slash : "";
    if (!rest[0]) {
        if (!strcmp(method, "GET")) return tenant_get(s, id, out, e);
        if (!strcmp(method, "PATCH")) return tenant_update(s, id, body, len, out, e);
        if (!strcmp(method, "DELETE")) return tenant_delete(s, id, out, e);
        return not_allowed(e, method, url);
    }
    if (!strcmp(rest, "/keys")) {
        if (!strcmp(method, "GET")) return keys_list(s, id, out, e);
        if (!strcmp(method, "POST")) return key_add(s, id, body, len, out, e);
        return not_allowed(e, method, url);
    }
    if (!strncmp(rest, "/keys/", 6) && rest[6]) {
        if (!strcmp(method, "DELETE")) return key_revoke(s, id, rest + 6, out, e);
        return not_allowed(e, method, url);
    }
    if (!strncmp(rest, "/guest", 6))
        return guest_routes(s, method, rest + 6, id, body, len, out, e, url);
    return srv_error_set(e, 404, "invalid_request_error", "not_found", NULL,
                         "Unknown request URL: %.16s %.200s.", method, url);
}
