/*
 * err.c — static error text and the detailed-message helper (see include/realm/err.h).
 * Owns nothing; thread-safe (no shared state).
 */
#include "realm/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *realm_strerror(int code) {
    return realm_status_text(code);
}

int realm_err_set(struct realm_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void realm_err_clear(struct realm_err *err) {
    if (err) {
        err->code = REALM_OK;
        err->msg[0] = '\0';
    }
}
