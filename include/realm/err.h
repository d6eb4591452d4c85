/*
 * err.h — detailed error messages and static error text.
 *
 * Loaders and parsers take an optional `struct realm_err *` as their last parameter and fill it
 * on failure with the status and a one-line message in the form
 * "<module>: <object>: <found>, expected <expected>". Passing NULL is allowed everywhere.
 * Thread rule: a realm_err belongs to the caller; never share one between threads.
 */
#ifndef REALM_ERR_H
#define REALM_ERR_H

#include "realm/status.h"

#define REALM_ERR_MSG_MAX 256

struct realm_err {
    int code;                    /* a REALM_E_* value, or REALM_OK */
    char msg[REALM_ERR_MSG_MAX]; /* NUL-terminated, truncated if longer */
};

/* Static text for a status code; never NULL (unknown codes give "unknown error"). */
const char *realm_strerror(int code);

/* Sets *err (if not NULL) to code and the formatted message; returns code so that callers can
 * write `return realm_err_set(err, REALM_E_FORMAT, "...")`. */
int realm_err_set(struct realm_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears *err to REALM_OK and an empty message (NULL is a no-op). */
void realm_err_clear(struct realm_err *err);

#endif
