/*
 * blocks.h — the block layouts of the GGML quantization formats. These structs ARE the file
 * format (tensor data in a GGUF file is an array of them), so they reproduce
 * ggml/src/ggml-common.h byte for byte; a _Static_assert after each checks size and padding.
 * Every scale stored as "half" is an IEEE binary16 bit pattern (uint16_t), converted with
 * quant_f16_to_f32 (quant.h).
 *
 * Thread rule: type definitions only.
 */
#ifndef REALM_QUANT_BLOCKS_H
#define REALM_QUANT_BLOCKS_H

#include <stdint.h>

typedef uint16_t quant_half; /* IEEE binary16 bits */

/* ---- legacy formats: blocks of 32 weights ---- */

#define QK4_0 32
/* 4.5 bits per weight: w = d * (q - 8), q in [0, 15] */
typedef struct {
    quant_half d;          /* delta */
    uint8_t qs[QK4_0 / 2]; /* nibbles: low nibble of byte j = weight j, high = weight j + 16 */
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 2 + QK4_0 / 2, "wrong q4_0 block size/padding");

#define QK4_1 32
/* 5 bits per weight: w = d * q + m, q in [0, 15] */
typedef struct {
    quant_half d;          /* delta */
    quant_half m;          /* min */
    uint8_t qs[QK4_1 / 2]; /* nibbles, as q4_0 */
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 4 + QK4_1 / 2, "wrong q4_1 block size/padding");

#define QK5_0 32
/* 5.5 bits per weight: w = d * (q - 16), q in [0, 31]; bit 4 of weight j is bit j of qh */
typedef struct {
    quant_half d;          /* delta */
    uint8_t qh[4];         /* 5th bits (little-endian uint32) */
    uint8_t qs[QK5_0 / 2]; /* low 4 bits, as q4_0 */
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 2 + 4 + QK5_0 / 2, "wrong q5_0 block size/padding");

#define QK5_1 32
/* 6 bits per weight: w = d * q + m, q in [0, 31] */
typedef struct {
    quant_half d;          /* delta */
    quant_half m;          /* min */
    uint8_t qh[4];         /* 5th bits */
    uint8_t qs[QK5_1 / 2]; /* low 4 bits */
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 4 + 4 + QK5_1 / 2, "wrong q5_1 block size/padding");

#define QK8_0 32
/* 8.5 bits per weight: w = d * q */
typedef struct {
    quant_half d;     /* delta */
    int8_t qs[QK8_0]; /* quants */
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 2 + QK8_0, "wrong q8_0 block size/padding");

#define QK8_1 32
/* 9 bits per weight; activation format paired with q4_1 / q5_1 */
typedef struct {
    quant_half d;     /* delta */
    quant_half s;     /* d * sum(qs), rounded to half */
    int8_t qs[QK8_1]; /* quants */
} block_q8_1;
_Static_assert(sizeof(block_q8_1) == 4 + QK8_1, "wrong q8_1 block size/padding");

/* ---- K-quants: super-blocks of 256 weights ---- */

#define QK_K 256
#define K_SCALE_SIZE 12

/* 2.625 bits per weight. 16 sub-blocks of 16; w = d * (scales[j] & 15) * q - dmin * (scales[j] >>
 * 4) */
typedef struct {
    uint8_t scales[QK_K / 16]; /* scales (low nibble) and mins (high nibble), 4 bits each */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    quant_half d;              /* super-block scale for the scales */
    quant_half dmin;           /* super-block scale for the mins */
} block_q2_K;
_Static_assert(sizeof(block_q2_K) == 2 * 2 + QK_K / 16 + QK_K / 4, "wrong q2_K block size/padding");

/* 3.4375 bits per weight. 16 sub-blocks of 16, 6-bit signed scales (offset 32) */
typedef struct {
    uint8_t hmask[QK_K / 8];      /* high bit of the 3-bit quants */
    uint8_t qs[QK_K / 4];         /* low 2 bits */
    uint8_t scales[K_SCALE_SIZE]; /* 16 scales, 6 bits each, packed */
    quant_half d;                 /* super-block scale */
} block_q3_K;
_Static_assert(sizeof(block_q3_K) == 2 + QK_K / 4 + QK_K / 8 + 12, "wrong q3_K block size/padding");

/* 4.5 bits per weight. 8 sub-blocks of 32; w = d * sc[j] * q - dmin * m[j], 6-bit sc/m */
typedef struct {
    quant_half d;                 /* super-block scale for the scales */
    quant_half dmin;              /* super-block scale for the mins */
    uint8_t scales[K_SCALE_SIZE]; /* scales and mins, 6 bits each, packed (get_scale_min_k4) */
    uint8_t qs[QK_K / 2];         /* 4-bit quants */
} block_q4_K;
_Static_assert(sizeof(block_q4_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2,
               "wrong q4_K block size/padding");

/* 5.5 bits per weight. As q4_K with a 5th bit per weight in qh */
typedef struct {
    quant_half d;                 /* super-block scale for the scales */
    quant_half dmin;              /* super-block scale for the mins */
    uint8_t scales[K_SCALE_SIZE]; /* scales and mins, 6 bits each */
    uint8_t qh[QK_K / 8];         /* 5th bits */
    uint8_t qs[QK_K / 2];         /* low 4 bits */
} block_q5_K;
_Static_assert(sizeof(block_q5_K) == 2 * 2 + K_SCALE_SIZE + QK_K / 2 + QK_K / 8,
               "wrong q5_K block size/padding");

/* 6.5625 bits per weight. 16 sub-blocks of 16; w = d * scales[j] * (q - 32), q in [0, 63] */
typedef struct {
    uint8_t ql[QK_K / 2];     /* low 4 bits */
    uint8_t qh[QK_K / 4];     /* high 2 bits */
    int8_t scales[QK_K / 16]; /* 8-bit signed scales */
    quant_half d;             /* super-block scale */
} block_q6_K;
_Static_assert(sizeof(block_q6_K) == 2 + QK_K / 16 + 3 * QK_K / 4, "wrong q6_K block size/padding");

/* Activation format of the K-quant dot products (not stored in files): a float scale, the
 * quants, and the sum of each group of 16 quants (used for the min / offset terms). */
typedef struct {
    float d;                  /* delta */
    int8_t qs[QK_K];          /* quants */
    int16_t bsums[QK_K / 16]; /* sum of quants in groups of 16 */
} block_q8_K;
_Static_assert(sizeof(block_q8_K) == sizeof(float) + QK_K + QK_K / 16 * sizeof(int16_t),
               "wrong q8_K block size/padding");

#endif
