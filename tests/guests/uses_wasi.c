/*
 * uses_wasi.c — a guest that uses stdio (printf imports WASI's fd_write): the host must refuse
 * the module at load time with a message naming the import.
 */
#include <stdio.h>

#include "realm_guest.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    printf("hello\n");
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    return REALM_OK;
}
