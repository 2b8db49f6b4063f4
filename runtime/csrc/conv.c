/* A providers for the GEMM and the threaded depthwise driver (see conv.h). */
#include "conv.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "threadpool.h"

void fill_dense(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp) {
    const dense_ctx *d = ctx;
    for (int64_t i = 0; i < rows; ++i) {
        memcpy(buf + i * kp, d->a + (m0 + i) * d->lda, (size_t)d->k);
        memset(buf + i * kp + d->k, 0, (size_t)(kp - d->k));
    }
}

void fill_im2col(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp) {
    const im2col_ctx *p = ctx;
    const conv_geom *g = &p->g;
    const int64_t k = g->kh * g->kw * g->c;
    for (int64_t i = 0; i < rows; ++i) {
        const int64_t m = m0 + i;
        const int64_t b = m / (g->oh * g->ow), r = m % (g->oh * g->ow);
        const int64_t oy = r / g->ow, ox = r % g->ow;
        uint8_t *dst = buf + i * kp;
        const int64_t ix0 = ox * g->sw - g->pl;
        /* With dilation 1 a window row is kw*c contiguous input bytes: one copy when it lies
         * inside the image (the common case; stems with c = 3 would otherwise copy 3 bytes at a
         * time). */
        const int row_inside = g->dw == 1 && ix0 >= 0 && ix0 + g->kw <= g->w;
        for (int64_t ky = 0; ky < g->kh; ++ky) {
            const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
            if (row_inside && iy >= 0 && iy < g->h) {
                memcpy(dst, p->x + ((b * g->h + iy) * g->w + ix0) * g->c, (size_t)(g->kw * g->c));
                dst += g->kw * g->c;
                continue;
            }
            for (int64_t kx = 0; kx < g->kw; ++kx, dst += g->c) {
                const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                    memset(dst, p->zx, (size_t)g->c);
                else
                    memcpy(dst, p->x + ((b * g->h + iy) * g->w + ix) * g->c, (size_t)g->c);
            }
        }
        memset(buf + i * kp + k, 0, (size_t)(kp - k));
    }
}

static const depthwise_fn depthwise_kernels[PATH_COUNT] = {
    depthwise_rows_portable,
#if defined(COMPRESS_X86)
    depthwise_rows_avx2,
    depthwise_rows_avx512,
    depthwise_rows_avx512,
#endif
};

typedef struct {
    depthwise_fn fn;
    const depthwise_args *args;
    int64_t rows_per_task;
    atomic_int failed;
} depthwise_job;

static void depthwise_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    depthwise_job *job = ctx;
    const depthwise_args *a = job->args;
    const int64_t total = a->g.batch * a->g.oh;
    const int64_t r0 = task * job->rows_per_task;
    const int64_t r1 = r0 + job->rows_per_task < total ? r0 + job->rows_per_task : total;
    int32_t *acc = malloc((size_t)a->g.c * sizeof(int32_t));
    if (acc == NULL) {
        atomic_store(&job->failed, 1);
        return;
    }
    job->fn(a, r0, r1, acc);
    free(acc);
}

int depthwise_run(int path, const depthwise_args *a, int nthreads) {
    const int64_t total = a->g.batch * a->g.oh;
    if (total <= 0) return 0;
    int64_t tasks = nthreads > 1 ? 4 * (int64_t)nthreads : 1;
    if (tasks > total) tasks = total;
    depthwise_job job = {depthwise_kernels[path], a, (total + tasks - 1) / tasks, 0};
    pool_run(depthwise_task, &job, (total + job.rows_per_task - 1) / job.rows_per_task, nthreads);
    return atomic_load(&job.failed) ? -1 : 0;
}
