/*
 * template.c — the public entry points that own a parsed template (render.c renders it).
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/template.h"
#include "template/tpl.h"

int realm_template_parse(const char *src, size_t len, struct realm_template **out,
                         struct realm_err *err) {
    if (out) *out = NULL;
    if (!out || (!src && len))
        return realm_err_set(err, REALM_E_INVALID, "template: parse: NULL argument");
    struct realm_template *t = realm_calloc(1, sizeof *t);
    if (!t) return realm_err_set(err, REALM_E_NOMEM, "template: out of memory");
    int rc = tpl_parse(t, src ? src : "", len, err);
    if (rc != REALM_OK) {
        realm_template_free(t);
        return rc;
    }
    *out = t;
    return REALM_OK;
}

void realm_template_free(struct realm_template *t) {
    if (!t) return;
    tpl_arena_free(&t->arena);
    realm_free(t);
}

/* Adds item (NULL: a failed allocation) to obj; on failure frees item and returns false. */
static bool add(cJSON *obj, const char *key, cJSON *item) {
    if (!item) return false;
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

int realm_template_chat_vars(const cJSON *messages, const cJSON *tools, bool add_generation_prompt,
                             const char *bos, const char *eos, const cJSON *extra, cJSON **out,
                             struct realm_err *err) {
    if (out) *out = NULL;
    if (!out || !cJSON_IsArray(messages))
        return realm_err_set(err, REALM_E_INVALID, "template: messages must be a JSON array");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return realm_err_set(err, REALM_E_INVALID, "template: tools must be a JSON array");
    if (extra && !cJSON_IsObject(extra))
        return realm_err_set(err, REALM_E_INVALID,
                             "template: extra variables must be a JSON object");
    cJSON *v = cJSON_CreateObject();
    bool ok = v && add(v, "messages", cJSON_Duplicate(messages, true)) &&
              add(v, "tools", tools ? cJSON_Duplicate(tools, true) : cJSON_CreateNull()) &&
              add(v, "add_generation_prompt", cJSON_CreateBool(add_generation_prompt)) &&
              add(v, "bos_token", cJSON_CreateString(bos ? bos : "")) &&
              add(v, "eos_token", cJSON_CreateString(eos ? eos : ""));
    for (const cJSON *e = extra ? extra->child : NULL; ok && e; e = e->next) {
        if (!e->string || !strcmp(e->string, "messages")) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(v, e->string);
        ok = add(v, e->string, cJSON_Duplicate(e, true));
    }
    if (!ok) {
        cJSON_Delete(v);
        return realm_err_set(err, REALM_E_NOMEM, "template: out of memory");
    }
    *out = v;
    return REALM_OK;
}
