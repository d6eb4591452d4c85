/*
 * check.h — helpers shared by the test guests: EXPECT(call, code) logs a mismatch (the host test
 * sees the last log line in the error message) and counts it; read_request() parses the
 * request JSON. Header-only: each guest is one translation unit plus the SDK.
 */
#ifndef REALM_TEST_GUEST_CHECK_H
#define REALM_TEST_GUEST_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "realm_guest.h"

static int g_fail __attribute__((unused));

#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        int32_t got_ = (int32_t)(call);                                                            \
        if (got_ != (int32_t)(want)) {                                                             \
            rg_logf(REALM_ABI_LOG_ERROR, "line %d: %s = %d (%s), expected %d (%s)", __LINE__,      \
                    #call, got_, rg_strerror(got_), (int)(want), rg_strerror(want));               \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

/* The request as a JSON tree (NULL if it cannot be read or parsed). */
__attribute__((unused)) static struct rj_value *read_request(void) {
    char *json = NULL;
    size_t len = 0;
    struct rj_value *v = NULL;
    if (rg_request_read_all(&json, &len) == REALM_OK) rj_parse(json, len, &v, NULL, 0);
    free(json);
    return v;
}

/* The value of a string member, or "" */
__attribute__((unused)) static const char *req_str(const struct rj_value *req, const char *key) {
    return rj_string(rj_get(req, key), "");
}

/* Linear memory size in bytes, now. */
__attribute__((unused)) static uint32_t mem_bytes(void) {
    return (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
}

#endif
