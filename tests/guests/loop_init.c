/*
 * loop_init.c — realm_init never returns: the init budget must stop it.
 */
#include "realm_guest.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    volatile uint32_t n = 0;
    for (;;)
        n++;
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    return REALM_OK;
}
