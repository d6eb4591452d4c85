/*
 * after_cancel.c — keeps decoding (rewinding when the context is full) until the host says
 * REALM_E_CANCELLED. {"mode": "polite"}: then checks that the other imports refuse work too
 * (while clean-up still works) and returns REALM_E_CANCELLED. {"mode": "rude"}: then spins
 * forever; the host must stop it.
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    bool rude = !strcmp(req_str(req, "mode"), "rude");
    rj_free(req);
    int32_t m = realm_model_open("", 0);
    int32_t s = realm_session_open(m, 16);
    if (s <= 0) return REALM_E_INTERNAL;
    int32_t tok = 1, rc;
    rg_emit_str("started");
    for (;;) {
        rc = realm_decode(s, &tok, 1, NULL, 0);
        if (rc == REALM_E_CONTEXT_FULL) rc = realm_session_rewind(s, 0);
        if (rc) break;
    }
    if (rc != REALM_E_CANCELLED) {
        rg_logf(REALM_ABI_LOG_ERROR, "decode ended with %d", rc);
        return REALM_E_INTERNAL;
    }
    if (rude) {
        volatile uint32_t n = 0;
        for (;;)
            n++;
    }
    char buf[8];
    EXPECT(realm_emit("x", 1), REALM_E_CANCELLED);
    EXPECT(realm_decode(s, &tok, 1, NULL, 0), REALM_E_CANCELLED);
    EXPECT(realm_tokenize(m, "a", 1, 0, &tok, 1), REALM_E_CANCELLED);
    EXPECT(realm_request_read(buf, sizeof buf), REALM_E_CANCELLED);
    EXPECT(realm_session_open(m, 8), REALM_E_CANCELLED);
    EXPECT(realm_model_open("", 0), REALM_E_CANCELLED);
    EXPECT(realm_session_close(s), REALM_OK);
    EXPECT(realm_log(REALM_ABI_LOG_DEBUG, "bye", 3), REALM_OK);
    return g_fail ? REALM_E_INTERNAL : REALM_E_CANCELLED;
}
