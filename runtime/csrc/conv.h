/* Convolution helpers on NHWC uint8 activations: A providers for the GEMM (dense rows and
 * im2col) and the depthwise kernel, which needs no GEMM at all. */
#ifndef COMPRESS_CONV_H
#define COMPRESS_CONV_H

#include <stdint.h>

#include "qgemm.h"

typedef struct {
    int64_t batch, h, w, c;  /* input, NHWC */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t oh, ow;
} conv_geom;

/* Context of the dense provider: A is m x k bytes with row stride lda. */
typedef struct {
    const uint8_t *a;
    int64_t lda, k;
} dense_ctx;

/* Context of the im2col provider: row (b, oy, ox) of A is the kh*kw*c patch, taps outside the
 * image filled with the activation zero point (so they contribute exactly 0 after the
 * zero-point correction), k ordered (ky, kx, channel). */
typedef struct {
    const uint8_t *x;
    conv_geom g;
    uint8_t zx;
} im2col_ctx;

void fill_dense(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp);
void fill_im2col(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp);

/* Depthwise weights prepared once (at load, by pack_depthwise): the [taps][c] int8 weights the
 * portable kernel reads, each channel's weight sum (the SIMD paths' zero-point correction), and
 * the interleaved int16 tap pairs of the SIMD kernels, one layout per channel-step width (16:
 * AVX2, 32: AVX-512), both made by dw_weights_init on x86 builds. */
typedef struct {
    int64_t taps, c;
    int8_t *w;
    int32_t *wsum;
    int16_t *pk16, *pk32;
    int8_t *pkq; /* the VNNI row kernel's layout (depthwise_pack_quad), NULL when the window does not fit it */
} dw_weights;

/* The VNNI row kernel (depthwise_avx512.c) takes windows up to QUAD_KH_MAX rows of up to 4
 * columns: one vpdpbusd multiplies a window row's (up to) 4 horizontal taps of 8 channels. */
#define QUAD_KH_MAX 8
#define QUAD_KW_MAX 4

/* Copies w ([kh * kw][c]), computes the sums and packs the SIMD layouts; -1 when memory runs
 * out (d is then empty). */
int dw_weights_init(dw_weights *d, const int8_t *w, int64_t kh, int64_t kw, int64_t c);
/* Makes the packed layout the path needs if it is missing; -1 when memory runs out. */
int dw_weights_prepare(int path, dw_weights *d);
void dw_weights_free(dw_weights *d);

/* Depthwise parameters: weights [kh*kw][c] int8, bias [c] int32 (no zero-point correction:
 * the kernel subtracts zx itself and skips padded taps). */
typedef struct {
    const uint8_t *x;
    const int8_t *w;
    conv_geom g;
    int32_t zx;
    out_stage os; /* ldo == c */
    /* Filled by depthwise_run for the SIMD paths: weights as interleaved int16 tap pairs in the
     * path's channel order (dw_weights_prepare), a row of c bytes equal to zx that padded taps
     * read, and os.bias already minus zx * (sum of the channel's weights). */
    const int16_t *wpk;
    const uint8_t *zxrow;
    /* Filled by depthwise_run for the VNNI row kernel when the window fits it and the stage
     * requantizes (else wq is NULL): the weights in its layout (dw_weights.pkq), c rounded up
     * to 32 (cq), bias (already minus zx * sum(w)) and multipliers permuted into its channel
     * order and zero-padded to cq, and one pixel of its row layout (cq * 4 bytes) equal to zx
     * that padded rows read. */
    const int8_t *wq;
    int64_t cq;
    const int32_t *bq;
    const float *mq;
    const uint8_t *zxq;
} depthwise_args;

/* Per-task scratch of the depthwise kernels: the int32 accumulators of one output row
 * (ow * c, so the output stage runs once per row) and the input/weight pointers of one
 * pixel's in-image taps (kh * kw each); the VNNI row kernel has only its rows (the others
 * NULL). */
typedef struct {
    int32_t *acc;
    const uint8_t **xp;
    const int8_t **wp;
    uint8_t *rows; /* the VNNI row kernel's kh quad rows of one 32-channel step (kh * ow * 128 bytes), or NULL */
} depthwise_scratch;

/* Computes output rows [r0, r1) (row = b * oh + oy) into os->out. */
typedef void (*depthwise_fn)(const depthwise_args *a, int64_t r0, int64_t r1, const depthwise_scratch *s);

void depthwise_rows_portable(const depthwise_args *, int64_t, int64_t, const depthwise_scratch *);
void depthwise_rows_avx2(const depthwise_args *, int64_t, int64_t, const depthwise_scratch *);
void depthwise_rows_avx512(const depthwise_args *, int64_t, int64_t, const depthwise_scratch *);

/* Pointers to every tap of output pixel (b, oy, ox), padded ones at a->zxrow (SIMD paths). */
static inline void depthwise_all_taps(const depthwise_args *a, int64_t b, int64_t oy, int64_t ox,
                                      const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    int64_t n = 0;
    for (int64_t ky = 0; ky < g->kh; ++ky) {
        const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
        for (int64_t kx = 0; kx < g->kw; ++kx, ++n) {
            const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
            s->xp[n] = iy < 0 || iy >= g->h || ix < 0 || ix >= g->w ? a->zxrow
                                                                     : a->x + ((b * g->h + iy) * g->w + ix) * g->c;
        }
    }
}

/* Collects the in-image taps of output pixel (b, oy, ox) into s; returns their number. */
static inline int64_t depthwise_taps(const depthwise_args *a, int64_t b, int64_t oy, int64_t ox,
                                     const depthwise_scratch *s) {
    const conv_geom *g = &a->g;
    int64_t n = 0;
    for (int64_t ky = 0; ky < g->kh; ++ky) {
        const int64_t iy = oy * g->sh - g->pt + ky * g->dh;
        if (iy < 0 || iy >= g->h) continue;
        for (int64_t kx = 0; kx < g->kw; ++kx) {
            const int64_t ix = ox * g->sw - g->pl + kx * g->dw;
            if (ix < 0 || ix >= g->w) continue;
            s->xp[n] = a->x + ((b * g->h + iy) * g->w + ix) * g->c;
            s->wp[n] = a->w + (ky * g->kw + kx) * g->c;
            ++n;
        }
    }
    return n;
}

/* Runs the depthwise convolution on the given path over nthreads with weights d (prepared for
 * the path; a->w is ignored); -1 when memory runs out. */
int depthwise_run(int path, const depthwise_args *a, const dw_weights *d, int nthreads);

#endif
