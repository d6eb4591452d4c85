/*
 * clock.h — the one monotonic clock every module measures time with (steps, budgets, deadlines,
 * latencies). CLOCK_MONOTONIC: never jumps with the wall clock. Thread-safe; no errors.
 */
#ifndef REALM_CLOCK_H
#define REALM_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Seconds since an arbitrary fixed point. */
double realm_now_s(void);
/* Nanoseconds since the same point. */
uint64_t realm_now_ns(void);
/* The absolute time `seconds` from now (capped at 10^6 s), for pthread_cond_timedwait on a
 * condition variable made by realm_cond_init_monotonic. */
void realm_deadline_after(struct timespec *ts, double seconds);
/* pthread_cond_init on this clock (the default clock would follow wall-clock jumps). */
void realm_cond_init_monotonic(pthread_cond_t *cv);

#endif
