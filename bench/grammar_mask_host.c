/* grammar_mask_host.c — host tokenizer access for bench/grammar_mask.c (see grammar_mask.h). */
#include <stdio.h>

#include "grammar_mask.h"
#include "realm/gguf.h"
#include "realm/tokenizer.h"

static struct realm_gguf *g_gguf;
static struct realm_tokenizer *g_tok;

int bench_tok_open(const char *gguf_path) {
    struct realm_err err = {0};
    if (realm_gguf_open(gguf_path, &g_gguf, &err) || realm_tokenizer_load(g_gguf, &g_tok, &err)) {
        fprintf(stderr, "bench: %s: %s\n", gguf_path, err.msg);
        return -1;
    }
    return 0;
}

int32_t bench_tok_n_vocab(void) {
    return realm_tokenizer_n_vocab(g_tok);
}

int64_t bench_tok_piece(int32_t token, char *buf, size_t cap) {
    return realm_token_piece(g_tok, token, false, buf, cap);
}

bool bench_tok_is_eog(int32_t token) {
    return realm_tokenizer_is_eog(g_tok, token);
}

int64_t bench_tok_encode(const char *text, int32_t *ids, int64_t cap) {
    int64_t n = 0;
    size_t len = 0;
    while (text[len])
        len++;
    return realm_tokenize(g_tok, text, len, 0, ids, cap, &n) == 0 ? n : -1;
}

void bench_tok_close(void) {
    realm_tokenizer_free(g_tok);
    realm_gguf_close(g_gguf);
}
