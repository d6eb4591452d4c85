/*
 * chat_bomb.c — input caps of chat_format and tokenize. Request: {"max": the host's
 * max_input_bytes, "max_values": its max_json_values, "tok_at": also tokenize exactly "max"
 * bytes, "return_big": return the status of the oversized chat_format}. Emits
 * "big=<rc> values_at=<rc> values_over=<rc> strings=<rc> small=<rc> tok_over=<rc> tok_at=<rc>"
 * where big is "[1,1,...]" of max+1 bytes, values_at / values_over arrays of exactly max_values
 * and max_values+1 JSON values, strings one message whose content holds max_values commas,
 * brackets and escaped quotes (which are no values), small a valid one-message array.
 */
#include "check.h"

/* "[1,1,...,1]" with `ones` ones into buf (room for 2 * ones + 1 bytes); returns the length. */
static int32_t ones_array(char *buf, int32_t ones) {
    int32_t k = 0;
    buf[k++] = '[';
    for (int32_t i = 0; i < ones; i++) {
        if (i) buf[k++] = ',';
        buf[k++] = '1';
    }
    buf[k++] = ']';
    return k;
}

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    int32_t max = (int32_t)rj_number(rj_get(req, "max"), 4 << 20);
    int32_t max_values = (int32_t)rj_number(rj_get(req, "max_values"), 65536);
    bool tok_at = rj_bool(rj_get(req, "tok_at"), false);
    bool return_big = rj_bool(rj_get(req, "return_big"), false);
    rj_free(req);
    int32_t m = realm_model_open("", 0);
    size_t room = (size_t)max + 2;
    if ((size_t)max_values * 4 + 64 > room) room = (size_t)max_values * 4 + 64;
    char *buf = malloc(room);
    char out[256];
    if (m < 0 || !buf) return REALM_E_NOMEM;

    /* over the byte cap: refused before anything is parsed */
    int32_t n = ones_array(buf, max / 2);
    while (n <= max)
        buf[n++] = ' ';
    int32_t big = realm_chat_format(m, buf, n, out, sizeof out);
    if (return_big) return big;
    /* the root plus max_values - 1 numbers is exactly the cap: parsed (and no messages) */
    n = ones_array(buf, max_values - 1);
    int32_t values_at = realm_chat_format(m, buf, n, out, sizeof out);
    n = ones_array(buf, max_values);
    int32_t values_over = realm_chat_format(m, buf, n, out, sizeof out);
    /* separators inside a string are text, also after an escaped quote */
    const char *head = "[{\"role\":\"user\",\"content\":\"";
    n = (int32_t)strlen(head);
    memcpy(buf, head, (size_t)n);
    for (int32_t i = 0; i < max_values; i++) {
        const char *piece = i % 3 == 0 ? "," : i % 3 == 1 ? "[{" : "\\\"";
        memcpy(buf + n, piece, strlen(piece));
        n += (int32_t)strlen(piece);
    }
    memcpy(buf + n, "\"}]", 3);
    n += 3;
    int32_t strings = realm_chat_format(m, buf, n, out, sizeof out);
    const char *small_json = "[{\"role\":\"user\",\"content\":\"hi\"}]";
    int32_t small = realm_chat_format(m, small_json, (int32_t)strlen(small_json), out, sizeof out);

    int32_t toks[16];
    memset(buf, 'a', (size_t)max + 1);
    int32_t tok_over = realm_tokenize(m, buf, max + 1, 0, toks, 16);
    int32_t tok_at_rc = tok_at ? realm_tokenize(m, buf, max, 0, toks, 16) : 0;
    free(buf);
    char msg[256];
    int len = rg_fmt(msg, sizeof msg,
                     "big=%d values_at=%d values_over=%d strings=%d small=%d tok_over=%d tok_at=%d",
                     big, values_at, values_over, strings, small, tok_over, tok_at_rc);
    return realm_emit(msg, len);
}
