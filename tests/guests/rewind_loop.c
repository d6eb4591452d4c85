/*
 * rewind_loop.c — realm_generate emits "start", then runs rewind_rounds (rewind_loop.h): {"n": N}
 * rounds, then {"then": "return"} (emit "done"), "trap" (unreachable) or "fail" (return
 * REALM_E_INVALID); without "n" it never ends and ignores every error, so the host must stop
 * it (wall-clock limit or cancellation). The host measures 1 + 4·N prompt and N completion
 * tokens for N rounds.
 */
#include "rewind_loop.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    int64_t n = (int64_t)rj_number(rj_get(req, "n"), -1);
    bool trap = !strcmp(req_str(req, "then"), "trap");
    bool fail = !strcmp(req_str(req, "then"), "fail");
    rj_free(req);
    int32_t rc = rg_emit_str("start");
    if (rc) return rc;
    if ((rc = rewind_rounds(n))) return rc;
    if (trap) __builtin_trap();
    if (fail) {
        rg_log(REALM_ABI_LOG_ERROR, "failing on purpose");
        return REALM_E_INVALID;
    }
    return rg_emit_str("done");
}
