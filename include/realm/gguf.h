/*
 * gguf.h — a validating, memory-mapped reader of GGUF files (versions 2 and 3).
 *
 * File grammar (little-endian):
 *   header:  u32 magic "GGUF" | u32 version (2|3) | u64 n_tensors | u64 n_kv
 *   kv[n_kv]:      string key | u32 value_type | value
 *   tensor[n_tensors]: string name | u32 n_dims (1..4) | u64 ne[n_dims] | u32 type | u64 offset
 *   padding to `general.alignment` (default 32, a power of two)
 *   tensor data: each tensor at data_offset + offset, offset a multiple of the alignment
 *   string = u64 len | len bytes (not NUL-terminated); array = u32 elem_type | u64 n | elems
 *
 * Everything is validated before it is trusted (counts against the file size, string and array
 * lengths, nesting depth, overflow of n_elements × type size, offsets inside the file and aligned,
 * duplicate keys and tensor names, unknown value and tensor types). A failure returns a specific
 * status and message, never crashes.
 *
 * Ownership: a realm_gguf owns its mapping (or borrows the caller's buffer for
 * realm_gguf_open_memory) and a small index. Every pointer returned by the accessors points into
 * the mapping or the index and stays valid until realm_gguf_close.
 * Thread rule: after open, a realm_gguf is immutable; all accessors are thread-safe.
 */
#ifndef REALM_GGUF_H
#define REALM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "realm/err.h"

enum realm_gguf_vtype {
    REALM_GGUF_UINT8 = 0,
    REALM_GGUF_INT8 = 1,
    REALM_GGUF_UINT16 = 2,
    REALM_GGUF_INT16 = 3,
    REALM_GGUF_UINT32 = 4,
    REALM_GGUF_INT32 = 5,
    REALM_GGUF_FLOAT32 = 6,
    REALM_GGUF_BOOL = 7,
    REALM_GGUF_STRING = 8,
    REALM_GGUF_ARRAY = 9,
    REALM_GGUF_UINT64 = 10,
    REALM_GGUF_INT64 = 11,
    REALM_GGUF_FLOAT64 = 12,
    REALM_GGUF_VTYPE_COUNT = 13,
};

#define REALM_GGUF_MAX_DIMS 4

struct realm_gguf;

struct realm_gguf_tensor {
    const char *name;                /* NUL-terminated copy */
    uint32_t n_dims;                 /* 1..4 */
    int64_t ne[REALM_GGUF_MAX_DIMS]; /* ne[0] = row length (contiguous); unused dims are 1 */
    uint32_t type;                   /* enum realm_type */
    uint64_t offset;                 /* relative to the data section */
    size_t size;                     /* bytes */
    const void *data;                /* points into the mapping */
};

/* Opens and validates `path`. On success *out owns the mapping.
 * Ownership: returns owned (*out, free with realm_gguf_close). Nothing on failure.
 * Errors: REALM_E_IO (open/stat/mmap; message names the file and errno text), REALM_E_FORMAT
 * (message names the first rule broken), REALM_E_UNSUPPORTED (version), REALM_E_NOMEM. */
int realm_gguf_open(const char *path, struct realm_gguf **out, struct realm_err *err);

/* Same over a caller's buffer (fuzzing, tests). The buffer is borrowed and must outlive the
 * realm_gguf. `name` is used in messages only (copied). Errors: as realm_gguf_open but
 * REALM_E_IO. */
int realm_gguf_open_memory(const void *data, size_t size, const char *name, struct realm_gguf **out,
                           struct realm_err *err);

/* Unmaps and frees; NULL is a no-op. */
void realm_gguf_close(struct realm_gguf *g);

/* File facts: the GGUF version (2 or 3), the file's size in bytes, general.alignment (32 when
 * absent), the data section's offset from the start of the file, and the path it was opened
 * with (the `name` for realm_gguf_open_memory; a copy owned by g). Cannot fail on an open g. */
uint32_t realm_gguf_version(const struct realm_gguf *g);
size_t realm_gguf_file_size(const struct realm_gguf *g);
uint64_t realm_gguf_alignment(const struct realm_gguf *g);
uint64_t realm_gguf_data_offset(const struct realm_gguf *g);
const char *realm_gguf_path(const struct realm_gguf *g);

/* ---- metadata ---- */
int64_t realm_gguf_n_kv(const struct realm_gguf *g);
/* Index of key `name`, or -1. */
int64_t realm_gguf_find_key(const struct realm_gguf *g, const char *name);
/* Key i (NUL-terminated, lifetime g's), or NULL when i is outside 0..n_kv-1. */
const char *realm_gguf_key(const struct realm_gguf *g, int64_t i);
/* Value type of key i, or REALM_GGUF_VTYPE_COUNT when i is out of range. */
enum realm_gguf_vtype realm_gguf_kv_type(const struct realm_gguf *g, int64_t i);

/* Typed getters by key name. They return true and write *out only if the key exists and its
 * value converts exactly (any integer type whose value fits; f32/f64 for floats; bool). */
bool realm_gguf_get_u32(const struct realm_gguf *g, const char *key, uint32_t *out);
bool realm_gguf_get_i64(const struct realm_gguf *g, const char *key, int64_t *out);
bool realm_gguf_get_f32(const struct realm_gguf *g, const char *key, float *out);
bool realm_gguf_get_bool(const struct realm_gguf *g, const char *key, bool *out);
/* String value: *out points into the mapping (not NUL-terminated; lifetime g's), *len its
 * length. False (nothing written) when the key is absent or not a string. */
bool realm_gguf_get_str(const struct realm_gguf *g, const char *key, const char **out, size_t *len);

/* Arrays. realm_gguf_get_arr gives the element type and count of an array key (nested arrays
 * have element type REALM_GGUF_ARRAY). For arrays of fixed-size numbers, *data points at the
 * packed little-endian elements in the mapping (possibly unaligned: read with memcpy or the
 * helpers below). */
bool realm_gguf_get_arr(const struct realm_gguf *g, const char *key,
                        enum realm_gguf_vtype *elem_type, uint64_t *n, const void **data);
/* Element i of a string array (bounds-checked; false if not a string array or i out of range). */
bool realm_gguf_arr_str(const struct realm_gguf *g, const char *key, uint64_t i, const char **out,
                        size_t *len);
/* Same but by kv index, for fast loops over big vocabularies. */
bool realm_gguf_kv_arr_str(const struct realm_gguf *g, int64_t kv, uint64_t i, const char **out,
                           size_t *len);

/* Size in bytes of a value type (0 for STRING/ARRAY/unknown) and its name ("u32", "arr" ...). */
size_t realm_gguf_vtype_size(enum realm_gguf_vtype t);
const char *realm_gguf_vtype_name(enum realm_gguf_vtype t);

/* Values by kv index, for code that walks every key (`realm info`). False (nothing written) when
 * i is out of range or the value is not of that kind. Pointers point into the mapping (lifetime
 * g's; possibly unaligned: read with memcpy). realm_gguf_kv_scalar: the little-endian bytes of a
 * fixed-size scalar (realm_gguf_vtype_size(type) of them). realm_gguf_kv_str: a string value, not
 * NUL-terminated. realm_gguf_kv_arr: an array's element type, count and, for fixed-size elements,
 * the packed elements (string elements: realm_gguf_kv_arr_str). */
bool realm_gguf_kv_scalar(const struct realm_gguf *g, int64_t i, const void **p);
bool realm_gguf_kv_str(const struct realm_gguf *g, int64_t i, const char **out, size_t *len);
bool realm_gguf_kv_arr(const struct realm_gguf *g, int64_t i, enum realm_gguf_vtype *elem_type,
                       uint64_t *n, const void **data);

/* ---- tensors ---- */
int64_t realm_gguf_n_tensors(const struct realm_gguf *g);
/* Tensor i in file order, or NULL when i is outside 0..n_tensors-1. Lifetime: g's. */
const struct realm_gguf_tensor *realm_gguf_tensor(const struct realm_gguf *g, int64_t i);
/* By name, or NULL. Lifetime: g's. */
const struct realm_gguf_tensor *realm_gguf_find_tensor(const struct realm_gguf *g,
                                                       const char *name);

#endif
