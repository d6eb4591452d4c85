/*
 * rewind_loop_init.c — realm_init decodes and rewinds forever (rewind_loop.h), ignoring every
 * error: the init wall-clock limit or the start's cancel flag must end it.
 */
#include "rewind_loop.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return rewind_rounds(-1);
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    return REALM_OK;
}
