/*
 * backend.c — the server's side of the sandbox (backend.h over include/realm/sandbox.h): loads
 * every configured model once (model store → weights, tokenizer, engine, continuous-batching
 * scheduler), registers it with one sandbox host by name, compiles each distinct guest binary
 * once, and keeps per tenant a pool of guest instances — an instance (a Wasmtime store) runs one
 * request at a time, so concurrent requests of a tenant use several, instantiated on demand and
 * kept idle for reuse.
 *
 * Owns: the store, models, tokenizers, engines, schedulers, the sandbox host, modules and
 * instances. Thread rule: srv_backend_generate is called concurrently; each pool's mutex guards
 * its idle list and counters; everything else is immutable after srv_backend_new.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/server.h"
#include "realm/kvpool.h"
#include "realm/log.h"
#include "realm/model.h"
#include "realm/sandbox.h"
#include "realm/sched.h"
#include "realm/status.h"
#include "realm/store.h"
#include "realm/tokenizer.h"
#include "server/backend.h"
#include "server/srv.h"

#define MAX_BATCH 64     /* rows per batched forward (engine scratch and scheduler steps) */
#define PREFILL_CHUNK 32 /* prompt tokens per request per step */
#define KV_BLOCK_TOKENS 16
#define GUEST_MEMORY_DEFAULT (UINT64_C(64) << 20) /* a tenant's guest memory without guest_memory_mb */
/* An idle instance whose linear memory grew this far past a fresh one's is freed once it has been
 * idle for IDLE_TRIM_S: memory a guest grew once (a bomb, a 16 MiB buffer) would otherwise stay
 * resident for good. Not at once: a tenant whose every request grows its memory would then
 * re-instantiate per request, which costs other tenants CPU. */
#define IDLE_MEMORY_SLACK (UINT64_C(4) << 20)
#define IDLE_TRIM_S 2.0

struct be_model {
    struct realm_gguf *gguf;
    struct realm_model *model;
    struct realm_tokenizer *tok;
    struct realm_engine *engine;
    struct realm_sched *sched;
    struct realm_kv_pool *kv;        /* every tenant's sessions on this model */
};

struct be_idle {
    struct realm_sbx_tenant *inst;
    int32_t sessions;                /* left open by its last request (should be 0) */
    int64_t kv_bytes;
    bool grown;                      /* memory past base_memory + IDLE_MEMORY_SLACK */
    double since;                    /* when it went idle (srv_now) */
};

struct be_pool {
    const struct realm_tenant_spec *spec;
    struct realm_sbx_module *module; /* borrowed from the backend's module list */
    const char **models;             /* allowed names (NULL: all) */
    pthread_mutex_t mu;
    struct be_idle *idle;            /* idle instances (capacity cap_idle) */
    int32_t n_idle, cap_idle;
    int64_t alive;                   /* instances existing (idle + busy) */
    int64_t busy;
    int64_t idle_sessions;           /* sessions still open in idle instances (should stay 0) */
    int64_t idle_kv_bytes;
    uint64_t base_memory;            /* linear memory of a freshly started instance */
    /* host memory the tenant's guests hold through imports, over all its instances */
    struct realm_alloc_budget host_budget;
};

struct srv_backend {
    const struct realm_server_config *cfg;
    struct realm_store *store;
    struct be_model *models;
    size_t n_models;
    struct realm_sbx_host *host;
    struct realm_sbx_module **modules; /* [0] the default guest, then one per distinct path */
    char **module_paths;
    size_t n_modules;
    struct be_pool *pools;             /* one per tenant */
    size_t n_pools;
};

static int sched_decode(void *ctx, uint32_t tenant, struct realm_session *session, const int32_t *tokens, int32_t n,
                        float *logits, const atomic_bool *cancel, struct realm_err *err) {
    return realm_sched_decode(ctx, tenant, session, tokens, n, logits, cancel, err);
}

static int load_model(struct srv_backend *b, size_t i, struct realm_err *err) {
    const struct realm_model_spec *spec = &b->cfg->models[i];
    struct be_model *m = &b->models[i];
    int rc;
    if ((rc = realm_store_open(b->store, spec->path, &m->gguf, err))) return rc;
    /* many tenants decode together here: the packed layout is the faster one for batched steps */
    const struct realm_model_opts mo = {.prepack = true};
    if ((rc = realm_model_load_opts(m->gguf, &mo, &m->model, err))) return rc;
    if ((rc = realm_tokenizer_load(m->gguf, &m->tok, err))) return rc;
    if ((rc = realm_engine_new(m->model, 0, MAX_BATCH, &m->engine, err))) return rc;
    /* the paged KV pool: address space is reserved here, pages are committed as blocks fill */
    if ((rc = realm_model_kv_pool_new(m->model, REALM_KV_F16, (size_t)b->cfg->kv_memory_bytes, KV_BLOCK_TOKENS, 0,
                                      &m->kv, err)))
        return rc;
    struct realm_kv_pool_stats ks;
    realm_kv_pool_get_stats(m->kv, &ks);
    realm_log(REALM_LOG_INFO, "server", "model %s: KV pool of %d blocks x %d positions (%lld MiB)", spec->name,
              ks.n_blocks, KV_BLOCK_TOKENS, (long long)(b->cfg->kv_memory_bytes >> 20));
    struct realm_sched_backend sb = realm_sched_backend_engine(m->engine, m->model);
    struct realm_sched_params sp = {.max_batch_tokens = MAX_BATCH, .prefill_chunk = PREFILL_CHUNK,
                                    .tenant_share = b->cfg->tenant_step_share,
                                    .contended_prefill = b->cfg->contended_prefill_rows};
    if ((rc = realm_sched_new(&sb, &sp, &m->sched, err))) return rc;
    struct realm_sbx_model_desc d = {
        .name = spec->name,
        .model = m->model,
        .tok = m->tok,
        .decode = sched_decode,
        .decode_ctx = m->sched,
        .kv_pool = m->kv};
    return realm_sbx_host_add_model(b->host, &d, err);
}

/* How every instance of pool p is made; `cancel` (may be NULL) aborts a start that hangs. */
static struct realm_sbx_tenant_params instance_params(struct srv_backend *b, struct be_pool *p,
                                                      const atomic_bool *cancel) {
    const struct realm_tenant_limits *l = &p->spec->limits;
    return (struct realm_sbx_tenant_params){
        .name = p->spec->id,
        .default_model = p->models && p->spec->n_models ? p->models[0] : b->cfg->models[0].name,
        .models = p->models,
        .n_models = (int)p->spec->n_models,
        /* one scheduler identity per server tenant, however many instances serve it at once */
        .group = (uint32_t)(p - b->pools) + 1,
        .memory_limit = l->guest_memory_bytes > 0 ? (uint64_t)l->guest_memory_bytes : GUEST_MEMORY_DEFAULT,
        .init_wall_ms = (uint64_t)(l->init_wall_ms > 0 ? l->init_wall_ms : REALM_DEFAULT_INIT_WALL_MS),
        .generate_wall_ms = (uint64_t)(l->generate_wall_ms > 0 ? l->generate_wall_ms : REALM_DEFAULT_GENERATE_WALL_MS),
        .cancel = cancel,
        .host_budget = &p->host_budget};
}

/* The compiled module for `path` (NULL: the default guest), compiling it on first use. */
static int module_for(struct srv_backend *b, const char *path, struct realm_sbx_module **out, struct realm_err *err) {
    if (!path) path = b->cfg->default_guest;
    if (!path) return realm_err_set(err, REALM_E_INVALID, "server: no default guest (.wasm) configured");
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

int srv_backend_new(const struct realm_server_config *cfg, struct srv_backend **out, struct realm_err *err) {
    struct srv_backend *b = realm_calloc(1, sizeof *b);
    if (!b) return realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
    b->cfg = cfg;
    int rc;
    /* one host-wide cap (the pooling slot size): the largest any tenant asks for, and at least the
     * default that tenants without guest_memory_mb get */
    struct realm_sbx_config sc = {.memory_limit = GUEST_MEMORY_DEFAULT};
    for (size_t i = 0; i < cfg->n_tenants; i++)
        if ((uint64_t)cfg->tenants[i].limits.guest_memory_bytes > sc.memory_limit)
            sc.memory_limit = (uint64_t)cfg->tenants[i].limits.guest_memory_bytes;
    if ((rc = realm_store_new(&b->store))) {
        realm_err_set(err, rc, "server: out of memory");
        goto fail;
    }
    if ((rc = realm_sbx_host_new(&sc, &b->host, err))) goto fail;
    b->models = realm_calloc(cfg->n_models, sizeof *b->models);
    b->pools = realm_calloc(cfg->n_tenants, sizeof *b->pools);
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
        struct be_pool *p = &b->pools[i];
        p->spec = &cfg->tenants[i];
        pthread_mutex_init(&p->mu, NULL);
        b->n_pools++;
        if ((rc = module_for(b, p->spec->guest, &p->module, err))) {
            if (err) {
                char tmp[REALM_ERR_MSG_MAX];
                snprintf(tmp, sizeof tmp, "%s", err->msg);
                realm_err_set(err, rc, "tenant %s: guest: %s", p->spec->id, tmp);
            }
            goto fail;
        }
        if (!p->spec->all_models) {
            p->models = realm_calloc(p->spec->n_models ? p->spec->n_models : 1, sizeof *p->models);
            if (!p->models) {
                rc = realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
                goto fail;
            }
            for (size_t k = 0; k < p->spec->n_models; k++) p->models[k] = p->spec->models[k];
        }
        /* the tenant's KV block quota, in every model's pool (its group id is its index + 1) */
        if (p->spec->limits.kv_blocks > 0)
            for (size_t k = 0; k < b->n_models; k++)
                realm_kv_pool_set_quota(b->models[k].kv, (uint32_t)i + 1, p->spec->limits.kv_blocks);
        p->cap_idle = cfg->max_inflight;
        if (p->spec->limits.max_concurrent > 0 && p->spec->limits.max_concurrent < p->cap_idle)
            p->cap_idle = p->spec->limits.max_concurrent;
        p->idle = realm_calloc((size_t)p->cap_idle, sizeof *p->idle);
        if (!p->idle) {
            rc = realm_err_set(err, REALM_E_NOMEM, "server: out of memory");
            goto fail;
        }
        p->host_budget.limit =
            p->spec->limits.host_memory_bytes > 0 ? p->spec->limits.host_memory_bytes : REALM_DEFAULT_HOST_MEMORY_BYTES;
        /* one instance up front: a guest whose realm_init fails is reported at start-up */
        struct realm_sbx_tenant_params tp = instance_params(b, p, NULL);
        struct realm_sbx_tenant *inst;
        if ((rc = realm_sbx_tenant_new(b->host, p->module, &tp, &inst, err))) {
            if (err) {
                char tmp[REALM_ERR_MSG_MAX];
                snprintf(tmp, sizeof tmp, "%s", err->msg);
                realm_err_set(err, rc, "tenant %s: %s", p->spec->id, tmp);
            }
            goto fail;
        }
        struct realm_sbx_tenant_stats st0;
        realm_sbx_tenant_get_stats(inst, &st0);
        p->base_memory = st0.memory_bytes;
        p->idle[p->n_idle++] = (struct be_idle){.inst = inst, .since = srv_now()};
        p->alive = 1;
    }
    *out = b;
    return REALM_OK;
fail:
    srv_backend_free(b);
    return rc;
}

void srv_backend_free(struct srv_backend *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n_pools; i++) {
        struct be_pool *p = &b->pools[i];
        for (int32_t k = 0; k < p->n_idle; k++) realm_sbx_tenant_free(p->idle[k].inst);
        realm_free(p->idle);
        realm_free(p->models);
        pthread_mutex_destroy(&p->mu);
    }
    realm_free(b->pools);
    for (size_t i = 0; i < b->n_modules; i++) {
        realm_sbx_module_free(b->modules[i]);
        realm_free(b->module_paths[i]);
    }
    realm_free(b->modules);
    realm_free(b->module_paths);
    /* schedulers first (they drive the engines), then the host (it borrows models) */
    for (size_t i = 0; i < b->n_models; i++) realm_sched_free(b->models[i].sched);
    realm_sbx_host_free(b->host);
    for (size_t i = 0; i < b->n_models; i++) {
        struct be_model *m = &b->models[i];
        realm_engine_free(m->engine);
        realm_kv_pool_free(m->kv); /* after the host: every session was freed with its instance */
        realm_tokenizer_free(m->tok);
        realm_model_free(m->model);
        realm_store_release(b->store, m->gguf);
    }
    realm_free(b->models);
    realm_store_free(b->store);
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
    out->prompt_tokens = u->measured_prompt_tokens > u->prompt_tokens ? u->measured_prompt_tokens : u->prompt_tokens;
    out->completion_tokens =
        u->measured_completion_tokens > u->completion_tokens ? u->measured_completion_tokens : u->completion_tokens;
    if (out->prompt_tokens < 0) out->prompt_tokens = 0;
    if (out->completion_tokens < 0) out->completion_tokens = 0;
}

int srv_backend_generate(struct srv_backend *b, size_t tenant, struct realm_sbx_request *r, struct srv_gen_result *out) {
    struct be_pool *p = &b->pools[tenant];
    struct realm_err err;
    realm_err_clear(&err);
    memset(out, 0, sizeof *out);
    out->guest_prompt_tokens = out->guest_completion_tokens = out->finish_reason = -1;

    struct realm_sbx_tenant *inst = NULL;
    pthread_mutex_lock(&p->mu);
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
        int rc = realm_sbx_tenant_new(b->host, p->module, &tp, &inst, &err);
        if (rc == REALM_E_LIMIT && evict_one(b, p)) { /* every instance slot taken: free an idle one */
            realm_err_clear(&err);
            rc = realm_sbx_tenant_new(b->host, p->module, &tp, &inst, &err);
        }
        if (rc) {
            out->status = rc == REALM_E_LIMIT ? REALM_E_BUSY : rc;
            snprintf(out->message, sizeof out->message, "%s", err.msg[0] ? err.msg : realm_strerror(rc));
            return out->status;
        }
        pthread_mutex_lock(&p->mu);
        p->alive++;
        p->busy++;
        pthread_mutex_unlock(&p->mu);
    }

    int rc = realm_sbx_tenant_generate(inst, r, &err);
    out->status = rc;
    if (rc) snprintf(out->message, sizeof out->message, "%s", err.msg[0] ? err.msg : realm_strerror(rc));
    charge(out, &r->usage);

    /* sessions the guest left open would hold KV blocks while the instance idles: close them */
    int32_t leaked = realm_sbx_tenant_close_sessions(inst);
    if (leaked)
        realm_log(REALM_LOG_WARN, "server", "tenant %s: the guest left %d session(s) open; closed", p->spec->id,
                  leaked);
    struct realm_sbx_tenant_stats st;
    realm_sbx_tenant_get_stats(inst, &st); /* safe: this thread still owns the instance */
    pthread_mutex_lock(&p->mu);
    p->busy--;
    /* an instance whose memory grew stays idle with it for now; srv_backend_trim_idle frees it
     * if it is still idle IDLE_TRIM_S later */
    if (p->n_idle < p->cap_idle) {
        p->idle[p->n_idle++] = (struct be_idle){.inst = inst,
                                                .sessions = st.sessions,
                                                .kv_bytes = (int64_t)st.kv_bytes,
                                                .grown = st.memory_bytes > p->base_memory + IDLE_MEMORY_SLACK,
                                                .since = srv_now()};
        p->idle_sessions += st.sessions;
        p->idle_kv_bytes += (int64_t)st.kv_bytes;
        inst = NULL;
    } else {
        p->alive--;
    }
    pthread_mutex_unlock(&p->mu);
    realm_sbx_tenant_free(inst); /* only when the idle list is full */
    return rc;
}

const struct realm_tokenizer *srv_backend_tokenizer(struct srv_backend *b, size_t model) {
    return b->models[model].tok;
}

int32_t srv_backend_trim_idle(struct srv_backend *b) {
    double now = srv_now();
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
        if (!b->models[i].sched) continue;
        struct realm_sched_stats st;
        realm_sched_get_stats(b->models[i].sched, &st);
        out->have_sched = true;
        out->steps += st.steps;
        out->rows += st.rows;
        out->decode_rows += st.decode_rows;
        out->prefill_rows += st.prefill_rows;
        out->queue_depth += st.queue_depth;
        out->busy_seconds += st.busy_seconds;
        for (int k = 0; k < REALM_SCHED_HIST_BUCKETS && k < 10; k++) out->batch_hist[k] += st.batch_hist[k];
        out->prefix_tokens += st.prefix_tokens;
        out->kv_refused += st.requests_refused;
    }
    for (size_t i = 0; i < b->n_models; i++) {
        if (!b->models[i].kv) continue;
        struct realm_kv_pool_stats ks;
        realm_kv_pool_get_stats(b->models[i].kv, &ks);
        out->have_kv = true;
        out->kv_blocks += ks.n_blocks;
        out->kv_used += ks.used;
        out->kv_cached += ks.cached_idle;
        out->kv_free += ks.free;
        out->kv_prefix_hits += ks.prefix_hits;
        out->kv_cow += ks.cow_copies;
        out->kv_evictions += ks.evictions;
        out->kv_touched += ks.touched;
        out->kv_resident_bytes +=
            (int64_t)ks.touched * (int64_t)realm_model_kv_block_bytes(b->models[i].model, REALM_KV_F16, KV_BLOCK_TOKENS);
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

void srv_backend_tenant_host_memory(struct srv_backend *b, size_t tenant, int64_t *bytes, int64_t *refused) {
    *bytes = atomic_load(&b->pools[tenant].host_budget.used);
    *refused = atomic_load(&b->pools[tenant].host_budget.refused);
}

int32_t srv_backend_tenant_kv_blocks(struct srv_backend *b, size_t tenant) {
    int32_t n = 0;
    for (size_t i = 0; i < b->n_models; i++)
        if (b->models[i].kv) n += realm_kv_pool_tenant_used(b->models[i].kv, (uint32_t)tenant + 1);
    return n;
}
