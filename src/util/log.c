/*
 * log.c — the log sink. Globals: the sink, its user pointer and the level, written at start-up
 * only (realm_log_set_*), read by every thread afterwards.
 */
#include "realm/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Globals: written before threads start, read-only afterwards ---- */
static realm_log_sink g_sink;
static void *g_sink_user;
static int g_level = -1; /* -1: not yet read from $REALM_LOG */

static int level_from_env(void) {
    const char *s = getenv("REALM_LOG");
    if (!s) return REALM_LOG_WARN;
    if (!strcmp(s, "debug")) return REALM_LOG_DEBUG;
    if (!strcmp(s, "info")) return REALM_LOG_INFO;
    if (!strcmp(s, "error")) return REALM_LOG_ERROR;
    return REALM_LOG_WARN;
}

void realm_log_set_sink(realm_log_sink sink, void *user) {
    g_sink = sink;
    g_sink_user = user;
}

void realm_log_set_level(int level) {
    g_level = level;
}

void realm_log(int level, const char *module, const char *fmt, ...) {
    if (g_level < 0)
        g_level = level_from_env(); /* benign race: every thread writes the same value */
    if (level < g_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_sink) {
        g_sink(level, module, msg, g_sink_user);
        return;
    }
    static const char *names[] = {"debug", "info", "warn", "error"};
    const char *name = (level >= 0 && level <= 3) ? names[level] : "?";
    fprintf(stderr, "realm[%s] %s: %s\n", name, module, msg);
}
