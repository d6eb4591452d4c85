/*
 * chat_tokenize.c — the chat_tokenize import seen from a guest, for tests/test_sandbox_models.c.
 * Request {"op": "ids", "messages": [...], "flags": f, "cap": c} calls chat_tokenize once with
 * an output buffer of c tokens (c <= 4096) and emits "<result>:" followed by the ids written,
 * after checking that nothing past min(result, c) was touched. {"op": "abuse"} makes calls that
 * must fail (spans outside memory or wrapping, negative lengths and caps, flags other than
 * ADD_BOS, malformed messages, a forged handle) and emits "<n> checks" if every answer was the
 * expected one; "n_ok" and "n_empty" are the token counts the host expects for one short user
 * message and for an empty list.
 */
#include "check.h"

#define MAX_CAP 4096
#define GUARD 8
#define SENTINEL (-77)

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

static int32_t op_ids(int32_t m, const char *json, const struct rj_value *req) {
    const struct rj_value *msgs = rj_get(req, "messages");
    if (!msgs) return REALM_E_INVALID;
    int32_t flags = (int32_t)rj_number(rj_get(req, "flags"), 0);
    int32_t cap = (int32_t)rj_number(rj_get(req, "cap"), MAX_CAP);
    if (cap < 0 || cap > MAX_CAP) return REALM_E_INVALID;
    static int32_t buf[MAX_CAP + GUARD];
    for (int32_t i = 0; i < MAX_CAP + GUARD; i++)
        buf[i] = SENTINEL;
    int32_t r =
        realm_chat_tokenize(m, json + msgs->src_off, (int32_t)msgs->src_len, flags, buf, cap);
    struct rg_buf out = {0};
    char num[16];
    int32_t k = r < 0 ? 0 : r < cap ? r : cap;
    for (int32_t i = k; i < MAX_CAP + GUARD; i++) {
        if (buf[i] != SENTINEL) {
            rg_logf(REALM_ABI_LOG_ERROR, "chat_tokenize(cap %d) = %d wrote index %d", cap, r, i);
            return REALM_E_INTERNAL;
        }
    }
    int32_t rc = rg_buf_append(&out, num, (size_t)rg_fmt(num, sizeof num, "%d:", r));
    for (int32_t i = 0; i < k && !rc; i++)
        rc = rg_buf_append(&out, num, (size_t)rg_fmt(num, sizeof num, i ? " %d" : "%d", buf[i]));
    if (!rc) rc = realm_emit(out.data, (int32_t)out.len);
    rg_buf_free(&out);
    return rc;
}

static int op_abuse(int32_t m, const struct rj_value *req) {
    const uint32_t end = mem_bytes();
    char *past = (char *)(uintptr_t)end;
    char *wrap = (char *)(uintptr_t)0xFFFFFFF0u;
    static const char ok[] = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    const int32_t ok_len = (int32_t)sizeof ok - 1;
    int32_t toks[8];
    int n = 0;
#define CHECK_RC(call, want)                                                                       \
    do {                                                                                           \
        n++;                                                                                       \
        EXPECT(call, want);                                                                        \
    } while (0)
    /* sanity: the call works (the host test passes the counts it computed) */
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0, toks, 8), rj_number(rj_get(req, "n_ok"), -1));
    CHECK_RC(realm_chat_tokenize(m, past, 1, 0, toks, 8), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, past - 2, 4, 0, toks, 8), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, wrap, 0x20, 0, toks, 8), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, ok, -1, 0, toks, 8), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, ok, INT32_MAX, 0, toks, 8), REALM_E_LIMIT);
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0, (int32_t *)(uintptr_t)end, 1), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0, (int32_t *)(uintptr_t)(end - 4), 2),
             REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0, toks, 0x40000000),
             REALM_E_RANGE); /* 4 GiB wraps */
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0, toks, -1), REALM_E_RANGE);
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, REALM_ABI_TOKENIZE_PARSE_SPECIAL, toks, 8),
             REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, ok, ok_len, 0x100, toks, 8), REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, "[{", 2, 0, toks, 8), REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, "{}", 2, 0, toks, 8), REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, "[{\"content\":\"x\"}]", 17, 0, toks, 8), REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, "[{\"role\":\"a b\",\"content\":\"x\"}]", 30, 0, toks, 8),
             REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m, "[{\"role\":\"user\",\"content\":7}]", 29, 0, toks, 8),
             REALM_E_INVALID);
    CHECK_RC(realm_chat_tokenize(m ^ 0x5a5a, ok, ok_len, 0, toks, 8), REALM_E_BAD_HANDLE);
    /* an empty list is the generation prompt alone; a sizing call with cap 0 */
    CHECK_RC(realm_chat_tokenize(m, "[]", 2, 0, NULL, 0), rj_number(rj_get(req, "n_empty"), -1));
#undef CHECK_RC
    if (g_fail) return REALM_E_INTERNAL;
    char buf[32];
    return realm_emit(buf, rg_fmt(buf, sizeof buf, "%d checks", n));
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    char *json = NULL;
    size_t len = 0;
    struct rj_value *req = NULL;
    int32_t rc = rg_request_read_all(&json, &len);
    if (rc == REALM_OK) rc = rj_parse(json, len, &req, NULL, 0);
    int32_t m = rc ? rc : realm_model_open("", 0);
    if (m < 0) {
        rc = m;
    } else if (!strcmp(req_str(req, "op"), "ids")) {
        rc = op_ids(m, json, req);
    } else if (!strcmp(req_str(req, "op"), "abuse")) {
        rc = op_abuse(m, req);
    } else {
        rc = REALM_E_INVALID;
    }
    rj_free(req);
    free(json);
    return rc;
}
