/*
 * gguf_json.h — GGUF metadata values as JSON text, for `realm info` (kept out of the GGUF reader:
 * the reader validates and gives typed access, presenting values is the CLI's business).
 */
#ifndef REALM_CLI_GGUF_JSON_H
#define REALM_CLI_GGUF_JSON_H

#include <stdint.h>

#include "realm/buf.h"
#include "realm/gguf.h"

/* Appends the value of kv i of g as JSON to b: strings as JSON strings (invalid UTF-8 as U+FFFD),
 * numbers (NaN and infinities as the strings "nan", "inf", "-inf", so the result is always valid
 * JSON), booleans, arrays as "[a, b, c]" — an array of more than max_items elements, or of
 * arrays, as the string "[type x n]". i out of range appends nothing. Returns REALM_OK or
 * REALM_E_NOMEM (b as realm_buf leaves it). */
int cli_gguf_kv_json(struct realm_buf *b, const struct realm_gguf *g, int64_t i, int max_items);

#endif
