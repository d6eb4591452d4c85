/*
 * template.h — a Jinja interpreter for chat templates (the subset that real chat templates use,
 * configured as transformers' apply_chat_template configures Python jinja2: trim_blocks,
 * lstrip_blocks, no autoescape, loop controls, tojson without HTML escaping, raise_exception,
 * strftime_now).
 *
 * Two steps: parse a template once (realm_template_parse), then render it any number of times,
 * from any number of threads at once, with different variables (realm_template_render).
 *
 * Variables come from a cJSON object: each top-level key is a template variable. A chat
 * rendering passes {"messages": [...], "tools": [...] or null, "add_generation_prompt": bool,
 * "bos_token": "...", "eos_token": "...", extra keys...}. JSON numbers without a fraction
 * that fit in 64 bits become integers, others floats (cJSON does not keep "1.0" apart from "1").
 *
 * Errors: every function fills `err` (optional, may be NULL) with a one-line message that names
 * the line and column of the template, e.g. "template: 3:14: unknown filter 'foo'", and returns
 * a negative REALM_E_* code:
 *   REALM_E_FORMAT  syntax error (parse) or a runtime type error / raise_exception (render)
 *   REALM_E_LIMIT   a limit of realm_template_limits was exceeded
 *   REALM_E_NOMEM   allocation failed
 *   REALM_E_INVALID bad arguments (NULL pointers, vars not an object)
 * A template error never crashes the process; servers should answer it with a 400.
 *
 * Thread rule: a parsed template is immutable; concurrent renders of one template are safe.
 * Allocation goes through realm_malloc, so renders are charged to the current budget.
 */
#ifndef REALM_TEMPLATE_H
#define REALM_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"

struct cJSON;
struct realm_template;

/* Hard limits of one render; a zero field takes the default in brackets. */
struct realm_template_limits {
    size_t max_output;  /* bytes of rendered text [4 MiB] */
    uint64_t max_steps; /* loop iterations + macro calls + output writes [1,000,000] */
    uint32_t max_depth; /* nesting of macro calls and expressions while rendering [64] */
    size_t max_memory;  /* bytes of values built while rendering [64 MiB] */
};

/* Parses `len` bytes of template source (need not be NUL-terminated; at most 1 MiB).
 * On success *out owns the template (free with realm_template_free) and REALM_OK is returned;
 * on failure *out is NULL. The source is copied; the caller keeps ownership of `src`. */
int realm_template_parse(const char *src, size_t len, struct realm_template **out,
                         struct realm_err *err);

/* Renders `t` with the variables of the cJSON object `vars` (NULL: no variables) under `lim`
 * (NULL: all defaults). On success *out is a NUL-terminated string of *out_len bytes (the
 * output may contain NUL bytes only if the inputs did), owned by the caller (free with
 * realm_free); on failure *out is NULL. `vars` is only read, and may be freed after the call. */
int realm_template_render(const struct realm_template *t, const struct cJSON *vars,
                          const struct realm_template_limits *lim, char **out, size_t *out_len,
                          struct realm_err *err);

/* Builds the variables of a chat rendering the way transformers' apply_chat_template does:
 * {"messages": messages, "tools": tools or null, "add_generation_prompt": bool,
 *  "bos_token": bos or "", "eos_token": eos or "", ...every key of `extra` (an object or NULL;
 *  it may override the tokens and add e.g. enable_thinking, but not messages)}.
 * messages must be a JSON array, tools an array or NULL/null. The inputs are copied (the caller
 * keeps them); *out is owned by the caller (cJSON_Delete). REALM_E_INVALID on wrong types,
 * REALM_E_NOMEM. */
int realm_template_chat_vars(const struct cJSON *messages, const struct cJSON *tools,
                             bool add_generation_prompt, const char *bos, const char *eos,
                             const struct cJSON *extra, struct cJSON **out, struct realm_err *err);

/* Frees a template (NULL is a no-op). */
void realm_template_free(struct realm_template *t);

#endif
