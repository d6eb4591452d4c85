/*
 * buf.h — the one growable byte buffer and JSON string writer of realm (the server's response
 * bodies, the sandbox's model_info, chat rendering, `realm info`).
 *
 * Ownership: a struct realm_buf starts zeroed ({0}) and owns its data (realm_malloc'd) until
 * realm_buf_free. data is NUL-terminated after any successful append (NULL while nothing was
 * ever appended). Errors: every append returns REALM_OK or REALM_E_NOMEM, and on failure the
 * buffer is left as it was, so calls chain as `rc = rc || realm_buf_puts(...)`.
 * Thread rule: a buffer belongs to one thread at a time.
 */
#ifndef REALM_BUF_H
#define REALM_BUF_H

#include <stddef.h>

struct realm_buf {
    char *data;
    size_t len, cap;
};

/* Append bytes / a NUL-terminated string / formatted text, growing b (realm_realloc); b->data is
 * kept NUL-terminated. Return REALM_OK, or REALM_E_NOMEM with b unchanged. */
int realm_buf_append(struct realm_buf *b, const void *p, size_t n);
int realm_buf_puts(struct realm_buf *b, const char *s);
int realm_buf_printf(struct realm_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* s[0..n) as a JSON string literal, quotes included. Always valid JSON and valid UTF-8: each
 * byte of an invalid or cut-off UTF-8 sequence becomes U+FFFD; control characters and DEL are
 * escaped (\n \r \t, else \u00XX). */
int realm_buf_json_string(struct realm_buf *b, const char *s, size_t n);
void realm_buf_reset(struct realm_buf *b); /* len = 0, keeps the storage */
void realm_buf_free(struct realm_buf *b);  /* back to {0} */

#endif
