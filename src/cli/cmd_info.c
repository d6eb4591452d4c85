/*
 * cmd_info.c — `realm info MODEL.gguf [--json] [--tensors] [--metadata]`: what a GGUF file holds
 * (architecture, hyper-parameters, tokenizer, chat template, tensors and bytes per type), after
 * full validation by the GGUF reader. JSON output is built with cJSON.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/gguf_json.h"
#include "realm/gguf.h"
#include "realm/types.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: realm info MODEL.gguf [--json] [--tensors] [--metadata]\n\n"
            "Validates a GGUF file and shows its architecture, hyper-parameters, tokenizer, chat\n"
            "template, tensor count, bytes per tensor type and total size.\n\n"
            "  --json       print one JSON object instead of text\n"
            "  --tensors    also list every tensor (name, type, shape, offset, bytes)\n"
            "  --metadata   also list every metadata key and value (long arrays abbreviated)\n"
            "  -h, --help   this help\n");
}

/* Hyper-parameters read as "<arch>.<suffix>". */
struct hparam {
    const char *json_name;
    const char *suffix;
    int is_float;
};

static const struct hparam g_hparams[] = {
    {"n_ctx_train", "context_length", 0},
    {"n_embd", "embedding_length", 0},
    {"n_layer", "block_count", 0},
    {"n_ff", "feed_forward_length", 0},
    {"n_head", "attention.head_count", 0},
    {"n_head_kv", "attention.head_count_kv", 0},
    {"key_length", "attention.key_length", 0},
    {"value_length", "attention.value_length", 0},
    {"sliding_window", "attention.sliding_window", 0},
    {"rope_dimension_count", "rope.dimension_count", 0},
    {"rope_freq_base", "rope.freq_base", 1},
    {"norm_rms_eps", "attention.layer_norm_rms_epsilon", 1},
};

static cJSON *str_item(const struct realm_gguf *g, const char *key) {
    const char *s;
    size_t n;
    if (!realm_gguf_get_str(g, key, &s, &n)) return NULL;
    char buf[256];
    size_t k = n < sizeof buf - 1 ? n : sizeof buf - 1;
    memcpy(buf, s, k);
    buf[k] = '\0';
    return cJSON_CreateString(buf);
}

static void add_u32(cJSON *o, const struct realm_gguf *g, const char *key, const char *name) {
    uint32_t v;
    if (realm_gguf_get_u32(g, key, &v)) cJSON_AddNumberToObject(o, name, v);
}

static cJSON *build_info(const struct realm_gguf *g, int tensors, int metadata) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", realm_gguf_path(g));
    cJSON_AddNumberToObject(o, "gguf_version", realm_gguf_version(g));
    cJSON_AddNumberToObject(o, "file_size", (double)realm_gguf_file_size(g));
    cJSON *arch = str_item(g, "general.architecture");
    const char *arch_s = arch ? arch->valuestring : NULL;
    cJSON_AddItemToObject(o, "architecture", arch ? arch : cJSON_CreateNull());
    cJSON *name = str_item(g, "general.name");
    if (name) cJSON_AddItemToObject(o, "name", name);

    for (size_t i = 0; arch_s && i < sizeof g_hparams / sizeof g_hparams[0]; i++) {
        char key[256];
        snprintf(key, sizeof key, "%s.%s", arch_s, g_hparams[i].suffix);
        float f;
        uint32_t u;
        if (g_hparams[i].is_float && realm_gguf_get_f32(g, key, &f))
            cJSON_AddNumberToObject(o, g_hparams[i].json_name, f);
        else if (!g_hparams[i].is_float && realm_gguf_get_u32(g, key, &u))
            cJSON_AddNumberToObject(o, g_hparams[i].json_name, u);
        else if (realm_gguf_find_key(g, key) >= 0)
            cJSON_AddStringToObject(o, g_hparams[i].json_name, "per-layer");
    }

    cJSON *tok = cJSON_CreateObject();
    cJSON *model = str_item(g, "tokenizer.ggml.model");
    cJSON_AddItemToObject(tok, "model", model ? model : cJSON_CreateNull());
    cJSON *pre = str_item(g, "tokenizer.ggml.pre");
    if (pre) cJSON_AddItemToObject(tok, "pre", pre);
    uint64_t n_vocab = 0;
    enum realm_gguf_vtype et;
    if (realm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_vocab, NULL) &&
        et == REALM_GGUF_STRING)
        cJSON_AddNumberToObject(tok, "n_vocab", (double)n_vocab);
    add_u32(tok, g, "tokenizer.ggml.bos_token_id", "bos");
    add_u32(tok, g, "tokenizer.ggml.eos_token_id", "eos");
    uint64_t n_merges;
    if (realm_gguf_get_arr(g, "tokenizer.ggml.merges", NULL, &n_merges, NULL))
        cJSON_AddNumberToObject(tok, "n_merges", (double)n_merges);
    cJSON_AddItemToObject(o, "tokenizer", tok);
    cJSON_AddBoolToObject(o, "chat_template",
                          realm_gguf_find_key(g, "tokenizer.chat_template") >= 0);

    int64_t nt = realm_gguf_n_tensors(g);
    cJSON_AddNumberToObject(o, "n_tensors", (double)nt);
    cJSON_AddNumberToObject(o, "n_kv", (double)realm_gguf_n_kv(g));
    uint64_t by_type[REALM_TYPE_COUNT] = {0}, count_type[REALM_TYPE_COUNT] = {0}, total = 0,
             n_params = 0;
    for (int64_t i = 0; i < nt; i++) {
        const struct realm_gguf_tensor *t = realm_gguf_tensor(g, i);
        by_type[t->type] += t->size;
        count_type[t->type]++;
        total += t->size;
        n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    cJSON_AddNumberToObject(o, "n_params", (double)n_params);
    cJSON_AddNumberToObject(o, "tensor_bytes", (double)total);
    cJSON *types = cJSON_CreateObject();
    for (int t = 0; t < REALM_TYPE_COUNT; t++) {
        if (!count_type[t]) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "tensors", (double)count_type[t]);
        cJSON_AddNumberToObject(e, "bytes", (double)by_type[t]);
        cJSON_AddItemToObject(types, realm_type_get((uint32_t)t)->name, e);
    }
    cJSON_AddItemToObject(o, "types", types);

    if (tensors) {
        cJSON *arr = cJSON_CreateArray();
        for (int64_t i = 0; i < nt; i++) {
            const struct realm_gguf_tensor *t = realm_gguf_tensor(g, i);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", t->name);
            cJSON_AddStringToObject(e, "type", realm_type_get(t->type)->name);
            cJSON *shape = cJSON_CreateArray();
            for (uint32_t d = 0; d < t->n_dims; d++)
                cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddItemToObject(e, "shape", shape);
            cJSON_AddNumberToObject(e, "offset", (double)t->offset);
            cJSON_AddNumberToObject(e, "bytes", (double)t->size);
            cJSON_AddItemToArray(arr, e);
        }
        cJSON_AddItemToObject(o, "tensors", arr);
    }
    if (metadata) {
        cJSON *md = cJSON_CreateObject();
        for (int64_t i = 0; i < realm_gguf_n_kv(g); i++) {
            struct realm_buf b = {0};
            cJSON *v = cli_gguf_kv_json(&b, g, i, 16) || !b.data ? NULL : cJSON_Parse(b.data);
            cJSON_AddItemToObject(md, realm_gguf_key(g, i),
                                  v ? v : cJSON_CreateString(b.data ? b.data : ""));
            realm_buf_free(&b);
        }
        cJSON_AddItemToObject(o, "metadata", md);
    }
    return o;
}

static void print_text(const cJSON *o) {
    const cJSON *it;
    printf("file:          %s\n", cJSON_GetObjectItem(o, "file")->valuestring);
    printf("gguf version:  %d\n", cJSON_GetObjectItem(o, "gguf_version")->valueint);
    const cJSON *arch = cJSON_GetObjectItem(o, "architecture");
    printf("architecture:  %s\n", cJSON_IsString(arch) ? arch->valuestring : "(none)");
    if ((it = cJSON_GetObjectItem(o, "name"))) printf("name:          %s\n", it->valuestring);
    for (size_t i = 0; i < sizeof g_hparams / sizeof g_hparams[0]; i++) {
        it = cJSON_GetObjectItem(o, g_hparams[i].json_name);
        if (!it) continue;
        if (cJSON_IsString(it))
            printf("%-14s %s\n", g_hparams[i].json_name, it->valuestring);
        else if (g_hparams[i].is_float)
            printf("%-14s %g\n", g_hparams[i].json_name, it->valuedouble);
        else
            printf("%-14s %.0f\n", g_hparams[i].json_name, it->valuedouble);
    }
    const cJSON *tok = cJSON_GetObjectItem(o, "tokenizer");
    const cJSON *model = cJSON_GetObjectItem(tok, "model");
    printf("tokenizer:     %s", cJSON_IsString(model) ? model->valuestring : "(none)");
    if ((it = cJSON_GetObjectItem(tok, "pre"))) printf(" (pre: %s)", it->valuestring);
    if ((it = cJSON_GetObjectItem(tok, "n_vocab"))) printf(", vocab %.0f", it->valuedouble);
    if ((it = cJSON_GetObjectItem(tok, "bos"))) printf(", bos %.0f", it->valuedouble);
    if ((it = cJSON_GetObjectItem(tok, "eos"))) printf(", eos %.0f", it->valuedouble);
    printf("\n");
    printf("chat template: %s\n",
           cJSON_IsTrue(cJSON_GetObjectItem(o, "chat_template")) ? "yes" : "no");
    printf("tensors:       %.0f (%.0f parameters)\n",
           cJSON_GetObjectItem(o, "n_tensors")->valuedouble,
           cJSON_GetObjectItem(o, "n_params")->valuedouble);
    printf("metadata keys: %.0f\n", cJSON_GetObjectItem(o, "n_kv")->valuedouble);
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(o, "types")) {
        printf("  %-8s %5.0f tensors %14.0f bytes\n", it->string,
               cJSON_GetObjectItem(it, "tensors")->valuedouble,
               cJSON_GetObjectItem(it, "bytes")->valuedouble);
    }
    printf("tensor bytes:  %.0f (%.1f MiB); file %.0f bytes\n",
           cJSON_GetObjectItem(o, "tensor_bytes")->valuedouble,
           cJSON_GetObjectItem(o, "tensor_bytes")->valuedouble / 1048576.0,
           cJSON_GetObjectItem(o, "file_size")->valuedouble);
    const cJSON *arr = cJSON_GetObjectItem(o, "tensors");
    if (cJSON_IsArray(arr)) {
        printf("\n%-40s %-8s %-24s %12s %12s\n", "name", "type", "shape", "offset", "bytes");
        cJSON_ArrayForEach(it, arr) {
            char shape[64] = "";
            const cJSON *d;
            size_t n = 0;
            cJSON_ArrayForEach(d, cJSON_GetObjectItem(it, "shape")) {
                n += (size_t)snprintf(shape + n, n < sizeof shape ? sizeof shape - n : 0, "%s%.0f",
                                      n ? " x " : "", d->valuedouble);
            }
            printf("%-40s %-8s %-24s %12.0f %12.0f\n", cJSON_GetObjectItem(it, "name")->valuestring,
                   cJSON_GetObjectItem(it, "type")->valuestring, shape,
                   cJSON_GetObjectItem(it, "offset")->valuedouble,
                   cJSON_GetObjectItem(it, "bytes")->valuedouble);
        }
    }
    const cJSON *md = cJSON_GetObjectItem(o, "metadata");
    if (md) {
        printf("\nmetadata:\n");
        cJSON_ArrayForEach(it, md) {
            char *v = cJSON_PrintUnformatted(it);
            printf("  %s = %s\n", it->string, v ? v : "?");
            cJSON_free(v);
        }
    }
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int json = 0, tensors = 0, metadata = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--tensors"))
            tensors = 1;
        else if (!strcmp(argv[i], "--metadata"))
            metadata = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_error("info: unknown option '%s' (see realm info --help)", argv[i]);
            return 2;
        } else if (path) {
            cli_error("info: more than one model given ('%s' and '%s')", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    struct realm_gguf *g;
    struct realm_err err;
    if (realm_gguf_open(path, &g, &err)) {
        cli_error("%s", err.msg);
        return 1;
    }
    cJSON *o = build_info(g, tensors, metadata);
    if (json) {
        char *s = cJSON_Print(o);
        puts(s);
        cJSON_free(s);
    } else {
        print_text(o);
    }
    cJSON_Delete(o);
    realm_gguf_close(g);
    return 0;
}
