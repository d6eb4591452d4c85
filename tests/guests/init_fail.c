/*
 * init_fail.c — the seed regression: realm_init fails (as the seed's failing constructor did)
 * after logging why; the host must report the status and this message, and never call
 * realm_generate.
 */
#include "realm_guest.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    rg_log(REALM_ABI_LOG_ERROR, "config: key 'greeting' missing");
    return REALM_E_NOT_FOUND;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    rg_emit_str("realm_generate must never run after a failed init");
    return REALM_OK;
}
