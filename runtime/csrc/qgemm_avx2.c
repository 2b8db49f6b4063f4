/* AVX2 micro-kernel for CPUs without VNNI: a 6x16 tile of int32 accumulators.
 *
 * vpmaddubsw would multiply u8 x s8 pairs into a saturating int16 (255*127*2 overflows), so
 * this path never uses it: the weights are widened to int16 pairs once (packed_b.data16) and
 * the driver widens each packed A block, so the inner loop is one vpmaddwd (two exact
 * products summed into int32) and one vpaddd per 8 lanes -- a 32-bit broadcast of an A pair
 * against two 256-bit loads of 16 columns' B pairs.  12 accumulators + 2 B + 1 A registers.
 */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define OUTPUT_NAME qgemm_output_avx2
#include "outstage_impl.h"

#define AVX2_MR 6

/* Accumulators are named variables, not an array: GCC keeps an array of vectors in memory.
 * Conditions on MR are compile-time constants, so each instantiation holds exactly its tile. */
#define ROW_VARS(i) __m256i c##i##0 = z, c##i##1 = z;
#define ROW_STEP(i)                                                                   \
    if (MR_ > i) {                                                                     \
        int32_t pair;                                                                 \
        memcpy(&pair, a + i * lda + k, 4);                                            \
        const __m256i av = _mm256_set1_epi32(pair);                                   \
        c##i##0 = _mm256_add_epi32(c##i##0, _mm256_madd_epi16(av, b0));               \
        c##i##1 = _mm256_add_epi32(c##i##1, _mm256_madd_epi16(av, b1));               \
    }
#define ROW_STORE(i)                                                                  \
    if (MR_ > i) {                                                                     \
        _mm256_storeu_si256((__m256i *)(c + i * QGEMM_NR_MAX), c##i##0);              \
        _mm256_storeu_si256((__m256i *)(c + i * QGEMM_NR_MAX + 8), c##i##1);          \
    }

/* One function per row count, so each keeps its accumulators in registers. */
#define TILE(MR)                                                                                               \
    static __attribute__((noinline)) void tile_##MR(const int16_t *a, int64_t lda, const int16_t *b, int64_t kd, \
                                                    int32_t *c) {                                              \
        enum { MR_ = MR };                                                                                   \
        const __m256i z = _mm256_setzero_si256();                                                            \
        ROW_VARS(0) ROW_VARS(1) ROW_VARS(2) ROW_VARS(3) ROW_VARS(4) ROW_VARS(5)                              \
        for (int64_t k = 0; k < kd; k += 2) {                                                                \
            const __m256i b0 = _mm256_load_si256((const __m256i *)(b + k * QGEMM_NBLOCK));                   \
            const __m256i b1 = _mm256_load_si256((const __m256i *)(b + k * QGEMM_NBLOCK + 16));              \
            ROW_STEP(0) ROW_STEP(1) ROW_STEP(2) ROW_STEP(3) ROW_STEP(4) ROW_STEP(5)                          \
        }                                                                                                    \
        ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)                        \
    }
TILE(1)
TILE(2)
TILE(3)
TILE(4)
TILE(5)
TILE(6)

static void kernel(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows, int nb,
                   int32_t *c) {
    (void)bstride;
    (void)nb; /* the descriptor's nb is 1 */
    static void (*const tiles[AVX2_MR])(const int16_t *, int64_t, const int16_t *, int64_t, int32_t *) = {
        tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};
    tiles[rows - 1](a, lda, b, kd, c);
}

/* The tile, then its requantization while it is in L1: full 16-column tiles through
 * outstage_ymm16, a column tail through the one output stage's loop. */
static void kernel_out(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows, int nb,
                       int64_t cols, int64_t row0, int64_t col0, const out_stage *os) {
    int32_t c[AVX2_MR * QGEMM_NR_MAX] __attribute__((aligned(64)));
    kernel(a, lda, b, bstride, kd, rows, nb, c);
    if (cols < QGEMM_NBLOCK) {
        qgemm_output_avx2(c, QGEMM_NR_MAX, rows, cols, row0, col0, os);
        return;
    }
    const __m256 flo = _mm256_set1_ps(os->flo), fhi = _mm256_set1_ps(os->fhi);
    const __m256i zy = _mm256_set1_epi32(os->zy);
    const int32_t *bias = os->bias + col0;
    const float *mult = os->mult + col0;
    uint8_t *out = (uint8_t *)os->out + row0 * os->ldo + col0;
    const int64_t ldo = os->ldo;
    const int is_signed = os->lo < 0;
    for (int i = 0; i < rows; ++i)
        outstage_ymm16(_mm256_load_si256((const __m256i *)(c + i * QGEMM_NR_MAX)),
                       _mm256_load_si256((const __m256i *)(c + i * QGEMM_NR_MAX + 8)), bias, mult, flo, fhi, zy,
                       is_signed, out + i * ldo);
}

/* The instruction mix of the 6x16 tile's inner step -- 12 independent vpmaddwd + vpaddd pairs
 * -- on registers only.  Written in asm: the compiler would otherwise merge or hoist the
 * products of constant operands, or spill the accumulators. */
static int64_t peak(int64_t iterations) {
    int64_t n = iterations;
    __asm__ volatile(
        "vpxor %%ymm0, %%ymm0, %%ymm0\n\t" "vpxor %%ymm1, %%ymm1, %%ymm1\n\t" "vpxor %%ymm2, %%ymm2, %%ymm2\n\t" "vpxor %%ymm3, %%ymm3, %%ymm3\n\t" "vpxor %%ymm4, %%ymm4, %%ymm4\n\t" "vpxor %%ymm5, %%ymm5, %%ymm5\n\t" "vpxor %%ymm6, %%ymm6, %%ymm6\n\t" "vpxor %%ymm7, %%ymm7, %%ymm7\n\t" "vpxor %%ymm8, %%ymm8, %%ymm8\n\t" "vpxor %%ymm9, %%ymm9, %%ymm9\n\t" "vpxor %%ymm10, %%ymm10, %%ymm10\n\t" "vpxor %%ymm11, %%ymm11, %%ymm11\n\t"
        "vpcmpeqd %%ymm12, %%ymm12, %%ymm12\n\t"
        "vpabsw %%ymm12, %%ymm13\n\t"
        "vpaddw %%ymm13, %%ymm13, %%ymm14\n\t"
        "1:\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm0, %%ymm0\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm1, %%ymm1\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm2, %%ymm2\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm3, %%ymm3\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm4, %%ymm4\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm5, %%ymm5\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm6, %%ymm6\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm7, %%ymm7\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm8, %%ymm8\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm9, %%ymm9\n\t"
        "vpmaddwd %%ymm13, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm10, %%ymm10\n\t"
        "vpmaddwd %%ymm14, %%ymm12, %%ymm15\n\t" "vpaddd %%ymm15, %%ymm11, %%ymm11\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : "+r"(n)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "cc");
    return iterations * 12 * 16 * 2;
}

const qgemm_isa qgemm_isa_avx2 = {
    .mr = AVX2_MR,
    .nb = 1,
    .a16 = 1,
    .b16 = 1,
    .kalign = 2,
    .kernel = kernel,
    .kernel_out = kernel_out,
    .output = qgemm_output_avx2,
    .peak = peak,
};
