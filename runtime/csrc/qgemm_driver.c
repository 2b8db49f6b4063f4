/* The one GEMM driver: splits the output into (row block x column group) tasks, packs each row
 * block of A through the caller's provider into a per-thread buffer (widened to int16 for paths
 * that want it), walks it with the path's micro-kernel tile by tile and hands every int32 tile
 * to the path's build of the one output stage. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "qgemm.h"
#include "threadpool.h"

static const qgemm_isa *const isas[PATH_COUNT] = {
    &qgemm_isa_portable,
#if defined(COMPRESS_X86)
    &qgemm_isa_avx2,
    &qgemm_isa_avx512vnni,
    &qgemm_isa_amx,
#endif
};

const qgemm_isa *qgemm_isa_of(int path) { return isas[path]; }

int qgemm_prepare(int path, packed_b *b) {
    if (!isas[path]->b16 || b->data16 != NULL) return 0;
    /* [np/16][kp/2][16][2]: the pair (k, k+1) of column c sits in one int32 lane of vpmaddwd. */
    int16_t *d = aligned_alloc(64, (size_t)(b->kp * b->np) * sizeof(int16_t));
    if (d == NULL) return -1;
    const int64_t bstride = b->kp * QGEMM_NBLOCK;
    for (int64_t blk = 0; blk < b->np / QGEMM_NBLOCK; ++blk)
        for (int64_t k = 0; k < b->kp; ++k)
            for (int64_t c = 0; c < QGEMM_NBLOCK; ++c)
                d[blk * bstride + (k / 2) * 2 * QGEMM_NBLOCK + c * 2 + k % 2] =
                    b->data[blk * bstride + (k / 4) * 4 * QGEMM_NBLOCK + c * 4 + k % 4];
    b->data16 = d;
    return 0;
}

/* Each thread keeps its A buffers between calls: packing runs dozens of times per inference
 * and a fresh allocation of this size would be an mmap plus page faults every time. */
typedef struct {
    void *ptr;
    size_t size;
} tl_buffer;
static _Thread_local tl_buffer tl_a8, tl_a16;

static void *thread_buffer(tl_buffer *buf, size_t size) {
    if (size > buf->size) {
        free(buf->ptr);
        buf->ptr = aligned_alloc(64, (size + 63) & ~(size_t)63);
        buf->size = buf->ptr ? size : 0;
    }
    return buf->ptr;
}

/* The micro-kernel loop: one int32 tile at a time through the output stage.  A rows are lda
 * elements apart. */
static void block_tiles(const qgemm_isa *isa, const packed_b *b, const void *abuf, int64_t lda, int64_t rows,
                        int64_t m0, int64_t nb0, int64_t nb1, const out_stage *os) {
    int32_t tile[QGEMM_MR_MAX * QGEMM_NR_MAX] __attribute__((aligned(64)));
    const int64_t kd = (b->k + isa->kalign - 1) / isa->kalign * isa->kalign;
    const int64_t bstride = b->kp * QGEMM_NBLOCK; /* elements per 16-column block, either layout */
    const size_t a_elem = isa->a16 ? 2 : 1, b_elem = isa->b16 ? 2 : 1;
    const char *bdata = isa->b16 ? (const char *)b->data16 : (const char *)b->data;
    const int fused = isa->kernel_out != NULL && os->mult != NULL;
    for (int64_t jb = nb0; jb < nb1; jb += isa->nb) {
        const int nb = nb1 - jb < isa->nb ? (int)(nb1 - jb) : isa->nb;
        const int64_t col0 = jb * QGEMM_NBLOCK;
        const int64_t cols = b->n - col0 < nb * QGEMM_NBLOCK ? b->n - col0 : nb * QGEMM_NBLOCK;
        const char *panel = bdata + (size_t)(jb * bstride) * b_elem;
        for (int64_t i = 0; i < rows; i += isa->mr) {
            const int r = rows - i < isa->mr ? (int)(rows - i) : isa->mr;
            if (fused) {
                isa->kernel_out((const char *)abuf + (size_t)(i * lda) * a_elem, lda, panel, bstride, kd, r, nb, cols,
                                m0 + i, col0, os);
                continue;
            }
            isa->kernel((const char *)abuf + (size_t)(i * lda) * a_elem, lda, panel, bstride, kd, r, nb, tile);
            isa->output(tile, QGEMM_NR_MAX, r, cols, m0 + i, col0, os);
        }
    }
}

typedef struct {
    const qgemm_isa *isa;
    const packed_b *b;
    int64_t m, groups, nb_per_group;
    a_fill_fn fill;
    const void *fill_ctx;
    const out_stage *os;
    const dense_ctx *dense; /* fill_ctx when A is a dense matrix (fill_dense), else NULL */
    atomic_int failed;
} gemm_job;

static void gemm_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    gemm_job *job = ctx;
    const qgemm_isa *isa = job->isa;
    const packed_b *b = job->b;
    const int64_t mb = task / job->groups, g = task % job->groups;
    const int64_t m0 = mb * QGEMM_MB;
    const int64_t rows = job->m - m0 < QGEMM_MB ? job->m - m0 : QGEMM_MB;
    const int64_t nblocks = b->np / QGEMM_NBLOCK;
    const int64_t nb0 = g * job->nb_per_group;
    const int64_t nb1 = nb0 + job->nb_per_group < nblocks ? nb0 + job->nb_per_group : nblocks;
    if (nb0 >= nb1) return;
    const dense_ctx *dense = job->dense;
    const int64_t kd = (b->k + isa->kalign - 1) / isa->kalign * isa->kalign;
    if (dense && !isa->a16 && !isa->block && kd == b->k) {
        /* A dense A whose depth needs no padding is read where it lies (1x1 convolutions,
         * MatMul): the micro-kernels read exactly k bytes of each of the block's rows. */
        block_tiles(isa, b, dense->a + m0 * dense->lda, dense->lda, rows, m0, nb0, nb1, job->os);
        return;
    }
    if (dense && isa->a16) {
        /* Widened straight from the source rows, zero up to the micro-kernel's depth. */
        int16_t *wide = thread_buffer(&tl_a16, (size_t)(rows * b->kp) * sizeof(int16_t));
        if (wide == NULL) {
            atomic_store(&job->failed, 1);
            return;
        }
        for (int64_t i = 0; i < rows; ++i) {
            const uint8_t *src = dense->a + (m0 + i) * dense->lda;
            int16_t *dst = wide + i * b->kp;
            for (int64_t j = 0; j < b->k; ++j) dst[j] = src[j];
            for (int64_t j = b->k; j < kd; ++j) dst[j] = 0;
        }
        block_tiles(isa, b, wide, b->kp, rows, m0, nb0, nb1, job->os);
        return;
    }
    /* Rows are padded to a multiple of 32 (the AMX tile pair) with zeros so no kernel reads
     * uninitialised memory. */
    const int64_t padded = (rows + 31) & ~(int64_t)31;
    uint8_t *abuf = thread_buffer(&tl_a8, (size_t)(padded * b->kp));
    if (abuf == NULL) {
        atomic_store(&job->failed, 1);
        return;
    }
    job->fill(job->fill_ctx, m0, rows, abuf, b->kp);
    memset(abuf + rows * b->kp, 0, (size_t)((padded - rows) * b->kp));
    if (isa->block) {
        isa->block(isa, b, abuf, rows, m0, nb0, nb1, job->os);
        return;
    }
    const void *a = abuf;
    if (isa->a16) {
        int16_t *wide = thread_buffer(&tl_a16, (size_t)(rows * b->kp) * sizeof(int16_t));
        if (wide == NULL) {
            atomic_store(&job->failed, 1);
            return;
        }
        for (int64_t i = 0; i < rows * b->kp; ++i) wide[i] = abuf[i];
        a = wide;
    }
    block_tiles(isa, b, a, b->kp, rows, m0, nb0, nb1, job->os);
}

int qgemm_run(int path, const packed_b *b, int64_t m, a_fill_fn fill, const void *fill_ctx, const out_stage *os,
              int nthreads) {
    if (m <= 0 || b->n <= 0) return 0;
    /* m, n, k < 2^31 and k <= QGEMM_K_MAX: the product fits 64 bits. */
    nthreads = pool_threads_for(POOL_WORK_GEMM, m * b->n * b->k, nthreads);
    const qgemm_isa *isa = isas[path];
    const int64_t mblocks = (m + QGEMM_MB - 1) / QGEMM_MB;
    const int64_t nblocks = b->np / QGEMM_NBLOCK;
    /* Few row blocks (batch 1, late layers): split columns too, so every thread has work.
     * Groups hold a multiple of the register tile's blocks (and an even number, so the AMX 2x2
     * tiling is not broken up). */
    const int64_t unit = isa->nb > 1 ? isa->nb : 2;
    int64_t groups = 1;
    if (nthreads > 1 && mblocks < 2 * nthreads) {
        groups = (2 * nthreads + mblocks - 1) / mblocks;
        const int64_t most = (nblocks + unit - 1) / unit;
        if (groups > most) groups = most;
        if (groups < 1) groups = 1;
    }
    int64_t per = (nblocks + groups - 1) / groups;
    per = (per + unit - 1) / unit * unit;
    groups = (nblocks + per - 1) / per;
    gemm_job job = {isa, b, m, groups, per, fill, fill_ctx, os, fill == fill_dense ? fill_ctx : NULL, 0};
    pool_run(gemm_task, &job, mblocks * groups, nthreads);
    return atomic_load(&job.failed) ? -1 : 0;
}
