/* test_gguf_model.c — the GGUF reader on the real files: stories260K from ../shared (facts from
 * its README), the cached SmolLM2 / gemma3 models when present, and a flipped byte in the
 * tensor count of a real file. */
#include "testutil.h"

#include "realm/gguf.h"
#include "realm/types.h"

static void test_stories(const char *path) {
    struct realm_gguf *g;
    struct realm_err err;
    int rc = realm_gguf_open(path, &g, &err);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    if (rc) return;
    uint32_t u;
    const char *s;
    size_t n;
    CHECK(realm_gguf_get_str(g, "general.architecture", &s, &n) && n == 5 &&
          !memcmp(s, "llama", 5));
    CHECK(realm_gguf_get_u32(g, "llama.block_count", &u) && u == 5);
    CHECK(realm_gguf_get_u32(g, "llama.embedding_length", &u) && u == 64);
    CHECK(realm_gguf_get_u32(g, "llama.attention.head_count", &u) && u == 8);
    CHECK(realm_gguf_get_u32(g, "llama.attention.head_count_kv", &u) && u == 4);
    CHECK(realm_gguf_get_u32(g, "llama.feed_forward_length", &u) && u == 172);
    uint64_t nv;
    enum realm_gguf_vtype et;
    CHECK(realm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nv, NULL) &&
          et == REALM_GGUF_STRING && nv == 512);
    CHECK(realm_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s, &n) && n == 3 &&
          !memcmp(s, "<s>", 3));
    CHECK_EQ_INT(realm_gguf_n_tensors(g), 48);
    CHECK_EQ_INT(realm_gguf_data_offset(g), 14176);
    const struct realm_gguf_tensor *t = realm_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == REALM_TYPE_F32 && t->ne[0] == 64 && t->ne[1] == 512);
    /* output.weight is byte-identical to token_embd.weight in this file (README) */
    const struct realm_gguf_tensor *o = realm_gguf_find_tensor(g, "output.weight");
    CHECK(o && t && o->size == t->size && !memcmp(o->data, t->data, t->size));
    realm_gguf_close(g);

    /* a flipped byte in the tensor count (offset 8) is refused with a clear message */
    size_t size;
    unsigned char *bytes = tu_read_file(path, &size);
    CHECK(bytes != NULL);
    if (!bytes) return;
    for (int bit = 0; bit < 64; bit += 7) {
        unsigned char save = bytes[8 + bit / 8];
        bytes[8 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
        rc = realm_gguf_open_memory(bytes, size, "flipped", &g, &err);
        CHECKF(rc == REALM_E_FORMAT, "bit %d of the tensor count: status %d", bit, rc);
        tu_log("flip bit %d: %s", bit, err.msg);
        bytes[8 + bit / 8] = save;
    }
    free(bytes);
}

static void test_real(const char *file, int64_t n_tensors, const char *arch) {
    const char *path = tu_model_path(file);
    if (!path) {
        tu_log("%s not cached; skipped", file);
        return;
    }
    struct realm_gguf *g;
    struct realm_err err;
    int rc = realm_gguf_open(path, &g, &err);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    if (rc) return;
    CHECK_EQ_INT(realm_gguf_n_tensors(g), n_tensors);
    const char *s;
    size_t n;
    CHECK(realm_gguf_get_str(g, "general.architecture", &s, &n) && n == strlen(arch) &&
          !memcmp(s, arch, n));
    realm_gguf_close(g);
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    const char *stories = tu_shared_path("models/stories260K.gguf");
    if (!stories) tu_skip("../shared/models/stories260K.gguf not found");
    test_stories(stories);
    test_real("SmolLM2-135M-Instruct.Q4_1.gguf", 272, "llama");
    test_real("gemma-3-270m-q4_k_m.gguf", 236, "gemma3");
    return tu_finish("test_gguf_model");
}
