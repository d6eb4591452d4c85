/*
 * abi.h — constants of the realm ABI v1 shared by the host (src/sandbox/) and the guest SDK
 * (guest/include/realm_guest.h): tokenize flags, log levels, finish reasons. Like status.h it has
 * no dependencies, so that wasm32 guests can include it. The numbers are part of ABI v1: append,
 * never renumber. The import/export list and every signature are in docs/abi.md.
 */
#ifndef REALM_ABI_H
#define REALM_ABI_H

#include "status.h" /* same folder: works for host and guest include paths */

/* tokenize(..., flags, ...) — the same bits as enum realm_tokenize_flags (tokenizer.h). */
#define REALM_ABI_TOKENIZE_ADD_BOS 1       /* prepend BOS if the model's vocab uses one */
#define REALM_ABI_TOKENIZE_PARSE_SPECIAL 2 /* recognise special-token text ("<|im_start|>") */

/* log(level, ...) — the same numbers as enum realm_log_level (log.h). */
#define REALM_ABI_LOG_DEBUG 0
#define REALM_ABI_LOG_INFO 1
#define REALM_ABI_LOG_WARN 2
#define REALM_ABI_LOG_ERROR 3

/* usage(prompt_tokens, completion_tokens, finish_reason) — why generation ended. */
#define REALM_ABI_FINISH_STOP 0   /* end-of-generation token or a stop string */
#define REALM_ABI_FINISH_LENGTH 1 /* max_tokens or the context length was reached */

/* Size caps the host enforces on single calls (larger requests get REALM_E_LIMIT). The caps on
 * tokenize / chat_format input (bytes, and JSON values for chat_format) are host settings,
 * max_input_bytes [4 MiB] and max_json_values [65536] in struct realm_sbx_config. */
#define REALM_ABI_MAX_NAME 256        /* model_open name bytes */
#define REALM_ABI_MAX_LOG 1024        /* log bytes kept per line (longer lines are cut) */
#define REALM_ABI_MAX_TOP_LOGPROBS 20 /* alternatives a logprobs() record may carry */
#define REALM_ABI_MAX_CHOICES 64      /* choices (the request's "n") one request may have */

#endif
