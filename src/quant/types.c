/*
 * types.c — the GGML type table: block sizes and bytes per block (ggml.c type_traits,
 * reproduced as data). The formats realm implements take both from their structs in blocks.h
 * (one definition of each layout); the others, which realm only recognizes in a file, keep
 * ggml's byte counts. Read-only.
 */
#include "realm/types.h"

#include "quant/blocks.h"

static const struct realm_type_info g_types[REALM_TYPE_COUNT] = {
    [REALM_TYPE_F32] = {"f32", 1, 4},
    [REALM_TYPE_F16] = {"f16", 1, 2},
    [REALM_TYPE_Q4_0] = {"q4_0", QK4_0, sizeof(block_q4_0)},
    [REALM_TYPE_Q4_1] = {"q4_1", QK4_1, sizeof(block_q4_1)},
    [REALM_TYPE_Q5_0] = {"q5_0", QK5_0, sizeof(block_q5_0)},
    [REALM_TYPE_Q5_1] = {"q5_1", QK5_1, sizeof(block_q5_1)},
    [REALM_TYPE_Q8_0] = {"q8_0", QK8_0, sizeof(block_q8_0)},
    [REALM_TYPE_Q8_1] = {"q8_1", QK8_1, sizeof(block_q8_1)},
    [REALM_TYPE_Q2_K] = {"q2_K", QK_K, sizeof(block_q2_K)},
    [REALM_TYPE_Q3_K] = {"q3_K", QK_K, sizeof(block_q3_K)},
    [REALM_TYPE_Q4_K] = {"q4_K", QK_K, sizeof(block_q4_K)},
    [REALM_TYPE_Q5_K] = {"q5_K", QK_K, sizeof(block_q5_K)},
    [REALM_TYPE_Q6_K] = {"q6_K", QK_K, sizeof(block_q6_K)},
    [REALM_TYPE_Q8_K] = {"q8_K", QK_K, sizeof(block_q8_K)},
    [REALM_TYPE_IQ2_XXS] = {"iq2_xxs", QK_K, 2 + QK_K / 8 * 2},
    [REALM_TYPE_IQ2_XS] = {"iq2_xs", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32},
    [REALM_TYPE_IQ3_XXS] = {"iq3_xxs", QK_K, 2 + QK_K / 4 + QK_K / 8},
    [REALM_TYPE_IQ1_S] = {"iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16},
    [REALM_TYPE_IQ4_NL] = {"iq4_nl", 32, 2 + 16},
    [REALM_TYPE_IQ3_S] = {"iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4},
    [REALM_TYPE_IQ2_S] = {"iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16},
    [REALM_TYPE_IQ4_XS] = {"iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2},
    [REALM_TYPE_I8] = {"i8", 1, 1},
    [REALM_TYPE_I16] = {"i16", 1, 2},
    [REALM_TYPE_I32] = {"i32", 1, 4},
    [REALM_TYPE_I64] = {"i64", 1, 8},
    [REALM_TYPE_F64] = {"f64", 1, 8},
    [REALM_TYPE_IQ1_M] = {"iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32},
    [REALM_TYPE_BF16] = {"bf16", 1, 2},
    [REALM_TYPE_TQ1_0] = {"tq1_0", QK_K, (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + 2},
    [REALM_TYPE_TQ2_0] = {"tq2_0", QK_K, 2 + QK_K / 4},
    [REALM_TYPE_MXFP4] = {"mxfp4", 32, 1 + 16},
};

const struct realm_type_info *realm_type_get(uint32_t type) {
    if (type >= REALM_TYPE_COUNT || !g_types[type].name) return NULL;
    return &g_types[type];
}

size_t realm_type_row_size(uint32_t type, int64_t n) {
    const struct realm_type_info *t = realm_type_get(type);
    if (!t || n < 0 || n % t->block_size) return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}
