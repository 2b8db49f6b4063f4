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

/* Depthwise parameters: weights [kh*kw][c] int8, bias [c] int32 (no zero-point correction:
 * the kernel subtracts zx itself and skips padded taps). */
typedef struct {
    const uint8_t *x;
    const int8_t *w;
    conv_geom g;
    int32_t zx;
    out_stage os; /* ldo == c */
} depthwise_args;

/* Computes output rows [r0, r1) (row = b * oh + oy) into os->out; acc has c int32 entries. */
typedef void (*depthwise_fn)(const depthwise_args *a, int64_t r0, int64_t r1, int32_t *acc);

void depthwise_rows_portable(const depthwise_args *, int64_t, int64_t, int32_t *);
void depthwise_rows_avx2(const depthwise_args *, int64_t, int64_t, int32_t *);
void depthwise_rows_avx512(const depthwise_args *, int64_t, int64_t, int32_t *);

/* Runs the depthwise convolution on the given path over nthreads; -1 when memory runs out. */
int depthwise_run(int path, const depthwise_args *a, int nthreads);

#endif
