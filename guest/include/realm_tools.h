/*
 * realm_tools.h — OpenAI tool calling for guests: the grammar that forces a call (tool_choice
 * "required" or a named function) and the parser that turns generated text into tool calls.
 *
 * Two output formats, named by model_info's "tool_format" (the host picks it from the chat
 * template's text, as llama.cpp does):
 *   "hermes"  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>  (Qwen 2.5/3, Hermes,
 *             SmolLM2 and every template without tool support: the host teaches it this format)
 *   "llama3"  {"name": "f", "parameters": {...}}  (Llama 3.1/3.2/3.3, ipython role)
 *
 * The report (rg_tool_calls_parse's output, what realm_tool_calls takes; docs/abi.md) is a JSON
 * array [{"name": "f", "arguments": "<the arguments object as JSON text>"}, ...].
 *
 * Ownership: out-parameters are malloc'd and owned by the caller (free()). Errors: REALM_E_INVALID
 * (bad tools / tool_choice, message in err), REALM_E_NOMEM; grammar errors as
 * rg_json_schema_to_gbnf.
 */
#ifndef REALM_TOOLS_H
#define REALM_TOOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm_guest.h"

/* The tool call marker of a format: "<tool_call>" for hermes, NULL for llama3 (whose call is a
 * JSON object at the start of the answer). */
const char *rg_tool_marker(const char *format);

/* GBNF forcing a call of `only` (a function name; NULL: any of `tools`) in `format`, its
 * arguments constrained to that function's "parameters" schema; `parallel` allows several calls
 * in a row (hermes). `json` is the text `tools` was parsed from (its parameter schemas are passed
 * on as written). *root names the start rule (a static string). */
int32_t rg_tools_grammar(const struct rj_value *tools, const char *json, const char *only,
                         const char *format, bool parallel, char **gbnf, const char **root,
                         char *err, size_t err_cap);

/* Parses generated text as tool calls in `format`. On success *report is the JSON array above
 * and *n_calls >= 1; REALM_E_NOT_FOUND when the text holds no well-formed call (it is then plain
 * content). A final block cut short (no closing tag, e.g. at max_tokens) is dropped when an
 * earlier one is complete. */
int32_t rg_tool_calls_parse(const char *text, size_t len, const char *format, char **report,
                            size_t *n_calls);

#endif
