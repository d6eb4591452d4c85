/*
 * dispatch.c — chooses the kernel ISA once per process: CPUID for the instruction sets, XGETBV
 * for the OS saving the YMM / ZMM state, then $REALM_ISA if set. Builds one ops table per ISA:
 * the scalar reference for every type, then each SIMD file overwrites the entries it has kernels
 * for (the AVX-512 table starts as a copy of the AVX2 one), so a type without a variant runs the
 * best lower one.
 *
 * Thread rule: the tables are written once under pthread_once (realm_quant_init, also run by
 * every lookup) and read-only afterwards; every function is thread-safe.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "realm/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QUANT_X86 1
#endif

/* ---- Globals: the dispatch tables, written once under g_once, read-only afterwards ---- */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct realm_quant_ops g_tab[REALM_ISA_COUNT][REALM_TYPE_COUNT];
static int g_supported[REALM_ISA_COUNT];
static enum realm_isa g_isa;

static const char *const g_isa_names[REALM_ISA_COUNT] = {"scalar", "avx2", "avx512"};

const char *realm_quant_isa_name(enum realm_isa isa) {
    return (unsigned)isa < REALM_ISA_COUNT ? g_isa_names[isa] : "unknown";
}

#ifdef QUANT_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

/* Fills g_supported from CPUID leaf 1 / leaf 7 and XCR0. */
static void detect(void) {
    g_supported[REALM_ISA_SCALAR] = 1;
#ifdef QUANT_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1,
              f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    const uint64_t xcr0 = xgetbv0();
    const int os_ymm = (xcr0 & 0x6) == 0x6;   /* SSE + AVX state */
    const int os_zmm = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int avx2 = (b >> 5) & 1;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    const int vnni = (c >> 11) & 1;
    g_supported[REALM_ISA_AVX2] = os_ymm && avx2 && fma && f16c;
    g_supported[REALM_ISA_AVX512] =
        g_supported[REALM_ISA_AVX2] && os_zmm && f && dq && bw && vl && vnni;
#endif
}

static void set_ops(struct realm_quant_ops *t, uint32_t type, uint32_t vdt, quant_dequantize_fn dq,
                    quant_quantize_fn q, quant_vec_dot_fn dot) {
    t[type] = (struct realm_quant_ops){
        .type = type,
        .vec_dot_type = vdt,
        .dequantize_row = dq,
        .quantize_row = q,
        .vec_dot = dot,
        .matmul = dot ? quant_matmul_generic : NULL,
    };
}

static void fill_scalar(struct realm_quant_ops *t) {
    set_ops(t, REALM_TYPE_F32, REALM_TYPE_F32, quant_dequantize_row_f32, quant_quantize_row_f32,
            quant_vec_dot_f32_f32);
    set_ops(t, REALM_TYPE_F16, REALM_TYPE_F32, quant_dequantize_row_f16, quant_quantize_row_f16,
            quant_vec_dot_f16_f32);
    set_ops(t, REALM_TYPE_BF16, REALM_TYPE_F32, quant_dequantize_row_bf16, quant_quantize_row_bf16,
            quant_vec_dot_bf16_f32);
    set_ops(t, REALM_TYPE_Q8_0, REALM_TYPE_Q8_0, quant_dequantize_row_q8_0, quant_quantize_row_q8_0,
            quant_vec_dot_q8_0_q8_0);
    set_ops(t, REALM_TYPE_Q4_0, REALM_TYPE_Q8_0, quant_dequantize_row_q4_0, quant_quantize_row_q4_0,
            quant_vec_dot_q4_0_q8_0);
    set_ops(t, REALM_TYPE_Q4_1, REALM_TYPE_Q8_1, quant_dequantize_row_q4_1, quant_quantize_row_q4_1,
            quant_vec_dot_q4_1_q8_1);
    set_ops(t, REALM_TYPE_Q5_0, REALM_TYPE_Q8_0, quant_dequantize_row_q5_0, quant_quantize_row_q5_0,
            quant_vec_dot_q5_0_q8_0);
    set_ops(t, REALM_TYPE_Q5_1, REALM_TYPE_Q8_1, quant_dequantize_row_q5_1, quant_quantize_row_q5_1,
            quant_vec_dot_q5_1_q8_1);
    /* K-quants: realm reads them, it does not create them (no weight quantizer) */
    set_ops(t, REALM_TYPE_Q2_K, REALM_TYPE_Q8_K, quant_dequantize_row_q2_K, NULL,
            quant_vec_dot_q2_K_q8_K);
    set_ops(t, REALM_TYPE_Q3_K, REALM_TYPE_Q8_K, quant_dequantize_row_q3_K, NULL,
            quant_vec_dot_q3_K_q8_K);
    set_ops(t, REALM_TYPE_Q4_K, REALM_TYPE_Q8_K, quant_dequantize_row_q4_K, NULL,
            quant_vec_dot_q4_K_q8_K);
    set_ops(t, REALM_TYPE_Q5_K, REALM_TYPE_Q8_K, quant_dequantize_row_q5_K, NULL,
            quant_vec_dot_q5_K_q8_K);
    set_ops(t, REALM_TYPE_Q6_K, REALM_TYPE_Q8_K, quant_dequantize_row_q6_K, NULL,
            quant_vec_dot_q6_K_q8_K);
    /* activation-only formats: no vec_dot */
    set_ops(t, REALM_TYPE_Q8_1, REALM_TYPE_Q8_1, quant_dequantize_row_q8_1, quant_quantize_row_q8_1,
            NULL);
    set_ops(t, REALM_TYPE_Q8_K, REALM_TYPE_Q8_K, quant_dequantize_row_q8_K, quant_quantize_row_q8_K,
            NULL);
}

static void init_once(void) {
    detect();
    fill_scalar(g_tab[REALM_ISA_SCALAR]);
    memcpy(g_tab[REALM_ISA_AVX2], g_tab[REALM_ISA_SCALAR], sizeof g_tab[0]);
    if (g_supported[REALM_ISA_AVX2]) quant_fill_ops_avx2(g_tab[REALM_ISA_AVX2]);
    memcpy(g_tab[REALM_ISA_AVX512], g_tab[REALM_ISA_AVX2], sizeof g_tab[0]);
    if (g_supported[REALM_ISA_AVX512]) quant_fill_ops_avx512(g_tab[REALM_ISA_AVX512]);

    enum realm_isa best = REALM_ISA_SCALAR;
    for (int i = 0; i < REALM_ISA_COUNT; i++)
        if (g_supported[i]) best = (enum realm_isa)i;
    g_isa = best;

    const char *env = getenv("REALM_ISA");
    if (env && *env) {
        int want = -1;
        for (int i = 0; i < REALM_ISA_COUNT; i++)
            if (!strcmp(env, g_isa_names[i])) want = i;
        if (want < 0)
            realm_log(REALM_LOG_WARN, "quant",
                      "REALM_ISA=%s: unknown (scalar|avx2|avx512); using %s", env,
                      g_isa_names[best]);
        else if (!g_supported[want])
            realm_log(REALM_LOG_WARN, "quant",
                      "REALM_ISA=%s: not supported by this CPU/OS; using %s", env,
                      g_isa_names[best]);
        else
            g_isa = (enum realm_isa)want;
    }
    realm_log(REALM_LOG_DEBUG, "quant", "kernels: %s", g_isa_names[g_isa]);
}

void realm_quant_init(void) {
    pthread_once(&g_once, init_once);
}

enum realm_isa realm_quant_isa(void) {
    realm_quant_init();
    return g_isa;
}

int realm_quant_isa_supported(enum realm_isa isa) {
    realm_quant_init();
    return (unsigned)isa < REALM_ISA_COUNT && g_supported[isa];
}

const struct realm_quant_ops *realm_quant_ops_isa(uint32_t type, enum realm_isa isa) {
    realm_quant_init();
    if ((unsigned)isa >= REALM_ISA_COUNT || !g_supported[isa] || type >= REALM_TYPE_COUNT)
        return NULL;
    const struct realm_quant_ops *o = &g_tab[isa][type];
    return o->dequantize_row ? o : NULL;
}

const struct realm_quant_ops *realm_quant_ops(uint32_t type) {
    return realm_quant_ops_isa(type, realm_quant_isa());
}
