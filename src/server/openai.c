/*
 * openai.c — the OpenAI request surface: validates a /v1/chat/completions or /v1/completions
 * body (types, ranges, n = 1, model access, the tenant's max_tokens cap) and turns it into the
 * "guest request" JSON the tenant's guest reads with request_read (docs/server.md): the same
 * field names as OpenAI's, normalised — message content flattened to a string, `stop` always an
 * array, max_completion_tokens folded into max_tokens, only the fields the client set.
 * Unknown fields are ignored, as OpenAI's own server does.
 *
 * Thread rule: stateless; called concurrently from connection threads.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "realm/abi.h"
#include "realm/alloc.h"
#include "realm/json.h"
#include "realm/status.h"
#include "realm/tokenizer.h"
#include "realm/utf8.h"
#include "server/srv.h"

#define MAX_STOP 16
#define MAX_STOP_LEN 256 /* the default guest's limit */
#define MAX_LOGIT_BIAS 1024
#define INVALID "invalid_request_error"
/* JSON values a request body may hold (cJSON spends ~64 bytes of host memory on each) */
#define MAX_JSON_VALUES 65536

/* a 400 naming the parameter; fmt is always a literal with one %s (the parameter) */
#define bad(e, param, fmt, a) srv_error_set(e, 400, INVALID, NULL, param, fmt, a)

/* An optional number field in [lo, hi] (null counts as absent). */
static int opt_number(const cJSON *root, const char *key, double lo, double hi, const cJSON **out,
                      struct srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' must be a number.", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return srv_error_set(e, 400, INVALID, NULL, key,
                             "'%s' is %g; it must be between %g and %g.", key, v->valuedouble, lo,
                             hi);
    *out = v;
    return 0;
}

/* An optional integer field in [lo, hi]. */
static int opt_int(const cJSON *root, const char *key, double lo, double hi, const cJSON **out,
                   struct srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' must be an integer.", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return srv_error_set(e, 400, INVALID, NULL, key,
                             "'%s' is %.0f; it must be between %.0f and %.0f.", key, v->valuedouble,
                             lo, hi);
    *out = v;
    return 0;
}

static int opt_bool(const cJSON *root, const char *key, bool *out, struct srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v))
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' must be a boolean.", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

#define OOM(e) srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory")

/* One tool call of an assistant message, normalised: {"id", "type": "function", "function":
 * {"name", "arguments": a JSON string}} (an object given for "arguments" is printed). */
static cJSON *norm_call(const cJSON *c) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    char *printed = cJSON_IsString(args) ? NULL : cJSON_PrintUnformatted(args);
    cJSON *o = cJSON_CreateObject(), *f = NULL;
    bool ok = o && (!cJSON_IsString(id) || cJSON_AddStringToObject(o, "id", id->valuestring)) &&
              cJSON_AddStringToObject(o, "type", "function") &&
              (f = cJSON_AddObjectToObject(o, "function")) &&
              cJSON_AddStringToObject(f, "name", name->valuestring) &&
              cJSON_AddStringToObject(f, "arguments", printed ? printed : args->valuestring);
    cJSON_free(printed);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* One message for the guest: role (developer read as system), content a string, and name,
 * tool_calls, tool_call_id when given. */
static cJSON *norm_message(const struct realm_chat_msg *m) {
    cJSON *o = cJSON_CreateObject();
    char *content = realm_strndup(m->content, m->content_len);
    bool ok = o && content && cJSON_AddStringToObject(o, "role", m->role) &&
              cJSON_AddStringToObject(o, "content", content) &&
              (!m->name || cJSON_AddStringToObject(o, "name", m->name)) &&
              (!m->tool_call_id || cJSON_AddStringToObject(o, "tool_call_id", m->tool_call_id));
    realm_free(content);
    cJSON *calls = ok && m->tool_calls ? cJSON_AddArrayToObject(o, "tool_calls") : NULL;
    if (ok && m->tool_calls && !calls) ok = false;
    const cJSON *c;
    if (ok && m->tool_calls) cJSON_ArrayForEach(c, m->tool_calls) {
            cJSON *n = norm_call(c);
            if (!n || !cJSON_AddItemToArray(calls, n)) {
                cJSON_Delete(n);
                ok = false;
                break;
            }
        }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The messages, read by the reader the chat imports use (realm_chat_messages_read), normalised for
 * the guest. */
static int parse_messages(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs || cJSON_IsNull(msgs))
        return bad(e, "messages", "Missing required parameter: '%s'.", "messages");
    if (!cJSON_IsArray(msgs))
        return bad(e, "messages", "'%s' must be an array of message objects.", "messages");
    if (!msgs->child)
        return bad(e, "messages", "'%s' must contain at least one message.", "messages");
    struct realm_chat_messages m;
    struct realm_err re;
    realm_err_clear(&re);
    int rc = realm_chat_messages_read(msgs, REALM_CHAT_MSGS_OPENAI, &m, &re);
    if (rc == REALM_E_NOMEM) return OOM(e);
    if (rc) return srv_error_set(e, 400, INVALID, NULL, "messages", "%s.", re.msg);
    cJSON *arr = cJSON_AddArrayToObject(out, "messages");
    for (size_t i = 0; arr && i < m.n; i++) {
        cJSON *o = norm_message(&m.msgs[i]);
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            arr = NULL;
        }
    }
    realm_chat_messages_free(&m);
    return arr ? 0 : OOM(e);
}

/* A function name as OpenAI allows it: [A-Za-z0-9_-]{1,64}. */
static bool fn_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* tools: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}];
 * tool_choice: "none" | "auto" | "required" | {"type": "function", "function": {"name"}};
 * parallel_tool_calls: bool. Copied to the guest request as given (validated). */
static int parse_tools(const cJSON *root, cJSON *out, bool *offered, struct srv_error *e) {
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parallel_tool_calls");
    if (tools && cJSON_IsNull(tools)) tools = NULL;
    if (choice && cJSON_IsNull(choice)) choice = NULL;
    if (par && cJSON_IsNull(par)) par = NULL;
    if (tools && !cJSON_IsArray(tools))
        return bad(e, "tools", "'%s' must be an array of tools.", "tools");
    if (tools && !tools->child) tools = NULL; /* [] is no tools */
    if (tools && cJSON_GetArraySize(tools) > 128)
        return bad(e, "tools", "'%s' may hold at most 128 tools.", "tools");
    int i = 0;
    for (const cJSON *t = tools ? tools->child : NULL; t; t = t->next, i++) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsObject(t) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") ||
            !cJSON_IsObject(fn))
            return srv_error_set(e, 400, INVALID, NULL, "tools",
                                 "tools[%d] must be {\"type\": \"function\", \"function\": {...}}.",
                                 i);
        if (!cJSON_IsString(name) || !fn_name_ok(name->valuestring))
            return srv_error_set(e, 400, INVALID, NULL, "tools",
                                 "tools[%d].function.name must match [a-zA-Z0-9_-]{1,64}.", i);
        if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))
            return srv_error_set(e, 400, INVALID, NULL, "tools",
                                 "tools[%d].function.description must be a string.", i);
        if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
            return srv_error_set(e, 400, INVALID, NULL, "tools",
                                 "tools[%d].function.parameters must be a JSON Schema object.", i);
        for (const cJSON *u = tools->child; u != t; u = u->next)
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(u, "function"), "name")
                            ->valuestring,
                        name->valuestring))
                return srv_error_set(e, 400, INVALID, NULL, "tools",
                                     "tools[%d]: the function name '%.64s' is used twice.", i,
                                     name->valuestring);
    }
    if (choice) {
        const cJSON *cfn = cJSON_GetObjectItemCaseSensitive(choice, "function");
        const cJSON *cname = cJSON_GetObjectItemCaseSensitive(cfn, "name");
        const cJSON *ctype = cJSON_GetObjectItemCaseSensitive(choice, "type");
        if (cJSON_IsString(choice)) {
            const char *c = choice->valuestring;
            if (strcmp(c, "none") && strcmp(c, "auto") && strcmp(c, "required"))
                return bad(e, "tool_choice",
                           "'%s' must be \"none\", \"auto\", \"required\" or a named function.",
                           "tool_choice");
        } else if (!cJSON_IsObject(choice) || !cJSON_IsString(ctype) ||
                   strcmp(ctype->valuestring, "function") || !cJSON_IsString(cname)) {
            return bad(e, "tool_choice",
                       "'%s' must be \"none\", \"auto\", \"required\" or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}.",
                       "tool_choice");
        }
        bool none = cJSON_IsString(choice) && !strcmp(choice->valuestring, "none");
        if (!tools && !none)
            return bad(e, "tool_choice", "'%s' is only allowed when 'tools' are specified.",
                       "tool_choice");
        if (cJSON_IsObject(choice)) {
            bool found = false;
            for (const cJSON *t = tools->child; t && !found; t = t->next)
                found = !strcmp(cJSON_GetObjectItemCaseSensitive(
                                    cJSON_GetObjectItemCaseSensitive(t, "function"), "name")
                                    ->valuestring,
                                cname->valuestring);
            if (!found)
                return srv_error_set(
                    e, 400, INVALID, NULL, "tool_choice",
                    "tool_choice names the function '%.64s', which is not in 'tools'.",
                    cname->valuestring);
        }
    }
    if (par && !cJSON_IsBool(par))
        return bad(e, "parallel_tool_calls", "'%s' must be a boolean.", "parallel_tool_calls");
    if (par && !tools)
        return bad(e, "parallel_tool_calls", "'%s' is only allowed when 'tools' are specified.",
                   "parallel_tool_calls");
    if (!tools) return 0;
    *offered = !(cJSON_IsString(choice) && !strcmp(choice->valuestring, "none"));
    cJSON *tc = cJSON_Duplicate(tools, true), *cc = choice ? cJSON_Duplicate(choice, true) : NULL;
    if (!tc || !cJSON_AddItemToObject(out, "tools", tc)) {
        cJSON_Delete(tc);
        cJSON_Delete(cc);
        return OOM(e);
    }
    if (cc && !cJSON_AddItemToObject(out, "tool_choice", cc)) {
        cJSON_Delete(cc);
        return OOM(e);
    }
    if (par && !cJSON_AddBoolToObject(out, "parallel_tool_calls", cJSON_IsTrue(par))) return OOM(e);
    return 0;
}

static int parse_prompt(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p))
        return bad(e, "prompt", "Missing required parameter: '%s'.", "prompt");
    const char *text = NULL;
    if (cJSON_IsString(p))
        text = p->valuestring;
    else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child))
        text = p->child->valuestring;
    else if (cJSON_IsArray(p))
        return bad(e, "prompt",
                   "'%s' must be a string or an array of one string (batches and token arrays are "
                   "not supported).",
                   "prompt");
    else
        return bad(e, "prompt", "'%s' must be a string.", "prompt");
    if (!cJSON_AddStringToObject(out, "prompt", text))
        return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

static int parse_stop(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 0;
    cJSON *arr = cJSON_AddArrayToObject(out, "stop");
    if (!arr) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    int n = 0;
    const cJSON *single = cJSON_IsString(s) ? s : NULL;
    if (!single && !cJSON_IsArray(s))
        return bad(e, "stop", "'%s' must be a string or an array of strings.", "stop");
    for (const cJSON *it = single ? single : s->child; it; it = single ? NULL : it->next) {
        if (!cJSON_IsString(it))
            return bad(e, "stop", "'%s' must be a string or an array of strings.", "stop");
        size_t len = strlen(it->valuestring);
        if (len == 0) continue;
        if (len > MAX_STOP_LEN)
            return bad(e, "stop", "'%s' sequences are limited to 256 bytes each.", "stop");
        if (++n > MAX_STOP) return bad(e, "stop", "'%s' may hold at most 16 sequences.", "stop");
        cJSON *str = cJSON_CreateString(it->valuestring);
        if (!str || !cJSON_AddItemToArray(arr, str)) {
            cJSON_Delete(str);
            return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        }
    }
    return 0;
}

static int parse_logit_bias(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (!lb || cJSON_IsNull(lb)) return 0;
    if (!cJSON_IsObject(lb))
        return bad(e, "logit_bias", "'%s' must be an object mapping token ids to numbers.",
                   "logit_bias");
    cJSON *o = cJSON_AddObjectToObject(out, "logit_bias");
    if (!o) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    int n = 0;
    for (const cJSON *it = lb->child; it; it = it->next) {
        const char *k = it->string;
        char *end = NULL;
        long id = strtol(k, &end, 10);
        if (!k[0] || *end || id < 0 || id > INT32_MAX || k[0] == '+' || k[0] == ' ')
            return srv_error_set(e, 400, INVALID, NULL, "logit_bias",
                                 "logit_bias key '%.32s' is not a token id.", k);
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= -100 && it->valuedouble <= 100))
            return srv_error_set(e, 400, INVALID, NULL, "logit_bias",
                                 "logit_bias[%.32s] must be a number between -100 and 100.", k);
        if (++n > MAX_LOGIT_BIAS)
            return bad(e, "logit_bias", "'%s' may hold at most 1024 entries.", "logit_bias");
        char key[16];
        snprintf(key, sizeof key, "%ld", id);
        if (!cJSON_AddNumberToObject(o, key, it->valuedouble))
            return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

/* Copies a validated numeric field into the guest request. */
static int copy_num(cJSON *out, const char *key, const cJSON *v, struct srv_error *e) {
    if (!v) return 0;
    if (!cJSON_AddNumberToObject(out, key, v->valuedouble))
        return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

static int find_model(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                      const char *name, size_t *out, struct srv_error *e) {
    for (size_t i = 0; i < cfg->n_models; i++) {
        if (strcmp(cfg->models[i].name, name)) continue;
        if (!realm_tenant_may_use(t, name))
            return srv_error_set(e, 403, "permission_error", "model_not_allowed", "model",
                                 "Your API key does not have access to the model '%.200s'.", name);
        *out = i;
        return 0;
    }
    return srv_error_set(e, 404, INVALID, "model_not_found", "model",
                         "The model '%.200s' does not exist.", name);
}

/* True if a JSON string literal in body[0..len) has a \u0000 escape (or a raw NUL byte). A
 * linear scan that follows string literals and their escapes, so "\\u0000" (an escaped backslash
 * followed by the text u0000) is not one. */
static bool json_has_nul_escape(const char *body, size_t len) {
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (c == '\0') return true;
        if (!in_str) {
            in_str = c == '"';
            continue;
        }
        if (c == '"') {
            in_str = false;
        } else if (c == '\\' && i + 1 < len) {
            if (body[i + 1] == 'u' && i + 5 < len && !memcmp(body + i + 2, "0000", 4)) return true;
            i++; /* the escaped character */
        }
    }
    return false;
}

/* The body as a JSON object, or NULL with a 400 in *e: NUL characters in strings (cJSON would
 * cut the string there), more than MAX_JSON_VALUES values, not JSON, not an object. */
static cJSON *parse_body(const char *body, size_t len, struct srv_error *e) {
    /* cJSON ends its strings at the first NUL: "a\u0000b" would silently become "a" */
    if (json_has_nul_escape(body, len)) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "Strings in the request may not contain the NUL character (\\u0000).");
        return NULL;
    }
    if (realm_json_values_bound(body, len, MAX_JSON_VALUES) > MAX_JSON_VALUES) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "The request body holds more than %d JSON values.", MAX_JSON_VALUES);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "We could not parse the JSON body of your request: expected a JSON object.");
        return NULL;
    }
    return root;
}

/* Every top-level field is one this server honours, one it knows has no effect on what is
 * generated ("user", "metadata"), or a 400 naming it: a client must never get a 200 whose output
 * silently ignored what it asked for. Features not built yet are refused with a message saying
 * so (null, and an empty "tools", count as absent); "n", "best_of", "logprobs" and "echo" are
 * checked with their values by the caller. */
static int check_fields(const cJSON *root, enum srv_kind kind, struct srv_error *e) {
    static const char *const common[] = {"model",
                                         "stream",
                                         "stream_options",
                                         "max_tokens",
                                         "max_completion_tokens",
                                         "temperature",
                                         "top_p",
                                         "top_k",
                                         "min_p",
                                         "repeat_penalty",
                                         "repeat_last_n",
                                         "presence_penalty",
                                         "frequency_penalty",
                                         "seed",
                                         "stop",
                                         "logit_bias",
                                         "ignore_eos",
                                         "n",
                                         "best_of",
                                         "logprobs",
                                         "echo",
                                         "user",
                                         "metadata",
                                         "response_format",
                                         "grammar",
                                         "json_schema",
                                         NULL};
    static const char *const chat[] = {"messages",    "top_logprobs",        "tools",
                                       "tool_choice", "parallel_tool_calls", NULL};
    static const char *const completion[] = {"prompt", "parse_special", NULL};
    /* tools on completions, and the deprecated functions/function_call (use tools) */
    static const char *const not_yet[] = {
        "tools",  "tool_choice", "functions", "function_call", "parallel_tool_calls",
        "suffix", NULL};
    const cJSON *f;
    cJSON_ArrayForEach(f, root) {
        bool known = false;
        for (size_t i = 0; common[i] && !known; i++)
            known = !strcmp(f->string, common[i]);
        const char *const *own = kind == SRV_CHAT ? chat : completion;
        for (size_t i = 0; own[i] && !known; i++)
            known = !strcmp(f->string, own[i]);
        if (known) continue;
        bool later = false;
        for (size_t i = 0; not_yet[i] && !later; i++)
            later = !strcmp(f->string, not_yet[i]);
        if (later) {
            if (cJSON_IsNull(f) || (cJSON_IsArray(f) && !f->child)) continue;
            if (!strcmp(f->string, "functions") || !strcmp(f->string, "function_call"))
                return bad(
                    e, f->string,
                    "'%s' (deprecated by OpenAI) is not supported: use 'tools' and 'tool_choice'.",
                    f->string);
            if (!strcmp(f->string, "suffix"))
                return bad(e, f->string, "'%s' is not supported by this server yet.", f->string);
            return bad(e, f->string,
                       "'%s' is not supported on completions (chat completions only).", f->string);
        }
        return bad(e, f->string, "Unrecognized request argument supplied: '%s'.", f->string);
    }
    return 0;
}

/* logprobs: chat takes "logprobs" (bool) and "top_logprobs" (0..20, only with logprobs);
 * completions take "logprobs" as the number of alternatives (0..20; null or false: off). */
static int parse_logprobs(const cJSON *root, enum srv_kind kind, struct srv_request *r,
                          struct srv_error *e) {
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (kind == SRV_CHAT) {
        const cJSON *top;
        if (opt_bool(root, "logprobs", &r->logprobs, e) ||
            opt_int(root, "top_logprobs", 0, REALM_ABI_MAX_TOP_LOGPROBS, &top, e))
            return -1;
        if (top && !r->logprobs)
            return bad(e, "top_logprobs", "'%s' needs logprobs set to true.", "top_logprobs");
        r->top_logprobs = top ? (int32_t)top->valuedouble : 0;
        return 0;
    }
    if (!lp || cJSON_IsNull(lp) || cJSON_IsFalse(lp)) return 0;
    if (!cJSON_IsNumber(lp) || lp->valuedouble != (double)(int)lp->valuedouble ||
        lp->valuedouble < 0 || lp->valuedouble > REALM_ABI_MAX_TOP_LOGPROBS)
        return srv_error_set(e, 400, INVALID, NULL, "logprobs",
                             "'logprobs' must be an integer in [0, %d] on completions.",
                             REALM_ABI_MAX_TOP_LOGPROBS);
    r->logprobs = true;
    r->top_logprobs = (int32_t)lp->valuedouble;
    return 0;
}

int srv_request_parse(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                      enum srv_kind kind, const char *body, size_t len, struct srv_request *out,
                      struct srv_error *e) {
    cJSON *root = NULL;
    cJSON *g = NULL;
    int rc = -1;
    if (!(root = parse_body(body, len, e)) || check_fields(root, kind, e)) goto done;
    struct srv_request r = {.kind = kind};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model || cJSON_IsNull(model)) {
        bad(e, "model", "Missing required parameter: '%s'.", "model");
        goto done;
    }
    if (!cJSON_IsString(model)) {
        bad(e, "model", "'%s' must be a string.", "model");
        goto done;
    }
    if (find_model(cfg, t, model->valuestring, &r.model, e)) goto done;

    g = cJSON_CreateObject();
    if (!g || !cJSON_AddStringToObject(g, "kind", kind == SRV_CHAT ? "chat" : "completion") ||
        !cJSON_AddStringToObject(g, "model", model->valuestring)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    if ((kind == SRV_CHAT ? parse_messages(root, g, e) || parse_tools(root, g, &r.tools, e)
                          : parse_prompt(root, g, e)))
        goto done;

    /* n choices up to the server's max_choices; the features we do not have are refused rather
     * than silently ignored */
    const cJSON *n, *mt, *mct, *bo;
    if (opt_int(root, "n", -1e9, 1e9, &n, e)) goto done;
    r.n = n ? (int32_t)(n->valuedouble < 1 ? 0 : n->valuedouble > 1e6 ? 1e6 : n->valuedouble) : 1;
    if (r.n < 1) {
        srv_error_set(e, 400, INVALID, NULL, "n", "'n' must be at least 1 (got %.0f).",
                      n->valuedouble);
        goto done;
    }
    if (r.n > cfg->max_choices) {
        srv_error_set(e, 400, INVALID, NULL, "n",
                      "'n' may be at most %d on this server (max_choices); got %.0f.",
                      cfg->max_choices, n->valuedouble);
        goto done;
    }
    if (r.n > 1 && r.tools) {
        bad(e, "n", "'%s' above 1 cannot be combined with tools.", "n");
        goto done;
    }
    if (r.n > 1 && !cJSON_AddNumberToObject(g, "n", r.n)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    if (opt_int(root, "best_of", -1e9, 1e9, &bo, e)) goto done;
    if (bo && bo->valuedouble != 1) {
        bad(e, "best_of", "Only %s=1 is supported.", "best_of");
        goto done;
    }
    bool echo = false;
    if (opt_bool(root, "stream", &r.stream, e) || opt_bool(root, "echo", &echo, e) ||
        parse_logprobs(root, kind, &r, e))
        goto done;
    if (r.logprobs && r.n > 1) {
        bad(e, "logprobs", "'%s' cannot be combined with n above 1.", "logprobs");
        goto done;
    }
    if (r.logprobs && echo) { /* OpenAI would give the prompt's tokens too: not computed here */
        bad(e, "logprobs", "'%s' cannot be combined with echo.", "logprobs");
        goto done;
    }
    /* output constraints go to the guest as sent: its grammar engine validates them (a bad
     * grammar or schema is its 400) */
    static const char *const constraints[] = {"response_format", "grammar", "json_schema"};
    for (size_t i = 0; i < sizeof constraints / sizeof constraints[0]; i++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, constraints[i]);
        if (!c || cJSON_IsNull(c)) continue;
        cJSON *copy = cJSON_Duplicate(c, true);
        if (!copy || !cJSON_AddItemToObject(g, constraints[i], copy)) {
            cJSON_Delete(copy);
            srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
            goto done;
        }
    }
    if (r.logprobs && (!cJSON_AddBoolToObject(g, "logprobs", true) ||
                       !cJSON_AddNumberToObject(g, "top_logprobs", r.top_logprobs))) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    if (echo && kind == SRV_CHAT) {
        bad(e, "echo", "'%s' applies to completions only.", "echo");
        goto done;
    }
    if (echo && !cJSON_AddBoolToObject(g, "echo", true)) { /* the guest emits the prompt first */
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            bad(e, "stream_options", "'%s' must be an object.", "stream_options");
            goto done;
        }
        if (opt_bool(so, "include_usage", &r.include_usage, e)) goto done;
    }

    if (opt_int(root, "max_tokens", 1, INT32_MAX, &mt, e) ||
        opt_int(root, "max_completion_tokens", 1, INT32_MAX, &mct, e))
        goto done;
    if (mct) mt = mct;
    int32_t cap = t->limits.max_tokens_per_request;
    if (mt) {
        if (cap > 0 && mt->valuedouble > cap) {
            srv_error_set(
                e, 400, INVALID, NULL, mct ? "max_completion_tokens" : "max_tokens",
                "max_tokens is %.0f but this API key allows at most %d tokens per request.",
                mt->valuedouble, cap);
            goto done;
        }
        r.max_tokens = (int32_t)mt->valuedouble;
    } else {
        /* never unbounded: the tenant's cap, else the server's default (a guest that ignores it is
         * still stopped by its wall-clock limit and charged what the host measured) */
        r.max_tokens = cap > 0 ? cap : cfg->default_max_tokens;
    }
    /* the guest SDK takes at most 2^30; more can never fit a context anyway */
    if (r.max_tokens > (1 << 30)) r.max_tokens = 1 << 30;
    if (r.max_tokens > 0 && !cJSON_AddNumberToObject(g, "max_tokens", r.max_tokens)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    int32_t n_ctx = cfg->models[r.model].n_ctx;
    if (n_ctx > 0 && !cJSON_AddNumberToObject(g, "n_ctx", n_ctx)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }

    const cJSON *temp, *top_p, *top_k, *min_p, *rep, *rep_n, *pres, *freq, *seed;
    if (opt_number(root, "temperature", 0, 2, &temp, e) ||
        opt_number(root, "top_p", 0, 1, &top_p, e) ||
        opt_int(root, "top_k", 0, INT32_MAX, &top_k, e) ||
        opt_number(root, "min_p", 0, 1, &min_p, e) ||
        opt_number(root, "repeat_penalty", 0.01, 100, &rep, e) ||
        opt_int(root, "repeat_last_n", 0, 1 << 16, &rep_n, e) ||
        opt_number(root, "presence_penalty", -2, 2, &pres, e) ||
        opt_number(root, "frequency_penalty", -2, 2, &freq, e) ||
        opt_int(root, "seed", -9223372036854775808.0, 18446744073709551615.0, &seed, e))
        goto done;
    if (copy_num(g, "temperature", temp, e) || copy_num(g, "top_p", top_p, e) ||
        copy_num(g, "top_k", top_k, e) || copy_num(g, "min_p", min_p, e) ||
        copy_num(g, "repeat_penalty", rep, e) || copy_num(g, "repeat_last_n", rep_n, e) ||
        copy_num(g, "presence_penalty", pres, e) || copy_num(g, "frequency_penalty", freq, e))
        goto done;
    if (seed) {
        /* OpenAI takes any 64-bit integer; guests get it folded into [0, 2^53) so that it is exact
         * in a JSON double (negative seeds as their two's complement) */
        double sd = seed->valuedouble;
        uint64_t u = sd < 0                         ? (uint64_t)(int64_t)sd
                     : sd >= 18446744073709551615.0 ? UINT64_MAX
                                                    : (uint64_t)sd;
        char num[24]; /* raw: cJSON prints doubles with 15 digits, which would round large seeds */
        snprintf(num, sizeof num, "%llu", (unsigned long long)(u & ((UINT64_C(1) << 53) - 1)));
        if (!cJSON_AddRawToObject(g, "seed", num)) {
            srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
            goto done;
        }
    }
    if (parse_stop(root, g, e) || parse_logit_bias(root, g, e)) goto done;
    bool ignore_eos = false; /* extension (as llama.cpp's server): generate through end-of-text */
    const cJSON *ie = cJSON_GetObjectItemCaseSensitive(root, "ignore_eos");
    if (opt_bool(root, "ignore_eos", &ignore_eos, e)) goto done;
    if (ie && !cJSON_IsNull(ie) && !cJSON_AddBoolToObject(g, "ignore_eos", ignore_eos)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    /* extension: whether special-token text in a raw prompt becomes control tokens (default true,
     * as before). Chat message content never does (docs/server.md, "Prompt integrity"). */
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(root, "parse_special");
    if (ps && !cJSON_IsNull(ps)) {
        bool v = true;
        if (kind == SRV_CHAT) {
            bad(e, "parse_special",
                "'%s' applies to completions only: chat message content is never parsed for "
                "special tokens.",
                "parse_special");
            goto done;
        }
        if (opt_bool(root, "parse_special", &v, e)) goto done;
        if (!cJSON_AddBoolToObject(g, "parse_special", v)) {
            srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
            goto done;
        }
    }
    if (!cJSON_AddBoolToObject(g, "stream", r.stream)) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }

    char *printed = cJSON_PrintUnformatted(g);
    if (!printed) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    r.guest_len = strlen(printed);
    r.guest_json = realm_strndup(printed, r.guest_len);
    cJSON_free(printed);
    if (!r.guest_json) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    *out = r;
    rc = 0;
done:
    cJSON_Delete(g);
    cJSON_Delete(root);
    return rc;
}

void srv_request_free(struct srv_request *r) {
    realm_free(r->guest_json);
    r->guest_json = NULL;
}

/* ---- responses (OpenAI JSON and SSE events; the transport is http.c's) ---- */

static const char *finish_text(const struct srv_job *j) {
    if (j->tool_calls) return "tool_calls";
    if (j->result.finish_reason == REALM_ABI_FINISH_LENGTH) return "length";
    if (j->result.status == REALM_E_CONTEXT_FULL) return "length";
    return "stop";
}

/* Choice i's finish_reason (n > 1: each choice reports its own through usage()). */
static const char *choice_finish_text(const struct srv_job *j, int32_t i) {
    if (j->req.n <= 1) return finish_text(j);
    if (j->sreq.choice_finish[i] == REALM_ABI_FINISH_LENGTH) return "length";
    if (j->result.status == REALM_E_CONTEXT_FULL) return "length";
    return "stop";
}

/* ---- choice records (n > 1) ---- */

int srv_choice_record_append(struct realm_buf *b, int32_t choice, const char *text, size_t len) {
    if (len > UINT32_MAX) return REALM_E_LIMIT;
    uint32_t n = (uint32_t)len;
    char head[8];
    memcpy(head, &choice, 4);
    memcpy(head + 4, &n, 4);
    return realm_buf_append(b, head, sizeof head) || realm_buf_append(b, text, len) ? REALM_E_NOMEM
                                                                                    : REALM_OK;
}

/* The record at p[*off..n): its choice and text; advances *off. False at the end (or on a torn
 * record, which the writer never makes). */
static bool choice_record_next(const char *p, size_t n, size_t *off, int32_t *choice,
                               const char **text, size_t *len) {
    if (n - *off < 8) return false;
    uint32_t l;
    memcpy(choice, p + *off, 4);
    memcpy(&l, p + *off + 4, 4);
    if (n - *off - 8 < l) return false;
    *text = p + *off + 8;
    *len = l;
    *off += 8 + (size_t)l;
    return true;
}

/* Choice i's whole text out of the job's records (into out). */
static int choice_text(const struct srv_job *j, int32_t i, struct realm_buf *out) {
    size_t off = 0, len;
    int32_t c;
    const char *t;
    int rc = 0;
    while (!rc && choice_record_next(j->pending.data, j->pending.len, &off, &c, &t, &len))
        if (c == i) rc = realm_buf_append(out, t, len);
    return rc;
}

void srv_openai_error(const struct srv_job *j, struct srv_error *e) {
    const struct srv_gen_result *r = &j->result;
    const char *msg = r->message[0] ? r->message : realm_strerror(r->status);
    switch (r->status) {
    case REALM_E_CONTEXT_FULL:
        srv_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                      "The prompt is longer than the model's context: %s", msg);
        break;
    case REALM_E_INVALID:
    case REALM_E_RANGE:
    case REALM_E_FORMAT:
        srv_error_set(e, 400, "invalid_request_error", NULL, NULL, "Invalid request: %s", msg);
        break;
    case REALM_E_NOT_FOUND:
        srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model", "%s", msg);
        break;
    case REALM_E_PERMISSION:
        srv_error_set(e, 403, "permission_error", NULL, NULL, "%s", msg);
        break;
    case REALM_E_KV_FULL:
        /* the KV pool says which: the tenant's own block quota (429, like its other limits) or
         * the shared pool exhausted by everyone (503) */
        if (strstr(msg, "pool exhausted")) { /* no figures: the pool's use is everyone's business */
            srv_error_set(e, 503, "server_error", "server_overloaded", NULL,
                          "The KV cache is full (pool exhausted); retry shortly.");
        } else {
            srv_error_set(e, 429, "requests", "rate_limit_exceeded", NULL,
                          "Tenant KV cache quota reached: %s", msg);
        }
        e->retry_after = 1;
        break;
    case REALM_E_LIMIT:
        /* a per-request size limit of the sandbox (output bytes, input to tokenize/chat_format,
         * context, sessions): the same request would fail again, so no 429 + Retry-After (that
         * invites automatic retries); the tenant's rate limits are refused at admission */
        srv_error_set(e, 400, "invalid_request_error", "limit_exceeded", NULL,
                      "A per-request limit was exceeded: %s", msg);
        break;
    case REALM_E_BUSY:
        srv_error_set(e, 503, "server_error", "server_overloaded", NULL, "The server is busy: %s",
                      msg);
        e->retry_after = 1;
        break;
    case REALM_E_CANCELLED:
        srv_error_set(e, 503, "server_error", "cancelled", NULL, "The request was cancelled: %s",
                      msg);
        break;
    default:
        srv_error_set(e, 500, "server_error", NULL, NULL, "The tenant's guest failed: %s: %s",
                      realm_strerror(r->status), msg);
    }
}

/* What the tenant was charged for this request (the same numbers reach /metrics). */
static int usage_json(struct realm_buf *b, const struct srv_job *j) {
    long long p = j->result.prompt_tokens > 0 ? (long long)j->result.prompt_tokens : 0;
    long long c = j->result.completion_tokens > 0 ? (long long)j->result.completion_tokens : 0;
    return realm_buf_printf(
        b, "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}", p, c,
        p + c);
}

static int head_json(struct realm_buf *b, const struct srv_job *j, const char *object) {
    const char *model = j->srv->cfg->models[j->req.model].name;
    return realm_buf_printf(b,
                            "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->id,
                            object, (long long)j->created) ||
           realm_buf_json_string(b, model, strlen(model)) ||
           realm_buf_puts(b, ",\"system_fingerprint\":\"realm\"");
}

/* ---- logprobs ---- */

/* A log-probability as JSON: -inf (a token the guest masked) as -9999, as OpenAI does. */
static int lp_value(struct realm_buf *b, float lp) {
    return realm_buf_printf(b, "%.9g", isinf(lp) ? -9999.0 : (double)lp);
}

/* The token's text with control tokens spelled out; *len its byte length. Returns a pointer to
 * small or to a realm_malloc'd buffer (free when != small), NULL on error. */
static char *piece_of(const struct realm_tokenizer *tok, int32_t id, char *small, size_t cap,
                      size_t *len) {
    int64_t n = realm_token_piece(tok, id, true, small, cap);
    if (n < 0) return NULL;
    *len = (size_t)n;
    if ((size_t)n <= cap) return small;
    char *p = realm_malloc((size_t)n);
    if (p) realm_token_piece(tok, id, true, p, (size_t)n);
    return p;
}

/* Bytes as a JSON array of numbers ([72,105]): how OpenAI and llama-server spell token bytes. */
static int bytes_json(struct realm_buf *b, const char *p, size_t n) {
    int rc = realm_buf_puts(b, "[");
    for (size_t i = 0; i < n && !rc; i++)
        rc = realm_buf_printf(b, i ? ",%u" : "%u", (unsigned char)p[i]);
    return rc || realm_buf_puts(b, "]");
}

/* {"token", "logprob", "bytes"} (chat), or with completions' shape only the token string key. */
static int lp_token_json(struct realm_buf *b, const struct realm_tokenizer *tok, int32_t id,
                         float lp, bool chat) {
    char small[128];
    size_t n = 0;
    char *p = piece_of(tok, id, small, sizeof small, &n);
    if (!p) return REALM_E_NOMEM;
    int rc;
    if (chat) {
        rc = realm_buf_puts(b, "{\"token\":") || realm_buf_json_string(b, p, n) ||
             realm_buf_puts(b, ",\"logprob\":") || lp_value(b, lp) ||
             realm_buf_puts(b, ",\"bytes\":") || bytes_json(b, p, n);
    } else {
        rc = realm_buf_json_string(b, p, n);
    }
    if (p != small) realm_free(p);
    return rc;
}

/* ,"logprobs":… for records [from, to): null when not asked for; chat's {"content": [...],
 * "refusal": null}; completions' {"tokens", "token_logprobs", "top_logprobs", "text_offset"},
 * text_offset counting the bytes of the pieces from *off on (advanced past them). */
static int logprobs_json(struct realm_buf *b, const struct srv_job *j, size_t from, size_t to,
                         int64_t *off) {
    if (!j->req.logprobs) return realm_buf_puts(b, ",\"logprobs\":null");
    int rc = 0;
    if (j->req.kind == SRV_CHAT) {
        rc = realm_buf_puts(b, ",\"logprobs\":{\"content\":[");
        for (size_t i = from; i < to && !rc; i++) {
            const struct srv_logprob *r = &j->lp[i];
            rc = (i > from && realm_buf_puts(b, ",")) ||
                 lp_token_json(b, r->tok, r->ids[0], r->lps[0], true);
            /* lp_token_json left the object open: its top_logprobs close it */
            rc = rc || realm_buf_puts(b, ",\"top_logprobs\":[");
            for (int32_t k = 1; k < r->n && !rc; k++) {
                rc = (k > 1 && realm_buf_puts(b, ",")) ||
                     lp_token_json(b, r->tok, r->ids[k], r->lps[k], true) || realm_buf_puts(b, "}");
            }
            rc = rc || realm_buf_puts(b, "]}");
        }
        return rc || realm_buf_puts(b, "],\"refusal\":null}");
    }
    rc = realm_buf_puts(b, ",\"logprobs\":{\"tokens\":[");
    int64_t o = *off;
    for (size_t i = from; i < to && !rc; i++)
        rc = (i > from && realm_buf_puts(b, ",")) ||
             lp_token_json(b, j->lp[i].tok, j->lp[i].ids[0], 0, false);
    rc = rc || realm_buf_puts(b, "],\"token_logprobs\":[");
    for (size_t i = from; i < to && !rc; i++)
        rc = (i > from && realm_buf_puts(b, ",")) || lp_value(b, j->lp[i].lps[0]);
    rc = rc || realm_buf_puts(b, "],\"top_logprobs\":[");
    for (size_t i = from; i < to && !rc; i++) {
        const struct srv_logprob *r = &j->lp[i];
        rc = (i > from && realm_buf_puts(b, ",")) || realm_buf_puts(b, "{");
        for (int32_t k = 1; k < r->n && !rc; k++)
            rc = (k > 1 && realm_buf_puts(b, ",")) ||
                 lp_token_json(b, r->tok, r->ids[k], 0, false) || realm_buf_puts(b, ":") ||
                 lp_value(b, r->lps[k]);
        rc = rc || realm_buf_puts(b, "}");
    }
    rc = rc || realm_buf_puts(b, "],\"text_offset\":[");
    for (size_t i = from; i < to && !rc; i++) {
        rc = (i > from && realm_buf_puts(b, ",")) || realm_buf_printf(b, "%lld", (long long)o);
        o += realm_token_piece(j->lp[i].tok, j->lp[i].ids[0], true, NULL,
                               0); /* a sizing call: no copy */
    }
    *off = o;
    return rc || realm_buf_puts(b, "]}");
}

/* ---- tool calls ---- */

/* The guest's report as OpenAI's tool_calls: [{"id", "type": "function", "function": {"name",
 * "arguments"}}]; in a stream (index >= 0) one call's chunk delta: first its id, type and name with
 * empty arguments (head), then the arguments. */
static int tool_call_json(struct realm_buf *b, const struct srv_job *j, const cJSON *c, int i,
                          int part) {
    const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
    const char *args = cJSON_GetObjectItemCaseSensitive(c, "arguments")->valuestring;
    const char *tail = strchr(j->id, '-'); /* "chatcmpl-XYZ": ids are call_XYZ_0, call_XYZ_1, ... */
    int rc = realm_buf_puts(b, "{");
    if (part >= 0) rc = rc || realm_buf_printf(b, "\"index\":%d,", i);
    if (part <= 0)
        rc = rc || realm_buf_printf(b, "\"id\":\"call_%s_%d\",\"type\":\"function\",",
                                    tail ? tail + 1 : j->id, i);
    rc = rc || realm_buf_puts(b, "\"function\":{");
    if (part <= 0)
        rc = rc || realm_buf_puts(b, "\"name\":") || realm_buf_json_string(b, name, strlen(name)) ||
             realm_buf_puts(b, ",");
    rc = rc || realm_buf_puts(b, "\"arguments\":") ||
         (part == 0 ? realm_buf_puts(b, "\"\"") : realm_buf_json_string(b, args, strlen(args)));
    return rc || realm_buf_puts(b, "}}");
}

static int tool_calls_json(struct realm_buf *b, const struct srv_job *j) {
    cJSON *calls = cJSON_Parse(j->tool_calls);
    if (!calls) return REALM_E_NOMEM; /* the host validated it: only memory fails */
    int rc = realm_buf_puts(b, ",\"tool_calls\":["), i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        rc = rc || (i && realm_buf_puts(b, ",")) || tool_call_json(b, j, c, i, -1);
        i++;
    }
    cJSON_Delete(calls);
    return rc || realm_buf_puts(b, "]");
}

/* The stream's tool-call chunks: per call one with its id, type and name, one with its arguments.
 */
static int tool_call_chunks(struct realm_buf *b, struct srv_job *j) {
    cJSON *calls = cJSON_Parse(j->tool_calls);
    if (!calls) return REALM_E_NOMEM;
    int rc = 0, i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        for (int part = 0; part < 2 && !rc; part++)
            rc = realm_buf_puts(b, "data: ") || head_json(b, j, "chat.completion.chunk") ||
                 realm_buf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[") ||
                 tool_call_json(b, j, c, i, part) ||
                 realm_buf_puts(b, "]},\"logprobs\":null,\"finish_reason\":null}]") ||
                 (j->req.include_usage && realm_buf_puts(b, ",\"usage\":null")) ||
                 realm_buf_puts(b, "}\n\n");
        i++;
    }
    cJSON_Delete(calls);
    return rc;
}

/* The non-streamed response of n > 1 choices (no logprobs or tool calls: refused with n > 1). */
static int response_choices(struct realm_buf *b, const struct srv_job *j) {
    bool chat = j->req.kind == SRV_CHAT;
    struct realm_buf t = {0};
    int rc = head_json(b, j, chat ? "chat.completion" : "text_completion") ||
             realm_buf_puts(b, ",\"choices\":[");
    for (int32_t i = 0; i < j->req.n && !rc; i++) {
        realm_buf_reset(&t);
        rc = choice_text(j, i, &t) || (i && realm_buf_puts(b, ","));
        if (chat)
            rc = rc ||
                 realm_buf_printf(
                     b, "{\"index\":%d,\"message\":{\"role\":\"assistant\",\"content\":", i) ||
                 realm_buf_json_string(b, t.data ? t.data : "", t.len) ||
                 realm_buf_puts(b, ",\"refusal\":null}");
        else
            rc = rc || realm_buf_puts(b, "{\"text\":") ||
                 realm_buf_json_string(b, t.data ? t.data : "", t.len) ||
                 realm_buf_printf(b, ",\"index\":%d", i);
        rc = rc || realm_buf_printf(b, ",\"logprobs\":null,\"finish_reason\":\"%s\"}",
                                    choice_finish_text(j, i));
    }
    realm_buf_free(&t);
    return rc || realm_buf_puts(b, "],\"usage\":") || usage_json(b, j) || realm_buf_puts(b, "}\n");
}

int srv_openai_response(struct realm_buf *b, const struct srv_job *j) {
    if (j->req.n > 1) return response_choices(b, j);
    const char *text = j->pending.data ? j->pending.data : "";
    size_t n = j->pending.len;
    int64_t off = 0;
    int rc;
    if (j->req.kind == SRV_CHAT)
        rc =
            head_json(b, j, "chat.completion") ||
            realm_buf_puts(
                b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":") ||
            (j->tool_calls && n == 0 ? realm_buf_puts(b, "null")
                                     : realm_buf_json_string(b, text, n)) ||
            (j->tool_calls && tool_calls_json(b, j)) || realm_buf_puts(b, ",\"refusal\":null}") ||
            logprobs_json(b, j, 0, j->lp_len, &off) ||
            realm_buf_printf(b, ",\"finish_reason\":\"%s\"}],\"usage\":", finish_text(j));
    else
        rc = head_json(b, j, "text_completion") || realm_buf_puts(b, ",\"choices\":[{\"text\":") ||
             realm_buf_json_string(b, text, n) || realm_buf_puts(b, ",\"index\":0") ||
             logprobs_json(b, j, 0, j->lp_len, &off) ||
             realm_buf_printf(b, ",\"finish_reason\":\"%s\"}],\"usage\":", finish_text(j));
    return rc || usage_json(b, j) || realm_buf_puts(b, "}\n");
}

/* One SSE event of choice `index` (see srv_openai_chunk). */
static int choice_chunk(struct realm_buf *b, struct srv_job *j, int32_t index, const char *text,
                        size_t n, const char *finish, bool role) {
    bool chat = j->req.kind == SRV_CHAT;
    /* the records the guest made since the last chunk go with this one (the role chunk has none) */
    size_t from = j->lp_sent, to = role ? from : j->lp_len;
    j->lp_sent = to;
    int rc = realm_buf_puts(b, "data: ") ||
             head_json(b, j, chat ? "chat.completion.chunk" : "text_completion");
    if (chat) {
        rc = rc || realm_buf_printf(b, ",\"choices\":[{\"index\":%d,\"delta\":{", index);
        if (role)
            rc = rc || realm_buf_puts(b, "\"role\":\"assistant\",\"content\":\"\"");
        else if (!finish)
            rc = rc || realm_buf_puts(b, "\"content\":") || realm_buf_json_string(b, text, n);
        rc = rc || realm_buf_puts(b, "}");
    } else {
        rc = rc || realm_buf_puts(b, ",\"choices\":[{\"text\":") ||
             realm_buf_json_string(b, finish ? "" : text, finish ? 0 : n) ||
             realm_buf_printf(b, ",\"index\":%d", index);
    }
    rc = rc ||
         (role || (finish && from == to) ? realm_buf_puts(b, ",\"logprobs\":null")
                                         : logprobs_json(b, j, from, to, &j->lp_text_off)) ||
         realm_buf_puts(b, ",\"finish_reason\":");
    rc = rc || (finish ? realm_buf_printf(b, "\"%s\"", finish) : realm_buf_puts(b, "null")) ||
         realm_buf_puts(b, "}]");
    if (j->req.include_usage) rc = rc || realm_buf_puts(b, ",\"usage\":null");
    return rc || realm_buf_puts(b, "}\n\n");
}

int srv_openai_chunk(struct realm_buf *b, struct srv_job *j, const char *text, size_t n,
                     const char *finish, bool role) {
    if (j->req.n <= 1) return choice_chunk(b, j, 0, text, n, finish, role);
    int rc = 0;
    if (role || finish) {
        for (int32_t i = 0; i < j->req.n && !rc; i++)
            rc = choice_chunk(b, j, i, NULL, 0, finish, role);
        return rc;
    }
    size_t off = 0, len;
    int32_t c;
    const char *t;
    while (!rc && choice_record_next(text, n, &off, &c, &t, &len))
        rc = choice_chunk(b, j, c, t, len, NULL, false);
    return rc;
}

int srv_openai_trailer(struct realm_buf *b, struct srv_job *j) {
    int rc = 0;
    const struct srv_gen_result *r = &j->result;
    if (r->status != REALM_OK && r->status != REALM_E_CONTEXT_FULL) {
        struct srv_error e;
        srv_openai_error(j, &e);
        size_t len;
        char *body = srv_error_json(&e, &len);
        if (!body) return REALM_E_NOMEM;
        rc = realm_buf_puts(b, "data: ") || realm_buf_append(b, body, len) ||
             realm_buf_puts(b, "\n\n");
        realm_free(body);
        return rc || realm_buf_puts(b, "data: [DONE]\n\n");
    }
    if (j->tool_calls) rc = tool_call_chunks(b, j);
    for (int32_t i = 0; i < (j->req.n > 1 ? j->req.n : 1) && !rc;
         i++) /* each choice's own final chunk */
        rc = choice_chunk(b, j, i, NULL, 0, choice_finish_text(j, i), false);
    if (j->req.include_usage) {
        bool chat = j->req.kind == SRV_CHAT;
        rc = rc || realm_buf_puts(b, "data: ") ||
             head_json(b, j, chat ? "chat.completion.chunk" : "text_completion") ||
             realm_buf_puts(b, ",\"choices\":[],\"usage\":") || usage_json(b, j) ||
             realm_buf_puts(b, "}\n\n");
    }
    return rc || realm_buf_puts(b, "data: [DONE]\n\n");
}

int srv_openai_model(struct realm_buf *b, const struct realm_model_spec *m, int64_t created) {
    return realm_buf_puts(b, "{\"id\":") || realm_buf_json_string(b, m->name, strlen(m->name)) ||
           realm_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"realm\"}",
                            (long long)created);
}

/* ---- /tokenize and /detokenize (llama-server's shapes, plus an optional "model") ---- */

/* Unknown fields are refused, not ignored. */
static int only_fields(const cJSON *root, const char *const *known, struct srv_error *e) {
    const cJSON *f;
    cJSON_ArrayForEach(f, root) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = !strcmp(f->string, known[i]);
        if (!ok)
            return bad(e, f->string, "Unrecognized request argument supplied: '%s'.", f->string),
                   -1;
    }
    return 0;
}

/* The request's "model", or the first configured model the tenant may use. */
static int pick_model(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                      const cJSON *root, size_t *out, struct srv_error *e) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) return bad(e, "model", "'%s' must be a string.", "model"), -1;
        return find_model(cfg, t, model->valuestring, out, e);
    }
    for (size_t i = 0; i < cfg->n_models; i++)
        if (realm_tenant_may_use(t, cfg->models[i].name)) {
            *out = i;
            return 0;
        }
    return srv_error_set(e, 403, "permission_error", "model_not_allowed", "model",
                         "Your API key does not have access to any model."),
           -1;
}

/* One token's piece: a string when it is valid UTF-8 on its own, else its bytes (as llama-server).
 */
static int piece_json(struct realm_buf *b, const struct realm_tokenizer *tok, int32_t id) {
    char small[256];
    size_t n = 0;
    char *p = piece_of(tok, id, small, sizeof small, &n);
    if (!p) return REALM_E_NOMEM; /* ids were checked against the vocabulary: only memory fails */
    int rc = realm_buf_printf(b, "{\"id\":%d,\"piece\":", (int)id) ||
             (realm_utf8_valid((const unsigned char *)p, n) ? realm_buf_json_string(b, p, n)
                                                            : bytes_json(b, p, n));
    if (p != small) realm_free(p);
    return rc || realm_buf_puts(b, "}");
}

static int tokenize_body(const cJSON *root, const struct realm_tokenizer *tok,
                         struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"model",         "content",     "add_special",
                                        "parse_special", "with_pieces", NULL};
    if (only_fields(root, known, e)) return -1;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!content) return bad(e, "content", "Missing required parameter: '%s'.", "content"), -1;
    if (!cJSON_IsString(content)) return bad(e, "content", "'%s' must be a string.", "content"), -1;
    bool add_special = false, parse_special = true, with_pieces = false;
    if (opt_bool(root, "add_special", &add_special, e) ||
        opt_bool(root, "parse_special", &parse_special, e) ||
        opt_bool(root, "with_pieces", &with_pieces, e))
        return -1;
    uint32_t flags = (add_special ? REALM_TOKENIZE_ADD_BOS : 0) |
                     (parse_special ? REALM_TOKENIZE_PARSE_SPECIAL : 0);
    size_t len = strlen(content->valuestring);
    int64_t n = 0;
    int rc = realm_tokenize(tok, content->valuestring, len, flags, NULL, 0, &n);
    int32_t *ids = NULL;
    if (rc == REALM_E_TOO_SMALL) {
        if (!(ids = realm_malloc((size_t)n * sizeof *ids)))
            rc = REALM_E_NOMEM;
        else
            rc = realm_tokenize(tok, content->valuestring, len, flags, ids, n, &n);
    }
    if (rc == REALM_OK) {
        rc = realm_buf_puts(out, "{\"tokens\":[");
        for (int64_t i = 0; i < n && !rc; i++) {
            rc = i ? realm_buf_puts(out, ",") : 0;
            rc = rc || (with_pieces ? piece_json(out, tok, ids[i])
                                    : realm_buf_printf(out, "%d", (int)ids[i]));
        }
        rc = rc || realm_buf_puts(out, "]}\n");
    }
    realm_free(ids);
    if (rc)
        return srv_error_set(e, 500, "server_error", NULL, NULL, "tokenize failed: %s",
                             realm_strerror(rc)),
               -1;
    return 0;
}

static int detokenize_body(const cJSON *root, const struct realm_tokenizer *tok,
                           struct realm_buf *out, struct srv_error *e) {
    static const char *const known[] = {"model", "tokens", NULL};
    if (only_fields(root, known, e)) return -1;
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    if (!tokens) return bad(e, "tokens", "Missing required parameter: '%s'.", "tokens"), -1;
    if (!cJSON_IsArray(tokens))
        return bad(e, "tokens", "'%s' must be an array of token ids.", "tokens"), -1;
    int32_t n_vocab = realm_tokenizer_n_vocab(tok);
    const cJSON *v;
    cJSON_ArrayForEach(v, tokens) {
        if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
            v->valuedouble < 0 || v->valuedouble >= n_vocab)
            return srv_error_set(e, 400, INVALID, NULL, "tokens",
                                 "'tokens' must hold token ids in [0, %d).", (int)n_vocab),
                   -1;
    }
    /* the whole sequence through the streaming detokenizer: valid UTF-8 out, as generation emits */
    struct realm_buf text = {0};
    struct realm_detok d;
    realm_detok_init(&d, tok, true);
    char piece[1024];
    int rc = 0;
    cJSON_ArrayForEach(v, tokens) {
        int64_t k = realm_detok_push(&d, (int32_t)v->valuedouble, piece, sizeof piece);
        if (k < 0 || (rc = realm_buf_append(&text, piece, (size_t)k))) {
            rc = k < 0 ? (int)k : rc;
            break;
        }
    }
    if (!rc) {
        int64_t k = realm_detok_flush(&d, piece, sizeof piece);
        rc = k < 0 ? (int)k : realm_buf_append(&text, piece, (size_t)k);
    }
    rc = rc || realm_buf_puts(out, "{\"content\":") ||
         realm_buf_json_string(out, text.data ? text.data : "", text.len) ||
         realm_buf_puts(out, "}\n");
    realm_buf_free(&text);
    if (rc)
        return srv_error_set(e, 500, "server_error", NULL, NULL, "detokenize failed: %s",
                             realm_strerror(rc)),
               -1;
    return 0;
}

int srv_tokenize(const struct realm_server_config *cfg, const struct realm_tenant_spec *t,
                 const struct realm_tokenizer *(*tok_of)(void *ctx, size_t model), void *ctx,
                 bool detokenize, const char *body, size_t len, struct realm_buf *out,
                 struct srv_error *e) {
    cJSON *root = parse_body(body, len, e);
    if (!root) return -1;
    size_t model = 0;
    int rc = pick_model(cfg, t, root, &model, e);
    if (!rc) {
        const struct realm_tokenizer *tok = tok_of(ctx, model);
        rc = detokenize ? detokenize_body(root, tok, out, e) : tokenize_body(root, tok, out, e);
    }
    cJSON_Delete(root);
    return rc;
}
