/*
 * types.h — tensor element types as numbered by GGML/GGUF (the numbers are the file format),
 * with block size and bytes per block. The table lives in src/quant/types.c.
 * Thread rule: read-only data, thread-safe.
 */
#ifndef REALM_TYPES_H
#define REALM_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum realm_type {
    REALM_TYPE_F32 = 0,
    REALM_TYPE_F16 = 1,
    REALM_TYPE_Q4_0 = 2,
    REALM_TYPE_Q4_1 = 3,
    /* 4, 5: removed Q4_2/Q4_3 */
    REALM_TYPE_Q5_0 = 6,
    REALM_TYPE_Q5_1 = 7,
    REALM_TYPE_Q8_0 = 8,
    REALM_TYPE_Q8_1 = 9,
    REALM_TYPE_Q2_K = 10,
    REALM_TYPE_Q3_K = 11,
    REALM_TYPE_Q4_K = 12,
    REALM_TYPE_Q5_K = 13,
    REALM_TYPE_Q6_K = 14,
    REALM_TYPE_Q8_K = 15,
    REALM_TYPE_IQ2_XXS = 16,
    REALM_TYPE_IQ2_XS = 17,
    REALM_TYPE_IQ3_XXS = 18,
    REALM_TYPE_IQ1_S = 19,
    REALM_TYPE_IQ4_NL = 20,
    REALM_TYPE_IQ3_S = 21,
    REALM_TYPE_IQ2_S = 22,
    REALM_TYPE_IQ4_XS = 23,
    REALM_TYPE_I8 = 24,
    REALM_TYPE_I16 = 25,
    REALM_TYPE_I32 = 26,
    REALM_TYPE_I64 = 27,
    REALM_TYPE_F64 = 28,
    REALM_TYPE_IQ1_M = 29,
    REALM_TYPE_BF16 = 30,
    /* 31..33 removed Q4_0_4_4 ... */
    REALM_TYPE_TQ1_0 = 34,
    REALM_TYPE_TQ2_0 = 35,
    /* 36..38 removed IQ4_NL_4_4 ... */
    REALM_TYPE_MXFP4 = 39,
    REALM_TYPE_COUNT = 40,
};

struct realm_type_info {
    const char *name;   /* "q4_K" ...; NULL for unused numbers */
    int64_t block_size; /* elements per block */
    size_t type_size;   /* bytes per block */
};

/* Info for a type number, or NULL if the number is not a known type. */
const struct realm_type_info *realm_type_get(uint32_t type);

/* Bytes of a row of n elements, or 0 if n is not a multiple of the block size / type unknown. */
size_t realm_type_row_size(uint32_t type, int64_t n);

#endif
