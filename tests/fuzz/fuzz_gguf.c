/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader: any bytes are either refused with a
 * message or accepted with every tensor inside the buffer; then every accessor is exercised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/gguf_json.h"
#include "realm/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

volatile unsigned char g_sink; /* reads of string bytes land here, so they are not optimised out */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct realm_gguf *g = NULL;
    struct realm_err err;
    if (realm_gguf_open_memory(data, size, "fuzz", &g, &err) != REALM_OK) {
        if (!err.msg[0]) abort(); /* every refusal carries a message */
        return 0;
    }
    for (int64_t i = 0; i < realm_gguf_n_kv(g); i++) {
        /* `realm info`'s rendering of every value is valid JSON */
        struct realm_buf buf = {0};
        if (cli_gguf_kv_json(&buf, g, i, 64)) abort(); /* only out of memory may fail */
        if (buf.data) {
            cJSON *j = cJSON_Parse(buf.data);
            if (!j) abort();
            cJSON_Delete(j);
        }
        realm_buf_free(&buf);
        const char *key = realm_gguf_key(g, i);
        uint32_t u;
        int64_t s;
        float f;
        bool b;
        const char *str;
        size_t len;
        uint64_t n;
        enum realm_gguf_vtype et;
        (void)realm_gguf_get_u32(g, key, &u);
        (void)realm_gguf_get_i64(g, key, &s);
        (void)realm_gguf_get_f32(g, key, &f);
        (void)realm_gguf_get_bool(g, key, &b);
        if (realm_gguf_get_str(g, key, &str, &len) && len) g_sink = (unsigned char)str[len - 1];
        if (realm_gguf_get_arr(g, key, &et, &n, NULL) && et == REALM_GGUF_STRING)
            for (uint64_t j = 0; j < n && j < 64; j++)
                (void)realm_gguf_kv_arr_str(g, i, j, &str, &len);
    }
    for (int64_t i = 0; i < realm_gguf_n_tensors(g); i++) {
        const struct realm_gguf_tensor *t = realm_gguf_tensor(g, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->size > data + size) abort();
        if (realm_gguf_find_tensor(g, t->name) != t) abort();
        volatile uint8_t sink =
            t->size ? p[t->size - 1] : 0; /* touch the last byte: ASan checks it */
        (void)sink;
    }
    realm_gguf_close(g);
    return 0;
}
