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

#include "realm/alloc.h"
#include "realm/status.h"
#include "server/srv.h"

#define MAX_STOP 16
#define MAX_STOP_LEN 256 /* the default guest's limit */
#define MAX_LOGIT_BIAS 1024
#define INVALID "invalid_request_error"

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
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' is %g; it must be between %g and %g.", key,
                             v->valuedouble, lo, hi);
    *out = v;
    return 0;
}

/* An optional integer field in [lo, hi]. */
static int opt_int(const cJSON *root, const char *key, double lo, double hi, const cJSON **out, struct srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' must be an integer.", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return srv_error_set(e, 400, INVALID, NULL, key, "'%s' is %.0f; it must be between %.0f and %.0f.", key,
                             v->valuedouble, lo, hi);
    *out = v;
    return 0;
}

static int opt_bool(const cJSON *root, const char *key, bool *out, struct srv_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) return srv_error_set(e, 400, INVALID, NULL, key, "'%s' must be a boolean.", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Message content: a string, null, or an array of {"type": "text", "text": ...} parts
 * (concatenated). Appends the text to b. */
static int content_text(const cJSON *c, int i, struct srv_buf *b, struct srv_error *e) {
    if (!c || cJSON_IsNull(c)) return 0;
    if (cJSON_IsString(c)) return srv_buf_puts(b, c->valuestring) ? srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory") : 0;
    if (!cJSON_IsArray(c))
        return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d].content must be a string or an array of text parts.", i);
    for (const cJSON *p = c->child; p; p = p->next) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(type))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d].content: each part must be an object with a \"type\".", i);
        if (strcmp(type->valuestring, "text"))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d].content: part type '%.64s' is not supported (text only).",
                                 i, type->valuestring);
        if (!cJSON_IsString(text))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d].content: a text part needs a string \"text\".", i);
        if (srv_buf_puts(b, text->valuestring)) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

static int parse_messages(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs || cJSON_IsNull(msgs)) return bad(e, "messages", "Missing required parameter: '%s'.", "messages");
    if (!cJSON_IsArray(msgs)) return bad(e, "messages", "'%s' must be an array of message objects.", "messages");
    if (!msgs->child) return bad(e, "messages", "'%s' must contain at least one message.", "messages");
    cJSON *arr = cJSON_AddArrayToObject(out, "messages");
    if (!arr) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    int i = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, i++) {
        if (!cJSON_IsObject(m))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d] must be an object.", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d].role must be a string.", i);
        const char *r = role->valuestring;
        if (!strcmp(r, "developer")) r = "system"; /* OpenAI's newer name for the system role */
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return srv_error_set(e, 400, INVALID, NULL, "messages",
                                 "messages[%d].role '%.64s' is not supported (system, developer, user, assistant).", i,
                                 role->valuestring);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!content && strcmp(r, "assistant"))
            return srv_error_set(e, 400, INVALID, NULL, "messages", "messages[%d] is missing 'content'.", i);
        struct srv_buf text = {0};
        if (content_text(content, i, &text, e)) {
            srv_buf_free(&text);
            return -1;
        }
        cJSON *o = cJSON_CreateObject();
        bool ok = o && cJSON_AddStringToObject(o, "role", r) &&
                  cJSON_AddStringToObject(o, "content", text.data ? text.data : "") && cJSON_AddItemToArray(arr, o);
        srv_buf_free(&text);
        if (!ok) {
            cJSON_Delete(o);
            return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        }
    }
    return 0;
}

static int parse_prompt(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p)) return bad(e, "prompt", "Missing required parameter: '%s'.", "prompt");
    const char *text = NULL;
    if (cJSON_IsString(p)) text = p->valuestring;
    else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) text = p->child->valuestring;
    else if (cJSON_IsArray(p))
        return bad(e, "prompt", "'%s' must be a string or an array of one string (batches and token arrays are not supported).",
                   "prompt");
    else return bad(e, "prompt", "'%s' must be a string.", "prompt");
    if (!cJSON_AddStringToObject(out, "prompt", text)) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

static int parse_stop(const cJSON *root, cJSON *out, struct srv_error *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 0;
    cJSON *arr = cJSON_AddArrayToObject(out, "stop");
    if (!arr) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    int n = 0;
    const cJSON *single = cJSON_IsString(s) ? s : NULL;
    if (!single && !cJSON_IsArray(s)) return bad(e, "stop", "'%s' must be a string or an array of strings.", "stop");
    for (const cJSON *it = single ? single : s->child; it; it = single ? NULL : it->next) {
        if (!cJSON_IsString(it)) return bad(e, "stop", "'%s' must be a string or an array of strings.", "stop");
        size_t len = strlen(it->valuestring);
        if (len == 0) continue;
        if (len > MAX_STOP_LEN) return bad(e, "stop", "'%s' sequences are limited to 256 bytes each.", "stop");
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
        return bad(e, "logit_bias", "'%s' must be an object mapping token ids to numbers.", "logit_bias");
    cJSON *o = cJSON_AddObjectToObject(out, "logit_bias");
    if (!o) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    int n = 0;
    for (const cJSON *it = lb->child; it; it = it->next) {
        const char *k = it->string;
        char *end = NULL;
        long id = strtol(k, &end, 10);
        if (!k[0] || *end || id < 0 || id > INT32_MAX || k[0] == '+' || k[0] == ' ')
            return srv_error_set(e, 400, INVALID, NULL, "logit_bias", "logit_bias key '%.32s' is not a token id.", k);
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= -100 && it->valuedouble <= 100))
            return srv_error_set(e, 400, INVALID, NULL, "logit_bias", "logit_bias[%.32s] must be a number between -100 and 100.", k);
        if (++n > MAX_LOGIT_BIAS) return bad(e, "logit_bias", "'%s' may hold at most 1024 entries.", "logit_bias");
        char key[16];
        snprintf(key, sizeof key, "%ld", id);
        if (!cJSON_AddNumberToObject(o, key, it->valuedouble)) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

/* Copies a validated numeric field into the guest request. */
static int copy_num(cJSON *out, const char *key, const cJSON *v, struct srv_error *e) {
    if (!v) return 0;
    if (!cJSON_AddNumberToObject(out, key, v->valuedouble)) return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

static int find_model(const struct realm_server_config *cfg, const struct realm_tenant_spec *t, const char *name,
                      size_t *out, struct srv_error *e) {
    for (size_t i = 0; i < cfg->n_models; i++) {
        if (strcmp(cfg->models[i].name, name)) continue;
        bool ok = t->all_models;
        for (size_t j = 0; !ok && j < t->n_models; j++) ok = !strcmp(t->models[j], name);
        if (!ok)
            return srv_error_set(e, 403, "permission_error", "model_not_allowed", "model",
                                 "Your API key does not have access to the model '%.200s'.", name);
        *out = i;
        return 0;
    }
    return srv_error_set(e, 404, INVALID, "model_not_found", "model", "The model '%.200s' does not exist.", name);
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

int srv_request_parse(const struct realm_server_config *cfg, const struct realm_tenant_spec *t, enum srv_kind kind,
                      const char *body, size_t len, struct srv_request *out, struct srv_error *e) {
    cJSON *root = NULL;
    cJSON *g = NULL;
    int rc = -1;
    /* cJSON ends its strings at the first NUL: "a\u0000b" would silently become "a" */
    if (json_has_nul_escape(body, len)) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "Strings in the request may not contain the NUL character (\\u0000).");
        goto done;
    }
    root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root)) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "We could not parse the JSON body of your request: expected a JSON object.");
        goto done;
    }
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
    if ((kind == SRV_CHAT ? parse_messages(root, g, e) : parse_prompt(root, g, e))) goto done;

    /* n = 1 only; the features we do not have are refused rather than silently ignored */
    const cJSON *n, *mt, *mct, *bo;
    if (opt_int(root, "n", -1e9, 1e9, &n, e)) goto done;
    if (n && n->valuedouble != 1) {
        srv_error_set(e, 400, INVALID, NULL, "n", "Only n=1 is supported (got %.0f).", n->valuedouble);
        goto done;
    }
    if (opt_int(root, "best_of", -1e9, 1e9, &bo, e)) goto done;
    if (bo && bo->valuedouble != 1) {
        bad(e, "best_of", "Only %s=1 is supported.", "best_of");
        goto done;
    }
    bool logprobs = false, echo = false;
    if (opt_bool(root, "stream", &r.stream, e) || opt_bool(root, "echo", &echo, e)) goto done;
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (lp && !cJSON_IsNull(lp)) {
        if (cJSON_IsBool(lp)) logprobs = cJSON_IsTrue(lp);
        else if (cJSON_IsNumber(lp)) logprobs = lp->valuedouble != 0;
        else {
            bad(e, "logprobs", "'%s' must be a boolean (or an integer for completions).", "logprobs");
            goto done;
        }
    }
    if (logprobs) {
        bad(e, "logprobs", "'%s' is not supported by this server.", "logprobs");
        goto done;
    }
    if (echo) {
        bad(e, "echo", "'%s' is not supported by this server.", "echo");
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
            srv_error_set(e, 400, INVALID, NULL, mct ? "max_completion_tokens" : "max_tokens",
                          "max_tokens is %.0f but this API key allows at most %d tokens per request.", mt->valuedouble,
                          cap);
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

    const cJSON *temp, *top_p, *top_k, *min_p, *rep, *pres, *freq, *seed;
    if (opt_number(root, "temperature", 0, 2, &temp, e) || opt_number(root, "top_p", 0, 1, &top_p, e) ||
        opt_int(root, "top_k", 0, INT32_MAX, &top_k, e) || opt_number(root, "min_p", 0, 1, &min_p, e) ||
        opt_number(root, "repeat_penalty", 0.01, 100, &rep, e) ||
        opt_number(root, "presence_penalty", -2, 2, &pres, e) || opt_number(root, "frequency_penalty", -2, 2, &freq, e) ||
        opt_int(root, "seed", -9223372036854775808.0, 18446744073709551615.0, &seed, e))
        goto done;
    if (copy_num(g, "temperature", temp, e) || copy_num(g, "top_p", top_p, e) || copy_num(g, "top_k", top_k, e) ||
        copy_num(g, "min_p", min_p, e) || copy_num(g, "repeat_penalty", rep, e) ||
        copy_num(g, "presence_penalty", pres, e) || copy_num(g, "frequency_penalty", freq, e))
        goto done;
    if (seed) {
        /* OpenAI takes any 64-bit integer; guests get it folded into [0, 2^53) so that it is exact
         * in a JSON double (negative seeds as their two's complement) */
        double sd = seed->valuedouble;
        uint64_t u = sd < 0 ? (uint64_t)(int64_t)sd : sd >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)sd;
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
            bad(e, "parse_special", "'%s' applies to completions only: chat message content is never parsed for "
                "special tokens.", "parse_special");
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
