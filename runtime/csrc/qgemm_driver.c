/* GEMM driver: splits the output into (row block x column group) tasks, packs each row
 * block of A through the caller's provider into a per-thread buffer and hands it to the
 * selected path's block kernel. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "qgemm.h"
#include "threadpool.h"

static const block_fn block_kernels[PATH_COUNT] = {
    qgemm_block_portable,
#if defined(COMPRESS_X86)
    qgemm_block_avx2,
    qgemm_block_avx512vnni,
    qgemm_block_amx,
#endif
};

/* Each thread keeps its A buffer between calls: packing runs dozens of times per inference
 * and a fresh allocation of this size would be an mmap plus page faults every time. */
static _Thread_local uint8_t *tl_buf;
static _Thread_local size_t tl_size;

static uint8_t *thread_buffer(size_t size) {
    if (size > tl_size) {
        free(tl_buf);
        tl_buf = aligned_alloc(64, (size + 63) & ~(size_t)63);
        tl_size = tl_buf ? size : 0;
    }
    return tl_buf;
}

typedef struct {
    block_fn block;
    const packed_b *b;
    int64_t m, groups, nb_per_group;
    a_fill_fn fill;
    const void *fill_ctx;
    const out_stage *os;
    atomic_int failed;
} gemm_job;

static void gemm_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    gemm_job *job = ctx;
    const packed_b *b = job->b;
    const int64_t mb = task / job->groups, g = task % job->groups;
    const int64_t m0 = mb * QGEMM_MB;
    const int64_t rows = job->m - m0 < QGEMM_MB ? job->m - m0 : QGEMM_MB;
    const int64_t nblocks = b->np / QGEMM_NBLOCK;
    const int64_t nb0 = g * job->nb_per_group;
    const int64_t nb1 = nb0 + job->nb_per_group < nblocks ? nb0 + job->nb_per_group : nblocks;
    if (nb0 >= nb1) return;
    /* Rows are padded to a multiple of 32 (the AMX tile pair) with zeros so no kernel reads
     * uninitialised memory. */
    const int64_t padded = (rows + 31) & ~(int64_t)31;
    uint8_t *abuf = thread_buffer((size_t)(padded * b->kp));
    if (abuf == NULL) {
        atomic_store(&job->failed, 1);
        return;
    }
    job->fill(job->fill_ctx, m0, rows, abuf, b->kp);
    memset(abuf + rows * b->kp, 0, (size_t)((padded - rows) * b->kp));
    job->block(b, abuf, rows, m0, nb0, nb1, job->os);
}

int qgemm_run(int path, const packed_b *b, int64_t m, a_fill_fn fill, const void *fill_ctx, const out_stage *os,
              int nthreads) {
    if (m <= 0 || b->n <= 0) return 0;
    const int64_t mblocks = (m + QGEMM_MB - 1) / QGEMM_MB;
    const int64_t nblocks = b->np / QGEMM_NBLOCK;
    /* Few row blocks (batch 1, late layers): split columns too, so every thread has work.
     * Groups hold an even number of blocks so the AMX 2x2 tiling is not broken up. */
    int64_t groups = 1;
    if (nthreads > 1 && mblocks < 2 * nthreads) {
        groups = (2 * nthreads + mblocks - 1) / mblocks;
        if (groups > (nblocks + 1) / 2) groups = (nblocks + 1) / 2;
        if (groups < 1) groups = 1;
    }
    int64_t per = (nblocks + groups - 1) / groups;
    per += per & 1;
    groups = (nblocks + per - 1) / per;
    gemm_job job = {block_kernels[path], b, m, groups, per, fill, fill_ctx, os, 0};
    pool_run(gemm_task, &job, mblocks * groups, nthreads);
    return atomic_load(&job.failed) ? -1 : 0;
}
