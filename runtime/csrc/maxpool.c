/* 2-D max pooling over NHWC 8-bit tensors.  Taps in the padding are skipped (ONNX pads
 * MaxPool with -inf).  Pooling quantized values is exact: max commutes with the monotone
 * dequantization.  The channel loop is plain C the compiler vectorises. */
#include "maxpool.h"

#include <string.h>

#include "threadpool.h"

#define MAXPOOL_BODY(T)                                                                                   \
    for (int64_t r = r0; r < r1; ++r) {                                                                   \
        const int64_t b = r / g->oh, oy = r % g->oh;                                                      \
        for (int64_t ox = 0; ox < g->ow; ++ox) {                                                          \
            T *restrict out = (T *)a->out + ((b * g->oh + oy) * g->ow + ox) * c;                          \
            int first = 1;                                                                                \
            for (int64_t ky = 0; ky < g->kh; ++ky) {                                                      \
                const int64_t iy = oy * g->sh - g->pt + ky * g->dh;                                       \
                if (iy < 0 || iy >= g->h) continue;                                                       \
                for (int64_t kx = 0; kx < g->kw; ++kx) {                                                  \
                    const int64_t ix = ox * g->sw - g->pl + kx * g->dw;                                   \
                    if (ix < 0 || ix >= g->w) continue;                                                   \
                    const T *restrict in = (const T *)a->x + ((b * g->h + iy) * g->w + ix) * c;          \
                    if (first) {                                                                          \
                        memcpy(out, in, (size_t)c);                                                       \
                        first = 0;                                                                        \
                        continue;                                                                         \
                    }                                                                                     \
                    for (int64_t ch = 0; ch < c; ++ch) out[ch] = in[ch] > out[ch] ? in[ch] : out[ch];     \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }

static void maxpool_rows(const maxpool_args *a, int64_t r0, int64_t r1) {
    const conv_geom *g = &a->g;
    const int64_t c = g->c;
    if (a->is_signed) {
        MAXPOOL_BODY(int8_t)
    } else {
        MAXPOOL_BODY(uint8_t)
    }
}

static void maxpool_task(void *ctx, int64_t task, int worker) {
    (void)worker;
    const maxpool_args *a = ctx;
    const int64_t total = a->g.batch * a->g.oh, per = (total + a->tasks - 1) / a->tasks;
    const int64_t r0 = task * per, r1 = r0 + per < total ? r0 + per : total;
    if (r0 < r1) maxpool_rows(a, r0, r1);
}

void maxpool_run(maxpool_args *a, int nthreads) {
    const int64_t total = a->g.batch * a->g.oh;
    /* Output pixels * c bytes were checked against the output buffer; the window may be huge. */
    nthreads = pool_threads_for(POOL_WORK_MAXPOOL,
                                pool_sat_mul(total * a->g.ow * a->g.c, pool_sat_mul(a->g.kh, a->g.kw)), nthreads);
    a->tasks = nthreads > 1 ? 4 * (int64_t)nthreads : 1;
    if (a->tasks > total) a->tasks = total;
    if (total > 0) pool_run(maxpool_task, a, a->tasks, nthreads);
}
