/*
 * tenant.c — one tenant instance: a store with a memory cap (store limiter), an epoch deadline
 * callback that enforces the per-call compute budget (guest time only: time inside imports is
 * excluded), a wall-clock limit per call (host work included) and cancellation, the instance of
 * the guest with its exports looked up once, and the calls into it (_initialize,
 * realm_abi_version, realm_init, realm_generate) with every outcome classified: guest status,
 * trap, timeout, cancellation. While a call runs the tenant sits on the host's active list,
 * where the ticker raises its stop flag at the wall deadline or on cancellation (the flag ends
 * a decode blocked in the scheduler; imports and the epoch callback check the causes directly).
 *
 * A trap or a stop by the epoch callback leaves the guest's state unknown, so the store is
 * thrown away (slot back to the pool, sessions closed) and a fresh instance is made and
 * initialised before the tenant's next request. A guest whose initialisation failed is never
 * called again.
 *
 * Owns: the store (and so the instance and its memory), the sessions behind its handles.
 * Thread rule: one thread at a time per tenant; the request's cancel flag from any thread.
 */
#include <stdio.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/log.h"
#include "sandbox/sandbox.h"
#include "sandbox/wasi_nn.h"

void realm_sbx_request_init(struct realm_sbx_request *r, const char *json, size_t json_len,
                            realm_sbx_emit_fn emit, void *emit_user) {
    memset(r, 0, sizeof *r);
    r->json = json;
    r->json_len = json_len;
    r->emit = emit;
    r->emit_user = emit_user;
    atomic_init(&r->cancel, false);
    r->usage.prompt_tokens = r->usage.completion_tokens = r->usage.finish_reason = -1;
}

void realm_sbx_request_cancel(struct realm_sbx_request *r) {
    atomic_store(&r->cancel, true);
}

/* Runs on the tenant's thread whenever guest code reaches its epoch deadline. */
static wasmtime_error_t *epoch_check(wasmtime_context_t *cx, void *data, uint64_t *delta,
                                     wasmtime_update_deadline_kind_t *kind) {
    (void)cx;
    struct realm_sbx_tenant *t = data;
    uint64_t now = realm_now_ns();
    int64_t guest_ns = (int64_t)(now - t->call_start_ns) - (int64_t)t->call_host_ns;
    bool cancelled = t->call_cancel && atomic_load_explicit(t->call_cancel, memory_order_relaxed);
    if (cancelled && !t->cancel_seen_ns) t->cancel_seen_ns = now;
    /* a cancelled guest gets a grace period to see REALM_E_CANCELLED from its imports and
     * unwind on its own; after that it is stopped like any other runaway */
    if (cancelled && now - t->cancel_seen_ns > t->host->cfg.cancel_grace_ms * 1000000ull)
        t->kill = SBX_KILL_CANCEL;
    else if (t->wall_deadline_ns && now >= t->wall_deadline_ns)
        t->kill = SBX_KILL_WALL;
    else if (guest_ns > (int64_t)t->budget_ns)
        t->kill = SBX_KILL_BUDGET;
    if (t->kill) return wasmtime_error_new("realm: guest stopped by the host");
    *delta = SBX_CHECK_TICKS;
    *kind = WASMTIME_UPDATE_DEADLINE_CONTINUE;
    return NULL;
}

/* Starts a call's accounting and puts the tenant on the ticker's list (end_call takes it off:
 * every begin_call has one). cancel: the request's or the start's flag, or NULL. */
static void begin_call(struct realm_sbx_tenant *t, uint64_t budget_ms, uint64_t wall_ms,
                       const atomic_bool *cancel) {
    /* limits of centuries are "none" in effect; capping them keeps the sums below from wrapping */
    const uint64_t max_ms = 1ull << 40;
    t->call_start_ns = realm_now_ns();
    t->call_host_ns = 0;
    t->budget_ns = (budget_ms < max_ms ? budget_ms : max_ms) * 1000000ull;
    t->wall_ms = wall_ms;
    t->wall_deadline_ns =
        wall_ms ? t->call_start_ns + (wall_ms < max_ms ? wall_ms : max_ms) * 1000000ull : 0;
    t->call_cancel = cancel;
    t->kill = SBX_KILL_NONE;
    t->cancel_seen_ns = 0;
    t->call_logit_decodes = 0;
    t->call_serial++;
    t->call_sampled_sessions = 0;
    t->call_repeat_tokens = 0;
    t->n_call_prompts = 0;
    atomic_store(&t->stop, false);
    struct realm_sbx_host *h = t->host;
    pthread_mutex_lock(&h->active_mu);
    t->active_next = h->active;
    h->active = t;
    t->active = true;
    pthread_mutex_unlock(&h->active_mu);
}

static void end_call(struct realm_sbx_tenant *t) {
    if (!t->active) return;
    struct realm_sbx_host *h = t->host;
    pthread_mutex_lock(&h->active_mu);
    for (struct realm_sbx_tenant **p = &h->active; *p; p = &(*p)->active_next) {
        if (*p == t) {
            *p = t->active_next;
            break;
        }
    }
    t->active_next = NULL;
    t->active = false;
    pthread_mutex_unlock(&h->active_mu);
}

/* O(tenants inside a call) per tick, under a mutex taken only here and at call boundaries. */
void sbx_tenants_tick(struct realm_sbx_host *h) {
    uint64_t now = realm_now_ns();
    pthread_mutex_lock(&h->active_mu);
    for (struct realm_sbx_tenant *t = h->active; t; t = t->active_next) {
        if (atomic_load_explicit(&t->stop, memory_order_relaxed)) continue;
        if ((t->wall_deadline_ns && now >= t->wall_deadline_ns) ||
            (t->call_cancel && atomic_load_explicit(t->call_cancel, memory_order_relaxed)))
            atomic_store(&t->stop, true);
    }
    pthread_mutex_unlock(&h->active_mu);
}

bool sbx_tenant_past_deadline(const struct realm_sbx_tenant *t) {
    return t->wall_deadline_ns && realm_now_ns() >= t->wall_deadline_ns;
}

static bool call_cancelled(const struct realm_sbx_tenant *t) {
    return t->call_cancel && atomic_load(t->call_cancel);
}

static int wall_error(struct realm_sbx_tenant *t, const char *what, struct realm_err *err) {
    return realm_err_set(err, REALM_E_TIMEOUT,
                         "sandbox: %s: %s stopped: wall-clock limit of %llu ms", t->name, what,
                         (unsigned long long)t->wall_ms);
}

static int kill_error(struct realm_sbx_tenant *t, const char *what, struct realm_err *err) {
    switch (t->kill) {
    case SBX_KILL_CANCEL:
        return realm_err_set(err, REALM_E_CANCELLED, "sandbox: %s: %s stopped: %s cancelled",
                             t->name, what, t->req ? "request" : "start");
    case SBX_KILL_WALL:
        return wall_error(t, what, err);
    default:
        return realm_err_set(err, REALM_E_TIMEOUT,
                             "sandbox: %s: %s stopped: compute budget of %llu ms used up", t->name,
                             what, (unsigned long long)(t->budget_ns / 1000000ull));
    }
}

/* Calls a () -> i32 or () -> () export. Returns REALM_OK with *result, or the classified
 * failure (the caller then discards the store). */
static int call_guest(struct realm_sbx_tenant *t, const wasmtime_func_t *f, const char *what,
                      bool has_result, int32_t *result, struct realm_err *err) {
    wasmtime_context_set_epoch_deadline(t->cx, SBX_CHECK_TICKS);
    wasm_trap_t *trap = NULL;
    wasmtime_val_t res = {.kind = WASMTIME_I32, .of.i32 = 0};
    wasmtime_error_t *e = wasmtime_func_call(t->cx, f, NULL, 0, &res, has_result ? 1 : 0, &trap);
    char msg[300];
    if (e) {
        if (t->kill) {
            wasmtime_error_delete(e);
            return kill_error(t, what, err);
        }
        sbx_error_text(e, msg, sizeof msg);
        return realm_err_set(err, REALM_E_INTERNAL, "sandbox: %s: %s: %s", t->name, what, msg);
    }
    if (trap) {
        sbx_trap_text(trap, msg, sizeof msg);
        if (t->kill) return kill_error(t, what, err);
        return realm_err_set(err, REALM_E_TRAP, "sandbox: %s: %s trapped: %s", t->name, what, msg);
    }
    if (result) *result = res.of.i32;
    return REALM_OK;
}

static bool get_func(struct realm_sbx_tenant *t, const char *name, wasmtime_func_t *out) {
    wasmtime_extern_t ex;
    if (!wasmtime_instance_export_get(t->cx, &t->inst, name, strlen(name), &ex)) return false;
    if (ex.kind != WASMTIME_EXTERN_FUNC) return false;
    *out = ex.of.func;
    return true;
}

/* Throws the instance away: sessions closed, store deleted (its pool slot returns). */
static void tenant_stop(struct realm_sbx_tenant *t) {
    sbx_nn_free(t);
    sbx_tenant_close_handles(t);
    if (t->store) {
        wasmtime_store_delete(t->store);
        t->store = NULL;
        t->cx = NULL;
        atomic_fetch_sub(&t->host->n_tenants, 1);
    }
}

static int status_is_known(int32_t s) {
    return s <= REALM_E_INVALID && s >= REALM_E_STATE;
}

static int tenant_start_call(struct realm_sbx_tenant *t, struct realm_err *err);

/* New store + instance; _initialize, realm_abi_version, realm_init, within the init budget and
 * wall-clock limit; cancel (may be NULL) aborts it. On failure the store is gone again. */
static int tenant_start(struct realm_sbx_tenant *t, const atomic_bool *cancel,
                        struct realm_err *err) {
    /* a fresh instance has never seen a handle: every slot starts over, from a serial that
     * differs between instances (an odd multiplier permutes 2^23 values) so that one
     * instance's handle values mean nothing in another; at least 2^23 serials stay per slot */
    memset(t->slots, 0, sizeof t->slots);
    uint32_t base = (atomic_fetch_add(&t->host->instances, 1) * 40503u) & (SBX_SERIAL_MASK >> 1);
    for (int i = 0; i < SBX_MAX_HANDLES; i++)
        t->slots[i].serial = base;
    t->recycle = false;
    begin_call(t, t->host->cfg.init_budget_ms, t->init_wall_ms, cancel);
    int rc = tenant_start_call(t, err);
    end_call(t);
    if (rc) tenant_stop(t);
    return rc;
}

int sbx_tenant_store_new(struct realm_sbx_tenant *t, struct realm_err *err) {
    struct realm_sbx_host *h = t->host;
    /* the pool has max_instances slots; say so plainly instead of Wasmtime's message */
    if (atomic_fetch_add(&h->n_tenants, 1) >= (int64_t)h->cfg.max_instances) {
        atomic_fetch_sub(&h->n_tenants, 1);
        return realm_err_set(err, REALM_E_LIMIT, "sandbox: %s: all %u instance slots in use",
                             t->name, h->cfg.max_instances);
    }
    t->store = wasmtime_store_new(h->engine, t, NULL);
    if (!t->store) {
        atomic_fetch_sub(&h->n_tenants, 1);
        return realm_err_set(err, REALM_E_NOMEM, "sandbox: %s: cannot create store", t->name);
    }
    /* memory cap per linear memory; one instance, table and memory per store */
    wasmtime_store_limiter(t->store, (int64_t)t->memory_limit, -1, 1, 1, 1);
    wasmtime_store_epoch_deadline_callback(t->store, epoch_check, t, NULL);
    t->cx = wasmtime_store_context(t->store);
    return REALM_OK;
}

static int tenant_start_call(struct realm_sbx_tenant *t, struct realm_err *err) {
    int rc = sbx_tenant_store_new(t, err);
    if (rc) return rc;
    t->log_lines = 0;
    t->last_msg[0] = 0;
    t->host_msg[0] = 0;

    char msg[300];
    wasm_trap_t *trap = NULL;
    wasmtime_context_set_epoch_deadline(t->cx, SBX_CHECK_TICKS);
    wasmtime_error_t *e = wasmtime_instance_pre_instantiate(t->mod->pre, t->cx, &t->inst, &trap);
    if (e || trap) {
        if (e)
            sbx_error_text(e, msg, sizeof msg);
        else
            sbx_trap_text(trap, msg, sizeof msg);
        rc = realm_err_set(err, e ? REALM_E_LIMIT : REALM_E_TRAP, "sandbox: %s: instantiate: %s",
                           t->name, msg);
        goto fail;
    }
    wasmtime_extern_t mem;
    wasmtime_func_t f_initialize, f_abi;
    if (!wasmtime_instance_export_get(t->cx, &t->inst, "memory", 6, &mem) ||
        mem.kind != WASMTIME_EXTERN_MEMORY || !get_func(t, "realm_abi_version", &f_abi) ||
        !get_func(t, "realm_init", &t->f_init) || !get_func(t, "realm_generate", &t->f_generate) ||
        (t->mod->has_initialize && !get_func(t, "_initialize", &f_initialize))) {
        rc = realm_err_set(err, REALM_E_INTERNAL, "sandbox: %s: exports vanished", t->name);
        goto fail;
    }
    t->mem = mem.of.memory;

    /* reactor: C constructors and libc setup, before any other export */
    if (t->mod->has_initialize &&
        (rc = call_guest(t, &f_initialize, "_initialize", false, NULL, err)))
        goto fail;
    int32_t v = 0;
    if ((rc = call_guest(t, &f_abi, "realm_abi_version", true, &v, err))) goto fail;
    if (v != REALM_ABI_VERSION) {
        rc = realm_err_set(err, REALM_E_UNSUPPORTED,
                           "sandbox: %s: guest ABI version %d, expected %d", t->name, v,
                           REALM_ABI_VERSION);
        goto fail;
    }
    int32_t st = 0;
    if ((rc = call_guest(t, &t->f_init, "realm_init", true, &st, err))) goto fail;
    /* Imports refused work past the deadline or after cancellation: that is the cause, not
     * whatever the guest made of it; and an init that ends late (it can outrun the next epoch
     * check by a tick) or cancelled does not make a tenant either. */
    if (st != REALM_OK || call_cancelled(t) || sbx_tenant_past_deadline(t)) {
        if (call_cancelled(t))
            rc = realm_err_set(err, REALM_E_CANCELLED,
                               "sandbox: %s: realm_init stopped: start cancelled", t->name);
        else if (sbx_tenant_past_deadline(t))
            rc = wall_error(t, "realm_init", err);
        /* the seed's failing constructor: report the guest's status and its last words */
        else if (status_is_known(st))
            rc = realm_err_set(err, st, "guest init failed: %s%s%s", realm_strerror(st),
                               t->last_msg[0] ? ": " : "", t->last_msg);
        else
            rc = realm_err_set(err, REALM_E_INVALID,
                               "guest init failed: status %d (not a realm status)%s%s", st,
                               t->last_msg[0] ? ": " : "", t->last_msg);
        goto fail;
    }
    return REALM_OK;
fail:
    return rc;
}

int realm_sbx_tenant_new(struct realm_sbx_host *h, struct realm_sbx_module *m,
                         const struct realm_sbx_tenant_params *params,
                         struct realm_sbx_tenant **out, struct realm_err *err) {
    if (m->host != h)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: tenant: the module belongs to another host");
    struct realm_sbx_tenant_params p = {0};
    if (params) p = *params;
    if (!p.name) p.name = "tenant";
    if (p.memory_limit > h->cfg.memory_limit)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: tenant %s: memory limit %llu bytes exceeds the host's "
                             "%llu",
                             p.name, (unsigned long long)p.memory_limit,
                             (unsigned long long)h->cfg.memory_limit);
    struct realm_sbx_tenant *t = realm_calloc(1, sizeof *t);
    if (!t) return realm_err_set(err, REALM_E_NOMEM, "sandbox: tenant: out of memory");
    t->host = h;
    t->mod = m;
    atomic_fetch_add(&m->refs, 1);
    t->id = atomic_fetch_add(&h->next_tenant_id, 1) + 1;
    t->group = p.group ? p.group : t->id;
    t->host_budget = p.host_budget;
    t->memory_limit = p.memory_limit ? p.memory_limit : h->cfg.memory_limit;
    t->init_wall_ms = p.init_wall_ms ? p.init_wall_ms : h->cfg.init_wall_ms;
    t->generate_wall_ms = p.generate_wall_ms ? p.generate_wall_ms : h->cfg.wall_limit_ms;
    t->name = realm_strndup(p.name, strlen(p.name));
    int rc;
    if (!t->name) {
        rc = realm_err_set(err, REALM_E_NOMEM, "sandbox: tenant: out of memory");
        goto fail;
    }
    t->default_model = h->n_models ? h->models[0] : NULL;
    if (p.default_model) {
        t->default_model = NULL;
        for (int i = 0; i < h->n_models; i++)
            if (!strcmp(h->models[i]->name, p.default_model)) t->default_model = h->models[i];
        if (!t->default_model) {
            rc = realm_err_set(err, REALM_E_NOT_FOUND, "sandbox: tenant %s: no model named %s",
                               t->name, p.default_model);
            goto fail;
        }
    }
    if (p.models) {
        t->allowed = realm_calloc((size_t)(h->n_models ? h->n_models : 1), sizeof *t->allowed);
        if (!t->allowed) {
            rc = realm_err_set(err, REALM_E_NOMEM, "sandbox: tenant: out of memory");
            goto fail;
        }
        for (int k = 0; k < p.n_models; k++) {
            int found = -1;
            for (int i = 0; i < h->n_models; i++)
                if (!strcmp(h->models[i]->name, p.models[k])) found = i;
            if (found < 0) {
                rc = realm_err_set(err, REALM_E_NOT_FOUND, "sandbox: tenant %s: no model named %s",
                                   t->name, p.models[k]);
                goto fail;
            }
            t->allowed[found] = true;
        }
        for (int i = 0; i < h->n_models; i++)
            if (h->models[i] == t->default_model && !t->allowed[i]) t->default_model = NULL;
    }
    /* a command guest gets a fresh instance per request (command.c): nothing to start now */
    if (!m->command && (rc = tenant_start(t, p.cancel, err))) goto fail;
    *out = t;
    return REALM_OK;
fail:
    realm_sbx_tenant_free(t);
    return rc;
}

void realm_sbx_tenant_free(struct realm_sbx_tenant *t) {
    if (!t) return;
    tenant_stop(t);
    sbx_module_unref(t->mod);
    realm_free(t->allowed);
    realm_free(t->name);
    realm_free(t);
}

void realm_sbx_tenant_get_stats(const struct realm_sbx_tenant *t,
                                struct realm_sbx_tenant_stats *out) {
    *out = t->stats;
    out->memory_bytes = t->store ? wasmtime_memory_data_size(t->cx, &t->mem) : 0;
    out->sessions = t->n_sessions;
    out->kv_bytes = t->kv_bytes;
}

int realm_sbx_tenant_generate(struct realm_sbx_tenant *t, struct realm_sbx_request *r,
                              struct realm_err *err) {
    if (t->mod->command) return sbx_command_generate(t, r, err);
    int rc;
    r->usage =
        (struct realm_sbx_usage){.prompt_tokens = -1, .completion_tokens = -1, .finish_reason = -1};
    r->tool_calls_seen = false;
    r->choice = 0;
    for (int i = 0; i < REALM_ABI_MAX_CHOICES; i++)
        r->choice_completion[i] = r->choice_finish[i] = -1;
    if (t->store && t->recycle) tenant_stop(t); /* handle serials used up */
    if (!t->store) {
        t->stats.restarts++;
        if ((rc = tenant_start(t, &r->cancel, err))) {
            /* what a failed restart decoded is this request's too */
            r->usage.measured_prompt_tokens = t->unbilled_tokens;
            t->unbilled_tokens = 0;
            return rc;
        }
    }
    t->stats.requests++;
    t->req = r;
    t->log_lines = 0;
    t->last_msg[0] = 0;
    t->host_msg[0] = 0;
    begin_call(t, t->host->cfg.generate_budget_ms, t->generate_wall_ms, &r->cancel);
    int32_t st = 0;
    rc = call_guest(t, &t->f_generate, "realm_generate", true, &st, err);
    end_call(t);
    uint64_t total = realm_now_ns() - t->call_start_ns;
    struct realm_sbx_usage *u = &r->usage;
    u->total_ns = total;
    u->guest_ns = total > t->call_host_ns ? total - t->call_host_ns : 0;
    /* the charge, whatever the outcome: see struct realm_sbx_usage */
    u->measured_completion_tokens = t->call_logit_decodes;
    /* per session: what it decoded minus the sampled tokens it fed back (all but its last) */
    u->measured_prompt_tokens = u->decoded_tokens - t->call_logit_decodes +
                                t->call_sampled_sessions - t->call_repeat_tokens;
    if (u->measured_prompt_tokens < 0) u->measured_prompt_tokens = 0;
    /* tokens decoded outside any request (in realm_init, when this instance started) are charged
     * to the first request it serves: a guest cannot hide work in its initialisation */
    u->measured_prompt_tokens += t->unbilled_tokens;
    t->unbilled_tokens = 0;
    t->req = NULL;
    if (rc) {
        tenant_stop(t); /* its state is unknown: a fresh instance serves the next request */
        return rc;
    }
    if (atomic_load(&r->cancel))
        return realm_err_set(err, REALM_E_CANCELLED, "sandbox: %s: request cancelled", t->name);
    if (st == REALM_OK) return REALM_OK;
    if (sbx_tenant_past_deadline(t)) return wall_error(t, "realm_generate", err);
    if (!status_is_known(st))
        return realm_err_set(err, REALM_E_INVALID, "guest: returned %d, not a realm status%s%s", st,
                             t->last_msg[0] ? ": " : "", t->last_msg);
    return realm_err_set(err, st, "guest: %s%s%s%s%s%s", realm_strerror(st),
                         t->last_msg[0] ? ": " : "", t->last_msg, t->host_msg[0] ? " (host: " : "",
                         t->host_msg, t->host_msg[0] ? ")" : "");
}

/* ---- for command.c (a WASI command's run is one call in a fresh store) ---- */

void sbx_tenant_store_drop(struct realm_sbx_tenant *t) {
    tenant_stop(t);
}

void sbx_call_begin(struct realm_sbx_tenant *t, uint64_t budget_ms, uint64_t wall_ms,
                    const atomic_bool *cancel) {
    begin_call(t, budget_ms, wall_ms, cancel);
}

void sbx_call_end(struct realm_sbx_tenant *t) {
    end_call(t);
}

int sbx_call_kill_error(struct realm_sbx_tenant *t, const char *what, struct realm_err *err) {
    return kill_error(t, what, err);
}
