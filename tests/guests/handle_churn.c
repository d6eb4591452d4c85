/*
 * handle_churn.c — {"n": N}: opens the default model, then N times opens an 8-position session
 * and closes it again (checking that the closed handle is stale). Stops at the first failed
 * session_open. Emits "<opened> <status of the last open> <first handle> <last handle>".
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    int32_t n = (int32_t)rj_number(rj_get(req, "n"), 1);
    rj_free(req);
    int32_t m = realm_model_open("", 0);
    if (m < 0) return m;
    int32_t opened = 0, last_rc = REALM_OK, first = 0, last = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t s = realm_session_open(m, 8);
        if (s < 0) {
            last_rc = s;
            break;
        }
        if (!first) first = s;
        last = s;
        opened++;
        EXPECT(realm_session_close(s), REALM_OK);
        EXPECT(realm_session_close(s), REALM_E_BAD_HANDLE);
    }
    if (g_fail) return REALM_E_INTERNAL;
    char msg[128];
    int len = rg_fmt(msg, sizeof msg, "%d %d %d %d", opened, last_rc, first, last);
    return realm_emit(msg, len);
}
