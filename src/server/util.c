/*
 * util.c — the server's small helpers: OpenAI error bodies and clocks (its buffers are
 * realm_buf, include/realm/buf.h).
 *
 * Thread rule: stateless.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "realm/alloc.h"
#include "realm/status.h"
#include "realm/utf8.h"
#include "server/srv.h"

int64_t srv_unix_time(void) {
    return (int64_t)time(NULL);
}

int srv_error_set(struct srv_error *e, int http, const char *type, const char *code,
                  const char *param, const char *fmt, ...) {
    e->http = http;
    e->type = type;
    e->code = code;
    /* copied: a field name from the request's JSON tree dies with the tree */
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->retry_after = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *srv_error_json(const struct srv_error *e, size_t *len) {
    struct realm_buf b = {0};
    int rc = realm_buf_puts(&b, "{\"error\":{\"message\":");
    rc |= realm_buf_json_string(&b, e->message, strlen(e->message));
    rc |= realm_buf_puts(&b, ",\"type\":");
    rc |= realm_buf_json_string(&b, e->type, strlen(e->type));
    rc |= realm_buf_puts(&b, ",\"param\":");
    rc |= e->param[0] ? realm_buf_json_string(&b, e->param, strlen(e->param))
                      : realm_buf_puts(&b, "null");
    rc |= realm_buf_puts(&b, ",\"code\":");
    rc |=
        e->code ? realm_buf_json_string(&b, e->code, strlen(e->code)) : realm_buf_puts(&b, "null");
    rc |= realm_buf_puts(&b, "}}");
    if (rc) {
        realm_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}
