/* Shared types of the u8 x s8 -> s32 GEMM with a fused requantization output stage.
 *
 * Structure follows BLIS/gemmlowp: ONE driver (qgemm_driver.c: blocking, packing A through a
 * provider, threading), per-ISA micro-kernels that are the only instruction-set specific code
 * (each declares its register tile in a qgemm_isa descriptor), and ONE output stage
 * (outstage_impl.h: bias, requantize, clamp, store) that every path runs on the int32 tile its
 * micro-kernel leaves behind.
 *
 * Weights (B) are packed once at load into 16-column blocks laid out [kp/4][16][4] int8 -- the
 * order VNNI's vpdpbusd consumes and, for each 64-deep slice, exactly one AMX B tile.  The AVX2
 * path multiplies exact int16 pairs with vpmaddwd and reads a second copy widened to int16,
 * [kp/2][16][2], made once the first time that path runs.  Activations (A) are packed per block
 * of rows by a provider (a dense copy or im2col) into a kp-strided buffer.
 */
#ifndef COMPRESS_QGEMM_H
#define COMPRESS_QGEMM_H

#include <stdint.h>

enum isa_path { PATH_PORTABLE = 0, PATH_AVX2 = 1, PATH_AVX512VNNI = 2, PATH_AMX = 3, PATH_COUNT = 4 };

/* Rows of A packed per task: a multiple of every micro-kernel's MR (1..6) and of the AMX tile
 * pair (32). */
#define QGEMM_MB 96
#define QGEMM_KALIGN 64
#define QGEMM_NBLOCK 16
/* Largest register tile any path declares, and so the int32 tile the output stage reads. */
#define QGEMM_MR_MAX 32
#define QGEMM_NR_MAX 64
/* Depth limit: 65536 * 255 * 128 < 2^31, so no int32 accumulator can overflow on any path. */
#define QGEMM_K_MAX 65536

typedef struct {
    int64_t k, n;    /* logical depth and number of output columns */
    int64_t kp, np;  /* k rounded up to QGEMM_KALIGN, n rounded up to QGEMM_NBLOCK */
    int8_t *data;    /* np/16 blocks of kp*16 bytes; padding is zero */
    int16_t *data16; /* the same widened to int16 pairs for vpmaddwd, or NULL until needed */
} packed_b;

/* Fused output stage (DESIGN.md section 3).  With mult == NULL the int32 accumulator plus
 * bias is stored; otherwise y = clamp(rne(float(acc + bias[n]) * mult[n]), lo-zy, hi-zy) + zy,
 * stored as one byte (uint8 or int8 depending on lo/hi). */
typedef struct {
    const int32_t *bias; /* n entries: int32 bias minus z_a * column sums of B */
    const float *mult;   /* n finite entries, or NULL for int32 output */
    int32_t zy, lo, hi;
    float flo, fhi;      /* lo - zy and hi - zy, the bounds applied before rounding */
    void *out;
    int64_t ldo;         /* output row stride in elements */
} out_stage;

/* Writes rows [m0, m0 + rows) of the virtual A matrix into buf (row stride kp), zero-padding
 * columns k..kp-1. */
typedef void (*a_fill_fn)(const void *ctx, int64_t m0, int64_t rows, uint8_t *buf, int64_t kp);

/* The output stage: rows x cols int32 accumulators c (row stride ldc) land at output rows
 * row0.., columns col0...  One source, compiled once per instruction set so it vectorises;
 * plain IEEE fp32 operations in a fixed order make every build bit-identical. */
typedef void (*output_fn)(const int32_t *c, int64_t ldc, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                          const out_stage *os);

/* Micro-kernel: c[i][j] (row stride QGEMM_NR_MAX) = sum over kd of A row i times B column j,
 * for i < rows (<= mr) and j < nb * 16 (nb <= the descriptor's nb).  a: A rows of lda elements
 * (bytes, or int16 when the descriptor says a16); b: the first packed 16-column block, blocks
 * bstride elements apart. */
typedef void (*ukernel_fn)(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows, int nb,
                           int32_t *c);

/* Micro-kernel with the output stage fused (optional, used when the stage requantizes): the same
 * product, requantized straight from the accumulator registers into output rows row0.. and
 * columns col0 .. col0 + cols - 1 (cols <= nb * 16) of os->out, with no int32 tile in between. */
typedef void (*ukernel_out_fn)(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows,
                               int nb, int64_t cols, int64_t row0, int64_t col0, const out_stage *os);

struct qgemm_isa;

/* Whole-block kernel for paths that do not fit the micro-kernel loop (AMX's tile state); abuf is
 * always a packed block (row stride kp, rows padded to 32). */
typedef void (*block_fn)(const struct qgemm_isa *isa, const packed_b *b, const void *abuf, int64_t rows, int64_t m0,
                         int64_t nb0, int64_t nb1, const out_stage *os);

typedef struct qgemm_isa {
    int mr, nb;       /* register tile: mr rows x nb 16-column blocks */
    int a16, b16;     /* operands widened to int16 (A by the driver, B in packed_b.data16) */
    int kalign;       /* the micro-kernel's depth step: it runs kd = k rounded up to this */
    ukernel_fn kernel;
    ukernel_out_fn kernel_out; /* NULL: kernel, then output on the int32 tile */
    block_fn block;   /* NULL: the driver's micro-kernel loop */
    output_fn output; /* the output stage built for this instruction set */
    /* Runs a register-only loop of this path's multiply-accumulate instructions in the
     * micro-kernel's mix; returns the int8 operations (2 per MAC) it executed. */
    int64_t (*peak)(int64_t iterations);
} qgemm_isa;

extern const qgemm_isa qgemm_isa_portable, qgemm_isa_avx2, qgemm_isa_avx512vnni, qgemm_isa_amx;

/* The descriptor of a path (which must be supported, see dispatch.h). */
const qgemm_isa *qgemm_isa_of(int path);

void qgemm_output_portable(const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, const out_stage *);
void qgemm_output_avx2(const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, const out_stage *);
void qgemm_output_avx512(const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t, const out_stage *);

/* Makes the packed copy the path reads (the int16 widening for AVX2), once.  Call with the
 * GIL held: two callers must not race.  Returns 0, or -1 when memory runs out. */
int qgemm_prepare(int path, packed_b *b);

/* Runs the whole GEMM: packs A block by block through fill and calls the path's kernels,
 * spread over nthreads.  qgemm_prepare must have succeeded.  Returns 0, or -1 when memory
 * runs out. */
int qgemm_run(int path, const packed_b *b, int64_t m, a_fill_fn fill, const void *fill_ctx,
              const out_stage *os, int nthreads);

#endif
