/* gguf_json.c — see gguf_json.h. */
#include "cli/gguf_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "realm/status.h"

/* JSON has no NaN or infinities: those are written as the strings "nan", "inf", "-inf". */
static int float_json(struct realm_buf *b, double x, int digits) {
    if (isnan(x)) return realm_buf_puts(b, "\"nan\"");
    if (isinf(x)) return realm_buf_puts(b, x > 0 ? "\"inf\"" : "\"-inf\"");
    return realm_buf_printf(b, "%.*g", digits, x);
}

/* One fixed-size scalar of type t at p (little-endian, possibly unaligned). */
static int scalar_json(struct realm_buf *b, enum realm_gguf_vtype t, const uint8_t *p) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
    } v;
    size_t n = realm_gguf_vtype_size(t);
    if (!n || n > sizeof v) return REALM_OK;
    memcpy(&v, p, n);
    switch (t) {
    case REALM_GGUF_UINT8:
        return realm_buf_printf(b, "%u", (unsigned)v.u8);
    case REALM_GGUF_INT8:
        return realm_buf_printf(b, "%d", (int)v.i8);
    case REALM_GGUF_UINT16:
        return realm_buf_printf(b, "%u", (unsigned)v.u16);
    case REALM_GGUF_INT16:
        return realm_buf_printf(b, "%d", (int)v.i16);
    case REALM_GGUF_UINT32:
        return realm_buf_printf(b, "%" PRIu32, v.u32);
    case REALM_GGUF_INT32:
        return realm_buf_printf(b, "%" PRId32, v.i32);
    case REALM_GGUF_UINT64:
        return realm_buf_printf(b, "%" PRIu64, v.u64);
    case REALM_GGUF_INT64:
        return realm_buf_printf(b, "%" PRId64, v.i64);
    case REALM_GGUF_FLOAT32:
        return float_json(b, (double)v.f32, 9);
    case REALM_GGUF_FLOAT64:
        return float_json(b, v.f64, 17);
    case REALM_GGUF_BOOL:
        return realm_buf_puts(b, v.u8 ? "true" : "false");
    default:
        return REALM_OK;
    }
}

static int array_json(struct realm_buf *b, const struct realm_gguf *g, int64_t i, int max_items) {
    enum realm_gguf_vtype et;
    uint64_t n;
    const void *data;
    if (!realm_gguf_kv_arr(g, i, &et, &n, &data)) return REALM_OK;
    if (n > (uint64_t)(max_items < 0 ? 0 : max_items) || et == REALM_GGUF_ARRAY)
        return realm_buf_printf(b, "\"[%s x %" PRIu64 "]\"", realm_gguf_vtype_name(et), n);
    int rc = realm_buf_puts(b, "[");
    size_t es = realm_gguf_vtype_size(et);
    for (uint64_t j = 0; j < n && !rc; j++) {
        if (j) rc = realm_buf_puts(b, ", ");
        if (et == REALM_GGUF_STRING) {
            const char *s;
            size_t len;
            if (!rc && realm_gguf_kv_arr_str(g, i, j, &s, &len))
                rc = realm_buf_json_string(b, s, len);
        } else if (!rc) {
            rc = scalar_json(b, et, (const uint8_t *)data + j * es);
        }
    }
    return rc || realm_buf_puts(b, "]");
}

int cli_gguf_kv_json(struct realm_buf *b, const struct realm_gguf *g, int64_t i, int max_items) {
    enum realm_gguf_vtype t = realm_gguf_kv_type(g, i);
    if (t == REALM_GGUF_VTYPE_COUNT) return REALM_OK;
    if (t == REALM_GGUF_STRING) {
        const char *s;
        size_t n;
        return realm_gguf_kv_str(g, i, &s, &n) ? realm_buf_json_string(b, s, n) : REALM_OK;
    }
    if (t == REALM_GGUF_ARRAY) return array_json(b, g, i, max_items);
    const void *p;
    return realm_gguf_kv_scalar(g, i, &p) ? scalar_json(b, t, p) : REALM_OK;
}
