/* Persistent worker pool (see threadpool.h).  One job at a time: a mutex serialises callers
 * (two Python threads may both have released the GIL).  A job is announced by one atomic word
 * holding generation * 256 + thread count, so a worker decides whether it takes part from
 * the same word that woke it, never from a later job's fields.  An atomic counter hands out
 * task indices.  A worker joins a job through one more atomic word (generation, open flag,
 * workers inside) and only while the job is open; the caller closes it once it has drained
 * the tasks itself and waits only for the workers that joined.  So a worker the OS has not
 * scheduled yet (a loaded machine) delays nothing: it wakes later, finds the job closed and
 * never touches it -- threads=2 degrades to one thread's speed instead of waiting a time
 * slice per kernel call. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define SPIN_ROUNDS 2000 /* ~0.1 ms: bridges the Python gap between two kernels, no more */

int64_t pool_min_work[POOL_WORK_KINDS] = {4000000, 500000, 2000000};

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cond = PTHREAD_COND_INITIALIZER;
static int n_workers; /* threads started so far, excluding callers */

static struct {
    pool_task_fn fn;
    void *ctx;
    int64_t ntasks;
    atomic_long next;
    atomic_long word;  /* generation * 256 + nthreads */
    atomic_long state; /* generation << 16 | JOB_OPEN | workers inside */
} job;

#define JOB_OPEN (1L << 15)
#define JOB_INSIDE (JOB_OPEN - 1)
#define JOB_GEN(g) ((g) & ((1L << 47) - 1)) /* the generation as the state word holds it */

/* Enters the job of generation gen if it is still open; 1 when entered. */
static int join(long gen) {
    long s = atomic_load(&job.state);
    for (;;) {
        if ((s >> 16) != JOB_GEN(gen) || !(s & JOB_OPEN)) return 0;
        if (atomic_compare_exchange_weak(&job.state, &s, s + 1)) return 1;
    }
}

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
        if (id < (int)(word & 255) && join(word >> 8)) {
            drain(id);
            atomic_fetch_sub(&job.state, 1);
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
    const long gen = (atomic_load(&job.word) >> 8) + 1;
    /* No worker is inside (the previous job waited for all that joined): open this one. */
    atomic_store(&job.state, JOB_GEN(gen) << 16 | JOB_OPEN);
    pthread_mutex_lock(&wake_lock);
    atomic_store(&job.word, gen * 256 + nthreads);
    pthread_cond_broadcast(&wake_cond);
    pthread_mutex_unlock(&wake_lock);
    drain(0);
    /* Every task has been handed out: close the job and wait only for workers inside it. */
    atomic_fetch_and(&job.state, ~JOB_OPEN);
    while (atomic_load(&job.state) & JOB_INSIDE) sched_yield();
    pthread_mutex_unlock(&run_lock);
}
