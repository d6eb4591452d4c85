/*
 * threadpool.c — fixed worker threads with spin-then-futex wake-up and a spinning barrier
 * (see include/realm/threadpool.h). Owns its worker threads; no globals. A utility (src/util):
 * the forward pass (src/model) runs on it, and it depends on nothing but util, so `model` does
 * not depend on the scheduler.
 *
 * Dispatch protocol: the owner publishes (fn, arg), resets n_done, then bumps `gen` (seq_cst) and
 * wakes sleepers if `n_sleeping` > 0. A worker spins on `gen`; when its spin budget is spent it
 * increments n_sleeping, re-reads gen and futex-waits on it. Both sides use seq_cst, so either
 * the owner sees the sleeper or the sleeper sees the new generation (no lost wake-up), and the
 * futex syscall is paid only by a pool that was really idle.
 */
#include "realm/threadpool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "realm/alloc.h"
#include "realm/clock.h"

#define MAX_THREADS 512
#define CACHE_LINE 64
/* Spins in a barrier before the waiter starts yielding its CPU. */
#define BARRIER_SPINS_BEFORE_YIELD 20000

struct worker {
    struct realm_threadpool *pool;
    pthread_t thread;
    int ith;
};

struct realm_threadpool {
    int n_threads;
    int64_t spin_ns; /* idle spin budget of a worker before it sleeps */
    bool pin;        /* thread i runs on the i-th CPU of the process's affinity mask */
    int cpus[MAX_THREADS];

    /* dispatch (written by the owner) */
    _Alignas(CACHE_LINE) _Atomic uint32_t gen;
    realm_task_fn fn;
    void *arg;
    _Atomic int stop;
    _Alignas(CACHE_LINE) _Atomic int n_sleeping;
    _Alignas(CACHE_LINE) _Atomic int n_done;

    /* barrier */
    _Alignas(CACHE_LINE) _Atomic int bar_count;
    _Alignas(CACHE_LINE) _Atomic uint32_t bar_gen;

    struct worker *workers; /* n_threads - 1 */
    int n_started;
};

/* ---- Globals: per thread (thread-local), the affinity a thread had before a pool pinned it as
 * the caller of realm_threadpool_run, so that realm_cpu_count() and pools it creates later still
 * see every CPU the thread may use. Written and read only by that thread. ---- */
static __thread int tl_pinned_cpu; /* 0: not pinned by a pool; else the CPU + 1 */
static __thread bool tl_orig_ok;
static __thread cpu_set_t tl_orig;

/* The calling thread's affinity before any pool pinned it. */
static int thread_cpus(cpu_set_t *set) {
    if (tl_pinned_cpu && tl_orig_ok) {
        *set = tl_orig;
        return 0;
    }
    CPU_ZERO(set);
    return sched_getaffinity(0, sizeof *set, set);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

int realm_cpu_count(void) {
    cpu_set_t set;
    if (thread_cpus(&set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Waits until gen differs from `seen`: spins for the pool's budget, then sleeps on the futex. */
static uint32_t wait_for_work(struct realm_threadpool *p, uint32_t seen) {
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (g != seen) return g;
    int64_t deadline = (int64_t)realm_now_ns() + p->spin_ns;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        if ((i & 255) == 0 && (int64_t)realm_now_ns() > deadline) break;
    }
    for (;;) {
        atomic_fetch_add(&p->n_sleeping, 1);
        g = atomic_load(&p->gen);
        if (g == seen) futex_wait(&p->gen, seen);
        atomic_fetch_sub(&p->n_sleeping, 1);
        g = atomic_load(&p->gen);
        if (g != seen) return g;
    }
}

static void pin_self(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct realm_threadpool *p = w->pool;
    uint32_t seen = 0;
    if (p->pin) pin_self(p->cpus[w->ith]);
    for (;;) {
        seen = wait_for_work(p, seen);
        if (atomic_load(&p->stop)) break;
        p->fn(p->arg, w->ith, p->n_threads);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_acq_rel);
    }
    return NULL;
}

static int64_t spin_budget_ns(void) {
    const char *s = getenv("REALM_SPIN_US");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 1000000) return (int64_t)v * 1000;
    }
    return 300 * 1000;
}

int realm_threadpool_new(int n_threads, struct realm_threadpool **out, struct realm_err *err) {
    if (n_threads < 0 || n_threads > MAX_THREADS)
        return realm_err_set(err, REALM_E_INVALID, "threadpool: n_threads: %d, expected 0..%d",
                             n_threads, MAX_THREADS);
    if (n_threads == 0) n_threads = realm_cpu_count();
    struct realm_threadpool *p = realm_malloc_aligned(CACHE_LINE, sizeof *p);
    if (!p) return realm_err_set(err, REALM_E_NOMEM, "threadpool: out of memory");
    *p = (struct realm_threadpool){0};
    p->n_threads = n_threads;
    p->spin_ns = spin_budget_ns();
    /* Pinning: measured on a 2-vCPU KVM guest, an unpinned pool often ends up with the caller and
     * a spinning worker on one CPU and loses milliseconds per barrier to time slicing; with every
     * thread pinned to its own CPU a dispatch + 30 barriers takes ~3 us. REALM_PIN=0 turns it off;
     * it is off anyway when the pool has more threads than the process has CPUs. */
    const char *pe = getenv("REALM_PIN");
    cpu_set_t set;
    if ((!pe || strcmp(pe, "0")) && n_threads > 1 && thread_cpus(&set) == 0 &&
        CPU_COUNT(&set) >= n_threads) {
        int k = 0;
        for (int c = 0; c < CPU_SETSIZE && k < n_threads; c++)
            if (CPU_ISSET(c, &set)) p->cpus[k++] = c;
        p->pin = k == n_threads;
    }
    atomic_init(&p->gen, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->n_done, 0);
    atomic_init(&p->bar_count, 0);
    atomic_init(&p->bar_gen, 0);
    if (n_threads > 1) {
        p->workers = realm_calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            realm_free_aligned(p);
            return realm_err_set(err, REALM_E_NOMEM, "threadpool: out of memory");
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &p->workers[i - 1];
        w->pool = p;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            realm_threadpool_free(p);
            return realm_err_set(err, REALM_E_INTERNAL, "threadpool: pthread_create: error %d", rc);
        }
        p->n_started++;
    }
    *out = p;
    return REALM_OK;
}

void realm_threadpool_free(struct realm_threadpool *p) {
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake_all(&p->gen);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i].thread, NULL);
    realm_free(p->workers);
    realm_free_aligned(p);
}

int realm_threadpool_n_threads(const struct realm_threadpool *p) {
    return p->n_threads;
}

void realm_threadpool_run(struct realm_threadpool *p, realm_task_fn fn, void *arg) {
    int nth = p->n_threads;
    if (nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    if (p->pin && tl_pinned_cpu != p->cpus[0] + 1) {
        if (!tl_pinned_cpu) tl_orig_ok = sched_getaffinity(0, sizeof tl_orig, &tl_orig) == 0;
        pin_self(p->cpus[0]);
        tl_pinned_cpu = p->cpus[0] + 1;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn/arg, orders against n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) futex_wake_all(&p->gen);
    fn(arg, 0, nth);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) != nth - 1) {
        cpu_relax();
        if (++spins > BARRIER_SPINS_BEFORE_YIELD) sched_yield();
    }
}

void realm_threadpool_barrier(struct realm_threadpool *p) {
    int nth = p->n_threads;
    if (nth == 1) return;
    uint32_t g = atomic_load_explicit(&p->bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bar_gen, 1, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&p->bar_gen, memory_order_acquire) == g) {
        cpu_relax();
        if (++spins > BARRIER_SPINS_BEFORE_YIELD) sched_yield();
    }
}
