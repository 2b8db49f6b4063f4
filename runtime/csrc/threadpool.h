/* A small persistent thread pool: kernels are called dozens of times per inference, so
 * threads are created once and kept; workers spin briefly between jobs before sleeping. */
#ifndef COMPRESS_THREADPOOL_H
#define COMPRESS_THREADPOOL_H

#include <stdint.h>

typedef void (*pool_task_fn)(void *ctx, int64_t task, int worker);

#define POOL_MAX_THREADS 64

/* Runs fn(ctx, t, worker) for every t in [0, ntasks) on up to nthreads threads (the caller
 * included, as worker 0) and returns when all are done.  Calls are serialised. */
void pool_run(pool_task_fn fn, void *ctx, int64_t ntasks, int nthreads);

/* Work thresholds: a kernel call splits across threads only when each thread gets at least
 * this much work, so small layers (batch 1) do not pay a wake-up and a join for a few
 * microseconds of work.  Units per kind: GEMM multiply-accumulates (m * n * k), window MACs of
 * the depthwise kernel (output pixels * c * taps), and maxpool window comparisons.  Defaults:
 * about 25 us of one thread's work on the AVX-512 VNNI path (see BENCHMARKS.md); settable
 * (tests set 1 to exercise the split on tiny shapes). */
enum { POOL_WORK_GEMM = 0, POOL_WORK_DEPTHWISE = 1, POOL_WORK_MAXPOOL = 2, POOL_WORK_KINDS = 3 };
extern int64_t pool_min_work[POOL_WORK_KINDS];

/* a * b for the work estimates (a, b >= 0), saturating instead of wrapping. */
static inline int64_t pool_sat_mul(int64_t a, int64_t b) {
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

/* The threads a call of this much work uses: nthreads, fewer when a thread would get less
 * than the kind's minimum, at least 1. */
static inline int pool_threads_for(int kind, int64_t work, int nthreads) {
    const int64_t most = work / (pool_min_work[kind] > 0 ? pool_min_work[kind] : 1);
    if (most < nthreads) return most < 1 ? 1 : (int)most;
    return nthreads;
}

#endif
