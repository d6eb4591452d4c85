/*
 * grammar_mask.h — the host half of bench/grammar_mask.c (grammar_mask_host.c): the host tokenizer
 * behind a plain interface, because the host API and the guest SDK's imports share names
 * (realm_tokenize, realm_token_piece) and cannot meet in one translation unit.
 */
#ifndef REALM_BENCH_GRAMMAR_MASK_H
#define REALM_BENCH_GRAMMAR_MASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Loads the model's tokenizer; 0 or -1 with a message on stderr. */
int bench_tok_open(const char *gguf_path);
int32_t bench_tok_n_vocab(void);
/* The token's bytes (control tokens: empty) into buf; returns the length (> cap: truncated). */
int64_t bench_tok_piece(int32_t token, char *buf, size_t cap);
bool bench_tok_is_eog(int32_t token);
/* Tokenizes text (no BOS, no special parsing); returns the count or -1. */
int64_t bench_tok_encode(const char *text, int32_t *ids, int64_t cap);
void bench_tok_close(void);

#endif
