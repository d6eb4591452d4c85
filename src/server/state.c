/*
 * state.c — state mode (realm serve --state DIR): the server's tenants come from the registry
 * (include/realm/registry.h) and change while it runs. Admin writes (this server's admin API, the
 * `realm admin` CLI on the same directory, another node) bump the registry's generation; every
 * authenticated request first compares it with the one the tenant slots reflect and, when it
 * moved, brings the slots up to date: new tenants get a slot and a backend pool, changed limits
 * and grants a new spec, a new active guest version a module swap, deleted tenants are marked
 * removed (their keys stop matching; their slot stays, so pointers held by running requests stay
 * valid). Keys are looked up in the registry on every request, so a revoked key fails at once.
 *
 * Specs: a slot's spec is replaced whole (an atomic store) and the old one is kept until the
 * server stops, because requests in flight may still read it. Each change of a tenant's limits,
 * grants or guest costs one small spec for the server's life.
 *
 * Owns: the registry handle and every spec it made. Thread rule: srv_state_sync serialises on
 * st->mu; the registry serialises its own calls.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "realm/registry.h"
#include "realm/status.h"
#include "server/srv.h"

struct srv_state {
    struct realm_registry *reg;
    pthread_mutex_t mu;   /* one sync at a time */
    _Atomic uint64_t gen; /* the registry generation the slots reflect */
    atomic_bool loaded;   /* gen is meaningful */
    bool shared;          /* a registry other nodes share (PostgreSQL): quotas cluster-wide */
    struct realm_tenant_spec **specs; /* every spec made (current and retired), freed at the end */
    size_t n_specs, cap_specs;
};

static void spec_free(struct realm_tenant_spec *sp) {
    if (!sp) return;
    realm_free(sp->id);
    for (size_t i = 0; i < sp->n_models; i++)
        realm_free(sp->models[i]);
    realm_free(sp->models);
    realm_free(sp->guest);
    realm_free(sp);
}

/* A spec for registry tenant t whose active guest is at guest_path (NULL: the default one). */
static struct realm_tenant_spec *spec_from(const struct realm_reg_tenant *t,
                                           const char *guest_path) {
    struct realm_tenant_spec *sp = realm_calloc(1, sizeof *sp);
    if (!sp) return NULL;
    sp->id = realm_strndup(t->id, strlen(t->id));
    sp->limits = t->limits;
    sp->all_models = t->all_models;
    bool ok = sp->id != NULL;
    if (ok && !t->all_models && t->n_models) {
        sp->models = realm_calloc(t->n_models, sizeof *sp->models);
        ok = sp->models != NULL;
        for (size_t i = 0; ok && i < t->n_models; i++, sp->n_models++)
            ok = (sp->models[i] = realm_strndup(t->models[i], strlen(t->models[i]))) != NULL;
    }
    if (ok && guest_path) ok = (sp->guest = realm_strndup(guest_path, strlen(guest_path))) != NULL;
    if (!ok) {
        spec_free(sp);
        return NULL;
    }
    return sp;
}

static bool same_str(const char *a, const char *b) {
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool same_spec(const struct realm_tenant_spec *a, const struct realm_tenant_spec *b) {
    if (memcmp(&a->limits, &b->limits, sizeof a->limits) || a->all_models != b->all_models ||
        a->n_models != b->n_models || !same_str(a->guest, b->guest))
        return false;
    for (size_t i = 0; i < a->n_models; i++)
        if (strcmp(a->models[i], b->models[i])) return false;
    return true;
}

/* Keeps sp for the server's life (see the file comment). */
static int keep_spec(struct srv_state *st, struct realm_tenant_spec *sp) {
    if (st->n_specs == st->cap_specs) {
        size_t cap = st->cap_specs ? 2 * st->cap_specs : 16;
        struct realm_tenant_spec **v = realm_realloc(st->specs, cap * sizeof *v);
        if (!v) return REALM_E_NOMEM;
        st->specs = v;
        st->cap_specs = cap;
    }
    st->specs[st->n_specs++] = sp;
    return REALM_OK;
}

static struct srv_tenant *slot_of(struct realm_server *s, const char *id) {
    size_t n = atomic_load(&s->n_tenants);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(atomic_load(&s->tenants[i].spec)->id, id)) return &s->tenants[i];
    return NULL;
}

/* The file of tenant id's active guest version into path[cap] (""): the default guest. */
static int active_guest_path(struct srv_state *st, const char *id, char *path, size_t cap,
                             struct realm_err *err) {
    struct realm_reg_guest g;
    path[0] = '\0';
    int rc = realm_registry_guest_active(st->reg, id, &g, err);
    if (rc == REALM_E_NOT_FOUND) {
        realm_err_clear(err);
        return REALM_OK;
    }
    if (rc) return rc;
    rc = realm_registry_guest_path(st->reg, g.sha256, path, cap);
    if (rc) return realm_err_set(err, rc, "state: guest path of tenant %s", id);
    return REALM_OK;
}

/* Brings one registry tenant's slot up to date (making it if new). Caller holds st->mu. */
static int sync_tenant(struct realm_server *s, struct srv_state *st,
                       const struct realm_reg_tenant *t, struct realm_err *err) {
    char path[4096];
    int rc = active_guest_path(st, t->id, path, sizeof path, err);
    if (rc) return rc;
    struct realm_tenant_spec *sp = spec_from(t, path[0] ? path : NULL);
    if (!sp || keep_spec(st, sp)) {
        spec_free(sp);
        return realm_err_set(err, REALM_E_NOMEM, "state: out of memory");
    }
    struct srv_tenant *slot = slot_of(s, t->id);
    if (!slot) {
        size_t i = atomic_load(&s->n_tenants);
        if (i >= s->cap_tenants)
            return realm_err_set(err, REALM_E_LIMIT,
                                 "state: tenant %s: the server holds %zu tenants, its max_tenants",
                                 t->id, s->cap_tenants);
        srv_tenant_slot_init(&s->tenants[i], i, sp);
        rc = srv_backend_tenant_add(s->backend, i, sp, sp->guest, err);
        if (rc) { /* the pool exists but serves nothing: keep the slot out of use */
            atomic_store(&s->tenants[i].removed, true);
            realm_log(REALM_LOG_ERROR, "server", "%s", err ? err->msg : "tenant pool failed");
        }
        atomic_store(&s->n_tenants, i + 1);
        if (!rc) realm_log(REALM_LOG_INFO, "server", "tenant %s: added", t->id);
        return rc;
    }
    const struct realm_tenant_spec *old = atomic_load(&slot->spec);
    const bool ready = srv_backend_tenant_ready(s->backend, slot->index);
    if (ready && same_spec(old, sp)) { /* sp stays kept, unused: changes are rare */
        atomic_store(&slot->removed, false);
        return REALM_OK;
    }
    srv_backend_tenant_update(s->backend, slot->index, sp);
    atomic_store(&slot->spec, sp);
    if (!ready || !same_str(old->guest, sp->guest)) {
        if ((rc = srv_backend_tenant_set_guest(s->backend, slot->index, sp->guest, err))) {
            if (!ready) atomic_store(&slot->removed, true); /* still nothing to run */
            return rc;
        }
        realm_log(REALM_LOG_INFO, "server", "tenant %s: now runs %s", t->id,
                  sp->guest ? sp->guest : "the default guest");
    }
    atomic_store(&slot->removed, !srv_backend_tenant_ready(s->backend, slot->index));
    return REALM_OK;
}

int srv_state_sync(struct realm_server *s, struct realm_err *err) {
    struct srv_state *st = s->state;
    uint64_t gen;
    int rc = realm_registry_generation(st->reg, &gen, err);
    if (rc) return rc;
    if (atomic_load(&st->loaded) && gen == atomic_load(&st->gen)) return REALM_OK;
    pthread_mutex_lock(&st->mu);
    if (atomic_load(&st->loaded) && gen == atomic_load(&st->gen)) {
        pthread_mutex_unlock(&st->mu);
        return REALM_OK;
    }
    struct realm_reg_tenant *ts = NULL;
    size_t n = 0;
    rc = realm_registry_tenant_list(st->reg, &ts, &n, err);
    int first_err = rc;
    for (size_t i = 0; !rc && i < n; i++) {
        struct realm_err e2;
        realm_err_clear(&e2);
        int r = sync_tenant(s, st, &ts[i], &e2);
        if (r && !first_err) { /* one tenant's trouble must not keep the others stale */
            first_err = r;
            if (err) *err = e2;
        }
    }
    if (!rc) { /* tenants no longer in the registry */
        size_t nt = atomic_load(&s->n_tenants);
        for (size_t k = 0; k < nt; k++) {
            const char *id = atomic_load(&s->tenants[k].spec)->id;
            bool present = false;
            for (size_t i = 0; i < n && !present; i++)
                present = !strcmp(ts[i].id, id);
            if (!present && !atomic_exchange(&s->tenants[k].removed, true))
                realm_log(REALM_LOG_INFO, "server", "tenant %s: removed", id);
        }
        /* a failed tenant is retried at the next change, not at every request */
        atomic_store(&st->gen, gen);
        atomic_store(&st->loaded, true);
    }
    realm_reg_tenants_free(ts, n);
    pthread_mutex_unlock(&st->mu);
    return first_err;
}

int srv_state_open(struct realm_server *s, struct realm_err *err) {
    struct srv_state *st = realm_calloc(1, sizeof *st);
    if (!st) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    pthread_mutex_init(&st->mu, NULL);
    s->state = st;
    int rc = realm_registry_open(s->cfg->state_dir, NULL, &st->reg, err); /* DIR or postgres:// */
    st->shared = realm_registry_spec_is_postgres(s->cfg->state_dir);
    if (rc) return rc;
    rc = srv_state_sync(s, err);
    if (rc == REALM_OK) {
        char shown[512];
        realm_log(REALM_LOG_INFO, "server", "state %s: %zu tenant(s)",
                  realm_registry_spec_display(s->cfg->state_dir, shown, sizeof shown),
                  (size_t)atomic_load(&s->n_tenants));
        return REALM_OK;
    }
    /* a tenant whose guest cannot start is reported and kept out of use; the rest serve */
    if (rc != REALM_E_NOMEM && rc != REALM_E_IO && rc != REALM_E_BUSY && rc != REALM_E_FORMAT) {
        char shown[512];
        realm_log(REALM_LOG_ERROR, "server", "state %s: %s",
                  realm_registry_spec_display(s->cfg->state_dir, shown, sizeof shown),
                  err ? err->msg : "");
        realm_err_clear(err);
        return REALM_OK;
    }
    return rc;
}

void srv_state_free(struct srv_state *st) {
    if (!st) return;
    realm_registry_close(st->reg);
    for (size_t i = 0; i < st->n_specs; i++)
        spec_free(st->specs[i]);
    realm_free(st->specs);
    pthread_mutex_destroy(&st->mu);
    realm_free(st);
}

struct realm_registry *srv_state_registry(struct realm_server *s) {
    return s->state ? s->state->reg : NULL;
}

static int64_t unix_ms(void);

/* Cluster-wide tokens_per_minute on a shared registry: the tenant's tokens (prompt + completion)
 * in the shared ledger over the last 60 s, from every node, must be below its limit for a key of
 * it to be accepted (one indexed sum per request of a tenant with a quota). Each node's own
 * admission (srv_tenant_admit: its window plus reservations) still applies on top. The ledger
 * holds finished requests only, so the overshoot in any minute is bounded by what requests in
 * flight on the other nodes use: at most, per node, max_concurrent (or max-inflight) requests
 * of max_tokens (clamped to the quota) plus their prompts — with nginx's key affinity a tenant
 * runs on one node, where srv_tenant_admit already counts them, so in steady state the bound is
 * the local one. */
static bool cluster_quota_ok(struct realm_server *s, const struct srv_tenant *t,
                             struct srv_error *e) {
    const struct realm_tenant_spec *sp = atomic_load(&t->spec);
    int64_t limit = sp->limits.tokens_per_minute;
    if (limit <= 0 || !s->state->shared) return true;
    struct realm_reg_usage_sum sum;
    struct realm_err err;
    realm_err_clear(&err);
    if (realm_registry_usage_sum(s->state->reg, sp->id, unix_ms() - 60000, 0, &sum, &err)) {
        srv_error_set(e, 503, "server_error", "registry_unavailable", NULL,
                      "The tenant registry is unavailable: %s", err.msg);
        e->retry_after = 1;
        return false;
    }
    int64_t used = sum.prompt_tokens + sum.completion_tokens;
    if (used < limit) return true;
    srv_error_set(e, 429, "tokens", "rate_limit_exceeded", NULL,
                  "This API key's tenant used %lld tokens in the last minute on all nodes "
                  "together; its limit is "
                  "%lld per minute.",
                  (long long)used, (long long)limit);
    e->retry_after = 5;
    return false;
}

bool srv_state_auth(struct realm_server *s, const char *key, size_t len, struct srv_tenant **tenant,
                    bool *admin, char *label, size_t cap, struct srv_error *e) {
    struct realm_err err;
    realm_err_clear(&err);
    *tenant = NULL;
    *admin = false;
    label[0] = '\0';
    bool failed = false; /* e is set */
    int rc = srv_state_sync(s, &err);
    if (rc && rc != REALM_E_NOMEM && rc != REALM_E_IO && rc != REALM_E_BUSY)
        rc = REALM_OK; /* one tenant's guest */
    if (rc) {
        srv_error_set(e, 503, "server_error", "registry_unavailable", NULL,
                      "The tenant registry is unavailable: %s", err.msg);
        e->retry_after = 1;
        return false;
    }
    /* both tables are always searched: the time taken does not tell which kind of key it was */
    struct realm_reg_key ka = {0}, kt = {0};
    int ra = realm_registry_admin_key_lookup(s->state->reg, key, len, &ka, &err);
    int rt = realm_registry_key_lookup(s->state->reg, key, len, &kt, &err);
    bool ok = false;
    if ((ra && ra != REALM_E_NOT_FOUND) || (rt && rt != REALM_E_NOT_FOUND)) {
        failed = true;
        srv_error_set(e, 503, "server_error", "registry_unavailable", NULL,
                      "The tenant registry is unavailable: %s", err.msg);
        e->retry_after = 1;
    } else if (ra == REALM_OK) {
        *admin = ok = true;
        snprintf(label, cap, "%s", ka.label ? ka.label : "");
    } else if (rt == REALM_OK) {
        struct srv_tenant *t = slot_of(s, kt.tenant);
        if (t && !atomic_load(&t->removed) && !cluster_quota_ok(s, t, e)) {
            failed = true;
        } else if (t && !atomic_load(&t->removed)) {
            *tenant = t;
            ok = true;
            snprintf(label, cap, "%s", kt.label ? kt.label : "");
        }
    }
    if (!ok && !failed)
        srv_error_set(e, 401, "invalid_request_error", "invalid_api_key", NULL,
                      "Incorrect API key provided.");
    realm_reg_key_clear(&ka);
    realm_reg_key_clear(&kt);
    return ok;
}

static int64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *outcome_of(int status, const struct srv_job *j) {
    switch (status) {
    case REALM_OK:
    case REALM_E_CONTEXT_FULL: /* an answer cut at the context: finish_reason "length" */
        return "ok";
    case REALM_E_CANCELLED:
        if (atomic_load(&j->stalled)) return "stalled";
        return atomic_load(&j->client_gone) ? "client_gone" : "cancelled";
    case REALM_E_TIMEOUT:
        return "timeout";
    case REALM_E_LIMIT:
        return "limit";
    case REALM_E_KV_FULL:
        return "kv_full";
    case REALM_E_BUSY:
        return "busy";
    default:
        return "error";
    }
}

void srv_state_record(struct realm_server *s, const struct srv_job *j, int status,
                      int64_t prompt_tokens, int64_t completion_tokens, double host_s) {
    const int64_t now = unix_ms();
    const struct realm_reg_usage u = {.tenant = atomic_load(&j->tenant->spec)->id,
                                      .model = s->cfg->models[j->req.model].name,
                                      .key_label = (char *)j->req.key_label,
                                      .prompt_tokens = prompt_tokens,
                                      .completion_tokens = completion_tokens,
                                      .host_ms = (int64_t)(host_s * 1000.0 + 0.5),
                                      .outcome = (char *)outcome_of(status, j),
                                      .started_at =
                                          now - (int64_t)((realm_now_s() - j->t_admit) * 1000.0),
                                      .finished_at = now};
    struct realm_err err;
    realm_err_clear(&err);
    if (realm_registry_usage_append(s->state->reg, &u, &err))
        realm_log(REALM_LOG_ERROR, "server",
                  "usage ledger: request %s of tenant %s not recorded: %s", j->id, u.tenant,
                  err.msg);
}

void srv_state_record_host(struct realm_server *s, struct srv_tenant *t, size_t model,
                           const char *key_label, const char *outcome, int64_t prompt_tokens,
                           double host_s, double t_admit) {
    const int64_t now = unix_ms();
    const struct realm_reg_usage u = {.tenant = atomic_load(&t->spec)->id,
                                      .model = s->cfg->models[model].name,
                                      .key_label = (char *)key_label,
                                      .prompt_tokens = prompt_tokens,
                                      .completion_tokens = 0,
                                      .host_ms = (int64_t)(host_s * 1000.0 + 0.5),
                                      .outcome = (char *)outcome,
                                      .started_at =
                                          now - (int64_t)((realm_now_s() - t_admit) * 1000.0),
                                      .finished_at = now};
    struct realm_err err;
    realm_err_clear(&err);
    if (realm_registry_usage_append(s->state->reg, &u, &err))
        realm_log(REALM_LOG_ERROR, "server",
                  "usage ledger: a %s request of tenant %s not recorded: %s", outcome, u.tenant,
                  err.msg);
}
