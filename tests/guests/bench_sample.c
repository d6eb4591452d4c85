/*
 * bench_sample.c — the sampling benchmark inside the sandbox (bench/sample.c runs it after its
 * native half): the same logits, parameter sets and timing as natively (bench/sample_bench.h),
 * with the guest's clock. Request {"n_vocab": 262144, "iters": 40}; emits one line per shape
 * and parameter set: "<peaked> <set> <fast ns> <sorted ns> <mismatches> <fast min ns> <sorted
 * min ns>" (medians, then minima).
 */
#include "../../bench/sample_bench.h"
#include "check.h"

RG_EXPORT(realm_init) int32_t realm_init(void) {
    return REALM_OK;
}

static int64_t guest_clock(void) {
    return realm_now_ns();
}

RG_EXPORT(realm_generate) int32_t realm_generate(void) {
    struct rj_value *req = read_request();
    int32_t n_vocab = (int32_t)rj_number(rj_get(req, "n_vocab"), 262144);
    int iters = (int)rj_number(rj_get(req, "iters"), 40);
    rj_free(req);
    if (n_vocab < 1 || n_vocab > (1 << 22) || iters < 1 || iters > 100000) return REALM_E_INVALID;
    for (int peaked = 1; peaked >= 0; peaked--)
        for (int k = 0; k < SB_N_PARAMS; k++) {
            struct sb_result res;
            if (sb_run(n_vocab, iters, peaked, &SB_PARAMS[k], guest_clock, &res))
                return REALM_E_NOMEM;
            char line[160];
            int len = rg_fmt(line, sizeof line, "%d %d %lld %lld %d %lld %lld\n", peaked, k,
                             (long long)res.fast_ns, (long long)res.sorted_ns, res.mismatches,
                             (long long)res.fast_min_ns, (long long)res.sorted_min_ns);
            realm_emit(line, len);
        }
    return REALM_OK;
}
