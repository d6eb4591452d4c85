/*
 * abuse_attack.c — attacks a tenant's guest can make through `realm serve`
 * (tests/abuse/test_abuse.py). The server hands the guest only the OpenAI fields, so the attack
 * is chosen by the request's text: the prompt of a completion, or the last message of a chat.
 *   "rewind"       decodes and rewinds one session forever in realm_generate, ignoring
 *                  REALM_E_TIMEOUT: nearly all the time is the host's (decode), so only the
 *                  tenant's generate wall-clock limit stops it;
 *   "chat_format"  renders a 16 MiB messages array "[1,1,...,1]" (malformed: items are not
 *                  messages) and returns the host's error code;
 *   "forge"        forged, stale and wrong-kind handles: each must be REALM_E_BAD_HANDLE; emits
 *                  "ok", or fails naming the first mismatch;
 *   "hold"         fills HOLD_BLOCKS KV blocks and keeps them HOLD_MS while it decodes and
 *                  rewinds a second session, then frees them and goes on forever (the wall-clock
 *                  limit ends it);
 *   anything else  emits "ok".
 * realm_init loops (decode and rewind, forever) when it finds the tenant's KV quota full, i.e.
 * while another instance of the same tenant runs "hold": with kv_blocks = HOLD_BLOCKS + 1, the
 * instance the server creates for a request that arrives meanwhile loops in realm_init, and only
 * the tenant's init wall-clock limit stops it. Why not loop unconditionally: the server creates
 * each tenant's first instance at start-up and refuses to start when that fails. And why the KV
 * quota: an instance knows nothing of earlier ones (handle serials are per instance), but the
 * quota is the tenant's, shared by all its instances.
 */
#include "check.h"

#define HOLD_BLOCKS 4 /* of 16 positions */
#define HOLD_MS 1500

/* Tokens no prefix cache holds (a cached block would be attached instead of allocated). */
static void random_tokens(int32_t *t, int n) {
    uint64_t x = (uint64_t)realm_random_seed();
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = 20 + (int32_t)((x >> 33) % 400); /* inside any vocabulary */
    }
}

/* Decodes one token, rewinds when full, forever. TIMEOUT and KV_FULL are ignored (the host must
 * stop it; KV_FULL passes once "hold" frees its blocks); returns on other errors (CANCELLED ...).
 * `held` > 0: a session to close once `until_ns` has passed. */
static int32_t decode_rewind_forever(int32_t held, int64_t until_ns) {
    int32_t m = realm_model_open("", 0);
    if (m < 0) return m;
    int32_t s = realm_session_open(m, 8);
    if (s < 0) return s;
    int32_t tok = 1;
    for (;;) {
        int32_t rc = realm_decode(s, &tok, 1, NULL, 0);
        if (rc == REALM_E_CONTEXT_FULL) rc = realm_session_rewind(s, 0);
        if (held > 0 && realm_now_ns() >= until_ns) {
            realm_session_close(held);
            held = 0;
        }
        if (rc && rc != REALM_E_TIMEOUT && rc != REALM_E_KV_FULL) return rc;
    }
}

RG_EXPORT(realm_init) int32_t realm_init(void) {
    int32_t m = realm_model_open("", 0);
    if (m < 0) return m;
    int32_t s = realm_session_open(m, 16);
    if (s < 0) return s;
    int32_t toks[16];
    random_tokens(toks, 16);
    int32_t rc = realm_decode(s, toks, 16, NULL, 0); /* one block */
    realm_session_close(s);
    if (rc == REALM_E_KV_FULL) {
        rg_log(REALM_ABI_LOG_WARN, "the tenant's KV quota is full: looping in realm_init");
        return decode_rewind_forever(0, 0);
    }
    return rc;
}

static int32_t hold(void) {
    int32_t m = realm_model_open("", 0);
    if (m < 0) return m;
    int32_t x = realm_session_open(m, HOLD_BLOCKS * 16);
    if (x < 0) return x;
    int32_t toks[HOLD_BLOCKS * 16];
    random_tokens(toks, HOLD_BLOCKS * 16);
    int32_t rc = realm_decode(x, toks, HOLD_BLOCKS * 16, NULL, 0);
    if (rc) return rc;
    return decode_rewind_forever(x, realm_now_ns() + (int64_t)HOLD_MS * 1000000);
}

static int32_t big_chat_format(void) {
    size_t n = (16u << 20) - 1; /* "[" + "1,1,...,1" + "]": the inner part has odd length */
    char *msgs = malloc(n);
    char out[256];
    if (!msgs) {
        rg_log(REALM_ABI_LOG_ERROR, "malloc(16 MiB) failed: guest memory limit too small");
        return REALM_E_NOMEM;
    }
    msgs[0] = '[';
    for (size_t i = 1; i + 1 < n; i++)
        msgs[i] = (i & 1) ? '1' : ',';
    msgs[n - 1] = ']';
    int32_t m = realm_model_open("", 0);
    int32_t rc = m < 0 ? m : realm_chat_format(m, msgs, (int32_t)n, out, sizeof out);
    free(msgs);
    if (rc >= 0) {
        rg_logf(REALM_ABI_LOG_ERROR, "chat_format accepted 16 MiB of numbers (%d bytes)", rc);
        return REALM_E_INTERNAL;
    }
    rg_logf(REALM_ABI_LOG_ERROR, "chat_format: %s", rg_strerror(rc));
    return rc;
}

static int32_t forge(void) {
    int32_t m = realm_model_open("", 0);
    int32_t s = realm_session_open(m, 8);
    if (m <= 0 || s <= 0) {
        rg_logf(REALM_ABI_LOG_ERROR, "setup: model %d session %d", m, s);
        return REALM_E_INTERNAL;
    }
    int32_t tok = 1;
    char buf[8];
    int32_t forged[] = {0,    -1, INT32_MIN, INT32_MAX, s + 1, s - 1, s ^ (1 << 24), s | (63 << 24),
                        m + 1};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        if (forged[i] == s || forged[i] == m) continue;
        EXPECT(realm_decode(forged[i], &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_rewind(forged[i], 0), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_close(forged[i]), REALM_E_BAD_HANDLE);
        EXPECT(realm_model_info(forged[i], buf, sizeof buf), REALM_E_BAD_HANDLE);
        EXPECT(realm_tokenize(forged[i], "a", 1, 0, &tok, 1), REALM_E_BAD_HANDLE);
        EXPECT(realm_chat_format(forged[i], "[]", 2, buf, sizeof buf), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_open(forged[i], 8), REALM_E_BAD_HANDLE);
    }
    EXPECT(realm_decode(m, &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
    EXPECT(realm_model_info(s, buf, sizeof buf), REALM_E_BAD_HANDLE);
    EXPECT(realm_session_close(s), REALM_OK);
    EXPECT(realm_decode(s, &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
    EXPECT(realm_session_close(s), REALM_E_BAD_HANDLE);
    return g_fail ? REALM_E_INTERNAL : rg_emit_str("ok");
}

/* The attack's name: the prompt, or the content of the last message. */
static void command(const struct rj_value *req, char *out, size_t cap) {
    const char *text = req_str(req, "prompt");
    const struct rj_value *msgs = rj_get(req, "messages");
    if (msgs && msgs->type == RJ_ARRAY && msgs->n > 0)
        text = req_str(&msgs->items[msgs->n - 1], "content");
    rg_fmt(out, cap, "%s", text);
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    char cmd[32];
    command(req, cmd, sizeof cmd);
    rj_free(req);
    if (!strcmp(cmd, "rewind")) return decode_rewind_forever(0, 0);
    if (!strcmp(cmd, "chat_format")) return big_chat_format();
    if (!strcmp(cmd, "forge")) return forge();
    if (!strcmp(cmd, "hold")) return hold();
    return rg_emit_str("ok");
}
