/*
 * sdk_native_stubs.c — the realm imports guest/sdk/sdk.c references, for native builds of SDK
 * code (test_grammar, fuzz_grammar): the code under test never calls them, so each answers
 * REALM_E_STATE ("outside realm_generate").
 */
#include "realm_guest.h"

int32_t realm_log(int32_t level, const char *msg, int32_t len) {
    return (void)level, (void)msg, (void)len, REALM_OK;
}
int32_t realm_emit(const char *t, int32_t l) {
    return (void)t, (void)l, REALM_E_STATE;
}
int32_t realm_request_read(char *b, int32_t c) {
    return (void)b, (void)c, REALM_E_STATE;
}
int32_t realm_model_info(int32_t m, char *b, int32_t c) {
    return (void)m, (void)b, (void)c, REALM_E_STATE;
}
int32_t realm_chat_format(int32_t m, const char *j, int32_t l, char *o, int32_t c) {
    return (void)m, (void)j, (void)l, (void)o, (void)c, REALM_E_STATE;
}
int32_t realm_chat_tokenize(int32_t m, const char *j, int32_t l, int32_t f, int32_t *o, int32_t c) {
    return (void)m, (void)j, (void)l, (void)f, (void)o, (void)c, REALM_E_STATE;
}
int32_t realm_tokenize(int32_t m, const char *t, int32_t l, int32_t f, int32_t *o, int32_t c) {
    return (void)m, (void)t, (void)l, (void)f, (void)o, (void)c, REALM_E_STATE;
}
