/*
 * admin_http.c — `realm admin --url URL`: the subcommands of cmd_admin.c through a running
 * server's admin API (src/server/admin.c; docs/server.md "Admin API") with libcurl:
 *
 *   tenant add|list|rm   POST|GET /admin/v1/tenants, DELETE /admin/v1/tenants/{id}
 *   key add|revoke|list  POST|GET /admin/v1/tenants/{id}/keys, DELETE .../keys/{label}
 *   limits               GET, PATCH /admin/v1/tenants/{id}
 *   guest deploy|list    PUT|GET /admin/v1/tenants/{id}/guest
 *   guest activate|rollback  POST /admin/v1/tenants/{id}/guest/rollback
 *   usage                GET /admin/v1/usage?tenant=&since=&until=[&format=csv]
 *
 * The answers are turned into the registry's structs and printed by cmd_admin.c's printers, so
 * both modes print the same lines; `usage --csv` prints the server's CSV as it comes. The admin
 * key lives only in the Authorization header list (scrubbed after each call) and is never
 * printed: libcurl's verbose output stays off.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/admin_http.h"
#include "cli/cli.h"
#include "realm/alloc.h"
#include "realm/buf.h"

/* Largest answer kept (a usage CSV of many rows is the big one). */
#define REPLY_MAX (INT64_C(512) << 20)

struct remote {
    CURL *curl;
    const char *url; /* as given, for messages */
    char base[2048]; /* url without trailing '/' */
    const char *key; /* borrowed; only copied into a request's header list */
};

struct reply {
    long status;
    struct realm_buf body;
    cJSON *json; /* the body parsed, when it is JSON; else NULL */
};

static void reply_free(struct reply *r) {
    cJSON_Delete(r->json);
    if (r->body.data) memset(r->body.data, 0, r->body.len); /* it may hold a new key */
    realm_buf_free(&r->body);
    *r = (struct reply){0};
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    struct realm_buf *b = ud;
    size_t len = size * n;
    if ((int64_t)(b->len + len) > REPLY_MAX || realm_buf_append(b, p, len)) return 0; /* aborts */
    return len;
}

static void headers_free(struct curl_slist *h) {
    for (struct curl_slist *p = h; p; p = p->next)
        memset(p->data, 0, strlen(p->data));
    curl_slist_free_all(h);
}

/* A header list for one call: the key, the body's type, and no "Expect: 100-continue" (a
 * guest upload would wait for it). NULL when out of memory or the key is absurdly long. */
static struct curl_slist *headers(const struct remote *rm, const char *ctype) {
    char line[1024];
    int n = snprintf(line, sizeof line, "Authorization: Bearer %s", rm->key);
    struct curl_slist *h = n > 0 && (size_t)n < sizeof line ? curl_slist_append(NULL, line) : NULL;
    memset(line, 0, sizeof line);
    if (!h) return NULL;
    snprintf(line, sizeof line, "Content-Type: %s", ctype ? ctype : "application/json");
    if (!curl_slist_append(h, line) || !curl_slist_append(h, "Expect:")) {
        headers_free(h);
        return NULL;
    }
    return h;
}

/* The one line for a failed call: the server's own message and status when it sent one. */
static int report_status(const struct reply *r) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (cJSON_IsString(m)) {
        cli_error("admin: %s (HTTP %ld)", m->valuestring, r->status);
    } else {
        /* not one of ours (a proxy?): the first line of whatever came back */
        const char *b = r->body.data ? r->body.data : "";
        int len = (int)strcspn(b, "\r\n");
        if (len == 0) b = "no message", len = (int)strlen(b);
        cli_error("admin: %.*s (HTTP %ld)", len > 200 ? 200 : len, b, r->status);
    }
    return 1;
}

/* One call: method on base + path with an optional body (ctype; NULL: JSON). Returns 0 with a
 * 2xx reply in *r (r->json set when the body is JSON), else prints one line and returns 1. */
static int request(struct remote *rm, const char *method, const char *path, const void *body,
                   size_t len, const char *ctype, struct reply *r) {
    *r = (struct reply){0};
    char url[4096], errbuf[CURL_ERROR_SIZE] = "";
    int n = snprintf(url, sizeof url, "%s%s", rm->base, path);
    if (n < 0 || (size_t)n >= sizeof url) {
        cli_error("admin: the request URL is too long");
        return 1;
    }
    struct curl_slist *h = headers(rm, ctype);
    if (!h) {
        cli_error(
            "admin: cannot build the request's headers (out of memory, or the key is too long)");
        return 1;
    }
    CURL *c = rm->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 600L); /* a guest upload compiles and runs its init */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (strcmp(method, body ? "POST" : "GET")) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode cc = curl_easy_perform(c);
    headers_free(h);
    if (cc != CURLE_OK) {
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
        if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
            cli_error("admin: cannot connect to %s: %s (is `realm serve --state` running there?)",
                      rm->url, why);
        else
            cli_error("admin: %s %s: %s", method, path, why);
        reply_free(r);
        return 1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    if (ct && !strncmp(ct, "application/json", 16) && r->body.len)
        r->json = cJSON_ParseWithLength(r->body.data, r->body.len);
    if (r->status < 200 || r->status > 299) {
        report_status(r);
        reply_free(r);
        return 1;
    }
    return 0;
}

/* request() whose 2xx answer must be a JSON object. */
static int request_json(struct remote *rm, const char *method, const char *path, const cJSON *body,
                        struct reply *r) {
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    if (body && !text) {
        cli_error("admin: out of memory");
        return 1;
    }
    int rc = request(rm, method, path, text, text ? strlen(text) : 0, NULL, r);
    cJSON_free(text);
    if (!rc && !cJSON_IsObject(r->json)) {
        cli_error("admin: %s %s: the server's answer is not a JSON object (HTTP %ld)", method, path,
                  r->status);
        reply_free(r);
        return 1;
    }
    return rc;
}

/* "/admin/v1/tenants/<id>[/<more>]" with id (and tail, when given) percent-encoded into out. */
static int tenant_path(struct remote *rm, char *out, size_t cap, const char *id, const char *more,
                       const char *tail) {
    char *eid = curl_easy_escape(rm->curl, id, 0);
    char *etail = tail ? curl_easy_escape(rm->curl, tail, 0) : NULL;
    int n = -1;
    if (eid && (!tail || etail))
        n = snprintf(out, cap, "/admin/v1/tenants/%s%s%s%s", eid, more ? more : "",
                     etail ? "/" : "", etail ? etail : "");
    curl_free(eid);
    curl_free(etail);
    if (n < 0 || (size_t)n >= cap) {
        cli_error("admin: tenant id or label too long for a URL");
        return 1;
    }
    return 0;
}

/* ---- JSON answers into the registry's structs (strings borrowed from the cJSON tree) ---- */

static int64_t num(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static char *str(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An array field's elements (NULL when absent or not an array). */
static const cJSON *items(const cJSON *o, const char *name) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsArray(a) ? a->child : NULL;
}

static void guest_of(const cJSON *o, struct realm_reg_guest *g) {
    *g = (struct realm_reg_guest){.version = num(o, "version"),
                                  .size = num(o, "size"),
                                  .created_at = num(o, "created_at"),
                                  .active =
                                      cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "active"))};
    const char *sha = str(o, "sha256");
    snprintf(g->sha256, sizeof g->sha256, "%s", sha ? sha : "");
}

/* A tenant object; t->models is realm_calloc'd (free it alone), the rest borrowed. *active is
 * set when the tenant has an active guest. Returns 0, or 1 (malformed answer / no memory). */
static int tenant_of(const cJSON *o, struct realm_reg_tenant *t, struct realm_reg_guest *g,
                     bool *active) {
    *t = (struct realm_reg_tenant){.id = str(o, "id"), .created_at = num(o, "created_at")};
    if (!t->id) {
        cli_error("admin: the server's tenant has no id");
        return 1;
    }
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(o, "models");
    t->all_models = cJSON_IsString(models);
    if (cJSON_IsArray(models)) {
        int n = cJSON_GetArraySize(models);
        if (n > 0 && !(t->models = realm_calloc((size_t)n, sizeof *t->models))) {
            cli_error("admin: out of memory");
            return 1;
        }
        for (const cJSON *m = models->child; m; m = m->next)
            if (cJSON_IsString(m)) t->models[t->n_models++] = m->valuestring;
    }
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(o, "limits");
    for (size_t i = 0; i < cli_admin_n_limits(); i++) {
        char name[64];
        snprintf(name, sizeof name, "%s", cli_admin_limit_name(i));
        for (char *p = name; *p; p++)
            if (*p == '-') *p = '_';
        cli_admin_limit_set(&t->limits, i, num(lim, name));
    }
    const cJSON *gj = cJSON_GetObjectItemCaseSensitive(o, "guest");
    *active = cJSON_IsObject(gj);
    if (*active) guest_of(gj, g);
    return 0;
}

/* The "models"/"limits" fields of a tenant body. models_given: send the grants (else the
 * server keeps the current ones). */
static int tenant_fields(cJSON *o, const struct realm_reg_tenant *t, bool models_given) {
    if (models_given) {
        if (t->all_models) {
            if (!cJSON_AddStringToObject(o, "models", "*")) return 1;
        } else {
            cJSON *a = cJSON_AddArrayToObject(o, "models");
            for (size_t i = 0; a && i < t->n_models; i++)
                if (!cJSON_AddItemToArray(a, cJSON_CreateString(t->models[i]))) return 1;
            if (!a) return 1;
        }
    }
    cJSON *lim = cJSON_AddObjectToObject(o, "limits");
    for (size_t i = 0; lim && i < cli_admin_n_limits(); i++) {
        char name[64];
        snprintf(name, sizeof name, "%s", cli_admin_limit_name(i));
        for (char *p = name; *p; p++)
            if (*p == '-') *p = '_';
        if (!cJSON_AddNumberToObject(lim, name, (double)cli_admin_limit_get(&t->limits, i)))
            return 1;
    }
    return lim ? 0 : 1;
}

/* ---- tenants ---- */

/* GET .../keys: how many keys the tenant has, or -1 (printed). */
static long key_count(struct remote *rm, const char *id) {
    char path[1024];
    struct reply r;
    if (tenant_path(rm, path, sizeof path, id, "/keys", NULL) ||
        request_json(rm, "GET", path, NULL, &r))
        return -1;
    long n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "data"));
    reply_free(&r);
    return n;
}

/* Prints a tenant object as `tenant list` does (a second call counts its keys). */
static int print_tenant(struct remote *rm, const cJSON *o) {
    struct realm_reg_tenant t;
    struct realm_reg_guest g;
    bool active;
    if (tenant_of(o, &t, &g, &active)) return 1;
    long nk = key_count(rm, t.id);
    if (nk >= 0) cli_admin_print_tenant(&t, (size_t)nk, active ? &g : NULL);
    realm_free(t.models);
    return nk < 0;
}

static int tenant_add(struct remote *rm, int argc, char **argv) {
    if (argc < 3 || argv[2][0] == '-') {
        cli_error("admin tenant add: missing ID");
        return 2;
    }
    struct realm_reg_tenant t = {.id = argv[2], .all_models = true};
    bool any = false;
    int rc = cli_admin_tenant_opts(argc, argv, 3, &t, &any);
    if (t.n_models == 0) t.all_models = true;
    cJSON *body = cJSON_CreateObject();
    struct reply r;
    if (!rc &&
        (!body || !cJSON_AddStringToObject(body, "id", t.id) || tenant_fields(body, &t, true))) {
        cli_error("admin: out of memory");
        rc = 1;
    }
    if (!rc && !(rc = request_json(rm, "POST", "/admin/v1/tenants", body, &r))) {
        fprintf(stderr, "realm: tenant \"%s\" created\n", argv[2]);
        reply_free(&r);
    }
    cJSON_Delete(body);
    realm_free(t.models);
    return rc;
}

static int tenant_cmd(struct remote *rm, int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "add")) return tenant_add(rm, argc, argv);
    struct reply r;
    if (argc == 2 && !strcmp(argv[1], "list")) {
        if (request_json(rm, "GET", "/admin/v1/tenants", NULL, &r)) return 1;
        int rc = 0;
        for (const cJSON *t = items(r.json, "data"); t && !rc; t = t->next)
            rc = print_tenant(rm, t);
        reply_free(&r);
        return rc;
    }
    if (argc == 3 && (!strcmp(argv[1], "rm") || !strcmp(argv[1], "delete"))) {
        char path[1024];
        if (tenant_path(rm, path, sizeof path, argv[2], NULL, NULL) ||
            request_json(rm, "DELETE", path, NULL, &r))
            return 1;
        reply_free(&r);
        fprintf(stderr, "realm: tenant \"%s\" deleted\n", argv[2]);
        return 0;
    }
    cli_error("admin tenant: expected add ID | list | rm ID");
    return 2;
}

/* ---- keys ---- */

/* Prints the keys of one tenant as `key list` does. */
static int list_keys(struct remote *rm, const char *tenant) {
    char path[1024];
    struct reply r;
    if (tenant_path(rm, path, sizeof path, tenant, "/keys", NULL) ||
        request_json(rm, "GET", path, NULL, &r))
        return 1;
    size_t n = 0,
           cap = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "data"));
    struct realm_reg_key *k = realm_calloc(cap ? cap : 1, sizeof *k);
    for (const cJSON *o = items(r.json, "data"); k && o && n < cap; o = o->next) {
        k[n] = (struct realm_reg_key){.tenant = (char *)tenant,
                                      .label = str(o, "label"),
                                      .prefix = str(o, "prefix"),
                                      .created_at = num(o, "created_at"),
                                      .last_used_at = num(o, "last_used_at")};
        if (!k[n].label) k[n].label = "";
        n++;
    }
    if (k)
        cli_admin_print_keys(k, n);
    else
        cli_error("admin: out of memory");
    realm_free(k);
    reply_free(&r);
    return k ? 0 : 1;
}

static int key_add(struct remote *rm, int argc, char **argv) {
    const char *tenant = NULL, *label = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--label") && i + 1 < argc)
            label = argv[++i];
        else if (!tenant && argv[i][0] != '-')
            tenant = argv[i];
        else {
            cli_error("admin key add: unexpected '%s'", argv[i]);
            return 2;
        }
    }
    if (!tenant) {
        cli_error("admin key add: missing TENANT");
        return 2;
    }
    char path[1024];
    cJSON *body = cJSON_CreateObject();
    struct reply r;
    int rc = 1;
    if (!body || (label && !cJSON_AddStringToObject(body, "label", label)))
        cli_error("admin: out of memory");
    else if (!tenant_path(rm, path, sizeof path, tenant, "/keys", NULL) &&
             !request_json(rm, "POST", path, body, &r)) {
        const char *key = str(r.json, "key");
        if (key) {
            printf("%s\n", key);
            fflush(stdout);
            fprintf(stderr,
                    "realm: added a key to tenant %s (shown once; only its hash is stored)\n",
                    tenant);
            rc = 0;
        } else {
            cli_error("admin: the server's answer has no key (HTTP %ld)", r.status);
        }
        if (key) memset((char *)key, 0, strlen(key));
        reply_free(&r);
    }
    cJSON_Delete(body);
    return rc;
}

static int key_cmd(struct remote *rm, int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "add")) return key_add(rm, argc, argv);
    struct reply r;
    if (argc == 4 && !strcmp(argv[1], "revoke")) {
        char path[1024];
        if (tenant_path(rm, path, sizeof path, argv[2], "/keys", argv[3]) ||
            request_json(rm, "DELETE", path, NULL, &r))
            return 1;
        reply_free(&r);
        fprintf(stderr, "realm: tenant key revoked\n");
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "list")) return list_keys(rm, argv[2]);
    if (argc == 2 && !strcmp(argv[1], "list")) { /* every tenant's */
        if (request_json(rm, "GET", "/admin/v1/tenants", NULL, &r)) return 1;
        int rc = 0;
        for (const cJSON *t = items(r.json, "data"); t && !rc; t = t->next)
            rc = str(t, "id") ? list_keys(rm, str(t, "id")) : 0;
        reply_free(&r);
        return rc;
    }
    cli_error("admin key: expected add TENANT [--label L] | revoke TENANT LABEL|PREFIX | list "
              "[TENANT]");
    return 2;
}

/* ---- limits ---- */

static int limits_cmd(struct remote *rm, int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        cli_error("admin limits: missing TENANT");
        return 2;
    }
    char path[1024];
    struct reply r;
    /* read, change what was given, write the whole limits back: what --state mode does */
    if (tenant_path(rm, path, sizeof path, argv[1], NULL, NULL) ||
        request_json(rm, "GET", path, NULL, &r))
        return 1;
    struct realm_reg_tenant cur;
    struct realm_reg_guest g;
    bool active;
    if (tenant_of(r.json, &cur, &g, &active)) {
        reply_free(&r);
        return 1;
    }
    /* all_models starts false so that afterwards it tells whether --all-models was given */
    struct realm_reg_tenant t = {.id = cur.id, .limits = cur.limits};
    bool any = false;
    int rc = cli_admin_tenant_opts(argc, argv, 2, &t, &any);
    if (!rc && !any) {
        long nk = key_count(rm, cur.id);
        if (nk < 0)
            rc = 1;
        else
            cli_admin_print_tenant(&cur, (size_t)nk, active ? &g : NULL);
    } else if (!rc) {
        cJSON *body = cJSON_CreateObject();
        struct reply u;
        if (!body || tenant_fields(body, &t, t.all_models || t.n_models > 0)) {
            cli_error("admin: out of memory");
            rc = 1;
        } else if (!(rc = request_json(rm, "PATCH", path, body, &u))) {
            reply_free(&u);
            fprintf(stderr, "realm: tenant \"%s\" updated\n", cur.id);
        }
        cJSON_Delete(body);
    }
    realm_free(t.models);
    realm_free(cur.models);
    reply_free(&r);
    return rc;
}

/* ---- guests ---- */

static int guest_deploy(struct remote *rm, int argc, char **argv) {
    const char *tenant = NULL, *file = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--no-activate")) {
            cli_error("admin guest deploy: --no-activate only with --state (the admin API "
                      "activates every guest it accepts)");
            return 2;
        } else if (!strcmp(argv[i], "--no-validate")) {
            /* the server always validates and runs the guest's init first */
        } else if (argv[i][0] != '-' && !tenant) {
            tenant = argv[i];
        } else if (argv[i][0] != '-' && !file) {
            file = argv[i];
        } else {
            cli_error("admin guest deploy: unexpected '%s'", argv[i]);
            return 2;
        }
    }
    if (!tenant || !file) {
        cli_error("admin guest deploy: expected TENANT FILE.wasm");
        return 2;
    }
    size_t len = 0;
    unsigned char *wasm = cli_admin_read_file(file, &len);
    if (!wasm) {
        cli_error("admin guest deploy: %s: %s", file, strerror(errno));
        return 1;
    }
    char path[1024];
    struct reply r;
    int rc = tenant_path(rm, path, sizeof path, tenant, "/guest", NULL) ||
             request(rm, "PUT", path, wasm, len, "application/wasm", &r);
    realm_free(wasm);
    if (rc) return 1;
    struct realm_reg_guest g;
    guest_of(r.json, &g);
    fprintf(stderr, "realm: tenant \"%s\": guest version %lld (%s, %lld bytes) is active\n", tenant,
            (long long)g.version, g.sha256, (long long)g.size);
    reply_free(&r);
    return 0;
}

static int guest_cmd(struct remote *rm, int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "deploy")) return guest_deploy(rm, argc, argv);
    char path[1024];
    struct reply r;
    if (argc == 3 && !strcmp(argv[1], "list")) {
        if (tenant_path(rm, path, sizeof path, argv[2], "/guest", NULL) ||
            request_json(rm, "GET", path, NULL, &r))
            return 1;
        size_t n = 0,
               cap = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "data"));
        struct realm_reg_guest *g = realm_calloc(cap ? cap : 1, sizeof *g);
        for (const cJSON *o = items(r.json, "data"); g && o && n < cap; o = o->next)
            guest_of(o, &g[n++]);
        if (g)
            cli_admin_print_guests(g, n);
        else
            cli_error("admin: out of memory");
        realm_free(g);
        reply_free(&r);
        return g ? 0 : 1;
    }
    bool activate = argc == 4 && !strcmp(argv[1], "activate");
    if (activate || (argc == 3 && !strcmp(argv[1], "rollback"))) {
        int64_t v = 0;
        if (activate) {
            const char *s = argv[3][0] == 'v' ? argv[3] + 1 : argv[3];
            char *end;
            errno = 0;
            long long x = strtoll(s, &end, 10);
            if (!*s || *end || errno || x < 0) {
                cli_error("admin guest activate: VERSION must be a number (0: the default guest)");
                return 2;
            }
            v = x;
        }
        cJSON *body = cJSON_CreateObject();
        int rc = 1;
        if (!body || (activate && !cJSON_AddNumberToObject(body, "version", (double)v)))
            cli_error("admin: out of memory");
        else if (!tenant_path(rm, path, sizeof path, argv[2], "/guest/rollback", NULL) &&
                 !request_json(rm, "POST", path, body, &r)) {
            rc = 0;
            if (activate)
                fprintf(stderr, "realm: tenant \"%s\": guest version %lld is active\n", argv[2],
                        (long long)v);
            else
                fprintf(stderr, "realm: tenant \"%s\": rolled back to guest version %lld\n",
                        argv[2], (long long)num(r.json, "version"));
            reply_free(&r);
        }
        cJSON_Delete(body);
        return rc;
    }
    cli_error("admin guest: expected deploy TENANT FILE | list TENANT | activate TENANT VERSION | "
              "rollback TENANT");
    return 2;
}

/* ---- usage ---- */

static int usage_cmd(struct remote *rm, int argc, char **argv) {
    const char *tenant;
    int64_t since, until;
    bool csv;
    if (cli_admin_usage_opts(argc, argv, &tenant, &since, &until, &csv)) return 2;
    struct realm_buf path = {0};
    char *et = tenant ? curl_easy_escape(rm->curl, tenant, 0) : NULL;
    int w = (tenant && !et) ||
            realm_buf_printf(&path, "/admin/v1/usage?format=%s", csv ? "csv" : "json") ||
            (et && realm_buf_printf(&path, "&tenant=%s", et)) ||
            (since && realm_buf_printf(&path, "&since=%lld", (long long)since)) ||
            (until && realm_buf_printf(&path, "&until=%lld", (long long)until));
    curl_free(et);
    struct reply r;
    int rc = 1;
    if (w)
        cli_error("admin: out of memory");
    else
        rc = csv ? request(rm, "GET", path.data, NULL, 0, NULL, &r)
                 : request_json(rm, "GET", path.data, NULL, &r);
    realm_buf_free(&path);
    if (rc) return 1;
    if (csv) {
        fwrite(r.body.data ? r.body.data : "", 1, r.body.len, stdout);
        reply_free(&r);
        return 0;
    }
    size_t k = 0,
           cap = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "data"));
    struct realm_reg_usage *u = realm_calloc(cap ? cap : 1, sizeof *u);
    for (const cJSON *o = items(r.json, "data"); u && o && k < cap; o = o->next) {
        char *t = str(o, "tenant");
        u[k++] = (struct realm_reg_usage){.tenant = t ? t : "",
                                          .prompt_tokens = num(o, "prompt_tokens"),
                                          .completion_tokens = num(o, "completion_tokens"),
                                          .host_ms = num(o, "host_ms")};
    }
    if (u)
        cli_admin_print_usage_sums(u, k);
    else
        cli_error("admin: out of memory");
    realm_free(u);
    reply_free(&r);
    return u ? 0 : 1;
}

/* ---- entry ---- */

int cli_admin_remote(const char *url, const char *admin_key, int argc, char **argv) {
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
        cli_error("admin: --url '%s': expected http://HOST:PORT or https://...", url);
        return 2;
    }
    if (strcspn(admin_key, "\r\n") != strlen(admin_key)) {
        cli_error("admin: the admin key has a line break in it");
        return 2;
    }
    static const struct {
        const char *name;
        int (*run)(struct remote *rm, int argc, char **argv);
    } cmds[] = {{"tenant", tenant_cmd},
                {"key", key_cmd},
                {"limits", limits_cmd},
                {"guest", guest_cmd},
                {"usage", usage_cmd}};
    int found = -1;
    for (int i = 0; i < (int)(sizeof cmds / sizeof cmds[0]); i++)
        if (!strcmp(argv[0], cmds[i].name)) found = i;
    if (found < 0) {
        if (!strcmp(argv[0], "admin-key") || !strcmp(argv[0], "import"))
            cli_error("admin: %s has no admin-API route; run it with --state DIR on the server's "
                      "state directory",
                      argv[0]);
        else
            cli_error("admin: unknown command '%s' (see realm admin --help)", argv[0]);
        return 2;
    }
    struct remote rm = {.url = url, .key = admin_key};
    int n = snprintf(rm.base, sizeof rm.base, "%s", url);
    if (n < 0 || (size_t)n >= sizeof rm.base) {
        cli_error("admin: --url is too long");
        return 2;
    }
    while (n > 0 && rm.base[n - 1] == '/')
        rm.base[--n] = '\0';
    if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(rm.curl = curl_easy_init())) {
        cli_error("admin: cannot initialise libcurl");
        curl_global_cleanup();
        return 1;
    }
    int rc = cmds[found].run(&rm, argc, argv);
    curl_easy_cleanup(rm.curl);
    curl_global_cleanup();
    return rc;
}
