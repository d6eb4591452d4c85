/*
 * test_tokenizer_model.c — the tokenizers on real vocabularies:
 *   - every llama.cpp test-vector pair ../shared/testdata/llama-vocab/<name>.gguf.{inp,out} whose
 *     vocab GGUF is present (in that folder, or converted from a tokenizer.json into
 *     ~/.cache/realm/vocab/ by scripts/convert_tokenizer_json.py) passes all its cases, tokenized
 *     like llama.cpp's test-tokenizer-0 (no BOS, special-token text not parsed);
 *   - every case round-trips through realm_token_piece;
 *   - stories260K (512-token SPM) facts, and BOS/EOS/EOG/chat-template facts of the cached
 *     SmolLM2 and gemma-3 models.
 * Tool mode (used by tests/py/test_tokenizer_llamacpp.py when the CLI is not built):
 *   test_tokenizer_model --tokenize MODEL FILE [--bos] [--special]  prints ids, one line
 */
#include "testutil.h"

#include <dirent.h>

#include "realm/gguf.h"
#include "realm/tokenizer.h"

static const char SEP[] = "\n__ggml_vocab_test__\n";

static struct realm_tokenizer *load(const char *path, int *status) {
    struct realm_gguf *g;
    struct realm_err err = {0};
    *status = realm_gguf_open(path, &g, &err);
    if (*status) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return NULL;
    }
    struct realm_tokenizer *t = NULL;
    *status = realm_tokenizer_load(g, &t, &err);
    if (*status) tu_log("%s: %s", path, err.msg);
    realm_gguf_close(g);
    return t;
}

static int64_t tokenize(const struct realm_tokenizer *t, const char *s, size_t n, uint32_t flags,
                        int32_t **ids) {
    int64_t cap = (int64_t)n + 16, got = 0;
    *ids = malloc((size_t)cap * sizeof **ids);
    int rc = realm_tokenize(t, s, n, flags, *ids, cap, &got);
    if (rc == REALM_E_TOO_SMALL) {
        *ids = realloc(*ids, (size_t)got * sizeof **ids);
        rc = realm_tokenize(t, s, n, flags, *ids, got, &got);
    }
    CHECKF(rc == REALM_OK, "realm_tokenize: %d", rc);
    return rc ? -1 : got;
}

/* Concatenated pieces of ids (what llama.cpp's detokenize gives before space cleanup). */
static char *pieces(const struct realm_tokenizer *t, const int32_t *ids, int64_t n, size_t *len) {
    size_t cap = 64, k = 0;
    char *s = malloc(cap);
    for (int64_t i = 0; i < n; i++) {
        int64_t l = realm_token_piece(t, ids[i], false, NULL, 0);
        CHECK(l >= 0);
        if (l < 0) continue;
        while (k + (size_t)l + 1 > cap)
            s = realloc(s, cap *= 2);
        realm_token_piece(t, ids[i], false, s + k, (size_t)l);
        k += (size_t)l;
    }
    s[k] = 0;
    *len = k;
    return s;
}

static const char *vocab_path(const char *dir, const char *name) {
    static char buf[4096 + 512];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    FILE *f = fopen(buf, "rb");
    if (f) {
        fclose(f);
        return buf;
    }
    const char *home = getenv("HOME");
    snprintf(buf, sizeof buf, "%s/.cache/realm/vocab/%s", home ? home : ".", name);
    f = fopen(buf, "rb");
    if (f) {
        fclose(f);
        return buf;
    }
    return NULL;
}

static void run_vectors(const char *dir, const char *name, int *n_files) {
    char inp_path[4096 + 512], out_path[4096 + 512], gguf_name[256];
    size_t nl0 = strlen(name) - 4; /* strip .inp */
    if (nl0 >= sizeof gguf_name) return;
    memcpy(gguf_name, name, nl0);
    gguf_name[nl0] = 0;
    const char *gpath = vocab_path(dir, gguf_name);
    if (!gpath) {
        tu_log("%s: no vocab file; skipped", gguf_name);
        return;
    }
    char gcopy[4096 + 512];
    snprintf(gcopy, sizeof gcopy, "%s", gpath);
    snprintf(inp_path, sizeof inp_path, "%s/%s", dir, name);
    snprintf(out_path, sizeof out_path, "%s/%s.out", dir, gguf_name);
    int status;
    struct realm_tokenizer *t = load(gcopy, &status);
    CHECKF(t != NULL, "%s: load failed: %d", gcopy, status);
    if (!t) return;
    size_t in_size, out_size;
    char *in = (char *)tu_read_file(inp_path, &in_size);
    char *out = (char *)tu_read_file(out_path, &out_size);
    CHECK(in && out);
    if (!in || !out) {
        realm_tokenizer_free(t);
        free(in);
        free(out);
        return;
    }
    (*n_files)++;
    int n_cases = 0, n_fail = 0;
    char *p = in, *end = in + in_size, *line = out, *oend = out + out_size;
    for (;;) {
        char *sep = memmem(p, (size_t)(end - p), SEP, sizeof SEP - 1);
        if (!sep || line >= oend) break;
        char *nl = memchr(line, '\n', (size_t)(oend - line));
        if (!nl) nl = oend;
        /* expected ids */
        int32_t want[4096];
        int n_want = 0;
        for (char *q = line; q < nl;) {
            while (q < nl && *q == ' ')
                q++;
            if (q >= nl) break;
            want[n_want++] = (int32_t)strtol(q, &q, 10);
        }
        int32_t *ids;
        int64_t n = tokenize(t, p, (size_t)(sep - p), 0, &ids);
        bool ok = n == n_want;
        for (int64_t i = 0; ok && i < n; i++)
            ok = ids[i] == want[i];
        if (!ok) {
            n_fail++;
            fprintf(stderr, "%s case %d: '%.*s'\n  got :", gguf_name, n_cases, (int)(sep - p), p);
            for (int64_t i = 0; i < n; i++)
                fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n  want:");
            for (int i = 0; i < n_want; i++)
                fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
        /* pieces give back the input (SPM: after the added leading space); WordPiece
         * normalizes (lowercase, accents, white space), so it is checked in test_bert instead */
        bool wpm = !strcmp(realm_tokenizer_kind(t), "bert");
        size_t dl;
        char *dec = pieces(t, ids, n, &dl);
        const char *cmp = dec;
        if (!strcmp(realm_tokenizer_kind(t), "llama") && dl && dec[0] == ' ') {
            cmp++;
            dl--;
        }
        CHECKF(wpm || (dl == (size_t)(sep - p) && !memcmp(cmp, p, dl)),
               "%s case %d: pieces do not round-trip", gguf_name, n_cases);
        free(dec);
        free(ids);
        n_cases++;
        p = sep + sizeof SEP - 1;
        line = nl + 1;
    }
    CHECKF(n_cases == 46, "%s: %d cases, expected 46", gguf_name, n_cases);
    CHECKF(n_fail == 0, "%s: %d of %d cases differ", gguf_name, n_fail, n_cases);
    tu_log("%s (%s, pre %s): %d/%d cases ok", gguf_name, realm_tokenizer_kind(t),
           realm_tokenizer_pre(t), n_cases - n_fail, n_cases);
    free(in);
    free(out);
    realm_tokenizer_free(t);
}

static void test_stories(void) {
    const char *path = tu_shared_path("models/stories260K.gguf");
    if (!path) return;
    int status;
    struct realm_tokenizer *t = load(path, &status);
    CHECK(t != NULL);
    if (!t) return;
    CHECK_EQ_INT(realm_tokenizer_n_vocab(t), 512);
    CHECK_EQ_INT(realm_tokenizer_bos(t), 1);
    CHECK_EQ_INT(realm_tokenizer_eos(t), 2);
    CHECK(realm_tokenizer_add_bos(t));
    CHECK(realm_tokenizer_is_eog(t, 2));
    int32_t *ids;
    int64_t n = tokenize(t, "Once upon a time", 16, REALM_TOKENIZE_ADD_BOS, &ids);
    CHECK(n > 1 && ids[0] == 1);
    size_t dl;
    char *dec = pieces(t, ids, n, &dl);
    CHECK(dl == 17 && !memcmp(dec, " Once upon a time", 17));
    free(dec);
    free(ids);
    /* a character outside the 512-token vocab falls back to <0xNN> byte tokens */
    n = tokenize(t, "\xf0\x9f\x98\x80", 4, 0, &ids); /* U+1F600 */
    CHECK(n >= 4);
    dec = pieces(t, ids, n, &dl);
    CHECK(dl >= 4 && !memcmp(dec + dl - 4, "\xf0\x9f\x98\x80", 4));
    free(dec);
    free(ids);
    realm_tokenizer_free(t);
}

/* WordPiece (BERT) specifics the vectors do not cover: [CLS]/[SEP] with add_special, pieces and
 * the streaming detokenizer, accent stripping, unknown words. */
static void test_bert(void) {
    const char *path = tu_shared_path("testdata/llama-vocab/ggml-vocab-bert-bge.gguf");
    if (!path) return;
    char pcopy[4096];
    snprintf(pcopy, sizeof pcopy, "%s", path);
    int status;
    struct realm_tokenizer *t = load(pcopy, &status);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(!strcmp(realm_tokenizer_kind(t), "bert"));
    CHECK_EQ_INT(realm_tokenizer_n_vocab(t), 30522);
    CHECK_EQ_INT(realm_tokenizer_bos(t), 101); /* [CLS] */
    CHECK(realm_tokenizer_add_bos(t));
    int32_t *ids;
    int64_t n = tokenize(t, "Hello World!", 12, REALM_TOKENIZE_ADD_BOS, &ids);
    static const int32_t want[] = {101, 7592, 2088, 999, 102};
    CHECK_EQ_INT(n, 5);
    for (int64_t i = 0; n == 5 && i < n; i++)
        CHECK_EQ_INT(ids[i], want[i]);
    if (n == 5) {
        size_t dl;
        /* [CLS]/[SEP] are control: empty pieces; every word, "!" included, starts with "▁" */
        char *dec = pieces(t, ids, n, &dl);
        CHECK(dl == 14 && !memcmp(dec, " hello world !", 14));
        free(dec);
        struct realm_detok d;
        realm_detok_init(&d, t, false);
        char text[64];
        size_t k = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = realm_detok_push(&d, ids[i], text + k, sizeof text - k);
            CHECK(r >= 0);
            if (r > 0) k += (size_t)r;
        }
        CHECK(k == 13 && !memcmp(text, "hello world !", 13));
    }
    free(ids);
    /* accents of precomposed letters are dropped and text is lowercased: "HÉLLO" is "hello" */
    n = tokenize(t, "H\xc3\x89LLO", 6, 0, &ids);
    CHECK(n == 1 && ids[0] == 7592);
    free(ids);
    /* a word with a character outside the vocabulary is one [UNK] (U+1F600) */
    n = tokenize(t,
                 "a\xf0\x9f\x98\x80"
                 "b",
                 6, 0, &ids);
    CHECK(n == 1 && ids[0] == 100);
    free(ids);
    /* punctuation and CJK ideographs are words of their own; control characters vanish */
    int32_t *ids2;
    n = tokenize(t, "hello,\x01world", 12, 0, &ids);
    int64_t n2 = tokenize(t, "hello , world", 13, 0, &ids2);
    CHECK(n == 3 && n2 == 3 && !memcmp(ids, ids2, 3 * sizeof *ids));
    free(ids);
    free(ids2);
    realm_tokenizer_free(t);
}

static void test_real_models(void) {
    const char *p = tu_model_path("SmolLM2-135M-Instruct.Q4_1.gguf");
    int status;
    if (p) {
        char path[4096];
        snprintf(path, sizeof path, "%s", p);
        struct realm_tokenizer *t = load(path, &status);
        CHECK(t != NULL);
        if (t) {
            CHECK(!strcmp(realm_tokenizer_kind(t), "gpt2") &&
                  !strcmp(realm_tokenizer_pre(t), "smollm"));
            CHECK(!realm_tokenizer_add_bos(t));
            CHECK(realm_tokenizer_is_eog(t, 2)); /* <|im_end|> */
            CHECK(realm_tokenizer_is_eog(t, 0)); /* <|endoftext|> */
            CHECK(realm_tokenizer_chat_template(t) &&
                  !strcmp(realm_tokenizer_chat_template(t), "chatml"));
            int32_t *ids;
            int64_t n = tokenize(t, "<|im_start|>user", 16, REALM_TOKENIZE_PARSE_SPECIAL, &ids);
            CHECK(n == 2 && ids[0] == 1);
            free(ids);
            n = tokenize(t, "<|im_start|>user", 16, 0, &ids);
            CHECK(n > 2 && ids[0] != 1);
            free(ids);
            realm_tokenizer_free(t);
        }
    }
    p = tu_model_path("gemma-3-270m-q4_k_m.gguf");
    if (p) {
        char path[4096];
        snprintf(path, sizeof path, "%s", p);
        struct realm_tokenizer *t = load(path, &status);
        CHECK(t != NULL);
        if (t) {
            CHECK(!strcmp(realm_tokenizer_kind(t), "llama"));
            CHECK(realm_tokenizer_add_bos(t) && realm_tokenizer_bos(t) == 2);
            CHECK(realm_tokenizer_is_eog(t, 1) &&
                  realm_tokenizer_is_eog(t, 106)); /* <eos>, <end_of_turn> */
            /* no chat_template in this file: the family comes from its special tokens */
            CHECK(realm_tokenizer_chat_template(t) &&
                  !strcmp(realm_tokenizer_chat_template(t), "gemma"));
            int32_t *ids;
            int64_t n = tokenize(t, "<start_of_turn>user\nHi<end_of_turn>\n", 36,
                                 REALM_TOKENIZE_ADD_BOS | REALM_TOKENIZE_PARSE_SPECIAL, &ids);
            CHECK(n >= 5 && ids[0] == 2 && ids[1] == 105);
            free(ids);
            realm_tokenizer_free(t);
        }
    }
}

static int tool(int argc, char **argv) {
    if (argc < 4) return 2;
    uint32_t flags = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--bos")) flags |= REALM_TOKENIZE_ADD_BOS;
        if (!strcmp(argv[i], "--special")) flags |= REALM_TOKENIZE_PARSE_SPECIAL;
    }
    int status;
    struct realm_tokenizer *t = load(argv[2], &status);
    if (!t) return 1;
    size_t n;
    char *text = (char *)tu_read_file(argv[3], &n);
    if (!text) return 1;
    int32_t *ids;
    int64_t k = tokenize(t, text, n, flags, &ids);
    for (int64_t i = 0; i < k; i++)
        printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    free(text);
    realm_tokenizer_free(t);
    return k < 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--tokenize")) return tool(argc, argv);
    tu_init(argc, argv);
    const char *dir = tu_shared_path("testdata/llama-vocab");
    if (!dir) tu_skip("../shared/testdata/llama-vocab not found");
    char dcopy[4096];
    snprintf(dcopy, sizeof dcopy, "%s", dir);
    DIR *d = opendir(dcopy);
    CHECK(d != NULL);
    char names[64][256];
    int n_names = 0;
    for (struct dirent *e; d && (e = readdir(d)) && n_names < 64;) {
        size_t l = strlen(e->d_name);
        if (l > 9 && !strcmp(e->d_name + l - 9, ".gguf.inp"))
            snprintf(names[n_names++], 256, "%s", e->d_name);
    }
    if (d) closedir(d);
    int n_files = 0;
    for (int i = 0; i < n_names; i++)
        run_vectors(dcopy, names[i], &n_files);
    CHECKF(n_files >= 7, "only %d vocab files with vectors found", n_files);
    tu_log("%d vocab test files passed through", n_files);
    test_stories();
    test_bert();
    test_real_models();
    return tu_finish("test_tokenizer_model");
}
