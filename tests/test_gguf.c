/*
 * test_gguf.c — the GGUF reader against handcrafted files: one valid file with every value type
 * (v2 and v3), then one corrupt file per rejection rule, every truncation of a valid file, and
 * random mutations. Each corrupt file must give its specific status and a message, never a crash.
 */
#include "testutil.h"

#include "cli/gguf_json.h"
#include "realm/alloc.h"
#include "realm/gguf.h"
#include "realm/types.h"

/* ---- a tiny GGUF writer ---- */

struct buf {
    unsigned char *p;
    size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u8(struct buf *b, uint8_t v) {
    put(b, &v, 1);
}
static void put_u32(struct buf *b, uint32_t v) {
    put(b, &v, 4);
}
static void put_u64(struct buf *b, uint64_t v) {
    put(b, &v, 8);
}
static void put_f32(struct buf *b, float v) {
    put(b, &v, 4);
}
static void put_str(struct buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(struct buf *b, size_t align) {
    while (b->n % align)
        put_u8(b, 0);
}

/* Options that break one rule each. */
struct spec {
    uint32_t magic, version;
    uint64_t n_tensors_delta; /* added to the real count */
    uint64_t n_kv_delta;
    int dup_key, bad_vtype, bad_arr_type, huge_arr, huge_key_len, deep_nesting;
    uint32_t alignment; /* 0: absent */
    int alignment_as_u64;
    uint32_t n_dims; /* for tensor 0; 0: default 2 */
    uint64_t ne0;    /* for tensor 0; 0: default 64 */
    uint64_t huge_ne1;
    uint32_t ttype; /* tensor 0 type; default F32 (= 0, so use +1 encoding) */
    int ttype_set;
    uint64_t offset_add; /* added to tensor 1's offset */
    int dup_tensor;
    int truncate_data; /* drop the last bytes of data */
};

static struct buf build(const struct spec *s) {
    struct buf b = {0};
    put_u32(&b, s->magic ? s->magic : 0x46554747u);
    put_u32(&b, s->version ? s->version : 3);
    uint64_t n_tensors = 2,
             n_kv = 10 + (s->alignment ? 1 : 0) + (s->dup_key ? 1 : 0) + (s->deep_nesting ? 1 : 0);
    put_u64(&b, n_tensors + s->n_tensors_delta);
    put_u64(&b, n_kv + s->n_kv_delta);

    /* kv: one of each type */
    put_str(&b, "general.architecture");
    put_u32(&b, REALM_GGUF_STRING);
    put_str(&b, "llama");
    put_str(&b, s->huge_key_len ? "" : "test.u32");
    if (s->huge_key_len) { /* overwrite the length just written with a huge one */
        uint64_t huge = 1ull << 40;
        memcpy(b.p + b.n - 8, &huge, 8);
    }
    put_u32(&b, s->bad_vtype ? 99 : REALM_GGUF_UINT32);
    put_u32(&b, 7);
    put_str(&b, "test.i8");
    put_u32(&b, REALM_GGUF_INT8);
    put_u8(&b, (uint8_t)-5);
    put_str(&b, "test.f32");
    put_u32(&b, REALM_GGUF_FLOAT32);
    put_f32(&b, 1.5f);
    put_str(&b, "test.bool");
    put_u32(&b, REALM_GGUF_BOOL);
    put_u8(&b, 1);
    put_str(&b, "test.u64");
    put_u32(&b, REALM_GGUF_UINT64);
    put_u64(&b, 1ull << 40);
    put_str(&b, "test.f64");
    put_u32(&b, REALM_GGUF_FLOAT64);
    double d = 2.25;
    put(&b, &d, 8);
    put_str(&b, "test.strs");
    put_u32(&b, REALM_GGUF_ARRAY);
    put_u32(&b, s->bad_arr_type ? 77 : REALM_GGUF_STRING);
    put_u64(&b, s->huge_arr ? (1ull << 60) : 3);
    put_str(&b, "a");
    put_str(&b, "");
    put_str(&b, "ccc");
    put_str(&b, "test.nested"); /* array of 2 arrays of i32 */
    put_u32(&b, REALM_GGUF_ARRAY);
    put_u32(&b, REALM_GGUF_ARRAY);
    put_u64(&b, 2);
    for (int k = 0; k < 2; k++) {
        put_u32(&b, REALM_GGUF_INT32);
        put_u64(&b, 2);
        put_u32(&b, (uint32_t)k);
        put_u32(&b, (uint32_t)k + 10);
    }
    if (s->dup_key) {
        put_str(&b, "test.u32");
        put_u32(&b, REALM_GGUF_UINT32);
        put_u32(&b, 8);
    }
    if (s->deep_nesting) {
        put_str(&b, "test.deep");
        put_u32(&b, REALM_GGUF_ARRAY);
        for (int k = 0; k < 20; k++) {
            put_u32(&b, REALM_GGUF_ARRAY);
            put_u64(&b, 1);
        }
        put_u32(&b, REALM_GGUF_INT32);
        put_u64(&b, 0);
    }
    uint32_t align = s->alignment ? s->alignment : 32;
    if (s->alignment) {
        put_str(&b, "general.alignment");
        if (s->alignment_as_u64) {
            put_u32(&b, REALM_GGUF_UINT64);
            put_u64(&b, s->alignment);
        } else {
            put_u32(&b, REALM_GGUF_UINT32);
            put_u32(&b, s->alignment);
        }
    }
    put_str(&b, "test.last");
    put_u32(&b, REALM_GGUF_UINT16);
    uint16_t u16 = 513;
    put(&b, &u16, 2);

    /* tensor 0: F32 [64 x 2] (or as the spec says); tensor 1: Q8_0 [64 x 1] */
    uint32_t nd0 = s->n_dims ? s->n_dims : 2;
    uint64_t ne0 = s->ne0 ? s->ne0 : 64;
    uint32_t t0type = s->ttype_set ? s->ttype : REALM_TYPE_F32;
    put_str(&b, "t0");
    put_u32(&b, nd0);
    for (uint32_t k = 0; k < nd0 && k < 8; k++)
        put_u64(&b, k == 0 ? ne0 : (k == 1 && s->huge_ne1 ? s->huge_ne1 : 2));
    put_u32(&b, t0type);
    put_u64(&b, 0);
    size_t t0_bytes = 64 * 2 * 4;
    size_t t1_off = (t0_bytes + align - 1) / align * align;
    put_str(&b, s->dup_tensor ? "t0" : "t1");
    put_u32(&b, 2);
    put_u64(&b, 64);
    put_u64(&b, 1);
    put_u32(&b, REALM_TYPE_Q8_0);
    put_u64(&b, t1_off + s->offset_add);
    pad_to(&b, align);
    for (int k = 0; k < 128; k++)
        put_f32(&b, (float)k);
    pad_to(&b, align);
    for (int blk = 0; blk < 2; blk++) {
        uint16_t scale = 0x3c00; /* 1.0 */
        put(&b, &scale, 2);
        for (int k = 0; k < 32; k++)
            put_u8(&b, (uint8_t)k);
    }
    if (s->truncate_data) b.n -= 5;
    return b;
}

static int open_buf(const struct buf *b, struct realm_gguf **g, struct realm_err *err) {
    return realm_gguf_open_memory(b->p, b->n, "test.gguf", g, err);
}

static void test_valid(uint32_t version) {
    struct spec s = {.version = version};
    struct buf b = build(&s);
    struct realm_gguf *g = NULL;
    struct realm_err err;
    int rc = open_buf(&b, &g, &err);
    CHECKF(rc == REALM_OK, "%s", err.msg);
    if (rc) {
        free(b.p);
        return;
    }
    CHECK_EQ_INT(realm_gguf_version(g), version);
    CHECK_EQ_INT(realm_gguf_n_kv(g), 10);
    CHECK_EQ_INT(realm_gguf_n_tensors(g), 2);
    uint32_t u;
    CHECK(realm_gguf_get_u32(g, "test.u32", &u) && u == 7);
    CHECK(!realm_gguf_get_u32(g, "test.i8", &u));  /* negative: does not convert */
    CHECK(!realm_gguf_get_u32(g, "test.u64", &u)); /* too big for u32 */
    int64_t i64;
    CHECK(realm_gguf_get_i64(g, "test.i8", &i64) && i64 == -5);
    CHECK(realm_gguf_get_i64(g, "test.u64", &i64) && i64 == (1ll << 40));
    CHECK(realm_gguf_get_i64(g, "test.last", &i64) && i64 == 513);
    float f;
    CHECK(realm_gguf_get_f32(g, "test.f32", &f) && f == 1.5f);
    CHECK(realm_gguf_get_f32(g, "test.f64", &f) && f == 2.25f);
    bool bo;
    CHECK(realm_gguf_get_bool(g, "test.bool", &bo) && bo);
    const char *str;
    size_t len;
    CHECK(realm_gguf_get_str(g, "general.architecture", &str, &len) && len == 5 &&
          !memcmp(str, "llama", 5));
    CHECK(!realm_gguf_get_str(g, "test.u32", &str, &len));
    CHECK(!realm_gguf_get_u32(g, "no.such.key", &u));
    enum realm_gguf_vtype et;
    uint64_t n;
    CHECK(realm_gguf_get_arr(g, "test.strs", &et, &n, NULL) && et == REALM_GGUF_STRING && n == 3);
    CHECK(realm_gguf_arr_str(g, "test.strs", 2, &str, &len) && len == 3 && !memcmp(str, "ccc", 3));
    CHECK(realm_gguf_arr_str(g, "test.strs", 1, &str, &len) && len == 0);
    CHECK(!realm_gguf_arr_str(g, "test.strs", 3, &str, &len));
    CHECK(realm_gguf_get_arr(g, "test.nested", &et, &n, NULL) && et == REALM_GGUF_ARRAY && n == 2);
    struct realm_buf fmt = {0};
    CHECK(cli_gguf_kv_json(&fmt, g, realm_gguf_find_key(g, "test.strs"), 16) == REALM_OK);
    CHECKF(fmt.data && !strcmp(fmt.data, "[\"a\", \"\", \"ccc\"]"), "got %s", fmt.data);
    realm_buf_reset(&fmt);
    CHECK(cli_gguf_kv_json(&fmt, g, realm_gguf_find_key(g, "test.strs"), 2) == REALM_OK);
    CHECKF(fmt.data && !strcmp(fmt.data, "\"[str x 3]\""), "got %s", fmt.data);
    realm_buf_free(&fmt);
    const struct realm_gguf_tensor *t0 = realm_gguf_find_tensor(g, "t0"),
                                   *t1 = realm_gguf_find_tensor(g, "t1");
    CHECK(t0 && t1);
    if (t0 && t1) {
        CHECK_EQ_INT(t0->ne[0], 64);
        CHECK_EQ_INT(t0->ne[1], 2);
        CHECK_EQ_INT(t0->ne[2], 1);
        CHECK_EQ_INT(t0->size, 512);
        float v;
        memcpy(&v, (const char *)t0->data + 4 * 100, 4);
        CHECK(v == 100.0f);
        CHECK_EQ_INT(t1->size, 68);
        CHECK_EQ_INT(t1->type, REALM_TYPE_Q8_0);
        CHECK(((const unsigned char *)t1->data)[2 + 5] == 5);
        CHECK_EQ_INT(realm_gguf_data_offset(g) % 32, 0);
    }
    CHECK(realm_gguf_find_tensor(g, "t2") == NULL);

    /* every truncation of the valid file is refused without a crash */
    int all_refused = 1;
    for (size_t cut = 0; cut < b.n; cut++) {
        struct realm_gguf *gt = NULL;
        if (realm_gguf_open_memory(b.p, cut, "cut.gguf", &gt, &err) == REALM_OK) {
            all_refused = 0;
            realm_gguf_close(gt);
            tu_log("truncation at %zu accepted", cut);
        }
    }
    CHECK(all_refused);
    realm_gguf_close(g);
    free(b.p);
}

/* Builds the file described by s and checks it is refused with `code` and a message containing
 * `needle`. */
static void expect_refused(const char *what, struct spec s, int code, const char *needle) {
    struct buf b = build(&s);
    struct realm_gguf *g = NULL;
    struct realm_err err = {0};
    int rc = open_buf(&b, &g, &err);
    CHECKF(rc == code, "%s: status %d (%s), expected %d", what, rc, err.msg, code);
    CHECKF(rc == REALM_OK || strstr(err.msg, needle), "%s: message '%s' lacks '%s'", what, err.msg,
           needle);
    /* every refusal says why: a needle of "" still needs a message */
    CHECKF(rc == REALM_OK || (err.msg[0] && needle[0]), "%s: empty message or needle ('%s')", what,
           err.msg);
    CHECKF(rc == REALM_OK || !strchr(err.msg, '\n'), "%s: message is not one line", what);
    tu_log("%-28s -> %s", what, err.msg);
    if (rc == REALM_OK) realm_gguf_close(g);
    free(b.p);
}

static void test_rules(void) {
    expect_refused("bad magic", (struct spec){.magic = 0x12345678}, REALM_E_FORMAT, "bad magic");
    expect_refused("version 1", (struct spec){.version = 1}, REALM_E_UNSUPPORTED, "version 1");
    expect_refused("version 9", (struct spec){.version = 9}, REALM_E_FORMAT, "version 9");
    expect_refused("huge tensor count", (struct spec){.n_tensors_delta = 1ull << 62},
                   REALM_E_FORMAT, "tensor count");
    expect_refused("huge kv count", (struct spec){.n_kv_delta = 1ull << 62}, REALM_E_FORMAT,
                   "kv count");
    expect_refused("one kv too many", (struct spec){.n_kv_delta = 1}, REALM_E_FORMAT,
                   "tensor name");
    expect_refused("one tensor too many", (struct spec){.n_tensors_delta = 1}, REALM_E_FORMAT,
                   "dimensions");
    expect_refused("duplicate key", (struct spec){.dup_key = 1}, REALM_E_FORMAT,
                   "duplicate key 'test.u32'");
    expect_refused("unknown value type", (struct spec){.bad_vtype = 1}, REALM_E_FORMAT,
                   "unknown value type 99");
    expect_refused("unknown array type", (struct spec){.bad_arr_type = 1}, REALM_E_FORMAT,
                   "unknown array element type 77");
    expect_refused("huge array", (struct spec){.huge_arr = 1}, REALM_E_FORMAT, "test.strs");
    expect_refused("huge key length", (struct spec){.huge_key_len = 1}, REALM_E_FORMAT, "key");
    expect_refused("deep nesting", (struct spec){.deep_nesting = 1}, REALM_E_FORMAT,
                   "nested deeper");
    expect_refused("alignment 3", (struct spec){.alignment = 3}, REALM_E_FORMAT, "power of two");
    expect_refused("alignment as u64", (struct spec){.alignment = 64, .alignment_as_u64 = 1},
                   REALM_E_FORMAT, "general.alignment has type u64");
    expect_refused("0 dims", (struct spec){.n_dims = 0xffffffff}, REALM_E_FORMAT, "dimensions");
    expect_refused("5 dims", (struct spec){.n_dims = 5}, REALM_E_FORMAT, "5 dimensions");
    expect_refused("element overflow", (struct spec){.huge_ne1 = 1ull << 62}, REALM_E_FORMAT,
                   "overflow");
    expect_refused("unknown tensor type", (struct spec){.ttype = 5, .ttype_set = 1}, REALM_E_FORMAT,
                   "unknown type 5");
    expect_refused("row not whole blocks",
                   (struct spec){.ttype = REALM_TYPE_Q4_0, .ttype_set = 1, .ne0 = 48},
                   REALM_E_FORMAT, "not a multiple");
    expect_refused("misaligned offset", (struct spec){.offset_add = 4}, REALM_E_FORMAT,
                   "not a multiple of the alignment");
    expect_refused("offset past end", (struct spec){.offset_add = 1ull << 40}, REALM_E_FORMAT,
                   "tensor 't1' extends past end of file");
    expect_refused("offset wraps", (struct spec){.offset_add = UINT64_MAX - 543}, REALM_E_FORMAT,
                   "extends past");
    expect_refused("truncated data", (struct spec){.truncate_data = 1}, REALM_E_FORMAT,
                   "extends past end");
    expect_refused("duplicate tensor", (struct spec){.dup_tensor = 1}, REALM_E_FORMAT,
                   "duplicate tensor name 't0'");
    /* alignment 64 is fine */
    expect_refused("alignment 64 accepted", (struct spec){.alignment = 64}, REALM_OK, "");

    /* a file of zeros and an empty buffer */
    unsigned char zeros[4096] = {0};
    struct realm_gguf *g = NULL;
    struct realm_err err;
    CHECK(realm_gguf_open_memory(zeros, sizeof zeros, "zeros", &g, &err) == REALM_E_FORMAT);
    CHECK(strstr(err.msg, "bad magic") != NULL);
    CHECK(realm_gguf_open_memory(NULL, 0, "empty", &g, &err) == REALM_E_FORMAT);
}

/* Random single-byte and multi-byte mutations of a valid file: refused or accepted, never a
 * crash or a leak (ASan checks the rest). Accepted files must give in-bounds tensors. */
static void test_mutations(void) {
    struct spec s = {0};
    struct buf b = build(&s);
    tu_rng rng = {42};
    unsigned char *m = malloc(b.n);
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(m, b.p, b.n);
        int flips = 1 + (int)(tu_rand_u64(&rng) % 4);
        for (int k = 0; k < flips; k++)
            m[tu_rand_u64(&rng) % b.n] = (unsigned char)tu_rand_u64(&rng);
        struct realm_gguf *g = NULL;
        struct realm_err err;
        if (realm_gguf_open_memory(m, b.n, "mut", &g, &err) == REALM_OK) {
            accepted++;
            for (int64_t i = 0; i < realm_gguf_n_tensors(g); i++) {
                const struct realm_gguf_tensor *t = realm_gguf_tensor(g, i);
                CHECK((const unsigned char *)t->data + t->size <= m + b.n);
            }
            realm_gguf_close(g);
        } else {
            CHECK(err.msg[0] != '\0');
        }
    }
    tu_log("mutations accepted: %d / 20000", accepted);
    free(m);
    free(b.p);
}

static void test_open_errors(void) {
    struct realm_gguf *g = NULL;
    struct realm_err err;
    CHECK(realm_gguf_open("/nonexistent/x.gguf", &g, &err) == REALM_E_IO);
    CHECK(strstr(err.msg, "/nonexistent/x.gguf: cannot open") != NULL);
    CHECK(realm_gguf_open("/", &g, &err) == REALM_E_IO);
    /* the reader cleans up on every path: allocations balance after failures */
    int64_t before = realm_alloc_bytes_in_use();
    struct spec s = {.dup_tensor = 1};
    struct buf b = build(&s);
    CHECK(open_buf(&b, &g, &err) != REALM_OK);
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), before);
    free(b.p);
    /* allocation failure at every step is reported as NOMEM and leaks nothing */
    struct spec ok = {0};
    b = build(&ok);
    for (int n = 0; n < 40; n++) {
        realm_alloc_fail_after(n);
        int rc = open_buf(&b, &g, &err);
        realm_alloc_fail_after(-1);
        if (rc == REALM_OK) {
            realm_gguf_close(g);
            break;
        }
        CHECKF(rc == REALM_E_NOMEM, "fail_after %d gave %d (%s)", n, rc, err.msg);
    }
    CHECK_EQ_INT(realm_alloc_bytes_in_use(), before);
    free(b.p);
}

/* `test_gguf --write-seeds DIR` writes the valid handcrafted files as the fuzzer's seed corpus. */
static int write_seeds(const char *dir) {
    struct spec specs[] = {{0}, {.version = 2}, {.alignment = 64}, {.alignment = 8}};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        struct buf b = build(&specs[i]);
        char path[1024];
        snprintf(path, sizeof path, "%s/seed%zu.gguf", dir, i);
        if (tu_write_file(path, b.p, b.n)) return 1;
        free(b.p);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    tu_init(argc, argv);
    test_valid(3);
    test_valid(2);
    test_rules();
    test_mutations();
    test_open_errors();
    return tu_finish("test_gguf");
}
