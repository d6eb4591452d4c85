/*
 * tokenizer.h — tokenizers built from GGUF metadata (SPM `llama` and byte-level BPE `gpt2` with
 * the pre-tokenizer named by tokenizer.ggml.pre), streaming detokenization, chat templates.
 *
 * Token ids are those of llama.cpp (src/llama-vocab.cpp) for the same file and the same flags:
 * SPM bigram merges by score, <0xNN> byte fallback, the "▁" space prefix; BPE merge ranks,
 * GPT-2 byte-to-unicode and llama.cpp's regex list per pre-tokenizer (default, gpt-2, llama3 /
 * llama-bpe, qwen2, deepseek-llm, deepseek-coder, falcon, mpt, starcoder, refact, smollm, ...)
 * run by PCRE2 (UTF + Unicode properties, JIT); special-token partitioning longest text first.
 * Invalid UTF-8 never fails: bytes the vocabulary can spell round-trip through the pieces
 * (llama.cpp maps them to U+FFFD instead; valid UTF-8 is tokenized identically).
 * WPM (BERT WordPiece: ICU-based lowercasing, accent dropping and punctuation / CJK splitting,
 * greedy longest match, [CLS] ... [SEP] with REALM_TOKENIZE_ADD_BOS; invalid UTF-8 is dropped as
 * llama.cpp does). UGM (T5) and RWKV vocabularies are not supported (REALM_E_UNSUPPORTED).
 *
 * Ownership: a realm_tokenizer copies what it needs from the GGUF (the realm_gguf may be closed
 * afterwards). Thread rule: immutable after load; every function is thread-safe except on a
 * realm_detok, which belongs to one caller.
 */
#ifndef REALM_TOKENIZER_H
#define REALM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"
#include "realm/gguf.h"

struct realm_tokenizer;

enum realm_tokenize_flags {
    REALM_TOKENIZE_ADD_BOS = 1,       /* prepend BOS if the vocab uses one (add_bos_token) */
    REALM_TOKENIZE_PARSE_SPECIAL = 2, /* recognise special-token text such as "<|im_start|>" */
};

/* Builds the tokenizer of a GGUF file (vocab-only files work).
 * Ownership: borrows g (only during the call); returns owned (*out; free with
 * realm_tokenizer_free). Nothing on failure.
 * Errors: REALM_E_NOT_FOUND (no tokenizer.ggml.model), REALM_E_UNSUPPORTED (model or pre-tokenizer
 * kind), REALM_E_FORMAT (missing or inconsistent arrays, BPE without merges), REALM_E_NOMEM. */
int realm_tokenizer_load(const struct realm_gguf *g, struct realm_tokenizer **out,
                         struct realm_err *err);
void realm_tokenizer_free(struct realm_tokenizer *t);

int32_t realm_tokenizer_n_vocab(const struct realm_tokenizer *t);
int32_t realm_tokenizer_bos(const struct realm_tokenizer *t);  /* -1 if none */
int32_t realm_tokenizer_eos(const struct realm_tokenizer *t);  /* -1 if none */
bool realm_tokenizer_add_bos(const struct realm_tokenizer *t); /* the vocab's default */
/* End-of-generation: EOS, EOT, <|im_end|>, <end_of_turn> ... */
bool realm_tokenizer_is_eog(const struct realm_tokenizer *t, int32_t token);
/* "llama" (SPM), "gpt2" (BPE) or "bert" (WPM) and the pre-tokenizer name ("default" if none). */
const char *realm_tokenizer_kind(const struct realm_tokenizer *t);
const char *realm_tokenizer_pre(const struct realm_tokenizer *t);

/* Tokenizes text[0..len) (any bytes). On success writes the tokens to out and *n_out = count.
 * REALM_TOKENIZE_ADD_BOS is llama.cpp's add_special: BOS (and EOS) only where the vocabulary's
 * add_bos_token / add_eos_token say so (WPM: [CLS] first and [SEP] last by default). Without
 * PARSE_SPECIAL, text of control tokens is ordinary text, but user-defined tokens (HF added
 * tokens, e.g. gemma's "<table>") are always split out.
 * out may be NULL when cap is 0 (a sizing call).
 * Ownership: borrows everything; allocates only scratch, freed before returning.
 * Errors: REALM_E_TOO_SMALL if cap is too small (nothing written, *n_out = tokens needed),
 * REALM_E_INVALID (NULL text with len > 0, NULL n_out, cap < 0, NULL out with cap > 0),
 * REALM_E_LIMIT (len > 512 MiB), REALM_E_NOMEM. Invalid UTF-8 never crashes (bytes fall back as
 * the vocab allows). */
int realm_tokenize(const struct realm_tokenizer *t, const char *text, size_t len, uint32_t flags,
                   int32_t *out, int64_t cap, int64_t *n_out);

/* The bytes a token stands for when detokenized (SPM "▁" → space, <0xNN> → that byte; BPE
 * characters → their bytes; control and unknown tokens → their text only if `special`, else
 * empty; user-defined tokens → their text). Writes min(cap, length) bytes to buf (buf may be NULL
 * with cap 0) and returns the full length, or REALM_E_RANGE for a token outside the vocab. */
int64_t realm_token_piece(const struct realm_tokenizer *t, int32_t token, bool special, char *buf,
                          size_t cap);

/* Streaming detokenizer: holds back an incomplete UTF-8 sequence across tokens so that every
 * emitted chunk is valid UTF-8; each maximal ill-formed subsequence becomes one U+FFFD.
 * realm_detok_init sets strip_space for SPM vocabularies (drop the space the tokenizer added in
 * front of the text, from the first piece that is not empty) and for WordPiece ones (the space
 * of the first word's start mark) — right for a whole sequence; a
 * caller streaming the continuation of a prompt clears d->strip_space after init.
 * Thread rule: one caller; the tokenizer must outlive it. */
struct realm_detok {
    const struct realm_tokenizer *t;
    unsigned char pending[8];
    int n_pending;
    bool special;     /* emit control tokens' text */
    bool strip_space; /* SPM, WPM: drop the leading space of the first piece */
    bool first;
};
/* Starts a detokenization stream over t (borrowed, must outlive d); `special`: control tokens'
 * text is emitted too. d holds no allocation (nothing to free). */
void realm_detok_init(struct realm_detok *d, const struct realm_tokenizer *t, bool special);
/* Appends the text completed by `token` to out (at most cap bytes). Returns the byte count, or
 * REALM_E_TOO_SMALL (the completed text needs more than cap bytes; nothing consumed — at most
 * 3 × (piece length + 3) bytes are ever needed), REALM_E_RANGE (bad token), REALM_E_NOMEM. */
int64_t realm_detok_push(struct realm_detok *d, int32_t token, char *out, size_t cap);
/* Flushes held-back bytes (as one U+FFFD) at the end of a stream. Returns 0 or 3, or
 * REALM_E_TOO_SMALL (cap < 3; nothing flushed). */
int64_t realm_detok_flush(struct realm_detok *d, char *out, size_t cap);

/* ---- chat templates ---- */
struct cJSON;
/* One chat message. role/content are what every renderer uses; the optional fields after them
 * (zero: absent) reach only Jinja templates, as OpenAI spells them. Everything is borrowed. */
struct realm_chat_msg {
    const char *role;
    size_t role_len;
    const char *content;
    size_t content_len;
    const char *name;               /* NUL-terminated, or NULL */
    const char *tool_call_id;       /* role "tool": the call it answers (NUL-terminated), or NULL */
    const struct cJSON *tool_calls; /* role "assistant": OpenAI's array of tool calls, or NULL */
};

/* ---- the messages array of a request (one reader for the server and the chat imports) ---- */

/* Strict OpenAI roles: system, developer (read as system), user, assistant, tool. Without it any
 * role name passes here (the renderer checks it is an identifier). */
#define REALM_CHAT_MSGS_OPENAI 1u

/* Messages read from a JSON array (msgs[i] points into the array's strings or owned[i]). */
struct realm_chat_messages {
    struct realm_chat_msg *msgs;
    size_t n;
    char **owned; /* per message: content joined from text parts, or NULL */
};

/* Reads an OpenAI messages array: each element an object with a string "role"; "content" a
 * string, null/absent (""; absent only for assistant messages in OPENAI mode), or an array of
 * {"type": "text", "text": ...} parts (joined); optional "name" (string); "tool_calls" (assistant
 * only: an array of {"id"?, "type"?: "function", "function": {"name": string, "arguments":
 * string or object}}); "tool_call_id" (string; required for role tool in OPENAI mode). Other
 * keys are ignored. An empty array is allowed (callers decide). *out borrows arr's strings:
 * arr must outlive it. Free with realm_chat_messages_free (also after a failure: a no-op).
 * Errors (the message names the element, e.g. "messages[2].content: ..."): REALM_E_INVALID,
 * REALM_E_NOMEM. */
int realm_chat_messages_read(const struct cJSON *arr, uint32_t flags,
                             struct realm_chat_messages *out, struct realm_err *err);
void realm_chat_messages_free(struct realm_chat_messages *m);
/* Template family detected from tokenizer.chat_template by llama.cpp's heuristics
 * (llm_chat_detect_template) — "chatml", "llama2", "llama2-sys", "llama2-sys-bos",
 * "llama2-sys-strip", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
 * "mistral-v7-tekken", "phi3", "phi4", "falcon3", "zephyr", "monarch", "gemma", "orion",
 * "openchat", "vicuna", "vicuna-orca", "deepseek", "deepseek2", "deepseek3", "command-r",
 * "llama3", "chatglm3", "chatglm4", "glmedge", "minicpm", "exaone3", "granite", "megrez",
 * "llama4", "smolvlm" — or, for a file without a template, from its special tokens
 * (<start_of_turn> → gemma, <|im_start|> → chatml, <|start_header_id|> → llama3, ...).
 * NULL if none is recognised. Lifetime: a static string. */
const char *realm_tokenizer_chat_template(const struct realm_tokenizer *t);
/* Renders msgs with family `name` exactly as llama.cpp's llm_chat_apply_template, or with name
 * NULL by the model's own template (the selection below: Jinja first), adding the assistant
 * prefix if add_generation_prompt (realm_chat_render without tools). Writes
 * min(cap, length) bytes to out (out may be NULL with cap 0); returns the full length.
 * Renders into scratch memory (realm_malloc'd, freed before returning).
 * Errors: REALM_E_NOT_FOUND (unknown family name), REALM_E_FORMAT (the Jinja template failed),
 * REALM_E_INVALID (a role that is empty, longer than 64 bytes or not [A-Za-z0-9_-]; NULL content
 * with a length), REALM_E_NOMEM. */
int64_t realm_chat_format(const struct realm_tokenizer *t, const char *name,
                          const struct realm_chat_msg *msgs, size_t n_msgs,
                          bool add_generation_prompt, char *out, size_t cap);
/* Renders msgs as realm_chat_format does and tokenizes the result so that only the template's
 * own markup can produce control tokens: the text of a control (or unknown) token that overlaps
 * a message's content stays ordinary text, as realm_tokenize without PARSE_SPECIAL treats it
 * (user-defined tokens are split out everywhere, as there). Role names count as markup (they
 * are validated identifiers; templates like phi3 make "<|" role "|>" a token on purpose).
 * Content is not tokenized on its own: the rendered string is tokenized whole, so BPE/SPM join
 * across the edges of contents exactly as before, and the result equals
 * realm_tokenize(realm_chat_format(...), flags | PARSE_SPECIAL) whenever no control token's
 * text overlaps a content. flags: REALM_TOKENIZE_ADD_BOS only. name: a family name, NULL for
 * the detected one. On success writes the tokens to out and *n_out = count (out may be NULL
 * with cap 0: a sizing call).
 * Ownership: borrows everything; allocates only scratch, freed before returning. Nothing is
 * written on failure except *n_out with REALM_E_TOO_SMALL.
 * Errors (with a message in err, which may be NULL): REALM_E_INVALID (NULL t or n_out, cap < 0,
 * NULL out with cap > 0, other flags, a role or content rejected by realm_chat_format),
 * REALM_E_NOT_FOUND (unknown family name), REALM_E_FORMAT (template failed or unmappable),
 * REALM_E_TOO_SMALL (*n_out = tokens needed), REALM_E_LIMIT (rendered prompt > 512 MiB),
 * REALM_E_NOMEM. */
int realm_chat_tokenize(const struct realm_tokenizer *t, const char *name,
                        const struct realm_chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, uint32_t flags, int32_t *out, int64_t cap,
                        int64_t *n_out, struct realm_err *err);

/* ---- template selection (docs/server.md, "Chat templates") ----
 * With name NULL a chat is rendered with, in order:
 *   1. the Jinja template configured with realm_tokenizer_set_chat_template (a file), else the
 *      GGUF's tokenizer.chat_template, interpreted by src/template as transformers does;
 *   2. a family renderer: one configured by name, else the family detected from a template our
 *      interpreter cannot parse, else one from the vocabulary's special tokens (gemma, chatml...);
 *   3. ChatML, with a warning logged once per tokenizer.
 * Jinja renderings get messages (with name, tool_calls — their "arguments" strings parsed into
 * objects — and tool_call_id), tools, add_generation_prompt, bos_token, eos_token; a leading
 * bos_token is dropped when the tokenizer adds BOS itself (as llama.cpp does). Templates that never
 * mention `tools` get them as a system-prompt text (the Hermes <tools> format), and templates
 * that never mention `tool_calls` get an assistant's calls as <tool_call> text in its content. */

/* Replaces the chat template of t: `spec` is a family name ("chatml", "llama3", ...: that
 * hand-written renderer) or the path of a Jinja file (at most 1 MiB). Call before t is shared.
 * Errors: REALM_E_IO (cannot read), REALM_E_FORMAT (template syntax; the message says where),
 * REALM_E_LIMIT, REALM_E_NOMEM, REALM_E_INVALID (NULL or empty spec). */
int realm_tokenizer_set_chat_template(struct realm_tokenizer *t, const char *spec,
                                      struct realm_err *err);

/* How the template expects a model to write tool calls, from its source text as llama.cpp's chat
 * parser decides: "llama3" (an ipython header: {"name": ..., "parameters": {...}}), otherwise
 * "hermes" (<tool_call>{"name": ..., "arguments": {...}}</tool_call>; templates without tool
 * support get this format's instructions). Lifetime: a static string. */
const char *realm_tokenizer_tool_format(const struct realm_tokenizer *t);

struct realm_chat_opts {
    const char *name; /* a family name (forces that renderer); NULL: selection above */
    bool add_generation_prompt;
    const struct cJSON *tools; /* an OpenAI tools array for the template, or NULL */
    const struct cJSON
        *extra; /* more template variables (an object, e.g. enable_thinking), or NULL */
};

/* Renders msgs (selection above). On success *out (realm_malloc'd, NUL-terminated, owned by the
 * caller) holds *out_len bytes. Errors (message in err): REALM_E_INVALID (bad role/content, see
 * realm_chat_format), REALM_E_NOT_FOUND (unknown family name), REALM_E_FORMAT (the template
 * failed: raise_exception, a type error), REALM_E_LIMIT, REALM_E_NOMEM. */
int realm_chat_render(const struct realm_tokenizer *t, const struct realm_chat_msg *msgs,
                      size_t n_msgs, const struct realm_chat_opts *opts, char **out,
                      size_t *out_len, struct realm_err *err);

/* realm_chat_tokenize with options. With a Jinja template the contents' places are found by
 * rendering a second time with a sentinel in place of each content (tok_chat_map_spans); when the
 * two renderings cannot be matched (a template that rewrites content beyond trimming it) this
 * fails closed with REALM_E_FORMAT rather than tokenize content as markup. */
int realm_chat_tokenize_ex(const struct realm_tokenizer *t, const struct realm_chat_msg *msgs,
                           size_t n_msgs, const struct realm_chat_opts *opts, uint32_t flags,
                           int32_t *out, int64_t cap, int64_t *n_out, struct realm_err *err);

#endif
