/*
 * rewind_loop.h — the loop shared by rewind_loop.c and rewind_loop_init.c: rounds of decode
 * (4 tokens without logits, then 1 with) and session_rewind to 0, on an 8-position session.
 * Every error is ignored on purpose (TIMEOUT and CANCELLED included): nearly all the time is
 * spent in the host, so only the host's wall-clock limit or cancellation can stop it.
 */
#ifndef REALM_TEST_GUEST_REWIND_LOOP_H
#define REALM_TEST_GUEST_REWIND_LOOP_H

#include "check.h"

/* n < 0: forever. Returns REALM_OK after n rounds, or the error of the set-up. */
static int32_t rewind_rounds(int64_t n) {
    int32_t model = realm_model_open("", 0);
    if (model < 0) return model;
    char info[4096];
    int32_t il = realm_model_info(model, info, sizeof info);
    struct rj_value *mi = NULL;
    if (il < 0 || il > (int32_t)sizeof info || rj_parse(info, (size_t)il, &mi, NULL, 0))
        return REALM_E_INTERNAL;
    int32_t n_vocab = (int32_t)rj_number(rj_get(mi, "n_vocab"), 0);
    rj_free(mi);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    int32_t s = realm_session_open(model, 8);
    if (!logits || s < 0) return s < 0 ? s : REALM_E_NOMEM;
    int32_t toks[4] = {1, 1, 1, 1};
    for (int64_t i = 0; n < 0 || i < n; i++) {
        realm_decode(s, toks, 4, NULL, 0);
        realm_decode(s, toks, 1, logits, n_vocab);
        realm_session_rewind(s, 0);
    }
    free(logits);
    realm_session_close(s);
    return REALM_OK;
}

#endif
