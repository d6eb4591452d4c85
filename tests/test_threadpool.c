/*
 * test_threadpool.c — the thread pool: every thread runs each task once, the barrier orders
 * memory between phases, repeated dispatch (spinning and sleeping workers) never loses a wake-up,
 * and realm_split covers [0, n) exactly.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "realm/threadpool.h"
#include "testutil.h"

#define MAXT 16
#define N_PHASES 200

struct count_task {
    _Atomic int calls[MAXT];
    _Atomic int64_t sum;
};

static void count_fn(void *arg, int ith, int nth) {
    struct count_task *t = arg;
    atomic_fetch_add(&t->calls[ith], 1);
    int64_t lo, hi, s = 0;
    realm_split(100000, ith, nth, 1, &lo, &hi);
    for (int64_t i = lo; i < hi; i++)
        s += i;
    atomic_fetch_add(&t->sum, s);
}

/* Each phase: thread i writes slot[i] = phase, barrier, then checks every slot holds phase. */
struct barrier_task {
    struct realm_threadpool *pool;
    int slot[MAXT];
    _Atomic int errors;
};

static void barrier_fn(void *arg, int ith, int nth) {
    struct barrier_task *t = arg;
    for (int ph = 1; ph <= N_PHASES; ph++) {
        t->slot[ith] = ph;
        realm_threadpool_barrier(t->pool);
        for (int j = 0; j < nth; j++)
            if (t->slot[j] != ph) atomic_fetch_add(&t->errors, 1);
        realm_threadpool_barrier(t->pool);
    }
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void test_pool(int n) {
    struct realm_threadpool *p = NULL;
    struct realm_err err;
    CHECK_EQ_INT(realm_threadpool_new(n, &p, &err), REALM_OK);
    if (!p) return;
    CHECK_EQ_INT(realm_threadpool_n_threads(p), n);

    static struct count_task ct;
    for (int i = 0; i < MAXT; i++)
        atomic_store(&ct.calls[i], 0);
    atomic_store(&ct.sum, 0);
    const int reps = 300;
    for (int r = 0; r < reps; r++) {
        realm_threadpool_run(p, count_fn, &ct);
        if (r % 50 == 49) sleep_us(2000); /* let workers go to sleep sometimes */
    }
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(atomic_load(&ct.calls[i]), reps);
    CHECK_EQ_INT(atomic_load(&ct.sum), (int64_t)reps * (100000LL * 99999 / 2));

    static struct barrier_task bt;
    bt.pool = p;
    for (int i = 0; i < MAXT; i++)
        bt.slot[i] = 0;
    atomic_store(&bt.errors, 0);
    realm_threadpool_run(p, barrier_fn, &bt);
    CHECK_EQ_INT(atomic_load(&bt.errors), 0);
    realm_threadpool_free(p);
}

static void test_split(void) {
    const int64_t ns[] = {0, 1, 7, 100, 1023, 4096};
    const int64_t aligns[] = {1, 4, 16, 64};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int nth = 1; nth <= 9; nth++) {
                int64_t expect = 0;
                for (int i = 0; i < nth; i++) {
                    int64_t lo, hi;
                    realm_split(ns[k], i, nth, aligns[a], &lo, &hi);
                    CHECK(lo == expect);
                    CHECK(hi >= lo);
                    if (hi < ns[k]) CHECK(hi % aligns[a] == 0);
                    expect = hi;
                }
                CHECK(expect == ns[k]);
            }
}

int main(int argc, char **argv) {
    tu_init(argc, argv);
    test_split();
    struct realm_threadpool *p = NULL;
    CHECK_EQ_INT(realm_threadpool_new(-1, &p, NULL), REALM_E_INVALID);
    CHECK(p == NULL);
    realm_threadpool_free(NULL);
    CHECK(realm_cpu_count() >= 1);

    setenv("REALM_SPIN_US", "0", 1); /* workers sleep at once: exercises the futex path */
    test_pool(3);
    unsetenv("REALM_SPIN_US");
    const int sizes[] = {1, 2, 4, 7};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        test_pool(sizes[i]);
    return tu_finish("test_threadpool");
}
