/*
 * gguf.c — validating GGUF reader (see include/realm/gguf.h for the file grammar and contract).
 *
 * The file is parsed fully, front to back, by a bounds-checked cursor before any state is
 * exposed: every count is checked against the bytes left, every multiplication for overflow,
 * every offset against the file size and the alignment. The first broken rule ends parsing with
 * REALM_E_FORMAT and a message naming the object and what was found versus expected.
 *
 * Owns: the mapping (unless opened over a caller's buffer), the kv and tensor tables, a copy of
 * every key and tensor name (NUL-terminated), and per string-array an offset table for O(1)
 * element access. Immutable after open; thread-safe to read.
 */
#include "realm/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/types.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
#define MAX_KEY_LEN 65535 /* keys are short ASCII paths; a bigger one is garbage */
#define MAX_NAME_LEN 1024 /* ggml's GGML_MAX_NAME is 64; be lenient but bounded */
#define MAX_ARRAY_DEPTH 8 /* nested arrays deeper than this are rejected */

struct kv {
    const char *key; /* NUL-terminated copy */
    enum realm_gguf_vtype type;
    const uint8_t *val; /* the value's bytes in the mapping (after the type field) */
    /* arrays only */
    enum realm_gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data; /* first element */
    uint64_t *str_off;       /* string arrays: offset (from arr_data) of each element's length */
};

struct realm_gguf {
    char *path;
    const uint8_t *base;
    size_t size;
    int mapped; /* 1: munmap on close */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    struct kv *kvs;
    int64_t n_tensors;
    struct realm_gguf_tensor *tensors;
    /* open-addressing hash indexes (size a power of two, -1 = empty) */
    int64_t *key_index;
    uint64_t key_index_cap;
    int64_t *tensor_index;
    uint64_t tensor_index_cap;
};

/* ---- bounds-checked cursor ---- */

struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
    const char *name; /* file name for messages */
    struct realm_err *err;
};

static size_t remaining(const struct cursor *c) {
    return c->size - c->pos;
}

static int need(struct cursor *c, uint64_t n, const char *what) {
    if (n > remaining(c))
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: %s at offset %zu needs %" PRIu64
                             " bytes, file has %zu left (truncated?)",
                             c->name, what, c->pos, n, remaining(c));
    return REALM_OK;
}

static int read_u32(struct cursor *c, uint32_t *out, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    memcpy(out, c->base + c->pos, 4);
    c->pos += 4;
    return REALM_OK;
}

static int read_u64(struct cursor *c, uint64_t *out, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    memcpy(out, c->base + c->pos, 8);
    c->pos += 8;
    return REALM_OK;
}

/* A GGUF string: u64 length + bytes. *s points into the file. */
static int read_str(struct cursor *c, const char **s, uint64_t *len, uint64_t max_len,
                    const char *what) {
    int rc = read_u64(c, len, what);
    if (rc) return rc;
    if (*len > max_len)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: %s at offset %zu has length %" PRIu64 ", limit %" PRIu64, c->name,
                             what, c->pos - 8, *len, max_len);
    if ((rc = need(c, *len, what))) return rc;
    *s = (const char *)c->base + c->pos;
    c->pos += *len;
    return REALM_OK;
}

/* ---- value types ---- */

size_t realm_gguf_vtype_size(enum realm_gguf_vtype t) {
    switch (t) {
    case REALM_GGUF_UINT8:
    case REALM_GGUF_INT8:
    case REALM_GGUF_BOOL:
        return 1;
    case REALM_GGUF_UINT16:
    case REALM_GGUF_INT16:
        return 2;
    case REALM_GGUF_UINT32:
    case REALM_GGUF_INT32:
    case REALM_GGUF_FLOAT32:
        return 4;
    case REALM_GGUF_UINT64:
    case REALM_GGUF_INT64:
    case REALM_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

const char *realm_gguf_vtype_name(enum realm_gguf_vtype t) {
    static const char *names[REALM_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
    return (unsigned)t < REALM_GGUF_VTYPE_COUNT ? names[t] : "?";
}

static int valid_vtype(uint32_t t) {
    return t < REALM_GGUF_VTYPE_COUNT;
}

/* Skips over one value of type t (validating nested arrays); used for elements of nested arrays. */
static int skip_value(struct cursor *c, uint32_t t, int depth, const char *key);

static int skip_array_body(struct cursor *c, uint32_t et, uint64_t n, int depth, const char *key) {
    if (!valid_vtype(et))
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: key '%s': unknown array element type %u",
                             c->name, key, et);
    size_t es = realm_gguf_vtype_size(et);
    if (es) {
        uint64_t bytes;
        if (realm_mul_u64(n, es, &bytes))
            return realm_err_set(c->err, REALM_E_FORMAT,
                                 "%s: key '%s': array of %" PRIu64 " elements overflows", c->name,
                                 key, n);
        int rc = need(c, bytes, "array data");
        if (rc) return rc;
        c->pos += bytes;
        return REALM_OK;
    }
    /* strings take at least 8 bytes each, arrays at least 12: reject impossible counts early so a
     * forged count cannot make us loop for long */
    uint64_t min = et == REALM_GGUF_STRING ? 8 : 12;
    if (n > remaining(c) / min)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: key '%s': array claims %" PRIu64 " elements, only %zu bytes left",
                             c->name, key, n, remaining(c));
    for (uint64_t i = 0; i < n; i++) {
        int rc = skip_value(c, et, depth, key);
        if (rc) return rc;
    }
    return REALM_OK;
}

static int skip_value(struct cursor *c, uint32_t t, int depth, const char *key) {
    if (t == REALM_GGUF_STRING) {
        const char *s;
        uint64_t len;
        return read_str(c, &s, &len, UINT64_MAX, "string value");
    }
    if (t == REALM_GGUF_ARRAY) {
        if (depth >= MAX_ARRAY_DEPTH)
            return realm_err_set(c->err, REALM_E_FORMAT,
                                 "%s: key '%s': arrays nested deeper than %d", c->name, key,
                                 MAX_ARRAY_DEPTH);
        uint32_t et;
        uint64_t n;
        int rc = read_u32(c, &et, "array type");
        if (!rc) rc = read_u64(c, &n, "array length");
        if (!rc) rc = skip_array_body(c, et, n, depth + 1, key);
        return rc;
    }
    size_t es = realm_gguf_vtype_size((enum realm_gguf_vtype)t);
    int rc = need(c, es, "value");
    if (rc) return rc;
    c->pos += es;
    return REALM_OK;
}

/* ---- hash indexes ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static int64_t *index_new(int64_t n, uint64_t *cap_out) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2)
        cap <<= 1;
    int64_t *idx = realm_malloc(cap * sizeof *idx);
    if (!idx) return NULL;
    memset(idx, 0xff, cap * sizeof *idx); /* all -1 */
    *cap_out = cap;
    return idx;
}

/* Looks up `name`; name_of(i) gives the name of entry i. Returns the entry or -1, and the slot. */
typedef const char *(*name_fn)(const struct realm_gguf *g, int64_t i);

static int64_t index_find(const struct realm_gguf *g, const int64_t *idx, uint64_t cap,
                          name_fn name_of, const char *name, uint64_t *slot_out) {
    uint64_t slot = hash_str(name) & (cap - 1);
    for (;;) {
        int64_t e = idx[slot];
        if (e < 0 || !strcmp(name_of(g, e), name)) {
            if (slot_out) *slot_out = slot;
            return e;
        }
        slot = (slot + 1) & (cap - 1);
    }
}

static const char *kv_name(const struct realm_gguf *g, int64_t i) {
    return g->kvs[i].key;
}
static const char *tensor_name(const struct realm_gguf *g, int64_t i) {
    return g->tensors[i].name;
}

/* ---- parsing ---- */

static int parse_kv(struct realm_gguf *g, struct cursor *c, int64_t i) {
    struct kv *kv = &g->kvs[i];
    const char *key;
    uint64_t key_len;
    int rc = read_str(c, &key, &key_len, MAX_KEY_LEN, "key");
    if (rc) return rc;
    if (key_len == 0)
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: key %" PRId64 " is empty", c->name, i);
    if (memchr(key, 0, key_len))
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: key %" PRId64 " contains a NUL byte",
                             c->name, i);
    if (!(kv->key = realm_strndup(key, key_len)))
        return realm_err_set(c->err, REALM_E_NOMEM, "%s: out of memory", c->name);

    uint64_t slot;
    if (index_find(g, g->key_index, g->key_index_cap, kv_name, kv->key, &slot) >= 0)
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: duplicate key '%s'", c->name, kv->key);
    g->key_index[slot] = i;

    uint32_t t;
    if ((rc = read_u32(c, &t, "value type"))) return rc;
    if (!valid_vtype(t))
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: key '%s': unknown value type %u", c->name,
                             kv->key, t);
    kv->type = (enum realm_gguf_vtype)t;
    kv->val = c->base + c->pos;
    if (t != REALM_GGUF_ARRAY) return skip_value(c, t, 0, kv->key);

    uint32_t et;
    if ((rc = read_u32(c, &et, "array type")) || (rc = read_u64(c, &kv->arr_n, "array length")))
        return rc;
    if (!valid_vtype(et))
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: key '%s': unknown array element type %u",
                             c->name, kv->key, et);
    kv->arr_type = (enum realm_gguf_vtype)et;
    kv->arr_data = c->base + c->pos;
    if (et != REALM_GGUF_STRING) return skip_array_body(c, et, kv->arr_n, 1, kv->key);

    /* string array: record each element's offset for random access */
    if (kv->arr_n > remaining(c) / 8)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: key '%s': array claims %" PRIu64 " strings, only %zu bytes left",
                             c->name, kv->key, kv->arr_n, remaining(c));
    kv->str_off = realm_malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *kv->str_off);
    if (!kv->str_off) return realm_err_set(c->err, REALM_E_NOMEM, "%s: out of memory", c->name);
    for (uint64_t j = 0; j < kv->arr_n; j++) {
        kv->str_off[j] = (uint64_t)(c->base + c->pos - kv->arr_data);
        const char *s;
        uint64_t len;
        if ((rc = read_str(c, &s, &len, UINT64_MAX, "string element"))) return rc;
    }
    return REALM_OK;
}

static int parse_alignment(struct realm_gguf *g, struct cursor *c) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = realm_gguf_find_key(g, "general.alignment");
    if (i < 0) return REALM_OK;
    if (g->kvs[i].type != REALM_GGUF_UINT32)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: general.alignment has type %s, expected u32", c->name,
                             realm_gguf_vtype_name(g->kvs[i].type));
    uint32_t a;
    memcpy(&a, g->kvs[i].val, 4);
    if (a == 0 || (a & (a - 1)))
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: general.alignment is %u, expected a power of two", c->name, a);
    g->alignment = a;
    return REALM_OK;
}

static int parse_tensor_info(struct realm_gguf *g, struct cursor *c, int64_t i) {
    struct realm_gguf_tensor *t = &g->tensors[i];
    const char *name;
    uint64_t name_len;
    int rc = read_str(c, &name, &name_len, MAX_NAME_LEN, "tensor name");
    if (rc) return rc;
    if (memchr(name, 0, name_len))
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor %" PRId64 " name contains a NUL byte", c->name, i);
    if (!(t->name = realm_strndup(name, name_len)))
        return realm_err_set(c->err, REALM_E_NOMEM, "%s: out of memory", c->name);

    uint64_t slot;
    if (index_find(g, g->tensor_index, g->tensor_index_cap, tensor_name, t->name, &slot) >= 0)
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: duplicate tensor name '%s'", c->name,
                             t->name);
    g->tensor_index[slot] = i;

    if ((rc = read_u32(c, &t->n_dims, "tensor n_dims"))) return rc;
    if (t->n_dims < 1 || t->n_dims > REALM_GGUF_MAX_DIMS)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor '%s' has %u dimensions, expected 1..%d", c->name, t->name,
                             t->n_dims, REALM_GGUF_MAX_DIMS);
    uint64_t n_elem = 1;
    for (int d = 0; d < REALM_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if ((uint32_t)d < t->n_dims && (rc = read_u64(c, &ne, "tensor dimension"))) return rc;
        if (ne > (uint64_t)INT64_MAX || realm_mul_u64(n_elem, ne, &n_elem) ||
            n_elem > (uint64_t)INT64_MAX)
            return realm_err_set(c->err, REALM_E_FORMAT, "%s: tensor '%s': element count overflows",
                                 c->name, t->name);
        t->ne[d] = (int64_t)ne;
    }
    if ((rc = read_u32(c, &t->type, "tensor type"))) return rc;
    const struct realm_type_info *ti = realm_type_get(t->type);
    if (!ti)
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: tensor '%s' has unknown type %u", c->name,
                             t->name, t->type);
    if (t->ne[0] % ti->block_size)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor '%s': row length %" PRId64
                             " is not a multiple of the %s block size %" PRId64,
                             c->name, t->name, t->ne[0], ti->name, ti->block_size);
    uint64_t size;
    if (realm_mul_u64(n_elem / (uint64_t)ti->block_size, ti->type_size, &size) || size > SIZE_MAX)
        return realm_err_set(c->err, REALM_E_FORMAT, "%s: tensor '%s': byte size overflows",
                             c->name, t->name);
    t->size = (size_t)size;
    if ((rc = read_u64(c, &t->offset, "tensor offset"))) return rc;
    if (t->offset % g->alignment)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor '%s': offset %" PRIu64
                             " is not a multiple of the alignment %" PRIu64,
                             c->name, t->name, t->offset, g->alignment);
    return REALM_OK;
}

/* After all infos: the data section starts at the next aligned offset; every tensor must lie
 * inside the file. */
static int place_tensors(struct realm_gguf *g, struct cursor *c) {
    uint64_t start = c->pos;
    uint64_t pad = (g->alignment - start % g->alignment) % g->alignment;
    g->data_offset = start + pad;
    if (g->n_tensors > 0 && g->data_offset > c->size)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor data section starts at %" PRIu64
                             " past end of file (%zu bytes)",
                             c->name, g->data_offset, c->size);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        struct realm_gguf_tensor *t = &g->tensors[i];
        uint64_t begin, end;
        if (realm_add_u64(g->data_offset, t->offset, &begin) ||
            realm_add_u64(begin, t->size, &end) || end > c->size)
            return realm_err_set(c->err, REALM_E_FORMAT,
                                 "%s: tensor '%s' extends past end of file (offset %" PRIu64
                                 " + %zu bytes, data at %" PRIu64 ", file %zu bytes)",
                                 c->name, t->name, t->offset, t->size, g->data_offset, c->size);
        t->data = c->base + begin;
    }
    return REALM_OK;
}

static int parse(struct realm_gguf *g, struct cursor *c) {
    uint32_t magic;
    int rc;
    if (c->size < 24)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: file has %zu bytes, a GGUF header needs 24", c->name, c->size);
    if ((rc = read_u32(c, &magic, "magic"))) return rc;
    if (magic != GGUF_MAGIC)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: bad magic 0x%08x, expected 0x%08x (\"GGUF\")", c->name, magic,
                             GGUF_MAGIC);
    if ((rc = read_u32(c, &g->version, "version"))) return rc;
    if (g->version != 2 && g->version != 3)
        return realm_err_set(c->err, g->version == 1 ? REALM_E_UNSUPPORTED : REALM_E_FORMAT,
                             "%s: GGUF version %u, expected 2 or 3", c->name, g->version);
    uint64_t n_tensors, n_kv;
    if ((rc = read_u64(c, &n_tensors, "tensor count")) || (rc = read_u64(c, &n_kv, "kv count")))
        return rc;
    /* each kv takes at least 8 (key len) + 1 + 4 + 1 bytes, each tensor info at least 8 + 1 + 4 + 8
     * + 4 + 8 */
    if (n_kv > remaining(c) / 14)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: kv count %" PRIu64 " is impossible for a %zu-byte file", c->name,
                             n_kv, c->size);
    if (n_tensors > remaining(c) / 33)
        return realm_err_set(c->err, REALM_E_FORMAT,
                             "%s: tensor count %" PRIu64 " is impossible for a %zu-byte file",
                             c->name, n_tensors, c->size);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kvs = realm_calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->tensors = realm_calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    g->key_index = index_new(g->n_kv, &g->key_index_cap);
    g->tensor_index = index_new(g->n_tensors, &g->tensor_index_cap);
    if (!g->kvs || !g->tensors || !g->key_index || !g->tensor_index)
        return realm_err_set(c->err, REALM_E_NOMEM, "%s: out of memory", c->name);
    for (int64_t i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(g, c, i))) return rc;
    if ((rc = parse_alignment(g, c))) return rc;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor_info(g, c, i))) return rc;
    return place_tensors(g, c);
}

/* ---- open / close ---- */

static int open_common(const uint8_t *data, size_t size, const char *name, int mapped,
                       struct realm_gguf **out, struct realm_err *err) {
    struct realm_gguf *g = realm_calloc(1, sizeof *g);
    if (!g || !(g->path = realm_strndup(name, strlen(name)))) {
        realm_free(g);
        return realm_err_set(err, REALM_E_NOMEM, "%s: out of memory", name);
    }
    g->base = data;
    g->size = size;
    g->mapped = mapped;
    struct cursor c = {.base = data, .size = size, .pos = 0, .name = name, .err = err};
    int rc = parse(g, &c);
    if (rc) {
        g->mapped = 0; /* the caller unmaps on failure */
        realm_gguf_close(g);
        return rc;
    }
    *out = g;
    return REALM_OK;
}

int realm_gguf_open_memory(const void *data, size_t size, const char *name, struct realm_gguf **out,
                           struct realm_err *err) {
    if (!data && size) return realm_err_set(err, REALM_E_INVALID, "gguf: NULL buffer");
    static const uint8_t empty[1];
    return open_common(data ? data : empty, size, name ? name : "<memory>", 0, out, err);
}

int realm_gguf_open(const char *path, struct realm_gguf **out, struct realm_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return realm_err_set(err, REALM_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return realm_err_set(err, REALM_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return realm_err_set(err, REALM_E_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 24) {
        close(fd);
        return realm_err_set(err, REALM_E_FORMAT, "%s: file has %zu bytes, a GGUF header needs 24",
                             path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (map == MAP_FAILED)
        return realm_err_set(err, REALM_E_IO, "%s: cannot mmap: %s", path, strerror(e));
    int rc = open_common(map, size, path, 1, out, err);
    if (rc) munmap(map, size);
    return rc;
}

void realm_gguf_close(struct realm_gguf *g) {
    if (!g) return;
    if (g->kvs)
        for (int64_t i = 0; i < g->n_kv; i++) {
            realm_free((void *)g->kvs[i].key);
            realm_free(g->kvs[i].str_off);
        }
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++)
            realm_free((void *)g->tensors[i].name);
    realm_free(g->kvs);
    realm_free(g->tensors);
    realm_free(g->key_index);
    realm_free(g->tensor_index);
    if (g->mapped) munmap((void *)g->base, g->size);
    realm_free(g->path);
    realm_free(g);
}

/* ---- accessors ---- */

uint32_t realm_gguf_version(const struct realm_gguf *g) {
    return g->version;
}
size_t realm_gguf_file_size(const struct realm_gguf *g) {
    return g->size;
}
uint64_t realm_gguf_alignment(const struct realm_gguf *g) {
    return g->alignment;
}
uint64_t realm_gguf_data_offset(const struct realm_gguf *g) {
    return g->data_offset;
}
const char *realm_gguf_path(const struct realm_gguf *g) {
    return g->path;
}
int64_t realm_gguf_n_kv(const struct realm_gguf *g) {
    return g->n_kv;
}
int64_t realm_gguf_n_tensors(const struct realm_gguf *g) {
    return g->n_tensors;
}

int64_t realm_gguf_find_key(const struct realm_gguf *g, const char *name) {
    return index_find(g, g->key_index, g->key_index_cap, kv_name, name, NULL);
}

const char *realm_gguf_key(const struct realm_gguf *g, int64_t i) {
    return (i >= 0 && i < g->n_kv) ? g->kvs[i].key : NULL;
}

enum realm_gguf_vtype realm_gguf_kv_type(const struct realm_gguf *g, int64_t i) {
    return (i >= 0 && i < g->n_kv) ? g->kvs[i].type : REALM_GGUF_VTYPE_COUNT;
}

const struct realm_gguf_tensor *realm_gguf_tensor(const struct realm_gguf *g, int64_t i) {
    return (i >= 0 && i < g->n_tensors) ? &g->tensors[i] : NULL;
}

const struct realm_gguf_tensor *realm_gguf_find_tensor(const struct realm_gguf *g,
                                                       const char *name) {
    int64_t i = index_find(g, g->tensor_index, g->tensor_index_cap, tensor_name, name, NULL);
    return i >= 0 ? &g->tensors[i] : NULL;
}

static const struct kv *find_kv(const struct realm_gguf *g, const char *key) {
    int64_t i = realm_gguf_find_key(g, key);
    return i >= 0 ? &g->kvs[i] : NULL;
}

/* Integer value of a scalar kv as signed/unsigned 64-bit; false if not an integer type. */
static bool kv_int(enum realm_gguf_vtype t, const uint8_t *p, int64_t *s, uint64_t *u,
                   bool *is_signed) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
    } v;
    size_t n = realm_gguf_vtype_size(t);
    if (!n || t == REALM_GGUF_FLOAT32 || t == REALM_GGUF_FLOAT64 || t == REALM_GGUF_BOOL)
        return false;
    memcpy(&v, p, n);
    *is_signed = true;
    switch (t) {
    case REALM_GGUF_UINT8:
        *u = v.u8;
        *is_signed = false;
        break;
    case REALM_GGUF_UINT16:
        *u = v.u16;
        *is_signed = false;
        break;
    case REALM_GGUF_UINT32:
        *u = v.u32;
        *is_signed = false;
        break;
    case REALM_GGUF_UINT64:
        *u = v.u64;
        *is_signed = false;
        break;
    case REALM_GGUF_INT8:
        *s = v.i8;
        break;
    case REALM_GGUF_INT16:
        *s = v.i16;
        break;
    case REALM_GGUF_INT32:
        *s = v.i32;
        break;
    case REALM_GGUF_INT64:
        *s = v.i64;
        break;
    default:
        return false;
    }
    return true;
}

bool realm_gguf_get_u32(const struct realm_gguf *g, const char *key, uint32_t *out) {
    const struct kv *kv = find_kv(g, key);
    int64_t s = 0;
    uint64_t u = 0;
    bool sig;
    if (!kv || !kv_int(kv->type, kv->val, &s, &u, &sig)) return false;
    if (sig) {
        if (s < 0 || s > (int64_t)UINT32_MAX) return false;
        *out = (uint32_t)s;
    } else {
        if (u > UINT32_MAX) return false;
        *out = (uint32_t)u;
    }
    return true;
}

bool realm_gguf_get_i64(const struct realm_gguf *g, const char *key, int64_t *out) {
    const struct kv *kv = find_kv(g, key);
    int64_t s = 0;
    uint64_t u = 0;
    bool sig;
    if (!kv || !kv_int(kv->type, kv->val, &s, &u, &sig)) return false;
    if (!sig) {
        if (u > (uint64_t)INT64_MAX) return false;
        s = (int64_t)u;
    }
    *out = s;
    return true;
}

bool realm_gguf_get_f32(const struct realm_gguf *g, const char *key, float *out) {
    const struct kv *kv = find_kv(g, key);
    if (!kv) return false;
    if (kv->type == REALM_GGUF_FLOAT32) {
        memcpy(out, kv->val, 4);
        return true;
    }
    if (kv->type == REALM_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool realm_gguf_get_bool(const struct realm_gguf *g, const char *key, bool *out) {
    const struct kv *kv = find_kv(g, key);
    if (!kv || kv->type != REALM_GGUF_BOOL) return false;
    *out = kv->val[0] != 0;
    return true;
}

static void str_at(const uint8_t *p, const char **out, size_t *len) {
    uint64_t n;
    memcpy(&n, p, 8);
    *len = (size_t)n; /* validated at parse time to lie inside the file */
    *out = (const char *)p + 8;
}

bool realm_gguf_get_str(const struct realm_gguf *g, const char *key, const char **out,
                        size_t *len) {
    const struct kv *kv = find_kv(g, key);
    if (!kv || kv->type != REALM_GGUF_STRING) return false;
    str_at(kv->val, out, len);
    return true;
}

bool realm_gguf_get_arr(const struct realm_gguf *g, const char *key,
                        enum realm_gguf_vtype *elem_type, uint64_t *n, const void **data) {
    const struct kv *kv = find_kv(g, key);
    if (!kv || kv->type != REALM_GGUF_ARRAY) return false;
    if (elem_type) *elem_type = kv->arr_type;
    if (n) *n = kv->arr_n;
    if (data) *data = kv->arr_data;
    return true;
}

bool realm_gguf_kv_arr_str(const struct realm_gguf *g, int64_t kvi, uint64_t i, const char **out,
                           size_t *len) {
    if (kvi < 0 || kvi >= g->n_kv) return false;
    const struct kv *kv = &g->kvs[kvi];
    if (kv->type != REALM_GGUF_ARRAY || kv->arr_type != REALM_GGUF_STRING || i >= kv->arr_n)
        return false;
    str_at(kv->arr_data + kv->str_off[i], out, len);
    return true;
}

bool realm_gguf_arr_str(const struct realm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len) {
    return realm_gguf_kv_arr_str(g, realm_gguf_find_key(g, key), i, out, len);
}

/* ---- values by kv index (the `realm info` formatter in src/cli reads through these) ---- */

bool realm_gguf_kv_scalar(const struct realm_gguf *g, int64_t i, const void **p) {
    if (i < 0 || i >= g->n_kv) return false;
    const struct kv *kv = &g->kvs[i];
    if (kv->type == REALM_GGUF_STRING || kv->type == REALM_GGUF_ARRAY ||
        !realm_gguf_vtype_size(kv->type))
        return false;
    *p = kv->val;
    return true;
}

bool realm_gguf_kv_str(const struct realm_gguf *g, int64_t i, const char **out, size_t *len) {
    if (i < 0 || i >= g->n_kv || g->kvs[i].type != REALM_GGUF_STRING) return false;
    str_at(g->kvs[i].val, out, len);
    return true;
}

bool realm_gguf_kv_arr(const struct realm_gguf *g, int64_t i, enum realm_gguf_vtype *elem_type,
                       uint64_t *n, const void **data) {
    if (i < 0 || i >= g->n_kv || g->kvs[i].type != REALM_GGUF_ARRAY) return false;
    const struct kv *kv = &g->kvs[i];
    if (elem_type) *elem_type = kv->arr_type;
    if (n) *n = kv->arr_n;
    if (data) *data = kv->arr_data;
    return true;
}
