/*
 * emit_flood.c — tries to push 100 MB to the client. {"how": "one"}: one emit of 100 MB from
 * address 0 (past the memory: REALM_E_RANGE). {"how": "chunks"}: 100 emits of 1 MiB; the
 * host's output cap answers REALM_E_LIMIT, which the guest returns. {"how": "ignore"}: the same
 * but it ignores every error and returns REALM_OK (the host must still have capped the output).
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    char how[16];
    rg_fmt(how, sizeof how, "%s", req_str(req, "how"));
    rj_free(req);
    if (!strcmp(how, "one")) return realm_emit(0, 100 << 20);
    size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    if (!buf) return REALM_E_NOMEM;
    memset(buf, 'x', chunk);
    int32_t first_err = REALM_OK;
    for (int i = 0; i < 100; i++) {
        int32_t rc = realm_emit(buf, (int32_t)chunk);
        if (rc && !first_err) first_err = rc;
        if (rc && strcmp(how, "ignore") != 0) break;
    }
    free(buf);
    if (first_err) rg_logf(REALM_ABI_LOG_ERROR, "emit: %s", rg_strerror(first_err));
    return strcmp(how, "ignore") ? first_err : REALM_OK;
}
