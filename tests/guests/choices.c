/*
 * choices.c — exercises the choice import's bounds: realm_init calls it outside a request
 * (REALM_E_STATE expected); realm_generate reads the request's "n", tries choice(-1),
 * choice(n) and choice(INT32_MAX) (REALM_E_RANGE expected), then emits "last" and reports
 * usage (4 prompt, 2 completion, length) in choice n - 1, and finally emits its report
 * "init=<rc> neg=<rc> n=<rc> max=<rc> last=<rc> first=<rc>" and usage (4, 3, stop) in choice 0.
 */
#include <stdint.h>
#include <stdlib.h>

#include "realm_guest.h"

static int32_t g_init_rc;

RG_EXPORT(realm_init) int32_t realm_init(void) {
    g_init_rc = realm_choice(0);
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    char *json = NULL;
    size_t len = 0;
    int32_t rc = rg_request_read_all(&json, &len);
    if (rc) return rc;
    struct rj_value *root = NULL;
    rc = rj_parse(json, len, &root, NULL, 0);
    if (rc) {
        free(json);
        return rc;
    }
    int32_t n = (int32_t)rj_number(rj_get(root, "n"), 1);
    rj_free(root);
    free(json);
    int32_t neg = realm_choice(-1), over = realm_choice(n), max = realm_choice(INT32_MAX);
    int32_t last = realm_choice(n - 1);
    if (last == REALM_OK) {
        realm_emit("last", 4);
        realm_usage(4, 2, REALM_ABI_FINISH_LENGTH);
    }
    int32_t first = realm_choice(0);
    char report[160];
    int32_t k = rg_fmt(report, sizeof report, "init=%d neg=%d n=%d max=%d last=%d first=%d",
                       g_init_rc, neg, over, max, last, first);
    realm_emit(report, k);
    realm_usage(4, 3, REALM_ABI_FINISH_STOP);
    return REALM_OK;
}
