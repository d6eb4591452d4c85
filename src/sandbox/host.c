/*
 * host.c — the sandbox host: one Wasmtime engine (epoch interruption, pooling allocator sized
 * for max_instances tenants), one linker holding every realm import, the epoch ticker thread,
 * and the list of models guests may open by name (with their model_info JSON, built once).
 *
 * Owns: the engine, the linker, the ticker thread, the model entries (not the models).
 * Thread rule: realm_sbx_host_add_model before tenants run; everything else thread-safe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/buf.h"
#include "realm/log.h"
#include "sandbox/sandbox.h"
#include "sandbox/wasi_nn.h"

#define MIB (1024ull * 1024ull)

/* One line from a Wasmtime message: the trailing NUL dropped (wasm_trap_message includes it),
 * "\n\nCaused by:\n    x" folded into ": x", runs of blanks into one. */
static void vec_text(const wasm_byte_vec_t *v, char *buf, size_t cap) {
    size_t n = v->size, k = 0;
    while (n > 0 && v->data[n - 1] == 0)
        n--;
    bool blank = false;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        char c = v->data[i];
        if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
            blank = k > 0;
            continue;
        }
        if (!strncmp(v->data + i, "Caused by:", 10) && i + 10 <= n) {
            i += 9;
            blank = false;
            if (k + 2 < cap) buf[k++] = ':', buf[k++] = ' ';
            continue;
        }
        if (blank && k + 2 < cap && buf[k - 1] != ' ') buf[k++] = ' ';
        blank = false;
        buf[k++] = c;
    }
    if (cap) buf[k < cap ? k : cap - 1] = 0;
}

void sbx_error_text(wasmtime_error_t *e, char *buf, size_t cap) {
    wasm_name_t msg;
    wasmtime_error_message(e, &msg);
    vec_text(&msg, buf, cap);
    wasm_byte_vec_delete(&msg);
    wasmtime_error_delete(e);
}

static const char *trap_code_text(wasmtime_trap_code_t c) {
    switch (c) {
    case WASMTIME_TRAP_CODE_STACK_OVERFLOW:
        return "call stack exhausted";
    case WASMTIME_TRAP_CODE_MEMORY_OUT_OF_BOUNDS:
        return "out of bounds memory access";
    case WASMTIME_TRAP_CODE_HEAP_MISALIGNED:
        return "misaligned memory access";
    case WASMTIME_TRAP_CODE_TABLE_OUT_OF_BOUNDS:
        return "undefined table element";
    case WASMTIME_TRAP_CODE_INDIRECT_CALL_TO_NULL:
        return "uninitialized table element";
    case WASMTIME_TRAP_CODE_BAD_SIGNATURE:
        return "indirect call type mismatch";
    case WASMTIME_TRAP_CODE_INTEGER_OVERFLOW:
        return "integer overflow";
    case WASMTIME_TRAP_CODE_INTEGER_DIVISION_BY_ZERO:
        return "integer divide by zero";
    case WASMTIME_TRAP_CODE_BAD_CONVERSION_TO_INTEGER:
        return "invalid conversion to integer";
    case WASMTIME_TRAP_CODE_UNREACHABLE_CODE_REACHED:
        return "unreachable executed";
    case WASMTIME_TRAP_CODE_INTERRUPT:
        return "interrupted";
    default:
        return NULL;
    }
}

void sbx_trap_text(wasm_trap_t *t, char *buf, size_t cap) {
    /* "<what> in <function>": the trap code names the fault; the full message would carry a
     * multi-line backtrace, the innermost frame is enough to point at the guest's bug */
    wasmtime_trap_code_t code;
    const char *what = wasmtime_trap_code(t, &code) ? trap_code_text(code) : NULL;
    char fn[80] = "";
    wasm_frame_vec_t frames;
    wasm_trap_trace(t, &frames);
    if (frames.size > 0) {
        const wasm_name_t *n = wasmtime_frame_func_name(frames.data[0]);
        if (n && n->size)
            snprintf(fn, sizeof fn, " in %.*s", (int)(n->size < 64 ? n->size : 64), n->data);
    }
    wasm_frame_vec_delete(&frames);
    if (what) {
        snprintf(buf, cap, "%s%s", what, fn);
    } else {
        wasm_message_t msg;
        wasm_trap_message(t, &msg);
        /* keep the last line: the cause after the backtrace */
        size_t n = msg.size;
        while (n > 0 && (msg.data[n - 1] == 0 || msg.data[n - 1] == '\n'))
            n--;
        size_t start = n;
        while (start > 0 && msg.data[start - 1] != '\n')
            start--;
        while (start < n && msg.data[start] == ' ')
            start++;
        snprintf(buf, cap, "%.*s%s", (int)(n - start < 200 ? n - start : 200), msg.data + start,
                 fn);
        wasm_byte_vec_delete(&msg);
    }
    wasm_trap_delete(t);
}

/* ---- the epoch ticker: bumps the engine's epoch every tick_us; the per-store callback turns
 * that into budget, wall-clock and cancellation checks while guest code runs. It also raises
 * the stop flag of every tenant whose call is past its wall deadline or cancelled: that flag is
 * the cancel flag of the tenant's decodes, so a decode blocked in the scheduler (where no
 * guest code runs and no epoch check happens) ends too. ---- */
static void *ticker_main(void *arg) {
    struct realm_sbx_host *h = arg;
    struct timespec ts = {(time_t)(h->cfg.tick_us / 1000000),
                          (long)(h->cfg.tick_us % 1000000) * 1000};
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        nanosleep(&ts, NULL);
        wasmtime_engine_increment_epoch(h->engine);
        sbx_tenants_tick(h);
    }
    return NULL;
}

static char *default_cache_dir(void) {
    const char *base = getenv("REALM_CACHE");
    char buf[4096];
    if (base && *base) {
        snprintf(buf, sizeof buf, "%s/modules", base);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) return NULL;
        snprintf(buf, sizeof buf, "%s/.cache/realm/modules", home);
    }
    return realm_strndup(buf, strlen(buf));
}

/* Address space the pooling allocator may reserve for linear memories: a quarter of x86-64's
 * 128 TiB user space, leaving the rest to the models' mappings, the heap and thread stacks. */
#define POOL_ADDRESS_BUDGET (32ull << 40)
/* Wasmtime's default slot on 64-bit hosts: a 4 GiB reservation and a 32 MiB guard, which lets
 * Cranelift drop every bounds check of a 32-bit memory (the guard pages do the checking). */
#define FULL_SLOT_RESERVATION (4096 * MIB)
#define FULL_SLOT_GUARD (32 * MIB)
/* The dense slot's guard: one Wasm page, so an access at offset + size past the reservation
 * still faults in the guard instead of touching the next tenant's slot. */
#define DENSE_SLOT_GUARD (64 * 1024ull)

/* Picks the linear-memory slot of the pooling allocator. Every tenant gets one slot of
 * reservation + guard bytes of address space (reserved, not committed). With the full slot
 * (4 GiB + 32 MiB) no bounds check is compiled, but 100,000 such slots would need 400 TiB;
 * past the budget each slot is sized by the memory cap instead (rounded up to whole Wasm
 * pages), memory never moves, and Cranelift compares each address with that fixed size (a
 * compare against a constant; pages between the current size and the cap stay inaccessible, so
 * growth is still refused exactly at the tenant's cap by the store limiter). */
static void pool_layout(const struct realm_sbx_config *cfg, uint64_t *reservation,
                        uint64_t *guard) {
    uint64_t full = FULL_SLOT_RESERVATION + FULL_SLOT_GUARD;
    if ((uint64_t)cfg->max_instances * full <= POOL_ADDRESS_BUDGET) {
        *reservation = FULL_SLOT_RESERVATION;
        *guard = FULL_SLOT_GUARD;
        return;
    }
    *reservation = (cfg->memory_limit + 65535) & ~65535ull;
    *guard = DENSE_SLOT_GUARD;
}

int realm_sbx_host_new(const struct realm_sbx_config *cfg_in, struct realm_sbx_host **out,
                       struct realm_err *err) {
    struct realm_sbx_config cfg = {0};
    if (cfg_in) cfg = *cfg_in;
    if (!cfg.memory_limit) cfg.memory_limit = 64 * MIB;
    if (!cfg.max_instances) cfg.max_instances = 1000;
    if (!cfg.tick_us) cfg.tick_us = 1000;
    if (!cfg.init_budget_ms) cfg.init_budget_ms = 1000;
    if (!cfg.init_wall_ms) cfg.init_wall_ms = 10000;
    if (!cfg.max_input_bytes) cfg.max_input_bytes = 4 * MIB;
    if (!cfg.max_json_values) cfg.max_json_values = 65536;
    if (!cfg.generate_budget_ms) cfg.generate_budget_ms = 30000;
    if (!cfg.max_output_bytes)
        cfg.max_output_bytes = 4 * MIB; /* a 2^20-token answer at 4 bytes a token */
    if (!cfg.max_sessions) cfg.max_sessions = 8;
    if (!cfg.max_log_lines) cfg.max_log_lines = 32;
    if (!cfg.cancel_grace_ms) cfg.cancel_grace_ms = 100;
    if (cfg.memory_limit < 64 * 1024 || cfg.memory_limit > 4096 * MIB || cfg.max_sessions < 0 ||
        cfg.max_sessions > SBX_MAX_HANDLES / 2 || cfg.max_ctx < 0 || cfg.max_log_lines < 0 ||
        cfg.tick_us > 1000000 || cfg.max_instances > SBX_MAX_INSTANCES ||
        cfg.max_input_bytes > INT32_MAX)
        return realm_err_set(err, REALM_E_INVALID, "sandbox: config: out of range");
    uint64_t reservation, guard;
    pool_layout(&cfg, &reservation, &guard);
    if ((uint64_t)cfg.max_instances * (reservation + guard) > POOL_ADDRESS_BUDGET)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: config: %u instances of %llu MiB memory do not fit in the "
                             "address space; lower max_instances or memory_limit",
                             cfg.max_instances, (unsigned long long)(cfg.memory_limit / MIB));

    struct realm_sbx_host *h = realm_calloc(1, sizeof *h);
    if (!h) return realm_err_set(err, REALM_E_NOMEM, "sandbox: host: out of memory");
    h->cfg = cfg;
    h->cfg.cache_dir = NULL; /* not kept: borrowed by the caller */
    if (pthread_mutex_init(&h->active_mu, NULL) != 0) {
        realm_free(h);
        return realm_err_set(err, REALM_E_INTERNAL, "sandbox: host: cannot create a mutex");
    }
    h->active_mu_init = true;
    if (cfg.cache_dir) {
        if (*cfg.cache_dir) h->cache_dir = realm_strndup(cfg.cache_dir, strlen(cfg.cache_dir));
    } else {
        h->cache_dir = default_cache_dir();
    }

    wasm_config_t *wc = wasm_config_new();
    if (!wc) goto nomem;
    /* Epochs instead of fuel: a counter check at loop heads and function entries, 2-3x cheaper
     * than fuel (wasmtime config.rs docs). */
    wasmtime_config_epoch_interruption_set(wc, true);
    wasmtime_config_cranelift_opt_level_set(wc, WASMTIME_OPT_LEVEL_SPEED);
    wasmtime_config_memory_reservation_set(wc, reservation);
    wasmtime_config_memory_guard_size_set(wc, guard);
    wasmtime_config_memory_reservation_for_growth_set(wc, 0);
    wasmtime_config_memory_may_move_set(wc, false);
    wasmtime_pooling_allocation_config_t *pool = wasmtime_pooling_allocation_config_new();
    if (!pool) {
        wasm_config_delete(wc);
        goto nomem;
    }
    /* one core instance, memory and table per tenant (guests with more are refused at
     * instantiation); slots come back when a store is deleted */
    wasmtime_pooling_allocation_config_total_core_instances_set(pool, cfg.max_instances);
    wasmtime_pooling_allocation_config_total_memories_set(pool, cfg.max_instances);
    wasmtime_pooling_allocation_config_total_tables_set(pool, cfg.max_instances);
    wasmtime_pooling_allocation_config_max_memories_per_module_set(pool, 1);
    wasmtime_pooling_allocation_config_max_tables_per_module_set(pool, 1);
    wasmtime_pooling_allocation_config_max_memory_size_set(pool, (size_t)cfg.memory_limit);
    wasmtime_pooling_allocation_strategy_set(wc, pool); /* does not take pool */
    wasmtime_pooling_allocation_config_delete(pool);
    h->engine = wasm_engine_new_with_config(wc); /* takes wc */
    if (!h->engine) {
        realm_err_set(err, REALM_E_INTERNAL, "sandbox: engine: Wasmtime refused the configuration");
        goto fail;
    }
    snprintf(h->config_key, sizeof h->config_key,
             "wasmtime-48;cranelift-speed;epoch;pool-mem=%llu;slot=%llu+%llu;abi=%d",
             (unsigned long long)cfg.memory_limit, (unsigned long long)reservation,
             (unsigned long long)guard, REALM_ABI_VERSION);

    h->linker = wasmtime_linker_new(h->engine);
    if (!h->linker) goto nomem;
    if (sbx_define_imports(h, err) || sbx_nn_define_imports(h, err)) goto fail;
    /* WASI preview 1 for command guests; each store gets its own context (command.c) with no
     * files, sockets, env or inherited stdio. Realm ABI guests may not import it. */
    wasmtime_error_t *we = wasmtime_linker_define_wasi(h->linker);
    if (we) {
        char msg[256];
        sbx_error_text(we, msg, sizeof msg);
        realm_err_set(err, REALM_E_INTERNAL, "sandbox: define WASI: %s", msg);
        goto fail;
    }

    if (pthread_create(&h->ticker, NULL, ticker_main, h) != 0) {
        realm_err_set(err, REALM_E_INTERNAL, "sandbox: ticker: cannot start thread");
        goto fail;
    }
    h->ticker_running = true;
    *out = h;
    return REALM_OK;

nomem:
    realm_err_set(err, REALM_E_NOMEM, "sandbox: host: out of memory");
fail:
    realm_sbx_host_free(h);
    return err ? err->code : REALM_E_INTERNAL;
}

static void model_entry_free(struct sbx_model *m) {
    if (!m) return;
    realm_free(m->info);
    realm_free(m->name);
    realm_free(m);
}

void realm_sbx_host_free(struct realm_sbx_host *h) {
    if (!h) return;
    if (atomic_load(&h->n_tenants) != 0)
        realm_log(REALM_LOG_ERROR, "sandbox", "host freed with %lld tenants alive",
                  (long long)atomic_load(&h->n_tenants));
    if (h->ticker_running) {
        atomic_store(&h->stop, true);
        pthread_join(h->ticker, NULL);
    }
    for (int i = 0; i < h->n_models; i++)
        model_entry_free(h->models[i]);
    realm_free(h->models);
    if (h->linker) wasmtime_linker_delete(h->linker);
    if (h->engine) wasm_engine_delete(h->engine);
    realm_free(h->cache_dir);
    if (h->active_mu_init) pthread_mutex_destroy(&h->active_mu);
    realm_free(h);
}

/* ---- model_info JSON ---- */

/* A JSON string, or null for NULL. */
static int json_str_or_null(struct realm_buf *b, const char *s) {
    return s ? realm_buf_json_string(b, s, strlen(s)) : realm_buf_puts(b, "null");
}

static int build_info(struct sbx_model *m) {
    const struct realm_model_config *c = realm_model_config(m->model);
    struct realm_buf b = {0};
    int rc = realm_buf_puts(&b, "{\"name\":") || json_str_or_null(&b, m->name) ||
             realm_buf_puts(&b, ",\"arch\":") || json_str_or_null(&b, c->arch_name) ||
             realm_buf_printf(&b, ",\"n_vocab\":%d,\"n_ctx_train\":%d,\"n_embd\":%d,\"n_layer\":%d",
                              m->n_vocab, c->n_ctx_train, c->n_embd, c->n_layer) ||
             realm_buf_printf(&b, ",\"bos\":%d,\"eos\":%d,\"add_bos\":%s",
                              realm_tokenizer_bos(m->tok), realm_tokenizer_eos(m->tok),
                              realm_tokenizer_add_bos(m->tok) ? "true" : "false");
    /* SPM's space in front of the text (the native detokenizer strips it from the first piece) */
    struct realm_detok d;
    realm_detok_init(&d, m->tok, false);
    rc = rc || realm_buf_printf(&b, ",\"add_space_prefix\":%s", d.strip_space ? "true" : "false") ||
         realm_buf_puts(&b, ",\"tokenizer\":") ||
         json_str_or_null(&b, realm_tokenizer_kind(m->tok)) || realm_buf_puts(&b, ",\"pre\":") ||
         json_str_or_null(&b, realm_tokenizer_pre(m->tok)) ||
         realm_buf_puts(&b, ",\"chat_template\":") ||
         json_str_or_null(&b, realm_tokenizer_chat_template(m->tok)) ||
         realm_buf_puts(&b, ",\"tool_format\":") ||
         json_str_or_null(&b, realm_tokenizer_tool_format(m->tok)) ||
         realm_buf_puts(&b, ",\"eog\":[");
    int32_t n_tok = realm_tokenizer_n_vocab(m->tok);
    bool first = true;
    for (int32_t i = 0; i < n_tok && !rc; i++) {
        if (!realm_tokenizer_is_eog(m->tok, i)) continue;
        rc = realm_buf_printf(&b, first ? "%d" : ",%d", i);
        first = false;
    }
    if (rc || realm_buf_puts(&b, "]}")) {
        realm_buf_free(&b);
        return REALM_E_NOMEM;
    }
    m->info = b.data;
    m->info_len = b.len;
    return REALM_OK;
}

int realm_sbx_host_add_model(struct realm_sbx_host *h, const struct realm_sbx_model_desc *d,
                             struct realm_err *err) {
    if (!d || !d->name || !d->model || !d->tok)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: model: name, model and tokenizer are required");
    size_t nl = strlen(d->name);
    if (nl == 0 || nl > REALM_ABI_MAX_NAME)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: model: name length %zu, expected 1..%d", nl,
                             REALM_ABI_MAX_NAME);
    if (!d->decode && !d->sched)
        return realm_err_set(err, REALM_E_INVALID, "sandbox: model %s: no decode path (scheduler)",
                             d->name);
    for (int i = 0; i < h->n_models; i++)
        if (h->models[i]->name_len == nl && !memcmp(h->models[i]->name, d->name, nl))
            return realm_err_set(err, REALM_E_INVALID, "sandbox: model %s: added twice", d->name);
    const struct realm_model_config *c = realm_model_config(d->model);
    if (realm_tokenizer_n_vocab(d->tok) > c->n_vocab || c->n_vocab <= 0)
        return realm_err_set(err, REALM_E_INVALID,
                             "sandbox: model %s: tokenizer has %d tokens, model %d", d->name,
                             realm_tokenizer_n_vocab(d->tok), c->n_vocab);

    if (h->n_models == h->cap_models) {
        int cap = h->cap_models ? h->cap_models * 2 : 4;
        struct sbx_model **p = realm_realloc(h->models, (size_t)cap * sizeof *p);
        if (!p) return realm_err_set(err, REALM_E_NOMEM, "sandbox: model: out of memory");
        h->models = p;
        h->cap_models = cap;
    }
    struct sbx_model *m = realm_calloc(1, sizeof *m);
    if (!m) return realm_err_set(err, REALM_E_NOMEM, "sandbox: model: out of memory");
    m->name = realm_strndup(d->name, nl);
    m->name_len = nl;
    m->model = d->model;
    m->tok = d->tok;
    m->sched = d->sched;
    m->decode = d->decode;
    m->decode_ctx = d->decode_ctx;
    m->kv_pool = d->kv_pool;
    m->n_vocab = c->n_vocab;
    m->n_ctx_train = c->n_ctx_train;
    m->kv_bytes_per_pos =
        (uint64_t)c->n_layer * (uint64_t)c->n_head_kv * (uint64_t)c->head_dim * 2 * 2;
    if (!m->name || build_info(m) != REALM_OK) {
        model_entry_free(m);
        return realm_err_set(err, REALM_E_NOMEM, "sandbox: model: out of memory");
    }
    h->models[h->n_models++] = m;
    return REALM_OK;
}
