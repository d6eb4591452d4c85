/*
 * messages.c — the one reader of a chat request's "messages" array (OpenAI's shape), shared by
 * the server's request validation (src/server/openai.c) and the chat_format / chat_tokenize
 * imports (src/sandbox/imports.c), so that both accept and refuse exactly the same messages.
 *
 * Owns nothing but the joined text of content parts. Thread-safe.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/tokenizer.h"

void realm_chat_messages_free(struct realm_chat_messages *m) {
    if (!m) return;
    if (m->owned)
        for (size_t i = 0; i < m->n; i++)
            realm_free(m->owned[i]);
    realm_free(m->owned);
    realm_free(m->msgs);
    memset(m, 0, sizeof *m);
}

/* Content given as an array of text parts, joined into a new string (*out). */
static int join_parts(const cJSON *c, int i, char **out, size_t *len, struct realm_err *err) {
    size_t total = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p))
            return realm_err_set(err, REALM_E_INVALID,
                                 "messages[%d].content: each part must be an object", i);
        if (type && !cJSON_IsNull(type) &&
            (!cJSON_IsString(type) || strcmp(type->valuestring, "text")))
            return realm_err_set(
                err, REALM_E_INVALID,
                "messages[%d].content: part type '%.64s' is not supported (text only)", i,
                cJSON_IsString(type) ? type->valuestring : "?");
        if (!cJSON_IsString(text))
            return realm_err_set(err, REALM_E_INVALID,
                                 "messages[%d].content: a text part needs a string \"text\"", i);
        total += strlen(text->valuestring);
    }
    char *buf = realm_malloc(total + 1);
    if (!buf) return realm_err_set(err, REALM_E_NOMEM, "messages: out of memory");
    size_t off = 0;
    cJSON_ArrayForEach(p, c) {
        const char *s = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t n = strlen(s);
        memcpy(buf + off, s, n);
        off += n;
    }
    buf[off] = 0;
    *out = buf;
    *len = off;
    return REALM_OK;
}

/* OpenAI's assistant tool_calls: [{"id"?, "type"?: "function", "function": {"name", "arguments"}}].
 */
static int check_tool_calls(const cJSON *tc, int i, struct realm_err *err) {
    if (!cJSON_IsArray(tc))
        return realm_err_set(err, REALM_E_INVALID, "messages[%d].tool_calls must be an array", i);
    int k = 0;
    for (const cJSON *c = tc->child; c; c = c->next, k++) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(c) || (id && !cJSON_IsNull(id) && !cJSON_IsString(id)) ||
            (type && !cJSON_IsNull(type) &&
             (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))))
            return realm_err_set(
                err, REALM_E_INVALID,
                "messages[%d].tool_calls[%d] must be an object with an optional string \"id\" and "
                "\"type\": \"function\"",
                i, k);
        if (!cJSON_IsObject(fn) || !cJSON_IsString(name) ||
            !(cJSON_IsString(args) || cJSON_IsObject(args)))
            return realm_err_set(
                err, REALM_E_INVALID,
                "messages[%d].tool_calls[%d].function needs a string \"name\" and \"arguments\" "
                "(a JSON string or an object)",
                i, k);
    }
    return REALM_OK;
}

static bool is_role(const char *r, const char *want) {
    return !strcmp(r, want);
}

/* One message; fills *m (pointing into o or *owned). */
static int read_one(const cJSON *o, int i, uint32_t flags, struct realm_chat_msg *m, char **owned,
                    struct realm_err *err) {
    bool openai = flags & REALM_CHAT_MSGS_OPENAI;
    if (!cJSON_IsObject(o))
        return realm_err_set(err, REALM_E_INVALID, "messages[%d] must be an object", i);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(o, "role");
    if (!cJSON_IsString(role))
        return realm_err_set(err, REALM_E_INVALID, "messages[%d].role must be a string", i);
    const char *r = role->valuestring;
    if (openai) {
        if (is_role(r, "developer")) r = "system"; /* OpenAI's newer name for the system role */
        if (!is_role(r, "system") && !is_role(r, "user") && !is_role(r, "assistant") &&
            !is_role(r, "tool"))
            return realm_err_set(err, REALM_E_INVALID,
                                 "messages[%d].role '%.64s' is not supported (system, developer, "
                                 "user, assistant, tool)",
                                 i, role->valuestring);
    }
    m->role = r;
    m->role_len = strlen(r);

    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(o, "tool_calls");
    if (tc && cJSON_IsNull(tc)) tc = NULL;
    if (tc && cJSON_IsArray(tc) && !tc->child) tc = NULL; /* [] is no calls */
    if (!c && openai && !is_role(r, "assistant"))
        return realm_err_set(err, REALM_E_INVALID, "messages[%d] is missing 'content'", i);
    if (!c || cJSON_IsNull(c)) {
        m->content = "";
        m->content_len = 0;
    } else if (cJSON_IsString(c)) {
        m->content = c->valuestring;
        m->content_len = strlen(c->valuestring);
    } else if (cJSON_IsArray(c)) {
        int rc = join_parts(c, i, owned, &m->content_len, err);
        if (rc) return rc;
        m->content = *owned;
    } else {
        return realm_err_set(
            err, REALM_E_INVALID,
            "messages[%d].content must be a string, null or an array of text parts", i);
    }

    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (name && !cJSON_IsNull(name)) {
        if (!cJSON_IsString(name))
            return realm_err_set(err, REALM_E_INVALID, "messages[%d].name must be a string", i);
        m->name = name->valuestring;
    }
    if (tc) {
        if (!is_role(r, "assistant"))
            return realm_err_set(
                err, REALM_E_INVALID,
                "messages[%d].tool_calls: only assistant messages carry tool calls", i);
        int rc = check_tool_calls(tc, i, err);
        if (rc) return rc;
        m->tool_calls = tc;
    }
    const cJSON *tid = cJSON_GetObjectItemCaseSensitive(o, "tool_call_id");
    if (tid && !cJSON_IsNull(tid)) {
        if (!cJSON_IsString(tid))
            return realm_err_set(err, REALM_E_INVALID, "messages[%d].tool_call_id must be a string",
                                 i);
        m->tool_call_id = tid->valuestring;
    } else if (openai && is_role(r, "tool")) {
        return realm_err_set(err, REALM_E_INVALID,
                             "messages[%d]: a tool message needs a string 'tool_call_id'", i);
    }
    return REALM_OK;
}

int realm_chat_messages_read(const cJSON *arr, uint32_t flags, struct realm_chat_messages *out,
                             struct realm_err *err) {
    if (!out) return realm_err_set(err, REALM_E_INVALID, "messages: NULL output");
    memset(out, 0, sizeof *out);
    if (!cJSON_IsArray(arr))
        return realm_err_set(err, REALM_E_INVALID, "messages must be an array of message objects");
    int n = cJSON_GetArraySize(arr);
    size_t cap = n > 0 ? (size_t)n : 1;
    out->msgs = realm_calloc(cap, sizeof *out->msgs);
    out->owned = realm_calloc(cap, sizeof *out->owned);
    if (!out->msgs || !out->owned) {
        realm_chat_messages_free(out);
        return realm_err_set(err, REALM_E_NOMEM, "messages: out of memory");
    }
    out->n = (size_t)n;
    int i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        int rc = read_one(o, i, flags, &out->msgs[i], &out->owned[i], err);
        if (rc) {
            realm_chat_messages_free(out);
            return rc;
        }
    }
    return REALM_OK;
}
