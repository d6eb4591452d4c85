/*
 * backend.c — the server's side of the sandbox (backend.h over include/realm/sandbox.h): loads
 * every configured model once (model store → realm_served: weights, tokenizer, engine, KV pool,
 * continuous-batching scheduler), registers it with one sandbox host by name, compiles each
 * distinct guest binary once, and keeps per tenant a pool of guest instances — an instance (a
 * Wasmtime store) runs one request at a time, so concurrent requests of a tenant use several,
 * instantiated on demand and kept idle for reuse.
 *
 * Owns: the store, models, tokenizers, engines, schedulers, the sandbox host, modules and
 * instances. Thread rule: srv_backend_generate is called concurrently; each pool's mutex guards
 * its idle list and counters; everything else is immutable after srv_backend_new.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/kvpool.h"
#include "realm/log.h"
#include "realm/model.h"
#include "realm/sandbox.h"
#include "realm/sched.h"
#include "realm/served.h"
#include "realm/server.h"
#include "realm/status.h"
#include "realm/store.h"
#include "realm/tokenizer.h"
#include "server/backend.h"
#include "server/srv.h"

#define GUEST_MEMORY_DEFAULT                                                                       \
    (UINT64_C(64) << 20) /* a tenant's guest memory without guest_memory_mb */
/* An idle instance whose linear memory grew this far past a fresh one's is freed once it has been
 * idle for IDLE_TRIM_S: memory a guest grew once (a bomb, a 16 MiB buffer) would otherwise stay
 * resident for good. Not at once: a tenant whose every request grows its memory would then
 * re-instantiate per request, which costs other tenants CPU. */
#define IDLE_MEMORY_SLACK (UINT64_C(4) << 20)
#define IDLE_TRIM_S 2.0

struct be_model {
    struct realm_gguf *gguf; /* from the store */
    struct realm_served *sv; /* weights, tokenizer, engine, KV pool (every tenant's
                                sessions on this model), scheduler */
};

struct be_idle {
    struct realm_sbx_tenant *inst;
    struct realm_sbx_module *module; /* what it runs: a stale one (the tenant deployed another) is
                                        freed instead of reused */
    int32_t sessions;                /* left open by its last request (should be 0) */
    int64_t kv_bytes;
    bool grown;   /* memory past base_memory + IDLE_MEMORY_SLACK */
    double since; /* when it went idle (realm_now_s) */
};

struct be_pool {
    /* the tenant's spec: limits, grants (replaced whole in state mode; see srv.h srv_tenant) */
    const struct realm_tenant_spec *_Atomic spec;
    pthread_mutex_t mu;
    struct realm_sbx_module *module; /* new instances run this (borrowed from the module list);
                                        under mu: a deploy swaps it */
    struct be_idle *idle;            /* idle instances (capacity cfg->max_inflight) */
    int32_t n_idle;
    int64_t alive; /* instances existing (idle + busy) */
    int64_t busy;
    int64_t idle_sessions; /* sessions still open in idle instances (should stay 0) */
    int64_t idle_kv_bytes;
    uint64_t base_memory; /* linear memory of a freshly started instance */
    /* host memory the tenant's guests hold through imports, over all its instances */
    struct realm_alloc_budget host_budget;
};

struct srv_backend {
    const struct realm_server_config *cfg;
    struct realm_store *store;
    struct be_model *models;
    size_t n_models;
    struct realm_sbx_host *host;
    pthread_mutex_t mod_mu;            /* guards the module list (deploys add to it at run time) */
    struct realm_sbx_module **modules; /* [0] the default guest, then one per distinct path */
    char **module_paths;
    size_t n_modules;
    struct be_pool *pools;  /* one per tenant slot (cap_pools; never moves) */
    _Atomic size_t n_pools; /* pools ready (a pool is complete before it is counted) */
    size_t cap_pools;
    uint64_t memory_cap; /* the sandbox's largest guest memory (its pooling slot) */
};

static int load_model(struct srv_backend *b, size_t i, struct realm_err *err) {
    const struct realm_model_spec *spec = &b->cfg->models[i];
    struct be_model *m = &b->models[i];
    int rc;
    if ((rc = realm_store_open(b->store, spec->path, &m->gguf, err))) return rc;
    /* many tenants decode together here: the packed layout is the faster one for batched steps */
    const struct realm_served_params sp = {.prepack = true,
                                           .kv_bytes = (size_t)b->cfg->kv_memory_bytes,
                                           .tenant_share = b->cfg->tenant_step_share,
                                           .contended_prefill = b->cfg->contended_prefill_rows,
                                           .prefill_reserve = b->cfg->prefill_reserve_rows,
                                           .max_active = b->cfg->max_active_sequences};
    if ((rc = realm_served_new(m->gguf, &sp, &m->sv, err))) return rc;
    /* the config's chat_template (a family name or a Jinja file) replaces the file's own */
    if (spec->chat_template &&
        (rc = realm_tokenizer_set_chat_template(m->sv->tok, spec->chat_template, err)))
        return rc;
    struct realm_kv_pool_stats ks;
    realm_kv_pool_get_stats(m->sv->kv, &ks);
    realm_log(REALM_LOG_INFO, "server", "model %s: KV pool of %d blocks x %d positions (%lld MiB)",
              spec->name, ks.n_blocks, m->sv->kv_block_tokens,
              (long long)(b->cfg->kv_memory_bytes >> 20));
    struct realm_sbx_model_desc d = {.name = spec->name,
                                     .model = m->sv->model,
                                     .tok = m->sv->tok,
                                     .sched = m->sv->sched,
                                     .kv_pool = m->sv->kv};
    return realm_sbx_host_add_model(b->host, &d, err);
}

/* How every instance of pool p is made; `cancel` (may be NULL) aborts a start that hangs. */
static struct realm_sbx_tenant_params instance_params(struct srv_backend *b, struct be_pool *p,
                                                      const atomic_bool *cancel) {
    const struct realm_tenant_spec *sp =
        atomic_load(&p->spec); /* one snapshot for the whole instance */
    const struct realm_tenant_limits *l = &sp->limits;
    const char **models = sp->all_models ? NULL : (const char **)sp->models;
    return (struct realm_sbx_tenant_params){
        .name = sp->id,
        .default_model = models && sp->n_models ? models[0] : b->cfg->models[0].name,
        .models = models,
        .n_models = (int)sp->n_models,
        /* one scheduler identity per server tenant, however many instances serve it at once */
        .group = (uint32_t)(p - b->pools) + 1,
        .memory_limit =
            l->guest_memory_bytes > 0 ? (uint64_t)l->guest_memory_bytes : GUEST_MEMORY_DEFAULT,
        .init_wall_ms =
            (uint64_t)(l->init_wall_ms > 0 ? l->init_wall_ms : REALM_DEFAULT_INIT_WALL_MS),
        .generate_wall_ms = (uint64_t)(l->generate_wall_ms > 0 ? l->generate_wall_ms
                                                               : REALM_DEFAULT_GENERATE_WALL_MS),
        .cancel = cancel,
        .host_budget = &p->host_budget};
}

/* The compiled module for `path` (NULL: the default guest), compiling it on first use. Caller
 * holds mod_mu. */
static int module_for_locked(struct srv_backend *b, const char *path, struct realm_sbx_module **out,
                             struct realm_err *err) {
    if (!path) path = b->cfg->default_guest;
    if (!path)
        return realm_err_set(err, REALM_E_INVALID, "server: no default guest (.wasm) configured");
    for (size_t i = 0; i < b->n_modules; i++)
        if (!strcmp(b->module_paths[i], path)) {
            *out = b->modules[i];
            return REALM_OK;
        }
    struct realm_sbx_module **mods = realm_realloc(b->modules, (b->n_modules + 1) * sizeof *mods);
    if (!mods) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    b->modules = mods;
    char **paths = realm_realloc(b->module_paths, (b->n_modules + 1) * sizeof *paths);
    if (!paths) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    b->module_paths = paths;
    char *p = realm_strndup(path, strlen(path));
    if (!p) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    int rc = realm_sbx_module_load(b->host, path, &mods[b->n_modules], err);
    if (rc) {
        realm_free(p);
        return rc;
    }
    paths[b->n_modules] = p;
    *out = mods[b->n_modules++];
    return REALM_OK;
}

static int module_for(struct srv_backend *b, const char *path, struct realm_sbx_module **out,
                      struct realm_err *err) {
    pthread_mutex_lock(&b->mod_mu);
    int rc = module_for_locked(b, path, out, err);
    pthread_mutex_unlock(&b->mod_mu);
    return rc;
}

/* Prefixes err's message with "tenant ID: " (the caller's context). */
static int tenant_err(struct realm_err *err, int rc, const char *id) {
    if (err) {
        char tmp[REALM_ERR_MSG_MAX];
        snprintf(tmp, sizeof tmp, "%s", err->msg);
        realm_err_set(err, rc, "tenant %s: %s", id, tmp);
    }
    return rc;
}

/* The tenant's KV block quota in every model's pool (its group id is its index + 1). */
static void apply_kv_quota(struct srv_backend *b, size_t i, const struct realm_tenant_spec *sp) {
    for (size_t k = 0; k < b->n_models; k++)
        realm_kv_pool_set_quota(b->models[k].sv->kv, (uint32_t)i + 1,
                                sp->limits.kv_blocks > 0 ? sp->limits.kv_blocks : 0);
}

/* The tenant's weight in every model's scheduler (the same identity: index + 1). */
static void apply_sched_weight(struct srv_backend *b, size_t i,
                               const struct realm_tenant_spec *sp) {
    for (size_t k = 0; k < b->n_models; k++) /* weights are range-checked by the config */
        (void)realm_sched_set_tenant_weight(b->models[k].sv->sched, (uint32_t)i + 1,
                                            sp->weight > 0 ? sp->weight : 1);
}

/* Makes pool i ready for tenant spec sp running the guest at guest_path (NULL: the default one)
 * and starts one instance, so that a guest whose realm_init fails is reported now. */
static int pool_init(struct srv_backend *b, size_t i, const struct realm_tenant_spec *sp,
                     const char *guest_path, struct realm_err *err) {
    struct be_pool *p = &b->pools[i];
    atomic_store(&p->spec, sp);
    pthread_mutex_init(&p->mu, NULL);
    p->idle = realm_calloc((size_t)b->cfg->max_inflight, sizeof *p->idle);
    if (!p->idle) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    int rc = module_for(b, guest_path, &p->module, err);
    if (rc) return tenant_err(err, rc, sp->id);
    apply_kv_quota(b, i, sp);
    apply_sched_weight(b, i, sp);
    p->host_budget.limit = sp->limits.host_memory_bytes > 0 ? sp->limits.host_memory_bytes
                                                            : REALM_DEFAULT_HOST_MEMORY_BYTES;
    struct realm_sbx_tenant_params tp = instance_params(b, p, NULL);
    struct realm_sbx_tenant *inst;
    if ((rc = realm_sbx_tenant_new(b->host, p->module, &tp, &inst, err)))
        return tenant_err(err, rc, sp->id);
    struct realm_sbx_tenant_stats st0;
    realm_sbx_tenant_get_stats(inst, &st0);
    p->base_memory = st0.memory_bytes;
    p->idle[p->n_idle++] =
        (struct be_idle){.inst = inst, .module = p->module, .since = realm_now_s()};
    p->alive = 1;
    return REALM_OK;
}

/* Instances a tenant keeps idle: enough for its concurrency, within the server's. */
static int32_t idle_cap(const struct srv_backend *b, const struct be_pool *p) {
    const int32_t mc = atomic_load(&p->spec)->limits.max_concurrent;
    return mc > 0 && mc < b->cfg->max_inflight ? mc : b->cfg->max_inflight;
}

int srv_backend_new(const struct realm_server_config *cfg, struct srv_backend **out,
                    struct realm_err *err) {
    struct srv_backend *b = realm_calloc(1, sizeof *b);
    if (!b) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    b->cfg = cfg;
    pthread_mutex_init(&b->mod_mu, NULL);
    int rc;
    /* one host-wide cap (the pooling slot size): the largest any tenant asks for, and at least the
     * default that tenants without guest_memory_mb get */
    struct realm_sbx_config sc = {.memory_limit = GUEST_MEMORY_DEFAULT};
    for (size_t i = 0; i < cfg->n_tenants; i++)
        if ((uint64_t)cfg->tenants[i].limits.guest_memory_bytes > sc.memory_limit)
            sc.memory_limit = (uint64_t)cfg->tenants[i].limits.guest_memory_bytes;
    b->memory_cap = sc.memory_limit;
    if ((rc = realm_store_new(&b->store))) {
        realm_err_set(err, rc, "server: out of memory");
        goto fail;
    }
    if ((rc = realm_sbx_host_new(&sc, &b->host, err))) goto fail;
    b->cap_pools = cfg->state_dir ? (size_t)cfg->max_tenants : cfg->n_tenants;
    b->models = realm_calloc(cfg->n_models, sizeof *b->models);
    b->pools = realm_calloc(b->cap_pools ? b->cap_pools : 1, sizeof *b->pools);
    if (!b->models || !b->pools) {
        rc = realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
        goto fail;
    }
    b->n_models = cfg->n_models;
    for (size_t i = 0; i < cfg->n_models; i++) {
        if ((rc = load_model(b, i, err))) {
            if (err) {
                char tmp[REALM_ERR_MSG_MAX];
                snprintf(tmp, sizeof tmp, "%s", err->msg);
                realm_err_set(err, rc, "model %s: %s", cfg->models[i].name, tmp);
            }
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        rc = pool_init(b, i, &cfg->tenants[i], cfg->tenants[i].guest, err);
        atomic_store(&b->n_pools, i + 1); /* counted even when incomplete: free cleans it up */
        if (rc) goto fail;
    }
    *out = b;
    return REALM_OK;
fail:
    srv_backend_free(b);
    return rc;
}

int srv_backend_tenant_add(struct srv_backend *b, size_t tenant,
                           const struct realm_tenant_spec *spec, const char *guest_path,
                           struct realm_err *err) {
    if (tenant != atomic_load(&b->n_pools) || tenant >= b->cap_pools)
        return realm_err_set(err, REALM_E_INTERNAL, "server: tenant slot %zu out of order", tenant);
    int rc = pool_init(b, tenant, spec, guest_path, err);
    atomic_store(&b->n_pools,
                 tenant + 1); /* even when incomplete: its idle list is freed with the rest */
    return rc;
}

void srv_backend_tenant_update(struct srv_backend *b, size_t tenant,
                               const struct realm_tenant_spec *spec) {
    struct be_pool *p = &b->pools[tenant];
    atomic_store(&p->spec, spec);
    apply_kv_quota(b, tenant, spec);
    apply_sched_weight(b, tenant, spec);
    p->host_budget.limit = spec->limits.host_memory_bytes > 0 ? spec->limits.host_memory_bytes
                                                              : REALM_DEFAULT_HOST_MEMORY_BYTES;
}

int srv_backend_tenant_set_guest(struct srv_backend *b, size_t tenant, const char *guest_path,
                                 struct realm_err *err) {
    struct be_pool *p = &b->pools[tenant];
    struct realm_sbx_module *mod;
    int rc = module_for(b, guest_path, &mod, err);
    if (rc) return tenant_err(err, rc, atomic_load(&p->spec)->id);
    /* idle instances of the old guest go now; busy ones finish their request on it and are freed
     * when they come back (their module no longer matches) */
    struct realm_sbx_tenant *stale[64];
    int n_stale = 0;
    pthread_mutex_lock(&p->mu);
    p->module = mod;
    for (int32_t k = 0; k < p->n_idle;) {
        struct be_idle *e = &p->idle[k];
        if (e->module == mod || n_stale == 64) {
            k++;
            continue;
        }
        stale[n_stale++] = e->inst;
        p->idle_sessions -= e->sessions;
        p->idle_kv_bytes -= e->kv_bytes;
        p->alive--;
        *e = p->idle[--p->n_idle];
    }
    pthread_mutex_unlock(&p->mu);
    for (int k = 0; k < n_stale; k++)
        realm_sbx_tenant_free(stale[k]);
    return REALM_OK;
}

int srv_backend_guest_check(struct srv_backend *b, size_t tenant, const void *wasm, size_t len,
                            char *msg, size_t cap) {
    struct be_pool *p = &b->pools[tenant];
    struct realm_err err;
    realm_err_clear(&err);
    struct realm_sbx_module *mod = NULL;
    struct realm_sbx_tenant *inst = NULL;
    int rc = realm_sbx_module_new(b->host, wasm, len, "upload.wasm", &mod, &err);
    if (!rc) {
        /* a scratch instance with the tenant's limits runs realm_init within its budget */
        struct realm_sbx_tenant_params tp = instance_params(b, p, NULL);
        rc = realm_sbx_tenant_new(b->host, mod, &tp, &inst, &err);
    }
    if (rc) snprintf(msg, cap, "%s", err.msg[0] ? err.msg : realm_strerror(rc));
    realm_sbx_tenant_free(inst);
    realm_sbx_module_free(mod);
    return rc;
}

uint64_t srv_backend_guest_memory_cap(const struct srv_backend *b) {
    return b->memory_cap;
}

bool srv_backend_tenant_ready(struct srv_backend *b, size_t tenant) {
    struct be_pool *p = &b->pools[tenant];
    pthread_mutex_lock(&p->mu);
    const bool ready = p->idle && p->module;
    pthread_mutex_unlock(&p->mu);
    return ready;
}

void srv_backend_free(struct srv_backend *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n_pools; i++) {
        struct be_pool *p = &b->pools[i];
        for (int32_t k = 0; k < p->n_idle; k++)
            realm_sbx_tenant_free(p->idle[k].inst);
        realm_free(p->idle);
        pthread_mutex_destroy(&p->mu);
    }
    realm_free(b->pools);
    for (size_t i = 0; i < b->n_modules; i++) {
        realm_sbx_module_free(b->modules[i]);
        realm_free(b->module_paths[i]);
    }
    realm_free(b->modules);
    realm_free(b->module_paths);
    /* the host first: it borrows the models (every session was freed with its instance) */
    realm_sbx_host_free(b->host);
    for (size_t i = 0; i < b->n_models; i++) {
        realm_served_free(b->models[i].sv);
        realm_store_release(b->store, b->models[i].gguf);
    }
    realm_free(b->models);
    realm_store_free(b->store);
    pthread_mutex_destroy(&b->mod_mu);
    realm_free(b);
}

/* Frees one idle instance of another tenant (the one with the most idle), so that a tenant
 * that needs an instance is not refused while others hoard idle ones. */
static bool evict_one(struct srv_backend *b, struct be_pool *self) {
    struct be_pool *victim = NULL;
    int32_t most = 0;
    for (size_t i = 0; i < b->n_pools; i++) {
        struct be_pool *p = &b->pools[i];
        if (p == self) continue;
        pthread_mutex_lock(&p->mu);
        if (p->n_idle > most) {
            most = p->n_idle;
            victim = p;
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (!victim) return false;
    struct realm_sbx_tenant *inst = NULL;
    pthread_mutex_lock(&victim->mu);
    if (victim->n_idle > 0) {
        struct be_idle *e = &victim->idle[--victim->n_idle];
        inst = e->inst;
        victim->idle_sessions -= e->sessions;
        victim->idle_kv_bytes -= e->kv_bytes;
        victim->alive--;
    }
    pthread_mutex_unlock(&victim->mu);
    realm_sbx_tenant_free(inst);
    return inst != NULL;
}

/* What the tenant is charged: the host's own count; the guest's report may raise it (a guest
 * that counts something the host cannot see, e.g. tokens it sampled but never decoded) but never
 * lower it. */
static void charge(struct srv_gen_result *out, const struct realm_sbx_usage *u) {
    out->guest_prompt_tokens = u->prompt_tokens;
    out->guest_completion_tokens = u->completion_tokens;
    out->finish_reason = u->finish_reason;
    out->prompt_tokens =
        u->measured_prompt_tokens > u->prompt_tokens ? u->measured_prompt_tokens : u->prompt_tokens;
    out->completion_tokens = u->measured_completion_tokens > u->completion_tokens
                                 ? u->measured_completion_tokens
                                 : u->completion_tokens;
    if (out->prompt_tokens < 0) out->prompt_tokens = 0;
    if (out->completion_tokens < 0) out->completion_tokens = 0;
}

int srv_backend_generate(struct srv_backend *b, size_t tenant, struct realm_sbx_request *r,
                         struct srv_gen_result *out) {
    struct be_pool *p = &b->pools[tenant];
    struct realm_err err;
    realm_err_clear(&err);
    memset(out, 0, sizeof *out);
    out->guest_prompt_tokens = out->guest_completion_tokens = out->finish_reason = -1;

    struct realm_sbx_tenant *inst = NULL;
    pthread_mutex_lock(&p->mu);
    struct realm_sbx_module *mod = p->module; /* the guest this request runs, to its end */
    if (p->n_idle > 0) {
        struct be_idle *e = &p->idle[--p->n_idle];
        inst = e->inst;
        p->idle_sessions -= e->sessions;
        p->idle_kv_bytes -= e->kv_bytes;
        p->busy++;
    }
    pthread_mutex_unlock(&p->mu);
    if (!inst) {
        struct realm_sbx_tenant_params tp = instance_params(b, p, &r->cancel);
        int rc = realm_sbx_tenant_new(b->host, mod, &tp, &inst, &err);
        if (rc == REALM_E_LIMIT &&
            evict_one(b, p)) { /* every instance slot taken: free an idle one */
            realm_err_clear(&err);
            rc = realm_sbx_tenant_new(b->host, mod, &tp, &inst, &err);
        }
        if (rc) {
            out->status = rc == REALM_E_LIMIT ? REALM_E_BUSY : rc;
            snprintf(out->message, sizeof out->message, "%s",
                     err.msg[0] ? err.msg : realm_strerror(rc));
            return out->status;
        }
        pthread_mutex_lock(&p->mu);
        p->alive++;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
    }

    int rc = realm_sbx_tenant_generate(inst, r, &err);
    out->status = rc;
    if (rc)
        snprintf(out->message, sizeof out->message, "%s",
                 err.msg[0] ? err.msg : realm_strerror(rc));
    charge(out, &r->usage);

    /* sessions the guest left open would hold KV blocks while the instance idles: close them */
    int32_t leaked = realm_sbx_tenant_close_sessions(inst);
    if (leaked)
        realm_log(REALM_LOG_WARN, "server", "tenant %s: the guest left %d session(s) open; closed",
                  atomic_load(&p->spec)->id, leaked);
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(inst, &st); /* safe: this thread still owns the instance */
    pthread_mutex_lock(&p->mu);
    p->busy--;
    /* an instance whose memory grew stays idle with it for now; srv_backend_trim_idle frees it
     * if it is still idle IDLE_TRIM_S later. One of a guest the tenant has since replaced goes. */
    if (p->n_idle < idle_cap(b, p) && mod == p->module) {
        p->idle[p->n_idle++] =
            (struct be_idle){.inst = inst,
                             .module = mod,
                             .sessions = st.sessions,
                             .kv_bytes = (int64_t)st.kv_bytes,
                             .grown = st.memory_bytes > p->base_memory + IDLE_MEMORY_SLACK,
                             .since = realm_now_s()};
        p->idle_sessions += st.sessions;
        p->idle_kv_bytes += (int64_t)st.kv_bytes;
        inst = NULL;
    } else {
        p->alive--;
    }
    pthread_mutex_unlock(&p->mu);
    realm_sbx_tenant_free(inst); /* only when the idle list is full or the guest was replaced */
    return rc;
}

int srv_backend_embed(struct srv_backend *b, size_t tenant, size_t model, const int32_t *tokens,
                      int32_t n, float *states, const atomic_bool *cancel, struct realm_err *err) {
    struct realm_served *sv = b->models[model].sv;
    const uint32_t group = (uint32_t)tenant + 1; /* the tenant's KV quota and scheduler identity */
    struct realm_session *sess = NULL;
    int rc = realm_served_session(sv, group, n, &sess, err);
    if (rc) return rc;
    rc = realm_sched_embed(sv->sched, group, sess, tokens, n, states, cancel, err);
    realm_session_free(sess); /* its blocks go back (full ones stay cached for the tenant) */
    return rc;
}

int32_t srv_backend_n_embd(struct srv_backend *b, size_t model) {
    return realm_model_config(b->models[model].sv->model)->n_embd;
}

int32_t srv_backend_n_ctx_train(struct srv_backend *b, size_t model) {
    return realm_model_config(b->models[model].sv->model)->n_ctx_train;
}

const struct realm_tokenizer *srv_backend_tokenizer(struct srv_backend *b, size_t model) {
    return b->models[model].sv->tok;
}

int32_t srv_backend_trim_idle(struct srv_backend *b) {
    double now = realm_now_s();
    int32_t freed = 0;
    for (size_t i = 0; i < b->n_pools; i++) {
        struct be_pool *p = &b->pools[i];
        for (;;) {
            struct realm_sbx_tenant *inst = NULL;
            pthread_mutex_lock(&p->mu);
            for (int32_t k = 0; k < p->n_idle; k++) {
                struct be_idle *e = &p->idle[k];
                if (!e->grown || now - e->since < IDLE_TRIM_S) continue;
                inst = e->inst;
                p->idle_sessions -= e->sessions;
                p->idle_kv_bytes -= e->kv_bytes;
                p->alive--;
                *e = p->idle[--p->n_idle]; /* order does not matter: any idle instance serves */
                break;
            }
            pthread_mutex_unlock(&p->mu);
            if (!inst) break;
            realm_sbx_tenant_free(inst); /* outside the lock: unmapping takes a moment */
            freed++;
        }
    }
    return freed;
}

void srv_backend_stats_get(struct srv_backend *b, struct srv_backend_stats *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < b->n_models; i++) {
        if (!b->models[i].sv) continue;
        struct realm_sched_stats st;
        realm_sched_get_stats(b->models[i].sv->sched, &st);
        out->have_sched = true;
        out->steps += st.steps;
        out->rows += st.rows;
        out->decode_rows += st.decode_rows;
        out->prefill_rows += st.prefill_rows;
        out->queue_depth += st.queue_depth;
        out->busy_seconds += st.busy_seconds;
        for (int k = 0; k < REALM_SCHED_HIST_BUCKETS && k < 10; k++)
            out->batch_hist[k] += st.batch_hist[k];
        out->prefix_tokens += st.prefix_tokens;
        out->kv_refused += st.requests_refused;
        out->admission_waiting += st.admission_waiting;
        out->active_sequences += st.active_sequences;
        out->admitted += st.admitted;
        out->admission_wait_seconds += st.admission_wait_seconds;
        if (st.admission_wait_max_s > out->admission_wait_max_s)
            out->admission_wait_max_s = st.admission_wait_max_s;
        out->prompts_done += st.prompts_done;
        out->prompt_steps_total += st.prompt_steps_total;
        if (st.prompt_steps_max > out->prompt_steps_max)
            out->prompt_steps_max = st.prompt_steps_max;
        out->prompt_seconds_total += st.prompt_seconds_total;
    }
    for (size_t i = 0; i < b->n_models; i++) {
        if (!b->models[i].sv) continue;
        struct realm_kv_pool_stats ks;
        realm_kv_pool_get_stats(b->models[i].sv->kv, &ks);
        out->have_kv = true;
        out->kv_blocks += ks.n_blocks;
        out->kv_used += ks.used;
        out->kv_cached += ks.cached_idle;
        out->kv_free += ks.free;
        out->kv_prefix_hits += ks.prefix_hits;
        out->kv_cow += ks.cow_copies;
        out->kv_evictions += ks.evictions;
        out->kv_touched += ks.touched;
        out->kv_resident_bytes += (int64_t)ks.touched * (int64_t)realm_model_kv_block_bytes(
                                                            b->models[i].sv->model, REALM_KV_F16,
                                                            b->models[i].sv->kv_block_tokens);
    }
    for (size_t i = 0; i < b->n_pools; i++) {
        struct be_pool *p = &b->pools[i];
        pthread_mutex_lock(&p->mu);
        out->instances += p->alive;
        out->instances_busy += p->busy;
        out->idle_sessions += p->idle_sessions;
        out->idle_kv_bytes += p->idle_kv_bytes;
        pthread_mutex_unlock(&p->mu);
    }
}

void srv_backend_tenant_host_memory(struct srv_backend *b, size_t tenant, int64_t *bytes,
                                    int64_t *refused) {
    *bytes = atomic_load(&b->pools[tenant].host_budget.used);
    *refused = atomic_load(&b->pools[tenant].host_budget.refused);
}

void srv_backend_tenant_sched(struct srv_backend *b, size_t tenant, int64_t *decode_tokens,
                              int64_t *prefill_tokens, int32_t *weight) {
    *decode_tokens = *prefill_tokens = 0;
    *weight = 1;
    for (size_t i = 0; i < b->n_models; i++) {
        if (!b->models[i].sv) continue;
        struct realm_sched_tenant_stats ts;
        if (!realm_sched_tenant_get_stats(b->models[i].sv->sched, (uint32_t)tenant + 1, &ts))
            continue;
        *decode_tokens += ts.decode_tokens;
        *prefill_tokens += ts.prefill_tokens;
        *weight = ts.weight;
    }
}

int32_t srv_backend_tenant_kv_blocks(struct srv_backend *b, size_t tenant) {
    int32_t n = 0;
    for (size_t i = 0; i < b->n_models; i++)
        if (b->models[i].sv)
            n += realm_kv_pool_tenant_used(b->models[i].sv->kv, (uint32_t)tenant + 1);
    return n;
}
