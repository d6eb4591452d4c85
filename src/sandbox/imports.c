/*
 * imports.c — the realm ABI v1 host functions (module "realm"; contracts in docs/abi.md).
 *
 * Every import goes through one dispatcher that finds the calling tenant in its store data,
 * refuses work for a cancelled request, and accounts the time spent in the host (the guest's
 * compute budget excludes it). Every (pointer, length) from the guest is checked against the
 * memory size fetched on that call, in 64-bit arithmetic, before any byte is touched; lengths
 * are i32 and negative ones are REALM_E_RANGE. No import calls back into the guest, so guest
 * memory cannot grow or move while one runs; the span is still fetched again after any host
 * work that could take time, as a matter of discipline. Outputs whose alignment the guest
 * controls (int32 tokens, float logits) are built in host buffers and copied with memcpy.
 * Imports never trap: misuse is an error code the guest sees.
 *
 * Thread rule: runs on the thread that is running the tenant.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "realm/alloc.h"
#include "realm/json.h"
#include "realm/log.h"
#include "realm/sched.h"
#include "sandbox/sandbox.h"

_Static_assert(REALM_ABI_TOKENIZE_ADD_BOS == REALM_TOKENIZE_ADD_BOS, "ABI flag mismatch");
_Static_assert(REALM_ABI_TOKENIZE_PARSE_SPECIAL == REALM_TOKENIZE_PARSE_SPECIAL,
               "ABI flag mismatch");
_Static_assert(REALM_ABI_LOG_ERROR == REALM_LOG_ERROR && REALM_ABI_LOG_DEBUG == REALM_LOG_DEBUG,
               "ABI log level mismatch");

/* ---- guest memory ---- */

/* Bytes [ptr, ptr + len) of the guest's memory, or NULL if they are not all inside it now. */
static uint8_t *span(struct realm_sbx_tenant *t, int32_t ptr, uint64_t len) {
    uint64_t size = wasmtime_memory_data_size(t->cx, &t->mem);
    uint64_t p = (uint32_t)ptr;
    if (len > size || p > size - len) return NULL;
    return wasmtime_memory_data(t->cx, &t->mem) + p;
}

/* The same for n elements of `elem` bytes; n is an i32 from the guest. */
static uint8_t *span_n(struct realm_sbx_tenant *t, int32_t ptr, int32_t n, uint64_t elem) {
    if (n < 0) return NULL;
    return span(t, ptr, (uint64_t)n * elem);
}

/* ---- handles ---- */

static struct sbx_slot *lookup(struct realm_sbx_tenant *t, int32_t handle, int kind) {
    if (handle <= 0) return NULL;
    uint32_t idx = (uint32_t)handle >> SBX_SERIAL_BITS, serial = (uint32_t)handle & SBX_SERIAL_MASK;
    if (idx >= SBX_MAX_HANDLES) return NULL;
    struct sbx_slot *s = &t->slots[idx];
    if (s->kind != kind || s->serial != serial) return NULL;
    return s;
}

/* Each slot counts its own serials 1..SBX_SERIAL_MASK, so a handle value never comes back
 * within an instance's life: a slot that issued the last serial is retired once freed. When
 * only retired slots are free, the instance is marked for a fresh store (new table) before its
 * next request. */
static int32_t alloc_slot(struct realm_sbx_tenant *t, struct sbx_slot **out) {
    bool retired = false;
    for (int i = 0; i < SBX_MAX_HANDLES; i++) {
        struct sbx_slot *s = &t->slots[i];
        if (s->kind != SBX_SLOT_FREE) continue;
        if (s->serial >= SBX_SERIAL_MASK) {
            retired = true;
            continue;
        }
        uint32_t serial = s->serial + 1;
        memset(s, 0, sizeof *s);
        s->serial = serial;
        *out = s;
        return (int32_t)(((uint32_t)i << SBX_SERIAL_BITS) | serial);
    }
    if (retired) {
        t->recycle = true;
        snprintf(t->host_msg, sizeof t->host_msg,
                 "handles: serials used up; the instance is re-created before the next request");
    }
    return REALM_E_LIMIT;
}

int sbx_tenant_test_set_serial(struct realm_sbx_tenant *t, int32_t slot, uint32_t serial) {
    if (slot < 0 || slot >= SBX_MAX_HANDLES || serial > SBX_SERIAL_MASK) return REALM_E_RANGE;
    if (t->slots[slot].kind != SBX_SLOT_FREE) return REALM_E_STATE;
    t->slots[slot].serial = serial;
    return REALM_OK;
}

#define BAD_HANDLE(t) ((t)->stats.handle_errors++, REALM_E_BAD_HANDLE)

/* ---- input caps ---- */

/* True (with the reason in host_msg) if len bytes exceed max_input_bytes. */
static bool input_too_long(struct realm_sbx_tenant *t, const char *what, int32_t len) {
    uint64_t max = t->host->cfg.max_input_bytes;
    if ((uint64_t)len <= max) return false;
    snprintf(t->host_msg, sizeof t->host_msg,
             "%s: input of %d bytes exceeds max_input_bytes (%llu)", what, len,
             (unsigned long long)max);
    return true;
}

/* ---- the imports ---- */

typedef int64_t (*import_fn)(struct realm_sbx_tenant *t, const wasmtime_val_t *a);

static int64_t imp_model_open(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    int32_t len = a[1].of.i32;
    if (len < 0) return REALM_E_RANGE;
    if (len > REALM_ABI_MAX_NAME) return REALM_E_LIMIT;
    const uint8_t *name = span(t, a[0].of.i32, (uint64_t)len);
    if (!name) return REALM_E_RANGE;
    struct realm_sbx_host *h = t->host;
    struct sbx_model *m = NULL;
    int idx = -1;
    if (len == 0) {
        m = t->default_model;
    } else {
        for (int i = 0; i < h->n_models; i++) {
            if (h->models[i]->name_len == (size_t)len &&
                !memcmp(h->models[i]->name, name, (size_t)len)) {
                m = h->models[i];
                idx = i;
                break;
            }
        }
        /* a model this tenant may not use looks exactly like one that does not exist */
        if (m && t->allowed && !t->allowed[idx]) m = NULL;
    }
    if (!m) return REALM_E_NOT_FOUND;
    for (int i = 0; i < SBX_MAX_HANDLES; i++)
        if (t->slots[i].kind == SBX_SLOT_MODEL && t->slots[i].model == m)
            return (int32_t)(((uint32_t)i << SBX_SERIAL_BITS) | t->slots[i].serial);
    struct sbx_slot *s;
    int32_t hd = alloc_slot(t, &s);
    if (hd < 0) return hd;
    s->kind = SBX_SLOT_MODEL;
    s->model = m;
    return hd;
}

static int64_t imp_model_info(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t cap = a[2].of.i32;
    uint8_t *buf = span_n(t, a[1].of.i32, cap, 1);
    if (!buf) return REALM_E_RANGE;
    size_t n = s->model->info_len;
    memcpy(buf, s->model->info, n < (size_t)cap ? n : (size_t)cap);
    return (int64_t)n;
}

static int64_t imp_tokenize(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t len = a[2].of.i32, flags = a[3].of.i32, cap = a[5].of.i32;
    if (len < 0 || cap < 0) return REALM_E_RANGE;
    if (input_too_long(t, "tokenize", len)) return REALM_E_LIMIT;
    if (flags & ~(REALM_ABI_TOKENIZE_ADD_BOS | REALM_ABI_TOKENIZE_PARSE_SPECIAL))
        return REALM_E_INVALID;
    const uint8_t *text = span(t, a[1].of.i32, (uint64_t)len);
    if (!text || !span_n(t, a[4].of.i32, cap, 4)) return REALM_E_RANGE;
    /* SPM and byte-level BPE give at most one token per byte, plus BOS/EOS; retry if not */
    int64_t hcap = (int64_t)len + 8, n = 0;
    int32_t *toks = realm_malloc((size_t)hcap * sizeof *toks);
    if (!toks) return REALM_E_NOMEM;
    int rc = realm_tokenize(s->model->tok, (const char *)text, (size_t)len, (uint32_t)flags, toks,
                            hcap, &n);
    if (rc == REALM_E_TOO_SMALL && n > hcap && n <= INT32_MAX) {
        realm_free(toks);
        hcap = n;
        toks = realm_malloc((size_t)hcap * sizeof *toks);
        if (!toks) return REALM_E_NOMEM;
        rc = realm_tokenize(s->model->tok, (const char *)text, (size_t)len, (uint32_t)flags, toks,
                            hcap, &n);
    }
    if (rc == REALM_OK && n > INT32_MAX) rc = REALM_E_LIMIT;
    if (rc == REALM_OK) {
        uint8_t *out = span_n(t, a[4].of.i32, cap, 4);
        if (!out)
            rc = REALM_E_RANGE;
        else
            memcpy(out, toks, (size_t)(n < cap ? n : cap) * sizeof *toks);
    }
    realm_free(toks);
    return rc < 0 ? rc : n;
}

static int64_t imp_token_piece(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t token = a[1].of.i32, cap = a[3].of.i32;
    if (token < 0 || token >= realm_tokenizer_n_vocab(s->model->tok)) return REALM_E_INVALID;
    if (!span_n(t, a[2].of.i32, cap, 1)) return REALM_E_RANGE;
    char small[256];
    int64_t n = realm_token_piece(s->model->tok, token, false, small, sizeof small);
    if (n < 0) return n;
    char *piece = small;
    if ((uint64_t)n > sizeof small) {
        if (n > INT32_MAX) return REALM_E_LIMIT;
        piece = realm_malloc((size_t)n);
        if (!piece) return REALM_E_NOMEM;
        int64_t n2 = realm_token_piece(s->model->tok, token, false, piece, (size_t)n);
        if (n2 != n) {
            realm_free(piece);
            return REALM_E_INTERNAL;
        }
    }
    uint8_t *out = span_n(t, a[2].of.i32, cap, 1);
    if (out) memcpy(out, piece, (size_t)(n < cap ? n : cap));
    if (piece != small) realm_free(piece);
    return out ? n : REALM_E_RANGE;
}

/* A guest's chat JSON, read: either the messages array, or an object {"messages": [...],
 * "tools": [...] or null, "add_generation_prompt": bool (default true), "vars": {...}}
 * (docs/abi.md, chat_format). The messages go through the same reader as the server's requests. */
struct chat_msgs {
    cJSON *root;
    struct realm_chat_messages m;
    struct realm_chat_opts opts;
};

static void chat_msgs_free(struct chat_msgs *c) {
    realm_chat_messages_free(&c->m);
    cJSON_Delete(c->root);
}

/* Parses json[0..len) (already inside guest memory) for chat_format and chat_tokenize (`what`
 * names the import in host_msg). On success *c is owned by the caller (chat_msgs_free); nothing
 * to free on failure. Errors: REALM_E_LIMIT (max_json_values), REALM_E_INVALID (reason in
 * host_msg), REALM_E_NOMEM. */
static int64_t read_messages(struct realm_sbx_tenant *t, const char *what, const uint8_t *json,
                             int32_t len, struct chat_msgs *c) {
    memset(c, 0, sizeof *c);
    /* cJSON builds one ~64-byte node per value on the host: "[1,1,...]" of 4 MiB would be 2 M
     * nodes outside the guest's memory cap, so count first */
    uint64_t max_values = t->host->cfg.max_json_values;
    if (realm_json_values_bound(json, (size_t)len, max_values) > max_values) {
        snprintf(t->host_msg, sizeof t->host_msg,
                 "%s: more than %llu JSON values (max_json_values)", what,
                 (unsigned long long)max_values);
        return REALM_E_LIMIT;
    }

    int64_t failures = realm_alloc_thread_failures();
    cJSON *root = cJSON_ParseWithLength((const char *)json, (size_t)len);
    if (!root && realm_alloc_thread_failures() != failures)
        return REALM_E_NOMEM; /* e.g. host budget */
    c->root = root;
    c->opts.add_generation_prompt = true;
    const cJSON *msgs = root;
    if (cJSON_IsObject(root)) {
        msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        const cJSON *agp = cJSON_GetObjectItemCaseSensitive(root, "add_generation_prompt");
        const cJSON *vars = cJSON_GetObjectItemCaseSensitive(root, "vars");
        const char *bad =
            !cJSON_IsArray(msgs) ? "\"messages\" must be an array"
            : tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools) ? "\"tools\" must be an array"
            : agp && !cJSON_IsBool(agp) ? "\"add_generation_prompt\" must be a boolean"
            : vars && !cJSON_IsNull(vars) && !cJSON_IsObject(vars) ? "\"vars\" must be an object"
                                                                   : NULL;
        if (bad) {
            snprintf(t->host_msg, sizeof t->host_msg, "%s: %s", what, bad);
            cJSON_Delete(root);
            return REALM_E_INVALID;
        }
        c->opts.tools = cJSON_IsArray(tools) ? tools : NULL;
        c->opts.add_generation_prompt = !agp || cJSON_IsTrue(agp);
        c->opts.extra = cJSON_IsObject(vars) ? vars : NULL;
    }
    struct realm_err e;
    realm_err_clear(&e);
    int rc = root ? realm_chat_messages_read(msgs, 0, &c->m, &e)
                  : realm_err_set(&e, REALM_E_INVALID,
                                  "not JSON: expected a messages array or an object");
    if (rc) {
        snprintf(t->host_msg, sizeof t->host_msg, "%s: %.200s", what, e.msg);
        cJSON_Delete(root);
        memset(c, 0, sizeof *c);
    }
    return rc;
}

static int64_t imp_chat_format(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t len = a[2].of.i32, cap = a[4].of.i32;
    if (len < 0 || cap < 0) return REALM_E_RANGE;
    if (input_too_long(t, "chat_format", len)) return REALM_E_LIMIT;
    const uint8_t *json = span(t, a[1].of.i32, (uint64_t)len);
    if (!json || !span_n(t, a[3].of.i32, cap, 1)) return REALM_E_RANGE;
    struct chat_msgs cm;
    int64_t rc = read_messages(t, "chat_format", json, len, &cm);
    if (rc) return rc;
    char *out = NULL;
    size_t n = 0;
    struct realm_err e;
    realm_err_clear(&e);
    rc = realm_chat_render(s->model->tok, cm.m.msgs, cm.m.n, &cm.opts, &out, &n, &e);
    if (rc) {
        snprintf(t->host_msg, sizeof t->host_msg, "chat_format: %.200s", e.msg);
    } else if (n > INT32_MAX) {
        rc = REALM_E_LIMIT;
    } else {
        uint8_t *dst = span_n(t, a[3].of.i32, cap, 1); /* fetched again after the host work */
        if (dst) memcpy(dst, out, n < (size_t)cap ? n : (size_t)cap);
        rc = dst ? (int64_t)n : REALM_E_RANGE;
    }
    chat_msgs_free(&cm);
    realm_free(out);
    return rc;
}

/* chat_format + tokenize in one step where message content is never parsed for special tokens
 * (realm_chat_tokenize): a client's text cannot forge turns the guest would decode. */
static int64_t imp_chat_tokenize(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t len = a[2].of.i32, flags = a[3].of.i32, cap = a[5].of.i32;
    if (len < 0 || cap < 0) return REALM_E_RANGE;
    if (input_too_long(t, "chat_tokenize", len)) return REALM_E_LIMIT;
    if (flags & ~REALM_ABI_TOKENIZE_ADD_BOS) return REALM_E_INVALID;
    const uint8_t *json = span(t, a[1].of.i32, (uint64_t)len);
    if (!json || !span_n(t, a[4].of.i32, cap, 4)) return REALM_E_RANGE;
    struct chat_msgs cm;
    int64_t rc = read_messages(t, "chat_tokenize", json, len, &cm);
    if (rc) return rc;
    /* the JSON is longer than the contents it carries and than most templates' markup per
     * message, so this usually fits; the exact size otherwise */
    int64_t hcap = (int64_t)len + 16 * (int64_t)cm.m.n + 64, n = 0;
    int32_t *toks = NULL;
    struct realm_err e;
    realm_err_clear(&e);
    for (int tries = 0; tries < 2; tries++) {
        realm_free(toks);
        toks = realm_malloc((size_t)hcap * sizeof *toks);
        rc = toks ? realm_chat_tokenize_ex(s->model->tok, cm.m.msgs, cm.m.n, &cm.opts,
                                           (uint32_t)flags, toks, hcap, &n, &e)
                  : REALM_E_NOMEM;
        if (rc != REALM_E_TOO_SMALL) break;
        if (n > INT32_MAX) {
            rc = REALM_E_LIMIT;
            break;
        }
        hcap = n;
    }
    if (rc && rc != REALM_E_TOO_SMALL && e.msg[0])
        snprintf(t->host_msg, sizeof t->host_msg, "chat_tokenize: %.200s", e.msg);
    if (rc == REALM_OK) {
        uint8_t *out = span_n(t, a[4].of.i32, cap, 4); /* fetched again after the host work */
        if (!out)
            rc = REALM_E_RANGE;
        else if (n && cap)
            memcpy(out, toks, (size_t)(n < cap ? n : cap) * sizeof *toks);
    }
    realm_free(toks);
    chat_msgs_free(&cm);
    return rc < 0 ? rc : n;
}

static int64_t imp_session_open(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *ms = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!ms) return BAD_HANDLE(t);
    struct sbx_model *m = ms->model;
    const struct realm_sbx_config *cfg = &t->host->cfg;
    int32_t n_ctx = a[1].of.i32;
    int32_t max_ctx = m->n_ctx_train;
    if (cfg->max_ctx > 0 && cfg->max_ctx < max_ctx) max_ctx = cfg->max_ctx;
    if (n_ctx < 0) return REALM_E_INVALID;
    if (n_ctx == 0) n_ctx = max_ctx;
    if (n_ctx > max_ctx) return REALM_E_LIMIT;
    if (t->n_sessions >= cfg->max_sessions) return REALM_E_LIMIT;
    /* a contiguous cache costs n_ctx positions up front; a paged one takes blocks as it grows,
     * charged against the tenant group's quota in the pool */
    uint64_t kv = 0; /* checked: bytes per position (up to 2^38) times n_ctx exceeds 64 bits */
    if (!m->kv_pool && realm_mul_u64(m->kv_bytes_per_pos, (uint64_t)n_ctx, &kv))
        return REALM_E_LIMIT;
    if (cfg->max_kv_bytes && (kv > cfg->max_kv_bytes || t->kv_bytes > cfg->max_kv_bytes - kv))
        return REALM_E_KV_FULL;
    struct sbx_slot *s;
    int32_t hd = alloc_slot(t, &s);
    if (hd < 0) return hd;
    struct realm_err e;
    int rc = m->kv_pool
                 ? realm_session_new_paged(m->model, m->kv_pool, t->group, n_ctx, &s->session, &e)
                 : realm_session_new(m->model, n_ctx, &s->session, &e);
    if (rc) return rc; /* the slot stays free */
    s->kind = SBX_SLOT_SESSION;
    s->model = m;
    s->kv_bytes = kv;
    t->kv_bytes += kv;
    t->n_sessions++;
    return hd;
}

/* The session's sequence is over: its scheduler admission slot goes to the next waiting one now
 * rather than when its lease runs out. */
static void sbx_session_end(struct sbx_slot *s) {
    if (s->model && s->model->sched) realm_sched_release(s->model->sched, s->session);
}

void sbx_tenant_close_handles(struct realm_sbx_tenant *t) {
    realm_sbx_tenant_close_sessions(t);
    for (int i = 0; i < SBX_MAX_HANDLES; i++) {
        struct sbx_slot *s = &t->slots[i];
        uint32_t serial = s->serial;
        memset(s, 0, sizeof *s);
        s->serial = serial; /* closed handles stay stale */
    }
}

int32_t realm_sbx_tenant_close_sessions(struct realm_sbx_tenant *t) {
    int32_t n = 0;
    for (int i = 0; i < SBX_MAX_HANDLES; i++) {
        struct sbx_slot *s = &t->slots[i];
        if (s->kind != SBX_SLOT_SESSION) continue;
        sbx_session_end(s);
        realm_session_free(s->session);
        realm_free(s->logits);
        uint32_t serial = s->serial;
        memset(s, 0, sizeof *s);
        s->serial = serial; /* the handle stays stale */
        n++;
    }
    t->n_sessions = 0;
    t->kv_bytes = 0;
    return n;
}

static int64_t imp_session_close(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_SESSION);
    if (!s) return BAD_HANDLE(t);
    sbx_session_end(s);
    realm_session_free(s->session);
    realm_free(s->logits);
    t->kv_bytes -= s->kv_bytes;
    t->n_sessions--;
    s->kind = SBX_SLOT_FREE;
    s->session = NULL;
    s->logits = NULL;
    return REALM_OK;
}

static int64_t imp_session_rewind(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_SESSION);
    if (!s) return BAD_HANDLE(t);
    int32_t n_keep = a[1].of.i32;
    if (n_keep < 0 || n_keep > realm_session_len(s->session)) return REALM_E_RANGE;
    return realm_session_rewind(s->session, n_keep);
}

/* FNV-1a of a decode's tokens (never 0: 0 means "none"). */
static uint64_t tokens_hash(const int32_t *toks, int32_t n) {
    uint64_t h = 1469598103934665603ull;
    const uint8_t *p = (const uint8_t *)toks;
    for (size_t i = 0; i < (size_t)n * sizeof *toks; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* A paged session's first decode of this call: when an earlier session decoded the same tokens
 * first (the choices of an n > 1 request), the prefix cache served them and they are not charged
 * as prompt again (struct realm_sbx_usage); else they are remembered. */
static void note_prompt(struct realm_sbx_tenant *t, uint64_t hash, int32_t n) {
    for (int32_t i = 0; i < t->n_call_prompts; i++)
        if (t->call_prompts[i] == hash) {
            t->call_repeat_tokens += n;
            return;
        }
    if (t->n_call_prompts < SBX_MAX_CALL_PROMPTS) t->call_prompts[t->n_call_prompts++] = hash;
}

static int64_t imp_decode(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_SESSION);
    if (!s) return BAD_HANDLE(t);
    int32_t n = a[2].of.i32, cap = a[4].of.i32;
    struct sbx_model *m = s->model;
    if (n <= 0) return REALM_E_INVALID;
    if (cap < 0) return REALM_E_RANGE;
    if (!span_n(t, a[1].of.i32, n, 4) || !span_n(t, a[3].of.i32, cap, 4)) return REALM_E_RANGE;
    if (cap > 0 && cap < m->n_vocab) return REALM_E_TOO_SMALL;
    /* a copy (the guest's array may be unaligned); one decode step needs no allocation. Token
     * ids and context room are checked by the scheduler, before anything is queued. */
    int32_t small[64];
    int32_t *toks = n <= 64 ? small : realm_malloc((size_t)n * sizeof *toks);
    if (!toks) return REALM_E_NOMEM;
    memcpy(toks, span_n(t, a[1].of.i32, n, 4), (size_t)n * sizeof *toks);
    /* Logits go straight into guest memory when the guest's buffer is float-aligned: no guest
     * code runs until this import returns, so the memory cannot grow or move meanwhile (the
     * store is used by this thread only). An unaligned buffer gets a host copy. */
    float *dst = NULL;
    bool direct = cap > 0 && (a[3].of.i32 & 3) == 0;
    if (direct) {
        dst = (float *)(void *)span_n(t, a[3].of.i32, cap, 4);
    } else if (cap > 0) {
        if (!s->logits && !(s->logits = realm_malloc((size_t)m->n_vocab * sizeof(float)))) {
            if (toks != small) realm_free(toks);
            return REALM_E_NOMEM;
        }
        dst = s->logits;
    }
    /* a first decode into an empty paged session: remembered to spot n choices of one prompt */
    uint64_t prompt_hash = realm_session_len(s->session) == 0 && realm_session_is_paged(s->session)
                               ? tokens_hash(toks, n)
                               : 0;
    uint64_t t0 = realm_now_ns();
    struct realm_err e;
    realm_err_clear(&e);
    /* t->stop, not the request's flag: the ticker also raises it at the call's wall deadline, so
     * a decode waiting in the scheduler cannot hold this thread past it */
    int rc = sbx_backend_decode(m, t->group, s->session, toks, n, dst, &t->stop, &e);
    if (toks != small) realm_free(toks);
    if (t->req) t->req->usage.decode_ns += realm_now_ns() - t0;
    if (rc == REALM_E_CANCELLED && !(t->call_cancel && atomic_load(t->call_cancel)) &&
        sbx_tenant_past_deadline(t))
        rc = REALM_E_TIMEOUT;
    if (rc) {
        if (rc != REALM_E_CANCELLED && rc != REALM_E_TIMEOUT) {
            realm_log(REALM_LOG_DEBUG, "sandbox", "%s: decode: %s", t->name,
                      e.msg[0] ? e.msg : realm_strerror(rc));
            /* kept for the request's error if the guest gives up because of it */
            /* the pool's own figures describe every tenant's use: the guest (and so the client)
             * only learns that it is exhausted */
            if (rc == REALM_E_KV_FULL && strstr(e.msg, "pool exhausted"))
                snprintf(t->host_msg, sizeof t->host_msg, "kvpool: pool exhausted");
            else
                snprintf(t->host_msg, sizeof t->host_msg, "%s",
                         e.msg[0] ? e.msg : realm_strerror(rc));
        }
        return rc;
    }
    if (cap > 0 && !direct) {
        uint8_t *out = span_n(t, a[3].of.i32, cap, 4); /* fetched again after the host work */
        if (!out) return REALM_E_RANGE;
        memcpy(out, s->logits, (size_t)m->n_vocab * sizeof(float));
    }
    if (t->req) {
        struct realm_sbx_usage *u = &t->req->usage;
        if (u->decode_calls == 0) {
            uint64_t t1 = realm_now_ns();
            u->prefill_ns = t1 - t0;
            u->prefill_end_ns = t1 - t->call_start_ns;
        }
        u->decoded_tokens += n;
        u->decode_calls++;
        if (prompt_hash) note_prompt(t, prompt_hash, n);
    } else {
        t->unbilled_tokens += n; /* in realm_init: charged to the instance's next request */
    }
    if (cap > 0) {
        t->call_logit_decodes++;
        if (s->sampled_call != t->call_serial) {
            s->sampled_call = t->call_serial;
            t->call_sampled_sessions++;
        }
    }
    return REALM_OK;
}

static int64_t imp_emit(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    int32_t len = a[1].of.i32;
    const uint8_t *p = span_n(t, a[0].of.i32, len, 1);
    if (!p) return REALM_E_RANGE;
    if ((uint64_t)r->usage.output_bytes + (uint64_t)len > t->host->cfg.max_output_bytes)
        return REALM_E_LIMIT;
    if (len == 0) return REALM_OK;
    if (r->emit && r->emit(r->emit_user, (const char *)p, (size_t)len) < 0) {
        atomic_store(&r->cancel, true);
        return REALM_E_CANCELLED;
    }
    if (!r->usage.first_emit_ns) r->usage.first_emit_ns = realm_now_ns() - t->call_start_ns;
    r->usage.output_bytes += len;
    return REALM_OK;
}

/* logprobs(model, ids_ptr, lps_ptr, n): one record per sampled token, for the client's logprobs. */
static int64_t imp_logprobs(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    struct sbx_slot *s = lookup(t, a[0].of.i32, SBX_SLOT_MODEL);
    if (!s) return BAD_HANDLE(t);
    int32_t n = a[3].of.i32;
    if (n < 1 || n > REALM_ABI_MAX_TOP_LOGPROBS + 1) return REALM_E_INVALID;
    const uint8_t *pi = span_n(t, a[1].of.i32, n, 4), *pl = span_n(t, a[2].of.i32, n, 4);
    if (!pi || !pl) return REALM_E_RANGE;
    int32_t ids[REALM_ABI_MAX_TOP_LOGPROBS + 1];
    float lps[REALM_ABI_MAX_TOP_LOGPROBS + 1];
    memcpy(ids, pi, (size_t)n * sizeof *ids); /* guest memory may be unaligned: copy first */
    memcpy(lps, pl, (size_t)n * sizeof *lps);
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->model->n_vocab || isnan(lps[i]) || lps[i] > 0.0f)
            return REALM_E_INVALID;
    if (!r->logprobs) return REALM_OK;
    return r->logprobs(r->emit_user, s->model->tok, ids, lps, n);
}

/* tool_calls(ptr, len): the request's answer is these tool calls (docs/abi.md): a JSON array of
 * 1..128 {"name": non-empty string, "arguments": string} objects, once per request. */
static int64_t imp_tool_calls(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    int32_t len = a[1].of.i32;
    if (len < 0) return REALM_E_RANGE;
    if (r->tool_calls_seen) return REALM_E_STATE;
    if ((uint64_t)r->usage.output_bytes + (uint64_t)len > t->host->cfg.max_output_bytes)
        return REALM_E_LIMIT;
    const uint8_t *p = span(t, a[0].of.i32, (uint64_t)len);
    if (!p) return REALM_E_RANGE;
    uint64_t max_values = t->host->cfg.max_json_values;
    if (realm_json_values_bound(p, (size_t)len, max_values) > max_values) return REALM_E_LIMIT;
    cJSON *root = cJSON_ParseWithLength((const char *)p, (size_t)len);
    int64_t rc = cJSON_IsArray(root) && root->child && cJSON_GetArraySize(root) <= 128
                     ? REALM_OK
                     : REALM_E_INVALID;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(c, "arguments");
        if (!cJSON_IsObject(c) || !cJSON_IsString(name) || !name->valuestring[0] ||
            !cJSON_IsString(args))
            rc = REALM_E_INVALID;
    }
    char *norm = rc ? NULL : cJSON_PrintUnformatted(root); /* compact, without what cJSON ignored */
    cJSON_Delete(root);
    if (rc) {
        snprintf(t->host_msg, sizeof t->host_msg,
                 "tool_calls: expected [{\"name\": string, \"arguments\": string}, ...]");
        return rc;
    }
    if (!norm) return REALM_E_NOMEM;
    r->tool_calls_seen = true;
    r->usage.output_bytes += len;
    if (r->tool_calls) rc = r->tool_calls(r->emit_user, norm, strlen(norm));
    cJSON_free(norm);
    return rc;
}

static int64_t imp_request_read(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    int32_t cap = a[1].of.i32;
    uint8_t *buf = span_n(t, a[0].of.i32, cap, 1);
    if (!buf) return REALM_E_RANGE;
    if (r->json_len > INT32_MAX) return REALM_E_LIMIT;
    size_t n = r->json_len < (size_t)cap ? r->json_len : (size_t)cap;
    if (n) memcpy(buf, r->json, n);
    return (int64_t)r->json_len;
}

static int64_t imp_log(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    int32_t level = a[0].of.i32, len = a[2].of.i32;
    if (level < REALM_ABI_LOG_DEBUG || level > REALM_ABI_LOG_ERROR) return REALM_E_INVALID;
    const uint8_t *p = span_n(t, a[1].of.i32, len, 1);
    if (!p) return REALM_E_RANGE;
    size_t n = (size_t)len < REALM_ABI_MAX_LOG ? (size_t)len : REALM_ABI_MAX_LOG;
    /* the message reaches logs and error replies: no control characters */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        t->last_msg[i] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
    }
    t->last_msg[n] = 0;
    if (t->log_lines < t->host->cfg.max_log_lines) {
        t->log_lines++;
        /* a guest's "error" is its tenant's problem, not the host's: at most info (the failing
         * call's error carries the last line anyway) */
        realm_log(level > REALM_LOG_INFO ? REALM_LOG_INFO : level, "guest", "%s: %s", t->name,
                  t->last_msg);
    }
    return REALM_OK;
}

static int64_t imp_now_ns(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    (void)t, (void)a;
    return (int64_t)realm_now_ns();
}

static int64_t imp_random_seed(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    (void)a;
    uint64_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = realm_now_ns() ^ ((uint64_t)t->id << 32) ^ (uint64_t)(uintptr_t)&v;
    return (int64_t)(v >> 1); /* non-negative */
}

static int64_t imp_usage(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    int32_t p = a[0].of.i32, c = a[1].of.i32, f = a[2].of.i32;
    if (p < 0 || c < 0 || (f != REALM_ABI_FINISH_STOP && f != REALM_ABI_FINISH_LENGTH))
        return REALM_E_INVALID;
    r->usage.prompt_tokens = p;
    r->usage.finish_reason = f;
    /* per choice (choice() picks it; one choice: choice 0): completion tokens are their sum */
    r->choice_completion[r->choice] = c;
    r->choice_finish[r->choice] = f;
    int64_t sum = 0;
    for (int32_t i = 0; i < REALM_ABI_MAX_CHOICES; i++)
        if (r->choice_completion[i] > 0) sum += r->choice_completion[i];
    r->usage.completion_tokens = sum > INT32_MAX ? INT32_MAX : (int32_t)sum;
    return REALM_OK;
}

/* choice(index): the choice (of the request's n) that the following emit, logprobs and usage
 * calls belong to. */
static int64_t imp_choice(struct realm_sbx_tenant *t, const wasmtime_val_t *a) {
    struct realm_sbx_request *r = t->req;
    if (!r) return REALM_E_STATE;
    int32_t i = a[0].of.i32, n = r->n_choices > 1 ? r->n_choices : 1;
    if (n > REALM_ABI_MAX_CHOICES) n = REALM_ABI_MAX_CHOICES;
    if (i < 0 || i >= n) return REALM_E_RANGE;
    r->choice = i;
    return REALM_OK;
}

/* ---- the import table ---- */

struct import_def {
    const char *name;
    const char *sig; /* params ':' results; i = i32, I = i64 */
    import_fn fn;
    bool when_cancelled; /* still works after cancellation or the wall-clock limit (clean-up,
                            logging) */
};

static const struct import_def g_imports[] = {
    {"model_open", "ii:i", imp_model_open, false},
    {"model_info", "iii:i", imp_model_info, false},
    {"tokenize", "iiiiii:i", imp_tokenize, false},
    {"token_piece", "iiii:i", imp_token_piece, false},
    {"chat_format", "iiiii:i", imp_chat_format, false},
    {"chat_tokenize", "iiiiii:i", imp_chat_tokenize, false},
    {"session_open", "ii:i", imp_session_open, false},
    {"session_close", "i:i", imp_session_close, true},
    {"session_rewind", "ii:i", imp_session_rewind, true},
    {"decode", "iiiii:i", imp_decode, false},
    {"emit", "ii:i", imp_emit, false},
    {"logprobs", "iiii:i", imp_logprobs, false},
    {"tool_calls", "ii:i", imp_tool_calls, false},
    {"request_read", "ii:i", imp_request_read, false},
    {"log", "iii:i", imp_log, true},
    {"now_ns", ":I", imp_now_ns, true},
    {"random_seed", ":I", imp_random_seed, true},
    {"usage", "iii:i", imp_usage, true},
    {"choice", "i:i", imp_choice, false},
};
#define N_IMPORTS (sizeof g_imports / sizeof g_imports[0])

static wasm_trap_t *dispatch(void *env, wasmtime_caller_t *caller, const wasmtime_val_t *args,
                             size_t nargs, wasmtime_val_t *results, size_t nresults) {
    (void)nargs, (void)nresults; /* the linker checked the types */
    const struct import_def *d = env;
    struct realm_sbx_tenant *t = wasmtime_context_get_data(wasmtime_caller_context(caller));
    uint64_t t0 = realm_now_ns();
    int64_t r;
    if (t->call_cancel && !d->when_cancelled &&
        atomic_load_explicit(t->call_cancel, memory_order_relaxed))
        r = REALM_E_CANCELLED;
    else if (t->wall_deadline_ns && !d->when_cancelled && t0 >= t->wall_deadline_ns)
        r = REALM_E_TIMEOUT; /* past the call's wall-clock limit (generate or init): no more work */
    else {
        /* what the import allocates for the guest counts against its tenant's host memory */
        struct realm_alloc_budget *prev = realm_alloc_budget_enter(t->host_budget);
        r = d->fn(t, args);
        realm_alloc_budget_leave(prev);
    }
    if (d->sig[strlen(d->sig) - 1] == 'I') {
        results[0].kind = WASMTIME_I64;
        results[0].of.i64 = r;
    } else {
        results[0].kind = WASMTIME_I32;
        results[0].of.i32 = (int32_t)r;
    }
    uint64_t dt = realm_now_ns() - t0;
    t->call_host_ns += dt;
    if (t->req) t->req->usage.host_ns += dt;
    return NULL;
}

static wasm_functype_t *make_type(const char *sig) {
    wasm_valtype_t *ps[8], *rs[2];
    size_t np = 0, nr = 0;
    bool res = false;
    for (const char *c = sig; *c; c++) {
        if (*c == ':') {
            res = true;
            continue;
        }
        wasm_valtype_t *v = wasm_valtype_new(*c == 'I' ? WASM_I64 : WASM_I32);
        if (res)
            rs[nr++] = v;
        else
            ps[np++] = v;
    }
    wasm_valtype_vec_t pv, rv;
    wasm_valtype_vec_new(&pv, np, ps);
    wasm_valtype_vec_new(&rv, nr, rs);
    return wasm_functype_new(&pv, &rv);
}

int sbx_define_imports(struct realm_sbx_host *h, struct realm_err *err) {
    for (size_t i = 0; i < N_IMPORTS; i++) {
        const struct import_def *d = &g_imports[i];
        wasm_functype_t *ft = make_type(d->sig);
        wasmtime_error_t *e = wasmtime_linker_define_func(
            h->linker, "realm", 5, d->name, strlen(d->name), ft, dispatch, (void *)d, NULL);
        wasm_functype_delete(ft);
        if (e) {
            char msg[256];
            sbx_error_text(e, msg, sizeof msg);
            return realm_err_set(err, REALM_E_INTERNAL, "sandbox: define %s: %s", d->name, msg);
        }
    }
    return REALM_OK;
}

int sbx_check_imports(const wasmtime_module_t *m, const char *name, struct realm_err *err) {
    wasm_importtype_vec_t im;
    wasmtime_module_imports(m, &im);
    int rc = REALM_OK;
    for (size_t i = 0; i < im.size && rc == REALM_OK; i++) {
        const wasm_name_t *mod = wasm_importtype_module(im.data[i]);
        const wasm_name_t *nm = wasm_importtype_name(im.data[i]);
        const wasm_externtype_t *et = wasm_importtype_type(im.data[i]);
        int ml = (int)(mod->size < 64 ? mod->size : 64), nl = (int)(nm->size < 64 ? nm->size : 64);
        if (mod->size != 5 || memcmp(mod->data, "realm", 5) != 0) {
            rc = realm_err_set(
                err, REALM_E_FORMAT,
                "sandbox: %s: imports %.*s.%.*s, expected only module \"realm\" (no WASI)", name,
                ml, mod->data, nl, nm->data);
            break;
        }
        const struct import_def *d = NULL;
        for (size_t k = 0; k < N_IMPORTS; k++)
            if (nm->size == strlen(g_imports[k].name) &&
                !memcmp(nm->data, g_imports[k].name, nm->size))
                d = &g_imports[k];
        if (!d) {
            rc = realm_err_set(err, REALM_E_FORMAT, "sandbox: %s: unknown import realm.%.*s", name,
                               nl, nm->data);
            break;
        }
        char sig[32] = "?";
        if (wasm_externtype_kind(et) == WASM_EXTERN_FUNC)
            sbx_functype_sig(wasm_externtype_as_functype_const(et), sig, sizeof sig);
        if (strcmp(sig, d->sig) != 0)
            rc = realm_err_set(err, REALM_E_FORMAT,
                               "sandbox: %s: import realm.%s: type %s, expected %s", name, d->name,
                               sig, d->sig);
    }
    wasm_importtype_vec_delete(&im);
    return rc;
}
