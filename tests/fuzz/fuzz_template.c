/*
 * fuzz_template.c — libFuzzer target for the Jinja chat-template parser and renderer: any bytes
 * are parsed as a template and, when they parse, rendered with a fixed chat (system, user,
 * assistant with a tool call, tool result, tools, unicode) under small limits.
 * Checks: no crash, leak or sanitizer report; every failure is a status with a message naming a
 * position; a success returns a NUL-terminated output within the output limit; rendering twice
 * gives the same bytes (the template is not modified by a render).
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/alloc.h"
#include "realm/template.h"
#include "tokenizer/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_vars_json[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are helpful.\"},"
    "{\"role\": \"user\", \"content\": \"Gr\xc3\xbc\xc3\x9f"
    "e <think>x</think>\"},"
    "{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"c1\", \"type\": "
    "\"function\","
    " \"function\": {\"name\": \"get\", \"arguments\": {\"city\": \"Paris\", \"n\": 2.5}}}]},"
    "{\"role\": \"tool\", \"content\": \"{\\\"t\\\": 18}\"},"
    "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"part\"}]}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get\", \"parameters\": "
    "{\"type\": \"object\"}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"n\": 3}";

static void fail(const char *why) {
    fprintf(stderr, "fuzz_template: %s\n", why);
    abort();
}

/* The chat content-span mapper (tok_chat_map_spans) on the input split at NUL bytes into a
 * sentinel rendering, a real one and two slot texts (sentinels \x01 index \x02): no crash, and
 * spans that are sorted, disjoint, non-empty and inside the real text. */
static void run_map_spans(const uint8_t *data, size_t size) {
    const char *part[4] = {"", "", "", ""};
    size_t len[4] = {0, 0, 0, 0}, k = 0, start = 0;
    for (size_t i = 0; i <= size && k < 4; i++)
        if (i == size || data[i] == 0) {
            part[k] = (const char *)data + start;
            len[k++] = i - start;
            start = i + 1;
        }
    struct tok_slot slots[2] = {{part[2], len[2]}, {part[3], len[3]}};
    struct tok_span *sp = NULL;
    size_t n = 0;
    int rc =
        tok_chat_map_spans(part[0], len[0], part[1], len[1], "\x01", "\x02", slots, 2, &sp, &n);
    if (rc != REALM_OK) {
        if ((rc != REALM_E_FORMAT && rc != REALM_E_NOMEM) || sp || n)
            fail("map_spans failure with spans");
        return;
    }
    size_t end = 0;
    for (size_t i = 0; i < n; i++) {
        if (!sp[i].len || sp[i].off < end || sp[i].off + sp[i].len > len[1]) fail("bad span");
        end = sp[i].off + sp[i].len;
    }
    realm_free(sp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run_map_spans(data, size);
    static cJSON *vars;
    if (!vars && !(vars = cJSON_Parse(g_vars_json))) fail("bad vars");
    struct realm_template *t = NULL;
    struct realm_err err = {0};
    int rc = realm_template_parse((const char *)data, size, &t, &err);
    if (rc != REALM_OK) {
        if (t || err.code != rc || strncmp(err.msg, "template: ", 10))
            fail("parse failure without a message");
        return 0;
    }
    struct realm_template_limits lim = {
        .max_output = 1 << 16, .max_steps = 20000, .max_depth = 16, .max_memory = 8 << 20};
    char *out = NULL, *out2 = NULL;
    size_t n = 0, n2 = 0;
    rc = realm_template_render(t, vars, &lim, &out, &n, &err);
    if (rc == REALM_OK) {
        if (!out || n > lim.max_output || out[n] != 0) fail("bad output");
        if (realm_template_render(t, vars, &lim, &out2, &n2, &err) != REALM_OK)
            fail("second render failed");
        /* strftime_now may differ between the two renders across a clock tick */
        if ((n != n2 || memcmp(out, out2, n)) && !memmem(data, size, "strftime", 8))
            fail("renders differ");
    } else if (out || strncmp(err.msg, "template: ", 10)) {
        fail("render failure without a message");
    }
    realm_free(out);
    realm_free(out2);
    realm_template_free(t);
    return 0;
}
