/*
 * status.h — the one status enum of realm, shared by the host library, the realm ABI and the
 * guest SDK (guest/include/realm_guest.h includes this file), so every number means the same
 * thing on both sides of the sandbox. This header has no dependencies so that freestanding
 * wasm32 guests can include it.
 *
 * Functions return REALM_OK (0) or a non-negative count on success, a negative REALM_E_* on
 * failure. The numbers are part of ABI v1: append, never renumber.
 */
#ifndef REALM_STATUS_H
#define REALM_STATUS_H

enum realm_status {
    REALM_OK = 0,
    REALM_E_INVALID = -1,       /* bad argument or request */
    REALM_E_NOMEM = -2,         /* allocation failed or memory cap reached */
    REALM_E_FORMAT = -3,        /* malformed file or data */
    REALM_E_RANGE = -4,         /* pointer/length/index out of bounds */
    REALM_E_LIMIT = -5,         /* a configured limit was exceeded */
    REALM_E_CANCELLED = -6,     /* the request was cancelled */
    REALM_E_IO = -7,            /* an operating-system I/O call failed */
    REALM_E_NOT_FOUND = -8,     /* no such model, key, tensor, template ... */
    REALM_E_BAD_HANDLE = -9,    /* handle not valid for the calling tenant */
    REALM_E_KV_FULL = -10,      /* no KV cache blocks left (pool or tenant quota) */
    REALM_E_UNSUPPORTED = -11,  /* valid but not supported (type, architecture, feature) */
    REALM_E_CONTEXT_FULL = -12, /* the session's context length would be exceeded */
    REALM_E_BUSY = -13,         /* queue full or too many concurrent users */
    REALM_E_TIMEOUT = -14,      /* a deadline passed (guest epoch deadline, wait) */
    REALM_E_TRAP = -15,         /* the guest trapped */
    REALM_E_INTERNAL = -16,     /* a bug in realm; reported, never silent */
    REALM_E_PERMISSION = -17,   /* not allowed for this tenant */
    REALM_E_TOO_SMALL = -18,    /* output buffer too small; nothing was written */
    REALM_E_STATE = -19,        /* call not valid in the current state (e.g. before init) */
};

#define REALM_ABI_VERSION 1

/* Static text of a status code, shared by the host (realm_strerror) and the guest SDK
 * (rg_strerror) so that both sides say the same words; never NULL. */
static inline const char *realm_status_text(int code) {
    switch (code) {
    case REALM_OK:
        return "ok";
    case REALM_E_INVALID:
        return "invalid argument";
    case REALM_E_NOMEM:
        return "out of memory";
    case REALM_E_FORMAT:
        return "malformed data";
    case REALM_E_RANGE:
        return "out of range";
    case REALM_E_LIMIT:
        return "limit exceeded";
    case REALM_E_CANCELLED:
        return "cancelled";
    case REALM_E_IO:
        return "I/O error";
    case REALM_E_NOT_FOUND:
        return "not found";
    case REALM_E_BAD_HANDLE:
        return "bad handle";
    case REALM_E_KV_FULL:
        return "KV cache full";
    case REALM_E_UNSUPPORTED:
        return "unsupported";
    case REALM_E_CONTEXT_FULL:
        return "context length exceeded";
    case REALM_E_BUSY:
        return "busy";
    case REALM_E_TIMEOUT:
        return "timed out";
    case REALM_E_TRAP:
        return "guest trapped";
    case REALM_E_INTERNAL:
        return "internal error";
    case REALM_E_PERMISSION:
        return "permission denied";
    case REALM_E_TOO_SMALL:
        return "buffer too small";
    case REALM_E_STATE:
        return "invalid state";
    }
    return "unknown error";
}

#endif
