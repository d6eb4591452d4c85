/*
 * spin.c — Spin's remote LLM protocol, inference half (embed.h): POST /infer's body becomes the
 * /v1/completions request it means, which then runs through the tenant's guest exactly as a
 * completion does (admission, limits, accounting); the finished job's text and usage go back in
 * Spin's shape. Spin (crates/llm-remote-http) always sends every option, camelCase.
 *
 * Owns nothing past a call. Thread rule: stateless.
 */
#include <string.h>

#include <cjson/cJSON.h>

#include "realm/alloc.h"
#include "realm/json.h"
#include "realm/status.h"
#include "server/embed.h"
#include "server/srv.h"

#define INVALID "invalid_request_error"
#define MAX_VALUES 1024 /* a Spin body has about ten */

/* Spin's option name → the completion field it sets. */
static const char *const g_options[][2] = {
    {"maxTokens", "max_tokens"},
    {"repeatPenalty", "repeat_penalty"},
    {"repeatPenaltyLastNTokenCount", "repeat_last_n"},
    {"temperature", "temperature"},
    {"topK", "top_k"},
    {"topP", "top_p"},
};
#define N_OPTIONS (sizeof g_options / sizeof g_options[0])

static int map_options(const cJSON *opts, cJSON *out, struct srv_error *e) {
    if (!opts || cJSON_IsNull(opts)) return 0;
    if (!cJSON_IsObject(opts))
        return srv_error_set(e, 400, INVALID, NULL, "options", "'options' must be an object.");
    const cJSON *o;
    cJSON_ArrayForEach(o, opts) {
        size_t k = 0;
        while (k < N_OPTIONS && strcmp(o->string, g_options[k][0]))
            k++;
        if (k == N_OPTIONS)
            return srv_error_set(e, 400, INVALID, NULL, o->string,
                                 "Unrecognized option supplied: '%.64s'.", o->string);
        if (cJSON_IsNull(o)) continue;
        if (!cJSON_IsNumber(o))
            return srv_error_set(e, 400, INVALID, NULL, o->string,
                                 "Option '%.64s' must be a number.", o->string);
        /* maxTokens 0 means "no limit given": the server's default applies */
        if (k == 0 && o->valuedouble == 0) continue;
        if (!cJSON_AddNumberToObject(out, g_options[k][1], o->valuedouble))
            return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    return 0;
}

int srv_spin_infer_body(const char *body, size_t len, struct realm_buf *out, struct srv_error *e) {
    /* cJSON would end a string at \u0000 and the prompt would be cut silently */
    if (memchr(body, '\0', len) || memmem(body, len, "\\u0000", 6) ||
        realm_json_values_bound(body, len, MAX_VALUES) > MAX_VALUES)
        return srv_error_set(e, 400, INVALID, NULL, NULL,
                             "We could not parse the JSON body of your request.");
    cJSON *root = cJSON_ParseWithLength(body, len), *c = NULL;
    int rc = -1;
    if (!root || !cJSON_IsObject(root)) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "We could not parse the JSON body of your request: expected a JSON object.");
        goto done;
    }
    const cJSON *f;
    cJSON_ArrayForEach(f, root) {
        if (strcmp(f->string, "model") && strcmp(f->string, "prompt") &&
            strcmp(f->string, "options")) {
            srv_error_set(e, 400, INVALID, NULL, f->string,
                          "Unrecognized request argument supplied: '%.64s'.", f->string);
            goto done;
        }
    }
    /* model and prompt are copied as sent: the completion parser checks them (and names them in
     * its errors) */
    c = cJSON_CreateObject();
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!c || (model && !cJSON_AddItemToObject(c, "model", cJSON_Duplicate(model, true))) ||
        (prompt && !cJSON_AddItemToObject(c, "prompt", cJSON_Duplicate(prompt, true)))) {
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    if (map_options(cJSON_GetObjectItemCaseSensitive(root, "options"), c, e)) goto done;
    char *printed = cJSON_PrintUnformatted(c);
    if (!printed || realm_buf_puts(out, printed)) {
        cJSON_free(printed);
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    cJSON_free(printed);
    rc = 0;
done:
    cJSON_Delete(c);
    cJSON_Delete(root);
    return rc;
}

int srv_spin_infer_response(struct realm_buf *b, const struct srv_job *j) {
    const long long p = j->result.prompt_tokens > 0 ? (long long)j->result.prompt_tokens : 0;
    const long long g =
        j->result.completion_tokens > 0 ? (long long)j->result.completion_tokens : 0;
    int rc = realm_buf_puts(b, "{\"text\":");
    if (!rc) rc = realm_buf_json_string(b, j->pending.data ? j->pending.data : "", j->pending.len);
    if (!rc)
        rc = realm_buf_printf(
            b, ",\"usage\":{\"promptTokenCount\":%lld,\"generatedTokenCount\":%lld}}", p, g);
    return rc;
}
