/*
 * sample.c — what sampling a token costs with top-k 0 over a large vocabulary (issue 20 target:
 * <= 0.5 ms per token over 262,144 logits, natively and in the guest):
 *
 *   bench_sample [-n 262144] [--iters 40] [--guest FILE.wasm | --no-guest] [--instances N]
 *                [--json]
 *
 * Natively, then inside the sandbox (tests/guests/bench_sample.wasm, the same code compiled to
 * wasm32 with the guest SDK): per parameter set and logit shape, the median time per token of
 * the fast selection (realm_sample_pick) and of the full-sort reference
 * (realm_sample_pick_sorted), and how many tokens the two picked differently (must be 0).
 * --instances sizes the sandbox's pool (2 by default: 4 GiB slots, no bounds checks; 100000:
 * slots sized by the memory cap, bounds-checked guest code).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "realm/sandbox.h"
#include "sample_bench.h"

static int64_t native_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct row {
    int peaked, set;
    struct sb_result native, guest;
    int have_guest;
};

static int collect(void *user, const char *text, size_t len) {
    struct row *rows = user;
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), text);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        int peaked, set, mism;
        long long f, s, fm, sm;
        if (sscanf(line, "%d %d %lld %lld %d %lld %lld", &peaked, &set, &f, &s, &mism, &fm, &sm) !=
            7)
            continue;
        if (set < 0 || set >= SB_N_PARAMS || (peaked != 0 && peaked != 1)) continue;
        struct row *r = &rows[(1 - peaked) * SB_N_PARAMS + set];
        r->guest = (struct sb_result){f, s, fm, sm, mism};
        r->have_guest = 1;
    }
    return 0;
}

static int run_guest(const char *path, int32_t n, int iters, uint32_t instances, struct row *rows) {
    struct realm_sbx_config c = {0};
    c.cache_dir = "";
    c.max_instances = instances;
    c.generate_budget_ms = 600000;
    c.memory_limit = 256ull << 20;
    struct realm_sbx_host *h = NULL;
    struct realm_sbx_module *m = NULL;
    struct realm_sbx_tenant *t = NULL;
    struct realm_err err;
    if (realm_sbx_host_new(&c, &h, &err) || realm_sbx_module_load(h, path, &m, &err) ||
        realm_sbx_tenant_new(h, m, NULL, &t, &err)) {
        fprintf(stderr, "bench_sample: %s: %s\n", path, err.msg);
        realm_sbx_module_free(m);
        realm_sbx_host_free(h);
        return 1;
    }
    char req[128];
    snprintf(req, sizeof req, "{\"n_vocab\":%d,\"iters\":%d}", n, iters);
    struct realm_sbx_request rq;
    realm_sbx_request_init(&rq, req, strlen(req), collect, rows);
    int rc = realm_sbx_tenant_generate(t, &rq, &err);
    if (rc) fprintf(stderr, "bench_sample: guest: %s\n", err.msg);
    realm_sbx_tenant_free(t);
    realm_sbx_module_free(m);
    realm_sbx_host_free(h);
    return rc != 0;
}

/* build/bench_sample → build/tests/guests/bench_sample.wasm */
static void default_guest(char *buf, size_t cap) {
    char exe[4096];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(buf, cap, "%s/tests/guests/bench_sample.wasm", k > 0 ? exe : "build");
}

int main(int argc, char **argv) {
    int32_t n = 262144;
    int iters = 40, json = 0, guest_on = 1, instances = 2;
    char guest[4200];
    default_guest(guest, sizeof guest);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--no-guest"))
            guest_on = 0;
        else if (v && !strcmp(a, "-n"))
            n = atoi(v), i++;
        else if (v && !strcmp(a, "--iters"))
            iters = atoi(v), i++;
        else if (v && !strcmp(a, "--instances"))
            instances = atoi(v), i++;
        else if (v && !strcmp(a, "--guest"))
            snprintf(guest, sizeof guest, "%s", v), i++;
        else {
            fprintf(stderr, "usage: bench_sample [-n 262144] [--iters 40] [--guest FILE.wasm | "
                            "--no-guest] [--instances N] [--json]\n");
            return 2;
        }
    }
    if (n < 1 || n > (1 << 22) || iters < 1 || instances < 1) return 2;
    struct row rows[2 * SB_N_PARAMS] = {0};
    for (int peaked = 1; peaked >= 0; peaked--)
        for (int k = 0; k < SB_N_PARAMS; k++) {
            struct row *r = &rows[(1 - peaked) * SB_N_PARAMS + k];
            r->peaked = peaked, r->set = k;
            if (sb_run(n, iters, peaked, &SB_PARAMS[k], native_clock, &r->native)) return 1;
        }
    int rc = guest_on ? run_guest(guest, n, iters, (uint32_t)instances, rows) : 0;
    int bad = 0;
    for (int i = 0; i < 2 * SB_N_PARAMS; i++) {
        struct row *r = &rows[i];
        bad += r->native.mismatches + (r->have_guest ? r->guest.mismatches : 0);
        if (json) {
            printf("{\"n_vocab\":%d,\"shape\":\"%s\",\"params\":\"%s\",\"native_ms\":%.4f,"
                   "\"native_sorted_ms\":%.4f,\"native_min_ms\":%.4f,\"native_sorted_min_ms\":%.4f",
                   n, r->peaked ? "peaked" : "flat", SB_NAMES[r->set], r->native.fast_ns * 1e-6,
                   r->native.sorted_ns * 1e-6, r->native.fast_min_ns * 1e-6,
                   r->native.sorted_min_ns * 1e-6);
            if (r->have_guest)
                printf(",\"guest_ms\":%.4f,\"guest_sorted_ms\":%.4f,\"guest_min_ms\":%.4f,"
                       "\"guest_sorted_min_ms\":%.4f",
                       r->guest.fast_ns * 1e-6, r->guest.sorted_ns * 1e-6,
                       r->guest.fast_min_ns * 1e-6, r->guest.sorted_min_ns * 1e-6);
            printf(",\"mismatches\":%d}\n",
                   r->native.mismatches + (r->have_guest ? r->guest.mismatches : 0));
        } else {
            if (i == 0)
                printf("%-7s %-26s %15s %15s %15s %15s  (ms/token: median/min of %d, n_vocab "
                       "%d)\n",
                       "logits", "params", "native", "native sorted", "guest", "guest sorted",
                       iters, n);
            printf("%-7s %-26s %7.3f/%-7.3f %7.3f/%-7.3f", r->peaked ? "peaked" : "flat",
                   SB_NAMES[r->set], r->native.fast_ns * 1e-6, r->native.fast_min_ns * 1e-6,
                   r->native.sorted_ns * 1e-6, r->native.sorted_min_ns * 1e-6);
            if (r->have_guest)
                printf(" %7.3f/%-7.3f %7.3f/%-7.3f", r->guest.fast_ns * 1e-6,
                       r->guest.fast_min_ns * 1e-6, r->guest.sorted_ns * 1e-6,
                       r->guest.sorted_min_ns * 1e-6);
            printf("\n");
        }
    }
    if (bad) fprintf(stderr, "bench_sample: %d tokens differ between fast and sorted\n", bad);
    return rc || bad ? 1 : 0;
}
