/*
 * err.c — static error text and the detailed-message helper (see include/realm/err.h).
 * Owns nothing; thread-safe (no shared state).
 */
#include "realm/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *realm_strerror(int code) {
    switch (code) {
    case REALM_OK: return "ok";
    case REALM_E_INVALID: return "invalid argument";
    case REALM_E_NOMEM: return "out of memory";
    case REALM_E_FORMAT: return "malformed data";
    case REALM_E_RANGE: return "out of range";
    case REALM_E_LIMIT: return "limit exceeded";
    case REALM_E_CANCELLED: return "cancelled";
    case REALM_E_IO: return "I/O error";
    case REALM_E_NOT_FOUND: return "not found";
    case REALM_E_BAD_HANDLE: return "bad handle";
    case REALM_E_KV_FULL: return "KV cache full";
    case REALM_E_UNSUPPORTED: return "unsupported";
    case REALM_E_CONTEXT_FULL: return "context length exceeded";
    case REALM_E_BUSY: return "busy";
    case REALM_E_TIMEOUT: return "timed out";
    case REALM_E_TRAP: return "guest trapped";
    case REALM_E_INTERNAL: return "internal error";
    case REALM_E_PERMISSION: return "permission denied";
    case REALM_E_TOO_SMALL: return "buffer too small";
    case REALM_E_STATE: return "invalid state";
    }
    return "unknown error";
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
