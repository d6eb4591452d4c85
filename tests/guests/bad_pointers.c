/*
 * bad_pointers.c — every import that takes a (pointer, length) gets spans that end past the
 * memory, wrap around 2^32, or have negative or huge lengths. Each must answer REALM_E_RANGE (or
 * REALM_E_LIMIT where a size cap is checked first) without touching anything; the guest checks
 * the answers itself and fails with the first mismatch in its last log line. Emits the number
 * of checks on success.
 */
#include "check.h"

static int g_checks;
#define CHECK_RC(call, want)                                                                       \
    do {                                                                                           \
        g_checks++;                                                                                \
        EXPECT(call, want);                                                                        \
    } while (0)

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    const uint32_t end = mem_bytes();
    char *past = (char *)(uintptr_t)end;         /* first byte after memory */
    char *last = (char *)(uintptr_t)(end - 1);   /* last byte of memory */
    char *wrap = (char *)(uintptr_t)0xFFFFFFF0u; /* + 0x20 wraps in 32 bits */
    char ok[64] = "x";
    int32_t toks[4] = {1, 1, 1, 1};

    /* request_read, emit, log */
    CHECK_RC(realm_request_read(past, 1), REALM_E_RANGE);
    CHECK_RC(realm_request_read(last, 2), REALM_E_RANGE);
    CHECK_RC(realm_request_read(wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_request_read(ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_request_read(ok, INT32_MAX), REALM_E_RANGE);
    CHECK_RC(realm_emit(past, 1), REALM_E_RANGE);
    CHECK_RC(realm_emit(wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_emit(ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_emit(ok, INT32_MIN), REALM_E_RANGE);
    CHECK_RC(realm_log(REALM_ABI_LOG_INFO, past, 1), REALM_E_RANGE);
    CHECK_RC(realm_log(REALM_ABI_LOG_INFO, wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_log(REALM_ABI_LOG_INFO, ok, -5), REALM_E_RANGE);
    CHECK_RC(realm_log(7, ok, 1), REALM_E_INVALID);
    /* an empty span at the very end is inside */
    CHECK_RC(realm_emit(past, 0), REALM_OK);

    /* model_open */
    CHECK_RC(realm_model_open(past, 1), REALM_E_RANGE);
    CHECK_RC(realm_model_open(wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_model_open(ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_model_open(ok, INT32_MAX), REALM_E_LIMIT);
    CHECK_RC(realm_model_open("../../etc/passwd", 16), REALM_E_NOT_FOUND);
    CHECK_RC(realm_model_open("/work/shared/models/stories260K.gguf", 36), REALM_E_NOT_FOUND);
    int32_t m = realm_model_open("", 0);
    if (m < 0) {
        rg_logf(REALM_ABI_LOG_ERROR, "model_open(\"\") = %d", m);
        return REALM_E_INTERNAL;
    }

    /* model_info */
    CHECK_RC(realm_model_info(m, past, 1), REALM_E_RANGE);
    CHECK_RC(realm_model_info(m, wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_model_info(m, ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_model_info(m, ok, INT32_MAX), REALM_E_RANGE);

    /* tokenize: text and output spans; the output is int32, so cap * 4 must fit too */
    CHECK_RC(realm_tokenize(m, past, 1, 0, toks, 4), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, wrap, 0x20, 0, toks, 4), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, ok, -1, 0, toks, 4), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, ok, INT32_MAX, 0, toks, 4), REALM_E_LIMIT);
    CHECK_RC(realm_tokenize(m, ok, 1, 0, (int32_t *)(uintptr_t)end, 1), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, ok, 1, 0, (int32_t *)(uintptr_t)(end - 4), 2), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, ok, 1, 0, toks, 0x40000000), REALM_E_RANGE); /* 4 GiB: wraps to 0 */
    CHECK_RC(realm_tokenize(m, ok, 1, 0, toks, -1), REALM_E_RANGE);
    CHECK_RC(realm_tokenize(m, ok, 1, 0x100, toks, 4), REALM_E_INVALID);

    /* token_piece */
    CHECK_RC(realm_token_piece(m, 1, past, 1), REALM_E_RANGE);
    CHECK_RC(realm_token_piece(m, 1, wrap, 0x20), REALM_E_RANGE);
    CHECK_RC(realm_token_piece(m, 1, ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_token_piece(m, -1, ok, 4), REALM_E_INVALID);
    CHECK_RC(realm_token_piece(m, INT32_MAX, ok, 4), REALM_E_INVALID);

    /* chat_format */
    CHECK_RC(realm_chat_format(m, past, 1, ok, 4), REALM_E_RANGE);
    CHECK_RC(realm_chat_format(m, wrap, 0x20, ok, 4), REALM_E_RANGE);
    CHECK_RC(realm_chat_format(m, "[]", 2, past, 1), REALM_E_RANGE);
    CHECK_RC(realm_chat_format(m, "[]", 2, ok, -1), REALM_E_RANGE);
    CHECK_RC(realm_chat_format(m, ok, -1, ok, 4), REALM_E_RANGE);

    /* logprobs: two int32/float spans of n, n in [1, 21], ids in the vocabulary, lps <= 0, no NaN
     */
    int32_t lid[22] = {1, 2};
    float lpv[22] = {-0.5f, -1.0f};
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_OK);
    CHECK_RC(realm_logprobs(m, (int32_t *)(uintptr_t)end, lpv, 1), REALM_E_RANGE);
    CHECK_RC(realm_logprobs(m, lid, (float *)(uintptr_t)(end - 4), 2), REALM_E_RANGE);
    CHECK_RC(realm_logprobs(m, (int32_t *)(uintptr_t)0xFFFFFFFCu, lpv, 2), REALM_E_RANGE);
    CHECK_RC(realm_logprobs(m, lid, lpv, 0), REALM_E_INVALID);
    CHECK_RC(realm_logprobs(m, lid, lpv, 22), REALM_E_INVALID);
    CHECK_RC(realm_logprobs(m, lid, lpv, -1), REALM_E_INVALID);
    CHECK_RC(realm_logprobs(0x7fff0001, lid, lpv, 2), REALM_E_BAD_HANDLE);
    lid[1] = INT32_MAX;
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_E_INVALID);
    lid[1] = -1;
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_E_INVALID);
    lid[1] = 2;
    lpv[1] = 0.5f;
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_E_INVALID);
    lpv[1] = __builtin_nanf("");
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_E_INVALID);
    lpv[1] = -__builtin_inff(); /* a masked token: allowed */
    CHECK_RC(realm_logprobs(m, lid, lpv, 2), REALM_OK);

    /* decode: token array and logits spans (n * 4 and cap * 4 in 64 bits) */
    int32_t s = realm_session_open(m, 16);
    if (s < 0) {
        rg_logf(REALM_ABI_LOG_ERROR, "session_open = %d", s);
        return REALM_E_INTERNAL;
    }
    float *logits = (float *)(uintptr_t)end;
    CHECK_RC(realm_decode(s, (int32_t *)(uintptr_t)end, 1, NULL, 0), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, (int32_t *)(uintptr_t)0xFFFFFFFCu, 2, NULL, 0), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, toks, 0x40000000, NULL, 0), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, toks, 1, logits, 1), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, toks, 1, (float *)(uintptr_t)0xFFFFFFF0u, 0x10), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, toks, 1, (float *)ok, 0x40000000), REALM_E_RANGE);
    CHECK_RC(realm_decode(s, toks, 1, (float *)ok, -1), REALM_E_RANGE);
    /* nothing above was decoded: the session is still empty, so all 16 positions are free */
    CHECK_RC(realm_decode(s, toks, 4, NULL, 0), REALM_OK);
    CHECK_RC(realm_session_rewind(s, 5), REALM_E_RANGE);
    CHECK_RC(realm_session_rewind(s, 0), REALM_OK);
    CHECK_RC(realm_session_close(s), REALM_OK);

    if (g_fail) return REALM_E_INTERNAL;
    char buf[32];
    int n = rg_fmt(buf, sizeof buf, "%d checks", g_checks);
    return realm_emit(buf, n);
}
