/*
 * decode_abuse.c — decode and session calls with bad counts: n_tokens negative, zero, huge and
 * wrapping, tokens outside the vocabulary, logits buffers too small, a context overrun,
 * rewinds past the end, n_ctx out of range, more sessions than allowed. Every answer is
 * checked by the guest; it emits "ok" or fails with the first mismatch logged.
 */
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    int32_t m = realm_model_open("", 0);
    char info[4096];
    int32_t il = realm_model_info(m, info, sizeof info);
    struct rj_value *mi = NULL;
    if (il < 0 || il > (int32_t)sizeof info || rj_parse(info, (size_t)il, &mi, NULL, 0))
        return REALM_E_INTERNAL;
    int32_t n_vocab = (int32_t)rj_number(rj_get(mi, "n_vocab"), 0);
    int32_t n_ctx_train = (int32_t)rj_number(rj_get(mi, "n_ctx_train"), 0);
    rj_free(mi);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    int32_t toks[32];
    for (int i = 0; i < 32; i++)
        toks[i] = 1;
    int32_t s = realm_session_open(m, 16);
    if (!logits || s <= 0) return REALM_E_INTERNAL;

    EXPECT(realm_decode(s, toks, -1, logits, n_vocab), REALM_E_INVALID);
    EXPECT(realm_decode(s, toks, INT32_MIN, logits, n_vocab), REALM_E_INVALID);
    EXPECT(realm_decode(s, toks, 0, logits, n_vocab), REALM_E_INVALID);
    EXPECT(realm_decode(s, toks, INT32_MAX, logits, n_vocab), REALM_E_RANGE);
    EXPECT(realm_decode(s, toks, 0x40000000, logits, n_vocab), REALM_E_RANGE); /* n*4 = 2^32 */
    EXPECT(realm_decode(s, toks, 17, logits, n_vocab), REALM_E_CONTEXT_FULL);
    EXPECT(realm_decode(s, toks, 1, logits, n_vocab - 1), REALM_E_TOO_SMALL);
    int32_t bad_tok[2] = {1, n_vocab};
    EXPECT(realm_decode(s, bad_tok, 2, logits, n_vocab), REALM_E_INVALID);
    bad_tok[1] = -5;
    EXPECT(realm_decode(s, bad_tok, 2, logits, n_vocab), REALM_E_INVALID);
    /* none of that changed the session: 16 positions are still free */
    EXPECT(realm_decode(s, toks, 16, logits, n_vocab), REALM_OK);
    EXPECT(realm_decode(s, toks, 1, logits, n_vocab), REALM_E_CONTEXT_FULL);
    EXPECT(realm_session_rewind(s, 17), REALM_E_RANGE);
    EXPECT(realm_session_rewind(s, -1), REALM_E_RANGE);
    EXPECT(realm_session_rewind(s, 15), REALM_OK);
    EXPECT(realm_decode(s, toks, 1, NULL, 0), REALM_OK);
    /* an unaligned logits buffer gets the same logits as an aligned one */
    char *raw = malloc((size_t)n_vocab * sizeof(float) + 8);
    EXPECT(realm_session_rewind(s, 3), REALM_OK);
    EXPECT(realm_decode(s, toks, 1, logits, n_vocab), REALM_OK);
    EXPECT(realm_session_rewind(s, 3), REALM_OK);
    EXPECT(realm_decode(s, toks, 1, (float *)(void *)(raw + 1), n_vocab), REALM_OK);
    if (memcmp(raw + 1, logits, (size_t)n_vocab * sizeof(float)) != 0) {
        rg_log(REALM_ABI_LOG_ERROR, "unaligned logits differ");
        g_fail++;
    }
    free(raw);
    EXPECT(realm_session_close(s), REALM_OK);

    EXPECT(realm_session_open(m, -1), REALM_E_INVALID);
    EXPECT(realm_session_open(m, INT32_MAX), REALM_E_LIMIT);
    EXPECT(realm_session_open(m, n_ctx_train + 1), REALM_E_LIMIT);
    /* the per-tenant session cap (the test host allows 4) */
    int32_t open[8];
    int n_open = 0;
    for (; n_open < 8; n_open++) {
        open[n_open] = realm_session_open(m, 8);
        if (open[n_open] < 0) break;
    }
    EXPECT(n_open, 4);
    if (n_open < 8) EXPECT(open[n_open], REALM_E_LIMIT);
    for (int i = 0; i < n_open; i++)
        EXPECT(realm_session_close(open[i]), REALM_OK);
    free(logits);
    return g_fail ? REALM_E_INTERNAL : rg_emit_str("ok");
}
