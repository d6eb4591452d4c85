/*
 * log.h — realm_log(level, module, fmt, ...): the library's only output channel.
 * Library code never prints directly; the default sink writes one line to stderr for messages at
 * or above the current level. Globals: the sink and the level (set them before threads start).
 */
#ifndef REALM_LOG_H
#define REALM_LOG_H

enum realm_log_level {
    REALM_LOG_DEBUG = 0,
    REALM_LOG_INFO = 1,
    REALM_LOG_WARN = 2,
    REALM_LOG_ERROR = 3,
};

/* Receives each message (one line, no newline; valid during the call) from any thread. */
typedef void (*realm_log_sink)(int level, const char *module, const char *msg, void *user);

/* Formats and sends one message to the sink when level is at or above the threshold.
 * Thread-safe; never fails (an over-long message is truncated). */
void realm_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replaces the sink (NULL restores the default stderr sink). Not thread-safe: call at start-up. */
void realm_log_set_sink(realm_log_sink sink, void *user);
/* Messages below `level` are dropped. Default: REALM_LOG_WARN, or $REALM_LOG
 * (debug|info|warn|error). */
void realm_log_set_level(int level);

#endif
