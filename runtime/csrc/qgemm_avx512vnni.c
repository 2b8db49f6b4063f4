/* AVX-512 VNNI micro-kernel: a 6x64 register tile of int32 accumulators fed by vpdpbusd
 * (u8 x s8, four products summed per lane, no intermediate saturation).  24 accumulators +
 * 4 B registers + 1 broadcast A quad.  Also builds the output stage for AVX-512 (used by the
 * AMX path and the AVX-512 depthwise kernel too). */
#include <immintrin.h>
#include <string.h>

#include "qgemm.h"

#define OUTPUT_NAME qgemm_output_avx512
#include "outstage_impl.h"

#define VNNI_MR 6
#define VNNI_NB 4 /* 16-column blocks per register tile */

/* Accumulators are named variables, not an array: GCC keeps an array of vectors in memory
 * (one store per accumulator per step), which halves the speed.  Conditions on MR/NB are
 * compile-time constants, so each instantiation holds exactly its tile. */
#define ROW_VARS(i) __m512i c##i##0 = z, c##i##1 = z, c##i##2 = z, c##i##3 = z;
#define ROW_STEP(i)                                                                   \
    if (MR_ > i) {                                                                     \
        int32_t quad;                                                                 \
        memcpy(&quad, a + i * lda + k, 4);                                            \
        const __m512i av = _mm512_set1_epi32(quad);                                   \
        c##i##0 = _mm512_dpbusd_epi32(c##i##0, av, b0);                               \
        if (NB_ > 1) c##i##1 = _mm512_dpbusd_epi32(c##i##1, av, b1);                   \
        if (NB_ > 2) c##i##2 = _mm512_dpbusd_epi32(c##i##2, av, b2);                   \
        if (NB_ > 3) c##i##3 = _mm512_dpbusd_epi32(c##i##3, av, b3);                   \
    }
#define ROW_STORE(i)                                                                  \
    if (MR_ > i) {                                                                     \
        _mm512_storeu_si512(c + i * QGEMM_NR_MAX, c##i##0);                           \
        if (NB_ > 1) _mm512_storeu_si512(c + i * QGEMM_NR_MAX + 16, c##i##1);          \
        if (NB_ > 2) _mm512_storeu_si512(c + i * QGEMM_NR_MAX + 32, c##i##2);          \
        if (NB_ > 3) _mm512_storeu_si512(c + i * QGEMM_NR_MAX + 48, c##i##3);          \
    }

/* The depth loop both tile forms share: NB_ weight blocks of 64 columns' 4-deep groups per step,
 * every row's accumulators updated by ROW_STEP. */
#define DEPTH_LOOP                                                                                       \
    for (int64_t k = 0; k < kd; k += 4) {                                                                \
        const int8_t *bk = b + k * QGEMM_NBLOCK;                                                         \
        const __m512i b0 = _mm512_load_si512(bk);                                                        \
        const __m512i b1 = NB_ > 1 ? _mm512_load_si512(bk + bstride) : z;                                 \
        const __m512i b2 = NB_ > 2 ? _mm512_load_si512(bk + 2 * bstride) : z;                             \
        const __m512i b3 = NB_ > 3 ? _mm512_load_si512(bk + 3 * bstride) : z;                             \
        ROW_STEP(0) ROW_STEP(1) ROW_STEP(2) ROW_STEP(3) ROW_STEP(4) ROW_STEP(5)                          \
    }

#define TILE(MR, NB)                                                                                           \
    static __attribute__((noinline)) void tile_##MR##_##NB(const uint8_t *a, int64_t lda, const int8_t *b,     \
                                                           int64_t bstride, int64_t kd, int32_t *c) {        \
        enum { MR_ = MR, NB_ = NB };                                                                         \
        const __m512i z = _mm512_setzero_si512();                                                            \
        ROW_VARS(0) ROW_VARS(1) ROW_VARS(2) ROW_VARS(3) ROW_VARS(4) ROW_VARS(5)                              \
        DEPTH_LOOP                                                                                           \
        ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3) ROW_STORE(4) ROW_STORE(5)                        \
    }
/* Tiles of one or two 16-column blocks (N = 16..32, and every N's last block or two) are
 * requantized straight from their accumulators: they start at the bias (the wrapping int32 add
 * the output stage would do, so the sums are the same mod 2^32), and after the depth loop each
 * row goes through the one output stage's register form (outstage_zmm_scaled), with no int32
 * tile stored and reloaded in between -- for small K that round trip and the bias adds cost
 * about as much as the multiplies.  The stage's constants are read after a compiler barrier, so
 * they are not hoisted into the depth loop.  Wider tiles keep the store-and-requantize form
 * below: with 18-24 accumulators GCC spills some inside the depth loop (seen in the assembly). */
#define ROW_INIT(i) __m512i c##i##0 = i0, c##i##1 = i1, c##i##2 = i2, c##i##3 = i3;
#define ROW_OUT(i)                                                                                        \
    if (MR_ > i) {                                                                                         \
        uint8_t *o = out + i * ldo;                                                                        \
        outstage_zmm_store(outstage_zmm_scaled(c##i##0, mult, m0, flo, fhi, zy), m0, o);                   \
        if (NB_ > 1) outstage_zmm_store(outstage_zmm_scaled(c##i##1, mult + 16, m1, flo, fhi, zy), m1, o + 16); \
        if (NB_ > 2) outstage_zmm_store(outstage_zmm_scaled(c##i##2, mult + 32, m2, flo, fhi, zy), m2, o + 32); \
        if (NB_ > 3) outstage_zmm_store(outstage_zmm_scaled(c##i##3, mult + 48, m3, flo, fhi, zy), m3, o + 48); \
    }

static inline __mmask16 cols_mask(int64_t cols, int block) {
    const int64_t left = cols - 16 * block;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

static inline __m512i bias_block(const int32_t *bias, __mmask16 m) {
    return m == 0xFFFF ? _mm512_loadu_si512(bias) : _mm512_maskz_loadu_epi32(m, bias);
}

#define TILE_OUT_REG(MR, NB)                                                                                   \
    static __attribute__((noinline)) void tile_reg_##MR##_##NB(const uint8_t *a, int64_t lda, const int8_t *b,  \
                                                               int64_t bstride, int64_t kd, int64_t cols,      \
                                                               int64_t row0, int64_t col0, const out_stage *os) { \
        enum { MR_ = MR, NB_ = NB };                                                                         \
        const __m512i z = _mm512_setzero_si512();                                                            \
        const __mmask16 m0 = cols_mask(cols, 0), m1 = cols_mask(cols, 1), m2 = cols_mask(cols, 2),           \
                        m3 = cols_mask(cols, 3);                                                             \
        const int32_t *bias = os->bias + col0;                                                               \
        const __m512i i0 = bias_block(bias, m0), i1 = NB_ > 1 ? bias_block(bias + 16, m1) : z,               \
                      i2 = NB_ > 2 ? bias_block(bias + 32, m2) : z, i3 = NB_ > 3 ? bias_block(bias + 48, m3) : z; \
        ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)                              \
        DEPTH_LOOP                                                                                           \
        __asm__ volatile("" ::: "memory");                                                                   \
        const int64_t ldo = os->ldo;                                                                         \
        uint8_t *out = (uint8_t *)os->out + row0 * ldo + col0;                                               \
        const float *mult = os->mult + col0;                                                                 \
        const __m512 flo = _mm512_set1_ps(os->flo), fhi = _mm512_set1_ps(os->fhi);                           \
        const __m512i zy = _mm512_set1_epi32(os->zy);                                                        \
        ROW_OUT(0) ROW_OUT(1) ROW_OUT(2) ROW_OUT(3) ROW_OUT(4) ROW_OUT(5)                                    \
    }
/* Requantizes the tile_MR_NB's int32 tile c while it is still in L1, 16 columns per step,
 * masked to the tile's columns. */
#define ROW_OUT_TILE(i)                                                                                \
    if (MR_ > i) {                                                                                      \
        uint8_t *o = out + i * ldo;                                                                     \
        const int32_t *t = c + i * QGEMM_NR_MAX;                                                        \
        outstage_zmm(_mm512_load_si512(t), bias, mult, m0, flo, fhi, zy, o);                            \
        if (NB_ > 1) outstage_zmm(_mm512_load_si512(t + 16), bias + 16, mult + 16, m1, flo, fhi, zy, o + 16); \
        if (NB_ > 2) outstage_zmm(_mm512_load_si512(t + 32), bias + 32, mult + 32, m2, flo, fhi, zy, o + 32); \
        if (NB_ > 3) outstage_zmm(_mm512_load_si512(t + 48), bias + 48, mult + 48, m3, flo, fhi, zy, o + 48); \
    }
#define TILE_OUT_STORED(MR, NB)                                                                                \
    static void tile_stored_##MR##_##NB(const uint8_t *a, int64_t lda, const int8_t *b, int64_t bstride,      \
                                     int64_t kd, int64_t cols, int64_t row0, int64_t col0,                    \
                                     const out_stage *os) {                                                   \
        enum { MR_ = MR, NB_ = NB };                                                                         \
        int32_t c[VNNI_MR * QGEMM_NR_MAX] __attribute__((aligned(64)));                                      \
        tile_##MR##_##NB(a, lda, b, bstride, kd, c);                                                         \
        const int64_t ldo = os->ldo;                                                                         \
        uint8_t *out = (uint8_t *)os->out + row0 * ldo + col0;                                               \
        const int32_t *bias = os->bias + col0;                                                               \
        const float *mult = os->mult + col0;                                                                 \
        const __mmask16 m0 = cols_mask(cols, 0), m1 = cols_mask(cols, 1), m2 = cols_mask(cols, 2),           \
                        m3 = cols_mask(cols, 3);                                                             \
        const __m512 flo = _mm512_set1_ps(os->flo), fhi = _mm512_set1_ps(os->fhi);                           \
        const __m512i zy = _mm512_set1_epi32(os->zy);                                                        \
        ROW_OUT_TILE(0) ROW_OUT_TILE(1) ROW_OUT_TILE(2) ROW_OUT_TILE(3) ROW_OUT_TILE(4) ROW_OUT_TILE(5)      \
    }
#define TILES(MR) TILE(MR, 1) TILE(MR, 2) TILE(MR, 3) TILE(MR, 4) \
    TILE_OUT_REG(MR, 1) TILE_OUT_REG(MR, 2) TILE_OUT_STORED(MR, 3) TILE_OUT_STORED(MR, 4)
TILES(1)
TILES(2)
TILES(3)
TILES(4)
TILES(5)
TILES(6)

typedef void (*tile_fn)(const uint8_t *, int64_t, const int8_t *, int64_t, int64_t, int32_t *);
#define ROW(MR) {tile_##MR##_1, tile_##MR##_2, tile_##MR##_3, tile_##MR##_4}
static const tile_fn tiles[VNNI_MR][VNNI_NB] = {ROW(1), ROW(2), ROW(3), ROW(4), ROW(5), ROW(6)};

static void kernel(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows, int nb,
                   int32_t *c) {
    tiles[rows - 1][nb - 1](a, lda, b, bstride, kd, c);
}

typedef void (*tile_out_fn)(const uint8_t *, int64_t, const int8_t *, int64_t, int64_t, int64_t, int64_t, int64_t,
                            const out_stage *);
/* Fused tiles: one or two column blocks in registers, three or four through the stored tile. */
#define ROW_O(MR) {tile_reg_##MR##_1, tile_reg_##MR##_2, tile_stored_##MR##_3, tile_stored_##MR##_4}
static const tile_out_fn tiles_out[VNNI_MR][VNNI_NB] = {ROW_O(1), ROW_O(2), ROW_O(3), ROW_O(4), ROW_O(5), ROW_O(6)};

static void kernel_out(const void *a, int64_t lda, const void *b, int64_t bstride, int64_t kd, int rows, int nb,
                       int64_t cols, int64_t row0, int64_t col0, const out_stage *os) {
    tiles_out[rows - 1][nb - 1](a, lda, b, bstride, kd, cols, row0, col0, os);
}

/* The instruction mix of the 6x64 tile's inner step -- 24 independent vpdpbusd -- on
 * registers only.  Written in asm: the compiler would otherwise merge identical chains or
 * spill the accumulators. */
static int64_t peak(int64_t iterations) {
    int64_t n = iterations;
    __asm__ volatile(
        "vpxord %%zmm0, %%zmm0, %%zmm0\n\t" "vpxord %%zmm1, %%zmm1, %%zmm1\n\t" "vpxord %%zmm2, %%zmm2, %%zmm2\n\t" "vpxord %%zmm3, %%zmm3, %%zmm3\n\t" "vpxord %%zmm4, %%zmm4, %%zmm4\n\t" "vpxord %%zmm5, %%zmm5, %%zmm5\n\t" "vpxord %%zmm6, %%zmm6, %%zmm6\n\t" "vpxord %%zmm7, %%zmm7, %%zmm7\n\t" "vpxord %%zmm8, %%zmm8, %%zmm8\n\t" "vpxord %%zmm9, %%zmm9, %%zmm9\n\t" "vpxord %%zmm10, %%zmm10, %%zmm10\n\t" "vpxord %%zmm11, %%zmm11, %%zmm11\n\t" "vpxord %%zmm12, %%zmm12, %%zmm12\n\t" "vpxord %%zmm13, %%zmm13, %%zmm13\n\t" "vpxord %%zmm14, %%zmm14, %%zmm14\n\t" "vpxord %%zmm15, %%zmm15, %%zmm15\n\t" "vpxord %%zmm16, %%zmm16, %%zmm16\n\t" "vpxord %%zmm17, %%zmm17, %%zmm17\n\t" "vpxord %%zmm18, %%zmm18, %%zmm18\n\t" "vpxord %%zmm19, %%zmm19, %%zmm19\n\t" "vpxord %%zmm20, %%zmm20, %%zmm20\n\t" "vpxord %%zmm21, %%zmm21, %%zmm21\n\t" "vpxord %%zmm22, %%zmm22, %%zmm22\n\t" "vpxord %%zmm23, %%zmm23, %%zmm23\n\t"
        "vpternlogd $0xff, %%zmm24, %%zmm24, %%zmm24\n\t"
        "vpabsb %%zmm24, %%zmm25\n\t"
        "vpaddb %%zmm25, %%zmm25, %%zmm26\n\t"
        "vpaddb %%zmm25, %%zmm26, %%zmm27\n\t"
        "vpaddb %%zmm26, %%zmm26, %%zmm28\n\t"
        "1:\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm0\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm1\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm2\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm3\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm4\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm5\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm6\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm7\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm8\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm9\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm10\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm11\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm12\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm13\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm14\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm15\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm16\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm17\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm18\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm19\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm20\n\t" "vpdpbusd %%zmm26, %%zmm24, %%zmm21\n\t" "vpdpbusd %%zmm27, %%zmm24, %%zmm22\n\t" "vpdpbusd %%zmm28, %%zmm24, %%zmm23\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : "+r"(n)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "cc");
    return iterations * 24 * 64 * 2;
}

const qgemm_isa qgemm_isa_avx512vnni = {
    .mr = VNNI_MR,
    .nb = VNNI_NB,
    .kalign = 4,
    .kernel = kernel,
    .kernel_out = kernel_out,
    .output = qgemm_output_avx512,
    .peak = peak,
};
