/* Persistent worker pool (see threadpool.h).  One job at a time: a mutex serialises callers
 * (two Python threads may both have released the GIL).  A job is announced by one atomic word
 * holding generation * 256 + thread count, so a worker decides whether it takes part from
 * the same word that woke it, never from a later job's fields.  An atomic counter hands out
 * task indices and another counts workers still busy. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SPIN_ROUNDS 2000 /* ~0.1 ms: bridges the Python gap between two kernels, no more */

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cond = PTHREAD_COND_INITIALIZER;
static int n_workers; /* threads started so far, excluding callers */

static struct {
    pool_task_fn fn;
    void *ctx;
    int64_t ntasks;
    atomic_long next;
    atomic_int busy;
    atomic_long word; /* generation * 256 + nthreads */
} job;

static void drain(int worker) {
    for (;;) {
        const int64_t t = atomic_fetch_add(&job.next, 1);
        if (t >= job.ntasks) return;
        job.fn(job.ctx, t, worker);
    }
}

static void *worker_main(void *arg) {
    /* arg = (job word when created) << 8 | id: the creator publishes its job only after
     * pthread_create, so reading job.word here could already see, and skip, that job. */
    const int id = (int)((intptr_t)arg & 255);
    long seen = (long)((intptr_t)arg >> 8);
    for (;;) {
        long word;
        int spins = 0;
        while ((word = atomic_load(&job.word)) == seen && spins < SPIN_ROUNDS) {
            __builtin_ia32_pause();
            ++spins;
        }
        if (word == seen) {
            pthread_mutex_lock(&wake_lock);
            while ((word = atomic_load(&job.word)) == seen) pthread_cond_wait(&wake_cond, &wake_lock);
            pthread_mutex_unlock(&wake_lock);
        }
        seen = word;
        if (id < (int)(word & 255)) {
            drain(id);
            atomic_fetch_sub(&job.busy, 1);
        }
    }
    return NULL;
}

void pool_run(pool_task_fn fn, void *ctx, int64_t ntasks, int nthreads) {
    if (nthreads > POOL_MAX_THREADS) nthreads = POOL_MAX_THREADS;
    if (nthreads > ntasks) nthreads = (int)ntasks;
    if (nthreads <= 1) {
        for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&run_lock);
    while (n_workers < nthreads - 1) {
        pthread_t th;
        if (pthread_create(&th, NULL, worker_main, (void *)(((intptr_t)atomic_load(&job.word) << 8) | (n_workers + 1))) != 0) break;
        pthread_detach(th);
        ++n_workers;
    }
    if (nthreads - 1 > n_workers) nthreads = n_workers + 1;
    job.fn = fn;
    job.ctx = ctx;
    job.ntasks = ntasks;
    atomic_store(&job.next, 0);
    atomic_store(&job.busy, nthreads - 1);
    pthread_mutex_lock(&wake_lock);
    atomic_store(&job.word, ((atomic_load(&job.word) >> 8) + 1) * 256 + nthreads);
    pthread_cond_broadcast(&wake_cond);
    pthread_mutex_unlock(&wake_lock);
    drain(0);
    while (atomic_load(&job.busy) > 0) sched_yield();
    pthread_mutex_unlock(&run_lock);
}
