/*
 * server_upper.c — a second orchestrator for the server tests (tests/py/test_server.py): a tenant
 * whose guest behaves visibly differently from the default one. It renders the prompt the same
 * way (chat template through the host, or the raw prompt), decodes it, then generates greedily
 * (ignoring every sampling parameter) and streams the text upper-cased (ASCII), after a
 * "[upper] " prefix. Stops at an end-of-generation token, max_tokens (default 16) or the context.
 */
#include <stdlib.h>
#include <string.h>

#include "realm_guest.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

static int32_t fail(int32_t rc, const char *what) {
    rg_logf(REALM_ABI_LOG_ERROR, "upper: %s: %s", what, rg_strerror(rc));
    return rc;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static bool in_list(const struct rj_value *arr, int32_t tok) {
    for (size_t i = 0; arr && i < arr->n; i++)
        if ((int32_t)arr->items[i].num == tok) return true;
    return false;
}

static int32_t run(const char *json, const struct rj_value *req) {
    const char *name = rj_string(rj_get(req, "model"), "");
    int32_t model = realm_model_open(name, (int32_t)strlen(name));
    if (model < 0) return fail(model, "model_open");
    char *info_text = NULL;
    size_t info_len = 0;
    struct rj_value *info = NULL;
    int32_t rc = rg_model_info_all(model, &info_text, &info_len);
    if (rc == REALM_OK) rc = rj_parse(info_text, info_len, &info, NULL, 0);
    free(info_text);
    if (rc) return fail(rc, "model_info");
    int32_t n_vocab = (int32_t)rj_number(rj_get(info, "n_vocab"), 0);
    int32_t n_ctx_train = (int32_t)rj_number(rj_get(info, "n_ctx_train"), 0);
    const struct rj_value *eog = rj_get(info, "eog");

    char *text = NULL;
    size_t text_len = 0;
    const struct rj_value *msgs = rj_get(req, "messages");
    const struct rj_value *prompt = rj_get(req, "prompt");
    int32_t *toks = NULL, n_prompt = 0, session = -1;
    float *logits = NULL;
    if (msgs && msgs->type == RJ_ARRAY) {
        rc = rg_chat_format_all(model, json + msgs->src_off, msgs->src_len, &text, &text_len);
        if (rc) {
            fail(rc, "chat_format");
            goto done;
        }
        rc = rg_tokenize_all(model, text, text_len,
                             REALM_ABI_TOKENIZE_ADD_BOS | REALM_ABI_TOKENIZE_PARSE_SPECIAL, &toks,
                             &n_prompt);
    } else if (prompt && prompt->type == RJ_STRING) {
        rc = rg_tokenize_all(model, prompt->str, prompt->str_len, REALM_ABI_TOKENIZE_ADD_BOS, &toks,
                             &n_prompt);
    } else {
        rg_log(REALM_ABI_LOG_ERROR, "upper: request: expected messages or prompt");
        rc = REALM_E_INVALID;
        goto done;
    }
    if (rc) {
        fail(rc, "tokenize");
        goto done;
    }
    int32_t max_tokens = (int32_t)rj_number(rj_get(req, "max_tokens"), 16);
    int32_t n_ctx = n_prompt + max_tokens;
    if (n_ctx > n_ctx_train) n_ctx = n_ctx_train;
    if (n_prompt < 1 || n_prompt >= n_ctx) {
        rg_log(REALM_ABI_LOG_ERROR, "upper: prompt does not fit the context");
        rc = REALM_E_CONTEXT_FULL;
        goto done;
    }
    session = realm_session_open(model, n_ctx);
    if (session < 0) {
        rc = fail(session, "session_open");
        goto done;
    }
    logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) {
        rc = REALM_E_NOMEM;
        goto done;
    }
    if ((rc = realm_decode(session, toks, n_prompt, logits, n_vocab))) {
        fail(rc, "decode");
        goto done;
    }
    if ((rc = rg_emit_str("[upper] "))) goto done;
    int32_t n_gen = 0, finish = REALM_ABI_FINISH_LENGTH;
    char piece[256];
    while (n_gen < max_tokens) {
        int32_t id = argmax(logits, n_vocab);
        n_gen++;
        if (in_list(eog, id)) {
            finish = REALM_ABI_FINISH_STOP;
            break;
        }
        int32_t pl = realm_token_piece(model, id, piece, sizeof piece);
        if (pl < 0) {
            rc = fail(pl, "token_piece");
            goto done;
        }
        if (pl > (int32_t)sizeof piece) pl = (int32_t)sizeof piece;
        for (int32_t i = 0; i < pl; i++)
            if (piece[i] >= 'a' && piece[i] <= 'z') piece[i] = (char)(piece[i] - 'a' + 'A');
        /* pieces may split a UTF-8 sequence; keep the output valid by dropping non-ASCII bytes */
        int32_t k = 0;
        for (int32_t i = 0; i < pl; i++)
            if ((unsigned char)piece[i] < 0x80) piece[k++] = piece[i];
        if (k > 0 && (rc = realm_emit(piece, k)) < 0) goto done;
        rc = REALM_OK;
        if (n_gen == max_tokens || n_prompt + n_gen >= n_ctx) break;
        if ((rc = realm_decode(session, &id, 1, logits, n_vocab))) goto done;
    }
    realm_usage(n_prompt, n_gen, finish);
done:
    if (session > 0) realm_session_close(session);
    free(logits);
    free(toks);
    free(text);
    rj_free(info);
    return rc;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    char *json = NULL;
    size_t len = 0;
    int32_t rc = rg_request_read_all(&json, &len);
    if (rc) return rc;
    struct rj_value *req = NULL;
    rc = rj_parse(json, len, &req, NULL, 0);
    if (rc == REALM_OK)
        rc = run(json, req);
    else
        rc = REALM_E_INVALID;
    rj_free(req);
    free(json);
    return rc;
}
