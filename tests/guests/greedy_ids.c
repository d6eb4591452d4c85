/*
 * greedy_ids.c — a minimal orchestrator written against the raw imports: BOS, then greedy
 * argmax for {"n": N} tokens, emitting the token ids ("403 407 ..."). Compared with the golden
 * ids of stories260K.greedy256.txt.
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    int32_t n = (int32_t)rj_number(rj_get(req, "n"), 16);
    rj_free(req);
    int32_t model = realm_model_open("", 0);
    if (model < 0) return model;
    char info[4096];
    int32_t il = realm_model_info(model, info, sizeof info - 1);
    if (il < 0 || il >= (int32_t)sizeof info) return REALM_E_TOO_SMALL;
    struct rj_value *mi = NULL;
    if (rj_parse(info, (size_t)il, &mi, NULL, 0)) return REALM_E_FORMAT;
    int32_t n_vocab = (int32_t)rj_number(rj_get(mi, "n_vocab"), 0);
    rj_free(mi);
    int32_t toks[8];
    int32_t nt = realm_tokenize(model, "", 0, REALM_ABI_TOKENIZE_ADD_BOS, toks, 8);
    if (nt != 1) return REALM_E_INTERNAL;
    int32_t s = realm_session_open(model, n + 1);
    if (s < 0) return s;
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) return REALM_E_NOMEM;
    int32_t rc = realm_decode(s, toks, 1, logits, n_vocab);
    for (int32_t i = 0; i < n && rc == REALM_OK; i++) {
        int32_t best = 0;
        for (int32_t k = 1; k < n_vocab; k++)
            if (logits[k] > logits[best]) best = k;
        char buf[16];
        int len = rg_fmt(buf, sizeof buf, "%d ", best);
        if ((rc = realm_emit(buf, len))) break;
        if (i + 1 < n) rc = realm_decode(s, &best, 1, logits, n_vocab);
    }
    free(logits);
    realm_session_close(s);
    return rc;
}
