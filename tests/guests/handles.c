/*
 * handles.c — handle abuse. {"op": "forge"}: zero, negative, huge and near-miss handles, a model
 * handle used as a session and the reverse, use after close, double close: all
 * REALM_E_BAD_HANDLE. {"op": "open"}: opens a session, decodes one token and keeps it (emits the
 * handle). {"op": "use", "handle": H}: decodes with H and closes it, emitting both results:
 * "0 0" in the tenant that opened it, "-9 -9" (BAD_HANDLE) in any other.
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
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
    int32_t forged[] = {
        0,    -1, INT32_MIN, INT32_MAX, s + 1, s - 1, s ^ (1 << 24), s ^ (1 << 29), s | (63 << 24),
        m + 1};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        if (forged[i] == s || forged[i] == m) continue;
        EXPECT(realm_decode(forged[i], &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_close(forged[i]), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_rewind(forged[i], 0), REALM_E_BAD_HANDLE);
        EXPECT(realm_model_info(forged[i], buf, sizeof buf), REALM_E_BAD_HANDLE);
        EXPECT(realm_token_piece(forged[i], 1, buf, sizeof buf), REALM_E_BAD_HANDLE);
        EXPECT(realm_tokenize(forged[i], "a", 1, 0, &tok, 1), REALM_E_BAD_HANDLE);
        EXPECT(realm_chat_format(forged[i], "[]", 2, buf, sizeof buf), REALM_E_BAD_HANDLE);
        EXPECT(realm_session_open(forged[i], 8), REALM_E_BAD_HANDLE);
    }
    /* kinds are checked: a model is not a session and a session is not a model */
    EXPECT(realm_decode(m, &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
    EXPECT(realm_session_close(m), REALM_E_BAD_HANDLE);
    EXPECT(realm_model_info(s, buf, sizeof buf), REALM_E_BAD_HANDLE);
    EXPECT(realm_session_open(s, 8), REALM_E_BAD_HANDLE);
    /* stale: after close, and after the slot is reused */
    EXPECT(realm_decode(s, &tok, 1, NULL, 0), REALM_OK);
    EXPECT(realm_session_close(s), REALM_OK);
    EXPECT(realm_session_close(s), REALM_E_BAD_HANDLE);
    EXPECT(realm_decode(s, &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
    int32_t s2 = realm_session_open(m, 8);
    if (s2 == s) {
        rg_log(REALM_ABI_LOG_ERROR, "a reopened session got the closed handle's value");
        g_fail++;
    }
    EXPECT(realm_decode(s, &tok, 1, NULL, 0), REALM_E_BAD_HANDLE);
    EXPECT(realm_decode(s2, &tok, 1, NULL, 0), REALM_OK);
    EXPECT(realm_session_close(s2), REALM_OK);
    /* the same model opened twice is the same handle */
    EXPECT(realm_model_open("", 0), m);
    return g_fail ? REALM_E_INTERNAL : rg_emit_str("ok");
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    const char *op = req_str(req, "op");
    int32_t handle = (int32_t)rj_number(rj_get(req, "handle"), 0);
    int32_t rc = REALM_OK;
    char buf[48];
    if (!strcmp(op, "forge")) {
        rc = forge();
    } else if (!strcmp(op, "open")) {
        int32_t m = realm_model_open("", 0);
        int32_t s = realm_session_open(m, 8);
        int32_t tok = 1;
        if (s < 0 || (rc = realm_decode(s, &tok, 1, NULL, 0)) == REALM_OK)
            rc = s < 0 ? s : realm_emit(buf, rg_fmt(buf, sizeof buf, "%d", s));
    } else if (!strcmp(op, "use")) {
        int32_t tok = 1;
        int32_t d = realm_decode(handle, &tok, 1, NULL, 0);
        int32_t c = realm_session_close(handle);
        rc = realm_emit(buf, rg_fmt(buf, sizeof buf, "%d %d", d, c));
    } else {
        rc = REALM_E_INVALID;
    }
    rj_free(req);
    return rc;
}
