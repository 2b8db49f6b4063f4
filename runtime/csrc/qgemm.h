/* Shared types of the u8 x s8 -> s32 GEMM with a fused requantization output stage.
 *
 * Structure follows BLIS/gemmlowp: weights (B) are packed once at load into 16-column
 * blocks laid out [kp/4][16][4] int8 -- the order VNNI's vpdpbusd consumes and, for each
 * 64-deep slice, exactly one AMX B tile.  Activations (A) are packed per block of rows
 * by a provider (a dense copy or im2col) into a kp-strided buffer.  Every instruction-set
 * path reads the same packed format, so a test can run all of them on one pack and
 * demand bit-identical results.
 */
#ifndef COMPRESS_QGEMM_H
#define COMPRESS_QGEMM_H

#include <stdint.h>

enum isa_path { PATH_PORTABLE = 0, PATH_AVX2 = 1, PATH_AVX512VNNI = 2, PATH_AMX = 3, PATH_COUNT = 4 };

/* Rows of A packed per task: a multiple of the VNNI micro-tile (6) and the AMX tile pair (32). */
#define QGEMM_MB 96
#define QGEMM_KALIGN 64
#define QGEMM_NBLOCK 16

typedef struct {
    int64_t k, n;   /* logical depth and number of output columns */
    int64_t kp, np; /* k rounded up to QGEMM_KALIGN, n rounded up to QGEMM_NBLOCK */
    int8_t *data;   /* np/16 blocks of kp*16 bytes; padding is zero */
} packed_b;

/* Fused output stage (DESIGN.md section 3).  With mult == NULL the int32 accumulator plus
 * bias is stored; otherwise y = clamp(rne(float(acc + bias[n]) * mult[n]), lo-zy, hi-zy) + zy,
 * stored as one byte (uint8 or int8 depending on lo/hi). */
typedef struct {
    const int32_t *bias; /* n entries: int32 bias minus z_a * column sums of B */
    const float *mult;   /* n entries, or NULL for int32 output */
    int32_t zy, lo, hi;
    float flo, fhi;      /* lo - zy and hi - zy, the bounds applied before rounding */
    void *out;
    int64_t ldo;         /* output row stride in elements */
} out_stage;

/* Writes rows [m0, m0 + rows) of the virtual A matrix into buf (row stride kp), zero-padding
 * columns k..kp-1. */
typedef void (*a_fill_fn)(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp);

/* Computes output rows [m0, m0 + rows) for 16-column blocks [nb0, nb1) from a packed A block.
 * abuf holds rows rounded up to a multiple of 32, each kp bytes. */
typedef void (*block_fn)(const packed_b *b, const uint8_t *abuf, int64_t rows, int64_t m0, int64_t nb0,
                         int64_t nb1, const out_stage *os);

void qgemm_block_portable(const packed_b *, const uint8_t *, int64_t, int64_t, int64_t, int64_t,
                          const out_stage *);
void qgemm_block_avx2(const packed_b *, const uint8_t *, int64_t, int64_t, int64_t, int64_t,
                      const out_stage *);
void qgemm_block_avx512vnni(const packed_b *, const uint8_t *, int64_t, int64_t, int64_t, int64_t,
                            const out_stage *);
void qgemm_block_amx(const packed_b *, const uint8_t *, int64_t, int64_t, int64_t, int64_t,
                     const out_stage *);

/* Scalar output stage for one row of up to 16 accumulators; every path that does not
 * vectorise its output stage uses this, so all paths round identically. */
void qgemm_store_row(const int32_t *acc, int64_t row, int64_t col0, int64_t ncols, const out_stage *os);

/* Runs the whole GEMM: packs A block by block through fill and calls the path's block kernel,
 * spread over nthreads.  Returns 0, or -1 when memory runs out. */
int qgemm_run(int path, const packed_b *b, int64_t m, a_fill_fn fill, const void *fill_ctx,
              const out_stage *os, int nthreads);

#endif
