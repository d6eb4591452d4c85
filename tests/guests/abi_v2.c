/*
 * abi_v2.c — claims an ABI version the host does not speak (overrides the SDK's weak
 * realm_abi_version): instantiation must fail with REALM_E_UNSUPPORTED before realm_init runs.
 */
#include "realm_guest.h"

RG_EXPORT(realm_abi_version) int32_t realm_abi_version(void) {
    return REALM_ABI_VERSION + 1;
}

RG_EXPORT(realm_init) int32_t realm_init(void) {
    rg_log(REALM_ABI_LOG_ERROR, "realm_init must not run");
    return REALM_E_INTERNAL;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    return REALM_OK;
}
