/*
 * loop_generate.c — {"loop": true} makes realm_generate spin forever (the compute budget must
 * stop it and only this request fails); {"loop": "decode"} decodes and rewinds forever, spending
 * nearly all its time in the host (only the wall-clock limit stops it); anything else emits
 * "alive" and the count of requests this instance has served (1 after a restart).
 */
#include "check.h"

static int g_served;

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    const struct rj_value *loop = rj_get(req, "loop");
    bool spin = rj_bool(loop, false);
    bool decode = !strcmp(rj_string(loop, ""), "decode");
    rj_free(req);
    g_served++;
    if (spin) {
        volatile uint32_t n = 0;
        for (;;)
            n++;
    }
    if (decode) {
        int32_t model = realm_model_open("", 0);
        int32_t s = realm_session_open(model, 8);
        int32_t tok = 1;
        for (;;) {
            int32_t rc = realm_decode(s, &tok, 1, NULL, 0);
            if (rc == REALM_E_CONTEXT_FULL) rc = realm_session_rewind(s, 0);
            if (rc && rc != REALM_E_TIMEOUT) return rc;
            /* ignores TIMEOUT on purpose: the host has to stop it */
        }
    }
    char buf[32];
    int n = rg_fmt(buf, sizeof buf, "alive %d", g_served);
    return realm_emit(buf, n);
}
