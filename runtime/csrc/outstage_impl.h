/* The one output stage of every GEMM, convolution and depthwise path (see qgemm.h), included
 * by one translation unit per instruction set (qgemm_portable.c, qgemm_avx2.c,
 * qgemm_avx512vnni.c) so the compiler vectorises it under that unit's -m flags.
 *
 * Bit-identical in every build: the int32 bias add wraps (as vpaddd does), and the float part
 * is IEEE single operations in a fixed order (built with -ffp-contract=off, no fast-math):
 * convert, multiply, clamp to [lo - zy, hi - zy] (both integers), then round half to even
 * with the 1.5 * 2^23 trick -- exact for |f| < 2^22 in the default rounding mode, and the
 * clamped value is within +-510 -- so the final conversion to int32 is exact.
 * Define OUTPUT_NAME before including (without it, only outstage_zmm below is defined).
 *
 * Units built with AVX-512 also get outstage_zmm (16 lanes), AVX2 units outstage_ymm16 (16
 * columns in two registers): the same steps in the same order on accumulators of a tile still
 * in L1, without this loop's per-element bookkeeping; every step is the same IEEE single
 * operation as in the loop below, so the bytes are identical. */
#include <stdint.h>

#include "qgemm.h"

/* The register forms skip the subtraction and the conversion: f + magic lies in [2^23, 2^24)
 * (|f| <= 2^22), where floats are spaced 1 apart and the bit pattern is 0x4B000000 plus
 * (value - 2^23), so the rounded integer (f + magic) - magic equals the sum's bits minus
 * 0x4B400000 exactly.  One integer add then does that and the zero point. */
#define OUTSTAGE_MAGIC_BITS 0x4B400000

#ifdef OUTPUT_NAME
void OUTPUT_NAME(const int32_t *c, int64_t ldc, int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                 const out_stage *os) {
    const int32_t *restrict bias = os->bias + col0;
    if (os->mult == NULL) {
        for (int64_t i = 0; i < rows; ++i) {
            const int32_t *restrict acc = c + i * ldc;
            int32_t *restrict out = (int32_t *)os->out + (row0 + i) * os->ldo + col0;
            for (int64_t j = 0; j < cols; ++j) out[j] = (int32_t)((uint32_t)acc[j] + (uint32_t)bias[j]);
        }
        return;
    }
    const float *restrict mult = os->mult + col0;
    const float flo = os->flo, fhi = os->fhi, magic = 12582912.0f; /* 1.5 * 2^23 */
    const int32_t zy = os->zy;
    for (int64_t i = 0; i < rows; ++i) {
        const int32_t *restrict acc = c + i * ldc;
        uint8_t *restrict out = (uint8_t *)os->out + (row0 + i) * os->ldo + col0;
        for (int64_t j = 0; j < cols; ++j) {
            float f = (float)(int32_t)((uint32_t)acc[j] + (uint32_t)bias[j]) * mult[j];
            f = f < flo ? flo : f;
            f = f > fhi ? fhi : f;
            f = (f + magic) - magic;
            out[j] = (uint8_t)((int32_t)f + zy);
        }
    }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

/* The loop's body from the int32 sum acc + bias (v) on, up to the int32 value before the byte
 * store: lanes outside mask read no multiplier.  flo/fhi/zy are the stage's constants broadcast.
 * A micro-kernel that starts its accumulators at the bias (a wrapping add either way) enters
 * here; the others through outstage_zmm_value. */
static inline __attribute__((always_inline)) __m512i outstage_zmm_scaled(__m512i v, const float *mult, __mmask16 mask,
                                                                         __m512 flo, __m512 fhi, __m512i zy) {
    const __m512 magic = _mm512_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    /* Masked loads only where needed: they are slower than plain ones on Zen 4. */
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v),
                             mask == 0xFFFF ? _mm512_loadu_ps(mult) : _mm512_maskz_loadu_ps(mask, mult));
    f = _mm512_max_ps(f, flo); /* f < flo ? flo : f (equal values are equal) */
    f = _mm512_min_ps(f, fhi); /* f > fhi ? fhi : f */
    /* (f + magic) - magic converted is read off the sum's bits (OUTSTAGE_MAGIC_BITS). */
    return _mm512_add_epi32(_mm512_castps_si512(_mm512_add_ps(f, magic)),
                            _mm512_sub_epi32(zy, _mm512_set1_epi32(OUTSTAGE_MAGIC_BITS)));
}

/* The loop's body on 16 columns held in acc (the bias not yet added): lanes outside mask read
 * no bias or multiplier. */
static inline __attribute__((always_inline)) __m512i outstage_zmm_value(__m512i acc, const int32_t *bias,
                                                                        const float *mult, __mmask16 mask,
                                                                        __m512 flo, __m512 fhi, __m512i zy) {
    const __m512i b = mask == 0xFFFF ? _mm512_loadu_si512(bias) : _mm512_maskz_loadu_epi32(mask, bias);
    return outstage_zmm_scaled(_mm512_add_epi32(acc, b), mult, mask, flo, fhi, zy);
}

/* 16 output values stored as the bytes of mask's lanes (narrowed in a register, then a masked
 * byte store: vpmovdb to memory is slow on Zen 4). */
static inline __attribute__((always_inline)) void outstage_zmm_store(__m512i value, __mmask16 mask, uint8_t *out) {
    const __m128i q = _mm512_cvtepi32_epi8(value);
    if (mask == 0xFFFF)
        _mm_storeu_si128((__m128i *)out, q);
    else
        _mm_mask_storeu_epi8(out, mask, q);
}

/* outstage_zmm_value, stored. */
static inline __attribute__((always_inline)) void outstage_zmm(__m512i acc, const int32_t *bias, const float *mult,
                                                               __mmask16 mask, __m512 flo, __m512 fhi, __m512i zy,
                                                               uint8_t *out) {
    outstage_zmm_store(outstage_zmm_value(acc, bias, mult, mask, flo, fhi, zy), mask, out);
}
#endif

#if defined(__AVX2__)
#include <immintrin.h>

/* The loop's body on 8 columns, up to the int32 value before the byte store. */
static inline __attribute__((always_inline)) __m256i outstage_ymm_value(__m256i acc, const int32_t *bias,
                                                                        const float *mult, __m256 flo, __m256 fhi,
                                                                        __m256i zy) {
    const __m256 magic = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m256i v = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)bias));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_loadu_ps(mult));
    f = _mm256_max_ps(f, flo); /* f < flo ? flo : f (equal values are equal) */
    f = _mm256_min_ps(f, fhi); /* f > fhi ? fhi : f */
    /* (f + magic) - magic converted is read off the sum's bits (OUTSTAGE_MAGIC_BITS). */
    return _mm256_add_epi32(_mm256_castps_si256(_mm256_add_ps(f, magic)),
                            _mm256_sub_epi32(zy, _mm256_set1_epi32(OUTSTAGE_MAGIC_BITS)));
}

/* 16 full columns (acc0: 0-7, acc1: 8-15) stored as bytes.  The values already lie in
 * [lo, hi], inside the output type, so narrowing with saturation (signed packs when lo < 0,
 * an int8 output; unsigned otherwise) equals the loop's truncating byte store. */
static inline __attribute__((always_inline)) void outstage_ymm16(__m256i acc0, __m256i acc1, const int32_t *bias,
                                                                 const float *mult, __m256 flo, __m256 fhi,
                                                                 __m256i zy, int is_signed, uint8_t *out) {
    const __m256i v0 = outstage_ymm_value(acc0, bias, mult, flo, fhi, zy);
    const __m256i v1 = outstage_ymm_value(acc1, bias + 8, mult + 8, flo, fhi, zy);
    /* packs_epi32 works per 128-bit lane: [v0 0-3, v1 0-3 | v0 4-7, v1 4-7] -> column order */
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
    const __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    _mm_storeu_si128((__m128i *)out, is_signed ? _mm_packs_epi16(lo, hi) : _mm_packus_epi16(lo, hi));
}
#endif
