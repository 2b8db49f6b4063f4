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

/* n bytes for the short copies of im2col (a stem's window row is kw * c = 9 or 21 bytes): two
 * overlapping fixed-size copies the compiler inlines -- no library call, nothing read or written
 * outside [0, n). */
static inline void copy_short(uint8_t *dst, const uint8_t *src, size_t n) {
    if (n >= 16 && n <= 32) {
        memcpy(dst, src, 16);
        memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8 && n < 16) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        memcpy(dst, src, n);
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
                copy_short(dst, p->x + ((b * g->h + iy) * g->w + ix0) * g->c, (size_t)(g->kw * g->c));
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
    /* Sizes were validated by the caller: ow * c fits the output buffer, kh * kw <= TAPS_MAX. */
    const size_t taps = (size_t)(a->g.kh * a->g.kw);
    depthwise_scratch s = {NULL, NULL, NULL, NULL};
    int missing;
    if (a->wq != NULL) { /* the row kernel: kh quad rows of one 32-channel step (kh <= 8, ow < 2^31) */
        s.rows = aligned_alloc(64, (size_t)(a->g.kh * a->g.ow) * 128);
        missing = s.rows == NULL;
    } else {
        s.acc = aligned_alloc(64, ((size_t)(a->g.ow * a->g.c) * sizeof(int32_t) + 63) & ~(size_t)63);
        s.xp = malloc(taps * sizeof(uint8_t *));
        s.wp = malloc(taps * sizeof(int8_t *));
        missing = s.acc == NULL || s.xp == NULL || s.wp == NULL;
    }
    if (missing)
        atomic_store(&job->failed, 1);
    else
        job->fn(a, r0, r1, &s);
    free(s.acc);
    free(s.xp);
    free(s.wp);
    free(s.rows);
}

/* Channels per step of the SIMD depthwise kernels (0: the portable kernel needs no packing). */
static const int depthwise_width[PATH_COUNT] = {0, 16, 32, 32};

/* Weights as the SIMD kernels consume them: per step of V channels and per tap pair (2p, 2p+1),
 * two vectors a and b of V/2 int16 pairs (w_2p[ch], w_2p+1[ch]).  Lane i of a holds channel
 * 16 * (i / 8) + i % 8 and lane i of b the one 8 further: the order in which vpunpck{l,h}bw of
 * two taps' input bytes, widened, presents the channels.  Missing channels and the partner of
 * an odd last tap are zero.  Runs once per weights and width (dw_weights_prepare). */
static void depthwise_pack(const int8_t *w, int64_t taps, int64_t c, int v, int16_t *dst) {
    const int64_t pairs = (taps + 1) / 2;
    for (int64_t cb = 0; cb < c; cb += v)
        for (int64_t p = 0; p < pairs; ++p) {
            const int8_t *w0 = w + 2 * p * c, *w1 = 2 * p + 1 < taps ? w0 + c : NULL;
            for (int half = 0; half < 2; ++half, dst += v)
                for (int grp = 0; grp < v / 16; ++grp)
                    for (int j = 0; j < 8; ++j) {
                        const int64_t ch = cb + 16 * grp + half * 8 + j;
                        int16_t *d = dst + 2 * (8 * grp + j);
                        d[0] = ch < c ? w0[ch] : 0;
                        d[1] = ch < c && w1 ? w1[ch] : 0;
                    }
        }
}

/* The VNNI row kernel's channel order within a 32-channel step: position q (0..31) of its
 * vectors holds channel 16 * j + 4 * k + i for q = 8 * k + 4 * j + i -- vector k (of four 8-lane
 * vectors) lane-half j, dword i, the order in which vpunpck{l,h}bw then vpunpck{l,h}wd of four
 * taps' input bytes (within 128-bit lanes) present the channels. */
static inline int64_t quad_channel(int64_t q) { return 16 * ((q >> 2) & 1) + 4 * (q >> 3) + (q & 3); }

/* Weights for the VNNI row kernel: per 32-channel step and window row ky, 32 dwords (the
 * quad_channel order) whose byte kx is w[ky][kx][ch] -- the 4 horizontal taps one vpdpbusd sums
 * -- zero beyond kw and c.  cq/32 * kh * 128 bytes. */
static void depthwise_pack_quad(const int8_t *w, int64_t kh, int64_t kw, int64_t c, int8_t *dst) {
    for (int64_t cb = 0; cb < c; cb += 32)
        for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t q = 0; q < 32; ++q, dst += 4) {
                const int64_t ch = cb + quad_channel(q);
                for (int64_t kx = 0; kx < 4; ++kx) dst[kx] = kx < kw && ch < c ? w[(ky * kw + kx) * c + ch] : 0;
            }
}

int dw_weights_init(dw_weights *d, const int8_t *w, int64_t kh, int64_t kw, int64_t c) {
    const int64_t taps = kh * kw;
    memset(d, 0, sizeof *d);
    d->w = malloc((size_t)(taps * c));
    d->wsum = malloc((size_t)c * sizeof(int32_t));
    if (d->w == NULL || d->wsum == NULL) {
        dw_weights_free(d);
        return -1;
    }
    d->taps = taps;
    d->c = c;
    memcpy(d->w, w, (size_t)(taps * c));
    /* |sum| <= TAPS_MAX * 128 fits int32. */
    for (int64_t ch = 0; ch < c; ++ch) {
        int64_t sum = 0;
        for (int64_t t = 0; t < taps; ++t) sum += w[t * c + ch];
        d->wsum[ch] = (int32_t)sum;
    }
    /* Every SIMD layout now (plain C, whatever this CPU runs): the calls then only read them. */
    for (int p = 1; p < PATH_COUNT; ++p)
        if (dw_weights_prepare(p, d) < 0) {
            dw_weights_free(d);
            return -1;
        }
    if (kh <= QUAD_KH_MAX && kw <= QUAD_KW_MAX) {
        d->pkq = aligned_alloc(64, (size_t)(((c + 31) / 32) * kh * 128));
        if (d->pkq == NULL) {
            dw_weights_free(d);
            return -1;
        }
        depthwise_pack_quad(w, kh, kw, c, d->pkq);
    }
    return 0;
}

int dw_weights_prepare(int path, dw_weights *d) {
    const int v = depthwise_width[path];
    if (v == 0) return 0;
    int16_t **slot = v == 16 ? &d->pk16 : &d->pk32;
    if (*slot != NULL) return 0;
    const int64_t steps = (d->c + v - 1) / v;
    int16_t *pk = aligned_alloc(64, (size_t)(steps * ((d->taps + 1) / 2) * 2 * v) * sizeof(int16_t));
    if (pk == NULL) return -1;
    depthwise_pack(d->w, d->taps, d->c, v, pk);
    *slot = pk;
    return 0;
}

void dw_weights_free(dw_weights *d) {
    free(d->w);
    free(d->wsum);
    free(d->pk16);
    free(d->pk32);
    free(d->pkq);
    memset(d, 0, sizeof *d);
}

int depthwise_run(int path, const depthwise_args *args, const dw_weights *d, int nthreads) {
    const int64_t total = args->g.batch * args->g.oh;
    if (total <= 0 || args->g.c <= 0) return 0;
    depthwise_args a = *args;
    a.w = d->w;
    const int v = depthwise_width[path];
    int32_t *bias = NULL, *bq = NULL;
    float *mq = NULL;
    uint8_t *zxrow = NULL, *zxq = NULL;
    if (v) {
        const int64_t c = a.g.c;
        bias = malloc((size_t)c * sizeof(int32_t));
        zxrow = malloc((size_t)c);
        if (bias == NULL || zxrow == NULL) {
            free(bias);
            free(zxrow);
            return -1;
        }
        memset(zxrow, a.zx, (size_t)c);
        /* The kernels sum x * w over every tap, padded ones reading zx; subtracting
         * zx * sum(w) leaves sum over in-image taps of (x - zx) * w.  Wrapping adds: equal
         * mod 2^32 to the portable path's bias + accumulator, which is all the output stage sees. */
        for (int64_t ch = 0; ch < c; ++ch)
            bias[ch] = (int32_t)((uint32_t)a.os.bias[ch] - (uint32_t)a.zx * (uint32_t)d->wsum[ch]);
        a.wpk = v == 16 ? d->pk16 : d->pk32;
        a.zxrow = zxrow;
        a.os.bias = bias;
        /* The VNNI row kernel (AVX-512 builds; the AMX path has AVX-512 VNNI too): requantizing
         * stages of windows that fit it, where its rearranged rows are reused enough -- each is
         * read by kh / sh output rows and costs about one output row's multiplies, so with a
         * vertical stride and narrow outputs (mobilenet_v2's 14x14 -> 7x7 stride 2: 0.73x, 28x28
         * -> 14x14: 1.05x on Zen 4) the tap-pair kernel is kept. */
        if (path >= PATH_AVX512VNNI && d->pkq != NULL && a.os.mult != NULL && (a.g.sh == 1 || a.g.ow >= 16)) {
            const int64_t cq = (c + 31) / 32 * 32;
            bq = malloc((size_t)cq * sizeof(int32_t));
            mq = malloc((size_t)cq * sizeof(float));
            zxq = aligned_alloc(64, (size_t)cq * 4);
            if (bq == NULL || mq == NULL || zxq == NULL) {
                free(bias);
                free(zxrow);
                free(bq);
                free(mq);
                free(zxq);
                return -1;
            }
            for (int64_t cb = 0; cb < cq; cb += 32)
                for (int64_t q = 0; q < 32; ++q) {
                    const int64_t ch = cb + quad_channel(q);
                    bq[cb + q] = ch < c ? bias[ch] : 0;
                    mq[cb + q] = ch < c ? a.os.mult[ch] : 0.0f;
                }
            memset(zxq, a.zx, (size_t)cq * 4);
            a.wq = d->pkq;
            a.cq = cq;
            a.bq = bq;
            a.mq = mq;
            a.zxq = zxq;
        }
    }
    /* Work fits 64 bits: the output (total * ow * c bytes) was checked against its buffer and
     * taps <= TAPS_MAX. */
    nthreads = pool_threads_for(POOL_WORK_DEPTHWISE, total * a.g.ow * a.g.c * d->taps, nthreads);
    int64_t tasks = nthreads > 1 ? 4 * (int64_t)nthreads : 1;
    if (tasks > total) tasks = total;
    depthwise_job job = {depthwise_kernels[path], &a, (total + tasks - 1) / tasks, 0};
    pool_run(depthwise_task, &job, (total + job.rows_per_task - 1) / job.rows_per_task, nthreads);
    free(bias);
    free(zxrow);
    free(bq);
    free(mq);
    free(zxq);
    return atomic_load(&job.failed) ? -1 : 0;
}
