/*
 * threadpool.h — a fixed set of worker threads that run one parallel task at a time, with a
 * spin-then-sleep wake-up and an in-task barrier, made for the forward pass: one dispatch per
 * batched step, then every thread walks the same sequence of ops and meets the others at
 * realm_threadpool_barrier() between dependent ops (llama.cpp's ggml_graph_compute pattern).
 *
 * Workers are created once by realm_threadpool_new and live until realm_threadpool_free; nothing
 * creates threads per op. The caller of realm_threadpool_run takes part as thread 0, so a pool of
 * n threads has n - 1 workers.
 *
 * Wake-up latency matters more than idle CPU here (a decode step of a 135M model is ~300 dependent
 * ops in a few ms): an idle worker spins for REALM_SPIN_US microseconds (default 300) after its
 * last task before it sleeps on a futex; barriers spin and yield the CPU after a while so that an
 * oversubscribed machine still makes progress.
 *
 * Pinning: when the creating thread may run on at least n CPUs, worker i is pinned to the i-th CPU
 * of that affinity mask, and the thread calling realm_threadpool_run to the first one; the caller
 * stays pinned after the call (it would otherwise often wake up on a worker's CPU), and
 * realm_cpu_count() and later pools still see its original mask. REALM_PIN=0 disables pinning.
 *
 * Thread rule: one thread at a time calls realm_threadpool_run on a given pool (the pool's owner).
 * realm_threadpool_barrier may only be called from inside a task, by every thread of the task the
 * same number of times.
 */
#ifndef REALM_THREADPOOL_H
#define REALM_THREADPOOL_H

#include <stdint.h>

#include "realm/err.h"

struct realm_threadpool;

/* A task: run once on each of nth threads, ith in [0, nth). */
typedef void (*realm_task_fn)(void *arg, int ith, int nth);

/* Number of CPUs this process may run on (sched_getaffinity), at least 1. */
int realm_cpu_count(void);

/* Creates a pool of n_threads threads (0 → realm_cpu_count()); n_threads - 1 workers are started.
 * Ownership: returns owned (*out; free with realm_threadpool_free). Nothing on failure.
 * Errors: REALM_E_INVALID (n_threads < 0 or > 512), REALM_E_NOMEM, REALM_E_INTERNAL (pthread). */
int realm_threadpool_new(int n_threads, struct realm_threadpool **out, struct realm_err *err);
/* Stops and joins the workers. NULL is a no-op. Must not be called while a task runs. */
void realm_threadpool_free(struct realm_threadpool *p);
/* Threads a task runs on (the caller included). */
int realm_threadpool_n_threads(const struct realm_threadpool *p);

/* Runs fn(arg, ith, nth) on all threads of the pool (the caller is ith 0) and returns when every
 * thread has returned from fn. Memory written by any thread inside fn is visible to the caller
 * afterwards. This function cannot fail. */
void realm_threadpool_run(struct realm_threadpool *p, realm_task_fn fn, void *arg);

/* Inside a task: returns when all nth threads have reached it; writes before the barrier are
 * visible to every thread after it. */
void realm_threadpool_barrier(struct realm_threadpool *p);

/* The share [*lo, *hi) of thread ith out of n items, as even as possible; `align` > 0 rounds the
 * split points to multiples of align (the last share ends at n). */
static inline void realm_split(int64_t n, int ith, int nth, int64_t align, int64_t *lo,
                               int64_t *hi) {
    int64_t units = align > 1 ? (n + align - 1) / align : n;
    int64_t a = units * ith / nth, b = units * (ith + 1) / nth;
    if (align > 1) {
        a *= align;
        b *= align;
        if (a > n) a = n;
        if (b > n) b = n;
    }
    *lo = a;
    *hi = b;
}

#endif
