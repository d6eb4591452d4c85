/*
 * embed_req.c — the embedding routes' request parsing, tokenization and response bodies
 * (embed.h). Everything the client sends is checked here before any memory is sized from it:
 * the body's value count, the number of inputs, each token-id input's length and values.
 *
 * Owns: the parsed request (srv_embed_req_free). Thread rule: stateless.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "realm/alloc.h"
#include "realm/json.h"
#include "realm/status.h"
#include "server/embed.h"
#include "server/srv.h"

#define INVALID "invalid_request_error"
#define MIN_JSON_VALUES 65536 /* as the other routes; more when the limits allow more token ids */

/* a 400 about `param`, with fmt's one %s filled (a macro: the format stays a checked literal) */
#define bad(e, param, fmt, a) srv_error_set(e, 400, INVALID, NULL, param, fmt, a)

static int nomem(struct srv_error *e) {
    return srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* True if body[0..len) has a NUL byte or a \u0000 escape inside a string literal (cJSON would end
 * the string there). Escaped backslashes are skipped, so "\\u0000" is text, not a NUL. */
static bool has_nul(const char *body, size_t len) {
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '\0') return true;
        if (!in_str) {
            in_str = body[i] == '"';
        } else if (body[i] == '"') {
            in_str = false;
        } else if (body[i] == '\\' && i + 1 < len) {
            if (body[i + 1] == 'u' && i + 5 < len && !memcmp(body + i + 2, "0000", 4)) return true;
            i++;
        }
    }
    return false;
}

/* The body as a JSON object, or NULL with a 400: NUL characters in strings (cJSON would cut the
 * string there), too many values, not JSON, not an object. */
static cJSON *parse_object(const char *body, size_t len, uint64_t max_values, struct srv_error *e) {
    if (has_nul(body, len)) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "Strings in the request may not contain the NUL character (\\u0000).");
        return NULL;
    }
    if (realm_json_values_bound(body, len, max_values) > max_values) {
        srv_error_set(e, 400, INVALID, NULL, NULL,
                      "The request body holds more than %llu JSON values.",
                      (unsigned long long)max_values);
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

static int check_fields(const cJSON *root, enum srv_embed_shape shape, struct srv_error *e) {
    static const char *const openai[] = {"model",      "input", "encoding_format",
                                         "dimensions", "user",  NULL};
    static const char *const spin[] = {"model", "input", NULL};
    const char *const *known = shape == SRV_EMBED_SPIN ? spin : openai;
    const cJSON *f;
    cJSON_ArrayForEach(f, root) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = !strcmp(f->string, known[i]);
        if (!ok)
            return bad(e, f->string, "Unrecognized request argument supplied: '%s'.", f->string);
    }
    return 0;
}

/* A token id: an integer in [0, INT32_MAX] (the vocabulary is checked after tokenizer lookup). */
static bool token_id(const cJSON *v, int32_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    const double d = v->valuedouble;
    if (!(d >= 0 && d <= INT32_MAX) || d != floor(d)) return false;
    *out = (int32_t)d;
    return true;
}

/* One input from a string or an array of token ids into *in. */
static int parse_input(const cJSON *v, size_t index, int32_t max_tokens, struct srv_embed_input *in,
                       struct srv_error *e) {
    char param[32];
    snprintf(param, sizeof param, "input[%zu]", index);
    if (cJSON_IsString(v)) {
        const size_t n = strlen(v->valuestring);
        if (n == 0)
            return srv_error_set(e, 400, INVALID, NULL, "input",
                                 "Input %zu is an empty string; every input must have text.",
                                 index);
        in->text = realm_strndup(v->valuestring, n);
        if (!in->text) return nomem(e);
        in->text_len = n;
        return 0;
    }
    if (!cJSON_IsArray(v))
        return srv_error_set(e, 400, INVALID, NULL, "input",
                             "Input %zu must be a string or an array of token ids.", index);
    const int sz = cJSON_GetArraySize(v);
    if (sz == 0)
        return srv_error_set(e, 400, INVALID, NULL, "input",
                             "Input %zu is an empty array of token ids.", index);
    if (sz > max_tokens)
        return srv_error_set(e, 400, INVALID, "input_too_long", "input",
                             "Input %zu has %d tokens; this server allows at most %d tokens per "
                             "embedding input.",
                             index, sz, max_tokens);
    in->tokens = realm_malloc((size_t)sz * sizeof *in->tokens);
    if (!in->tokens) return nomem(e);
    int32_t k = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, v) {
        if (!token_id(t, &in->tokens[k]))
            return srv_error_set(e, 400, INVALID, NULL, param,
                                 "Input %zu: token ids must be non-negative integers.", index);
        k++;
    }
    in->n = k;
    return 0;
}

void srv_embed_req_free(struct srv_embed_req *r) {
    if (!r) return;
    for (size_t i = 0; r->inputs && i < r->n_inputs; i++) {
        realm_free(r->inputs[i].text);
        realm_free(r->inputs[i].tokens);
    }
    realm_free(r->inputs);
    realm_free(r->model);
    memset(r, 0, sizeof *r);
}

/* "input": one string, an array of strings, one array of token ids, or an array of them. */
static int parse_inputs(const cJSON *input, enum srv_embed_shape shape, int32_t max_inputs,
                        int32_t max_tokens, struct srv_embed_req *r, struct srv_error *e) {
    if (!input || cJSON_IsNull(input))
        return bad(e, "input", "Missing required parameter: '%s'.", "input");
    const bool one_text = cJSON_IsString(input);
    /* an array whose first element is a number is one input of token ids (OpenAI's shape) */
    const bool one_ids =
        cJSON_IsArray(input) && input->child && cJSON_IsNumber(input->child) && !one_text;
    if (!one_text && !cJSON_IsArray(input))
        return bad(e, "input", "'%s' must be a string or an array.", "input");
    if (shape == SRV_EMBED_SPIN && !cJSON_IsArray(input))
        return bad(e, "input", "'%s' must be an array of strings.", "input");
    const int count = one_text || one_ids ? 1 : cJSON_GetArraySize(input);
    if (count == 0) return bad(e, "input", "'%s' must not be an empty array.", "input");
    if (count > max_inputs)
        return srv_error_set(
            e, 400, INVALID, "too_many_inputs", "input",
            "The request has %d inputs; this server embeds at most %d per request.", count,
            max_inputs);
    r->inputs = realm_calloc((size_t)count, sizeof *r->inputs);
    if (!r->inputs) return nomem(e);
    r->n_inputs = (size_t)count;
    if (one_text || one_ids) return parse_input(input, 0, max_tokens, &r->inputs[0], e);
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, input) {
        if (shape == SRV_EMBED_SPIN && !cJSON_IsString(v))
            return bad(e, "input", "'%s' must be an array of strings.", "input");
        if (cJSON_IsNumber(v))
            return bad(e, "input",
                       "'%s' mixes token ids with other inputs: give one array of ids or an "
                       "array of arrays.",
                       "input");
        if (parse_input(v, i, max_tokens, &r->inputs[i], e)) return -1;
        i++;
    }
    return 0;
}

int srv_embed_parse(enum srv_embed_shape shape, const char *body, size_t len, int32_t max_inputs,
                    int32_t max_tokens, struct srv_embed_req *out, struct srv_error *e) {
    uint64_t max_values = (uint64_t)max_inputs * ((uint64_t)max_tokens + 1) + 64;
    if (max_values < MIN_JSON_VALUES) max_values = MIN_JSON_VALUES;
    cJSON *root = parse_object(body, len, max_values, e);
    if (!root) return -1;
    struct srv_embed_req r = {.shape = shape};
    int rc = -1;
    if (check_fields(root, shape, e)) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!model || cJSON_IsNull(model)) {
        bad(e, "model", "Missing required parameter: '%s'.", "model");
        goto done;
    }
    if (!cJSON_IsString(model)) {
        bad(e, "model", "'%s' must be a string.", "model");
        goto done;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "float") && strcmp(fmt->valuestring, "base64"))) {
            bad(e, "encoding_format", "'%s' must be \"float\" or \"base64\".", "encoding_format");
            goto done;
        }
        r.base64 = !strcmp(fmt->valuestring, "base64");
    }
    const cJSON *dim = cJSON_GetObjectItemCaseSensitive(root, "dimensions");
    if (dim && !cJSON_IsNull(dim)) {
        if (!cJSON_IsNumber(dim) || !(dim->valuedouble >= 1 && dim->valuedouble <= 1e9) ||
            dim->valuedouble != floor(dim->valuedouble)) {
            bad(e, "dimensions", "'%s' must be a positive integer.", "dimensions");
            goto done;
        }
        r.dimensions = (int64_t)dim->valuedouble;
    }
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
    if (user && !cJSON_IsNull(user) && !cJSON_IsString(user)) {
        bad(e, "user", "'%s' must be a string.", "user");
        goto done;
    }
    if (parse_inputs(cJSON_GetObjectItemCaseSensitive(root, "input"), shape, max_inputs, max_tokens,
                     &r, e))
        goto done;
    r.model = realm_strndup(model->valuestring, strlen(model->valuestring));
    if (!r.model) {
        nomem(e);
        goto done;
    }
    for (size_t i = 0; i < r.n_inputs; i++)
        r.n_tokens += r.inputs[i].n;
    *out = r;
    rc = 0;
done:
    if (rc) srv_embed_req_free(&r);
    cJSON_Delete(root);
    return rc;
}

int srv_embed_tokenize(struct srv_embed_req *r, const struct realm_tokenizer *tok, int32_t n_vocab,
                       int32_t max_tokens, struct srv_error *e) {
    int64_t total = 0;
    for (size_t i = 0; i < r->n_inputs; i++) {
        struct srv_embed_input *in = &r->inputs[i];
        if (in->text) {
            int64_t n = 0;
            int rc =
                realm_tokenize(tok, in->text, in->text_len, REALM_TOKENIZE_ADD_BOS, NULL, 0, &n);
            if (rc && rc != REALM_E_TOO_SMALL)
                return srv_error_set(e, rc == REALM_E_NOMEM ? 500 : 400, INVALID, NULL, "input",
                                     "Input %zu cannot be tokenized: %s.", i, realm_strerror(rc));
            if (n > max_tokens)
                return srv_error_set(e, 400, INVALID, "input_too_long", "input",
                                     "Input %zu has %lld tokens; this server allows at most %d "
                                     "tokens per embedding input.",
                                     i, (long long)n, max_tokens);
            if (n < 1)
                return srv_error_set(e, 400, INVALID, NULL, "input", "Input %zu has no tokens.", i);
            realm_free(in->tokens);
            in->tokens = realm_malloc((size_t)n * sizeof *in->tokens);
            if (!in->tokens) return nomem(e);
            rc = realm_tokenize(tok, in->text, in->text_len, REALM_TOKENIZE_ADD_BOS, in->tokens, n,
                                &n);
            if (rc) return nomem(e);
            in->n = (int32_t)n;
        } else {
            if (in->n > max_tokens)
                return srv_error_set(e, 400, INVALID, "input_too_long", "input",
                                     "Input %zu has %d tokens; this server allows at most %d "
                                     "tokens per embedding input.",
                                     i, in->n, max_tokens);
            for (int32_t k = 0; k < in->n; k++)
                if (in->tokens[k] >= n_vocab)
                    return srv_error_set(e, 400, INVALID, NULL, "input",
                                         "Input %zu: token id %d is outside the model's "
                                         "vocabulary of %d.",
                                         i, in->tokens[k], n_vocab);
        }
        total += in->n;
    }
    r->n_tokens = total;
    return 0;
}

int srv_base64_append(struct realm_buf *b, const void *data, size_t n) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char quad[4];
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                           (i + 2 < n ? (uint32_t)p[i + 2] : 0);
        quad[0] = tbl[v >> 18 & 63];
        quad[1] = tbl[v >> 12 & 63];
        quad[2] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        quad[3] = i + 2 < n ? tbl[v & 63] : '=';
        if (realm_buf_append(b, quad, 4)) return REALM_E_NOMEM;
    }
    return REALM_OK;
}

/* One vector: a JSON array of floats (9 significant digits: every f32 reads back exactly), or the
 * base64 of its little-endian f32 bytes in a JSON string. */
static int vector_json(struct realm_buf *b, const float *v, int32_t width, bool base64) {
    for (int32_t d = 0; d < width; d++)
        if (!isfinite(v[d])) return REALM_E_FORMAT;
    if (base64) {
        int rc = realm_buf_puts(b, "\"");
        if (rc) return rc;
        unsigned char *all = realm_malloc((size_t)width * 4);
        if (!all) return REALM_E_NOMEM;
        for (int32_t d = 0; d < width; d++) {
            uint32_t u;
            memcpy(&u, &v[d], 4);
            for (int k = 0; k < 4; k++)
                all[4 * (size_t)d + (size_t)k] = (unsigned char)(u >> (8 * k));
        }
        rc = srv_base64_append(b, all, (size_t)width * 4);
        realm_free(all);
        return rc ? rc : realm_buf_puts(b, "\"");
    }
    int rc = realm_buf_puts(b, "[");
    for (int32_t d = 0; d < width && !rc; d++)
        rc = realm_buf_printf(b, d ? ",%.9g" : "%.9g", (double)v[d]);
    return rc ? rc : realm_buf_puts(b, "]");
}

int srv_embed_response(struct realm_buf *b, const struct srv_embed_req *r, const char *model,
                       const float *vecs, int32_t width) {
    int rc;
    if (r->shape == SRV_EMBED_SPIN) {
        rc = realm_buf_puts(b, "{\"embeddings\":[");
        for (size_t i = 0; i < r->n_inputs && !rc; i++) {
            if (i) rc = realm_buf_puts(b, ",");
            if (!rc) rc = vector_json(b, vecs + i * (size_t)width, width, false);
        }
        if (!rc)
            rc = realm_buf_printf(b, "],\"usage\":{\"promptTokenCount\":%lld}}",
                                  (long long)r->n_tokens);
        return rc;
    }
    rc = realm_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < r->n_inputs && !rc; i++) {
        rc = realm_buf_printf(
            b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i ? "," : "", i);
        if (!rc) rc = vector_json(b, vecs + i * (size_t)width, width, r->base64);
        if (!rc) rc = realm_buf_puts(b, "}");
    }
    if (!rc) rc = realm_buf_puts(b, "],\"model\":");
    if (!rc) rc = realm_buf_json_string(b, model, strlen(model));
    if (!rc)
        rc = realm_buf_printf(b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}",
                              (long long)r->n_tokens, (long long)r->n_tokens);
    return rc;
}
