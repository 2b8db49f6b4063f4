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

#endif
