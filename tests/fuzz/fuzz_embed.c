/*
 * fuzz_embed.c — libFuzzer target for the embedding routes' request parser (src/server/
 * embed_req.c): the first byte picks the shape (OpenAI's /v1/embeddings or Spin's /embed), the
 * rest is the body, parsed under small limits.
 * Checks: no crash, leak or sanitizer report; a failure is a 4xx/5xx with a message; a success
 * holds 1..max_inputs inputs, each either text (non-empty, NUL-terminated, as long as it says) or
 * 1..max_tokens non-negative token ids, and n_tokens sums the id inputs; the response body written
 * for it (zero vectors of width 3, both encodings) is a JSON value cJSON reads back.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realm/alloc.h"
#include "server/embed.h"
#include "server/srv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUTS 8
#define MAX_TOKENS 16

static void fail(const char *why) {
    fprintf(stderr, "fuzz_embed: %s\n", why);
    abort();
}

static void check_request(const struct srv_embed_req *r) {
    if (!r->model || r->n_inputs < 1 || r->n_inputs > MAX_INPUTS) fail("bad request shape");
    int64_t ids = 0;
    for (size_t i = 0; i < r->n_inputs; i++) {
        const struct srv_embed_input *in = &r->inputs[i];
        if (in->text) {
            if (in->text_len == 0 || strlen(in->text) != in->text_len || in->tokens)
                fail("bad text input");
            continue;
        }
        if (!in->tokens || in->n < 1 || in->n > MAX_TOKENS) fail("bad token-id input");
        for (int32_t k = 0; k < in->n; k++)
            if (in->tokens[k] < 0) fail("negative token id");
        ids += in->n;
    }
    if (ids != r->n_tokens) fail("n_tokens is not the sum of the id inputs");
}

static void check_response(struct srv_embed_req *r, bool base64) {
    float vecs[MAX_INPUTS * 3] = {0};
    r->base64 = base64;
    struct realm_buf b = {0};
    if (srv_embed_response(&b, r, r->model, vecs, 3)) fail("response failed");
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    if (!j) fail("response is not JSON");
    cJSON_Delete(j);
    realm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const enum srv_embed_shape shape = data[0] & 1 ? SRV_EMBED_SPIN : SRV_EMBED_OPENAI;
    struct srv_embed_req r;
    struct srv_error e;
    memset(&e, 0, sizeof e);
    if (srv_embed_parse(shape, (const char *)data + 1, size - 1, MAX_INPUTS, MAX_TOKENS, &r, &e)) {
        if (e.http < 400 || e.http > 599 || !e.message[0]) fail("failure without an error");
        return 0;
    }
    check_request(&r);
    check_response(&r, false);
    check_response(&r, true);
    srv_embed_req_free(&r);
    return 0;
}
